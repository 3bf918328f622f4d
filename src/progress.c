/* The progress thread and the requests of terse_iallreduce (progress.h).
 *
 *   caller thread                    progress thread
 *   terse_iallreduce(L1) -> queue    pops L1, runs the allreduce, marks it done
 *   terse_iallreduce(L2) -> queue    pops L2, ...
 *   ... computes ...
 *   terse_wait(r1): until done(L1), its status and message, request back to the free list
 *
 * One mutex guards the queue, the free list and every request's `done`; two condition
 * variables wake the thread (work queued) and the waiters (a request finished). The state
 * lives apart from the communicator and counts the requests handed out and not yet waited
 * for: terse_comm_destroy stops the thread, and whichever of destroy and the last terse_wait
 * comes second frees it, so a request can be waited for after its communicator is gone. */
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"
#include "progress.h"

#define REQUEST_MAGIC 0x7465727365726571ull /* "terserq" */

struct terse_request {
    uint64_t magic;          /* REQUEST_MAGIC while handed out, 0 on the free list       */
    progress_t *owner;
    terse_comm_t *comm;
    int layer;
    float *buf;
    int done;
    terse_status_t status;
    char message[512];       /* terse_last_error() of a failed call                        */
    terse_request_t *next;   /* in the queue or on the free list                           */
};

struct progress {
    pthread_mutex_t mu;
    pthread_cond_t work, finished;
    pthread_t thread;
    int running;             /* the thread was started                                     */
    int stopping;            /* destroy asked the thread to end                            */
    int closed;              /* the communicator is gone                                   */
    int busy;                /* the thread is running a request now                        */
    terse_request_t *head, *tail, *free_list;
    size_t outstanding;      /* handed out, not yet waited for                             */
    terse_status_t (*allreduce)(terse_comm_t *, int, float *);
};

static void run_one(progress_t *p, terse_request_t *r)
{
    terse_error_clear();
    const terse_status_t s = p->allreduce(r->comm, r->layer, r->buf);
    r->status = s;
    if (s != TERSE_OK) snprintf(r->message, sizeof r->message, "%s", terse_last_error());
}

static void *progress_main(void *arg)
{
    progress_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->work, &p->mu);
        if (!p->head) break; /* stopping with an empty queue */
        terse_request_t *r = p->head;
        p->head = r->next;
        if (!p->head) p->tail = NULL;
        p->busy = 1;
        pthread_mutex_unlock(&p->mu);
        run_one(p, r);
        pthread_mutex_lock(&p->mu);
        p->busy = 0;
        r->done = 1;
        pthread_cond_broadcast(&p->finished);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void progress_free(progress_t *p)
{
    while (p->free_list) {
        terse_request_t *r = p->free_list;
        p->free_list = r->next;
        free(r);
    }
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->finished);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static terse_status_t progress_create(terse_comm_t *c, terse_status_t (*allreduce)(terse_comm_t *, int, float *))
{
    progress_t *p = calloc(1, sizeof *p);
    if (!p) return terse_error(TERSE_ERR_NOMEM, "terse_iallreduce: out of memory for the progress thread");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->finished, NULL);
    p->allreduce = allreduce;
    c->progress = p;
    return TERSE_OK;
}

/* A request from the free list, or a new one (the first calls only). */
static terse_request_t *request_take(progress_t *p)
{
    pthread_mutex_lock(&p->mu);
    terse_request_t *r = p->free_list;
    if (r) p->free_list = r->next;
    pthread_mutex_unlock(&p->mu);
    if (!r && !(r = malloc(sizeof *r))) return NULL;
    memset(r, 0, sizeof *r);
    r->magic = REQUEST_MAGIC;
    r->owner = p;
    return r;
}

static int thread_level_allows_progress(void)
{
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    return level >= MPI_THREAD_SERIALIZED;
}

terse_status_t progress_start(terse_comm_t *c, int layer, float *buf,
                              terse_status_t (*allreduce)(terse_comm_t *, int, float *),
                              terse_request_t **req)
{
    if (!c->progress) TERSE_CHECK(progress_create(c, allreduce));
    progress_t *p = c->progress;
    terse_request_t *r = request_take(p);
    if (!r) return terse_error(TERSE_ERR_NOMEM, "terse_iallreduce: out of memory for a request");
    r->comm = c;
    r->layer = layer;
    r->buf = buf;

    const int inline_call = c->over_mpi && !thread_level_allows_progress();
    if (inline_call) {
        /* only this thread may call MPI: run the call now, no overlap */
        run_one(p, r);
        r->done = 1;
    }
    pthread_mutex_lock(&p->mu);
    if (!inline_call) {
        if (!p->running && pthread_create(&p->thread, NULL, progress_main, p) != 0) {
            r->magic = 0;
            r->next = p->free_list;
            p->free_list = r;
            pthread_mutex_unlock(&p->mu);
            return terse_error(TERSE_ERR_BACKEND, "terse_iallreduce: cannot start the progress thread");
        }
        p->running = 1;
        if (p->tail) p->tail->next = r;
        else p->head = r;
        p->tail = r;
        pthread_cond_signal(&p->work);
    }
    p->outstanding++;
    pthread_mutex_unlock(&p->mu);
    *req = r;
    return TERSE_OK;
}

void progress_drain(terse_comm_t *c)
{
    progress_t *p = c->progress;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    while (p->head || p->busy) pthread_cond_wait(&p->finished, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void progress_destroy(terse_comm_t *c)
{
    progress_t *p = c->progress;
    if (!p) return;
    c->progress = NULL;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1; /* the thread empties the queue first */
    pthread_cond_signal(&p->work);
    const int running = p->running;
    pthread_mutex_unlock(&p->mu);
    if (running) pthread_join(p->thread, NULL);
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    const int last = p->outstanding == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) progress_free(p);
}

static terse_status_t check_request(const terse_request_t *req, const char *fn)
{
    if (!req) return terse_error(TERSE_ERR_ARG, "%s: req is NULL", fn);
    if (req->magic != REQUEST_MAGIC)
        return terse_error(TERSE_ERR_ARG, "%s: req is not an outstanding request (waited for already?)", fn);
    return TERSE_OK;
}

terse_status_t progress_wait(terse_request_t *req)
{
    TERSE_CHECK(check_request(req, "terse_wait"));
    progress_t *p = req->owner;
    pthread_mutex_lock(&p->mu);
    while (!req->done) pthread_cond_wait(&p->finished, &p->mu);
    const terse_status_t s = req->status;
    char message[sizeof req->message];
    memcpy(message, req->message, sizeof message);
    req->magic = 0;
    req->next = p->free_list;
    p->free_list = req;
    const int last = --p->outstanding == 0 && p->closed;
    pthread_mutex_unlock(&p->mu);
    if (last) progress_free(p);
    if (s != TERSE_OK) return terse_error(s, "%s", message);
    return TERSE_OK;
}

terse_status_t progress_test(terse_request_t *req, int *done)
{
    TERSE_CHECK(check_request(req, "terse_test"));
    if (!done) return terse_error(TERSE_ERR_ARG, "terse_test: done is NULL");
    progress_t *p = req->owner;
    pthread_mutex_lock(&p->mu);
    const int d = req->done;
    pthread_mutex_unlock(&p->mu);
    *done = d;
    return d ? progress_wait(req) : TERSE_OK;
}
