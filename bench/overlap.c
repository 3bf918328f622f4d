/* terse-bench --overlap MS: does terse_iallreduce hide communication behind computation?
 *
 * Per timed iteration, two ways of doing the same work, side by side:
 *   serial:     terse_allreduce of every layer, then the computation
 *   overlapped: terse_iallreduce of every layer, the computation, terse_wait of each
 * The computation is a fixed amount of floating-point work calibrated once to take MS
 * milliseconds alone on this rank, so that when the progress thread takes the core it runs
 * slower, as real work would (a loop that spins until MS have passed would not).
 * hidden = (serial - overlapped) / min(allreduce alone, computation alone): 1 when the
 * shorter of the two is entirely hidden, 0 when nothing is. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "terse.h"
#include "terse_mpi.h"

static volatile float sink;

/* `units` of dependent arithmetic on a small array that stays in L1. */
static void compute(long units)
{
    float a[256];
    for (int i = 0; i < 256; i++) a[i] = (float)i * 1e-3f;
    for (long u = 0; u < units; u++)
        for (int i = 0; i < 256; i++) a[i] = a[i] * 0.999f + 0.001f;
    sink = a[17];
}

/* The units that take `ms` milliseconds alone, the largest of the ranks' (so every rank does
 * the same work). */
static long calibrate(double ms)
{
    long units = 1000;
    for (;;) {
        double t0 = MPI_Wtime();
        compute(units);
        double dt = (MPI_Wtime() - t0) * 1e3;
        if (dt > 20.0 || units > (1L << 40)) {
            long want = (long)((double)units * ms / dt) + 1, most = want;
            MPI_Allreduce(&want, &most, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
            return most;
        }
        units *= 4;
    }
}

static double max_of(double v)
{
    double m = v;
    MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

int bench_overlap(const char *cfg, const bench_shape_t *shapes, size_t n_layers, float *const *grad,
                  float *const *buf, const size_t *counts, double ms, int iters, int warmup)
{
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    terse_comm_t *comm = NULL;
    if (terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &comm) != TERSE_OK) {
        if (rank == 0) fprintf(stderr, "terse-bench: %s\n", terse_last_error());
        return 2;
    }
    int *ids = malloc(n_layers * sizeof *ids);
    terse_request_t **req = malloc(n_layers * sizeof *req);
    int ok = ids && req;
    for (size_t l = 0; l < n_layers && ok; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%zu", l);
        ok = terse_layer_add(comm, name, shapes[l].rows, shapes[l].cols, NULL, &ids[l]) == TERSE_OK;
    }
    const long units = calibrate(ms);
    double t_ar = 0, t_cmp = 0, t_ser = 0, t_ovl = 0;
    for (int it = -warmup; it < iters && ok; it++) {
        double t[5];
        for (size_t l = 0; l < n_layers; l++) memcpy(buf[l], grad[l], counts[l] * sizeof(float));
        MPI_Barrier(MPI_COMM_WORLD);
        t[0] = MPI_Wtime();
        ok &= terse_allreduce_many(comm, (int)n_layers, ids, buf) == TERSE_OK;
        t[1] = MPI_Wtime();
        compute(units);
        t[2] = MPI_Wtime();
        for (size_t l = 0; l < n_layers; l++) memcpy(buf[l], grad[l], counts[l] * sizeof(float));
        MPI_Barrier(MPI_COMM_WORLD);
        t[3] = MPI_Wtime();
        for (size_t l = n_layers; l-- > 0;) ok &= terse_iallreduce(comm, ids[l], buf[l], &req[l]) == TERSE_OK;
        compute(units);
        for (size_t l = n_layers; l-- > 0;) ok &= terse_wait(req[l]) == TERSE_OK;
        t[4] = MPI_Wtime();
        terse_step_end(comm);
        if (it < 0) continue;
        t_ar += t[1] - t[0];
        t_cmp += t[2] - t[1];
        t_ser += t[2] - t[0];
        t_ovl += t[4] - t[3];
    }
    if (!ok) fprintf(stderr, "terse-bench: rank %d: %s\n", rank, terse_last_error());
    int provided = 0;
    MPI_Query_thread(&provided);
    t_ar = max_of(t_ar / iters * 1e3);
    t_cmp = max_of(t_cmp / iters * 1e3);
    t_ser = max_of(t_ser / iters * 1e3);
    t_ovl = max_of(t_ovl / iters * 1e3);
    size_t total = 0;
    for (size_t l = 0; l < n_layers; l++) total += counts[l];
    if (rank == 0) {
        const double shorter = t_ar < t_cmp ? t_ar : t_cmp;
        printf("%14zu %9zu %12.2f %12.2f %12.2f %12.2f %8.2f%s\n", total * 4, n_layers, t_ar, t_cmp,
               t_ser, t_ovl, shorter > 0 ? (t_ser - t_ovl) / shorter : 0.0,
               provided < MPI_THREAD_SERIALIZED ? "  (MPI below SERIALIZED: no progress thread)" : "");
    }
    terse_comm_destroy(comm);
    free(ids);
    free(req);
    int all = ok;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all ? 0 : 1;
}
