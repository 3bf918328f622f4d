/* Internal error reporting: one helper sets the thread-local message behind
 * terse_last_error() and returns the status, so every failure path reads
 *     return terse_error(TERSE_ERR_ARG, "layer id %d out of range [0, %d)", id, n);      */
#ifndef TERSE_ERROR_H
#define TERSE_ERROR_H

#include "terse.h"

#if defined(__GNUC__)
#define TERSE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TERSE_PRINTF(a, b)
#endif

/* Sets the calling thread's last-error text (printf format) and returns s. */
terse_status_t terse_error(terse_status_t s, const char *fmt, ...) TERSE_PRINTF(2, 3);

/* Clears the calling thread's last-error text. */
void terse_error_clear(void);

/* Forwards a failing status with its message: TERSE_CHECK(call) returns from the enclosing
 * function if call did not return TERSE_OK. */
#define TERSE_CHECK(call)                                                                   \
    do {                                                                                    \
        terse_status_t terse_check_s_ = (call);                                             \
        if (terse_check_s_ != TERSE_OK) return terse_check_s_;                              \
    } while (0)

#endif
