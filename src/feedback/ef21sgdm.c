/* EF21-SGDM (Fatkhullin, Tyurin, Richtárik 2023; ALGORITHMS.md §4.3): EF21 applied to a
 * Polyak momentum of the gradients instead of the gradients themselves.
 *
 * State, three arrays of n floats:  v (momentum) | gi (this rank's g_i) | g (the aggregate,
 * the same bits on every rank, in the layer's reduce units).
 *   first call (calls == 0): p = grad_i uncompressed;  v = g_i = grad_i;  g = agg
 *   later calls:             v' = (1 - eta) v + eta grad_i;  p = v' - g_i;  delta = C(p);
 *                            v = v';  g_i += delta;  g += agg
 *   out = g
 * eta = 1 is EF21 (bit for bit: v' is then grad_i itself). reduce=sum makes g = sum_j g_j.
 *
 * prepare may not write the state, so it cannot keep v'; update recomputes it through the
 * same loop from the same v and grad_i (the caller's buffer is intact until update writes the
 * estimate over it), which gives the same bits. */
#include <string.h>

#include "feedback.h"

/* dst = (1 - eta) v + eta grad, with (1 - eta) and eta rounded to float once. dst may be v.
 * prepare and update share this loop so that both compute the same bits. */
static void sgdm_momentum(const double *prm, float *dst, const float *v, const float *grad,
                          size_t n)
{
    const float keep = (float)(1.0 - prm[0]), eta = (float)prm[0];
    if (eta == 1.0f) {
        memmove(dst, grad, n * sizeof *dst);
        return;
    }
    for (size_t j = 0; j < n; j++) dst[j] = keep * v[j] + eta * grad[j];
}

static int ef21sgdm_prepare(const feedback_ctx_t *ctx, const float *state,
                            const float *restrict g, float *restrict p, size_t n)
{
    const float *v = state, *gi = state + FEEDBACK_STRIDE(ctx, n);
    if (ctx->calls == 0) {
        memcpy(p, g, n * sizeof *p);
        return 1;
    }
    sgdm_momentum(ctx->prm, p, v, g, n);
    for (size_t j = 0; j < n; j++) p[j] -= gi[j];
    return 0;
}

static void ef21sgdm_update(const feedback_ctx_t *ctx, float *state, const float *g,
                            const float *p, const float *delta, const float *agg, float *out,
                            size_t n)
{
    (void)p;
    float *v = state, *gi = state + FEEDBACK_STRIDE(ctx, n), *gg = state + 2 * FEEDBACK_STRIDE(ctx, n);
    if (ctx->calls == 0) {
        memcpy(v, g, n * sizeof *v);
        memcpy(gi, g, n * sizeof *gi);
        for (size_t j = 0; j < n; j++) out[j] = gg[j] = agg[j];
        return;
    }
    sgdm_momentum(ctx->prm, v, v, g, n); /* before out, which may alias g, is written */
    for (size_t j = 0; j < n; j++) gi[j] += delta[j];
    for (size_t j = 0; j < n; j++) out[j] = gg[j] += agg[j];
}

const feedback_ops_t feedback_ef21sgdm_ops = {
    .size = sizeof(feedback_ops_t), .name = "ef21sgdm", .state_per_elem = 3, .needs_delta = 1,
    .may_send_uncompressed = 1, .prepare = ef21sgdm_prepare, .update = ef21sgdm_update,
};
