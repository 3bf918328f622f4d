/*
 * terse.h — compressed gradient allreduce for data-parallel training.
 *
 * This header needs no MPI, NCCL or CUDA types. It reads top to bottom: status codes and
 * errors, version, communicators, layers, the allreduce itself, statistics, state, and the
 * offline L-GreCo planner.
 *
 * Error convention (one place, for every function below): a function that can fail returns
 * a terse_status_t. TERSE_OK is zero, every error is negative. On error, output parameters
 * are left untouched and terse_last_error() returns a sentence saying what was wrong (which
 * argument, which value, what is accepted). No function aborts or exits on bad input.
 *
 * Handles: every function that takes a communicator checks that it is live. A destroyed or
 * never-created handle gives TERSE_ERR_ARG ("not a live communicator"); the handle is
 * compared with the live ones, never dereferenced. (A new communicator that happens to get
 * the address of a destroyed one is indistinguishable from it.) The collective calls
 * (allreduce, state save and load) return TERSE_ERR_STATE once MPI has been finalised;
 * destroying a communicator after MPI_Finalize is fine.
 *
 * Thread safety: a communicator is used by one thread at a time, and terse enforces it: a
 * call that enters a communicator while another thread is inside a call on it returns
 * TERSE_ERR_STATE, naming the call in progress, and changes nothing. terse_comm_rank() and
 * terse_comm_config() read only what is fixed at creation and may be called from any thread
 * at any time. Different communicators may be used from different threads at once if MPI
 * was initialised with MPI_THREAD_MULTIPLE (terse_comm_create_world asks for
 * MPI_THREAD_SERIALIZED only). terse_last_error() is per thread.
 */
#ifndef TERSE_H
#define TERSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TERSE_API
#else
#define TERSE_API __attribute__((visibility("default")))
#endif

/* ---- Status and errors ------------------------------------------------------------------ */

typedef enum {
    TERSE_OK = 0,
    TERSE_ERR_ARG = -1,         /* an argument is NULL, out of range or malformed          */
    TERSE_ERR_NOMEM = -2,       /* an allocation failed                                     */
    TERSE_ERR_BACKEND = -3,     /* MPI (or NCCL/CUDA) returned an error                     */
    TERSE_ERR_MISMATCH = -4,    /* ranks disagree on layer, count, codec or step            */
    TERSE_ERR_UNSUPPORTED = -5, /* a valid request this build cannot serve                  */
    TERSE_ERR_STATE = -6,       /* a call out of order (e.g. after MPI_Finalize)            */
    TERSE_ERR_NONFINITE = -7,   /* NaN or Inf in an input with nonfinite=error             */
    TERSE_ERR_IO = -8           /* reading or writing a state file failed                   */
} terse_status_t;

/* A short, static name for a status ("TERSE_ERR_ARG: invalid argument"). Never NULL; an
 * unknown value gives "unknown terse status". */
TERSE_API const char *terse_status_string(terse_status_t s);

/* The detail of the last error set in the calling thread, in words a user can act on, or ""
 * if none. The pointer stays valid until the next terse call in this thread. */
TERSE_API const char *terse_last_error(void);

/* ---- Version ---------------------------------------------------------------------------- */

#define TERSE_VERSION_MAJOR 0
#define TERSE_VERSION_MINOR 1
#define TERSE_VERSION_PATCH 0
#define TERSE_VERSION_NUMBER (TERSE_VERSION_MAJOR * 10000 + TERSE_VERSION_MINOR * 100 + TERSE_VERSION_PATCH)

/* The version of the library actually loaded, as TERSE_VERSION_NUMBER. */
TERSE_API unsigned terse_version(void);

/* ---- Communicators ---------------------------------------------------------------------- */

/* A communicator: the ranks that reduce together, their configuration and all per-layer
 * state. Opaque. */
typedef struct terse_comm terse_comm_t;

/* Creates a communicator over MPI_COMM_WORLD. If MPI is not initialised yet, terse
 * initialises it (and finalises it when the last communicator it made this way is
 * destroyed). `config` is a configuration string (docs/configuration.md), or NULL/"" for the
 * defaults; the TERSE_* environment variables override it. Collective over the world.
 * Errors: TERSE_ERR_ARG (out NULL, bad configuration), TERSE_ERR_UNSUPPORTED (a codec or
 * method this build lacks), TERSE_ERR_STATE (MPI already finalised), TERSE_ERR_BACKEND. */
TERSE_API terse_status_t terse_comm_create_world(const char *config, terse_comm_t **out);

/* As terse_comm_create_mpi() (terse_mpi.h), with the communicator given as a Fortran handle
 * (MPI_Comm_c2f), for bindings that cannot name MPI_Comm (Python's mpi4py: comm.py2f()).
 * MPI must be initialised. */
TERSE_API terse_status_t terse_comm_create_mpi_f(int fortran_comm, const char *config,
                                                 terse_comm_t **out);

/* Frees a communicator and all its layers. NULL is accepted and does nothing. Not
 * collective, but call it on every rank.
 * Errors: TERSE_ERR_ARG (not a live communicator: destroyed already, or never created),
 * TERSE_ERR_STATE (another thread is inside a call on it; it is not destroyed). */
TERSE_API terse_status_t terse_comm_destroy(terse_comm_t *c);

/* The calling process's rank in the communicator and the number of ranks. */
TERSE_API terse_status_t terse_comm_rank(const terse_comm_t *c, int *rank, int *size);

/* Writes the configuration in effect (after environment overrides) as a configuration
 * string into buf (at most len bytes, NUL-terminated). TERSE_ERR_ARG if it does not fit. */
TERSE_API terse_status_t terse_comm_config(const terse_comm_t *c, char *buf, size_t len);

/* ---- Layers ----------------------------------------------------------------------------- */

/* The largest number of elements one layer may have: 2^28 floats (1 GiB). Split larger
 * tensors into several layers. */
#define TERSE_MAX_LAYER_COUNT ((size_t)1 << 28)

/* Registers a layer (a gradient tensor) of rows x cols float32 elements, and returns its id
 * (0, 1, 2, ... in registration order) in *id. A vector is rows x 1; rows or cols may be 0
 * (an empty layer is valid). `name` is for reports and may be NULL. `config` overrides the
 * communicator's configuration for this layer (keys compressor, feedback, adapt, min_size,
 * reduce, nonfinite), or is NULL. All buffers for the layer are allocated here.
 * Every rank must register the same layers in the same order (not checked here; a
 * disagreement is caught as TERSE_ERR_MISMATCH by the first allreduce).
 * Errors: TERSE_ERR_ARG (NULL c or id, rows*cols overflows or exceeds
 * TERSE_MAX_LAYER_COUNT, bad config), TERSE_ERR_UNSUPPORTED, TERSE_ERR_NOMEM. */
TERSE_API terse_status_t terse_layer_add(terse_comm_t *c, const char *name, size_t rows,
                                         size_t cols, const char *config, int *id);

/* ---- Allreduce -------------------------------------------------------------------------- */

/* Compressed allreduce of one layer, in place. On entry buf holds this rank's local gradient
 * (rows*cols floats); on return it holds the aggregated estimate of the mean gradient over
 * all ranks (or the sum with reduce=sum), bitwise identical on every rank. Collective: every
 * rank calls it with the same layer. The layer's error-feedback state is updated.
 * On a communicator with device=cuda (or one over NCCL) buf is device memory: it is copied
 * to the layer's pinned host mirror, reduced there, and the result copied back before the
 * call returns (docs/gpu.md); a host pointer there is TERSE_ERR_ARG and is not touched.
 * With adapt=lgreco, the first call of a step at which a decision is due (every `period`
 * steps of terse_step_end) first takes the decision: rank 0 measures the candidates and
 * broadcasts the plan, and every layer's parameter changes from this call on.
 * Errors: TERSE_ERR_ARG (NULL, unknown layer id), TERSE_ERR_MISMATCH (ranks called with
 * different layers, sizes or codecs, or at different L-GreCo plans or steps: every rank gets
 * it, buf and state are unchanged),
 * TERSE_ERR_NONFINITE (a NaN/Inf on some rank with nonfinite=error: every rank gets it, state
 * unchanged), TERSE_ERR_BACKEND. */
TERSE_API terse_status_t terse_allreduce(terse_comm_t *c, int layer, float *buf);

/* terse_allreduce on n layers (bufs[i] holds layer layers[i]), with the same list on every
 * rank. Runs of small layers are fused: consecutive layers whose gradients total at most
 * the communicator's fuse= bytes (default 16 MiB; fuse=0: none) make one exchange whose
 * messages carry every layer of the run, so a bucket of many layers costs the round trips
 * of one. Each layer's result, state and statistics are bit for bit those of
 * terse_allreduce on it alone (only the times differ: a fused layer's compress, comm and
 * decompress times overlap its bucket's). Not fused: a layer listed twice (the second
 * starts a new bucket), a compressor=auto layer still timing its trials, and every layer
 * under the hierarchical protocol.
 * Every argument is checked before anything runs: an unknown id or a NULL buffer is
 * TERSE_ERR_ARG and no layer changes. An error of the exchange itself (a mismatch, a
 * non-finite gradient) fails that layer on every rank and is returned (the first such layer
 * in list order, its message naming it); the other layers of its bucket complete, and later
 * buckets do not run. */
TERSE_API terse_status_t terse_allreduce_many(terse_comm_t *c, int n, const int *layers,
                                              float *const *bufs);

/* A non-blocking terse_allreduce, finished by terse_wait or terse_test. */
typedef struct terse_request terse_request_t;

/* Starts terse_allreduce(c, layer, buf) on the communicator's progress thread and returns at
 * once, so that the exchange overlaps the caller's computation. buf must stay valid and
 * must be neither read nor written until terse_wait (or a terse_test that reports done)
 * returns; then it holds exactly what terse_allreduce would have left. Collective like
 * terse_allreduce: every rank starts the same layers in the same order. The requests of one
 * communicator run one at a time, in the order they were started; any other call on c
 * (terse_allreduce, terse_step_end, stats, save, load, destroy, ...) first waits until all
 * of them have run. Argument errors (TERSE_ERR_ARG: NULL, unknown layer, NULL req) come
 * from this call and start nothing; errors of the exchange itself come from terse_wait.
 * Threads: the progress thread calls MPI, so MPI must be initialised with at least
 * MPI_THREAD_SERIALIZED (and the caller must make no MPI call while a request is
 * outstanding), or MPI_THREAD_MULTIPLE for a caller that keeps using MPI meanwhile. Below
 * MPI_THREAD_SERIALIZED the allreduce runs inside this call, without overlap, and the
 * request is already complete. Steady-state calls allocate nothing: finished requests are
 * reused. */
TERSE_API terse_status_t terse_iallreduce(terse_comm_t *c, int layer, float *buf,
                                          terse_request_t **req);

/* Waits until req has finished and releases it; returns its status (with its message in
 * terse_last_error). req may be waited for after its communicator was destroyed. A request
 * is waited for once: after terse_wait the handle is dead (TERSE_ERR_ARG if it is used
 * again, as long as its memory has not been reused by a newer request). */
TERSE_API terse_status_t terse_wait(terse_request_t *req);

/* Whether req has finished, without blocking: *done = 0 and TERSE_OK while it runs; when it
 * has finished, *done = 1 and the request is released with terse_wait's status. */
TERSE_API terse_status_t terse_test(terse_request_t *req, int *done);

/* Sets the learning rate gamma of every layer that uses error feedback in its "learning rate
 * inside" form (feedback=ef:lr=GAMMA; see docs/configuration.md), from the next call on:
 * those layers keep their error in parameter units, so a changed gamma scales only the new
 * gradient. Other layers are not affected. Call it on every rank with the same value, between
 * allreduce calls. lr must be finite and > 0 (TERSE_ERR_ARG otherwise). */
TERSE_API terse_status_t terse_set_learning_rate(terse_comm_t *c, double lr);

/* Marks the end of an optimizer step (or of an epoch, if that is the unit a schedule should
 * count): advances the step counter that drives schedules (DGC's warm-up density, L-GreCo
 * periods). PowerSGD's `start` counts the layer's own calls instead, so it needs no call
 * here. Not collective, but call it on every rank at the same point. */
TERSE_API terse_status_t terse_step_end(terse_comm_t *c);

/* ---- Statistics ------------------------------------------------------------------------- */

typedef struct {
    char name[64];            /* the layer's name                                          */
    char codec[128];          /* the codec in force, as a configuration value              */
    char feedback[64];        /* the feedback method in force                              */
    size_t count;             /* elements                                                  */
    uint64_t calls;           /* allreduce calls completed on this layer                   */
    uint64_t skipped;         /* calls skipped for non-finite input (nonfinite=skip)       */
    uint64_t step;            /* the communicator's step counter                           */
    size_t wire_bytes;        /* last call: this rank's compressed message, as encoded     */
    size_t sent_bytes;        /* last call: bytes this rank handed to the transport        */
    uint64_t total_sent_bytes;/* all calls                                                 */
    double compress_us;       /* last call: feedback + encode time, microseconds           */
    double comm_us;           /* last call: time in the transport                          */
    double decompress_us;     /* last call: decode + aggregation + feedback update         */
    int dense;                /* 1 if the layer goes dense (small, or codec none)          */
    /* adapt=lgreco (zeros otherwise). The codec above shows the parameter in force.       */
    int adapted;              /* 1 if L-GreCo chooses this layer's parameter               */
    uint64_t plan_version;    /* decisions taken so far (communicator-wide)                */
    uint64_t plan_fallbacks;  /* decisions that kept the uniform plan (NaN, infeasible)     */
    double plan_us;           /* the last decision on this rank: measure, solve, broadcast
                                 and apply (not the wait for the ranks to arrive), in us    */
    double plan_measure_us;   /* rank 0: the last decision's error measurement              */
    double plan_solve_us;     /* rank 0: the last decision's dynamic program                */
    /* Node grouping (hier=..., docs/architecture.md)                                      */
    size_t sent_inter_bytes;  /* last call: the part of sent_bytes addressed to ranks on
                                 other nodes (hosts), the bytes that cross the network      */
    int hier_nodes;           /* the node count when the hierarchical protocol is in force
                                 (node-local dense reduce, compressed among leaders); 0 flat */
} terse_stats_t;

/* Copies the statistics of one layer into *out. */
TERSE_API terse_status_t terse_layer_stats(terse_comm_t *c, int layer, terse_stats_t *out);

/* ---- State --------------------------------------------------------------------------- */

/* Saves every layer's state (error-feedback buffers, call counters, the step counter, the
 * L-GreCo plan and its accumulation window) so that
 * a run resumed with terse_state_load continues bit for bit. Each rank writes its own file,
 * "<path>.rank<R>" (R = the rank), atomically: a temporary file, then a rename once every
 * rank has written its own, so no rank is left with a half-written or a newer-than-the-others
 * checkpoint. The file is versioned, checksummed and self-describing (rank, rank count,
 * layers with their sizes and codecs). Collective.
 * Errors: TERSE_ERR_ARG (NULL, path too long), TERSE_ERR_IO (any rank failed to write: all
 * ranks return it, and the previous files are left in place). */
TERSE_API terse_status_t terse_state_save(terse_comm_t *c, const char *path);

/* Loads what terse_state_save wrote into a communicator with the same rank count and the
 * same layers (sizes, codecs, feedback) registered in the same order. Collective: the state
 * changes only if every rank's file is valid and all hold the same step; otherwise every
 * rank returns the error and the communicator is unchanged. If a job died between the
 * ranks' renames in terse_state_save, the ranks still on the older file take the newer one
 * from their complete temporary file, so the newest checkpoint loads whole.
 * Errors: TERSE_ERR_ARG (NULL), TERSE_ERR_IO (missing, truncated or corrupted file, a file
 * from a newer version of terse), TERSE_ERR_MISMATCH (another rank, rank count, layer list
 * or configuration, or files of different steps). */
TERSE_API terse_status_t terse_state_load(terse_comm_t *c, const char *path);

/* ---- Offline L-GreCo planning ----------------------------------------------------------- */

/* Chooses one candidate per layer: minimises sum_l sizes[l][choice[l]] among the choice
 * vectors whose discretised errors ceil(errors[l][c] * buckets / budget) sum to at most
 * `buckets` (so the true total error is at most `budget`). Ties go to the lexicographically
 * smallest choice vector. sizes and errors are n_layers x n_candidates, row-major. A
 * candidate may be excluded by giving it an infinite error.
 * Errors: TERSE_ERR_ARG for NULL arrays, zero counts, a NaN or negative value, a budget
 * that is not positive and finite, or no feasible choice (the message says which). */
TERSE_API terse_status_t terse_lgreco_solve(size_t n_layers, size_t n_candidates,
                                            const double *sizes, const double *errors,
                                            double budget, size_t buckets, size_t *choice);

#ifdef __cplusplus
}
#endif
#endif /* TERSE_H */
