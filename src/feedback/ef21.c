/* EF21 (Richtárik, Sokolov, Fatkhullin 2021; ALGORITHMS.md §4.1) and, when the rank is given
 * a weight, EF21-W (Richtárik, Gasanov, Burlachenko 2024; §4.4).
 *
 * State, two arrays of n floats:  gi (this rank's g_i) | g (the aggregate: the same bits on
 * every rank, in the layer's reduce units).
 *
 * EF21:
 *   first call (calls == 0): p = grad_i, sent uncompressed;  g_i = grad_i;  g = agg
 *   later calls:             p = grad_i - g_i;  delta = C(p);  g_i += delta;  g += agg
 *   out = g                  (agg = mean_j delta_j, so g tracks mean_j g_j)
 *
 * EF21-W, weight w_i given to each rank (sum_i w_i = 1, e.g. L_i / sum_j L_j): g_i tracks
 * grad_i / (n w_i) and the aggregate is g = sum_i w_i g_i. The protocol can only average the
 * messages, so rank i sends its difference scaled by s_i = n w_i, and the average of the
 * scaled messages is the weighted sum:
 *   first call: p = grad_i uncompressed;  g_i = grad_i / s_i;  g = agg = sum_j w_j g_j
 *   later:      p = s_i (grad_i / s_i - g_i) = grad_i - s_i g_i;  delta = C(p);
 *               g_i += delta / s_i;  g += agg = (1/n) sum_j delta_j = sum_j w_j (delta_j / s_j)
 * For a positively homogeneous compressor (TopK, RandK, scaled sign) C(s u) = s C(u), so
 * delta / s_i is the paper's c_i = C(grad_i / (n w_i) - g_i); the fp16/bf16 casts instead
 * round the scaled difference, at different points but with the same relative accuracy.
 * (In exact arithmetic with a homogeneous C, u_i = s_i g_i follows EF21's recursion, so
 * EF21-W's iterates are EF21's: the weights change the analysis and its stepsize, in L_AM
 * rather than L_QM, not the algorithm. The weights cannot be checked to sum to 1 without a
 * collective; with a homogeneous C they need not.)
 *
 * Rounding of the scaling: s_i = fl32(n w_i) (computed in double, rounded once). s_i g_i and
 * delta / s_i each round once (2^-24 relative), so the g_i a rank keeps and the delta it sent
 * agree to within an ulp of delta: g, the running sum of what was sent, and sum_j w_j g_j,
 * what the ranks keep, drift apart by a few ulps of |delta| per call, a random walk that the
 * feedback does not correct (each rank's next difference is taken against its own g_i). Plain
 * EF21 drifts the same way between g and mean_j g_j, since the float mean rounds. When s_i is
 * a power of two, both operations are exact. In particular s = 1 whenever n w is within
 * 2^-25 of 1, as for equal weights 1/n written with 8 or more significant digits, and then
 * EF21-W is EF21 bit for bit.
 *
 * reduce=sum: agg is the sum of the messages, so g = sum_j g_j (EF21-W: n sum_j w_j g_j), the
 * estimate of the sum of the gradients. */
#include <float.h>
#include <string.h>

#include "error.h"
#include "feedback.h"

/* The rank's message scale n w_i, or 0 for plain EF21 (no weight given). */
static float ef21_scale(const double *prm, int nranks)
{
    double w = prm[0];
    return w == w ? (float)((double)nranks * w) : 0.0f;
}

static terse_status_t ef21_check(const double *prm, int nranks)
{
    if (prm[0] != prm[0]) return TERSE_OK;
    float s = ef21_scale(prm, nranks);
    if (!(s >= FLT_MIN && s <= FLT_MAX))
        return terse_error(TERSE_ERR_ARG,
                           "feedback ef21: weight=%g on %d ranks gives the message scale "
                           "ranks x weight = %g, outside the normal float range [%g, %g]; the "
                           "weights are w_i = L_i / sum_j L_j, in (0, 1]",
                           prm[0], nranks, (double)nranks * prm[0], (double)FLT_MIN, (double)FLT_MAX);
    return TERSE_OK;
}

static int ef21_prepare(const feedback_ctx_t *ctx, const float *state, const float *restrict g,
                        float *restrict p, size_t n)
{
    const float *gi = state;
    if (ctx->calls == 0) {
        memcpy(p, g, n * sizeof *p);
        return 1;
    }
    float s = ef21_scale(ctx->prm, ctx->nranks);
    if (s == 0.0f)
        for (size_t j = 0; j < n; j++) p[j] = g[j] - gi[j];
    else
        for (size_t j = 0; j < n; j++) p[j] = g[j] - s * gi[j];
    return 0;
}

static void ef21_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                        const float *delta, const float *agg, float *out, size_t n)
{
    (void)p;
    float *gi = state, *gg = state + FEEDBACK_STRIDE(ctx, n);
    float s = ef21_scale(ctx->prm, ctx->nranks);
    if (ctx->calls == 0) {
        /* out may alias g: g[j] is read before out[j] is written */
        if (s == 0.0f)
            for (size_t j = 0; j < n; j++) gi[j] = g[j];
        else
            for (size_t j = 0; j < n; j++) gi[j] = g[j] / s;
        for (size_t j = 0; j < n; j++) out[j] = gg[j] = agg[j];
        return;
    }
    if (s == 0.0f)
        for (size_t j = 0; j < n; j++) gi[j] += delta[j];
    else
        for (size_t j = 0; j < n; j++) gi[j] += delta[j] / s;
    for (size_t j = 0; j < n; j++) out[j] = gg[j] += agg[j];
}

const feedback_ops_t feedback_ef21_ops = {
    .size = sizeof(feedback_ops_t), .name = "ef21", .state_per_elem = 2, .needs_delta = 1,
    .may_send_uncompressed = 1, .rank_local_params = 1u << 0, /* weight */
    .check = ef21_check, .prepare = ef21_prepare, .update = ef21_update,
};
