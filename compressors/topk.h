/* TopK selection and the sparse (index, value) message shared by sparse codecs. */
#ifndef TERSE_TOPK_H
#define TERSE_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "error.h"

#define TOPK_N_PARAMS 2
/* The density of a topk codec given neither density nor k. */
#define TOPK_DEFAULT_DENSITY 0.01
extern const param_def_t topk_params[TOPK_N_PARAMS];

/* The k a topk codec with parameters p keeps of `count` elements. */
size_t topk_k(const double *p, size_t count);

/* Writes the k largest-magnitude entries of v[0..n) (ties: lower index first) to idx/val in
 * increasing index order; returns how many (min(k, n)). Entries must be finite. */
size_t topk_select(const float *restrict v, size_t n, size_t k, uint32_t *restrict idx,
                   float *restrict val);

/* Validates a sparse message (uint32 k | uint32 idx[k] | float val[k], indices strictly
 * increasing and < count) and adds it to out; TERSE_ERR_MISMATCH if malformed. */
terse_status_t sparse_decode_add(const void *restrict msg, size_t bytes, size_t count,
                                 float *restrict out);

#endif
