/* fuzz_placement.c - libFuzzer target: the placement file parser
 * (placement_parse, common/placement.c) on arbitrary text.
 *
 * The input is the whole file (not NUL-terminated: libFuzzer's heap copy
 * ends exactly at `size`, so a parser that reads one byte too far is an ASan
 * report).  Checked, besides the sanitizers:
 *  - a failure leaves a NUL-terminated message starting with the file name,
 *    and *out zeroed;
 *  - a success gives what docs/placement.md promises: at least one ps and one
 *    worker, shards 0..S-1 each on exactly one ps node, ranges that tile
 *    [0, nparams) on the 16-float grid (except the end), the same ranges from
 *    placement_ranges_compute, worker parts inside data.parts, unique ids
 *    that placement_node_find and placement_node_select find again, and
 *    addresses that placement_addr_parse accepts again as the same kind;
 *  - placement_comments_strip only turns bytes into spaces and keeps every
 *    newline.
 */
#include <string.h>

#include "fuzz.h"
#include "placement.h"

#define NAME "fuzz/placement.conf"

static void check_comments_strip(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    FUZZ_ASSERT(buf != NULL, "out of memory");
    if (size)
        memcpy(buf, data, size);
    placement_comments_strip(buf, size);
    for (size_t i = 0; i < size; i++)
        FUZZ_ASSERT(buf[i] == (char)data[i] || (buf[i] == ' ' && data[i] != '\n'),
                    "comment stripping changed byte %zu from 0x%02x to 0x%02x", i, data[i],
                    (unsigned char)buf[i]);
    free(buf);
}

static void check_placement(const placement *p)
{
    char err[512];
    FUZZ_ASSERT(p->source && strcmp(p->source, NAME) == 0, "source %s",
                p->source ? p->source : "(null)");
    FUZZ_ASSERT(p->nshards >= 1 && p->nworkers >= 1 && p->nnodes == p->nshards + p->nworkers &&
                    p->nnodes <= PLACEMENT_MAX_NODES,
                "%d nodes: %d shards, %d workers", p->nnodes, p->nshards, p->nworkers);
    FUZZ_ASSERT(p->nparams > 0, "nparams 0");
    FUZZ_ASSERT(p->data.train_images && p->data.train_labels, "no training files");
    FUZZ_ASSERT(!p->data.test_images == !p->data.test_labels, "one test file of two");
    FUZZ_ASSERT(p->data.parts >= p->nworkers, "%d parts for %d workers", p->data.parts,
                p->nworkers);

    size_t *lo = malloc(2 * (size_t)p->nshards * sizeof *lo);
    FUZZ_ASSERT(lo != NULL, "out of memory");
    size_t *hi = lo + p->nshards;
    FUZZ_ASSERT(placement_ranges_compute(p, p->nparams, lo, hi, err, sizeof err) == 0,
                "ranges of a parsed file: %s", err);
    size_t end = 0;
    for (int s = 0; s < p->nshards; s++) {
        const placement_node *n = placement_shard_node(p, s);
        FUZZ_ASSERT(n && n->role == PLACEMENT_ROLE_PS && n->shard == s,
                    "shard %d: node %s", s, n ? n->id : "(none)");
        FUZZ_ASSERT(n->lo == lo[s] && n->hi == hi[s],
                    "shard %d: [%zu, %zu) in the node, [%zu, %zu) recomputed", s, n->lo, n->hi,
                    lo[s], hi[s]);
        FUZZ_ASSERT(n->lo == end && n->lo < n->hi && n->hi <= p->nparams,
                    "shard %d: [%zu, %zu) after %zu, nparams %zu", s, n->lo, n->hi, end,
                    p->nparams);
        FUZZ_ASSERT(n->lo % PLACEMENT_ALIGN == 0 &&
                        (n->hi % PLACEMENT_ALIGN == 0 || n->hi == p->nparams),
                    "shard %d: [%zu, %zu) off the grid", s, n->lo, n->hi);
        end = n->hi;
    }
    FUZZ_ASSERT(end == p->nparams, "shards end at %zu of %zu", end, p->nparams);
    FUZZ_ASSERT(placement_shard_node(p, p->nshards) == NULL && placement_shard_node(p, -1) == NULL,
                "a shard out of range has a node");
    free(lo);

    int ps = 0;
    for (int i = 0; i < p->nnodes; i++) {
        const placement_node *n = &p->nodes[i];
        size_t idl = strnlen(n->id, sizeof n->id);
        FUZZ_ASSERT(idl >= 1 && idl <= PLACEMENT_ID_MAX, "nodes[%d]: id of %zu bytes", i, idl);
        FUZZ_ASSERT(placement_node_find(p, n->id) == n, "nodes[%d]: id %s is not unique", i,
                    n->id);
        const placement_node *sel = NULL;
        FUZZ_ASSERT(placement_node_select(p, n->id, n->role, &sel, err, sizeof err) == 0 &&
                        sel == n,
                    "nodes[%d]: select: %s", i, err);
        placement_role other = n->role == PLACEMENT_ROLE_PS ? PLACEMENT_ROLE_WORKER
                                                            : PLACEMENT_ROLE_PS;
        FUZZ_ASSERT(placement_node_select(p, n->id, other, &sel, err, sizeof err) != 0,
                    "nodes[%d]: selected with the wrong role", i);
        char host[PLACEMENT_HOST_MAX + 1];
        placement_addr_kind kind;
        FUZZ_ASSERT(placement_addr_parse(n->host, host, sizeof host, &kind) == 0 &&
                        kind == n->addr_kind && strcmp(host, n->host) == 0,
                    "nodes[%d]: address %s does not parse again the same", i, n->host);
        if (n->role == PLACEMENT_ROLE_PS) {
            ps++;
            FUZZ_ASSERT(n->port >= 1 && n->port <= 65535, "nodes[%d]: port %d", i, n->port);
        } else {
            FUZZ_ASSERT(n->role == PLACEMENT_ROLE_WORKER && n->port == 0 && n->part >= 0 &&
                            n->part < p->data.parts,
                        "nodes[%d]: worker with port %d, part %d of %d", i, n->port, n->part,
                        p->data.parts);
            FUZZ_ASSERT(!n->evaluate || p->data.test_images,
                        "nodes[%d]: evaluates without a test set", i);
        }
    }
    FUZZ_ASSERT(ps == p->nshards, "%d ps nodes, %d shards", ps, p->nshards);
    const placement_node *none = NULL;
    FUZZ_ASSERT(placement_node_select(p, "no such node!", PLACEMENT_ROLE_MAX, &none, err,
                                      sizeof err) != 0 && none == NULL,
                "found a node that cannot exist");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_comments_strip(data, size);

    placement p;
    char err[512];
    memset(err, 'x', sizeof err);
    int rc = placement_parse((const char *)data, size, NAME, &p, err, sizeof err);
    if (rc != 0) {
        FUZZ_ASSERT(rc == -1, "placement_parse returned %d", rc);
        FUZZ_ASSERT(memchr(err, 0, sizeof err) != NULL, "message not NUL-terminated");
        FUZZ_ASSERT(strncmp(err, NAME, strlen(NAME)) == 0, "message without the file: %s", err);
        static const placement zero;
        FUZZ_ASSERT(memcmp(&p, &zero, sizeof p) == 0, "*out not zeroed after a failure");
        return 0;
    }
    check_placement(&p);
    placement_free(&p);
    return 0;
}
