/* Communicators: creation over MPI (world, an MPI_Comm, or a Fortran handle), the
 * configuration in force, and destruction. */
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "internal.h"
#include "terse_mpi.h"
#include "transport_mpi.h"

/* Communicators made by terse_comm_create_world while terse had initialised MPI itself;
 * MPI is finalised when the last of them is destroyed. */
static int world_refs;

static terse_status_t check_mpi_usable(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return terse_error(TERSE_ERR_STATE, "MPI has already been finalised");
    if (!init)
        return terse_error(TERSE_ERR_STATE,
                           "MPI is not initialised: call MPI_Init first, or use terse_comm_create_world");
    return TERSE_OK;
}

/* TERSE_OK when every rank's `mine` is TERSE_OK. Otherwise every rank fails: a failing rank
 * with its own status and message, the others with the first failing rank's status and a
 * message that names that rank. Collective. */
static terse_status_t agree_ok(terse_comm_t *c, terse_status_t mine, const char *what)
{
    /* the header rows when they exist (no allocation that one rank alone could fail) */
    uint64_t *all = c->headers ? c->headers : calloc((size_t)c->tp.size, sizeof *all);
    if (!all) return mine != TERSE_OK ? mine : terse_error(TERSE_ERR_NOMEM, "communicator: out of memory");
    terse_status_t s = transport_allgather_u64(&c->tp, (uint64_t)(int64_t)mine, all);
    for (int r = 0; s == TERSE_OK && r < c->tp.size; r++) {
        if (all[r] == (uint64_t)(int64_t)TERSE_OK) continue;
        s = mine != TERSE_OK ? mine
                             : terse_error((terse_status_t)(int64_t)all[r], "%s failed on rank %d (see its message)", what, r);
    }
    if (all != c->headers) free(all);
    return s;
}

terse_status_t comm_finish(terse_comm_t *c)
{
    c->headers = calloc((size_t)c->tp.size * HDR_WORDS, sizeof *c->headers);
    terse_status_t s = c->headers ? TERSE_OK : terse_error(TERSE_ERR_NOMEM, "communicator: out of memory");
    /* every rank learns whether every rank has its device, before anything else collective */
    if (c->cfg.device == CONFIG_DEVICE_CUDA) {
        int dev = 0;
        s = agree_ok(c, s == TERSE_OK ? device_current("creating the communicator", &dev) : s, "finding the CUDA device");
        if (c->over_mpi) c->dev = dev; /* NCCL's is its communicator's device, set before */
    }
    if (s == TERSE_OK && c->over_mpi) s = hier_setup(c);
    if (s == TERSE_OK && c->cfg.threads > 1) s = pool_create(c->cfg.threads, c->cfg.bind == CONFIG_BIND_AUTO, &c->pool);
    if (s == TERSE_OK) s = guard_add(c);
    if (s != TERSE_OK) {
        pool_destroy(c->pool);
        hier_destroy(c);
        free(c->headers);
        c->tp.ops->destroy(&c->tp);
    }
    return s;
}

static terse_status_t comm_create(MPI_Comm comm, const terse_config_t *cfg, int owns_mpi,
                                  terse_comm_t **out)
{
    terse_comm_t *c = calloc(1, sizeof *c);
    if (!c) return terse_error(TERSE_ERR_NOMEM, "communicator: out of memory");
    c->cfg = *cfg;
    c->over_mpi = 1;
    terse_status_t s = transport_mpi_create(comm, &c->tp);
    if (s == TERSE_OK) s = comm_finish(c);
    if (s != TERSE_OK) {
        free(c);
        return s;
    }
    c->owns_mpi = owns_mpi;
    *out = c;
    return TERSE_OK;
}

terse_status_t terse_comm_create_mpi(MPI_Comm comm, const char *config, terse_comm_t **out)
{
    terse_error_clear();
    if (!out) return terse_error(TERSE_ERR_ARG, "terse_comm_create_mpi: out is NULL");
    TERSE_CHECK(check_mpi_usable());
    if (comm == MPI_COMM_NULL)
        return terse_error(TERSE_ERR_ARG, "terse_comm_create_mpi: comm is MPI_COMM_NULL");
    /* An invalid handle raises the error on MPI_COMM_WORLD's handler, fatal by default:
     * ask for a return code while we look at the caller's handle. */
    MPI_Errhandler old;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &old);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int inter = 0;
    int rc = MPI_Comm_test_inter(comm, &inter);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, old);
    MPI_Errhandler_free(&old);
    if (rc != MPI_SUCCESS)
        return terse_error(TERSE_ERR_ARG, "terse_comm_create_mpi: comm is not a valid communicator");
    if (inter)
        return terse_error(TERSE_ERR_ARG,
                           "terse_comm_create_mpi: comm is an inter-communicator; use an intra-communicator");
    /* parse before any collective, so that a bad string fails alike on every rank */
    terse_config_t cfg;
    TERSE_CHECK(config_resolve(config, &cfg));
    return comm_create(comm, &cfg, 0, out);
}

terse_status_t terse_comm_create_mpi_f(int fortran_comm, const char *config, terse_comm_t **out)
{
    terse_error_clear();
    if (!out) return terse_error(TERSE_ERR_ARG, "terse_comm_create_mpi_f: out is NULL");
    TERSE_CHECK(check_mpi_usable());
    MPI_Comm comm = MPI_Comm_f2c((MPI_Fint)fortran_comm);
#ifdef OPEN_MPI
    /* Open MPI answers an index outside its table with a NULL pointer */
    if ((void *)comm == NULL)
        return terse_error(TERSE_ERR_ARG,
                           "terse_comm_create_mpi_f: handle %d is not a communicator", fortran_comm);
#endif
    if (comm == MPI_COMM_NULL)
        return terse_error(TERSE_ERR_ARG,
                           "terse_comm_create_mpi_f: handle %d is not a communicator", fortran_comm);
    return terse_comm_create_mpi(comm, config, out);
}

terse_status_t terse_comm_create_world(const char *config, terse_comm_t **out)
{
    terse_error_clear();
    if (!out) return terse_error(TERSE_ERR_ARG, "terse_comm_create_world: out is NULL");
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return terse_error(TERSE_ERR_STATE, "terse_comm_create_world: MPI has already been finalised");
    /* a configuration error must not leave MPI initialised by us */
    terse_config_t cfg;
    TERSE_CHECK(config_resolve(config, &cfg));
    int owns = 0;
    if (!init) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return terse_error(TERSE_ERR_BACKEND, "terse_comm_create_world: MPI_Init_thread failed");
        owns = 1;
    } else if (world_refs > 0) {
        owns = 1; /* terse initialised MPI for an earlier world communicator */
    }
    terse_status_t s = comm_create(MPI_COMM_WORLD, &cfg, owns, out);
    if (s == TERSE_OK && owns) world_refs++;
    if (s != TERSE_OK && owns && world_refs == 0) MPI_Finalize();
    return s;
}

void layer_free(layer_t *l)
{
    free(l->state);
    free(l->pstate);
    free(l->pstate_next);
    free(l->p);
    free(l->delta);
    free(l->agg);
    free(l->ws);
    free(l->scratch);
    free(l->ws_dense);
    free(l->node_sum);
    free(l->ws_node);
    device_host_free(l->host);
    if (l->lg) free(l->lg->acc);
    free(l->lg);
    memset(l, 0, sizeof *l);
}

terse_status_t terse_comm_destroy(terse_comm_t *c)
{
    terse_error_clear();
    if (!c) return TERSE_OK;
    TERSE_CHECK(guard_remove(c, "terse_comm_destroy"));
    progress_destroy(c); /* runs what is queued first */
    for (size_t i = 0; i < c->n_layers; i++) layer_free(&c->layers[i]);
    free(c->layers);
    fuse_destroy(c->fuse);
    free(c->headers);
    free(c->lg.msg);
    free(c->lg.choice);
    free(c->lg.work);
    hier_destroy(c);
    pool_destroy(c->pool);
    c->tp.ops->destroy(&c->tp);
    int owns = c->owns_mpi;
    free(c);
    if (owns && --world_refs == 0) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    }
    return TERSE_OK;
}

terse_status_t terse_comm_rank(const terse_comm_t *c, int *rank, int *size)
{
    terse_error_clear();
    TERSE_CHECK(guard_check(c, "terse_comm_rank"));
    if (!rank && !size) return terse_error(TERSE_ERR_ARG, "terse_comm_rank: rank and size are both NULL");
    if (rank) *rank = c->tp.rank;
    if (size) *size = c->tp.size;
    return TERSE_OK;
}

terse_status_t terse_comm_config(const terse_comm_t *c, char *buf, size_t len)
{
    terse_error_clear();
    TERSE_CHECK(guard_check(c, "terse_comm_config"));
    if (!buf) return terse_error(TERSE_ERR_ARG, "terse_comm_config: buf is NULL");
    size_t need = config_format(&c->cfg, NULL, 0);
    if (need + 1 > len)
        return terse_error(TERSE_ERR_ARG, "terse_comm_config: buffer of %zu bytes is too small; %zu needed",
                           len, need + 1);
    config_format(&c->cfg, buf, len);
    return TERSE_OK;
}
