/* terse_state_save / terse_state_load under mpirun: a run resumed from a checkpoint equals
 * the uninterrupted run bit for bit; bad files fail on every rank and change nothing. */
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;
static const char cfg[] = "compressor=topk:density=0.05; feedback=ef; min_size=0";

static void grad(float *g, size_t n, int call)
{
    for (size_t i = 0; i < n; i++)
        g[i] = (float)(((i * 2654435761u + (size_t)call * 97u + (size_t)rank_ * 31u) % 1000u)) / 500.0f - 1.0f;
}

/* Copies this rank's file of checkpoint `from` to checkpoint `to`. */
static void copy_file(const char *from, const char *to)
{
    char src[160], dst[160], buf[4096];
    snprintf(src, sizeof src, "%s.rank%d", from, rank_);
    snprintf(dst, sizeof dst, "%s.rank%d", to, rank_);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    EXPECT(in && out, "open %s and %s", src, dst);
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0) EXPECT(fwrite(buf, 1, n, out) == n, "write %s", dst);
    if (in) fclose(in);
    if (out) fclose(out);
}

static void remove_rank_file(const char *path)
{
    char f[160];
    snprintf(f, sizeof f, "%s.rank%d", path, rank_);
    unlink(f);
}

static terse_comm_t *make(int *ids)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "w", 40, 25, NULL, &ids[0]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "b", 7, 1, "compressor=fp16", &ids[1]) == TERSE_OK, "%s", terse_last_error());
    return c;
}

static void run(terse_comm_t *c, const int *ids, int from, int to, float *w, float *b)
{
    for (int call = from; call < to; call++) {
        grad(w, 1000, call);
        grad(b, 7, call + 1000);
        float *bufs[2] = {w, b};
        EXPECT(terse_allreduce_many(c, 2, ids, bufs) == TERSE_OK, "%s", terse_last_error());
        terse_step_end(c);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    char dir[64] = "/tmp/terse-state-XXXXXX", path[128];
    if (rank_ == 0 && !mkdtemp(dir)) dir[0] = '\0';
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/ckpt", dir);

    int ids[2], ids2[2];
    float w1[1000], b1[7], w2[1000], b2[7];
    terse_comm_t *a = make(ids);
    run(a, ids, 0, 5, w1, b1);
    EXPECT(terse_state_save(a, path) == TERSE_OK, "save: %s", terse_last_error());
    run(a, ids, 5, 10, w1, b1);

    terse_comm_t *r = make(ids2);
    EXPECT(terse_state_load(r, path) == TERSE_OK, "load: %s", terse_last_error());
    terse_stats_t st;
    terse_layer_stats(r, ids2[0], &st);
    EXPECT(st.calls == 5 && st.step == 5, "counters restored: calls %llu step %llu",
           (unsigned long long)st.calls, (unsigned long long)st.step);
    run(r, ids2, 5, 10, w2, b2);
    EXPECT(memcmp(w1, w2, sizeof w1) == 0 && memcmp(b1, b2, sizeof b1) == 0,
           "the resumed run equals the uninterrupted one bit for bit");

    /* a different layer list: mismatch on every rank, state unchanged */
    terse_comm_t *other = NULL;
    int oid;
    terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &other);
    terse_layer_add(other, "w", 1000, 1, NULL, &oid);
    EXPECT(terse_state_load(other, path) != TERSE_OK && terse_last_error()[0], "different layers are refused");
    terse_comm_destroy(other);

    /* files from two checkpoints (the last rank's from a later save, as a job killed between
     * the ranks' renames would leave them): refused on every rank, nothing changes */
    if (nranks_ > 1) {
        char later[128], mixed[128];
        snprintf(later, sizeof later, "%s/later", dir);
        snprintf(mixed, sizeof mixed, "%s/mixed", dir);
        EXPECT(terse_state_save(a, later) == TERSE_OK, "save: %s", terse_last_error());
        copy_file(rank_ == nranks_ - 1 ? later : path, mixed);
        MPI_Barrier(MPI_COMM_WORLD);
        terse_comm_t *m = make(ids2);
        terse_status_t ms = terse_state_load(m, mixed);
        EXPECT(ms == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "different checkpoints"),
               "files of different steps: %d %s", ms, terse_last_error());
        terse_layer_stats(m, ids2[0], &st);
        EXPECT(st.calls == 0 && st.step == 0, "nothing loaded from a mix");
        terse_comm_destroy(m);
        remove_rank_file(later);
        remove_rank_file(mixed);
    }

    /* a corrupted file on the last rank: every rank fails, nothing changes */
    char mine[160];
    snprintf(mine, sizeof mine, "%s.rank%d", path, rank_);
    if (rank_ == nranks_ - 1) {
        FILE *f = fopen(mine, "r+b");
        fseek(f, 100, SEEK_SET);
        fputc(0x5a, f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    terse_comm_t *z = make(ids2);
    terse_status_t s = terse_state_load(z, path);
    EXPECT(s == TERSE_ERR_IO, "a corrupted file on one rank fails on all: %d %s", s, terse_last_error());
    terse_layer_stats(z, ids2[0], &st);
    EXPECT(st.calls == 0 && st.step == 0, "nothing loaded");
    /* a truncated file */
    if (rank_ == 0) EXPECT(truncate(mine, 50) == 0, "truncate");
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT(terse_state_load(z, path) == TERSE_ERR_IO, "a truncated file: %s", terse_last_error());
    /* a missing file */
    EXPECT(terse_state_load(z, "/nonexistent/terse") == TERSE_ERR_IO, "a missing file: %s", terse_last_error());
    EXPECT(terse_state_save(z, "/nonexistent/dir/terse") == TERSE_ERR_IO, "an unwritable path: %s", terse_last_error());
    EXPECT(terse_state_save(NULL, path) == TERSE_ERR_ARG && terse_state_load(z, NULL) == TERSE_ERR_ARG, "NULLs");
    terse_comm_destroy(z);
    terse_comm_destroy(r);
    terse_comm_destroy(a);
    MPI_Barrier(MPI_COMM_WORLD);
    remove_rank_file(path);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank_ == 0) rmdir(dir);
    int rc = mpitest_finish("test_state");
    MPI_Finalize();
    return rc;
}
