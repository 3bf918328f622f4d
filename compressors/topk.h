/* TopK selection and the sparse (index, value) message shared by sparse codecs. */
#ifndef TERSE_TOPK_H
#define TERSE_TOPK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "simd.h"

#if SIMD_X86
#include <immintrin.h>
#endif

#define TOPK_N_PARAMS 2
/* The density of a topk codec given neither density nor k. */
#define TOPK_DEFAULT_DENSITY 0.01
extern const param_def_t topk_params[TOPK_N_PARAMS];

/* The k a topk codec with parameters p keeps of `count` elements. */
size_t topk_k(const double *p, size_t count);

/* Writes the k largest-magnitude entries of v[0..n) (ties: lower index first) to idx/val in
 * increasing index order; returns how many (min(k, n)). Magnitudes order by the bits of |x|,
 * so a NaN ranks above +Inf and -0 ties with +0. Four passes over v, no memory of its own. */
size_t topk_select(const float *restrict v, size_t n, size_t k, uint32_t *restrict idx,
                   float *restrict val);

/* Scratch bytes topk_select_scratch uses to select k of n entries in one pass over v; 0 where
 * it would not (small n, or k above about a fifth of n). O(k) plus at most 256 KiB. */
size_t topk_scratch_size(size_t n, size_t k);

/* topk_select, with the same result, through a sampled threshold and one vectorised pass over
 * v when scratch (4-byte aligned) holds topk_scratch_size(n, k) bytes; topk_select's four
 * passes otherwise. */
size_t topk_select_scratch(const float *restrict v, size_t n, size_t k, uint32_t *restrict idx,
                           float *restrict val, void *restrict scratch, size_t scratch_bytes);

/* topk_select, with the same result, given a guess t of the k-th largest magnitude key
 * (the bits of |x|): collects the entries with key >= t into scratch, at most
 * scratch_bytes / 8 of them, and selects among those; falls back to topk_select's passes
 * when they are fewer than k or do not fit. Fast when t is a little below the true key.
 * Exposed for the tests, which try any t. */
size_t topk_select_above(const float *restrict v, size_t n, size_t k, uint32_t t,
                         uint32_t *restrict idx, float *restrict val, void *restrict scratch,
                         size_t scratch_bytes);

#if SIMD_X86
/* The lanes whose bit is set in m, lowest first, one byte each: what
 * _mm256_permutevar8x32 needs to compact the lanes of a movemask m to the front. */
extern const uint64_t topk_lane_order[256];

/* Compacts the entries of v[at .. at + 8) whose bit is set in `hit` (a movemask), lowest
 * first, into idx (their indices) and val (their values), with one 8-wide store each: idx
 * and val need room for 8. Returns how many were kept. The candidate passes of topk and
 * dgc share it; the _reg form takes the 8 values from a register. */
SIMD_AVX2_FN static inline size_t topk_compact8_reg_avx2(__m256 x, size_t at, uint32_t hit,
                                                         uint32_t *restrict idx, float *restrict val)
{
    const __m256i order = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)topk_lane_order[hit]));
    const __m256i index = _mm256_add_epi32(_mm256_set1_epi32((int32_t)(uint32_t)at),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_storeu_si256((__m256i *)idx, _mm256_permutevar8x32_epi32(index, order));
    _mm256_storeu_ps(val, _mm256_permutevar8x32_ps(x, order));
    return (size_t)__builtin_popcount(hit);
}

SIMD_AVX2_FN static inline size_t topk_compact8_avx2(const float *restrict v, size_t at, uint32_t hit,
                                                     uint32_t *restrict idx, float *restrict val)
{
    return topk_compact8_reg_avx2(_mm256_loadu_ps(v + at), at, hit, idx, val);
}
#endif

/* The parts of a sparse message (uint32 k | uint32 idx[k] | float val[k]): returns k and
 * points idx and val (either may be NULL) into msg. */
static inline uint32_t sparse_view(const void *msg, const uint32_t **idx, const float **val)
{
    uint32_t k;
    memcpy(&k, msg, 4);
    const unsigned char *b = (const unsigned char *)msg;
    if (idx) *idx = (const uint32_t *)(b + 4);
    if (val) *val = (const float *)(b + 4 + 4 * (size_t)k);
    return k;
}

/* Whether a sparse message of `bytes` bytes (uint32 k | uint32 idx[k] | float val[k]) is
 * well formed for count elements: its size is 4 + 8 k and its indices strictly increase and
 * stay below count. TERSE_OK or TERSE_ERR_MISMATCH. */
terse_status_t sparse_check(const void *msg, size_t bytes, size_t count);

/* out[idx[j]] += val[j] for a message sparse_check accepted. */
void sparse_add(const void *restrict msg, float *restrict out);

/* p[idx[j]] -= 0 + val[j] for this rank's own (well formed) message: p becomes p - delta,
 * delta being the message decoded into zeros (0 + val, so a -0 value subtracts as +0), with
 * the bits of the whole-vector subtraction. */
void sparse_subtract(const void *restrict msg, float *restrict p);

/* sparse_check, then sparse_add; out untouched if the message is malformed. */
terse_status_t sparse_decode_add(const void *restrict msg, size_t bytes, size_t count,
                                 float *restrict out);

#endif
