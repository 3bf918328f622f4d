/* Sparse aggregation by allgather (topk): every rank's whole message reaches every rank, and
 * each rank scatter-adds them into a zeroed vector in rank order, so that all ranks compute
 * the same sums in the same order (bitwise identical results).
 *
 * 3 ranks with messages m0 m1 m2 (sizes announced in the engine's header exchange):
 *   round 1 (allgatherv): every rank receives m0 m1 m2
 *   decode:               out = 0; out += D(m0); out += D(m1); out += D(m2); out /= 3
 * Bytes per rank and call: (n-1) * |m_rank|; this grows with the rank count, unlike a
 * reduce, and is why dense wins for large n * density.
 *
 * Besides the zeros of out, the work is in proportion to the messages: decode divides only
 * the entries they touch (collectives/sparse_sum.c) and checks every message before it
 * writes, so it may write the caller's buffer (PROTO_OUT_IN_PLACE); and instead of the
 * decoded delta = C(p), encode can leave p - C(p) in p itself by subtracting its own message
 * (PROTO_RESIDUAL_IN_PLACE): error feedback's next state, with no pass over the layer. The
 * message also tells whether p holds a NaN or an infinity (PROTO_SCANS_INPUT): they outrank
 * every finite magnitude, so one is in p exactly when one is in the message. */
#include <string.h>

#include "protocol.h"
#include "sparse_sum.h"
#include "topk.h"

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

/* Workspace: one message slot per rank (max_bytes apart) | counts, displacements | the
 * bitmap of sparse_sum. */
static size_t sparse_workspace(const proto_shape_t *s)
{
    size_t mb = s->codec->max_bytes(s->prm, s->count);
    return align64((size_t)s->nranks * mb) + align64(2 * (size_t)s->nranks * sizeof(size_t)) +
           sparse_sum_bitmap_bytes(s->count);
}

static size_t *sparse_counts(const proto_call_t *c)
{
    size_t mb = c->codec->max_bytes(c->prm, c->count);
    return (size_t *)((unsigned char *)c->ws + align64((size_t)c->tp->size * mb));
}

static uint64_t *sparse_bitmap(const proto_call_t *c)
{
    return (uint64_t *)((unsigned char *)sparse_counts(c) + align64(2 * (size_t)c->tp->size * sizeof(size_t)));
}

/* This rank's message is encoded straight into its slot of the receive area, so the
 * allgatherv runs in place. Slots are max_bytes apart. */
static unsigned char *slot(const proto_call_t *c, int r)
{
    return (unsigned char *)c->ws + (size_t)r * c->codec->max_bytes(c->prm, c->count);
}

/* Whether `in` holds a NaN or an infinity, from the message: topk keeps the k largest
 * magnitudes, and a NaN or infinity outranks every finite value (topk_select), so with k >= 1
 * the message holds one exactly when `in` does. k = 0 (count 0) has nothing to look at. */
static int has_nonfinite(const proto_call_t *c, const unsigned char *msg)
{
    const float *val;
    const uint32_t k = sparse_view(msg, NULL, &val);
    return k == 0 ? protocol_has_nonfinite(c->in, c->count) : protocol_has_nonfinite(val, k);
}

static terse_status_t sparse_encode(proto_call_t *c)
{
    unsigned char *mine = slot(c, c->tp->rank);
    const codec_ctx_t ctx = {protocol_stream_key(0, c, c->tp->rank, 0), 0, c->rows, c->cols};
    c->wire_bytes = c->codec->encode(c->prm, &ctx, c->in, c->count, mine, c->scratch);
    c->nonfinite = has_nonfinite(c, mine);
    if (c->residual) sparse_subtract(mine, c->residual);
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
    const int bad = sparse_sum(slot(c, 0), c->codec->max_bytes(c->prm, c->count), sparse_counts(c), c->tp->size,
                               c->count, c->mean, sparse_bitmap(c), c->out);
    if (bad < 0) return TERSE_OK;
    c->bad_rank = bad;
    return TERSE_ERR_MISMATCH;
}

static unsigned sparse_shortcuts(const codec_ops_t *codec, const double *prm, size_t rows, size_t cols)
{
    (void)codec, (void)prm, (void)rows, (void)cols;
    return PROTO_OUT_IN_PLACE | PROTO_RESIDUAL_IN_PLACE | PROTO_SCANS_INPUT;
}

const protocol_ops_t protocol_sparse_allgather = {
    sizeof(protocol_ops_t), "sparse_allgather", sparse_workspace, NULL, sparse_encode, sparse_exchange,
    sparse_decode, 0, sparse_shortcuts,
};
