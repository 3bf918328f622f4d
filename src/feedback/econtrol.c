/* EControl (Gao, Islamov, Stich 2024; ALGORITHMS.md §5): one compressed message builds both
 * the gradient estimator h and the error term e; eta sets how much of the error is fed back.
 *
 * State, three arrays of n floats:  e (error) | hi (this rank's h_i) | h (the aggregate, the
 * same bits on every rank, in the layer's reduce units).
 *   first call (calls == 0): p = grad_i uncompressed;  h_i = grad_i;  e = 0;  h = agg
 *   later calls:             d = grad_i - h_i;  p = eta e + d;  delta = C(p);
 *                            e += d - delta;  h_i += delta;  h += agg
 *   out = h                  (= the old h + mean_j delta_j, the paper's step direction)
 * The spec's step 0 (delta = C(0) = 0 after h_i = grad_i) changes nothing and is folded into
 * the first call. eta = 0 is EF21 bit for bit (p is then d itself, not 0 e + d, whose zero
 * could carry the wrong sign); e is still tracked. reduce=sum makes h = sum_j h_j. */
#include <string.h>

#include "feedback.h"

static int econtrol_prepare(const feedback_ctx_t *ctx, const float *state,
                            const float *restrict g, float *restrict p, size_t n)
{
    const float *e = state, *hi = state + FEEDBACK_STRIDE(ctx, n);
    if (ctx->calls == 0) {
        memcpy(p, g, n * sizeof *p);
        return 1;
    }
    const float eta = (float)ctx->prm[0];
    if (eta == 0.0f)
        for (size_t j = 0; j < n; j++) p[j] = g[j] - hi[j];
    else
        for (size_t j = 0; j < n; j++) p[j] = eta * e[j] + (g[j] - hi[j]);
    return 0;
}

static void econtrol_update(const feedback_ctx_t *ctx, float *state, const float *g,
                            const float *p, const float *delta, const float *agg, float *out,
                            size_t n)
{
    (void)p;
    float *e = state, *hi = state + FEEDBACK_STRIDE(ctx, n), *h = state + 2 * FEEDBACK_STRIDE(ctx, n);
    if (ctx->calls == 0) {
        memset(e, 0, n * sizeof *e);
        memcpy(hi, g, n * sizeof *hi);
        for (size_t j = 0; j < n; j++) out[j] = h[j] = agg[j];
        return;
    }
    /* e reads g and the old h_i, before h_i and out (which may alias g) are written */
    for (size_t j = 0; j < n; j++) e[j] += (g[j] - hi[j]) - delta[j];
    for (size_t j = 0; j < n; j++) hi[j] += delta[j];
    for (size_t j = 0; j < n; j++) out[j] = h[j] += agg[j];
}

const feedback_ops_t feedback_econtrol_ops = {
    .size = sizeof(feedback_ops_t), .name = "econtrol", .state_per_elem = 3, .needs_delta = 1,
    .may_send_uncompressed = 1, .prepare = econtrol_prepare, .update = econtrol_update,
};
