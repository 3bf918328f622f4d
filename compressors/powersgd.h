/* PowerSGD (ALGORITHMS.md §8): a layer seen as a row-major rows x cols matrix M is sent as
 * two thin factors, P (rows x r) and Q (cols x r), from one step of power iteration.
 *
 * The dense linear algebra here is shared by the standalone codec (compressors/powersgd.c)
 * and the low-rank protocol (collectives/powersgd_lowrank.c). Every function is
 * deterministic, and its operation order is part of its contract, because every rank must
 * compute the same bits and a test reference must be able to reproduce them:
 *   - products are taken in double ((double)a * (double)b, exact for floats), summed in
 *     double from 0.0 in increasing index order, and the sum is rounded to float once;
 *   - matrices are row-major: element (i, k) of an n x r matrix is a[i * r + k].
 * The products run AVX2 kernels where simd_level() allows (simd.h); those compute the same
 * bits as the scalar loops, which stay the reference. */
#ifndef TERSE_POWERSGD_H
#define TERSE_POWERSGD_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

enum { POWERSGD_RANK, POWERSGD_START, POWERSGD_MIN_RATE, POWERSGD_WARM_START, POWERSGD_SEED,
       POWERSGD_N_PARAMS };
extern const param_def_t powersgd_params[POWERSGD_N_PARAMS];
extern const codec_ops_t codec_powersgd_ops;

/* Gram-Schmidt's guard against a zero column (paper code): col /= sqrt(sum col^2) + eps. */
#define POWERSGD_EPS 1e-8

/* Bytes before the factors in a standalone codec message: uint32 rows | cols | rank. */
#define POWERSGD_HEADER 12

/* The rank r' = min(rows, cols, rank) a codec with parameters p uses on a rows x cols layer
 * (0 for an empty layer). */
size_t powersgd_rank(const double *p, size_t rows, size_t cols);

/* Doubles of scratch (acc below) that the products need for factors of rank r: about
 * 50 KiB for small ranks (the vector kernels keep blocks of their operands there). */
size_t powersgd_acc_doubles(size_t r);

/* P = M Q: M is n x m, Q is m x r, P is n x r.
 *   P[i,k] = (float) sum_{j = 0..m-1} M[i,j] * Q[j,k]
 * acc: powersgd_acc_doubles(r) doubles. */
void powersgd_mul(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                  float *restrict P, double *restrict acc);

/* Q = M^T P: M is n x m, P is n x r, Q is m x r.
 *   Q[j,k] = (float) sum_{i = 0..n-1} M[i,j] * P[i,k]
 * Columns of M are taken in blocks so that the double accumulators stay small; the order of
 * every sum is still i = 0, 1, ..., n-1. acc: powersgd_acc_doubles(r) doubles. */
void powersgd_mul_t(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                    float *restrict Q, double *restrict acc);

/* A = P Q^T, or A += P Q^T when add is 1: P is n x r, Q is m x r, A is n x m.
 *   A[i,j] = (float) sum_{k = 0..r-1} P[i,k] * Q[j,k]     (add: A[i,j] += that float)
 * acc: powersgd_acc_doubles(r) doubles. */
void powersgd_outer(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                    float *restrict A, int add, double *restrict acc);

/* Orthonormalises the r columns of the len x r matrix a in place by Gram-Schmidt with the
 * paper code's guard, column i = 0, 1, ...:
 *   d = sqrt(sum_t a[t,i]^2) + POWERSGD_EPS;  a[t,i] = (float)(a[t,i] / d)
 *   for each later column j:  s = sum_t a[t,i] * a[t,j];  a[t,j] = (float)(a[t,j] - s * a[t,i])
 * (sums in double, increasing t). A zero column stays zero instead of becoming NaN. As in
 * the paper code this is one pass of modified Gram-Schmidt: a column that depends on
 * earlier ones (an input of lower rank than r) leaves a rounding residue, which is
 * normalised like any column and is not orthogonal to the others. */
void powersgd_orthogonalize(float *a, size_t len, size_t r);

/* Fills the m x r matrix Q with standard normals of stream key: Q[j,k] = (float)
 * rng_normal(key, j * r + k). The same key gives the same Q on every rank. */
void powersgd_random(uint64_t key, size_t m, size_t r, float *Q);

#endif
