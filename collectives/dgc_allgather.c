/* Placeholder until the dgc protocol lands: the codec is not registered, so no layer reaches
 * these functions. */
#include "protocol.h"

static size_t none_ws(const proto_shape_t *s) { (void)s; return 0; }
static terse_status_t unsupported(proto_call_t *c)
{
    (void)c;
    return terse_error(TERSE_ERR_UNSUPPORTED, "the dgc protocol is not built");
}

const protocol_ops_t protocol_dgc = {
    sizeof(protocol_ops_t), "dgc", none_ws, NULL, unsupported, unsupported, unsupported,
};
