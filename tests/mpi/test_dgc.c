/* compressor=dgc under mpirun (1..4 ranks) against a serial reference written from
 * ALGORITHMS.md §6.2 alone: every rank rebuilds every rank's gradients, runs each rank's
 * clipping, momentum correction, sampled-threshold selection (sorts, not selection) and
 * factor masking, sums the sparse messages in rank order, and compares its terse result
 * bit for bit; dense (1-D) layers get the exact mean and momentum after it. The sampling
 * start is the one documented: rng_below(protocol_stream_key(0, layer/call, rank, 0), 0,
 * stride). Also: identical bits on all ranks, the warm-up through terse_step_end, a resume
 * from terse_state_save equal to the uninterrupted run, and feedback=ef refused. */
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

/* The layers: a 64x50 matrix and a 3x3 one (below min_size, still sparsified) and a 1-D
 * bias of 100 (dense, momentum after the mean). */
#define N_LAYERS 3
static const size_t shape_rows[N_LAYERS] = {64, 100, 3};
static const size_t shape_cols[N_LAYERS] = {50, 1, 3};
#define CALLS 5

typedef struct {
    const char *config;
    double density, momentum, clip; /* clip: NAN for off */
    int nesterov, warmup;
} case_t;

/* ---- The reference ---------------------------------------------------------------------- */

static double ref_density(const case_t *cs, int e)
{
    if (e >= cs->warmup) return cs->density;
    double r = 1.0; /* the paper's 4^-(e+1) */
    for (int i = 0; i <= e; i++) r *= 0.25;
    return r > cs->density ? r : cs->density;
}

static const float *cmp_v;
static int by_mag_then_index(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    float x = fabsf(cmp_v[i]), y = fabsf(cmp_v[j]);
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j;
}
static int by_index(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return i < j ? -1 : i > j;
}
static int by_float_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* §6.2 sparsify of v at density r (the exact top-k where every entry is a sample): the
 * selected indices, increasing, into idx (n entries); returns how many. */
static size_t ref_select(const float *v, size_t n, double r, uint64_t key, size_t *idx)
{
    const double sample_ratio = 0.01;
    size_t stride = 1, ns = n;
    size_t pct = (size_t)ceil((double)n * sample_ratio), cpr = (size_t)ceil(2.0 / r);
    if (n > cpr) {
        size_t mx = pct > cpr ? pct : cpr;
        stride = (size_t)ceil((double)n / (double)mx / 32.0) * 32 + 1;
        for (ns = n / stride; ns < mx; ns = n / stride) stride -= 8;
    }
    const size_t tks = (size_t)ceil((double)ns * r), k = (size_t)ceil((double)n * r);
    cmp_v = v;
    if (ns == n) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        qsort(idx, n, sizeof *idx, by_mag_then_index);
        size_t kept = k < n ? k : n;
        qsort(idx, kept, sizeof *idx, by_index);
        return kept;
    }
    size_t start = (size_t)rng_below(key, 0, stride), m = 0;
    float *smp = malloc((n / stride + 2) * sizeof *smp);
    for (size_t i = start; i < n; i += stride) smp[m++] = fabsf(v[i]);
    qsort(smp, m, sizeof *smp, by_float_desc);
    float thr = smp[tks - 1];
    free(smp);
    int hier = 0;
    m = 0;
    for (size_t i = 0; i < n; i++) m += fabsf(v[i]) >= thr;
    for (int it = 0; it < 10; it++) {
        if (m > k) {
            hier = m > k * 1.3;
            break;
        } else if (m < 0.8 * k) {
            thr = thr * 0.8f;
        } else {
            break;
        }
        m = 0;
        for (size_t i = 0; i < n; i++) m += fabsf(v[i]) >= thr;
    }
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(v[i]) >= thr) idx[c++] = i;
    if (!hier) return c < k ? c : k;
    qsort(idx, c, sizeof *idx, by_mag_then_index);
    qsort(idx, k, sizeof *idx, by_index);
    return k;
}

typedef struct {
    float *u, *v;   /* per rank: nranks * count each (sparsified layers) */
    float *mmt;     /* count (dense layers: the same on every rank)      */
} ref_layer_t;

static void ref_layer_init(ref_layer_t *L, size_t count)
{
    L->u = calloc(count * (size_t)nranks_ + 1, sizeof(float));
    L->v = calloc(count * (size_t)nranks_ + 1, sizeof(float));
    L->mmt = calloc(count + 1, sizeof(float));
}

static void ref_layer_free(ref_layer_t *L)
{
    free(L->u);
    free(L->v);
    free(L->mmt);
}

static float layer_gradient(int rank, int layer, size_t i, int call)
{
    return ref_gradient(rank, i, call * N_LAYERS + layer);
}

/* One call of one layer (its `call`-th, at step `step`), every rank's part, into out. */
static void ref_call(const case_t *cs, int layer, ref_layer_t *L, int call, int step, float *out)
{
    const size_t rows = shape_rows[layer], cols = shape_cols[layer], n = rows * cols;
    const float m = (float)cs->momentum;
    float *g = malloc(n * sizeof *g);
    memset(out, 0, n * sizeof *out);
    if (rows > 1 && cols > 1 && cs->density < 1) {
        size_t *idx = malloc(n * sizeof *idx);
        for (int r = 0; r < nranks_; r++) {
            float *u = L->u + (size_t)r * n, *v = L->v + (size_t)r * n;
            for (size_t i = 0; i < n; i++) g[i] = layer_gradient(r, layer, i, call);
            if (!isnan(cs->clip)) {
                double ss = 0;
                for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
                double norm = sqrt(ss), bound = cs->clip / sqrt((double)nranks_);
                if (norm > bound)
                    for (size_t i = 0; i < n; i++) g[i] *= (float)(bound / norm);
            }
            for (size_t i = 0; i < n; i++) {
                if (cs->nesterov) {
                    u[i] = (u[i] + g[i]) * m;
                    v[i] = v[i] + u[i] + g[i];
                } else {
                    u[i] = m * u[i] + g[i];
                    v[i] = v[i] + u[i];
                }
            }
            proto_call_t key_of;
            memset(&key_of, 0, sizeof key_of);
            key_of.layer = layer;
            key_of.calls = (uint64_t)call;
            size_t k = ref_select(v, n, ref_density(cs, step), protocol_stream_key(0, &key_of, r, 0), idx);
            for (size_t j = 0; j < k; j++) {
                out[idx[j]] += v[idx[j]];
                u[idx[j]] = 0.0f;
                v[idx[j]] = 0.0f;
            }
        }
        free(idx);
        for (size_t i = 0; i < n; i++) out[i] /= (float)nranks_;
    } else {
        for (int r = 0; r < nranks_; r++)
            for (size_t i = 0; i < n; i++) out[i] += layer_gradient(r, layer, i, call);
        for (size_t i = 0; i < n; i++) {
            const float gbar = out[i] / (float)nranks_;
            if (cs->nesterov) {
                L->mmt[i] = (L->mmt[i] + gbar) * m;
                out[i] = L->mmt[i] + gbar;
            } else {
                L->mmt[i] = m * L->mmt[i] + gbar;
                out[i] = L->mmt[i];
            }
        }
    }
    free(g);
}

/* ---- The runs --------------------------------------------------------------------------- */

static terse_comm_t *make(const case_t *cs, int *ids)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cs->config, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", cs->config, terse_last_error());
    if (s != TERSE_OK) return NULL;
    static const char *names[N_LAYERS] = {"w", "b", "t"};
    for (int l = 0; l < N_LAYERS; l++) {
        s = terse_layer_add(c, names[l], shape_rows[l], shape_cols[l], NULL, &ids[l]);
        EXPECT(s == TERSE_OK && ids[l] == l, "layer_add %s: %s", names[l], terse_last_error());
    }
    return c;
}

/* Calls [from, to) of every layer, terse_step_end after each; the results of the last one
 * into bufs. */
static void run_calls(terse_comm_t *c, const int *ids, int from, int to, float **bufs)
{
    for (int call = from; call < to; call++) {
        for (int l = 0; l < N_LAYERS; l++)
            for (size_t i = 0; i < shape_rows[l] * shape_cols[l]; i++)
                bufs[l][i] = layer_gradient(rank_, l, i, call);
        EXPECT(terse_allreduce_many(c, N_LAYERS, ids, bufs) == TERSE_OK, "call %d: %s", call,
               terse_last_error());
        EXPECT(terse_step_end(c) == TERSE_OK, "step_end");
    }
}

static void run_case(const case_t *cs, const char *ckpt)
{
    int ids[N_LAYERS];
    terse_comm_t *c = make(cs, ids);
    if (!c) return;
    float *buf[N_LAYERS], *ref[N_LAYERS], *saved[N_LAYERS];
    ref_layer_t L[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t n = shape_rows[l] * shape_cols[l];
        buf[l] = malloc(n * sizeof(float));
        ref[l] = malloc(n * sizeof(float));
        saved[l] = malloc(n * sizeof(float));
        ref_layer_init(&L[l], n);
    }
    for (int call = 0; call < CALLS; call++) {
        if (call == 3)
            EXPECT(terse_state_save(c, ckpt) == TERSE_OK, "save: %s", terse_last_error());
        run_calls(c, ids, call, call + 1, buf);
        for (int l = 0; l < N_LAYERS; l++) {
            size_t n = shape_rows[l] * shape_cols[l];
            ref_call(cs, l, &L[l], call, call, ref[l]);
            size_t bad = mpitest_first_diff(buf[l], ref[l], n);
            EXPECT(bad == n, "'%s' layer %d call %d: element %zu is %.9g, reference %.9g", cs->config, l,
                   call, bad, bad < n ? buf[l][bad] : 0.0, bad < n ? ref[l][bad] : 0.0);
            EXPECT(mpitest_same_on_all(mpitest_hash(buf[l], n * sizeof(float))),
                   "'%s' layer %d call %d: ranks hold different bits", cs->config, l, call);
            terse_stats_t st;
            terse_layer_stats(c, ids[l], &st);
            size_t k = (size_t)ceil((double)n * ref_density(cs, call));
            if (l == 1)
                EXPECT(st.wire_bytes == 4 * n, "dense layer sends %zu bytes, got %zu", 4 * n, st.wire_bytes);
            else
                EXPECT(st.wire_bytes >= 4 && st.wire_bytes <= 4 + 8 * k && (st.wire_bytes - 4) % 8 == 0,
                       "layer %d call %d: %zu bytes for k <= %zu", l, call, st.wire_bytes, k);
            if (call == 3) memcpy(saved[l], buf[l], n * sizeof(float));
        }
    }
    /* resume from the checkpoint taken before call 3: call 3 again, the same bits */
    int ids2[N_LAYERS];
    terse_comm_t *r = make(cs, ids2);
    if (r) {
        EXPECT(terse_state_load(r, ckpt) == TERSE_OK, "load: %s", terse_last_error());
        run_calls(r, ids2, 3, 4, buf);
        for (int l = 0; l < N_LAYERS; l++)
            EXPECT(memcmp(buf[l], saved[l], shape_rows[l] * shape_cols[l] * sizeof(float)) == 0,
                   "'%s' layer %d: the resumed call 3 differs from the uninterrupted one", cs->config, l);
        terse_comm_destroy(r);
    }
    for (int l = 0; l < N_LAYERS; l++) {
        free(buf[l]);
        free(ref[l]);
        free(saved[l]);
        ref_layer_free(&L[l]);
    }
    terse_comm_destroy(c);
}

static void rejects_feedback(void)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=dgc:density=0.05; feedback=ef", &c);
    EXPECT(s == TERSE_OK, "create: %s", terse_last_error());
    if (s != TERSE_OK) return;
    int id = -1;
    s = terse_layer_add(c, "w", 64, 50, NULL, &id);
    EXPECT(s == TERSE_ERR_ARG && strstr(terse_last_error(), "feedback=none") != NULL,
           "dgc with feedback=ef: status %d, '%s'", (int)s, terse_last_error());
    s = terse_layer_add(c, "w", 64, 50, "feedback=none", &id);
    EXPECT(s == TERSE_OK, "dgc with a per-layer feedback=none: %s", terse_last_error());
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    char dir[64], path[128];
    mpitest_ckpt_dir("dgc", dir, path);

    static const case_t cases[] = {
        {"compressor=dgc:density=0.05,momentum=0.9,warmup=3", 0.05, 0.9, NAN, 0, 3},
        {"compressor=dgc:density=0.05,momentum=0.9,nesterov=1,warmup=3", 0.05, 0.9, NAN, 1, 3},
        {"compressor=dgc:density=0.05,momentum=0.9,clip=20,warmup=3", 0.05, 0.9, 20, 0, 3},
        {"compressor=dgc:density=0.05,momentum=0.9,nesterov=1,clip=20,warmup=3", 0.05, 0.9, 20, 1, 3},
        {"compressor=dgc:density=0.01,momentum=0.5,warmup=4,schedule=paper; reduce=mean", 0.01, 0.5,
         NAN, 0, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], path);
    rejects_feedback();

    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("test_dgc");
    MPI_Finalize();
    return rc;
}
