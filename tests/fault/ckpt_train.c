/* ckpt_train: a small, deterministic data-parallel training loop over terse, for the fault
 * tests in this folder (README.md). It is what a user's program would do to survive a crash:
 * checkpoint terse's state and its own parameters together, and resume from them.
 *
 *     mpirun -np 3 ckpt_train --config 'compressor=topk:density=0.1;feedback=ef;min_size=0' \
 *            --steps 40 --checkpoint DIR/ck --save-every 10 --out DIR/final
 *
 * The model. Layers of different shapes (a 64x32 matrix, a 200-vector, a 16x16 matrix, a
 * 10-vector, and with --extra N a vector of N elements to make checkpoints large), so that the
 * compressed and the small paths and PowerSGD's matrix path all run. Rank r minimises
 *     f_r(x) = 1/2 sum_j a_j (x_j - t_rj)^2
 * and its gradient at step s is a_j (x_j - t_rj) + sigma u(s, r, layer, j), u a counter-based
 * hash in [-1, 1): the gradient is a function of (step, rank, parameters) only, with no RNG
 * state to save. Every step: all gradients, terse_allreduce per layer, x -= lr * estimate,
 * terse_step_end. terse's estimate is bitwise the same on every rank, so the parameters are.
 *
 * Checkpoints (--checkpoint PATH, every --save-every K steps, after step boundary S):
 *   1. this rank's parameters to "PATH.params-S.rank<R>", atomically: "<that>.tmp", fsync,
 *      rename, fsync of the folder. The file holds a header (magic, rank, rank count, step,
 *      element count), the floats and an FNV-1a checksum.
 *   2. terse_state_save(PATH): "PATH.rank<R>", atomic, collective, renamed once every rank
 *      has written its own.
 *   3. only then the previous step's parameter file is removed.
 * So whatever moment a process dies, the terse state on disk (step S) has its parameter file
 * for step S beside it: the parameter files are named by step because a single name could
 * not be replaced at the same instant as terse's. --resume loads terse's state, reads the step
 * from terse_layer_stats, loads that step's parameter file and goes on from step S.
 *
 * Faults: --die-at S --die-rank R makes rank R raise(SIGKILL) at step S after computing its
 * gradients and before its first allreduce of the step, so that the other ranks are blocked
 * in a terse collective. --die-how exit makes it _exit(1) there instead (no MPI_Finalize),
 * --die-how stop raise(SIGSTOP) (alive but stuck, as a rank in a deadlock would be).
 * --die-in-save S --die-rank R kills rank R inside terse_state_save at step boundary S, after
 * every rank has written its temporary file and before R renames its own (see rename()).
 *
 * --resume --forget-state, for the tests' control runs only: resumes the parameters and the
 * step, but with a fresh communicator instead of the loaded terse state (a resume that does
 * not save terse's state: with error feedback, it must end elsewhere).
 *
 * --verify (with --checkpoint): checks what is on disk and exits: every parameter file of
 * this rank (complete, checksum), this rank's terse file on its own (complete: its checksum,
 * as src/state.c lays it out), then terse_state_load, collective; prints one line per rank.
 * Exit status (the worst over the ranks): 0 loaded, 3 the load was refused with
 * TERSE_ERR_MISMATCH, 4 any other load error, 5 an incomplete file (a parameter file or a
 * terse file on its own), 6 terse_state_load accepted files that hold different steps.
 *
 * Output: --out FILE writes this rank's final parameters as raw float32 to FILE.rank<R>;
 * rank 0 prints one line per layer (the codec in force, dense or not, calls, L-GreCo plans)
 * and "done: N steps".
 * With --checkpoint or --die-at, each rank first prints "rank R: pid P".
 * Exit status: 0 success, 1 a terse or I/O error, 2 bad usage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "terse.h"
#include "terse_mpi.h"

#define PROG "ckpt_train"
#define MAX_LAYERS 5

static const float lr = 0.1f, sigma = 0.5f;
static const char param_magic[8] = "TFPARAM";

typedef struct {
    const char *config, *checkpoint, *out;
    long steps, save_every, die_at, die_rank, die_in_save;
    int die_how; /* 0 raise(SIGKILL), 1 _exit(1) without MPI_Finalize, 2 raise(SIGSTOP) */
    size_t extra;
    int resume, verify, forget_state;
} opts_t;

typedef struct {
    const char *name;
    size_t rows, cols;
} shape_t;

static int rank_, nranks_;

/* --die-in-save: the file name whose rename kills this rank (see rename() below), or "". */
static char die_in_rename[PATH_MAX];

/* ---- deterministic numbers -------------------------------------------------------------- */

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform number in [-1, 1) from four counters; the first names the stream (1 curvature,
 * 2 target, 3 noise, 4 initial parameters). */
static float unit(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    uint64_t h = mix(mix(mix(mix(a) ^ b) ^ c) ^ d);
    return (float)((double)(h >> 40) / (double)(1ull << 23) - 1.0);
}

static void gradient(long step, int layer, const float *x, float *g, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        float a = 1.0f + 0.5f * unit(1, (uint64_t)layer, j, 0);
        float t = unit(2, (uint64_t)rank_, (uint64_t)layer, j);
        float u = unit(3, (uint64_t)step, (uint64_t)rank_ << 8 | (uint64_t)layer, j);
        g[j] = a * (x[j] - t) + sigma * u;
    }
}

/* ---- a death inside terse_state_save --------------------------------------------------------
 * terse_state_save writes every rank's "<path>.rank<R>.tmp", agrees (a collective) that all
 * were written, and then each rank renames its own. To die in between, after the agreement and
 * before this rank's rename, this program defines rename(): libterse's call binds to it (an
 * executable's definition comes first in the dynamic linker's search), and it passes every
 * other rename through to renameat(), a different symbol. */
int rename(const char *from, const char *to)
{
    if (die_in_rename[0] && strcmp(from, die_in_rename) == 0) {
        printf("rank %d: killing itself in terse_state_save, before renaming %s\n", rank_, from);
        fflush(stdout);
        raise(SIGKILL);
    }
    return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

/* ---- errors ----------------------------------------------------------------------------- */

static void die_terse(const char *what, long step, terse_status_t s)
{
    fprintf(stderr, PROG ": rank %d: step %ld: %s: %s: %s\n", rank_, step, what,
            terse_status_string(s), terse_last_error());
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

static void die_io(const char *what, const char *file)
{
    fprintf(stderr, PROG ": rank %d: %s %s: %s\n", rank_, what, file, strerror(errno));
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* ---- parameter files -------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *d = p;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

#define FNV_START 1469598103934665603ull

typedef struct {
    char magic[8];
    uint32_t rank, nranks;
    uint64_t step, count;
} param_header_t;

static void param_path(char *out, size_t len, const char *ckpt, uint64_t step)
{
    if ((size_t)snprintf(out, len, "%s.params-%" PRIu64 ".rank%d", ckpt, step, rank_) >= len) {
        fprintf(stderr, PROG ": checkpoint path '%s' is too long\n", ckpt);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

/* fsync of the folder that holds `file`, so that a rename survives a power loss too. */
static int sync_dir(const char *file)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static void write_all(int fd, const void *p, size_t n, const char *file)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die_io("cannot write", file);
        c += w;
        n -= (size_t)w;
    }
}

static void params_save(const char *ckpt, uint64_t step, const float *x, size_t n)
{
    char final[PATH_MAX], tmp[PATH_MAX + 8];
    param_path(final, sizeof final, ckpt, step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    param_header_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, param_magic, sizeof h.magic);
    h.rank = (uint32_t)rank_;
    h.nranks = (uint32_t)nranks_;
    h.step = step;
    h.count = n;
    uint64_t sum = fnv1a(fnv1a(FNV_START, &h, sizeof h), x, n * sizeof *x);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die_io("cannot create", tmp);
    write_all(fd, &h, sizeof h, tmp);
    write_all(fd, x, n * sizeof *x, tmp);
    write_all(fd, &sum, sizeof sum, tmp);
    if (fsync(fd) != 0) die_io("cannot fsync", tmp);
    if (close(fd) != 0) die_io("cannot close", tmp);
    if (rename(tmp, final) != 0) die_io("cannot rename to", final);
    if (sync_dir(final) != 0) die_io("cannot fsync the folder of", final);
}

/* Reads and checks a parameter file; returns 0 and fills *h (and x, if not NULL) or returns
 * -1 with a reason in why. */
static int params_read(const char *file, param_header_t *h, float *x, size_t n, char *why,
                       size_t why_len)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        return -1;
    }
    int rc = -1;
    float *data = NULL;
    uint64_t sum;
    if (fread(h, sizeof *h, 1, f) != 1 || memcmp(h->magic, param_magic, sizeof h->magic) != 0) {
        snprintf(why, why_len, "no header (truncated or not a parameter file)");
    } else if (h->count > ((size_t)1 << 32) || !(data = malloc(h->count * sizeof *data + 1))) {
        snprintf(why, why_len, "element count %" PRIu64 " out of range", h->count);
    } else if (fread(data, sizeof *data, h->count, f) != h->count || fread(&sum, sizeof sum, 1, f) != 1) {
        snprintf(why, why_len, "truncated");
    } else if (fgetc(f) != EOF) {
        snprintf(why, why_len, "trailing bytes");
    } else if (fnv1a(fnv1a(FNV_START, h, sizeof *h), data, h->count * sizeof *data) != sum) {
        snprintf(why, why_len, "checksum mismatch");
    } else if (h->rank != (uint32_t)rank_ || h->nranks != (uint32_t)nranks_) {
        snprintf(why, why_len, "holds rank %u of %u", h->rank, h->nranks);
    } else if (x && h->count != n) {
        snprintf(why, why_len, "holds %" PRIu64 " elements, the model has %zu", h->count, n);
    } else {
        if (x) memcpy(x, data, n * sizeof *x);
        rc = 0;
    }
    free(data);
    fclose(f);
    return rc;
}

/* ---- --verify ---------------------------------------------------------------------------- */

/* This rank's terse file on its own: its length and its closing FNV-1a checksum, as
 * src/state.c writes them (magic, version, rank, nranks, n_layers, then the uint64 step at
 * byte 24). The collective terse_state_load then decides. Returns 0 if complete. */
static int terse_file_check(const char *ckpt, uint64_t *step, char *why, size_t why_len)
{
    char file[PATH_MAX];
    snprintf(file, sizeof file, "%s.rank%d", ckpt, rank_);
    FILE *f = fopen(file, "rb");
    if (!f) {
        snprintf(why, why_len, "%s: cannot open: %s", file, strerror(errno));
        return -1;
    }
    int rc = -1;
    unsigned char *d = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 40 || fseek(f, 0, SEEK_SET) != 0 || !(d = malloc((size_t)len)) ||
        fread(d, 1, (size_t)len, f) != (size_t)len) {
        snprintf(why, why_len, "%s: truncated (%ld bytes)", file, len);
    } else {
        uint64_t sum;
        memcpy(&sum, d + len - 8, 8);
        memcpy(step, d + 24, 8);
        if (fnv1a(FNV_START, d, (size_t)len - 8) != sum)
            snprintf(why, why_len, "%s: checksum mismatch (%ld bytes)", file, len);
        else
            rc = 0;
    }
    free(d);
    fclose(f);
    return rc;
}

/* Every "<base>.params-<S>.rank<R>" of this rank in the checkpoint's folder: complete?
 * Returns the number of incomplete ones; counts the files and the leftover *.tmp. */
static int params_check_all(const char *ckpt, int *n_files, int *n_tmp)
{
    char dir[PATH_MAX], prefix[PATH_MAX + 16], suffix[32];
    snprintf(dir, sizeof dir, "%s", ckpt);
    char *slash = strrchr(dir, '/');
    const char *base = ckpt;
    if (slash) {
        *slash = '\0';
        base = ckpt + (slash - dir) + 1;
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    snprintf(prefix, sizeof prefix, "%s.params-", base);
    snprintf(suffix, sizeof suffix, ".rank%d", rank_);
    int bad = 0;
    *n_files = *n_tmp = 0;
    DIR *d = opendir(dir);
    if (!d) return 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), pl = strlen(prefix), sl = strlen(suffix);
        if (len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
            char mine[64];
            snprintf(mine, sizeof mine, ".rank%d.tmp", rank_);
            if (len >= strlen(mine) && strcmp(e->d_name + len - strlen(mine), mine) == 0) (*n_tmp)++;
            continue;
        }
        if (len <= pl + sl || strncmp(e->d_name, prefix, pl) != 0 ||
            strcmp(e->d_name + len - sl, suffix) != 0)
            continue;
        char file[2 * PATH_MAX], why[256];
        param_header_t h;
        snprintf(file, sizeof file, "%s/%s", dir, e->d_name);
        (*n_files)++;
        if (params_read(file, &h, NULL, 0, why, sizeof why) != 0) {
            printf("rank %d: INCOMPLETE parameter file %s: %s\n", rank_, file, why);
            bad++;
        }
    }
    closedir(d);
    return bad;
}

/* ---- the program ------------------------------------------------------------------------- */

static void usage(const char *msg)
{
    if (rank_ == 0)
        fprintf(stderr, PROG ": %s\nusage: " PROG " --config STR --steps N [--extra N] [--out FILE]\n"
                        "    [--checkpoint PATH [--save-every K] [--resume [--forget-state] | --verify]]\n"
                        "    [--die-at STEP [--die-how kill|exit|stop] | --die-in-save STEP] [--die-rank R]\n",
                msg);
    MPI_Finalize();
    exit(2);
}

static long number(const char *flag, const char *v, long lo)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || x < lo) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s '%s': want an integer >= %ld", flag, v ? v : "", lo);
        usage(msg);
    }
    return x;
}

static opts_t parse(int argc, char **argv)
{
    opts_t o = {.config = "", .steps = -1, .save_every = 10, .die_at = -1, .die_rank = -1,
                .die_in_save = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--resume")) { o.resume = 1; continue; }
        if (!strcmp(a, "--verify")) { o.verify = 1; continue; }
        if (!strcmp(a, "--forget-state")) { o.forget_state = 1; continue; }
        if (!v) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option or missing value '%s'", a);
            usage(msg);
        }
        i++;
        if (!strcmp(a, "--config")) o.config = v;
        else if (!strcmp(a, "--steps")) o.steps = number(a, v, 0);
        else if (!strcmp(a, "--checkpoint")) o.checkpoint = v;
        else if (!strcmp(a, "--save-every")) o.save_every = number(a, v, 1);
        else if (!strcmp(a, "--die-at")) o.die_at = number(a, v, 0);
        else if (!strcmp(a, "--die-in-save")) o.die_in_save = number(a, v, 1);
        else if (!strcmp(a, "--die-rank")) o.die_rank = number(a, v, 0);
        else if (!strcmp(a, "--die-how")) {
            o.die_how = !strcmp(v, "kill") ? 0 : !strcmp(v, "exit") ? 1 : !strcmp(v, "stop") ? 2 : -1;
            if (o.die_how < 0) usage("--die-how: want kill, exit or stop");
        } else if (!strcmp(a, "--extra")) o.extra = (size_t)number(a, v, 0);
        else if (!strcmp(a, "--out")) o.out = v;
        else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            usage(msg);
        }
    }
    if (o.steps < 0 && !o.verify) usage("--steps is required");
    if (o.forget_state && !o.resume) usage("--forget-state goes with --resume");
    if ((o.resume || o.verify) && !o.checkpoint) usage("--resume and --verify need --checkpoint");
    if ((o.die_at >= 0 || o.die_in_save >= 0) != (o.die_rank >= 0))
        usage("--die-rank goes with --die-at or --die-in-save");
    return o;
}

static int verify(terse_comm_t *c, const char *ckpt)
{
    int n_files, n_tmp;
    int bad = params_check_all(ckpt, &n_files, &n_tmp);
    uint64_t fstep = 0;
    char why[PATH_MAX + 128] = "";
    int terse_bad = terse_file_check(ckpt, &fstep, why, sizeof why) != 0;
    if (terse_bad) printf("rank %d: INCOMPLETE terse file: %s\n", rank_, why);
    terse_status_t s = terse_state_load(c, ckpt);
    terse_stats_t st;
    char loaded[64] = "";
    if (s == TERSE_OK) {
        terse_layer_stats(c, 0, &st);
        snprintf(loaded, sizeof loaded, ", loaded step %" PRIu64, st.step);
    }
    printf("rank %d: terse file step %" PRIu64 "%s; %d parameter file(s) complete, %d incomplete, "
           "%d *.tmp; terse_state_load: %s%s%s%s\n",
           rank_, fstep, terse_bad ? " (incomplete)" : " (complete)", n_files - bad, bad, n_tmp,
           terse_status_string(s), s == TERSE_OK ? "" : ": ", s == TERSE_OK ? "" : terse_last_error(), loaded);
    int mixed = 0;
    if (s == TERSE_OK) {
        long lo = (long)st.step, hi = lo;
        MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
        mixed = lo != hi;
        if (mixed && rank_ == 0)
            printf("rank 0: terse_state_load ACCEPTED files from different steps (%ld to %ld)\n", lo, hi);
        char pf[PATH_MAX], pwhy[256];
        param_header_t h;
        param_path(pf, sizeof pf, ckpt, st.step);
        if (params_read(pf, &h, NULL, 0, pwhy, sizeof pwhy) != 0) {
            printf("rank %d: the parameter file for the loaded step %" PRIu64 ": %s\n", rank_, st.step, pwhy);
            bad++;
        }
    }
    fflush(stdout);
    int local = mixed ? 6 : bad || terse_bad ? 5 : s == TERSE_OK ? 0 : s == TERSE_ERR_MISMATCH ? 3 : 4;
    int worst;
    MPI_Allreduce(&local, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}

static terse_comm_t *make_comm(const char *config, const shape_t *shapes, int n_layers, int *ids)
{
    terse_comm_t *c = NULL;
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, config, &c);
    if (s != TERSE_OK) die_terse("terse_comm_create_mpi", 0, s);
    for (int l = 0; l < n_layers; l++) {
        s = terse_layer_add(c, shapes[l].name, shapes[l].rows, shapes[l].cols, NULL, &ids[l]);
        if (s != TERSE_OK) die_terse("terse_layer_add", 0, s);
    }
    return c;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    opts_t o = parse(argc, argv);
    if (o.checkpoint || o.die_at >= 0) { /* for the tests that kill a rank from outside */
        printf("rank %d: pid %ld\n", rank_, (long)getpid());
        fflush(stdout);
    }

    shape_t shapes[MAX_LAYERS] = {
        {"w1", 64, 32}, {"b1", 200, 1}, {"w2", 16, 16}, {"b2", 10, 1}, {"extra", o.extra, 1}};
    int n_layers = o.extra ? 5 : 4, ids[MAX_LAYERS];
    size_t count[MAX_LAYERS], total = 0;
    terse_comm_t *c = make_comm(o.config, shapes, n_layers, ids);
    terse_status_t s;
    for (int l = 0; l < n_layers; l++) {
        count[l] = shapes[l].rows * shapes[l].cols;
        total += count[l];
    }
    float *x = malloc(total * sizeof *x), *g = malloc(total * sizeof *g), *xl[MAX_LAYERS], *gl[MAX_LAYERS];
    if (!x || !g) {
        fprintf(stderr, PROG ": out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int l = 0, off = 0; l < n_layers; off += (int)count[l], l++) {
        xl[l] = x + off;
        gl[l] = g + off;
        for (size_t j = 0; j < count[l]; j++) xl[l][j] = 0.5f * unit(4, (uint64_t)l, j, 0);
    }

    if (o.verify) {
        int rc = verify(c, o.checkpoint);
        terse_comm_destroy(c);
        MPI_Finalize();
        return rc;
    }

    long start = 0;
    uint64_t last_saved = UINT64_MAX; /* the step of the parameter file that stays on disk */
    if (o.resume) {
        s = terse_state_load(c, o.checkpoint);
        if (s != TERSE_OK) die_terse("terse_state_load", 0, s);
        terse_stats_t st;
        s = terse_layer_stats(c, ids[0], &st);
        if (s != TERSE_OK) die_terse("terse_layer_stats", 0, s);
        /* terse refuses files from different steps; check it here too, for older builds */
        long lo = (long)st.step, hi;
        MPI_Allreduce(&lo, &hi, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
        if (lo != hi) {
            if (rank_ == 0)
                fprintf(stderr, PROG ": the ranks' terse files hold steps %ld to %ld; refusing to resume\n", lo, hi);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        char pf[PATH_MAX], why[256];
        param_header_t h;
        param_path(pf, sizeof pf, o.checkpoint, st.step);
        if (params_read(pf, &h, x, total, why, sizeof why) != 0 || h.step != st.step) {
            fprintf(stderr, PROG ": rank %d: parameter file %s: %s\n", rank_, pf, why);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        start = (long)st.step;
        last_saved = st.step;
        if (o.forget_state) {
            terse_comm_destroy(c);
            c = make_comm(o.config, shapes, n_layers, ids);
        }
        if (rank_ == 0) printf("resumed at step %ld%s\n", start, o.forget_state ? " (terse state not loaded)" : "");
    }

    for (long step = start; step < o.steps; step++) {
        for (int l = 0; l < n_layers; l++) gradient(step, l, xl[l], gl[l], count[l]);
        if (step == o.die_at && rank_ == o.die_rank) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            printf("rank %d: %s at step %ld at %lld.%09ld\n", rank_,
                   o.die_how == 0 ? "killing itself" : o.die_how == 1 ? "exiting with status 1" : "stopping itself",
                   step, (long long)now.tv_sec, now.tv_nsec);
            fflush(stdout);
            if (o.die_how == 1) _exit(1);
            raise(o.die_how == 0 ? SIGKILL : SIGSTOP);
        }
        s = terse_allreduce_many(c, n_layers, ids, gl);
        if (s != TERSE_OK) die_terse("terse_allreduce_many", step, s);
        for (size_t j = 0; j < total; j++) x[j] -= lr * g[j];
        s = terse_step_end(c);
        if (s != TERSE_OK) die_terse("terse_step_end", step, s);
        const uint64_t done = (uint64_t)step + 1;
        if (o.checkpoint && done % (uint64_t)o.save_every == 0) {
            params_save(o.checkpoint, done, x, total);
            if ((long)done == o.die_in_save && rank_ == o.die_rank)
                snprintf(die_in_rename, sizeof die_in_rename, "%s.rank%d.tmp", o.checkpoint, rank_);
            s = terse_state_save(c, o.checkpoint);
            if (s != TERSE_OK) die_terse("terse_state_save", step, s);
            if (last_saved != UINT64_MAX && last_saved != done) {
                char old[PATH_MAX];
                param_path(old, sizeof old, o.checkpoint, last_saved);
                unlink(old);
            }
            last_saved = done;
        }
    }

    if (o.out) {
        char file[PATH_MAX];
        snprintf(file, sizeof file, "%s.rank%d", o.out, rank_);
        FILE *f = fopen(file, "wb");
        if (!f || fwrite(x, sizeof *x, total, f) != total || fclose(f) != 0) die_io("cannot write", file);
    }
    for (int l = 0; rank_ == 0 && l < n_layers; l++) {
        terse_stats_t st;
        if (terse_layer_stats(c, ids[l], &st) != TERSE_OK) continue;
        printf("layer %s %zux%zu: codec %s feedback %s dense %d calls %" PRIu64 " step %" PRIu64
               " plan_version %" PRIu64 "\n", st.name, shapes[l].rows, shapes[l].cols, st.codec,
               st.feedback, st.dense, st.calls, st.step, st.plan_version);
    }
    if (rank_ == 0) printf("done: %ld steps\n", o.steps);
    free(x);
    free(g);
    terse_comm_destroy(c);
    MPI_Finalize();
    return 0;
}
