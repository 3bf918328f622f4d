/* The NCCL transport: the byte collectives of transport.h over an NCCL communicator.
 *
 * The protocols run on the host (src/device.h says why), so each collective stages its
 * bytes: host -> device staging buffer, the NCCL collective on the caller's stream, device
 * -> host, and waits for the stream. NCCL has no allgatherv or alltoallv: allgatherv is one
 * broadcast per rank and alltoallv a send and a receive per peer, each set inside one
 * ncclGroupStart/ncclGroupEnd so that NCCL runs them as one operation; a rank's block to
 * itself is a device copy. The staging buffers grow to the largest message seen, with half
 * again in reserve, so that steady state allocates nothing.
 *
 * Each collective runs on the communicator's device and gives the calling thread its own
 * current device back. It waits for the NCCL operation by polling the stream and NCCL's
 * asynchronous error, so that a failed peer or network is TERSE_ERR_BACKEND rather than a
 * wait that never ends (the caller then owns the NCCL communicator's abort: terse did not
 * create it), and only then copies the result to the host: a copy into pageable memory
 * blocks the host until the stream reaches it, so it must not wait behind the collective. Blocking NCCL
 * communicators only: a non-blocking one's ncclInProgress is reported as a failure. */
#include <sched.h>
#include <stdlib.h>

#include "error.h"
#include "transport_nccl.h"

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;
    int dev;               /* the communicator's device: the progress thread switches to it */
    void *d_send, *d_recv; /* device staging buffers, and their sizes                      */
    size_t send_cap, recv_cap;
} nccl_impl_t;

static terse_status_t nccl_fail(ncclResult_t r, const char *what)
{
    return terse_error(TERSE_ERR_BACKEND, "NCCL %s failed: %s", what, ncclGetErrorString(r));
}

static terse_status_t cuda_fail(cudaError_t e, const char *what)
{
    return terse_error(TERSE_ERR_BACKEND, "%s: CUDA error %d: %s", what, (int)e, cudaGetErrorString(e));
}

/* Makes *buf hold at least `need` bytes of device memory. */
static terse_status_t reserve(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return TERSE_OK;
    const size_t want = need + need / 2;
    cudaFree(*buf);
    *buf = NULL;
    *cap = 0;
    cudaError_t e = cudaMalloc(buf, want);
    if (e != cudaSuccess) {
        *buf = NULL;
        return terse_error(TERSE_ERR_NOMEM, "NCCL transport: cannot allocate %zu bytes of device memory: %s", want,
                           cudaGetErrorString(e));
    }
    *cap = want;
    return TERSE_OK;
}

/* Makes the staging buffers hold send and recv bytes. */
static terse_status_t prepare(transport_t *t, size_t send, size_t recv)
{
    nccl_impl_t *m = t->impl;
    TERSE_CHECK(reserve(&m->d_send, &m->send_cap, send));
    return reserve(&m->d_recv, &m->recv_cap, recv);
}

/* Runs the calling thread on the communicator's device; *old gets the device to go back to. */
static terse_status_t enter(const nccl_impl_t *m, int *old)
{
    cudaError_t e = cudaGetDevice(old);
    if (e == cudaSuccess && *old != m->dev) e = cudaSetDevice(m->dev);
    return e == cudaSuccess ? TERSE_OK : cuda_fail(e, "NCCL transport: selecting the device");
}

static terse_status_t leave(const nccl_impl_t *m, int old, terse_status_t s)
{
    if (old != m->dev) cudaSetDevice(old);
    return s;
}

static terse_status_t copy(nccl_impl_t *m, void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    if (bytes == 0) return TERSE_OK;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, m->stream);
    return e == cudaSuccess ? TERSE_OK : cuda_fail(e, "NCCL transport: staging copy");
}

/* Waits for the stream, polling NCCL's asynchronous error meanwhile: a collective whose peer
 * failed never completes, so waiting on the stream alone could wait for ever. */
static terse_status_t finish(nccl_impl_t *m, const char *what)
{
    for (;;) {
        ncclResult_t async = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(m->comm, &async);
        if (r != ncclSuccess) return nccl_fail(r, "ncclCommGetAsyncError");
        if (async != ncclSuccess) return nccl_fail(async, what);
        cudaError_t e = cudaStreamQuery(m->stream);
        if (e == cudaSuccess) return TERSE_OK;
        if (e != cudaErrorNotReady) return cuda_fail(e, what);
        sched_yield();
    }
}

/* Waits for the NCCL operation `what` just enqueued, then copies n blocks of the device
 * staging buffer d, counts[q] bytes at displs[q], to the same places in host and waits for
 * the copies: the order that keeps a copy from waiting behind a collective that never ends. */
static terse_status_t land(nccl_impl_t *m, const char *what, void *host, const char *d, int n,
                           const size_t *counts, const size_t *displs)
{
    TERSE_CHECK(finish(m, what));
    for (int q = 0; q < n; q++)
        TERSE_CHECK(copy(m, (char *)host + displs[q], d + displs[q], counts[q], cudaMemcpyDeviceToHost));
    return finish(m, "copying a collective's result to the host");
}

static size_t extent(const transport_t *t, const size_t *counts, const size_t *displs)
{
    size_t end = 0;
    for (int r = 0; r < t->size; r++)
        if (counts[r] && displs[r] + counts[r] > end) end = displs[r] + counts[r];
    return end;
}

static terse_status_t run_allgather(transport_t *t, const void *send, size_t bytes, void *recv)
{
    nccl_impl_t *m = t->impl;
    const size_t total = bytes * (size_t)t->size, at = 0;
    TERSE_CHECK(prepare(t, bytes, total));
    if (bytes > 0) {
        TERSE_CHECK(copy(m, m->d_send, send, bytes, cudaMemcpyHostToDevice));
        ncclResult_t r = ncclAllGather(m->d_send, m->d_recv, bytes, ncclUint8, m->comm, m->stream);
        if (r != ncclSuccess) return nccl_fail(r, "ncclAllGather");
        TERSE_CHECK(land(m, "ncclAllGather", recv, m->d_recv, 1, &total, &at));
    }
    transport_count_to_all(t, bytes);
    return TERSE_OK;
}

static terse_status_t nccl_allgather(transport_t *t, const void *send, size_t bytes, void *recv)
{
    int old;
    TERSE_CHECK(enter(t->impl, &old));
    return leave(t->impl, old, run_allgather(t, send, bytes, recv));
}

static terse_status_t run_allgatherv(transport_t *t, const void *send, void *recv, const size_t *counts,
                                      const size_t *displs)
{
    nccl_impl_t *m = t->impl;
    const size_t total = extent(t, counts, displs);
    TERSE_CHECK(prepare(t, 0, total));
    char *d = m->d_recv;
    const char *mine = send ? send : (const char *)recv + displs[t->rank];
    TERSE_CHECK(copy(m, d + displs[t->rank], mine, counts[t->rank], cudaMemcpyHostToDevice));
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; r == ncclSuccess && q < t->size; q++)
        if (counts[q]) r = ncclBroadcast(d + displs[q], d + displs[q], counts[q], ncclUint8, q, m->comm, m->stream);
    ncclResult_t end = ncclGroupEnd();
    if (r != ncclSuccess || end != ncclSuccess) return nccl_fail(r != ncclSuccess ? r : end, "ncclBroadcast (allgatherv)");
    TERSE_CHECK(land(m, "ncclBroadcast (allgatherv)", recv, d, t->size, counts, displs));
    transport_count_to_all(t, counts[t->rank]);
    return TERSE_OK;
}

static terse_status_t nccl_allgatherv(transport_t *t, const void *send, void *recv, const size_t *counts,
                                      const size_t *displs)
{
    int old;
    TERSE_CHECK(enter(t->impl, &old));
    return leave(t->impl, old, run_allgatherv(t, send, recv, counts, displs));
}

static terse_status_t run_alltoallv(transport_t *t, const void *send, const size_t *scounts, const size_t *sdispls,
                                     void *recv, const size_t *rcounts, const size_t *rdispls)
{
    nccl_impl_t *m = t->impl;
    const size_t stotal = extent(t, scounts, sdispls), rtotal = extent(t, rcounts, rdispls);
    TERSE_CHECK(prepare(t, stotal, rtotal));
    char *ds = m->d_send, *dr = m->d_recv;
    TERSE_CHECK(copy(m, ds, send, stotal, cudaMemcpyHostToDevice));
    const int me = t->rank;
    TERSE_CHECK(copy(m, dr + rdispls[me], ds + sdispls[me], scounts[me], cudaMemcpyDeviceToDevice));
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; r == ncclSuccess && q < t->size; q++) {
        if (q == me) continue;
        if (scounts[q]) r = ncclSend(ds + sdispls[q], scounts[q], ncclUint8, q, m->comm, m->stream);
        if (r == ncclSuccess && rcounts[q]) r = ncclRecv(dr + rdispls[q], rcounts[q], ncclUint8, q, m->comm, m->stream);
    }
    ncclResult_t end = ncclGroupEnd();
    if (r != ncclSuccess || end != ncclSuccess) return nccl_fail(r != ncclSuccess ? r : end, "ncclSend/ncclRecv (alltoallv)");
    TERSE_CHECK(land(m, "ncclSend/ncclRecv (alltoallv)", recv, dr, t->size, rcounts, rdispls));
    transport_count_alltoallv(t, scounts);
    return TERSE_OK;
}

static terse_status_t nccl_alltoallv(transport_t *t, const void *send, const size_t *scounts, const size_t *sdispls,
                                     void *recv, const size_t *rcounts, const size_t *rdispls)
{
    int old;
    TERSE_CHECK(enter(t->impl, &old));
    return leave(t->impl, old, run_alltoallv(t, send, scounts, sdispls, recv, rcounts, rdispls));
}

static terse_status_t run_bcast(transport_t *t, void *buf, size_t bytes, int root)
{
    nccl_impl_t *m = t->impl;
    const size_t at = 0;
    TERSE_CHECK(prepare(t, 0, bytes));
    if (bytes > 0) {
        if (t->rank == root) TERSE_CHECK(copy(m, m->d_recv, buf, bytes, cudaMemcpyHostToDevice));
        ncclResult_t r = ncclBroadcast(m->d_recv, m->d_recv, bytes, ncclUint8, root, m->comm, m->stream);
        if (r != ncclSuccess) return nccl_fail(r, "ncclBroadcast");
        TERSE_CHECK(land(m, "ncclBroadcast", buf, m->d_recv, t->rank != root, &bytes, &at));
    }
    if (t->rank == root) transport_count_to_all(t, bytes);
    return TERSE_OK;
}

static terse_status_t nccl_bcast(transport_t *t, void *buf, size_t bytes, int root)
{
    int old;
    TERSE_CHECK(enter(t->impl, &old));
    return leave(t->impl, old, run_bcast(t, buf, bytes, root));
}

static void nccl_destroy(transport_t *t)
{
    nccl_impl_t *m = t->impl;
    if (!m) return;
    int old = m->dev;
    cudaGetDevice(&old);
    cudaSetDevice(m->dev);
    cudaFree(m->d_send);
    cudaFree(m->d_recv);
    cudaSetDevice(old);
    free(m);
    t->impl = NULL;
}

static const transport_ops_t nccl_ops = {
    .size = sizeof(transport_ops_t),
    .name = "nccl",
    .allgather = nccl_allgather,
    .allgatherv = nccl_allgatherv,
    .alltoallv = nccl_alltoallv,
    .bcast = nccl_bcast,
    .destroy = nccl_destroy,
};

terse_status_t transport_nccl_create(ncclComm_t comm, cudaStream_t stream, transport_t *t)
{
    nccl_impl_t *m = calloc(1, sizeof *m);
    if (!m) return terse_error(TERSE_ERR_NOMEM, "NCCL transport: out of memory");
    m->comm = comm;
    m->stream = stream;
    int rank = 0, size = 0;
    ncclResult_t r = ncclCommUserRank(comm, &rank);
    if (r == ncclSuccess) r = ncclCommCount(comm, &size);
    if (r == ncclSuccess) r = ncclCommCuDevice(comm, &m->dev);
    if (r != ncclSuccess) {
        free(m);
        return terse_error(TERSE_ERR_ARG, "terse_comm_create_nccl: comm is not a usable NCCL communicator: %s",
                           ncclGetErrorString(r));
    }
    t->ops = &nccl_ops;
    t->impl = m;
    t->rank = rank;
    t->size = size;
    t->sent_bytes = t->sent_inter_bytes = 0;
    transport_set_nodes(t, NULL);
    return TERSE_OK;
}
