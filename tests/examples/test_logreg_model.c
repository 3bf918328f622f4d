/* Unit tests for the examples' model (examples/logreg_model.c): the largest-eigenvalue solver
 * on matrices whose eigenvalues are known in closed form, the sparse row copy, the loss pass
 * and the Gram matrix against dense references written out here, and the regularisers.
 *
 * Matrices with known spectra: diagonal ones; Q diag(lambda) Q^T with Q a product of random
 * Householder reflections (so exactly orthogonal up to rounding); the tridiagonal Toeplitz
 * matrix tridiag(-1, 2, -1) with eigenvalues 2 - 2 cos(j pi / (d + 1)); the all-ones matrix
 * (d, and 0 d-1 times). Eigenvalues close together are included: a power iteration would
 * stall on them, the solver must not. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libsvm.h"
#include "logreg_model.h"

/* ---- Helpers ---------------------------------------------------------------------------- */

/* xorshift64*: deterministic, so a failing case reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double rng_sym(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-52 - 1; }

/* a = Q diag(eig) Q^T, Q = H_1 ... H_r for r random Householder reflections H = I - 2 u u^T,
 * applied as a <- H a H starting from diag(eig). */
static double *rotated_diagonal(const double *eig, size_t d, int reflections, uint64_t seed)
{
    double *a = calloc(d * d, sizeof *a), *u = malloc(d * sizeof *u), *p = malloc(d * sizeof *p);
    ck_assert(a && u && p);
    for (size_t i = 0; i < d; i++) a[i * d + i] = eig[i];
    uint64_t s = seed;
    for (int r = 0; r < reflections; r++) {
        double n2 = 0;
        for (size_t i = 0; i < d; i++) {
            u[i] = rng_sym(&s);
            n2 += u[i] * u[i];
        }
        for (size_t i = 0; i < d; i++) u[i] /= sqrt(n2);
        /* H a H = a - 2 u w^T - 2 w u^T with p = a u, w = p - (u.p) u */
        double up = 0;
        for (size_t i = 0; i < d; i++) {
            p[i] = 0;
            for (size_t j = 0; j < d; j++) p[i] += a[i * d + j] * u[j];
            up += u[i] * p[i];
        }
        for (size_t i = 0; i < d; i++) p[i] -= up * u[i];
        for (size_t i = 0; i < d; i++)
            for (size_t j = 0; j < d; j++) a[i * d + j] -= 2 * (u[i] * p[j] + p[i] * u[j]);
    }
    free(u);
    free(p);
    return a;
}

static double lambda_max_of(const double *a, size_t d)
{
    double l = -12345;
    ck_assert_int_eq(logreg_lambda_max(a, d, &l), 0);
    return l;
}

/* |got - want| <= tol max(1, |want|): relative for large values, absolute near 0 */
#define ASSERT_REL(got, want, tol) assert_rel((got), (want), (tol), __LINE__)

static void assert_rel(double got, double want, double tol, int line)
{
    ck_assert_msg(fabs(got - want) <= tol * fmax(1, fabs(want)),
                  "line %d: got %.17g, want %.17g (tolerance %g)", line, got, want, tol);
}

/* ---- lambda_max ------------------------------------------------------------------------- */

START_TEST(lambda_max_of_a_diagonal_is_its_largest_entry)
{
    const double diag[] = {0.5, -7, 3.25, 3.2499999, 1e-3, -1e6};
    const size_t d = sizeof diag / sizeof diag[0];
    double a[sizeof diag / sizeof diag[0] * sizeof diag / sizeof diag[0]] = {0};
    for (size_t i = 0; i < d; i++) a[i * d + i] = diag[i];
    ASSERT_REL(lambda_max_of(a, d), 3.25, 1e-15);
    double one = 42;
    ASSERT_REL(lambda_max_of(&one, 1), 42, 0);
}
END_TEST

START_TEST(lambda_max_of_a_rotated_diagonal_is_its_largest_eigenvalue)
{
    static const size_t sizes[] = {2, 3, 7, 50, 112, 300};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        const size_t d = sizes[c];
        double *eig = malloc(d * sizeof *eig);
        uint64_t s = 0x5eed + d;
        double want = -INFINITY;
        for (size_t i = 0; i < d; i++) {
            eig[i] = 10 * (rng_sym(&s) + 1); /* positive, as a Gram matrix's */
            want = fmax(want, eig[i]);
        }
        double *a = rotated_diagonal(eig, d, 6, 99 + d);
        ASSERT_REL(lambda_max_of(a, d), want, 1e-12);
        free(a);
        free(eig);
    }
}
END_TEST

START_TEST(lambda_max_separates_eigenvalues_a_power_iteration_would_not)
{
    /* the two largest eigenvalues 1e-9 relative apart, and a triple largest one */
    const size_t d = 40;
    double eig[40];
    for (size_t i = 0; i < d; i++) eig[i] = 0.5 + 0.01 * (double)i;
    eig[7] = 1;
    eig[30] = 1 - 1e-9;
    double *a = rotated_diagonal(eig, d, 5, 7);
    ASSERT_REL(lambda_max_of(a, d), 1.0, 1e-13);
    free(a);

    eig[30] = eig[12] = 1;
    a = rotated_diagonal(eig, d, 5, 8);
    ASSERT_REL(lambda_max_of(a, d), 1.0, 1e-13);
    free(a);
}
END_TEST

START_TEST(lambda_max_of_tridiag_minus1_2_minus1_is_2_plus_2_cos_pi_over_d_plus_1)
{
    for (size_t d = 1; d <= 64; d++) {
        double *a = calloc(d * d, sizeof *a);
        for (size_t i = 0; i < d; i++) {
            a[i * d + i] = 2;
            if (i > 0) a[i * d + i - 1] = a[(i - 1) * d + i] = -1;
        }
        ASSERT_REL(lambda_max_of(a, d), 2 + 2 * cos(M_PI / (double)(d + 1)), 1e-14);
        free(a);
    }
}
END_TEST

START_TEST(lambda_max_of_the_all_ones_matrix_is_d)
{
    const size_t d = 300;
    double *a = malloc(d * d * sizeof *a);
    for (size_t i = 0; i < d * d; i++) a[i] = 1;
    ASSERT_REL(lambda_max_of(a, d), 300.0, 1e-13);
    free(a);
}
END_TEST

START_TEST(lambda_max_reads_only_the_lower_triangle)
{
    const double eig[] = {1, 2, 3, 4, 5};
    double *a = rotated_diagonal(eig, 5, 3, 11);
    for (size_t i = 0; i < 5; i++)
        for (size_t j = i + 1; j < 5; j++) a[i * 5 + j] = 1e30; /* garbage above */
    ASSERT_REL(lambda_max_of(a, 5), 5.0, 1e-14);
    free(a);
}
END_TEST

START_TEST(lambda_max_of_negative_zero_and_empty_matrices)
{
    double a[9] = {-2, 0, 0, 0, -3, 0, 0, 0, -2.5};
    ASSERT_REL(lambda_max_of(a, 3), -2.0, 1e-15);
    memset(a, 0, sizeof a);
    ck_assert(fabs(lambda_max_of(a, 3)) <= 1e-300);
    ck_assert(lambda_max_of(NULL, 0) == 0);
}
END_TEST

START_TEST(lambda_max_of_a_matrix_with_a_nan_or_inf_is_nan)
{
    double a[4] = {1, 0, NAN, 1};
    ck_assert(isnan(lambda_max_of(a, 2)));
    a[2] = INFINITY;
    ck_assert(isnan(lambda_max_of(a, 2)));
    a[2] = 0;
    a[1] = NAN; /* the upper triangle is not read */
    ASSERT_REL(lambda_max_of(a, 2), 1.0, 0);
}
END_TEST

/* ---- Rows, pass, Gram ------------------------------------------------------------------- */

/* A small dense data set with zeros in every row and a few all-zero rows and columns. */
static libsvm_data_t sample_data(size_t rows, size_t cols, uint64_t seed)
{
    libsvm_data_t D = {.rows = rows, .cols = cols, .total_rows = rows};
    D.x = malloc(rows * cols * sizeof *D.x);
    D.y = malloc(rows * sizeof *D.y);
    ck_assert(D.x && D.y);
    uint64_t s = seed;
    for (size_t i = 0; i < rows; i++) {
        D.y[i] = rng_next(&s) & 1 ? 1.0 : -1.0;
        for (size_t k = 0; k < cols; k++) {
            double v = rng_sym(&s);
            D.x[i * cols + k] = (i % 5 == 3 || k % 4 == 1 || fabs(v) < 0.5) ? 0 : 3 * v;
        }
    }
    return D;
}

START_TEST(rows_hold_exactly_the_nonzeros_in_order)
{
    libsvm_data_t D = sample_data(23, 9, 5);
    logreg_rows_t A;
    ck_assert_int_eq(logreg_rows_build(&D, &A), 0);
    ck_assert_uint_eq(A.rows, 23);
    ck_assert_uint_eq(A.cols, 9);
    ck_assert_uint_eq(A.ptr[0], 0);
    for (size_t i = 0; i < D.rows; i++) {
        size_t j = A.ptr[i];
        for (size_t k = 0; k < D.cols; k++) {
            double v = D.x[i * D.cols + k];
            if (v == 0) continue;
            ck_assert_uint_lt(j, A.ptr[i + 1]);
            ck_assert_uint_eq(A.idx[j], k);
            ck_assert(A.val[j] == v);
            j++;
        }
        ck_assert_uint_eq(j, A.ptr[i + 1]);
    }
    logreg_rows_free(&A);
    ck_assert_ptr_null(A.ptr);
    libsvm_free(&D);
}
END_TEST

START_TEST(pass_matches_the_dense_formulas)
{
    libsvm_data_t D = sample_data(40, 7, 9);
    logreg_rows_t A;
    ck_assert_int_eq(logreg_rows_build(&D, &A), 0);
    const double x[7] = {0.3, -1.2, 0.05, 2.0, -0.7, 0.0, 1.1};
    double loss, correct, g[7], want_g[7] = {0}, want_loss = 0, want_correct = 0;
    logreg_pass(&A, x, &loss, &correct, g);
    for (size_t i = 0; i < D.rows; i++) {
        const double *a = D.x + i * D.cols;
        double z = 0;
        for (size_t k = 0; k < D.cols; k++) z += a[k] * x[k];
        /* values stay moderate here, so the textbook formulas are accurate */
        want_loss += log(1 + exp(-D.y[i] * z));
        want_correct += (z > 0) == (D.y[i] > 0);
        double s = 1 / (1 + exp(D.y[i] * z));
        for (size_t k = 0; k < D.cols; k++) want_g[k] += -D.y[i] * s * a[k];
    }
    ASSERT_REL(loss, want_loss, 1e-13);
    ck_assert(correct == want_correct);
    for (size_t k = 0; k < D.cols; k++) ASSERT_REL(g[k], want_g[k], 1e-13);
    /* loss and correct are optional */
    logreg_pass(&A, x, NULL, NULL, g);
    for (size_t k = 0; k < D.cols; k++) ASSERT_REL(g[k], want_g[k], 1e-13);
    logreg_rows_free(&A);
    libsvm_free(&D);
}
END_TEST

START_TEST(gram_add_adds_a_transpose_a)
{
    libsvm_data_t D = sample_data(31, 6, 13);
    logreg_rows_t A;
    ck_assert_int_eq(logreg_rows_build(&D, &A), 0);
    double G[36], want[36];
    for (size_t i = 0; i < 36; i++) G[i] = want[i] = (double)i; /* it adds */
    logreg_gram_add(&A, G);
    for (size_t p = 0; p < 6; p++)
        for (size_t q = 0; q < 6; q++)
            for (size_t i = 0; i < D.rows; i++) want[p * 6 + q] += D.x[i * 6 + p] * D.x[i * 6 + q];
    for (size_t i = 0; i < 36; i++) ASSERT_REL(G[i], want[i], 1e-13);
    logreg_rows_free(&A);
    libsvm_free(&D);
}
END_TEST

/* ---- Regularisers ----------------------------------------------------------------------- */

START_TEST(regularisers_values_gradients_and_smoothness)
{
    const double x[3] = {0.5, -2, 0};
    ASSERT_REL(logreg_reg_value(LOGREG_REG_L2, 0.1, x, 3), 0.1 * 0.5 * (0.25 + 4), 1e-15);
    ASSERT_REL(logreg_reg_value(LOGREG_REG_NONCONVEX, 0.1, x, 3), 0.1 * (0.2 + 0.8), 1e-15);
    ASSERT_REL(logreg_reg_grad(LOGREG_REG_L2, 0.1, -2), -0.2, 1e-15);
    /* 2 lambda x / (1 + x^2)^2 at x = 0.5: 2 * 0.1 * 0.5 / 1.5625 */
    ASSERT_REL(logreg_reg_grad(LOGREG_REG_NONCONVEX, 0.1, 0.5), 0.064, 1e-15);
    /* the gradient is the derivative of the value, by central differences */
    for (double t = -3; t <= 3; t += 0.25) {
        const double h = 1e-6, lo = t - h, hi = t + h;
        double fd = (logreg_reg_value(LOGREG_REG_NONCONVEX, 0.1, &hi, 1) -
                     logreg_reg_value(LOGREG_REG_NONCONVEX, 0.1, &lo, 1)) / (2 * h);
        ck_assert(fabs(fd - logreg_reg_grad(LOGREG_REG_NONCONVEX, 0.1, t)) <= 1e-8);
    }
    ASSERT_REL(logreg_reg_smoothness(LOGREG_REG_L2, 0.1), 0.1, 0);
    ASSERT_REL(logreg_reg_smoothness(LOGREG_REG_NONCONVEX, 0.1), 0.2, 0);
}
END_TEST

static Suite *logreg_model_suite(void)
{
    Suite *s = suite_create("logreg_model");

    TCase *tc_eig = tcase_create("lambda_max");
    tcase_set_timeout(tc_eig, 60);
    tcase_add_test(tc_eig, lambda_max_of_a_diagonal_is_its_largest_entry);
    tcase_add_test(tc_eig, lambda_max_of_a_rotated_diagonal_is_its_largest_eigenvalue);
    tcase_add_test(tc_eig, lambda_max_separates_eigenvalues_a_power_iteration_would_not);
    tcase_add_test(tc_eig, lambda_max_of_tridiag_minus1_2_minus1_is_2_plus_2_cos_pi_over_d_plus_1);
    tcase_add_test(tc_eig, lambda_max_of_the_all_ones_matrix_is_d);
    tcase_add_test(tc_eig, lambda_max_reads_only_the_lower_triangle);
    tcase_add_test(tc_eig, lambda_max_of_negative_zero_and_empty_matrices);
    tcase_add_test(tc_eig, lambda_max_of_a_matrix_with_a_nan_or_inf_is_nan);
    suite_add_tcase(s, tc_eig);

    TCase *tc_model = tcase_create("model");
    tcase_add_test(tc_model, rows_hold_exactly_the_nonzeros_in_order);
    tcase_add_test(tc_model, pass_matches_the_dense_formulas);
    tcase_add_test(tc_model, gram_add_adds_a_transpose_a);
    tcase_add_test(tc_model, regularisers_values_gradients_and_smoothness);
    suite_add_tcase(s, tc_model);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(logreg_model_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
