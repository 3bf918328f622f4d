/* The error-feedback interface. A method keeps per-layer state (a float array sized once)
 * and sits on both sides of the aggregation protocol:
 *
 *   g (local gradient) --prepare--> p (message input) --protocol--> delta = C(p) (local),
 *                                                                   agg = mean_i C(p_i)
 *   (g, p, delta, agg) --update--> new state, out (the estimate handed back to the caller)
 *
 * prepare must not modify the state, so that a call abandoned after it (mismatch, non-finite
 * input on another rank) leaves the layer exactly as it was. */
#ifndef TERSE_FEEDBACK_H
#define TERSE_FEEDBACK_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"

typedef struct feedback_ops {
    size_t size;            /* sizeof(feedback_ops_t): the version of this table */
    const char *name;
    /* Floats of state per element of the layer (EF: 1, for e). */
    size_t state_per_elem;
    /* Whether update needs delta (the rank's own decoded message). */
    int needs_delta;
    /* Whether prepare may ask for an uncompressed call (then a dense workspace is kept). */
    int may_send_uncompressed;
    /* Writes the message input p from g and the state. `calls` counts this layer's
     * completed calls. Returns 1 when this call must send p uncompressed (EF21's first
     * call), 0 otherwise. */
    int (*prepare)(const double *prm, const float *state, const float *restrict g,
                   float *restrict p, size_t n, uint64_t calls);
    /* Updates the state and writes the estimate to out (which may alias g). */
    void (*update)(const double *prm, float *state, const float *g, const float *p,
                   const float *delta, const float *agg, float *out, size_t n, uint64_t calls);
} feedback_ops_t;

extern const method_def_t feedback_registry[];
extern const size_t feedback_registry_len;
const method_def_t *feedback_find(const char *name);

#endif
