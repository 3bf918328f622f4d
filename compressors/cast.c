/* The elementwise codecs: none (fp32 as is), fp16 and bf16 casts. They travel with the
 * dense protocol (chunked reduce-scatter + allgather), summed in fp32 at each chunk's owner.
 *
 * The conversions are half.h's scalar functions; where the CPU has AVX2 and F16C (simd.h)
 * the same conversions run eight at a time: vcvtps2ph with its rounding fixed to nearest
 * even in the instruction (whatever MXCSR says), vcvtph2ps (exact), and bf16's rounding in
 * integer lanes. Both give half.h's bits for every input: the unit tests run all 2^32 floats
 * through fp16 and bf16 at both levels. */
#include <string.h>

#include "codec.h"
#include "half.h"
#include "simd.h"

#if SIMD_X86
#include <immintrin.h>

/* Each returns the elements it did, a multiple of 8; the scalar loop does the rest. */
SIMD_AVX2_FN static size_t fp16_encode_avx2(const float *restrict in, size_t n, uint16_t *restrict h)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

SIMD_AVX2_FN static size_t fp16_decode_add_avx2(const uint16_t *restrict h, size_t n, float *restrict out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), v));
    }
    return i;
}

/* bf16_from_f32 lane by lane: a NaN keeps its top half with the quiet bit set, any other
 * value rounds to nearest even by adding 0x7fff plus the lowest kept bit. */
SIMD_AVX2_FN static __m256i bf16_round_avx2(__m256i x)
{
    const __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), odd), 16);
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

SIMD_AVX2_FN static size_t bf16_encode_avx2(const float *restrict in, size_t n, uint16_t *restrict h)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = bf16_round_avx2(_mm256_loadu_si256((const __m256i *)(in + i)));
        const __m256i b = bf16_round_avx2(_mm256_loadu_si256((const __m256i *)(in + i + 8)));
        /* packus works within 128-bit halves: a0-3 b0-3 a4-7 b4-7, put back in order */
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(h + i), p);
    }
    return i;
}

SIMD_AVX2_FN static size_t bf16_decode_add_avx2(const uint16_t *restrict h, size_t n, float *restrict out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        const __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), v));
    }
    return i;
}

#define CAST_AVX2(call) (simd_level() >= SIMD_AVX2 ? (call) : 0)
#else
#define CAST_AVX2(call) 0
#endif

static size_t f32_max_bytes(const double *p, size_t count) { (void)p; return count * 4; }
static size_t f16_max_bytes(const double *p, size_t count) { (void)p; return count * 2; }
static size_t no_scratch(const double *p, size_t count) { (void)p; (void)count; return 0; }

static size_t f32_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                         size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    memcpy(msg, in, count * 4);
    return count * 4;
}

static terse_status_t f32_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                     size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 4) return TERSE_ERR_MISMATCH;
    const float *v = msg;
    for (size_t i = 0; i < count; i++) out[i] += v[i];
    return TERSE_OK;
}

static size_t fp16_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    uint16_t *h = msg;
    for (size_t i = CAST_AVX2(fp16_encode_avx2(in, count, h)); i < count; i++) h[i] = half_from_f32(in[i]);
    return count * 2;
}

static terse_status_t fp16_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 2) return TERSE_ERR_MISMATCH;
    const uint16_t *h = msg;
    for (size_t i = CAST_AVX2(fp16_decode_add_avx2(h, count, out)); i < count; i++) out[i] += half_to_f32(h[i]);
    return TERSE_OK;
}

static size_t bf16_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    uint16_t *h = msg;
    for (size_t i = CAST_AVX2(bf16_encode_avx2(in, count, h)); i < count; i++) h[i] = bf16_from_f32(in[i]);
    return count * 2;
}

static terse_status_t bf16_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 2) return TERSE_ERR_MISMATCH;
    const uint16_t *h = msg;
    for (size_t i = CAST_AVX2(bf16_decode_add_avx2(h, count, out)); i < count; i++) out[i] += bf16_to_f32(h[i]);
    return TERSE_OK;
}

const codec_ops_t codec_none_ops = {
    sizeof(codec_ops_t), "none", CODEC_PROTO_DENSE,
    NULL, f32_max_bytes, no_scratch, f32_encode, f32_decode_add, NULL, 0,
};

const codec_ops_t codec_fp16_ops = {
    sizeof(codec_ops_t), "fp16", CODEC_PROTO_DENSE,
    NULL, f16_max_bytes, no_scratch, fp16_encode, fp16_decode_add, NULL, 0,
};

const codec_ops_t codec_bf16_ops = {
    sizeof(codec_ops_t), "bf16", CODEC_PROTO_DENSE,
    NULL, f16_max_bytes, no_scratch, bf16_encode, bf16_decode_add, NULL, 0,
};
