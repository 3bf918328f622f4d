/* Aggregation protocols: how the messages of one codec travel and combine so that every
 * rank ends with the same aggregate. A call runs in three phases, which the engine times
 * separately and between which it checks that the ranks agree:
 *   encode   - this rank's input p -> its message (and, if asked, delta = C(p) decoded)
 *   exchange - the transport moves messages (and owners may combine chunks)
 *   decode   - messages -> the aggregate `out`, identical bits on every rank
 * The workspace is sized once per layer by workspace_bytes, so a call never allocates. */
#ifndef TERSE_PROTOCOL_H
#define TERSE_PROTOCOL_H

#include "codec.h"
#include "error.h"
#include "transport.h"

typedef struct {
    transport_t *tp;
    const codec_ops_t *codec;
    const double *prm;       /* the codec's parameters                                      */
    size_t count;            /* elements                                                    */
    const float *in;         /* p: this rank's message input                                */
    float *delta;            /* out: C(p) as this rank's own message decodes, or NULL       */
    float *out;              /* out: the aggregate (mean or sum of every rank's C(p_i))     */
    int mean;                /* 1: divide the sum by the rank count                         */
    void *ws;                /* workspace_bytes bytes                                       */
    void *scratch;           /* the codec's scratch_bytes bytes                             */
    size_t wire_bytes;       /* set by encode: this rank's message                          */
    const uint64_t *peer_bytes; /* set by the engine before exchange: every rank's wire_bytes */
    int bad_rank;            /* set on a decode failure: the rank whose message was invalid */
} proto_call_t;

typedef struct protocol_ops {
    size_t size;             /* sizeof(protocol_ops_t): the version of this table */
    const char *name;
    size_t (*workspace_bytes)(const codec_ops_t *codec, const double *prm, size_t count,
                              int nranks);
    terse_status_t (*encode)(proto_call_t *call);
    terse_status_t (*exchange)(proto_call_t *call);
    terse_status_t (*decode)(proto_call_t *call);
} protocol_ops_t;

extern const protocol_ops_t protocol_dense;
extern const protocol_ops_t protocol_sparse_allgather;

/* The protocol a codec's messages use. */
const protocol_ops_t *protocol_for(const codec_ops_t *codec);

/* The [begin, end) elements of chunk r when count elements are split over n ranks, the
 * first count % n chunks one longer. */
static inline size_t protocol_chunk_begin(size_t count, int n, int r)
{
    size_t q = count / (size_t)n, rem = count % (size_t)n;
    return (size_t)r * q + ((size_t)r < rem ? (size_t)r : rem);
}

#endif
