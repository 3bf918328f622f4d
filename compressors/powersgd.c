/* PowerSGD's low-rank codec (ALGORITHMS.md §8): one step of power iteration from a random
 * start turns a rows x cols matrix M into P (rows x r') and Q (cols x r'), with
 * r' = min(rows, cols, rank), and P Q^T approximates M.
 *
 * Standalone, one rank at a time (the kernel bench, the registry test), encode is
 *   Q0 ~ N(0,1) from the stream key, orthogonalised;  P = orth(M Q0);  Q = M^T P
 * and decode adds P Q^T. Inside the engine the layer runs through the low-rank protocol
 * instead (collectives/powersgd_lowrank.c), which allreduces P before orthogonalising it and
 * Q after, and keeps Q between calls; it uses the linear algebra below, not encode/decode.
 *
 * Wire format (host byte order): uint32 rows | uint32 cols | uint32 r' | float P[rows*r'] |
 * float Q[cols*r'], both factors row-major. The codec views its input as ctx's rows x cols,
 * or as count x 1 when ctx is NULL or its shape does not hold count elements; decode
 * accepts any shape of count elements with the r' the parameters give it. */
#include <math.h>
#include <string.h>

#include "powersgd.h"
#include "rng.h"

const param_def_t powersgd_params[POWERSGD_N_PARAMS] = {
    {"rank", 4.0, 1.0, 1024.0, 0, 1, NULL},
    {"start", 0.0, 0.0, 1e15, 0, 1, NULL},
    {"min_rate", 2.0, 1.0, 1e9, 0, 0, NULL},
    {"warm_start", 1.0, 0.0, 1.0, 0, 1, NULL},
    {"seed", 0.0, 0.0, 4294967295.0, 0, 1, NULL},
};

/* Double accumulators of M^T P: blocks of columns times r stay within this many, unless r
 * alone is larger (32 KiB: the block of accumulators stays in L1). */
#define POWERSGD_ACC 4096

size_t powersgd_rank(const double *p, size_t rows, size_t cols)
{
    size_t r = (size_t)p[POWERSGD_RANK];
    if (rows < r) r = rows;
    if (cols < r) r = cols;
    return r;
}

size_t powersgd_acc_doubles(size_t r) { return r > POWERSGD_ACC ? r : POWERSGD_ACC; }

/* The products below keep four factor columns' sums in registers at a time (columns k0 ..
 * k0+3), the rest one by one; each sum still runs in the documented order, so the grouping
 * changes the speed, not the bits. */
void powersgd_mul(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                  float *restrict P, double *restrict acc)
{
    for (size_t i = 0; i < n; i++) {
        const float *row = M + i * m;
        size_t k0 = 0;
        for (; k0 + 4 <= r; k0 += 4) {
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (size_t j = 0; j < m; j++) {
                const double v = row[j];
                const float *q = Q + j * r + k0;
                a0 += v * (double)q[0];
                a1 += v * (double)q[1];
                a2 += v * (double)q[2];
                a3 += v * (double)q[3];
            }
            P[i * r + k0] = (float)a0;
            P[i * r + k0 + 1] = (float)a1;
            P[i * r + k0 + 2] = (float)a2;
            P[i * r + k0 + 3] = (float)a3;
        }
        if (k0 == r) continue;
        for (size_t k = k0; k < r; k++) acc[k] = 0.0;
        for (size_t j = 0; j < m; j++) {
            const double v = row[j];
            const float *q = Q + j * r;
            for (size_t k = k0; k < r; k++) acc[k] += v * (double)q[k];
        }
        for (size_t k = k0; k < r; k++) P[i * r + k] = (float)acc[k];
    }
}

void powersgd_mul_t(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                    float *restrict Q, double *restrict acc)
{
    if (r == 0) return;
    /* a block of b columns of M: its b x r sums run down all n rows, reading each row's
     * b contiguous floats, so M is streamed once however many blocks there are */
    const size_t b = r >= POWERSGD_ACC ? 1 : POWERSGD_ACC / r;
    for (size_t j0 = 0; j0 < m; j0 += b) {
        const size_t w = m - j0 < b ? m - j0 : b;
        for (size_t t = 0; t < w * r; t++) acc[t] = 0.0;
        for (size_t i = 0; i < n; i++) {
            const float *row = M + i * m + j0, *p = P + i * r;
            size_t k0 = 0;
            for (; k0 + 4 <= r; k0 += 4) {
                const double p0 = p[k0], p1 = p[k0 + 1], p2 = p[k0 + 2], p3 = p[k0 + 3];
                for (size_t j = 0; j < w; j++) {
                    const double v = row[j];
                    double *a = acc + j * r + k0;
                    a[0] += v * p0;
                    a[1] += v * p1;
                    a[2] += v * p2;
                    a[3] += v * p3;
                }
            }
            for (size_t j = 0; k0 < r && j < w; j++) {
                const double v = row[j];
                double *a = acc + j * r;
                for (size_t k = k0; k < r; k++) a[k] += v * (double)p[k];
            }
        }
        for (size_t t = 0; t < w * r; t++) Q[j0 * r + t] = (float)acc[t];
    }
}

void powersgd_outer(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                    float *restrict A, int add)
{
    for (size_t i = 0; i < n; i++) {
        const float *p = P + i * r;
        float *a = A + i * m;
        for (size_t j = 0; j < m; j++) {
            const float *q = Q + j * r;
            double s = 0.0;
            size_t k = 0;
            for (; k + 4 <= r; k += 4) {
                s += (double)p[k] * (double)q[k];
                s += (double)p[k + 1] * (double)q[k + 1];
                s += (double)p[k + 2] * (double)q[k + 2];
                s += (double)p[k + 3] * (double)q[k + 3];
            }
            for (; k < r; k++) s += (double)p[k] * (double)q[k];
            if (add)
                a[j] += (float)s;
            else
                a[j] = (float)s;
        }
    }
}

void powersgd_orthogonalize(float *a, size_t len, size_t r)
{
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = 0; t < len; t++) ss += (double)a[t * r + i] * (double)a[t * r + i];
        /* eps on the norm, not under the root: a zero column divides by eps and stays 0 */
        const double d = sqrt(ss) + POWERSGD_EPS;
        for (size_t t = 0; t < len; t++) a[t * r + i] = (float)((double)a[t * r + i] / d);
        for (size_t j = i + 1; j < r; j++) {
            double s = 0.0;
            for (size_t t = 0; t < len; t++) s += (double)a[t * r + i] * (double)a[t * r + j];
            for (size_t t = 0; t < len; t++) a[t * r + j] = (float)((double)a[t * r + j] - s * (double)a[t * r + i]);
        }
    }
}

void powersgd_random(uint64_t key, size_t m, size_t r, float *Q)
{
    for (size_t t = 0; t < m * r; t++) Q[t] = (float)rng_normal(key, t);
}

/* ---- The standalone codec --------------------------------------------------------------- */

static size_t message_bytes(size_t rows, size_t cols, size_t r)
{
    return POWERSGD_HEADER + 4 * r * (rows + cols);
}

/* The largest message over every shape of count elements a ctx may give: the divisor pairs
 * a x (count / a), a <= count / a (a transposed shape has the same size). */
static size_t powersgd_max_bytes(const double *p, size_t count)
{
    size_t best = message_bytes(0, 0, 0);
    for (size_t a = 1; a <= count / a; a++) {
        if (count % a) continue;
        size_t bytes = message_bytes(a, count / a, powersgd_rank(p, a, count / a));
        if (bytes > best) best = bytes;
    }
    return best;
}

static size_t powersgd_scratch_bytes(const double *p, size_t count)
{
    size_t r = powersgd_rank(p, count, count);
    return r ? powersgd_acc_doubles(r) * sizeof(double) : 0;
}

static size_t powersgd_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                              size_t count, void *restrict msg, void *restrict scratch)
{
    size_t rows = count, cols = 1;
    if (ctx && ctx->rows * ctx->cols == count) {
        rows = ctx->rows;
        cols = ctx->cols;
    }
    const size_t r = powersgd_rank(p, rows, cols);
    const uint32_t hdr[3] = {(uint32_t)rows, (uint32_t)cols, (uint32_t)r};
    unsigned char *b = msg;
    memcpy(b, hdr, sizeof hdr);
    if (r == 0) return POWERSGD_HEADER;
    float *P = (float *)(b + POWERSGD_HEADER), *Q = P + rows * r;
    const uint64_t key = rng_mix((ctx ? ctx->key : 0) ^ ((uint64_t)p[POWERSGD_SEED] * 0x9e3779b97f4a7c15ull));
    /* Q0 lives where Q will: M^T P overwrites it once P no longer needs it */
    powersgd_random(key, cols, r, Q);
    powersgd_orthogonalize(Q, cols, r);
    powersgd_mul(in, rows, cols, Q, r, P, scratch);
    powersgd_orthogonalize(P, rows, r);
    powersgd_mul_t(in, rows, cols, P, r, Q, scratch);
    return message_bytes(rows, cols, r);
}

static terse_status_t powersgd_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                          size_t count, float *restrict out, void *restrict scratch)
{
    (void)scratch;
    if (bytes < POWERSGD_HEADER) return TERSE_ERR_MISMATCH;
    uint32_t hdr[3];
    memcpy(hdr, msg, sizeof hdr);
    const size_t rows = hdr[0], cols = hdr[1], r = hdr[2];
    if ((uint64_t)rows * cols != count || r != powersgd_rank(p, rows, cols) ||
        bytes != message_bytes(rows, cols, r))
        return TERSE_ERR_MISMATCH;
    if (r == 0) return TERSE_OK;
    const float *P = (const float *)((const unsigned char *)msg + POWERSGD_HEADER), *Q = P + rows * r;
    powersgd_outer(P, rows, Q, cols, r, out, 1);
    return TERSE_OK;
}

/* PyTorch's rule (§8.2): compress only when (rows + cols) r' min_rate < rows cols, so
 * vectors (rows x 1, 1 x cols) always go dense. */
static int powersgd_goes_dense(const double *p, size_t rows, size_t cols)
{
    if (rows <= 1 || cols <= 1) return 1;
    const double r = (double)powersgd_rank(p, rows, cols);
    return ((double)rows + (double)cols) * r * p[POWERSGD_MIN_RATE] >= (double)rows * (double)cols;
}

const codec_ops_t codec_powersgd_ops = {
    sizeof(codec_ops_t), "powersgd", CODEC_PROTO_POWERSGD,
    NULL, powersgd_max_bytes, powersgd_scratch_bytes, powersgd_encode, powersgd_decode_add,
    powersgd_goes_dense, 0,
};
