/* Buffers in GPU memory: what the engine needs of the CUDA runtime to serve a communicator
 * whose buffers live on the device (device=cuda, and every NCCL communicator).
 *
 * The engine runs on host memory. A call on device buffers is staged: the gradient is
 * copied to the layer's pinned host mirror (sized once, at terse_layer_add), the call runs
 * there exactly as it would on the CPU, and the result is copied back. The copies run on the
 * communicator's stream (the caller's stream for NCCL, the legacy default stream for MPI,
 * which waits for the work queued on blocking streams) and the call waits for them, so a
 * call returns with the result in place, as on the CPU.
 *
 * Every function compiles without CUDA; in a build without it, or on a machine without a
 * usable device, they answer TERSE_ERR_UNSUPPORTED with the reason. */
#ifndef TERSE_DEVICE_H
#define TERSE_DEVICE_H

#include <stddef.h>

#include "terse.h"

/* 1 when this build has CUDA (meson -Dcuda), else 0. */
int device_built(void);

/* The device the calling thread uses (cudaGetDevice), after checking that it is usable (its
 * context starts: a device in a prohibited compute mode or out of memory is not):
 * TERSE_ERR_UNSUPPORTED naming why not (built without CUDA, no driver, no device). `fn`
 * names the public call for the message. */
terse_status_t device_current(const char *fn, int *dev);

/* TERSE_ERR_ARG unless p is memory of device `dev` (device memory there, or managed):
 * `what` names the argument. The caller's current device is left as it was. */
terse_status_t device_check_pointer(const void *p, int dev, const char *fn, const char *what);

/* Pinned host memory of `bytes` bytes (at least 1), for a layer's mirror; NULL when out of
 * memory or without CUDA. */
void *device_host_alloc(size_t bytes);
void device_host_free(void *p);

/* Copies n buffers between device and host memory, d[i] to h[i] when to_host is 1 and h[i] to
 * d[i] when it is 0, bytes[i] each, on `stream` on device `dev`, and waits once for all of
 * them. The calling thread runs on `dev` meanwhile (the progress thread runs calls too) and
 * gets its own current device back. TERSE_ERR_BACKEND with CUDA's words on failure. */
terse_status_t device_copy(int dev, void *stream, int to_host, int n, float *const *d, float *const *h,
                           const size_t *bytes);

#endif
