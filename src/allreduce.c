/* The engine's hot path: one layer's compressed allreduce.
 *
 *   check input -> feedback prepare (g -> p) -> codec encode         [compress]
 *   header allgather: all ranks agree on layer, size, plan, call?    [comm]
 *   protocol exchange                                                [comm]
 *   protocol decode -> feedback update (state, estimate into buf)    [decompress]
 *
 * Nothing that a rank keeps (feedback state, call counters) changes before the header
 * exchange has shown that every rank can complete the call, so a mismatch or a non-finite
 * gradient leaves every rank's state exactly as it was. The hierarchical protocol
 * (src/allreduce_hier.c) runs the same steps among node leaders. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "device.h"
#include "internal.h"

#define HEADER_MAGIC 0x7465727365310002ull /* "terse1" + format 2 */

double engine_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

int engine_has_nonfinite(const float *v, size_t n)
{
    return protocol_has_nonfinite(v, n);
}

static const char *header_field_name(int w)
{
    switch (w) {
    case HDR_MAGIC: return "protocol version";
    case HDR_LAYER: return "layer id";
    case HDR_COUNT: return "element count";
    case HDR_FINGERPRINT: return "codec/feedback configuration (or ef's learning rate)";
    case HDR_CALL: return "call number of the layer";
    case HDR_PLAN: return "L-GreCo plan version";
    case HDR_FLAGS: return "uncompressed-call flag and nonfinite= setting (flag bits)";
    }
    return "header";
}

/* Compares every rank's header with this rank's; all ranks see the same table, so all
 * reach the same verdict. */
static terse_status_t headers_agree(const uint64_t *headers, int n, const uint64_t *mine)
{
    for (int r = 0; r < n; r++) {
        const uint64_t *h = headers + (size_t)r * HDR_WORDS;
        for (int w = HDR_MAGIC; w < HDR_WIRE; w++) {
            uint64_t a = h[w], b = mine[w];
            if (w == HDR_FLAGS) {
                a &= HDR_FLAGS_AGREED;
                b &= HDR_FLAGS_AGREED;
            }
            if (a == b) continue;
            /* report against rank 0's view so every rank prints the same sentence */
            const uint64_t *h0 = headers;
            for (int q = 1; q < n; q++) {
                const uint64_t *hq = headers + (size_t)q * HDR_WORDS;
                uint64_t x = h0[w], y = hq[w];
                if (w == HDR_FLAGS) { x &= HDR_FLAGS_AGREED; y &= HDR_FLAGS_AGREED; }
                if (x != y)
                    return terse_error(TERSE_ERR_MISMATCH,
                                       "ranks disagree on the %s: rank 0 has %llu (layer %lld, %llu elements), "
                                       "rank %d has %llu (layer %lld, %llu elements); every rank must "
                                       "call terse_allreduce on the same layers in the same order",
                                       header_field_name(w), (unsigned long long)x,
                                       (long long)(int64_t)h0[HDR_LAYER], (unsigned long long)h0[HDR_COUNT],
                                       q, (unsigned long long)y, (long long)(int64_t)hq[HDR_LAYER],
                                       (unsigned long long)hq[HDR_COUNT]);
            }
        }
    }
    return TERSE_OK;
}

static terse_status_t check_layer(terse_comm_t *c, int layer, const char *fn)
{
    if (!c) return terse_error(TERSE_ERR_ARG, "%s: communicator is NULL", fn);
    if (layer < 0 || (size_t)layer >= c->n_layers)
        return terse_error(TERSE_ERR_ARG, "%s: unknown layer id %d; %zu layers are registered (ids 0..%zu)",
                           fn, layer, c->n_layers, c->n_layers ? c->n_layers - 1 : 0);
    return TERSE_OK;
}

/* The parameter slot of ef's learning rate (src/feedback/registry.c). */
static double *ef_lr_slot(method_spec_t *m)
{
    return strcmp(m->def->name, "ef") == 0 && !isnan(m->p[0]) ? &m->p[0] : NULL;
}

/* What the header's fingerprint word carries: the layer's fingerprint, and the learning rate
 * of ef's inside form, which terse_set_learning_rate changes between calls and every rank
 * must have alike. (The stored fingerprint leaves it out: a state file holds e, not the
 * rate, and loads whatever rate is set.) */
static uint64_t call_fingerprint(layer_t *l)
{
    const double *lr = l->dense ? NULL : ef_lr_slot(&l->cfg.feedback);
    uint64_t bits = 0;
    if (lr) memcpy(&bits, lr, sizeof bits);
    return l->fingerprint ^ bits;
}

terse_status_t engine_agree(terse_comm_t *c, transport_t *tp, uint64_t *headers, int layer, float *buf,
                            uint64_t flags, uint64_t wire, int *skip)
{
    layer_t *l = &c->layers[layer];
    *skip = 0;
    uint64_t hdr[HDR_WORDS];
    hdr[HDR_MAGIC] = HEADER_MAGIC;
    hdr[HDR_LAYER] = (uint64_t)(int64_t)layer;
    hdr[HDR_COUNT] = l->count;
    hdr[HDR_FINGERPRINT] = call_fingerprint(l);
    hdr[HDR_CALL] = l->calls;
    hdr[HDR_PLAN] = c->lg.version;
    hdr[HDR_FLAGS] = flags | (uint64_t)l->cfg.nonfinite << HDR_NONFINITE_MODE_SHIFT;
    hdr[HDR_WIRE] = wire;
    TERSE_CHECK(tp->ops->allgather(tp, hdr, sizeof hdr, headers));
    TERSE_CHECK(headers_agree(headers, tp->size, hdr));
    for (int r = 0; r < tp->size; r++)
        if (headers[(size_t)r * HDR_WORDS + HDR_FLAGS] & HDR_FLAG_NONFINITE)
            return engine_nonfinite(c, layer, buf, r, skip);
    return TERSE_OK;
}

/* Whether the layer's compressed calls take the residual path: a plainly residual method
 * (ef: e = p - delta, out = agg) on a protocol that can leave p - delta in p and write out.
 * Not with L-GreCo, which observes p. engine_flat's non-finite check then looks at
 * p = g + e instead of g. */
static int layer_residual(const layer_t *l, unsigned shortcuts)
{
    const unsigned both = PROTO_RESIDUAL_IN_PLACE | PROTO_OUT_IN_PLACE;
    return !l->dense && !l->lg && l->fb->plain_residual && l->fb->plain_residual(l->cfg.feedback.p) &&
           l->fb_floats == l->count && (shortcuts & both) == both;
}

/* The PROTO_* shortcuts of the layer's own (compressed) protocol. */
static unsigned layer_shortcuts(const layer_t *l)
{
    return l->proto->shortcuts ? l->proto->shortcuts(l->codec, layer_params(l), l->rows, l->cols) : 0;
}

terse_status_t engine_nonfinite(terse_comm_t *c, int layer, float *buf, int rank, int *skip)
{
    layer_t *l = &c->layers[layer];
    if (l->cfg.nonfinite == CONFIG_NONFINITE_SKIP) {
        memset(buf, 0, l->count * sizeof *buf);
        l->skipped++;
        *skip = 1;
        return TERSE_OK;
    }
    return terse_error(TERSE_ERR_NONFINITE,
                       "layer %d ('%s'): rank %d's gradient holds a NaN or Inf%s; the call was "
                       "abandoned on every rank and the state is unchanged (nonfinite=skip "
                       "skips such steps instead)", layer, l->name, rank,
                       layer_residual(l, layer_shortcuts(l)) ? " (or, with feedback=ef on topk, its sum with the error does: an "
                                               "overflow, or a non-finite error loaded from a state file)" : "");
}

static void call_init(proto_call_t *call, terse_comm_t *c, int layer, transport_t *tp,
                      const float *p, int uncompressed)
{
    layer_t *l = &c->layers[layer];
    memset(call, 0, sizeof *call);
    call->tp = tp;
    call->codec = uncompressed ? &codec_none_ops : l->codec;
    call->prm = uncompressed ? layer_no_params : layer_params(l);
    call->count = l->count;
    call->rows = l->rows;
    call->cols = l->cols;
    call->layer = layer;
    call->calls = l->calls;
    call->step = c->step;
    call->state = uncompressed || !l->proto_floats ? NULL : l->pstate;
    call->state_next = call->state ? l->pstate_next : NULL;
    call->in = p;
    call->delta = l->dense ? NULL : l->delta;
    call->out = l->agg;
    call->mean = l->cfg.reduce == CONFIG_REDUCE_MEAN;
    call->ws = uncompressed ? l->ws_dense : l->ws;
    call->scratch = l->scratch;
    call->bad_rank = -1;
}

/* An uncompressed call may bypass the feedback method when the method is the identity on
 * a zero state (ef: p = g, e stays +0, out = agg) and the state is all +0: after the
 * previous uncompressed call through the method, at registration, or after loading such a
 * state. The call is then the plain dense mean of g, the bits and the state that prepare
 * and update would give, without their passes. Not with nonfinite=pass (a NaN would leave
 * e NaN on the full path) or L-GreCo (it observes p). */
static int fb_bypass(const layer_t *l)
{
    return l->fb_zero && l->fb->identity_at_zero && l->fb->identity_at_zero(l->cfg.feedback.p) &&
           l->cfg.nonfinite != CONFIG_NONFINITE_PASS && !l->lg;
}

void engine_begin(engine_side_t *s, terse_comm_t *c, int layer, transport_t *tp, const float *g,
                  float *out)
{
    layer_t *l = &c->layers[layer];
    const feedback_ctx_t fctx = {l->cfg.feedback.p, l->calls, tp->rank, tp->size, l->count};
    s->fctx = fctx;
    s->g = s->p = g;
    s->uncompressed = s->bypass = s->residual = 0;
    const int fb_none = l->fb == &feedback_none_ops;
    if (!l->dense) {
        const int dense_call = auto_call_dense(l);
        s->bypass = dense_call && fb_bypass(l);
        /* feedback none's prepare is a copy: the protocol reads g itself instead */
        if (s->bypass) {
            s->uncompressed = 1;
        } else {
            s->uncompressed = (!fb_none && par_fb_prepare(c->pool, l, &s->fctx, g, l->p)) || dense_call;
            if (!fb_none) s->p = l->p;
        }
    }
    call_init(&s->call, c, layer, tp, s->p, s->uncompressed);
    if (s->bypass) s->call.delta = NULL;
    s->proto = s->uncompressed ? &protocol_dense : l->proto;
    s->shortcuts = s->proto->shortcuts ? s->proto->shortcuts(s->call.codec, s->call.prm, l->rows, l->cols) : 0;
    /* without a feedback update the copy of the aggregate into out is all that follows
     * decode: a protocol that can write out itself does (not with L-GreCo, which observes
     * p, possibly out itself, after decode) */
    const int no_update = fb_none || s->bypass || l->dense;
    if (no_update && !l->lg && (s->shortcuts & PROTO_OUT_IN_PLACE)) s->call.out = out;
    /* a compressed call on the residual path: no update pass at all; finish makes p the
     * state by swapping the buffers */
    s->residual = !s->uncompressed && layer_residual(l, s->shortcuts);
    if (s->residual) {
        s->call.residual = l->p;
        s->call.delta = NULL;
        s->call.out = out;
    }
}

void engine_finish(engine_side_t *s, terse_comm_t *c, int layer, float *out)
{
    layer_t *l = &c->layers[layer];
    if (s->proto->swaps_state && s->call.state) {
        float *next = l->pstate_next;
        l->pstate_next = l->pstate;
        l->pstate = next;
    }
    /* before the update, which may overwrite p (feedback none: p is g, often out) */
    if (l->lg) lgreco_observe(&c->lg, l, c->step, s->p);
    /* an uncompressed call through the method leaves an identity_at_zero method's state
     * zero (p - delta, delta = p); a compressed one, in general, not */
    if (!l->dense && !s->bypass) l->fb_zero = s->uncompressed;
    if (s->residual) {
        float *e = l->state;
        l->state = l->p;
        l->p = e;
    }
    if (s->call.out == out) return;
    if (l->dense || s->bypass)
        memcpy(out, l->agg, l->count * sizeof *out);
    else
        par_fb_update(c->pool, l, &s->fctx, s->g, s->p, out);
}

terse_status_t engine_exchange_decode(const protocol_ops_t *proto, proto_call_t *call, double *t_exchanged)
{
    terse_status_t s = proto->exchange(call);
    *t_exchanged = engine_now_us();
    if (s == TERSE_OK) s = proto->decode(call);
    if (s == TERSE_ERR_MISMATCH && call->bad_rank >= 0)
        return terse_error(TERSE_ERR_MISMATCH,
                           "layer %d: the message from rank %d is malformed (size or indices out "
                           "of range); it was rejected and the state is unchanged", call->layer,
                           call->bad_rank);
    return s;
}

void engine_record(layer_t *l, size_t wire, uint64_t sent, uint64_t inter, const double t[4])
{
    auto_record(l, t[3] - t[0]);
    l->calls++;
    l->last.wire_bytes = wire;
    l->last.sent_bytes = (size_t)sent;
    l->last.sent_inter_bytes = (size_t)inter;
    l->total_sent += sent;
    l->last.compress_us = t[1] - t[0];
    l->last.comm_us = t[2] - t[1];
    l->last.decompress_us = t[3] - t[2];
}

terse_status_t engine_flat(terse_comm_t *c, int layer, float *buf, transport_t *tp, uint64_t *headers)
{
    layer_t *l = &c->layers[layer];
    const size_t n = l->count;
    const uint64_t sent0 = tp->sent_bytes, inter0 = tp->sent_inter_bytes;
    double t[4];
    t[0] = engine_now_us();

    engine_side_t side;
    engine_begin(&side, c, layer, tp, buf, buf);
    /* a protocol that reads all of its input anyway checks it there, in encode or at the
     * owners during the exchange (not in a fused bucket, whose lanes are not c->tp): when p
     * is g, or p = g + e (ef, residual path), which keeps every NaN and infinity of g (and
     * has one more only where e holds one or the sum overflows: a call best abandoned too) */
    const int check = l->cfg.nonfinite != CONFIG_NONFINITE_PASS && n > 0;
    const int scans = (side.shortcuts & PROTO_SCANS_INPUT) && (side.call.in == buf || side.residual);
    side.call.scan = check && (side.shortcuts & PROTO_SCANS_AT_OWNER) && side.call.in == buf && tp == &c->tp;
    int nonfinite = check && !scans && !side.call.scan && par_has_nonfinite(c->pool, buf, n);
    if (!nonfinite) TERSE_CHECK(side.proto->encode(&side.call));
    if (check && scans) nonfinite = side.call.nonfinite;
    t[1] = engine_now_us();

    int skip;
    uint64_t flags = (nonfinite ? HDR_FLAG_NONFINITE : 0) | (side.uncompressed ? HDR_FLAG_UNCOMPRESSED : 0);
    TERSE_CHECK(engine_agree(c, tp, headers, layer, buf, flags, side.call.wire_bytes, &skip));
    if (skip) return TERSE_OK;
    /* the peers' announced sizes, gathered into one column for the protocol */
    uint64_t *peer = headers; /* reuse: header rows are no longer needed */
    for (int r = 0; r < tp->size; r++) peer[r] = headers[(size_t)r * HDR_WORDS + HDR_WIRE];
    side.call.peer_bytes = peer;
    const terse_status_t st = engine_exchange_decode(side.proto, &side.call, &t[2]);
    if (st == TERSE_ERR_NONFINITE && side.call.scan) return engine_nonfinite(c, layer, buf, side.call.bad_rank, &skip);
    TERSE_CHECK(st);
    engine_finish(&side, c, layer, buf);
    t[3] = engine_now_us();
    engine_record(l, side.call.wire_bytes, tp->sent_bytes - sent0, tp->sent_inter_bytes - inter0, t);
    return TERSE_OK;
}

/* One call on a host buffer, its arguments checked. */
static terse_status_t allreduce_host(terse_comm_t *c, int layer, float *buf)
{
    TERSE_CHECK(lgreco_maybe_decide(c));
    TERSE_CHECK(c->hier.on ? hier_allreduce(c, layer, buf) : engine_flat(c, layer, buf, &c->tp, c->headers));
    return auto_maybe_decide(c, &c->layers[layer]);
}

/* device=cuda: TERSE_ERR_ARG unless each of the n buffers of a call is device memory (an
 * empty layer's may be anything). */
static terse_status_t check_device_bufs(terse_comm_t *c, int n, const int *layers, float *const *bufs,
                                        const char *fn)
{
    for (int i = 0; c->cfg.device == CONFIG_DEVICE_CUDA && i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, n == 1 ? "buf" : "bufs[%d]", i);
        if (c->layers[layers[i]].count > 0) TERSE_CHECK(device_check_pointer(bufs[i], c->dev, fn, what));
    }
    return TERSE_OK;
}

/* One bucket of k layers (k = 1: a layer alone), its arguments checked. With device=cuda the
 * bucket runs on its layers' pinned host mirrors (distinct: a bucket holds each layer once),
 * copied in and back out with one wait each. Every mirror goes back even when a layer
 * failed: one that finished holds its result, as on the CPU, and a failed one still holds
 * its input. */
static terse_status_t run_bucket(terse_comm_t *c, int k, const int *layers, float *const *bufs)
{
    if (c->cfg.device != CONFIG_DEVICE_CUDA)
        return k == 1 ? allreduce_host(c, layers[0], bufs[0]) : fuse_run(c, k, layers, bufs);
    float *host[FUSE_MAX_LAYERS];
    size_t bytes[FUSE_MAX_LAYERS];
    for (int j = 0; j < k; j++) {
        host[j] = c->layers[layers[j]].host;
        bytes[j] = c->layers[layers[j]].count * sizeof(float);
    }
    TERSE_CHECK(device_copy(c->dev, c->dev_stream, 1, k, bufs, host, bytes));
    const terse_status_t s = k == 1 ? allreduce_host(c, layers[0], host[0]) : fuse_run(c, k, layers, host);
    TERSE_CHECK(device_copy(c->dev, c->dev_stream, 0, k, bufs, host, bytes));
    return s;
}

/* A call whose arguments terse_iallreduce checked already: what the progress thread runs. */
static terse_status_t allreduce_checked(terse_comm_t *c, int layer, float *buf)
{
    return run_bucket(c, 1, &layer, &buf);
}

static terse_status_t allreduce_one(terse_comm_t *c, int layer, float *buf)
{
    TERSE_CHECK(check_layer(c, layer, "terse_allreduce"));
    if (!buf && c->layers[layer].count > 0)
        return terse_error(TERSE_ERR_ARG, "terse_allreduce: buf is NULL for layer %d of %zu elements",
                           layer, c->layers[layer].count);
    TERSE_CHECK(check_device_bufs(c, 1, &layer, &buf, "terse_allreduce"));
    return allreduce_checked(c, layer, buf);
}

terse_status_t terse_allreduce(terse_comm_t *c, int layer, float *buf)
{
    GUARDED_MPI_CALL(c, "terse_allreduce", allreduce_one(c, layer, buf));
}

/* Validates at once, queues the call for the progress thread (src/progress.c). Not a
 * GUARDED_CALL: that would first wait for the queue to empty. */
terse_status_t terse_iallreduce(terse_comm_t *c, int layer, float *buf, terse_request_t **req)
{
    terse_error_clear();
    TERSE_CHECK(guard_enter_mpi(c, "terse_iallreduce"));
    terse_status_t s = check_layer(c, layer, "terse_iallreduce");
    if (s == TERSE_OK && !buf && c->layers[layer].count > 0)
        s = terse_error(TERSE_ERR_ARG, "terse_iallreduce: buf is NULL for layer %d of %zu elements", layer,
                        c->layers[layer].count);
    if (s == TERSE_OK && !req) s = terse_error(TERSE_ERR_ARG, "terse_iallreduce: req is NULL");
    if (s == TERSE_OK) s = check_device_bufs(c, 1, &layer, &buf, "terse_iallreduce");
    if (s == TERSE_OK) s = progress_start(c, layer, buf, allreduce_checked, req);
    guard_leave(c);
    return s;
}

terse_status_t terse_wait(terse_request_t *req)
{
    terse_error_clear();
    return progress_wait(req);
}

terse_status_t terse_test(terse_request_t *req, int *done)
{
    terse_error_clear();
    return progress_test(req, done);
}

/* Checks every argument first, so that a bad one starts nothing; then runs the layers in
 * buckets: runs of small layers fused into one exchange (src/fuse.c), the others alone. */
static terse_status_t allreduce_many(terse_comm_t *c, int n, const int *layers, float *const *bufs)
{
    if (n < 0) return terse_error(TERSE_ERR_ARG, "terse_allreduce_many: n = %d is negative", n);
    if (n > 0 && (!layers || !bufs))
        return terse_error(TERSE_ERR_ARG, "terse_allreduce_many: layers or bufs is NULL");
    for (int i = 0; i < n; i++) {
        TERSE_CHECK(check_layer(c, layers[i], "terse_allreduce_many"));
        if (!bufs[i] && c->layers[layers[i]].count > 0)
            return terse_error(TERSE_ERR_ARG, "terse_allreduce_many: bufs[%d] is NULL for layer %d of %zu elements",
                               i, layers[i], c->layers[layers[i]].count);
    }
    TERSE_CHECK(check_device_bufs(c, n, layers, bufs, "terse_allreduce_many"));
    for (int i = 0; i < n;) {
        const int k = fuse_bucket(c, n - i, layers + i);
        TERSE_CHECK(run_bucket(c, k, layers + i, bufs + i));
        i += k;
    }
    return TERSE_OK;
}

terse_status_t terse_allreduce_many(terse_comm_t *c, int n, const int *layers, float *const *bufs)
{
    GUARDED_MPI_CALL(c, "terse_allreduce_many", allreduce_many(c, n, layers, bufs));
}

static terse_status_t set_learning_rate(terse_comm_t *c, double lr)
{
    if (!(lr > 0) || !isfinite(lr) || lr > 1e30)
        return terse_error(TERSE_ERR_ARG, "terse_set_learning_rate: lr = %g; want a finite value > 0", lr);
    double *slot = ef_lr_slot(&c->cfg.feedback);
    if (slot) *slot = lr;
    for (size_t i = 0; i < c->n_layers; i++) {
        layer_t *l = &c->layers[i];
        if (l->dense) continue;
        if ((slot = ef_lr_slot(&l->cfg.feedback)) != NULL) *slot = lr;
    }
    return TERSE_OK;
}

terse_status_t terse_set_learning_rate(terse_comm_t *c, double lr)
{
    GUARDED_CALL(c, "terse_set_learning_rate", set_learning_rate(c, lr));
}

static terse_status_t step_end(terse_comm_t *c)
{
    c->step++;
    return TERSE_OK;
}

terse_status_t terse_step_end(terse_comm_t *c)
{
    GUARDED_CALL(c, "terse_step_end", step_end(c));
}

static terse_status_t layer_stats(terse_comm_t *c, int layer, terse_stats_t *out)
{
    TERSE_CHECK(check_layer(c, layer, "terse_layer_stats"));
    if (!out) return terse_error(TERSE_ERR_ARG, "terse_layer_stats: out is NULL");
    const layer_t *l = &c->layers[layer];
    terse_stats_t s = l->last;
    snprintf(s.name, sizeof s.name, "%s", l->name);
    if (l->dense)
        snprintf(s.codec, sizeof s.codec, "none");
    else
        config_format_compressor(&l->cfg, s.codec, sizeof s.codec);
    snprintf(s.feedback, sizeof s.feedback, "%s", l->fb->name);
    s.count = l->count;
    s.calls = l->calls;
    s.skipped = l->skipped;
    s.step = c->step;
    s.total_sent_bytes = l->total_sent;
    s.dense = l->dense || l->autorec.choice == AUTO_DENSE;
    s.hier_nodes = l->hier_nodes;
    s.adapted = l->lg != NULL;
    if (c->lg.on) {
        s.plan_version = c->lg.version;
        s.plan_fallbacks = c->lg.fallbacks;
        s.plan_us = c->lg.last_us;
        s.plan_measure_us = c->lg.measure_us;
        s.plan_solve_us = c->lg.solve_us;
    }
    *out = s;
    return TERSE_OK;
}

terse_status_t terse_layer_stats(terse_comm_t *c, int layer, terse_stats_t *out)
{
    GUARDED_CALL(c, "terse_layer_stats", layer_stats(c, layer, out));
}
