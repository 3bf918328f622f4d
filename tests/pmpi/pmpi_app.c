/* An MPI program that knows nothing of terse, for the PMPI preload (docs/pmpi.md). It sums
 * synthetic gradients with MPI_Allreduce the way a training loop would, next to the calls a
 * preload must leave alone, and checks what it gets back against references it computes
 * itself: every rank can generate every rank's data.
 *
 *   usage: pmpi_app MODE [ITERS]      (ITERS = 50)
 *
 * Each iteration makes these calls on MPI_COMM_WORLD:
 *   large float sums  A  in place,               N = 100003 floats (a prime: an n x 1 layer)
 *                     R  sendbuf S -> recvbuf R, N floats, other data (same count as A)
 *                     B  in place, 65536 floats (exactly the default TERSE_MIN_SIZE)
 *                     D  in place, N floats, on a fresh MPI_Comm_dup, freed right after
 *   other calls       C  in place, 65535 floats (one below TERSE_MIN_SIZE)
 *                     small float sum (1000), int sum (N), float MAX (N), double sum (N)
 * and a few int MIN allreduces of its own to agree on the verdict.
 *
 * MODE says what to expect of the large float sums:
 *   exact     bitwise the serial rank-order sum ((x0 + x1) + x2) ... (terse with codec none)
 *   lossy     compressed: bitwise identical on every rank, and the first call misses more
 *             than 5% of the exact sum (in norm) but at most all of it
 *   ef        lossy, and error feedback per buffer: the running mean over the iterations
 *             comes within half of the first call's error (A and R share a count but not a
 *             residual; with one residual for both, A's mean stays at 0.74 of its first
 *             call's error)
 *   plain     plain MPI: within 1e-5 of the exact sum (the summation order is MPI's)
 *   fallback  4 calls of A only: the first and third lossy; on the second, rank 0 sums buffer
 *             A again while the others sum another buffer of the same count, on the fourth
 *             rank 1's element 7 is a NaN: those two within 1e-5 of the exact sum (NaN at 7).
 * The other calls must be exact in every mode (their data sum without rounding; MAX is
 * exact). Rank 0 prints "pmpi_app: MODE ok: calls: large_float_sum=L other_allreduce=O" and
 * exits 0, or prints what failed and exits 1. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_LARGE 100003
#define N_EDGE 65536
#define N_SMALL 1000

typedef enum { MODE_EXACT, MODE_LOSSY, MODE_EF, MODE_PLAIN, MODE_FALLBACK } mode_t_;

static int rank, nranks;
static int fails;
static int n_large, n_other;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "pmpi_app: rank %d: ", rank);                                  \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            fails++;                                                                       \
        }                                                                                  \
    } while (0)

static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* A uniform float in [-1, 1) from (stream, i). */
static float unit(uint32_t stream, uint32_t i)
{
    return (float)((double)(mix(mix(stream * 0x9e3779b9u + 1u) ^ i) >> 8) / 8388608.0 - 1.0);
}

/* Rank r's gradient of tensor `which`: a component all ranks share, larger on every 16th
 * coordinate (a heavy tail for topk to find), plus the rank's own noise. */
static float grad(int which, int r, size_t i)
{
    float common = unit(100u + (uint32_t)which, (uint32_t)i) * (mix((uint32_t)i) % 16 == 0 ? 8.0f : 1.0f);
    return common + 0.5f * unit(1000u * (uint32_t)which + (uint32_t)r, (uint32_t)i);
}

/* This rank's data of each tensor (0 A, 1 R, 2 B, 3 D, 4 C, 5 MAX), generated once. */
#define N_TENSORS 6
static float *own[N_TENSORS];

static void fill(float *v, size_t n, int which)
{
    memcpy(v, own[which], n * sizeof *v);
}

/* The serial rank-order float sum, as terse's dense protocol computes it. */
static void rank_order_sum(float *out, size_t n, int which)
{
    for (size_t i = 0; i < n; i++) {
        float s = grad(which, 0, i);
        for (int r = 1; r < nranks; r++) s += grad(which, r, i);
        out[i] = s;
    }
}

static double rel_err(const float *got, const float *want, size_t n)
{
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        w += (double)want[i] * want[i];
    }
    return sqrt(d / w);
}

static double rel_err_mean(const double *sum, int iters, const float *want, size_t n)
{
    double d = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        double m = sum[i] / iters;
        d += (m - want[i]) * (m - want[i]);
        w += (double)want[i] * want[i];
    }
    return sqrt(d / w);
}

static void allreduce(const void *s, void *r, int n, MPI_Datatype t, MPI_Op op, MPI_Comm c, int large)
{
    int rc = MPI_Allreduce(s, r, n, t, op, c);
    CHECK(rc == MPI_SUCCESS, "MPI_Allreduce returned %d", rc);
    if (large)
        n_large++;
    else
        n_other++;
}

/* Rank 0's bits must be every rank's bits. */
static void check_same_everywhere(const float *v, size_t n, const char *what)
{
    float *r0 = malloc(n * sizeof *r0);
    memcpy(r0, v, n * sizeof *r0);
    MPI_Bcast(r0, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(memcmp(r0, v, n * sizeof *r0) == 0, "%s differs from rank 0's result", what);
    free(r0);
}

/* What a large float sum must be in this mode. */
static void check_large(mode_t_ mode, const float *got, const float *exact, size_t n,
                        const char *what, int iter)
{
    check_same_everywhere(got, n, what);
    double e = rel_err(got, exact, n);
    if (mode == MODE_EXACT)
        CHECK(memcmp(got, exact, n * sizeof *got) == 0,
              "%s, iteration %d: not the rank-order sum (relative error %.3g)", what, iter, e);
    else if (mode == MODE_PLAIN)
        CHECK(e < 1e-5, "%s, iteration %d: relative error %.3g, want < 1e-5", what, iter, e);
    else if (iter == 0)
        CHECK(e > 0.05 && e <= 1.0,
              "%s, first call: relative error %.3g, want a compressed sum (in (0.05, 1])", what, e);
}

static void accumulate(double *acc, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) acc[i] += v[i];
}

/* The calls that must come back exact whatever the preload does. */
static void other_calls(float *edge, const float *edge_exact, const float *max_exact)
{
    /* one element below the threshold: passed through, so MPI's sum, not the rank order */
    fill(edge, N_EDGE - 1, 4);
    allreduce(MPI_IN_PLACE, edge, N_EDGE - 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 0);
    double e = rel_err(edge, edge_exact, N_EDGE - 1);
    CHECK(e < 1e-5, "65535-float sum: relative error %.3g, want < 1e-5", e);

    /* values with few significant bits sum exactly in any order */
    float small[N_SMALL];
    for (int i = 0; i < N_SMALL; i++) small[i] = (float)(i % 97 - 48) + 0.25f * (float)rank;
    allreduce(MPI_IN_PLACE, small, N_SMALL, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 0);
    int bad = 0;
    for (int i = 0; i < N_SMALL; i++)
        bad += small[i] != (float)nranks * (float)(i % 97 - 48) + 0.25f * (float)(nranks * (nranks - 1) / 2);
    CHECK(bad == 0, "small float sum: %d of %d elements wrong", bad, N_SMALL);

    int *iv = malloc(N_LARGE * sizeof *iv), *isum = malloc(N_LARGE * sizeof *isum);
    for (int i = 0; i < N_LARGE; i++) iv[i] = i % 1000 - 500 + rank;
    allreduce(iv, isum, N_LARGE, MPI_INT, MPI_SUM, MPI_COMM_WORLD, 0);
    bad = 0;
    for (int i = 0; i < N_LARGE; i++) bad += isum[i] != nranks * (i % 1000 - 500) + nranks * (nranks - 1) / 2;
    CHECK(bad == 0, "int sum: %d of %d elements wrong", bad, N_LARGE);

    float *fv = malloc(N_LARGE * sizeof *fv), *fmax = malloc(N_LARGE * sizeof *fmax);
    fill(fv, N_LARGE, 5);
    allreduce(fv, fmax, N_LARGE, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD, 0);
    bad = 0;
    for (int i = 0; i < N_LARGE; i++) bad += fmax[i] != max_exact[i];
    CHECK(bad == 0, "float MAX: %d of %d elements wrong", bad, N_LARGE);

    double *dv = malloc(N_LARGE * sizeof *dv);
    for (int i = 0; i < N_LARGE; i++) dv[i] = (double)(i % 1001 - 500) * 0.5 + rank;
    allreduce(MPI_IN_PLACE, dv, N_LARGE, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, 0);
    bad = 0;
    for (int i = 0; i < N_LARGE; i++)
        bad += dv[i] != nranks * ((double)(i % 1001 - 500) * 0.5) + nranks * (nranks - 1) / 2;
    CHECK(bad == 0, "double sum: %d of %d elements wrong", bad, N_LARGE);
    free(iv);
    free(isum);
    free(fv);
    free(fmax);
    free(dv);
}

static void run_fallback(void)
{
    float *a = malloc(N_LARGE * sizeof *a), *other = malloc(N_LARGE * sizeof *other);
    float *exact = malloc(N_LARGE * sizeof *exact);
    rank_order_sum(exact, N_LARGE, 0);
    for (int call = 0; call < 4; call++) {
        float *buf = call == 1 && rank > 0 ? other : a;
        fill(buf, N_LARGE, 0);
        if (call == 3 && rank == 1) buf[7] = NAN;
        allreduce(MPI_IN_PLACE, buf, N_LARGE, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 1);
        if (call == 3) {
            CHECK(isnan(buf[7]), "call 4 (a NaN on rank 1): element 7 is %g, want NaN", buf[7]);
            buf[7] = exact[7];
        } else {
            check_same_everywhere(buf, N_LARGE, "A");
        }
        double e = rel_err(buf, exact, N_LARGE);
        if (call == 1 || call == 3)
            CHECK(e < 1e-5, "call %d: relative error %.3g, want an exact sum", call + 1, e);
        else
            CHECK(e > 0.05 && e <= 1.0, "call %d: relative error %.3g, want a compressed sum",
                  call + 1, e);
    }
    free(a);
    free(other);
    free(exact);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    const char *m = argc > 1 ? argv[1] : "";
    static const char *const modes[] = {"exact", "lossy", "ef", "plain", "fallback"};
    int mi = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(m, modes[i]) == 0) mi = i;
    int iters = argc > 2 ? atoi(argv[2]) : 50;
    if (mi < 0 || iters < 1) {
        if (rank == 0) fprintf(stderr, "usage: pmpi_app exact|lossy|ef|plain|fallback [ITERS >= 1]\n");
        MPI_Finalize();
        return 2;
    }
    const mode_t_ mode = (mode_t_)mi;
    for (int w = 0; w < N_TENSORS; w++) {
        own[w] = malloc(N_LARGE * sizeof *own[w]);
        for (size_t i = 0; i < N_LARGE; i++) own[w][i] = grad(w, rank, i);
    }

    if (mode == MODE_FALLBACK) {
        run_fallback();
    } else {
        size_t n = N_LARGE;
        float *a = malloc(n * sizeof *a), *s = malloc(n * sizeof *s), *r = malloc(n * sizeof *r);
        float *b = malloc(N_EDGE * sizeof *b), *d = malloc(n * sizeof *d);
        float *edge = malloc(N_EDGE * sizeof *edge);
        float *ex_a = malloc(n * sizeof *ex_a), *ex_r = malloc(n * sizeof *ex_r);
        float *ex_b = malloc(N_EDGE * sizeof *ex_b), *ex_d = malloc(n * sizeof *ex_d);
        float *ex_edge = malloc(N_EDGE * sizeof *ex_edge), *ex_max = malloc(n * sizeof *ex_max);
        double *acc_a = calloc(n, sizeof *acc_a), *acc_r = calloc(n, sizeof *acc_r);
        double *acc_b = calloc(N_EDGE, sizeof *acc_b);
        rank_order_sum(ex_a, n, 0);
        rank_order_sum(ex_r, n, 1);
        rank_order_sum(ex_b, N_EDGE, 2);
        rank_order_sum(ex_d, n, 3);
        rank_order_sum(ex_edge, N_EDGE - 1, 4);
        for (size_t i = 0; i < n; i++) {
            ex_max[i] = grad(5, 0, i);
            for (int r = 1; r < nranks; r++) ex_max[i] = fmaxf(ex_max[i], grad(5, r, i));
        }
        double first_a = 0, first_r = 0, first_b = 0;
        for (int it = 0; it < iters; it++) {
            fill(a, n, 0);
            allreduce(MPI_IN_PLACE, a, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 1);
            check_large(mode, a, ex_a, n, "A (in place)", it);

            fill(s, n, 1);
            allreduce(s, r, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 1);
            check_large(mode, r, ex_r, n, "R (separate sendbuf)", it);
            CHECK(memcmp(s, own[1], n * sizeof *s) == 0, "the sendbuf of R was modified");

            fill(b, N_EDGE, 2);
            allreduce(MPI_IN_PLACE, b, N_EDGE, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, 1);
            check_large(mode, b, ex_b, N_EDGE, "B (65536 floats)", it);

            MPI_Comm dup;
            MPI_Comm_dup(MPI_COMM_WORLD, &dup);
            fill(d, n, 3);
            allreduce(MPI_IN_PLACE, d, (int)n, MPI_FLOAT, MPI_SUM, dup, 1);
            MPI_Comm_free(&dup);
            check_large(mode, d, ex_d, n, "D (on a duplicate)", it);

            other_calls(edge, ex_edge, ex_max);
            if (it == 0) {
                first_a = rel_err(a, ex_a, n);
                first_r = rel_err(r, ex_r, n);
                first_b = rel_err(b, ex_b, N_EDGE);
            }
            accumulate(acc_a, a, n);
            accumulate(acc_r, r, n);
            accumulate(acc_b, b, N_EDGE);
        }
        if (mode == MODE_EF) {
            double ma = rel_err_mean(acc_a, iters, ex_a, n);
            double mr = rel_err_mean(acc_r, iters, ex_r, n);
            double mb = rel_err_mean(acc_b, iters, ex_b, N_EDGE);
            CHECK(ma < first_a / 2, "A: running mean error %.3g after %d calls, first %.3g: want < half",
                  ma, iters, first_a);
            CHECK(mr < first_r / 2, "R: running mean error %.3g after %d calls, first %.3g: want < half",
                  mr, iters, first_r);
            CHECK(mb < first_b / 2, "B: running mean error %.3g after %d calls, first %.3g: want < half",
                  mb, iters, first_b);
            if (rank == 0)
                printf("pmpi_app: relative error of one call / of the mean of %d: A %.3f / %.3f, "
                       "R %.3f / %.3f, B %.3f / %.3f\n", iters, first_a, ma, first_r, mr, first_b, mb);
        }
        free(a); free(s); free(r); free(b); free(d); free(edge);
        free(ex_a); free(ex_r); free(ex_b); free(ex_d); free(ex_edge); free(ex_max);
        free(acc_a); free(acc_r); free(acc_b);
    }

    for (int w = 0; w < N_TENSORS; w++) free(own[w]);
    int ok = fails == 0, all_ok = 0;
    allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, 0);
    if (rank == 0) {
        if (all_ok)
            printf("pmpi_app: %s ok: calls: large_float_sum=%d other_allreduce=%d\n", m, n_large, n_other);
        else
            printf("pmpi_app: %s FAILED (see the messages above)\n", m);
        fflush(stdout);
    }
    MPI_Finalize();
    return all_ok ? 0 : 1;
}
