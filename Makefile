# psd - parameter server for distributed training on edge boxes.
#
#   make                 build every program into bin/
#   make test            build and run every Check suite (prints Check's summary)
#   make SANITIZE=1 test the same, built with ASan+UBSan (in build-san/)
#   make check           what CI runs: test, test-san, test-valgrind, fuzz, test-net
#   make WERROR=1        warnings are errors (CI)
#   make train           train lenet in one process (MNIST or Fashion-MNIST)
#   make bench           benchmarks: CNN samples/s per SIMD path, FMA peak, PyTorch
#   make test-arm64      cross-compile the engine and its tests for aarch64 and run
#                        them under qemu-aarch64 (NEON path)
#   make deps            install the Debian packages needed to build, test and run
#   make demo            2 psd shards + 2 workerd on 127.0.0.1 train lenet, live progress
#   make chaos           fault scenarios (kill -9, hang, read-only state) and recovery figures
#   make mnist           download the official MNIST files into data/mnist/ (needs internet)
#   make install         install programs, systemd units, example placement
#                        (PREFIX=/usr/local, DESTDIR=)
#   make fuzz            build the libFuzzer targets (clang) and run each for
#                        FUZZ_SECONDS (60); make fuzz-build only builds them
#   make test-net        a cluster of network namespaces on shaped links (root;
#                        skips saying why otherwise): verify the links, train
#   make bench-net       time to accuracy on the namespace cluster: modes x
#                        compression x link profile x a slow worker (bench/net.sh)
#   make clean

SHELL := /bin/bash
.DEFAULT_GOAL := all

CROSS    ?=
CC       := $(CROSS)gcc
PKG_CONFIG ?= pkg-config
TARGET_ARCH_NAME := $(shell $(CC) -dumpmachine 2>/dev/null | cut -d- -f1)

ifeq ($(SANITIZE),1)
  BUILD ?= build-san
  BIN   ?= build-san/bin
  SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
  BUILD ?= build
  BIN   ?= bin
  SANFLAGS :=
endif

OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
            -pthread -Icommon -Iproto -Ipsd $(SANFLAGS)
# CI (CI=true) builds with -Werror.
ifeq ($(CI),true)
  WERROR ?= 1
endif
ifeq ($(WERROR),1)
  override CFLAGS += -Werror
endif
override LDFLAGS += -pthread $(SANFLAGS)

# Libraries: from pkg-config natively; by name when cross-compiling (Debian
# multiarch puts the arm64 libraries where the cross compiler looks).
ifeq ($(CROSS),)
  PKGS_CFLAGS := $(shell $(PKG_CONFIG) --cflags libuv libcjson check zlib libsodium 2>/dev/null)
  LIB_UV      := $(shell $(PKG_CONFIG) --libs libuv 2>/dev/null)
  LIB_CJSON   := $(shell $(PKG_CONFIG) --libs libcjson 2>/dev/null)
  LIB_CHECK   := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)
  LIB_Z       := $(shell $(PKG_CONFIG) --libs zlib 2>/dev/null)
  LIB_SODIUM  := $(shell $(PKG_CONFIG) --libs libsodium 2>/dev/null)
else
  PKGS_CFLAGS :=
  LIB_UV      := -luv
  LIB_CJSON   := -lcjson
  LIB_CHECK   := -lcheck -lsubunit -lrt -lm
  LIB_Z       := -lz
  LIB_SODIUM  := -lsodium
endif
override CFLAGS += $(PKGS_CFLAGS)
LIBS_BASE := $(LIB_Z) -lm

# ---------------------------------------------------------------- sources
# The CNN engine, data loading and optimizer: everything in common/ except
# the per-architecture kernel files, which are added for the target below.
COMMON_SRC := $(filter-out common/kernels_avx2.c common/kernels_avx512.c common/kernels_neon.c,\
                $(wildcard common/*.c))
ifeq ($(TARGET_ARCH_NAME),x86_64)
  COMMON_SRC += common/kernels_avx2.c common/kernels_avx512.c
else ifeq ($(TARGET_ARCH_NAME),aarch64)
  COMMON_SRC += common/kernels_neon.c
endif
PROTO_SRC  := $(wildcard proto/*.c)

# Per-file instruction-set flags: the only files allowed to use them.
$(BUILD)/common/kernels_avx2.o: override CFLAGS += -O3 -mavx2 -mfma
$(BUILD)/common/kernels_avx512.o: override CFLAGS += -O3 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma
$(BUILD)/common/kernels_neon.o: override CFLAGS += -O3
$(BUILD)/common/kernels_generic.o: override CFLAGS += -O3
$(BUILD)/common/cnn.o: override CFLAGS += -O3

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
PROTO_OBJ  := $(PROTO_SRC:%.c=$(BUILD)/%.o)

WORKERD_SRC := $(wildcard workerd/*.c)
PSD_SRC     := $(wildcard psd/*.c)
PSCTL_SRC   := $(wildcard psd/ctl/*.c)
TEST_SRC    := $(filter-out tests/check_main.c,$(wildcard tests/check_*.c))
TEST_HELPER_SRC := $(filter-out tests/check_%.c,$(wildcard tests/*.c))
BENCH_SRC   := $(wildcard bench/*.c)

PROGRAMS :=
ifneq ($(WORKERD_SRC),)
  PROGRAMS += $(BIN)/workerd
endif
ifneq ($(PSD_SRC),)
  PROGRAMS += $(BIN)/psd
endif
ifneq ($(PSCTL_SRC),)
  PROGRAMS += $(BIN)/psctl
endif

.PHONY: all test test-native bench test-arm64 deps deps-bench clean
all: $(PROGRAMS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CROSS)ar rcs $@ $^

$(BIN)/workerd: $(WORKERD_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIB_CJSON) $(LIB_SODIUM) $(LIBS_BASE) -o $@

$(BIN)/psd: $(PSD_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIB_UV) $(LIB_CJSON) $(LIB_SODIUM) $(LIBS_BASE) -o $@

$(BIN)/psctl: $(PSCTL_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIB_UV) $(LIB_CJSON) $(LIB_SODIUM) $(LIBS_BASE) -o $@

# ---------------------------------------------------------------- tests
# Every tests/check_<name>.c defines `Suite *<name>_suite(void)`; the runner's
# list of suites is generated from the file names.
$(BUILD)/tests/suites.h: $(TEST_SRC) Makefile
	@mkdir -p $(dir $@)
	@for f in $(TEST_SRC); do n=$$(basename $$f .c); echo "SUITE($${n#check_})"; done > $@.tmp
	@mv $@.tmp $@

$(BUILD)/tests/check_main.o: override CFLAGS += -I$(BUILD)/tests
$(BUILD)/tests/check_main.o: $(BUILD)/tests/suites.h
$(BUILD)/tests/check_bgeval.o: override CFLAGS += -Iworkerd

# The daemons' code except their main() is linked into the test runner too,
# so tests can call e.g. psd's checkpoint codec directly.
PSD_LIB_OBJ := $(filter-out $(BUILD)/psd/main.o,$(PSD_SRC:%.c=$(BUILD)/%.o))
TEST_OBJ := $(BUILD)/tests/check_main.o $(TEST_SRC:%.c=$(BUILD)/%.o) $(TEST_HELPER_SRC:%.c=$(BUILD)/%.o) \
            $(PSD_LIB_OBJ) $(BUILD)/workerd/bgeval.o

$(BUILD)/tests/check_all: $(TEST_OBJ) $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIB_CHECK) $(LIB_UV) $(LIB_CJSON) $(LIB_SODIUM) $(LIBS_BASE) -o $@

# Tests start the real programs; they find them through PSD_BIN.  On an
# x86-64 host with the cross tools, make test also runs the aarch64 suite.
test: test-native
	@if [ -n "$(SANITIZE)" ]; then echo "test-arm64: skipped under SANITIZE"; \
	elif [ "$(TARGET_ARCH_NAME)" != x86_64 ]; then echo "test-arm64: skipped (host is $(TARGET_ARCH_NAME))"; \
	elif ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then \
	  echo "test-arm64: skipped: aarch64-linux-gnu-gcc or qemu-aarch64 missing (make deps installs them)"; \
	else $(MAKE) --no-print-directory test-arm64; fi

test-native: $(PROGRAMS) $(BUILD)/tests/check_all
	PSD_BIN=$(abspath $(BIN)) $(BUILD)/tests/check_all

# What CI runs (the README's test command): every suite, then every suite
# again built with ASan+UBSan, the unit suites under valgrind memcheck (no
# error, no leak of any kind), each fuzz target for FUZZ_SECONDS, and the
# namespace cluster on shaped links (test-net; skips saying why without root).
.PHONY: check test-san test-valgrind
check: test test-san test-valgrind fuzz test-net

test-san:
	$(MAKE) --no-print-directory SANITIZE=1 test-native

# The unit suites (no daemons; the learning tests of `train` are left out:
# hours under valgrind).  CK_FORK=no: one process, so every leak is seen.
# Under valgrind the CPU looks like it has no AVX-512, so kernels check the
# paths it emulates (scalar, AVX2).
VALGRIND_SUITES ?= proto secure placement modelfile optim idx dataset kernels cnn bgeval
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect,possible \
            --show-leak-kinds=definite,indirect,possible
test-valgrind: $(BUILD)/tests/check_all
	@set -e; for s in $(VALGRIND_SUITES); do \
	  echo "valgrind: suite $$s"; \
	  CK_FORK=no CK_RUN_SUITE=$$s $(VALGRIND) $(BUILD)/tests/check_all; \
	done; echo "valgrind: no errors, no leaks in: $(VALGRIND_SUITES)"

# ---------------------------------------------------------------- test-net
# A cluster of network namespaces on this machine (tests/net/, docs/testnet.md):
# 2 shards and 3 workers on shaped veth links behind a delaying switch
# (netdelay); make test-net verifies the links and trains in every mode.
# Needs root; skips, saying why, when a kernel feature or tool is missing.
# make bench-net runs bench/net.sh on the same cluster.
NET_TOOLS := $(BUILD)/tests/net/netdelay $(BUILD)/tests/net/synth
.PHONY: test-net bench-net net-tools
net-tools: $(NET_TOOLS)

$(BUILD)/tests/net/netdelay: tests/net/netdelay.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $< -o $@

$(BUILD)/tests/net/synth: $(BUILD)/tests/net/synth.o $(BUILD)/tests/fixtures.o $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIBS_BASE) -o $@

$(BUILD)/tests/net/synth.o: override CFLAGS += -Itests

test-net: $(PROGRAMS) $(NET_TOOLS)
	@bash tests/net/run.sh $(abspath $(BIN)) $(abspath $(BUILD)/tests/net)

bench-net: $(PROGRAMS) $(NET_TOOLS)
	NC_BIN=$(abspath $(BIN)) NC_TOOLS=$(abspath $(BUILD)/tests/net) bash bench/net.sh

# ---------------------------------------------------------------- arm64
# The engine's tests (kernels, CNN, optimizer, data) built for aarch64 and
# run under qemu-user; needs gcc-aarch64-linux-gnu, qemu-user and the arm64
# check and zlib libraries (make deps-arm64).
ARM64_TESTS := $(filter-out tests/check_main.c,$(foreach t,kernels cnn optim idx dataset train modelfile,$(wildcard tests/check_$(t).c)))
test-arm64:
	$(MAKE) CROSS=aarch64-linux-gnu- BUILD=build-arm64 BIN=build-arm64/bin \
	    TEST_SRC="$(ARM64_TESTS)" build-arm64/tests/check_all
	qemu-aarch64 build-arm64/tests/check_all

# ---------------------------------------------------------------- train
# Train lenet in one process for 3 epochs: on the official MNIST files in
# data/mnist/ if present, else ../shared/data/mnist, else Debian's
# Fashion-MNIST; it says which.
MNIST_DIRS := data/mnist ../shared/data/mnist
FASHION_DIR := /usr/share/datasets/fashion-mnist
TRAIN_ARGS ?= --model lenet --epochs 3 --batch 64 --lr 0.05 --augment-shift 2 --threads $(shell nproc 2>/dev/null || echo 1)
.PHONY: train
train: $(BIN)/workerd
	@set -e; d=""; for c in $(MNIST_DIRS); do \
	  if [ -f $$c/t10k-images-idx3-ubyte.gz ]; then d=$$c; ti=t10k; break; fi; \
	  if [ -f $$c/val-images-idx3-ubyte.gz ]; then d=$$c; ti=val; break; fi; \
	done; \
	if [ -n "$$d" ]; then echo "train: MNIST digits from $$d ($$ti set for testing)"; \
	elif [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then d=$(FASHION_DIR); ti=t10k; \
	  echo "train: no MNIST digits found ($(MNIST_DIRS)); using Debian's Fashion-MNIST in $$d"; \
	else echo "train: no data: neither MNIST in $(MNIST_DIRS) nor Fashion-MNIST in $(FASHION_DIR) (make deps installs it)"; exit 1; fi; \
	$(BIN)/workerd --standalone $(TRAIN_ARGS) \
	  --train-images $$d/train-images-idx3-ubyte.gz --train-labels $$d/train-labels-idx1-ubyte.gz \
	  --test-images $$d/$$ti-images-idx3-ubyte.gz --test-labels $$d/$$ti-labels-idx1-ubyte.gz

# ---------------------------------------------------------------- demo
# The cluster of conf/placement.local.conf on this machine (conf/demo.sh):
# live progress from psctl, the final accuracy; Ctrl-C stops everything.
# DEMO_DATA=mnist|shared|fashion and DEMO_EPOCHS=N are passed through.
.PHONY: chaos
# Fault scenarios on a local cluster, each beside the unfaulted job (bench/chaos.sh).
chaos: $(PROGRAMS)
	bench/chaos.sh $(BIN)

.PHONY: demo
demo: $(PROGRAMS)
	@bash conf/demo.sh $(BIN)

# The four official MNIST files from a public mirror into data/mnist/,
# each checked against its published SHA-256 (needs internet).
MNIST_MIRRORS ?= https://ossci-datasets.s3.amazonaws.com/mnist https://storage.googleapis.com/cvdf-datasets/mnist
MNIST_SHA256 := \
  train-images-idx3-ubyte.gz:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 \
  train-labels-idx1-ubyte.gz:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c \
  t10k-images-idx3-ubyte.gz:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6 \
  t10k-labels-idx1-ubyte.gz:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
.PHONY: mnist
mnist:
	@set -e; mkdir -p data/mnist; \
	if command -v curl >/dev/null; then get="curl -fsSL --connect-timeout 15 --retry 2 -o"; \
	elif command -v wget >/dev/null; then get="wget -q -T 15 -t 2 -O"; \
	else echo "mnist: needs curl or wget"; exit 1; fi; \
	for e in $(MNIST_SHA256); do f=$${e%%:*}; h=$${e#*:}; \
	  if [ -f data/mnist/$$f ] && echo "$$h  data/mnist/$$f" | sha256sum -c --status; then \
	    echo "mnist: data/mnist/$$f present, SHA-256 ok"; continue; fi; \
	  ok=""; for m in $(MNIST_MIRRORS); do \
	    echo "mnist: $$m/$$f"; \
	    if $$get data/mnist/$$f.part $$m/$$f; then \
	      if echo "$$h  data/mnist/$$f.part" | sha256sum -c --status; then \
	        mv data/mnist/$$f.part data/mnist/$$f; ok=1; break; fi; \
	      echo "mnist: $$f from $$m: SHA-256 mismatch (expected $$h), discarded"; \
	    else echo "mnist: $$f: download from $$m failed (no network?)"; fi; \
	    rm -f data/mnist/$$f.part; \
	  done; \
	  [ -n "$$ok" ] || { echo "mnist: FAILED: could not get $$f with the right SHA-256 from any mirror ($(MNIST_MIRRORS))"; exit 1; }; \
	done; echo "mnist: the four files are in data/mnist/ (SHA-256 verified)"

# ---------------------------------------------------------------- install
# Programs to $(PREFIX)/bin, the systemd units (systemd/*.service.in with
# @PREFIX@ substituted) to /lib/systemd/system (Debian's place for units of
# installed packages; SYSTEMD_UNIT_DIR overrides), the example placement to
# /etc/psd/placement.conf.example.  DESTDIR is prepended to every path.
PREFIX ?= /usr/local
DESTDIR ?=
SYSTEMD_UNIT_DIR ?= /lib/systemd/system
UNITS_IN := $(wildcard systemd/*.service.in)
.PHONY: install
install: $(PROGRAMS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)/etc/psd
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	@set -e; for u in $(UNITS_IN); do \
	  out=$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$(basename $$u .in); \
	  echo "sed 's|@PREFIX@|$(PREFIX)|g' $$u > $$out"; \
	  sed 's|@PREFIX@|$(PREFIX)|g' $$u > $$out.tmp && chmod 0644 $$out.tmp && mv $$out.tmp $$out; \
	done
	install -m 0644 conf/placement.example.conf $(DESTDIR)/etc/psd/placement.conf.example

# ---------------------------------------------------------------- bench
BENCH_PROGRAMS := $(patsubst bench/%.c,$(BIN)/%,$(BENCH_SRC))
bench: deps-bench $(PROGRAMS) $(BENCH_PROGRAMS)
	bench/run.sh $(BIN)

$(BIN)/bench_%: $(BUILD)/bench/bench_%.o $(BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LIB_UV) $(LIB_CJSON) $(LIB_SODIUM) $(LIBS_BASE) -o $@

# ---------------------------------------------------------------- fuzz
# libFuzzer targets tests/fuzz/fuzz_<name>.c (docs/fuzzing.md), built with
# clang and ASan+UBSan into build-fuzz/; the code they call (common/, proto/,
# psd/ckpt.c) is compiled there too, instrumented.  make fuzz runs them one
# after the other, each for FUZZ_SECONDS, the frame decoder also until
# FUZZ_FRAME_RUNS executions (tests/fuzz/run.sh), on a working copy of the
# seeds in tests/fuzz/corpus/; FUZZ_TARGETS="frame msg" picks some.
# make fuzz-seeds rewrites the binary seeds with the real encoders.
FUZZ_CC         ?= clang
FUZZ_SECONDS    ?= 60
FUZZ_FRAME_RUNS ?= 10000000
FUZZ_BUILD      := build-fuzz
FUZZ_SAN        := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS     := -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
                   -pthread -Icommon -Iproto -Ipsd -Itests/fuzz $(PKGS_CFLAGS) $(FUZZ_SAN)
FUZZ_ALL        := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS    ?= $(FUZZ_ALL)
FUZZ_LIB_OBJ    := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(COMMON_SRC) $(PROTO_SRC) psd/ckpt.c tests/fuzz/common.c)
FUZZ_LIBS       := $(LIB_CJSON) $(LIBS_BASE) -pthread

.PHONY: fuzz fuzz-build fuzz-seeds
fuzz-build: $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_FRAME_RUNS=$(FUZZ_FRAME_RUNS) \
	    bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-seeds: $(FUZZ_BUILD)/seedgen
	$(FUZZ_BUILD)/seedgen tests/fuzz/corpus

# Coverage instrumentation for the code under test only: the harnesses in
# tests/fuzz/ are not instrumented (their own branches would only add noise
# and cost to libFuzzer's guidance), but they are sanitized.
FUZZ_COV := -fsanitize=fuzzer-no-link
$(FUZZ_BUILD)/tests/fuzz/%.o: FUZZ_COV :=
$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_COV) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/common/kernels_avx2.o: FUZZ_CFLAGS += -mavx2 -mfma
$(FUZZ_BUILD)/common/kernels_avx512.o: FUZZ_CFLAGS += -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma

$(FUZZ_BUILD)/libfuzzlib.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# (the targets' objects are kept: they are intermediate files to make)
.SECONDARY: $(FUZZ_ALL:%=$(FUZZ_BUILD)/tests/fuzz/fuzz_%.o)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer $^ $(FUZZ_LIBS) -o $@

$(FUZZ_BUILD)/seedgen: $(FUZZ_BUILD)/tests/fuzz/seedgen.o $(FUZZ_BUILD)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_SAN) $^ $(FUZZ_LIBS) -o $@

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- deps
# Installs what is missing; as root with apt-get, otherwise prints the line to
# run and fails.  The arm64 libraries (for make test-arm64) come from Debian
# multiarch, enabled here on x86-64 hosts.  Rerunning is harmless.
DEPS_PKGS := build-essential pkg-config libuv1-dev libcjson-dev check zlib1g-dev libsodium-dev \
             dataset-fashion-mnist gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user \
             clang libclang-rt-dev valgrind \
             iproute2 nftables ethtool iputils-ping
DEPS_ARM64_PKGS := check:arm64 zlib1g-dev:arm64 libcjson-dev:arm64 libuv1-dev:arm64 libsodium-dev:arm64
deps:
	@set -e; pkgs="$(DEPS_PKGS)"; \
	if [ "$$(dpkg --print-architecture)" = amd64 ]; then pkgs="$$pkgs $(DEPS_ARM64_PKGS)"; fi; \
	missing=""; for p in $$pkgs; do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all packages present"; exit 0; fi; \
	need_arm=""; case "$$missing" in *:arm64*) dpkg --print-foreign-architectures | grep -qx arm64 || need_arm=1;; esac; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "deps: missing:$$missing"; echo "run:"; \
	  [ -z "$$need_arm" ] || echo "  sudo dpkg --add-architecture arm64"; \
	  echo "  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	fi; \
	[ -z "$$need_arm" ] || dpkg --add-architecture arm64; \
	echo "deps: installing$$missing"; \
	apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing

# The PyTorch baseline for make bench (large; not part of make deps).
deps-bench:
	@if /usr/bin/python3 -c 'import torch' 2>/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "bench: PyTorch missing; run: sudo apt-get install -y python3-torch"; exit 1; fi; \
	echo "bench: installing python3-torch"; apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch

clean:
	rm -rf build build-san build-arm64 build-fuzz bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
