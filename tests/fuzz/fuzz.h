/* fuzz.h - helpers shared by the libFuzzer targets in tests/fuzz/ and by the
 * seed generator (docs/fuzzing.md).
 *
 * A target reports a finding by aborting: FUZZ_ASSERT prints what broke and
 * calls abort(), which libFuzzer turns into a crash with a reproducer file,
 * exactly like an ASan or UBSan report.
 */
#ifndef PSD_FUZZ_H
#define PSD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "compress.h"
#include "proto.h"

/* Abort with "fuzz finding at file:line: cond: <message>" if cond is false. */
#define FUZZ_ASSERT(cond, ...)                                                             \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz finding at %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Decode f with the decoder of message type `type` (1..PROTO_MSG_MAX-1) and,
 * when it decodes, check that the type's encoder gives back exactly the
 * frame's bytes: the size asked with a NULL buffer, the frame written into a
 * heap buffer of exactly that size, and refused (PROTO_ERR_NOSPACE) by one
 * byte less.  A decoder handed a frame of another type must refuse it with
 * PROTO_ERR_INVALID.  Returns the decoder's result (0 or a negative
 * PROTO_ERR_*); aborts on a mismatch, or if the type has no entry in the
 * table. */
int fuzz_msg_check(const proto_frame *f, int type);

/* Abort with a message naming the type if a message type below
 * PROTO_MSG_MAX has no decoder in fuzz_msg_check's table (a type was added
 * to proto.h but not to tests/fuzz/common.c). */
void fuzz_msg_table_check(void);

/* Compress buf[0..len) as one gzip member (deflate level `level`, 0..9) into
 * a malloc'd *out.  Returns 0, or -1 (out of memory or a zlib error). */
int fuzz_gzip(const uint8_t *buf, size_t len, int level, uint8_t **out, size_t *outlen);

#endif
