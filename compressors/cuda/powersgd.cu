/* PowerSGD's standalone low-rank codec on the device (dcodec.h), mirroring the CPU codec in
 * compressors/powersgd.c and its linear algebra in compressors/powersgd.h.
 *
 * The message is the CPU's: uint32 rows | uint32 cols | uint32 r' | float P[rows*r'] |
 * float Q[cols*r'], row-major, with the shape taken from ctx as the CPU takes it (count x 1
 * without a ctx that holds count elements) and r' = powersgd_rank(). Encode is
 *   Q0 ~ N(0,1) from the stream key, orthogonalised;  P = orth(M Q0);  Q = M^T P
 * and decode_add adds P Q^T, after the CPU's checks of the header and the length.
 *
 * Q0 is drawn on the host by the CPU's own powersgd_random() (Box-Muller through the host
 * libm's log and cos, which a device would not reproduce to the bit), from the CPU's key
 * rng_mix(ctx->key ^ seed * 0x9e3779b97f4a7c15), fresh every call (the standalone codec has
 * no warm start: the low-rank protocol keeps Q between calls, not this codec), and copied
 * into the message where Q will go, as the CPU keeps it there until M^T P overwrites it.
 * So Q0 is the CPU's bit for bit; everything after it is not:
 *
 * Not bitwise (bitwise = 0). The CPU runs every product as chains of float fused
 * multiply-adds in the order powersgd.h fixes; here M Q0, M^T P and P Q^T go through cuBLAS
 * (float accumulation, in an order of its choosing), and the Gram-Schmidt sums, in double
 * as on the CPU, are reduced by a tree. Tolerance, against the CPU codec on the same input and parameters:
 *   - header and length: equal;
 *   - P: each column within 1e-3 of the largest magnitude in that column of the CPU's P
 *     (its columns are unit vectors); Q: within 1e-3 of the largest magnitude in the whole
 *     of the CPU's Q (its columns scale with M's singular values, their errors with the
 *     largest). Both for the columns that are well defined: all r' of them when M Q0 has
 *     rank r', the first rank(M) when M has a lower rank (the further columns are the
 *     normalised rounding residue of Gram-Schmidt on both sides, see powersgd.h, and differ
 *     entirely);
 *   - decode_add of one message: each element within 1e-5 (sum_k |P[i,k] Q[j,k]| + |out|)
 *     of the CPU's decode_add of the same message (cuBLAS's order of the r' products against
 *     the CPU's chain, and one more rounding in cuBLAS's C + P Q^T);
 *   - the round trip (encode then decode_add onto zeros) of an input of rank r' or more:
 *     within 1e-3 of the largest magnitude the CPU decodes.
 * The factors' bound is loose on purpose: the error of a float dot product of length rows
 * or cols (2^20 and more) grows with the length, up to length x 2^-24 relative to its terms
 * when they are summed in sequence, as the CPU's M^T P is (a host emulation of this file
 * with sequential float products reached 4e-4 on a 2^20 x 1 layer; cuBLAS's blocked sums
 * and the CPU's 8 chains of M Q do better), and
 * Gram-Schmidt magnifies the error of P by the conditioning of M Q0 (5e-5 on a random 6 x 6
 * at r' = 6). The decoded sums are deterministic on one device with one stream active;
 * cuBLAS may choose other kernels when streams run concurrently or on another GPU model.
 *
 * cuBLAS: one handle per device for the whole process, created on first use and never
 * destroyed, shared by all threads under a mutex held while its stream is set and the
 * product enqueued (microseconds: cuBLAS returns once the work is queued). Per process and
 * not per thread because a handle holds device memory (cuBLAS's workspace): one per
 * device bounds that memory whatever threads call in (worker threads, the progress thread,
 * a framework's pool), where a handle per thread would be created again in each of them and
 * could only be released at thread exit, when destroying a handle races CUDA's own teardown.
 * Sharing a handle is safe under the lock: its only configuration, the stream, is set before
 * each product. A handle that cannot be created is TERSE_ERR_BACKEND with cuBLAS's reason.
 * The products use CUBLAS_COMPUTE_32F on a handle whose math mode stays the default, so no
 * TF32 tensor-core rounding enters.
 *
 * Synchronisation: encode synchronises the stream once, after copying Q0 from the host
 * buffer it fills (which it then frees); the products and the orthogonalisation after it are
 * only enqueued. decode_add synchronises to read the 12-byte header, then enqueues the
 * product. A message's floats must be 4-byte aligned in device memory (d_msg itself, since
 * the header is 12 bytes); an unaligned d_msg is TERSE_ERR_ARG. No device scratch is used. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>

#include <cublas_v2.h>

#include "common.cuh"
extern "C" {
#include "powersgd.h"
#include "rng.h"
}

/* ---- cuBLAS, one handle per device ------------------------------------------------------ */

#define POWERSGD_MAX_DEVICES 64

static std::mutex blas_lock;
static cublasHandle_t blas_handles[POWERSGD_MAX_DEVICES];

static terse_status_t blas_status(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS) return TERSE_OK;
    return terse_error(TERSE_ERR_BACKEND, "%s: cuBLAS error %d: %s", what, (int)s, cublasGetStatusString(s));
}

/* C = A' B' + beta C in cuBLAS's column-major terms (A' = A or A^T as ta says, the same for
 * B'): C is m x n, the inner dimension k, on `stream`, float in and out, float accumulation.
 * The callers translate their row-major products (a row-major matrix is its transpose in
 * column-major, with the row length as the leading dimension). */
static terse_status_t blas_gemm(cudaStream_t stream, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                int64_t n, int64_t k, const float *A, int64_t lda, const float *B, int64_t ldb,
                                float beta, float *C, int64_t ldc, const char *what)
{
    std::lock_guard<std::mutex> hold(blas_lock);
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev), "powersgd: cudaGetDevice");
    if (dev < 0 || dev >= POWERSGD_MAX_DEVICES)
        return terse_error(TERSE_ERR_BACKEND, "powersgd: device %d: the device codec keeps cuBLAS handles for "
                                              "devices 0 to %d only", dev, POWERSGD_MAX_DEVICES - 1);
    if (!blas_handles[dev]) {
        cublasHandle_t h = NULL;
        terse_status_t s = blas_status(cublasCreate(&h), "powersgd: cublasCreate");
        if (s != TERSE_OK) return s;
        blas_handles[dev] = h;
    }
    cublasHandle_t h = blas_handles[dev];
    terse_status_t s = blas_status(cublasSetStream(h, stream), "powersgd: cublasSetStream");
    if (s != TERSE_OK) return s;
    const float one = 1.0f;
    return blas_status(cublasGemmEx_64(h, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
                                       CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                       what);
}

/* P = M Q: M row-major n x m, Q m x r, P n x r. Column-major: P^T (r x n) = Q^T (r x m) M^T
 * (m x n), each stored as its row-major self with leading dimension r, m and r. */
static terse_status_t mul(cudaStream_t s, const float *M, size_t n, size_t m, const float *Q, size_t r, float *P)
{
    return blas_gemm(s, CUBLAS_OP_N, CUBLAS_OP_N, (int64_t)r, (int64_t)n, (int64_t)m, Q, (int64_t)r, M, (int64_t)m,
                     0.0f, P, (int64_t)r, "powersgd: P = M Q (cublasGemmEx)");
}

/* Q = M^T P: M n x m, P n x r, Q m x r. Column-major: Q^T (r x m) = P^T (r x n) M (n x m),
 * M being the transpose of its row-major storage (m x n, leading dimension m). */
static terse_status_t mul_t(cudaStream_t s, const float *M, size_t n, size_t m, const float *P, size_t r, float *Q)
{
    return blas_gemm(s, CUBLAS_OP_N, CUBLAS_OP_T, (int64_t)r, (int64_t)m, (int64_t)n, P, (int64_t)r, M, (int64_t)m,
                     0.0f, Q, (int64_t)r, "powersgd: Q = M^T P (cublasGemmEx)");
}

/* A += P Q^T: P n x r, Q m x r, A n x m. Column-major: A^T (m x n) += Q (m x r) P^T (r x n),
 * Q being the transpose of its row-major storage (r x m, leading dimension r). */
static terse_status_t outer_add(cudaStream_t s, const float *P, size_t n, const float *Q, size_t m, size_t r,
                                float *A)
{
    return blas_gemm(s, CUBLAS_OP_T, CUBLAS_OP_N, (int64_t)m, (int64_t)n, (int64_t)r, Q, (int64_t)r, P, (int64_t)r,
                     1.0f, A, (int64_t)m, "powersgd: out += P Q^T (cublasGemmEx)");
}

/* ---- Gram-Schmidt ---------------------------------------------------------------------------
 * powersgd_orthogonalize() on the device: the same modified Gram-Schmidt, column i = 0, 1, ...
 *   d = sqrt(sum_t a[t,i]^2) + POWERSGD_EPS;  a[t,i] = (float)(a[t,i] / d)
 *   for each later column j:  s = sum_t a[t,i] a[t,j];  a[t,j] = (float)(a[t,j] - s a[t,i])
 * with the same double operations per element; only the order of each sum differs (a fixed
 * tree over the block's threads instead of t = 0, 1, ...), so the result is deterministic.
 * The later columns' projections on column i are independent of each other (column j is
 * changed only by its own update), so ORTH_TILE of them share one pass over the rows.
 * One block does the whole matrix: between the steps every thread must see the columns the
 * others wrote, which __syncthreads gives within a block (r and the passes are small; the
 * standalone codec is not the engine's hot path, the low-rank protocol is). */

#define ORTH_THREADS 512 /* a power of two, for the tree */
#define ORTH_TILE 8

/* red[k][0] = the sum of red[k][0 .. ORTH_THREADS) over k < ORTH_TILE, in a fixed order.
 * Called by every thread of the block, after each has written its red[k][tid]. */
__device__ static void block_sum(double (*red)[ORTH_THREADS], unsigned tid)
{
    __syncthreads();
    for (unsigned h = ORTH_THREADS / 2; h > 0; h /= 2) {
        if (tid < h)
            for (int k = 0; k < ORTH_TILE; k++) red[k][tid] = __dadd_rn(red[k][tid], red[k][tid + h]);
        __syncthreads();
    }
}

/* Orthonormalises the r columns of the row-major len x r matrix a in place. One block of
 * ORTH_THREADS threads. */
static __global__ void orth_kernel(float *a, size_t len, size_t r)
{
    __shared__ double red[ORTH_TILE][ORTH_THREADS];
    const unsigned tid = threadIdx.x;
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = tid; t < len; t += ORTH_THREADS) {
            const double x = (double)a[t * r + i];
            ss = __dadd_rn(ss, __dmul_rn(x, x));
        }
        for (int k = 0; k < ORTH_TILE; k++) red[k][tid] = k == 0 ? ss : 0.0;
        block_sum(red, tid);
        /* eps on the norm, not under the root: a zero column divides by eps and stays 0 */
        const double d = __dadd_rn(__dsqrt_rn(red[0][0]), POWERSGD_EPS);
        for (size_t t = tid; t < len; t += ORTH_THREADS)
            a[t * r + i] = __double2float_rn(__ddiv_rn((double)a[t * r + i], d));
        __syncthreads(); /* column i is final, and red[0][0] read by all, before both are reused */

        for (size_t j0 = i + 1; j0 < r; j0 += ORTH_TILE) {
            const size_t w = r - j0 < ORTH_TILE ? r - j0 : ORTH_TILE;
            double acc[ORTH_TILE];
            for (int k = 0; k < ORTH_TILE; k++) acc[k] = 0.0;
            for (size_t t = tid; t < len; t += ORTH_THREADS) {
                const float *row = a + t * r;
                const double x = (double)row[i];
                for (int k = 0; k < ORTH_TILE; k++)
                    if ((size_t)k < w) acc[k] = __dadd_rn(acc[k], __dmul_rn(x, (double)row[j0 + k]));
            }
            for (int k = 0; k < ORTH_TILE; k++) red[k][tid] = acc[k];
            block_sum(red, tid);
            for (size_t t = tid; t < len; t += ORTH_THREADS) {
                float *row = a + t * r;
                const double x = (double)row[i];
                for (int k = 0; k < ORTH_TILE; k++)
                    if ((size_t)k < w)
                        row[j0 + k] = __double2float_rn(__dsub_rn((double)row[j0 + k], __dmul_rn(red[k][0], x)));
            }
            __syncthreads(); /* every thread has read red before the next tile writes it */
        }
    }
}

static terse_status_t orthogonalize(cudaStream_t s, float *a, size_t len, size_t r)
{
    if (r == 0 || len == 0) return TERSE_OK;
    orth_kernel<<<1, ORTH_THREADS, 0, s>>>(a, len, r);
    CUDA_CHECK_LAUNCH("powersgd: orthogonalisation kernel");
    return TERSE_OK;
}

/* ---- The codec ---------------------------------------------------------------------------- */

static size_t message_bytes(size_t rows, size_t cols, size_t r)
{
    return POWERSGD_HEADER + 4 * r * (rows + cols);
}

/* Writes the 12-byte header bytewise (host byte order, which the device shares: both are
 * little-endian), so that d_msg needs no alignment for it. */
static __global__ void header_kernel(unsigned char *msg, uint32_t rows, uint32_t cols, uint32_t r)
{
    const uint32_t hdr[3] = {rows, cols, r};
    memcpy(msg, hdr, sizeof hdr);
}

static size_t dpowersgd_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0;
}

static terse_status_t dpowersgd_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                       void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    (void)d_scratch;
    cudaStream_t s = cuda_stream(stream);
    /* the CPU's shape rule, the same expression */
    size_t rows = count, cols = 1;
    if (ctx && ctx->rows * ctx->cols == count) {
        rows = ctx->rows;
        cols = ctx->cols;
    }
    const size_t r = powersgd_rank(p, rows, cols);
    if (r && ((uintptr_t)d_msg & 3))
        return terse_error(TERSE_ERR_ARG, "powersgd: the device message must be 4-byte aligned (the factors are "
                                          "floats at byte 12)");
    header_kernel<<<1, 1, 0, s>>>((unsigned char *)d_msg, (uint32_t)rows, (uint32_t)cols, (uint32_t)r);
    CUDA_CHECK_LAUNCH("powersgd: header kernel");
    if (r == 0) {
        *bytes = POWERSGD_HEADER;
        return TERSE_OK;
    }
    float *P = (float *)((unsigned char *)d_msg + POWERSGD_HEADER), *Q = P + rows * r;

    /* Q0 as the CPU draws it, on the host, copied to where Q goes */
    const uint64_t key = rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[POWERSGD_SEED] * 0x9e3779b97f4a7c15ull));
    float *q0 = (float *)malloc(cols * r * sizeof *q0);
    if (!q0)
        return terse_error(TERSE_ERR_NOMEM, "powersgd: no host memory for the %zu x %zu starting factor", cols, r);
    powersgd_random(key, cols, r, q0);
    terse_status_t st = cuda_status(cudaMemcpyAsync(Q, q0, cols * r * sizeof *q0, cudaMemcpyHostToDevice, s),
                                    "powersgd: copy of Q0 to the device");
    /* the copy reads q0 asynchronously: it must be done before q0 is freed */
    if (st == TERSE_OK) st = cuda_status(cudaStreamSynchronize(s), "powersgd: synchronising after the copy of Q0");
    free(q0);
    if (st != TERSE_OK) return st;

    /* Q0 lives where Q will: M^T P overwrites it once P no longer needs it */
    if ((st = orthogonalize(s, Q, cols, r)) != TERSE_OK) return st;
    if ((st = mul(s, d_in, rows, cols, Q, r, P)) != TERSE_OK) return st;
    if ((st = orthogonalize(s, P, rows, r)) != TERSE_OK) return st;
    if ((st = mul_t(s, d_in, rows, cols, P, r, Q)) != TERSE_OK) return st;
    *bytes = message_bytes(rows, cols, r);
    return TERSE_OK;
}

/* Synchronises the stream (the header is read on the host) before anything is added. */
static terse_status_t dpowersgd_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                           float *d_out, void *d_scratch, void *stream)
{
    (void)d_scratch;
    cudaStream_t s = cuda_stream(stream);
    if (bytes < POWERSGD_HEADER)
        return terse_error(TERSE_ERR_MISMATCH, "powersgd: a %zu-byte message is shorter than its %d-byte header",
                           bytes, POWERSGD_HEADER);
    uint32_t hdr[3];
    CUDA_CHECK(cudaMemcpyAsync(hdr, d_msg, sizeof hdr, cudaMemcpyDeviceToHost, s), "powersgd: reading the header");
    CUDA_CHECK(cudaStreamSynchronize(s), "powersgd: synchronising to read the header");
    /* the CPU's checks, the same expressions */
    const size_t rows = hdr[0], cols = hdr[1], r = hdr[2];
    if ((uint64_t)rows * cols != count || r != powersgd_rank(p, rows, cols) || bytes != message_bytes(rows, cols, r))
        return terse_error(TERSE_ERR_MISMATCH, "powersgd: message header %zu x %zu rank %zu, %zu bytes, does not "
                           "match a layer of %zu elements", rows, cols, r, bytes, count);
    if (r == 0) return TERSE_OK;
    if ((uintptr_t)d_msg & 3)
        return terse_error(TERSE_ERR_ARG, "powersgd: the device message must be 4-byte aligned (the factors are "
                                          "floats at byte 12)");
    const float *P = (const float *)((const unsigned char *)d_msg + POWERSGD_HEADER), *Q = P + rows * r;
    return outer_add(s, P, rows, Q, cols, r, d_out);
}

extern "C" const dcodec_ops_t dcodec_powersgd_ops = {
    sizeof(dcodec_ops_t), &codec_powersgd_ops, 0,
    dpowersgd_scratch_bytes, dpowersgd_encode, dpowersgd_decode_add,
};
