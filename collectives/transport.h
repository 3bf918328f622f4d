/* The transport interface: the few collectives the aggregation protocols need, on bytes.
 * A transport is a table of functions (MPI here; NCCL later) plus its handle. Every call is collective over the transport's ranks. Counts and displacements
 * are per rank, in bytes. */
#ifndef TERSE_TRANSPORT_H
#define TERSE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "terse.h"

typedef struct transport transport_t;

typedef struct transport_ops {
    size_t size;        /* sizeof(transport_ops_t): the version of this table */
    const char *name;
    /* Every rank contributes `bytes` bytes; recv gets them in rank order. */
    terse_status_t (*allgather)(transport_t *t, const void *send, size_t bytes, void *recv);
    /* Rank r contributes counts[r] bytes, which land at recv + displs[r] on every rank. The
     * caller's own block is read from recv + displs[rank] when send is NULL (in place). */
    terse_status_t (*allgatherv)(transport_t *t, const void *send, void *recv,
                                 const size_t *counts, const size_t *displs);
    /* Rank r sends scounts[q] bytes from send + sdispls[q] to each rank q. */
    terse_status_t (*alltoallv)(transport_t *t, const void *send, const size_t *scounts,
                                const size_t *sdispls, void *recv, const size_t *rcounts,
                                const size_t *rdispls);
    terse_status_t (*bcast)(transport_t *t, void *buf, size_t bytes, int root);
    void (*destroy)(transport_t *t);
} transport_ops_t;

struct transport {
    const transport_ops_t *ops;
    void *impl;
    int rank, size;
    /* Bytes this rank has handed to the transport for other ranks, for statistics: an
     * allgather of b bytes counts b * (size - 1), an alltoallv the bytes addressed to others. */
    uint64_t sent_bytes;
    /* The part of sent_bytes addressed to ranks on other nodes (hosts): the bytes that cross
     * the network. node_of[r] is rank r's node; NULL means every rank shares this rank's node. */
    uint64_t sent_inter_bytes;
    const int *node_of;
    int remote_peers;   /* ranks of this transport on another node than this rank */
};

/* Sets the node of every rank (node_of: size entries, kept by the caller; NULL: one node). */
static inline void transport_set_nodes(transport_t *t, const int *node_of)
{
    t->node_of = node_of;
    t->remote_peers = 0;
    for (int r = 0; node_of && r < t->size; r++) t->remote_peers += node_of[r] != node_of[t->rank];
}

/* Counts a collective in which this rank hands `bytes` to every other rank (an allgather's
 * block, a broadcast from this rank). */
static inline void transport_count_to_all(transport_t *t, size_t bytes)
{
    t->sent_bytes += (uint64_t)bytes * (uint64_t)(t->size - 1);
    t->sent_inter_bytes += (uint64_t)bytes * (uint64_t)t->remote_peers;
}

/* Whether rank r is on another node than this rank. */
static inline int transport_is_remote(const transport_t *t, int r)
{
    return t->node_of && t->node_of[r] != t->node_of[t->rank];
}

/* Gathers one uint64 from every rank into all[0..size), in rank order: the small agreements
 * (state files, communicator creation) that must work on every transport. */
static inline terse_status_t transport_allgather_u64(transport_t *t, uint64_t v, uint64_t *all)
{
    return t->ops->allgather(t, &v, sizeof v, all);
}

/* Counts an alltoallv that sends scounts[r] bytes to each rank r. */
static inline void transport_count_alltoallv(transport_t *t, const size_t *scounts)
{
    for (int r = 0; r < t->size; r++) {
        if (r != t->rank) t->sent_bytes += scounts[r];
        if (transport_is_remote(t, r)) t->sent_inter_bytes += scounts[r];
    }
}

#endif
