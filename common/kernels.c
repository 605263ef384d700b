/* kernels.c - choosing the kernel table: CPU detection and PSD_SIMD.
 *
 * x86-64: a path is usable when cpuid reports its instructions AND the OS
 * saves the registers it uses (XCR0 via xgetbv): XMM|YMM for AVX2, plus the
 * opmask and both ZMM halves for AVX-512.  aarch64: AdvSIMD (NEON) is part
 * of the base architecture.  The best usable path is avx512 > avx2 > scalar
 * on x86-64, neon > scalar on aarch64.
 */
#include "kernels.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
extern const kern_ops kern_avx2_ops;
extern const kern_ops kern_avx512_ops;
#elif defined(__aarch64__)
extern const kern_ops kern_neon_ops;
#endif

static const char *const kern_path_names[KERN_PATH_MAX] = {
    [KERN_PATH_SCALAR] = "scalar",
    [KERN_PATH_AVX2] = "avx2",
    [KERN_PATH_AVX512] = "avx512",
    [KERN_PATH_NEON] = "neon",
};

static const char *const kern_path_isa[KERN_PATH_MAX] = {
    [KERN_PATH_SCALAR] = "scalar code",
    [KERN_PATH_AVX2] = "AVX2 and FMA",
    [KERN_PATH_AVX512] = "AVX-512 (F, VL, BW, DQ)",
    [KERN_PATH_NEON] = "NEON",
};

/* The active table; written by kern_init, read by kern_active. */
static const kern_ops *kern_active_ops = &kern_generic_ops;

#if defined(__x86_64__)
/* The OS-enabled state components (XCR0); only valid when OSXSAVE is set. */
static uint64_t kern_xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

#define KERN_XCR0_AVX (0x2u | 0x4u)             /* XMM, YMM */
#define KERN_XCR0_AVX512 (0x20u | 0x40u | 0x80u) /* opmask, ZMM_Hi256, Hi16_ZMM */

/* What this CPU and OS can run: bit i set when path i is usable. */
static unsigned kern_x86_paths(void)
{
    unsigned a, b, c, d;
    unsigned paths = 1u << KERN_PATH_SCALAR;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return paths;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx)
        return paths;
    const uint64_t xcr0 = kern_xgetbv0();
    if ((xcr0 & KERN_XCR0_AVX) != KERN_XCR0_AVX)
        return paths;
    if (__get_cpuid_max(0, NULL) < 7)
        return paths;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (avx2 && fma)
        paths |= 1u << KERN_PATH_AVX2;
    if (avx2 && fma && f && dq && bw && vl && (xcr0 & KERN_XCR0_AVX512) == KERN_XCR0_AVX512)
        paths |= 1u << KERN_PATH_AVX512;
    return paths;
}
#endif

/* Bit i set when this build has path i and this machine can run it. */
static unsigned kern_usable_paths(void)
{
#if defined(__x86_64__)
    return kern_x86_paths();
#elif defined(__aarch64__)
    return (1u << KERN_PATH_SCALAR) | (1u << KERN_PATH_NEON);
#else
    return 1u << KERN_PATH_SCALAR;
#endif
}

/* The table compiled in for a path, or NULL. */
static const kern_ops *kern_table(kern_path path)
{
    switch (path) {
    case KERN_PATH_SCALAR:
        return &kern_generic_ops;
#if defined(__x86_64__)
    case KERN_PATH_AVX2:
        return &kern_avx2_ops;
    case KERN_PATH_AVX512:
        return &kern_avx512_ops;
#elif defined(__aarch64__)
    case KERN_PATH_NEON:
        return &kern_neon_ops;
#endif
    default:
        return NULL;
    }
}

/* See kernels.h. */
const kern_ops *kern_find(kern_path path)
{
    if ((int)path < 0 || path >= KERN_PATH_MAX)
        return NULL;
    if (!(kern_usable_paths() & (1u << path)))
        return NULL;
    return kern_table(path);
}

/* See kernels.h. */
int kern_path_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < KERN_PATH_MAX; i++)
        if (strcmp(name, kern_path_names[i]) == 0)
            return i;
    return -1;
}

/* See kernels.h.  An empty PSD_SIMD counts as unset. */
int kern_init(char *err, size_t errlen)
{
    const char *env = getenv("PSD_SIMD");
    const kern_ops *ops = NULL;
    if (env && *env) {
        int path = kern_path_from_name(env);
        if (path < 0) {
            if (err && errlen)
                snprintf(err, errlen,
                         "PSD_SIMD=%s: unknown SIMD path (expected scalar, avx2, avx512 or neon)",
                         env);
            return -1;
        }
        ops = kern_find((kern_path)path);
        if (!ops) {
            if (err && errlen) {
                if (kern_table((kern_path)path))
                    snprintf(err, errlen, "PSD_SIMD=%s: this CPU does not support %s", env,
                             kern_path_isa[path]);
                else
                    snprintf(err, errlen,
                             "PSD_SIMD=%s: this CPU does not support %s (this build is for %s)",
                             env, kern_path_isa[path],
#if defined(__x86_64__)
                             "x86-64"
#elif defined(__aarch64__)
                             "aarch64"
#else
                             "another architecture"
#endif
                    );
            }
            return -1;
        }
    } else {
        static const kern_path best_first[] = {KERN_PATH_AVX512, KERN_PATH_AVX2, KERN_PATH_NEON,
                                               KERN_PATH_SCALAR};
        for (size_t i = 0; i < sizeof best_first / sizeof best_first[0] && !ops; i++)
            ops = kern_find(best_first[i]);
    }
    __atomic_store_n(&kern_active_ops, ops, __ATOMIC_RELEASE);
    return 0;
}

/* See kernels.h. */
const kern_ops *kern_active(void)
{
    return __atomic_load_n(&kern_active_ops, __ATOMIC_ACQUIRE);
}
