/* Run-time choice of the codecs' vector kernels.
 *
 * terse is built for the baseline x86-64 (SSE2) so that one binary runs everywhere. Codecs
 * that have a faster kernel for AVX2 compile it with SIMD_AVX2_FN (a per-function target
 * attribute) and call it when simd_level() says the CPU has AVX2, FMA and F16C; otherwise
 * they run the portable scalar loop, which stays in the library and in the tests.
 *
 * The rule every kernel keeps: the vector and the scalar path compute the same bits for
 * every input (the same operations in the same order, lane by lane), so ranks on different
 * CPUs still agree and a checkpoint resumes the same on either. The unit tests force each
 * level in turn and compare.
 *
 * TERSE_SIMD=scalar in the environment (read once, at the first call) forces the scalar
 * kernels; TERSE_SIMD=avx2 or auto (the default) picks the best the CPU has. */
#ifndef TERSE_SIMD_H
#define TERSE_SIMD_H

typedef enum { SIMD_SCALAR = 0, SIMD_AVX2 = 1 } simd_level_t;

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SIMD_X86 1
/* Marks a function compiled for AVX2 (with FMA and F16C, which every AVX2 CPU has). Call
 * it only when simd_level() >= SIMD_AVX2. */
#define SIMD_AVX2_FN __attribute__((target("avx2,fma,f16c")))
#else
#define SIMD_X86 0
#endif

/* The level the kernels use now. Thread-safe, cheap (one relaxed load after the first). */
simd_level_t simd_level(void);

/* The best level this CPU supports, whatever TERSE_SIMD or simd_set_level say. */
simd_level_t simd_cpu_level(void);

/* Forces a level (tests, benchmarks); a level above the CPU's is lowered to the CPU's.
 * Returns the level now in use. Not meant to race with running kernels. */
simd_level_t simd_set_level(simd_level_t level);

/* "scalar" or "avx2". */
const char *simd_name(simd_level_t level);

#endif
