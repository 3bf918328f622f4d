/* The engine's private view of communicators and layers. */
#ifndef TERSE_INTERNAL_H
#define TERSE_INTERNAL_H

#include <stdint.h>

#include "codec.h"
#include "config.h"
#include "error.h"
#include "feedback/feedback.h"
#include "lgreco.h"
#include "protocol.h"
#include "transport.h"

typedef struct {
    char name[64];
    size_t rows, cols, count;
    terse_config_t cfg;            /* the layer's configuration, overrides applied        */
    const codec_ops_t *codec;      /* the codec in force (none for a dense layer)          */
    const protocol_ops_t *proto;
    const feedback_ops_t *fb;
    uint64_t fingerprint;          /* hash of codec, parameters and feedback: ranks compare */
    int dense;                     /* small or uncompressed: plain dense mean               */

    float *state;                  /* feedback state (fb_floats), then the protocol's
                                      (proto_floats): one block, saved as one               */
    size_t fb_floats, proto_floats;
    size_t proto_cap;              /* protocol floats allocated: the largest L-GreCo candidate's */
    float *p;                      /* message input                                        */
    float *delta;                  /* this rank's decoded message                          */
    float *agg;                    /* the aggregate                                        */
    void *ws;                      /* protocol workspace                                   */
    void *scratch;                 /* codec scratch                                        */
    void *ws_dense;                /* workspace of the uncompressed path (EF21's first call) */

    lgreco_layer_t *lg;            /* adapt=lgreco: the plan and window; NULL otherwise      */

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
} lgreco_comm_t;

struct terse_comm {
    transport_t tp;
    terse_config_t cfg;
    layer_t *layers;
    size_t n_layers, cap_layers;
    uint64_t step;
    int owns_mpi;                  /* terse_comm_create_world initialised MPI             */
    uint64_t *headers;             /* nranks * HEADER_WORDS, sized at creation            */
    lgreco_comm_t lg;
};

/* The header every rank contributes before an exchange (words of uint64). */
enum { HDR_MAGIC, HDR_LAYER, HDR_COUNT, HDR_FINGERPRINT, HDR_CALL, HDR_PLAN, HDR_FLAGS, HDR_WIRE,
       HDR_WORDS };
enum { HDR_FLAG_NONFINITE = 1, HDR_FLAG_UNCOMPRESSED = 2 };

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

/* Monotonic time in microseconds. */
double engine_now_us(void);

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

#endif
