/* What the multi-rank GPU tests share: a model of layers that covers every codec and
 * feedback method, deterministic gradients, and the comparison of a communicator on device
 * buffers against one on host buffers, which must give the same bits (the device path runs
 * the same engine on staged copies). */
#ifndef TERSE_GPU_DEVICE_MODEL_H
#define TERSE_GPU_DEVICE_MODEL_H

#include <math.h>

#include "../mpi/mpitest.h"
#include "gpu_test.h"
#include "terse.h"

typedef struct {
    const char *name;
    size_t rows, cols;
    const char *config;
} gpu_layer_spec_t;

static const gpu_layer_spec_t gpu_model[] = {
    {"topk_ef", 30, 40, "compressor=topk:density=0.05; feedback=ef"},
    {"bias", 1, 64, "compressor=none"},
    {"empty", 0, 0, "compressor=none"},
    {"onebit", 40, 50, "compressor=onebit; feedback=ef"},
    {"qsgd", 33, 31, "compressor=qsgd:bits=4"},
    {"dgc", 50, 40, "compressor=dgc:density=0.01"},
    {"powersgd", 64, 48, "compressor=powersgd:rank=2,start=0; feedback=ef"},
    {"randk", 20, 60, "compressor=randk:density=0.1"},
    {"fp16", 25, 41, "compressor=fp16"},
    {"bf16", 17, 19, "compressor=bf16; feedback=econtrol:eta=0.5"},
    {"topk_ef21", 36, 36, "compressor=topk:k=50; feedback=ef21"},
    {"big", 512, 1024, "compressor=topk:density=0.01; feedback=ef21sgdm:eta=0.1"},
};
#define GPU_MODEL_LAYERS ((int)(sizeof gpu_model / sizeof gpu_model[0]))

/* Skips the test (77) without a CUDA device, on the device of this rank's place on its node
 * (a device shared round robin), then starts MPI with threads for terse_iallreduce. */
static inline void gpu_model_init(const char *test, int *argc, char ***argv)
{
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    gpu_test_require(test, local ? atoi(local) : 0);
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
}

/* Layer l's gradient on this rank at step t. */
static inline void gpu_model_gradient(float *g, size_t n, int rank, int l, int t)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(rank + 1) + 0x1234567ull * (uint64_t)(l + 1) + (uint64_t)t;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = (float)((double)(s >> 40) / (double)(1ull << 24) - 0.5) * (float)(1 + (i % 7));
    }
}

/* Registers the model's layers on c; 0 on success. */
static inline int gpu_model_add(terse_comm_t *c, int *ids)
{
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        terse_status_t s = terse_layer_add(c, gpu_model[l].name, gpu_model[l].rows, gpu_model[l].cols,
                                           gpu_model[l].config, &ids[l]);
        EXPECT(s == TERSE_OK, "terse_layer_add(%s): %s", gpu_model[l].name, terse_last_error());
        if (s != TERSE_OK) return 1;
    }
    return 0;
}

/* Runs `steps` steps of the model on host communicator hc (host buffers) and device
 * communicator dc (device buffers), alternating terse_allreduce_many, terse_allreduce per
 * layer and terse_iallreduce + terse_wait, and expects the same bits after every step.
 * After step 2 the device communicator saves its state and loads it back (the agreements
 * of save and load run over its transport). A last call has a NaN in one layer on rank 0:
 * both fail alike, and every buffer, finished layers of the fused bucket included, holds
 * the same bits on both. */
static inline void gpu_model_compare(terse_comm_t *hc, terse_comm_t *dc, int steps, const char *what)
{
    int hid[GPU_MODEL_LAYERS], did[GPU_MODEL_LAYERS];
    if (gpu_model_add(hc, hid) || gpu_model_add(dc, did)) return;
    float *h[GPU_MODEL_LAYERS], *d[GPU_MODEL_LAYERS], *back[GPU_MODEL_LAYERS];
    const int rank = mpitest_rank();
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        const size_t n = gpu_model[l].rows * gpu_model[l].cols;
        h[l] = malloc(n * sizeof(float) + 4);
        back[l] = malloc(n * sizeof(float) + 4);
        GPU_OK(cudaMalloc((void **)&d[l], n * sizeof(float) + 4));
    }
    for (int t = 0; t < steps; t++) {
        for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
            const size_t n = gpu_model[l].rows * gpu_model[l].cols;
            gpu_model_gradient(h[l], n, rank, l, t);
            GPU_OK(cudaMemcpy(d[l], h[l], n * sizeof(float), cudaMemcpyHostToDevice));
        }
        terse_status_t sh = terse_allreduce_many(hc, GPU_MODEL_LAYERS, hid, h), sd = TERSE_OK;
        if (t % 3 == 0) {
            sd = terse_allreduce_many(dc, GPU_MODEL_LAYERS, did, d);
        } else if (t % 3 == 1) {
            for (int l = 0; l < GPU_MODEL_LAYERS && sd == TERSE_OK; l++) sd = terse_allreduce(dc, did[l], d[l]);
        } else {
            terse_request_t *req[GPU_MODEL_LAYERS];
            int started = 0;
            for (int l = 0; l < GPU_MODEL_LAYERS && sd == TERSE_OK; l++, started++)
                sd = terse_iallreduce(dc, did[l], d[l], &req[l]);
            for (int l = 0; l < started; l++) {
                terse_status_t w = terse_wait(req[l]);
                if (sd == TERSE_OK) sd = w;
            }
        }
        EXPECT(sh == TERSE_OK && sd == TERSE_OK, "%s step %d: host %d, device %d: %s", what, t, sh, sd,
               terse_last_error());
        for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
            const size_t n = gpu_model[l].rows * gpu_model[l].cols;
            GPU_OK(cudaMemcpy(back[l], d[l], n * sizeof(float), cudaMemcpyDeviceToHost));
            const size_t at = mpitest_first_diff(h[l], back[l], n);
            EXPECT(at == n, "%s step %d layer %s: device result differs at %zu (%g vs %g)", what, t,
                   gpu_model[l].name, at, at < n ? h[l][at] : 0.0, at < n ? back[l][at] : 0.0);
            EXPECT(mpitest_same_on_all(mpitest_hash(back[l], n * sizeof(float))), "%s step %d layer %s: ranks differ",
                   what, t, gpu_model[l].name);
        }
        EXPECT(terse_step_end(hc) == TERSE_OK && terse_step_end(dc) == TERSE_OK, "step_end: %s", terse_last_error());
        if (t == 2) {
            char dir[64], path[128];
            mpitest_ckpt_dir("gpu-state", dir, path);
            EXPECT(dir[0] && terse_state_save(dc, path) == TERSE_OK && terse_state_load(dc, path) == TERSE_OK,
                   "%s: state save and load on the device communicator: %s", what, terse_last_error());
            mpitest_tmpdir_remove(dir, path);
        }
    }
    /* a NaN in one layer of the fused call, on rank 0 */
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        const size_t n = gpu_model[l].rows * gpu_model[l].cols;
        gpu_model_gradient(h[l], n, rank, l, steps);
        if (rank == 0 && strcmp(gpu_model[l].name, "qsgd") == 0) h[l][5] = NAN;
        GPU_OK(cudaMemcpy(d[l], h[l], n * sizeof(float), cudaMemcpyHostToDevice));
    }
    terse_status_t nh = terse_allreduce_many(hc, GPU_MODEL_LAYERS, hid, h);
    terse_status_t nd = terse_allreduce_many(dc, GPU_MODEL_LAYERS, did, d);
    EXPECT(nh == TERSE_ERR_NONFINITE && nd == nh, "%s: a NaN: host %d, device %d", what, nh, nd);
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        const size_t n = gpu_model[l].rows * gpu_model[l].cols;
        GPU_OK(cudaMemcpy(back[l], d[l], n * sizeof(float), cudaMemcpyDeviceToHost));
        EXPECT(memcmp(h[l], back[l], n * sizeof(float)) == 0, "%s: after the NaN call, layer %s differs", what,
               gpu_model[l].name);
    }
    /* statistics: the same wire bytes, layer by layer */
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        terse_stats_t a, b;
        EXPECT(terse_layer_stats(hc, hid[l], &a) == TERSE_OK && terse_layer_stats(dc, did[l], &b) == TERSE_OK &&
                   a.wire_bytes == b.wire_bytes && a.calls == b.calls,
               "%s layer %s: statistics differ", what, gpu_model[l].name);
    }
    for (int l = 0; l < GPU_MODEL_LAYERS; l++) {
        free(h[l]);
        free(back[l]);
        cudaFree(d[l]);
    }
}

#endif
