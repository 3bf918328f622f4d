/* Layer registration: the layer's plan (codec, protocol, feedback) and all its buffers,
 * allocated once here so that an allreduce never allocates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "internal.h"
#include "node_reduce.h"

/* FNV-1a over the bytes that define how a layer is reduced; ranks compare it per call. */
static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Parameters in `local` (bit i: parameter i) are the rank's own, like EF21-W's weight: only
 * whether they are set is hashed, so ranks may give different values. */
static uint64_t method_hash(uint64_t h, const method_spec_t *m, unsigned local)
{
    h = fnv(h, m->def->name, strlen(m->def->name));
    for (size_t i = 0; i < m->def->n_params; i++) {
        /* NAN has many encodings; hash "unset" as one word */
        double v = m->p[i] == m->p[i] ? m->p[i] : -1.0e300;
        if (i < 32 && (local >> i & 1u) && m->p[i] == m->p[i]) v = 1.0; /* "set" */
        h = fnv(h, &v, sizeof v);
    }
    return h;
}

static void *alloc_floats(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* Protocol state, read and written on every call: 64-byte aligned (streaming stores), and
 * zeroed by writing, so that its pages are mapped now and not during the first calls (a
 * swaps_state protocol writes each of its two buffers first in a different call). */
static float *alloc_state(size_t n)
{
    void *p = NULL;
    const size_t bytes = (n ? n : 1) * sizeof(float);
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

const double layer_no_params[TERSE_MAX_PARAMS];

uint64_t layer_fingerprint(const layer_t *l)
{
    uint64_t h = 1469598103934665603ull;
    h = fnv(h, l->codec->name, strlen(l->codec->name));
    h = fnv(h, l->fb->name, strlen(l->fb->name));
    if (!l->dense)
        h = method_hash(method_hash(h, &l->cfg.compressor, 0), &l->cfg.feedback, l->fb->rank_local_params);
    h = fnv(h, &l->cfg.reduce, sizeof l->cfg.reduce);
    if (l->cfg.auto_trials && !l->dense) h = fnv(h, &l->cfg.auto_trials, sizeof l->cfg.auto_trials);
    /* under hier the leaders' exchange has another rank count and the feedback state other
     * semantics: a state file from the other mode must not load */
    return l->hier_nodes ? fnv(h, &l->hier_nodes, sizeof l->hier_nodes) : h;
}

const double *layer_params(const layer_t *l) { return l->dense ? layer_no_params : l->cfg.compressor.p; }

static terse_status_t layer_add(terse_comm_t *c, const char *name, size_t rows, size_t cols,
                                const char *config, int *id)
{
    if (!id) return terse_error(TERSE_ERR_ARG, "terse_layer_add: id is NULL");
    if (cols != 0 && rows > TERSE_MAX_LAYER_COUNT / cols)
        return terse_error(TERSE_ERR_ARG,
                           "terse_layer_add: %zu x %zu elements exceed the per-layer maximum of %zu "
                           "(TERSE_MAX_LAYER_COUNT); split the tensor into several layers",
                           rows, cols, TERSE_MAX_LAYER_COUNT);
    if (c->n_layers >= (size_t)INT32_MAX)
        return terse_error(TERSE_ERR_ARG, "terse_layer_add: too many layers");
    size_t count = rows * cols;

    layer_t l;
    memset(&l, 0, sizeof l);
    l.cfg = c->cfg;
    if (config_parse(&l.cfg, config, 1) != TERSE_OK)
        return terse_error(TERSE_ERR_ARG, "terse_layer_add: layer configuration: %s", terse_last_error());
    TERSE_CHECK(config_check_supported(&l.cfg));
    snprintf(l.name, sizeof l.name, "%s", name ? name : "");
    l.rows = rows;
    l.cols = cols;
    l.count = count;

    const codec_ops_t *codec = l.cfg.compressor.def->ops;
    const double *cprm = l.cfg.compressor.p;
    if (codec->owns_memory && strcmp(l.cfg.feedback.def->name, "none") != 0)
        return terse_error(TERSE_ERR_ARG,
                           "terse_layer_add: layer '%s': compressor %s keeps its own error memory "
                           "(momentum correction); use feedback=none with it, not feedback=%s",
                           l.name, codec->name, l.cfg.feedback.def->name);
    /* small layers are not worth compressing, and none needs no feedback: exact mean. A codec
     * that keeps its own memory (dgc) handles every layer, so the momentum stays its job. */
    l.dense = codec == &codec_none_ops ||
              (!codec->owns_memory && (count < l.cfg.min_size ||
                                       (codec->goes_dense && codec->goes_dense(cprm, rows, cols))));
    l.codec = l.dense ? &codec_none_ops : codec;
    l.fb = l.dense ? &feedback_none_ops : l.cfg.feedback.def->ops;
    if (!l.dense && codec->check) TERSE_CHECK(codec->check(cprm, count));
    /* the workers of the compressed exchange: every rank, or one leader per node */
    const int n = comm_workers(c);
    if (!l.dense && l.fb->check) TERSE_CHECK(l.fb->check(l.cfg.feedback.p, n));
    l.hier_nodes = c->hier.on ? c->hier.lay.n_nodes : 0;
    l.proto = protocol_for(l.codec);

    if (c->n_layers == c->cap_layers) {
        size_t cap = c->cap_layers ? 2 * c->cap_layers : 16;
        layer_t *nl = realloc(c->layers, cap * sizeof *nl);
        if (!nl) return terse_error(TERSE_ERR_NOMEM, "terse_layer_add: out of memory for the layer table");
        c->layers = nl;
        c->cap_layers = cap;
    }

    /* an adapted layer's buffers fit its largest candidate, so that a new plan never
     * allocates (src/lgreco.c) */
    lgreco_layer_t lg;
    const int wants = !l.dense && strcmp(l.cfg.adapt.def->name, "lgreco") == 0;
    const lgreco_family_t *family = lgreco_family_for(codec->name);
    if (wants && !family)
        return terse_error(TERSE_ERR_ARG,
                           "terse_layer_add: layer '%s': adapt=lgreco cannot adapt compressor %s; "
                           "it adapts %s", l.name, codec->name, lgreco_family_names());
    const int adapted = wants && lgreco_family_applies(family, cprm, rows, cols);
    if (adapted) lgreco_layer_init(&lg, &l.cfg.compressor, l.cfg.adapt.p, rows, cols);
    l.fingerprint = layer_fingerprint(&l);
    const double *prm = layer_params(&l);
    size_t ws = 0, scratch = 0;
    for (size_t k = 0; k < (adapted ? lg.n_cand : 1); k++) {
        double cand[TERSE_MAX_PARAMS];
        if (adapted) lgreco_candidate_params(&lg, prm, k, cand);
        const proto_shape_t shape = {l.codec, adapted ? cand : prm, rows, cols, count, n};
        size_t w = l.proto->workspace_bytes(&shape), sc = l.codec->scratch_bytes(shape.prm, count);
        size_t pf = l.proto->state_floats ? l.proto->state_floats(&shape) : 0;
        ws = w > ws ? w : ws;
        scratch = sc > scratch ? sc : scratch;
        l.proto_cap = pf > l.proto_cap ? pf : l.proto_cap;
        if (!adapted || k == lg.uniform) l.proto_floats = pf;
    }
    l.fb_floats = l.fb->state_per_elem * count;
    if (adapted) {
        l.lg = malloc(sizeof lg);
        if (l.lg) *l.lg = lg;
        if (l.lg && c->tp.rank == 0) l.lg->acc = alloc_floats(count);
        double *msg = realloc(c->lg.msg, (c->lg.n_adapted + 2) * sizeof *msg);
        if (msg) c->lg.msg = msg;
        size_t *ch = realloc(c->lg.choice, (c->lg.n_adapted + 2) * sizeof *ch);
        if (ch) c->lg.choice = ch;
        int work_ok = 1;
        if (c->tp.rank == 0) {
            /* the decision's scratch, touched now so that a decision neither allocates nor
             * takes page faults */
            const size_t wb = lgreco_work_bytes(&lg, codec, prm, rows, cols);
            if (wb > c->lg.work_bytes) {
                void *w = malloc(wb);
                if (w) {
                    memset(w, 0, wb);
                    free(c->lg.work);
                    c->lg.work = w;
                    c->lg.work_bytes = wb;
                }
                work_ok = w != NULL;
            }
        }
        if (!l.lg || (c->tp.rank == 0 && !l.lg->acc) || !msg || !ch || !work_ok) {
            layer_free(&l);
            return terse_error(TERSE_ERR_NOMEM, "terse_layer_add: out of memory for layer '%s''s plan", l.name);
        }
    }
    const int fb_none = l.fb == &feedback_none_ops;
    l.state = alloc_floats(l.fb_floats);
    l.fb_zero = 1; /* calloc's zeros */
    l.pstate = alloc_state(l.proto_cap);
    l.pstate_next = l.proto->swaps_state && l.proto_cap ? alloc_state(l.proto_cap) : NULL;
    l.p = fb_none ? NULL : alloc_floats(count);
    l.delta = l.fb->needs_delta ? alloc_floats(count) : NULL;
    l.agg = alloc_floats(count);
    l.ws = malloc(ws ? ws : 1);
    l.scratch = malloc(scratch + 1);
    if (l.fb->may_send_uncompressed || auto_on(&l)) {
        const proto_shape_t dshape = {&codec_none_ops, layer_no_params, rows, cols, count, n};
        l.ws_dense = malloc(protocol_dense.workspace_bytes(&dshape));
    }
    if (c->cfg.device == CONFIG_DEVICE_CUDA) l.host = device_host_alloc(count * sizeof(float));
    const int leads = c->hier.on && c->hier.lay.local_rank == 0;
    if (c->hier.on) {
        l.node_sum = leads ? alloc_floats(count) : NULL;
        l.ws_node = malloc(node_reduce_workspace(c->hier.lay.local_size));
    }
    if (!l.state || !l.pstate || (l.proto->swaps_state && l.proto_cap && !l.pstate_next) ||
        (!fb_none && !l.p) || (l.fb->needs_delta && !l.delta) || !l.agg || !l.ws || !l.scratch ||
        ((l.fb->may_send_uncompressed || auto_on(&l)) && !l.ws_dense) ||
        (c->cfg.device == CONFIG_DEVICE_CUDA && !l.host) || (c->hier.on && (!l.ws_node || (leads && !l.node_sum)))) {
        layer_free(&l);
        return terse_error(TERSE_ERR_NOMEM, "terse_layer_add: out of memory for a layer of %zu elements",
                           count);
    }
    if (adapted) {
        lgreco_comm_configure(&c->lg, strcmp(c->cfg.adapt.def->name, "lgreco") == 0 ? c->cfg.adapt.p : l.cfg.adapt.p);
        c->lg.n_adapted++;
    }
    c->layers[c->n_layers] = l;
    *id = (int)c->n_layers++;
    return TERSE_OK;
}

terse_status_t terse_layer_add(terse_comm_t *c, const char *name, size_t rows, size_t cols,
                               const char *config, int *id)
{
    GUARDED_CALL(c, "terse_layer_add", layer_add(c, name, rows, cols, config, id));
}
