/* Logging to stderr, filtered by TERSE_LOG=error|warn|info|debug (default warn), read once.
 * A line reads "terse[rank R] warn: text". Logging never fails and never allocates. */
#ifndef TERSE_LOG_H
#define TERSE_LOG_H

#include "error.h"

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level_t;

/* Whether messages of `level` are printed. */
int log_enabled(log_level_t level);

/* Prints one line (printf format, no newline needed) if `level` is enabled. rank < 0 leaves
 * the rank out. */
void log_print(log_level_t level, int rank, const char *fmt, ...) TERSE_PRINTF(3, 4);

#endif
