/* The device PowerSGD codec (compressors/cuda/powersgd.cu) against the CPU codec
 * (compressors/powersgd.c), within the tolerance powersgd.cu states (it is not bitwise: its
 * products run through cuBLAS in float):
 *   - the message's header and length equal the CPU's;
 *   - P and Q: each well-defined column within TOL_FACTOR of the largest CPU magnitude in
 *     that column of P, in the whole of Q (for an input of rank k below r', the first k
 *     columns; the others are Gram-Schmidt's normalised rounding residue on both sides and
 *     are only checked to be finite);
 *   - decode_add of one message, on the device and on the CPU: each element within
 *     TOL_DECODE (sum_k |P[i,k] Q[j,k]| + |out|), for the CPU's message and the device's;
 *   - the whole round trip (device encode and decode against CPU encode and decode) within
 *     TOL_FACTOR of the largest decoded magnitude, for inputs of full rank r';
 *   - malformed messages (short, long, wrong shape, wrong rank, wrong count) are
 *     TERSE_ERR_MISMATCH on both sides and leave the device output untouched;
 *   - a misaligned device message is TERSE_ERR_ARG.
 * Shapes: empty, 1 x 1, a vector without ctx (count x 1), 1 x N, N x 1, non-square both
 * ways, rank above min(rows, cols), ranks past one tile of the device Gram-Schmidt, an
 * exactly rank-2 and rank-3 matrix with r' above that, the zero matrix, repeated values,
 * a ctx whose shape does not hold count (count x 1), and about 2^20 elements in three
 * shapes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcodec.h"
#include "check.h"
#include "powersgd.h"

extern const dcodec_ops_t dcodec_powersgd_ops;

/* The tolerances powersgd.cu states. */
#define TOL_FACTOR 1e-3
#define TOL_DECODE 1e-5

typedef enum { DATA_RANDOM, DATA_LOWRANK, DATA_ZERO, DATA_TIES } data_t;

typedef struct {
    size_t count;
    int use_ctx;            /* 0: ctx NULL */
    size_t ctx_rows, ctx_cols;
    double rank, seed;
    uint64_t key;
    data_t data;
    size_t k;               /* DATA_LOWRANK: the rank of M */
} case_t;

/* The input, seen as rows x cols. DATA_LOWRANK: A B^T with small integer factors, so that
 * every element is exact in float and M has rank k exactly. */
static void make_input(const case_t *c, size_t rows, size_t cols, float *M)
{
    switch (c->data) {
    case DATA_RANDOM:
        for (size_t t = 0; t < c->count; t++) M[t] = next_f() * 3.0f;
        break;
    case DATA_ZERO:
        memset(M, 0, c->count * sizeof *M);
        break;
    case DATA_TIES: {
        static const float vals[] = {-1.0f, -0.5f, 0.0f, 0.0f, 0.5f, 1.0f};
        for (size_t t = 0; t < c->count; t++) M[t] = vals[next_u64() % 6];
        break;
    }
    case DATA_LOWRANK: {
        float *A = xmalloc(rows * c->k * sizeof *A), *B = xmalloc(cols * c->k * sizeof *B);
        for (size_t t = 0; t < rows * c->k; t++) A[t] = (float)((int)(next_u64() % 17) - 8);
        for (size_t t = 0; t < cols * c->k; t++) B[t] = (float)((int)(next_u64() % 17) - 8);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) {
                float s = 0.0f;
                for (size_t q = 0; q < c->k; q++) s += A[i * c->k + q] * B[j * c->k + q];
                M[i * cols + j] = s;
            }
        free(A);
        free(B);
        break;
    }
    }
}

static void factors(const unsigned char *msg, size_t rows, size_t cols, size_t r, float *P, float *Q)
{
    memcpy(P, msg + POWERSGD_HEADER, rows * r * sizeof *P);
    memcpy(Q, msg + POWERSGD_HEADER + rows * r * sizeof *P, cols * r * sizeof *Q);
}

/* The n x r factors X (device) and Y (CPU): every element finite; in the well-defined
 * columns c < kcmp, |X - Y| within TOL_FACTOR of the largest |Y| in column c (per_column, for
 * P, whose columns are unit vectors) or in all of Y (for Q, whose columns scale with M's
 * singular values while their errors scale with the largest). */
static void compare_factor(const char *label, const char *name, const float *X, const float *Y, size_t n, size_t r,
                           size_t kcmp, int per_column)
{
    double all = 0.0;
    for (size_t t = 0; t < n * r; t++)
        if (fabs((double)Y[t]) > all) all = fabs((double)Y[t]);
    for (size_t c = 0; c < r; c++) {
        double big = 0.0, diff = 0.0;
        size_t worst = 0;
        int finite = 1;
        for (size_t i = 0; i < n; i++) {
            const double x = X[i * r + c], y = Y[i * r + c];
            if (!isfinite(x)) finite = 0;
            if (fabs(y) > big) big = fabs(y);
            if (!(fabs(x - y) <= diff)) {
                diff = fabs(x - y);
                worst = i;
            }
        }
        const double tol = TOL_FACTOR * (per_column ? big : all);
        checks++;
        if (!finite) {
            FAIL("%s: %s column %zu is not finite on the device", label, name, c);
        } else if (c < kcmp && !(diff <= tol)) {
            FAIL("%s: %s column %zu: device %.9g, CPU %.9g at row %zu (difference %.3g, tolerance %.3g)", label, name,
                 c, (double)X[worst * r + c], (double)Y[worst * r + c], worst, diff, tol);
        }
    }
}

/* The device's decode_add of msg (host copy, `bytes`) onto out0, against the CPU's: within
 * TOL_DECODE (sum_k |P[i,k] Q[j,k]| + |out0|) element by element. */
static void compare_decode(const char *label, const char *which, const double *p, const unsigned char *msg,
                           size_t bytes, size_t count, const float *out0, cudaStream_t stream)
{
    uint32_t hdr[3];
    memcpy(hdr, msg, sizeof hdr);
    const size_t rows = hdr[0], cols = hdr[1], r = hdr[2];
    float *oc = xmalloc(count * sizeof *oc), *od = xmalloc(count * sizeof *od);
    memcpy(oc, out0, count * sizeof *oc);
    void *scratch = xmalloc(codec_powersgd_ops.scratch_bytes(p, count));
    terse_status_t hs = codec_powersgd_ops.decode_add(p, msg, bytes, count, oc, scratch);
    free(scratch);

    void *dmsg = dmalloc(bytes), *dscr = dmalloc(dcodec_powersgd_ops.scratch_bytes(p, count));
    float *dout = dmalloc(count * sizeof *dout);
    GPU_OK(cudaMemcpy(dmsg, msg, bytes, cudaMemcpyHostToDevice));
    if (count) GPU_OK(cudaMemcpy(dout, out0, count * sizeof *dout, cudaMemcpyHostToDevice));
    terse_status_t ds = dcodec_powersgd_ops.decode_add(p, dmsg, bytes, count, dout, dscr, stream);
    GPU_OK(cudaStreamSynchronize(stream));
    if (count) GPU_OK(cudaMemcpy(od, dout, count * sizeof *od, cudaMemcpyDeviceToHost));
    CHECK(hs == TERSE_OK && ds == TERSE_OK, "%s: decode of the %s message: CPU %d, device %d", label, which, (int)hs,
          (int)ds);

    if (hs == TERSE_OK && ds == TERSE_OK) {
        float *P = xmalloc(rows * r * sizeof *P), *Q = xmalloc(cols * r * sizeof *Q);
        factors(msg, rows, cols, r, P, Q);
        size_t bad = 0, first = 0;
        double first_bound = 0.0;
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) {
                double terms = fabs((double)out0[i * cols + j]);
                for (size_t q = 0; q < r; q++) terms += fabs((double)P[i * r + q] * (double)Q[j * r + q]);
                const double bound = TOL_DECODE * terms;
                const size_t t = i * cols + j;
                if (!(fabs((double)od[t] - (double)oc[t]) <= bound)) {
                    if (!bad) {
                        first = t;
                        first_bound = bound;
                    }
                    bad++;
                }
            }
        checks++;
        if (bad)
            FAIL("%s: decode of the %s message: %zu elements out of tolerance, first [%zu] device %.9g, CPU %.9g "
                 "(bound %.3g)", label, which, bad, first, (double)od[first], (double)oc[first], first_bound);
        free(P);
        free(Q);
    }
    GPU_OK(cudaFree(dmsg));
    GPU_OK(cudaFree(dscr));
    GPU_OK(cudaFree(dout));
    free(oc);
    free(od);
}

/* Decodes bytes of the device message d_msg into a copy of out0 on the device: expects
 * `want` (and TERSE_ERR_MISMATCH from the CPU on the host copy msg when want is), and the
 * output untouched unless the status is TERSE_OK. */
static void expect_status(const char *label, const char *what, const double *p, const void *d_msg,
                          const unsigned char *msg, size_t bytes, size_t count, const float *out0,
                          terse_status_t want, cudaStream_t stream)
{
    if (want == TERSE_ERR_MISMATCH) {
        float *oc = xmalloc(count * sizeof *oc);
        memcpy(oc, out0, count * sizeof *oc);
        void *scratch = xmalloc(codec_powersgd_ops.scratch_bytes(p, count));
        terse_status_t hs = codec_powersgd_ops.decode_add(p, msg, bytes, count, oc, scratch);
        CHECK(hs == TERSE_ERR_MISMATCH, "%s: %s: the CPU codec returns %d (test setup)", label, what, (int)hs);
        free(scratch);
        free(oc);
    }
    float *dout = dmalloc(count * sizeof *dout), *back = xmalloc(count * sizeof *back);
    void *dscr = dmalloc(dcodec_powersgd_ops.scratch_bytes(p, count));
    if (count) GPU_OK(cudaMemcpy(dout, out0, count * sizeof *dout, cudaMemcpyHostToDevice));
    terse_status_t ds = dcodec_powersgd_ops.decode_add(p, d_msg, bytes, count, dout, dscr, stream);
    GPU_OK(cudaStreamSynchronize(stream));
    CHECK(ds == want, "%s: %s: device decode returns %d, expected %d", label, what, (int)ds, (int)want);
    if (count && ds != TERSE_OK) {
        GPU_OK(cudaMemcpy(back, dout, count * sizeof *back, cudaMemcpyDeviceToHost));
        CHECK(memcmp(back, out0, count * sizeof *back) == 0, "%s: %s: the device output changed", label, what);
    }
    GPU_OK(cudaFree(dout));
    GPU_OK(cudaFree(dscr));
    free(back);
}

/* The malformed messages, made from a valid one (msg, bytes) of a layer of count elements;
 * out0 holds count + 1 floats. */
static void check_malformed(const char *label, const double *p, const unsigned char *msg, size_t bytes, size_t count,
                            const float *out0, cudaStream_t stream)
{
    uint32_t hdr[3];
    memcpy(hdr, msg, sizeof hdr);
    const size_t cap = bytes + 64;
    unsigned char *bad = xmalloc(cap);
    unsigned char *dbad = dmalloc(cap + 4);
    char what[96];

    /* short, truncated and long messages */
    memset(bad, 0, cap);
    memcpy(bad, msg, bytes);
    GPU_OK(cudaMemcpy(dbad, bad, cap, cudaMemcpyHostToDevice));
    const size_t lens[] = {0, 4, POWERSGD_HEADER - 1, bytes - 4, bytes + 4, bytes + 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        if (lens[i] == bytes || lens[i] > cap) continue;
        snprintf(what, sizeof what, "%zu bytes instead of %zu", lens[i], bytes);
        expect_status(label, what, p, dbad, bad, lens[i], count, out0, TERSE_ERR_MISMATCH, stream);
    }
    /* a count the shape does not hold */
    expect_status(label, "count + 1", p, dbad, bad, bytes, count + 1, out0, TERSE_ERR_MISMATCH, stream);

    /* headers that disagree with the layer: more rows, and a rank the parameters do not give
     * (its length adjusted, so that only the rank is wrong) */
    uint32_t h2[3] = {hdr[0] + 1, hdr[1], hdr[2]};
    memcpy(bad, h2, sizeof h2);
    GPU_OK(cudaMemcpy(dbad, bad, cap, cudaMemcpyHostToDevice));
    expect_status(label, "rows + 1 in the header", p, dbad, bad, bytes, count, out0, TERSE_ERR_MISMATCH, stream);
    if (hdr[2] > 0) {
        uint32_t h3[3] = {hdr[0], hdr[1], hdr[2] - 1};
        memcpy(bad, h3, sizeof h3);
        GPU_OK(cudaMemcpy(dbad, bad, cap, cudaMemcpyHostToDevice));
        expect_status(label, "rank - 1 in the header", p, dbad, bad, bytes - 4 * (hdr[0] + hdr[1]), count, out0,
                      TERSE_ERR_MISMATCH, stream);
    }
    /* a valid message at an odd address: the factors would be misaligned floats */
    if (hdr[2] > 0) {
        GPU_OK(cudaMemcpy(dbad + 1, msg, bytes, cudaMemcpyHostToDevice));
        expect_status(label, "message at an odd address", p, dbad + 1, msg, bytes, count, out0, TERSE_ERR_ARG,
                      stream);
    }
    GPU_OK(cudaFree(dbad));
    free(bad);
}

static void run_case(const case_t *c, cudaStream_t stream, int malformed)
{
    const double p[TERSE_MAX_PARAMS] = {c->rank, 0.0, 2.0, 1.0, c->seed};
    const codec_ctx_t ctx = {c->key, 0, c->ctx_rows, c->ctx_cols};
    const codec_ctx_t *pctx = c->use_ctx ? &ctx : NULL;
    size_t rows = c->count, cols = 1;
    if (pctx && pctx->rows * pctx->cols == c->count) {
        rows = pctx->rows;
        cols = pctx->cols;
    }
    const size_t r = powersgd_rank(p, rows, cols);
    char label[160];
    static const char *const kinds[] = {"random", "rank-k", "zero", "ties"};
    snprintf(label, sizeof label, "%zu x %zu (%s%s), rank %g -> %zu, seed %g, key %llu", rows, cols,
             c->use_ctx ? "" : "no ctx, ", kinds[c->data], c->rank, r, c->seed, (unsigned long long)c->key);

    const size_t count = c->count, maxb = codec_powersgd_ops.max_bytes(p, count);
    /* out0 has one float more, for the decode of a wrong count */
    float *M = xmalloc(count * sizeof *M), *out0 = xmalloc((count + 1) * sizeof *out0);
    make_input(c, rows, cols, M);
    for (size_t t = 0; t <= count; t++) out0[t] = next_f();

    /* CPU */
    unsigned char *mc = xmalloc(maxb), *md = xmalloc(maxb);
    void *scratch = xmalloc(codec_powersgd_ops.scratch_bytes(p, count));
    const size_t bc = codec_powersgd_ops.encode(p, pctx, M, count, mc, scratch);
    free(scratch);

    /* device */
    float *dM = dmalloc(count * sizeof *dM);
    void *dmsg = dmalloc(maxb), *dscr = dmalloc(dcodec_powersgd_ops.scratch_bytes(p, count));
    if (count) GPU_OK(cudaMemcpy(dM, M, count * sizeof *dM, cudaMemcpyHostToDevice));
    size_t bd = (size_t)-1;
    terse_status_t st = dcodec_powersgd_ops.encode(p, pctx, dM, count, dmsg, &bd, dscr, stream);
    GPU_OK(cudaStreamSynchronize(stream));
    CHECK(st == TERSE_OK, "%s: device encode returns %d", label, (int)st);
    if (st != TERSE_OK) goto done;
    CHECK(bd == bc, "%s: device message %zu bytes, CPU %zu", label, bd, bc);
    if (bd != bc) goto done;
    GPU_OK(cudaMemcpy(md, dmsg, bd, cudaMemcpyDeviceToHost));
    CHECK(memcmp(md, mc, POWERSGD_HEADER) == 0, "%s: the headers differ", label);

    {
        const size_t kcmp = c->data == DATA_LOWRANK && c->k < r ? c->k : r;
        float *Pc = xmalloc(rows * r * sizeof *Pc), *Qc = xmalloc(cols * r * sizeof *Qc);
        float *Pd = xmalloc(rows * r * sizeof *Pd), *Qd = xmalloc(cols * r * sizeof *Qd);
        factors(mc, rows, cols, r, Pc, Qc);
        factors(md, rows, cols, r, Pd, Qd);
        compare_factor(label, "P", Pd, Pc, rows, r, kcmp, 1);
        compare_factor(label, "Q", Qd, Qc, cols, r, kcmp, 0);
        free(Pc);
        free(Qc);
        free(Pd);
        free(Qd);
    }

    /* each message decoded on both sides, onto the same nonzero output */
    compare_decode(label, "CPU", p, mc, bc, count, out0, stream);
    compare_decode(label, "device", p, md, bd, count, out0, stream);

    /* the round trip, for inputs whose factors are all well defined */
    if (c->data != DATA_LOWRANK && count) {
        float *zc = calloc(count, sizeof *zc), *zd = xmalloc(count * sizeof *zd);
        float *dz = dmalloc(count * sizeof *dz);
        void *s2 = xmalloc(codec_powersgd_ops.scratch_bytes(p, count));
        if (!zc) exit(1);
        terse_status_t hs = codec_powersgd_ops.decode_add(p, mc, bc, count, zc, s2);
        GPU_OK(cudaMemset(dz, 0, count * sizeof *dz));
        terse_status_t ds = dcodec_powersgd_ops.decode_add(p, dmsg, bd, count, dz, dscr, stream);
        GPU_OK(cudaStreamSynchronize(stream));
        GPU_OK(cudaMemcpy(zd, dz, count * sizeof *zd, cudaMemcpyDeviceToHost));
        double big = 0.0, diff = 0.0;
        for (size_t t = 0; t < count; t++) {
            if (fabs(zc[t]) > big) big = fabs(zc[t]);
            if (!(fabs((double)zd[t] - (double)zc[t]) <= diff)) diff = fabs((double)zd[t] - (double)zc[t]);
        }
        CHECK(hs == TERSE_OK && ds == TERSE_OK && diff <= TOL_FACTOR * big,
              "%s: round trip: device against CPU differs by %.3g, tolerance %.3g (statuses %d %d)", label, diff,
              TOL_FACTOR * big, (int)hs, (int)ds);
        GPU_OK(cudaFree(dz));
        free(zc);
        free(zd);
        free(s2);
    }

    /* the CPU accepts any shape of count elements in a message: the transposed one too */
    if (r > 0 && rows != cols) {
        unsigned char *mt = xmalloc(bc);
        uint32_t hdr[3] = {(uint32_t)cols, (uint32_t)rows, (uint32_t)r};
        memcpy(mt, hdr, sizeof hdr);
        /* P' = Q, Q' = P: the message of M^T */
        memcpy(mt + POWERSGD_HEADER, mc + POWERSGD_HEADER + rows * r * 4, cols * r * 4);
        memcpy(mt + POWERSGD_HEADER + cols * r * 4, mc + POWERSGD_HEADER, rows * r * 4);
        if (powersgd_rank(p, cols, rows) == r) compare_decode(label, "transposed CPU", p, mt, bc, count, out0, stream);
        free(mt);
    }

    if (malformed) check_malformed(label, p, mc, bc, count, out0, stream);

    /* encode into an odd address: refused before anything is written */
    if (r > 0 && malformed) {
        unsigned char *dodd = dmalloc(maxb + 4);
        size_t b2 = 12345;
        terse_status_t s2 = dcodec_powersgd_ops.encode(p, pctx, dM, count, dodd + 1, &b2, dscr, stream);
        GPU_OK(cudaStreamSynchronize(stream));
        CHECK(s2 == TERSE_ERR_ARG && b2 == 12345, "%s: encode to an odd address returns %d, bytes %zu", label,
              (int)s2, b2);
        GPU_OK(cudaFree(dodd));
    }

done:
    GPU_OK(cudaFree(dM));
    GPU_OK(cudaFree(dmsg));
    GPU_OK(cudaFree(dscr));
    free(M);
    free(out0);
    free(mc);
    free(md);
}

int main(void)
{
    gpu_test_require("cuda_lowrank", 0);
    rng_state = 7;
    cudaStream_t stream;
    GPU_OK(cudaStreamCreate(&stream));

    CHECK(dcodec_powersgd_ops.size == sizeof(dcodec_ops_t) && dcodec_powersgd_ops.host == &codec_powersgd_ops &&
              dcodec_powersgd_ops.bitwise == 0,
          "the table: size %zu, host %p, bitwise %d", dcodec_powersgd_ops.size, (const void *)dcodec_powersgd_ops.host,
          dcodec_powersgd_ops.bitwise);

    const case_t cases[] = {
        /* count, ctx?, ctx rows x cols, rank, seed, key, data, k */
        {0, 0, 0, 0, 4, 0, 0, DATA_RANDOM, 0},
        {0, 1, 0, 5, 4, 0, 1, DATA_RANDOM, 0},
        {1, 1, 1, 1, 4, 0, 2, DATA_RANDOM, 0},
        {7, 0, 0, 0, 4, 3, 0, DATA_RANDOM, 0},            /* no ctx: 7 x 1 */
        {24, 1, 5, 5, 4, 0, 9, DATA_RANDOM, 0},           /* ctx does not hold count: 24 x 1 */
        {1000, 1, 1, 1000, 4, 0, 11, DATA_RANDOM, 0},
        {1000, 1, 1000, 1, 4, 0, 12, DATA_RANDOM, 0},
        {1000, 1, 40, 25, 4, 0, 13, DATA_RANDOM, 0},
        {1000, 1, 25, 40, 4, 1, 13, DATA_RANDOM, 0},
        {4096, 1, 64, 64, 8, 7, 14, DATA_RANDOM, 0},
        {4097, 1, 17, 241, 4, 0, 15, DATA_RANDOM, 0},
        {4097, 1, 241, 17, 3, 0, 15, DATA_RANDOM, 0},
        {1500, 1, 3, 500, 8, 0, 16, DATA_RANDOM, 0},       /* rank above min(rows, cols) */
        {36, 1, 6, 6, 8, 0, 17, DATA_RANDOM, 0},           /* r' = rows = cols */
        {1320, 1, 40, 33, 1024, 0, 18, DATA_RANDOM, 0},    /* r' = 33: five tiles of 8 */
        {3000, 1, 60, 50, 4, 0, 19, DATA_LOWRANK, 2},      /* rank 2 below r' = 4 */
        {60000, 1, 300, 200, 8, 0, 20, DATA_LOWRANK, 3},   /* rank 3 below r' = 8 */
        {600, 1, 30, 20, 4, 0, 21, DATA_ZERO, 0},
        {8000, 1, 100, 80, 4, 0, 22, DATA_TIES, 0},
        {1u << 20, 1, 1024, 1024, 4, 0, 23, DATA_RANDOM, 0},
        {1u << 20, 1, 1, 1u << 20, 4, 0, 24, DATA_RANDOM, 0},
        {1u << 20, 1, 1u << 20, 1, 4, 0, 25, DATA_RANDOM, 0},
        {1u << 20, 1, 512, 2048, 16, 5, 26, DATA_RANDOM, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], i % 5 == 4 ? NULL : stream, cases[i].count <= 8000);

    GPU_OK(cudaStreamDestroy(stream));
    return check_report("cuda_lowrank");
}
