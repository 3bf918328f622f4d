/* libFuzzer target: the state loader (src/state.c, terse_state_load) on hostile files.
 *
 * LLVMFuzzerInitialize starts MPI as a singleton (no mpirun), builds a one-rank communicator
 * whose layers cover the codecs, feedback methods and protocol states (topk + ef, qsgd,
 * powersgd + ef21, dgc, onebit, randk + econtrol, ef21sgdm, a dense layer, two L-GreCo
 * layers with their plan and window, one whose protocol state changes size with the plan),
 * runs a few steps so that every state block holds values, and saves it: the valid file
 * every input starts from, kept in memory. A file exists only for the length of one load,
 * under /dev/shm (or $TMPDIR), named terse-fuzz-state-<pid>-*.rank0.
 *
 * Input: uint8 flags | the rest. flags bit 0 clear: the rest is the file, raw; set: the rest
 * is a patch list (fuzz_util.h) applied to the valid file. Bit 1: recompute the trailing
 * checksum (FNV-1a of every byte before the last 8, state_checksum), so that mutations
 * reach the structural checks. Bit 2: after a mutated file loads, run one allreduce on every
 * layer from that state.
 * Checks, beyond "no memory error, no undefined behaviour":
 *   - terse_state_load returns TERSE_OK, or TERSE_ERR_IO / TERSE_ERR_MISMATCH with a
 *     message;
 *   - on error, every layer's state floats (feedback + protocol; their count too), its
 *     counters, fingerprint, L-GreCo choice and window, and the communicator's step and
 *     L-GreCo schedule are bit for bit as before;
 *   - the valid file always loads and restores exactly the saved state (after every
 *     accepted mutated file, which is where the next input starts from again);
 *   - the state an accepted mutated file gave is saved and loaded back bit for bit;
 *   - an accepted mutated file, and allreduce calls from it, do not crash. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "internal.h"
#include "terse.h"
#include "terse_mpi.h"

#define FAIL(...) FUZZ_FAIL("fuzz_state", __VA_ARGS__)

static const struct {
    const char *name;
    size_t rows, cols;
    const char *config;
} layer_defs[] = {
    {"topk_ef", 16, 8, "compressor=topk:density=0.1; feedback=ef"},
    {"qsgd", 96, 1, "compressor=qsgd:bits=3,bucket=32"},
    {"powersgd_ef21", 12, 10, "compressor=powersgd:rank=2; feedback=ef21"},
    {"dgc", 20, 10, "compressor=dgc:density=0.05,warmup=3"},
    {"onebit_ef", 64, 1, "compressor=onebit; feedback=ef"},
    {"randk_econtrol", 50, 1, "compressor=randk:density=0.2; feedback=econtrol"},
    {"topk_ef21sgdm", 40, 1, "compressor=topk:k=4; feedback=ef21sgdm"},
    {"dense", 6, 1, "compressor=topk; feedback=ef; min_size=100"},
    {"fp16", 10, 1, "compressor=fp16"},
    {"lgreco", 16, 16, "compressor=topk:density=0.1; feedback=ef; adapt=lgreco:period=2,window=1"},
    {"lgreco_powersgd", 24, 20, "compressor=powersgd:rank=2; feedback=ef; adapt=lgreco"},
};
#define N_LAYERS (sizeof layer_defs / sizeof layer_defs[0])
#define STEPS 6 /* the save falls inside the L-GreCo window: its accumulation is not empty */

static terse_comm_t *comm;
static int ids[N_LAYERS];
static float *bufs[N_LAYERS];
static char valid_path[320], in_path[320], resave_path[320];
static unsigned char *valid;
static size_t valid_len;

/* What a failed load must leave as it was: per layer the state block, the counters and,
 * for an adapted layer, the plan (choice, parameter, fingerprint) and the window; the step
 * and L-GreCo's schedule. */
typedef struct {
    size_t floats[N_LAYERS];
    float *state[N_LAYERS], *window[N_LAYERS];
    uint64_t calls[N_LAYERS], skipped[N_LAYERS], fingerprint[N_LAYERS], window_calls[N_LAYERS];
    size_t choice[N_LAYERS];
    uint64_t step, plan_version, next_decision, fallbacks;
} snapshot_t;
static snapshot_t saved, loaded;

static void snapshot_take(snapshot_t *s)
{
    for (size_t i = 0; i < N_LAYERS; i++) {
        const layer_t *l = &comm->layers[i];
        s->floats[i] = l->fb_floats + l->proto_floats;
        free(s->state[i]);
        s->state[i] = malloc((s->floats[i] ? s->floats[i] : 1) * sizeof(float));
        if (!s->state[i]) abort();
        /* the feedback state, then the protocol's: the order of the state file */
        memcpy(s->state[i], l->state, l->fb_floats * sizeof(float));
        memcpy(s->state[i] + l->fb_floats, l->pstate, l->proto_floats * sizeof(float));
        s->calls[i] = l->calls;
        s->skipped[i] = l->skipped;
        s->fingerprint[i] = l->fingerprint;
        s->choice[i] = l->lg ? l->lg->choice : 0;
        s->window_calls[i] = l->lg ? l->lg->acc_calls : 0;
        free(s->window[i]);
        s->window[i] = NULL;
        if (l->lg && l->lg->acc) {
            s->window[i] = malloc(l->count * sizeof(float));
            if (!s->window[i]) abort();
            memcpy(s->window[i], l->lg->acc, l->count * sizeof(float));
        }
    }
    s->step = comm->step;
    s->plan_version = comm->lg.version;
    s->next_decision = comm->lg.next_step;
    s->fallbacks = comm->lg.fallbacks;
}

/* The first difference between the communicator and s, in words, or NULL. */
static const char *snapshot_differs(const snapshot_t *s)
{
    static char why[160];
    const char *what = NULL;
    size_t i;
    for (i = 0; i < N_LAYERS && !what; i++) {
        const layer_t *l = &comm->layers[i];
        if (l->fb_floats + l->proto_floats != s->floats[i]) what = "the size of the state";
        else if (memcmp(l->state, s->state[i], l->fb_floats * sizeof(float)) != 0 ||
                 memcmp(l->pstate, s->state[i] + l->fb_floats, l->proto_floats * sizeof(float)) != 0)
            what = "the state floats";
        else if (l->calls != s->calls[i] || l->skipped != s->skipped[i]) what = "the call counters";
        else if (l->fingerprint != s->fingerprint[i]) what = "the fingerprint (codec parameters)";
        else if (l->lg && (l->lg->choice != s->choice[i] || l->lg->acc_calls != s->window_calls[i]))
            what = "the L-GreCo choice or window count";
        else if (s->window[i] && memcmp(l->lg->acc, s->window[i], l->count * sizeof(float)) != 0)
            what = "the L-GreCo window";
    }
    if (what) {
        snprintf(why, sizeof why, "%s of layer %zu (%s)", what, i - 1, layer_defs[i - 1].name);
        return why;
    }
    if (comm->step != s->step) return "the step";
    if (comm->lg.version != s->plan_version || comm->lg.next_step != s->next_decision ||
        comm->lg.fallbacks != s->fallbacks)
        return "the L-GreCo schedule";
    return NULL;
}

static void grad(float *g, size_t n, size_t layer, int call)
{
    for (size_t i = 0; i < n; i++)
        g[i] = (float)((i * 2654435761u + (size_t)call * 97u + layer * 31u) % 1000u) / 500.0f - 1.0f;
}

static void finalize(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

static void write_file(const char *path, const void *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) FAIL("cannot write %s", path);
}

/* The file of state path `path` (rank 0). */
static const char *rank_file(const char *path)
{
    static char f[340];
    snprintf(f, sizeof f, "%s.rank0", path);
    return f;
}

/* Loads n bytes d as the state file of `path`. The file lives only for the call, so that a
 * crash leaves at most one file behind (atexit handlers do not run then). */
static terse_status_t load_bytes(const char *path, const void *d, size_t n)
{
    write_file(rank_file(path), d, n);
    const terse_status_t s = terse_state_load(comm, path);
    unlink(rank_file(path));
    return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    MPI_Init(NULL, NULL);
    if (terse_comm_create_mpi(MPI_COMM_WORLD, "min_size=0", &comm) != TERSE_OK)
        FAIL("communicator: %s", terse_last_error());
    for (size_t i = 0; i < N_LAYERS; i++) {
        if (terse_layer_add(comm, layer_defs[i].name, layer_defs[i].rows, layer_defs[i].cols,
                            layer_defs[i].config, &ids[i]) != TERSE_OK)
            FAIL("layer %s: %s", layer_defs[i].name, terse_last_error());
        bufs[i] = malloc(layer_defs[i].rows * layer_defs[i].cols * sizeof(float));
        if (!bufs[i]) abort();
    }
    for (int step = 0; step < STEPS; step++) {
        for (size_t i = 0; i < N_LAYERS; i++) {
            grad(bufs[i], layer_defs[i].rows * layer_defs[i].cols, i, step);
            if (terse_allreduce(comm, ids[i], bufs[i]) != TERSE_OK)
                FAIL("allreduce %s: %s", layer_defs[i].name, terse_last_error());
        }
        terse_step_end(comm);
    }

    /* files "<tmp>/terse-fuzz-state-<pid>-{valid,input,resave}.rank0", each only for a call */
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    const long pid = (long)getpid();
    snprintf(valid_path, sizeof valid_path, "%s/terse-fuzz-state-%ld-valid", tmp ? tmp : "/tmp", pid);
    snprintf(in_path, sizeof in_path, "%s/terse-fuzz-state-%ld-input", tmp ? tmp : "/tmp", pid);
    snprintf(resave_path, sizeof resave_path, "%s/terse-fuzz-state-%ld-resave", tmp ? tmp : "/tmp", pid);
    atexit(finalize);
    if (terse_state_save(comm, valid_path) != TERSE_OK) FAIL("save: %s", terse_last_error());
    FILE *fp = fopen(rank_file(valid_path), "rb");
    if (!fp || fseek(fp, 0, SEEK_END) != 0) FAIL("cannot read %s", rank_file(valid_path));
    valid_len = (size_t)ftell(fp);
    rewind(fp);
    valid = malloc(valid_len);
    if (!valid || fread(valid, 1, valid_len, fp) != valid_len) FAIL("cannot read %s", rank_file(valid_path));
    fclose(fp);
    unlink(rank_file(valid_path));
    snapshot_take(&saved);
    /* TERSE_FUZZ_STATE_FILE=path: write the valid file there (to make seeds), and go on */
    const char *out = getenv("TERSE_FUZZ_STATE_FILE");
    if (out) write_file(out, valid, valid_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    fuzz_in_t in = {data, data + size};
    const unsigned flags = (unsigned)fuzz_take(&in, 1);
    fuzz_buf_t b;
    if (flags & 1) {
        if (!fuzz_buf_init(&b, valid, valid_len)) abort();
        fuzz_patch_all(&b, &in, 256);
    } else if (!fuzz_buf_init(&b, in.p, fuzz_left(&in))) {
        abort();
    }
    if ((flags & 2) && b.len >= 16) {
        const uint64_t sum = state_checksum(b.d, b.len - 8);
        memcpy(b.d + b.len - 8, &sum, 8);
    }
    const int is_valid = b.len == valid_len && memcmp(b.d, valid, valid_len) == 0;
    const terse_status_t s = load_bytes(in_path, b.d, b.len);
    free(b.d);

    const char *what;
    if (s != TERSE_OK) {
        if (s != TERSE_ERR_IO && s != TERSE_ERR_MISMATCH)
            FAIL("terse_state_load returned %d (%s): %s", (int)s, terse_status_string(s), terse_last_error());
        if (!terse_last_error()[0]) FAIL("terse_state_load failed (%d) with no message", (int)s);
        if (is_valid) FAIL("the valid file was refused: %s", terse_last_error());
        if ((what = snapshot_differs(&saved)))
            FAIL("a refused file (%s) changed %s", terse_last_error(), what);
        return 0;
    }
    if (is_valid) {
        if ((what = snapshot_differs(&saved))) FAIL("the valid file loaded %s differently", what);
        return 0;
    }
    /* an accepted mutated file: saving it and loading that back gives the same state */
    snapshot_take(&loaded);
    if (terse_state_save(comm, resave_path) != TERSE_OK) FAIL("save after a load: %s", terse_last_error());
    if (load_bytes(valid_path, valid, valid_len) != TERSE_OK)
        FAIL("the valid file does not load after a mutated one: %s", terse_last_error());
    const terse_status_t r = terse_state_load(comm, resave_path);
    unlink(rank_file(resave_path));
    if (r != TERSE_OK) FAIL("the saved copy of a loaded file does not load: %s", terse_last_error());
    if ((what = snapshot_differs(&loaded))) FAIL("save and load of a loaded file changed %s", what);
    /* work from it, then put the saved state back */
    if (flags & 4) {
        for (size_t i = 0; i < N_LAYERS; i++) {
            grad(bufs[i], layer_defs[i].rows * layer_defs[i].cols, i, 100);
            const terse_status_t a = terse_allreduce(comm, ids[i], bufs[i]);
            if (a != TERSE_OK && !terse_last_error()[0]) FAIL("allreduce failed (%d) with no message", (int)a);
        }
        terse_step_end(comm);
    }
    if (load_bytes(valid_path, valid, valid_len) != TERSE_OK)
        FAIL("the valid file does not load after a mutated one: %s", terse_last_error());
    if ((what = snapshot_differs(&saved))) FAIL("reloading the valid file left %s different", what);
    return 0;
}
