/* The hierarchical protocol (hier=on|auto): ranks grouped by node, a dense reduce inside
 * each node, the compressed exchange among one leader per node, a broadcast inside the node.
 *
 *   node 0: r0 r1      node 1: r2 r3         (leaders: r0, r2)
 *   1. every rank: header allgather over all ranks (agreement, non-finite verdict)
 *   2. node: exact fp32 sum of the node's gradients, in rank order (shared memory)
 *   3. leaders: feedback, encode, exchange, decode among the leaders only (the network)
 *   4. node: the leader broadcasts its status, then the result
 *
 * Each leader acts as one worker of the compressed exchange whose gradient is its node's
 * sum scaled by (nodes / ranks): with reduce=mean the leaders' mean is then the mean over
 * every rank, exactly as in the flat protocol when the codec is exact. Error feedback,
 * protocol state (1-bit's server error, DGC's momentum, PowerSGD's Q) and L-GreCo's window
 * live on the leaders; the other ranks keep zeros there.
 *
 * The grouping comes from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED); for tests the
 * environment variable TERSE_TEST_NODES ("0,0,1,1,1": one label per rank) pretends a
 * layout instead. */
#ifndef TERSE_HIER_H
#define TERSE_HIER_H

#include "error.h"

/* Where one rank sits in a layout of n ranks over nodes. Nodes are numbered in the order of
 * their lowest rank; that rank is the node's leader, and the leaders' ranks among themselves
 * are their node numbers. */
typedef struct {
    int n_nodes;       /* distinct nodes                                      */
    int node;          /* this rank's node                                    */
    int local_rank;    /* this rank's place among its node's ranks (by rank)  */
    int local_size;    /* ranks on this rank's node                           */
    int leader;        /* the rank of this node's leader                      */
    int max_local;     /* ranks on the largest node                           */
} hier_layout_t;

/* Computes rank `rank`'s place from label[r], any int naming rank r's node (equal labels:
 * same node), for n ranks; node_of (n ints) receives every rank's node number.
 * TERSE_ERR_ARG for n < 1, a rank outside 0..n-1 or a NULL pointer. */
terse_status_t hier_layout(const int *label, int n, int rank, hier_layout_t *out, int *node_of);

/* Parses TERSE_TEST_NODES-style text ("0,0,1,1") into n labels; TERSE_ERR_ARG naming the
 * problem when it is not n comma-separated integers. */
terse_status_t hier_parse_labels(const char *text, int n, int *labels);

/* Whether hier=auto uses the hierarchical protocol for this layout: when there is more than
 * one node and some node has more than one rank. */
int hier_auto_on(const hier_layout_t *lay);

#endif
