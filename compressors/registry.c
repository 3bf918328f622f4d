/* Every codec the configuration grammar names (DESIGN.md §6), with its parameters. A codec
 * whose ops are NULL parses but is not built yet: asking for it is TERSE_ERR_UNSUPPORTED.
 * Adding a codec: one file in compressors/, one row here, its tests. */
#include <string.h>

#include "codec.h"
#include "dgc.h"
#include "onebit.h"
#include "powersgd.h"
#include "qsgd.h"
#include "randk.h"
#include "topk.h"

extern const codec_ops_t codec_none_ops, codec_fp16_ops, codec_bf16_ops, codec_topk_ops,
    codec_randk_ops;

#define ROW0(name, ops) {name, NULL, 0, ops}

const method_def_t codec_registry[] = {
    ROW0("none", &codec_none_ops),
    ROW0("fp16", &codec_fp16_ops),
    ROW0("bf16", &codec_bf16_ops),
    {"topk", topk_params, TOPK_N_PARAMS, &codec_topk_ops},
    {"randk", randk_params, RANDK_N_PARAMS, &codec_randk_ops},
    {"onebit", onebit_params, ONEBIT_N_PARAMS, &codec_onebit_ops},
    {"qsgd", qsgd_params, QSGD_N_PARAMS, &codec_qsgd_ops},
    {"dgc", dgc_params, DGC_N_PARAMS, &codec_dgc_ops},
    {"powersgd", powersgd_params, POWERSGD_N_PARAMS, &codec_powersgd_ops},
    ROW0("auto", NULL),
};
const size_t codec_registry_len = sizeof codec_registry / sizeof codec_registry[0];

const method_def_t *codec_find(const char *name)
{
    for (size_t i = 0; i < codec_registry_len; i++)
        if (strcmp(codec_registry[i].name, name) == 0) return &codec_registry[i];
    return NULL;
}
