/* A minimal harness for multi-rank tests run under mpirun (Check's fork mode and MPI_Init
 * do not mix). Each EXPECT counts on the calling rank; mpitest_finish gathers the counts,
 * prints "N passed, N failed" on rank 0 and returns the exit code. */
#ifndef TERSE_MPITEST_H
#define TERSE_MPITEST_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int mpitest_pass, mpitest_fail;

#define EXPECT(cond, ...)                                                                   \
    do {                                                                                    \
        if (cond) {                                                                         \
            mpitest_pass++;                                                                 \
        } else {                                                                            \
            int r_;                                                                         \
            MPI_Comm_rank(MPI_COMM_WORLD, &r_);                                             \
            mpitest_fail++;                                                                 \
            fprintf(stderr, "rank %d: %s:%d: expected %s: ", r_, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fprintf(stderr, "\n");                                                          \
        }                                                                                   \
    } while (0)

static inline uint64_t mpitest_hash(const void *data, size_t n)
{
    const unsigned char *b = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The first i < n at which a[i] and b[i] differ in their bits, or n if none does. */
static inline size_t mpitest_first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0) return i;
    return n;
}

/* 1 if every rank passed the same value. */
static inline int mpitest_same_on_all(uint64_t v)
{
    uint64_t lo = v, hi = v;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

static inline int mpitest_finish(const char *name)
{
    int c[2] = {mpitest_pass, mpitest_fail}, rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Allreduce(MPI_IN_PLACE, c, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s: %d passed, %d failed\n", name, c[0], c[1]);
    return c[1] ? 1 : 0;
}

#endif
