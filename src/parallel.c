/* The engine's elementwise passes over a layer, split over the worker pool (src/pool.h):
 * feedback prepare and update, and the non-finite scan. Each element is computed by one
 * thread with the arithmetic of the one-thread path, so the bits never depend on threads=. */
#include <string.h>

#include "internal.h"

/* Below this many elements per thread a pass stays on the calling thread. */
#define PAR_GRAIN ((size_t)1 << 15)

typedef struct {
    const layer_t *l;
    feedback_ctx_t ctx;
    const float *g, *p;
    float *pw, *out;
    int uncompressed[256];   /* prepare's answer per part (threads <= 256) */
} fb_job_t;

static void prepare_part(void *v, int part, size_t b, size_t e)
{
    fb_job_t *j = v;
    j->uncompressed[part] = j->l->fb->prepare(&j->ctx, j->l->state + b, j->g + b, j->pw + b, e - b);
}

static void update_part(void *v, int part, size_t b, size_t e)
{
    (void)part;
    fb_job_t *j = v;
    const layer_t *l = j->l;
    l->fb->update(&j->ctx, l->state + b, j->g + b, j->p + b, l->delta ? l->delta + b : NULL, l->agg + b,
                  j->out + b, e - b);
}

int par_fb_prepare(pool_t *pool, const layer_t *l, const feedback_ctx_t *ctx, const float *g, float *p)
{
    fb_job_t j = {.l = l, .ctx = *ctx, .g = g, .pw = p};
    j.ctx.stride = l->count;
    pool_for(pool, l->count, PAR_GRAIN, prepare_part, &j);
    return j.uncompressed[0]; /* every part answers alike: it depends on the call, not the data */
}

void par_fb_update(pool_t *pool, const layer_t *l, const feedback_ctx_t *ctx, const float *g,
                   const float *p, float *out)
{
    fb_job_t j = {.l = l, .ctx = *ctx, .g = g, .p = p, .out = out};
    j.ctx.stride = l->count;
    pool_for(pool, l->count, PAR_GRAIN, update_part, &j);
}

typedef struct {
    const float *v;
    int bad[256];
} scan_job_t;

static void scan_part(void *v, int part, size_t b, size_t e)
{
    scan_job_t *j = v;
    j->bad[part] = engine_has_nonfinite(j->v + b, e - b);
}

int par_has_nonfinite(pool_t *pool, const float *v, size_t n)
{
    scan_job_t j;
    memset(j.bad, 0, sizeof j.bad);
    j.v = v;
    pool_for(pool, n, PAR_GRAIN, scan_part, &j);
    int bad = 0;
    for (int i = 0; i < pool_threads(pool); i++) bad |= j.bad[i];
    return bad;
}
