/*
 * terse_nccl.h — creating a terse communicator from an NCCL communicator, for gradients in
 * GPU memory. Available when terse was built with NCCL (meson -Dnccl; terse-info lists the
 * backends).
 */
#ifndef TERSE_NCCL_H
#define TERSE_NCCL_H

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a terse communicator over the ranks of `comm`, whose buffers are device memory on
 * comm's device; terse's transfers run on `stream` (NULL: the legacy default stream).
 * terse does not duplicate or destroy `comm`: keep it alive until terse_comm_destroy, and
 * do not use it from another thread while a terse call on this communicator runs. `config`
 * as for terse_comm_create_world(); device=cuda is implied, hier=on is refused (the
 * hierarchical path needs MPI's view of the nodes) and hier=auto means off. Collective
 * over comm.
 *
 * Every call on the communicator takes device pointers and returns with the result in
 * place: terse waits for the work queued on `stream` before it reads a buffer, and for its
 * own copies before it returns. The codecs and protocols run on the host (as for an MPI
 * communicator with device=cuda), each collective staged through device buffers that NCCL
 * moves; see docs/gpu.md for what that costs.
 *
 * Errors: TERSE_ERR_ARG (out NULL, comm NULL or not usable, bad configuration, hier=on),
 * TERSE_ERR_UNSUPPORTED (no usable CUDA device), TERSE_ERR_BACKEND, TERSE_ERR_NOMEM. */
TERSE_API terse_status_t terse_comm_create_nccl(ncclComm_t comm, cudaStream_t stream, const char *config,
                                                terse_comm_t **out);

#ifdef __cplusplus
}
#endif
#endif /* TERSE_NCCL_H */
