/* Unit tests for the codec and feedback registries (compressors/registry.c,
 * src/feedback/registry.c): lookup by name, the shape of every built ops table, and the
 * bound every built codec promises on its message size. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "protocol.h"
#include "feedback/feedback.h"

/* The names DESIGN.md §6 gives the keys compressor= and feedback=. */
static const char *const grammar_codecs[] = {"none", "fp16", "bf16", "topk", "randk",
                                             "onebit", "qsgd", "dgc", "powersgd", "auto"};
static const char *const grammar_feedback[] = {"none", "ef", "ef21", "ef21sgdm", "econtrol"};

/* A method's parameters as the configuration sets them when none is given: the defaults. */
static void default_params(const method_def_t *m, double p[TERSE_MAX_PARAMS])
{
    for (size_t i = 0; i < TERSE_MAX_PARAMS; i++)
        p[i] = i < m->n_params ? m->params[i].def : NAN;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* ---- Codecs ----------------------------------------------------------------------------- */

START_TEST(codec_registry_holds_every_codec_of_the_grammar)
{
    ck_assert_uint_eq(codec_registry_len, sizeof grammar_codecs / sizeof grammar_codecs[0]);
    for (size_t i = 0; i < sizeof grammar_codecs / sizeof grammar_codecs[0]; i++) {
        const method_def_t *m = codec_find(grammar_codecs[i]);
        ck_assert_msg(m != NULL, "codec_find(\"%s\") is NULL", grammar_codecs[i]);
        ck_assert_str_eq(m->name, grammar_codecs[i]);
    }
    ck_assert_str_eq(codec_registry[0].name, "none"); /* the default */
}
END_TEST

START_TEST(codec_find_returns_every_registered_entry)
{
    for (size_t i = 0; i < codec_registry_len; i++)
        ck_assert_ptr_eq(codec_find(codec_registry[i].name), &codec_registry[i]);
}
END_TEST

START_TEST(codec_find_returns_null_for_unknown_names)
{
    const char *unknown[] = {"", "TOPK", "topk ", " topk", "top",
                             "topkk", "topk:k=5", "ef", "fp32"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        ck_assert_msg(codec_find(unknown[i]) == NULL, "codec_find(\"%s\") found something",
                      unknown[i]);
}
END_TEST

START_TEST(codec_registry_names_are_distinct_and_parameters_well_formed)
{
    for (size_t i = 0; i < codec_registry_len; i++) {
        const method_def_t *m = &codec_registry[i];
        for (size_t j = i + 1; j < codec_registry_len; j++)
            ck_assert_str_ne(m->name, codec_registry[j].name);
        ck_assert_uint_le(m->n_params, TERSE_MAX_PARAMS);
        ck_assert(m->n_params == 0 || m->params != NULL);
        for (size_t k = 0; k < m->n_params; k++) {
            const param_def_t *d = &m->params[k];
            ck_assert_ptr_nonnull(d->name);
            ck_assert_msg(d->min <= d->max, "%s %s: range [%g, %g]", m->name, d->name, d->min,
                          d->max);
            /* a default, when there is one, is accepted by the parameter's own range */
            if (!isnan(d->def))
                ck_assert_msg(d->def >= d->min && d->def <= d->max &&
                                  !(d->min_open && d->def == d->min) &&
                                  !(d->integer && d->def != floor(d->def)),
                              "%s %s: default %g outside its range", m->name, d->name, d->def);
        }
    }
}
END_TEST

START_TEST(built_codec_ops_table_is_complete)
{
    size_t built = 0;
    for (size_t i = 0; i < codec_registry_len; i++) {
        const method_def_t *m = &codec_registry[i];
        if (!m->ops) continue;
        built++;
        const codec_ops_t *ops = m->ops;
        ck_assert_uint_eq(ops->size, sizeof(codec_ops_t));
        ck_assert_ptr_nonnull(ops->name);
        ck_assert_str_eq(ops->name, m->name);
        ck_assert_ptr_nonnull(ops->encode);
        ck_assert_ptr_nonnull(ops->decode_add);
        ck_assert_ptr_nonnull(ops->max_bytes);
        ck_assert_ptr_nonnull(ops->scratch_bytes);
        ck_assert_msg(ops->protocol >= CODEC_PROTO_DENSE && ops->protocol <= CODEC_PROTO_DENSE_EF,
                      "%s: protocol %d", m->name, ops->protocol);
        ck_assert_msg(protocol_for(ops) != NULL, "%s: no protocol", m->name);
    }
    /* at least the codecs this version ships: none, fp16, bf16, topk */
    ck_assert_uint_ge(built, 4);
    const char *shipped[] = {"none", "fp16", "bf16", "topk"};
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(codec_find(shipped[i])->ops != NULL, "%s is not built", shipped[i]);
}
END_TEST

/* Parameter sets each built codec is tried with, beyond its defaults. */
static void variant_params(const method_def_t *m, int v, double p[TERSE_MAX_PARAMS])
{
    default_params(m, p);
    if (strcmp(m->name, "topk") == 0) {
        if (v == 1) p[0] = 1.0;  /* density=1 */
        if (v == 2) p[0] = 0.3;  /* density=0.3 */
        if (v == 3) p[1] = 5;    /* k=5 */
        if (v == 4) p[1] = 1e9;  /* k far above the count */
    }
}
#define N_VARIANTS 5

START_TEST(built_codec_encodes_at_most_max_bytes)
{
    static const size_t sizes[] = {0, 1, 7, 1000};
    const codec_ctx_t ctx = {0x5eed, 0, 0, 0};
    uint64_t s = 11;
    for (size_t i = 0; i < codec_registry_len; i++) {
        const method_def_t *m = &codec_registry[i];
        if (!m->ops) continue;
        const codec_ops_t *ops = m->ops;
        for (int v = 0; v < N_VARIANTS; v++) {
            double p[TERSE_MAX_PARAMS];
            variant_params(m, v, p);
            for (size_t a = 0; a < sizeof sizes / sizeof sizes[0]; a++) {
                size_t n = sizes[a];
                if (ops->check)
                    ck_assert_msg(ops->check(p, n) == TERSE_OK, "%s variant %d: %s", m->name, v,
                                  terse_last_error());
                size_t mb = ops->max_bytes(p, n), sb = ops->scratch_bytes(p, n);
                /* exactly the sizes promised, so that a sanitizer sees any overrun */
                float *in = malloc((n ? n : 1) * sizeof *in), *out = calloc(n ? n : 1, sizeof *out);
                void *msg = malloc(mb ? mb : 1), *scratch = sb ? malloc(sb) : NULL;
                ck_assert(in && out && msg && (scratch || !sb));
                for (size_t j = 0; j < n; j++)
                    in[j] = (float)((double)(rng_next(&s) >> 11) * 0x1.0p-52 - 1.0);
                size_t bytes = ops->encode(p, &ctx, in, n, msg, scratch);
                ck_assert_msg(bytes <= mb, "%s variant %d n=%zu: %zu bytes, max_bytes %zu",
                              m->name, v, n, bytes, mb);
                ck_assert_msg(ops->decode_add(p, msg, bytes, n, out, scratch) == TERSE_OK,
                              "%s variant %d n=%zu: its own message does not decode", m->name, v,
                              n);
                free(in);
                free(out);
                free(msg);
                free(scratch);
            }
        }
    }
}
END_TEST

/* ---- Feedback --------------------------------------------------------------------------- */

START_TEST(feedback_registry_holds_every_method_of_the_grammar)
{
    ck_assert_uint_eq(feedback_registry_len, sizeof grammar_feedback / sizeof grammar_feedback[0]);
    for (size_t i = 0; i < sizeof grammar_feedback / sizeof grammar_feedback[0]; i++) {
        const method_def_t *m = feedback_find(grammar_feedback[i]);
        ck_assert_msg(m != NULL, "feedback_find(\"%s\") is NULL", grammar_feedback[i]);
        ck_assert_str_eq(m->name, grammar_feedback[i]);
    }
    for (size_t i = 0; i < feedback_registry_len; i++)
        ck_assert_ptr_eq(feedback_find(feedback_registry[i].name), &feedback_registry[i]);
    ck_assert_str_eq(feedback_registry[0].name, "none"); /* the default */
}
END_TEST

START_TEST(feedback_find_returns_null_for_unknown_names)
{
    const char *unknown[] = {"", "EF", "ef ", "ef2", "ef21w", "topk", "econtrol:eta=0.1"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        ck_assert_msg(feedback_find(unknown[i]) == NULL, "feedback_find(\"%s\") found something",
                      unknown[i]);
}
END_TEST

START_TEST(built_feedback_ops_table_is_complete)
{
    size_t built = 0;
    for (size_t i = 0; i < feedback_registry_len; i++) {
        const method_def_t *m = &feedback_registry[i];
        for (size_t j = i + 1; j < feedback_registry_len; j++)
            ck_assert_str_ne(m->name, feedback_registry[j].name);
        if (!m->ops) continue;
        built++;
        const feedback_ops_t *ops = m->ops;
        ck_assert_uint_eq(ops->size, sizeof(feedback_ops_t));
        ck_assert_ptr_nonnull(ops->name);
        ck_assert_str_eq(ops->name, m->name);
        ck_assert_ptr_nonnull(ops->prepare);
        ck_assert_ptr_nonnull(ops->update);
    }
    /* at least the methods this version ships: none, ef */
    ck_assert_uint_ge(built, 2);
    ck_assert_ptr_nonnull(feedback_find("none")->ops);
    ck_assert_ptr_nonnull(feedback_find("ef")->ops);
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc_codec = tcase_create("codec");
    tcase_add_test(tc_codec, codec_registry_holds_every_codec_of_the_grammar);
    tcase_add_test(tc_codec, codec_find_returns_every_registered_entry);
    tcase_add_test(tc_codec, codec_find_returns_null_for_unknown_names);
    tcase_add_test(tc_codec, codec_registry_names_are_distinct_and_parameters_well_formed);
    tcase_add_test(tc_codec, built_codec_ops_table_is_complete);
    tcase_add_test(tc_codec, built_codec_encodes_at_most_max_bytes);
    suite_add_tcase(s, tc_codec);

    TCase *tc_fb = tcase_create("feedback");
    tcase_add_test(tc_fb, feedback_registry_holds_every_method_of_the_grammar);
    tcase_add_test(tc_fb, feedback_find_returns_null_for_unknown_names);
    tcase_add_test(tc_fb, built_feedback_ops_table_is_complete);
    suite_add_tcase(s, tc_fb);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
