/* What the device codecs share: CUDA error handling that turns a failed launch or call into
 * a terse status with a message, and grid sizing. Included by the .cu files only. */
#ifndef TERSE_CUDA_COMMON_CUH
#define TERSE_CUDA_COMMON_CUH

/* The shared C headers (codec.h and the codecs' own) use C's restrict, which C++ spells
 * __restrict__: every .cu file includes this header before them. */
#ifndef restrict
#define restrict __restrict__
#endif

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "dcodec.h"
extern "C" {
#include "error.h"
}

/* TERSE_ERR_BACKEND naming the CUDA error and where it happened; TERSE_OK for cudaSuccess. */
static inline terse_status_t cuda_status(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return TERSE_OK;
    return terse_error(TERSE_ERR_BACKEND, "%s: CUDA error %d: %s", what, (int)e, cudaGetErrorString(e));
}

/* Returns from the calling function with cuda_status(call) when the call fails. */
#define CUDA_CHECK(call, what)                                                                \
    do {                                                                                      \
        terse_status_t cuda_s_ = cuda_status((call), (what));                                 \
        if (cuda_s_ != TERSE_OK) return cuda_s_;                                              \
    } while (0)

/* The launch error of the kernel just enqueued, as CUDA_CHECK. */
#define CUDA_CHECK_LAUNCH(what) CUDA_CHECK(cudaGetLastError(), (what))

#define CUDA_THREADS 256

/* Blocks of CUDA_THREADS threads for a grid-stride loop over n items: enough to fill the
 * device, never more than the items need, at least 1. */
static inline unsigned cuda_blocks(size_t n)
{
    size_t b = (n + CUDA_THREADS - 1) / CUDA_THREADS;
    if (b > 4096) b = 4096;
    return b ? (unsigned)b : 1u;
}

static inline cudaStream_t cuda_stream(void *s) { return (cudaStream_t)s; }

#endif
