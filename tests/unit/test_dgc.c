/* Unit tests for DGC (compressors/dgc.c, collectives/dgc_allgather.c): the warm-up density
 * schedules against ALGORITHMS.md §10.2 item 4, the sampling plan of §6.2 on hand-computed
 * cases, the sampled-threshold selection against an independent reference of §6.2 on many
 * random vectors, the codec's message validation, and the protocol's momentum correction,
 * factor masking, clipping and state commit on hand-computed traces (through a fake
 * transport that plays the other ranks).
 *
 * The reference selection here is written from §6.2 alone: sorts instead of selection,
 * its own plan arithmetic. It shares only rng.h (the sample start) with the code under
 * test. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dgc.h"
#include "protocol.h"
#include "rng.h"
#include "simd.h"

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

/* ---- Helpers ---------------------------------------------------------------------------- */

static void params(double p[TERSE_MAX_PARAMS], double density, double warmup, int schedule)
{
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) p[i] = NAN;
    p[DGC_DENSITY] = density;
    p[DGC_SAMPLE] = 0.01;
    p[DGC_MOMENTUM] = 0.9;
    p[DGC_NESTEROV] = 0;
    p[DGC_CLIP] = NAN;
    p[DGC_WARMUP] = warmup;
    p[DGC_SCHEDULE] = schedule;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* DIST_SPECIAL stays out of the loops over DIST_COUNT, whose checks assume numbers. */
enum { DIST_UNIFORM, DIST_NORMAL, DIST_HEAVY_TAIL, DIST_TIES, DIST_SPARSE, DIST_COUNT,
       DIST_SPECIAL = DIST_COUNT, DIST_ALL };
static const char *const dist_name[DIST_ALL] = {"uniform", "normal", "heavy-tail", "ties", "sparse",
                                                "special"};

/* NaNs (quiet, signalling, negative), infinities, both zeros, denormals. */
static const uint32_t special_bits[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u,
                                        0xff800000u, 0x00000000u, 0x80000000u, 0x00000001u,
                                        0x807fffffu, 0x7f7fffffu};

/* uniform [-1, 1]; normal; Cauchy (magnitudes over many decades); 9 levels in [-1, 1]
 * (huge tie classes, zeros included); 99.9 % zeros and a few uniform values; uniform with
 * 1 % special values. */
static void fill(float *v, size_t n, uint64_t *s, int dist)
{
    for (size_t i = 0; i < n; i++) {
        switch (dist) {
        case DIST_UNIFORM: v[i] = (float)(2.0 * rng_unit(s) - 1.0); break;
        case DIST_NORMAL: {
            double u1 = rng_unit(s) + 0x1.0p-60, u2 = rng_unit(s);
            v[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            break;
        }
        case DIST_HEAVY_TAIL: {
            double t = tan(3.141592653589793 * (rng_unit(s) - 0.5));
            v[i] = (float)(fabs(t) > 1e30 ? 1e30 : t);
            break;
        }
        case DIST_TIES: v[i] = (float)((int)(rng_next(s) % 9) - 4) * 0.25f; break;
        case DIST_SPECIAL:
            if (rng_next(s) % 100 == 0)
                memcpy(&v[i], &special_bits[rng_next(s) % (sizeof special_bits / 4)], 4);
            else
                v[i] = (float)(2.0 * rng_unit(s) - 1.0);
            break;
        default: v[i] = rng_next(s) % 1000 == 0 ? (float)(2.0 * rng_unit(s) - 1.0) : 0.0f; break;
        }
    }
}

/* ---- The reference, from ALGORITHMS.md §6.2 --------------------------------------------- */

typedef struct {
    size_t stride, num_samples, top_k_samples, num_selects;
} ref_plan_t;

static ref_plan_t ref_plan(size_t numel, double r, double sample_ratio)
{
    ref_plan_t pl;
    pl.stride = 1;
    pl.num_samples = numel;
    if (sample_ratio < 1.0) {
        size_t pct_numel = (size_t)ceil((double)numel * sample_ratio);
        size_t cpr_numel = (size_t)ceil(2.0 / r);
        if (numel > cpr_numel) {
            size_t mx = pct_numel > cpr_numel ? pct_numel : cpr_numel;
            pl.stride = (size_t)ceil((double)numel / (double)mx / 32.0) * 32 + 1;
            pl.num_samples = numel / pl.stride;
            while (pl.num_samples < mx) {
                pl.stride -= 8;
                pl.num_samples = numel / pl.stride;
            }
        }
    }
    pl.top_k_samples = (size_t)ceil((double)pl.num_samples * r);
    pl.num_selects = (size_t)ceil((double)numel * r);
    return pl;
}

/* Magnitudes order by key, the bits of |x|: as |x| for numbers, -0 with +0, a NaN above
 * +Inf (as topk ranks them). */
static uint32_t key_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u & 0x7fffffffu;
}

static const float *cmp_v;
static int by_mag_then_index(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    uint32_t x = key_of(cmp_v[i]), y = key_of(cmp_v[j]);
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j;
}
static int by_index(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j;
}
static int by_key_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x > y ? -1 : x < y;
}

/* The k largest magnitudes among cand[0..m) (ties: lower index), sorted by index, into
 * cand[0..min(k, m)); returns how many. */
static size_t ref_topk_of(const float *v, uint32_t *cand, size_t m, size_t k)
{
    cmp_v = v;
    qsort(cand, m, sizeof *cand, by_mag_then_index);
    size_t kept = k < m ? k : m;
    qsort(cand, kept, sizeof *cand, by_index);
    return kept;
}

typedef struct {
    size_t kept, candidates;
    int hierarchical, exhausted;
} ref_result_t;

/* §6.2 sparsify, with the exact top-k where every entry is a sample. idx: n entries. */
static ref_result_t ref_select(const float *v, size_t n, double r, double sample_ratio,
                               uint64_t key, uint32_t *idx)
{
    ref_plan_t pl = ref_plan(n, r, sample_ratio);
    ref_result_t res = {0, 0, 0, 0};
    if (pl.num_samples == n) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        res.kept = res.candidates = ref_topk_of(v, idx, n, pl.num_selects);
        return res;
    }
    size_t start = (size_t)rng_below(key, 0, pl.stride), ns = 0;
    uint32_t *smp = malloc((n / pl.stride + 2) * sizeof *smp);
    ck_assert_ptr_nonnull(smp);
    for (size_t i = start; i < n; i += pl.stride) smp[ns++] = key_of(v[i]);
    qsort(smp, ns, sizeof *smp, by_key_desc);
    /* the smallest magnitude of the top samples; a NaN, ranked above +Inf, is never the
     * threshold: with only NaNs on top, nothing but an infinity can pass */
    const uint32_t tk = smp[pl.top_k_samples - 1];
    float thr = INFINITY;
    if (tk <= 0x7f800000u) memcpy(&thr, &tk, 4);
    free(smp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += fabsf(v[i]) >= thr;
    int decided = 0;
    for (int it = 0; it < 10; it++) {
        if (m > pl.num_selects) {
            res.hierarchical = m > pl.num_selects * 1.3;
            decided = 1;
            break;
        } else if (m < 0.8 * pl.num_selects) {
            thr = thr * 0.8f;
        } else {
            decided = 1;
            break;
        }
        m = 0;
        for (size_t i = 0; i < n; i++) m += fabsf(v[i]) >= thr;
    }
    res.exhausted = !decided;
    res.candidates = m;
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(v[i]) >= thr) idx[c++] = (uint32_t)i;
    if (res.hierarchical)
        res.kept = ref_topk_of(v, idx, c, pl.num_selects);
    else
        res.kept = c < pl.num_selects ? c : pl.num_selects;
    return res;
}

/* ---- Warm-up schedules (§10.2 item 4) ---------------------------------------------------- */

START_TEST(paper_schedule_is_four_to_the_minus_e_plus_one_then_the_density)
{
    static const double want[] = {0.25, 0.0625, 0.015625, 0.00390625, 0.001, 0.001, 0.001};
    double p[TERSE_MAX_PARAMS];
    params(p, 0.001, 4, DGC_SCHEDULE_PAPER);
    for (uint64_t e = 0; e < 7; e++)
        ck_assert_msg(dgc_density(p, e) == want[e], "e=%llu: %.17g, want %.17g",
                      (unsigned long long)e, dgc_density(p, e), want[e]);
    /* a longer warm-up is clamped at the density: 4^-5 < 0.001 */
    params(p, 0.001, 5, DGC_SCHEDULE_PAPER);
    ck_assert(dgc_density(p, 4) == 0.001);
    /* far into a long warm-up 4^-(e+1) underflows and the density wins */
    params(p, 0.001, 1e12, DGC_SCHEDULE_PAPER);
    ck_assert(dgc_density(p, 100000) == 0.001);
}
END_TEST

START_TEST(geometric_schedule_matches_the_reference_code_trace)
{
    /* §10.2 item 4, printed to 6 decimals */
    static const double want[] = {0.316228, 0.1, 0.031623, 0.01, 0.003162, 0.001, 0.001};
    double p[TERSE_MAX_PARAMS];
    params(p, 0.001, 5, DGC_SCHEDULE_GEOMETRIC);
    for (uint64_t e = 0; e < 7; e++)
        ck_assert_msg(fabs(dgc_density(p, e) - want[e]) <= 5e-7, "e=%llu: %.9g, want %.6f",
                      (unsigned long long)e, dgc_density(p, e), want[e]);
    ck_assert(dgc_density(p, 5) == 0.001); /* after the warm-up: the density itself */
}
END_TEST

START_TEST(no_warmup_gives_the_density_from_the_first_step)
{
    double p[TERSE_MAX_PARAMS];
    for (int sch = 0; sch < 2; sch++) {
        params(p, 0.02, 0, sch);
        ck_assert(dgc_density(p, 0) == 0.02);
        ck_assert(dgc_density(p, 9) == 0.02);
    }
}
END_TEST

START_TEST(density_never_grows_and_step_zero_bounds_every_message)
{
    static const double dens[] = {1e-6, 0.001, 0.01, 0.3, 0.9};
    static const double warm[] = {0, 1, 3, 7, 40};
    static const size_t counts[] = {1, 9, 100, 3200, 100003, 1u << 24};
    double p[TERSE_MAX_PARAMS];
    for (int sch = 0; sch < 2; sch++)
        for (size_t a = 0; a < 5; a++)
            for (size_t b = 0; b < 5; b++) {
                params(p, dens[a], warm[b], sch);
                double prev = 2.0;
                for (uint64_t e = 0; e < 50; e++) {
                    double r = dgc_density(p, e);
                    REQUIRE(r <= prev && r >= dens[a] && r <= 1.0, "sch %d d %g w %g e %llu: %g", sch,
                            dens[a], warm[b], (unsigned long long)e, r);
                    prev = r;
                    for (size_t c = 0; c < 6; c++) {
                        size_t sel = dgc_plan(counts[c], r, p[DGC_SAMPLE]).num_selects;
                        REQUIRE(sel <= dgc_max_selects(p, counts[c]) && sel <= counts[c],
                                "e %llu count %zu: %zu above the bound %zu", (unsigned long long)e,
                                counts[c], sel, dgc_max_selects(p, counts[c]));
                    }
                }
            }
}
END_TEST

/* ---- Sampling plan (§6.2 initialize) ----------------------------------------------------- */

static void check_plan(size_t numel, double r, double sample, size_t stride, size_t ns, size_t tks,
                       size_t sel)
{
    dgc_plan_t pl = dgc_plan(numel, r, sample);
    ck_assert_msg(pl.numel == numel && pl.stride == stride && pl.num_samples == ns &&
                      pl.top_k_samples == tks && pl.num_selects == sel,
                  "numel %zu r %g sample %g: stride %zu samples %zu top %zu selects %zu, want %zu %zu "
                  "%zu %zu", numel, r, sample, pl.stride, pl.num_samples, pl.top_k_samples,
                  pl.num_selects, stride, ns, tks, sel);
}

START_TEST(small_tensor_plan_samples_everything)
{
    /* numel <= ceil(2 / r) = 40: stride 1, exact top-k of ceil(9 * 0.05) = 1 */
    check_plan(9, 0.05, 0.01, 1, 9, 1, 1);
    check_plan(40, 0.05, 0.01, 1, 40, 2, 2);
    check_plan(1000, 0.001, 0.01, 1, 1000, 1, 1);
    /* sample = 1: every entry is a sample */
    check_plan(3200, 0.05, 1.0, 1, 3200, 160, 160);
    /* 50 > 40, but the stride steps 33 -> 25 -> 17 -> 9 -> 1 before 40 samples fit */
    check_plan(50, 0.05, 0.01, 1, 50, 3, 3);
    check_plan(0, 0.5, 0.01, 1, 0, 0, 0);
}
END_TEST

START_TEST(large_tensor_plan_strides_down_by_eight)
{
    /* 3200 at 5 %: max(pct 32, cpr 40) = 40; stride ceil(3200/40/32)*32+1 = 97 -> 32
     * samples; 89 -> 35; 81 -> 39; 73 -> 43 >= 40. top ceil(43*0.05) = 3, ceil(160) */
    check_plan(3200, 0.05, 0.01, 73, 43, 3, 160);
    /* 2^20 at 0.1 %: max(pct 10486, cpr 2000); stride ceil(3.12)*32+1 = 129 -> 8128;
     * 121 -> 8665; 113 -> 9279; 105 -> 9986; 97 -> 10810. top 11, selects 1049 */
    check_plan(1u << 20, 0.001, 0.01, 97, 10810, 11, 1049);
    /* 2^24 at 0.1 %: 97 -> 172960 samples, top 173, selects ceil(16777.216) */
    check_plan(1u << 24, 0.001, 0.01, 97, 172960, 173, 16778);
    /* the warm-up's first density on the 64x50 layer: 3200 at 25 % samples 32 at stride 97 */
    check_plan(3200, 0.25, 0.01, 97, 32, 8, 800);
}
END_TEST

/* ---- Selection --------------------------------------------------------------------------- */

static const uint32_t *msg_idx(const void *msg) { return (const uint32_t *)((const unsigned char *)msg + 4); }
static uint32_t msg_k(const void *msg)
{
    uint32_t k;
    memcpy(&k, msg, 4);
    return k;
}
static const float *msg_val(const void *msg)
{
    return (const float *)((const unsigned char *)msg + 4 + 4 * (size_t)msg_k(msg));
}

/* Runs dgc_select on v and compares it with the reference; returns its info. */
static dgc_select_info_t select_and_compare(const float *v, size_t n, double r, double sample,
                                            uint64_t key, const char *what)
{
    dgc_plan_t pl = dgc_plan(n, r, sample);
    void *msg = malloc(4 + 8 * pl.num_selects), *scratch = malloc(dgc_scratch_bytes(n) + 1);
    uint32_t *ref = malloc((n ? n : 1) * sizeof *ref);
    ck_assert(msg && scratch && ref);
    dgc_select_info_t info;
    size_t bytes = dgc_select(&pl, key, v, msg, scratch, &info);
    ref_result_t rr = ref_select(v, n, r, sample, key, ref);
    size_t k = msg_k(msg);
    REQUIRE(bytes == 4 + 8 * k, "%s: %zu bytes for k=%zu", what, bytes, k);
    REQUIRE(k == rr.kept, "%s n=%zu r=%g: kept %zu, reference %zu (candidates %zu/%zu, hier %d/%d)",
            what, n, r, k, rr.kept, info.candidates, rr.candidates, info.hierarchical, rr.hierarchical);
    REQUIRE(info.candidates == rr.candidates && info.hierarchical == rr.hierarchical &&
                info.exhausted == rr.exhausted, "%s n=%zu: loop outcome differs", what, n);
    for (size_t j = 0; j < k; j++) {
        REQUIRE(msg_idx(msg)[j] == ref[j], "%s n=%zu r=%g entry %zu: index %u, reference %u", what, n,
                r, j, msg_idx(msg)[j], ref[j]);
        REQUIRE(memcmp(&msg_val(msg)[j], &v[ref[j]], 4) == 0, "%s: value %zu is not v[idx]", what, j);
    }
    free(msg);
    free(scratch);
    free(ref);
    return info;
}

START_TEST(small_tensor_selection_is_the_exact_topk_ties_by_lower_index)
{
    /* with ties at the threshold the reference's truncation would send zeros and drop the 7 */
    const float v[9] = {0, 0, 0, 0, 7, 0, -0.0f, 0, 0};
    float msg[1 + 2 * 9], scratch[2 * 9];
    /* 9 > ceil(2 / 0.25) = 8, but the stride steps 33 -> ... -> 1 before 8 samples fit */
    dgc_plan_t pl = dgc_plan(9, 0.25, 0.01);
    ck_assert_uint_eq(pl.stride, 1);
    ck_assert_uint_eq(pl.num_selects, 3);
    size_t bytes = dgc_select(&pl, 1, v, msg, scratch, NULL);
    ck_assert_uint_eq(bytes, 4 + 8 * 3);
    ck_assert_uint_eq(msg_idx(msg)[0], 0);
    ck_assert_uint_eq(msg_idx(msg)[1], 1);
    ck_assert_uint_eq(msg_idx(msg)[2], 4);
    ck_assert(msg_val(msg)[2] == 7.0f);

    const float w[6] = {1, -2, 2, 0.5f, -2, 3};
    pl = dgc_plan(6, 0.5, 0.01); /* cpr = 4 < 6, but 33 -> ... -> 1: exact */
    ck_assert_uint_eq(pl.stride, 1);
    dgc_select(&pl, 7, w, msg, scratch, NULL);
    ck_assert_uint_eq(msg_k(msg), 3);
    ck_assert_uint_eq(msg_idx(msg)[0], 1); /* |-2| ties with 2 and -2: the lower indices */
    ck_assert_uint_eq(msg_idx(msg)[1], 2);
    ck_assert_uint_eq(msg_idx(msg)[2], 5);
}
END_TEST

START_TEST(selection_matches_the_reference_on_random_vectors)
{
    static const size_t sizes[] = {1000, 1024, 4099, 10007, 65536, 250000};
    static const double dens[] = {0.001, 0.01, 0.1, 0.3};
    uint64_t s = 42;
    int seen_hier = 0, seen_adapt = 0, seen_trunc = 0, seen_exact = 0;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof dens / sizeof dens[0]; b++)
            for (int dist = 0; dist < DIST_COUNT; dist++)
                for (int rep = 0; rep < 2; rep++) {
                    size_t n = sizes[a];
                    float *v = malloc(n * sizeof *v);
                    ck_assert_ptr_nonnull(v);
                    fill(v, n, &s, dist);
                    char what[64];
                    snprintf(what, sizeof what, "%s rep %d", dist_name[dist], rep);
                    uint64_t key = rng_next(&s);
                    dgc_select_info_t info = select_and_compare(v, n, dens[b], 0.01, key, what);
                    dgc_plan_t pl = dgc_plan(n, dens[b], 0.01);
                    size_t k = pl.num_selects;
                    /* never more than k; at least 0.8 k unless the loop ran out of iterations */
                    REQUIRE(info.candidates >= 1, "%s: no candidate", what);
                    size_t kept = info.hierarchical ? k : (info.candidates < k ? info.candidates : k);
                    REQUIRE(kept <= k, "%s", what);
                    if (!info.exhausted) REQUIRE((double)kept >= 0.8 * (double)k, "%s n=%zu: %zu < 0.8 k", what, n, kept);
                    /* continuous distributions never exhaust the loop: 0.8^10 spans a decade */
                    if (dist != DIST_SPARSE) REQUIRE(!info.exhausted, "%s n=%zu d=%g exhausted", what, n, dens[b]);
                    if (pl.num_samples == n) seen_exact = 1;
                    else {
                        seen_hier |= info.hierarchical;
                        seen_adapt |= info.iterations > 0;
                        seen_trunc |= !info.hierarchical && info.candidates > k;
                    }
                    free(v);
                }
    /* every branch of §6.2 ran at least once */
    ck_assert(seen_hier && seen_adapt && seen_trunc && seen_exact);
}
END_TEST

START_TEST(selection_matches_the_reference_on_a_million_elements)
{
    const size_t n = 1u << 20;
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    uint64_t s = 7;
    for (int dist = 0; dist < DIST_COUNT; dist++) {
        fill(v, n, &s, dist);
        select_and_compare(v, n, 0.001, 0.01, rng_next(&s), dist_name[dist]);
    }
    free(v);
}
END_TEST

/* Runs dgc_select with the kernels of one SIMD level; returns the message's size. */
static size_t select_at(simd_level_t level, const dgc_plan_t *pl, uint64_t key, const float *v,
                        void *msg, void *scratch, dgc_select_info_t *info)
{
    simd_set_level(level);
    size_t bytes = dgc_select(pl, key, v, msg, scratch, info);
    simd_set_level(simd_cpu_level());
    return bytes;
}

#define GUARD 64
#define GUARD_BYTE 0xa5

/* Whether two selections went alike: the same threshold bits, counts and flags. */
static int same_info(const dgc_select_info_t *a, const dgc_select_info_t *b)
{
    return memcmp(&a->threshold, &b->threshold, 4) == 0 && a->candidates == b->candidates &&
           a->iterations == b->iterations && a->hierarchical == b->hierarchical && a->exhausted == b->exhausted;
}

START_TEST(selection_is_the_same_at_both_simd_levels)
{
    /* the AVX2 kernels against the scalar ones, bit for bit, message and info, on sizes
     * with many tails mod 32, every distribution (NaN, Inf, -0 and denormals included),
     * sampled and exact plans; each level also against the reference; and nothing written
     * past the scratch dgc_scratch_bytes promises */
    static const size_t sizes[] = {1000, 1031, 4099, 10007, 65543, 250007};
    static const double dens[] = {0.001, 0.01, 0.1, 0.3};
    static const double sample[] = {0.01, 1.0};
    uint64_t s = 4242;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof dens / sizeof dens[0]; b++)
            for (int dist = 0; dist < DIST_ALL; dist++)
                for (int rep = 0; rep < 2; rep++) {
                    const size_t n = sizes[a];
                    const double smp = sample[(a + (size_t)rep) % 2 == 0 && n > 10000 ? 1 : 0];
                    const dgc_plan_t pl = dgc_plan(n, dens[b], smp);
                    const size_t mb = 4 + 8 * pl.num_selects, sb = dgc_scratch_bytes(n);
                    float *v = malloc(n * sizeof *v);
                    unsigned char *ms = malloc(mb), *ma = malloc(mb), *scratch = malloc(sb + GUARD);
                    ck_assert(v && ms && ma && scratch);
                    fill(v, n, &s, dist);
                    memset(scratch + sb, GUARD_BYTE, GUARD);
                    const uint64_t key = rng_next(&s);
                    dgc_select_info_t is, ia;
                    const size_t bs = select_at(SIMD_SCALAR, &pl, key, v, ms, scratch, &is);
                    const size_t ba = select_at(SIMD_AVX2, &pl, key, v, ma, scratch, &ia);
                    char what[96];
                    snprintf(what, sizeof what, "%s n=%zu r=%g sample=%g rep %d", dist_name[dist], n,
                             dens[b], smp, rep);
                    REQUIRE(bs == ba && memcmp(ms, ma, bs) == 0, "%s: the messages differ (%zu, %zu bytes)",
                            what, bs, ba);
                    REQUIRE(same_info(&is, &ia), "%s: info differs: thr %a/%a cand %zu/%zu it %d/%d hier %d/%d exh %d/%d", what,
                            is.threshold, ia.threshold, is.candidates, ia.candidates, is.iterations,
                            ia.iterations, is.hierarchical, ia.hierarchical, is.exhausted, ia.exhausted);
                    for (size_t g = 0; g < GUARD; g++)
                        REQUIRE(scratch[sb + g] == GUARD_BYTE, "%s: wrote past the scratch", what);
                    if (n <= 65543) {
                        /* the reference sorts: the smaller sizes suffice */
                        simd_set_level(SIMD_SCALAR);
                        select_and_compare(v, n, dens[b], smp, key, what);
                        simd_set_level(SIMD_AVX2);
                        select_and_compare(v, n, dens[b], smp, key, what);
                        simd_set_level(simd_cpu_level());
                    }
                    free(v);
                    free(ms);
                    free(ma);
                    free(scratch);
                }
}
END_TEST

/* a and b hold the same floats, bit for bit, except that any NaN matches any NaN (the
 * compiler may swap the operands of a scalar sum, and which NaN a sum of two keeps depends
 * on their order) */
static int same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0 && !(isnan(a[i]) && isnan(b[i]))) return 0;
    return 1;
}

START_TEST(momentum_fused_into_the_selection_changes_nothing)
{
    /* dgc_momentum_select at both SIMD levels against the momentum step written out
     * element by element (dgc_next_u, dgc_next_v) followed by dgc_select on v1: the same
     * u1, v1, message and info; sampled and exact plans, tails mod 32, both momentum kinds,
     * clipped and not, every distribution (the adaptation loop runs several counts on some) */
    static const size_t sizes[] = {0, 1, 33, 1031, 10007, 65543, 250007};
    static const double dens[] = {0.001, 0.01, 0.3};
    static const float coefs[] = {1.0f, 0.75f};
    uint64_t s = 777;
    for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++)
        for (size_t b = 0; b < sizeof dens / sizeof dens[0]; b++)
            for (int dist = 0; dist < DIST_ALL; dist++)
                for (int variant = 0; variant < 4; variant++) {
                    const size_t n = sizes[a];
                    const int nesterov = variant & 1;
                    const float coef = coefs[variant >> 1];
                    const double smp = (variant + dist) % 3 == 0 ? 1.0 : 0.01;
                    const dgc_plan_t pl = dgc_plan(n, dens[b], smp);
                    const size_t mb = 4 + 8 * pl.num_selects, sb = dgc_scratch_bytes(n);
                    float *in = malloc(3 * (n + 1) * sizeof *in), *ref = malloc(2 * (n + 1) * sizeof *ref);
                    float *got = malloc(2 * (n + 1) * sizeof *got);
                    unsigned char *mr = malloc(mb), *mg = malloc(mb), *scratch = malloc(sb + 1);
                    ck_assert(in && ref && got && mr && mg && scratch);
                    float *u = in, *v = in + n + 1, *g = in + 2 * (n + 1);
                    fill(u, n, &s, dist);
                    fill(v, n, &s, (dist + 1) % DIST_ALL);
                    fill(g, n, &s, dist);
                    const float m = 0.9f;
                    float *u1r = ref, *v1r = ref + n + 1;
                    for (size_t i = 0; i < n; i++) {
                        u1r[i] = dgc_next_u(u[i], g[i], coef, m, nesterov);
                        v1r[i] = dgc_next_v(v[i], u1r[i], g[i], coef, nesterov);
                    }
                    const uint64_t key = rng_next(&s);
                    dgc_select_info_t ir, ig;
                    simd_set_level(SIMD_SCALAR);
                    const size_t br = dgc_select(&pl, key, v1r, mr, scratch, &ir), kr = (br - 4) / 8;
                    int want_bad = 0;
                    for (size_t i = 0; i < n; i++) want_bad |= !isfinite(g[i]);
                    for (int level = SIMD_SCALAR; level <= SIMD_AVX2; level++) {
                        const dgc_momentum_t mo = {u, v, g, got, got + n + 1, coef, m, nesterov};
                        memset(got, 0xff, 2 * (n + 1) * sizeof *got);
                        simd_set_level((simd_level_t)level);
                        int bad = -1;
                        const size_t bg = dgc_momentum_select(&pl, key, &mo, mg, scratch, &ig, &bad);
                        char what[128];
                        snprintf(what, sizeof what, "%s n=%zu r=%g sample=%g nesterov %d coef %g level %d",
                                 dist_name[dist], n, dens[b], smp, nesterov, (double)coef, level);
                        REQUIRE(same_floats(got, u1r, n) && same_floats(got + n + 1, v1r, n),
                                "%s: u1 or v1 differs", what);
                        REQUIRE(bad == want_bad, "%s: non-finite g %d, reported %d", what, want_bad, bad);
                        /* k and the indices bit for bit, the values up to NaN payloads */
                        REQUIRE(bg == br && memcmp(mg, mr, 4 + 4 * kr) == 0 &&
                                    same_floats((float *)(mg + 4 + 4 * kr), (float *)(mr + 4 + 4 * kr), kr),
                                "%s: the messages differ (%zu, %zu bytes)", what, bg, br);
                        REQUIRE(same_info(&ir, &ig), "%s: info differs: thr %a/%a cand %zu/%zu it %d/%d", what, ir.threshold,
                                ig.threshold, ir.candidates, ig.candidates, ir.iterations, ig.iterations);
                    }
                    simd_set_level(simd_cpu_level());
                    free(in);
                    free(ref);
                    free(got);
                    free(mr);
                    free(mg);
                    free(scratch);
                }
}
END_TEST

START_TEST(the_sample_start_follows_the_key)
{
    /* the entries at one sampling phase are 1, all others 0.5: a key whose start hits that
     * phase samples only 1s (threshold 1, ~n/stride candidates), any other only 0.5s
     * (threshold 0.5, every entry a candidate) */
    const size_t n = 100000;
    dgc_plan_t pl = dgc_plan(n, 0.01, 0.01);
    ck_assert_uint_eq(pl.stride, 97);
    uint64_t key_a = 1, key_b = 2;
    const size_t start_a = (size_t)rng_below(key_a, 0, pl.stride);
    while (rng_below(key_b, 0, pl.stride) == start_a) key_b++;
    float *v = malloc(n * sizeof *v);
    void *msg = malloc(4 + 8 * pl.num_selects), *scratch = malloc(dgc_scratch_bytes(n));
    ck_assert(v && msg && scratch);
    for (size_t i = 0; i < n; i++) v[i] = i % pl.stride == start_a ? 1.0f : 0.5f;
    dgc_select_info_t a, b;
    dgc_select(&pl, key_a, v, msg, scratch, &a);
    dgc_select(&pl, key_b, v, msg, scratch, &b);
    ck_assert_msg(a.threshold == 1.0f && b.threshold == 0.5f, "thresholds %g %g", a.threshold, b.threshold);
    ck_assert_uint_eq(b.candidates, n);
    ck_assert(b.hierarchical);
    select_and_compare(v, n, 0.01, 0.01, key_a, "phase a");
    select_and_compare(v, n, 0.01, 0.01, key_b, "phase b");
    free(v);
    free(msg);
    free(scratch);
}
END_TEST

START_TEST(adaptation_stops_after_ten_iterations)
{
    /* k = 1000 of 100000. 500 sampled entries are 1 (threshold 1, 500 candidates < 800),
     * `mid` entries 0.12 (above 0.8^10 = 0.107, below 0.8^9 = 0.134), the rest 0.001: the
     * 10th lowering admits the 0.12s, and the loop ends there whatever the count */
    const size_t n = 100000;
    dgc_plan_t pl = dgc_plan(n, 0.01, 0.01);
    const uint64_t key = 99;
    const size_t start = (size_t)rng_below(key, 0, pl.stride);
    float *v = malloc(n * sizeof *v);
    void *msg = malloc(4 + 8 * pl.num_selects), *scratch = malloc(dgc_scratch_bytes(n));
    ck_assert(v && msg && scratch);
    static const size_t mids[] = {200, 400};
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < n; i++) v[i] = 0.001f;
        for (size_t j = 0; j < 500; j++) v[start + j * pl.stride] = 1.0f;
        for (size_t j = 0, i = 0; j < mids[t]; i++)
            if (v[i] != 1.0f) {
                v[i] = 0.12f;
                j++;
            }
        dgc_select_info_t info;
        size_t bytes = dgc_select(&pl, key, v, msg, scratch, &info);
        ck_assert_msg(info.iterations == 10 && info.exhausted && !info.hierarchical,
                      "iterations %d exhausted %d", info.iterations, info.exhausted);
        ck_assert_uint_eq(info.candidates, 500 + mids[t]);
        ck_assert_uint_eq(bytes, 4 + 8 * (500 + mids[t]));
        select_and_compare(v, n, 0.01, 0.01, key, "ten iterations");
    }
    free(v);
    free(msg);
    free(scratch);
}
END_TEST

/* ---- Codec ------------------------------------------------------------------------------- */

START_TEST(codec_encodes_at_the_base_density_and_decodes_its_message)
{
    double p[TERSE_MAX_PARAMS];
    params(p, 0.01, 3, DGC_SCHEDULE_PAPER);
    const size_t n = 5000;
    float *in = malloc(n * sizeof *in), *out = calloc(n, sizeof *out);
    uint64_t s = 3;
    fill(in, n, &s, DIST_NORMAL);
    const codec_ops_t *ops = &codec_dgc_ops;
    ck_assert_int_eq(ops->owns_memory, 1);
    ck_assert_int_eq(ops->protocol, CODEC_PROTO_DGC);
    /* sized for the warm-up's 25 % */
    ck_assert_uint_eq(ops->max_bytes(p, n), 4 + 8 * 1250);
    void *msg = malloc(ops->max_bytes(p, n)), *scratch = malloc(ops->scratch_bytes(p, n));
    const codec_ctx_t ctx = {0xabc, 0, 50, 100};
    size_t bytes = ops->encode(p, &ctx, in, n, msg, scratch);
    ck_assert_uint_le(bytes, 4 + 8 * 50);
    ck_assert_uint_ge(bytes, 4 + 8 * 40);
    ck_assert_int_eq(ops->decode_add(p, msg, bytes, n, out, scratch), TERSE_OK);
    size_t nz = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i] != 0) {
            nz++;
            ck_assert(out[i] == in[i]);
        }
    ck_assert_uint_eq(nz, msg_k(msg));
    select_and_compare(in, n, 0.01, 0.01, 0xabc, "codec");
    free(in); free(out); free(msg); free(scratch);
}
END_TEST

START_TEST(decode_rejects_malformed_messages_and_leaves_out_untouched)
{
    double p[TERSE_MAX_PARAMS];
    params(p, 0.1, 0, DGC_SCHEDULE_PAPER);
    const size_t n = 40; /* k at most 4 */
    const codec_ops_t *ops = &codec_dgc_ops;
    ck_assert_uint_eq(ops->max_bytes(p, n), 4 + 8 * 4);
    float out[40];
    for (size_t i = 0; i < n; i++) out[i] = (float)i;
    unsigned char msg[64];
    uint32_t w[16];
    /* well formed: k=2, idx 3, 7 */
    w[0] = 2; w[1] = 3; w[2] = 7;
    float val[2] = {1.5f, -2.0f};
    memcpy(msg, w, 12);
    memcpy(msg + 12, val, 8);
    ck_assert_int_eq(ops->decode_add(p, msg, 20, n, out, NULL), TERSE_OK);
    ck_assert(out[3] == 4.5f && out[7] == 5.0f);
    float keep[40];
    memcpy(keep, out, sizeof keep);
    /* too short for its header, a size that is not 4 + 8 k, k above what bytes hold */
    ck_assert_int_eq(ops->decode_add(p, msg, 3, n, out, NULL), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(ops->decode_add(p, msg, 19, n, out, NULL), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(ops->decode_add(p, msg, 28, n, out, NULL), TERSE_ERR_MISMATCH);
    /* above max_bytes, even if well formed in itself */
    w[0] = 5;
    for (uint32_t j = 0; j < 5; j++) w[1 + j] = j;
    memcpy(msg, w, 24);
    memset(msg + 24, 0, 20);
    ck_assert_int_eq(ops->decode_add(p, msg, 44, n, out, NULL), TERSE_ERR_MISMATCH);
    /* an index out of range, and indices not strictly increasing */
    w[0] = 2; w[1] = 3; w[2] = 40;
    memcpy(msg, w, 12);
    ck_assert_int_eq(ops->decode_add(p, msg, 20, n, out, NULL), TERSE_ERR_MISMATCH);
    w[2] = 3;
    memcpy(msg, w, 12);
    ck_assert_int_eq(ops->decode_add(p, msg, 20, n, out, NULL), TERSE_ERR_MISMATCH);
    ck_assert(memcmp(keep, out, sizeof keep) == 0);
}
END_TEST

/* ---- Protocol, through a fake transport --------------------------------------------------
 * Rank 0 of `size` ranks; every other rank's message is `peer` (peer_bytes bytes) in the
 * allgather. The dense path is only exercised with size 1. */

typedef struct {
    const void *peer;
    size_t peer_bytes;
} fake_t;

static terse_status_t fake_allgather(transport_t *t, const void *send, size_t bytes, void *recv)
{
    memcpy((unsigned char *)recv + (size_t)t->rank * bytes, send, bytes);
    return TERSE_OK;
}

static terse_status_t fake_allgatherv(transport_t *t, const void *send, void *recv,
                                      const size_t *counts, const size_t *displs)
{
    const fake_t *f = t->impl;
    if (send) memcpy((unsigned char *)recv + displs[t->rank], send, counts[t->rank]);
    for (int r = 0; r < t->size; r++)
        if (r != t->rank) memcpy((unsigned char *)recv + displs[r], f->peer, counts[r]);
    return TERSE_OK;
}

static terse_status_t fake_alltoallv(transport_t *t, const void *send, const size_t *sc,
                                     const size_t *sd, void *recv, const size_t *rc, const size_t *rd)
{
    ck_assert_int_eq(t->size, 1);
    ck_assert_uint_eq(sc[0], rc[0]);
    memcpy((unsigned char *)recv + rd[0], (const unsigned char *)send + sd[0], sc[0]);
    return TERSE_OK;
}

static const transport_ops_t fake_ops = {sizeof(transport_ops_t), "fake", fake_allgather,
                                         fake_allgatherv, fake_alltoallv, NULL, NULL};

typedef struct {
    transport_t tp;
    fake_t f;
    double p[TERSE_MAX_PARAMS];
    size_t rows, cols, count, state_floats;
    float *state, *next, *out; /* the state in force and the one the next call writes */
    void *ws, *scratch;
    uint64_t peer_bytes[4];
    uint64_t calls;
    size_t wire;
} rig_t;

static void rig_init(rig_t *g, const double *p, size_t rows, size_t cols, int size)
{
    memset(g, 0, sizeof *g);
    memcpy(g->p, p, sizeof g->p);
    g->tp.ops = &fake_ops;
    g->tp.impl = &g->f;
    g->tp.rank = 0;
    g->tp.size = size;
    static const uint32_t empty = 0;
    g->f.peer = &empty;
    g->f.peer_bytes = 4;
    g->rows = rows;
    g->cols = cols;
    g->count = rows * cols;
    const proto_shape_t shape = {&codec_dgc_ops, g->p, rows, cols, g->count, size};
    g->state_floats = protocol_dgc.state_floats(&shape);
    g->state = calloc(g->state_floats + 1, sizeof(float));
    g->next = calloc(g->state_floats + 1, sizeof(float));
    g->out = calloc(g->count + 1, sizeof(float));
    /* exactly the sizes promised, so that a sanitizer sees an overrun */
    g->ws = malloc(protocol_dgc.workspace_bytes(&shape));
    g->scratch = malloc(codec_dgc_ops.scratch_bytes(g->p, g->count) + 1);
    ck_assert(protocol_dgc.swaps_state);
    ck_assert(g->state && g->next && g->out && g->ws && g->scratch);
}

static void rig_free(rig_t *g)
{
    free(g->state);
    free(g->next);
    free(g->out);
    free(g->ws);
    free(g->scratch);
}

static terse_status_t rig_call(rig_t *g, const float *grad, uint64_t step, int mean)
{
    proto_call_t c;
    memset(&c, 0, sizeof c);
    c.tp = &g->tp;
    c.codec = &codec_dgc_ops;
    c.prm = g->p;
    c.count = g->count;
    c.rows = g->rows;
    c.cols = g->cols;
    c.layer = 0;
    c.calls = g->calls;
    c.step = step;
    c.state = g->state;
    c.state_next = g->next;
    c.in = grad;
    c.out = g->out;
    c.mean = mean;
    c.ws = g->ws;
    c.scratch = g->scratch;
    c.bad_rank = -1;
    TERSE_CHECK(protocol_dgc.encode(&c));
    g->wire = c.wire_bytes;
    for (int r = 0; r < g->tp.size; r++) g->peer_bytes[r] = r == 0 ? c.wire_bytes : g->f.peer_bytes;
    c.peer_bytes = g->peer_bytes;
    terse_status_t s = protocol_dgc.exchange(&c);
    if (s == TERSE_OK) s = protocol_dgc.decode(&c);
    if (s == TERSE_OK) {
        /* what the engine does for a swaps_state protocol */
        float *t = g->state;
        g->state = g->next;
        g->next = t;
        g->calls++;
    }
    else if (s == TERSE_ERR_MISMATCH) ck_assert_int_eq(c.bad_rank, 1);
    return s;
}

static void expect4(const float *got, float a, float b, float c, float d, const char *what)
{
    const float want[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(got[i] == want[i], "%s[%d] = %.9g, want %.9g", what, i, got[i], want[i]);
}

/* 2x2 at density 0.25: k = 1 of 4, exact top-k (4 <= ceil(2/0.25)); momentum 0.5 keeps
 * every number exact. */
static void hand_params(double p[TERSE_MAX_PARAMS], int nesterov)
{
    params(p, 0.25, 0, DGC_SCHEDULE_PAPER);
    p[DGC_MOMENTUM] = 0.5;
    p[DGC_NESTEROV] = nesterov;
}

START_TEST(momentum_correction_and_factor_masking_by_hand)
{
    double p[TERSE_MAX_PARAMS];
    hand_params(p, 0);
    rig_t g;
    rig_init(&g, p, 2, 2, 1);
    ck_assert_uint_eq(g.state_floats, 8);
    const float g1[4] = {1, -3, 2, 0.5f}, g2[4] = {1, 1, -1, 0.5f}, g3[4] = {0, 0, 0, 0};
    /* u' = g, v' = g; sends -3 at 1; masks it */
    ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
    ck_assert_uint_eq(g.wire, 12);
    expect4(g.out, 0, -3, 0, 0, "out1");
    expect4(g.state, 1, 0, 2, 0.5f, "u1");
    expect4(g.state + 4, 1, 0, 2, 0.5f, "v1");
    /* u' = 0.5 u + g = 1.5 1 0 0.75; v' = v + u' = 2.5 1 2 1.25; sends 2.5 at 0 */
    ck_assert_int_eq(rig_call(&g, g2, 1, 1), TERSE_OK);
    expect4(g.out, 2.5f, 0, 0, 0, "out2");
    expect4(g.state, 0, 1, 0, 0.75f, "u2");
    expect4(g.state + 4, 0, 1, 2, 1.25f, "v2");
    /* u' = 0 0.5 0 0.375; v' = 0 1.5 2 1.625; sends 2 at 2 */
    ck_assert_int_eq(rig_call(&g, g3, 2, 1), TERSE_OK);
    expect4(g.out, 0, 0, 2, 0, "out3");
    expect4(g.state, 0, 0.5f, 0, 0.375f, "u3");
    expect4(g.state + 4, 0, 1.5f, 0, 1.625f, "v3");
    rig_free(&g);
}
END_TEST

START_TEST(nesterov_momentum_correction_by_hand)
{
    double p[TERSE_MAX_PARAMS];
    hand_params(p, 1);
    rig_t g;
    rig_init(&g, p, 2, 2, 1);
    const float g1[4] = {1, -3, 2, 0.5f}, g2[4] = {1, 1, -1, 0.5f}, g3[4] = {0, 0, 0, 0};
    /* u' = (u + g) m = 0.5 -1.5 1 0.25; v' = v + u' + g = 1.5 -4.5 3 0.75 */
    ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
    expect4(g.out, 0, -4.5f, 0, 0, "out1");
    expect4(g.state, 0.5f, 0, 1, 0.25f, "u1");
    expect4(g.state + 4, 1.5f, 0, 3, 0.75f, "v1");
    /* u' = 0.75 0.5 0 0.375; v' = 3.25 1.5 2 1.625 */
    ck_assert_int_eq(rig_call(&g, g2, 0, 1), TERSE_OK);
    expect4(g.out, 3.25f, 0, 0, 0, "out2");
    expect4(g.state, 0, 0.5f, 0, 0.375f, "u2");
    expect4(g.state + 4, 0, 1.5f, 2, 1.625f, "v2");
    /* u' = 0 0.25 0 0.1875; v' = 0 1.75 2 1.8125 */
    ck_assert_int_eq(rig_call(&g, g3, 0, 1), TERSE_OK);
    expect4(g.out, 0, 0, 2, 0, "out3");
    expect4(g.state, 0, 0.25f, 0, 0.1875f, "u3");
    expect4(g.state + 4, 0, 1.75f, 0, 1.8125f, "v3");
    rig_free(&g);
}
END_TEST

START_TEST(local_clipping_scales_the_gradient_to_clip_over_root_n)
{
    double p[TERSE_MAX_PARAMS];
    hand_params(p, 0);
    p[DGC_CLIP] = 2.5;
    rig_t g;
    rig_init(&g, p, 2, 2, 1);
    /* ||g|| = 5 > 2.5: G = g / 2 = 1.5 2 0 0; sends 2 */
    const float g1[4] = {3, 4, 0, 0}, g2[4] = {0.5f, 0, 0, 0};
    ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
    expect4(g.out, 0, 2, 0, 0, "out1");
    expect4(g.state, 1.5f, 0, 0, 0, "u1");
    /* ||g|| = 0.5 within the bound: unclipped; u' = 0.75 + 0.5, v' = 1.5 + 1.25 */
    ck_assert_int_eq(rig_call(&g, g2, 0, 1), TERSE_OK);
    expect4(g.out, 2.75f, 0, 0, 0, "out2");
    expect4(g.state + 4, 0, 0, 0, 0, "v2");
    rig_free(&g);

    /* two ranks: the bound is clip / sqrt(2); the peer sends nothing, out = mine / 2 */
    p[DGC_CLIP] = 5.0;
    rig_init(&g, p, 2, 2, 2);
    ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
    const float coef = (float)(5.0 / sqrt(2.0) / 5.0);
    expect4(g.out, 0, 4.0f * coef / 2.0f, 0, 0, "out 2 ranks");
    expect4(g.state, 3.0f * coef, 0, 0, 0, "u 2 ranks");
    rig_free(&g);
}
END_TEST

START_TEST(messages_of_all_ranks_are_summed_then_averaged_or_not)
{
    double p[TERSE_MAX_PARAMS];
    hand_params(p, 0);
    rig_t g;
    /* the peer sends 1.0 at index 3 */
    unsigned char peer[12];
    const uint32_t pk = 1, pi = 3;
    const float pv = 1.0f;
    memcpy(peer, &pk, 4);
    memcpy(peer + 4, &pi, 4);
    memcpy(peer + 8, &pv, 4);
    const float g1[4] = {1, -3, 2, 0.5f};
    for (int mean = 0; mean < 2; mean++) {
        rig_init(&g, p, 2, 2, 3);
        g.f.peer = peer;
        g.f.peer_bytes = 12;
        ck_assert_int_eq(rig_call(&g, g1, 0, mean), TERSE_OK);
        if (mean) expect4(g.out, 0, -1.0f, 0, 2.0f / 3.0f, "mean of 3");
        else expect4(g.out, 0, -3, 0, 2, "sum of 3");
        rig_free(&g);
    }
}
END_TEST

START_TEST(a_malformed_peer_message_leaves_the_state_unchanged)
{
    double p[TERSE_MAX_PARAMS];
    hand_params(p, 0);
    rig_t g;
    rig_init(&g, p, 2, 2, 2);
    const float g1[4] = {1, -3, 2, 0.5f}, g2[4] = {1, 1, -1, 0.5f};
    ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
    float before[8];
    memcpy(before, g.state, sizeof before);
    /* index 4 is out of range for 4 elements */
    unsigned char peer[12];
    const uint32_t pk = 1, pi = 4;
    memcpy(peer, &pk, 4);
    memcpy(peer + 4, &pi, 4);
    memset(peer + 8, 0, 4);
    g.f.peer = peer;
    g.f.peer_bytes = 12;
    ck_assert_int_eq(rig_call(&g, g2, 0, 1), TERSE_ERR_MISMATCH);
    ck_assert(memcmp(before, g.state, sizeof before) == 0);
    /* a size above the bound is refused before the exchange */
    g.f.peer_bytes = 4 + 8 * 2;
    ck_assert_int_eq(rig_call(&g, g2, 0, 1), TERSE_ERR_MISMATCH);
    ck_assert(memcmp(before, g.state, sizeof before) == 0);
    rig_free(&g);
}
END_TEST

START_TEST(warmup_density_follows_the_step)
{
    double p[TERSE_MAX_PARAMS];
    params(p, 0.01, 2, DGC_SCHEDULE_PAPER);
    p[DGC_SAMPLE] = 1.0; /* exact top-k: exactly k entries */
    rig_t g;
    rig_init(&g, p, 10, 10, 1);
    float grad[100];
    uint64_t s = 5;
    fill(grad, 100, &s, DIST_UNIFORM);
    static const size_t k[4] = {25, 7, 1, 1}; /* 0.25, 0.0625, 0.01, 0.01 */
    for (uint64_t e = 0; e < 4; e++) {
        ck_assert_int_eq(rig_call(&g, grad, e, 1), TERSE_OK);
        ck_assert_uint_eq(g.wire, 4 + 8 * k[e]);
    }
    rig_free(&g);
}
END_TEST

START_TEST(dense_layers_get_momentum_after_the_mean)
{
    for (int nest = 0; nest < 2; nest++) {
        double p[TERSE_MAX_PARAMS];
        hand_params(p, nest);
        p[DGC_CLIP] = 0.1; /* dense layers are not clipped */
        rig_t g;
        rig_init(&g, p, 1, 2, 1);
        ck_assert_uint_eq(g.state_floats, 2);
        const float g1[2] = {1, 2}, g2[2] = {2, -2};
        ck_assert_int_eq(rig_call(&g, g1, 0, 1), TERSE_OK);
        ck_assert_uint_eq(g.wire, 8);
        if (!nest) {
            /* mmt = g = out */
            ck_assert(g.out[0] == 1 && g.out[1] == 2 && g.state[0] == 1 && g.state[1] == 2);
        } else {
            /* mmt = g m = 0.5 1; out = mmt + g = 1.5 3 */
            ck_assert(g.out[0] == 1.5f && g.out[1] == 3 && g.state[0] == 0.5f && g.state[1] == 1);
        }
        ck_assert_int_eq(rig_call(&g, g2, 0, 1), TERSE_OK);
        if (!nest) {
            /* mmt = 0.5 mmt + g = 2.5 -1 */
            ck_assert(g.out[0] == 2.5f && g.out[1] == -1 && g.state[0] == 2.5f && g.state[1] == -1);
        } else {
            /* mmt = (mmt + g) m = 1.25 -0.5; out = 3.25 -2.5 */
            ck_assert(g.out[0] == 3.25f && g.out[1] == -2.5f && g.state[0] == 1.25f && g.state[1] == -0.5f);
        }
        rig_free(&g);
    }
    /* a 2-D layer at density 1 is dense too (the reference sends it uncompressed) */
    double p[TERSE_MAX_PARAMS];
    params(p, 1.0, 0, DGC_SCHEDULE_PAPER);
    ck_assert(!dgc_sparsifies(p, 8, 8));
    params(p, 0.5, 0, DGC_SCHEDULE_PAPER);
    ck_assert(dgc_sparsifies(p, 2, 2) && !dgc_sparsifies(p, 1, 64) && !dgc_sparsifies(p, 64, 1));
}
END_TEST

static Suite *dgc_suite(void)
{
    Suite *s = suite_create("dgc");

    TCase *tc_w = tcase_create("warmup");
    tcase_add_test(tc_w, paper_schedule_is_four_to_the_minus_e_plus_one_then_the_density);
    tcase_add_test(tc_w, geometric_schedule_matches_the_reference_code_trace);
    tcase_add_test(tc_w, no_warmup_gives_the_density_from_the_first_step);
    tcase_add_test(tc_w, density_never_grows_and_step_zero_bounds_every_message);
    suite_add_tcase(s, tc_w);

    TCase *tc_p = tcase_create("plan");
    tcase_add_test(tc_p, small_tensor_plan_samples_everything);
    tcase_add_test(tc_p, large_tensor_plan_strides_down_by_eight);
    suite_add_tcase(s, tc_p);

    TCase *tc_s = tcase_create("select");
    tcase_set_timeout(tc_s, 240);
    tcase_add_test(tc_s, small_tensor_selection_is_the_exact_topk_ties_by_lower_index);
    tcase_add_test(tc_s, selection_matches_the_reference_on_random_vectors);
    tcase_add_test(tc_s, selection_matches_the_reference_on_a_million_elements);
    tcase_add_test(tc_s, selection_is_the_same_at_both_simd_levels);
    tcase_add_test(tc_s, momentum_fused_into_the_selection_changes_nothing);
    tcase_add_test(tc_s, the_sample_start_follows_the_key);
    tcase_add_test(tc_s, adaptation_stops_after_ten_iterations);
    suite_add_tcase(s, tc_s);

    TCase *tc_c = tcase_create("codec");
    tcase_add_test(tc_c, codec_encodes_at_the_base_density_and_decodes_its_message);
    tcase_add_test(tc_c, decode_rejects_malformed_messages_and_leaves_out_untouched);
    suite_add_tcase(s, tc_c);

    TCase *tc_m = tcase_create("protocol");
    tcase_add_test(tc_m, momentum_correction_and_factor_masking_by_hand);
    tcase_add_test(tc_m, nesterov_momentum_correction_by_hand);
    tcase_add_test(tc_m, local_clipping_scales_the_gradient_to_clip_over_root_n);
    tcase_add_test(tc_m, messages_of_all_ranks_are_summed_then_averaged_or_not);
    tcase_add_test(tc_m, a_malformed_peer_message_leaves_the_state_unchanged);
    tcase_add_test(tc_m, warmup_density_follows_the_step);
    tcase_add_test(tc_m, dense_layers_get_momentum_after_the_mean);
    suite_add_tcase(s, tc_m);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dgc_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
