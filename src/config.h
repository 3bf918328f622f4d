/* Configuration strings (DESIGN.md §6): parsing, environment overrides, formatting. */
#ifndef TERSE_CONFIG_H
#define TERSE_CONFIG_H

#include <stddef.h>

#include "params.h"
#include "terse.h"

/* A method as configured: its registry entry and its parameter values (NAN = unset). */
typedef struct {
    const method_def_t *def;
    double p[TERSE_MAX_PARAMS];
} method_spec_t;

typedef enum { CONFIG_REDUCE_MEAN, CONFIG_REDUCE_SUM } config_reduce_t;
typedef enum { CONFIG_HIER_AUTO, CONFIG_HIER_ON, CONFIG_HIER_OFF } config_hier_t;
typedef enum { CONFIG_BIND_AUTO, CONFIG_BIND_NONE } config_bind_t;
typedef enum { CONFIG_NONFINITE_ERROR, CONFIG_NONFINITE_SKIP, CONFIG_NONFINITE_PASS } config_nonfinite_t;
typedef enum { CONFIG_DEVICE_CPU, CONFIG_DEVICE_CUDA } config_device_t;

typedef struct {
    method_spec_t compressor, feedback, adapt;
    size_t min_size;
    config_reduce_t reduce;
    int threads;
    config_hier_t hier;
    config_bind_t bind;
    config_nonfinite_t nonfinite;
    /* compressor=auto[:with=CODEC,trials=T,...]: compressor holds CODEC and its parameters,
     * and each layer times T calls of the dense and of the compressed path before keeping
     * the faster (src/auto.c). 0: not auto. */
    int auto_trials;
    /* fuse=BYTES: terse_allreduce_many fuses runs of layers whose gradients total at most
     * this many bytes into one exchange (src/fuse.c); 0: every layer alone. */
    size_t fuse;
    /* device=cpu|cuda: where the buffers handed to the allreduce calls live. cuda: in GPU
     * memory (src/device.c stages them through pinned host memory for the engine). A
     * communicator over NCCL is always cuda. */
    config_device_t device;
} terse_config_t;

#define CONFIG_FUSE_DEFAULT ((size_t)16 << 20)
#define CONFIG_FUSE_MAX 1099511627776.0 /* 1 TiB */

/* The adaptation methods the grammar names (adapt=). */
extern const method_def_t adapt_registry[];
extern const size_t adapt_registry_len;

/* The defaults: compressor=none; feedback=none; adapt=none; min_size=1024; reduce=mean;
 * threads=1; hier=auto; bind=auto; nonfinite=error; fuse=16M; device=cpu. */
void config_defaults(terse_config_t *cfg);

/* Applies the items of `text` on top of *cfg. `per_layer` restricts the keys to those that
 * may differ between layers. On error *cfg is unchanged and the message quotes the
 * offending text and lists what is accepted. NULL or "" changes nothing. */
terse_status_t config_parse(terse_config_t *cfg, const char *text, int per_layer);

/* Applies TERSE_CONFIG, then TERSE_COMPRESSOR, TERSE_FEEDBACK, TERSE_ADAPT. */
terse_status_t config_apply_env(terse_config_t *cfg);

/* TERSE_ERR_UNSUPPORTED, naming it, for a method or setting this build does not have. */
terse_status_t config_check_supported(const terse_config_t *cfg);

/* Defaults, then text, then the environment, then the check that this build has it all. */
terse_status_t config_resolve(const char *text, terse_config_t *out);

/* Writes a method as a configuration value ("topk:density=0.01"). Returns the length it
 * needs, like snprintf. */
size_t config_format_method(const method_spec_t *m, char *buf, size_t len);

/* Writes the compressor as a configuration value: config_format_method's, or
 * "auto:with=topk,trials=2,density=0.01" under compressor=auto. Returns the length needed. */
size_t config_format_compressor(const terse_config_t *cfg, char *buf, size_t len);

/* Writes the whole configuration as a configuration string. Returns the length needed. */
size_t config_format(const terse_config_t *cfg, char *buf, size_t len);

#endif
