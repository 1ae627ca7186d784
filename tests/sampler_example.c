/* sampler_example.c: an example tq-controller sampler plugin (tq/sampler.h). */
#include <string.h>

#include "tq/sampler.h"

/* The newest ready rows first. */
static int sample_reverse(const tq_sampler_input_t *in, tq_sampler_output_t *out)
{
    if (in->num_ready < in->batch_size && !in->final)
        return -4; /* TQ_ERR_TIMEOUT: wait for more */
    size_t n = in->num_ready < in->batch_size ? in->num_ready : in->batch_size;
    for (size_t i = 0; i < n; i++)
        out->sampled[i] = out->consumed[i] = in->ready[in->num_ready - 1 - i];
    out->num_sampled = out->num_consumed = n;
    return 0;
}

/* The oldest ready rows, consuming none: sampling with replacement. */
static int sample_peek(const tq_sampler_input_t *in, tq_sampler_output_t *out)
{
    if (in->num_ready < in->batch_size)
        return in->final && in->num_ready == 0 ? 0 : -4;
    memcpy(out->sampled, in->ready, in->batch_size * sizeof(int64_t));
    out->num_sampled = in->batch_size;
    out->num_consumed = 0;
    return 0;
}

static const tq_sampler_t samplers[] = {
    {"reverse", sample_reverse},
    {"peek", sample_peek},
};

__attribute__((visibility("default")))
const tq_sampler_t *tq_sampler_plugin(unsigned abi_version, size_t *count_p)
{
    if (abi_version != TQ_SAMPLER_ABI_VERSION)
        return NULL;
    *count_p = sizeof(samplers) / sizeof(samplers[0]);
    return samplers;
}
