/* Unit tests for status strings, the thread-local last-error message (src/error.c) and the
 * runtime version. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "terse.h"

static const struct {
    terse_status_t s;
    const char *name;
} statuses[] = {
    {TERSE_OK, "TERSE_OK"},
    {TERSE_ERR_ARG, "TERSE_ERR_ARG"},
    {TERSE_ERR_NOMEM, "TERSE_ERR_NOMEM"},
    {TERSE_ERR_BACKEND, "TERSE_ERR_BACKEND"},
    {TERSE_ERR_MISMATCH, "TERSE_ERR_MISMATCH"},
    {TERSE_ERR_UNSUPPORTED, "TERSE_ERR_UNSUPPORTED"},
    {TERSE_ERR_STATE, "TERSE_ERR_STATE"},
    {TERSE_ERR_NONFINITE, "TERSE_ERR_NONFINITE"},
    {TERSE_ERR_IO, "TERSE_ERR_IO"},
};
#define N_STATUSES (sizeof statuses / sizeof statuses[0])

START_TEST(status_values_are_zero_for_ok_and_negative_for_errors)
{
    ck_assert_int_eq(TERSE_OK, 0);
    for (size_t i = 1; i < N_STATUSES; i++) ck_assert_int_eq(statuses[i].s, -(int)i);
}
END_TEST

START_TEST(status_string_starts_with_the_enum_name)
{
    for (size_t i = 0; i < N_STATUSES; i++) {
        const char *str = terse_status_string(statuses[i].s);
        ck_assert_ptr_nonnull(str);
        size_t len = strlen(statuses[i].name);
        ck_assert_msg(strncmp(str, statuses[i].name, len) == 0, "\"%s\" does not start with %s",
                      str, statuses[i].name);
        /* the name is whole: "TERSE_ERR_ARG" must not be the start of a longer identifier */
        ck_assert_msg(str[len] == '\0' || str[len] == ':', "\"%s\": %s is not followed by ':'",
                      str, statuses[i].name);
        ck_assert_msg(strlen(str) > len + 2, "\"%s\" says nothing after the name", str);
    }
}
END_TEST

START_TEST(status_strings_are_distinct)
{
    for (size_t i = 0; i < N_STATUSES; i++)
        for (size_t j = i + 1; j < N_STATUSES; j++)
            ck_assert_str_ne(terse_status_string(statuses[i].s),
                             terse_status_string(statuses[j].s));
}
END_TEST

START_TEST(status_string_of_an_unknown_value_says_so)
{
    const int unknown[] = {1, 2, -9, -100, 12345, -2147483647 - 1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        ck_assert_str_eq(terse_status_string((terse_status_t)unknown[i]), "unknown terse status");
}
END_TEST

START_TEST(last_error_is_empty_after_clear)
{
    terse_error(TERSE_ERR_ARG, "something");
    terse_error_clear();
    ck_assert_ptr_nonnull(terse_last_error());
    ck_assert_str_eq(terse_last_error(), "");
}
END_TEST

START_TEST(last_error_holds_the_formatted_message_and_returns_the_status)
{
    ck_assert_int_eq(terse_error(TERSE_ERR_ARG, "layer id %d out of range [0, %d) in %s", 7, 3,
                                 "allreduce"),
                     TERSE_ERR_ARG);
    ck_assert_str_eq(terse_last_error(), "layer id 7 out of range [0, 3) in allreduce");
    ck_assert_int_eq(terse_error(TERSE_ERR_IO, "%s", "second"), TERSE_ERR_IO);
    ck_assert_str_eq(terse_last_error(), "second"); /* the newest message replaces the last */
}
END_TEST

START_TEST(last_error_may_quote_the_previous_message)
{
    terse_error(TERSE_ERR_ARG, "density=2 is out of range (0, 1]");
    terse_error(TERSE_ERR_ARG, "layer configuration: %s", terse_last_error());
    ck_assert_str_eq(terse_last_error(), "layer configuration: density=2 is out of range (0, 1]");
}
END_TEST

START_TEST(last_error_truncates_a_long_message)
{
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    terse_error(TERSE_ERR_ARG, "%s", big);
    size_t len = strlen(terse_last_error());
    ck_assert_uint_gt(len, 100);
    ck_assert_uint_lt(len, sizeof big - 1);
    ck_assert_int_eq(strspn(terse_last_error(), "a"), len);
}
END_TEST

typedef struct {
    char seen_at_start[64];
    char seen_after_set[64];
} thread_view_t;

static void *other_thread(void *arg)
{
    thread_view_t *v = arg;
    snprintf(v->seen_at_start, sizeof v->seen_at_start, "%s", terse_last_error());
    terse_error(TERSE_ERR_STATE, "set in the other thread");
    snprintf(v->seen_after_set, sizeof v->seen_after_set, "%s", terse_last_error());
    return NULL;
}

START_TEST(last_error_is_per_thread)
{
    terse_error(TERSE_ERR_ARG, "set in the main thread");
    thread_view_t v;
    memset(&v, 'x', sizeof v);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread, &v), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_str_eq(v.seen_at_start, "");
    ck_assert_str_eq(v.seen_after_set, "set in the other thread");
    ck_assert_str_eq(terse_last_error(), "set in the main thread");
}
END_TEST

START_TEST(version_matches_the_header)
{
    ck_assert_uint_eq(terse_version(), TERSE_VERSION_NUMBER);
    ck_assert_uint_eq(TERSE_VERSION_NUMBER, TERSE_VERSION_MAJOR * 10000 +
                                                TERSE_VERSION_MINOR * 100 + TERSE_VERSION_PATCH);
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc_status = tcase_create("status");
    tcase_add_test(tc_status, status_values_are_zero_for_ok_and_negative_for_errors);
    tcase_add_test(tc_status, status_string_starts_with_the_enum_name);
    tcase_add_test(tc_status, status_strings_are_distinct);
    tcase_add_test(tc_status, status_string_of_an_unknown_value_says_so);
    tcase_add_test(tc_status, version_matches_the_header);
    suite_add_tcase(s, tc_status);

    TCase *tc_error = tcase_create("last_error");
    tcase_add_test(tc_error, last_error_is_empty_after_clear);
    tcase_add_test(tc_error, last_error_holds_the_formatted_message_and_returns_the_status);
    tcase_add_test(tc_error, last_error_may_quote_the_previous_message);
    tcase_add_test(tc_error, last_error_truncates_a_long_message);
    tcase_add_test(tc_error, last_error_is_per_thread);
    suite_add_tcase(s, tc_error);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(status_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
