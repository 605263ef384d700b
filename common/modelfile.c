/* modelfile.c - the model file format (see modelfile.h, docs/modelfile.md). */
#include "modelfile.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "proto.h"

#define MF_U53 9007199254740992.0 /* 2^53: integers above are not exact as doubles */

const char *modelfile_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case MODELFILE_ERR_INVALID: return "invalid model";
    case MODELFILE_ERR_NOMEM: return "out of memory";
    case MODELFILE_ERR_IO: return "I/O error";
    case MODELFILE_ERR_MAGIC: return "not a psd model file";
    case MODELFILE_ERR_FORMAT: return "unknown model file format";
    case MODELFILE_ERR_TRUNCATED: return "truncated";
    case MODELFILE_ERR_SIZE: return "bad length";
    case MODELFILE_ERR_CRC: return "CRC mismatch";
    case MODELFILE_ERR_HEADER: return "bad header";
    case MODELFILE_ERR_MODEL: return "model mismatch";
    default: return "unknown error";
    }
}

static int mf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Write the message and return code. */
static int mf_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *const mf_kind_names[CNN_LAYER_KIND_MAX] = {"conv", "maxpool", "relu",
                                                               "linear"};

/* 1 if s (len bytes) is a valid node id for the header: 0..63 of '!'..'~'. */
static int mf_node_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > MODELFILE_NODE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '!' || s[i] > '~')
            return 0;
    return 1;
}

/* The shortest decimal that reads back as f, as a double, so the header
 * says 0.1307 rather than 0.13070000708103180. */
static double mf_float_decimal(float f)
{
    char buf[48];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return (double)f;
}

/* ------------------------------------------------------------ building */

/* Every add below clears *ok when it fails (out of memory), so a caller
 * checks once at the end; adding to a NULL object fails too. */
static void mf_add(cJSON *o, const char *k, cJSON *v, int *ok)
{
    if (!v || !o || !cJSON_AddItemToObject(o, k, v)) {
        cJSON_Delete(v);
        *ok = 0;
    }
}

/* A u64 as a JSON number when exact (<= 2^53), else as a decimal string. */
static void mf_add_u64(cJSON *o, const char *k, uint64_t v, int *ok)
{
    if (v <= (1ull << 53)) {
        mf_add(o, k, cJSON_CreateNumber((double)v), ok);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
        mf_add(o, k, cJSON_CreateString(buf), ok);
    }
}

static void mf_add_ints(cJSON *o, const char *k, const int *v, int n, int *ok)
{
    mf_add(o, k, cJSON_CreateIntArray(v, n), ok);
}

/* {"offset": off, "shape": [...]} */
static void mf_add_tensor(cJSON *o, const char *k, size_t off, const int *shape, int n, int *ok)
{
    cJSON *t = cJSON_CreateObject();
    mf_add_u64(t, "offset", off, ok);
    mf_add_ints(t, "shape", shape, n, ok);
    mf_add(o, k, t, ok);
}

/* One layer as the header describes it. */
static cJSON *mf_layer_json(const cnn_layer *l, int *ok)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        *ok = 0;
        return NULL;
    }
    mf_add(o, "name", cJSON_CreateString(l->name), ok);
    mf_add(o, "kind", cJSON_CreateString(mf_kind_names[l->kind]), ok);
    if (l->kind == CNN_LAYER_LINEAR) {
        mf_add_ints(o, "in", &l->in_c, 1, ok);
        mf_add_ints(o, "out", &l->out_c, 1, ok);
    } else {
        const int in[3] = {l->in_c, l->in_h, l->in_w}, out[3] = {l->out_c, l->out_h, l->out_w};
        mf_add_ints(o, "in", in, 3, ok);
        mf_add_ints(o, "out", out, 3, ok);
    }
    if (l->kind == CNN_LAYER_CONV || l->kind == CNN_LAYER_MAXPOOL)
        mf_add(o, "k", cJSON_CreateNumber(l->k), ok);
    if (l->kind == CNN_LAYER_CONV) {
        const int ws[4] = {l->out_c, l->in_c, l->k, l->k};
        mf_add_tensor(o, "weight", l->w_off, ws, 4, ok);
        mf_add_tensor(o, "bias", l->b_off, &l->out_c, 1, ok);
    } else if (l->kind == CNN_LAYER_LINEAR) {
        const int ws[2] = {l->out_c, l->in_c};
        mf_add_tensor(o, "weight", l->w_off, ws, 2, ok);
        mf_add_tensor(o, "bias", l->b_off, &l->out_c, 1, ok);
    }
    return o;
}

/* The "input" object of model m. */
static cJSON *mf_input_json(const cnn_model *m, int *ok)
{
    cJSON *o = cJSON_CreateObject();
    mf_add(o, "channels", cJSON_CreateNumber(m->in_c), ok);
    mf_add(o, "height", cJSON_CreateNumber(m->in_h), ok);
    mf_add(o, "width", cJSON_CreateNumber(m->in_w), ok);
    if (!o)
        *ok = 0;
    return o;
}

/* Check that shards[0..n) are shards 0..n-1 in order, tiling [0, np).
 * Returns 0 or -1 with a message. */
static int mf_shards_check(const modelfile_shard *s, uint32_t n, uint64_t np, char *err,
                           size_t errlen)
{
    if (n < 1 || n > MODELFILE_SHARDS_MAX) {
        snprintf(err, errlen, "shards: %u shards (expected 1..%d)", n, MODELFILE_SHARDS_MAX);
        return -1;
    }
    uint64_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (s[i].shard != i) {
            snprintf(err, errlen, "shards[%u]: is shard %u (expected shards 0..%u in order)", i,
                     s[i].shard, n - 1);
            return -1;
        }
        if (!mf_node_ok(s[i].node)) {
            snprintf(err, errlen, "shards[%u].node: not 0..%d printable ASCII characters", i,
                     MODELFILE_NODE_MAX);
            return -1;
        }
        if (s[i].lo >= s[i].hi || s[i].hi > np) {
            snprintf(err, errlen, "shards[%u]: bad range [%llu, %llu) for %llu parameters", i,
                     (unsigned long long)s[i].lo, (unsigned long long)s[i].hi,
                     (unsigned long long)np);
            return -1;
        }
        if (s[i].lo != at) {
            snprintf(err, errlen, "shards[%u]: range [%llu, %llu) %s at %llu", i,
                     (unsigned long long)s[i].lo, (unsigned long long)s[i].hi,
                     s[i].lo > at ? "leaves a gap: the previous range ends"
                                  : "overlaps the previous range, which ends",
                     (unsigned long long)at);
            return -1;
        }
        at = s[i].hi;
    }
    if (at != np) {
        snprintf(err, errlen, "shards: the ranges end at %llu, not at nparams %llu",
                 (unsigned long long)at, (unsigned long long)np);
        return -1;
    }
    return 0;
}

int modelfile_assemble(const char *header, size_t header_len, const float *params,
                       uint64_t nparams, uint8_t **out, size_t *outlen, char *err,
                       size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    if (header_len < MODELFILE_HEADER_MIN || header_len > MODELFILE_HEADER_MAX || !header)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE, "header of %zu bytes (must be %u..%u)",
                       header_len, MODELFILE_HEADER_MIN, MODELFILE_HEADER_MAX);
    if (nparams < 1 || nparams > MODELFILE_NPARAMS_MAX || !params)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE, "%llu parameters (must be 1..%llu)",
                       (unsigned long long)nparams, (unsigned long long)MODELFILE_NPARAMS_MAX);
    uint64_t total64 = (uint64_t)MODELFILE_FIXED + header_len + 4 * nparams + MODELFILE_TRAILER;
    if (total64 > SIZE_MAX)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE, "file of %llu bytes is too large here",
                       (unsigned long long)total64);
    size_t total = (size_t)total64;
    uint8_t *b = malloc(total);
    if (!b)
        return mf_fail(err, errlen, MODELFILE_ERR_NOMEM, "out of memory for a %zu-byte file",
                       total);
    memcpy(b, MODELFILE_MAGIC, 8); /* the 7 characters and their NUL */
    proto_put_be32(b + 8, MODELFILE_FORMAT);
    proto_put_be32(b + 12, (uint32_t)header_len);
    proto_put_be64(b + 16, nparams);
    memcpy(b + MODELFILE_FIXED, header, header_len);
    proto_floats_encode(b + MODELFILE_FIXED + header_len, params, (size_t)nparams);
    proto_put_be32(b + total - MODELFILE_TRAILER, util_crc32(b, total - MODELFILE_TRAILER));
    *out = b;
    *outlen = total;
    return 0;
}

int modelfile_encode(const modelfile *mf, uint8_t **out, size_t *outlen, char *err,
                     size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    cnn_model m;
    char why[512];
    if (cnn_model_init(&m, mf->model, why, sizeof why) != 0)
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID, "%s", why);
    if (mf->nparams != m.nparams)
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID,
                       "nparams %llu, but model %s has %zu parameters",
                       (unsigned long long)mf->nparams, m.name, m.nparams);
    if (!mf->params)
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID, "no parameters");
    if (!isfinite(mf->mean) || !isfinite(mf->std) || !(mf->std > 0))
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID,
                       "normalisation mean %g, std %g (need finite values, std > 0)",
                       (double)mf->mean, (double)mf->std);
    if (mf->created_unix < 0 || (double)mf->created_unix > MF_U53)
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID, "creation time %lld out of range",
                       (long long)mf->created_unix);
    if (!mf->shards || mf_shards_check(mf->shards, mf->nshards, mf->nparams, why, sizeof why))
        return mf_fail(err, errlen, MODELFILE_ERR_INVALID, "%s",
                       mf->shards ? why : "no shards");

    int ok = 1;
    cJSON *h = cJSON_CreateObject();
    if (!h)
        ok = 0;
    mf_add(h, "model", cJSON_CreateString(m.name), &ok);
    mf_add_u64(h, "nparams", m.nparams, &ok);
    mf_add(h, "input", mf_input_json(&m, &ok), &ok);
    mf_add(h, "classes", cJSON_CreateNumber(m.classes), &ok);
    cJSON *norm = cJSON_CreateObject();
    mf_add(norm, "mean", cJSON_CreateNumber(mf_float_decimal(mf->mean)), &ok);
    mf_add(norm, "std", cJSON_CreateNumber(mf_float_decimal(mf->std)), &ok);
    mf_add(h, "normalization", norm, &ok);
    cJSON *layers = cJSON_CreateArray();
    for (int i = 0; layers && i < m.nlayers; i++) {
        cJSON *l = mf_layer_json(&m.layers[i], &ok);
        if (!l || !cJSON_AddItemToArray(layers, l)) {
            cJSON_Delete(l);
            ok = 0;
        }
    }
    mf_add(h, "layers", layers, &ok);
    cJSON *shards = cJSON_CreateArray();
    for (uint32_t i = 0; shards && i < mf->nshards; i++) {
        const modelfile_shard *s = &mf->shards[i];
        cJSON *so = cJSON_CreateObject();
        mf_add(so, "shard", cJSON_CreateNumber(s->shard), &ok);
        mf_add(so, "node", cJSON_CreateString(s->node), &ok);
        mf_add_u64(so, "lo", s->lo, &ok);
        mf_add_u64(so, "hi", s->hi, &ok);
        mf_add_u64(so, "version", s->version, &ok);
        if (!so || !cJSON_AddItemToArray(shards, so)) {
            cJSON_Delete(so);
            ok = 0;
        }
    }
    mf_add(h, "shards", shards, &ok);
    mf_add(h, "created_unix", cJSON_CreateNumber((double)mf->created_unix), &ok);
    time_t t = (time_t)mf->created_unix;
    struct tm tm;
    char iso[40];
    if (gmtime_r(&t, &tm) && strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0)
        mf_add(h, "created", cJSON_CreateString(iso), &ok);
    char *text = ok ? cJSON_Print(h) : NULL;
    cJSON_Delete(h);
    if (!text)
        return mf_fail(err, errlen, MODELFILE_ERR_NOMEM, "out of memory for the header");
    int rc = modelfile_assemble(text, strlen(text), mf->params, mf->nparams, out, outlen, err,
                                errlen);
    cJSON_free(text);
    return rc;
}

/* ------------------------------------------------------------ decoding */

/* A member of o that must be there. */
static const cJSON *mf_get(const cJSON *o, const char *key, const char *path, char *err,
                           size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        snprintf(err, errlen, "header: %s%s%s: missing", path, *path ? "." : "", key);
    return v;
}

/* An unsigned integer: a JSON number <= 2^53 without a fraction, or a
 * decimal string up to 2^64-1.  Returns 0 or -1 with a message. */
static int mf_get_u64(const cJSON *o, const char *key, const char *path, uint64_t *out,
                      char *err, size_t errlen)
{
    const cJSON *v = mf_get(o, key, path, err, errlen);
    if (!v)
        return -1;
    const char *dot = *path ? "." : "";
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d >= 0 && d <= MF_U53 && d == floor(d)) {
            *out = (uint64_t)d;
            return 0;
        }
    } else if (cJSON_IsString(v) && v->valuestring && v->valuestring[0]) {
        const char *s = v->valuestring;
        uint64_t x = 0;
        size_t i = 0;
        for (; s[i] >= '0' && s[i] <= '9' && i < 20; i++) {
            unsigned d = (unsigned)(s[i] - '0');
            if (x > (UINT64_MAX - d) / 10)
                break;
            x = x * 10 + d;
        }
        if (s[i] == '\0') {
            *out = x;
            return 0;
        }
    }
    char *txt = cJSON_PrintUnformatted(v);
    snprintf(err, errlen, "header: %s%s%s: expected an unsigned integer, got %.40s", path, dot,
             key, txt ? txt : "?");
    cJSON_free(txt);
    return -1;
}

/* Compare the header's member key with what the built-in model gives. */
static int mf_same(const cJSON *h, const char *key, const cJSON *want, const char *model,
                   char *err, size_t errlen)
{
    const cJSON *v = mf_get(h, key, "", err, errlen);
    if (!v)
        return -1;
    if (!cJSON_Compare(v, want, 1)) {
        char *got = cJSON_PrintUnformatted(v);
        char *exp = cJSON_PrintUnformatted(want);
        snprintf(err, errlen,
                 "header: %s: %.120s does not match the built-in model %s (%.120s)", key,
                 got ? got : "?", model, exp ? exp : "?");
        cJSON_free(got);
        cJSON_free(exp);
        return -1;
    }
    return 0;
}

/* Check the header's model description against the built-in model m. */
static int mf_layout_check(const cJSON *h, const cnn_model *m, char *err, size_t errlen)
{
    int ok = 1, rc = -1;
    cJSON *input = mf_input_json(m, &ok);
    cJSON *classes = cJSON_CreateNumber(m->classes);
    if (!ok || !classes) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (mf_same(h, "input", input, m->name, err, errlen) ||
        mf_same(h, "classes", classes, m->name, err, errlen))
        goto out;
    const cJSON *layers = mf_get(h, "layers", "", err, errlen);
    if (!layers)
        goto out;
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != m->nlayers) {
        snprintf(err, errlen, "header: layers: expected an array of the %d layers of %s, got %d",
                 m->nlayers, m->name, cJSON_IsArray(layers) ? cJSON_GetArraySize(layers) : -1);
        goto out;
    }
    const cJSON *l = layers->child;
    for (int i = 0; i < m->nlayers; i++, l = l->next) {
        cJSON *want = mf_layer_json(&m->layers[i], &ok);
        if (!ok || !want) {
            cJSON_Delete(want);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        int same = cJSON_Compare(l, want, 1);
        cJSON_Delete(want);
        if (!same) {
            char *got = cJSON_PrintUnformatted(l);
            snprintf(err, errlen,
                     "header: layers[%d]: %.200s is not layer %d (%s) of the built-in model %s",
                     i, got ? got : "?", i, m->layers[i].name, m->name);
            cJSON_free(got);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(input);
    cJSON_Delete(classes);
    return rc;
}

/* The "shards" array into a new array *out of *n (caller frees). */
static int mf_shards_parse(const cJSON *h, uint64_t np, modelfile_shard **out, uint32_t *n,
                           char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    const cJSON *arr = mf_get(h, "shards", "", err, errlen);
    if (!arr)
        return MODELFILE_ERR_HEADER;
    int cnt = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (cnt < 1 || cnt > MODELFILE_SHARDS_MAX)
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER,
                       "header: shards: expected an array of 1..%d shards", MODELFILE_SHARDS_MAX);
    modelfile_shard *s = calloc((size_t)cnt, sizeof(*s));
    if (!s)
        return mf_fail(err, errlen, MODELFILE_ERR_NOMEM, "out of memory");
    const cJSON *so = arr->child;
    for (int i = 0; i < cnt; i++, so = so->next) {
        char path[32];
        snprintf(path, sizeof path, "shards[%d]", i);
        uint64_t idx;
        if (!cJSON_IsObject(so)) {
            snprintf(err, errlen, "header: %s: expected an object", path);
            goto bad;
        }
        if (mf_get_u64(so, "shard", path, &idx, err, errlen) ||
            mf_get_u64(so, "lo", path, &s[i].lo, err, errlen) ||
            mf_get_u64(so, "hi", path, &s[i].hi, err, errlen) ||
            mf_get_u64(so, "version", path, &s[i].version, err, errlen))
            goto bad;
        s[i].shard = idx > UINT32_MAX ? UINT32_MAX : (uint32_t)idx;
        const cJSON *node = cJSON_GetObjectItemCaseSensitive(so, "node");
        if (node) {
            if (!cJSON_IsString(node) || !node->valuestring ||
                strlen(node->valuestring) > MODELFILE_NODE_MAX) {
                snprintf(err, errlen, "header: %s.node: expected a string of 0..%d characters",
                         path, MODELFILE_NODE_MAX);
                goto bad;
            }
            snprintf(s[i].node, sizeof s[i].node, "%s", node->valuestring);
        }
    }
    char why[256];
    if (mf_shards_check(s, (uint32_t)cnt, np, why, sizeof why) != 0) {
        snprintf(err, errlen, "header: %s", why);
        goto bad;
    }
    *out = s;
    *n = (uint32_t)cnt;
    return 0;
bad:
    free(s);
    return MODELFILE_ERR_HEADER;
}

/* Check the JSON header h against the binary part (np floats) and the
 * built-in model; fill out's scalar fields and *m. */
static int mf_header_check(const cJSON *h, uint64_t np, modelfile *out, cnn_model *m,
                           char *err, size_t errlen)
{
    if (!cJSON_IsObject(h))
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER, "header: not a JSON object");
    const cJSON *name = mf_get(h, "model", "", err, errlen);
    if (!name)
        return MODELFILE_ERR_HEADER;
    if (!cJSON_IsString(name) || !name->valuestring)
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER, "header: model: expected a string");
    char why[512];
    if (cnn_model_init(m, name->valuestring, why, sizeof why) != 0)
        return mf_fail(err, errlen, MODELFILE_ERR_MODEL, "header: model: %s", why);
    snprintf(out->model, sizeof out->model, "%s", m->name);
    uint64_t hnp;
    if (mf_get_u64(h, "nparams", "", &hnp, err, errlen) != 0)
        return MODELFILE_ERR_HEADER;
    if (hnp != np)
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER,
                       "header: nparams: says %llu, but the file holds %llu parameters",
                       (unsigned long long)hnp, (unsigned long long)np);
    if (np != m->nparams)
        return mf_fail(err, errlen, MODELFILE_ERR_MODEL,
                       "the file holds %llu parameters, but model %s has %zu",
                       (unsigned long long)np, m->name, m->nparams);
    if (mf_layout_check(h, m, err, errlen) != 0)
        return MODELFILE_ERR_MODEL;
    const cJSON *norm = mf_get(h, "normalization", "", err, errlen);
    if (!norm)
        return MODELFILE_ERR_HEADER;
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(norm, "mean");
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(norm, "std");
    if (!cJSON_IsNumber(mean) || !cJSON_IsNumber(sd) || !isfinite(mean->valuedouble) ||
        !isfinite(sd->valuedouble) || fabs(mean->valuedouble) > 1e30 ||
        !(sd->valuedouble > 0) || sd->valuedouble > 1e30 || !((float)sd->valuedouble > 0))
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER,
                       "header: normalization: expected {\"mean\": number, \"std\": number > 0}");
    out->mean = (float)mean->valuedouble;
    out->std = (float)sd->valuedouble;
    uint64_t created;
    if (mf_get_u64(h, "created_unix", "", &created, err, errlen) != 0)
        return MODELFILE_ERR_HEADER;
    if ((double)created > MF_U53 || created > (uint64_t)INT64_MAX)
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER, "header: created_unix: out of range");
    out->created_unix = (int64_t)created;
    return 0;
}

int modelfile_decode(const uint8_t *buf, size_t len, modelfile *out, cnn_model *m, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof(*out));
    cnn_model mtmp;
    if (!m)
        m = &mtmp;
    size_t mlen = len < 8 ? len : 8;
    if (mlen > 0 && memcmp(buf, MODELFILE_MAGIC, mlen) != 0)
        return mf_fail(err, errlen, MODELFILE_ERR_MAGIC,
                       "not a psd model file (it does not start with \"%s\")", MODELFILE_MAGIC);
    if (len >= 12) {
        uint32_t fmt = proto_get_be32(buf + 8);
        if (fmt != MODELFILE_FORMAT)
            return mf_fail(err, errlen, MODELFILE_ERR_FORMAT,
                           "model file format %u, this psctl reads format %u only", fmt,
                           MODELFILE_FORMAT);
    }
    if (len < MODELFILE_FIXED + MODELFILE_TRAILER)
        return mf_fail(err, errlen, MODELFILE_ERR_TRUNCATED,
                       "truncated: %zu bytes, a model file has at least %u", len,
                       MODELFILE_FIXED + MODELFILE_HEADER_MIN + 4 + MODELFILE_TRAILER);
    uint32_t hlen = proto_get_be32(buf + 12);
    uint64_t np = proto_get_be64(buf + 16);
    if (hlen < MODELFILE_HEADER_MIN || hlen > MODELFILE_HEADER_MAX)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE,
                       "header length %u out of range %u..%u (corrupt file)", hlen,
                       MODELFILE_HEADER_MIN, MODELFILE_HEADER_MAX);
    if (np < 1 || np > MODELFILE_NPARAMS_MAX)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE,
                       "parameter count %llu out of range 1..%llu (corrupt file)",
                       (unsigned long long)np, (unsigned long long)MODELFILE_NPARAMS_MAX);
    uint64_t total = (uint64_t)MODELFILE_FIXED + hlen + 4 * np + MODELFILE_TRAILER;
    if ((uint64_t)len < total)
        return mf_fail(err, errlen, MODELFILE_ERR_TRUNCATED,
                       "truncated: %zu bytes, but its lengths (a %u-byte header, %llu "
                       "parameters) make %llu",
                       len, hlen, (unsigned long long)np, (unsigned long long)total);
    if ((uint64_t)len > total)
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE,
                       "%llu bytes after the CRC (the file should end at byte %llu)",
                       (unsigned long long)((uint64_t)len - total), (unsigned long long)total);
    uint32_t stored = proto_get_be32(buf + len - MODELFILE_TRAILER);
    uint32_t crc = util_crc32(buf, len - MODELFILE_TRAILER);
    if (stored != crc)
        return mf_fail(err, errlen, MODELFILE_ERR_CRC,
                       "CRC mismatch: the file says %08x, its contents give %08x (corrupt file)",
                       stored, crc);
    const char *htext = (const char *)buf + MODELFILE_FIXED;
    if (memchr(htext, '\0', hlen))
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER, "header: contains a NUL byte");
    cJSON *h = cJSON_ParseWithLength(htext, hlen);
    if (!h)
        return mf_fail(err, errlen, MODELFILE_ERR_HEADER, "header: not valid JSON");
    int rc = mf_header_check(h, np, out, m, err, errlen);
    if (rc == 0)
        rc = mf_shards_parse(h, np, &out->shards, &out->nshards, err, errlen);
    cJSON_Delete(h);
    if (rc != 0) {
        modelfile_free(out);
        return rc;
    }
    out->nparams = np;
    out->params = malloc((size_t)np * sizeof(float)); /* np * 4 < len: checked above */
    if (!out->params) {
        modelfile_free(out);
        return mf_fail(err, errlen, MODELFILE_ERR_NOMEM, "out of memory for %llu parameters",
                       (unsigned long long)np);
    }
    proto_floats_decode(out->params, buf + MODELFILE_FIXED + hlen, (size_t)np);
    return 0;
}

void modelfile_free(modelfile *mf)
{
    free(mf->shards);
    free(mf->params);
    memset(mf, 0, sizeof(*mf));
}

/* ---------------------------------------------------------------- files */

int modelfile_file_write(const char *path, const uint8_t *buf, size_t len, char *err,
                         size_t errlen)
{
    if (util_file_write_atomic(path, buf, len, err, errlen) != 0)
        return MODELFILE_ERR_IO;
    return 0;
}

int modelfile_file_read(const char *path, uint8_t **buf, size_t *len, char *err,
                        size_t errlen)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mf_fail(err, errlen, MODELFILE_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mf_fail(err, errlen, MODELFILE_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mf_fail(err, errlen, MODELFILE_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > MODELFILE_SIZE_MAX || (uint64_t)st.st_size > SIZE_MAX - 1) {
        close(fd);
        return mf_fail(err, errlen, MODELFILE_ERR_SIZE,
                       "%s: %lld bytes, larger than any model file (at most %llu)", path,
                       (long long)st.st_size, (unsigned long long)MODELFILE_SIZE_MAX);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return mf_fail(err, errlen, MODELFILE_ERR_NOMEM, "%s: out of memory for %zu bytes",
                       path, n);
    }
    size_t off = 0;
    while (off < n) {
        ssize_t r = read(fd, b + off, n - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(b);
            close(fd);
            return mf_fail(err, errlen, MODELFILE_ERR_IO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0)
            break; /* shrank while reading: decode sees the short length */
        off += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = off;
    return 0;
}

int modelfile_save(const char *path, const modelfile *mf, size_t *size, char *err,
                   size_t errlen)
{
    uint8_t *buf;
    size_t len;
    int rc = modelfile_encode(mf, &buf, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = modelfile_file_write(path, buf, len, err, errlen);
    free(buf);
    if (rc == 0 && size)
        *size = len;
    return rc;
}

int modelfile_load(const char *path, modelfile *out, cnn_model *m, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    uint8_t *buf;
    size_t len;
    int rc = modelfile_file_read(path, &buf, &len, err, errlen);
    if (rc != 0)
        return rc;
    char why[1024];
    rc = modelfile_decode(buf, len, out, m, why, sizeof why);
    free(buf);
    if (rc != 0)
        mf_fail(err, errlen, rc, "%s: %s", path, why);
    return rc;
}
