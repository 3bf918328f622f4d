/* Unit tests for TopK (compressors/topk.c): the k a configuration keeps, the selection
 * (exactly k, largest magnitudes, ties by lower index, indices increasing), the codec's
 * encode/decode round trip, and the validation of peer messages.
 *
 * The reference for the selection is a brute force: sort the indices by (-|v|, index) and
 * keep the first k, then sort those by index. The vector kernels are checked against it at
 * both SIMD levels, each forced in turn: the scalar one is the reference the AVX2 one must
 * match bit for bit. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "simd.h"
#include "topk.h"

extern const codec_ops_t codec_topk_ops;

/* ck_assert_msg records a mark point on every pass (a write to Check's pipe in fork mode);
 * the loops of many thousands of checks use REQUIRE, which costs nothing until it fails. */
#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

/* ---- Helpers ---------------------------------------------------------------------------- */

/* xorshift64*: deterministic across platforms, so a failing seed reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* Random values of several kinds, so that ties and extreme magnitudes occur: uniform in
 * [-1, 1], a few quantised levels (many exact ties of both signs), zeros of both signs, and
 * magnitudes spread over the whole float range. */
static void fill_random(float *v, size_t n, uint64_t *s, int kind)
{
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: v[i] = (float)(2.0 * rng_unit(s) - 1.0); break;
        case 1: v[i] = (float)((int)(rng_next(s) % 9) - 4) * 0.25f; break;
        case 2: {
            uint64_t r = rng_next(s) % 4;
            v[i] = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? 1.0f : -1.0f;
            break;
        }
        default: {
            /* any finite bit pattern */
            uint32_t u;
            do u = (uint32_t)(rng_next(s) >> 32);
            while ((u & 0x7f800000u) == 0x7f800000u);
            memcpy(&v[i], &u, sizeof u);
            break;
        }
        }
    }
}

static const float *ref_v; /* qsort has no context argument in C11 */

/* The magnitude key, the bits of |x|: the order of |x| for numbers, -0 equal to +0, and a
 * NaN above +Inf (how topk ranks entries that nonfinite=pass lets through). */
static uint32_t key_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

static int by_magnitude_then_index(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    uint32_t x = key_of(ref_v[i]), y = key_of(ref_v[j]);
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j ? 1 : 0;
}

static int by_index(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j ? 1 : 0;
}

/* Brute-force TopK: writes min(k, n) indices, increasing, to idx; returns how many. */
static size_t ref_topk(const float *v, size_t n, size_t k, uint32_t *idx)
{
    uint32_t *all = malloc((n ? n : 1) * sizeof *all);
    ck_assert_ptr_nonnull(all);
    for (size_t i = 0; i < n; i++) all[i] = (uint32_t)i;
    ref_v = v;
    qsort(all, n, sizeof *all, by_magnitude_then_index);
    size_t m = k < n ? k : n;
    memcpy(idx, all, m * sizeof *idx);
    qsort(idx, m, sizeof *idx, by_index);
    free(all);
    return m;
}

/* Parameters of topk as the configuration stores them: density, k (NAN = not given). */
static void topk_params_of(double density, double k, double p[TERSE_MAX_PARAMS])
{
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) p[i] = NAN;
    p[0] = density;
    p[1] = k;
}

/* Compares topk_select(v, n, k) with the brute force; on a difference, says where. */
static void check_select_against_reference(const float *v, size_t n, size_t k, const char *what)
{
    size_t cap = n ? n : 1;
    uint32_t *idx = malloc(cap * sizeof *idx), *ref = malloc(cap * sizeof *ref);
    float *val = malloc(cap * sizeof *val);
    ck_assert(idx && ref && val);
    size_t m = topk_select(v, n, k, idx, val);
    size_t mr = ref_topk(v, n, k, ref);
    ck_assert_msg(m == mr, "%s: n=%zu k=%zu kept %zu, reference %zu", what, n, k, m, mr);
    for (size_t j = 0; j < m; j++) {
        REQUIRE(idx[j] == ref[j], "%s: n=%zu k=%zu entry %zu: index %u, reference %u", what, n,
                k, j, idx[j], ref[j]);
        REQUIRE(memcmp(&val[j], &v[idx[j]], sizeof(float)) == 0,
                "%s: n=%zu k=%zu entry %zu: value is not v[%u]", what, n, k, j, idx[j]);
    }
    free(idx);
    free(ref);
    free(val);
}

/* ---- topk_k ----------------------------------------------------------------------------- */

START_TEST(topk_k_with_k_clamps_to_count)
{
    double p[TERSE_MAX_PARAMS];
    topk_params_of(NAN, 5, p);
    ck_assert_uint_eq(topk_k(p, 10), 5);
    ck_assert_uint_eq(topk_k(p, 5), 5);
    ck_assert_uint_eq(topk_k(p, 3), 3);
    ck_assert_uint_eq(topk_k(p, 1), 1);
    topk_params_of(NAN, 4294967295.0, p);
    ck_assert_uint_eq(topk_k(p, 1000), 1000);
}
END_TEST

START_TEST(topk_k_with_density_is_at_least_one_and_floors)
{
    double p[TERSE_MAX_PARAMS];
    static const double densities[] = {0.001, 0.01, 0.07, 0.29, 0.3, 0.5, 0.999, 1.0};
    static const size_t counts[] = {1, 2, 7, 99, 100, 101, 150, 1000, 4096, 1000003};
    for (size_t a = 0; a < sizeof densities / sizeof densities[0]; a++)
        for (size_t b = 0; b < sizeof counts / sizeof counts[0]; b++) {
            topk_params_of(densities[a], NAN, p);
            double prod = floor(densities[a] * (double)counts[b]);
            size_t want = prod < 1.0 ? 1 : (size_t)prod;
            if (want > counts[b]) want = counts[b];
            ck_assert_msg(topk_k(p, counts[b]) == want, "density=%g count=%zu: k=%zu, want %zu",
                          densities[a], counts[b], topk_k(p, counts[b]), want);
        }
    topk_params_of(0.01, NAN, p);
    ck_assert_uint_eq(topk_k(p, 1000), 10);
    ck_assert_uint_eq(topk_k(p, 150), 1);
    ck_assert_uint_eq(topk_k(p, 99), 1);
}
END_TEST

START_TEST(topk_k_of_an_empty_layer_is_zero)
{
    double p[TERSE_MAX_PARAMS];
    topk_params_of(0.5, NAN, p);
    ck_assert_uint_eq(topk_k(p, 0), 0);
    topk_params_of(NAN, 3, p);
    ck_assert_uint_eq(topk_k(p, 0), 0);
    topk_params_of(NAN, NAN, p);
    ck_assert_uint_eq(topk_k(p, 0), 0);
}
END_TEST

START_TEST(topk_k_without_parameters_uses_density_one_percent)
{
    double p[TERSE_MAX_PARAMS];
    topk_params_of(NAN, NAN, p);
    ck_assert_uint_eq(topk_k(p, 1000), 10);
    ck_assert_uint_eq(topk_k(p, 50), 1);
}
END_TEST

START_TEST(topk_check_rejects_density_and_k_together)
{
    double p[TERSE_MAX_PARAMS];
    topk_params_of(0.1, 5, p);
    ck_assert_ptr_nonnull(codec_topk_ops.check);
    ck_assert_int_eq(codec_topk_ops.check(p, 100), TERSE_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "density"));
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "k="));
    topk_params_of(0.1, NAN, p);
    ck_assert_int_eq(codec_topk_ops.check(p, 100), TERSE_OK);
    topk_params_of(NAN, 5, p);
    ck_assert_int_eq(codec_topk_ops.check(p, 100), TERSE_OK);
}
END_TEST

/* ---- topk_select ------------------------------------------------------------------------ */

START_TEST(topk_keeps_the_largest_magnitudes)
{
    const float v[] = {0.5f, -3.0f, 1.0f, 2.5f, -0.25f, 4.0f, -1.5f};
    uint32_t idx[7];
    float val[7];
    ck_assert_uint_eq(topk_select(v, 7, 3, idx, val), 3);
    ck_assert_uint_eq(idx[0], 1);
    ck_assert_uint_eq(idx[1], 3);
    ck_assert_uint_eq(idx[2], 5);
    ck_assert_float_eq(val[0], -3.0f);
    ck_assert_float_eq(val[1], 2.5f);
    ck_assert_float_eq(val[2], 4.0f);
}
END_TEST

START_TEST(topk_breaks_ties_by_lower_index)
{
    enum { N = 1000 };
    static float v[N];
    uint32_t idx[N];
    float val[N];
    for (size_t i = 0; i < N; i++) v[i] = 1.0f;
    for (size_t k = 1; k <= N; k += 37) {
        ck_assert_uint_eq(topk_select(v, N, k, idx, val), k);
        for (size_t j = 0; j < k; j++) REQUIRE(idx[j] == j, "k=%zu: entry %zu is %u", k, j, idx[j]);
    }
    /* A few larger entries at high indices come first; the rest of k is the lowest ties. */
    v[997] = 2.0f;
    v[500] = -2.0f;
    ck_assert_uint_eq(topk_select(v, N, 5, idx, val), 5);
    const uint32_t want[] = {0, 1, 2, 500, 997};
    for (size_t j = 0; j < 5; j++) ck_assert_uint_eq(idx[j], want[j]);
}
END_TEST

START_TEST(topk_treats_opposite_signs_of_equal_magnitude_as_ties)
{
    const float v[] = {1.0f, -2.0f, 2.0f, -2.0f, 0.5f, 2.0f};
    uint32_t idx[6];
    float val[6];
    ck_assert_uint_eq(topk_select(v, 6, 2, idx, val), 2);
    ck_assert_uint_eq(idx[0], 1);
    ck_assert_uint_eq(idx[1], 2);
    ck_assert_float_eq(val[0], -2.0f);
    ck_assert_float_eq(val[1], 2.0f);
    ck_assert_uint_eq(topk_select(v, 6, 3, idx, val), 3);
    ck_assert_uint_eq(idx[2], 3);
    ck_assert_float_eq(val[2], -2.0f);
    /* Negative and positive zero are the same magnitude too. */
    const float z[] = {-0.0f, 0.0f, -0.0f, 0.0f};
    ck_assert_uint_eq(topk_select(z, 4, 2, idx, val), 2);
    ck_assert_uint_eq(idx[0], 0);
    ck_assert_uint_eq(idx[1], 1);
    ck_assert(signbit(val[0]) && !signbit(val[1]));
}
END_TEST

START_TEST(topk_of_k_zero_keeps_nothing_and_k_above_n_keeps_all)
{
    const float v[] = {3.0f, -1.0f, 2.0f};
    uint32_t idx[3] = {99, 99, 99};
    float val[3];
    ck_assert_uint_eq(topk_select(v, 3, 0, idx, val), 0);
    ck_assert_uint_eq(idx[0], 99);
    ck_assert_uint_eq(topk_select(v, 3, 3, idx, val), 3);
    ck_assert_uint_eq(topk_select(v, 3, 100, idx, val), 3);
    for (uint32_t j = 0; j < 3; j++) {
        ck_assert_uint_eq(idx[j], j);
        ck_assert_float_eq(val[j], v[j]);
    }
    ck_assert_uint_eq(topk_select(v, 0, 5, idx, val), 0);
}
END_TEST

START_TEST(topk_matches_brute_force_on_random_vectors)
{
    static const size_t sizes[] = {0, 1, 2, 3, 7, 31, 101, 1009, 4099, 65537};
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        size_t n = sizes[a];
        float *v = malloc((n ? n : 1) * sizeof *v);
        ck_assert_ptr_nonnull(v);
        for (int kind = 0; kind < 4; kind++)
            for (int rep = 0; rep < 6; rep++) {
                fill_random(v, n, &s, kind);
                /* k over the whole range, including 0, 1, n-1, n and beyond */
                size_t k = rep == 0 ? 0 : rep == 1 ? 1 : rep == 2 ? n : rep == 3 ? n + 3
                         : rep == 4 && n > 1 ? n - 1 : (size_t)(rng_next(&s) % (n + 1));
                char what[64];
                snprintf(what, sizeof what, "kind %d rep %d", kind, rep);
                check_select_against_reference(v, n, k, what);
            }
        free(v);
    }
}
END_TEST

START_TEST(topk_matches_brute_force_on_a_million_elements)
{
    const size_t n = 1000003; /* prime, above 2^19 */
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    uint64_t s = 12345;
    for (int kind = 0; kind < 4; kind++) {
        fill_random(v, n, &s, kind);
        size_t k = 1 + (size_t)(rng_next(&s) % (n / 10));
        char what[64];
        snprintf(what, sizeof what, "1M kind %d", kind);
        check_select_against_reference(v, n, k, what);
    }
    free(v);
}
END_TEST

/* ---- Kernels: both SIMD levels, the sampled path and its fallbacks --------------------- */

/* Values the kernels must order exactly: NaNs (quiet, signalling, negative), infinities,
 * both zeros, denormals, the largest finite magnitude. */
static const uint32_t special_bits[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u,
                                        0xff800000u, 0x00000000u, 0x80000000u, 0x00000001u,
                                        0x807fffffu, 0x7f7fffffu, 0xff7fffffu};
#define N_SPECIAL (sizeof special_bits / sizeof special_bits[0])
#define N_KINDS 8

/* fill_random's four kinds, then: uniform with 2 % special values; one value everywhere;
 * 99 % zeros of both signs and a few uniform; a normal-like bell whose scale drifts along
 * the vector (as the bench's gradients do). */
static void fill_kernel(float *v, size_t n, uint64_t *s, int kind)
{
    if (kind < 4) {
        fill_random(v, n, s, kind);
        return;
    }
    const float one = (float)(rng_unit(s) * 4.0 - 2.0);
    for (size_t i = 0; i < n; i++) {
        const double u = rng_unit(s);
        switch (kind) {
        case 4:
            if (rng_next(s) % 50 == 0) {
                memcpy(&v[i], &special_bits[rng_next(s) % N_SPECIAL], sizeof v[i]);
            } else {
                v[i] = (float)(2.0 * u - 1.0);
            }
            break;
        case 5: v[i] = one; break;
        case 6:
            v[i] = rng_next(s) % 100 == 0 ? (float)(2.0 * u - 1.0) : (i & 1 ? -0.0f : 0.0f);
            break;
        default:
            v[i] = (float)((u + rng_unit(s) + rng_unit(s) - 1.5) * (2.0 + sin(1e-3 * (double)i)));
            break;
        }
    }
}

#define GUARD 64
#define GUARD_BYTE 0xa5

/* Selects k of v[0..n) at each SIMD level, through topk_select_scratch (t = NULL) or
 * topk_select_above(*t) with scratch_bytes of scratch, and compares each with the brute
 * force, so the two levels also agree with each other; checks that nothing past
 * scratch_bytes was written. */
static void check_kernel_levels(const float *v, size_t n, size_t k, const uint32_t *t,
                                size_t scratch_bytes, const uint32_t *ref, size_t mr,
                                const char *what)
{
    size_t cap = n ? n : 1;
    uint32_t *idx = malloc(cap * sizeof *idx);
    float *val = malloc(cap * sizeof *val);
    unsigned char *scratch = malloc(scratch_bytes + GUARD);
    ck_assert(idx && val && scratch);
    static const simd_level_t levels[] = {SIMD_SCALAR, SIMD_AVX2};
    for (int l = 0; l < 2; l++) {
        simd_level_t got = simd_set_level(levels[l]);
        memset(scratch, GUARD_BYTE, scratch_bytes + GUARD);
        size_t m = t ? topk_select_above(v, n, k, *t, idx, val, scratch, scratch_bytes)
                     : topk_select_scratch(v, n, k, idx, val, scratch, scratch_bytes);
        REQUIRE(m == mr, "%s %s: n=%zu k=%zu kept %zu, reference %zu", what, simd_name(got), n,
                k, m, mr);
        for (size_t j = 0; j < m; j++) {
            REQUIRE(idx[j] == ref[j], "%s %s: n=%zu k=%zu entry %zu: index %u, reference %u",
                    what, simd_name(got), n, k, j, idx[j], ref[j]);
            REQUIRE(memcmp(&val[j], &v[idx[j]], sizeof(float)) == 0,
                    "%s %s: n=%zu k=%zu entry %zu: value is not v[%u]", what, simd_name(got), n,
                    k, j, idx[j]);
        }
        for (size_t b = 0; b < GUARD; b++)
            REQUIRE(scratch[scratch_bytes + b] == GUARD_BYTE,
                    "%s %s: n=%zu k=%zu wrote past its %zu scratch bytes", what, simd_name(got),
                    n, k, scratch_bytes);
    }
    simd_set_level(simd_cpu_level());
    free(idx);
    free(val);
    free(scratch);
}

START_TEST(topk_select_above_is_exact_for_any_guess_at_both_levels)
{
    /* every t (too low: the candidates overflow; too high: fewer than k) and every scratch
     * size (none, below k, around the candidate count) gives the exact top-k; the sizes
     * cover the vector kernels' tails and blocks */
    static const size_t sizes[] = {0, 1, 7, 8, 9, 31, 32, 33, 40, 63, 64, 65, 100, 257, 1000, 4099};
    uint64_t s = 0x5eed;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        const size_t n = sizes[a];
        float *v = malloc((n ? n : 1) * sizeof *v);
        uint32_t *ref = malloc((n ? n : 1) * sizeof *ref);
        ck_assert(v && ref);
        for (int kind = 0; kind < N_KINDS; kind++) {
            fill_kernel(v, n, &s, kind);
            const size_t ks[] = {1, n / 3, n > 1 ? n - 1 : 1, n, n + 1,
                                 1 + (size_t)(rng_next(&s) % (n + 1))};
            for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
                const size_t k = ks[b], mr = ref_topk(v, n, k, ref);
                uint32_t T = 0; /* the k-th largest key */
                for (size_t j = 0; j < mr; j++)
                    if (j == 0 || key_of(v[ref[j]]) < T) T = key_of(v[ref[j]]);
                const uint32_t ts[] = {0, 1, T - 1, T, T + 1, n ? key_of(v[rng_next(&s) % n]) : 5,
                                       0x7f800000u, 0x7f800001u, 0x7fffffffu, 0x80000000u,
                                       0xffffffffu};
                for (size_t c = 0; c < sizeof ts / sizeof ts[0]; c++) {
                    size_t cand = 0;
                    for (size_t i = 0; i < n; i++) cand += key_of(v[i]) >= ts[c];
                    const size_t sbs[] = {0, 8 * (k ? k - 1 : 0), 8 * k, 8 * (cand ? cand - 1 : 0),
                                          8 * cand, 8 * cand + 4, 8 * (cand + 9), 8 * n};
                    for (size_t d = 0; d < sizeof sbs / sizeof sbs[0]; d++) {
                        char what[96];
                        snprintf(what, sizeof what, "kind %d t=%#x scratch %zu", kind, ts[c],
                                 sbs[d]);
                        check_kernel_levels(v, n, k, &ts[c], sbs[d], ref, mr, what);
                    }
                }
            }
        }
        free(v);
        free(ref);
    }
}
END_TEST

START_TEST(topk_sampled_selection_matches_brute_force_at_both_levels)
{
    /* sizes from the smallest that samples, with odd tails; densities from one entry to
     * past the last that samples; all kinds, NaN/Inf/-0, all-equal and mostly-zero vectors
     * included (those two overflow the candidates and fall back) */
    static const size_t sizes[] = {16384, 16391, 40001, 65567, 262153, 1000003};
    static const double dens[] = {0.0, 0.001, 0.01, 0.05, 0.2, 0.3};
    uint64_t s = 0xfeed;
    int sampled = 0;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
        const size_t n = sizes[a];
        float *v = malloc(n * sizeof *v);
        uint32_t *ref = malloc(n * sizeof *ref);
        ck_assert(v && ref);
        for (int kind = 0; kind < N_KINDS; kind++) {
            if (n > 300000 && kind % 3 != 1) continue; /* the brute force sorts: a few suffice */
            fill_kernel(v, n, &s, kind);
            for (size_t b = 0; b < sizeof dens / sizeof dens[0]; b++) {
                size_t k = (size_t)(dens[b] * (double)n);
                k = k ? k : 1;
                const size_t mr = ref_topk(v, n, k, ref), sb = topk_scratch_size(n, k);
                sampled |= sb > 0;
                char what[64];
                snprintf(what, sizeof what, "sampled kind %d", kind);
                check_kernel_levels(v, n, k, NULL, sb, ref, mr, what);
                /* one byte short of the scratch it asks for: the four passes, same result */
                if (sb) check_kernel_levels(v, n, k, NULL, sb - 1, ref, mr, "short scratch");
            }
        }
        free(v);
        free(ref);
    }
    ck_assert_msg(sampled, "no case took the sampled path");
}
END_TEST

START_TEST(topk_scratch_is_order_k_and_bounded)
{
    ck_assert_uint_eq(topk_scratch_size(1000, 10), 0);         /* small: the four passes */
    ck_assert_uint_eq(topk_scratch_size(1u << 24, 1u << 23), 0); /* dense: the four passes */
    const size_t n = 1u << 24, k = n / 100, sb = topk_scratch_size(n, k);
    ck_assert_msg(sb >= 8 * k && sb <= 8 * k * 3 / 2, "scratch %zu for k=%zu", sb, k);
    ck_assert_uint_le(topk_scratch_size(n, 1), 256 * 1024);
    /* the codec asks for it, and its message is the same with or without */
    double p[TERSE_MAX_PARAMS];
    topk_params_of(0.01, NAN, p);
    ck_assert_uint_eq(codec_topk_ops.scratch_bytes(p, n), sb);
}
END_TEST

START_TEST(topk_codec_message_is_the_same_with_and_without_scratch)
{
    const size_t n = 100003;
    double p[TERSE_MAX_PARAMS];
    topk_params_of(0.01, NAN, p);
    const size_t mb = codec_topk_ops.max_bytes(p, n), sb = codec_topk_ops.scratch_bytes(p, n);
    ck_assert_uint_gt(sb, 0);
    float *v = malloc(n * sizeof *v);
    void *a = malloc(mb), *b = malloc(mb), *scratch = malloc(sb);
    ck_assert(v && a && b && scratch);
    uint64_t s = 99;
    for (int kind = 0; kind < N_KINDS; kind++) {
        fill_kernel(v, n, &s, kind);
        size_t ba = codec_topk_ops.encode(p, NULL, v, n, a, scratch);
        size_t bb = codec_topk_ops.encode(p, NULL, v, n, b, NULL);
        ck_assert_uint_eq(ba, bb);
        ck_assert_msg(memcmp(a, b, ba) == 0, "kind %d: messages differ", kind);
    }
    free(v);
    free(a);
    free(b);
    free(scratch);
}
END_TEST

/* ---- codec round trip ------------------------------------------------------------------- */

START_TEST(topk_codec_round_trip_gives_the_kept_entries_and_zeros_elsewhere)
{
    static const size_t sizes[] = {0, 1, 7, 101, 1000, 65537};
    static const double densities[] = {0.001, 0.01, 0.25, 1.0};
    uint64_t s = 777;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < 2 * sizeof densities / sizeof densities[0]; b++) {
            size_t n = sizes[a];
            double p[TERSE_MAX_PARAMS];
            if (b % 2 == 0) topk_params_of(densities[b / 2], NAN, p);
            else topk_params_of(NAN, (double)(1 + rng_next(&s) % 50), p);
            size_t k = topk_k(p, n), mb = codec_topk_ops.max_bytes(p, n);
            ck_assert_uint_eq(mb, 4 + 8 * k);
            float *v = malloc((n + 1) * sizeof *v), *out = calloc(n + 1, sizeof *out);
            uint32_t *ref = malloc((n + 1) * sizeof *ref);
            void *msg = malloc(mb);
            void *scratch = malloc(codec_topk_ops.scratch_bytes(p, n) + 1);
            ck_assert(v && out && ref && msg && scratch);
            fill_random(v, n, &s, (int)(b % 4));
            size_t bytes = codec_topk_ops.encode(p, NULL, v, n, msg, scratch);
            ck_assert_uint_eq(bytes, 4 + 8 * k);
            uint32_t hdr;
            memcpy(&hdr, msg, 4);
            ck_assert_uint_eq(hdr, k);
            ck_assert_int_eq(codec_topk_ops.decode_add(p, msg, bytes, n, out, NULL), TERSE_OK);
            size_t m = ref_topk(v, n, k, ref);
            ck_assert_uint_eq(m, k);
            size_t j = 0;
            for (size_t i = 0; i < n; i++) {
                if (j < m && ref[j] == i) {
                    REQUIRE(out[i] == v[i], "n=%zu: kept entry %zu decodes to %g, not %g", n, i,
                            out[i], v[i]);
                    j++;
                } else {
                    REQUIRE(out[i] == 0.0f, "n=%zu: dropped entry %zu decodes to %g", n, i, out[i]);
                }
            }
            free(v);
            free(out);
            free(ref);
            free(msg);
            free(scratch);
        }
}
END_TEST

START_TEST(topk_decode_adds_into_out)
{
    const float v[] = {0.0f, 5.0f, 0.0f, -6.0f};
    float out[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    double p[TERSE_MAX_PARAMS];
    topk_params_of(NAN, 2, p);
    uint32_t msg[1 + 2 * 2];
    size_t bytes = codec_topk_ops.encode(p, NULL, v, 4, msg, NULL);
    ck_assert_int_eq(codec_topk_ops.decode_add(p, msg, bytes, 4, out, NULL), TERSE_OK);
    ck_assert_float_eq(out[0], 1.0f);
    ck_assert_float_eq(out[1], 6.0f);
    ck_assert_float_eq(out[2], 1.0f);
    ck_assert_float_eq(out[3], -5.0f);
}
END_TEST

START_TEST(topk_decode_rejects_a_message_above_max_bytes)
{
    /* k = 3 entries is well formed for count 10, but the layer's topk:k=2 never sends it */
    uint32_t m[1 + 3 + 3];
    float vals[3] = {1, 2, 3};
    m[0] = 3;
    m[1] = 0; m[2] = 4; m[3] = 9;
    memcpy(&m[4], vals, sizeof vals);
    float out[10] = {0};
    double p[TERSE_MAX_PARAMS];
    topk_params_of(NAN, 2, p);
    ck_assert_int_eq(codec_topk_ops.decode_add(p, m, sizeof m, 10, out, NULL), TERSE_ERR_MISMATCH);
    for (int i = 0; i < 10; i++) ck_assert_float_eq(out[i], 0.0f);
    topk_params_of(NAN, 3, p);
    ck_assert_int_eq(codec_topk_ops.decode_add(p, m, sizeof m, 10, out, NULL), TERSE_OK);
    ck_assert_float_eq(out[9], 3.0f);
}
END_TEST

/* ---- sparse_decode_add validation ------------------------------------------------------- */

#define COUNT 16
#define SENTINEL 42.5f

/* A message with k entries; idx and val given. Returns its size in bytes. */
static size_t make_msg(uint32_t *buf, uint32_t k, const uint32_t *idx, const float *val)
{
    buf[0] = k;
    memcpy(&buf[1], idx, k * sizeof *idx);
    memcpy(&buf[1 + k], val, k * sizeof *val);
    return 4 + 8 * (size_t)k;
}

static void fill_sentinel(float *out)
{
    for (int i = 0; i < COUNT; i++) out[i] = SENTINEL + (float)i;
}

static void assert_untouched(const float *out, const char *what)
{
    for (int i = 0; i < COUNT; i++)
        ck_assert_msg(out[i] == SENTINEL + (float)i, "%s: out[%d] was changed to %g", what, i,
                      out[i]);
}

START_TEST(sparse_decode_accepts_a_well_formed_message)
{
    uint32_t buf[64];
    const uint32_t idx[] = {0, 3, 15};
    const float val[] = {1.0f, -2.0f, 0.5f};
    float out[COUNT];
    fill_sentinel(out);
    size_t bytes = make_msg(buf, 3, idx, val);
    ck_assert_int_eq(sparse_decode_add(buf, bytes, COUNT, out), TERSE_OK);
    ck_assert_float_eq(out[0], SENTINEL + 1.0f);
    ck_assert_float_eq(out[3], SENTINEL + 3.0f - 2.0f);
    ck_assert_float_eq(out[15], SENTINEL + 15.0f + 0.5f);
    ck_assert_float_eq(out[1], SENTINEL + 1.0f);
    /* k = 0 is a valid, empty message, also for an empty layer */
    ck_assert_int_eq(sparse_decode_add(buf, make_msg(buf, 0, idx, val), COUNT, out), TERSE_OK);
    ck_assert_int_eq(sparse_decode_add(buf, 4, 0, out), TERSE_OK);
}
END_TEST

START_TEST(sparse_decode_rejects_a_message_shorter_than_its_header)
{
    uint32_t buf[4] = {0};
    float out[COUNT];
    fill_sentinel(out);
    for (size_t bytes = 0; bytes < 4; bytes++)
        ck_assert_int_eq(sparse_decode_add(buf, bytes, COUNT, out), TERSE_ERR_MISMATCH);
    assert_untouched(out, "short message");
}
END_TEST

START_TEST(sparse_decode_rejects_k_above_count)
{
    uint32_t buf[128];
    uint32_t idx[COUNT + 1];
    float val[COUNT + 1];
    for (uint32_t i = 0; i <= COUNT; i++) { idx[i] = i; val[i] = 1.0f; }
    float out[COUNT];
    fill_sentinel(out);
    size_t bytes = make_msg(buf, COUNT + 1, idx, val);
    ck_assert_int_eq(sparse_decode_add(buf, bytes, COUNT, out), TERSE_ERR_MISMATCH);
    /* the largest k a header can announce, with a message that claims to hold it */
    buf[0] = 0xffffffffu;
    ck_assert_int_eq(sparse_decode_add(buf, 4, COUNT, out), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(sparse_decode_add(buf, 4 + 8 * (size_t)0xffffffffu, COUNT, out),
                     TERSE_ERR_MISMATCH);
    assert_untouched(out, "k > count");
}
END_TEST

START_TEST(sparse_decode_rejects_an_index_out_of_range)
{
    uint32_t buf[64];
    const uint32_t idx[] = {1, 2, COUNT};
    const float val[] = {1.0f, 1.0f, 1.0f};
    float out[COUNT];
    fill_sentinel(out);
    ck_assert_int_eq(sparse_decode_add(buf, make_msg(buf, 3, idx, val), COUNT, out),
                     TERSE_ERR_MISMATCH);
    const uint32_t huge[] = {0xffffffffu};
    ck_assert_int_eq(sparse_decode_add(buf, make_msg(buf, 1, huge, val), COUNT, out),
                     TERSE_ERR_MISMATCH);
    assert_untouched(out, "index out of range");
}
END_TEST

START_TEST(sparse_decode_rejects_indices_not_strictly_increasing)
{
    uint32_t buf[64];
    const uint32_t dup[] = {1, 4, 4, 7};
    const uint32_t down[] = {1, 5, 3, 7};
    const float val[] = {1.0f, 1.0f, 1.0f, 1.0f};
    float out[COUNT];
    fill_sentinel(out);
    ck_assert_int_eq(sparse_decode_add(buf, make_msg(buf, 4, dup, val), COUNT, out),
                     TERSE_ERR_MISMATCH);
    ck_assert_int_eq(sparse_decode_add(buf, make_msg(buf, 4, down, val), COUNT, out),
                     TERSE_ERR_MISMATCH);
    assert_untouched(out, "indices not increasing");
}
END_TEST

START_TEST(sparse_decode_rejects_a_byte_count_other_than_4_plus_8k)
{
    uint32_t buf[64] = {0};
    const uint32_t idx[] = {1, 2, 3};
    const float val[] = {1.0f, 1.0f, 1.0f};
    float out[COUNT];
    fill_sentinel(out);
    size_t bytes = make_msg(buf, 3, idx, val);
    for (size_t b = 4; b <= bytes + 9; b++) {
        if (b == bytes) continue;
        ck_assert_msg(sparse_decode_add(buf, b, COUNT, out) == TERSE_ERR_MISMATCH,
                      "k=3 with %zu bytes accepted", b);
    }
    assert_untouched(out, "wrong byte count");
}
END_TEST

static Suite *topk_suite(void)
{
    Suite *s = suite_create("topk");

    TCase *tc_k = tcase_create("k");
    tcase_add_test(tc_k, topk_k_with_k_clamps_to_count);
    tcase_add_test(tc_k, topk_k_with_density_is_at_least_one_and_floors);
    tcase_add_test(tc_k, topk_k_of_an_empty_layer_is_zero);
    tcase_add_test(tc_k, topk_k_without_parameters_uses_density_one_percent);
    tcase_add_test(tc_k, topk_check_rejects_density_and_k_together);
    suite_add_tcase(s, tc_k);

    TCase *tc_sel = tcase_create("select");
    tcase_set_timeout(tc_sel, 120); /* the 1M brute force sorts, slow under sanitizers */
    tcase_add_test(tc_sel, topk_keeps_the_largest_magnitudes);
    tcase_add_test(tc_sel, topk_breaks_ties_by_lower_index);
    tcase_add_test(tc_sel, topk_treats_opposite_signs_of_equal_magnitude_as_ties);
    tcase_add_test(tc_sel, topk_of_k_zero_keeps_nothing_and_k_above_n_keeps_all);
    tcase_add_test(tc_sel, topk_matches_brute_force_on_random_vectors);
    tcase_add_test(tc_sel, topk_matches_brute_force_on_a_million_elements);
    suite_add_tcase(s, tc_sel);

    TCase *tc_kern = tcase_create("kernels");
    tcase_set_timeout(tc_kern, 240); /* brute-force sorts, slow under sanitizers */
    tcase_add_test(tc_kern, topk_select_above_is_exact_for_any_guess_at_both_levels);
    tcase_add_test(tc_kern, topk_sampled_selection_matches_brute_force_at_both_levels);
    tcase_add_test(tc_kern, topk_scratch_is_order_k_and_bounded);
    tcase_add_test(tc_kern, topk_codec_message_is_the_same_with_and_without_scratch);
    suite_add_tcase(s, tc_kern);

    TCase *tc_codec = tcase_create("codec");
    tcase_set_timeout(tc_codec, 60);
    tcase_add_test(tc_codec, topk_codec_round_trip_gives_the_kept_entries_and_zeros_elsewhere);
    tcase_add_test(tc_codec, topk_decode_adds_into_out);
    tcase_add_test(tc_codec, topk_decode_rejects_a_message_above_max_bytes);
    suite_add_tcase(s, tc_codec);

    TCase *tc_val = tcase_create("validation");
    tcase_add_test(tc_val, sparse_decode_accepts_a_well_formed_message);
    tcase_add_test(tc_val, sparse_decode_rejects_a_message_shorter_than_its_header);
    tcase_add_test(tc_val, sparse_decode_rejects_k_above_count);
    tcase_add_test(tc_val, sparse_decode_rejects_an_index_out_of_range);
    tcase_add_test(tc_val, sparse_decode_rejects_indices_not_strictly_increasing);
    tcase_add_test(tc_val, sparse_decode_rejects_a_byte_count_other_than_4_plus_8k);
    suite_add_tcase(s, tc_val);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(topk_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
