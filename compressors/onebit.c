/* onebit: scaled sign, one bit per element (ALGORITHMS.md §2.3, §2.5).
 *
 *   C(x)_j = s * sgn(x_j),   sgn(x) = +1 if x >= 0 else -1   (0 and -0.0 map to +1)
 *   scale=l2 (default, DeepSpeed's 1-bit Adam): s = ||x||_2 / sqrt(len)
 *   scale=l1 (EF-signSGD):                     s = ||x||_1 / len
 *
 * Wire format of the standalone codec: float32 s | ceil(count / 8) bytes of signs, bit j % 8
 * of byte j / 8 set when x_j >= 0 (LSB first), the unused high bits of the last byte 0.
 * Layers do not aggregate through it directly: CODEC_PROTO_ONEBIT runs 1-bit Adam's two
 * phases (collectives/onebit_twophase.c), which pads the vector and splits it in chunks,
 * from the helpers below. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "onebit.h"

static const char *const onebit_scales[] = {"l1", "l2", NULL};

const param_def_t onebit_params[ONEBIT_N_PARAMS] = {
    {"scale", ONEBIT_SCALE_L2, 0.0, 1.0, 0, 1, onebit_scales},
};

static inline unsigned char pack8(const float *x)
{
    unsigned b = 0;
    for (unsigned k = 0; k < 8; k++) b |= (unsigned)(x[k] >= 0.0f) << k;
    return (unsigned char)b;
}

void onebit_pack(const float *restrict x, size_t n, unsigned char *restrict bits)
{
    size_t full = n / 8;
    for (size_t i = 0; i < full; i++) bits[i] = pack8(x + 8 * i);
    if (n % 8) {
        unsigned b = 0;
        for (size_t k = 0; k < n % 8; k++) b |= (unsigned)(x[8 * full + k] >= 0.0f) << k;
        bits[full] = (unsigned char)b;
    }
}

/* +s or -s as bit patterns: -s is s with the sign bit flipped, so a clear bit k of byte b
 * flips it. Integer work on whole bytes, which the compiler vectorises; it equals the
 * scalar `bit ? s : -s` bit for bit. */
static inline void unpack8(unsigned b, uint32_t su, float *restrict out, int add)
{
    const uint32_t nb = ~b;
    for (unsigned k = 0; k < 8; k++) {
        uint32_t u = su ^ ((nb >> k & 1u) << 31);
        float v;
        memcpy(&v, &u, sizeof v);
        out[k] = add ? out[k] + v : v;
    }
}

void onebit_unpack(const unsigned char *restrict bits, size_t n, float s, float *restrict out)
{
    uint32_t su;
    memcpy(&su, &s, sizeof su);
    size_t full = n / 8;
    for (size_t i = 0; i < full; i++) unpack8(bits[i], su, out + 8 * i, 0);
    for (size_t j = 8 * full; j < n; j++) out[j] = (bits[j / 8] >> (j % 8) & 1u) ? s : -s;
}

void onebit_unpack_add(const unsigned char *restrict bits, size_t n, float s, float *restrict out)
{
    uint32_t su;
    memcpy(&su, &s, sizeof su);
    size_t full = n / 8;
    for (size_t i = 0; i < full; i++) unpack8(bits[i], su, out + 8 * i, 1);
    for (size_t j = 8 * full; j < n; j++) out[j] += (bits[j / 8] >> (j % 8) & 1u) ? s : -s;
}

double onebit_norm_acc(int scale, const float *x, size_t n)
{
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    if (scale == ONEBIT_SCALE_L2) {
        for (; i + 8 <= n; i += 8)
            for (size_t k = 0; k < 8; k++) l[k] += (double)x[i + k] * (double)x[i + k];
        for (; i < n; i++) l[i % 8] += (double)x[i] * (double)x[i];
    } else {
        for (; i + 8 <= n; i += 8)
            for (size_t k = 0; k < 8; k++) l[k] += fabs((double)x[i + k]);
        for (; i < n; i++) l[i % 8] += fabs((double)x[i]);
    }
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

float onebit_scale_of(int scale, double acc, size_t len)
{
    if (len == 0) return 0.0f;
    if (scale == ONEBIT_SCALE_L2) return (float)(sqrt(acc) / sqrt((double)len));
    return (float)(acc / (double)len);
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

size_t onebit_padded(size_t count, int nranks)
{
    size_t w = (size_t)nranks, divider = 8 * w / gcd(w, 8), unit = w * divider;
    return (count + unit - 1) / unit * unit;
}

static size_t onebit_max_bytes(const double *p, size_t count)
{
    (void)p;
    return ONEBIT_HEADER + onebit_sign_bytes(count);
}

static size_t onebit_scratch_bytes(const double *p, size_t count)
{
    (void)p; (void)count;
    return 0;
}

static size_t onebit_encode(const double *p, const codec_ctx_t *ctx, const float *restrict in,
                            size_t count, void *restrict msg, void *restrict scratch)
{
    (void)ctx; (void)scratch;
    const int kind = (int)p[ONEBIT_SCALE];
    const float s = onebit_scale_of(kind, onebit_norm_acc(kind, in, count), count);
    unsigned char *b = msg;
    memcpy(b, &s, sizeof s);
    onebit_pack(in, count, b + ONEBIT_HEADER);
    return ONEBIT_HEADER + onebit_sign_bytes(count);
}

static terse_status_t onebit_decode_add(const double *p, const void *restrict msg, size_t bytes,
                                        size_t count, float *restrict out, void *restrict scratch)
{
    (void)p; (void)scratch;
    if (bytes != ONEBIT_HEADER + onebit_sign_bytes(count)) return TERSE_ERR_MISMATCH;
    const unsigned char *b = msg;
    float s;
    memcpy(&s, b, sizeof s);
    /* a scale is a norm: finite and not negative (a NaN fails both tests) */
    if (!(s >= 0.0f && s <= FLT_MAX)) return TERSE_ERR_MISMATCH;
    const unsigned char *bits = b + ONEBIT_HEADER;
    if (count % 8 && bits[count / 8] >> (count % 8)) return TERSE_ERR_MISMATCH;
    onebit_unpack_add(bits, count, s, out);
    return TERSE_OK;
}

const codec_ops_t codec_onebit_ops = {
    sizeof(codec_ops_t), "onebit", CODEC_PROTO_ONEBIT,
    NULL, onebit_max_bytes, onebit_scratch_bytes, onebit_encode, onebit_decode_add, NULL, 0,
};
