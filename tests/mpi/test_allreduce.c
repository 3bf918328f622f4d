/* terse_allreduce under mpirun (1..4 ranks) against a serial reference of the same
 * algorithm: every rank rebuilds every rank's gradient (they are deterministic), runs the
 * codec, feedback and aggregation serially, in rank order, and compares its terse result
 * bit for bit. Also checks that all ranks hold identical bits. Sizes 0, 1, 7, a prime and
 * 1M; codecs none, fp16, bf16, topk; feedback none and ef; mean and sum; several calls so
 * that feedback state carries over. */
#include <math.h>
#include <stdlib.h>

#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;


typedef struct {
    const char *config;
    ref_codec_t codec;
    double density; /* topk */
    int ef, sum;
} case_t;

static size_t topk_k_ref(double density, size_t n)
{
    if (n == 0) return 0;
    size_t k = (size_t)(density * (double)n);
    if (k < 1) k = 1;
    return k < n ? k : n;
}

/* Runs `calls` allreduces of one layer and compares each with the serial reference. */
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
    float *e = calloc(m * (size_t)nranks_, sizeof *e), *p = malloc(m * sizeof *p);
    float *d = malloc(m * sizeof *d);
    size_t *order = malloc(m * sizeof *order);
    size_t k = cs->codec == REF_TOPK ? topk_k_ref(cs->density, n) : 0;
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "allreduce '%s' n=%zu call %d: %s", cs->config, n, call, terse_last_error());

        /* serial reference, in rank order */
        memset(ref, 0, m * sizeof *ref);
        for (int r = 0; r < nranks_; r++) {
            float *er = e + (size_t)r * m;
            for (size_t i = 0; i < n; i++) p[i] = ref_gradient(r, i, call) + (cs->ef ? er[i] : 0.0f);
            ref_compress(cs->codec, k, p, d, n, order);
            if (cs->ef)
                for (size_t i = 0; i < n; i++) er[i] = p[i] - d[i];
            for (size_t i = 0; i < n; i++) ref[i] += d[i];
        }
        if (!cs->sum)
            for (size_t i = 0; i < n; i++) ref[i] /= (float)nranks_;
        /* the dense casts round the owner's result to the wire type once more */
        if (cs->codec == REF_FP16 || cs->codec == REF_BF16) ref_compress(cs->codec, 0, ref, ref, n, order);

        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu is %.9g, reference %.9g", cs->config, n,
               call, bad, bad < n ? buf[bad] : 0.0, bad < n ? ref[bad] : 0.0);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)),
               "'%s' n=%zu call %d: ranks hold different bits", cs->config, n, call);
    }
    terse_stats_t st;
    s = terse_layer_stats(c, id, &st);
    EXPECT(s == TERSE_OK && st.calls == (uint64_t)calls && st.count == n, "stats: %s", terse_last_error());
    free(buf); free(ref); free(e); free(p); free(d); free(order);
    terse_comm_destroy(c);
}

/* Many layers of different codecs on one communicator, through terse_allreduce_many. */
static void run_many(void)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=3; feedback=ef; min_size=8", &c);
    EXPECT(s == TERSE_OK, "create: %s", terse_last_error());
    if (s != TERSE_OK) return;
    int ids[3];
    EXPECT(terse_layer_add(c, "small", 5, 1, NULL, &ids[0]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "big", 4, 8, NULL, &ids[1]) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "half", 16, 1, "compressor=fp16; feedback=none", &ids[2]) == TERSE_OK, "%s",
           terse_last_error());
    float a[5], b[32], h[16];
    float *bufs[3] = {a, b, h};
    for (int i = 0; i < 5; i++) a[i] = ref_gradient(rank_, (size_t)i, 7);
    for (int i = 0; i < 32; i++) b[i] = ref_gradient(rank_, (size_t)i, 8);
    for (int i = 0; i < 16; i++) h[i] = ref_gradient(rank_, (size_t)i, 9);
    EXPECT(terse_allreduce_many(c, 3, ids, bufs) == TERSE_OK, "%s", terse_last_error());
    terse_stats_t st;
    terse_layer_stats(c, ids[0], &st);
    EXPECT(st.dense == 1 && strcmp(st.codec, "none") == 0, "a 5-element layer under min_size=8 goes dense, got %s", st.codec);
    terse_layer_stats(c, ids[1], &st);
    EXPECT(st.dense == 0 && st.wire_bytes == 4 + 8 * 3, "topk:k=3 sends 28 bytes, got %zu", st.wire_bytes);
    terse_layer_stats(c, ids[2], &st);
    EXPECT(strcmp(st.codec, "fp16") == 0 && st.wire_bytes == 32, "per-layer fp16 override: %s %zu", st.codec, st.wire_bytes);
    /* the dense small layer is the exact mean */
    for (int i = 0; i < 5; i++) {
        float ref = 0;
        for (int r = 0; r < nranks_; r++) ref += ref_gradient(r, (size_t)i, 7);
        ref /= (float)nranks_;
        EXPECT(memcmp(&ref, &a[i], 4) == 0, "small layer element %d: %.9g vs %.9g", i, a[i], ref);
    }
    EXPECT(mpitest_same_on_all(mpitest_hash(b, sizeof b) ^ mpitest_hash(h, sizeof h)), "ranks differ");
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const case_t cases[] = {
        {"compressor=none; min_size=0", REF_NONE, 0, 0, 0},
        {"compressor=none; min_size=0; reduce=sum", REF_NONE, 0, 0, 1},
        {"compressor=fp16; min_size=0", REF_FP16, 0, 0, 0},
        {"compressor=bf16; min_size=0; feedback=ef", REF_BF16, 0, 1, 0},
        {"compressor=topk:density=0.1; min_size=0", REF_TOPK, 0.1, 0, 0},
        {"compressor=topk:density=0.1; feedback=ef; min_size=0", REF_TOPK, 0.1, 1, 0},
        {"compressor=topk:density=0.01; feedback=ef; min_size=0; reduce=sum", REF_TOPK, 0.01, 1, 1},
    };
    static const size_t sizes[] = {0, 1, 7, 1009, (size_t)1 << 20};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            run_case(&cases[ci], sizes[si], sizes[si] > 100000 ? 2 : 4);
    run_many();
    int rc = mpitest_finish("test_allreduce");
    MPI_Finalize();
    return rc;
}
