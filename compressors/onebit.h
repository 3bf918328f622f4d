/* 1-bit compression with one scale (ALGORITHMS.md §2.3, §2.5): the pieces the standalone
 * codec and the two-phase protocol (collectives/onebit_twophase.c) share. */
#ifndef TERSE_ONEBIT_H
#define TERSE_ONEBIT_H

#include <stddef.h>

#include "codec.h"

enum { ONEBIT_SCALE, ONEBIT_N_PARAMS };
/* The values of the scale parameter: the index of the word in its choices. */
enum { ONEBIT_SCALE_L1, ONEBIT_SCALE_L2 };
extern const param_def_t onebit_params[ONEBIT_N_PARAMS];
extern const codec_ops_t codec_onebit_ops;

/* Bytes before the signs in a standalone message: the float32 scale. */
#define ONEBIT_HEADER 4

/* Bytes of n packed signs: ceil(n / 8). */
static inline size_t onebit_sign_bytes(size_t n) { return n / 8 + (n % 8 != 0); }

/* Packs the signs of x[0..n): bit j % 8 of byte j / 8 (LSB first) is set when x[j] >= 0, so
 * sign(0) = sign(-0.0) = +1 as in DeepSpeed's sign().add_(1).bool(). The unused high bits of
 * a last partial byte are 0. */
void onebit_pack(const float *restrict x, size_t n, unsigned char *restrict bits);

/* out[j] = +s where bit j is set, -s where it is clear, for j in [0, n). */
void onebit_unpack(const unsigned char *restrict bits, size_t n, float s, float *restrict out);

/* out[j] += +s or -s, as onebit_unpack. */
void onebit_unpack_add(const unsigned char *restrict bits, size_t n, float s, float *restrict out);

/* The sum of x[j]^2 (l2) or |x[j]| (l1) over [0, n), in double: eight partial sums, lane
 * j % 8 taking element j in increasing j, combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). A
 * fixed order, so that every rank and the tests' references get the same bits; a NaN sum is
 * always the same NaN (the default quiet NaN, positive). */
double onebit_norm_acc(int scale, const float *x, size_t n);

/* The scale of a vector of len elements whose norm_acc is acc: sqrt(acc) / sqrt(len) for l2
 * (||x||_2 / sqrt(len)), acc / len for l1 (||x||_1 / len), computed in double and rounded
 * to float once; 0 when len is 0. */
float onebit_scale_of(int scale, double acc, size_t len);

/* DeepSpeed's padded length for n ranks: count rounded up to a multiple of n * divider,
 * divider = 8n / gcd(n, 8), so that each of the n chunks is a whole number of bytes. */
size_t onebit_padded(size_t count, int nranks);

#endif
