/* The batching transport: the collectives of several calls, run as one.
 *
 * Each call that takes part gets a lane: a transport_t whose operations do not communicate
 * but record the request and hand control back to a scheduler (the lane's yield function).
 * batch_run then executes the pending requests of many lanes, all of one kind, as a single
 * collective on the real transport - one message per peer instead of one per call - and
 * gives every lane its share of the result, exactly as its own collective would have.
 *
 * Packing: for allgather(v) and bcast the fused block of a rank is its lanes' blocks in lane
 * order; for alltoallv the fused block for peer q is, in lane order, each lane's block for
 * q. The layout depends only on the counts every rank already knows, so all ranks agree on
 * it as long as they pass the same lanes in the same order with the same requests (what the
 * single collectives require anyway).
 *
 * Each lane keeps its own byte counts (sent_bytes, sent_inter_bytes) as if it had run alone;
 * the real transport counts the fused collectives. The staging buffers grow to half again
 * the largest fused message and are kept, so a batch of steady size allocates nothing (and
 * one whose sparse messages vary a little, as dgc's do, settles after its first calls). */
#ifndef TERSE_TRANSPORT_BATCH_H
#define TERSE_TRANSPORT_BATCH_H

#include "transport.h"

typedef enum { BATCH_NONE, BATCH_ALLGATHER, BATCH_ALLGATHERV, BATCH_ALLTOALLV, BATCH_BCAST } batch_kind_t;

typedef struct batch batch_t;
typedef struct batch_lane batch_lane_t;

/* A lane's pending request: the arguments of the collective it asked for. */
typedef struct {
    batch_kind_t kind;
    const void *send;
    void *recv;             /* allgather, allgatherv, alltoallv; bcast: the buffer */
    size_t bytes;           /* allgather, bcast */
    int root;               /* bcast */
    const size_t *counts, *displs;     /* allgatherv; alltoallv: the send side */
    const size_t *rcounts, *rdispls;   /* alltoallv: the receive side */
    terse_status_t result;
} batch_req_t;

struct batch_lane {
    transport_t tp;         /* what the call sees; tp.impl points back to the lane */
    batch_req_t req;        /* kind BATCH_NONE: nothing pending */
    batch_t *batch;
    void (*yield)(void *arg);
    void *yield_arg;
};

struct batch {
    transport_t *real;
    unsigned char *send, *recv;
    size_t send_cap, recv_cap;
    size_t *v;              /* 4 * size: fused counts and displacements */
};

terse_status_t batch_init(batch_t *b, transport_t *real);
void batch_free(batch_t *b);

/* Makes lane a fresh view of b's transport whose requests call yield(yield_arg). */
void batch_lane_init(batch_lane_t *lane, batch_t *b, void (*yield)(void *), void *yield_arg);

/* Whether lanes a and b's pending requests can run as one collective. */
int batch_compatible(const batch_req_t *a, const batch_req_t *b);

/* Runs the pending requests of lanes[0..n) (pairwise compatible) as one collective and
 * sets each one's result; the requests are then no longer pending. */
void batch_run(batch_t *b, batch_lane_t *const *lanes, int n);

#endif
