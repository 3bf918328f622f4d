/* Device buffers on an MPI communicator (device=cuda, the host-staged path) under mpirun:
 * every codec and feedback method gives the bits the same communicator gives on host
 * buffers, through terse_allreduce, terse_allreduce_many (fused) and terse_iallreduce;
 * results agree on every rank; a host pointer where device memory is expected is
 * TERSE_ERR_ARG and changes nothing. Several ranks may share one GPU. Skipped (77) where
 * no CUDA device is usable. */
#include "device_model.h"
#include "terse_mpi.h"

static void host_pointer_is_refused(void)
{
    terse_comm_t *c = NULL;
    int id = -1;
    if (terse_comm_create_mpi(MPI_COMM_WORLD, "device=cuda; compressor=topk:density=0.1", &c) != TERSE_OK) {
        EXPECT(0, "creating a device=cuda communicator: %s", terse_last_error());
        return;
    }
    EXPECT(terse_layer_add(c, "w", 10, 10, NULL, &id) == TERSE_OK, "layer_add: %s", terse_last_error());
    float host[100];
    for (int i = 0; i < 100; i++) host[i] = (float)i;
    terse_status_t s = terse_allreduce(c, id, host);
    EXPECT(s == TERSE_ERR_ARG && strstr(terse_last_error(), "host memory"), "host buffer: %d: %s", s,
           terse_last_error());
    EXPECT(host[7] == 7.0f, "the host buffer changed");
    float *bufs[1] = {host};
    s = terse_allreduce_many(c, 1, &id, bufs);
    EXPECT(s == TERSE_ERR_ARG, "host buffer in allreduce_many: %d", s);
    terse_request_t *req = NULL;
    s = terse_iallreduce(c, id, host, &req);
    EXPECT(s == TERSE_ERR_ARG && req == NULL, "host buffer in iallreduce: %d", s);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    gpu_model_init("gpu-device", &argc, &argv);
    static const char *const configs[] = {
        "min_size=0",
        "min_size=0; threads=2",
        "min_size=0; fuse=0",
        "min_size=0; hier=on",
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        char dev[256];
        snprintf(dev, sizeof dev, "%s; device=cuda", configs[i]);
        terse_comm_t *hc = NULL, *dc = NULL;
        terse_status_t a = terse_comm_create_mpi(MPI_COMM_WORLD, configs[i], &hc);
        terse_status_t b = terse_comm_create_mpi(MPI_COMM_WORLD, dev, &dc);
        EXPECT(a == TERSE_OK && b == TERSE_OK, "creating the communicators (%s): %s", configs[i], terse_last_error());
        if (a == TERSE_OK && b == TERSE_OK) gpu_model_compare(hc, dc, 6, configs[i]);
        terse_comm_destroy(hc);
        terse_comm_destroy(dc);
    }
    host_pointer_is_refused();
    return mpitest_finish("gpu-device");
}
