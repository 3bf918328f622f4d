/* Node layouts (src/hier.c) without MPI: synthetic layouts with 1, 2 and 3 ranks per node,
 * uneven and interleaved ones, the TERSE_TEST_NODES parser and hier=auto's rule. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hier.h"

/* Checks every rank's view of one layout against the expected node numbers, leaders and
 * local ranks. */
static void check_layout(const int *label, int n, const int *want_node, int want_nodes, int want_max)
{
    for (int rank = 0; rank < n; rank++) {
        hier_layout_t lay;
        int node_of[16];
        ck_assert_int_eq(hier_layout(label, n, rank, &lay, node_of), TERSE_OK);
        ck_assert_int_eq(lay.n_nodes, want_nodes);
        ck_assert_int_eq(lay.max_local, want_max);
        for (int r = 0; r < n; r++) ck_assert_int_eq(node_of[r], want_node[r]);
        ck_assert_int_eq(lay.node, want_node[rank]);
        /* the leader is the node's lowest rank; local ranks count the node's ranks below */
        int leader = -1, local = 0, size = 0;
        for (int r = 0; r < n; r++) {
            if (want_node[r] != want_node[rank]) continue;
            if (leader < 0) leader = r;
            local += r < rank;
            size++;
        }
        ck_assert_int_eq(lay.leader, leader);
        ck_assert_int_eq(lay.local_rank, local);
        ck_assert_int_eq(lay.local_size, size);
    }
}

START_TEST(one_rank_per_node)
{
    const int label[4] = {7, 3, 9, 1}, node[4] = {0, 1, 2, 3};
    check_layout(label, 4, node, 4, 1);
    hier_layout_t lay;
    int node_of[4];
    hier_layout(label, 4, 2, &lay, node_of);
    ck_assert(!hier_auto_on(&lay)); /* nothing to reduce inside a node */
}
END_TEST

START_TEST(two_ranks_per_node_by_slot_and_interleaved)
{
    const int slot[8] = {0, 0, 1, 1, 2, 2, 3, 3}, slot_node[8] = {0, 0, 1, 1, 2, 2, 3, 3};
    check_layout(slot, 8, slot_node, 4, 2);
    /* round-robin mapping: ranks 0, 2, 4, 6 share a node */
    const int rr[8] = {5, 6, 5, 6, 5, 6, 5, 6}, rr_node[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    check_layout(rr, 8, rr_node, 2, 4);
    hier_layout_t lay;
    int node_of[8];
    hier_layout(slot, 8, 5, &lay, node_of);
    ck_assert(hier_auto_on(&lay));
    ck_assert_int_eq(lay.leader, 4);
    ck_assert_int_eq(lay.local_rank, 1);
}
END_TEST

START_TEST(three_ranks_per_node)
{
    const int label[9] = {2, 2, 2, 0, 0, 0, 1, 1, 1}, node[9] = {0, 0, 0, 1, 1, 1, 2, 2, 2};
    check_layout(label, 9, node, 3, 3);
}
END_TEST

START_TEST(uneven_nodes)
{
    const int label[6] = {4, 4, 4, 8, 9, 9}, node[6] = {0, 0, 0, 1, 2, 2};
    check_layout(label, 6, node, 3, 3);
    const int late[5] = {1, 0, 0, 0, 0}, late_node[5] = {0, 1, 1, 1, 1};
    check_layout(late, 5, late_node, 2, 4);
}
END_TEST

START_TEST(one_node_and_one_rank)
{
    const int all[4] = {3, 3, 3, 3}, all_node[4] = {0, 0, 0, 0};
    check_layout(all, 4, all_node, 1, 4);
    hier_layout_t lay;
    int node_of[4];
    hier_layout(all, 4, 0, &lay, node_of);
    ck_assert(!hier_auto_on(&lay)); /* one node: no network to spare */
    const int one[1] = {0}, one_node[1] = {0};
    check_layout(one, 1, one_node, 1, 1);
}
END_TEST

START_TEST(layout_rejects_bad_arguments)
{
    const int label[2] = {0, 1};
    hier_layout_t lay;
    int node_of[2];
    ck_assert_int_eq(hier_layout(NULL, 2, 0, &lay, node_of), TERSE_ERR_ARG);
    ck_assert_int_eq(hier_layout(label, 2, 0, NULL, node_of), TERSE_ERR_ARG);
    ck_assert_int_eq(hier_layout(label, 2, 0, &lay, NULL), TERSE_ERR_ARG);
    ck_assert_int_eq(hier_layout(label, 0, 0, &lay, node_of), TERSE_ERR_ARG);
    ck_assert_int_eq(hier_layout(label, 2, 2, &lay, node_of), TERSE_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(terse_last_error(), "rank 2"));
    ck_assert_int_eq(hier_layout(label, 2, -1, &lay, node_of), TERSE_ERR_ARG);
}
END_TEST

START_TEST(labels_parse_and_name_what_is_wrong)
{
    int l[4];
    ck_assert_int_eq(hier_parse_labels("0,0,1,1", 4, l), TERSE_OK);
    ck_assert_int_eq(l[0], 0);
    ck_assert_int_eq(l[3], 1);
    ck_assert_int_eq(hier_parse_labels("12", 1, l), TERSE_OK);
    ck_assert_int_eq(l[0], 12);
    static const struct { const char *text; const char *says; } bad[] = {
        {"0,0,1", "names 3 ranks; this communicator has 4"},
        {"0,0,1,1,2", "more than the 4 ranks"},
        {"0,x,1,1", "label 1 is not an integer"},
        {"0,-3,1,1", "label 1 is not an integer"},
        {"", "label 0 is not an integer"},
        {"0;0;1;1", "names 1 ranks"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(hier_parse_labels(bad[i].text, 4, l), TERSE_ERR_ARG);
        ck_assert_msg(strstr(terse_last_error(), bad[i].says) != NULL, "'%s': message '%s'", bad[i].text,
                      terse_last_error());
    }
    ck_assert_int_eq(hier_parse_labels(NULL, 4, l), TERSE_ERR_ARG);
}
END_TEST

static Suite *hier_suite(void)
{
    Suite *s = suite_create("hier");
    TCase *tc = tcase_create("layout");
    tcase_add_test(tc, one_rank_per_node);
    tcase_add_test(tc, two_ranks_per_node_by_slot_and_interleaved);
    tcase_add_test(tc, three_ranks_per_node);
    tcase_add_test(tc, uneven_nodes);
    tcase_add_test(tc, one_node_and_one_rank);
    tcase_add_test(tc, layout_rejects_bad_arguments);
    tcase_add_test(tc, labels_parse_and_name_what_is_wrong);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hier_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
