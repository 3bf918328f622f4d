/* Fused buckets: terse_allreduce_many runs a run of small layers as one exchange.
 *
 * Each layer of a bucket makes exactly the call terse_allreduce would make (the same
 * feedback, codec, protocol and arithmetic, so the same bits), but in a fiber of its own
 * (src/fiber.c) and over a lane of the batching transport (collectives/transport_batch.c).
 * When a layer asks for a collective its fiber yields; once every layer of the bucket waits
 * or is done, the scheduler takes the first waiting layer's request, runs it together with
 * every other waiting request of the same kind as one collective, and resumes those layers
 * in list order. A bucket of k layers thus costs the round trips of its longest protocol
 * (e.g. 5 for PowerSGD: the header, then P's and Q's reduce-scatter and allgather) instead
 * of k times that.
 *
 * Every rank makes the same decisions, because they depend only on what the ranks agree on:
 * the list of layers, their configurations and call counts (which the headers check).
 *
 * What is fused: with fuse=BYTES > 0 and the flat protocol, consecutive layers whose
 * gradients total at most BYTES, up to FUSE_MAX_LAYERS of them, a layer at most once. A layer
 * still timing its compressor=auto trials runs alone (its timing must be its own), and under
 * hier every layer runs alone. The fibers, their stacks and the staging buffers are made on
 * first use and kept for the communicator's life, so steady state allocates nothing. */
#include <stdio.h>
#include <stdlib.h>

#include "fiber.h"
#include "internal.h"
#include "transport_batch.h"

#define FUSE_STACK_BYTES ((size_t)256 << 10)

typedef struct {
    batch_lane_t lane;
    fiber_t fiber;
    uint64_t *headers;            /* the layer's header table: size * HDR_WORDS           */
    terse_comm_t *c;
    int layer;
    float *buf;
    terse_status_t status;
    char message[512];            /* terse_last_error() of a failed layer                 */
} fuse_slot_t;

struct fuse {
    batch_t batch;
    fuse_slot_t *slots;           /* FUSE_MAX_LAYERS                                      */
    int ready;                    /* slots with a stack and a header table                */
    batch_lane_t *group[FUSE_MAX_LAYERS];
};

static int fusable(const layer_t *l)
{
    return !auto_on(l) || l->autorec.choice != AUTO_UNDECIDED;
}

int fuse_bucket(const terse_comm_t *c, int n, const int *layers)
{
    if (c->cfg.fuse == 0 || c->hier.on) return 1;
    size_t bytes = 0;
    int k = 0;
    while (k < n && k < FUSE_MAX_LAYERS) {
        const layer_t *l = &c->layers[layers[k]];
        const size_t b = l->count * sizeof(float);
        if (!fusable(l) || bytes + b > c->cfg.fuse) break;
        int repeat = 0;
        for (int j = 0; j < k && !repeat; j++) repeat = layers[j] == layers[k];
        if (repeat) break;
        bytes += b;
        k++;
    }
    return k > 1 ? k : 1;
}

void fuse_destroy(fuse_t *f)
{
    if (!f) return;
    for (int i = 0; i < f->ready; i++) {
        fiber_free(&f->slots[i].fiber);
        free(f->slots[i].headers);
    }
    free(f->slots);
    batch_free(&f->batch);
    free(f);
}

/* Makes c->fuse and k ready slots. */
static terse_status_t fuse_prepare(terse_comm_t *c, int k)
{
    if (!c->fuse) {
        fuse_t *f = calloc(1, sizeof *f);
        if (!f) return terse_error(TERSE_ERR_NOMEM, "terse_allreduce_many: out of memory");
        f->slots = calloc(FUSE_MAX_LAYERS, sizeof *f->slots);
        terse_status_t s = f->slots ? batch_init(&f->batch, &c->tp)
                                    : terse_error(TERSE_ERR_NOMEM, "terse_allreduce_many: out of memory");
        if (s != TERSE_OK) {
            free(f->slots);
            free(f);
            return s;
        }
        c->fuse = f;
    }
    fuse_t *f = c->fuse;
    while (f->ready < k) {
        fuse_slot_t *s = &f->slots[f->ready];
        s->headers = calloc((size_t)c->tp.size * HDR_WORDS, sizeof *s->headers);
        if (!s->headers) return terse_error(TERSE_ERR_NOMEM, "terse_allreduce_many: out of memory");
        terse_status_t st = fiber_init(&s->fiber, FUSE_STACK_BYTES);
        if (st != TERSE_OK) {
            free(s->headers);
            s->headers = NULL;
            return st;
        }
        f->ready++;
    }
    return TERSE_OK;
}

static void slot_main(void *arg)
{
    fuse_slot_t *s = arg;
    s->status = engine_flat(s->c, s->layer, s->buf, &s->lane.tp, s->headers);
}

static void slot_yield(void *arg)
{
    fiber_yield(&((fuse_slot_t *)arg)->fiber);
}

/* Runs slot s until it waits for a collective or is done; keeps a failed layer's message. */
static void slot_advance(fuse_slot_t *s)
{
    fiber_resume(&s->fiber);
    if (s->fiber.finished && s->status != TERSE_OK)
        snprintf(s->message, sizeof s->message, "%s", terse_last_error());
}

terse_status_t fuse_run(terse_comm_t *c, int k, const int *layers, float *const *bufs)
{
    TERSE_CHECK(lgreco_maybe_decide(c));
    TERSE_CHECK(fuse_prepare(c, k));
    fuse_t *f = c->fuse;
    for (int i = 0; i < k; i++) {
        fuse_slot_t *s = &f->slots[i];
        batch_lane_init(&s->lane, &f->batch, slot_yield, s);
        s->c = c;
        s->layer = layers[i];
        s->buf = bufs[i];
        s->status = TERSE_OK;
        fiber_start(&s->fiber, slot_main, s);
    }
    for (int i = 0; i < k; i++) slot_advance(&f->slots[i]);
    for (;;) {
        int first = 0;
        while (first < k && f->slots[first].lane.req.kind == BATCH_NONE) first++;
        if (first == k) break;
        const batch_req_t *lead = &f->slots[first].lane.req;
        int m = 0;
        for (int i = first; i < k; i++)
            if (f->slots[i].lane.req.kind != BATCH_NONE && batch_compatible(lead, &f->slots[i].lane.req))
                f->group[m++] = &f->slots[i].lane;
        batch_run(&f->batch, f->group, m);
        for (int j = 0; j < m; j++) slot_advance((fuse_slot_t *)f->group[j]->yield_arg);
    }
    for (int i = 0; i < k; i++) {
        const fuse_slot_t *s = &f->slots[i];
        if (s->status != TERSE_OK) return terse_error(s->status, "%s", s->message);
    }
    return TERSE_OK;
}
