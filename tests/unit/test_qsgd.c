/* Unit tests for QSGD with max-min scaling (compressors/qsgd.c): message sizes, the bit
 * packing, the exact quantisation formula (against a reference written here from the
 * documented operations), the rounding error and range bounds, constant buckets,
 * unbiasedness of stochastic rounding and its random draws, chunked encoding, the
 * validation of peer messages, and the AVX2 kernels against the scalar ones, byte for byte
 * and bit for bit, over inputs chosen to reach every path of both (on a CPU without AVX2,
 * simd_set_level keeps the scalar kernels and those comparisons hold trivially). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "qsgd.h"
#include "rng.h"
#include "simd.h"

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

/* ---- Helpers ---------------------------------------------------------------------------- */

static void params(double p[TERSE_MAX_PARAMS], int bits, size_t bucket, int stochastic)
{
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) p[i] = NAN;
    p[QSGD_BITS] = bits;
    p[QSGD_BUCKET] = (double)bucket;
    p[QSGD_STOCHASTIC] = stochastic;
    p[QSGD_SEED] = 0;
}

static size_t want_bytes(size_t n, int bits, size_t bucket)
{
    return 8 * ((n + bucket - 1) / bucket) + (n * (size_t)bits + 7) / 8;
}

/* xorshift64*: deterministic, so a failing case reproduces. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double unit(uint64_t *s) { return (double)(next(s) >> 11) * 0x1.0p-53; }

/* Vectors of several kinds: uniform [-1, 1], a few repeated levels (exact ties, constant
 * runs), a huge range (both ends near +-FLT_MAX, so hi - lo exceeds FLT_MAX), tiny values
 * down to subnormals, any finite bit pattern, ranges near 2^-100 whose elements sit a few
 * subnormals above the minimum (so x - lo is subnormal while L 2^16 / (hi - lo) still fits
 * a float), values far from zero next to their range, and runs of one value (flat
 * buckets). The vector-kernel tests add NaN, Inf and signed zeros (KIND_SPECIALS). */
enum {
    KIND_UNIFORM, KIND_LEVELS, KIND_HUGE, KIND_TINY, KIND_BITS, KIND_SUBNORMAL, KIND_OFFSET, KIND_RUNS, N_KINDS,
    KIND_SPECIALS = N_KINDS, N_VKINDS
};

static void fill(float *v, size_t n, uint64_t *s, int kind)
{
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case KIND_UNIFORM: v[i] = (float)(2.0 * unit(s) - 1.0); break;
        case KIND_LEVELS: v[i] = (float)((int)(next(s) % 5) - 2) * 0.75f; break;
        case KIND_HUGE: v[i] = (float)((2.0 * unit(s) - 1.0) * FLT_MAX); break;
        case KIND_TINY: v[i] = (float)((2.0 * unit(s) - 1.0) * 1e-38); break;
        case KIND_SUBNORMAL: {
            const uint64_t r = next(s);
            v[i] = r % 3 == 0   ? -0x1.0p-110f + (float)(r >> 40 & 127) * 0x1.0p-133f
                   : r % 3 == 1 ? (float)((int)(r >> 40 & 15) - 8) * 0x1.0p-149f
                                : (float)((2.0 * unit(s) - 1.0) * 0x1.0p-100);
            break;
        }
        case KIND_OFFSET: v[i] = 1000.0f + (float)(unit(s) * 0.01); break;
        case KIND_RUNS: v[i] = i && next(s) % 40 ? v[i - 1] : (float)(2.0 * unit(s) - 1.0); break;
        case KIND_SPECIALS: {
            static const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f};
            v[i] = next(s) % 211 == 0 ? specials[next(s) % 5] : (float)(2.0 * unit(s) - 1.0);
            break;
        }
        default: {
            uint32_t u;
            do u = (uint32_t)(next(s) >> 32);
            while ((u & 0x7f800000u) == 0x7f800000u);
            memcpy(&v[i], &u, sizeof u);
            break;
        }
        }
    }
}

/* The documented level of x in a bucket [lo, hi], lo < hi, v the element's 16 random bits
 * (stochastic) or ignored. Round to nearest, and stochastic rounding where float cannot
 * hold the bucket: q in double, floor(q + 1/2) or floor(q + v 2^-16). Stochastic rounding
 * where hi - lo and S = L 2^16 / (hi - lo) are finite floats: in float fixed point,
 * (floor((x - lo) S) + v) >> 16. Both clamped to L. */
static unsigned ref_level(float x, float lo, float hi, unsigned L, int stochastic, uint32_t v)
{
    if (stochastic) {
        const float r = hi - lo, S = (float)(L * 65536u) / r;
        if (isfinite(r) && isfinite(S)) {
            const float Q = (x - lo) * S;
            const uint32_t l = ((uint32_t)(int32_t)Q + v) >> 16;
            return l > L ? L : l;
        }
    } else {
        v = 0x8000;
    }
    const double r = (double)hi - (double)lo, q = ((double)x - (double)lo) * (L / r);
    const double f = floor(q + (double)v * 0x1.0p-16);
    return f > L ? L : (unsigned)f;
}

/* The documented quantisation of one bucket x[0..m), finite, written from the formula in
 * qsgd.c's header: lo/hi by a plain scan (the first of equal values), the levels by
 * ref_level with v = rng_bits16(key, idx + j), every level 0 when lo == hi, decoded as
 * min((float)(lo + level * step), hi). Writes the decoded values and levels. */
static void ref_bucket(const float *x, size_t m, int bits, int stochastic, uint64_t key, uint64_t idx,
                       float *dec, unsigned *level, float *lo_p, float *hi_p)
{
    const unsigned L = (1u << bits) - 1;
    float lo = x[0], hi = x[0];
    for (size_t j = 1; j < m; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *lo_p = lo;
    *hi_p = hi;
    const double step = ((double)hi - (double)lo) / L;
    for (size_t j = 0; j < m; j++) {
        const unsigned l = lo < hi ? ref_level(x[j], lo, hi, L, stochastic, rng_bits16(key, idx + j)) : 0;
        const float v = (float)((double)lo + l * step);
        dec[j] = v > hi ? hi : v;
        level[j] = l;
    }
}

/* The codec's stream for a stochastic encode: documented as rng_mix(ctx key ^ seed * phi). */
static uint64_t ref_key(uint64_t ctx_key, uint64_t seed)
{
    return rng_mix(ctx_key ^ (seed * 0x9e3779b97f4a7c15ull));
}

/* Encodes x[0..n) with the codec and decodes into a zeroed out; returns the bytes. */
static size_t round_trip(const double *p, const codec_ctx_t *ctx, const float *x, size_t n, float *out,
                         unsigned char *msg)
{
    size_t bytes = codec_qsgd_ops.encode(p, ctx, x, n, msg, NULL);
    memset(out, 0, n * sizeof *out);
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, msg, bytes, n, out, NULL), TERSE_OK);
    return bytes;
}

/* ---- Sizes ------------------------------------------------------------------------------ */

START_TEST(qsgd_message_size_is_exact_for_every_count_bits_and_bucket)
{
    static const size_t counts[] = {0, 1, 2, 7, 8, 9, 63, 64, 65, 511, 512, 513, 1000, 4097, 10007};
    static const size_t buckets[] = {1, 3, 7, 8, 64, 512, 4096, 16777216};
    enum { PAD = 64 };
    unsigned char *a = malloc(want_bytes(10007, 8, 1) + PAD), *b = malloc(want_bytes(10007, 8, 1) + PAD);
    float *x = malloc(10007 * sizeof *x);
    ck_assert(a && b && x);
    uint64_t s = 1;
    fill(x, 10007, &s, KIND_UNIFORM);
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++)
        for (int bits = 1; bits <= 8; bits++)
            for (size_t bi = 0; bi < sizeof buckets / sizeof buckets[0]; bi++)
                for (int st = 0; st <= 1; st++) {
                    size_t n = counts[ci], want = want_bytes(n, bits, buckets[bi]);
                    double p[TERSE_MAX_PARAMS];
                    params(p, bits, buckets[bi], st);
                    REQUIRE(codec_qsgd_ops.max_bytes(p, n) == want, "n=%zu bits=%d bucket=%zu: max_bytes %zu, want %zu",
                            n, bits, buckets[bi], codec_qsgd_ops.max_bytes(p, n), want);
                    /* every byte up to want is written, none after: two prefills agree, the
                     * second written by the other kernel level */
                    codec_ctx_t ctx = {42, 0, 0, 0};
                    memset(a, 0xaa, want + PAD);
                    memset(b, 0x55, want + PAD);
                    simd_set_level(SIMD_SCALAR);
                    size_t wa = codec_qsgd_ops.encode(p, &ctx, x, n, a, NULL);
                    simd_set_level(SIMD_AVX2);
                    size_t wb = codec_qsgd_ops.encode(p, &ctx, x, n, b, NULL);
                    REQUIRE(wa == want && wb == want, "n=%zu bits=%d bucket=%zu: encode wrote %zu", n, bits,
                            buckets[bi], wa);
                    REQUIRE(memcmp(a, b, want) == 0, "n=%zu bits=%d bucket=%zu: a byte was left unwritten", n,
                            bits, buckets[bi]);
                    for (size_t i = want; i < want + PAD; i++)
                        REQUIRE(a[i] == 0xaa && b[i] == 0x55, "n=%zu bits=%d bucket=%zu: byte %zu past the end written",
                                n, bits, buckets[bi], i);
                }
    simd_set_level(simd_cpu_level());
    free(a);
    free(b);
    free(x);
}
END_TEST

START_TEST(qsgd_ratio_meets_the_targets_at_bucket_512)
{
    double p[TERSE_MAX_PARAMS];
    const size_t n = (size_t)1 << 24; /* 64 MiB of fp32 */
    params(p, 4, 512, 1);
    double r4 = 4.0 * (double)n / (double)codec_qsgd_ops.max_bytes(p, n);
    params(p, 8, 512, 1);
    double r8 = 4.0 * (double)n / (double)codec_qsgd_ops.max_bytes(p, n);
    ck_assert_msg(fabs(r4 - 2048.0 / 264.0) < 1e-9 && r4 >= 7.0, "bits=4: ratio %.4f", r4);
    ck_assert_msg(fabs(r8 - 2048.0 / 520.0) < 1e-9 && r8 >= 3.8, "bits=8: ratio %.4f", r8);
}
END_TEST

/* ---- Packing ---------------------------------------------------------------------------- */

START_TEST(qsgd_pack_matches_a_bitwise_reference_and_unpacks_back)
{
    enum { MAXN = 5000, PAD = 16 };
    uint8_t *lv = malloc(MAXN), *back = malloc(MAXN);
    unsigned char *buf = malloc(MAXN + PAD);
    ck_assert(lv && back && buf);
    uint64_t s = 7;
    for (int bits = 1; bits <= 8; bits++)
        for (size_t n = 0; n < MAXN; n = n < 80 ? n + 1 : n * 3 + 1) {
            for (size_t i = 0; i < n; i++) lv[i] = (uint8_t)(next(&s) % (1u << bits));
            size_t bytes = (n * (size_t)bits + 7) / 8;
            memset(buf, 0xa5, bytes + PAD);
            qsgd_pack(lv, n, (unsigned)bits, buf);
            for (size_t i = bytes; i < bytes + PAD; i++)
                REQUIRE(buf[i] == 0xa5, "bits=%d n=%zu: byte %zu past %zu written", bits, n, i, bytes);
            /* bit t of level i is stream bit i * bits + t, LSB first in each byte */
            for (size_t bit = 0; bit < bytes * 8; bit++) {
                unsigned got = buf[bit / 8] >> (bit % 8) & 1u;
                size_t i = bit / (size_t)bits;
                unsigned want = i < n ? lv[i] >> (bit % (size_t)bits) & 1u : 0u;
                REQUIRE(got == want, "bits=%d n=%zu: stream bit %zu is %u, want %u", bits, n, bit, got, want);
            }
            memset(back, 0xff, MAXN);
            qsgd_unpack(buf, n, (unsigned)bits, back);
            REQUIRE(memcmp(back, lv, n) == 0, "bits=%d n=%zu: unpack differs", bits, n);
            if (n < MAXN) REQUIRE(back[n] == 0xff, "bits=%d n=%zu: unpack wrote past n", bits, n);
        }
    free(lv);
    free(back);
    free(buf);
}
END_TEST

START_TEST(qsgd_wire_format_of_a_hand_checked_bucket)
{
    /* bits=2, L=3: lo=0, hi=3, step 1, levels 0..3 packed as 0b11100100 */
    const float x[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    double p[TERSE_MAX_PARAMS];
    params(p, 2, 4, 0);
    unsigned char msg[9];
    float out[4];
    ck_assert_uint_eq(round_trip(p, NULL, x, 4, out, msg), 9);
    float lo, hi;
    memcpy(&lo, msg, 4);
    memcpy(&hi, msg + 4, 4);
    ck_assert(lo == 0.0f && hi == 3.0f);
    ck_assert_uint_eq(msg[8], 0xe4);
    for (int i = 0; i < 4; i++) ck_assert(out[i] == x[i]);
    /* bits=1: two levels, lo and hi; 0.5 rounds up (halves up) */
    const float y[5] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f};
    params(p, 1, 8, 0);
    unsigned char m1[9];
    float o1[5];
    ck_assert_uint_eq(round_trip(p, NULL, y, 5, o1, m1), 9);
    ck_assert_uint_eq(m1[8], 0x1c); /* levels 0 0 1 1 1 */
    const float want1[5] = {0.0f, 0.0f, 1.0f, 1.0f, 1.0f};
    for (int i = 0; i < 5; i++) ck_assert(o1[i] == want1[i]);
}
END_TEST

/* ---- Quantisation ----------------------------------------------------------------------- */

/* Codec against the reference, bit for bit, at both kernel levels, for both roundings,
 * every bits, several bucket sizes, an even and an odd offset and every kind of vector;
 * plus the bounds: decoded values in [lo, hi]; with round to nearest an error of at most
 * step / 2, with stochastic rounding of at most one step (to within 5 2^-16 of a step, the
 * float arithmetic's), plus the float rounding of the result. */
START_TEST(qsgd_matches_the_documented_formula_and_bounds)
{
    static const simd_level_t levels[] = {SIMD_SCALAR, SIMD_AVX2};
    static const size_t buckets[] = {1, 2, 7, 64, 512, 3000};
    const size_t n = 3001;
    float *x = malloc(n * sizeof *x), *out = malloc(n * sizeof *out), *ref = malloc(n * sizeof *ref);
    unsigned *lev = malloc(n * sizeof *lev);
    unsigned char *msg = malloc(want_bytes(n, 8, 1));
    ck_assert(x && out && ref && lev && msg);
    uint64_t s = 99;
    for (int kind = 0; kind < N_KINDS; kind++) {
        fill(x, n, &s, kind);
        for (int bits = 1; bits <= 8; bits++)
            for (size_t bi = 0; bi < sizeof buckets / sizeof buckets[0]; bi++)
                for (int run = 0; run < 8; run++) {
                    const int st = run & 1, offset = 100 + (run >> 1 & 1);
                    const char *lv = simd_name(simd_set_level(levels[run >> 2]));
                    const size_t b = buckets[bi];
                    double p[TERSE_MAX_PARAMS];
                    params(p, bits, b, st);
                    p[QSGD_SEED] = 5;
                    const codec_ctx_t ctx = {0x1234567 + (uint64_t)kind, (uint64_t)offset, 0, 0};
                    round_trip(p, &ctx, x, n, out, msg);
                    const double L = (double)((1u << bits) - 1);
                    for (size_t b0 = 0; b0 < n; b0 += b) {
                        size_t m = n - b0 < b ? n - b0 : b;
                        float lo, hi;
                        ref_bucket(x + b0, m, bits, st, ref_key(ctx.key, 5), ctx.offset + b0, ref + b0, lev + b0, &lo,
                                   &hi);
                        float mlo, mhi;
                        memcpy(&mlo, msg + 8 * (b0 / b), 4);
                        memcpy(&mhi, msg + 8 * (b0 / b) + 4, 4);
                        REQUIRE(memcmp(&mlo, &lo, 4) == 0 && memcmp(&mhi, &hi, 4) == 0,
                                "%s kind %d bits %d bucket %zu: header %g %g, want %g %g", lv, kind, bits, b, mlo, mhi, lo,
                                hi);
                        const double step = ((double)hi - (double)lo) / L;
                        /* half an ulp of the largest magnitude, at least half the subnormal
                         * spacing: the decoded value is a float */
                        const double ulp = fmax(fmax(fabs((double)lo), fabs((double)hi)) * 0x1.0p-24, 0x1.0p-150);
                        for (size_t j = b0; j < b0 + m; j++) {
                            /* decode adds into out, which round_trip zeroes: +0 + -0 is +0 */
                            const float want = 0.0f + ref[j];
                            REQUIRE(memcmp(&out[j], &want, 4) == 0, "%s kind %d bits %d bucket %zu st %d offset %d: "
                                    "element %zu (%a in [%a, %a]) decodes to %a, reference %a", lv, kind, bits, b, st,
                                    offset, j, x[j], lo, hi, out[j], want);
                            REQUIRE(out[j] >= lo && out[j] <= hi, "kind %d bits %d bucket %zu: element %zu = %g outside "
                                    "[%g, %g]", kind, bits, b, j, out[j], lo, hi);
                            const double err = fabs((double)out[j] - (double)x[j]);
                            const double bound = st ? step * (1 + 5 * 0x1.0p-16) + ulp : step / 2 * (1 + 1e-12) + ulp;
                            REQUIRE(err <= bound, "kind %d bits %d bucket %zu st %d: element %zu error %g > %g (step %g)",
                                    kind, bits, b, st, j, err, bound, step);
                        }
                    }
                }
    }
    simd_set_level(simd_cpu_level());
    free(x); free(out); free(ref); free(lev); free(msg);
}
END_TEST

START_TEST(qsgd_constant_buckets_decode_exactly)
{
    static const float values[] = {0.0f, -0.0f, 1.0f, -3.25f, 1e-40f, -FLT_MAX, FLT_MAX, 0.1f};
    enum { N = 37 };
    float x[N], out[N];
    unsigned char msg[8 * N + N];
    for (size_t vi = 0; vi < sizeof values / sizeof values[0]; vi++)
        for (int bits = 1; bits <= 8; bits++)
            for (int st = 0; st <= 1; st++) {
                double p[TERSE_MAX_PARAMS];
                params(p, bits, 10, st);
                for (int i = 0; i < N; i++) x[i] = values[vi];
                const codec_ctx_t ctx = {77, 3, 0, 0};
                size_t bytes = round_trip(p, &ctx, x, N, out, msg);
                for (int i = 0; i < N; i++)
                    REQUIRE(out[i] == values[vi], "value %g bits %d: element %d decodes to %g", values[vi], bits, i, out[i]);
                for (size_t i = 8 * 4; i < bytes; i++)
                    REQUIRE(msg[i] == 0, "value %g bits %d: level byte %zu is %u, want 0", values[vi], bits, i, msg[i]);
            }
    /* a constant bucket next to a varying one */
    for (int i = 0; i < N; i++) x[i] = i < 10 ? 2.5f : (float)i;
    double p[TERSE_MAX_PARAMS];
    params(p, 3, 10, 0);
    round_trip(p, NULL, x, N, out, msg);
    for (int i = 0; i < 10; i++) ck_assert(out[i] == 2.5f);
}
END_TEST

START_TEST(qsgd_decode_adds_into_out)
{
    /* buckets of 3 spanning 3 in 3 steps (bits=2): every element sits on a level */
    const float x[6] = {-1.0f, 0.0f, 2.0f, 3.0f, 4.0f, 6.0f};
    double p[TERSE_MAX_PARAMS];
    params(p, 2, 3, 0);
    unsigned char msg[32];
    float plain[6], out[6] = {10, 20, 30, 40, 50, 60};
    size_t bytes = round_trip(p, NULL, x, 6, plain, msg);
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, msg, bytes, 6, out, NULL), TERSE_OK);
    for (int i = 0; i < 6; i++) ck_assert(out[i] == (float)(10 * (i + 1)) + plain[i]);
    for (int i = 0; i < 6; i++) ck_assert(plain[i] == x[i]);
}
END_TEST

/* Over K keys the mean of decode(encode(x)) tends to x. Each decode is lo + level * step with
 * level floor(q) or floor(q) + 1 (checked), so one draw has variance f (1 - f) step^2 <=
 * step^2 / 4 and the mean of K independent draws a standard error <= step / (2 sqrt K); the
 * tolerance is 5 of those (a false alarm below 1e-6 per element), plus 5 2^-16 step for the
 * resolution of the draws and the float arithmetic. Round to nearest, in contrast, misses
 * by frac(q) step on the elements between levels, which this tolerance catches - the check
 * below makes sure. */
START_TEST(qsgd_stochastic_rounding_is_unbiased)
{
    enum { N = 96, K = 4000 };
    float x[N], out[N];
    double sum[N];
    unsigned char msg[8 * 2 + N];
    for (int bits = 1; bits <= 8; bits += 3) {
        double p[TERSE_MAX_PARAMS];
        params(p, bits, 48, 1);
        /* both buckets span [-1, 2]; the interior values fall between levels */
        for (int i = 0; i < N; i++) x[i] = i % 48 == 0 ? -1.0f : i % 48 == 1 ? 2.0f : -1.0f + 3.0f * (float)((i * 37) % 101) / 101.0f;
        const double L = (double)((1u << bits) - 1), step = 3.0 / L;
        memset(sum, 0, sizeof sum);
        for (uint64_t k = 0; k < K; k++) {
            const codec_ctx_t ctx = {k * 0x9e3779b97f4a7c15ull + 1, 1000, 0, 0};
            round_trip(p, &ctx, x, N, out, msg);
            for (int i = 0; i < N; i++) {
                const double q = ((double)x[i] + 1.0) / step, l = ((double)out[i] + 1.0) / step;
                REQUIRE(fabs(l - floor(q)) < 1e-4 || fabs(l - floor(q) - 1) < 1e-4,
                        "bits %d key %llu: element %d (q = %.4f) decodes to level %.4f, not an adjacent one", bits,
                        (unsigned long long)k, i, q, l);
                sum[i] += out[i];
            }
        }
        const double tol = 5.0 * step / (2.0 * sqrt((double)K)) + 5 * step * 0x1.0p-16 + 1e-6;
        for (int i = 0; i < N; i++)
            REQUIRE(fabs(sum[i] / K - x[i]) <= tol, "bits %d: element %d mean %.6f, x %.6f, tolerance %.6f", bits, i,
                    sum[i] / K, x[i], tol);
        /* the test can fail: round to nearest is biased beyond the tolerance somewhere */
        params(p, bits, 48, 0);
        round_trip(p, NULL, x, N, out, msg);
        double worst = 0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs((double)out[i] - x[i]));
        ck_assert_msg(worst > tol, "bits %d: round to nearest errs by %g only, within %g", bits, worst, tol);
    }
}
END_TEST

/* A chunk encodes as it would inside the whole vector: with buckets that align with the
 * chunk boundary and the chunk's offset in ctx, the decoded chunks put together equal the
 * whole vector decoded, bit for bit, from an even and an odd offset, at both kernel levels;
 * the same chunk encoded at another offset draws other numbers. */
START_TEST(qsgd_chunks_encode_as_inside_the_whole_vector)
{
    enum { N = 3000, CUT = 1200, B = 100 };
    float *x = malloc(N * sizeof *x), *whole = malloc(N * sizeof *whole), *parts = malloc(N * sizeof *parts);
    unsigned char *msg = malloc(want_bytes(N, 8, 1));
    ck_assert(x && whole && parts && msg);
    uint64_t s = 3;
    fill(x, N, &s, KIND_UNIFORM);
    for (int run = 0; run < 32; run++) {
        const int bits = 1 + run % 8;
        const uint64_t at = 500 + (uint64_t)(run / 8 % 2);
        simd_set_level(run < 16 ? SIMD_SCALAR : SIMD_AVX2);
        double p[TERSE_MAX_PARAMS];
        params(p, bits, B, 1);
        codec_ctx_t ctx = {0xfeed, at, 0, 0};
        round_trip(p, &ctx, x, N, whole, msg);
        round_trip(p, &ctx, x, CUT, parts, msg);
        ctx.offset = at + CUT;
        round_trip(p, &ctx, x + CUT, N - CUT, parts + CUT, msg);
        REQUIRE(memcmp(whole, parts, N * sizeof *x) == 0, "bits %d offset %llu: chunked encoding differs", bits,
                (unsigned long long)at);
        ctx.offset = at;
        round_trip(p, &ctx, x + CUT, N - CUT, parts + CUT, msg);
        REQUIRE(memcmp(whole + CUT, parts + CUT, (N - CUT) * sizeof *x) != 0, "bits %d: the offset is ignored", bits);
        /* the seed parameter changes the stream too */
        p[QSGD_SEED] = 1;
        round_trip(p, &ctx, x, N, parts, msg);
        REQUIRE(memcmp(whole, parts, N * sizeof *x) != 0, "bits %d: the seed is ignored", bits);
    }
    simd_set_level(simd_cpu_level());
    free(x); free(whole); free(parts); free(msg);
}
END_TEST

/* ---- Validation ------------------------------------------------------------------------- */

#define SENTINEL 42.5f

START_TEST(qsgd_decode_rejects_malformed_messages_and_leaves_out_untouched)
{
    enum { N = 21, B = 8 };  /* 3 buckets; 21 * 3 bits = 63: one padding bit */
    float x[N], out[N];
    uint64_t s = 11;
    fill(x, N, &s, KIND_UNIFORM);
    double p[TERSE_MAX_PARAMS];
    params(p, 3, B, 1);
    unsigned char msg[64], bad[64];
    const size_t bytes = codec_qsgd_ops.encode(p, NULL, x, N, msg, NULL);
    ck_assert_uint_eq(bytes, 3 * 8 + 8);
#define EXPECT_REJECTED(m, len, cnt, what)                                                   \
    do {                                                                                    \
        for (int i_ = 0; i_ < N; i_++) out[i_] = SENTINEL;                                  \
        ck_assert_msg(codec_qsgd_ops.decode_add(p, m, len, cnt, out, NULL) == TERSE_ERR_MISMATCH, "%s", what); \
        for (int i_ = 0; i_ < N; i_++) ck_assert_msg(out[i_] == SENTINEL, "%s: out changed", what); \
    } while (0)
    EXPECT_REJECTED(msg, bytes - 1, N, "one byte short");
    EXPECT_REJECTED(msg, bytes + 1, N, "one byte long");
    EXPECT_REJECTED(msg, 0, N, "empty");
    EXPECT_REJECTED(msg, bytes, N - 1, "a message for another count");
    EXPECT_REJECTED(msg, bytes, 1, "a message for count 1");
    params(p, 4, B, 1);
    EXPECT_REJECTED(msg, bytes, N, "a message of other bits");
    params(p, 3, B, 1);

    const float hdrs[][2] = {{1.0f, 0.5f}, {-INFINITY, 1.0f}, {0.0f, INFINITY}, {INFINITY, INFINITY},
                             {NAN, 1.0f}, {0.0f, NAN}, {-INFINITY, -INFINITY}};
    for (size_t h = 0; h < sizeof hdrs / sizeof hdrs[0]; h++)
        for (int b = 0; b < 3; b++) {
            memcpy(bad, msg, bytes);
            memcpy(bad + 8 * b, &hdrs[h][0], 4);
            memcpy(bad + 8 * b + 4, &hdrs[h][1], 4);
            char what[80];
            snprintf(what, sizeof what, "header (%g, %g) in bucket %d", hdrs[h][0], hdrs[h][1], b);
            EXPECT_REJECTED(bad, bytes, N, what);
        }
    memcpy(bad, msg, bytes);
    bad[bytes - 1] |= 0x80;
    EXPECT_REJECTED(bad, bytes, N, "a padding bit set");
    /* lo == hi with nonzero levels (no encoder writes it) still decodes inside [lo, hi] */
    memcpy(bad, msg, bytes);
    const float c = 0.25f;
    memcpy(bad, &c, 4);
    memcpy(bad + 4, &c, 4);
    memset(bad + 24, 0xff, 7);
    memset(out, 0, sizeof out);
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, bad, bytes, N, out, NULL), TERSE_OK);
    for (int i = 0; i < B; i++) ck_assert(out[i] == c);
    /* the encoder's own message is accepted, and any level bits are */
    memcpy(bad, msg, bytes);
    memset(bad + 24, 0xff, 7);
    bad[31] = 0x7f;
    memset(out, 0, sizeof out);
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, bad, bytes, N, out, NULL), TERSE_OK);
    for (int b = 0; b < 3; b++) {
        float hi;
        memcpy(&hi, msg + 8 * b + 4, 4);
        for (int i = 8 * b; i < N && i < 8 * (b + 1); i++) ck_assert(out[i] == hi); /* top level */
    }
    /* count 0: only the empty message */
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, msg, 0, 0, out, NULL), TERSE_OK);
    ck_assert_int_eq(codec_qsgd_ops.decode_add(p, msg, 1, 0, out, NULL), TERSE_ERR_MISMATCH);
#undef EXPECT_REJECTED
}
END_TEST

START_TEST(qsgd_nonfinite_buckets_travel_as_nan)
{
    enum { N = 24, B = 8 };
    float x[N], out[N];
    unsigned char msg[64];
    const float poison[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 3; k++)
        for (int at = 0; at < B; at++) {
            for (int i = 0; i < N; i++) x[i] = (float)i * 0.5f;
            x[B + at] = poison[k]; /* the middle bucket */
            double p[TERSE_MAX_PARAMS];
            params(p, 4, B, 1);
            size_t bytes = codec_qsgd_ops.encode(p, NULL, x, N, msg, NULL);
            float lo, hi;
            memcpy(&lo, msg + 8, 4);
            memcpy(&hi, msg + 12, 4);
            ck_assert_msg(isnan(lo) && isnan(hi), "poison %g at %d: header %g %g", poison[k], at, lo, hi);
            memset(out, 0, sizeof out);
            ck_assert_int_eq(codec_qsgd_ops.decode_add(p, msg, bytes, N, out, NULL), TERSE_OK);
            for (int i = 0; i < N; i++) {
                if (i >= B && i < 2 * B) REQUIRE(isnan(out[i]), "poison %g at %d: element %d = %g", poison[k], at, i, out[i]);
                else /* the other buckets span 3.5 in 15 steps; stochastic rounding errs < 1 step */
                    REQUIRE(isfinite(out[i]) && fabsf(out[i] - x[i]) <= 3.5f / 15 + 1e-5f,
                            "poison %g at %d: element %d = %g, x %g", poison[k], at, i, out[i], x[i]);
            }
        }
}
END_TEST

/* ---- Vector kernels --------------------------------------------------------------------- */

/* Encodes x[0..n) at the scalar and at the AVX2 level into a and b; returns the bytes. */
static size_t encode_both(const double *p, const codec_ctx_t *ctx, const float *x, size_t n, unsigned char *a,
                          unsigned char *b)
{
    simd_set_level(SIMD_SCALAR);
    const size_t la = codec_qsgd_ops.encode(p, ctx, x, n, a, NULL);
    simd_set_level(SIMD_AVX2);
    const size_t lb = codec_qsgd_ops.encode(p, ctx, x, n, b, NULL);
    ck_assert_uint_eq(la, lb);
    return la;
}

static size_t first_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    size_t at = 0;
    while (at < n && a[at] == b[at]) at++;
    return at;
}

START_TEST(qsgd_vector_encode_writes_the_bytes_of_the_scalar_one)
{
    static const size_t buckets[] = {1, 2, 3, 7, 31, 32, 33, 64, 100, 511, 512, 1000, 4096};
    static const size_t sizes[] = {0,   1,   2,   5,   15,  16,   17,   31,   32,   33,   63,  64,
                                   65,  100, 511, 512, 513, 1025, 2047, 2048, 2049, 4099, 10007};
    static const uint64_t offsets[] = {0, 1, 12345, ((uint64_t)1 << 33) - 37, ((uint64_t)1 << 33) - 4000};
    enum { NMAX = 10007, SHIFT = 5 };
    const size_t n_sizes = sizeof sizes / sizeof sizes[0];
    float *x = malloc((NMAX + SHIFT) * sizeof *x);
    unsigned char *a = malloc(want_bytes(NMAX, 8, 1)), *b = malloc(want_bytes(NMAX, 8, 1));
    ck_assert(x && a && b);
    uint64_t s = 2024;
    size_t cases = 0;
    for (int kind = 0; kind < N_VKINDS; kind++) {
        fill(x, NMAX + SHIFT, &s, kind);
        for (int bits = 1; bits <= 8; bits++)
            for (size_t bi = 0; bi < sizeof buckets / sizeof buckets[0]; bi++)
                for (int st = 0; st <= 1; st++)
                    for (size_t oi = 0; oi < sizeof offsets / sizeof offsets[0]; oi++, cases++) {
                        /* every size, and every start of x modulo 8 floats, comes round */
                        const size_t n = sizes[cases * 7 % n_sizes], shift = cases % SHIFT;
                        double p[TERSE_MAX_PARAMS];
                        params(p, bits, buckets[bi], st);
                        p[QSGD_SEED] = (double)(cases % 3);
                        const codec_ctx_t ctx = {next(&s), offsets[oi], 0, 0};
                        const size_t len = encode_both(p, &ctx, x + shift, n, a, b), at = first_diff(a, b, len);
                        REQUIRE(at == len, "kind %d bits %d bucket %zu st %d offset %llu n %zu: byte %zu of %zu differs "
                                "(%02x scalar, %02x avx2)", kind, bits, buckets[bi], st,
                                (unsigned long long)offsets[oi], n, at, len, a[at], b[at]);
                    }
    }
    simd_set_level(simd_cpu_level());
    free(x); free(a); free(b);
}
END_TEST

/* Messages as any peer may send them (every valid header: ordered finite, equal, NaN NaN,
 * the widest and subnormal ranges; random levels), decoded into the same random floats. */
START_TEST(qsgd_vector_decode_adds_the_floats_of_the_scalar_one)
{
    static const size_t buckets[] = {1, 3, 8, 63, 64, 65, 512, 1000};
    static const size_t sizes[] = {0, 1, 7, 8, 9, 63, 64, 65, 200, 511, 512, 513, 3001, 10007};
    enum { NMAX = 10007 };
    float *x = malloc(NMAX * sizeof *x), *oa = malloc(NMAX * sizeof *oa), *ob = malloc(NMAX * sizeof *ob);
    unsigned char *msg = malloc(want_bytes(NMAX, 8, 1));
    ck_assert(x && oa && ob && msg);
    uint64_t s = 77;
    for (int bits = 1; bits <= 8; bits++)
        for (size_t bi = 0; bi < sizeof buckets / sizeof buckets[0]; bi++)
            for (size_t ni = 0; ni < sizeof sizes / sizeof sizes[0]; ni++) {
                const size_t n = sizes[ni], bucket = buckets[bi], nb = (n + bucket - 1) / bucket;
                const size_t bytes = want_bytes(n, bits, bucket), stream = (n * (size_t)bits + 7) / 8;
                double p[TERSE_MAX_PARAMS];
                params(p, bits, bucket, 1);
                for (size_t k = 0; k < nb; k++) {
                    float h[2] = {(float)(2.0 * unit(&s) - 1.0), (float)(2.0 * unit(&s) - 1.0)};
                    switch (next(&s) % 8) {
                    case 0: h[0] = h[1] = NAN; break;
                    case 1: h[1] = h[0]; break;
                    case 2: h[0] = -FLT_MAX; h[1] = FLT_MAX; break;
                    case 3: h[0] = -(float)(next(&s) % 5) * 0x1.0p-149f; h[1] = (float)(next(&s) % 5) * 0x1.0p-149f; break;
                    case 4: h[0] = 1000.0f; h[1] = 1000.01f; break;
                    default:
                        if (h[0] > h[1]) {
                            const float t = h[0];
                            h[0] = h[1];
                            h[1] = t;
                        }
                    }
                    memcpy(msg + 8 * k, h, 8);
                }
                for (size_t k = 0; k < stream; k++) msg[8 * nb + k] = (unsigned char)next(&s);
                if (n * (size_t)bits % 8) msg[bytes - 1] &= (unsigned char)((1u << (n * (size_t)bits % 8)) - 1);
                fill(x, n, &s, KIND_UNIFORM);
                memcpy(oa, x, n * sizeof *x);
                memcpy(ob, x, n * sizeof *x);
                /* a buffer of the message's size, so that a sanitizer sees any read past it */
                unsigned char *exact = malloc(bytes ? bytes : 1);
                ck_assert(exact);
                memcpy(exact, msg, bytes);
                simd_set_level(SIMD_SCALAR);
                ck_assert_int_eq(codec_qsgd_ops.decode_add(p, exact, bytes, n, oa, NULL), TERSE_OK);
                simd_set_level(SIMD_AVX2);
                ck_assert_int_eq(codec_qsgd_ops.decode_add(p, exact, bytes, n, ob, NULL), TERSE_OK);
                free(exact);
                size_t at = 0;
                while (at < n && memcmp(&oa[at], &ob[at], 4) == 0) at++;
                REQUIRE(at == n, "bits %d bucket %zu n %zu: element %zu is %a scalar, %a avx2", bits, bucket, n, at,
                        at < n ? oa[at] : 0.0f, at < n ? ob[at] : 0.0f);
            }
    simd_set_level(simd_cpu_level());
    free(x); free(oa); free(ob); free(msg);
}
END_TEST

/* Round to nearest in AVX2 evaluates the double formula in float and proves each lane;
 * values a few ulps around the midpoints between two levels are where the two can differ,
 * and the lanes it cannot prove must take the double loop. The data is checked to hold such
 * differences (float alone would get them wrong), so that the comparison means something. */
START_TEST(qsgd_round_to_nearest_matches_double_next_to_midpoints)
{
    enum { N = 4096, B = 512 };
    float *x = malloc(N * sizeof *x), *out = malloc(N * sizeof *out), *ref = malloc(N * sizeof *ref);
    unsigned *lev = malloc(N * sizeof *lev);
    unsigned char *a = malloc(want_bytes(N, 8, B)), *b = malloc(want_bytes(N, 8, B));
    ck_assert(x && out && ref && lev && a && b);
    uint64_t s = 5;
    size_t float_wrong = 0;
    for (int bits = 1; bits <= 8; bits++) {
        const unsigned L = (1u << bits) - 1;
        for (size_t b0 = 0; b0 < N; b0 += B) {
            const float lo = (float)(-0.1 - unit(&s)), hi = (float)(0.2 + 3.0 * unit(&s));
            const float S = (float)(L * 65536u) / (hi - lo);
            x[b0] = lo;
            x[b0 + 1] = hi;
            for (size_t j = b0 + 2; j < b0 + B; j++) {
                const double mid = (double)lo + ((double)(next(&s) % L) + 0.5) * ((double)hi - (double)lo) / L;
                float v = (float)mid;
                for (int k = (int)(next(&s) % 13) - 6; k; k += k < 0 ? 1 : -1)
                    v = nextafterf(v, k < 0 ? -INFINITY : INFINITY);
                x[j] = v < lo ? lo : v > hi ? hi : v;
                const unsigned naive = (((unsigned)(int)((x[j] - lo) * S) + 0x8000u) >> 16);
                float_wrong += (naive > L ? L : naive) != ref_level(x[j], lo, hi, L, 0, 0);
            }
        }
        double p[TERSE_MAX_PARAMS];
        params(p, bits, B, 0);
        const size_t len = encode_both(p, NULL, x, N, a, b), at = first_diff(a, b, len);
        REQUIRE(at == len, "bits %d: byte %zu of %zu differs (%02x scalar, %02x avx2)", bits, at, len, a[at], b[at]);
        memset(out, 0, N * sizeof *out);
        ck_assert_int_eq(codec_qsgd_ops.decode_add(p, b, len, N, out, NULL), TERSE_OK);
        for (size_t b0 = 0; b0 < N; b0 += B) {
            float lo, hi;
            ref_bucket(x + b0, B, bits, 0, 0, 0, ref + b0, lev + b0, &lo, &hi);
        }
        for (size_t j = 0; j < N; j++) {
            const float want = 0.0f + ref[j]; /* decode adds into +0 */
            REQUIRE(memcmp(&out[j], &want, 4) == 0, "bits %d: element %zu (%a) decodes to %a, reference %a", bits, j,
                    x[j], out[j], want);
        }
    }
    ck_assert_msg(float_wrong > 0, "no element where float alone rounds otherwise: the test proves nothing");
    simd_set_level(simd_cpu_level());
    free(x); free(out); free(ref); free(lev); free(a); free(b);
}
END_TEST

/* The header holds the scan's first of equal extremes: with +0 and -0 both the minimum
 * (or both the maximum), the one that comes first, at both levels. */
START_TEST(qsgd_header_keeps_the_first_of_two_zeros)
{
    enum { N = 40 };
    float x[N];
    unsigned char a[8 + N], b[8 + N];
    double p[TERSE_MAX_PARAMS];
    params(p, 8, N, 1);
    for (int order = 0; order < 2; order++)
        for (int side = 0; side < 2; side++) { /* the zeros are the minimum, or the maximum */
            const float first = order ? -0.0f : 0.0f, second = order ? 0.0f : -0.0f;
            for (int i = 0; i < N; i++) x[i] = side ? -1.0f - (float)i : 1.0f + (float)i;
            x[5] = first;
            x[23] = second;
            const size_t len = encode_both(p, NULL, x, N, a, b);
            REQUIRE(first_diff(a, b, len) == len, "order %d side %d: the kernels differ", order, side);
            REQUIRE(memcmp(a + 4 * side, &first, 4) == 0 && memcmp(b + 4 * side, &first, 4) == 0,
                    "order %d side %d: the header does not hold the first zero", order, side);
        }
    simd_set_level(simd_cpu_level());
}
END_TEST

/* The draws follow rng_bits16(key, offset + j) across a block of 2^33, where the block key
 * changes, from an even and an odd offset, at both levels. */
START_TEST(qsgd_draws_follow_the_stream_across_a_block_boundary)
{
    enum { N = 1000, B = 64 };
    float x[N], out[N], ref[N];
    unsigned lev[N];
    unsigned char msg[8 * ((N + B - 1) / B) + N];
    uint64_t s = 9;
    fill(x, N, &s, KIND_UNIFORM);
    for (int run = 0; run < 8; run++) {
        const int bits = run & 1 ? 8 : 4;
        simd_set_level(run & 2 ? SIMD_AVX2 : SIMD_SCALAR);
        double p[TERSE_MAX_PARAMS];
        params(p, bits, B, 1);
        const codec_ctx_t ctx = {0xb10c, ((uint64_t)1 << 33) - 300 - (uint64_t)(run >> 2), 0, 0};
        round_trip(p, &ctx, x, N, out, msg);
        for (size_t b0 = 0; b0 < N; b0 += B) {
            float lo, hi;
            const size_t m = N - b0 < B ? N - b0 : B;
            ref_bucket(x + b0, m, bits, 1, ref_key(ctx.key, 0), ctx.offset + b0, ref + b0, lev + b0, &lo, &hi);
        }
        for (size_t j = 0; j < N; j++) {
            const float want = 0.0f + ref[j]; /* decode adds into +0 */
            REQUIRE(memcmp(&out[j], &want, 4) == 0, "run %d: element %zu decodes to %a, reference %a", run, j, out[j],
                    want);
        }
    }
    simd_set_level(simd_cpu_level());
}
END_TEST

/* The 16-bit draws are uniform and consecutive ones uncorrelated: the counts of their top
 * 4 bits pass a chi-square test, and the correlation of draw i with draw i + 1 (the two
 * halves of one hash, or the ends of two) is within 5 standard errors of 0. A hash that
 * fails to mix, or halves that follow each other, fail one of the two. */
START_TEST(qsgd_draws_are_uniform_and_uncorrelated)
{
    enum { N = 1 << 20 };
    double count[16] = {0}, sum = 0, sum2 = 0, cross = 0;
    uint32_t prev = rng_bits16(0x5eed, 0);
    for (uint64_t i = 0; i < N; i++) {
        const uint32_t v = rng_bits16(0x5eed, i);
        count[v >> 12] += 1;
        const double d = (double)v - 32767.5;
        sum += d;
        sum2 += d * d;
        if (i) cross += ((double)prev - 32767.5) * d;
        prev = v;
    }
    double chi2 = 0;
    for (int k = 0; k < 16; k++) chi2 += (count[k] - N / 16.0) * (count[k] - N / 16.0) / (N / 16.0);
    ck_assert_msg(chi2 < 45.0, "chi-square %.1f over 15 degrees of freedom", chi2); /* p about 1e-4 */
    const double rho = cross / sum2;
    ck_assert_msg(fabs(rho) < 5.0 / sqrt((double)N), "lag-1 correlation %.5f", rho);
    ck_assert_msg(fabs(sum / N) < 5.0 * 18918.6 / sqrt((double)N), "mean off by %.1f", sum / N);
}
END_TEST

START_TEST(qsgd_registry_row_and_defaults)
{
    const method_def_t *m = codec_find("qsgd");
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_eq(m->ops, &codec_qsgd_ops);
    ck_assert_uint_eq(m->n_params, QSGD_N_PARAMS);
    ck_assert_str_eq(m->params[QSGD_BITS].name, "bits");
    ck_assert_str_eq(m->params[QSGD_BUCKET].name, "bucket");
    ck_assert_str_eq(m->params[QSGD_STOCHASTIC].name, "stochastic");
    ck_assert_str_eq(m->params[QSGD_SEED].name, "seed");
    ck_assert(m->params[QSGD_BITS].def == 4 && m->params[QSGD_BITS].min == 1 && m->params[QSGD_BITS].max == 8);
    ck_assert(m->params[QSGD_BUCKET].def == 512 && m->params[QSGD_BUCKET].min == 1);
    ck_assert(m->params[QSGD_STOCHASTIC].def == 1 && m->params[QSGD_SEED].def == 0);
    ck_assert_int_eq(codec_qsgd_ops.protocol, CODEC_PROTO_DENSE_EF);
    ck_assert_uint_eq(codec_qsgd_ops.size, sizeof(codec_ops_t));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("qsgd");
    TCase *t = tcase_create("qsgd");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, qsgd_message_size_is_exact_for_every_count_bits_and_bucket);
    tcase_add_test(t, qsgd_ratio_meets_the_targets_at_bucket_512);
    tcase_add_test(t, qsgd_pack_matches_a_bitwise_reference_and_unpacks_back);
    tcase_add_test(t, qsgd_wire_format_of_a_hand_checked_bucket);
    tcase_add_test(t, qsgd_matches_the_documented_formula_and_bounds);
    tcase_add_test(t, qsgd_constant_buckets_decode_exactly);
    tcase_add_test(t, qsgd_decode_adds_into_out);
    tcase_add_test(t, qsgd_stochastic_rounding_is_unbiased);
    tcase_add_test(t, qsgd_chunks_encode_as_inside_the_whole_vector);
    tcase_add_test(t, qsgd_decode_rejects_malformed_messages_and_leaves_out_untouched);
    tcase_add_test(t, qsgd_nonfinite_buckets_travel_as_nan);
    tcase_add_test(t, qsgd_vector_encode_writes_the_bytes_of_the_scalar_one);
    tcase_add_test(t, qsgd_vector_decode_adds_the_floats_of_the_scalar_one);
    tcase_add_test(t, qsgd_round_to_nearest_matches_double_next_to_midpoints);
    tcase_add_test(t, qsgd_header_keeps_the_first_of_two_zeros);
    tcase_add_test(t, qsgd_draws_follow_the_stream_across_a_block_boundary);
    tcase_add_test(t, qsgd_draws_are_uniform_and_uncorrelated);
    tcase_add_test(t, qsgd_registry_row_and_defaults);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
