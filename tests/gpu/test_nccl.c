/* Communicators over NCCL (terse_nccl.h) under mpirun, one GPU per rank: every codec and
 * feedback method gives the bits that an MPI communicator gives on host buffers, through
 * every call; bad arguments (NULL comm or out, hier=on, a host buffer) are refused with a
 * message. NCCL refuses two ranks on one GPU, so a run with more ranks than GPUs is skipped
 * (77), as is a machine without a CUDA device. */
#include <nccl.h>

#include "device_model.h"
#include "terse_mpi.h"
#include "terse_nccl.h"

static void bad_arguments(ncclComm_t nc)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_nccl(NULL, NULL, NULL, &c) == TERSE_ERR_ARG && c == NULL, "NULL comm accepted");
    EXPECT(terse_comm_create_nccl(nc, NULL, NULL, NULL) == TERSE_ERR_ARG, "NULL out accepted");
    EXPECT(terse_comm_create_nccl(nc, NULL, "hier=on", &c) == TERSE_ERR_ARG && strstr(terse_last_error(), "hier"),
           "hier=on: %s", terse_last_error());
    EXPECT(terse_comm_create_nccl(nc, NULL, "compressor=nope", &c) == TERSE_ERR_ARG, "a bad configuration accepted");
    /* the configuration in force says device=cuda and hier=off */
    terse_status_t s = terse_comm_create_nccl(nc, NULL, "compressor=topk:density=0.1", &c);
    EXPECT(s == TERSE_OK, "create: %s", terse_last_error());
    if (s != TERSE_OK) return;
    char cfg[1024];
    EXPECT(terse_comm_config(c, cfg, sizeof cfg) == TERSE_OK && strstr(cfg, "device=cuda") && strstr(cfg, "hier=off"),
           "configuration: %s", cfg);
    int id = -1;
    EXPECT(terse_layer_add(c, "w", 10, 10, NULL, &id) == TERSE_OK, "layer_add: %s", terse_last_error());
    float host[100] = {0};
    EXPECT(terse_allreduce(c, id, host) == TERSE_ERR_ARG, "a host buffer accepted");
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    gpu_model_init("gpu-nccl", &argc, &argv);
    int rank, size, devices = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    GPU_OK(cudaGetDeviceCount(&devices));
    int fewest = devices;
    MPI_Allreduce(MPI_IN_PLACE, &fewest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Comm node;
    int local_size = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    int most = local_size;
    MPI_Allreduce(MPI_IN_PLACE, &most, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (most > fewest) {
        if (rank == 0) printf("SKIP gpu-nccl: %d ranks on a node with %d GPU(s); NCCL needs one GPU per rank\n", most, fewest);
        MPI_Finalize();
        return GPU_TEST_SKIP;
    }
    ncclUniqueId uid;
    if (rank == 0 && ncclGetUniqueId(&uid) != ncclSuccess) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Bcast(&uid, (int)sizeof uid, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t nc;
    ncclResult_t r = ncclCommInitRank(&nc, size, uid, rank);
    EXPECT(r == ncclSuccess, "ncclCommInitRank: %s", ncclGetErrorString(r));
    if (r != ncclSuccess) return mpitest_finish("gpu-nccl");
    cudaStream_t stream;
    GPU_OK(cudaStreamCreate(&stream));
    static const char *const configs[] = {"min_size=0", "min_size=0; threads=2", "min_size=0; fuse=0"};
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        terse_comm_t *hc = NULL, *dc = NULL;
        terse_status_t a = terse_comm_create_mpi(MPI_COMM_WORLD, configs[i], &hc);
        terse_status_t b = terse_comm_create_nccl(nc, i == 0 ? NULL : stream, configs[i], &dc);
        EXPECT(a == TERSE_OK && b == TERSE_OK, "creating the communicators (%s): %s", configs[i], terse_last_error());
        if (a == TERSE_OK && b == TERSE_OK) gpu_model_compare(hc, dc, 6, configs[i]);
        terse_comm_destroy(hc);
        terse_comm_destroy(dc);
    }
    bad_arguments(nc);
    ncclCommDestroy(nc);
    cudaStreamDestroy(stream);
    return mpitest_finish("gpu-nccl");
}
