/* The NCCL transport, over a communicator and a stream that the caller owns. */
#ifndef TERSE_TRANSPORT_NCCL_H
#define TERSE_TRANSPORT_NCCL_H

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "transport.h"

/* Fills *t with a transport over `comm` (not duplicated: terse never destroys it) whose
 * work runs on `stream`. Not collective. */
terse_status_t transport_nccl_create(ncclComm_t comm, cudaStream_t stream, transport_t *t);

#endif
