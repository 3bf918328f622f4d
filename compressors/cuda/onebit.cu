/* onebit on the device: the CUDA counterpart of the standalone codec in compressors/onebit.c,
 * with the same wire message (float32 scale | ceil(count / 8) bytes of signs, bit j % 8 of
 * byte j / 8 set when x_j >= 0, LSB first, the unused high bits of the last byte 0) and the
 * same decoded sums.
 *
 * Bitwise, the scale included. The CPU's scale comes from onebit_norm_acc: eight lanes of
 * double sums, lane j % 8 taking x_j in increasing j, combined as ((l0+l1)+(l2+l3))+((l4+l5)+
 * (l6+l7)), then sqrt(acc) / sqrt(len) (l2) or acc / len (l1) rounded to float once. A chain
 * of count / 8 dependent adds cannot run fast on a GPU, so the device sums the same terms
 * (x_j^2 or |x_j| in double: exact, a product of two floats fits in 53 bits) in a tree and
 * proves afterwards that the order did not matter for the float it sends:
 *
 *   Every term is >= 0, so a sum whose terms each pass through at most h adds is within
 *   gamma_h * S of the exact sum S (Higham, Accuracy and Stability, (4.4)), gamma_h =
 *   h u / (1 - h u), u = 2^-53; gradual underflow keeps adds exact below the normal range.
 *   The CPU's h_c is ceil(count / 8) + 3, the device's h_d is counted from its launch
 *   (per-thread serial adds, two 256-wide trees, the partials' serial adds). So the CPU's
 *   acc lies in [acc_d - d, acc_d + d] with d = 2 (h_c + h_d) u acc_d, which bounds
 *   (gamma_hc + gamma_hd) S with room to spare for the rounding of d itself, while (h_c +
 *   h_d) u < 1/100: for any count below 2^45. The scale is a monotone function of acc
 *   (sqrt, division and the rounding to float each are), so when both ends of the interval
 *   give the same float, the CPU's acc gives it too.
 *
 *   Otherwise (acc_d within about count 2^-55, relative, of a value where the scale's
 *   rounding to float changes: a chance of about count 2^-32 for random data, 1/4000 at 2^20
 *   elements, and certain for an exact tie, which the tests craft) one block recomputes acc in
 *   the CPU's exact order: eight threads, one per lane, over tiles that the whole block
 *   stages in shared memory. That costs about one GPU clock per element, against a few
 *   microseconds for the tree, and runs only when the flag is set; otherwise it returns at
 *   once. Both decisions stay on the device: encode never synchronises.
 *
 *   A NaN anywhere makes acc NaN in every order (no term is negative, so Inf - Inf cannot
 *   occur), and the CPU then sends its one NaN, 0x7fc00000; an Inf without a NaN makes it
 *   +Inf in every order (a sum of fewer than 2^45 squares of finite floats is below 1e91),
 *   so the scale is +Inf, 0x7f800000. Both are written as bit patterns, never computed,
 *   since GPU arithmetic returns its own canonical NaN. The signs compare x_j >= 0.0f as
 *   onebit_pack does: a NaN's bit is 0, 0 and -0 give 1. decode_add refuses such a scale
 *   (not finite) exactly as the CPU does.
 *
 * decode_add synchronises the stream: it reads the scale and the last sign byte back to
 * validate them before it enqueues the add (out[j] + s or out[j] + (-s), one float add, as
 * onebit_unpack_add). encode only enqueues. Every message access is byte-wise (the message
 * may start at any offset of the caller's buffer). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "common.cuh"

extern "C" {
#include "onebit.h"
}

/* The tree's blocks (at most; a block's partial sum per scratch slot). */
#define ONEBIT_BLOCKS 1024
/* Elements the exact-order kernel stages per tile: 8 per thread of a 256-thread block. */
#define ONEBIT_TILE (8 * CUDA_THREADS)

static_assert(CUDA_THREADS == 256, "the block trees below are written for 256 threads");

/* Scratch: ONEBIT_BLOCKS partial sums (double), then the exact-order flag (int). */
static size_t onebit_d_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return ONEBIT_BLOCKS * sizeof(double) + 2 * sizeof(int);
}

/* ---- Shared pieces of the kernels ------------------------------------------------------ */

/* The term of one element: x^2 or |x| in double, both exact. */
static __device__ inline double onebit_term(int l2, float v)
{
    const double d = (double)v;
    return l2 ? __dmul_rn(d, d) : fabs(d);
}

/* onebit_scale_of for len > 0, in the same double operations, each correctly rounded. */
static __device__ inline float onebit_scale_dev(int l2, double acc, size_t len)
{
    if (l2) return __double2float_rn(__ddiv_rn(__dsqrt_rn(acc), __dsqrt_rn((double)len)));
    return __double2float_rn(__ddiv_rn(acc, (double)len));
}

static __device__ inline void onebit_store_scale(unsigned char *msg, uint32_t u)
{
    for (int i = 0; i < 4; i++) msg[i] = (unsigned char)(u >> (8 * i));
}

/* Sum of v over a 256-thread block, a pairwise tree of depth 8; every thread gets it. */
static __device__ double onebit_block_sum(double v, double *sh)
{
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = CUDA_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = __dadd_rn(sh[t], sh[t + s]);
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads(); /* sh may be reused by the caller */
    return r;
}

/* ---- Encode ---------------------------------------------------------------------------- */

/* Signs and the block's partial sum in one pass. Each warp takes chunks of 32 consecutive
 * elements (a grid stride of whole warps, so all 32 lanes run the same iterations and the
 * ballot sees every lane); the ballot's word is the chunk's four sign bytes, LSB first, the
 * lanes past n voting 0, which leaves the unused high bits of the last byte 0. */
static __global__ void onebit_norm_pack_kernel(int l2, const float *x, size_t n, unsigned char *signs,
                                               double *part)
{
    __shared__ double sh[CUDA_THREADS];
    const unsigned lane = threadIdx.x & 31u;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;
    const size_t chunks = (n + 31) / 32, nbytes = n / 8 + (n % 8 != 0);
    double acc = 0.0;
    for (size_t c = warp; c < chunks; c += nwarps) {
        const size_t e = 32 * c + lane;
        bool pos = false;
        if (e < n) {
            const float v = x[e];
            pos = v >= 0.0f; /* ordered compare: a NaN votes 0, as in onebit_pack */
            acc = __dadd_rn(acc, onebit_term(l2, v));
        }
        const unsigned word = __ballot_sync(0xffffffffu, pos);
        if (lane < 4 && 4 * c + lane < nbytes) signs[4 * c + lane] = (unsigned char)(word >> (8 * lane));
    }
    const double s = onebit_block_sum(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* One block: the partials' sum acc_d, then the scale if the error bound proves it is the
 * CPU's (see the header), else the flag for onebit_exact_kernel. rel = 2 (h_c + h_d) u. */
static __global__ void onebit_finalize_kernel(int l2, const double *part, unsigned nparts, size_t n, double rel,
                                              unsigned char *msg, int *exact)
{
    __shared__ double sh[CUDA_THREADS];
    double v = 0.0;
    for (unsigned i = threadIdx.x; i < nparts; i += CUDA_THREADS) v = __dadd_rn(v, part[i]);
    const double acc = onebit_block_sum(v, sh);
    if (threadIdx.x != 0) return;
    int fallback = 0;
    uint32_t u = 0;
    if (isnan(acc)) {
        u = 0x7fc00000u;
    } else if (isinf(acc)) {
        u = 0x7f800000u;
    } else {
        const double d = __dmul_rn(acc, rel);
        const float a = onebit_scale_dev(l2, fmax(__dsub_rn(acc, d), 0.0), n);
        const float b = onebit_scale_dev(l2, __dadd_rn(acc, d), n);
        u = __float_as_uint(a);
        fallback = u != __float_as_uint(b);
    }
    *exact = fallback;
    if (!fallback) onebit_store_scale(msg, u);
}

/* One block, only when the flag is set: acc in onebit_norm_acc's order. The block stages
 * ONEBIT_TILE elements in shared memory (coalesced loads, the next tile's in flight while
 * this one is summed); thread k < 8 adds the elements j = k (mod 8) of the tile in order,
 * which is lane k of the CPU since every tile starts at a multiple of 8. */
static __global__ void onebit_exact_kernel(int l2, const float *x, size_t n, unsigned char *msg, const int *exact)
{
    if (*exact == 0) return; /* the same value for every thread: the whole block leaves */
    __shared__ float tile[ONEBIT_TILE];
    __shared__ double lanes[8];
    const unsigned t = threadIdx.x;
    const size_t ntiles = (n + ONEBIT_TILE - 1) / ONEBIT_TILE;
    float r[8];
    for (int k = 0; k < 8; k++) {
        const size_t i = (size_t)k * CUDA_THREADS + t;
        r[k] = i < n ? x[i] : 0.0f;
    }
    double l = 0.0;
    for (size_t ti = 0; ti < ntiles; ti++) {
        __syncthreads(); /* the previous tile has been summed */
        for (int k = 0; k < 8; k++) tile[k * CUDA_THREADS + t] = r[k];
        __syncthreads();
        if (ti + 1 < ntiles)
            for (int k = 0; k < 8; k++) {
                const size_t i = (ti + 1) * ONEBIT_TILE + (size_t)k * CUDA_THREADS + t;
                r[k] = i < n ? x[i] : 0.0f;
            }
        if (t < 8) {
            const size_t base = ti * ONEBIT_TILE, cnt = n - base < ONEBIT_TILE ? n - base : ONEBIT_TILE;
            for (size_t j = t; j < cnt; j += 8) l = __dadd_rn(l, onebit_term(l2, tile[j]));
        }
    }
    if (t < 8) lanes[t] = l;
    __syncthreads();
    if (t == 0) {
        const double acc = __dadd_rn(__dadd_rn(__dadd_rn(lanes[0], lanes[1]), __dadd_rn(lanes[2], lanes[3])),
                                     __dadd_rn(__dadd_rn(lanes[4], lanes[5]), __dadd_rn(lanes[6], lanes[7])));
        onebit_store_scale(msg, isnan(acc) ? 0x7fc00000u : __float_as_uint(onebit_scale_dev(l2, acc, n)));
    }
}

static terse_status_t onebit_d_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                      void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    (void)ctx;
    const int l2 = (int)p[ONEBIT_SCALE] == ONEBIT_SCALE_L2;
    const cudaStream_t s = cuda_stream(stream);
    unsigned char *msg = static_cast<unsigned char *>(d_msg);
    if (!d_msg) return terse_error(TERSE_ERR_ARG, "onebit encode: NULL device message");
    if (count == 0) { /* the scale of nothing is 0: four zero bytes */
        CUDA_CHECK(cudaMemsetAsync(msg, 0, ONEBIT_HEADER, s), "onebit encode: cudaMemsetAsync");
        *bytes = ONEBIT_HEADER;
        return TERSE_OK;
    }
    if (!d_in || !d_scratch) return terse_error(TERSE_ERR_ARG, "onebit encode: NULL device buffer");
    double *part = static_cast<double *>(d_scratch);
    int *exact = reinterpret_cast<int *>(part + ONEBIT_BLOCKS);

    const unsigned blocks = cuda_blocks(count) < ONEBIT_BLOCKS ? cuda_blocks(count) : ONEBIT_BLOCKS;
    /* the adds each term passes through: CPU, lane chain and 3 combining adds; device,
     * its warp's chunks, the block tree, the partials' stride and the final tree */
    const size_t chunks = (count + 31) / 32, warps = (size_t)blocks * (CUDA_THREADS / 32);
    const size_t h_c = (count + 7) / 8 + 3;
    const size_t h_d = (chunks + warps - 1) / warps + 8 + (blocks + CUDA_THREADS - 1) / CUDA_THREADS + 8;
    const double rel = 2.0 * (double)(h_c + h_d) * 0x1.0p-53;

    onebit_norm_pack_kernel<<<blocks, CUDA_THREADS, 0, s>>>(l2, d_in, count, msg + ONEBIT_HEADER, part);
    CUDA_CHECK_LAUNCH("onebit encode: norm and sign kernel launch");
    onebit_finalize_kernel<<<1, CUDA_THREADS, 0, s>>>(l2, part, blocks, count, rel, msg, exact);
    CUDA_CHECK_LAUNCH("onebit encode: scale kernel launch");
    onebit_exact_kernel<<<1, CUDA_THREADS, 0, s>>>(l2, d_in, count, msg, exact);
    CUDA_CHECK_LAUNCH("onebit encode: exact-order scale kernel launch");
    *bytes = ONEBIT_HEADER + onebit_sign_bytes(count);
    return TERSE_OK;
}

/* ---- Decode ---------------------------------------------------------------------------- */

static __global__ void onebit_decode_add_kernel(const unsigned char *signs, size_t n, float s, float *out)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += stride) {
        const float v = (signs[j >> 3] >> (j & 7) & 1u) ? s : -s; /* -s flips the sign bit */
        out[j] = __fadd_rn(out[j], v);
    }
}

/* Validates as onebit_decode_add does (length, a finite non-negative scale, zero padding
 * bits), reading the scale and the last byte back: synchronises the stream. */
static terse_status_t onebit_d_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                          float *d_out, void *d_scratch, void *stream)
{
    (void)p; (void)d_scratch;
    if (bytes != ONEBIT_HEADER + onebit_sign_bytes(count)) return TERSE_ERR_MISMATCH;
    if (!d_msg || (count && !d_out)) return terse_error(TERSE_ERR_ARG, "onebit decode_add: NULL device buffer");
    const cudaStream_t st = cuda_stream(stream);
    const unsigned char *msg = static_cast<const unsigned char *>(d_msg);
    unsigned char head[ONEBIT_HEADER + 1] = {0, 0, 0, 0, 0};
    CUDA_CHECK(cudaMemcpyAsync(head, msg, ONEBIT_HEADER, cudaMemcpyDeviceToHost, st),
               "onebit decode_add: cudaMemcpyAsync of the scale");
    if (count % 8)
        CUDA_CHECK(cudaMemcpyAsync(head + ONEBIT_HEADER, msg + ONEBIT_HEADER + count / 8, 1, cudaMemcpyDeviceToHost,
                                   st),
                   "onebit decode_add: cudaMemcpyAsync of the last sign byte");
    CUDA_CHECK(cudaStreamSynchronize(st), "onebit decode_add: cudaStreamSynchronize");
    float s;
    memcpy(&s, head, sizeof s);
    /* a scale is a norm: finite and not negative (a NaN fails both tests) */
    if (!(s >= 0.0f && s <= FLT_MAX)) return TERSE_ERR_MISMATCH;
    if (count % 8 && head[ONEBIT_HEADER] >> (count % 8)) return TERSE_ERR_MISMATCH;
    if (count == 0) return TERSE_OK;
    onebit_decode_add_kernel<<<cuda_blocks(count), CUDA_THREADS, 0, st>>>(msg + ONEBIT_HEADER, count, s, d_out);
    CUDA_CHECK_LAUNCH("onebit decode_add: kernel launch");
    return TERSE_OK;
}

extern "C" const dcodec_ops_t dcodec_onebit_ops = {
    sizeof(dcodec_ops_t), &codec_onebit_ops, 1, onebit_d_scratch_bytes, onebit_d_encode, onebit_d_decode_add,
};
