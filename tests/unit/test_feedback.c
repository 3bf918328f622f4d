/* Unit tests for the feedback methods ef21 (and EF21-W), ef21sgdm and econtrol
 * (src/feedback/), driven the way the allreduce drives them: prepare (g -> p), the codec on
 * p (or, on a call prepare marks uncompressed, p itself, as codec none sends it), the
 * aggregate of every worker's decoded message in rank order, update with the estimate
 * written over g. Workers are simulated one after another in one process.
 *
 * The traces are ALGORITHMS.md §10.2 part 1: n = 2, d = 3, Top1, gamma = 0.5, x0 = 0,
 * f_i(x) = 0.5 ||x - c_i||^2 (so grad_i = x - c_i), c_1 = (1, -2, 0.5), c_2 = (3, 0, -1).
 * Call t hands each method grad_i(x^t) and returns the estimate; x^{t+1} = x^t - gamma out.
 *   EF21 "t" row:     x^t and the state after call t (g_i^t, g^t; g^0 is the exact mean).
 *   EControl "t=3":   x^3 and the h it was computed with, i.e. the estimate of call 2: the
 *                     spec's step 0 (delta = C(0) after h_i = grad_i) is terse's first call.
 * The EF21 numbers are dyadic rationals, exact in float; EControl with eta = 0.2 is not, and
 * is compared within 1e-6. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "feedback/feedback.h"
#include "topk.h"

extern const codec_ops_t codec_topk_ops;
extern const feedback_ops_t feedback_ef21_ops, feedback_ef21sgdm_ops, feedback_econtrol_ops;

/* ---- Helpers ---------------------------------------------------------------------------- */

#define MAX_N 4
#define MAX_D 256

typedef struct {
    const feedback_ops_t *fb;
    double fb_prm[MAX_N][TERSE_MAX_PARAMS]; /* per rank: EF21-W ranks differ in weight */
    double codec_prm[TERSE_MAX_PARAMS];
    int sum;                                /* reduce=sum: the aggregate is not divided  */
} method_t;

/* fb with parameter 0 set to prm0 on every rank (NAN: unset), and TopK k. */
static method_t method_topk(const feedback_ops_t *fb, double prm0, double k)
{
    method_t m;
    memset(&m, 0, sizeof m);
    m.fb = fb;
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) {
        m.codec_prm[i] = NAN;
        for (int r = 0; r < MAX_N; r++) m.fb_prm[r][i] = NAN;
    }
    for (int r = 0; r < MAX_N; r++) m.fb_prm[r][0] = prm0;
    m.codec_prm[1] = k; /* topk: density, k */
    return m;
}

/* One call of the allreduce for n workers, serially, as the engine runs it. g[i] holds
 * worker i's gradient and is replaced by the estimate; state[i] is its feedback state. */
static void simulate_call(const method_t *m, int n, size_t d, float *const *g, float *const *state,
                          uint64_t calls)
{
    static float p[MAX_N][MAX_D], delta[MAX_N][MAX_D], agg[MAX_D];
    static float before[3 * MAX_D];
    static uint32_t msg[MAX_N][1 + 2 * MAX_D]; /* uint32_t: aligned like a received message */
    size_t bytes[MAX_N];
    int uncompressed[MAX_N];
    ck_assert_int_le(n, MAX_N);
    ck_assert_uint_le(d, MAX_D);
    const size_t state_bytes = m->fb->state_per_elem * d * sizeof(float);
    for (int i = 0; i < n; i++) {
        const feedback_ctx_t ctx = {.prm = m->fb_prm[i], .calls = calls, .rank = i, .nranks = n};
        memcpy(before, state[i], state_bytes);
        uncompressed[i] = m->fb->prepare(&ctx, state[i], g[i], p[i], d);
        /* prepare leaves the state alone, so that an abandoned call changes nothing */
        ck_assert_int_eq(memcmp(before, state[i], state_bytes), 0);
        /* these methods send the first gradient exactly, and compress from then on */
        ck_assert_int_eq(uncompressed[i], calls == 0);
        if (uncompressed[i]) {
            memcpy(delta[i], p[i], d * sizeof(float)); /* codec none: C(p) = p */
        } else {
            bytes[i] = codec_topk_ops.encode(m->codec_prm, NULL, p[i], d, msg[i], NULL);
            memset(delta[i], 0, d * sizeof(float));
            ck_assert_int_eq(codec_topk_ops.decode_add(m->codec_prm, msg[i], bytes[i], d, delta[i], NULL),
                             TERSE_OK);
        }
    }
    /* both protocols: zero, add every rank's decoded message in rank order, divide by n */
    memset(agg, 0, d * sizeof(float));
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) agg[j] += delta[i][j];
    if (!m->sum)
        for (size_t j = 0; j < d; j++) agg[j] /= (float)n;
    for (int i = 0; i < n; i++) {
        const feedback_ctx_t ctx = {.prm = m->fb_prm[i], .calls = calls, .rank = i, .nranks = n};
        m->fb->update(&ctx, state[i], g[i], p[i], delta[i], agg, g[i], d); /* out aliases g */
    }
}

static void assert_vec_near(const float *got, const double *want, size_t d, double tol,
                            const char *what)
{
    for (size_t j = 0; j < d; j++)
        ck_assert_msg(fabs((double)got[j] - want[j]) <= tol, "%s[%zu] = %.9g, want %.9g", what, j,
                      got[j], want[j]);
}

static void assert_bits_eq(const float *a, const float *b, size_t d, const char *what, int step)
{
    for (size_t j = 0; j < d; j++)
        ck_assert_msg(memcmp(&a[j], &b[j], sizeof(float)) == 0, "%s, step %d, [%zu]: %a vs %a",
                      what, step, j, a[j], b[j]);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* Uniform in [-1, 1). */
static float rng_float(uint64_t *s)
{
    return (float)((double)(rng_next(s) >> 11) * 0x1.0p-52 - 1.0);
}

/* The §10.2 problem: the gradients of both workers at x. */
enum { TN = 2, TD = 3 };
static const float trace_c[TN][TD] = {{1.0f, -2.0f, 0.5f}, {3.0f, 0.0f, -1.0f}};
static const float trace_gamma = 0.5f;

static void trace_gradients(const float *x, float g[TN][TD])
{
    for (int i = 0; i < TN; i++)
        for (int j = 0; j < TD; j++) g[i][j] = x[j] - trace_c[i][j];
}

/* ---- Traces ----------------------------------------------------------------------------- */

START_TEST(ef21_reproduces_the_ef21_trace)
{
    enum { T = 4 };
    /* ALGORITHMS.md §10.2 (1), EF21 rows t = 0..3 (t = 0 prints x and g only) */
    const double x_want[T][TD] = {
        {0, 0, 0}, {1, -0.5, -0.125}, {1.5, -1, -0.25}, {2, -1, -0.375}};
    const double gi_want[T][TN][TD] = {
        {{0}, {0}}, /* not printed for t = 0: the exact gradients */
        {{0, 2, -0.5}, {-2, 0, 1}},
        {{0, 1, -0.5}, {-2, -1, 1}},
        {{1, 1, -0.5}, {-1, -1, 1}},
    };
    const double g_want[T][TD] = {
        {-2, 1, 0.25}, {-1, 1, 0.25}, {-1, 0, 0.25}, {0, 0, 0.25}};
    method_t m = method_topk(&feedback_ef21_ops, NAN, 1);
    float x[TD] = {0, 0, 0};
    float st[TN][2 * TD] = {{0}}, g[TN][TD];
    float *gp[TN] = {g[0], g[1]}, *sp[TN] = {st[0], st[1]};
    char what[32];
    for (int t = 0; t < T; t++) {
        snprintf(what, sizeof what, "t=%d x", t);
        assert_vec_near(x, x_want[t], TD, 1e-6, what);
        trace_gradients(x, g);
        simulate_call(&m, TN, TD, gp, sp, (uint64_t)t);
        /* every worker holds the same estimate, and it is the aggregate copy in the state */
        ck_assert_int_eq(memcmp(g[0], g[1], sizeof g[0]), 0);
        ck_assert_int_eq(memcmp(g[0], st[0] + TD, sizeof g[0]), 0);
        snprintf(what, sizeof what, "t=%d g", t);
        assert_vec_near(g[0], g_want[t], TD, 1e-6, what);
        for (int i = 0; i < TN && t > 0; i++) {
            snprintf(what, sizeof what, "t=%d g_%d", t, i + 1);
            assert_vec_near(st[i], gi_want[t][i], TD, 1e-6, what);
        }
        for (int j = 0; j < TD; j++) x[j] -= trace_gamma * g[0][j];
    }
}
END_TEST

static const struct {
    double eta;
    double x[TD], h[TD];
} econtrol_trace[] = {
    /* ALGORITHMS.md §10.2 (1), EControl rows, t = 3 */
    {0.0, {2, -1, -0.375}, {-1, 0, 0.25}},
    {0.2, {2, -0.95, -0.375}, {-1, -0.1, 0.25}},
    {1.0, {2, -0.75, -0.375}, {-1, -0.5, 0.25}},
};

START_TEST(econtrol_reproduces_the_econtrol_trace)
{
    const double eta = econtrol_trace[_i].eta;
    method_t m = method_topk(&feedback_econtrol_ops, eta, 1);
    float x[TD] = {0, 0, 0};
    float st[TN][3 * TD] = {{0}}, g[TN][TD];
    float *gp[TN] = {g[0], g[1]}, *sp[TN] = {st[0], st[1]};
    for (int t = 0; t < 3; t++) {
        trace_gradients(x, g);
        simulate_call(&m, TN, TD, gp, sp, (uint64_t)t);
        ck_assert_int_eq(memcmp(g[0], g[1], sizeof g[0]), 0);
        ck_assert_int_eq(memcmp(g[0], st[0] + 2 * TD, sizeof g[0]), 0); /* out = h */
        for (int j = 0; j < TD; j++) x[j] -= trace_gamma * g[0][j];
    }
    char what[48];
    snprintf(what, sizeof what, "eta=%g t=3 x", eta);
    assert_vec_near(x, econtrol_trace[_i].x, TD, 1e-6, what);
    snprintf(what, sizeof what, "eta=%g t=3 h", eta);
    assert_vec_near(g[0], econtrol_trace[_i].h, TD, 1e-6, what);
}
END_TEST

/* ---- Equivalences ----------------------------------------------------------------------- */

/* Runs `steps` calls of methods a and b side by side on the same random gradients (n workers,
 * d elements, TopK k) and hands both estimates of every step to check(). */
typedef void (*compare_fn)(const float *ea, const float *eb, size_t d, int step, const void *arg);

static void run_side_by_side(const method_t *a, const method_t *b, int n, size_t d, int steps,
                             uint64_t seed, compare_fn check, const void *arg)
{
    static float sa[MAX_N][3 * MAX_D], sb[MAX_N][3 * MAX_D], ga[MAX_N][MAX_D], gb[MAX_N][MAX_D];
    memset(sa, 0, sizeof sa);
    memset(sb, 0, sizeof sb);
    float *gap[MAX_N], *gbp[MAX_N], *sap[MAX_N], *sbp[MAX_N];
    for (int i = 0; i < MAX_N; i++) {
        gap[i] = ga[i]; gbp[i] = gb[i]; sap[i] = sa[i]; sbp[i] = sb[i];
    }
    uint64_t s = seed;
    for (int t = 0; t < steps; t++) {
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++) ga[i][j] = gb[i][j] = rng_float(&s) * (float)(1 + i);
        simulate_call(a, n, d, gap, sap, (uint64_t)t);
        simulate_call(b, n, d, gbp, sbp, (uint64_t)t);
        for (int i = 1; i < n; i++) {
            assert_bits_eq(ga[0], ga[i], d, "ranks' estimates (a)", t);
            assert_bits_eq(gb[0], gb[i], d, "ranks' estimates (b)", t);
        }
        check(ga[0], gb[0], d, t, arg);
    }
}

static void check_bits(const float *ea, const float *eb, size_t d, int step, const void *arg)
{
    assert_bits_eq(ea, eb, d, (const char *)arg, step);
}

START_TEST(econtrol_with_eta_0_is_ef21_bit_for_bit)
{
    method_t ef21 = method_topk(&feedback_ef21_ops, NAN, 3);
    method_t ec = method_topk(&feedback_econtrol_ops, 0.0, 3);
    run_side_by_side(&ec, &ef21, 3, 50, 20, 11, check_bits, "econtrol eta=0 vs ef21");
}
END_TEST

START_TEST(ef21sgdm_with_eta_1_is_ef21_bit_for_bit)
{
    method_t ef21 = method_topk(&feedback_ef21_ops, NAN, 3);
    method_t sgdm = method_topk(&feedback_ef21sgdm_ops, 1.0, 3);
    run_side_by_side(&sgdm, &ef21, 3, 50, 20, 12, check_bits, "ef21sgdm eta=1 vs ef21");
}
END_TEST

START_TEST(ef21w_with_equal_weights_is_ef21_bit_for_bit)
{
    /* n w = 1 exactly in float (w = 1/n to double precision, or to 8 digits for n = 3), so
     * the scaling is exact: see ef21.c */
    const double weights[] = {1.0 / 3.0, 0.33333333};
    for (size_t k = 0; k < 2; k++) {
        method_t ef21 = method_topk(&feedback_ef21_ops, NAN, 3);
        method_t w = method_topk(&feedback_ef21_ops, weights[k], 3);
        run_side_by_side(&w, &ef21, 3, 50, 20, 13, check_bits, "ef21 weight=1/3 vs ef21");
    }
}
END_TEST

/* Tolerance for EF21-W against EF21 when n w_i != 1: TopK is positively homogeneous, so the
 * two agree in exact arithmetic (ef21.c), and differ by the rounding of s_i g_i and
 * delta / s_i only: a few ulps per call, relative to values of order 1 here. */
#define EF21W_TOL 1e-5

static void check_near(const float *ea, const float *eb, size_t d, int step, const void *arg)
{
    for (size_t j = 0; j < d; j++)
        ck_assert_msg(fabsf(ea[j] - eb[j]) <= EF21W_TOL * (1.0f + fabsf(eb[j])),
                      "%s, step %d, [%zu]: %.9g vs %.9g", (const char *)arg, step, j, ea[j], eb[j]);
}

START_TEST(ef21w_matches_ef21_within_rounding_for_any_weights)
{
    method_t ef21 = method_topk(&feedback_ef21_ops, NAN, 3);
    method_t eq = method_topk(&feedback_ef21_ops, 0.3333, 3); /* n w = 0.9999 */
    run_side_by_side(&eq, &ef21, 3, 50, 20, 14, check_near, "ef21 weight=0.3333 vs ef21");
    method_t uneq = method_topk(&feedback_ef21_ops, NAN, 3);
    const double w[3] = {0.2, 0.3, 0.5};
    for (int r = 0; r < 3; r++) uneq.fb_prm[r][0] = w[r];
    run_side_by_side(&uneq, &ef21, 3, 50, 20, 15, check_near, "ef21 weights 0.2,0.3,0.5 vs ef21");
}
END_TEST

START_TEST(ef21w_aggregate_is_the_weighted_sum_of_the_workers_estimates)
{
    enum { N = 3, D = 40, STEPS = 15 };
    const double w[N] = {0.125, 0.375, 0.5}; /* s = 3/8, 9/8, 3/2: not powers of two */
    method_t m = method_topk(&feedback_ef21_ops, NAN, 4);
    for (int r = 0; r < N; r++) m.fb_prm[r][0] = w[r];
    static float st[N][2 * D], g[N][D];
    float *gp[N] = {g[0], g[1], g[2]}, *sp[N] = {st[0], st[1], st[2]};
    uint64_t s = 21;
    for (int t = 0; t < STEPS; t++) {
        float grad[N][D];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < D; j++) g[i][j] = grad[i][j] = rng_float(&s);
        simulate_call(&m, N, D, gp, sp, (uint64_t)t);
        for (int j = 0; j < D; j++) {
            double weighted = 0;
            for (int i = 0; i < N; i++) weighted += w[i] * st[i][j];
            ck_assert_msg(fabs(g[0][j] - weighted) <= 1e-5, "step %d [%d]: g %.9g, sum w_i g_i %.9g",
                          t, j, g[0][j], weighted);
            if (t == 0) /* g_i^0 = grad_i / (n w_i) */
                for (int i = 0; i < N; i++)
                    ck_assert_float_eq(st[i][j], grad[i][j] / (float)(N * w[i]));
        }
    }
}
END_TEST

/* ---- Properties ------------------------------------------------------------------------- */

START_TEST(ef21_with_reduce_sum_keeps_the_sum_estimate)
{
    /* on the trace problem every number is dyadic, so sum = n mean exactly */
    method_t mean = method_topk(&feedback_ef21_ops, NAN, 1), sum = mean;
    sum.sum = 1;
    float x[TD] = {0, 0, 0};
    float sa[TN][2 * TD] = {{0}}, sb[TN][2 * TD] = {{0}}, ga[TN][TD], gb[TN][TD];
    float *gap[TN] = {ga[0], ga[1]}, *gbp[TN] = {gb[0], gb[1]};
    float *sap[TN] = {sa[0], sa[1]}, *sbp[TN] = {sb[0], sb[1]};
    for (int t = 0; t < 4; t++) {
        trace_gradients(x, ga);
        trace_gradients(x, gb);
        simulate_call(&mean, TN, TD, gap, sap, (uint64_t)t);
        simulate_call(&sum, TN, TD, gbp, sbp, (uint64_t)t);
        for (int j = 0; j < TD; j++) {
            ck_assert_float_eq(gb[0][j], 2.0f * ga[0][j]);
            ck_assert_float_eq(sb[0][j], sa[0][j]); /* the workers' g_i do not depend on it */
        }
        for (int j = 0; j < TD; j++) x[j] -= trace_gamma * ga[0][j];
    }
}
END_TEST

START_TEST(ef21sgdm_with_an_exact_codec_returns_the_momentum)
{
    /* one worker, TopK k = d: nothing is dropped, so g_1 = v and the estimate is the momentum
     * (1 - eta) v + eta grad; dyadic values and eta = 1/4 make it exact */
    enum { D = 4 };
    method_t m = method_topk(&feedback_ef21sgdm_ops, 0.25, D);
    float st[3 * D] = {0}, g[D], v[D];
    float *gp[1] = {g}, *sp[1] = {st};
    for (int t = 0; t < 5; t++) {
        for (int j = 0; j < D; j++) g[j] = (float)((t * 7 + j * 3) % 11 - 5) * 0.25f;
        for (int j = 0; j < D; j++) v[j] = t == 0 ? g[j] : 0.75f * v[j] + 0.25f * g[j];
        simulate_call(&m, 1, D, gp, sp, (uint64_t)t);
        for (int j = 0; j < D; j++) {
            ck_assert_float_eq(g[j], v[j]);
            ck_assert_float_eq(st[j], v[j]);         /* v         */
            ck_assert_float_eq(st[D + j], v[j]);     /* g_1       */
            ck_assert_float_eq(st[2 * D + j], v[j]); /* aggregate */
        }
    }
}
END_TEST

START_TEST(econtrol_keeps_the_error_of_the_shifted_gradient)
{
    /* with d = grad - h_i and p = eta e + d: h_i moves by C(p) and e by d - C(p) */
    enum { D = 64, K = 5 };
    const double eta = 0.25;
    method_t m = method_topk(&feedback_econtrol_ops, eta, K);
    static float st[3 * D], g[D], prev[3 * D], grad[D], p[D], sent[D], val[K];
    static uint32_t idx[K];
    float *gp[1] = {g}, *sp[1] = {st};
    uint64_t s = 5;
    for (int t = 0; t < 6; t++) {
        for (int j = 0; j < D; j++) g[j] = grad[j] = rng_float(&s);
        memcpy(prev, st, sizeof st);
        simulate_call(&m, 1, D, gp, sp, (uint64_t)t);
        if (t == 0) { /* exact first call: h_i = grad, e = 0 */
            for (int j = 0; j < D; j++) {
                ck_assert_float_eq(st[j], 0.0f);
                ck_assert_float_eq(st[D + j], grad[j]);
            }
            continue;
        }
        for (int j = 0; j < D; j++) p[j] = (float)eta * prev[j] + (grad[j] - prev[D + j]);
        ck_assert_uint_eq(topk_select(p, D, K, idx, val), K);
        memset(sent, 0, sizeof sent);
        for (int q = 0; q < K; q++) sent[idx[q]] = val[q];
        for (int j = 0; j < D; j++) {
            ck_assert_float_eq(st[D + j], prev[D + j] + sent[j]);
            ck_assert_float_eq(st[j], prev[j] + ((grad[j] - prev[D + j]) - sent[j]));
            ck_assert_float_eq(st[2 * D + j], g[j]); /* one worker: h = h_1 moved the same */
            ck_assert_float_eq(g[j], prev[2 * D + j] + sent[j]);
        }
    }
}
END_TEST

START_TEST(econtrol_with_eta_0_sends_ef21s_message_to_the_sign_of_zero)
{
    /* grad - h_i = -0: EF21 sends -0; 0 e + (-0) would be +0 for a positive e */
    method_t ec = method_topk(&feedback_econtrol_ops, 0.0, 1);
    method_t ef21 = method_topk(&feedback_ef21_ops, NAN, 1);
    float ec_state[3] = {1.0f, 0.0f, 0.0f}, ef21_state[2] = {0.0f, 0.0f};
    const float g[1] = {-0.0f};
    float p_ec[1], p_ef21[1];
    const feedback_ctx_t ec_ctx = {.prm = ec.fb_prm[0], .calls = 1, .rank = 0, .nranks = 1};
    const feedback_ctx_t ef21_ctx = {.prm = ef21.fb_prm[0], .calls = 1, .rank = 0, .nranks = 1};
    ck_assert_int_eq(feedback_econtrol_ops.prepare(&ec_ctx, ec_state, g, p_ec, 1), 0);
    ck_assert_int_eq(feedback_ef21_ops.prepare(&ef21_ctx, ef21_state, g, p_ef21, 1), 0);
    ck_assert(signbit(p_ef21[0]));
    ck_assert_int_eq(memcmp(p_ec, p_ef21, sizeof p_ec), 0);
}
END_TEST

START_TEST(ef21_weight_is_checked_against_the_rank_count)
{
    double prm[TERSE_MAX_PARAMS];
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) prm[i] = NAN;
    ck_assert_ptr_nonnull(feedback_ef21_ops.check);
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 4), TERSE_OK); /* no weight: EF21 */
    prm[0] = 0.25;
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 4), TERSE_OK);
    prm[0] = 2.5; /* weights need not sum to 1 for the code to run */
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 4), TERSE_OK);
    prm[0] = 1e-40; /* n w below the normal floats: g_i = grad / (n w) would overflow */
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 4), TERSE_ERR_ARG);
    prm[0] = INFINITY;
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 1), TERSE_ERR_ARG);
    prm[0] = 1e38;
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 1), TERSE_OK);
    ck_assert_int_eq(feedback_ef21_ops.check(prm, 8), TERSE_ERR_ARG); /* 8e38 > FLT_MAX */
}
END_TEST

START_TEST(feedback_ops_tables_describe_their_state)
{
    const feedback_ops_t *ops[] = {&feedback_ef21_ops, &feedback_ef21sgdm_ops, &feedback_econtrol_ops};
    const char *names[] = {"ef21", "ef21sgdm", "econtrol"};
    const size_t floats[] = {2, 3, 3};
    const unsigned local[] = {1u, 0u, 0u}; /* only EF21-W's weight is the rank's own */
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(ops[i]->size, sizeof(feedback_ops_t));
        ck_assert_str_eq(ops[i]->name, names[i]);
        ck_assert_uint_eq(ops[i]->state_per_elem, floats[i]);
        ck_assert_int_eq(ops[i]->needs_delta, 1);
        ck_assert_int_eq(ops[i]->may_send_uncompressed, 1);
        ck_assert_uint_eq(ops[i]->rank_local_params, local[i]);
    }
}
END_TEST

START_TEST(feedback_methods_handle_an_empty_layer)
{
    const feedback_ops_t *ops[] = {&feedback_ef21_ops, &feedback_ef21sgdm_ops, &feedback_econtrol_ops};
    for (int i = 0; i < 3; i++) {
        method_t m = method_topk(ops[i], 0.5, 1);
        float st[1] = {0}, g[1] = {7.0f};
        float *gp[1] = {g}, *sp[1] = {st};
        simulate_call(&m, 1, 0, gp, sp, 0);
        simulate_call(&m, 1, 0, gp, sp, 1);
        ck_assert_float_eq(g[0], 7.0f);
    }
}
END_TEST

static Suite *feedback_suite(void)
{
    Suite *s = suite_create("feedback");
    TCase *tc_trace = tcase_create("trace");
    tcase_add_test(tc_trace, ef21_reproduces_the_ef21_trace);
    tcase_add_loop_test(tc_trace, econtrol_reproduces_the_econtrol_trace, 0,
                        (int)(sizeof econtrol_trace / sizeof econtrol_trace[0]));
    suite_add_tcase(s, tc_trace);

    TCase *tc_eq = tcase_create("equivalences");
    tcase_add_test(tc_eq, econtrol_with_eta_0_is_ef21_bit_for_bit);
    tcase_add_test(tc_eq, econtrol_with_eta_0_sends_ef21s_message_to_the_sign_of_zero);
    tcase_add_test(tc_eq, ef21sgdm_with_eta_1_is_ef21_bit_for_bit);
    tcase_add_test(tc_eq, ef21w_with_equal_weights_is_ef21_bit_for_bit);
    tcase_add_test(tc_eq, ef21w_matches_ef21_within_rounding_for_any_weights);
    tcase_add_test(tc_eq, ef21w_aggregate_is_the_weighted_sum_of_the_workers_estimates);
    suite_add_tcase(s, tc_eq);

    TCase *tc_prop = tcase_create("properties");
    tcase_add_test(tc_prop, ef21_with_reduce_sum_keeps_the_sum_estimate);
    tcase_add_test(tc_prop, ef21sgdm_with_an_exact_codec_returns_the_momentum);
    tcase_add_test(tc_prop, econtrol_keeps_the_error_of_the_shifted_gradient);
    tcase_add_test(tc_prop, ef21_weight_is_checked_against_the_rank_count);
    tcase_add_test(tc_prop, feedback_ops_tables_describe_their_state);
    tcase_add_test(tc_prop, feedback_methods_handle_an_empty_layer);
    suite_add_tcase(s, tc_prop);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(feedback_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
