/* psd.h - the parameter-server daemon: one shard of the flat parameter
 * vector served over TCP (docs/protocol.md) with libuv.
 *
 * main.c parses the command line and the placement, then calls
 * psd_server_run(), which owns the loop until SIGTERM/SIGINT.
 */
#ifndef PSD_PSD_H
#define PSD_PSD_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "placement.h"

typedef struct psd_config {
    const placement *pl;         /* the parsed placement (borrowed) */
    const placement_node *me;    /* this daemon's ps node in pl (borrowed) */
    const cnn_model *model;      /* the job's model (borrowed) */
    const char *state_dir;       /* where checkpoints live */
    int fresh;                   /* ignore an existing checkpoint */
    int verbose;                 /* log DEBUG lines too */
    /* limits (0: the default) */
    int max_conns;               /* connections held at once (PSD_MAX_CONNS) */
    long handshake_ms;           /* HELLO must arrive within this (PSD_HANDSHAKE_MS) */
    long idle_ms;                /* a connection with nothing pending and nothing
                                  * received for this long is closed (PSD_IDLE_MS;
                                  * -1: never) */
    long frame_ms;               /* a frame must be complete this long after its
                                  * first byte (PSD_FRAME_MS) */
    /* authentication (docs/security.md) */
    const uint8_t *key;          /* the cluster key (PLACEMENT_KEY_SIZE bytes,
                                  * borrowed), or NULL: unauthenticated */
    const char *key_path;        /* where it was read (for the log) */
} psd_config;

#define PSD_MAX_CONNS 1024
#define PSD_HANDSHAKE_MS 10000L
#define PSD_IDLE_MS 600000L      /* 10 minutes */
#define PSD_FRAME_MS 60000L

/* Run the shard until SIGTERM or SIGINT: resume from the checkpoint in
 * cfg->state_dir (unless cfg->fresh), listen on the node's address, serve,
 * and on the signal write a checkpoint, close every connection and return.
 * Returns 0 on a clean stop, or 1 after logging why it could not start or
 * could not write the final checkpoint.  Never exits the process. */
int psd_server_run(const psd_config *cfg);

#endif
