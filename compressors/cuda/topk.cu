/* TopK on the device (dcodec.h): the exact top-k by magnitude of compressors/topk.c, bit for
 * bit, and the device side of its sparse message (topk.cuh), which dgc.cu shares.
 *
 * Entries rank by their magnitude key, the bits of |x| (bits & 0x7fffffff), so a NaN ranks
 * above +Inf and -0 ties with +0; ties go to the lower index. The k kept entries are
 * determined by two numbers, whatever the method: T, the k-th largest key, and E, how many
 * entries equal to T are kept (k minus those above T). The CPU finds them by a three-digit
 * radix select; so does this file, with the same digits, on the device:
 *
 *   threshold (3 passes): a histogram of the next digit of the keys that match the digits
 *     found so far (per block in shared memory, then added to a global one), and one block
 *     that finds the bin where the count from the top reaches the entries still needed.
 *     T and E stay in the scratch, so nothing is read back on the host.
 *   message (3 kernels): per tile of 4096 entries, how many are above T (class A) and how
 *     many equal to it (class B); an exclusive scan over the tiles; then each tile writes its
 *     kept entries at out = (A before it) + min(B before it, E): every A entry and the first E
 *     B entries, in increasing index order, as the CPU's final pass.
 *
 * The same two classes, given directly instead of from a threshold, write dgc's truncated
 * candidates (the first `kept` entries with |x| >= thr). Values are copied as bits.
 *
 * bitwise = 1: the message is the CPU's byte for byte (it is a function of the input alone),
 * and decode_add adds each value with one float addition, as the CPU, except that an add that
 * yields a NaN yields the device's canonical NaN (0x7fffffff) where the host propagates an
 * operand's payload: NaN sums are NaN on both, with possibly different payloads.
 *
 * Synchronisation: encode only enqueues (the message length is 4 + 8 k, known beforehand);
 * decode_add synchronises twice, to read the header and the validation verdict, before it
 * adds. Counts up to 2^32 - 1 (the indices are uint32 on the wire). */
#include <math.h>
#include <string.h>

#include "topk.cuh"

extern "C" {
#include "topk.h"
extern const codec_ops_t codec_topk_ops;
}

#define SELECT_BINS_MAX 2048 /* the widest digit: bits 10-20                                 */
#define HIST_BLOCKS_MAX 512  /* enough blocks to fill the device; each flushes its bins once */
#define SCAN_THREADS 1024    /* the single-block kernels: 32 warps                           */
#define TILE_THREADS 256     /* 8 warps                                                      */
#define TILE_ITEMS 16
#define TILE ((size_t)TILE_THREADS * TILE_ITEMS)
#define FULL_MASK 0xffffffffu

/* What the selection leaves in the scratch, for the kernels that follow it. */
typedef struct {
    uint32_t prefix, mask;   /* the digits of T found so far, in place, and which bits   */
    unsigned long long need; /* entries still to keep among those matching prefix;
                                after the last digit, E                                */
    /* the message's classes: A = keys in [a_lo, a_hi], all kept; B = keys in [b_lo, b_hi]
     * (and not in A), the first e kept */
    uint32_t a_lo, a_hi, b_lo, b_hi;
    unsigned long long e;
    unsigned long long count; /* dtopk_count's result                                   */
    uint32_t bad;             /* dsparse_decode_add's verdict: 1 = malformed            */
} select_state_t;

/* ---- Scratch layout: the state, the histogram, then four arrays with one entry per tile --- */

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static size_t tiles_of(size_t n) { return n ? (n + TILE - 1) / TILE : 1; }

typedef struct {
    select_state_t *st;
    unsigned long long *hist;
    uint32_t *a_cnt, *b_cnt;
    unsigned long long *a_off, *b_off;
} layout_t;

static size_t layout_bytes(size_t n)
{
    const size_t t = tiles_of(n);
    return align256(sizeof(select_state_t)) + align256(SELECT_BINS_MAX * sizeof(unsigned long long)) +
           2 * align256(t * sizeof(uint32_t)) + 2 * align256(t * sizeof(unsigned long long));
}

static layout_t layout_of(void *scratch, size_t n)
{
    const size_t t = tiles_of(n);
    unsigned char *b = (unsigned char *)scratch;
    layout_t l;
    l.st = (select_state_t *)b;
    b += align256(sizeof(select_state_t));
    l.hist = (unsigned long long *)b;
    b += align256(SELECT_BINS_MAX * sizeof(unsigned long long));
    l.a_cnt = (uint32_t *)b;
    b += align256(t * sizeof(uint32_t));
    l.b_cnt = (uint32_t *)b;
    b += align256(t * sizeof(uint32_t));
    l.a_off = (unsigned long long *)b;
    b += align256(t * sizeof(unsigned long long));
    l.b_off = (unsigned long long *)b;
    return l;
}

size_t dtopk_scratch_bytes(size_t n) { return layout_bytes(n); }

static __device__ __forceinline__ uint32_t mag_key(float x) { return __float_as_uint(x) & 0x7fffffffu; }

/* ---- Threshold ----------------------------------------------------------------------------- */

static __global__ void select_init_kernel(select_state_t *st, unsigned long long k)
{
    st->prefix = 0;
    st->mask = 0;
    st->need = k;
}

/* Adds to hist the digit (key >> shift) & (bins - 1) of every entry v[j * stride], j < n, whose
 * key lies in [lo, hi] and matches the digits found so far. */
static __global__ void __launch_bounds__(TILE_THREADS)
    select_hist_kernel(const float *v, size_t stride, size_t n, uint32_t lo, uint32_t hi,
                       const select_state_t *st, int shift, uint32_t bins,
                       unsigned long long *hist)
{
    __shared__ uint32_t h[SELECT_BINS_MAX];
    for (uint32_t b = threadIdx.x; b < bins; b += blockDim.x) h[b] = 0;
    __syncthreads();
    const uint32_t prefix = st->prefix, mask = st->mask;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n;
         j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t key = mag_key(v[j * stride]);
        if (key >= lo && key <= hi && (key & mask) == prefix)
            atomicAdd(&h[(key >> shift) & (bins - 1)], 1u);
    }
    __syncthreads();
    for (uint32_t b = threadIdx.x; b < bins; b += blockDim.x)
        if (h[b]) atomicAdd(&hist[b], (unsigned long long)h[b]);
}

/* One block of SCAN_THREADS: finds the bin b where the count from the top reaches need, as the
 * CPU's loop (the largest b with S[b] >= need, S[b] = the entries in bins >= b), and moves the
 * digit into the state. S comes from a suffix scan of the histogram in shared memory
 * (Hillis-Steele, double-buffered). need >= 1 and S[0] >= need hold (k <= the entries in
 * range), so exactly one bin answers. */
static __global__ void __launch_bounds__(SCAN_THREADS)
    select_digit_kernel(const unsigned long long *hist, select_state_t *st, int shift,
                        uint32_t bins)
{
    __shared__ unsigned long long s[2][SELECT_BINS_MAX];
    /* read before the first barrier; the one thread that answers writes after the last */
    const unsigned long long need = st->need;
    const uint32_t prefix = st->prefix, mask = st->mask;
    for (uint32_t b = threadIdx.x; b < bins; b += blockDim.x) s[0][b] = hist[b];
    __syncthreads();
    int cur = 0;
    for (uint32_t off = 1; off < bins; off <<= 1) {
        for (uint32_t b = threadIdx.x; b < bins; b += blockDim.x)
            s[cur ^ 1][b] = s[cur][b] + (b + off < bins ? s[cur][b + off] : 0ull);
        __syncthreads();
        cur ^= 1;
    }
    for (uint32_t b = threadIdx.x; b < bins; b += blockDim.x) {
        const unsigned long long from_b = s[cur][b];
        const unsigned long long above = b + 1 < bins ? s[cur][b + 1] : 0ull;
        if (from_b >= need && above < need) {
            st->need = need - above;
            st->prefix = prefix | (b << shift);
            st->mask = mask | ((bins - 1) << shift);
        }
    }
}

terse_status_t dtopk_threshold(const float *d_v, size_t stride, size_t n, size_t k, uint32_t lo,
                               uint32_t hi, void *d_scratch, cudaStream_t s)
{
    if (k == 0 || k > n)
        return terse_error(TERSE_ERR_ARG, "dtopk_threshold: k = %zu outside [1, %zu]", k, n);
    /* the CPU's digits: bits 21-30 (bit 31 of a key is 0), 10-20, 0-9 */
    static const int shift[3] = {21, 10, 0};
    static const uint32_t bins[3] = {1024, 2048, 1024};
    const layout_t l = layout_of(d_scratch, 0);
    size_t blocks = (n + TILE_THREADS - 1) / TILE_THREADS;
    if (blocks > HIST_BLOCKS_MAX) blocks = HIST_BLOCKS_MAX;
    select_init_kernel<<<1, 1, 0, s>>>(l.st, (unsigned long long)k);
    CUDA_CHECK_LAUNCH("topk: select_init_kernel");
    for (int pass = 0; pass < 3; pass++) {
        CUDA_CHECK(cudaMemsetAsync(l.hist, 0, bins[pass] * sizeof *l.hist, s), "topk: cudaMemsetAsync");
        select_hist_kernel<<<(unsigned)blocks, TILE_THREADS, 0, s>>>(d_v, stride, n, lo, hi, l.st,
                                                                     shift[pass], bins[pass], l.hist);
        CUDA_CHECK_LAUNCH("topk: select_hist_kernel");
        select_digit_kernel<<<1, SCAN_THREADS, 0, s>>>(l.hist, l.st, shift[pass], bins[pass]);
        CUDA_CHECK_LAUNCH("topk: select_digit_kernel");
    }
    return TERSE_OK;
}

terse_status_t dtopk_threshold_get(const void *d_scratch, cudaStream_t s, uint32_t *thr_p)
{
    const select_state_t *st = (const select_state_t *)d_scratch;
    uint32_t thr;
    CUDA_CHECK(cudaMemcpyAsync(&thr, &st->prefix, sizeof thr, cudaMemcpyDeviceToHost, s),
               "topk: cudaMemcpyAsync");
    CUDA_CHECK(cudaStreamSynchronize(s), "topk: cudaStreamSynchronize");
    *thr_p = thr;
    return TERSE_OK;
}

/* ---- Counting ------------------------------------------------------------------------------ */

static __global__ void __launch_bounds__(TILE_THREADS)
    count_kernel(const float *v, size_t n, uint32_t lo, uint32_t hi, unsigned long long *out)
{
    unsigned long long c = 0;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n;
         j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t key = mag_key(v[j]);
        c += key >= lo && key <= hi;
    }
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(FULL_MASK, c, o);
    if ((threadIdx.x & 31) == 0 && c) atomicAdd(out, c);
}

terse_status_t dtopk_count(const float *d_v, size_t n, uint32_t lo, uint32_t hi, void *d_scratch,
                           cudaStream_t s, size_t *m_p)
{
    const layout_t l = layout_of(d_scratch, 0);
    CUDA_CHECK(cudaMemsetAsync(&l.st->count, 0, sizeof l.st->count, s), "topk: cudaMemsetAsync");
    if (n > 0) {
        count_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, s>>>(d_v, n, lo, hi, &l.st->count);
        CUDA_CHECK_LAUNCH("topk: count_kernel");
    }
    unsigned long long m;
    CUDA_CHECK(cudaMemcpyAsync(&m, &l.st->count, sizeof m, cudaMemcpyDeviceToHost, s),
               "topk: cudaMemcpyAsync");
    CUDA_CHECK(cudaStreamSynchronize(s), "topk: cudaStreamSynchronize");
    *m_p = (size_t)m;
    return TERSE_OK;
}

/* ---- The message --------------------------------------------------------------------------- */

static __global__ void header_kernel(unsigned char *msg, uint32_t k) { dmsg_st_u32(msg, k); }

/* The classes after a threshold: A = (T, hi], B = {T}, E from the selection. */
static __global__ void rule_top_kernel(select_state_t *st, uint32_t hi)
{
    const uint32_t thr = st->prefix; /* <= 0x7fffffff: thr + 1 does not wrap */
    st->a_lo = thr + 1;
    st->a_hi = hi;
    st->b_lo = thr;
    st->b_hi = thr;
    st->e = st->need;
}

static __global__ void rule_set_kernel(select_state_t *st, uint32_t a_lo, uint32_t a_hi,
                                       uint32_t b_lo, uint32_t b_hi, unsigned long long e)
{
    st->a_lo = a_lo;
    st->a_hi = a_hi;
    st->b_lo = b_lo;
    st->b_hi = b_hi;
    st->e = e;
}

typedef struct {
    uint32_t a_lo, a_hi, b_lo, b_hi;
} classes_t;

static __device__ __forceinline__ classes_t classes_of(const select_state_t *st)
{
    classes_t c = {st->a_lo, st->a_hi, st->b_lo, st->b_hi};
    return c;
}

static __device__ __forceinline__ void classify(const classes_t &c, uint32_t key, bool *a, bool *b)
{
    *a = key >= c.a_lo && key <= c.a_hi;
    *b = !*a && key >= c.b_lo && key <= c.b_hi;
}

/* Block t counts the A and B entries of tile t = v[t TILE .. (t + 1) TILE). */
static __global__ void __launch_bounds__(TILE_THREADS)
    tile_count_kernel(const float *v, size_t n, const select_state_t *st, uint32_t *a_cnt,
                      uint32_t *b_cnt)
{
    const classes_t c = classes_of(st);
    const size_t base = (size_t)blockIdx.x * TILE;
    uint32_t na = 0, nb = 0;
    for (int r = 0; r < TILE_ITEMS; r++) {
        const size_t j = base + (size_t)r * TILE_THREADS + threadIdx.x;
        if (j < n) {
            bool a, b;
            classify(c, mag_key(v[j]), &a, &b);
            na += a;
            nb += b;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        na += __shfl_down_sync(FULL_MASK, na, o);
        nb += __shfl_down_sync(FULL_MASK, nb, o);
    }
    __shared__ uint32_t wa[TILE_THREADS / 32], wb[TILE_THREADS / 32];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        wa[warp] = na;
        wb[warp] = nb;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t ta = 0, tb = 0;
        for (int w = 0; w < TILE_THREADS / 32; w++) {
            ta += wa[w];
            tb += wb[w];
        }
        a_cnt[blockIdx.x] = ta;
        b_cnt[blockIdx.x] = tb;
    }
}

/* Inclusive scan of a pair of counts across a warp (lane: the thread's lane). */
static __device__ __forceinline__ void warp_scan_pair(unsigned long long *a, unsigned long long *b, unsigned lane)
{
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long xa = __shfl_up_sync(FULL_MASK, *a, o);
        const unsigned long long xb = __shfl_up_sync(FULL_MASK, *b, o);
        if (lane >= (unsigned)o) {
            *a += xa;
            *b += xb;
        }
    }
}

/* One block of SCAN_THREADS: a_off[t], b_off[t] = the A and B entries of the tiles before t.
 * Thread i sums a contiguous run of tiles, the block scans the sums (warp shuffles, then the
 * warp totals), and each thread writes its run's offsets. */
static __global__ void __launch_bounds__(SCAN_THREADS)
    tile_scan_kernel(const uint32_t *a_cnt, const uint32_t *b_cnt, size_t tiles,
                     unsigned long long *a_off, unsigned long long *b_off)
{
    const size_t run = (tiles + SCAN_THREADS - 1) / SCAN_THREADS;
    size_t lo = (size_t)threadIdx.x * run;
    if (lo > tiles) lo = tiles;
    const size_t hi = lo + run < tiles ? lo + run : tiles;
    unsigned long long sa = 0, sb = 0;
    for (size_t t = lo; t < hi; t++) {
        sa += a_cnt[t];
        sb += b_cnt[t];
    }
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long ia = sa, ib = sb;
    warp_scan_pair(&ia, &ib, lane);
    __shared__ unsigned long long wa[SCAN_THREADS / 32], wb[SCAN_THREADS / 32];
    if (lane == 31) {
        wa[warp] = ia;
        wb[warp] = ib;
    }
    __syncthreads();
    if (warp == 0) { /* inclusive scan of the 32 warp totals; lane i alone touches entry i */
        unsigned long long xa = wa[lane], xb = wb[lane];
        warp_scan_pair(&xa, &xb, lane);
        wa[lane] = xa;
        wb[lane] = xb;
    }
    __syncthreads();
    unsigned long long ea = (warp ? wa[warp - 1] : 0ull) + ia - sa;
    unsigned long long eb = (warp ? wb[warp - 1] : 0ull) + ib - sb;
    for (size_t t = lo; t < hi; t++) {
        a_off[t] = ea;
        b_off[t] = eb;
        ea += a_cnt[t];
        eb += b_cnt[t];
    }
}

/* Block t writes the kept entries of tile t, TILE_THREADS consecutive entries per round, in
 * index order: a warp's ballot and the per-warp totals give each entry the A and B entries
 * before it. An entry at index j goes to position (A before j) + min(B before j, E) when it is
 * in A, to (A before j) + (B before j) when it is in B and (B before j) < E. Positions are
 * below `kept` by construction; the check only guards the message's bounds. */
static __global__ void __launch_bounds__(TILE_THREADS)
    tile_write_kernel(const float *v, size_t n, const select_state_t *st, const uint32_t *a_cnt,
                      const uint32_t *b_cnt, const unsigned long long *a_off,
                      const unsigned long long *b_off, size_t kept, unsigned char *msg)
{
    const classes_t c = classes_of(st);
    const unsigned long long e = st->e;
    const size_t tile = blockIdx.x, base = tile * TILE;
    unsigned long long run_a = a_off[tile], run_b = b_off[tile];
    /* the same for every thread of the block: the block leaves whole */
    if (a_cnt[tile] == 0 && (b_cnt[tile] == 0 || run_b >= e)) return;
    unsigned char *idx = msg + 4, *val = msg + 4 + 4 * kept;
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t below = (1u << lane) - 1u; /* the lanes before this one */
    __shared__ uint32_t wa[TILE_THREADS / 32], wb[TILE_THREADS / 32];
    for (int r = 0; r < TILE_ITEMS; r++) {
        const size_t j = base + (size_t)r * TILE_THREADS + threadIdx.x;
        bool a = false, b = false;
        uint32_t bits = 0;
        if (j < n) {
            bits = __float_as_uint(v[j]);
            classify(c, bits & 0x7fffffffu, &a, &b);
        }
        const uint32_t ma = __ballot_sync(FULL_MASK, a), mb = __ballot_sync(FULL_MASK, b);
        if (lane == 0) {
            wa[warp] = (uint32_t)__popc(ma);
            wb[warp] = (uint32_t)__popc(mb);
        }
        __syncthreads();
        unsigned long long oa = 0, ob = 0, ta = 0, tb = 0;
        for (unsigned w = 0; w < TILE_THREADS / 32; w++) {
            if (w < warp) {
                oa += wa[w];
                ob += wb[w];
            }
            ta += wa[w];
            tb += wb[w];
        }
        const unsigned long long a_before = run_a + oa + (unsigned)__popc(ma & below);
        const unsigned long long b_before = run_b + ob + (unsigned)__popc(mb & below);
        unsigned long long pos = kept;
        if (a) pos = a_before + (b_before < e ? b_before : e);
        else if (b && b_before < e) pos = a_before + b_before;
        if (pos < kept) {
            dmsg_st_u32(idx + 4 * pos, (uint32_t)j);
            dmsg_st_u32(val + 4 * pos, bits);
        }
        run_a += ta;
        run_b += tb;
        __syncthreads(); /* wa/wb are rewritten by the next round */
    }
}

/* Writes the header `kept` and, when there is any, the kept entries under the classes now in
 * the state. */
static terse_status_t message_write(const float *d_v, size_t n, size_t kept, void *d_msg,
                                    void *d_scratch, cudaStream_t s)
{
    unsigned char *msg = (unsigned char *)d_msg;
    header_kernel<<<1, 1, 0, s>>>(msg, (uint32_t)kept);
    CUDA_CHECK_LAUNCH("topk: header_kernel");
    if (kept == 0 || n == 0) return TERSE_OK;
    const layout_t l = layout_of(d_scratch, n);
    const size_t tiles = tiles_of(n);
    tile_count_kernel<<<(unsigned)tiles, TILE_THREADS, 0, s>>>(d_v, n, l.st, l.a_cnt, l.b_cnt);
    CUDA_CHECK_LAUNCH("topk: tile_count_kernel");
    tile_scan_kernel<<<1, SCAN_THREADS, 0, s>>>(l.a_cnt, l.b_cnt, tiles, l.a_off, l.b_off);
    CUDA_CHECK_LAUNCH("topk: tile_scan_kernel");
    tile_write_kernel<<<(unsigned)tiles, TILE_THREADS, 0, s>>>(d_v, n, l.st, l.a_cnt, l.b_cnt,
                                                               l.a_off, l.b_off, kept, msg);
    CUDA_CHECK_LAUNCH("topk: tile_write_kernel");
    return TERSE_OK;
}

terse_status_t dtopk_message_top(const float *d_v, size_t n, size_t k, uint32_t hi, void *d_msg,
                                 void *d_scratch, cudaStream_t s)
{
    rule_top_kernel<<<1, 1, 0, s>>>((select_state_t *)d_scratch, hi);
    CUDA_CHECK_LAUNCH("topk: rule_top_kernel");
    return message_write(d_v, n, k, d_msg, d_scratch, s);
}

terse_status_t dtopk_message_first(const float *d_v, size_t n, size_t kept, uint32_t lo,
                                   uint32_t hi, void *d_msg, void *d_scratch, cudaStream_t s)
{
    /* A empty (1 > 0), B = [lo, hi], the first `kept` of B */
    rule_set_kernel<<<1, 1, 0, s>>>((select_state_t *)d_scratch, 1u, 0u, lo, hi,
                                    (unsigned long long)kept);
    CUDA_CHECK_LAUNCH("topk: rule_set_kernel");
    return message_write(d_v, n, kept, d_msg, d_scratch, s);
}

terse_status_t dtopk_message(const float *d_v, size_t n, size_t k, void *d_msg, void *d_scratch,
                             cudaStream_t s)
{
    if (k >= n) return dtopk_message_first(d_v, n, n, 0, DTOPK_KEY_ALL, d_msg, d_scratch, s);
    if (k == 0) return dtopk_message_first(d_v, n, 0, 0, DTOPK_KEY_ALL, d_msg, d_scratch, s);
    TERSE_CHECK(dtopk_threshold(d_v, 1, n, k, 0, DTOPK_KEY_ALL, d_scratch, s));
    return dtopk_message_top(d_v, n, k, DTOPK_KEY_ALL, d_msg, d_scratch, s);
}

/* ---- Decoding ------------------------------------------------------------------------------ */

static __global__ void __launch_bounds__(CUDA_THREADS)
    sparse_validate_kernel(const unsigned char *msg, size_t k, size_t count, uint32_t *bad)
{
    const unsigned char *idx = msg + 4;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < k;
         j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = dmsg_ld_u32(idx + 4 * j);
        if ((size_t)i >= count || (j > 0 && i <= dmsg_ld_u32(idx + 4 * (j - 1)))) *bad = 1;
    }
}

/* The indices are strictly increasing, so no two threads add to one element. */
static __global__ void __launch_bounds__(CUDA_THREADS)
    sparse_add_kernel(const unsigned char *msg, size_t k, float *out)
{
    const unsigned char *idx = msg + 4, *val = msg + 4 + 4 * k;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < k;
         j += (size_t)gridDim.x * blockDim.x) {
        const uint32_t i = dmsg_ld_u32(idx + 4 * j);
        out[i] = __fadd_rn(out[i], __uint_as_float(dmsg_ld_u32(val + 4 * j)));
    }
}

terse_status_t dsparse_decode_add(const void *d_msg, size_t bytes, size_t count, float *d_out,
                                  void *d_scratch, cudaStream_t s)
{
    if (bytes < 4) return TERSE_ERR_MISMATCH;
    const unsigned char *msg = (const unsigned char *)d_msg;
    uint32_t k;
    CUDA_CHECK(cudaMemcpyAsync(&k, msg, sizeof k, cudaMemcpyDeviceToHost, s), "topk: cudaMemcpyAsync");
    CUDA_CHECK(cudaStreamSynchronize(s), "topk: cudaStreamSynchronize");
    if ((size_t)k > count || bytes != 4 + 8 * (size_t)k) return TERSE_ERR_MISMATCH;
    if (k == 0) return TERSE_OK;
    /* validate all before touching out */
    select_state_t *st = (select_state_t *)d_scratch;
    CUDA_CHECK(cudaMemsetAsync(&st->bad, 0, sizeof st->bad, s), "topk: cudaMemsetAsync");
    sparse_validate_kernel<<<cuda_blocks(k), CUDA_THREADS, 0, s>>>(msg, k, count, &st->bad);
    CUDA_CHECK_LAUNCH("topk: sparse_validate_kernel");
    uint32_t bad;
    CUDA_CHECK(cudaMemcpyAsync(&bad, &st->bad, sizeof bad, cudaMemcpyDeviceToHost, s),
               "topk: cudaMemcpyAsync");
    CUDA_CHECK(cudaStreamSynchronize(s), "topk: cudaStreamSynchronize");
    if (bad) return TERSE_ERR_MISMATCH;
    sparse_add_kernel<<<cuda_blocks(k), CUDA_THREADS, 0, s>>>(msg, k, d_out);
    CUDA_CHECK_LAUNCH("topk: sparse_add_kernel");
    return TERSE_OK;
}

/* ---- Codec --------------------------------------------------------------------------------- */

static size_t topk_dscratch_bytes(const double *p, size_t count)
{
    (void)p;
    return dtopk_scratch_bytes(count);
}

static terse_status_t topk_dencode(const double *p, const codec_ctx_t *ctx, const float *d_in,
                                   size_t count, void *d_msg, size_t *bytes, void *d_scratch,
                                   void *stream)
{
    (void)ctx;
    if (count > UINT32_MAX)
        return terse_error(TERSE_ERR_ARG, "compressor topk on the device: %zu elements, at most %u "
                                          "(indices are uint32 on the wire)", count, UINT32_MAX);
    const size_t k = topk_k(p, count);
    TERSE_CHECK(dtopk_message(d_in, count, k, d_msg, d_scratch, cuda_stream(stream)));
    *bytes = 4 + 8 * k;
    return TERSE_OK;
}

static terse_status_t topk_ddecode_add(const double *p, const void *d_msg, size_t bytes,
                                       size_t count, float *d_out, void *d_scratch, void *stream)
{
    if (bytes > codec_topk_ops.max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    return dsparse_decode_add(d_msg, bytes, count, d_out, d_scratch, cuda_stream(stream));
}

extern "C" const dcodec_ops_t dcodec_topk_ops = {
    sizeof(dcodec_ops_t), &codec_topk_ops, 1, topk_dscratch_bytes, topk_dencode, topk_ddecode_add,
};
