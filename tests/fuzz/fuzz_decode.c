/* libFuzzer target: every built codec's decode_add (compressors/codec.h) on hostile messages,
 * the way a rank decodes what its peers sent.
 *
 * Input (fuzz_util.h reads missing bytes as 0):
 *   uint8 codec (an index among the registry's built codecs) | uint8 flags | uint16 count
 *   (0..4096) | uint8 shape (which divisor pair rows x cols of count the context gives) |
 *   uint32 stream key | uint16 per parameter of the codec's table (0: the default; otherwise
 *   a value inside the declared range, see param_value) | then
 *   flags bit 0 clear: the message, raw;
 *   flags bit 0 set:   a patch list (fuzz_util.h) applied to the message the codec's own
 *                      encode writes for a deterministic vector of kind flags >> 1 & 7
 *                      (fill_vector), so that mutations get past the length checks.
 * Parameter sets the codec's check refuses are skipped, as configuration would refuse them.
 * Checks, beyond "no memory error, no undefined behaviour" (message, scratch and out are
 * allocated to the byte, so ASan sees any read or write past them):
 *   - encode writes at most max_bytes (exactly max_bytes for an elementwise codec);
 *   - decode_add returns TERSE_OK or TERSE_ERR_MISMATCH, nothing else;
 *   - a rejected message leaves out[] bit for bit as it was;
 *   - a message longer than max_bytes is rejected;
 *   - the unpatched message encode wrote for a finite vector is accepted;
 *   - an accepted message is added: out[i] becomes exactly before[i] + z[i], z the message
 *     decoded into zeros, or stays as it was where z[i] is +0.0 (an element a sparse message
 *     does not name): decode_add never overwrites, scales or adds twice. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "fuzz_util.h"

#define MAX_COUNT 4096
#define FAIL(...) FUZZ_FAIL("fuzz_decode", __VA_ARGS__)

static const method_def_t *codecs[32];
static size_t n_codecs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    for (size_t i = 0; i < codec_registry_len && n_codecs < 32; i++)
        if (codec_registry[i].ops) codecs[n_codecs++] = &codec_registry[i];
    return 0;
}

/* v = 0: the default (NAN for "unset"); otherwise a value the configuration would accept:
 * a word's index, an integer min + (v - 1) mod span, or a number spread over [min, max]
 * ((0, v / 256] for an unbounded range). */
static double param_value(const param_def_t *d, unsigned v)
{
    if (v == 0) return d->def;
    if (d->choices) {
        unsigned n = 0;
        while (d->choices[n]) n++;
        return (double)((v - 1) % n);
    }
    if (d->integer) {
        double span = d->max - d->min + 1.0;
        if (span > 65535.0) span = 65535.0;
        return d->min + (double)((v - 1) % (unsigned)span);
    }
    if (isinf(d->max)) return d->min + v / 256.0;
    return d->min + (d->max - d->min) * (v / 65535.0);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* Vectors of several kinds: 0 uniform in [-1, 1], 1 a few levels (ties), 2 zeros of both
 * signs and +-1, 3 any finite bit pattern, 4 all zero, 5 one constant, 6 near +-FLT_MAX,
 * 7 (not finite) some NaN and Inf among uniform values, as nonfinite=pass lets through. */
static void fill_vector(float *v, size_t n, uint64_t key, unsigned kind)
{
    uint64_t s = key * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = xorshift(&s);
        float x = (float)((double)(r >> 11) * 0x1.0p-53 * 2.0 - 1.0);
        switch (kind) {
        case 1: x = (float)((int)(r % 9) - 4) * 0.25f; break;
        case 2: x = r % 4 == 0 ? 0.0f : r % 4 == 1 ? -0.0f : r % 4 == 2 ? 1.0f : -1.0f; break;
        case 3: {
            uint32_t u = (uint32_t)(r >> 32);
            if ((u & 0x7f800000u) == 0x7f800000u) u &= 0xff7fffffu;
            memcpy(&x, &u, sizeof x);
            break;
        }
        case 4: x = 0.0f; break;
        case 5: x = 0.375f; break;
        case 6: x = (r & 1 ? 1.0f : -1.0f) * (3.4028234e38f - (float)(r % 7) * 1e31f); break;
        case 7:
            if (r % 13 == 0) x = NAN;
            else if (r % 13 == 1) x = r & 2 ? INFINITY : -INFINITY;
            break;
        default: break;
        }
        v[i] = x;
    }
}

/* rows x cols = count: the shape-th divisor pair (0 x shape for an empty layer). */
static void pick_shape(size_t count, unsigned shape, size_t *rows, size_t *cols)
{
    if (count == 0) {
        *rows = 0;
        *cols = shape;
        return;
    }
    size_t div[64], n = 0;
    for (size_t a = 1; a <= count && n < 64; a++)
        if (count % a == 0) div[n++] = a;
    *rows = div[shape % n];
    *cols = count / *rows;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, data + size};
    const method_def_t *m = codecs[fuzz_take(&in, 1) % n_codecs];
    const codec_ops_t *ops = m->ops;
    const unsigned flags = (unsigned)fuzz_take(&in, 1);
    const size_t count = (size_t)fuzz_take(&in, 2) % (MAX_COUNT + 1);
    const unsigned shape = (unsigned)fuzz_take(&in, 1);
    const uint64_t key = fuzz_take(&in, 4);
    double p[TERSE_MAX_PARAMS];
    for (size_t i = 0; i < TERSE_MAX_PARAMS; i++)
        p[i] = i < m->n_params ? param_value(&m->params[i], (unsigned)fuzz_take(&in, 2)) : NAN;
    if (ops->check && ops->check(p, count) != TERSE_OK) return 0;

    size_t rows, cols;
    pick_shape(count, shape, &rows, &cols);
    const codec_ctx_t ctx = {key, 0, rows, cols};
    const size_t max = ops->max_bytes(p, count), sb = ops->scratch_bytes(p, count);
    void *scratch = sb ? malloc(sb) : NULL;
    float *out = malloc((count ? count : 1) * sizeof(float));
    float *before = malloc((count ? count : 1) * sizeof(float));
    if ((sb && !scratch) || !out || !before) abort();

    fuzz_buf_t msg;
    int expect_ok = 0;
    if (flags & 1) {
        const unsigned kind = flags >> 1 & 7;
        float *v = malloc((count ? count : 1) * sizeof(float));
        unsigned char *enc = malloc(max ? max : 1); /* exactly max_bytes: ASan guards the end */
        if (!v || !enc) abort();
        fill_vector(v, count, key, kind);
        const size_t bytes = ops->encode(p, &ctx, v, count, enc, scratch);
        if (bytes > max) FAIL("%s encode wrote %zu bytes, max_bytes is %zu", ops->name, bytes, max);
        if (ops->protocol == CODEC_PROTO_DENSE && bytes != max)
            FAIL("elementwise %s encode wrote %zu bytes, not max_bytes %zu", ops->name, bytes, max);
        if (!fuzz_buf_init(&msg, enc, bytes)) abort();
        free(enc);
        free(v);
        expect_ok = kind != 7 && fuzz_left(&in) < FUZZ_PATCH_BYTES;
        fuzz_patch_all(&msg, &in, count);
    } else if (!fuzz_buf_init(&msg, in.p, fuzz_left(&in))) {
        abort();
    }

    /* the message alone in an allocation of its size */
    unsigned char *wire = malloc(msg.len ? msg.len : 1);
    if (!wire) abort();
    if (msg.len) memcpy(wire, msg.d, msg.len);
    for (size_t i = 0; i < count; i++) out[i] = (float)((int)(i % 7) - 3) * 0.5f;
    if (count) out[0] = -0.0f;
    memcpy(before, out, count * sizeof(float));

    const terse_status_t s = ops->decode_add(p, wire, msg.len, count, out, scratch);
    if (s != TERSE_OK && s != TERSE_ERR_MISMATCH)
        FAIL("%s decode_add returned %d, not TERSE_OK or TERSE_ERR_MISMATCH", ops->name, (int)s);
    if (s == TERSE_ERR_MISMATCH && memcmp(out, before, count * sizeof(float)) != 0)
        FAIL("%s decode_add rejected a message of %zu bytes but changed out[]", ops->name, msg.len);
    if (msg.len > max && s != TERSE_ERR_MISMATCH)
        FAIL("%s decode_add accepted %zu bytes, max_bytes is %zu", ops->name, msg.len, max);
    if (expect_ok && s != TERSE_OK)
        FAIL("%s decode_add rejected its own encode's message (%zu elements, %zu x %zu, %zu bytes)",
             ops->name, count, rows, cols, msg.len);
    if (s == TERSE_OK) {
        /* an add: out = before + (the message decoded into zeros), one float add each; an
         * element a sparse message does not name stays as it was (-0.0 + 0.0 would be +0.0) */
        static const float pos_zero = 0.0f;
        float *z = calloc(count ? count : 1, sizeof(float));
        if (!z) abort();
        if (ops->decode_add(p, wire, msg.len, count, z, scratch) != TERSE_OK)
            FAIL("%s decode_add accepted a message once, then refused it", ops->name);
        for (size_t i = 0; i < count; i++) {
            const float want = before[i] + z[i];
            const int added = memcmp(&want, &out[i], sizeof want) == 0 || (isnan(want) && isnan(out[i]));
            const int untouched = memcmp(&z[i], &pos_zero, sizeof pos_zero) == 0 &&
                                  memcmp(&before[i], &out[i], sizeof out[i]) == 0;
            if (!added && !untouched)
                FAIL("%s decode_add is not an add at %zu: %a + %a gave %a", ops->name, i,
                     (double)before[i], (double)z[i], (double)out[i]);
        }
        free(z);
    }

    free(wire);
    free(msg.d);
    free(before);
    free(out);
    free(scratch);
    return 0;
}
