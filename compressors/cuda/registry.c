/* The device codecs this build has (dcodec.h), by the name of their CPU codec. */
#include <string.h>

#include "dcodec.h"

extern const dcodec_ops_t dcodec_none_ops, dcodec_fp16_ops, dcodec_bf16_ops, dcodec_topk_ops,
    dcodec_randk_ops, dcodec_onebit_ops, dcodec_qsgd_ops, dcodec_dgc_ops, dcodec_powersgd_ops;

const dcodec_ops_t *const dcodec_all[] = {
    &dcodec_none_ops, &dcodec_fp16_ops,  &dcodec_bf16_ops, &dcodec_topk_ops,     &dcodec_randk_ops,
    &dcodec_onebit_ops, &dcodec_qsgd_ops, &dcodec_dgc_ops, &dcodec_powersgd_ops, NULL,
};

const dcodec_ops_t *dcodec_find(const char *name)
{
    for (size_t i = 0; name && dcodec_all[i]; i++)
        if (strcmp(dcodec_all[i]->host->name, name) == 0) return dcodec_all[i];
    return NULL;
}
