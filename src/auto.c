/* compressor=auto: per layer, the faster of the dense path and the configured compressed one.
 *
 * The cost model is the layer itself. Its first 2T calls (T = trials, default 4) are T
 * dense calls and then T compressed ones, each timed whole on every rank (from the
 * non-finite scan to the result in the caller's buffer: codec, feedback, exchange and
 * decode). Dense first, because the error is still zero then, so ef is bypassed
 * (engine_begin) as on every dense call of a layer that chose dense, after the one that
 * flushes what the compressed trials left; a dense call after a compressed one would time
 * the flush instead. T is 4 because a layer's first calls are cold (page faults, MPI's first
 * use of the buffers): on this project's test machine the first two dense calls of 1 MiB
 * took 15 and 10 ms against 0.7 ms warm, so the best of two can still be a cold one.
 * After the last trial the ranks allgather their fastest dense and fastest
 * compressed time; the compressed path is kept if the slowest rank's fastest compressed call
 * beat the slowest rank's fastest dense one, otherwise the layer stays dense for good. Every
 * rank computes the same choice from the same numbers, so the ranks never disagree about a
 * call's path (the header checks it anyway).
 *
 * A dense call is the engine's uncompressed path, the one EF21 takes on its first call: the
 * feedback method sees the identity compressor (the exact mean of its message, an error of
 * zero), so error feedback stays consistent across dense and compressed calls; codecs with
 * their own memory (dgc's momentum, powersgd's Q, onebit's errors) leave it untouched on
 * dense calls.
 *
 * Why measure instead of predicting from a fitted alpha-beta model of the link and the
 * codec's throughput: a layer is one size, so timing it answers the only question asked,
 * including what a model leaves out (the header exchange, the feedback passes, threads
 * sharing cores, a protocol's extra rounds). It costs T calls of the slower path once. */
#include "internal.h"
#include "log.h"

int auto_on(const layer_t *l)
{
    return l->cfg.auto_trials > 0 && !l->dense;
}

static int trials_left(const layer_t *l)
{
    return l->autorec.done < 2 * (uint64_t)l->cfg.auto_trials;
}

/* Whether the next trial is a dense one: the first T are. */
static int trial_dense(const layer_t *l)
{
    return l->autorec.done < (uint64_t)l->cfg.auto_trials;
}

int auto_call_dense(const layer_t *l)
{
    if (!auto_on(l)) return 0;
    if (l->autorec.choice != AUTO_UNDECIDED) return l->autorec.choice == AUTO_DENSE;
    return trial_dense(l);
}

void auto_record(layer_t *l, double us)
{
    if (!auto_on(l) || l->autorec.choice != AUTO_UNDECIDED || !trials_left(l)) return;
    double *best = &l->autorec.best[trial_dense(l) ? 0 : 1];
    if (*best == 0 || us < *best) *best = us > 0 ? us : 1e-3;
    l->autorec.done++;
}

terse_status_t auto_maybe_decide(terse_comm_t *c, layer_t *l)
{
    if (!auto_on(l) || l->autorec.choice != AUTO_UNDECIDED || trials_left(l)) return TERSE_OK;
    /* c->headers holds size * HDR_WORDS words, more than two doubles a rank */
    double *all = (double *)c->headers;
    TERSE_CHECK(c->tp.ops->allgather(&c->tp, l->autorec.best, sizeof l->autorec.best, all));
    double dense = 0, compressed = 0;
    for (int r = 0; r < c->tp.size; r++) {
        dense = all[2 * r] > dense ? all[2 * r] : dense;
        compressed = all[2 * r + 1] > compressed ? all[2 * r + 1] : compressed;
    }
    l->autorec.choice = compressed < dense ? AUTO_COMPRESSED : AUTO_DENSE;
    if (c->tp.rank == 0)
        log_print(LOG_INFO, 0, "layer '%s': compressor=auto chose %s (fastest trial on the slowest rank: "
                  "dense %.1f us, compressed %.1f us)", l->name,
                  l->autorec.choice == AUTO_DENSE ? "dense" : "compressed", dense, compressed);
    return TERSE_OK;
}
