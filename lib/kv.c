/* kv.c: the Redis-style key-value interface, over keyed puts and KV_GET. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "kv.h"
#include "util/common.h"
#include "util/hashmap.h"

struct tq_kv_entries {
    size_t n, cap;
    char **partition, **key, **tag;
    char  *cursor; /* of the page after these, or NULL: the listing is complete */
};

static int check_partition(tq_client *c, const char *partition)
{
    return tq__check_name(c, partition, "partition");
}

/* 1..TQ_WIRE_MAX_ROWS valid keys, none repeated unless allowed. */
static int check_keys(tq_client *c, size_t n, const char *const *keys, bool repeats_ok)
{
    if (keys == NULL || n == 0 || n > TQ_WIRE_MAX_ROWS)
        return tq__set_error(c, TQ_ERR_INVALID, "keys: 1 to %u are required", TQ_WIRE_MAX_ROWS);
    for (size_t i = 0; i < n; i++)
        if ((n == 1 ? tq__check_name(c, keys[i], "key")
                    : tq__check_name(c, keys[i], "key %zu", i)) != TQ_OK)
            return TQ_ERR_INVALID;
    if (repeats_ok || n == 1)
        return TQ_OK;
    tq_hashmap *seen = tq_hashmap_create();
    int rc = seen ? TQ_OK : tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == TQ_OK && i < n; i++) {
        if (tq_hashmap_get(seen, keys[i]) != NULL)
            rc = tq__set_error(c, TQ_ERR_INVALID, "key %s is given twice", keys[i]);
        else if (tq_hashmap_put(seen, keys[i], (void *)keys[i]) != 0)
            rc = tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    }
    tq_hashmap_destroy(seen);
    return rc;
}

/* The partition and the keys every KV call names. */
static int check_target(tq_client *c, const char *partition, size_t n, const char *const *keys,
                        bool repeats_ok)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = check_partition(c, partition);
    return rc == TQ_OK ? check_keys(c, n, keys, repeats_ok) : rc;
}

int tq__kv_check_put(tq_client *c, const char *partition, size_t n, const char *const *keys,
                     const tq_batch *fields, const char *const *tags_json)
{
    int rc = check_target(c, partition, n, keys, false);
    if (rc != TQ_OK)
        return rc;
    if (fields == NULL && tags_json == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "fields and tags are both NULL: nothing to put");
    if (fields != NULL && (fields->rows != n || fields->num_fields == 0))
        return tq__set_error(c, TQ_ERR_INVALID, "the batch has %u rows and %u fields for %zu keys",
                             fields->rows, fields->num_fields, n);
    for (size_t i = 0; tags_json != NULL && i < n; i++) {
        if (tags_json[i] == NULL)
            continue;
        if (strlen(tags_json[i]) > TQ_MAX_CUSTOM_META)
            return tq__set_error(c, TQ_ERR_INVALID, "the tag of key %s is %zu bytes: at most %d "
                                 "(TQ_MAX_CUSTOM_META)", keys[i], strlen(tags_json[i]),
                                 TQ_MAX_CUSTOM_META);
        cJSON *tag = cJSON_ParseWithOpts(tags_json[i], NULL, 1); /* nothing may follow */
        bool object = cJSON_IsObject(tag);
        cJSON_Delete(tag);
        if (!object)
            return tq__set_error(c, TQ_ERR_INVALID, "the tag of key %s is not a JSON object",
                                 keys[i]);
    }
    return TQ_OK;
}

int tq__kv_run_put(tq_client *c, const char *partition, size_t n, const char *const *keys,
                   const tq_batch *fields, const char *const *tags_json, tq_meta **meta_p)
{
    tq__rows_t spec = {TQ_ROWS_KEYS, NULL, keys, tags_json};
    return tq__put(c, partition, (uint32_t)n, fields, &spec, NULL, meta_p);
}

TQ_EXPORT int tq_kv_batch_put(tq_client *c, const char *partition, size_t n,
                              const char *const *keys, const tq_batch *fields,
                              const char *const *tags_json)
{
    int rc = tq__kv_check_put(c, partition, n, keys, fields, tags_json);
    return rc != TQ_OK ? rc : tq__kv_run_put(c, partition, n, keys, fields, tags_json, NULL);
}

TQ_EXPORT int tq_kv_batch_put_meta(tq_client *c, const char *partition, size_t n,
                                   const char *const *keys, const tq_batch *fields,
                                   const char *const *tags_json, tq_meta **meta_p)
{
    int rc = tq__kv_check_put(c, partition, n, keys, fields, tags_json);
    if (rc == TQ_OK && meta_p == NULL)
        rc = tq__set_error(c, TQ_ERR_INVALID, "meta_p is NULL");
    return rc != TQ_OK ? rc : tq__kv_run_put(c, partition, n, keys, fields, tags_json, meta_p);
}

TQ_EXPORT int tq_kv_put(tq_client *c, const char *partition, const char *key,
                        const tq_batch *fields, const char *tag_json)
{
    return tq_kv_batch_put(c, partition, 1, &key, fields, tag_json ? &tag_json : NULL);
}

int tq__kv_check_get(tq_client *c, const char *partition, size_t n, const char *const *keys,
                     size_t num_fields, const char *const *fields)
{
    int rc = check_target(c, partition, n, keys, true);
    if (rc != TQ_OK)
        return rc;
    if (num_fields > TQ_WIRE_MAX_FIELDS || (num_fields > 0 && fields == NULL))
        return tq__set_error(c, TQ_ERR_INVALID, "fields: NULL, or 1 to %d names",
                             TQ_WIRE_MAX_FIELDS);
    for (size_t i = 0; fields != NULL && i < num_fields; i++)
        if (tq__check_name(c, fields[i], "field %zu", i) != TQ_OK)
            return TQ_ERR_INVALID;
    return TQ_OK;
}

int tq__kv_run_get_meta(tq_client *c, const char *partition, size_t n, const char *const *keys,
                        size_t num_fields, const char *const *fields, tq_meta **meta_p)
{
    if (fields == NULL)
        num_fields = 0;
    tq_msg_kv_get_t m = {.partition = {partition, (uint16_t)strlen(partition)},
                         .count = (uint32_t)n, .num_fields = (uint16_t)num_fields};
    for (size_t i = 0; i < num_fields; i++)
        m.fields[i] = (tq_str_t){fields[i], (uint16_t)strlen(fields[i])};
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_KV_GET);
    tq_wire_encode_kv_get(&cc->out, &m);
    for (size_t i = 0; i < n; i++)
        tq_wire_encode_name(&cc->out, keys[i]);
    tq_rbuf r;
    rc = tq__call(c, cc, off, c->timeout_ms, &r);
    if (rc == TQ_OK)
        rc = tq__meta_parse(c, cc, partition, &r, meta_p);
    tq__conn_release(c, cc);
    return rc;
}

/* The meta, then its data: no task consumed the rows, so the meta goes either way. */
int tq__kv_run_get(tq_client *c, const char *partition, size_t n, const char *const *keys,
                   size_t num_fields, const char *const *fields, tq_batch **batch_p)
{
    tq_meta *meta = NULL;
    int rc = tq__kv_run_get_meta(c, partition, n, keys, num_fields, fields, &meta);
    if (rc != TQ_OK)
        return rc;
    rc = tq__meta_read(c, meta, batch_p);
    tq__meta_release(meta, false);
    return rc;
}

TQ_EXPORT int tq_kv_batch_get(tq_client *c, const char *partition, size_t n,
                              const char *const *keys, size_t num_fields,
                              const char *const *fields, tq_batch **batch_p)
{
    int rc = tq__kv_check_get(c, partition, n, keys, num_fields, fields);
    if (rc == TQ_OK && batch_p == NULL)
        rc = tq__set_error(c, TQ_ERR_INVALID, "batch_p is NULL");
    return rc != TQ_OK ? rc : tq__kv_run_get(c, partition, n, keys, num_fields, fields, batch_p);
}

TQ_EXPORT int tq_kv_get_meta(tq_client *c, const char *partition, size_t n,
                             const char *const *keys, size_t num_fields,
                             const char *const *fields, tq_meta **meta_p)
{
    int rc = tq__kv_check_get(c, partition, n, keys, num_fields, fields);
    if (rc == TQ_OK && meta_p == NULL)
        rc = tq__set_error(c, TQ_ERR_INVALID, "meta_p is NULL");
    return rc != TQ_OK ? rc
                       : tq__kv_run_get_meta(c, partition, n, keys, num_fields, fields, meta_p);
}

/* ---- listing and clearing ---- */

TQ_EXPORT void tq_kv_entries_free(tq_kv_entries *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n; i++) {
        free(e->partition[i]);
        free(e->key[i]);
        free(e->tag[i]);
    }
    free(e->partition);
    free(e->key);
    free(e->tag);
    free(e->cursor);
    free(e);
}

TQ_EXPORT size_t tq_kv_entries_size(const tq_kv_entries *e) { return e ? e->n : 0; }

TQ_EXPORT const char *tq_kv_entries_partition(const tq_kv_entries *e, size_t i)
{
    return e != NULL && i < e->n ? e->partition[i] : NULL;
}

TQ_EXPORT const char *tq_kv_entries_key(const tq_kv_entries *e, size_t i)
{
    return e != NULL && i < e->n ? e->key[i] : NULL;
}

TQ_EXPORT const char *tq_kv_entries_tag(const tq_kv_entries *e, size_t i)
{
    return e != NULL && i < e->n ? e->tag[i] : NULL;
}

TQ_EXPORT const char *tq_kv_entries_cursor(const tq_kv_entries *e) { return e ? e->cursor : NULL; }

static char *blob_dup(tq_blob_t b)
{
    char *s = malloc((size_t)b.len + 1);
    if (s != NULL) {
        memcpy(s, b.ptr, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* Room in e for more entries (each array grown alone stays valid). */
static bool entries_reserve(tq_kv_entries *e, size_t more)
{
    if (e->n + more <= e->cap)
        return true;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < e->n + more)
        cap *= 2;
    char **p = realloc(e->partition, cap * sizeof(char *));
    if (p == NULL)
        return false;
    e->partition = p;
    if ((p = realloc(e->key, cap * sizeof(char *))) == NULL)
        return false;
    e->key = p;
    if ((p = realloc(e->tag, cap * sizeof(char *))) == NULL)
        return false;
    e->tag = p;
    e->cap = cap;
    return true;
}

/* One KV_LIST page appended to e, and e->cursor replaced by the page's. The
 * detail of a failure goes to tq_last_error. */
static int list_page(tq_client *c, const char *partition, const char *cursor, size_t limit,
                     tq_kv_entries *e)
{
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_KV_LIST);
    tq_msg_kv_list_t m = {
        {partition ? partition : "", (uint16_t)(partition ? strlen(partition) : 0)},
        {cursor ? cursor : "", (uint16_t)(cursor ? strlen(cursor) : 0)},
        (uint32_t)TQ_MIN(limit, (size_t)UINT32_MAX)};
    tq_wire_encode_kv_list(&cc->out, &m);
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) != TQ_OK)
        goto out;
    uint32_t n = tq_wire_get_u32(&r);
    rc = TQ_ERR_PROTOCOL;
    if (r.failed || n > (uint32_t)(r.end - r.p) / 8) /* an entry takes 8 bytes at least */
        goto out;
    rc = TQ_ERR_NOMEM;
    if (!entries_reserve(e, n))
        goto out;
    for (uint32_t i = 0; i < n; i++) {
        tq_wire_kv_entry_t w;
        if (tq_wire_decode_kv_entry(&r, &w) != TQ_OK) {
            rc = TQ_ERR_PROTOCOL;
            goto out;
        }
        char *p = tq_str_dup(w.partition), *k = tq_str_dup(w.key), *t = blob_dup(w.tag);
        if (p == NULL || k == NULL || t == NULL) {
            free(p), free(k), free(t);
            goto out;
        }
        e->partition[e->n] = p, e->key[e->n] = k, e->tag[e->n] = t;
        e->n++;
    }
    tq_str_t next;
    rc = TQ_ERR_PROTOCOL;
    /* a page that goes on has an entry: a listing always moves */
    if (tq_wire_decode_cursor(&r, &next) != TQ_OK || !tq_rbuf_done(&r) || (next.len && n == 0))
        goto out;
    free(e->cursor);
    e->cursor = NULL;
    rc = next.len && (e->cursor = tq_str_dup(next)) == NULL ? TQ_ERR_NOMEM : TQ_OK;
out:
    tq__conn_release(c, cc);
    if (rc == TQ_ERR_PROTOCOL)
        return tq__set_error(c, rc, "malformed kv_list reply");
    return rc == TQ_ERR_NOMEM ? tq__set_error(c, rc, "out of memory") : rc;
}

int tq__kv_check_list(tq_client *c, const char *partition, tq_kv_entries **entries_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (partition != NULL && check_partition(c, partition) != TQ_OK)
        return TQ_ERR_INVALID;
    if (entries_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "entries_p is NULL");
    return TQ_OK;
}

TQ_EXPORT int tq_kv_list_page(tq_client *c, const char *partition, const char *cursor,
                              size_t limit, tq_kv_entries **entries_p)
{
    int rc = tq__kv_check_list(c, partition, entries_p);
    if (rc != TQ_OK)
        return rc;
    if (cursor != NULL && strlen(cursor) > TQ_WIRE_CURSOR_MAX)
        return tq__set_error(c, TQ_ERR_INVALID, "cursor is %zu bytes: no page gives one over %d",
                             strlen(cursor), TQ_WIRE_CURSOR_MAX);
    tq_kv_entries *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    if ((rc = list_page(c, partition, cursor, limit, e)) != TQ_OK) {
        tq_kv_entries_free(e);
        return rc;
    }
    *entries_p = e;
    return TQ_OK;
}

TQ_EXPORT int tq_kv_list(tq_client *c, const char *partition, tq_kv_entries **entries_p)
{
    int rc = tq__kv_check_list(c, partition, entries_p);
    return rc != TQ_OK ? rc : tq__kv_run_list(c, partition, entries_p);
}

/* Every page, one after another: one answer is bounded, a listing is not. */
int tq__kv_run_list(tq_client *c, const char *partition, tq_kv_entries **entries_p)
{
    int rc;
    tq_kv_entries *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    do {
        char *cursor = e->cursor;
        e->cursor = NULL;
        rc = list_page(c, partition, cursor, 0, e);
        free(cursor);
    } while (rc == TQ_OK && e->cursor != NULL);
    if (rc != TQ_OK) {
        tq_kv_entries_free(e);
        return rc;
    }
    *entries_p = e;
    return TQ_OK;
}

int tq__kv_check_clear(tq_client *c, const char *partition, size_t n, const char *const *keys)
{
    return check_target(c, partition, n, keys, true);
}

TQ_EXPORT int tq_kv_clear(tq_client *c, const char *partition, size_t n, const char *const *keys)
{
    int rc = tq__kv_check_clear(c, partition, n, keys);
    return rc != TQ_OK ? rc : tq__kv_run_clear(c, partition, n, keys);
}

int tq__kv_run_clear(tq_client *c, const char *partition, size_t n, const char *const *keys)
{
    int rc;
    tq_wbuf body;
    tq_wbuf_init(&body);
    tq_wire_encode_kv_keys(&body, &(tq_msg_kv_keys_t){{partition, (uint16_t)strlen(partition)},
                                                      (uint32_t)n});
    for (size_t i = 0; i < n; i++)
        tq_wire_encode_name(&body, keys[i]);
    uint32_t removed = 0;
    rc = body.failed ? tq__set_error(c, TQ_ERR_NOMEM, "out of memory")
                     : tq__simple_call(c, TQ_MSG_KV_CLEAR, &body, &removed);
    tq_wbuf_free(&body);
    return rc == TQ_OK ? (int)removed : rc;
}

/* ---- custom meta: one JSON object per row (a keyed row's is its tag) ---- */

TQ_EXPORT int tq_set_custom_meta(tq_client *c, const char *partition, size_t n,
                                 const int64_t *indexes, const char *const *json)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = check_partition(c, partition);
    if (rc != TQ_OK)
        return rc;
    if ((rc = tq__check_indexes(c, n, indexes)) != TQ_OK)
        return rc;
    if (json == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "json is NULL: one per index is required");
    for (size_t i = 0; i < n; i++) {
        size_t len = json[i] ? strlen(json[i]) : 0;
        if (len > TQ_MAX_CUSTOM_META)
            return tq__set_error(c, TQ_ERR_INVALID, "the custom meta of row %lld is %zu bytes: "
                                 "at most %d (TQ_MAX_CUSTOM_META)", (long long)indexes[i], len,
                                 TQ_MAX_CUSTOM_META);
        cJSON *obj = json[i] ? cJSON_ParseWithOpts(json[i], NULL, 1) : NULL;
        bool object = json[i] == NULL || cJSON_IsObject(obj);
        cJSON_Delete(obj);
        if (!object)
            return tq__set_error(c, TQ_ERR_INVALID, "the custom meta of row %lld is not one JSON "
                                 "object", (long long)indexes[i]);
    }
    tq_wbuf body;
    tq_wbuf_init(&body);
    tq_wire_encode_set_custom(&body, &(tq_msg_set_custom_t){
        {partition, (uint16_t)strlen(partition)}, (uint32_t)n, tq_array_of(indexes, (uint32_t)n)});
    for (size_t i = 0; i < n; i++)
        tq_wire_encode_custom(&body, json[i], json[i] ? (uint32_t)strlen(json[i]) : 0);
    rc = body.failed ? tq__set_error(c, TQ_ERR_NOMEM, "out of memory")
                     : tq__simple_call(c, TQ_MSG_SET_CUSTOM_META, &body, NULL);
    tq_wbuf_free(&body);
    return rc;
}

TQ_EXPORT const char *tq_meta_custom(const tq_meta *m, uint32_t row)
{
    if (m == NULL || row >= m->rows)
        return NULL;
    return m->custom != NULL && m->custom[row] != NULL ? m->custom[row] : "{}";
}

TQ_EXPORT const char *tq_meta_key(const tq_meta *m, uint32_t row)
{
    return m != NULL && row < m->rows && m->keys != NULL ? m->keys[row] : NULL;
}

/* ---- key <-> row index ---- */

TQ_EXPORT int tq_kv_indexes(tq_client *c, const char *partition, size_t n,
                            const char *const *keys, int create, int64_t *indexes_out)
{
    int rc = check_target(c, partition, n, keys, true);
    if (rc != TQ_OK)
        return rc;
    if (indexes_out == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "indexes_out is NULL");
    tq_ctrl_conn *cc;
    if ((rc = tq__conn_acquire(c, &cc)) != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_KV_INDEXES);
    tq_wire_encode_kv_indexes(&cc->out, &(tq_msg_kv_indexes_t){
        {partition, (uint16_t)strlen(partition)}, create != 0, (uint32_t)n});
    for (size_t i = 0; i < n; i++)
        tq_wire_encode_name(&cc->out, keys[i]);
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) == TQ_OK) {
        tq_array_t a = tq_wire_get_array(&r, n);
        bool ok = tq_rbuf_done(&r);
        for (uint32_t i = 0; ok && i < n; i++)
            ok = tq_array_i64(a, i) >= (create ? 0 : -1);
        if (!ok)
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed kv_indexes reply");
        for (uint32_t i = 0; ok && i < n; i++)
            indexes_out[i] = tq_array_i64(a, i);
    }
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT int tq_kv_keys(tq_client *c, const char *partition, size_t n, const int64_t *indexes,
                         char ***keys_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = check_partition(c, partition);
    if (rc != TQ_OK)
        return rc;
    if ((rc = tq__check_indexes(c, n, indexes)) != TQ_OK)
        return rc;
    if (keys_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "keys_p is NULL");
    tq_ctrl_conn *cc;
    if ((rc = tq__conn_acquire(c, &cc)) != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_KV_KEYS);
    tq_wire_encode_clear(&cc->out, &(tq_msg_clear_t){{partition, (uint16_t)strlen(partition)},
                                                     (uint32_t)n, tq_array_of(indexes, (uint32_t)n)});
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) == TQ_OK) {
        /* one block: the n pointers, then the keys they point to */
        tq_rbuf scan = r;
        size_t bytes = n * sizeof(char *);
        for (size_t i = 0; i < n; i++) {
            tq_str_t k;
            if (tq_wire_decode_row_key(&scan, &k) != TQ_OK)
                break;
            bytes += k.len + 1u;
        }
        char **keys = tq_rbuf_done(&scan) ? malloc(bytes) : NULL;
        if (!tq_rbuf_done(&scan))
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed kv_keys reply");
        else if (keys == NULL)
            rc = tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
        char *at = keys ? (char *)(keys + n) : NULL;
        for (size_t i = 0; keys != NULL && i < n; i++) {
            tq_str_t k;
            tq_wire_decode_row_key(&r, &k);
            keys[i] = k.len ? at : NULL;
            memcpy(at, k.ptr, k.len);
            at[k.len] = '\0';
            at += k.len + 1u;
        }
        if (keys != NULL)
            *keys_p = keys;
    }
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT void tq_kv_keys_free(char **keys) { free(keys); }
