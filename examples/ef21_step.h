/*
 * ef21_step.h — the stepsize of the EF21 paper's code (ALGORITHMS.md §4.1), which ef21_logreg
 * and hetero_lsq both use, so that their runs with the same --factor compare with the paper's:
 *
 *   L_QM   = sqrt(mean_i L_i^2),  L_AM = mean_i L_i          (L_i: rank i's smoothness)
 *   theta  = 1 - sqrt(1 - alpha),  beta = (1 - alpha) / theta
 *   gamma  = factor / (L + Ltilde sqrt(beta/theta))          (Ltilde: L_QM, or L_AM for EF21-W)
 *
 * alpha is the compressor's contraction parameter, E|C(v) - v|^2 <= (1 - alpha)|v|^2, read
 * here from the codec terse has in force. alpha = 1 gives beta = 0 and gamma = factor / L.
 * Pure arithmetic on the caller's numbers: no MPI, no allocation.
 */
#ifndef TERSE_EXAMPLES_EF21_STEP_H
#define TERSE_EXAMPLES_EF21_STEP_H

#include <stddef.h>
#include <stdio.h>

#include "terse.h"

/* The value of `key` in a method spec "name:key=value,key=value" (as terse_stats_t gives the
 * codec in force), or NAN when the spec has no such key. */
double ef21_spec_param(const char *spec, const char *key);

/* The number k of the d values that the sparsifier in force keeps, as terse computes it: for
 * topk, and randk with unbiased=0, k=K or else max(1, floor(density d)) (density 0.01 when not
 * given), at most d. 0 for any other codec, when the layer goes dense, and when d = 0. */
size_t ef21_codec_k(const terse_stats_t *st, size_t d);

/* alpha for the codec in force: k/d for topk and randk (ef21_codec_k), 1 for none and a dense
 * layer, 1 - u^2 for fp16 and bf16 (u = 2^-11, 2^-8: the unit roundoff of round to nearest, for
 * values in the normal range). For the others (randk:unbiased=1, scaled by d/k, is not
 * contractive) there is no general bound: 1, with *known_p = 0; else *known_p = 1. */
double ef21_codec_alpha(const terse_stats_t *st, size_t d, int *known_p);

/* The ranks' smoothness constants L_0 .. L_{n-1}, summarised. */
typedef struct {
    double sum;  /* sum_i L_i (EF21-W's weights are L_i / sum) */
    double am;   /* L_AM = mean_i L_i                          */
    double qm;   /* L_QM = sqrt(mean_i L_i^2)                  */
    double min, max;
} ef21_means_t;

/* Summarises Li[0..n-1] (n >= 1), adding in index order: every rank that passes the same
 * allgathered Li gets the same bits. */
ef21_means_t ef21_means(const double *Li, int n);

/* The stepsize and what it is made of. */
typedef struct {
    double alpha, theta, beta;
    double factor;
    double gamma;
} ef21_step_t;

/* theta, beta and gamma from alpha in (0, 1], the multiplier factor > 0, L and Ltilde. */
ef21_step_t ef21_step(double alpha, double factor, double L, double Ltilde);

/* Prints the two '#' header lines of the stepsize:
 *     # stepsize: alpha A (SOURCENOTE), theta T, beta B, sqrt(beta/theta) S;
 *     #   gamma = F / (L + LTILDE sqrt(beta/theta)) = G
 * source names where alpha came from ("given", or the codec), note follows it ("" or a
 * remark), ltilde_name is "L_QM" or "L_AM". */
void ef21_step_print(FILE *f, const ef21_step_t *step, const char *source, const char *note,
                     const char *ltilde_name);

#endif /* TERSE_EXAMPLES_EF21_STEP_H */
