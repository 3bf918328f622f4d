/* The exact sum of a node's vectors at its leader (collectives/node_reduce.c). */
#ifndef TERSE_NODE_REDUCE_H
#define TERSE_NODE_REDUCE_H

#include "error.h"
#include "pool.h"
#include "transport.h"

/* Floats per step: the leader receives at most (ranks - 1) of these at a time. */
#define NODE_REDUCE_CHUNK ((size_t)1 << 18)

/* Workspace bytes of node_reduce on a transport of nranks ranks. */
size_t node_reduce_workspace(int nranks);

/* Rank 0 of tp gets out = (sum over ranks r in order of in_r) * scale, count floats, summed
 * from 0 in rank order; out is not touched on the other ranks. The sums run on pool's
 * threads (NULL: this one). Collective over tp. */
terse_status_t node_reduce(transport_t *tp, const float *in, float *out, size_t count, float scale,
                           void *ws, pool_t *pool);

#endif
