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
    CODEC_PROTO_DENSE = 1,  /* elementwise codec: chunked reduce-scatter + allgather       */
    CODEC_PROTO_SPARSE = 2  /* whole-vector messages: allgather + scatter-add in rank order */
} codec_protocol_t;

typedef struct codec_ops {
    size_t size;                /* sizeof(codec_ops_t): the version of this table          */
    const char *name;
    codec_protocol_t protocol;
    /* Elementwise codecs only: bytes per element on the wire (4 for fp32, 2 for fp16). */
    size_t elem_bytes;

    /* Checks combinations of parameters the table cannot express (topk: density or k, not
     * both) for a layer of `count` elements. May be NULL. */
    terse_status_t (*check)(const double *p, size_t count);
    /* Upper bound of a message for `count` elements; a peer's message above it is invalid. */
    size_t (*max_bytes)(const double *p, size_t count);
    /* Scratch memory encode needs, allocated once per layer. */
    size_t (*scratch_bytes)(const double *p, size_t count);
    /* Encodes in[0..count) into msg (max_bytes available); returns the bytes written. */
    size_t (*encode)(const double *p, const float *restrict in, size_t count,
                     void *restrict msg, void *restrict scratch);
    /* Adds the decoded message to out[0..count). Validates the message first (length,
     * indices in range) and returns TERSE_ERR_MISMATCH, leaving out untouched, if it is
     * malformed. */
    terse_status_t (*decode_add)(const double *p, const void *restrict msg, size_t bytes,
                                 size_t count, float *restrict out);
} codec_ops_t;

/* The codecs the configuration knows, built or not. */
extern const method_def_t codec_registry[];
extern const size_t codec_registry_len;

/* The registry entry named `name`, or NULL. */
const method_def_t *codec_find(const char *name);

#endif
