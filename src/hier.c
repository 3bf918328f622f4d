/* Node layouts: which ranks share a node, who leads it, and when hier=auto groups. Pure
 * functions of the ranks' node labels, so that tests can try any layout without MPI. */
#include <errno.h>
#include <stdlib.h>

#include "hier.h"

terse_status_t hier_layout(const int *label, int n, int rank, hier_layout_t *out, int *node_of)
{
    if (!label || !out || !node_of)
        return terse_error(TERSE_ERR_ARG, "hier_layout: label, out or node_of is NULL");
    if (n < 1) return terse_error(TERSE_ERR_ARG, "hier_layout: %d ranks; want at least 1", n);
    if (rank < 0 || rank >= n)
        return terse_error(TERSE_ERR_ARG, "hier_layout: rank %d is outside 0..%d", rank, n - 1);
    hier_layout_t lay = {0, -1, 0, 0, -1, 0};
    /* O(n^2) over ranks, once per communicator */
    for (int r = 0; r < n; r++) {
        int first = 0, size = 0;
        while (label[first] != label[r]) first++;
        node_of[r] = first == r ? lay.n_nodes++ : node_of[first];
        for (int q = 0; q < n; q++) size += label[q] == label[r];
        if (size > lay.max_local) lay.max_local = size;
        if (label[r] == label[rank]) {
            lay.local_rank += r < rank;
            lay.local_size++;
            if (lay.leader < 0) lay.leader = r;
        }
    }
    lay.node = node_of[rank];
    *out = lay;
    return TERSE_OK;
}

terse_status_t hier_parse_labels(const char *text, int n, int *labels)
{
    if (!text || !labels) return terse_error(TERSE_ERR_ARG, "node labels: text or labels is NULL");
    const char *s = text;
    for (int r = 0; r < n; r++) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 1000000)
            return terse_error(TERSE_ERR_ARG,
                               "TERSE_TEST_NODES='%s': label %d is not an integer in 0..1000000; "
                               "want %d comma-separated labels, one per rank", text, r, n);
        labels[r] = (int)v;
        s = end;
        if (r + 1 < n) {
            if (*s != ',')
                return terse_error(TERSE_ERR_ARG,
                                   "TERSE_TEST_NODES='%s' names %d ranks; this communicator has %d",
                                   text, r + 1, n);
            s++;
        }
    }
    if (*s != '\0')
        return terse_error(TERSE_ERR_ARG, "TERSE_TEST_NODES='%s' names more than the %d ranks of this "
                           "communicator", text, n);
    return TERSE_OK;
}

int hier_auto_on(const hier_layout_t *lay) { return lay->n_nodes > 1 && lay->max_local > 1; }
