/* What the CUDA codec tests share: counted checks that print the first failures with their
 * place, a seeded stream of test inputs, float bit views, host and device allocation that
 * end the test when memory runs out, and the closing report. */
#ifndef TERSE_GPU_CHECK_H
#define TERSE_GPU_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
#include "rng.h"

static int failures, checks;

/* Counts a failure; the first 60 are printed. */
#define FAIL(...)                                                                              \
    do {                                                                                       \
        if (++failures <= 60) {                                                                \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                        \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        checks++;                                                                              \
        if (!(cond)) FAIL(__VA_ARGS__);                                                        \
    } while (0)

/* The test inputs: SplitMix64 from rng_state (tests seed it). */
static uint64_t rng_state;

static inline uint64_t next_u64(void) { return rng_mix(rng_state += 0x9e3779b97f4a7c15ull); }

/* Uniform in [-1, 1). */
static inline float next_f(void) { return (float)((double)(next_u64() >> 11) * 0x1.0p-52 - 1.0); }

static inline float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("FAIL: out of host memory\n");
        exit(1);
    }
    return p;
}

static inline void *dmalloc(size_t n)
{
    void *p = NULL;
    GPU_OK(cudaMalloc(&p, n ? n : 1));
    return p;
}

/* Prints PASS or FAIL for test `name` with the counts; the exit status. */
static inline int check_report(const char *name)
{
    if (failures) {
        printf("FAIL %s: %d of %d checks failed\n", name, failures, checks);
        return 1;
    }
    printf("PASS %s: %d checks\n", name, checks);
    return 0;
}

#endif
