/* Unit tests for PowerSGD's linear algebra and standalone codec (compressors/powersgd.c):
 * the rank-1 two-worker trace of ALGORITHMS.md §10.2 item 2, the products against plain
 * triple loops in the documented order (bit for bit) at each SIMD level, the AVX2 products
 * against the scalar ones on many shapes and awkward values, Gram-Schmidt's orthonormality
 * and its eps guard, which layers go dense, and the codec's round trip (the same bytes at
 * each level) and message validation. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "powersgd.h"
#include "simd.h"

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

/* xorshift64*: deterministic across platforms, so a failing seed reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static float rnd(uint64_t *s) { return (float)((double)(rng_next(s) >> 11) * 0x1.0p-52 - 1.0); }

static void fill(float *v, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) v[i] = rnd(&s);
}

/* Values on which a change in the order of a sum shows, even after the double sum is
 * rounded to float: ±(1 + i/8) * 2^e with e in {-30, 0, 30}, so that products of 2^60 and
 * of 1 meet in one sum and cancel or not depending on the order (2^60 + 1 - 2^60 is 0, not
 * 1); exact zeros of both signs; with specials, also infinities and subnormals. */
static void fill_hard(float *v, size_t n, uint64_t seed, int specials)
{
    static const float special[] = {INFINITY, -INFINITY, 1e-45f, -3e-41f};
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        const uint64_t b = rng_next(&s);
        v[i] = ldexpf(1.0f + (float)(b % 8) / 8.0f, 30 * (int)((b >> 3) % 3) - 30);
        if ((b >> 5) & 1) v[i] = -v[i];
        if ((b >> 6) % 16 == 0) v[i] = (b >> 10) & 1 ? -0.0f : 0.0f;
        if (specials && (b >> 11) % 64 == 0) v[i] = special[(b >> 17) % 4];
    }
}

/* Parameters as the configuration would give them: the table's defaults, then overrides. */
static void params(double p[TERSE_MAX_PARAMS], double rank, double min_rate)
{
    for (size_t i = 0; i < POWERSGD_N_PARAMS; i++) p[i] = powersgd_params[i].def;
    p[POWERSGD_RANK] = rank;
    p[POWERSGD_MIN_RATE] = min_rate;
}

/* max |A^T A - I| over the r x r entries, for a len x r row-major A. */
static double orthonormal_error(const float *a, size_t len, size_t r)
{
    double worst = 0;
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < r; j++) {
            double s = 0;
            for (size_t t = 0; t < len; t++) s += (double)a[t * r + i] * a[t * r + j];
            double e = fabs(s - (i == j ? 1.0 : 0.0));
            if (e > worst) worst = e;
        }
    return worst;
}

/* ---- ALGORITHMS.md §10.2 item 2 --------------------------------------------------------- */

/* The workers' matrices are e_i + approx from the printed trace (they come out integer). */
static const float trace_m1[12] = {1, 2, 0, 0, 1, 1, 2, 0, 1, 1, 1, 1};
static const float trace_m2[12] = {0, 1, 1, 1, 0, 2, 1, 1, 0, 0, 2, 1};

START_TEST(trace_rank1_two_workers_matches_algorithms_10_2)
{
    const float q0v = (float)(1.0 / sqrt(3.0));
    float q0[3] = {q0v, q0v, q0v}, p1[4], p2[4], P[4], Q1[3], Q2[3], Q[3], A[12];
    float *acc = malloc(powersgd_acc_floats(1) * sizeof *acc);
    powersgd_orthogonalize(q0, 3, 1);
    powersgd_mul(trace_m1, 4, 3, q0, 1, p1, acc);
    powersgd_mul(trace_m2, 4, 3, q0, 1, p2, acc);
    for (int i = 0; i < 4; i++) P[i] = p1[i] + p2[i];
    powersgd_orthogonalize(P, 4, 1);
    static const double want_p[4] = {0.474579, 0.474579, 0.474579, 0.569495};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabs(P[i] - want_p[i]) < 1e-6, "P[%d] = %.7f, trace %.6f", i, P[i], want_p[i]);

    powersgd_mul_t(trace_m1, 4, 3, P, 1, Q1, acc);
    powersgd_mul_t(trace_m2, 4, 3, P, 1, Q2, acc);
    for (int j = 0; j < 3; j++) Q[j] = (Q1[j] + Q2[j]) / 2.0f;
    static const double want_q[3] = {1.471195, 2.04069, 1.755942};
    for (int j = 0; j < 3; j++)
        ck_assert_msg(fabs(Q[j] - want_q[j]) < 1e-6, "Q[%d] = %.7f, trace %.6f", j, Q[j], want_q[j]);

    powersgd_outer(P, 4, Q, 3, 1, A, 0, acc);
    static const double want_a[12] = {0.698198, 0.968468, 0.833333, 0.698198, 0.968468, 0.833333,
                                      0.698198, 0.968468, 0.833333, 0.837838, 1.162162, 1.0};
    static const double want_e1[12] = {0.301802, 1.031532, -0.833333, -0.698198, 0.031532, 0.166667,
                                       1.301802, -0.968468, 0.166667, 0.162162, -0.162162, 0.0};
    static const double want_e2[12] = {-0.698198, 0.031532, 0.166667, 0.301802, -0.968468, 1.166667,
                                       0.301802, 0.031532, -0.833333, -0.837838, 0.837838, 0.0};
    for (int t = 0; t < 12; t++) {
        ck_assert_msg(fabs(A[t] - want_a[t]) < 1e-6, "approx[%d] = %.7f, trace %.6f", t, A[t], want_a[t]);
        float e1 = trace_m1[t] - A[t], e2 = trace_m2[t] - A[t];
        ck_assert_msg(fabs(e1 - want_e1[t]) < 1e-6, "e_1[%d] = %.7f, trace %.6f", t, e1, want_e1[t]);
        ck_assert_msg(fabs(e2 - want_e2[t]) < 1e-6, "e_2[%d] = %.7f, trace %.6f", t, e2, want_e2[t]);
    }
    free(acc);
}
END_TEST

/* ---- Products in the documented order --------------------------------------------------- */

START_TEST(products_equal_plain_loops_bit_for_bit_at_each_level)
{
    /* m = 6000 > 16384 / 3: M Q and M^T P run in two column blocks; the others reach the
     * vector kernels' row and column tails, several rank chunks and a partial one */
    static const size_t shapes[][3] = {{1, 1, 1}, {7, 5, 2}, {64, 48, 4}, {3, 6000, 3}, {20, 30, 7},
                                       {9, 1030, 5}, {33, 17, 1}, {2, 9000, 2}, {13, 70, 9}};
    static const simd_level_t levels[] = {SIMD_SCALAR, SIMD_AVX2};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t n = shapes[s][0], m = shapes[s][1], r = shapes[s][2];
        float *M = malloc(n * m * 4), *Q = malloc(m * r * 4), *P = malloc(n * r * 4);
        const size_t most = n * m > (n > m ? n : m) * r ? n * m : (n > m ? n : m) * r;
        float *out = malloc(most * 4), *A = malloc(n * m * 4);
        float *acc = malloc(powersgd_acc_floats(r) * sizeof *acc);
        fill_hard(M, n * m, 1 + s, 0);
        fill_hard(Q, m * r, 100 + s, 0);
        fill_hard(P, n * r, 200 + s, 0);
        for (int l = 0; l < 2; l++) {
            const char *lv = simd_name(simd_set_level(levels[l]));
            powersgd_mul(M, n, m, Q, r, out, acc);
            for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < r; k++) {
                    float c[8] = {0};
                    for (size_t j = 0; j < m; j++) c[j % 8] = fmaf(M[i * m + j], Q[j * r + k], c[j % 8]);
                    float want = ((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]));
                    REQUIRE(memcmp(&want, &out[i * r + k], 4) == 0, "%s M Q %zux%zu r%zu (%zu,%zu)", lv, n, m, r,
                            i, k);
                }

            powersgd_mul_t(M, n, m, P, r, out, acc);
            for (size_t j = 0; j < m; j++)
                for (size_t k = 0; k < r; k++) {
                    float want = 0.0f;
                    for (size_t i = 0; i < n; i++) want = fmaf(M[i * m + j], P[i * r + k], want);
                    REQUIRE(memcmp(&want, &out[j * r + k], 4) == 0, "%s M^T P %zux%zu r%zu (%zu,%zu)", lv, n, m,
                            r, j, k);
                }

            memcpy(A, M, n * m * 4);
            powersgd_outer(P, n, Q, m, r, out, 0, acc);
            powersgd_outer(P, n, Q, m, r, A, 1, acc);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < m; j++) {
                    float want = 0.0f;
                    for (size_t k = 0; k < r; k++) want = fmaf(P[i * r + k], Q[j * r + k], want);
                    float want_add = M[i * m + j] + want;
                    REQUIRE(memcmp(&want, &out[i * m + j], 4) == 0, "%s P Q^T %zux%zu (%zu,%zu)", lv, n, m, i, j);
                    REQUIRE(memcmp(&want_add, &A[i * m + j], 4) == 0, "%s M + P Q^T %zux%zu (%zu,%zu)", lv, n,
                            m, i, j);
                }
        }
        simd_set_level(simd_cpu_level());
        free(M); free(Q); free(P); free(out); free(A); free(acc);
    }
}
END_TEST

#define GUARD 16
static const float guard_value = -1234.5f;

/* Runs the three products of one shape at the given level, with acc one float past the
 * start of its block (the kernels align it themselves), and checks that nothing past
 * powersgd_acc_floats(r) floats of it was written. */
static void products_at(simd_level_t level, const float *M, size_t n, size_t m, const float *Q,
                        const float *P, size_t r, float *pq, float *qt, float *a0, float *a1)
{
    const size_t na = powersgd_acc_floats(r);
    float *acc = malloc((na + 1 + GUARD) * sizeof *acc);
    ck_assert(acc);
    for (size_t t = 0; t < GUARD; t++) acc[1 + na + t] = guard_value;
    simd_set_level(level);
    powersgd_mul(M, n, m, Q, r, pq, acc + 1);
    powersgd_mul_t(M, n, m, P, r, qt, acc + 1);
    powersgd_outer(P, n, Q, m, r, a0, 0, acc + 1);
    powersgd_outer(P, n, Q, m, r, a1, 1, acc + 1);
    simd_set_level(simd_cpu_level());
    for (size_t t = 0; t < GUARD; t++)
        REQUIRE(acc[1 + na + t] == guard_value, "%s %zux%zu r%zu wrote past its %zu floats of acc",
                simd_name(level), n, m, r, na);
    free(acc);
}

/* First index where two float arrays differ in bits, or n. */
static size_t first_difference(const float *a, const float *b, size_t n)
{
    size_t t = 0;
    while (t < n && memcmp(&a[t], &b[t], sizeof *a) == 0) t++;
    return t;
}

START_TEST(avx2_products_equal_scalar_bit_for_bit_on_every_shape)
{
    /* every rank 1 .. 9 on small shapes (1 x m, n x 1, odd sizes, rank above both
     * dimensions); then shapes that cross the kernels' blocks (about 16384 / r columns):
     * M Q's column slices, 32-row blocks and rank chunks, M^T P's column blocks, P Q^T's
     * blocks and row pairs; then empty ones */
    static const size_t dims[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33};
    static const size_t big[][3] = {{3, 6000, 3}, {2, 17000, 1}, {2, 9000, 2}, {70, 4200, 4}, {9, 3500, 5},
                                    {37, 600, 33}, {5, 40, 130}, {1, 4099, 4}, {4099, 1, 4}, {41, 2100, 9},
                                    {0, 7, 3}, {7, 0, 3}, {4, 5, 0}};
    if (simd_cpu_level() < SIMD_AVX2) return; /* nothing to compare with */
    size_t cases = 0;
    for (size_t c = 0; c < 9 * 11 * 11 + sizeof big / sizeof big[0]; c++) {
        size_t n, m, r;
        if (c < 9 * 11 * 11) {
            r = 1 + c / 121;
            n = dims[c / 11 % 11];
            m = dims[c % 11];
        } else {
            n = big[c - 9 * 11 * 11][0];
            m = big[c - 9 * 11 * 11][1];
            r = big[c - 9 * 11 * 11][2];
        }
        const int specials = c % 3 == 2;
        float *M = malloc(n * m * 4), *Q = malloc(m * r * 4), *P = malloc(n * r * 4), *A = malloc(n * m * 4);
        float *out[2][4];
        const size_t len[4] = {n * r, m * r, n * m, n * m};
        for (int l = 0; l < 2; l++)
            for (int o = 0; o < 4; o++) out[l][o] = malloc((len[o] + 8) * 4);
        fill_hard(M, n * m, 7 * c + 1, specials);
        fill_hard(Q, m * r, 7 * c + 2, specials);
        fill_hard(P, n * r, 7 * c + 3, specials);
        fill_hard(A, n * m, 7 * c + 4, 0);
        /* the outputs one float into their blocks: the kernels take any float alignment */
        for (int l = 0; l < 2; l++) {
            memcpy(out[l][3] + 1, A, n * m * 4);
            products_at(l ? SIMD_AVX2 : SIMD_SCALAR, M, n, m, Q, P, r, out[l][0] + 1, out[l][1] + 1,
                        out[l][2] + 1, out[l][3] + 1);
        }
        static const char *what[4] = {"M Q", "M^T P", "P Q^T", "A + P Q^T"};
        for (int o = 0; o < 4; o++) {
            const size_t at = first_difference(out[0][o] + 1, out[1][o] + 1, len[o]);
            REQUIRE(at == len[o], "%s %zux%zu r%zu%s: avx2 differs from scalar at %zu (%a, scalar %a)", what[o], n,
                    m, r, specials ? " with specials" : "", at, out[1][o][1 + at], out[0][o][1 + at]);
        }
        for (int l = 0; l < 2; l++)
            for (int o = 0; o < 4; o++) free(out[l][o]);
        free(M); free(Q); free(P); free(A);
        cases++;
    }
    ck_assert_uint_eq(cases, 9 * 11 * 11 + sizeof big / sizeof big[0]);
}
END_TEST

/* ---- Gram-Schmidt ----------------------------------------------------------------------- */

START_TEST(orthogonalize_gives_orthonormal_columns)
{
    static const size_t shapes[][2] = {{50, 4}, {7, 3}, {4096, 1}, {300, 16}, {5, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t len = shapes[s][0], r = shapes[s][1];
        float *a = malloc(len * r * sizeof *a);
        fill(a, len * r, 7 + s);
        powersgd_orthogonalize(a, len, r);
        double err = orthonormal_error(a, len, r);
        ck_assert_msg(err < 1e-5, "%zu x %zu: max |A^T A - I| = %g", len, r, err);
        free(a);
    }
}
END_TEST

START_TEST(orthogonalize_follows_the_paper_code_formula)
{
    /* 3 x 2, by hand: col0 = (3, 4, 0) / (5 + eps); col1 -= (col0 . col1) col0, normalised */
    float a[6] = {3, 1, 4, 2, 0, 5};
    powersgd_orthogonalize(a, 3, 2);
    const double d0 = 5.0 + 1e-8;
    const float c0[3] = {(float)(3 / d0), (float)(4 / d0), 0.0f};
    for (int t = 0; t < 3; t++) ck_assert_msg(a[2 * t] == c0[t], "col0[%d] = %.9g, want %.9g", t, a[2 * t], c0[t]);
    double dot = (double)c0[0] * 1 + (double)c0[1] * 2 + (double)c0[2] * 5;
    float r1[3] = {(float)(1 - dot * c0[0]), (float)(2 - dot * c0[1]), (float)(5 - dot * c0[2])};
    double ss = (double)r1[0] * r1[0] + (double)r1[1] * r1[1] + (double)r1[2] * r1[2];
    for (int t = 0; t < 3; t++) {
        float want = (float)(r1[t] / (sqrt(ss) + 1e-8));
        ck_assert_msg(a[2 * t + 1] == want, "col1[%d] = %.9g, want %.9g", t, a[2 * t + 1], want);
    }
}
END_TEST

/* The header's definition, column by column, as plain loops: the blocked kernel must give
 * its bits, also where the later columns span more than one block of 32. */
static void orthogonalize_reference(float *a, size_t len, size_t r)
{
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = 0; t < len; t++) ss += (double)a[t * r + i] * (double)a[t * r + i];
        const double d = sqrt(ss) + POWERSGD_EPS;
        for (size_t t = 0; t < len; t++) a[t * r + i] = (float)((double)a[t * r + i] / d);
        for (size_t j = i + 1; j < r; j++) {
            double s = 0.0;
            for (size_t t = 0; t < len; t++) s += (double)a[t * r + i] * (double)a[t * r + j];
            for (size_t t = 0; t < len; t++) a[t * r + j] = (float)((double)a[t * r + j] - s * (double)a[t * r + i]);
        }
    }
}

START_TEST(orthogonalize_equals_the_column_by_column_definition)
{
    static const size_t shapes[][2] = {{1, 1}, {7, 3}, {100, 8}, {64, 32}, {90, 33}, {200, 70}, {3, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t len = shapes[s][0], r = shapes[s][1];
        float *a = malloc(len * r * sizeof *a), *b = malloc(len * r * sizeof *b);
        fill(a, len * r, 31 + s);
        memcpy(b, a, len * r * sizeof *a);
        powersgd_orthogonalize(a, len, r);
        orthogonalize_reference(b, len, r);
        ck_assert_msg(memcmp(a, b, len * r * sizeof *a) == 0, "%zu x %zu differs from the definition", len, r);
        free(a);
        free(b);
    }
}
END_TEST

START_TEST(orthogonalize_keeps_zero_and_dependent_columns_finite)
{
    /* 10 x 3: column 1 zero, column 2 a multiple of column 0 */
    float a[30];
    uint64_t s = 5;
    for (int t = 0; t < 10; t++) {
        a[3 * t] = rnd(&s);
        a[3 * t + 1] = 0.0f;
        a[3 * t + 2] = 2.0f * a[3 * t];
    }
    powersgd_orthogonalize(a, 10, 3);
    double n0 = 0, n2 = 0;
    for (int t = 0; t < 30; t++) ck_assert_msg(isfinite(a[t]), "a[%d] = %g", t, a[t]);
    for (int t = 0; t < 10; t++) {
        ck_assert_msg(a[3 * t + 1] == 0.0f, "the zero column stays zero: a[%d][1] = %g", t, a[3 * t + 1]);
        n0 += (double)a[3 * t] * a[3 * t];
        n2 += (double)a[3 * t + 2] * a[3 * t + 2];
    }
    ck_assert_msg(fabs(n0 - 1) < 1e-6, "column 0 has unit norm: %g", n0);
    /* the dependent column's rounding residue is normalised like any column: at most unit */
    ck_assert_msg(n2 <= 1.0 + 1e-6, "the dependent column's norm^2 is %g", n2);

    float z[12] = {0};
    powersgd_orthogonalize(z, 4, 3);
    for (int t = 0; t < 12; t++) ck_assert_msg(z[t] == 0.0f, "an all-zero matrix stays zero: z[%d] = %g", t, z[t]);
}
END_TEST

START_TEST(random_q_is_a_pure_function_of_the_key)
{
    float a[60], b[60], c[60];
    powersgd_random(42, 20, 3, a);
    powersgd_random(42, 20, 3, b);
    powersgd_random(43, 20, 3, c);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    double mean = 0, var = 0;
    float big[20000];
    powersgd_random(7, 10000, 2, big);
    for (int t = 0; t < 20000; t++) mean += big[t];
    mean /= 20000;
    for (int t = 0; t < 20000; t++) var += (big[t] - mean) * (big[t] - mean);
    var /= 20000;
    ck_assert_msg(fabs(mean) < 0.05 && fabs(var - 1) < 0.05, "N(0,1): mean %g, variance %g", mean, var);
}
END_TEST

/* ---- Which layers compress -------------------------------------------------------------- */

START_TEST(goes_dense_follows_pytorchs_rule)
{
    const codec_ops_t *ops = &codec_powersgd_ops;
    double p[TERSE_MAX_PARAMS];
    params(p, 4, 2);
    ck_assert_int_eq(ops->goes_dense(p, 100, 1), 1);     /* 1-D */
    ck_assert_int_eq(ops->goes_dense(p, 1, 100), 1);
    ck_assert_int_eq(ops->goes_dense(p, 0, 0), 1);
    ck_assert_int_eq(ops->goes_dense(p, 4096, 4096), 0); /* 8192 * 4 * 2 < 16M */
    ck_assert_int_eq(ops->goes_dense(p, 10, 10), 1);     /* 20 * 4 * 2 = 160 >= 100 */
    ck_assert_int_eq(ops->goes_dense(p, 64, 48), 0);     /* 112 * 4 * 2 = 896 < 3072 */
}
END_TEST

START_TEST(goes_dense_at_the_boundary_and_with_small_shapes)
{
    const codec_ops_t *ops = &codec_powersgd_ops;
    double p[TERSE_MAX_PARAMS];
    params(p, 4, 2);
    /* 16 x 16, r' 4: (16 + 16) * 4 * 2 = 256 = 16 * 16, not below: dense */
    ck_assert_int_eq(ops->goes_dense(p, 16, 16), 1);
    /* 17 x 16: 33 * 4 * 2 = 264 < 272: compressed */
    ck_assert_int_eq(ops->goes_dense(p, 17, 16), 0);
    /* rank larger than the shape: r' = min(rows, cols) = 2, (2 + 50) * 2 * 1 = 104 >= 100 */
    params(p, 8, 1);
    ck_assert_int_eq(ops->goes_dense(p, 2, 50), 1);
    /* 7 x 5 rank 1 min_rate 2: 12 * 1 * 2 = 24 < 35 */
    params(p, 1, 2);
    ck_assert_int_eq(ops->goes_dense(p, 7, 5), 0);
    ck_assert_uint_eq(powersgd_rank(p, 7, 5), 1);
    params(p, 4, 2);
    ck_assert_uint_eq(powersgd_rank(p, 7, 5), 4);
    ck_assert_uint_eq(powersgd_rank(p, 3, 5), 3);
    ck_assert_uint_eq(powersgd_rank(p, 0, 5), 0);
}
END_TEST

/* ---- The standalone codec --------------------------------------------------------------- */

/* Encodes a rows x cols matrix of rank `true_rank` with rank `rank`; returns the relative
 * Frobenius error of the decoded result. */
static double codec_roundtrip(size_t rows, size_t cols, size_t true_rank, double rank, size_t *bytes_p)
{
    const codec_ops_t *ops = &codec_powersgd_ops;
    double p[TERSE_MAX_PARAMS];
    params(p, rank, 2);
    const size_t n = rows * cols;
    float *u = malloc(rows * true_rank * 4), *v = malloc(cols * true_rank * 4);
    float *M = malloc(n * 4), *out = calloc(n, 4);
    fill(u, rows * true_rank, 31);
    fill(v, cols * true_rank, 32);
    float *acc = malloc(powersgd_acc_floats(true_rank) * sizeof *acc);
    powersgd_outer(u, rows, v, cols, true_rank, M, 0, acc);
    free(acc);
    size_t mb = ops->max_bytes(p, n), sb = ops->scratch_bytes(p, n);
    void *msg = malloc(mb), *scratch = malloc(sb);
    const codec_ctx_t ctx = {99, 0, rows, cols};
    size_t bytes = ops->encode(p, &ctx, M, n, msg, scratch);
    ck_assert_uint_le(bytes, mb);
    ck_assert_int_eq(ops->decode_add(p, msg, bytes, n, out, scratch), TERSE_OK);
    double err = 0, norm = 0;
    for (size_t t = 0; t < n; t++) {
        err += ((double)out[t] - M[t]) * ((double)out[t] - M[t]);
        norm += (double)M[t] * M[t];
    }
    *bytes_p = bytes;
    free(u); free(v); free(M); free(out); free(msg); free(scratch);
    return sqrt(err / norm);
}

START_TEST(codec_recovers_a_matrix_of_lower_rank)
{
    size_t bytes;
    double e = codec_roundtrip(40, 30, 1, 1, &bytes);
    ck_assert_msg(e < 1e-5, "rank-1 matrix at rank 1: relative error %g", e);
    ck_assert_uint_eq(bytes, POWERSGD_HEADER + 4 * 1 * (40 + 30));
    e = codec_roundtrip(64, 48, 3, 3, &bytes);
    ck_assert_msg(e < 1e-5, "rank-3 matrix at rank 3: relative error %g", e);
    ck_assert_uint_eq(bytes, POWERSGD_HEADER + 4 * 3 * (64 + 48));
    /* a full-rank matrix is approximated, not recovered: the error is well inside (0, 1) */
    float M[64 * 48], out[64 * 48] = {0};
    fill(M, 64 * 48, 77);
    double p[TERSE_MAX_PARAMS];
    params(p, 4, 2);
    void *msg = malloc(codec_powersgd_ops.max_bytes(p, 64 * 48));
    void *scratch = malloc(codec_powersgd_ops.scratch_bytes(p, 64 * 48));
    const codec_ctx_t ctx = {1, 0, 64, 48};
    size_t b = codec_powersgd_ops.encode(p, &ctx, M, 64 * 48, msg, scratch);
    ck_assert_int_eq(codec_powersgd_ops.decode_add(p, msg, b, 64 * 48, out, scratch), TERSE_OK);
    double err = 0, norm = 0;
    for (int t = 0; t < 64 * 48; t++) {
        err += ((double)out[t] - M[t]) * ((double)out[t] - M[t]);
        norm += (double)M[t] * M[t];
    }
    ck_assert_msg(sqrt(err / norm) > 0.5 && sqrt(err / norm) < 1.0, "random 64x48 at rank 4: %g",
                  sqrt(err / norm));
    free(msg);
    free(scratch);
}
END_TEST

START_TEST(codec_sends_and_decodes_the_same_bits_at_both_levels)
{
    static const size_t shapes[][3] = {{64, 48, 4}, {7, 5, 2},   {100, 300, 8},
                                       {1000, 3, 3}, {3, 1000, 1}, {33, 65, 5}};
    const codec_ops_t *ops = &codec_powersgd_ops;
    static const simd_level_t levels[] = {SIMD_SCALAR, SIMD_AVX2};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        double p[TERSE_MAX_PARAMS];
        params(p, (double)shapes[s][2], 1);
        float *in = malloc(n * 4), *out[2];
        unsigned char *msg[2];
        size_t bytes[2];
        void *scratch = malloc(ops->scratch_bytes(p, n));
        fill(in, n, 40 + s);
        const codec_ctx_t ctx = {17 + s, 0, rows, cols};
        for (int l = 0; l < 2; l++) {
            simd_set_level(levels[l]);
            msg[l] = malloc(ops->max_bytes(p, n));
            out[l] = malloc(n * 4);
            fill(out[l], n, 80 + s);
            bytes[l] = ops->encode(p, &ctx, in, n, msg[l], scratch);
            ck_assert_int_eq(ops->decode_add(p, msg[l], bytes[l], n, out[l], scratch), TERSE_OK);
        }
        simd_set_level(simd_cpu_level());
        ck_assert_uint_eq(bytes[0], bytes[1]);
        REQUIRE(memcmp(msg[0], msg[1], bytes[0]) == 0, "%zux%zu: the message differs between the levels", rows,
                cols);
        REQUIRE(first_difference(out[0], out[1], n) == n, "%zux%zu: the decoded sum differs between the levels",
                rows, cols);
        for (int l = 0; l < 2; l++) {
            free(msg[l]);
            free(out[l]);
        }
        free(in);
        free(scratch);
    }
}
END_TEST

START_TEST(codec_max_bytes_is_the_largest_shape)
{
    const codec_ops_t *ops = &codec_powersgd_ops;
    double p[TERSE_MAX_PARAMS];
    params(p, 4, 2);
    ck_assert_uint_eq(ops->max_bytes(p, 0), POWERSGD_HEADER);
    /* 7 is prime: only 7 x 1, r' 1 */
    ck_assert_uint_eq(ops->max_bytes(p, 7), POWERSGD_HEADER + 4 * (7 + 1));
    /* 1000 = 4 x 250 maximises r'(a + b): 4 * 254 = 1016 > 1 * 1001 */
    ck_assert_uint_eq(ops->max_bytes(p, 1000), POWERSGD_HEADER + 4 * 4 * 254);
    /* every shape of 1000 encodes within it, and the count x 1 view of a NULL ctx too */
    static const size_t rows[] = {1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000};
    float in[1000], out[1000] = {0};
    fill(in, 1000, 3);
    float msgf[(POWERSGD_HEADER + 4 * 4 * 254) / 4]; /* float-aligned, like a protocol's */
    unsigned char *msg = (unsigned char *)msgf;
    void *scratch = malloc(ops->scratch_bytes(p, 1000));
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const codec_ctx_t ctx = {1, 0, rows[i], 1000 / rows[i]};
        size_t b = ops->encode(p, &ctx, in, 1000, msg, scratch);
        ck_assert_uint_le(b, sizeof msgf);
        ck_assert_int_eq(ops->decode_add(p, msg, b, 1000, out, scratch), TERSE_OK);
    }
    size_t b = ops->encode(p, NULL, in, 1000, msg, scratch);
    ck_assert_uint_eq(b, POWERSGD_HEADER + 4 * 1001);
    free(scratch);
}
END_TEST

START_TEST(codec_rejects_malformed_messages_and_leaves_out_untouched)
{
    const codec_ops_t *ops = &codec_powersgd_ops;
    double p[TERSE_MAX_PARAMS];
    params(p, 2, 2);
    float in[35], out[35];
    fill(in, 35, 9);
    for (int t = 0; t < 35; t++) out[t] = (float)t;
    float msgf[(POWERSGD_HEADER + 4 * 2 * 12) / 4], badf[sizeof msgf / 4];
    unsigned char *msg = (unsigned char *)msgf, *bad = (unsigned char *)badf;
    void *scratch = malloc(ops->scratch_bytes(p, 35));
    const codec_ctx_t ctx = {5, 0, 7, 5};
    size_t b = ops->encode(p, &ctx, in, 35, msg, scratch);
    ck_assert_uint_eq(b, sizeof msgf);
    float before[35];
    memcpy(before, out, sizeof out);

    ck_assert_int_eq(ops->decode_add(p, msg, b - 4, 35, out, scratch), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(ops->decode_add(p, msg, b + 4, 35, out, scratch), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(ops->decode_add(p, msg, 8, 35, out, scratch), TERSE_ERR_MISMATCH);
    ck_assert_int_eq(ops->decode_add(p, msg, b, 36, out, scratch), TERSE_ERR_MISMATCH);
    uint32_t h[3];
    /* a shape of another count */
    memcpy(bad, msg, b);
    h[0] = 6; h[1] = 5; h[2] = 2;
    memcpy(bad, h, sizeof h);
    ck_assert_int_eq(ops->decode_add(p, bad, b, 35, out, scratch), TERSE_ERR_MISMATCH);
    /* a rank the parameters do not give, with a length to match */
    h[0] = 7; h[1] = 5; h[2] = 1;
    memcpy(bad, h, sizeof h);
    ck_assert_int_eq(ops->decode_add(p, bad, POWERSGD_HEADER + 4 * 12, 35, out, scratch), TERSE_ERR_MISMATCH);
    /* a huge shape (its product is computed in 64 bits) */
    h[0] = 0x80000000u; h[1] = 0x80000000u; h[2] = 2;
    memcpy(bad, h, sizeof h);
    ck_assert_int_eq(ops->decode_add(p, bad, b, 35, out, scratch), TERSE_ERR_MISMATCH);
    ck_assert(memcmp(out, before, sizeof out) == 0);

    /* the transposed shape is a valid message of the same count */
    const codec_ctx_t tctx = {5, 0, 5, 7};
    b = ops->encode(p, &tctx, in, 35, msg, scratch);
    ck_assert_int_eq(ops->decode_add(p, msg, b, 35, out, scratch), TERSE_OK);
    free(scratch);
}
END_TEST

static Suite *powersgd_suite(void)
{
    Suite *s = suite_create("powersgd");
    TCase *tc = tcase_create("math");
    tcase_add_test(tc, trace_rank1_two_workers_matches_algorithms_10_2);
    tcase_add_test(tc, products_equal_plain_loops_bit_for_bit_at_each_level);
    tcase_add_test(tc, avx2_products_equal_scalar_bit_for_bit_on_every_shape);
    tcase_add_test(tc, orthogonalize_gives_orthonormal_columns);
    tcase_add_test(tc, orthogonalize_follows_the_paper_code_formula);
    tcase_add_test(tc, orthogonalize_equals_the_column_by_column_definition);
    tcase_add_test(tc, orthogonalize_keeps_zero_and_dependent_columns_finite);
    tcase_add_test(tc, random_q_is_a_pure_function_of_the_key);
    suite_add_tcase(s, tc);
    TCase *tc_dense = tcase_create("goes_dense");
    tcase_add_test(tc_dense, goes_dense_follows_pytorchs_rule);
    tcase_add_test(tc_dense, goes_dense_at_the_boundary_and_with_small_shapes);
    suite_add_tcase(s, tc_dense);
    TCase *tc_codec = tcase_create("codec");
    tcase_add_test(tc_codec, codec_recovers_a_matrix_of_lower_rank);
    tcase_add_test(tc_codec, codec_sends_and_decodes_the_same_bits_at_both_levels);
    tcase_add_test(tc_codec, codec_max_bytes_is_the_largest_shape);
    tcase_add_test(tc_codec, codec_rejects_malformed_messages_and_leaves_out_untouched);
    suite_add_tcase(s, tc_codec);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(powersgd_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
