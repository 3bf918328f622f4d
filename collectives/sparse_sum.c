/* Sums of gathered sparse messages: one pass of zeros over the output, then work in
 * proportion to the messages (the adds, and the division of the entries they touch). */
#include <string.h>

#include "sparse_sum.h"
#include "topk.h"

size_t sparse_sum_bitmap_bytes(size_t count)
{
    return ((count + 63) / 64 * sizeof(uint64_t) + 63) & ~(size_t)63;
}

/* out /= n on the entries some message touches, each once: clear their bits, then divide at
 * the first visit and set the bit. */
static void divide_touched(const unsigned char *base, size_t stride, int n, uint64_t *bits, float *out)
{
    const uint32_t *idx;
    for (int r = 0; r < n; r++) {
        const uint32_t k = sparse_view(base + (size_t)r * stride, &idx, NULL);
        for (uint32_t j = 0; j < k; j++) bits[idx[j] >> 6] &= ~((uint64_t)1 << (idx[j] & 63));
    }
    for (int r = 0; r < n; r++) {
        const uint32_t k = sparse_view(base + (size_t)r * stride, &idx, NULL);
        for (uint32_t j = 0; j < k; j++) {
            uint64_t *w = &bits[idx[j] >> 6];
            const uint64_t bit = (uint64_t)1 << (idx[j] & 63);
            if (*w & bit) continue;
            *w |= bit;
            out[idx[j]] /= (float)n;
        }
    }
}

int sparse_sum(const unsigned char *base, size_t stride, const size_t *bytes, int n, size_t count,
               int mean, uint64_t *bitmap, float *out)
{
    for (int r = 0; r < n; r++)
        if (sparse_check(base + (size_t)r * stride, bytes[r], count) != TERSE_OK) return r;
    memset(out, 0, count * sizeof(float));
    for (int r = 0; r < n; r++) sparse_add(base + (size_t)r * stride, out);
    if (mean) divide_touched(base, stride, n, bitmap, out);
    return -1;
}
