/* Layer registration: the layer's plan (codec, protocol, feedback) and all its buffers,
 * allocated once here so that an allreduce never allocates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

const double layer_no_params[TERSE_MAX_PARAMS];

const double *layer_params(const layer_t *l) { return l->dense ? layer_no_params : l->cfg.compressor.p; }

terse_status_t terse_layer_add(terse_comm_t *c, const char *name, size_t rows, size_t cols,
                               const char *config, int *id)
{
    terse_error_clear();
    if (!c) return terse_error(TERSE_ERR_ARG, "terse_layer_add: communicator is NULL");
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
    if (!l.dense && l.fb->check) TERSE_CHECK(l.fb->check(l.cfg.feedback.p, c->tp.size));
    l.proto = protocol_for(l.codec);

    uint64_t h = 1469598103934665603ull;
    h = fnv(h, l.codec->name, strlen(l.codec->name));
    h = fnv(h, l.fb->name, strlen(l.fb->name));
    if (!l.dense)
        h = method_hash(method_hash(h, &l.cfg.compressor, 0), &l.cfg.feedback, l.fb->rank_local_params);
    h = fnv(h, &l.cfg.reduce, sizeof l.cfg.reduce);
    l.fingerprint = h;

    if (c->n_layers == c->cap_layers) {
        size_t cap = c->cap_layers ? 2 * c->cap_layers : 16;
        layer_t *nl = realloc(c->layers, cap * sizeof *nl);
        if (!nl) return terse_error(TERSE_ERR_NOMEM, "terse_layer_add: out of memory for the layer table");
        c->layers = nl;
        c->cap_layers = cap;
    }

    const double *prm = layer_params(&l);
    int n = c->tp.size;
    const proto_shape_t shape = {l.codec, prm, rows, cols, count, n};
    size_t ws = l.proto->workspace_bytes(&shape);
    l.fb_floats = l.fb->state_per_elem * count;
    l.proto_floats = l.proto->state_floats ? l.proto->state_floats(&shape) : 0;
    l.state = alloc_floats(l.fb_floats + l.proto_floats);
    l.p = alloc_floats(count);
    l.delta = l.fb->needs_delta ? alloc_floats(count) : NULL;
    l.agg = alloc_floats(count);
    l.ws = malloc(ws ? ws : 1);
    l.scratch = malloc(l.codec->scratch_bytes(prm, count) + 1);
    if (l.fb->may_send_uncompressed) {
        const proto_shape_t dshape = {&codec_none_ops, layer_no_params, rows, cols, count, n};
        l.ws_dense = malloc(protocol_dense.workspace_bytes(&dshape));
    }
    if (!l.state || !l.p || (l.fb->needs_delta && !l.delta) || !l.agg || !l.ws || !l.scratch ||
        (l.fb->may_send_uncompressed && !l.ws_dense)) {
        layer_free(&l);
        return terse_error(TERSE_ERR_NOMEM, "terse_layer_add: out of memory for a layer of %zu elements",
                           count);
    }
    c->layers[c->n_layers] = l;
    *id = (int)c->n_layers++;
    return TERSE_OK;
}
