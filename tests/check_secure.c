/* check_secure.c - proto/secure.c: the cluster-key handshake and sealed
 * frames (docs/security.md).
 *
 * Both sides of the handshake are played here with the real encoders:
 * matching keys give both sides the same pair of session keys; another key,
 * a flipped proof, a replayed HELLO+AUTH are refused.  Sealed frames: round
 * trip (in place and into another buffer), every flipped bit of a sealed
 * frame fails to open, replayed, reordered and dropped frames fail, another
 * key fails, the counter advances by one per frame, and the size and
 * argument checks come before any work.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "secure.h"

static const uint8_t key_a[SECURE_KEY_SIZE] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static uint8_t key_b[SECURE_KEY_SIZE]; /* key_a with one bit flipped */

static void setup(void)
{
    ck_assert_int_eq(secure_init(), 0);
    memcpy(key_b, key_a, sizeof key_b);
    key_b[31] ^= 0x80;
}

static proto_frame parse_one(const uint8_t *buf, size_t len)
{
    proto_frame f;
    ck_assert_int_eq(proto_frame_parse(buf, len, PROTO_MAX_FRAME_LIMIT, &f), (int)len);
    return f;
}

/* A handshake in progress: the frames as sent, both sides' state. */
typedef struct hs_run {
    secure_hs client, shard;
    uint8_t hello[256], welcome[256];
    size_t hello_len, welcome_len;
    secure_session cs, ss;
    proto_auth auth;
} hs_run;

/* Client says HELLO; the shard answers WELCOME with shard_key. */
static void run_hello_welcome(hs_run *r, const uint8_t *shard_key)
{
    memset(r, 0, sizeof *r);
    proto_hello h = {0};
    h.role = PROTO_ROLE_WORKER;
    h.nparams = 1960;
    strcpy(h.node_id, "w0");
    strcpy(h.model, "ray");
    secure_client_hello(&r->client, &h);
    ck_assert_int_eq(h.auth_method, PROTO_AUTH_KEY);
    ck_assert_int_eq(proto_hello_encode(&h, 1, r->hello, sizeof r->hello, &r->hello_len), 0);
    proto_frame hf = parse_one(r->hello, r->hello_len);
    ck_assert_int_eq(secure_hs_hello(&r->client, &hf), 0);
    ck_assert_int_eq(secure_hs_hello(&r->client, &hf), PROTO_ERR_INVALID); /* once */

    /* the shard */
    proto_hello hd;
    ck_assert_int_eq(proto_hello_decode(&hf, &hd), 0);
    ck_assert_int_eq(hd.auth_method, PROTO_AUTH_KEY);
    ck_assert_int_eq(hd.auth_len, PROTO_AUTH_NONCE_SIZE);
    ck_assert_int_eq(secure_hs_hello(&r->shard, &hf), 0);
    proto_welcome w = {0};
    w.role = PROTO_ROLE_SHARD;
    w.nparams = 1960;
    w.lo = 0;
    w.hi = 976;
    w.param_version = 5;
    w.last_seq = 3;
    strcpy(w.node_id, "ps0");
    strcpy(w.model, "ray");
    secure_shard_welcome_prepare(&r->shard, &w);
    ck_assert_int_eq(proto_welcome_encode(&w, 1, r->welcome, sizeof r->welcome, &r->welcome_len),
                     0);
    ck_assert_int_eq(
        secure_shard_welcome_finish(&r->shard, shard_key, r->welcome, r->welcome_len, &r->ss), 0);
}

/* The whole handshake with one key: both sessions agree. */
static void run_handshake(hs_run *r)
{
    run_hello_welcome(r, key_a);
    proto_frame wf = parse_one(r->welcome, r->welcome_len);
    ck_assert_int_eq(secure_client_welcome(&r->client, key_a, &wf, &r->cs, &r->auth), 0);
    ck_assert_int_eq(secure_shard_auth(&r->shard, &r->auth), 0);
}

START_TEST(test_handshake_ok)
{
    hs_run r;
    run_handshake(&r);
    ck_assert_mem_eq(r.cs.tx.key, r.ss.rx.key, SECURE_KEY_SIZE);
    ck_assert_mem_eq(r.cs.rx.key, r.ss.tx.key, SECURE_KEY_SIZE);
    ck_assert(memcmp(r.cs.tx.key, r.cs.rx.key, SECURE_KEY_SIZE) != 0);
    ck_assert(memcmp(r.cs.tx.key, key_a, SECURE_KEY_SIZE) != 0);
    ck_assert_uint_eq(r.cs.tx.counter, 0);
    ck_assert_uint_eq(r.ss.tx.counter, 0);
    /* the WELCOME decodes with its nonce and proof */
    proto_frame wf = parse_one(r.welcome, r.welcome_len);
    proto_welcome w;
    ck_assert_int_eq(proto_welcome_decode(&wf, &w), 0);
    ck_assert_int_eq(w.auth_method, PROTO_AUTH_KEY);
    ck_assert_int_eq(w.auth_len, PROTO_WELCOME_AUTH_KEY_LEN);

    /* two handshakes never share nonces or session keys */
    hs_run r2;
    run_handshake(&r2);
    ck_assert(memcmp(r.hello, r2.hello, r.hello_len) != 0);
    ck_assert(memcmp(r.cs.tx.key, r2.cs.tx.key, SECURE_KEY_SIZE) != 0);
    ck_assert(memcmp(r.auth.proof, r2.auth.proof, PROTO_AUTH_PROOF_SIZE) != 0);
}
END_TEST

/* The shard holds another key: the client sees it in the WELCOME's proof. */
START_TEST(test_handshake_wrong_key_client_sees)
{
    hs_run r;
    run_hello_welcome(&r, key_b);
    proto_frame wf = parse_one(r.welcome, r.welcome_len);
    ck_assert_int_eq(secure_client_welcome(&r.client, key_a, &wf, &r.cs, &r.auth),
                     PROTO_ERR_AUTH);
}
END_TEST

/* A client with another key that sends its AUTH anyway: the shard refuses. */
START_TEST(test_handshake_wrong_key_shard_sees)
{
    hs_run r;
    run_hello_welcome(&r, key_a);
    proto_frame wf = parse_one(r.welcome, r.welcome_len);
    ck_assert_int_eq(secure_client_proof_unchecked(&r.client, key_b, &wf, &r.cs, &r.auth), 0);
    ck_assert_int_eq(secure_shard_auth(&r.shard, &r.auth), PROTO_ERR_AUTH);
}
END_TEST

/* Any change to the WELCOME (a field, the nonce, the proof) fails the
 * client's check; any change to the AUTH proof fails the shard's. */
START_TEST(test_handshake_tampered)
{
    hs_run ref;
    run_hello_welcome(&ref, key_a);
    for (size_t i = PROTO_FRAME_OVERHEAD; i < ref.welcome_len; i++) {
        hs_run r;
        run_hello_welcome(&r, key_a);
        r.welcome[i] ^= 0x01;
        proto_frame wf;
        if (proto_frame_parse(r.welcome, r.welcome_len, PROTO_MAX_FRAME_LIMIT, &wf) !=
            (int)r.welcome_len)
            continue;
        int rc = secure_client_welcome(&r.client, key_a, &wf, &r.cs, &r.auth);
        if (rc == 0)
            ck_abort_msg("WELCOME with byte %zu flipped passed", i);
    }
    for (int bit = 0; bit < 8 * PROTO_AUTH_PROOF_SIZE; bit++) {
        hs_run r;
        run_hello_welcome(&r, key_a);
        proto_frame wf = parse_one(r.welcome, r.welcome_len);
        ck_assert_int_eq(secure_client_welcome(&r.client, key_a, &wf, &r.cs, &r.auth), 0);
        r.auth.proof[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (secure_shard_auth(&r.shard, &r.auth) == 0)
            ck_abort_msg("AUTH with bit %d flipped passed", bit);
    }
}
END_TEST

/* A recorded HELLO and AUTH, replayed: the shard's fresh nonce changes the
 * transcript, the old proof does not fit; and an old WELCOME does not fit a
 * client's fresh nonce. */
START_TEST(test_handshake_replay)
{
    hs_run rec;
    run_handshake(&rec);

    secure_hs shard;
    memset(&shard, 0, sizeof shard);
    proto_frame hf = parse_one(rec.hello, rec.hello_len);
    ck_assert_int_eq(secure_hs_hello(&shard, &hf), 0);
    proto_welcome w = {0};
    w.role = PROTO_ROLE_SHARD;
    w.nparams = 1960;
    w.hi = 976;
    strcpy(w.node_id, "ps0");
    strcpy(w.model, "ray");
    secure_shard_welcome_prepare(&shard, &w);
    uint8_t wb[256];
    size_t wl;
    secure_session ss;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, wb, sizeof wb, &wl), 0);
    ck_assert_int_eq(secure_shard_welcome_finish(&shard, key_a, wb, wl, &ss), 0);
    ck_assert_int_eq(secure_shard_auth(&shard, &rec.auth), PROTO_ERR_AUTH);

    /* the client side: a fresh HELLO, the recorded WELCOME */
    hs_run r;
    run_hello_welcome(&r, key_a);
    proto_frame old = parse_one(rec.welcome, rec.welcome_len);
    ck_assert_int_eq(secure_client_welcome(&r.client, key_a, &old, &r.cs, &r.auth),
                     PROTO_ERR_AUTH);
}
END_TEST

/* A WELCOME without the method, and calls out of order. */
START_TEST(test_handshake_misuse)
{
    hs_run r;
    run_hello_welcome(&r, key_a);
    proto_welcome w = {0};
    w.role = PROTO_ROLE_SHARD;
    w.nparams = 1960;
    w.hi = 976;
    strcpy(w.node_id, "ps0");
    uint8_t wb[256];
    size_t wl;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, wb, sizeof wb, &wl), 0);
    proto_frame wf = parse_one(wb, wl);
    ck_assert_int_eq(secure_client_welcome(&r.client, key_a, &wf, &r.cs, &r.auth),
                     PROTO_ERR_AUTH);
    /* no HELLO in the transcript */
    secure_hs fresh;
    memset(&fresh, 0, sizeof fresh);
    proto_frame good = parse_one(r.welcome, r.welcome_len);
    ck_assert_int_eq(secure_client_welcome(&fresh, key_a, &good, &r.cs, &r.auth),
                     PROTO_ERR_INVALID);
    memset(&fresh, 0, sizeof fresh);
    proto_auth a = {{0}};
    ck_assert_int_eq(secure_shard_auth(&fresh, &a), PROTO_ERR_AUTH);
    /* a HELLO is not a WELCOME */
    memset(&fresh, 0, sizeof fresh);
    proto_frame hf = parse_one(r.hello, r.hello_len);
    ck_assert_int_eq(secure_hs_hello(&fresh, &hf), 0);
    secure_session s;
    ck_assert_int_eq(secure_shard_welcome_finish(&fresh, key_a, r.hello, r.hello_len, &s),
                     PROTO_ERR_INVALID);
}
END_TEST

/* ----------------------------------------------------------- sealed frames */

/* A PUSH of n floats (request id rid) into buf, with room for the tag. */
static size_t push_frame(uint8_t *buf, size_t cap, uint32_t rid, size_t n, uint64_t seq)
{
    float v[64];
    ck_assert_uint_le(n, 64);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)i * 0.5f - 3.0f;
    proto_push p = {.seq = seq, .base_version = 2, .step = 3, .samples = 8, .lo = 16,
                    .hi = 16 + n, .values = v};
    size_t len;
    ck_assert_int_eq(proto_push_encode(&p, rid, buf, cap, &len), 0);
    return len;
}

/* Open buf as a whole sealed frame with rx into out; the result code. */
static int open_buf(secure_dir *rx, const uint8_t *buf, size_t len, uint8_t *out, size_t cap,
                    proto_frame *plain)
{
    proto_frame f;
    int n = proto_frame_parse(buf, len, PROTO_MAX_FRAME_LIMIT, &f);
    if (n <= 0 || (size_t)n != len)
        return n < 0 ? n : PROTO_ERR_BAD_FRAME;
    return secure_open(rx, &f, out, cap, plain);
}

START_TEST(test_seal_round_trip)
{
    hs_run r;
    run_handshake(&r);
    uint8_t plain[512], buf[512], out[512];
    size_t len = push_frame(plain, sizeof plain, 9, 20, 1);
    memcpy(buf, plain, len);
    size_t sl;
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, sizeof buf, &sl), 0);
    ck_assert_uint_eq(sl, len + PROTO_SEAL_TAG_SIZE);
    ck_assert_uint_eq(proto_get_be32(buf), sl - PROTO_PREFIX_SIZE);
    ck_assert_uint_eq(buf[11], PROTO_FLAG_SEALED);
    ck_assert_mem_eq(buf + 4, plain + 4, 6); /* magic, version unchanged */
    ck_assert(memcmp(buf + 16, plain + 16, len - 16) != 0);
    ck_assert_uint_eq(r.cs.tx.counter, 1);

    /* the shard's decoder takes it (size bounds count the tag) */
    proto_decoder d;
    ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
    proto_frame f, p;
    size_t used;
    ck_assert_int_eq(proto_decoder_feed(&d, buf, sl, &used, &f), 1);
    ck_assert_uint_eq(used, sl);
    ck_assert_int_eq(secure_open(&r.ss.rx, &f, out, sizeof out, &p), 0);
    proto_decoder_free(&d);
    ck_assert_uint_eq(r.ss.rx.counter, 1);
    ck_assert_uint_eq(p.hdr.flags, 0);
    ck_assert_uint_eq(p.hdr.type, PROTO_MSG_PUSH);
    ck_assert_uint_eq(p.hdr.request_id, 9);
    ck_assert_uint_eq(p.hdr.length, len - PROTO_PREFIX_SIZE);
    ck_assert_uint_eq(p.payload_len, len - PROTO_FRAME_OVERHEAD);
    ck_assert_mem_eq(p.payload, plain + 16, p.payload_len);
    proto_push pd;
    ck_assert_int_eq(proto_push_decode(&p, &pd), 0);
    ck_assert_uint_eq(pd.seq, 1);
    /* a sealed frame is not for the message decoders */
    ck_assert_int_eq(proto_push_decode(&f, &pd), PROTO_ERR_INVALID);

    /* in place, the other direction, an empty payload */
    uint8_t st[64];
    size_t stl;
    ck_assert_int_eq(proto_status_req_encode(4, st, sizeof st, &stl), 0);
    ck_assert_int_eq(secure_seal(&r.ss.tx, st, stl, sizeof st, &sl), 0);
    ck_assert_uint_eq(sl, PROTO_FRAME_OVERHEAD + PROTO_SEAL_TAG_SIZE);
    f = parse_one(st, sl);
    ck_assert_int_eq(secure_open(&r.cs.rx, &f, (uint8_t *)f.payload, f.payload_len, &p), 0);
    ck_assert_uint_eq(p.payload_len, 0);
    ck_assert_ptr_null(p.payload);
    ck_assert_int_eq(proto_status_req_decode(&p), 0);

    /* in place with a payload */
    memcpy(buf, plain, len);
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, sizeof buf, &sl), 0);
    f = parse_one(buf, sl);
    ck_assert_int_eq(secure_open(&r.ss.rx, &f, buf + 16, f.payload_len, &p), 0);
    ck_assert_mem_eq(buf + 16, plain + 16, len - 16);
}
END_TEST

/* Every single flipped bit of a sealed frame - prefix, header, ciphertext,
 * tag - makes it fail: it no longer parses as that frame, or it does not
 * open. */
START_TEST(test_seal_every_bit)
{
    hs_run r;
    run_handshake(&r);
    uint8_t buf[512], bad[512], out[512];
    size_t len = push_frame(buf, sizeof buf, 3, 8, 5), sl;
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, sizeof buf, &sl), 0);
    for (size_t bit = 0; bit < 8 * sl; bit++) {
        memcpy(bad, buf, sl);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        secure_dir rx = r.ss.rx;
        proto_frame p;
        int rc = open_buf(&rx, bad, sl, out, sizeof out, &p);
        if (rc == 0)
            ck_abort_msg("sealed frame with bit %zu flipped opened", bit);
        if (rx.counter != 0)
            ck_abort_msg("a failed open advanced the counter (bit %zu)", bit);
    }
    proto_frame p;
    ck_assert_int_eq(open_buf(&r.ss.rx, buf, sl, out, sizeof out, &p), 0);
}
END_TEST

/* Replayed, reordered and dropped frames fail; the counter moves by one
 * per frame and identical plaintexts never give the same bytes. */
START_TEST(test_seal_replay_reorder)
{
    hs_run r;
    run_handshake(&r);
    uint8_t f1[512], f2[512], f3[512], out[512];
    size_t l1 = push_frame(f1, sizeof f1, 1, 8, 1), l2, l3, s1, s2, s3;
    memcpy(f2, f1, l1);
    l2 = l1;
    memcpy(f3, f1, l1);
    l3 = l1;
    ck_assert_int_eq(secure_seal(&r.cs.tx, f1, l1, sizeof f1, &s1), 0);
    ck_assert_int_eq(secure_seal(&r.cs.tx, f2, l2, sizeof f2, &s2), 0);
    ck_assert_int_eq(secure_seal(&r.cs.tx, f3, l3, sizeof f3, &s3), 0);
    ck_assert_uint_eq(r.cs.tx.counter, 3);
    ck_assert(memcmp(f1 + 16, f2 + 16, s1 - 16) != 0);
    ck_assert(memcmp(f2 + 16, f3 + 16, s2 - 16) != 0);
    proto_frame p;
    ck_assert_int_eq(open_buf(&r.ss.rx, f2, s2, out, sizeof out, &p), PROTO_ERR_AUTH); /* early */
    ck_assert_int_eq(open_buf(&r.ss.rx, f1, s1, out, sizeof out, &p), 0);
    ck_assert_int_eq(open_buf(&r.ss.rx, f1, s1, out, sizeof out, &p), PROTO_ERR_AUTH); /* again */
    ck_assert_uint_eq(r.ss.rx.counter, 1);
    /* f2 dropped: f3 does not open in its place */
    ck_assert_int_eq(open_buf(&r.ss.rx, f3, s3, out, sizeof out, &p), PROTO_ERR_AUTH);
    ck_assert_int_eq(open_buf(&r.ss.rx, f2, s2, out, sizeof out, &p), 0);
    ck_assert_int_eq(open_buf(&r.ss.rx, f3, s3, out, sizeof out, &p), 0);
    ck_assert_uint_eq(r.ss.rx.counter, 3);
    /* a frame sealed for one direction does not open in the other */
    uint8_t g[512];
    size_t gl = push_frame(g, sizeof g, 2, 4, 9), gs;
    ck_assert_int_eq(secure_seal(&r.cs.tx, g, gl, sizeof g, &gs), 0);
    secure_dir back = r.cs.rx;
    back.counter = 3;
    ck_assert_int_eq(open_buf(&back, g, gs, out, sizeof out, &p), PROTO_ERR_AUTH);
}
END_TEST

/* Another session (another handshake, or another key) cannot open it. */
START_TEST(test_seal_wrong_key)
{
    hs_run r, other;
    run_handshake(&r);
    run_handshake(&other);
    uint8_t buf[512], out[512];
    size_t len = push_frame(buf, sizeof buf, 1, 8, 1), sl;
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, sizeof buf, &sl), 0);
    proto_frame p;
    ck_assert_int_eq(open_buf(&other.ss.rx, buf, sl, out, sizeof out, &p), PROTO_ERR_AUTH);
    secure_dir k = r.ss.rx;
    k.key[0] ^= 1;
    ck_assert_int_eq(open_buf(&k, buf, sl, out, sizeof out, &p), PROTO_ERR_AUTH);
    ck_assert_int_eq(open_buf(&r.ss.rx, buf, sl, out, sizeof out, &p), 0);
}
END_TEST

/* Lengths and arguments are checked before anything is written. */
START_TEST(test_seal_checks)
{
    hs_run r;
    run_handshake(&r);
    uint8_t buf[512], out[512];
    size_t len = push_frame(buf, sizeof buf, 1, 8, 1), sl;
    uint8_t copy[512];
    memcpy(copy, buf, len);
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, len + PROTO_SEAL_TAG_SIZE - 1, &sl),
                     PROTO_ERR_NOSPACE);
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len - 1, sizeof buf, &sl), PROTO_ERR_INVALID);
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, 15, sizeof buf, &sl), PROTO_ERR_INVALID);
    ck_assert_mem_eq(buf, copy, len);
    ck_assert_uint_eq(r.cs.tx.counter, 0);
    /* the handshake's frames are never sealed */
    uint8_t a[64];
    size_t al;
    proto_auth au = {{0}};
    ck_assert_int_eq(proto_auth_encode(&au, 1, a, sizeof a, &al), 0);
    ck_assert_int_eq(secure_seal(&r.cs.tx, a, al, sizeof a, &sl), PROTO_ERR_INVALID);
    ck_assert_int_eq(secure_seal(&r.cs.tx, r.hello, r.hello_len, sizeof r.hello, &sl),
                     PROTO_ERR_INVALID);
    /* not twice */
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, len, sizeof buf, &sl), 0);
    size_t sl2;
    ck_assert_int_eq(secure_seal(&r.cs.tx, buf, sl, sizeof buf, &sl2), PROTO_ERR_INVALID);
    /* open: too small an output, a plain frame */
    proto_frame f = parse_one(buf, sl), p;
    ck_assert_int_eq(secure_open(&r.ss.rx, &f, out, f.payload_len - PROTO_SEAL_TAG_SIZE - 1, &p),
                     PROTO_ERR_NOSPACE);
    ck_assert_uint_eq(r.ss.rx.counter, 0);
    proto_frame plain = parse_one(copy, len);
    ck_assert_int_eq(secure_open(&r.ss.rx, &plain, out, sizeof out, &p), PROTO_ERR_AUTH);
    ck_assert_int_eq(secure_open(&r.ss.rx, &f, out, sizeof out, &p), 0);
    /* an exhausted counter is never reused */
    memcpy(buf, copy, len);
    secure_dir end = r.cs.tx;
    end.counter = UINT64_MAX;
    ck_assert_int_eq(secure_seal(&end, buf, len, sizeof buf, &sl), PROTO_ERR_INVALID);
}
END_TEST

/* The decoder's bounds for sealed frames: the type's plus the tag. */
START_TEST(test_sealed_bounds)
{
    uint8_t head[PROTO_FRAME_OVERHEAD];
    proto_header h;
    ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_PULL, PROTO_FLAG_SEALED, 1,
                                         PROTO_PULL_SIZE + PROTO_SEAL_TAG_SIZE), 0);
    ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), 0);
    ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_PULL, PROTO_FLAG_SEALED, 1,
                                         PROTO_PULL_SIZE), 0);
    ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), PROTO_ERR_BAD_FRAME);
    ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_STATUS_REQ, PROTO_FLAG_SEALED, 1, 0), 0);
    ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), PROTO_ERR_BAD_FRAME);
    ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_WEIGHTS,
                                         PROTO_FLAG_SEALED | PROTO_FLAG_NOT_MODIFIED, 1,
                                         PROTO_WEIGHTS_FIXED + PROTO_SEAL_TAG_SIZE), 0);
    ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), 0);
    static const uint8_t never[] = {PROTO_MSG_HELLO, PROTO_MSG_WELCOME, PROTO_MSG_AUTH};
    for (size_t i = 0; i < sizeof never; i++) {
        ck_assert_int_eq(proto_header_encode(head, never[i], PROTO_FLAG_SEALED, 1,
                                             PROTO_WELCOME_FIXED + 40), 0);
        ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), PROTO_ERR_BAD_FRAME);
    }
}
END_TEST

Suite *secure_suite(void)
{
    Suite *s = suite_create("secure");
    TCase *tc = tcase_create("secure");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_handshake_ok);
    tcase_add_test(tc, test_handshake_wrong_key_client_sees);
    tcase_add_test(tc, test_handshake_wrong_key_shard_sees);
    tcase_add_test(tc, test_handshake_tampered);
    tcase_add_test(tc, test_handshake_replay);
    tcase_add_test(tc, test_handshake_misuse);
    tcase_add_test(tc, test_seal_round_trip);
    tcase_add_test(tc, test_seal_every_bit);
    tcase_add_test(tc, test_seal_replay_reorder);
    tcase_add_test(tc, test_seal_wrong_key);
    tcase_add_test(tc, test_seal_checks);
    tcase_add_test(tc, test_sealed_bounds);
    suite_add_tcase(s, tc);
    return s;
}
