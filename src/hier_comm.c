/* The node grouping of a communicator: every rank's node from MPI's shared-memory split
 * (or TERSE_TEST_NODES), and, when the hierarchical protocol is on, a transport over the
 * node's ranks and one over the node leaders. */
#include <stdlib.h>

#include "internal.h"
#include "transport_mpi.h"

static terse_status_t mpi_fail(const char *what)
{
    return terse_error(TERSE_ERR_BACKEND, "hierarchical set-up: %s failed", what);
}

/* This rank's node label: the lowest rank sharing memory with it, or its TERSE_TEST_NODES
 * entry; -1 when that text is invalid (the message is this rank's last error). */
static int node_label(MPI_Comm comm, int rank, int size, int *labels)
{
    const char *test = getenv("TERSE_TEST_NODES");
    if (test && *test) return hier_parse_labels(test, size, labels) == TERSE_OK ? labels[rank] : -1;
    MPI_Comm node;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return -2;
    int lowest = -2;
    if (MPI_Allreduce(&rank, &lowest, 1, MPI_INT, MPI_MIN, node) != MPI_SUCCESS) lowest = -2;
    MPI_Comm_free(&node);
    return lowest;
}

/* A transport over the ranks of comm that pass `color` (MPI_UNDEFINED: not a member). */
static terse_status_t split_transport(MPI_Comm comm, int color, int key, transport_t *t)
{
    MPI_Comm sub;
    if (MPI_Comm_split(comm, color, key, &sub) != MPI_SUCCESS) return mpi_fail("MPI_Comm_split");
    if (sub == MPI_COMM_NULL) return TERSE_OK;
    terse_status_t s = transport_mpi_create(sub, t);
    MPI_Comm_free(&sub);
    return s;
}

terse_status_t hier_setup(terse_comm_t *c)
{
    hier_comm_t *h = &c->hier;
    const int n = c->tp.size, me = c->tp.rank;
    MPI_Comm comm = transport_mpi_comm(&c->tp);
    int *labels = calloc((size_t)n, sizeof *labels);
    h->node_of = calloc((size_t)n, sizeof *h->node_of);
    h->lead_nodes = calloc((size_t)n, sizeof *h->lead_nodes);
    if (!labels || !h->node_of || !h->lead_nodes) {
        free(labels);
        return terse_error(TERSE_ERR_NOMEM, "hierarchical set-up: out of memory");
    }
    /* every rank contributes its own label, so that all see one layout and reach one verdict */
    int label = node_label(comm, me, n, labels);
    if (MPI_Allgather(&label, 1, MPI_INT, labels, 1, MPI_INT, comm) != MPI_SUCCESS) {
        free(labels);
        return mpi_fail("MPI_Allgather");
    }
    for (int r = 0; r < n; r++) {
        if (labels[r] >= 0) continue;
        terse_status_t s = r == me ? (label == -1 ? TERSE_ERR_ARG : mpi_fail("MPI_Comm_split_type"))
                                   : terse_error(labels[r] == -1 ? TERSE_ERR_ARG : TERSE_ERR_BACKEND,
                                                 "hierarchical set-up: rank %d could not find its node%s",
                                                 r, labels[r] == -1 ? " (its TERSE_TEST_NODES is invalid)" : "");
        free(labels);
        return s;
    }
    terse_status_t s = hier_layout(labels, n, me, &h->lay, h->node_of);
    free(labels);
    TERSE_CHECK(s);
    transport_set_nodes(&c->tp, h->node_of);
    h->on = c->cfg.hier == CONFIG_HIER_ON || (c->cfg.hier == CONFIG_HIER_AUTO && hier_auto_on(&h->lay));
    if (!h->on) return TERSE_OK;

    TERSE_CHECK(split_transport(comm, h->lay.node, me, &h->node));
    TERSE_CHECK(split_transport(comm, h->lay.local_rank == 0 ? 0 : MPI_UNDEFINED, me, &h->lead));
    for (int i = 0; i < h->lay.n_nodes; i++) h->lead_nodes[i] = i;
    if (h->lead.ops) transport_set_nodes(&h->lead, h->lead_nodes);
    return TERSE_OK;
}

void hier_destroy(terse_comm_t *c)
{
    hier_comm_t *h = &c->hier;
    if (h->node.ops) h->node.ops->destroy(&h->node);
    if (h->lead.ops) h->lead.ops->destroy(&h->lead);
    free(h->node_of);
    free(h->lead_nodes);
    h->node_of = h->lead_nodes = NULL;
    h->node.ops = h->lead.ops = NULL;
}
