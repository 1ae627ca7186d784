/* sampler.h: the C ABI of tq-controller sampler plugins. */
#ifndef TQ_SAMPLER_H
#define TQ_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A sampler picks the rows one GET_META returns out of the rows that are ready
 * for its task (live, every requested field produced, not consumed by the
 * task). It says separately which rows to mark consumed, so a sampler may
 * sample with replacement (consume nothing) or skip rows (consume more).
 *
 * A plugin is a shared object loaded by `tq-controller --sampler-plugin PATH`.
 * It exports
 *     const tq_sampler_t *tq_sampler_plugin(unsigned abi_version, size_t *count_p);
 * returning an array of *count_p samplers (NULL when it cannot serve that ABI
 * version). Samplers are called on the controller's event loop: they must not
 * block, and should take time in proportion to num_ready at most.
 */
#define TQ_SAMPLER_ABI_VERSION 1

typedef struct {
    const char    *partition;
    const char    *task;
    const int64_t *ready;      /**< ready rows, ascending */
    size_t         num_ready;
    uint32_t       batch_size;
    const char    *args_json;  /**< the call's sampler_args, "{}" when none */
    int            final;      /**< nonzero: the partition is sealed and no more row
                                    will become ready, so a smaller batch is allowed */
} tq_sampler_input_t;

typedef struct {
    int64_t *sampled;      /**< room for batch_size rows, each from ready */
    size_t   num_sampled;
    int64_t *consumed;     /**< room for num_ready rows, each from ready */
    size_t   num_consumed;
} tq_sampler_output_t;

typedef struct {
    const char *name;
    /**
     * @return 0 with out filled; -4 (TQ_ERR_TIMEOUT) when too few rows are
     *         ready yet (the request waits, nothing is consumed); -1
     *         (TQ_ERR_INVALID) for bad arguments; with final set, 0 rows
     *         sampled means the task has seen everything (TQ_ERR_END).
     */
    int (*sample)(const tq_sampler_input_t *in, tq_sampler_output_t *out);
} tq_sampler_t;

typedef const tq_sampler_t *(*tq_sampler_plugin_fn)(unsigned abi_version, size_t *count_p);

#ifdef __cplusplus
}
#endif
#endif /* TQ_SAMPLER_H */
