/* terse_allreduce_many's fused buckets under mpirun: a bucket of layers gives every layer
 * exactly the bits, statistics and state that terse_allreduce of each alone gives, in a
 * handful of collectives instead of a few per layer (counted here by wrapping the MPI
 * collectives, the profiling interface's way); a failure inside a bucket (a NaN, ranks
 * that list different layers) reaches every rank without a hang; bad arguments start
 * nothing. */
#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

/* ---- collective calls, counted ---- */

static long collectives_;

int MPI_Allgather(const void *sb, int sc, MPI_Datatype st, void *rb, int rc, MPI_Datatype rt, MPI_Comm comm)
{
    collectives_++;
    return PMPI_Allgather(sb, sc, st, rb, rc, rt, comm);
}

int MPI_Allgatherv(const void *sb, int sc, MPI_Datatype st, void *rb, const int rcs[], const int ds[],
                   MPI_Datatype rt, MPI_Comm comm)
{
    collectives_++;
    return PMPI_Allgatherv(sb, sc, st, rb, rcs, ds, rt, comm);
}

int MPI_Alltoallv(const void *sb, const int scs[], const int sds[], MPI_Datatype st, void *rb, const int rcs[],
                  const int rds[], MPI_Datatype rt, MPI_Comm comm)
{
    collectives_++;
    return PMPI_Alltoallv(sb, scs, sds, st, rb, rcs, rds, rt, comm);
}

int MPI_Bcast(void *b, int n, MPI_Datatype t, int root, MPI_Comm comm)
{
    collectives_++;
    return PMPI_Bcast(b, n, t, root, comm);
}

/* ---- a model of many layers, every codec and feedback ---- */

typedef struct {
    const char *name;
    size_t rows, cols;
    const char *config;
} spec_t;

static const spec_t model[] = {
    {"topk_ef", 30, 40, "compressor=topk:density=0.05; feedback=ef"},
    {"bias", 1, 64, NULL}, /* below min_size: dense */
    {"onebit", 40, 50, "compressor=onebit; feedback=ef"},
    {"qsgd", 33, 31, "compressor=qsgd:bits=4"},
    {"dgc", 50, 40, "compressor=dgc:density=0.01"},
    {"powersgd", 64, 48, "compressor=powersgd:rank=2,start=0; feedback=ef"},
    {"randk", 20, 60, "compressor=randk:density=0.1"},
    {"fp16", 25, 41, "compressor=fp16"},
    {"topk_ef21", 36, 36, "compressor=topk:k=50; feedback=ef21"},
    {"none", 40, 40, "compressor=none"},
    {"topk_econtrol", 30, 50, "compressor=topk:density=0.02; feedback=econtrol:eta=0.5"},
    {"bf16", 17, 70, "compressor=bf16"},
};
enum { L = sizeof model / sizeof model[0], MAXN = 64 * 48 };

static int rank_, nranks_;
static float bufs_[2][L + 1][MAXN];

static terse_comm_t *make(const char *cfg)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s: %s", cfg, terse_last_error());
    for (int l = 0; c && l < L; l++) {
        int id = -1;
        EXPECT(terse_layer_add(c, model[l].name, model[l].rows, model[l].cols, model[l].config, &id) == TERSE_OK &&
                   id == l,
               "%s: %s", model[l].name, terse_last_error());
    }
    return c;
}

/* The list: every layer, then the first again (a layer twice starts a new bucket). */
static int list_[L + 1];

static void fill(float *const *b, int step)
{
    for (int i = 0; i < L + 1; i++) {
        const int l = list_[i];
        for (size_t j = 0; j < model[l].rows * model[l].cols; j++) b[i][j] = ref_gradient(rank_, j + 7 * (size_t)l, step + i);
    }
}

static void views(int which, float **b)
{
    for (int i = 0; i < L + 1; i++) b[i] = bufs_[which][i];
}

/* Runs a step on c; returns the collectives it made. */
static long step(terse_comm_t *c, float *const *b, int n, const char *what)
{
    const long before = collectives_;
    terse_status_t s = terse_allreduce_many(c, n, list_, b);
    EXPECT(s == TERSE_OK, "%s: %s", what, terse_last_error());
    terse_step_end(c);
    return collectives_ - before;
}

static int same_stats(terse_comm_t *a, terse_comm_t *b, int l)
{
    terse_stats_t x, y;
    terse_layer_stats(a, l, &x);
    terse_layer_stats(b, l, &y);
    return x.calls == y.calls && x.wire_bytes == y.wire_bytes && x.sent_bytes == y.sent_bytes &&
           x.total_sent_bytes == y.total_sent_bytes && x.sent_inter_bytes == y.sent_inter_bytes &&
           x.skipped == y.skipped && x.dense == y.dense;
}

/* The same bits in every layer; with a and b, the same statistics too. */
static void compare(terse_comm_t *a, terse_comm_t *b, float *const *x, float *const *y, int st, const char *what)
{
    for (int i = 0; i < L + 1; i++) {
        const int l = list_[i];
        const size_t n = model[l].rows * model[l].cols, d = mpitest_first_diff(x[i], y[i], n);
        EXPECT(d == n, "%s step %d: layer %s (list %d) differs at %zu: %a vs %a", what, st, model[l].name, i, d,
               d < n ? x[i][d] : 0.0f, d < n ? y[i][d] : 0.0f);
    }
    for (int l = 0; a && b && l < L; l++) EXPECT(same_stats(a, b, l), "%s step %d: layer %s's statistics differ", what, st, model[l].name);
}

/* Fused (default fuse=) against every layer alone (fuse=0): the same bits, statistics, and
 * a saved state that resumes alike; far fewer collectives. */
static void fused_equals_alone(void)
{
    terse_comm_t *a = make(NULL), *b = make("fuse=0");
    if (!a || !b) return;
    float *x[L + 1], *y[L + 1];
    views(0, x);
    views(1, y);
    long fused = 0, alone = 0;
    for (int st = 0; st < 6; st++) {
        fill(x, st);
        fill(y, st);
        fused = step(a, x, L + 1, "fused");
        alone = step(b, y, L + 1, "alone");
        compare(a, b, x, y, st, "fused vs alone");
        EXPECT(mpitest_same_on_all(mpitest_hash(x[5], 64 * 48 * sizeof(float))), "step %d: ranks differ", st);
    }
    /* one bucket of 12 layers (5 rounds: header, P and Q's two rounds each), then the
     * repeated layer alone (3: header, reduce-scatter, allgather) */
    if (rank_ == 0) printf("fuse: a step of %d calls made %ld MPI collectives fused, %ld alone\n", L + 1, fused, alone);
    EXPECT(fused <= 8, "the fused step made %ld collectives", fused);
    EXPECT(alone >= 2 * (L + 1), "the step of layers alone made only %ld collectives", alone);

    /* resume the fused communicator's state on an unfused one: it continues like b */
    char dir[64], path[128];
    mpitest_ckpt_dir("fuse", dir, path);
    EXPECT(terse_state_save(a, path) == TERSE_OK, "save: %s", terse_last_error());
    terse_comm_t *c = make("fuse=0");
    if (c) {
        EXPECT(terse_state_load(c, path) == TERSE_OK, "load: %s", terse_last_error());
        for (int st = 6; st < 9; st++) {
            fill(x, st);
            fill(y, st);
            step(c, x, L + 1, "resumed");
            step(b, y, L + 1, "alone");
            compare(NULL, NULL, x, y, st, "resumed vs alone"); /* byte totals start anew */
        }
    }
    mpitest_tmpdir_remove(dir, path);
    terse_comm_destroy(a);
    terse_comm_destroy(b);
    terse_comm_destroy(c);
}

/* fuse=BYTES bounds a bucket: a small bound makes more collectives than the default, fewer
 * than none, and the same bits. */
static void bound_limits_buckets(void)
{
    terse_comm_t *a = make("fuse=12K"), *b = make("fuse=0"), *d = make(NULL);
    if (!a || !b || !d) return;
    float *x[L + 1], *y[L + 1];
    views(0, x);
    views(1, y);
    fill(x, 0);
    fill(y, 0);
    long some = step(a, x, L + 1, "fuse=12K"), none = step(b, y, L + 1, "fuse=0");
    compare(a, b, x, y, 0, "fuse=12K vs alone");
    fill(x, 0);
    long all = step(d, x, L + 1, "fuse=16M");
    EXPECT(all < some && some < none, "collectives: fuse=16M %ld, fuse=12K %ld, fuse=0 %ld", all, some, none);
    terse_comm_destroy(a);
    terse_comm_destroy(b);
    terse_comm_destroy(d);
}

static uint64_t calls_of(terse_comm_t *c, int l)
{
    terse_stats_t s;
    terse_layer_stats(c, l, &s);
    return s.calls;
}

/* A NaN in one layer of a bucket: every rank gets TERSE_ERR_NONFINITE for that layer, its
 * state is unchanged, the bucket's other layers complete, and the next step runs. */
static void nan_inside_a_bucket(void)
{
    terse_comm_t *a = make(NULL);
    if (!a) return;
    float *x[L + 1];
    views(0, x);
    fill(x, 0);
    step(a, x, L, "first");
    fill(x, 1);
    if (rank_ == nranks_ - 1) x[4][3] = NAN;
    terse_status_t s = terse_allreduce_many(a, L, list_, x);
    EXPECT(s == TERSE_ERR_NONFINITE && strstr(terse_last_error(), "layer 4") != NULL, "NaN: status %d, '%s'", s,
           terse_last_error());
    EXPECT(calls_of(a, 4) == 1 && calls_of(a, 3) == 2 && calls_of(a, 5) == 2, "calls: dgc %llu, qsgd %llu, powersgd %llu",
           (unsigned long long)calls_of(a, 4), (unsigned long long)calls_of(a, 3), (unsigned long long)calls_of(a, 5));
    fill(x, 2);
    step(a, x, L, "after the NaN");
    EXPECT(mpitest_same_on_all(mpitest_hash(x[0], 30 * 40 * sizeof(float))), "after the NaN: ranks differ");
    terse_comm_destroy(a);
}

/* Ranks that list the same layers in a different order: the swapped layers fail with
 * TERSE_ERR_MISMATCH on every rank, no rank hangs, and the communicator goes on. */
static void different_lists(void)
{
    if (nranks_ < 2) return;
    terse_comm_t *a = make(NULL);
    if (!a) return;
    float *x[L + 1];
    views(0, x);
    int order[4] = {0, 2, 3, 6};
    if (rank_ == 1) order[1] = 3, order[2] = 2; /* qsgd and onebit swapped on rank 1 */
    for (int i = 0; i < 4; i++)
        for (size_t j = 0; j < model[order[i]].rows * model[order[i]].cols; j++) x[i][j] = 1.0f;
    terse_status_t s = terse_allreduce_many(a, 4, order, x);
    EXPECT(s == TERSE_ERR_MISMATCH, "different lists: status %d, '%s'", s, terse_last_error());
    EXPECT(calls_of(a, 0) == 1 && calls_of(a, 6) == 1 && calls_of(a, 2) == 0 && calls_of(a, 3) == 0,
           "only the agreeing layers ran");
    fill(x, 0);
    step(a, x, L, "after the mismatch");
    terse_comm_destroy(a);
}

/* A bad argument anywhere in the list starts nothing. */
static void bad_arguments_start_nothing(void)
{
    terse_comm_t *a = make(NULL);
    if (!a) return;
    float *x[L + 1];
    views(0, x);
    int ids[3] = {0, 1, L + 5};
    EXPECT(terse_allreduce_many(a, 3, ids, x) == TERSE_ERR_ARG && strstr(terse_last_error(), "unknown layer") != NULL,
           "unknown id: '%s'", terse_last_error());
    ids[2] = 2;
    float *nul[3] = {x[0], x[1], NULL};
    EXPECT(terse_allreduce_many(a, 3, ids, nul) == TERSE_ERR_ARG && strstr(terse_last_error(), "bufs[2]") != NULL,
           "NULL buffer: '%s'", terse_last_error());
    EXPECT(calls_of(a, 0) == 0 && calls_of(a, 1) == 0, "nothing ran");
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "fuse=lots", &(terse_comm_t *){NULL}) == TERSE_ERR_ARG &&
               strstr(terse_last_error(), "byte count") != NULL,
           "fuse=lots: '%s'", terse_last_error());
    int id;
    EXPECT(terse_layer_add(a, "x", 4, 4, "fuse=1M", &id) == TERSE_ERR_ARG, "fuse= is not per layer");
    terse_comm_destroy(a);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    for (int i = 0; i < L; i++) list_[i] = i;
    list_[L] = 0;
    fused_equals_alone();
    bound_limits_buckets();
    nan_inside_a_bucket();
    different_lists();
    bad_arguments_start_nothing();
    int rc = mpitest_finish("fuse");
    MPI_Finalize();
    return rc;
}
