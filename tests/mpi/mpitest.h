/* A minimal harness for multi-rank tests run under mpirun (Check's fork mode and MPI_Init
 * do not mix). Each EXPECT counts on the calling rank; mpitest_finish gathers the counts,
 * prints "N passed, N failed" on rank 0 and returns the exit code. */
#ifndef TERSE_MPITEST_H
#define TERSE_MPITEST_H

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static inline int mpitest_rank(void)
{
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

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

/* Removes this rank's checkpoint file "<path>.rank<R>". */
static inline void mpitest_unlink_rank_file(const char *path)
{
    char f[256];
    snprintf(f, sizeof f, "%s.rank%d", path, mpitest_rank());
    unlink(f);
}

/* 1 if every rank passed the same value. */
static inline int mpitest_same_on_all(uint64_t v)
{
    uint64_t lo = v, hi = v;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

/* Makes a fresh directory /tmp/terse-<name>-<random> on rank 0 and gives its path to every
 * rank in dir; dir is "" if it could not be made. */
static inline void mpitest_tmpdir(const char *name, char dir[64])
{
    snprintf(dir, 64, "/tmp/terse-%s-XXXXXX", name);
    if (mpitest_rank() == 0 && !mkdtemp(dir)) dir[0] = '\0';
    MPI_Bcast(dir, 64, MPI_CHAR, 0, MPI_COMM_WORLD);
}

/* mpitest_tmpdir, and "<dir>/ckpt" in path: where a test saves its checkpoint. */
static inline void mpitest_ckpt_dir(const char *name, char dir[64], char path[128])
{
    mpitest_tmpdir(name, dir);
    snprintf(path, 128, "%s/ckpt", dir);
}

/* Removes every rank's checkpoint "<path>.rank<R>" of terse_state_save, then the directory
 * dir that held it. Collective. */
static inline void mpitest_tmpdir_remove(const char *dir, const char *path)
{
    mpitest_unlink_rank_file(path);
    MPI_Barrier(MPI_COMM_WORLD);
    if (mpitest_rank() == 0 && dir[0]) rmdir(dir);
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
