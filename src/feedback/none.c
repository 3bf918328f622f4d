/* No error feedback: the compressed mean is the estimate, and the compression error is lost. */
#include <string.h>

#include "feedback.h"

static int none_prepare(const feedback_ctx_t *ctx, const float *state, const float *restrict g,
                        float *restrict p, size_t n)
{
    (void)ctx; (void)state;
    memcpy(p, g, n * sizeof *p);
    return 0;
}

static void none_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                        const float *delta, const float *agg, float *out, size_t n)
{
    (void)ctx; (void)state; (void)g; (void)p; (void)delta;
    memcpy(out, agg, n * sizeof *out);
}

const feedback_ops_t feedback_none_ops = {
    .size = sizeof(feedback_ops_t), .name = "none", .prepare = none_prepare, .update = none_update,
};
