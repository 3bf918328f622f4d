/* The communicator guard: which handles are live, and which are inside a call.
 *
 * Every public function that takes a terse_comm_t checks the handle against the set of live
 * communicators, so a handle that was destroyed (or never created) is TERSE_ERR_ARG instead
 * of a use after free. The check cannot tell a destroyed handle from a new communicator that
 * malloc placed at the same address; it catches the common mistakes, not all of them.
 *
 * Functions that read or change a communicator's mutable state also mark it as in use for
 * the length of the call: a second thread that enters meanwhile gets TERSE_ERR_STATE naming
 * the call in progress, instead of a data race. This enforces the thread-safety rule of
 * terse.h (one thread at a time per communicator).
 *
 * A guarded call first waits for the communicator's terse_iallreduce requests to run
 * (progress.h), so that it never touches the communicator while the progress thread does. */
#ifndef TERSE_GUARD_H
#define TERSE_GUARD_H

#include "progress.h"
#include "terse.h"

/* Adds a new communicator to the live set. TERSE_ERR_NOMEM if the set cannot grow. */
terse_status_t guard_add(terse_comm_t *c);

/* Removes c from the live set, for terse_comm_destroy: TERSE_ERR_ARG if c is not live,
 * TERSE_ERR_STATE if another thread is inside a call on it (c stays live then). */
terse_status_t guard_remove(terse_comm_t *c, const char *fn);

/* For read-only calls on what is fixed at creation: TERSE_ERR_ARG if c is NULL or not live. */
terse_status_t guard_check(const terse_comm_t *c, const char *fn);

/* Enters call `fn` on c: TERSE_ERR_ARG if c is NULL or not live, TERSE_ERR_STATE if another
 * call is in progress on it. On TERSE_OK the caller must guard_leave(c). */
terse_status_t guard_enter(terse_comm_t *c, const char *fn);
void guard_leave(terse_comm_t *c);

/* guard_enter for a collective call, which also needs MPI: TERSE_ERR_STATE if MPI has been
 * finalised (c is not entered then). */
terse_status_t guard_enter_mpi(terse_comm_t *c, const char *fn);

/* The body of a public function that enters c for the length of `call`:
 *     terse_status_t terse_step_end(terse_comm_t *c) { GUARDED_CALL(c, "terse_step_end", step_end(c)); } */
#define GUARDED_CALL(c, fn, call) GUARDED_BY(guard_enter, c, fn, call)
#define GUARDED_MPI_CALL(c, fn, call) GUARDED_BY(guard_enter_mpi, c, fn, call)
#define GUARDED_BY(enter, c, fn, call)                                                      \
    do {                                                                                    \
        terse_error_clear();                                                                \
        terse_status_t guard_s_ = enter((c), (fn));                                         \
        if (guard_s_ != TERSE_OK) return guard_s_;                                          \
        progress_drain(c);                                                                  \
        guard_s_ = (call);                                                                  \
        guard_leave(c);                                                                     \
        return guard_s_;                                                                    \
    } while (0)

#endif
