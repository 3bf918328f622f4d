/* No allocation in steady state: after a few warm-up calls, terse_allreduce allocates
 * nothing, for every codec and feedback method, flat and with worker threads, and neither
 * do terse_iallreduce and a fused terse_allreduce_many. The test
 * interposes malloc, calloc and realloc (the executable's definitions come first in symbol
 * resolution) and counts the calls made from libterse's own code, told apart by the
 * caller's address (dladdr). MPI's own allocations are not counted. The counter is checked
 * to work: registering a layer does allocate. (L-GreCo decisions, every `period` steps, do
 * allocate their tables; they are not steady state and are not run here.) */
#include <dlfcn.h>
#include <stdlib.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer owns malloc: nothing to interpose, nothing to count. */
int main(void)
{
    puts("test_alloc: skipped under AddressSanitizer, which owns malloc");
    return 77;
}
#else

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static long terse_allocs;
static _Thread_local int inside;

/* Counts an allocation whose caller is in libterse. */
static void note(const void *caller)
{
    if (inside) return;
    inside = 1;
    Dl_info info;
    if (dladdr(caller, &info) && info.dli_fname && strstr(info.dli_fname, "libterse"))
        __atomic_add_fetch(&terse_allocs, 1, __ATOMIC_RELAXED);
    inside = 0;
}

void *malloc(size_t n)
{
    note(__builtin_return_address(0));
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    note(__builtin_return_address(0));
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    note(__builtin_return_address(0));
    return __libc_realloc(p, n);
}

static long allocs(void) { return __atomic_load_n(&terse_allocs, __ATOMIC_RELAXED); }

enum { PLAIN, ASYNC, FUSED, FUSED_LAYERS = 3 };

/* mode ASYNC: through terse_iallreduce and terse_wait (the progress thread) instead; FUSED:
 * three such layers through terse_allreduce_many, as one fused bucket. */
static void steady(const char *config, const char *layer_config, size_t rows, size_t cols, int mode)
{
    terse_comm_t *c = NULL;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, config, &c) == TERSE_OK, "%s: %s", config, terse_last_error());
    if (!c) return;
    int ids[FUSED_LAYERS], id = -1;
    const long before_add = allocs();
    for (int l = 0; l < (mode == FUSED ? FUSED_LAYERS : 1); l++) {
        EXPECT(terse_layer_add(c, l == 0 ? "g" : l == 1 ? "h" : "i", rows, cols, layer_config, &ids[l]) == TERSE_OK,
               "%s", terse_last_error());
    }
    id = ids[0];
    EXPECT(allocs() > before_add, "%s: the counter sees terse_layer_add's allocations", config);
    const size_t n = rows * cols;
    float *g = __libc_malloc(FUSED_LAYERS * n * sizeof *g);
    float *bufs[FUSED_LAYERS] = {g, g + n, g + 2 * n};
    long during = 0;
    for (int call = 0; call < 12; call++) {
        for (size_t i = 0; i < FUSED_LAYERS * n; i++)
            g[i] = (float)((i * 2654435761u + (size_t)call * 97u + (size_t)mpitest_rank() * 31u) % 1000u) / 500.0f - 1.0f;
        const long a = allocs();
        if (mode == FUSED) {
            EXPECT(terse_allreduce_many(c, FUSED_LAYERS, ids, bufs) == TERSE_OK, "%s: %s", config, terse_last_error());
        } else if (mode == ASYNC) {
            terse_request_t *r = NULL;
            EXPECT(terse_iallreduce(c, id, g, &r) == TERSE_OK && terse_wait(r) == TERSE_OK, "%s: %s", config,
                   terse_last_error());
        } else {
            EXPECT(terse_allreduce(c, id, g) == TERSE_OK, "%s: %s", config, terse_last_error());
        }
        terse_step_end(c);
        if (call >= 3) during += allocs() - a; /* after warm-up */
    }
    EXPECT(during == 0, "%s %s%s: %ld allocations in 9 steady-state calls", config, layer_config ? layer_config : "",
           mode == ASYNC ? " (terse_iallreduce)" : mode == FUSED ? " (terse_allreduce_many, fused)" : "", during);
    free(g);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided); /* for terse_iallreduce's thread */
    const char *codecs[] = {
        "compressor=none",
        "compressor=fp16; feedback=ef",
        "compressor=bf16",
        "compressor=topk:density=0.01; feedback=ef",
        "compressor=topk:k=50; feedback=ef21",
        "compressor=topk:k=50; feedback=ef21sgdm",
        "compressor=topk:k=50; feedback=econtrol",
        "compressor=randk:density=0.02; feedback=ef",
        "compressor=dgc:density=0.01",
        "compressor=onebit; feedback=ef",
        "compressor=qsgd; feedback=ef",
        "compressor=powersgd:rank=4; feedback=ef",
    };
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        char cfg[160];
        snprintf(cfg, sizeof cfg, "%s; min_size=0", codecs[i]);
        steady(cfg, NULL, 96, 80, PLAIN);
        steady(cfg, NULL, 96, 80, ASYNC);
        steady(cfg, NULL, 96, 80, FUSED);
        snprintf(cfg, sizeof cfg, "%s; min_size=0; threads=3", codecs[i]);
        steady(cfg, NULL, 96, 80, PLAIN);
    }
    steady("compressor=topk:density=0.01; feedback=ef; min_size=0; hier=on", NULL, 96, 80, PLAIN);
    int rc = mpitest_finish("test_alloc");
    MPI_Finalize();
    return rc;
}
#endif
