/* terse-bench on GPU buffers (--device cuda): the device, device buffers, the NCCL
 * communicator of --transport nccl, and the device codec benchmark. In a build without CUDA
 * (or NCCL) each entry point fails and says why. */
#ifndef TERSE_BENCH_GPU_H
#define TERSE_BENCH_GPU_H

#include <stddef.h>

#include "bench.h"
#include "terse.h"

/* Selects device local_rank % devices for this process. 0, or 1 with the reason in why. */
int bench_gpu_open(int local_rank, char *why, size_t len);

/* Device memory of `bytes` bytes (at least 1), or NULL. */
void *bench_gpu_alloc(size_t bytes);
void bench_gpu_free(void *d);

/* Synchronous copies to (put) and from (get) device memory; 0 on success. */
int bench_gpu_put(void *d, const void *h, size_t bytes);
int bench_gpu_get(void *h, const void *d, size_t bytes);

/* --transport nccl: a terse communicator with configuration cfg over an NCCL communicator
 * of MPI_COMM_WORLD's ranks (made on first use, kept until bench_gpu_close). Collective.
 * Returns terse's status; an NCCL failure is TERSE_ERR_BACKEND with its message on stderr. */
terse_status_t bench_nccl_comm(const char *cfg, terse_comm_t **out);

/* Dense baseline on NCCL: in-place ncclAllReduce of each device buffer (ncclAvg, or ncclSum
 * when sum), then waits. 0 on success. */
int bench_nccl_allreduce(float *const *d, const size_t *counts, size_t n, int sum);

/* Frees the NCCL communicator, if any. */
void bench_gpu_close(void);

/* --kernels --device cuda: each codec's device encode and decode next to a device-to-device
 * copy of the same buffer, as bench_kernels does on the CPU. */
int bench_kernels_cuda(const char *const *codecs, size_t n_codecs, size_t min_bytes, size_t max_bytes,
                       const shape_list_t *shapes, int iters, int warmup);

#endif
