/* qsgd on the device: the CUDA counterpart of compressors/qsgd.c and qsgd_pack.c (max-min
 * quantisation per bucket, levels bit-packed), with the same wire message and the same
 * decoded sums. The format and the arithmetic are documented in qsgd.c; in short, for
 * count elements in nb = ceil(count / bucket) buckets:
 *
 *   nb x (float32 lo | float32 hi) | levels: ceil(count * bits / 8) bytes, level i at bits
 *   [i * bits, (i + 1) * bits) of one little-endian bit stream, the unused high bits 0
 *
 * Bitwise, every path of the CPU reproduced with the same IEEE operations in the same order
 * (the _rn intrinsics: never contracted into a multiply-add and rounded to nearest even,
 * whatever --fmad says; denormals must be kept, nvcc's default, so no -ftz=true and hence no
 * --use_fast_math):
 *   - lo and hi are the bucket's first smallest and first largest element (the CPU's serial
 *     scan keeps the first of equal values, which decides the sign of a zero): the device
 *     reduces (value, index) pairs, ties going to the lower index, so any reduction order
 *     gives the serial scan's answer. A bucket holding an Inf or a NaN (isfinite, as the
 *     CPU's x - x == 0) gets the header NaN NaN, written as the bit pattern 0x7fc00000 that
 *     the CPU's NAN has, and levels 0.
 *   - the plan (qsgd_plan): scale = L / ((double)hi - lo) in double, and for stochastic
 *     rounding fscale = fl32(L 2^16 / fl32(hi - lo)), 0 where either is not finite.
 *   - levels: stochastic with fscale > 0, in fixed point ((int)((x - lo) * fscale) + v) >>
 *     16; otherwise in double (int)(((double)x - lo) * scale + v 2^-16), v = 0x8000 for round
 *     to nearest; then min(level, L). v = rng_bits16(key, offset + j) for element j, key =
 *     rng_mix(ctx->key ^ seed * 0x9e3779b97f4a7c15), offset = ctx->offset: rng.h's own
 *     functions, so the draws are the CPU's, the block key of each 2^33 draws included.
 *   - decode: (float)((double)lo + level * step), step = ((double)hi - lo) / L, at most hi,
 *     then one float add into out.
 * A NaN in a decoded sum (a NaN bucket) stays NaN; its payload may differ, since the GPU's
 * float add returns its own canonical NaN.
 *
 * Kernels. encode: (1) the range: one warp per segment of up to QSGD_SEG elements of one
 * bucket; a bucket of at most QSGD_SEG elements is one segment and its warp writes the
 * header, larger ones leave a (value, index) pair per segment in scratch and (2) one warp
 * per bucket merges its segments and writes the header; (3) one thread per group of eight
 * elements computes their levels from the header (the plan is a function of lo and hi) and
 * stores the `bits` bytes that eight levels fill exactly (fewer for the last group), so no
 * two threads write the same byte. decode: one pass validates every header and the padding
 * bits, setting a flag in scratch; decode_add reads the flag back (it synchronises the
 * stream) and only then adds, one thread per group of eight. encode only enqueues. Every
 * message access is byte-wise: the message may start at any offset of the caller's buffer. */
#include <math.h>

#include "common.cuh"

extern "C" {
#include "qsgd.h"
#include "rng.h"
}

/* Elements of one bucket that one warp scans in the range pass. */
#define QSGD_SEG 1024
/* No element yet (an empty segment of the last, shorter bucket). */
#define QSGD_NONE 0xffffffffu
/* The CPU's NAN (the default quiet NaN), as written in the NaN bucket's header. */
#define QSGD_NAN_BITS 0x7fc00000u
/* Where the range partials start in scratch; the decode flag sits at 0. */
#define QSGD_SCRATCH_PARTS 16

/* The smallest and largest elements seen, with their indices in the bucket (QSGD_NONE while
 * none is seen), and whether all were finite. */
typedef struct {
    float lo, hi;
    uint32_t ilo, ihi;
    uint32_t finite;
} qsgd_range_t;

/* qsgd.c's qsgd_cfg, checked: the parameter table guarantees these ranges, and a bucket
 * index must fit the 32-bit indices above. */
typedef struct {
    unsigned bits;
    size_t bucket;
    int stochastic;
} qsgd_dcfg_t;

static terse_status_t qsgd_dcfg(const double *p, const char *what, qsgd_dcfg_t *c)
{
    if (!p) return terse_error(TERSE_ERR_ARG, "qsgd %s: NULL parameters", what);
    const qsgd_dcfg_t r = {(unsigned)p[QSGD_BITS], (size_t)p[QSGD_BUCKET], p[QSGD_STOCHASTIC] != 0};
    if (r.bits < 1 || r.bits > 8 || r.bucket < 1 || r.bucket >= QSGD_NONE)
        return terse_error(TERSE_ERR_ARG, "qsgd %s: bits=%u (1..8) or bucket=%zu (1..2^32-2) out of range", what,
                           r.bits, r.bucket);
    *c = r;
    return TERSE_OK;
}

/* The layout of the range pass: nb buckets of spb segments each. */
typedef struct {
    size_t nb, spb, nseg;
} qsgd_geom_t;

static qsgd_geom_t qsgd_geom(const qsgd_dcfg_t *c, size_t count)
{
    qsgd_geom_t g = {0, 0, 0};
    if (count == 0) return g;
    const size_t longest = count < c->bucket ? count : c->bucket;
    g.nb = (count + c->bucket - 1) / c->bucket;
    g.spb = (longest + QSGD_SEG - 1) / QSGD_SEG;
    g.nseg = g.nb * g.spb;
    return g;
}

static size_t qsgd_d_scratch_bytes(const double *p, size_t count)
{
    qsgd_dcfg_t c = {}; /* set by qsgd_dcfg; initialised for the host compiler's flow analysis */
    if (qsgd_dcfg(p, "scratch_bytes", &c) != TERSE_OK) return QSGD_SCRATCH_PARTS;
    const qsgd_geom_t g = qsgd_geom(&c, count);
    return QSGD_SCRATCH_PARTS + (g.spb > 1 ? g.nseg * sizeof(qsgd_range_t) : 0);
}

/* ---- Device helpers --------------------------------------------------------------------- */

static __device__ inline float qsgd_load_f32(const unsigned char *b)
{
    return __uint_as_float(b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24);
}

static __device__ inline void qsgd_store_u32(unsigned char *b, uint32_t u)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(u >> (8 * i));
}

/* a := the merge of a and o: the smaller value, on equal values (+0 and -0 included) the
 * lower index, so that the result is the serial scan's whatever the merge order. */
static __device__ inline void qsgd_range_merge(qsgd_range_t &a, const qsgd_range_t &o)
{
    a.finite &= o.finite;
    if (o.ilo != QSGD_NONE && (a.ilo == QSGD_NONE || o.lo < a.lo || (o.lo == a.lo && o.ilo < a.ilo))) {
        a.lo = o.lo;
        a.ilo = o.ilo;
    }
    if (o.ihi != QSGD_NONE && (a.ihi == QSGD_NONE || o.hi > a.hi || (o.hi == a.hi && o.ihi < a.ihi))) {
        a.hi = o.hi;
        a.ihi = o.ihi;
    }
}

/* The merge of the 32 lanes' ranges, in lane 0. Every lane of the warp must call it. */
static __device__ inline void qsgd_range_warp(qsgd_range_t &r)
{
    for (int off = 16; off > 0; off >>= 1) {
        qsgd_range_t o;
        o.lo = __shfl_down_sync(0xffffffffu, r.lo, off);
        o.hi = __shfl_down_sync(0xffffffffu, r.hi, off);
        o.ilo = __shfl_down_sync(0xffffffffu, r.ilo, off);
        o.ihi = __shfl_down_sync(0xffffffffu, r.ihi, off);
        o.finite = __shfl_down_sync(0xffffffffu, r.finite, off);
        qsgd_range_merge(r, o); /* lanes past 31 - off read their own: a no-op merge */
    }
}

/* Header of bucket b: lo | hi, or the NaN pair when an element is not finite. */
static __device__ inline void qsgd_write_header(unsigned char *msg, size_t b, const qsgd_range_t &r)
{
    qsgd_store_u32(msg + QSGD_HEADER * b, r.finite ? __float_as_uint(r.lo) : QSGD_NAN_BITS);
    qsgd_store_u32(msg + QSGD_HEADER * b + 4, r.finite ? __float_as_uint(r.hi) : QSGD_NAN_BITS);
}

/* qsgd.c's qsgd_bucket_t, from a header (lo, hi finite with lo <= hi, or NaN NaN). */
typedef struct {
    float lo, hi;
    float fscale;  /* L 2^16 / (hi - lo) in float; 0 where this or hi - lo overflows */
    int flat;      /* !(lo < hi): every level 0                                    */
    double scale;  /* L / (hi - lo) in double                                      */
} qsgd_plan_t;

static __device__ inline qsgd_plan_t qsgd_plan_of(const unsigned char *hdr, unsigned L)
{
    qsgd_plan_t p;
    p.lo = qsgd_load_f32(hdr);
    p.hi = qsgd_load_f32(hdr + 4);
    p.flat = !(p.lo < p.hi); /* a NaN pair is flat too */
    p.scale = 0.0;
    p.fscale = 0.0f;
    if (!p.flat) {
        p.scale = __ddiv_rn((double)L, __dsub_rn((double)p.hi, (double)p.lo));
        const float r = __fsub_rn(p.hi, p.lo), s = __fdiv_rn((float)(L << 16), r);
        p.fscale = isfinite(r) && isfinite(s) ? s : 0.0f;
    }
    return p;
}

/* qsgd_level_fixed and qsgd_level_double, chosen as qsgd_quantize chooses. */
static __device__ inline unsigned qsgd_level_of(float x, const qsgd_plan_t &p, unsigned L, int stochastic, uint32_t v)
{
    if (p.flat) return 0;
    if (stochastic && p.fscale > 0.0f) {
        /* 0 <= Q < 2^24 + 4: the conversion is exact and the sum cannot wrap */
        const uint32_t l = ((uint32_t)(int32_t)__fmul_rn(__fsub_rn(x, p.lo), p.fscale) + v) >> 16;
        return l < L ? l : L;
    }
    const double q = __dmul_rn(__dsub_rn((double)x, (double)p.lo), p.scale);
    const int l = (int)__dadd_rn(q, __dmul_rn((double)v, 0x1.0p-16)); /* >= 0: truncation is floor */
    return l < (int)L ? (unsigned)l : L;
}

/* ---- Encode ---------------------------------------------------------------------------- */

/* (1) One warp per segment: piece `s % spb` of bucket `s / spb`. The loop runs whole warps
 * (its bound depends on the warp only), so every lane reaches the shuffles. */
static __global__ void qsgd_range_kernel(const float *in, size_t count, size_t bucket, size_t spb, size_t nseg,
                                         unsigned char *msg, qsgd_range_t *part)
{
    const unsigned lane = threadIdx.x & 31u;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t s = warp; s < nseg; s += nwarps) {
        const size_t b = s / spb, b0 = b * bucket;
        const size_t m = count - b0 < bucket ? count - b0 : bucket;
        const size_t start = (s % spb) * QSGD_SEG;
        const size_t end = start + QSGD_SEG < m ? start + QSGD_SEG : m; /* <= start: empty */
        qsgd_range_t r = {0.0f, 0.0f, QSGD_NONE, QSGD_NONE, 1u};
        /* a lane's indices increase, so a strict compare keeps its first of equal values */
        for (size_t j = start + lane; j < end; j += 32) {
            const float v = in[b0 + j];
            r.finite &= isfinite(v) ? 1u : 0u;
            if (r.ilo == QSGD_NONE || v < r.lo) {
                r.lo = v;
                r.ilo = (uint32_t)j;
            }
            if (r.ihi == QSGD_NONE || v > r.hi) {
                r.hi = v;
                r.ihi = (uint32_t)j;
            }
        }
        qsgd_range_warp(r);
        if (lane == 0) {
            if (spb == 1)
                qsgd_write_header(msg, b, r);
            else
                part[s] = r;
        }
    }
}

/* (2) One warp per bucket of more than QSGD_SEG elements: the merge of its segments. */
static __global__ void qsgd_combine_kernel(const qsgd_range_t *part, size_t nb, size_t spb, unsigned char *msg)
{
    const unsigned lane = threadIdx.x & 31u;
    const size_t warp = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t b = warp; b < nb; b += nwarps) {
        qsgd_range_t r = {0.0f, 0.0f, QSGD_NONE, QSGD_NONE, 1u};
        for (size_t i = lane; i < spb; i += 32) qsgd_range_merge(r, part[b * spb + i]);
        qsgd_range_warp(r);
        if (lane == 0) qsgd_write_header(msg, b, r);
    }
}

/* (3) One thread per group of eight elements: their levels, packed into the `bits` bytes
 * at g * bits of the stream. A group may span buckets (bucket < 8 or a boundary inside). */
static __global__ void qsgd_quantize_pack_kernel(const float *in, size_t count, size_t bucket, size_t nb,
                                                 unsigned bits, int stochastic, uint64_t key, uint64_t offset,
                                                 unsigned char *msg)
{
    const unsigned L = (1u << bits) - 1;
    unsigned char *stream = msg + QSGD_HEADER * nb;
    const size_t groups = (count + 7) / 8, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const size_t e0 = 8 * g;
        const unsigned n8 = count - e0 < 8 ? (unsigned)(count - e0) : 8u;
        size_t b = e0 / bucket, bend = (b + 1) * bucket;
        qsgd_plan_t pl = qsgd_plan_of(msg + QSGD_HEADER * b, L);
        uint64_t block = UINT64_MAX; /* the 2^33-draw block whose key bkey holds */
        uint32_t bkey = 0;
        uint64_t w = 0;
        for (unsigned k = 0; k < n8; k++) {
            const size_t e = e0 + k;
            if (e >= bend) { /* e grows by 1 and a bucket is >= 1 long: one step at most */
                b++;
                bend += bucket;
                pl = qsgd_plan_of(msg + QSGD_HEADER * b, L);
            }
            uint32_t v = 0x8000u; /* round to nearest: v 2^-16 = 1/2 */
            if (stochastic && !pl.flat) {
                const uint64_t idx = offset + e;
                if (idx >> 33 != block) {
                    block = idx >> 33;
                    bkey = rng_block_key(key, block);
                }
                v = rng_bits16_at(bkey, idx);
            }
            w |= (uint64_t)qsgd_level_of(in[e], pl, L, stochastic, v) << (k * bits);
        }
        const unsigned nbytes = n8 == 8 ? bits : (n8 * bits + 7) / 8;
        for (unsigned i = 0; i < nbytes; i++) stream[g * bits + i] = (unsigned char)(w >> (8 * i));
    }
}

static terse_status_t qsgd_d_encode(const double *p, const codec_ctx_t *ctx, const float *d_in, size_t count,
                                    void *d_msg, size_t *bytes, void *d_scratch, void *stream)
{
    qsgd_dcfg_t c = {}; /* set by qsgd_dcfg; initialised for the host compiler's flow analysis */
    TERSE_CHECK(qsgd_dcfg(p, "encode", &c));
    const size_t total = codec_qsgd_ops.max_bytes(p, count);
    if (count == 0) {
        *bytes = total;
        return TERSE_OK;
    }
    if (!d_in || !d_msg || !d_scratch) return terse_error(TERSE_ERR_ARG, "qsgd encode: NULL device buffer");
    const qsgd_geom_t g = qsgd_geom(&c, count);
    const uint64_t key = rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[QSGD_SEED] * 0x9e3779b97f4a7c15ull));
    const uint64_t offset = ctx ? ctx->offset : 0;
    const cudaStream_t s = cuda_stream(stream);
    unsigned char *msg = static_cast<unsigned char *>(d_msg);
    qsgd_range_t *part = reinterpret_cast<qsgd_range_t *>(static_cast<unsigned char *>(d_scratch) + QSGD_SCRATCH_PARTS);

    qsgd_range_kernel<<<cuda_blocks(g.nseg * 32), CUDA_THREADS, 0, s>>>(d_in, count, c.bucket, g.spb, g.nseg, msg,
                                                                        part);
    CUDA_CHECK_LAUNCH("qsgd encode: range kernel launch");
    if (g.spb > 1) {
        qsgd_combine_kernel<<<cuda_blocks(g.nb * 32), CUDA_THREADS, 0, s>>>(part, g.nb, g.spb, msg);
        CUDA_CHECK_LAUNCH("qsgd encode: range merge kernel launch");
    }
    qsgd_quantize_pack_kernel<<<cuda_blocks((count + 7) / 8), CUDA_THREADS, 0, s>>>(
        d_in, count, c.bucket, g.nb, c.bits, c.stochastic, key, offset, msg);
    CUDA_CHECK_LAUNCH("qsgd encode: quantise kernel launch");
    *bytes = total;
    return TERSE_OK;
}

/* ---- Decode ---------------------------------------------------------------------------- */

/* Sets *bad unless every header is finite with lo <= hi or the NaN pair, and the padding
 * bits of the stream's last byte are 0: qsgd_decode_add's checks. */
static __global__ void qsgd_validate_kernel(const unsigned char *msg, size_t nb, size_t count, unsigned bits,
                                            unsigned *bad)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x; b < nb; b += stride) {
        const float lo = qsgd_load_f32(msg + QSGD_HEADER * b), hi = qsgd_load_f32(msg + QSGD_HEADER * b + 4);
        const bool ordered = lo <= hi && isfinite(lo) && isfinite(hi);
        if (!ordered && !(isnan(lo) && isnan(hi))) atomicOr(bad, 1u);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        const size_t tail = count * bits % 8;
        if (tail && msg[QSGD_HEADER * nb + count * bits / 8] >> tail) atomicOr(bad, 1u);
    }
}

/* out[e] += the value of level e, one thread per group of eight levels (`bits` bytes). */
static __global__ void qsgd_decode_add_kernel(const unsigned char *msg, size_t count, size_t bucket, size_t nb,
                                              unsigned bits, float *out)
{
    const unsigned L = (1u << bits) - 1;
    const unsigned char *stream = msg + QSGD_HEADER * nb;
    const size_t groups = (count + 7) / 8, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const size_t e0 = 8 * g;
        const unsigned n8 = count - e0 < 8 ? (unsigned)(count - e0) : 8u;
        const unsigned nbytes = n8 == 8 ? bits : (n8 * bits + 7) / 8;
        uint64_t w = 0;
        for (unsigned i = 0; i < nbytes; i++) w |= (uint64_t)stream[g * bits + i] << (8 * i);
        size_t b = e0 / bucket, bend = (b + 1) * bucket;
        float lo = qsgd_load_f32(msg + QSGD_HEADER * b), hi = qsgd_load_f32(msg + QSGD_HEADER * b + 4);
        double step = __ddiv_rn(__dsub_rn((double)hi, (double)lo), (double)L);
        for (unsigned k = 0; k < n8; k++) {
            const size_t e = e0 + k;
            if (e >= bend) {
                b++;
                bend += bucket;
                lo = qsgd_load_f32(msg + QSGD_HEADER * b);
                hi = qsgd_load_f32(msg + QSGD_HEADER * b + 4);
                step = __ddiv_rn(__dsub_rn((double)hi, (double)lo), (double)L);
            }
            const unsigned l = (unsigned)(w >> (k * bits)) & L;
            float v = __double2float_rn(__dadd_rn((double)lo, __dmul_rn((double)l, step)));
            v = v > hi ? hi : v; /* a NaN bucket stays NaN: the comparison is false */
            out[e] = __fadd_rn(out[e], v);
        }
    }
}

static terse_status_t qsgd_d_decode_add(const double *p, const void *d_msg, size_t bytes, size_t count,
                                        float *d_out, void *d_scratch, void *stream)
{
    qsgd_dcfg_t c = {}; /* set by qsgd_dcfg; initialised for the host compiler's flow analysis */
    TERSE_CHECK(qsgd_dcfg(p, "decode_add", &c));
    if (bytes != codec_qsgd_ops.max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    if (count == 0) return TERSE_OK;
    if (!d_msg || !d_out || !d_scratch) return terse_error(TERSE_ERR_ARG, "qsgd decode_add: NULL device buffer");
    const qsgd_geom_t g = qsgd_geom(&c, count);
    const cudaStream_t s = cuda_stream(stream);
    const unsigned char *msg = static_cast<const unsigned char *>(d_msg);
    unsigned *bad = static_cast<unsigned *>(d_scratch);

    CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, s), "qsgd decode_add: cudaMemsetAsync");
    qsgd_validate_kernel<<<cuda_blocks(g.nb), CUDA_THREADS, 0, s>>>(msg, g.nb, count, c.bits, bad);
    CUDA_CHECK_LAUNCH("qsgd decode_add: validation kernel launch");
    unsigned verdict = 1;
    CUDA_CHECK(cudaMemcpyAsync(&verdict, bad, sizeof verdict, cudaMemcpyDeviceToHost, s),
               "qsgd decode_add: cudaMemcpyAsync of the verdict");
    CUDA_CHECK(cudaStreamSynchronize(s), "qsgd decode_add: cudaStreamSynchronize");
    if (verdict) return TERSE_ERR_MISMATCH;

    qsgd_decode_add_kernel<<<cuda_blocks((count + 7) / 8), CUDA_THREADS, 0, s>>>(msg, count, c.bucket, g.nb, c.bits,
                                                                                 d_out);
    CUDA_CHECK_LAUNCH("qsgd decode_add: kernel launch");
    return TERSE_OK;
}

extern "C" const dcodec_ops_t dcodec_qsgd_ops = {
    sizeof(dcodec_ops_t), &codec_qsgd_ops, 1, qsgd_d_scratch_bytes, qsgd_d_encode, qsgd_d_decode_add,
};
