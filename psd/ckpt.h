/* ckpt.h - psd checkpoint files: encode/decode (pure) and atomic file I/O.
 *
 * A checkpoint holds one shard's weights, momentum, version and the last
 * PUSH seq consumed from every worker node id, behind a header naming what
 * it belongs to (model, nparams, shard index, [lo, hi), seed) and followed by
 * a CRC-32 (zlib) over every byte before it.  Integers are big-endian,
 * floats little-endian (as on the wire):
 *
 *    0  8  magic "PSDCKPT\0"          48  u64  nparams
 *    8  u32 format (1)                56  u64  lo
 *   12  u32 shard index               64  u64  hi
 *   16  32  model name, NUL-padded    72  u64  seed
 *                                     80  u64  version
 *                                     88  u32  nworkers, 92 u32 flags
 *   96  nworkers x { u8 id_len, id, u64 last_seq, u64 step, u8 wflags }
 *       f32[hi - lo] weights, f32[hi - lo] momentum
 *   end u32 CRC-32 of everything before it
 *
 * flags: bit 0 = the job has finished; wflags: bit 0 = the worker sent
 * DONE; every other bit is 0.  Format 1 (psd before the job end) had a zero
 * reserved field instead of flags and no wflags byte; it is still read.
 *
 * psd_ckpt_encode/psd_ckpt_decode are pure (no I/O, no libuv); the file
 * functions write via a temporary file, fsync and rename, so a crash leaves
 * either the old or the new checkpoint, never a torn one.
 */
#ifndef PSD_CKPT_H
#define PSD_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define PSD_CKPT_MAGIC "PSDCKPT"  /* 7 chars + NUL = 8 bytes */
#define PSD_CKPT_FORMAT 2u       /* written; 1 and 2 are read */
#define PSD_CKPT_HEADER 96u
#define PSD_CKPT_MODEL_MAX 31     /* model name bytes (NUL-padded field of 32) */
#define PSD_CKPT_ID_MAX 64        /* worker node id bytes */
#define PSD_CKPT_MAX_WORKERS 4096

typedef struct psd_ckpt_worker {
    char id[PSD_CKPT_ID_MAX + 1]; /* 1..64 bytes, NUL-terminated */
    uint64_t last_seq;            /* highest PUSH seq consumed from this node id */
    uint64_t step;                /* the worker's last reported step */
    int done;                     /* it sent DONE */
} psd_ckpt_worker;

typedef struct psd_ckpt {
    char model[PSD_CKPT_MODEL_MAX + 1];
    uint32_t shard;
    uint64_t nparams, lo, hi, seed;
    uint64_t version;
    int finished;                 /* the job has finished */
    float *w;                     /* hi - lo weights */
    float *mom;                   /* hi - lo momentum values */
    uint32_t nworkers;
    psd_ckpt_worker *workers;     /* nworkers */
} psd_ckpt;

/* Bytes psd_ckpt_encode needs for c, or 0 if c is invalid (lo >= hi, too
 * many workers, a bad id or model name). */
size_t psd_ckpt_size(const psd_ckpt *c);

/* Encode c into buf (cap bytes).  Sets *len to the size needed.  Returns 0,
 * or -1 with a message (invalid c, or cap < *len).  c is only read. */
int psd_ckpt_encode(const psd_ckpt *c, uint8_t *buf, size_t cap, size_t *len, char *err,
                    size_t errlen);

/* Decode len bytes into *out: checks magic, format, CRC, sizes and fields.
 * On success out->w, out->mom and out->workers are malloc'd (release with
 * psd_ckpt_free).  Returns 0, or -1 with a message (then *out holds nothing
 * to free). */
int psd_ckpt_decode(const uint8_t *buf, size_t len, psd_ckpt *out, char *err, size_t errlen);

/* Free what psd_ckpt_decode allocated in c and zero it. */
void psd_ckpt_free(psd_ckpt *c);

/* Compare the identity of checkpoint `have` with what this process runs
 * (`want`: model, nparams, shard, lo, hi, seed).  Returns 0 if they match,
 * else -1 with a message naming the first field that differs. */
int psd_ckpt_match(const psd_ckpt *have, const psd_ckpt *want, char *err, size_t errlen);

/* Write buf to path atomically (util_file_write_atomic: path.tmp.<pid>,
 * fsync, rename, fsync of the directory).  Returns 0, or -1 with a message
 * naming the file. */
int psd_ckpt_file_write(const char *path, const uint8_t *buf, size_t len, char *err,
                        size_t errlen);

/* Read the whole file at path into a malloc'd *buf (caller frees).  Returns
 * 0, 1 if the file does not exist (nothing allocated), or -1 with a message. */
int psd_ckpt_file_read(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen);

#endif
