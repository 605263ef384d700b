#!/usr/bin/env bash
# bench/net.sh - `make bench-net`: the namespace cluster of
# tests/net/netcluster.sh (2 psd shards + 3 workerd, each in its own network
# namespace, docs/testnet.md) trains lenet on ../shared/data/mnist until the
# evaluating worker's validation accuracy reaches NET_TARGET (default 97.5),
# for a list of settings: mode x push/pull compression x link profile
# (none = unshaped kernel bridge, edge = 100 Mbit/s 20 ms RTT 0.1% loss,
# poor = the same with 1% loss) x a slow worker (w2 with --slowdown 3).
#
#   bench/net.sh [ROW...]     rows LINK:MODE:PUSH:PULL[:slow[:CC]], like
#                             edge:async:topk:delta or none:sync:none:full:slow
#                             (MODE async+overlap or ssp+overlap: job.overlap;
#                             async+local2, ssp+local3...: job.local_steps)
#                             or poor:async:none:full::cubic (CC: the job's
#                             TCP congestion control, job.tcp_congestion;
#                             default the machine's, bbr here);
#                             default: NET_ROWS or the built-in list below
#
# NET_REPEAT=N runs the whole list N times, round after round (the machine's
# drift then falls on every setting alike), and adds a summary per setting:
# runs, how many reached the target, the median wall seconds (a run that
# did not reach counts as slower than any that did) and median samples/s.
# Time to accuracy on this 1,000-image validation set varies by 2x between
# runs of one setting: compare medians over several runs, not single rows.
# NET_BATCH (64) and NET_TOPK (topk_percent, 1) change those job settings;
# NET_ASYNC_LR, NET_ASYNC_MOMENTUM, NET_SYNC_LR, NET_SYNC_MOMENTUM,
# NET_OVERLAP_MOMENTUM and NET_LOCAL_MOMENTUM (rows with local steps) the
# optimizer.
#
# Prints one line per run and then a table:
#   link TCP mode push pull slow | reached wall_s samples/s push_B/step pull_B/step acc
# wall_s: launch of the first shard to the exit of the last worker (the job
# ends at the target; or at NET_LIMIT seconds, default 150, or NET_EPOCHS
# epochs, default 6).  samples/s: all workers' samples (the shards' count of
# what the pushes held) over wall_s.  push_B/step, pull_B/step: bytes the
# shards received / sent per push (a worker step; with local steps, a round
# of them), both shards together, from psctl status (frame bytes on the
# wire, TCP/IP headers not counted).
# Needs root (namespaces) and the data; otherwise prints why and exits 0.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NC=$ROOT/tests/net/netcluster.sh
DATA=${NET_DATA:-$ROOT/../shared/data/mnist}
TARGET=${NET_TARGET:-97.5}
LIMIT=${NET_LIMIT:-150}
EPOCHS=${NET_EPOCHS:-6}
BATCH=${NET_BATCH:-64}
PY=/usr/bin/python3

DEFAULT_ROWS="
none:sync:none:full none:async:none:full none:ssp:none:full
none:async:fp16:fp16 none:async:topk:topk none:sync:topk:topk
edge:sync:none:full edge:async:none:full edge:ssp:none:full
edge:async:fp16:fp16 edge:async:topk:delta edge:async:topk:topk edge:sync:topk:topk edge:ssp:topk:topk
poor:async:none:full poor:async:topk:topk poor:sync:topk:topk
poor:async:none:full::reno poor:async:topk:topk::reno
none:sync:none:full:slow none:async:none:full:slow none:ssp:none:full:slow
edge:sync:topk:topk:slow edge:async:topk:topk:slow edge:ssp:topk:topk:slow
none:async:topk:topk::cubic none:async:topk:topk::cubic none:async+overlap:topk:topk::cubic
edge:async:topk:topk::cubic edge:async:topk:topk::cubic edge:sync:topk:topk::cubic
edge:ssp:topk:topk::cubic edge:async+overlap:topk:topk::cubic edge:async:topk:topk:slow:cubic
none:async+local2:topk:topk::cubic edge:async+local2:topk:topk::cubic edge:async+local2:topk:topk:slow:cubic
poor:async:topk:topk::cubic
"
ROWS=${*:-${NET_ROWS:-$DEFAULT_ROWS}}
REPEAT=${NET_REPEAT:-1}
case $REPEAT in ''|*[!0-9]*|0) echo "bench-net: NET_REPEAT must be a positive integer, not '$REPEAT'" >&2; exit 2 ;; esac
ALL=""
for ((r = 0; r < REPEAT; r++)); do ALL="$ALL $ROWS"; done

if [ "$(id -u)" != 0 ]; then
    echo "bench-net: skipped: network namespaces need root (euid $(id -u))"; exit 0
fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz val-images-idx3-ubyte.gz \
         val-labels-idx1-ubyte.gz; do
    [ -f "$DATA/$f" ] || { echo "bench-net: skipped: $DATA/$f not present"; exit 0; }
done
DATA=$(cd "$DATA" && pwd)
for p in none edge poor; do
    "$NC" check $p >/dev/null 2>&1 || { echo "bench-net: skipped: $("$NC" check $p 2>&1 | tail -n1)"; exit 0; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psd-benchnet.XXXXXX") || exit 1
export NC_PREFIX=${NC_PREFIX:-psb}
cleanup() { "$NC" down "$TMP/c" >/dev/null 2>&1; [ -n "${NET_KEEP:-}" ] && echo "bench-net: kept $TMP" || rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

export NC_MODEL=lenet NC_BATCH=$BATCH NC_SEED=1 NC_RUN_TIMEOUT=$LIMIT
export NC_TRAIN_IMAGES=$DATA/train-images-idx3-ubyte.gz NC_TRAIN_LABELS=$DATA/train-labels-idx1-ubyte.gz
export NC_TEST_IMAGES=$DATA/val-images-idx3-ubyte.gz NC_TEST_LABELS=$DATA/val-labels-idx1-ubyte.gz

RESULTS=$TMP/results.txt
: >"$RESULTS"
# what the delay switch (edge, poor) added to its one-way delay under this
# load, over all runs of the profile so far: how late it read frames after
# the kernel had them, and sent them after they were due (mean, max)
switch_lateness() {
    local pidf=$TMP/c/netdelay.pid log=$TMP/c/logs/netdelay.log
    [ -f "$pidf" ] && kill -USR1 "$(cat "$pidf")" 2>/dev/null || return 0
    sleep 0.3
    grep '^netdelay: port' "$log" | tail -n 5 | awk -v link="$cur" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          n = v["rx"]; split(v["read_late_us"], r, "/"); split(v["send_late_us"], t, "/")
          rs += r[1] * n; rn += n; if (r[2] > rm) rm = r[2]
          m = v["tx"]; ts += t[1] * m; tn += m; if (t[2] > tm) tm = t[2] }
        END { if (rn && tn) printf "bench=net link=%s switch: read frames %.0f us after arrival (max %d), sent them %.0f us after due (max %d)\n", link, rs / rn, rm, ts / tn, tm }'
}
cur=""
for row in $ALL; do
    IFS=: read -r link mode push pull slow cc <<<"$row"
    slow=${slow:-}; cc=${cc:-}
    shown=$mode overlap="" local=1 jobopt=""
    case $mode in
        *+overlap) mode=${mode%+overlap}; overlap=1; jobopt=", \"overlap\": true" ;;
        *+local[0-9]*) local=${mode##*+local}; mode=${mode%+local*}; jobopt=", \"local_steps\": $local" ;;
    esac
    if [ "$link" != "$cur" ]; then
        switch_lateness
        "$NC" down "$TMP/c" >/dev/null 2>&1
        rm -rf "$TMP/c"
        "$NC" up "$link" "$TMP/c" >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log"; exit 1; }
        cur=$link
    fi
    cc_now=${cc:-$(grep '^NC_TCP_CC=' "$TMP/c/cluster.env" | cut -d= -f2)}
    # 9000 examples in 3 parts, batch 64: 47 steps per worker and epoch
    steps_epoch=$(( (9000 / 3 + BATCH - 1) / BATCH ))
    if [ "$mode" = sync ]; then
        lr=${NET_SYNC_LR:-0.05}; mom=${NET_SYNC_MOMENTUM:-0.9}; total=$((EPOCHS * steps_epoch)); eval=15
    else # every worker's gradient is a version: 3x the versions of sync
        # with local steps a version holds that many minibatches of one worker:
        # the evaluations keep their pace in samples; the optimizer stays the
        # same (its cosine then runs over that many times the samples: the
        # local rows end before it is half way, the others at 55-70%)
        lr=${NET_ASYNC_LR:-0.05}; mom=${NET_ASYNC_MOMENTUM:-0.5}
        total=$((3 * EPOCHS * steps_epoch)); eval=$((45 / local))
        # overlap: one more step of staleness, which acts as momentum itself
        [ -n "$overlap" ] && mom=${NET_OVERLAP_MOMENTUM:-0.2}
        # local steps: each push holds the worker's own steps the others have
        # not seen, staleness that acts as momentum too (at 0.7 edge missed
        # 97.5% in 5 of 12 runs; 0.5, in a first version, about as 0.2)
        [ "$local" -gt 1 ] && mom=${NET_LOCAL_MOMENTUM:-0.2}
    fi
    extra="\"epochs\": $EPOCHS, \"eval_every_steps\": $eval, \"target_accuracy\": $TARGET, \"augment_shift\": 2"
    [ "$mode" = ssp ] && extra="$extra, \"staleness\": 2"
    extra="$extra$jobopt"
    [ -n "$cc" ] && extra="$extra, \"tcp_congestion\": \"$cc\""
    tk=""
    [ "$push" = topk ] || [ "$pull" = topk ] && tk=", \"topk_percent\": ${NET_TOPK:-1}"
    [ "$push" != none ] || [ "$pull" != full ] &&
        extra="$extra, \"compression\": {\"push\": \"$push\"$tk, \"pull\": \"$pull\"}"
    export NC_OPTIMIZER="{\"lr\": $lr, \"momentum\": $mom, \"schedule\": \"cosine\", \"total_steps\": $total}"
    export NC_WORKER_ARGS_w2=""
    [ "$slow" = slow ] && export NC_WORKER_ARGS_w2="--slowdown 3"
    "$NC" placement "$TMP/c" "$mode" "$extra" >/dev/null || exit 1
    rm -f "$TMP/c/status.json"
    all=$("$NC" run "$TMP/c" 2>&1)
    out=$(echo "$all" | grep '^netcluster: run:')
    if [ -z "$out" ]; then
        why=$(echo "$all" | tail -n 3 | tr '\n' ' ')
        echo "bench=net row=$row FAILED: $why"
        echo "| $link | - | $shown | $push | $pull | ${slow:+w2 x3} | FAILED: ${why//|/ } |" >>"$RESULTS"
        continue
    fi
    echo "bench=net row=$row $out"
    # each worker's time in pull/push calls (workerd's last INFO line)
    for h in w0 w1 w2; do
        wl=$(grep -o 'waited for the shards [^)]*' "$TMP/c/logs/run/$h.log" 2>/dev/null | tail -n1)
        [ -n "$wl" ] && echo "bench=net row=$row $h $wl"
    done
    wall=$(echo "$out" | grep -o 'wall_s=[0-9.]*' | cut -d= -f2)
    $PY - "$TMP/c/status.json" "$row" "$TARGET" "${wall:-0}" "$BATCH" "$cc_now" >>"$RESULTS" <<'EOF'
import json, sys
path, row, target, wall, batch, cc = sys.argv[1:]
wall = float(wall); target = float(target); batch = int(batch)
f = row.split(":") + [""]
link, mode, push, pull, slow = f[:5]
try:
    doc = json.load(open(path))
    shards = doc.get("shards", [])
except Exception:
    shards = []
s0 = next((s for s in shards if s.get("shard") == 0), shards[0] if shards else {})
accs = [100 * h["test_acc"] for h in s0.get("history", []) if h.get("test_acc") is not None]
best = max(accs, default=0.0)
steps = s0.get("pushes", 0)
# every worker's samples as its pushes counted them (a push with local
# steps holds several minibatches); pushes x batch before psd reported them
ws = s0.get("workers", [])
samples = sum(w.get("samples", 0) for w in ws) if ws and all("samples" in w for w in ws) \
    else steps * batch
bin_ = sum(s.get("bytes_in", 0) for s in shards)
bout = sum(s.get("bytes_out", 0) for s in shards)
sps = samples / wall if wall > 0 else 0
per = lambda b: f"{b / steps:,.0f}" if steps else "-"
print(f"| {link} | {cc} | {mode} | {push} | {pull} | {'w2 x3' if slow else '-'} | "
      f"{'yes' if best >= target else 'no'} | {wall:.1f} | {sps:,.0f} | {per(bin_)} | {per(bout)} | {best:.2f} |")
EOF
done
switch_lateness
echo
echo "bench=net target=${TARGET}% limit=${LIMIT}s epochs=$EPOCHS (lenet, batch $BATCH per worker, 3 workers, 2 shards)"
echo "| link | TCP | mode | push | pull | slow worker | reached | wall s | samples/s | push B/step | pull B/step | best acc |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
cat "$RESULTS"
# a summary per setting that ran more than once
$PY - "$RESULTS" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(f) < 10 or f[6] not in ("yes", "no"):
        continue
    reached = f[6] == "yes"
    runs.setdefault(" | ".join(f[:6]), []).append(
        (float(f[7]) if reached else float("inf"), float(f[8].replace(",", "")), reached))
many = {k: v for k, v in runs.items() if len(v) > 1}
if many:
    print()
    print("| link | TCP | mode | push | pull | slow worker | runs | reached | median wall s | walls | median samples/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, v in many.items():
        walls = sorted(w for w, _, _ in v)
        med = statistics.median(walls)
        shown = " ".join(f"{w:.1f}" if w != float("inf") else "no" for w in walls)
        medtxt = f"{med:.1f}" if med != float("inf") else "not reached"
        print(f"| {k} | {len(v)} | {sum(r for _, _, r in v)} | {medtxt} | {shown} | "
              f"{statistics.median(s for _, s, _ in v):,.0f} |")
EOF
