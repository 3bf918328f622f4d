/* compressor=onebit under mpirun (1..4 ranks) against a serial reference of 1-bit Adam's
 * two-phase protocol (ALGORITHMS.md §7, in the operation order documented in
 * collectives/onebit_twophase.c), written here without calling the codec: every rank
 * rebuilds every rank's gradient, runs the workers, the servers and the feedback serially,
 * and compares its terse result bit for bit; all ranks must hold the same bits. Scales l1 and
 * l2, feedback ef and none, mean and sum, sizes 0, 1, 7, 1009, 1152 (a multiple of W *
 * divider for every W here, so no padding), 100003; three calls so that the worker, tail and
 * server errors carry over. Then a checkpoint after call 2 reruns call 3 bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

typedef struct {
    const char *config;
    int l2, ef, sum;
} case_t;

static size_t ref_padded(size_t d, int w)
{
    size_t a = 8, b = (size_t)w;
    while (b) { size_t t = a % b; a = b; b = t; } /* gcd(8, w) */
    size_t unit = (size_t)w * (8 * (size_t)w / a);
    return (d + unit - 1) / unit * unit;
}

/* The norm the library documents: double sums in eight lanes (lane j % 8), combined as
 * ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). */
static double ref_norm(int l2, const float *x, size_t n)
{
    double l[8] = {0};
    for (size_t j = 0; j < n; j++) l[j % 8] += l2 ? (double)x[j] * (double)x[j] : fabs((double)x[j]);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static float ref_scale(int l2, double acc, size_t len)
{
    if (len == 0) return 0.0f;
    return l2 ? (float)(sqrt(acc) / sqrt((double)len)) : (float)(acc / (double)len);
}

static float sgn_times(float x, float s) { return x >= 0.0f ? s : -s; } /* -0.0 counts as + */

/* The whole layer's memory in the reference, for all ranks. */
typedef struct {
    size_t d, dp, len;
    float *e;      /* nranks x d: EF's worker error                                        */
    float *tail;   /* nranks x (dp - d): the protocol's tail error                          */
    float *server; /* dp: the server error, chunk r of rank r                               */
    float *p, *c;  /* nranks x dp: b = [p, tail]; len: a server's c                         */
    float *sw;     /* nranks                                                                 */
} ref_t;

static void ref_init(ref_t *R, size_t d)
{
    R->d = d;
    R->dp = ref_padded(d, nranks_);
    R->len = R->dp / (size_t)nranks_;
    size_t w = (size_t)nranks_;
    R->e = calloc(w * d + 1, sizeof(float));
    R->tail = calloc(w * (R->dp - d) + 1, sizeof(float));
    R->server = calloc(R->dp + 1, sizeof(float));
    R->p = calloc(w * R->dp + 1, sizeof(float));
    R->c = calloc(R->len + 1, sizeof(float));
    R->sw = calloc(w, sizeof(float));
}

static void ref_free(ref_t *R)
{
    free(R->e); free(R->tail); free(R->server); free(R->p); free(R->c); free(R->sw);
}

/* One call of the reference: out (d) = the aggregate every rank must hand back. */
static void ref_call(const case_t *cs, ref_t *R, int call, float *out)
{
    const size_t d = R->d, dp = R->dp, len = R->len, nt = dp - d;
    const int w = nranks_;
    for (int r = 0; r < w; r++) {
        float *b = R->p + (size_t)r * dp, *e = R->e + (size_t)r * d, *tail = R->tail + (size_t)r * nt;
        for (size_t j = 0; j < d; j++) b[j] = ref_gradient(r, j, call) + (cs->ef ? e[j] : 0.0f);
        for (size_t j = 0; j < nt; j++) b[d + j] = cs->ef ? tail[j] : 0.0f;
        double acc = ref_norm(cs->l2, b, d);
        if (cs->ef) acc += ref_norm(cs->l2, b + d, nt);
        R->sw[r] = ref_scale(cs->l2, acc, dp);
        if (cs->ef) {
            for (size_t j = 0; j < d; j++) e[j] = b[j] - sgn_times(b[j], R->sw[r]);
            for (size_t j = 0; j < nt; j++) tail[j] = b[d + j] - sgn_times(b[d + j], R->sw[r]);
        }
    }
    const float inv = (float)(1.0 / (double)w);
    for (int q = 0; q < w; q++) {
        float *se = R->server + (size_t)q * len;
        for (size_t k = 0; k < len; k++) {
            size_t j = (size_t)q * len + k;
            float acc = sgn_times(R->p[j], R->sw[0] * inv);
            for (int r = 1; r < w; r++) acc += sgn_times(R->p[(size_t)r * dp + j], R->sw[r] * inv);
            R->c[k] = acc + se[k];
        }
        float ss = ref_scale(cs->l2, ref_norm(cs->l2, R->c, len), len);
        for (size_t k = 0; k < len; k++) {
            size_t j = (size_t)q * len + k;
            if (j < d) out[j] = sgn_times(R->c[k], cs->sum ? ss * (float)w : ss);
            se[k] = R->c[k] - sgn_times(R->c[k], ss);
        }
    }
}

static void run_case(const case_t *cs, size_t n, int calls)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cs->config, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", cs->config, terse_last_error());
    if (s != TERSE_OK) return;
    int id = -1;
    s = terse_layer_add(c, "L", n, 1, NULL, &id);
    EXPECT(s == TERSE_OK && id == 0, "layer_add %zu: %s", n, terse_last_error());
    size_t m = n ? n : 1;
    float *buf = malloc(m * sizeof *buf), *ref = malloc(m * sizeof *ref);
    ref_t R;
    ref_init(&R, n);
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "allreduce '%s' n=%zu call %d: %s", cs->config, n, call, terse_last_error());
        ref_call(cs, &R, call, ref);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu is %.9g, reference %.9g",
               cs->config, n, call, bad, bad < n ? buf[bad] : 0.0, bad < n ? ref[bad] : 0.0);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)),
               "'%s' n=%zu call %d: ranks hold different bits", cs->config, n, call);
    }
    terse_stats_t st;
    s = terse_layer_stats(c, id, &st);
    EXPECT(s == TERSE_OK && st.calls == (uint64_t)calls && !st.dense && st.wire_bytes == R.dp / 8 + 4,
           "'%s' n=%zu: stats calls %llu dense %d wire %zu, expected %zu", cs->config, n,
           (unsigned long long)st.calls, st.dense, st.wire_bytes, R.dp / 8 + 4);
    ref_free(&R);
    free(buf);
    free(ref);
    terse_comm_destroy(c);
}

/* Save after call 2, run call 3, load, rerun call 3: the same bits, since the checkpoint
 * holds EF's worker error, the tail error and the server error. */
static void run_checkpoint(const char *config, size_t n, const char *path)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, config, &c) == TERSE_OK, "%s", terse_last_error());
    if (!c) return;
    int id = -1;
    EXPECT(terse_layer_add(c, "L", n, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    float *buf = malloc(n * sizeof *buf), *first = malloc(n * sizeof *first);
    for (int call = 0; call < 2; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "%s", terse_last_error());
    }
    EXPECT(terse_state_save(c, path) == TERSE_OK, "save: %s", terse_last_error());
    for (size_t i = 0; i < n; i++) first[i] = ref_gradient(rank_, i, 2);
    EXPECT(terse_allreduce(c, id, first) == TERSE_OK, "%s", terse_last_error());
    /* a fourth call moves every error on, so that the load has something to undo */
    for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, 3);
    EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_state_load(c, path) == TERSE_OK, "load: %s", terse_last_error());
    for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, 2);
    EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "%s", terse_last_error());
    EXPECT(memcmp(buf, first, n * sizeof *buf) == 0, "'%s' n=%zu: call 3 after the load differs", config, n);
    free(buf);
    free(first);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const case_t cases[] = {
        {"compressor=onebit; feedback=ef; min_size=0", 1, 1, 0},
        {"compressor=onebit:scale=l1; feedback=ef; min_size=0", 0, 1, 0},
        {"compressor=onebit:scale=l2; feedback=none; min_size=0", 1, 0, 0},
        {"compressor=onebit:scale=l1; feedback=none; min_size=0", 0, 0, 0},
        {"compressor=onebit; feedback=ef; min_size=0; reduce=sum", 1, 1, 1},
        {"compressor=onebit:scale=l1; feedback=none; min_size=0; reduce=sum", 0, 0, 1},
    };
    static const size_t sizes[] = {0, 1, 7, 1009, 1152, 100003};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) run_case(&cases[ci], sizes[si], 3);

    char dir[64], path[128];
    mpitest_ckpt_dir("onebit", dir, path);
    run_checkpoint("compressor=onebit; feedback=ef; min_size=0", 1009, path);
    run_checkpoint("compressor=onebit:scale=l1; feedback=none; min_size=0", 7, path);

    MPI_Barrier(MPI_COMM_WORLD);
    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("test_onebit");
    MPI_Finalize();
    return rc;
}
