/* TERSE_LOG: the threshold is read from the environment on first use. A racing first use
 * from two threads reads the same variable twice and stores the same value. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static int log_threshold(void)
{
    static int threshold = -1;
    if (threshold < 0) {
        int t = LOG_WARN;
        const char *env = getenv("TERSE_LOG");
        for (int i = LOG_ERROR; env && i <= LOG_DEBUG; i++)
            if (strcmp(env, level_names[i]) == 0) t = i;
        threshold = t;
    }
    return threshold;
}

int log_enabled(log_level_t level) { return (int)level <= log_threshold(); }

void log_print(log_level_t level, int rank, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (rank >= 0)
        fprintf(stderr, "terse[rank %d] %s: %s\n", rank, level_names[level], text);
    else
        fprintf(stderr, "terse %s: %s\n", level_names[level], text);
}
