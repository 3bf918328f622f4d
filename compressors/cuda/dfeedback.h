/* Device error feedback: the CUDA counterparts of the methods in src/feedback/ (feedback.h),
 * for layers whose gradient, state and messages live in GPU memory.
 *
 * Each table runs its host method's prepare and update as elementwise kernels that perform
 * the same float operations in the same order, so the state, the message input p and the
 * estimate are the host method's bit for bit (NaN payloads aside: a GPU turns every NaN an
 * arithmetic operation produces into the canonical 0x7fffffff, where x86 passes an input's
 * payload through; copies keep payloads on both). The host method stays the reference: its
 * table (host) gives the name, the state size, needs_delta and may_send_uncompressed.
 *
 * Arguments are the host method's, with device pointers (d_*) for the arrays and `stream`
 * (a cudaStream_t; NULL is the legacy default stream) on which the work is enqueued. ctx is
 * a host struct, read during the call only. Nothing synchronises: whether a call is sent
 * uncompressed depends on ctx alone (ctx->calls == 0 for EF21, EF21-SGDM and EControl, never
 * for none and EF), so prepare knows it without reading the device. The aliasing the host
 * allows is allowed here (d_out may be d_g), and a range [b, e) of a layer runs as on the
 * host: state + b, g + b, ... with n = e - b and ctx->stride = the layer's count.
 *
 * This header needs no CUDA header, so that C code without the toolkit can include it. */
#ifndef TERSE_DFEEDBACK_H
#define TERSE_DFEEDBACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "feedback/feedback.h" /* src/feedback/, through -I src as src/internal.h does */

typedef struct dfeedback_ops {
    size_t size;                  /* sizeof(dfeedback_ops_t): the version of this table */
    const feedback_ops_t *host;   /* the host method: name, state size, flags          */

    /* Writes d_p[0..n) from d_g and the state (not modified), as host->prepare does.
     * Returns what host->prepare returns for ctx: 1 when this call must be sent
     * uncompressed, 0 otherwise; or, when a CUDA call fails, TERSE_ERR_BACKEND (negative)
     * with a message. Test `r < 0` before using the flag. */
    int (*prepare)(const feedback_ctx_t *ctx, const float *d_state, const float *d_g,
                   float *d_p, size_t n, void *stream);
    /* Updates the state and writes the estimate to d_out, as host->update does. d_delta may
     * be NULL when host->needs_delta is 0. TERSE_OK, or TERSE_ERR_BACKEND with a message
     * when a CUDA call fails (the state is then undefined, as after a failed kernel). */
    terse_status_t (*update)(const feedback_ctx_t *ctx, float *d_state, const float *d_g,
                             const float *d_p, const float *d_delta, const float *d_agg,
                             float *d_out, size_t n, void *stream);
} dfeedback_ops_t;

extern const dfeedback_ops_t dfeedback_none_ops, dfeedback_ef_ops, dfeedback_ef21_ops,
    dfeedback_ef21sgdm_ops, dfeedback_econtrol_ops;

/* The device method of the host method named `name` ("none", "ef", ...), or NULL. */
const dfeedback_ops_t *dfeedback_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
