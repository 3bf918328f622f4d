/* Classic error feedback (EF14; Seide et al. 2014, Stich et al. 2018), ALGORITHMS.md §3.2, in
 * two forms.
 *
 * "Learning rate outside" (feedback=ef, the default): e is kept in gradient units.
 *     p = g + e;   delta = C(p);   e = p - delta;   out = mean_i delta_i
 * and the caller steps x -= gamma * out.
 *
 * "Learning rate inside" (feedback=ef:lr=GAMMA, the form the theory analyses): e is kept in
 * parameter units, so a learning rate that changes between steps scales only the new
 * gradient, not the error carried over.
 *     p = e + gamma g;   delta = C(p);   e = p - delta;   out = mean_i delta_i / gamma
 * out is divided by gamma so that the caller's step stays x -= gamma * out (= x - mean
 * delta). terse_set_learning_rate() changes gamma between calls. The two forms are the
 * same run for a constant gamma (e_inside = gamma e_outside); they differ once gamma
 * changes. */
#include <math.h>

#include "feedback.h"

enum { EF_LR };

static int ef_prepare(const feedback_ctx_t *ctx, const float *state, const float *restrict g,
                      float *restrict p, size_t n)
{
    if (isnan(ctx->prm[EF_LR])) {
        for (size_t i = 0; i < n; i++) p[i] = g[i] + state[i];
    } else {
        const float gamma = (float)ctx->prm[EF_LR];
        for (size_t i = 0; i < n; i++) p[i] = state[i] + gamma * g[i];
    }
    return 0;
}

static void ef_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                      const float *delta, const float *agg, float *out, size_t n)
{
    (void)g;
    for (size_t i = 0; i < n; i++) state[i] = p[i] - delta[i];
    if (isnan(ctx->prm[EF_LR])) {
        for (size_t i = 0; i < n; i++) out[i] = agg[i];
    } else {
        const float gamma = (float)ctx->prm[EF_LR];
        for (size_t i = 0; i < n; i++) out[i] = agg[i] / gamma;
    }
}

/* Outside form: update is plainly e = p - delta, out = agg. And with e = 0, p = g + 0 = g (a
 * -0 becomes +0, which the dense sum, starting from +0, cannot tell apart), and an
 * uncompressed call's delta is p, so e stays p - p = +0 and out = agg. (Inside form divides
 * out by gamma: neither holds.) */
static int ef_outside(const double *prm)
{
    return isnan(prm[EF_LR]);
}

const feedback_ops_t feedback_ef_ops = {
    .size = sizeof(feedback_ops_t), .name = "ef", .state_per_elem = 1, .needs_delta = 1,
    .identity_at_zero = ef_outside, .plain_residual = ef_outside, .prepare = ef_prepare, .update = ef_update,
};
