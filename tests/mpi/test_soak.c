/* Soak: thousands of steps over every codec and feedback method, with a checkpoint every
 * few hundred steps; the heap in use (glibc's mallinfo2) must not grow after warm-up.
 * Usage: test_mpi_soak [STEPS] (default 5000). A failing call or any growth beyond a slack
 * for MPI's own free lists fails the test; the heap figures are printed either way. */
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

static int rank_, nranks_;

static const struct {
    const char *name, *config;
    size_t rows, cols;
} layers[] = {
    {"dense", "compressor=none", 300, 1},
    {"fp16", "compressor=fp16; feedback=ef", 700, 1},
    {"bf16", "compressor=bf16", 700, 1},
    {"topk", "compressor=topk:density=0.02; feedback=ef", 40, 50},
    {"topk-ef21", "compressor=topk:k=20; feedback=ef21", 900, 1},
    {"topk-ef21sgdm", "compressor=topk:k=20; feedback=ef21sgdm", 900, 1},
    {"topk-econtrol", "compressor=topk:k=20; feedback=econtrol", 900, 1},
    {"randk", "compressor=randk:density=0.05; feedback=ef", 1000, 1},
    {"dgc", "compressor=dgc:density=0.02", 1000, 1},
    {"onebit", "compressor=onebit", 1000, 1},
    {"qsgd", "compressor=qsgd; feedback=ef", 1000, 1},
    {"powersgd", "compressor=powersgd:rank=2; feedback=ef", 32, 40},
};
enum { N_LAYERS = sizeof layers / sizeof layers[0], MAX_COUNT = 2000 };

static size_t heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    const long steps = argc > 1 ? atol(argv[1]) : 5000;
    const long warmup = steps / 4, every = steps / 8 > 0 ? steps / 8 : 1;
    char dir[64], path[128];
    mpitest_ckpt_dir("soak", dir, path);

    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, "min_size=0", &c) == TERSE_OK, "%s", terse_last_error());
    int ids[N_LAYERS];
    for (int i = 0; i < N_LAYERS; i++)
        EXPECT(terse_layer_add(c, layers[i].name, layers[i].rows, layers[i].cols, layers[i].config, &ids[i]) ==
                   TERSE_OK, "%s: %s", layers[i].name, terse_last_error());
    static float g[N_LAYERS][MAX_COUNT];
    size_t base = 0, peak = 0;
    long failures = 0;
    for (long step = 0; step < steps; step++) {
        for (int i = 0; i < N_LAYERS; i++) {
            const size_t n = layers[i].rows * layers[i].cols;
            for (size_t j = 0; j < n; j++)
                g[i][j] = (float)((j * 2654435761u + (size_t)step * 40503u + (size_t)rank_ * 977u) % 2001u) / 1000.0f - 1.0f;
            if (terse_allreduce(c, ids[i], g[i]) != TERSE_OK && failures++ == 0)
                fprintf(stderr, "rank %d step %ld %s: %s\n", rank_, step, layers[i].name, terse_last_error());
        }
        terse_step_end(c);
        if ((step + 1) % every == 0 && terse_state_save(c, path) != TERSE_OK && failures++ == 0)
            fprintf(stderr, "rank %d step %ld save: %s\n", rank_, step, terse_last_error());
        const size_t h = heap_in_use();
        if (step + 1 == warmup) base = h;
        if (step + 1 > warmup && h > peak) peak = h;
    }
    EXPECT(failures == 0, "%ld failed calls", failures);
    /* Open MPI's free lists may grow by a few requests; terse itself allocates nothing per call */
    const size_t slack = 64 * 1024;
    if (rank_ == 0)
        printf("test_soak: %ld steps x %d layers on %d ranks; heap in use after %ld steps %zu bytes, "
               "largest later %zu (+%zd)\n",
               steps, N_LAYERS, nranks_, warmup, base, peak, (ssize_t)(peak - base));
    EXPECT(peak <= base + slack, "the heap grew from %zu to %zu bytes after warm-up", base, peak);
    terse_comm_destroy(c);
    mpitest_tmpdir_remove(dir, path);
    int rc = mpitest_finish("test_soak");
    MPI_Finalize();
    return rc;
}
