#!/bin/bash
# demo.sh - what `make demo` runs: the whole cluster of conf/placement.local.conf
# on this machine (2 psd shards + 2 workerd on 127.0.0.1) training lenet, with
# a progress line every second and the final accuracy.
#
#   conf/demo.sh [BIN]        BIN: the directory with psd, workerd, psctl (default bin)
#
# Data, first found wins (the placement's paths are replaced in a copy):
#   data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   official MNIST (make mnist)
#   ../shared/data/mnist/{train,val}-...                         MNIST split (9,000 / 1,000)
#   /usr/share/datasets/fashion-mnist/                           Debian's Fashion-MNIST
# Environment: DEMO_DATA=mnist|shared|fashion forces one; DEMO_EPOCHS=N sets
# the epochs (default 3, or 10 on the small ../shared split so that it runs
# long enough to watch); DEMO_PLACEMENT=FILE another local placement.
#
# Everything runs in a temporary directory (placement copy, checkpoints,
# logs); Ctrl-C, TERM or any exit stops every process started here and
# removes the directory.  At the end the shards say the job finished, the
# trained model is exported with psctl export to DEMO_MODEL (default
# build/demo/lenet.psdm under the repository) and checked with psctl eval.
# Exit status: 0 when both workers finished cleanly and the export worked.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-bin}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
PLACEMENT=${DEMO_PLACEMENT:-$ROOT/conf/placement.local.conf}
FASHION=/usr/share/datasets/fashion-mnist

die() { echo "demo: $*" >&2; exit 1; }

for p in psd workerd psctl; do
    [ -x "$BIN/$p" ] || die "$BIN/$p missing (run make)"
done
[ -f "$PLACEMENT" ] || die "$PLACEMENT: no such file"

# ------------------------------------------------------------ cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/psd-demo.XXXXXX") || die "mktemp failed"
PIDS=()        # every process started here
cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    if [ ${#PIDS[@]} -gt 0 ]; then
        kill -TERM "${PIDS[@]}" 2>/dev/null
        # psd writes a checkpoint on SIGTERM; give everyone 5 s, then KILL.
        local i
        for i in $(seq 50); do
            local alive=0 p
            for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ $alive = 0 ] && break
            sleep 0.1
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null
        wait 2>/dev/null
    fi
    rm -rf "$TMP"
    exit $rc
}
interrupted() {
    echo
    echo "demo: interrupted: stopping psd and workerd"
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

# ------------------------------------------------------------ data
pick_data() {
    local m=$ROOT/data/mnist s=$ROOT/../shared/data/mnist want=${DEMO_DATA:-}
    if { [ -z "$want" ] || [ "$want" = mnist ]; } && [ -f $m/train-images-idx3-ubyte.gz ] &&
       [ -f $m/train-labels-idx1-ubyte.gz ] && [ -f $m/t10k-images-idx3-ubyte.gz ] &&
       [ -f $m/t10k-labels-idx1-ubyte.gz ]; then
        DIR=$m; TEST="t10k"; SHORT="MNIST, official test set"; NAME="MNIST digits (official files in data/mnist/, 60,000 train / 10,000 test)"
    elif { [ -z "$want" ] || [ "$want" = shared ]; } && [ -f $s/train-images-idx3-ubyte.gz ] &&
         [ -f $s/train-labels-idx1-ubyte.gz ] && [ -f $s/val-images-idx3-ubyte.gz ] &&
         [ -f $s/val-labels-idx1-ubyte.gz ]; then
        DIR=$(cd "$s" && pwd); TEST="val"; SHORT="MNIST split, validation set"
        NAME="MNIST digits from $DIR (no data/mnist/: the 9,000 train / 1,000 validation split)"
    elif { [ -z "$want" ] || [ "$want" = fashion ]; } && [ -f $FASHION/train-images-idx3-ubyte.gz ]; then
        DIR=$FASHION; TEST="t10k"; SHORT="Fashion-MNIST, test set"
        NAME="Fashion-MNIST from $FASHION (no MNIST digits in data/mnist/ or ../shared/data/mnist/; make mnist fetches them)"
    elif [ -n "$want" ]; then
        die "DEMO_DATA=$want: its files are not there"
    else
        die "no data: no MNIST in data/mnist/ (make mnist) or ../shared/data/mnist/, no Fashion-MNIST in $FASHION (make deps)"
    fi
}
pick_data

# Number of items in an IDX file (plain or gzip): bytes 4..7, big-endian.
idx_count() {
    local b
    b=$( (gzip -dc "$1" 2>/dev/null || cat "$1") | head -c 8 | od -An -tu1) || return 1
    set -- $b
    [ $# = 8 ] || return 1
    echo $(( ($5 << 24) | ($6 << 16) | ($7 << 8) | $8 ))
}

# ------------------------------------------------------------ ports
port_busy() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null
    fi
}
free_port() {      # a free port other than those in $@
    local p i
    for i in $(seq 200); do
        p=$(( 20000 + RANDOM % 30000 ))
        case " $* " in *" $p "*) continue ;; esac
        port_busy $p || { echo $p; return 0; }
    done
    return 1
}
P0=7701; P1=7702
if port_busy $P0; then P0=$(free_port $P1) || die "no free port"; echo "demo: port 7701 is busy, shard 0 uses $P0"; fi
if port_busy $P1; then P1=$(free_port $P0) || die "no free port"; echo "demo: port 7702 is busy, shard 1 uses $P1"; fi

# ------------------------------------------------------------ placement copy
EPOCHS=${DEMO_EPOCHS:-}
if [ -z "$EPOCHS" ]; then
    if [ "$TEST" = val ]; then EPOCHS=10; else EPOCHS=3; fi
fi
case $EPOCHS in ''|*[!0-9]*|0) die "DEMO_EPOCHS=$EPOCHS: expected a positive integer" ;; esac
CONF=$TMP/placement.conf
sed -E -e "s|(\"train_images\" *: *\")[^\"]*|\1$DIR/train-images-idx3-ubyte.gz|" \
       -e "s|(\"train_labels\" *: *\")[^\"]*|\1$DIR/train-labels-idx1-ubyte.gz|" \
       -e "s|(\"test_images\" *: *\")[^\"]*|\1$DIR/$TEST-images-idx3-ubyte.gz|" \
       -e "s|(\"test_labels\" *: *\")[^\"]*|\1$DIR/$TEST-labels-idx1-ubyte.gz|" \
       -e "s|(\"epochs\" *: *)[0-9]+|\1$EPOCHS|" \
       -e "s|(\"port\" *: *)7701\b|\1$P0|" -e "s|(\"port\" *: *)7702\b|\1$P1|" \
       "$PLACEMENT" > "$CONF" || die "cannot write $CONF"
for k in "$DIR/train-images" "\"epochs\": *$EPOCHS" "\"port\": *$P0" "\"port\": *$P1"; do
    grep -Eq -- "$k" "$CONF" || die "could not rewrite $PLACEMENT (expected its 4 data paths, epochs and ports 7701/7702)"
done
BATCH=$(sed -nE 's|.*"batch" *: *([0-9]+).*|\1|p' "$CONF" | head -n1)
BATCH=${BATCH:-64}
NTRAIN=$(idx_count "$DIR/train-images-idx3-ubyte.gz" 2>/dev/null) || NTRAIN=
TOTAL=
if [ -n "$NTRAIN" ]; then   # 2 parts; a worker's epoch is ceil(part / batch) steps
    PART=$(( (NTRAIN + 1) / 2 ))
    TOTAL=$(( EPOCHS * ((PART + BATCH - 1) / BATCH) ))
fi

echo "demo: data: $NAME"
echo "demo: lenet, sync, 2 shards (127.0.0.1:$P0, :$P1), 2 workers, batch $BATCH per worker, $EPOCHS epochs${TOTAL:+ = $TOTAL steps}"
echo "demo: logs and checkpoints in $TMP (removed at the end)"

# ------------------------------------------------------------ start
START=$(date +%s.%N)
for n in ps0 ps1; do
    "$BIN/psd" --placement "$CONF" --node $n --state-dir "$TMP/state" --fresh 2>"$TMP/$n.log" &
    PIDS+=($!); eval "PID_$n=$!"
done
# Wait until both shards answer STATUS (or one of them dies).
ready=0
for i in $(seq 100); do
    for n in ps0 ps1; do
        p=PID_$n
        if ! kill -0 ${!p} 2>/dev/null; then
            echo "demo: psd $n exited at start; its log:" >&2
            sed 's/^/  /' "$TMP/$n.log" >&2
            exit 1
        fi
    done
    if "$BIN/psctl" --placement "$CONF" --timeout 500 status >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
[ $ready = 1 ] || die "the shards did not answer within 10 s (logs: $TMP/ps0.log, ps1.log)"

WPIDS=()
for n in w0 w1; do
    "$BIN/workerd" --placement "$CONF" --node $n --connect-timeout 30 >"$TMP/$n.out" 2>"$TMP/$n.log" &
    PIDS+=($!); WPIDS+=($!)
done

# ------------------------------------------------------------ progress
elapsed() { echo "$(date +%s.%N) $START" | awk '{ printf "%.1f", $1 - $2 }'; }

# One line from `psctl status` and `psctl accuracy` (their tables):
# the shards' lowest version, the workers' samples/s summed, the latest accuracy.
progress() {
    local st acc
    st=$("$BIN/psctl" --placement "$CONF" --timeout 1000 status 2>/dev/null)
    acc=$("$BIN/psctl" --placement "$CONF" --timeout 1000 accuracy 2>/dev/null)
    awk -v t="$(elapsed)" -v total="$TOTAL" -v acc="$acc" '
        BEGIN { sec = 0; ver = -1; rate = 0; nw = 0 }
        /^SHARD / { sec = 1; next }
        /^WORKER / { sec = 2; next }
        sec == 1 && $1 ~ /^[0-9]+$/ && $4 ~ /^\[/ {
            if (ver < 0 || $6 + 0 < ver) ver = $6 + 0 }
        sec == 2 && NF >= 5 && $3 !~ /^0\// { rate += $5; nw++ }
        END {
            n = split(acc, l, "\n"); a = "-"
            for (i = n; i > 1; i--) {
                split(l[i], f, " ")
                if (f[1] ~ /^[0-9]+$/) { a = f[3] " (step " f[1] ")"; break }
            }
            s = (ver < 0) ? "?" : ver
            if (total != "" && ver >= 0) s = sprintf("%d/%d (%3.0f%%)", ver, total, 100 * ver / total)
            printf "[%6ss] step %s  %7.0f samples/s (%d workers)  accuracy %s\n", t, s, rate, nw, a
        }' <<<"$st"
}

while :; do
    running=0
    for p in "${WPIDS[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
    [ $running = 0 ] && break
    progress
    sleep 1
done

# ------------------------------------------------------------ result
fail=0
i=0
for n in w0 w1; do
    wait "${WPIDS[$i]}"; rc=$?
    if [ $rc != 0 ]; then
        fail=1
        echo "demo: workerd $n exited with status $rc; the end of its log:" >&2
        tail -n 15 "$TMP/$n.log" | sed 's/^/  /' >&2
    fi
    i=$((i + 1))
done
WALL=$(elapsed)
progress
echo
echo "accuracy history (psctl accuracy, reported by w0 on the $TEST set):"
"$BIN/psctl" --placement "$CONF" accuracy 2>&1 | sed 's/^/  /'
echo
final=$(grep -o 'test_acc=[0-9.]*' "$TMP/w0.out" | tail -n1 | cut -d= -f2)
last=$(tail -n1 "$TMP/w0.out" 2>/dev/null)
job=$("$BIN/psctl" --placement "$CONF" status 2>/dev/null | grep -m1 '^job:')
echo "demo: ${job:-job: (no job line from psctl status)}"
MODEL=${DEMO_MODEL:-$ROOT/build/demo/lenet.psdm}
mkdir -p "$(dirname "$MODEL")" 2>/dev/null
out=$("$BIN/psctl" --placement "$CONF" export "$MODEL" 2>&1); rc=$?
sed 's/^/demo: /' <<<"$out"
if [ $rc != 0 ]; then
    echo "demo: psctl export to $MODEL failed" >&2
    fail=1
fi
if [ $fail = 0 ] && [ -n "$final" ]; then
    echo "demo: done: final accuracy ${final}% ($SHORT)"
    echo "demo: wall time ${WALL} s for $EPOCHS epochs${TOTAL:+, $TOTAL steps}; w0's last epoch: $last"
    echo "demo: the trained model is in $MODEL; psctl eval on it ($SHORT):"
    "$BIN/psctl" eval "$MODEL" --test-images "$DIR/$TEST-images-idx3-ubyte.gz" \
        --test-labels "$DIR/$TEST-labels-idx1-ubyte.gz" | sed 's/^/  /'
    exit 0
fi
echo "demo: FAILED after ${WALL} s (worker logs above; w0's last line: ${last:-none})" >&2
exit 1
