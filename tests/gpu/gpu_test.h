/* What the GPU tests share: they run only where a CUDA device answers, and report
 * themselves as skipped (exit status 77, which meson counts as SKIP) everywhere else,
 * saying why. */
#ifndef TERSE_GPU_TEST_H
#define TERSE_GPU_TEST_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define GPU_TEST_SKIP 77

/* Exits with GPU_TEST_SKIP, after a line on stdout that says why, unless a CUDA device is
 * usable; then selects device `dev` modulo the device count. */
static inline void gpu_test_require(const char *test, int dev)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP %s: no CUDA device (%s)\n", test, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        exit(GPU_TEST_SKIP);
    }
    e = cudaSetDevice(dev % n);
    if (e != cudaSuccess) {
        printf("FAIL %s: cudaSetDevice(%d): %s\n", test, dev % n, cudaGetErrorString(e));
        exit(1);
    }
}

/* Aborts the test with a message when a CUDA runtime call fails. */
#define GPU_OK(call)                                                                           \
    do {                                                                                       \
        cudaError_t gpu_e_ = (call);                                                           \
        if (gpu_e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                      \
                    cudaGetErrorString(gpu_e_));                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#endif
