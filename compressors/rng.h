/* Counter-based random numbers: the i-th draw of stream `key` is a pure function of
 * (key, i), so a vector encodes the same whether it is processed whole or in chunks, by any
 * number of threads, and a rerun from saved state draws exactly the same numbers. The mixer
 * is SplitMix64's finaliser (Steele, Lea, Flood 2014); rng_bits16, for vector loops, draws
 * 16 bits at a time from a 32-bit hash instead. */
#ifndef TERSE_RNG_H
#define TERSE_RNG_H

#include <math.h>
#include <stdint.h>

#include "hd.h"

static inline TERSE_HD uint64_t rng_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 64 random bits: draw i of stream key. */
static inline TERSE_HD uint64_t rng_bits(uint64_t key, uint64_t i)
{
    return rng_mix(key + (i + 1) * 0x9e3779b97f4a7c15ull);
}

/* Uniform in [0, 1) with 24 random bits: exactly representable as a float. */
static inline TERSE_HD float rng_uniform_f(uint64_t key, uint64_t i)
{
    return (float)(rng_bits(key, i) >> 40) * 0x1.0p-24f;
}

/* A cheaper stream of 16-bit draws for per-element rounding in vector loops (qsgd), where
 * rng_bits' two 64-bit multiplies per draw would cost more than the rest of the loop and
 * have no AVX2 instruction. Draw i of stream key is half i & 1 of one 32-bit hash:
 *
 *   h = lowbias32((uint32_t)(i >> 1) + rng_block_key(key, i >> 33))
 *   rng_bits16(key, i) = i even ? h & 0xffff : h >> 16
 *
 * lowbias32 is the two-round xorshift-multiply permutation of the 32-bit integers from
 * Chris Wellons' hash-prospector (github.com/skeeto/hash-prospector, README, "Two round
 * functions"), found by search for a low avalanche bias: 0.17, a little below that of
 * MurmurHash3's finaliser, a common counter hash (a truly random permutation scores 0.02).
 * So every input bit, the low ones of consecutive counters included, flips each output bit
 * with a chance close to 1/2. Its two multiplies are 32-bit (one vpmulld for eight lanes)
 * and one hash serves two draws; the three-round triple32 beside it in the README mixes
 * better still but made the qsgd encoder about a tenth slower. The block key brings the
 * full 64-bit key and the high bits of the index in through rng_bits, once per 2^33 draws,
 * so a draw is a pure function of (key, i) for any 64-bit i. Within one block a key only
 * offsets the counter: two streams read the same permutation from different starting
 * points, which no user of the draws (different elements) can tell apart. */
static inline TERSE_HD uint32_t rng_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* The offset that stream key adds to the hash counters of block `block` = i >> 33. */
static inline TERSE_HD uint32_t rng_block_key(uint64_t key, uint64_t block)
{
    return (uint32_t)(rng_bits(key, block) >> 32);
}

/* 16 random bits: draw i of the stream whose block key (for block i >> 33) is bkey. */
static inline TERSE_HD uint32_t rng_bits16_at(uint32_t bkey, uint64_t i)
{
    const uint32_t h = rng_hash32((uint32_t)(i >> 1) + bkey);
    return (h >> (16 * (i & 1))) & 0xffffu;
}

/* 16 random bits: draw i of stream key (see above). */
static inline TERSE_HD uint32_t rng_bits16(uint64_t key, uint64_t i)
{
    return rng_bits16_at(rng_block_key(key, i >> 33), i);
}

/* Uniform integer in [0, n), n > 0, by Lemire's multiply-shift (bias below 2^-32 for the
 * sizes here). */
static inline TERSE_HD uint64_t rng_below(uint64_t key, uint64_t i, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_bits(key, i) * n) >> 64);
}

/* Standard normal, Box-Muller on draws 2i and 2i+1, in double then rounded: the same value
 * on every machine with IEEE doubles and a correctly rounded libm log/cos is not promised,
 * so callers that need bitwise agreement across ranks compute it on one rank or use the
 * same libm everywhere (ranks of one job do). */
static inline TERSE_HD double rng_normal(uint64_t key, uint64_t i)
{
    double u1 = ((double)(rng_bits(key, 2 * i) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(rng_bits(key, 2 * i + 1) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
