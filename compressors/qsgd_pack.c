/* QSGD's bit packing (qsgd.h): levels of 1 to 8 bits into one little-endian bit stream and
 * back. Pure integer work on whole bytes or 64-bit words, the same on every CPU; the 4-bit
 * AVX2 packer the encoder uses where it can lives with the other kernels in qsgd.c. */
#include <string.h>

#include "qsgd.h"

/* Eight levels of `bits` bits fill exactly `bits` bytes. When bits divides 8 (1, 2, 4, 8)
 * every byte holds whole levels and the packers run a byte loop, which the compiler
 * vectorises; otherwise (3, 5, 6, 7) they build a group of eight in one 64-bit word and
 * store it whole, little-endian. */
static inline uint64_t qsgd_le64(uint64_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(w);
#else
    return w;
#endif
}

/* The low `nbytes` bytes of w (nbytes <= 8), little-endian. */
static inline void qsgd_store_bytes(unsigned char *dst, uint64_t w, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++) dst[i] = (unsigned char)(w >> (8 * i));
}

static inline uint64_t qsgd_load_bytes(const unsigned char *src, size_t nbytes)
{
    uint64_t w = 0;
    for (size_t i = 0; i < nbytes; i++) w |= (uint64_t)src[i] << (8 * i);
    return w;
}

/* Inlined once per constant `bits` through the switches below, so that the shifts are
 * constants, the loops unroll and only one of the paths is compiled in each copy. */
static inline __attribute__((always_inline)) void qsgd_pack_bits(const uint8_t *restrict lv, size_t n,
                                                                 unsigned bits, unsigned char *restrict dst)
{
    const size_t groups = n / 8, total = (n * bits + 7) / 8;
    size_t g = 0;
    if (8 % bits == 0) {
        const unsigned per = 8 / bits;
        for (size_t i = 0; i < groups * bits; i++) {
            unsigned w = 0;
            for (unsigned k = 0; k < per; k++) w |= (unsigned)lv[per * i + k] << (k * bits);
            dst[i] = (unsigned char)w;
        }
        g = groups;
    }
    /* a whole 8-byte store per group while it stays inside the output; the bytes past the
     * group's own are rewritten by the next group */
    for (; g < groups && g * bits + 8 <= total; g++) {
        uint64_t w = 0;
        for (unsigned k = 0; k < 8; k++) w |= (uint64_t)lv[8 * g + k] << (k * bits);
        w = qsgd_le64(w);
        memcpy(dst + g * bits, &w, 8);
    }
    for (; g < groups; g++) {
        uint64_t w = 0;
        for (unsigned k = 0; k < 8; k++) w |= (uint64_t)lv[8 * g + k] << (k * bits);
        qsgd_store_bytes(dst + g * bits, w, bits);
    }
    const size_t rest = n % 8;
    if (rest) {
        uint64_t w = 0;
        for (size_t k = 0; k < rest; k++) w |= (uint64_t)lv[8 * groups + k] << (k * bits);
        qsgd_store_bytes(dst + groups * bits, w, (rest * bits + 7) / 8);
    }
}

static inline __attribute__((always_inline)) void qsgd_unpack_bits(const unsigned char *restrict src, size_t n,
                                                                   unsigned bits, uint8_t *restrict lv)
{
    const size_t groups = n / 8, total = (n * bits + 7) / 8;
    const uint64_t mask = (1u << bits) - 1;
    size_t g = 0;
    if (8 % bits == 0) {
        const unsigned per = 8 / bits;
        for (size_t i = 0; i < groups * bits; i++)
            for (unsigned k = 0; k < per; k++) lv[per * i + k] = (uint8_t)(src[i] >> (k * bits) & mask);
        g = groups;
    }
    for (; g < groups && g * bits + 8 <= total; g++) {
        uint64_t w;
        memcpy(&w, src + g * bits, 8);
        w = qsgd_le64(w);
        for (unsigned k = 0; k < 8; k++) lv[8 * g + k] = (uint8_t)(w >> (k * bits) & mask);
    }
    for (; g < groups; g++) {
        uint64_t w = qsgd_load_bytes(src + g * bits, bits);
        for (unsigned k = 0; k < 8; k++) lv[8 * g + k] = (uint8_t)(w >> (k * bits) & mask);
    }
    const size_t rest = n % 8;
    if (rest) {
        uint64_t w = qsgd_load_bytes(src + groups * bits, (rest * bits + 7) / 8);
        for (size_t k = 0; k < rest; k++) lv[8 * groups + k] = (uint8_t)(w >> (k * bits) & mask);
    }
}

void qsgd_pack(const uint8_t *restrict lv, size_t n, unsigned bits, unsigned char *restrict dst)
{
    switch (bits) {
    case 1: qsgd_pack_bits(lv, n, 1, dst); break;
    case 2: qsgd_pack_bits(lv, n, 2, dst); break;
    case 3: qsgd_pack_bits(lv, n, 3, dst); break;
    case 4: qsgd_pack_bits(lv, n, 4, dst); break;
    case 5: qsgd_pack_bits(lv, n, 5, dst); break;
    case 6: qsgd_pack_bits(lv, n, 6, dst); break;
    case 7: qsgd_pack_bits(lv, n, 7, dst); break;
    default: qsgd_pack_bits(lv, n, 8, dst); break;
    }
}

void qsgd_unpack(const unsigned char *restrict src, size_t n, unsigned bits, uint8_t *restrict lv)
{
    switch (bits) {
    case 1: qsgd_unpack_bits(src, n, 1, lv); break;
    case 2: qsgd_unpack_bits(src, n, 2, lv); break;
    case 3: qsgd_unpack_bits(src, n, 3, lv); break;
    case 4: qsgd_unpack_bits(src, n, 4, lv); break;
    case 5: qsgd_unpack_bits(src, n, 5, lv); break;
    case 6: qsgd_unpack_bits(src, n, 6, lv); break;
    case 7: qsgd_unpack_bits(src, n, 7, lv); break;
    default: qsgd_unpack_bits(src, n, 8, lv); break;
    }
}
