/* The device side of exact top-k selection and of the sparse message
 * (uint32 k | uint32 idx[k] increasing | float val[k]), implemented in topk.cu and shared by
 * the topk codec there and the dgc codec (dgc.cu). Included by .cu files only.
 *
 * Entries rank by their magnitude key, the bits of |x| (bits & 0x7fffffff), as on the CPU
 * (compressors/topk.c): a NaN ranks above +Inf and -0 ties with +0. Every function takes a
 * key range [lo, hi]: entries whose key lies outside it are ignored, which lets dgc select
 * among its candidates {|x| >= thr} (keys in [bits(thr), bits(+Inf)]) without copying them.
 *
 * The scratch (dtopk_scratch_bytes) holds the selection's state on the device, so that a
 * threshold search and the message that follows it are enqueued without a round trip to the
 * host; only the functions that say so synchronise. */
#ifndef TERSE_CUDA_TOPK_CUH
#define TERSE_CUDA_TOPK_CUH

#include "common.cuh"

/* Every magnitude key, NaN included; and the keys of non-NaN magnitudes (+Inf is the top). */
#define DTOPK_KEY_ALL 0x7fffffffu
#define DTOPK_KEY_INF 0x7f800000u

/* Device scratch the functions below need for vectors of up to n entries (256-byte
 * aligned, as cudaMalloc gives). */
size_t dtopk_scratch_bytes(size_t n);

/* Finds, on the device, the k-th largest key T among the entries v[0], v[stride], ...,
 * v[(n - 1) stride] whose key lies in [lo, hi], and how many entries equal to T the top k
 * keep (ties: lower index first). Requires 1 <= k <= the number of such entries. The result
 * stays in the scratch for dtopk_threshold_get and dtopk_message_top. Enqueues only. */
terse_status_t dtopk_threshold(const float *d_v, size_t stride, size_t n, size_t k, uint32_t lo,
                               uint32_t hi, void *d_scratch, cudaStream_t s);

/* The key T found by the last dtopk_threshold. Synchronises the stream. */
terse_status_t dtopk_threshold_get(const void *d_scratch, cudaStream_t s, uint32_t *thr_p);

/* The number of entries of v[0..n) whose key lies in [lo, hi]. Synchronises the stream. */
terse_status_t dtopk_count(const float *d_v, size_t n, uint32_t lo, uint32_t hi, void *d_scratch,
                           cudaStream_t s, size_t *m_p);

/* Writes the sparse message of the top k entries of v[0..n) among those with key in
 * [lo, hi] found by the last dtopk_threshold (on v itself, stride 1, the same k, lo, hi) to
 * d_msg (4 + 8 k bytes, any alignment). Enqueues only. */
terse_status_t dtopk_message_top(const float *d_v, size_t n, size_t k, uint32_t hi, void *d_msg,
                                 void *d_scratch, cudaStream_t s);

/* Writes the sparse message of the `kept` lowest-indexed entries of v[0..n) whose key lies in
 * [lo, hi] to d_msg (4 + 8 kept bytes); requires kept <= the number of such entries. With
 * lo = 0 and hi = DTOPK_KEY_ALL and kept = n: every entry. Enqueues only. */
terse_status_t dtopk_message_first(const float *d_v, size_t n, size_t kept, uint32_t lo,
                                   uint32_t hi, void *d_msg, void *d_scratch, cudaStream_t s);

/* The exact top-k message of v[0..n) (k <= n), what topk_select writes on the CPU: the whole
 * vector when k == n, dtopk_threshold and dtopk_message_top otherwise. Enqueues only. */
terse_status_t dtopk_message(const float *d_v, size_t n, size_t k, void *d_msg, void *d_scratch,
                             cudaStream_t s);

/* sparse_decode_add (compressors/topk.c) on the device: validates the message (length, k <=
 * count, indices strictly increasing and below count), then adds val[j] to out[idx[j]].
 * TERSE_ERR_MISMATCH, d_out untouched, when it is malformed. Synchronises the stream (the
 * header and the validation verdict are read on the host). */
terse_status_t dsparse_decode_add(const void *d_msg, size_t bytes, size_t count, float *d_out,
                                  void *d_scratch, cudaStream_t s);

/* The message is read and written a 32-bit word at a time where the word is aligned, byte by
 * byte where it is not: a message may sit at any offset of a receive buffer, and randk's
 * 12-byte header shifts its values off an 8-byte boundary. Little-endian, as the host. */
static __device__ __forceinline__ uint32_t dmsg_ld_u32(const unsigned char *p)
{
    if (((uintptr_t)p & 3u) == 0) return *(const uint32_t *)p;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static __device__ __forceinline__ void dmsg_st_u32(unsigned char *p, uint32_t x)
{
    if (((uintptr_t)p & 3u) == 0) {
        *(uint32_t *)p = x;
        return;
    }
    p[0] = (unsigned char)x;
    p[1] = (unsigned char)(x >> 8);
    p[2] = (unsigned char)(x >> 16);
    p[3] = (unsigned char)(x >> 24);
}

#endif
