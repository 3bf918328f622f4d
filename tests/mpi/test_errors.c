/* Bad input and disagreeing ranks, under mpirun: every case returns a status and a message
 * on every rank, never a crash or a hang, and leaves the state as it was. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

static int has_message(void) { return terse_last_error()[0] != '\0'; }

static void bad_arguments(void)
{
    terse_comm_t *c = NULL;
    int id = 7;
    float x[4] = {0};
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, NULL, NULL) == TERSE_ERR_ARG && has_message(), "NULL out");
    EXPECT(terse_comm_create_mpi(MPI_COMM_NULL, NULL, &c) == TERSE_ERR_ARG && c == NULL && has_message(), "MPI_COMM_NULL");
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:density=2", &c) == TERSE_ERR_ARG && c == NULL,
           "density=2: %s", terse_last_error());
    EXPECT(strstr(terse_last_error(), "density=2") != NULL, "message quotes the bad text: %s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compresor=topk", &c) == TERSE_ERR_ARG &&
               strstr(terse_last_error(), "compressor") != NULL,
           "unknown key lists the accepted ones: %s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=auto:with=none", &c) == TERSE_ERR_ARG && c == NULL &&
               strstr(terse_last_error(), "with=none") != NULL,
           "auto with no compressed path: %s", terse_last_error());
    EXPECT(terse_comm_create_mpi_f(-12345, NULL, &c) != TERSE_OK && c == NULL, "bad Fortran handle");
    EXPECT(terse_comm_destroy(NULL) == TERSE_OK, "destroy(NULL) is fine");
    EXPECT(terse_comm_create_world(NULL, NULL) == TERSE_ERR_ARG && has_message(), "world: NULL out");
    EXPECT(terse_comm_create_mpi_f(0, NULL, NULL) == TERSE_ERR_ARG && has_message(), "Fortran: NULL out");
    if (nranks_ > 1) {
        /* the two halves of the ranks, joined by an inter-communicator */
        MPI_Comm half, inter;
        MPI_Comm_split(MPI_COMM_WORLD, rank_ % 2, rank_, &half);
        MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, rank_ % 2 ? 0 : 1, 99, &inter);
        EXPECT(terse_comm_create_mpi(inter, NULL, &c) == TERSE_ERR_ARG && c == NULL &&
                   strstr(terse_last_error(), "inter-communicator"),
               "an inter-communicator: %s", terse_last_error());
        MPI_Comm_free(&inter);
        MPI_Comm_free(&half);
    }

    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=2; feedback=ef; min_size=0", &c) == TERSE_OK,
           "%s", terse_last_error());
    EXPECT(terse_layer_add(NULL, "x", 4, 1, NULL, &id) == TERSE_ERR_ARG && id == 7, "NULL comm");
    EXPECT(terse_layer_add(c, "x", 4, 1, NULL, NULL) == TERSE_ERR_ARG, "NULL id");
    EXPECT(terse_layer_add(c, "x", SIZE_MAX, 2, NULL, &id) == TERSE_ERR_ARG && id == 7 && has_message(),
           "overflowing size: %s", terse_last_error());
    EXPECT(terse_layer_add(c, "x", (size_t)1 << 20, (size_t)1 << 20, NULL, &id) == TERSE_ERR_ARG && id == 7,
           "absurd size: %s", terse_last_error());
    EXPECT(terse_layer_add(c, "x", 4, 1, "threads=2", &id) == TERSE_ERR_ARG && id == 7,
           "communicator-wide key in a layer config: %s", terse_last_error());
    EXPECT(terse_layer_add(c, "x", 4, 1, "compressor=auto:trials=0", &id) == TERSE_ERR_ARG && id == 7,
           "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "x", 4, 1, "compressor=topk:density=0.5,k=2", &id) == TERSE_ERR_ARG && id == 7,
           "density and k together: %s", terse_last_error());
    EXPECT(terse_layer_add(c, "x", 4, 1, NULL, &id) == TERSE_OK && id == 0, "%s", terse_last_error());
    EXPECT(terse_allreduce(NULL, 0, x) == TERSE_ERR_ARG && has_message(), "NULL comm");
    EXPECT(terse_allreduce(c, 1, x) == TERSE_ERR_ARG && strstr(terse_last_error(), "unknown layer") != NULL,
           "unknown layer: %s", terse_last_error());
    EXPECT(terse_allreduce(c, -1, x) == TERSE_ERR_ARG, "negative layer id");
    EXPECT(terse_allreduce(c, 0, NULL) == TERSE_ERR_ARG && has_message(), "NULL buf");
    EXPECT(terse_allreduce_many(c, -1, NULL, NULL) == TERSE_ERR_ARG, "negative count");
    EXPECT(terse_allreduce_many(NULL, 1, &id, NULL) == TERSE_ERR_ARG && has_message(), "many: NULL comm");
    {
        /* stops at the first error: layer 0 after the unknown id is not reduced */
        int ids[2] = {99, 0};
        float *bufs[2] = {x, x};
        terse_stats_t st0;
        EXPECT(terse_allreduce_many(c, 2, ids, bufs) == TERSE_ERR_ARG && strstr(terse_last_error(), "99"),
               "many with an unknown id: %s", terse_last_error());
        EXPECT(terse_layer_stats(c, 0, &st0) == TERSE_OK && st0.calls == 0, "many stopped at the bad id");
    }
    EXPECT(terse_allreduce_many(c, 1, NULL, NULL) == TERSE_ERR_ARG, "NULL arrays");
    EXPECT(terse_allreduce_many(c, 0, NULL, NULL) == TERSE_OK, "zero layers is fine");
    terse_stats_t st;
    EXPECT(terse_layer_stats(c, 0, NULL) == TERSE_ERR_ARG, "NULL stats");
    EXPECT(terse_layer_stats(c, 5, &st) == TERSE_ERR_ARG, "stats of an unknown layer");
    EXPECT(terse_layer_stats(c, -1, &st) == TERSE_ERR_ARG && has_message(), "stats of layer -1");
    EXPECT(terse_layer_stats(NULL, 0, &st) == TERSE_ERR_ARG && has_message(), "stats: NULL comm");
    EXPECT(terse_step_end(NULL) == TERSE_ERR_ARG, "step_end(NULL)");
    char small[8];
    EXPECT(terse_comm_config(c, small, sizeof small) == TERSE_ERR_ARG && strstr(terse_last_error(), "too small"),
           "config into a small buffer: %s", terse_last_error());
    EXPECT(terse_comm_config(NULL, small, sizeof small) == TERSE_ERR_ARG && has_message(), "config: NULL comm");
    EXPECT(terse_comm_config(c, NULL, 100) == TERSE_ERR_ARG && has_message(), "config: NULL buf");
    {
        char full[1024];
        EXPECT(terse_comm_config(c, full, sizeof full) == TERSE_OK && !has_message(), "config: %s", terse_last_error());
        const size_t need = strlen(full) + 1;
        char *exact = malloc(need);
        EXPECT(terse_comm_config(c, exact, need - 1) == TERSE_ERR_ARG, "config: one byte short");
        EXPECT(terse_comm_config(c, exact, need) == TERSE_OK && strcmp(exact, full) == 0, "config: exact fit");
        free(exact);
    }
    int r = -1, n = -1;
    EXPECT(terse_comm_rank(NULL, &r, &n) == TERSE_ERR_ARG && has_message() && r == -1, "rank: NULL comm");
    EXPECT(terse_comm_rank(c, NULL, NULL) == TERSE_ERR_ARG && has_message(), "rank: both outputs NULL");
    EXPECT(terse_comm_rank(c, &r, &n) == TERSE_OK && r == rank_ && n == nranks_, "rank/size");
    /* the communicator still works after all that */
    float y[4] = {1, 2, 3, 4};
    EXPECT(terse_allreduce(c, 0, y) == TERSE_OK, "%s", terse_last_error());
    terse_comm_destroy(c);
}

/* A destroyed or never-created handle is TERSE_ERR_ARG in every call that takes one; the
 * handle is compared, never dereferenced (ASan would catch it). */
static void dead_handles(void)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "min_size=0", &c) == TERSE_OK, "%s", terse_last_error());
    int id = -1;
    EXPECT(terse_layer_add(c, "x", 4, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_comm_destroy(c) == TERSE_OK, "%s", terse_last_error());
    int stack_thing = 0;
    terse_comm_t *bogus = (terse_comm_t *)&stack_thing;
    terse_comm_t *handles[2] = {c, bogus};
    for (int k = 0; k < 2; k++) {
        terse_comm_t *h = handles[k];
        const char *what = k == 0 ? "destroyed" : "never created";
        float x[4] = {1, 2, 3, 4};
        terse_stats_t st;
        char buf[256];
        int r, n, nid = 9;
        EXPECT(terse_allreduce(h, 0, x) == TERSE_ERR_ARG && strstr(terse_last_error(), "not a live communicator"),
               "%s: allreduce: %s", what, terse_last_error());
        float *bufs[1] = {x};
        EXPECT(terse_allreduce_many(h, 1, &id, bufs) == TERSE_ERR_ARG, "%s: allreduce_many", what);
        EXPECT(terse_layer_add(h, "y", 4, 1, NULL, &nid) == TERSE_ERR_ARG && nid == 9, "%s: layer_add", what);
        EXPECT(terse_layer_stats(h, 0, &st) == TERSE_ERR_ARG, "%s: layer_stats", what);
        EXPECT(terse_step_end(h) == TERSE_ERR_ARG, "%s: step_end", what);
        EXPECT(terse_set_learning_rate(h, 0.1) == TERSE_ERR_ARG, "%s: set_learning_rate", what);
        EXPECT(terse_comm_rank(h, &r, &n) == TERSE_ERR_ARG, "%s: comm_rank", what);
        EXPECT(terse_comm_config(h, buf, sizeof buf) == TERSE_ERR_ARG, "%s: comm_config", what);
        EXPECT(terse_state_save(h, "/tmp/terse-dead") == TERSE_ERR_ARG, "%s: state_save", what);
        EXPECT(terse_state_load(h, "/tmp/terse-dead") == TERSE_ERR_ARG, "%s: state_load", what);
        EXPECT(terse_comm_destroy(h) == TERSE_ERR_ARG && strstr(terse_last_error(), "terse_comm_destroy"),
               "%s: destroy: %s", what, terse_last_error());
        EXPECT(x[0] == 1 && x[3] == 4, "%s: buf untouched", what);
    }
}

/* Ranks that call different layers or sizes all get TERSE_ERR_MISMATCH, and a following
 * agreeing call works as if the bad one never happened. */
static void mismatch(void)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=2; feedback=ef; min_size=0", &c) == TERSE_OK,
           "%s", terse_last_error());
    int a, b, odd;
    terse_layer_add(c, "a", 8, 1, NULL, &a);
    terse_layer_add(c, "b", 8, 1, NULL, &b);
    /* the last rank registers a layer of a different size, or a different codec */
    terse_layer_add(c, "odd", rank_ == nranks_ - 1 ? 9 : 8, 1, NULL, &odd);
    int codec_layer;
    terse_layer_add(c, "codec", 8, 1, rank_ == nranks_ - 1 ? "compressor=topk:k=3" : NULL, &codec_layer);
    int nf_layer; /* one rank would skip a NaN step that the others fail */
    terse_layer_add(c, "nf", 8, 1, rank_ == nranks_ - 1 ? "nonfinite=skip" : NULL, &nf_layer);
    float g[9], ref[9];
    for (int i = 0; i < 9; i++) g[i] = (float)(i + 1) * (rank_ + 1);
    if (nranks_ > 1) {
        memcpy(ref, g, sizeof g);
        terse_status_t s = terse_allreduce(c, rank_ == 0 ? a : b, g);
        EXPECT(s == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "layer") != NULL,
               "different layers: %d %s", s, terse_last_error());
        EXPECT(memcmp(ref, g, sizeof g) == 0, "buf unchanged after a mismatch");
        s = terse_allreduce(c, odd, g);
        EXPECT(s == TERSE_ERR_MISMATCH, "different sizes: %d %s", s, terse_last_error());
        s = terse_allreduce(c, codec_layer, g);
        EXPECT(s == TERSE_ERR_MISMATCH, "different codecs: %d %s", s, terse_last_error());
        s = terse_allreduce(c, nf_layer, g);
        EXPECT(s == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "nonfinite"),
               "different nonfinite settings: %d %s", s, terse_last_error());
    }
    /* state untouched: a's first real call gives the same as a fresh communicator's */
    terse_comm_t *fresh = NULL;
    terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=2; feedback=ef; min_size=0", &fresh);
    int fa;
    terse_layer_add(fresh, "a", 8, 1, NULL, &fa);
    for (int call = 0; call < 3; call++) {
        float x[8], y[8];
        for (int i = 0; i < 8; i++) x[i] = y[i] = (float)((i * 7 + call) % 5) - 2.0f + 0.1f * (float)rank_;
        EXPECT(terse_allreduce(c, a, x) == TERSE_OK, "%s", terse_last_error());
        EXPECT(terse_allreduce(fresh, fa, y) == TERSE_OK, "%s", terse_last_error());
        EXPECT(memcmp(x, y, sizeof x) == 0, "call %d after a mismatch equals a fresh run", call);
    }
    terse_stats_t st;
    terse_layer_stats(c, a, &st);
    EXPECT(st.calls == 3, "failed calls are not counted: %llu", (unsigned long long)st.calls);
    terse_comm_destroy(fresh);
    terse_comm_destroy(c);
}

/* A NaN on one rank: nonfinite=error fails on every rank and leaves every buffer as it was,
 * skip zeroes the result on every rank; either way the feedback (or codec) state is as
 * before, so the next call equals a run without the bad step. dgc finds the NaN in its own
 * pass over the gradient (PROTO_SCANS_INPUT) and writes its result in place; the dense
 * protocol (compressor=none) finds it at the owners of the chunks (PROTO_SCANS_AT_OWNER)
 * and writes in place too. */
static void nonfinite(const char *mode, const char *method, size_t rows, size_t cols)
{
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s; min_size=0; nonfinite=%s", method, mode);
    terse_comm_t *c = NULL, *clean = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &clean) == TERSE_OK, "%s", terse_last_error());
    int l, lc;
    EXPECT(rows * cols == 6, "6 elements");
    terse_layer_add(c, "l", rows, cols, NULL, &l);
    terse_layer_add(clean, "l", rows, cols, NULL, &lc);
    float x[6], y[6];
    for (int i = 0; i < 6; i++) x[i] = y[i] = (float)(i - 2) * 0.5f + (float)rank_;
    EXPECT(terse_allreduce(c, l, x) == TERSE_OK && terse_allreduce(clean, lc, y) == TERSE_OK, "%s", terse_last_error());
    float bad[6] = {1, 2, 3, 4, 5, 6};
    if (rank_ == nranks_ - 1) bad[3] = NAN;
    if (rank_ == 0 && nranks_ > 2) bad[1] = INFINITY;
    float keep[6];
    memcpy(keep, bad, sizeof keep);
    terse_status_t s = terse_allreduce(c, l, bad);
    if (strcmp(mode, "error") == 0) {
        EXPECT(s == TERSE_ERR_NONFINITE && has_message(), "%s: NaN with nonfinite=error: %d %s", method, s,
               terse_last_error());
        char who[32];
        snprintf(who, sizeof who, "rank %d's", nranks_ > 2 ? 0 : nranks_ - 1);
        EXPECT(strstr(terse_last_error(), who) != NULL, "%s: the lowest bad rank is named: %s", method,
               terse_last_error());
        EXPECT(memcmp(keep, bad, sizeof keep) == 0, "%s: the buffer is as it was", method);
    } else {
        int zero = 1;
        for (int i = 0; i < 6; i++) zero &= bad[i] == 0.0f;
        EXPECT(s == TERSE_OK && zero, "NaN with nonfinite=skip: %d, zeroed %d", s, zero);
        terse_stats_t st;
        terse_layer_stats(c, l, &st);
        EXPECT(st.skipped == 1, "skipped counted");
    }
    for (int i = 0; i < 6; i++) x[i] = y[i] = (float)(5 - i) * 0.25f - (float)rank_;
    EXPECT(terse_allreduce(c, l, x) == TERSE_OK && terse_allreduce(clean, lc, y) == TERSE_OK, "%s", terse_last_error());
    EXPECT(memcmp(x, y, sizeof x) == 0, "%s, nonfinite=%s: the state is as if the bad call never happened",
           method, mode);
    terse_comm_destroy(c);
    terse_comm_destroy(clean);
}

/* Large layers, where the protocols check the input as they read it: the dense one at the
 * owners of the chunks (PROTO_SCANS_AT_OWNER, 1 MiB and more), topk from its message (a NaN
 * or Inf outranks every finite magnitude, PROTO_SCANS_INPUT), also on ef's p = g + e. A NaN
 * near the end of the last rank's gradient and an Inf in rank 0's (with 3 ranks or more)
 * fail the call on every rank, naming the lowest rank, with the buffer as it was; skip
 * zeroes it. The next call then equals that of a communicator that never saw the bad one
 * (and, dense, the exact mean). */
static void nonfinite_large(const char *method, const char *mode)
{
    enum { N = (1 << 18) + 5 };
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s; min_size=0; nonfinite=%s", method, mode);
    terse_comm_t *c = NULL, *clean = NULL;
    int l = -1, lc = -1;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &clean) == TERSE_OK, "%s", terse_last_error());
    if (!c || !clean) return;
    EXPECT(terse_layer_add(c, "big", N, 1, NULL, &l) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(clean, "big", N, 1, NULL, &lc) == TERSE_OK, "%s", terse_last_error());
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *keep = malloc(N * sizeof *keep);
    for (int i = 0; i < N; i++) x[i] = y[i] = (float)(i % 101) * 0.5f - (float)rank_;
    EXPECT(terse_allreduce(c, l, x) == TERSE_OK && terse_allreduce(clean, lc, y) == TERSE_OK, "%s",
           terse_last_error());
    for (int i = 0; i < N; i++) x[i] = (float)(i % 97) * 0.125f + (float)rank_;
    if (rank_ == nranks_ - 1) x[N - 2] = NAN;
    if (rank_ == 0 && nranks_ > 2) x[N / 2] = -INFINITY;
    memcpy(keep, x, N * sizeof *x);
    terse_status_t s = terse_allreduce(c, l, x);
    if (strcmp(mode, "error") == 0) {
        char who[32];
        snprintf(who, sizeof who, "rank %d's", nranks_ > 2 ? 0 : nranks_ - 1);
        EXPECT(s == TERSE_ERR_NONFINITE && strstr(terse_last_error(), who), "large %s, error: %d %s", method, s,
               terse_last_error());
        EXPECT(memcmp(keep, x, N * sizeof *x) == 0, "large %s: the buffer is as it was", method);
    } else {
        int zero = 1;
        for (int i = 0; i < N; i++) zero &= x[i] == 0.0f;
        terse_stats_t st;
        terse_layer_stats(c, l, &st);
        EXPECT(s == TERSE_OK && zero && st.skipped == 1, "large %s, skip: %d, zeroed %d, skipped %llu", method, s,
               zero, (unsigned long long)st.skipped);
    }
    for (int i = 0; i < N; i++) x[i] = y[i] = (float)(i % 89) * 0.25f - (float)rank_;
    EXPECT(terse_allreduce(c, l, x) == TERSE_OK && terse_allreduce(clean, lc, y) == TERSE_OK, "%s",
           terse_last_error());
    EXPECT(memcmp(x, y, N * sizeof *x) == 0, "large %s, %s: the state is as if the bad call never happened",
           method, mode);
    int exact = 1;
    for (int i = 0; i < N && strcmp(method, "compressor=none") == 0; i++) {
        float sum = 0.0f;
        for (int r = 0; r < nranks_; r++) sum += (float)(i % 89) * 0.25f - (float)r;
        exact &= x[i] == sum / (float)nranks_;
    }
    EXPECT(exact, "large %s, %s: the next call is the exact mean", method, mode);
    free(x);
    free(y);
    free(keep);
    terse_comm_destroy(c);
    terse_comm_destroy(clean);
}

/* terse_set_learning_rate: its arguments, and ef's inside form at gamma = 1 is the outside
 * form bit for bit (p = e + 1 g = g + e, out = mean delta / 1). */
static void learning_rate(void)
{
    EXPECT(terse_set_learning_rate(NULL, 0.1) == TERSE_ERR_ARG && has_message(), "NULL comm");
    terse_comm_t *in = NULL, *out = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=3; feedback=ef:lr=0.5; min_size=0", &in) == TERSE_OK,
           "%s", terse_last_error());
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=3; feedback=ef; min_size=0", &out) == TERSE_OK,
           "%s", terse_last_error());
    if (!in || !out) return;
    const double bad[] = {0.0, -1.0, NAN, INFINITY, 1e31};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(terse_set_learning_rate(in, bad[i]) == TERSE_ERR_ARG && has_message(), "lr = %g", bad[i]);
    EXPECT(terse_set_learning_rate(out, 0.3) == TERSE_OK, "no inside layer: no effect, no error");
    int a = -1, b = -1;
    EXPECT(terse_layer_add(in, "x", 40, 1, NULL, &a) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(out, "x", 40, 1, NULL, &b) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_set_learning_rate(in, 1.0) == TERSE_OK, "%s", terse_last_error());
    float x[40], y[40];
    for (int call = 0; call < 4; call++) {
        for (int i = 0; i < 40; i++) x[i] = y[i] = (float)((i * 7 + call * 3 + rank_) % 11) - 5.0f;
        EXPECT(terse_allreduce(in, a, x) == TERSE_OK && terse_allreduce(out, b, y) == TERSE_OK, "%s",
               terse_last_error());
        EXPECT(memcmp(x, y, sizeof x) == 0, "call %d: ef:lr at gamma 1 differs from ef", call);
    }
    if (nranks_ > 1) {
        /* a rank with another learning rate: every rank refuses the call, then agrees again */
        EXPECT(terse_set_learning_rate(in, rank_ == nranks_ - 1 ? 0.5 : 0.25) == TERSE_OK, "%s", terse_last_error());
        terse_status_t s = terse_allreduce(in, a, x);
        EXPECT(s == TERSE_ERR_MISMATCH && strstr(terse_last_error(), "learning rate"),
               "different learning rates: %d %s", s, terse_last_error());
        EXPECT(terse_set_learning_rate(in, 0.25) == TERSE_OK && terse_allreduce(in, a, x) == TERSE_OK,
               "the same rate again: %s", terse_last_error());
    }
    terse_comm_destroy(in);
    terse_comm_destroy(out);
}

/* device=cuda: where CUDA has no usable device (or terse was built without it), creation is
 * TERSE_ERR_UNSUPPORTED on every rank with a message that says why, and MPI stays usable;
 * where it has one, a host buffer is refused. */
static void device_buffers(void)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, "device=cuda", &c);
    EXPECT(mpitest_same_on_all((uint64_t)(int64_t)s), "device=cuda: ranks disagree on the status %d", s);
    if (s == TERSE_OK) {
        int id = -1;
        float x[4] = {1, 2, 3, 4};
        EXPECT(terse_layer_add(c, "x", 4, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
        EXPECT(terse_allreduce(c, id, x) == TERSE_ERR_ARG && x[2] == 3, "a host buffer on device=cuda: %s",
               terse_last_error());
        terse_comm_destroy(c);
    } else {
        EXPECT(s == TERSE_ERR_UNSUPPORTED && c == NULL && strstr(terse_last_error(), "CUDA"),
               "device=cuda without a device: %d: %s", s, terse_last_error());
    }
    /* a plain communicator works afterwards */
    int id = -1;
    float x[4] = {1, 2, 3, 4};
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, NULL, &c) == TERSE_OK && terse_layer_add(c, "x", 4, 1, NULL, &id) == TERSE_OK &&
               terse_allreduce(c, id, x) == TERSE_OK && x[3] == 4,
           "after device=cuda: %s", terse_last_error());
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    bad_arguments();
    dead_handles();
    mismatch();
    static const char *const methods[] = {"compressor=topk:k=1; feedback=ef", "compressor=dgc:density=0.4",
                                          "compressor=none"};
    for (int m = 0; m < 3; m++) {
        nonfinite("error", methods[m], m == 1 ? 3 : 6, m == 1 ? 2 : 1);
        nonfinite("skip", methods[m], m == 1 ? 3 : 6, m == 1 ? 2 : 1);
    }
    static const char *const large[] = {"compressor=none", "compressor=topk:density=0.01; feedback=ef",
                                        "compressor=topk:density=0.01"};
    for (int m = 0; m < 3; m++) {
        nonfinite_large(large[m], "error");
        nonfinite_large(large[m], "skip");
    }
    learning_rate();
    device_buffers();
    /* a communicator left alive across MPI_Finalize */
    terse_comm_t *late = NULL;
    int lid = -1;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "min_size=0", &late) == TERSE_OK &&
               terse_layer_add(late, "x", 4, 1, NULL, &lid) == TERSE_OK, "%s", terse_last_error());
    int rc = mpitest_finish("test_errors");
    MPI_Finalize();
    /* after MPI_Finalize: errors, not crashes (checked by hand: mpitest counts need MPI) */
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_world(NULL, &c);
    if (s != TERSE_ERR_STATE || c != NULL) {
        fprintf(stderr, "rank %d: create after MPI_Finalize gave %d\n", rank_, s);
        rc = 1;
    }
    float x[4] = {1, 2, 3, 4};
    float *bufs[1] = {x};
    const terse_status_t after[] = {terse_allreduce(late, lid, x), terse_allreduce_many(late, 1, &lid, bufs),
                                    terse_state_save(late, "/tmp/terse-late"), terse_state_load(late, "/tmp/terse-late")};
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++)
        if (after[i] != TERSE_ERR_STATE) {
            fprintf(stderr, "rank %d: collective call %zu after MPI_Finalize gave %d\n", rank_, i, after[i]);
            rc = 1;
        }
    terse_stats_t st;
    if (terse_layer_stats(late, lid, &st) != TERSE_OK || st.calls != 0 || terse_comm_destroy(late) != TERSE_OK) {
        fprintf(stderr, "rank %d: stats or destroy after MPI_Finalize: %s\n", rank_, terse_last_error());
        rc = 1;
    }
    return rc;
}
