/* Aggregation protocols: how the messages of one codec travel and combine so that every
 * rank ends with the same aggregate. A call runs in three phases, which the engine times
 * separately and between which it checks that the ranks agree:
 *   encode   - this rank's input p -> its message (and, if asked, delta = C(p) decoded)
 *   exchange - the transport moves messages (and owners may combine chunks)
 *   decode   - messages -> the aggregate `out`, identical bits on every rank
 * The workspace is sized once per layer by workspace_bytes, so a call never allocates.
 *
 * A protocol may keep state per layer (1-bit's server error, DGC's momentum and velocity,
 * PowerSGD's Q): state_floats floats, saved with the layer. encode and exchange must not
 * change it - they write the next state into the workspace, or into the second buffer that
 * a protocol with swaps_state gets - and decode commits it as its last act, once the call
 * can no longer fail (or the engine swaps the buffers after it), so that a call abandoned
 * anywhere (a peer's NaN, a mismatch, a malformed message) leaves the layer exactly as it
 * was. */
#ifndef TERSE_PROTOCOL_H
#define TERSE_PROTOCOL_H

#include <string.h>

#include "codec.h"
#include "error.h"
#include "transport.h"

/* What a protocol knows about a layer when it sizes its memory. */
typedef struct {
    const codec_ops_t *codec;
    const double *prm;       /* the codec's parameters                                      */
    size_t rows, cols;       /* the layer's shape as registered (count = rows * cols)       */
    size_t count;
    int nranks;
} proto_shape_t;

typedef struct {
    transport_t *tp;
    const codec_ops_t *codec;
    const double *prm;       /* the codec's parameters                                      */
    size_t count;            /* elements                                                    */
    size_t rows, cols;       /* the layer's shape                                           */
    int layer;               /* the layer id (identical on all ranks)                       */
    uint64_t calls;          /* the layer's completed calls before this one                 */
    uint64_t step;           /* terse_step_end calls so far (schedules: DGC warm-up)        */
    float *state;            /* state_floats floats of protocol state, or NULL              */
    float *state_next;       /* swaps_state: as many floats for the next state, else NULL   */
    const float *in;         /* p: this rank's message input                                */
    float *delta;            /* out: C(p) as this rank's own message decodes, or NULL       */
    float *residual;         /* PROTO_RESIDUAL_IN_PLACE: `in` itself, writable, or NULL     */
    float *out;              /* out: the aggregate (mean or sum of every rank's C(p_i))     */
    int mean;                /* 1: divide the sum by the rank count                         */
    void *ws;                /* workspace_bytes bytes                                       */
    void *scratch;           /* the codec's scratch_bytes bytes                             */
    size_t wire_bytes;       /* set by encode: this rank's message                          */
    int nonfinite;           /* set by encode under PROTO_SCANS_INPUT: `in` has a NaN/Inf   */
    int scan;                /* set by the engine under PROTO_SCANS_AT_OWNER: check inputs  */
    const uint64_t *peer_bytes; /* set by the engine before exchange: every rank's wire_bytes */
    int bad_rank;            /* set on a decode failure: the rank whose message was invalid */
} proto_call_t;

typedef struct protocol_ops {
    size_t size;             /* sizeof(protocol_ops_t): the version of this table */
    const char *name;
    size_t (*workspace_bytes)(const proto_shape_t *shape);
    /* Floats of per-layer state; NULL: none. */
    size_t (*state_floats)(const proto_shape_t *shape);
    terse_status_t (*encode)(proto_call_t *call);
    terse_status_t (*exchange)(proto_call_t *call);
    terse_status_t (*decode)(proto_call_t *call);
    /* 1: the protocol writes its whole next state to call->state_next (every float of it,
     * in encode or decode) and leaves call->state as it is; once the call has succeeded the
     * engine makes the next state the one in force by swapping the two buffers, with no
     * copy. 0: decode commits in call->state itself. */
    int swaps_state;
    /* Which of the PROTO_* shortcuts below the protocol takes on a layer of this codec,
     * parameters and shape; NULL: none. */
    unsigned (*shortcuts)(const codec_ops_t *codec, const double *prm, size_t rows, size_t cols);
} protocol_ops_t;

/* The protocol may write the aggregate straight into the caller's buffer, even when that
 * buffer is call->in: nothing reads a part of `in` after it wrote that part of `out`, and
 * nothing but a transport failure can fail once it has written to `out`. When no feedback
 * update follows (feedback none, a dense layer, or an uncompressed call that bypasses the
 * feedback method) the engine then passes the caller's buffer as `out`, and the copy of the
 * aggregate goes. */
#define PROTO_OUT_IN_PLACE 1u
/* encode reads every element of call->in and sets call->nonfinite to whether one is a NaN
 * or an infinity, so the engine skips its own scan (one pass less); encode must not fail
 * or change state on such input, since the engine abandons or skips the call after it. */
#define PROTO_SCANS_INPUT 2u

/* With call->scan set, exchange checks every rank's input for a NaN or an infinity where it
 * reads it anyway (each element once, at its owner), and the ranks agree on the verdict
 * before anything is written to `out`: a non-finite input makes exchange return
 * TERSE_ERR_NONFINITE with call->bad_rank the lowest rank whose input had one, the same on
 * every rank, having written nothing and changed no state. The engine skips its own scan
 * and sets call->scan when the input is the caller's gradient, nonfinite= asks and the call
 * is not part of a fused bucket (there the verdict's extra round would cost every layer of
 * the bucket a round trip). */
#define PROTO_SCANS_AT_OWNER 4u

/* With call->residual set (to call->in), encode leaves in - delta there instead of writing
 * delta, with the bits of the subtraction of the whole decoded delta (decode_add's into
 * zeros): the next state of error feedback, in work in proportion to the message. */
#define PROTO_RESIDUAL_IN_PLACE 8u

extern const protocol_ops_t protocol_dense;
extern const protocol_ops_t protocol_dense_ef;
extern const protocol_ops_t protocol_sparse_allgather;
extern const protocol_ops_t protocol_randk;
extern const protocol_ops_t protocol_onebit;
extern const protocol_ops_t protocol_dgc;
extern const protocol_ops_t protocol_powersgd;

/* The exact sum or mean of every rank's count floats (in -> out, fp32, summed in rank order
 * by one owner per element, so every rank gets the same bits): the dense protocol with codec
 * none, run as a sub-call of `outer` (its transport, layer and call) in ws, which holds
 * protocol_dense_floats_workspace(count, nranks) bytes. A peer's malformed message sets
 * outer->bad_rank. For protocols that must sum a float vector: randk's values, PowerSGD's
 * factors, DGC's dense layers. */
size_t protocol_dense_floats_workspace(size_t count, int nranks);
terse_status_t protocol_dense_floats(proto_call_t *outer, const float *in, float *out,
                                     size_t count, int mean, void *ws);

/* Whether one of v[0..n) is a NaN or an infinity: exponent all ones, OR-reduced so that
 * the loop vectorises. */
static inline int protocol_has_nonfinite(const float *v, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

/* The protocol a codec's messages use. */
const protocol_ops_t *protocol_for(const codec_ops_t *codec);

/* The [begin, end) elements of chunk r when count elements are split over n ranks, the
 * first count % n chunks one longer. */
static inline size_t protocol_chunk_begin(size_t count, int n, int r)
{
    size_t q = count / (size_t)n, rem = count % (size_t)n;
    return (size_t)r * q + ((size_t)r < rem ? (size_t)r : rem);
}

/* The stream key of an encode (codec_ctx_t.key): seed, layer, call, rank and phase mixed so
 * that every (layer, call, rank, phase) draws its own random numbers, and a rerun draws the
 * same ones. rank is the encoding rank, or -1 for a stream all ranks share. */
static inline uint64_t protocol_stream_key(uint64_t seed, const proto_call_t *c, int rank,
                                           unsigned phase)
{
    uint64_t h = seed * 0x9e3779b97f4a7c15ull;
    const uint64_t words[4] = {(uint64_t)(int64_t)c->layer, c->calls, (uint64_t)(int64_t)rank, phase};
    for (int i = 0; i < 4; i++) {
        h ^= words[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    return h;
}

#endif
