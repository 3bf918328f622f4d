/* Helpers shared by the fuzz targets: a cursor over the input and patch lists.
 *
 * A patch list lets a target start from a valid message or file (which random bytes almost
 * never are: lengths, counts and checksums must agree) and change a few places of it, so
 * that the fuzzer spends its time in the checks behind the length tests. A list is a
 * sequence of 11-byte records, op | uint16 position | uint64 value (little-endian), applied
 * in order; positions wrap around the current length. */
#ifndef TERSE_FUZZ_UTIL_H
#define TERSE_FUZZ_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_FAIL(name, ...)                                                                \
    do {                                                                                    \
        fprintf(stderr, name ": " __VA_ARGS__);                                             \
        fputc('\n', stderr);                                                                \
        abort();                                                                            \
    } while (0)

typedef struct {
    const uint8_t *p, *end;
} fuzz_in_t;

/* The next n bytes as a little-endian integer; missing bytes read as 0. */
static inline uint64_t fuzz_take(fuzz_in_t *in, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = in->p < in->end ? *in->p++ : 0;
        v |= b << (8 * i);
    }
    return v;
}

static inline size_t fuzz_left(const fuzz_in_t *in) { return (size_t)(in->end - in->p); }

/* A growable byte buffer (the message or file being patched). */
typedef struct {
    uint8_t *d;
    size_t len, cap;
} fuzz_buf_t;

static inline int fuzz_buf_init(fuzz_buf_t *b, const void *src, size_t len)
{
    b->cap = len + 64;
    b->len = len;
    b->d = malloc(b->cap);
    if (!b->d) return 0;
    if (len) memcpy(b->d, src, len);
    return 1;
}

static inline int fuzz_buf_reserve(fuzz_buf_t *b, size_t len)
{
    if (len <= b->cap) return 1;
    size_t cap = b->cap * 2 > len ? b->cap * 2 : len;
    uint8_t *d = realloc(b->d, cap);
    if (!d) return 0;
    b->d = d;
    b->cap = cap;
    return 1;
}

#define FUZZ_PATCH_BYTES 11
#define FUZZ_MAX_LEN ((size_t)1 << 20)

/* Values that sit on the edges of the checks: special floats and doubles. */
static const uint32_t fuzz_special_f32[] = {
    0x7fc00000u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u,
    0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000001u, 0x3f800000u, 0xbf800000u,
    0x7f800001u, 0x00800000u, 0x4b800000u, 0xcb800000u,
};
static const double fuzz_special_f64[] = {
    NAN, -NAN, INFINITY, -INFINITY, 0.0, -0.0, 1e308, -1e308, 4.9e-324, 1.0, -1.0, 0.5,
    2.0, 0.1, 0.05, 0.2, 0.025, 0.4, 3.0, 4.0, 8.0, 1e19, 18446744073709551616.0, 1.5,
};

/* Applies one record to b. `hint` bounds the small integers op 9 writes (an element count:
 * they then land near the values a count or an index field holds). */
static inline void fuzz_patch_one(fuzz_buf_t *b, unsigned op, size_t pos, uint64_t v, size_t hint)
{
    switch (op % 10) {
    case 0: /* set a byte */
        if (b->len) b->d[pos % b->len] = (uint8_t)v;
        break;
    case 1: /* flip bits of a byte */
        if (b->len) b->d[pos % b->len] ^= (uint8_t)(v ? v : 1);
        break;
    case 2: /* a 32-bit word */
    case 9: /* a small 32-bit word */
        if (b->len >= 4) {
            uint32_t w = op % 10 == 2 ? (uint32_t)v : (uint32_t)(v % (hint + 2));
            memcpy(b->d + pos % (b->len - 3), &w, 4);
        }
        break;
    case 3: /* a 64-bit word */
        if (b->len >= 8) memcpy(b->d + pos % (b->len - 7), &v, 8);
        break;
    case 4: /* truncate */
        b->len = pos % (b->len + 1);
        break;
    case 5: { /* insert 1..16 copies of a byte */
        size_t n = (v & 15) + 1, at = pos % (b->len + 1);
        if (b->len + n > FUZZ_MAX_LEN || !fuzz_buf_reserve(b, b->len + n)) break;
        memmove(b->d + at + n, b->d + at, b->len - at);
        memset(b->d + at, (int)(v >> 8 & 0xff), n);
        b->len += n;
        break;
    }
    case 6: { /* delete 1..16 bytes */
        if (!b->len) break;
        size_t at = pos % b->len, n = (v & 15) + 1;
        if (n > b->len - at) n = b->len - at;
        memmove(b->d + at, b->d + at + n, b->len - at - n);
        b->len -= n;
        break;
    }
    case 7: /* a special float */
        if (b->len >= 4) {
            uint32_t w = fuzz_special_f32[v % (sizeof fuzz_special_f32 / sizeof fuzz_special_f32[0])];
            memcpy(b->d + pos % (b->len - 3), &w, 4);
        }
        break;
    case 8: /* a special double */
        if (b->len >= 8) {
            double x = fuzz_special_f64[v % (sizeof fuzz_special_f64 / sizeof fuzz_special_f64[0])];
            memcpy(b->d + pos % (b->len - 7), &x, 8);
        }
        break;
    }
}

/* Applies every whole record left in the input. */
static inline void fuzz_patch_all(fuzz_buf_t *b, fuzz_in_t *in, size_t hint)
{
    while (fuzz_left(in) >= FUZZ_PATCH_BYTES) {
        unsigned op = (unsigned)fuzz_take(in, 1);
        size_t pos = (size_t)fuzz_take(in, 2);
        uint64_t v = fuzz_take(in, 8);
        fuzz_patch_one(b, op, pos, v, hint);
    }
}

#endif
