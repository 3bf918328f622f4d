/* Deep Gradient Compression (Lin et al., ICLR 2018; ALGORITHMS.md §6.2, which follows the
 * reference code synxlin/deep-gradient-compression line by line).
 *
 * The codec is the selection alone: estimate the threshold of the top r fraction of |v| from
 * a strided sample, adapt it (at most 10 times: x0.8 while fewer than 0.8 k entries pass it,
 * an exact top-k of the candidates when more than 1.3 k do), keep at most k = ceil(numel r)
 * entries. Momentum correction, factor masking, clipping and the warm-up schedule need
 * per-layer state and the step count, so they live in the protocol
 * (collectives/dgc_allgather.c); the codec alone (kernel bench, registry tests) selects at
 * the base density.
 *
 * Wire format: the TopK message, uint32 k | uint32 idx[k] increasing | float val[k]. */
#include <math.h>
#include <string.h>

#include "dgc.h"
#include "rng.h"
#include "simd.h"
#include "topk.h" /* and immintrin.h on x86 */

static const char *const dgc_schedules[] = {"paper", "geometric", NULL};

const param_def_t dgc_params[DGC_N_PARAMS] = {
    {"density", 0.001, 0.0, 1.0, 1, 0, NULL},
    {"sample", 0.01, 0.0, 1.0, 1, 0, NULL},
    {"momentum", 0.9, 0.0, 1.0, 0, 0, NULL},
    {"nesterov", 0.0, 0.0, 1.0, 0, 1, NULL},
    {"clip", NAN, 0.0, INFINITY, 1, 0, NULL},
    {"warmup", 0.0, 0.0, 1e12, 0, 1, NULL},
    {"schedule", DGC_SCHEDULE_PAPER, 0.0, 1.0, 0, 1, dgc_schedules},
};

/* The adaptation loop's constants (§6.2 defaults; the reference exposes them, terse does
 * not). The threshold is a float32 scalar there, scaled in float32: so here. */
#define DGC_MAX_ITERS 10
#define DGC_UPPER 1.3
#define DGC_LOWER 0.8
#define DGC_LOWER_F 0.8f

double dgc_density(const double *p, uint64_t step)
{
    const double base = p[DGC_DENSITY];
    if ((double)step >= p[DGC_WARMUP]) return base;
    double r;
    if (p[DGC_SCHEDULE] == DGC_SCHEDULE_GEOMETRIC) {
        /* the reference's default: coeff = base^(1/(warmup+1)), ratio = coeff^(e+1) */
        const double coeff = pow(base, 1.0 / (p[DGC_WARMUP] + 1.0));
        r = pow(coeff, (double)step + 1.0);
    } else {
        /* the paper's 4^-(e+1), exact in binary; below 2^-1074 it is 0 and base wins */
        r = step < 500 ? ldexp(1.0, -2 * ((int)step + 1)) : 0.0;
    }
    return r > base ? r : base;
}

dgc_plan_t dgc_plan(size_t numel, double r, double sample)
{
    dgc_plan_t pl = {numel, 0, numel, 0, 1};
    if (sample < 1.0) {
        const double cpr = ceil(2.0 / r);
        if ((double)numel > cpr) {
            /* large tensor: a stride = 1 (mod 32) at first, stepped down by 8 until there are
             * at least max(pct, cpr) samples; it stops at 1 at the latest, since
             * numel > cpr and numel >= pct */
            size_t pct = (size_t)ceil((double)numel * sample), most = pct > (size_t)cpr ? pct : (size_t)cpr;
            size_t stride = (size_t)ceil((double)numel / (double)most / 32.0) * 32 + 1;
            while (numel / stride < most) stride -= 8;
            pl.stride = stride;
            pl.num_samples = numel / stride;
        }
    }
    pl.top_k_samples = (size_t)ceil((double)pl.num_samples * r);
    pl.num_selects = (size_t)ceil((double)numel * r);
    if (pl.top_k_samples > pl.num_samples) pl.top_k_samples = pl.num_samples;
    if (pl.num_selects > numel) pl.num_selects = numel;
    return pl;
}

size_t dgc_max_selects(const double *p, size_t count)
{
    return dgc_plan(count, dgc_density(p, 0), p[DGC_SAMPLE]).num_selects;
}

int dgc_sparsifies(const double *p, size_t rows, size_t cols)
{
    return rows > 1 && cols > 1 && p[DGC_DENSITY] < 1.0;
}

size_t dgc_scratch_bytes(size_t count)
{
    return count * (sizeof(float) + sizeof(uint32_t));
}

/* ---- Counting the entries at or above a threshold ------------------------------------------
 * The adaptation counts |{j : |v_j| >= thr}| for up to 11 thresholds and then needs those
 * entries: the first count is usually the last, so each count also collects its entries
 * (index to ci, value to cv, in index order; the scratch has room for all n), and the pass
 * that decides leaves the candidates in place for the truncation or the exact top-k. Each
 * counting pass is one streaming pass over v.
 *
 * The comparison is the float one, fabsf(v) >= thr (false for a NaN), in both kernels: the
 * same instruction family, so they agree under any floating-point mode (denormals flushed or
 * not). 32 entries are tested at a time; a block without a candidate, the common case, costs
 * a few instructions, one with candidates is compacted without a branch per entry. */

#define COLLECT_BLOCK 32

/* The entries of v[i..n) at or above thr, appended to ci/cv after the c already there; the
 * new count. The tail after the whole blocks, in both kernels. */
static size_t collect_rest(const float *restrict v, size_t i, size_t n, float thr,
                           uint32_t *restrict ci, float *restrict cv, size_t c)
{
    for (; i < n; i++)
        if (fabsf(v[i]) >= thr) {
            ci[c] = (uint32_t)i;
            cv[c] = v[i];
            c++;
        }
    return c;
}

/* The block v[i .. i + 32) appended to ci/cv as collect_rest would: the new count. */
static size_t collect_block_scalar(const float *restrict v, size_t i, float thr,
                                   uint32_t *restrict ci, float *restrict cv, size_t c)
{
    int any = 0;
    for (size_t j = 0; j < COLLECT_BLOCK; j++) any |= fabsf(v[i + j]) >= thr;
    if (!any) return c;
    /* ci/cv have n entries and at most i + 32 <= n are written */
    for (size_t j = i; j < i + COLLECT_BLOCK; j++) {
        ci[c] = (uint32_t)j;
        cv[c] = v[j];
        c += fabsf(v[j]) >= thr;
    }
    return c;
}

static size_t collect_at_least_scalar(const float *restrict v, size_t n, float thr,
                                      uint32_t *restrict ci, float *restrict cv)
{
    size_t c = 0, i = 0;
    for (; i + COLLECT_BLOCK <= n; i += COLLECT_BLOCK) c = collect_block_scalar(v, i, thr, ci, cv, c);
    return collect_rest(v, i, n, thr, ci, cv, c);
}

#if SIMD_X86
SIMD_AVX2_FN static size_t collect_at_least_avx2(const float *restrict v, size_t n, float thr,
                                                 uint32_t *restrict ci, float *restrict cv)
{
    const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 t = _mm256_set1_ps(thr);
    size_t c = 0, i = 0;
    for (; i + COLLECT_BLOCK <= n; i += COLLECT_BLOCK) {
        uint32_t hit[COLLECT_BLOCK / 8], any = 0;
        for (int q = 0; q < COLLECT_BLOCK / 8; q++) {
            const __m256 a = _mm256_and_ps(_mm256_loadu_ps(v + i + 8 * q), mag);
            hit[q] = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, t, _CMP_GE_OQ));
            any |= hit[q];
        }
        if (!any) continue;
        /* 8 lanes stored at c, c <= i + 8 q: within the n entries */
        for (int q = 0; q < COLLECT_BLOCK / 8; q++) {
            const size_t at = i + 8 * (size_t)q;
            c += topk_compact8_avx2(v, at, hit[q], ci + c, cv + c);
        }
    }
    return collect_rest(v, i, n, thr, ci, cv, c);
}
#endif

/* |{j : |v_j| >= thr}|; the entries themselves to ci/cv (n entries each), in index order. */
static size_t collect_at_least(const float *restrict v, size_t n, float thr,
                               uint32_t *restrict ci, float *restrict cv)
{
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) return collect_at_least_avx2(v, n, thr, ci, cv);
#endif
    return collect_at_least_scalar(v, n, thr, ci, cv);
}

/* ---- The momentum step, alone or fused into the first count ---------------------------------
 * The protocol's momentum step writes u1 and v1 in full, and the first count of the
 * selection reads v1 in full: fused, the count compares each block of v1 while it is still
 * in registers, and the pass over v1 goes. The same pass checks g for NaN and infinity
 * (the engine's scan, which it then skips). The kernels compute dgc_next_u / dgc_next_v
 * with the same float operations in the same order.
 *
 * u1 and v1 are written once and not read again in the pass, so the AVX2 kernels store
 * them with streaming stores, which skip reading the old lines first, wherever both are
 * 32-byte aligned together. */

/* 1 if the float bits have an all-ones exponent: NaN or infinity */
static uint32_t nonfinite_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, 4);
    return (b & 0x7f800000u) == 0x7f800000u;
}

/* entries [i, e); whether g had a NaN or infinity there */
static uint32_t momentum_range(const dgc_momentum_t *mo, size_t i, size_t e)
{
    uint32_t bad = 0;
    for (; i < e; i++) {
        const float u1 = dgc_next_u(mo->u[i], mo->g[i], mo->coef, mo->m, mo->nesterov);
        mo->u1[i] = u1;
        mo->v1[i] = dgc_next_v(mo->v[i], u1, mo->g[i], mo->coef, mo->nesterov);
        bad |= nonfinite_bits(mo->g[i]);
    }
    return bad;
}

/* v1 at entry i, computed where it lies (for the threshold's samples) */
static float momentum_at(const dgc_momentum_t *mo, size_t i)
{
    const float u1 = dgc_next_u(mo->u[i], mo->g[i], mo->coef, mo->m, mo->nesterov);
    return dgc_next_v(mo->v[i], u1, mo->g[i], mo->coef, mo->nesterov);
}

static size_t momentum_collect_scalar(const dgc_momentum_t *mo, size_t n, float thr,
                                      uint32_t *restrict ci, float *restrict cv, uint32_t *bad)
{
    size_t c = 0, i = 0;
    for (; i + COLLECT_BLOCK <= n; i += COLLECT_BLOCK) {
        *bad |= momentum_range(mo, i, i + COLLECT_BLOCK);
        c = collect_block_scalar(mo->v1, i, thr, ci, cv, c);
    }
    *bad |= momentum_range(mo, i, n);
    return collect_rest(mo->v1, i, n, thr, ci, cv, c);
}

#if SIMD_X86
typedef struct {
    __m256 coef, m;
    __m256i expo, bad;     /* the exponent mask; lanes that met a NaN or infinity in g */
    int stream;            /* u1 and v1 32-byte aligned from here on: streaming stores */
} momentum_avx2_t;

SIMD_AVX2_FN static inline momentum_avx2_t momentum_avx2_init(const dgc_momentum_t *mo)
{
    momentum_avx2_t k;
    k.coef = _mm256_set1_ps(mo->coef);
    k.m = _mm256_set1_ps(mo->m);
    k.expo = _mm256_set1_epi32(0x7f800000);
    k.bad = _mm256_setzero_si256();
    k.stream = 0;
    return k;
}

/* The entries before the first at which u1 is 32-byte aligned (at most n), done in scalar;
 * k->stream says whether v1 is aligned there too. */
SIMD_AVX2_FN static inline size_t momentum_peel_avx2(const dgc_momentum_t *mo, size_t n, momentum_avx2_t *k,
                                                     uint32_t *bad)
{
    size_t peel = ((32 - ((uintptr_t)mo->u1 & 31)) & 31) / sizeof(float);
    if (((uintptr_t)mo->u1 & 3) != 0 || peel > n) peel = n;
    *bad |= momentum_range(mo, 0, peel);
    k->stream = ((uintptr_t)(mo->u1 + peel) & 31) == 0 && ((uintptr_t)(mo->v1 + peel) & 31) == 0;
    return peel;
}

/* u1 and v1 of the 8 entries at `at`, stored; v1 returned */
SIMD_AVX2_FN static inline __m256 momentum8_avx2(const dgc_momentum_t *mo, size_t at, momentum_avx2_t *k)
{
    const __m256 g = _mm256_loadu_ps(mo->g + at);
    k->bad = _mm256_or_si256(k->bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(g), k->expo), k->expo));
    const __m256 G = _mm256_mul_ps(g, k->coef);
    const __m256 u = _mm256_loadu_ps(mo->u + at), v = _mm256_loadu_ps(mo->v + at);
    __m256 u1, v1;
    if (mo->nesterov) {
        u1 = _mm256_mul_ps(_mm256_add_ps(u, G), k->m);
        v1 = _mm256_add_ps(_mm256_add_ps(v, u1), G);
    } else {
        u1 = _mm256_add_ps(_mm256_mul_ps(k->m, u), G);
        v1 = _mm256_add_ps(v, u1);
    }
    if (k->stream) {
        _mm256_stream_ps(mo->u1 + at, u1);
        _mm256_stream_ps(mo->v1 + at, v1);
    } else {
        _mm256_storeu_ps(mo->u1 + at, u1);
        _mm256_storeu_ps(mo->v1 + at, v1);
    }
    return v1;
}

/* the streaming stores ordered before anything reads u1 or v1; whether g had a NaN/Inf */
SIMD_AVX2_FN static inline uint32_t momentum_finish_avx2(const momentum_avx2_t *k)
{
    if (k->stream) _mm_sfence();
    return !_mm256_testz_si256(k->bad, k->bad);
}

SIMD_AVX2_FN static uint32_t momentum_apply_avx2(const dgc_momentum_t *mo, size_t n)
{
    momentum_avx2_t k = momentum_avx2_init(mo);
    uint32_t bad = 0;
    size_t i = momentum_peel_avx2(mo, n, &k, &bad);
    for (; i + 8 <= n; i += 8) (void)momentum8_avx2(mo, i, &k);
    bad |= momentum_finish_avx2(&k);
    return bad | momentum_range(mo, i, n);
}

SIMD_AVX2_FN static size_t momentum_collect_avx2(const dgc_momentum_t *mo, size_t n, float thr,
                                                 uint32_t *restrict ci, float *restrict cv, uint32_t *bad)
{
    const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 t = _mm256_set1_ps(thr);
    momentum_avx2_t k = momentum_avx2_init(mo);
    size_t i = momentum_peel_avx2(mo, n, &k, bad);
    size_t c = collect_rest(mo->v1, 0, i, thr, ci, cv, 0);
    for (; i + COLLECT_BLOCK <= n; i += COLLECT_BLOCK) {
        __m256 v1[COLLECT_BLOCK / 8];
        uint32_t hit[COLLECT_BLOCK / 8], any = 0;
        for (int q = 0; q < COLLECT_BLOCK / 8; q++) {
            v1[q] = momentum8_avx2(mo, i + 8 * (size_t)q, &k);
            hit[q] = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v1[q], mag), t, _CMP_GE_OQ));
            any |= hit[q];
        }
        if (!any) continue;
        /* from the registers: the streamed lines are not read back */
        for (int q = 0; q < COLLECT_BLOCK / 8; q++)
            c += topk_compact8_reg_avx2(v1[q], i + 8 * (size_t)q, hit[q], ci + c, cv + c);
    }
    *bad |= momentum_finish_avx2(&k);
    *bad |= momentum_range(mo, i, n);
    return collect_rest(mo->v1, i, n, thr, ci, cv, c);
}
#endif

/* the momentum step over [0, n); whether g had a NaN or infinity */
static uint32_t momentum_apply(const dgc_momentum_t *mo, size_t n)
{
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) return momentum_apply_avx2(mo, n);
#endif
    return momentum_range(mo, 0, n);
}

/* collect_at_least on v1 while the momentum step writes u1 and v1 */
static size_t momentum_collect(const dgc_momentum_t *mo, size_t n, float thr,
                               uint32_t *restrict ci, float *restrict cv, uint32_t *bad)
{
#if SIMD_X86
    if (simd_level() >= SIMD_AVX2) return momentum_collect_avx2(mo, n, thr, ci, cv, bad);
#endif
    return momentum_collect_scalar(mo, n, thr, ci, cv, bad);
}

/* dgc_select on v, or, when mo is set, dgc_momentum_select (v is then mo->v1, written here:
 * in full before the selection when nothing is sampled, during the first count otherwise). */
static size_t select_core(const dgc_plan_t *plan, uint64_t key, const float *v,
                          const dgc_momentum_t *mo, void *restrict msg, void *restrict scratch,
                          dgc_select_info_t *info, int *nonfinite)
{
    uint32_t bad = 0;
    const size_t n = plan->numel, k = plan->num_selects;
    unsigned char *b = msg;
    uint32_t *idx = (uint32_t *)(b + 4);
    dgc_select_info_t st = {0.0f, 0, 0, 0, 0};
    size_t kept;

    if (mo && (k == 0 || plan->num_samples == n)) bad = momentum_apply(mo, n);
    if (mo) v = mo->v1;
    if (k == 0) {
        kept = 0;
    } else if (plan->num_samples == n) {
        /* Every entry is a sample: the exact top-k. The reference takes the k-th largest |v|
         * as threshold and truncates {|v| >= thr} to its k lowest indices, which with ties at
         * the threshold can drop a larger entry of higher index (k zeros sent instead of a
         * few non-zeros); the exact top-k (ties: lower index) is what it means to compute. */
        kept = topk_select_scratch(v, n, k, idx, (float *)(b + 4 + 4 * k), scratch,
                                   dgc_scratch_bytes(n));
        st.candidates = kept;
    } else {
        /* scratch: n floats (the samples, then the candidates' values), then n uint32 (the
         * candidates' indices); what a step does not use is the next top-k's scratch */
        float *smp = scratch;
        uint32_t *cand = (uint32_t *)(smp + n);
        const size_t stride = plan->stride, start = (size_t)rng_below(key, 0, stride);
        const size_t ns = (n - start + stride - 1) / stride;  /* v[start::stride]              */
        if (mo)
            for (size_t j = 0; j < ns; j++) smp[j] = momentum_at(mo, start + j * stride);
        else
            for (size_t j = 0; j < ns; j++) smp[j] = v[start + j * stride];
        /* thr = min(topk(samples)): the top_k_samples-th largest sampled magnitude. The
         * message area holds the top-k's output (top_k_samples <= k). */
        const size_t tks = plan->top_k_samples;
        const float *sv = (const float *)(b + 4 + 4 * tks);
        size_t got = topk_select_scratch(smp, ns, tks, idx, (float *)(b + 4 + 4 * tks),
                                         smp + ns, (2 * n - ns) * sizeof *smp);
        float thr = INFINITY;
        for (size_t j = 0; j < got; j++)
            if (fabsf(sv[j]) < thr) thr = fabsf(sv[j]);
        size_t m = mo ? momentum_collect(mo, n, thr, cand, smp, &bad) : collect_at_least(v, n, thr, cand, smp);
        int decided = 0;
        while (st.iterations < DGC_MAX_ITERS) {
            if (m > k) {
                st.hierarchical = (double)m > (double)k * DGC_UPPER;
                decided = 1;
                break;
            }
            if ((double)m >= DGC_LOWER * (double)k) {
                decided = 1;
                break;
            }
            thr *= DGC_LOWER_F;
            m = collect_at_least(v, n, thr, cand, smp);
            st.iterations++;
        }
        st.exhausted = !decided;
        st.threshold = thr;
        st.candidates = m;
        if (st.hierarchical) {
            /* the exact top-k of the m > 1.3 k candidates */
            kept = topk_select_scratch(smp, m, k, idx, (float *)(b + 4 + 4 * k), smp + m,
                                       (n - m) * sizeof *smp);
            for (size_t q = 0; q < kept; q++) idx[q] = cand[idx[q]];
        } else {
            /* idx[:k]: the lowest indices that pass the threshold */
            kept = m < k ? m : k;
            memcpy(idx, cand, kept * sizeof *idx);
            memcpy(b + 4 + 4 * kept, smp, kept * sizeof *smp);
        }
    }
    const uint32_t k32 = (uint32_t)kept;
    memcpy(b, &k32, 4);
    if (info) *info = st;
    if (nonfinite) *nonfinite = bad != 0;
    return 4 + 8 * kept;
}

size_t dgc_select(const dgc_plan_t *plan, uint64_t key, const float *restrict v,
                  void *restrict msg, void *restrict scratch, dgc_select_info_t *info)
{
    return select_core(plan, key, v, NULL, msg, scratch, info, NULL);
}

size_t dgc_momentum_select(const dgc_plan_t *plan, uint64_t key, const dgc_momentum_t *mo,
                           void *restrict msg, void *restrict scratch, dgc_select_info_t *info,
                           int *nonfinite)
{
    return select_core(plan, key, NULL, mo, msg, scratch, info, nonfinite);
}

static size_t dgc_max_bytes(const double *p, size_t count)
{
    return 4 + 8 * dgc_max_selects(p, count);
}

static size_t dgc_codec_scratch(const double *p, size_t count)
{
    (void)p;
    return dgc_scratch_bytes(count);
}

static size_t dgc_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                         size_t count, void *restrict msg, void *restrict scratch)
{
    const dgc_plan_t plan = dgc_plan(count, p[DGC_DENSITY], p[DGC_SAMPLE]);
    return dgc_select(&plan, ctx ? ctx->key : 0, in, msg, scratch, NULL);
}

static terse_status_t dgc_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                     size_t count, float *restrict out, void *restrict scratch)
{
    (void)scratch;
    if (bytes > dgc_max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    return sparse_decode_add(msg, bytes, count, out);
}

const codec_ops_t codec_dgc_ops = {
    sizeof(codec_ops_t), "dgc", CODEC_PROTO_DGC,
    NULL, dgc_max_bytes, dgc_codec_scratch, dgc_encode, dgc_decode_add, NULL, 1,
};
