/* compressor=auto under mpirun: the first 2T calls of a layer are T dense and then T
 * compressed trials (a dense call is the exact mean, bit for bit), then every rank keeps the
 * same path, reported by stats.dense; the choice and the trials survive save and load, so a
 * resumed run continues bit for bit; ranks with and without auto disagree loudly. */
#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

enum { R = 40, C = 50, N = R * C };
static int rank_, nranks_;

static terse_comm_t *make(const char *cfg)
{
    terse_comm_t *c = NULL;
    int id = -1;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s: %s", cfg, terse_last_error());
    if (c) EXPECT(terse_layer_add(c, "w", R, C, NULL, &id) == TERSE_OK && id == 0, "%s", terse_last_error());
    return c;
}

static void grad(float *g, int call)
{
    for (size_t i = 0; i < N; i++) g[i] = ref_gradient(rank_, i, call);
}

static int dense_now(terse_comm_t *c)
{
    terse_stats_t s;
    return terse_layer_stats(c, 0, &s) == TERSE_OK && s.dense;
}

/* memory: the layer has error feedback, so a dense call sends g plus what the feedback
 * carries (ef: the error of the compressed calls before it; ef21: its estimate), and only
 * the first call is surely the exact mean of g. */
static void trials_then_one_path(const char *cfg, int trials, int memory)
{
    terse_comm_t *c = make(cfg), *exact = make("compressor=none");
    if (!c || !exact) return;
    float g[N], e[N];
    for (int call = 0; call < 2 * trials + 4; call++) {
        grad(g, call);
        memcpy(e, g, sizeof g);
        EXPECT(terse_allreduce(c, 0, g) == TERSE_OK, "%s call %d: %s", cfg, call, terse_last_error());
        terse_allreduce(exact, 0, e);
        const int same = mpitest_first_diff(g, e, N) == N;
        EXPECT(mpitest_same_on_all(mpitest_hash(g, sizeof g)), "%s call %d: ranks differ", cfg, call);
        if (memory) {
            if (call == 0) EXPECT(same, "%s: the first call is a dense trial: the exact mean", cfg);
            if (call >= 2 * trials)
                EXPECT(mpitest_same_on_all((uint64_t)dense_now(c)), "%s: the ranks chose alike", cfg);
        } else if (call < 2 * trials) {
            if (call < trials) EXPECT(same, "%s: trial call %d is dense: the exact mean", cfg, call);
            else EXPECT(!same, "%s: trial call %d is compressed", cfg, call);
        } else {
            const int dense = dense_now(c);
            EXPECT(mpitest_same_on_all((uint64_t)dense), "%s: the ranks chose alike", cfg);
            EXPECT(same == dense, "%s call %d: chose %s but the result %s the exact mean", cfg, call,
                   dense ? "dense" : "compressed", same ? "is" : "is not");
        }
    }
    char text[512];
    EXPECT(terse_comm_config(c, text, sizeof text) == TERSE_OK && strstr(text, "compressor=auto:with=") != NULL,
           "%s: config reads back as %s", cfg, text);
    terse_comm_destroy(c);
    terse_comm_destroy(exact);
}

/* Saved after the choice (and once in the middle of the trials): the loaded communicator
 * continues exactly as the saved one does. */
static void choice_survives_save_and_load(int save_at)
{
    const char *cfg = "compressor=auto:with=topk,density=0.05,trials=2; feedback=ef";
    char dir[64], path[128];
    mpitest_ckpt_dir("auto", dir, path);
    terse_comm_t *a = make(cfg), *b = make(cfg);
    if (!a || !b) return;
    float g[N], h[N];
    for (int call = 0; call < save_at; call++) {
        grad(g, call);
        terse_allreduce(a, 0, g);
    }
    EXPECT(terse_state_save(a, path) == TERSE_OK, "save: %s", terse_last_error());
    EXPECT(terse_state_load(b, path) == TERSE_OK, "load: %s", terse_last_error());
    for (int call = save_at; call < 8; call++) {
        grad(g, call);
        memcpy(h, g, sizeof g);
        EXPECT(terse_allreduce(a, 0, g) == TERSE_OK && terse_allreduce(b, 0, h) == TERSE_OK, "%s", terse_last_error());
        if (save_at >= 4) EXPECT(mpitest_first_diff(g, h, N) == N, "saved at %d, call %d: the loaded run differs", save_at, call);
    }
    /* saved mid-trials, the loaded run finishes the same trials (its timings are its own) */
    if (save_at < 4) EXPECT(mpitest_same_on_all((uint64_t)dense_now(b)), "the ranks chose alike after load");
    else EXPECT(dense_now(a) == dense_now(b), "the loaded choice is the saved one");
    terse_comm_destroy(a);
    terse_comm_destroy(b);
    mpitest_tmpdir_remove(dir, path);
}

/* A dense call on an error of all +0 bypasses ef (engine_begin): the bits of the full path,
 * which nonfinite=pass keeps. The dense trials bypass (the error starts at zero), and so do
 * the dense calls after the first one once the layer has chosen dense. The two communicators
 * are compared while their histories are alike: through the trials, and after them if both
 * chose the same path (the choice is timed). g holds zeros of both signs. */
static void bypass_is_the_full_path(void)
{
    terse_comm_t *a = make("compressor=auto:with=topk,density=0.05,trials=2; feedback=ef");
    terse_comm_t *f = make("compressor=auto:with=topk,density=0.05,trials=2; feedback=ef; nonfinite=pass");
    if (!a || !f) return;
    float g[N], h[N];
    for (int call = 0; call < 10; call++) {
        grad(g, call);
        for (size_t i = (size_t)call; i < N; i += 7) g[i] = (i / 7) % 2 ? -0.0f : 0.0f;
        memcpy(h, g, sizeof g);
        EXPECT(terse_allreduce(a, 0, g) == TERSE_OK && terse_allreduce(f, 0, h) == TERSE_OK, "call %d: %s", call,
               terse_last_error());
        if (call >= 4 && dense_now(a) != dense_now(f)) continue;
        const size_t d = mpitest_first_diff(g, h, N);
        EXPECT(d == N, "call %d (%s): the bypass differs from the full path at %zu", call,
               call < 4 ? "trial" : dense_now(a) ? "dense" : "compressed", d);
    }
    terse_comm_destroy(a);
    terse_comm_destroy(f);
}

static void ranks_must_agree_on_auto(void)
{
    if (nranks_ < 2) return;
    terse_comm_t *c = make(rank_ == 0 ? "compressor=auto:with=topk,density=0.05" : "compressor=topk:density=0.05");
    if (!c) return;
    float g[N];
    grad(g, 0);
    EXPECT(terse_allreduce(c, 0, g) == TERSE_ERR_MISMATCH, "auto on one rank only: %s", terse_last_error());
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    trials_then_one_path("compressor=auto:with=topk,density=0.05", 4, 0);
    trials_then_one_path("compressor=auto:with=qsgd,bits=2,trials=1", 1, 0);
    trials_then_one_path("compressor=auto:with=dgc,density=0.01,trials=2", 2, 0);
    trials_then_one_path("compressor=auto:with=powersgd,rank=2,trials=3", 3, 0);
    trials_then_one_path("compressor=auto:with=topk,density=0.05; feedback=ef", 4, 1);
    trials_then_one_path("compressor=auto:with=topk,density=0.05,trials=3; feedback=ef21", 3, 1);
    trials_then_one_path("compressor=auto:with=onebit,trials=2; feedback=ef", 2, 1);
    bypass_is_the_full_path();
    choice_survives_save_and_load(5);
    choice_survives_save_and_load(3);
    ranks_must_agree_on_auto();
    int rc = mpitest_finish("test_auto");
    MPI_Finalize();
    return rc;
}
