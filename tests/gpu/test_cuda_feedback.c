/* The device error-feedback methods (compressors/cuda/feedback.cu) against the host ones
 * (src/feedback/): every method, with several parameter settings, runs four calls in a row
 * on the host and on the device from the same initial state and the same gradients, deltas
 * and aggregates, each side carrying its own state, and after every prepare and update the
 * message input p, the send-uncompressed flag, the whole state and the estimate must be the
 * host's bit for bit (a NaN matches any NaN: the GPU does not keep NaN payloads). Each
 * sequence runs three ways on the device: the whole layer at once (ctx->stride 0), the layer
 * in three ranges with ctx->stride = the layer's count (the engine's worker threads), and the
 * whole layer with the estimate written over the gradient (out == g). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfeedback.h"
#include "check.h"

/* Random values with the awkward ones mixed in: repeated values, +0 and -0, an input NaN
 * with a payload, infinities, a subnormal and large magnitudes. */
static void fill(float *x, size_t n, int specials)
{
    for (size_t j = 0; j < n; j++) {
        uint64_t u = next_u64();
        float v = next_f() * (float)(1 << (u % 8));
        if (specials) switch ((u >> 8) % 64) {
            case 0: v = 0.0f; break;
            case 1: v = -0.0f; break;
            case 2: v = 0.5f; break;
            case 3: v = -0.5f; break;
            case 4: v = j % 97 == 0 ? from_bits(0x7fc00123u) : v; break;
            case 5: v = j % 89 == 0 ? INFINITY : v; break;
            case 6: v = j % 83 == 0 ? -INFINITY : v; break;
            case 7: v = 1e-40f; break;
            case 8: v = 3e37f; break;
            default: break;
            }
        x[j] = v;
    }
}

/* Bitwise equal, or both NaN. Returns the first differing index, or n. */
static size_t first_diff(const float *a, const float *b, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (to_bits(a[j]) != to_bits(b[j]) && !(isnan(a[j]) && isnan(b[j]))) return j;
    return n;
}

static void compare(const char *what, const char *label, int call, const float *host, const float *d_dev,
                    size_t n, float *tmp)
{
    checks++;
    if (n == 0) return;
    GPU_OK(cudaMemcpy(tmp, d_dev, n * sizeof *tmp, cudaMemcpyDeviceToHost));
    size_t j = first_diff(host, tmp, n);
    if (j < n)
        FAIL("%s, call %d: %s[%zu] = %a on the device, %a on the host (0x%08x vs 0x%08x)", label, call, what, j,
             (double)tmp[j], (double)host[j], (unsigned)to_bits(tmp[j]), (unsigned)to_bits(host[j]));
}

static float *dalloc(size_t n)
{
    void *p = NULL;
    GPU_OK(cudaMalloc(&p, (n ? n : 1) * sizeof(float)));
    return p;
}

static void upload(float *d, const float *h, size_t n)
{
    if (n) GPU_OK(cudaMemcpy(d, h, n * sizeof *h, cudaMemcpyHostToDevice));
}

/* The delta a codec would return for p: a third of the elements dropped, the rest rounded to
 * 12 bits of mantissa (a pure function of p's bits, so both sides get the same). */
static void fake_codec(const float *p, float *delta, size_t n)
{
    for (size_t j = 0; j < n; j++)
        delta[j] = j % 3 == 1 ? 0.0f : from_bits(to_bits(p[j]) & 0xfffff000u);
}

enum { WHOLE, RANGES, ALIAS };
static const char *const mode_names[] = {"whole", "ranges", "out=g"};

/* One method and parameter setting, n elements, one way of calling the device: four calls.
 * The host always runs the whole layer at once, with its own buffers. */
static void run_sequence(const dfeedback_ops_t *dm, const double *prm, int nranks, size_t n, int mode,
                         cudaStream_t stream)
{
    const feedback_ops_t *hm = dm->host;
    const size_t spe = hm->state_per_elem, ns = spe * n;
    char label[160];
    snprintf(label, sizeof label, "%s(%g) nranks %d n %zu %s", hm->name, prm[0], nranks, n, mode_names[mode]);

    float *hs = malloc((ns ? ns : 1) * sizeof *hs), *hg = malloc((n ? n : 1) * sizeof *hg);
    float *hp = malloc((n ? n : 1) * sizeof *hp), *hdelta = malloc((n ? n : 1) * sizeof *hdelta);
    float *hagg = malloc((n ? n : 1) * sizeof *hagg), *hout = malloc((n ? n : 1) * sizeof *hout);
    float *tmp = malloc((ns > n ? ns : n ? n : 1) * sizeof *tmp);
    if (!hs || !hg || !hp || !hdelta || !hagg || !hout || !tmp) {
        printf("FAIL: out of host memory\n");
        exit(1);
    }
    float *ds = dalloc(ns), *dg = dalloc(n), *dp = dalloc(n), *ddelta = dalloc(n), *dagg = dalloc(n);
    float *dout = mode == ALIAS ? dg : dalloc(n);

    /* a state that is not all zeros, so that every array the methods read matters */
    fill(hs, ns, 0);
    upload(ds, hs, ns);

    /* the ranges of the RANGES mode: [0, a), [a, b), [b, n), some of them empty */
    const size_t a = n / 3, b = n - n / 5;
    const size_t lo[3] = {0, a, b}, hi[3] = {a, b, n};

    for (int call = 0; call < 4; call++) {
        feedback_ctx_t ctx = {prm, (uint64_t)call, 1, nranks, 0};
        fill(hg, n, 1);
        upload(dg, hg, n);

        int hflag = hm->prepare(&ctx, hs, hg, hp, n);
        int dflag = -100;
        if (mode == RANGES) {
            feedback_ctx_t rctx = ctx;
            rctx.stride = n;
            for (int r = 0; r < 3; r++) {
                int f = dm->prepare(&rctx, ds + lo[r], dg + lo[r], dp + lo[r], hi[r] - lo[r], stream);
                if (r == 0 || f < 0) dflag = f;
                else if (f != dflag) FAIL("%s, call %d: range %d's flag %d differs from range 0's %d", label, call,
                                          r, f, dflag);
            }
        } else {
            dflag = dm->prepare(&ctx, ds, dg, dp, n, stream);
        }
        checks++;
        if (dflag < 0) {
            FAIL("%s, call %d: device prepare failed with %d", label, call, dflag);
            break;
        }
        if (dflag != hflag) FAIL("%s, call %d: device prepare returns %d, host %d", label, call, dflag, hflag);
        GPU_OK(cudaStreamSynchronize(stream));
        compare("p", label, call, hp, dp, n, tmp);
        compare("state after prepare", label, call, hs, ds, ns, tmp);

        fake_codec(hp, hdelta, n);
        for (size_t j = 0; j < n; j++) hagg[j] = hdelta[j] * 0.75f + next_f() * 0.25f;
        upload(ddelta, hdelta, n);
        upload(dagg, hagg, n);

        /* host: out aliases g in the ALIAS mode, as on the device */
        float *hdst = mode == ALIAS ? hg : hout;
        hm->update(&ctx, hs, hg, hp, hdelta, hagg, hdst, n);
        terse_status_t st = TERSE_OK;
        if (mode == RANGES) {
            feedback_ctx_t rctx = ctx;
            rctx.stride = n;
            for (int r = 0; r < 3 && st == TERSE_OK; r++)
                st = dm->update(&rctx, ds + lo[r], dg + lo[r], dp + lo[r], ddelta + lo[r], dagg + lo[r],
                                dout + lo[r], hi[r] - lo[r], stream);
        } else {
            st = dm->update(&ctx, ds, dg, dp, ddelta, dagg, dout, n, stream);
        }
        checks++;
        if (st != TERSE_OK) {
            FAIL("%s, call %d: device update failed with %d", label, call, (int)st);
            break;
        }
        GPU_OK(cudaStreamSynchronize(stream));
        compare("state", label, call, hs, ds, ns, tmp);
        compare("out", label, call, hdst, dout, n, tmp);
    }

    GPU_OK(cudaFree(ds));
    GPU_OK(cudaFree(dg));
    GPU_OK(cudaFree(dp));
    GPU_OK(cudaFree(ddelta));
    GPU_OK(cudaFree(dagg));
    if (mode != ALIAS) GPU_OK(cudaFree(dout));
    free(hs); free(hg); free(hp); free(hdelta); free(hagg); free(hout); free(tmp);
}

/* The flag depends on ctx alone, as the engine assumes when it decides the path before any
 * data is read: here with n = 0 (NULL device arrays), for calls 0 to 2. */
static void check_flags_need_no_data(const dfeedback_ops_t *dm, const double *prm, cudaStream_t stream)
{
    float none[3] = {0};
    for (uint64_t calls = 0; calls < 3; calls++) {
        feedback_ctx_t ctx = {prm, calls, 0, 2, 0};
        int h = dm->host->prepare(&ctx, none, none, none + 1, 0);
        int d = dm->prepare(&ctx, NULL, NULL, NULL, 0, stream);
        checks++;
        if (h != d) FAIL("%s: flag for calls=%llu with no data: device %d, host %d", dm->host->name,
                         (unsigned long long)calls, d, h);
    }
}

int main(void)
{
    gpu_test_require("cuda_feedback", 0);
    rng_state = 20240611;
    cudaStream_t stream;
    GPU_OK(cudaStreamCreate(&stream));

    struct {
        const dfeedback_ops_t *ops;
        double prm;
        int nranks;
    } const cases[] = {
        {&dfeedback_none_ops, NAN, 4},
        {&dfeedback_ef_ops, NAN, 4},          /* learning rate outside */
        {&dfeedback_ef_ops, 0.1, 4},          /* inside, gamma not a power of two */
        {&dfeedback_ef_ops, 4.0, 4},
        {&dfeedback_ef21_ops, NAN, 4},        /* plain EF21 */
        {&dfeedback_ef21_ops, 0.3, 4},        /* EF21-W, s = 1.2 */
        {&dfeedback_ef21_ops, 0.25, 4},       /* EF21-W, s = 1 exactly */
        {&dfeedback_ef21_ops, 0.1, 3},        /* EF21-W, s = fl(0.3) */
        {&dfeedback_ef21sgdm_ops, 0.1, 4},
        {&dfeedback_ef21sgdm_ops, 1.0, 4},    /* eta 1: EF21 */
        {&dfeedback_ef21sgdm_ops, 0.37, 4},
        {&dfeedback_econtrol_ops, 0.1, 4},
        {&dfeedback_econtrol_ops, 0.0, 4},    /* eta 0: EF21's p */
        {&dfeedback_econtrol_ops, 1.0, 4},
    };
    const size_t sizes[] = {0, 1, 7, 1000, 4097, (1u << 20) + 3};

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const double prm[TERSE_MAX_PARAMS] = {cases[c].prm};
        check_flags_need_no_data(cases[c].ops, prm, stream);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (int mode = WHOLE; mode <= ALIAS; mode++)
                run_sequence(cases[c].ops, prm, cases[c].nranks, sizes[s], mode, stream);
    }

    /* the lookup finds every table by its host name, and nothing else */
    const dfeedback_ops_t *const all[] = {&dfeedback_none_ops, &dfeedback_ef_ops, &dfeedback_ef21_ops,
                                          &dfeedback_ef21sgdm_ops, &dfeedback_econtrol_ops};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        checks++;
        if (all[i]->size != sizeof(dfeedback_ops_t)) FAIL("%s: size field %zu", all[i]->host->name, all[i]->size);
        if (dfeedback_find(all[i]->host->name) != all[i]) FAIL("dfeedback_find(\"%s\")", all[i]->host->name);
    }
    checks++;
    if (dfeedback_find("topk") || dfeedback_find(NULL)) FAIL("dfeedback_find finds a method that is not one");

    GPU_OK(cudaStreamDestroy(stream));
    return check_report("cuda_feedback");
}
