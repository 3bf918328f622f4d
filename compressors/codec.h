/* The codec interface: a versioned table of pure memory functions. A codec turns a float
 * vector into a wire message and adds a message's decoded values into a float vector. It
 * never communicates; the aggregation protocol that moves its messages is named by
 * `protocol` and lives in collectives/. */
#ifndef TERSE_CODEC_H
#define TERSE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"
#include "terse.h"

typedef enum {
    CODEC_PROTO_DENSE = 1,    /* elementwise codec: chunked reduce-scatter + allgather, the
                                 owner re-encodes its chunk (fp32/fp16/bf16, qsgd)          */
    CODEC_PROTO_SPARSE = 2,   /* whole-vector messages: allgather + scatter-add (topk)      */
    CODEC_PROTO_RANDK = 3,    /* shared random indices: dense allreduce of the values only  */
    CODEC_PROTO_ONEBIT = 4,   /* 1-bit Adam's two phases with worker and server error       */
    CODEC_PROTO_DGC = 5,      /* DGC: momentum correction, sampled threshold, allgather     */
    CODEC_PROTO_POWERSGD = 6, /* low rank: allreduce P, orthogonalise, allreduce Q          */
    CODEC_PROTO_DENSE_EF = 7  /* dense, and each owner keeps the error of its re-encoding and
                                 adds it to its next chunk (qsgd): the aggregate stays the
                                 mean of the ranks' messages up to a bounded error            */
} codec_protocol_t;

/* Where an encode sits, for codecs that draw random numbers (qsgd's stochastic rounding,
 * randk's indices) or need the layer's shape (powersgd): the stream key identifies (seed,
 * layer, call, rank, phase); offset is the index in the layer of in[0], so a chunk encodes
 * exactly as it would inside the whole vector; rows x cols is the shape of in[0..count)
 * as a row-major matrix (a codec views it as count x 1 when ctx is NULL or rows * cols !=
 * count). Codecs that need none of it ignore it; ctx may be NULL. */
typedef struct {
    uint64_t key;
    size_t offset;
    size_t rows, cols;
} codec_ctx_t;

typedef struct codec_ops {
    size_t size;                /* sizeof(codec_ops_t): the version of this table          */
    const char *name;
    codec_protocol_t protocol;

    /* Checks combinations of parameters the table cannot express (topk: density or k, not
     * both) for a layer of `count` elements. May be NULL. */
    terse_status_t (*check)(const double *p, size_t count);
    /* Upper bound of a message for `count` elements; a peer's message above it is invalid. */
    size_t (*max_bytes)(const double *p, size_t count);
    /* Scratch memory encode needs, allocated once per layer. */
    size_t (*scratch_bytes)(const double *p, size_t count);
    /* Encodes in[0..count) into msg (max_bytes available); returns the bytes written. An
     * elementwise (CODEC_PROTO_DENSE) codec writes exactly max_bytes(p, count) bytes. */
    size_t (*encode)(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                     size_t count, void *restrict msg, void *restrict scratch);
    /* Adds the decoded message to out[0..count), using scratch (scratch_bytes, or NULL when
     * that is 0) as encode does. Validates the message first (length,
     * indices in range) and returns TERSE_ERR_MISMATCH, leaving out untouched, if it is
     * malformed. */
    terse_status_t (*decode_add)(const double *p, const void *restrict msg, size_t bytes,
                                 size_t count, float *restrict out, void *restrict scratch);
    /* Whether a layer of rows x cols elements is better sent dense (exact mean, no feedback)
     * with this codec: powersgd's 1-D layers and those it cannot compress by min_rate. NULL:
     * never. */
    int (*goes_dense)(const double *p, size_t rows, size_t cols);
    /* 1: the codec keeps its own error memory and momentum (dgc): the layer's feedback must
     * be none, and every layer with this codec, however small, runs through its protocol. */
    int owns_memory;
} codec_ops_t;

/* The codecs the configuration knows, built or not. */
extern const method_def_t codec_registry[];
extern const size_t codec_registry_len;

/* The registry entry named `name`, or NULL. */
const method_def_t *codec_find(const char *name);

#endif
