/* The elementwise device codecs (compressors/cuda/cast.cu, onebit.cu, qsgd.cu) against their
 * CPU codecs (cast.c, onebit.c, qsgd.c): none, fp16, bf16, onebit and qsgd, for several
 * parameter settings, sizes 0, 1, 7, 1000, 4097 and 2^20 + 3, and inputs with ties, signed
 * zeros, NaN, Inf, subnormals and ranges that overflow float. For each case:
 *   - the device encode writes the CPU's message byte for byte, of the CPU's length, and
 *     nothing outside it (guard bytes around, at byte offsets 0..3 of the device buffer, so
 *     that the byte-wise paths for a message at an odd address run too);
 *   - the device decode_add of the CPU's message adds the CPU's values bit for bit (a NaN
 *     matches any NaN: the GPU's float add does not keep NaN payloads), and returns the
 *     CPU's status;
 *   - messages one byte too long or too short, and messages with a bad field (qsgd: a
 *     header with lo > hi, an Inf, one NaN, padding bits; onebit: a negative, NaN or Inf
 *     scale, padding bits) give TERSE_ERR_MISMATCH on both sides, with out untouched on the
 *     device; edge cases that are valid (qsgd's NaN pair, a flat bucket with levels; onebit's
 *     -0 scale; random bytes for the casts) decode as on the CPU.
 * onebit's scale comes from a tree sum on the device, proved or recomputed in the CPU's
 * order (onebit.cu); the "tie" input makes the scale an exact rounding tie, so that every
 * such case takes the recomputation. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcodec.h"
#include "check.h"
#include "onebit.h"
#include "qsgd.h"

extern const dcodec_ops_t dcodec_none_ops, dcodec_fp16_ops, dcodec_bf16_ops, dcodec_onebit_ops, dcodec_qsgd_ops;

/* ---- Inputs ---------------------------------------------------------------------------- */

enum { IN_RANDOM, IN_TIES, IN_ZEROS, IN_SPECIAL, IN_WIDE, IN_TINY, IN_TIE, IN_KINDS };
static const char *const in_names[IN_KINDS] = {"random", "ties", "zeros", "special", "wide", "tiny", "tie"};

/* random: spread over eight binades; ties: a few values, signed zeros among them; zeros: +0
 * and -0 only (a bucket's header keeps the first); special: NaN with a payload, +-Inf, a
 * subnormal, large values among random ones; wide: +-3e38 with small values (hi - lo
 * overflows float); tiny: a few subnormals (qsgd's float scale overflows); tie: x0 = n,
 * x1 = n 2^-24 (even n) or 3 n 2^-24 (odd n), the rest 0, so that onebit's l1 scale, 1 +
 * 2^-24 or 1 + 3 2^-24 exactly, is a rounding tie between two floats, which rounds down
 * (to 1) or up (to 1 + 2^-22): a wrong choice of either end of the tree's interval fails. */
static void fill(float *x, size_t n, int kind)
{
    static const float tie_values[] = {-1.0f, -0.5f, -0.0f, 0.0f, 0.5f, 1.0f, 2.0f};
    for (size_t j = 0; j < n; j++) {
        const uint64_t u = next_u64();
        float v = next_f() * (float)(1u << (u % 8));
        switch (kind) {
        case IN_TIES: v = tie_values[(u >> 8) % 7]; break;
        case IN_ZEROS: v = (u >> 8) % 3 ? 0.0f : -0.0f; break;
        case IN_SPECIAL:
            switch ((u >> 8) % 64) {
            case 0: v = 0.0f; break;
            case 1: v = -0.0f; break;
            case 2: v = from_bits(0x7fc00123u); break;
            case 3: v = from_bits(0xffa00001u); break; /* a signalling NaN, negative */
            case 4: v = INFINITY; break;
            case 5: v = -INFINITY; break;
            case 6: v = 1e-40f; break;
            case 7: v = 3e37f; break;
            default: break;
            }
            /* keep a few NaN-free and Inf-free stretches: only every fourth block of 700 */
            if ((j / 700) % 4 && !isfinite(v)) v = 0.25f;
            break;
        case IN_WIDE: v = (u >> 8) % 5 == 0 ? ((u >> 16) & 1 ? 3e38f : -3e38f) : v * 1e-3f; break;
        case IN_TINY: v = from_bits((uint32_t)((u >> 8) % 6)) * ((u >> 16) & 1 ? 1.0f : -1.0f); break;
        case IN_TIE: v = j == 0 ? (float)n : j == 1 ? (float)n * (n % 2 ? 0x3.0p-24f : 0x1.0p-24f) : 0.0f; break;
        default: break;
        }
        x[j] = v;
    }
}

/* ---- Comparisons ----------------------------------------------------------------------- */

/* The first index where a and b differ (a NaN matches any NaN), or n. */
static size_t float_diff(const float *a, const float *b, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (to_bits(a[j]) != to_bits(b[j]) && !(isnan(a[j]) && isnan(b[j]))) return j;
    return n;
}

static size_t byte_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (a[j] != b[j]) return j;
    return n;
}

/* ---- The device side ------------------------------------------------------------------- */

#define GUARD 8

typedef struct {
    cudaStream_t stream;
    float *d_in, *d_out;
    unsigned char *d_buf; /* GUARD + 3 + the largest message + GUARD */
    size_t buf_bytes;
} gpu_bufs_t;

/* Decodes msg (bytes long) into out0 on both sides; compares status and values; when the
 * CPU says MISMATCH, the device's out must be out0 bit for bit. */
static void check_decode(const gpu_bufs_t *dv, const dcodec_ops_t *d, const double *p, const unsigned char *msg,
                         size_t bytes, size_t n, const float *out0, size_t off, const char *label, const char *what)
{
    const codec_ops_t *h = d->host;
    float *out_c = malloc((n + 1) * sizeof *out_c), *out_d = malloc((n + 1) * sizeof *out_d);
    const size_t hs = h->scratch_bytes(p, n), ds = d->scratch_bytes(p, n);
    void *scr = malloc(hs + 1);
    void *d_scr = NULL;
    if (ds) GPU_OK(cudaMalloc(&d_scr, ds));
    memcpy(out_c, out0, n * sizeof *out_c);
    const terse_status_t sc = h->decode_add(p, msg, bytes, n, out_c, hs ? scr : NULL);

    unsigned char *d_msg = dv->d_buf + GUARD + off;
    if (bytes) GPU_OK(cudaMemcpy(d_msg, msg, bytes, cudaMemcpyHostToDevice));
    if (n) GPU_OK(cudaMemcpy(dv->d_out, out0, n * sizeof *out0, cudaMemcpyHostToDevice));
    const terse_status_t sd = d->decode_add(p, d_msg, bytes, n, dv->d_out, d_scr, dv->stream);
    GPU_OK(cudaStreamSynchronize(dv->stream));
    GPU_OK(cudaGetLastError());
    if (n) GPU_OK(cudaMemcpy(out_d, dv->d_out, n * sizeof *out_d, cudaMemcpyDeviceToHost));

    checks++;
    if (sd != sc) {
        FAIL("%s, %s: device decode_add returns %d, CPU %d", label, what, (int)sd, (int)sc);
    } else if (sc == TERSE_OK) {
        const size_t j = float_diff(out_c, out_d, n);
        if (j < n)
            FAIL("%s, %s: decoded out[%zu] = %a (0x%08x) on the device, %a (0x%08x) on the CPU", label, what, j,
                 out_d[j], to_bits(out_d[j]), out_c[j], to_bits(out_c[j]));
    } else if (memcmp(out_d, out0, n * sizeof *out0) != 0) {
        FAIL("%s, %s: a rejected message changed out on the device", label, what);
    }
    free(out_c);
    free(out_d);
    free(scr);
    if (d_scr) GPU_OK(cudaFree(d_scr));
}

/* A copy of msg with a field broken (or set to a valid edge value); 0 when `variant` does
 * not apply to this codec or size. */
static int mutate(const dcodec_ops_t *d, const double *p, size_t n, unsigned char *m, size_t bytes, int variant)
{
    const char *name = d->host->name;
    if (strcmp(name, "onebit") == 0) {
        const float scales[] = {-1.0f, NAN, INFINITY, -0.0f, FLT_MAX, 1e-42f};
        if (variant < 6) {
            memcpy(m, &scales[variant], 4);
            return 1;
        }
        if (variant == 6 && n % 8) {
            m[bytes - 1] |= 0x80; /* bit 7 >= n % 8: padding */
            return 1;
        }
        return 0;
    }
    if (strcmp(name, "qsgd") == 0) {
        const size_t bucket = (size_t)p[QSGD_BUCKET], nb = (n + bucket - 1) / bucket, bits = (size_t)p[QSGD_BITS];
        if (nb == 0) return 0;
        const size_t at = variant % 2 ? QSGD_HEADER * (nb - 1) : 0; /* the first or the last bucket */
        const float pairs[][2] = {{1.0f, 0.0f}, {NAN, 1.0f}, {-INFINITY, 0.0f}, {0.0f, INFINITY}, {NAN, NAN},
                                  {5.0f, 5.0f}, {-0.0f, 0.0f}, {-3e38f, 3e38f}};
        if (variant < 16) {
            memcpy(m + at, pairs[variant / 2], 4);
            memcpy(m + at + 4, &pairs[variant / 2][1], 4);
            /* give the valid ones levels other than 0 */
            for (size_t i = QSGD_HEADER * nb; i < bytes; i++) m[i] = (unsigned char)(0x5a ^ i);
            if (n * bits % 8) m[bytes - 1] &= (unsigned char)((1u << (n * bits % 8)) - 1);
            return 1;
        }
        if (variant == 16 && n * bits % 8) {
            m[bytes - 1] |= 0x80;
            return 1;
        }
        return 0;
    }
    /* the casts validate nothing but the length: random bytes are a valid message */
    if (variant == 0) {
        for (size_t i = 0; i < bytes; i++) m[i] = (unsigned char)next_u64();
        return 1;
    }
    return 0;
}

/* One codec, parameters, context, input and message offset: encode on both sides, then
 * decode (see the header). */
static void check_case(const gpu_bufs_t *dv, const dcodec_ops_t *d, const double *p, const codec_ctx_t *ctx,
                       const float *x, size_t n, size_t off, const char *label)
{
    const codec_ops_t *h = d->host;
    const size_t maxb = h->max_bytes(p, n), hs = h->scratch_bytes(p, n), ds = d->scratch_bytes(p, n);
    if (GUARD + 3 + maxb + 1 + GUARD > dv->buf_bytes) {
        FAIL("%s: message of %zu bytes exceeds the test's buffer", label, maxb);
        return;
    }
    unsigned char *msg_c = malloc(maxb + 1), *msg_d = malloc(maxb + 1 + 2 * GUARD + 3);
    void *scr = malloc(hs + 1);
    void *d_scr = NULL;
    if (ds) GPU_OK(cudaMalloc(&d_scr, ds));

    const size_t bytes_c = h->encode(p, ctx, x, n, msg_c, hs ? scr : NULL);

    if (n) GPU_OK(cudaMemcpy(dv->d_in, x, n * sizeof *x, cudaMemcpyHostToDevice));
    const size_t span = GUARD + off + maxb + GUARD;
    GPU_OK(cudaMemset(dv->d_buf, 0xa5, span));
    size_t bytes_d = (size_t)-1;
    const terse_status_t s = d->encode(p, ctx, dv->d_in, n, dv->d_buf + GUARD + off, &bytes_d, d_scr, dv->stream);
    GPU_OK(cudaStreamSynchronize(dv->stream));
    GPU_OK(cudaGetLastError());
    GPU_OK(cudaMemcpy(msg_d, dv->d_buf, span, cudaMemcpyDeviceToHost));

    checks++;
    if (s != TERSE_OK) {
        FAIL("%s: device encode returns %d", label, (int)s);
    } else if (bytes_d != bytes_c) {
        FAIL("%s: device message of %zu bytes, CPU %zu", label, bytes_d, bytes_c);
    } else {
        const size_t j = byte_diff(msg_d + GUARD + off, msg_c, bytes_c);
        if (j < bytes_c)
            FAIL("%s: message byte %zu of %zu is 0x%02x on the device, 0x%02x on the CPU", label, j, bytes_c,
                 msg_d[GUARD + off + j], msg_c[j]);
        for (size_t i = 0; i < span; i++)
            if ((i < GUARD + off || i >= GUARD + off + bytes_c) && msg_d[i] != 0xa5) {
                FAIL("%s: device encode wrote byte %zd outside its message", label, (ptrdiff_t)i - (ptrdiff_t)(GUARD + off));
                break;
            }
    }

    /* decode the CPU's message, then broken and edge variants of it */
    float *out0 = malloc((n + 1) * sizeof *out0);
    for (size_t j = 0; j < n; j++) out0[j] = j % 5 == 0 ? -0.0f : next_f();
    check_decode(dv, d, p, msg_c, bytes_c, n, out0, off, label, "CPU message");
    unsigned char *m = malloc(maxb + 1);
    memcpy(m, msg_c, bytes_c);
    m[bytes_c] = 0;
    check_decode(dv, d, p, m, bytes_c + 1, n, out0, off, label, "one byte too long");
    if (bytes_c) check_decode(dv, d, p, m, bytes_c - 1, n, out0, off, label, "one byte too short");
    for (int v = 0; v < 17; v++) {
        memcpy(m, msg_c, bytes_c);
        if (!mutate(d, p, n, m, bytes_c, v)) continue;
        char what[32];
        snprintf(what, sizeof what, "variant %d", v);
        check_decode(dv, d, p, m, bytes_c, n, out0, off, label, what);
    }
    free(m);
    free(out0);
    free(msg_c);
    free(msg_d);
    free(scr);
    if (d_scr) GPU_OK(cudaFree(d_scr));
}

/* ---- The cases ------------------------------------------------------------------------- */

static const size_t sizes[] = {0, 1, 7, 1000, 4097, (1u << 20) + 3};
#define NSIZES (sizeof sizes / sizeof sizes[0])
#define NMAX ((1u << 20) + 3)

static void check_casts(const gpu_bufs_t *dv, float *x)
{
    const dcodec_ops_t *const ops[] = {&dcodec_none_ops, &dcodec_fp16_ops, &dcodec_bf16_ops};
    const double p[TERSE_MAX_PARAMS] = {0};
    for (size_t c = 0; c < 3; c++)
        for (size_t s = 0; s < NSIZES; s++)
            for (int k = 0; k < IN_KINDS; k++) {
                fill(x, sizes[s], k);
                const size_t off = (size_t)(s + k) % 4;
                char label[96];
                snprintf(label, sizeof label, "%s, n=%zu, %s input, offset %zu", ops[c]->host->name, sizes[s],
                         in_names[k], off);
                check_case(dv, ops[c], p, NULL, x, sizes[s], off, label);
            }
}

static void check_onebit(const gpu_bufs_t *dv, float *x)
{
    for (int scale = ONEBIT_SCALE_L1; scale <= ONEBIT_SCALE_L2; scale++) {
        double p[TERSE_MAX_PARAMS] = {0};
        p[ONEBIT_SCALE] = scale;
        for (size_t s = 0; s < NSIZES; s++)
            for (int k = 0; k < IN_KINDS; k++) {
                fill(x, sizes[s], k);
                const size_t off = (size_t)(s + k) % 4;
                char label[96];
                snprintf(label, sizeof label, "onebit:scale=%s, n=%zu, %s input, offset %zu", scale ? "l2" : "l1",
                         sizes[s], in_names[k], off);
                check_case(dv, &dcodec_onebit_ops, p, NULL, x, sizes[s], off, label);
            }
    }
    /* many random vectors of one size: the tree's bound decides alone almost always, so
     * these check its verdicts rather than the recomputation */
    double p[TERSE_MAX_PARAMS] = {0};
    for (int t = 0; t < 64; t++) {
        p[ONEBIT_SCALE] = t % 2;
        const size_t n = 333 + 97 * (size_t)t;
        fill(x, n, IN_RANDOM);
        char label[96];
        snprintf(label, sizeof label, "onebit:scale=%s, n=%zu, random input %d", t % 2 ? "l2" : "l1", n, t);
        check_case(dv, &dcodec_onebit_ops, p, NULL, x, n, 0, label);
    }
}

static void check_qsgd(const gpu_bufs_t *dv, float *x)
{
    const size_t buckets[] = {1, 3, 8, 512, 1025, 5000};
    const codec_ctx_t ctxs[] = {
        {0x0123456789abcdefull, 0, 0, 0},
        {0xfedcba9876543210ull, 12345, 0, 0},          /* odd offset: draws start mid-pair */
        {0x5555aaaa5555aaaaull, (1ull << 33) - 501, 0, 0}, /* crosses a block of 2^33 draws */
    };
    int c = 0;
    /* every width, bucket and rounding on the small sizes */
    for (size_t s = 0; s < NSIZES - 1; s++)
        for (unsigned bits = 1; bits <= 8; bits++)
            for (size_t b = 0; b < sizeof buckets / sizeof buckets[0]; b++)
                for (int st = 0; st <= 1; st++, c++) {
                    /* input, context and message offset drawn from a hash of the case number,
                     * so that none of them follows the loops' own periods */
                    const uint64_t u = rng_mix(0x51ed2701u + (uint64_t)c);
                    const double p[TERSE_MAX_PARAMS] = {bits, (double)buckets[b], st, (double)(u % 3)};
                    const int k = (int)(u / 3 % IN_TIE); /* tie is onebit's */
                    const int ci = (int)(u / 18 % 4);    /* 3: no context */
                    const size_t off = (size_t)(u / 72 % 4);
                    fill(x, sizes[s], k);
                    char label[128];
                    snprintf(label, sizeof label,
                             "qsgd:bits=%u,bucket=%zu,stochastic=%d,seed=%d, n=%zu, %s input, ctx %d, offset %zu", bits,
                             buckets[b], st, (int)(u % 3), sizes[s], in_names[k], ci, off);
                    check_case(dv, &dcodec_qsgd_ops, p, ci < 3 ? &ctxs[ci] : NULL, x, sizes[s], off, label);
                }
    /* the large size: a selection, with one bucket longer than the vector (the merge pass)
     * and the parameter's largest bucket */
    const struct {
        unsigned bits;
        double bucket;
        int st;
    } big[] = {{4, 512, 1}, {8, 1 << 21, 1}, {3, 5000, 0}, {1, 1, 1}, {7, 16777216, 0}, {5, 4096, 1}, {2, 100, 0}};
    const int kinds[] = {IN_RANDOM, IN_SPECIAL, IN_TIES, IN_WIDE};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++, c++) {
            const double p[TERSE_MAX_PARAMS] = {big[i].bits, big[i].bucket, big[i].st, 7};
            fill(x, NMAX, kinds[k]);
            char label[128];
            snprintf(label, sizeof label, "qsgd:bits=%u,bucket=%.0f,stochastic=%d, n=%u, %s input, ctx %d", big[i].bits,
                     big[i].bucket, big[i].st, NMAX, in_names[kinds[k]], c % 3);
            check_case(dv, &dcodec_qsgd_ops, p, &ctxs[c % 3], x, NMAX, (size_t)(c % 4), label);
        }
}

static void check_tables(void)
{
    const struct {
        const dcodec_ops_t *ops;
        const char *name;
    } t[] = {{&dcodec_none_ops, "none"},
             {&dcodec_fp16_ops, "fp16"},
             {&dcodec_bf16_ops, "bf16"},
             {&dcodec_onebit_ops, "onebit"},
             {&dcodec_qsgd_ops, "qsgd"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        checks++;
        if (t[i].ops->size != sizeof(dcodec_ops_t)) FAIL("%s: size field %zu", t[i].name, t[i].ops->size);
        if (!t[i].ops->host || strcmp(t[i].ops->host->name, t[i].name) != 0) FAIL("%s: wrong host table", t[i].name);
        if (t[i].ops->bitwise != 1) FAIL("%s: bitwise is %d, expected 1", t[i].name, t[i].ops->bitwise);
    }
}

int main(void)
{
    gpu_test_require("cuda_dense", 0);
    rng_state = 20240611;

    gpu_bufs_t dv;
    GPU_OK(cudaStreamCreateWithFlags(&dv.stream, cudaStreamNonBlocking));
    GPU_OK(cudaMalloc((void **)&dv.d_in, NMAX * sizeof(float)));
    GPU_OK(cudaMalloc((void **)&dv.d_out, NMAX * sizeof(float)));
    dv.buf_bytes = 2 * GUARD + 4 + 9 * (size_t)NMAX; /* qsgd with bucket 1 and 8 bits: 9 bytes an element */
    GPU_OK(cudaMalloc((void **)&dv.d_buf, dv.buf_bytes));
    float *x = malloc(NMAX * sizeof *x);

    check_tables();
    check_casts(&dv, x);
    check_onebit(&dv, x);
    check_qsgd(&dv, x);

    free(x);
    GPU_OK(cudaFree(dv.d_in));
    GPU_OK(cudaFree(dv.d_out));
    GPU_OK(cudaFree(dv.d_buf));
    GPU_OK(cudaStreamDestroy(dv.stream));
    return check_report("cuda_dense");
}
