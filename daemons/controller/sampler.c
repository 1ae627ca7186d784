/* sampler.c: the built-in samplers, plugin loading, and the registry by name. */
#include "controller/sampler.h"

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tq/tq.h"
#include "util/common.h"

#define MAX_SAMPLERS 64

int tq__sampler_arg(const char *args_json, const char *name, long long *v_p)
{
    cJSON *root = cJSON_ParseWithOpts(args_json, NULL, 1);
    int rc = -1;
    if (cJSON_IsObject(root)) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
        if (v == NULL) {
            rc = 1;
        } else if (cJSON_IsNumber(v) && v->valuedouble > -9e15 && v->valuedouble < 9e15 &&
                   v->valuedouble == (double)(long long)v->valuedouble) {
            *v_p = (long long)v->valuedouble;
            rc = 0;
        }
    }
    cJSON_Delete(root);
    return rc;
}

size_t tq__sampler_groups(const int64_t *ready, size_t num_ready, long long n, size_t max_groups,
                          int64_t *out)
{
    size_t groups = 0;
    for (size_t i = 0; i + (size_t)n <= num_ready && groups < max_groups;) {
        /* a group starts at a multiple of n and has n consecutive ready rows */
        if (ready[i] % n != 0 || ready[i + (size_t)n - 1] != ready[i] + n - 1) {
            i++;
            continue;
        }
        memcpy(&out[groups * (size_t)n], &ready[i], (size_t)n * sizeof(int64_t));
        groups++;
        i += (size_t)n;
    }
    return groups;
}

/* The lowest ready rows. */
static int sample_sequential(const tq_sampler_input_t *in, tq_sampler_output_t *out)
{
    if (in->num_ready < in->batch_size && !in->final)
        return TQ_ERR_TIMEOUT;
    size_t n = TQ_MIN(in->num_ready, (size_t)in->batch_size);
    memcpy(out->sampled, in->ready, n * sizeof(int64_t));
    memcpy(out->consumed, in->ready, n * sizeof(int64_t));
    out->num_sampled = out->num_consumed = n;
    return TQ_OK;
}

/* Whole groups of n_samples_per_prompt rows, so a prompt's samples stay together. */
static int sample_grpo(const tq_sampler_input_t *in, tq_sampler_output_t *out)
{
    long long n;
    if (tq__sampler_arg(in->args_json, "n_samples_per_prompt", &n) != 0 || n < 1 ||
        in->batch_size % n != 0)
        return TQ_ERR_INVALID;
    size_t want = in->batch_size / (size_t)n;
    size_t got = tq__sampler_groups(in->ready, in->num_ready, n, want, out->sampled);
    if (got < want && !in->final)
        return TQ_ERR_TIMEOUT;
    out->num_sampled = out->num_consumed = got * (size_t)n;
    memcpy(out->consumed, out->sampled, out->num_sampled * sizeof(int64_t));
    return TQ_OK;
}

static const tq_sampler_t *samplers[MAX_SAMPLERS] = {
    &(const tq_sampler_t){"sequential", sample_sequential},
    &(const tq_sampler_t){"grpo", sample_grpo},
};
static size_t num_samplers = 2;

/* Served by the controller itself: they keep results across calls. */
static const char *const stateful[] = {"rank_aware", "seqlen_balanced"};

const tq_sampler_t *tq__sampler_find(const char *name)
{
    if (name == NULL || name[0] == '\0')
        name = "sequential";
    for (size_t i = 0; i < num_samplers; i++)
        if (strcmp(samplers[i]->name, name) == 0)
            return samplers[i];
    return NULL;
}

static pthread_mutex_t plugins_lock = PTHREAD_MUTEX_INITIALIZER;
static void *plugins[MAX_SAMPLERS];
static size_t num_plugins;

static int load_plugin(const char *path, char *err, size_t cap);

int tq__sampler_load_plugin(const char *path, char *err, size_t cap)
{
    /* embedded controllers of one process share the registry: load once */
    pthread_mutex_lock(&plugins_lock);
    int rc = load_plugin(path, err, cap);
    pthread_mutex_unlock(&plugins_lock);
    return rc;
}

static int load_plugin(const char *path, char *err, size_t cap)
{
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL) {
        snprintf(err, cap, "cannot load sampler plugin %s: %s", path, dlerror());
        return -1;
    }
    for (size_t i = 0; i < num_plugins; i++)
        if (plugins[i] == so) {
            dlclose(so); /* drop the reference this call took */
            return 0;
        }
    if (num_plugins == MAX_SAMPLERS) {
        snprintf(err, cap, "%s: too many plugins", path);
        goto err;
    }
    tq_sampler_plugin_fn entry;
    *(void **)&entry = dlsym(so, "tq_sampler_plugin");
    size_t count = 0;
    const tq_sampler_t *list = entry ? entry(TQ_SAMPLER_ABI_VERSION, &count) : NULL;
    if (list == NULL) {
        snprintf(err, cap, "%s: no tq_sampler_plugin, or not for ABI version %d", path,
                 TQ_SAMPLER_ABI_VERSION);
        goto err;
    }
    for (size_t i = 0; i < count; i++) {
        const char *name = list[i].name;
        bool taken = tq__sampler_find(name) != NULL;
        for (size_t k = 0; k < ARRAY_SIZE(stateful); k++)
            taken |= name != NULL && strcmp(name, stateful[k]) == 0;
        for (size_t k = 0; k < i; k++)
            taken |= name != NULL && list[k].name != NULL && strcmp(name, list[k].name) == 0;
        if (name == NULL || name[0] == '\0' || strlen(name) > 255 || list[i].sample == NULL ||
            taken || num_samplers == MAX_SAMPLERS) {
            snprintf(err, cap, "%s: sampler %zu (%s) has no name or function, a name already "
                     "taken, or is one too many", path, i, name ? name : "?");
            goto err;
        }
    }
    for (size_t i = 0; i < count; i++)
        samplers[num_samplers++] = &list[i];
    plugins[num_plugins++] = so;
    return 0;
err:
    dlclose(so);
    return -1;
}
