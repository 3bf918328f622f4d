/* The engine's private view of communicators and layers. */
#ifndef TERSE_INTERNAL_H
#define TERSE_INTERNAL_H

#include <stdint.h>

#include "codec.h"
#include "config.h"
#include "error.h"
#include "feedback/feedback.h"
#include "protocol.h"
#include "transport.h"

typedef struct {
    char name[64];
    size_t rows, cols, count;
    terse_config_t cfg;            /* the layer's configuration, overrides applied        */
    const codec_ops_t *codec;      /* the codec in force (none for a dense layer)          */
    const protocol_ops_t *proto;
    const feedback_ops_t *fb;
    uint64_t fingerprint;          /* hash of codec, parameters and feedback: ranks compare */
    int dense;                     /* small or uncompressed: plain dense mean               */

    float *state;                  /* feedback state (fb_floats), then the protocol's
                                      (proto_floats): one block, saved as one               */
    size_t fb_floats, proto_floats;
    float *p;                      /* message input                                        */
    float *delta;                  /* this rank's decoded message                          */
    float *agg;                    /* the aggregate                                        */
    void *ws;                      /* protocol workspace                                   */
    void *scratch;                 /* codec scratch                                        */
    void *ws_dense;                /* workspace of the uncompressed path (EF21's first call) */

    uint64_t calls, skipped;
    terse_stats_t last;            /* figures of the last call                             */
    uint64_t total_sent;
} layer_t;

struct terse_comm {
    transport_t tp;
    terse_config_t cfg;
    layer_t *layers;
    size_t n_layers, cap_layers;
    uint64_t step;
    int owns_mpi;                  /* terse_comm_create_world initialised MPI             */
    uint64_t *headers;             /* nranks * HEADER_WORDS, sized at creation            */
};

/* The header every rank contributes before an exchange (words of uint64). */
enum { HDR_MAGIC, HDR_LAYER, HDR_COUNT, HDR_FINGERPRINT, HDR_CALL, HDR_FLAGS, HDR_WIRE, HDR_WORDS };
enum { HDR_FLAG_NONFINITE = 1, HDR_FLAG_UNCOMPRESSED = 2 };

extern const codec_ops_t codec_none_ops;
extern const feedback_ops_t feedback_none_ops;

/* The codec parameters a layer uses (none's, empty, for a dense layer). */
const double *layer_params(const layer_t *l);
extern const double layer_no_params[TERSE_MAX_PARAMS];

/* Frees one layer's buffers. */
void layer_free(layer_t *l);

/* Monotonic time in microseconds. */
double engine_now_us(void);

#endif
