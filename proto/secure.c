/* secure.c - see secure.h; docs/security.md explains the design.
 *
 * Every primitive is libsodium's: SHA-256 for the transcript, HMAC-SHA256
 * for the proofs and the session keys, ChaCha20-Poly1305 (IETF) for the
 * frames, crypto_verify_32 for comparing proofs, randombytes_buf for nonces.
 * This file only arranges their inputs.
 */
#include "secure.h"

#include <string.h>

/* Labels: NUL-terminated, so that none is a prefix of another. */
static const char TH_LABEL[] = "psd1 transcript";
static const char SHARD_PROOF[] = "psd1 shard proof";
static const char CLIENT_PROOF[] = "psd1 client proof";
static const char KEY_C2S[] = "psd1 key client->shard";
static const char KEY_S2C[] = "psd1 key shard->client";

int secure_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

void secure_random(uint8_t *buf, size_t n)
{
    randombytes_buf(buf, n);
}

void secure_wipe(void *p, size_t n)
{
    sodium_memzero(p, n);
}

void secure_hs_wipe(secure_hs *hs)
{
    sodium_memzero(hs, sizeof *hs);
}

/* Absorb u32 length, the 16 bytes of f's header (as on the wire) and the
 * first n bytes of its payload. */
static void th_frame(secure_hs *hs, const proto_frame *f, size_t n)
{
    uint8_t head[PROTO_FRAME_OVERHEAD], len[4];
    proto_header_encode(head, f->hdr.type, f->hdr.flags, f->hdr.request_id, f->payload_len);
    proto_put_be32(len, (uint32_t)(PROTO_FRAME_OVERHEAD + n));
    crypto_hash_sha256_update(&hs->th, len, sizeof len);
    crypto_hash_sha256_update(&hs->th, head, sizeof head);
    if (n)
        crypto_hash_sha256_update(&hs->th, f->payload, n);
}

/* HMAC-SHA256(key, label (with its NUL) || th). */
static void mac_label(const uint8_t key[SECURE_KEY_SIZE], const char *label,
                      const uint8_t th[crypto_hash_sha256_BYTES], uint8_t out[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, SECURE_KEY_SIZE);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label) + 1);
    crypto_auth_hmacsha256_update(&st, th, crypto_hash_sha256_BYTES);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* The session keys for `side` from th. */
static void session_derive(const uint8_t key[SECURE_KEY_SIZE], secure_side side,
                           const uint8_t th[crypto_hash_sha256_BYTES], secure_session *sess)
{
    uint8_t c2s[32], s2c[32];
    mac_label(key, KEY_C2S, th, c2s);
    mac_label(key, KEY_S2C, th, s2c);
    memcpy(sess->tx.key, side == SECURE_SIDE_CLIENT ? c2s : s2c, SECURE_KEY_SIZE);
    memcpy(sess->rx.key, side == SECURE_SIDE_CLIENT ? s2c : c2s, SECURE_KEY_SIZE);
    sess->tx.counter = sess->rx.counter = 0;
    sodium_memzero(c2s, sizeof c2s);
    sodium_memzero(s2c, sizeof s2c);
}

void secure_client_hello(secure_hs *hs, proto_hello *h)
{
    memset(hs, 0, sizeof *hs);
    randombytes_buf(hs->nonce, sizeof hs->nonce);
    h->auth_method = PROTO_AUTH_KEY;
    h->auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    h->auth = hs->nonce;
}

int secure_hs_hello(secure_hs *hs, const proto_frame *hello)
{
    if (hs->have_hello || !hello || hello->hdr.type != PROTO_MSG_HELLO ||
        (hello->payload_len && !hello->payload))
        return PROTO_ERR_INVALID;
    crypto_hash_sha256_init(&hs->th);
    crypto_hash_sha256_update(&hs->th, (const uint8_t *)TH_LABEL, sizeof TH_LABEL);
    th_frame(hs, hello, hello->payload_len);
    hs->have_hello = 1;
    return 0;
}

/* The WELCOME (all but its proof) enters the transcript; th is final. */
static int th_welcome(secure_hs *hs, const proto_frame *w, uint8_t th[crypto_hash_sha256_BYTES])
{
    if (!hs->have_hello || !w || w->hdr.type != PROTO_MSG_WELCOME ||
        w->payload_len < PROTO_WELCOME_FIXED + PROTO_WELCOME_AUTH_KEY_LEN || !w->payload)
        return PROTO_ERR_INVALID;
    th_frame(hs, w, w->payload_len - PROTO_AUTH_PROOF_SIZE);
    crypto_hash_sha256_final(&hs->th, th);
    return 0;
}

/* secure_client_welcome, checking the shard's proof only if `check`. */
static int client_welcome(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE],
                          const proto_frame *welcome, secure_session *sess, proto_auth *auth,
                          int check)
{
    proto_welcome w;
    int rc = proto_welcome_decode(welcome, &w);
    if (rc == 0 && (w.auth_method != PROTO_AUTH_KEY || w.auth_len != PROTO_WELCOME_AUTH_KEY_LEN))
        rc = PROTO_ERR_AUTH;
    uint8_t th[crypto_hash_sha256_BYTES], proof[32];
    if (rc == 0)
        rc = th_welcome(hs, welcome, th);
    if (rc == 0) {
        mac_label(key, SHARD_PROOF, th, proof);
        if (check && crypto_verify_32(proof, w.auth + PROTO_AUTH_NONCE_SIZE) != 0)
            rc = PROTO_ERR_AUTH;
    }
    if (rc == 0) {
        mac_label(key, CLIENT_PROOF, th, auth->proof);
        session_derive(key, SECURE_SIDE_CLIENT, th, sess);
    }
    sodium_memzero(th, sizeof th);
    sodium_memzero(proof, sizeof proof);
    secure_hs_wipe(hs);
    return rc;
}

int secure_client_welcome(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE],
                          const proto_frame *welcome, secure_session *sess, proto_auth *auth)
{
    return client_welcome(hs, key, welcome, sess, auth, 1);
}

int secure_client_proof_unchecked(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE],
                                  const proto_frame *welcome, secure_session *sess,
                                  proto_auth *auth)
{
    return client_welcome(hs, key, welcome, sess, auth, 0);
}

void secure_shard_welcome_prepare(secure_hs *hs, proto_welcome *m)
{
    randombytes_buf(hs->nonce, sizeof hs->nonce);
    memcpy(hs->blob, hs->nonce, PROTO_AUTH_NONCE_SIZE);
    memset(hs->blob + PROTO_AUTH_NONCE_SIZE, 0, PROTO_AUTH_PROOF_SIZE);
    m->auth_method = PROTO_AUTH_KEY;
    m->auth_len = PROTO_WELCOME_AUTH_KEY_LEN;
    m->auth = hs->blob;
}

int secure_shard_welcome_finish(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE], uint8_t *buf,
                                size_t len, secure_session *sess)
{
    proto_frame f;
    if (!buf || len > PROTO_MAX_FRAME_LIMIT)
        return PROTO_ERR_INVALID;
    int n = proto_frame_parse(buf, len, PROTO_MAX_FRAME_LIMIT, &f);
    if (n <= 0 || (size_t)n != len)
        return PROTO_ERR_INVALID;
    proto_welcome w;
    if (proto_welcome_decode(&f, &w) != 0 || w.auth_method != PROTO_AUTH_KEY ||
        w.auth_len != PROTO_WELCOME_AUTH_KEY_LEN ||
        memcmp(w.auth, hs->nonce, PROTO_AUTH_NONCE_SIZE) != 0)
        return PROTO_ERR_INVALID;
    uint8_t th[crypto_hash_sha256_BYTES];
    int rc = th_welcome(hs, &f, th);
    if (rc)
        return rc;
    mac_label(key, SHARD_PROOF, th, buf + len - PROTO_AUTH_PROOF_SIZE);
    mac_label(key, CLIENT_PROOF, th, hs->expect);
    session_derive(key, SECURE_SIDE_SHARD, th, sess);
    sodium_memzero(th, sizeof th);
    return 0;
}

int secure_shard_auth(secure_hs *hs, const proto_auth *auth)
{
    int ok = hs->have_hello && crypto_verify_32(auth->proof, hs->expect) == 0;
    secure_hs_wipe(hs);
    return ok ? 0 : PROTO_ERR_AUTH;
}

/* The 12-byte IETF nonce of frame number `counter`. */
static void frame_nonce(uint64_t counter, uint8_t npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES])
{
    memset(npub, 0, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
    proto_put_be64(npub + crypto_aead_chacha20poly1305_ietf_NPUBBYTES - 8, counter);
}

int secure_seal(secure_dir *tx, uint8_t *buf, size_t len, size_t cap, size_t *sealed_len)
{
    *sealed_len = 0;
    if (!buf || len < PROTO_FRAME_OVERHEAD || proto_get_be32(buf) != len - PROTO_PREFIX_SIZE)
        return PROTO_ERR_INVALID;
    uint8_t type = buf[10], flags = buf[11];
    if ((flags & PROTO_FLAG_SEALED) || type == PROTO_MSG_HELLO || type == PROTO_MSG_WELCOME ||
        type == PROTO_MSG_AUTH || tx->counter == UINT64_MAX)
        return PROTO_ERR_INVALID;
    if (len - PROTO_PREFIX_SIZE + PROTO_SEAL_TAG_SIZE > PROTO_MAX_FRAME_LIMIT)
        return PROTO_ERR_TOO_LARGE;
    if (cap < len + PROTO_SEAL_TAG_SIZE)
        return PROTO_ERR_NOSPACE;
    proto_put_be32(buf, (uint32_t)(len - PROTO_PREFIX_SIZE + PROTO_SEAL_TAG_SIZE));
    buf[11] = (uint8_t)(flags | PROTO_FLAG_SEALED);
    uint8_t npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    frame_nonce(tx->counter, npub);
    uint8_t *payload = buf + PROTO_FRAME_OVERHEAD;
    size_t plen = len - PROTO_FRAME_OVERHEAD;
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(payload, payload + plen, NULL, payload,
                                                       plen, buf, PROTO_FRAME_OVERHEAD, NULL,
                                                       npub, tx->key);
    tx->counter++;
    *sealed_len = len + PROTO_SEAL_TAG_SIZE;
    return 0;
}

int secure_open(secure_dir *rx, const proto_frame *in, uint8_t *out, size_t cap,
                proto_frame *plain)
{
    if (!(in->hdr.flags & PROTO_FLAG_SEALED))
        return PROTO_ERR_AUTH;
    if (in->payload_len < PROTO_SEAL_TAG_SIZE || !in->payload)
        return PROTO_ERR_BAD_FRAME;
    size_t plen = in->payload_len - PROTO_SEAL_TAG_SIZE;
    if (plen > cap || (plen && !out))
        return PROTO_ERR_NOSPACE;
    uint8_t ad[PROTO_FRAME_OVERHEAD], npub[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    if (proto_header_encode(ad, in->hdr.type, in->hdr.flags, in->hdr.request_id,
                            in->payload_len) != 0)
        return PROTO_ERR_BAD_FRAME;
    frame_nonce(rx->counter, npub);
    uint8_t none;
    if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(plen ? out : &none, NULL, in->payload, plen,
                                                           in->payload + plen, ad, sizeof ad,
                                                           npub, rx->key) != 0)
        return PROTO_ERR_AUTH;
    rx->counter++;
    plain->hdr = in->hdr;
    plain->hdr.flags = (uint8_t)(in->hdr.flags & ~PROTO_FLAG_SEALED);
    plain->hdr.length = (uint32_t)(in->hdr.length - PROTO_SEAL_TAG_SIZE);
    plain->payload_len = plen;
    plain->payload = plen ? out : NULL;
    return 0;
}
