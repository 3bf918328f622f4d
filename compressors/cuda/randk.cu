/* RandK on the device (dcodec.h): compressors/randk.c, bit for bit, index choice included.
 *
 * The CPU chooses the k indices with Floyd's algorithm (randk_choose): for the steps
 * j = d-k .. d-1 it draws t_j = rng_below(key, j, j + 1) and takes t_j, or j when t_j is taken
 * already. The loop looks sequential, but the draws depend on (key, j) alone, and its result
 * has a closed form that a thread per step can evaluate, so the choice runs on the device:
 *
 *   every t_j ends in the set (taken at step j, or earlier), and j enters it as well exactly
 *   when step j collides, t_j in S_{j-1}. Since t_j <= j and S_{j-1} holds only values below
 *   j, S_{j-1} = {t_i : i < j} u {i in [d-k, j) : step i collided}, so
 *
 *     collides(j) = first(t_j) < j  or  (d-k <= t_j < j  and  collides(t_j))
 *
 *   with first(u) the first step that drew u. The recursion follows t_j, t_{t_j}, ... down
 *   and stops below d-k; its chains are short (each link is uniform below the last).
 *
 * Two kernels: the first records first(u) with an atomic minimum over the k draws, the second
 * marks every t_j and every colliding j in the bitmap, which is randk_choose's bitmap (a
 * value enters the set in one of those two ways only). The bitmap then serves as the CPU's: a
 * popcount scan over its words gives each word the rank of its first marked index, and the
 * values go to (or come from) val[rank] in increasing index order.
 *
 * bitwise = 1. The message is the CPU's byte for byte: the header is computed on the host as
 * randk.c does, and each value is in[i] * scale, one float multiplication, with the host's
 * NaN rule kept (an input NaN comes out quieted, its payload kept, as SSE and AArch64 give,
 * where the device would give its canonical NaN). decode_add adds each value with one float
 * addition, as the CPU; an add that yields a NaN yields the device's canonical NaN there
 * (NaN sums are NaN on both, payloads may differ).
 *
 * Synchronisation: encode only enqueues; decode_add synchronises once, to read and check the
 * header (the key regenerates the indices) before it adds. */
#include <math.h>
#include <string.h>

#include "topk.cuh" /* common.cuh, and the message's word access dmsg_ld_u32 / dmsg_st_u32 */

extern "C" {
#include "randk.h"
#include "rng.h"
extern const codec_ops_t codec_randk_ops;
}

#define WORDS_PER_TILE 256 /* bitmap words per block of the rank kernels: one per thread */
#define SCAN_THREADS 1024
#define FULL_MASK 0xffffffffu
/* first[u] of a value no step drew: above every step r < k <= 2^32 - 1 */
#define NO_STEP 0xffffffffu

/* ---- Scratch layout: first[count] (uint32), the bitmap, then two arrays per word tile ------ */

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static size_t words_of(size_t count) { return (count + 63) / 64; }

static size_t tiles_of(size_t count)
{
    const size_t w = words_of(count);
    return w ? (w + WORDS_PER_TILE - 1) / WORDS_PER_TILE : 1;
}

typedef struct {
    uint32_t *first;
    unsigned long long *bitmap;
    uint32_t *tile_cnt;
    unsigned long long *tile_off;
} layout_t;

static size_t layout_bytes(size_t count)
{
    return align256(count * sizeof(uint32_t)) + align256(words_of(count) * sizeof(unsigned long long)) +
           align256(tiles_of(count) * sizeof(uint32_t)) +
           align256(tiles_of(count) * sizeof(unsigned long long));
}

static layout_t layout_of(void *scratch, size_t count)
{
    unsigned char *b = (unsigned char *)scratch;
    layout_t l;
    l.first = (uint32_t *)b;
    b += align256(count * sizeof(uint32_t));
    l.bitmap = (unsigned long long *)b;
    b += align256(words_of(count) * sizeof(unsigned long long));
    l.tile_cnt = (uint32_t *)b;
    b += align256(tiles_of(count) * sizeof(uint32_t));
    l.tile_off = (unsigned long long *)b;
    return l;
}

/* ---- Choosing the indices ------------------------------------------------------------------ */

/* The draw of step j = base + r: what randk_choose computes. */
static __device__ __forceinline__ size_t step_draw(uint64_t key, size_t j)
{
    return (size_t)rng_below(key, j, (uint64_t)j + 1);
}

/* first[u] = the least r such that step base + r drew u. */
static __global__ void __launch_bounds__(CUDA_THREADS)
    choose_first_kernel(uint64_t key, size_t base, size_t k, uint32_t *first)
{
    for (size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x; r < k;
         r += (size_t)gridDim.x * blockDim.x)
        atomicMin(&first[step_draw(key, base + r)], (uint32_t)r);
}

/* Marks t_j and, when step j collides, j itself (see the header comment). first[] is
 * complete: it was written by the kernel before. */
static __global__ void __launch_bounds__(CUDA_THREADS)
    choose_mark_kernel(uint64_t key, size_t base, size_t k, const uint32_t *first,
                       unsigned long long *bitmap)
{
    for (size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x; r < k;
         r += (size_t)gridDim.x * blockDim.x) {
        const size_t j = base + r, t = step_draw(key, j);
        atomicOr(&bitmap[t / 64], 1ull << (t % 64));
        size_t v = j, tv = t;
        bool collides = false;
        for (;;) {
            if ((size_t)first[tv] < v - base) { /* t_v drawn by an earlier step */
                collides = true;
                break;
            }
            if (tv >= base && tv < v) { /* t_v taken earlier only if step t_v collided */
                v = tv;
                tv = step_draw(key, v);
                continue;
            }
            break;
        }
        if (collides) atomicOr(&bitmap[j / 64], 1ull << (j % 64));
    }
}

/* The bitmap of randk_choose(key, count, k) in l.bitmap. Requires 1 <= k <= count. */
static terse_status_t choose(uint64_t key, size_t count, size_t k, const layout_t &l, cudaStream_t s)
{
    const size_t base = count - k;
    /* NO_STEP everywhere */
    CUDA_CHECK(cudaMemsetAsync(l.first, 0xff, count * sizeof *l.first, s), "randk: cudaMemsetAsync");
    CUDA_CHECK(cudaMemsetAsync(l.bitmap, 0, words_of(count) * sizeof *l.bitmap, s),
               "randk: cudaMemsetAsync");
    choose_first_kernel<<<cuda_blocks(k), CUDA_THREADS, 0, s>>>(key, base, k, l.first);
    CUDA_CHECK_LAUNCH("randk: choose_first_kernel");
    choose_mark_kernel<<<cuda_blocks(k), CUDA_THREADS, 0, s>>>(key, base, k, l.first, l.bitmap);
    CUDA_CHECK_LAUNCH("randk: choose_mark_kernel");
    return TERSE_OK;
}

/* ---- Ranks of the marked indices ----------------------------------------------------------- */

/* Block t: tile_cnt[t] = the marked indices in words [t W, (t + 1) W). */
static __global__ void __launch_bounds__(WORDS_PER_TILE)
    rank_count_kernel(const unsigned long long *bitmap, size_t words, uint32_t *tile_cnt)
{
    const size_t w = (size_t)blockIdx.x * WORDS_PER_TILE + threadIdx.x;
    uint32_t c = w < words ? (uint32_t)__popcll(bitmap[w]) : 0u;
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(FULL_MASK, c, o);
    __shared__ uint32_t ws[WORDS_PER_TILE / 32];
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t t = 0;
        for (int i = 0; i < WORDS_PER_TILE / 32; i++) t += ws[i];
        tile_cnt[blockIdx.x] = t;
    }
}

/* One block of SCAN_THREADS: tile_off[t] = the marked indices in the tiles before t. Thread i
 * sums a contiguous run of tiles, the block scans the sums, each thread writes its run. */
static __global__ void __launch_bounds__(SCAN_THREADS)
    rank_scan_kernel(const uint32_t *tile_cnt, size_t tiles, unsigned long long *tile_off)
{
    const size_t run = (tiles + SCAN_THREADS - 1) / SCAN_THREADS;
    size_t lo = (size_t)threadIdx.x * run;
    if (lo > tiles) lo = tiles;
    const size_t hi = lo + run < tiles ? lo + run : tiles;
    unsigned long long sum = 0;
    for (size_t t = lo; t < hi; t++) sum += tile_cnt[t];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long incl = sum;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long x = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= (unsigned)o) incl += x;
    }
    __shared__ unsigned long long ws[SCAN_THREADS / 32];
    if (lane == 31) ws[warp] = incl;
    __syncthreads();
    if (warp == 0) { /* lane i alone touches ws[i] */
        unsigned long long x = ws[lane];
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned long long y = __shfl_up_sync(FULL_MASK, x, o);
            if (lane >= (unsigned)o) x += y;
        }
        ws[lane] = x;
    }
    __syncthreads();
    unsigned long long off = (warp ? ws[warp - 1] : 0ull) + incl - sum;
    for (size_t t = lo; t < hi; t++) {
        tile_off[t] = off;
        off += tile_cnt[t];
    }
}

/* The rank (position in the message) of the first marked index of the calling thread's word
 * w = blockIdx.x W + threadIdx.x, and the word itself (0 past the end). */
static __device__ __forceinline__ unsigned long long word_rank(const unsigned long long *bitmap,
                                                               size_t words,
                                                               const unsigned long long *tile_off,
                                                               unsigned long long *bits_p)
{
    const size_t w = (size_t)blockIdx.x * WORDS_PER_TILE + threadIdx.x;
    const unsigned long long bits = w < words ? bitmap[w] : 0ull;
    const uint32_t c = (uint32_t)__popcll(bits);
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t incl = c;
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t x = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= (unsigned)o) incl += x;
    }
    __shared__ uint32_t ws[WORDS_PER_TILE / 32];
    if (lane == 31) ws[warp] = incl;
    __syncthreads();
    uint32_t off = 0;
    for (unsigned i = 0; i < warp; i++) off += ws[i];
    *bits_p = bits;
    return tile_off[blockIdx.x] + off + incl - c;
}

/* An input NaN comes out quieted with its payload, as the host's multiply gives it; any other
 * x is x * scale, rounded to nearest. */
static __device__ __forceinline__ uint32_t scaled_bits(float x, float scale)
{
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return u | 0x00400000u;
    return __float_as_uint(__fmul_rn(x, scale));
}

static __global__ void __launch_bounds__(WORDS_PER_TILE)
    gather_kernel(const unsigned long long *bitmap, size_t words,
                  const unsigned long long *tile_off, const float *in, float scale,
                  unsigned char *val)
{
    unsigned long long bits;
    unsigned long long m = word_rank(bitmap, words, tile_off, &bits);
    const size_t w = (size_t)blockIdx.x * WORDS_PER_TILE + threadIdx.x;
    for (; bits; bits &= bits - 1, m++) {
        const size_t i = w * 64 + (size_t)(__ffsll((long long)bits) - 1);
        dmsg_st_u32(val + 4 * m, scaled_bits(in[i], scale));
    }
}

/* The marked indices are distinct, so no two threads add to one element. */
static __global__ void __launch_bounds__(WORDS_PER_TILE)
    scatter_add_kernel(const unsigned long long *bitmap, size_t words,
                       const unsigned long long *tile_off, const unsigned char *val, float *out)
{
    unsigned long long bits;
    unsigned long long m = word_rank(bitmap, words, tile_off, &bits);
    const size_t w = (size_t)blockIdx.x * WORDS_PER_TILE + threadIdx.x;
    for (; bits; bits &= bits - 1, m++) {
        const size_t i = w * 64 + (size_t)(__ffsll((long long)bits) - 1);
        out[i] = __fadd_rn(out[i], __uint_as_float(dmsg_ld_u32(val + 4 * m)));
    }
}

/* Enqueues the ranks of the bitmap's words (tile counts, then their scan). */
static terse_status_t rank(size_t count, const layout_t &l, cudaStream_t s)
{
    const size_t tiles = tiles_of(count);
    rank_count_kernel<<<(unsigned)tiles, WORDS_PER_TILE, 0, s>>>(l.bitmap, words_of(count), l.tile_cnt);
    CUDA_CHECK_LAUNCH("randk: rank_count_kernel");
    rank_scan_kernel<<<1, SCAN_THREADS, 0, s>>>(l.tile_cnt, tiles, l.tile_off);
    CUDA_CHECK_LAUNCH("randk: rank_scan_kernel");
    return TERSE_OK;
}

/* ---- Codec --------------------------------------------------------------------------------- */

static __global__ void header_kernel(unsigned char *msg, uint64_t key, uint32_t k)
{
    dmsg_st_u32(msg, (uint32_t)key);
    dmsg_st_u32(msg + 4, (uint32_t)(key >> 32));
    dmsg_st_u32(msg + 8, k);
}

/* randk.c's randk_key (static there): the stream key of the message. */
static uint64_t randk_dkey(const double *p, const codec_ctx_t *ctx)
{
    return rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[RANDK_SEED] * 0x9e3779b97f4a7c15ull));
}

static size_t randk_dscratch_bytes(const double *p, size_t count)
{
    (void)p;
    return layout_bytes(count);
}

static terse_status_t randk_dencode(const double *p, const codec_ctx_t *ctx, const float *d_in,
                                    size_t count, void *d_msg, size_t *bytes, void *d_scratch,
                                    void *stream)
{
    const cudaStream_t s = cuda_stream(stream);
    const size_t k = randk_k(p, count);
    if (k > UINT32_MAX)
        return terse_error(TERSE_ERR_ARG, "compressor randk on the device: k = %zu, at most %u "
                                          "(k is uint32 on the wire)", k, UINT32_MAX);
    const uint64_t key = randk_dkey(p, ctx);
    unsigned char *msg = (unsigned char *)d_msg;
    header_kernel<<<1, 1, 0, s>>>(msg, key, (uint32_t)k);
    CUDA_CHECK_LAUNCH("randk: header_kernel");
    if (k > 0) {
        const layout_t l = layout_of(d_scratch, count);
        TERSE_CHECK(choose(key, count, k, l, s));
        TERSE_CHECK(rank(count, l, s));
        /* the CPU's expression, on the host */
        const float scale = p[RANDK_UNBIASED] != 0 ? (float)((double)count / (double)k) : 1.0f;
        gather_kernel<<<(unsigned)tiles_of(count), WORDS_PER_TILE, 0, s>>>(
            l.bitmap, words_of(count), l.tile_off, d_in, scale, msg + RANDK_HEADER);
        CUDA_CHECK_LAUNCH("randk: gather_kernel");
    }
    *bytes = RANDK_HEADER + 4 * k;
    return TERSE_OK;
}

static terse_status_t randk_ddecode_add(const double *p, const void *d_msg, size_t bytes,
                                        size_t count, float *d_out, void *d_scratch, void *stream)
{
    const cudaStream_t s = cuda_stream(stream);
    const size_t k = randk_k(p, count);
    if (bytes != RANDK_HEADER + 4 * k) return TERSE_ERR_MISMATCH;
    const unsigned char *msg = (const unsigned char *)d_msg;
    unsigned char head[RANDK_HEADER];
    CUDA_CHECK(cudaMemcpyAsync(head, msg, RANDK_HEADER, cudaMemcpyDeviceToHost, s),
               "randk: cudaMemcpyAsync");
    CUDA_CHECK(cudaStreamSynchronize(s), "randk: cudaStreamSynchronize");
    uint64_t key;
    uint32_t k32;
    memcpy(&key, head, 8);
    memcpy(&k32, head + 8, 4);
    if (k32 != k) return TERSE_ERR_MISMATCH;
    if (k == 0) return TERSE_OK;
    const layout_t l = layout_of(d_scratch, count);
    TERSE_CHECK(choose(key, count, k, l, s));
    TERSE_CHECK(rank(count, l, s));
    scatter_add_kernel<<<(unsigned)tiles_of(count), WORDS_PER_TILE, 0, s>>>(
        l.bitmap, words_of(count), l.tile_off, msg + RANDK_HEADER, d_out);
    CUDA_CHECK_LAUNCH("randk: scatter_add_kernel");
    return TERSE_OK;
}

extern "C" const dcodec_ops_t dcodec_randk_ops = {
    sizeof(dcodec_ops_t), &codec_randk_ops, 1, randk_dscratch_bytes, randk_dencode, randk_ddecode_add,
};
