/* QSGD (ALGORITHMS.md §2.6) in the max-min form CGX uses: every bucket of `bucket`
 * consecutive elements is quantised uniformly to L = 2^bits - 1 intervals between its
 * smallest and its largest element, and the levels travel bit-packed.
 *
 * Buckets start at in[0] of every encoded vector, the last one shorter. The dense protocol
 * encodes each rank's chunk on its own, so a bucket never straddles two owners, and the
 * owner re-quantises its averaged chunk with the same buckets. Per bucket x_0 .. x_{m-1}:
 *
 *   lo = min_j x_j,  hi = max_j x_j                        float32, sent in the header
 *   r  = (double)hi - (double)lo,  scale = L / r,  step = r / L
 *   q_j = ((double)x_j - lo) * scale                       in [0, L] up to rounding
 *   level_j = floor(q_j + 0.5)                             stochastic=0: nearest, halves up
 *             floor(q_j + u_j)                             stochastic=1, u_j below
 *             then min(level_j, L); every level is 0 when lo == hi
 *   decode: x'_j = min((float)(lo + level_j * step), hi)   so x'_j lies in [lo, hi]
 *
 * The arithmetic is in double so that no bucket of finite floats overflows (hi - lo can
 * exceed FLT_MAX, L / r can too for a range of a few subnormals); every rank runs the same
 * IEEE double operations in this order, so the bits agree everywhere.
 *
 * Max-min rather than QSGD's L2 norm: the L2 form spends a sign bit and spreads its s
 * levels over [0, ||v||], of which the elements use only [0, max|v_j|] - usually a small
 * part, since ||v|| grows with sqrt(bucket). Max-min spends all 2^bits levels on the range
 * the bucket actually occupies: a smaller step, hence a smaller error, for the same bits.
 * It is CGX's choice (used in the L-GreCo QSGD experiments), at 8 header bytes a bucket.
 *
 * Stochastic rounding: u_j = rng_uniform_f(key, offset + j), j the element's index in the
 * vector and offset ctx->offset, so a chunk rounds exactly as it would inside the whole
 * layer; key = rng_mix(ctx->key ^ seed * 0x9e3779b97f4a7c15) mixes the stream key (layer,
 * call, rank and phase: independent across ranks, reproducible on a rerun) with the `seed`
 * parameter. floor(q + u) is floor(q) + 1 with
 * probability frac(q) (to within 2^-24, the resolution of u) and floor(q) otherwise, so it
 * only ever moves to one of the two adjacent levels and E[level] = q, E[x'] = x: unbiased,
 * with variance frac(q) (1 - frac(q)) step^2 <= step^2 / 4 per element. Round to nearest
 * (stochastic=0, CGX's default) errs by at most step / 2 but is biased.
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
 * write outside out[0..count) or outside a bucket's [lo, hi]. */
#include <math.h>
#include <string.h>

#include "qsgd.h"
#include "rng.h"

#if defined(__SSE2__)
#include <emmintrin.h>
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

/* ---- Bit packing ------------------------------------------------------------------------ */

/* Eight levels of `bits` bits fill exactly `bits` bytes. When bits divides 8 (1, 2, 4, 8)
 * every byte holds whole levels and the packers run a byte loop, which the compiler
 * vectorises; otherwise (3, 5, 6, 7) they build a group of eight in one 64-bit word and
 * store it whole, little-endian. */
static inline uint64_t qsgd_le64(uint64_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(w);
#else
    return w;
#endif
}

/* The low `nbytes` bytes of w (nbytes <= 8), little-endian. */
static inline void qsgd_store_bytes(unsigned char *dst, uint64_t w, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++) dst[i] = (unsigned char)(w >> (8 * i));
}

static inline uint64_t qsgd_load_bytes(const unsigned char *src, size_t nbytes)
{
    uint64_t w = 0;
    for (size_t i = 0; i < nbytes; i++) w |= (uint64_t)src[i] << (8 * i);
    return w;
}

/* Inlined once per constant `bits` through the switches below, so that the shifts are
 * constants, the loops unroll and only one of the paths is compiled in each copy. */
static inline __attribute__((always_inline)) void qsgd_pack_bits(const uint8_t *restrict lv, size_t n,
                                                                 unsigned bits, unsigned char *restrict dst)
{
    const size_t groups = n / 8, total = (n * bits + 7) / 8;
    size_t g = 0;
    if (8 % bits == 0) {
        const unsigned per = 8 / bits;
        for (size_t i = 0; i < groups * bits; i++) {
            unsigned w = 0;
            for (unsigned k = 0; k < per; k++) w |= (unsigned)lv[per * i + k] << (k * bits);
            dst[i] = (unsigned char)w;
        }
        g = groups;
    }
    /* a whole 8-byte store per group while it stays inside the output; the bytes past the
     * group's own are rewritten by the next group */
    for (; g < groups && g * bits + 8 <= total; g++) {
        uint64_t w = 0;
        for (unsigned k = 0; k < 8; k++) w |= (uint64_t)lv[8 * g + k] << (k * bits);
        w = qsgd_le64(w);
        memcpy(dst + g * bits, &w, 8);
    }
    for (; g < groups; g++) {
        uint64_t w = 0;
        for (unsigned k = 0; k < 8; k++) w |= (uint64_t)lv[8 * g + k] << (k * bits);
        qsgd_store_bytes(dst + g * bits, w, bits);
    }
    const size_t rest = n % 8;
    if (rest) {
        uint64_t w = 0;
        for (size_t k = 0; k < rest; k++) w |= (uint64_t)lv[8 * groups + k] << (k * bits);
        qsgd_store_bytes(dst + groups * bits, w, (rest * bits + 7) / 8);
    }
}

static inline __attribute__((always_inline)) void qsgd_unpack_bits(const unsigned char *restrict src, size_t n,
                                                                   unsigned bits, uint8_t *restrict lv)
{
    const size_t groups = n / 8, total = (n * bits + 7) / 8;
    const uint64_t mask = (1u << bits) - 1;
    size_t g = 0;
    if (8 % bits == 0) {
        const unsigned per = 8 / bits;
        for (size_t i = 0; i < groups * bits; i++)
            for (unsigned k = 0; k < per; k++) lv[per * i + k] = (uint8_t)(src[i] >> (k * bits) & mask);
        g = groups;
    }
    for (; g < groups && g * bits + 8 <= total; g++) {
        uint64_t w;
        memcpy(&w, src + g * bits, 8);
        w = qsgd_le64(w);
        for (unsigned k = 0; k < 8; k++) lv[8 * g + k] = (uint8_t)(w >> (k * bits) & mask);
    }
    for (; g < groups; g++) {
        uint64_t w = qsgd_load_bytes(src + g * bits, bits);
        for (unsigned k = 0; k < 8; k++) lv[8 * g + k] = (uint8_t)(w >> (k * bits) & mask);
    }
    const size_t rest = n % 8;
    if (rest) {
        uint64_t w = qsgd_load_bytes(src + groups * bits, (rest * bits + 7) / 8);
        for (size_t k = 0; k < rest; k++) lv[8 * groups + k] = (uint8_t)(w >> (k * bits) & mask);
    }
}

void qsgd_pack(const uint8_t *restrict lv, size_t n, unsigned bits, unsigned char *restrict dst)
{
    switch (bits) {
    case 1: qsgd_pack_bits(lv, n, 1, dst); break;
    case 2: qsgd_pack_bits(lv, n, 2, dst); break;
    case 3: qsgd_pack_bits(lv, n, 3, dst); break;
    case 4: qsgd_pack_bits(lv, n, 4, dst); break;
    case 5: qsgd_pack_bits(lv, n, 5, dst); break;
    case 6: qsgd_pack_bits(lv, n, 6, dst); break;
    case 7: qsgd_pack_bits(lv, n, 7, dst); break;
    default: qsgd_pack_bits(lv, n, 8, dst); break;
    }
}

void qsgd_unpack(const unsigned char *restrict src, size_t n, unsigned bits, uint8_t *restrict lv)
{
    switch (bits) {
    case 1: qsgd_unpack_bits(src, n, 1, lv); break;
    case 2: qsgd_unpack_bits(src, n, 2, lv); break;
    case 3: qsgd_unpack_bits(src, n, 3, lv); break;
    case 4: qsgd_unpack_bits(src, n, 4, lv); break;
    case 5: qsgd_unpack_bits(src, n, 5, lv); break;
    case 6: qsgd_unpack_bits(src, n, 6, lv); break;
    case 7: qsgd_unpack_bits(src, n, 7, lv); break;
    default: qsgd_unpack_bits(src, n, 8, lv); break;
    }
}

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

/* The smallest and largest of x[0..n), n > 0; 0 if x holds a NaN or an Inf. A NaN or an
 * Inf turns z = sum of x_j * 0 into NaN for good, which a min/max scan alone would miss.
 * The min and max of finite floats do not depend on the order of the scan (except for the
 * sign of a zero, which decodes to the same value), so the SSE version below, which scans
 * eight lanes at once, agrees with this scalar reference on every finite input; the unit
 * tests compare the headers the codec writes with a plain scan. */
static int qsgd_range_scalar(const float *restrict x, size_t n, float *lo_p, float *hi_p)
{
    float lo = x[0], hi = x[0], z = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        z += v * 0.0f;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *lo_p = lo;
    *hi_p = hi;
    return z == 0.0f;
}

#if defined(__SSE2__)
static int qsgd_range(const float *restrict x, size_t n, float *lo_p, float *hi_p)
{
    if (n < 16) return qsgd_range_scalar(x, n, lo_p, hi_p);
    /* two independent vectors per quantity, so that consecutive min/max do not wait on
     * each other; _mm_min_ps(v, lo) is v < lo ? v : lo lane by lane */
    __m128 lo0 = _mm_set1_ps(x[0]), lo1 = lo0, hi0 = lo0, hi1 = lo0;
    __m128 z0 = _mm_setzero_ps(), z1 = z0;
    const __m128 zero = _mm_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
        lo0 = _mm_min_ps(a, lo0);
        lo1 = _mm_min_ps(b, lo1);
        hi0 = _mm_max_ps(a, hi0);
        hi1 = _mm_max_ps(b, hi1);
        z0 = _mm_add_ps(z0, _mm_mul_ps(a, zero));
        z1 = _mm_add_ps(z1, _mm_mul_ps(b, zero));
    }
    float lo[4], hi[4], z[4];
    _mm_storeu_ps(lo, _mm_min_ps(lo0, lo1));
    _mm_storeu_ps(hi, _mm_max_ps(hi0, hi1));
    _mm_storeu_ps(z, _mm_add_ps(z0, z1));
    float tlo, thi;
    /* the tail (fewer than 8, or the last 8 again: min and max do not mind repeats) */
    int ok = qsgd_range_scalar(x + n - 8, 8, &tlo, &thi);
    for (int k = 0; k < 4; k++) {
        ok &= z[k] == 0.0f;
        tlo = lo[k] < tlo ? lo[k] : tlo;
        thi = hi[k] > thi ? hi[k] : thi;
    }
    *lo_p = tlo;
    *hi_p = thi;
    return ok;
}
#else
#define qsgd_range qsgd_range_scalar
#endif

/* Levels of x[0..n), which lie in [lo, lo + L / scale]; idx is the vector index of x[0]. */
static void qsgd_quantize(const float *restrict x, size_t n, double lo, double scale, int L,
                          int stochastic, uint64_t key, uint64_t idx, uint8_t *restrict lv)
{
    /* q >= 0 and q + u < L + 2 <= 257: converting to int truncates a small non-negative
     * value, which is the floor (and converts in one instruction, unlike unsigned) */
    if (stochastic) {
        for (size_t j = 0; j < n; j++) {
            const double q = ((double)x[j] - lo) * scale;
            const int l = (int)(q + (double)rng_uniform_f(key, idx + j));
            lv[j] = (uint8_t)(l < L ? l : L);
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            const double q = ((double)x[j] - lo) * scale;
            const int l = (int)(q + 0.5);
            lv[j] = (uint8_t)(l < L ? l : L);
        }
    }
}

static uint64_t qsgd_key(const double *p, const codec_ctx_t *ctx)
{
    return rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[QSGD_SEED] * 0x9e3779b97f4a7c15ull));
}

static size_t qsgd_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)scratch;
    const qsgd_cfg_t c = qsgd_cfg(p);
    const unsigned L = (1u << c.bits) - 1;
    const uint64_t key = qsgd_key(p, ctx), offset = ctx ? ctx->offset : 0;
    unsigned char *hdr = msg;
    unsigned char *stream = hdr + QSGD_HEADER * ((count + c.bucket - 1) / c.bucket);
    uint8_t lv[QSGD_STAGE];
    size_t staged = 0;  /* levels in lv                                      */
    size_t packed = 0;  /* levels already in the stream: a multiple of 8     */

    for (size_t b0 = 0; b0 < count; b0 += c.bucket, hdr += QSGD_HEADER) {
        const size_t m = count - b0 < c.bucket ? count - b0 : c.bucket;
        float lo, hi;
        if (!qsgd_range(in + b0, m, &lo, &hi)) lo = hi = NAN;
        memcpy(hdr, &lo, 4);
        memcpy(hdr + 4, &hi, 4);
        const int flat = !(lo < hi); /* one value, or the NaN bucket: every level 0 */
        const double scale = flat ? 0.0 : (double)L / ((double)hi - (double)lo);
        for (size_t j = 0; j < m;) {
            const size_t t = m - j < QSGD_STAGE - staged ? m - j : QSGD_STAGE - staged;
            if (flat)
                memset(lv + staged, 0, t);
            else
                qsgd_quantize(in + b0 + j, t, lo, scale, (int)L, c.stochastic, key, offset + b0 + j, lv + staged);
            staged += t;
            j += t;
            if (staged == QSGD_STAGE) {
                qsgd_pack(lv, staged, c.bits, stream + packed / 8 * c.bits);
                packed += staged;
                staged = 0;
            }
        }
    }
    qsgd_pack(lv, staged, c.bits, stream + packed / 8 * c.bits);
    return qsgd_max_bytes(p, count);
}

/* out[j] += lo + lv[j] * step, rounded to float and kept at most hi (a NaN bucket adds
 * NaN: every comparison with it is false). */
static void qsgd_dequantize_add(const uint8_t *restrict lv, size_t n, float lo, float hi, double step,
                                float *restrict out)
{
    for (size_t j = 0; j < n; j++) {
        const float v = (float)((double)lo + (double)lv[j] * step);
        out[j] += v > hi ? hi : v;
    }
}

static terse_status_t qsgd_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)scratch;
    const qsgd_cfg_t c = qsgd_cfg(p);
    if (bytes != qsgd_max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    const size_t nb = (count + c.bucket - 1) / c.bucket;
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
    uint8_t lv[QSGD_STAGE];
    size_t staged = 0, used = 0; /* levels unpacked into lv, and consumed from it */
    size_t unpacked = 0;         /* levels unpacked from the stream so far         */
    for (size_t b0 = 0; b0 < count; b0 += c.bucket, hdr += QSGD_HEADER) {
        const size_t m = count - b0 < c.bucket ? count - b0 : c.bucket;
        float lo, hi;
        memcpy(&lo, hdr, 4);
        memcpy(&hi, hdr + 4, 4);
        const double step = ((double)hi - (double)lo) / (double)L;
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
    return TERSE_OK;
}

const codec_ops_t codec_qsgd_ops = {
    sizeof(codec_ops_t), "qsgd", CODEC_PROTO_DENSE_EF,
    NULL, qsgd_max_bytes, qsgd_scratch_bytes, qsgd_encode, qsgd_decode_add, NULL, 0,
};
