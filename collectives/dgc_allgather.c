/* DGC aggregation (ALGORITHMS.md §6.2): momentum correction and factor masking around the
 * sampled-threshold selection of compressors/dgc.c, then an allgather of every rank's sparse
 * message. The codec keeps its own memory, so the layer's feedback is none: c->in is the raw
 * gradient g, and c->out the step direction (the caller's optimizer must not apply momentum
 * again).
 *
 * Sparsified layer (rows > 1, cols > 1, density < 1), state u (momentum) | v (velocity):
 *   encode:   G = g * min(1, clip N^-1/2 / ||g||)           (clip set)
 *             u' = m u + G;  v' = v + u'                    (Nesterov: u' = (u + G) m;
 *                                                                      v' = v + u' + G)
 *             message = select(v', density of this step)
 *   round 1 (allgatherv): every rank receives every rank's message m0 m1 m2 ...
 *   decode:   out = 0; out[idx_r] += val_r for r = 0, 1, ... in rank order; out /= N;
 *             u' [idx] = v' [idx] = 0 (momentum factor masking); u, v <- u', v'
 * Other layers (1-D, or density 1), state mmt: the exact dense mean first, momentum after:
 *   exchange: g_bar = dense allreduce mean of g (reduce-scatter + allgather, rank order)
 *   decode:   mmt' = m mmt + g_bar, out = mmt'              (Nesterov: mmt' = (mmt + g_bar) m,
 *             mmt <- mmt'                                               out = mmt' + g_bar)
 *
 * The next state is written to the engine's second state buffer (swaps_state), which the
 * engine makes the state in force once the call has succeeded: the state in force never
 * changes during a call, so an abandoned call leaves the layer as it was, and the commit
 * costs no pass. On a sparsified layer the whole call is then one pass over u, v and g
 * (writing u' and v', the first count of the selection fused in) and one over out: decode
 * checks every message before it writes anything, divides only the entries the messages
 * touch, and reads nothing of c->in, so it writes the caller's buffer directly
 * (PROTO_OUT_IN_PLACE); the pass over g also looks for NaN and infinity
 * (PROTO_SCANS_INPUT), so the engine does not scan g itself.
 * Bytes per rank and call: (N-1) (4 + 8 k) sparsified, 2 (N-1)/N 4 count dense. */
#include <math.h>
#include <string.h>

#include "dgc.h"
#include "protocol.h"
#include "sparse_sum.h"
#include "topk.h"


static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t msg_bytes(const double *prm, size_t count) { return 4 + 8 * dgc_max_selects(prm, count); }

/* Workspace, sparsified: the bitmap | one message slot per rank (msg_bytes apart) | counts,
 * displacements. Dense: the dense protocol's workspace for count floats. */
static size_t dgc_workspace(const proto_shape_t *s)
{
    if (!dgc_sparsifies(s->prm, s->rows, s->cols)) return protocol_dense_floats_workspace(s->count, s->nranks);
    return sparse_sum_bitmap_bytes(s->count) + align64((size_t)s->nranks * msg_bytes(s->prm, s->count)) +
           align64(2 * (size_t)s->nranks * sizeof(size_t));
}

static size_t dgc_state_floats(const proto_shape_t *s)
{
    return dgc_sparsifies(s->prm, s->rows, s->cols) ? 2 * s->count : s->count;
}

static uint64_t *ws_bitmap(const proto_call_t *c) { return c->ws; }
static unsigned char *slot(const proto_call_t *c, int r)
{
    return (unsigned char *)c->ws + sparse_sum_bitmap_bytes(c->count) + (size_t)r * msg_bytes(c->prm, c->count);
}
static size_t *slot_counts(const proto_call_t *c)
{
    return (size_t *)(slot(c, 0) + align64((size_t)c->tp->size * msg_bytes(c->prm, c->count)));
}

/* The local clipping factor: min(1, clip N^-1/2 / ||g||_2), with the norm summed in double
 * in index order; 1 when clip is unset or the norm is within the bound. */
static float clip_coef(const double *prm, const float *g, size_t n, int nranks)
{
    if (isnan(prm[DGC_CLIP])) return 1.0f;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * (double)g[i];
    const double norm = sqrt(ss), bound = prm[DGC_CLIP] / sqrt((double)nranks);
    return norm > bound ? (float)(bound / norm) : 1.0f;
}

static terse_status_t sparse_encode(proto_call_t *c)
{
    const size_t n = c->count;
    const dgc_momentum_t mo = {
        c->state, c->state + n, c->in, c->state_next, c->state_next + n,
        clip_coef(c->prm, c->in, n, c->tp->size), (float)c->prm[DGC_MOMENTUM], c->prm[DGC_NESTEROV] != 0,
    };
    const dgc_plan_t plan = dgc_plan(n, dgc_density(c->prm, c->step), c->prm[DGC_SAMPLE]);
    unsigned char *mine = slot(c, c->tp->rank);
    c->wire_bytes = dgc_momentum_select(&plan, protocol_stream_key(0, c, c->tp->rank, 0), &mo, mine,
                                        c->scratch, NULL, &c->nonfinite);
    if (c->delta) {
        memset(c->delta, 0, n * sizeof(float));
        sparse_add(mine, c->delta);
    }
    return TERSE_OK;
}

static terse_status_t sparse_exchange(proto_call_t *c)
{
    const int n = c->tp->size;
    const size_t mb = msg_bytes(c->prm, c->count);
    size_t *counts = slot_counts(c), *displs = counts + n;
    for (int r = 0; r < n; r++) {
        if (c->peer_bytes[r] > mb) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
        counts[r] = (size_t)c->peer_bytes[r];
        displs[r] = (size_t)r * mb;
    }
    return c->tp->ops->allgatherv(c->tp, NULL, slot(c, 0), counts, displs);
}

static terse_status_t sparse_decode(proto_call_t *c)
{
    const int n = c->tp->size;
    const size_t count = c->count;
    const size_t *counts = slot_counts(c);
    /* every message checked before anything is written: out may be the caller's buffer */
    const int bad = sparse_sum(slot(c, 0), msg_bytes(c->prm, count), counts, n, count, c->mean, ws_bitmap(c), c->out);
    if (bad >= 0) {
        c->bad_rank = bad;
        return TERSE_ERR_MISMATCH;
    }

    /* momentum factor masking in the next state: what was sent starts over in velocity and
     * momentum; the engine puts the next state in force after this */
    float *restrict u1 = c->state_next, *restrict v1 = c->state_next + count;
    const uint32_t *idx;
    const uint32_t k = sparse_view(slot(c, c->tp->rank), &idx, NULL);
    for (uint32_t j = 0; j < k; j++) {
        u1[idx[j]] = 0.0f;
        v1[idx[j]] = 0.0f;
    }
    return TERSE_OK;
}

static terse_status_t dense_encode(proto_call_t *c)
{
    c->wire_bytes = c->count * sizeof(float);
    if (c->delta && c->count) memcpy(c->delta, c->in, c->count * sizeof(float));
    return TERSE_OK;
}

/* g_bar into c->out by the dense protocol as a sub-call on the same transport. */
static terse_status_t dense_exchange(proto_call_t *c)
{
    return protocol_dense_floats(c, c->in, c->out, c->count, c->mean, c->ws);
}

static terse_status_t dense_decode(proto_call_t *c)
{
    const size_t n = c->count;
    if (n == 0) return TERSE_OK;
    const float *restrict mmt = c->state;
    float *restrict next = c->state_next, *restrict out = c->out;
    const float m = (float)c->prm[DGC_MOMENTUM];
    if (c->prm[DGC_NESTEROV] != 0) {
        for (size_t i = 0; i < n; i++) {
            next[i] = (mmt[i] + out[i]) * m;
            out[i] = next[i] + out[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            next[i] = m * mmt[i] + out[i];
            out[i] = next[i];
        }
    }
    return TERSE_OK; /* the engine puts next in force */
}

static terse_status_t dgc_encode(proto_call_t *c)
{
    return dgc_sparsifies(c->prm, c->rows, c->cols) ? sparse_encode(c) : dense_encode(c);
}

static terse_status_t dgc_exchange(proto_call_t *c)
{
    return dgc_sparsifies(c->prm, c->rows, c->cols) ? sparse_exchange(c) : dense_exchange(c);
}

static terse_status_t dgc_decode(proto_call_t *c)
{
    return dgc_sparsifies(c->prm, c->rows, c->cols) ? sparse_decode(c) : dense_decode(c);
}

/* The sparsified path reads all of g in its one pass and writes out in place; the dense one
 * hands both to the dense protocol, which does neither. */
static unsigned dgc_shortcuts(const codec_ops_t *codec, const double *prm, size_t rows, size_t cols)
{
    (void)codec;
    return dgc_sparsifies(prm, rows, cols) ? PROTO_OUT_IN_PLACE | PROTO_SCANS_INPUT : 0;
}

const protocol_ops_t protocol_dgc = {
    sizeof(protocol_ops_t), "dgc_allgather", dgc_workspace, dgc_state_floats, dgc_encode,
    dgc_exchange, dgc_decode, 1, dgc_shortcuts,
};
