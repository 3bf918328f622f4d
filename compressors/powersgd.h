/* PowerSGD (ALGORITHMS.md §8): a layer seen as a row-major rows x cols matrix M is sent as
 * two thin factors, P (rows x r) and Q (cols x r), from one step of power iteration.
 *
 * The dense linear algebra here is shared by the standalone codec (compressors/powersgd.c)
 * and the low-rank protocol (collectives/powersgd_lowrank.c). Every function is
 * deterministic, and its operation order is part of its contract, because every rank must
 * compute the same bits and a test reference must be able to reproduce them:
 *   - the products are float: every sum is a chain of fused multiply-adds from +0.0f,
 *     s = fmaf(a, b, s), each rounded once, in the order given below for each function;
 *   - matrices are row-major: element (i, k) of an n x r matrix is a[i * r + k].
 * The products run AVX2 kernels where simd_level() allows (simd.h); those compute the same
 * bits as the scalar loops, which stay the reference. Gram-Schmidt sums in double. */
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

/* Floats of scratch (acc below) that the products need for factors of rank r: about
 * 33 KiB + 1 KiB per rank-column (the vector kernels keep blocks of their operands there). */
size_t powersgd_acc_floats(size_t r);

/* P = M Q: M is n x m, Q is m x r, P is n x r. Each sum runs as 8 chains, chain l over the
 * columns j = l, l + 8, l + 16, ... in increasing order, s_l = fmaf(M[i,j], Q[j,k], s_l),
 * and P[i,k] = ((s_0 + s_4) + (s_2 + s_6)) + ((s_1 + s_5) + (s_3 + s_7)).
 * acc: powersgd_acc_floats(r) floats. */
void powersgd_mul(const float *restrict M, size_t n, size_t m, const float *restrict Q, size_t r,
                  float *restrict P, float *restrict acc);

/* Q = M^T P: M is n x m, P is n x r, Q is m x r. Each sum is one chain down the rows,
 * i = 0, 1, ..., n-1: Q[j,k] = fmaf(M[i,j], P[i,k], Q[j,k]). Columns of M are taken in
 * blocks so that the sums stay in L1. acc: powersgd_acc_floats(r) floats. */
void powersgd_mul_t(const float *restrict M, size_t n, size_t m, const float *restrict P, size_t r,
                    float *restrict Q, float *restrict acc);

/* A = P Q^T, or A += P Q^T when add is 1: P is n x r, Q is m x r, A is n x m. Each sum is
 * one chain over the rank, k = 0, 1, ..., r-1: s = fmaf(P[i,k], Q[j,k], s); then A[i,j] = s
 * (add: A[i,j] + s). acc: powersgd_acc_floats(r) floats. */
void powersgd_outer(const float *restrict P, size_t n, const float *restrict Q, size_t m, size_t r,
                    float *restrict A, int add, float *restrict acc);

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
