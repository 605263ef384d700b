/* main.c - psctl's command line and output.
 *
 *   psctl [--placement FILE] [--timeout MS] status [--json]
 *   psctl [--placement FILE] [--timeout MS] accuracy [--json]
 *   psctl [--placement FILE] [--timeout MS] checkpoint
 *   psctl [--placement FILE] [--timeout MS] export [--json] FILE
 *   psctl [--placement FILE] eval FILE [--test-images F --test-labels F]
 *                                      [--threads N] [--json]
 *   psctl keygen FILE
 *
 * Exit status: 0 when every shard asked answered, 1 when one could not be
 * reached or refused (it is named; the others are still printed) or the
 * placement cannot be read, 2 for a usage error.  export writes nothing
 * unless every shard answered; eval asks no shard (it reads a model file
 * written by export, common/modelfile.h).  With "auth" in the placement
 * psctl reads the cluster key and every exchange is authenticated and
 * sealed (docs/security.md); keygen writes a new key file.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cnn.h"
#include "ctl.h"
#include "dataset.h"
#include "kernels.h"
#include "modelfile.h"
#include "placement.h"
#include "secure.h"
#include "util.h"

#define PSCTL_DEFAULT_PLACEMENT "/etc/psd/placement.conf"
#define PSCTL_DEFAULT_TIMEOUT_MS 3000
#define PSCTL_TIMEOUT_MAX_MS 3600000
#define PSCTL_EVAL_BATCH 256 /* samples per forward pass in eval */

typedef enum psctl_cmd {
    PSCTL_CMD_STATUS = 0,
    PSCTL_CMD_ACCURACY,
    PSCTL_CMD_CHECKPOINT,
    PSCTL_CMD_EXPORT,
    PSCTL_CMD_EVAL,
    PSCTL_CMD_KEYGEN,
    PSCTL_CMD_MAX
} psctl_cmd;

static const char *const psctl_cmd_names[PSCTL_CMD_MAX] = {"status", "accuracy", "checkpoint",
                                                           "export", "eval", "keygen"};

#define PSCTL_CMD_LIST "status, accuracy, checkpoint, export, eval or keygen"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: psctl [--placement FILE] [--timeout MS] COMMAND [ARGS] [--json]\n"
            "\n"
            "Ask the parameter-server shards named in the placement file, or evaluate\n"
            "a model file.\n"
            "\n"
            "commands:\n"
            "  status [--json]    every shard's state, the job's state and the workers it\n"
            "                     sees; --json prints one document\n"
            "                     {\"job\": ..., \"shards\": [...], \"unreachable\": [...]}\n"
            "  accuracy [--json]  the accuracy history the workers reported (shard 0)\n"
            "  checkpoint         ask every shard to write a checkpoint now\n"
            "  export FILE        pull every shard and write the whole model to FILE\n"
            "  eval FILE          test accuracy of a model file: --test-images F\n"
            "                     --test-labels F (default: the placement's test set),\n"
            "                     [--threads N]; prints test_acc=NN.NN\n"
            "  keygen FILE        write a new random cluster key to FILE (mode 0600)\n"
            "\n"
            "options:\n"
            "  --placement FILE   the placement file (default " PSCTL_DEFAULT_PLACEMENT ")\n"
            "  --timeout MS       connect and reply timeout, 1..%d (default %d)\n"
            "  --json             JSON instead of text (status, accuracy, export, eval)\n"
            "  -h, --help         this text; psctl COMMAND --help: that command's\n"
            "\n"
            "All shards are asked at once.  A shard that cannot be reached, or that\n"
            "refuses (e.g. it serves another model), is named, and the others are still\n"
            "printed; with --json it is listed under \"unreachable\" with the error.\n"
            "With \"auth\" in the placement psctl proves it holds the cluster key and\n"
            "every exchange is encrypted and authenticated (docs/security.md).\n"
            "Exit status: 0 all shards answered, 1 a shard failed or the placement is\n"
            "bad, 2 usage error.\n",
            PSCTL_TIMEOUT_MAX_MS, PSCTL_DEFAULT_TIMEOUT_MS);
}

/* psctl COMMAND --help */
static void usage_cmd(FILE *f, psctl_cmd cmd)
{
    switch (cmd) {
    case PSCTL_CMD_STATUS:
        fputs("usage: psctl [--placement FILE] [--timeout MS] status [--json]\n"
              "\n"
              "Every shard's range, version, mode, uptime, traffic and last checkpoint,\n"
              "the job's state (\"job: running\", or \"job: finished (REASON) at TIME,\n"
              "version V\": finished as soon as one shard says so, and which shards\n"
              "disagree), and every worker the shards know.  Shards too old to report\n"
              "the job's state print no job line.  --json prints\n"
              "{\"job\": {...} or null, \"shards\": [STATUS of each shard],\n"
              " \"unreachable\": [{\"shard\", \"node\", \"address\", \"error\"}]}.\n"
              "Exit status: 0 every shard answered, 1 one did not (it is named).\n",
              f);
        break;
    case PSCTL_CMD_ACCURACY:
        fputs("usage: psctl [--placement FILE] [--timeout MS] accuracy [--json]\n"
              "\n"
              "The test accuracy the evaluating workers reported to shard 0, one line\n"
              "per report.  --json prints {\"shard\", \"history\": [...], \"unreachable\"}.\n",
              f);
        break;
    case PSCTL_CMD_CHECKPOINT:
        fputs("usage: psctl [--placement FILE] [--timeout MS] checkpoint\n"
              "\n"
              "Ask every shard to write its checkpoint now; prints the version each\n"
              "wrote.  Exit status 1 if a shard failed (it is named).\n",
              f);
        break;
    case PSCTL_CMD_EXPORT:
        fputs("usage: psctl [--placement FILE] [--timeout MS] export [--json] FILE\n"
              "\n"
              "Pull every shard's whole range of the parameters (as an operator:\n"
              "training goes on), check that the shards serve one model and that their\n"
              "ranges tile [0, nparams) exactly, and write the merged model to FILE: the\n"
              "model's name and layer layout, the input normalisation of the placement's\n"
              "data (data.mean/std), every shard's range and version, the creation time,\n"
              "and the parameters, behind a CRC-32 (docs/modelfile.md).  FILE is written\n"
              "atomically (temporary file in its directory, fsync, rename).\n"
              "\n"
              "A shard that cannot be reached or refuses is named and nothing is written.\n"
              "Shards at different versions are exported with a warning: in async and\n"
              "ssp training each shard counts its own updates.\n"
              "\n"
              "  --json        a JSON summary instead of the line \"exported MODEL (N\n"
              "                parameters, versions V0/V1/...) to FILE\": {\"exported\",\n"
              "                \"file\", \"model\", \"nparams\", \"bytes\", \"created_unix\",\n"
              "                \"versions_equal\", \"shards\": [...], \"unreachable\": [...]}\n"
              "  --timeout MS  for connecting and the whole transfer (default 3000)\n"
              "\n"
              "Exit status: 0 written; 1 a shard failed, the shards do not tile the\n"
              "model, or FILE cannot be written; 2 usage error.\n",
              f);
        break;
    case PSCTL_CMD_EVAL:
        fputs("usage: psctl [--placement FILE] eval FILE [--test-images F --test-labels F]\n"
              "                                     [--threads N] [--json]\n"
              "\n"
              "Load a model file written by psctl export, check it (magic, format, CRC,\n"
              "header against the built-in model), load the IDX test set (plain or .gz),\n"
              "normalise it with the mean/std recorded in the file, and print\n"
              "\n"
              "  model=lenet nparams=431080 n=10000 correct=9876 test_loss=0.0412 test_acc=98.76\n"
              "\n"
              "(test_acc in percent, test_loss the mean negative log-likelihood).\n"
              "\n"
              "  --test-images F, --test-labels F  the test set (both or neither);\n"
              "                default: data.test_images/test_labels of the placement\n"
              "                (--placement, or " PSCTL_DEFAULT_PLACEMENT ")\n"
              "  --threads N   threads splitting each batch, 1..64 (default 1)\n"
              "  --json        one JSON object: {\"file\", \"model\", \"nparams\", \"n\",\n"
              "                \"correct\", \"test_acc\", \"test_loss\", \"test_images\",\n"
              "                \"test_labels\", \"simd\", \"threads\", \"seconds\", \"shards\"}\n"
              "\n"
              "Exit status: 0 evaluated; 1 the model file or the test set is missing,\n"
              "corrupt or does not fit the model (e.g. images of another size); 2 usage.\n",
              f);
        break;
    case PSCTL_CMD_KEYGEN:
        fputs("usage: psctl keygen FILE\n"
              "\n"
              "Write a new random 32-byte cluster key to FILE as 64 hex digits and a\n"
              "newline, with mode 0600; an existing FILE is never overwritten.  Copy the\n"
              "file to every box (keep it mode 0600, owned by whoever runs psd/workerd)\n"
              "and name it in the placement: \"auth\": {\"key_file\": \"FILE\"}\n"
              "(docs/security.md).\n"
              "\n"
              "Exit status: 0 written; 1 FILE exists or cannot be written; 2 usage.\n",
              f);
        break;
    default: usage(f); break;
    }
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

/* Thousands separators: 431080 -> "431,080". */
static void fmt_count(char *out, size_t outlen, unsigned long long v)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", v);
    char buf[48];
    int j = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
    snprintf(out, outlen, "%s", buf);
}

/* ------------------------------------------------------------- job state */

/* The job's state merged over the shards' STATUS "job" objects (absent on
 * shards older than the field).  The job counts as finished as soon as one
 * shard says so; the first such shard gives the reason, time and version. */
typedef struct psctl_job {
    int reported;          /* shards whose STATUS has a "job" with a "state" */
    int finished;          /* of those, how many say "finished" */
    const cJSON *job;      /* the "job" object shown (first finished, else first) */
    int job_shard;         /* its shard */
    const char *state;     /* its state */
    int agree;             /* every reporting shard says the same state */
} psctl_job;

static const cJSON *job_of(const cJSON *doc)
{
    const cJSON *j = doc ? cJSON_GetObjectItemCaseSensitive(doc, "job") : NULL;
    const cJSON *st = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "state") : NULL;
    return cJSON_IsString(st) && st->valuestring ? j : NULL;
}

static void job_merge(const ctl_result *res, cJSON *const *docs, int n, psctl_job *out)
{
    memset(out, 0, sizeof(*out));
    out->agree = 1;
    const char *first = NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *j = job_of(docs[i]);
        if (!j)
            continue;
        const char *st = json_str(j, "state", "");
        int fin = strcmp(st, "finished") == 0;
        if (!first)
            first = st;
        else if (strcmp(first, st) != 0)
            out->agree = 0;
        if (!out->job || (fin && !out->finished)) {
            out->job = j;
            out->job_shard = res[i].shard;
            out->state = st;
        }
        out->reported++;
        out->finished += fin;
    }
}

/* "2026-11-26 12:00:01" (local time) of a Unix time from a shard's JSON. */
static void fmt_unix_time(char *out, size_t outlen, double t)
{
    struct tm tm;
    time_t tt = (time_t)(isfinite(t) && t >= 0 && t <= 1e11 ? t : 0);
    if (!isfinite(t) || t < 0 || t > 1e11 || !localtime_r(&tt, &tm) ||
        strftime(out, outlen, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(out, outlen, "%.0f (unix time)", isfinite(t) ? t : 0);
}

static void line_append(char *line, size_t linelen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append to the NUL-terminated line (cut at linelen). */
static void line_append(char *line, size_t linelen, const char *fmt, ...)
{
    size_t len = strlen(line);
    if (len + 1 >= linelen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + len, linelen - len, fmt, ap);
    va_end(ap);
}

/* The job line of `psctl status`, or "" when no shard reports the job's
 * state (older shards):
 *   job: running
 *   job: finished (all 2 workers done) at 2026-11-26 12:00:01, version 1234
 * followed, when the shards disagree, by which shard says what:
 *   ... (shards disagree: finished on 0; running on 1; no job state from 2) */
static void job_line(char *line, size_t linelen, const ctl_result *res, cJSON *const *docs,
                     int n)
{
    line[0] = '\0';
    psctl_job jm;
    job_merge(res, docs, n, &jm);
    if (!jm.reported)
        return;
    const cJSON *j = jm.job;
    line_append(line, linelen, "job: %s", jm.state);
    const char *reason = json_str(j, "reason", NULL);
    if (reason && *reason)
        line_append(line, linelen, " (%s)", reason);
    double fin = json_num(j, "finished_unix", NAN);
    if (isfinite(fin)) {
        char t[64];
        fmt_unix_time(t, sizeof t, fin);
        line_append(line, linelen, " at %s", t);
    }
    double v = json_num(j, "version", NAN);
    if (jm.finished && isfinite(v))
        line_append(line, linelen, ", version %.0f", v);
    int silent = 0; /* reachable shards without the field */
    for (int i = 0; i < n; i++)
        silent += docs[i] && !job_of(docs[i]);
    if (jm.agree && !silent)
        return;
    line_append(line, linelen, " (shards disagree: ");
    int groups = 0;
    for (int i = 0; i < n; i++) { /* one group per distinct state, in shard order */
        const cJSON *ji = job_of(docs[i]);
        if (!ji)
            continue;
        const char *st = json_str(ji, "state", "");
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) {
            const cJSON *jk = job_of(docs[k]);
            seen = jk && strcmp(json_str(jk, "state", ""), st) == 0;
        }
        if (seen)
            continue;
        line_append(line, linelen, "%s%s on ", groups++ ? "; " : "", st);
        int first = 1;
        for (int k = i; k < n; k++) {
            const cJSON *jk = job_of(docs[k]);
            if (jk && strcmp(json_str(jk, "state", ""), st) == 0) {
                line_append(line, linelen, "%s%d", first ? "" : ", ", res[k].shard);
                first = 0;
            }
        }
    }
    if (silent) {
        line_append(line, linelen, "%sno job state from ", groups ? "; " : "");
        int first = 1;
        for (int i = 0; i < n; i++)
            if (docs[i] && !job_of(docs[i])) {
                line_append(line, linelen, "%s%d", first ? "" : ", ", res[i].shard);
                first = 0;
            }
    }
    line_append(line, linelen, ")");
}

/* The merged "job" of `psctl status --json`: {"state", "reason",
 * "finished_unix", "version" (of the shard shown), "shard" (which one),
 * "agree", "shards": {"<state>": [shard, ...], ...}}, or JSON null when no
 * shard reports the job's state.  NULL only when out of memory. */
static cJSON *job_json(const ctl_result *res, cJSON *const *docs, int n)
{
    psctl_job jm;
    job_merge(res, docs, n, &jm);
    if (!jm.reported)
        return cJSON_CreateNull();
    cJSON *o = cJSON_Duplicate(jm.job, 1);
    if (!o)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(o, "shard");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "agree");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "shards");
    cJSON_AddNumberToObject(o, "shard", jm.job_shard);
    cJSON_AddBoolToObject(o, "agree", jm.agree);
    cJSON *by = cJSON_AddObjectToObject(o, "shards");
    for (int i = 0; by && i < n; i++) {
        const cJSON *j = job_of(docs[i]);
        const char *st = j ? json_str(j, "state", "") : "unreported";
        if (!docs[i])
            continue;
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(by, st);
        if (!arr)
            arr = cJSON_AddArrayToObject(by, st);
        if (arr)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(res[i].shard));
    }
    return o;
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
    char jl[2048];
    job_line(jl, sizeof jl, res, docs, n);
    if (jl[0])
        printf("%s\n\n", jl);
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
        cJSON *job = job_json(res, docs, n);
        if (!job || !doc || !cJSON_AddItemToObject(doc, "job", job)) {
            cJSON_Delete(job);
            cJSON_Delete(doc);
            doc = NULL; /* json_print_take reports it */
        }
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

/* ---------------------------------------------------------------- export */

/* The --json summary of export (also on failure: "exported": false). */
static void export_json(const placement *pl, const ctl_result *res, int n, const char *file,
                        int written, const char *error, size_t bytes, int64_t created,
                        int versions_equal)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddBoolToObject(o, "exported", written);
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddStringToObject(o, "model", pl->job.model);
        cJSON_AddNumberToObject(o, "nparams", (double)pl->nparams);
        if (written) {
            cJSON_AddNumberToObject(o, "bytes", (double)bytes);
            cJSON_AddNumberToObject(o, "created_unix", (double)created);
            cJSON_AddBoolToObject(o, "versions_equal", versions_equal);
        } else {
            cJSON_AddStringToObject(o, "error", error);
        }
        cJSON *sh = cJSON_AddArrayToObject(o, "shards");
        cJSON *un = cJSON_AddArrayToObject(o, "unreachable");
        for (int i = 0; sh && un && i < n; i++) {
            if (!res[i].ok) {
                unreachable_add(un, &res[i]);
                continue;
            }
            cJSON *so = cJSON_CreateObject();
            if (!so)
                continue;
            cJSON_AddNumberToObject(so, "shard", res[i].shard);
            cJSON_AddStringToObject(so, "node", res[i].node);
            cJSON_AddStringToObject(so, "address", res[i].address);
            cJSON_AddNumberToObject(so, "lo", (double)res[i].lo);
            cJSON_AddNumberToObject(so, "hi", (double)res[i].hi);
            cJSON_AddNumberToObject(so, "version", (double)res[i].weights_version);
            cJSON_AddItemToArray(sh, so);
        }
    }
    json_print_take(o);
}

/* Check that the pulled shards serve the placement's model and tile
 * [0, nparams) in shard order.  Returns 0 or -1 with a message. */
static int export_check(const placement *pl, const ctl_result *res, int n, char *err,
                        size_t errlen)
{
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const ctl_result *r = &res[i];
        if (strcmp(r->model, pl->job.model) != 0 || r->nparams != pl->nparams) {
            snprintf(err, errlen,
                     "shard %d (%s, %s) serves \"%s\" with %llu parameters, the placement's "
                     "model is \"%s\" with %zu",
                     r->shard, r->node, r->address, r->model, (unsigned long long)r->nparams,
                     pl->job.model, pl->nparams);
            return -1;
        }
        if (r->lo != at) {
            snprintf(err, errlen,
                     "the shards do not tile [0, %zu): shard %d (%s, %s) holds [%llu, %llu), "
                     "but %s %llu",
                     pl->nparams, r->shard, r->node, r->address, (unsigned long long)r->lo,
                     (unsigned long long)r->hi,
                     i == 0 ? "the first range must start at" : "the previous shard's ends at",
                     (unsigned long long)at);
            return -1;
        }
        at = r->hi;
    }
    if (at != pl->nparams) {
        snprintf(err, errlen,
                 "the shards do not tile [0, %zu): the last one (shard %d) ends at %llu",
                 pl->nparams, res[n - 1].shard, (unsigned long long)at);
        return -1;
    }
    return 0;
}

static int cmd_export(const placement *pl, const ctl_result *res, int n, const char *file,
                      int json)
{
    char err[8192];
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!res[i].ok) {
            report_failure(&res[i]);
            failed++;
        }
    if (failed) {
        snprintf(err, sizeof err, "%d of %d shards did not answer: nothing written to %s",
                 failed, n, file);
        goto fail;
    }
    if (export_check(pl, res, n, err, sizeof err) != 0)
        goto fail;

    modelfile mf;
    memset(&mf, 0, sizeof mf);
    snprintf(mf.model, sizeof mf.model, "%s", pl->job.model);
    mf.nparams = pl->nparams;
    mf.mean = pl->data.mean;
    mf.std = pl->data.std;
    mf.created_unix = (int64_t)time(NULL);
    mf.nshards = (uint32_t)n;
    mf.shards = calloc((size_t)n, sizeof(*mf.shards));
    mf.params = malloc(pl->nparams * sizeof(float));
    if (!mf.shards || !mf.params) {
        free(mf.shards);
        free(mf.params);
        snprintf(err, sizeof err, "out of memory for %zu parameters", pl->nparams);
        goto fail;
    }
    int versions_equal = 1;
    for (int i = 0; i < n; i++) {
        const ctl_result *r = &res[i];
        memcpy(mf.params + r->lo, r->weights, (size_t)(r->hi - r->lo) * sizeof(float));
        mf.shards[i].shard = (uint32_t)r->shard;
        snprintf(mf.shards[i].node, sizeof mf.shards[i].node, "%s", r->node);
        mf.shards[i].lo = r->lo;
        mf.shards[i].hi = r->hi;
        mf.shards[i].version = r->weights_version;
        if (r->weights_version != res[0].weights_version)
            versions_equal = 0;
    }
    size_t bytes = 0;
    int rc = modelfile_save(file, &mf, &bytes, err, sizeof err);
    free(mf.shards);
    free(mf.params);
    if (rc != 0)
        goto fail;

    char versions[512] = "";
    if (n <= 8) {
        for (int i = 0; i < n; i++)
            line_append(versions, sizeof versions, "%s%llu", i ? "/" : "",
                        (unsigned long long)res[i].weights_version);
    } else {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < n; i++) {
            lo = res[i].weights_version < lo ? res[i].weights_version : lo;
            hi = res[i].weights_version > hi ? res[i].weights_version : hi;
        }
        snprintf(versions, sizeof versions, "%llu..%llu", (unsigned long long)lo,
                 (unsigned long long)hi);
    }
    if (!versions_equal)
        fprintf(stderr,
                "psctl: warning: the shards are at different versions (%s)%s\n", versions,
                pl->job.mode == PLACEMENT_MODE_SYNC
                    ? ": in sync training a step was being applied while exporting; export "
                      "again for one step"
                    : ": usual in async/ssp training, where each shard counts its own "
                      "updates");
    if (json) {
        export_json(pl, res, n, file, 1, NULL, bytes, mf.created_unix, versions_equal);
    } else {
        char np[48];
        fmt_count(np, sizeof np, pl->nparams);
        printf("exported %s (%s parameters, version%s %s) to %s\n", pl->job.model, np,
               n > 1 ? "s" : "", versions, file);
    }
    return 0;
fail:
    fprintf(stderr, "psctl: export: %s\n", err);
    if (json)
        export_json(pl, res, n, file, 0, err, 0, 0, 0);
    return 1;
}

/* ------------------------------------------------------------------ eval */

typedef struct psctl_eval_opts {
    const char *file;
    const char *images, *labels; /* NULL: from the placement */
    const char *placement_path;
    int threads;
    int json;
} psctl_eval_opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmd_eval(const psctl_eval_opts *o)
{
    char err[8192];
    modelfile mf;
    cnn_model m;
    placement pl;
    dataset ds;
    cnn_engine *eng = NULL;
    float *x = NULL;
    uint8_t *y = NULL;
    uint32_t *idx = NULL;
    int have_pl = 0, have_ds = 0, rc = 1;
    memset(&pl, 0, sizeof pl);
    memset(&ds, 0, sizeof ds);
    if (modelfile_load(o->file, &mf, &m, err, sizeof err) != 0) {
        fprintf(stderr, "psctl: eval: %s\n", err);
        return 1;
    }
    const char *images = o->images, *labels = o->labels;
    if (!images) {
        if (placement_load(o->placement_path, &pl, err, sizeof err) != 0) {
            fprintf(stderr,
                    "psctl: eval: no test set given (--test-images F --test-labels F), and "
                    "the placement cannot be read: %s\n",
                    err);
            goto out;
        }
        have_pl = 1;
        images = pl.data.test_images;
        labels = pl.data.test_labels;
        if (!images || !labels) {
            fprintf(stderr,
                    "psctl: eval: no test set given (--test-images F --test-labels F), and "
                    "the placement %s has no data.test_images/test_labels\n",
                    o->placement_path);
            goto out;
        }
    }
    if (kern_init(err, sizeof err) != 0) {
        fprintf(stderr, "psctl: eval: %s\n", err);
        goto out;
    }
    if (dataset_load(&ds, images, labels, mf.mean, mf.std, err, sizeof err) != 0) {
        fprintf(stderr, "psctl: eval: %s\n", err);
        goto out;
    }
    have_ds = 1;
    if (m.in_c != 1 || ds.rows != m.in_h || ds.cols != m.in_w) {
        fprintf(stderr, "psctl: eval: %s: images are %dx%d, model %s takes %dx%dx%d\n", images,
                ds.rows, ds.cols, m.name, m.in_c, m.in_h, m.in_w);
        goto out;
    }
    if (ds.n == 0) {
        fprintf(stderr, "psctl: eval: %s: no images\n", images);
        goto out;
    }
    const kern_ops *k = kern_active();
    eng = cnn_engine_new(&m, k, o->threads, PSCTL_EVAL_BATCH, err, sizeof err);
    size_t in = (size_t)m.in_c * m.in_h * m.in_w;
    x = malloc(PSCTL_EVAL_BATCH * in * sizeof(float));
    y = malloc(PSCTL_EVAL_BATCH);
    idx = malloc(PSCTL_EVAL_BATCH * sizeof(*idx));
    if (!eng || !x || !y || !idx) {
        fprintf(stderr, "psctl: eval: %s\n", eng ? "out of memory" : err);
        goto out;
    }
    double t0 = now_s(), loss_sum = 0;
    size_t correct = 0;
    for (size_t off = 0; off < ds.n; off += PSCTL_EVAL_BATCH) {
        size_t cnt = ds.n - off < PSCTL_EVAL_BATCH ? ds.n - off : PSCTL_EVAL_BATCH;
        for (size_t i = 0; i < cnt; i++)
            idx[i] = (uint32_t)(off + i);
        dataset_gather(&ds, idx, cnt, x, y);
        double l = 0;
        size_t c = 0;
        cnn_engine_eval(eng, mf.params, x, y, cnt, &l, &c);
        loss_sum += l;
        correct += c;
    }
    double secs = now_s() - t0;
    double acc = 100.0 * (double)correct / (double)ds.n;
    double loss = loss_sum / (double)ds.n;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        if (j) {
            cJSON_AddStringToObject(j, "file", o->file);
            cJSON_AddStringToObject(j, "model", m.name);
            cJSON_AddNumberToObject(j, "nparams", (double)m.nparams);
            cJSON_AddNumberToObject(j, "n", (double)ds.n);
            cJSON_AddNumberToObject(j, "correct", (double)correct);
            cJSON_AddNumberToObject(j, "test_acc", acc);
            if (isfinite(loss))
                cJSON_AddNumberToObject(j, "test_loss", loss);
            else
                cJSON_AddNullToObject(j, "test_loss"); /* a diverged model */
            cJSON_AddStringToObject(j, "test_images", images);
            cJSON_AddStringToObject(j, "test_labels", labels);
            cJSON_AddStringToObject(j, "simd", k->name);
            cJSON_AddNumberToObject(j, "threads", o->threads);
            cJSON_AddNumberToObject(j, "seconds", secs);
            cJSON_AddNumberToObject(j, "created_unix", (double)mf.created_unix);
            cJSON *sh = cJSON_AddArrayToObject(j, "shards");
            for (uint32_t i = 0; sh && i < mf.nshards; i++) {
                cJSON *so = cJSON_CreateObject();
                if (!so)
                    break;
                cJSON_AddNumberToObject(so, "shard", mf.shards[i].shard);
                cJSON_AddStringToObject(so, "node", mf.shards[i].node);
                cJSON_AddNumberToObject(so, "lo", (double)mf.shards[i].lo);
                cJSON_AddNumberToObject(so, "hi", (double)mf.shards[i].hi);
                cJSON_AddNumberToObject(so, "version", (double)mf.shards[i].version);
                cJSON_AddItemToArray(sh, so);
            }
        }
        if (json_print_take(j) != 0)
            goto out;
    } else {
        printf("model=%s nparams=%zu n=%zu correct=%zu test_loss=%.4f test_acc=%.2f\n", m.name,
               m.nparams, ds.n, correct, loss, acc);
    }
    rc = 0;
out:
    free(idx);
    free(y);
    free(x);
    cnn_engine_free(eng);
    if (have_ds)
        dataset_free(&ds);
    if (have_pl)
        placement_free(&pl);
    modelfile_free(&mf);
    return rc;
}

/* ------------------------------------------------------------------ main */

enum {
    OPT_PLACEMENT = 256,
    OPT_TIMEOUT,
    OPT_JSON,
    OPT_TEST_IMAGES,
    OPT_TEST_LABELS,
    OPT_THREADS
};

static const struct option long_opts[] = {
    {"placement", required_argument, NULL, OPT_PLACEMENT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"test-images", required_argument, NULL, OPT_TEST_IMAGES},
    {"test-labels", required_argument, NULL, OPT_TEST_LABELS},
    {"threads", required_argument, NULL, OPT_THREADS},
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

/* keygen FILE: a new random key, mode 0600, never over an existing file. */
static int cmd_keygen(const char *file)
{
    uint8_t key[PLACEMENT_KEY_SIZE];
    char err[4400];
    if (secure_init() != 0) {
        fprintf(stderr, "psctl: keygen: cannot initialise libsodium\n");
        return 1;
    }
    secure_random(key, sizeof key);
    int rc = placement_key_save(file, key, err, sizeof err);
    secure_wipe(key, sizeof key);
    if (rc != 0) {
        fprintf(stderr, "psctl: keygen: %s\n", err);
        return 1;
    }
    printf("wrote a new cluster key to %s (mode 0600); copy it to every box and name it in the "
           "placement: \"auth\": {\"key_file\": \"%s\"}\n",
           file, file);
    return 0;
}

/* Ask every shard (or shard 0 for accuracy) and print the answer. */
static int run_query(psctl_cmd cmd, const char *placement_path, int timeout_ms, int json,
                     const char *file)
{
    char err[8192];
    placement pl;
    if (placement_load(placement_path, &pl, err, sizeof err) != 0) {
        fprintf(stderr, "psctl: %s\n", err);
        return 1;
    }
    uint8_t key[PLACEMENT_KEY_SIZE];
    int have_key = placement_auth_key(&pl, key, NULL, 0, err, sizeof err);
    if (have_key < 0) {
        fprintf(stderr, "psctl: %s\n", err);
        placement_free(&pl);
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
    ctl_req req = cmd == PSCTL_CMD_CHECKPOINT ? CTL_REQ_CHECKPOINT
                  : cmd == PSCTL_CMD_EXPORT   ? CTL_REQ_PULL
                                              : CTL_REQ_STATUS;
    int rc;
    int qrc = ctl_query_run(&pl, shards, n, req, timeout_ms, have_key ? key : NULL, res, err,
                            sizeof err);
    secure_wipe(key, sizeof key);
    if (qrc != 0) {
        fprintf(stderr, "psctl: %s\n", err);
        rc = 1;
    } else if (cmd == PSCTL_CMD_STATUS) {
        rc = cmd_status(res, n, json);
    } else if (cmd == PSCTL_CMD_ACCURACY) {
        rc = cmd_accuracy(res, json);
    } else if (cmd == PSCTL_CMD_EXPORT) {
        rc = cmd_export(&pl, res, n, file, json);
    } else {
        rc = cmd_checkpoint(res, n);
    }
    for (int i = 0; i < n; i++)
        ctl_result_free(&res[i]);
    free(res);
    free(shards);
    placement_free(&pl);
    return rc;
}

int main(int argc, char **argv)
{
    const char *placement_path = PSCTL_DEFAULT_PLACEMENT;
    const char *images = NULL, *labels = NULL;
    const char *timeout_arg = NULL, *threads_arg = NULL, *placement_arg = NULL;
    int timeout_ms = PSCTL_DEFAULT_TIMEOUT_MS, json = 0, help = 0, c;
    long threads = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h': help = 1; break;
        case OPT_PLACEMENT:
            if (!*optarg)
                return usage_error("--placement: empty path%s", "");
            placement_path = placement_arg = optarg;
            break;
        case OPT_TIMEOUT:
            if (timeout_parse(optarg, &timeout_ms) != 0)
                return usage_error("--timeout: expected milliseconds 1..3600000, got \"%s\"",
                                   optarg);
            timeout_arg = optarg;
            break;
        case OPT_JSON: json = 1; break;
        case OPT_TEST_IMAGES:
            if (!*optarg)
                return usage_error("--test-images: empty path%s", "");
            images = optarg;
            break;
        case OPT_TEST_LABELS:
            if (!*optarg)
                return usage_error("--test-labels: empty path%s", "");
            labels = optarg;
            break;
        case OPT_THREADS:
            if (util_parse_long(optarg, 1, 64, &threads) != 0)
                return usage_error("--threads: expected 1..64, got \"%s\"", optarg);
            threads_arg = optarg;
            break;
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    psctl_cmd cmd = PSCTL_CMD_MAX;
    if (optind < argc)
        for (int i = 0; i < PSCTL_CMD_MAX; i++)
            if (strcmp(argv[optind], psctl_cmd_names[i]) == 0)
                cmd = (psctl_cmd)i;
    if (help) { /* psctl --help, psctl COMMAND --help */
        if (cmd == PSCTL_CMD_MAX)
            usage(stdout);
        else
            usage_cmd(stdout, cmd);
        return 0;
    }
    if (optind >= argc)
        return usage_error("no command given (" PSCTL_CMD_LIST ")%s", "");
    if (cmd == PSCTL_CMD_MAX)
        return usage_error("unknown command '%s' (" PSCTL_CMD_LIST ")", argv[optind]);
    const char *file = NULL;
    int nargs = argc - optind - 1;
    if (cmd == PSCTL_CMD_EXPORT || cmd == PSCTL_CMD_EVAL || cmd == PSCTL_CMD_KEYGEN) {
        if (nargs < 1 && cmd == PSCTL_CMD_KEYGEN)
            return usage_error("keygen needs a FILE (where to write the new key)%s", "");
        if (nargs < 1)
            return usage_error("%s needs a FILE (the model file)", psctl_cmd_names[cmd]);
        file = argv[optind + 1];
        if (!*file)
            return usage_error("%s: empty FILE", psctl_cmd_names[cmd]);
        if (nargs > 1)
            return usage_error("unexpected argument '%s'", argv[optind + 2]);
    } else if (nargs > 0) {
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    }
    if (json && (cmd == PSCTL_CMD_CHECKPOINT || cmd == PSCTL_CMD_KEYGEN))
        return usage_error("--json is not an option of %s", psctl_cmd_names[cmd]);
    if (cmd == PSCTL_CMD_KEYGEN && (placement_arg || timeout_arg))
        return usage_error("%s is not an option of keygen (it asks no shard)",
                           placement_arg ? "--placement" : "--timeout");
    if (cmd != PSCTL_CMD_EVAL) {
        if (images || labels)
            return usage_error("%s is an option of eval only",
                               images ? "--test-images" : "--test-labels");
        if (threads_arg)
            return usage_error("--threads is an option of eval only%s", "");
    } else {
        if (timeout_arg)
            return usage_error("--timeout is not an option of eval (it asks no shard)%s", "");
        if (!images != !labels)
            return usage_error("eval: give both --test-images and --test-labels, or neither "
                               "(then the placement's test set is used)%s",
                               "");
    }

    signal(SIGPIPE, SIG_IGN);
    int rc;
    if (cmd == PSCTL_CMD_KEYGEN) {
        rc = cmd_keygen(file);
    } else if (cmd == PSCTL_CMD_EVAL) {
        psctl_eval_opts eo = {.file = file,
                              .images = images,
                              .labels = labels,
                              .placement_path = placement_path,
                              .threads = (int)threads,
                              .json = json};
        rc = cmd_eval(&eo);
    } else {
        rc = run_query(cmd, placement_path, timeout_ms, json, file);
    }
    fflush(stdout);
    return rc;
}
