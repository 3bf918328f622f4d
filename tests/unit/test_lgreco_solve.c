/* Unit tests for terse_lgreco_solve, the offline L-GreCo planner.
 *
 * The reference is a brute force over every choice vector, in lexicographic order, with the
 * solver's own rules: the discretised error ceil(e * buckets / budget) of each candidate,
 * feasibility when those add up to at most `buckets`, the total size as the right fold
 * s0 + (s1 + (... + sL-1)) in double, and the first vector met (the lexicographically
 * smallest) among those of least total. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "terse.h"

#define MAX_LAYERS 6
#define MAX_CANDIDATES 7

/* ---- Helpers ---------------------------------------------------------------------------- */

/* splitmix64: a fixed, portable sequence, so a failing instance can be replayed. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static size_t rng_below(uint64_t *s, size_t n) { return (size_t)(rng_next(s) % n); }

/* The discretisation documented in terse.h, evaluated as the solver does (see
 * lgreco_error_buckets); buckets + 1 marks a candidate that can never fit. */
static size_t discretise(double e, double budget, size_t buckets)
{
    double q = e * (double)buckets / budget;
    if (isinf(q) && e <= budget) q = e / budget * (double)buckets;
    if (!(q <= (double)buckets)) return buckets + 1;
    return (size_t)ceil(q);
}

static double fold_size(size_t L, size_t C, const double *sizes, const size_t *choice)
{
    double total = 0.0;
    for (size_t l = L; l-- > 0;) total = sizes[l * C + choice[l]] + total;
    return total;
}

/* Returns 1 and the optimum in best[] if some choice is feasible, 0 otherwise; *n_optimal
 * counts the vectors that tie on the optimal total. */
static int brute_force(size_t L, size_t C, const double *sizes, const double *errors,
                       double budget, size_t buckets, size_t *best, size_t *n_optimal)
{
    size_t v[MAX_LAYERS] = {0};
    double best_total = 0.0;
    int found = 0;
    for (;;) {
        size_t used = 0;
        int fits = 1;
        for (size_t l = 0; l < L && fits; l++) {
            size_t e = discretise(errors[l * C + v[l]], budget, buckets);
            if (e > buckets) fits = 0;
            used += e;
        }
        if (fits && used <= buckets) {
            double total = fold_size(L, C, sizes, v);
            if (!found || total < best_total) {
                found = 1;
                best_total = total;
                memcpy(best, v, L * sizeof *v);
                *n_optimal = 1;
            } else if (total == best_total) {
                ++*n_optimal;
            }
        }
        /* Odometer with the last layer fastest: lexicographic order. */
        size_t l = L;
        while (l > 0 && ++v[l - 1] == C) v[--l] = 0;
        if (l == 0) return found;
    }
}

static void fill_sentinel(size_t *choice, size_t n)
{
    for (size_t i = 0; i < n; i++) choice[i] = (size_t)0xdead0000u + i;
}

static int sentinel_intact(const size_t *choice, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (choice[i] != (size_t)0xdead0000u + i) return 0;
    return 1;
}

/* Asserts TERSE_ERR_ARG, a message that names the problem, and an untouched choice. */
#define ASSERT_ARG_ERROR(call, choice, n, needle)                                           \
    do {                                                                                    \
        fill_sentinel((choice), (n));                                                       \
        terse_status_t st_ = (call);                                                        \
        ck_assert_int_eq(st_, TERSE_ERR_ARG);                                               \
        ck_assert_msg(strlen(terse_last_error()) > 0, "empty message for %s", #call);       \
        ck_assert_msg(strstr(terse_last_error(), (needle)) != NULL,                         \
                      "message \"%s\" does not mention \"%s\"", terse_last_error(),         \
                      (needle));                                                            \
        ck_assert_msg(sentinel_intact((choice), (n)), "choice written on error");           \
    } while (0)

/* ---- ALGORITHMS.md §10.2 part 5 ---------------------------------------------------------- */

/* Ranks 2..8 on four synthetic layers; the budget is the error of uniform rank 4. */
static const double example_errors[4 * 7] = {
    0.615979, 0.517996, 0.453673, 0.407209, 0.37154,  0.342977, 0.319388,
    1.098684, 0.92388,  0.776887, 0.653281, 0.549342, 0.46194,  0.388443,
    3.199059, 2.983395, 2.810809, 2.664704, 2.536529, 2.421271, 2.315719,
    2.150429, 2.071476, 2.010227, 1.95985,  1.916858, 1.879225, 1.845667,
};
static const double example_sizes[4 * 7] = {
    256,  384,  512,  640,  768,  896,  1024, 768, 1152, 1536, 1920, 2304, 2688, 3072,
    128,  192,  256,  320,  384,  448,  512,  1536, 2304, 3072, 3840, 4608, 5376, 6144,
};

START_TEST(lgreco_solve_reproduces_reference_example)
{
    double budget = 0.0;
    for (size_t l = 0; l < 4; l++) budget += example_errors[l * 7 + 2];
    ck_assert_double_eq_tol(budget, 6.051596, 1e-9);

    size_t choice[4];
    ck_assert_int_eq(terse_lgreco_solve(4, 7, example_sizes, example_errors, budget, 10000,
                                        choice),
                     TERSE_OK);
    const size_t want[4] = {2, 0, 6, 0}; /* ranks 4, 2, 8, 2 */
    for (size_t l = 0; l < 4; l++) ck_assert_uint_eq(choice[l], want[l]);
    ck_assert_double_eq(fold_size(4, 7, example_sizes, choice), 3328.0);

    double error = 0.0;
    for (size_t l = 0; l < 4; l++) error += example_errors[l * 7 + choice[l]];
    ck_assert_double_le(error, budget);
    ck_assert_double_eq_tol(error, 6.018505, 1e-6);
}
END_TEST

/* ---- Against brute force ------------------------------------------------------------------ */

START_TEST(lgreco_solve_matches_brute_force)
{
    enum { INSTANCES = 1000 };
    uint64_t seed = 20240611u;
    int matched = 0, feasible = 0, tied = 0, infinite_sizes = 0, excluded = 0;

    for (int it = 0; it < INSTANCES; it++) {
        const size_t L = 1 + rng_below(&seed, MAX_LAYERS);
        const size_t C = 1 + rng_below(&seed, MAX_CANDIDATES);
        double sizes[MAX_LAYERS * MAX_CANDIDATES], errors[MAX_LAYERS * MAX_CANDIDATES];

        /* Small integer sizes make ties common, so the tie-break is exercised; real-valued
         * sizes exercise the fold. Errors mix zeros, exact multiples of 1/8 (which land on
         * bucket boundaries), reals, and a few infinities. */
        const int integer_sizes = it % 2 == 0;
        for (size_t i = 0; i < L * C; i++) {
            double u = rng_unit(&seed);
            sizes[i] = integer_sizes ? (double)rng_below(&seed, 8) : 1000.0 * rng_unit(&seed);
            if (u < 0.02) {
                sizes[i] = INFINITY;
                infinite_sizes++;
            }
            double r = rng_unit(&seed);
            if (r < 0.08)
                errors[i] = 0.0;
            else if (r < 0.13)
                errors[i] = INFINITY;
            else if (r < 0.45)
                errors[i] = (double)rng_below(&seed, 9) / 8.0;
            else
                errors[i] = rng_unit(&seed);
        }

        /* Budget around the error of one random finite candidate per layer, so that most
         * instances are feasible but the constraint still binds. */
        double budget = 0.0;
        for (size_t l = 0; l < L; l++) {
            size_t c = rng_below(&seed, C);
            for (size_t k = 0; k < C && isinf(errors[l * C + c]); k++) c = (c + 1) % C;
            if (isfinite(errors[l * C + c])) budget += errors[l * C + c];
        }
        budget = budget * (0.8 + 0.7 * rng_unit(&seed)) + 0.05;

        const size_t bucket_choices[] = {1, 2, 3, 5, 8, 16, 37, 100, 1000, 10000};
        const size_t buckets =
            bucket_choices[rng_below(&seed, sizeof bucket_choices / sizeof *bucket_choices)];

        size_t want[MAX_LAYERS], got[MAX_LAYERS];
        size_t n_optimal = 0;
        const int ok = brute_force(L, C, sizes, errors, budget, buckets, want, &n_optimal);
        fill_sentinel(got, L);
        const terse_status_t st = terse_lgreco_solve(L, C, sizes, errors, budget, buckets, got);

        int same;
        if (ok) {
            feasible++;
            tied += n_optimal > 1;
            same = st == TERSE_OK && memcmp(got, want, L * sizeof *got) == 0;
            for (size_t l = 0; same && l < L; l++)
                ck_assert_msg(!isinf(errors[l * C + got[l]]),
                              "instance %d: layer %zu got an infinite-error candidate", it, l);
            for (size_t i = 0; i < L * C; i++) excluded += isinf(errors[i]) != 0;
        } else {
            same = st == TERSE_ERR_ARG && sentinel_intact(got, L) &&
                   strstr(terse_last_error(), "infeasible") != NULL;
        }
        if (same)
            matched++;
        else
            ck_abort_msg("instance %d (L=%zu C=%zu buckets=%zu budget=%.17g): status %d, "
                         "brute force %s",
                         it, L, C, buckets, budget, (int)st, ok ? "feasible" : "infeasible");
    }

    ck_assert_int_eq(matched, INSTANCES);
    ck_assert_msg(feasible >= INSTANCES * 7 / 10, "only %d of %d instances feasible", feasible,
                  INSTANCES);
    ck_assert_msg(feasible < INSTANCES, "no infeasible instance was exercised");
    ck_assert_msg(tied >= INSTANCES / 10, "only %d instances had tied optima", tied);
    ck_assert_msg(infinite_sizes > 0 && excluded > 0, "no infinite value was exercised");
}
END_TEST

/* ---- Tie-break, exclusion, edge cases ----------------------------------------------------- */

START_TEST(lgreco_solve_breaks_ties_by_lexicographically_smallest_choice)
{
    /* All sizes equal. (0,0) needs 12 of 10 buckets; (0,1), (1,0) and (1,1) fit, all with
     * size 2: the answer is (0,1), which also spends exactly the whole budget. */
    const double sizes[4] = {1, 1, 1, 1};
    const double errors[4] = {6, 4, 6, 4};
    size_t choice[2];
    ck_assert_int_eq(terse_lgreco_solve(2, 2, sizes, errors, 10.0, 10, choice), TERSE_OK);
    ck_assert_uint_eq(choice[0], 0);
    ck_assert_uint_eq(choice[1], 1);
}
END_TEST

START_TEST(lgreco_solve_breaks_ties_on_the_rounded_total)
{
    /* 2^56 has an ulp of 16, so 2^56 + 4 rounds to 2^56: both candidates of layer 1 give
     * the same total in double and the tie goes to index 0, although index 1 is the better
     * suffix on its own. The same holds behind an infinite size. */
    const double sizes[2 * 2] = {0x1p56, 0x1p56, 4, 0};
    const double errors[2 * 2] = {0, INFINITY, 0, 0};
    size_t choice[2];
    ck_assert_int_eq(terse_lgreco_solve(2, 2, sizes, errors, 1.0, 10, choice), TERSE_OK);
    ck_assert_uint_eq(choice[0], 0);
    ck_assert_uint_eq(choice[1], 0);

    const double inf_sizes[2 * 2] = {INFINITY, 1, 4, 0};
    const double inf_errors[2 * 2] = {0, INFINITY, 0, 0};
    ck_assert_int_eq(terse_lgreco_solve(2, 2, inf_sizes, inf_errors, 1.0, 10, choice),
                     TERSE_OK);
    ck_assert_uint_eq(choice[0], 0);
    ck_assert_uint_eq(choice[1], 0);
}
END_TEST

START_TEST(lgreco_solve_never_chooses_infinite_error_candidate)
{
    /* Candidate 0 is the cheapest and candidate 1 fits easily, but both are excluded. */
    const double sizes[2 * 3] = {1, 2, 50, 1, 2, 3};
    const double errors[2 * 3] = {INFINITY, INFINITY, 0.2, 0.1, 0.1, 0.1};
    size_t choice[2];
    ck_assert_int_eq(terse_lgreco_solve(2, 3, sizes, errors, 100.0, 10000, choice), TERSE_OK);
    ck_assert_uint_eq(choice[0], 2);
    ck_assert_uint_eq(choice[1], 0);
}
END_TEST

START_TEST(lgreco_solve_accepts_budget_near_double_max)
{
    /* e * buckets overflows a double although e is a tenth of the budget. */
    const double sizes[2] = {1, 5};
    const double errors[2] = {1e305, 0};
    size_t choice[1];
    ck_assert_int_eq(terse_lgreco_solve(1, 2, sizes, errors, 1e306, 10000, choice), TERSE_OK);
    ck_assert_uint_eq(choice[0], 0);
}
END_TEST

START_TEST(lgreco_solve_takes_the_only_candidate_with_one_bucket)
{
    const double sizes[3] = {7, 9, 11};
    const double errors[3] = {0, 0, 0};
    size_t choice[3];
    ck_assert_int_eq(terse_lgreco_solve(3, 1, sizes, errors, 1.0, 1, choice), TERSE_OK);
    for (size_t l = 0; l < 3; l++) ck_assert_uint_eq(choice[l], 0);
}
END_TEST

/* ---- Errors ------------------------------------------------------------------------------- */

START_TEST(lgreco_solve_rejects_null_arrays)
{
    const double s[4] = {1, 2, 3, 4}, e[4] = {0.1, 0.2, 0.3, 0.4};
    size_t choice[2];
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, NULL, e, 1.0, 100, choice), choice, 2, "sizes");
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, NULL, 1.0, 100, choice), choice, 2, "errors");
    ck_assert_int_eq(terse_lgreco_solve(2, 2, s, e, 1.0, 100, NULL), TERSE_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "choice"));
}
END_TEST

START_TEST(lgreco_solve_rejects_zero_counts)
{
    const double s[4] = {1, 2, 3, 4}, e[4] = {0.1, 0.2, 0.3, 0.4};
    size_t choice[2];
    ASSERT_ARG_ERROR(terse_lgreco_solve(0, 2, s, e, 1.0, 100, choice), choice, 2, "n_layers");
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 0, s, e, 1.0, 100, choice), choice, 2,
                     "n_candidates");
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 0, choice), choice, 2, "buckets");
}
END_TEST

START_TEST(lgreco_solve_rejects_nan_and_negative_values)
{
    double s[4] = {1, 2, 3, 4}, e[4] = {0.1, 0.2, 0.3, 0.4};
    size_t choice[2];
    s[2] = NAN;
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "sizes[1][0]");
    s[2] = -3;
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "sizes[1][0]");
    s[2] = 3;
    e[1] = -0.2;
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "errors[0][1]");
    e[1] = NAN;
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "errors[0][1]");
}
END_TEST

START_TEST(lgreco_solve_rejects_budget_not_positive_and_finite)
{
    const double s[4] = {1, 2, 3, 4}, e[4] = {0.1, 0.2, 0.3, 0.4};
    const double bad[] = {0.0, -0.0, -1.0, NAN, INFINITY, -INFINITY};
    size_t choice[2];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, bad[i], 100, choice), choice, 2,
                         "budget");
}
END_TEST

START_TEST(lgreco_solve_rejects_infeasible_budget)
{
    const double s[4] = {1, 2, 3, 4}, e[4] = {0.5, 0.6, 0.7, 0.8};
    size_t choice[2];
    /* The least-error choice needs 0.5 + 0.7 = 1.2 > 1. */
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "infeasible");
    /* Every candidate of layer 1 is excluded. */
    const double e_inf[4] = {0.1, 0.2, INFINITY, INFINITY};
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e_inf, 1.0, 100, choice), choice, 2,
                     "layer 1");
    /* Each error fits alone, but the ceilings do not fit together: 0.3 and 0.3 of budget 1
     * take ceil(0.6) = 1 bucket each, 2 > 1. */
    const double e_ceil[2] = {0.3, 0.3};
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 1, s, e_ceil, 1.0, 1, choice), choice, 2,
                     "infeasible");
}
END_TEST

START_TEST(lgreco_solve_rejects_tables_too_large_to_address)
{
    const double s[4] = {1, 2, 3, 4}, e[4] = {0.1, 0.2, 0.3, 0.4};
    size_t choice[2];
    /* Refused from the counts alone, before the arrays are read. */
    ASSERT_ARG_ERROR(terse_lgreco_solve(SIZE_MAX / 2, 2, s, e, 1.0, 100, choice), choice, 2,
                     "cannot be addressed");
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, SIZE_MAX, choice), choice, 2,
                     "cannot be addressed");
    ASSERT_ARG_ERROR(terse_lgreco_solve(2, 2, s, e, 1.0, SIZE_MAX / 16, choice), choice, 2,
                     "cannot be addressed");
}
END_TEST

/* ---- Suite -------------------------------------------------------------------------------- */

static Suite *lgreco_solve_suite(void)
{
    Suite *s = suite_create("lgreco_solve");

    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, lgreco_solve_reproduces_reference_example);
    tcase_add_test(tc, lgreco_solve_breaks_ties_by_lexicographically_smallest_choice);
    tcase_add_test(tc, lgreco_solve_breaks_ties_on_the_rounded_total);
    tcase_add_test(tc, lgreco_solve_never_chooses_infinite_error_candidate);
    tcase_add_test(tc, lgreco_solve_accepts_budget_near_double_max);
    tcase_add_test(tc, lgreco_solve_takes_the_only_candidate_with_one_bucket);
    suite_add_tcase(s, tc);

    /* The brute force visits up to 7^6 vectors per instance; under sanitizers or valgrind
     * that outlasts Check's 4 s default. */
    TCase *tc_brute = tcase_create("brute_force");
    tcase_set_timeout(tc_brute, 120);
    tcase_add_test(tc_brute, lgreco_solve_matches_brute_force);
    suite_add_tcase(s, tc_brute);

    TCase *tc_err = tcase_create("errors");
    tcase_add_test(tc_err, lgreco_solve_rejects_null_arrays);
    tcase_add_test(tc_err, lgreco_solve_rejects_zero_counts);
    tcase_add_test(tc_err, lgreco_solve_rejects_nan_and_negative_values);
    tcase_add_test(tc_err, lgreco_solve_rejects_budget_not_positive_and_finite);
    tcase_add_test(tc_err, lgreco_solve_rejects_infeasible_budget);
    tcase_add_test(tc_err, lgreco_solve_rejects_tables_too_large_to_address);
    suite_add_tcase(s, tc_err);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lgreco_solve_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
