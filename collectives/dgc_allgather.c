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
 *             commit u <- u', v <- v', then u[idx] = v[idx] = 0 (momentum factor masking)
 * Other layers (1-D, or density 1), state mmt: the exact dense mean first, momentum after:
 *   exchange: g_bar = dense allreduce mean of g (reduce-scatter + allgather, rank order)
 *   decode:   mmt' = m mmt + g_bar, out = mmt'              (Nesterov: mmt' = (mmt + g_bar) m,
 *             commit mmt <- mmt'                                        out = mmt' + g_bar)
 * encode writes v' and mmt' into the workspace only, and decode commits them after everything
 * that can fail, so an abandoned call leaves the layer as it was. u' is not kept: decode
 * recomputes it from the unchanged u and g with the same operations (the same bits), which
 * saves count floats of workspace and a pass of writes.
 * Bytes per rank and call: (N-1) (4 + 8 k) sparsified, 2 (N-1)/N 4 count dense. */
#include <math.h>
#include <string.h>

#include "dgc.h"
#include "protocol.h"
#include "topk.h"


static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t floats64(size_t count) { return align64(count * sizeof(float)); }

static size_t msg_bytes(const double *prm, size_t count) { return 4 + 8 * dgc_max_selects(prm, count); }

/* Workspace, sparsified: v' | the clipping factor | one message slot per rank (msg_bytes
 * apart) | counts, displacements. Dense: mmt' | the dense protocol's workspace for count
 * floats. */
static size_t dgc_workspace(const proto_shape_t *s)
{
    if (!dgc_sparsifies(s->prm, s->rows, s->cols)) {
        return floats64(s->count) + protocol_dense_floats_workspace(s->count, s->nranks);
    }
    return floats64(s->count) + 64 + align64((size_t)s->nranks * msg_bytes(s->prm, s->count)) +
           align64(2 * (size_t)s->nranks * sizeof(size_t));
}

static size_t dgc_state_floats(const proto_shape_t *s)
{
    return dgc_sparsifies(s->prm, s->rows, s->cols) ? 2 * s->count : s->count;
}

static float *ws_next_v(const proto_call_t *c) { return c->ws; }
static float *ws_clip_coef(const proto_call_t *c)
{
    return (float *)((unsigned char *)c->ws + floats64(c->count));
}
static unsigned char *slot(const proto_call_t *c, int r)
{
    return (unsigned char *)c->ws + floats64(c->count) + 64 + (size_t)r * msg_bytes(c->prm, c->count);
}
static size_t *slot_counts(const proto_call_t *c)
{
    return (size_t *)(slot(c, 0) + align64((size_t)c->tp->size * msg_bytes(c->prm, c->count)));
}

/* u' = m u + G (Nesterov: (u + G) m), G = g coef: the one expression encode and decode use. */
static inline float next_u(float u, float g, float coef, float m, int nesterov)
{
    const float G = g * coef; /* exact when coef is 1 */
    return nesterov ? (u + G) * m : m * u + G;
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
    const float *restrict g = c->in, *restrict u = c->state, *restrict v = c->state + n;
    float *restrict v1 = ws_next_v(c);
    const float m = (float)c->prm[DGC_MOMENTUM];
    const float coef = clip_coef(c->prm, g, n, c->tp->size);
    *ws_clip_coef(c) = coef;
    if (c->prm[DGC_NESTEROV] != 0) {
        for (size_t i = 0; i < n; i++) {
            const float u1 = next_u(u[i], g[i], coef, m, 1);
            v1[i] = (v[i] + u1) + g[i] * coef;
        }
    } else {
        for (size_t i = 0; i < n; i++) v1[i] = v[i] + next_u(u[i], g[i], coef, m, 0);
    }
    const dgc_plan_t plan = dgc_plan(n, dgc_density(c->prm, c->step), c->prm[DGC_SAMPLE]);
    unsigned char *mine = slot(c, c->tp->rank);
    c->wire_bytes = dgc_select(&plan, protocol_stream_key(0, c, c->tp->rank, 0), v1, mine, c->scratch, NULL);
    if (c->delta) {
        memset(c->delta, 0, n * sizeof(float));
        TERSE_CHECK(sparse_decode_add(mine, c->wire_bytes, n, c->delta));
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
    memset(c->out, 0, count * sizeof(float));
    for (int r = 0; r < n; r++) {
        if (sparse_decode_add(slot(c, r), counts[r], count, c->out) != TERSE_OK) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
    }
    if (c->mean)
        for (size_t j = 0; j < count; j++) c->out[j] /= (float)n;

    /* commit: u <- u' recomputed, v <- v'; then momentum factor masking, what was sent
     * starts over in velocity and momentum */
    float *restrict u = c->state, *restrict v = c->state + count;
    const float *restrict g = c->in;
    const float m = (float)c->prm[DGC_MOMENTUM], coef = *ws_clip_coef(c);
    const int nesterov = c->prm[DGC_NESTEROV] != 0;
    for (size_t i = 0; i < count; i++) u[i] = next_u(u[i], g[i], coef, m, nesterov);
    memcpy(v, ws_next_v(c), count * sizeof(float));
    const unsigned char *mine = slot(c, c->tp->rank);
    uint32_t k;
    memcpy(&k, mine, 4);
    const uint32_t *idx = (const uint32_t *)(mine + 4);
    for (uint32_t j = 0; j < k; j++) {
        u[idx[j]] = 0.0f;
        v[idx[j]] = 0.0f;
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
    return protocol_dense_floats(c, c->in, c->out, c->count, c->mean,
                                 (unsigned char *)c->ws + floats64(c->count));
}

static terse_status_t dense_decode(proto_call_t *c)
{
    const size_t n = c->count;
    if (n == 0) return TERSE_OK;
    const float *restrict mmt = c->state;
    float *restrict next = c->ws, *restrict out = c->out;
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
    memcpy(c->state, next, n * sizeof(float));
    return TERSE_OK;
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

const protocol_ops_t protocol_dgc = {
    sizeof(protocol_ops_t), "dgc_allgather", dgc_workspace, dgc_state_floats, dgc_encode,
    dgc_exchange, dgc_decode,
};
