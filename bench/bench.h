/* terse-bench internals shared by its files. */
#ifndef TERSE_BENCH_H
#define TERSE_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"

struct codec_ops;

typedef struct {
    size_t rows, cols;
} bench_shape_t;

typedef struct {
    bench_shape_t *v;
    size_t n, cap;
} shape_list_t;

/* "RxC[,RxC...]" or "resnet50"; 0 on success. */
int shapes_parse(const char *text, shape_list_t *out);
size_t shapes_total(const shape_list_t *s);

/* The shape a flat buffer of count floats is registered with: R x C, C the largest power of
 * two with C * C <= count, when C divides count; count x 1 otherwise. */
bench_shape_t bench_flat_shape(size_t count);

/* Parses "64K", "1M", "100M", "2G" (binary suffixes) as bytes; 0 on success. */
int bench_parse_bytes(const char *s, size_t *out);

/* A deterministic synthetic gradient: rank- and element-dependent, heavy-tailed like real
 * gradients (a Gaussian times a log-normal-ish spread), identical on every run. */
void bench_fill_gradient(float *v, size_t n, int rank, uint64_t layer_seed);

/* Monotonic time in microseconds: the engine's clock (src/allreduce.c). */
double engine_now_us(void);
#define bench_now_us engine_now_us

/* The codec that "compressor=SPEC" configures, its parameters in p, checked for a layer of n
 * elements; NULL after printing why not. */
const struct codec_ops *bench_codec(const char *spec, size_t n, double p[TERSE_MAX_PARAMS]);

/* One row of a --kernels table: the mean encode, decode and copy time of iters iterations
 * (the sums given) and their ratio, (encode + decode) / copy. */
void bench_kernel_row(const char *codec, bench_shape_t shape, size_t bytes, double enc, double dec, double cpy,
                      int iters);

/* Codec kernel throughput (--kernels): encode and decode of each codec next to memcpy, for
 * each size from min to max bytes (doubling), or for each shape when shapes is not NULL. */
int bench_kernels(const char *const *codecs, size_t n_codecs, size_t min_bytes, size_t max_bytes,
                  const shape_list_t *shapes, int iters, int warmup);

/* --overlap MS: terse_allreduce then MS of computation, against terse_iallreduce with the
 * same computation before terse_wait; prints one row (rank 0). 0, 1 (a call failed), 2. */
int bench_overlap(const char *cfg, const bench_shape_t *shapes, size_t n_layers, float *const *grad,
                  float *const *buf, const size_t *counts, double ms, int iters, int warmup);

#endif
