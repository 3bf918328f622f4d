/* libterse_pmpi: terse under an unchanged MPI program, through the MPI profiling interface.
 *
 *   LD_PRELOAD=libterse_pmpi.so: the program's MPI_Allreduce resolves here first
 *     float32 MPI_SUM, count >= TERSE_MIN_SIZE, intra-communicator of >= 2 ranks, allowed by
 *     TERSE_PMPI_COMMS         -> terse_allreduce (reduce=sum) on a layer of this call's key
 *     anything else            -> PMPI_Allreduce, untouched
 *   MPI_Iallreduce, MPI_Comm_free, MPI_Comm_disconnect, MPI_Finalize: counted or cleaned up,
 *     then PMPI_*.
 *
 * The layer key. Buffer addresses differ between ranks, so a key cannot be compared across
 * ranks; what must agree is the layer id each rank picks. Each rank looks its call up by
 * (communicator, recvbuf, count) in its own table, and a key it has not seen takes the next
 * id. Ranks that reuse (or allocate afresh) their buffers in the same pattern -- the usual
 * case, as every rank runs the same program -- therefore pick the same ids whatever their
 * addresses. terse compares layer id, count and call number of every call across ranks
 * (the header allgather), so a disagreement is never silent: every rank gets
 * TERSE_ERR_MISMATCH with its buffer and state untouched, and every rank then sums the call
 * exactly with PMPI_Allreduce and forgets the communicator's layers (a reset). After
 * PMPI_MAX_RESETS resets the communicator stays exact.
 *
 * Every decision that leads into a collective (compress or not, create the terse
 * communicator, reset) depends only on what all ranks share: the call's arguments other than
 * its buffers, the environment, and outcomes that terse reports on every rank alike. A
 * decision that could differ between ranks would leave one rank in terse's exchange and
 * another in PMPI_Allreduce, waiting for each other for ever. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "terse_mpi.h"

#define PMPI_DEFAULT_MIN_SIZE 65536
#define PMPI_DEFAULT_MAX_LAYERS 1024
#define PMPI_MAX_RESETS 3

/* What the wrapper forces on every layer, above TERSE_CONFIG and TERSE_COMPRESSOR: MPI_SUM
 * is a sum, and TERSE_MIN_SIZE (not terse's min_size) decides what is worth compressing. */
static const char layer_config[] = "reduce=sum; min_size=0";

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO } log_level_t;
typedef enum { COMMS_ALL, COMMS_WORLD, COMMS_NONE } comms_filter_t;

typedef struct {
    const void *buf;     /* this rank's recvbuf                                           */
    int count;
    int layer;
    uint64_t last_use;   /* the communicator's call number when last used (for recycling) */
} pmpi_key_t;

typedef struct {
    MPI_Comm comm;       /* the user's handle                                             */
    terse_comm_t *tc;    /* NULL until the first compressed call, and again after a reset */
    int off;             /* compression given up on this communicator: pass through       */
    int resets;
    int index;           /* order of first use, to name unnamed communicators             */
    uint64_t calls;      /* compressed calls on this communicator                         */
    pmpi_key_t *keys;    /* one per layer of tc                                           */
    size_t n_keys, cap_keys;
} pmpi_comm_t;

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;     /* the table of communicators and the counters              */
    /* the environment, read once */
    char env_error[512];      /* a bad TERSE_* value: every later call passes through     */
    int env_error_told;
    size_t min_size, max_layers;
    comms_filter_t comms;
    log_level_t log;
    /* communicators seen by a compressed call */
    pmpi_comm_t **tab;
    size_t n_tab, cap_tab;
    int next_index;
    /* counters for the report at MPI_Finalize */
    uint64_t compressed, passed, fell_back;
    uint64_t sent_bytes, ring_bytes;
} g = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

/* Set while this thread is inside terse: terse's own MPI calls go straight to PMPI. */
static _Thread_local int inside_terse;

static int world_rank(void)
{
    int r = -1;
    PMPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static void pmpi_log(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pmpi_log(log_level_t level, const char *fmt, ...)
{
    if (level > g.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "terse-pmpi: %s\n", line);
    fflush(stderr);
}

/* ---- The environment ------------------------------------------------------------------ */

static int env_size(const char *name, size_t def, size_t lo, size_t hi, size_t *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 1;
    }
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end != '\0' || v[0] == '-' || x < lo || x > hi) {
        snprintf(g.env_error, sizeof g.env_error,
                 "environment %s='%s' is not accepted; accepted: an integer in [%zu, %zu]", name, v,
                 lo, hi);
        return 0;
    }
    *out = (size_t)x;
    return 1;
}

static int env_word(const char *name, const char *const *words, int def, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = def;
        return 1;
    }
    for (int i = 0; words[i]; i++)
        if (strcmp(v, words[i]) == 0) {
            *out = i;
            return 1;
        }
    char list[128] = "";
    for (int i = 0; words[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", words[i]);
    snprintf(g.env_error, sizeof g.env_error, "environment %s='%s' is not accepted; accepted: %s",
             name, v, list);
    return 0;
}

static void env_read(void)
{
    static const char *const log_words[] = {"error", "warn", "info", NULL};
    static const char *const comms_words[] = {"all", "world", "none", NULL};
    int level = LOG_WARN, comms = COMMS_ALL;
    /* TERSE_LOG first, so that a bad value of the others is reported at the level asked */
    if (!env_word("TERSE_LOG", log_words, LOG_WARN, &level)) level = LOG_WARN;
    g.log = (log_level_t)level;
    if (g.env_error[0]) return;
    if (!env_size("TERSE_MIN_SIZE", PMPI_DEFAULT_MIN_SIZE, 0, TERSE_MAX_LAYER_COUNT, &g.min_size) ||
        !env_size("TERSE_PMPI_MAX_LAYERS", PMPI_DEFAULT_MAX_LAYERS, 1, 1u << 20, &g.max_layers) ||
        !env_word("TERSE_PMPI_COMMS", comms_words, COMMS_ALL, &comms))
        return;
    g.comms = (comms_filter_t)comms;
}

/* ---- Counters ------------------------------------------------------------------------- */

static void count_add(uint64_t *counter, uint64_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

static uint64_t count_get(const uint64_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/* ---- The table of communicators ------------------------------------------------------ */

/* The entry of `comm`, made if absent; NULL only if out of memory. */
static pmpi_comm_t *comm_get(MPI_Comm comm)
{
    pmpi_comm_t *pc = NULL;
    pthread_mutex_lock(&g.lock);
    for (size_t i = 0; i < g.n_tab && !pc; i++)
        if (g.tab[i]->comm == comm) pc = g.tab[i];
    if (!pc && g.n_tab == g.cap_tab) {
        size_t cap = g.cap_tab ? 2 * g.cap_tab : 8;
        pmpi_comm_t **t = realloc(g.tab, cap * sizeof *t);
        if (t) {
            g.tab = t;
            g.cap_tab = cap;
        }
    }
    if (!pc && g.n_tab < g.cap_tab && (pc = calloc(1, sizeof *pc)) != NULL) {
        pc->comm = comm;
        pc->index = g.next_index++;
        g.tab[g.n_tab++] = pc;
    }
    pthread_mutex_unlock(&g.lock);
    return pc;
}

/* Removes the entry of `comm` from the table and returns it (NULL if there is none). */
static pmpi_comm_t *comm_take(MPI_Comm comm)
{
    pmpi_comm_t *pc = NULL;
    pthread_mutex_lock(&g.lock);
    for (size_t i = 0; i < g.n_tab; i++) {
        if (g.tab[i]->comm != comm) continue;
        pc = g.tab[i];
        g.tab[i] = g.tab[--g.n_tab];
        break;
    }
    pthread_mutex_unlock(&g.lock);
    return pc;
}

/* Frees the terse communicator and forgets the keys; the entry stays. Every rank of the
 * communicator does it at the same call (terse_comm_destroy frees a duplicate of it). */
static void comm_reset(pmpi_comm_t *pc)
{
    inside_terse = 1;
    terse_comm_destroy(pc->tc);
    inside_terse = 0;
    pc->tc = NULL;
    pc->n_keys = 0;
}

static void comm_free(pmpi_comm_t *pc)
{
    if (!pc) return;
    comm_reset(pc);
    free(pc->keys);
    free(pc);
}

static void comm_name(const pmpi_comm_t *pc, char *buf, size_t len)
{
    char name[MPI_MAX_OBJECT_NAME] = "";
    int n = 0;
    if (PMPI_Comm_get_name(pc->comm, name, &n) != MPI_SUCCESS || n <= 0)
        snprintf(name, sizeof name, "comm%d", pc->index);
    snprintf(buf, len, "%s", name);
}

/* ---- Errors --------------------------------------------------------------------------- */

/* Reports a failed call and answers it as MPI would: through the communicator's error
 * handler (MPI_ERRORS_ARE_FATAL aborts the run there), else with MPI_ERR_OTHER. */
static int call_fails(MPI_Comm comm, int count, const char *what, terse_status_t s)
{
    char name[MPI_MAX_OBJECT_NAME] = "";
    int n = 0;
    if (PMPI_Comm_get_name(comm, name, &n) != MPI_SUCCESS || n <= 0) snprintf(name, sizeof name, "a communicator");
    pmpi_log(LOG_ERROR, "rank %d: MPI_Allreduce of %d floats on %s: %s: %s: %s", world_rank(),
             count, name, what, terse_status_string(s), terse_last_error());
    PMPI_Comm_call_errhandler(comm, MPI_ERR_OTHER);
    return MPI_ERR_OTHER;
}

/* A failure of this rank alone (out of memory) while its peers may already wait in terse's
 * exchange: no answer keeps the ranks together, so the run stops, saying why. */
static void local_failure(const char *what) __attribute__((noreturn));
static void local_failure(const char *what)
{
    pmpi_log(LOG_ERROR, "rank %d: %s; aborting, as the other ranks cannot complete the call",
             world_rank(), what);
    PMPI_Abort(MPI_COMM_WORLD, 1);
    abort(); /* MPI_Abort does not return; this says so to the compiler */
}

/* ---- Layers --------------------------------------------------------------------------- */

/* The layer's shape: rows x cols with cols the largest divisor of n not above sqrt(n), so
 * that powersgd sees a matrix (256 x 256 for 65536); topk and the others ignore it. A prime
 * n gives n x 1, which powersgd sends dense. */
static void layer_shape(size_t n, size_t *rows, size_t *cols)
{
    size_t c = (size_t)sqrt((double)n);
    while (c > 1 && c * c > n) c--;
    while ((c + 1) * (c + 1) <= n) c++;
    while (c > 1 && n % c != 0) c--;
    *cols = c ? c : 1;
    *rows = n / *cols;
}

/* The layer of (buf, count) on pc: found, recycled or made. Returns MPI_SUCCESS with *id, or
 * the answer for the call (a consistent configuration error). */
static int layer_get(pmpi_comm_t *pc, const void *buf, int count, int *id)
{
    pc->calls++;
    pmpi_key_t *k = NULL;
    for (size_t i = 0; i < pc->n_keys && !k; i++)
        if (pc->keys[i].buf == buf && pc->keys[i].count == count) k = &pc->keys[i];
    if (!k && pc->n_keys >= g.max_layers) {
        /* At the cap, a new buffer takes over the least recently used layer of its size,
         * residual included: for a program that allocates its buffers afresh each step, the
         * layer of the same call one step back. Ranks in step recycle the same layer. */
        for (size_t i = 0; i < pc->n_keys; i++)
            if (pc->keys[i].count == count && (!k || pc->keys[i].last_use < k->last_use))
                k = &pc->keys[i];
        if (k) k->buf = buf;
    }
    if (!k) {
        if (pc->n_keys == pc->cap_keys) {
            size_t cap = pc->cap_keys ? 2 * pc->cap_keys : 16;
            pmpi_key_t *nk = realloc(pc->keys, cap * sizeof *nk);
            if (!nk) local_failure("out of memory for the table of layers");
            pc->keys = nk;
            pc->cap_keys = cap;
        }
        size_t rows, cols;
        layer_shape((size_t)count, &rows, &cols);
        char cname[MPI_MAX_OBJECT_NAME], name[64];
        comm_name(pc, cname, sizeof cname);
        snprintf(name, sizeof name, "%.40s/%d#%zu", cname, count, pc->n_keys);
        int layer;
        inside_terse = 1;
        terse_status_t s = terse_layer_add(pc->tc, name, rows, cols, layer_config, &layer);
        inside_terse = 0;
        if (s == TERSE_ERR_NOMEM) {
            char what[256];
            snprintf(what, sizeof what, "terse_layer_add of %d floats: %s", count, terse_last_error());
            local_failure(what);
        }
        if (s != TERSE_OK) {
            /* the configuration and the count decide it: every rank fails alike */
            pc->off = 1;
            return call_fails(pc->comm, count, "terse_layer_add failed; this communicator is no "
                              "longer compressed", s);
        }
        k = &pc->keys[pc->n_keys++];
        k->buf = buf;
        k->count = count;
        k->layer = layer;
    }
    k->last_use = pc->calls;
    *id = k->layer;
    return MPI_SUCCESS;
}

/* ---- The compressed path -------------------------------------------------------------- */

/* Whether a call is one to compress, from what every rank shares (see the top). */
static int eligible(const void *sendbuf, const void *recvbuf, int count, MPI_Datatype type,
                    MPI_Op op, MPI_Comm comm)
{
    if (g.env_error[0] || g.comms == COMMS_NONE) return 0;
    if (type != MPI_FLOAT || op != MPI_SUM || count <= 0) return 0;
    if ((size_t)count < g.min_size || (size_t)count > TERSE_MAX_LAYER_COUNT) return 0;
    /* sendbuf == recvbuf without MPI_IN_PLACE is erroneous: MPI answers it */
    if (sendbuf == recvbuf || comm == MPI_COMM_NULL) return 0;
    if (g.comms == COMMS_WORLD && comm != MPI_COMM_WORLD) return 0;
    int inter = 1, size = 0;
    if (PMPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS || inter) return 0;
    /* one rank's sum is its own buffer: compressing it would only lose information */
    if (PMPI_Comm_size(comm, &size) != MPI_SUCCESS || size < 2) return 0;
    return 1;
}

static int passthrough(const void *sendbuf, void *recvbuf, int count, MPI_Datatype type,
                       MPI_Op op, MPI_Comm comm)
{
    count_add(&g.passed, 1);
    return PMPI_Allreduce(sendbuf, recvbuf, count, type, op, comm);
}

/* The terse communicator of pc, made on its first compressed call (collective over the
 * communicator: every rank reaches here at the same call). */
static int comm_open(pmpi_comm_t *pc, int count)
{
    inside_terse = 1;
    terse_status_t s = terse_comm_create_mpi(pc->comm, layer_config, &pc->tc);
    inside_terse = 0;
    if (s != TERSE_OK) {
        /* a bad TERSE_CONFIG/TERSE_COMPRESSOR fails before any collective, alike everywhere */
        pc->off = 1;
        pc->tc = NULL;
        return call_fails(pc->comm, count,
                          "the terse communicator could not be made; this communicator is not compressed", s);
    }
    int rank = 0, size = 0;
    terse_comm_rank(pc->tc, &rank, &size);
    if (rank == 0 && g.log >= LOG_INFO) {
        char cname[MPI_MAX_OBJECT_NAME], cfg[1024] = "";
        comm_name(pc, cname, sizeof cname);
        terse_comm_config(pc->tc, cfg, sizeof cfg);
        pmpi_log(LOG_INFO, "compressing float MPI_SUM allreduces of >= %zu elements on %s "
                 "(%d ranks) with %s (forced per layer: %s)", g.min_size ? g.min_size : 1, cname,
                 size, cfg, layer_config);
    }
    return MPI_SUCCESS;
}

/* The exact sum of a call terse gave back unchanged on every rank. */
static int fall_back(void *recvbuf, int count, MPI_Comm comm)
{
    count_add(&g.fell_back, 1);
    return PMPI_Allreduce(MPI_IN_PLACE, recvbuf, count, MPI_FLOAT, MPI_SUM, comm);
}

static int compressed_allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Comm comm)
{
    pmpi_comm_t *pc = comm_get(comm);
    if (!pc) local_failure("out of memory for the table of communicators");
    if (pc->off) return passthrough(sendbuf, recvbuf, count, MPI_FLOAT, MPI_SUM, comm);
    int rc;
    if (!pc->tc && (rc = comm_open(pc, count)) != MPI_SUCCESS) return rc;
    int layer = -1;
    if ((rc = layer_get(pc, recvbuf, count, &layer)) != MPI_SUCCESS) return rc;
    if (sendbuf != MPI_IN_PLACE) memmove(recvbuf, sendbuf, (size_t)count * sizeof(float));

    inside_terse = 1;
    terse_status_t s = terse_allreduce(pc->tc, layer, recvbuf);
    inside_terse = 0;
    if (s == TERSE_OK) {
        terse_stats_t st;
        int size = 0;
        terse_comm_rank(pc->tc, NULL, &size);
        if (terse_layer_stats(pc->tc, layer, &st) == TERSE_OK) count_add(&g.sent_bytes, st.sent_bytes);
        /* what a ring allreduce of the floats would hand over: 2 (n-1)/n of the vector */
        count_add(&g.ring_bytes, 2 * (uint64_t)(size - 1) * (uint64_t)count * sizeof(float) / (uint64_t)size);
        count_add(&g.compressed, 1);
        return MPI_SUCCESS;
    }
    if (s == TERSE_ERR_NONFINITE) {
        /* a NaN or Inf somewhere: MPI's exact sum carries it as the program expects */
        return fall_back(recvbuf, count, comm);
    }
    if (s == TERSE_ERR_MISMATCH) {
        int rank = 0;
        terse_comm_rank(pc->tc, &rank, NULL);
        char cname[MPI_MAX_OBJECT_NAME];
        comm_name(pc, cname, sizeof cname);
        pc->resets++;
        if (rank == 0)
            pmpi_log(LOG_WARN, "%s: the ranks' buffers map to different layers (%s); this call is "
                     "summed exactly and the communicator's terse state is reset (%d of %d)%s",
                     cname, terse_last_error(), pc->resets, PMPI_MAX_RESETS,
                     pc->resets >= PMPI_MAX_RESETS ? "; it is no longer compressed" : "");
        comm_reset(pc);
        if (pc->resets >= PMPI_MAX_RESETS) pc->off = 1;
        return fall_back(recvbuf, count, comm);
    }
    return call_fails(comm, count, "terse_allreduce failed", s);
}

/* ---- The intercepted MPI functions ---------------------------------------------------- */

int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype type, MPI_Op op,
                  MPI_Comm comm)
{
    if (inside_terse) return PMPI_Allreduce(sendbuf, recvbuf, count, type, op, comm);
    pthread_once(&g.once, env_read);
    if (g.env_error[0] && !__atomic_exchange_n(&g.env_error_told, 1, __ATOMIC_RELAXED)) {
        /* the first call of the run, on every rank: fail it loudly, then stay exact */
        pmpi_log(LOG_ERROR, "rank %d: %s; no call is compressed", world_rank(), g.env_error);
        if (comm != MPI_COMM_NULL) PMPI_Comm_call_errhandler(comm, MPI_ERR_OTHER);
        return MPI_ERR_OTHER;
    }
    if (!eligible(sendbuf, recvbuf, count, type, op, comm))
        return passthrough(sendbuf, recvbuf, count, type, op, comm);
    return compressed_allreduce(sendbuf, recvbuf, count, comm);
}

/* Passed through: a nonblocking call cannot run terse's blocking exchange without changing
 * when the program may wait, and so risking a deadlock the program does not have. */
int MPI_Iallreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype type, MPI_Op op,
                   MPI_Comm comm, MPI_Request *request)
{
    if (!inside_terse) count_add(&g.passed, 1);
    return PMPI_Iallreduce(sendbuf, recvbuf, count, type, op, comm, request);
}

/* A freed handle may come back for a new communicator: forget the old one's layers. */
int MPI_Comm_free(MPI_Comm *comm)
{
    if (!inside_terse && comm) comm_free(comm_take(*comm));
    return PMPI_Comm_free(comm);
}

int MPI_Comm_disconnect(MPI_Comm *comm)
{
    if (!inside_terse && comm) comm_free(comm_take(*comm));
    return PMPI_Comm_disconnect(comm);
}

static void report(void)
{
    uint64_t comp = count_get(&g.compressed), pass = count_get(&g.passed);
    uint64_t back = count_get(&g.fell_back);
    char extra[128] = "";
    if (back) snprintf(extra, sizeof extra, ", %llu summed by MPI instead (mismatched layers or NaN/Inf)",
                       (unsigned long long)back);
    if (comp)
        pmpi_log(LOG_WARN, "%llu compressed calls, %llu passed through%s; rank 0 sent %.6g MB for "
                 "the compressed calls (a ring allreduce of the floats: %.6g MB)",
                 (unsigned long long)comp, (unsigned long long)pass, extra,
                 (double)count_get(&g.sent_bytes) * 1e-6, (double)count_get(&g.ring_bytes) * 1e-6);
    else
        pmpi_log(LOG_WARN, "%llu compressed calls, %llu passed through%s", (unsigned long long)comp,
                 (unsigned long long)pass, extra);
    if (g.log < LOG_INFO) return;
    for (size_t i = 0; i < g.n_tab; i++) {
        const pmpi_comm_t *pc = g.tab[i];
        for (size_t j = 0; pc->tc && j < pc->n_keys; j++) {
            terse_stats_t st;
            if (terse_layer_stats(pc->tc, pc->keys[j].layer, &st) != TERSE_OK) continue;
            pmpi_log(LOG_INFO, "  layer %s: %zu floats, %llu calls, codec %s, feedback %s, "
                     "%llu bytes sent", st.name, st.count, (unsigned long long)st.calls, st.codec,
                     st.feedback, (unsigned long long)st.total_sent_bytes);
        }
    }
}

int MPI_Finalize(void)
{
    if (inside_terse) return PMPI_Finalize();
    pthread_once(&g.once, env_read);
    int fin = 0;
    PMPI_Finalized(&fin);
    if (!fin) {
        if (world_rank() == 0) report();
        pthread_mutex_lock(&g.lock);
        for (size_t i = 0; i < g.n_tab; i++) comm_free(g.tab[i]);
        free(g.tab);
        g.tab = NULL;
        g.n_tab = g.cap_tab = 0;
        pthread_mutex_unlock(&g.lock);
    }
    return PMPI_Finalize();
}
