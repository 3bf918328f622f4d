/* The hierarchical protocol (hier=on) under mpirun with 1..4 ranks, on pretend nodes
 * (TERSE_TEST_NODES): every layout of the run's rank count with nodes of 1, 2, 3 ranks,
 * uneven and interleaved ones included.
 *   - none, fp16 and topk (with and without EF, mean and sum) against a serial reference:
 *     node sums in rank order, scaled by nodes/ranks for the mean, then the flat algorithm
 *     over the leaders;
 *   - every other codec and feedback method against terse's flat protocol run on the
 *     leaders alone with the node sums as inputs (the definition of hier), bit for bit;
 *   - identical bits on every rank, stats, a skipped non-finite call, a mismatch seen by a
 *     non-leader, a bad TERSE_TEST_NODES, and a resume from a checkpoint;
 *   - threads=3 (bind=auto) against threads=1, hierarchical and flat, bit for bit. */
#include <math.h>
#include <stdlib.h>

#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

/* The layout under test: label per rank, and what follows from it. */
static int label_[8];
static int n_nodes_, my_node_, is_leader_;
static int node_of_[8];

static void set_layout(const char *text)
{
    setenv("TERSE_TEST_NODES", text, 1);
    const char *s = text;
    for (int r = 0; r < nranks_; r++) {
        label_[r] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    n_nodes_ = 0;
    for (int r = 0; r < nranks_; r++) {
        int first = 0;
        while (label_[first] != label_[r]) first++;
        node_of_[r] = first == r ? n_nodes_++ : node_of_[first];
    }
    my_node_ = node_of_[rank_];
    is_leader_ = 1;
    for (int r = 0; r < rank_; r++) is_leader_ &= node_of_[r] != my_node_;
}

/* Node j's gradient as its leader feeds it to the exchange: the node's ranks' gradients
 * summed from 0 in rank order, scaled by nodes/ranks for the mean. */
static void node_gradient(int j, int call, int mean, float *out, size_t n)
{
    memset(out, 0, n * sizeof *out);
    for (int r = 0; r < nranks_; r++)
        if (node_of_[r] == j)
            for (size_t i = 0; i < n; i++) out[i] += ref_gradient(r, i, call);
    if (mean && n_nodes_ != nranks_) {
        const float scale = (float)((double)n_nodes_ / (double)nranks_);
        for (size_t i = 0; i < n; i++) out[i] *= scale;
    }
}

static terse_comm_t *create(const char *config)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, config, &c);
    EXPECT(s == TERSE_OK, "create '%s' on layout %s: %s", config, getenv("TERSE_TEST_NODES"),
           terse_last_error());
    return s == TERSE_OK ? c : NULL;
}

/* ---- against the serial reference ---------------------------------------------------- */

typedef struct {
    const char *config;
    ref_codec_t codec;
    double density;
    int ef, sum;
} ref_case_t;

static void run_reference(const ref_case_t *cs, size_t n, int calls)
{
    char config[160];
    snprintf(config, sizeof config, "%s; hier=on", cs->config);
    terse_comm_t *c = create(config);
    if (!c) return;
    int id = -1;
    EXPECT(terse_layer_add(c, "L", n, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    size_t m = n ? n : 1;
    float *buf = malloc(m * 4), *ref = malloc(m * 4), *p = malloc(m * 4), *d = malloc(m * 4);
    float *e = calloc(m * (size_t)n_nodes_, 4);
    size_t *order = malloc(m * sizeof *order);
    size_t k = 0;
    if (cs->codec == REF_TOPK && n) {
        k = (size_t)(cs->density * (double)n);
        k = k < 1 ? 1 : k > n ? n : k;
    }
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        terse_status_t s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "'%s' n=%zu call %d: %s", config, n, call, terse_last_error());
        memset(ref, 0, m * 4);
        for (int j = 0; j < n_nodes_; j++) {
            float *ej = e + (size_t)j * m;
            node_gradient(j, call, !cs->sum, p, n);
            for (size_t i = 0; i < n && cs->ef; i++) p[i] += ej[i];
            ref_compress(cs->codec, k, p, d, n, order);
            for (size_t i = 0; i < n && cs->ef; i++) ej[i] = p[i] - d[i];
            for (size_t i = 0; i < n; i++) ref[i] += d[i];
        }
        if (!cs->sum)
            for (size_t i = 0; i < n; i++) ref[i] /= (float)n_nodes_;
        if (cs->codec == REF_FP16) ref_compress(cs->codec, 0, ref, ref, n, order);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' layout %s n=%zu call %d: element %zu is %.9g, reference %.9g", config,
               getenv("TERSE_TEST_NODES"), n, call, bad, bad < n ? buf[bad] : 0.0, bad < n ? ref[bad] : 0.0);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * 4)), "'%s' n=%zu call %d: ranks differ", config, n, call);
    }
    terse_stats_t st;
    EXPECT(terse_layer_stats(c, id, &st) == TERSE_OK, "%s", terse_last_error());
    EXPECT(st.hier_nodes == n_nodes_ && st.calls == (uint64_t)calls, "stats: hier_nodes %d (want %d), calls %llu",
           st.hier_nodes, n_nodes_, (unsigned long long)st.calls);
    /* a leader sends to the other leaders, all on other nodes; with one node nothing crosses */
    if (n > 0 && n_nodes_ == 1) EXPECT(st.sent_inter_bytes == 0, "one node: %zu inter-node bytes", st.sent_inter_bytes);
    if (n > 0 && n_nodes_ > 1 && is_leader_)
        EXPECT(st.sent_inter_bytes > 0 && st.sent_inter_bytes <= st.sent_bytes, "leader: inter %zu of %zu bytes",
               st.sent_inter_bytes, st.sent_bytes);
    free(buf); free(ref); free(p); free(d); free(e); free(order);
    terse_comm_destroy(c);
}

/* ---- against the flat protocol on the leaders --------------------------------------- */

/* Runs `calls` calls of a rows x cols layer under hier=on and, on the leaders, the same
 * configuration flat over the leaders' communicator fed with the node gradients. With
 * skip_call >= 0 the last rank puts a NaN into that call (nonfinite=skip): every rank
 * skips it, and the flat run never sees it. */
static void run_equivalence(const char *base, size_t rows, size_t cols, int calls, int skip_call)
{
    char config[200], flat_config[200];
    snprintf(config, sizeof config, "%s; hier=on", base);
    snprintf(flat_config, sizeof flat_config, "%s; hier=off", base);
    terse_comm_t *h = create(config);
    MPI_Comm leaders;
    MPI_Comm_split(MPI_COMM_WORLD, is_leader_ ? 0 : MPI_UNDEFINED, rank_, &leaders);
    /* the flat run knows no pretend layout: its communicator is the leaders alone */
    char saved[64];
    snprintf(saved, sizeof saved, "%s", getenv("TERSE_TEST_NODES"));
    unsetenv("TERSE_TEST_NODES");
    terse_comm_t *f = NULL;
    if (is_leader_) {
        terse_status_t s = terse_comm_create_mpi(leaders, flat_config, &f);
        EXPECT(s == TERSE_OK, "flat '%s': %s", flat_config, terse_last_error());
    }
    setenv("TERSE_TEST_NODES", saved, 1);
    if (!h || (is_leader_ && !f)) {
        terse_comm_destroy(h);
        terse_comm_destroy(f);
        if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
        return;
    }
    const size_t n = rows * cols;
    int idh = -1, idf = -1;
    EXPECT(terse_layer_add(h, "W", rows, cols, NULL, &idh) == TERSE_OK, "%s", terse_last_error());
    if (f) EXPECT(terse_layer_add(f, "W", rows, cols, NULL, &idf) == TERSE_OK, "%s", terse_last_error());
    float *buf = malloc(n * 4), *want = malloc(n * 4);
    const int mean = strstr(base, "reduce=sum") == NULL;
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        if (call == skip_call && rank_ == nranks_ - 1) buf[n / 2] = NAN;
        terse_status_t s = terse_allreduce(h, idh, buf);
        EXPECT(s == TERSE_OK, "'%s' call %d: %s", config, call, terse_last_error());
        if (call == skip_call) {
            size_t nz = 0;
            for (size_t i = 0; i < n; i++) nz += buf[i] != 0.0f;
            EXPECT(nz == 0, "'%s': the skipped call left %zu non-zeros", config, nz);
        } else if (f) {
            node_gradient(my_node_, call, mean, want, n);
            s = terse_allreduce(f, idf, want);
            EXPECT(s == TERSE_OK, "flat '%s' call %d: %s", flat_config, call, terse_last_error());
            size_t bad = mpitest_first_diff(buf, want, n);
            EXPECT(bad == n, "'%s' layout %s call %d: element %zu is %.9g, flat over leaders %.9g", config,
                   saved, call, bad, bad < n ? buf[bad] : 0.0, bad < n ? want[bad] : 0.0);
            terse_step_end(f);
        }
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * 4)), "'%s' call %d: ranks differ", config, call);
        terse_step_end(h);
    }
    if (skip_call >= 0) {
        terse_stats_t st;
        terse_layer_stats(h, idh, &st);
        EXPECT(st.skipped == 1, "'%s': %llu skipped calls, want 1", config, (unsigned long long)st.skipped);
    }
    free(buf);
    free(want);
    terse_comm_destroy(h);
    terse_comm_destroy(f);
    if (leaders != MPI_COMM_NULL) MPI_Comm_free(&leaders);
}

/* ---- worker threads -------------------------------------------------------------------- */

/* threads=3 (feedback, non-finite scan and node sum split over three threads) gives the
 * bits of threads=1, call after call, flat and hierarchical. */
static void run_threads(const char *base, const char *hier)
{
    char one[200], three[200];
    snprintf(one, sizeof one, "%s; hier=%s; threads=1", base, hier);
    snprintf(three, sizeof three, "%s; hier=%s; threads=3; bind=auto", base, hier);
    terse_comm_t *a = create(one), *b = create(three);
    const size_t rows = 300, cols = 400, n = rows * cols; /* above 3 x 2^15: three parts */
    float *x = malloc(n * 4), *y = malloc(n * 4);
    int ia, ib;
    if (a && b && terse_layer_add(a, "W", rows, cols, NULL, &ia) == TERSE_OK &&
        terse_layer_add(b, "W", rows, cols, NULL, &ib) == TERSE_OK) {
        for (int call = 0; call < 4; call++) {
            for (size_t i = 0; i < n; i++) x[i] = y[i] = ref_gradient(rank_, i, call);
            EXPECT(terse_allreduce(a, ia, x) == TERSE_OK, "%s", terse_last_error());
            EXPECT(terse_allreduce(b, ib, y) == TERSE_OK, "%s", terse_last_error());
            size_t bad = mpitest_first_diff(x, y, n);
            EXPECT(bad == n, "'%s' call %d: element %zu is %.9g with 3 threads, %.9g with 1", three, call, bad,
                   bad < n ? y[bad] : 0.0, bad < n ? x[bad] : 0.0);
            terse_step_end(a);
            terse_step_end(b);
        }
    }
    free(x);
    free(y);
    terse_comm_destroy(a);
    terse_comm_destroy(b);
}

/* ---- errors and checkpoints ------------------------------------------------------------ */

static void run_errors(void)
{
    /* a non-leader that registers another size: every rank hears of it */
    terse_comm_t *c = create("compressor=topk:density=0.1; feedback=ef; min_size=0; hier=on");
    if (!c) return;
    size_t n = rank_ == nranks_ - 1 && nranks_ > 1 ? 101 : 100;
    int id;
    EXPECT(terse_layer_add(c, "L", n, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    float buf[101];
    for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, 0);
    terse_status_t s = terse_allreduce(c, id, buf);
    if (nranks_ > 1)
        EXPECT(s == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "element count"),
               "a rank with 101 elements: status %d, '%s'", s, terse_last_error());
    terse_comm_destroy(c);

    /* a layout that does not fit the communicator: every rank refuses it */
    char saved[64];
    snprintf(saved, sizeof saved, "%s", getenv("TERSE_TEST_NODES"));
    static const char *bad[] = {"0,0,0,0,0,0,0,0,0", "x", "0,,1", "-1"};
    for (int i = 0; i < 4; i++) {
        setenv("TERSE_TEST_NODES", bad[i], 1);
        terse_comm_t *b = NULL;
        s = terse_comm_create_mpi(MPI_COMM_WORLD, "hier=on", &b);
        EXPECT(s == TERSE_ERR_ARG && b == NULL, "TERSE_TEST_NODES=%s: status %d", bad[i], s);
        EXPECT(strstr(terse_last_error(), "TERSE_TEST_NODES") != NULL, "message '%s'", terse_last_error());
    }
    setenv("TERSE_TEST_NODES", saved, 1);
}

/* A hier run saved after 3 calls and resumed in a fresh communicator equals the
 * uninterrupted run; a hier checkpoint does not load into a flat communicator. */
static void run_resume(const char *base)
{
    char config[200], dir[64], path[128];
    snprintf(config, sizeof config, "%s; hier=on", base);
    mpitest_tmpdir("hier", dir);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    const size_t rows = 32, cols = 24, n = rows * cols;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    terse_comm_t *c = create(config), *r = create(config);
    int ic, ir;
    if (!c || !r) goto done;
    EXPECT(terse_layer_add(c, "W", rows, cols, NULL, &ic) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(r, "W", rows, cols, NULL, &ir) == TERSE_OK, "%s", terse_last_error());
    for (int call = 0; call < 6; call++) {
        if (call == 3) {
            EXPECT(terse_state_save(c, path) == TERSE_OK, "save: %s", terse_last_error());
            EXPECT(terse_state_load(r, path) == TERSE_OK, "load: %s", terse_last_error());
        }
        for (size_t i = 0; i < n; i++) a[i] = b[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(c, ic, a) == TERSE_OK, "%s", terse_last_error());
        if (call >= 3) {
            EXPECT(terse_allreduce(r, ir, b) == TERSE_OK, "%s", terse_last_error());
            EXPECT(mpitest_first_diff(a, b, n) == n, "'%s' call %d: the resumed run differs", config, call);
        }
        terse_step_end(c);
        if (call >= 3) terse_step_end(r);
    }
    {
        char flat[200];
        snprintf(flat, sizeof flat, "%s; hier=off", base);
        terse_comm_t *f = create(flat);
        int id;
        if (f && terse_layer_add(f, "W", rows, cols, NULL, &id) == TERSE_OK && n_nodes_ < nranks_) {
            terse_status_t s = terse_state_load(f, path);
            EXPECT(s == TERSE_ERR_MISMATCH, "a hier checkpoint in a flat communicator: status %d (%s)", s,
                   terse_last_error());
        }
        terse_comm_destroy(f);
    }
done:
    terse_comm_destroy(c);
    terse_comm_destroy(r);
    free(a);
    free(b);
    mpitest_tmpdir_remove(dir, path);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const char *layouts[5][7] = {
        {NULL},
        {"0"},
        {"0,0", "0,1"},
        {"0,0,0", "0,0,1", "5,3,5", "0,1,2"},
        {"0,0,1,1", "0,1,0,1", "0,0,0,1", "1,0,0,0", "0,1,2,3", "0,0,0,0"},
    };
    static const ref_case_t refs[] = {
        {"compressor=none; min_size=0", REF_NONE, 0, 0, 0},
        {"compressor=none; min_size=0; reduce=sum", REF_NONE, 0, 0, 1},
        {"compressor=fp16; min_size=0", REF_FP16, 0, 0, 0},
        {"compressor=topk:density=0.1; min_size=0", REF_TOPK, 0.1, 0, 0},
        {"compressor=topk:density=0.05; feedback=ef; min_size=0", REF_TOPK, 0.05, 1, 0},
        {"compressor=topk:density=0.05; feedback=ef; min_size=0; reduce=sum", REF_TOPK, 0.05, 1, 1},
    };
    static const char *equiv[] = {
        "compressor=onebit; feedback=ef; min_size=0",
        "compressor=powersgd:rank=2; feedback=ef; min_size=0",
        "compressor=dgc:density=0.05,warmup=2; min_size=0",
        "compressor=qsgd:bits=4,bucket=64; feedback=ef21; min_size=0",
        "compressor=randk:density=0.1,seed=3; feedback=econtrol:eta=0.5; min_size=0",
        "compressor=topk:density=0.05; feedback=ef21sgdm:eta=0.5; min_size=0; reduce=sum",
        "compressor=topk:density=0.1; feedback=ef; min_size=0; adapt=lgreco:period=3,window=1",
        "compressor=bf16; min_size=0",
    };
    static const size_t sizes[] = {0, 1, 7, 1009, 65536};
    for (int li = 0; layouts[nranks_ <= 4 ? nranks_ : 0][li]; li++) {
        set_layout(layouts[nranks_][li]);
        for (size_t ci = 0; ci < sizeof refs / sizeof refs[0]; ci++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
                run_reference(&refs[ci], sizes[si], 3);
        /* the node reduce works in chunks of 2^18 floats: several, and a short last one */
        run_reference(&refs[0], 600001, 2);
        run_reference(&refs[4], 600001, 2);
        for (size_t ei = 0; ei < sizeof equiv / sizeof equiv[0]; ei++)
            run_equivalence(equiv[ei], 48, 40, 6, -1);
        run_equivalence("compressor=topk:density=0.05; feedback=ef; min_size=0; nonfinite=skip", 48, 40, 6, 2);
        run_errors();
        static const char *threaded[] = {
            "compressor=topk:density=0.01; feedback=ef",
            "compressor=qsgd:bits=4; feedback=ef21",
            "compressor=randk:density=0.05; feedback=econtrol:eta=0.5",
            "compressor=onebit; feedback=ef21sgdm:eta=0.3",
            "compressor=none",
        };
        for (size_t ti = 0; ti < sizeof threaded / sizeof threaded[0]; ti++) {
            run_threads(threaded[ti], "on");
            if (li == 0) run_threads(threaded[ti], "off");
        }
        run_resume("compressor=powersgd:rank=2; feedback=ef; min_size=0");
        run_resume("compressor=dgc:density=0.05; min_size=0");
    }
    int rc = mpitest_finish("test_hier");
    MPI_Finalize();
    return rc;
}
