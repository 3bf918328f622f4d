/* The MPI transport: byte-level allgather(v), alltoallv and bcast on a duplicated
 * communicator with MPI_ERRORS_RETURN, so that an MPI failure becomes TERSE_ERR_BACKEND with
 * MPI's own words instead of an abort. MPI counts are int: every count is checked. */
#include <limits.h>
#include <stdlib.h>

#include "error.h"
#include "transport_mpi.h"

typedef struct {
    MPI_Comm comm;
    int *ints; /* 4 * size ints: counts and displacements, sized once */
} mpi_impl_t;

static terse_status_t mpi_fail(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = '\0';
    return terse_error(TERSE_ERR_BACKEND, "MPI %s failed: %s", what, msg);
}

static terse_status_t to_ints(const transport_t *t, const size_t *v, int *out)
{
    for (int r = 0; r < t->size; r++) {
        if (v[r] > INT_MAX)
            return terse_error(TERSE_ERR_UNSUPPORTED,
                               "a message of %zu bytes exceeds MPI's int count limit", v[r]);
        out[r] = (int)v[r];
    }
    return TERSE_OK;
}

static terse_status_t mpi_allgather(transport_t *t, const void *send, size_t bytes, void *recv)
{
    mpi_impl_t *m = t->impl;
    if (bytes > INT_MAX)
        return terse_error(TERSE_ERR_UNSUPPORTED, "allgather of %zu bytes exceeds MPI's int count", bytes);
    int rc = MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, m->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allgather");
    transport_count_to_all(t, bytes);
    return TERSE_OK;
}

static terse_status_t mpi_allgatherv(transport_t *t, const void *send, void *recv,
                                     const size_t *counts, const size_t *displs)
{
    mpi_impl_t *m = t->impl;
    int *c = m->ints, *d = m->ints + t->size;
    TERSE_CHECK(to_ints(t, counts, c));
    TERSE_CHECK(to_ints(t, displs, d));
    const void *sb = send ? send : MPI_IN_PLACE;
    int rc = MPI_Allgatherv(sb, c[t->rank], MPI_BYTE, recv, c, d, MPI_BYTE, m->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allgatherv");
    transport_count_to_all(t, counts[t->rank]);
    return TERSE_OK;
}

static terse_status_t mpi_alltoallv(transport_t *t, const void *send, const size_t *scounts,
                                    const size_t *sdispls, void *recv, const size_t *rcounts,
                                    const size_t *rdispls)
{
    mpi_impl_t *m = t->impl;
    int n = t->size;
    int *sc = m->ints, *sd = m->ints + n, *rc_ = m->ints + 2 * n, *rd = m->ints + 3 * n;
    TERSE_CHECK(to_ints(t, scounts, sc));
    TERSE_CHECK(to_ints(t, sdispls, sd));
    TERSE_CHECK(to_ints(t, rcounts, rc_));
    TERSE_CHECK(to_ints(t, rdispls, rd));
    int rc = MPI_Alltoallv(send, sc, sd, MPI_BYTE, recv, rc_, rd, MPI_BYTE, m->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Alltoallv");
    transport_count_alltoallv(t, scounts);
    return TERSE_OK;
}

static terse_status_t mpi_bcast(transport_t *t, void *buf, size_t bytes, int root)
{
    mpi_impl_t *m = t->impl;
    if (bytes > INT_MAX)
        return terse_error(TERSE_ERR_UNSUPPORTED, "broadcast of %zu bytes exceeds MPI's int count", bytes);
    int rc = MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, m->comm);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Bcast");
    if (t->rank == root) transport_count_to_all(t, bytes);
    return TERSE_OK;
}

static void mpi_destroy(transport_t *t)
{
    mpi_impl_t *m = t->impl;
    if (!m) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&m->comm);
    free(m->ints);
    free(m);
    t->impl = NULL;
}

static const transport_ops_t mpi_ops = {
    sizeof(transport_ops_t), "mpi", mpi_allgather, mpi_allgatherv, mpi_alltoallv, mpi_bcast,
    mpi_destroy,
};

terse_status_t transport_mpi_create(MPI_Comm comm, transport_t *t)
{
    mpi_impl_t *m = calloc(1, sizeof *m);
    if (!m) return terse_error(TERSE_ERR_NOMEM, "transport: out of memory");
    int rc = MPI_Comm_dup(comm, &m->comm);
    if (rc != MPI_SUCCESS) {
        free(m);
        return mpi_fail(rc, "MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &t->rank);
    MPI_Comm_size(m->comm, &t->size);
    m->ints = calloc(4 * (size_t)t->size, sizeof *m->ints);
    if (!m->ints) {
        MPI_Comm_free(&m->comm);
        free(m);
        return terse_error(TERSE_ERR_NOMEM, "transport: out of memory");
    }
    t->ops = &mpi_ops;
    t->impl = m;
    t->sent_bytes = t->sent_inter_bytes = 0;
    transport_set_nodes(t, NULL);
    return TERSE_OK;
}

MPI_Comm transport_mpi_comm(const transport_t *t) { return ((const mpi_impl_t *)t->impl)->comm; }
