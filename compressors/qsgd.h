/* QSGD in CGX's max-min form: per-bucket uniform quantisation to 2^bits - 1 intervals
 * between the bucket's smallest and largest element, levels bit-packed. */
#ifndef TERSE_QSGD_H
#define TERSE_QSGD_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

enum { QSGD_BITS, QSGD_BUCKET, QSGD_STOCHASTIC, QSGD_SEED, QSGD_N_PARAMS };
extern const param_def_t qsgd_params[QSGD_N_PARAMS];
extern const codec_ops_t codec_qsgd_ops;

/* Bytes of a bucket's header: float32 min | float32 max. */
#define QSGD_HEADER 8

/* Packs n levels of `bits` bits each (1..8; each level < 2^bits) into exactly
 * ceil(n * bits / 8) bytes: level i occupies bits [i * bits, (i + 1) * bits) of the
 * little-endian bit stream, unused high bits of the last byte are 0. */
void qsgd_pack(const uint8_t *restrict lv, size_t n, unsigned bits, unsigned char *restrict dst);

/* The inverse of qsgd_pack: reads ceil(n * bits / 8) bytes from src into n levels. */
void qsgd_unpack(const unsigned char *restrict src, size_t n, unsigned bits, uint8_t *restrict lv);

#endif
