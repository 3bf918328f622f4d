/* compressor=auto: per layer, the faster of the dense path and the configured compressed
 * one, measured on the layer itself (src/auto.c). */
#ifndef TERSE_AUTO_H
#define TERSE_AUTO_H

#include <stdint.h>

#include "terse.h"

typedef enum { AUTO_UNDECIDED = 0, AUTO_COMPRESSED = 1, AUTO_DENSE = 2 } auto_choice_t;

/* A layer's trial record: saved with its state, so that a resumed run decides alike. */
typedef struct {
    uint64_t choice;   /* auto_choice_t                                                   */
    uint64_t done;     /* trial calls made                                                */
    double best[2];    /* fastest dense and compressed trial call on this rank, us (0: none) */
} auto_rec_t;


#endif
