/* The elementwise device codecs none (fp32 as is), fp16 and bf16: the CUDA counterparts of
 * compressors/cast.c, with the same wire messages (count float32, or count 16-bit halves, in
 * host order) and the same decoded sums.
 *
 * Bitwise: every element is converted by half.h's functions, the very code the CPU runs
 * (TERSE_HD), and decode_add does one float add per element, as the CPU does. A NaN in a
 * decoded sum stays a NaN, but its payload may differ: the GPU's float add returns its own
 * canonical NaN where x86 passes an operand's payload on. The messages themselves carry
 * NaNs bit for bit (a copy, and integer conversions).
 *
 * No call synchronises: encode and decode_add only enqueue, since the message length is
 * count * 4 or count * 2 and there is nothing in a message to validate beyond it.
 *
 * A message may sit at any byte offset inside a larger device buffer (the caller packs
 * several), while a 16- or 32-bit load or store must be aligned on the GPU: each kernel
 * comes in an aligned copy and a byte-wise copy that assembles the little-endian value (the
 * byte order of every host CUDA runs on), chosen by the message's address. */
#include "common.cuh"

extern "C" {
#include "half.h"

/* compressors/cast.c's tables, which no header declares (registry.c lists them the same way) */
extern const codec_ops_t codec_none_ops, codec_fp16_ops, codec_bf16_ops;
}

enum { CAST_F16, CAST_BF16 };

static size_t cast_no_scratch(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0;
}

/* ---- Message access at any alignment --------------------------------------------------- */

template <bool ALIGNED>
static __device__ inline uint16_t cast_load_u16(const unsigned char *msg, size_t i)
{
    if (ALIGNED) return reinterpret_cast<const uint16_t *>(msg)[i];
    return (uint16_t)(msg[2 * i] | (unsigned)msg[2 * i + 1] << 8);
}

template <bool ALIGNED>
static __device__ inline void cast_store_u16(unsigned char *msg, size_t i, uint16_t h)
{
    if (ALIGNED) {
        reinterpret_cast<uint16_t *>(msg)[i] = h;
    } else {
        msg[2 * i] = (unsigned char)(h & 0xffu);
        msg[2 * i + 1] = (unsigned char)(h >> 8);
    }
}

template <bool ALIGNED>
static __device__ inline float cast_load_f32(const unsigned char *msg, size_t i)
{
    if (ALIGNED) return reinterpret_cast<const float *>(msg)[i];
    const unsigned char *b = msg + 4 * i;
    const uint32_t u = b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return __uint_as_float(u);
}

/* ---- Kernels: grid-stride loops over the elements -------------------------------------- */

template <int KIND, bool ALIGNED>
static __global__ void cast_encode_kernel(const float *in, size_t n, unsigned char *msg)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = in[i];
        cast_store_u16<ALIGNED>(msg, i, KIND == CAST_F16 ? half_from_f32(v) : bf16_from_f32(v));
    }
}

template <int KIND, bool ALIGNED>
static __global__ void cast_decode_add_kernel(const unsigned char *msg, size_t n, float *out)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const uint16_t h = cast_load_u16<ALIGNED>(msg, i);
        /* one rounded add, never contracted: out + v as cast.c computes it */
        out[i] = __fadd_rn(out[i], KIND == CAST_F16 ? half_to_f32(h) : bf16_to_f32(h));
    }
}

template <bool ALIGNED>
static __global__ void f32_decode_add_kernel(const unsigned char *msg, size_t n, float *out)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __fadd_rn(out[i], cast_load_f32<ALIGNED>(msg, i));
}

/* ---- none ------------------------------------------------------------------------------ */

static terse_status_t f32_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                 void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    (void)p; (void)ctx; (void)d_scratch;
    if (count && (!d_in || !d_msg)) return terse_error(TERSE_ERR_ARG, "none encode: NULL device buffer");
    if (count)
        CUDA_CHECK(cudaMemcpyAsync(d_msg, d_in, count * 4, cudaMemcpyDeviceToDevice, cuda_stream(stream)),
                   "none encode: cudaMemcpyAsync");
    *bytes = count * 4;
    return TERSE_OK;
}

static terse_status_t f32_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                     float *d_out, void *d_scratch, void *stream)
{
    (void)p; (void)d_scratch;
    if (bytes != count * 4) return TERSE_ERR_MISMATCH;
    if (!count) return TERSE_OK;
    if (!d_msg || !d_out) return terse_error(TERSE_ERR_ARG, "none decode_add: NULL device buffer");
    const unsigned char *m = static_cast<const unsigned char *>(d_msg);
    if ((uintptr_t)m % 4 == 0)
        f32_decode_add_kernel<true><<<cuda_blocks(count), CUDA_THREADS, 0, cuda_stream(stream)>>>(m, count, d_out);
    else
        f32_decode_add_kernel<false><<<cuda_blocks(count), CUDA_THREADS, 0, cuda_stream(stream)>>>(m, count, d_out);
    CUDA_CHECK_LAUNCH("none decode_add: kernel launch");
    return TERSE_OK;
}

/* ---- fp16 and bf16 --------------------------------------------------------------------- */

template <int KIND>
static terse_status_t half_encode(const char *name, const float *d_in, size_t count, void *d_msg, size_t *bytes,
                                  void *stream)
{
    if (count && (!d_in || !d_msg)) return terse_error(TERSE_ERR_ARG, "%s encode: NULL device buffer", name);
    if (count) {
        unsigned char *m = static_cast<unsigned char *>(d_msg);
        const cudaStream_t s = cuda_stream(stream);
        if ((uintptr_t)m % 2 == 0)
            cast_encode_kernel<KIND, true><<<cuda_blocks(count), CUDA_THREADS, 0, s>>>(d_in, count, m);
        else
            cast_encode_kernel<KIND, false><<<cuda_blocks(count), CUDA_THREADS, 0, s>>>(d_in, count, m);
        CUDA_CHECK_LAUNCH(KIND == CAST_F16 ? "fp16 encode: kernel launch" : "bf16 encode: kernel launch");
    }
    *bytes = count * 2;
    return TERSE_OK;
}

template <int KIND>
static terse_status_t half_decode_add(const char *name, const void *d_msg, size_t bytes, size_t count, float *d_out,
                                      void *stream)
{
    if (bytes != count * 2) return TERSE_ERR_MISMATCH;
    if (!count) return TERSE_OK;
    if (!d_msg || !d_out) return terse_error(TERSE_ERR_ARG, "%s decode_add: NULL device buffer", name);
    const unsigned char *m = static_cast<const unsigned char *>(d_msg);
    const cudaStream_t s = cuda_stream(stream);
    if ((uintptr_t)m % 2 == 0)
        cast_decode_add_kernel<KIND, true><<<cuda_blocks(count), CUDA_THREADS, 0, s>>>(m, count, d_out);
    else
        cast_decode_add_kernel<KIND, false><<<cuda_blocks(count), CUDA_THREADS, 0, s>>>(m, count, d_out);
    CUDA_CHECK_LAUNCH(KIND == CAST_F16 ? "fp16 decode_add: kernel launch" : "bf16 decode_add: kernel launch");
    return TERSE_OK;
}

static terse_status_t fp16_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                  void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    (void)p; (void)ctx; (void)d_scratch;
    return half_encode<CAST_F16>("fp16", d_in, count, d_msg, bytes, stream);
}

static terse_status_t fp16_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                      float *d_out, void *d_scratch, void *stream)
{
    (void)p; (void)d_scratch;
    return half_decode_add<CAST_F16>("fp16", d_msg, bytes, count, d_out, stream);
}

static terse_status_t bf16_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                  void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    (void)p; (void)ctx; (void)d_scratch;
    return half_encode<CAST_BF16>("bf16", d_in, count, d_msg, bytes, stream);
}

static terse_status_t bf16_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                      float *d_out, void *d_scratch, void *stream)
{
    (void)p; (void)d_scratch;
    return half_decode_add<CAST_BF16>("bf16", d_msg, bytes, count, d_out, stream);
}

extern "C" const dcodec_ops_t dcodec_none_ops = {
    sizeof(dcodec_ops_t), &codec_none_ops, 1, cast_no_scratch, f32_encode, f32_decode_add,
};

extern "C" const dcodec_ops_t dcodec_fp16_ops = {
    sizeof(dcodec_ops_t), &codec_fp16_ops, 1, cast_no_scratch, fp16_encode, fp16_decode_add,
};

extern "C" const dcodec_ops_t dcodec_bf16_ops = {
    sizeof(dcodec_ops_t), &codec_bf16_ops, 1, cast_no_scratch, bf16_encode, bf16_decode_add,
};
