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
    if (e == cudaSuccess) e = cudaFree(NULL); /* starts the context: the device is usable */
    if (e != cudaSuccess)
        return terse_error(TERSE_ERR_UNSUPPORTED, "%s: CUDA device %d is not usable: %s", fn, *dev,
                           cudaGetErrorString(e));
    return TERSE_OK;
}

/* Runs the calling thread on device dev; *old gets the device to go back to. */
static cudaError_t enter_device(int dev, int *old)
{
    cudaError_t e = cudaGetDevice(old);
    if (e == cudaSuccess && *old != dev) e = cudaSetDevice(dev);
    return e;
}

static void leave_device(int dev, int old)
{
    if (old != dev) cudaSetDevice(old);
}

terse_status_t device_check_pointer(const void *p, int dev, const char *fn, const char *what)
{
    struct cudaPointerAttributes a;
    int old = dev;
    cudaError_t e = enter_device(dev, &old);
    if (e != cudaSuccess) return cuda_fail(e, fn);
    e = cudaPointerGetAttributes(&a, p);
    leave_device(dev, old);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* older runtimes leave the error sticky for a host pointer */
        return terse_error(TERSE_ERR_ARG, "%s: %s %p is not CUDA memory (%s); the communicator has device=cuda",
                           fn, what, p, cudaGetErrorString(e));
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        return terse_error(TERSE_ERR_ARG, "%s: %s %p is host memory, but the communicator has device=cuda: "
                           "pass device memory, or create the communicator with device=cpu", fn, what, p);
    if (a.type == cudaMemoryTypeDevice && a.device != dev)
        return terse_error(TERSE_ERR_ARG, "%s: %s %p is memory of CUDA device %d, but the communicator's device is %d",
                           fn, what, p, a.device, dev);
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

terse_status_t device_copy(int dev, void *stream, int to_host, int n, float *const *d, float *const *h,
                           const size_t *bytes)
{
    const char *what = to_host ? "copying gradients from the device" : "copying results to the device";
    int old = dev;
    cudaError_t e = enter_device(dev, &old);
    if (e != cudaSuccess) return cuda_fail(e, what);
    const cudaStream_t s = (cudaStream_t)stream;
    for (int i = 0; e == cudaSuccess && i < n; i++)
        if (bytes[i] > 0)
            e = to_host ? cudaMemcpyAsync(h[i], d[i], bytes[i], cudaMemcpyDeviceToHost, s)
                        : cudaMemcpyAsync(d[i], h[i], bytes[i], cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    leave_device(dev, old);
    return e == cudaSuccess ? TERSE_OK : cuda_fail(e, what);
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

terse_status_t device_check_pointer(const void *p, int dev, const char *fn, const char *what)
{
    (void)p;
    (void)dev;
    (void)what;
    return unbuilt(fn);
}

void *device_host_alloc(size_t bytes)
{
    (void)bytes;
    return NULL;
}

void device_host_free(void *p) { (void)p; }

terse_status_t device_copy(int dev, void *stream, int to_host, int n, float *const *d, float *const *h,
                           const size_t *bytes)
{
    (void)dev, (void)stream, (void)n, (void)d, (void)h, (void)bytes;
    return unbuilt(to_host ? "copying gradients from the device" : "copying results to the device");
}

#endif
