#!/usr/bin/env bash
# bench/chaos.sh BIN - what `make chaos` prints: fault scenarios on a local
# cluster (2 psd shards + 2 workerd on 127.0.0.1, lenet), each beside the same
# job without the fault.
#
#   scenario           fault, at CHAOS_AT seconds (default 3) into training
#   worker kill -9     SIGKILL w1, start it again 1 s later (it retrains its part)
#   worker hang        SIGSTOP w1 for 3 s, then SIGCONT (sync: the barrier
#                      timeout, 1 s here, drops it from the rounds meanwhile)
#   shard kill -9      SIGKILL ps1, start it again 1 s later with the same
#                      command (it resumes from its checkpoint, written every
#                      second; the workers reconnect by themselves)
#   checkpoint dir ro  ps1's state dir becomes read-only (bind mount; root
#                      only): its checkpoints fail, training goes on
#
# Columns: time to recover (fault -> the cluster applies updates at full
# strength again: for a worker, its first push after it rejoined; for a
# shard, the first version above the one it resumed at), versions lost (a
# shard's version before the kill minus the one it resumed at), the final
# validation accuracy and the job's wall time, beside the unfaulted job's.
#
# Data: ../shared/data/mnist (train / val split) if present, else Debian's
# Fashion-MNIST (train / t10k).  Environment: CHAOS_MODE (sync, default;
# async, ssp), CHAOS_EPOCHS (default 4), CHAOS_AT.
set -u
BIN=${1:-bin}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${CHAOS_MODE:-sync}
EPOCHS=${CHAOS_EPOCHS:-4}
AT=${CHAOS_AT:-3}
PY=/usr/bin/python3

S=$HERE/../../shared/data/mnist
F=/usr/share/datasets/fashion-mnist
if [ -f "$S/train-images-idx3-ubyte.gz" ] && [ -f "$S/val-images-idx3-ubyte.gz" ]; then
    DIR=$(cd "$S" && pwd); TEST=val; NAME="MNIST split (../shared: 9,000 / 1,000)"
elif [ -f "$F/train-images-idx3-ubyte.gz" ]; then
    DIR=$F; TEST=t10k; NAME="Fashion-MNIST (60,000 / 10,000)"
else
    echo "chaos: no data (../shared/data/mnist or $F; make deps installs the latter)" >&2
    exit 1
fi
for p in psd workerd psctl; do
    [ -x "$BIN/$p" ] || { echo "chaos: $BIN/$p missing (run make)" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psd-chaos.XXXXXX") || exit 1
PIDS=()
MOUNTED=""
cleanup() {
    [ ${#PIDS[@]} -gt 0 ] && kill -KILL "${PIDS[@]}" 2>/dev/null
    kill -CONT "${PIDS[@]}" 2>/dev/null
    wait 2>/dev/null
    [ -n "$MOUNTED" ] && umount -l "$MOUNTED" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

write_conf() {
    local mom=0.9 extra=""
    [ "$MODE" != sync ] && mom=0.5
    [ "$MODE" = sync ] && extra='"barrier_timeout_ms": 1000,'
    [ "$MODE" = ssp ] && extra='"staleness": 2,'
    P0=$(free_port); P1=$(free_port)
    while [ "$P0" = "$P1" ]; do P1=$(free_port); done
    cat >"$TMP/p.conf" <<EOF
{"job": {"model": "lenet", "mode": "$MODE", $extra "batch": 64, "seed": 1, "epochs": $EPOCHS,
         "checkpoint_interval_s": 1,
         "optimizer": {"lr": 0.05, "momentum": $mom, "schedule": "constant"}},
 "data": {"train_images": "$DIR/train-images-idx3-ubyte.gz", "train_labels": "$DIR/train-labels-idx1-ubyte.gz",
          "test_images": "$DIR/$TEST-images-idx3-ubyte.gz", "test_labels": "$DIR/$TEST-labels-idx1-ubyte.gz"},
 "nodes": [
  {"id": "ps0", "address": "127.0.0.1", "port": $P0, "role": "ps"},
  {"id": "ps1", "address": "127.0.0.1", "port": $P1, "role": "ps"},
  {"id": "w0", "address": "127.0.0.1", "role": "worker", "threads": 1, "evaluate": true},
  {"id": "w1", "address": "127.0.0.1", "role": "worker", "threads": 1}]}
EOF
}

start_psd() {   # start_psd I
    "$BIN/psd" --placement "$TMP/p.conf" --node ps$1 --state-dir "$TMP/state$1" 2>>"$TMP/ps$1.log" &
    eval "PS$1=$!"; PIDS+=($!)
}
start_worker() {   # start_worker I
    "$BIN/workerd" --placement "$TMP/p.conf" --node w$1 >>"$TMP/w$1.out" 2>>"$TMP/w$1.log" &
    eval "W$1=$!"; PIDS+=($!)
}
# status_field SHARD EXPR: a value from psctl status --json (python expression
# over `s`, that shard's status), or empty if it does not answer.
status_field() {
    "$BIN/psctl" --placement "$TMP/p.conf" --timeout 500 status --json 2>/dev/null |
        $PY -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for s in d.get("shards", []):
    if s.get("shard") == int(sys.argv[1]):
        print(eval(sys.argv[2]))' "$1" "$2"
}
worker_pushes() {   # worker_pushes W: its last_seq on shard 0
    status_field 0 "next((w['last_seq'] for w in s['workers'] if w['id'] == 'w$1'), 0)"
}

# run SCENARIO: one whole job; prints "recover_s lost acc wall_s"
run() {
    local sc=$1
    rm -rf "$TMP"/state* "$TMP"/*.log "$TMP"/*.out
    mkdir -p "$TMP/state0" "$TMP/state1"
    write_conf
    PIDS=()
    local t0 tf rec="-" lost=0 i
    t0=$(now)
    start_psd 0; start_psd 1
    sleep 0.3
    start_worker 0; start_worker 1
    if [ "$sc" != none ]; then
        # AT seconds of training (the workers' first epoch line, or AT from start)
        sleep "$AT"
        tf=$(now)
        case $sc in
        worker-kill)
            local before; before=$(worker_pushes 1)
            kill -KILL "$W1"; wait "$W1" 2>/dev/null
            sleep 1
            start_worker 1
            # recovered: w1's seq on shard 0 moves past what it was
            for i in $(seq 600); do
                local p; p=$(worker_pushes 1)
                if [ -n "$p" ] && [ "$p" -gt "${before:-0}" ]; then rec=$(sub "$(now)" "$tf"); break; fi
                sleep 0.05
            done ;;
        worker-hang)
            local before; before=$(worker_pushes 1)
            kill -STOP "$W1"; sleep 3; kill -CONT "$W1"
            for i in $(seq 600); do
                local p; p=$(worker_pushes 1)
                if [ -n "$p" ] && [ "$p" -gt "${before:-0}" ]; then rec=$(sub "$(now)" "$tf"); break; fi
                sleep 0.05
            done ;;
        shard-kill)
            local v0; v0=$(status_field 1 "s['version']")
            kill -KILL "$PS1"; wait "$PS1" 2>/dev/null
            sleep 1
            start_psd 1
            local vr=""
            for i in $(seq 600); do
                local v; v=$(status_field 1 "s['version']")
                if [ -n "$v" ] && [ -z "$vr" ]; then vr=$v; lost=$(( ${v0:-0} - v )); fi
                if [ -n "$v" ] && [ -n "$vr" ] && [ "$v" -gt "$vr" ]; then rec=$(sub "$(now)" "$tf"); break; fi
                sleep 0.05
            done ;;
        ckpt-ro)
            if [ "$(id -u)" != 0 ]; then echo "skipped: needs root (a read-only bind mount)"; return; fi
            mount --bind "$TMP/state1" "$TMP/state1" && mount -o remount,bind,ro "$TMP/state1" && MOUNTED=$TMP/state1
            rec=0 ;;
        esac
    fi
    local bad=0
    wait "$W0" || bad=1
    wait "$W1" || bad=1
    local t1; t1=$(now)
    kill -TERM "$PS0" "$PS1" 2>/dev/null; wait "$PS0" "$PS1" 2>/dev/null
    [ -n "$MOUNTED" ] && { umount -l "$MOUNTED"; MOUNTED=""; }
    local acc; acc=$(grep -o 'test_acc=[0-9.]*' "$TMP/w0.out" | tail -n1 | cut -d= -f2)
    [ $bad = 1 ] && acc="FAILED(${acc:-?})"
    if [ "$sc" = ckpt-ro ]; then
        local n; n=$(grep -c "checkpoint failed" "$TMP/ps1.log")
        lost="0 ($n failed ckpts)"
    fi
    echo "$rec|$lost|${acc:-?}|$(sub "$t1" "$t0")"
}

echo "== chaos: lenet, $MODE, 2 shards + 2 workers on 127.0.0.1, $EPOCHS epochs of $NAME; faults at ${AT}s"
base=$(run none)
IFS='|' read -r _ _ bacc bwall <<<"$base"
printf '%-20s %12s %16s %22s %9s\n' "scenario" "recover_s" "versions_lost" "final_acc (unfaulted)" "wall_s"
printf '%-20s %12s %16s %22s %9s\n' "none" "-" "-" "$bacc" "$bwall"
for sc in worker-kill worker-hang shard-kill ckpt-ro; do
    r=$(run $sc)
    case $r in skipped*) printf '%-20s %s\n' "$sc" "$r"; continue ;; esac
    IFS='|' read -r rec lost acc wall <<<"$r"
    printf '%-20s %12s %16s %22s %9s\n' "$sc" "$rec" "$lost" "$acc ($bacc)" "$wall"
done
