/* The engine's private view of communicators and layers. */
#ifndef TERSE_INTERNAL_H
#define TERSE_INTERNAL_H

#include <stdint.h>

#include "auto.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "guard.h"
#include "feedback/feedback.h"
#include "hier.h"
#include "lgreco.h"
#include "pool.h"
#include "protocol.h"
#include "transport.h"

typedef struct fuse fuse_t;

typedef struct {
    char name[64];
    size_t rows, cols, count;
    terse_config_t cfg;            /* the layer's configuration, overrides applied        */
    const codec_ops_t *codec;      /* the codec in force (none for a dense layer)          */
    const protocol_ops_t *proto;
    const feedback_ops_t *fb;
    uint64_t fingerprint;          /* hash of codec, parameters and feedback: ranks compare */
    int dense;                     /* small or uncompressed: plain dense mean               */

    float *state;                  /* feedback state (fb_floats)                            */
    int fb_zero;                   /* the feedback state is known to be all zero (see
                                      engine_begin's bypass)                                */
    float *pstate;                 /* protocol state (proto_floats); saved right after state */
    float *pstate_next;            /* swaps_state protocols: the buffer the next state is
                                      written to, swapped with pstate after a call; else NULL */
    size_t fb_floats, proto_floats;
    size_t proto_cap;              /* protocol floats allocated: the largest L-GreCo candidate's */
    float *p;                      /* message input; NULL with feedback none (p is g)       */
    float *delta;                  /* this rank's decoded message                          */
    float *agg;                    /* the aggregate                                        */
    void *ws;                      /* protocol workspace                                   */
    void *scratch;                 /* codec scratch                                        */
    void *ws_dense;                /* workspace of the uncompressed path (EF21's first call) */
    float *node_sum;               /* hier: the node's sum, the leader's gradient (count)   */
    void *ws_node;                 /* hier: workspace of the reduce inside the node          */
    int hier_nodes;                /* hier: the node count (part of the fingerprint); 0 flat */

    lgreco_layer_t *lg;            /* adapt=lgreco: the plan and window; NULL otherwise      */

    auto_rec_t autorec;            /* compressor=auto: the trials and the choice             */

    float *host;                   /* device=cuda: the pinned host mirror of the buffer      */

    uint64_t calls, skipped;
    terse_stats_t last;            /* figures of the last call                             */
    uint64_t total_sent;
} layer_t;

/* The communicator's L-GreCo schedule (src/lgreco.c). period, window, alpha and buckets come
 * from the communicator's configuration, or from the first layer that asked for lgreco. */
typedef struct {
    int on;                        /* some layer is adapted                                 */
    uint64_t period, window;
    double alpha;
    size_t buckets;
    uint64_t next_step;            /* the step whose first allreduce decides                */
    uint64_t version;              /* decisions taken (the plan version in every header)     */
    uint64_t fallbacks;            /* decisions that kept the uniform plan                   */
    int fallback;                  /* the last one did                                       */
    double last_us;                /* the last decision on this rank, from the ranks' agreement
                                      to the plan applied (measure, solve, broadcast, apply)  */
    double measure_us, solve_us;   /* rank 0: its error measurement and its DP              */
    double *msg;                   /* the broadcast plan: 1 + adapted layers                 */
    size_t *choice;
    size_t n_adapted;
    void *work;                    /* rank 0: lgreco_measure's scratch for the largest
                                      adapted layer, sized and touched at registration      */
    size_t work_bytes;
} lgreco_comm_t;

/* The communicator's node grouping (src/hier_comm.c). The layout is known in every mode,
 * so that the transports can count the bytes that cross nodes; the node and leader
 * transports exist only when the hierarchical protocol is on. */
typedef struct {
    int on;                        /* the hierarchical protocol is in force                */
    hier_layout_t lay;
    int *node_of;                  /* every rank's node                                     */
    int *lead_nodes;               /* 0 .. n_nodes-1: each leader is a node of its own       */
    transport_t node;              /* this node's ranks (on)                                */
    transport_t lead;              /* the leaders (on, and this rank leads; else ops NULL)   */
} hier_comm_t;

struct terse_comm {
    transport_t tp;
    hier_comm_t hier;
    terse_config_t cfg;
    layer_t *layers;
    size_t n_layers, cap_layers;
    uint64_t step;
    int owns_mpi;                  /* terse_comm_create_world initialised MPI             */
    uint64_t *headers;             /* nranks * HEADER_WORDS, sized at creation            */
    pool_t *pool;                  /* worker threads (threads=N > 1), else NULL            */
    lgreco_comm_t lg;
    progress_t *progress;          /* terse_iallreduce's thread and requests, or NULL     */
    fuse_t *fuse;                  /* terse_allreduce_many's fibers and staging, or NULL  */
    int over_mpi;                  /* the transport is MPI (else NCCL)                      */
    int dev;                       /* device=cuda: the CUDA device of the buffers           */
    void *dev_stream;              /* device=cuda: the stream of the staging copies (NCCL:
                                      the caller's; MPI: NULL, the legacy default stream)   */
};

/* Finishes a communicator whose configuration and transport are set (c->cfg, c->tp,
 * c->over_mpi; over NCCL also c->dev and c->dev_stream): headers, hier (MPI only), the device, worker threads, the
 * guard. Collective: every rank learns whether every rank succeeded. On failure frees what
 * it made and destroys the transport; the caller frees c. */
terse_status_t comm_finish(terse_comm_t *c);

/* The header every rank contributes before an exchange (words of uint64). */
enum { HDR_MAGIC, HDR_LAYER, HDR_COUNT, HDR_FINGERPRINT, HDR_CALL, HDR_PLAN, HDR_FLAGS, HDR_WIRE,
       HDR_WORDS };
enum { HDR_FLAG_NONFINITE = 1, HDR_FLAG_UNCOMPRESSED = 2, HDR_NONFINITE_MODE_SHIFT = 2 };
/* The flag bits every rank must have alike: the uncompressed-call flag and the layer's
 * nonfinite= setting (bits 2-3), so that no rank skips a call another one fails. */
#define HDR_FLAGS_AGREED ((uint64_t)HDR_FLAG_UNCOMPRESSED | (3u << HDR_NONFINITE_MODE_SHIFT))

extern const codec_ops_t codec_none_ops;
extern const feedback_ops_t feedback_none_ops;

/* The codec parameters a layer uses (none's, empty, for a dense layer). */
const double *layer_params(const layer_t *l);
extern const double layer_no_params[TERSE_MAX_PARAMS];

/* The hash of what defines how layer l is reduced (codec, parameters in force, feedback,
 * reduce): ranks compare it per call, and a state file per layer. */
uint64_t layer_fingerprint(const layer_t *l);

/* Frees one layer's buffers. */
void layer_free(layer_t *l);

/* ---- compressor=auto (src/auto.c) ---- */

/* Whether layer l chooses between dense and compressed (an auto layer not dense anyway). */
int auto_on(const layer_t *l);
/* Whether this call of auto layer l goes dense: a dense trial, or dense was chosen. */
int auto_call_dense(const layer_t *l);
/* Records a trial call that took `us` on this rank. */
void auto_record(layer_t *l, double us);
/* After a successful call: once every trial has run, the ranks agree on the faster path. */
terse_status_t auto_maybe_decide(terse_comm_t *c, layer_t *l);

/* Monotonic time in microseconds. */
double engine_now_us(void);

/* ---- The call engine shared by the flat path (src/allreduce.c) and the hierarchical
 * one (src/allreduce_hier.c) ---- */

/* The transport of the compressed exchange (the leaders' under hier) and its rank count. */
static inline transport_t *comm_exchange_tp(terse_comm_t *c) { return c->hier.on ? &c->hier.lead : &c->tp; }
static inline int comm_workers(const terse_comm_t *c) { return c->hier.on ? c->hier.lay.n_nodes : c->tp.size; }

/* Whether v holds a NaN or an Inf. */
int engine_has_nonfinite(const float *v, size_t n);

/* The elementwise passes on the worker pool (src/parallel.c): feedback prepare (returns
 * whether the call goes uncompressed) and update of layer l, and the non-finite scan. */
int par_fb_prepare(pool_t *pool, const layer_t *l, const feedback_ctx_t *ctx, const float *g, float *p);
void par_fb_update(pool_t *pool, const layer_t *l, const feedback_ctx_t *ctx, const float *g,
                   const float *p, float *out);
int par_has_nonfinite(pool_t *pool, const float *v, size_t n);

/* The header allgather over every rank of tp: the ranks agree on the layer, its size and
 * configuration, the call and the plan (flags: HDR_FLAG_*, wire: this rank's message) and
 * learn whether any input is non-finite. *skip = 1: nonfinite=skip zeroed buf and counted
 * the skip, the call is over. A disagreement is TERSE_ERR_MISMATCH and a non-finite input
 * TERSE_ERR_NONFINITE, on every rank. On return headers (tp->size * HDR_WORDS words) holds
 * every rank's header. */
terse_status_t engine_agree(terse_comm_t *c, transport_t *tp, uint64_t *headers, int layer, float *buf,
                            uint64_t flags, uint64_t wire, int *skip);

/* What every rank does once all know that rank's input is non-finite: nonfinite=skip zeroes
 * buf, counts the skip and sets *skip (TERSE_OK); otherwise TERSE_ERR_NONFINITE naming the
 * rank. */
terse_status_t engine_nonfinite(terse_comm_t *c, int layer, float *buf, int rank, int *skip);

/* The flat protocol, every rank taking part in the compressed exchange: layer's whole call
 * (arguments checked, plan decided) over transport tp, with headers as its header table. */
terse_status_t engine_flat(terse_comm_t *c, int layer, float *buf, transport_t *tp, uint64_t *headers);

/* One rank's side of a layer's compressed exchange: its gradient g, the message input p
 * that feedback made of it, the protocol and the call. */
typedef struct {
    proto_call_t call;
    const protocol_ops_t *proto;
    feedback_ctx_t fctx;
    const float *g, *p;
    int uncompressed;              /* an uncompressed call: feedback asked (EF21's first) or
                                      compressor=auto chose dense                           */
    int bypass;                    /* an uncompressed call that skips the feedback method:
                                      p is g, and no update follows                         */
    int residual;                  /* the protocol leaves p - delta in p, the next state, and
                                      writes out: finish swaps p and the state              */
    unsigned shortcuts;            /* the protocol's PROTO_* shortcuts for this call         */
} engine_side_t;

/* Feedback prepare (g -> p, unless the layer is dense, its feedback none or bypassed: then p
 * is g) and the protocol call on transport tp, ready to encode, for a result that goes to out
 * (which may be g). State is not touched. */
void engine_begin(engine_side_t *s, terse_comm_t *c, int layer, transport_t *tp, const float *g,
                  float *out);

/* After a successful exchange and decode: the next protocol state in force (swaps_state),
 * L-GreCo's observation of p, and the estimate into out (feedback update, or the dense
 * aggregate; nothing when the protocol wrote out itself). */
void engine_finish(engine_side_t *s, terse_comm_t *c, int layer, float *out);

/* Exchange and decode; a malformed peer message becomes a MISMATCH naming the peer.
 * *t_exchanged: the time between the two. */
terse_status_t engine_exchange_decode(const protocol_ops_t *proto, proto_call_t *call,
                                      double *t_exchanged);

/* Counts a completed call of layer l: its message, the bytes sent (all, and to other
 * nodes) and the times t[0..3] that bound compress, comm and decompress. */
void engine_record(layer_t *l, size_t wire, uint64_t sent, uint64_t inter, const double t[4]);

/* ---- Fused buckets (src/fuse.c) ---- */

/* How many of layers[0..n) (n >= 1, checked) form the next bucket: a run of layers that may
 * be fused, whose gradients total at most fuse= bytes; 1 when the first runs alone. */
int fuse_bucket(const terse_comm_t *c, int n, const int *layers);
/* Runs the k layers of a bucket (k >= 2) as one exchange: each layer's call exactly as
 * terse_allreduce would make it, their collectives fused. Returns the first error in list
 * order; the other layers of the bucket complete. */
terse_status_t fuse_run(terse_comm_t *c, int k, const int *layers, float *const *bufs);
/* The most layers in one bucket. */
#define FUSE_MAX_LAYERS 128
void fuse_destroy(fuse_t *f);

/* ---- The hierarchical protocol (src/hier_comm.c, src/allreduce_hier.c) ---- */

/* Finds the node layout over c->tp and, when cfg.hier asks for it, builds the node and
 * leader transports. Collective. */
terse_status_t hier_setup(terse_comm_t *c);
void hier_destroy(terse_comm_t *c);
/* terse_allreduce under hier (arguments checked, plan decided). */
terse_status_t hier_allreduce(terse_comm_t *c, int layer, float *buf);

/* ---- L-GreCo's loop (src/lgreco.c) ---- */

/* Takes the schedule from adapt parameters ap, unless one is set already. */
void lgreco_comm_configure(lgreco_comm_t *g, const double *ap);
/* Whether a call at `step` belongs to an accumulation window. */
int lgreco_in_window(const lgreco_comm_t *g, uint64_t step);
/* After a completed call of layer l: rank 0 adds the message input p to the window. */
void lgreco_observe(const lgreco_comm_t *g, layer_t *l, uint64_t step, const float *p);
/* At the start of terse_allreduce: decides and applies a new plan if one is due. Collective
 * then; on error nothing has changed. */
terse_status_t lgreco_maybe_decide(terse_comm_t *c);
/* What layer l's fingerprint and state floats (feedback + protocol) would be with the
 * adapted parameter at `value`; TERSE_ERR_MISMATCH if that is not a candidate. */
terse_status_t lgreco_preview(const terse_comm_t *c, const layer_t *l, double value,
                              uint64_t *fingerprint, size_t *state_floats);
/* Puts layer l on the candidate whose value is `value` (a loaded plan); TERSE_ERR_MISMATCH
 * if it has none. */
terse_status_t lgreco_apply(terse_comm_t *c, layer_t *l, double value);

/* ---- State files (src/state.c) ---- */

/* The checksum that ends a state file: FNV-1a over its first n bytes. */
uint64_t state_checksum(const unsigned char *d, size_t n);

#endif
