/* The progress thread behind terse_iallreduce: one per communicator, started by its first
 * terse_iallreduce, which runs the communicator's queued allreduce calls in the order they
 * were started while the caller computes.
 *
 * The caller's thread and the progress thread never touch the communicator at the same
 * time: every other guarded call first waits until the queue is empty (progress_drain), and
 * terse_iallreduce itself only validates and queues. Requests come from a free list that
 * the communicator keeps, so steady-state calls allocate nothing. */
#ifndef TERSE_PROGRESS_H
#define TERSE_PROGRESS_H

#include "terse.h"

typedef struct progress progress_t;

/* Queues allreduce(c, layer, buf) on c's progress thread (started on first use) and returns
 * its request in *req. The call has been validated by the caller. When MPI was initialised
 * below MPI_THREAD_SERIALIZED, no thread may call MPI but the main one: the allreduce then
 * runs here, at once, and *req is already complete. */
terse_status_t progress_start(terse_comm_t *c, int layer, float *buf,
                              terse_status_t (*allreduce)(terse_comm_t *, int, float *),
                              terse_request_t **req);

/* Waits until every request queued on c has run (their statuses stay in the requests). */
void progress_drain(terse_comm_t *c);

/* Drains c's queue, stops its thread and releases what no outstanding request holds; a
 * request not yet waited for stays valid until terse_wait. */
void progress_destroy(terse_comm_t *c);

/* terse_wait's body. */
terse_status_t progress_wait(terse_request_t *req);

/* terse_test's body. */
terse_status_t progress_test(terse_request_t *req, int *done);

#endif
