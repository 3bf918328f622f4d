/* The feedback methods ef21, ef21:weight=W (EF21-W, a different weight on every rank),
 * ef21sgdm and econtrol under mpirun (1..4 ranks), against a serial reference re-implemented
 * here from ALGORITHMS.md §4-§5: every rank rebuilds every rank's gradient (they are
 * deterministic), runs every rank's feedback and the codec serially, aggregates in rank order
 * as the protocols do, and compares its terse result bit for bit, call after call. Also checks
 * that all ranks hold identical bits, that the first call is sent uncompressed and the later
 * ones compressed, that a first call abandoned on a non-finite gradient changes nothing, and
 * that a run resumed from terse_state_save continues bit for bit, and that ranks which
 * disagree on whether a weight is given get TERSE_ERR_MISMATCH. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

typedef enum { M_EF21, M_EF21W, M_SGDM, M_ECONTROL } ref_method_t;

typedef struct {
    ref_codec_t codec;
    ref_method_t method;
    double eta;     /* ef21sgdm, econtrol */
    int sum;        /* reduce=sum */
} case_t;

static const char *method_name(ref_method_t m)
{
    static const char *const names[] = {"ef21", "ef21", "ef21sgdm", "econtrol"};
    return names[m];
}

/* Rank r's EF21-W weight: w_r = 2 (r + 1) / (n (n + 1)), which sum to 1 and differ. */
static double weight_of(int r) { return 2.0 * (r + 1) / ((double)nranks_ * (nranks_ + 1)); }

static void config_of(const case_t *cs, int r, char *buf, size_t len)
{
    char fb[96];
    if (cs->method == M_EF21W)
        snprintf(fb, sizeof fb, "ef21:weight=%.17g", weight_of(r));
    else if (cs->method == M_EF21)
        snprintf(fb, sizeof fb, "ef21");
    else
        snprintf(fb, sizeof fb, "%s:eta=%.17g", method_name(cs->method), cs->eta);
    snprintf(buf, len, "compressor=%s; feedback=%s; min_size=0; reduce=%s",
             cs->codec == REF_TOPK ? "topk:k=2" : "fp16", fb, cs->sum ? "sum" : "mean");
}

/* The serial reference: every rank's state, three arrays of m floats per rank (a, b) and the
 * aggregate copy (agg_state), in the same roles as the library's:
 *   ef21, ef21:weight  a = g_i              aggregate = g
 *   ef21sgdm           a = v_i, b = g_i     aggregate = g
 *   econtrol           a = e_i, b = h_i     aggregate = h */
typedef struct {
    float *a, *b, *aggst, *p, *delta, *agg;
    size_t *order;
} ref_t;

static void ref_call(const case_t *cs, ref_t *R, size_t n, size_t m, int call, float *est)
{
    const int N = nranks_;
    const float keep = (float)(1.0 - cs->eta), eta = (float)cs->eta;
    memset(R->agg, 0, m * sizeof(float));
    for (int r = 0; r < N; r++) {
        float *a = R->a + (size_t)r * m, *b = R->b + (size_t)r * m;
        float *delta = R->delta + (size_t)r * m;
        const float s = cs->method == M_EF21W ? (float)(N * weight_of(r)) : 1.0f;
        for (size_t i = 0; i < n; i++) {
            float g = ref_gradient(r, i, call);
            if (call == 0) {
                R->p[i] = g; /* the first call: the exact gradient */
                continue;
            }
            switch (cs->method) {
            case M_EF21: R->p[i] = g - a[i]; break;
            case M_EF21W: R->p[i] = g - s * a[i]; break;     /* s (grad / s - g_i) */
            case M_SGDM: R->p[i] = (eta == 1.0f ? g : keep * a[i] + eta * g) - b[i]; break;
            case M_ECONTROL: R->p[i] = eta == 0.0f ? g - b[i] : eta * a[i] + (g - b[i]); break;
            }
        }
        if (call == 0)
            memcpy(delta, R->p, n * sizeof(float)); /* sent with codec none */
        else
            ref_compress(cs->codec, 2, R->p, delta, n, R->order);
        for (size_t i = 0; i < n; i++) R->agg[i] += delta[i];
    }
    if (!cs->sum)
        for (size_t i = 0; i < n; i++) R->agg[i] /= (float)N;
    /* the dense cast rounds the owner's result to the wire type once more */
    if (call > 0 && cs->codec == REF_FP16) ref_compress(REF_FP16, 0, R->agg, R->agg, n, R->order);

    for (int r = 0; r < N; r++) {
        float *a = R->a + (size_t)r * m, *b = R->b + (size_t)r * m;
        const float *delta = R->delta + (size_t)r * m;
        const float s = cs->method == M_EF21W ? (float)(N * weight_of(r)) : 1.0f;
        for (size_t i = 0; i < n; i++) {
            float g = ref_gradient(r, i, call);
            if (call == 0) {
                switch (cs->method) {
                case M_EF21: a[i] = g; break;
                case M_EF21W: a[i] = g / s; break;          /* g_i^0 = grad / (n w_i) */
                case M_SGDM: a[i] = b[i] = g; break;
                case M_ECONTROL: a[i] = 0.0f; b[i] = g; break;
                }
                continue;
            }
            switch (cs->method) {
            case M_EF21: a[i] += delta[i]; break;
            case M_EF21W: a[i] += delta[i] / s; break;
            case M_SGDM:
                a[i] = eta == 1.0f ? g : keep * a[i] + eta * g;
                b[i] += delta[i];
                break;
            case M_ECONTROL:
                a[i] += (g - b[i]) - delta[i];
                b[i] += delta[i];
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        R->aggst[i] = call == 0 ? R->agg[i] : R->aggst[i] + R->agg[i];
        est[i] = R->aggst[i];
    }
}

/* Runs `calls` allreduces of one layer and compares each with the serial reference. With
 * `abandon`, rank 0 first offers a NaN: every rank must get TERSE_ERR_NONFINITE and the run
 * must then go on as if that call never happened. */
static void run_case(const case_t *cs, size_t n, int calls, int abandon)
{
    char config[256];
    config_of(cs, rank_, config, sizeof config);
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, config, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", config, terse_last_error());
    if (s != TERSE_OK) return;
    int id = -1;
    s = terse_layer_add(c, "L", n, 1, NULL, &id);
    EXPECT(s == TERSE_OK && id == 0, "layer_add '%s' %zu: %s", config, n, terse_last_error());
    if (s != TERSE_OK) {
        terse_comm_destroy(c);
        return;
    }
    size_t m = n ? n : 1;
    const size_t N = (size_t)nranks_;
    ref_t R;
    R.a = calloc(N * m, sizeof(float));
    R.b = calloc(N * m, sizeof(float));
    R.delta = calloc(N * m, sizeof(float));
    R.aggst = calloc(m, sizeof(float));
    R.p = calloc(m, sizeof(float));
    R.agg = calloc(m, sizeof(float));
    R.order = calloc(m, sizeof(size_t));
    float *buf = malloc(m * sizeof *buf), *ref = malloc(m * sizeof *ref);

    if (abandon && n > 0) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, 0);
        if (rank_ == 0) buf[n / 2] = NAN;
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_ERR_NONFINITE, "'%s' n=%zu: a NaN on rank 0 gives %d on every rank", config, n, s);
    }
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "allreduce '%s' n=%zu call %d: %s", config, n, call, terse_last_error());
        ref_call(cs, &R, n, m, call, ref);

        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu is %.9g, reference %.9g", config, n, call,
               bad, bad < n ? buf[bad] : 0.0, bad < n ? ref[bad] : 0.0);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)),
               "'%s' n=%zu call %d: ranks hold different bits", config, n, call);

        /* the first call goes dense and exact (fp32), the later ones through the codec */
        terse_stats_t st;
        terse_layer_stats(c, id, &st);
        size_t want = call == 0 ? 4 * n : cs->codec == REF_FP16 ? 2 * n : 4 + 8 * (n < 2 ? n : 2);
        EXPECT(st.wire_bytes == want, "'%s' n=%zu call %d: %zu wire bytes, want %zu", config, n, call,
               st.wire_bytes, want);
        EXPECT(strcmp(st.feedback, method_name(cs->method)) == 0, "stats name the feedback: %s", st.feedback);
    }
    free(R.a); free(R.b); free(R.delta); free(R.aggst); free(R.p); free(R.agg); free(R.order);
    free(buf); free(ref);
    terse_comm_destroy(c);
}

/* A run saved after `at` calls and resumed in a new communicator equals the uninterrupted
 * run bit for bit: the state file carries every state array and the call counter, so a
 * resumed EF21 does not send its first call again. */
static void resume_equals_the_uninterrupted_run(const case_t *cs, const char *path, int at)
{
    enum { N = 1009, CALLS = 5 };
    char config[256];
    config_of(cs, rank_, config, sizeof config);
    static float whole[N], resumed[N];
    float *outs[2] = {whole, resumed};
    terse_comm_t *c = NULL;
    int id = -1;
    for (int run = 0; run < 2; run++) {
        EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, config, &c) == TERSE_OK, "%s", terse_last_error());
        EXPECT(terse_layer_add(c, "L", N, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
        for (int call = 0; call < CALLS; call++) {
            if (run == 1 && call == at) {
                EXPECT(terse_state_save(c, path) == TERSE_OK, "save: %s", terse_last_error());
                terse_comm_destroy(c);
                EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, config, &c) == TERSE_OK, "%s", terse_last_error());
                EXPECT(terse_layer_add(c, "L", N, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
                EXPECT(terse_state_load(c, path) == TERSE_OK, "load: %s", terse_last_error());
            }
            for (size_t i = 0; i < N; i++) outs[run][i] = ref_gradient(rank_, i, call);
            EXPECT(terse_allreduce(c, id, outs[run]) == TERSE_OK, "%s", terse_last_error());
        }
        terse_comm_destroy(c);
    }
    EXPECT(memcmp(whole, resumed, sizeof whole) == 0,
           "'%s': the run resumed after call %d equals the uninterrupted one", config, at);
    mpitest_unlink_rank_file(path);
}

/* EF21-W weights are each rank's own, but ranks must agree on whether one is given: rank 0
 * without, the others with, is a mismatch on every rank (with one rank there is no other). */
static void weight_presence_must_agree(void)
{
    if (nranks_ < 2) return;
    terse_comm_t *c = NULL;
    const char *cfg = rank_ == 0 ? "compressor=topk:k=2; feedback=ef21; min_size=0"
                                 : "compressor=topk:k=2; feedback=ef21:weight=0.5; min_size=0";
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    if (!c) return;
    int id = -1;
    EXPECT(terse_layer_add(c, "L", 8, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    terse_status_t s = terse_allreduce(c, id, x);
    EXPECT(s == TERSE_ERR_MISMATCH, "ef21 on rank 0, ef21:weight elsewhere: status %d", s);
    terse_comm_destroy(c);
}

/* A weight that cannot scale a float message is refused when the layer is added. */
static void absurd_weight_is_refused(void)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "compressor=topk:k=2; feedback=ef21:weight=1e-45; min_size=0",
                                 &c) == TERSE_OK, "%s", terse_last_error());
    if (!c) return;
    int id = 7;
    terse_status_t s = terse_layer_add(c, "L", 8, 1, NULL, &id);
    EXPECT(s == TERSE_ERR_ARG && id == 7 && strstr(terse_last_error(), "weight") != NULL,
           "weight=1e-45: status %d, %s", s, terse_last_error());
    /* a dense layer has no feedback, so the weight does not matter there */
    EXPECT(terse_layer_add(c, "small", 8, 1, "compressor=none", &id) == TERSE_OK, "%s", terse_last_error());
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    static const case_t cases[] = {
        {REF_TOPK, M_EF21, 0, 0},
        {REF_TOPK, M_EF21W, 0, 0},
        {REF_TOPK, M_SGDM, 0.1, 0},
        {REF_TOPK, M_SGDM, 1.0, 0},
        {REF_TOPK, M_ECONTROL, 0.2, 0},
        {REF_TOPK, M_ECONTROL, 0.0, 0},
        {REF_FP16, M_EF21, 0, 0},
        {REF_FP16, M_ECONTROL, 0.1, 0},
        {REF_FP16, M_EF21W, 0, 0},
        {REF_TOPK, M_EF21, 0, 1},
        {REF_TOPK, M_EF21W, 0, 1},
        {REF_TOPK, M_ECONTROL, 0.2, 1},
        {REF_FP16, M_SGDM, 0.3, 1},
    };
    static const size_t sizes[] = {0, 1, 7, 1009, 30011};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
            run_case(&cases[ci], sizes[si], sizes[si] > 10000 ? 3 : 6, si == 2);
    char dir[64], path[128];
    mpitest_ckpt_dir("feedback", dir, path);
    for (size_t ci = 0; ci < 6; ci++) {
        resume_equals_the_uninterrupted_run(&cases[ci], path, 1);
        resume_equals_the_uninterrupted_run(&cases[ci], path, 3);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank_ == 0) rmdir(dir);
    weight_presence_must_agree();
    absurd_weight_is_refused();
    int rc = mpitest_finish("test_feedback");
    MPI_Finalize();
    return rc;
}
