/* The sparse device codecs (compressors/cuda/topk.cu, randk.cu, dgc.cu) against their CPU
 * codecs: for each parameter setting, size and data set, the device message must equal the
 * CPU's byte for byte (and nothing past it may be written), and the device decode_add of the
 * device's message and of the CPU's message must equal the CPU decode_add bit for bit, a NaN
 * sum counting as equal to any NaN (the device's additions give the canonical NaN). Malformed
 * messages must be refused with TERSE_ERR_MISMATCH on both sides, the device's output left
 * untouched. Messages are also encoded to and decoded from odd device offsets.
 *
 * dgc runs at several densities and sample ratios, on planted vectors that force each branch
 * of the adaptation (exact, hierarchical, lowered threshold, truncation, ten lowerings), and
 * at the densities its warm-up schedule gives step by step (the codec's encode sees only its
 * parameters: a step e is the codec at density dgc_density(p, e)), compared with dgc_select
 * itself. Skipped (exit 77) without a CUDA device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dcodec.h"
#include "dgc.h"
#include "check.h"
#include "randk.h"
#include "rng.h"
#include "topk.h"

extern const codec_ops_t codec_topk_ops, codec_randk_ops;
extern const dcodec_ops_t dcodec_topk_ops, dcodec_randk_ops, dcodec_dgc_ops;

static void to_dev(void *d, const void *h, size_t n)
{
    if (n) GPU_OK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
}

static void to_host(void *h, const void *d, size_t n)
{
    if (n) GPU_OK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}

/* ---- Data ---------------------------------------------------------------------------------- */

enum { D_UNIFORM, D_TIES, D_SPECIAL, D_SPARSE, D_COUNT };
static const char *const dist_name[D_COUNT] = {"uniform", "ties", "special", "sparse"};

static uint64_t seed_state = 0x5eed;

static uint64_t next(void) { return rng_bits(0x7e57, seed_state++); }

static float unit(void) { return (float)(next() >> 40) * 0x1.0p-24f; }

/* ties: few levels, zeros of both signs; special: NaNs of several payloads and signs, both
 * infinities, subnormals, zeros, among normal numbers; sparse: mostly +0. */
static void fill(float *v, size_t n, int dist)
{
    static const uint32_t specials[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fffffffu,
                                        0x7f800000u, 0xff800000u, 0x00000001u, 0x80000003u,
                                        0x00000000u, 0x80000000u, 0x007fffffu, 0x3f800000u};
    for (size_t i = 0; i < n; i++) {
        switch (dist) {
        case D_UNIFORM: v[i] = 2.0f * unit() - 1.0f; break;
        case D_TIES: {
            const int l = (int)(next() % 9) - 4;
            v[i] = l == 0 && (next() & 1) ? -0.0f : (float)l * 0.25f;
            break;
        }
        case D_SPECIAL:
            v[i] = next() % 8 == 0 ? from_bits(specials[next() % (sizeof specials / sizeof specials[0])])
                                   : 4.0f * unit() - 2.0f;
            break;
        default: v[i] = next() % 50 == 0 ? 2.0f * unit() - 1.0f : 0.0f; break;
        }
    }
}

/* ---- Comparisons --------------------------------------------------------------------------- */

static int is_nan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

/* Index of the first element where a and b differ (NaN equals NaN), or n. */
static size_t first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint32_t x = to_bits(a[i]), y = to_bits(b[i]);
        if (x != y && !(is_nan_bits(x) && is_nan_bits(y))) return i;
    }
    return n;
}

static size_t first_byte_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return n;
}

/* ---- One case ------------------------------------------------------------------------------ */

#define GUARD 16       /* bytes past max_bytes that no encode may touch */
#define PATTERN 0xa5

/* Decodes msg (host bytes) on the device at byte offset `off` of a fresh buffer into a copy of
 * out0; returns the status and leaves the result in res. */
static terse_status_t dev_decode(const dcodec_ops_t *d, const double *p, const void *msg,
                                 size_t bytes, size_t n, const float *out0, float *res,
                                 void *d_scr, size_t off)
{
    unsigned char *d_msg = dmalloc(bytes + off + 8);
    float *d_out = dmalloc(n * 4);
    to_dev(d_msg + off, msg, bytes);
    to_dev(d_out, out0, n * 4);
    terse_status_t st = d->decode_add(p, d_msg + off, bytes, n, d_out, d_scr, NULL);
    GPU_OK(cudaDeviceSynchronize());
    to_host(res, d_out, n * 4);
    GPU_OK(cudaFree(d_msg));
    GPU_OK(cudaFree(d_out));
    return st;
}

/* A malformed message: both decoders refuse it and leave their output as it was. */
static void expect_refused(const dcodec_ops_t *d, const double *p, const void *msg, size_t bytes,
                           size_t n, const float *out0, void *h_scr, void *d_scr, const char *what,
                           const char *how)
{
    float *h = xmalloc(n * 4), *r = xmalloc(n * 4);
    memcpy(h, out0, n * 4);
    terse_status_t hs = d->host->decode_add(p, msg, bytes, n, h, h_scr);
    CHECK(hs == TERSE_ERR_MISMATCH,
          "%s: %s: CPU decode_add gave %d, the test's message is not malformed", what, how, (int)hs);
    terse_status_t ds = dev_decode(d, p, msg, bytes, n, out0, r, d_scr, 0);
    CHECK(ds == TERSE_ERR_MISMATCH, "%s: %s: device decode_add gave %d, not MISMATCH", what, how,
          (int)ds);
    CHECK(memcmp(r, out0, n * 4) == 0, "%s: %s: device output touched", what, how);
    free(h);
    free(r);
}

/* Sparse messages (topk, dgc): bad lengths, k, order and range. */
static void malformed_sparse(const dcodec_ops_t *d, const double *p, const unsigned char *msg,
                             size_t bytes, size_t n, const float *out0, void *h_scr, void *d_scr,
                             const char *what)
{
    uint32_t k;
    memcpy(&k, msg, 4);
    unsigned char *m = xmalloc(bytes + 16);
    expect_refused(d, p, msg, 3, n, out0, h_scr, d_scr, what, "3 bytes");
    if (bytes >= 5) expect_refused(d, p, msg, bytes - 1, n, out0, h_scr, d_scr, what, "one byte short");
    memcpy(m, msg, bytes);
    const uint32_t big = (uint32_t)n + 1;
    memcpy(m, &big, 4);
    expect_refused(d, p, m, bytes, n, out0, h_scr, d_scr, what, "k above count");
    if (k >= 1) {
        memcpy(m, msg, bytes);
        const uint32_t out_of_range = (uint32_t)n;
        memcpy(m + 4 + 4 * (size_t)(k - 1), &out_of_range, 4);
        expect_refused(d, p, m, bytes, n, out0, h_scr, d_scr, what, "last index = count");
    }
    if (k >= 2) {
        memcpy(m, msg, bytes);
        memcpy(m + 8, m + 4, 4);
        expect_refused(d, p, m, bytes, n, out0, h_scr, d_scr, what, "repeated index");
        memcpy(m, msg, bytes);
        memcpy(m + 4, msg + 8, 4);
        memcpy(m + 8, msg + 4, 4);
        expect_refused(d, p, m, bytes, n, out0, h_scr, d_scr, what, "decreasing indices");
        /* an otherwise valid message one entry longer than max_bytes allows: the indices and
         * then one past the last, the values and then a zero */
        const size_t mb = d->host->max_bytes(p, n);
        uint32_t last;
        memcpy(&last, msg + 4 + 4 * (size_t)(k - 1), 4);
        if (4 + 8 * ((size_t)k + 1) > mb && (size_t)last + 1 < n) {
            unsigned char *l = xmalloc(bytes + 8);
            const uint32_t k1 = k + 1, next_index = last + 1;
            const float zero = 0.0f;
            memcpy(l, &k1, 4);
            memcpy(l + 4, msg + 4, 4 * (size_t)k);
            memcpy(l + 4 + 4 * (size_t)k, &next_index, 4);
            memcpy(l + 8 + 4 * (size_t)k, msg + 4 + 4 * (size_t)k, 4 * (size_t)k);
            memcpy(l + 8 + 8 * (size_t)k, &zero, 4);
            expect_refused(d, p, l, bytes + 8, n, out0, h_scr, d_scr, what, "above max_bytes");
            free(l);
        }
    }
    free(m);
}

static void malformed_randk(const dcodec_ops_t *d, const double *p, const unsigned char *msg,
                            size_t bytes, size_t n, const float *out0, void *h_scr, void *d_scr,
                            const char *what)
{
    unsigned char *m = xmalloc(bytes + 8);
    expect_refused(d, p, msg, bytes - 4, n, out0, h_scr, d_scr, what, "one value short");
    memcpy(m, msg, bytes);
    memset(m + bytes, 0, 4);
    expect_refused(d, p, m, bytes + 4, n, out0, h_scr, d_scr, what, "one value long");
    uint32_t k;
    memcpy(&k, msg + 8, 4);
    k++;
    memcpy(m + 8, &k, 4);
    expect_refused(d, p, m, bytes, n, out0, h_scr, d_scr, what, "k field off by one");
    free(m);
}

/* Encodes `in` with both codecs and compares everything; returns 1 when the messages agree. */
static int run_case(const dcodec_ops_t *d, const double *p, const codec_ctx_t *ctx, const float *in,
                    size_t n, const char *what, int malformed, int misaligned)
{
    const codec_ops_t *h = d->host;
    const size_t mb = h->max_bytes(p, n), hsb = h->scratch_bytes(p, n), dsb = d->scratch_bytes(p, n);
    void *h_scr = hsb ? xmalloc(hsb) : NULL;
    unsigned char *hmsg = xmalloc(mb), *dmsg = xmalloc(mb + GUARD);
    const size_t hbytes = h->encode(p, ctx, in, n, hmsg, h_scr);

    float *d_in = dmalloc(n * 4);
    void *d_scr = dmalloc(dsb);
    unsigned char *d_msg = dmalloc(mb + GUARD + 8);
    to_dev(d_in, in, n * 4);
    int same = 1;
    const size_t offs[3] = {0, 1, 6};
    for (int o = 0; o < (misaligned ? 3 : 1); o++) {
        const size_t off = offs[o];
        GPU_OK(cudaMemset(d_msg, PATTERN, mb + GUARD + 8));
        size_t dbytes = 0;
        terse_status_t st = d->encode(p, ctx, d_in, n, d_msg + off, &dbytes, d_scr, NULL);
        GPU_OK(cudaDeviceSynchronize());
        CHECK(st == TERSE_OK, "%s: device encode gave %d", what, (int)st);
        if (st != TERSE_OK) {
            same = 0;
            break;
        }
        to_host(dmsg, d_msg + off, mb + GUARD);
        CHECK(dbytes == hbytes, "%s (offset %zu): device message %zu bytes, CPU %zu", what, off,
              dbytes, hbytes);
        if (dbytes != hbytes) {
            same = 0;
            break;
        }
        const size_t at = first_byte_diff(hmsg, dmsg, hbytes);
        CHECK(at == hbytes,
              "%s (offset %zu): messages differ at byte %zu of %zu (CPU %02x, device %02x)", what,
              off, at, hbytes, at < hbytes ? hmsg[at] : 0, at < hbytes ? dmsg[at] : 0);
        size_t touched = hbytes;
        while (touched < mb + GUARD && dmsg[touched] == PATTERN) touched++;
        CHECK(touched == mb + GUARD, "%s (offset %zu): byte %zu past the %zu-byte message written",
              what, off, touched, hbytes);
        if (at != hbytes) same = 0;
    }

    /* decode_add: the CPU's reference, then the device on the device's and the CPU's message */
    float *out0 = xmalloc(n * 4), *href = xmalloc(n * 4), *res = xmalloc(n * 4);
    fill(out0, n, D_UNIFORM);
    if (n > 3) out0[n / 2] = from_bits(0x7fc00123u); /* a NaN in the output stays a NaN */
    memcpy(href, out0, n * 4);
    terse_status_t hs = h->decode_add(p, hmsg, hbytes, n, href, h_scr);
    CHECK(hs == TERSE_OK, "%s: CPU decode_add gave %d", what, (int)hs);
    if (same) {
        terse_status_t ds = dev_decode(d, p, dmsg, hbytes, n, out0, res, d_scr, 0);
        CHECK(ds == TERSE_OK, "%s: device decode_add of its message gave %d", what, (int)ds);
        size_t at = first_diff(href, res, n);
        CHECK(at == n, "%s: decoded sums differ at %zu: CPU %a device %a", what, at,
              at < n ? href[at] : 0.0f, at < n ? res[at] : 0.0f);
    }
    for (int o = 0; o < (misaligned ? 3 : 1); o++) {
        terse_status_t ds = dev_decode(d, p, hmsg, hbytes, n, out0, res, d_scr, offs[o]);
        CHECK(ds == TERSE_OK, "%s: device decode_add of the CPU message (offset %zu) gave %d", what,
              offs[o], (int)ds);
        size_t at = first_diff(href, res, n);
        CHECK(at == n, "%s: decoding the CPU message (offset %zu): sums differ at %zu: CPU %a device %a",
              what, offs[o], at, at < n ? href[at] : 0.0f, at < n ? res[at] : 0.0f);
    }
    if (malformed) {
        if (d == &dcodec_randk_ops) malformed_randk(d, p, hmsg, hbytes, n, out0, h_scr, d_scr, what);
        else malformed_sparse(d, p, hmsg, hbytes, n, out0, h_scr, d_scr, what);
    }
    free(out0);
    free(href);
    free(res);
    free(h_scr);
    free(hmsg);
    free(dmsg);
    GPU_OK(cudaFree(d_in));
    GPU_OK(cudaFree(d_scr));
    GPU_OK(cudaFree(d_msg));
    return same;
}

static const size_t sizes[] = {0, 1, 7, 1000, 4097, (size_t)1 << 20};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static void unset(double p[TERSE_MAX_PARAMS])
{
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) p[i] = NAN;
}

/* ---- topk ---------------------------------------------------------------------------------- */

static void test_topk(void)
{
    /* {density, k}: NAN = not given (the codec's default density 0.01 when both are) */
    static const double settings[][2] = {{NAN, NAN}, {0.01, NAN}, {0.1, NAN}, {0.5, NAN}, {1.0, NAN},
                                         {NAN, 1},   {NAN, 5},    {NAN, 1000}, {NAN, 5000}};
    for (size_t a = 0; a < sizeof settings / sizeof settings[0]; a++)
        for (size_t b = 0; b < N_SIZES; b++)
            for (int dist = 0; dist < D_COUNT; dist++) {
                const size_t n = sizes[b];
                if (n == ((size_t)1 << 20) && dist != D_SPECIAL && a != 1 && a != 6) continue;
                double p[TERSE_MAX_PARAMS];
                unset(p);
                p[0] = settings[a][0];
                p[1] = settings[a][1];
                float *v = xmalloc(n * 4);
                fill(v, n, dist);
                char what[128];
                snprintf(what, sizeof what, "topk density=%g k=%g n=%zu %s", p[0], p[1], n,
                         dist_name[dist]);
                run_case(&dcodec_topk_ops, p, NULL, v, n, what, dist == D_TIES && n <= 4097,
                         dist == D_SPECIAL && (n == 1000 || n == 4097));
                free(v);
            }
}

/* ---- randk --------------------------------------------------------------------------------- */

static void test_randk(void)
{
    /* {density, seed, unbiased} */
    static const double settings[][3] = {
        {0.01, 0, 0}, {0.1, 7, 1}, {0.5, 123, 1}, {1.0, 3, 0}, {0.001, 99, 0}};
    for (size_t a = 0; a < sizeof settings / sizeof settings[0]; a++)
        for (size_t b = 0; b < N_SIZES; b++)
            for (int c = 0; c < 2; c++) {
                const size_t n = sizes[b];
                double p[TERSE_MAX_PARAMS];
                unset(p);
                p[RANDK_DENSITY] = settings[a][0];
                p[RANDK_SEED] = settings[a][1];
                p[RANDK_UNBIASED] = settings[a][2];
                const codec_ctx_t ctx = {0x1234567890abcdefull + a * 31 + b, 0, n, 1};
                const int dist = c ? D_SPECIAL : D_UNIFORM;
                float *v = xmalloc(n * 4);
                fill(v, n, dist);
                char what[128];
                snprintf(what, sizeof what, "randk density=%g seed=%g unbiased=%g ctx=%s n=%zu %s",
                         p[RANDK_DENSITY], p[RANDK_SEED], p[RANDK_UNBIASED], c ? "yes" : "NULL", n,
                         dist_name[dist]);
                run_case(&dcodec_randk_ops, p, c ? &ctx : NULL, v, n, what, n > 0 && n <= 4097,
                         n == 1000 || n == 4097);
                free(v);
            }
    /* a message's key chooses its indices: a peer's message with another key decodes alike */
    const size_t n = 4097;
    double p[TERSE_MAX_PARAMS];
    unset(p);
    p[RANDK_DENSITY] = 0.2;
    p[RANDK_SEED] = 5;
    p[RANDK_UNBIASED] = 0;
    float *v = xmalloc(n * 4), *out0 = xmalloc(n * 4), *href = xmalloc(n * 4), *res = xmalloc(n * 4);
    fill(v, n, D_UNIFORM);
    fill(out0, n, D_UNIFORM);
    const size_t mb = codec_randk_ops.max_bytes(p, n);
    unsigned char *msg = xmalloc(mb);
    void *h_scr = xmalloc(codec_randk_ops.scratch_bytes(p, n));
    void *d_scr = dmalloc(dcodec_randk_ops.scratch_bytes(p, n));
    const size_t bytes = codec_randk_ops.encode(p, NULL, v, n, msg, h_scr);
    for (uint64_t key = 1; key < 6; key++) {
        const uint64_t k64 = rng_mix(key * 977);
        memcpy(msg, &k64, 8);
        memcpy(href, out0, n * 4);
        CHECK(codec_randk_ops.decode_add(p, msg, bytes, n, href, h_scr) == TERSE_OK, "randk peer key");
        CHECK(dev_decode(&dcodec_randk_ops, p, msg, bytes, n, out0, res, d_scr, 0) == TERSE_OK,
              "randk peer key: device refused");
        size_t at = first_diff(href, res, n);
        CHECK(at == n, "randk peer key %llu: sums differ at %zu", (unsigned long long)k64, at);
    }
    free(v);
    free(out0);
    free(href);
    free(res);
    free(msg);
    free(h_scr);
    GPU_OK(cudaFree(d_scr));
}

/* ---- dgc ----------------------------------------------------------------------------------- */

static void dgc_params_set(double p[TERSE_MAX_PARAMS], double density, double sample)
{
    unset(p);
    p[DGC_DENSITY] = density;
    p[DGC_SAMPLE] = sample;
    p[DGC_MOMENTUM] = 0.9;
    p[DGC_NESTEROV] = 0;
    p[DGC_WARMUP] = 0;
    p[DGC_SCHEDULE] = DGC_SCHEDULE_PAPER;
}

static int seen_exact, seen_hier, seen_adapt, seen_trunc, seen_exhausted;

/* Notes which branch of dgc_select the CPU took for (p, ctx, v). */
static void dgc_note_branch(const double *p, const codec_ctx_t *ctx, const float *v, size_t n)
{
    const dgc_plan_t pl = dgc_plan(n, p[DGC_DENSITY], p[DGC_SAMPLE]);
    void *msg = xmalloc(4 + 8 * pl.num_selects), *scr = xmalloc(dgc_scratch_bytes(n));
    dgc_select_info_t info;
    dgc_select(&pl, ctx ? ctx->key : 0, v, msg, scr, &info);
    if (pl.num_selects == 0) {
    } else if (pl.num_samples == n) {
        seen_exact = 1;
    } else {
        seen_hier |= info.hierarchical;
        seen_adapt |= info.iterations > 0;
        seen_trunc |= !info.hierarchical && info.candidates > pl.num_selects;
        seen_exhausted |= info.exhausted;
    }
    free(msg);
    free(scr);
}

static void dgc_case(const double *p, const codec_ctx_t *ctx, const float *v, size_t n, const char *what,
                     int malformed, int misaligned)
{
    dgc_note_branch(p, ctx, v, n);
    run_case(&dcodec_dgc_ops, p, ctx, v, n, what, malformed, misaligned);
}

static void test_dgc(void)
{
    static const double dens[] = {0.001, 0.01, 0.1, 0.3, 1.0};
    static const double samples[] = {0.01, 0.1, 1.0};
    char what[160];
    for (size_t a = 0; a < sizeof dens / sizeof dens[0]; a++)
        for (size_t s = 0; s < sizeof samples / sizeof samples[0]; s++)
            for (size_t b = 0; b < N_SIZES; b++)
                for (int dist = 0; dist < D_COUNT; dist++) {
                    const size_t n = sizes[b];
                    if (n == ((size_t)1 << 20) && (dist == D_SPARSE || s == 1)) continue;
                    double p[TERSE_MAX_PARAMS];
                    dgc_params_set(p, dens[a], samples[s]);
                    const codec_ctx_t ctx = {next(), 0, n, 1};
                    float *v = xmalloc(n * 4);
                    fill(v, n, dist);
                    snprintf(what, sizeof what, "dgc density=%g sample=%g n=%zu %s", dens[a], samples[s],
                             n, dist_name[dist]);
                    dgc_case(p, &ctx, v, n, what, dist == D_TIES && n >= 1000 && n <= 4097,
                             dist == D_UNIFORM && n == 4097);
                    free(v);
                }

    /* planted: the samples v[start::stride] decide the first threshold */
    const size_t n = 100000;
    double p[TERSE_MAX_PARAMS];
    dgc_params_set(p, 0.01, 0.01);
    const dgc_plan_t pl = dgc_plan(n, 0.01, 0.01);
    const codec_ctx_t ctx = {99, 0, n, 1};
    const size_t start = (size_t)rng_below(ctx.key, 0, pl.stride);
    float *v = xmalloc(n * 4);
    /* samples small, the rest large: every entry passes, an exact cut among ties */
    for (size_t i = 0; i < n; i++) v[i] = 1.0f;
    for (size_t j = 0; start + j * pl.stride < n; j++) v[start + j * pl.stride] = 0.5f;
    dgc_case(p, &ctx, v, n, "dgc planted hierarchical", 1, 1);
    /* samples large, a few mid values: the threshold is lowered ten times (test_dgc.c) */
    for (size_t t = 0; t < 2; t++) {
        for (size_t i = 0; i < n; i++) v[i] = 0.001f;
        for (size_t j = 0; j < 500 && start + j * pl.stride < n; j++) v[start + j * pl.stride] = 1.0f;
        for (size_t j = 0, i = 0; j < (t ? 400 : 200); i++)
            if (v[i] != 1.0f) {
                v[i] = 0.12f;
                j++;
            }
        dgc_case(p, &ctx, v, n, "dgc planted ten lowerings", 0, 0);
    }
    /* samples large, the rest just below: a few lowerings, then a truncation or a cut */
    for (size_t t = 0; t < 3; t++) {
        for (size_t i = 0; i < n; i++) v[i] = 0.9f * (0.5f + 0.5f * unit());
        for (size_t j = 0; start + j * pl.stride < n; j++) v[start + j * pl.stride] = 1.0f + (float)t;
        dgc_case(p, &ctx, v, n, "dgc planted lowered threshold", 0, 0);
    }
    /* the sampled threshold lands on ties: many entries equal to it */
    fill(v, n, D_TIES);
    dgc_case(p, &ctx, v, n, "dgc ties at the threshold", 1, 0);

    /* warm-up: the codec ignores it (it encodes at the base density) ... */
    fill(v, n, D_UNIFORM);
    for (int sched = 0; sched < 2; sched++) {
        double q[TERSE_MAX_PARAMS];
        dgc_params_set(q, 0.01, 0.01);
        q[DGC_WARMUP] = 4;
        q[DGC_SCHEDULE] = sched;
        snprintf(what, sizeof what, "dgc warmup=4 schedule=%d", sched);
        dgc_case(q, &ctx, v, n, what, 0, 0);
        /* ... and a step e of the protocol is the codec at density dgc_density(q, e): compared
         * with dgc_select at that step's plan */
        for (uint64_t e = 0; e < 6; e++) {
            const double r = dgc_density(q, e);
            double pe[TERSE_MAX_PARAMS];
            dgc_params_set(pe, r, 0.01);
            snprintf(what, sizeof what, "dgc schedule=%d step %llu density %g", sched,
                     (unsigned long long)e, r);
            dgc_case(pe, &ctx, v, n, what, 0, 0);
            const dgc_plan_t pe_plan = dgc_plan(n, r, 0.01);
            const size_t mb = 4 + 8 * pe_plan.num_selects;
            unsigned char *ref = xmalloc(mb), *got = xmalloc(mb);
            void *scr = xmalloc(dgc_scratch_bytes(n));
            void *d_scr = dmalloc(dcodec_dgc_ops.scratch_bytes(pe, n));
            float *d_v = dmalloc(n * 4);
            unsigned char *d_msg = dmalloc(mb);
            const size_t rb = dgc_select(&pe_plan, ctx.key, v, ref, scr, NULL);
            to_dev(d_v, v, n * 4);
            size_t gb = 0;
            CHECK(dcodec_dgc_ops.encode(pe, &ctx, d_v, n, d_msg, &gb, d_scr, NULL) == TERSE_OK, "%s",
                  what);
            GPU_OK(cudaDeviceSynchronize());
            CHECK(gb == rb, "%s: %zu bytes, dgc_select %zu", what, gb, rb);
            if (gb == rb) {
                to_host(got, d_msg, gb);
                CHECK(memcmp(ref, got, gb) == 0, "%s: differs from dgc_select", what);
            }
            free(ref);
            free(got);
            free(scr);
            GPU_OK(cudaFree(d_scr));
            GPU_OK(cudaFree(d_v));
            GPU_OK(cudaFree(d_msg));
        }
    }
    free(v);
    CHECK(seen_exact && seen_hier && seen_adapt && seen_trunc && seen_exhausted,
          "dgc branches not all exercised: exact %d hierarchical %d lowered %d truncated %d "
          "ten lowerings %d",
          seen_exact, seen_hier, seen_adapt, seen_trunc, seen_exhausted);
}

int main(void)
{
    gpu_test_require("test_cuda_sparse", 0);
    test_topk();
    test_randk();
    test_dgc();
    return check_report("test_cuda_sparse");
}
