/* Offline L-GreCo planner: a multiple-choice knapsack over a discretised error budget.
 *
 * Each layer l picks one candidate c (a rank, a density, a bit width). The candidate costs
 * sizes[l][c] on the wire and ed[l][c] = ceil(errors[l][c] * buckets / budget) buckets of
 * error; the buckets of the chosen candidates may add up to at most `buckets`. Because the
 * errors are integers after discretisation, the problem is a DP over (layer, buckets left)
 * in O(n_layers * n_candidates * buckets) time and O(n_layers * buckets) memory.
 *
 * The DP runs from the last layer backwards,
 *     best[l][b] = min_c  sizes[l][c] + best[l+1][b - ed[l][c]],   best[n_layers][b] = 0,
 * so that best[l][b] is the least size of layers l..L-1 within b buckets. Running it
 * backwards is what makes the tie-break exact: the plan is then rebuilt forwards, and at
 * each layer the smallest candidate index that still reaches the optimum is taken, which is
 * by construction the lexicographically smallest optimal choice vector. (A forward DP
 * with back-tracking from the last layer would break ties at the *last* layer first.)
 *
 * Floating point. The total size of a choice is defined as the right fold
 *     sizes[0][c0] + (sizes[1][c1] + (... + sizes[L-1][cL-1]))
 * evaluated in double, which is exactly the order in which the DP adds. Rounded addition is
 * monotone (a <= a' implies x + a <= x + a'), so best[l][b] is the exact minimum of that
 * fold over every feasible suffix, and "equal minimum total" can be tested with ==, no
 * tolerance. One trap remains: a large (or infinite) prefix can absorb differences in the
 * suffix, so vectors whose suffixes are not optimal may still tie on the total. The rebuild
 * therefore does not ask "does c reach best[l][b]" but "does the best completion of the
 * chosen prefix plus c, folded in the same order, reach the optimum", which costs O(l) per
 * test and O(n_layers^2 * n_candidates) in all, small beside the DP. For sizes that are
 * integers with a total below 2^53 (element counts) the fold is the exact sum and both
 * questions coincide.
 *
 * Feasibility does not depend on sizes: a state (l, b) can be completed if and only if b is
 * at least the sum over layers l.. of their least ed. Tracking that separately, instead of
 * using +inf in best[] to mean "unreachable", keeps an infinite size a legal (if very
 * expensive) value rather than a second meaning of infinity. */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "error.h"
#include "terse.h"

/* Discretised error of one candidate, or buckets + 1 when it cannot fit the budget alone
 * (including an infinite error). The formula is evaluated as written, e * buckets / budget,
 * so that a caller can reproduce it bit for bit; only when e * buckets overflows while e is
 * still within the budget (budgets near DBL_MAX) is it evaluated as (e / budget) * buckets. */
static size_t lgreco_error_buckets(double e, double budget, size_t buckets)
{
    double q = e * (double)buckets / budget;
    if (isinf(q) && e <= budget) q = e / budget * (double)buckets;
    if (!(q <= (double)buckets)) return buckets + 1;
    return (size_t)ceil(q);
}

static terse_status_t lgreco_check_values(const char *name, const double *v, size_t n_layers,
                                          size_t n_candidates)
{
    for (size_t l = 0; l < n_layers; l++) {
        for (size_t c = 0; c < n_candidates; c++) {
            double x = v[l * n_candidates + c];
            if (isnan(x) || x < 0)
                return terse_error(TERSE_ERR_ARG,
                                   "terse_lgreco_solve: %s[%zu][%zu] is %g; every value must "
                                   "be a non-negative number (+inf allowed)",
                                   name, l, c, x);
        }
    }
    return TERSE_OK;
}

/* Fills best[l][b], the least size of layers l..L-1 within b buckets, from the last layer
 * backwards. best has n_layers + 1 rows of buckets + 1; the extra row of zeros stands for
 * "no layers left", so the recurrence needs no special case. */
static void lgreco_fill(size_t n_layers, size_t n_candidates, const double *sizes,
                        const size_t *ed, const size_t *need, size_t buckets, double *best)
{
    const size_t width = buckets + 1;
    for (size_t b = 0; b < width; b++) best[n_layers * width + b] = 0.0;
    for (size_t l = n_layers; l-- > 0;) {
        double *row = best + l * width;
        const double *next = row + width;
        /* Cells b < need[l] cannot be completed and are never read; filling them keeps the
         * table free of uninitialised memory. */
        for (size_t b = 0; b < width; b++) row[b] = INFINITY;
        /* The minimum is exact and sizes hold no NaN, so the order of candidates does not
         * matter and c can be the outer loop, leaving a contiguous inner loop over b. */
        for (size_t c = 0; c < n_candidates; c++) {
            const size_t e = ed[l * n_candidates + c];
            if (e + need[l + 1] > buckets) continue;
            const double sz = sizes[l * n_candidates + c];
            for (size_t b = e + need[l + 1]; b < width; b++) {
                const double v = sz + next[b - e];
                if (v < row[b]) row[b] = v;
            }
        }
    }
}

/* The total of a vector that starts with choice[0..l-1] and whose fold from layer l on is
 * tail, folded in the DP's order. */
static double lgreco_fold_prefix(size_t n_candidates, const double *sizes,
                                 const size_t *choice, size_t l, double tail)
{
    while (l-- > 0) tail = sizes[l * n_candidates + choice[l]] + tail;
    return tail;
}

/* Rebuilds the plan forwards from the full budget, taking at each layer the smallest index
 * that can still be completed to the optimal total: that is the lexicographically smallest
 * optimal choice. choice[0..l-1] holds the prefix fixed so far. */
static void lgreco_rebuild(size_t n_layers, size_t n_candidates, const double *sizes,
                           const size_t *ed, const size_t *need, size_t buckets,
                           const double *best, size_t *choice)
{
    const size_t width = buckets + 1;
    const double optimum = best[buckets];
    size_t b = buckets;
    for (size_t l = 0; l < n_layers; l++) {
        const double *next = best + (l + 1) * width;
        size_t pick = n_candidates;
        for (size_t c = 0; c < n_candidates; c++) {
            const size_t e = ed[l * n_candidates + c];
            if (e > b || b - e < need[l + 1]) continue;
            const double tail = sizes[l * n_candidates + c] + next[b - e];
            if (lgreco_fold_prefix(n_candidates, sizes, choice, l, tail) == optimum) {
                pick = c;
                break;
            }
        }
        assert(pick < n_candidates && "the optimum is reachable from the chosen prefix");
        b -= ed[l * n_candidates + pick];
        choice[l] = pick;
    }
}

terse_status_t terse_lgreco_solve(size_t n_layers, size_t n_candidates, const double *sizes,
                                  const double *errors, double budget, size_t buckets,
                                  size_t *choice)
{
    terse_error_clear();
    if (!sizes || !errors || !choice)
        return terse_error(TERSE_ERR_ARG,
                           "terse_lgreco_solve: %s is NULL; sizes and errors must point to "
                           "n_layers x n_candidates doubles, choice to n_layers size_t",
                           !sizes ? "sizes" : !errors ? "errors" : "choice");
    if (n_layers == 0 || n_candidates == 0)
        return terse_error(TERSE_ERR_ARG,
                           "terse_lgreco_solve: n_layers = %zu and n_candidates = %zu; both "
                           "must be at least 1",
                           n_layers, n_candidates);
    if (!(budget > 0) || isinf(budget))
        return terse_error(TERSE_ERR_ARG,
                           "terse_lgreco_solve: budget is %g; it must be positive and finite",
                           budget);
    if (buckets == 0)
        return terse_error(TERSE_ERR_ARG, "terse_lgreco_solve: buckets is 0; it must be at "
                                          "least 1 (10000 is the usual value)");
    if (n_layers > SIZE_MAX / sizeof(double) / n_candidates)
        return terse_error(TERSE_ERR_ARG,
                           "terse_lgreco_solve: n_layers x n_candidates = %zu x %zu doubles "
                           "cannot be addressed; no such arrays can exist",
                           n_layers, n_candidates);
    /* The DP table holds (n_layers + 1) x (buckets + 1) doubles; refuse sizes whose byte
     * count does not fit a size_t before any arithmetic on them can wrap. */
    if (buckets >= SIZE_MAX / sizeof(double) ||
        n_layers >= SIZE_MAX / sizeof(double) / (buckets + 1))
        return terse_error(TERSE_ERR_ARG,
                           "terse_lgreco_solve: a DP table of (n_layers + 1) x (buckets + 1) = "
                           "(%zu + 1) x (%zu + 1) doubles cannot be addressed; use fewer "
                           "buckets",
                           n_layers, buckets);
    TERSE_CHECK(lgreco_check_values("sizes", sizes, n_layers, n_candidates));
    TERSE_CHECK(lgreco_check_values("errors", errors, n_layers, n_candidates));

    const size_t n_cells = n_layers * n_candidates;
    const size_t width = buckets + 1;
    terse_status_t s = TERSE_OK;

    size_t *ed = malloc(n_cells * sizeof *ed);
    /* need[l] = least buckets that layers l..L-1 can get by with; need[n_layers] = 0. */
    size_t *need = malloc((n_layers + 1) * sizeof *need);
    double *best = malloc((n_layers + 1) * width * sizeof *best);
    if (!ed || !need || !best) {
        s = terse_error(TERSE_ERR_NOMEM,
                        "terse_lgreco_solve: out of memory for the (%zu + 1) x %zu DP table; "
                        "use fewer buckets",
                        n_layers, width);
        goto free_tables;
    }
    for (size_t i = 0; i < n_cells; i++)
        ed[i] = lgreco_error_buckets(errors[i], budget, buckets);

    /* Every term is at most buckets and (n_layers + 1) * (buckets + 1) fits, so need[]
     * cannot overflow. */
    need[n_layers] = 0;
    for (size_t l = n_layers; l-- > 0;) {
        size_t least = buckets + 1;
        for (size_t c = 0; c < n_candidates; c++)
            if (ed[l * n_candidates + c] < least) least = ed[l * n_candidates + c];
        if (least > buckets) {
            s = terse_error(TERSE_ERR_ARG,
                            "terse_lgreco_solve: infeasible: every candidate of layer %zu has "
                            "an error above the whole budget %g (or an infinite error)",
                            l, budget);
            goto free_tables;
        }
        need[l] = need[l + 1] + least;
    }
    if (need[0] > buckets) {
        s = terse_error(TERSE_ERR_ARG,
                        "terse_lgreco_solve: infeasible: even the least-error choice needs %zu "
                        "of the %zu buckets of budget %g; raise the budget",
                        need[0], buckets, budget);
        goto free_tables;
    }

    lgreco_fill(n_layers, n_candidates, sizes, ed, need, buckets, best);
    lgreco_rebuild(n_layers, n_candidates, sizes, ed, need, buckets, best, choice);

free_tables:
    free(best);
    free(need);
    free(ed);
    return s;
}
