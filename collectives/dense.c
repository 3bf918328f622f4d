/* Dense allreduce of an elementwise codec (fp32, fp16, bf16, qsgd), as reduce-scatter +
 * allgather built from alltoallv, so that each element is summed exactly once, by one owner,
 * in rank order — every rank then receives the owner's bits, and the result equals a serial
 * ((x0 + x1) + x2) + ... reference bit for bit.
 *
 * 3 ranks, vector split in chunks c0 c1 c2 (chunk r owned by rank r):
 *   encode:              every rank encodes each chunk of its vector on its own
 *   round 1 (alltoallv): rank r receives every rank's encoded chunk c_r
 *   owner step:          rank r sums the decoded c_r in rank order (fp32), divides by n for
 *                        the mean, and encodes the result again (qsgd re-quantises here)
 *   round 2 (allgatherv): every rank receives every owner's chunk; all decode the same bytes
 * Chunks are encoded separately, so a bucketed codec's buckets never straddle two owners;
 * an elementwise codec's chunk of len elements is exactly max_bytes(len) bytes.
 *
 * dense_ef (qsgd) adds owner-side error feedback, as 1-bit Adam's server error: the owner
 * encodes c = mean + e and keeps e = c - decode(encode(c)) for its next call. Without it a
 * coarse re-encoding adds a fresh error to every call's aggregate, which methods that keep
 * a running aggregate (the EF21 family: g += aggregate) would sum for ever; with it the
 * aggregates of successive calls add up to the sum of the ranks' messages minus one bounded
 * e. State: the owner's chunk, count / n + 1 floats.
 * Codec none (the float is its own encoding) skips the copies: round 1 sends straight from
 * the input, the owner sums into its chunk of the output in one pass over the received
 * chunks, and round 2 gathers in place in the output, so encode and decode move no data.
 * The output may be the input (PROTO_OUT_IN_PLACE): the owner writes its chunk after round 1
 * has sent it, and reads only the received copies. On large layers the owners also check
 * the inputs for NaN and infinity as they sum them (PROTO_SCANS_AT_OWNER), instead of the
 * engine's pass over the gradient: the sums then go to the workspace, the ranks agree on
 * the verdict in one small allgather, and round 2 runs only if every chunk was finite. The
 * bits are the general path's, except that a mean which rounds to -0 stays -0, as in the
 * serial reference (the general path's decode adds it to +0).
 * Wire bytes per rank and call: 2 (n-1)/n of the encoded vector, as a ring allreduce. */
#include <string.h>

#include "protocol.h"

typedef struct {
    unsigned char *send;   /* this rank's encoded chunks, back to back                   */
    unsigned char *recv;   /* every rank's copy of my chunk                               */
    unsigned char *gath;   /* every owner's encoded result, laid out like send            */
    float *acc;            /* chunk_max: the owner's fp32 sum                              */
    float *own;            /* codec none with a scan: the owner's sum, kept out of `out`   */
    uint64_t *verdict;     /* codec none with a scan: each owner's lowest non-finite rank  */
    size_t *sc, *sd, *rc, *rd; /* n each: byte counts and displacements                   */
} dense_ws_t;

extern const codec_ops_t codec_none_ops;

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

/* Layers from which codec none checks its inputs at the owners: 1 MiB, where the engine's
 * scan (about 40 us here) starts to cost more than the verdict's round trip. Only they get
 * the workspace for it. */
#define DENSE_SCAN_AT_OWNER_MIN ((size_t)1 << 18)

static int scans_at_owner(size_t count) { return count >= DENSE_SCAN_AT_OWNER_MIN; }

/* Codec none: messages are the floats themselves, sent from c->in and gathered in c->out. */
static int is_raw(const codec_ops_t *codec) { return codec == &codec_none_ops; }

/* Bytes of the whole vector encoded chunk by chunk, and of the longest chunk. */
static size_t dense_total(const codec_ops_t *codec, const double *prm, size_t count, int n,
                          size_t *chunk_bytes)
{
    size_t total = 0, q = count / (size_t)n;
    for (int r = 0; r < n; r++)
        total += codec->max_bytes(prm, protocol_chunk_begin(count, n, r + 1) - protocol_chunk_begin(count, n, r));
    if (chunk_bytes) *chunk_bytes = codec->max_bytes(prm, q + (count % (size_t)n != 0));
    return total;
}

static size_t dense_workspace(const proto_shape_t *s)
{
    size_t cb, total = dense_total(s->codec, s->prm, s->count, s->nranks, &cb);
    size_t chunk = s->count / (size_t)s->nranks + 1;
    const size_t scan = scans_at_owner(s->count) ? align64(chunk * 4) + align64((size_t)s->nranks * 8) : 0;
    size_t own = is_raw(s->codec) ? scan : align64(total) * 2 + align64(chunk * 4);
    return own + align64((size_t)s->nranks * cb) + align64(4 * (size_t)s->nranks * sizeof(size_t));
}

static dense_ws_t dense_layout(const proto_call_t *c)
{
    int n = c->tp->size;
    size_t cb, total = dense_total(c->codec, c->prm, c->count, n, &cb);
    size_t chunk = c->count / (size_t)n + 1;
    unsigned char *p = c->ws;
    dense_ws_t w;
    w.own = NULL;
    w.verdict = NULL;
    if (is_raw(c->codec)) {
        w.send = (unsigned char *)(uintptr_t)c->in;
        w.gath = (unsigned char *)c->out;
        w.acc = c->out + protocol_chunk_begin(c->count, n, c->tp->rank);
        if (scans_at_owner(c->count)) {
            w.own = (float *)p; p += align64(chunk * 4);
            w.verdict = (uint64_t *)p; p += align64((size_t)n * 8);
        }
    } else {
        w.send = p; p += align64(total);
        w.gath = p; p += align64(total);
        w.acc = (float *)p; p += align64(chunk * 4);
    }
    w.recv = p; p += align64((size_t)n * cb);
    w.sc = (size_t *)p; w.sd = w.sc + n; w.rc = w.sd + n; w.rd = w.rc + n;
    /* chunk r of the encoded vector: sc[r] bytes at sd[r] */
    size_t off = 0;
    for (int r = 0; r < n; r++) {
        size_t len = protocol_chunk_begin(c->count, n, r + 1) - protocol_chunk_begin(c->count, n, r);
        w.sc[r] = c->codec->max_bytes(c->prm, len);
        w.sd[r] = off;
        off += w.sc[r];
    }
    return w;
}

static terse_status_t dense_encode(proto_call_t *c)
{
    if (is_raw(c->codec)) { /* the input is the message */
        c->wire_bytes = c->count * sizeof(float);
        if (c->delta && c->count) memcpy(c->delta, c->in, c->count * sizeof(float));
        return TERSE_OK;
    }
    dense_ws_t w = dense_layout(c);
    int n = c->tp->size;
    codec_ctx_t ctx = {protocol_stream_key(0, c, c->tp->rank, 0), 0, 0, 1};
    size_t total = 0;
    for (int r = 0; r < n; r++) {
        size_t b = protocol_chunk_begin(c->count, n, r), e = protocol_chunk_begin(c->count, n, r + 1);
        ctx.offset = b;
        ctx.rows = e - b;
        total += c->codec->encode(c->prm, &ctx, c->in + b, e - b, w.send + w.sd[r], c->scratch);
    }
    c->wire_bytes = total;
    if (c->delta) {
        memset(c->delta, 0, c->count * sizeof(float));
        for (int r = 0; r < n; r++) {
            size_t b = protocol_chunk_begin(c->count, n, r), e = protocol_chunk_begin(c->count, n, r + 1);
            TERSE_CHECK(c->codec->decode_add(c->prm, w.send + w.sd[r], w.sc[r], e - b, c->delta + b, c->scratch));
        }
    }
    return TERSE_OK;
}

/* The owner step of codec none: acc = (((0 + x_0) + x_1) + ... + x_{n-1}) [/ n] for the n
 * received chunks x_r of len floats, back to back in recv; the bits of the general path's
 * memset, decode_add per rank and division, in one pass over the chunks. Blocks of acc stay
 * in the first-level cache while the ranks' chunks stream through. With scan, returns the
 * lowest rank whose chunk holds a NaN or an infinity, or n: a non-finite input makes its
 * sums non-finite, so only a block whose sums are looks at the inputs (a finite overflow
 * finds none, as the engine's scan of the input would). */
static int raw_owner_sum(const float *recv, int n, size_t len, int mean, int scan, float *restrict acc)
{
    enum { BLOCK = 2048 };
    const float div = (float)n;
    int low = n;
    for (size_t b = 0; b < len; b += BLOCK) {
        const size_t e = len - b < BLOCK ? len : b + BLOCK;
        const float *x = recv + b;
        for (size_t j = b; j < e; j++, x++) acc[j] = 0.0f + *x;
        for (int r = 1; r < n; r++) {
            x = recv + (size_t)r * len + b;
            for (size_t j = b; j < e; j++, x++) acc[j] += *x;
        }
        if (mean)
            for (size_t j = b; j < e; j++) acc[j] /= div;
        if (scan && protocol_has_nonfinite(acc + b, e - b))
            for (int r = 0; r < low; r++)
                if (protocol_has_nonfinite(recv + (size_t)r * len + b, e - b)) low = r;
    }
    return low;
}

/* Codec none's owner step and round 2. With a scan the sum goes to the workspace first, and
 * round 2 runs only once every owner has found its chunks finite. */
static terse_status_t raw_reduce_gather(proto_call_t *c, dense_ws_t *w, size_t me_len)
{
    transport_t *tp = c->tp;
    const int n = tp->size;
    float *acc = c->scan ? w->own : w->acc;
    const uint64_t low = (uint64_t)raw_owner_sum((const float *)w->recv, n, me_len, c->mean, c->scan, acc);
    if (!c->scan) return tp->ops->allgatherv(tp, NULL, w->gath, w->sc, w->sd);
    TERSE_CHECK(tp->ops->allgather(tp, &low, sizeof low, w->verdict));
    uint64_t all = (uint64_t)n;
    for (int r = 0; r < n; r++) all = w->verdict[r] < all ? w->verdict[r] : all;
    if (all < (uint64_t)n) {
        c->bad_rank = (int)all;
        return TERSE_ERR_NONFINITE;
    }
    return tp->ops->allgatherv(tp, acc, w->gath, w->sc, w->sd);
}

static terse_status_t dense_exchange(proto_call_t *c)
{
    dense_ws_t w = dense_layout(c);
    transport_t *tp = c->tp;
    int n = tp->size, me = tp->rank;
    size_t mb = protocol_chunk_begin(c->count, n, me), me_len = protocol_chunk_begin(c->count, n, me + 1) - mb;
    size_t me_bytes = w.sc[me];
    for (int r = 0; r < n; r++) {
        w.rc[r] = me_bytes;
        w.rd[r] = (size_t)r * me_bytes;
    }
    TERSE_CHECK(tp->ops->alltoallv(tp, w.send, w.sc, w.sd, w.recv, w.rc, w.rd));

    if (is_raw(c->codec)) return raw_reduce_gather(c, &w, me_len);
    memset(w.acc, 0, me_len * sizeof(float));
    for (int r = 0; r < n; r++) {
        if (c->codec->decode_add(c->prm, w.recv + w.rd[r], w.rc[r], me_len, w.acc, c->scratch) != TERSE_OK) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
    }
    if (c->mean)
        for (size_t j = 0; j < me_len; j++) w.acc[j] /= (float)n;
    if (c->state) /* dense_ef: the owner's error of the last call; decode keeps the new one */
        for (size_t j = 0; j < me_len; j++) w.acc[j] += c->state[j];
    codec_ctx_t ctx = {protocol_stream_key(0, c, me, 1), mb, me_len, 1};
    c->codec->encode(c->prm, &ctx, w.acc, me_len, w.gath + w.sd[me], c->scratch);

    /* round 2: chunk r is sc[r] bytes at sd[r], on every rank */
    return tp->ops->allgatherv(tp, NULL, w.gath, w.sc, w.sd);
}

static terse_status_t dense_decode(proto_call_t *c)
{
    if (is_raw(c->codec)) return TERSE_OK; /* the exchange gathered into out */
    dense_ws_t w = dense_layout(c);
    int n = c->tp->size;
    memset(c->out, 0, c->count * sizeof(float));
    for (int r = 0; r < n; r++) {
        size_t b = protocol_chunk_begin(c->count, n, r), e = protocol_chunk_begin(c->count, n, r + 1);
        if (c->codec->decode_add(c->prm, w.gath + w.sd[r], w.sc[r], e - b, c->out + b, c->scratch) != TERSE_OK) {
            c->bad_rank = r;
            return TERSE_ERR_MISMATCH;
        }
    }
    if (c->state) {
        /* dense_ef, last: what my chunk's re-encoding lost (acc still holds c) */
        int me = c->tp->rank;
        size_t mb = protocol_chunk_begin(c->count, n, me), len = protocol_chunk_begin(c->count, n, me + 1) - mb;
        for (size_t j = 0; j < len; j++) c->state[j] = w.acc[j] - c->out[mb + j];
    }
    return TERSE_OK;
}

static size_t dense_ef_state(const proto_shape_t *s) { return s->count / (size_t)s->nranks + 1; }

/* Codec none writes the output in place and, on large layers, checks the inputs as its
 * owners sum them; the others decode into the output after checking nothing first, so a
 * malformed message could leave it half written. */
static unsigned dense_shortcuts(const codec_ops_t *codec, const double *prm, size_t rows, size_t cols)
{
    (void)prm;
    if (!is_raw(codec)) return 0;
    return PROTO_OUT_IN_PLACE | (scans_at_owner(rows * cols) ? PROTO_SCANS_AT_OWNER : 0);
}

const protocol_ops_t protocol_dense = {
    sizeof(protocol_ops_t), "dense", dense_workspace, NULL, dense_encode, dense_exchange, dense_decode,
    0, dense_shortcuts,
};

const protocol_ops_t protocol_dense_ef = {
    sizeof(protocol_ops_t), "dense_ef", dense_workspace, dense_ef_state, dense_encode, dense_exchange,
    dense_decode, 0, NULL,
};

size_t protocol_dense_floats_workspace(size_t count, int nranks)
{
    const proto_shape_t s = {&codec_none_ops, NULL, count, 1, count, nranks};
    return dense_workspace(&s);
}

terse_status_t protocol_dense_floats(proto_call_t *outer, const float *in, float *out,
                                     size_t count, int mean, void *ws)
{
    proto_call_t v;
    memset(&v, 0, sizeof v);
    v.tp = outer->tp;
    v.codec = &codec_none_ops;
    v.count = v.rows = count;
    v.cols = 1;
    v.layer = outer->layer;
    v.calls = outer->calls;
    v.step = outer->step;
    v.in = in;
    v.out = out;
    v.mean = mean;
    v.ws = ws;
    v.bad_rank = -1;
    terse_status_t s = dense_encode(&v);
    if (s == TERSE_OK) s = dense_exchange(&v);
    if (s == TERSE_OK) s = dense_decode(&v);
    if (s == TERSE_ERR_MISMATCH) outer->bad_rank = v.bad_rank;
    return s;
}

const protocol_ops_t *protocol_for(const codec_ops_t *codec)
{
    switch (codec->protocol) {
    case CODEC_PROTO_DENSE: return &protocol_dense;
    case CODEC_PROTO_SPARSE: return &protocol_sparse_allgather;
    case CODEC_PROTO_RANDK: return &protocol_randk;
    case CODEC_PROTO_ONEBIT: return &protocol_onebit;
    case CODEC_PROTO_DGC: return &protocol_dgc;
    case CODEC_PROTO_POWERSGD: return &protocol_powersgd;
    case CODEC_PROTO_DENSE_EF: return &protocol_dense_ef;
    }
    return NULL;
}
