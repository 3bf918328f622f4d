/* terse-bench --kernels: one process, one thread. For each codec and size, the time to
 * encode a buffer and to decode(-add) the message, next to a memcpy of the same buffer
 * measured in the same run (ratio = (encode + decode) / memcpy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "simd.h"

const codec_ops_t *bench_codec(const char *spec, size_t n, double p[TERSE_MAX_PARAMS])
{
    terse_config_t cfg;
    config_defaults(&cfg);
    char item[300];
    snprintf(item, sizeof item, "compressor=%s", spec);
    if (config_parse(&cfg, item, 0) != TERSE_OK || config_check_supported(&cfg) != TERSE_OK) {
        fprintf(stderr, "terse-bench: %s\n", terse_last_error());
        return NULL;
    }
    const codec_ops_t *ops = cfg.compressor.def->ops;
    memcpy(p, cfg.compressor.p, sizeof cfg.compressor.p);
    if (ops->check && ops->check(p, n) != TERSE_OK) {
        fprintf(stderr, "terse-bench: %s\n", terse_last_error());
        return NULL;
    }
    return ops;
}

void bench_kernel_row(const char *codec, bench_shape_t shape, size_t bytes, double enc, double dec, double cpy,
                      int iters)
{
    enc /= iters;
    dec /= iters;
    cpy /= iters;
    char name[64];
    snprintf(name, sizeof name, "%s %zux%zu", codec, shape.rows, shape.cols);
    printf("%-40s %12zu %12.1f %12.1f %12.1f %8.2f\n", name, bytes, enc, dec, cpy, cpy > 0 ? (enc + dec) / cpy : 0.0);
}

int bench_kernels(const char *const *codecs, size_t n_codecs, size_t min_bytes, size_t max_bytes,
                  const shape_list_t *shapes, int iters, int warmup)
{
    printf("# terse-bench --kernels: single thread, times are means over %d iterations\n", iters);
    printf("# kernels: %s (this CPU: %s; TERSE_SIMD=scalar forces the scalar ones)\n",
           simd_name(simd_level()), simd_name(simd_cpu_level()));
    printf("# %-38s %12s %12s %12s %12s %8s\n", "codec", "size(B)", "encode(us)", "decode(us)",
           "memcpy(us)", "ratio");
    /* with --shape, one matrix per shape; otherwise the flat sweep of sizes */
    const size_t n_steps = shapes ? shapes->n : SIZE_MAX;
    size_t bytes = min_bytes;
    for (size_t step = 0; step < n_steps && (shapes || bytes <= max_bytes); step++, bytes *= 2) {
        const bench_shape_t shape = shapes ? shapes->v[step] : bench_flat_shape(bytes / 4);
        if (shapes) bytes = shape.rows * shape.cols * 4;
        size_t n = bytes / 4;
        float *in = malloc(n * 4 + 4), *out = malloc(n * 4 + 4), *copy = malloc(n * 4 + 4);
        if (!in || !out || !copy) {
            fprintf(stderr, "terse-bench: out of memory for %zu bytes\n", bytes);
            return 1;
        }
        bench_fill_gradient(in, n, 0, 1);
        memset(out, 0, n * 4);
        memcpy(copy, in, n * 4);
        for (size_t c = 0; c < n_codecs; c++) {
            double p[TERSE_MAX_PARAMS];
            const codec_ops_t *ops = bench_codec(codecs[c], n, p);
            if (!ops) return 2;
            void *msg = malloc(ops->max_bytes(p, n) + 1);
            void *scratch = malloc(ops->scratch_bytes(p, n) + 1);
            if (!msg || !scratch) return 1;
            const codec_ctx_t ctx = {0x5eed, 0, shape.rows, shape.cols};
            double enc = 0, dec = 0, cpy = 0;
            for (int it = -warmup; it < iters; it++) {
                double t0 = bench_now_us();
                size_t b = ops->encode(p, &ctx, in, n, msg, scratch);
                double t1 = bench_now_us();
                if (ops->decode_add(p, msg, b, n, out, scratch) != TERSE_OK) {
                    fprintf(stderr, "terse-bench: %s decoded its own message as invalid\n", codecs[c]);
                    return 1;
                }
                double t2 = bench_now_us();
                memcpy(copy, in, n * 4);
                double t3 = bench_now_us();
                if (it >= 0) {
                    enc += t1 - t0;
                    dec += t2 - t1;
                    cpy += t3 - t2;
                }
            }
            bench_kernel_row(codecs[c], shape, bytes, enc, dec, cpy, iters);
            free(msg);
            free(scratch);
        }
        free(in); free(out); free(copy);
        if (bytes == 0) break;
    }
    return 0;
}
