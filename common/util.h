/* util.h - strict parsing of numbers from the command line and config files.
 *
 * No atoi: a typo is an error, never a silent default. */
#ifndef PSD_UTIL_H
#define PSD_UTIL_H

/* Parse all of s as a base-10 integer in [min, max].  Returns 0 or -1. */
int util_parse_long(const char *s, long min, long max, long *out);

/* Parse all of s as an unsigned 64-bit integer.  Returns 0 or -1. */
int util_parse_u64(const char *s, unsigned long long *out);

/* Parse all of s as a finite float in [min, max].  Returns 0 or -1. */
int util_parse_float(const char *s, float min, float max, float *out);

#endif
