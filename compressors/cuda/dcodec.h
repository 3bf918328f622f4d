/* Device codecs: the CUDA counterparts of the codecs in compressors/ (codec.h), for vectors
 * that live in GPU memory.
 *
 * A device codec writes exactly the wire message of its CPU codec (the format documented
 * with each CPU codec), so that a message encoded on either side decodes on the other and
 * the CPU codec is the reference the GPU tests compare against: bit for bit where `bitwise`
 * is 1, within the tolerance its file states where it is 0 (a sum whose order a GPU cannot
 * keep cheaply). Like the CPU codecs they never communicate.
 *
 * Pointers named d_* are device memory. Work is enqueued on `stream` (a cudaStream_t; NULL
 * is the legacy default stream). A call that must read a result on the host (a message
 * length that depends on the data, a validation verdict) synchronises the stream before it
 * returns and says so in its file; the others only enqueue. This header needs no CUDA
 * header, so that C code without the CUDA toolkit's headers can include it. */
#ifndef TERSE_DCODEC_H
#define TERSE_DCODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "codec.h"

typedef struct dcodec_ops {
    size_t size;                /* sizeof(dcodec_ops_t): the version of this table          */
    const codec_ops_t *host;    /* the CPU codec: name, parameters, max_bytes, wire format */
    int bitwise;                /* 1: messages and decoded sums equal the CPU codec's bits */

    /* Device scratch memory encode and decode_add need for `count` elements (the caller
     * allocates it once, cudaMalloc alignment). */
    size_t (*scratch_bytes)(const double *p, size_t count);
    /* Encodes d_in[0..count) into d_msg (host->max_bytes(p, count) bytes of device memory);
     * *bytes gets the message length. ctx as for the CPU codec (a host struct). */
    terse_status_t (*encode)(const double *p, const codec_ctx_t *ctx, const float *d_in,
                             size_t count, void *d_msg, size_t *bytes, void *d_scratch,
                             void *stream);
    /* Adds the decoded message (device memory, `bytes` long) to d_out[0..count). A malformed
     * message is TERSE_ERR_MISMATCH and leaves d_out untouched, as on the CPU. */
    terse_status_t (*decode_add)(const double *p, const void *d_msg, size_t bytes, size_t count,
                                 float *d_out, void *d_scratch, void *stream);
} dcodec_ops_t;

/* The device codec of the CPU codec named `name`, or NULL when there is none. */
const dcodec_ops_t *dcodec_find(const char *name);

/* Every device codec, NULL-ended, in the order of the CPU registry. */
extern const dcodec_ops_t *const dcodec_all[];

#ifdef __cplusplus
}
#endif
#endif
