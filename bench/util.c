/* terse-bench helpers: byte sizes and synthetic gradients. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>

#include "bench.h"

int bench_parse_bytes(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024.0; end++; break;
    case 'G': mul = 1024.0 * 1024.0 * 1024.0; end++; break;
    default: break;
    }
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end != '\0') return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void bench_fill_gradient(float *v, size_t n, int rank, uint64_t layer_seed)
{
    uint64_t s = mix(layer_seed * 0x9e3779b97f4a7c15ull + (uint64_t)rank + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t a = mix(s + 2 * i), b = mix(s + 2 * i + 1);
        double u1 = ((double)(a >> 11) + 0.5) / 9007199254740992.0;
        double u2 = (double)(b >> 11) / 9007199254740992.0;
        double g = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        /* a per-coordinate scale shared by all ranks (some coordinates matter more),
         * and a per-rank bias so the ranks disagree as real workers do */
        double scale = exp(1.5 * cos(0.001 * (double)i * (1.0 + (double)(layer_seed % 7))));
        v[i] = (float)(scale * (0.01 * g + 0.002 * (double)(rank % 3)));
    }
}
