/* check_placement.c - the placement file: the shipped conf/ files, defaults,
 * every field read back, shard ranges from shares (aligned, proportional,
 * contiguous) and explicit ranges, comment stripping, node lookup, address
 * syntax, and every mistake reported as "<file>: <json path>: <problem>";
 * also text ending at an unreadable guard page and each allocation failed
 * in turn.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cnn.h"
#include "fixtures.h"
#include "placement.h"

#define NAME "t.conf"

/* ------------------------------------------------------------- builders */

#define JOB_OK "\"model\": \"ray\", \"mode\": \"sync\", \"epochs\": 1"
#define DATA_OK                                                                               \
    "\"train_images\": \"/d/tr-i.gz\", \"train_labels\": \"/d/tr-l.gz\", "                    \
    "\"test_images\": \"/d/te-i.gz\", \"test_labels\": \"/d/te-l.gz\""
#define DATA_NOTEST "\"train_images\": \"/d/tr-i.gz\", \"train_labels\": \"/d/tr-l.gz\""
/* a ps node / a worker node, left open for more keys: close with "}" */
#define PS(id, port)                                                                          \
    "{\"id\": \"" id "\", \"address\": \"127.0.0.1\", \"port\": " port ", \"role\": \"ps\""
#define WK(id) "{\"id\": \"" id "\", \"address\": \"127.0.0.1\", \"role\": \"worker\""
#define W2 WK("w0") "}, " WK("w1") "}"
#define P2 PS("ps0", "7701") "}, " PS("ps1", "7702") "}"
#define NODES_OK PS("ps0", "7701") "}, " PS("ps1", "7702") "}, " WK("w0") "}, " WK("w1") "}"

/* {"job": {job}, "data": {data}, "nodes": [nodes]}, NULL parts default;
 * malloc'd. */
static char *doc(const char *job, const char *data, const char *nodes)
{
    char *s = NULL;
    int n = asprintf(&s, "{\"job\": {%s},\n \"data\": {%s},\n \"nodes\": [%s]}\n",
                     job ? job : JOB_OK, data ? data : DATA_OK, nodes ? nodes : NODES_OK);
    ck_assert_int_gt(n, 0);
    return s;
}

static int parse_text(const char *text, placement *p, char *err, size_t errlen)
{
    return placement_parse(text, strlen(text), NAME, p, err, errlen);
}

static void parse_ok(const char *text, placement *p)
{
    char err[1024] = "";
    ck_assert_msg(parse_text(text, p, err, sizeof err) == 0, "parse failed: %s\n%s", err, text);
}

static void doc_ok(const char *job, const char *data, const char *nodes, placement *p)
{
    char *t = doc(job, data, nodes);
    parse_ok(t, p);
    free(t);
}

/* The parse must fail, leave *p zeroed, start the message with "t.conf"
 * and contain want. */
static void expect_fail_text(const char *text, const char *want)
{
    placement p;
    char err[1024] = "";
    memset(&p, 0xAB, sizeof p);
    int rc = parse_text(text, &p, err, sizeof err);
    ck_assert_msg(rc == -1, "parse succeeded, expected '%s':\n%s", want, text);
    ck_assert_ptr_null(p.nodes);
    ck_assert_ptr_null(p.source);
    ck_assert_ptr_null(p.data.train_images);
    ck_assert_int_eq(p.nnodes, 0);
    ck_assert_msg(strncmp(err, NAME ":", strlen(NAME) + 1) == 0, "no file name in '%s'", err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in '%s'", want, err);
    placement_free(&p); /* harmless on a zeroed placement */
}

/* ------------------------------------------------------ the shipped files */

START_TEST(test_local_conf)
{
    placement p;
    char err[1024] = "";
    ck_assert_msg(placement_load("conf/placement.local.conf", &p, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_str_eq(p.job.model, "lenet");
    ck_assert_int_eq(p.job.mode, PLACEMENT_MODE_SYNC);
    ck_assert_uint_eq(p.nparams, 431080);
    ck_assert_int_eq(p.nnodes, 4);
    ck_assert_int_eq(p.nshards, 2);
    ck_assert_int_eq(p.nworkers, 2);
    ck_assert_int_eq(p.data.parts, 2);
    ck_assert_str_eq(p.data.train_images,
                     "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    ck_assert_str_eq(p.data.train_labels,
                     "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz");
    ck_assert_str_eq(p.data.test_images,
                     "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
    ck_assert_str_eq(p.data.test_labels,
                     "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
    int ports[2] = { 0, 0 };
    for (int s = 0; s < 2; s++) {
        const placement_node *n = placement_shard_node(&p, s);
        ck_assert_ptr_nonnull(n);
        ck_assert_int_eq(n->role, PLACEMENT_ROLE_PS);
        ck_assert_int_eq(n->shard, s);
        ck_assert_str_eq(n->host, "127.0.0.1");
        ck_assert_int_eq(n->addr_kind, PLACEMENT_ADDR_IPV4);
        ports[s] = n->port;
    }
    ck_assert_int_ne(ports[0], ports[1]);
    ck_assert_uint_eq(placement_shard_node(&p, 0)->lo, 0);
    ck_assert_uint_eq(placement_shard_node(&p, 0)->hi, placement_shard_node(&p, 1)->lo);
    ck_assert_uint_eq(placement_shard_node(&p, 1)->hi, 431080);
    int parts_seen = 0;
    for (int i = 0; i < p.nnodes; i++) {
        if (p.nodes[i].role != PLACEMENT_ROLE_WORKER)
            continue;
        ck_assert_str_eq(p.nodes[i].host, "127.0.0.1");
        ck_assert_int_eq(p.nodes[i].port, 0);
        parts_seen |= 1 << p.nodes[i].part;
    }
    ck_assert_int_eq(parts_seen, 3);
    placement_free(&p);
    ck_assert_ptr_null(p.nodes);
}
END_TEST

START_TEST(test_example_conf)
{
    placement p;
    char err[1024] = "";
    ck_assert_msg(placement_load("conf/placement.example.conf", &p, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_int_eq(p.job.mode, PLACEMENT_MODE_SSP);
    ck_assert_int_eq(p.job.staleness, 3);
    ck_assert_int_eq(p.nshards, 2);
    ck_assert_int_eq(p.nworkers, 4);
    ck_assert_int_eq(p.data.parts, 4);
    /* relative data paths resolved against conf/ */
    ck_assert_str_eq(p.data.train_images, "conf/data/train-images-idx3-ubyte.gz");
    const placement_node *a = placement_shard_node(&p, 0), *b = placement_shard_node(&p, 1);
    ck_assert(a->share == 2.0 && b->share == 1.0);
    /* shares 2:1 -> about two thirds on shard 0, on a 16-float boundary */
    ck_assert_uint_eq(a->hi, 287392);
    ck_assert_uint_eq(b->lo, a->hi);
    ck_assert_uint_eq(b->hi, p.nparams);
    int evaluators = 0;
    for (int i = 0; i < p.nnodes; i++) {
        const placement_node *n = &p.nodes[i];
        evaluators += n->evaluate;
        if (n->addr_kind == PLACEMENT_ADDR_IPV4)
            ck_assert_msg(strncmp(n->host, "192.0.2.", 8) == 0, "%s", n->host);
    }
    ck_assert_int_eq(evaluators, 1);
    ck_assert_ptr_nonnull(placement_node_find(&p, "edge-f"));
    ck_assert_int_eq(placement_node_find(&p, "edge-f")->addr_kind, PLACEMENT_ADDR_NAME);
    placement_free(&p);
}
END_TEST

/* ------------------------------------------------------ values and defaults */

START_TEST(test_defaults)
{
    placement p;
    doc_ok(NULL, DATA_NOTEST, NULL, &p);
    ck_assert_str_eq(p.source, NAME);
    ck_assert_str_eq(p.job.model, "ray");
    ck_assert_uint_eq(p.nparams, 1960);
    ck_assert_int_eq(p.job.batch, 64);
    ck_assert_uint_eq(p.job.seed, 1);
    ck_assert_int_eq(p.job.epochs, 1);
    ck_assert_int_eq(p.job.max_steps, 0);
    ck_assert_int_eq(p.job.staleness, -1);
    ck_assert_int_eq(p.job.barrier_timeout_ms, 30000);
    ck_assert_int_eq(p.job.checkpoint_interval_s, 0);
    ck_assert_int_eq(p.job.eval_every_steps, 0);
    ck_assert_int_eq(p.job.eval_every_s, 0);
    ck_assert(p.job.opt.lr == 0.05f && p.job.opt.momentum == 0.9f);
    ck_assert(p.job.opt.weight_decay == 0.0f);
    ck_assert_int_eq(p.job.opt.schedule, OPTIM_SCHED_CONSTANT);
    ck_assert(p.data.mean == 0.1307f && p.data.std == 0.3081f);
    ck_assert_ptr_null(p.data.test_images);
    ck_assert_ptr_null(p.data.test_labels);
    ck_assert_int_eq(p.data.parts, 2);
    /* shards and parts in file order; share 1 */
    ck_assert_int_eq(p.nodes[0].shard, 0);
    ck_assert_int_eq(p.nodes[1].shard, 1);
    ck_assert_int_eq(p.nodes[0].part, -1);
    ck_assert(p.nodes[0].share == 1.0 && p.nodes[1].share == 1.0);
    ck_assert_int_eq(p.nodes[2].part, 0);
    ck_assert_int_eq(p.nodes[3].part, 1);
    ck_assert_int_eq(p.nodes[2].shard, -1);
    ck_assert_int_eq(p.nodes[3].evaluate, 0);
    ck_assert_int_eq(p.nodes[3].threads, 0);
    ck_assert_int_eq(p.nodes[3].index, 3);
    ck_assert_uint_eq(p.nodes[0].lo, 0);
    ck_assert_uint_eq(p.nodes[0].hi, 976); /* 1960/2 = 980 -> 61 blocks */
    ck_assert_uint_eq(p.nodes[1].lo, 976);
    ck_assert_uint_eq(p.nodes[1].hi, 1960);
    ck_assert(p.job.target_accuracy == 0.0);
    ck_assert_int_eq(p.job.augment_shift, 0);
    ck_assert_int_eq(p.nodes[2].evaluate, 0); /* no test set: nobody evaluates */
    ck_assert_int_eq(p.job.compression.push, PLACEMENT_PUSH_NONE);
    ck_assert_int_eq(p.job.compression.pull, PLACEMENT_PULL_FULL);
    ck_assert(p.job.compression.topk_percent == 1.0);
    placement_free(&p);
    ck_assert_ptr_null(p.source);
}
END_TEST

/* job.compression read back, and its one-line description. */
START_TEST(test_compression)
{
    placement p;
    char line[128];
    doc_ok(JOB_OK ", \"compression\": {\"push\": \"topk\", \"topk_percent\": 0.5, "
                  "\"pull\": \"delta\"}",
           NULL, NULL, &p);
    ck_assert_int_eq(p.job.compression.push, PLACEMENT_PUSH_TOPK);
    ck_assert(p.job.compression.topk_percent == 0.5);
    ck_assert_int_eq(p.job.compression.pull, PLACEMENT_PULL_DELTA);
    placement_compression_describe(&p.job.compression, line, sizeof line);
    ck_assert_str_eq(line, "push topk 0.5%, pull delta");
    placement_free(&p);
    doc_ok(JOB_OK ", \"compression\": {\"push\": \"fp16\", \"pull\": \"fp16\"}", NULL, NULL,
           &p);
    ck_assert_int_eq(p.job.compression.push, PLACEMENT_PUSH_FP16);
    ck_assert_int_eq(p.job.compression.pull, PLACEMENT_PULL_FP16);
    placement_compression_describe(&p.job.compression, line, sizeof line);
    ck_assert_str_eq(line, "push fp16, pull fp16");
    placement_free(&p);
    doc_ok(JOB_OK ", \"compression\": {\"push\": \"topk\"}", NULL, NULL, &p);
    ck_assert_int_eq(p.job.compression.push, PLACEMENT_PUSH_TOPK);
    ck_assert(p.job.compression.topk_percent == 1.0);
    ck_assert_int_eq(p.job.compression.pull, PLACEMENT_PULL_FULL);
    placement_free(&p);
    doc_ok(JOB_OK ", \"compression\": {\"push\": \"fp16\", \"pull\": \"topk\", \"topk_percent\": 2}",
           NULL, NULL, &p);
    ck_assert_int_eq(p.job.compression.pull, PLACEMENT_PULL_TOPK);
    ck_assert(p.job.compression.topk_percent == 2.0);
    placement_compression_describe(&p.job.compression, line, sizeof line);
    ck_assert_str_eq(line, "push fp16, pull topk 2%");
    placement_free(&p);
    doc_ok(JOB_OK ", \"compression\": {}", NULL, NULL, &p);
    ck_assert_int_eq(p.job.compression.push, PLACEMENT_PUSH_NONE);
    placement_free(&p);
    ck_assert_str_eq(placement_push_enc_name(PLACEMENT_PUSH_MAX), "?");
    ck_assert_str_eq(placement_pull_enc_name(PLACEMENT_PULL_DELTA), "delta");
}
END_TEST

/* With a test set and no "evaluate" anywhere, the first worker evaluates;
 * an explicit "evaluate" anywhere turns the default off. */
START_TEST(test_default_evaluator)
{
    placement p;
    doc_ok(NULL, NULL, NULL, &p);
    ck_assert_int_eq(p.nodes[2].evaluate, 1);
    ck_assert_int_eq(p.nodes[3].evaluate, 0);
    placement_free(&p);
    doc_ok(NULL, NULL, P2 ", " WK("w0") ", \"evaluate\": false}, " WK("w1") "}", &p);
    ck_assert_int_eq(p.nodes[2].evaluate, 0);
    ck_assert_int_eq(p.nodes[3].evaluate, 0);
    placement_free(&p);
    doc_ok(JOB_OK ", \"target_accuracy\": 97.5, \"augment_shift\": 2", NULL,
           P2 ", " WK("w0") "}, " WK("w1") ", \"evaluate\": true}", &p);
    ck_assert_int_eq(p.nodes[2].evaluate, 0);
    ck_assert_int_eq(p.nodes[3].evaluate, 1);
    ck_assert(p.job.target_accuracy == 97.5);
    ck_assert_int_eq(p.job.augment_shift, 2);
    ck_assert_int_eq(p.job.overlap, 0); /* the default */
    ck_assert_int_eq(p.job.local_steps, 1);
    placement_free(&p);
    doc_ok("\"model\": \"ray\", \"mode\": \"ssp\", \"staleness\": 2, \"epochs\": 1, "
           "\"local_steps\": 4", NULL, NULL, &p);
    ck_assert_int_eq(p.job.local_steps, 4);
    placement_free(&p);
    doc_ok("\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 1, \"overlap\": true", NULL,
           NULL, &p);
    ck_assert_int_eq(p.job.overlap, 1);
    ck_assert_str_eq(p.job.tcp_congestion, ""); /* the host's */
    placement_free(&p);
    doc_ok(JOB_OK ", \"tcp_congestion\": \"cubic\"", NULL, NULL, &p);
    ck_assert_str_eq(p.job.tcp_congestion, "cubic");
    placement_free(&p);
}
END_TEST

START_TEST(test_all_fields)
{
    const char *job =
        "\"model\": \"lenet\", \"mode\": \"ssp\", \"staleness\": 0, \"batch\": 128,"
        "\"seed\": \"18446744073709551615\", \"max_steps\": 9007199254740992,"
        "\"checkpoint_interval_s\": 60, \"eval_every_steps\": 500, \"eval_every_s\": 30,"
        "\"optimizer\": {\"lr\": 0.1, \"momentum\": 0, \"weight_decay\": 0.0001,"
        "  \"schedule\": \"cosine\", \"lr_min\": 0.001, \"warmup_steps\": 10}";
    const char *data = "\"train_images\": \"a/tr-i\", \"train_labels\": \"/abs/tr-l\","
                       "\"test_images\": \"te-i\", \"test_labels\": \"te-l\","
                       "\"mean\": 0.286, \"std\": 0.353, \"parts\": 5";
    const char *nodes =
        PS("s-b", "9000") ", \"shard\": 1, \"share\": 0.5}, " /* shard order != file order */
        "{\"id\": \"s-a\", \"address\": \"[::1]\", \"port\": 9000, \"role\": \"ps\","
        " \"shard\": 0, \"share\": 1.5},"
        "{\"id\": \"W.1\", \"address\": \"box-1.lan\", \"role\": \"worker\", \"part\": 4,"
        " \"threads\": 64, \"evaluate\": true},"
        "{\"id\": \"w_2\", \"address\": \"fe80::1\", \"role\": \"worker\", \"part\": 0,"
        " \"evaluate\": false}";
    placement p;
    char *t = doc(job, data, nodes);
    char err[1024] = "";
    int rc = placement_parse(t, strlen(t), "/etc/psd/placement.conf", &p, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    free(t);
    ck_assert_int_eq(p.job.mode, PLACEMENT_MODE_SSP);
    ck_assert_int_eq(p.job.staleness, 0);
    ck_assert_int_eq(p.job.barrier_timeout_ms, 0);
    ck_assert_int_eq(p.job.batch, 128);
    ck_assert_uint_eq(p.job.seed, UINT64_MAX);
    ck_assert_int_eq(p.job.epochs, 0);
    ck_assert_int_eq(p.job.max_steps, 9007199254740992L);
    ck_assert_int_eq(p.job.checkpoint_interval_s, 60);
    ck_assert_int_eq(p.job.eval_every_steps, 500);
    ck_assert_int_eq(p.job.eval_every_s, 30);
    ck_assert(p.job.opt.lr == 0.1f && p.job.opt.momentum == 0.0f);
    ck_assert(p.job.opt.weight_decay == 0.0001f && p.job.opt.lr_min == 0.001f);
    ck_assert_int_eq(p.job.opt.schedule, OPTIM_SCHED_COSINE);
    ck_assert_int_eq(p.job.opt.total_steps, 9007199254740992L); /* from max_steps */
    ck_assert_int_eq(p.job.opt.warmup_steps, 10);
    ck_assert_str_eq(p.data.train_images, "/etc/psd/a/tr-i");
    ck_assert_str_eq(p.data.train_labels, "/abs/tr-l");
    ck_assert_str_eq(p.data.test_images, "/etc/psd/te-i");
    ck_assert_str_eq(p.data.test_labels, "/etc/psd/te-l");
    ck_assert(p.data.mean == 0.286f && p.data.std == 0.353f);
    ck_assert_int_eq(p.data.parts, 5); /* parts 1..3 left out on purpose */
    ck_assert_str_eq(placement_shard_node(&p, 0)->id, "s-a");
    ck_assert_str_eq(placement_shard_node(&p, 1)->id, "s-b");
    ck_assert_ptr_null(placement_shard_node(&p, 2));
    ck_assert_ptr_null(placement_shard_node(&p, -1));
    const placement_node *a = placement_shard_node(&p, 0);
    ck_assert_str_eq(a->host, "::1");
    ck_assert_int_eq(a->addr_kind, PLACEMENT_ADDR_IPV6);
    /* shares 1.5 : 0.5 -> three quarters on shard 0 */
    ck_assert_uint_eq(a->hi, 323312); /* round(431080 * 0.75 / 16) * 16 */
    const placement_node *w = placement_node_find(&p, "W.1");
    ck_assert_int_eq(w->addr_kind, PLACEMENT_ADDR_NAME);
    ck_assert_int_eq(w->part, 4);
    ck_assert_int_eq(w->threads, 64);
    ck_assert_int_eq(w->evaluate, 1);
    ck_assert_int_eq(placement_node_find(&p, "w_2")->addr_kind, PLACEMENT_ADDR_IPV6);
    ck_assert_int_eq(placement_node_find(&p, "w_2")->evaluate, 0);
    ck_assert_ptr_null(placement_node_find(&p, "w1"));
    ck_assert_ptr_null(placement_node_find(&p, "w_"));
    placement_free(&p);
}
END_TEST

START_TEST(test_schedules)
{
    placement p;
    doc_ok("\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 2, \"optimizer\": "
           "{\"schedule\": \"step\", \"step_size\": 100, \"gamma\": 0.5}",
           NULL, NULL, &p);
    ck_assert_int_eq(p.job.mode, PLACEMENT_MODE_ASYNC);
    ck_assert_int_eq(p.job.barrier_timeout_ms, 0);
    ck_assert_int_eq(p.job.opt.schedule, OPTIM_SCHED_STEP);
    ck_assert_int_eq(p.job.opt.step_size, 100);
    ck_assert(p.job.opt.gamma == 0.5f);
    placement_free(&p);
    doc_ok("\"model\": \"ray\", \"mode\": \"sync\", \"epochs\": 2, \"barrier_timeout_ms\": 5,"
           "\"optimizer\": {\"schedule\": \"cosine\", \"total_steps\": 77}",
           NULL, NULL, &p);
    ck_assert_int_eq(p.job.barrier_timeout_ms, 5);
    ck_assert_int_eq(p.job.opt.total_steps, 77);
    ck_assert(p.job.opt.lr_min == 0.0f);
    placement_free(&p);
}
END_TEST

/* ------------------------------------------------------------- mistakes */

typedef struct bad_case {
    const char *job, *data, *nodes; /* NULL: the valid default */
    const char *raw;                /* whole text instead */
    const char *want;               /* substring of the message */
} bad_case;

#define RAY_RANGES(a, b, c, d)                                                                \
    PS("ps0", "7701") ", \"range\": [" a ", " b "]}, " PS("ps1", "7702") ", \"range\": [" c   \
                      ", " d "]}, " W2

/* A whole valid document with "auth": <a>. */
#define AUTH_DOC(a)                                                                           \
    "{\"job\": {" JOB_OK "}, \"data\": {" DATA_OK "}, \"nodes\": [" NODES_OK "], \"auth\": " a "}"

static const bad_case bad_cases[] = {
    /* the top level */
    { .raw = "", .want = NAME ": empty" },
    { .raw = "  // nothing\n# at all\n", .want = NAME ": empty" },
    { .raw = "[1, 2]", .want = NAME ": expected a JSON object at the top, got an array" },
    { .raw = "{\"job\": 1,\n\"data\": 2\n \"nodes\": 3}", .want = NAME ":3:2: JSON syntax error" },
    { .raw = "{} x", .want = NAME ":1:4: text after the JSON object near 'x'" },
    { .raw = "{\"jobs\": {}}", .want = NAME ": jobs: unknown key (known: job, data, nodes, auth)" },
    /* auth */
    { .raw = AUTH_DOC("\"k\""),
      .want = NAME ": auth: expected an object with the cluster key's \"key_file\", got \"k\"" },
    { .raw = AUTH_DOC("{}"),
      .want = NAME ": auth.key_file: missing (required: the path of the cluster key file" },
    { .raw = AUTH_DOC("{\"key_file\": \"\"}"),
      .want = NAME ": auth.key_file: expected a non-empty path, got \"\"" },
    { .raw = AUTH_DOC("{\"key_file\": 3}"),
      .want = NAME ": auth.key_file: expected a non-empty path, got 3" },
    { .raw = AUTH_DOC("{\"keyfile\": \"k\"}"),
      .want = NAME ": auth.keyfile: unknown key (known: key_file)" },
    { .raw = AUTH_DOC("{\"key_file\": \"k\", \"key_file\": \"j\"}"),
      .want = NAME ": auth.key_file: given twice" },
    { .raw = AUTH_DOC("{\"key_file\": \"k\"}, \"auth\": {\"key_file\": \"k\"}"),
      .want = NAME ": auth: given twice" },
    { .raw = "{\"job\": {" JOB_OK "}, \"job\": {}}", .want = NAME ": job: given twice" },
    { .raw = "{\"data\": {" DATA_OK "}, \"nodes\": []}", .want = NAME ": job: missing" },
    { .raw = "{\"job\": {" JOB_OK "}, \"nodes\": []}", .want = NAME ": data: missing" },
    { .raw = "{\"job\": {" JOB_OK "}, \"data\": {" DATA_OK "}}", .want = NAME ": nodes: missing" },
    { .raw = "{\"job\": \"lenet\"}", .want = NAME ": job: expected an object, got \"lenet\"" },
    /* job */
    { .job = "\"model\": \"ray\", \"mode\": \"fast\", \"epochs\": 1",
      .want = NAME ": job.mode: expected \"sync\", \"async\" or \"ssp\", got \"fast\"" },
    { .job = "\"model\": \"ray\", \"mode\": 3, \"epochs\": 1",
      .want = "job.mode: expected \"sync\", \"async\" or \"ssp\", got 3" },
    { .job = "\"model\": \"ray\", \"epochs\": 1", .want = "job.mode: missing" },
    { .job = "\"model\": \"resnet\", \"mode\": \"sync\", \"epochs\": 1",
      .want = "job.model: unknown model \"resnet\" (known: " },
    { .job = "\"mode\": \"sync\", \"epochs\": 1", .want = "job.model: missing" },
    { .job = "\"model\": null, \"mode\": \"sync\", \"epochs\": 1",
      .want = "job.model: expected a model name, got null" },
    { .job = JOB_OK ", \"lrr\": 0.1", .want = "job.lrr: unknown key (known: model, mode," },
    { .job = JOB_OK ", \"batch\": 32, \"batch\": 64", .want = "job.batch: given twice" },
    { .job = JOB_OK ", \"batch\": 0", .want = "job.batch: expected an integer 1..65536, got 0" },
    { .job = JOB_OK ", \"batch\": 64.5",
      .want = "job.batch: expected an integer 1..65536, got 64.5" },
    { .job = JOB_OK ", \"batch\": \"64\"",
      .want = "job.batch: expected an integer 1..65536, got \"64\"" },
    { .job = JOB_OK ", \"batch\": 1e999", .want = "job.batch: expected an integer" },
    { .job = JOB_OK ", \"staleness\": 3", .want = "job.staleness: not used when mode is \"sync\"" },
    { .job = "\"model\": \"ray\", \"mode\": \"ssp\", \"epochs\": 1",
      .want = "job.staleness: missing" },
    { .job = "\"model\": \"ray\", \"mode\": \"ssp\", \"staleness\": -1, \"epochs\": 1",
      .want = "job.staleness: expected an integer 0..1000000, got -1" },
    { .job = "\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 1, \"barrier_timeout_ms\": 10",
      .want = "job.barrier_timeout_ms: not used when mode is \"async\"" },
    { .job = JOB_OK ", \"tcp_congestion\": \"Cubic\"",
      .want = "job.tcp_congestion: expected a TCP congestion control name like \"cubic\" (1..15 "
              "of a-z 0-9 _), got \"Cubic\"" },
    { .job = JOB_OK ", \"tcp_congestion\": \"abcdefghijklmnop\"",
      .want = "job.tcp_congestion: expected a TCP congestion control name" },
    { .job = JOB_OK ", \"tcp_congestion\": \"\"",
      .want = "job.tcp_congestion: expected a TCP congestion control name" },
    { .job = JOB_OK ", \"overlap\": true",
      .want = "job.overlap: not used when mode is \"sync\"" },
    { .job = JOB_OK ", \"local_steps\": 2",
      .want = "job.local_steps: not used when mode is \"sync\"" },
    { .job = "\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 1, \"local_steps\": 0",
      .want = "job.local_steps: expected an integer 1..64, got 0" },
    { .job = "\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 1, \"local_steps\": 1.5",
      .want = "job.local_steps: expected an integer 1..64, got 1.5" },
    { .job = "\"model\": \"ray\", \"mode\": \"async\", \"epochs\": 1, \"local_steps\": 2, "
             "\"overlap\": true",
      .want = "job.local_steps: 2 local steps and overlap exclude each other: use one of them" },
    { .job = "\"model\": \"ray\", \"mode\": \"ssp\", \"staleness\": 1, \"epochs\": 1, "
             "\"overlap\": 1",
      .want = "job.overlap: expected true or false, got 1" },
    { .job = JOB_OK ", \"barrier_timeout_ms\": 0",
      .want = "job.barrier_timeout_ms: expected an integer 1..86400000, got 0" },
    { .job = "\"model\": \"ray\", \"mode\": \"sync\"",
      .want = "job.epochs: missing (required: \"epochs\", \"max_steps\" or both)" },
    { .job = JOB_OK ", \"max_steps\": 0",
      .want = "job.max_steps: expected an integer 1..9007199254740992, got 0" },
    { .job = JOB_OK ", \"epochs\": true", .want = "job.epochs: given twice" },
    { .job = "\"model\": \"ray\", \"mode\": \"sync\", \"epochs\": true",
      .want = "job.epochs: expected an integer 1..1000000, got true" },
    { .job = JOB_OK ", \"seed\": -1",
      .want = "job.seed: expected an integer 0..9007199254740992 or a decimal string" },
    { .job = JOB_OK ", \"seed\": \"12abc\"",
      .want = "job.seed: expected an integer 0..9007199254740992 or a decimal string" },
    { .job = JOB_OK ", \"seed\": \"+12\"", .want = "job.seed: expected" },
    { .job = JOB_OK ", \"seed\": \"18446744073709551616\"", .want = "job.seed: expected" },
    { .job = JOB_OK ", \"seed\": 1152921504606846976",
      .want = "job.seed: expected an integer 0..9007199254740992" },
    { .job = JOB_OK ", \"checkpoint_interval_s\": -5",
      .want = "job.checkpoint_interval_s: expected an integer 0..2147483648, got -5" },
    { .data = DATA_NOTEST, .job = JOB_OK ", \"eval_every_steps\": 100",
      .want = "job.eval_every_steps: set, but no worker evaluates" },
    { .data = DATA_NOTEST, .job = JOB_OK ", \"target_accuracy\": 98",
      .want = "job.target_accuracy: set, but no worker evaluates" },
    { .job = JOB_OK ", \"target_accuracy\": 0",
      .want = "job.target_accuracy: expected a percentage in (0, 100], got 0" },
    { .job = JOB_OK ", \"target_accuracy\": 101",
      .want = "job.target_accuracy: expected a percentage in (0, 100], got 101" },
    { .job = JOB_OK ", \"augment_shift\": 9",
      .want = "job.augment_shift: expected an integer 0..8, got 9" },
    { .data = DATA_NOTEST, .job = JOB_OK ", \"eval_every_s\": 100",
      .want = "job.eval_every_s: set, but no worker evaluates" },
    { .job = JOB_OK ", \"optimizer\": 0.1", .want = "job.optimizer: expected an object, got 0.1" },
    { .job = JOB_OK ", \"optimizer\": {\"nesterov\": true}",
      .want = "job.optimizer.nesterov: unknown key (known: lr," },
    { .job = JOB_OK ", \"optimizer\": {\"lr\": 0}",
      .want = "job.optimizer.lr: expected a number in (0, 1000000], got 0" },
    { .job = JOB_OK ", \"optimizer\": {\"lr\": \"0.1\"}",
      .want = "job.optimizer.lr: expected a number in (0, 1000000], got \"0.1\"" },
    { .job = JOB_OK ", \"optimizer\": {\"lr\": 1e-60}",
      .want = "job.optimizer.lr: too small for a float" },
    { .job = JOB_OK ", \"optimizer\": {\"momentum\": 1}",
      .want = "job.optimizer.momentum: expected a number in [0, 1), got 1" },
    { .job = JOB_OK ", \"optimizer\": {\"momentum\": 0.999999999}",
      .want = "job.optimizer.momentum: 0.999999999 rounds to 1 as a float" },
    { .job = JOB_OK ", \"optimizer\": {\"weight_decay\": -0.1}",
      .want = "job.optimizer.weight_decay: expected a number in [0, 1000000], got -0.1" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"linear\"}",
      .want = "job.optimizer.schedule: expected \"constant\", \"step\" or \"cosine\", "
              "got \"linear\"" },
    { .job = JOB_OK ", \"optimizer\": {\"gamma\": 0.5}",
      .want = "job.optimizer.gamma: not used by the \"constant\" schedule" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"step\", \"total_steps\": 5}",
      .want = "job.optimizer.total_steps: not used by the \"step\" schedule" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"step\", \"step_size\": 0}",
      .want = "job.optimizer.step_size: expected an integer 1..9007199254740992, got 0" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"step\", \"gamma\": 1.5}",
      .want = "job.optimizer.gamma: expected a number in (0, 1], got 1.5" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"cosine\"}",
      .want = "job.optimizer.total_steps: missing (required: the cosine schedule needs it "
              "when job.max_steps is not given)" },
    { .job = JOB_OK ", \"optimizer\": {\"schedule\": \"cosine\", \"total_steps\": 10, "
                    "\"lr_min\": 0.1}",
      .want = "job.optimizer.lr_min: expected a number in [0, lr = 0.05], got 0.1" },
    { .job = JOB_OK ", \"optimizer\": {\"warmup_steps\": -1}",
      .want = "job.optimizer.warmup_steps: expected an integer 0..9007199254740992, got -1" },
    /* job.compression */
    { .job = JOB_OK ", \"compression\": \"topk\"",
      .want = NAME ": job.compression: expected an object, got \"topk\"" },
    { .job = JOB_OK ", \"compression\": {\"push\": \"zip\"}",
      .want = NAME ": job.compression.push: expected \"none\", \"fp16\" or \"topk\", got \"zip\"" },
    { .job = JOB_OK ", \"compression\": {\"push\": 1}",
      .want = "job.compression.push: expected \"none\", \"fp16\" or \"topk\", got 1" },
    { .job = JOB_OK ", \"compression\": {\"pull\": \"top\"}",
      .want = "job.compression.pull: expected \"full\", \"fp16\", \"delta\" or \"topk\", got \"top\"" },
    { .job = JOB_OK ", \"compression\": {\"push\": \"topk\", \"topk_percent\": 0}",
      .want = "job.compression.topk_percent: expected a percentage in (0, 100], got 0" },
    { .job = JOB_OK ", \"compression\": {\"push\": \"topk\", \"topk_percent\": 100.5}",
      .want = "job.compression.topk_percent: expected a percentage in (0, 100], got 100.5" },
    { .job = JOB_OK ", \"compression\": {\"push\": \"topk\", \"topk_percent\": \"1\"}",
      .want = "job.compression.topk_percent: expected a percentage in (0, 100], got \"1\"" },
    { .job = JOB_OK ", \"compression\": {\"topk_percent\": 5}",
      .want = "job.compression.topk_percent: not used unless push or pull is \"topk\"" },
    { .job = JOB_OK ", \"compression\": {\"push\": \"fp16\", \"pull\": \"delta\", \"topk_percent\": 5}",
      .want = "job.compression.topk_percent: not used unless push or pull is \"topk\"" },
    { .job = JOB_OK ", \"compression\": {\"puhs\": \"fp16\"}",
      .want = "job.compression.puhs: unknown key (known: push, topk_percent, pull)" },
    { .job = JOB_OK ", \"compression\": {\"pull\": \"fp16\", \"pull\": \"full\"}",
      .want = "job.compression.pull: given twice" },
    /* data */
    { .data = "\"train_labels\": \"x\"", .want = "data.train_images: missing" },
    { .data = "\"train_images\": \"x\", \"train_labels\": 5",
      .want = "data.train_labels: expected a non-empty path, got 5" },
    { .data = "\"train_images\": \"\", \"train_labels\": \"y\"",
      .want = "data.train_images: expected a non-empty path, got \"\"" },
    { .data = DATA_NOTEST ", \"test_images\": \"t\"",
      .want = "data.test_labels: missing (required: the test set needs both images and labels)" },
    { .data = DATA_NOTEST ", \"test_labels\": \"t\"", .want = "data.test_images: missing" },
    { .data = DATA_OK ", \"std\": 0", .want = "data.std: expected a number > 0, got 0" },
    { .data = DATA_OK ", \"mean\": \"0.1\"", .want = "data.mean: expected a number, got \"0.1\"" },
    { .data = DATA_OK ", \"parts\": 1",
      .want = "data.parts: 1 parts for 2 workers: every worker needs its own part" },
    { .data = DATA_OK ", \"parts\": 0", .want = "data.parts: expected an integer 1..1024, got 0" },
    { .data = DATA_OK ", \"train\": \"x\"",
      .want = "data.train: unknown key (known: train_images," },
    { .raw = "{\"job\": {" JOB_OK "}, \"data\": [], \"nodes\": []}",
      .want = "data: expected an object, got an array" },
    /* nodes: structure */
    { .nodes = "", .want = "nodes: empty" },
    { .nodes = PS("ps0", "1") "}", .want = "nodes: only one node" },
    { .raw = "{\"job\": {" JOB_OK "}, \"data\": {" DATA_OK "}, \"nodes\": {}}",
      .want = "nodes: expected an array of node objects, got an object" },
    { .nodes = P2 ", \"w0\"", .want = "nodes[2]: expected an object, got \"w0\"" },
    { .nodes = PS("ps0", "7701") ", \"shrad\": 0}, " W2,
      .want = "nodes[0].shrad: unknown key (known: id, address," },
    { .nodes = PS("ps0", "7701") ", \"port\": 7702}, " W2, .want = "nodes[0].port: given twice" },
    { .nodes = W2 ", " WK("w2") "}", .want = "nodes: no node has role \"ps\"" },
    { .nodes = P2, .want = "nodes: no node has role \"worker\"" },
    /* nodes: id, role, address, port */
    { .nodes = P2 ", " WK("w0") "}, " WK("ps0") "}",
      .want = "nodes[3].id: \"ps0\" is also the id of nodes[0]" },
    { .nodes = P2 ", " WK("w 0") "}",
      .want = "nodes[2].id: expected 1 to 63 characters of A-Z a-z 0-9 . _ -, got \"w 0\"" },
    { .nodes = P2 ", " WK("w0123456789012345678901234567890123456789012345678901234567890123") "}",
      .want = "nodes[2].id: expected 1 to 63 characters" },
    { .nodes = P2 ", {\"address\": \"127.0.0.1\", \"role\": \"worker\"}",
      .want = "nodes[2].id: missing" },
    { .nodes = P2 ", {\"id\": \"w0\", \"address\": \"127.0.0.1\"}",
      .want = "nodes[2].role: missing" },
    { .nodes = "{\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": 1, \"role\": \"server\"}, "
               W2,
      .want = "nodes[0].role: expected \"ps\" or \"worker\", got \"server\"" },
    { .nodes = "{\"id\": \"ps0\", \"address\": \"300.1.2.3\", \"port\": 1, \"role\": \"ps\"}, " W2,
      .want = NAME ": nodes[0].address: bad address \"300.1.2.3\"" },
    { .nodes = "{\"id\": \"ps0\", \"address\": \"box_1\", \"port\": 1, \"role\": \"ps\"}, " W2,
      .want = "nodes[0].address: bad address \"box_1\"" },
    { .nodes = "{\"id\": \"ps0\", \"address\": 10, \"port\": 1, \"role\": \"ps\"}, " W2,
      .want = "nodes[0].address: expected an IPv4 or IPv6 address or a host name, got 10" },
    { .nodes = "{\"id\": \"ps0\", \"port\": 1, \"role\": \"ps\"}, " W2,
      .want = "nodes[0].address: missing" },
    { .nodes = P2 ", " PS("ps2", "\"80a\"") "}, " W2,
      .want = NAME ": nodes[2].port: expected an integer 1..65535, got \"80a\"" },
    { .nodes = PS("ps0", "70000") "}, " W2,
      .want = "nodes[0].port: expected an integer 1..65535, got 70000" },
    { .nodes = PS("ps0", "0") "}, " W2,
      .want = "nodes[0].port: expected an integer 1..65535, got 0" },
    { .nodes = "{\"id\": \"ps0\", \"address\": \"::1\", \"role\": \"ps\"}, " W2,
      .want = "nodes[0].port: missing" },
    { .nodes = P2 ", " WK("w0") ", \"port\": 7000}",
      .want = "nodes[2].port: not used on a worker (role is \"worker\")" },
    { .nodes = PS("ps0", "7701") "}, " PS("ps1", "7701") "}, " W2,
      .want = "nodes[1].port: 127.0.0.1:7701 is also the address and port of nodes[0] (\"ps0\")" },
    { .nodes = "{\"id\": \"a\", \"address\": \"::1\", \"port\": 5, \"role\": \"ps\"}, "
               "{\"id\": \"b\", \"address\": \"[0::1]\", \"port\": 5, \"role\": \"ps\"}, " W2,
      .want = "nodes[1].port: [0::1]:5 is also the address and port of nodes[0]" },
    { .nodes = "{\"id\": \"a\", \"address\": \"Box\", \"port\": 5, \"role\": \"ps\"}, "
               "{\"id\": \"b\", \"address\": \"box\", \"port\": 5, \"role\": \"ps\"}, " W2,
      .want = "nodes[1].port: box:5 is also" },
    /* nodes: shards */
    { .nodes = PS("ps0", "1") ", \"shard\": 0}, " PS("ps1", "2") ", \"shard\": 1}, "
               PS("ps2", "3") ", \"shard\": 2}, " PS("ps3", "4") ", \"shard\": 1}, " W2,
      .want = NAME ": nodes[3].shard: shard 1 appears twice (nodes[1] and nodes[3])" },
    { .nodes = PS("ps0", "1") ", \"shard\": 0}, " PS("ps1", "2") ", \"shard\": 1}, "
               PS("ps3", "4") ", \"shard\": 3}, " W2,
      .want = NAME ": shards: shard 2 is missing (shards are 0..3)" },
    { .nodes = PS("ps0", "1") ", \"shard\": 1}, " PS("ps1", "2") ", \"shard\": 2}, " W2,
      .want = "shards: shard 0 is missing (shards are 0..2)" },
    { .nodes = PS("ps0", "1") ", \"shard\": 0}, " PS("ps1", "2") "}, " W2,
      .want = "nodes[1].shard: missing, but nodes[0] gives its shard: give every ps node a "
              "shard, or none" },
    { .nodes = PS("ps0", "1") ", \"shard\": -1}, " W2,
      .want = "nodes[0].shard: expected an integer 0..1023, got -1" },
    { .nodes = P2 ", " WK("w0") ", \"shard\": 0}", .want = "nodes[2].shard: not used on a worker" },
    { .nodes = PS("ps0", "1") ", \"share\": 0}, " W2,
      .want = "nodes[0].share: expected a number 0.000001..1000000, got 0" },
    { .nodes = PS("ps0", "1") ", \"share\": -2}, " W2,
      .want = "nodes[0].share: expected a number 0.000001..1000000, got -2" },
    { .nodes = PS("ps0", "1") ", \"share\": \"2\"}, " W2,
      .want = "nodes[0].share: expected a number 0.000001..1000000, got \"2\"" },
    { .nodes = P2 ", " WK("w0") ", \"share\": 1}", .want = "nodes[2].share: not used on a worker" },
    /* nodes: explicit ranges (ray: 1960 parameters) */
    { .nodes = PS("ps0", "1") ", \"share\": 1, \"range\": [0, 1960]}, " W2,
      .want = "nodes[0].range: give either \"share\" or \"range\", not both" },
    { .nodes = RAY_RANGES("0", "1024", "1008", "1960"),
      .want = "nodes[1].range: [1008, 1960) of shard 1 overlaps [0, 1024) of shard 0 (nodes[0])" },
    { .nodes = RAY_RANGES("0", "992", "1008", "1960"),
      .want = NAME ": shards: parameters [992, 1008) are in no shard" },
    { .nodes = RAY_RANGES("16", "1024", "1024", "1960"),
      .want = "shards: parameters [0, 16) are in no shard (shard 0 must start at 0)" },
    { .nodes = RAY_RANGES("0", "1024", "1024", "1952"),
      .want = "shards: parameters [1952, 1960) are in no shard (ray has 1960)" },
    { .nodes = RAY_RANGES("0", "1000", "1000", "1960"),
      .want = "nodes[0].range: [0, 1000): boundaries must be multiples of 16 (or 1960, the end)" },
    { .nodes = RAY_RANGES("0", "1024", "1024", "2000"),
      .want = "nodes[1].range: [1024, 2000) goes past the end of ray's 1960 parameters" },
    { .nodes = RAY_RANGES("1024", "1960", "0", "1024"),
      /* shards in file order, so shard 0 starts at 1024 */
      .want = "shards: parameters [0, 1024) are in no shard (shard 0 must start at 0)" },
    { .nodes = RAY_RANGES("0", "0", "0", "1960"), .want = "nodes[0].range: [0, 0) is empty" },
    { .nodes = PS("ps0", "1") ", \"range\": [0, 1024]}, " PS("ps1", "2") "}, " W2,
      .want = "nodes[1].range: missing, but nodes[0] gives its range" },
    { .nodes = PS("ps0", "1") ", \"range\": [0, 1960, 5]}, " W2,
      .want = "nodes[0].range: expected [lo, hi], two integers >= 0, got an array" },
    { .nodes = PS("ps0", "1") ", \"range\": \"0-1960\"}, " W2,
      .want = "nodes[0].range: expected [lo, hi], two integers >= 0, got \"0-1960\"" },
    { .nodes = PS("ps0", "1") ", \"range\": [0, 1960.5]}, " W2,
      .want = "nodes[0].range: expected [lo, hi]" },
    /* nodes: parts, evaluate, threads */
    { .nodes = P2 ", " WK("w0") ", \"part\": 0}, " WK("w1") ", \"part\": 0}",
      .want = NAME ": nodes[3].part: part 0 appears twice (nodes[2] and nodes[3])" },
    { .nodes = P2 ", " WK("w0") ", \"part\": 0}, " WK("w1") ", \"part\": 2}",
      .want = NAME ": parts: part 1 is missing (parts are 0..2); set data.parts" },
    { .nodes = P2 ", " WK("w0") ", \"part\": 0}, " WK("w1") "}",
      .want = "nodes[3].part: missing, but nodes[2] gives its part: give every worker node a "
              "part, or none" },
    { .data = DATA_OK ", \"parts\": 3",
      .nodes = P2 ", " WK("w0") ", \"part\": 0}, " WK("w1") ", \"part\": 3}",
      .want = "nodes[3].part: part 3 is out of range (data.parts is 3: parts are 0..2)" },
    { .nodes = P2 ", " WK("w0") ", \"part\": \"0\"}",
      .want = "nodes[2].part: expected an integer 0..1023, got \"0\"" },
    { .nodes = PS("ps0", "1") ", \"part\": 0}, " W2,
      .want = "nodes[0].part: not used on a ps node (role is \"ps\")" },
    { .nodes = PS("ps0", "1") ", \"evaluate\": true}, " W2,
      .want = "nodes[0].evaluate: not used on a ps node" },
    { .nodes = P2 ", " WK("w0") ", \"evaluate\": \"yes\"}",
      .want = "nodes[2].evaluate: expected true or false, got \"yes\"" },
    { .nodes = P2 ", " WK("w0") ", \"evaluate\": 1}",
      .want = "nodes[2].evaluate: expected true or false, got 1" },
    { .data = DATA_NOTEST, .nodes = P2 ", " WK("w0") ", \"evaluate\": true}",
      .want = "nodes[2].evaluate: needs a test set (data.test_images and data.test_labels)" },
    { .nodes = P2 ", " WK("w0") ", \"threads\": 0}",
      .want = "nodes[2].threads: expected an integer 1..64, got 0" },
    { .nodes = P2 ", " WK("w0") ", \"threads\": 65}",
      .want = "nodes[2].threads: expected an integer 1..64, got 65" },
};

#define N_BAD_CASES ((int)(sizeof bad_cases / sizeof bad_cases[0]))

START_TEST(test_bad_case)
{
    const bad_case *bc = &bad_cases[_i];
    if (bc->raw) {
        expect_fail_text(bc->raw, bc->want);
    } else {
        char *t = doc(bc->job, bc->data, bc->nodes);
        expect_fail_text(t, bc->want);
        free(t);
    }
}
END_TEST

/* Messages are cut to the buffer, never overrun it; NULL err is allowed. */
START_TEST(test_small_error_buffer)
{
    char *t = doc("\"model\": \"ray\", \"mode\": \"fast\", \"epochs\": 1", NULL, NULL);
    placement p;
    char err[12];
    memset(err, 'x', sizeof err);
    ck_assert_int_eq(placement_parse(t, strlen(t), NAME, &p, err, 8), -1);
    ck_assert_str_eq(err, "t.conf:");
    ck_assert_int_eq(err[8], 'x');
    ck_assert_int_eq(placement_parse(t, strlen(t), NAME, &p, NULL, 0), -1);
    ck_assert_int_eq(placement_parse(t, strlen(t), NULL, &p, err, sizeof err), -1);
    ck_assert_str_eq(err, "placement: ");
    free(t);
}
END_TEST

/* A NUL inside the text is reported with its line, not parsed around. */
START_TEST(test_nul_byte)
{
    char *t = doc(NULL, NULL, NULL);
    size_t len = strlen(t);
    char *nl = strchr(t, '\n');
    nl[3] = 0; /* line 2 */
    placement p;
    char err[512] = "";
    ck_assert_int_eq(placement_parse(t, len, NAME, &p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, NAME ":2:3: NUL byte") != NULL, "%s", err);
    free(t);
}
END_TEST

/* Big shard counts: ray has 1960 parameters = 123 blocks of 16 floats. */
static char *many_shards_doc(int nshards)
{
    size_t cap = (size_t)nshards * 96 + 1024, o = 0;
    char *nodes = malloc(cap);
    ck_assert_ptr_nonnull(nodes);
    for (int s = 0; s < nshards; s++)
        o += (size_t)snprintf(nodes + o, cap - o, PS("ps%d", "%d") "}, ", s, 7000 + s);
    snprintf(nodes + o, cap - o, "%s", W2);
    char *t = doc(NULL, NULL, nodes);
    free(nodes);
    return t;
}

START_TEST(test_too_many_shards)
{
    char *t = many_shards_doc(123);
    placement p;
    parse_ok(t, &p);
    free(t);
    for (int s = 0; s < 123; s++) {
        const placement_node *n = placement_shard_node(&p, s);
        ck_assert_uint_eq(n->lo, 16 * (size_t)s);
        ck_assert_uint_eq(n->hi, s == 122 ? 1960 : 16 * (size_t)(s + 1));
    }
    placement_free(&p);
    t = many_shards_doc(124);
    expect_fail_text(t, NAME ": shards: 124 shards, but 1960 parameters make only 123 blocks "
                     "of 16 floats");
    free(t);
}
END_TEST

/* ---------------------------------------------------------------- ranges */

static const double share_sets[][6] = {
    { 1 },
    { 1, 1 },
    { 2, 1 },
    { 1, 2, 3, 5 },
    { 0.5, 0.25, 0.125, 0.125 },
    { 1000, 1, 1 },       /* tiny shards still get a block */
    { 1, 1, 1, 1, 1, 7 }, /* one strong box */
    { 0.333333, 0.333333, 0.333334 },
};
static const int share_counts[] = { 1, 2, 2, 4, 4, 3, 6, 3 };
#define N_SHARE_SETS ((int)(sizeof share_counts / sizeof share_counts[0]))

static char *shares_doc(const char *model, const double *shares, int n)
{
    size_t cap = 4096, o = 0;
    char nodes[4096], job[128];
    for (int s = 0; s < n; s++)
        o += (size_t)snprintf(nodes + o, cap - o, PS("p%d", "%d") ", \"share\": %.17g}, ", s,
                              7000 + s, shares[s]);
    snprintf(nodes + o, cap - o, "%s", W2);
    snprintf(job, sizeof job, "\"model\": \"%s\", \"mode\": \"sync\", \"epochs\": 1", model);
    return doc(job, NULL, nodes);
}

/* lo[0] = 0, contiguous, aligned, non-empty, ends at nparams, and each
 * size within two blocks of its share of nparams (unless the minimum of one
 * block applies). */
static void check_ranges(const size_t *lo, const size_t *hi, const double *shares, int n,
                         size_t nparams, const char *what)
{
    double total = 0;
    for (int s = 0; s < n; s++)
        total += shares[s];
    ck_assert_msg(lo[0] == 0, "%s: lo[0] = %zu", what, lo[0]);
    ck_assert_msg(hi[n - 1] == nparams, "%s: hi[last] = %zu", what, hi[n - 1]);
    size_t sum = 0;
    for (int s = 0; s < n; s++) {
        ck_assert_msg(hi[s] > lo[s], "%s: shard %d empty [%zu, %zu)", what, s, lo[s], hi[s]);
        ck_assert_msg(lo[s] % 16 == 0, "%s: shard %d lo %zu not aligned", what, s, lo[s]);
        if (s + 1 < n)
            ck_assert_msg(hi[s] == lo[s + 1], "%s: gap/overlap after shard %d", what, s);
        double ideal = (double)nparams * shares[s] / total;
        double size = (double)(hi[s] - lo[s]);
        ck_assert_msg(fabs(size - ideal) <= 32 || (ideal < 16 && size == 16),
                      "%s: shard %d has %g, ideal %g", what, s, size, ideal);
        sum += hi[s] - lo[s];
    }
    ck_assert_uint_eq(sum, nparams);
}

START_TEST(test_ranges_from_shares)
{
    const char *models[2] = { "ray", "lenet" };
    for (int m = 0; m < 2; m++) {
        cnn_model model;
        char err[512] = "";
        ck_assert_int_eq(cnn_model_init(&model, models[m], err, sizeof err), 0);
        for (int k = 0; k < N_SHARE_SETS; k++) {
            int n = share_counts[k];
            char *t = shares_doc(models[m], share_sets[k], n);
            placement p;
            parse_ok(t, &p);
            free(t);
            ck_assert_uint_eq(p.nparams, model.nparams);
            ck_assert_int_eq(p.nshards, n);
            size_t lo[8], hi[8];
            ck_assert_msg(placement_ranges_compute(&p, p.nparams, lo, hi, err, sizeof err) == 0,
                          "%s", err);
            char what[64];
            snprintf(what, sizeof what, "%s set %d", models[m], k);
            check_ranges(lo, hi, share_sets[k], n, p.nparams, what);
            for (int s = 0; s < n; s++) { /* the nodes carry the same ranges */
                ck_assert_uint_eq(placement_shard_node(&p, s)->lo, lo[s]);
                ck_assert_uint_eq(placement_shard_node(&p, s)->hi, hi[s]);
            }
            /* any other parameter count works too (not a multiple of 16) */
            const size_t others[3] = { 1000003, 16 * (size_t)n, 16 * (size_t)n - 15 };
            for (int j = 0; j < 3; j++) {
                ck_assert_int_eq(
                    placement_ranges_compute(&p, others[j], lo, hi, err, sizeof err), 0);
                snprintf(what, sizeof what, "%s set %d n=%zu", models[m], k, others[j]);
                if (j == 0)
                    check_ranges(lo, hi, share_sets[k], n, others[j], what);
                ck_assert_uint_eq(lo[0], 0);
                ck_assert_uint_eq(hi[n - 1], others[j]);
                for (int s = 0; s < n; s++) {
                    ck_assert_uint_gt(hi[s], lo[s]);
                    if (s + 1 < n)
                        ck_assert_uint_eq(hi[s], lo[s + 1]);
                }
            }
            if (n > 1) /* fewer blocks than shards */
                ck_assert_int_eq(placement_ranges_compute(&p, 16 * (size_t)n - 16, lo, hi, err,
                                                          sizeof err),
                                 -1);
            placement_free(&p);
        }
    }
}
END_TEST

/* The exact boundaries are part of the contract between psd and workerd
 * (both compute them): pin a few. */
START_TEST(test_ranges_pinned)
{
    const double s121[3] = { 1, 2, 1 };
    char *t = shares_doc("lenet", s121, 3);
    placement p;
    parse_ok(t, &p);
    free(t);
    size_t lo[3], hi[3];
    char err[256];
    ck_assert_int_eq(placement_ranges_compute(&p, p.nparams, lo, hi, err, sizeof err), 0);
    /* 431080/4 = 107770 -> 6736 blocks (107776); 3/4 = 323310 -> 20207 blocks (323312) */
    ck_assert_uint_eq(hi[0], 107776);
    ck_assert_uint_eq(hi[1], 323312);
    ck_assert_uint_eq(hi[2], 431080);
    placement_free(&p);
    /* 1000 : 1 : 1 on ray: the small ones get one block each */
    const double s1000[3] = { 1000, 1, 1 };
    t = shares_doc("ray", s1000, 3);
    parse_ok(t, &p);
    free(t);
    ck_assert_int_eq(placement_ranges_compute(&p, p.nparams, lo, hi, err, sizeof err), 0);
    ck_assert_uint_eq(hi[0], 1936);
    ck_assert_uint_eq(hi[1], 1952);
    ck_assert_uint_eq(hi[2], 1960);
    placement_free(&p);
}
END_TEST

START_TEST(test_ranges_explicit)
{
    char *t = doc(NULL, NULL, RAY_RANGES("0", "1024", "1024", "1960"));
    placement p;
    parse_ok(t, &p);
    free(t);
    ck_assert_int_eq(p.nodes[0].has_range, 1);
    ck_assert_uint_eq(p.nodes[0].lo, 0);
    ck_assert_uint_eq(p.nodes[0].hi, 1024);
    ck_assert_uint_eq(p.nodes[1].lo, 1024);
    ck_assert_uint_eq(p.nodes[1].hi, 1960);
    size_t lo[2], hi[2];
    char err[512] = "";
    ck_assert_int_eq(placement_ranges_compute(&p, 1960, lo, hi, err, sizeof err), 0);
    ck_assert_uint_eq(hi[0], 1024); /* not the shares' 976 */
    ck_assert_uint_eq(lo[1], 1024);
    ck_assert_int_eq(placement_ranges_compute(&p, 2000, lo, hi, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "the file's ranges cover ray's 1960 parameters, not 2000"), "%s",
                  err);
    placement_free(&p);
    /* explicit ranges follow shard order, not file order */
    t = doc(NULL, NULL,
            PS("ps0", "7701") ", \"shard\": 1, \"range\": [1024, 1960]}, " PS("ps1", "7702")
                ", \"shard\": 0, \"range\": [0, 1024]}, " W2);
    parse_ok(t, &p);
    free(t);
    ck_assert_uint_eq(placement_shard_node(&p, 0)->hi, 1024);
    ck_assert_str_eq(placement_shard_node(&p, 0)->id, "ps1");
    placement_free(&p);
}
END_TEST

/* -------------------------------------------------------------- comments */

START_TEST(test_comments_strip)
{
    /* each line of input, and the part of it that must survive (the rest
     * must become spaces); strings carry over lines only when broken */
    static const char *const lines[][2] = {
        { "// head", "" },
        { "{ \"a\": \"x//y#z\", # tail", "{ \"a\": \"x//y#z\", " },
        { "  \"b\": \"q\\\"//still\\\\\" // after an escaped quote and backslash",
          "  \"b\": \"q\\\"//still\\\\\" " },
        { "  \"c\": 1 /not a comment/ #", "  \"c\": 1 /not a comment/ " },
        { "#", "" },
        { "  \"d\": \"unterminated // here", "  \"d\": \"unterminated // here" },
        { "\"e\": 2,// ok again after the broken string", "\"e\": 2," },
        { "\"f\": \"\\\\\" # an escaped backslash ends the string", "\"f\": \"\\\\\" " },
        { "  \t# tab, then comment; CRLF next\r", "  \t" },
        { "\"g\": \"#\"//", "\"g\": \"#\"" },
    };
    const int n = (int)(sizeof lines / sizeof lines[0]);
    char in[2048] = "";
    for (int i = 0; i < n; i++) {
        strcat(in, lines[i][0]);
        strcat(in, "\n");
    }
    size_t len = strlen(in);
    char *buf = strdup(in);
    placement_comments_strip(buf, len);
    ck_assert_uint_eq(strlen(buf), len);
    char *line = buf;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(lines[i][0]), keep = strlen(lines[i][1]);
        ck_assert_msg(line[l] == '\n', "line %d: newline moved", i);
        ck_assert_msg(strncmp(line, lines[i][1], keep) == 0, "line %d: '%.*s'", i, (int)l, line);
        for (size_t k = keep; k < l; k++)
            ck_assert_msg(line[k] == ' ', "line %d: '%.*s' not blanked from %zu", i, (int)l, line,
                          keep);
        line += l + 1;
    }
    /* only len bytes are looked at and touched */
    strcpy(buf, "1 // x");
    placement_comments_strip(buf, 3); /* "1 /": no comment within the length */
    ck_assert_str_eq(buf, "1 // x");
    placement_comments_strip(buf, 4); /* "1 //": blanked up to the length only */
    ck_assert_str_eq(buf, "1    x");
    strcpy(buf, "1 /");
    placement_comments_strip(buf, 3);
    ck_assert_str_eq(buf, "1 /");
    free(buf);
}
END_TEST

START_TEST(test_comments_in_file)
{
    const char *text =
        "# a placement file\n"
        "{ // the job\n"
        "  \"job\": {\"model\": \"ray\", \"mode\": \"sync\", \"epochs\": 1}, # inline\n"
        "  \"data\": {\"train_images\": \"http://host/a#b//c\", // a URL-like path\n"
        "            \"train_labels\": \"l#1\"},\n"
        "  \"nodes\": [\n"
        "    // { \"id\": \"commented-out\" },\n"
        "    " PS("ps0", "7701") "}, # ps\n"
        "    " WK("w0") "}\n"
        "  ]\n"
        "}\n"
        "// trailing comment\n";
    placement p;
    parse_ok(text, &p);
    ck_assert_str_eq(p.data.train_images, "http://host/a#b//c");
    ck_assert_str_eq(p.data.train_labels, "l#1");
    ck_assert_int_eq(p.nnodes, 2);
    placement_free(&p);
    /* line numbers survive comments: the error is on line 4 */
    const char *bad =
        "// one\n"
        "# two\n"
        "{\"job\": {\"model\": \"ray\", // three\n"
        "  \"mode\" \"sync\"}}\n";
    expect_fail_text(bad, NAME ":4:10: JSON syntax error near '\"sync\"}}'");
}
END_TEST

/* ---------------------------------------------------------------- lookup */

START_TEST(test_node_select)
{
    placement p;
    doc_ok(NULL, NULL, NULL, &p);
    const placement_node *n = NULL;
    char err[512] = "";
    ck_assert_int_eq(placement_node_select(&p, "w1", PLACEMENT_ROLE_MAX, &n, err, sizeof err), 0);
    ck_assert_ptr_eq(n, &p.nodes[3]);
    ck_assert_int_eq(placement_node_select(&p, "ps1", PLACEMENT_ROLE_PS, &n, err, sizeof err), 0);
    ck_assert_ptr_eq(n, &p.nodes[1]);
    ck_assert_int_eq(placement_node_select(&p, "box9", PLACEMENT_ROLE_MAX, &n, err, sizeof err),
                     -1);
    ck_assert_ptr_null(n);
    ck_assert_str_eq(err, "no node \"box9\" in t.conf (nodes: ps0, ps1, w0, w1)");
    ck_assert_int_eq(placement_node_select(&p, "w0", PLACEMENT_ROLE_PS, &n, err, sizeof err), -1);
    ck_assert_str_eq(err, "node \"w0\" in t.conf is a worker node, not a ps node");
    ck_assert_int_eq(placement_node_select(&p, "ps0", PLACEMENT_ROLE_WORKER, &n, err, sizeof err),
                     -1);
    ck_assert_str_eq(err, "node \"ps0\" in t.conf is a ps node, not a worker node");
    /* a short buffer is cut, not overrun */
    char small[20];
    memset(small, 'x', sizeof small);
    ck_assert_int_eq(placement_node_select(&p, "box9", PLACEMENT_ROLE_MAX, &n, small, 16), -1);
    ck_assert_uint_eq(strlen(small), 15);
    ck_assert_int_eq(small[16], 'x');
    placement_free(&p);
}
END_TEST

/* No id: the host name, or its part before the first dot. */
START_TEST(test_node_select_hostname)
{
    char host[256];
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = 0;
    char id[PLACEMENT_ID_MAX + 1];
    snprintf(id, sizeof id, "%.*s", (int)strcspn(host, "."), host);
    const char *ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    if (strspn(id, ok) != strlen(id) || !*id)
        snprintf(id, sizeof id, "unusable-host-name"); /* still tests the failure path */
    char nodes[512];
    snprintf(nodes, sizeof nodes, P2 ", " WK("%s") "}", id);
    placement p;
    doc_ok(NULL, NULL, nodes, &p);
    const placement_node *n = NULL;
    char err[512] = "";
    int rc = placement_node_select(&p, NULL, PLACEMENT_ROLE_WORKER, &n, err, sizeof err);
    if (strcmp(id, "unusable-host-name") == 0) {
        ck_assert_int_eq(rc, -1);
        ck_assert_msg(strstr(err, "this host's name; start with --node ID"), "%s", err);
    } else {
        ck_assert_msg(rc == 0, "%s", err);
        ck_assert_str_eq(n->id, id);
        ck_assert_int_eq(
            placement_node_select(&p, "", PLACEMENT_ROLE_WORKER, &n, err, sizeof err), 0);
        /* and when the host is not in the file, the message says so */
        placement_free(&p);
        doc_ok(NULL, NULL, NULL, &p);
        ck_assert_int_eq(
            placement_node_select(&p, NULL, PLACEMENT_ROLE_MAX, &n, err, sizeof err), -1);
        ck_assert_msg(strstr(err, "(this host's name; start with --node ID) in t.conf "
                                  "(nodes: ps0, ps1, w0, w1)"),
                      "%s", err);
    }
    placement_free(&p);
}
END_TEST

/* ------------------------------------------------------------- addresses */

START_TEST(test_addresses)
{
    static const struct {
        const char *in, *host;
        int kind; /* -1: bad */
    } cases[] = {
        { "127.0.0.1", "127.0.0.1", PLACEMENT_ADDR_IPV4 },
        { "0.0.0.0", "0.0.0.0", PLACEMENT_ADDR_IPV4 },
        { "255.255.255.255", "255.255.255.255", PLACEMENT_ADDR_IPV4 },
        { "192.0.2.10", "192.0.2.10", PLACEMENT_ADDR_IPV4 },
        { "::1", "::1", PLACEMENT_ADDR_IPV6 },
        { "[::1]", "::1", PLACEMENT_ADDR_IPV6 },
        { "[2001:db8::7]", "2001:db8::7", PLACEMENT_ADDR_IPV6 },
        { "::ffff:192.0.2.1", "::ffff:192.0.2.1", PLACEMENT_ADDR_IPV6 },
        { "localhost", "localhost", PLACEMENT_ADDR_NAME },
        { "edge-a", "edge-a", PLACEMENT_ADDR_NAME },
        { "Box1.example.NET", "Box1.example.NET", PLACEMENT_ADDR_NAME },
        { "1e100.net", "1e100.net", PLACEMENT_ADDR_NAME },
        { "3com.com", "3com.com", PLACEMENT_ADDR_NAME },
        { "a", "a", PLACEMENT_ADDR_NAME },
        { "300.1.2.3", NULL, -1 },
        { "1.2.3", NULL, -1 },
        { "1.2.3.4.5", NULL, -1 },
        { "01.2.3.4", NULL, -1 },
        { "1.2.3.", NULL, -1 },
        { "1..2.3", NULL, -1 },
        { "1.2.3.4:80", NULL, -1 },
        { "", NULL, -1 },
        { "box_1", NULL, -1 },
        { "-box", NULL, -1 },
        { "box-", NULL, -1 },
        { "box..lan", NULL, -1 },
        { "box.lan.", NULL, -1 },
        { ".box", NULL, -1 },
        { "box lan", NULL, -1 },
        { "box.123", NULL, -1 },
        { "[::1", NULL, -1 },
        { "::1]", NULL, -1 },
        { "[]", NULL, -1 },
        { ":::1", NULL, -1 },
        { "fe80::1%eth0", NULL, -1 },
        { "[127.0.0.1]", NULL, -1 },
        { "1:2:3:4:5:6:7:8:9", NULL, -1 },
        { "http://box", NULL, -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[PLACEMENT_HOST_MAX + 1] = "";
        placement_addr_kind kind = PLACEMENT_ADDR_KIND_MAX;
        int rc = placement_addr_parse(cases[i].in, host, sizeof host, &kind);
        if (cases[i].kind < 0) {
            ck_assert_msg(rc == -1, "'%s' accepted", cases[i].in);
        } else {
            ck_assert_msg(rc == 0, "'%s' rejected", cases[i].in);
            ck_assert_str_eq(host, cases[i].host);
            ck_assert_int_eq(kind, cases[i].kind);
        }
    }
    /* label and name lengths */
    char name[300];
    memset(name, 'a', 63);
    name[63] = 0;
    char host[PLACEMENT_HOST_MAX + 1];
    placement_addr_kind kind;
    ck_assert_int_eq(placement_addr_parse(name, host, sizeof host, &kind), 0);
    name[63] = 'a';
    name[64] = 0;
    ck_assert_int_eq(placement_addr_parse(name, host, sizeof host, &kind), -1);
    /* 253 characters: 63.63.63.61 */
    memset(name, 'b', 253);
    name[63] = name[127] = name[191] = '.';
    name[253] = 0;
    ck_assert_int_eq(placement_addr_parse(name, host, sizeof host, &kind), 0);
    name[253] = 'b';
    name[254] = 0;
    ck_assert_int_eq(placement_addr_parse(name, host, sizeof host, &kind), -1);
    /* the output buffer is respected */
    ck_assert_int_eq(placement_addr_parse("edge-a", host, 6, &kind), -1);
    ck_assert_int_eq(placement_addr_parse("edge-a", host, 7, &kind), 0);
}
END_TEST

START_TEST(test_names)
{
    for (int m = 0; m < PLACEMENT_MODE_MAX; m++)
        ck_assert_int_eq(placement_mode_from_name(placement_mode_name((placement_mode)m)), m);
    ck_assert_str_eq(placement_mode_name(PLACEMENT_MODE_SSP), "ssp");
    ck_assert_int_eq(placement_mode_from_name("SYNC"), -1);
    ck_assert_int_eq(placement_mode_from_name(NULL), -1);
    ck_assert_str_eq(placement_mode_name(PLACEMENT_MODE_MAX), "?");
    for (int r = 0; r < PLACEMENT_ROLE_MAX; r++)
        ck_assert_int_eq(placement_role_from_name(placement_role_name((placement_role)r)), r);
    ck_assert_str_eq(placement_role_name(PLACEMENT_ROLE_WORKER), "worker");
    ck_assert_int_eq(placement_role_from_name("server"), -1);
}
END_TEST

START_TEST(test_model_init)
{
    placement p;
    doc_ok("\"model\": \"lenet\", \"mode\": \"sync\", \"epochs\": 1", NULL, NULL, &p);
    cnn_model m;
    char err[512] = "";
    ck_assert_msg(placement_model_init(&p, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(m.nparams, p.nparams);
    ck_assert_uint_eq(m.nparams, 431080);
    snprintf(p.job.model, sizeof p.job.model, "nope");
    ck_assert_int_eq(placement_model_init(&p, &m, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, "t.conf: job.model: ", 19) == 0, "%s", err);
    placement_free(&p);
}
END_TEST

/* ----------------------------------------------------------------- files */

static char tdir[FIXTURES_PATH_MAX];

static void setup_tmp(void)
{
    ck_assert_int_eq(fixtures_tmpdir_make(tdir, sizeof tdir), 0);
}

static void teardown_tmp(void)
{
    fixtures_tmpdir_remove(tdir);
}

START_TEST(test_load_files)
{
    char path[FIXTURES_PATH_MAX], want[FIXTURES_PATH_MAX + 64];
    const char *data = "\"train_images\": \"sub/tr-i.gz\", \"train_labels\": \"/abs/tr-l.gz\"";
    char *t = doc(NULL, data, NULL);
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "p.conf"), 0);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)t, strlen(t), 0), 0);
    free(t);
    placement p;
    char err[FIXTURES_PATH_MAX + 512] = "";
    ck_assert_msg(placement_load(path, &p, err, sizeof err) == 0, "%s", err);
    snprintf(want, sizeof want, "%s/sub/tr-i.gz", tdir);
    ck_assert_str_eq(p.data.train_images, want);
    ck_assert_str_eq(p.data.train_labels, "/abs/tr-l.gz");
    ck_assert_str_eq(p.source, path);
    placement_free(&p);

    /* errors name the path */
    t = doc("\"model\": \"ray\", \"mode\": \"fast\", \"epochs\": 1", NULL, NULL);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)t, strlen(t), 0), 0);
    free(t);
    ck_assert_int_eq(placement_load(path, &p, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: job.mode: expected", path);
    ck_assert_msg(strstr(err, want) == err, "%s", err);

    /* missing file */
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "none.conf"), 0);
    ck_assert_int_eq(placement_load(path, &p, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    ck_assert_str_eq(err, want);
    ck_assert_ptr_null(p.nodes);

    /* too large */
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "big.conf"), 0);
    size_t big = PLACEMENT_FILE_MAX + 1;
    uint8_t *spaces = malloc(big);
    memset(spaces, ' ', big);
    ck_assert_int_eq(fixtures_file_write(path, spaces, big, 0), 0);
    free(spaces);
    ck_assert_int_eq(placement_load(path, &p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "larger than 1048576 bytes"), "%s", err);

    /* a directory */
    ck_assert_int_eq(placement_load(tdir, &p, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, tdir, strlen(tdir)) == 0, "%s", err);
}
END_TEST

/* "auth": the key file's path, relative to the placement's directory. */
START_TEST(test_auth_path)
{
    char path[FIXTURES_PATH_MAX], want[FIXTURES_PATH_MAX + 64], err[FIXTURES_PATH_MAX + 512];
    placement p;
    doc_ok(NULL, NULL, NULL, &p);
    ck_assert_ptr_null(p.auth.key_file);
    uint8_t key[PLACEMENT_KEY_SIZE] = {1};
    ck_assert_int_eq(placement_auth_key(&p, key, NULL, 0, err, sizeof err), 0);
    ck_assert_uint_eq(key[0], 1);
    placement_free(&p);
    parse_ok(AUTH_DOC("{\"key_file\": \"/etc/psd/cluster.key\"}"), &p);
    ck_assert_str_eq(p.auth.key_file, "/etc/psd/cluster.key");
    placement_free(&p);

    const char *t = AUTH_DOC("{\"key_file\": \"keys/cluster.key\"} // the key\n");
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "p.conf"), 0);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)t, strlen(t), 0), 0);
    ck_assert_msg(placement_load(path, &p, err, sizeof err) == 0, "%s", err);
    snprintf(want, sizeof want, "%s/keys/cluster.key", tdir);
    ck_assert_str_eq(p.auth.key_file, want);
    /* the file is not there: the message names it */
    char used[FIXTURES_PATH_MAX + 64];
    ck_assert_int_eq(placement_auth_key(&p, key, used, sizeof used, err, sizeof err), -1);
    ck_assert_str_eq(used, want);
    ck_assert_msg(strstr(err, want) && strstr(err, "No such file") && strstr(err, "psctl keygen"),
                  "%s", err);
    placement_free(&p);
}
END_TEST

/* Write a key file with text and mode; returns its path in out. */
static void key_write(char *out, size_t outlen, const char *name, const char *text, mode_t mode)
{
    ck_assert_int_eq(fixtures_path_join(out, outlen, tdir, name), 0);
    ck_assert_int_eq(fixtures_file_write(out, (const uint8_t *)text, strlen(text), 0), 0);
    ck_assert_int_eq(chmod(out, mode), 0);
}

#define HEX64 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

START_TEST(test_key_files)
{
    char path[FIXTURES_PATH_MAX], err[FIXTURES_PATH_MAX + 512];
    uint8_t key[PLACEMENT_KEY_SIZE];
    key_write(path, sizeof path, "a.key", HEX64 "\n", 0600);
    ck_assert_msg(placement_key_load(path, key, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < PLACEMENT_KEY_SIZE; i++)
        ck_assert_uint_eq(key[i], i);
    key_write(path, sizeof path, "b.key",
              "FFFEFDFCFBFAF9F8F7F6F5F4F3F2F1F0EFEEEDECEBEAE9E8E7E6E5E4E3E2E1E0", 0400);
    ck_assert_msg(placement_key_load(path, key, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(key[0], 0xff);
    ck_assert_uint_eq(key[31], 0xe0);

    /* modes that let anyone else in: refused, with the mode and the fix */
    static const struct {
        mode_t mode;
        const char *who;
    } modes[] = {{0644, "group and others"}, {0640, "its group"}, {0604, "others"},
                 {0660, "its group"}, {0602, "others"}, {0610, "its group"}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        key_write(path, sizeof path, "open.key", HEX64 "\n", modes[i].mode);
        ck_assert_int_eq(placement_key_load(path, key, err, sizeof err), -1);
        char want[2 * FIXTURES_PATH_MAX + 160];
        snprintf(want, sizeof want, "cluster key file %s: mode %04o lets %s read or change the key; "
                 "allow its owner only: chmod 600 %s", path, (unsigned)modes[i].mode,
                 modes[i].who, path);
        ck_assert_str_eq(err, want);
    }

    /* malformed */
    static const char *const bad[] = {
        "", "\n", HEX64 "\n\n", HEX64 " ", " " HEX64, HEX64 "00",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
        "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        HEX64 "\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        key_write(path, sizeof path, "bad.key", bad[i], 0600);
        ck_assert_int_eq(placement_key_load(path, key, err, sizeof err), -1);
        ck_assert_msg(strstr(err, "expected 64 hex digits and at most a newline") &&
                      strstr(err, path), "case %zu: %s", i, err);
    }
    /* a directory; nothing there */
    ck_assert_int_eq(placement_key_load(tdir, key, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "none.key"), 0);
    ck_assert_int_eq(placement_key_load(path, key, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "No such file") && strstr(err, "psctl keygen"), "%s", err);
}
END_TEST

/* placement_key_save: a new file, mode 0600 whatever the umask, what
 * placement_key_load reads back; never over an existing file. */
START_TEST(test_key_save)
{
    char path[FIXTURES_PATH_MAX], err[FIXTURES_PATH_MAX + 512];
    uint8_t key[PLACEMENT_KEY_SIZE], back[PLACEMENT_KEY_SIZE];
    for (int i = 0; i < PLACEMENT_KEY_SIZE; i++)
        key[i] = (uint8_t)(0xa0 + i);
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, tdir, "new.key"), 0);
    mode_t old = umask(0);
    int rc = placement_key_save(path, key, err, sizeof err);
    umask(old);
    ck_assert_msg(rc == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    ck_assert_uint_eq(st.st_size, PLACEMENT_KEY_HEX + 1);
    ck_assert_int_eq(placement_key_load(path, back, err, sizeof err), 0);
    ck_assert_mem_eq(back, key, sizeof key);
    uint8_t *text;
    size_t n;
    ck_assert_int_eq(fixtures_file_read(path, &text, &n), 0);
    ck_assert_int_eq(memcmp(text, "a0a1a2a3", 8), 0);
    ck_assert_uint_eq(text[n - 1], '\n');
    free(text);
    key[0] ^= 1;
    ck_assert_int_eq(placement_key_save(path, key, err, sizeof err), -1);
    ck_assert_msg(strstr(err, path) && strstr(err, "not overwritten"), "%s", err);
    ck_assert_int_eq(placement_key_load(path, back, err, sizeof err), 0);
    ck_assert_uint_eq(back[0], 0xa0); /* the old key is still there */
}
END_TEST

/* systemd's LoadCredential=: the key file's base name in
 * $CREDENTIALS_DIRECTORY wins over the path (which psd's DynamicUser could
 * not read). */
START_TEST(test_key_credentials)
{
    char path[FIXTURES_PATH_MAX], cred[FIXTURES_PATH_MAX], err[FIXTURES_PATH_MAX + 512];
    char used[FIXTURES_PATH_MAX + 64];
    ck_assert_int_eq(fixtures_path_join(cred, sizeof cred, tdir, "creds"), 0);
    ck_assert_int_eq(mkdir(cred, 0700), 0);
    key_write(path, sizeof path, "creds/cluster.key", HEX64, 0400);
    placement p;
    parse_ok(AUTH_DOC("{\"key_file\": \"/nonexistent/psd/cluster.key\"}"), &p);
    uint8_t key[PLACEMENT_KEY_SIZE];
    unsetenv("CREDENTIALS_DIRECTORY");
    ck_assert_int_eq(placement_auth_key(&p, key, used, sizeof used, err, sizeof err), -1);
    ck_assert_str_eq(used, "/nonexistent/psd/cluster.key");
    setenv("CREDENTIALS_DIRECTORY", cred, 1);
    ck_assert_msg(placement_auth_key(&p, key, used, sizeof used, err, sizeof err) == 1, "%s", err);
    ck_assert_str_eq(used, path);
    ck_assert_uint_eq(key[31], 0x1f);
    placement_free(&p);
    /* another base name: not in the directory, the path is read */
    parse_ok(AUTH_DOC("{\"key_file\": \"/nonexistent/other.key\"}"), &p);
    ck_assert_int_eq(placement_auth_key(&p, key, used, sizeof used, err, sizeof err), -1);
    ck_assert_str_eq(used, "/nonexistent/other.key");
    placement_free(&p);
    unsetenv("CREDENTIALS_DIRECTORY");
}
END_TEST

/* The text is read by length: it may end right before an unreadable page. */
START_TEST(test_guard_page)
{
    long pg = sysconf(_SC_PAGESIZE);
    char *mem = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    ck_assert_ptr_ne(mem, MAP_FAILED);
    ck_assert_int_eq(mprotect(mem + pg, (size_t)pg, PROT_NONE), 0);
    char *t = doc(NULL, NULL, NULL);
    size_t len = strlen(t) - 1; /* without the final newline: ends at '}' */
    ck_assert_uint_lt(len, (size_t)pg);
    char *at = mem + pg - len;
    memcpy(at, t, len);
    placement p;
    char err[512] = "";
    ck_assert_msg(placement_parse(at, len, NAME, &p, err, sizeof err) == 0, "%s", err);
    placement_free(&p);
    /* every truncation fails cleanly, ending at the guard page */
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(mem + pg - cut, t, cut);
        ck_assert_int_eq(placement_parse(mem + pg - cut, cut, NAME, &p, err, sizeof err), -1);
        ck_assert_ptr_null(p.nodes);
    }
    /* and so does a comment running into the guard page */
    memcpy(mem + pg - 5, "{} //", 5);
    ck_assert_int_eq(placement_parse(mem + pg - 5, 5, NAME, &p, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "job: missing"), "%s", err);
    free(t);
    munmap(mem, (size_t)pg * 2);
}
END_TEST

/* ----------------------------------------------------- allocation failure */

static long alloc_budget; /* allocations left before failing; < 0: unlimited */
static long alloc_count;

static void *failing_malloc(size_t n)
{
    if (alloc_budget >= 0 && alloc_count++ >= alloc_budget)
        return NULL;
    return malloc(n);
}

/* Fail each allocation in turn: every attempt either fails with a message
 * (and leaks nothing: ASan's leak check runs at exit) or, once the budget
 * covers them all, gives the same result as an unlimited parse. */
START_TEST(test_alloc_failures)
{
    uint8_t *text;
    size_t len;
    ck_assert_int_eq(fixtures_file_read("conf/placement.example.conf", &text, &len), 0);
    cJSON_Hooks hooks = { failing_malloc, free };
    cJSON_InitHooks(&hooks);
    placement p;
    char err[512];
    int done = 0;
    for (alloc_budget = 0; alloc_budget < 100000 && !done; alloc_budget++) {
        alloc_count = 0;
        err[0] = 0;
        int rc = placement_parse((const char *)text, len, "conf/placement.example.conf", &p, err,
                                 sizeof err);
        if (rc == 0) {
            ck_assert_int_eq(p.nnodes, 6);
            ck_assert_str_eq(p.data.test_labels, "conf/data/t10k-labels-idx1-ubyte.gz");
            ck_assert_uint_eq(placement_shard_node(&p, 0)->hi, 287392);
            placement_free(&p);
            done = 1;
        } else {
            ck_assert_msg(err[0] != 0, "no message at budget %ld", alloc_budget);
            ck_assert_ptr_null(p.nodes);
            ck_assert_ptr_null(p.source);
        }
    }
    ck_assert_msg(done, "never succeeded");
    ck_assert_int_gt(alloc_budget, 10); /* the loop did fail some allocations */
    /* the file itself: placement_load's buffer */
    alloc_budget = 0;
    alloc_count = 0;
    ck_assert_int_eq(placement_load("conf/placement.example.conf", &p, err, sizeof err), -1);
    ck_assert_str_eq(err, "conf/placement.example.conf: out of memory");
    cJSON_InitHooks(NULL);
    free(text);
}
END_TEST

Suite *placement_suite(void)
{
    Suite *s = suite_create("placement");
    TCase *tc = tcase_create("files");
    tcase_add_test(tc, test_local_conf);
    tcase_add_test(tc, test_example_conf);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_compression);
    tcase_add_test(tc, test_default_evaluator);
    tcase_add_test(tc, test_all_fields);
    tcase_add_test(tc, test_schedules);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_model_init);
    suite_add_tcase(s, tc);

    TCase *te = tcase_create("errors");
    tcase_add_loop_test(te, test_bad_case, 0, N_BAD_CASES);
    tcase_add_test(te, test_small_error_buffer);
    tcase_add_test(te, test_nul_byte);
    tcase_add_test(te, test_too_many_shards);
    suite_add_tcase(s, te);

    TCase *tr = tcase_create("ranges");
    tcase_add_test(tr, test_ranges_from_shares);
    tcase_add_test(tr, test_ranges_pinned);
    tcase_add_test(tr, test_ranges_explicit);
    suite_add_tcase(s, tr);

    TCase *tx = tcase_create("syntax");
    tcase_add_test(tx, test_comments_strip);
    tcase_add_test(tx, test_comments_in_file);
    tcase_add_test(tx, test_addresses);
    tcase_add_test(tx, test_node_select);
    tcase_add_test(tx, test_node_select_hostname);
    suite_add_tcase(s, tx);

    TCase *tf = tcase_create("io");
    tcase_add_checked_fixture(tf, setup_tmp, teardown_tmp);
    tcase_add_test(tf, test_load_files);
    tcase_add_test(tf, test_auth_path);
    tcase_add_test(tf, test_key_files);
    tcase_add_test(tf, test_key_save);
    tcase_add_test(tf, test_key_credentials);
    tcase_add_test(tf, test_guard_page);
    tcase_add_test(tf, test_alloc_failures);
    tcase_set_timeout(tf, 60);
    suite_add_tcase(s, tf);
    return s;
}
