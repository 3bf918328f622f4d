/* Unit tests for the elementwise codecs none, fp16 and bf16 (compressors/cast.c) and the
 * conversions behind them (compressors/half.h).
 *
 * The fp16 references are independent of half.h: a half's value is computed with ldexp from
 * its fields, and float -> half rounding is done in double with nearbyint (round to nearest
 * even in the default rounding mode), then mapped back to bits by binary search over the
 * positive halves, whose values increase with their bit patterns. */
#include <check.h>
#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "half.h"
#include "simd.h"

extern const codec_ops_t codec_none_ops, codec_fp16_ops, codec_bf16_ops;

/* ck_assert_msg records a mark point on every pass (a write to Check's pipe in fork mode);
 * the loops of many thousands of checks use REQUIRE, which costs nothing until it fails. */
#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

/* ---- Helpers ---------------------------------------------------------------------------- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int half_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

/* The value of a finite half from its fields. */
static double ref_half_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000u) ? -v : v;
}

/* The bits of the positive finite half equal to v (which must be one). */
static uint16_t ref_half_bits_of_value(double v)
{
    uint16_t lo = 0, hi = 0x7bff;
    while (lo < hi) {
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (ref_half_value(mid) < v) lo = (uint16_t)(mid + 1);
        else hi = mid;
    }
    REQUIRE(ref_half_value(lo) == v, "%.17g is not a half", v);
    return lo;
}

/* Reference float -> half, round to nearest even, for non-NaN input. */
static uint16_t ref_half_from_float(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00u; /* Inf, or rounds past the largest half */
    if (a == 0.0) return sign;
    int e;
    frexp(a, &e);                    /* a = fr * 2^e, fr in [0.5, 1) */
    int q = e - 1 < -14 ? -24 : e - 1 - 10; /* exponent of one ulp at a */
    double r = ldexp(nearbyint(ldexp(a, -q)), q);
    if (r >= 65520.0) return sign | 0x7c00u;
    return (uint16_t)(sign | ref_half_bits_of_value(r));
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* ---- fp16 known values ------------------------------------------------------------------ */

START_TEST(fp16_converts_known_values)
{
    ck_assert_uint_eq(half_from_f32(1.0f), 0x3c00);
    ck_assert_uint_eq(half_from_f32(-2.0f), 0xc000);
    ck_assert_uint_eq(half_from_f32(0.5f), 0x3800);
    ck_assert_uint_eq(half_from_f32(0.1f), 0x2e66);
    ck_assert_uint_eq(half_from_f32(65504.0f), 0x7bff);        /* the largest half */
    ck_assert_uint_eq(half_from_f32(0x1p-14f), 0x0400);        /* the smallest normal */
    ck_assert_uint_eq(half_from_f32(0x1p-24f), 0x0001);        /* the smallest subnormal */
    ck_assert_uint_eq(half_from_f32(1023 * 0x1p-24f), 0x03ff); /* the largest subnormal */
    ck_assert_uint_eq(half_from_f32(-0x1p-24f), 0x8001);

    ck_assert_float_eq(half_to_f32(0x3c00), 1.0f);
    ck_assert_float_eq(half_to_f32(0x7bff), 65504.0f);
    ck_assert_float_eq(half_to_f32(0x0001), 0x1p-24f);
    ck_assert_float_eq(half_to_f32(0x0400), 0x1p-14f);
    ck_assert_float_eq(half_to_f32(0xc000), -2.0f);
}
END_TEST

START_TEST(fp16_overflows_to_inf_from_65520)
{
    ck_assert_uint_eq(half_from_f32(65520.0f), 0x7c00);  /* halfway to 65536: even is Inf */
    ck_assert_uint_eq(half_from_f32(-65520.0f), 0xfc00);
    ck_assert_uint_eq(half_from_f32(nextafterf(65520.0f, 0.0f)), 0x7bff);
    ck_assert_uint_eq(half_from_f32(65519.0f), 0x7bff);
    ck_assert_uint_eq(half_from_f32(1e6f), 0x7c00);
    ck_assert_uint_eq(half_from_f32(FLT_MAX), 0x7c00);
    ck_assert_uint_eq(half_from_f32(-FLT_MAX), 0xfc00);
}
END_TEST

START_TEST(fp16_keeps_inf_nan_and_signed_zero)
{
    ck_assert_uint_eq(half_from_f32(INFINITY), 0x7c00);
    ck_assert_uint_eq(half_from_f32(-INFINITY), 0xfc00);
    ck_assert(isinf(half_to_f32(0x7c00)) && half_to_f32(0x7c00) > 0);
    ck_assert(isinf(half_to_f32(0xfc00)) && half_to_f32(0xfc00) < 0);

    ck_assert_uint_eq(half_from_f32(0.0f), 0x0000);
    ck_assert_uint_eq(half_from_f32(-0.0f), 0x8000);
    ck_assert_uint_eq(bits_of(half_to_f32(0x8000)), 0x80000000u);
    ck_assert_uint_eq(bits_of(half_to_f32(0x0000)), 0x00000000u);

    /* every NaN stays NaN, with its sign: quiet, signalling, and a payload only in bits that
     * fp16 cannot hold (the low 13 bits), which truncation alone would turn into Inf */
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f801fffu,
                             0x7fffffffu, 0x7fa00000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = half_from_f32(float_of(nans[i]));
        ck_assert_msg(half_is_nan(h), "NaN %#x became %#x", nans[i], h);
        ck_assert_msg((h >> 15) == (nans[i] >> 31), "NaN %#x lost its sign", nans[i]);
    }
    ck_assert(isnan(half_to_f32(0x7e00)));
    ck_assert(isnan(half_to_f32(0x7c01)));
    ck_assert(isnan(half_to_f32(0xfe00)) && signbit(half_to_f32(0xfe00)));
}
END_TEST

START_TEST(fp16_rounds_halfway_cases_to_even)
{
    /* normal: one ulp at 1 is 2^-10 */
    ck_assert_uint_eq(half_from_f32(1.0f + 0x1p-11f), 0x3c00);          /* to even 0x3c00 */
    ck_assert_uint_eq(half_from_f32(1.0f + 3 * 0x1p-11f), 0x3c02);      /* to even 0x3c02 */
    ck_assert_uint_eq(half_from_f32(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01); /* above: up */
    ck_assert_uint_eq(half_from_f32(1.0f + 0x1p-11f - 0x1p-23f), 0x3c00); /* below: down */
    ck_assert_uint_eq(half_from_f32(-(1.0f + 0x1p-11f)), 0xbc00);
    ck_assert_uint_eq(half_from_f32(-(1.0f + 3 * 0x1p-11f)), 0xbc02);
    /* carry into the exponent: halfway between 2 - 2^-10 (odd mantissa) and 2 */
    ck_assert_uint_eq(half_from_f32(2.0f - 0x1p-11f), 0x4000);
    /* subnormal: one ulp is 2^-24 */
    ck_assert_uint_eq(half_from_f32(0x1p-25f), 0x0000);                 /* to even 0 */
    ck_assert_uint_eq(half_from_f32(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    ck_assert_uint_eq(half_from_f32(3 * 0x1p-25f), 0x0002);             /* 1.5 ulp: to 2 */
    ck_assert_uint_eq(half_from_f32(5 * 0x1p-25f), 0x0002);             /* 2.5 ulp: to 2 */
    ck_assert_uint_eq(half_from_f32(0x1p-26f), 0x0000);
    ck_assert_uint_eq(half_from_f32(-0x1p-25f), 0x8000);
    /* subnormal to normal: halfway between the largest subnormal (odd) and 2^-14 */
    ck_assert_uint_eq(half_from_f32(1023.5f * 0x1p-24f), 0x0400);
    ck_assert_uint_eq(half_from_f32(1022.5f * 0x1p-24f), 0x03fe);
}
END_TEST

/* ---- fp16 exhaustive -------------------------------------------------------------------- */

/* Checked: every one of the 65536 patterns decodes to the value its fields give (NaN for a
 * NaN pattern, with its sign), and encodes back to the same 16 bits. The one exception is a
 * signalling NaN (quiet bit 0x200 clear): it comes back as the quiet NaN with the same sign
 * and payload bits plus 0x200, because the conversion quiets every NaN. */
START_TEST(fp16_round_trips_all_65536_bit_patterns)
{
    for (uint32_t b = 0; b < 0x10000u; b++) {
        uint16_t h = (uint16_t)b;
        float f = half_to_f32(h);
        uint16_t back = half_from_f32(f);
        if (half_is_nan(h)) {
            REQUIRE(isnan(f), "%#06x does not decode to NaN", h);
            REQUIRE(!!signbit(f) == !!(h & 0x8000u), "%#06x loses its sign", h);
            REQUIRE(back == (h | 0x200u), "NaN %#06x comes back as %#06x, not %#06x", h, back,
                    h | 0x200u);
            continue;
        }
        if ((h & 0x7fffu) == 0x7c00u) {
            REQUIRE(isinf(f) && !!signbit(f) == !!(h & 0x8000u), "%#06x is not Inf", h);
        } else {
            double want = ref_half_value(h);
            REQUIRE((double)f == want, "%#06x decodes to %.9g, not %.9g", h, f, want);
            REQUIRE(!!signbit(f) == !!(h & 0x8000u), "%#06x loses its sign", h);
        }
        REQUIRE(back == h, "%#06x -> %.9g -> %#06x", h, f, back);
    }
}
END_TEST

/* Around every finite half: the midpoint to the next half up, and the floats either side of
 * it, both signs, against the double-precision reference. */
START_TEST(fp16_rounds_every_midpoint_like_the_reference)
{
    ck_assert_int_eq(fegetround(), FE_TONEAREST);
    for (uint16_t h = 0; h < 0x7c00; h++) {
        double lo = ref_half_value(h);
        double hi = h == 0x7bff ? 65536.0 : ref_half_value((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact: a half midpoint has 12 significant bits */
        REQUIRE((double)mid == (lo + hi) / 2, "midpoint of %#06x is not a float", h);
        const float probes[] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY), (float)lo};
        for (size_t i = 0; i < 4; i++)
            for (int sgn = 0; sgn < 2; sgn++) {
                float f = sgn ? -probes[i] : probes[i];
                uint16_t got = half_from_f32(f), want = ref_half_from_float(f);
                REQUIRE(got == want, "%a (%.9g): %#06x, reference %#06x", f, f, got, want);
            }
    }
}
END_TEST

START_TEST(fp16_rounds_random_floats_like_the_reference)
{
    uint64_t s = 2024;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)(rng_next(&s) >> 32);
        /* half of them in the range where halves live, the rest anywhere */
        if (i % 2) u = (u & 0x807fffffu) | ((uint32_t)(0x60 + (u >> 23) % 0x30) << 23);
        float f = float_of(u);
        if (isnan(f)) continue;
        uint16_t got = half_from_f32(f), want = ref_half_from_float(f);
        REQUIRE(got == want, "%a (%.9g): %#06x, reference %#06x", f, f, got, want);
    }
}
END_TEST

/* ---- bf16 ------------------------------------------------------------------------------- */

START_TEST(bf16_rounds_halfway_cases_to_even)
{
    ck_assert_uint_eq(bf16_from_f32(1.0f), 0x3f80);
    ck_assert_uint_eq(bf16_from_f32(1.0f + 0x1p-8f), 0x3f80);             /* to even 0x3f80 */
    ck_assert_uint_eq(bf16_from_f32(1.0f + 3 * 0x1p-8f), 0x3f82);         /* to even 0x3f82 */
    ck_assert_uint_eq(bf16_from_f32(1.0f + 0x1p-8f + 0x1p-23f), 0x3f81);  /* above: up */
    ck_assert_uint_eq(bf16_from_f32(1.0f + 3 * 0x1p-8f - 0x1p-23f), 0x3f81); /* below: down */
    ck_assert_uint_eq(bf16_from_f32(-(1.0f + 0x1p-8f)), 0xbf80);
    ck_assert_uint_eq(bf16_from_f32(-(1.0f + 3 * 0x1p-8f)), 0xbf82);
    ck_assert_uint_eq(bf16_from_f32(2.0f - 0x1p-8f), 0x4000);             /* carry */
    ck_assert_uint_eq(bf16_from_f32(FLT_MAX), 0x7f80);                    /* rounds to Inf */
    ck_assert_uint_eq(bf16_from_f32(float_of(0x00008000u)), 0x0000);     /* subnormal tie */
    ck_assert_uint_eq(bf16_from_f32(float_of(0x00018000u)), 0x0002);
    ck_assert_uint_eq(bf16_from_f32(-0.0f), 0x8000);
    ck_assert_uint_eq(bf16_from_f32(INFINITY), 0x7f80);
    ck_assert_uint_eq(bf16_from_f32(-INFINITY), 0xff80);
    ck_assert_float_eq(bf16_to_f32(0x3f80), 1.0f);
    ck_assert_float_eq(bf16_to_f32(0xc040), -3.0f);
}
END_TEST

START_TEST(bf16_keeps_nan)
{
    /* 0x7f800001 would truncate to Inf */
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t b = bf16_from_f32(float_of(nans[i]));
        ck_assert_msg(isnan(bf16_to_f32(b)), "NaN %#x became %#x", nans[i], b);
        ck_assert_msg((b >> 15) == (nans[i] >> 31), "NaN %#x lost its sign", nans[i]);
    }
}
END_TEST

/* As for fp16: all patterns come back exactly, except a signalling NaN, which comes back
 * quiet (0x40 set) with its sign and payload. */
START_TEST(bf16_round_trips_all_65536_bit_patterns)
{
    for (uint32_t b = 0; b < 0x10000u; b++) {
        float f = bf16_to_f32((uint16_t)b);
        REQUIRE(bits_of(f) == b << 16, "%#06x decodes to %#x", b, bits_of(f));
        uint16_t back = bf16_from_f32(f);
        if (isnan(f))
            REQUIRE(back == (b | 0x40u), "NaN %#06x comes back as %#06x", b, back);
        else
            REQUIRE(back == b, "%#06x comes back as %#06x", b, back);
    }
}
END_TEST

START_TEST(bf16_rounds_random_floats_like_the_reference)
{
    /* reference: the two neighbouring bf16 values in double; nearest, ties to even */
    uint64_t s = 99;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)(rng_next(&s) >> 32);
        if ((u & 0x7f800000u) == 0x7f800000u) continue;
        float f = float_of(u);
        uint32_t down = u & 0xffff0000u, up = down + 0x10000u;
        double dd = fabs((double)float_of(down)), du = fabs((double)float_of(up));
        if ((up & 0x7f800000u) == 0x7f800000u) du = ldexp(1.0, 128); /* Inf: 2^128 */
        double a = fabs((double)f);
        uint16_t want;
        if (a - dd < du - a) want = (uint16_t)(down >> 16);
        else if (a - dd > du - a) want = (uint16_t)(up >> 16);
        else want = (uint16_t)(((down >> 16) & 1u) ? up >> 16 : down >> 16);
        uint16_t got = bf16_from_f32(f);
        REQUIRE(got == want, "%a: %#06x, reference %#06x", f, got, want);
    }
}
END_TEST

/* ---- codecs ----------------------------------------------------------------------------- */

typedef struct {
    const codec_ops_t *ops;
    size_t elem_bytes;
    uint16_t (*to)(float);
    float (*from)(uint16_t);
} cast_case_t;

static uint16_t fp16_to(float f) { return half_from_f32(f); }
static float fp16_from(uint16_t h) { return half_to_f32(h); }
static uint16_t bf16_to(float f) { return bf16_from_f32(f); }
static float bf16_from(uint16_t h) { return bf16_to_f32(h); }

static const cast_case_t cast_cases[] = {
    {&codec_none_ops, 4, NULL, NULL},
    {&codec_fp16_ops, 2, fp16_to, fp16_from},
    {&codec_bf16_ops, 2, bf16_to, bf16_from},
};

START_TEST(cast_codec_round_trip_adds_the_converted_values)
{
    const cast_case_t *c = &cast_cases[_i];
    static const size_t sizes[] = {0, 1, 7, 1000, 4099};
    uint64_t s = 5 + (uint64_t)_i;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        size_t n = sizes[a];
        float *in = malloc((n + 1) * sizeof *in), *out = malloc((n + 1) * sizeof *out);
        void *msg = malloc(c->ops->max_bytes(NULL, n) + 1);
        ck_assert(in && out && msg);
        for (size_t i = 0; i < n; i++) {
            /* magnitudes in [2^-11, 2^9): normal in fp16, so the relative bound holds */
            double m = 0.5 + (double)(rng_next(&s) >> 40) * 0x1p-25;
            in[i] = (float)ldexp(rng_next(&s) & 1 ? -m : m, (int)(rng_next(&s) % 20) - 10);
            out[i] = 1.0f;
        }
        ck_assert_uint_eq(c->ops->max_bytes(NULL, n), n * c->elem_bytes);
        ck_assert_uint_eq(c->ops->scratch_bytes(NULL, n), 0);
        size_t bytes = c->ops->encode(NULL, NULL, in, n, msg, NULL);
        ck_assert_uint_eq(bytes, n * c->elem_bytes);
        ck_assert_int_eq(c->ops->decode_add(NULL, msg, bytes, n, out, NULL), TERSE_OK);
        for (size_t i = 0; i < n; i++) {
            float dec = c->to ? c->from(c->to(in[i])) : in[i];
            REQUIRE(out[i] == 1.0f + dec, "%s n=%zu [%zu]: %a, want 1 + %a", c->ops->name, n, i,
                    out[i], dec);
            /* the conversion error is within half an ulp: 2^-11 (fp16) or 2^-8 (bf16) relative */
            double rel = c->elem_bytes == 4 ? 0.0 : c->ops == &codec_fp16_ops ? 0x1p-11 : 0x1p-8;
            REQUIRE(fabs((double)dec - in[i]) <= rel * fabs((double)in[i]), "%s: %a decodes to %a",
                    c->ops->name, in[i], dec);
        }
        free(in);
        free(out);
        free(msg);
    }
}
END_TEST

START_TEST(cast_codec_describes_itself_as_dense)
{
    const cast_case_t *c = &cast_cases[_i];
    ck_assert_int_eq(c->ops->protocol, CODEC_PROTO_DENSE);
    ck_assert_uint_eq(c->ops->max_bytes(NULL, 1), c->elem_bytes);
    ck_assert_uint_eq(c->ops->size, sizeof(codec_ops_t));
}
END_TEST

START_TEST(cast_decode_rejects_a_wrong_byte_count_and_leaves_out_untouched)
{
    const cast_case_t *c = &cast_cases[_i];
    enum { N = 8 };
    float in[N], out[N];
    uint32_t msg[N + 4] = {0}; /* uint32_t: aligned for the codecs' float and uint16_t views */
    for (int i = 0; i < N; i++) { in[i] = (float)i; out[i] = 7.0f; }
    size_t bytes = c->ops->encode(NULL, NULL, in, N, msg, NULL);
    const size_t wrong[] = {0, 1, bytes - 1, bytes + 1, bytes + c->elem_bytes, bytes / 2};
    for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++) {
        ck_assert_msg(c->ops->decode_add(NULL, msg, wrong[w], N, out, NULL) == TERSE_ERR_MISMATCH,
                      "%s accepted %zu bytes for %d elements", c->ops->name, wrong[w], N);
    }
    for (int i = 0; i < N; i++) ck_assert_float_eq(out[i], 7.0f);
    /* an empty layer takes exactly 0 bytes */
    ck_assert_int_eq(c->ops->decode_add(NULL, msg, 0, 0, out, NULL), TERSE_OK);
    ck_assert_int_eq(c->ops->decode_add(NULL, msg, c->elem_bytes, 0, out, NULL), TERSE_ERR_MISMATCH);
}
END_TEST


/* ---- Vector kernels --------------------------------------------------------------------- */

/* Floats whose high 16 bits take all 65536 values and whose low 16 bits take the patterns
 * rounding depends on (bf16 rounds on bit 15 and the bits below it; fp16 on bit 12 of a
 * normal and on more for a subnormal), plus random ones. */
static float *kernel_inputs(size_t *n_p)
{
    static const uint16_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000,
                                    0x3000, 0x7fff, 0x8000, 0x8001, 0xc000, 0xf000, 0xffff};
    const size_t n_low = sizeof lows / sizeof lows[0] + 18, n = 65536 * n_low;
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    uint64_t s = 0x1234567;
    for (size_t hi = 0; hi < 65536; hi++)
        for (size_t j = 0; j < n_low; j++) {
            uint32_t lo = j < sizeof lows / sizeof lows[0] ? lows[j] : (uint32_t)(rng_next(&s) & 0xffff);
            v[hi * n_low + j] = float_of((uint32_t)hi << 16 | lo);
        }
    *n_p = n;
    return v;
}

/* The codec at the scalar level and at the CPU's best give the same message bytes and the
 * same sums bit for bit, at lengths that leave every tail size. Without AVX2 both runs are
 * scalar and the test only checks the scalar path against itself. */
START_TEST(cast_vector_kernels_equal_the_scalar_ones)
{
    const cast_case_t *c = &cast_cases[_i];
    size_t n;
    float *in = kernel_inputs(&n);
    unsigned char *m0 = malloc(n * c->elem_bytes), *m1 = malloc(n * c->elem_bytes);
    float *o0 = malloc(n * sizeof(float)), *o1 = malloc(n * sizeof(float));
    ck_assert(m0 && m1 && o0 && o1);
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++) o0[i] = (float)((double)(rng_next(&s) >> 11) * 0x1.0p-50 - 2048.0);
    memcpy(o1, o0, n * sizeof(float));
    for (size_t cut = 0; cut < 17; cut++) {
        const size_t len = n - cut;
        simd_set_level(SIMD_SCALAR);
        ck_assert_uint_eq(c->ops->encode(NULL, NULL, in, len, m0, NULL), len * c->elem_bytes);
        simd_set_level(SIMD_AVX2);
        ck_assert_uint_eq(c->ops->encode(NULL, NULL, in, len, m1, NULL), len * c->elem_bytes);
        ck_assert_msg(memcmp(m0, m1, len * c->elem_bytes) == 0, "%s encode differs at length %zu", c->ops->name, len);
        /* decoding the message adds every 16-bit pattern (NaNs included) to out */
        simd_set_level(SIMD_SCALAR);
        ck_assert_int_eq(c->ops->decode_add(NULL, m0, len * c->elem_bytes, len, o0, NULL), TERSE_OK);
        simd_set_level(SIMD_AVX2);
        ck_assert_int_eq(c->ops->decode_add(NULL, m0, len * c->elem_bytes, len, o1, NULL), TERSE_OK);
        ck_assert_msg(memcmp(o0, o1, len * sizeof(float)) == 0, "%s decode differs at length %zu", c->ops->name, len);
    }
    simd_set_level(simd_cpu_level());
    free(in); free(m0); free(m1); free(o0); free(o1);
}
END_TEST

static Suite *cast_suite(void)
{
    Suite *s = suite_create("cast");

    TCase *tc_fp16 = tcase_create("fp16");
    tcase_set_timeout(tc_fp16, 60);
    tcase_add_test(tc_fp16, fp16_converts_known_values);
    tcase_add_test(tc_fp16, fp16_overflows_to_inf_from_65520);
    tcase_add_test(tc_fp16, fp16_keeps_inf_nan_and_signed_zero);
    tcase_add_test(tc_fp16, fp16_rounds_halfway_cases_to_even);
    tcase_add_test(tc_fp16, fp16_round_trips_all_65536_bit_patterns);
    tcase_add_test(tc_fp16, fp16_rounds_every_midpoint_like_the_reference);
    tcase_add_test(tc_fp16, fp16_rounds_random_floats_like_the_reference);
    suite_add_tcase(s, tc_fp16);

    TCase *tc_bf16 = tcase_create("bf16");
    tcase_set_timeout(tc_bf16, 60);
    tcase_add_test(tc_bf16, bf16_rounds_halfway_cases_to_even);
    tcase_add_test(tc_bf16, bf16_keeps_nan);
    tcase_add_test(tc_bf16, bf16_round_trips_all_65536_bit_patterns);
    tcase_add_test(tc_bf16, bf16_rounds_random_floats_like_the_reference);
    suite_add_tcase(s, tc_bf16);

    TCase *tc_codec = tcase_create("codec");
    int n = (int)(sizeof cast_cases / sizeof cast_cases[0]);
    tcase_add_loop_test(tc_codec, cast_codec_round_trip_adds_the_converted_values, 0, n);
    tcase_add_loop_test(tc_codec, cast_codec_describes_itself_as_dense, 0, n);
    tcase_add_loop_test(tc_codec, cast_decode_rejects_a_wrong_byte_count_and_leaves_out_untouched,
                        0, n);
    tcase_add_loop_test(tc_codec, cast_vector_kernels_equal_the_scalar_ones, 0, n);
    tcase_set_timeout(tc_codec, 120);
    suite_add_tcase(s, tc_codec);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cast_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
