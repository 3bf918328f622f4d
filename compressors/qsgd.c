/* QSGD (ALGORITHMS.md §2.6) in the max-min form CGX uses: every bucket of `bucket`
 * consecutive elements is quantised uniformly to L = 2^bits - 1 intervals between its
 * smallest and its largest element, and the levels travel bit-packed.
 *
 * Buckets start at in[0] of every encoded vector, the last one shorter. The dense protocol
 * encodes each rank's chunk on its own, so a bucket never straddles two owners, and the
 * owner re-quantises its averaged chunk with the same buckets. Per bucket x_0 .. x_{m-1}:
 *
 *   lo = min_j x_j,  hi = max_j x_j        float32, sent in the header; of equal extremes
 *                                          the first in the bucket (+0 or -0)
 *   r  = (double)hi - (double)lo,  scale = L / r,  step = r / L
 *   q_j = ((double)x_j - lo) * scale                       in [0, L] up to rounding
 *   level_j = floor(q_j + 0.5)                             stochastic=0: nearest, halves up
 *             floor(q_j + v_j 2^-16)                       stochastic=1 in double
 *             (floor(Q_j) + v_j) >> 16                     stochastic=1 in float, below
 *             then min(level_j, L); every level is 0 when lo == hi
 *   decode: x'_j = min((float)(lo + level_j * step), hi)   so x'_j lies in [lo, hi]
 *
 * The arithmetic is in double so that no bucket of finite floats overflows (hi - lo can
 * exceed FLT_MAX, L / r can too for a range of a few subnormals); every rank runs the same
 * IEEE operations in this order, so the bits agree everywhere.
 *
 * Stochastic rounding runs in float where that is safe, which halves its cost in vector
 * lanes: in fixed point with 16 fractional bits,
 *
 *   S = fl32(L 2^16 / fl32(hi - lo)),  Q_j = fl32(fl32(x_j - lo) * S)
 *
 * for every bucket where fl32(hi - lo) and S are finite (a range between about L 2^-112
 * and FLT_MAX), in double otherwise; the two ends of the range decide, so every rank and
 * every kernel decide alike. Rounding is monotone, so 0 <= fl32(x_j - lo) <= fl32(hi - lo)
 * and Q_j <= L 2^16 (1 + 2^-22) < 2^24 + 4: the conversion to int is exact and nothing
 * wraps. Four roundings put Q_j within 4 units of 2^16 q_j. Round to nearest keeps double
 * bit for bit: its results are reproduced elsewhere (CGX, tests/mpi/test_qsgd.c's serial
 * reference), and the AVX2 kernel proves its float evaluation against it lane by lane.
 *
 * Max-min rather than QSGD's L2 norm: the L2 form spends a sign bit and spreads its s
 * levels over [0, ||v||], of which the elements use only [0, max|v_j|] - usually a small
 * part, since ||v|| grows with sqrt(bucket). Max-min spends all 2^bits levels on the range
 * the bucket actually occupies: a smaller step, hence a smaller error, for the same bits.
 * It is CGX's choice (used in the L-GreCo QSGD experiments), at 8 header bytes a bucket.
 *
 * Stochastic rounding: v_j = rng_bits16(key, offset + j), 16 random bits of element j of
 * the vector, offset being ctx->offset, so a chunk rounds exactly as it would inside the
 * whole layer; key = rng_mix(ctx->key ^ seed * 0x9e3779b97f4a7c15) mixes the stream key
 * (layer, call, rank and phase: independent across ranks, reproducible on a rerun) with
 * the `seed` parameter. rng_bits16 is a 32-bit counter hash, one per two draws (rng.h):
 * SplitMix64's two 64-bit multiplies per element cost more than the rest of the encoder
 * and have no AVX2 instruction. For uniform v, floor(q + v 2^-16) is floor(q) + 1 with
 * probability floor(2^16 frac(q)) 2^-16, within 2^-16 of frac(q), and floor(q) otherwise;
 * in fixed point E[level] = floor(Q) 2^-16 exactly, within 5 2^-16 of q. So a level only
 * ever moves to one of the two adjacent levels, and E[level] = q, E[x'] = x to within
 * 5 2^-16 of a step (plus the float rounding of x'): unbiased, with variance frac(q) (1 -
 * frac(q)) step^2 <= step^2 / 4 per element. Round to nearest (stochastic=0, CGX's
 * default) errs by at most step / 2 but is biased.
 *
 * Wire format of count elements in nb = ceil(count / bucket) buckets, exactly max_bytes:
 *   nb x (float32 lo | float32 hi), host order | levels: ceil(count * bits / 8) bytes
 * The levels of all buckets form one little-endian bit stream (level i at bits
 * [i * bits, (i + 1) * bits)); the unused high bits of its last byte are 0. 4 bits with
 * buckets of 512: 8 + 256 bytes for 2048 bytes of fp32, a ratio of 7.76; 8 bits: 3.94.
 *
 * Non-finite input (only with nonfinite=pass; the engine refuses it otherwise): a bucket
 * holding a NaN or an Inf is sent as lo = hi = NaN with every level 0 and decodes to NaN,
 * so the values pass through as the configuration asks. decode_add accepts exactly the
 * messages encode can write: the exact size, every header either finite with lo <= hi or
 * the NaN pair, zero padding bits; anything else is TERSE_ERR_MISMATCH with out untouched.
 * Every bit pattern of a level is a valid level, so a peer's message can never make decode
 * write outside out[0..count) or outside a bucket's [lo, hi].
 *
 * Kernels: the scalar loops below are the reference; where the CPU has AVX2 (simd.h) the
 * kernels after them compute the same bytes and floats, 8 or 32 elements at a time. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "qsgd.h"
#include "rng.h"
#include "simd.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The kernels agree only if a * b + c rounds twice everywhere. GCC contracts it into an FMA
 * only outside ISO C mode (the build is -std=c11); clang contracts within an expression by
 * default, and would do it in the AVX2 copies alone, which have FMA. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

const param_def_t qsgd_params[QSGD_N_PARAMS] = {
    {"bits", 4.0, 1.0, 8.0, 0, 1, NULL},
    {"bucket", 512.0, 1.0, 16777216.0, 0, 1, NULL},
    {"stochastic", 1.0, 0.0, 1.0, 0, 1, NULL},
    {"seed", 0.0, 0.0, 4294967295.0, 0, 1, NULL},
};

/* Levels staged between quantising and packing (and unpacking and dequantising): a
 * multiple of 8, so a stage packs to whole bytes, small enough to stay in L1. */
#define QSGD_STAGE 2048

/* ---- Quantisation ----------------------------------------------------------------------- */

typedef struct {
    unsigned bits;
    size_t bucket;
    int stochastic;
} qsgd_cfg_t;

static qsgd_cfg_t qsgd_cfg(const double *p)
{
    qsgd_cfg_t c = {(unsigned)p[QSGD_BITS], (size_t)p[QSGD_BUCKET], p[QSGD_STOCHASTIC] != 0};
    return c;
}

static size_t qsgd_max_bytes(const double *p, size_t count)
{
    const qsgd_cfg_t c = qsgd_cfg(p);
    return QSGD_HEADER * ((count + c.bucket - 1) / c.bucket) + (count * c.bits + 7) / 8;
}

static size_t qsgd_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0; /* the stage lives on the stack */
}

/* A bucket's header and the constants its levels are computed with. */
typedef struct {
    float lo, hi;  /* the header: min and max, or NaN NaN                                 */
    int flat;      /* !(lo < hi): a single value or the NaN bucket, every level 0         */
    double scale;  /* L / (hi - lo)                                                       */
    float fscale;  /* L 2^16 / (hi - lo) in float; 0 where this or hi - lo overflows      */
} qsgd_bucket_t;

/* The smallest and largest of x[0..n), n > 0, and whether every element is finite (x - x
 * is NaN for an Inf or a NaN; a NaN would drop out of the min/max scan unnoticed). On
 * equal values the first one in x stays, which only matters for the sign of a zero. */
static int qsgd_range_scalar(const float *restrict x, size_t n, float *lo_p, float *hi_p)
{
    float lo = x[0], hi = x[0];
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        finite &= v - v == 0.0f;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *lo_p = lo;
    *hi_p = hi;
    return finite;
}

#if defined(__SSE2__)
/* The same for n >= 16 with the baseline's SSE2, eight lanes: _mm_min_ps(v, lo) is v < lo ?
 * v : lo lane by lane, and z = sum of v * 0 turns NaN for good at an Inf or a NaN. The
 * extremes' values are the serial scan's; of two zeros it may keep the other one, and
 * qsgd_range asks the serial scan then. The tail is the last 8 again (repeats do not
 * matter). */
static int qsgd_range_sse2(const float *restrict x, size_t n, float *lo_p, float *hi_p)
{
    __m128 lo0 = _mm_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0, z = _mm_setzero_ps();
    const __m128 zero = _mm_setzero_ps();
    for (size_t i = 0;; i += 8) {
        if (i + 8 > n) i = n - 8;
        const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
        lo0 = _mm_min_ps(a, lo0);
        lo1 = _mm_min_ps(b, lo1);
        hi0 = _mm_max_ps(a, hi0);
        hi1 = _mm_max_ps(b, hi1);
        z = _mm_add_ps(z, _mm_add_ps(_mm_mul_ps(a, zero), _mm_mul_ps(b, zero)));
        if (i + 8 == n) break;
    }
    __m128 lo = _mm_min_ps(lo0, lo1), hi = _mm_max_ps(hi0, hi1);
    lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
    hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
    *lo_p = _mm_cvtss_f32(_mm_min_ss(lo, _mm_shuffle_ps(lo, lo, 1)));
    *hi_p = _mm_cvtss_f32(_mm_max_ss(hi, _mm_shuffle_ps(hi, hi, 1)));
    return _mm_movemask_ps(_mm_cmpeq_ps(z, zero)) == 0xf;
}
#define qsgd_range_base qsgd_range_sse2
#else
#define qsgd_range_base qsgd_range_scalar
#endif

static qsgd_bucket_t qsgd_plan(float lo, float hi, int finite, unsigned L)
{
    qsgd_bucket_t b = {NAN, NAN, 1, 0.0, 0.0f};
    if (!finite) return b;
    b.lo = lo;
    b.hi = hi;
    b.flat = !(lo < hi);
    if (b.flat) return b;
    b.scale = (double)L / ((double)hi - (double)lo);
    const float r = hi - lo, s = (float)(L << 16) / r;
    b.fscale = isfinite(r) && isfinite(s) ? s : 0.0f;
    return b;
}

/* The stream's block keys (rng_bits16_at), the last one kept: a vector of fewer than 2^33
 * elements needs one or two. */
typedef struct {
    uint64_t key, block;
    uint32_t k;
} qsgd_draws_t;

static uint32_t qsgd_block_key(qsgd_draws_t *d, uint64_t block)
{
    if (block != d->block) {
        d->block = block;
        d->k = rng_block_key(d->key, block);
    }
    return d->k;
}

/* The quantisers write the levels of x[0..n) of one bucket, x[0] being element idx of the
 * vector, every index in one block of 2^33 draws whose key is k.
 *
 * In double: round to nearest (v = 0x8000, so v 2^-16 = 1/2), and stochastic rounding in
 * the buckets float cannot take. q + v 2^-16 < L + 2 is small and non-negative, so the
 * conversion to int truncates, which is the floor (in one instruction, unlike unsigned). */
static inline uint8_t qsgd_level_double(float x, double lo, double scale, int L, uint32_t v)
{
    const int l = (int)(((double)x - lo) * scale + (double)v * 0x1.0p-16);
    return (uint8_t)(l < L ? l : L);
}

__attribute__((noinline)) /* kept out of the AVX2 loops, which call it rarely */
static void qsgd_quantize_double(const float *restrict x, size_t n, double lo, double scale, int L, int stochastic,
                                 uint32_t k, uint64_t idx, uint8_t *restrict lv)
{
    if (stochastic)
        for (size_t j = 0; j < n; j++) lv[j] = qsgd_level_double(x[j], lo, scale, L, rng_bits16_at(k, idx + j));
    else
        for (size_t j = 0; j < n; j++) lv[j] = qsgd_level_double(x[j], lo, scale, L, 0x8000);
}

/* Stochastic rounding in float, in fixed point with 16 fractional bits: 0 <= Q < 2^24 + 4,
 * so its conversion is exact and the sum cannot wrap. One hash serves a pair of draws. */
static inline uint8_t qsgd_level_fixed(float x, float lo, float fscale, uint32_t L, uint32_t v)
{
    const uint32_t l = ((uint32_t)(int32_t)((x - lo) * fscale) + v) >> 16;
    return (uint8_t)(l < L ? l : L);
}

static void qsgd_quantize_fixed(const float *restrict x, size_t n, float lo, float fscale, int L, uint32_t k,
                                uint64_t idx, uint8_t *restrict lv)
{
    size_t j = 0;
    if (n && idx % 2) {
        lv[0] = qsgd_level_fixed(x[0], lo, fscale, (uint32_t)L, rng_bits16_at(k, idx));
        j = 1;
    }
    const uint32_t c = (uint32_t)((idx + j) >> 1) + k; /* the pair of x[j] */
    for (size_t t = 0; t < (n - j) / 2; t++) {
        const uint32_t h = rng_hash32(c + (uint32_t)t);
        lv[j + 2 * t] = qsgd_level_fixed(x[j + 2 * t], lo, fscale, (uint32_t)L, h & 0xffff);
        lv[j + 2 * t + 1] = qsgd_level_fixed(x[j + 2 * t + 1], lo, fscale, (uint32_t)L, h >> 16);
    }
    if ((n - j) % 2) lv[n - 1] = qsgd_level_fixed(x[n - 1], lo, fscale, (uint32_t)L, rng_bits16_at(k, idx + n - 1));
}

/* step = (hi - lo) / L of the bucket whose header is at hdr */
static inline double qsgd_step(const unsigned char *hdr, unsigned L)
{
    float lo, hi;
    memcpy(&lo, hdr, 4);
    memcpy(&hi, hdr + 4, 4);
    return ((double)hi - (double)lo) / (double)L;
}

/* lo + l * step rounded to float and kept at most hi (a NaN bucket gives NaN: every
 * comparison with it is false). */
static inline float qsgd_value(unsigned l, float lo, float hi, double step)
{
    const float v = (float)((double)lo + (double)l * step);
    return v > hi ? hi : v;
}

static void qsgd_dequantize_add(const uint8_t *restrict lv, size_t n, float lo, float hi, double step,
                                float *restrict out)
{
    for (size_t j = 0; j < n; j++) out[j] += qsgd_value(lv[j], lo, hi, step);
}

/* Level e of a stream of `bytes` bytes. */
static unsigned qsgd_level_at(const unsigned char *stream, size_t bytes, size_t e, unsigned bits)
{
    const size_t bit = e * bits, at = bit / 8;
    unsigned w = stream[at];
    if (bit % 8 + bits > 8 && at + 1 < bytes) w |= (unsigned)stream[at + 1] << 8;
    return w >> (bit % 8) & ((1u << bits) - 1);
}

#if SIMD_X86
#include <immintrin.h>

/* ---- AVX2 kernels -----------------------------------------------------------------------
 *
 * Each gives the bytes and floats of the scalar code above for every input. The range, the
 * stochastic quantiser and the decode do the same IEEE operations lane by lane (no FMA,
 * and none contracted by the compiler either: see the top of the file), 32 or 8 elements
 * at a time, and leave the rest to the scalar loops.
 *
 * Round to nearest cannot afford double (half the lanes, conversions both ways), so it
 * evaluates the same formula in float, in fixed point, and proves each lane against the
 * double result:
 *
 *   Q = fl32(fl32(x - lo) * fscale),  W = floor(Q) + 0x8000 + 8,  level = W >> 16
 *
 * Four float roundings put Q within 2^16 q (4.01 2^-24) of 2^16 q, q the exact real, which
 * is <= L; the double arithmetic is closer still, so |Q - 2^16 q_double| < 4 (L <= 255;
 * fscale < FLT_MAX keeps every step in range, and a subnormal x - lo is exact). The double
 * level is floor(A / 2^16), A = 2^16 q_double + 0x8000 (its own last rounding is within
 * 2^-44 of A / 2^16), and floor(Q) + 0x8000 lies within (A - 5, A + 4). So when W mod 2^16
 * >= 16, i.e. floor(Q) + 0x8000 is at least 8 above a multiple M of 2^16 and 8 below the
 * next, A lies strictly between them and both levels are M / 2^16. A lane outside that
 * window (x within about 5 2^-16 steps of a midpoint between two levels) sends its block
 * of 32 through the double loop. */

SIMD_AVX2_FN static int qsgd_range_avx2(const float *restrict x, size_t n, float *lo_p, float *hi_p)
{
    /* two vectors per quantity so that consecutive min/max do not wait on each other;
     * _mm256_min_ps(v, lo) is v < lo ? v : lo lane by lane. Finite: the largest |x| bit
     * pattern stays below Inf's. n >= 16: the tail is the last 16 again (repeats change
     * neither a min, a max nor the finite test). */
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    __m256 lo0 = _mm256_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0;
    __m256i t0 = _mm256_setzero_si256(), t1 = t0;
    for (size_t i = 0;; i += 16) {
        if (i + 16 > n) i = n - 16;
        const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        lo0 = _mm256_min_ps(a, lo0);
        lo1 = _mm256_min_ps(b, lo1);
        hi0 = _mm256_max_ps(a, hi0);
        hi1 = _mm256_max_ps(b, hi1);
        t0 = _mm256_max_epi32(t0, _mm256_and_si256(_mm256_castps_si256(a), abs));
        t1 = _mm256_max_epi32(t1, _mm256_and_si256(_mm256_castps_si256(b), abs));
        if (i + 16 == n) break;
    }
    const __m256 lo8 = _mm256_min_ps(lo0, lo1), hi8 = _mm256_max_ps(hi0, hi1);
    __m128 lo = _mm_min_ps(_mm256_castps256_ps128(lo8), _mm256_extractf128_ps(lo8, 1));
    __m128 hi = _mm_max_ps(_mm256_castps256_ps128(hi8), _mm256_extractf128_ps(hi8, 1));
    lo = _mm_min_ps(lo, _mm_movehl_ps(lo, lo));
    hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
    *lo_p = _mm_cvtss_f32(_mm_min_ss(lo, _mm_shuffle_ps(lo, lo, 1)));
    *hi_p = _mm_cvtss_f32(_mm_max_ss(hi, _mm_shuffle_ps(hi, hi, 1)));
    const __m256i inf = _mm256_cmpgt_epi32(_mm256_max_epi32(t0, t1), _mm256_set1_epi32(0x7f7fffff));
    return _mm256_testz_si256(inf, inf);
}

/* rng_hash32 of eight counters */
SIMD_AVX2_FN static inline __m256i qsgd_hash_avx2(__m256i x)
{
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x7feb352du));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return x;
}

/* floor(Q) + v of eight elements */
SIMD_AVX2_FN static inline __m256i qsgd_fixed8_avx2(const float *x, __m256 lo, __m256 s, __m256i v)
{
    const __m256 q = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x), lo), s);
    return _mm256_add_epi32(_mm256_cvttps_epi32(q), v);
}

/* The levels W >> 16 (at most 256) of four vectors to 32 bytes in order, each at most L */
SIMD_AVX2_FN static inline __m256i qsgd_bytes_avx2(__m256i a, __m256i b, __m256i c, __m256i d, __m256i L)
{
    a = _mm256_srli_epi32(a, 16);
    b = _mm256_srli_epi32(b, 16);
    c = _mm256_srli_epi32(c, 16);
    d = _mm256_srli_epi32(d, 16);
    /* packs/packus work within 128-bit halves: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7;
     * packus saturates 256 to 255, which the clamp to L <= 255 gives anyway */
    const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    const __m256i v = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    return _mm256_min_epu8(v, L);
}

/* qsgd_quantize_fixed from an even idx, in blocks of 32; returns the elements done. */
SIMD_AVX2_FN static size_t qsgd_quantize_fixed_avx2(const float *restrict x, size_t n, float lo, float fscale,
                                                    int L, uint32_t k, uint64_t idx, uint8_t *restrict lv)
{
    const __m256 vlo = _mm256_set1_ps(lo), vs = _mm256_set1_ps(fscale);
    const __m256i vL = _mm256_set1_epi8((char)L), sixteen = _mm256_set1_epi32(16);
    /* the counters of 16 pairs, 32 elements: rng_bits16_at */
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)((uint32_t)(idx >> 1) + k)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_add_epi32(c0, _mm256_set1_epi32(8));
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        /* the halves of the hashes, as 16-bit lanes, are the draws in element order */
        const __m256i h0 = qsgd_hash_avx2(c0), h1 = qsgd_hash_avx2(c1);
        const __m256i a = qsgd_fixed8_avx2(x + j, vlo, vs, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h0)));
        const __m256i b = qsgd_fixed8_avx2(x + j + 8, vlo, vs, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h0, 1)));
        const __m256i c = qsgd_fixed8_avx2(x + j + 16, vlo, vs, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h1)));
        const __m256i d = qsgd_fixed8_avx2(x + j + 24, vlo, vs, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h1, 1)));
        _mm256_storeu_si256((__m256i *)(lv + j), qsgd_bytes_avx2(a, b, c, d, vL));
        c0 = _mm256_add_epi32(c0, sixteen);
        c1 = _mm256_add_epi32(c1, sixteen);
    }
    return j;
}

/* Round to nearest as qsgd_quantize_double computes it, n <= 2048, in blocks of 32, the
 * float evaluation proved lane by lane (see above); returns the elements done. The blocks
 * that need the double loop are redone after the vector loop, so that no call inside it
 * makes the compiler spill its constants. */
SIMD_AVX2_FN static size_t qsgd_round_avx2(const float *restrict x, size_t n, const qsgd_bucket_t *b, int L,
                                           uint8_t *restrict lv)
{
    const __m256 lo = _mm256_set1_ps(b->lo), s = _mm256_set1_ps(b->fscale);
    const __m256i vL = _mm256_set1_epi8((char)L), half = _mm256_set1_epi32(0x8000 + 8);
    const __m256i window = _mm256_set1_epi32(0xfff0), zero = _mm256_setzero_si256();
    uint64_t redo = 0; /* bit t: block t */
    assert(n <= 64 * 32);
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256i a = qsgd_fixed8_avx2(x + j, lo, s, half), b8 = qsgd_fixed8_avx2(x + j + 8, lo, s, half);
        const __m256i c = qsgd_fixed8_avx2(x + j + 16, lo, s, half), d = qsgd_fixed8_avx2(x + j + 24, lo, s, half);
        _mm256_storeu_si256((__m256i *)(lv + j), qsgd_bytes_avx2(a, b8, c, d, vL));
        /* a lane with W mod 2^16 < 16 has its window bits all 0 */
        const __m256i m = _mm256_min_epu32(_mm256_min_epu32(_mm256_and_si256(a, window), _mm256_and_si256(b8, window)),
                                           _mm256_min_epu32(_mm256_and_si256(c, window), _mm256_and_si256(d, window)));
        const __m256i z = _mm256_cmpeq_epi32(m, zero);
        redo |= (uint64_t)!_mm256_testz_si256(z, z) << (j / 32);
    }
    for (; redo; redo &= redo - 1) {
        const size_t t = 32 * (size_t)__builtin_ctzll(redo);
        qsgd_quantize_double(x + t, 32, b->lo, b->scale, L, 0, 0, 0, lv + t);
    }
    return j;
}

/* qsgd_pack for bits = 4, 64 levels at a time; returns the levels done. maddubs makes
 * lv[2i] + 16 lv[2i + 1] in 16-bit lanes, packus narrows them to bytes. */
SIMD_AVX2_FN static size_t qsgd_pack4_avx2(const uint8_t *restrict lv, size_t n, unsigned char *restrict dst)
{
    const __m256i weights = _mm256_set1_epi16(0x1001); /* bytes 1, 16 */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m256i a = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(lv + i)), weights);
        const __m256i b = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(lv + i + 32)), weights);
        /* packus works within 128-bit halves: a0 b0 a1 b1, put back in order */
        _mm256_storeu_si256((__m256i *)(dst + i / 2), _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8));
    }
    return i;
}

/* qsgd_value of the levels in eight int32 lanes */
SIMD_AVX2_FN static inline __m256 qsgd_value8_avx2(__m256i l, __m256d lo, __m256d step, __m256 hi)
{
    const __m256d d0 = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(l)), step));
    const __m256d d1 = _mm256_add_pd(lo, _mm256_mul_pd(_mm256_cvtepi32_pd(_mm256_extracti128_si256(l, 1)), step));
    const __m256 v = _mm256_set_m128(_mm256_cvtpd_ps(d1), _mm256_cvtpd_ps(d0));
    /* v > hi ? hi : v, which is _mm256_min_ps(hi, v), NaNs and signed zeros included */
    return _mm256_min_ps(hi, v);
}

/* The eight levels of group g (elements 8g .. 8g + 7), which starts at byte g * bits and
 * whose bytes (with those after it, up to 8) lie inside the stream. */
SIMD_AVX2_FN static inline __m256i qsgd_group8_avx2(const unsigned char *g, unsigned bits)
{
    if (bits == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)g));
    const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
    const int k = (int)bits;
    if (bits <= 4) { /* 8 levels in one 32-bit word (x86: little-endian) */
        uint32_t w;
        memcpy(&w, g, 4);
        const __m256i sh = _mm256_setr_epi32(0, k, 2 * k, 3 * k, 4 * k, 5 * k, 6 * k, 7 * k);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh), mask);
    }
    uint64_t w;
    memcpy(&w, g, 8);
    const __m256i x = _mm256_set1_epi64x((long long)w);
    const __m256i a = _mm256_srlv_epi64(x, _mm256_setr_epi64x(0, k, 2 * k, 3 * k));
    const __m256i b = _mm256_srlv_epi64(x, _mm256_setr_epi64x(4 * k, 5 * k, 6 * k, 7 * k));
    /* low dwords: a0 a1 b0 b1 | a2 a3 b2 b3, then the 64-bit pairs in order */
    const __m256 ab = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_and_si256(_mm256_permute4x64_epi64(_mm256_castps_si256(ab), 0xd8), mask);
}

/* out[0..m) += the values of elements e0 .. e0 + m - 1, one bucket. With at most 16
 * levels (bits <= 4) the values come from a table of the bucket's L + 1 values, computed
 * by the same formula; otherwise they are computed in double, four lanes at a time. */
SIMD_AVX2_FN static inline __attribute__((always_inline)) void
qsgd_decode_bucket_avx2_body(const unsigned char *stream, size_t bytes, size_t e0, size_t m, unsigned bits,
                             float lo, float hi, double step, float *restrict out)
{
    const __m256d vlo = _mm256_set1_pd((double)lo), vstep = _mm256_set1_pd(step);
    const __m256 vhi = _mm256_set1_ps(hi);
    const int table = bits <= 4 && m >= 64;
    __m256 tab0 = vhi, tab1 = vhi;
    if (table) {
        tab0 = qsgd_value8_avx2(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), vlo, vstep, vhi);
        tab1 = qsgd_value8_avx2(_mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15), vlo, vstep, vhi);
    }
    size_t j = 0;
    /* up to the first whole group, then whole groups while 8 bytes from the group's start
     * stay inside the stream */
    for (; j < m && (e0 + j) % 8; j++) out[j] += qsgd_value(qsgd_level_at(stream, bytes, e0 + j, bits), lo, hi, step);
    for (; j + 8 <= m && (e0 + j) / 8 * bits + 8 <= bytes; j += 8) {
        const __m256i l = qsgd_group8_avx2(stream + (e0 + j) / 8 * bits, bits);
        __m256 v;
        if (table) {
            v = _mm256_permutevar8x32_ps(tab0, l);
            if (bits == 4) { /* level bit 3 picks the upper half of the table */
                const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(l, 28));
                v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(tab1, l), upper);
            }
        } else {
            v = qsgd_value8_avx2(l, vlo, vstep, vhi);
        }
        _mm256_storeu_ps(out + j, _mm256_add_ps(_mm256_loadu_ps(out + j), v));
    }
    for (; j < m; j++) out[j] += qsgd_value(qsgd_level_at(stream, bytes, e0 + j, bits), lo, hi, step);
}

SIMD_AVX2_FN static void qsgd_decode_bucket_avx2(const unsigned char *stream, size_t bytes, size_t e0, size_t m,
                                                 unsigned bits, float lo, float hi, double step, float *restrict out)
{
    switch (bits) { /* one copy per width, with constant shifts */
    case 1: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 1, lo, hi, step, out); break;
    case 2: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 2, lo, hi, step, out); break;
    case 3: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 3, lo, hi, step, out); break;
    case 4: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 4, lo, hi, step, out); break;
    case 5: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 5, lo, hi, step, out); break;
    case 6: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 6, lo, hi, step, out); break;
    case 7: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 7, lo, hi, step, out); break;
    default: qsgd_decode_bucket_avx2_body(stream, bytes, e0, m, 8, lo, hi, step, out); break;
    }
}
#endif

/* ---- Encode and decode: the kernels the level calls for ------------------------------ */

static inline int qsgd_range(const float *restrict x, size_t n, float *lo_p, float *hi_p, simd_level_t level)
{
    if (n >= 16) {
        float lo, hi;
#if SIMD_X86
        const int finite = level >= SIMD_AVX2 ? qsgd_range_avx2(x, n, &lo, &hi) : qsgd_range_base(x, n, &lo, &hi);
#else
        const int finite = qsgd_range_base(x, n, &lo, &hi);
#endif
        /* which of two zeros comes first is the serial scan's to say */
        if (!finite || (lo != 0.0f && hi != 0.0f)) {
            *lo_p = lo;
            *hi_p = hi;
            return finite;
        }
    }
    (void)level;
    return qsgd_range_scalar(x, n, lo_p, hi_p);
}

/* Levels of x[0..n) of bucket b (not flat), x[0] being element idx of the vector: cut
 * where idx crosses a block of 2^33 draws, then the kernel the bucket and the level call
 * for, the scalar loops finishing what the AVX2 ones leave. */
static inline void qsgd_quantize(const qsgd_bucket_t *b, const float *restrict x, size_t n, int L, int stochastic,
                                 qsgd_draws_t *draws, uint64_t idx, uint8_t *restrict lv, simd_level_t level)
{
    const uint64_t block = (uint64_t)1 << 33;
    while (n) {
        const uint64_t room = block - idx % block;
        const size_t m = (uint64_t)n < room ? n : (size_t)room;
        const uint32_t k = stochastic ? qsgd_block_key(draws, idx / block) : 0;
        size_t j = 0;
        if (stochastic && b->fscale > 0.0f) {
#if SIMD_X86
            /* the vector kernel starts on a whole pair of draws */
            if (level >= SIMD_AVX2) {
                j = idx & 1;
                qsgd_quantize_fixed(x, j, b->lo, b->fscale, L, k, idx, lv);
                j += qsgd_quantize_fixed_avx2(x + j, m - j, b->lo, b->fscale, L, k, idx + j, lv + j);
            }
#endif
            qsgd_quantize_fixed(x + j, m - j, b->lo, b->fscale, L, k, idx + j, lv + j);
        } else {
#if SIMD_X86
            if (level >= SIMD_AVX2 && !stochastic && b->fscale > 0.0f)
                while (m - j >= 32) j += qsgd_round_avx2(x + j, m - j < 2048 ? m - j : 2048, b, L, lv + j);
#endif
            qsgd_quantize_double(x + j, m - j, b->lo, b->scale, L, stochastic, k, idx + j, lv + j);
        }
        x += m;
        lv += m;
        idx += m;
        n -= m;
    }
    (void)level;
}

/* qsgd_pack, with the AVX2 kernel where there is one */
static inline void qsgd_pack_stage(const uint8_t *restrict lv, size_t n, unsigned bits, unsigned char *restrict dst,
                                   simd_level_t level)
{
    size_t i = 0;
#if SIMD_X86
    if (level >= SIMD_AVX2 && bits == 4) i = qsgd_pack4_avx2(lv, n, dst);
#endif
    (void)level;
    qsgd_pack(lv + i, n - i, bits, dst + i / 8 * bits);
}

static uint64_t qsgd_key(const double *p, const codec_ctx_t *ctx)
{
    return rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[QSGD_SEED] * 0x9e3779b97f4a7c15ull));
}

/* The encoder's loop over the buckets, inlined once per kernel level, so that at the AVX2
 * level the kernels inline into it. */
static inline __attribute__((always_inline)) void
qsgd_encode_buckets(const qsgd_cfg_t *c, qsgd_draws_t *draws, uint64_t offset, const float *restrict in,
                    size_t count, unsigned char *restrict hdr, simd_level_t level)
{
    const unsigned L = (1u << c->bits) - 1;
    unsigned char *stream = hdr + QSGD_HEADER * ((count + c->bucket - 1) / c->bucket);
    uint8_t lv[QSGD_STAGE];
    size_t staged = 0;  /* levels in lv                                      */
    size_t packed = 0;  /* levels already in the stream: a multiple of 8     */

    for (size_t b0 = 0; b0 < count; b0 += c->bucket, hdr += QSGD_HEADER) {
        const size_t m = count - b0 < c->bucket ? count - b0 : c->bucket;
        float lo, hi;
        const int finite = qsgd_range(in + b0, m, &lo, &hi, level);
        const qsgd_bucket_t b = qsgd_plan(lo, hi, finite, L);
        memcpy(hdr, &b.lo, 4);
        memcpy(hdr + 4, &b.hi, 4);
        for (size_t j = 0; j < m;) {
            const size_t t = m - j < QSGD_STAGE - staged ? m - j : QSGD_STAGE - staged;
            if (b.flat)
                memset(lv + staged, 0, t);
            else
                qsgd_quantize(&b, in + b0 + j, t, (int)L, c->stochastic, draws, offset + b0 + j, lv + staged, level);
            staged += t;
            j += t;
            if (staged == QSGD_STAGE) {
                qsgd_pack_stage(lv, staged, c->bits, stream + packed / 8 * c->bits, level);
                packed += staged;
                staged = 0;
            }
        }
    }
    qsgd_pack_stage(lv, staged, c->bits, stream + packed / 8 * c->bits, level);
}

#if SIMD_X86
SIMD_AVX2_FN static void qsgd_encode_buckets_avx2(const qsgd_cfg_t *c, qsgd_draws_t *draws, uint64_t offset,
                                                  const float *restrict in, size_t count, unsigned char *restrict hdr)
{
    qsgd_encode_buckets(c, draws, offset, in, count, hdr, SIMD_AVX2);
}
#endif

static size_t qsgd_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)scratch;
    const qsgd_cfg_t c = qsgd_cfg(p);
    const uint64_t offset = ctx ? ctx->offset : 0;
    qsgd_draws_t draws = {qsgd_key(p, ctx), UINT64_MAX, 0};
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2)
        qsgd_encode_buckets_avx2(&c, &draws, offset, in, count, msg);
    else
#endif
        qsgd_encode_buckets(&c, &draws, offset, in, count, msg, SIMD_SCALAR);
    return qsgd_max_bytes(p, count);
}

static terse_status_t qsgd_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)scratch;
    const qsgd_cfg_t c = qsgd_cfg(p);
    if (bytes != qsgd_max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    const size_t nb = (count + c.bucket - 1) / c.bucket, stream_bytes = (count * c.bits + 7) / 8;
    const unsigned char *hdr = msg, *stream = hdr + QSGD_HEADER * nb;
    for (size_t b = 0; b < nb; b++) {
        float lo, hi;
        memcpy(&lo, hdr + QSGD_HEADER * b, 4);
        memcpy(&hi, hdr + QSGD_HEADER * b + 4, 4);
        const int ordered = lo <= hi && isfinite(lo) && isfinite(hi);
        if (!ordered && !(isnan(lo) && isnan(hi))) return TERSE_ERR_MISMATCH;
    }
    const size_t tail_bits = count * c.bits % 8;
    if (tail_bits && stream[(count * c.bits) / 8] >> tail_bits) return TERSE_ERR_MISMATCH;

    const unsigned L = (1u << c.bits) - 1;
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) {
        /* the division for the next bucket's step runs while this one decodes */
        double step = count ? qsgd_step(hdr, L) : 0.0;
        for (size_t b0 = 0; b0 < count; b0 += c.bucket, hdr += QSGD_HEADER) {
            const size_t m = count - b0 < c.bucket ? count - b0 : c.bucket;
            const double next = b0 + m < count ? qsgd_step(hdr + QSGD_HEADER, L) : 0.0;
            float lo, hi;
            memcpy(&lo, hdr, 4);
            memcpy(&hi, hdr + 4, 4);
            qsgd_decode_bucket_avx2(stream, stream_bytes, b0, m, c.bits, lo, hi, step, out + b0);
            step = next;
        }
        return TERSE_OK;
    }
#endif
    uint8_t lv[QSGD_STAGE];
    size_t staged = 0, used = 0; /* levels unpacked into lv, and consumed from it */
    size_t unpacked = 0;         /* levels unpacked from the stream so far         */
    for (size_t b0 = 0; b0 < count; b0 += c.bucket, hdr += QSGD_HEADER) {
        const size_t m = count - b0 < c.bucket ? count - b0 : c.bucket;
        float lo, hi;
        memcpy(&lo, hdr, 4);
        memcpy(&hi, hdr + 4, 4);
        const double step = qsgd_step(hdr, L);
        for (size_t j = 0; j < m;) {
            if (used == staged) {
                staged = count - unpacked < QSGD_STAGE ? count - unpacked : QSGD_STAGE;
                qsgd_unpack(stream + unpacked / 8 * c.bits, staged, c.bits, lv);
                unpacked += staged;
                used = 0;
            }
            const size_t t = m - j < staged - used ? m - j : staged - used;
            qsgd_dequantize_add(lv + used, t, lo, hi, step, out + b0 + j);
            used += t;
            j += t;
        }
    }
    (void)stream_bytes;
    return TERSE_OK;
}

const codec_ops_t codec_qsgd_ops = {
    sizeof(codec_ops_t), "qsgd", CODEC_PROTO_DENSE_EF,
    NULL, qsgd_max_bytes, qsgd_scratch_bytes, qsgd_encode, qsgd_decode_add, NULL, 0,
};
