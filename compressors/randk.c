/* RandK (ALGORITHMS.md §2.2): keep k uniformly random coordinates. All ranks draw the same
 * k-subset from a stream keyed by (seed, layer, call), so a message needs no indices.
 *
 *   contractive (unbiased=0, default): keep v_j unscaled, alpha = k/d (use with feedback)
 *   unbiased    (unbiased=1):          keep v_j * d/k, E[C(v)] = v, omega = d/k - 1
 *
 * Wire format: uint64 key | uint32 k | float val[k], values in increasing index order. The
 * key regenerates the indices on decode, so a message is self-describing; a peer's key can
 * only choose other in-range indices, never out-of-range ones. */
#include <math.h>
#include <string.h>

#include "randk.h"
#include "rng.h"

const param_def_t randk_params[RANDK_N_PARAMS] = {
    {"density", 0.01, 0.0, 1.0, 1, 0, NULL},
    {"seed", 0.0, 0.0, 4294967295.0, 0, 1, NULL},
    {"unbiased", 0.0, 0.0, 1.0, 0, 1, NULL},
};

size_t randk_k(const double *p, size_t count)
{
    if (count == 0) return 0;
    size_t k = (size_t)(p[RANDK_DENSITY] * (double)count);
    if (k < 1) k = 1;
    return k < count ? k : count;
}

void randk_choose(uint64_t key, size_t count, size_t k, uint64_t *bitmap)
{
    memset(bitmap, 0, (count + 63) / 64 * sizeof *bitmap);
    /* Floyd: for j = d-k .. d-1 pick t in [0, j]; take t, or j if t is taken already. Every
     * k-subset comes out with the same probability. */
    for (size_t j = count - k; j < count; j++) {
        size_t t = (size_t)rng_below(key, j, (uint64_t)j + 1);
        if (bitmap[t / 64] >> (t % 64) & 1u) t = j;
        bitmap[t / 64] |= 1ull << (t % 64);
    }
}

void randk_scatter_add(const uint64_t *bitmap, size_t count, const float *restrict val,
                       float *restrict out)
{
    size_t m = 0;
    for (size_t w = 0; w < (count + 63) / 64; w++)
        for (uint64_t bits = bitmap[w]; bits; bits &= bits - 1)
            out[w * 64 + (size_t)__builtin_ctzll(bits)] += val[m++];
}

static size_t randk_max_bytes(const double *p, size_t count)
{
    return RANDK_HEADER + 4 * randk_k(p, count);
}

static size_t randk_scratch_bytes(const double *p, size_t count)
{
    (void)p;
    return (count + 63) / 64 * sizeof(uint64_t);
}

static uint64_t randk_key(const double *p, const codec_ctx_t *ctx)
{
    return rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[RANDK_SEED] * 0x9e3779b97f4a7c15ull));
}

static size_t randk_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                           size_t count, void *restrict msg, void *restrict scratch)
{
    size_t k = randk_k(p, count);
    uint64_t key = randk_key(p, ctx);
    uint32_t k32 = (uint32_t)k;
    unsigned char *b = msg;
    memcpy(b, &key, 8);
    memcpy(b + 8, &k32, 4);
    if (k == 0) return RANDK_HEADER;
    uint64_t *bitmap = scratch;
    randk_choose(key, count, k, bitmap);
    const float scale = p[RANDK_UNBIASED] != 0 ? (float)((double)count / (double)k) : 1.0f;
    float *val = (float *)(b + RANDK_HEADER);
    size_t m = 0;
    for (size_t w = 0; w < (count + 63) / 64; w++)
        for (uint64_t bits = bitmap[w]; bits; bits &= bits - 1)
            val[m++] = in[w * 64 + (size_t)__builtin_ctzll(bits)] * scale;
    return RANDK_HEADER + 4 * m;
}

static terse_status_t randk_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                       size_t count, float *restrict out, void *restrict scratch)
{
    size_t k = randk_k(p, count);
    if (bytes != RANDK_HEADER + 4 * k) return TERSE_ERR_MISMATCH;
    const unsigned char *b = msg;
    uint64_t key;
    uint32_t k32;
    memcpy(&key, b, 8);
    memcpy(&k32, b + 8, 4);
    if (k32 != k) return TERSE_ERR_MISMATCH;
    if (k == 0) return TERSE_OK;
    randk_choose(key, count, k, scratch);
    randk_scatter_add(scratch, count, (const float *)(b + RANDK_HEADER), out);
    return TERSE_OK;
}

const codec_ops_t codec_randk_ops = {
    sizeof(codec_ops_t), "randk", CODEC_PROTO_RANDK,
    NULL, randk_max_bytes, randk_scratch_bytes, randk_encode, randk_decode_add, NULL, 0,
};
