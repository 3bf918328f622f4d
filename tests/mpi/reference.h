/* Pieces of the serial reference that the multi-rank tests share: the deterministic
 * per-rank gradient every rank can rebuild for every other rank, and the reference codecs
 * written independently of compressors/ (TopK by a full sort, the casts through half.h). */
#ifndef TERSE_TEST_REFERENCE_H
#define TERSE_TEST_REFERENCE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

/* Rank r's gradient element i at call `call`: a few exact ties in magnitude, both signs. */
static inline float ref_gradient(int rank, size_t i, int call)
{
    uint64_t x = (uint64_t)rank * 0x9e3779b97f4a7c15ull ^ (i + 1) * 0xbf58476d1ce4e5b9ull ^
                 (uint64_t)(call + 1) * 0x94d049bb133111ebull;
    x ^= x >> 31; x *= 0xd6e8feb86659fd93ull; x ^= x >> 32;
    if (x % 17 == 0) return (x & 1) ? 0.5f : -0.5f;
    return (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * (1.0f + (float)(i % 5));
}

typedef enum { REF_NONE, REF_FP16, REF_BF16, REF_TOPK } ref_codec_t;

static const float *ref_cmp_v;
static inline int ref_by_mag_then_index(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    float x = fabsf(ref_cmp_v[i]), y = fabsf(ref_cmp_v[j]);
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : (i > j);
}

/* out = C(p): TopK keeps the k largest magnitudes (ties: lower index); order is n scratch. */
static inline void ref_compress(ref_codec_t codec, size_t k, const float *p, float *out, size_t n,
                                size_t *order)
{
    switch (codec) {
    case REF_NONE: memmove(out, p, n * sizeof *p); break;
    case REF_FP16: for (size_t i = 0; i < n; i++) out[i] = half_to_f32(half_from_f32(p[i])); break;
    case REF_BF16: for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(bf16_from_f32(p[i])); break;
    case REF_TOPK:
        for (size_t i = 0; i < n; i++) order[i] = i;
        ref_cmp_v = p;
        qsort(order, n, sizeof *order, ref_by_mag_then_index);
        memset(out, 0, n * sizeof *out);
        for (size_t j = 0; j < k && j < n; j++) out[order[j]] = p[order[j]];
        break;
    }
}

#endif
