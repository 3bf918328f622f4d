/* The error-feedback interface. A method keeps per-layer state (a float array sized once)
 * and sits on both sides of the aggregation protocol:
 *
 *   g (local gradient) --prepare--> p (message input) --protocol--> delta = C(p) (local),
 *                                                                   agg = mean_i C(p_i)
 *   (g, p, delta, agg) --update--> new state, out (the estimate handed back to the caller)
 *
 * agg is the mean of the ranks' decoded messages, or their sum for a layer configured
 * reduce=sum; a method that keeps an aggregate in its state keeps it in those same units, so
 * that reduce=sum hands back the estimate of the sum of the gradients.
 *
 * prepare must not modify the state, so that a call abandoned after it (mismatch, non-finite
 * input on another rank) leaves the layer exactly as it was. Both are elementwise: the
 * engine may run them on ranges [b, e) of the layer on several threads, passing state + b,
 * g + b, ... with n = e - b and ctx->stride = the layer's count. */
#ifndef TERSE_FEEDBACK_H
#define TERSE_FEEDBACK_H

#include <stddef.h>
#include <stdint.h>

#include "terse.h"
#include "params.h"

/* What a method knows about the call besides its state and vectors. */
typedef struct {
    const double *prm;      /* the method's parameters, indexed like its registry table     */
    uint64_t calls;         /* this layer's completed calls (0 on the first)                 */
    int rank, nranks;       /* this rank, and the ranks that take part in the aggregation    */
    size_t stride;          /* floats between the method's state arrays: the layer's count,
                               when prepare and update see a range of it (worker threads);
                               0: the n of the call                                          */
} feedback_ctx_t;

/* Where a method's second state array starts: state + FEEDBACK_STRIDE(ctx, n). */
#define FEEDBACK_STRIDE(ctx, n) ((ctx)->stride ? (ctx)->stride : (n))

typedef struct feedback_ops {
    size_t size;            /* sizeof(feedback_ops_t): the version of this table */
    const char *name;
    /* Floats of state per element of the layer (EF: 1, for e). */
    size_t state_per_elem;
    /* Whether update needs delta (the rank's own decoded message). */
    int needs_delta;
    /* Whether prepare may ask for an uncompressed call (then a dense workspace is kept). */
    int may_send_uncompressed;
    /* Bit i set: parameter i is the rank's own and may differ between ranks (EF21-W's
     * weight). The layer fingerprint that ranks compare hashes only whether it is set. */
    unsigned rank_local_params;
    /* Checks the parameters for a communicator of nranks ranks, at layer registration
     * (TERSE_ERR_ARG with a message when they cannot work). May be NULL. */
    terse_status_t (*check)(const double *prm, int nranks);
    /* 1 when, with these parameters and its state all +0, the method is the identity on an
     * uncompressed call: prepare writes p = g (up to the sign of zeros, which the dense
     * sum does not see: it starts from +0), and update leaves the state all +0 and writes
     * out = agg. The engine then skips both on such calls (compressor=auto's dense calls).
     * NULL: never. */
    int (*identity_at_zero)(const double *prm);
    /* 1 when, with these parameters, update is exactly state = p - delta and out = agg (the
     * state one float per element). The engine may then have the protocol leave p - delta
     * in p (PROTO_RESIDUAL_IN_PLACE) and the aggregate in the caller's buffer, and make p
     * the state by swapping the two buffers: no pass over the layer. NULL: never. */
    int (*plain_residual)(const double *prm);
    /* Writes the message input p from g and the state. Returns 1 when this call must send p
     * uncompressed (EF21's first call), 0 otherwise. */
    int (*prepare)(const feedback_ctx_t *ctx, const float *state, const float *restrict g,
                   float *restrict p, size_t n);
    /* Updates the state and writes the estimate to out (which may alias g: a method reads
     * g[j] before it writes out[j]). */
    void (*update)(const feedback_ctx_t *ctx, float *state, const float *g, const float *p,
                   const float *delta, const float *agg, float *out, size_t n);
} feedback_ops_t;

extern const method_def_t feedback_registry[];
extern const size_t feedback_registry_len;
const method_def_t *feedback_find(const char *name);

#endif
