/* The worker pool (src/pool.c): every element in exactly one range, ranges in order, any
 * thread count; bind=auto binds each worker to the chosen cores (read back by hwloc from
 * inside the worker); bind=none binds nothing; a bad thread count is refused. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

typedef struct {
    unsigned char *hits;
    size_t first[64], last[64];
    int used[64];
} cover_t;

static void mark(void *v, int part, size_t b, size_t e)
{
    cover_t *c = v;
    for (size_t i = b; i < e; i++) c->hits[i]++;
    c->first[part] = b;
    c->last[part] = e;
    c->used[part] = 1;
}

START_TEST(every_element_once_in_ordered_ranges)
{
    static const size_t sizes[] = {0, 1, 15, 16, 17, 1000, 65536, 100003, 1u << 20};
    for (int threads = 1; threads <= 8; threads++) {
        pool_t *p = NULL;
        ck_assert_int_eq(pool_create(threads, 0, &p), TERSE_OK);
        ck_assert_int_eq(pool_threads(p), threads);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            for (size_t grain = 1; grain <= 4096; grain *= 64) {
                size_t n = sizes[si];
                cover_t c;
                memset(&c, 0, sizeof c);
                c.hits = calloc(n + 1, 1);
                pool_for(p, n, grain, mark, &c);
                size_t bad = n;
                for (size_t i = 0; i < n && bad == n; i++)
                    if (c.hits[i] != 1) bad = i;
                ck_assert_msg(bad == n, "threads %d n %zu grain %zu: element %zu hit %d times", threads, n,
                              grain, bad, bad < n ? c.hits[bad] : 0);
                /* parts are contiguous and in order: part i ends where part i+1 begins */
                int parts = 0;
                while (parts < 64 && c.used[parts]) parts++;
                ck_assert_int_ge(parts, 1);
                ck_assert_int_le(parts, threads);
                ck_assert_uint_eq(c.first[0], 0);
                ck_assert_uint_eq(c.last[parts - 1], n);
                for (int i = 0; i + 1 < parts; i++) ck_assert_uint_eq(c.last[i], c.first[i + 1]);
                if (n / grain < 2) ck_assert_int_eq(parts, 1); /* small jobs stay on the caller */
                free(c.hits);
            }
        }
        pool_destroy(p);
    }
}
END_TEST

START_TEST(null_pool_runs_on_the_caller)
{
    cover_t c;
    memset(&c, 0, sizeof c);
    c.hits = calloc(100, 1);
    pool_for(NULL, 100, 1, mark, &c);
    ck_assert_int_eq(c.used[0], 1);
    ck_assert_int_eq(c.used[1], 0);
    ck_assert_uint_eq(c.last[0], 100);
    ck_assert_int_eq(pool_threads(NULL), 1);
    ck_assert_str_eq(pool_binding(NULL), "");
    free(c.hits);
}
END_TEST

START_TEST(bind_auto_binds_each_worker_to_the_chosen_cores)
{
    pool_t *p = NULL;
    ck_assert_int_eq(pool_create(3, 1, &p), TERSE_OK);
    const char *set = pool_binding(p);
    ck_assert_msg(set[0] != '\0', "bind=auto chose no cores");
    for (int i = 1; i < 3; i++)
        ck_assert_msg(strcmp(pool_worker_binding(p, i), set) == 0, "worker %d is bound to '%s', want '%s'", i,
                      pool_worker_binding(p, i), set);
    ck_assert_str_eq(pool_worker_binding(p, 0), ""); /* the caller's own thread is not touched */
    ck_assert_str_eq(pool_worker_binding(p, 3), "");
    pool_destroy(p);
}
END_TEST

START_TEST(bind_none_binds_nothing)
{
    pool_t *p = NULL;
    ck_assert_int_eq(pool_create(2, 0, &p), TERSE_OK);
    ck_assert_str_eq(pool_binding(p), "");
    ck_assert_str_eq(pool_worker_binding(p, 1), "");
    pool_destroy(p);
    pool_destroy(NULL);
}
END_TEST

START_TEST(bad_thread_count_is_refused)
{
    pool_t *p = NULL;
    ck_assert_int_eq(pool_create(0, 0, &p), TERSE_ERR_ARG);
    ck_assert_ptr_null(p);
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "threads=0"));
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_element_once_in_ordered_ranges);
    tcase_add_test(tc, null_pool_runs_on_the_caller);
    tcase_add_test(tc, bind_auto_binds_each_worker_to_the_chosen_cores);
    tcase_add_test(tc, bind_none_binds_nothing);
    tcase_add_test(tc, bad_thread_count_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pool_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
