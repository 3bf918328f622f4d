/* L-GreCo (ALGORITHMS.md §9): per-layer compression parameters chosen by dynamic
 * programming, re-planned every `period` steps.
 *
 * Two parts:
 *   lgreco_family.c  what can be adapted: per codec family, the candidate values of one
 *                    parameter, their exact wire bytes, and their compression error on a
 *                    layer's accumulated message input
 *   lgreco.c         the loop: the accumulation window, the decision (rank 0 measures and
 *                    solves, the plan is broadcast), applying a plan to the layers, and the
 *                    plan's part of the saved state */
#ifndef TERSE_LGRECO_H
#define TERSE_LGRECO_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "config.h"

/* The parameters of adapt=lgreco, in the order of its table in config.c. */
enum { LGRECO_PERIOD, LGRECO_WINDOW, LGRECO_ALPHA, LGRECO_LO, LGRECO_HI, LGRECO_BUCKETS,
       LGRECO_N_PARAMS };

/* The most candidates a layer has: a longer integer range is thinned geometrically. */
#define LGRECO_MAX_CANDIDATES 32
/* Power iterations behind a low-rank error estimate (the reference's error_method_iter;
 * here each is P <- orth(A A^T P) on the short side, src/lgreco_family.c). */
#define LGRECO_POWER_ITERS 5

typedef struct lgreco_family lgreco_family_t;

/* One adapted layer's plan and window. */
typedef struct {
    const lgreco_family_t *family;
    int param;                          /* the adapted parameter's index in the codec's table */
    size_t n_cand;
    double cand[LGRECO_MAX_CANDIDATES]; /* its candidate values, increasing                  */
    size_t uniform;                     /* the index of the configured value                 */
    size_t choice;                      /* the index in force                                */
    float *acc;                         /* rank 0 only: the window's message inputs, summed  */
    uint64_t acc_calls;                 /* calls summed into acc                             */
} lgreco_layer_t;

/* The family that adapts codec `name`, or NULL if it has no parameter L-GreCo can adapt. */
const lgreco_family_t *lgreco_family_for(const char *codec_name);

/* Whether family f adapts a layer of rows x cols with codec parameters p: not DGC's 1-D
 * layers, which it sends dense with momentum (they stay out of every plan). */
int lgreco_family_applies(const lgreco_family_t *f, const double *p, size_t rows, size_t cols);

/* The names of the codecs that have a family, for messages: "powersgd, topk, ...". */
const char *lgreco_family_names(void);

/* Fills lg's family, adapted parameter and candidates for a layer of rows x cols elements
 * whose codec is `compressor` (which must have a family) under adapt parameters `ap`; the
 * choice starts at the configured value. A topk layer configured with neither density nor k
 * gets its default density written into compressor, so that the parameter has a value. */
void lgreco_layer_init(lgreco_layer_t *lg, method_spec_t *compressor, const double *ap,
                       size_t rows, size_t cols);

/* The codec parameters of candidate `index`: base with the adapted parameter replaced. */
void lgreco_candidate_params(const lgreco_layer_t *lg, const double *base, size_t index,
                             double out[TERSE_MAX_PARAMS]);

/* The bytes of scratch lgreco_measure needs for this layer (base: its codec parameters). */
size_t lgreco_work_bytes(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                         size_t cols);

/* Measures every candidate on scale * A (A rows x cols: the window's message inputs summed,
 * scale = 1 / their number gives the mean): sizes[c] = the exact bytes of a message with
 * candidate c, errors[c] = ||scale A - C_c(scale A)||_F (the truncation error of the best
 * rank-r approximation found by LGRECO_POWER_ITERS power iterations, for low rank; the
 * expectation for randk and qsgd), computed on A and scaled, every error being positively
 * homogeneous. A candidate the layer cannot use gets an infinite error; a non-finite A gives
 * NaN errors. work: lgreco_work_bytes(lg, ...) bytes. Allocates nothing and cannot fail. */
void lgreco_measure(const lgreco_layer_t *lg, const codec_ops_t *codec, const double *base, size_t rows,
                    size_t cols, const float *A, double scale, void *work, double *sizes, double *errors);

#endif
