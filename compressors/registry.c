/* Every codec the configuration grammar names (DESIGN.md §6), with its parameters. A codec
 * whose ops are NULL parses but is not built yet: asking for it is TERSE_ERR_UNSUPPORTED.
 * Adding a codec: one file in compressors/, one row here, its tests. */
#include <math.h>
#include <string.h>

#include "codec.h"
#include "randk.h"
#include "topk.h"

extern const codec_ops_t codec_none_ops, codec_fp16_ops, codec_bf16_ops, codec_topk_ops,
    codec_randk_ops;

static const char *const onebit_scales[] = {"l1", "l2", NULL};

static const param_def_t onebit_params[] = {
    {"scale", 0.0, 0.0, 1.0, 0, 1, onebit_scales},
};
static const param_def_t qsgd_params[] = {
    {"bits", 4.0, 1.0, 8.0, 0, 1, NULL},
    {"bucket", 512.0, 1.0, 16777216.0, 0, 1, NULL},
    {"stochastic", 1.0, 0.0, 1.0, 0, 1, NULL},
};
static const param_def_t dgc_params[] = {
    {"density", 0.001, 0.0, 1.0, 1, 0, NULL},
    {"sample", 0.01, 0.0, 1.0, 1, 0, NULL},
    {"momentum", 0.9, 0.0, 1.0, 0, 0, NULL},
    {"nesterov", 0.0, 0.0, 1.0, 0, 1, NULL},
    {"clip", NAN, 0.0, INFINITY, 1, 0, NULL},
    {"warmup", 0.0, 0.0, 1e12, 0, 1, NULL},
};
static const param_def_t powersgd_params[] = {
    {"rank", 4.0, 1.0, 1024.0, 0, 1, NULL},
    {"start", 0.0, 0.0, 1e15, 0, 1, NULL},
    {"min_rate", 2.0, 1.0, 1e9, 0, 0, NULL},
    {"warm_start", 1.0, 0.0, 1.0, 0, 1, NULL},
};

#define ROW(name, params, ops) {name, params, sizeof params / sizeof params[0], ops}
#define ROW0(name, ops) {name, NULL, 0, ops}


const method_def_t codec_registry[] = {
    ROW0("none", &codec_none_ops),
    ROW0("fp16", &codec_fp16_ops),
    ROW0("bf16", &codec_bf16_ops),
    {"topk", topk_params, TOPK_N_PARAMS, &codec_topk_ops},
    {"randk", randk_params, RANDK_N_PARAMS, &codec_randk_ops},
    ROW("onebit", onebit_params, NULL),
    ROW("qsgd", qsgd_params, NULL),
    ROW("dgc", dgc_params, NULL),
    ROW("powersgd", powersgd_params, NULL),
    ROW0("auto", NULL),
};
const size_t codec_registry_len = sizeof codec_registry / sizeof codec_registry[0];

const method_def_t *codec_find(const char *name)
{
    for (size_t i = 0; i < codec_registry_len; i++)
        if (strcmp(codec_registry[i].name, name) == 0) return &codec_registry[i];
    return NULL;
}
