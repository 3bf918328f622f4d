/* terse-bench: compressed allreduce benchmark in the style of nccl-tests (DESIGN.md §7).
 *
 *   mpirun -np N terse-bench [--config STRING | --compressor SPEC --feedback SPEC
 *                            --adapt SPEC] [--sizes MIN:MAX | --shape RxC,... | --shape resnet50]
 *                            [--iters N] [--warmup N] [--baseline] [--check] [--json FILE]
 *                            [--converge 1,10,100]
 *   terse-bench --kernels [--compressor SPEC] [--sizes MIN:MAX]
 *
 * A flat size is one layer registered as a near-square R x C matrix (C the largest power of
 * two at most sqrt(count), when it divides count; count x 1 otherwise), so that the codecs
 * that look at shapes (dgc, powersgd) compress it as they would a weight matrix.
 *
 * Every call reduces the same synthetic per-rank gradient. time(us) is the slowest rank's
 * mean time per call. relerr (with --check) is the relative L2 error of the first call's
 * result against the exact mean (computed in double), before any feedback has built up;
 * --check also compares a hash of the first and last results across ranks and fails the
 * run if any two ranks differ. --converge T1,T2,... then repeats the call on the same input
 * with a fresh communicator (terse_step_end after each) and prints the relative error of the
 * running mean of the outputs after T1, T2, ... calls: with error feedback it approaches the
 * exact mean. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "gpu.h"
#include "terse.h"
#include "terse_mpi.h"

typedef struct {
    const char *config, *compressor, *feedback, *adapt, *json, *shape, *device, *transport;
    size_t min_bytes, max_bytes;
    int iters, warmup, baseline, check, kernels;
    int cuda, nccl;     /* --device cuda; --transport nccl                                   */
    double overlap_ms;  /* --overlap MS: > 0 runs the overlap comparison instead */
    int converge[16], n_converge;
} opts_t;

typedef struct {
    size_t bytes, count;
    char codec[160];
    double time_us, wire, ratio, sent, relerr, comp_us, comm_us, decomp_us;
    double inter;       /* bytes all ranks together addressed to other nodes, per call (-1: unknown) */
    int hier_nodes;     /* the node count under the hierarchical protocol, 0 flat                   */
    int dense_layers;   /* layers that went dense (min_size, or compressor=auto's choice)            */
} row_t;

static int rank_, nranks_;
static int nodes_;      /* nodes (hosts) the ranks run on, from MPI's shared-memory split */

/* How many nodes the ranks span: the number of ranks that lead a shared-memory group. */
static int count_nodes(void)
{
    MPI_Comm node;
    int local = 0, leaders = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    int lead = local == 0;
    MPI_Allreduce(&lead, &leaders, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    return leaders;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpirun -np N terse-bench [options]\n"
            "  --config STRING       a whole configuration (docs/configuration.md)\n"
            "  --compressor SPEC     e.g. topk:density=0.01 (default none)\n"
            "  --feedback SPEC       none, ef, ... (default none)\n"
            "  --adapt SPEC          none, lgreco[...]\n"
            "  --sizes MIN:MAX       bytes of float32 data, doubling; K/M/G are binary (default 4K:64M)\n"
            "  --shape RxC[,RxC...]  a list of 2-D layers instead of one flat layer; or resnet50\n"
            "  --iters N             timed calls per size (default 20)\n"
            "  --warmup N            untimed calls first (default 3)\n"
            "  --baseline            also time dense MPI_Allreduce of the same data\n"
            "  --check               relative error against the exact mean; cross-rank hash check\n"
            "  --json FILE           write the rows as JSON too\n"
            "  --converge T1,T2,...  relative error of the running mean after T1, T2, ... calls\n"
            "  --kernels             single process: codec encode/decode time next to memcpy\n"
            "  --overlap MS          allreduce then MS ms of computation, against terse_iallreduce\n"
            "                        overlapping the same computation (MPI_THREAD_MULTIPLE)\n"
            "  --device cpu|cuda     where the buffers live (cuda: device memory, device=cuda;\n"
            "                        with --kernels, the CUDA codecs next to a device copy)\n"
            "  --transport mpi|nccl  the communicator: MPI (default; device buffers staged\n"
            "                        through the host) or NCCL (needs --device cuda)\n");
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->min_bytes = 4096;
    o->max_bytes = 64u << 20;
    o->iters = 20;
    o->warmup = 3;
    o->device = "cpu";
    o->transport = "mpi";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define VALUE()                                                                          \
    do {                                                                                 \
        if (!v) { fprintf(stderr, "terse-bench: %s needs a value\n", a); return 2; }     \
        i++;                                                                             \
    } while (0)
        if (!strcmp(a, "--config")) { VALUE(); o->config = v; }
        else if (!strcmp(a, "--compressor")) { VALUE(); o->compressor = v; }
        else if (!strcmp(a, "--feedback")) { VALUE(); o->feedback = v; }
        else if (!strcmp(a, "--adapt")) { VALUE(); o->adapt = v; }
        else if (!strcmp(a, "--json")) { VALUE(); o->json = v; }
        else if (!strcmp(a, "--shape")) { VALUE(); o->shape = v; }
        else if (!strcmp(a, "--device")) { VALUE(); o->device = v; }
        else if (!strcmp(a, "--transport")) { VALUE(); o->transport = v; }
        else if (!strcmp(a, "--iters")) { VALUE(); o->iters = atoi(v); }
        else if (!strcmp(a, "--warmup")) { VALUE(); o->warmup = atoi(v); }
        else if (!strcmp(a, "--baseline")) o->baseline = 1;
        else if (!strcmp(a, "--check")) o->check = 1;
        else if (!strcmp(a, "--kernels")) o->kernels = 1;
        else if (!strcmp(a, "--overlap")) {
            VALUE();
            char *end;
            o->overlap_ms = strtod(v, &end);
            if (*end || !(o->overlap_ms > 0 && o->overlap_ms < 1e6)) {
                fprintf(stderr, "terse-bench: --overlap '%s': want milliseconds > 0\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--converge")) {
            VALUE();
            char *end = NULL;
            const char *q = v;
            o->n_converge = 0;
            while (*q) {
                long t = strtol(q, &end, 10);
                int prev = o->n_converge ? o->converge[o->n_converge - 1] : 0;
                if (end == q || t <= prev || t > 1000000 || o->n_converge == 16 ||
                    (*end && *end != ',')) {
                    fprintf(stderr, "terse-bench: --converge '%s': want up to 16 increasing "
                                    "call counts, e.g. 1,10,100\n", v);
                    return 2;
                }
                o->converge[o->n_converge++] = (int)t;
                q = *end ? end + 1 : end;
            }
        }
        else if (!strcmp(a, "--sizes")) {
            VALUE();
            char lo[64], hi[64];
            const char *colon = strchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof lo || strlen(colon + 1) >= sizeof hi) {
                fprintf(stderr, "terse-bench: --sizes wants MIN:MAX, got '%s'\n", v);
                return 2;
            }
            memcpy(lo, v, (size_t)(colon - v));
            lo[colon - v] = '\0';
            strcpy(hi, colon + 1);
            if (bench_parse_bytes(lo, &o->min_bytes) || bench_parse_bytes(hi, &o->max_bytes) ||
                o->min_bytes < 4 || o->max_bytes < o->min_bytes) {
                fprintf(stderr, "terse-bench: --sizes '%s': want 4 <= MIN <= MAX, e.g. 4K:64M\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "terse-bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef VALUE
    }
    if (o->iters < 1 || o->warmup < 0) {
        fprintf(stderr, "terse-bench: --iters must be >= 1 and --warmup >= 0\n");
        return 2;
    }
    o->cuda = !strcmp(o->device, "cuda");
    o->nccl = !strcmp(o->transport, "nccl");
    if (!o->cuda && strcmp(o->device, "cpu") != 0) {
        fprintf(stderr, "terse-bench: --device '%s': want cpu or cuda\n", o->device);
        return 2;
    }
    if (!o->nccl && strcmp(o->transport, "mpi") != 0) {
        fprintf(stderr, "terse-bench: --transport '%s': want mpi or nccl\n", o->transport);
        return 2;
    }
    if (o->nccl && !o->cuda) {
        fprintf(stderr, "terse-bench: --transport nccl needs --device cuda: NCCL moves device memory\n");
        return 2;
    }
    if (o->cuda && (o->overlap_ms > 0 || o->n_converge)) {
        fprintf(stderr, "terse-bench: --overlap and --converge run on host buffers only; drop --device cuda\n");
        return 2;
    }
    return 0;
}

static uint64_t hash_floats(const float *const *bufs, const size_t *counts, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t l = 0; l < n; l++) {
        const unsigned char *b = (const unsigned char *)bufs[l];
        for (size_t i = 0; i < counts[l] * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

/* Fails the run unless every rank has the same hash. */
static int hashes_agree(uint64_t h, const char *what)
{
    uint64_t lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi && rank_ == 0)
        fprintf(stderr, "terse-bench: ranks disagree on the %s (hash %016llx vs %016llx)\n", what,
                (unsigned long long)lo, (unsigned long long)hi);
    return lo == hi;
}

/* The exact mean of every rank's gradient, in double. */
static double relerr_of(const float *const *out, float *const *grad, const size_t *counts,
                        size_t n_layers, int sum)
{
    double num = 0, den = 0;
    for (size_t l = 0; l < n_layers; l++) {
        size_t n = counts[l];
        double *m = malloc((n ? n : 1) * sizeof *m);
        if (!m) return NAN;
        for (size_t i = 0; i < n; i++) m[i] = grad[l][i];
        MPI_Allreduce(MPI_IN_PLACE, m, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (size_t i = 0; i < n; i++) {
            double e = sum ? m[i] : m[i] / nranks_;
            double d = (double)out[l][i] - e;
            num += d * d;
            den += e * e;
        }
        free(m);
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double max_over_ranks(double v)
{
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return v;
}

static void print_header(const opts_t *o, const char *cfg)
{
    if (rank_) return;
    printf("# terse-bench %u.%u.%u, %d ranks, iters %d, warmup %d\n", terse_version() / 10000,
           terse_version() / 100 % 100, terse_version() % 100, nranks_, o->iters, o->warmup);
    printf("# configuration: %s\n", cfg);
    printf("# nodes: %d (%d ranks)\n", nodes_, nranks_);
    if (o->overlap_ms > 0) return; /* bench_overlap's own columns follow */
    printf("# time: slowest rank's mean per call; busbw = algbw * 2(n-1)/n; wire: this rank's "
           "message; sent: bytes this rank handed to the transport per call\n");
    printf("# %12s %10s %5s %-24s %11s %11s %11s %12s %8s %12s %10s %12s %10s %14s\n", "size(B)",
           "count", "type", "codec", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "wire(B)", "ratio",
           "sent(B)", "relerr", "compress(us)", "comm(us)", "decompress(us)");
}

static void print_row(const row_t *r)
{
    if (rank_) return;
    double algbw = r->time_us > 0 ? (double)r->bytes / (r->time_us * 1e3) : 0;
    double busbw = algbw * 2.0 * (nranks_ - 1) / nranks_;
    char rel[32];
    if (isnan(r->relerr)) snprintf(rel, sizeof rel, "-");
    else snprintf(rel, sizeof rel, "%.3e", r->relerr);
    printf("  %12zu %10zu %5s %-24s %11.1f %11.4f %11.4f %12.0f %8.2f %12.0f %10s %12.1f %10.1f %14.1f\n",
           r->bytes, r->count, "float", r->codec, r->time_us, algbw, busbw, r->wire, r->ratio,
           r->sent, rel, r->comp_us, r->comm_us, r->decomp_us);
    if (nodes_ > 1 && r->inter >= 0)
        printf("# %s: %s; inter-node bytes per call, all ranks: %.0f (%.0f per node)\n", r->codec,
               r->hier_nodes ? "hierarchical (dense inside nodes, compressed among leaders)" : "flat",
               r->inter, r->inter / nodes_);
    fflush(stdout);
}

static void json_row(FILE *f, const row_t *r, int first)
{
    if (!f) return;
    double algbw = r->time_us > 0 ? (double)r->bytes / (r->time_us * 1e3) : 0;
    fprintf(f, "%s  {\"size\": %zu, \"count\": %zu, \"type\": \"float\", \"codec\": \"%s\", "
               "\"ranks\": %d, \"time_us\": %.3f, \"algbw\": %.6f, \"busbw\": %.6f, \"wire\": %.0f, "
               "\"ratio\": %.4f, \"sent\": %.0f, \"relerr\": ",
            first ? "" : ",\n", r->bytes, r->count, r->codec, nranks_, r->time_us, algbw,
            algbw * 2.0 * (nranks_ - 1) / nranks_, r->wire, r->ratio, r->sent);
    if (isnan(r->relerr)) fprintf(f, "null");
    else fprintf(f, "%.6e", r->relerr);
    fprintf(f, ", \"compress_us\": %.3f, \"comm_us\": %.3f, \"decompress_us\": %.3f, \"nodes\": %d, "
               "\"hier_nodes\": %d, \"dense_layers\": %d, \"inter_node_bytes\": ", r->comp_us, r->comm_us,
            r->decomp_us, nodes_, r->hier_nodes, r->dense_layers);
    if (r->inter < 0) fprintf(f, "null}");
    else fprintf(f, "%.0f}", r->inter);
}

/* A copy between host and device failed on this rank: the others would wait for it in the
 * next collective, so the job ends here. */
static void copy_failed(const char *what)
{
    fprintf(stderr, "terse-bench: rank %d: copying the %s failed; ending the job\n", rank_, what);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* The gradients to the buffers the calls take: buf, or with --device cuda the device
 * buffers dbuf. */
static void load_inputs(const opts_t *o, float *const *grad, float *const *buf, float *const *dbuf,
                        const size_t *counts, size_t n_layers)
{
    for (size_t l = 0; l < n_layers; l++) {
        if (!o->cuda) memcpy(buf[l], grad[l], counts[l] * sizeof(float));
        else if (bench_gpu_put(dbuf[l], grad[l], counts[l] * sizeof(float))) copy_failed("gradients to the device");
    }
}

/* With --device cuda, the results back to buf for the checks. */
static void fetch_results(const opts_t *o, float *const *buf, float *const *dbuf, const size_t *counts,
                          size_t n_layers)
{
    for (size_t l = 0; o->cuda && l < n_layers; l++)
        if (bench_gpu_get(buf[l], dbuf[l], counts[l] * sizeof(float))) copy_failed("results from the device");
}

/* One dense allreduce (the mean, or the sum) of every layer: MPI on host buffers; with
 * --device cuda, NCCL on the device buffers, or MPI staged through the host buffers. */
static int dense_call(const opts_t *o, float *const *buf, float *const *dbuf, const size_t *counts,
                      size_t n_layers, int sum)
{
    if (o->nccl) return bench_nccl_allreduce(dbuf, counts, n_layers, sum);
    fetch_results(o, buf, dbuf, counts, n_layers);
    for (size_t l = 0; l < n_layers; l++) {
        if (MPI_Allreduce(MPI_IN_PLACE, buf[l], (int)counts[l], MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return 1;
        if (!sum)
            for (size_t i = 0; i < counts[l]; i++) buf[l][i] /= (float)nranks_;
        if (o->cuda && bench_gpu_put(dbuf[l], buf[l], counts[l] * sizeof(float))) copy_failed("mean to the device");
    }
    return 0;
}

/* Dense allreduce of the same data: the baseline row. */
static int run_dense(const opts_t *o, float *const *grad, float *const *buf, float *const *dbuf,
                     const size_t *counts, size_t n_layers, row_t *row, int sum)
{
    size_t total = 0;
    for (size_t l = 0; l < n_layers; l++) total += counts[l];
    double t = 0;
    for (int it = -o->warmup; it < o->iters; it++) {
        load_inputs(o, grad, buf, dbuf, counts, n_layers);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        if (dense_call(o, buf, dbuf, counts, n_layers, sum)) return 1;
        double dt = MPI_Wtime() - t0;
        if (it >= 0) t += dt;
    }
    fetch_results(o, buf, dbuf, counts, n_layers);
    memset(row, 0, sizeof *row);
    row->bytes = total * 4;
    row->count = total;
    snprintf(row->codec, sizeof row->codec, "dense");
    row->time_us = max_over_ranks(t / o->iters * 1e6);
    row->wire = (double)total * 4;
    row->ratio = 1;
    row->sent = 2.0 * (nranks_ - 1) / nranks_ * (double)total * 4; /* a ring allreduce's */
    row->inter = -1; /* MPI's algorithm decides what crosses nodes */
    row->relerr = o->check ? relerr_of((const float *const *)buf, grad, counts, n_layers, sum) : NAN;
    return 0;
}

/* With adapt=lgreco: the parameter L-GreCo chose for each layer, as "#" lines on rank 0. */
static void print_plan(terse_comm_t *comm, const int *ids, const bench_shape_t *shapes, size_t n_layers)
{
    terse_stats_t st;
    int any = 0;
    for (size_t l = 0; l < n_layers; l++) any |= terse_layer_stats(comm, ids[l], &st) == TERSE_OK && st.adapted;
    if (!any || rank_ != 0) return;
    printf("# lgreco: %llu decisions (%llu kept the uniform plan); the last took %.0f us "
           "(measure %.0f us, solve %.0f us on rank 0)\n", (unsigned long long)st.plan_version,
           (unsigned long long)st.plan_fallbacks, st.plan_us, st.plan_measure_us, st.plan_solve_us);
    for (size_t l = 0; l < n_layers; l++) {
        terse_layer_stats(comm, ids[l], &st);
        printf("# lgreco plan: %-8s %6zux%-6zu %s%s\n", st.name, shapes[l].rows, shapes[l].cols, st.codec,
               st.adapted ? "" : " (not adapted)");
    }
}

/* A fresh communicator with configuration cfg: over MPI_COMM_WORLD, or NCCL. */
static terse_status_t create_comm(const opts_t *o, const char *cfg, terse_comm_t **comm)
{
    return o->nccl ? bench_nccl_comm(cfg, comm) : terse_comm_create_mpi(MPI_COMM_WORLD, cfg, comm);
}

/* The compressed allreduce of the given layers on a fresh communicator. */
static int run_terse(const opts_t *o, const char *cfg, const bench_shape_t *shapes,
                     size_t n_layers, float *const *grad, float *const *buf, float *const *dbuf,
                     const size_t *counts, row_t *row)
{
    terse_comm_t *comm = NULL;
    terse_status_t s = create_comm(o, cfg, &comm);
    if (s != TERSE_OK) {
        if (rank_ == 0) fprintf(stderr, "terse-bench: %s: %s\n", terse_status_string(s), terse_last_error());
        return 2;
    }
    int *ids = malloc(n_layers * sizeof *ids);
    for (size_t l = 0; l < n_layers && ids; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%zu", l);
        s = terse_layer_add(comm, name, shapes[l].rows, shapes[l].cols, NULL, &ids[l]);
        if (s != TERSE_OK) {
            if (rank_ == 0) fprintf(stderr, "terse-bench: %s: %s\n", terse_status_string(s), terse_last_error());
            terse_comm_destroy(comm);
            free(ids);
            return 2;
        }
    }
    int ok = 1;
    double t = 0, comp = 0, commt = 0, decomp = 0, wire = 0, sent = 0, inter = 0, relerr = NAN;
    int hier_nodes = 0;
    for (int it = -o->warmup - (o->check ? 1 : 0); it < o->iters; it++) {
        load_inputs(o, grad, buf, dbuf, counts, n_layers);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        s = terse_allreduce_many(comm, (int)n_layers, ids, o->cuda ? dbuf : buf);
        double dt = MPI_Wtime() - t0;
        if (s != TERSE_OK) {
            fprintf(stderr, "terse-bench: rank %d: %s: %s\n", rank_, terse_status_string(s), terse_last_error());
            ok = 0;
            break;
        }
        terse_step_end(comm); /* an iteration is a step: schedules (L-GreCo, DGC) advance */
        int first_checked = o->check && it == -o->warmup - 1;
        if (first_checked || (o->check && it == o->iters - 1)) fetch_results(o, buf, dbuf, counts, n_layers);
        if (first_checked) {
            relerr = relerr_of((const float *const *)buf, grad, counts, n_layers,
                               cfg && strstr(cfg, "reduce=sum") != NULL);
            ok &= hashes_agree(hash_floats((const float *const *)buf, counts, n_layers), "first result");
        }
        if (it < 0) continue;
        t += dt;
        /* comm: the call's time less its layers' compress and decompress. The layers of a
         * fused bucket wait for each other in their exchange, so their own comm times
         * overlap and do not add up. */
        double codec_us = 0;
        for (size_t l = 0; l < n_layers; l++) {
            terse_stats_t st;
            terse_layer_stats(comm, ids[l], &st);
            comp += st.compress_us;
            decomp += st.decompress_us;
            codec_us += st.compress_us + st.decompress_us;
            wire += (double)st.wire_bytes;
            sent += (double)st.sent_bytes;
            inter += (double)st.sent_inter_bytes;
            hier_nodes = st.hier_nodes;
        }
        commt += dt * 1e6 > codec_us ? dt * 1e6 - codec_us : 0;
        if (o->check && it == o->iters - 1)
            ok &= hashes_agree(hash_floats((const float *const *)buf, counts, n_layers), "last result");
    }
    if (ok) print_plan(comm, ids, shapes, n_layers);
    terse_stats_t st0;
    memset(row, 0, sizeof *row);
    for (size_t l = 0; l < n_layers; l++)
        if (terse_layer_stats(comm, ids[l], &st0) == TERSE_OK && st0.dense) row->dense_layers++;
    if (n_layers && terse_layer_stats(comm, ids[0], &st0) == TERSE_OK)
        snprintf(row->codec, sizeof row->codec, "%s", n_layers == 1 ? st0.codec : "");
    if (n_layers != 1 || !row->codec[0]) {
        char full[512];
        terse_comm_config(comm, full, sizeof full);
        const char *c = strstr(full, "compressor=");
        const char *e = c ? strchr(c, ';') : NULL;
        if (c && e) snprintf(row->codec, sizeof row->codec, "%.*s", (int)(e - c - 11), c + 11);
    }
    size_t total = 0;
    for (size_t l = 0; l < n_layers; l++) total += counts[l];
    row->bytes = total * 4;
    row->count = total;
    row->time_us = max_over_ranks(t / o->iters * 1e6);
    row->comp_us = max_over_ranks(comp / o->iters);
    row->comm_us = max_over_ranks(commt / o->iters);
    row->decomp_us = max_over_ranks(decomp / o->iters);
    row->wire = wire / o->iters;
    row->ratio = row->wire > 0 ? (double)row->bytes / row->wire : 0;
    row->sent = sent / o->iters;
    row->relerr = relerr;
    MPI_Allreduce(MPI_IN_PLACE, &inter, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    row->inter = inter / o->iters;
    row->hier_nodes = hier_nodes;
    terse_comm_destroy(comm);
    free(ids);
    int all_ok = ok;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all_ok ? 0 : 1;
}

/* --converge: the same input reduced again and again; the running mean of the outputs
 * against the exact mean after each listed number of calls. */
static int run_converge(const opts_t *o, const char *cfg, const bench_shape_t *shapes,
                        size_t n_layers, float *const *grad, float *const *buf,
                        const size_t *counts, int sum)
{
    size_t bytes = 0;
    for (size_t l = 0; l < n_layers; l++) bytes += counts[l] * sizeof(float);
    terse_comm_t *comm = NULL;
    terse_status_t s = create_comm(o, cfg, &comm);
    int *ids = malloc(n_layers * sizeof *ids);
    float **mean = calloc(n_layers, sizeof *mean);
    double **acc = calloc(n_layers, sizeof *acc);
    int ok = s == TERSE_OK && ids && mean && acc;
    for (size_t l = 0; ok && l < n_layers; l++) {
        char name[32];
        snprintf(name, sizeof name, "layer%zu", l);
        ok = terse_layer_add(comm, name, shapes[l].rows, shapes[l].cols, NULL, &ids[l]) == TERSE_OK;
        mean[l] = malloc(counts[l] * sizeof(float) + 4);
        acc[l] = calloc(counts[l] + 1, sizeof(double));
        ok = ok && mean[l] && acc[l];
    }
    int next = 0;
    for (int t = 1; ok && next < o->n_converge; t++) {
        for (size_t l = 0; l < n_layers; l++) memcpy(buf[l], grad[l], counts[l] * sizeof(float));
        s = terse_allreduce_many(comm, (int)n_layers, ids, buf);
        if (s != TERSE_OK || terse_step_end(comm) != TERSE_OK) { ok = 0; break; }
        for (size_t l = 0; l < n_layers; l++)
            for (size_t i = 0; i < counts[l]; i++) acc[l][i] += buf[l][i];
        if (t != o->converge[next]) continue;
        next++;
        for (size_t l = 0; l < n_layers; l++)
            for (size_t i = 0; i < counts[l]; i++) mean[l][i] = (float)(acc[l][i] / t);
        double e = relerr_of((const float *const *)mean, grad, counts, n_layers, sum);
        if (rank_ == 0) {
            printf("# converge %zu B: running mean of %d calls: relerr %.3e\n", bytes, t, e);
            fflush(stdout);
        }
    }
    if (!ok && rank_ == 0)
        fprintf(stderr, "terse-bench: --converge: %s\n", terse_last_error());
    for (size_t l = 0; l < n_layers; l++) {
        if (mean) free(mean[l]);
        if (acc) free(acc[l]);
    }
    free(mean);
    free(acc);
    free(ids);
    terse_comm_destroy(comm);
    int all_ok = ok;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all_ok ? 0 : 1;
}

static int build_config(const opts_t *o, char *buf, size_t len)
{
    if (o->config && (o->compressor || o->feedback || o->adapt)) {
        fprintf(stderr, "terse-bench: give --config or --compressor/--feedback/--adapt, not both\n");
        return 2;
    }
    const char *device = o->cuda ? "; device=cuda" : "";
    if (o->config) {
        snprintf(buf, len, "%s%s", o->config, device);
        return 0;
    }
    /* min_size=0: the benchmark compresses every size it is asked about */
    snprintf(buf, len, "compressor=%s; feedback=%s; adapt=%s; min_size=0%s",
             o->compressor ? o->compressor : "none", o->feedback ? o->feedback : "none",
             o->adapt ? o->adapt : "none", device);
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (o.kernels) {
        /* every codec, at the parameters the performance acceptance names */
        const char *defaults[] = {"fp16", "bf16", "onebit", "topk:density=0.01",
                                  "randk:density=0.01", "dgc:density=0.001", "qsgd:bits=4",
                                  "qsgd:bits=8", "powersgd:rank=4"};
        const char *one[1] = {o.compressor};
        shape_list_t shapes = {0};
        if (o.shape && shapes_parse(o.shape, &shapes)) {
            fprintf(stderr, "terse-bench: --shape '%s': want RxC[,RxC...] or resnet50\n", o.shape);
            return 2;
        }
        rc = (o.cuda ? bench_kernels_cuda : bench_kernels)(o.compressor ? one : defaults,
                           o.compressor ? 1 : sizeof defaults / sizeof defaults[0], o.min_bytes,
                           o.max_bytes, o.shape ? &shapes : NULL, o.iters, o.warmup);
        free(shapes.v);
        return rc;
    }
    if (o.overlap_ms > 0) {
        int provided; /* the progress thread calls MPI */
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    } else {
        MPI_Init(&argc, &argv);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks_);
    nodes_ = count_nodes();
    if (o.cuda) {
        /* one device per rank of a node where there are enough, shared round robin else */
        MPI_Comm node;
        int local = 0, ok, all_ok;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &local);
        MPI_Comm_free(&node);
        char why[256] = "";
        ok = bench_gpu_open(local, why, sizeof why) == 0;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (!all_ok) {
            if (!ok) fprintf(stderr, "terse-bench: rank %d: --device cuda: %s\n", rank_, why);
            MPI_Finalize();
            return 2;
        }
    }
    char cfg[1024];
    if ((rc = build_config(&o, cfg, sizeof cfg)) != 0) {
        MPI_Finalize();
        return rc;
    }
    /* the configuration in effect, environment included, for the header */
    terse_comm_t *probe = NULL;
    terse_status_t s = create_comm(&o, cfg, &probe);
    if (s != TERSE_OK) {
        if (rank_ == 0) fprintf(stderr, "terse-bench: %s: %s\n", terse_status_string(s), terse_last_error());
        MPI_Finalize();
        return 2;
    }
    char effective[1024];
    terse_comm_config(probe, effective, sizeof effective);
    terse_comm_destroy(probe);
    int sum = strstr(effective, "reduce=sum") != NULL;
    print_header(&o, effective);

    FILE *json = NULL;
    if (o.json && rank_ == 0) {
        json = fopen(o.json, "w");
        if (!json) fprintf(stderr, "terse-bench: cannot write %s\n", o.json);
        else fprintf(json, "[\n");
    }
    int first = 1, failed = 0;
    if (o.overlap_ms > 0 && rank_ == 0)
        printf("# overlap: %.1f ms of computation per iteration; times in ms, slowest rank's mean\n"
               "# %12s %9s %12s %12s %12s %12s %8s\n", o.overlap_ms, "size(B)", "layers", "allreduce",
               "compute", "serial", "overlapped", "hidden");
    shape_list_t shapes = {0};
    if (o.shape && shapes_parse(o.shape, &shapes)) {
        if (rank_ == 0) fprintf(stderr, "terse-bench: --shape '%s': want RxC[,RxC...] or resnet50\n", o.shape);
        MPI_Finalize();
        return 2;
    }
    for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
        bench_shape_t flat = bench_flat_shape(bytes / 4);
        const bench_shape_t *sh = o.shape ? shapes.v : &flat;
        size_t n_layers = o.shape ? shapes.n : 1;
        size_t *counts = calloc(n_layers, sizeof *counts);
        float **grad = calloc(n_layers, sizeof *grad), **buf = calloc(n_layers, sizeof *buf);
        float **dbuf = calloc(n_layers, sizeof *dbuf); /* --device cuda */
        for (size_t l = 0; l < n_layers; l++) {
            counts[l] = sh[l].rows * sh[l].cols;
            grad[l] = malloc(counts[l] * sizeof(float) + 4);
            buf[l] = malloc(counts[l] * sizeof(float) + 4);
            if (o.cuda) dbuf[l] = bench_gpu_alloc(counts[l] * sizeof(float));
            if (!grad[l] || !buf[l] || (o.cuda && !dbuf[l])) {
                fprintf(stderr, "terse-bench: out of memory\n");
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            bench_fill_gradient(grad[l], counts[l], rank_, l + 1);
        }
        row_t row;
        if (o.overlap_ms > 0) {
            rc = bench_overlap(cfg, sh, n_layers, grad, buf, counts, o.overlap_ms, o.iters, o.warmup);
            if (rc) failed = rc;
            for (size_t l = 0; l < n_layers; l++) { free(grad[l]); free(buf[l]); }
            free(grad); free(buf); free(dbuf); free(counts);
            if (failed == 2 || o.shape) break;
            continue;
        }
        if (o.baseline) {
            if (run_dense(&o, grad, buf, dbuf, counts, n_layers, &row, sum)) failed = 1;
            print_row(&row);
            json_row(json, &row, first);
            first = 0;
        }
        rc = run_terse(&o, cfg, sh, n_layers, grad, buf, dbuf, counts, &row);
        if (rc == 2) {
            failed = 2;
        } else {
            if (rc) failed = 1;
            print_row(&row);
            json_row(json, &row, first);
            first = 0;
        }
        if (rc != 2 && o.n_converge && run_converge(&o, cfg, sh, n_layers, grad, buf, counts, sum))
            failed = 1;
        for (size_t l = 0; l < n_layers; l++) { free(grad[l]); free(buf[l]); bench_gpu_free(dbuf[l]); }
        free(grad); free(buf); free(dbuf); free(counts);
        if (failed == 2 || o.shape) break;
    }
    if (json) {
        fprintf(json, "\n]\n");
        fclose(json);
    }
    free(shapes.v);
    if (rank_ == 0 && failed == 1) fprintf(stderr, "terse-bench: FAILED: ranks disagree or a call failed\n");
    bench_gpu_close();
    MPI_Finalize();
    return failed;
}
