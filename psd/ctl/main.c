/* main.c - psctl's command line and output.
 *
 *   psctl [--placement FILE] [--timeout MS] status [--json]
 *   psctl [--placement FILE] [--timeout MS] accuracy [--json]
 *   psctl [--placement FILE] [--timeout MS] checkpoint
 *
 * Exit status: 0 when every shard asked answered, 1 when one could not be
 * reached or refused (it is named; the others are still printed) or the
 * placement cannot be read, 2 for a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ctl.h"
#include "placement.h"

#define PSCTL_DEFAULT_PLACEMENT "/etc/psd/placement.conf"
#define PSCTL_DEFAULT_TIMEOUT_MS 3000
#define PSCTL_TIMEOUT_MAX_MS 3600000

typedef enum psctl_cmd {
    PSCTL_CMD_STATUS = 0,
    PSCTL_CMD_ACCURACY,
    PSCTL_CMD_CHECKPOINT,
    PSCTL_CMD_MAX
} psctl_cmd;

static const char *const psctl_cmd_names[PSCTL_CMD_MAX] = {"status", "accuracy", "checkpoint"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: psctl [--placement FILE] [--timeout MS] COMMAND [--json]\n"
            "\n"
            "Ask the parameter-server shards named in the placement file.\n"
            "\n"
            "commands:\n"
            "  status [--json]    every shard's state and the workers it sees; --json\n"
            "                     prints one document {\"shards\": [...], \"unreachable\": [...]}\n"
            "  accuracy [--json]  the accuracy history the workers reported (shard 0)\n"
            "  checkpoint         ask every shard to write a checkpoint now\n"
            "\n"
            "options:\n"
            "  --placement FILE   the placement file (default " PSCTL_DEFAULT_PLACEMENT ")\n"
            "  --timeout MS       connect and reply timeout, 1..%d (default %d)\n"
            "  --json             JSON instead of a table (status, accuracy)\n"
            "  -h, --help         this text\n"
            "\n"
            "All shards are asked at once.  A shard that cannot be reached, or that\n"
            "refuses (e.g. it serves another model), is named, and the others are still\n"
            "printed; with --json it is listed under \"unreachable\" with the error.\n"
            "Exit status: 0 all shards answered, 1 a shard failed or the placement is\n"
            "bad, 2 usage error.\n",
            PSCTL_TIMEOUT_MAX_MS, PSCTL_DEFAULT_TIMEOUT_MS);
}

/* ------------------------------------------------------------ formatting */

static void fmt_duration(char *out, size_t outlen, double s)
{
    if (!isfinite(s) || s < 0) {
        snprintf(out, outlen, "-");
        return;
    }
    if (s >= 1e12) { /* from a shard's JSON: keep the cast below defined */
        snprintf(out, outlen, "%.3gs", s);
        return;
    }
    long t = (long)s;
    if (s < 10)
        snprintf(out, outlen, "%.1fs", s);
    else if (t < 60)
        snprintf(out, outlen, "%lds", t);
    else if (t < 3600)
        snprintf(out, outlen, "%ldm%02lds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(out, outlen, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(out, outlen, "%ldd%02ldh", t / 86400, t / 3600 % 24);
}

static void fmt_bytes(char *out, size_t outlen, double b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outlen, "%.0f B", b);
    else
        snprintf(out, outlen, "%.1f %s", b, units[u]);
}

/* A number member of o, or def if missing or not a number. */
static double json_num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *json_str(const cJSON *o, const char *key, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : def;
}

/* Name a failed shard on stderr. */
static void report_failure(const ctl_result *r)
{
    fprintf(stderr, "psctl: shard %d (%s, %s): %s\n", r->shard, r->node, r->address, r->error);
}

/* ---------------------------------------------------------------- status */

typedef struct psctl_worker {
    const char *id;
    const char *address;  /* from a shard where it is connected, if any */
    int connected;        /* shards it is connected to */
    int seen;             /* shards that know it */
    double step, samples_per_s, staleness;
    double last_push_age; /* smallest; -1 never */
} psctl_worker;

/* Merge the "workers" of every parsed status into ws (capacity cap).
 * Returns the count. */
static size_t workers_merge(cJSON *const *docs, int n, psctl_worker *ws, size_t cap)
{
    size_t nw = 0;
    for (int i = 0; i < n; i++) {
        if (!docs[i])
            continue;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(docs[i], "workers");
        const cJSON *wo;
        cJSON_ArrayForEach(wo, arr)
        {
            const char *id = json_str(wo, "id", NULL);
            if (!id)
                continue;
            psctl_worker *w = NULL;
            for (size_t k = 0; k < nw; k++)
                if (strcmp(ws[k].id, id) == 0)
                    w = &ws[k];
            if (!w) {
                if (nw == cap)
                    continue;
                w = &ws[nw++];
                memset(w, 0, sizeof(*w));
                w->id = id;
                w->address = json_str(wo, "address", "");
                w->last_push_age = -1;
            }
            w->seen++;
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(wo, "connected"))) {
                if (!w->connected)
                    w->address = json_str(wo, "address", w->address);
                w->connected++;
            }
            w->step = fmax(w->step, json_num(wo, "step", 0));
            w->samples_per_s = fmax(w->samples_per_s, json_num(wo, "samples_per_s", 0));
            w->staleness = fmax(w->staleness, json_num(wo, "staleness", 0));
            double age = json_num(wo, "last_push_age_s", -1);
            if (age >= 0 && (w->last_push_age < 0 || age < w->last_push_age))
                w->last_push_age = age;
        }
    }
    return nw;
}

static int print_status_table(const ctl_result *res, cJSON *const *docs, int n)
{
    static const char *const hdr[] = {"SHARD", "NODE", "ADDRESS", "RANGE", "VERSION", "MODE",
                                      "UPTIME", "PUSHES/S", "BYTES IN", "BYTES OUT",
                                      "LAST CHECKPOINT"};
    enum { NCOL = sizeof hdr / sizeof hdr[0] };
    ctl_table t;
    if (ctl_table_init(&t, NCOL, hdr) != 0)
        goto nomem;
    int reachable = 0;
    for (int i = 0; i < n; i++) {
        const ctl_result *r = &res[i];
        char shard[16], range[64], version[32], uptime[32], rate[32], bin[32], bout[32],
            ckpt[96], err[CTL_ERROR_MAX + 16];
        snprintf(shard, sizeof shard, "%d", r->shard);
        if (!docs[i]) {
            snprintf(err, sizeof err, "%s: %s", r->reached ? "FAILED" : "UNREACHABLE",
                     r->error);
            const char *cells[] = {shard, r->node, r->address, err};
            if (ctl_table_add(&t, cells, 4, 3) != 0)
                goto nomem;
            continue;
        }
        reachable++;
        const cJSON *o = docs[i];
        const cJSON *rg = cJSON_GetObjectItemCaseSensitive(o, "range");
        if (cJSON_GetArraySize(rg) == 2)
            snprintf(range, sizeof range, "[%.0f, %.0f)", cJSON_GetArrayItem(rg, 0)->valuedouble,
                     cJSON_GetArrayItem(rg, 1)->valuedouble);
        else
            snprintf(range, sizeof range, "[%llu, %llu)", (unsigned long long)r->lo,
                     (unsigned long long)r->hi);
        snprintf(version, sizeof version, "%.0f", json_num(o, "version", (double)r->version));
        fmt_duration(uptime, sizeof uptime, json_num(o, "uptime_s", -1));
        snprintf(rate, sizeof rate, "%.1f", json_num(o, "pushes_per_s", 0));
        fmt_bytes(bin, sizeof bin, json_num(o, "bytes_in", 0));
        fmt_bytes(bout, sizeof bout, json_num(o, "bytes_out", 0));
        const cJSON *ck = cJSON_GetObjectItemCaseSensitive(o, "last_checkpoint");
        if (cJSON_IsObject(ck)) {
            char age[32];
            fmt_duration(age, sizeof age, json_num(ck, "age_s", -1));
            snprintf(ckpt, sizeof ckpt, "version %.0f, %s ago", json_num(ck, "version", 0), age);
        } else {
            snprintf(ckpt, sizeof ckpt, "never");
        }
        const char *cells[] = {shard, r->node, r->address, range, version,
                               json_str(o, "mode", "?"), uptime, rate, bin, bout, ckpt};
        if (ctl_table_add(&t, cells, NCOL, NCOL) != 0)
            goto nomem;
    }
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);

    size_t cap = 0; /* at most every shard's every worker */
    for (int i = 0; i < n; i++)
        if (docs[i])
            cap += (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(docs[i], "workers"));
    psctl_worker *ws = malloc((cap ? cap : 1) * sizeof(*ws));
    if (!ws)
        goto nomem;
    size_t nw = workers_merge(docs, n, ws, cap);
    printf("\n");
    if (nw == 0) {
        printf("no workers have connected\n");
        free(ws);
        return 0;
    }
    static const char *const whdr[] = {"WORKER", "ADDRESS", "CONNECTED", "STEP", "SAMPLES/S",
                                       "STALENESS", "LAST PUSH"};
    enum { WCOL = sizeof whdr / sizeof whdr[0] };
    if (ctl_table_init(&t, WCOL, whdr) != 0) {
        free(ws);
        goto nomem;
    }
    for (size_t k = 0; k < nw; k++) {
        const psctl_worker *w = &ws[k];
        char conn[32], step[32], rate[32], stale[32], age[48];
        snprintf(conn, sizeof conn, "%d/%d", w->connected, reachable);
        snprintf(step, sizeof step, "%.0f", w->step);
        snprintf(rate, sizeof rate, "%.1f", w->samples_per_s);
        snprintf(stale, sizeof stale, "%.0f", w->staleness);
        if (w->last_push_age < 0) {
            snprintf(age, sizeof age, "never");
        } else {
            char d[32];
            fmt_duration(d, sizeof d, w->last_push_age);
            snprintf(age, sizeof age, "%s ago", d);
        }
        const char *cells[] = {w->id, w->address, conn, step, rate, stale, age};
        if (ctl_table_add(&t, cells, WCOL, WCOL) != 0) {
            free(ws);
            goto nomem;
        }
    }
    free(ws);
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
    return 0;
nomem:
    ctl_table_free(&t);
    fprintf(stderr, "psctl: out of memory\n");
    return -1;
}

/* One {"shard","node","address","error"} per failed result into arr. */
static void unreachable_add(cJSON *arr, const ctl_result *r)
{
    cJSON *u = cJSON_CreateObject();
    if (!u)
        return;
    cJSON_AddNumberToObject(u, "shard", r->shard);
    cJSON_AddStringToObject(u, "node", r->node);
    cJSON_AddStringToObject(u, "address", r->address);
    cJSON_AddStringToObject(u, "error", r->error);
    cJSON_AddItemToArray(arr, u);
}

/* Print a cJSON document (taking it) to stdout.  Returns 0 or -1. */
static int json_print_take(cJSON *doc)
{
    char *txt = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    if (!txt) {
        fprintf(stderr, "psctl: out of memory\n");
        return -1;
    }
    printf("%s\n", txt);
    cJSON_free(txt);
    return 0;
}

/* Parse every successful STATUS into docs[i] (NULL for failures; a reply
 * that is not a JSON object turns the result into a failure). */
static void docs_parse(ctl_result *res, cJSON **docs, int n)
{
    for (int i = 0; i < n; i++) {
        docs[i] = NULL;
        if (!res[i].ok)
            continue;
        docs[i] = cJSON_ParseWithLength(res[i].json, res[i].json_len);
        if (!cJSON_IsObject(docs[i])) {
            cJSON_Delete(docs[i]);
            docs[i] = NULL;
            res[i].ok = 0;
            snprintf(res[i].error, sizeof res[i].error, "the shard's STATUS is not a JSON object");
        }
    }
}

static int cmd_status(ctl_result *res, int n, int json)
{
    cJSON **docs = calloc((size_t)n, sizeof(*docs));
    if (!docs) {
        fprintf(stderr, "psctl: out of memory\n");
        return 1;
    }
    docs_parse(res, docs, n);
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!docs[i]) {
            failed++;
            report_failure(&res[i]);
        }
    int rc = 0;
    if (json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON *sh = doc ? cJSON_AddArrayToObject(doc, "shards") : NULL;
        cJSON *un = doc ? cJSON_AddArrayToObject(doc, "unreachable") : NULL;
        for (int i = 0; sh && un && i < n; i++) {
            if (docs[i]) {
                cJSON_AddItemToArray(sh, docs[i]);
                docs[i] = NULL; /* now owned by doc */
            } else {
                unreachable_add(un, &res[i]);
            }
        }
        rc = json_print_take(doc);
    } else {
        rc = print_status_table(res, docs, n);
    }
    for (int i = 0; i < n; i++)
        cJSON_Delete(docs[i]);
    free(docs);
    if (failed)
        fprintf(stderr, "psctl: %d of %d shards did not answer\n", failed, n);
    return rc != 0 || failed ? 1 : 0;
}

static int cmd_accuracy(ctl_result *res, int json)
{
    cJSON *doc = NULL;
    docs_parse(res, &doc, 1);
    if (!doc)
        report_failure(res);
    const cJSON *hist = doc ? cJSON_GetObjectItemCaseSensitive(doc, "history") : NULL;
    int rc = 0;
    if (json) {
        cJSON *out = cJSON_CreateObject();
        if (out) {
            cJSON_AddNumberToObject(out, "shard", res->shard);
            cJSON *h = cJSON_IsArray(hist) ? cJSON_Duplicate(hist, 1) : cJSON_CreateArray();
            if (h)
                cJSON_AddItemToObject(out, "history", h);
            cJSON *un = cJSON_AddArrayToObject(out, "unreachable");
            if (un && !doc)
                unreachable_add(un, res);
        }
        rc = json_print_take(out);
    } else if (doc) {
        if (cJSON_GetArraySize(hist) == 0) {
            printf("no accuracy reports yet (shard %d)\n", res->shard);
        } else {
            static const char *const hdr[] = {"STEP", "ELAPSED", "ACCURACY", "LOSS", "SAMPLES",
                                              "VERSION", "WORKER"};
            enum { NCOL = sizeof hdr / sizeof hdr[0] };
            ctl_table t;
            rc = ctl_table_init(&t, NCOL, hdr);
            const cJSON *r;
            cJSON_ArrayForEach(r, hist)
            {
                if (rc != 0)
                    break;
                char step[32], el[32], acc[32], loss[32], samples[32], ver[32];
                snprintf(step, sizeof step, "%.0f", json_num(r, "step", 0));
                fmt_duration(el, sizeof el, json_num(r, "elapsed_s", -1));
                double a = json_num(r, "test_acc", NAN), l = json_num(r, "test_loss", NAN);
                if (isfinite(a))
                    snprintf(acc, sizeof acc, "%.2f%%", 100.0 * a);
                else
                    snprintf(acc, sizeof acc, "-");
                if (isfinite(l))
                    snprintf(loss, sizeof loss, "%.4f", l);
                else
                    snprintf(loss, sizeof loss, "-");
                snprintf(samples, sizeof samples, "%.0f", json_num(r, "samples", 0));
                snprintf(ver, sizeof ver, "%.0f", json_num(r, "version", 0));
                const char *cells[] = {step, el, acc, loss, samples, ver,
                                       json_str(r, "worker", "?")};
                rc = ctl_table_add(&t, cells, NCOL, NCOL);
            }
            if (rc == 0)
                ctl_table_print(&t, stdout);
            else
                fprintf(stderr, "psctl: out of memory\n");
            ctl_table_free(&t);
        }
    }
    int ok = doc != NULL;
    cJSON_Delete(doc);
    return rc != 0 || !ok ? 1 : 0;
}

static int cmd_checkpoint(const ctl_result *res, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++) {
        if (res[i].ok) {
            printf("shard %d: checkpoint at version %llu\n", res[i].shard,
                   (unsigned long long)res[i].ckpt_version);
        } else {
            printf("shard %d: FAILED (%s, %s): %s\n", res[i].shard, res[i].node, res[i].address,
                   res[i].error);
            report_failure(&res[i]);
            failed++;
        }
    }
    if (failed)
        fprintf(stderr, "psctl: %d of %d shards did not checkpoint\n", failed, n);
    return failed ? 1 : 0;
}

/* ------------------------------------------------------------------ main */

enum { OPT_PLACEMENT = 256, OPT_TIMEOUT, OPT_JSON };

static const struct option long_opts[] = {
    {"placement", required_argument, NULL, OPT_PLACEMENT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parse a timeout in ms: digits only, 1..PSCTL_TIMEOUT_MAX_MS.  0 or -1. */
static int timeout_parse(const char *s, int *out)
{
    if (!*s)
        return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > PSCTL_TIMEOUT_MAX_MS)
            return -1;
    }
    if (v < 1)
        return -1;
    *out = (int)v;
    return 0;
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("psctl: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    fputs("(psctl --help for usage)\n", stderr);
    return 2;
}

int main(int argc, char **argv)
{
    const char *placement_path = PSCTL_DEFAULT_PLACEMENT;
    int timeout_ms = PSCTL_DEFAULT_TIMEOUT_MS, json = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_PLACEMENT:
            if (!*optarg)
                return usage_error("--placement: empty path%s", "");
            placement_path = optarg;
            break;
        case OPT_TIMEOUT:
            if (timeout_parse(optarg, &timeout_ms) != 0)
                return usage_error("--timeout: expected milliseconds 1..3600000, got \"%s\"",
                                   optarg);
            break;
        case OPT_JSON: json = 1; break;
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("no command given (status, accuracy or checkpoint)%s", "");
    psctl_cmd cmd = PSCTL_CMD_MAX;
    for (int i = 0; i < PSCTL_CMD_MAX; i++)
        if (strcmp(argv[optind], psctl_cmd_names[i]) == 0)
            cmd = (psctl_cmd)i;
    if (cmd == PSCTL_CMD_MAX)
        return usage_error("unknown command '%s' (status, accuracy or checkpoint)", argv[optind]);
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    if (json && cmd == PSCTL_CMD_CHECKPOINT)
        return usage_error("--json is not an option of checkpoint%s", "");

    signal(SIGPIPE, SIG_IGN);
    char err[8192];
    placement pl;
    if (placement_load(placement_path, &pl, err, sizeof err) != 0) {
        fprintf(stderr, "psctl: %s\n", err);
        return 1;
    }
    int n = cmd == PSCTL_CMD_ACCURACY ? 1 : pl.nshards;
    int *shards = calloc((size_t)n, sizeof(*shards));
    ctl_result *res = calloc((size_t)n, sizeof(*res));
    if (!shards || !res) {
        fprintf(stderr, "psctl: out of memory\n");
        free(shards);
        free(res);
        placement_free(&pl);
        return 1;
    }
    for (int i = 0; i < n; i++)
        shards[i] = i; /* accuracy: the history lives on shard 0 */
    ctl_req req = cmd == PSCTL_CMD_CHECKPOINT ? CTL_REQ_CHECKPOINT : CTL_REQ_STATUS;
    int rc;
    if (ctl_query_run(&pl, shards, n, req, timeout_ms, res, err, sizeof err) != 0) {
        fprintf(stderr, "psctl: %s\n", err);
        rc = 1;
    } else if (cmd == PSCTL_CMD_STATUS) {
        rc = cmd_status(res, n, json);
    } else if (cmd == PSCTL_CMD_ACCURACY) {
        rc = cmd_accuracy(res, json);
    } else {
        rc = cmd_checkpoint(res, n);
    }
    for (int i = 0; i < n; i++)
        ctl_result_free(&res[i]);
    free(res);
    free(shards);
    placement_free(&pl);
    fflush(stdout);
    return rc;
}
