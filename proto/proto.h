/* proto.h - the psd wire protocol: framing, constants, error codes and every
 * message's encoder and decoder (docs/protocol.md is the specification).
 *
 * A frame is a 4-byte length prefix, a 12-byte header (magic, protocol
 * version, message type, flags, request id) and a payload.  Integers are big-
 * endian (network order); floats are IEEE-754 little-endian.
 *
 * Everything here is pure: no libuv, no I/O, no global state, no exit().
 * Functions return 0 (or a byte count) on success and a negative PROTO_ERR_*
 * on failure; proto_strerror() names the code.  After a failed decode the
 * output struct's contents are unspecified.
 *
 *   Receiving:  proto_decoder_feed() cuts a byte stream into proto_frames
 *               (any split, many frames per read, maximum size checked before
 *               anything is allocated); proto_<msg>_decode() validates one
 *               frame's payload into a struct.  Pointers in decoded structs
 *               point into the frame's payload (no copies).
 *   Sending:    proto_<msg>_encode(msg, request_id, buf, cap, &len) writes a
 *               whole frame (prefix, header, payload) into buf.  With a
 *               buffer that is too small (e.g. cap 0, buf NULL) it returns
 *               PROTO_ERR_NOSPACE and sets len to the size needed, like
 *               snprintf, so a caller can size its buffer exactly.
 *
 * Files: frame.c (header, stream decoder, floats), msg_hello.c
 * (HELLO/WELCOME/AUTH), msg_data.c (PULL/WEIGHTS/PUSH/ACK), compress.{h,c}
 * (fp16, top-k, sparse bodies, error feedback), msg_control.c
 * (STATUS/REPORT/CHECKPOINT/OK/ERROR).  The cryptography of an authenticated
 * session (the handshake's proofs, sealing and opening frames) is in
 * secure.{h,c}, the only file that needs libsodium; this header only knows
 * the sizes and the SEALED flag.
 */
#ifndef PSD_PROTO_H
#define PSD_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- constants */

#define PROTO_MAGIC 0x50534457u /* "PSDW" */
#define PROTO_VERSION 3

#define PROTO_PREFIX_SIZE 4     /* the length prefix */
#define PROTO_HEADER_SIZE 12    /* magic, version, type, flags, request id */
#define PROTO_FRAME_OVERHEAD 16 /* prefix + header: where the payload starts */

/* The length prefix counts the header and the payload (not itself).  A
 * decoder rejects a prefix above its maximum, by default PROTO_MAX_FRAME
 * (8 MiB: a full lenet vector of 431,080 floats is 1.7 MB), configurable
 * per decoder up to PROTO_MAX_FRAME_LIMIT.  Encoders refuse frames above
 * PROTO_MAX_FRAME_LIMIT. */
#define PROTO_MAX_FRAME (8u << 20)
#define PROTO_MAX_FRAME_LIMIT (1u << 30)

/* Header flags.  A flag is valid only on the message types listed; any other
 * bit set is PROTO_ERR_BAD_FRAME. */
#define PROTO_FLAG_NOT_MODIFIED 0x01u /* WEIGHTS: nothing newer, no floats */
/* PULL: the encoding asked for; WEIGHTS: the encoding used (at most one of
 * the two; neither: fp32, every entry).  docs/protocol.md, "Encodings". */
#define PROTO_FLAG_FP16 0x02u         /* binary16, every entry */
#define PROTO_FLAG_DELTA 0x04u        /* sparse: the entries changed since base_version */
/* PULL with DELTA: the client holds the job's initial weights of [lo, hi)
 * (version 0, from job.seed) and says so with their CRC-32 (4 more payload
 * bytes): the shard answers with the changes since them, not in full. */
#define PROTO_FLAG_SEED 0x08u
/* The payload is sealed (secure.h, docs/security.md): encrypted, with a
 * PROTO_SEAL_TAG_SIZE tag appended and counted in the length.  Allowed on
 * every type except HELLO, WELCOME and AUTH; the size bounds of a sealed
 * frame are the type's plus the tag. */
#define PROTO_FLAG_SEALED 0x80u
#define PROTO_SEAL_TAG_SIZE 16

/* String and blob bounds (bytes, without a terminating NUL). */
#define PROTO_NODE_ID_MAX 64      /* HELLO/WELCOME node id, 1..64 */
#define PROTO_MODEL_MAX 32        /* model name, 0..32 */
#define PROTO_AUTH_MAX 1024       /* opaque auth blob */
#define PROTO_AUTH_NONCE_SIZE 32  /* PROTO_AUTH_KEY: a fresh random nonce per side */
#define PROTO_AUTH_PROOF_SIZE 32  /* PROTO_AUTH_KEY: an HMAC-SHA256 proof */
#define PROTO_STATUS_MAX (1u << 20) /* STATUS JSON text, 1..1 MiB */
#define PROTO_ERROR_TEXT_MAX 256  /* ERROR text, 0..256 */

/* Payload sizes (fixed parts; variable parts follow). */
#define PROTO_HELLO_FIXED 16
#define PROTO_WELCOME_FIXED 48
#define PROTO_PULL_SIZE 24      /* + 4 with PROTO_FLAG_SEED */
#define PROTO_WEIGHTS_FIXED 24
#define PROTO_PUSH_FIXED 48
#define PROTO_WEIGHTS_DELTA_FIXED 8 /* a delta WEIGHTS: base_version before the sparse body */
#define PROTO_ACK_SIZE 20
#define PROTO_REPORT_SIZE 40
#define PROTO_OK_SIZE 8
#define PROTO_DONE_SIZE 16
#define PROTO_ERROR_FIXED 4
#define PROTO_AUTH_SIZE PROTO_AUTH_PROOF_SIZE

/* Message types (the header's type byte).  0 is never valid. */
typedef enum proto_msg_type {
    PROTO_MSG_HELLO = 1,  /* client -> shard: who I am           -> WELCOME */
    PROTO_MSG_WELCOME,    /* shard -> client: who the shard is */
    PROTO_MSG_PULL,       /* worker: weights of [lo,hi)          -> WEIGHTS */
    PROTO_MSG_WEIGHTS,
    PROTO_MSG_PUSH,       /* worker: gradient of [lo,hi)         -> ACK */
    PROTO_MSG_ACK,
    PROTO_MSG_STATUS_REQ, /* operator: shard status              -> STATUS */
    PROTO_MSG_STATUS,     /* JSON text */
    PROTO_MSG_REPORT,     /* worker: training metrics            -> OK */
    PROTO_MSG_CHECKPOINT, /* operator: checkpoint now            -> OK */
    PROTO_MSG_OK,
    PROTO_MSG_ERROR,      /* either side: code and text */
    PROTO_MSG_DONE,       /* worker: my part of the job is done  -> OK */
    PROTO_MSG_AUTH,       /* client (PROTO_AUTH_KEY): my proof    -> OK (sealed) */
    PROTO_MSG_MAX
} proto_msg_type;

/* Peer roles (HELLO/WELCOME). */
typedef enum proto_role {
    PROTO_ROLE_WORKER = 1,   /* workerd */
    PROTO_ROLE_OPERATOR = 2, /* psctl */
    PROTO_ROLE_SHARD = 3,    /* psd, in WELCOME */
    PROTO_ROLE_MAX
} proto_role;

/* Authentication methods (HELLO/WELCOME).  NONE has an empty blob.  KEY
 * (a cluster key both sides hold; docs/security.md): HELLO's blob is the
 * client's nonce (PROTO_AUTH_NONCE_SIZE), WELCOME's the shard's nonce and
 * its proof (PROTO_AUTH_NONCE_SIZE + PROTO_AUTH_PROOF_SIZE), and the client
 * answers with AUTH before anything else. */
typedef enum proto_auth_method {
    PROTO_AUTH_NONE = 0,
    PROTO_AUTH_KEY = 1,
    PROTO_AUTH_METHOD_MAX
} proto_auth_method;

#define PROTO_HELLO_AUTH_KEY_LEN PROTO_AUTH_NONCE_SIZE
#define PROTO_WELCOME_AUTH_KEY_LEN (PROTO_AUTH_NONCE_SIZE + PROTO_AUTH_PROOF_SIZE)

/* How a slice of floats travels (compress.h has the codecs).  PUSH carries
 * it in its payload; PULL and WEIGHTS in the header flags (FP16, DELTA). */
typedef enum proto_encoding {
    PROTO_ENC_FP32 = 0,   /* n little-endian floats (4n bytes) */
    PROTO_ENC_FP16 = 1,   /* n little-endian binary16 (2n bytes) */
    PROTO_ENC_SPARSE = 2, /* count, then (index, float) pairs: PUSH topk, WEIGHTS delta */
    PROTO_ENC_MAX
} proto_encoding;

/* ACK status: what the shard did with a PUSH. */
typedef enum proto_ack_status {
    PROTO_ACK_APPLIED = 1,   /* applied now; version is the result */
    PROTO_ACK_DUPLICATE = 2, /* seq already seen: not applied again */
    PROTO_ACK_STALE = 3,     /* base_version too old: dropped */
    PROTO_ACK_WAITING = 4,   /* accepted, applied when the round completes */
    PROTO_ACK_FINISHED = 5,  /* the job has finished: not applied, stop */
    PROTO_ACK_STATUS_MAX
} proto_ack_status;

/* Error codes.  Functions return them (negative); on the wire an ERROR frame
 * carries the absolute value as a uint16.  Numbers are part of the protocol:
 * never renumber, only append. */
typedef enum proto_err {
    PROTO_ERR_BAD_FRAME = -1,    /* malformed frame or payload */
    PROTO_ERR_MAGIC = -2,        /* not a psd frame */
    PROTO_ERR_VERSION = -3,      /* protocol version not spoken here */
    PROTO_ERR_TOO_LARGE = -4,    /* frame longer than the receiver's maximum */
    PROTO_ERR_UNKNOWN_TYPE = -5, /* message type unknown */
    PROTO_ERR_MODEL = -6,        /* model name or parameter count mismatch */
    PROTO_ERR_RANGE = -7,        /* bad or foreign parameter range */
    PROTO_ERR_STATE = -8,        /* message not valid now (e.g. PUSH before HELLO) */
    PROTO_ERR_AUTH = -9,         /* authentication method refused or failed */
    PROTO_ERR_BUSY = -10,        /* try again later (e.g. checkpoint running) */
    PROTO_ERR_INTERNAL = -11,    /* the peer failed (e.g. checkpoint write) */
    PROTO_ERR_NOMEM = -12,       /* out of memory */
    PROTO_ERR_NOSPACE = -13,     /* local only: encode buffer too small */
    PROTO_ERR_INVALID = -14,     /* local only: bad argument to a function */
    PROTO_ERR_TIMEOUT = -15,     /* the peer took too long (no HELLO, idle, a frame unfinished) */
    PROTO_ERR_MIN = -15
} proto_err;

/* A static description of code ("frame too large"); unknown codes give
 * "unknown error".  Accepts the negative code or the wire's positive one. */
const char *proto_strerror(int code);

/* For an ERROR answering a well-formed request: 1 if the connection is
 * closed after it, 0 if it stays usable (BUSY, INTERNAL, NOMEM).  A frame
 * decoder error always closes, whatever its code (the stream position is
 * lost).  docs/protocol.md lists which is which. */
int proto_err_closes(int code);

/* Name of a message type ("PULL"), or "?" for an unknown one. */
const char *proto_msg_name(int type);

/* --------------------------------------------------------- byte helpers */

/* Big-endian integers at any alignment (the header and every integer field). */
static inline void proto_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void proto_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void proto_put_be64(uint8_t *p, uint64_t v)
{
    proto_put_be32(p, (uint32_t)(v >> 32));
    proto_put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t proto_get_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t proto_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t proto_get_be64(const uint8_t *p)
{
    return (uint64_t)proto_get_be32(p) << 32 | proto_get_be32(p + 4);
}

/* Write n floats as IEEE-754 little-endian (4n bytes at dst, any alignment). */
void proto_floats_encode(uint8_t *dst, const float *src, size_t n);

/* Read n little-endian floats from src (any alignment) into dst. */
void proto_floats_decode(float *dst, const uint8_t *src, size_t n);

/* --------------------------------------------------------------- framing */

/* A frame's header as decoded (the magic is implied). */
typedef struct proto_header {
    uint32_t length;     /* the prefix: PROTO_HEADER_SIZE + payload bytes */
    uint16_t version;
    uint8_t type;        /* proto_msg_type */
    uint8_t flags;
    uint32_t request_id; /* chosen by the requester, echoed in the reply */
} proto_header;

/* One decoded frame.  payload points into the decoder's buffer or into the
 * caller's input (see proto_decoder_feed); payload is NULL when
 * payload_len is 0. */
typedef struct proto_frame {
    proto_header hdr;
    const uint8_t *payload;
    size_t payload_len;
} proto_frame;

/* Write the prefix and header of a frame with payload_len payload bytes into
 * buf[0..PROTO_FRAME_OVERHEAD), version PROTO_VERSION.  type and flags are
 * written as given (tests use this to build bad frames).  Returns 0, or
 * PROTO_ERR_TOO_LARGE if the frame would exceed PROTO_MAX_FRAME_LIMIT. */
int proto_header_encode(uint8_t *buf, uint8_t type, uint8_t flags, uint32_t request_id,
                        size_t payload_len);

/* For encoders: compute the frame size for payload_len, store it in *len,
 * and if buf holds cap >= *len bytes write the header and return 0; else
 * PROTO_ERR_NOSPACE (or PROTO_ERR_TOO_LARGE, *len then 0). */
int proto_frame_start(uint8_t *buf, size_t cap, size_t *len, uint8_t type, uint8_t flags,
                      uint32_t request_id, size_t payload_len);

/* Validate the PROTO_FRAME_OVERHEAD bytes at buf as a frame start for a
 * receiver whose maximum is max_frame, in this order: prefix too small
 * (BAD_FRAME) or above max_frame (TOO_LARGE), magic (MAGIC), version
 * (VERSION), type (UNKNOWN_TYPE), flags not allowed for the type and payload
 * size outside the type's bounds (BAD_FRAME).  Returns 0 or the error.
 * *out is filled whenever the magic matched, so an ERROR reply can echo the
 * request id. */
int proto_header_decode(const uint8_t *buf, size_t max_frame, proto_header *out);

/* One-shot parse of a frame at the start of buf[0..len): returns the frame's
 * total size (> 0) with *out pointing into buf, 0 if more bytes are needed,
 * or a negative error (which proto_header_decode describes) as soon as the
 * bytes present show one.  Never reads past buf + len. */
int proto_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, proto_frame *out);

/* The type's bounds check, for message decoders: f's type must be `type`
 * and f not sealed (else PROTO_ERR_INVALID, a caller bug: open it first),
 * its flags allowed and payload size within the type's bounds (else
 * PROTO_ERR_BAD_FRAME). */
int proto_frame_check(const proto_frame *f, uint8_t type);

/* Incremental decoder state (one per connection). */
typedef enum proto_dec_state {
    PROTO_DEC_HEAD = 0, /* reading the prefix and header */
    PROTO_DEC_PAYLOAD,  /* reading the payload */
    PROTO_DEC_ERROR,    /* failed; every further call returns err */
    PROTO_DEC_STATE_MAX
} proto_dec_state;

/* Keep the payload buffer between frames only up to this size. */
#define PROTO_DECODER_KEEP (64u << 10)

/* An incremental frame decoder.  Fields are private except malloc_fn,
 * which tests may replace to make allocations fail. */
typedef struct proto_decoder {
    proto_dec_state state;
    int err;                     /* sticky error in PROTO_DEC_ERROR */
    size_t max_frame;
    uint8_t head[PROTO_FRAME_OVERHEAD];
    size_t head_len;             /* bytes of head filled */
    int have_hdr;                /* hdr is valid (magic matched) */
    proto_header hdr;
    size_t need;                 /* payload bytes of the current frame */
    size_t have;                 /* payload bytes copied into buf */
    uint8_t *buf;                /* owned payload buffer */
    size_t cap;
    void *(*malloc_fn)(size_t);  /* malloc by default */
} proto_decoder;

/* Initialise d for frames up to max_frame (0 means PROTO_MAX_FRAME).
 * Returns 0, or PROTO_ERR_INVALID if max_frame is below PROTO_HEADER_SIZE
 * or above PROTO_MAX_FRAME_LIMIT.  Allocates nothing. */
int proto_decoder_init(proto_decoder *d, size_t max_frame);

/* Change d's maximum frame size, between frames (a server lowers it before
 * HELLO and raises it for a worker).  Returns 0, or PROTO_ERR_INVALID (a
 * size init would refuse, or a frame in progress: nothing changed). */
int proto_decoder_set_max(proto_decoder *d, size_t max_frame);

/* Release d's buffer.  d may be initialised again. */
void proto_decoder_free(proto_decoder *d);

/* Feed bytes buf[0..len).  Returns:
 *   1  a frame is complete in *out; *consumed bytes of buf were used (the
 *      rest belongs to later frames: call again with buf + *consumed);
 *   0  all len bytes were consumed and the frame is not complete;
 *  <0  an error (PROTO_ERR_TOO_LARGE right after the prefix, MAGIC, VERSION,
 *      UNKNOWN_TYPE, BAD_FRAME right after the header, NOMEM); the decoder
 *      stays failed and returns the same error on every further call.
 * The payload of *out points into buf when the payload arrived in one piece
 * (zero-copy), else into d's buffer: either way it is valid until the next
 * call on d, and (when in buf) while buf is.  At most the declared payload
 * length is allocated, and only after the header passed every check. */
int proto_decoder_feed(proto_decoder *d, const uint8_t *buf, size_t len, size_t *consumed,
                       proto_frame *out);

/* The header of the frame being decoded, or of the one that failed (to echo
 * its request id in an ERROR), or NULL if not known (e.g. bad magic, or the
 * error came from the prefix). */
const proto_header *proto_decoder_header(const proto_decoder *d);

/* 1 if d is between frames (no partial frame buffered): at end of stream, 0
 * means the peer closed mid-frame. */
int proto_decoder_idle(const proto_decoder *d);

/* Largest number of floats one WEIGHTS or PUSH frame can carry under
 * max_frame (0 means PROTO_MAX_FRAME), sealed or not (the tag is counted):
 * shards must not be larger. */
size_t proto_max_floats(size_t max_frame);

/* ------------------------------------------------ HELLO / WELCOME (msg_hello.c) */

/* HELLO: the first frame a client sends.  On decode, node_id and model are
 * NUL-terminated copies; auth points into the payload. */
typedef struct proto_hello {
    uint8_t role;        /* PROTO_ROLE_WORKER or PROTO_ROLE_OPERATOR */
    uint8_t auth_method; /* PROTO_AUTH_NONE or PROTO_AUTH_KEY */
    uint16_t auth_len;   /* 0 with NONE; PROTO_HELLO_AUTH_KEY_LEN with KEY */
    const uint8_t *auth;
    uint64_t nparams;    /* the client's model size (an operator may send 0) */
    char node_id[PROTO_NODE_ID_MAX + 1]; /* 1..64 of '!'..'~' */
    char model[PROTO_MODEL_MAX + 1];     /* 0..32 of '!'..'~'; "" = any */
} proto_hello;

/* WELCOME: the shard's answer to HELLO. */
typedef struct proto_welcome {
    uint8_t role;        /* PROTO_ROLE_SHARD */
    uint8_t auth_method;
    uint16_t auth_len;
    const uint8_t *auth;
    uint64_t nparams;       /* the model's parameter count */
    uint64_t lo, hi;        /* this shard's range, lo < hi <= nparams */
    uint64_t param_version; /* the shard's current version */
    uint64_t last_seq;      /* highest PUSH seq seen from this node id, 0 = none */
    char node_id[PROTO_NODE_ID_MAX + 1];
    char model[PROTO_MODEL_MAX + 1];
} proto_welcome;

/* Encode m as a HELLO frame.  Returns 0, PROTO_ERR_INVALID (a field out of
 * bounds: role, node id or model length or characters, auth_len), or
 * PROTO_ERR_NOSPACE with *len the size needed.  Any auth method is written;
 * only the decoder enforces version 1's "none". */
int proto_hello_encode(const proto_hello *m, uint32_t request_id, uint8_t *buf, size_t cap,
                       size_t *len);

/* Decode a HELLO frame into *out.  Returns 0, PROTO_ERR_VERSION (protocol
 * version field), PROTO_ERR_AUTH (an unknown method, or a blob of the wrong
 * length for the method: none with a blob, KEY without its nonce),
 * PROTO_ERR_BAD_FRAME (lengths, characters, role). */
int proto_hello_decode(const proto_frame *f, proto_hello *out);

/* Encode m as a WELCOME frame (see proto_hello_encode; also checks
 * lo < hi <= nparams and role SHARD). */
int proto_welcome_encode(const proto_welcome *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len);

/* Decode a WELCOME frame; as proto_hello_decode (KEY: nonce and proof),
 * plus PROTO_ERR_RANGE. */
int proto_welcome_decode(const proto_frame *f, proto_welcome *out);

/* AUTH: the client's proof that it holds the cluster key (PROTO_AUTH_KEY
 * only), sent right after a WELCOME whose proof it checked.  Answered by a
 * sealed OK, or a plain ERROR AUTH and close. */
typedef struct proto_auth {
    uint8_t proof[PROTO_AUTH_PROOF_SIZE];
} proto_auth;

/* Encode m as an AUTH frame.  Returns 0 or PROTO_ERR_NOSPACE. */
int proto_auth_encode(const proto_auth *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len);

/* Decode an AUTH frame.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_auth_decode(const proto_frame *f, proto_auth *out);

/* ------------------------------------- PULL / WEIGHTS / PUSH / ACK (msg_data.c) */

/* PULL: send me [lo, hi) if your version is >= min_version. */
typedef struct proto_pull {
    uint64_t min_version; /* 0: always send */
    uint64_t lo, hi;      /* lo < hi */
    uint8_t encoding;     /* proto_encoding asked for: FP32 (full), FP16, SPARSE (delta) */
    uint8_t seed;         /* SPARSE only: the client holds the initial weights (version 0) */
    uint32_t seed_crc;    /* with seed: CRC-32 (zlib's) of those weights' fp32 LE bytes */
} proto_pull;

/* WEIGHTS: the answer to PULL.  Encoding reads hi - lo floats from values;
 * decoding sets raw to the (hi - lo) * 4 little-endian bytes inside the
 * payload (unaligned: read them with proto_floats_decode).  not_modified
 * (the header flag) means no floats: values/raw unused/NULL. */
typedef struct proto_weights {
    uint64_t version;
    uint64_t lo, hi;
    int not_modified;
    uint8_t encoding;      /* proto_encoding: FP32, FP16, SPARSE (delta) */
    uint64_t base_version; /* delta: the version of the copy it applies to */
    const float *values;   /* encode: hi - lo floats (the current weights); with idx: count */
    const float *base;     /* encode, delta: the receiver's copy (hi - lo floats) */
    const uint32_t *idx;   /* encode, delta (instead of base): the count entries to send,
                              strictly increasing, with their values in values[] */
    const uint8_t *raw;    /* decode: the body after the fixed part(s) */
    size_t raw_len;        /* decode: its bytes */
    size_t count;          /* delta: entries in it (decode; encode with idx) */
} proto_weights;

/* PUSH: a gradient of [lo, hi) in one of the encodings.  Encoding FP32
 * and FP16 read hi - lo floats from values; SPARSE reads count indices
 * (relative to lo, strictly increasing) from idx and count floats from
 * values.  Decoding sets raw/raw_len to the body (and count for SPARSE);
 * proto_push_values() expands it. */
typedef struct proto_push {
    uint64_t seq;          /* per node id, >= 1, increasing across reconnects */
    uint64_t base_version; /* the version the gradient was computed from */
    uint64_t step;         /* the worker's step counter */
    uint32_t samples;      /* minibatch size, >= 1 */
    uint32_t encoding;     /* proto_encoding */
    uint64_t lo, hi;
    const float *values;
    const uint32_t *idx;   /* encode, SPARSE */
    size_t count;          /* SPARSE: pairs */
    const uint8_t *raw;
    size_t raw_len;
} proto_push;

/* ACK: the answer to PUSH. */
typedef struct proto_ack {
    uint64_t seq;     /* the PUSH's seq */
    uint64_t version; /* the shard's version after handling it */
    uint32_t status;  /* proto_ack_status */
} proto_ack;

/* Encode m as a PULL frame (its encoding as a flag).  Returns 0,
 * PROTO_ERR_INVALID (hi <= lo, encoding), or PROTO_ERR_NOSPACE with *len
 * the size needed. */
int proto_pull_encode(const proto_pull *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len);

/* Decode a PULL frame.  Returns 0, PROTO_ERR_RANGE (hi <= lo) or
 * PROTO_ERR_BAD_FRAME (both encoding flags). */
int proto_pull_decode(const proto_frame *f, proto_pull *out);

/* The WEIGHTS frame without its values, for FP32 and FP16: writes the
 * PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED bytes that precede them (*len)
 * and sets *nfloats to how many values (little-endian floats,
 * proto_floats_encode, or binary16, proto_fp16_encode) must follow on the
 * wire; for senders that write them from a buffer of their own (zero
 * copy).  m->values is not read.  Same errors as proto_weights_encode, and
 * PROTO_ERR_INVALID for a delta. */
int proto_weights_encode_head(const proto_weights *m, uint32_t request_id, uint8_t *buf,
                              size_t cap, size_t *len, size_t *nfloats);

/* Encode m as a WEIGHTS frame (flag NOT_MODIFIED and no floats if
 * m->not_modified; else the encoding's flag and body: a delta holds the
 * entries of values that differ from base).  Returns 0, PROTO_ERR_INVALID
 * (hi <= lo, values or base NULL, encoding), PROTO_ERR_TOO_LARGE, or
 * PROTO_ERR_NOSPACE with *len the size needed. */
int proto_weights_encode(const proto_weights *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len);

/* Decode a WEIGHTS frame.  Returns 0, PROTO_ERR_RANGE (hi <= lo, a delta
 * index out of range) or PROTO_ERR_BAD_FRAME (payload size not 24 + 4 or
 * 2 * (hi - lo), a bad delta body, not 24 when not modified, both encoding
 * flags or one with NOT_MODIFIED). */
int proto_weights_decode(const proto_frame *f, proto_weights *out);

/* Write a decoded WEIGHTS' values into dst[0..hi - lo): FP32 and FP16
 * overwrite every entry, a delta only its entries (dst must hold the copy
 * of base_version).  Returns 0, or PROTO_ERR_INVALID (not modified). */
int proto_weights_values(const proto_weights *w, float *dst);

/* Encode m as a PUSH frame.  Returns 0, PROTO_ERR_INVALID (seq 0, samples
 * 0, hi <= lo, values NULL, encoding, SPARSE: idx NULL with count > 0,
 * count > hi - lo, indices not increasing or out of range),
 * PROTO_ERR_TOO_LARGE or PROTO_ERR_NOSPACE. */
int proto_push_encode(const proto_push *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len);

/* Decode a PUSH frame.  Returns 0, PROTO_ERR_RANGE (hi <= lo, a sparse
 * index out of range, a sparse range larger than an fp32 frame could carry) or PROTO_ERR_BAD_FRAME (seq 0, samples 0, unknown
 * encoding, body size, a bad sparse body). */
int proto_push_decode(const proto_frame *f, proto_push *out);

/* The decoded PUSH's gradient as hi - lo floats at dst (SPARSE: zeros but
 * at its indices). */
void proto_push_values(const proto_push *p, float *dst);

/* Encode m as an ACK frame.  Returns 0, PROTO_ERR_INVALID (status) or
 * PROTO_ERR_NOSPACE. */
int proto_ack_encode(const proto_ack *m, uint32_t request_id, uint8_t *buf, size_t cap,
                     size_t *len);

/* Decode an ACK frame.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_ack_decode(const proto_frame *f, proto_ack *out);

/* --------------------- STATUS / REPORT / CHECKPOINT / OK / ERROR (msg_control.c) */

/* STATUS reply: JSON text (not NUL-terminated; 1..PROTO_STATUS_MAX bytes,
 * no NUL byte).  Decoding points json into the payload. */
typedef struct proto_status {
    const char *json;
    size_t len;
} proto_status;

/* REPORT: a worker's metrics.  NaN accuracy/loss means "not measured". */
typedef struct proto_report {
    uint64_t step;
    uint64_t samples;  /* samples trained so far */
    double elapsed_s;  /* finite, >= 0 */
    double test_acc;   /* in [0, 1], or NaN */
    double test_loss;  /* >= 0 (may be +inf), or NaN */
} proto_report;

/* OK: generic success reply (REPORT, CHECKPOINT). */
typedef struct proto_ok {
    uint64_t version; /* CHECKPOINT: the version saved; REPORT: current */
} proto_ok;

/* DONE: a worker has trained all its epochs (or was told the job finished)
 * and leaves; the shard stops waiting for it.  Answered with OK. */
typedef struct proto_done {
    uint64_t step;    /* the worker's steps taken */
    uint64_t samples; /* samples it trained on */
} proto_done;

/* ERROR: code is a negative PROTO_ERR_* (on the wire its absolute value). */
typedef struct proto_error {
    int code;
    char text[PROTO_ERROR_TEXT_MAX + 1];
} proto_error;

/* Encode a STATUS_REQ (empty payload).  Returns 0 or PROTO_ERR_NOSPACE. */
int proto_status_req_encode(uint32_t request_id, uint8_t *buf, size_t cap, size_t *len);

/* Decode a STATUS_REQ.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_status_req_decode(const proto_frame *f);

/* Encode m as a STATUS frame.  Returns 0, PROTO_ERR_INVALID (empty, too
 * long, contains NUL) or PROTO_ERR_NOSPACE. */
int proto_status_encode(const proto_status *m, uint32_t request_id, uint8_t *buf, size_t cap,
                        size_t *len);

/* Decode a STATUS frame (json points into the payload).  Returns 0 or
 * PROTO_ERR_BAD_FRAME.  The JSON itself is not parsed here. */
int proto_status_decode(const proto_frame *f, proto_status *out);

/* Encode m as a REPORT frame.  Returns 0, PROTO_ERR_INVALID (a value out of
 * range) or PROTO_ERR_NOSPACE. */
int proto_report_encode(const proto_report *m, uint32_t request_id, uint8_t *buf, size_t cap,
                        size_t *len);

/* Decode a REPORT frame.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_report_decode(const proto_frame *f, proto_report *out);

/* Encode a CHECKPOINT request (empty payload).  Returns 0 or NOSPACE. */
int proto_checkpoint_encode(uint32_t request_id, uint8_t *buf, size_t cap, size_t *len);

/* Decode a CHECKPOINT request.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_checkpoint_decode(const proto_frame *f);

/* Encode m as an OK frame.  Returns 0 or PROTO_ERR_NOSPACE. */
int proto_ok_encode(const proto_ok *m, uint32_t request_id, uint8_t *buf, size_t cap,
                    size_t *len);

/* Decode an OK frame.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_ok_decode(const proto_frame *f, proto_ok *out);

/* Encode m as a DONE frame.  Returns 0 or PROTO_ERR_NOSPACE. */
int proto_done_encode(const proto_done *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len);

/* Decode a DONE frame.  Returns 0 or PROTO_ERR_BAD_FRAME. */
int proto_done_decode(const proto_frame *f, proto_done *out);

/* Encode m as an ERROR frame.  m->text is sent sanitised: bytes outside
 * ' '..'~' become '?', and it is cut at PROTO_ERROR_TEXT_MAX bytes, so an
 * error path never fails on its own message.  Returns 0, PROTO_ERR_INVALID
 * (code not in -65535..-1) or PROTO_ERR_NOSPACE. */
int proto_error_encode(const proto_error *m, uint32_t request_id, uint8_t *buf, size_t cap,
                       size_t *len);

/* Decode an ERROR frame (text NUL-terminated).  Returns 0 or
 * PROTO_ERR_BAD_FRAME (code 0, text too long or not printable ASCII). */
int proto_error_decode(const proto_frame *f, proto_error *out);

#endif
