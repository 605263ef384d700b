/* psd.h - the parameter-server daemon: one shard of the flat parameter
 * vector served over TCP (docs/protocol.md) with libuv.
 *
 * main.c parses the command line and the placement, then calls
 * psd_server_run(), which owns the loop until SIGTERM/SIGINT.
 */
#ifndef PSD_PSD_H
#define PSD_PSD_H

#include <stddef.h>

#include "cnn.h"
#include "placement.h"

typedef struct psd_config {
    const placement *pl;         /* the parsed placement (borrowed) */
    const placement_node *me;    /* this daemon's ps node in pl (borrowed) */
    const cnn_model *model;      /* the job's model (borrowed) */
    const char *state_dir;       /* where checkpoints live */
    int fresh;                   /* ignore an existing checkpoint */
    int verbose;                 /* log DEBUG lines too */
} psd_config;

/* Run the shard until SIGTERM or SIGINT: resume from the checkpoint in
 * cfg->state_dir (unless cfg->fresh), listen on the node's address, serve,
 * and on the signal write a checkpoint, close every connection and return.
 * Returns 0 on a clean stop, or 1 after logging why it could not start or
 * could not write the final checkpoint.  Never exits the process. */
int psd_server_run(const psd_config *cfg);

#endif
