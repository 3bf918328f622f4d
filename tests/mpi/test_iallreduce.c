/* terse_iallreduce, terse_wait and terse_test under mpirun: requests give exactly the
 * results of terse_allreduce calls made in the same order (for every codec and feedback
 * method, waited for in any order, mixed with blocking calls, outliving their communicator),
 * bad arguments start nothing, and an exchange that fails reports its error through
 * terse_wait on every rank.
 *
 * Run with no argument, MPI is initialised with MPI_THREAD_MULTIPLE and the progress thread
 * runs the requests; with the argument "single", MPI_Init gives MPI_THREAD_SINGLE and each
 * request runs inside terse_iallreduce: the same results either way. */
#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

enum { LAYERS = 3, STEPS = 4 };
static const size_t rows[LAYERS] = {64, 1, 48}, cols[LAYERS] = {50, 3001, 40};
static int rank_, nranks_;

static terse_comm_t *make(const char *cfg)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s: %s", cfg, terse_last_error());
    for (int l = 0; l < LAYERS && c; l++) {
        int id = -1;
        char name[16];
        snprintf(name, sizeof name, "l%d", l);
        EXPECT(terse_layer_add(c, name, rows[l], cols[l], NULL, &id) == TERSE_OK && id == l, "%s",
               terse_last_error());
    }
    return c;
}

static void fill(float *g[LAYERS], int step)
{
    for (int l = 0; l < LAYERS; l++)
        for (size_t i = 0; i < rows[l] * cols[l]; i++) g[l][i] = ref_gradient(rank_, i + 7919 * (size_t)l, step);
}

static float **bufs(void)
{
    float **g = malloc(LAYERS * sizeof *g);
    for (int l = 0; l < LAYERS; l++) g[l] = malloc(rows[l] * cols[l] * sizeof(float));
    return g;
}

static void free_bufs(float **g)
{
    for (int l = 0; l < LAYERS; l++) free(g[l]);
    free(g);
}

static int same(float *a[LAYERS], float *b[LAYERS])
{
    for (int l = 0; l < LAYERS; l++)
        if (mpitest_first_diff(a[l], b[l], rows[l] * cols[l]) != rows[l] * cols[l]) return 0;
    return 1;
}

/* Every step: the blocking reference runs the layers 0, 1, 2; the requests start 0, 1, 2
 * at once and are waited for in an order that changes with the step (terse_test polls one
 * of them). The results agree bit for bit, and on every rank. */
static void requests_equal_blocking_calls(const char *cfg)
{
    terse_comm_t *ref = make(cfg), *c = make(cfg);
    if (!ref || !c) return;
    float **a = bufs(), **b = bufs();
    int ok = 1;
    for (int step = 0; step < STEPS; step++) {
        fill(a, step);
        fill(b, step);
        for (int l = 0; l < LAYERS; l++) ok &= terse_allreduce(ref, l, a[l]) == TERSE_OK;
        terse_request_t *req[LAYERS];
        for (int l = 0; l < LAYERS; l++) ok &= terse_iallreduce(c, l, b[l], &req[l]) == TERSE_OK;
        const int first = step % LAYERS;
        int done = 0;
        while (!done) ok &= terse_test(req[first], &done) == TERSE_OK;
        for (int k = LAYERS - 1; k >= 0; k--)
            if (k != first) ok &= terse_wait(req[k]) == TERSE_OK;
        EXPECT(ok, "%s, step %d: %s", cfg, step, terse_last_error());
        EXPECT(same(a, b), "%s, step %d: requests differ from blocking calls", cfg, step);
        uint64_t h = 0;
        for (int l = 0; l < LAYERS; l++) h ^= mpitest_hash(b[l], rows[l] * cols[l] * sizeof(float)) + (uint64_t)l;
        EXPECT(mpitest_same_on_all(h), "%s, step %d: ranks differ", cfg, step);
        terse_step_end(ref);
        terse_step_end(c);
    }
    terse_stats_t s;
    EXPECT(terse_layer_stats(c, 1, &s) == TERSE_OK && s.calls == STEPS, "%s: %llu calls counted", cfg,
           (unsigned long long)s.calls);
    free_bufs(a);
    free_bufs(b);
    terse_comm_destroy(ref);
    terse_comm_destroy(c);
}

/* A blocking call made while requests are outstanding runs after them: the order of the
 * calls is the order they were made in. The communicator can be destroyed with requests
 * not yet waited for; they still complete and can be waited for afterwards. */
static void blocking_calls_and_destroy_wait_for_requests(void)
{
    const char *cfg = "compressor=topk:density=0.05; feedback=ef";
    terse_comm_t *ref = make(cfg), *c = make(cfg);
    if (!ref || !c) return;
    float **a = bufs(), **b = bufs();
    fill(a, 0);
    fill(b, 0);
    for (int l = 0; l < LAYERS; l++) terse_allreduce(ref, l, a[l]);
    terse_request_t *r0 = NULL, *r2 = NULL;
    /* rank 0 comes late: elsewhere request 0 is still waiting for it when the blocking call
     * starts, which must wait in turn */
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank_ == 0) usleep(300000);
    EXPECT(terse_iallreduce(c, 0, b[0], &r0) == TERSE_OK, "%s", terse_last_error());
    terse_stats_t st;
    EXPECT(terse_layer_stats(c, 0, &st) == TERSE_OK && st.calls == 1, "stats before the request ran");
    EXPECT(terse_allreduce(c, 1, b[1]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_iallreduce(c, 2, b[2], &r2) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_comm_destroy(c) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_wait(r2) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_wait(r0) == TERSE_OK, "%s", terse_last_error());
    EXPECT(same(a, b), "mixed calls differ from the blocking order");
    free_bufs(a);
    free_bufs(b);
    terse_comm_destroy(ref);
}

static void bad_arguments_start_nothing(void)
{
    terse_comm_t *c = make("compressor=fp16");
    if (!c) return;
    float **b = bufs();
    fill(b, 1);
    terse_request_t *r = NULL;
    EXPECT(terse_iallreduce(NULL, 0, b[0], &r) == TERSE_ERR_ARG && r == NULL, "NULL comm");
    EXPECT(terse_iallreduce(c, -1, b[0], &r) == TERSE_ERR_ARG && r == NULL, "layer -1");
    EXPECT(terse_iallreduce(c, LAYERS, b[0], &r) == TERSE_ERR_ARG && r == NULL, "layer %d", LAYERS);
    EXPECT(strstr(terse_last_error(), "terse_iallreduce") != NULL, "message: %s", terse_last_error());
    EXPECT(terse_iallreduce(c, 0, NULL, &r) == TERSE_ERR_ARG && r == NULL, "NULL buf");
    EXPECT(terse_iallreduce(c, 0, b[0], NULL) == TERSE_ERR_ARG, "NULL req");
    EXPECT(terse_wait(NULL) == TERSE_ERR_ARG, "wait NULL");
    int done = 7;
    EXPECT(terse_test(NULL, &done) == TERSE_ERR_ARG && done == 7, "test NULL");
    /* nothing was queued: a blocking call is the first exchange, and agrees on every rank */
    EXPECT(terse_allreduce(c, 0, b[0]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_iallreduce(c, 1, b[1], &r) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_test(r, NULL) == TERSE_ERR_ARG, "test with done NULL");
    EXPECT(terse_wait(r) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_wait(r) == TERSE_ERR_ARG, "a second wait on a released request");
    EXPECT(strstr(terse_last_error(), "not an outstanding request") != NULL, "message: %s", terse_last_error());
    terse_comm_destroy(c);
    /* a destroyed communicator */
    EXPECT(terse_iallreduce(c, 0, b[0], &r) == TERSE_ERR_ARG, "destroyed comm");
    free_bufs(b);
}

/* Ranks that start different layers: every rank's terse_wait reports the mismatch, and the
 * communicator keeps working. */
static void a_failed_exchange_is_reported_by_wait(void)
{
    if (nranks_ < 2) return;
    terse_comm_t *c = make("compressor=topk:density=0.1");
    if (!c) return;
    float **b = bufs();
    fill(b, 2);
    terse_request_t *r = NULL;
    const int layer = rank_ == 0 ? 0 : 2;
    EXPECT(terse_iallreduce(c, layer, b[layer], &r) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_wait(r) == TERSE_ERR_MISMATCH, "wait: %s", terse_last_error());
    EXPECT(strstr(terse_last_error(), "layer") != NULL, "message: %s", terse_last_error());
    EXPECT(terse_iallreduce(c, 1, b[1], &r) == TERSE_OK && terse_wait(r) == TERSE_OK, "%s", terse_last_error());
    free_bufs(b);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    const int single = argc > 1 && !strcmp(argv[1], "single");
    int provided = MPI_THREAD_SINGLE;
    if (single)
        MPI_Init(&argc, &argv);
    else
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const char *const configs[] = {
        "compressor=none",
        "compressor=fp16",
        "compressor=topk:density=0.05; feedback=ef",
        "compressor=topk:density=0.05; feedback=ef21",
        "compressor=randk:density=0.1; feedback=econtrol",
        "compressor=onebit; feedback=ef",
        "compressor=qsgd:bits=4",
        "compressor=dgc:density=0.01",
        "compressor=powersgd:rank=2; feedback=ef",
        "compressor=topk:density=0.05; feedback=ef; threads=2",
    };
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) requests_equal_blocking_calls(configs[k]);
    blocking_calls_and_destroy_wait_for_requests();
    bad_arguments_start_nothing();
    a_failed_exchange_is_reported_by_wait();
    if (!single) EXPECT(provided == MPI_THREAD_MULTIPLE, "MPI gives thread level %d", provided);
    const int rc = mpitest_finish(single ? "test_iallreduce (MPI_Init)" : "test_iallreduce");
    MPI_Finalize();
    return rc;
}
