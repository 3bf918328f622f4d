/* terse-info: what this build of terse can do and what it sees on this machine — version,
 * compiled-in backends, the hwloc topology, and the configuration a communicator would run
 * with here (the defaults, --config and the TERSE_* environment, merged). Runs alone or under
 * mpirun; only rank 0 prints, errors are printed by the rank that meets them. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse.h"
#include "terse_topology.h"
#if TERSE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#if TERSE_HAVE_NCCL
#include <nccl.h>
#endif

/* The build defines these to 0 or 1; a stand-alone compile describes an MPI-only build. */
#ifndef TERSE_HAVE_NCCL
#define TERSE_HAVE_NCCL 0
#endif
#ifndef TERSE_HAVE_CUDA
#define TERSE_HAVE_CUDA 0
#endif

static void usage(FILE *f)
{
    fputs("usage: terse-info [--config STRING] [--help]\n"
          "       mpirun -np N terse-info [--config STRING]\n"
          "\n"
          "Prints the terse version, the compiled-in backends (MPI, NCCL, CUDA), the machine\n"
          "topology as hwloc sees it (packages, NUMA nodes, cores, GPUs, NICs), and the\n"
          "configuration in effect for a communicator over MPI_COMM_WORLD.\n"
          "\n"
          "  --config STRING  a configuration string, e.g.\n"
          "                   \"compressor=topk:density=0.01; feedback=ef21\"; the TERSE_CONFIG,\n"
          "                   TERSE_COMPRESSOR, TERSE_FEEDBACK and TERSE_ADAPT environment\n"
          "                   variables override it, as in any terse program\n"
          "  --help           this text\n"
          "\n"
          "Exit status: 0 on success, 1 when terse reports an error, 2 on bad usage.\n",
          f);
}

/* The rank before MPI is initialised, from the launcher's environment, so that --help and
 * usage errors print once under mpirun without starting MPI. 0 when run alone. */
static int launcher_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v) return atoi(v);
    }
    return 0;
}

static void report(const char *what, terse_status_t s)
{
    fprintf(stderr, "terse-info: %s: %s: %s\n", what, terse_status_string(s),
            terse_last_error());
}

/* The first line of MPI_Get_library_version (the rest is build detail), which MPI allows
 * before MPI_Init and after MPI_Finalize. */
static void mpi_library_line(char *buf, size_t len)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int n = 0;
    if (MPI_Get_library_version(version, &n) != MPI_SUCCESS) {
        snprintf(buf, len, "version unknown");
        return;
    }
    version[n < MPI_MAX_LIBRARY_VERSION_STRING ? n : MPI_MAX_LIBRARY_VERSION_STRING - 1] = '\0';
    size_t line = strcspn(version, "\r\n");
    while (line > 0 && (version[line - 1] == ' ' || version[line - 1] == '\t')) line--;
    snprintf(buf, len, "%.*s", (int)line, version);
}

static void print_version_and_backends(void)
{
    unsigned v = terse_version();
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];

    printf("terse %u.%u.%u", v / 10000, v / 100 % 100, v % 100);
    if (v != TERSE_VERSION_NUMBER)
        printf(" (terse-info was built against the %d.%d.%d headers)", TERSE_VERSION_MAJOR,
               TERSE_VERSION_MINOR, TERSE_VERSION_PATCH);
    printf("\n");

    mpi_library_line(mpi, sizeof mpi);
    printf("backends:\n");
    printf("  MPI:  yes (%s)\n", mpi);
#if TERSE_HAVE_NCCL
    int nv = 0;
    ncclGetVersion(&nv);
    printf("  NCCL: yes (library %d.%d.%d)\n", nv / 10000, nv / 100 % 100, nv % 100);
#else
    printf("  NCCL: no (built without NCCL)\n");
#endif
#if TERSE_HAVE_CUDA
    int rt = 0, n = 0;
    cudaRuntimeGetVersion(&rt);
    cudaError_t e = cudaGetDeviceCount(&n);
    printf("  CUDA: yes (runtime %d.%d); devices: ", rt / 1000, rt % 1000 / 10);
    if (e != cudaSuccess) printf("none usable (%s)\n", cudaGetErrorString(e));
    else printf("%d\n", n);
    for (int d = 0; e == cudaSuccess && d < n; d++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, d) == cudaSuccess)
            printf("    %d: %s, compute capability %d.%d, %.1f GiB\n", d, p.name, p.major, p.minor,
                   (double)p.totalGlobalMem / (1u << 30));
    }
#else
    printf("  CUDA: no (built without CUDA)\n");
#endif
}

/* Rank 0's report, once the communicator exists. */
static int print_report(const terse_comm_t *comm, int size)
{
    static char topology[4096]; /* enough for any description (terse_topology.h) */
    static char config[16384];
    terse_status_t s;

    print_version_and_backends();
    fflush(stdout);

    if ((s = terse_topology_describe(topology, sizeof topology)) != TERSE_OK) {
        report("reading the topology", s);
        return 1;
    }
    fputs(topology, stdout);

    if ((s = terse_comm_config(comm, config, sizeof config)) != TERSE_OK) {
        report("reading the configuration", s);
        return 1;
    }
    printf("configuration (%d rank%s): %s\n", size, size == 1 ? "" : "s", config);
    return 0;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    terse_comm_t *comm = NULL;
    int rank = 0, size = 1, rc = 0, initialized = 0, finalized = 0;
    terse_status_t s;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            if (launcher_rank() == 0) usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config = argv[i] + 9;
        } else {
            if (launcher_rank() == 0) {
                if (strcmp(argv[i], "--config") == 0)
                    fprintf(stderr, "terse-info: --config needs a configuration string\n");
                else
                    fprintf(stderr, "terse-info: unknown argument '%s'\n", argv[i]);
                usage(stderr);
            }
            return 2;
        }
    }

    /* terse initialises MPI here if it must, and finalises it when comm is destroyed. */
    s = terse_comm_create_world(config, &comm);
    if (s != TERSE_OK) {
        report("creating a communicator over MPI_COMM_WORLD", s);
        rc = 1;
        goto finalize_mpi;
    }
    if ((s = terse_comm_rank(comm, &rank, &size)) != TERSE_OK) {
        report("asking the communicator for its rank", s);
        rc = 1;
        goto destroy_comm;
    }

    if (rank == 0) rc = print_report(comm, size);
    fflush(stdout);

destroy_comm:
    if ((s = terse_comm_destroy(comm)) != TERSE_OK) {
        report("destroying the communicator", s);
        rc = 1;
    }
finalize_mpi:
    /* terse finalised MPI with its last communicator, unless creation failed after
     * MPI_Init: then it is left to us. */
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Finalize();
    return rc;
}
