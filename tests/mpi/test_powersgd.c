/* PowerSGD under mpirun (1..4 ranks) against a serial reference of the low-rank protocol,
 * written here from ALGORITHMS.md §8.1/§8.2 and the operation order powersgd.h documents
 * (float products as chains of fused multiply-adds, M Q in 8 chains added by a fixed tree;
 * Gram-Schmidt in double with eps 1e-8 on the norm): Q from the shared stream (or the previous call's mean Q with warm start),
 * orthogonalised; P = sum_r M_r Q (fp32, rank order); orthogonalised; Q = mean_r M_r^T P;
 * out = P Q^T; e_r = M_r - P Q^T with feedback=ef. Calls before `start` are the exact mean.
 * Every rank rebuilds every rank's gradient and compares its terse result bit for bit, and
 * the ranks compare their results with each other. Also: 1-D and incompressible layers go
 * dense, a run resumed from saved state continues bit for bit, a call abandoned for a peer's
 * NaN changes nothing, and zero gradients give zeros, not NaN. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "protocol.h"
#include "reference.h"
#include "rng.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

/* Standard normal number i of stream key: Box-Muller on 53-bit uniforms from draws 2i
 * (in (0, 1]) and 2i + 1 (in [0, 1)), as rng.h documents it. */
static double ref_normal(uint64_t key, uint64_t i)
{
    double u1 = ((double)(rng_bits(key, 2 * i) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(rng_bits(key, 2 * i + 1) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct {
    size_t rows, cols;
    int rank, warm, start, ef, sum;
    double min_rate, seed;
} case_t;

/* ---- The serial reference --------------------------------------------------------------- */

/* P = M Q (n x m times m x r): chain l takes the columns j = l mod 8 in increasing order,
 * and the 8 chains are added as ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)). */
static void ref_mq(const float *M, size_t n, size_t m, const float *Q, size_t r, float *P)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < r; k++) {
            float c[8] = {0};
            for (size_t j = 0; j < m; j++) c[j % 8] = fmaf(M[i * m + j], Q[j * r + k], c[j % 8]);
            P[i * r + k] = ((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]));
        }
}

/* Q = M^T P: each sum one chain over i ascending. */
static void ref_mtp(const float *M, size_t n, size_t m, const float *P, size_t r, float *Q)
{
    for (size_t j = 0; j < m; j++)
        for (size_t k = 0; k < r; k++) {
            float s = 0.0f;
            for (size_t i = 0; i < n; i++) s = fmaf(M[i * m + j], P[i * r + k], s);
            Q[j * r + k] = s;
        }
}

/* Gram-Schmidt as the PowerSGD paper code: col /= sqrt(sum col^2) + 1e-8; later columns
 * lose their projection on it. */
static void ref_orth(float *a, size_t len, size_t r)
{
    for (size_t i = 0; i < r; i++) {
        double ss = 0.0;
        for (size_t t = 0; t < len; t++) ss += (double)a[t * r + i] * (double)a[t * r + i];
        double d = sqrt(ss) + 1e-8;
        for (size_t t = 0; t < len; t++) a[t * r + i] = (float)((double)a[t * r + i] / d);
        for (size_t j = i + 1; j < r; j++) {
            double dot = 0.0;
            for (size_t t = 0; t < len; t++) dot += (double)a[t * r + i] * (double)a[t * r + j];
            for (size_t t = 0; t < len; t++) a[t * r + j] = (float)((double)a[t * r + j] - dot * (double)a[t * r + i]);
        }
    }
}

static int ref_goes_dense(const case_t *cs)
{
    if (cs->rows <= 1 || cs->cols <= 1) return 1;
    size_t r = (size_t)cs->rank;
    if (cs->rows < r) r = cs->rows;
    if (cs->cols < r) r = cs->cols;
    return (double)(cs->rows + cs->cols) * (double)r * cs->min_rate >= (double)(cs->rows * cs->cols);
}

/* What every rank keeps between calls, for all ranks at once. */
typedef struct {
    size_t n, r;
    float *e;       /* nranks x n: the EF errors                */
    float *q;       /* cols x r: the warm-start Q               */
    int have_q;
    /* scratch */
    float *M, *P, *Pr, *Q, *Qr, *A;
} ref_t;

static void ref_init(ref_t *f, const case_t *cs)
{
    size_t r = (size_t)cs->rank;
    if (cs->rows < r) r = cs->rows;
    if (cs->cols < r) r = cs->cols;
    f->n = cs->rows * cs->cols;
    f->r = r;
    f->e = calloc(f->n * (size_t)nranks_, sizeof(float));
    f->q = calloc(cs->cols * r + 1, sizeof(float));
    f->have_q = 0;
    f->M = malloc(f->n * (size_t)nranks_ * sizeof(float));
    f->P = malloc((cs->rows * r + 1) * sizeof(float));
    f->Pr = malloc((cs->rows * r + 1) * sizeof(float));
    f->Q = malloc((cs->cols * r + 1) * sizeof(float));
    f->Qr = malloc((cs->cols * r + 1) * sizeof(float));
    f->A = malloc(f->n * sizeof(float));
}

static void ref_free(ref_t *f)
{
    free(f->e); free(f->q); free(f->M); free(f->P); free(f->Pr); free(f->Q); free(f->Qr); free(f->A);
}

typedef float (*grad_fn)(int rank, size_t i, int call);

/* The reference result of `call` on layer `layer` into out; updates f. */
static void ref_call(const case_t *cs, ref_t *f, int layer, int call, grad_fn g, float *out)
{
    const size_t n = f->n, rows = cs->rows, cols = cs->cols, r = f->r;
    const int dense = ref_goes_dense(cs);
    const int ef = cs->ef && !dense;
    for (int q = 0; q < nranks_; q++)
        for (size_t i = 0; i < n; i++)
            f->M[(size_t)q * n + i] = g(q, i, call) + (ef ? f->e[(size_t)q * n + i] : 0.0f);

    if (dense || call < cs->start) {
        /* the exact dense allreduce: owners sum in rank order in fp32; delta = p keeps e */
        memset(out, 0, n * sizeof *out);
        for (int q = 0; q < nranks_; q++)
            for (size_t i = 0; i < n; i++) out[i] += f->M[(size_t)q * n + i];
        if (!cs->sum)
            for (size_t i = 0; i < n; i++) out[i] /= (float)nranks_;
        return;
    }
    if (cs->warm && f->have_q) {
        memcpy(f->Q, f->q, cols * r * sizeof(float));
    } else {
        proto_call_t pc;
        memset(&pc, 0, sizeof pc);
        pc.layer = layer;
        pc.calls = (uint64_t)call;
        uint64_t key = protocol_stream_key((uint64_t)cs->seed, &pc, -1, 0);
        for (size_t t = 0; t < cols * r; t++) f->Q[t] = (float)ref_normal(key, t);
    }
    ref_orth(f->Q, cols, r);
    memset(f->P, 0, rows * r * sizeof(float));
    for (int q = 0; q < nranks_; q++) {
        ref_mq(f->M + (size_t)q * n, rows, cols, f->Q, r, f->Pr);
        for (size_t t = 0; t < rows * r; t++) f->P[t] += f->Pr[t];
    }
    ref_orth(f->P, rows, r);
    float *Qsum = f->q; /* the mean Q becomes the next warm start */
    memset(Qsum, 0, cols * r * sizeof(float));
    for (int q = 0; q < nranks_; q++) {
        ref_mtp(f->M + (size_t)q * n, rows, cols, f->P, r, f->Qr);
        for (size_t t = 0; t < cols * r; t++) Qsum[t] += f->Qr[t];
    }
    int nonzero = 0;
    for (size_t t = 0; t < cols * r; t++) {
        Qsum[t] /= (float)nranks_;
        nonzero |= Qsum[t] != 0.0f;
    }
    f->have_q = nonzero;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            float s = 0.0f;
            for (size_t k = 0; k < r; k++) s = fmaf(f->P[i * r + k], Qsum[j * r + k], s);
            f->A[i * cols + j] = s;
        }
    for (size_t i = 0; i < n; i++) out[i] = cs->sum ? f->A[i] * (float)nranks_ : f->A[i];
    if (ef)
        for (int q = 0; q < nranks_; q++)
            for (size_t i = 0; i < n; i++) f->e[(size_t)q * n + i] = f->M[(size_t)q * n + i] - f->A[i];
}

/* ---- The cases -------------------------------------------------------------------------- */

static void config_of(const case_t *cs, char *buf, size_t len)
{
    snprintf(buf, len,
             "compressor=powersgd:rank=%d,start=%d,min_rate=%g,warm_start=%d,seed=%g; feedback=%s; "
             "min_size=0; reduce=%s",
             cs->rank, cs->start, cs->min_rate, cs->warm, cs->seed, cs->ef ? "ef" : "none",
             cs->sum ? "sum" : "mean");
}

/* A communicator with a dense 3-element layer first, so that the case's layer is id 1 and
 * the shared stream depends on the layer id. */
static terse_comm_t *make(const case_t *cs, int *id)
{
    char cfg[256];
    config_of(cs, cfg, sizeof cfg);
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", cfg, terse_last_error());
    if (s != TERSE_OK) return NULL;
    int pad = -1;
    s = terse_layer_add(c, "pad", 3, 1, NULL, &pad);
    EXPECT(s == TERSE_OK && pad == 0, "pad layer: %s", terse_last_error());
    s = terse_layer_add(c, "W", cs->rows, cs->cols, NULL, id);
    EXPECT(s == TERSE_OK && *id == 1, "layer_add %zux%zu '%s': %s", cs->rows, cs->cols, cfg, terse_last_error());
    return c;
}

static void run_case(const case_t *cs, int calls)
{
    char cfg[256];
    config_of(cs, cfg, sizeof cfg);
    int id = -1;
    terse_comm_t *c = make(cs, &id);
    if (!c) return;
    const size_t n = cs->rows * cs->cols;
    float *buf = malloc(n * sizeof *buf), *ref = malloc(n * sizeof *ref);
    ref_t f;
    ref_init(&f, cs);
    const int dense = ref_goes_dense(cs);
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        terse_status_t s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "'%s' %zux%zu call %d: %s", cfg, cs->rows, cs->cols, call, terse_last_error());
        ref_call(cs, &f, id, call, ref_gradient, ref);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' %zux%zu call %d: element %zu is %.9g, reference %.9g",
               cfg, cs->rows, cs->cols, call, bad, buf[bad], ref[bad]);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)), "'%s' call %d: ranks hold different bits",
               cfg, call);
        terse_stats_t st;
        terse_layer_stats(c, id, &st);
        EXPECT(st.dense == dense, "'%s' %zux%zu: dense %d, expected %d", cfg, cs->rows, cs->cols, st.dense, dense);
        size_t wire = dense || call < cs->start ? 4 * n : 4 * f.r * (cs->rows + cs->cols);
        EXPECT(st.wire_bytes == wire, "'%s' call %d: wire %zu bytes, expected %zu", cfg, call, st.wire_bytes, wire);
    }
    ref_free(&f);
    free(buf);
    free(ref);
    terse_comm_destroy(c);
}

/* Save after call 2, run calls 2 and 3; a fresh communicator loads and reruns them. */
static void run_resume(const char *path)
{
    const case_t cs = {64, 48, 4, 1, 1, 1, 0, 2, 11};
    const size_t n = 64 * 48;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *ref = malloc(n * sizeof *ref);
    int id, id2;
    terse_comm_t *c = make(&cs, &id);
    ref_t f;
    ref_init(&f, &cs);
    for (int call = 0; call < 2; call++) {
        for (size_t i = 0; i < n; i++) a[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(c, id, a) == TERSE_OK, "%s", terse_last_error());
        ref_call(&cs, &f, id, call, ref_gradient, ref);
    }
    EXPECT(terse_state_save(c, path) == TERSE_OK, "save: %s", terse_last_error());
    float out3[2][64 * 48];
    for (int call = 2; call < 4; call++) {
        for (size_t i = 0; i < n; i++) a[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(c, id, a) == TERSE_OK, "%s", terse_last_error());
        memcpy(out3[call - 2], a, n * sizeof *a);
        ref_call(&cs, &f, id, call, ref_gradient, ref);
        size_t bad = mpitest_first_diff(a, ref, n);
        EXPECT(bad == n, "resume case call %d: element %zu %.9g vs %.9g", call, bad,
               a[bad], ref[bad]);
    }
    terse_comm_t *r = make(&cs, &id2);
    EXPECT(terse_state_load(r, path) == TERSE_OK, "load: %s", terse_last_error());
    for (int call = 2; call < 4; call++) {
        for (size_t i = 0; i < n; i++) b[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(r, id2, b) == TERSE_OK, "%s", terse_last_error());
        EXPECT(memcmp(b, out3[call - 2], n * sizeof *b) == 0,
               "call %d after load equals the uninterrupted run bit for bit", call);
    }
    ref_free(&f);
    free(a); free(b); free(ref);
    terse_comm_destroy(c);
    terse_comm_destroy(r);
}

/* Rank 0's NaN abandons call 2 on every rank; the layer must be as before, so the calls that
 * follow equal a reference that never saw call 2. */
static float grad_skip_call2(int rank, size_t i, int call) { return ref_gradient(rank, i, call >= 2 ? call + 1 : call); }

static void run_abandoned(void)
{
    const case_t cs = {64, 48, 2, 1, 1, 1, 0, 2, 5};
    const size_t n = 64 * 48;
    float *buf = malloc(n * sizeof *buf), *ref = malloc(n * sizeof *ref);
    int id;
    terse_comm_t *c = make(&cs, &id);
    ref_t f;
    ref_init(&f, &cs);
    int done = 0; /* the layer's completed calls */
    for (int call = 0; call < 5; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        if (call == 2) {
            if (rank_ == 0) buf[5] = NAN;
            terse_status_t s = terse_allreduce(c, id, buf);
            EXPECT(s == TERSE_ERR_NONFINITE, "rank 0's NaN: status %d (%s)", s, terse_last_error());
            continue;
        }
        EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "%s", terse_last_error());
        /* the layer's call counter did not advance: the reference runs as call `done` with the
         * gradient of `call` */
        ref_call(&cs, &f, id, done, grad_skip_call2, ref);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "after the abandoned call, call %d: element %zu %.9g vs %.9g",
               call, bad, buf[bad], ref[bad]);
        done++;
    }
    ref_free(&f);
    free(buf); free(ref);
    terse_comm_destroy(c);
}

static float grad_zero_then_real(int rank, size_t i, int call) { return call < 2 ? 0.0f : ref_gradient(rank, i, call); }

/* Zero gradients: zero results, no NaN; then real gradients compress again. */
static void run_zero(int ef, int warm)
{
    const case_t cs = {64, 48, 4, warm, 0, ef, 0, 2, 0};
    const size_t n = 64 * 48;
    float *buf = malloc(n * sizeof *buf), *ref = malloc(n * sizeof *ref);
    int id;
    terse_comm_t *c = make(&cs, &id);
    ref_t f;
    ref_init(&f, &cs);
    for (int call = 0; call < 4; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = grad_zero_then_real(rank_, i, call);
        EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "%s", terse_last_error());
        ref_call(&cs, &f, id, call, grad_zero_then_real, ref);
        int finite = 1, zero = 1;
        for (size_t i = 0; i < n; i++) {
            finite &= isfinite(buf[i]) != 0;
            zero &= buf[i] == 0.0f;
        }
        EXPECT(finite, "zero gradients (ef %d warm %d) call %d: a NaN or Inf", ef, warm, call);
        EXPECT(call < 2 ? zero : !zero, "zero gradients (ef %d warm %d) call %d: zero result %d", ef, warm, call, zero);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "zero gradients call %d: element %zu %.9g vs %.9g", call, bad,
               buf[bad], ref[bad]);
    }
    ref_free(&f);
    free(buf); free(ref);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    /* rows cols rank warm start ef sum min_rate seed */
    static const case_t cases[] = {
        {64, 48, 4, 1, 0, 1, 0, 2, 0},
        {64, 48, 2, 0, 2, 1, 0, 2, 0},
        {64, 48, 1, 1, 2, 0, 1, 2, 0},
        {64, 48, 4, 1, 0, 1, 1, 2, 7},
        {48, 64, 4, 1, 1, 1, 0, 2, 3},
        {7, 5, 1, 1, 0, 1, 1, 2, 0},
        {7, 5, 2, 0, 0, 0, 0, 1, 0},
        {7, 5, 2, 1, 0, 1, 0, 2, 0},   /* 12 * 2 * 2 = 48 >= 35: dense */
        {100, 1, 4, 1, 0, 1, 0, 2, 0}, /* 1-D: dense */
        {20, 30, 8, 1, 0, 1, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 4);

    char dir[64], path[128];
    mpitest_ckpt_dir("powersgd", dir, path);
    run_resume(path);
    run_abandoned();
    run_zero(1, 1);
    run_zero(0, 1);
    run_zero(1, 0);

    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("test_powersgd");
    MPI_Finalize();
    return rc;
}
