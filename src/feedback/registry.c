/* Every feedback method the configuration grammar names (DESIGN.md §6). NULL ops: parses,
 * not built yet (TERSE_ERR_UNSUPPORTED). */
#include <math.h>
#include <string.h>

#include "feedback.h"

extern const feedback_ops_t feedback_none_ops, feedback_ef_ops, feedback_ef21_ops,
    feedback_ef21sgdm_ops, feedback_econtrol_ops;

/* weight: this rank's EF21-W weight w_i (ranks pass different values; see ef21.c). */
static const param_def_t ef21_params[] = {{"weight", NAN, 0.0, INFINITY, 1, 0, NULL}};
static const param_def_t eta_params[] = {{"eta", 0.1, 0.0, 1.0, 0, 0, NULL}};
/* lr: the learning rate of ef's "learning rate inside" form (see ef.c); unset: outside. */
static const param_def_t ef_params[] = {{"lr", NAN, 0.0, 1e30, 1, 0, NULL}};

const method_def_t feedback_registry[] = {
    {"none", NULL, 0, &feedback_none_ops},
    {"ef", ef_params, 1, &feedback_ef_ops},
    {"ef21", ef21_params, 1, &feedback_ef21_ops},
    {"ef21sgdm", eta_params, 1, &feedback_ef21sgdm_ops},
    {"econtrol", eta_params, 1, &feedback_econtrol_ops},
};
const size_t feedback_registry_len = sizeof feedback_registry / sizeof feedback_registry[0];

const method_def_t *feedback_find(const char *name)
{
    for (size_t i = 0; i < feedback_registry_len; i++)
        if (strcmp(feedback_registry[i].name, name) == 0) return &feedback_registry[i];
    return NULL;
}
