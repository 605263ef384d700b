/* ckpt.c - see ckpt.h. */
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"
#include "util.h"

static int ckpt_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '!' || s[i] > '~')
            return 0;
    return 1;
}

size_t psd_ckpt_size(const psd_ckpt *c)
{
    if (c->lo >= c->hi || c->hi > c->nparams || c->nworkers > PSD_CKPT_MAX_WORKERS ||
        !ckpt_name_ok(c->model, PSD_CKPT_MODEL_MAX))
        return 0;
    if (c->hi - c->lo > (SIZE_MAX - PSD_CKPT_HEADER) / 16)
        return 0;
    size_t size = PSD_CKPT_HEADER;
    for (uint32_t i = 0; i < c->nworkers; i++) {
        if (!ckpt_name_ok(c->workers[i].id, PSD_CKPT_ID_MAX))
            return 0;
        size += 1 + strlen(c->workers[i].id) + 17;
    }
    return size + 8 * (size_t)(c->hi - c->lo) + 4;
}

int psd_ckpt_encode(const psd_ckpt *c, uint8_t *buf, size_t cap, size_t *len, char *err,
                    size_t errlen)
{
    size_t size = psd_ckpt_size(c);
    *len = size;
    if (size == 0) {
        snprintf(err, errlen, "checkpoint: invalid contents (range, model name or worker id)");
        return -1;
    }
    if (!buf || cap < size) {
        snprintf(err, errlen, "checkpoint: buffer of %zu bytes, %zu needed", cap, size);
        return -1;
    }
    size_t n = (size_t)(c->hi - c->lo);
    uint8_t *p = buf;
    memset(p, 0, PSD_CKPT_HEADER);
    memcpy(p, PSD_CKPT_MAGIC, 8);
    proto_put_be32(p + 8, PSD_CKPT_FORMAT);
    proto_put_be32(p + 12, c->shard);
    memcpy(p + 16, c->model, strlen(c->model));
    proto_put_be64(p + 48, c->nparams);
    proto_put_be64(p + 56, c->lo);
    proto_put_be64(p + 64, c->hi);
    proto_put_be64(p + 72, c->seed);
    proto_put_be64(p + 80, c->version);
    proto_put_be32(p + 88, c->nworkers);
    proto_put_be32(p + 92, c->finished ? 1u : 0u);
    p += PSD_CKPT_HEADER;
    for (uint32_t i = 0; i < c->nworkers; i++) {
        size_t idl = strlen(c->workers[i].id);
        *p++ = (uint8_t)idl;
        memcpy(p, c->workers[i].id, idl);
        p += idl;
        proto_put_be64(p, c->workers[i].last_seq);
        proto_put_be64(p + 8, c->workers[i].step);
        p[16] = c->workers[i].done ? 1 : 0;
        p += 17;
    }
    proto_floats_encode(p, c->w, n);
    p += 4 * n;
    proto_floats_encode(p, c->mom, n);
    p += 4 * n;
    proto_put_be32(p, util_crc32(buf, (size_t)(p - buf)));
    return 0;
}

int psd_ckpt_decode(const uint8_t *buf, size_t len, psd_ckpt *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len < PSD_CKPT_HEADER + 4) {
        snprintf(err, errlen, "truncated: %zu bytes, a checkpoint has at least %u", len,
                 PSD_CKPT_HEADER + 4);
        return -1;
    }
    if (memcmp(buf, PSD_CKPT_MAGIC, 8) != 0) {
        snprintf(err, errlen, "not a psd checkpoint (bad magic)");
        return -1;
    }
    uint32_t format = proto_get_be32(buf + 8);
    if (format != 1 && format != PSD_CKPT_FORMAT) {
        snprintf(err, errlen, "checkpoint format %u, this psd reads formats 1 to %u", format,
                 PSD_CKPT_FORMAT);
        return -1;
    }
    uint32_t crc = util_crc32(buf, len - 4);
    uint32_t want_crc = proto_get_be32(buf + len - 4);
    if (crc != want_crc) {
        snprintf(err, errlen, "checksum mismatch (CRC-32 %08x, file says %08x): corrupt",
                 (unsigned)crc, (unsigned)want_crc);
        return -1;
    }
    const uint8_t *mp = buf + 16;
    size_t ml = 0;
    while (ml < 32 && mp[ml])
        ml++;
    for (size_t i = ml; i < 32; i++)
        if (mp[i]) {
            snprintf(err, errlen, "bad model name field");
            return -1;
        }
    if (ml == 0 || ml > PSD_CKPT_MODEL_MAX) {
        snprintf(err, errlen, "bad model name field");
        return -1;
    }
    memcpy(out->model, mp, ml);
    out->model[ml] = '\0';
    if (!ckpt_name_ok(out->model, PSD_CKPT_MODEL_MAX)) {
        snprintf(err, errlen, "bad model name field (not printable ASCII)");
        return -1;
    }
    out->shard = proto_get_be32(buf + 12);
    out->nparams = proto_get_be64(buf + 48);
    out->lo = proto_get_be64(buf + 56);
    out->hi = proto_get_be64(buf + 64);
    out->seed = proto_get_be64(buf + 72);
    out->version = proto_get_be64(buf + 80);
    out->nworkers = proto_get_be32(buf + 88);
    uint32_t flags = proto_get_be32(buf + 92);
    if (format == 1 && flags != 0) {
        snprintf(err, errlen, "reserved header field is not zero");
        return -1;
    }
    if (flags & ~1u) {
        snprintf(err, errlen, "unknown header flags 0x%x", (unsigned)flags);
        return -1;
    }
    out->finished = (int)(flags & 1u);
    size_t wrec = format == 1 ? 16 : 17; /* per worker, after its id */
    if (out->lo >= out->hi || out->hi > out->nparams) {
        snprintf(err, errlen, "bad range [%llu, %llu) of %llu parameters",
                 (unsigned long long)out->lo, (unsigned long long)out->hi,
                 (unsigned long long)out->nparams);
        return -1;
    }
    if (out->nworkers > PSD_CKPT_MAX_WORKERS) {
        snprintf(err, errlen, "%u workers (at most %u)", out->nworkers, PSD_CKPT_MAX_WORKERS);
        return -1;
    }
    const uint8_t *p = buf + PSD_CKPT_HEADER, *end = buf + len - 4;
    psd_ckpt_worker *ws = NULL;
    if (out->nworkers > 0) {
        ws = calloc(out->nworkers, sizeof(*ws));
        if (!ws) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    for (uint32_t i = 0; i < out->nworkers; i++) {
        if (end - p < 1)
            goto truncated;
        size_t idl = *p++;
        if (idl == 0 || idl > PSD_CKPT_ID_MAX || (size_t)(end - p) < idl + wrec)
            goto truncated;
        memcpy(ws[i].id, p, idl);
        ws[i].id[idl] = '\0';
        /* every one of the idl bytes must be printable: a NUL inside would
         * make "w0\0x" decode as "w0" */
        if (memchr(p, 0, idl) || !ckpt_name_ok(ws[i].id, PSD_CKPT_ID_MAX)) {
            free(ws);
            snprintf(err, errlen, "worker %u: bad node id", i);
            return -1;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(ws[j].id, ws[i].id) == 0) {
                snprintf(err, errlen, "worker %u: node id \"%s\" appears twice", i, ws[i].id);
                free(ws);
                return -1;
            }
        p += idl;
        ws[i].last_seq = proto_get_be64(p);
        ws[i].step = proto_get_be64(p + 8);
        if (wrec == 17) {
            if (p[16] & ~1u) {
                free(ws);
                snprintf(err, errlen, "worker %u: unknown flags 0x%x", i, (unsigned)p[16]);
                return -1;
            }
            ws[i].done = p[16] & 1u;
        }
        p += wrec;
    }
    uint64_t n64 = out->hi - out->lo;
    if ((uint64_t)(end - p) / 8 != n64 || (uint64_t)(end - p) % 8 != 0)
        goto truncated;
    size_t n = (size_t)n64;
    out->w = malloc(n * sizeof(float));
    out->mom = malloc(n * sizeof(float));
    if (!out->w || !out->mom) {
        free(out->w);
        free(out->mom);
        free(ws);
        memset(out, 0, sizeof(*out));
        snprintf(err, errlen, "out of memory for %zu parameters", n);
        return -1;
    }
    proto_floats_decode(out->w, p, n);
    proto_floats_decode(out->mom, p + 4 * n, n);
    out->workers = ws;
    return 0;
truncated:
    free(ws);
    memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "sizes do not add up (worker table or parameter data)");
    return -1;
}

void psd_ckpt_free(psd_ckpt *c)
{
    free(c->w);
    free(c->mom);
    free(c->workers);
    memset(c, 0, sizeof(*c));
}

int psd_ckpt_match(const psd_ckpt *have, const psd_ckpt *want, char *err, size_t errlen)
{
    if (strcmp(have->model, want->model) != 0)
        snprintf(err, errlen, "model is \"%s\", expected \"%s\"", have->model, want->model);
    else if (have->nparams != want->nparams)
        snprintf(err, errlen, "nparams is %llu, expected %llu",
                 (unsigned long long)have->nparams, (unsigned long long)want->nparams);
    else if (have->shard != want->shard)
        snprintf(err, errlen, "shard is %u, expected %u", have->shard, want->shard);
    else if (have->lo != want->lo || have->hi != want->hi)
        snprintf(err, errlen, "range is [%llu, %llu), expected [%llu, %llu)",
                 (unsigned long long)have->lo, (unsigned long long)have->hi,
                 (unsigned long long)want->lo, (unsigned long long)want->hi);
    else if (have->seed != want->seed)
        snprintf(err, errlen, "seed is %llu, expected %llu", (unsigned long long)have->seed,
                 (unsigned long long)want->seed);
    else
        return 0;
    return -1;
}

int psd_ckpt_file_write(const char *path, const uint8_t *buf, size_t len, char *err,
                        size_t errlen)
{
    return util_file_write_atomic(path, buf, len, err, errlen);
}

int psd_ckpt_file_read(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *b = malloc(size ? size : 1);
    if (!b) {
        snprintf(err, errlen, "%s: out of memory for %zu bytes", path, size);
        close(fd);
        return -1;
    }
    size_t off = 0;
    while (off < size) {
        ssize_t r = read(fd, b + off, size - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errlen, "%s: read: %s", path, r < 0 ? strerror(errno) : "short file");
            free(b);
            close(fd);
            return -1;
        }
        off += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = size;
    return 0;
}
