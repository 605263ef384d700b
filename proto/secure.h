/* secure.h - authentication and integrity of a psd connection with a
 * cluster key (docs/security.md is the specification), built on libsodium.
 *
 * Both peers hold the same 32-byte cluster key K.  The handshake is HELLO
 * (client nonce Nc) -> WELCOME (shard nonce Ns and the shard's proof) ->
 * AUTH (the client's proof) -> OK.  The transcript hash
 *
 *     th = SHA-256("psd1 transcript\0" || u32 len || HELLO frame ||
 *                  u32 len || WELCOME frame without its last 32 bytes)
 *
 * covers both nonces, both node ids, the role, the model and every WELCOME
 * field; the proofs and the session keys are HMAC-SHA256 under K of a
 * distinct label and th:
 *
 *     shard proof  = HMAC(K, "psd1 shard proof\0"  || th)
 *     client proof = HMAC(K, "psd1 client proof\0" || th)
 *     key client->shard = HMAC(K, "psd1 key client->shard\0" || th)
 *     key shard->client = HMAC(K, "psd1 key shard->client\0" || th)
 *
 * After AUTH every frame in both directions is sealed: the payload is
 * encrypted and authenticated with ChaCha20-Poly1305 (IETF) under the
 * direction's key, nonce = 4 zero bytes || u64 frame counter (from 0, +1 per
 * frame, never reused), additional data = the frame's first 16 bytes (length
 * prefix and header, with the SEALED flag set and the length counting the
 * tag); the 16-byte tag follows the ciphertext.
 *
 * Pure functions: no I/O except secure_random(), no global state beyond
 * libsodium's, nothing exits.  Proofs are compared in constant time.
 * Return values as in proto.h (0 or a negative PROTO_ERR_*).
 */
#ifndef PSD_SECURE_H
#define PSD_SECURE_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "proto.h"

#define SECURE_KEY_SIZE 32 /* the cluster key and each session key */

/* One direction of a session: its key and the counter of the next frame. */
typedef struct secure_dir {
    uint8_t key[SECURE_KEY_SIZE];
    uint64_t counter;
} secure_dir;

/* A session: what this side sends (tx) and receives (rx). */
typedef struct secure_session {
    secure_dir tx, rx;
} secure_session;

/* Which side of the handshake this is. */
typedef enum secure_side {
    SECURE_SIDE_CLIENT = 0, /* workerd, psctl: says HELLO */
    SECURE_SIDE_SHARD,      /* psd: answers WELCOME */
    SECURE_SIDE_MAX
} secure_side;

/* One side's handshake in progress: the transcript so far, its own nonce,
 * and (shard) the client proof it expects.  Wiped by secure_hs_wipe(). */
typedef struct secure_hs {
    crypto_hash_sha256_state th;           /* the transcript so far */
    int have_hello;
    uint8_t nonce[PROTO_AUTH_NONCE_SIZE];  /* this side's nonce */
    uint8_t blob[PROTO_WELCOME_AUTH_KEY_LEN]; /* shard: WELCOME's auth blob */
    uint8_t expect[PROTO_AUTH_PROOF_SIZE]; /* shard: the client proof that must come */
} secure_hs;

/* Initialise libsodium (idempotent, thread-safe).  Returns 0, or -1 if it
 * cannot (no randomness source). */
int secure_init(void);

/* n random bytes from the OS (libsodium's randombytes_buf).  secure_init()
 * must have succeeded. */
void secure_random(uint8_t *buf, size_t n);

/* Zero n bytes in a way the compiler keeps (sodium_memzero). */
void secure_wipe(void *p, size_t n);

/* Forget everything in hs (nonces, transcript, expected proof). */
void secure_hs_wipe(secure_hs *hs);

/* Client: start a handshake.  Draws a fresh nonce and sets h's auth method
 * (PROTO_AUTH_KEY) and blob (pointing into hs, which must outlive the
 * encode). */
void secure_client_hello(secure_hs *hs, proto_hello *h);

/* Both sides: the HELLO frame (as sent, or as received) enters the
 * transcript.  Must be called once, before the WELCOME.  Returns 0 or
 * PROTO_ERR_INVALID (not a HELLO, already called). */
int secure_hs_hello(secure_hs *hs, const proto_frame *hello);

/* Client: check the WELCOME frame's proof with key.  On success derives
 * the session (tx: client->shard, rx: shard->client, counters 0) and writes
 * the proof to send in AUTH; the handshake state is wiped either way.
 * Returns 0, PROTO_ERR_AUTH (WELCOME without method KEY, or its proof does
 * not match: the shard holds another key, or the WELCOME was altered or
 * replayed) or PROTO_ERR_INVALID (no HELLO in the transcript, not a
 * WELCOME). */
int secure_client_welcome(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE],
                          const proto_frame *welcome, secure_session *sess,
                          proto_auth *auth);

/* For tests only: secure_client_welcome without checking the shard's
 * proof, i.e. a client with another key that sends its AUTH anyway. */
int secure_client_proof_unchecked(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE],
                                  const proto_frame *welcome, secure_session *sess,
                                  proto_auth *auth);

/* Shard: draw a fresh nonce and set m's auth method (PROTO_AUTH_KEY) and
 * blob (Ns and a placeholder for the proof, pointing into hs). */
void secure_shard_welcome_prepare(secure_hs *hs, proto_welcome *m);

/* Shard: the WELCOME frame encoded from that m is in buf[0..len): write
 * the shard's proof into its last PROTO_AUTH_PROOF_SIZE bytes, remember
 * the client proof to expect and derive the session (tx: shard->client,
 * rx: client->shard; to be used once AUTH is verified).  Returns 0 or
 * PROTO_ERR_INVALID (no HELLO in the transcript, not such a WELCOME). */
int secure_shard_welcome_finish(secure_hs *hs, const uint8_t key[SECURE_KEY_SIZE], uint8_t *buf,
                                size_t len, secure_session *sess);

/* Shard: check the client's AUTH in constant time.  Returns 0, or
 * PROTO_ERR_AUTH (wrong key, or a replayed AUTH).  Wipes hs either way. */
int secure_shard_auth(secure_hs *hs, const proto_auth *auth);

/* Seal the whole plain frame in buf[0..len) in place with tx: the length
 * prefix grows by PROTO_SEAL_TAG_SIZE, the SEALED flag is set, the payload
 * is encrypted and the tag appended; *sealed_len = len + the tag; tx's
 * counter advances.  buf must hold cap >= len + PROTO_SEAL_TAG_SIZE bytes.
 * Returns 0, PROTO_ERR_NOSPACE (cap too small), PROTO_ERR_TOO_LARGE, or
 * PROTO_ERR_INVALID (not one whole frame, already sealed, a handshake
 * frame, or the counter is exhausted). */
int secure_seal(secure_dir *tx, uint8_t *buf, size_t len, size_t cap, size_t *sealed_len);

/* Open the sealed frame *in with rx: check the tag over header and
 * ciphertext and decrypt the payload into out (cap bytes; out may be
 * in->payload itself, decrypting in place).  On success *plain is the
 * frame as it was before sealing (SEALED flag cleared, length and
 * payload_len without the tag, payload = out) and rx's counter advances.
 * Returns 0, PROTO_ERR_AUTH (not sealed, or the tag does not match: a
 * tampered, replayed, reordered or dropped frame, or the wrong key; rx is
 * unchanged), PROTO_ERR_BAD_FRAME (shorter than a tag) or
 * PROTO_ERR_NOSPACE. */
int secure_open(secure_dir *rx, const proto_frame *in, uint8_t *out, size_t cap,
                proto_frame *plain);

#endif
