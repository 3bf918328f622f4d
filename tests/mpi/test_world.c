/* terse_comm_create_world in a program that never calls MPI_Init: terse initialises MPI,
 * reduces, and finalises MPI when the communicator is destroyed. Run with and without
 * mpirun (a singleton). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "terse.h"
#include "terse_mpi.h"

int main(void)
{
    int fails = 0;
    terse_comm_t *c = NULL;
    /* before MPI_Init: the calls that need an initialised MPI say so, and change nothing */
    if (terse_comm_create_mpi(MPI_COMM_WORLD, NULL, &c) != TERSE_ERR_STATE || c != NULL ||
        !strstr(terse_last_error(), "not initialised")) {
        fprintf(stderr, "create_mpi before MPI_Init: %s\n", terse_last_error());
        fails++;
    }
    if (terse_comm_create_mpi_f(0, NULL, &c) != TERSE_ERR_STATE || c != NULL) {
        fprintf(stderr, "create_mpi_f before MPI_Init: %s\n", terse_last_error());
        fails++;
    }
    int init = 1;
    MPI_Initialized(&init);
    if (init) {
        fprintf(stderr, "a refused create initialised MPI\n");
        fails++;
    }
    terse_status_t s = terse_comm_create_world("compressor=topk:k=1; feedback=ef; min_size=0", &c);
    if (s != TERSE_OK) {
        fprintf(stderr, "create_world: %s\n", terse_last_error());
        return 1;
    }
    int rank, size, id;
    terse_comm_rank(c, &rank, &size);
    float g[3] = {1.0f, -3.0f * (float)(rank + 1), 2.0f};
    if (terse_layer_add(c, "g", 3, 1, NULL, &id) != TERSE_OK || terse_allreduce(c, id, g) != TERSE_OK) {
        fprintf(stderr, "%s\n", terse_last_error());
        fails++;
    }
    /* top1 of every rank is element 1: the mean of -3(r+1) over ranks */
    float expect = 0;
    for (int r = 0; r < size; r++) expect += -3.0f * (float)(r + 1);
    expect /= (float)size;
    if (g[0] != 0.0f || g[1] != expect || g[2] != 0.0f) {
        fprintf(stderr, "rank %d: got %g %g %g, want 0 %g 0\n", rank, g[0], g[1], g[2], expect);
        fails++;
    }
    char cfg[512];
    if (terse_comm_config(c, cfg, sizeof cfg) != TERSE_OK || !cfg[0]) fails++;
    terse_comm_destroy(c);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) {
        fprintf(stderr, "MPI was not finalised by the last destroy\n");
        fails++;
    }
    if (rank == 0) printf("test_world: %s\n", fails ? "failed" : "passed");
    return fails ? 1 : 0;
}
