/* libFuzzer target: the configuration parser (src/config.c, config_parse) on arbitrary text.
 *
 * Input: byte 0 is a flag byte (bit 0: parse per layer, as terse_layer_add does; bit 1: start
 * from a non-default configuration instead of the defaults), the rest is the text, parsed up
 * to its first NUL. Checks, beyond "no memory error, no undefined behaviour":
 *   - on success, config_format of the result re-parses (whole-communicator keys, on fresh
 *     defaults) without error, to a configuration that is the same value for value (same
 *     methods, parameters bit for bit, keys) and formats to the same string: the round trip
 *     the engine relies on when it prints a configuration a user may paste back;
 *   - per layer, a success leaves the whole-communicator keys (threads, hier, bind) alone;
 *   - config_check_supported answers TERSE_OK, or TERSE_ERR_UNSUPPORTED / TERSE_ERR_ARG with
 *     a message;
 *   - config_format_method writes, for every buffer length, the prefix of its full text and
 *     returns the full length (snprintf's contract);
 *   - on failure, *cfg is unchanged (bytewise) and terse_last_error() says why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"

#define FAIL(...)                                                                           \
    do {                                                                                    \
        fprintf(stderr, "fuzz_config: " __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                                \
        abort();                                                                            \
    } while (0)

static const char base_text[] =
    "compressor=qsgd:bits=3,bucket=64; feedback=ef21sgdm:eta=0.5; adapt=lgreco:period=7; "
    "min_size=7; reduce=sum; threads=3; hier=off; bind=none; nonfinite=skip";

static int same_method(const method_spec_t *a, const method_spec_t *b)
{
    return a->def == b->def && memcmp(a->p, b->p, sizeof a->p) == 0;
}

static int same_config(const terse_config_t *a, const terse_config_t *b)
{
    return same_method(&a->compressor, &b->compressor) && same_method(&a->feedback, &b->feedback) &&
           same_method(&a->adapt, &b->adapt) && a->min_size == b->min_size && a->reduce == b->reduce &&
           a->threads == b->threads && a->hier == b->hier && a->bind == b->bind &&
           a->nonfinite == b->nonfinite;
}

/* config_format_method into every buffer length up to the full one: the prefix, NUL-ended. */
static void check_truncation(const method_spec_t *m)
{
    char full[512], part[520];
    size_t n = config_format_method(m, full, sizeof full);
    if (n >= sizeof full) FAIL("a method formats to %zu characters", n);
    for (size_t len = 0; len <= n + 1; len++) {
        memset(part, 'X', sizeof part);
        size_t got = config_format_method(m, part, len);
        if (got != n) FAIL("config_format_method(len %zu) returned %zu, the full length is %zu", len, got, n);
        if (len == 0) {
            if (part[0] != 'X') FAIL("config_format_method wrote into a buffer of length 0");
            continue;
        }
        size_t keep = len - 1 < n ? len - 1 : n;
        if (memcmp(part, full, keep) != 0 || part[keep] != '\0' || part[len] != 'X')
            FAIL("config_format_method(len %zu) is not the prefix of '%s': '%.*s'", len, full, (int)len, part);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int per_layer = data[0] & 1;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';

    terse_config_t cfg, before;
    config_defaults(&cfg);
    if ((data[0] & 2) && config_parse(&cfg, base_text, 0) != TERSE_OK)
        FAIL("the base configuration does not parse: %s", terse_last_error());
    memcpy(&before, &cfg, sizeof cfg);

    terse_error_clear();
    terse_status_t s = config_parse(&cfg, text, per_layer);
    if (s != TERSE_OK) {
        if (s != TERSE_ERR_ARG) FAIL("config_parse returned %d, not TERSE_ERR_ARG", (int)s);
        if (memcmp(&before, &cfg, sizeof cfg) != 0) FAIL("a failed config_parse changed the configuration");
        if (!terse_last_error()[0]) FAIL("config_parse failed with no message");
        free(text);
        return 0;
    }
    if (per_layer && (cfg.threads != before.threads || cfg.hier != before.hier || cfg.bind != before.bind))
        FAIL("a per-layer configuration changed a whole-communicator key");
    terse_config_t checked;
    memcpy(&checked, &cfg, sizeof cfg);
    terse_error_clear();
    s = config_check_supported(&cfg);
    if (s != TERSE_OK && s != TERSE_ERR_UNSUPPORTED && s != TERSE_ERR_ARG)
        FAIL("config_check_supported returned %d", (int)s);
    if (s != TERSE_OK && !terse_last_error()[0]) FAIL("config_check_supported failed with no message");
    if (memcmp(&checked, &cfg, sizeof cfg) != 0) FAIL("config_check_supported changed the configuration");

    char out[4096], again_out[4096];
    size_t n = config_format(&cfg, out, sizeof out);
    if (n >= sizeof out) FAIL("the configuration formats to %zu characters", n);
    terse_config_t again;
    config_defaults(&again);
    if (config_parse(&again, out, 0) != TERSE_OK)
        FAIL("the formatted configuration '%s' does not parse: %s", out, terse_last_error());
    size_t m = config_format(&again, again_out, sizeof again_out);
    if (m != n || strcmp(out, again_out) != 0)
        FAIL("round trip: '%s' parses to '%s'", out, again_out);
    if (!same_config(&cfg, &again)) FAIL("round trip: '%s' parses to another configuration", out);

    check_truncation(&cfg.compressor);
    check_truncation(&cfg.feedback);
    check_truncation(&cfg.adapt);
    free(text);
    return 0;
}
