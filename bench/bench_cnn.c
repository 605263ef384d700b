/* bench_cnn - training speed of the CNN engine per SIMD path, beside this
 * core's measured FP32 FMA peak.
 *
 * For every path this CPU runs: first check it (a LeNet-shaped GEMM and a
 * whole-model gradient against the scalar path; a path that disagrees is
 * reported and not timed), then time full training steps (pull, gather,
 * forward, backward, SGD update: the trainer loop workerd runs) of batch 64.
 * One line per measurement, key=value, for bench/run.sh to tabulate.
 *
 * usage: bench_cnn [--seconds S] [--threads N] [--models ray,lenet] [--paths avx512,...]
 *                  [--data-images F --data-labels F]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn.h"
#include "dataset.h"
#include "kernels.h"
#include "rng.h"
#include "shard.h"
#include "trainer.h"
#include "util.h"

static double seconds_per_measure = 3.0;

/* FLOP/s of the path's FMA loop, best of a few rounds. */
static double measure_peak(const kern_ops *k)
{
    long iters = 1000;
    double best = 0;
    /* grow until one call takes ~50 ms */
    for (;;) {
        double t0 = trainer_now();
        k->fma_peak(iters);
        double dt = trainer_now() - t0;
        if (dt > 0.05)
            break;
        iters *= 2;
    }
    for (int r = 0; r < 10; r++) {
        double t0 = trainer_now();
        double flops = k->fma_peak(iters);
        double dt = trainer_now() - t0;
        if (flops / dt > best)
            best = flops / dt;
    }
    return best;
}

/* Compare path k with the generic path on a LeNet conv2 GEMM and the
 * gradient of model m.  Returns the worst relative difference. */
static double check_path(const kern_ops *k, const cnn_model *m)
{
    const int M = 50, N = 4096, K = 500;
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)K * N * 4);
    float *c1 = malloc((size_t)M * N * 4), *c2 = malloc((size_t)M * N * 4);
    rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < M * K; i++)
        a[i] = rng_uniform(&r) - 0.5f;
    for (int i = 0; i < K * N; i++)
        b[i] = rng_uniform(&r) - 0.5f;
    kern_generic_ops.sgemm(0, 0, M, N, K, a, K, b, N, 0, c1, N);
    k->sgemm(0, 0, M, N, K, a, K, b, N, 0, c2, N);
    double worst = 0;
    for (int i = 0; i < M * N; i++) {
        double d = fabs(c1[i] - c2[i]) / (fabs(c1[i]) + 1e-2);
        if (d > worst)
            worst = d;
    }
    free(a); free(b); free(c1); free(c2);

    char err[256];
    const int n = 32;
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    float *p = malloc(m->nparams * 4), *x = malloc(in * n * 4);
    float *g1 = malloc(m->nparams * 4), *g2 = malloc(m->nparams * 4);
    uint8_t y[32];
    cnn_params_init(m, 1, p, 0, m->nparams);
    for (size_t i = 0; i < in * n; i++)
        x[i] = rng_uniform(&r) * 2 - 0.5f;
    for (int i = 0; i < n; i++)
        y[i] = (uint8_t)(i % 10);
    cnn_engine *e1 = cnn_engine_new(m, &kern_generic_ops, 1, n, err, sizeof(err));
    cnn_engine *e2 = cnn_engine_new(m, k, 1, n, err, sizeof(err));
    if (!e1 || !e2) {
        fprintf(stderr, "bench_cnn: %s\n", err);
        exit(1);
    }
    cnn_engine_grad(e1, p, x, y, n, g1, NULL, NULL);
    cnn_engine_grad(e2, p, x, y, n, g2, NULL, NULL);
    double gmax = 0;
    for (size_t i = 0; i < m->nparams; i++)
        if (fabs(g1[i]) > gmax)
            gmax = fabs(g1[i]);
    for (size_t i = 0; i < m->nparams; i++) {
        double d = fabs(g1[i] - g2[i]) / (fabs(g1[i]) + 1e-2 * gmax);
        if (d > worst)
            worst = d;
    }
    cnn_engine_free(e1);
    cnn_engine_free(e2);
    free(p); free(x); free(g1); free(g2);
    return worst;
}

/* Training samples/s of model m on path k: whole trainer epochs over ds,
 * best of several timed rounds of ~seconds_per_measure/3 each. */
static double measure_train(const kern_ops *k, const cnn_model *m, const dataset *ds,
                            int threads, int batch)
{
    char err[256];
    optim_config c;
    optim_config_default(&c);
    ps_shard whole;
    cnn_engine *e = cnn_engine_new(m, k, threads, batch, err, sizeof(err));
    trainer t;
    if (!e || ps_shard_init(&whole, m, k, &c, 1, 0, m->nparams, err, sizeof(err)) != 0 ||
        trainer_init(&t, m, e, ds, 0, 1, batch, 1, trainer_local_backend(&whole), err,
                     sizeof(err)) != 0) {
        fprintf(stderr, "bench_cnn: %s\n", err);
        exit(1);
    }
    trainer_stats st;
    /* warm-up: a few steps */
    trainer_run_epoch(&t, 0, 5, &st, err, sizeof(err));
    double best = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = trainer_now();
        size_t samples = 0;
        long epoch = 1;
        while (trainer_now() - t0 < seconds_per_measure / 3) {
            long target = t.step + 20;
            if (trainer_run_epoch(&t, epoch++, target, &st, err, sizeof(err)) != 0) {
                fprintf(stderr, "bench_cnn: %s\n", err);
                exit(1);
            }
            samples += st.samples;
        }
        double sps = (double)samples / (trainer_now() - t0);
        if (sps > best)
            best = sps;
    }
    trainer_free(&t);
    ps_shard_free(&whole);
    cnn_engine_free(e);
    return best;
}

static int list_has(const char *list, const char *name)
{
    if (!list)
        return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *models = "ray,lenet", *paths = NULL, *img = NULL, *lbl = NULL;
    long threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--seconds") && v) {
            float s;
            if (util_parse_float(v, 0.1f, 3600, &s)) {
                fprintf(stderr, "bench_cnn: --seconds '%s': expected a number\n", v);
                return 2;
            }
            seconds_per_measure = s;
        } else if (!strcmp(argv[i], "--threads") && v) {
            if (util_parse_long(v, 1, 64, &threads)) {
                fprintf(stderr, "bench_cnn: --threads '%s': expected 1..64\n", v);
                return 2;
            }
        } else if (!strcmp(argv[i], "--models") && v) {
            models = v;
        } else if (!strcmp(argv[i], "--paths") && v) {
            paths = v;
        } else if (!strcmp(argv[i], "--data-images") && v) {
            img = v;
        } else if (!strcmp(argv[i], "--data-labels") && v) {
            lbl = v;
        } else {
            fprintf(stderr, "usage: bench_cnn [--seconds S] [--threads N] [--models ray,lenet] "
                            "[--paths scalar,avx2,avx512,neon] [--data-images F --data-labels F]\n");
            return 2;
        }
        i++;
    }

    char err[512];
    dataset ds;
    if (img && lbl) {
        if (dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                         sizeof(err)) != 0) {
            fprintf(stderr, "bench_cnn: %s\n", err);
            return 1;
        }
    } else {
        /* random bytes: speed does not depend on the pixel values */
        size_t n = 4096;
        uint8_t *px = malloc(n * 784), *lb = malloc(n);
        rng r;
        rng_seed(&r, 5);
        for (size_t i = 0; i < n * 784; i++)
            px[i] = (uint8_t)rng_next(&r);
        for (size_t i = 0; i < n; i++)
            lb[i] = (uint8_t)rng_below(&r, 10);
        if (dataset_from_memory(&ds, px, lb, n, 28, 28, DATASET_MNIST_MEAN, DATASET_MNIST_STD,
                                err, sizeof(err)) != 0) {
            fprintf(stderr, "bench_cnn: %s\n", err);
            return 1;
        }
        free(px);
        free(lb);
    }

    int rc = 0;
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        const kern_ops *k = kern_find((kern_path)p);
        if (!k || !list_has(paths, k->name))
            continue;
        double peak = measure_peak(k);
        printf("bench=peak simd=%s gflops=%.1f\n", k->name, peak / 1e9);
        fflush(stdout);
        const char *names[] = { "ray", "lenet" };
        for (int mi = 0; mi < 2; mi++) {
            if (!list_has(models, names[mi]))
                continue;
            cnn_model m;
            cnn_model_init(&m, names[mi], err, sizeof(err));
            double diff = check_path(k, &m);
            if (diff > 1e-3) {
                printf("bench=train model=%s simd=%s check=FAILED max_rel_diff=%.2e\n", m.name,
                       k->name, diff);
                rc = 1;
                continue;
            }
            double sps = measure_train(k, &m, &ds, (int)threads, 64);
            double gflops = sps * cnn_model_train_flops(&m) / 1e9;
            printf("bench=train model=%s simd=%s threads=%ld batch=64 samples/s=%.1f "
                   "gflops=%.1f peak_pct=%.1f check=ok max_rel_diff=%.1e\n",
                   m.name, k->name, threads, sps, gflops, 100 * gflops * 1e9 / peak / threads,
                   diff);
            fflush(stdout);
        }
    }
    dataset_free(&ds);
    return rc;
}
