/*
 * logreg_model.h — the logistic-regression model shared by the examples (logreg, ef21_logreg):
 * a sparse copy of a rank's rows, one pass computing the loss and its gradient, the two
 * regularisers, and the smoothness constants (the Gram matrix and its largest eigenvalue).
 *
 * Rows a_j with labels b_j = +-1 (libsvm.h maps them). Per row, the logistic loss is
 * log(1 + exp(-b_j a_j.x)); its gradient is -b_j sigma(-b_j a_j.x) a_j. Everything is double.
 *
 * Errors: the functions that allocate return 0 on success and -1 if an allocation fails, with
 * the output untouched. The others cannot fail.
 */
#ifndef TERSE_EXAMPLES_LOGREG_MODEL_H
#define TERSE_EXAMPLES_LOGREG_MODEL_H

#include <stddef.h>

#include "libsvm.h"

/* The rows in compressed sparse row form: the nonzeros of row i are val[ptr[i] .. ptr[i+1])
 * at columns idx[...], in increasing column order. LibSVM data is sparse (mushrooms keeps 21
 * of 112 features per row, w8a about 12 of 300), so a pass costs the nonzeros, not rows x d.
 * Skipping exact zeros changes no result: a zero term adds +-0, which leaves any sum as it is. */
typedef struct {
    size_t rows, cols;
    size_t *ptr;        /* rows + 1 offsets                 */
    size_t *idx;        /* column of each nonzero           */
    double *val;        /* value of each nonzero            */
    const double *y;    /* the labels, borrowed from the libsvm_data_t (not freed here) */
} logreg_rows_t;

/* Builds the sparse form of data's rows. The labels stay in data, which must outlive *out. */
int logreg_rows_build(const libsvm_data_t *data, logreg_rows_t *out);

/* Frees what logreg_rows_build allocated and zeroes *rows. NULL is accepted. */
void logreg_rows_free(logreg_rows_t *rows);

/* One pass over the rows at x (cols wide): the sum of the logistic losses in *loss, the number
 * of rows classified right (a.x > 0 predicts +1) in *correct, and the sum of the losses'
 * gradients in gsum (cols wide, overwritten). loss and correct may be NULL. */
void logreg_pass(const logreg_rows_t *rows, const double *x, double *loss, double *correct,
                 double *gsum);

/* ---- Regularisers ---------------------------------------------------------------------- */

typedef enum {
    LOGREG_REG_L2,        /* lambda/2 |x|^2                                      */
    LOGREG_REG_NONCONVEX  /* lambda sum_k x_k^2 / (1 + x_k^2), the EF21 papers'   */
} logreg_reg_t;

/* The regulariser's value at x (d wide). */
double logreg_reg_value(logreg_reg_t reg, double lambda, const double *x, size_t d);

/* Its partial derivative at one coordinate: lambda x_k, or 2 lambda x_k / (1 + x_k^2)^2. */
double logreg_reg_grad(logreg_reg_t reg, double lambda, double xk);

/* Its smoothness constant, the largest second derivative: lambda for l2; 2 lambda, at x = 0,
 * for the nonconvex one. */
double logreg_reg_smoothness(logreg_reg_t reg, double lambda);

/* ---- Smoothness of the loss ------------------------------------------------------------ */

/* Adds A^T A of the rows to gram (cols x cols, row-major, both triangles). */
void logreg_gram_add(const logreg_rows_t *rows, double *gram);

/* The largest eigenvalue of the symmetric d x d matrix a (row-major; only the lower triangle
 * is read), in *lmax. Householder reduction to tridiagonal form, then bisection with Sturm
 * counts down to adjacent doubles: the result is within a few ulps of |a|'s norm of the
 * exact value, far below the 1e-12 relative that a stepsize needs. O(d^3) work, d x d
 * scratch. d = 0 gives 0; a matrix holding a NaN or an infinity gives NaN. */
int logreg_lambda_max(const double *a, size_t d, double *lmax);

#endif /* TERSE_EXAMPLES_LOGREG_MODEL_H */
