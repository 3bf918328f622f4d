/*
 * terse_mpi.h — creating a terse communicator from an MPI communicator.
 */
#ifndef TERSE_MPI_H
#define TERSE_MPI_H

#include <mpi.h>
#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a terse communicator over the ranks of `comm` (an intra-communicator; terse
 * duplicates it, so its traffic never mixes with the caller's, and sets MPI_ERRORS_RETURN on
 * the duplicate). MPI must be initialised and not finalised. `config` as for
 * terse_comm_create_world(). Collective over `comm`.
 * Errors: TERSE_ERR_ARG (out NULL, MPI_COMM_NULL, an inter-communicator, bad configuration),
 * TERSE_ERR_STATE (MPI not initialised or finalised), TERSE_ERR_UNSUPPORTED,
 * TERSE_ERR_BACKEND, TERSE_ERR_NOMEM. */
TERSE_API terse_status_t terse_comm_create_mpi(MPI_Comm comm, const char *config,
                                               terse_comm_t **out);

#ifdef __cplusplus
}
#endif
#endif /* TERSE_MPI_H */
