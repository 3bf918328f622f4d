/* Device error feedback (dfeedback.h): the methods of src/feedback/ (none.c, ef.c, ef21.c,
 * ef21sgdm.c, econtrol.c) as elementwise kernels on the caller's stream.
 *
 * Each kernel performs, for element j, the float operations of its host loop in the same
 * order, so that every array it writes matches the host method bit for bit. The operations
 * are written with the _rn intrinsics (__fadd_rn, __fmul_rn, ...): nvcc never fuses those
 * into a multiply-add, whatever --fmad says, and they round to nearest even like the host's
 * SSE arithmetic; __fdiv_rn is the IEEE division even under --use_fast_math. Where a host
 * method runs several loops over the layer (EControl's update: e, then h_i, then h), the
 * kernel runs them for one element at a time: the loops are elementwise, so only the order
 * within an element matters, and each thread reads all of element j's inputs before it
 * writes any output, which keeps the host's aliasing rule (out may be g: g[j] is read before
 * out[j] is written). Plain copies go through cudaMemcpyAsync.
 *
 * The parameters (EF's gamma, EF21-W's scale, the eta of EF21-SGDM and EControl) are
 * converted to float on the host, by the host's expressions, and passed to the kernels. */
#include <math.h>
#include <string.h>

#include "common.cuh"
#include "dfeedback.h"

extern "C" {
extern const feedback_ops_t feedback_none_ops, feedback_ef_ops, feedback_ef21_ops,
    feedback_ef21sgdm_ops, feedback_econtrol_ops;
}

/* Grid-stride loop over [0, n) with 64-bit indices: layers may exceed 2^31 elements. */
#define FOR_EACH(j, n)                                                                        \
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < (n);                  \
         j += (size_t)gridDim.x * blockDim.x)

/* Launches kernel<<<blocks for n, CUDA_THREADS, 0, stream>>>(args...) unless n is 0, and
 * returns TERSE_ERR_BACKEND from the calling function when the launch fails. */
#define LAUNCH(kernel, n, stream, ...)                                                        \
    do {                                                                                      \
        if ((n) > 0) {                                                                        \
            kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cuda_stream(stream)>>>(__VA_ARGS__);    \
            CUDA_CHECK_LAUNCH(#kernel);                                                       \
        }                                                                                     \
    } while (0)

/* dst[0..n) = src[0..n), bit for bit (NaN payloads included), as the host's memcpy. */
static terse_status_t dcopy(float *dst, const float *src, size_t n, void *stream, const char *what)
{
    if (n == 0 || dst == src) return TERSE_OK;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof *dst, cudaMemcpyDeviceToDevice, cuda_stream(stream)),
               what);
    return TERSE_OK;
}

/* The methods other than none read ctx (the host ones would crash on NULL). */
static terse_status_t need_ctx(const feedback_ctx_t *ctx, const char *method)
{
    if (ctx && ctx->prm) return TERSE_OK;
    return terse_error(TERSE_ERR_ARG, "device feedback %s: ctx and ctx->prm must not be NULL", method);
}

/* ---- none: p = g; out = agg ------------------------------------------------------------ */

static int none_prepare(const feedback_ctx_t *ctx, const float *state, const float *g, float *p, size_t n,
                        void *stream)
{
    (void)ctx; (void)state;
    terse_status_t s = dcopy(p, g, n, stream, "device feedback none: prepare copy");
    return s != TERSE_OK ? (int)s : 0;
}

static terse_status_t none_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                                  const float *delta, const float *agg, float *out, size_t n, void *stream)
{
    (void)ctx; (void)state; (void)g; (void)p; (void)delta;
    return dcopy(out, agg, n, stream, "device feedback none: update copy");
}

/* ---- ef (ef.c) --------------------------------------------------------------------------
 * outside (lr unset): p = g + e;          e = p - delta;  out = agg
 * inside (lr = gamma): p = e + gamma g;   e = p - delta;  out = agg / gamma */

static __global__ void ef_prepare_outside_kernel(const float *e, const float *g, float *p, size_t n)
{
    FOR_EACH(j, n) p[j] = __fadd_rn(g[j], e[j]);
}

static __global__ void ef_prepare_inside_kernel(const float *e, const float *g, float *p, size_t n, float gamma)
{
    FOR_EACH(j, n) p[j] = __fadd_rn(e[j], __fmul_rn(gamma, g[j]));
}

/* inside: 0 for the outside form (out = agg), 1 for out = agg / gamma */
static __global__ void ef_update_kernel(float *e, const float *p, const float *delta, const float *agg, float *out,
                                 size_t n, int inside, float gamma)
{
    FOR_EACH(j, n)
    {
        const float pj = p[j], dj = delta[j], aj = agg[j];
        e[j] = __fsub_rn(pj, dj);
        out[j] = inside ? __fdiv_rn(aj, gamma) : aj;
    }
}

static int ef_prepare(const feedback_ctx_t *ctx, const float *state, const float *g, float *p, size_t n,
                      void *stream)
{
    terse_status_t s = need_ctx(ctx, "ef");
    if (s != TERSE_OK) return (int)s;
    const double lr = ctx->prm[0];
    if (isnan(lr))
        LAUNCH(ef_prepare_outside_kernel, n, stream, state, g, p, n);
    else
        LAUNCH(ef_prepare_inside_kernel, n, stream, state, g, p, n, (float)lr);
    return 0;
}

static terse_status_t ef_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                                const float *delta, const float *agg, float *out, size_t n, void *stream)
{
    (void)g;
    terse_status_t s = need_ctx(ctx, "ef");
    if (s != TERSE_OK) return s;
    const double lr = ctx->prm[0];
    const int inside = !isnan(lr);
    LAUNCH(ef_update_kernel, n, stream, state, p, delta, agg, out, n, inside, inside ? (float)lr : 1.0f);
    return TERSE_OK;
}

/* ---- ef21 (ef21.c), with EF21-W's scale s (0: plain EF21) ---------------------------------
 * first call: p = g (uncompressed);  gi = g or g / s;  out = gg = agg
 * later:      p = g - gi or g - s gi;  gi += delta or delta / s;  out = gg += agg */

/* ef21.c's ef21_scale, the same expression: n w rounded to float once, 0 without a weight. */
static float ef21_scale(const double *prm, int nranks)
{
    double w = prm[0];
    return w == w ? (float)((double)nranks * w) : 0.0f;
}

static __global__ void ef21_prepare_kernel(const float *gi, const float *g, float *p, size_t n, float s)
{
    if (s == 0.0f) {
        FOR_EACH(j, n) p[j] = __fsub_rn(g[j], gi[j]);
    } else {
        FOR_EACH(j, n) p[j] = __fsub_rn(g[j], __fmul_rn(s, gi[j]));
    }
}

static __global__ void ef21_first_kernel(float *gi, float *gg, const float *g, const float *agg, float *out,
                                  size_t n, float s)
{
    FOR_EACH(j, n)
    {
        const float gj = g[j], aj = agg[j];
        gi[j] = s == 0.0f ? gj : __fdiv_rn(gj, s);
        gg[j] = aj;
        out[j] = aj;
    }
}

static __global__ void ef21_later_kernel(float *gi, float *gg, const float *delta, const float *agg, float *out,
                                  size_t n, float s)
{
    FOR_EACH(j, n)
    {
        const float dj = delta[j], aj = agg[j];
        gi[j] = __fadd_rn(gi[j], s == 0.0f ? dj : __fdiv_rn(dj, s));
        const float v = __fadd_rn(gg[j], aj);
        gg[j] = v;
        out[j] = v;
    }
}

static int ef21_prepare(const feedback_ctx_t *ctx, const float *state, const float *g, float *p, size_t n,
                        void *stream)
{
    terse_status_t st = need_ctx(ctx, "ef21");
    if (st != TERSE_OK) return (int)st;
    if (ctx->calls == 0) {
        st = dcopy(p, g, n, stream, "device feedback ef21: prepare copy");
        return st != TERSE_OK ? (int)st : 1;
    }
    LAUNCH(ef21_prepare_kernel, n, stream, state, g, p, n, ef21_scale(ctx->prm, ctx->nranks));
    return 0;
}

static terse_status_t ef21_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                                  const float *delta, const float *agg, float *out, size_t n, void *stream)
{
    (void)p;
    terse_status_t st = need_ctx(ctx, "ef21");
    if (st != TERSE_OK) return st;
    float *gi = state, *gg = state + FEEDBACK_STRIDE(ctx, n);
    const float s = ef21_scale(ctx->prm, ctx->nranks);
    if (ctx->calls == 0)
        LAUNCH(ef21_first_kernel, n, stream, gi, gg, g, agg, out, n, s);
    else
        LAUNCH(ef21_later_kernel, n, stream, gi, gg, delta, agg, out, n, s);
    return TERSE_OK;
}

/* ---- ef21sgdm (ef21sgdm.c) ------------------------------------------------------------------
 * first call: p = g (uncompressed);  v = gi = g;  out = gg = agg
 * later:      v' = keep v + eta g (v' = g when eta is 1);  p = v' - gi;
 *             v = v';  gi += delta;  out = gg += agg
 * keep = (float)(1 - eta) and eta = (float)eta, as sgdm_momentum rounds them. */

/* sgdm_momentum's element: keep * v + eta * grad, or grad itself when eta == 1 (memmove). */
__device__ __forceinline__ float sgdm_momentum(float keep, float eta, float v, float grad)
{
    return eta == 1.0f ? grad : __fadd_rn(__fmul_rn(keep, v), __fmul_rn(eta, grad));
}

static __global__ void ef21sgdm_prepare_kernel(const float *v, const float *gi, const float *g, float *p, size_t n,
                                        float keep, float eta)
{
    /* the host stores v' in p, then subtracts: one float rounding each, as here */
    FOR_EACH(j, n) p[j] = __fsub_rn(sgdm_momentum(keep, eta, v[j], g[j]), gi[j]);
}

static __global__ void ef21sgdm_first_kernel(float *v, float *gi, float *gg, const float *g, const float *agg,
                                      float *out, size_t n)
{
    FOR_EACH(j, n)
    {
        const float gj = g[j], aj = agg[j];
        v[j] = gj;
        gi[j] = gj;
        gg[j] = aj;
        out[j] = aj;
    }
}

static __global__ void ef21sgdm_later_kernel(float *v, float *gi, float *gg, const float *g, const float *delta,
                                      const float *agg, float *out, size_t n, float keep, float eta)
{
    FOR_EACH(j, n)
    {
        const float gj = g[j], dj = delta[j], aj = agg[j];
        v[j] = sgdm_momentum(keep, eta, v[j], gj);
        gi[j] = __fadd_rn(gi[j], dj);
        const float t = __fadd_rn(gg[j], aj);
        gg[j] = t;
        out[j] = t;
    }
}

static int ef21sgdm_prepare(const feedback_ctx_t *ctx, const float *state, const float *g, float *p, size_t n,
                            void *stream)
{
    terse_status_t st = need_ctx(ctx, "ef21sgdm");
    if (st != TERSE_OK) return (int)st;
    if (ctx->calls == 0) {
        st = dcopy(p, g, n, stream, "device feedback ef21sgdm: prepare copy");
        return st != TERSE_OK ? (int)st : 1;
    }
    const float *v = state, *gi = state + FEEDBACK_STRIDE(ctx, n);
    const float keep = (float)(1.0 - ctx->prm[0]), eta = (float)ctx->prm[0];
    LAUNCH(ef21sgdm_prepare_kernel, n, stream, v, gi, g, p, n, keep, eta);
    return 0;
}

static terse_status_t ef21sgdm_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                                      const float *delta, const float *agg, float *out, size_t n,
                                      void *stream)
{
    (void)p;
    terse_status_t st = need_ctx(ctx, "ef21sgdm");
    if (st != TERSE_OK) return st;
    const size_t stride = FEEDBACK_STRIDE(ctx, n);
    float *v = state, *gi = state + stride, *gg = state + 2 * stride;
    if (ctx->calls == 0) {
        LAUNCH(ef21sgdm_first_kernel, n, stream, v, gi, gg, g, agg, out, n);
    } else {
        const float keep = (float)(1.0 - ctx->prm[0]), eta = (float)ctx->prm[0];
        LAUNCH(ef21sgdm_later_kernel, n, stream, v, gi, gg, g, delta, agg, out, n, keep, eta);
    }
    return TERSE_OK;
}

/* ---- econtrol (econtrol.c) -----------------------------------------------------------------
 * first call: p = g (uncompressed);  e = 0;  hi = g;  out = h = agg
 * later:      p = g - hi (eta 0) or eta e + (g - hi);
 *             e += (g - hi) - delta;  hi += delta;  out = h += agg */

static __global__ void econtrol_prepare_kernel(const float *e, const float *hi, const float *g, float *p, size_t n,
                                        float eta)
{
    if (eta == 0.0f) {
        FOR_EACH(j, n) p[j] = __fsub_rn(g[j], hi[j]);
    } else {
        FOR_EACH(j, n) p[j] = __fadd_rn(__fmul_rn(eta, e[j]), __fsub_rn(g[j], hi[j]));
    }
}

static __global__ void econtrol_first_kernel(float *e, float *hi, float *h, const float *g, const float *agg,
                                      float *out, size_t n)
{
    FOR_EACH(j, n)
    {
        const float gj = g[j], aj = agg[j];
        e[j] = 0.0f;
        hi[j] = gj;
        h[j] = aj;
        out[j] = aj;
    }
}

static __global__ void econtrol_later_kernel(float *e, float *hi, float *h, const float *g, const float *delta,
                                      const float *agg, float *out, size_t n)
{
    FOR_EACH(j, n)
    {
        const float gj = g[j], dj = delta[j], aj = agg[j], hij = hi[j];
        e[j] = __fadd_rn(e[j], __fsub_rn(__fsub_rn(gj, hij), dj));
        hi[j] = __fadd_rn(hij, dj);
        const float t = __fadd_rn(h[j], aj);
        h[j] = t;
        out[j] = t;
    }
}

static int econtrol_prepare(const feedback_ctx_t *ctx, const float *state, const float *g, float *p, size_t n,
                            void *stream)
{
    terse_status_t st = need_ctx(ctx, "econtrol");
    if (st != TERSE_OK) return (int)st;
    if (ctx->calls == 0) {
        st = dcopy(p, g, n, stream, "device feedback econtrol: prepare copy");
        return st != TERSE_OK ? (int)st : 1;
    }
    const float *e = state, *hi = state + FEEDBACK_STRIDE(ctx, n);
    LAUNCH(econtrol_prepare_kernel, n, stream, e, hi, g, p, n, (float)ctx->prm[0]);
    return 0;
}

static terse_status_t econtrol_update(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                                      const float *delta, const float *agg, float *out, size_t n,
                                      void *stream)
{
    (void)p;
    terse_status_t st = need_ctx(ctx, "econtrol");
    if (st != TERSE_OK) return st;
    const size_t stride = FEEDBACK_STRIDE(ctx, n);
    float *e = state, *hi = state + stride, *h = state + 2 * stride;
    if (ctx->calls == 0)
        LAUNCH(econtrol_first_kernel, n, stream, e, hi, h, g, agg, out, n);
    else
        LAUNCH(econtrol_later_kernel, n, stream, e, hi, h, g, delta, agg, out, n);
    return TERSE_OK;
}

/* ---- The tables ------------------------------------------------------------------------- */

extern "C" const dfeedback_ops_t dfeedback_none_ops = {
    sizeof(dfeedback_ops_t), &feedback_none_ops, none_prepare, none_update,
};
extern "C" const dfeedback_ops_t dfeedback_ef_ops = {
    sizeof(dfeedback_ops_t), &feedback_ef_ops, ef_prepare, ef_update,
};
extern "C" const dfeedback_ops_t dfeedback_ef21_ops = {
    sizeof(dfeedback_ops_t), &feedback_ef21_ops, ef21_prepare, ef21_update,
};
extern "C" const dfeedback_ops_t dfeedback_ef21sgdm_ops = {
    sizeof(dfeedback_ops_t), &feedback_ef21sgdm_ops, ef21sgdm_prepare, ef21sgdm_update,
};
extern "C" const dfeedback_ops_t dfeedback_econtrol_ops = {
    sizeof(dfeedback_ops_t), &feedback_econtrol_ops, econtrol_prepare, econtrol_update,
};

extern "C" const dfeedback_ops_t *dfeedback_find(const char *name)
{
    static const dfeedback_ops_t *const all[] = {
        &dfeedback_none_ops, &dfeedback_ef_ops, &dfeedback_ef21_ops, &dfeedback_ef21sgdm_ops,
        &dfeedback_econtrol_ops,
    };
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->host->name, name) == 0) return all[i];
    return NULL;
}
