/* terse_state_save / terse_state_load under mpirun: a run resumed from a checkpoint equals
 * the uninterrupted run bit for bit; bad files fail on every rank and change nothing. */
#include <stdlib.h>
#include <sys/stat.h>
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

static unsigned char *slurp(const char *file, size_t *len)
{
    FILE *f = fopen(file, "rb");
    EXPECT(f != NULL, "open %s", file);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc(*len + 64);
    EXPECT(fread(d, 1, *len, f) == *len, "read %s", file);
    fclose(f);
    return d;
}

static void spit(const char *path, const unsigned char *d, size_t len)
{
    char file[160];
    snprintf(file, sizeof file, "%s.rank%d", path, rank_);
    FILE *f = fopen(file, "wb");
    EXPECT(f && fwrite(d, 1, len, f) == len, "write %s", file);
    if (f) fclose(f);
}

/* Recomputes the trailing checksum (FNV-1a of every byte before it), so that a crafted
 * file gets past it to the check it is meant for. */
static void reseal(unsigned char *d, size_t len)
{
    const uint64_t sum = mpitest_hash(d, len - 8);
    memcpy(d + len - 8, &sum, 8);
}

static terse_comm_t *make(int *ids);
static void run(terse_comm_t *c, const int *ids, int from, int to, float *w, float *b);

/* Files crafted from this rank's valid checkpoint at `path`: each is refused on every rank
 * with the status and words it calls for, and the communicator stays as it was. */
static void crafted_files(const char *dir, const char *path)
{
    char mine[160], next[160], crafted[128];
    snprintf(mine, sizeof mine, "%s.rank%d", path, rank_);
    snprintf(next, sizeof next, "%s.rank%d", path, (rank_ + 1) % nranks_);
    snprintf(crafted, sizeof crafted, "%s/crafted", dir);
    size_t len = 0, nlen = 0;
    unsigned char *d = slurp(mine, &len);
    if (!d) return;
    int ids[2];
    terse_comm_t *z = make(ids);
    const uint32_t newer = 99, more_ranks = (uint32_t)nranks_ + 1;
    struct {
        const char *what, *words;
        terse_status_t want;
        size_t offset; /* where to write `value` (4 bytes), or 0 */
        uint32_t value;
    } cases[] = {
        {"a file from a newer version", "newer", TERSE_ERR_IO, 8, newer},
        {"a file for another rank count", "holds rank", TERSE_ERR_MISMATCH, 16, more_ranks},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned char *e = malloc(len);
        memcpy(e, d, len);
        memcpy(e + cases[k].offset, &cases[k].value, 4);
        reseal(e, len);
        spit(crafted, e, len);
        free(e);
        MPI_Barrier(MPI_COMM_WORLD);
        terse_status_t s = terse_state_load(z, crafted);
        EXPECT(s == cases[k].want && strstr(terse_last_error(), cases[k].words), "%s: %d %s", cases[k].what, s,
               terse_last_error());
    }
    /* not a state file at all */
    spit(crafted, (const unsigned char *)"hello, world", 12);
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT(terse_state_load(z, crafted) == TERSE_ERR_IO && strstr(terse_last_error(), "not a terse state file"),
           "a foreign file: %s", terse_last_error());
    /* bytes after the last layer, checksum intact */
    unsigned char *t = realloc(d, len + 8);
    d = t;
    memmove(d + len, d + len - 8, 8);
    memset(d + len - 8, 0, 8);
    reseal(d, len + 8);
    spit(crafted, d, len + 8);
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT(terse_state_load(z, crafted) == TERSE_ERR_IO && strstr(terse_last_error(), "trailing"),
           "trailing bytes: %s", terse_last_error());
    /* the next rank's file in this rank's place */
    if (nranks_ > 1) {
        unsigned char *o = slurp(next, &nlen);
        if (o) spit(crafted, o, nlen);
        free(o);
        MPI_Barrier(MPI_COMM_WORLD);
        EXPECT(terse_state_load(z, crafted) == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "holds rank"),
               "another rank's file: %s", terse_last_error());
    }
    /* paths */
    char *longp = malloc(5000);
    memset(longp, 'a', 4999);
    longp[4999] = '\0';
    EXPECT(terse_state_save(z, longp) == TERSE_ERR_ARG && strstr(terse_last_error(), "too long"), "save: a long path");
    EXPECT(terse_state_load(z, longp) == TERSE_ERR_ARG, "load: a long path");
    EXPECT(terse_state_save(z, "") == TERSE_ERR_ARG && terse_state_load(z, "") == TERSE_ERR_ARG, "empty paths");
    EXPECT(terse_state_save(z, NULL) == TERSE_ERR_ARG, "save: NULL path");
    free(longp);
    terse_stats_t st;
    terse_layer_stats(z, ids[0], &st);
    EXPECT(st.calls == 0 && st.step == 0, "nothing loaded from any crafted file");
    terse_comm_destroy(z);
    mpitest_unlink_rank_file(crafted);
    free(d);
}

/* A save that fails on one rank only (its temporary file cannot be created) fails on every
 * rank and leaves the previous checkpoint in place and loadable. */
static void unwritable_on_one_rank(const char *dir, const char *path)
{
    if (nranks_ < 2) return;
    char block[160];
    snprintf(block, sizeof block, "%s.rank%d.tmp", path, nranks_ - 1);
    if (rank_ == nranks_ - 1) EXPECT(mkdir(block, 0700) == 0, "mkdir %s", block);
    MPI_Barrier(MPI_COMM_WORLD);
    int ids[2];
    terse_comm_t *z = make(ids);
    float w[1000], b[7];
    run(z, ids, 0, 2, w, b);
    terse_status_t s = terse_state_save(z, path);
    EXPECT(s == TERSE_ERR_IO && strstr(terse_last_error(), "no checkpoint was replaced"),
           "a save failing on one rank: %d %s", s, terse_last_error());
    terse_comm_destroy(z);
    if (rank_ == nranks_ - 1) rmdir(block);
    z = make(ids);
    EXPECT(terse_state_load(z, path) == TERSE_OK, "the previous checkpoint still loads: %s", terse_last_error());
    terse_stats_t st;
    terse_layer_stats(z, ids[0], &st);
    EXPECT(st.step == 5, "and is the previous one: step %llu", (unsigned long long)st.step);
    terse_comm_destroy(z);
    (void)dir;
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
    char dir[64], path[128];
    mpitest_ckpt_dir("state", dir, path);

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
        mpitest_unlink_rank_file(later);
        mpitest_unlink_rank_file(mixed);
    }

    /* a job killed between the ranks' renames: the last rank still has the old file, and the
     * new one complete as its .tmp; the load takes the newest checkpoint on every rank */
    if (nranks_ > 1) {
        char older[128], newer[128], from[160], to[160];
        snprintf(older, sizeof older, "%s/torn", dir);
        snprintf(newer, sizeof newer, "%s/torn-new", dir);
        copy_file(path, older); /* step 5 */
        EXPECT(terse_state_save(a, newer) == TERSE_OK, "save: %s", terse_last_error()); /* step 10 */
        snprintf(from, sizeof from, "%s.rank%d", newer, rank_);
        snprintf(to, sizeof to, "%s.rank%d%s", older, rank_, rank_ == nranks_ - 1 ? ".tmp" : "");
        EXPECT(rename(from, to) == 0, "rename %s %s", from, to);
        MPI_Barrier(MPI_COMM_WORLD);
        terse_comm_t *m = make(ids2);
        EXPECT(terse_state_load(m, older) == TERSE_OK, "a torn save loads: %s", terse_last_error());
        terse_layer_stats(m, ids2[0], &st);
        EXPECT(st.step == 10 && st.calls == 10, "the newest checkpoint: step %llu", (unsigned long long)st.step);
        run(m, ids2, 10, 12, w2, b2);
        run(a, ids, 10, 12, w1, b1);
        EXPECT(memcmp(w1, w2, sizeof w1) == 0 && memcmp(b1, b2, sizeof b1) == 0,
               "resumed from a torn save equals the uninterrupted run");
        terse_comm_destroy(m);
        mpitest_unlink_rank_file(older);
        if (rank_ == nranks_ - 1) unlink(to);
    }

    crafted_files(dir, path);
    unwritable_on_one_rank(dir, path);

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
    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("test_state");
    MPI_Finalize();
    return rc;
}
