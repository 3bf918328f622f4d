/* Buffers in GPU memory through the CUDA runtime (device.h). Without CUDA every entry point
 * says so. */
#include "device.h"
#include "error.h"

#if TERSE_HAVE_CUDA
#include <cuda_runtime_api.h>

int device_built(void) { return 1; }

static terse_status_t cuda_fail(cudaError_t e, const char *what)
{
    return terse_error(TERSE_ERR_BACKEND, "%s: CUDA error %d: %s", what, (int)e, cudaGetErrorString(e));
}

terse_status_t device_current(const char *fn, int *dev)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return terse_error(TERSE_ERR_UNSUPPORTED, "%s: buffers on a CUDA device, but CUDA has no usable device here: %s",
                           fn, cudaGetErrorString(e));
    if (n == 0) return terse_error(TERSE_ERR_UNSUPPORTED, "%s: buffers on a CUDA device, but this machine has none", fn);
    e = cudaGetDevice(dev);
    return e == cudaSuccess ? TERSE_OK : cuda_fail(e, fn);
}

terse_status_t device_check_pointer(const void *p, const char *fn, const char *what)
{
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* older runtimes leave the error sticky for a host pointer */
        return terse_error(TERSE_ERR_ARG, "%s: %s %p is not CUDA memory (%s); the communicator has device=cuda",
                           fn, what, p, cudaGetErrorString(e));
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        return terse_error(TERSE_ERR_ARG, "%s: %s %p is host memory, but the communicator has device=cuda: "
                           "pass device memory, or create the communicator with device=cpu", fn, what, p);
    return TERSE_OK;
}

void *device_host_alloc(size_t bytes)
{
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) return NULL;
    return p;
}

void device_host_free(void *p)
{
    if (p) cudaFreeHost(p);
}

static terse_status_t copy(int dev, void *stream, void *dst, const void *src, size_t bytes,
                           enum cudaMemcpyKind kind, const char *what)
{
    if (bytes == 0) return TERSE_OK;
    cudaError_t e = cudaSetDevice(dev);
    if (e == cudaSuccess) e = cudaMemcpyAsync(dst, src, bytes, kind, (cudaStream_t)stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize((cudaStream_t)stream);
    return e == cudaSuccess ? TERSE_OK : cuda_fail(e, what);
}

terse_status_t device_to_host(int dev, void *stream, void *host, const void *d, size_t bytes)
{
    return copy(dev, stream, host, d, bytes, cudaMemcpyDeviceToHost, "copying a gradient from the device");
}

terse_status_t device_from_host(int dev, void *stream, void *d, const void *host, size_t bytes)
{
    return copy(dev, stream, d, host, bytes, cudaMemcpyHostToDevice, "copying a result to the device");
}

#else

int device_built(void) { return 0; }

static terse_status_t unbuilt(const char *fn)
{
    return terse_error(TERSE_ERR_UNSUPPORTED,
                       "%s: buffers on a CUDA device, but this terse was built without CUDA "
                       "(configure with meson -Dcuda=enabled where nvcc and the CUDA runtime are installed)", fn);
}

terse_status_t device_current(const char *fn, int *dev)
{
    (void)dev;
    return unbuilt(fn);
}

terse_status_t device_check_pointer(const void *p, const char *fn, const char *what)
{
    (void)p;
    (void)what;
    return unbuilt(fn);
}

void *device_host_alloc(size_t bytes)
{
    (void)bytes;
    return NULL;
}

void device_host_free(void *p) { (void)p; }

terse_status_t device_to_host(int dev, void *stream, void *host, const void *d, size_t bytes)
{
    (void)dev, (void)stream, (void)host, (void)d, (void)bytes;
    return unbuilt("copying a gradient from the device");
}

terse_status_t device_from_host(int dev, void *stream, void *d, const void *host, size_t bytes)
{
    (void)dev, (void)stream, (void)d, (void)host, (void)bytes;
    return unbuilt("copying a result to the device");
}

#endif
