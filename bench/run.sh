#!/usr/bin/env bash
# bench/run.sh BIN - the figures of `make bench`, measured in one run.
#
#  1. CNN training speed per SIMD path (batch 64, 1 thread) beside this
#     core's measured FMA peak, and PyTorch's speed on the same models.
#  2. Accuracy: lenet after 3 epochs on ../shared/data/mnist (if present) and
#     on Debian's Fashion-MNIST (if installed).
#
#  3. psd under load (bench/load.sh): pushes/s, GB/s, pull p50/p99, peak
#     RSS with 256 idle workers.
#  4. The whole cluster (bench/cluster.sh): time to 98.0% validation accuracy
#     with 2 shards + 2 workers, sync and async, beside PyTorch with the same
#     recipe in one process (2 threads); throughput with 1, 2, 4 workers and
#     the share of communication in a worker's step.
#
# Environment: BENCH_SECONDS (per speed measurement, default 6),
# BENCH_SKIP_LOAD=1 / BENCH_SKIP_ACCURACY=1 / BENCH_SKIP_CLUSTER=1 to skip
# part 3 / 2 / 4,
# LOAD_SECONDS per load scenario.
set -u
BIN=${1:-bin}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SECS=${BENCH_SECONDS:-6}
PY=/usr/bin/python3
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== CNN training speed: batch 64, 1 thread (forward + backward + SGD update)"
"$BIN/bench_cnn" --seconds "$SECS" | tee "$out" || echo "bench_cnn: FAILED (a path disagreed with the scalar reference)"
for m in ray lenet; do
    $PY "$HERE/torch_baseline.py" speed --model "$m" --batch 64 --threads 1 --seconds "$SECS" | tee -a "$out"
done

echo
echo "== Summary (ratios from this run)"
awk '
/^bench=peak/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } peak[f["simd"]] = f["gflops"] }
/^bench=train/ && /check=ok/ { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["model"] SUBSEP f["simd"]; sps[k] = f["samples/s"]; gf[k] = f["gflops"]; pct[k] = f["peak_pct"]; paths[f["simd"]] = 1 }
/^bench=torch/ { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } torch[f["model"]] = f["samples/s"] }
END {
    printf "%-6s %-7s %12s %9s %8s %12s %9s\n", "model", "simd", "samples/s", "GFLOP/s", "%peak", "torch s/s", "ours/torch"
    n = split("ray lenet", models, " ")
    np = split("scalar avx2 avx512 neon", order, " ")
    for (i = 1; i <= n; i++) for (j = 1; j <= np; j++) {
        k = models[i] SUBSEP order[j]
        if (!(k in sps)) continue
        r = (models[i] in torch && torch[models[i]] > 0) ? sprintf("%.2fx", sps[k] / torch[models[i]]) : "n/a"
        printf "%-6s %-7s %12.0f %9.1f %7.1f%% %12.0f %9s\n", models[i], order[j], sps[k], gf[k], pct[k], torch[models[i]], r
    }
    for (p in peak) printf "FMA peak %s: %.1f GFLOP/s\n", p, peak[p]
}' "$out"

if [ "${BENCH_SKIP_LOAD:-0}" != 1 ]; then
    echo
    echo "== psd under load: one lenet shard over loopback (bench/load.sh)"
    "$HERE/load.sh" "$BIN" || echo "load.sh: FAILED (a protocol check or psd failed; see above)"
fi

if [ "${BENCH_SKIP_CLUSTER:-0}" != 1 ]; then
    echo
    echo "== Time to 98.0% validation accuracy: lenet, 2 shards + 2 workers on 127.0.0.1 (bench/cluster.sh)"
    MNIST="$ROOT/../shared/data/mnist"
    for mode in sync async; do
        "$HERE/cluster.sh" tta "$BIN" $mode "$MNIST" || echo "cluster.sh tta $mode: FAILED"
    done
    if [ -f "$MNIST/train-images-idx3-ubyte.gz" ]; then
        echo "-- PyTorch, the same recipe in one process (batch 64, cosine, shift 2, evaluation every 20 steps), 2 threads"
        $PY "$HERE/torch_baseline.py" tta --model lenet --threads 2 --epochs 8 --shift 2 --eval-every 20 \
            --train-images "$MNIST/train-images-idx3-ubyte.gz" --train-labels "$MNIST/train-labels-idx1-ubyte.gz" \
            --test-images "$MNIST/val-images-idx3-ubyte.gz" --test-labels "$MNIST/val-labels-idx1-ubyte.gz"
    fi
    echo
    echo "== Scaling: one epoch of ../shared/data/mnist (9,000 images) split over 1, 2, 4 workers, 2 shards"
    for mode in sync async; do
        "$HERE/cluster.sh" scale "$BIN" $mode "$MNIST" || echo "cluster.sh scale $mode: FAILED"
    done
fi

if [ "${BENCH_SKIP_ACCURACY:-0}" = 1 ]; then exit 0; fi

echo
echo "== Accuracy: lenet, batch 64, lr 0.05 (momentum 0.9, cosine), 3 epochs, seed 1"
MNIST="$ROOT/../shared/data/mnist"
if [ -f "$MNIST/train-images-idx3-ubyte.gz" ]; then
    for aug in 0 2; do
        echo "-- MNIST (../shared/data/mnist: 9,000 train, 1,000 validation), --augment-shift $aug; target >= 98.0%"
        "$BIN/workerd" --standalone --model lenet --epochs 3 --batch 64 --lr 0.05 --augment-shift $aug \
            --train-images "$MNIST/train-images-idx3-ubyte.gz" --train-labels "$MNIST/train-labels-idx1-ubyte.gz" \
            --test-images "$MNIST/val-images-idx3-ubyte.gz" --test-labels "$MNIST/val-labels-idx1-ubyte.gz"
    done
else
    echo "-- MNIST: skipped: ../shared/data/mnist not present"
fi
FASHION=/usr/share/datasets/fashion-mnist
if [ -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
    echo "-- Fashion-MNIST (Debian, 60,000 train, 10,000 test); target >= 89%"
    "$BIN/workerd" --standalone --model lenet --epochs 3 --batch 64 --lr 0.05 \
        --train-images "$FASHION/train-images-idx3-ubyte.gz" --train-labels "$FASHION/train-labels-idx1-ubyte.gz" \
        --test-images "$FASHION/t10k-images-idx3-ubyte.gz" --test-labels "$FASHION/t10k-labels-idx1-ubyte.gz"
else
    echo "-- Fashion-MNIST: skipped: $FASHION not installed (make deps installs it)"
fi
