/* terse's worker threads (threads=N): a fixed pool that splits the engine's elementwise
 * passes over a layer (feedback prepare and update, the non-finite scan, the node sum of
 * the hierarchical protocol) into contiguous ranges. Each element is computed by exactly one
 * thread with the same arithmetic as with one thread, so results do not depend on N.
 * Codec kernels (selection, packing, products) run on the calling thread.
 *
 * bind=auto pins the workers to the cores nearest the network card that hwloc reports (the
 * first NIC with a PCI locality), within the cores this process may run on; without such
 * a NIC, to this process's own cores. bind=none leaves them to the OS. Workers never call
 * MPI. */
#ifndef TERSE_POOL_H
#define TERSE_POOL_H

#include <stddef.h>

#include "error.h"

typedef struct pool pool_t;

/* Starts threads - 1 workers (the caller is the first thread). bind: 1 = bind=auto.
 * Errors: TERSE_ERR_ARG (threads < 1), TERSE_ERR_NOMEM, TERSE_ERR_BACKEND (a thread could
 * not start, or binding failed: the message names what). */
terse_status_t pool_create(int threads, int bind, pool_t **out);
void pool_destroy(pool_t *p);

/* Calls fn(arg, part, b, e) for disjoint ranges [b, e) covering [0, n), one per thread
 * (fewer when n is small: a range has at least `grain` elements), and returns when all are
 * done. part is 0.. parts-1 in range order. NULL p runs fn(arg, 0, 0, n) here. */
typedef void (*pool_fn)(void *arg, int part, size_t b, size_t e);
void pool_for(pool_t *p, size_t n, size_t grain, pool_fn fn, void *arg);

/* Threads in the pool (1 for NULL). */
int pool_threads(const pool_t *p);

/* The cores the workers are bound to, hwloc list syntax ("0-3"), or "" when they are not
 * bound; and, per worker i (1 .. threads-1), the binding hwloc reported from inside that
 * thread once it started (for tests and terse-info). */
const char *pool_binding(const pool_t *p);
const char *pool_worker_binding(const pool_t *p, int i);

#endif
