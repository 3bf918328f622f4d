/* RandK: k coordinates chosen by a seeded generator that every rank runs alike, so that only
 * the values travel. */
#ifndef TERSE_RANDK_H
#define TERSE_RANDK_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

enum { RANDK_DENSITY, RANDK_SEED, RANDK_UNBIASED, RANDK_N_PARAMS };
extern const param_def_t randk_params[RANDK_N_PARAMS];

/* Bytes before the values in a randk message: uint64 stream key | uint32 k. */
#define RANDK_HEADER 12

/* The k a randk codec with parameters p keeps of `count` elements: floor(density * count),
 * at least 1 (0 for an empty layer). */
size_t randk_k(const double *p, size_t count);

/* Marks k uniformly random distinct indices of [0, count) in bitmap (ceil(count / 64)
 * words, zeroed here): Floyd's algorithm, k draws of stream key. */
void randk_choose(uint64_t key, size_t count, size_t k, uint64_t *bitmap);

/* Adds val[m] to out[i] for the m-th marked index i of bitmap, in increasing order: how a
 * message's k values land, given the indices randk_choose marked. */
void randk_scatter_add(const uint64_t *bitmap, size_t count, const float *restrict val,
                       float *restrict out);

#endif
