/* The MPI transport, over a communicator that terse owns (a duplicate of the user's). */
#ifndef TERSE_TRANSPORT_MPI_H
#define TERSE_TRANSPORT_MPI_H

#include <mpi.h>

#include "transport.h"

/* Duplicates `comm` (errors return rather than abort on the duplicate) and fills *t.
 * Collective over comm. */
terse_status_t transport_mpi_create(MPI_Comm comm, transport_t *t);

/* The transport's own MPI communicator. */
MPI_Comm transport_mpi_comm(const transport_t *t);

#endif
