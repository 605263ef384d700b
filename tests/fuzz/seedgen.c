/* seedgen.c - writes the seed corpora of the binary fuzz targets (frame, msg,
 * compress, idx, ckpt) with the real encoders: `make fuzz-seeds` runs it as
 * `seedgen tests/fuzz/corpus` (docs/fuzzing.md).  The placement seeds are
 * hand-written text files and are not touched.
 *
 * Every message seed is checked on the way out: it must decode and
 * re-encode to the same bytes (fuzz_msg_check), so a seed that no longer
 * matches the protocol fails here rather than silently seeding nothing.
 * Files get fixed names, so rerunning after a format change rewrites them.
 */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt.h"
#include "fuzz.h"
#include "idx.h"

#include <zlib.h>

static const char *outdir;

static void die(const char *what)
{
    fprintf(stderr, "seedgen: %s\n", what);
    exit(1);
}

static void mkdir_p(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "seedgen: mkdir %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* Write prefix (plen bytes) then body to <outdir>/<target>/<name>. */
static void put(const char *target, const char *name, const uint8_t *prefix, size_t plen,
                const uint8_t *body, size_t blen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", outdir, target);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(prefix, 1, plen, f) != plen || fwrite(body, 1, blen, f) != blen ||
        fclose(f) != 0) {
        fprintf(stderr, "seedgen: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    printf("seedgen: %s (%zu bytes)\n", path, plen + blen);
}

/* ------------------------------------------------------------- messages */

#define NMSG 32

typedef struct seed_msg {
    const char *name;
    uint8_t frame[512];
    size_t len;
} seed_msg;

static seed_msg msgs[NMSG];
static int nmsgs;

static uint8_t *next_slot(const char *name)
{
    if (nmsgs == NMSG)
        die("too many message seeds");
    msgs[nmsgs].name = name;
    return msgs[nmsgs].frame;
}

/* Keep the frame just encoded (rc, len from its encoder) after checking it. */
static void keep(int rc, size_t len)
{
    seed_msg *m = &msgs[nmsgs];
    if (rc != 0) {
        fprintf(stderr, "seedgen: encoding %s: %s\n", m->name, proto_strerror(rc));
        exit(1);
    }
    proto_frame f;
    if (proto_frame_parse(m->frame, len, 0, &f) != (int)len)
        die("an encoded seed does not parse as one frame");
    if (fuzz_msg_check(&f, f.hdr.type) != 0)
        die("an encoded seed does not decode");
    m->len = len;
    nmsgs++;
}

static void make_msgs(void)
{
    size_t len;
    uint32_t rid = 1;

    proto_hello h = {.role = PROTO_ROLE_WORKER, .nparams = 431080};
    snprintf(h.node_id, sizeof h.node_id, "box-3.worker-0");
    snprintf(h.model, sizeof h.model, "lenet");
    keep(proto_hello_encode(&h, rid++, next_slot("hello"), 512, &len), len);

    static const uint8_t nonce[PROTO_AUTH_NONCE_SIZE + PROTO_AUTH_PROOF_SIZE] = {
        0x6e, 0x6f, 0x6e, 0x63, 0x65, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 0x70, 0x72, 0x6f, 0x6f, 0x66};
    proto_hello hk = h;
    hk.auth_method = PROTO_AUTH_KEY;
    hk.auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    hk.auth = nonce;
    keep(proto_hello_encode(&hk, rid++, next_slot("hello-key"), 512, &len), len);

    proto_hello op = {.role = PROTO_ROLE_OPERATOR, .nparams = 0};
    snprintf(op.node_id, sizeof op.node_id, "psctl");
    keep(proto_hello_encode(&op, rid++, next_slot("hello-operator"), 512, &len), len);

    proto_welcome w = {.role = PROTO_ROLE_SHARD, .nparams = 431080, .lo = 0, .hi = 215536,
                       .param_version = 7, .last_seq = 3};
    snprintf(w.node_id, sizeof w.node_id, "shard-1");
    snprintf(w.model, sizeof w.model, "lenet");
    keep(proto_welcome_encode(&w, rid++, next_slot("welcome"), 512, &len), len);

    proto_welcome wk = w;
    wk.auth_method = PROTO_AUTH_KEY;
    wk.auth_len = PROTO_WELCOME_AUTH_KEY_LEN;
    wk.auth = nonce;
    keep(proto_welcome_encode(&wk, rid++, next_slot("welcome-key"), 512, &len), len);

    proto_auth au;
    memcpy(au.proof, nonce + PROTO_AUTH_NONCE_SIZE, sizeof au.proof);
    keep(proto_auth_encode(&au, rid++, next_slot("auth"), 512, &len), len);

    proto_pull pl = {.min_version = 5, .lo = 6, .hi = 7};
    keep(proto_pull_encode(&pl, 0x01020304u, next_slot("pull"), 512, &len), len);

    static const float vals[4] = {0.5f, -1.25f, 3.0e-8f, INFINITY};
    proto_weights wt = {.version = 9, .lo = 16, .hi = 20, .values = vals};
    keep(proto_weights_encode(&wt, rid++, next_slot("weights"), 512, &len), len);

    proto_weights nm = {.version = 9, .lo = 16, .hi = 20, .not_modified = 1};
    keep(proto_weights_encode(&nm, rid++, next_slot("weights-not-modified"), 512, &len), len);

    proto_push ps = {.seq = 4, .base_version = 9, .step = 12, .samples = 64, .lo = 16, .hi = 19,
                     .values = vals};
    keep(proto_push_encode(&ps, rid++, next_slot("push"), 512, &len), len);

    /* compression: PULL/WEIGHTS flags FP16 and DELTA (PULL: and SEED), PUSH encodings */
    proto_pull p16 = pl;
    p16.encoding = PROTO_ENC_FP16;
    keep(proto_pull_encode(&p16, rid++, next_slot("pull-fp16"), 512, &len), len);
    proto_pull pd = pl;
    pd.encoding = PROTO_ENC_SPARSE;
    keep(proto_pull_encode(&pd, rid++, next_slot("pull-delta"), 512, &len), len);
    proto_pull pseed = pd;
    pseed.seed = 1;
    pseed.seed_crc = 0x692f3b53u;
    keep(proto_pull_encode(&pseed, rid++, next_slot("pull-seed"), 512, &len), len);

    proto_weights w16 = wt;
    w16.encoding = PROTO_ENC_FP16;
    keep(proto_weights_encode(&w16, rid++, next_slot("weights-fp16"), 512, &len), len);
    static const float base[4] = {0.5f, 2.0f, 3.0e-8f, -0.0f};
    proto_weights wd = wt;
    wd.encoding = PROTO_ENC_SPARSE;
    wd.base = base;
    wd.base_version = 8;
    keep(proto_weights_encode(&wd, rid++, next_slot("weights-delta"), 512, &len), len);

    proto_push p16s = ps;
    p16s.encoding = PROTO_ENC_FP16;
    keep(proto_push_encode(&p16s, rid++, next_slot("push-fp16"), 512, &len), len);
    static const uint32_t tk_idx[2] = {0, 2};
    static const float tk_vals[2] = {0.5f, 3.0e-8f};
    proto_push ptk = ps;
    ptk.encoding = PROTO_ENC_SPARSE;
    ptk.idx = tk_idx;
    ptk.values = tk_vals;
    ptk.count = 2;
    keep(proto_push_encode(&ptk, rid++, next_slot("push-topk"), 512, &len), len);

    proto_ack ak = {.seq = 4, .version = 10, .status = PROTO_ACK_APPLIED};
    keep(proto_ack_encode(&ak, rid++, next_slot("ack"), 512, &len), len);

    keep(proto_status_req_encode(rid++, next_slot("status-req"), 512, &len), len);

    static const char json[] = "{\"shard\":0,\"version\":10,\"mode\":\"sync\",\"workers\":[]}";
    proto_status st = {.json = json, .len = sizeof json - 1};
    keep(proto_status_encode(&st, rid++, next_slot("status"), 512, &len), len);

    proto_report rp = {.step = 100, .samples = 6400, .elapsed_s = 1.5, .test_acc = NAN,
                       .test_loss = INFINITY};
    keep(proto_report_encode(&rp, rid++, next_slot("report"), 512, &len), len);

    keep(proto_checkpoint_encode(rid++, next_slot("checkpoint"), 512, &len), len);

    proto_ok ok = {.version = 10};
    keep(proto_ok_encode(&ok, rid++, next_slot("ok"), 512, &len), len);

    proto_error er = {.code = PROTO_ERR_MODEL};
    snprintf(er.text, sizeof er.text, "model mismatch: lenet, 431080 parameters");
    keep(proto_error_encode(&er, rid++, next_slot("error"), 512, &len), len);

    proto_done dn = {.step = 938, .samples = 60032};
    keep(proto_done_encode(&dn, rid++, next_slot("done"), 512, &len), len);
}

/* The seed called name. */
static const seed_msg *msg(const char *name)
{
    for (int i = 0; i < nmsgs; i++)
        if (strcmp(msgs[i].name, name) == 0)
            return &msgs[i];
    die("no such message seed");
    return NULL;
}

/* msg seeds: flags byte, then the payload. */
static void write_msg_seeds(void)
{
    for (int i = 0; i < nmsgs; i++) {
        uint8_t flags = msgs[i].frame[11];
        put("msg", msgs[i].name, &flags, 1, msgs[i].frame + PROTO_FRAME_OVERHEAD,
            msgs[i].len - PROTO_FRAME_OVERHEAD);
    }
}

/* compress seeds: codec byte, n (u16 big-endian), then the body, made by
 * the real encoders. */
static void write_compress_seeds(void)
{
    static const float v[8] = {0.5f, -1.25f, 3.0e-8f, INFINITY, -0.0f, 65504.0f, 1e-7f, NAN};
    uint8_t body[4 + 8 * 8];
    uint8_t head[3] = {0, 0, 8};
    uint32_t work[8], idx[8];
    float vals[8];
    if (proto_topk_select(v, 8, 3, work, idx) != 0)
        die("top-k seed");
    for (int j = 0; j < 3; j++)
        vals[j] = v[idx[j]];
    proto_sparse_encode(body, idx, vals, 3);
    put("compress", "sparse-3-of-8", head, 3, body, proto_sparse_size(idx, 3));
    proto_sparse_encode(body, idx, vals, 0);
    put("compress", "sparse-empty", head, 3, body, proto_sparse_size(idx, 0));
    head[0] = 1;
    proto_fp16_encode(body, v, 8);
    put("compress", "fp16-8", head, 3, body, 16);
    head[0] = 2;
    head[2] = 3;
    proto_floats_encode(body, v, 8);
    put("compress", "topk-3-of-8", head, 3, body, 32);
}

/* frame seeds: max-frame byte, control byte, split bytes, then the stream. */
static void write_frame_seeds(void)
{
    static uint8_t stream[NMSG * 512];
    size_t slen = 0;
    const uint8_t whole[2] = {0xff, 0x00};
    for (int i = 0; i < nmsgs; i++) {
        put("frame", msgs[i].name, whole, 2, msgs[i].frame, msgs[i].len);
        memcpy(stream + slen, msgs[i].frame, msgs[i].len);
        slen += msgs[i].len;
    }
    put("frame", "stream-whole", whole, 2, stream, slen);

    const uint8_t split[6] = {0xff, 0x04, 1, 5, 16, 64};
    put("frame", "stream-split", split, sizeof split, stream, slen);

    /* HELLO, PULL, PUSH one byte at a time. */
    const uint8_t bytewise[3] = {0xff, 0x01, 1};
    const seed_msg *parts[3] = {msg("hello"), msg("pull"), msg("push")};
    uint8_t b[3 * 512];
    size_t blen = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(b + blen, parts[i]->frame, parts[i]->len);
        blen += parts[i]->len;
    }
    put("frame", "bytewise", bytewise, sizeof bytewise, b, blen);

    /* The same with a second maximum of 12 + 16 * 4 = 76 bytes for every
     * other frame (HELLO and PUSH under it, PULL under 4,092). */
    const uint8_t two_max[5] = {0xff, 0x42, 0x04, 7, 3};
    put("frame", "two-maxima", two_max, sizeof two_max, b, blen);

    /* The same, cut off in the middle of the PUSH. */
    put("frame", "truncated", split, sizeof split, b, blen - 5);

    /* Maximum 12 + 16 * 4 = 76 bytes: the PUSH is too large. */
    const uint8_t small[4] = {0x04, 0x02, 7, 3};
    put("frame", "too-large", small, sizeof small, b, blen);

    /* An ERROR frame, then bytes that are not a psd frame (bad magic). */
    const seed_msg *er = msg("error");
    const char http[] = "GET / HTTP/1.1\r\n\r\n";
    uint8_t junk[512 + sizeof http];
    memcpy(junk, er->frame, er->len);
    memcpy(junk + er->len, http, sizeof http - 1);
    put("frame", "bad-magic", whole, 2, junk, er->len + sizeof http - 1);
}

/* ------------------------------------------------------------------ idx */

static void write_idx_seeds(void)
{
    uint8_t img[16 + 3 * 4 * 4], lbl[8 + 3];
    static const uint8_t ihead[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4};
    static const uint8_t lhead[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    memcpy(img, ihead, 16);
    for (int i = 0; i < 48; i++)
        img[16 + i] = (uint8_t)(i * 37);
    memcpy(lbl, lhead, 8);
    lbl[8] = 7;
    lbl[9] = 2;
    lbl[10] = 9;

    /* mode, cut, data: plain, gzip made by the target, two members. */
    const uint8_t plain[2] = {0, 0}, gz[2] = {1, 0}, gz2[2] = {3, 128};
    put("idx", "images-plain", plain, 2, img, sizeof img);
    put("idx", "labels-plain", plain, 2, lbl, sizeof lbl);
    put("idx", "images-gzip", gz, 2, img, sizeof img);
    put("idx", "labels-gzip-2members", gz2, 2, lbl, sizeof lbl);

    /* gzip bytes in the data itself: the loader inflates them. */
    uint8_t *z;
    size_t zlen;
    if (fuzz_gzip(img, sizeof img, 6, &z, &zlen) != 0)
        die("gzip");
    put("idx", "images-gzip-raw", plain, 2, z, zlen);
    free(z);
    if (fuzz_gzip(lbl, sizeof lbl, 6, &z, &zlen) != 0)
        die("gzip");
    put("idx", "labels-gzip-raw", plain, 2, z, zlen);
    free(z);

    /* Sanity: the plain seeds parse. */
    idx_images im;
    idx_labels lb;
    char err[256];
    if (idx_images_parse(img, sizeof img, "seed", &im, err, sizeof err) != 0 ||
        idx_labels_parse(lbl, sizeof lbl, "seed", &lb, err, sizeof err) != 0)
        die(err);
    idx_images_free(&im);
    idx_labels_free(&lb);
}

/* ----------------------------------------------------------------- ckpt */

static void write_ckpt(const char *name, const psd_ckpt *c, uint32_t format)
{
    size_t len = psd_ckpt_size(c);
    char err[256];
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf || psd_ckpt_encode(c, buf, len, &len, err, sizeof err) != 0)
        die("encoding a checkpoint");
    if (format != PSD_CKPT_FORMAT) {
        proto_put_be32(buf + 8, format);
        proto_put_be32(buf + len - 4, (uint32_t)crc32(0L, buf, (uInt)(len - 4)));
    }
    psd_ckpt back;
    if (psd_ckpt_decode(buf, len, &back, err, sizeof err) != 0)
        die(err);
    psd_ckpt_free(&back);
    const uint8_t mode = 0; /* the target fixes the CRC */
    put("ckpt", name, &mode, 1, buf, len);
    free(buf);
}

static void write_ckpt_seeds(void)
{
    float w[8], mom[8];
    for (int i = 0; i < 8; i++) {
        w[i] = 0.125f * (float)(i - 3);
        mom[i] = -0.01f * (float)i;
    }
    psd_ckpt_worker ws[2];
    memset(ws, 0, sizeof ws);
    snprintf(ws[0].id, sizeof ws[0].id, "w0");
    ws[0].last_seq = 41;
    ws[0].step = 40;
    snprintf(ws[1].id, sizeof ws[1].id, "box-2.worker-1");
    ws[1].last_seq = 39;
    ws[1].step = 38;

    psd_ckpt c;
    memset(&c, 0, sizeof c);
    snprintf(c.model, sizeof c.model, "ray");
    c.shard = 1;
    c.nparams = 1960;
    c.lo = 16;
    c.hi = 24;
    c.seed = 1;
    c.version = 40;
    c.w = w;
    c.mom = mom;
    c.nworkers = 2;
    c.workers = ws;
    write_ckpt("two-workers", &c, PSD_CKPT_FORMAT);
    c.nworkers = 0;
    c.workers = NULL;
    write_ckpt("no-workers", &c, PSD_CKPT_FORMAT);
    if (PSD_CKPT_FORMAT != 1)
        write_ckpt("no-workers-format1", &c, 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seedgen OUTDIR   (writes OUTDIR/{frame,msg,compress,idx,ckpt}/)\n");
        return 2;
    }
    outdir = argv[1];
    mkdir_p(outdir);
    fuzz_msg_table_check();
    make_msgs();
    write_frame_seeds();
    write_msg_seeds();
    write_compress_seeds();
    write_idx_seeds();
    write_ckpt_seeds();
    return 0;
}
