/* The thread-safety rule of terse.h under mpirun (MPI_THREAD_MULTIPLE): different
 * communicators used from different threads at once give the results of a serial run, bit
 * for bit; a second thread entering a communicator that is inside a call gets
 * TERSE_ERR_STATE naming that call, and the call in progress completes normally. */
#include <pthread.h>
#include <stdatomic.h>

#include "mpitest.h"
#include "terse.h"
#include "terse_mpi.h"

enum { N = 3000, CALLS = 12 };
static int rank_, nranks_;

static void grad(float *g, int call, int salt)
{
    for (int i = 0; i < N; i++)
        g[i] = (float)(((unsigned)i * 2654435761u + (unsigned)call * 97u + (unsigned)rank_ * 31u +
                        (unsigned)salt) % 1000u) / 500.0f - 1.0f;
}

typedef struct {
    terse_comm_t *c;
    int salt;
    uint64_t hash;    /* of every call's result, in order */
    int failures;
} job_t;

static void *run_job(void *arg)
{
    job_t *j = arg;
    float g[N];
    j->hash = 1469598103934665603ull;
    for (int call = 0; call < CALLS; call++) {
        grad(g, call, j->salt);
        if (terse_allreduce(j->c, 0, g) != TERSE_OK) j->failures++;
        j->hash ^= mpitest_hash(g, sizeof g) + (uint64_t)call;
        terse_step_end(j->c);
    }
    return NULL;
}

static terse_comm_t *make(const char *cfg)
{
    terse_comm_t *c = NULL;
    int id = -1;
    EXPECT(terse_comm_create_mpi(MPI_COMM_WORLD, cfg, &c) == TERSE_OK, "%s", terse_last_error());
    EXPECT(terse_layer_add(c, "g", N, 1, NULL, &id) == TERSE_OK && id == 0, "%s", terse_last_error());
    return c;
}

/* Two communicators, each driven by its own thread at the same time, against the same
 * calls made one communicator after the other. */
static void concurrent_communicators(void)
{
    const char *cfg[2] = {"compressor=topk:density=0.05; feedback=ef", "compressor=qsgd; feedback=ef21"};
    job_t par[2], ser[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) par[k] = (job_t){make(cfg[k]), k * 7, 0, 0};
    for (int k = 0; k < 2; k++) EXPECT(pthread_create(&th[k], NULL, run_job, &par[k]) == 0, "pthread_create");
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        ser[k] = (job_t){make(cfg[k]), k * 7, 0, 0};
        run_job(&ser[k]);
        EXPECT(par[k].failures == 0 && ser[k].failures == 0, "%s: %d and %d failed calls", cfg[k],
               par[k].failures, ser[k].failures);
        EXPECT(par[k].hash == ser[k].hash, "%s: concurrent results differ from serial ones", cfg[k]);
        EXPECT(mpitest_same_on_all(par[k].hash), "%s: results differ between ranks", cfg[k]);
        terse_comm_destroy(par[k].c);
        terse_comm_destroy(ser[k].c);
    }
}

typedef struct {
    terse_comm_t *c;
    float g[N];
    terse_status_t s;
    atomic_int returned; /* one_call is past its allreduce, whatever it returned */
} call_t;

/* The main thread finds this call inside by polling with terse_layer_stats, and each poll
 * enters the communicator for an instant too: when this call comes in during a poll, it is
 * the one refused, which is the rule under test seen from the other side. It then tries
 * again; a refused call changes nothing (checked at the end of same_communicator). Once in,
 * it holds the communicator until the other ranks join, and they join only after the main
 * thread has seen it inside, so the main thread's later calls all meet it there. */
static void *one_call(void *arg)
{
    call_t *a = arg;
    while ((a->s = terse_allreduce(a->c, 0, a->g)) == TERSE_ERR_STATE &&
           strstr(terse_last_error(), "inside terse_layer_stats"))
        sched_yield();
    atomic_store(&a->returned, 1);
    return NULL;
}

/* Rank 0 starts an allreduce in a thread; it cannot finish until the other ranks join,
 * and they wait for rank 0's go. Meanwhile rank 0's main thread calls into the same
 * communicator. */
static void same_communicator(void)
{
    if (nranks_ < 2) return; /* with one rank a call never waits for anybody */
    terse_comm_t *c = make("compressor=topk:density=0.1; feedback=ef");
    call_t a = {.c = c};
    grad(a.g, 0, 3);
    float expect[N];
    if (rank_ == 0) {
        pthread_t th;
        EXPECT(pthread_create(&th, NULL, one_call, &a) == 0, "pthread_create");
        terse_stats_t st;
        terse_status_t s;
        /* until the thread is in; polling alone would spin for ever if its call returned
         * without waiting for the other ranks, so watch for that too */
        while ((s = terse_layer_stats(c, 0, &st)) == TERSE_OK && !atomic_load(&a.returned)) sched_yield();
        if (s == TERSE_OK) {
            pthread_join(th, NULL);
            EXPECT(0, "the call returned before the other ranks joined: %s", terse_status_string(a.s));
            MPI_Abort(MPI_COMM_WORLD, 1); /* the other ranks would wait for rank 0's call for ever */
        }
        EXPECT(s == TERSE_ERR_STATE && strstr(terse_last_error(), "inside terse_allreduce"),
               "stats during a call: %d %s", s, terse_last_error());
        float other[N] = {0};
        EXPECT(terse_allreduce(c, 0, other) == TERSE_ERR_STATE, "a second allreduce: %s", terse_last_error());
        EXPECT(terse_step_end(c) == TERSE_ERR_STATE, "step_end during a call");
        EXPECT(terse_comm_destroy(c) == TERSE_ERR_STATE && strstr(terse_last_error(), "in use"),
               "destroy during a call: %s", terse_last_error());
        int r = -1, n = -1;
        EXPECT(terse_comm_rank(c, &r, &n) == TERSE_OK && r == 0 && n == nranks_,
               "rank/size read what is fixed at creation, from any thread");
        for (int p = 1; p < nranks_; p++) MPI_Send(NULL, 0, MPI_BYTE, p, 0, MPI_COMM_WORLD);
        pthread_join(th, NULL);
        EXPECT(a.s == TERSE_OK, "the call in progress completes: %s", terse_status_string(a.s));
        EXPECT(terse_layer_stats(c, 0, &st) == TERSE_OK && st.calls == 1, "usable again after the call");
    } else {
        MPI_Recv(NULL, 0, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        a.s = terse_allreduce(c, 0, a.g);
        EXPECT(a.s == TERSE_OK, "%s", terse_last_error());
    }
    /* the refused calls changed nothing: the result equals a fresh communicator's */
    terse_comm_t *fresh = make("compressor=topk:density=0.1; feedback=ef");
    grad(expect, 0, 3);
    EXPECT(terse_allreduce(fresh, 0, expect) == TERSE_OK, "%s", terse_last_error());
    EXPECT(memcmp(expect, a.g, sizeof expect) == 0, "the result is as if no other call was tried");
    terse_comm_destroy(fresh);
    terse_comm_destroy(c);
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    if (provided < MPI_THREAD_MULTIPLE) {
        if (rank_ == 0) printf("test_threads: skipped (MPI provides thread level %d, not MULTIPLE)\n", provided);
        MPI_Finalize();
        return 77;
    }
    concurrent_communicators();
    same_communicator();
    int rc = mpitest_finish("test_threads");
    MPI_Finalize();
    return rc;
}
