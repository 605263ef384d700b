/* placement.h - the placement file: which box runs which daemon, and the job.
 *
 * The external ILP placement solver writes placement.conf: JSON (with `//`
 * and `#` line comments allowed outside strings) naming the training job,
 * the dataset files and every node (ps shards and workers).  Every daemon
 * reads the same file and finds its own entry with placement_node_select().
 * docs/placement.md documents the format, every field and every check.
 *
 * Parsing is strict: unknown keys, keys given twice, wrong types, values out
 * of range, duplicate ids/shards/parts and bad addresses are errors whose
 * message starts with "<file>: <json path>: ", e.g.
 *   conf/placement.local.conf: nodes[2].port: expected an integer 1..65535, got "80a"
 * Library code only reports; the daemon's main() decides to exit.
 */
#ifndef PSD_PLACEMENT_H
#define PSD_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "optim.h"

#define PLACEMENT_ID_MAX 63        /* characters in a node id */
#define PLACEMENT_HOST_MAX 253     /* characters in an address (RFC 1123 name) */
#define PLACEMENT_MAX_NODES 1024   /* nodes in one file */
#define PLACEMENT_FILE_MAX (1 << 20) /* bytes in one file */
#define PLACEMENT_ALIGN 16         /* shard boundaries are multiples of this many floats */

typedef enum placement_mode {
    PLACEMENT_MODE_SYNC = 0, /* barrier: one update from all workers' gradients */
    PLACEMENT_MODE_ASYNC,    /* every push is applied at once */
    PLACEMENT_MODE_SSP,      /* stale-synchronous: workers at most `staleness` steps apart */
    PLACEMENT_MODE_MAX
} placement_mode;

typedef enum placement_role {
    PLACEMENT_ROLE_PS = 0, /* a psd holding one shard */
    PLACEMENT_ROLE_WORKER, /* a workerd training on one part of the data */
    PLACEMENT_ROLE_MAX
} placement_role;

typedef enum placement_addr_kind {
    PLACEMENT_ADDR_IPV4 = 0, /* dotted quad, e.g. 192.0.2.10 */
    PLACEMENT_ADDR_IPV6,     /* literal, stored without brackets, e.g. ::1 */
    PLACEMENT_ADDR_NAME,     /* RFC 1123 host name; resolved by the daemon, not here */
    PLACEMENT_ADDR_KIND_MAX
} placement_addr_kind;

typedef struct placement_node {
    char id[PLACEMENT_ID_MAX + 1];       /* [A-Za-z0-9._-], unique in the file */
    char host[PLACEMENT_HOST_MAX + 1];   /* "address", IPv6 without brackets */
    placement_addr_kind addr_kind;
    int port;                            /* ps: 1..65535; worker: 0 (workers don't listen) */
    placement_role role;
    int index;                           /* position in the file's "nodes" array */
    /* ps only (-1 / 0 for workers) */
    int shard;                           /* 0..nshards-1 */
    double share;                        /* relative size of the shard (default 1) */
    int has_range;                       /* the file gave "range" explicitly */
    size_t lo, hi;                       /* this shard's [lo, hi) of the flat vector */
    /* worker only (-1 / 0 for ps nodes) */
    int part;                            /* 0..data.parts-1 */
    int evaluate;                        /* evaluates on the test set */
    int threads;                         /* workerd threads; 0: workerd's default */
} placement_node;

/* job.compression: how gradients go up (push) and weights come down (pull);
 * docs/placement.md and docs/protocol.md. */
typedef enum placement_push_enc {
    PLACEMENT_PUSH_NONE = 0, /* fp32, every entry */
    PLACEMENT_PUSH_FP16,     /* IEEE binary16, every entry (error feedback) */
    PLACEMENT_PUSH_TOPK,     /* the largest topk_percent of |entries| (error feedback) */
    PLACEMENT_PUSH_MAX
} placement_push_enc;

typedef enum placement_pull_enc {
    PLACEMENT_PULL_FULL = 0, /* fp32, every entry */
    PLACEMENT_PULL_FP16,     /* IEEE binary16, every entry */
    PLACEMENT_PULL_DELTA,    /* only the entries changed since the worker's copy (exact fp32) */
    PLACEMENT_PULL_TOPK,     /* of those, the topk_percent that changed most (exact fp32);
                              * the rest later, when they are among the largest */
    PLACEMENT_PULL_MAX
} placement_pull_enc;

typedef struct placement_compression {
    placement_push_enc push;   /* default none */
    double topk_percent;       /* (0, 100], default 1; used with push or pull topk */
    placement_pull_enc pull;   /* default full */
} placement_compression;

/* The most local steps a job may take between pushes. */
#define PLACEMENT_LOCAL_STEPS_MAX 64

typedef struct placement_job {
    char model[CNN_NAME_MAX];  /* a cnn_model_init() name */
    placement_mode mode;
    long staleness;            /* ssp: >= 0; -1 otherwise */
    int batch;                 /* minibatch per worker step, default 64 */
    optim_config opt;          /* checked with optim_config_check() */
    uint64_t seed;             /* initialisation and shuffling, default 1 */
    long epochs;               /* 0: not given (then max_steps is) */
    long max_steps;            /* 0: not given; with epochs: stop at whichever comes first */
    long checkpoint_interval_s; /* 0: no periodic checkpoints */
    long barrier_timeout_ms;   /* sync: default 30000; 0 otherwise */
    long eval_every_steps;     /* 0: off */
    long eval_every_s;         /* 0: off */
    double target_accuracy;    /* percent: the job ends when an evaluation reaches it; 0: off */
    int augment_shift;         /* random shifts of training images, pixels (0: none) */
    char tcp_congestion[16];   /* TCP congestion control of every connection ("": the
                                * host's default) */
    int overlap;               /* async/ssp: workers compute the next gradient while
                                * the last push and its weights are on the wire */
    int local_steps;           /* async/ssp: minibatches a worker trains on between
                                * pushes, its own steps taken locally (1: none) */
    placement_compression compression; /* job.compression */
} placement_job;

typedef struct placement_data {
    /* Paths, relative ones resolved against the placement file's directory
     * (owned; test_* are NULL when not given). */
    char *train_images, *train_labels;
    char *test_images, *test_labels;
    float mean, std;           /* input normalisation, default MNIST's */
    int parts;                 /* number of data parts (default: number of workers) */
} placement_data;

/* "auth": the cluster key (docs/security.md).  Without it the cluster runs
 * unauthenticated. */
typedef struct placement_auth {
    char *key_file;            /* the key file's path, a relative one resolved
                                * against the placement's directory (owned);
                                * NULL: no "auth", no key */
} placement_auth;

#define PLACEMENT_KEY_SIZE 32          /* bytes in the cluster key */
#define PLACEMENT_KEY_HEX (2 * PLACEMENT_KEY_SIZE) /* hex digits in a key file */

typedef struct placement {
    char *source;              /* the name used in messages (owned) */
    placement_job job;
    placement_data data;
    placement_auth auth;
    size_t nparams;            /* the model's parameter count */
    int nnodes;
    placement_node *nodes;     /* nnodes, in file order (owned) */
    int nshards;               /* number of ps nodes */
    int *shard_node;           /* nshards: index into nodes[] of each shard (owned) */
    int nworkers;
} placement;

/* Parse len bytes of text (need not be NUL-terminated) into *out.  `name`
 * (may be NULL) is the file's path: it prefixes every message and its
 * directory anchors relative data paths.  Returns 0, or -1 with a message in
 * err and *out zeroed (placement_free() on it is harmless either way). */
int placement_parse(const char *text, size_t len, const char *name, placement *out, char *err,
                    size_t errlen);

/* Read the file at path (at most PLACEMENT_FILE_MAX bytes) and parse it.
 * Returns 0, or -1 with a message naming the path. */
int placement_load(const char *path, placement *out, char *err, size_t errlen);

/* Free what a placement owns and zero it. */
void placement_free(placement *p);

/* The node with this id, or NULL.  The pointer lives as long as *p. */
const placement_node *placement_node_find(const placement *p, const char *id);

/* This daemon's node: `id`, or, if id is NULL or empty, the host name (then
 * also its part before the first dot).  If role is not PLACEMENT_ROLE_MAX
 * the node must have that role.  Returns 0 with *out set, or -1 with a
 * message such as: no node "box9" in placement.local.conf (nodes: ps0, ps1, w0, w1) */
int placement_node_select(const placement *p, const char *id, placement_role role,
                          const placement_node **out, char *err, size_t errlen);

/* The ps node holding shard `shard`, or NULL if out of range. */
const placement_node *placement_shard_node(const placement *p, int shard);

/* Split [0, nparams) into p->nshards contiguous ranges lo[s]..hi[s] (arrays
 * of p->nshards, indexed by shard): from the explicit "range"s if the file
 * gives them (then nparams must be p->nparams), else proportional to the
 * shares with every boundary a multiple of PLACEMENT_ALIGN and the last
 * ending at nparams.  lo[0] = 0, lo[s+1] = hi[s], every range non-empty.
 * Integer arithmetic only, so every box computes the same ranges.
 * Returns 0, or -1 with a message (e.g. more shards than 16-float blocks). */
int placement_ranges_compute(const placement *p, size_t nparams, size_t *lo, size_t *hi,
                             char *err, size_t errlen);

/* Read a cluster key file: exactly 64 hex digits (either case), optionally
 * followed by one newline.  Refuses a file that is missing, not a regular
 * file, malformed, or whose mode grants any permission to group or others
 * (st_mode & 077).  Returns 0 with the key, or -1 with a message naming the
 * file (for the mode: the mode and the chmod 600 that fixes it).  Nothing
 * of the key is left in buffers of its own. */
int placement_key_load(const char *path, uint8_t key[PLACEMENT_KEY_SIZE], char *err,
                       size_t errlen);

/* The cluster key of p, if p has "auth": read from auth.key_file, or, when
 * the environment has CREDENTIALS_DIRECTORY (systemd's LoadCredential=)
 * and that directory holds a file with the key file's base name, from that
 * file.  The path read goes to used (usedlen bytes; may be NULL).  Returns
 * 1 with the key, 0 if p has no "auth" (no key; key untouched), or -1 with
 * a message (placement_key_load's). */
int placement_auth_key(const placement *p, uint8_t key[PLACEMENT_KEY_SIZE], char *used,
                       size_t usedlen, char *err, size_t errlen);

/* Write key as a new key file at path: mode 0600, 64 lowercase hex digits
 * and a newline, flushed to disk.  Refuses a path that exists.  Returns 0,
 * or -1 with a message naming the file. */
int placement_key_save(const char *path, const uint8_t key[PLACEMENT_KEY_SIZE], char *err,
                       size_t errlen);

/* Resolve the job's model.  Returns 0, or -1 with a message at "job.model". */
int placement_model_init(const placement *p, cnn_model *m, char *err, size_t errlen);

/* "sync", "async", "ssp" <-> enum; -1 / "?" if unknown. */
int placement_mode_from_name(const char *name);
const char *placement_mode_name(placement_mode m);

/* Names of the compression settings ("none", "fp16", "topk" / "full",
 * "fp16", "delta"), "?" if out of range. */
const char *placement_push_enc_name(placement_push_enc e);
const char *placement_pull_enc_name(placement_pull_enc e);

/* The compression setting as one line for a daemon's start-up log, e.g.
 * "push topk 1%, pull delta", into buf (always NUL-terminated). */
void placement_compression_describe(const placement_compression *c, char *buf, size_t len);

/* "ps", "worker" <-> enum; -1 / "?" if unknown. */
int placement_role_from_name(const char *name);
const char *placement_role_name(placement_role r);

/* Check an address's syntax (no resolution): a dotted quad, an IPv6 literal
 * with or without brackets, or an RFC 1123 host name.  On success writes the
 * host (brackets removed, hostlen bytes at most) and its kind and returns 0;
 * returns -1 if malformed. */
int placement_addr_parse(const char *s, char *host, size_t hostlen, placement_addr_kind *kind);

/* Blank out `//` and `#` comments outside JSON strings in buf (len bytes),
 * in place: comment characters become spaces, newlines stay, so offsets and
 * line numbers are unchanged. */
void placement_comments_strip(char *buf, size_t len);

#endif
