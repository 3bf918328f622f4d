/* Deep Gradient Compression (ALGORITHMS.md §6): the warm-up density schedule, the per-tensor
 * sampling plan and the sampled-threshold selection shared by the dgc codec and its protocol
 * (collectives/dgc_allgather.c), which adds momentum correction, factor masking and clipping. */
#ifndef TERSE_DGC_H
#define TERSE_DGC_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

enum {
    DGC_DENSITY,   /* base density r after the warm-up, in (0, 1]                          */
    DGC_SAMPLE,    /* fraction of the entries sampled to estimate the threshold            */
    DGC_MOMENTUM,  /* momentum factor m                                                    */
    DGC_NESTEROV,  /* 1: Nesterov momentum                                                 */
    DGC_CLIP,      /* local clipping threshold (NAN: off)                                  */
    DGC_WARMUP,    /* warm-up length in terse_step_end units (steps or epochs)             */
    DGC_SCHEDULE,  /* DGC_SCHEDULE_PAPER or DGC_SCHEDULE_GEOMETRIC                         */
    DGC_N_PARAMS
};
enum { DGC_SCHEDULE_PAPER, DGC_SCHEDULE_GEOMETRIC };
extern const param_def_t dgc_params[DGC_N_PARAMS];
extern const codec_ops_t codec_dgc_ops;

/* The sampling plan of one tensor at one density (§6.2 `initialize`). */
typedef struct {
    size_t numel;
    size_t num_selects;    /* ceil(numel * r): the most entries a message carries          */
    size_t num_samples;    /* numel // stride, or numel when every entry is a sample       */
    size_t top_k_samples;  /* ceil(num_samples * r)                                        */
    size_t stride;         /* 1: no sampling, exact top-k                                  */
} dgc_plan_t;

/* How one selection went, for tests and diagnostics. */
typedef struct {
    float threshold;       /* the last threshold compared against                          */
    size_t candidates;     /* |{j : |v_j| >= threshold}| before the final truncation        */
    int iterations;        /* adaptation iterations run (0..10)                            */
    int hierarchical;      /* 1: the candidates were cut by an exact top-k                 */
    int exhausted;         /* 1: all 10 iterations ran without the loop deciding to stop   */
} dgc_select_info_t;

/* The density at step e (terse_step_end calls so far): during the warm-up (e < warmup)
 * max(4^-(e+1), density) for the paper schedule, max(coeff^(e+1), density) with
 * coeff = density^(1/(warmup+1)) for the geometric one; density afterwards. Never increases
 * with e, so step 0 asks for the most. */
double dgc_density(const double *p, uint64_t step);

/* The plan of a tensor of numel entries at density r with sample ratio `sample` (§6.2, in
 * double precision as the reference computes it). */
dgc_plan_t dgc_plan(size_t numel, double r, double sample);

/* The most entries a message of a count-element layer can carry over the whole schedule:
 * num_selects at step 0. */
size_t dgc_max_selects(const double *p, size_t count);

/* Whether a rows x cols layer is sparsified (rows > 1, cols > 1 and density < 1); the
 * others are averaged densely and get momentum after the average. */
int dgc_sparsifies(const double *p, size_t rows, size_t cols);

/* Scratch bytes dgc_select needs for count entries. */
size_t dgc_scratch_bytes(size_t count);

/* The sampled-threshold selection of §6.2 on v[0..plan->numel): writes the sparse message
 * uint32 k | uint32 idx[k] increasing | float val[k] (val = v[idx]) to msg, which must hold
 * 4 + 8 * plan->num_selects bytes, and returns its size. The strided sample starts at
 * rng_below(key, 0, stride). k <= num_selects. info may be NULL. */
size_t dgc_select(const dgc_plan_t *plan, uint64_t key, const float *restrict v,
                  void *restrict msg, void *restrict scratch, dgc_select_info_t *info);

/* The momentum step of §6.2 that the protocol runs on a sparsified layer, element by
 * element, with G = g coef:
 *   u1 = m u + G,        v1 = v + u1             (momentum)
 *   u1 = (u + G) m,      v1 = (v + u1) + G       (Nesterov)
 * Each product and sum is its own float operation (no fused multiply-add), so every kernel
 * and the serial reference give the same bits. */
typedef struct {
    const float *u, *v, *g;  /* the state in force, the gradient                           */
    float *u1, *v1;          /* out: the next state, every element written                 */
    float coef, m;           /* the clipping factor (1: none) and the momentum factor      */
    int nesterov;
} dgc_momentum_t;

static inline float dgc_next_u(float u, float g, float coef, float m, int nesterov)
{
    const float G = g * coef; /* exact when coef is 1 */
    return nesterov ? (u + G) * m : m * u + G;
}

static inline float dgc_next_v(float v, float u1, float g, float coef, int nesterov)
{
    return nesterov ? (v + u1) + g * coef : v + u1;
}

/* The momentum step over plan->numel entries fused into the selection: the same u1, v1 and
 * message as writing u1 and v1 first and then calling dgc_select on v1, with one pass over
 * u, v and g instead of two (the threshold's samples are computed where they lie, and the
 * first count collects while it writes). *nonfinite (if not NULL): whether g holds a NaN or
 * an infinity, found in the same pass. */
size_t dgc_momentum_select(const dgc_plan_t *plan, uint64_t key, const dgc_momentum_t *mo,
                           void *restrict msg, void *restrict scratch, dgc_select_info_t *info,
                           int *nonfinite);

#endif
