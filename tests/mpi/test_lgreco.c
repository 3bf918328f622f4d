/* adapt=lgreco under mpirun: the plan follows the layers' errors, is the same on every rank,
 * survives a checkpoint bit for bit, falls back to the uniform plan on NaN or a zero budget,
 * and a rank that is not at the decision makes every rank fail instead of hang. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

enum { ROWS = 48, COLS = 40, N = ROWS * COLS, LAYERS = 3 };

/* Layer 0: rank one plus a little noise (any low rank does); layer 1: full-rank noise;
 * layer 2: noise, ten times smaller except at steps 5 and 6, where it is 30 times larger:
 * the plan at step 8 depends on whether its window (steps 5-7) remembers them. Different on
 * every rank and every step. */
static void grad(float *g, int layer, int step)
{
    uint64_t s = (uint64_t)layer * 1000003u + (uint64_t)step * 7919u + (uint64_t)rank_ * 104729u + 1u;
    for (size_t i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float noise = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
        size_t r = i / COLS, c = i % COLS;
        if (layer == 0) g[i] = (float)(r + 1) * (float)(c % 7 + 1) * 0.05f + 0.001f * noise;
        else if (layer == 1) g[i] = noise;
        else g[i] = (step == 5 || step == 6 ? 30.0f : 0.1f) * noise;
    }
}

static terse_comm_t *make(const char *cfg, int *ids)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s: %s", cfg, terse_last_error());
    for (int l = 0; c && l < LAYERS; l++) {
        char name[8];
        snprintf(name, sizeof name, "l%d", l);
        EXPECT(terse_layer_add(c, name, ROWS, COLS, NULL, &ids[l]) == TERSE_OK, "%s", terse_last_error());
    }
    return c;
}

/* Steps [from, to): every layer's gradient through terse; bufs keep the last results. The
 * hash of every result is folded into *h. */
static int run(terse_comm_t *c, const int *ids, int from, int to, float (*bufs)[N], uint64_t *h)
{
    for (int step = from; step < to; step++) {
        for (int l = 0; l < LAYERS; l++) {
            grad(bufs[l], l, step);
            terse_status_t s = terse_allreduce(c, ids[l], bufs[l]);
            if (s != TERSE_OK) {
                EXPECT(0, "step %d layer %d: %s", step, l, terse_last_error());
                return 0;
            }
            *h = *h * 31u + mpitest_hash(bufs[l], sizeof bufs[l]);
        }
        terse_step_end(c);
    }
    return 1;
}

static float bufs_a[LAYERS][N], bufs_b[LAYERS][N];

/* The low-rank layer goes below the configured rank, the full-rank one does not, and every
 * rank has the same plan and results. */
static void plan_follows_errors(void)
{
    int ids[LAYERS];
    terse_comm_t *c = make("compressor=powersgd:rank=2; feedback=ef; min_size=0; "
                           "adapt=lgreco:period=4,window=2", ids);
    uint64_t h = 0;
    run(c, ids, 0, 4, bufs_a, &h);
    terse_stats_t st;
    EXPECT(terse_layer_stats(c, ids[0], &st) == TERSE_OK && st.adapted && st.plan_version == 0,
           "before the first decision: adapted %d, plan %llu", st.adapted, (unsigned long long)st.plan_version);
    run(c, ids, 4, 6, bufs_a, &h); /* the first allreduce of step 4 decides */
    char codecs[LAYERS][128];
    for (int l = 0; l < LAYERS; l++) {
        terse_layer_stats(c, ids[l], &st);
        snprintf(codecs[l], sizeof codecs[l], "%s", st.codec);
        EXPECT(mpitest_same_on_all(mpitest_hash(st.codec, strlen(st.codec))), "layer %d plan %s differs", l, st.codec);
    }
    EXPECT(st.plan_version == 1 && st.plan_fallbacks == 0, "one decision, no fallback: %llu, %llu",
           (unsigned long long)st.plan_version, (unsigned long long)st.plan_fallbacks);
    EXPECT(strstr(codecs[0], "rank=1") != NULL, "the rank-one layer goes to rank 1: %s", codecs[0]);
    EXPECT(strstr(codecs[1], "rank=1") == NULL, "the full-rank layer keeps rank >= 2: %s", codecs[1]);
    EXPECT(st.plan_us > 0 && (rank_ != 0 || st.plan_measure_us > 0), "decision timed: %g us", st.plan_us);
    EXPECT(mpitest_same_on_all(h), "results identical on every rank");
    terse_comm_destroy(c);
}

/* Checkpoint in the middle of a window with a plan in force (steps 0..9, period 4, saved after
 * step 6): the resumed run equals the uninterrupted one bit for bit. */
static void resume_is_bitwise(const char *path, const char *compressor)
{
    char cfg[256];
    snprintf(cfg, sizeof cfg, "compressor=%s; feedback=%s; min_size=0; adapt=lgreco:period=4,window=3",
             compressor, strncmp(compressor, "dgc", 3) == 0 ? "none" : "ef");
    int ids[LAYERS], ids2[LAYERS];
    uint64_t ha = 0, hb = 0;
    terse_comm_t *a = make(cfg, ids);
    run(a, ids, 0, 7, bufs_a, &ha);
    EXPECT(terse_state_save(a, path) == TERSE_OK, "%s: save: %s", compressor, terse_last_error());
    run(a, ids, 7, 10, bufs_a, &ha);
    terse_comm_t *b = make(cfg, ids2);
    EXPECT(terse_state_load(b, path) == TERSE_OK, "%s: load: %s", compressor, terse_last_error());
    run(b, ids2, 7, 10, bufs_b, &hb);
    for (int l = 0; l < LAYERS; l++) {
        size_t d = mpitest_first_diff(bufs_a[l], bufs_b[l], N);
        EXPECT(d == N, "%s: layer %d differs after resume at element %zu", compressor, l, d);
        terse_stats_t sa, sb;
        terse_layer_stats(a, ids[l], &sa);
        terse_layer_stats(b, ids2[l], &sb);
        EXPECT(strcmp(sa.codec, sb.codec) == 0 && sa.plan_version == sb.plan_version && sa.plan_version == 2,
               "%s: layer %d plan %s v%llu, resumed %s v%llu", compressor, l, sa.codec,
               (unsigned long long)sa.plan_version, sb.codec, (unsigned long long)sb.plan_version);
    }
    terse_comm_destroy(a);
    terse_comm_destroy(b);
}

/* Zero gradients make the uniform error zero (no budget); a NaN makes it NaN. Both keep the
 * uniform plan, count a fallback, and training goes on. */
static void guards_fall_back(void)
{
    int ids[LAYERS];
    terse_comm_t *c = make("compressor=topk:density=0.05; feedback=ef; min_size=0; "
                           "adapt=lgreco:period=2,window=1", ids);
    for (int step = 0; step < 3; step++) {
        for (int l = 0; l < LAYERS; l++) {
            memset(bufs_a[l], 0, sizeof bufs_a[l]);
            EXPECT(terse_allreduce(c, ids[l], bufs_a[l]) == TERSE_OK, "%s", terse_last_error());
        }
        terse_step_end(c);
    }
    terse_stats_t st;
    terse_layer_stats(c, ids[0], &st);
    EXPECT(st.plan_version == 1 && st.plan_fallbacks == 1 && strstr(st.codec, "density=0.05"),
           "zero budget: plan %llu, fallbacks %llu, %s", (unsigned long long)st.plan_version,
           (unsigned long long)st.plan_fallbacks, st.codec);
    terse_comm_destroy(c);

    c = make("compressor=qsgd:bits=4; feedback=none; min_size=0; nonfinite=pass; "
             "adapt=lgreco:period=2,window=1", ids);
    for (int step = 0; step < 3; step++) {
        for (int l = 0; l < LAYERS; l++) {
            grad(bufs_a[l], l, step);
            if (step == 1 && l == 1 && rank_ == 0) bufs_a[l][5] = NAN;
            EXPECT(terse_allreduce(c, ids[l], bufs_a[l]) == TERSE_OK, "%s", terse_last_error());
        }
        terse_step_end(c);
    }
    terse_layer_stats(c, ids[1], &st);
    EXPECT(st.plan_version == 1 && st.plan_fallbacks == 1 && strstr(st.codec, "bits=4"),
           "NaN: plan %llu, fallbacks %llu, %s", (unsigned long long)st.plan_version,
           (unsigned long long)st.plan_fallbacks, st.codec);
    terse_comm_destroy(c);
}

/* A rank that skipped terse_step_end reaches the decision step later: every rank gets
 * TERSE_ERR_MISMATCH from the same call, none hangs. */
static void disagreement_fails_everywhere(void)
{
    if (nranks_ < 2) return;
    int ids[LAYERS];
    terse_comm_t *c = make("compressor=topk:density=0.05; feedback=ef; min_size=0; "
                           "adapt=lgreco:period=2,window=1", ids);
    grad(bufs_a[0], 0, 0);
    EXPECT(terse_allreduce(c, ids[0], bufs_a[0]) == TERSE_OK, "%s", terse_last_error());
    terse_step_end(c);
    if (rank_ != 1) terse_step_end(c);
    grad(bufs_a[0], 0, 1);
    terse_status_t s = terse_allreduce(c, ids[0], bufs_a[0]);
    EXPECT(s == TERSE_ERR_MISMATCH && (strstr(terse_last_error(), "is in a plain allreduce") ||
                                         strstr(terse_last_error(), "protocol version")),
           "got %d: %s", (int)s, terse_last_error());
    terse_comm_destroy(c);
}

static void configuration_errors(void)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=onebit; adapt=lgreco", &c) == TERSE_ERR_ARG &&
               strstr(terse_last_error(), "cannot adapt compressor onebit"),
           "onebit: %s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk; adapt=lgreco:lo=2", &c) == TERSE_ERR_ARG,
           "lo out of range accepted");
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=none; adapt=lgreco", &c) == TERSE_OK, "%s",
           terse_last_error());
    int id;
    EXPECT(terse_layer_add(c, "x", 64, 64, "compressor=fp16", &id) == TERSE_ERR_ARG &&
               strstr(terse_last_error(), "cannot adapt"),
           "per-layer fp16 with lgreco: %s", terse_last_error());
    EXPECT(terse_layer_add(c, "y", 64, 64, "compressor=fp16; adapt=none", &id) == TERSE_OK, "%s",
           terse_last_error());
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    char dir[64], path[128];
    mpitest_tmpdir("lgreco", dir);
    snprintf(path, sizeof path, "%s/ckpt", dir);

    plan_follows_errors();
    static const char *const codecs[] = {"powersgd:rank=2", "topk:density=0.05", "topk:k=50",
                                         "qsgd:bits=4,bucket=64", "dgc:density=0.05", "randk:density=0.05"};
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) resume_is_bitwise(path, codecs[i]);
    guards_fall_back();
    configuration_errors();
    disagreement_fails_everywhere();

    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("lgreco");
    MPI_Finalize();
    return rc;
}
