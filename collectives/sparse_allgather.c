/* Sparse aggregation by allgather: every rank's whole message reaches every rank, and each
 * rank scatter-adds them into a zeroed vector in rank order, so that all ranks compute the
 * same sums in the same order (bitwise identical results).
 *
 * 3 ranks with messages m0 m1 m2 (sizes announced in the engine's header exchange):
 *   round 1 (allgatherv): every rank receives m0 m1 m2
 *   decode:               out = 0; out += D(m0); out += D(m1); out += D(m2); out /= 3
 * Bytes per rank and call: (n-1) * |m_rank|; this grows with the rank count, unlike a
 * reduce, and is why dense wins for large n * density. */
#include <string.h>

#include "protocol.h"

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t sparse_workspace(const proto_shape_t *s)
{
    size_t mb = s->codec->max_bytes(s->prm, s->count);
    return align64((size_t)s->nranks * mb) + align64(2 * (size_t)s->nranks * sizeof(size_t));
}

static size_t *sparse_counts(const proto_call_t *c)
{
    size_t mb = c->codec->max_bytes(c->prm, c->count);
    return (size_t *)((unsigned char *)c->ws + align64((size_t)c->tp->size * mb));
}

/* This rank's message is encoded straight into its slot of the receive area, so the
 * allgatherv runs in place. Slots are max_bytes apart. */
static unsigned char *slot(const proto_call_t *c, int r)
{
    return (unsigned char *)c->ws + (size_t)r * c->codec->max_bytes(c->prm, c->count);
}

static terse_status_t sparse_encode(proto_call_t *c)
{
    unsigned char *mine = slot(c, c->tp->rank);
    const codec_ctx_t ctx = {protocol_stream_key(0, c, c->tp->rank, 0), 0, c->rows, c->cols};
    c->wire_bytes = c->codec->encode(c->prm, &ctx, c->in, c->count, mine, c->scratch);
    if (c->delta) {
        memset(c->delta, 0, c->count * sizeof(float));
        TERSE_CHECK(c->codec->decode_add(c->prm, mine, c->wire_bytes, c->count, c->delta, c->scratch));
    }
    return TERSE_OK;
}

static terse_status_t sparse_exchange(proto_call_t *c)
{
    int n = c->tp->size;
    size_t *counts = sparse_counts(c), *displs = counts + n;
    size_t mb = c->codec->max_bytes(c->prm, c->count);
    for (int r = 0; r < n; r++) {
        if (c->peer_bytes[r] > mb) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
        counts[r] = (size_t)c->peer_bytes[r];
        displs[r] = (size_t)r * mb;
    }
    return c->tp->ops->allgatherv(c->tp, NULL, c->ws, counts, displs);
}

static terse_status_t sparse_decode(proto_call_t *c)
{
    int n = c->tp->size;
    const size_t *counts = sparse_counts(c);
    memset(c->out, 0, c->count * sizeof(float));
    for (int r = 0; r < n; r++) {
        if (c->codec->decode_add(c->prm, slot(c, r), counts[r], c->count, c->out, c->scratch) != TERSE_OK) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
    }
    if (c->mean)
        for (size_t j = 0; j < c->count; j++) c->out[j] /= (float)n;
    return TERSE_OK;
}

const protocol_ops_t protocol_sparse_allgather = {
    sizeof(protocol_ops_t), "sparse_allgather", sparse_workspace, NULL, sparse_encode, sparse_exchange,
    sparse_decode, 0, NULL,
};
