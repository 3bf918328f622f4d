/* 1-bit Adam's compressed allreduce (ALGORITHMS.md §7; DeepSpeed's compressed_allreduce),
 * for the onebit codec. W ranks, d elements, padded to D' (onebit_padded: a multiple of
 * W * divider, divider = 8W / gcd(W, 8)), chunk r = [r L, (r+1) L) with L = D'/W, a
 * multiple of 8 entries, so every chunk is whole bytes of signs.
 *
 * 3 ranks, padded vector split in chunks c0 c1 c2 (chunk r owned by rank r):
 *   phase 0 (encode):     b = [p, tail error]; s_w = scale(b over D'); message to rank q:
 *                         s_w | the signs of b in c_q
 *   phase 1 (alltoallv):  rank r receives every rank's s_w and its signs of c_r
 *   server step:          c = sum_j (s_w[j] / W) sgn_j + server error (rank order);
 *                         s_s = scale(c over L); server error' = c - s_s sgn(c)
 *   phase 2 (allgatherv): every rank receives every rank's s_s | signs of c;
 *                         out[c_r] = s_s[r] sgn_r, truncated to d (times W for reduce=sum)
 *
 * The worker error of the first d entries is the layer's feedback (feedback=ef: p = g + e,
 * and delta = s_w sgn(p) makes it store e = p - delta, DeepSpeed's worker_error there). The
 * protocol keeps the rest as its state, D' - d + L floats:
 *   [0, D' - d)        the worker error of the padding tail (stays 0 without feedback:
 *                      a layer whose feedback needs no delta keeps no worker error at all)
 *   [D' - d, D' - d + L) the server error of this rank's chunk
 * so that onebit + ef runs DeepSpeed's compressed_allreduce for any size. Both new errors
 * are computed into the workspace and committed at the end of decode.
 *
 * Float arithmetic, in this order on every rank (the tests' references follow it):
 *   scales:   onebit_norm_acc (double, 8 lanes) over p[0..d), plus the same over the tail,
 *             then onebit_scale_of;
 *   server:   w_j = s_w[j] * (float)(1/W) (DeepSpeed multiplies the scales by 1/W first);
 *             acc = +-w_0, acc += +-w_1, ..., +-w_{W-1}; c = acc + server error;
 *   reduce=sum: the output is +-(s_s[r] * (float)W).
 * wire_bytes (this rank's message, counted once) is D'/8 + 4: the signs and one scale; the
 * scale travels in front of each of the W chunk messages, 4 (W - 1) bytes more in all, to
 * save a collective. */
#include <float.h>
#include <string.h>

#include "onebit.h"
#include "protocol.h"

typedef struct {
    size_t d, dp, len;     /* elements, padded length D', chunk length L = D'/W             */
    size_t slot;           /* bytes of one chunk message: 4 + L/8                           */
    unsigned char *send;   /* W slots: s_w | signs of chunk q, for rank q                   */
    unsigned char *recv;   /* W slots: rank j's s_w | signs of my chunk                     */
    unsigned char *gath;   /* W slots: rank r's s_s | signs of its server chunk             */
    float *server;         /* L: c, then the new server error                               */
    float *tail;           /* D' - d: the new worker error of the padding tail              */
    size_t *counts, *displs; /* W each: slot bytes and offsets                              */
} onebit_ws_t;

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

static int scale_kind(const double *prm) { return prm ? (int)prm[ONEBIT_SCALE] : ONEBIT_SCALE_L2; }

static size_t onebit_workspace(const proto_shape_t *s)
{
    size_t w = (size_t)s->nranks, dp = onebit_padded(s->count, s->nranks), len = dp / w;
    size_t slot = 4 + len / 8;
    return 3 * align64(w * slot) + align64(len * sizeof(float)) +
           align64((dp - s->count) * sizeof(float)) + align64(2 * w * sizeof(size_t));
}

static size_t onebit_state(const proto_shape_t *s)
{
    size_t dp = onebit_padded(s->count, s->nranks);
    return dp - s->count + dp / (size_t)s->nranks;
}

static onebit_ws_t onebit_layout(const proto_call_t *c)
{
    size_t w = (size_t)c->tp->size;
    onebit_ws_t ws;
    ws.d = c->count;
    ws.dp = onebit_padded(c->count, c->tp->size);
    ws.len = ws.dp / w;
    ws.slot = 4 + ws.len / 8;
    unsigned char *p = c->ws;
    ws.send = p; p += align64(w * ws.slot);
    ws.recv = p; p += align64(w * ws.slot);
    ws.gath = p; p += align64(w * ws.slot);
    ws.server = (float *)p; p += align64(ws.len * sizeof(float));
    ws.tail = (float *)p; p += align64((ws.dp - ws.d) * sizeof(float));
    ws.counts = (size_t *)p;
    ws.displs = ws.counts + w;
    for (size_t r = 0; r < w; r++) {
        ws.counts[r] = ws.slot;
        ws.displs[r] = r * ws.slot;
    }
    return ws;
}

/* The worker error of the tail in the state, or NULL when the layer keeps none. */
static const float *tail_error(const proto_call_t *c) { return c->delta ? c->state : NULL; }

/* Packs the signs of b[j0, j1) = [p[0..d), tail] into bits; j0 and j1 are multiples of 8.
 * A NULL tail is zeros, whose sign is +1. */
static void pack_padded(const float *p, size_t d, const float *tail, size_t j0, size_t j1,
                        unsigned char *bits)
{
    size_t j = j0;
    size_t whole = d / 8 * 8 < j1 ? d / 8 * 8 : j1;      /* bytes entirely in p */
    if (j < whole) {
        onebit_pack(p + j, whole - j, bits);
        bits += (whole - j) / 8;
        j = whole;
    }
    for (; j < j1 && j < d; j += 8) {                     /* the byte across d */
        unsigned b = 0;
        for (size_t k = 0; k < 8; k++) {
            float v = j + k < d ? p[j + k] : tail ? tail[j + k - d] : 0.0f;
            b |= (unsigned)(v >= 0.0f) << k;
        }
        *bits++ = (unsigned char)b;
    }
    if (j < j1) {                                         /* bytes entirely in the tail */
        if (tail)
            onebit_pack(tail + (j - d), j1 - j, bits);
        else
            memset(bits, 0xff, (j1 - j) / 8);
    }
}

static terse_status_t onebit_encode(proto_call_t *c)
{
    onebit_ws_t ws = onebit_layout(c);
    const int kind = scale_kind(c->prm);
    const size_t w = (size_t)c->tp->size, ntail = ws.dp - ws.d;
    const float *tail = tail_error(c);
    double acc = onebit_norm_acc(kind, c->in, ws.d);
    if (tail) acc += onebit_norm_acc(kind, tail, ntail);
    const float sw = onebit_scale_of(kind, acc, ws.dp);

    for (size_t q = 0; q < w; q++) {
        unsigned char *slot = ws.send + q * ws.slot;
        memcpy(slot, &sw, sizeof sw);
        pack_padded(c->in, ws.d, tail, q * ws.len, (q + 1) * ws.len, slot + 4);
    }
    if (c->delta)
        for (size_t j = 0; j < ws.d; j++) c->delta[j] = c->in[j] >= 0.0f ? sw : -sw;
    if (tail)
        for (size_t j = 0; j < ntail; j++) ws.tail[j] = tail[j] - (tail[j] >= 0.0f ? sw : -sw);
    c->wire_bytes = ws.dp / 8 + 4;
    return TERSE_OK;
}

/* A scale from a peer: a norm, so finite and not negative (NaN fails both). */
static int scale_ok(float s) { return s >= 0.0f && s <= FLT_MAX; }

static terse_status_t onebit_exchange(proto_call_t *c)
{
    onebit_ws_t ws = onebit_layout(c);
    transport_t *tp = c->tp;
    const int kind = scale_kind(c->prm);
    const int n = tp->size, me = tp->rank;
    if (c->peer_bytes)
        for (int r = 0; r < n; r++)
            if (c->peer_bytes[r] != ws.dp / 8 + 4) {
                c->bad_rank = r;
                return TERSE_ERR_MISMATCH;
            }
    TERSE_CHECK(tp->ops->alltoallv(tp, ws.send, ws.counts, ws.displs, ws.recv, ws.counts, ws.displs));

    /* server step on my chunk: rank-order sum of the scaled signs, plus the server error */
    const float inv = (float)(1.0 / (double)n);
    for (int j = 0; j < n; j++) {
        const unsigned char *slot = ws.recv + (size_t)j * ws.slot;
        float sw;
        memcpy(&sw, slot, sizeof sw);
        if (!scale_ok(sw)) {
            c->bad_rank = j;
            return TERSE_ERR_MISMATCH;
        }
        if (j == 0)
            onebit_unpack(slot + 4, ws.len, sw * inv, ws.server);
        else
            onebit_unpack_add(slot + 4, ws.len, sw * inv, ws.server);
    }
    if (ws.len) { /* an empty layer has no state at all */
        const float *server_error = c->state + (ws.dp - ws.d);
        for (size_t i = 0; i < ws.len; i++) ws.server[i] += server_error[i];
    }
    const float ss = onebit_scale_of(kind, onebit_norm_acc(kind, ws.server, ws.len), ws.len);

    unsigned char *mine = ws.gath + (size_t)me * ws.slot;
    memcpy(mine, &ss, sizeof ss);
    onebit_pack(ws.server, ws.len, mine + 4);
    for (size_t i = 0; i < ws.len; i++) ws.server[i] -= ws.server[i] >= 0.0f ? ss : -ss;

    return tp->ops->allgatherv(tp, NULL, ws.gath, ws.counts, ws.displs);
}

static terse_status_t onebit_decode(proto_call_t *c)
{
    onebit_ws_t ws = onebit_layout(c);
    const int n = c->tp->size;
    for (int r = 0; r < n; r++) {
        float ss;
        memcpy(&ss, ws.gath + (size_t)r * ws.slot, sizeof ss);
        if (!scale_ok(ss)) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
    }
    for (int r = 0; r < n; r++) {
        const unsigned char *slot = ws.gath + (size_t)r * ws.slot;
        size_t b = (size_t)r * ws.len;
        if (b >= ws.d) break;
        size_t e = b + ws.len < ws.d ? b + ws.len : ws.d;
        float ss;
        memcpy(&ss, slot, sizeof ss);
        onebit_unpack(slot + 4, e - b, c->mean ? ss : ss * (float)n, c->out + b);
    }
    /* the call can no longer fail: commit the new errors */
    if (tail_error(c)) memcpy(c->state, ws.tail, (ws.dp - ws.d) * sizeof(float));
    if (ws.len) memcpy(c->state + (ws.dp - ws.d), ws.server, ws.len * sizeof(float));
    return TERSE_OK;
}

const protocol_ops_t protocol_onebit = {
    sizeof(protocol_ops_t), "onebit_twophase", onebit_workspace, onebit_state, onebit_encode,
    onebit_exchange, onebit_decode, 0, NULL,
};
