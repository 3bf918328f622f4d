/* Fibers on ucontext (see fiber.h). */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fiber.h"

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_ASAN 1
#endif
#endif

#ifdef FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#define SWITCH_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define SWITCH_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define SWITCH_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define SWITCH_FINISH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define FIBER_VALGRIND 1
#endif
#endif

static size_t page_bytes(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

terse_status_t fiber_init(fiber_t *f, size_t stack_bytes)
{
    *f = (fiber_t){0};
    const size_t page = page_bytes();
    stack_bytes = (stack_bytes + page - 1) / page * page;
    void *m = mmap(NULL, stack_bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return terse_error(TERSE_ERR_NOMEM, "fiber: cannot map a stack of %zu bytes", stack_bytes);
    /* the lowest page stays inaccessible: an overflow faults instead of corrupting memory */
    if (mprotect(m, page, PROT_NONE) != 0) {
        munmap(m, stack_bytes + page);
        return terse_error(TERSE_ERR_NOMEM, "fiber: cannot protect the guard page of a stack");
    }
    f->map = m;
    f->map_bytes = stack_bytes + page;
    f->stack = f->map + page;
    f->stack_bytes = stack_bytes;
    f->finished = 1;
#ifdef FIBER_VALGRIND
    f->valgrind_id = VALGRIND_STACK_REGISTER(f->stack, f->stack + f->stack_bytes);
#endif
    return TERSE_OK;
}

void fiber_free(fiber_t *f)
{
    if (!f->map) return;
#ifdef FIBER_VALGRIND
    VALGRIND_STACK_DEREGISTER(f->valgrind_id);
#endif
    munmap(f->map, f->map_bytes);
    f->map = NULL;
}

/* makecontext passes int arguments: the fiber's address travels in two halves. */
static void trampoline(unsigned hi, unsigned lo)
{
    fiber_t *f = (fiber_t *)(((uintptr_t)hi << 16 << 16) | (uintptr_t)lo);
    SWITCH_FINISH(NULL, &f->back_bottom, &f->back_size);
    f->fn(f->arg);
    f->finished = 1;
    /* the stack is done with: NULL tells AddressSanitizer to forget its fake frames */
    SWITCH_START(NULL, f->back_bottom, f->back_size);
    setcontext(&f->back);
}

void fiber_start(fiber_t *f, fiber_fn fn, void *arg)
{
    f->fn = fn;
    f->arg = arg;
    f->finished = 0;
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = f->stack_bytes;
    f->ctx.uc_link = NULL;
    const uintptr_t a = (uintptr_t)f;
    makecontext(&f->ctx, (void (*)(void))trampoline, 2, (unsigned)(a >> 16 >> 16), (unsigned)(a & 0xffffffffu));
}

void fiber_resume(fiber_t *f)
{
    void *save = NULL;
    SWITCH_START(&save, f->stack, f->stack_bytes);
    swapcontext(&f->back, &f->ctx);
    SWITCH_FINISH(save, NULL, NULL);
}

void fiber_yield(fiber_t *f)
{
    SWITCH_START(&f->fake_stack, f->back_bottom, f->back_size);
    swapcontext(&f->ctx, &f->back);
    SWITCH_FINISH(f->fake_stack, &f->back_bottom, &f->back_size);
}
