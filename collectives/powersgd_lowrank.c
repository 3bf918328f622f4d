/* PowerSGD aggregation (ALGORITHMS.md §8.1, with PyTorch's re-orthogonalised warm start,
 * §8.2): one power-iteration step on the mean of the ranks' matrices M_i (rows x cols), so
 * that only the thin factors P (rows x r') and Q (cols x r') travel.
 *
 * 3 ranks, Q the same on every rank (last call's mean Q, or N(0,1) from a shared stream):
 *   encode:              Q = orth(Q);  P_i = M_i Q
 *   round 1 (allreduce): P = P_0 + P_1 + P_2          (sum: only its span matters)
 *   local step:          P = orth(P);  Q_i = M_i^T P
 *   round 2 (allreduce): Q = (Q_0 + Q_1 + Q_2) / 3    (mean)
 *   decode:              out = P Q^T (times 3 for reduce=sum); keep Q for the next call
 * Both allreduces are the dense protocol run as a sub-call on the factor (fp32, owners sum
 * in rank order), so every rank holds the same P and Q bits and the same out.
 *
 * The rank's own decoded message (delta, for error feedback) is the aggregated
 * approximation P Q^T itself: EF then keeps e_i = M_i - P Q^T, the error relative to what
 * all ranks applied (§8.1), not to a local approximation. With reduce=sum, out is the sum of
 * the ranks' shares and delta stays P Q^T, so that sum_i delta_i = out.
 *
 * Calls before `start` are an exact dense allreduce (same sub-call on the whole layer) with
 * delta = p, so EF keeps e = 0 until compression begins.
 *
 * Protocol state (saved with the layer, only with warm_start=1): Q (cols x r') | a float
 * that is 1 once Q holds a previous call's mean, and 0 while there is none or it was all
 * zero (a zero Q would stay zero: the next call draws a fresh one).
 *
 * This rank's message (wire_bytes) is P_i and Q_i, 4 r' (rows + cols) bytes; the transport
 * moves 2 (n-1)/n of that, as two ring allreduces. The local step between the rounds runs
 * in exchange, so the engine times orth(P) and M^T P as communication. */
#include <string.h>

#include "powersgd.h"
#include "protocol.h"

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

typedef struct {
    size_t rows, cols, r;
    float *Pm, *Pa;        /* rows x r: my M Q, and the sum over ranks (orthogonalised)    */
    float *Qc;             /* cols x r: the Q this call multiplies by                       */
    float *Qm, *Qa;        /* cols x r: my M^T P, and the mean over ranks (the next state)  */
    float *acc;            /* the products' scratch                                          */
    void *sub;             /* the dense sub-call's workspace                                */
} lowrank_ws_t;

/* The layer as a matrix: its registered shape, or count x 1 if that does not hold count. */
static void lowrank_dims(size_t rows, size_t cols, size_t count, size_t *rows_p, size_t *cols_p)
{
    *rows_p = rows * cols == count ? rows : count;
    *cols_p = rows * cols == count ? cols : 1;
}

/* Sizes the factors and the sub-call workspace; with a base, also places them. */
static size_t lowrank_layout(const double *prm, size_t rows_in, size_t cols_in, size_t count,
                             int nranks, void *base, lowrank_ws_t *w)
{
    size_t rows, cols;
    lowrank_dims(rows_in, cols_in, count, &rows, &cols);
    const size_t r = powersgd_rank(prm, rows, cols);
    const size_t pb = align64(rows * r * sizeof(float)), qb = align64(cols * r * sizeof(float));
    const size_t ab = align64(powersgd_acc_floats(r) * sizeof(float));
    size_t sub = protocol_dense_floats_workspace(rows * r, nranks), qs = protocol_dense_floats_workspace(cols * r, nranks);
    if (qs > sub) sub = qs;
    if (prm[POWERSGD_START] > 0) {
        size_t ds = protocol_dense_floats_workspace(count, nranks);
        if (ds > sub) sub = ds;
    }
    if (base) {
        unsigned char *b = base;
        w->rows = rows;
        w->cols = cols;
        w->r = r;
        w->Pm = (float *)b;
        w->Pa = (float *)(b + pb);
        w->Qc = (float *)(b + 2 * pb);
        w->Qm = (float *)(b + 2 * pb + qb);
        w->Qa = (float *)(b + 2 * pb + 2 * qb);
        w->acc = (float *)(b + 2 * pb + 3 * qb);
        w->sub = b + 2 * pb + 3 * qb + ab;
    }
    return 2 * pb + 3 * qb + ab + sub;
}

static size_t lowrank_workspace(const proto_shape_t *s)
{
    return lowrank_layout(s->prm, s->rows, s->cols, s->count, s->nranks, NULL, NULL);
}

static size_t lowrank_state_floats(const proto_shape_t *s)
{
    if (s->prm[POWERSGD_WARM_START] == 0) return 0;
    size_t rows, cols;
    lowrank_dims(s->rows, s->cols, s->count, &rows, &cols);
    return cols * powersgd_rank(s->prm, rows, cols) + 1;
}

static lowrank_ws_t lowrank_ws(const proto_call_t *c)
{
    lowrank_ws_t w;
    lowrank_layout(c->prm, c->rows, c->cols, c->count, c->tp->size, c->ws, &w);
    return w;
}

static int lowrank_dense_phase(const proto_call_t *c)
{
    return (double)c->calls < c->prm[POWERSGD_START];
}

static terse_status_t lowrank_encode(proto_call_t *c)
{
    const lowrank_ws_t w = lowrank_ws(c);
    if (lowrank_dense_phase(c)) {
        c->wire_bytes = 4 * c->count; /* exchange sends the layer as it is */
        return TERSE_OK;
    }
    c->wire_bytes = 4 * w.r * (w.rows + w.cols);
    if (w.r == 0) return TERSE_OK;
    /* the state is only read here; decode commits the next Q */
    const size_t qn = w.cols * w.r;
    if (c->state && c->state[qn] != 0.0f)
        memcpy(w.Qc, c->state, qn * sizeof(float));
    else
        powersgd_random(protocol_stream_key((uint64_t)c->prm[POWERSGD_SEED], c, -1, 0), w.cols, w.r, w.Qc);
    powersgd_orthogonalize(w.Qc, w.cols, w.r);
    powersgd_mul(c->in, w.rows, w.cols, w.Qc, w.r, w.Pm, w.acc);
    return TERSE_OK;
}

static terse_status_t lowrank_exchange(proto_call_t *c)
{
    const lowrank_ws_t w = lowrank_ws(c);
    if (lowrank_dense_phase(c)) return protocol_dense_floats(c, c->in, c->out, c->count, c->mean, w.sub);
    if (w.r == 0) return TERSE_OK;
    TERSE_CHECK(protocol_dense_floats(c, w.Pm, w.Pa, w.rows * w.r, 0, w.sub));
    powersgd_orthogonalize(w.Pa, w.rows, w.r);
    powersgd_mul_t(c->in, w.rows, w.cols, w.Pa, w.r, w.Qm, w.acc);
    return protocol_dense_floats(c, w.Qm, w.Qa, w.cols * w.r, 1, w.sub);
}

static terse_status_t lowrank_decode(proto_call_t *c)
{
    const lowrank_ws_t w = lowrank_ws(c);
    if (lowrank_dense_phase(c)) {
        if (c->delta) memcpy(c->delta, c->in, c->count * sizeof(float));
        return TERSE_OK;
    }
    if (w.r == 0) {
        memset(c->out, 0, c->count * sizeof(float));
        if (c->delta) memset(c->delta, 0, c->count * sizeof(float));
        return TERSE_OK;
    }
    powersgd_outer(w.Pa, w.rows, w.Qa, w.cols, w.r, c->out, 0, w.acc);
    if (c->delta) memcpy(c->delta, c->out, c->count * sizeof(float));
    if (!c->mean) {
        const float n = (float)c->tp->size;
        for (size_t i = 0; i < c->count; i++) c->out[i] *= n;
    }
    if (c->state) {
        /* an all-zero Q (every rank's M was 0) would keep P = M Q at 0 for ever after:
         * the next call starts again from a fresh random Q instead */
        const size_t qn = w.cols * w.r;
        int nonzero = 0;
        for (size_t t = 0; t < qn; t++) nonzero |= w.Qa[t] != 0.0f;
        memcpy(c->state, w.Qa, qn * sizeof(float));
        c->state[qn] = nonzero ? 1.0f : 0.0f;
    }
    return TERSE_OK;
}

const protocol_ops_t protocol_powersgd = {
    sizeof(protocol_ops_t), "powersgd_lowrank", lowrank_workspace, lowrank_state_floats,
    lowrank_encode, lowrank_exchange, lowrank_decode, 0, NULL,
};
