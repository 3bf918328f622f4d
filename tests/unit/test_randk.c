/* Unit tests for RandK (compressors/randk.c): the k-subset generator (exactly k distinct
 * indices; every index and every subset equally likely), the contractive and unbiased
 * scalings, self-describing messages, and the validation of peer messages. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "randk.h"

extern const codec_ops_t codec_randk_ops;

#define REQUIRE(cond, ...)                                                                  \
    do {                                                                                    \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                             \
    } while (0)

static void params(double p[TERSE_MAX_PARAMS], double density, int unbiased)
{
    for (int i = 0; i < TERSE_MAX_PARAMS; i++) p[i] = NAN;
    p[RANDK_DENSITY] = density;
    p[RANDK_SEED] = 0;
    p[RANDK_UNBIASED] = unbiased;
}

static size_t popcount(const uint64_t *bm, size_t count)
{
    size_t m = 0;
    for (size_t w = 0; w < (count + 63) / 64; w++) m += (size_t)__builtin_popcountll(bm[w]);
    return m;
}

START_TEST(k_follows_density)
{
    double p[TERSE_MAX_PARAMS];
    params(p, 0.01, 0);
    ck_assert_uint_eq(randk_k(p, 0), 0);
    ck_assert_uint_eq(randk_k(p, 1), 1);
    ck_assert_uint_eq(randk_k(p, 99), 1);
    ck_assert_uint_eq(randk_k(p, 1000), 10);
    params(p, 1.0, 0);
    ck_assert_uint_eq(randk_k(p, 7), 7);
    ck_assert_uint_eq(codec_randk_ops.max_bytes(p, 7), RANDK_HEADER + 28);
}
END_TEST

START_TEST(choose_marks_exactly_k_distinct_in_range)
{
    static const size_t counts[] = {1, 2, 63, 64, 65, 1000, 4097};
    uint64_t *bm = malloc((4097 + 63) / 64 * 8 + 8);
    for (size_t a = 0; a < sizeof counts / sizeof counts[0]; a++) {
        size_t n = counts[a];
        for (size_t k = 1; k <= n; k += 1 + n / 7) {
            for (uint64_t key = 0; key < 20; key++) {
                bm[(n + 63) / 64] = 0xdeadbeefull; /* the word past the bitmap stays as it was */
                randk_choose(key * 7919, n, k, bm);
                REQUIRE(popcount(bm, n) == k, "n=%zu k=%zu: %zu marked", n, k, popcount(bm, n));
                if (n % 64) REQUIRE((bm[n / 64] >> (n % 64)) == 0, "n=%zu: bit beyond count", n);
                REQUIRE(bm[(n + 63) / 64] == 0xdeadbeefull, "n=%zu: wrote past the bitmap", n);
            }
        }
        randk_choose(3, n, n, bm);
        REQUIRE(popcount(bm, n) == n, "k = n keeps all");
    }
    free(bm);
}
END_TEST

/* Every 2-subset of 6 indices is equally likely (Floyd's algorithm is exact): 15 subsets,
 * 60000 draws, each subset expected 4000 times with sd ~ 61; allow 5 sd. */
START_TEST(every_subset_is_equally_likely)
{
    int hits[64] = {0};
    uint64_t bm[1];
    const int draws = 60000;
    for (int t = 0; t < draws; t++) {
        randk_choose((uint64_t)t * 0x9e3779b97f4a7c15ull + 1, 6, 2, bm);
        hits[bm[0]]++;
    }
    int subsets = 0;
    for (int m = 0; m < 64; m++) {
        if (__builtin_popcount((unsigned)m) != 2) {
            ck_assert_int_eq(hits[m], 0);
            continue;
        }
        subsets++;
        double expect = draws / 15.0, sd = sqrt(expect * (1 - 1 / 15.0));
        REQUIRE(fabs(hits[m] - expect) < 5 * sd, "subset %02x drawn %d times, expected %.0f", m,
                hits[m], expect);
    }
    ck_assert_int_eq(subsets, 15);
}
END_TEST

START_TEST(contractive_keeps_values_unbiased_scales_them)
{
    enum { N = 1000 };
    float in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = (float)(i + 1);
    double p[TERSE_MAX_PARAMS];
    unsigned char msg[RANDK_HEADER + 4 * N];
    uint64_t scratch[(N + 63) / 64];
    const codec_ctx_t ctx = {42, 0, N, 1};
    for (int unbiased = 0; unbiased <= 1; unbiased++) {
        params(p, 0.05, unbiased);
        size_t bytes = codec_randk_ops.encode(p, &ctx, in, N, msg, scratch);
        ck_assert_uint_eq(bytes, RANDK_HEADER + 4 * 50);
        memset(out, 0, sizeof out);
        ck_assert_int_eq(codec_randk_ops.decode_add(p, msg, bytes, N, out, scratch), TERSE_OK);
        int kept = 0;
        for (int i = 0; i < N; i++) {
            if (out[i] == 0) continue;
            kept++;
            float want = unbiased ? in[i] * (float)(1000.0 / 50.0) : in[i];
            REQUIRE(out[i] == want, "element %d: %g, want %g", i, out[i], want);
        }
        ck_assert_int_eq(kept, 50);
        /* the same key gives the same indices; another key other ones */
        unsigned char msg2[sizeof msg];
        const codec_ctx_t other = {43, 0, N, 1};
        ck_assert_uint_eq(codec_randk_ops.encode(p, &ctx, in, N, msg2, scratch), bytes);
        ck_assert(memcmp(msg, msg2, bytes) == 0);
        codec_randk_ops.encode(p, &other, in, N, msg2, scratch);
        ck_assert(memcmp(msg + RANDK_HEADER, msg2 + RANDK_HEADER, bytes - RANDK_HEADER) != 0);
    }
}
END_TEST

/* The unbiased form averages to the input: 20000 keys, d/k = 10, each element's estimate
 * has sd = |x| sqrt(d/k - 1) / sqrt(draws) = 0.021 |x|; allow 5 sd. */
START_TEST(unbiased_form_averages_to_the_input)
{
    enum { N = 40, DRAWS = 20000 };
    float in[N], out[N];
    double sum[N] = {0};
    for (int i = 0; i < N; i++) in[i] = (float)(i % 7) - 3.0f + 0.25f;
    double p[TERSE_MAX_PARAMS];
    params(p, 0.1, 1);
    unsigned char msg[RANDK_HEADER + 4 * N];
    uint64_t scratch[1];
    for (int t = 0; t < DRAWS; t++) {
        const codec_ctx_t ctx = {(uint64_t)t * 2654435761u + 5, 0, N, 1};
        size_t bytes = codec_randk_ops.encode(p, &ctx, in, N, msg, scratch);
        memset(out, 0, sizeof out);
        ck_assert_int_eq(codec_randk_ops.decode_add(p, msg, bytes, N, out, scratch), TERSE_OK);
        for (int i = 0; i < N; i++) sum[i] += out[i];
    }
    for (int i = 0; i < N; i++) {
        double mean = sum[i] / DRAWS, sd = fabs(in[i]) * 3.0 / sqrt((double)DRAWS);
        REQUIRE(fabs(mean - in[i]) < 5 * sd, "element %d: mean %g of %g", i, mean, in[i]);
    }
}
END_TEST

START_TEST(decode_rejects_malformed_messages)
{
    enum { N = 100 };
    float in[N], out[N], zero[N];
    for (int i = 0; i < N; i++) in[i] = (float)i;
    memset(out, 0, sizeof out);
    memset(zero, 0, sizeof zero);
    double p[TERSE_MAX_PARAMS];
    params(p, 0.1, 0);
    unsigned char msg[RANDK_HEADER + 4 * N];
    uint64_t scratch[2];
    size_t bytes = codec_randk_ops.encode(p, NULL, in, N, msg, scratch);
    ck_assert_uint_eq(bytes, RANDK_HEADER + 40);
    /* wrong sizes */
    const size_t wrong[] = {0, 4, RANDK_HEADER - 1, RANDK_HEADER, bytes - 4, bytes + 4};
    for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++)
        ck_assert_int_eq(codec_randk_ops.decode_add(p, msg, wrong[w], N, out, scratch), TERSE_ERR_MISMATCH);
    /* a k that disagrees with the parameters */
    uint32_t k = 11;
    memcpy(msg + 8, &k, 4);
    ck_assert_int_eq(codec_randk_ops.decode_add(p, msg, bytes, N, out, scratch), TERSE_ERR_MISMATCH);
    ck_assert(memcmp(out, zero, sizeof out) == 0);
    /* any key decodes in range: a hostile key only picks other indices */
    k = 10;
    memcpy(msg + 8, &k, 4);
    memset(msg, 0xff, 8);
    ck_assert_int_eq(codec_randk_ops.decode_add(p, msg, bytes, N, out, scratch), TERSE_OK);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("randk");
    TCase *t = tcase_create("randk");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, k_follows_density);
    tcase_add_test(t, choose_marks_exactly_k_distinct_in_range);
    tcase_add_test(t, every_subset_is_equally_likely);
    tcase_add_test(t, contractive_keeps_values_unbiased_scales_them);
    tcase_add_test(t, unbiased_form_averages_to_the_input);
    tcase_add_test(t, decode_rejects_malformed_messages);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
