/* The logistic-regression model of the examples: see logreg_model.h. */
#include "logreg_model.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int logreg_rows_build(const libsvm_data_t *data, logreg_rows_t *out)
{
    const size_t rows = data->rows, cols = data->cols;
    size_t nnz = 0;
    for (size_t i = 0; i < rows * cols; i++) nnz += data->x[i] != 0;
    logreg_rows_t r = {.rows = rows, .cols = cols, .y = data->y};
    r.ptr = malloc((rows + 1) * sizeof *r.ptr);
    r.idx = malloc((nnz + 1) * sizeof *r.idx);
    r.val = malloc((nnz + 1) * sizeof *r.val);
    if (!r.ptr || !r.idx || !r.val) {
        logreg_rows_free(&r);
        return -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < rows; i++) {
        r.ptr[i] = at;
        const double *a = data->x + i * cols;
        for (size_t k = 0; k < cols; k++) {
            if (a[k] == 0) continue;
            r.idx[at] = k;
            r.val[at] = a[k];
            at++;
        }
    }
    r.ptr[rows] = at;
    *out = r;
    return 0;
}

void logreg_rows_free(logreg_rows_t *rows)
{
    if (!rows) return;
    free(rows->ptr);
    free(rows->idx);
    free(rows->val);
    memset(rows, 0, sizeof *rows);
}

void logreg_pass(const logreg_rows_t *rows, const double *x, double *loss, double *correct,
                 double *gsum)
{
    double l = 0, c = 0;
    memset(gsum, 0, rows->cols * sizeof *gsum);
    for (size_t i = 0; i < rows->rows; i++) {
        const size_t begin = rows->ptr[i], end = rows->ptr[i + 1];
        const double b = rows->y[i];
        double z = 0;
        for (size_t j = begin; j < end; j++) z += rows->val[j] * x[rows->idx[j]];
        double m = b * z;
        /* log(1 + e^-m) and sigma(-m) = 1/(1 + e^m), without overflow for either sign of m */
        double e = exp(-fabs(m));
        l += (m > 0 ? 0 : -m) + log1p(e);
        double s = m > 0 ? e / (1 + e) : 1 / (1 + e);
        c += (z > 0 ? 1.0 : -1.0) == b;
        double w = -b * s;
        for (size_t j = begin; j < end; j++) gsum[rows->idx[j]] += w * rows->val[j];
    }
    if (loss) *loss = l;
    if (correct) *correct = c;
}

/* ---- Regularisers ---------------------------------------------------------------------- */

double logreg_reg_value(logreg_reg_t reg, double lambda, const double *x, size_t d)
{
    double r = 0;
    for (size_t k = 0; k < d; k++)
        r += reg == LOGREG_REG_L2 ? 0.5 * x[k] * x[k] : x[k] * x[k] / (1 + x[k] * x[k]);
    return lambda * r;
}

double logreg_reg_grad(logreg_reg_t reg, double lambda, double xk)
{
    if (reg == LOGREG_REG_L2) return lambda * xk;
    double q = 1 + xk * xk;
    return lambda * 2 * xk / (q * q);
}

double logreg_reg_smoothness(logreg_reg_t reg, double lambda)
{
    return reg == LOGREG_REG_L2 ? lambda : 2 * lambda;
}

/* ---- Smoothness of the loss ------------------------------------------------------------ */

void logreg_gram_add(const logreg_rows_t *rows, double *gram)
{
    const size_t d = rows->cols;
    for (size_t i = 0; i < rows->rows; i++)
        for (size_t p = rows->ptr[i]; p < rows->ptr[i + 1]; p++) {
            double *g = gram + rows->idx[p] * d;
            const double v = rows->val[p];
            for (size_t q = rows->ptr[i]; q < rows->ptr[i + 1]; q++)
                g[rows->idx[q]] += v * rows->val[q];
        }
}

/* Reduces the symmetric m (d x d, both triangles, overwritten) to the tridiagonal T = Q^T m Q
 * with diagonal diag[0..d) and sub-diagonal off[0..d-1), by d - 2 Householder reflections.
 * Step k takes the column below m[k][k], x, and the reflection H = I - 2 v v^T (|v| = 1)
 * that maps x to (alpha, 0, ..., 0), |alpha| = |x|, with the sign that avoids cancellation;
 * the trailing block M becomes H M H = M - 2 v w^T - 2 w v^T, with p = M v and
 * w = p - (v.p) v. The column itself is only read, for alpha. v and p are d-wide scratch. */
static void householder_tridiag(double *m, size_t d, double *diag, double *off, double *v,
                                double *p)
{
    for (size_t k = 0; k + 2 < d; k++) {
        const size_t b = k + 1, n = d - b; /* the trailing block: rows and columns b..d-1 */
        diag[k] = m[k * d + k];
        /* v = x / max|x| first, so that |x|^2 neither overflows nor underflows */
        double scale = 0;
        for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(m[(b + i) * d + k]));
        if (scale == 0) { /* already reduced */
            off[k] = 0;
            continue;
        }
        double norm2 = 0;
        for (size_t i = 0; i < n; i++) {
            v[i] = m[(b + i) * d + k] / scale;
            norm2 += v[i] * v[i];
        }
        double alpha = -copysign(sqrt(norm2), v[0]);
        off[k] = alpha * scale;
        v[0] -= alpha;
        double vnorm = 0;
        for (size_t i = 0; i < n; i++) vnorm += v[i] * v[i];
        vnorm = sqrt(vnorm); /* > 0: v[0] = x0 - alpha has |v[0]| >= |alpha| > 0 */
        for (size_t i = 0; i < n; i++) v[i] /= vnorm;

        double vp = 0;
        for (size_t i = 0; i < n; i++) {
            const double *row = m + (b + i) * d + b;
            double s = 0;
            for (size_t j = 0; j < n; j++) s += row[j] * v[j];
            p[i] = s;
            vp += v[i] * s;
        }
        for (size_t i = 0; i < n; i++) p[i] -= vp * v[i];
        for (size_t i = 0; i < n; i++) {
            double *row = m + (b + i) * d + b;
            for (size_t j = 0; j < n; j++) row[j] -= 2 * (v[i] * p[j] + p[i] * v[j]);
        }
    }
    if (d >= 2) {
        diag[d - 2] = m[(d - 2) * d + d - 2];
        off[d - 2] = m[(d - 1) * d + d - 2];
    }
    diag[d - 1] = m[(d - 1) * d + d - 1];
}

/* The number of eigenvalues of the tridiagonal (diag, off) below x: the number of negative
 * pivots of the LDL^T factorisation of T - x I (Sylvester's law of inertia). A pivot that
 * comes out (nearly) zero is replaced by -pivmin, as LAPACK's dstebz does. */
static size_t sturm_below(const double *diag, const double *off, size_t d, double x,
                          double pivmin)
{
    size_t count = 0;
    double q = diag[0] - x;
    for (size_t i = 0;;) {
        if (fabs(q) < pivmin) q = -pivmin;
        count += q < 0;
        if (++i == d) break;
        q = (diag[i] - x) - off[i - 1] * off[i - 1] / q;
    }
    return count;
}

int logreg_lambda_max(const double *a, size_t d, double *lmax)
{
    if (d == 0) {
        *lmax = 0;
        return 0;
    }
    double *m = malloc(d * d * sizeof *m), *diag = malloc(d * sizeof *diag);
    double *off = malloc(d * sizeof *off), *v = malloc(d * sizeof *v), *p = malloc(d * sizeof *p);
    int rc = -1;
    if (!m || !diag || !off || !v || !p) goto out;
    int finite = 1;
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j <= i; j++) {
            m[i * d + j] = m[j * d + i] = a[i * d + j];
            finite &= isfinite(a[i * d + j]) != 0;
        }
    if (!finite) {
        *lmax = NAN;
        rc = 0;
        goto out;
    }
    householder_tridiag(m, d, diag, off, v, p);

    /* Gershgorin: every eigenvalue lies in [lo, hi]; widened a little for the rounding of
     * the bounds themselves. */
    double lo = INFINITY, hi = -INFINITY, emax = 0;
    for (size_t i = 0; i < d; i++) {
        double r = (i > 0 ? fabs(off[i - 1]) : 0) + (i + 1 < d ? fabs(off[i]) : 0);
        lo = fmin(lo, diag[i] - r);
        hi = fmax(hi, diag[i] + r);
        if (i + 1 < d) emax = fmax(emax, off[i] * off[i]);
    }
    double pad = 4 * DBL_EPSILON * fmax(fabs(lo), fabs(hi)) * (double)d + DBL_MIN;
    lo -= pad;
    hi += pad;
    const double pivmin = DBL_MIN * fmax(1, emax);
    /* Invariant: fewer than d eigenvalues below lo (lambda_max >= lo), all d below hi. The
     * loop ends when no double lies strictly between them. */
    for (;;) {
        double mid = lo + (hi - lo) / 2;
        if (!(mid > lo && mid < hi)) break; /* also when an overflow made mid NaN */
        if (sturm_below(diag, off, d, mid, pivmin) == d) hi = mid;
        else lo = mid;
    }
    *lmax = lo + (hi - lo) / 2;
    rc = 0;
out:
    free(m);
    free(diag);
    free(off);
    free(v);
    free(p);
    return rc;
}
