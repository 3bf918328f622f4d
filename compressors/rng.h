/* Counter-based random numbers: the i-th draw of stream `key` is a pure function of
 * (key, i), so a vector encodes the same whether it is processed whole or in chunks, by any
 * number of threads, and a rerun from saved state draws exactly the same numbers. The mixer
 * is SplitMix64's finaliser (Steele, Lea, Flood 2014). */
#ifndef TERSE_RNG_H
#define TERSE_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t rng_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 64 random bits: draw i of stream key. */
static inline uint64_t rng_bits(uint64_t key, uint64_t i)
{
    return rng_mix(key + (i + 1) * 0x9e3779b97f4a7c15ull);
}

/* Uniform in [0, 1) with 24 random bits: exactly representable as a float. */
static inline float rng_uniform_f(uint64_t key, uint64_t i)
{
    return (float)(rng_bits(key, i) >> 40) * 0x1.0p-24f;
}

/* Uniform integer in [0, n), n > 0, by Lemire's multiply-shift (bias below 2^-32 for the
 * sizes here). */
static inline uint64_t rng_below(uint64_t key, uint64_t i, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_bits(key, i) * n) >> 64);
}

/* Standard normal, Box-Muller on draws 2i and 2i+1, in double then rounded: the same value
 * on every machine with IEEE doubles and a correctly rounded libm log/cos is not promised,
 * so callers that need bitwise agreement across ranks compute it on one rank or use the
 * same libm everywhere (ranks of one job do). */
static inline double rng_normal(uint64_t key, uint64_t i)
{
    double u1 = ((double)(rng_bits(key, 2 * i) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(rng_bits(key, 2 * i + 1) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
