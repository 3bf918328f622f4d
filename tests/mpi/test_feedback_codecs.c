/* Every error-feedback method with every codec it can drive (sparse, random, quantised, sign,
 * low rank, cast), under mpirun (1..4 ranks). The exact per-method and per-codec arithmetic
 * is checked against serial references in test_feedback.c and the codec tests; here the
 * question is whether the pairs compose:
 *   * every call succeeds and every rank holds the same bits;
 *   * a run saved after call 2 and resumed in a fresh communicator continues bit for bit
 *     (feedback state and protocol state are saved together);
 *   * on a constant gradient, the estimate of ef21 and econtrol (which track the gradient)
 *     and the running mean of ef's estimates (which pay back their error) end much closer
 *     to the exact mean than the first call;
 *   * one communicator can hold layers whose codec and feedback come from per-layer
 *     overrides. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

enum { ROWS = 48, COLS = 40, N = ROWS * COLS, CALLS = 6, LONG_CALLS = 150 };

static const char *const codecs[] = {
    "topk:k=40", "randk:density=0.05", "onebit", "qsgd:bits=4", "qsgd:bits=2,stochastic=0",
    "powersgd:rank=2", "fp16",
};
static const char *const feedbacks[] = {
    "ef", "ef:lr=0.5", "ef21", "ef21:weight=W", "ef21sgdm:eta=0.5", "econtrol:eta=0.01",
};

/* The configuration for rank r: EF21-W gets this rank's weight (they sum to 1). */
static void config_of(const char *codec, const char *fb, char *buf, size_t len)
{
    if (strstr(fb, "weight=W")) {
        double w = (double)(rank_ + 1) / ((double)nranks_ * (nranks_ + 1) / 2.0);
        snprintf(buf, len, "compressor=%s; feedback=ef21:weight=%.17g; min_size=0", codec, w);
    } else {
        snprintf(buf, len, "compressor=%s; feedback=%s; min_size=0", codec, fb);
    }
}

static void fill(float *x, int call) { for (size_t i = 0; i < N; i++) x[i] = ref_gradient(rank_, i, call); }

/* Runs CALLS calls; with save_at >= 0, saves before that call and continues in a fresh
 * communicator loaded from the file. The last call's result goes to out. */
static int run(const char *cfg, int save_at, const char *path, float *out)
{
    terse_comm_t *c = NULL;
    int id = -1, ok = 1;
    ok &= terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK;
    ok &= ok && terse_layer_add(c, "W", ROWS, COLS, NULL, &id) == TERSE_OK;
    for (int call = 0; ok && call < CALLS; call++) {
        if (call == save_at) {
            ok &= terse_state_save(c, path) == TERSE_OK;
            terse_comm_destroy(c);
            c = NULL;
            ok &= terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK;
            ok &= ok && terse_layer_add(c, "W", ROWS, COLS, NULL, &id) == TERSE_OK;
            ok &= ok && terse_state_load(c, path) == TERSE_OK;
        }
        fill(out, call);
        ok &= ok && terse_allreduce(c, id, out) == TERSE_OK;
        ok &= ok && terse_step_end(c) == TERSE_OK;
        int agree = mpitest_same_on_all(mpitest_hash(out, N * sizeof *out));
        EXPECT(agree, "'%s' call %d: ranks hold different bits", cfg, call);
    }
    if (!ok) fprintf(stderr, "rank %d: '%s': %s\n", rank_, cfg, terse_last_error());
    terse_comm_destroy(c);
    return ok;
}

static double relerr(const double *est, const double *exact)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < N; i++) {
        num += (est[i] - exact[i]) * (est[i] - exact[i]);
        den += exact[i] * exact[i];
    }
    return sqrt(num / den);
}

/* The gradient jumps after the first call and then stays: the tracked estimate (ef21,
 * econtrol, ef21sgdm), whose first call was exact for the old gradient, must follow it
 * through compressed differences; ef's running mean must pay back its error. Compared:
 * the error against the new exact mean after the first call that sees it and after the
 * last. */
static void converges(const char *codec, const char *fb, const char *cfg)
{
    terse_comm_t *c = NULL;
    int id = -1;
    if (terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) != TERSE_OK ||
        terse_layer_add(c, "W", ROWS, COLS, NULL, &id) != TERSE_OK) {
        EXPECT(0, "'%s': %s", cfg, terse_last_error());
        terse_comm_destroy(c);
        return;
    }
    static float x[N];
    static double exact[N], sum[N], est[N];
    for (size_t i = 0; i < N; i++) {
        exact[i] = 0;
        for (int r = 0; r < nranks_; r++) exact[i] += ref_gradient(r, i, 0);
        exact[i] /= nranks_;
        sum[i] = 0;
    }
    const int running = strncmp(fb, "ef", 2) == 0 && (fb[2] == '\0' || fb[2] == ':');
    double first = 0, last = 0;
    for (int call = 0; call <= LONG_CALLS; call++) {
        fill(x, call == 0 ? 1 : 0);
        if (terse_allreduce(c, id, x) != TERSE_OK) {
            EXPECT(0, "'%s' call %d: %s", cfg, call, terse_last_error());
            break;
        }
        if (call == 0) continue;
        for (size_t i = 0; i < N; i++) {
            /* ef:lr=0.5 hands back mean delta / 0.5, in gradient units like the others */
            sum[i] += x[i];
            est[i] = running ? sum[i] / call : x[i];
        }
        if (call == 1) first = relerr(est, exact);
        last = relerr(est, exact);
    }
    if (rank_ == 0) printf("  %-26s %-18s first %.3e  after %d calls %.3e\n", codec, fb, first, LONG_CALLS, last);
    /* fp16 is nearly exact from the first call: nothing to gain, only keep it there */
    if (first > 1e-2)
        EXPECT(last < 0.5 * first, "'%s': relerr %.3e after %d calls, %.3e after one", cfg, last, LONG_CALLS, first);
    else
        EXPECT(last < 1e-2, "'%s': relerr %.3e after %d calls", cfg, last, LONG_CALLS);
    terse_comm_destroy(c);
}

/* Per-layer overrides: four layers, four plans, one communicator, one allreduce_many. */
static void overrides(void)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=8; feedback=ef; min_size=0", &c) == TERSE_OK,
           "%s", terse_last_error());
    if (!c) return;
    int ids[4];
    EXPECT(terse_layer_add(c, "default", ROWS, COLS, NULL, &ids[0]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "lowrank", ROWS, COLS, "compressor=powersgd:rank=1; feedback=ef21", &ids[1]) == TERSE_OK,
           "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "sign", ROWS, COLS, "compressor=onebit; feedback=econtrol:eta=0.05", &ids[2]) == TERSE_OK,
           "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "dgc", ROWS, COLS, "compressor=dgc:density=0.05; feedback=none", &ids[3]) == TERSE_OK,
           "%s", terse_last_error());
    static float b[4][N];
    float *bufs[4] = {b[0], b[1], b[2], b[3]};
    for (int call = 0; call < 3; call++) {
        for (int l = 0; l < 4; l++) fill(b[l], call + l);
        EXPECT(terse_allreduce_many(c, 4, ids, bufs) == TERSE_OK, "%s", terse_last_error());
        EXPECT(mpitest_same_on_all(mpitest_hash(b, sizeof b)), "overrides: ranks differ");
    }
    const char *want[4][2] = {{"topk", "ef"}, {"powersgd", "ef21"}, {"onebit", "econtrol"}, {"dgc", "none"}};
    for (int l = 0; l < 4; l++) {
        terse_stats_t st;
        EXPECT(terse_layer_stats(c, ids[l], &st) == TERSE_OK && strncmp(st.codec, want[l][0], strlen(want[l][0])) == 0 &&
                   strcmp(st.feedback, want[l][1]) == 0 && st.calls == 3,
               "layer %d: %s / %s", l, st.codec, st.feedback);
    }
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    int pid = (int)getpid();
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    char path[128], mine[160];
    snprintf(path, sizeof path, "/tmp/terse_test_fbcodec_%d", pid);
    snprintf(mine, sizeof mine, "%s.rank%d", path, rank_);
    static float whole[N], resumed[N];
    if (rank_ == 0) printf("constant gradient, %d x %d, %d ranks:\n", ROWS, COLS, nranks_);
    for (size_t ci = 0; ci < sizeof codecs / sizeof codecs[0]; ci++) {
        for (size_t fi = 0; fi < sizeof feedbacks / sizeof feedbacks[0]; fi++) {
            char cfg[256];
            config_of(codecs[ci], feedbacks[fi], cfg, sizeof cfg);
            int ok = run(cfg, -1, path, whole) && run(cfg, 2, path, resumed);
            EXPECT(ok, "'%s' failed", cfg);
            EXPECT(memcmp(whole, resumed, sizeof whole) == 0, "'%s': the resumed run differs", cfg);
            unlink(mine);
            converges(codecs[ci], feedbacks[fi], cfg);
        }
    }
    overrides();
    int rc = mpitest_finish("test_feedback_codecs");
    MPI_Finalize();
    return rc;
}
