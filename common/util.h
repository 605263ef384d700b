/* util.h - strict parsing of numbers from the command line and config files,
 * and atomic file writes.
 *
 * No atoi: a typo is an error, never a silent default. */
#ifndef PSD_UTIL_H
#define PSD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parse all of s as a base-10 integer in [min, max].  Returns 0 or -1. */
int util_parse_long(const char *s, long min, long max, long *out);

/* Parse all of s as an unsigned 64-bit integer.  Returns 0 or -1. */
int util_parse_u64(const char *s, unsigned long long *out);

/* Parse all of s as a finite float in [min, max].  Returns 0 or -1. */
int util_parse_float(const char *s, float min, float max, float *out);

/* Write len bytes to path atomically: path.tmp.<pid> in the same directory,
 * fsync, rename over path, fsync of the directory -- a crash leaves the old
 * file or the new one, never a torn one.  Returns 0, or -1 with a message
 * naming the file and the failed step (strerror: e.g. "No space left on
 * device"); the temporary file is removed on failure. */
int util_file_write_atomic(const char *path, const uint8_t *buf, size_t len, char *err,
                           size_t errlen);

/* Make TCP socket fd use congestion control `name` (TCP_CONGESTION).
 * Returns 0, or -1 with a message that says what this host offers (an
 * unprivileged process may only pick one of
 * net.ipv4.tcp_allowed_congestion_control). */
int util_tcp_congestion(int fd, const char *name, char *err, size_t errlen);

/* The same on a throwaway socket: can this process use `name`? */
int util_tcp_congestion_check(const char *name, char *err, size_t errlen);

/* zlib's CRC-32 of n bytes (any n: zlib takes a uInt length at a time). */
uint32_t util_crc32(const void *p, size_t n);

#endif
