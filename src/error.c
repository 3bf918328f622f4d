/* Status strings and the thread-local last-error message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static _Thread_local char last_error[1024];

terse_status_t terse_error(terse_status_t s, const char *fmt, ...)
{
    /* formatted aside first: an argument may be the current message itself
     * ("layer configuration: %s", terse_last_error()) */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return s;
}

void terse_error_clear(void) { last_error[0] = '\0'; }

const char *terse_last_error(void) { return last_error; }

const char *terse_status_string(terse_status_t s)
{
    switch (s) {
    case TERSE_OK: return "TERSE_OK: success";
    case TERSE_ERR_ARG: return "TERSE_ERR_ARG: invalid argument";
    case TERSE_ERR_NOMEM: return "TERSE_ERR_NOMEM: out of memory";
    case TERSE_ERR_BACKEND: return "TERSE_ERR_BACKEND: communication backend error";
    case TERSE_ERR_MISMATCH: return "TERSE_ERR_MISMATCH: ranks disagree";
    case TERSE_ERR_UNSUPPORTED: return "TERSE_ERR_UNSUPPORTED: not supported by this build";
    case TERSE_ERR_STATE: return "TERSE_ERR_STATE: call out of order";
    case TERSE_ERR_NONFINITE: return "TERSE_ERR_NONFINITE: non-finite value in input";
    case TERSE_ERR_IO: return "TERSE_ERR_IO: state file error";
    }
    return "unknown terse status";
}

unsigned terse_version(void) { return TERSE_VERSION_NUMBER; }
