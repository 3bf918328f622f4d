/* The command-line and error handling of the examples: see cli.h. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "terse_mpi.h"

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

int cli_parse_count(const char *s, const char *s_end, long max, long *out_p)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno == ERANGE || v > max) return -1;
    if (s_end ? end != s_end : *end != '\0') return -1;
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

int cli_option_count(const char *flag, const char *value, long max, long *out_p, char *msg,
                     size_t len)
{
    if (cli_parse_count(value, NULL, max, out_p) == 0) return 0;
    snprintf(msg, len, "%s '%s': need an integer >= 0", flag, value);
    return -1;
}

int cli_option_spec(const char *flag, const char *value, const char *examples,
                    const char *note, char *msg, size_t len)
{
    if (*value != '\0' && !strchr(value, ';')) return 0;
    snprintf(msg, len, "%s '%s': give one spec such as %s, without ';'%s%s%s", flag, value,
             examples, note ? " (" : "", note ? note : "", note ? ")" : "");
    return -1;
}

/* ---- Report iterations ----------------------------------------------------------------- */

int cli_report_parse(const char *value, cli_report_t *r, char *msg, size_t len)
{
    size_t n = 1;
    for (const char *p = value; *p; p++) n += *p == ',';
    long *t = malloc(n * sizeof *t);
    if (!t) {
        snprintf(msg, len, "--report: out of memory");
        return -1;
    }
    const char *p = value;
    for (size_t i = 0; i < n; i++) {
        const char *comma = strchr(p, ',');
        if (cli_parse_count(p, comma, LONG_MAX, &t[i]) || (i > 0 && t[i] <= t[i - 1])) {
            snprintf(msg, len, "--report '%s': need increasing integers >= 0 separated by "
                     "commas, e.g. 1,10,100,1000", value);
            free(t);
            return -1;
        }
        p = comma ? comma + 1 : p;
    }
    free(r->iters);
    *r = (cli_report_t){.iters = t, .n = n};
    return 0;
}

int cli_report_finish(cli_report_t *r, long iters, char *msg, size_t len)
{
    if (r->iters) {
        if (r->iters[r->n - 1] <= iters) return 0;
        snprintf(msg, len, "--report %ld is beyond --iters %ld", r->iters[r->n - 1], iters);
        return -1;
    }
    long *t = malloc(24 * sizeof *t); /* 1, 10, ..., 10^18 below LONG_MAX, and iters */
    if (!t) {
        snprintf(msg, len, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (long p = 1; p <= iters; p *= 10) {
        t[n++] = p;
        if (p > LONG_MAX / 10) break;
    }
    if (n == 0 || t[n - 1] != iters) t[n++] = iters;
    *r = (cli_report_t){.iters = t, .n = n};
    return 0;
}

int cli_report_due(cli_report_t *r, long t)
{
    if (r->next >= r->n || r->iters[r->next] != t) return 0;
    r->next++;
    return 1;
}

void cli_report_free(cli_report_t *r)
{
    free(r->iters);
    *r = (cli_report_t){0};
}

/* ---- Usage ------------------------------------------------------------------------------ */

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

int cli_comm_open(const char *prog, int rank, const char *compressor, const char *feedback,
                  const char *layer_name, size_t d, terse_comm_t **tc_p, int *layer_p,
                  char *in_effect, size_t len)
{
    char config[512];
    snprintf(config, sizeof config, "compressor=%s; feedback=%s; min_size=0", compressor,
             feedback);
    terse_status_t s = terse_comm_create_mpi(MPI_COMM_WORLD, config, tc_p);
    if (!cli_all_ok_terse(prog, s, rank, "terse_comm_create_mpi"))
        return s == TERSE_ERR_ARG || s == TERSE_ERR_UNSUPPORTED ? 2 : 1;
    s = terse_layer_add(*tc_p, layer_name, d, 1, NULL, layer_p);
    if (!cli_all_ok_terse(prog, s, rank, "terse_layer_add"))
        return s == TERSE_ERR_ARG || s == TERSE_ERR_UNSUPPORTED ? 2 : 1;
    s = terse_comm_config(*tc_p, in_effect, len);
    if (!cli_all_ok_terse(prog, s, rank, "terse_comm_config")) return 1;
    return 0;
}

int cli_comm_destroy(const char *prog, int rank, terse_comm_t *tc)
{
    terse_status_t s = terse_comm_destroy(tc);
    if (s == TERSE_OK) return 0;
    fprintf(stderr, "%s: rank %d: terse_comm_destroy: %s: %s\n", prog, rank,
            terse_status_string(s), terse_last_error());
    return 1;
}

void cli_sum_exact(const char *prog, int rank, const double *in, double *out, int n)
{
    if (MPI_Allreduce(in ? in : MPI_IN_PLACE, out, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) ==
        MPI_SUCCESS)
        return;
    fprintf(stderr, "%s: rank %d: MPI_Allreduce of the exact gradient failed\n", prog, rank);
    MPI_Abort(MPI_COMM_WORLD, 1);
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
