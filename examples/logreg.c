/* logreg: distributed logistic regression whose gradient allreduce goes through terse.
 *
 *     mpirun -np 4 logreg --data mushrooms.txt --compressor topk:density=0.1 --feedback ef
 *
 * The rows of a LibSVM file are split over the ranks sequentially (libsvm_split: equal chunks,
 * the remainder to the last rank). Every step each rank computes its full local gradient, terse
 * averages the ranks' gradients (compressed, with error feedback if asked), and every rank
 * takes the same gradient step x -= lr * g. The model is one layer of d x 1 floats.
 *
 * The problem, over all N rows (a_j, b_j) with b_j = +-1:
 *
 *     f(x) = 1/N sum_j log(1 + exp(-b_j a_j.x)) + R(x),
 *     R(x) = lambda/2 |x|^2                       (--reg l2, the default)
 *     R(x) = lambda sum_k x_k^2 / (1 + x_k^2)      (--reg nonconvex, as in the EF21 papers)
 *
 * Rank i's share of f is weighted so that the *mean* over ranks that terse computes is the
 * exact gradient of f even though the last rank holds more rows: rank i sends
 *     g_i = n/N sum_{j in rank i} grad log(1 + exp(-b_j a_j.x)) + grad R(x).
 *
 * What is printed shows true progress, not the compressed estimate: at each report step the
 * loss, the norm of the exact gradient of f and the training accuracy are computed in double
 * with a plain MPI_Allreduce, separately from the terse allreduce used for the update.
 */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "libsvm.h"
#include "logreg_model.h"
#include "terse.h"
#include "terse_mpi.h"

#define PROG "logreg"

typedef struct {
    const char *data;       /* LibSVM file (required)                       */
    const char *compressor; /* codec spec, "none" by default                */
    const char *feedback;   /* feedback spec, "none" by default             */
    double lr;              /* step size; 0 means 1/L                        */
    double lambda;          /* regularisation weight                        */
    logreg_reg_t reg;
    long iters;
    long report;            /* print every `report` steps                    */
    size_t features;        /* 0: the largest index in the file              */
} opts_t;

static void usage(FILE *f)
{
    fputs("usage: mpirun -np N logreg --data FILE [options]\n"
          "\n"
          "Distributed logistic regression on a LibSVM file: the rows are split over the ranks,\n"
          "and every step the ranks' gradients are averaged by terse_allreduce (compressed as\n"
          "asked), then x -= lr * g. Rank 0 prints the exact loss, gradient norm and training\n"
          "accuracy every --report steps, computed apart from the compressed update.\n"
          "\n"
          "  --data FILE         LibSVM file, e.g. /work/shared/data/libsvm/mushrooms.txt\n"
          "                      (required); labels: the larger value is +1, the other -1\n"
          "  --compressor SPEC   terse codec, e.g. topk:density=0.1, fp16 (default none)\n"
          "  --feedback SPEC     terse error feedback, e.g. ef (default none)\n"
          "  --reg l2|nonconvex  l2: lambda/2 |x|^2 (default); nonconvex: lambda sum x^2/(1+x^2)\n"
          "  --lambda L          regularisation weight (default 1e-3)\n"
          "  --lr LR             step size (default 1/L, with L the smoothness constant\n"
          "                      lambda_max(A^T A)/(4N) + lambda for l2, + 2 lambda for\n"
          "                      nonconvex; lambda_max by power iteration on the data)\n"
          "  --iters T           gradient steps (default 200)\n"
          "  --report K          print every K steps, and after the last (default 20)\n"
          "  --features D        number of features (default: the largest index in the file)\n"
          "  --help              this text\n"
          "\n"
          "The communicator's configuration is \"compressor=SPEC; feedback=SPEC; min_size=0\":\n"
          "min_size=0 makes terse compress the model however small it is (by default layers\n"
          "under 1024 elements go dense, and mushrooms has 112 features). The TERSE_CONFIG,\n"
          "TERSE_COMPRESSOR and TERSE_FEEDBACK environment variables override it, as in any\n"
          "terse program; the header shows the configuration in effect.\n"
          "\n"
          "Output (rank 0): '#' header lines, then one line per report step\n"
          "  iter <t> loss <f(x_t)> gradnorm <|grad f(x_t)|> accuracy <fraction correct>\n"
          "and a '# summary' line with the bytes terse sent per step against a dense allreduce.\n"
          "\n"
          "Exit status: 0 on success, 1 on an error (data or terse), 2 on bad usage.\n",
          f);
}

/* 0: run; 1: --help was asked; -1: bad usage, with a message in msg. Accepts "--flag VALUE"
 * and "--flag=VALUE". */
static int parse_args(int argc, char **argv, opts_t *o, char *msg, size_t len)
{
    *o = (opts_t){.compressor = "none", .feedback = "none", .lambda = 1e-3,
                  .reg = LOGREG_REG_L2, .iters = 200, .report = 20};
    for (int i = 1; i < argc; i++) {
        cli_option_t opt;
        int r = cli_option_next(argc, argv, &i, &opt, msg, len);
        if (r != 0) return r;
        const char *flag = opt.flag, *v = opt.value;
        long lv;
        if (!strcmp(flag, "--data")) {
            o->data = v;
        } else if (!strcmp(flag, "--compressor") || !strcmp(flag, "--feedback")) {
            if (cli_option_spec(flag, v, "topk:density=0.1 or ef",
                                "TERSE_CONFIG sets other keys", msg, len))
                return -1;
            if (!strcmp(flag, "--compressor")) o->compressor = v;
            else o->feedback = v;
        } else if (!strcmp(flag, "--reg")) {
            if (!strcmp(v, "l2")) o->reg = LOGREG_REG_L2;
            else if (!strcmp(v, "nonconvex")) o->reg = LOGREG_REG_NONCONVEX;
            else {
                snprintf(msg, len, "--reg '%s': accepted are l2 and nonconvex", v);
                return -1;
            }
        } else if (!strcmp(flag, "--lambda")) {
            if (cli_option_double(flag, v, 0, 0, &o->lambda, msg, len)) return -1;
        } else if (!strcmp(flag, "--lr")) {
            if (cli_option_double(flag, v, 0, 1, &o->lr, msg, len)) return -1;
        } else if (!strcmp(flag, "--iters")) {
            if (cli_option_long(flag, v, 0, &o->iters, msg, len)) return -1;
        } else if (!strcmp(flag, "--report")) {
            if (cli_option_long(flag, v, 1, &o->report, msg, len)) return -1;
        } else if (!strcmp(flag, "--features")) {
            if (cli_parse_long(v, &lv) || lv < 0 || (unsigned long)lv > TERSE_MAX_LAYER_COUNT) {
                snprintf(msg, len, "--features '%s': need an integer from 0 (the largest index "
                         "in the file) to %zu", v, TERSE_MAX_LAYER_COUNT);
                return -1;
            }
            o->features = (size_t)lv;
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
    return 0;
}

/* ---- The step size ---------------------------------------------------------------------- */

/* lambda_max(A^T A) over all ranks' rows, by power iteration from the all-ones direction
 * (Rayleigh quotient, stopped when it changes by less than 1e-9 relative, or after 1000
 * rounds). It approaches from below; 1/L stays a safe step since gradient descent is stable
 * up to 2/L. Collective over comm. */
static int power_iteration(const logreg_rows_t *A, MPI_Comm comm, double *lmax, int *rounds)
{
    const size_t d = A->cols;
    double *v = malloc((d + 1) * sizeof *v), *w = malloc((d + 1) * sizeof *w);
    if (!v || !w) {
        free(v);
        free(w);
        return -1;
    }
    for (size_t k = 0; k < d; k++) v[k] = 1 / sqrt((double)d);
    double rq = 0;
    int r = 0;
    while (r < 1000) {
        r++;
        memset(w, 0, d * sizeof *w);
        for (size_t i = 0; i < A->rows; i++) {
            double z = 0;
            for (size_t j = A->ptr[i]; j < A->ptr[i + 1]; j++) z += A->val[j] * v[A->idx[j]];
            for (size_t j = A->ptr[i]; j < A->ptr[i + 1]; j++) w[A->idx[j]] += z * A->val[j];
        }
        if (MPI_Allreduce(MPI_IN_PLACE, w, (int)d, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS) {
            free(v);
            free(w);
            return -1;
        }
        double next = 0, norm = 0;
        for (size_t k = 0; k < d; k++) {
            next += v[k] * w[k];
            norm += w[k] * w[k];
        }
        norm = sqrt(norm);
        if (norm == 0) { /* A v = 0: all-zero data */
            rq = 0;
            break;
        }
        for (size_t k = 0; k < d; k++) v[k] = w[k] / norm;
        int done = fabs(next - rq) <= 1e-9 * next;
        rq = next;
        if (done) break;
    }
    free(v);
    free(w);
    *lmax = rq;
    *rounds = r;
    return 0;
}

/* ---- Main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    opts_t o;
    char msg[1024];
    int pr = parse_args(argc, argv, &o, msg, sizeof msg);
    if (pr != 0) return cli_usage_print(PROG, pr, msg, usage);

    MPI_Init(&argc, &argv);
    int rank, size, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    terse_comm_t *tc = NULL;
    double *x = NULL, *gsum = NULL, *exact = NULL;
    float *g = NULL;
    libsvm_data_t D = {0};
    logreg_rows_t A = {0};
    terse_status_t s;

    /* Data: this rank's rows only; every rank parses the whole file, so all agree on N, d
     * and the label mapping, and meet the same errors. */
    int ok = libsvm_read_part(o.data, o.features, size, rank, &D, msg) == 0;
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    const size_t N = D.total_rows, d = D.cols;
    ok = d <= (size_t)INT_MAX - 2;
    if (ok) {
        x = calloc(d + 1, sizeof *x);
        gsum = malloc((d + 1) * sizeof *gsum);
        exact = malloc((d + 2) * sizeof *exact);
        g = malloc((d + 1) * sizeof *g);
        ok = x && gsum && exact && g;
    }
    snprintf(msg, sizeof msg, "cannot allocate the model of %zu features", d);
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    /* The passes run over the sparse copy of the rows; the dense matrix is no longer needed. */
    ok = logreg_rows_build(&D, &A) == 0;
    snprintf(msg, sizeof msg, "cannot allocate the sparse copy of %zu rows", D.rows);
    if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
    free(D.x);
    D.x = NULL;

    /* The communicator, with min_size=0. A configuration terse rejects exits with status 1
     * here, as documented in the usage, not cli_comm_open's 2. */
    char in_effect[1024];
    int layer = -1;
    if (cli_comm_open(PROG, rank, o.compressor, o.feedback, "logreg.x", d, &tc, &layer,
                      in_effect, sizeof in_effect))
        goto out;

    /* The step size: 1/L unless given. */
    double lmax = 0, L = 0, lr = o.lr;
    int rounds = 0;
    if (lr == 0) {
        ok = power_iteration(&A, MPI_COMM_WORLD, &lmax, &rounds) == 0;
        snprintf(msg, sizeof msg, "power iteration for the step size failed (allocation or MPI)");
        if (!cli_all_ok(PROG, ok, rank, msg)) goto out;
        L = lmax / (4.0 * (double)N) + logreg_reg_smoothness(o.reg, o.lambda);
        lr = L > 0 ? 1 / L : 1;
    }

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
                   "remainder to the last)\n", size, n0, size > 2 ? "each of ranks" : "rank",
                   size > 2 ? "0.." : "", size - 2, nl, size - 1);
        printf("# model: logistic loss + %s, lambda %g; iters %ld; lr %.6g",
               o.reg == LOGREG_REG_L2 ? "l2 lambda/2 |x|^2" : "nonconvex lambda sum x^2/(1+x^2)",
               o.lambda, o.iters, lr);
        if (o.lr == 0)
            printf(" = 1/L, L = lambda_max(A^T A)/(4N) + %g = %.6g (power iteration, %d rounds)\n",
                   logreg_reg_smoothness(o.reg, o.lambda), L, rounds);
        else
            printf(" (given)\n");
        printf("# terse %u, config: %s\n", terse_version(), in_effect);
        fflush(stdout);
    }

    /* Training. Step t computes the gradient at x_t once: for the printout (exact, MPI in
     * double) when t is a report step, and for the update (compressed, terse in float). */
    const double weight = (double)size / (double)N;
    double t0 = MPI_Wtime(), final_loss = NAN;
    for (long t = 0;; t++) {
        double loss, correct;
        logreg_pass(&A, x, &loss, &correct, gsum);
        if (t % o.report == 0 || t == o.iters) {
            exact[0] = loss;
            exact[1] = correct;
            memcpy(exact + 2, gsum, d * sizeof *gsum);
            cli_sum_exact(PROG, rank, NULL, exact, (int)d + 2);
            double f = exact[0] / (double)N + logreg_reg_value(o.reg, o.lambda, x, d), gn = 0;
            for (size_t k = 0; k < d; k++) {
                double gk = exact[2 + k] / (double)N + logreg_reg_grad(o.reg, o.lambda, x[k]);
                gn += gk * gk;
            }
            final_loss = f;
            if (rank == 0) {
                printf("iter %ld loss %.8f gradnorm %.6e accuracy %.4f\n", t, f, sqrt(gn),
                       exact[1] / (double)N);
                fflush(stdout);
            }
        }
        if (t == o.iters) break;

        for (size_t k = 0; k < d; k++)
            g[k] = (float)(weight * gsum[k] + logreg_reg_grad(o.reg, o.lambda, x[k]));
        s = terse_allreduce(tc, layer, g);
        if (s != TERSE_OK) {
            cli_loop_failed(PROG, rank, size, "terse_allreduce", s);
            goto out;
        }
        s = terse_step_end(tc);
        if (s != TERSE_OK) {
            cli_loop_failed(PROG, rank, size, "terse_step_end", s);
            goto out;
        }
        for (size_t k = 0; k < d; k++) x[k] -= lr * (double)g[k];
    }
    double seconds = MPI_Wtime() - t0;

    /* What went over the wire: terse's own count (headers included) against a dense fp32
     * ring allreduce of the same model, 2 (n-1)/n x 4d bytes per rank and step. */
    terse_stats_t st;
    s = terse_layer_stats(tc, layer, &st);
    if (s != TERSE_OK) {
        cli_loop_failed(PROG, rank, size, "terse_layer_stats", s);
        goto out;
    }
    if (rank == 0) {
        double per_step = st.calls ? (double)st.total_sent_bytes / (double)st.calls : 0;
        double dense = 2.0 * (size - 1) / size * 4.0 * (double)d;
        printf("# summary: final loss %.8f after %ld steps in %.3f s; codec %s, feedback %s; "
               "sent per step %.0f B vs %.0f B for a dense fp32 allreduce", final_loss, o.iters,
               seconds, st.codec, st.feedback, per_step, dense);
        if (per_step > 0) printf(" (dense/sent %.2f)", dense / per_step);
        printf("; message %zu B vs %zu B fp32\n", st.wire_bytes, 4 * d);
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
    MPI_Finalize();
    return rc;
}
