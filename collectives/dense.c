/* Dense allreduce of an elementwise codec (fp32, fp16, bf16), as reduce-scatter + allgather
 * built from alltoallv, so that each element is summed exactly once, by one owner, in rank
 * order — every rank then receives the owner's bits, and the result equals a serial
 * ((x0 + x1) + x2) + ... reference bit for bit.
 *
 * 3 ranks, vector split in chunks c0 c1 c2 (chunk r owned by rank r):
 *   encode:              every rank casts its whole vector to the wire type
 *   round 1 (alltoallv): rank r receives every rank's chunk c_r
 *   owner step:          rank r sums the decoded c_r in rank order (fp32), divides by n for
 *                        the mean, and casts the result to the wire type
 *   round 2 (allgatherv): every rank receives every owner's chunk; all decode the same bytes
 * Wire bytes per rank and call: 2 (n-1)/n of the cast vector, as a ring allreduce. */
#include <string.h>

#include "protocol.h"

typedef struct {
    unsigned char *send;   /* count * eb: this rank's encoded vector                     */
    unsigned char *recv;   /* n * chunk_max * eb: every rank's copy of my chunk           */
    unsigned char *gath;   /* count * eb: every owner's encoded result                    */
    float *acc;            /* chunk_max: the owner's fp32 sum                              */
    size_t *sc, *sd, *rc, *rd; /* n each: byte counts and displacements                   */
} dense_ws_t;

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t dense_workspace(const codec_ops_t *codec, const double *prm, size_t count, int n)
{
    (void)prm;
    size_t eb = codec->elem_bytes, chunk = count / (size_t)n + 1;
    return align64(count * eb) * 2 + align64((size_t)n * chunk * eb) + align64(chunk * 4) +
           align64(4 * (size_t)n * sizeof(size_t));
}

static dense_ws_t dense_layout(const proto_call_t *c)
{
    int n = c->tp->size;
    size_t eb = c->codec->elem_bytes, chunk = c->count / (size_t)n + 1;
    unsigned char *p = c->ws;
    dense_ws_t w;
    w.send = p; p += align64(c->count * eb);
    w.gath = p; p += align64(c->count * eb);
    w.recv = p; p += align64((size_t)n * chunk * eb);
    w.acc = (float *)p; p += align64(chunk * 4);
    w.sc = (size_t *)p; w.sd = w.sc + n; w.rc = w.sd + n; w.rd = w.rc + n;
    return w;
}

static terse_status_t dense_encode(proto_call_t *c)
{
    dense_ws_t w = dense_layout(c);
    c->wire_bytes = c->codec->encode(c->prm, c->in, c->count, w.send, c->scratch);
    if (c->delta) {
        memset(c->delta, 0, c->count * sizeof(float));
        TERSE_CHECK(c->codec->decode_add(c->prm, w.send, c->wire_bytes, c->count, c->delta));
    }
    return TERSE_OK;
}

static terse_status_t dense_exchange(proto_call_t *c)
{
    dense_ws_t w = dense_layout(c);
    transport_t *tp = c->tp;
    int n = tp->size, me = tp->rank;
    size_t eb = c->codec->elem_bytes;
    size_t mb = protocol_chunk_begin(c->count, n, me), me_len = protocol_chunk_begin(c->count, n, me + 1) - mb;
    for (int r = 0; r < n; r++) {
        size_t b = protocol_chunk_begin(c->count, n, r), e = protocol_chunk_begin(c->count, n, r + 1);
        w.sc[r] = (e - b) * eb;
        w.sd[r] = b * eb;
        w.rc[r] = me_len * eb;
        w.rd[r] = (size_t)r * me_len * eb;
    }
    TERSE_CHECK(tp->ops->alltoallv(tp, w.send, w.sc, w.sd, w.recv, w.rc, w.rd));

    memset(w.acc, 0, me_len * sizeof(float));
    for (int r = 0; r < n; r++)
        TERSE_CHECK(c->codec->decode_add(c->prm, w.recv + w.rd[r], w.rc[r], me_len, w.acc));
    if (c->mean)
        for (size_t j = 0; j < me_len; j++) w.acc[j] /= (float)n;
    c->codec->encode(c->prm, w.acc, me_len, w.gath + mb * eb, c->scratch);

    /* round 2 reuses the send counts: chunk r is sc[r] bytes at sd[r] */
    return tp->ops->allgatherv(tp, NULL, w.gath, w.sc, w.sd);
}

static terse_status_t dense_decode(proto_call_t *c)
{
    dense_ws_t w = dense_layout(c);
    memset(c->out, 0, c->count * sizeof(float));
    return c->codec->decode_add(c->prm, w.gath, c->count * c->codec->elem_bytes, c->count, c->out);
}

const protocol_ops_t protocol_dense = {
    sizeof(protocol_ops_t), "dense", dense_workspace, dense_encode, dense_exchange, dense_decode,
};

const protocol_ops_t *protocol_for(const codec_ops_t *codec)
{
    return codec->protocol == CODEC_PROTO_DENSE ? &protocol_dense : &protocol_sparse_allgather;
}
