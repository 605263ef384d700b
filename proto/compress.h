/* compress.h - gradient and weight compression: IEEE binary16 conversion,
 * top-k selection, the sparse index/value encoding, and error feedback
 * (docs/protocol.md, "Encodings").
 *
 * Pure functions: no I/O, no global state, no allocation (callers pass the
 * workspace).  The decoders validate everything before writing anything:
 * a bad input leaves the destination untouched.
 *
 *   fp16    n entries as little-endian uint16 binary16 (2n bytes), rounded
 *           to nearest even; subnormals and infinities kept; a NaN stays a
 *           NaN with the top 10 bits of its payload (0x200 if those are 0),
 *           so binary16 -> float -> binary16 gives back every value.
 *   sparse  a big-endian uint32 count, then count little-endian fp32
 *           values, then their indices (relative to the slice start, < n,
 *           strictly increasing) as count unsigned LEB128 varints of the
 *           gaps: the first index, then each index minus the one before
 *           minus 1, each in its shortest form (1-5 bytes):
 *           4 + 4 * count + (count .. 5 * count) bytes.
 */
#ifndef PSD_COMPRESS_H
#define PSD_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* Why a sparse or fp16 body was refused (negative; 0 is success).  The
 * message decoders (proto.h) turn these into PROTO_ERR_BAD_FRAME, or
 * PROTO_ERR_RANGE for an index out of range. */
typedef enum proto_cmp_err {
    PROTO_CMP_OK = 0,
    PROTO_CMP_TRUNCATED = -1,   /* fewer bytes than the count says */
    PROTO_CMP_EXTRA = -2,       /* more bytes than the count says */
    PROTO_CMP_COUNT = -3,       /* count > n */
    PROTO_CMP_INDEX_RANGE = -4, /* an index >= n */
    PROTO_CMP_GAP = -5,         /* a gap varint over 5 bytes, >= 2^32, or not minimal */
    PROTO_CMP_INVALID = -6,     /* local only: bad argument (k > n, ...) */
    PROTO_CMP_ERR_MIN = -6
} proto_cmp_err;

/* A static description of a proto_cmp_err. */
const char *proto_cmp_strerror(int code);

#define PROTO_SPARSE_HEAD 4 /* the count */
#define PROTO_SPARSE_MIN_ENTRY 5 /* value + the shortest gap */
#define PROTO_SPARSE_MAX_ENTRY 9 /* value + the longest gap */

/* ------------------------------------------------------------- fp16 */

/* f as binary16, round to nearest even (overflow to infinity, underflow
 * through the subnormals to a signed zero, NaN to a NaN: see above). */
uint16_t proto_f32_to_f16(float f);

/* h as float (exact: every binary16 is a float). */
float proto_f16_to_f32(uint16_t h);

/* f rounded through binary16 and back. */
float proto_f16_round(float f);

/* n floats as 2n little-endian binary16 bytes at dst (any alignment). */
void proto_fp16_encode(uint8_t *dst, const float *src, size_t n);

/* 2n little-endian binary16 bytes at src into n floats at dst. */
void proto_fp16_decode(float *dst, const uint8_t *src, size_t n);

/* ------------------------------------------------------------- top-k */

/* The k entries of v[0..n) largest in magnitude, by the total order
 * "larger |v| first, then smaller index first" (a NaN counts as larger than
 * any number), written to idx[0..k) in increasing index order.  work holds
 * n uint32 (scratch).  O(n): three passes (a radix select).  Returns 0, or
 * PROTO_CMP_INVALID (k > n, n >= 2^32). */
int proto_topk_select(const float *v, size_t n, size_t k, uint32_t *work, uint32_t *idx);

/* k for a share of p percent of n entries: ceil(p / 100 * n), at least 1,
 * at most n (n > 0). */
size_t proto_topk_count(size_t n, double percent);

/* ----------------------------------------------------------- sparse */

/* Bytes of a sparse body of the count strictly increasing indices idx. */
size_t proto_sparse_size(const uint32_t *idx, size_t count);

/* The most bytes a sparse body of count entries can take. */
static inline size_t proto_sparse_size_max(size_t count)
{
    return PROTO_SPARSE_HEAD + PROTO_SPARSE_MAX_ENTRY * count;
}

/* Write count pairs (idx[j], vals[j]) as a sparse body at dst
 * (proto_sparse_size(idx, count) bytes).  The caller guarantees the
 * indices are strictly increasing (proto_sparse_check on the result would
 * pass). */
void proto_sparse_encode(uint8_t *dst, const uint32_t *idx, const float *vals, size_t count);

/* The delta of old -> cur, for a delta WEIGHTS: the entries where cur
 * differs from old (bit for bit: -0 != +0, a NaN payload counts).  Returns
 * the bytes of its sparse body, with *count the entries. */
size_t proto_delta_size(const float *old, const float *cur, size_t n, size_t *count);

/* Write the delta of old -> cur as a sparse body at dst (count and the
 * size from proto_delta_size). */
void proto_delta_encode(uint8_t *dst, const float *old, const float *cur, size_t n, size_t count);

/* Validate a sparse body of len bytes for a slice of n entries: count <= n,
 * every gap a minimal varint below 2^32, every index < n, and no byte after
 * the last gap.  Returns 0 with *count set, or a PROTO_CMP_* error. */
int proto_sparse_check(const uint8_t *body, size_t len, size_t n, size_t *count);

/* Validate (proto_sparse_check) and write the entries to idx[0..count) and
 * vals[0..count) (room for n each, or for the count the body says).
 * Returns 0 with *count set, or a PROTO_CMP_* error (idx may have been
 * written). */
int proto_sparse_decode(const uint8_t *body, size_t len, size_t n, uint32_t *idx, float *vals,
                        size_t *count);

/* Write a sparse body's values into dst[0..n) at their indices; the other
 * entries are left as they are (zero them first for a sparse gradient).
 * Validates first (proto_sparse_check): on error dst is untouched. */
int proto_sparse_apply(const uint8_t *body, size_t len, size_t n, float *dst);

/* ---------------------------------------------------- error feedback */

/* fp16 error feedback on one slice: g' = g + r (r the residual, n
 * floats), send[j] = g'[j] (what the fp16 encoder will round), and
 * r = g' - fp16(g'): the rounding error is sent with the next gradient. */
void proto_ef_fp16(const float *g, float *r, float *send, size_t n);

/* top-k error feedback on one slice: r += g, the k largest |r| are chosen
 * (proto_topk_select: idx in increasing order, vals their values), and
 * those entries of r are zeroed: what was not sent stays in r.  work holds
 * n uint32.  Returns 0 or PROTO_CMP_INVALID. */
int proto_ef_topk(const float *g, float *r, size_t n, size_t k, uint32_t *work, uint32_t *idx,
                  float *vals);

#endif
