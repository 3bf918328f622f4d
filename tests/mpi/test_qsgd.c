/* qsgd under mpirun (1..4 ranks).
 *
 * Round to nearest (stochastic=0) against a serial reference of the dense protocol, bit for
 * bit: every rank rebuilds every rank's gradient, splits it into the protocol's chunks,
 * quantises each chunk (buckets from the chunk's start), the owner sums the decoded chunks
 * in rank order, divides by n for the mean and quantises its chunk again; with feedback=ef
 * each rank's error is p - (its decoded message). The quantiser here is written from the
 * formula in compressors/qsgd.c, not by calling it.
 *
 * Stochastic rounding (stochastic=1): identical bits on every rank; every element within
 * the worst-case bound of two roundings (derived at stochastic_bound below); the mean error
 * over the vector within 5 standard errors of 0 (unbiased end to end); and a run resumed
 * from a checkpoint saved after call 2 repeats call 3 bit for bit, while a fresh layer (call
 * counter 0) draws other numbers. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "protocol.h"
#include "reference.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

/* ---- Serial reference ------------------------------------------------------------------- */

/* Round-to-nearest qsgd of x[0..n) into dec, buckets of `bucket` from x[0]:
 * lo/hi the bucket's min and max; q = (x - lo) * (L / (hi - lo)) in double; level
 * floor(q + 0.5) at most L (0 if lo == hi); decoded min((float)(lo + level * step), hi). */
static void ref_quantize(const float *x, size_t n, int bits, size_t bucket, float *dec)
{
    const double L = (double)((1u << bits) - 1);
    for (size_t b0 = 0; b0 < n; b0 += bucket) {
        const size_t m = n - b0 < bucket ? n - b0 : bucket;
        float lo = x[b0], hi = x[b0];
        for (size_t j = b0 + 1; j < b0 + m; j++) {
            if (x[j] < lo) lo = x[j];
            if (x[j] > hi) hi = x[j];
        }
        const double r = (double)hi - (double)lo;
        for (size_t j = b0; j < b0 + m; j++) {
            double level = 0, step = 0;
            if (lo < hi) {
                /* q + 0.5 >= 0: truncation is the floor (MPI tests do not link libm) */
                level = (double)(uint64_t)(((double)x[j] - (double)lo) * (L / r) + 0.5);
                if (level > L) level = L;
                step = r / L;
            }
            const float v = (float)((double)lo + level * step);
            dec[j] = v > hi ? hi : v;
        }
    }
}

/* The same, chunk by chunk as the dense protocol encodes: chunk r of n ranks on its own. */
static void ref_quantize_chunks(const float *x, size_t n, int bits, size_t bucket, float *dec)
{
    for (int r = 0; r < nranks_; r++) {
        size_t b = protocol_chunk_begin(n, nranks_, r), e = protocol_chunk_begin(n, nranks_, r + 1);
        ref_quantize(x + b, e - b, bits, bucket, dec + b);
    }
}

/* ---- Round to nearest: bit for bit ------------------------------------------------------ */

typedef struct {
    int bits;
    size_t bucket;
    int ef, sum;
} case_t;

/* One layer of n elements on c (configured as cs says, under the text cfg). */
static void run_deterministic(const case_t *cs, terse_comm_t *c, const char *cfg, size_t n, int calls)
{
    int id = -1;
    terse_status_t s = terse_layer_add(c, "L", n, 1, NULL, &id);
    EXPECT(s == TERSE_OK, "layer_add %zu: %s", n, terse_last_error());
    const size_t m = n ? n : 1;
    float *buf = malloc(m * sizeof *buf), *ref = malloc(m * sizeof *ref), *p = malloc(m * sizeof *p);
    float *d = malloc(m * sizeof *d), *e = calloc(m * (size_t)nranks_, sizeof *e);
    float *owner_e = calloc(m, sizeof *owner_e), *cq = malloc(m * sizeof *cq);
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "'%s' n=%zu call %d: %s", cfg, n, call, terse_last_error());

        memset(ref, 0, m * sizeof *ref);
        for (int r = 0; r < nranks_; r++) {
            float *er = e + (size_t)r * m;
            for (size_t i = 0; i < n; i++) p[i] = ref_gradient(r, i, call) + (cs->ef ? er[i] : 0.0f);
            ref_quantize_chunks(p, n, cs->bits, cs->bucket, d);
            if (cs->ef)
                for (size_t i = 0; i < n; i++) er[i] = p[i] - d[i];
            for (size_t i = 0; i < n; i++) ref[i] += d[i];
        }
        if (!cs->sum)
            for (size_t i = 0; i < n; i++) ref[i] /= (float)nranks_;
        /* each owner re-quantises its chunk plus the error its last re-quantisation left,
         * and keeps the new error (dense_ef) */
        for (size_t i = 0; i < n; i++) cq[i] = ref[i] + owner_e[i];
        ref_quantize_chunks(cq, n, cs->bits, cs->bucket, ref);
        for (size_t i = 0; i < n; i++) owner_e[i] = cq[i] - ref[i];

        size_t bad = mpitest_first_diff(buf, ref, n);
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu is %.9g, reference %.9g", cfg, n, call, bad,
               bad < n ? buf[bad] : 0.0, bad < n ? ref[bad] : 0.0);
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)), "'%s' n=%zu call %d: ranks differ", cfg, n, call);
    }
    terse_stats_t st;
    EXPECT(terse_layer_stats(c, id, &st) == TERSE_OK && st.calls == (uint64_t)calls && !st.dense &&
               strncmp(st.codec, "qsgd", 4) == 0, "'%s' n=%zu: stats say %s, %llu calls", cfg, n, st.codec,
           (unsigned long long)st.calls);
    free(buf); free(ref); free(p); free(d); free(e); free(owner_e); free(cq);
}

/* ---- Stochastic rounding: agreement and error bounds ------------------------------------ */

/* Bound on |result - exact mean| for element i, and on its variance, with feedback=none.
 * Stochastic rounding moves a value to one of the two levels around it, so it errs by less
 * than one step, with variance at most step^2 / 4. Phase 1: rank r rounds g_r with its
 * bucket's step s_r = (hi_r - lo_r) / L; the mean of the decoded values errs by at most
 * S = (1/n) sum_r s_r. Phase 2: the owner's values are means of values in [lo_r, hi_r], so
 * its bucket spans at most (1/n) sum_r (hi_r - lo_r) and its step is at most S. Hence
 * |error| <= 2 S and var <= (1/n^2) sum_r s_r^2 / 4 + S^2 / 4. (reduce=sum: n times these.)
 * s_r comes from the bucket of element i in rank r's chunk, rebuilt here. */
static void stochastic_bounds(size_t n, int bits, size_t bucket, int call, double *bound, double *var)
{
    const double L = (double)((1u << bits) - 1);
    for (size_t i = 0; i < n; i++) bound[i] = var[i] = 0;
    double *sq = calloc(n ? n : 1, sizeof *sq);
    for (int r = 0; r < nranks_; r++)
        for (int ch = 0; ch < nranks_; ch++) {
            size_t b = protocol_chunk_begin(n, nranks_, ch), e = protocol_chunk_begin(n, nranks_, ch + 1);
            for (size_t b0 = b; b0 < e; b0 += bucket) {
                size_t b1 = e - b0 < bucket ? e : b0 + bucket;
                float lo = ref_gradient(r, b0, call), hi = lo;
                for (size_t j = b0; j < b1; j++) {
                    float v = ref_gradient(r, j, call);
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                const double s = ((double)hi - lo) / L;
                for (size_t j = b0; j < b1; j++) {
                    bound[j] += s / nranks_;            /* S */
                    sq[j] += s * s / 4 / ((double)nranks_ * nranks_);
                }
            }
        }
    for (size_t i = 0; i < n; i++) {
        var[i] = sq[i] + bound[i] * bound[i] / 4;
        bound[i] *= 2;
    }
    free(sq);
}

static void run_stochastic(int bits, size_t bucket, int ef, size_t n, int calls)
{
    char cfg[160];
    snprintf(cfg, sizeof cfg, "compressor=qsgd:bits=%d,bucket=%zu; feedback=%s; min_size=0", bits, bucket,
             ef ? "ef" : "none");
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c);
    EXPECT(s == TERSE_OK, "create '%s': %s", cfg, terse_last_error());
    if (s != TERSE_OK) return;
    int id = -1;
    EXPECT(terse_layer_add(c, "L", n, 1, NULL, &id) == TERSE_OK, "%s", terse_last_error());
    float *buf = malloc(n * sizeof *buf);
    double *bound = malloc(n * sizeof *bound), *var = malloc(n * sizeof *var);
    for (int call = 0; call < calls; call++) {
        for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
        s = terse_allreduce(c, id, buf);
        EXPECT(s == TERSE_OK, "'%s' n=%zu call %d: %s", cfg, n, call, terse_last_error());
        EXPECT(mpitest_same_on_all(mpitest_hash(buf, n * sizeof *buf)), "'%s' n=%zu call %d: ranks differ", cfg, n, call);
        /* the bounds below are for g on a fresh layer: error feedback makes p differ from g,
         * and from the second call on each owner adds the error its last re-quantisation
         * left (dense_ef), which the deterministic cases check bit for bit */
        if (ef || call > 0) continue;
        stochastic_bounds(n, bits, bucket, call, bound, var);
        double err_sum = 0, var_sum = 0;
        size_t bad = n;
        for (size_t i = 0; i < n; i++) {
            float exact = 0;
            for (int r = 0; r < nranks_; r++) exact += ref_gradient(r, i, call);
            exact /= (float)nranks_;
            const double err = (double)buf[i] - exact;
            /* float slack: the sums and the decoded values are floats near |x| <= 3 */
            if (bad == n && !(fabs(err) <= bound[i] + 1e-5)) bad = i;
            err_sum += err;
            var_sum += var[i];
        }
        EXPECT(bad == n, "'%s' n=%zu call %d: element %zu errs by %g, bound %g", cfg, n, call, bad,
               bad < n ? (double)buf[bad] : 0.0, bad < n ? bound[bad] : 0.0);
        /* unbiased: the mean error is within 5 standard errors (sqrt(var_sum) / n) of 0,
         * compared squared; 1e-7 of float slack */
        const double mean_err = fabs(err_sum / (double)n) - 1e-7;
        EXPECT(mean_err <= 0 || mean_err * mean_err <= 25 * var_sum / ((double)n * n),
               "'%s' n=%zu call %d: mean error %g, 25 SE^2 = %g", cfg, n, call, err_sum / (double)n,
               25 * var_sum / ((double)n * n));
    }
    free(buf); free(bound); free(var);
    terse_comm_destroy(c);
}

/* ---- Checkpoints: the call counter drives the stream ------------------------------------ */

static terse_comm_t *make(const char *cfg, int *id, size_t n)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "create: %s", terse_last_error());
    EXPECT(c && terse_layer_add(c, "w", n, 1, NULL, id) == TERSE_OK, "layer_add: %s", terse_last_error());
    return c;
}

static void call_with(terse_comm_t *c, int id, float *buf, size_t n, int call)
{
    for (size_t i = 0; i < n; i++) buf[i] = ref_gradient(rank_, i, call);
    EXPECT(terse_allreduce(c, id, buf) == TERSE_OK, "call %d: %s", call, terse_last_error());
}

static void run_resume(const char *dir, const char *fb)
{
    enum { N = 1009 };
    char cfg[128], path[160];
    snprintf(cfg, sizeof cfg, "compressor=qsgd:bits=4,bucket=64,stochastic=1; feedback=%s; min_size=0", fb);
    snprintf(path, sizeof path, "%s/qsgd-%s", dir, fb);
    static float a[N], b[N], f[N];
    int ia, ib, iff;
    terse_comm_t *ca = make(cfg, &ia, N);
    call_with(ca, ia, a, N, 0);
    call_with(ca, ia, a, N, 1);
    EXPECT(terse_state_save(ca, path) == TERSE_OK, "save: %s", terse_last_error());
    call_with(ca, ia, a, N, 2);

    terse_comm_t *cb = make(cfg, &ib, N);
    EXPECT(terse_state_load(cb, path) == TERSE_OK, "load: %s", terse_last_error());
    call_with(cb, ib, b, N, 2);
    EXPECT(memcmp(a, b, sizeof a) == 0, "feedback=%s: call 3 after a load differs from the uninterrupted run", fb);
    EXPECT(mpitest_same_on_all(mpitest_hash(b, sizeof b)), "ranks differ after a load");

    /* without the checkpoint (call counter 0, no error memory) the same gradient rounds
     * with other random numbers */
    terse_comm_t *cf = make(cfg, &iff, N);
    call_with(cf, iff, f, N, 2);
    EXPECT(memcmp(a, f, sizeof a) != 0, "feedback=%s: a fresh layer repeats the resumed call's bits", fb);

    terse_comm_destroy(cf);
    terse_comm_destroy(cb);
    terse_comm_destroy(ca);
    MPI_Barrier(MPI_COMM_WORLD);
    mpitest_unlink_rank_file(path);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);

    static const size_t sizes[] = {0, 1, 7, 1009, 100003};
    static const int bitss[] = {2, 4, 8};
    static const size_t buckets[] = {512, 7};
    for (size_t bi = 0; bi < 3; bi++)
        for (size_t ki = 0; ki < 2; ki++)
            for (int mode = 0; mode < 4; mode++) {
                const case_t cs = {bitss[bi], buckets[ki], mode & 1, mode >> 1};
                char cfg[160];
                snprintf(cfg, sizeof cfg, "compressor=qsgd:bits=%d,bucket=%zu,stochastic=0; feedback=%s; "
                         "min_size=0; reduce=%s", cs.bits, cs.bucket, cs.ef ? "ef" : "none", cs.sum ? "sum" : "mean");
                terse_comm_t *c = NULL;
                terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c);
                EXPECT(s == TERSE_OK, "create '%s': %s", cfg, terse_last_error());
                if (s != TERSE_OK) continue;
                for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) run_deterministic(&cs, c, cfg, sizes[si], 3);
                terse_comm_destroy(c);
            }

    for (size_t bi = 0; bi < 3; bi++)
        for (int ef = 0; ef <= 1; ef++) {
            run_stochastic(bitss[bi], 512, ef, 100003, 3);
            run_stochastic(bitss[bi], 7, ef, 1009, 3);
        }

    char dir[64];
    mpitest_tmpdir("qsgd", dir);
    EXPECT(dir[0] != '\0', "mkdtemp failed");
    if (dir[0]) {
        run_resume(dir, "none");
        run_resume(dir, "ef");
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank_ == 0) rmdir(dir);
    }

    int rc = mpitest_finish("test_qsgd");
    MPI_Finalize();
    return rc;
}
