/* workerd - the training worker.
 *
 * --placement FILE [--node ID]: a distributed worker.  It finds its node in
 * the placement, loads the training data (its part of it), connects to every
 * psd shard (workerd/remote.c) and runs the trainer loop against them.
 * --standalone: the same trainer loop against an in-process shard holding
 * the whole parameter vector.  One line per epoch on stdout, key=value or
 * JSON.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bgeval.h"
#include "cnn.h"
#include "dataset.h"
#include "kernels.h"
#include "optim.h"
#include "placement.h"
#include "proto.h"
#include "remote.h"
#include "secure.h"
#include "shard.h"
#include "trainer.h"
#include "util.h"

#define EXIT_USAGE 2

typedef struct workerd_opts {
    int standalone;
    const char *model;
    const char *train_images, *train_labels, *test_images, *test_labels;
    long epochs;
    long max_steps;
    long batch;
    long threads;
    unsigned long long seed;
    optim_config opt;
    long lr_step_epochs;
    float warmup_epochs;
    long augment_shift;
    int json;
    float mean, std;
    const char *placement;    /* --placement: distributed worker */
    const char *node;         /* --node (NULL: the host name) */
    double connect_timeout_s; /* 0: keep trying */
    float slowdown;           /* >= 1: emulate a box this many times slower */
    int overlap;              /* standalone: each gradient one step late (job.overlap) */
    long local_steps;         /* standalone: minibatches per push (job.local_steps) */
    const char *save_weights; /* standalone: raw float32 LE weights at the end */
    int verbose;
    const char *standalone_opt; /* a standalone-only option given (its name) */
} workerd_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: workerd --placement FILE [--node ID] [--connect-timeout S] [--json] [--verbose]\n"
            "       workerd --standalone --model NAME --train-images F --train-labels F\n"
            "               [--test-images F --test-labels F] [options]\n"
            "\n"
            "With --placement, trains as the worker node ID (default: the host name) of\n"
            "the placement file: its part of the training data, against every psd shard\n"
            "of the file, in the job's mode (sync, async, ssp); model, batch, seed,\n"
            "epochs/max_steps and data come from the file.  A shard that is not up or\n"
            "goes away is retried with back-off.  SIGTERM/SIGINT stop it cleanly (exit 0).\n"
            "The job ends after its epochs, at job.max_steps shard versions, or at\n"
            "job.target_accuracy; the worker then tells every shard (DONE) and exits 0.\n"
            "An evaluating node (\"evaluate\", default the first worker when there is a\n"
            "test set) sends each evaluation to shard 0 (REPORT).  The ones on the job's\n"
            "intervals (eval_every_steps/_s) run in a background thread on a copy of the\n"
            "weights as last pulled, while the node trains on; those after each epoch\n"
            "and at the end pull the current weights and run in line.\n"
            "With --standalone, trains a CNN in this process, through the same code path.\n"
            "Either way it prints one line per epoch (key=value, or JSON with --json).\n"
            "IDX files may be plain or gzip-compressed.\n"
            "\n"
            "  --placement FILE      the placement file (docs/placement.md)\n"
            "  --node ID             this worker's node id in it (default: the host name)\n"
            "  --connect-timeout S   give up if the shards are not all reachable within S\n"
            "                        seconds at start (default 0: keep trying)\n"
            "  --verbose             log DEBUG lines (stale/duplicate acks, state changes)\n"
            "  --slowdown X          emulate a box X times slower (X >= 1): after each\n"
            "                        gradient, sleep X - 1 times its compute time\n"
            "                        (default 1; either mode)\n"
            "\n"
            "Standalone options:\n"
            "  --standalone          train without a parameter server\n"
            "  --model NAME          model: %s (default lenet)\n"
            "  --train-images F      training images (IDX, magic 2051)\n"
            "  --train-labels F      training labels (IDX, magic 2049)\n"
            "  --test-images F       test images, evaluated after every epoch\n"
            "  --test-labels F       test labels\n"
            "  --overlap             compute each gradient on the weights before the last\n"
            "                        step, as a cluster job with job.overlap does\n"
            "  --local-steps N       push every N minibatches, training on in between\n"
            "                        with its own steps, as job.local_steps (default 1)\n"
            "  --epochs N            passes over the training set (default 1)\n"
            "  --max-steps N         stop after N steps (minibatches; default: no limit)\n"
            "  --batch N             minibatch size (default 64)\n"
            "  --lr X                learning rate (default 0.05)\n"
            "  --momentum X          SGD momentum in [0,1) (default 0.9)\n"
            "  --weight-decay X      L2 weight decay (default 0)\n"
            "  --schedule S          constant | step | cosine over the whole run (default cosine)\n"
            "  --lr-step-epochs N    step schedule: decay every N epochs (default 1)\n"
            "  --lr-gamma X          step schedule: decay factor (default 0.1)\n"
            "  --warmup-epochs X     ramp the learning rate up over X epochs (default 0)\n"
            "  --augment-shift N     shift each training image by up to N pixels, a new\n"
            "                        random shift every epoch (default 0: no augmentation)\n"
            "  --threads N           threads splitting each minibatch (default 1)\n"
            "  --seed S              seed of initialisation and shuffling (default 1)\n"
            "  --mean X --std X      input normalisation (default 0.1307, 0.3081)\n"
            "  --save-weights F      write the final weights to F: nparams float32,\n"
            "                        little-endian, in the flat layout of docs/model.md\n"
            "  --json                print JSON lines instead of key=value\n"
            "  -h, --help            this help\n"
            "\n"
            "Environment: PSD_SIMD=scalar|avx2|avx512|neon forces a kernel path.\n",
            cnn_model_names());
}

enum {
    OPT_STANDALONE = 256, OPT_MODEL, OPT_TRAIN_IMAGES, OPT_TRAIN_LABELS, OPT_TEST_IMAGES,
    OPT_TEST_LABELS, OPT_EPOCHS, OPT_MAX_STEPS, OPT_BATCH, OPT_LR, OPT_MOMENTUM, OPT_WD,
    OPT_SCHEDULE, OPT_LR_STEP, OPT_LR_GAMMA, OPT_THREADS, OPT_SEED, OPT_MEAN, OPT_STD,
    OPT_JSON, OPT_PLACEMENT, OPT_NODE, OPT_WARMUP, OPT_AUGMENT, OPT_CONNECT_TIMEOUT,
    OPT_SAVE_WEIGHTS, OPT_VERBOSE, OPT_SLOWDOWN, OPT_OVERLAP, OPT_LOCAL_STEPS
};

static const struct option long_opts[] = {
    { "standalone", no_argument, NULL, OPT_STANDALONE },
    { "model", required_argument, NULL, OPT_MODEL },
    { "train-images", required_argument, NULL, OPT_TRAIN_IMAGES },
    { "train-labels", required_argument, NULL, OPT_TRAIN_LABELS },
    { "test-images", required_argument, NULL, OPT_TEST_IMAGES },
    { "test-labels", required_argument, NULL, OPT_TEST_LABELS },
    { "epochs", required_argument, NULL, OPT_EPOCHS },
    { "max-steps", required_argument, NULL, OPT_MAX_STEPS },
    { "batch", required_argument, NULL, OPT_BATCH },
    { "lr", required_argument, NULL, OPT_LR },
    { "momentum", required_argument, NULL, OPT_MOMENTUM },
    { "weight-decay", required_argument, NULL, OPT_WD },
    { "schedule", required_argument, NULL, OPT_SCHEDULE },
    { "lr-step-epochs", required_argument, NULL, OPT_LR_STEP },
    { "lr-gamma", required_argument, NULL, OPT_LR_GAMMA },
    { "warmup-epochs", required_argument, NULL, OPT_WARMUP },
    { "augment-shift", required_argument, NULL, OPT_AUGMENT },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "seed", required_argument, NULL, OPT_SEED },
    { "mean", required_argument, NULL, OPT_MEAN },
    { "std", required_argument, NULL, OPT_STD },
    { "json", no_argument, NULL, OPT_JSON },
    { "placement", required_argument, NULL, OPT_PLACEMENT },
    { "node", required_argument, NULL, OPT_NODE },
    { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
    { "save-weights", required_argument, NULL, OPT_SAVE_WEIGHTS },
    { "verbose", no_argument, NULL, OPT_VERBOSE },
    { "slowdown", required_argument, NULL, OPT_SLOWDOWN },
    { "overlap", no_argument, NULL, OPT_OVERLAP },
    { "local-steps", required_argument, NULL, OPT_LOCAL_STEPS },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int bad_value(const char *opt, const char *val, const char *want)
{
    fprintf(stderr, "workerd: --%s '%s': expected %s\n", opt, val, want);
    return -1;
}

/* Returns 0, 1 for --help, -1 for a usage error (message printed). */
static int parse_args(int argc, char **argv, workerd_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->model = "lenet";
    o->epochs = 1;
    o->batch = 64;
    o->threads = 1;
    o->slowdown = 1.0f;
    o->seed = 1;
    o->local_steps = 1;
    o->lr_step_epochs = 1;
    o->mean = DATASET_MNIST_MEAN;
    o->std = DATASET_MNIST_STD;
    optim_config_default(&o->opt);
    o->opt.schedule = OPTIM_SCHED_COSINE; /* decays to 0 over the run */
    int c, idx;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1) {
        const char *name = c >= 256 ? long_opts[idx].name : "";
        if (c >= 256 && c != OPT_JSON && c != OPT_PLACEMENT && c != OPT_NODE &&
            c != OPT_CONNECT_TIMEOUT && c != OPT_VERBOSE && c != OPT_STANDALONE &&
            c != OPT_SLOWDOWN)
            o->standalone_opt = name;
        switch (c) {
        case 'h':
            return 1;
        case OPT_STANDALONE: o->standalone = 1; break;
        case OPT_OVERLAP: o->overlap = 1; break;
        case OPT_LOCAL_STEPS:
            if (util_parse_long(optarg, 1, PLACEMENT_LOCAL_STEPS_MAX, &o->local_steps))
                return bad_value(name, optarg, "an integer in 1..64");
            break;
        case OPT_MODEL: o->model = optarg; break;
        case OPT_TRAIN_IMAGES: o->train_images = optarg; break;
        case OPT_TRAIN_LABELS: o->train_labels = optarg; break;
        case OPT_TEST_IMAGES: o->test_images = optarg; break;
        case OPT_TEST_LABELS: o->test_labels = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_EPOCHS:
            if (util_parse_long(optarg, 1, 1000000, &o->epochs))
                return bad_value(name, optarg, "an integer >= 1");
            break;
        case OPT_MAX_STEPS:
            if (util_parse_long(optarg, 1, 1L << 40, &o->max_steps))
                return bad_value(name, optarg, "an integer >= 1");
            break;
        case OPT_BATCH:
            if (util_parse_long(optarg, 1, 65536, &o->batch))
                return bad_value(name, optarg, "an integer in 1..65536");
            break;
        case OPT_THREADS:
            if (util_parse_long(optarg, 1, 64, &o->threads))
                return bad_value(name, optarg, "an integer in 1..64");
            break;
        case OPT_LR_STEP:
            if (util_parse_long(optarg, 1, 1000000, &o->lr_step_epochs))
                return bad_value(name, optarg, "an integer >= 1");
            break;
        case OPT_SEED:
            if (util_parse_u64(optarg, &o->seed))
                return bad_value(name, optarg, "an unsigned integer");
            break;
        case OPT_LR:
            if (util_parse_float(optarg, 1e-9f, 1e3f, &o->opt.lr))
                return bad_value(name, optarg, "a number > 0");
            break;
        case OPT_MOMENTUM:
            if (util_parse_float(optarg, 0.0f, 0.999999f, &o->opt.momentum))
                return bad_value(name, optarg, "a number in [0, 1)");
            break;
        case OPT_WD:
            if (util_parse_float(optarg, 0.0f, 1.0f, &o->opt.weight_decay))
                return bad_value(name, optarg, "a number in [0, 1]");
            break;
        case OPT_LR_GAMMA:
            if (util_parse_float(optarg, 1e-9f, 1.0f, &o->opt.gamma))
                return bad_value(name, optarg, "a number in (0, 1]");
            break;
        case OPT_AUGMENT:
            if (util_parse_long(optarg, 0, 8, &o->augment_shift))
                return bad_value(name, optarg, "an integer in 0..8");
            break;
        case OPT_WARMUP:
            if (util_parse_float(optarg, 0.0f, 1e6f, &o->warmup_epochs))
                return bad_value(name, optarg, "a number >= 0");
            break;
        case OPT_MEAN:
            if (util_parse_float(optarg, -1e6f, 1e6f, &o->mean))
                return bad_value(name, optarg, "a number");
            break;
        case OPT_STD:
            if (util_parse_float(optarg, 1e-9f, 1e6f, &o->std))
                return bad_value(name, optarg, "a number > 0");
            break;
        case OPT_SCHEDULE: {
            int s = optim_schedule_from_name(optarg);
            if (s < 0)
                return bad_value(name, optarg, "constant, step or cosine");
            o->opt.schedule = (optim_schedule)s;
            break;
        }
        case OPT_PLACEMENT: o->placement = optarg; break;
        case OPT_NODE: o->node = optarg; break;
        case OPT_SAVE_WEIGHTS: o->save_weights = optarg; break;
        case OPT_VERBOSE: o->verbose = 1; break;
        case OPT_SLOWDOWN:
            if (util_parse_float(optarg, 1.0f, 1000.0f, &o->slowdown))
                return bad_value(name, optarg, "a factor from 1 to 1000");
            break;
        case OPT_CONNECT_TIMEOUT: {
            float t;
            if (util_parse_float(optarg, 0.0f, 1e6f, &t))
                return bad_value(name, optarg, "a number of seconds >= 0");
            o->connect_timeout_s = t;
            break;
        }
        case '?':
        default:
            fprintf(stderr, "workerd: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "workerd: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->standalone && o->placement) {
        fprintf(stderr, "workerd: --standalone and --placement exclude each other\n");
        return -1;
    }
    if (o->placement) {
        if (o->standalone_opt) {
            fprintf(stderr, "workerd: --%s is a --standalone option; with --placement the "
                            "job comes from the placement file\n", o->standalone_opt);
            return -1;
        }
        return 0;
    }
    if (o->node) {
        fprintf(stderr, "workerd: --node needs --placement\n");
        return -1;
    }
    if (!o->standalone) {
        fprintf(stderr, "workerd: give --placement FILE (a distributed worker) or "
                        "--standalone\n");
        return -1;
    }
    if (!o->train_images || !o->train_labels) {
        fprintf(stderr, "workerd: --train-images and --train-labels are required\n");
        return -1;
    }
    if (!o->test_images != !o->test_labels) {
        fprintf(stderr, "workerd: --test-images and --test-labels go together\n");
        return -1;
    }
    if (o->overlap && o->local_steps > 1) {
        fprintf(stderr, "workerd: --overlap and --local-steps exclude each other\n");
        return -1;
    }
    return 0;
}

static void print_epoch(const workerd_opts *o, long epoch, const trainer_stats *st, float lr,
                        int have_test, double test_loss, double test_acc)
{
    double sps = st->seconds > 0 ? (double)st->samples / st->seconds : 0;
    double loss = st->samples ? st->loss_sum / (double)st->samples : 0;
    double train_acc = st->samples ? 100.0 * (double)st->correct / (double)st->samples : 0;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "epoch", (double)epoch);
        cJSON_AddNumberToObject(j, "steps", (double)st->steps);
        cJSON_AddNumberToObject(j, "samples", (double)st->samples);
        cJSON_AddNumberToObject(j, "time_s", st->seconds);
        cJSON_AddNumberToObject(j, "comm_s", st->comm_seconds);
        cJSON_AddNumberToObject(j, "samples/s", sps);
        cJSON_AddNumberToObject(j, "lr", lr);
        cJSON_AddNumberToObject(j, "loss", loss);
        cJSON_AddNumberToObject(j, "train_acc", train_acc);
        if (o->slowdown > 1.0f)
            cJSON_AddNumberToObject(j, "slow_s", st->slow_seconds);
        if (st->have_bytes) {
            cJSON_AddNumberToObject(j, "bytes_out", (double)st->bytes_out);
            cJSON_AddNumberToObject(j, "bytes_in", (double)st->bytes_in);
        }
        if (have_test) {
            cJSON_AddNumberToObject(j, "test_loss", test_loss);
            cJSON_AddNumberToObject(j, "test_acc", test_acc);
        }
        char *s = cJSON_PrintUnformatted(j);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("epoch=%ld steps=%ld samples=%zu time_s=%.3f comm_s=%.3f samples/s=%.1f lr=%g "
               "loss=%.4f train_acc=%.2f",
               epoch, st->steps, st->samples, st->seconds, st->comm_seconds, sps, (double)lr,
               loss, train_acc);
        if (o->slowdown > 1.0f)
            printf(" slow_s=%.3f", st->slow_seconds);
        if (st->have_bytes)
            printf(" bytes_out=%llu bytes_in=%llu", (unsigned long long)st->bytes_out,
                   (unsigned long long)st->bytes_in);
        if (have_test)
            printf(" test_loss=%.4f test_acc=%.2f", test_loss, test_acc);
        printf("\n");
    }
    fflush(stdout);
}

/* Set by SIGTERM/SIGINT; the remote backend polls it. */
static volatile sig_atomic_t g_stop;

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Write n floats to path as little-endian float32.  Returns 0 or -1 with a
 * message. */
static int weights_save(const char *path, const float *w, size_t n, char *err, size_t errlen)
{
    uint8_t *buf = malloc(n > 0 ? n * 4 : 1);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    proto_floats_encode(buf, w, n);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(buf, 1, n * 4, f) == n * 4;
    if (f && fclose(f) != 0)
        ok = 0;
    free(buf);
    if (!ok) {
        snprintf(err, errlen, "%s: cannot write the weights", path);
        return -1;
    }
    return 0;
}

/* What a distributed worker needs between steps: evaluation of the global
 * model on the test set (every epoch, every eval_every_steps versions,
 * every eval_every_s seconds, and at the end) and its REPORT to shard 0. */
typedef struct worker_eval {
    const workerd_opts *o;
    const placement_job *job;
    remote *rb;
    const dataset *test;    /* NULL: this worker does not evaluate */
    double t0;              /* start of training */
    uint64_t next_version;  /* eval_every_steps: next version to evaluate at */
    double next_time;       /* eval_every_s: next time */
    long last_step;         /* worker step of the last evaluation (-1: none) */
    double loss, acc;       /* of the last evaluation */
    bgeval *bg;             /* the interval evaluations' thread (NULL: none) */
} worker_eval;

/* Log and REPORT an evaluation of the weights at (version, step,
 * samples).  Returns 0, or -1 with a message. */
static int worker_report(worker_eval *ev, uint64_t version, long step, size_t samples,
                         const char *how, char *err, size_t errlen)
{
    double el = trainer_now() - ev->t0;
    remote_log(ev->rb, REMOTE_LOG_INFO,
               "eval: version %llu, step %ld, %.1f s: test_acc=%.2f test_loss=%.4f%s",
               (unsigned long long)version, step, el, ev->acc, ev->loss, how);
    proto_report rep = {.step = (uint64_t)step, .samples = samples, .elapsed_s = el,
                        .test_acc = ev->acc / 100.0, .test_loss = ev->loss};
    return remote_report(ev->rb, &rep, err, errlen) == 0 ? 0 : -1;
}

/* A finished background evaluation, reported (wait: the one running, if
 * any, first).  Returns 0, or -1 with a message. */
static int worker_collect(worker_eval *ev, int wait, char *err, size_t errlen)
{
    bgeval_result r;
    int rc = ev->bg ? bgeval_collect(ev->bg, wait, &r, err, errlen) : 0;
    if (rc <= 0)
        return rc;
    ev->loss = r.loss;
    ev->acc = r.acc;
    ev->last_step = r.tag.step;
    char how[64];
    snprintf(how, sizeof how, " (background, %.0f ms)", r.seconds * 1000.0);
    return worker_report(ev, r.tag.version, r.tag.step, r.tag.samples, how, err, errlen);
}

/* Evaluate the current global weights (pulled), log and REPORT them, after
 * the background evaluation in flight.  Returns 0, or -1 with a message. */
static int worker_evaluate(worker_eval *ev, trainer *t, char *err, size_t errlen)
{
    if (worker_collect(ev, 1, err, errlen) != 0 ||
        trainer_evaluate(t, ev->test, &ev->loss, &ev->acc, err, errlen) != 0)
        return -1;
    ev->last_step = t->step;
    return worker_report(ev, remote_version(ev->rb), t->step, t->samples, "", err, errlen);
}

/* trainer after_step: evaluations on the job's intervals; stop once the
 * shards' version reaches job.max_steps (in async mode the shard would
 * answer FINISHED to the next push anyway: this saves that gradient). */
static int worker_after_step(void *ctx, trainer *t, char *err, size_t errlen)
{
    worker_eval *ev = ctx;
    uint64_t v = remote_version(ev->rb);
    if (ev->test) {
        if (worker_collect(ev, 0, err, errlen) != 0)
            return -1;
        int due = 0;
        if (ev->job->eval_every_steps > 0 && v >= ev->next_version) {
            due = 1;
            ev->next_version = (v / (uint64_t)ev->job->eval_every_steps + 1) *
                               (uint64_t)ev->job->eval_every_steps;
        }
        double now = trainer_now();
        if (ev->job->eval_every_s > 0 && now >= ev->next_time) {
            due = 1;
            ev->next_time = now + (double)ev->job->eval_every_s;
        }
        /* in the background on the weights as last pulled, while this
         * worker trains on (one still running: this one is skipped) */
        bgeval_tag tag = {.version = v, .step = t->step, .samples = t->samples};
        if (due && ev->bg && bgeval_start(ev->bg, ev->rb->cache, &tag) != 0)
            remote_log(ev->rb, REMOTE_LOG_DEBUG, "eval at version %llu skipped: one is running",
                       (unsigned long long)v);
        if (due && !ev->bg && worker_evaluate(ev, t, err, errlen) != 0)
            return -1;
    }
    if (ev->job->max_steps > 0 && v >= (uint64_t)ev->job->max_steps)
        return TRAINER_FINISHED;
    return 0;
}

/* The distributed worker.  Returns the exit status. */
static int run_placement(workerd_opts *o)
{
    char err[1024];
    placement pl;
    const placement_node *me = NULL;
    if (placement_load(o->placement, &pl, err, sizeof err) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        return 1;
    }
    if (placement_node_select(&pl, o->node, PLACEMENT_ROLE_WORKER, &me, err, sizeof err) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        placement_free(&pl);
        return 1;
    }
    cnn_model m;
    if (kern_init(err, sizeof err) != 0 || placement_model_init(&pl, &m, err, sizeof err) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        placement_free(&pl);
        return 1;
    }
    /* the cluster key, before the data is loaded: a bad key file stops at once */
    uint8_t key[PLACEMENT_KEY_SIZE];
    int have_key = placement_auth_key(&pl, key, NULL, 0, err, sizeof err);
    if (have_key < 0) {
        fprintf(stderr, "workerd: %s\n", err);
        placement_free(&pl);
        return 1;
    }
    const kern_ops *k = kern_active();
    const placement_job *job = &pl.job;
    int have_test = me->evaluate && pl.data.test_images && pl.data.test_labels;
    dataset train, test;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    int exit_code = 1;
    remote rb;
    trainer tr;
    cnn_engine *engine = NULL;
    bgeval *bg = NULL;
    memset(&rb, 0, sizeof rb);
    memset(&tr, 0, sizeof tr);
    int have_train = 0;
    if (dataset_load(&train, pl.data.train_images, pl.data.train_labels, pl.data.mean,
                     pl.data.std, err, sizeof err) != 0)
        goto out;
    have_train = 1;
    if (have_test && dataset_load(&test, pl.data.test_images, pl.data.test_labels, pl.data.mean,
                                  pl.data.std, err, sizeof err) != 0) {
        have_test = 0;
        goto out;
    }
    int threads = me->threads > 0 ? me->threads : (int)o->threads;
    engine = cnn_engine_new(&m, k, threads, job->batch, err, sizeof err);
    if (!engine)
        goto out;
    if (remote_init(&rb, &pl, me, &m, &g_stop, err, sizeof err) != 0)
        goto out;
    if (have_key && remote_set_key(&rb, key, err, sizeof err) != 0)
        goto out;
    secure_wipe(key, sizeof key);
    rb.verbose = o->verbose;
    if (trainer_init(&tr, &m, engine, &train, me->part, pl.data.parts, job->batch, job->seed,
                     remote_backend(&rb), err, sizeof err) != 0)
        goto out;
    tr.augment_shift = job->augment_shift;
    tr.slowdown = o->slowdown;
    tr.overlap = rb.overlap;
    tr.local_steps = job->local_steps; /* 1 unless async/ssp (placement) */
    if (have_test && (job->eval_every_steps > 0 || job->eval_every_s > 0) &&
        !(bg = bgeval_new(&m, k, &test, err, sizeof err)))
        goto out;
    worker_eval ev = {.o = o, .job = job, .rb = &rb, .test = have_test ? &test : NULL,
                      .last_step = -1, .bg = bg};
    tr.after_step = worker_after_step;
    tr.after_step_ctx = &ev;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    remote_log(&rb, REMOTE_LOG_INFO,
               "placement %s: model=%s params=%zu mode=%s shards=%d part=%d/%d (%zu examples) "
               "batch=%d threads=%d simd=%s evaluate=%d overlap=%d local_steps=%d",
               pl.source, m.name, m.nparams, placement_mode_name(job->mode), pl.nshards, me->part,
               pl.data.parts, tr.hi - tr.lo, job->batch, threads, k->name, have_test, tr.overlap,
               tr.local_steps);
    int rc = remote_connect(&rb, o->connect_timeout_s, err, sizeof err);
    if (rc == REMOTE_STOPPED) {
        exit_code = 0;
        goto out;
    }
    if (rc != 0)
        goto out;

    ev.t0 = trainer_now();
    ev.next_time = ev.t0 + (double)job->eval_every_s;
    ev.next_version = (uint64_t)job->eval_every_steps;
    long epochs = job->epochs > 0 ? job->epochs : LONG_MAX;
    for (long epoch = 1; epoch <= epochs && !tr.finished; epoch++) {
        float lr = optim_lr_at(&job->opt, (long)remote_version(&rb));
        trainer_stats st;
        uint64_t out0, in0;
        remote_bytes(&rb, &out0, &in0);
        /* max_steps counts the shards' versions: they enforce it */
        if (trainer_run_epoch(&tr, epoch, 0, &st, err, sizeof err) != 0)
            goto stopped_or_failed;
        remote_bytes(&rb, &st.bytes_out, &st.bytes_in);
        st.bytes_out -= out0;
        st.bytes_in -= in0;
        st.have_bytes = 1;
        if (have_test && ev.last_step != tr.step && worker_evaluate(&ev, &tr, err, sizeof err) != 0)
            goto stopped_or_failed;
        print_epoch(o, epoch, &st, lr, have_test, ev.loss, ev.acc);
        if (st.steps == 0)
            break; /* an empty part */
    }
    if (have_test && ev.last_step != tr.step && worker_evaluate(&ev, &tr, err, sizeof err) != 0)
        goto stopped_or_failed;
    double wall = trainer_now() - ev.t0, waited, w50, w90;
    remote_wait_stats(&rb, &waited, &w50, &w90);
    remote_log(&rb, REMOTE_LOG_INFO,
               "%s after %ld steps (%zu samples, %.1f s; waited for the shards %.1f s = %.0f%%, "
               "per step median %.1f ms, p90 %.1f ms): telling the shards",
               tr.finished ? "the job has finished" : "all epochs done", tr.step, tr.samples, wall,
               waited, wall > 0 ? 100.0 * waited / wall : 0.0, w50, w90);
    proto_done dn = {.step = (uint64_t)tr.step, .samples = tr.samples};
    rc = remote_done(&rb, &dn, o->connect_timeout_s > 0 ? o->connect_timeout_s : 30, err,
                     sizeof err);
    if (rc == REMOTE_STOPPED)
        goto stopped_or_failed;
    if (rc != 0) /* the model is trained; a shard that missed DONE is the operator's to see */
        remote_log(&rb, REMOTE_LOG_WARN, "DONE not delivered: %s", err);
    exit_code = 0;
    goto out;
stopped_or_failed:
    if (g_stop) {
        remote_log(&rb, REMOTE_LOG_INFO, "stopped by a signal after %ld steps", tr.step);
        exit_code = 0;
    }
out:
    if (exit_code != 0)
        fprintf(stderr, "workerd: %s\n", err);
    secure_wipe(key, sizeof key);
    bgeval_free(bg);
    trainer_free(&tr);
    if (rb.c)
        remote_free(&rb);
    cnn_engine_free(engine);
    if (have_train)
        dataset_free(&train);
    if (have_test)
        dataset_free(&test);
    placement_free(&pl);
    return exit_code;
}

int main(int argc, char **argv)
{
    workerd_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "workerd: try 'workerd --help'\n");
        return EXIT_USAGE;
    }
    if (o.placement)
        return run_placement(&o);

    char err[512];
    if (kern_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        return EXIT_USAGE;
    }
    const kern_ops *k = kern_active();
    cnn_model m;
    if (cnn_model_init(&m, o.model, err, sizeof(err)) != 0) {
        fprintf(stderr, "workerd: --model: %s\n", err);
        return EXIT_USAGE;
    }

    dataset train, test;
    memset(&test, 0, sizeof(test));
    if (dataset_load(&train, o.train_images, o.train_labels, o.mean, o.std, err,
                     sizeof(err)) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        return 1;
    }
    int have_test = o.test_images != NULL;
    if (have_test && dataset_load(&test, o.test_images, o.test_labels, o.mean, o.std, err,
                                  sizeof(err)) != 0) {
        fprintf(stderr, "workerd: %s\n", err);
        dataset_free(&train);
        return 1;
    }

    /* the schedule counts optimizer steps: one per push, and with local
     * steps a push takes up to that many minibatches (a round ends with
     * its epoch) */
    long batches = (long)((train.n + (size_t)o.batch - 1) / (size_t)o.batch);
    long steps_per_epoch = (batches + o.local_steps - 1) / o.local_steps;
    o.opt.step_size = o.lr_step_epochs * steps_per_epoch;
    o.opt.warmup_steps = (long)(o.warmup_epochs * (float)steps_per_epoch + 0.5f);
    o.opt.total_steps = o.max_steps > 0 && o.max_steps < o.epochs * batches
                            ? (o.max_steps + o.local_steps - 1) / o.local_steps
                            : o.epochs * steps_per_epoch;

    int exit_code = 1;
    ps_shard whole;
    trainer tr;
    cnn_engine *engine = NULL;
    memset(&tr, 0, sizeof(tr));
    memset(&whole, 0, sizeof(whole));
    if (ps_shard_init(&whole, &m, k, &o.opt, o.seed, 0, m.nparams, err, sizeof(err)) != 0)
        goto out;
    engine = cnn_engine_new(&m, k, (int)o.threads, (int)o.batch, err, sizeof(err));
    if (!engine)
        goto out;
    if (trainer_init(&tr, &m, engine, &train, 0, 1, (int)o.batch, o.seed,
                     trainer_local_backend(&whole), err, sizeof(err)) != 0)
        goto out;
    tr.augment_shift = (int)o.augment_shift;
    tr.slowdown = o.slowdown;
    tr.overlap = o.overlap;
    tr.local_steps = (int)o.local_steps;

    fprintf(stderr,
            "workerd: standalone model=%s params=%zu simd=%s threads=%ld batch=%ld lr=%g "
            "momentum=%g schedule=%s augment_shift=%ld overlap=%d local_steps=%ld train=%zu "
            "test=%zu\n",
            m.name, m.nparams, k->name, o.threads, o.batch, (double)o.opt.lr,
            (double)o.opt.momentum, optim_schedule_name(o.opt.schedule), o.augment_shift,
            o.overlap, o.local_steps, train.n, test.n);

    for (long epoch = 1; epoch <= o.epochs; epoch++) {
        if (o.max_steps > 0 && tr.step >= o.max_steps)
            break;
        float lr = optim_lr_at(&o.opt, tr.step);
        trainer_stats st;
        if (trainer_run_epoch(&tr, epoch, o.max_steps, &st, err, sizeof(err)) != 0)
            goto out;
        double test_loss = 0, test_acc = 0;
        if (have_test &&
            trainer_evaluate(&tr, &test, &test_loss, &test_acc, err, sizeof(err)) != 0)
            goto out;
        print_epoch(&o, epoch, &st, lr, have_test, test_loss, test_acc);
    }
    if (o.save_weights && weights_save(o.save_weights, whole.w, m.nparams, err, sizeof err) != 0)
        goto out;
    exit_code = 0;
out:
    if (exit_code != 0)
        fprintf(stderr, "workerd: %s\n", err);
    trainer_free(&tr);
    cnn_engine_free(engine);
    ps_shard_free(&whole);
    dataset_free(&train);
    if (have_test)
        dataset_free(&test);
    return exit_code;
}
