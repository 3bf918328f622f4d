/* The L-GreCo loop (ALGORITHMS.md §9.2), for the layers whose configuration says
 * adapt=lgreco:
 *
 *   steps s with s mod period >= period - window:  rank 0 sums each adapted layer's message
 *       input p (the error-compensated gradient the codec sees) after every completed call
 *   the first terse_allreduce of a step s >= next decision (s = period, 2 period, ...):
 *       1. all ranks allgather a plan record (step, plan version, layers): any disagreement
 *          is TERSE_ERR_MISMATCH on every rank, before anything changes
 *       2. rank 0, for each layer with observations: A = mean of the window; per candidate
 *          the exact wire bytes and ||A - C(A)||; budget = alpha * sum of the errors of the
 *          configured (uniform) values; terse_lgreco_solve chooses. A NaN, an infeasible
 *          budget or a failed allocation falls back to the uniform plan, logged and counted
 *       3. rank 0 broadcasts the choices; every rank applies them
 *
 * Rank 0 decides alone, as the reference does, because the ranks' inputs differ: every
 * rank solving its own problem would give different plans, and agreeing on one input would
 * cost a dense allreduce of the whole model per decision. The broadcast is a few bytes.
 *
 * Applying a plan changes only the adapted parameter. Buffers were sized at registration
 * for the largest candidate, so nothing is allocated and nothing can fail half-way; the
 * error-feedback state is kept; the protocol's state is kept when its size does not change
 * (DGC's momentum, QSGD's owner error) and restarts from zero when it does (PowerSGD's Q at
 * a new rank: a fresh random Q, as in the reference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define PLAN_MAGIC 0x7465727365706c6eull /* "terseplan" */

/* The step of the decision after the one at `step`. */
static uint64_t next_decision(const lgreco_comm_t *g, uint64_t step)
{
    return (step / g->period + 1) * g->period;
}

void lgreco_comm_configure(lgreco_comm_t *g, const double *ap)
{
    if (g->on) return;
    g->on = 1;
    g->period = (uint64_t)ap[LGRECO_PERIOD];
    g->window = (uint64_t)ap[LGRECO_WINDOW] < g->period ? (uint64_t)ap[LGRECO_WINDOW] : g->period;
    g->alpha = ap[LGRECO_ALPHA];
    g->buckets = (size_t)ap[LGRECO_BUCKETS];
    g->next_step = g->period;
}

int lgreco_in_window(const lgreco_comm_t *g, uint64_t step)
{
    return g->on && step % g->period >= g->period - g->window;
}

void lgreco_observe(const lgreco_comm_t *g, layer_t *l, uint64_t step, const float *p)
{
    lgreco_layer_t *lg = l->lg;
    if (!lg || !lg->acc || !lgreco_in_window(g, step)) return;
    for (size_t i = 0; i < l->count; i++) lg->acc[i] += p[i];
    lg->acc_calls++;
}

/* Sets layer l to candidate `index`: the parameter, the fingerprint, the protocol state. */
static void apply_choice(terse_comm_t *c, layer_t *l, size_t index)
{
    lgreco_layer_t *lg = l->lg;
    lg->choice = index;
    l->cfg.compressor.p[lg->param] = lg->cand[index];
    const proto_shape_t shape = {l->codec, l->cfg.compressor.p, l->rows, l->cols, l->count, comm_workers(c)};
    size_t pf = l->proto->state_floats ? l->proto->state_floats(&shape) : 0;
    if (pf != l->proto_floats) memset(l->pstate, 0, l->proto_cap * sizeof(float));
    l->proto_floats = pf;
    l->fingerprint = layer_fingerprint(l);
}

/* The index of value among l's candidates, or n_cand. */
static size_t candidate_index(const lgreco_layer_t *lg, double value)
{
    size_t i = 0;
    while (i < lg->n_cand && lg->cand[i] != value) i++;
    return i;
}

terse_status_t lgreco_preview(const terse_comm_t *c, const layer_t *l, double value,
                              uint64_t *fingerprint, size_t *state_floats)
{
    const lgreco_layer_t *lg = l->lg;
    if (candidate_index(lg, value) == lg->n_cand)
        return terse_error(TERSE_ERR_MISMATCH, "layer '%s': %g is not one of its L-GreCo candidates", l->name, value);
    layer_t t = *l;
    t.cfg.compressor.p[lg->param] = value;
    const proto_shape_t shape = {t.codec, t.cfg.compressor.p, t.rows, t.cols, t.count, comm_workers(c)};
    *fingerprint = layer_fingerprint(&t);
    *state_floats = t.fb_floats + (t.proto->state_floats ? t.proto->state_floats(&shape) : 0);
    return TERSE_OK;
}

terse_status_t lgreco_apply(terse_comm_t *c, layer_t *l, double value)
{
    size_t i = candidate_index(l->lg, value);
    if (i == l->lg->n_cand)
        return terse_error(TERSE_ERR_MISMATCH, "layer '%s': %g is not one of its L-GreCo candidates", l->name, value);
    apply_choice(c, l, i);
    return TERSE_OK;
}

/* Rank 0's decision: choice[i] for the i-th adapted layer (its current choice when it had no
 * observations). Returns 1 if it fell back to the uniform plan, and why in `why`. */
static int decide(terse_comm_t *c, size_t *choice, char *why, size_t why_len)
{
    lgreco_comm_t *g = &c->lg;
    size_t n = 0, width = 1;
    for (size_t i = 0; i < c->n_layers; i++) {
        const lgreco_layer_t *lg = c->layers[i].lg;
        if (!lg) continue;
        choice[n++] = lg->choice;
        if (lg->acc_calls && lg->n_cand > width) width = lg->n_cand;
    }
    size_t m = 0; /* layers in the problem */
    for (size_t i = 0; i < c->n_layers; i++) m += c->layers[i].lg && c->layers[i].lg->acc_calls;
    if (m == 0) return 0;
    double *sizes = malloc(m * width * sizeof *sizes), *errors = malloc(m * width * sizeof *errors);
    size_t *sol = malloc(m * sizeof *sol);
    int fallback = 1;
    if (!sizes || !errors || !sol) {
        snprintf(why, why_len, "out of memory for a %zu x %zu problem", m, width);
        goto done;
    }
    g->solve_us = 0.0;
    const double t0 = engine_now_us();
    double budget = 0.0;
    size_t row = 0;
    for (size_t i = 0; i < c->n_layers; i++) {
        layer_t *l = &c->layers[i];
        lgreco_layer_t *lg = l->lg;
        if (!lg || !lg->acc_calls) continue;
        /* on the window's mean: the sum, its errors scaled */
        double *s = sizes + row * width, *e = errors + row * width;
        lgreco_measure(lg, l->codec, l->cfg.compressor.p, l->rows, l->cols, lg->acc, 1.0 / (double)lg->acc_calls,
                       g->work, s, e);
        /* short rows repeat their last candidate: the solver's ties keep the lower index */
        for (size_t k = lg->n_cand; k < width; k++) s[k] = s[lg->n_cand - 1], e[k] = e[lg->n_cand - 1];
        budget += e[lg->uniform];
        row++;
    }
    budget *= g->alpha;
    const double t1 = engine_now_us();
    g->measure_us = t1 - t0;
    if (!(budget > 0.0) || !isfinite(budget)) {
        snprintf(why, why_len, "the uniform plan's error is %g (every layer exact, or not finite)", budget);
        goto done;
    }
    if (terse_lgreco_solve(m, width, sizes, errors, budget, g->buckets, sol) != TERSE_OK) {
        snprintf(why, why_len, "%s", terse_last_error());
        goto done;
    }
    g->solve_us = engine_now_us() - t1;
    fallback = 0;
    row = 0;
    for (size_t i = 0, a = 0; i < c->n_layers; i++) {
        const lgreco_layer_t *lg = c->layers[i].lg;
        if (!lg) continue;
        if (lg->acc_calls) {
            size_t k = sol[row++];
            choice[a] = k < lg->n_cand ? k : lg->n_cand - 1;
        }
        a++;
    }
done:
    if (fallback)
        for (size_t i = 0, a = 0; i < c->n_layers; i++)
            if (c->layers[i].lg) choice[a++] = c->layers[i].lg->uniform;
    free(sizes);
    free(errors);
    free(sol);
    return fallback;
}

static void describe_record(const uint64_t *h, char *out, size_t len)
{
    if (h[0] == PLAN_MAGIC)
        snprintf(out, len, "is deciding at step %llu with plan %llu and %llu layers",
                 (unsigned long long)h[1], (unsigned long long)h[2], (unsigned long long)h[3]);
    else
        snprintf(out, len, "is in a plain allreduce (not at a decision step)");
}

/* Checks that every rank is at the same decision: one allgather of a header-sized record. */
static terse_status_t agree_on_decision(terse_comm_t *c, size_t n_adapted)
{
    uint64_t rec[HDR_WORDS] = {PLAN_MAGIC, c->step, c->lg.version, c->n_layers, n_adapted, 0, 0};
    TERSE_CHECK(c->tp.ops->allgather(&c->tp, rec, sizeof rec, c->headers));
    int bad = 0;
    for (int r = 0; r < c->tp.size; r++) bad |= memcmp(c->headers + (size_t)r * HDR_WORDS, rec, sizeof rec) != 0;
    if (!bad) return TERSE_OK;
    /* every rank sees the same table: describe rank 0 and the first rank unlike it */
    const uint64_t *h0 = c->headers;
    int q = 1;
    while (q < c->tp.size && memcmp(c->headers + (size_t)q * HDR_WORDS, h0, sizeof rec) == 0) q++;
    char a[128], b[128];
    describe_record(h0, a, sizeof a);
    describe_record(c->headers + (size_t)(q < c->tp.size ? q : 0) * HDR_WORDS, b, sizeof b);
    return terse_error(TERSE_ERR_MISMATCH,
                       "L-GreCo decision: rank 0 %s, rank %d %s; every rank must call "
                       "terse_step_end and terse_layer_add alike", a, q, b);
}

terse_status_t lgreco_maybe_decide(terse_comm_t *c)
{
    lgreco_comm_t *g = &c->lg;
    if (!g->on || c->step < g->next_step) return TERSE_OK;
    size_t n = 0;
    for (size_t i = 0; i < c->n_layers; i++) n += c->layers[i].lg != NULL;
    TERSE_CHECK(agree_on_decision(c, n));
    /* timed from here: the agreement also waits for the slowest rank to reach this step,
     * which is the training loop's imbalance, not the planner's cost */
    const double t0 = engine_now_us();

    /* message: [fallback, choice of adapted layer 0, 1, ...] as doubles, in buffers sized
     * at registration, so that every rank can take part in the broadcast */
    double *msg = g->msg;
    size_t *choice = g->choice;
    char why[512] = "";
    if (c->tp.rank == 0) {
        msg[0] = decide(c, choice, why, sizeof why);
        for (size_t a = 0; a < n; a++) msg[a + 1] = (double)choice[a];
    }
    terse_status_t s = c->tp.ops->bcast(&c->tp, msg, (n + 1) * sizeof *msg, 0);
    if (s == TERSE_OK) {
        for (size_t i = 0, a = 0; i < c->n_layers; i++) {
            layer_t *l = &c->layers[i];
            if (!l->lg) continue;
            size_t k = (size_t)msg[++a];
            apply_choice(c, l, k < l->lg->n_cand ? k : l->lg->uniform);
            if (l->lg->acc) memset(l->lg->acc, 0, l->count * sizeof(float));
            l->lg->acc_calls = 0;
        }
        g->version++;
        g->fallback = msg[0] != 0.0;
        g->fallbacks += (uint64_t)g->fallback;
        g->next_step = next_decision(g, c->step);
        g->last_us = engine_now_us() - t0;
        if (g->fallback && c->tp.rank == 0)
            log_print(LOG_WARN, 0, "L-GreCo decision at step %llu kept the uniform plan: %s",
                      (unsigned long long)c->step, why);
        else if (c->tp.rank == 0)
            log_print(LOG_INFO, 0, "L-GreCo plan %llu at step %llu: measured in %.0f us, solved in %.0f us",
                      (unsigned long long)g->version, (unsigned long long)c->step, g->measure_us, g->solve_us);
    }
    return s;
}
