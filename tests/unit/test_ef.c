/* Unit tests for the feedback methods none and ef (src/feedback/), driven the way the
 * allreduce drives them: prepare (g -> p), the codec on p, the aggregate of every worker's
 * decoded message, update. Workers are simulated one after another in one process.
 *
 * The EF14 trace is ALGORITHMS.md §10.2 part 1: n = 2, d = 3, Top1, gamma = 0.5, x0 = 0,
 * f_i(x) = 0.5 ||x - c_i||^2 (so g_i = x - c_i), c_1 = (1, -2, 0.5), c_2 = (3, 0, -1).
 * The trace is printed in the "learning rate inside" form (p = e + gamma g, x -= mean delta);
 * terse's ef is the "learning rate outside" form (p = g + e, e in gradient units,
 * x -= gamma mean delta). For a constant gamma the two are the same run with
 * e_inside = gamma e_outside and delta_inside = gamma delta_outside (TopK commutes with a
 * positive scale, ties included), so x must match the trace exactly and gamma * e must
 * match its e. Every number in it is a dyadic rational, so float arithmetic is exact. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "feedback/feedback.h"
#include "topk.h"

extern const codec_ops_t codec_topk_ops;
extern const feedback_ops_t feedback_ef_ops, feedback_none_ops;

/* ---- Helpers ---------------------------------------------------------------------------- */

#define MAX_D 4096

typedef struct {
    const feedback_ops_t *fb;
    const codec_ops_t *codec;
    double fb_prm[TERSE_MAX_PARAMS];
    double codec_prm[TERSE_MAX_PARAMS];
} method_t;

static method_t method_topk(const feedback_ops_t *fb, double k)
{
    method_t m;
    m.fb = fb;
    m.codec = &codec_topk_ops;
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) m.fb_prm[i] = m.codec_prm[i] = NAN;
    m.codec_prm[1] = k; /* topk: density, k */
    return m;
}

/* delta = 0 + decode(encode(p)); returns the message bytes. */
static size_t compress(const method_t *m, const float *p, size_t d, void *msg, float *delta)
{
    ck_assert_uint_le(m->codec->max_bytes(m->codec_prm, d), 4 + 8 * MAX_D);
    size_t bytes = m->codec->encode(m->codec_prm, NULL, p, d, msg, NULL);
    memset(delta, 0, d * sizeof *delta);
    ck_assert_int_eq(m->codec->decode_add(m->codec_prm, msg, bytes, d, delta, NULL), TERSE_OK);
    return bytes;
}

/* One call of the allreduce for n workers, serially, in the order the sparse protocol uses:
 * every worker prepares and encodes; the aggregate is the sum of the decoded messages in
 * rank order, divided by n; every worker updates. g[i] is replaced by the estimate. */
static void simulate_call(const method_t *m, int n, size_t d, float *const *g, float *const *state,
                          uint64_t calls)
{
    static float p[8][MAX_D], delta[8][MAX_D], agg[MAX_D];
    static uint32_t msg[8][1 + 2 * MAX_D]; /* uint32_t: aligned like a received message */
    static size_t bytes[8];
    ck_assert_int_le(n, 8);
    ck_assert_uint_le(d, MAX_D);
    for (int i = 0; i < n; i++) {
        const feedback_ctx_t ctx = {.prm = m->fb_prm, .calls = calls, .rank = i, .nranks = n};
        float before[MAX_D];
        if (state[i]) memcpy(before, state[i], d * sizeof(float));
        ck_assert_int_eq(m->fb->prepare(&ctx, state[i], g[i], p[i], d), 0);
        /* prepare leaves the state alone, so that an abandoned call changes nothing */
        if (state[i]) ck_assert_int_eq(memcmp(before, state[i], d * sizeof(float)), 0);
        bytes[i] = compress(m, p[i], d, msg[i], delta[i]);
    }
    memset(agg, 0, d * sizeof(float));
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(m->codec->decode_add(m->codec_prm, msg[i], bytes[i], d, agg, NULL), TERSE_OK);
    for (size_t j = 0; j < d; j++) agg[j] /= (float)n;
    for (int i = 0; i < n; i++) {
        const feedback_ctx_t ctx = {.prm = m->fb_prm, .calls = calls, .rank = i, .nranks = n};
        m->fb->update(&ctx, state[i], g[i], p[i], delta[i], agg, g[i], d);
    }
}

static void assert_vec_eq(const float *got, const double *want, size_t d, const char *what)
{
    for (size_t j = 0; j < d; j++)
        ck_assert_msg((double)got[j] == want[j], "%s[%zu] = %.9g, want %.9g", what, j, got[j],
                      want[j]);
}

/* ---- EF14 trace ------------------------------------------------------------------------- */

START_TEST(ef_reproduces_the_ef14_trace)
{
    enum { N = 2, D = 3, T = 3 };
    const double gamma = 0.5;
    const float c[N][D] = {{1.0f, -2.0f, 0.5f}, {3.0f, 0.0f, -1.0f}};
    /* ALGORITHMS.md §10.2 (1), EF14 rows t = 1, 2, 3 (e in the lr-inside form) */
    const double x_want[T][D] = {
        {0.75, -0.5, 0.0}, {1.3125, -0.875, 0.0}, {1.3125, -0.875, -0.375}};
    const double e_want[T][N][D] = {
        {{-0.5, 0.0, -0.25}, {0.0, 0.0, 0.5}},
        {{-0.625, 0.0, -0.5}, {0.0, -0.25, 1.0}},
        {{-0.46875, 0.5625, 0.0}, {-0.84375, -0.6875, 0.0}},
    };
    method_t m = method_topk(&feedback_ef_ops, 1);
    ck_assert_uint_eq(feedback_ef_ops.state_per_elem, 1);
    float x[D] = {0, 0, 0};
    float e[N][D] = {{0}}, g[N][D];
    float *gp[N] = {g[0], g[1]}, *ep[N] = {e[0], e[1]};
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < D; j++) g[i][j] = x[j] - c[i][j];
        simulate_call(&m, N, D, gp, ep, (uint64_t)t);
        /* every worker holds the same estimate: mean_i delta_i */
        ck_assert_int_eq(memcmp(g[0], g[1], sizeof g[0]), 0);
        for (int j = 0; j < D; j++) x[j] -= (float)gamma * g[0][j];
        char what[32];
        snprintf(what, sizeof what, "t=%d x", t + 1);
        assert_vec_eq(x, x_want[t], D, what);
        for (int i = 0; i < N; i++) {
            float e_inside[D];
            for (int j = 0; j < D; j++) e_inside[j] = (float)gamma * e[i][j];
            snprintf(what, sizeof what, "t=%d gamma*e_%d", t + 1, i + 1);
            assert_vec_eq(e_inside, e_want[t][i], D, what);
        }
    }
}
END_TEST

/* The "learning rate inside" form (feedback=ef:lr=0.5) runs the trace as printed: e in
 * parameter units, x -= gamma * out with out = mean delta / gamma. */
START_TEST(ef_lr_inside_reproduces_the_ef14_trace_as_printed)
{
    enum { N = 2, D = 3, T = 3 };
    const float c[N][D] = {{1.0f, -2.0f, 0.5f}, {3.0f, 0.0f, -1.0f}};
    const double x_want[T][D] = {
        {0.75, -0.5, 0.0}, {1.3125, -0.875, 0.0}, {1.3125, -0.875, -0.375}};
    const double e_want[T][N][D] = {
        {{-0.5, 0.0, -0.25}, {0.0, 0.0, 0.5}},
        {{-0.625, 0.0, -0.5}, {0.0, -0.25, 1.0}},
        {{-0.46875, 0.5625, 0.0}, {-0.84375, -0.6875, 0.0}},
    };
    method_t m = method_topk(&feedback_ef_ops, 1);
    m.fb_prm[0] = 0.5; /* lr */
    float x[D] = {0, 0, 0};
    float e[N][D] = {{0}}, g[N][D];
    float *gp[N] = {g[0], g[1]}, *ep[N] = {e[0], e[1]};
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < D; j++) g[i][j] = x[j] - c[i][j];
        simulate_call(&m, N, D, gp, ep, (uint64_t)t);
        for (int j = 0; j < D; j++) x[j] -= 0.5f * g[0][j];
        char what[32];
        snprintf(what, sizeof what, "t=%d x", t + 1);
        assert_vec_eq(x, x_want[t], D, what);
        for (int i = 0; i < N; i++) {
            snprintf(what, sizeof what, "t=%d e_%d", t + 1, i + 1);
            assert_vec_eq(e[i], e_want[t][i], D, what);
        }
    }
}
END_TEST

/* A learning rate that changes scales only the new gradient in the inside form, but the
 * whole carried error in the outside form: one worker, Top1 of 2 elements. */
START_TEST(ef_lr_inside_and_outside_differ_once_the_rate_changes)
{
    enum { D = 2 };
    method_t in = method_topk(&feedback_ef_ops, 1), out = method_topk(&feedback_ef_ops, 1);
    float e_in[D] = {0, 0}, e_out[D] = {0, 0};
    float *ei[1] = {e_in}, *eo[1] = {e_out};
    /* call 0, gamma = 1, g = (3, 2): both keep 3 and carry 2 at index 1 */
    in.fb_prm[0] = 1.0;
    float g_in[D] = {3, 2}, g_out[D] = {3, 2};
    float *gi[1] = {g_in}, *go[1] = {g_out};
    simulate_call(&in, 1, D, gi, ei, 0);
    simulate_call(&out, 1, D, go, eo, 0);
    ck_assert(e_in[1] == 2.0f && e_out[1] == 2.0f);
    /* call 1, gamma = 0.25, g = (2.5, 0). Inside: p = (0, 2) + 0.25 (2.5, 0) = (0.625, 2)
     * keeps index 1, a step of 2 = gamma * out, so out = (0, 8). Outside: p = (2.5, 2) keeps
     * index 0, out = (2.5, 0). */
    in.fb_prm[0] = 0.25;
    g_in[0] = 2.5f; g_in[1] = 0.0f;
    g_out[0] = 2.5f; g_out[1] = 0.0f;
    simulate_call(&in, 1, D, gi, ei, 1);
    simulate_call(&out, 1, D, go, eo, 1);
    ck_assert(g_in[0] == 0.0f && g_in[1] == 8.0f);
    ck_assert(e_in[0] == 0.625f && e_in[1] == 0.0f);
    ck_assert(g_out[0] == 2.5f && g_out[1] == 0.0f);
    ck_assert(e_out[0] == 0.0f && e_out[1] == 2.0f);
}
END_TEST

/* ---- Properties ------------------------------------------------------------------------- */

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

START_TEST(ef_state_after_a_call_is_p_minus_its_compression)
{
    enum { D = 1000 };
    uint64_t s = 31;
    method_t m = method_topk(&feedback_ef_ops, 17);
    static float g[D], e[D], p[D], delta[D], agg[D], out[D], e_before[D];
    static uint32_t msg[1 + 2 * MAX_D];
    for (int j = 0; j < D; j++) e[j] = rng_float(&s);
    for (uint64_t call = 0; call < 5; call++) {
        const feedback_ctx_t ctx = {.prm = m.fb_prm, .calls = call, .rank = 0, .nranks = 1};
        for (int j = 0; j < D; j++) {
            g[j] = rng_float(&s);
            agg[j] = rng_float(&s);
        }
        memcpy(e_before, e, sizeof e);
        ck_assert_int_eq(feedback_ef_ops.prepare(&ctx, e, g, p, D), 0);
        for (int j = 0; j < D; j++) ck_assert_float_eq(p[j], g[j] + e_before[j]);
        compress(&m, p, D, msg, delta);
        feedback_ef_ops.update(&ctx, e, g, p, delta, agg, out, D);
        size_t kept = 0;
        for (int j = 0; j < D; j++) {
            ck_assert_float_eq(e[j], p[j] - delta[j]);
            kept += delta[j] != 0.0f;
            ck_assert_msg(delta[j] == 0.0f ? e[j] == p[j] : e[j] == 0.0f,
                          "entry %d: kept entries leave no error, dropped ones all of p", j);
            ck_assert_float_eq(out[j], agg[j]); /* the estimate is the aggregate */
        }
        ck_assert_uint_eq(kept, 17);
    }
}
END_TEST

START_TEST(ef_update_may_write_the_estimate_over_g)
{
    enum { D = 64 };
    uint64_t s = 7;
    method_t m = method_topk(&feedback_ef_ops, 4);
    float g[D], e[D], p[D], delta[D], agg[D];
    static uint32_t msg[1 + 2 * D];
    for (int j = 0; j < D; j++) {
        g[j] = rng_float(&s);
        e[j] = rng_float(&s);
        agg[j] = rng_float(&s);
    }
    const feedback_ctx_t ctx = {.prm = m.fb_prm, .calls = 0, .rank = 0, .nranks = 1};
    feedback_ef_ops.prepare(&ctx, e, g, p, D);
    compress(&m, p, D, msg, delta);
    feedback_ef_ops.update(&ctx, e, g, p, delta, agg, g, D); /* out aliases g */
    for (int j = 0; j < D; j++) {
        ck_assert_float_eq(g[j], agg[j]);
        ck_assert_float_eq(e[j], p[j] - delta[j]);
    }
}
END_TEST

START_TEST(ef_with_an_exact_codec_keeps_zero_error)
{
    /* k = d: TopK keeps everything, so e stays 0 and the estimate is the exact mean */
    enum { N = 3, D = 5 };
    method_t m = method_topk(&feedback_ef_ops, D);
    float g[N][D], e[N][D] = {{0}};
    float *gp[N] = {g[0], g[1], g[2]}, *ep[N] = {e[0], e[1], e[2]};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) g[i][j] = (float)(i * 8 + j) * 0.25f;
    simulate_call(&m, N, D, gp, ep, 0);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) {
            ck_assert_float_eq(e[i][j], 0.0f);
            ck_assert_float_eq(g[i][j], (float)(8 + j) * 0.25f); /* mean over i of 8i + j */
        }
}
END_TEST

START_TEST(none_feedback_passes_the_aggregate_through)
{
    enum { D = 257 };
    uint64_t s = 3;
    method_t m = method_topk(&feedback_none_ops, 9);
    ck_assert_uint_eq(feedback_none_ops.state_per_elem, 0);
    static float g[D], p[D], delta[D], agg[D], out[D], g_copy[D];
    static uint32_t msg[1 + 2 * D];
    for (int j = 0; j < D; j++) {
        g[j] = rng_float(&s);
        agg[j] = rng_float(&s);
    }
    memcpy(g_copy, g, sizeof g);
    const feedback_ctx_t ctx = {.prm = m.fb_prm, .calls = 0, .rank = 0, .nranks = 1};
    const feedback_ctx_t ctx1 = {.prm = m.fb_prm, .calls = 1, .rank = 0, .nranks = 1};
    ck_assert_int_eq(feedback_none_ops.prepare(&ctx, NULL, g, p, D), 0);
    ck_assert_int_eq(memcmp(p, g, sizeof g), 0); /* p is g: nothing added */
    compress(&m, p, D, msg, delta);
    feedback_none_ops.update(&ctx, NULL, g, p, delta, agg, out, D);
    ck_assert_int_eq(memcmp(out, agg, sizeof agg), 0);
    ck_assert_int_eq(memcmp(g, g_copy, sizeof g), 0);
    feedback_none_ops.update(&ctx1, NULL, g, p, delta, agg, g, D); /* out aliases g */
    ck_assert_int_eq(memcmp(g, agg, sizeof agg), 0);
}
END_TEST

START_TEST(none_feedback_loses_what_the_codec_drops)
{
    /* the same two-worker problem as the EF14 trace, without feedback: the estimate is the
     * mean of Top1(g_i) and nothing is carried to the next call */
    enum { N = 2, D = 3 };
    method_t m = method_topk(&feedback_none_ops, 1);
    float g[N][D] = {{-1.0f, 2.0f, -0.5f}, {-3.0f, 0.0f, 1.0f}};
    float *gp[N] = {g[0], g[1]}, *ep[N] = {NULL, NULL};
    simulate_call(&m, N, D, gp, ep, 0);
    const double want[D] = {-1.5, 1.0, 0.0};
    assert_vec_eq(g[0], want, D, "estimate");
    assert_vec_eq(g[1], want, D, "estimate");
}
END_TEST

START_TEST(feedback_ops_of_ef_and_none_send_compressed_from_the_first_call)
{
    ck_assert_int_eq(feedback_ef_ops.may_send_uncompressed, 0);
    ck_assert_int_eq(feedback_none_ops.may_send_uncompressed, 0);
    ck_assert_int_eq(feedback_ef_ops.needs_delta, 1);
}
END_TEST

static Suite *ef_suite(void)
{
    Suite *s = suite_create("ef");
    TCase *tc_trace = tcase_create("trace");
    tcase_add_test(tc_trace, ef_reproduces_the_ef14_trace);
    tcase_add_test(tc_trace, ef_lr_inside_reproduces_the_ef14_trace_as_printed);
    tcase_add_test(tc_trace, ef_lr_inside_and_outside_differ_once_the_rate_changes);
    suite_add_tcase(s, tc_trace);

    TCase *tc_prop = tcase_create("properties");
    tcase_add_test(tc_prop, ef_state_after_a_call_is_p_minus_its_compression);
    tcase_add_test(tc_prop, ef_update_may_write_the_estimate_over_g);
    tcase_add_test(tc_prop, ef_with_an_exact_codec_keeps_zero_error);
    tcase_add_test(tc_prop, none_feedback_passes_the_aggregate_through);
    tcase_add_test(tc_prop, none_feedback_loses_what_the_codec_drops);
    tcase_add_test(tc_prop, feedback_ops_of_ef_and_none_send_compressed_from_the_first_call);
    suite_add_tcase(s, tc_prop);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ef_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
