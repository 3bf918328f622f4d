/* Unit tests for L-GreCo's codec families (src/lgreco_family.c): the candidate grids, the
 * exact wire bytes, and the measured errors against direct computations: TopK's error
 * against the codec's own encode/decode, PowerSGD's truncation error against a matrix of
 * known singular values, RandK's against its closed form, QSGD's monotone in bits. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "lgreco.h"
#include "powersgd.h"
#include "topk.h"

extern const codec_ops_t codec_topk_ops, codec_qsgd_ops, codec_randk_ops, codec_dgc_ops;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static float rng_float(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0); }

static const double default_adapt[LGRECO_N_PARAMS] = {500, 10, 1, 0.5, 2, 10000};

/* A layer of `codec` configured by `text` ("compressor=topk:density=0.05"), set up for L-GreCo. */
static void layer(const char *text, size_t rows, size_t cols, terse_config_t *cfg, lgreco_layer_t *lg,
                  const double *ap)
{
    config_defaults(cfg);
    ck_assert_int_eq(config_parse(cfg, text, 0), TERSE_OK);
    lgreco_layer_init(lg, &cfg->compressor, ap ? ap : default_adapt, rows, cols);
}

/* lgreco_measure with its scratch sized by lgreco_work_bytes (and poisoned: the families
 * must not read scratch they did not write). */
static void measure(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                    size_t cols, const float *A, double scale, double *sizes, double *errors)
{
    const size_t bytes = lgreco_work_bytes(lg, codec, base, rows, cols);
    void *work = malloc(bytes + 1);
    ck_assert_ptr_nonnull(work);
    memset(work, 0xff, bytes + 1);
    lgreco_measure(lg, codec, base, rows, cols, A, scale, work, sizes, errors);
    free(work);
}

START_TEST(lgreco_density_grid_is_geometric_around_the_default)
{
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=topk:density=0.04", 100, 100, &cfg, &lg, NULL);
    ck_assert_uint_eq(lg.n_cand, 7);
    ck_assert_uint_eq(lg.uniform, 3);
    ck_assert(lg.cand[3] == 0.04);
    ck_assert(fabs(lg.cand[0] - 0.02) < 1e-15 && fabs(lg.cand[6] - 0.08) < 1e-15);
    for (size_t i = 1; i < 7; i++) ck_assert(fabs(lg.cand[i] / lg.cand[i - 1] - pow(2.0, 1.0 / 3.0)) < 1e-12);
}
END_TEST

START_TEST(lgreco_topk_without_density_adapts_its_default)
{
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=topk", 100, 100, &cfg, &lg, NULL);
    ck_assert(lg.cand[lg.uniform] == TOPK_DEFAULT_DENSITY);
    ck_assert(cfg.compressor.p[lg.param] == TOPK_DEFAULT_DENSITY);
}
END_TEST

START_TEST(lgreco_topk_k_grid_is_rounded_and_clamped)
{
    terse_config_t cfg;
    lgreco_layer_t lg;
    const double ap[LGRECO_N_PARAMS] = {500, 10, 1, 0.01, 1000, 10000};
    layer("compressor=topk:k=10", 10, 10, &cfg, &lg, ap);
    ck_assert(lg.cand[lg.uniform] == 10.0);
    for (size_t i = 0; i < lg.n_cand; i++) {
        ck_assert(lg.cand[i] == round(lg.cand[i]));
        ck_assert(lg.cand[i] >= 1.0 && lg.cand[i] <= 100.0);
    }
}
END_TEST

START_TEST(lgreco_rank_and_bits_grids_are_integer_ranges)
{
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=powersgd:rank=4", 64, 64, &cfg, &lg, NULL);
    ck_assert_uint_eq(lg.n_cand, 7); /* 2..8, the reference's ResNet setting */
    ck_assert(lg.cand[0] == 2.0 && lg.cand[6] == 8.0 && lg.cand[lg.uniform] == 4.0);
    layer("compressor=powersgd:rank=1", 64, 64, &cfg, &lg, NULL);
    ck_assert(lg.cand[0] == 1.0); /* floor(0.5) = 0 is no rank: clamped to 1 */
    layer("compressor=qsgd:bits=4", 64, 64, &cfg, &lg, NULL);
    ck_assert_uint_eq(lg.n_cand, 7);
    ck_assert(lg.cand[0] == 2.0 && lg.cand[6] == 8.0);
    const double wide[LGRECO_N_PARAMS] = {500, 10, 1, 0.25, 4, 10000};
    layer("compressor=powersgd:rank=32", 512, 512, &cfg, &lg, wide);
    ck_assert_uint_le(lg.n_cand, LGRECO_MAX_CANDIDATES); /* 8..128 thinned */
    ck_assert(lg.cand[0] == 8.0 && lg.cand[lg.n_cand - 1] == 128.0 && lg.cand[lg.uniform] == 32.0);
    for (size_t i = 1; i < lg.n_cand; i++) ck_assert(lg.cand[i] > lg.cand[i - 1]);
}
END_TEST

/* TopK: the measured error equals ||A - decode(encode(A))|| with the codec itself. */
START_TEST(lgreco_topk_error_matches_the_codec)
{
    enum { R = 37, C = 29, N = R * C };
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=topk:density=0.05", R, C, &cfg, &lg, NULL);
    float A[N], out[N];
    unsigned char msg[4 + 8 * N];
    uint64_t seed = 7;
    for (size_t i = 0; i < N; i++) A[i] = rng_float(&seed) * (i % 5 == 0 ? 10.0f : 1.0f);
    double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
    measure(&lg, &codec_topk_ops, cfg.compressor.p, R, C, A, 1.0, sizes, errors);
    for (size_t c = 0; c < lg.n_cand; c++) {
        double prm[TERSE_MAX_PARAMS];
        lgreco_candidate_params(&lg, cfg.compressor.p, c, prm);
        size_t bytes = codec_topk_ops.encode(prm, NULL, A, N, msg, NULL);
        ck_assert(sizes[c] == (double)bytes);
        memset(out, 0, sizeof out);
        ck_assert_int_eq(codec_topk_ops.decode_add(prm, msg, bytes, N, out, NULL), TERSE_OK);
        double s = 0;
        for (size_t i = 0; i < N; i++) s += ((double)A[i] - out[i]) * ((double)A[i] - out[i]);
        ck_assert_msg(fabs(errors[c] - sqrt(s)) <= 1e-9 * sqrt(s), "candidate %zu: %g vs %g", c, errors[c], sqrt(s));
        if (c) ck_assert(errors[c] <= errors[c - 1]);
    }
}
END_TEST

/* PowerSGD: A = U diag(s) V^T with orthonormal U, V built from rotations; the error of
 * rank r is sqrt(sum_{i > r} s_i^2), and the size is 4 r (rows + cols). Tall and wide (the
 * iteration runs on the short side), at scale 1 and 1e-4 (the squared singular values of
 * the small one come near the Gram-Schmidt guard, POWERSGD_EPS). */
START_TEST(lgreco_powersgd_error_is_the_truncation_error)
{
    enum { R = 40, C = 30, K = 6 };
    static const double s[K] = {10, 6, 3, 1.5, 0.5, 0.1};
    for (int wide = 0; wide < 2; wide++)
        for (int sc = 0; sc < 2; sc++) {
            const double scale = sc ? 1e-4 : 1.0;
            const size_t rows = wide ? C : R, cols = wide ? R : C;
            terse_config_t cfg;
            lgreco_layer_t lg;
            layer("compressor=powersgd:rank=3", rows, cols, &cfg, &lg, NULL);
            /* columns of U and V: disjoint supports make them orthonormal without arithmetic
             * error; u_k spreads over 6 rows (wide: 5), v_k over 5 columns (wide: 6), all
             * entries equal */
            static float A[R * C];
            memset(A, 0, sizeof A);
            const size_t ur = wide ? 5 : 6, vc = wide ? 6 : 5;
            for (size_t k = 0; k < K; k++)
                for (size_t i = ur * k; i < ur * k + ur; i++)
                    for (size_t j = vc * k; j < vc * k + vc; j++)
                        A[i * cols + j] = (float)(scale * s[k] / sqrt(6.0 * 5.0));
            double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
            measure(&lg, &codec_powersgd_ops, cfg.compressor.p, rows, cols, A, 1.0, sizes, errors);
            for (size_t c = 0; c < lg.n_cand; c++) {
                size_t r = (size_t)lg.cand[c];
                double want = 0;
                for (size_t i = r; i < K; i++) want += s[i] * s[i];
                want = scale * sqrt(want);
                ck_assert(sizes[c] == 4.0 * (double)r * (R + C));
                ck_assert_msg(fabs(errors[c] - want) < 1e-3 * scale * s[0], "%s, scale %g, rank %zu: %g vs %g",
                              wide ? "wide" : "tall", scale, r, errors[c], want);
            }
        }
}
END_TEST

/* A rank at which the layer would not compress by min_rate is excluded. */
START_TEST(lgreco_powersgd_excludes_ranks_that_would_go_dense)
{
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=powersgd:rank=4", 12, 12, &cfg, &lg, NULL);
    static float A[144];
    uint64_t seed = 3;
    for (size_t i = 0; i < 144; i++) A[i] = rng_float(&seed);
    double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
    measure(&lg, &codec_powersgd_ops, cfg.compressor.p, 12, 12, A, 1.0, sizes, errors);
    for (size_t c = 0; c < lg.n_cand; c++) {
        const int dense = 24.0 * lg.cand[c] * 2.0 >= 144.0; /* (rows + cols) r min_rate >= rows cols */
        ck_assert_msg(isinf(errors[c]) == dense, "rank %g: error %g", lg.cand[c], errors[c]);
    }
}
END_TEST

START_TEST(lgreco_randk_error_is_its_expectation)
{
    enum { N = 1000 };
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=randk:density=0.1", N, 1, &cfg, &lg, NULL);
    float A[N];
    double total = 0;
    for (size_t i = 0; i < N; i++) A[i] = (float)(i % 7) - 3.0f, total += (double)A[i] * A[i];
    double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
    measure(&lg, &codec_randk_ops, cfg.compressor.p, N, 1, A, 1.0, sizes, errors);
    ck_assert(sizes[lg.uniform] == 4.0 * 100);
    ck_assert(fabs(errors[lg.uniform] - sqrt(0.9 * total)) < 1e-9 * total);
}
END_TEST

START_TEST(lgreco_qsgd_error_falls_with_bits_and_nan_propagates)
{
    enum { N = 4096 };
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=qsgd:bits=4", N, 1, &cfg, &lg, NULL);
    static float A[N];
    uint64_t seed = 11;
    for (size_t i = 0; i < N; i++) A[i] = rng_float(&seed);
    double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
    measure(&lg, &codec_qsgd_ops, cfg.compressor.p, N, 1, A, 1.0, sizes, errors);
    for (size_t c = 1; c < lg.n_cand; c++) {
        ck_assert(sizes[c] > sizes[c - 1]);
        ck_assert_msg(errors[c] < errors[c - 1], "bits %g: %g, bits %g: %g", lg.cand[c], errors[c],
                      lg.cand[c - 1], errors[c - 1]);
    }
    A[17] = NAN;
    measure(&lg, &codec_qsgd_ops, cfg.compressor.p, N, 1, A, 1.0, sizes, errors);
    for (size_t c = 0; c < lg.n_cand; c++) ck_assert(isnan(errors[c]));
}
END_TEST

/* Buckets whose range overflows a float (hi - lo > FLT_MAX) or lies among the subnormals
 * have the errors of the same values scaled by a power of two into the normal range, scaled
 * back: finite, and equal up to rounding. */
START_TEST(lgreco_qsgd_error_at_the_ends_of_float)
{
    enum { N = 1000 };
    static const int shift[] = {-1, 100, 126};
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=qsgd:bits=4,bucket=100", N, 1, &cfg, &lg, NULL);
    static float A[N], B[N];
    for (size_t t = 0; t < sizeof shift / sizeof shift[0]; t++) {
        /* A at the edge (3e38, or subnormals), B = A * 2^shift[t] in the normal range, exactly */
        uint64_t seed = 3 + t;
        for (size_t i = 0; i < N; i++) {
            A[i] = shift[t] < 0 ? rng_float(&seed) * 3.0e38f : rng_float(&seed) * 1.0e-39f;
            if (i % 100 == 0) A[i] = shift[t] < 0 ? 3.0e38f : 1.0e-39f; /* every bucket's range */
            B[i] = ldexpf(A[i], shift[t]);
        }
        double sizes[LGRECO_MAX_CANDIDATES], ea[LGRECO_MAX_CANDIDATES], eb[LGRECO_MAX_CANDIDATES];
        measure(&lg, &codec_qsgd_ops, cfg.compressor.p, N, 1, A, 1.0, sizes, ea);
        measure(&lg, &codec_qsgd_ops, cfg.compressor.p, N, 1, B, 1.0, sizes, eb);
        for (size_t c = 0; c < lg.n_cand; c++) {
            const double want = ldexp(eb[c], -shift[t]);
            ck_assert_msg(isfinite(ea[c]) && ea[c] > 0, "shift %d, bits %g: %g", shift[t], lg.cand[c], ea[c]);
            ck_assert_msg(fabs(ea[c] - want) <= 1e-6 * want, "shift %d, bits %g: %g, scaled %g", shift[t],
                          lg.cand[c], ea[c], want);
        }
    }
}
END_TEST

/* Rounding to nearest is deterministic: the expected error is the codec's error. */
START_TEST(lgreco_qsgd_nearest_error_matches_the_codec)
{
    enum { N = 3000 };
    terse_config_t cfg;
    lgreco_layer_t lg;
    layer("compressor=qsgd:bits=4,bucket=100,stochastic=0", N, 1, &cfg, &lg, NULL);
    static float A[N], out[N];
    static unsigned char msg[2 * N + 8 * N];
    uint64_t seed = 5;
    for (size_t i = 0; i < N; i++) A[i] = rng_float(&seed) * (float)(1 + i % 13);
    double sizes[LGRECO_MAX_CANDIDATES], errors[LGRECO_MAX_CANDIDATES];
    measure(&lg, &codec_qsgd_ops, cfg.compressor.p, N, 1, A, 1.0, sizes, errors);
    for (size_t c = 0; c < lg.n_cand; c++) {
        double prm[TERSE_MAX_PARAMS];
        lgreco_candidate_params(&lg, cfg.compressor.p, c, prm);
        const codec_ctx_t ctx = {1, 0, N, 1};
        size_t bytes = codec_qsgd_ops.encode(prm, &ctx, A, N, msg, NULL);
        ck_assert(sizes[c] == (double)bytes);
        memset(out, 0, sizeof out);
        ck_assert_int_eq(codec_qsgd_ops.decode_add(prm, msg, bytes, N, out, NULL), TERSE_OK);
        double e = 0;
        for (size_t i = 0; i < N; i++) e += ((double)A[i] - out[i]) * ((double)A[i] - out[i]);
        ck_assert_msg(fabs(errors[c] - sqrt(e)) < 1e-4 * sqrt(e), "bits %g: %g vs codec %g", lg.cand[c],
                      errors[c], sqrt(e));
    }
}
END_TEST

/* Every family measures the window's sum and scales its errors (lgreco_measure's scale):
 * what measuring the mean gives, bit for bit when the scale is a power of two (which
 * commutes with every rounding; PowerSGD's orthogonalisation adds an epsilon to each norm,
 * so there to 1e-7), within float rounding otherwise; and a NaN or an Inf in A makes every
 * error NaN. */
START_TEST(lgreco_errors_scale_with_the_window_and_see_non_finite_sums)
{
    static const struct { const char *text; const codec_ops_t *codec; } fam[] = {
        {"compressor=topk:density=0.05", &codec_topk_ops},
        {"compressor=dgc:density=0.05", &codec_dgc_ops},
        {"compressor=randk:density=0.05", &codec_randk_ops},
        {"compressor=qsgd:bits=4", &codec_qsgd_ops},
        {"compressor=powersgd:rank=2", &codec_powersgd_ops},
    };
    enum { R = 24, C = 40, N = R * C };
    float A[N], B[N];
    uint64_t seed = 17;
    for (size_t i = 0; i < N; i++) A[i] = rng_float(&seed) * (float)(1 + i % 3);
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        terse_config_t cfg;
        lgreco_layer_t lg;
        layer(fam[f].text, R, C, &cfg, &lg, NULL);
        double sizes[LGRECO_MAX_CANDIDATES], ea[LGRECO_MAX_CANDIDATES], eb[LGRECO_MAX_CANDIDATES];
        for (size_t i = 0; i < N; i++) B[i] = A[i] * 0.25f;
        measure(&lg, fam[f].codec, cfg.compressor.p, R, C, A, 0.25, sizes, ea);
        measure(&lg, fam[f].codec, cfg.compressor.p, R, C, B, 1.0, sizes, eb);
        for (size_t c = 0; c < lg.n_cand; c++)
            ck_assert_msg(fabs(ea[c] - eb[c]) <= (fam[f].codec == &codec_powersgd_ops ? 1e-7 * eb[c] : 0.0) &&
                              isfinite(ea[c]) && ea[c] > 0.0,
                          "%s candidate %zu: %.17g vs %.17g", fam[f].text, c, ea[c], eb[c]);
        for (size_t i = 0; i < N; i++) B[i] = A[i] / 10.0f;
        measure(&lg, fam[f].codec, cfg.compressor.p, R, C, A, 0.1, sizes, ea);
        measure(&lg, fam[f].codec, cfg.compressor.p, R, C, B, 1.0, sizes, eb);
        for (size_t c = 0; c < lg.n_cand; c++)
            ck_assert_msg(fabs(ea[c] - eb[c]) <= 1e-4 * eb[c], "%s candidate %zu: %.17g vs %.17g", fam[f].text, c,
                          ea[c], eb[c]);
        const float bad[] = {NAN, INFINITY, -INFINITY};
        for (size_t b = 0; b < 3; b++) {
            memcpy(B, A, sizeof B);
            B[N - 1 - 7 * b] = bad[b];
            measure(&lg, fam[f].codec, cfg.compressor.p, R, C, B, 0.1, sizes, eb);
            for (size_t c = 0; c < lg.n_cand; c++) ck_assert_msg(isnan(eb[c]), "%s: %g in A", fam[f].text, bad[b]);
        }
    }
}
END_TEST

START_TEST(lgreco_families_cover_the_adaptable_codecs)
{
    ck_assert_ptr_nonnull(lgreco_family_for("powersgd"));
    ck_assert_ptr_nonnull(lgreco_family_for("topk"));
    ck_assert_ptr_nonnull(lgreco_family_for("dgc"));
    ck_assert_ptr_nonnull(lgreco_family_for("randk"));
    ck_assert_ptr_nonnull(lgreco_family_for("qsgd"));
    ck_assert_ptr_null(lgreco_family_for("onebit"));
    ck_assert_ptr_null(lgreco_family_for("fp16"));
    ck_assert_ptr_null(lgreco_family_for("none"));
}
END_TEST

static Suite *lgreco_family_suite(void)
{
    Suite *s = suite_create("lgreco_family");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, lgreco_density_grid_is_geometric_around_the_default);
    tcase_add_test(tc, lgreco_topk_without_density_adapts_its_default);
    tcase_add_test(tc, lgreco_topk_k_grid_is_rounded_and_clamped);
    tcase_add_test(tc, lgreco_rank_and_bits_grids_are_integer_ranges);
    tcase_add_test(tc, lgreco_topk_error_matches_the_codec);
    tcase_add_test(tc, lgreco_powersgd_error_is_the_truncation_error);
    tcase_add_test(tc, lgreco_powersgd_excludes_ranks_that_would_go_dense);
    tcase_add_test(tc, lgreco_randk_error_is_its_expectation);
    tcase_add_test(tc, lgreco_qsgd_error_falls_with_bits_and_nan_propagates);
    tcase_add_test(tc, lgreco_qsgd_nearest_error_matches_the_codec);
    tcase_add_test(tc, lgreco_qsgd_error_at_the_ends_of_float);
    tcase_add_test(tc, lgreco_errors_scale_with_the_window_and_see_non_finite_sums);
    tcase_add_test(tc, lgreco_families_cover_the_adaptable_codecs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lgreco_family_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
