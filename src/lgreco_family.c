/* What L-GreCo can adapt, per codec family: one parameter, its candidate values, their
 * exact wire bytes and their compression errors (ALGORITHMS.md §9.2, "Generalisation").
 *
 *   family    parameter      candidates                                   error on A
 *   topk      density or k   7-point geometric grid lo*d0 .. d0 .. hi*d0   ||A - TopK_k(A)||
 *   dgc       density        the same grid, below 1                       ||A - TopK_k(A)||
 *   randk     density        the same grid                                E||A - RandK_k(A)||
 *   qsgd      bits           integers floor(lo*b0) .. ceil(hi*b0) in 1..8  E||A - Q_b(A)||
 *   powersgd  rank           integers max(1, floor(lo*r0)) .. ceil(hi*r0)  rank-r truncation
 *
 * The sparse errors come from one selection: with the k_max largest magnitudes sorted,
 * ||A - TopK_k(A)||^2 = ||A||^2 - (sum of the k largest squares) for every k at once. DGC
 * selects by a sampled threshold, so its true error is close to, not equal to, TopK's.
 * RandK's error is its expectation: (1 - k/n) ||A||^2, or (n/k - 1) ||A||^2 unbiased; QSGD's
 * too, from each bucket's range (see qsgd_errors).
 * PowerSGD's: block power iteration with the largest candidate rank R gives an orthonormal
 * P (rows x R) and Q = A^T P (or, for a tall layer, an orthonormal Q and P = A Q); the
 * squared singular values s_1 >= s_2 >= ... of Q (of P) give the error of the best rank-r
 * approximation inside that subspace, sqrt(||A||^2 - s_1 - .. - s_r). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dgc.h"
#include "error.h"
#include "internal.h"
#include "lgreco.h"
#include "powersgd.h"
#include "qsgd.h"
#include "randk.h"
#include "topk.h"

typedef enum { GRID_GEOMETRIC, GRID_INTEGER } grid_t;

struct lgreco_family {
    const char *codec;
    grid_t grid;
    double min, max;   /* the values the parameter may take                               */
    int min_open;      /* 1: min itself is excluded                                       */
    int round;         /* 1: geometric values are rounded to integers (topk's k)          */
    /* The parameter adapted for codec parameters p (topk: k if given, else density). */
    int (*param)(const double *p);
    /* The exact bytes of one message with parameters p on a rows x cols layer. */
    double (*wire)(const codec_ops_t *codec, const double *p, size_t rows, size_t cols);
    /* Whether a layer of rows x cols with parameters p has the parameter at all (dgc sends
     * 1-D layers dense with momentum); NULL: always. */
    int (*applies)(const double *p, size_t rows, size_t cols);
    /* The bytes of scratch `errors` needs for the candidate parameter vectors prm[c]; NULL:
     * none. */
    size_t (*work)(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols);
    /* errors[c] for the candidate parameter vectors prm[c], on A whose ||A||^2 is total
     * (finite), with `work` bytes of scratch. */
    void (*errors)(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                   size_t cols, const float *A, double total, void *work, double *errors);
};

/* ---- shared pieces ----------------------------------------------------------------------- */

/* ||A||^2 in double, as 4 running sums (element i adds to sum i mod 4) that vectorise. */
static double sum_squares(const float *A, size_t n)
{
    double lane[4] = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) lane[k] += (double)A[i + k] * (double)A[i + k];
    double s = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    for (; i < n; i++) s += (double)A[i] * (double)A[i];
    return s;
}

/* Sorts n non-negative finite floats' bit patterns (which order as the floats do) into
 * decreasing order: three passes of an 11-bit radix sort through tmp, stable, O(n). */
static void sort_bits_desc(uint32_t *key, uint32_t *tmp, size_t n)
{
    for (int shift = 0; shift < 33; shift += 11) {
        size_t at[2049] = {0};
        for (size_t i = 0; i < n; i++) at[1 + (2047 - ((key[i] >> shift) & 2047))]++;
        for (size_t d = 1; d < 2049; d++) at[d] += at[d - 1];
        for (size_t i = 0; i < n; i++) tmp[at[2047 - ((key[i] >> shift) & 2047)]++] = key[i];
        memcpy(key, tmp, n * sizeof *key);
    }
}

static int desc_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Scratch is carved from one block (lgreco_work_bytes) in pieces rounded to 64 bytes:
 * `at` walks it, and the *_work functions add up the same rounded pieces. */
#define WORK_ALIGN 64
static size_t work_round(size_t bytes) { return (bytes + WORK_ALIGN - 1) / WORK_ALIGN * WORK_ALIGN; }
static void *work_take(unsigned char **at, size_t bytes)
{
    void *p = *at;
    *at += work_round(bytes);
    return p;
}

static double codec_wire(const codec_ops_t *codec, const double *p, size_t rows, size_t cols)
{
    return (double)codec->max_bytes(p, rows * cols);
}

static size_t max_k(const size_t *ks, size_t n)
{
    size_t kmax = 0;
    for (size_t c = 0; c < n; c++) kmax = ks[c] > kmax ? ks[c] : kmax;
    return kmax;
}

/* The scratch of sparse_errors for up to kmax selected entries. */
static size_t sparse_work(size_t kmax)
{
    return 3 * work_round((kmax ? kmax : 1) * sizeof(uint32_t)) + work_round((kmax + 1) * sizeof(double));
}

/* ||A - TopK_k(A)|| for k = ks[c], from one selection of the k_max largest. */
static void sparse_errors(const size_t *ks, size_t n, const float *A, size_t count, double total,
                          void *work, double *errors)
{
    const size_t kmax = max_k(ks, n), slots = kmax ? kmax : 1;
    unsigned char *at = work;
    uint32_t *idx = work_take(&at, slots * sizeof *idx), *tmp = work_take(&at, slots * sizeof *tmp);
    float *val = work_take(&at, slots * sizeof *val);
    double *sq = work_take(&at, (kmax + 1) * sizeof *sq);
    const size_t got = topk_select(A, count, kmax, idx, val);
    /* the selected magnitudes, largest first: their bits in idx (free once the values are
     * known), sorted through tmp */
    for (size_t i = 0; i < got; i++) {
        memcpy(&idx[i], &val[i], sizeof idx[i]);
        idx[i] &= 0x7fffffffu;
    }
    sort_bits_desc(idx, tmp, got);
    for (size_t i = 0; i < got; i++) {
        float v;
        memcpy(&v, &idx[i], sizeof v);
        sq[i] = (double)v * (double)v;
    }
    /* prefix sums in place, shifted: sq[k] = the sum of the k largest squares */
    double run = 0.0;
    for (size_t i = 0; i < got; i++) {
        double v = sq[i];
        sq[i] = run;
        run += v;
    }
    sq[got] = run;
    for (size_t c = 0; c < n; c++) {
        size_t k = ks[c] < got ? ks[c] : got;
        double rest = total - sq[k];
        errors[c] = sqrt(rest > 0.0 ? rest : 0.0);
    }
}

/* ---- topk -------------------------------------------------------------------------------- */

enum { TOPK_DENSITY, TOPK_K };

static int topk_param(const double *p) { return isnan(p[TOPK_K]) ? TOPK_DENSITY : TOPK_K; }

/* The k of each candidate, into ks (LGRECO_MAX_CANDIDATES entries). */
typedef void (*ks_fn)(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t count, size_t *ks);

/* sparse_work and sparse_errors for the candidates' k as ks_of gives them. */
static size_t ks_work(ks_fn ks_of, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols)
{
    size_t ks[LGRECO_MAX_CANDIDATES] = {0};
    ks_of(prm, n, rows * cols, ks);
    return sparse_work(max_k(ks, n));
}

static void ks_errors(ks_fn ks_of, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols,
                      const float *A, double total, void *work, double *errors)
{
    size_t ks[LGRECO_MAX_CANDIDATES] = {0};
    ks_of(prm, n, rows * cols, ks);
    sparse_errors(ks, n, A, rows * cols, total, work, errors);
}

static void topk_ks(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t count, size_t *ks)
{
    for (size_t c = 0; c < n; c++) ks[c] = topk_k(prm[c], count);
}

static size_t topk_work(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols)
{
    return ks_work(topk_ks, prm, n, rows, cols);
}

static void topk_errors(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                        size_t cols, const float *A, double total, void *work, double *errors)
{
    (void)codec;
    ks_errors(topk_ks, prm, n, rows, cols, A, total, work, errors);
}

/* ---- dgc --------------------------------------------------------------------------------- */

static int dgc_param(const double *p) { (void)p; return DGC_DENSITY; }

/* The final density's message (warm-up densities are transient): uint32 k | idx | val. */
static double dgc_wire(const codec_ops_t *codec, const double *p, size_t rows, size_t cols)
{
    (void)codec;
    return 4.0 + 8.0 * (double)dgc_plan(rows * cols, p[DGC_DENSITY], p[DGC_SAMPLE]).num_selects;
}

static void dgc_ks(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t count, size_t *ks)
{
    for (size_t c = 0; c < n; c++) ks[c] = dgc_plan(count, prm[c][DGC_DENSITY], prm[c][DGC_SAMPLE]).num_selects;
}

static size_t dgc_work(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols)
{
    return ks_work(dgc_ks, prm, n, rows, cols);
}

static void dgc_errors(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                       size_t cols, const float *A, double total, void *work, double *errors)
{
    (void)codec;
    ks_errors(dgc_ks, prm, n, rows, cols, A, total, work, errors);
    /* a density of 1 would turn the layer into DGC's dense path, with another state */
    for (size_t c = 0; c < n; c++)
        if (!dgc_sparsifies(prm[c], rows, cols)) errors[c] = INFINITY;
}

/* ---- randk ------------------------------------------------------------------------------- */

static int randk_param(const double *p) { (void)p; return RANDK_DENSITY; }

/* Only the values travel (the indices come from the shared stream). */
static double randk_wire(const codec_ops_t *codec, const double *p, size_t rows, size_t cols)
{
    (void)codec;
    return 4.0 * (double)randk_k(p, rows * cols);
}

static void randk_errors(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                         size_t cols, const float *A, double total, void *work, double *errors)
{
    (void)codec, (void)A, (void)work;
    const size_t count = rows * cols;
    for (size_t c = 0; c < n; c++) {
        const double f = (double)randk_k(prm[c], count) / (double)count;
        const double scale = prm[c][RANDK_UNBIASED] != 0.0 ? 1.0 / f - 1.0 : 1.0 - f;
        errors[c] = sqrt(scale * total);
    }
}

/* ---- qsgd -------------------------------------------------------------------------------- */

static int qsgd_param(const double *p) { (void)p; return QSGD_BITS; }

/* One bucket's expected error, in units of the step: with an element at fractional position
 * f between two levels, stochastic rounding errs by f (1 - f) steps squared in expectation
 * and rounding to nearest by min(f, 1 - f)^2. In float, as 8 running sums (element j adds
 * to sum j mod 8) that the compiler keeps in vector registers; an estimate, so float's
 * 24 bits are plenty (q < 256: f to 2^-16). q >= 0 (x >= lo), so truncation is floor.
 * h, a power of two, brings the range near 1 (scale counts it), so that neither h x - h lo
 * nor the scale overflows a float at either end of its exponents. */
static double qsgd_bucket_error(const float *x, size_t m, float lo, float h, float scale, int stochastic)
{
    lo *= h;
    float lane[8] = {0};
    size_t j = 0;
    if (stochastic)
        for (; j + 8 <= m; j += 8)
            for (int k = 0; k < 8; k++) {
                const float q = (h * x[j + k] - lo) * scale, f = q - (float)(int32_t)q;
                lane[k] += f * (1.0f - f);
            }
    else
        for (; j + 8 <= m; j += 8)
            for (int k = 0; k < 8; k++) {
                const float q = (h * x[j + k] - lo) * scale, f = q - (float)(int32_t)q, g = 1.0f - f;
                const float t = f < g ? f : g;
                lane[k] += t * t;
            }
    double e = 0.0;
    for (; j < m; j++) {
        const float q = (h * x[j] - lo) * scale, f = q - (float)(int32_t)q, g = 1.0f - f;
        const float t = f < g ? f : g;
        e += stochastic ? f * g : t * t;
    }
    for (int k = 0; k < 8; k++) e += lane[k];
    return e;
}

/* The expected error, from each bucket's range: step s = (hi - lo) / (2^bits - 1), and the
 * bucket errs by s^2 times qsgd_bucket_error. One pass per bucket and candidate, the bucket
 * in cache (the bucket size does not change). The buckets start at the layer's first
 * element; the dense protocol starts them at each owner's chunk, so on more than one rank a
 * few buckets differ. */
static void qsgd_errors(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                        size_t cols, const float *A, double total, void *work, double *errors)
{
    (void)codec, (void)total, (void)work;
    const size_t count = rows * cols, bucket = (size_t)prm[0][QSGD_BUCKET];
    const int stochastic = prm[0][QSGD_STOCHASTIC] != 0.0;
    double sum[LGRECO_MAX_CANDIDATES] = {0};
    for (size_t b0 = 0; b0 < count; b0 += bucket) {
        const size_t m = count - b0 < bucket ? count - b0 : bucket;
        const float *x = A + b0;
        float lo = x[0], hi = x[0];
        for (size_t j = 1; j < m; j++) {
            lo = x[j] < lo ? x[j] : lo;
            hi = x[j] > hi ? x[j] : hi;
        }
        const double r = (double)hi - (double)lo;
        if (r == 0.0) continue;
        const int e = ilogb(r);
        const double h = ldexp(1.0, e > 127 ? -127 : e < -127 ? 127 : -e); /* h r in [2^-22, 4) */
        for (size_t c = 0; c < n; c++) {
            const double L = ldexp(1.0, (int)prm[c][QSGD_BITS]) - 1.0, step = r / L;
            sum[c] += qsgd_bucket_error(x, m, lo, (float)h, (float)(L / (h * r)), stochastic) * step * step;
        }
    }
    for (size_t c = 0; c < n; c++) errors[c] = sqrt(sum[c]);
}

/* ---- powersgd ---------------------------------------------------------------------------- */

static int powersgd_param(const double *p) { (void)p; return POWERSGD_RANK; }

/* What the low-rank protocol sends: P and Q, 4 r' (rows + cols) bytes. */
static double powersgd_wire(const codec_ops_t *codec, const double *p, size_t rows, size_t cols)
{
    (void)codec;
    return 4.0 * (double)powersgd_rank(p, rows, cols) * ((double)rows + (double)cols);
}

/* The eigenvalues of the symmetric r x r matrix S (destroyed), by cyclic Jacobi rotations,
 * sorted decreasing into ev. */
static void jacobi_eigenvalues(double *S, size_t r, double *ev)
{
    for (int sweep = 0; sweep < 64; sweep++) {
        double off = 0.0, diag = 0.0;
        for (size_t i = 0; i < r; i++) {
            diag += S[i * r + i] * S[i * r + i];
            for (size_t j = i + 1; j < r; j++) off += S[i * r + j] * S[i * r + j];
        }
        if (off <= 1e-30 * diag || off == 0.0) break;
        for (size_t p = 0; p < r; p++)
            for (size_t q = p + 1; q < r; q++) {
                const double apq = S[p * r + q];
                if (apq == 0.0) continue;
                const double theta = (S[q * r + q] - S[p * r + p]) / (2.0 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                const double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                for (size_t k = 0; k < r; k++) { /* columns p, q */
                    const double a = S[k * r + p], b = S[k * r + q];
                    S[k * r + p] = cs * a - sn * b;
                    S[k * r + q] = sn * a + cs * b;
                }
                for (size_t k = 0; k < r; k++) { /* rows p, q */
                    const double a = S[p * r + k], b = S[q * r + k];
                    S[p * r + k] = cs * a - sn * b;
                    S[q * r + k] = sn * a + cs * b;
                }
            }
    }
    for (size_t i = 0; i < r; i++) ev[i] = S[i * r + i];
    qsort(ev, r, sizeof *ev, desc_double);
}

/* S = L^T L for the len x R row-major L, in double, rows in increasing order. */
static void gram(const float *L, size_t len, size_t R, double *S)
{
    memset(S, 0, R * R * sizeof *S);
    for (size_t t = 0; t < len; t++) {
        const float *row = L + t * R;
        for (size_t i = 0; i < R; i++)
            for (size_t j = i; j < R; j++) S[i * R + j] += (double)row[i] * (double)row[j];
    }
    for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < i; j++) S[i * R + j] = S[j * R + i];
}

/* Block power iteration with the largest candidate rank R on the short side of A (P, rows x
 * R, when rows <= cols; for a taller A the same on A^T with Q): P starts as standard normals
 * and each of LGRECO_POWER_ITERS iterations takes P <- orth(A (A^T P)); then Q = A^T P, and
 * the eigenvalues of Q^T Q are the squared singular values of P^T A. The reference's loop
 * (ALGORITHMS.md §9.2) starts from a random q on the long side and orthonormalises both
 * factors; orthonormalising a factor changes its basis, not its span, so in exact arithmetic
 * only the short one needs it, and this loop spans the subspace of (A A^T)^5 P, against
 * about (A A^T)^4.5 for the reference's five iterations. The short factor is orthonormalised
 * twice per iteration: A A^T P scales its columns by the squared singular values, and the
 * second pass of Gram-Schmidt restores orthogonality to rounding. The long factor, which
 * held most of the reference's cost (its random start, its Gram-Schmidt), is only ever a
 * product. */
static size_t powersgd_max_rank(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols)
{
    size_t R = 0;
    for (size_t c = 0; c < n; c++) {
        size_t r = powersgd_rank(prm[c], rows, cols);
        R = r > R ? r : R;
    }
    return R;
}

static size_t powersgd_work(double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows, size_t cols)
{
    const size_t R = powersgd_max_rank(prm, n, rows, cols);
    return work_round((rows * R + 1) * sizeof(float)) + work_round((cols * R + 1) * sizeof(float)) +
           work_round(powersgd_acc_floats(R) * sizeof(float)) + work_round((R * R + 1) * sizeof(double)) +
           work_round((R + 1) * sizeof(double));
}

static void powersgd_errors(const codec_ops_t *codec, double (*prm)[TERSE_MAX_PARAMS], size_t n, size_t rows,
                            size_t cols, const float *A, double total, void *work, double *errors)
{
    const size_t R = powersgd_max_rank(prm, n, rows, cols);
    unsigned char *at = work;
    float *P = work_take(&at, (rows * R + 1) * sizeof *P), *Q = work_take(&at, (cols * R + 1) * sizeof *Q);
    float *acc = work_take(&at, powersgd_acc_floats(R) * sizeof *acc);
    double *S = work_take(&at, (R * R + 1) * sizeof *S), *ev = work_take(&at, (R + 1) * sizeof *ev);
    /* the codec's own products (powersgd.h): deterministic, vectorised, one pass over A each */
    const int wide = rows <= cols;
    float *shrt = wide ? P : Q, *lng = wide ? Q : P;
    const size_t slen = wide ? rows : cols, llen = wide ? cols : rows;
    powersgd_random(0x6c677265636fULL, slen, R, shrt);
    for (int it = 0; it <= LGRECO_POWER_ITERS; it++) {
        powersgd_orthogonalize(shrt, slen, R);
        if (it > 0) powersgd_orthogonalize(shrt, slen, R);
        if (wide)
            powersgd_mul_t(A, rows, cols, P, R, Q, acc);
        else
            powersgd_mul(A, rows, cols, Q, R, P, acc);
        if (it == LGRECO_POWER_ITERS) break;
        if (wide)
            powersgd_mul(A, rows, cols, Q, R, P, acc);
        else
            powersgd_mul_t(A, rows, cols, P, R, Q, acc);
    }
    gram(lng, llen, R, S);
    jacobi_eigenvalues(S, R, ev);
    for (size_t c = 0; c < n; c++) {
        const size_t r = powersgd_rank(prm[c], rows, cols);
        double rest = total;
        for (size_t i = 0; i < r; i++) rest -= ev[i] > 0.0 ? ev[i] : 0.0;
        errors[c] = sqrt(rest > 0.0 ? rest : 0.0);
        /* a rank the layer cannot compress by min_rate would make it dense */
        if (codec->goes_dense && codec->goes_dense(prm[c], rows, cols)) errors[c] = INFINITY;
    }
}

/* ---- the table ----------------------------------------------------------------------------- */

static const lgreco_family_t families[] = {
    {"powersgd", GRID_INTEGER, 1.0, 1024.0, 0, 1, powersgd_param, powersgd_wire, NULL, powersgd_work,
     powersgd_errors},
    {"topk", GRID_GEOMETRIC, 0.0, 1.0, 1, 0, topk_param, codec_wire, NULL, topk_work, topk_errors},
    {"dgc", GRID_GEOMETRIC, 0.0, 1.0, 1, 0, dgc_param, dgc_wire, dgc_sparsifies, dgc_work, dgc_errors},
    {"randk", GRID_GEOMETRIC, 0.0, 1.0, 1, 0, randk_param, randk_wire, NULL, NULL, randk_errors},
    {"qsgd", GRID_INTEGER, 1.0, 8.0, 0, 1, qsgd_param, codec_wire, NULL, NULL, qsgd_errors},
};

const lgreco_family_t *lgreco_family_for(const char *codec_name)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (strcmp(families[i].codec, codec_name) == 0) return &families[i];
    return NULL;
}

int lgreco_family_applies(const lgreco_family_t *f, const double *p, size_t rows, size_t cols)
{
    return !f->applies || f->applies(p, rows, cols);
}

const char *lgreco_family_names(void) { return "powersgd (rank), topk, dgc, randk (density), qsgd (bits)"; }

/* ---- candidates ---------------------------------------------------------------------------- */

static double clamp_value(const lgreco_family_t *f, double v)
{
    if (v > f->max) v = f->max;
    if (v < f->min || (f->min_open && v <= f->min)) v = f->min_open ? f->min + (f->max - f->min) * 1e-9 : f->min;
    return v;
}

/* v0 * lo^(3-i)/3 for i < 3, v0, v0 * hi^(i-3)/3 for i > 3: seven points, v0 in the middle. */
static size_t grid_geometric(const lgreco_family_t *f, double v0, double lo, double hi, double *out,
                             size_t *uniform)
{
    for (int i = 0; i < 7; i++) {
        double v = i < 3 ? v0 * pow(lo, (3.0 - i) / 3.0) : i > 3 ? v0 * pow(hi, (i - 3.0) / 3.0) : v0;
        if (f->round) v = round(v);
        out[i] = i == 3 ? v0 : clamp_value(f, v);
    }
    *uniform = 3;
    return 7;
}

/* The integers floor(lo v0) .. ceil(hi v0) within the family's range; a range longer than
 * LGRECO_MAX_CANDIDATES is thinned to geometrically spaced integers that keep v0. */
static size_t grid_integer(const lgreco_family_t *f, double v0, double lo, double hi, double *out,
                           size_t *uniform)
{
    double a = clamp_value(f, floor(lo * v0)), b = clamp_value(f, ceil(hi * v0));
    size_t n = 0;
    if (b - a + 1.0 <= LGRECO_MAX_CANDIDATES) {
        for (double v = a; v <= b; v += 1.0) out[n++] = v;
    } else {
        const double ratio = pow(b / a, 1.0 / (LGRECO_MAX_CANDIDATES - 2));
        double v = a;
        for (size_t i = 0; i < LGRECO_MAX_CANDIDATES - 1 && v <= b; i++, v *= ratio) {
            double r = round(v);
            if (n == 0 || r > out[n - 1]) out[n++] = r;
        }
        if (out[n - 1] < b) out[n++] = b;
        /* keep v0: replace its nearest neighbour */
        size_t near = 0;
        for (size_t i = 1; i < n; i++)
            if (fabs(out[i] - v0) < fabs(out[near] - v0)) near = i;
        out[near] = v0;
    }
    for (size_t i = 0; i < n; i++)
        if (out[i] == v0) *uniform = i;
    return n;
}

void lgreco_layer_init(lgreco_layer_t *lg, method_spec_t *compressor, const double *ap,
                       size_t rows, size_t cols)
{
    const lgreco_family_t *f = lgreco_family_for(compressor->def->name);
    memset(lg, 0, sizeof *lg);
    lg->family = f;
    lg->param = f->param(compressor->p);
    double *v0 = &compressor->p[lg->param];
    if (f->param == topk_param && isnan(*v0)) *v0 = TOPK_DEFAULT_DENSITY;
    if (f->grid == GRID_INTEGER) {
        lg->n_cand = grid_integer(f, *v0, ap[LGRECO_LO], ap[LGRECO_HI], lg->cand, &lg->uniform);
    } else {
        lgreco_family_t rounded = *f;
        if (lg->param == TOPK_K && f->param == topk_param) {
            rounded.round = 1;
            rounded.min = 1.0;
            rounded.max = (double)(rows * cols);
            rounded.min_open = 0;
        }
        lg->n_cand = grid_geometric(&rounded, *v0, ap[LGRECO_LO], ap[LGRECO_HI], lg->cand, &lg->uniform);
    }
    lg->choice = lg->uniform;
}

void lgreco_candidate_params(const lgreco_layer_t *lg, const double *base, size_t index,
                             double out[TERSE_MAX_PARAMS])
{
    memcpy(out, base, TERSE_MAX_PARAMS * sizeof *out);
    out[lg->param] = lg->cand[index];
}

/* The candidates' parameter vectors, and their wire sizes when sizes is not NULL. */
static void candidates(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                       size_t cols, double (*prm)[TERSE_MAX_PARAMS], double *sizes)
{
    for (size_t c = 0; c < lg->n_cand; c++) {
        lgreco_candidate_params(lg, base, c, prm[c]);
        if (sizes) sizes[c] = lg->family->wire(codec, prm[c], rows, cols);
    }
}

size_t lgreco_work_bytes(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                         size_t cols)
{
    if (!lg->family->work) return 0;
    double prm[LGRECO_MAX_CANDIDATES][TERSE_MAX_PARAMS];
    candidates(lg, codec, base, rows, cols, prm, NULL);
    return lg->family->work(prm, lg->n_cand, rows, cols);
}

void lgreco_measure(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                    size_t cols, const float *A, double scale, void *work, double *sizes, double *errors)
{
    double prm[LGRECO_MAX_CANDIDATES][TERSE_MAX_PARAMS];
    candidates(lg, codec, base, rows, cols, prm, sizes);
    /* ||A||^2 in double is finite exactly when A is: a float squared is below 2^256 */
    const double total = sum_squares(A, rows * cols);
    if (!isfinite(total)) {
        for (size_t c = 0; c < lg->n_cand; c++) errors[c] = NAN;
        return;
    }
    lg->family->errors(codec, prm, lg->n_cand, rows, cols, A, total, work, errors);
    /* every family's error is positively homogeneous: ||sA - C(sA)|| = s ||A - C(A)|| */
    for (size_t c = 0; c < lg->n_cand; c++) errors[c] *= scale;
}
