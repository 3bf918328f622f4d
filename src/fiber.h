/* Fibers: functions that run on a stack of their own and hand control back and forth with
 * the thread that resumes them (ucontext), so that several calls can advance in lockstep on
 * one thread. terse_allreduce_many runs each layer of a fused bucket in a fiber: when a
 * layer's protocol asks for a collective, its fiber yields, and the scheduler runs the
 * collectives of all layers as one (src/fuse.c).
 *
 * Only one fiber runs at a time, on the thread that resumes it; nothing is preempted. Under
 * AddressSanitizer the switches are announced to it, and under valgrind the stacks are
 * registered, so that neither mistakes a switch for a stack overflow. */
#ifndef TERSE_FIBER_H
#define TERSE_FIBER_H

#include <stddef.h>
#include <ucontext.h>

#include "error.h"

typedef void (*fiber_fn)(void *arg);

typedef struct {
    ucontext_t ctx;            /* the fiber's context while it is suspended            */
    ucontext_t back;           /* the resumer's context while the fiber runs            */
    unsigned char *map;        /* the mapping: a guard page, then the stack             */
    size_t map_bytes;
    unsigned char *stack;      /* the stack: the mapping past its guard page            */
    size_t stack_bytes;
    unsigned valgrind_id;      /* the stack's valgrind registration                     */
    fiber_fn fn;
    void *arg;
    int finished;
    /* AddressSanitizer's view of the switches */
    void *fake_stack;
    const void *back_bottom;
    size_t back_size;
} fiber_t;

/* Maps a stack of stack_bytes (and a guard page below it). TERSE_ERR_NOMEM if it cannot. */
terse_status_t fiber_init(fiber_t *f, size_t stack_bytes);
void fiber_free(fiber_t *f);

/* Makes fn(arg) the fiber's function, from its start; the first fiber_resume runs it. The
 * fiber must not be running (new, or finished). */
void fiber_start(fiber_t *f, fiber_fn fn, void *arg);

/* Runs the fiber until it yields or its function returns (then f->finished is 1). */
void fiber_resume(fiber_t *f);

/* From inside the fiber: back to the fiber_resume that ran it. */
void fiber_yield(fiber_t *f);

#endif
