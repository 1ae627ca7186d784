/* partition.c: rows, fields, production and consumption of one partition. */
#include "controller/partition.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void tq__extent_unref(tq_extent *ext)
{
    if (ext == NULL)
        return;
    tq_assert(ext->refs > 0);
    if (--ext->refs > 0)
        return;
    tq_pool_free(ext->pool, ext->block);
    free(ext);
}

_Static_assert(TQ_MAX_CUSTOM_META == 65536, "the message below says so");
#define CUSTOM_TOO_LONG "over 65536 bytes (TQ_MAX_CUSTOM_META) as JSON text"

/* What the per-row arrays take at cap slots, with fields fields and tasks tasks. */
static uint64_t meta_bytes(uint64_t cap, uint32_t fields, uint32_t tasks)
{
    return cap * (1 + sizeof(tq_kv_key_t *) + sizeof(tq_custom_t *) +
                  fields * sizeof(tq_cell_t) + tasks);
}

/* Charge the partition's arrays at that shape to its budget, if it fits. */
static bool budget_charge(tq_partition_t *p, uint64_t cap, uint32_t fields, uint32_t tasks)
{
    uint64_t want = meta_bytes(cap, fields, tasks);
    if (p->budget == NULL)
        return true;
    if (want > p->charged && p->budget->used + (want - p->charged) > p->budget->max)
        return false;
    p->budget->used = p->budget->used - p->charged + want;
    p->charged = want;
    return true;
}

tq_partition_t *tq__partition_create(const char *name, tq_meta_budget_t *budget)
{
    tq_partition_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->budget = budget;
    p->name = strdup(name);
    if (p->name == NULL) {
        free(p);
        return NULL;
    }
    tq_list_init(&p->link);
    tq_list_init(&p->tasks);
    tq_list_init(&p->allocs);
    tq_list_init(&p->key_order);
    tq_list_init(&p->kept_order);
    p->keys = tq_hashmap_create();
    p->kept = tq_hashmap_create();
    if (p->keys == NULL || p->kept == NULL) {
        tq_hashmap_destroy(p->keys);
        tq_hashmap_destroy(p->kept);
        free(p->name);
        free(p);
        return NULL;
    }
    return p;
}

static void key_destroy(tq_partition_t *p, tq_kv_key_t *k)
{
    tq_hashmap_remove(p->keys, k->key);
    tq_list_remove(&k->link);
    p->row_keys[k->row] = NULL;
    tq__kv_key_free(k);
}

static void task_destroy(tq_task_t *t)
{
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &t->claims) { /* their holders keep nothing */
        tq_claim_t *cl = tq_list_entry(pos, tq_claim_t, link);
        tq_list_remove(&cl->link);
        cl->part = NULL;
        cl->task = NULL;
    }
    tq_u64map_destroy(t->in_flight);
    tq_list_remove(&t->link);
    free(t->name);
    free(t->consumed);
    free(t);
}

void tq__partition_destroy(tq_partition_t *p)
{
    if (p == NULL)
        return;
    tq_assert(tq_list_empty(&p->allocs));
    for (uint32_t i = 0; i < p->num_fields; i++) {
        tq_field_t *f = &p->fields[i];
        for (uint64_t r = 0; r < p->num_slots; r++)
            tq__extent_unref(f->cells[r].ext);
        free(f->cells);
        free(f->name);
    }
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &p->tasks)
        task_destroy(tq_list_entry(pos, tq_task_t, link));
    tq_list_for_each_safe(pos, tmp, &p->key_order)
        key_destroy(p, tq_list_entry(pos, tq_kv_key_t, link));
    tq_list_for_each_safe(pos, tmp, &p->kept_order)
        tq__partition_unkeep(p, tq_list_entry(pos, tq_kept_t, link));
    tq_hashmap_destroy(p->keys);
    tq_hashmap_destroy(p->kept);
    for (uint64_t r = 0; r < p->num_slots; r++)
        tq__custom_free(p->custom[r]);
    if (p->budget != NULL)
        p->budget->used -= p->charged + (uint64_t)p->custom_charged;
    free(p->custom);
    free(p->row_keys);
    free(p->fields);
    free(p->state);
    free(p->name);
    free(p);
}

/* Grow every per-row array to hold at least `slots` rows. New slots are free,
 * unproduced and unconsumed (zero). */
static int grow_slots(tq_partition_t *p, uint64_t slots)
{
    if (slots <= p->cap_slots)
        return TQ_OK;
    if (slots > (uint64_t)TQ_MAX_ROWS_PER_PARTITION)
        return TQ_ERR_INVALID;
    uint64_t cap = p->cap_slots ? p->cap_slots : 64;
    while (cap < slots)
        cap *= 2;
    uint64_t old = p->cap_slots;
    if (!budget_charge(p, cap, p->num_fields, p->num_tasks))
        return TQ_ERR_NOSPACE;

#define GROW(ptr, elem)                                                        \
    do {                                                                       \
        void *np = realloc((ptr), cap * (elem));                               \
        if (np == NULL)                                                        \
            return TQ_ERR_NOMEM;                                               \
        memset((char *)np + old * (elem), 0, (cap - old) * (elem));            \
        (ptr) = np;                                                            \
    } while (0)

    GROW(p->state, 1);
    GROW(p->row_keys, sizeof(tq_kv_key_t *));
    GROW(p->custom, sizeof(tq_custom_t *));
    for (uint32_t i = 0; i < p->num_fields; i++)
        GROW(p->fields[i].cells, sizeof(tq_cell_t));
    tq_list *pos;
    for (pos = p->tasks.next; pos != &p->tasks; pos = pos->next)
        GROW(tq_list_entry(pos, tq_task_t, link)->consumed, 1);
#undef GROW
    p->cap_slots = cap; /* only now: a failure above leaves arrays at least `old` long */
    return TQ_OK;
}

tq_field_t *tq__partition_field(tq_partition_t *p, const char *name)
{
    for (uint32_t i = 0; i < p->num_fields; i++)
        if (strcmp(p->fields[i].name, name) == 0)
            return &p->fields[i];
    return NULL;
}

int tq__partition_add_fields(tq_partition_t *p, uint32_t n, const tq_field_t *specs)
{
    if (p->num_fields + n > p->cap_fields) { /* more room alone changes nothing seen */
        uint32_t cap = p->cap_fields ? p->cap_fields : 8;
        while (cap < p->num_fields + n)
            cap *= 2;
        tq_field_t *fields = realloc(p->fields, cap * sizeof(*fields));
        if (fields == NULL)
            return TQ_ERR_NOMEM;
        p->fields = fields;
        p->cap_fields = cap;
    }
    tq_field_t *fresh = &p->fields[p->num_fields];
    int rc = TQ_OK;
    uint32_t made = 0;
    for (; made < n; made++) {
        tq_field_t *f = &fresh[made];
        const tq_field_t *spec = &specs[made];
        memset(f, 0, sizeof(*f));
        f->name = strdup(spec->name);
        f->cells = calloc(p->cap_slots ? p->cap_slots : 1, sizeof(tq_cell_t));
        if (f->name == NULL || f->cells == NULL) {
            free(f->name);
            free(f->cells);
            rc = TQ_ERR_NOMEM;
            break;
        }
        f->kind = spec->kind;
        f->dtype = spec->dtype;
        f->ndim = spec->ndim;
        memcpy(f->format, spec->format, sizeof(f->format));
        if (spec->kind == TQ_FIELD_TENSOR)
            memcpy(f->row_shape, spec->row_shape, sizeof(f->row_shape));
    }
    if (rc == TQ_OK && !budget_charge(p, p->cap_slots, p->num_fields + n, p->num_tasks))
        rc = TQ_ERR_NOSPACE;
    if (rc != TQ_OK) {
        while (made-- > 0) {
            free(fresh[made].name);
            free(fresh[made].cells);
        }
        return rc;
    }
    p->num_fields += n;
    return TQ_OK;
}

tq_field_t *tq__partition_add_field(tq_partition_t *p, const char *name, tq_field_kind_t kind,
                                    tq_dtype_t dtype, uint32_t ndim, const int64_t *row_shape)
{
    tq_field_t spec = {.name = (char *)name, .kind = kind, .dtype = dtype, .ndim = ndim};
    if (kind == TQ_FIELD_TENSOR && ndim > 0)
        memcpy(spec.row_shape, row_shape, ndim * sizeof(int64_t));
    return tq__partition_add_fields(p, 1, &spec) == TQ_OK ? &p->fields[p->num_fields - 1] : NULL;
}

int tq__partition_reserve_new(tq_partition_t *p, uint32_t n, int64_t *out)
{
    /* Count what is free below the high-water mark, so the arrays can grow
     * once, before anything is reserved. */
    uint64_t free_below = 0;
    for (uint64_t r = p->free_hint; r < p->num_slots && free_below < n; r++)
        free_below += p->state[r] == TQ_ROW_FREE;
    uint64_t extra = n - free_below;
    int rc = grow_slots(p, p->num_slots + extra);
    if (rc != TQ_OK)
        return rc;
    uint32_t got = 0;
    uint64_t r = p->free_hint;
    for (; got < n && r < p->num_slots; r++)
        if (p->state[r] == TQ_ROW_FREE) {
            p->state[r] = TQ_ROW_RESERVED;
            out[got++] = (int64_t)r;
        }
    bool scanned_all = r >= p->num_slots;
    for (; got < n; got++) {
        p->state[p->num_slots] = TQ_ROW_RESERVED;
        out[got] = (int64_t)p->num_slots++;
    }
    p->free_hint = scanned_all ? p->num_slots : r; /* nothing free below it */
    return TQ_OK;
}

int tq__partition_reserve(tq_partition_t *p, uint32_t n, const int64_t *indexes)
{
    uint64_t top = p->num_slots;
    for (uint32_t i = 0; i < n; i++) {
        if (indexes[i] < 0 || indexes[i] >= TQ_MAX_ROWS_PER_PARTITION)
            return TQ_ERR_INVALID;
        if ((uint64_t)indexes[i] + 1 > top)
            top = (uint64_t)indexes[i] + 1;
    }
    int rc = grow_slots(p, top);
    if (rc != TQ_OK)
        return rc;
    /* A repeated index would be written twice by one put. Mark with a
     * temporary bit to find repeats in O(n), then undo the marks. */
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint8_t *s = &p->state[indexes[i]];
        if (*s & 0x80)
            break;
        *s |= 0x80;
    }
    bool repeated = i < n;
    for (uint32_t j = 0; j < i; j++)
        p->state[indexes[j]] &= 0x7f;
    if (repeated)
        return TQ_ERR_INVALID;
    p->num_slots = top;
    for (i = 0; i < n; i++)
        if (p->state[indexes[i]] == TQ_ROW_FREE)
            p->state[indexes[i]] = TQ_ROW_RESERVED;
    return TQ_OK;
}

static void mark_free(tq_partition_t *p, uint64_t r)
{
    p->state[r] = TQ_ROW_FREE;
    if (r < p->free_hint)
        p->free_hint = r;
}

void tq__partition_unreserve(tq_partition_t *p, uint32_t n, const int64_t *indexes)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t r = (uint64_t)indexes[i];
        if (r < p->num_slots && p->state[r] == TQ_ROW_RESERVED)
            mark_free(p, r);
    }
}

void tq__partition_set_cell(tq_partition_t *p, tq_field_t *f, int64_t row, const tq_cell_t *cell)
{
    tq_assert(row >= 0 && (uint64_t)row < p->num_slots);
    tq_cell_t *c = &f->cells[row];
    tq_extent *old = c->ext;
    *c = *cell;
    c->produced = true;
    tq__extent_unref(old);
    if (p->state[row] != TQ_ROW_LIVE) {
        p->state[row] = TQ_ROW_LIVE;
        p->live_rows++;
    }
}

void tq__partition_set_live(tq_partition_t *p, int64_t row)
{
    tq_assert(row >= 0 && (uint64_t)row < p->num_slots);
    if (p->state[row] != TQ_ROW_LIVE) {
        p->state[row] = TQ_ROW_LIVE;
        p->live_rows++;
    }
}

tq_kv_key_t *tq__partition_key(const tq_partition_t *p, const char *key)
{
    return tq_hashmap_get(p->keys, key);
}

tq_kv_key_t *tq__kv_key_create(const char *key, int64_t row)
{
    tq_kv_key_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->key = strdup(key);
    k->row = row;
    tq_list_init(&k->link);
    if (k->key == NULL) {
        tq__kv_key_free(k);
        return NULL;
    }
    return k;
}

void tq__kv_key_free(tq_kv_key_t *k)
{
    if (k == NULL)
        return;
    free(k->key);
    free(k);
}

int tq__partition_keys_reserve(tq_partition_t *p, size_t n)
{
    return tq_hashmap_reserve(p->keys, n) == 0 ? TQ_OK : TQ_ERR_NOMEM;
}

void tq__partition_bind_key(tq_partition_t *p, tq_kv_key_t *k)
{
    tq_assert(k->row >= 0 && (uint64_t)k->row < p->num_slots && p->row_keys[k->row] == NULL);
    int rc = tq_hashmap_put(p->keys, k->key, k);
    tq_assert(rc == 0); /* room was reserved */
    (void)rc;
    k->seq = ++p->last_key_seq;
    tq_list_insert_tail(&p->key_order, &k->link);
    p->row_keys[k->row] = k;
}

cJSON *tq__kv_tag_merged(const cJSON *tag, const cJSON *obj)
{
    cJSON *out = tag ? cJSON_Duplicate(tag, 1) : cJSON_CreateObject();
    const cJSON *item;
    cJSON_ArrayForEach(item, obj) {
        cJSON *copy = out ? cJSON_Duplicate(item, 1) : NULL;
        if (copy == NULL) {
            cJSON_Delete(out);
            return NULL;
        }
        if (cJSON_GetObjectItemCaseSensitive(out, item->string) != NULL)
            cJSON_ReplaceItemInObjectCaseSensitive(out, item->string, copy);
        else
            cJSON_AddItemToObject(out, item->string, copy);
    }
    return out;
}

cJSON *tq__custom_parse(const void *text, size_t len, const char **why)
{
    if (len > TQ_MAX_CUSTOM_META) {
        *why = CUSTOM_TOO_LONG;
        return NULL;
    }
    if (memchr(text, '\0', len) != NULL) {
        *why = "not a JSON object (a NUL inside)";
        return NULL;
    }
    /* cJSON refuses trailing bytes only in NUL-terminated text */
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        *why = "out of memory";
        return NULL;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    cJSON *obj = cJSON_ParseWithOpts(copy, NULL, 1);
    free(copy);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        *why = "not a JSON object";
        return NULL;
    }
    return obj;
}

int tq__custom_make(cJSON *obj, tq_custom_t **cm_p, const char **why)
{
    *cm_p = NULL;
    if (obj->child == NULL) { /* {}: nothing to keep */
        cJSON_Delete(obj);
        return TQ_OK;
    }
    tq_custom_t *cm = calloc(1, sizeof(*cm));
    char *text = cm ? cJSON_PrintUnformatted(obj) : NULL;
    if (text == NULL) {
        free(cm);
        cJSON_Delete(obj);
        *why = "out of memory";
        return TQ_ERR_NOMEM;
    }
    size_t len = strlen(text);
    if (len > TQ_MAX_CUSTOM_META) {
        free(text);
        free(cm);
        cJSON_Delete(obj);
        *why = CUSTOM_TOO_LONG;
        return TQ_ERR_INVALID;
    }
    cm->obj = obj;
    cm->text = text;
    cm->len = (uint32_t)len;
    *cm_p = cm;
    return TQ_OK;
}

void tq__custom_free(tq_custom_t *cm)
{
    if (cm == NULL)
        return;
    cJSON_Delete(cm->obj);
    free(cm->text);
    free(cm);
}

bool tq__partition_custom_charge(tq_partition_t *p, int64_t delta)
{
    if (p->budget != NULL && delta > 0 && p->budget->used + (uint64_t)delta > p->budget->max)
        return false;
    if (p->budget != NULL)
        p->budget->used += (uint64_t)delta; /* wraps back for delta < 0 */
    p->custom_charged += delta;
    return true;
}

void tq__partition_set_custom(tq_partition_t *p, int64_t row, tq_custom_t *cm)
{
    tq_assert(row >= 0 && (uint64_t)row < p->num_slots);
    tq__custom_free(p->custom[row]);
    p->custom[row] = cm;
}

uint32_t tq__partition_clear_rows(tq_partition_t *p, uint32_t n, const int64_t *indexes)
{
    uint32_t removed = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (indexes[i] < 0 || (uint64_t)indexes[i] >= p->num_slots)
            continue;
        uint64_t r = (uint64_t)indexes[i];
        if (p->state[r] != TQ_ROW_LIVE)
            continue;
        for (uint32_t k = 0; k < p->num_fields; k++) {
            tq_cell_t *c = &p->fields[k].cells[r];
            tq__extent_unref(c->ext);
            memset(c, 0, sizeof(*c));
        }
        tq_list *pos;
        for (pos = p->tasks.next; pos != &p->tasks; pos = pos->next) {
            tq_task_t *t = tq_list_entry(pos, tq_task_t, link);
            t->consumed[r] = 0;
            tq_u64map_remove(t->in_flight, r); /* its claim forgets it: the index is reused */
        }
        if (p->row_keys[r] != NULL)
            key_destroy(p, p->row_keys[r]);
        if (p->custom[r] != NULL) {
            tq__partition_custom_charge(p, -tq__custom_cost(p->custom[r]));
            tq__partition_set_custom(p, (int64_t)r, NULL);
        }
        mark_free(p, r);
        p->live_rows--;
        removed++;
    }
    return removed;
}

tq_task_t *tq__partition_task(tq_partition_t *p, const char *name, bool create)
{
    tq_list *pos;
    for (pos = p->tasks.next; pos != &p->tasks; pos = pos->next) {
        tq_task_t *t = tq_list_entry(pos, tq_task_t, link);
        if (strcmp(t->name, name) == 0)
            return t;
    }
    if (!create)
        return NULL;
    if (!budget_charge(p, p->cap_slots, p->num_fields, p->num_tasks + 1)) {
        errno = ENOSPC;
        return NULL;
    }
    tq_task_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->name = strdup(name);
    t->consumed = calloc(p->cap_slots ? p->cap_slots : 1, 1);
    t->in_flight = tq_u64map_create();
    tq_list_init(&t->claims);
    if (t->name == NULL || t->consumed == NULL || t->in_flight == NULL) {
        free(t->name);
        free(t->consumed);
        tq_u64map_destroy(t->in_flight);
        free(t);
        return NULL;
    }
    tq_list_insert_tail(&p->tasks, &t->link);
    p->num_tasks++;
    return t;
}

int tq__partition_reset(tq_partition_t *p, const char *task)
{
    tq_list *pos;
    bool found = false;
    for (pos = p->tasks.next; pos != &p->tasks; pos = pos->next) {
        tq_task_t *t = tq_list_entry(pos, tq_task_t, link);
        if (task == NULL || strcmp(t->name, task) == 0) {
            memset(t->consumed, 0, p->cap_slots);
            tq_u64map_clear(t->in_flight); /* claims settled later change nothing */
            found = true;
        }
    }
    return found || task == NULL ? TQ_OK : TQ_ERR_NOT_FOUND;
}

tq_kept_t *tq__partition_kept(const tq_partition_t *p, const char *key)
{
    return tq_hashmap_get(p->kept, key);
}

tq_kept_t *tq__partition_keep(tq_partition_t *p, const char *key, const int64_t *rows,
                              uint32_t n, uint32_t takers)
{
    tq_kept_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->key = strdup(key);
    k->rows = malloc((size_t)n * sizeof(int64_t) + 1);
    if (k->key == NULL || k->rows == NULL || tq_hashmap_put(p->kept, k->key, k) != 0) {
        free(k->key);
        free(k->rows);
        free(k);
        return NULL;
    }
    memcpy(k->rows, rows, (size_t)n * sizeof(int64_t));
    k->num_rows = n;
    k->takers_left = takers;
    tq_list_insert_tail(&p->kept_order, &k->link);
    return k;
}

void tq__partition_unkeep(tq_partition_t *p, tq_kept_t *k)
{
    tq_hashmap_remove(p->kept, k->key);
    tq_list_remove(&k->link);
    free(k->key);
    free(k->rows);
    free(k);
}

int tq__claim_take(tq_partition_t *p, tq_task_t *t, tq_claim_t *cl, const int64_t *rows,
                   uint32_t n)
{
    cl->rows = malloc((size_t)n * sizeof(int64_t) + 1);
    if (cl->rows == NULL)
        return TQ_ERR_NOMEM;
    bool failed = false;
    for (uint32_t i = 0; i < n && !failed; i++) {
        uint64_t r = (uint64_t)rows[i];
        tq_assert(r < p->num_slots);
        if (t->consumed[r]) /* named twice (a sampler's list): claimed once */
            continue;
        failed = tq_u64map_put(t->in_flight, r, cl) != 0;
        t->consumed[r] = !failed;
    }
    if (failed) { /* out of memory: undo, so nothing was consumed */
        for (uint32_t i = 0; i < n; i++)
            if (tq_u64map_get(t->in_flight, (uint64_t)rows[i]) == cl) {
                tq_u64map_remove(t->in_flight, (uint64_t)rows[i]);
                t->consumed[rows[i]] = 0;
            }
        free(cl->rows);
        cl->rows = NULL;
        return TQ_ERR_NOMEM;
    }
    memcpy(cl->rows, rows, (size_t)n * sizeof(int64_t));
    cl->num_rows = n;
    cl->part = p;
    cl->task = t;
    tq_list_insert_tail(&t->claims, &cl->link);
    return TQ_OK;
}

uint32_t tq__claim_settle(tq_claim_t *cl, bool delivered)
{
    uint32_t back = 0;
    if (cl->part != NULL) {
        tq_task_t *t = cl->task;
        for (uint32_t i = 0; i < cl->num_rows; i++) {
            uint64_t r = (uint64_t)cl->rows[i];
            /* a row cleared or reset since is no longer this claim's */
            if (tq_u64map_get(t->in_flight, r) != cl)
                continue;
            tq_u64map_remove(t->in_flight, r);
            if (!delivered) {
                t->consumed[r] = 0;
                back++;
            }
        }
        tq_list_remove(&cl->link);
        cl->part = NULL;
        cl->task = NULL;
    }
    free(cl->rows);
    cl->rows = NULL;
    cl->num_rows = 0;
    return back;
}

bool tq__partition_row_ready(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                             const tq_task_t *task, uint64_t row)
{
    if (row >= p->num_slots || p->state[row] != TQ_ROW_LIVE)
        return false;
    if (task != NULL && task->consumed[row])
        return false;
    for (uint32_t k = 0; k < nf; k++)
        if (!fields[k]->cells[row].produced || fields[k]->cells[row].lost)
            return false;
    return true;
}

bool tq__partition_row_lost(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                            uint64_t row)
{
    if (row >= p->num_slots || p->state[row] != TQ_ROW_LIVE)
        return false;
    for (uint32_t k = 0; k < nf; k++)
        if (fields[k]->cells[row].lost)
            return true;
    return false;
}

uint64_t tq__partition_mark_lost(tq_partition_t *p, const struct tq_unit *unit)
{
    uint64_t n = 0;
    for (uint32_t k = 0; k < p->num_fields; k++)
        for (uint64_t r = 0; r < p->num_slots; r++) {
            tq_cell_t *c = &p->fields[k].cells[r];
            if (c->produced && !c->lost && c->ext != NULL && c->ext->unit == unit) {
                c->lost = true;
                n++;
            }
        }
    return n;
}

uint64_t tq__field_produced(const tq_partition_t *p, const tq_field_t *f)
{
    uint64_t n = 0;
    for (uint64_t r = 0; r < p->num_slots; r++)
        n += p->state[r] == TQ_ROW_LIVE && f->cells[r].produced && !f->cells[r].lost;
    return n;
}

uint64_t tq__field_lost(const tq_partition_t *p, const tq_field_t *f)
{
    uint64_t n = 0;
    for (uint64_t r = 0; r < p->num_slots; r++)
        n += p->state[r] == TQ_ROW_LIVE && f->cells[r].lost;
    return n;
}

uint64_t tq__partition_lost_rows(const tq_partition_t *p)
{
    uint64_t n = 0;
    for (uint64_t r = 0; r < p->num_slots; r++) {
        bool lost = false;
        for (uint32_t k = 0; !lost && k < p->num_fields; k++)
            lost = p->fields[k].cells[r].lost;
        n += p->state[r] == TQ_ROW_LIVE && lost;
    }
    return n;
}

void tq__task_counts(const tq_partition_t *p, const tq_task_t *t, uint64_t *consumed_p,
                     uint64_t *ready_p)
{
    uint64_t consumed = 0, ready = 0;
    for (uint64_t r = 0; r < p->num_slots; r++) {
        if (p->state[r] != TQ_ROW_LIVE)
            continue;
        if (t->consumed[r]) {
            consumed++;
            continue;
        }
        bool complete = true;
        for (uint32_t k = 0; complete && k < p->num_fields; k++)
            complete = p->fields[k].cells[r].produced && !p->fields[k].cells[r].lost;
        ready += complete;
    }
    *consumed_p = consumed;
    *ready_p = ready;
}

uint32_t tq__partition_sample_sequential(const tq_partition_t *p, tq_field_t *const *fields,
                                         uint32_t nf, const tq_task_t *task, uint32_t want,
                                         int64_t *out)
{
    uint32_t got = 0;
    for (uint64_t r = 0; r < p->num_slots && got < want; r++)
        if (tq__partition_row_ready(p, fields, nf, task, r))
            out[got++] = (int64_t)r;
    return got;
}
