/* terse-bench on GPU buffers (gpu.h). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"

#if TERSE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "dcodec.h"
#include "error.h"

int bench_gpu_open(int local_rank, char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(why, len, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 1;
    }
    e = cudaSetDevice(local_rank % n);
    if (e != cudaSuccess) {
        snprintf(why, len, "cudaSetDevice(%d): %s", local_rank % n, cudaGetErrorString(e));
        return 1;
    }
    return 0;
}

void *bench_gpu_alloc(size_t bytes)
{
    void *d = NULL;
    return cudaMalloc(&d, bytes ? bytes : 1) == cudaSuccess ? d : NULL;
}

void bench_gpu_free(void *d) { cudaFree(d); }

int bench_gpu_put(void *d, const void *h, size_t bytes)
{
    return bytes && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess;
}

int bench_gpu_get(void *h, const void *d, size_t bytes)
{
    return bytes && cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) != cudaSuccess;
}

/* Times are wall clock around each phase with the stream drained, so that a codec that
 * reads a length back to the host pays for it. */
int bench_kernels_cuda(const char *const *codecs, size_t n_codecs, size_t min_bytes, size_t max_bytes,
                       const shape_list_t *shapes, int iters, int warmup)
{
    char why[256];
    if (bench_gpu_open(0, why, sizeof why)) {
        fprintf(stderr, "terse-bench: --device cuda: %s\n", why);
        return 2;
    }
    int dev = 0;
    struct cudaDeviceProp prop;
    cudaGetDevice(&dev);
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) snprintf(prop.name, sizeof prop.name, "?");
    cudaStream_t st;
    if (cudaStreamCreate(&st) != cudaSuccess) return 1;
    printf("# terse-bench --kernels --device cuda: %s; times are means over %d iterations\n", prop.name, iters);
    printf("# %-38s %12s %12s %12s %12s %8s\n", "codec", "size(B)", "encode(us)", "decode(us)", "d2dcopy(us)",
           "ratio");
    const size_t n_steps = shapes ? shapes->n : SIZE_MAX;
    size_t bytes = min_bytes;
    int rc = 0;
    for (size_t step = 0; rc == 0 && step < n_steps && (shapes || bytes <= max_bytes); step++, bytes *= 2) {
        const bench_shape_t shape = shapes ? shapes->v[step] : bench_flat_shape(bytes / 4);
        if (shapes) bytes = shape.rows * shape.cols * 4;
        const size_t n = bytes / 4;
        float *h = malloc(n * 4 + 4);
        float *in = bench_gpu_alloc(n * 4), *out = bench_gpu_alloc(n * 4), *copy = bench_gpu_alloc(n * 4);
        if (!h || !in || !out || !copy) {
            fprintf(stderr, "terse-bench: out of memory for %zu bytes\n", bytes);
            rc = 1;
        }
        if (rc == 0) {
            bench_fill_gradient(h, n, 0, 1);
            if (bench_gpu_put(in, h, n * 4) || cudaMemset(out, 0, n * 4) != cudaSuccess) rc = 1;
        }
        for (size_t c = 0; rc == 0 && c < n_codecs; c++) {
            double p[TERSE_MAX_PARAMS];
            const codec_ops_t *host = bench_codec(codecs[c], n, p);
            const dcodec_ops_t *ops = host ? dcodec_find(host->name) : NULL;
            if (host && !ops) fprintf(stderr, "terse-bench: %s has no CUDA codec\n", host->name);
            if (!ops) {
                rc = 2;
                break;
            }
            void *msg = bench_gpu_alloc(ops->host->max_bytes(p, n)), *scratch = bench_gpu_alloc(ops->scratch_bytes(p, n));
            if (!msg || !scratch) {
                fprintf(stderr, "terse-bench: out of device memory for %s\n", codecs[c]);
                rc = 1;
            }
            const codec_ctx_t ctx = {0x5eed, 0, shape.rows, shape.cols};
            double enc = 0, dec = 0, cpy = 0;
            for (int it = -warmup; rc == 0 && it < iters; it++) {
                size_t b = 0;
                cudaStreamSynchronize(st);
                double t0 = bench_now_us();
                terse_status_t s = ops->encode(p, &ctx, in, n, msg, &b, scratch, st);
                if (s == TERSE_OK && cudaStreamSynchronize(st) != cudaSuccess) s = TERSE_ERR_BACKEND;
                double t1 = bench_now_us();
                if (s == TERSE_OK) s = ops->decode_add(p, msg, b, n, out, scratch, st);
                if (s == TERSE_OK && cudaStreamSynchronize(st) != cudaSuccess) s = TERSE_ERR_BACKEND;
                double t2 = bench_now_us();
                if (s != TERSE_OK) {
                    fprintf(stderr, "terse-bench: %s on the device: %s\n", codecs[c], terse_last_error());
                    rc = 1;
                    break;
                }
                cudaMemcpyAsync(copy, in, n * 4, cudaMemcpyDeviceToDevice, st);
                cudaStreamSynchronize(st);
                double t3 = bench_now_us();
                if (it >= 0) {
                    enc += t1 - t0;
                    dec += t2 - t1;
                    cpy += t3 - t2;
                }
            }
            if (rc == 0) bench_kernel_row(codecs[c], shape, bytes, enc, dec, cpy, iters);
            bench_gpu_free(msg);
            bench_gpu_free(scratch);
        }
        free(h);
        bench_gpu_free(in);
        bench_gpu_free(out);
        bench_gpu_free(copy);
        if (bytes == 0) break;
    }
    cudaStreamDestroy(st);
    return rc;
}

#if TERSE_HAVE_NCCL
#include <nccl.h>

#include "terse_nccl.h"

static ncclComm_t nccl_;

static int nccl_open(void)
{
    if (nccl_) return 0;
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ncclUniqueId id;
    ncclResult_t r = ncclSuccess;
    if (rank == 0) r = ncclGetUniqueId(&id);
    int ok = r == ncclSuccess;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) {
        if (rank == 0) fprintf(stderr, "terse-bench: ncclGetUniqueId: %s\n", ncclGetErrorString(r));
        return 1;
    }
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    r = ncclCommInitRank(&nccl_, size, id, rank);
    if (r != ncclSuccess) {
        fprintf(stderr, "terse-bench: rank %d: ncclCommInitRank: %s\n", rank, ncclGetErrorString(r));
        nccl_ = NULL;
        return 1;
    }
    return 0;
}

terse_status_t bench_nccl_comm(const char *cfg, terse_comm_t **out)
{
    if (nccl_open()) return terse_error(TERSE_ERR_BACKEND, "the NCCL communicator could not be made");
    return terse_comm_create_nccl(nccl_, NULL, cfg, out);
}

int bench_nccl_allreduce(float *const *d, const size_t *counts, size_t n, int sum)
{
    if (nccl_open()) return 1;
    ncclResult_t r = ncclGroupStart();
    for (size_t l = 0; r == ncclSuccess && l < n; l++)
        if (counts[l]) r = ncclAllReduce(d[l], d[l], counts[l], ncclFloat32, sum ? ncclSum : ncclAvg, nccl_, NULL);
    ncclResult_t e = ncclGroupEnd();
    return r != ncclSuccess || e != ncclSuccess || cudaStreamSynchronize(NULL) != cudaSuccess;
}

void bench_gpu_close(void)
{
    if (nccl_) ncclCommDestroy(nccl_);
    nccl_ = NULL;
}

#else

terse_status_t bench_nccl_comm(const char *cfg, terse_comm_t **out)
{
    (void)cfg, (void)out;
    return terse_error(TERSE_ERR_UNSUPPORTED, "--transport nccl: this terse was built without NCCL");
}

int bench_nccl_allreduce(float *const *d, const size_t *counts, size_t n, int sum)
{
    (void)d, (void)counts, (void)n, (void)sum;
    return 1;
}

void bench_gpu_close(void) {}

#endif

#else /* no CUDA */

#include "error.h"

static const char unbuilt[] = "this terse was built without CUDA (meson -Dcuda=enabled)";

int bench_gpu_open(int local_rank, char *why, size_t len)
{
    (void)local_rank;
    snprintf(why, len, "%s", unbuilt);
    return 1;
}

void *bench_gpu_alloc(size_t bytes)
{
    (void)bytes;
    return NULL;
}

void bench_gpu_free(void *d) { (void)d; }

int bench_gpu_put(void *d, const void *h, size_t bytes)
{
    (void)d, (void)h, (void)bytes;
    return 1;
}

int bench_gpu_get(void *h, const void *d, size_t bytes)
{
    (void)h, (void)d, (void)bytes;
    return 1;
}

terse_status_t bench_nccl_comm(const char *cfg, terse_comm_t **out)
{
    (void)cfg, (void)out;
    return terse_error(TERSE_ERR_UNSUPPORTED, "--transport nccl: %s", unbuilt);
}

int bench_nccl_allreduce(float *const *d, const size_t *counts, size_t n, int sum)
{
    (void)d, (void)counts, (void)n, (void)sum;
    return 1;
}

void bench_gpu_close(void) {}

int bench_kernels_cuda(const char *const *codecs, size_t n_codecs, size_t min_bytes, size_t max_bytes,
                       const shape_list_t *shapes, int iters, int warmup)
{
    (void)codecs, (void)n_codecs, (void)min_bytes, (void)max_bytes, (void)shapes, (void)iters, (void)warmup;
    fprintf(stderr, "terse-bench: --device cuda: %s\n", unbuilt);
    return 2;
}

#endif
