#!/usr/bin/env bash
# bench/load.sh BIN - load benchmark of one psd shard holding the whole lenet
# vector (431,080 floats), driven over loopback by BIN/bench_load.
#
# Each scenario gets its own psd (fresh state in a temp dir, a free port,
# mode async, no periodic checkpoint), so each peak RSS is its own:
#   a. 4 pushers                 -> pushes/s, GB/s of fp32 gradient applied
#   b. 4 pullers                 -> pull latency p50/p99
#   c. 256 idle workers + 4 active (mixed push/pull) -> psd's peak RSS
#      (VmHWM from /proc/PID/status after the run), also minus the model
#      (weights + momentum = 2 x 431,080 x 4 bytes)
# and prints a summary with the targets beside the measured values. psd is
# stopped and the temp files removed whatever happens.
#
# Environment: LOAD_SECONDS (per scenario, default 5), LOAD_IDLE (default 256),
# LOAD_KEEP=1 keeps the temp dir (psd logs) and says where.
set -u
BIN=${1:-bin}
SECS=${LOAD_SECONDS:-5}
IDLE=${LOAD_IDLE:-256}
NPARAMS=431080
MODEL_BYTES=$((2 * NPARAMS * 4))
RSS_LIMIT_KB=$((64 * 1024))     # 64 MiB, on top of the model

for p in psd bench_load; do
    if [ ! -x "$BIN/$p" ]; then
        echo "load.sh: $BIN/$p missing (make $BIN/psd $BIN/bench_load)" >&2
        exit 1
    fi
done

# 256 idle + 4 active connections (and psd's own) need ~300 descriptors:
# both bench_load and psd inherit this limit.
need_fd=$((IDLE + 64))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fd" ]; then
    if ! ulimit -n "$need_fd" 2>/dev/null; then
        echo "load.sh: ulimit -n is $(ulimit -n) and cannot be raised to $need_fd (hard limit $(ulimit -Hn))" >&2
        exit 1
    fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psd-load.XXXXXX")
PSD_PID=""
stop_psd() {
    if [ -n "$PSD_PID" ]; then
        kill -TERM "$PSD_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$PSD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PSD_PID" 2>/dev/null
        wait "$PSD_PID" 2>/dev/null
        PSD_PID=""
    fi
}
cleanup() {
    stop_psd
    if [ "${LOAD_KEEP:-0}" = 1 ]; then echo "load.sh: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_psd NAME: a fresh psd for scenario NAME on a free port; sets PORT, PSD_PID.
start_psd() {
    local name=$1 dir="$TMP/$1"
    mkdir -p "$dir"
    PORT=$(free_port) || { echo "load.sh: no free port" >&2; exit 1; }
    cat >"$dir/placement.conf" <<EOF
// bench/load.sh: one ps shard holding the whole lenet vector
{
  "job": {"model": "lenet", "mode": "async", "max_steps": 1000000000,
          "checkpoint_interval_s": 86400},
  "data": {"train_images": "unused", "train_labels": "unused"},
  "nodes": [
    {"id": "ps0", "address": "127.0.0.1", "port": $PORT, "role": "ps"},
    {"id": "w0", "address": "127.0.0.1", "role": "worker"}
  ]
}
EOF
    "$BIN/psd" --placement "$dir/placement.conf" --node ps0 --state-dir "$dir/state" --fresh \
        >"$dir/psd.log" 2>&1 &
    PSD_PID=$!
    for _ in $(seq 100); do
        if ! kill -0 "$PSD_PID" 2>/dev/null; then
            echo "load.sh: psd exited before listening:" >&2; cat "$dir/psd.log" >&2; PSD_PID=""; exit 1
        fi
        grep -q " listening on " "$dir/psd.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "load.sh: psd did not start listening:" >&2; cat "$dir/psd.log" >&2; exit 1
}

# kv LINE KEY: the value of KEY in a key=value line.
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null; }

# run NAME ARGS...: start psd, run bench_load ARGS against it, keep its line
# in LINE_<NAME>, psd's peak RSS in HWM_<NAME> (kB), stop psd.
run() {
    local name=$1; shift
    start_psd "$name"
    local rss0 cpu0 t0 line st hwm cpu1 t1 pcpu
    rss0=$(rss_kb "$PSD_PID"); cpu0=$(cpu_s "$PSD_PID"); t0=$(date +%s.%N)
    line=$("$BIN/bench_load" --host 127.0.0.1 --port "$PORT" --seconds "$SECS" "$@")
    st=$?
    hwm=$(hwm_kb "$PSD_PID"); cpu1=$(cpu_s "$PSD_PID"); t1=$(date +%s.%N)
    # psd's CPU use over bench_load's whole run (setup included): 1.00 = its one thread busy
    pcpu=$(awk -v a="${cpu0:-0}" -v b="${cpu1:-0}" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", (b - a) / (t1 - t0) }')
    line="$line psd_cpu=$pcpu psd_rss0_kb=${rss0:-?} psd_hwm_kb=${hwm:-?}"
    echo "$line"
    if [ $st -ne 0 ] || ! kill -0 "$PSD_PID" 2>/dev/null; then
        echo "load.sh: scenario $name failed (bench_load exit $st); psd log:" >&2
        tail -n 20 "$TMP/$name/psd.log" >&2
        line="$line check=FAIL"
    fi
    printf -v "LINE_$name" '%s' "$line"
    printf -v "HWM_$name" '%s' "${hwm:-0}"
    stop_psd
}

echo "== psd load: lenet in one shard ($NPARAMS floats), async, loopback, ${SECS}s per scenario"
run a --workers 4 --mode push
run b --workers 4 --mode pull
run c --workers 4 --mode mixed --idle "$IDLE"

verdict() { if [ "$1" = 1 ]; then echo PASS; else echo MISS; fi; }
ok_of() { [ "$(kv "$1" check)" = ok ] && ! grep -q "check=FAIL" <<<"$1"; }

gbs=$(kv "$LINE_a" gb/s); pps=$(kv "$LINE_a" pushes/s); na=$(kv "$LINE_a" not_applied)
p50=$(kv "$LINE_b" pull_p50_ms); p99=$(kv "$LINE_b" pull_p99_ms)
hwm_c=$HWM_c
extra_kb=$((hwm_c - MODEL_BYTES / 1024))

echo
echo "== Summary (targets beside measured values)"
printf '%-44s %-16s %-28s %s\n' "scenario" "target" "measured" "verdict"
r=0; ok_of "$LINE_a" && awk -v x="${gbs:-0}" 'BEGIN { exit !(x >= 1.0) }' && r=1
printf '%-44s %-16s %-28s %s\n' "a. 4 pushers: fp32 gradient applied" ">= 1 GB/s" \
    "${gbs:-?} GB/s (${pps:-?} pushes/s)" "$(verdict $r)"
[ "${na:-0}" = 0 ] || echo "   (a: $na pushes were not APPLIED)"
r=0; ok_of "$LINE_b" && awk -v x="${p99:-1e9}" 'BEGIN { exit !(x <= 5.0) }' && r=1
printf '%-44s %-16s %-28s %s\n' "b. 4 pullers: pull latency p99" "<= 5 ms" \
    "p99 ${p99:-?} ms (p50 ${p50:-?})" "$(verdict $r)"
r=0; ok_of "$LINE_c" && [ "$hwm_c" -gt 0 ] && [ "$extra_kb" -lt "$RSS_LIMIT_KB" ] && r=1
printf '%-44s %-16s %-28s %s\n' "c. $IDLE idle + 4 active: psd peak RSS - model" "< 64 MiB" \
    "$(awk -v k="$extra_kb" 'BEGIN { printf "%.1f MiB", k / 1024 }') (VmHWM $(awk -v k="$hwm_c" 'BEGIN { printf "%.1f", k / 1024 }'))" \
    "$(verdict $r)"
echo "   model = weights + momentum = 2 x $NPARAMS x 4 B = $(awk -v b=$MODEL_BYTES 'BEGIN { printf "%.2f MiB", b / 1048576 }');" \
     "VmHWM of a: $(awk -v k="$HWM_a" 'BEGIN { printf "%.1f", k / 1024 }') MiB, b: $(awk -v k="$HWM_b" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
echo "   CPU (1.00 = one core busy)  bench_load: a $(kv "$LINE_a" client_cpu), b $(kv "$LINE_b" client_cpu), c $(kv "$LINE_c" client_cpu);" \
     "psd: a $(kv "$LINE_a" psd_cpu), b $(kv "$LINE_b" psd_cpu), c $(kv "$LINE_c" psd_cpu) ($(nproc) CPUs, shared)"

# A protocol or setup failure fails the script; a missed target does not.
for l in "$LINE_a" "$LINE_b" "$LINE_c"; do ok_of "$l" || exit 1; done
exit 0
