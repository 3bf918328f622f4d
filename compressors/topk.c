/* TopK: keep the k entries of largest magnitude, ties broken by lower index.
 *
 * Selection is exact and O(n): a three-pass radix select on the bit pattern of |x| (which
 * orders like |x| for finite floats) finds the k-th largest magnitude T, then one pass keeps
 * every entry above T and the lowest-indexed entries equal to T until k are kept. No sort,
 * no scratch memory, and the result does not depend on anything but the input.
 *
 * Wire format (little-endian, as the host):  uint32 k | uint32 idx[k] | float val[k]
 * with idx strictly increasing. */
#include <math.h>
#include <string.h>

#include "codec.h"
#include "topk.h"

enum { P_DENSITY, P_K };

const param_def_t topk_params[TOPK_N_PARAMS] = {
    {"density", NAN, 0.0, 1.0, 1, 0, NULL},
    {"k", NAN, 1.0, 4294967295.0, 0, 1, NULL},
};

size_t topk_k(const double *p, size_t count)
{
    if (count == 0) return 0;
    if (!isnan(p[P_K])) return (size_t)p[P_K] < count ? (size_t)p[P_K] : count;
    double d = isnan(p[P_DENSITY]) ? TOPK_DEFAULT_DENSITY : p[P_DENSITY];
    size_t k = (size_t)(d * (double)count);
    if (k < 1) k = 1;
    return k < count ? k : count;
}

static terse_status_t topk_check(const double *p, size_t count)
{
    (void)count;
    if (!isnan(p[P_DENSITY]) && !isnan(p[P_K]))
        return terse_error(TERSE_ERR_ARG,
                           "compressor topk: give density=D or k=K, not both (got density=%g, k=%g)",
                           p[P_DENSITY], p[P_K]);
    return TERSE_OK;
}

static size_t topk_max_bytes(const double *p, size_t count)
{
    return 4 + 8 * topk_k(p, count);
}

static size_t topk_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0;
}

static inline uint32_t mag_key(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

/* Finds the threshold key T and how many entries equal to T are kept, so that exactly k
 * entries are kept. Requires 0 < k < n. */
static void topk_threshold(const float *restrict v, size_t n, size_t k, uint32_t *thr,
                           size_t *n_equal_kept)
{
    static const int shift[3] = {21, 10, 0};
    static const uint32_t width[3] = {2048, 2048, 1024};
    uint32_t prefix = 0;   /* the bits of T found so far, in place */
    uint32_t mask = 0;     /* which bits of the key prefix covers */
    size_t need = k;       /* entries still to keep among those matching prefix */
    for (int pass = 0; pass < 3; pass++) {
        uint32_t hist[2048] = {0};
        uint32_t bins = width[pass];
        for (size_t i = 0; i < n; i++) {
            uint32_t key = mag_key(v[i]);
            if ((key & mask) == prefix) hist[(key >> shift[pass]) & (bins - 1)]++;
        }
        uint32_t b = bins;
        size_t above = 0;
        while (b-- > 0) {
            if (above + hist[b] >= need) break;
            above += hist[b];
        }
        need -= above;
        prefix |= b << shift[pass];
        mask |= (bins - 1) << shift[pass];
    }
    *thr = prefix;
    *n_equal_kept = need;
}

size_t topk_select(const float *restrict v, size_t n, size_t k, uint32_t *restrict idx,
                   float *restrict val)
{
    if (k == 0) return 0;
    if (k >= n) {
        for (size_t i = 0; i < n; i++) { idx[i] = (uint32_t)i; val[i] = v[i]; }
        return n;
    }
    uint32_t thr;
    size_t eq_left;
    topk_threshold(v, n, k, &thr, &eq_left);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t key = mag_key(v[i]);
        if (key > thr || (key == thr && eq_left > 0)) {
            if (key == thr) eq_left--;
            idx[m] = (uint32_t)i;
            val[m] = v[i];
            m++;
        }
    }
    return m;
}

static size_t topk_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                          size_t count, void *restrict msg, void *restrict scratch)
{
    (void)ctx; (void)scratch;
    size_t k = topk_k(p, count);
    unsigned char *b = msg;
    uint32_t *idx = (uint32_t *)(b + 4);
    float *val = (float *)(b + 4 + 4 * k);
    size_t m = topk_select(in, count, k, idx, val);
    uint32_t k32 = (uint32_t)m;
    memcpy(b, &k32, 4);
    return 4 + 8 * m;
}

terse_status_t sparse_decode_add(const void *restrict msg, size_t bytes, size_t count,
                                 float *restrict out)
{
    if (bytes < 4) return TERSE_ERR_MISMATCH;
    uint32_t k;
    memcpy(&k, msg, 4);
    if ((size_t)k > count || bytes != 4 + 8 * (size_t)k) return TERSE_ERR_MISMATCH;
    const unsigned char *b = msg;
    const uint32_t *idx = (const uint32_t *)(b + 4);
    const float *val = (const float *)(b + 4 + 4 * (size_t)k);
    /* validate all before touching out: strictly increasing indices below count */
    for (size_t j = 0; j < k; j++)
        if (idx[j] >= count || (j > 0 && idx[j] <= idx[j - 1])) return TERSE_ERR_MISMATCH;
    for (size_t j = 0; j < k; j++) out[idx[j]] += val[j];
    return TERSE_OK;
}

static terse_status_t topk_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                      size_t count, float *restrict out, void *restrict scratch)
{
    (void)scratch;
    if (bytes > topk_max_bytes(p, count)) return TERSE_ERR_MISMATCH;
    return sparse_decode_add(msg, bytes, count, out);
}

const codec_ops_t codec_topk_ops = {
    sizeof(codec_ops_t), "topk", CODEC_PROTO_SPARSE,
    topk_check, topk_max_bytes, topk_scratch_bytes, topk_encode, topk_decode_add, NULL, 0,
};
