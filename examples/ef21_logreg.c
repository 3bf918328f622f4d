/* ef21_logreg: the logistic-regression experiment of the EF21 paper (Richtárik, Sokolov,
 * Fatkhullin, NeurIPS 2021; ALGORITHMS.md §4.1 and §10.1), with terse's feedback methods as
 * the gradient estimators.
 *
 *     mpirun -np 20 ef21_logreg --data mushrooms.txt --compressor topk:k=1 --feedback ef21 \
 *         --factor 1 --iters 1000 --x0 zero --report 1,10,100,1000
 *
 * The problem. The n ranks are the paper's workers. The rows of a LibSVM file are split
 * sequentially (libsvm_split: floor(N/n) rows each, the remainder to the last rank); rank i
 * holds m_i rows (a_ij, b_ij) with b_ij = +-1, and
 *
 *     f_i(x) = 1/m_i sum_j log(1 + exp(-b_ij a_ij.x)) + lambda sum_k x_k^2 / (1 + x_k^2),
 *     f(x)   = 1/n sum_i f_i(x),         lambda = 0.1.
 *
 * f is the mean of the ranks' averages, as in the EF21 code, not the average over all N rows:
 * the last rank holds up to n-1 more rows than the others, so each of its rows weighs a little
 * less (mushrooms on 20 ranks: 406 rows on each of ranks 0..18, 410 on rank 19).
 *
 * The method. Every iteration each rank computes its full local gradient grad f_i(x_t) in
 * double and hands it to terse as float32 (one layer of d x 1; min_size=0, so that even d = 68
 * is compressed); every rank then takes the same step x_{t+1} = x_t - gamma g_t, g_t being
 * terse's aggregate (bitwise the same on every rank). The estimator is terse's feedback
 * method, which this program does not re-implement (docs/configuration.md):
 *   ef21     EF21: g_i^0 = grad f_i(x_0), sent uncompressed; g_i^{t+1} = g_i^t +
 *            C(grad f_i(x_{t+1}) - g_i^t); g_t = mean_i g_i^t
 *   ef21-w   EF21-W: terse's ef21:weight=w_i, with w_i = L_i / sum_j L_j computed here
 *   ef       EF14, classic error feedback (for TopK, and a constant gamma, the same iterates
 *            as the "learning rate inside" form of the paper's EF14 code: C(gamma p) =
 *            gamma C(p))
 *   econtrol[:eta=E], ef21sgdm[:eta=E], none: passed to terse as written
 *
 * The stepsize, as in the EF21 code:
 *   L_i    = lambda_max(A_i^T A_i / (4 m_i)) + 2 lambda      (A_i: rank i's rows)
 *   L      = lambda_max(A^T A / (4 N)) + 2 lambda            (A: all N rows)
 *   L_QM   = sqrt(mean_i L_i^2),  L_AM = mean_i L_i
 *   theta  = 1 - sqrt(1 - alpha),  beta = (1 - alpha) / theta
 *   gamma  = factor / (L + Ltilde sqrt(beta/theta)),  Ltilde = L_AM for EF21-W, L_QM otherwise
 * lambda_max by Householder tridiagonalisation and bisection (logreg_model.h), of the d x d
 * Gram matrices (d <= 300 for the paper's data). alpha is the compressor's contraction
 * parameter, E|C(v) - v|^2 <= (1 - alpha)|v|^2, taken from the codec terse has in force:
 *   topk      k/d, with k as terse computes it (k=K, or max(1, floor(density d)); at most d)
 *   randk     k/d likewise (unbiased=0: the contraction holds in expectation)
 *   none      1 (also whenever the layer goes dense)
 *   fp16/bf16 1 - u^2, u = 2^-11 or 2^-8 the unit roundoff of round to nearest (for values in
 *             the normal range)
 *   others    1, for want of a general bound: the header says so; --alpha sets it
 * alpha = 1 (k = d) gives beta = 0 and gamma = factor / L, the EF21 code's special case.
 *
 * The output (rank 0): '#' lines (the data, the split, the constants, the configuration),
 * then one line per report iteration t,
 *     iter <t> gradnorm2 <|grad f(x_t)|^2> bits <bits per worker so far>
 * |grad f(x_t)|^2 is exact: computed in double from the ranks' local gradients at x_t with a
 * plain MPI_Allreduce, apart from terse. bits is 8 x the bytes of this rank's terse messages
 * for the t calls so far (terse_layer_stats' wire_bytes): a TopK message is 4 + 8k bytes (its
 * count, the indices, the values), EF21's first, uncompressed one 4d. The EF21 paper plots
 * against t k 32 bits (the values only); the closing '#' line gives that count too.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ef21_step.h"
#include "libsvm.h"
#include "logreg_model.h"
#include "terse.h"
#include "terse_mpi.h"

#define LAMBDA 0.1 /* the EF21 experiments' regularisation weight */
#define PROG "ef21_logreg"

typedef struct {
    const char *data;       /* LibSVM file (required)                                  */
    const char *compressor; /* codec spec                                              */
    const char *feedback;   /* feedback spec as given; "ef21-w" is translated per rank   */
    double factor;          /* the stepsize multiplier                                 */
    double alpha;           /* the contraction parameter; 0: from the codec            */
    long iters;
    int x0_random;          /* 0: x0 = 0; 1: x0 ~ N(0, I) drawn from x0_seed           */
    uint64_t x0_seed;
    cli_report_t report;    /* report iterations                                       */
} opts_t;

static void usage(FILE *f)
{
    fputs("usage: mpirun -np N ef21_logreg --data FILE [options]\n"
          "\n"
          "The EF21 paper's experiment: logistic regression with the nonconvex regulariser\n"
          "0.1 sum x^2/(1+x^2), the rows of FILE split sequentially over the ranks, full local\n"
          "gradients averaged by terse with the given compressor and feedback, and the\n"
          "stepsize gamma = factor / (L + Ltilde sqrt(beta/theta)) of the paper's code.\n"
          "\n"
          "  --data FILE          LibSVM file, e.g. /work/shared/data/libsvm/mushrooms.txt\n"
          "                       (required); labels: the larger value is +1, the other -1\n"
          "  --compressor SPEC    terse codec (default topk:k=1)\n"
          "  --feedback SPEC      ef21 (default), ef21-w (EF21-W: each rank passes\n"
          "                       ef21:weight=L_i/sum_j L_j and Ltilde is L_AM), ef,\n"
          "                       econtrol[:eta=E], ef21sgdm[:eta=E], none\n"
          "  --factor F           stepsize multiplier, > 0 (default 1: the theoretical step)\n"
          "  --iters T            iterations, >= 0 (default 1000)\n"
          "  --x0 zero|randn:SEED the start: 0, or N(0, I) drawn from SEED (default zero)\n"
          "  --report T1,T2,...   iterations to report, increasing, each <= --iters (default\n"
          "                       1, 10, 100, ... up to --iters, and --iters itself)\n"
          "  --alpha A            the compressor's contraction parameter in (0, 1] (default:\n"
          "                       k/d for topk and randk, 1 for none, 1 - u^2 for fp16/bf16)\n"
          "  --help               this text\n"
          "\n"
          "Output (rank 0): '#' header lines, then one line per report iteration t\n"
          "  iter <t> gradnorm2 <|grad f(x_t)|^2> bits <8 x the bytes this rank sent so far>\n"
          "with the exact gradient of f = mean_i f_i, and a closing '#' line.\n"
          "\n"
          "Exit status: 0 on success, 1 on an error (data or terse), 2 on bad usage (options,\n"
          "an unreadable file, a configuration terse rejects).\n",
          f);
}

/* ---- Arguments -------------------------------------------------------------------------- */

/* 0: run; 1: --help was asked; -1: bad usage, with a message in msg. Accepts "--flag VALUE"
 * and "--flag=VALUE". */
static int parse_args(int argc, char **argv, opts_t *o, char *msg, size_t len)
{
    *o = (opts_t){.compressor = "topk:k=1", .feedback = "ef21", .factor = 1, .iters = 1000};
    for (int i = 1; i < argc; i++) {
        cli_option_t opt;
        int r = cli_option_next(argc, argv, &i, &opt, msg, len);
        if (r != 0) return r;
        const char *flag = opt.flag, *v = opt.value;
        long lv;
        if (!strcmp(flag, "--data")) {
            o->data = v;
        } else if (!strcmp(flag, "--compressor") || !strcmp(flag, "--feedback")) {
            if (cli_option_spec(flag, v, "topk:k=1 or ef21", NULL, msg, len)) return -1;
            if (!strcmp(flag, "--compressor")) {
                o->compressor = v;
            } else if (!strncmp(v, "ef21:", 5) && strstr(v, "weight")) {
                snprintf(msg, len, "--feedback '%s': for EF21-W give --feedback ef21-w; the "
                         "program computes each rank's weight w_i = L_i / sum_j L_j", v);
                return -1;
            } else {
                o->feedback = v;
            }
        } else if (!strcmp(flag, "--factor")) {
            if (cli_option_double(flag, v, 0, 1, &o->factor, msg, len)) return -1;
        } else if (!strcmp(flag, "--alpha")) {
            if (cli_parse_double(v, &o->alpha) || o->alpha <= 0 || o->alpha > 1) {
                snprintf(msg, len, "--alpha '%s': need a number in (0, 1]", v);
                return -1;
            }
        } else if (!strcmp(flag, "--iters")) {
            if (cli_option_count(flag, v, LONG_MAX - 1, &o->iters, msg, len)) return -1;
        } else if (!strcmp(flag, "--x0")) {
            if (!strcmp(v, "zero")) {
                o->x0_random = 0;
            } else if (!strncmp(v, "randn:", 6) &&
                       !cli_parse_count(v + 6, NULL, LONG_MAX, &lv)) {
                o->x0_random = 1;
                o->x0_seed = (uint64_t)lv;
            } else {
                snprintf(msg, len, "--x0 '%s': accepted are zero and randn:SEED (SEED an "
                         "integer >= 0)", v);
                return -1;
            }
        } else if (!strcmp(flag, "--report")) {
            if (cli_report_parse(v, &o->report, msg, len)) return -1;
        } else {
            snprintf(msg, len, "unknown option '%s' (--help lists them)", flag);
            return -1;
        }
    }
    if (!o->data) {
        snprintf(msg, len, "--data FILE is required, e.g. --data "
                 "/work/shared/data/libsvm/mushrooms.txt");
        return -1;
    }
    if (cli_report_finish(&o->report, o->iters, msg, len)) return -1;
    /* A file that cannot be opened is a usage error, found before MPI starts. */
    FILE *f = fopen(o->data, "r");
    if (!f) {
        snprintf(msg, len, "--data '%s': cannot open it: %s", o->data, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* ---- The start point -------------------------------------------------------------------- */

/* splitmix64: a small generator, the same stream on every rank for the same seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* x ~ N(0, I) by Box-Muller from uniforms in (0, 1]. */
static void draw_normal(uint64_t seed, double *x, size_t d)
{
    uint64_t s = seed;
    for (size_t k = 0; k < d; k += 2) {
        double u1 = ((double)(splitmix64(&s) >> 11) + 1) * 0x1p-53;
        double u2 = (double)(splitmix64(&s) >> 11) * 0x1p-53;
        double r = sqrt(-2 * log(u1)), a = 2 * M_PI * u2;
        x[k] = r * cos(a);
        if (k + 1 < d) x[k + 1] = r * sin(a);
    }
}

/* ---- The smoothness constants ----------------------------------------------------------- */

/* The smoothness constants: L of all rows in *L and every rank's L_i in Li (n wide), the same
 * on every rank. Collective; the ranks agree on failure before each collective step, so none
 * is left waiting. 0, or -1 with a message (allocation or MPI). */
static int smoothness(const logreg_rows_t *A, size_t N, int rank, double *L, double *Li,
                      char *msg, size_t len)
{
    const size_t d = A->cols;
    double *gram = calloc(d * d + 1, sizeof *gram), lmax = 0;
    int ok = gram != NULL;
    if (ok) {
        logreg_gram_add(A, gram);
        ok = logreg_lambda_max(gram, d, &lmax) == 0;
    }
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        free(gram);
        snprintf(msg, len, "cannot allocate the %zu x %zu Gram matrix", d, d);
        return -1;
    }
    double mine = lmax / (4.0 * (double)A->rows) + 2 * LAMBDA;
    /* the full Gram matrix, summed on rank 0, which alone computes L; NaN says it failed */
    double all = NAN;
    if (MPI_Reduce(rank == 0 ? MPI_IN_PLACE : gram, gram, (int)(d * d), MPI_DOUBLE, MPI_SUM, 0,
                   MPI_COMM_WORLD) == MPI_SUCCESS &&
        rank == 0 && logreg_lambda_max(gram, d, &lmax) == 0)
        all = lmax / (4.0 * (double)N) + 2 * LAMBDA;
    free(gram);
    if (MPI_Bcast(&all, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD) != MPI_SUCCESS || isnan(all) ||
        MPI_Allgather(&mine, 1, MPI_DOUBLE, Li, 1, MPI_DOUBLE, MPI_COMM_WORLD) != MPI_SUCCESS) {
        snprintf(msg, len, "cannot compute L from the %zu x %zu Gram matrix of all rows (rank 0 "
                 "out of memory, or MPI failed)", d, d);
        return -1;
    }
    *L = all;
    return 0;
}

/* ---- Main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    opts_t o;
    char msg[1024];
    int pr = parse_args(argc, argv, &o, msg, sizeof msg);
    if (pr != 0) {
        cli_report_free(&o.report);
        return cli_usage_print(PROG, pr, msg, usage);
    }

    MPI_Init(&argc, &argv);
    int rank, size, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    terse_comm_t *tc = NULL;
    libsvm_data_t D = {0};
    logreg_rows_t A = {0};
    double *x = NULL, *gsum = NULL, *exact = NULL, *Li = NULL;
    float *g = NULL;
    terse_status_t s;

    /* Data: this rank's rows only; every rank parses the whole file, so all agree on N, d
     * and the label mapping, and meet the same errors. */
    int ok = libsvm_read_part(o.data, 0, size, rank, &D, msg) == 0;
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    const size_t N = D.total_rows, d = D.cols;
    if ((size_t)size > N) { /* every rank needs a row: f_i averages over them */
        if (rank == 0)
            fprintf(stderr, PROG ": %d ranks for %zu rows: every rank needs at least one row; "
                    "run at most %zu ranks\n", size, N, N);
        rc = 2;
        goto out;
    }
    /* the d x d Gram matrices travel in one MPI call */
    ok = d <= (size_t)INT_MAX / (d ? d : 1);
    snprintf(msg, sizeof msg, "%zu features: too many for the %zu x %zu Gram matrix of the "
             "stepsize (at most 46340)", d, d, d);
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    ok = logreg_rows_build(&D, &A) == 0;
    if (ok) {
        x = calloc(d + 1, sizeof *x);
        gsum = malloc((d + 1) * sizeof *gsum);
        exact = malloc((d + 1) * sizeof *exact);
        g = malloc((d + 1) * sizeof *g);
        Li = malloc((size_t)size * sizeof *Li);
        ok = x && gsum && exact && g && Li;
    }
    snprintf(msg, sizeof msg, "cannot allocate the model of %zu features and %zu rows", d, D.rows);
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    free(D.x); /* the passes use the sparse copy A */
    D.x = NULL;

    /* The smoothness constants: L, every L_i, their quadratic and arithmetic means. */
    double L = 0;
    ok = smoothness(&A, N, rank, &L, Li, msg, sizeof msg) == 0;
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    const ef21_means_t Lm = ef21_means(Li, size);

    /* The communicator. min_size=0: the model is compressed however small it is. EF21-W: each
     * rank's own weight, which terse allows to differ between ranks. */
    char feedback[128], in_effect[1024];
    if (!strcmp(o.feedback, "ef21-w"))
        snprintf(feedback, sizeof feedback, "ef21:weight=%.17g", Li[rank] / Lm.sum);
    else
        snprintf(feedback, sizeof feedback, "%s", o.feedback);
    int layer = -1;
    int open_rc = cli_comm_open(PROG, rank, o.compressor, feedback, "ef21_logreg.x", d, &tc,
                                &layer, in_effect, sizeof in_effect);
    if (open_rc != 0) {
        rc = open_rc;
        goto out;
    }
    terse_stats_t st;
    s = terse_layer_stats(tc, layer, &st);
    if (!cli_all_ok_terse(PROG, s, rank, "terse_layer_stats")) goto out;

    /* The stepsize. The method in force decides Ltilde (the TERSE_* variables may have
     * replaced the one asked for): L_AM for EF21 with weights, L_QM otherwise. */
    int alpha_known = 1;
    const double alpha = o.alpha > 0 ? o.alpha : ef21_codec_alpha(&st, d, &alpha_known);
    const char *fb_in_effect = strstr(in_effect, "feedback=");
    const int weighted = fb_in_effect && !strncmp(fb_in_effect, "feedback=ef21:weight=", 21);
    const ef21_step_t step = ef21_step(alpha, o.factor, L, weighted ? Lm.am : Lm.qm);

    if (o.x0_random) draw_normal(o.x0_seed, x, d);

    if (rank == 0) {
        size_t f0, n0, fl, nl; /* first rank's and last rank's share */
        libsvm_split(N, size, 0, &f0, &n0);
        libsvm_split(N, size, size - 1, &fl, &nl);
        printf("# " PROG ": data %s: %zu rows x %zu features, ", o.data, N, d);
        if (D.label_pos != D.label_neg)
            printf("label %g -> +1, %g -> -1\n", D.label_pos, D.label_neg);
        else /* a one-class file: libsvm.h maps the value by its sign */
            printf("one label value %g -> %s1\n", D.label_pos, D.label_pos > 0 ? "+" : "-");
        if (size == 1)
            printf("# ranks 1: all %zu rows\n", N);
        else
            printf("# ranks %d: %zu rows on %s %s%d, %zu on rank %d (sequential split, "
                   "remainder to the last); f = mean of the ranks' f_i\n", size, n0,
                   size > 2 ? "each of ranks" : "rank", size > 2 ? "0.." : "", size - 2, nl,
                   size - 1);
        printf("# model: logistic loss + %g sum x^2/(1+x^2); x0 ", LAMBDA);
        if (o.x0_random) {
            double n2 = 0;
            for (size_t k = 0; k < d; k++) n2 += x[k] * x[k];
            printf("randn:%llu (|x0|^2 = %.6g)\n", (unsigned long long)o.x0_seed, n2);
        } else {
            printf("zero\n");
        }
        printf("# smoothness: L %.9g, L_i in [%.9g, %.9g], L_QM %.9g, L_AM %.9g\n", L, Lm.min,
               Lm.max, Lm.qm, Lm.am);
        ef21_step_print(stdout, &step, o.alpha > 0 ? "given" : st.codec,
                        o.alpha > 0 || alpha_known ? "" :
                        ": no bound known for this codec, 1 assumed; --alpha sets it",
                        weighted ? "L_AM" : "L_QM");
        printf("# terse %u, config (rank 0): %s\n", terse_version(), in_effect);
        printf("# bits: 8 x the bytes of this rank's terse messages so far\n");
        fflush(stdout);
    }

    /* The iterations. Step t computes the local gradients at x_t once: for the report (when
     * t is a report iteration) and for the update. */
    double t0 = MPI_Wtime();
    uint64_t bits = 0;
    for (long t = 0;; t++) {
        logreg_pass(&A, x, NULL, NULL, gsum);
        const double inv_m = 1.0 / (double)A.rows;
        for (size_t k = 0; k < d; k++) gsum[k] *= inv_m; /* grad of rank i's mean loss */
        if (cli_report_due(&o.report, t)) {
            /* |grad f|^2 in double: the mean over ranks of the losses' gradients, plus the
             * regulariser's gradient once (it is the same on every rank) */
            cli_sum_exact(PROG, rank, gsum, exact, (int)d);
            double gn = 0;
            for (size_t k = 0; k < d; k++) {
                double gk = exact[k] / size + logreg_reg_grad(LOGREG_REG_NONCONVEX, LAMBDA, x[k]);
                gn += gk * gk;
            }
            if (rank == 0) {
                printf("iter %ld gradnorm2 %.6e bits %llu\n", t, gn, (unsigned long long)bits);
                fflush(stdout);
            }
        }
        if (t == o.iters) break;
        for (size_t k = 0; k < d; k++)
            g[k] = (float)(gsum[k] + logreg_reg_grad(LOGREG_REG_NONCONVEX, LAMBDA, x[k]));
        s = terse_allreduce(tc, layer, g);
        if (s == TERSE_OK) s = terse_layer_stats(tc, layer, &st);
        if (s != TERSE_OK) {
            cli_loop_failed(PROG, rank, size, "terse_allreduce", s);
            goto out;
        }
        bits += 8 * (uint64_t)st.wire_bytes;
        s = terse_step_end(tc);
        if (s != TERSE_OK) {
            cli_loop_failed(PROG, rank, size, "terse_step_end", s);
            goto out;
        }
        for (size_t k = 0; k < d; k++) x[k] -= step.gamma * (double)g[k];
    }
    double seconds = MPI_Wtime() - t0;
    if (rank == 0) {
        printf("# done: %ld iterations in %.3f s; codec %s, feedback %s; %llu bits per worker",
               o.iters, seconds, st.codec, st.feedback, (unsigned long long)bits);
        size_t k = ef21_codec_k(&st, d);
        if (k > 0) /* the paper's count: k values of 32 bits per iteration */
            printf(" (the EF21 paper's count t k 32: %.0f)", (double)o.iters * (double)k * 32);
        printf("\n");
        fflush(stdout);
    }
    rc = 0;

out:
    if (cli_comm_destroy(PROG, rank, tc)) rc = 1;
    logreg_rows_free(&A);
    libsvm_free(&D);
    free(x);
    free(gsum);
    free(exact);
    free(g);
    free(Li);
    cli_report_free(&o.report);
    MPI_Finalize();
    return rc;
}
