/* ctl.h - psctl, the operator's tool: ask every psd shard of a placement
 * for its status, its accuracy history, or a checkpoint.
 *
 * query.c talks to the shards, all at once, on one libuv loop: per shard a
 * connection says HELLO as PROTO_ROLE_OPERATOR and pipelines one request
 * (STATUS_REQ or CHECKPOINT; a PULL is sent once the WELCOME has named the
 * shard's range); one timer bounds the whole exchange (connect, handshake
 * and reply).  Each shard ends with a ctl_result: the reply, or an
 * error naming what went wrong ("connection refused", "timed out after
 * 3000 ms", the shard's ERROR).  table.c lays out text tables; main.c is the
 * command line and the output.
 */
#ifndef PSD_CTL_H
#define PSD_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "placement.h"
#include "proto.h"

/* What to ask each shard. */
typedef enum ctl_req {
    CTL_REQ_STATUS = 0, /* STATUS_REQ -> STATUS JSON */
    CTL_REQ_CHECKPOINT, /* CHECKPOINT -> OK with the version written */
    CTL_REQ_PULL,       /* PULL of the shard's whole range -> WEIGHTS */
    CTL_REQ_MAX
} ctl_req;

#define CTL_ERROR_MAX 384
#define CTL_ADDR_MAX (PLACEMENT_HOST_MAX + 16)

/* One shard's outcome. */
typedef struct ctl_result {
    int shard;                          /* shard index */
    char node[PLACEMENT_ID_MAX + 1];    /* its node id in the placement */
    char address[CTL_ADDR_MAX];         /* "host:port" ("[v6]:port") */
    int ok;                             /* 1: the reply below is valid */
    int reached;                        /* the TCP connection was established */
    char error[CTL_ERROR_MAX];          /* !ok: why */
    uint64_t lo, hi, version;           /* from the WELCOME (ok only) */
    uint64_t nparams;                   /* from the WELCOME: the shard's model */
    char model[PROTO_MODEL_MAX + 1];
    char *json;                         /* STATUS: NUL-terminated copy (owned) */
    size_t json_len;
    uint64_t ckpt_version;              /* CHECKPOINT: the version written */
    float *weights;                     /* PULL: hi - lo floats of [lo, hi) (owned) */
    uint64_t weights_version;           /* PULL: the version they were taken at */
} ctl_result;

/* Ask the n shards listed in shards[] (indexes into pl->shard_node) the
 * same request, concurrently, within timeout_ms in all.  With key (the
 * cluster key, PLACEMENT_KEY_SIZE bytes; NULL: none) each connection
 * proves it holds the key and checks that the shard does (a shard with
 * another key fails with "its proof does not match our cluster key"), and
 * the request and its reply are sealed (docs/security.md).  out[i] receives
 * shards[i]'s result (release each with ctl_result_free).  Returns 0 when
 * every result is filled in (whether each shard answered or not; see
 * out[i].ok), or -1 with a message in err if the query could not run at all
 * (event loop, out of memory). */
int ctl_query_run(const placement *pl, const int *shards, int n, ctl_req req, int timeout_ms,
                  const uint8_t *key, ctl_result *out, char *err, size_t errlen);

/* Free what r owns (its JSON copy, its weights). */
void ctl_result_free(ctl_result *r);

/* "host:port", with brackets around an IPv6 literal, into out. */
void ctl_address_format(const placement_node *n, char *out, size_t outlen);

/* ------------------------------------------------------------ tables */

/* A text table: a header row, then rows of cells, printed with each column
 * as wide as its widest cell.  A row may "span": from cell span_from on,
 * its cells are printed as they are, unpadded, and do not widen columns
 * (used for an error message in place of a shard's numbers). */
typedef struct ctl_table {
    int ncols;
    int nrows, caprows;
    char ***cells;  /* nrows x ncols, each owned (NULL: empty) */
    int *span_from; /* per row: ncols when the row does not span */
} ctl_table;

/* Start a table whose first row is the ncols header cells.  Returns 0 or
 * -1 (out of memory; t is then empty and ctl_table_free is harmless). */
int ctl_table_init(ctl_table *t, int ncols, const char *const *header);

/* Add a row of up to ncols cells (the rest empty); span_from as above
 * (ncols or more: no span).  The cells are copied.  Returns 0 or -1. */
int ctl_table_add(ctl_table *t, const char *const *cells, int ncells, int span_from);

/* Print t to f, columns separated by two spaces, no trailing blanks. */
void ctl_table_print(const ctl_table *t, FILE *f);

/* Free everything t owns. */
void ctl_table_free(ctl_table *t);

#endif
