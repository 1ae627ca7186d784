/* sampler.h: the controller's samplers, built in and from plugins, found by name. */
#ifndef TQ_CONTROLLER_SAMPLER_H
#define TQ_CONTROLLER_SAMPLER_H

#include <stddef.h>

#include "tq/sampler.h"

/* NULL or "" is "sequential". NULL when no sampler has that name. */
const tq_sampler_t *tq__sampler_find(const char *name);

/* Load a plugin (tq/sampler.h) and add its samplers; a name already taken is
 * an error. -1 with a message in err (cap bytes). The process keeps it loaded. */
int tq__sampler_load_plugin(const char *path, char *err, size_t cap);

/* Read an integer member of a JSON object text: 0 and *v_p; 1 when absent
 * (*v_p untouched); -1 when it is there but not an integer, or the text is not
 * an object. */
int tq__sampler_arg(const char *args_json, const char *name, long long *v_p);

/* Whole groups [g*n, g*n+n) of ready rows, lowest first, at most max_groups:
 * their rows go to out (room for max_groups*n); returns the number of groups. */
size_t tq__sampler_groups(const int64_t *ready, size_t num_ready, long long n, size_t max_groups,
                          int64_t *out);

#endif
