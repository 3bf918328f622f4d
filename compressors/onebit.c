/* onebit: scaled sign, one bit per element (ALGORITHMS.md §2.3, §2.5).
 *
 *   C(x)_j = s * sgn(x_j),   sgn(x) = +1 if x >= 0 else -1   (0 and -0.0 map to +1)
 *   scale=l2 (default, DeepSpeed's 1-bit Adam): s = ||x||_2 / sqrt(len)
 *   scale=l1 (EF-signSGD):                     s = ||x||_1 / len
 *
 * Wire format of the standalone codec: float32 s | ceil(count / 8) bytes of signs, bit j % 8
 * of byte j / 8 set when x_j >= 0 (LSB first), the unused high bits of the last byte 0.
 * Layers do not aggregate through it directly: CODEC_PROTO_ONEBIT runs 1-bit Adam's two
 * phases (collectives/onebit_twophase.c), which pads the vector and splits it in chunks,
 * from the helpers below. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "onebit.h"
#include "simd.h"

#if SIMD_X86
#include <immintrin.h>
#endif

static const char *const onebit_scales[] = {"l1", "l2", NULL};

const param_def_t onebit_params[ONEBIT_N_PARAMS] = {
    {"scale", ONEBIT_SCALE_L2, 0.0, 1.0, 0, 1, onebit_scales},
};

static inline unsigned char pack8(const float *x)
{
    unsigned b = 0;
    for (unsigned k = 0; k < 8; k++) b |= (unsigned)(x[k] >= 0.0f) << k;
    return (unsigned char)b;
}

static void pack_scalar(const float *restrict x, size_t n, unsigned char *restrict bits)
{
    size_t full = n / 8;
    for (size_t i = 0; i < full; i++) bits[i] = pack8(x + 8 * i);
    if (n % 8) {
        unsigned b = 0;
        for (size_t k = 0; k < n % 8; k++) b |= (unsigned)(x[8 * full + k] >= 0.0f) << k;
        bits[full] = (unsigned char)b;
    }
}

#if SIMD_X86
/* The signs of x[0..8) as the bits of one byte: x >= 0 (ordered compare: a NaN gives 0, as
 * in C), lowest element in the lowest bit. */
SIMD_AVX2_FN static inline uint32_t signs8_avx2(__m256 x)
{
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
}

static inline void store_signs32(unsigned char *bits, uint32_t w)
{
    for (int b = 0; b < 4; b++) bits[b] = (unsigned char)(w >> (8 * b));
}

/* 32 signs per step: four compares whose movemasks are the four bytes. */
SIMD_AVX2_FN static size_t pack_avx2(const float *restrict x, size_t n, unsigned char *restrict bits)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t w = 0;
        for (int g = 0; g < 4; g++) w |= signs8_avx2(_mm256_loadu_ps(x + i + 8 * g)) << (8 * g);
        store_signs32(bits + i / 8, w);
    }
    return i;
}
#endif

void onebit_pack(const float *restrict x, size_t n, unsigned char *restrict bits)
{
    size_t done = 0;
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) done = pack_avx2(x, n, bits);
#endif
    pack_scalar(x + done, n - done, bits + done / 8);
}

/* +s or -s as bit patterns: -s is s with the sign bit flipped, so a clear bit k of byte b
 * flips it. Integer work on whole bytes, which the compiler vectorises; it equals the
 * scalar `bit ? s : -s` bit for bit. */
static inline void unpack8(unsigned b, uint32_t su, float *restrict out, int add)
{
    const uint32_t nb = ~b;
    for (unsigned k = 0; k < 8; k++) {
        uint32_t u = su ^ ((nb >> k & 1u) << 31);
        float v;
        memcpy(&v, &u, sizeof v);
        out[k] = add ? out[k] + v : v;
    }
}

static void unpack_scalar(const unsigned char *restrict bits, size_t n, float s,
                          float *restrict out, int add)
{
    uint32_t su;
    memcpy(&su, &s, sizeof su);
    size_t full = n / 8;
    for (size_t i = 0; i < full; i++) unpack8(bits[i], su, out + 8 * i, add);
    for (size_t j = 8 * full; j < n; j++) {
        const float v = (bits[j / 8] >> (j % 8) & 1u) ? s : -s;
        out[j] = add ? out[j] + v : v;
    }
}

#if SIMD_X86
/* Eight elements per byte: the byte broadcast to eight lanes, lane k tests bit k; a clear
 * bit flips the sign bit of s, as unpack8 does. Returns the elements done (a multiple of 8). */
SIMD_AVX2_FN static size_t unpack_avx2(const unsigned char *restrict bits, size_t n, float s,
                                       float *restrict out, int add)
{
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    const __m256i zero = _mm256_setzero_si256();
    const __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i b = _mm256_set1_epi32(bits[i / 8]);
        const __m256i clear = _mm256_cmpeq_epi32(_mm256_and_si256(b, lane_bit), zero);
        const __m256 v = _mm256_xor_ps(sv, _mm256_castsi256_ps(_mm256_and_si256(clear, sign)));
        _mm256_storeu_ps(out + i, add ? _mm256_add_ps(_mm256_loadu_ps(out + i), v) : v);
    }
    return i;
}
#endif

static void unpack(const unsigned char *restrict bits, size_t n, float s, float *restrict out, int add)
{
    size_t done = 0;
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) done = unpack_avx2(bits, n, s, out, add);
#endif
    unpack_scalar(bits + done / 8, n - done, s, out + done, add);
}

void onebit_unpack(const unsigned char *restrict bits, size_t n, float s, float *restrict out)
{
    unpack(bits, n, s, out, 0);
}

void onebit_unpack_add(const unsigned char *restrict bits, size_t n, float s, float *restrict out)
{
    unpack(bits, n, s, out, 1);
}

static double norm_scalar(int scale, const float *x, size_t n, double l[8])
{
    size_t i = 0;
    if (scale == ONEBIT_SCALE_L2) {
        for (; i + 8 <= n; i += 8)
            for (size_t k = 0; k < 8; k++) l[k] += (double)x[i + k] * (double)x[i + k];
        for (; i < n; i++) l[i % 8] += (double)x[i] * (double)x[i];
    } else {
        for (; i + 8 <= n; i += 8)
            for (size_t k = 0; k < 8; k++) l[k] += fabs((double)x[i + k]);
        for (; i < n; i++) l[i % 8] += fabs((double)x[i]);
    }
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

#if SIMD_X86
/* The eight lanes of norm_scalar as two vectors of four doubles (lanes 0-3 and 4-7), each
 * lane adding its elements in the same order with a separate multiply and add: the same
 * bits. When bits is not NULL it also packs the signs of the whole groups of 32 it reads,
 * so that the standalone encode reads x once. Returns the elements done (a multiple of 32). */
SIMD_AVX2_FN static size_t norm_avx2(int scale, const float *restrict x, size_t n, double l[8],
                                     unsigned char *restrict bits)
{
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    const __m256d abs = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffll));
    const int l2 = scale == ONEBIT_SCALE_L2;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t w = 0;
        for (int g = 0; g < 4; g++) {
            const __m256 v = _mm256_loadu_ps(x + i + 8 * g);
            const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            if (l2) {
                lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
                hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
            } else {
                lo = _mm256_add_pd(lo, _mm256_and_pd(a, abs));
                hi = _mm256_add_pd(hi, _mm256_and_pd(b, abs));
            }
            w |= signs8_avx2(v) << (8 * g);
        }
        if (bits) store_signs32(bits + i / 8, w);
    }
    double t[8];
    _mm256_storeu_pd(t, lo);
    _mm256_storeu_pd(t + 4, hi);
    for (int k = 0; k < 8; k++) l[k] = t[k];
    return i;
}
#endif

/* The norm of x[0..n) and, when bits is not NULL, its packed signs, in one pass where the
 * CPU allows. */
static double norm_pack(int scale, const float *restrict x, size_t n, unsigned char *restrict bits)
{
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t done = 0;
#if SIMD_X86
    /* 32 divides done, so the scalar rest starts at lane 0 again, as it would have */
    if (simd_level() >= SIMD_AVX2) done = norm_avx2(scale, x, n, l, bits);
#endif
    if (bits) pack_scalar(x + done, n - done, bits + done / 8);
    const double acc = norm_scalar(scale, x + done, n - done, l);
    /* which NaN a sum of NaNs yields depends on the operand order a compiler picks for
     * each add; one NaN for all keeps the bits the same on every path */
    return isnan(acc) ? NAN : acc;
}

double onebit_norm_acc(int scale, const float *x, size_t n)
{
    return norm_pack(scale, x, n, NULL);
}

float onebit_scale_of(int scale, double acc, size_t len)
{
    if (len == 0) return 0.0f;
    if (scale == ONEBIT_SCALE_L2) return (float)(sqrt(acc) / sqrt((double)len));
    return (float)(acc / (double)len);
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

size_t onebit_padded(size_t count, int nranks)
{
    size_t w = (size_t)nranks, divider = 8 * w / gcd(w, 8), unit = w * divider;
    return (count + unit - 1) / unit * unit;
}

static size_t onebit_max_bytes(const double *p, size_t count)
{
    (void)p;
    return ONEBIT_HEADER + onebit_sign_bytes(count);
}

static size_t onebit_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0;
}

static size_t onebit_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                            size_t count, void *restrict msg, void *restrict scratch)
{
    (void)ctx; (void)scratch;
    const int kind = (int)p[ONEBIT_SCALE];
    unsigned char *b = msg;
    const float s = onebit_scale_of(kind, norm_pack(kind, in, count, b + ONEBIT_HEADER), count);
    memcpy(b, &s, sizeof s);
    return ONEBIT_HEADER + onebit_sign_bytes(count);
}

static terse_status_t onebit_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                        size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != ONEBIT_HEADER + onebit_sign_bytes(count)) return TERSE_ERR_MISMATCH;
    const unsigned char *b = msg;
    float s;
    memcpy(&s, b, sizeof s);
    /* a scale is a norm: finite and not negative (a NaN fails both tests) */
    if (!(s >= 0.0f && s <= FLT_MAX)) return TERSE_ERR_MISMATCH;
    const unsigned char *bits = b + ONEBIT_HEADER;
    if (count % 8 && bits[count / 8] >> (count % 8)) return TERSE_ERR_MISMATCH;
    onebit_unpack_add(bits, count, s, out);
    return TERSE_OK;
}

const codec_ops_t codec_onebit_ops = {
    sizeof(codec_ops_t), "onebit", CODEC_PROTO_ONEBIT,
    NULL, onebit_max_bytes, onebit_scratch_bytes, onebit_encode, onebit_decode_add, NULL, 0,
};
