/* Parameter tables of codecs and methods: each method declares the parameters it accepts,
 * their defaults and ranges, and the configuration parser validates against the table.
 * Parameter values live in a fixed array of doubles indexed like the table; NAN is
 * "not given, no default". */
#ifndef TERSE_PARAMS_H
#define TERSE_PARAMS_H

#include <stddef.h>

#define TERSE_MAX_PARAMS 8

typedef struct {
    const char *name;  /* as written in a configuration: "density"                        */
    double def;        /* default value, or NAN for "unset unless given"                   */
    double min, max;   /* accepted range                                                   */
    int min_open;      /* 1: min itself is excluded (density in (0, 1])                     */
    int integer;       /* 1: the value must be an integer                                   */
    /* For a word-valued parameter (onebit's scale=l1|l2): the accepted words, NULL-ended;
     * the stored value is the word's index. NULL for a number. */
    const char *const *choices;
} param_def_t;

/* A method as the configuration names it: its parameters and, when this build has it, its
 * implementation (ops is NULL for a method that parses but is not built). */
typedef struct {
    const char *name;
    const param_def_t *params;
    size_t n_params;
    const void *ops;
} method_def_t;

#endif
