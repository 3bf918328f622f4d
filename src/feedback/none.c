/* No error feedback: the compressed mean is the estimate, and the compression error is lost. */
#include <string.h>

#include "feedback.h"

static int none_prepare(const double *prm, const float *state, const float *restrict g,
                        float *restrict p, size_t n, uint64_t calls)
{
    (void)prm; (void)state; (void)calls;
    memcpy(p, g, n * sizeof *p);
    return 0;
}

static void none_update(const double *prm, float *state, const float *g, const float *p,
                        const float *delta, const float *agg, float *out, size_t n,
                        uint64_t calls)
{
    (void)prm; (void)state; (void)g; (void)p; (void)delta; (void)calls;
    memcpy(out, agg, n * sizeof *out);
}

const feedback_ops_t feedback_none_ops = {sizeof(feedback_ops_t), "none", 0, 0, 0, none_prepare,
                                          none_update};
