/* The worker pool: threads - 1 pthreads that wait for a job (a generation counter under a
 * mutex), run their range and count themselves done. The caller runs range 0 and waits.
 * One job at a time: the engine calls pool_for from the thread that owns the communicator.
 * Binding uses hwloc (never sched_setaffinity directly). */
#include <hwloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool.h"
#include "topology.h"

#define BIND_TEXT 128

typedef struct {
    pool_t *pool;
    int index;
    pthread_t thread;
    char bound[BIND_TEXT];  /* the binding hwloc reported from inside the thread */
} worker_t;

struct pool {
    int threads;
    worker_t *workers;      /* threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long generation;
    int pending, stop;
    int ready;              /* workers that have started (and read their binding back) */
    /* the job */
    pool_fn fn;
    void *arg;
    size_t n;
    int parts;
    /* binding */
    hwloc_topology_t topo;
    hwloc_bitmap_t set;     /* NULL: not bound */
    char binding[BIND_TEXT];
};

static void range_of(const pool_t *p, int part, size_t *b, size_t *e)
{
    /* ranges start on 16-element boundaries so that each thread's loop vectorises alike */
    size_t per = (p->n / (size_t)p->parts + 15) & ~(size_t)15;
    *b = (size_t)part * per < p->n ? (size_t)part * per : p->n;
    *e = *b + per < p->n && part + 1 < p->parts ? *b + per : p->n;
}

static void *worker_main(void *v)
{
    worker_t *w = v;
    pool_t *p = w->pool;
    unsigned long seen = 0;
    /* the creator holds the lock until it has bound this thread */
    pthread_mutex_lock(&p->mu);
    if (p->set) {
        hwloc_bitmap_t now = hwloc_bitmap_alloc();
        if (now && hwloc_get_cpubind(p->topo, now, HWLOC_CPUBIND_THREAD) == 0)
            hwloc_bitmap_list_snprintf(w->bound, sizeof w->bound, now);
        hwloc_bitmap_free(now);
    }
    p->ready++;
    pthread_cond_broadcast(&p->done);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        int part = w->index;
        pthread_mutex_unlock(&p->mu);
        if (part < p->parts) {
            size_t b, e;
            range_of(p, part, &b, &e);
            p->fn(p->arg, part, b, e);
        }
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The cores to bind to: the first NIC's, within this process's; else this process's. */
static terse_status_t choose_set(pool_t *p)
{
    if (hwloc_topology_init(&p->topo) != 0) return terse_error(TERSE_ERR_BACKEND, "bind=auto: hwloc_topology_init failed");
    hwloc_topology_set_io_types_filter(p->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (hwloc_topology_load(p->topo) != 0) return terse_error(TERSE_ERR_BACKEND, "bind=auto: hwloc_topology_load failed");
    p->set = hwloc_bitmap_alloc();
    hwloc_bitmap_t mine = hwloc_bitmap_alloc();
    if (!p->set || !mine) {
        hwloc_bitmap_free(mine);
        return terse_error(TERSE_ERR_NOMEM, "bind=auto: out of memory");
    }
    if (hwloc_get_cpubind(p->topo, mine, HWLOC_CPUBIND_PROCESS) != 0)
        hwloc_bitmap_copy(mine, hwloc_topology_get_allowed_cpuset(p->topo));
    const char *why = "this process's cores (hwloc reports no NIC with a locality)";
    topology_summary_t s;
    if (topology_summary(&s) == TERSE_OK && s.nics > 0 && s.nic[0].cpuset[0]) {
        hwloc_bitmap_t near = hwloc_bitmap_alloc();
        if (near && hwloc_bitmap_list_sscanf(near, s.nic[0].cpuset) == 0) {
            hwloc_bitmap_and(p->set, near, mine);
            why = "the cores nearest the NIC";
        }
        hwloc_bitmap_free(near);
    }
    if (hwloc_bitmap_iszero(p->set)) hwloc_bitmap_copy(p->set, mine);
    hwloc_bitmap_free(mine);
    hwloc_bitmap_list_snprintf(p->binding, sizeof p->binding, p->set);
    log_print(LOG_INFO, -1, "bind=auto: worker threads on cores %s, %s", p->binding, why);
    return TERSE_OK;
}

terse_status_t pool_create(int threads, int bind, pool_t **out)
{
    if (threads < 1) return terse_error(TERSE_ERR_ARG, "threads=%d: want at least 1", threads);
    pool_t *p = calloc(1, sizeof *p);
    if (!p) return terse_error(TERSE_ERR_NOMEM, "worker threads: out of memory");
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    terse_status_t s = TERSE_OK;
    if (bind && threads > 1) s = choose_set(p);
    if (s == TERSE_OK && threads > 1) {
        p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
        if (!p->workers) s = terse_error(TERSE_ERR_NOMEM, "worker threads: out of memory");
    }
    int started = 0;
    for (int i = 1; s == TERSE_OK && i < threads; i++) {
        worker_t *w = &p->workers[i - 1];
        w->pool = p;
        w->index = i;
        /* bound under the lock, which the worker takes before it reads its binding back */
        pthread_mutex_lock(&p->mu);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc == 0 && p->set &&
            hwloc_set_thread_cpubind(p->topo, w->thread, p->set, HWLOC_CPUBIND_THREAD) != 0)
            s = terse_error(TERSE_ERR_BACKEND, "bind=auto: hwloc could not bind a worker thread to cores %s "
                            "(use bind=none)", p->binding);
        pthread_mutex_unlock(&p->mu);
        if (rc != 0) {
            s = terse_error(TERSE_ERR_BACKEND, "threads=%d: worker thread %d did not start", threads, i);
            break;
        }
        started = i;
    }
    if (s != TERSE_OK) {
        p->threads = started + 1;
        pool_destroy(p);
        return s;
    }
    /* every worker is up and its binding known before the pool is used */
    pthread_mutex_lock(&p->mu);
    while (p->ready < threads - 1) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    *out = p;
    return TERSE_OK;
}

void pool_destroy(pool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads && p->workers; i++) pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    if (p->set) hwloc_bitmap_free(p->set);
    if (p->topo) hwloc_topology_destroy(p->topo);
    free(p);
}

void pool_for(pool_t *p, size_t n, size_t grain, pool_fn fn, void *arg)
{
    size_t want = grain ? n / grain : n;
    if (!p || p->threads == 1 || want < 2) {
        fn(arg, 0, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->parts = want < (size_t)p->threads ? (int)want : p->threads;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    size_t b, e;
    range_of(p, 0, &b, &e);
    fn(arg, 0, b, e);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int pool_threads(const pool_t *p) { return p ? p->threads : 1; }

const char *pool_binding(const pool_t *p) { return p && p->set ? p->binding : ""; }

const char *pool_worker_binding(const pool_t *p, int i)
{
    return p && i >= 1 && i < p->threads ? p->workers[i - 1].bound : "";
}
