/* The batching transport (see transport_batch.h). */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "transport_batch.h"

terse_status_t batch_init(batch_t *b, transport_t *real)
{
    *b = (batch_t){0};
    b->real = real;
    b->v = calloc(4 * (size_t)real->size, sizeof *b->v);
    if (!b->v) return terse_error(TERSE_ERR_NOMEM, "fused allreduce: out of memory");
    return TERSE_OK;
}

void batch_free(batch_t *b)
{
    free(b->send);
    free(b->recv);
    free(b->v);
    *b = (batch_t){0};
}

/* Grows a staging buffer to at least need bytes, with half as much again in reserve: the
 * messages of sparse codecs (dgc's sampled threshold) vary a little from call to call, and
 * a buffer sized to the first call's would grow again later, in steady state. */
static terse_status_t grow(unsigned char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return TERSE_OK;
    const size_t want = need + need / 2;
    void *p = realloc(*buf, want);
    if (!p) return terse_error(TERSE_ERR_NOMEM, "fused allreduce: cannot grow a staging buffer to %zu bytes", want);
    *buf = p;
    *cap = want;
    return TERSE_OK;
}

static void copy(void *dst, const void *src, size_t n)
{
    if (n) memcpy(dst, src, n);
}

/* ---- a lane's operations: record the request, let the scheduler run it ---- */

static terse_status_t lane_post(transport_t *t, batch_req_t req)
{
    batch_lane_t *lane = t->impl;
    lane->req = req;
    lane->yield(lane->yield_arg);
    return lane->req.result;
}

static terse_status_t lane_allgather(transport_t *t, const void *send, size_t bytes, void *recv)
{
    return lane_post(t, (batch_req_t){.kind = BATCH_ALLGATHER, .send = send, .bytes = bytes, .recv = recv});
}

static terse_status_t lane_allgatherv(transport_t *t, const void *send, void *recv, const size_t *counts,
                                      const size_t *displs)
{
    return lane_post(t, (batch_req_t){.kind = BATCH_ALLGATHERV, .send = send, .recv = recv, .counts = counts,
                                      .displs = displs});
}

static terse_status_t lane_alltoallv(transport_t *t, const void *send, const size_t *scounts,
                                     const size_t *sdispls, void *recv, const size_t *rcounts,
                                     const size_t *rdispls)
{
    return lane_post(t, (batch_req_t){.kind = BATCH_ALLTOALLV, .send = send, .counts = scounts,
                                      .displs = sdispls, .recv = recv, .rcounts = rcounts, .rdispls = rdispls});
}

static terse_status_t lane_bcast(transport_t *t, void *buf, size_t bytes, int root)
{
    return lane_post(t, (batch_req_t){.kind = BATCH_BCAST, .recv = buf, .bytes = bytes, .root = root});
}

static void lane_destroy(transport_t *t) { (void)t; }

static const transport_ops_t lane_ops = {
    sizeof(transport_ops_t), "batch", lane_allgather, lane_allgatherv, lane_alltoallv, lane_bcast,
    lane_destroy,
};

void batch_lane_init(batch_lane_t *lane, batch_t *b, void (*yield)(void *), void *yield_arg)
{
    *lane = (batch_lane_t){0};
    transport_t *real = b->real;
    lane->tp.ops = &lane_ops;
    lane->tp.impl = lane;
    lane->tp.rank = real->rank;
    lane->tp.size = real->size;
    transport_set_nodes(&lane->tp, real->node_of);
    lane->batch = b;
    lane->yield = yield;
    lane->yield_arg = yield_arg;
}

int batch_compatible(const batch_req_t *a, const batch_req_t *b)
{
    return a->kind == b->kind && (a->kind != BATCH_BCAST || a->root == b->root);
}

/* ---- the fused collectives ---- */

/* The lanes' fixed-size blocks (allgather's send, bcast's buffer), in lane order, into the
 * send staging buffer; *total: their size. copy_in 0 only sizes the buffer (a bcast's
 * receivers). */
static terse_status_t pack_blocks(batch_t *b, batch_lane_t *const *lanes, int n, int copy_in, size_t *total)
{
    size_t sum = 0;
    for (int i = 0; i < n; i++) sum += lanes[i]->req.bytes;
    TERSE_CHECK(grow(&b->send, &b->send_cap, sum));
    for (size_t i = 0, off = 0; copy_in && i < (size_t)n; off += lanes[i++]->req.bytes) {
        const batch_req_t *q = &lanes[i]->req;
        copy(b->send + off, q->kind == BATCH_BCAST ? q->recv : q->send, q->bytes);
    }
    *total = sum;
    return TERSE_OK;
}

static terse_status_t run_allgather(batch_t *b, batch_lane_t *const *lanes, int n)
{
    transport_t *t = b->real;
    size_t total;
    TERSE_CHECK(pack_blocks(b, lanes, n, 1, &total));
    TERSE_CHECK(grow(&b->recv, &b->recv_cap, total * (size_t)t->size));
    TERSE_CHECK(t->ops->allgather(t, b->send, total, b->recv));
    for (int r = 0; r < t->size; r++) {
        size_t off = (size_t)r * total;
        for (int i = 0; i < n; i++) {
            const batch_req_t *q = &lanes[i]->req;
            copy((unsigned char *)q->recv + (size_t)r * q->bytes, b->recv + off, q->bytes);
            off += q->bytes;
        }
    }
    return TERSE_OK;
}

/* Fused counts c[r] = the lanes' counts for r, and displacements d[r]; returns the total. */
static size_t fuse_counts(const transport_t *t, batch_lane_t *const *lanes, int n, int recv_side, size_t *c,
                          size_t *d)
{
    size_t total = 0;
    for (int r = 0; r < t->size; r++) {
        c[r] = 0;
        for (int i = 0; i < n; i++) c[r] += recv_side ? lanes[i]->req.rcounts[r] : lanes[i]->req.counts[r];
        d[r] = total;
        total += c[r];
    }
    return total;
}

static terse_status_t run_allgatherv(batch_t *b, batch_lane_t *const *lanes, int n)
{
    transport_t *t = b->real;
    size_t *c = b->v, *d = b->v + t->size;
    const size_t total = fuse_counts(t, lanes, n, 0, c, d);
    TERSE_CHECK(grow(&b->recv, &b->recv_cap, total));
    size_t off = d[t->rank];
    for (int i = 0; i < n; i++) {
        const batch_req_t *q = &lanes[i]->req;
        const void *mine = q->send ? q->send : (const unsigned char *)q->recv + q->displs[t->rank];
        copy(b->recv + off, mine, q->counts[t->rank]);
        off += q->counts[t->rank];
    }
    TERSE_CHECK(t->ops->allgatherv(t, NULL, b->recv, c, d));
    for (int r = 0; r < t->size; r++) {
        off = d[r];
        for (int i = 0; i < n; i++) {
            const batch_req_t *q = &lanes[i]->req;
            if (r != t->rank || q->send) copy((unsigned char *)q->recv + q->displs[r], b->recv + off, q->counts[r]);
            off += q->counts[r];
        }
    }
    return TERSE_OK;
}

static terse_status_t run_alltoallv(batch_t *b, batch_lane_t *const *lanes, int n)
{
    transport_t *t = b->real;
    const int size = t->size;
    size_t *sc = b->v, *sd = b->v + size, *rc = b->v + 2 * size, *rd = b->v + 3 * size;
    const size_t stotal = fuse_counts(t, lanes, n, 0, sc, sd);
    const size_t rtotal = fuse_counts(t, lanes, n, 1, rc, rd);
    TERSE_CHECK(grow(&b->send, &b->send_cap, stotal));
    TERSE_CHECK(grow(&b->recv, &b->recv_cap, rtotal));
    for (int r = 0; r < size; r++) {
        size_t off = sd[r];
        for (int i = 0; i < n; i++) {
            const batch_req_t *q = &lanes[i]->req;
            copy(b->send + off, (const unsigned char *)q->send + q->displs[r], q->counts[r]);
            off += q->counts[r];
        }
    }
    TERSE_CHECK(t->ops->alltoallv(t, b->send, sc, sd, b->recv, rc, rd));
    for (int r = 0; r < size; r++) {
        size_t off = rd[r];
        for (int i = 0; i < n; i++) {
            const batch_req_t *q = &lanes[i]->req;
            copy((unsigned char *)q->recv + q->rdispls[r], b->recv + off, q->rcounts[r]);
            off += q->rcounts[r];
        }
    }
    return TERSE_OK;
}

static terse_status_t run_bcast(batch_t *b, batch_lane_t *const *lanes, int n)
{
    transport_t *t = b->real;
    const int root = lanes[0]->req.root, here = t->rank == root;
    size_t total, off = 0;
    TERSE_CHECK(pack_blocks(b, lanes, n, here, &total));
    TERSE_CHECK(t->ops->bcast(t, b->send, total, root));
    for (int i = 0; !here && i < n; i++) {
        copy(lanes[i]->req.recv, b->send + off, lanes[i]->req.bytes);
        off += lanes[i]->req.bytes;
    }
    return TERSE_OK;
}

/* What the lane's own collective would have counted. */
static void count_lane(batch_lane_t *lane)
{
    transport_t *t = &lane->tp;
    const batch_req_t *q = &lane->req;
    switch (q->kind) {
    case BATCH_ALLGATHER: transport_count_to_all(t, q->bytes); break;
    case BATCH_ALLGATHERV: transport_count_to_all(t, q->counts[t->rank]); break;
    case BATCH_ALLTOALLV: transport_count_alltoallv(t, q->counts); break;
    case BATCH_BCAST:
        if (t->rank == q->root) transport_count_to_all(t, q->bytes);
        break;
    case BATCH_NONE: break;
    }
}

void batch_run(batch_t *b, batch_lane_t *const *lanes, int n)
{
    terse_status_t s = TERSE_OK;
    switch (lanes[0]->req.kind) {
    case BATCH_ALLGATHER: s = run_allgather(b, lanes, n); break;
    case BATCH_ALLGATHERV: s = run_allgatherv(b, lanes, n); break;
    case BATCH_ALLTOALLV: s = run_alltoallv(b, lanes, n); break;
    case BATCH_BCAST: s = run_bcast(b, lanes, n); break;
    case BATCH_NONE: break;
    }
    for (int i = 0; i < n; i++) {
        if (s == TERSE_OK) count_lane(lanes[i]);
        lanes[i]->req.result = s;
        lanes[i]->req.kind = BATCH_NONE;
    }
}
