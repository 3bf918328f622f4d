/* The EF21 stepsize of the examples: see ef21_step.h. */
#include "ef21_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ef21_spec_param(const char *spec, const char *key)
{
    const char *p = strchr(spec, ':');
    size_t klen = strlen(key);
    while (p) {
        p++;
        if (!strncmp(p, key, klen) && p[klen] == '=') return strtod(p + klen + 1, NULL);
        p = strchr(p, ',');
    }
    return NAN;
}

size_t ef21_codec_k(const terse_stats_t *st, size_t d)
{
    size_t name_len = strcspn(st->codec, ":");
    int topk = name_len == 4 && !strncmp(st->codec, "topk", 4);
    int randk = name_len == 5 && !strncmp(st->codec, "randk", 5);
    if (st->dense || d == 0 ||
        !(topk || (randk && ef21_spec_param(st->codec, "unbiased") != 1)))
        return 0;
    /* the spec in force is terse's own, so a number parses; k wins over density as in terse */
    double k = ef21_spec_param(st->codec, "k");
    if (isnan(k)) {
        double density = ef21_spec_param(st->codec, "density");
        if (isnan(density)) density = 0.01; /* topk's default */
        k = (double)(size_t)(density * (double)d);
        if (k < 1) k = 1;
    }
    return k < (double)d ? (size_t)k : d;
}

double ef21_codec_alpha(const terse_stats_t *st, size_t d, int *known_p)
{
    *known_p = 1;
    size_t k = ef21_codec_k(st, d);
    if (k > 0) return (double)k / (double)d;
    if (st->dense || d == 0 || !strcmp(st->codec, "none")) return 1;
    if (!strcmp(st->codec, "fp16")) return 1 - 0x1p-22;
    if (!strcmp(st->codec, "bf16")) return 1 - 0x1p-16;
    *known_p = 0;
    return 1;
}

ef21_means_t ef21_means(const double *Li, int n)
{
    double sum = 0, sum2 = 0, min = INFINITY, max = 0;
    for (int i = 0; i < n; i++) {
        sum += Li[i];
        sum2 += Li[i] * Li[i];
        min = fmin(min, Li[i]);
        max = fmax(max, Li[i]);
    }
    return (ef21_means_t){.sum = sum, .am = sum / n, .qm = sqrt(sum2 / n), .min = min,
                          .max = max};
}

ef21_step_t ef21_step(double alpha, double factor, double L, double Ltilde)
{
    const double theta = 1 - sqrt(1 - alpha), beta = (1 - alpha) / theta;
    return (ef21_step_t){.alpha = alpha, .theta = theta, .beta = beta, .factor = factor,
                         .gamma = factor / (L + Ltilde * sqrt(beta / theta))};
}

void ef21_step_print(FILE *f, const ef21_step_t *step, const char *source, const char *note,
                     const char *ltilde_name)
{
    fprintf(f, "# stepsize: alpha %.9g (%s%s), theta %.9g, beta %.9g, sqrt(beta/theta) %.9g;\n"
            "#   gamma = %g / (L + %s sqrt(beta/theta)) = %.9g\n", step->alpha, source, note,
            step->theta, step->beta, sqrt(step->beta / step->theta), step->factor, ltilde_name,
            step->gamma);
}
