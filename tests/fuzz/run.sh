#!/usr/bin/env bash
# run.sh - what `make fuzz` runs: each libFuzzer target in turn (one at a
# time, no -jobs/-workers), on a working copy of its seed corpus, for a
# bounded time; prints executions and exec/s per target and fails on any
# finding (crash, ASan/UBSan report, leak, timeout, out-of-memory).
#
#   tests/fuzz/run.sh BUILD_DIR TARGET...
#
# Environment (the Makefile passes these):
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_FRAME_RUNS  the frame target goes on after FUZZ_SECONDS until it has
#                    executed at least this many inputs (default 10000000)
#
# Layout under BUILD_DIR: corpus/<t>/ (working corpus: starts as a copy of
# tests/fuzz/corpus/<t>/, grows across runs; delete it to start over),
# artifacts/<t>/ (crash reproducers), logs/<t>.log (libFuzzer's output).
# Reproducers committed under tests/fuzz/crashes/<t>/ are replayed first.
set -uo pipefail

B=${1:?usage: run.sh BUILD_DIR TARGET...}
shift
SECONDS_PER=${FUZZ_SECONDS:-60}
FRAME_RUNS=${FUZZ_FRAME_RUNS:-10000000}
SRC=tests/fuzz

# Largest input per target: room for several frames or a whole placement
# file, small enough to keep executions fast.
max_len() {
    case $1 in
    frame) echo 1024 ;;
    msg) echo 1300 ;;
    placement) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

stat_of() { # stat_of NAME LOG: libFuzzer's final "stat::NAME: value"
    sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | tail -1
}

stat_max() { # stat_max NAME LOG: the largest value over every run in LOG
    sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | sort -n | tail -1
}

commas() { # 12345678 -> 12,345,678
    echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'
}

failed=()
summary=()
for t in "$@"; do
    bin=$B/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz $t: $bin missing (make fuzz-build)"
        failed+=("$t")
        continue
    fi
    work=$B/corpus/$t
    art=$B/artifacts/$t/
    log=$B/logs/$t.log
    mkdir -p "$work" "$art" "$B/logs"
    if [ -d "$SRC/corpus/$t" ]; then
        cp -n "$SRC/corpus/$t"/* "$work"/ 2>/dev/null || true
    fi
    opts=(-print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
          -artifact_prefix="$art")
    if [ -f "$SRC/$t.dict" ]; then
        opts+=(-dict="$SRC/$t.dict")
    fi

    # Known reproducers first: they must not crash any more.
    if compgen -G "$SRC/crashes/$t/*" >/dev/null; then
        if ! "$bin" "${opts[@]}" "$SRC/crashes/$t"/* >"$B/logs/$t.replay.log" 2>&1; then
            echo "fuzz $t: FAILED: a reproducer in $SRC/crashes/$t/ still crashes:"
            tail -n 40 "$B/logs/$t.replay.log"
            failed+=("$t")
            summary+=("$(printf '%-10s not fuzzed: a reproducer in %s still crashes' "$t" "$SRC/crashes/$t/")")
            continue
        fi
    fi

    n0=$(find "$work" -type f | wc -l)
    echo "fuzz $t: ${SECONDS_PER} s on $n0 inputs in $work (log: $log)"
    t0=$(date +%s.%N)
    "$bin" "${opts[@]}" -max_total_time="$SECONDS_PER" "$work" >"$log" 2>&1
    rc=$?
    execs=$(stat_of number_of_executed_units "$log")
    execs=${execs:-0}
    if [ $rc -eq 0 ] && [ "$t" = frame ] && [ "$execs" -lt "$FRAME_RUNS" ]; then
        more=$((FRAME_RUNS - execs))
        echo "fuzz $t: $(commas "$execs") executions so far; $(commas "$more") more to reach $(commas "$FRAME_RUNS")"
        "$bin" "${opts[@]}" -runs="$more" "$work" >>"$log" 2>&1
        rc=$?
        e2=$(stat_of number_of_executed_units "$log")
        execs=$((execs + ${e2:-0}))
    fi
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
    rate=$(awk -v e="$execs" -v a="$t0" -v b="$t1" 'BEGIN { d = b - a; printf "%.0f", (d > 0 ? e / d : 0) }')
    n1=$(find "$work" -type f | wc -l)
    rss=$(stat_max peak_rss_mb "$log")
    line=$(printf '%-10s %14s executions in %4s s  %9s exec/s  corpus %5s -> %5s  peak RSS %s MB' \
        "$t" "$(commas "$execs")" "$secs" "$(commas "$rate")" "$n0" "$n1" "${rss:-?}")
    if [ $rc -ne 0 ]; then
        echo "fuzz $t: FAILED (libFuzzer exit $rc): a finding; the report:"
        grep -n -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|fuzz finding at|==ERROR|deadly signal|Timeout|out-of-memory' "$log" || true
        tail -n 60 "$log"
        for a in "$art"*; do
            [ -f "$a" ] && echo "fuzz $t: reproducer $a  (replay: $bin $a)"
        done
        failed+=("$t")
        summary+=("$line  FAILED")
    else
        echo "fuzz $t: ok: $line"
        summary+=("$line  no finding")
    fi
done

echo
echo "fuzz summary (${SECONDS_PER} s per target; frame until $(commas "$FRAME_RUNS") executions):"
for l in "${summary[@]}"; do
    echo "  $l"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reports above; reproducers in $B/artifacts/ or tests/fuzz/crashes/; docs/fuzzing.md)"
    exit 1
fi
echo "fuzz: no finding"
