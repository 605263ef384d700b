#!/usr/bin/env bash
# bench/cluster.sh - figures of a whole local cluster (psd shards + workerd on
# 127.0.0.1), for `make bench`.
#
#   bench/cluster.sh tta   BIN MODE [DATA_DIR]   time to accuracy
#   bench/cluster.sh scale BIN MODE [DATA_DIR]   throughput with 1, 2, 4 workers
#
# tta: 2 shards + 2 workers train lenet on DATA_DIR (default
#   ../shared/data/mnist: train-* and val-*) until the evaluating worker's
#   validation accuracy reaches TTA_TARGET (default 98.0) -- the placement's
#   job.target_accuracy, checked every TTA_EVAL_STEPS versions (default 20 in
#   sync, 40 in async/ssp: the same number of samples) --
#   or TTA_EPOCHS (default 8) epochs pass.  Prints one line:
#     bench=tta mode=... reached=0|1 wall_s=... (launch of the first daemon to
#     the exit of the last worker) version=... acc=... epochs_run=...
#   and the accuracy history.
# scale: for 1, 2 and 4 workers (2 shards), one epoch of the training set
#   split between the workers; prints per run the total samples/s (all
#   workers' samples over the wall time of the training) and the share of the
#   workers' step time spent waiting for pulls and pushes (comm) rather than
#   computing.
#
# Job: lenet, batch 64 per worker, lr 0.05 and momentum 0.9 (sync) or lr 0.1
# and momentum 0.5 (async/ssp, see below; LR= overrides), cosine over the run,
# augment_shift TTA_SHIFT (default 2), seed 1, 1 thread per worker.
# Everything runs in a temporary directory that is removed at the end;
# every daemon started here is stopped on any exit.
set -u
CMD=${1:?usage: cluster.sh tta|scale BIN MODE [DATA_DIR]}
BIN=${2:?BIN}
MODE=${3:?MODE}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${4:-$HERE/../../shared/data/mnist}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
TARGET=${TTA_TARGET:-98.0}
# async/ssp apply every worker's gradient on its own: twice the versions per
# sample of a 2-worker sync job, so evaluations every 40 versions see as
# many samples between them as sync's every 20, and lr 0.1 at momentum 0.5
# gives about the step per sample that sync gets from lr 0.05 at momentum
# 0.9 on 2 averaged gradients (momentum 0.9 with stale gradients diverges).
if [ "$MODE" = sync ]; then EVAL_STEPS=${TTA_EVAL_STEPS:-20}; LR=${LR:-0.05}
else EVAL_STEPS=${TTA_EVAL_STEPS:-40}; LR=${LR:-0.1}; fi
EPOCHS=${TTA_EPOCHS:-8}
SHIFT=${TTA_SHIFT:-2}

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz val-images-idx3-ubyte.gz \
         val-labels-idx1-ubyte.gz; do
    if [ ! -f "$DATA/$f" ]; then
        echo "bench=$CMD mode=$MODE skipped: $DATA/$f not present"
        exit 0
    fi
done
DATA=$(cd "$DATA" && pwd)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psd-bench.XXXXXX") || exit 1
PIDS=()
cleanup() {
    [ ${#PIDS[@]} -gt 0 ] && kill -KILL "${PIDS[@]}" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# placement NWORKERS STEPS_TOTAL EXTRA_JOB_FIELDS -> $TMP/p.conf, ports in PORTS
placement() {
    local nw=$1 total=$2 extra=$3 mom=0.9 i
    [ "$MODE" != sync ] && mom=0.5
    local staleness=""
    [ "$MODE" = ssp ] && staleness='"staleness": 2,'
    PORTS=($(free_port) $(free_port))
    while [ "${PORTS[0]}" = "${PORTS[1]}" ]; do PORTS[1]=$(free_port); done
    {
        echo "{\"job\": {\"model\": \"lenet\", \"mode\": \"$MODE\", $staleness \"batch\": 64, \"seed\": 1,"
        echo "  $extra"
        echo "  \"optimizer\": {\"lr\": $LR, \"momentum\": $mom, \"schedule\": \"cosine\", \"total_steps\": $total}},"
        echo " \"data\": {\"train_images\": \"$DATA/train-images-idx3-ubyte.gz\", \"train_labels\": \"$DATA/train-labels-idx1-ubyte.gz\","
        echo "          \"test_images\": \"$DATA/val-images-idx3-ubyte.gz\", \"test_labels\": \"$DATA/val-labels-idx1-ubyte.gz\"},"
        echo " \"nodes\": ["
        echo "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": ${PORTS[0]}, \"role\": \"ps\"},"
        echo "  {\"id\": \"ps1\", \"address\": \"127.0.0.1\", \"port\": ${PORTS[1]}, \"role\": \"ps\"},"
        for ((i = 0; i < nw; i++)); do
            local sep=,
            [ $i = $((nw - 1)) ] && sep=
            echo "  {\"id\": \"w$i\", \"address\": \"127.0.0.1\", \"role\": \"worker\", \"threads\": 1}$sep"
        done
        echo " ]}"
    } >"$TMP/p.conf"
}

now() { date +%s.%N; }

# run NWORKERS: start 2 shards and NWORKERS workers, wait for the workers;
# sets T0/T1 (launch, last worker exit) and leaves the shards running.
run() {
    local nw=$1 i
    PIDS=()
    rm -rf "$TMP/state0" "$TMP/state1"
    T0=$(now)
    for i in 0 1; do
        "$BIN/psd" --placement "$TMP/p.conf" --node ps$i --state-dir "$TMP/state$i" --fresh \
            2>"$TMP/ps$i.log" &
        PIDS+=($!)
    done
    local wp=()
    for ((i = 0; i < nw; i++)); do
        "$BIN/workerd" --placement "$TMP/p.conf" --node w$i >"$TMP/w$i.out" 2>"$TMP/w$i.log" &
        wp+=($!)
        PIDS+=($!)
    done
    local bad=0
    for p in "${wp[@]}"; do wait "$p" || bad=1; done
    T1=$(now)
    if [ $bad = 1 ]; then
        echo "bench=$CMD mode=$MODE FAILED: a worker exited non-zero" >&2
        tail -n 5 "$TMP"/w*.log "$TMP"/ps*.log >&2
        return 1
    fi
}

stop_shards() {
    kill -TERM "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null
    wait "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null
    PIDS=()
}

if [ "$CMD" = tta ]; then
    steps_epoch=$(( (9000 / 2 + 63) / 64 ))
    total=$((EPOCHS * steps_epoch))
    [ "$MODE" != sync ] && total=$((2 * total))
    placement 2 $total "\"epochs\": $EPOCHS, \"eval_every_steps\": $EVAL_STEPS, \"target_accuracy\": $TARGET, \"augment_shift\": $SHIFT,"
    run 2 || exit 1
    "$BIN/psctl" --placement "$TMP/p.conf" status --json >"$TMP/status.json" 2>"$TMP/psctl.err"
    stop_shards
    /usr/bin/python3 - "$TMP/status.json" "$MODE" "$TARGET" "$T0" "$T1" "$TMP/w0.out" <<'EOF'
import json, sys
path, mode, target, t0, t1, out = sys.argv[1:]
doc = json.load(open(path))
shards = doc.get("shards", doc if isinstance(doc, list) else [])
s0 = next((s for s in shards if s.get("shard") == 0), shards[0] if shards else {})
hist = s0.get("history", [])
accs = [(h["version"], h["elapsed_s"], 100 * h["test_acc"]) for h in hist if h.get("test_acc") is not None]
best = max((a for _, _, a in accs), default=0.0)
reached = int(best >= float(target))
job = s0.get("job", {})
epochs = sum(1 for l in open(out) if l.startswith("epoch="))
print(f"bench=tta mode={mode} workers=2 shards=2 target={float(target):.1f} reached={reached} "
      f"wall_s={float(t1) - float(t0):.2f} version={job.get('version')} acc={accs[-1][2] if accs else 0:.2f} "
      f"best_acc={best:.2f} epochs_run={epochs} reason=\"{job.get('reason')}\"")
print("   accuracy history (version, worker elapsed s, val acc %): " +
      ", ".join(f"{v}:{e:.1f}s:{a:.2f}" for v, e, a in accs))
EOF
    exit 0
fi

if [ "$CMD" = scale ]; then
    for nw in 1 2 4; do
        steps_epoch=$(( (9000 / nw + 63) / 64 ))
        total=$steps_epoch
        [ "$MODE" != sync ] && total=$((nw * steps_epoch))
        placement $nw $total "\"epochs\": 1, \"augment_shift\": 0,"
        # no test set: nobody evaluates, the figure is training only
        /usr/bin/python3 - "$TMP/p.conf" <<'EOF'
import re, sys
p = sys.argv[1]
t = open(p).read()
t = re.sub(r',\s*"test_images": "[^"]*", "test_labels": "[^"]*"', '', t)
open(p, "w").write(t)
EOF
        run $nw || exit 1
        stop_shards
        cat "$TMP"/w*.out | /usr/bin/python3 -c '
import sys
nw, mode, wall = int(sys.argv[1]), sys.argv[2], float(sys.argv[4]) - float(sys.argv[3])
samples = t = comm = 0.0
for l in sys.stdin:
    if not l.startswith("epoch="):
        continue
    f = dict(kv.split("=", 1) for kv in l.split())
    samples += float(f["samples"]); t += float(f["time_s"]); comm += float(f["comm_s"])
steps_t = t / nw if nw else 0
print(f"bench=scale mode={mode} workers={nw} shards=2 samples={samples:.0f} "
      f"train_s={steps_t:.2f} samples/s={samples / steps_t if steps_t else 0:.0f} "
      f"wall_s={wall:.2f} comm_pct={100 * comm / t if t else 0:.1f} compute_pct={100 * (t - comm) / t if t else 0:.1f}")
' $nw "$MODE" "$T0" "$T1"
    done
    exit 0
fi
echo "cluster.sh: unknown command $CMD (tta or scale)" >&2
exit 2
