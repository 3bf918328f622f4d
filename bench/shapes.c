/* Layer shapes for terse-bench --shape: a list "RxC[,RxC...]" or a named model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static int push(shape_list_t *s, size_t rows, size_t cols)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        bench_shape_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].rows = rows;
    s->v[s->n].cols = cols;
    s->n++;
    return 0;
}

/* ResNet-50 (torchvision): every parameter tensor, convolutions as out x (in*kh*kw),
 * batch-norm weights and biases as C x 1. 25,557,032 floats in 161 tensors. */
static int resnet50(shape_list_t *s)
{
    static const int blocks[4] = {3, 4, 6, 3};
    int rc = push(s, 64, 3 * 7 * 7) | push(s, 64, 1) | push(s, 64, 1);
    size_t in = 64;
    for (int stage = 0; stage < 4; stage++) {
        size_t w = (size_t)64 << stage;
        for (int b = 0; b < blocks[stage]; b++) {
            rc |= push(s, w, in) | push(s, w, 1) | push(s, w, 1);
            rc |= push(s, w, w * 9) | push(s, w, 1) | push(s, w, 1);
            rc |= push(s, 4 * w, w) | push(s, 4 * w, 1) | push(s, 4 * w, 1);
            if (b == 0) rc |= push(s, 4 * w, in) | push(s, 4 * w, 1) | push(s, 4 * w, 1);
            in = 4 * w;
        }
    }
    rc |= push(s, 1000, 2048) | push(s, 1000, 1);
    return rc;
}

int shapes_parse(const char *text, shape_list_t *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(text, "resnet50") == 0) return resnet50(out);
    const char *p = text;
    while (*p) {
        char *end;
        unsigned long long r = strtoull(p, &end, 10);
        if (end == p || (*end != 'x' && *end != 'X')) return -1;
        p = end + 1;
        unsigned long long c = strtoull(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0')) return -1;
        if (push(out, (size_t)r, (size_t)c)) return -1;
        p = *end == ',' ? end + 1 : end;
    }
    return out->n ? 0 : -1;
}

size_t shapes_total(const shape_list_t *s)
{
    size_t t = 0;
    for (size_t i = 0; i < s->n; i++) t += s->v[i].rows * s->v[i].cols;
    return t;
}

bench_shape_t bench_flat_shape(size_t count)
{
    size_t c = 1;
    while ((c * 2) <= count / (c * 2)) c *= 2;
    bench_shape_t s = {count, 1};
    if (c > 1 && count % c == 0) {
        s.rows = count / c;
        s.cols = c;
    }
    return s;
}
