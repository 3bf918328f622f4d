/* What one pass over the vector costs next to MPI_Allreduce, on this machine: the floor under
 * any allreduce that checks its input or returns a mean (docs/performance.md, "Why auto still
 * loses on loopback"). For each size, best of --iters rounds, the four variants interleaved:
 *   bare   MPI_Allreduce in place (what terse-bench --baseline times)
 *   scan   terse's read-only non-finite scan of the input (engine_has_nonfinite), then the
 *          same allreduce
 *   scale  the same allreduce, then one pass multiplying by 1/n (a mean)
 *   both   scan, allreduce, scale: the least a checked mean can do
 * Prints each variant's time over bare's, slowest rank. No terse collective is involved: the
 * allreduce is MPI's, the scan terse's own.
 *
 *     mpirun -np 4 build/bench/terse-pass-cost [--sizes-mib 1,2,4,8,16] [--iters 30] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int me, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    const char *sizes = "1,2,4,8,16";
    int iters = 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--sizes-mib") == 0) sizes = argv[i + 1];
        else if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
    }
    if (me == 0) printf("# %d ranks; time / bare in-place MPI_Allreduce, best of %d\n#  MiB   bare (us)   scan   scale   both\n", n, iters);
    for (const char *p = sizes; *p;) {
        const size_t mib = strtoul(p, NULL, 10), count = mib << 18;
        while (*p && *p != ',') p++;
        if (*p) p++;
        float *g = malloc(count * sizeof *g), *buf = malloc(count * sizeof *buf);
        if (!g || !buf) MPI_Abort(MPI_COMM_WORLD, 1);
        for (size_t i = 0; i < count; i++) g[i] = (float)((i * 7 + (size_t)me) % 13) * 0.1f;
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        volatile int sink = 0;
        for (int it = 0; it < iters; it++)
            for (int v = 0; v < 4; v++) {
                memcpy(buf, g, count * sizeof *g);
                MPI_Barrier(MPI_COMM_WORLD);
                double t = MPI_Wtime();
                if (v == 1 || v == 3) sink += engine_has_nonfinite(buf, count);
                MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                if (v >= 2)
                    for (size_t i = 0; i < count; i++) buf[i] *= 1.0f / (float)n;
                t = MPI_Wtime() - t;
                MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                if (t < best[v]) best[v] = t;
            }
        if (me == 0) printf("%6zu %11.0f %6.2f %7.2f %6.2f\n", mib, best[0] * 1e6, best[1] / best[0], best[2] / best[0],
                   best[3] / best[0]);
        free(g);
        free(buf);
    }
    MPI_Finalize();
    return 0;
}
