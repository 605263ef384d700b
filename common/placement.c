/* placement.c - see placement.h; the format is documented in docs/placement.md.
 *
 * Every allocation goes through cJSON_malloc/cJSON_free so that a test can
 * fail each one in turn with cJSON_InitHooks().
 */
#include "placement.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dataset.h"
#include "util.h"

#define MAX_SAFE_INT 9007199254740992LL /* 2^53: larger JSON numbers lose digits */
#define SHARE_MIN 1e-6
#define SHARE_MAX 1e6
#define SHARE_UNITS 1e6 /* shares are used in millionths, as integers */
#define PATH_MAX_LEN 160
#define DESC_MAX 96

static const char *const mode_names[PLACEMENT_MODE_MAX] = { "sync", "async", "ssp" };
static const char *const role_names[PLACEMENT_ROLE_MAX] = { "ps", "worker" };

static const char *const root_keys[] = { "job", "data", "nodes", "auth", NULL };
static const char *const auth_keys[] = { "key_file", NULL };
static const char *const job_keys[] = { "model", "mode", "staleness", "batch", "seed", "epochs",
                                        "max_steps", "checkpoint_interval_s",
                                        "barrier_timeout_ms", "eval_every_steps",
                                        "eval_every_s", "target_accuracy", "augment_shift",
                                        "overlap", "local_steps", "tcp_congestion", "optimizer",
                                        "compression", NULL };
static const char *const compression_keys[] = { "push", "topk_percent", "pull", NULL };
static const char *const push_enc_names[PLACEMENT_PUSH_MAX] = { "none", "fp16", "topk" };
static const char *const pull_enc_names[PLACEMENT_PULL_MAX] = { "full", "fp16", "delta",
                                                                 "topk" };
static const char *const optim_keys[] = { "lr", "momentum", "weight_decay", "schedule",
                                          "step_size", "gamma", "total_steps", "lr_min",
                                          "warmup_steps", NULL };
static const char *const data_keys[] = { "train_images", "train_labels", "test_images",
                                         "test_labels", "mean", "std", "parts", NULL };
static const char *const node_keys[] = { "id", "address", "port", "role", "shard", "share",
                                         "range", "part", "evaluate", "threads", NULL };

/* ------------------------------------------------------------- messages */

typedef struct pctx {
    const char *name; /* file name for messages */
    char *err;
    size_t errlen;
    int evaluate_given; /* some worker has an "evaluate" field */
} pctx;

/* "<name>: <path>: <message>"; returns -1. */
static int perr(pctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int perr(pctx *c, const char *path, const char *fmt, ...)
{
    if (!c->err || c->errlen == 0)
        return -1;
    int n = (path && *path) ? snprintf(c->err, c->errlen, "%s: %s: ", c->name, path)
                            : snprintf(c->err, c->errlen, "%s: ", c->name);
    if (n < 0)
        n = 0;
    if ((size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int oom(pctx *c)
{
    return perr(c, NULL, "out of memory");
}

/* s quoted, with non-printable bytes as \xNN, cut at about 40 characters. */
static void quote(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    if (len < 8) {
        if (len)
            buf[0] = 0;
        return;
    }
    buf[o++] = '"';
    for (size_t i = 0; s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i >= 40 || o + 8 >= len) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = 0;
}

/* A JSON value as it would appear in a message: "80a", 70000, true, an object. */
static const char *describe(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsString(v)) {
        quote(v->valuestring, buf, len);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 1e15)
            snprintf(buf, len, "%.0f", d);
        else
            snprintf(buf, len, "%.15g", d);
    } else if (cJSON_IsTrue(v)) {
        snprintf(buf, len, "true");
    } else if (cJSON_IsFalse(v)) {
        snprintf(buf, len, "false");
    } else if (cJSON_IsNull(v)) {
        snprintf(buf, len, "null");
    } else if (cJSON_IsArray(v)) {
        snprintf(buf, len, "an array");
    } else if (cJSON_IsObject(v)) {
        snprintf(buf, len, "an object");
    } else {
        snprintf(buf, len, "an invalid value");
    }
    return buf;
}

/* "<path>: expected <want>, got <value>"; returns -1. */
static int bad(pctx *c, const char *path, const cJSON *v, const char *want)
{
    char d[DESC_MAX];
    return perr(c, path, "expected %s, got %s", want, describe(v, d, sizeof d));
}

/* base + "." + key (or key alone when base is empty), key sanitised. */
static const char *path_join(char *buf, size_t len, const char *base, const char *key)
{
    char k[64];
    size_t o = 0;
    for (size_t i = 0; key[i] && o + 4 < sizeof k; i++) {
        unsigned char ch = (unsigned char)key[i];
        k[o++] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
    }
    if (key[o] && o + 4 >= sizeof k) {
        memcpy(k + o, "...", 3);
        o += 3;
    }
    k[o] = 0;
    snprintf(buf, len, "%s%s%s", base, *base ? "." : "", k);
    return buf;
}

/* --------------------------------------------------------- JSON helpers */

/* Every key of obj must be in known[] and appear once. */
static int keys_check(pctx *c, const cJSON *obj, const char *path, const char *const *known)
{
    char p[PATH_MAX_LEN];
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        int ok = 0;
        for (int i = 0; known[i]; i++)
            if (strcmp(k, known[i]) == 0)
                ok = 1;
        if (!ok) {
            char list[512];
            size_t o = 0;
            list[0] = 0;
            for (int i = 0; known[i] && o < sizeof list; i++) {
                int n = snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", known[i]);
                if (n < 0)
                    break;
                o += (size_t)n;
            }
            return perr(c, path_join(p, sizeof p, path, k), "unknown key (known: %s)", list);
        }
        for (const cJSON *j = obj->child; j != it; j = j->next)
            if (j->string && strcmp(j->string, k) == 0)
                return perr(c, path_join(p, sizeof p, path, k), "given twice");
    }
    return 0;
}

/* A JSON number that is an integer in [min, max] (|v| <= 2^53). */
static int is_int_in(const cJSON *v, long long min, long long max, long long *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || fabs(d) > (double)MAX_SAFE_INT)
        return 0;
    long long x = (long long)d;
    if (x < min || x > max)
        return 0;
    *out = x;
    return 1;
}

/* Optional integer field: 1 if set, 0 if absent, -1 on error. */
static int field_int(pctx *c, const cJSON *obj, const char *base, const char *key,
                     long long min, long long max, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!is_int_in(v, min, max, out)) {
        char p[PATH_MAX_LEN], want[96];
        snprintf(want, sizeof want, "an integer %lld..%lld", min, max);
        return bad(c, path_join(p, sizeof p, base, key), v, want);
    }
    return 1;
}

/* Optional finite number field in [min, max] (min_open: > min).  1/0/-1. */
static int field_num(pctx *c, const cJSON *obj, const char *base, const char *key, double min,
                     int min_open, double max, const char *want, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    char p[PATH_MAX_LEN];
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(c, path_join(p, sizeof p, base, key), v, want);
    double d = v->valuedouble;
    if ((min_open ? !(d > min) : !(d >= min)) || !(d <= max))
        return bad(c, path_join(p, sizeof p, base, key), v, want);
    *out = d;
    return 1;
}

/* Optional string field (non-empty).  1/0/-1. */
static int field_str(pctx *c, const cJSON *obj, const char *base, const char *key,
                     const char *want, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0]) {
        char p[PATH_MAX_LEN];
        return bad(c, path_join(p, sizeof p, base, key), v, want);
    }
    *out = v->valuestring;
    return 1;
}

/* Optional boolean field.  1/0/-1. */
static int field_bool(pctx *c, const cJSON *obj, const char *base, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v)) {
        char p[PATH_MAX_LEN];
        return bad(c, path_join(p, sizeof p, base, key), v, "true or false");
    }
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 1;
}

static int missing(pctx *c, const char *base, const char *key, const char *what)
{
    char p[PATH_MAX_LEN];
    return perr(c, path_join(p, sizeof p, base, key), "missing (required: %s)", what);
}

/* "<path>: only used when <cond>"; for fields that do not apply. */
static int not_used(pctx *c, const char *base, const char *key, const char *why)
{
    char p[PATH_MAX_LEN];
    return perr(c, path_join(p, sizeof p, base, key), "not used %s", why);
}

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = cJSON_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------ public bits */

int placement_mode_from_name(const char *name)
{
    for (int i = 0; i < PLACEMENT_MODE_MAX; i++)
        if (name && strcmp(name, mode_names[i]) == 0)
            return i;
    return -1;
}

const char *placement_mode_name(placement_mode m)
{
    return (m >= 0 && m < PLACEMENT_MODE_MAX) ? mode_names[m] : "?";
}

const char *placement_push_enc_name(placement_push_enc e)
{
    return (unsigned)e < PLACEMENT_PUSH_MAX ? push_enc_names[e] : "?";
}

const char *placement_pull_enc_name(placement_pull_enc e)
{
    return (unsigned)e < PLACEMENT_PULL_MAX ? pull_enc_names[e] : "?";
}

void placement_compression_describe(const placement_compression *c, char *buf, size_t len)
{
    char push[32], pull[32];
    if (c->push == PLACEMENT_PUSH_TOPK)
        snprintf(push, sizeof push, "topk %g%%", c->topk_percent);
    else
        snprintf(push, sizeof push, "%s", placement_push_enc_name(c->push));
    if (c->pull == PLACEMENT_PULL_TOPK)
        snprintf(pull, sizeof pull, "topk %g%%", c->topk_percent);
    else
        snprintf(pull, sizeof pull, "%s", placement_pull_enc_name(c->pull));
    snprintf(buf, len, "push %s, pull %s", push, pull);
}

int placement_role_from_name(const char *name)
{
    for (int i = 0; i < PLACEMENT_ROLE_MAX; i++)
        if (name && strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

const char *placement_role_name(placement_role r)
{
    return (r >= 0 && r < PLACEMENT_ROLE_MAX) ? role_names[r] : "?";
}

void placement_comments_strip(char *buf, size_t len)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (in_str) {
            if (ch == '\\' && i + 1 < len && buf[i + 1] != '\n')
                i++; /* skip the escaped character (\" or \\) */
            else if (ch == '"' || ch == '\n')
                in_str = 0; /* a raw newline ends a (broken) string: cJSON reports it */
            continue;
        }
        if (ch == '"') {
            in_str = 1;
        } else if (ch == '#' || (ch == '/' && i + 1 < len && buf[i + 1] == '/')) {
            while (i < len && buf[i] != '\n')
                buf[i++] = ' ';
        }
    }
}

/* Dotted quad: four decimal numbers 0..255 without leading zeros. */
static int ipv4_valid(const char *s)
{
    int parts = 0;
    const char *p = s;
    for (;;) {
        int n = 0, v = 0;
        if (p[0] == '0' && isdigit((unsigned char)p[1]))
            return 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p - '0');
            if (++n > 3)
                return 0;
            p++;
        }
        if (n == 0 || v > 255)
            return 0;
        parts++;
        if (*p == 0)
            break;
        if (*p != '.' || parts == 4)
            return 0;
        p++;
    }
    return parts == 4;
}

/* RFC 1123 host name: labels of 1..63 letters, digits and hyphens, not
 * starting or ending with a hyphen, 253 characters in all; the last label
 * is not all digits (that would be a malformed dotted quad). */
static int hostname_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > PLACEMENT_HOST_MAX)
        return 0;
    const char *label = s;
    int all_digits = 1;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == 0) {
            size_t n = (size_t)(p - label);
            if (n == 0 || n > 63 || label[0] == '-' || p[-1] == '-')
                return 0;
            if (*p == 0)
                return !all_digits;
            label = p + 1;
            all_digits = 1;
        } else if (isalnum((unsigned char)*p) || *p == '-') {
            if (!isdigit((unsigned char)*p))
                all_digits = 0;
        } else {
            return 0;
        }
    }
}

int placement_addr_parse(const char *s, char *host, size_t hostlen, placement_addr_kind *kind)
{
    unsigned char a6[16];
    char tmp[64];
    if (!s || !host || hostlen == 0)
        return -1;
    size_t len = strlen(s);
    if (s[0] == '[' || strchr(s, ':')) {
        const char *in = s;
        if (s[0] == '[') {
            if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof tmp)
                return -1;
            memcpy(tmp, s + 1, len - 2);
            tmp[len - 2] = 0;
            in = tmp;
        }
        if (inet_pton(AF_INET6, in, a6) != 1 || strlen(in) >= hostlen)
            return -1;
        snprintf(host, hostlen, "%s", in);
        *kind = PLACEMENT_ADDR_IPV6;
        return 0;
    }
    if (len >= hostlen)
        return -1;
    /* all digits and dots: must be a dotted quad */
    if (strspn(s, "0123456789.") == len || !hostname_valid(s)) {
        if (!ipv4_valid(s))
            return -1;
        *kind = PLACEMENT_ADDR_IPV4;
    } else {
        *kind = PLACEMENT_ADDR_NAME;
    }
    snprintf(host, hostlen, "%s", s);
    return 0;
}

/* ------------------------------------------------------------------ job */

static int parse_optimizer(pctx *c, const cJSON *o, placement_job *j)
{
    const char *b = "job.optimizer";
    optim_config *opt = &j->opt;
    double d = 0;
    long long ll;
    int r;

    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object");
    if (keys_check(c, o, b, optim_keys))
        return -1;
    const char *sched = NULL;
    if ((r = field_str(c, o, b, "schedule", "\"constant\", \"step\" or \"cosine\"", &sched)) < 0)
        return -1;
    if (r) {
        int s = optim_schedule_from_name(sched);
        if (s < 0)
            return bad(c, "job.optimizer.schedule",
                       cJSON_GetObjectItemCaseSensitive(o, "schedule"),
                       "\"constant\", \"step\" or \"cosine\"");
        opt->schedule = (optim_schedule)s;
    }
    if ((r = field_num(c, o, b, "lr", 0, 1, 1e6, "a number in (0, 1000000]", &d)) < 0)
        return -1;
    if (r)
        opt->lr = (float)d;
    if (!(opt->lr > 0.0f))
        return perr(c, "job.optimizer.lr", "too small for a float (%g)", d);
    if ((r = field_num(c, o, b, "momentum", 0, 0, nextafter(1.0, 0.0), "a number in [0, 1)",
                       &d)) < 0)
        return -1;
    if (r) {
        opt->momentum = (float)d;
        if (!(opt->momentum < 1.0f)) /* 0.99999999 rounds to 1.0f */
            return perr(c, "job.optimizer.momentum", "%.9g rounds to 1 as a float", d);
    }
    if ((r = field_num(c, o, b, "weight_decay", 0, 0, 1e6, "a number in [0, 1000000]", &d)) < 0)
        return -1;
    if (r)
        opt->weight_decay = (float)d;
    if ((r = field_int(c, o, b, "warmup_steps", 0, MAX_SAFE_INT, &ll)) < 0)
        return -1;
    if (r)
        opt->warmup_steps = (long)ll;

    const char *sname = optim_schedule_name(opt->schedule);
    char why[64];
    snprintf(why, sizeof why, "by the \"%s\" schedule", sname);
    /* step */
    if (opt->schedule != OPTIM_SCHED_STEP) {
        if (cJSON_GetObjectItemCaseSensitive(o, "step_size"))
            return not_used(c, b, "step_size", why);
        if (cJSON_GetObjectItemCaseSensitive(o, "gamma"))
            return not_used(c, b, "gamma", why);
    } else {
        if ((r = field_int(c, o, b, "step_size", 1, MAX_SAFE_INT, &ll)) < 0)
            return -1;
        if (r)
            opt->step_size = (long)ll;
        if ((r = field_num(c, o, b, "gamma", 0, 1, 1, "a number in (0, 1]", &d)) < 0)
            return -1;
        if (r)
            opt->gamma = (float)d;
    }
    /* cosine */
    if (opt->schedule != OPTIM_SCHED_COSINE) {
        if (cJSON_GetObjectItemCaseSensitive(o, "total_steps"))
            return not_used(c, b, "total_steps", why);
        if (cJSON_GetObjectItemCaseSensitive(o, "lr_min"))
            return not_used(c, b, "lr_min", why);
    } else {
        if ((r = field_int(c, o, b, "total_steps", 1, MAX_SAFE_INT, &ll)) < 0)
            return -1;
        if (r)
            opt->total_steps = (long)ll;
        else if (j->max_steps > 0)
            opt->total_steps = j->max_steps;
        else
            return missing(c, b, "total_steps",
                           "the cosine schedule needs it when job.max_steps is not given");
        char want[64];
        snprintf(want, sizeof want, "a number in [0, lr = %g]", (double)opt->lr);
        if ((r = field_num(c, o, b, "lr_min", 0, 0, (double)opt->lr, want, &d)) < 0)
            return -1;
        if (r)
            opt->lr_min = (float)d;
    }
    return 0;
}

/* job.compression: {"push": ..., "topk_percent": ..., "pull": ...}. */
static int parse_compression(pctx *c, const cJSON *o, placement_compression *cmp)
{
    const char *b = "job.compression";
    const char *s = NULL;
    int r;
    double d;

    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object");
    if (keys_check(c, o, b, compression_keys))
        return -1;
    const char *want_push = "\"none\", \"fp16\" or \"topk\"";
    if ((r = field_str(c, o, b, "push", want_push, &s)) < 0)
        return -1;
    if (r) {
        int k = 0;
        while (k < PLACEMENT_PUSH_MAX && strcmp(s, push_enc_names[k]) != 0)
            k++;
        if (k == PLACEMENT_PUSH_MAX)
            return bad(c, "job.compression.push", cJSON_GetObjectItemCaseSensitive(o, "push"),
                       want_push);
        cmp->push = (placement_push_enc)k;
    }
    const char *want_pull = "\"full\", \"fp16\", \"delta\" or \"topk\"";
    if ((r = field_str(c, o, b, "pull", want_pull, &s)) < 0)
        return -1;
    if (r) {
        int k = 0;
        while (k < PLACEMENT_PULL_MAX && strcmp(s, pull_enc_names[k]) != 0)
            k++;
        if (k == PLACEMENT_PULL_MAX)
            return bad(c, "job.compression.pull", cJSON_GetObjectItemCaseSensitive(o, "pull"),
                       want_pull);
        cmp->pull = (placement_pull_enc)k;
    }
    if ((r = field_num(c, o, b, "topk_percent", 0, 1, 100, "a percentage in (0, 100]", &d)) < 0)
        return -1;
    if (r) {
        if (cmp->push != PLACEMENT_PUSH_TOPK && cmp->pull != PLACEMENT_PULL_TOPK)
            return not_used(c, b, "topk_percent", "unless push or pull is \"topk\"");
        cmp->topk_percent = d;
    }
    return 0;
}

static int parse_job(pctx *c, const cJSON *o, placement *p)
{
    const char *b = "job";
    placement_job *j = &p->job;
    long long ll;
    int r;
    const char *s = NULL;

    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object");
    if (keys_check(c, o, b, job_keys))
        return -1;

    /* model */
    if ((r = field_str(c, o, b, "model", "a model name", &s)) < 0)
        return -1;
    if (!r)
        return missing(c, b, "model", cnn_model_names());
    cnn_model m;
    char e2[256];
    if (strlen(s) >= sizeof j->model || cnn_model_init(&m, s, e2, sizeof e2) != 0) {
        char q[DESC_MAX];
        quote(s, q, sizeof q);
        return perr(c, "job.model", "unknown model %s (known: %s)", q, cnn_model_names());
    }
    snprintf(j->model, sizeof j->model, "%s", s);
    p->nparams = m.nparams;

    /* mode */
    const char *want_mode = "\"sync\", \"async\" or \"ssp\"";
    if ((r = field_str(c, o, b, "mode", want_mode, &s)) < 0)
        return -1;
    if (!r)
        return missing(c, b, "mode", want_mode);
    int mode = placement_mode_from_name(s);
    if (mode < 0)
        return bad(c, "job.mode", cJSON_GetObjectItemCaseSensitive(o, "mode"), want_mode);
    j->mode = (placement_mode)mode;
    char why[64];
    snprintf(why, sizeof why, "when mode is \"%s\"", mode_names[mode]);

    /* staleness: ssp only */
    j->staleness = -1;
    if (j->mode == PLACEMENT_MODE_SSP) {
        if ((r = field_int(c, o, b, "staleness", 0, 1000000, &ll)) < 0)
            return -1;
        if (!r)
            return missing(c, b, "staleness", "the ssp mode's bound, an integer >= 0");
        j->staleness = (long)ll;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "staleness")) {
        return not_used(c, b, "staleness", why);
    }

    /* overlap: async and ssp only (a sync step needs the current weights) */
    if (j->mode != PLACEMENT_MODE_SYNC) {
        if (field_bool(c, o, b, "overlap", &j->overlap) < 0)
            return -1;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "overlap")) {
        return not_used(c, b, "overlap", why);
    }

    /* local_steps: async and ssp only (a sync step averages one minibatch
     * per worker), and not with overlap (which trains on while pushing) */
    j->local_steps = 1;
    if (j->mode != PLACEMENT_MODE_SYNC) {
        if ((r = field_int(c, o, b, "local_steps", 1, PLACEMENT_LOCAL_STEPS_MAX, &ll)) < 0)
            return -1;
        if (r && ll > 1 && j->overlap) {
            char lp[PATH_MAX_LEN];
            return perr(c, path_join(lp, sizeof lp, b, "local_steps"),
                        "%lld local steps and overlap exclude each other: use one of them", ll);
        }
        if (r)
            j->local_steps = (int)ll;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "local_steps")) {
        return not_used(c, b, "local_steps", why);
    }

    /* tcp_congestion: a Linux congestion control name (checked where it is
     * used: which ones a host has is the host's business) */
    const char *want_cc = "a TCP congestion control name like \"cubic\" (1..15 of a-z 0-9 _)";
    if ((r = field_str(c, o, b, "tcp_congestion", want_cc, &s)) < 0)
        return -1;
    if (r) {
        size_t n = strlen(s);
        int okc = n < sizeof j->tcp_congestion;
        for (size_t i = 0; okc && i < n; i++)
            okc = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_';
        if (!okc)
            return bad(c, "job.tcp_congestion", cJSON_GetObjectItemCaseSensitive(o, "tcp_congestion"),
                       want_cc);
        memcpy(j->tcp_congestion, s, n + 1);
    }

    /* barrier timeout: sync only */
    if (j->mode == PLACEMENT_MODE_SYNC) {
        j->barrier_timeout_ms = 30000;
        if ((r = field_int(c, o, b, "barrier_timeout_ms", 1, 86400000, &ll)) < 0)
            return -1;
        if (r)
            j->barrier_timeout_ms = (long)ll;
    } else if (cJSON_GetObjectItemCaseSensitive(o, "barrier_timeout_ms")) {
        return not_used(c, b, "barrier_timeout_ms", why);
    }

    j->batch = 64;
    if ((r = field_int(c, o, b, "batch", 1, 65536, &ll)) < 0)
        return -1;
    if (r)
        j->batch = (int)ll;

    /* seed: an integer, or a decimal string for values past 2^53 */
    j->seed = 1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "seed");
    if (v) {
        unsigned long long u;
        if (is_int_in(v, 0, MAX_SAFE_INT, &ll))
            j->seed = (uint64_t)ll;
        else if (cJSON_IsString(v) && util_parse_u64(v->valuestring, &u) == 0 &&
                 isdigit((unsigned char)v->valuestring[0]))
            j->seed = (uint64_t)u;
        else
            return bad(c, "job.seed", v,
                       "an integer 0..9007199254740992 or a decimal string (up to 2^64-1)");
    }

    if ((r = field_int(c, o, b, "epochs", 1, 1000000, &ll)) < 0)
        return -1;
    if (r)
        j->epochs = (long)ll;
    if ((r = field_int(c, o, b, "max_steps", 1, MAX_SAFE_INT, &ll)) < 0)
        return -1;
    if (r)
        j->max_steps = (long)ll;
    if (j->epochs == 0 && j->max_steps == 0)
        return missing(c, b, "epochs", "\"epochs\", \"max_steps\" or both");

    if ((r = field_int(c, o, b, "checkpoint_interval_s", 0, 1LL << 31, &ll)) < 0)
        return -1;
    if (r)
        j->checkpoint_interval_s = (long)ll;
    if ((r = field_int(c, o, b, "eval_every_steps", 0, MAX_SAFE_INT, &ll)) < 0)
        return -1;
    if (r)
        j->eval_every_steps = (long)ll;
    if ((r = field_int(c, o, b, "eval_every_s", 0, 1LL << 31, &ll)) < 0)
        return -1;
    if (r)
        j->eval_every_s = (long)ll;
    double d;
    if ((r = field_num(c, o, b, "target_accuracy", 0, 1, 100, "a percentage in (0, 100]", &d)) < 0)
        return -1;
    if (r)
        j->target_accuracy = d;
    if ((r = field_int(c, o, b, "augment_shift", 0, 8, &ll)) < 0)
        return -1;
    if (r)
        j->augment_shift = (int)ll;

    j->compression.push = PLACEMENT_PUSH_NONE;
    j->compression.topk_percent = 1.0;
    j->compression.pull = PLACEMENT_PULL_FULL;
    v = cJSON_GetObjectItemCaseSensitive(o, "compression");
    if (v && parse_compression(c, v, &j->compression))
        return -1;

    optim_config_default(&j->opt);
    v = cJSON_GetObjectItemCaseSensitive(o, "optimizer");
    if (v && parse_optimizer(c, v, j))
        return -1;
    char e3[256];
    if (optim_config_check(&j->opt, e3, sizeof e3) != 0) /* a guard: the fields are checked */
        return perr(c, "job.optimizer", "%s", e3);
    return 0;
}

/* ----------------------------------------------------------------- data */

/* A copy of path, relative ones prefixed by dir (if dir is not empty). */
static char *path_resolve(const char *dir, const char *path)
{
    if (path[0] == '/' || !dir || !dir[0])
        return str_dup(path);
    size_t n = strlen(dir) + 1 + strlen(path) + 1;
    char *s = cJSON_malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", path);
    return s;
}

static int parse_data(pctx *c, const cJSON *o, const char *dir, placement *p)
{
    const char *b = "data";
    placement_data *d = &p->data;
    const char *want = "a non-empty path";
    const char *keys[4] = { "train_images", "train_labels", "test_images", "test_labels" };
    char **dst[4] = { &d->train_images, &d->train_labels, &d->test_images, &d->test_labels };
    int r;

    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object");
    if (keys_check(c, o, b, data_keys))
        return -1;
    for (int i = 0; i < 4; i++) {
        const char *s = NULL;
        if ((r = field_str(c, o, b, keys[i], want, &s)) < 0)
            return -1;
        if (!r) {
            if (i < 2)
                return missing(c, b, keys[i], "the training set's IDX file (plain or .gz)");
            continue;
        }
        if (!(*dst[i] = path_resolve(dir, s)))
            return oom(c);
    }
    if (!d->test_images != !d->test_labels)
        return missing(c, b, d->test_images ? "test_labels" : "test_images",
                       "the test set needs both images and labels");

    double x;
    d->mean = DATASET_MNIST_MEAN;
    d->std = DATASET_MNIST_STD;
    if ((r = field_num(c, o, b, "mean", -1e6, 0, 1e6, "a number", &x)) < 0)
        return -1;
    if (r)
        d->mean = (float)x;
    if ((r = field_num(c, o, b, "std", 0, 1, 1e6, "a number > 0", &x)) < 0)
        return -1;
    if (r) {
        d->std = (float)x;
        if (!(d->std > 0.0f))
            return perr(c, "data.std", "too small for a float (%g)", x);
    }
    long long ll;
    if ((r = field_int(c, o, b, "parts", 1, PLACEMENT_MAX_NODES, &ll)) < 0)
        return -1;
    d->parts = r ? (int)ll : 0; /* 0: the number of workers, set later */
    return 0;
}

/* ----------------------------------------------------------------- auth */

static int parse_auth(pctx *c, const cJSON *o, const char *dir, placement *p)
{
    const char *b = "auth", *s = NULL;
    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object with the cluster key's \"key_file\"");
    if (keys_check(c, o, b, auth_keys))
        return -1;
    int r = field_str(c, o, b, "key_file", "a non-empty path", &s);
    if (r < 0)
        return -1;
    if (!r)
        return missing(c, b, "key_file",
                       "the path of the cluster key file, e.g. made with psctl keygen FILE");
    if (!(p->auth.key_file = path_resolve(dir, s)))
        return oom(c);
    return 0;
}

/* ---------------------------------------------------------------- nodes */

static int parse_node(pctx *c, const cJSON *o, int i, placement_node *n, long long range[2])
{
    char b[32], p[PATH_MAX_LEN];
    long long ll;
    int r;
    const char *s = NULL;

    snprintf(b, sizeof b, "nodes[%d]", i);
    if (!cJSON_IsObject(o))
        return bad(c, b, o, "an object");
    if (keys_check(c, o, b, node_keys))
        return -1;
    n->index = i;
    n->shard = -1;
    n->part = -1;
    n->share = 0;
    range[0] = range[1] = -1;

    const char *want_id = "1 to 63 characters of A-Z a-z 0-9 . _ -";
    if ((r = field_str(c, o, b, "id", want_id, &s)) < 0)
        return -1;
    if (!r)
        return missing(c, b, "id", "the node's name, given to the daemon as --node");
    if (strlen(s) > PLACEMENT_ID_MAX ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
            strlen(s))
        return bad(c, path_join(p, sizeof p, b, "id"), cJSON_GetObjectItemCaseSensitive(o, "id"),
                   want_id);
    snprintf(n->id, sizeof n->id, "%s", s);

    const char *want_role = "\"ps\" or \"worker\"";
    if ((r = field_str(c, o, b, "role", want_role, &s)) < 0)
        return -1;
    if (!r)
        return missing(c, b, "role", want_role);
    int role = placement_role_from_name(s);
    if (role < 0)
        return bad(c, path_join(p, sizeof p, b, "role"),
                   cJSON_GetObjectItemCaseSensitive(o, "role"), want_role);
    n->role = (placement_role)role;

    const char *want_addr = "an IPv4 or IPv6 address or a host name";
    if ((r = field_str(c, o, b, "address", want_addr, &s)) < 0)
        return -1;
    if (!r)
        return missing(c, b, "address", want_addr);
    if (placement_addr_parse(s, n->host, sizeof n->host, &n->addr_kind) != 0) {
        char q[DESC_MAX];
        quote(s, q, sizeof q);
        return perr(c, path_join(p, sizeof p, b, "address"), "bad address %s (expected %s)", q,
                    want_addr);
    }

    if (n->role == PLACEMENT_ROLE_PS) {
        if ((r = field_int(c, o, b, "port", 1, 65535, &ll)) < 0)
            return -1;
        if (!r)
            return missing(c, b, "port", "the port this ps listens on, 1..65535");
        n->port = (int)ll;
        if ((r = field_int(c, o, b, "shard", 0, PLACEMENT_MAX_NODES - 1, &ll)) < 0)
            return -1;
        if (r)
            n->shard = (int)ll;
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "share");
        const cJSON *rg = cJSON_GetObjectItemCaseSensitive(o, "range");
        if (sh && rg)
            return perr(c, path_join(p, sizeof p, b, "range"),
                        "give either \"share\" or \"range\", not both");
        double d;
        n->share = 1.0;
        if ((r = field_num(c, o, b, "share", SHARE_MIN, 0, SHARE_MAX,
                           "a number 0.000001..1000000", &d)) < 0)
            return -1;
        if (r)
            n->share = d;
        if (rg) {
            path_join(p, sizeof p, b, "range");
            if (!cJSON_IsArray(rg) || cJSON_GetArraySize(rg) != 2 ||
                !is_int_in(rg->child, 0, MAX_SAFE_INT, &range[0]) ||
                !is_int_in(rg->child->next, 0, MAX_SAFE_INT, &range[1]))
                return bad(c, p, rg, "[lo, hi], two integers >= 0");
            if (range[1] <= range[0])
                return perr(c, p, "[%lld, %lld) is empty", range[0], range[1]);
            n->has_range = 1;
        }
        for (int k = 0; k < 3; k++) {
            const char *wk[3] = { "part", "evaluate", "threads" };
            if (cJSON_GetObjectItemCaseSensitive(o, wk[k]))
                return not_used(c, b, wk[k], "on a ps node (role is \"ps\")");
        }
    } else {
        const char *pk[4] = { "port", "shard", "share", "range" };
        for (int k = 0; k < 4; k++)
            if (cJSON_GetObjectItemCaseSensitive(o, pk[k]))
                return not_used(c, b, pk[k], "on a worker (role is \"worker\")");
        if ((r = field_int(c, o, b, "part", 0, PLACEMENT_MAX_NODES - 1, &ll)) < 0)
            return -1;
        if (r)
            n->part = (int)ll;
        if ((r = field_bool(c, o, b, "evaluate", &n->evaluate)) < 0)
            return -1;
        if (r)
            c->evaluate_given = 1;
        if ((r = field_int(c, o, b, "threads", 1, 64, &ll)) < 0)
            return -1;
        if (r)
            n->threads = (int)ll;
    }
    return 0;
}

/* Same listening endpoint?  Addresses compare as bytes, names without case. */
static int same_endpoint(const placement_node *a, const placement_node *b)
{
    if (a->port != b->port || a->addr_kind != b->addr_kind)
        return 0;
    if (a->addr_kind == PLACEMENT_ADDR_NAME)
        return strcasecmp(a->host, b->host) == 0;
    unsigned char x[16], y[16];
    int af = a->addr_kind == PLACEMENT_ADDR_IPV4 ? AF_INET : AF_INET6;
    if (inet_pton(af, a->host, x) != 1 || inet_pton(af, b->host, y) != 1)
        return 0;
    return memcmp(x, y, af == AF_INET ? 4 : 16) == 0;
}

/* Give every node of `role` an index (shard or part): all from the file, or
 * none and then file order.  Duplicates and holes are errors.  nidx is the
 * number expected (0..nidx-1); explicit_max > 0 allows holes below it. */
static int assign_indexes(pctx *c, placement *p, placement_role role, const char *key,
                          const char *what, int explicit_max)
{
    placement_node *first_set = NULL, *first_unset = NULL;
    int count = 0;
    for (int i = 0; i < p->nnodes; i++) {
        placement_node *n = &p->nodes[i];
        if (n->role != role)
            continue;
        int *idx = role == PLACEMENT_ROLE_PS ? &n->shard : &n->part;
        if (*idx >= 0 && !first_set)
            first_set = n;
        if (*idx < 0 && !first_unset)
            first_unset = n;
        count++;
    }
    char pth[PATH_MAX_LEN], b[32];
    if (first_set && first_unset) {
        snprintf(b, sizeof b, "nodes[%d]", first_unset->index);
        return perr(c, path_join(pth, sizeof pth, b, key),
                    "missing, but nodes[%d] gives its %s: give every %s node a %s, or none",
                    first_set->index, key, role_names[role], key);
    }
    if (!first_set) {
        int k = 0;
        for (int i = 0; i < p->nnodes; i++) {
            placement_node *n = &p->nodes[i];
            if (n->role == role)
                *(role == PLACEMENT_ROLE_PS ? &n->shard : &n->part) = k++;
        }
        return 0;
    }
    /* explicit: duplicates, range, holes */
    int max = -1;
    for (int i = 0; i < p->nnodes; i++) {
        placement_node *n = &p->nodes[i];
        if (n->role != role)
            continue;
        int idx = role == PLACEMENT_ROLE_PS ? n->shard : n->part;
        snprintf(b, sizeof b, "nodes[%d]", i);
        for (int j = 0; j < i; j++) {
            placement_node *m = &p->nodes[j];
            if (m->role == role && (role == PLACEMENT_ROLE_PS ? m->shard : m->part) == idx)
                return perr(c, path_join(pth, sizeof pth, b, key),
                            "%s %d appears twice (nodes[%d] and nodes[%d])", what, idx, j, i);
        }
        if (explicit_max > 0 && idx >= explicit_max)
            return perr(c, path_join(pth, sizeof pth, b, key),
                        "%s %d is out of range (data.parts is %d: parts are 0..%d)", what, idx,
                        explicit_max, explicit_max - 1);
        if (idx > max)
            max = idx;
    }
    if (explicit_max == 0 && max + 1 != count) {
        /* no duplicates and more indexes than nodes: the lowest hole */
        for (int want = 0; want <= max; want++) {
            int found = 0;
            for (int i = 0; i < p->nnodes && !found; i++) {
                placement_node *n = &p->nodes[i];
                found = n->role == role &&
                        (role == PLACEMENT_ROLE_PS ? n->shard : n->part) == want;
            }
            if (!found)
                return perr(c, role == PLACEMENT_ROLE_PS ? "shards" : "parts",
                            "%s %d is missing (%ss are 0..%d)%s", what, want, what, max,
                            role == PLACEMENT_ROLE_PS
                                ? ""
                                : "; set data.parts to leave parts out on purpose");
        }
    }
    return 0;
}

/* Explicit ranges: every ps node has one (or none does); in shard order they
 * tile [0, nparams) exactly, with aligned boundaries. */
static int check_ranges(pctx *c, placement *p, long long (*range)[2])
{
    char pth[PATH_MAX_LEN], b[32];
    const placement_node *with = NULL, *without = NULL;
    for (int s = 0; s < p->nshards; s++) {
        const placement_node *n = &p->nodes[p->shard_node[s]];
        if (n->has_range && !with)
            with = n;
        if (!n->has_range && !without)
            without = n;
    }
    if (!with)
        return 0;
    if (without) {
        snprintf(b, sizeof b, "nodes[%d]", without->index);
        return perr(c, path_join(pth, sizeof pth, b, "range"),
                    "missing, but nodes[%d] gives its range: give every ps node a range, or "
                    "none (then ranges follow the shares)",
                    with->index);
    }
    long long np = (long long)p->nparams;
    long long end = 0;
    for (int s = 0; s < p->nshards; s++) {
        const placement_node *n = &p->nodes[p->shard_node[s]];
        long long lo = range[n->index][0], hi = range[n->index][1];
        snprintf(b, sizeof b, "nodes[%d]", n->index);
        path_join(pth, sizeof pth, b, "range");
        if (hi > np)
            return perr(c, pth, "[%lld, %lld) goes past the end of %s's %lld parameters", lo,
                        hi, p->job.model, np);
        if (lo % PLACEMENT_ALIGN || (hi % PLACEMENT_ALIGN && hi != np))
            return perr(c, pth,
                        "[%lld, %lld): boundaries must be multiples of %d (or %lld, the end)",
                        lo, hi, PLACEMENT_ALIGN, np);
        if (lo < end) {
            const placement_node *prev = &p->nodes[p->shard_node[s - 1]];
            return perr(c, pth,
                        "[%lld, %lld) of shard %d overlaps [%lld, %lld) of shard %d (nodes[%d])",
                        lo, hi, s, range[prev->index][0], range[prev->index][1], s - 1,
                        prev->index);
        }
        if (lo > end)
            return perr(c, "shards", "parameters [%lld, %lld) are in no shard (%s)", end, lo,
                        s == 0 ? "shard 0 must start at 0" : "ranges must be contiguous");
        end = hi;
        p->nodes[n->index].lo = (size_t)lo;
        p->nodes[n->index].hi = (size_t)hi;
    }
    if (end < np)
        return perr(c, "shards", "parameters [%lld, %lld) are in no shard (%s has %lld)", end,
                    np, p->job.model, np);
    return 0;
}

static int parse_nodes(pctx *c, const cJSON *arr, placement *p)
{
    if (!cJSON_IsArray(arr))
        return bad(c, "nodes", arr, "an array of node objects");
    int count = cJSON_GetArraySize(arr);
    if (count < 2)
        return perr(c, "nodes", "%s (at least one ps and one worker are needed)",
                    count ? "only one node" : "empty");
    if (count > PLACEMENT_MAX_NODES)
        return perr(c, "nodes", "%d nodes, at most %d", count, PLACEMENT_MAX_NODES);
    p->nodes = cJSON_malloc((size_t)count * sizeof *p->nodes);
    long long(*range)[2] = cJSON_malloc((size_t)count * sizeof *range);
    if (!p->nodes || !range) {
        cJSON_free(range);
        return oom(c);
    }
    memset(p->nodes, 0, (size_t)count * sizeof *p->nodes);
    p->nnodes = count;
    int rc = -1, i = 0;
    char pth[PATH_MAX_LEN], b[32];
    for (const cJSON *it = arr->child; it; it = it->next, i++)
        if (parse_node(c, it, i, &p->nodes[i], range[i]))
            goto out;

    /* ids and endpoints are unique */
    for (i = 0; i < count; i++) {
        placement_node *n = &p->nodes[i];
        snprintf(b, sizeof b, "nodes[%d]", i);
        for (int j = 0; j < i; j++) {
            placement_node *m = &p->nodes[j];
            if (strcmp(m->id, n->id) == 0) {
                perr(c, path_join(pth, sizeof pth, b, "id"), "\"%s\" is also the id of nodes[%d]",
                     n->id, j);
                goto out;
            }
            if (n->role == PLACEMENT_ROLE_PS && m->role == PLACEMENT_ROLE_PS &&
                same_endpoint(n, m)) {
                perr(c, path_join(pth, sizeof pth, b, "port"),
                     "%s%s%s:%d is also the address and port of nodes[%d] (\"%s\")",
                     n->addr_kind == PLACEMENT_ADDR_IPV6 ? "[" : "", n->host,
                     n->addr_kind == PLACEMENT_ADDR_IPV6 ? "]" : "", n->port, j, m->id);
                goto out;
            }
        }
        if (n->role == PLACEMENT_ROLE_PS)
            p->nshards++;
        else
            p->nworkers++;
    }
    if (p->nshards == 0) {
        perr(c, "nodes", "no node has role \"ps\": the parameters need at least one shard");
        goto out;
    }
    if (p->nworkers == 0) {
        perr(c, "nodes", "no node has role \"worker\": nothing would train");
        goto out;
    }

    /* shards */
    if (assign_indexes(c, p, PLACEMENT_ROLE_PS, "shard", "shard", 0))
        goto out;
    p->shard_node = cJSON_malloc((size_t)p->nshards * sizeof *p->shard_node);
    if (!p->shard_node) {
        oom(c);
        goto out;
    }
    for (i = 0; i < count; i++)
        if (p->nodes[i].role == PLACEMENT_ROLE_PS)
            p->shard_node[p->nodes[i].shard] = i;
    if (check_ranges(c, p, range))
        goto out;

    /* data parts */
    if (p->data.parts && p->data.parts < p->nworkers) {
        perr(c, "data.parts", "%d parts for %d workers: every worker needs its own part",
             p->data.parts, p->nworkers);
        goto out;
    }
    if (assign_indexes(c, p, PLACEMENT_ROLE_WORKER, "part", "part", p->data.parts))
        goto out;
    if (!p->data.parts)
        p->data.parts = p->nworkers;

    /* evaluation: by default the first worker, when there is a test set */
    if (!c->evaluate_given && p->data.test_images)
        for (i = 0; i < count; i++)
            if (p->nodes[i].role == PLACEMENT_ROLE_WORKER) {
                p->nodes[i].evaluate = 1;
                break;
            }
    int evaluators = 0;
    for (i = 0; i < count; i++) {
        if (!p->nodes[i].evaluate)
            continue;
        evaluators++;
        if (!p->data.test_images) {
            snprintf(b, sizeof b, "nodes[%d]", i);
            perr(c, path_join(pth, sizeof pth, b, "evaluate"),
                 "needs a test set (data.test_images and data.test_labels)");
            goto out;
        }
    }
    if (!evaluators && (p->job.eval_every_steps || p->job.eval_every_s ||
                        p->job.target_accuracy > 0)) {
        perr(c,
             p->job.eval_every_steps ? "job.eval_every_steps"
             : p->job.eval_every_s   ? "job.eval_every_s"
                                     : "job.target_accuracy",
             "set, but no worker evaluates (no test set, or every \"evaluate\" is false)");
        goto out;
    }
    rc = 0;
out:
    cJSON_free(range);
    return rc;
}

/* ---------------------------------------------------------------- ranges */

int placement_ranges_compute(const placement *p, size_t nparams, size_t *lo, size_t *hi,
                             char *err, size_t errlen)
{
    pctx c = { p->source ? p->source : "placement", err, errlen, 0 };
    int S = p->nshards;
    if (S < 1 || !p->shard_node)
        return perr(&c, "shards", "no shards");
    if (p->nodes[p->shard_node[0]].has_range) {
        if (nparams != p->nparams)
            return perr(&c, "shards",
                        "the file's ranges cover %s's %zu parameters, not %zu", p->job.model,
                        p->nparams, nparams);
        for (int s = 0; s < S; s++) {
            lo[s] = p->nodes[p->shard_node[s]].lo;
            hi[s] = p->nodes[p->shard_node[s]].hi;
        }
        return 0;
    }
    size_t nblocks = (nparams + PLACEMENT_ALIGN - 1) / PLACEMENT_ALIGN;
    if ((size_t)S > nblocks)
        return perr(&c, "shards",
                    "%d shards, but %zu parameters make only %zu blocks of %d floats: "
                    "every shard needs at least one",
                    S, nparams, nblocks, PLACEMENT_ALIGN);
    /* Boundary b (1..S-1) is round(nparams * cum / total / ALIGN) blocks,
     * with the shares in integer millionths: exact, the same on every box. */
    unsigned __int128 total = 0, cum = 0;
    for (int s = 0; s < S; s++)
        total += (unsigned long long)llround(p->nodes[p->shard_node[s]].share * SHARE_UNITS);
    unsigned __int128 den = total * PLACEMENT_ALIGN;
    lo[0] = 0;
    size_t prev = 0;
    for (int s = 0; s < S - 1; s++) {
        cum += (unsigned long long)llround(p->nodes[p->shard_node[s]].share * SHARE_UNITS);
        size_t b = (size_t)((2 * (unsigned __int128)nparams * cum + den) / (2 * den));
        if (b < prev + 1) /* every shard at least one block */
            b = prev + 1;
        lo[s + 1] = b;
        prev = b;
    }
    size_t next = nblocks;
    for (int s = S - 1; s >= 1; s--) {
        if (lo[s] > next - 1)
            lo[s] = next - 1;
        next = lo[s];
    }
    for (int s = 0; s < S; s++) {
        lo[s] *= PLACEMENT_ALIGN;
        if (s > 0)
            hi[s - 1] = lo[s];
    }
    hi[S - 1] = nparams;
    return 0;
}

/* ------------------------------------------------------------ top level */

void placement_free(placement *p)
{
    if (!p)
        return;
    cJSON_free(p->source);
    cJSON_free(p->data.train_images);
    cJSON_free(p->data.train_labels);
    cJSON_free(p->data.test_images);
    cJSON_free(p->data.test_labels);
    cJSON_free(p->auth.key_file);
    cJSON_free(p->nodes);
    cJSON_free(p->shard_node);
    memset(p, 0, sizeof(*p));
}

/* "name:line:col: " message for a byte offset into text. */
static int syntax_error(pctx *c, const char *text, size_t len, size_t pos, const char *what)
{
    size_t line = 1, col = 1;
    if (pos > len)
        pos = len;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char near[48];
    size_t o = 0;
    for (size_t i = pos; i < len && text[i] != '\n' && text[i] != '\r' && o < 24; i++)
        near[o++] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
    near[o] = 0;
    if (!c->err || !c->errlen)
        return -1;
    if (o)
        snprintf(c->err, c->errlen, "%s:%zu:%zu: %s near '%s'", c->name, line, col, what, near);
    else
        snprintf(c->err, c->errlen, "%s:%zu:%zu: %s at the end of %s", c->name, line, col, what,
                 pos >= len ? "the file" : "the line");
    return -1;
}

int placement_parse(const char *text, size_t len, const char *name, placement *out, char *err,
                    size_t errlen)
{
    pctx c = { name ? name : "placement", err, errlen, 0 };
    placement p;
    char dir[4096] = "";
    const cJSON *job, *data, *nodes;
    memset(&p, 0, sizeof p);
    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0;
    if (len > PLACEMENT_FILE_MAX)
        return perr(&c, NULL, "%zu bytes, more than the %d a placement file may have", len,
                    PLACEMENT_FILE_MAX);
    const char *nul = text ? memchr(text, 0, len) : NULL;
    if (!text && len)
        return perr(&c, NULL, "no text");
    if (nul)
        return syntax_error(&c, text, len, (size_t)(nul - text), "NUL byte");

    char *buf = cJSON_malloc(len + 1);
    if (!buf)
        return oom(&c);
    if (len)
        memcpy(buf, text, len);
    buf[len] = 0;
    placement_comments_strip(buf, len);
    size_t start = strspn(buf, " \t\r\n");
    if (start == len) {
        cJSON_free(buf);
        return perr(&c, NULL, "empty (no JSON object, only %s)",
                    len ? "comments and blanks" : "nothing");
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t pos = end ? (size_t)(end - buf) : 0;
        cJSON_free(buf);
        return syntax_error(&c, text, len, pos, "JSON syntax error");
    }
    size_t pos = (size_t)(end - buf);
    pos += strspn(buf + pos, " \t\r\n");
    int rc = -1;
    if (pos < len) {
        syntax_error(&c, text, len, pos, "text after the JSON object");
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        bad(&c, NULL, root, "a JSON object at the top");
        goto out;
    }
    if (keys_check(&c, root, "", root_keys))
        goto out;
    if (!(p.source = str_dup(c.name))) {
        oom(&c);
        goto out;
    }
    job = cJSON_GetObjectItemCaseSensitive(root, "job");
    data = cJSON_GetObjectItemCaseSensitive(root, "data");
    nodes = cJSON_GetObjectItemCaseSensitive(root, "nodes");
    if (!job) {
        missing(&c, "", "job", "an object with the model, mode and optimizer");
        goto out;
    }
    if (parse_job(&c, job, &p))
        goto out;
    if (!data) {
        missing(&c, "", "data", "an object with the dataset's files");
        goto out;
    }
    /* relative data paths: against the directory of `name` */
    const char *slash = name ? strrchr(name, '/') : NULL;
    if (slash) {
        size_t dl = slash == name ? 1 : (size_t)(slash - name);
        if (dl >= sizeof dir) {
            perr(&c, NULL, "path too long");
            goto out;
        }
        memcpy(dir, name, dl);
        dir[dl] = 0;
    }
    if (parse_data(&c, data, dir, &p))
        goto out;
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(root, "auth");
    if (auth && parse_auth(&c, auth, dir, &p))
        goto out;
    if (!nodes) {
        missing(&c, "", "nodes", "an array with every ps and worker");
        goto out;
    }
    if (parse_nodes(&c, nodes, &p))
        goto out;

    /* every shard's range */
    if (!p.nodes[p.shard_node[0]].has_range) {
        size_t *lo = cJSON_malloc(2 * (size_t)p.nshards * sizeof *lo);
        if (!lo) {
            oom(&c);
            goto out;
        }
        size_t *hi = lo + p.nshards;
        if (placement_ranges_compute(&p, p.nparams, lo, hi, err, errlen)) {
            cJSON_free(lo);
            goto out;
        }
        for (int s = 0; s < p.nshards; s++) {
            p.nodes[p.shard_node[s]].lo = lo[s];
            p.nodes[p.shard_node[s]].hi = hi[s];
        }
        cJSON_free(lo);
    }
    rc = 0;
out:
    cJSON_Delete(root);
    cJSON_free(buf);
    if (rc == 0)
        *out = p;
    else
        placement_free(&p);
    return rc;
}

int placement_load(const char *path, placement *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = cJSON_malloc(PLACEMENT_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, PLACEMENT_FILE_MAX + 1, f);
    int rerr = ferror(f);
    int saved = errno;
    fclose(f);
    int rc = -1;
    if (rerr)
        snprintf(err, errlen, "%s: read error: %s", path, strerror(saved));
    else if (n > PLACEMENT_FILE_MAX)
        snprintf(err, errlen, "%s: larger than %d bytes: not a placement file", path,
                 PLACEMENT_FILE_MAX);
    else
        rc = placement_parse(buf, n, path, out, err, errlen);
    cJSON_free(buf);
    return rc;
}

/* ---------------------------------------------------------------- lookup */

const placement_node *placement_node_find(const placement *p, const char *id)
{
    if (!p || !id)
        return NULL;
    for (int i = 0; i < p->nnodes; i++)
        if (strcmp(p->nodes[i].id, id) == 0)
            return &p->nodes[i];
    return NULL;
}

const placement_node *placement_shard_node(const placement *p, int shard)
{
    if (!p || shard < 0 || shard >= p->nshards || !p->shard_node)
        return NULL;
    return &p->nodes[p->shard_node[shard]];
}

int placement_node_select(const placement *p, const char *id, placement_role role,
                          const placement_node **out, char *err, size_t errlen)
{
    char host[256];
    const char *src = p->source ? p->source : "placement";
    int from_host = 0;
    const placement_node *n = NULL;
    *out = NULL;
    if (!id || !*id) {
        if (gethostname(host, sizeof host) != 0) {
            snprintf(err, errlen, "cannot get the host name (%s): start with --node ID",
                     strerror(errno));
            return -1;
        }
        host[sizeof host - 1] = 0;
        id = host;
        from_host = 1;
        n = placement_node_find(p, id);
        char *dot = strchr(host, '.');
        if (!n && dot) {
            *dot = 0; /* the short name */
            n = placement_node_find(p, host);
            if (!n)
                *dot = '.';
        }
    } else {
        n = placement_node_find(p, id);
    }
    if (!n) {
        char q[DESC_MAX];
        quote(id, q, sizeof q);
        int o = snprintf(err, errlen, "no node %s%s in %s (nodes: ", q,
                         from_host ? " (this host's name; start with --node ID)" : "", src);
        for (int i = 0; i < p->nnodes && o >= 0 && (size_t)o < errlen; i++)
            o += snprintf(err + o, errlen - (size_t)o, "%s%s", i ? ", " : "", p->nodes[i].id);
        if (o >= 0 && (size_t)o < errlen)
            snprintf(err + o, errlen - (size_t)o, ")");
        return -1;
    }
    if (role != PLACEMENT_ROLE_MAX && n->role != role) {
        snprintf(err, errlen, "node \"%s\" in %s is a %s node, not a %s node", n->id, src,
                 role_names[n->role], placement_role_name(role));
        return -1;
    }
    *out = n;
    return 0;
}

int placement_model_init(const placement *p, cnn_model *m, char *err, size_t errlen)
{
    char e2[256];
    if (cnn_model_init(m, p->job.model, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "%s: job.model: %s", p->source ? p->source : "placement", e2);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ key files */

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Zero n bytes so that the compiler keeps it. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

int placement_key_load(const char *path, uint8_t key[PLACEMENT_KEY_SIZE], char *err,
                       size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "cluster key file %s: %s%s", path, strerror(errno),
                 errno == ENOENT ? " (make one with: psctl keygen FILE)" : "");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cluster key file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cluster key file %s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "cluster key file %s: mode %04o lets %s read or change the key; "
                 "allow its owner only: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777),
                 (st.st_mode & 070) && (st.st_mode & 07) ? "group and others"
                 : (st.st_mode & 070)                    ? "its group"
                                                         : "others",
                 path);
        close(fd);
        return -1;
    }
    char buf[PLACEMENT_KEY_HEX + 2];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cluster key file %s: %s", path, strerror(errno));
            close(fd);
            wipe(buf, sizeof buf);
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == sizeof buf)
            break;
    }
    close(fd);
    int ok = n == PLACEMENT_KEY_HEX || (n == PLACEMENT_KEY_HEX + 1 && buf[PLACEMENT_KEY_HEX] == '\n');
    for (size_t i = 0; ok && i < PLACEMENT_KEY_SIZE; i++) {
        int hi = hex_val((unsigned char)buf[2 * i]), lo = hex_val((unsigned char)buf[2 * i + 1]);
        if (hi < 0 || lo < 0)
            ok = 0;
        else
            key[i] = (uint8_t)(hi << 4 | lo);
    }
    wipe(buf, sizeof buf);
    if (!ok) {
        wipe(key, PLACEMENT_KEY_SIZE);
        snprintf(err, errlen,
                 "cluster key file %s: expected %d hex digits and at most a newline "
                 "(make one with: psctl keygen FILE)",
                 path, PLACEMENT_KEY_HEX);
        return -1;
    }
    return 0;
}

int placement_auth_key(const placement *p, uint8_t key[PLACEMENT_KEY_SIZE], char *used,
                       size_t usedlen, char *err, size_t errlen)
{
    if (!p->auth.key_file)
        return 0;
    char cred[4096];
    const char *path = p->auth.key_file;
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir && *dir) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        struct stat st;
        if (*base && (size_t)snprintf(cred, sizeof cred, "%s/%s", dir, base) < sizeof cred &&
            stat(cred, &st) == 0)
            path = cred;
    }
    if (used && usedlen)
        snprintf(used, usedlen, "%s", path);
    return placement_key_load(path, key, err, errlen) == 0 ? 1 : -1;
}

int placement_key_save(const char *path, const uint8_t key[PLACEMENT_KEY_SIZE], char *err,
                       size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (not overwritten: remove it first to replace the key)" : "");
        return -1;
    }
    char buf[PLACEMENT_KEY_HEX + 1];
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < PLACEMENT_KEY_SIZE; i++) {
        buf[2 * i] = digits[key[i] >> 4];
        buf[2 * i + 1] = digits[key[i] & 15];
    }
    buf[PLACEMENT_KEY_HEX] = '\n';
    size_t off = 0;
    int rc = fchmod(fd, 0600); /* whatever the umask did */
    while (rc == 0 && off < sizeof buf) {
        ssize_t w = write(fd, buf + off, sizeof buf - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0)
        rc = fsync(fd);
    int e = errno;
    wipe(buf, sizeof buf);
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        unlink(path);
        return -1;
    }
    return 0;
}
