/* check_modelfile.c - the model file format (common/modelfile.h): round
 * trips, the exact bytes of the fixed part, every truncation, every flipped
 * byte, and each header inconsistency the decoder must refuse with its own
 * error code and a clear message; atomic file writes.
 *
 * Corrupt inputs are copied into buffers of exactly their length, so under
 * ASan (make SANITIZE=1) a read past the end is caught.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "fixtures.h"
#include "modelfile.h"
#include "proto.h"

/* A model file of model `name`, split in two shards, parameters from a
 * pattern with exact binary fractions and a few special values. */
static void sample_init(modelfile *mf, const char *name)
{
    cnn_model m;
    char err[256];
    ck_assert_msg(cnn_model_init(&m, name, err, sizeof err) == 0, "%s", err);
    memset(mf, 0, sizeof(*mf));
    snprintf(mf->model, sizeof mf->model, "%s", name);
    mf->nparams = m.nparams;
    mf->mean = 0.1307f;
    mf->std = 0.3081f;
    mf->created_unix = 1795692115;
    mf->nshards = 2;
    mf->shards = calloc(2, sizeof(*mf->shards));
    mf->params = malloc(m.nparams * sizeof(float));
    ck_assert(mf->shards && mf->params);
    size_t split = (m.nparams / 2) & ~(size_t)15;
    mf->shards[0] = (modelfile_shard){.shard = 0, .lo = 0, .hi = split, .version = 1234};
    mf->shards[1] = (modelfile_shard){.shard = 1, .lo = split, .hi = m.nparams, .version = 1230};
    snprintf(mf->shards[0].node, sizeof mf->shards[0].node, "ps0");
    snprintf(mf->shards[1].node, sizeof mf->shards[1].node, "box-2.ps1");
    for (size_t i = 0; i < m.nparams; i++)
        mf->params[i] = (float)((int)(i % 257) - 128) / 64.0f + (float)i * 1e-7f;
    mf->params[0] = -0.0f;
    mf->params[1] = 1e-40f; /* subnormal */
    mf->params[2] = 3.4028235e38f;
}

static void encode_ok(const modelfile *mf, uint8_t **buf, size_t *len)
{
    char err[512];
    int rc = modelfile_encode(mf, buf, len, err, sizeof err);
    ck_assert_msg(rc == 0, "encode: %d %s", rc, err);
}

/* Decode len bytes from an exact-size copy.  Returns the code; err filled. */
static int decode_copy(const uint8_t *src, size_t len, modelfile *out, char *err, size_t errlen)
{
    uint8_t *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    if (len)
        memcpy(b, src, len);
    err[0] = '\0';
    int rc = modelfile_decode(len ? b : NULL, len, out, NULL, err, errlen);
    free(b);
    return rc;
}

/* Decode must fail with `code` and a message containing `want`. */
static void decode_fails(const uint8_t *buf, size_t len, int code, const char *want)
{
    modelfile out;
    char err[1024];
    int rc = decode_copy(buf, len, &out, err, sizeof err);
    ck_assert_msg(rc == code, "expected %d (%s), got %d: %s", code, modelfile_strerror(code), rc,
                  err);
    ck_assert_msg(strstr(err, want) != NULL, "message \"%s\" lacks \"%s\"", err, want);
    ck_assert_ptr_null(out.params);
    ck_assert_ptr_null(out.shards);
}

/* The header of an encoded file as a cJSON document. */
static cJSON *header_of(const uint8_t *buf, size_t len)
{
    ck_assert_uint_ge(len, MODELFILE_FIXED);
    uint32_t h = proto_get_be32(buf + 12);
    cJSON *doc = cJSON_ParseWithLength((const char *)buf + MODELFILE_FIXED, h);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

/* A well-formed container (right CRC) around doc and the params of mf;
 * takes doc. */
static void assemble(cJSON *doc, const float *params, uint64_t np, uint8_t **buf, size_t *len)
{
    char *txt = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    ck_assert_ptr_nonnull(txt);
    char err[256];
    int rc = modelfile_assemble(txt, strlen(txt), params, np, buf, len, err, sizeof err);
    cJSON_free(txt);
    ck_assert_msg(rc == 0, "assemble: %s", err);
}

/* Re-stamp the CRC after patching bytes of buf. */
static void crc_fix(uint8_t *buf, size_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, buf, (uInt)(len - 4));
    proto_put_be32(buf + len - 4, (uint32_t)c);
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_round_trip)
{
    static const char *const names[] = {"ray", "lenet"};
    for (size_t k = 0; k < 2; k++) {
        modelfile mf;
        sample_init(&mf, names[k]);
        uint8_t *buf;
        size_t len;
        encode_ok(&mf, &buf, &len);
        /* the fixed part, byte by byte */
        ck_assert_int_eq(memcmp(buf, "PSDMODL\0", 8), 0);
        ck_assert_uint_eq(proto_get_be32(buf + 8), 1);
        uint32_t h = proto_get_be32(buf + 12);
        ck_assert_uint_eq(proto_get_be64(buf + 16), mf.nparams);
        ck_assert_uint_eq(len, MODELFILE_FIXED + h + 4 * mf.nparams + 4);
        uLong c = crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(len - 4));
        ck_assert_uint_eq(proto_get_be32(buf + len - 4), (uint32_t)c);
        /* floats little-endian right after the header */
        float f;
        uint8_t le[4];
        memcpy(&f, &mf.params[5], 4);
        proto_floats_encode(le, &f, 1);
        ck_assert_int_eq(memcmp(buf + MODELFILE_FIXED + h + 20, le, 4), 0);
        /* the header is readable JSON and says what it should */
        cJSON *doc = header_of(buf, len);
        ck_assert_str_eq(cJSON_GetObjectItem(doc, "model")->valuestring, names[k]);
        ck_assert_double_eq(cJSON_GetObjectItem(doc, "nparams")->valuedouble,
                            (double)mf.nparams);
        const cJSON *norm = cJSON_GetObjectItem(doc, "normalization");
        ck_assert_double_eq(cJSON_GetObjectItem(norm, "mean")->valuedouble, 0.1307);
        ck_assert_double_eq(cJSON_GetObjectItem(norm, "std")->valuedouble, 0.3081);
        ck_assert_str_eq(cJSON_GetObjectItem(doc, "created")->valuestring,
                         "2026-11-26T11:21:55Z");
        cJSON_Delete(doc);

        modelfile out;
        cnn_model m;
        char err[512];
        int rc = modelfile_decode(buf, len, &out, &m, err, sizeof err);
        ck_assert_msg(rc == 0, "decode: %s", err);
        ck_assert_str_eq(out.model, names[k]);
        ck_assert_str_eq(m.name, names[k]);
        ck_assert_uint_eq(m.nparams, mf.nparams);
        ck_assert_uint_eq(out.nparams, mf.nparams);
        ck_assert(out.mean == mf.mean && out.std == mf.std);
        ck_assert_int_eq(out.created_unix, mf.created_unix);
        ck_assert_uint_eq(out.nshards, 2);
        for (int s = 0; s < 2; s++) {
            ck_assert_uint_eq(out.shards[s].shard, (unsigned)s);
            ck_assert_str_eq(out.shards[s].node, mf.shards[s].node);
            ck_assert_uint_eq(out.shards[s].lo, mf.shards[s].lo);
            ck_assert_uint_eq(out.shards[s].hi, mf.shards[s].hi);
            ck_assert_uint_eq(out.shards[s].version, mf.shards[s].version);
        }
        ck_assert_int_eq(memcmp(out.params, mf.params, mf.nparams * sizeof(float)), 0);
        ck_assert(signbit(out.params[0]));
        modelfile_free(&out);
        ck_assert_ptr_null(out.params);
        free(buf);
        modelfile_free(&mf);
    }
}
END_TEST

/* Versions above 2^53 are not exact as JSON numbers: they go as strings. */
START_TEST(test_large_versions)
{
    modelfile mf;
    sample_init(&mf, "ray");
    mf.shards[0].version = UINT64_MAX;
    mf.shards[1].version = (1ull << 53) + 1;
    uint8_t *buf;
    size_t len;
    encode_ok(&mf, &buf, &len);
    cJSON *doc = header_of(buf, len);
    const cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "shards"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(s0, "version")->valuestring, "18446744073709551615");
    cJSON_Delete(doc);
    modelfile out;
    char err[512];
    ck_assert_msg(modelfile_decode(buf, len, &out, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(out.shards[0].version, UINT64_MAX);
    ck_assert_uint_eq(out.shards[1].version, (1ull << 53) + 1);
    modelfile_free(&out);
    free(buf);
    modelfile_free(&mf);
}
END_TEST

/* Every proper prefix of a file is refused as truncated (for ray: every
 * length; for lenet, whose file is 1.7 MB, every length of the fixed part
 * and header and a stride through the floats). */
START_TEST(test_truncations)
{
    static const char *const names[] = {"ray", "lenet"};
    for (size_t k = 0; k < 2; k++) {
        modelfile mf;
        sample_init(&mf, names[k]);
        uint8_t *buf;
        size_t len;
        encode_ok(&mf, &buf, &len);
        uint32_t h = proto_get_be32(buf + 12);
        size_t tested = 0;
        for (size_t cut = 0; cut < len; cut++) {
            if (k == 1 && cut > MODELFILE_FIXED + h + 64 && cut < len - 64 &&
                cut % (len / 50) != 0)
                continue;
            modelfile out;
            char err[1024];
            int rc = decode_copy(buf, cut, &out, err, sizeof err);
            if (rc != MODELFILE_ERR_TRUNCATED)
                ck_abort_msg("%s cut at %zu of %zu: expected TRUNCATED, got %d: %s", names[k],
                             cut, len, rc, err);
            if (!strstr(err, "truncated"))
                ck_abort_msg("%s cut at %zu: message \"%s\"", names[k], cut, err);
            if (out.params || out.shards)
                ck_abort_msg("%s cut at %zu: output left allocated", names[k], cut);
            tested++;
        }
        ck_assert_uint_gt(tested, 1000);
        free(buf);
        modelfile_free(&mf);
    }
}
END_TEST

/* Every byte of a ray file, flipped, is refused: in the magic as MAGIC, in
 * the format as FORMAT, in the lengths as a length error, anywhere from the
 * header on (header, floats, the CRC itself) as a CRC mismatch. */
START_TEST(test_flipped_bytes)
{
    modelfile mf;
    sample_init(&mf, "ray");
    uint8_t *buf;
    size_t len;
    encode_ok(&mf, &buf, &len);
    uint8_t *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) { /* the lowest and the highest bit */
            memcpy(b, buf, len);
            b[i] ^= (uint8_t)(1u << bit);
            modelfile out;
            char err[1024] = "";
            int rc = modelfile_decode(b, len, &out, NULL, err, sizeof err);
            int want_ok;
            if (i < 8)
                want_ok = rc == MODELFILE_ERR_MAGIC;
            else if (i < 12)
                want_ok = rc == MODELFILE_ERR_FORMAT;
            else if (i < MODELFILE_FIXED)
                want_ok = rc == MODELFILE_ERR_SIZE || rc == MODELFILE_ERR_TRUNCATED;
            else
                want_ok = rc == MODELFILE_ERR_CRC && strstr(err, "CRC mismatch");
            if (!want_ok)
                ck_abort_msg("byte %zu bit %d flipped: got %d (%s)", i, bit, rc, err);
            if (out.params || out.shards)
                ck_abort_msg("byte %zu: output left allocated", i);
        }
    }
    free(b);
    free(buf);
    modelfile_free(&mf);
}
END_TEST

START_TEST(test_bad_magic_format_trailing)
{
    modelfile mf;
    sample_init(&mf, "ray");
    uint8_t *buf;
    size_t len;
    encode_ok(&mf, &buf, &len);
    /* a psd checkpoint given by mistake */
    uint8_t *b = malloc(len + 16);
    ck_assert_ptr_nonnull(b);
    memcpy(b, buf, len);
    memcpy(b, "PSDCKPT\0", 8);
    decode_fails(b, len, MODELFILE_ERR_MAGIC, "not a psd model file");
    decode_fails((const uint8_t *)"PK\3\4", 4, MODELFILE_ERR_MAGIC, "not a psd model file");
    decode_fails((const uint8_t *)"", 0, MODELFILE_ERR_TRUNCATED, "truncated: 0 bytes");
    /* a newer format, even with a right CRC */
    memcpy(b, buf, len);
    proto_put_be32(b + 8, 2);
    crc_fix(b, len);
    decode_fails(b, len, MODELFILE_ERR_FORMAT, "format 2");
    /* bytes after the CRC */
    memcpy(b, buf, len);
    memset(b + len, 0, 16);
    decode_fails(b, len + 16, MODELFILE_ERR_SIZE, "16 bytes after the CRC");
    /* absurd lengths are refused before anything is allocated */
    memcpy(b, buf, len);
    proto_put_be64(b + 16, MODELFILE_NPARAMS_MAX + 1);
    decode_fails(b, len, MODELFILE_ERR_SIZE, "parameter count");
    proto_put_be64(b + 16, UINT64_MAX);
    decode_fails(b, len, MODELFILE_ERR_SIZE, "parameter count");
    memcpy(b, buf, len);
    proto_put_be32(b + 12, UINT32_MAX);
    decode_fails(b, len, MODELFILE_ERR_SIZE, "header length");
    proto_put_be32(b + 12, 1);
    decode_fails(b, len, MODELFILE_ERR_SIZE, "header length");
    /* nparams one too many: the file is one float short */
    memcpy(b, buf, len);
    proto_put_be64(b + 16, mf.nparams + 1);
    decode_fails(b, len, MODELFILE_ERR_TRUNCATED, "truncated");
    free(b);
    free(buf);
    modelfile_free(&mf);
}
END_TEST

/* A header that is well-formed as a file (right lengths and CRC) but
 * inconsistent: each is refused with its own code and message. */
START_TEST(test_header_inconsistent)
{
    modelfile mf;
    sample_init(&mf, "ray");
    uint8_t *good, *b;
    size_t glen, len;
    encode_ok(&mf, &good, &glen);
    cJSON *doc;

    /* nparams in the header differs from the binary count */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(doc, "nparams", cJSON_CreateNumber(1961));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_HEADER, "nparams: says 1961, but the file holds 1960");
    free(b);

    /* header and binary agree, but ray has 1960 parameters */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(doc, "nparams", cJSON_CreateNumber(1000));
    assemble(doc, mf.params, 1000, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_MODEL, "model ray has 1960");
    free(b);

    /* unknown model */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(doc, "model", cJSON_CreateString("resnet"));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_MODEL, "unknown model 'resnet' (known: ray, lenet)");
    free(b);

    /* a layer's weight offset moved */
    doc = header_of(good, glen);
    cJSON *l3 = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "layers"), 3);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(l3, "weight"), "offset", cJSON_CreateNumber(31));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_MODEL, "layers[3]: ");
    free(b);

    /* a layer missing */
    doc = header_of(good, glen);
    cJSON_DeleteItemFromArray(cJSON_GetObjectItem(doc, "layers"), 2);
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_MODEL, "layers: expected an array of the 4 layers");
    free(b);

    /* another input size */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(doc, "input"), "height",
                              cJSON_CreateNumber(32));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_MODEL, "input: ");
    free(b);

    /* normalisation */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(doc, "normalization"), "std",
                              cJSON_CreateNumber(0));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_HEADER, "normalization");
    free(b);

    /* shards: a gap, an overlap, not ending at nparams, missing */
    static const struct {
        int shard;
        const char *key;
        double v;
        const char *want;
    } sh[] = {
        {1, "lo", 992, "leaves a gap"},
        {1, "lo", 900, "overlaps"},
        {1, "hi", 1900, "end at 1900"},
        {1, "shard", 5, "is shard 5"},
        {0, "version", -1, "shards[0].version: expected an unsigned integer"},
    };
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        doc = header_of(good, glen);
        cJSON *so = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "shards"), sh[i].shard);
        cJSON_ReplaceItemInObject(so, sh[i].key, cJSON_CreateNumber(sh[i].v));
        assemble(doc, mf.params, mf.nparams, &b, &len);
        decode_fails(b, len, MODELFILE_ERR_HEADER, sh[i].want);
        free(b);
    }
    doc = header_of(good, glen);
    cJSON_DeleteItemFromObject(doc, "shards");
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_HEADER, "shards: missing");
    free(b);

    /* creation time */
    doc = header_of(good, glen);
    cJSON_ReplaceItemInObject(doc, "created_unix", cJSON_CreateNumber(1.5));
    assemble(doc, mf.params, mf.nparams, &b, &len);
    decode_fails(b, len, MODELFILE_ERR_HEADER, "created_unix");
    free(b);

    /* unknown keys are ignored (a writer may add informational ones) */
    doc = header_of(good, glen);
    cJSON_AddStringToObject(doc, "comment", "exported at the end of run 7");
    assemble(doc, mf.params, mf.nparams, &b, &len);
    modelfile out;
    char err[512];
    ck_assert_msg(modelfile_decode(b, len, &out, NULL, err, sizeof err) == 0, "%s", err);
    modelfile_free(&out);
    free(b);

    /* not JSON, not an object, a NUL inside */
    static const char *const bad[] = {"{\"model\": ", "[1, 2]", "{\"model\":\"ray\"}\0x"};
    static const size_t badlen[] = {10, 6, 17};
    static const char *const badwant[] = {"not valid JSON", "not a JSON object", "NUL"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(modelfile_assemble(bad[i], badlen[i], mf.params, mf.nparams, &b, &len,
                                            err, sizeof err),
                         0);
        decode_fails(b, len, MODELFILE_ERR_HEADER, badwant[i]);
        free(b);
    }
    free(good);
    modelfile_free(&mf);
}
END_TEST

START_TEST(test_encode_invalid)
{
    modelfile mf;
    sample_init(&mf, "ray");
    uint8_t *b = (uint8_t *)"x";
    size_t len = 7;
    char err[512];
    modelfile bad = mf;
    snprintf(bad.model, sizeof bad.model, "resnet");
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    ck_assert_msg(strstr(err, "unknown model"), "%s", err);
    ck_assert_ptr_null(b);
    ck_assert_uint_eq(len, 0);
    bad = mf;
    bad.nparams = 1959;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    bad = mf;
    bad.std = 0;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    bad.std = NAN;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    bad = mf;
    bad.created_unix = -1;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    bad = mf;
    bad.nshards = 0;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    bad = mf;
    mf.shards[1].lo = 16;
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    ck_assert_msg(strstr(err, "overlaps"), "%s", err);
    mf.shards[1].lo = mf.shards[0].hi;
    snprintf(mf.shards[1].node, sizeof mf.shards[1].node, "has space");
    ck_assert_int_eq(modelfile_encode(&bad, &b, &len, err, sizeof err), MODELFILE_ERR_INVALID);
    ck_assert_int_eq(modelfile_assemble("{}", 2, mf.params, 0, &b, &len, err, sizeof err),
                     MODELFILE_ERR_SIZE);
    ck_assert_int_eq(modelfile_assemble("{", 1, mf.params, 10, &b, &len, err, sizeof err),
                     MODELFILE_ERR_SIZE);
    ck_assert_ptr_null(b);
    modelfile_free(&mf);
}
END_TEST

/* Names in dir other than "." and ".."; returns the count, first in *name. */
static int dir_entries(const char *dir, char *name, size_t namelen)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n++ == 0 && name)
            snprintf(name, namelen, "%s", e->d_name);
    }
    closedir(d);
    return n;
}

START_TEST(test_files)
{
    char dir[FIXTURES_PATH_MAX], path[FIXTURES_PATH_MAX], err[1024], name[256];
    ck_assert_int_eq(fixtures_tmpdir_make(dir, sizeof dir), 0);
    ck_assert_int_eq(fixtures_path_join(path, sizeof path, dir, "model.psdm"), 0);
    modelfile mf;
    sample_init(&mf, "ray");
    size_t size = 0;
    ck_assert_msg(modelfile_save(path, &mf, &size, err, sizeof err) == 0, "%s", err);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((size_t)st.st_size, size);
    ck_assert_int_eq(dir_entries(dir, name, sizeof name), 1); /* no temporary file left */
    ck_assert_str_eq(name, "model.psdm");

    /* overwrite with another version: the new one replaces it */
    mf.shards[0].version = 99;
    ck_assert_msg(modelfile_save(path, &mf, NULL, err, sizeof err) == 0, "%s", err);
    modelfile out;
    cnn_model m;
    ck_assert_msg(modelfile_load(path, &out, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(out.shards[0].version, 99);
    ck_assert_str_eq(m.name, "ray");
    modelfile_free(&out);
    ck_assert_int_eq(dir_entries(dir, NULL, 0), 1);

    /* a failing save leaves the old file alone */
    modelfile bad = mf;
    bad.std = -1;
    ck_assert_int_eq(modelfile_save(path, &bad, NULL, err, sizeof err), MODELFILE_ERR_INVALID);
    ck_assert_msg(modelfile_load(path, &out, NULL, err, sizeof err) == 0, "%s", err);
    modelfile_free(&out);

    /* a directory that does not exist: nothing created, the path named */
    char nodir[FIXTURES_PATH_MAX + 32];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.psdm", dir);
    ck_assert_int_eq(modelfile_save(nodir, &mf, NULL, err, sizeof err), MODELFILE_ERR_IO);
    ck_assert_msg(strstr(err, "no/such/dir"), "%s", err);
    ck_assert_int_eq(dir_entries(dir, NULL, 0), 1);

    /* load: messages start with the path */
    ck_assert_int_eq(modelfile_load(nodir, &out, NULL, err, sizeof err), MODELFILE_ERR_IO);
    ck_assert_msg(strstr(err, nodir) == err, "%s", err);
    ck_assert_int_eq(modelfile_load(dir, &out, NULL, err, sizeof err), MODELFILE_ERR_IO);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
    ck_assert_int_eq(fixtures_file_truncate(path, 100), 0);
    ck_assert_int_eq(modelfile_load(path, &out, NULL, err, sizeof err), MODELFILE_ERR_TRUNCATED);
    ck_assert_msg(strstr(err, path) == err && strstr(err, "truncated: 100 bytes"), "%s", err);
    ck_assert_ptr_null(out.params);

    modelfile_free(&mf);
    fixtures_tmpdir_remove(dir);
}
END_TEST

Suite *modelfile_suite(void)
{
    Suite *s = suite_create("modelfile");
    TCase *tc = tcase_create("format");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_large_versions);
    tcase_add_test(tc, test_truncations);
    tcase_add_test(tc, test_flipped_bytes);
    tcase_add_test(tc, test_bad_magic_format_trailing);
    tcase_add_test(tc, test_header_inconsistent);
    tcase_add_test(tc, test_encode_invalid);
    tcase_add_test(tc, test_files);
    suite_add_tcase(s, tc);
    return s;
}
