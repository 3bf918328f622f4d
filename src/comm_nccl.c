/* Communicators over NCCL (terse_nccl.h): the NCCL transport under the same engine, with
 * device buffers staged as for device=cuda. */
#include <stdlib.h>

#include "internal.h"
#include "terse_nccl.h"
#include "transport_nccl.h"

terse_status_t terse_comm_create_nccl(ncclComm_t comm, cudaStream_t stream, const char *config,
                                      terse_comm_t **out)
{
    terse_error_clear();
    if (!out) return terse_error(TERSE_ERR_ARG, "terse_comm_create_nccl: out is NULL");
    if (!comm) return terse_error(TERSE_ERR_ARG, "terse_comm_create_nccl: comm is NULL");
    /* parse before any collective, so that a bad string fails alike on every rank */
    terse_config_t cfg;
    TERSE_CHECK(config_resolve(config, &cfg));
    if (cfg.hier == CONFIG_HIER_ON)
        return terse_error(TERSE_ERR_ARG, "terse_comm_create_nccl: hier=on needs an MPI communicator "
                                          "(terse_comm_create_mpi) to find the nodes; use hier=off or auto");
    cfg.hier = CONFIG_HIER_OFF;
    cfg.device = CONFIG_DEVICE_CUDA;
    terse_comm_t *c = calloc(1, sizeof *c);
    if (!c) return terse_error(TERSE_ERR_NOMEM, "communicator: out of memory");
    c->cfg = cfg;
    c->dev_stream = stream;
    if (ncclCommCuDevice(comm, &c->dev) != ncclSuccess) {
        free(c);
        return terse_error(TERSE_ERR_ARG, "terse_comm_create_nccl: comm is not a usable NCCL communicator");
    }
    terse_status_t s = transport_nccl_create(comm, stream, &c->tp);
    if (s == TERSE_OK) s = comm_finish(c);
    if (s != TERSE_OK) {
        free(c);
        return s;
    }
    *out = c;
    return TERSE_OK;
}
