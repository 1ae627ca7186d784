/* kv.h: the key-value calls split into argument checks and runs, so that a
 * non-blocking twin checks at once and runs later (request.c). */
#ifndef TQ_KV_H
#define TQ_KV_H

#include "tq/tq.h"

int tq__kv_check_put(tq_client *c, const char *partition, size_t n, const char *const *keys,
                     const tq_batch *fields, const char *const *tags_json);
/* meta_p NULL, or where the meta of the keys after the put goes (tq_kv_batch_put_meta). */
int tq__kv_run_put(tq_client *c, const char *partition, size_t n, const char *const *keys,
                   const tq_batch *fields, const char *const *tags_json, tq_meta **meta_p);
/* The checks of a KV_GET (tq_kv_batch_get, tq_kv_get_meta), but of the out-pointer. */
int tq__kv_check_get(tq_client *c, const char *partition, size_t n, const char *const *keys,
                     size_t num_fields, const char *const *fields);
int tq__kv_run_get(tq_client *c, const char *partition, size_t n, const char *const *keys,
                   size_t num_fields, const char *const *fields, tq_batch **batch_p);
int tq__kv_run_get_meta(tq_client *c, const char *partition, size_t n, const char *const *keys,
                        size_t num_fields, const char *const *fields, tq_meta **meta_p);
int tq__kv_check_list(tq_client *c, const char *partition, tq_kv_entries **entries_p);
int tq__kv_run_list(tq_client *c, const char *partition, tq_kv_entries **entries_p);
int tq__kv_check_clear(tq_client *c, const char *partition, size_t n, const char *const *keys);
/* @return how many keys were removed, or an error. */
int tq__kv_run_clear(tq_client *c, const char *partition, size_t n, const char *const *keys);

#endif
