/* Parser of configuration strings: `key=value` items separated by ';', a method being
 * `name[:param=value[,param=value...]]`. Every error quotes the text it could not accept and
 * lists what is accepted, so that a user can fix the string from the message alone. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "error.h"
#include "feedback/feedback.h"
#include "lgreco.h"

static const param_def_t lgreco_params[] = {
    {"period", 500.0, 1.0, 1e12, 0, 1, NULL},
    {"window", 10.0, 1.0, 1e6, 0, 1, NULL},
    {"alpha", 1.0, 0.0, 1e6, 1, 0, NULL},
    {"lo", 0.5, 0.0, 1.0, 1, 0, NULL},
    {"hi", 2.0, 1.0, 1e6, 0, 0, NULL},
    {"buckets", 10000.0, 1.0, 1e7, 0, 1, NULL},
};

const method_def_t adapt_registry[] = {
    {"none", NULL, 0, ""},
    {"lgreco", lgreco_params, sizeof lgreco_params / sizeof lgreco_params[0], "src/lgreco.c"},
};
const size_t adapt_registry_len = sizeof adapt_registry / sizeof adapt_registry[0];

typedef struct {
    const char *key;   /* the configuration key: "compressor"                            */
    const method_def_t *table;
    const size_t *table_len;
} method_key_t;

static const method_key_t method_keys[] = {
    {"compressor", codec_registry, &codec_registry_len},
    {"feedback", feedback_registry, &feedback_registry_len},
    {"adapt", adapt_registry, &adapt_registry_len},
};

static const char *const reduce_words[] = {"mean", "sum", NULL};
static const char *const hier_words[] = {"auto", "on", "off", NULL};
static const char *const bind_words[] = {"auto", "none", NULL};
static const char *const nonfinite_words[] = {"error", "skip", "pass", NULL};
static const char *const device_words[] = {"cpu", "cuda", NULL};

static const char accepted_keys[] =
    "compressor, feedback, adapt, min_size, reduce, threads, hier, bind, nonfinite, fuse, device";
static const char per_layer_keys[] = "compressor, feedback, adapt, min_size, reduce, nonfinite";

static void method_set(method_spec_t *m, const method_def_t *def)
{
    m->def = def;
    for (size_t i = 0; i < TERSE_MAX_PARAMS; i++)
        m->p[i] = i < def->n_params ? def->params[i].def : NAN;
}

void config_defaults(terse_config_t *cfg)
{
    method_set(&cfg->compressor, &codec_registry[0]);
    method_set(&cfg->feedback, &feedback_registry[0]);
    method_set(&cfg->adapt, &adapt_registry[0]);
    cfg->min_size = 1024;
    cfg->reduce = CONFIG_REDUCE_MEAN;
    cfg->threads = 1;
    cfg->hier = CONFIG_HIER_AUTO;
    cfg->bind = CONFIG_BIND_AUTO;
    cfg->nonfinite = CONFIG_NONFINITE_ERROR;
    cfg->auto_trials = 0;
    cfg->fuse = CONFIG_FUSE_DEFAULT;
    cfg->device = CONFIG_DEVICE_CPU;
}

/* Copies the trimmed text [b, e) into out (len bytes); 0 if it does not fit. */
static int trim_copy(const char *b, const char *e, char *out, size_t len)
{
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if ((size_t)(e - b) >= len) return 0;
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\0';
    return 1;
}

static void list_words(const char *const *w, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; w[i] && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", w[i]);
}

static void list_methods(const method_def_t *t, size_t n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", t[i].name);
}

static void describe_param(const param_def_t *d, char *buf, size_t len)
{
    if (d->choices) {
        char words[128];
        list_words(d->choices, words, sizeof words);
        snprintf(buf, len, "%s (one of %s)", d->name, words);
    } else {
        snprintf(buf, len, "%s (%s in %c%g, %g])", d->name, d->integer ? "integer" : "number",
                 d->min_open ? '(' : '[', d->min, d->max);
    }
}

static void list_params(const method_def_t *m, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    if (m->n_params == 0) {
        snprintf(buf, len, "none");
        return;
    }
    for (size_t i = 0; i < m->n_params && used < len; i++) {
        char one[160];
        describe_param(&m->params[i], one, sizeof one);
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", one);
    }
}

static int parse_number(const char *s, double *out)
{
    if (!*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || errno == ERANGE || isnan(v)) return 0;
    *out = v;
    return 1;
}

static int word_index(const char *const *w, const char *s)
{
    for (int i = 0; w[i]; i++)
        if (strcmp(w[i], s) == 0) return i;
    return -1;
}

/* Parses one "param=value" of method m into spec. */
static terse_status_t parse_param(const char *key, const method_def_t *m, const char *item,
                                  method_spec_t *spec)
{
    char buf[256], list[1024];
    const char *eq = strchr(item, '=');
    if (!eq) {
        list_params(m, list, sizeof list);
        return terse_error(TERSE_ERR_ARG,
                           "%s %s: parameter '%s' has no '=value'; accepted parameters: %s", key,
                           m->name, item, list);
    }
    char name[64], value[128];
    if (!trim_copy(item, eq, name, sizeof name) || !trim_copy(eq + 1, eq + strlen(eq), value, sizeof value))
        return terse_error(TERSE_ERR_ARG, "%s %s: parameter '%s' is too long", key, m->name, item);
    for (size_t i = 0; i < m->n_params; i++) {
        const param_def_t *d = &m->params[i];
        if (strcmp(d->name, name) != 0) continue;
        double v;
        describe_param(d, buf, sizeof buf);
        if (d->choices) {
            int w = word_index(d->choices, value);
            if (w < 0)
                return terse_error(TERSE_ERR_ARG, "%s %s: '%s=%s' is not accepted; %s", key,
                                   m->name, name, value, buf);
            v = w;
        } else if (!parse_number(value, &v)) {
            return terse_error(TERSE_ERR_ARG, "%s %s: '%s=%s' is not a number; accepted: %s",
                               key, m->name, name, value, buf);
        } else if (v > d->max || v < d->min || (d->min_open && v == d->min) ||
                   (d->integer && v != floor(v))) {
            return terse_error(TERSE_ERR_ARG, "%s %s: '%s=%s' is out of range; accepted: %s",
                               key, m->name, name, value, buf);
        }
        spec->p[i] = v;
        return TERSE_OK;
    }
    list_params(m, list, sizeof list);
    return terse_error(TERSE_ERR_ARG, "%s %s: unknown parameter '%s'; accepted parameters: %s",
                       key, m->name, name, list);
}

/* Parses a method value "name[:p=v,...]" for `key` into *out. */
static terse_status_t parse_method(const method_key_t *mk, const char *value, method_spec_t *out)
{
    char name[64], list[1024];
    const char *colon = strchr(value, ':');
    const char *name_end = colon ? colon : value + strlen(value);
    if (!trim_copy(value, name_end, name, sizeof name) || !name[0]) {
        list_methods(mk->table, *mk->table_len, list, sizeof list);
        return terse_error(TERSE_ERR_ARG, "%s: '%s' names no method; accepted: %s", mk->key,
                           value, list);
    }
    const method_def_t *def = NULL;
    for (size_t i = 0; i < *mk->table_len; i++)
        if (strcmp(mk->table[i].name, name) == 0) def = &mk->table[i];
    if (!def) {
        list_methods(mk->table, *mk->table_len, list, sizeof list);
        return terse_error(TERSE_ERR_ARG, "%s: unknown method '%s' in '%s=%s'; accepted: %s",
                           mk->key, name, mk->key, value, list);
    }
    method_spec_t spec;
    method_set(&spec, def);
    if (colon) {
        const char *s = colon + 1;
        if (!*s) {
            list_params(def, list, sizeof list);
            return terse_error(TERSE_ERR_ARG,
                               "%s %s: nothing after ':' in '%s'; accepted parameters: %s",
                               mk->key, name, value, list);
        }
        while (*s) {
            const char *comma = strchr(s, ',');
            const char *e = comma ? comma : s + strlen(s);
            char item[256];
            if (!trim_copy(s, e, item, sizeof item))
                return terse_error(TERSE_ERR_ARG, "%s %s: parameter text too long in '%s'",
                                   mk->key, name, value);
            TERSE_CHECK(parse_param(mk->key, def, item, &spec));
            s = comma ? comma + 1 : e;
        }
    }
    *out = spec;
    return TERSE_OK;
}

static terse_status_t parse_word(const char *key, const char *value, const char *const *w,
                                 int *out)
{
    int i = word_index(w, value);
    if (i < 0) {
        char list[256];
        list_words(w, list, sizeof list);
        return terse_error(TERSE_ERR_ARG, "%s: '%s' is not accepted; accepted: %s", key, value,
                           list);
    }
    *out = i;
    return TERSE_OK;
}

static terse_status_t parse_integer(const char *key, const char *value, double lo, double hi,
                                    double *out)
{
    double v;
    if (!parse_number(value, &v) || v != floor(v) || v < lo || v > hi)
        return terse_error(TERSE_ERR_ARG, "%s: '%s' is not accepted; accepted: an integer in [%.0f, %.0f]",
                           key, value, lo, hi);
    *out = v;
    return TERSE_OK;
}

/* A byte count: an integer with an optional binary suffix K, M or G. */
static terse_status_t parse_bytes(const char *key, const char *value, double hi, size_t *out)
{
    char digits[64];
    size_t len = strlen(value);
    double unit = 1, v = -1;
    const char *suffix = len ? strchr("KMG", value[len - 1]) : NULL;
    if (suffix && *suffix) {
        unit = suffix[0] == 'K' ? 1024.0 : suffix[0] == 'M' ? 1048576.0 : 1073741824.0;
        len--;
    }
    if (len > 0 && len < sizeof digits) {
        memcpy(digits, value, len);
        digits[len] = '\0';
        if (!parse_number(digits, &v) || v != floor(v)) v = -1;
    }
    if (v < 0 || v * unit > hi)
        return terse_error(TERSE_ERR_ARG, "%s: '%s' is not accepted; accepted: a byte count in [0, %.0f], "
                           "with an optional suffix K, M or G (binary)", key, value, hi);
    *out = (size_t)(v * unit);
    return TERSE_OK;
}

/* compressor=auto[:with=CODEC][,trials=T][,CODEC's parameters], in any order: `with` (default
 * topk) names the compressed path, `trials` (default 4, 1 to 64) how many calls of each path
 * a layer times before it keeps the faster; every other parameter is the codec's. */
#define AUTO_DEFAULT_CODEC "topk"
#define AUTO_DEFAULT_TRIALS 4

static terse_status_t parse_auto(const char *value, terse_config_t *cfg)
{
    char with[64] = AUTO_DEFAULT_CODEC, rest[512] = "", list[1024];
    double trials = AUTO_DEFAULT_TRIALS;
    const char *s = strchr(value, ':');
    if (s && !*++s)
        return terse_error(TERSE_ERR_ARG, "compressor auto: nothing after ':' in '%s'; accepted: "
                           "with=CODEC, trials=T and the codec's parameters", value);
    size_t used = 0;
    while (s && *s) {
        const char *comma = strchr(s, ',');
        const char *e = comma ? comma : s + strlen(s);
        char item[256], name[64];
        if (!trim_copy(s, e, item, sizeof item))
            return terse_error(TERSE_ERR_ARG, "compressor auto: parameter text too long in '%s'", value);
        const char *eq = strchr(item, '=');
        if (!eq || !trim_copy(item, eq, name, sizeof name)) name[0] = '\0'; /* the codec's to judge */
        if (strcmp(name, "with") == 0) {
            if (!trim_copy(eq + 1, eq + strlen(eq), with, sizeof with))
                return terse_error(TERSE_ERR_ARG, "compressor auto: '%s' is too long", item);
        } else if (strcmp(name, "trials") == 0) {
            TERSE_CHECK(parse_integer("compressor auto: trials", eq + 1, 1, 64, &trials));
        } else {
            int n = snprintf(rest + used, sizeof rest - used, "%s%s", used ? "," : "", item);
            if (n < 0 || (size_t)n >= sizeof rest - used)
                return terse_error(TERSE_ERR_ARG, "compressor auto: parameters too long in '%s'", value);
            used += (size_t)n;
        }
        s = comma ? comma + 1 : e;
    }
    const method_def_t *def = codec_find(with);
    if (!def || strcmp(with, "none") == 0 || strcmp(with, "auto") == 0) {
        list_methods(codec_registry, codec_registry_len, list, sizeof list);
        return terse_error(TERSE_ERR_ARG, "compressor auto: 'with=%s' names no compressed path; accepted: "
                           "a codec other than none and auto (%s)", with, list);
    }
    char spec_text[600];
    snprintf(spec_text, sizeof spec_text, "%s%s%s", with, used ? ":" : "", rest);
    method_spec_t spec;
    TERSE_CHECK(parse_method(&method_keys[0], spec_text, &spec));
    cfg->compressor = spec;
    cfg->auto_trials = (int)trials;
    return TERSE_OK;
}

static terse_status_t parse_item(terse_config_t *cfg, const char *item, int per_layer)
{
    const char *eq = strchr(item, '=');
    char key[64], value[512];
    if (!eq)
        return terse_error(TERSE_ERR_ARG, "configuration item '%s' is not key=value; accepted keys: %s",
                           item, accepted_keys);
    if (!trim_copy(item, eq, key, sizeof key) || !trim_copy(eq + 1, eq + strlen(eq), value, sizeof value))
        return terse_error(TERSE_ERR_ARG, "configuration item '%s' is too long", item);
    for (size_t i = 0; i < sizeof method_keys / sizeof method_keys[0]; i++) {
        if (strcmp(key, method_keys[i].key) != 0) continue;
        method_spec_t *dst = i == 0 ? &cfg->compressor : i == 1 ? &cfg->feedback : &cfg->adapt;
        if (i == 0) {
            const size_t name_len = strcspn(value, ":");
            if (name_len == 4 && strncmp(value, "auto", 4) == 0) return parse_auto(value, cfg);
            TERSE_CHECK(parse_method(&method_keys[i], value, dst));
            cfg->auto_trials = 0;
            return TERSE_OK;
        }
        return parse_method(&method_keys[i], value, dst);
    }
    int w;
    double v;
    if (strcmp(key, "min_size") == 0) {
        TERSE_CHECK(parse_integer(key, value, 0, (double)TERSE_MAX_LAYER_COUNT, &v));
        cfg->min_size = (size_t)v;
    } else if (strcmp(key, "reduce") == 0) {
        TERSE_CHECK(parse_word(key, value, reduce_words, &w));
        cfg->reduce = (config_reduce_t)w;
    } else if (strcmp(key, "nonfinite") == 0) {
        TERSE_CHECK(parse_word(key, value, nonfinite_words, &w));
        cfg->nonfinite = (config_nonfinite_t)w;
    } else if (per_layer && (strcmp(key, "threads") == 0 || strcmp(key, "hier") == 0 ||
                             strcmp(key, "bind") == 0 || strcmp(key, "fuse") == 0 ||
                             strcmp(key, "device") == 0)) {
        return terse_error(TERSE_ERR_ARG,
                           "key '%s' applies to the whole communicator, not to one layer; "
                           "per-layer keys: %s", key, per_layer_keys);
    } else if (strcmp(key, "threads") == 0) {
        TERSE_CHECK(parse_integer(key, value, 1, 256, &v));
        cfg->threads = (int)v;
    } else if (strcmp(key, "hier") == 0) {
        TERSE_CHECK(parse_word(key, value, hier_words, &w));
        cfg->hier = (config_hier_t)w;
    } else if (strcmp(key, "bind") == 0) {
        TERSE_CHECK(parse_word(key, value, bind_words, &w));
        cfg->bind = (config_bind_t)w;
    } else if (strcmp(key, "fuse") == 0) {
        TERSE_CHECK(parse_bytes(key, value, CONFIG_FUSE_MAX, &cfg->fuse));
    } else if (strcmp(key, "device") == 0) {
        TERSE_CHECK(parse_word(key, value, device_words, &w));
        cfg->device = (config_device_t)w;
    } else {
        return terse_error(TERSE_ERR_ARG, "unknown configuration key '%s' in '%s'; accepted keys: %s",
                           key, item, accepted_keys);
    }
    return TERSE_OK;
}

terse_status_t config_parse(terse_config_t *cfg, const char *text, int per_layer)
{
    if (!cfg) return terse_error(TERSE_ERR_ARG, "configuration: NULL target");
    if (!text) return TERSE_OK;
    terse_config_t work = *cfg;
    const char *s = text;
    while (*s) {
        const char *semi = strchr(s, ';');
        const char *e = semi ? semi : s + strlen(s);
        char item[768];
        if (!trim_copy(s, e, item, sizeof item))
            return terse_error(TERSE_ERR_ARG, "configuration item starting '%.40s' is too long (at most %zu characters)",
                               s, sizeof item - 1);
        if (item[0]) TERSE_CHECK(parse_item(&work, item, per_layer));
        s = semi ? semi + 1 : e;
    }
    *cfg = work;
    return TERSE_OK;
}

terse_status_t config_apply_env(terse_config_t *cfg)
{
    static const char *const single[][2] = {
        {"TERSE_COMPRESSOR", "compressor"}, {"TERSE_FEEDBACK", "feedback"}, {"TERSE_ADAPT", "adapt"}};
    terse_config_t work = *cfg;
    /* The parser's message is copied out before it is quoted: terse_error writes into the
     * buffer terse_last_error() returns, and formatting a buffer into itself garbles it. */
    char why[1024];
    const char *all = getenv("TERSE_CONFIG");
    if (all && config_parse(&work, all, 0) != TERSE_OK) {
        snprintf(why, sizeof why, "%s", terse_last_error());
        return terse_error(TERSE_ERR_ARG, "environment TERSE_CONFIG: %s", why);
    }
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(single[i][0]);
        if (!v) continue;
        /* One value for one key: a ';' would let the variable set other keys as well. */
        if (strchr(v, ';'))
            return terse_error(TERSE_ERR_ARG,
                               "environment %s: '%s' is more than one value; accepted: one %s "
                               "value, name[:param=value,...] (TERSE_CONFIG takes several keys)",
                               single[i][0], v, single[i][1]);
        char item[600];
        if ((size_t)snprintf(item, sizeof item, "%s=%s", single[i][1], v) >= sizeof item)
            return terse_error(TERSE_ERR_ARG, "environment %s is too long", single[i][0]);
        if (config_parse(&work, item, 0) != TERSE_OK) {
            snprintf(why, sizeof why, "%s", terse_last_error());
            return terse_error(TERSE_ERR_ARG, "environment %s: %s", single[i][0], why);
        }
    }
    *cfg = work;
    return TERSE_OK;
}

terse_status_t config_check_supported(const terse_config_t *cfg)
{
    char name[256];
    const method_spec_t *m[3] = {&cfg->compressor, &cfg->feedback, &cfg->adapt};
    const char *keys[3] = {"compressor", "feedback", "adapt"};
    for (int i = 0; i < 3; i++) {
        if (m[i]->def->ops) continue;
        config_format_method(m[i], name, sizeof name);
        return terse_error(TERSE_ERR_UNSUPPORTED,
                           "%s '%s' is part of the configuration grammar but not built in this "
                           "version of terse (%u)", keys[i], name, terse_version());
    }
    if (cfg->auto_trials && strcmp(cfg->adapt.def->name, "none") != 0)
        return terse_error(TERSE_ERR_ARG, "compressor=auto chooses between dense and one compressed path "
                           "per layer; it does not combine with adapt=%s", cfg->adapt.def->name);
    if (strcmp(cfg->adapt.def->name, "lgreco") == 0 && strcmp(cfg->compressor.def->name, "none") != 0 &&
        !lgreco_family_for(cfg->compressor.def->name))
        return terse_error(TERSE_ERR_ARG,
                           "adapt=lgreco cannot adapt compressor %s: it has no parameter to choose per "
                           "layer; lgreco adapts %s", cfg->compressor.def->name, lgreco_family_names());
    return TERSE_OK;
}

/* The shortest %g form that reads back as the same double. */
typedef struct { char s[32]; } number_text_t;
static number_text_t shortest(double v)
{
    number_text_t t;
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(t.s, sizeof t.s, "%.*g", prec, v);
        if (strtod(t.s, NULL) == v) break;
    }
    return t;
}

terse_status_t config_resolve(const char *text, terse_config_t *out)
{
    terse_config_t cfg;
    config_defaults(&cfg);
    TERSE_CHECK(config_parse(&cfg, text, 0));
    TERSE_CHECK(config_apply_env(&cfg));
    TERSE_CHECK(config_check_supported(&cfg));
    *out = cfg;
    return TERSE_OK;
}

size_t config_format_method(const method_spec_t *m, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "%s", m->def->name);
    char sep = ':';
    for (size_t i = 0; i < m->def->n_params; i++) {
        const param_def_t *d = &m->def->params[i];
        if (isnan(m->p[i])) continue;
        size_t room = used < len ? len - used : 0;
        if (d->choices)
            used += (size_t)snprintf(buf + (room ? used : 0), room, "%c%s=%s", sep, d->name,
                                     d->choices[(int)m->p[i]]);
        else
            used += (size_t)snprintf(buf + (room ? used : 0), room, "%c%s=%s", sep, d->name,
                                     shortest(m->p[i]).s);
        sep = ',';
    }
    return used;
}

size_t config_format_compressor(const terse_config_t *cfg, char *buf, size_t len)
{
    char m[256];
    config_format_method(&cfg->compressor, m, sizeof m);
    if (!cfg->auto_trials) return (size_t)snprintf(buf, len, "%s", m);
    const char *params = strchr(m, ':');
    return (size_t)snprintf(buf, len, "auto:with=%s,trials=%d%s%s", cfg->compressor.def->name, cfg->auto_trials,
                            params ? "," : "", params ? params + 1 : "");
}

size_t config_format(const terse_config_t *cfg, char *buf, size_t len)
{
    char c[320], f[256], a[256];
    config_format_compressor(cfg, c, sizeof c);
    config_format_method(&cfg->feedback, f, sizeof f);
    config_format_method(&cfg->adapt, a, sizeof a);
    return (size_t)snprintf(buf, len,
                            "compressor=%s; feedback=%s; adapt=%s; min_size=%zu; reduce=%s; "
                            "threads=%d; hier=%s; bind=%s; nonfinite=%s; fuse=%zu; device=%s",
                            c, f, a, cfg->min_size, reduce_words[cfg->reduce], cfg->threads,
                            hier_words[cfg->hier], bind_words[cfg->bind],
                            nonfinite_words[cfg->nonfinite], cfg->fuse, device_words[cfg->device]);
}
