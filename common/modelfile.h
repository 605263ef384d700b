/* modelfile.h - a trained model in one file: `psctl export` writes it,
 * `psctl eval` reads it (docs/modelfile.md is the specification).
 *
 * Layout (integers big-endian, floats little-endian, as on the wire):
 *
 *    0   8  magic "PSDMODL\0"
 *    8   u32 format (1)
 *   12   u32 header_len H: bytes of the JSON header, 2 .. 1 MiB
 *   16   u64 nparams N: floats that follow the header, 1 .. 2^28
 *   24   H  JSON header (UTF-8, no NUL): model name, nparams, input shape,
 *           classes, every layer (kind, shapes, weight/bias offsets and
 *           shapes), input normalisation, per-shard ranges and versions,
 *           creation time
 *   24+H 4N f32 parameters, the model's flat vector (docs/model.md)
 *   end  u32 CRC-32 (zlib) of every byte before it
 *
 * modelfile_encode/_decode are pure (no I/O).  The decoder checks every
 * length against the buffer and the maxima before it allocates anything, so
 * a corrupt or hostile file costs at most its own size; it refuses a bad
 * magic, an unknown format, a truncated file, trailing bytes, a CRC mismatch,
 * and a header that is not JSON, names an unknown model, or disagrees with
 * the binary part or with the built-in model of that name (layout).  Every
 * function returns 0 or a negative MODELFILE_ERR_* with a message in the
 * caller's buffer; nothing exits.
 */
#ifndef PSD_MODELFILE_H
#define PSD_MODELFILE_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"

#define MODELFILE_MAGIC "PSDMODL"        /* 7 chars + NUL = 8 bytes */
#define MODELFILE_FORMAT 1u
#define MODELFILE_FIXED 24u              /* magic, format, header_len, nparams */
#define MODELFILE_TRAILER 4u             /* the CRC-32 */
#define MODELFILE_HEADER_MIN 2u          /* "{}" */
#define MODELFILE_HEADER_MAX (1u << 20)  /* JSON header bytes */
#define MODELFILE_NPARAMS_MAX (1ull << 28) /* 1 GiB of floats */
#define MODELFILE_SHARDS_MAX 1024
#define MODELFILE_NODE_MAX 63            /* bytes of a shard's node id */
/* Largest file the format allows (a reader refuses larger ones unread). */
#define MODELFILE_SIZE_MAX                                                        \
    ((uint64_t)MODELFILE_FIXED + MODELFILE_HEADER_MAX + 4 * MODELFILE_NPARAMS_MAX + \
     MODELFILE_TRAILER)

typedef enum modelfile_err {
    MODELFILE_ERR_INVALID = -1,   /* encode: a field of the struct is out of bounds */
    MODELFILE_ERR_NOMEM = -2,     /* out of memory */
    MODELFILE_ERR_IO = -3,        /* reading or writing the file */
    MODELFILE_ERR_MAGIC = -4,     /* not a model file */
    MODELFILE_ERR_FORMAT = -5,    /* a format version this code does not read */
    MODELFILE_ERR_TRUNCATED = -6, /* shorter than its lengths say */
    MODELFILE_ERR_SIZE = -7,      /* a length out of bounds, or bytes after the CRC */
    MODELFILE_ERR_CRC = -8,       /* the CRC-32 does not match: corrupt */
    MODELFILE_ERR_HEADER = -9,    /* JSON header malformed or inconsistent */
    MODELFILE_ERR_MODEL = -10,    /* unknown model, or not the built-in layout */
    MODELFILE_ERR_MIN = -10
} modelfile_err;

/* One shard the parameters came from. */
typedef struct modelfile_shard {
    uint32_t shard;                      /* shard index */
    char node[MODELFILE_NODE_MAX + 1];   /* its node id ("" if not known) */
    uint64_t lo, hi;                     /* its range [lo, hi) */
    uint64_t version;                    /* its version when the range was read */
} modelfile_shard;

/* A model file in memory. */
typedef struct modelfile {
    char model[CNN_NAME_MAX];  /* a built-in model name ("lenet") */
    uint64_t nparams;          /* == that model's nparams */
    float mean, std;           /* input normalisation the model was trained with */
    int64_t created_unix;      /* seconds since the epoch, >= 0 */
    uint32_t nshards;          /* 1..MODELFILE_SHARDS_MAX */
    modelfile_shard *shards;   /* nshards, in shard order, tiling [0, nparams) */
    float *params;             /* nparams */
} modelfile;

/* A static description of a MODELFILE_ERR_* code ("CRC mismatch"). */
const char *modelfile_strerror(int code);

/* Encode mf into a new malloc'd buffer *out of *outlen bytes (caller
 * frees).  mf is only read; it must name a built-in model with its nparams,
 * a finite mean, a finite std > 0, created_unix >= 0, and 1..1024 shards
 * that tile [0, nparams) in order.  Returns 0, MODELFILE_ERR_INVALID or
 * MODELFILE_ERR_NOMEM with a message. */
int modelfile_encode(const modelfile *mf, uint8_t **out, size_t *outlen, char *err,
                     size_t errlen);

/* The container alone: magic, format, the given header text (header_len
 * bytes, not checked as JSON), nparams floats and the CRC, into a new
 * malloc'd buffer (caller frees).  For modelfile_encode, and for tests and
 * tools that need a well-formed file around any header.  Returns 0,
 * MODELFILE_ERR_SIZE (a length out of bounds) or MODELFILE_ERR_NOMEM. */
int modelfile_assemble(const char *header, size_t header_len, const float *params,
                       uint64_t nparams, uint8_t **out, size_t *outlen, char *err,
                       size_t errlen);

/* Decode len bytes into *out and check everything (see the top).  If m is
 * not NULL it receives the resolved built-in model.  On success out->shards
 * and out->params are malloc'd (release with modelfile_free); on failure
 * *out holds nothing to free.  Returns 0 or a MODELFILE_ERR_* with a
 * message. */
int modelfile_decode(const uint8_t *buf, size_t len, modelfile *out, cnn_model *m, char *err,
                     size_t errlen);

/* Free what mf owns (shards, params) and zero it. */
void modelfile_free(modelfile *mf);

/* Write buf to path atomically: a temporary file in the same directory,
 * fsync, rename over path, fsync of the directory; a failure leaves path as
 * it was and removes the temporary file.  Returns 0 or MODELFILE_ERR_IO with
 * a message naming the file. */
int modelfile_file_write(const char *path, const uint8_t *buf, size_t len, char *err,
                         size_t errlen);

/* Read the whole file at path into a malloc'd *buf (caller frees); a file
 * larger than MODELFILE_SIZE_MAX is refused before reading.  Returns 0,
 * MODELFILE_ERR_IO, MODELFILE_ERR_SIZE or MODELFILE_ERR_NOMEM with a
 * message naming the file. */
int modelfile_file_read(const char *path, uint8_t **buf, size_t *len, char *err,
                        size_t errlen);

/* modelfile_encode + modelfile_file_write; *size (may be NULL) receives the
 * file's size.  Returns 0 or an error as those. */
int modelfile_save(const char *path, const modelfile *mf, size_t *size, char *err,
                   size_t errlen);

/* modelfile_file_read + modelfile_decode; messages start with "path: ".
 * Returns 0 or an error as those. */
int modelfile_load(const char *path, modelfile *out, cnn_model *m, char *err, size_t errlen);

#endif
