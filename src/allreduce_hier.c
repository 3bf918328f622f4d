/* terse_allreduce under the hierarchical protocol (the picture is in src/hier.h):
 *
 *   every rank: header allgather over all ranks                       [compress]
 *   node: exact sum of the node's gradients (dense, rank order)       [compress]
 *   leader: feedback prepare, encode                                  [compress]
 *   leaders: size allgather, protocol exchange                        [comm]
 *   leader: decode, feedback update into buf                          [decompress]
 *   node: the leader's verdict, then (if it succeeded) its result     [decompress]
 *
 * Every rank of a node ends with its leader's bits, and the leaders' results are identical
 * (the protocols guarantee it), so all ranks agree. A leader that fails tells its node in
 * the verdict, so no rank waits for a result that will not come. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "node_reduce.h"

/* What a leader tells its node at the end of a call. */
typedef struct {
    int32_t status;
    int32_t pad;
    char msg[248];
} verdict_t;

/* Bytes sent so far over the three transports, all and to other nodes. */
static void hier_sent(const terse_comm_t *c, uint64_t *sent, uint64_t *inter)
{
    const transport_t *t[3] = {&c->tp, &c->hier.node, &c->hier.lead};
    *sent = *inter = 0;
    for (int i = 0; i < 3; i++) {
        if (!t[i]->ops) continue;
        *sent += t[i]->sent_bytes;
        *inter += t[i]->sent_inter_bytes;
    }
}

/* The leader's part: its node's sum is its gradient in the compressed exchange among the
 * leaders; the result lands in buf. */
static terse_status_t leader_reduce(terse_comm_t *c, int layer, float *buf, double t[4], size_t *wire)
{
    layer_t *l = &c->layers[layer];
    transport_t *tp = &c->hier.lead;
    engine_side_t side;
    engine_begin(&side, c, layer, tp, l->node_sum, buf);
    TERSE_CHECK(side.proto->encode(&side.call));
    t[1] = engine_now_us();

    /* the leaders' message sizes, and their agreement on the path (EF21's first call goes
     * uncompressed); every leader sees the same table */
    uint64_t mine[2] = {side.call.wire_bytes, (uint64_t)side.uncompressed};
    uint64_t *rows = c->headers; /* the world's headers are no longer needed */
    TERSE_CHECK(tp->ops->allgather(tp, mine, sizeof mine, rows));
    for (int r = 0; r < tp->size; r++)
        if (rows[2 * r + 1] != rows[1])
            return terse_error(TERSE_ERR_MISMATCH,
                               "layer %d: node leaders disagree on whether this call goes uncompressed "
                               "(leader 0: %llu, leader %d: %llu)", layer,
                               (unsigned long long)rows[1], r, (unsigned long long)rows[2 * r + 1]);
    for (int r = 0; r < tp->size; r++) rows[r] = rows[2 * r];
    side.call.peer_bytes = rows;
    TERSE_CHECK(engine_exchange_decode(side.proto, &side.call, &t[2]));
    engine_finish(&side, c, layer, buf);
    *wire = side.call.wire_bytes;
    return TERSE_OK;
}

terse_status_t hier_allreduce(terse_comm_t *c, int layer, float *buf)
{
    layer_t *l = &c->layers[layer];
    hier_comm_t *h = &c->hier;
    const size_t n = l->count;
    uint64_t sent0, inter0;
    hier_sent(c, &sent0, &inter0);
    double t[4];
    t[0] = engine_now_us();

    int nonfinite = l->cfg.nonfinite != CONFIG_NONFINITE_PASS && n > 0 && par_has_nonfinite(c->pool, buf, n);
    int skip;
    TERSE_CHECK(engine_agree(c, &c->tp, c->headers, layer, buf, nonfinite ? HDR_FLAG_NONFINITE : 0, 0, &skip));
    if (skip) return TERSE_OK;

    /* the node's exact sum at the leader, in rank order. With reduce=mean each leader
     * stands for nodes/ranks of the world: the leaders' mean is then the mean over every
     * rank, however unevenly the nodes are filled. */
    float scale = 1.0f;
    if (l->cfg.reduce == CONFIG_REDUCE_MEAN && h->lay.n_nodes != c->tp.size)
        scale = (float)((double)h->lay.n_nodes / (double)c->tp.size);
    TERSE_CHECK(node_reduce(&h->node, buf, l->node_sum, n, scale, l->ws_node, c->pool));

    verdict_t v;
    memset(&v, 0, sizeof v);
    size_t wire = 0;
    if (h->lay.local_rank == 0) {
        terse_status_t s = leader_reduce(c, layer, buf, t, &wire);
        v.status = s;
        if (s != TERSE_OK) snprintf(v.msg, sizeof v.msg, "%s", terse_last_error());
    } else {
        t[1] = engine_now_us();
    }
    TERSE_CHECK(h->node.ops->bcast(&h->node, &v, sizeof v, 0));
    if (h->lay.local_rank != 0) t[2] = engine_now_us();
    if (v.status != TERSE_OK) {
        if (h->lay.local_rank == 0) return (terse_status_t)v.status;
        return terse_error((terse_status_t)v.status, "%s (reported by this node's leader, rank %d)",
                           v.msg, h->lay.leader);
    }
    TERSE_CHECK(h->node.ops->bcast(&h->node, buf, n * sizeof *buf, 0));
    t[3] = engine_now_us();
    uint64_t sent1, inter1;
    hier_sent(c, &sent1, &inter1);
    engine_record(l, wire, sent1 - sent0, inter1 - inter0, t);
    return TERSE_OK;
}
