/* DGC on the device (dcodec.h): the standalone dgc codec of compressors/dgc.c, whose encode is
 * dgc_select at the base density, bit for bit.
 *
 * dgc_select's steps, and where each runs here:
 *
 *   plan, sample start         host: dgc_plan and rng_below(key, 0, stride), as the CPU
 *   sampled threshold          device: the exact top-(top_k_samples) of v[start::stride]
 *                              (topk.cuh, reading the strided view in place); the CPU's
 *                              threshold, min |x| over those entries with NaNs skipped, is the
 *                              float whose bits are the k-th largest key T, or +Inf when T is
 *                              a NaN's key (then every selected entry is a NaN)
 *   count |{|v| >= thr}|       device, read back: the loop decides on the host
 *   adaptation (<= 10 times)   host: the CPU's loop, float thr *= 0.8f, the same comparisons
 *   hierarchical cut           device: the exact top-k among the candidates
 *   truncation                 device: the first min(m, k) candidates in index order
 *
 * The candidates {j : fabsf(v_j) >= thr} are the entries whose magnitude key lies in
 * [bits(thr), bits(+Inf)]: for thr >= 0 and not a NaN (it never is) the float comparison and
 * the key comparison agree, NaN entries fail both, and -0 counts as +0. So no candidate is
 * copied: the kernels of topk.cuh select and write among the keys in that range.
 *
 * The exact branch (every entry a sample) is the topk codec's message, as on the CPU. dgc's
 * warm-up, momentum and masking live in its protocol (collectives/dgc_allgather.c): the codec
 * sees only p, and encodes at p's base density, whatever p's warm-up.
 *
 * bitwise = 1: the message is the CPU's byte for byte; decode_add is the topk codec's (one
 * float addition per entry; a NaN sum is the device's canonical NaN).
 *
 * Synchronisation: the sampled branch synchronises to read the sample's threshold and each
 * count of the adaptation loop (the message length depends on the data); the exact branch only
 * enqueues. decode_add synchronises (see dsparse_decode_add). */
#include <math.h>
#include <string.h>

#include "topk.cuh"

extern "C" {
#include "dgc.h"
#include "half.h" /* half_bits_f32, half_f32_bits: a float's bits and back */
#include "rng.h"
}

/* dgc.c's adaptation constants (private there): at most 10 lowerings of the threshold by
 * 0.8f while fewer than 0.8 k entries pass it; a hierarchical cut above 1.3 k. */
#define DGC_MAX_ITERS 10
#define DGC_UPPER 1.3
#define DGC_LOWER 0.8
#define DGC_LOWER_F 0.8f

static size_t dgc_dscratch_bytes(const double *p, size_t count)
{
    (void)p;
    return dtopk_scratch_bytes(count);
}

/* dgc_select(plan, key, v) into d_msg; *bytes_p its length. */
static terse_status_t dgc_dselect(const dgc_plan_t *plan, uint64_t key, const float *d_v,
                                  void *d_msg, size_t *bytes_p, void *d_scratch, cudaStream_t s)
{
    const size_t n = plan->numel, k = plan->num_selects;
    if (k == 0) {
        TERSE_CHECK(dtopk_message_first(d_v, n, 0, 0, DTOPK_KEY_ALL, d_msg, d_scratch, s));
        *bytes_p = 4;
        return TERSE_OK;
    }
    if (plan->num_samples == n) {
        /* every entry is a sample: the exact top-k (k <= n) */
        TERSE_CHECK(dtopk_message(d_v, n, k, d_msg, d_scratch, s));
        *bytes_p = 4 + 8 * k;
        return TERSE_OK;
    }
    /* the samples v[start::stride], ns of them; top_k_samples <= num_samples <= ns */
    const size_t stride = plan->stride, start = (size_t)rng_below(key, 0, stride);
    const size_t ns = (n - start + stride - 1) / stride;
    const size_t tks = plan->top_k_samples;
    uint32_t thr_bits = DTOPK_KEY_INF; /* no sample selected: thr stays +Inf */
    if (tks > 0) {
        uint32_t t;
        TERSE_CHECK(dtopk_threshold(d_v + start, stride, ns, tks, 0, DTOPK_KEY_ALL, d_scratch, s));
        TERSE_CHECK(dtopk_threshold_get(d_scratch, s, &t));
        if (t <= DTOPK_KEY_INF) thr_bits = t;
    }
    float thr = half_bits_f32(thr_bits);
    size_t m;
    TERSE_CHECK(dtopk_count(d_v, n, thr_bits, DTOPK_KEY_INF, d_scratch, s, &m));
    /* dgc.c's loop, on the host */
    int iterations = 0, hierarchical = 0;
    while (iterations < DGC_MAX_ITERS) {
        if (m > k) {
            hierarchical = (double)m > (double)k * DGC_UPPER;
            break;
        }
        if ((double)m >= DGC_LOWER * (double)k) break;
        thr *= DGC_LOWER_F;
        thr_bits = half_f32_bits(thr);
        TERSE_CHECK(dtopk_count(d_v, n, thr_bits, DTOPK_KEY_INF, d_scratch, s, &m));
        iterations++;
    }
    size_t kept;
    if (hierarchical) {
        /* the exact top-k of the m > 1.3 k candidates */
        kept = k;
        TERSE_CHECK(dtopk_threshold(d_v, 1, n, k, thr_bits, DTOPK_KEY_INF, d_scratch, s));
        TERSE_CHECK(dtopk_message_top(d_v, n, k, DTOPK_KEY_INF, d_msg, d_scratch, s));
    } else {
        /* the lowest indices that pass the threshold */
        kept = m < k ? m : k;
        TERSE_CHECK(dtopk_message_first(d_v, n, kept, thr_bits, DTOPK_KEY_INF, d_msg, d_scratch, s));
    }
    *bytes_p = 4 + 8 * kept;
    return TERSE_OK;
}

static terse_status_t dgc_dencode(const double *p, const codec_ctx_t *ctx, const float *d_in,
                                  size_t count, void *d_msg, size_t *bytes, void *d_scratch,
                                  void *stream)
{
    if (count > UINT32_MAX)
        return terse_error(TERSE_ERR_ARG, "compressor dgc on the device: %zu elements, at most %u "
                                          "(indices are uint32 on the wire)", count, UINT32_MAX);
    const dgc_plan_t plan = dgc_plan(count, p[DGC_DENSITY], p[DGC_SAMPLE]);
    size_t b = 0;
    TERSE_CHECK(dgc_dselect(&plan, ctx ? ctx->key : 0, d_in, d_msg, &b, d_scratch,
                            cuda_stream(stream)));
    *bytes = b;
    return TERSE_OK;
}

static terse_status_t dgc_ddecode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                      float *d_out, void *d_scratch, void *stream)
{
    if (bytes > codec_dgc_ops.max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    return dsparse_decode_add(d_msg, bytes, count, d_out, d_scratch, cuda_stream(stream));
}

extern "C" const dcodec_ops_t dcodec_dgc_ops = {
    sizeof(dcodec_ops_t), &codec_dgc_ops, 1, dgc_dscratch_bytes, dgc_dencode, dgc_ddecode_add,
};
