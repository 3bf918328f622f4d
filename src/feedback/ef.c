/* Classic error feedback (EF14; Seide et al. 2014, Stich et al. 2018), in the "learning
 * rate outside" form: the error e is kept in gradient units.
 *     p = g + e;   delta = C(p);   e = p - delta;   out = mean_i delta_i
 * (ALGORITHMS.md §3.2). */
#include "feedback.h"

static int ef_prepare(const feedback_ctx_t *ctx, const float *state, const float *restrict g,
                      float *restrict p, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) p[i] = g[i] + state[i];
    return 0;
}

static void ef_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                      const float *delta, const float *agg, float *out, size_t n)
{
    (void)ctx; (void)g;
    for (size_t i = 0; i < n; i++) state[i] = p[i] - delta[i];
    for (size_t i = 0; i < n; i++) out[i] = agg[i];
}

const feedback_ops_t feedback_ef_ops = {
    .size = sizeof(feedback_ops_t), .name = "ef", .state_per_elem = 1, .needs_delta = 1,
    .prepare = ef_prepare, .update = ef_update,
};
