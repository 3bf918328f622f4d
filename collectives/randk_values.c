/* RandK aggregation: every rank keeps the same k coordinates (a stream shared by all ranks,
 * keyed by seed, layer and call), so the k values are summed by the dense protocol like any
 * dense vector of k floats, and the indices never travel.
 *
 *   encode:   message = key | k | v[chosen] (scaled by d/k when unbiased)
 *   exchange: dense reduce-scatter + allgather of the k values (fp32, rank-order sums)
 *   decode:   out = 0; out[chosen] = the mean (or sum) of the values
 * encode leaves the chosen indices as a bitmap in the codec's scratch (randk_encode), and
 * nothing else writes there before decode, so delta and out are scattered from it: the
 * indices are drawn once per call.
 * Bytes per rank and call: 2 (n-1)/n * 4k, as a ring allreduce of k floats. */
#include <string.h>

#include "protocol.h"
#include "randk.h"

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

/* workspace: my message | the k aggregated values | the dense workspace for k floats */
static size_t randk_workspace(const proto_shape_t *s)
{
    size_t k = randk_k(s->prm, s->count), mb = s->codec->max_bytes(s->prm, s->count);
    return align64(mb) + align64(4 * k) + protocol_dense_floats_workspace(k, s->nranks);
}

static unsigned char *msg_mine(const proto_call_t *c) { return c->ws; }
static float *values_agg(const proto_call_t *c)
{
    return (float *)((unsigned char *)c->ws + align64(c->codec->max_bytes(c->prm, c->count)));
}

static terse_status_t randk_encode(proto_call_t *c)
{
    const codec_ctx_t ctx = {protocol_stream_key(0, c, -1, 0), 0, c->rows, c->cols};
    size_t bytes = c->codec->encode(c->prm, &ctx, c->in, c->count, msg_mine(c), c->scratch);
    c->wire_bytes = bytes - RANDK_HEADER; /* the values are all that travels */
    if (c->delta) {
        memset(c->delta, 0, c->count * sizeof(float));
        randk_scatter_add(c->scratch, c->count, (const float *)(msg_mine(c) + RANDK_HEADER), c->delta);
    }
    return TERSE_OK;
}

static terse_status_t randk_exchange(proto_call_t *c)
{
    size_t k = randk_k(c->prm, c->count);
    return protocol_dense_floats(c, (const float *)(msg_mine(c) + RANDK_HEADER), values_agg(c), k,
                                 c->mean, (unsigned char *)values_agg(c) + align64(4 * k));
}

static terse_status_t randk_decode(proto_call_t *c)
{
    memset(c->out, 0, c->count * sizeof(float));
    randk_scatter_add(c->scratch, c->count, values_agg(c), c->out);
    return TERSE_OK;
}

const protocol_ops_t protocol_randk = {
    sizeof(protocol_ops_t), "randk_values", randk_workspace, NULL, randk_encode, randk_exchange,
    randk_decode, 0, NULL,
};
