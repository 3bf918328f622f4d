/* The aggregate of gathered sparse messages (compressors/topk.h's format), shared by the
 * protocols that allgather them: topk's and DGC's. */
#ifndef TERSE_SPARSE_SUM_H
#define TERSE_SPARSE_SUM_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the bitmap sparse_sum needs for a layer of count elements (64-byte multiple). */
size_t sparse_sum_bitmap_bytes(size_t count);

/* out = sum of the n messages base + r * stride (bytes[r] bytes each), added in rank order
 * into zeros; with `mean`, each entry a message touches then divided by n once (the others
 * stay +0, as a division would leave them): the bits of the whole-vector
 * ((0 + m0) + m1 ...) / n. Every message is checked before anything is written, so out may
 * be the caller's buffer. Returns -1, or the lowest rank whose message is malformed (out
 * untouched). bitmap: sparse_sum_bitmap_bytes(count) bytes of workspace. */
int sparse_sum(const unsigned char *base, size_t stride, const size_t *bytes, int n, size_t count,
               int mean, uint64_t *bitmap, float *out);

#endif
