/* RandK under mpirun (1..4 ranks) against a serial reference: every rank draws the same
 * k-subset (Floyd's algorithm on the shared stream of the layer's call, rewritten here from
 * ALGORITHMS.md §2.2), the kept values are averaged in rank order, and with feedback=ef the
 * error of each rank carries over. Checks bit-for-bit equality, identical results on all
 * ranks, the wire size (values only) and that a run resumed from saved state continues bit
 * for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "protocol.h"
#include "reference.h"
#include "rng.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

/* The shared indices of (layer, call): a bitmap of n bits. */
static void ref_indices(int layer, uint64_t call, double seed, size_t n, size_t k, unsigned char *keep)
{
    proto_call_t c;
    memset(&c, 0, sizeof c);
    c.layer = layer;
    c.calls = call;
    uint64_t key = rng_mix(protocol_stream_key(0, &c, -1, 0) ^ ((uint64_t)seed * 0x9e3779b97f4a7c15ull));
    memset(keep, 0, n);
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)rng_below(key, j, (uint64_t)j + 1);
        keep[keep[t] ? j : t] = 1;
    }
}

typedef struct {
    const char *config;
    double density, seed;
    int unbiased, ef, sum;
} case_t;

static size_t k_of(double density, size_t n)
{
    if (n == 0) return 0;
    size_t k = (size_t)(density * (double)n);
    return k < 1 ? 1 : k < n ? k : n;
}

/* The reference result of `call` given the errors e (updated in place). */
static void reference(const case_t *cs, size_t n, int call, float *e, float *ref, unsigned char *keep)
{
    size_t k = k_of(cs->density, n);
    ref_indices(0, (uint64_t)call, cs->seed, n, k, keep);
    const float scale = cs->unbiased ? (float)((double)n / (double)k) : 1.0f;
    memset(ref, 0, n * sizeof *ref);
    for (int r = 0; r < nranks_; r++) {
        float *er = e + (size_t)r * n;
        for (size_t i = 0; i < n; i++) {
            float p = ref_gradient(r, i, call) + (cs->ef ? er[i] : 0.0f);
            float d = keep[i] ? p * scale : 0.0f;
            if (cs->ef) er[i] = p - d;
            ref[i] += d;
        }
    }
    if (!cs->sum)
        for (size_t i = 0; i < n; i++) ref[i] /= (float)nranks_;
}

static void run_case(const case_t *cs, size_t n, int calls)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cs->config, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", cs->config, terse_last_error());
    if (s != TERSE_OK) return;
    int id = -1;
    EXPECT(terse_layer_add(c, "L", n, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    size_t m = n ? n : 1;
    float *buf = malloc(m * sizeof *buf), *ref = malloc(m * sizeof *ref);
    float *e = calloc(m * (size_t)nranks_, sizeof *e);
    unsigned char *keep = malloc(m);
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "'%s' n=%zu call %d: %s", cs->config, n, call, terse_last_error());
        reference(cs, n, call, e, ref, keep);
        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu is %.9g, reference %.9g",
               cs->config, n, call, bad, buf[bad], ref[bad]);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)), "'%s' n=%zu: ranks differ",
               cs->config, n);
        terse_stats_t st;
        terse_layer_stats(c, id, &st);
        EXPECT(n < 1024 || st.wire_bytes == 4 * k_of(cs->density, n),
               "'%s' n=%zu: wire %zu bytes, want the %zu values only", cs->config, n, st.wire_bytes,
               k_of(cs->density, n));
    }
    free(buf); free(ref); free(e); free(keep);
    terse_comm_destroy(c);
}

/* Save after two calls, run a third, load, run the third again: the same bits. */
static void run_resume(void)
{
    const char *cfg = "compressor=randk:density=0.05,seed=9; feedback=ef; min_size=0";
    char path[256];
    int root_pid = (int)getpid();
    MPI_Bcast(&root_pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    snprintf(path, sizeof path, "/tmp/terse_test_randk_%d", root_pid);
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    int id;
    const size_t n = 5000;
    EXPECT(terse_layer_add(c, "L", 50, 100, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (int call = 0; call < 2; call++) {
        for (size_t i = 0; i < n; i++) a[i] = ref_gradient(rank_, i, call);
        EXPECT(terse_allreduce(c, id, a) == TERSE_OK, "%s", terse_last_error());
    }
    EXPECT(terse_state_save(c, path) == TERSE_OK, "save: %s", terse_last_error());
    for (size_t i = 0; i < n; i++) a[i] = ref_gradient(rank_, i, 2);
    EXPECT(terse_allreduce(c, id, a) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_state_load(c, path) == TERSE_OK, "load: %s", terse_last_error());
    for (size_t i = 0; i < n; i++) b[i] = ref_gradient(rank_, i, 2);
    EXPECT(terse_allreduce(c, id, b) == TERSE_OK, "%s", terse_last_error());
    EXPECT(memcmp(a, b, n * sizeof *a) == 0, "the resumed call differs from the original");
    char file[300];
    snprintf(file, sizeof file, "%s.rank%d", path, rank_);
    unlink(file);
    free(a); free(b);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const case_t cases[] = {
        {"compressor=randk:density=0.1; min_size=0", 0.1, 0, 0, 0, 0},
        {"compressor=randk:density=0.1,seed=7; feedback=ef; min_size=0", 0.1, 7, 0, 1, 0},
        {"compressor=randk:density=0.02,unbiased=1; min_size=0", 0.02, 0, 1, 0, 0},
        {"compressor=randk:density=0.3,unbiased=1; feedback=ef; min_size=0; reduce=sum", 0.3, 0, 1, 1, 1},
    };
    static const size_t sizes[] = {0, 1, 7, 1009, 100003};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            run_case(&cases[ci], sizes[si], 3);
    run_resume();
    int rc = mpitest_finish("test_randk");
    MPI_Finalize();
    return rc;
}
