/*
 * cli.h — the command-line and error handling that the example programs share (logreg,
 * ef21_logreg, hetero_lsq). Each program keeps its own options, defaults and messages; what
 * is here is the mechanics they have in common.
 *
 * Conventions. A function that can fail returns 0, or -1 with a one-line message in (msg,
 * len) that names the option and what it accepts; its outputs come last before the message
 * and are written only on success. `prog` is the program's name, which begins every line
 * printed to stderr ("logreg: rank 1: ...").
 */
#ifndef TERSE_EXAMPLES_CLI_H
#define TERSE_EXAMPLES_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "terse.h"

/* ---- Options, before MPI starts --------------------------------------------------------- */

/* One option of the command line, "--flag VALUE" or "--flag=VALUE". */
typedef struct {
    char flag[32];     /* "--flag", cut to 31 characters: it is only compared and quoted */
    const char *value; /* points into argv                                               */
} cli_option_t;

/* Reads the option at argv[*i] and its value: the text after '=', or else argv[*i + 1], in
 * which case *i is advanced past it. Returns 0 with *opt_p set; 1 when the argument is --help
 * or -h; -1 with a message for an argument that does not start with "--" ("unexpected
 * argument 'X'") or a flag with no value after it ("--flag needs a value"). The loop:
 *
 *     for (int i = 1; i < argc; i++) {
 *         cli_option_t opt;
 *         int r = cli_option_next(argc, argv, &i, &opt, msg, len);
 *         if (r != 0) return r;
 *         ... opt.flag, opt.value ...
 *     }                                                                                   */
int cli_option_next(int argc, char *const *argv, int *i, cli_option_t *opt_p, char *msg,
                    size_t len);

/* The whole of s as a finite double (strtod's syntax). 0, or -1: not a number, trailing text,
 * out of range, or infinite or NaN. */
int cli_parse_double(const char *s, double *out_p);

/* The whole of s as a long (strtol's syntax in base 10: leading spaces and a sign pass). 0,
 * or -1: not a number, trailing text, or out of range. */
int cli_parse_long(const char *s, long *out_p);

/* The whole of [s, s_end) (s_end NULL: up to the NUL) as a decimal integer in [0, max]: digits
 * only, no sign or spaces (which strtol would let pass). 0, or -1. */
int cli_parse_count(const char *s, const char *s_end, long max, long *out_p);

/* The value of option `flag` as a finite double >= min, or > min when `strict`. 0, or -1 with
 * "FLAG 'VALUE': need a finite number >= MIN" (> when strict; MIN printed with %g). */
int cli_option_double(const char *flag, const char *value, double min, int strict,
                      double *out_p, char *msg, size_t len);

/* The value of option `flag` as a long >= min (cli_parse_long's syntax). 0, or -1 with
 * "FLAG 'VALUE': need an integer >= MIN". */
int cli_option_long(const char *flag, const char *value, long min, long *out_p, char *msg,
                    size_t len);

/* The value of option `flag` as a count (cli_parse_count's syntax) <= max. 0, or -1 with
 * "FLAG 'VALUE': need an integer >= 0"; max is not in the message, so it suits limits that only
 * guard against overflow (LONG_MAX). */
int cli_option_count(const char *flag, const char *value, long max, long *out_p, char *msg,
                     size_t len);

/* Checks a --compressor or --feedback value, which the program pastes into its configuration
 * string as one item "key=VALUE": it must be non-empty and hold no ';', which would smuggle in
 * other keys. 0, or -1 with "FLAG 'VALUE': give one spec such as EXAMPLES, without ';'",
 * followed by " (NOTE)" when note is not NULL. */
int cli_option_spec(const char *flag, const char *value, const char *examples,
                    const char *note, char *msg, size_t len);

/* The iterations at which a program reports ("--report T1,T2,..."), and how far it got. */
typedef struct {
    long *iters;  /* increasing, >= 0 (malloc'd; NULL until parsed or defaulted) */
    size_t n;
    size_t next;  /* the first entry not yet reported                             */
} cli_report_t;

/* Parses the --report value, increasing counts separated by commas, into *r (replacing and
 * freeing a list parsed before). 0, or -1 with "--report 'VALUE': need increasing integers >=
 * 0 separated by commas, e.g. 1,10,100,1000" (or "--report: out of memory"); *r is unchanged
 * on failure. */
int cli_report_parse(const char *value, cli_report_t *r, char *msg, size_t len);

/* After the options: checks a parsed list against --iters, or, when none was given, sets the
 * default 1, 10, 100, ... up to iters, and iters itself. 0, or -1 with "--report T is beyond
 * --iters ITERS" or "out of memory". */
int cli_report_finish(cli_report_t *r, long iters, char *msg, size_t len);

/* 1 when iteration t is the next one to report (and moves past it), else 0. Call it once per
 * iteration, in increasing t. */
int cli_report_due(cli_report_t *r, long t);

/* Frees the list; r may be all zero. */
void cli_report_free(cli_report_t *r);

/* Answers a parse that did not end in "run", before MPI_Init: parsed is 1 when --help was
 * asked, -1 for bad usage with msg. Only the launcher's rank 0 prints (the rank is read from
 * the environment of Open MPI, MPICH or PMIx; 0 when run alone), so that the text shows once
 * under mpirun: the usage to stdout for --help, else "PROG: MSG", a blank line and the usage
 * to stderr. Returns the exit status: 0 for --help, 2 for bad usage. */
int cli_usage_print(const char *prog, int parsed, const char *msg, void (*usage)(FILE *f));

/* ---- Errors, once MPI runs -------------------------------------------------------------- */

/* For steps every rank takes during set-up (reading, creating, registering): the ranks agree
 * on whether all succeeded, so that they stop together rather than leave a peer waiting in a
 * collective. Rank 0 prints its own error as "PROG: rank 0: MSG"; another rank prints only
 * when rank 0 succeeded, so an error every rank meets (a missing file, a bad codec) prints
 * once. Collective over MPI_COMM_WORLD. Returns 1 when every rank's ok was true, else 0. */
int cli_all_ok(const char *prog, int ok, int rank, const char *msg);

/* cli_all_ok for a terse call named `what` that every rank makes during set-up: ok when s is
 * TERSE_OK, else the message is "WHAT: STATUS: LAST_ERROR". Call it right after the failed
 * call, before any other terse call can replace terse_last_error(). */
int cli_all_ok_terse(const char *prog, terse_status_t s, int rank, const char *what);

/* Sets up the communicator the way the examples do: "compressor=COMPRESSOR;
 * feedback=FEEDBACK; min_size=0" over MPI_COMM_WORLD (min_size=0: the model is compressed
 * however small it is), one layer `layer_name` of d x 1 into *layer_p, and the configuration
 * in force into (in_effect, len). Each step goes through cli_all_ok_terse, so an error prints
 * once and every rank stops. Returns 0 when every rank succeeded; else the exit status for this
 * rank: 2 when its terse_comm_create_mpi or terse_layer_add rejected the configuration
 * (TERSE_ERR_ARG, TERSE_ERR_UNSUPPORTED: the user's to fix), 1 otherwise. Unlike the other
 * outputs, *tc_p is set as soon as the communicator exists, also on failure: the caller
 * destroys it (cli_comm_destroy) on its way out either way. */
int cli_comm_open(const char *prog, int rank, const char *compressor, const char *feedback,
                  const char *layer_name, size_t d, terse_comm_t **tc_p, int *layer_p,
                  char *in_effect, size_t len);

/* terse_comm_destroy(tc) (tc may be NULL) at the end of a run. 0, or 1 (the exit status) after
 * "PROG: rank R: terse_comm_destroy: STATUS: LAST_ERROR" on stderr. */
int cli_comm_destroy(const char *prog, int rank, terse_comm_t *tc);

/* The sum over the ranks of n doubles, in into out (in NULL: in place in out), for the exact
 * figures a program reports beside terse's compressed ones. An MPI failure there leaves the
 * peers inside the collective: this rank prints "PROG: rank R: MPI_Allreduce of the exact
 * gradient failed" and aborts the job. */
void cli_sum_exact(const char *prog, int rank, const double *in, double *out, int n);

/* Reports a terse call `what` of the training loop that failed with s (the message as above,
 * so also right after the call). terse reports a mismatch or a non-finite gradient on every
 * rank: rank 0 prints "PROG: MSG" and the caller leaves cleanly. Anything else may have left
 * the peers inside a collective: this rank prints "PROG: rank R: MSG" and, when there are
 * peers (size > 1), aborts the job. */
void cli_loop_failed(const char *prog, int rank, int size, const char *what, terse_status_t s);

#endif /* TERSE_EXAMPLES_CLI_H */
