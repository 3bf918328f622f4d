/* Run-time kernel selection (simd.h): the CPU's level, read once with the compiler's
 * cpuid builtins, lowered by TERSE_SIMD=scalar or by simd_set_level. */
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#if SIMD_X86
#include <cpuid.h>
#endif

/* -1: not decided yet; otherwise a simd_level_t. Every thread that decides computes the
 * same value, so a race at the first call is harmless. */
static int current = -1;

simd_level_t simd_cpu_level(void)
{
#if SIMD_X86
    /* the builtin checks that the OS saves the AVX registers too; F16C has no builtin name
     * in every compiler (clang 14), so its CPUID bit is read directly */
    __builtin_cpu_init();
    unsigned a, b, c, d;
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return SIMD_AVX2;
#endif
    return SIMD_SCALAR;
}

simd_level_t simd_level(void)
{
    int l = __atomic_load_n(&current, __ATOMIC_RELAXED);
    if (l >= 0) return (simd_level_t)l;
    l = (int)simd_cpu_level();
    const char *env = getenv("TERSE_SIMD");
    if (env && !strcmp(env, "scalar")) l = SIMD_SCALAR;
    __atomic_store_n(&current, l, __ATOMIC_RELAXED);
    return (simd_level_t)l;
}

simd_level_t simd_set_level(simd_level_t level)
{
    simd_level_t cpu = simd_cpu_level();
    int l = (int)(level > cpu ? cpu : level);
    __atomic_store_n(&current, l, __ATOMIC_RELAXED);
    return (simd_level_t)l;
}

const char *simd_name(simd_level_t level)
{
    return level == SIMD_AVX2 ? "avx2" : "scalar";
}
