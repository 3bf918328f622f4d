/* The elementwise codecs: none (fp32 as is), fp16 and bf16 casts. They travel with the
 * dense protocol (chunked reduce-scatter + allgather), summed in fp32 at each chunk's owner. */
#include <string.h>

#include "codec.h"
#include "half.h"

static size_t f32_max_bytes(const double *p, size_t count) { (void)p; return count * 4; }
static size_t f16_max_bytes(const double *p, size_t count) { (void)p; return count * 2; }
static size_t no_scratch(const double *p, size_t count) { (void)p; (void)count; return 0; }

static size_t f32_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                         size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    memcpy(msg, in, count * 4);
    return count * 4;
}

static terse_status_t f32_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                     size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 4) return TERSE_ERR_MISMATCH;
    const float *v = msg;
    for (size_t i = 0; i < count; i++) out[i] += v[i];
    return TERSE_OK;
}

static size_t fp16_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    uint16_t *h = msg;
    for (size_t i = 0; i < count; i++) h[i] = half_from_f32(in[i]);
    return count * 2;
}

static terse_status_t fp16_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 2) return TERSE_ERR_MISMATCH;
    const uint16_t *h = msg;
    for (size_t i = 0; i < count; i++) out[i] += half_to_f32(h[i]);
    return TERSE_OK;
}

static size_t bf16_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)p; (void)ctx; (void)scratch;
    uint16_t *h = msg;
    for (size_t i = 0; i < count; i++) h[i] = bf16_from_f32(in[i]);
    return count * 2;
}

static terse_status_t bf16_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != count * 2) return TERSE_ERR_MISMATCH;
    const uint16_t *h = msg;
    for (size_t i = 0; i < count; i++) out[i] += bf16_to_f32(h[i]);
    return TERSE_OK;
}

const codec_ops_t codec_none_ops = {
    sizeof(codec_ops_t), "none", CODEC_PROTO_DENSE,
    NULL, f32_max_bytes, no_scratch, f32_encode, f32_decode_add, NULL, 0,
};

const codec_ops_t codec_fp16_ops = {
    sizeof(codec_ops_t), "fp16", CODEC_PROTO_DENSE,
    NULL, f16_max_bytes, no_scratch, fp16_encode, fp16_decode_add, NULL, 0,
};

const codec_ops_t codec_bf16_ops = {
    sizeof(codec_ops_t), "bf16", CODEC_PROTO_DENSE,
    NULL, f16_max_bytes, no_scratch, bf16_encode, bf16_decode_add, NULL, 0,
};
