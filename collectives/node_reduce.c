/* The hierarchical protocol's first step: the exact fp32 sum of a node's vectors at the
 * node's leader (rank 0 of the node's transport), in rank order, times a scale.
 *
 *   chunk by chunk (NODE_REDUCE_CHUNK floats):
 *     alltoallv: every other rank sends the chunk to the leader (a gather)
 *     leader:    out = ((0 + in_0) + in_1) + ... + in_{k-1}, then * scale if scale != 1
 *
 * Chunking bounds the leader's receive space to (k - 1) chunks, and the sum of a chunk runs
 * while it is still in cache. Inside a node the bytes move through shared memory; nothing
 * here crosses the network. */
#include <string.h>

#include "node_reduce.h"

/* Bytes of the receive space, rounded up so that the counts after it are aligned. */
static size_t recv_bytes(int nranks)
{
    size_t b = (size_t)(nranks > 1 ? nranks - 1 : 0) * NODE_REDUCE_CHUNK * sizeof(float);
    return (b + 63) & ~(size_t)63;
}

size_t node_reduce_workspace(int nranks)
{
    return recv_bytes(nranks) + 4 * (size_t)nranks * sizeof(size_t);
}

typedef struct {
    const float *in, *recv;
    float *out;
    int k;
    size_t len;
    float scale;
} sum_job_t;

/* out[b, e) = ((0 + in) + recv_1) + ... , times scale */
static void sum_part(void *v, int part, size_t b, size_t e)
{
    (void)part;
    const sum_job_t *j = v;
    float *o = j->out;
    for (size_t i = b; i < e; i++) o[i] = 0.0f + j->in[i];
    for (int r = 1; r < j->k; r++) {
        const float *x = j->recv + (size_t)(r - 1) * j->len;
        for (size_t i = b; i < e; i++) o[i] += x[i];
    }
    if (j->scale != 1.0f)
        for (size_t i = b; i < e; i++) o[i] *= j->scale;
}

terse_status_t node_reduce(transport_t *tp, const float *in, float *out, size_t count, float scale,
                           void *ws, pool_t *pool)
{
    const int k = tp->size, leader = tp->rank == 0;
    float *recv = ws;
    size_t *sc = (size_t *)((unsigned char *)ws + recv_bytes(k));
    size_t *sd = sc + k, *rc = sd + k, *rd = rc + k;
    for (size_t b = 0; b < count; b += NODE_REDUCE_CHUNK) {
        const size_t len = count - b < NODE_REDUCE_CHUNK ? count - b : NODE_REDUCE_CHUNK;
        for (int r = 0; r < k; r++) {
            sc[r] = !leader && r == 0 ? len * sizeof(float) : 0;
            sd[r] = 0;
            rc[r] = leader && r > 0 ? len * sizeof(float) : 0;
            rd[r] = r > 0 ? (size_t)(r - 1) * len * sizeof(float) : 0;
        }
        if (k > 1) TERSE_CHECK(tp->ops->alltoallv(tp, in + b, sc, sd, recv, rc, rd));
        if (!leader) continue;
        sum_job_t j = {in + b, recv, out + b, k, len, scale};
        pool_for(pool, len, (size_t)1 << 15, sum_part, &j);
    }
    return TERSE_OK;
}
