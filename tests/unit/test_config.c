/* Unit tests for the configuration parser (src/config.c, DESIGN.md §6): defaults, every key,
 * every codec and method of the grammar, what this build supports, the error messages, the
 * environment overrides and the formatting round trip.
 *
 * Every test case clears the TERSE_* variables before and after it (a checked fixture), so
 * that neither the caller's environment nor another test leaks in. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "error.h"
#include "feedback/feedback.h"

/* ---- Helpers ---------------------------------------------------------------------------- */

static const char *const env_vars[] = {"TERSE_CONFIG", "TERSE_COMPRESSOR", "TERSE_FEEDBACK",
                                       "TERSE_ADAPT"};

static void env_clear(void)
{
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++) unsetenv(env_vars[i]);
}

typedef struct { char s[1024]; } text_t;

static text_t format_of(const terse_config_t *cfg)
{
    text_t t;
    size_t need = config_format(cfg, t.s, sizeof t.s);
    ck_assert_uint_lt(need, sizeof t.s);
    ck_assert_uint_eq(strlen(t.s), need);
    return t;
}

static text_t method_of(const method_spec_t *m)
{
    text_t t;
    size_t need = config_format_method(m, t.s, sizeof t.s);
    ck_assert_uint_lt(need, sizeof t.s);
    return t;
}

/* Defaults, then text; the parse must succeed. */
static terse_config_t parsed(const char *text)
{
    terse_config_t cfg;
    config_defaults(&cfg);
    terse_status_t st = config_parse(&cfg, text, 0);
    ck_assert_msg(st == TERSE_OK, "'%s' did not parse: %s", text, terse_last_error());
    return cfg;
}

static void assert_mentions(const char *msg, const char *fragment, const char *what)
{
    ck_assert_msg(strstr(msg, fragment) != NULL, "%s: message \"%s\" does not mention \"%s\"",
                  what, msg, fragment);
}

static int same_number(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

static void assert_same_method(const method_spec_t *a, const method_spec_t *b)
{
    ck_assert_ptr_eq(a->def, b->def);
    for (size_t i = 0; i < TERSE_MAX_PARAMS; i++)
        ck_assert_msg(same_number(a->p[i], b->p[i]), "%s parameter %zu: %.17g vs %.17g",
                      a->def->name, i, a->p[i], b->p[i]);
}

static void assert_same_config(const terse_config_t *a, const terse_config_t *b)
{
    assert_same_method(&a->compressor, &b->compressor);
    assert_same_method(&a->feedback, &b->feedback);
    assert_same_method(&a->adapt, &b->adapt);
    ck_assert_uint_eq(a->min_size, b->min_size);
    ck_assert_int_eq(a->reduce, b->reduce);
    ck_assert_int_eq(a->threads, b->threads);
    ck_assert_int_eq(a->hier, b->hier);
    ck_assert_int_eq(a->bind, b->bind);
    ck_assert_int_eq(a->nonfinite, b->nonfinite);
    ck_assert_int_eq(a->auto_trials, b->auto_trials);
}

/* The value of parameter `name` of a method spec. */
static double param_of(const method_spec_t *m, const char *name)
{
    for (size_t i = 0; i < m->def->n_params; i++)
        if (strcmp(m->def->params[i].name, name) == 0) return m->p[i];
    ck_abort_msg("%s has no parameter %s", m->def->name, name);
    return NAN;
}

/* ---- Defaults and keys ------------------------------------------------------------------ */

START_TEST(config_defaults_match_the_documented_defaults)
{
    terse_config_t cfg;
    config_defaults(&cfg);
    ck_assert_str_eq(cfg.compressor.def->name, "none");
    ck_assert_str_eq(cfg.feedback.def->name, "none");
    ck_assert_str_eq(cfg.adapt.def->name, "none");
    ck_assert_uint_eq(cfg.min_size, 1024);
    ck_assert_int_eq(cfg.reduce, CONFIG_REDUCE_MEAN);
    ck_assert_int_eq(cfg.threads, 1);
    ck_assert_int_eq(cfg.hier, CONFIG_HIER_AUTO);
    ck_assert_int_eq(cfg.bind, CONFIG_BIND_AUTO);
    ck_assert_int_eq(cfg.nonfinite, CONFIG_NONFINITE_ERROR);
    ck_assert_str_eq(format_of(&cfg).s,
                     "compressor=none; feedback=none; adapt=none; min_size=1024; reduce=mean; "
                     "threads=1; hier=auto; bind=auto; nonfinite=error; fuse=16777216; device=cpu");
    ck_assert_uint_eq(cfg.fuse, 16u << 20);
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_OK);
}
END_TEST

START_TEST(config_null_or_empty_text_changes_nothing)
{
    terse_config_t cfg = parsed("compressor=topk:k=5; min_size=7");
    text_t before = format_of(&cfg);
    const char *empties[] = {NULL, "", "   ", ";", ";;;", " ; \t;\n "};
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        ck_assert_int_eq(config_parse(&cfg, empties[i], 0), TERSE_OK);
        ck_assert_str_eq(format_of(&cfg).s, before.s);
    }
}
END_TEST

START_TEST(config_parse_rejects_a_null_target)
{
    ck_assert_int_eq(config_parse(NULL, "compressor=none", 0), TERSE_ERR_ARG);
    ck_assert_str_ne(terse_last_error(), "");
}
END_TEST

START_TEST(config_parses_every_key)
{
    terse_config_t cfg = parsed("compressor=fp16; feedback=ef; adapt=lgreco:period=7; "
                                "min_size=4096; reduce=sum; threads=4; hier=off; bind=none; "
                                "nonfinite=skip; fuse=3M; device=cuda");
    ck_assert_str_eq(cfg.compressor.def->name, "fp16");
    ck_assert_str_eq(cfg.feedback.def->name, "ef");
    ck_assert_str_eq(cfg.adapt.def->name, "lgreco");
    ck_assert_double_eq(param_of(&cfg.adapt, "period"), 7);
    ck_assert_uint_eq(cfg.min_size, 4096);
    ck_assert_int_eq(cfg.reduce, CONFIG_REDUCE_SUM);
    ck_assert_int_eq(cfg.threads, 4);
    ck_assert_int_eq(cfg.hier, CONFIG_HIER_OFF);
    ck_assert_int_eq(cfg.bind, CONFIG_BIND_NONE);
    ck_assert_int_eq(cfg.nonfinite, CONFIG_NONFINITE_SKIP);
    ck_assert_uint_eq(cfg.fuse, 3u << 20);
    ck_assert_int_eq(cfg.device, CONFIG_DEVICE_CUDA);
    ck_assert_int_eq(parsed("device=cpu").device, CONFIG_DEVICE_CPU);

    ck_assert_int_eq(parsed("reduce=mean").reduce, CONFIG_REDUCE_MEAN);
    ck_assert_int_eq(parsed("hier=on").hier, CONFIG_HIER_ON);
    ck_assert_int_eq(parsed("hier=auto").hier, CONFIG_HIER_AUTO);
    ck_assert_int_eq(parsed("bind=auto").bind, CONFIG_BIND_AUTO);
    ck_assert_int_eq(parsed("nonfinite=pass").nonfinite, CONFIG_NONFINITE_PASS);
    ck_assert_int_eq(parsed("nonfinite=error").nonfinite, CONFIG_NONFINITE_ERROR);
    ck_assert_uint_eq(parsed("min_size=0").min_size, 0);
    ck_assert_uint_eq(parsed("min_size=268435456").min_size, TERSE_MAX_LAYER_COUNT);
    ck_assert_int_eq(parsed("threads=1").threads, 1);
    ck_assert_int_eq(parsed("threads=256").threads, 256);
    ck_assert_uint_eq(parsed("fuse=0").fuse, 0);
    ck_assert_uint_eq(parsed("fuse=4096").fuse, 4096);
    ck_assert_uint_eq(parsed("fuse=64K").fuse, 65536);
    ck_assert_uint_eq(parsed("fuse=2G").fuse, (size_t)2 << 30);
    ck_assert_uint_eq(parsed("fuse=1024G").fuse, (size_t)1 << 40);
}
END_TEST

START_TEST(config_later_items_override_earlier_ones)
{
    terse_config_t cfg = parsed("compressor=fp16; min_size=5; compressor=bf16; min_size=6");
    ck_assert_str_eq(cfg.compressor.def->name, "bf16");
    ck_assert_uint_eq(cfg.min_size, 6);
    /* naming a method again starts from its defaults: topk gets density, not density and k */
    cfg = parsed("compressor=topk:k=5; compressor=topk:density=0.5");
    ck_assert_double_eq(param_of(&cfg.compressor, "density"), 0.5);
    ck_assert(isnan(param_of(&cfg.compressor, "k")));
    /* a second parse applies on top of the first */
    ck_assert_int_eq(config_parse(&cfg, "min_size=9", 0), TERSE_OK);
    ck_assert_str_eq(cfg.compressor.def->name, "topk");
    ck_assert_uint_eq(cfg.min_size, 9);
}
END_TEST

START_TEST(config_tolerates_whitespace_and_empty_items)
{
    terse_config_t a = parsed(" \t compressor = topk : density = 0.25 , k = 3 ;; ; feedback =ef "
                              ";min_size= 7 ;reduce\t=\tsum;\n");
    terse_config_t b = parsed("compressor=topk:density=0.25,k=3;feedback=ef;min_size=7;reduce=sum");
    assert_same_config(&a, &b);
    ck_assert_str_eq(format_of(&a).s, format_of(&b).s);
    ck_assert_double_eq(param_of(&a.compressor, "k"), 3);
}
END_TEST

/* ---- Every codec and method of the grammar ---------------------------------------------- */

/* Whether a method is built is read from its registry row (ops set), not listed here: the
 * methods land one by one, and the contract is the same for each, supported exactly when
 * built. In version 0.1.0 the built ones are none, fp16, bf16, topk; feedback none, ef; adapt
 * none. */
typedef struct {
    const char *text;      /* the value of the key                                           */
    const char *canonical; /* how it formats: the name, every parameter that has a value     */
} method_case_t;

static const method_case_t codec_cases[] = {
    {"none", "none"},
    {"fp16", "fp16"},
    {"bf16", "bf16"},
    {"topk:density=0.01", "topk:density=0.01"},
    {"topk:k=5", "topk:k=5"},
    {"topk", "topk"},
    {"randk:density=0.01,seed=3", "randk:density=0.01,seed=3,unbiased=0"},
    {"onebit", "onebit:scale=l2"},
    {"onebit:scale=l2", "onebit:scale=l2"},
    {"qsgd:bits=4,bucket=512,stochastic=0", "qsgd:bits=4,bucket=512,stochastic=0,seed=0"},
    {"dgc:density=0.001,sample=0.01,momentum=0.9,nesterov=1,clip=1,warmup=100",
     "dgc:density=0.001,sample=0.01,momentum=0.9,nesterov=1,clip=1,warmup=100,schedule=paper"},
    {"powersgd:rank=4,start=10,min_rate=2,warm_start=1",
     "powersgd:rank=4,start=10,min_rate=2,warm_start=1,seed=0"},
};
#define N_CODEC_CASES ((int)(sizeof codec_cases / sizeof codec_cases[0]))

static const method_case_t feedback_cases[] = {
    {"none", "none"},
    {"ef", "ef"},
    {"ef:lr=0.5", "ef:lr=0.5"},
    {"ef21", "ef21"},
    {"ef21:weight=2", "ef21:weight=2"},
    {"ef21sgdm:eta=0.5", "ef21sgdm:eta=0.5"},
    {"econtrol:eta=0.2", "econtrol:eta=0.2"},
};
#define N_FEEDBACK_CASES ((int)(sizeof feedback_cases / sizeof feedback_cases[0]))

static const method_case_t adapt_cases[] = {
    {"none", "none"},
    {"lgreco", "lgreco:period=500,window=10,alpha=1,lo=0.5,hi=2,buckets=10000"},
    {"lgreco:period=100,window=5,alpha=0.5,lo=0.25,hi=4,buckets=1000",
     "lgreco:period=100,window=5,alpha=0.5,lo=0.25,hi=4,buckets=1000"},
};
#define N_ADAPT_CASES ((int)(sizeof adapt_cases / sizeof adapt_cases[0]))

/* Parses key=case, checks the canonical form, and that config_check_supported accepts it
 * when this build has it, or gives TERSE_ERR_UNSUPPORTED with a message that names it. */
static void check_method_case(const char *key, const method_case_t *c)
{
    char text[512];
    snprintf(text, sizeof text, "%s=%s", key, c->text);
    terse_config_t cfg = parsed(text);
    const method_spec_t *m = strcmp(key, "compressor") == 0 ? &cfg.compressor
                           : strcmp(key, "feedback") == 0 ? &cfg.feedback : &cfg.adapt;
    ck_assert_str_eq(method_of(m).s, c->canonical);
    size_t name_len = strcspn(c->text, ":");
    ck_assert_int_eq(strncmp(m->def->name, c->text, name_len), 0);
    ck_assert_uint_eq(strlen(m->def->name), name_len);

    terse_error_clear();
    terse_status_t st = config_check_supported(&cfg);
    if (m->def->ops != NULL) {
        ck_assert_msg(st == TERSE_OK, "%s: %s", text, terse_last_error());
    } else {
        ck_assert_msg(st == TERSE_ERR_UNSUPPORTED, "%s: status %d, want TERSE_ERR_UNSUPPORTED",
                      text, st);
        assert_mentions(terse_last_error(), key, text);
        char quoted[256];
        snprintf(quoted, sizeof quoted, "'%.*s", (int)name_len, c->text);
        assert_mentions(terse_last_error(), quoted, text);
        /* config_resolve goes through the same check and leaves its output alone */
        terse_config_t out = parsed("min_size=77");
        ck_assert_int_eq(config_resolve(text, &out), TERSE_ERR_UNSUPPORTED);
        ck_assert_uint_eq(out.min_size, 77);
    }
}

START_TEST(config_parses_every_codec_in_the_grammar)
{
    check_method_case("compressor", &codec_cases[_i]);
}
END_TEST

START_TEST(config_parses_every_feedback_method_in_the_grammar)
{
    check_method_case("feedback", &feedback_cases[_i]);
}
END_TEST

START_TEST(config_parses_every_adapt_method_in_the_grammar)
{
    check_method_case("adapt", &adapt_cases[_i]);
}
END_TEST

START_TEST(config_stores_parameter_values)
{
    terse_config_t cfg = parsed("compressor=qsgd:bits=4,bucket=512,stochastic=0");
    ck_assert_double_eq(param_of(&cfg.compressor, "bits"), 4);
    ck_assert_double_eq(param_of(&cfg.compressor, "bucket"), 512);
    ck_assert_double_eq(param_of(&cfg.compressor, "stochastic"), 0);
    cfg = parsed("compressor=onebit:scale=l2");
    ck_assert_double_eq(param_of(&cfg.compressor, "scale"), 1); /* the word's index */
    cfg = parsed("compressor=dgc:density=0.001");
    ck_assert_double_eq(param_of(&cfg.compressor, "density"), 0.001);
    ck_assert_double_eq(param_of(&cfg.compressor, "sample"), 0.01);   /* default */
    ck_assert_double_eq(param_of(&cfg.compressor, "momentum"), 0.9);  /* default */
    ck_assert(isnan(param_of(&cfg.compressor, "clip")));              /* unset */
    cfg = parsed("compressor=topk:density=0.01");
    ck_assert_double_eq(param_of(&cfg.compressor, "density"), 0.01);
    ck_assert(isnan(param_of(&cfg.compressor, "k")));
    cfg = parsed("compressor=topk:density=1");
    ck_assert_double_eq(param_of(&cfg.compressor, "density"), 1);
}
END_TEST

/* compressor=auto[:with=CODEC,trials=T,...]: the codec and its parameters in compressor, the
 * trials beside; a later plain compressor= turns it off. */
START_TEST(config_parses_auto)
{
    terse_config_t cfg = parsed("compressor=auto");
    ck_assert_str_eq(cfg.compressor.def->name, "topk");
    ck_assert_int_eq(cfg.auto_trials, 4);
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_OK);
    char buf[256];
    config_format_compressor(&cfg, buf, sizeof buf);
    ck_assert_str_eq(buf, "auto:with=topk,trials=4");
    cfg = parsed("compressor=auto:density=0.05, with=topk");
    ck_assert_double_eq(param_of(&cfg.compressor, "density"), 0.05);
    config_format_compressor(&cfg, buf, sizeof buf);
    ck_assert_str_eq(buf, "auto:with=topk,trials=4,density=0.05");
    cfg = parsed("compressor=auto:with=onebit,trials=5");
    ck_assert_str_eq(cfg.compressor.def->name, "onebit");
    ck_assert_int_eq(cfg.auto_trials, 5);
    cfg = parsed("compressor=auto:with=qsgd,bits=2; compressor=fp16");
    ck_assert_str_eq(cfg.compressor.def->name, "fp16");
    ck_assert_int_eq(cfg.auto_trials, 0);
    /* per layer too */
    terse_config_t l;
    config_defaults(&l);
    ck_assert_int_eq(config_parse(&l, "compressor=auto:with=powersgd,rank=2", 1), TERSE_OK);
    ck_assert_str_eq(l.compressor.def->name, "powersgd");
    ck_assert_int_eq(l.auto_trials, 4);
    /* not with an adaptation method */
    cfg = parsed("compressor=auto; adapt=lgreco");
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_ERR_ARG);
    assert_mentions(terse_last_error(), "adapt=lgreco", "auto with lgreco");
}
END_TEST

START_TEST(config_reports_unbuilt_settings_as_unsupported)
{
    /* every method of the grammar is built now: a registry row without ops stands in */
    terse_config_t cfg = parsed("compressor=topk");
    cfg.compressor.def = codec_find("auto");
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_ERR_UNSUPPORTED);
    assert_mentions(terse_last_error(), "auto", "compressor 'auto'");
    /* what the build does serve */
    cfg = parsed("threads=4; hier=off; bind=none; reduce=sum; nonfinite=pass; min_size=0");
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_OK);
    cfg = parsed("hier=on; bind=auto");
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_OK);
    cfg = parsed("hier=auto; bind=auto");
    ck_assert_int_eq(config_check_supported(&cfg), TERSE_OK);
}
END_TEST

/* ---- Errors ----------------------------------------------------------------------------- */

typedef struct {
    const char *text;
    const char *quote;  /* the bad text, as the message must quote it */
    const char *accept; /* a piece of the list of what is accepted    */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    /* unknown key */
    {"compresor=none", "'compresor'", "accepted keys: compressor, feedback, adapt, min_size"},
    {"=none", "'=none'", "accepted keys: compressor"},
    {"compressor", "'compressor'", "accepted keys: compressor"},
    /* unknown codec or method */
    {"compressor=topq", "'topq'", "accepted: none, fp16, bf16, topk, randk, onebit, qsgd, dgc"},
    {"compressor=TOPK", "'TOPK'", "topk"},
    {"feedback=ef22", "'ef22'", "none, ef, ef21, ef21sgdm, econtrol"},
    {"adapt=greco", "'greco'", "none, lgreco"},
    /* empty method name */
    {"compressor=", "''", "accepted: none, fp16, bf16, topk"},
    {"compressor=:k=5", "':k=5'", "accepted: none, fp16, bf16, topk"},
    {"feedback= ", "''", "none, ef"},
    /* unknown parameter */
    {"compressor=topk:densty=0.1", "'densty'", "density (number in (0, 1])"},
    {"compressor=none:k=5", "'k'", "accepted parameters: none"},
    {"compressor=topk:density=0.1,seed=3", "'seed'", "density"},
    /* out of range */
    {"compressor=topk:density=2", "'density=2'", "density (number in (0, 1])"},
    {"compressor=topk:density=0", "'density=0'", "density (number in (0, 1])"},
    {"compressor=topk:density=-0.5", "'density=-0.5'", "(0, 1]"},
    {"compressor=topk:density=inf", "'density=inf'", "(0, 1]"},
    {"compressor=topk:k=0", "'k=0'", "k (integer in [1,"},
    {"compressor=qsgd:bits=9", "'bits=9'", "bits (integer in [1, 8])"},
    {"compressor=randk:density=0.1,seed=-1", "'seed=-1'", "seed (integer"},
    {"feedback=ef21sgdm:eta=1.5", "'eta=1.5'", "eta (number in [0, 1])"},
    {"adapt=lgreco:period=0", "'period=0'", "period (integer"},
    {"min_size=-1", "'-1'", "an integer in [0, 268435456]"},
    {"min_size=268435457", "'268435457'", "an integer in [0, 268435456]"},
    {"threads=0", "'0'", "an integer in [1, 256]"},
    {"threads=257", "'257'", "an integer in [1, 256]"},
    {"fuse=-1", "'-1'", "a byte count in [0, 1099511627776]"},
    {"fuse=1.5M", "'1.5M'", "suffix K, M or G"},
    {"fuse=M", "'M'", "a byte count"},
    {"fuse=1025G", "'1025G'", "a byte count"},
    {"fuse=12T", "'12T'", "a byte count"},
    {"device=gpu", "'gpu'", "cpu, cuda"},
    /* not a number */
    {"compressor=topk:density=abc", "'density=abc'", "density (number in (0, 1])"},
    {"compressor=topk:density=0.1x", "'density=0.1x'", "density (number"},
    {"compressor=topk:density=nan", "'density=nan'", "density (number"},
    {"compressor=topk:density=", "'density='", "density (number"},
    {"min_size=abc", "'abc'", "an integer in [0, 268435456]"},
    {"min_size=", "''", "an integer in [0, 268435456]"},
    /* not an integer */
    {"compressor=qsgd:bits=2.5", "'bits=2.5'", "bits (integer in [1, 8])"},
    {"compressor=topk:k=2.5", "'k=2.5'", "k (integer"},
    {"min_size=1.5", "'1.5'", "an integer in [0, 268435456]"},
    {"threads=1.5", "'1.5'", "an integer in [1, 256]"},
    /* a word that is not one of the choices */
    {"compressor=onebit:scale=l3", "'scale=l3'", "one of l1, l2"},
    {"reduce=avg", "'avg'", "mean, sum"},
    {"hier=maybe", "'maybe'", "auto, on, off"},
    {"bind=numa", "'numa'", "auto, none"},
    {"nonfinite=ignore", "'ignore'", "error, skip, pass"},
    /* missing '=' in a parameter, or no parameter after ':' */
    {"compressor=topk:density", "'density'", "accepted parameters: density"},
    {"compressor=topk:0.01", "'0.01'", "accepted parameters: density"},
    {"compressor=topk:", "'topk:'", "accepted parameters: density"},
    /* an error after a valid item: nothing of the string is applied */
    {"min_size=5; compressor=topk:density=1.5", "'density=1.5'", "(0, 1]"},
    {"compressor=fp16; reduce=sum; bogus=1", "'bogus'", "accepted keys"},
    /* compressor=auto's own parameters, and its codec's */
    {"compressor=auto:with=none", "'with=none'", "a codec other than none"},
    {"compressor=auto:with=zip", "'with=zip'", "topk"},
    {"compressor=auto:trials=0", "'0'", "an integer in [1, 64]"},
    {"compressor=auto:trials=65", "'65'", "an integer in [1, 64]"},
    {"compressor=auto:with=topk,bogus=1", "'bogus'", "accepted parameters: density"},
    {"compressor=auto:with=qsgd,bits=9", "'bits=9'", "bits (integer in [1, 8])"},
    {"compressor=auto:", "nothing after ':'", "with=CODEC"},
};
#define N_BAD_CASES ((int)(sizeof bad_cases / sizeof bad_cases[0]))

START_TEST(config_rejects_bad_text_naming_it_and_what_is_accepted)
{
    const bad_case_t *c = &bad_cases[_i];
    terse_config_t cfg = parsed("compressor=topk:k=3; feedback=ef; min_size=11; reduce=sum");
    text_t before = format_of(&cfg);
    terse_error_clear();
    terse_status_t st = config_parse(&cfg, c->text, 0);
    ck_assert_msg(st == TERSE_ERR_ARG, "'%s' gave status %d, want TERSE_ERR_ARG", c->text, st);
    assert_mentions(terse_last_error(), c->quote, c->text);
    assert_mentions(terse_last_error(), c->accept, c->text);
    ck_assert_msg(strcmp(format_of(&cfg).s, before.s) == 0, "'%s' changed the configuration",
                  c->text);
    /* config_resolve gives the same error and leaves its output alone */
    terse_config_t out = cfg;
    ck_assert_int_eq(config_resolve(c->text, &out), TERSE_ERR_ARG);
    ck_assert_str_eq(format_of(&out).s, before.s);
}
END_TEST

START_TEST(config_per_layer_rejects_communicator_keys)
{
    static const struct { const char *text, *quote; } cases[] = {
        {"threads=1", "'threads'"},
        {"hier=off", "'hier'"},
        {"bind=none", "'bind'"},
        {"fuse=1M", "'fuse'"},
        {"device=cuda", "'device'"},
        {"compressor=fp16; threads=2", "'threads'"},
    };
    terse_config_t cfg = parsed("compressor=topk:k=3; min_size=11");
    text_t before = format_of(&cfg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(config_parse(&cfg, cases[i].text, 1), TERSE_ERR_ARG);
        assert_mentions(terse_last_error(), cases[i].quote, cases[i].text);
        assert_mentions(terse_last_error(),
                        "per-layer keys: compressor, feedback, adapt, min_size, reduce, nonfinite",
                        cases[i].text);
        ck_assert_str_eq(format_of(&cfg).s, before.s);
    }
}
END_TEST

START_TEST(config_per_layer_accepts_layer_keys)
{
    terse_config_t cfg;
    config_defaults(&cfg);
    ck_assert_int_eq(config_parse(&cfg, "compressor=topk:k=3; feedback=ef; adapt=none; "
                                        "min_size=0; reduce=sum; nonfinite=pass", 1),
                     TERSE_OK);
    ck_assert_str_eq(method_of(&cfg.compressor).s, "topk:k=3");
    ck_assert_str_eq(cfg.feedback.def->name, "ef");
    ck_assert_uint_eq(cfg.min_size, 0);
    ck_assert_int_eq(cfg.reduce, CONFIG_REDUCE_SUM);
    ck_assert_int_eq(cfg.nonfinite, CONFIG_NONFINITE_PASS);
}
END_TEST

/* ---- Environment ------------------------------------------------------------------------ */

START_TEST(env_overrides_follow_string_then_config_then_single_keys)
{
    terse_config_t cfg;
    /* the string alone */
    ck_assert_int_eq(config_resolve("compressor=fp16; min_size=5; reduce=sum", &cfg), TERSE_OK);
    ck_assert_str_eq(cfg.compressor.def->name, "fp16");
    /* TERSE_CONFIG over the string, for the keys it names */
    setenv("TERSE_CONFIG", "compressor=bf16; min_size=7", 1);
    ck_assert_int_eq(config_resolve("compressor=fp16; min_size=5; reduce=sum", &cfg), TERSE_OK);
    ck_assert_str_eq(cfg.compressor.def->name, "bf16");
    ck_assert_uint_eq(cfg.min_size, 7);
    ck_assert_int_eq(cfg.reduce, CONFIG_REDUCE_SUM);
    /* single-key variables over TERSE_CONFIG */
    setenv("TERSE_COMPRESSOR", "topk:k=5", 1);
    setenv("TERSE_FEEDBACK", "ef", 1);
    setenv("TERSE_CONFIG", "compressor=bf16; feedback=none; min_size=7", 1);
    ck_assert_int_eq(config_resolve("compressor=fp16; min_size=5; reduce=sum", &cfg), TERSE_OK);
    ck_assert_str_eq(method_of(&cfg.compressor).s, "topk:k=5");
    ck_assert_str_eq(cfg.feedback.def->name, "ef");
    ck_assert_uint_eq(cfg.min_size, 7);
    ck_assert_int_eq(cfg.reduce, CONFIG_REDUCE_SUM);
    ck_assert_str_eq(format_of(&cfg).s,
                     "compressor=topk:k=5; feedback=ef; adapt=none; min_size=7; reduce=sum; "
                     "threads=1; hier=auto; bind=auto; nonfinite=error; fuse=16777216; device=cpu");
    env_clear();
    ck_assert_int_eq(config_resolve("compressor=fp16", &cfg), TERSE_OK);
    ck_assert_str_eq(cfg.compressor.def->name, "fp16");
}
END_TEST

START_TEST(env_adapt_overrides_the_adapt_key)
{
    terse_config_t cfg;
    config_defaults(&cfg);
    setenv("TERSE_CONFIG", "adapt=lgreco:period=9", 1);
    ck_assert_int_eq(config_apply_env(&cfg), TERSE_OK);
    ck_assert_str_eq(cfg.adapt.def->name, "lgreco");
    ck_assert_double_eq(param_of(&cfg.adapt, "period"), 9);
    setenv("TERSE_ADAPT", "none", 1);
    ck_assert_int_eq(config_apply_env(&cfg), TERSE_OK);
    ck_assert_str_eq(cfg.adapt.def->name, "none");
    unsetenv("TERSE_CONFIG");
    setenv("TERSE_ADAPT", "lgreco:period=3", 1);
    config_defaults(&cfg);
    ck_assert_int_eq(config_apply_env(&cfg), TERSE_OK);
    ck_assert_str_eq(cfg.adapt.def->name, "lgreco");
    ck_assert_double_eq(param_of(&cfg.adapt, "period"), 3);
    /* config_resolve applies it too, then asks whether this build has lgreco */
    terse_status_t want = cfg.adapt.def->ops ? TERSE_OK : TERSE_ERR_UNSUPPORTED;
    ck_assert_int_eq(config_resolve("adapt=none", &cfg), want);
    if (want != TERSE_OK) assert_mentions(terse_last_error(), "lgreco", "TERSE_ADAPT=lgreco");
}
END_TEST

START_TEST(env_single_keys_replace_only_their_key)
{
    setenv("TERSE_FEEDBACK", "ef", 1);
    terse_config_t cfg;
    ck_assert_int_eq(config_resolve("compressor=topk:density=0.1; min_size=3", &cfg), TERSE_OK);
    ck_assert_str_eq(method_of(&cfg.compressor).s, "topk:density=0.1");
    ck_assert_str_eq(cfg.feedback.def->name, "ef");
    ck_assert_uint_eq(cfg.min_size, 3);
}
END_TEST

typedef struct {
    const char *var, *value, *quote;
} env_bad_case_t;

static const env_bad_case_t env_bad_cases[] = {
    {"TERSE_CONFIG", "compressor=bogus", "'bogus'"},
    {"TERSE_CONFIG", "min_size=1; colour=blue", "'colour'"},
    {"TERSE_COMPRESSOR", "topk:density=7", "'density=7'"},
    {"TERSE_COMPRESSOR", "topk;min_size=1", "'topk;min_size=1'"},
    {"TERSE_FEEDBACK", "ef22", "'ef22'"},
    {"TERSE_ADAPT", "lgreco:period=x", "'period=x'"},
};
#define N_ENV_BAD_CASES ((int)(sizeof env_bad_cases / sizeof env_bad_cases[0]))

START_TEST(env_bad_value_is_an_error_naming_the_variable_and_the_text)
{
    const env_bad_case_t *c = &env_bad_cases[_i];
    setenv(c->var, c->value, 1);
    terse_config_t cfg = parsed("compressor=fp16; min_size=5");
    text_t before = format_of(&cfg);
    ck_assert_int_eq(config_apply_env(&cfg), TERSE_ERR_ARG);
    char what[128];
    snprintf(what, sizeof what, "%s=%s", c->var, c->value);
    const char *msg = terse_last_error();
    ck_assert_msg(strncmp(msg, "environment ", 12) == 0, "%s: \"%s\"", what, msg);
    assert_mentions(msg, c->var, what);
    assert_mentions(msg, c->quote, what);
    assert_mentions(msg, "accepted", what);
    /* the variable is named once: the parser's message is quoted, not garbled into itself */
    ck_assert_msg(strstr(strstr(msg, c->var) + 1, c->var) == NULL, "%s: \"%s\"", what, msg);
    ck_assert_str_eq(format_of(&cfg).s, before.s);
    ck_assert_int_eq(config_resolve("compressor=fp16", &cfg), TERSE_ERR_ARG);
    ck_assert_str_eq(format_of(&cfg).s, before.s);
}
END_TEST

/* ---- Formatting ------------------------------------------------------------------------- */

static const char *const round_trip_cases[] = {
    "",
    "compressor=topk:density=0.01",
    "compressor=topk:k=5; feedback=ef",
    "compressor=topk:density=0.123456789012345678",
    "compressor=topk:density=1e-7",
    "compressor=topk:density=0.1",
    "compressor=topk:k=4294967295",
    "compressor=randk:density=0.01,seed=3",
    "compressor=randk:seed=4294967295",
    "compressor=onebit",
    "compressor=onebit:scale=l2",
    "compressor=qsgd:bits=4,bucket=512,stochastic=0",
    "compressor=dgc:density=0.001,sample=0.01,momentum=0.9,nesterov=1,clip=1,warmup=100",
    "compressor=dgc:clip=inf",
    "compressor=dgc:clip=0.3333333333333333,momentum=0",
    "compressor=powersgd:rank=4,start=10,min_rate=2,warm_start=1",
    "compressor=auto",
    "feedback=ef21:weight=2.5",
    "feedback=ef21sgdm:eta=0.5",
    "feedback=econtrol",
    "adapt=lgreco:period=100,window=5,alpha=0.5,lo=0.25,hi=4,buckets=1000",
    "min_size=0; reduce=sum; threads=256; hier=on; bind=none; nonfinite=skip",
    "min_size=268435456; hier=off; nonfinite=pass",
    "compressor=auto:with=powersgd,rank=2,trials=3; feedback=ef",
};
#define N_ROUND_TRIP_CASES ((int)(sizeof round_trip_cases / sizeof round_trip_cases[0]))

START_TEST(config_format_round_trips_through_parse)
{
    terse_config_t a = parsed(round_trip_cases[_i]);
    text_t s1 = format_of(&a);
    terse_config_t b = parsed(s1.s);
    text_t s2 = format_of(&b);
    ck_assert_str_eq(s1.s, s2.s);
    assert_same_config(&a, &b);
    /* per-layer text: the formatted method values read back the same way */
    char layer[600];
    int len = snprintf(layer, sizeof layer, "compressor=%s; feedback=%s; adapt=%s",
                       method_of(&a.compressor).s, method_of(&a.feedback).s, method_of(&a.adapt).s);
    ck_assert_int_lt(len, (int)sizeof layer);
    terse_config_t c;
    config_defaults(&c);
    ck_assert_int_eq(config_parse(&c, layer, 1), TERSE_OK);
    assert_same_method(&a.compressor, &c.compressor);
    assert_same_method(&a.feedback, &c.feedback);
    assert_same_method(&a.adapt, &c.adapt);
}
END_TEST

START_TEST(config_format_returns_the_length_needed_like_snprintf)
{
    terse_config_t cfg = parsed("compressor=dgc:density=0.001,sample=0.01,momentum=0.9,"
                                "nesterov=1,clip=1,warmup=100");
    text_t full = format_of(&cfg);
    size_t need = strlen(full.s);
    char small[20];
    memset(small, 'x', sizeof small);
    ck_assert_uint_eq(config_format(&cfg, small, sizeof small), need);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(strncmp(small, full.s, sizeof small - 1), 0);
    ck_assert_uint_eq(config_format(&cfg, NULL, 0), need);

    text_t m = method_of(&cfg.compressor);
    size_t mneed = strlen(m.s);
    for (size_t len = 0; len <= mneed + 1; len++) {
        char buf[128];
        memset(buf, 'x', sizeof buf);
        ck_assert_uint_eq(config_format_method(&cfg.compressor, len ? buf : NULL, len), mneed);
        if (len) {
            ck_assert_uint_eq(strlen(buf), len - 1 < mneed ? len - 1 : mneed);
            ck_assert_int_eq(strncmp(buf, m.s, strlen(buf)), 0);
            ck_assert_msg(buf[len] == 'x', "wrote past %zu bytes", len);
        }
    }
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");

    TCase *tc_keys = tcase_create("keys");
    tcase_add_checked_fixture(tc_keys, env_clear, env_clear);
    tcase_add_test(tc_keys, config_defaults_match_the_documented_defaults);
    tcase_add_test(tc_keys, config_null_or_empty_text_changes_nothing);
    tcase_add_test(tc_keys, config_parse_rejects_a_null_target);
    tcase_add_test(tc_keys, config_parses_every_key);
    tcase_add_test(tc_keys, config_later_items_override_earlier_ones);
    tcase_add_test(tc_keys, config_tolerates_whitespace_and_empty_items);
    tcase_add_test(tc_keys, config_per_layer_rejects_communicator_keys);
    tcase_add_test(tc_keys, config_per_layer_accepts_layer_keys);
    suite_add_tcase(s, tc_keys);

    TCase *tc_methods = tcase_create("methods");
    tcase_add_checked_fixture(tc_methods, env_clear, env_clear);
    tcase_add_loop_test(tc_methods, config_parses_every_codec_in_the_grammar, 0, N_CODEC_CASES);
    tcase_add_loop_test(tc_methods, config_parses_every_feedback_method_in_the_grammar, 0,
                        N_FEEDBACK_CASES);
    tcase_add_loop_test(tc_methods, config_parses_every_adapt_method_in_the_grammar, 0,
                        N_ADAPT_CASES);
    tcase_add_test(tc_methods, config_stores_parameter_values);
    tcase_add_test(tc_methods, config_reports_unbuilt_settings_as_unsupported);
    tcase_add_test(tc_methods, config_parses_auto);
    suite_add_tcase(s, tc_methods);

    TCase *tc_errors = tcase_create("errors");
    tcase_add_checked_fixture(tc_errors, env_clear, env_clear);
    tcase_add_loop_test(tc_errors, config_rejects_bad_text_naming_it_and_what_is_accepted, 0,
                        N_BAD_CASES);
    suite_add_tcase(s, tc_errors);

    TCase *tc_env = tcase_create("environment");
    tcase_add_checked_fixture(tc_env, env_clear, env_clear);
    tcase_add_test(tc_env, env_overrides_follow_string_then_config_then_single_keys);
    tcase_add_test(tc_env, env_adapt_overrides_the_adapt_key);
    tcase_add_test(tc_env, env_single_keys_replace_only_their_key);
    tcase_add_loop_test(tc_env, env_bad_value_is_an_error_naming_the_variable_and_the_text, 0,
                        N_ENV_BAD_CASES);
    suite_add_tcase(s, tc_env);

    TCase *tc_format = tcase_create("format");
    tcase_add_checked_fixture(tc_format, env_clear, env_clear);
    tcase_add_loop_test(tc_format, config_format_round_trips_through_parse, 0, N_ROUND_TRIP_CASES);
    tcase_add_test(tc_format, config_format_returns_the_length_needed_like_snprintf);
    suite_add_tcase(s, tc_format);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
