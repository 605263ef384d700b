/* fuzz_compress.c - libFuzzer target: the compression codecs of
 * proto/compress.h on their own (the messages that carry them are in
 * fuzz_msg).
 *
 * Input: byte 0 picks the codec, bytes 1-2 (big-endian) are the slice
 * length n (1..65536, 0 meaning 65536 ... capped by what follows), the rest
 * is the body.
 *   0  sparse: proto_sparse_check on the body for n entries; when it
 *      accepts, proto_sparse_apply must too and write only in [0, n), and
 *      the pairs re-encoded (proto_sparse_encode) give the body back byte
 *      for byte; when it refuses, apply refuses the same and writes nothing.
 *   1  fp16: the body's whole u16s decoded and encoded again give the same
 *      bytes (every binary16, NaN payloads included).
 *   2  top-k: the body's whole floats, k = n mod (count + 1): the selection
 *      has k strictly increasing indices, and no entry left out comes
 *      before a chosen one (larger |v|, or equal and smaller index); its
 *      sparse body passes proto_sparse_check; error feedback from r = 0
 *      sends the same entries and keeps every other one in r.
 */
#include <string.h>

#include "fuzz.h"

static uint32_t key_of(const float *v, uint32_t i)
{
    uint32_t u;
    memcpy(&u, &v[i], 4);
    return u & 0x7fffffffu;
}

static void fuzz_sparse(size_t n, const uint8_t *body, size_t len)
{
    size_t count = 0;
    int rc = proto_sparse_check(body, len, n, &count);
    float *dst = malloc((n + 1) * sizeof *dst);
    FUZZ_ASSERT(dst != NULL, "out of memory");
    for (size_t i = 0; i <= n; i++)
        dst[i] = -7.0f; /* dst[n] is a canary */
    int rc2 = proto_sparse_apply(body, len, n, dst);
    FUZZ_ASSERT(rc == rc2, "check says %d, apply says %d", rc, rc2);
    FUZZ_ASSERT(dst[n] == -7.0f, "apply wrote past the slice");
    if (rc != 0) {
        FUZZ_ASSERT(rc >= PROTO_CMP_ERR_MIN && rc < 0, "unknown code %d", rc);
        for (size_t i = 0; i < n; i++)
            FUZZ_ASSERT(dst[i] == -7.0f, "a refused body changed entry %zu", i);
        free(dst);
        return;
    }
    uint32_t *idx = malloc((count + 1) * sizeof *idx);
    float *vals = malloc((count + 1) * sizeof *vals);
    uint8_t *again = malloc(len);
    FUZZ_ASSERT(idx && vals && again, "out of memory");
    size_t c2 = 0;
    FUZZ_ASSERT(proto_sparse_decode(body, len, n, idx, vals, &c2) == 0 && c2 == count,
                "check accepts, decode does not");
    FUZZ_ASSERT(count <= n && len == proto_sparse_size(idx, count), "count %zu, n %zu, len %zu",
                count, n, len);
    for (size_t j = 0; j < count; j++) {
        FUZZ_ASSERT(idx[j] < n && (j == 0 || idx[j] > idx[j - 1]), "index %zu accepted", j);
        FUZZ_ASSERT(memcmp(&dst[idx[j]], &vals[j], 4) == 0, "entry %u not applied", idx[j]);
    }
    proto_sparse_encode(again, idx, vals, count);
    FUZZ_ASSERT(memcmp(again, body, len) == 0, "sparse re-encoding differs");
    free(idx);
    free(vals);
    free(again);
    free(dst);
}

static void fuzz_fp16(const uint8_t *body, size_t len)
{
    size_t n = len / 2;
    float *v = malloc((n + 1) * sizeof *v);
    uint8_t *again = malloc(2 * n + 1);
    FUZZ_ASSERT(v && again, "out of memory");
    proto_fp16_decode(v, body, n);
    proto_fp16_encode(again, v, n);
    for (size_t i = 0; i < 2 * n; i++)
        FUZZ_ASSERT(again[i] == body[i], "fp16 byte %zu: 0x%02x, was 0x%02x", i, again[i],
                    body[i]);
    free(v);
    free(again);
}

static void fuzz_topk(size_t nsel, const uint8_t *body, size_t len)
{
    size_t n = len / 4;
    if (n == 0)
        return;
    size_t k = nsel % (n + 1);
    float *v = malloc(n * sizeof *v), *r = calloc(n, sizeof *r), *vals = malloc(n * sizeof *vals);
    uint32_t *work = malloc(n * sizeof *work), *idx = malloc(n * sizeof *idx);
    uint8_t *chosen = calloc(n, 1), *sp = malloc(proto_sparse_size_max(n));
    FUZZ_ASSERT(v && r && vals && work && idx && chosen && sp, "out of memory");
    proto_floats_decode(v, body, n);
    FUZZ_ASSERT(proto_topk_select(v, n, k, work, idx) == 0, "select refused k %zu of %zu", k, n);
    uint32_t worst = 0;
    for (size_t j = 0; j < k; j++) {
        FUZZ_ASSERT(idx[j] < n && (j == 0 || idx[j] > idx[j - 1]), "selection not increasing");
        chosen[idx[j]] = 1;
        vals[j] = v[idx[j]];
        if (j == 0 || key_of(v, idx[j]) < key_of(v, worst) ||
            (key_of(v, idx[j]) == key_of(v, worst) && idx[j] > worst))
            worst = idx[j];
    }
    for (uint32_t i = 0; k > 0 && i < n; i++)
        if (!chosen[i])
            FUZZ_ASSERT(key_of(v, i) < key_of(v, worst) ||
                            (key_of(v, i) == key_of(v, worst) && i > worst),
                        "entry %u left out but comes before chosen entry %u", i, worst);
    proto_sparse_encode(sp, idx, vals, k);
    size_t c = 0;
    FUZZ_ASSERT(proto_sparse_size(idx, k) <= proto_sparse_size_max(k) &&
                    proto_sparse_check(sp, proto_sparse_size(idx, k), n, &c) == 0 && c == k,
                "a top-k body does not check");
    /* error feedback from r = 0: what is sent plus what is kept is g */
    FUZZ_ASSERT(proto_ef_topk(v, r, n, k, work, idx, vals) == 0, "ef refused");
    memset(chosen, 0, n); /* 0 + v may differ from v (-0, a signalling NaN): its own choice */
    for (size_t j = 0; j < k; j++) {
        FUZZ_ASSERT(r[idx[j]] == 0.0f, "a sent entry stayed in the residual");
        chosen[idx[j]] = 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!chosen[i])
            FUZZ_ASSERT(memcmp(&r[i], &v[i], 4) == 0 || (v[i] == 0.0f && r[i] == 0.0f) ||
                            (v[i] != v[i] && r[i] != r[i]), /* 0 + NaN: a quiet NaN */
                        "entry %zu not kept", i);
    free(v), free(r), free(vals), free(work), free(idx), free(chosen), free(sp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t n = (size_t)data[1] << 8 | data[2];
    if (n == 0)
        n = 65536;
    const uint8_t *body = data + 3;
    size_t len = size - 3;
    switch (data[0] % 3) {
    case 0: fuzz_sparse(n, body, len); break;
    case 1: fuzz_fp16(body, len); break;
    default: fuzz_topk(n, body, len); break;
    }
    return 0;
}
