/* hetero_lsq: least squares with strongly different data on every rank, the setting in which
 * classic error feedback (EF14) stalls and EF21 and EControl converge (ALGORITHMS.md §3.2,
 * §4.1, §5; the EControl paper's synthetic least-squares experiments are of this kind).
 *
 *     mpirun -np 10 hetero_lsq --compressor topk:k=1 --feedback ef21 --factor 16 --iters 1000
 *
 * The problem. Rank i of n holds m rows A_i (m x d) and b_i, and
 *
 *     f_i(x) = 1/(2m) |A_i x - b_i|^2,      f(x) = 1/n sum_i f_i(x).
 *
 * The data come from --seed alone, so every run with the same options sees the same problem:
 *   A_i  = s_i G_i diag(c_i): G_i has N(0, 1) entries; the row scale s_i = 2^(2i/(n-1) - 1)
 *        runs from 1/2 on rank 0 to 2 on rank n-1 (the ranks' curvatures L_i differ by about
 *        16x); the column scales c_ij = 10^(-u_ij/2), u_ij uniform in [0, 1), differ per rank
 *        (each A_i^T A_i is conditioned differently)
 *   b_i  = A_i x_i*, x_i* = xbar + Z u_i, with xbar ~ N(0, I) shared and u_i ~ N(0, I) the
 *        rank's own; Z = --hetero. Each f_i is zero at its own x_i*, but f's minimiser x*
 *        solves the averaged normal equations, so grad f_i(x*) = H_i (x* - x_i*) is large
 *        (it grows with Z) while grad f(x*) = 0. The header prints the heterogeneity
 *        zeta^2 = mean_i |grad f_i(x*)|^2.
 *        Z = 0 gives every rank the same minimiser, and EF14 converges too.
 *
 * Why EF14 stalls. Near x*, rank i's gradient stays near grad f_i(x*) != 0. EF14 sends
 * C(g_i + e_i) and keeps the rest in its error memory e_i, which must therefore carry a large,
 * non-vanishing gradient: with TopK k = 1 each rank sends one coordinate of a vector of size
 * about |grad f_i(x*)|, and the mean of the n messages is not zero at x*. The iterates keep
 * moving around x*, at a distance that grows with gamma. EF21 and EControl compress the
 * difference between the new local gradient and the rank's running estimate of it, which
 * vanishes at x*, and converge linearly (down to float32 rounding).
 *
 * The method. Every iteration each rank computes its full local gradient
 * grad f_i(x) = H_i x - r_i (H_i = A_i^T A_i / m and r_i = A_i^T b_i / m, formed once in
 * double) and hands it to terse as float32 (one layer of d x 1, min_size=0); every rank then
 * takes x <- x - gamma g, g being terse's estimate. The estimator is terse's feedback method
 * (--feedback: ef = EF14 in the "learning rate outside" form, ef21, econtrol:eta=E, ...),
 * which this program does not re-implement.
 *
 * The stepsize is the EF21 code's (ALGORITHMS.md §4.1), with L_QM:
 *   H      = 1/n sum_i H_i,  L = lambda_max(H),  L_i = lambda_max(H_i),  L_QM = sqrt(mean L_i^2)
 *   alpha  = k/d for topk and randk (k as terse computes it), 1 otherwise
 *   theta  = 1 - sqrt(1 - alpha),  beta = (1 - alpha) / theta
 *   gamma  = factor / (L + L_QM sqrt(beta/theta))
 * The same gamma for every method, so that runs with the same --factor compare directly.
 *
 * The reference. x* solves H x* = 1/n sum_i r_i, by Cholesky in double on rank 0, and is
 * broadcast; the header gives |grad f(x*)|^2 as a check. mu = lambda_min(H), computed as
 * L - lambda_max(L I - H), gives the condition number L/mu.
 *
 * The output (rank 0): '#' lines, then one line per report iteration t,
 *     iter <t> gradnorm2 <|grad f(x_t)|^2> dist2 <|x_t - x*|^2> bits <bits per worker so far>
 * gradnorm2 is exact: the ranks' local gradients at x_t in double, averaged with a plain
 * MPI_Allreduce apart from terse. bits is 8 x the bytes of this rank's terse messages so far
 * (a TopK message is 4 + 8k bytes; the first message of ef21 and econtrol, uncompressed, 4d).
 * A run whose gradient overflows float32 ends with a '# diverged' line and exit status 3.
 */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ef21_step.h"
#include "logreg_model.h" /* logreg_lambda_max: the largest eigenvalue of a symmetric matrix */
#include "terse.h"
#include "terse_mpi.h"

#define PROG "hetero_lsq"
#define MAX_DIM 1024 /* three d x d matrices per rank, O(d^3) work on rank 0 */

typedef struct {
    const char *compressor; /* codec spec                                   */
    const char *feedback;   /* feedback spec                                */
    double factor;          /* the stepsize multiplier                      */
    double hetero;          /* Z: the spread of the ranks' minimisers        */
    long iters;
    long dim;               /* d                                            */
    long rows;              /* m, rows per rank; 0: 4 d                     */
    uint64_t seed;
    cli_report_t report;    /* report iterations                            */
} opts_t;

static void usage(FILE *f)
{
    fputs("usage: mpirun -np N hetero_lsq [options]\n"
          "\n"
          "Least squares f = mean_i 1/(2m) |A_i x - b_i|^2 with data drawn from --seed so that\n"
          "the ranks' minimisers differ strongly; full local gradients averaged by terse with\n"
          "the given compressor and feedback, and the EF21 stepsize\n"
          "gamma = factor / (L + L_QM sqrt(beta/theta)).\n"
          "\n"
          "  --compressor SPEC    terse codec (default topk:k=1)\n"
          "  --feedback SPEC      ef (EF14), ef21 (default), econtrol[:eta=E],\n"
          "                       ef21sgdm[:eta=E], none\n"
          "  --factor F           stepsize multiplier, > 0 (default 1: the theoretical step)\n"
          "  --iters T            iterations, >= 0 (default 1000)\n"
          "  --report T1,T2,...   iterations to report, increasing, each <= --iters (default\n"
          "                       1, 10, 100, ... up to --iters, and --iters itself)\n"
          "  --seed S             the data's seed, an integer >= 0 (default 1)\n"
          "  --dim D              columns d, 1..1024 (default 20)\n"
          "  --rows M             rows per rank, >= d (default 4 d)\n"
          "  --hetero Z           spread of the ranks' minimisers x_i* = xbar + Z u_i, >= 0\n"
          "                       (default 3; 0: one common minimiser)\n"
          "  --help               this text\n"
          "\n"
          "Output (rank 0): '#' header lines, then one line per report iteration t\n"
          "  iter <t> gradnorm2 <|grad f(x_t)|^2> dist2 <|x_t - x*|^2> bits <b>\n"
          "with b = 8 x the bytes this rank sent so far, and a closing '#' line.\n"
          "\n"
          "Exit status: 0 on success, 1 on an error, 2 on bad usage (options, a configuration\n"
          "terse rejects), 3 when the iterates diverge (a gradient overflows float32).\n",
          f);
}

/* ---- Arguments -------------------------------------------------------------------------- */

/* 0: run; 1: --help was asked; -1: bad usage, with a message in msg. */
static int parse_args(int argc, char **argv, opts_t *o, char *msg, size_t len)
{
    *o = (opts_t){.compressor = "topk:k=1", .feedback = "ef21", .factor = 1, .hetero = 3,
                  .iters = 1000, .dim = 20, .seed = 1};
    for (int i = 1; i < argc; i++) {
        cli_option_t opt;
        int r = cli_option_next(argc, argv, &i, &opt, msg, len);
        if (r != 0) return r;
        const char *flag = opt.flag, *v = opt.value;
        long lv;
        if (!strcmp(flag, "--compressor") || !strcmp(flag, "--feedback")) {
            if (cli_option_spec(flag, v, "topk:k=1 or econtrol:eta=0.05", NULL, msg, len))
                return -1;
            *(!strcmp(flag, "--compressor") ? &o->compressor : &o->feedback) = v;
        } else if (!strcmp(flag, "--factor")) {
            if (cli_option_double(flag, v, 0, 1, &o->factor, msg, len)) return -1;
        } else if (!strcmp(flag, "--hetero")) {
            if (cli_option_double(flag, v, 0, 0, &o->hetero, msg, len)) return -1;
        } else if (!strcmp(flag, "--iters")) {
            if (cli_option_count(flag, v, LONG_MAX - 1, &o->iters, msg, len)) return -1;
        } else if (!strcmp(flag, "--seed")) {
            if (cli_option_count(flag, v, LONG_MAX, &lv, msg, len)) return -1;
            o->seed = (uint64_t)lv;
        } else if (!strcmp(flag, "--dim")) {
            if (cli_parse_count(v, NULL, MAX_DIM, &lv) || lv < 1) {
                snprintf(msg, len, "--dim '%s': need an integer in 1..%d", v, MAX_DIM);
                return -1;
            }
            o->dim = lv;
        } else if (!strcmp(flag, "--rows")) {
            if (cli_parse_count(v, NULL, INT_MAX, &lv) || lv < 1) {
                snprintf(msg, len, "--rows '%s': need an integer >= 1 (and >= --dim)", v);
                return -1;
            }
            o->rows = lv;
        } else if (!strcmp(flag, "--report")) {
            if (cli_report_parse(v, &o->report, msg, len)) return -1;
        } else {
            snprintf(msg, len, "unknown option '%s' (--help lists them)", flag);
            return -1;
        }
    }
    if (o->rows == 0) o->rows = 4 * o->dim;
    if (o->rows < o->dim) { /* then A_i^T A_i is singular, and x_i* is not f_i's only minimiser */
        snprintf(msg, len, "--rows %ld is below --dim %ld: every rank needs at least d rows",
                 o->rows, o->dim);
        return -1;
    }
    if (cli_report_finish(&o->report, o->iters, msg, len)) return -1;
    return 0;
}

/* ---- The data --------------------------------------------------------------------------- */

/* splitmix64: a small generator whose stream depends only on its seed. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double draw_uniform(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * 0x1p-53;
}

/* N(0, 1) by Box-Muller, one value per pair of uniforms: simple, and the data are small. */
static double draw_normal(uint64_t *s)
{
    double u1 = 1 - draw_uniform(s); /* in (0, 1]: log(u1) is finite */
    double u2 = draw_uniform(s);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* Rank `rank`'s H_i = A_i^T A_i / m (d x d, both triangles) and r_i = A_i^T b_i / m, as the
 * file header describes; A_i is drawn one row at a time and never stored. xi, c and a (d wide
 * each) are scratch: xi is left holding x_i*, c the column scales times s_i, a the last row. */
static void problem_make(const opts_t *o, int rank, int size, double *H, double *r, double *xi,
                         double *c, double *a)
{
    const size_t d = (size_t)o->dim, m = (size_t)o->rows;
    uint64_t common = o->seed;
    /* an odd multiplier keeps the ranks' seeds apart; splitmix64 decorrelates the streams */
    uint64_t own = o->seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(rank + 1));
    const double s = size > 1 ? exp2(2.0 * rank / (size - 1) - 1) : 1;
    for (size_t j = 0; j < d; j++) xi[j] = draw_normal(&common);
    for (size_t j = 0; j < d; j++) c[j] = s * pow(10, -draw_uniform(&own) / 2);
    for (size_t j = 0; j < d; j++) xi[j] += o->hetero * draw_normal(&own);
    memset(H, 0, d * d * sizeof *H);
    memset(r, 0, d * sizeof *r);
    for (size_t row = 0; row < m; row++) {
        double b = 0;
        for (size_t j = 0; j < d; j++) {
            a[j] = c[j] * draw_normal(&own);
            b += a[j] * xi[j];
        }
        for (size_t j = 0; j < d; j++) {
            r[j] += a[j] * b;
            for (size_t k = 0; k <= j; k++) H[j * d + k] += a[j] * a[k];
        }
    }
    for (size_t j = 0; j < d; j++) {
        r[j] /= (double)m;
        for (size_t k = 0; k <= j; k++) H[k * d + j] = H[j * d + k] /= (double)m;
    }
}

/* grad = H x - r (d wide). */
static void problem_grad(const double *H, const double *r, const double *x, size_t d,
                         double *grad)
{
    for (size_t j = 0; j < d; j++) {
        double gj = -r[j];
        for (size_t k = 0; k < d; k++) gj += H[j * d + k] * x[k];
        grad[j] = gj;
    }
}

/* Solves H x = r for symmetric positive definite H (d x d, overwritten by its Cholesky
 * factor) in place of r. 0, or -1 when a pivot is not positive (H is not positive definite
 * in double). */
static int cholesky_solve(double *H, double *r, size_t d)
{
    for (size_t j = 0; j < d; j++) {
        double p = H[j * d + j];
        for (size_t k = 0; k < j; k++) p -= H[j * d + k] * H[j * d + k];
        if (!(p > 0)) return -1;
        H[j * d + j] = sqrt(p);
        for (size_t i = j + 1; i < d; i++) {
            double v = H[i * d + j];
            for (size_t k = 0; k < j; k++) v -= H[i * d + k] * H[j * d + k];
            H[i * d + j] = v / H[j * d + j];
        }
    }
    for (size_t i = 0; i < d; i++) { /* L y = r */
        for (size_t k = 0; k < i; k++) r[i] -= H[i * d + k] * r[k];
        r[i] /= H[i * d + i];
    }
    for (size_t i = d; i-- > 0;) { /* L^T x = y */
        for (size_t k = i + 1; k < d; k++) r[i] -= H[k * d + i] * r[k];
        r[i] /= H[i * d + i];
    }
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

    const size_t d = (size_t)o.dim;
    terse_comm_t *tc = NULL;
    /* Hi, ri: this rank's f_i; H, W: rank 0's mean Hessian and scratch (d x d each) */
    double *Hi = malloc(d * d * sizeof *Hi), *ri = malloc(d * sizeof *ri);
    double *H = malloc(d * d * sizeof *H), *W = malloc(d * d * sizeof *W);
    double *x = calloc(d, sizeof *x), *grad = malloc(d * sizeof *grad);
    double *exact = malloc(d * sizeof *exact), *Li = malloc((size_t)size * sizeof *Li);
    double *shared = malloc((d + 2) * sizeof *shared); /* L, mu, x*: rank 0's broadcast */
    double *s1 = malloc(d * sizeof *s1), *s2 = malloc(d * sizeof *s2); /* d-wide scratch */
    float *g = malloc(d * sizeof *g);
    terse_status_t s;
    int ok = Hi && ri && H && W && x && grad && exact && Li && shared && s1 && s2 && g;
    snprintf(msg, sizeof msg, "cannot allocate the problem of %zu columns", d);
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;

    /* The data, this rank's share, and L_i. */
    double lmax = 0;
    problem_make(&o, rank, size, Hi, ri, s1, s2, grad);
    ok = logreg_lambda_max(Hi, d, &lmax) == 0 &&
         MPI_Allgather(&lmax, 1, MPI_DOUBLE, Li, 1, MPI_DOUBLE, MPI_COMM_WORLD) == MPI_SUCCESS;
    snprintf(msg, sizeof msg, "cannot compute L_i (out of memory, or MPI failed)");
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;

    /* On rank 0: H and the mean of the r_i, then L, mu and x*, which every rank receives;
     * NaN in shared[0] says that rank 0 failed. */
    shared[0] = NAN;
    if (MPI_Reduce(Hi, H, (int)(d * d), MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD) ==
            MPI_SUCCESS &&
        MPI_Reduce(ri, shared + 2, (int)d, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD) ==
            MPI_SUCCESS &&
        rank == 0) {
        for (size_t j = 0; j < d * d; j++) H[j] /= size;
        for (size_t j = 0; j < d; j++) shared[2 + j] /= size;
        double L = NAN, top = NAN;
        if (logreg_lambda_max(H, d, &L) == 0) {
            for (size_t j = 0; j < d * d; j++) W[j] = -H[j]; /* L I - H */
            for (size_t j = 0; j < d; j++) W[j * d + j] += L;
            if (logreg_lambda_max(W, d, &top) == 0 && cholesky_solve(H, shared + 2, d) == 0) {
                shared[0] = L;
                shared[1] = L - top;
            }
        }
    }
    ok = MPI_Bcast(shared, (int)(d + 2), MPI_DOUBLE, 0, MPI_COMM_WORLD) == MPI_SUCCESS &&
         !isnan(shared[0]);
    snprintf(msg, sizeof msg, "cannot solve the normal equations for x* (out of memory, a "
             "matrix not positive definite in double, or MPI failed)");
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    const double L = shared[0], mu = shared[1];
    const double *xstar = shared + 2;

    /* The heterogeneity zeta^2 = mean_i |grad f_i(x*)|^2, and |grad f(x*)|^2 as a check. */
    double mine = 0, zeta2 = 0;
    problem_grad(Hi, ri, xstar, d, grad);
    for (size_t j = 0; j < d; j++) mine += grad[j] * grad[j];
    ok = MPI_Allreduce(&mine, &zeta2, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS &&
         MPI_Allreduce(grad, exact, (int)d, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS;
    snprintf(msg, sizeof msg, "MPI_Allreduce failed");
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    zeta2 /= size;
    double gstar = 0, xstar2 = 0;
    for (size_t j = 0; j < d; j++) {
        gstar += (exact[j] / size) * (exact[j] / size);
        xstar2 += xstar[j] * xstar[j];
    }

    const ef21_means_t Lm = ef21_means(Li, size);

    /* The communicator, with min_size=0. */
    char in_effect[1024];
    int layer = -1;
    int open_rc = cli_comm_open(PROG, rank, o.compressor, o.feedback, "hetero_lsq.x", d, &tc,
                                &layer, in_effect, sizeof in_effect);
    if (open_rc != 0) {
        rc = open_rc;
        goto out;
    }
    terse_stats_t st;
    s = terse_layer_stats(tc, layer, &st);
    if (!cli_all_ok_terse(PROG, s, rank, "terse_layer_stats")) goto out;

    /* The stepsize: alpha = k/d for the sparsifiers, else 1 (no other codec's bound is used
     * here, unlike ef21_logreg), and L_QM for every method. */
    const size_t k = ef21_codec_k(&st, d);
    const ef21_step_t step = ef21_step(k > 0 ? (double)k / (double)d : 1, o.factor, L, Lm.qm);

    if (rank == 0) {
        printf("# " PROG ": least squares, %d rank%s x %ld rows x %zu columns, seed %llu, "
               "hetero %g\n", size, size > 1 ? "s" : "", o.rows, d,
               (unsigned long long)o.seed, o.hetero);
        printf("# data: A_i = s_i G_i diag(c_i), %s, c_ij = 10^(-U[0,1)/2); b_i = A_i x_i*, "
               "x_i* = xbar + %g u_i; x0 = 0\n", size > 1 ? "s_i = 2^(2i/(n-1)-1) in [0.5, 2]"
               : "s_0 = 1", o.hetero);
        printf("# solution: x* by Cholesky on rank 0, |x*|^2 %.6g, |grad f(x*)|^2 %.3g; "
               "heterogeneity zeta^2 = mean_i |grad f_i(x*)|^2 = %.6g\n", xstar2, gstar, zeta2);
        printf("# smoothness: L %.9g, mu %.9g, L/mu %.4g, L_i in [%.9g, %.9g], L_QM %.9g, "
               "L_AM %.9g\n", L, mu, L / mu, Lm.min, Lm.max, Lm.qm, Lm.am);
        ef21_step_print(stdout, &step, st.codec, "", "L_QM");
        printf("# terse %u, config (rank 0): %s\n", terse_version(), in_effect);
        printf("# bits: 8 x the bytes of this rank's terse messages so far\n");
        fflush(stdout);
    }

    /* The iterations. Step t computes the local gradient at x_t once: for the report (when t
     * is a report iteration) and for the update. */
    double t0 = MPI_Wtime();
    uint64_t bits = 0;
    for (long t = 0;; t++) {
        problem_grad(Hi, ri, x, d, grad);
        if (cli_report_due(&o.report, t)) {
            cli_sum_exact(PROG, rank, grad, exact, (int)d);
            double gn = 0, dist = 0;
            for (size_t j = 0; j < d; j++) {
                gn += (exact[j] / size) * (exact[j] / size);
                dist += (x[j] - xstar[j]) * (x[j] - xstar[j]);
            }
            if (rank == 0) {
                printf("iter %ld gradnorm2 %.6e dist2 %.6e bits %llu\n", t, gn, dist,
                       (unsigned long long)bits);
                fflush(stdout);
            }
        }
        if (t == o.iters) break;
        for (size_t j = 0; j < d; j++) g[j] = (float)grad[j];
        s = terse_allreduce(tc, layer, g);
        if (s == TERSE_ERR_NONFINITE) { /* every rank gets it: the iterates have diverged */
            if (rank == 0) {
                printf("# diverged: a rank's gradient overflows float32 at iteration %ld\n", t);
                fflush(stdout);
            }
            rc = 3;
            goto out;
        }
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
        for (size_t j = 0; j < d; j++) x[j] -= step.gamma * (double)g[j];
    }
    double seconds = MPI_Wtime() - t0;
    if (rank == 0) {
        printf("# done: %ld iterations in %.3f s; codec %s, feedback %s; %llu bits per "
               "worker\n", o.iters, seconds, st.codec, st.feedback, (unsigned long long)bits);
        fflush(stdout);
    }
    rc = 0;

out:
    if (cli_comm_destroy(PROG, rank, tc)) rc = 1;
    free(Hi);
    free(ri);
    free(H);
    free(W);
    free(s1);
    free(s2);
    free(x);
    free(grad);
    free(exact);
    free(Li);
    free(shared);
    free(g);
    cli_report_free(&o.report);
    MPI_Finalize();
    return rc;
}
