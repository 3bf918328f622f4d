/* The communicator guard (guard.h): a mutex-protected list of live handles, each with the
 * name of the call in progress on it, or NULL. Lists are short (a process has a handful of
 * communicators), so a linear scan under the lock costs well under a microsecond per call. */
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>

#include "error.h"
#include "guard.h"

typedef struct {
    const terse_comm_t *c;
    const char *busy; /* the public call in progress, or NULL */
} entry_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *live;
static size_t n_live, cap_live;

/* The entry of c, or NULL. Called with the lock held. */
static entry_t *find(const terse_comm_t *c)
{
    for (size_t i = 0; i < n_live; i++)
        if (live[i].c == c) return &live[i];
    return NULL;
}

static terse_status_t not_live(const terse_comm_t *c, const char *fn)
{
    if (!c) return terse_error(TERSE_ERR_ARG, "%s: communicator is NULL", fn);
    return terse_error(TERSE_ERR_ARG, "%s: %p is not a live communicator (destroyed, or never created)",
                       fn, (const void *)c);
}

static terse_status_t in_use(const char *fn, const char *busy)
{
    return terse_error(TERSE_ERR_STATE,
                       "%s: the communicator is in use by another thread (inside %s); a communicator "
                       "is used by one thread at a time",
                       fn, busy);
}

terse_status_t guard_add(terse_comm_t *c)
{
    pthread_mutex_lock(&lock);
    if (n_live == cap_live) {
        size_t cap = cap_live ? 2 * cap_live : 8;
        entry_t *grown = realloc(live, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            return terse_error(TERSE_ERR_NOMEM, "communicator: out of memory");
        }
        live = grown;
        cap_live = cap;
    }
    live[n_live++] = (entry_t){c, NULL};
    pthread_mutex_unlock(&lock);
    return TERSE_OK;
}

terse_status_t guard_remove(terse_comm_t *c, const char *fn)
{
    terse_status_t s = TERSE_OK;
    pthread_mutex_lock(&lock);
    entry_t *e = find(c);
    if (!e) s = not_live(c, fn);
    else if (e->busy) s = in_use(fn, e->busy);
    else *e = live[--n_live];
    if (n_live == 0) {
        free(live);
        live = NULL;
        cap_live = 0;
    }
    pthread_mutex_unlock(&lock);
    return s;
}

terse_status_t guard_check(const terse_comm_t *c, const char *fn)
{
    pthread_mutex_lock(&lock);
    const int ok = c && find(c);
    pthread_mutex_unlock(&lock);
    return ok ? TERSE_OK : not_live(c, fn);
}

terse_status_t guard_enter(terse_comm_t *c, const char *fn)
{
    terse_status_t s = TERSE_OK;
    pthread_mutex_lock(&lock);
    entry_t *e = c ? find(c) : NULL;
    if (!e) s = not_live(c, fn);
    else if (e->busy) s = in_use(fn, e->busy);
    else e->busy = fn;
    pthread_mutex_unlock(&lock);
    return s;
}

void guard_leave(terse_comm_t *c)
{
    pthread_mutex_lock(&lock);
    entry_t *e = find(c);
    if (e) e->busy = NULL;
    pthread_mutex_unlock(&lock);
}

terse_status_t guard_enter_mpi(terse_comm_t *c, const char *fn)
{
    TERSE_CHECK(guard_enter(c, fn));
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) return TERSE_OK;
    guard_leave(c);
    return terse_error(TERSE_ERR_STATE, "%s: MPI has been finalised; destroy the communicator before MPI_Finalize", fn);
}
