/* The command-line and error handling of the examples: see cli.h. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

/* ---- Options ---------------------------------------------------------------------------- */

int cli_option_next(int argc, char *const *argv, int *i, cli_option_t *opt_p, char *msg,
                    size_t len)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
    if (strncmp(a, "--", 2) != 0) {
        snprintf(msg, len, "unexpected argument '%s'", a);
        return -1;
    }
    cli_option_t opt;
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    if (n > sizeof opt.flag - 1) n = sizeof opt.flag - 1;
    snprintf(opt.flag, sizeof opt.flag, "%.*s", (int)n, a);
    if (eq) {
        opt.value = eq + 1;
    } else if (*i + 1 < argc) {
        opt.value = argv[++*i];
    } else {
        snprintf(msg, len, "%s needs a value", opt.flag);
        return -1;
    }
    *opt_p = opt;
    return 0;
}

int cli_parse_double(const char *s, double *out_p)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v)) return -1;
    *out_p = v;
    return 0;
}

int cli_parse_long(const char *s, long *out_p)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE) return -1;
    *out_p = v;
    return 0;
}

int cli_option_double(const char *flag, const char *value, double min, int strict,
                      double *out_p, char *msg, size_t len)
{
    double v;
    if (cli_parse_double(value, &v) || (strict ? v <= min : v < min)) {
        snprintf(msg, len, "%s '%s': need a finite number %s %g", flag, value,
                 strict ? ">" : ">=", min);
        return -1;
    }
    *out_p = v;
    return 0;
}

int cli_option_long(const char *flag, const char *value, long min, long *out_p, char *msg,
                    size_t len)
{
    long v;
    if (cli_parse_long(value, &v) || v < min) {
        snprintf(msg, len, "%s '%s': need an integer >= %ld", flag, value, min);
        return -1;
    }
    *out_p = v;
    return 0;
}

int cli_option_spec(const char *flag, const char *value, const char *examples,
                    const char *note, char *msg, size_t len)
{
    if (*value != '\0' && !strchr(value, ';')) return 0;
    snprintf(msg, len, "%s '%s': give one spec such as %s, without ';'%s%s%s", flag, value,
             examples, note ? " (" : "", note ? note : "", note ? ")" : "");
    return -1;
}

/* The rank before MPI is initialised, from the launcher's environment. 0 when run alone. */
static int launcher_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v) return atoi(v);
    }
    return 0;
}

int cli_usage_print(const char *prog, int parsed, const char *msg, void (*usage)(FILE *f))
{
    if (launcher_rank() == 0) {
        if (parsed > 0) {
            usage(stdout);
        } else {
            fprintf(stderr, "%s: %s\n\n", prog, msg);
            usage(stderr);
        }
    }
    return parsed > 0 ? 0 : 2;
}

/* ---- Errors ----------------------------------------------------------------------------- */

/* The text for a failed terse call, taken before any other terse call can replace it. */
static void terse_message(char *buf, size_t len, const char *what, terse_status_t s)
{
    snprintf(buf, len, "%s: %s: %s", what, terse_status_string(s), terse_last_error());
}

int cli_all_ok(const char *prog, int ok, int rank, const char *msg)
{
    /* flags[0]: how many ranks failed; flags[1]: whether rank 0 did (and so has printed) */
    int flags[2] = {!ok, rank == 0 && !ok};
    MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (!ok && (rank == 0 || !flags[1])) fprintf(stderr, "%s: rank %d: %s\n", prog, rank, msg);
    return flags[0] == 0;
}

int cli_all_ok_terse(const char *prog, terse_status_t s, int rank, const char *what)
{
    char msg[1024] = "";
    if (s != TERSE_OK) terse_message(msg, sizeof msg, what, s);
    return cli_all_ok(prog, s == TERSE_OK, rank, msg);
}

void cli_loop_failed(const char *prog, int rank, int size, const char *what, terse_status_t s)
{
    char msg[1024];
    terse_message(msg, sizeof msg, what, s);
    if (s == TERSE_ERR_MISMATCH || s == TERSE_ERR_NONFINITE) {
        if (rank == 0) fprintf(stderr, "%s: %s\n", prog, msg);
        return;
    }
    fprintf(stderr, "%s: rank %d: %s\n", prog, rank, msg);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
}
