/* partition.h: rows, fields, production and consumption of one partition. */
#ifndef TQ_PARTITION_H
#define TQ_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "pool.h"
#include "tq/tq.h"
#include "util/hashmap.h"
#include "util/list.h"
#include "util/u64map.h"

/*
 * The controller's model of the data, with no I/O: it is driven by the request
 * handlers and tested on its own.
 *
 * An extent is one allocation in a storage unit's pool (a field's column for
 * one put). Cells point into it; every cell, every pin and the pending put
 * that made it hold a reference, and the range returns to the pool when the
 * last one goes. So an overwrite or a clear never frees bytes a reader has
 * pinned.
 */
struct tq_unit;

typedef struct tq_extent {
    struct tq_unit *unit;
    tq_pool        *pool;
    tq_pool_block  *block;
    uint64_t        offset, length;
    uint32_t        refs;
} tq_extent;

/* Takes the caller's reference; frees the range when it was the last. */
void tq__extent_unref(tq_extent *ext);
static inline void tq__extent_ref(tq_extent *ext) { ext->refs++; }

/* One field of one row: length bytes at offset in ext's unit (ext NULL when empty).
 * A produced cell is lost when its unit died: never ready again until rewritten. */
typedef struct {
    tq_extent *ext;
    uint64_t   offset, length;
    int64_t    shape[TQ_MAX_NDIM];
    bool       produced;
    bool       lost;
} tq_cell_t;

typedef struct {
    char           *name;
    tq_field_kind_t kind;
    tq_dtype_t      dtype;
    uint32_t        ndim;
    int64_t         row_shape[TQ_MAX_NDIM]; /* tensor */
    char            format[TQ_MAX_FORMAT + 1]; /* its format label, "" for none */
    tq_cell_t      *cells;                  /* one per row slot */
} tq_field_t;

typedef enum { TQ_ROW_FREE, TQ_ROW_RESERVED, TQ_ROW_LIVE } tq_row_state_t;

typedef struct tq_task {
    tq_list    link;
    char      *name;
    uint8_t   *consumed;  /* one byte per row slot */
    tq_u64map *in_flight; /* consumed rows not yet delivered: row -> its tq_claim_t */
    tq_list    claims;    /* tq_claim_t.link */
} tq_task_t;

/* A key of the KV interface: one row of its partition. Its tag is the row's
 * custom meta. */
typedef struct tq_kv_key {
    tq_list  link;  /* in the partition's key_order: insertion order */
    char    *key;
    uint64_t seq;   /* its place in key_order: grows with every key bound */
    int64_t  row;
} tq_kv_key_t;

/* A row's custom meta: a JSON object with at least one member (an empty one
 * is no custom meta), kept parsed (samplers read it) and printed (answers
 * carry it). A keyed row's KV tag is its custom meta: one store. */
typedef struct {
    cJSON   *obj;
    char    *text;
    uint32_t len;
} tq_custom_t;

/* Bytes a custom meta is charged to the metadata budget: its text, its parse
 * tree (about as large again) and the structures around them. */
static inline int64_t tq__custom_cost(const tq_custom_t *cm)
{
    return cm ? 2 * (int64_t)cm->len + 128 : 0;
}

/* Rows a stateful sampler keeps for the callers that must get the same batch. */
typedef struct {
    tq_list  link;       /* in the partition's kept_order */
    char    *key;
    int64_t *rows;
    uint32_t num_rows;
    uint32_t takers_left;
} tq_kept_t;

typedef struct tq_partition {
    tq_list     link;        /* in the controller's list */
    char       *name;
    uint64_t    num_slots;   /* rows ever used: indexes are < num_slots */
    uint64_t    cap_slots;   /* allocated length of every per-row array */
    uint8_t    *state;       /* tq_row_state_t per slot */
    uint64_t    free_hint;   /* no free slot below this */
    uint64_t    live_rows;
    tq_field_t *fields;
    uint32_t    num_fields, cap_fields;
    tq_list     tasks;
    tq_list     allocs;      /* pending puts that reserved rows here */
    tq_hashmap *keys;        /* key -> tq_kv_key_t */
    tq_list     key_order;
    uint64_t    seq;          /* its place among partitions (set by the controller) */
    uint64_t    last_key_seq; /* of the last key bound */
    tq_kv_key_t **row_keys;  /* per slot: its key, or NULL */
    tq_custom_t **custom;    /* per slot: its custom meta, or NULL */
    int64_t     custom_charged; /* bytes of custom meta charged to the budget */
    bool        sealed;      /* no new rows will come */
    tq_hashmap *kept;        /* key -> tq_kept_t */
    tq_list     kept_order;
    uint32_t    num_tasks;
    struct tq_meta_budget *budget; /* NULL: no limit */
    uint64_t    charged;     /* bytes of per-row arrays charged to the budget */
} tq_partition_t;

/*
 * Bytes the per-row arrays of all partitions may take together. Row metadata
 * costs about 100 bytes a row and field whether or not the row holds data, so
 * without a bound one small request (a huge row index, a million empty rows)
 * could take the controller's memory.
 */
typedef struct tq_meta_budget {
    uint64_t used, max;
} tq_meta_budget_t;

/* Largest row index + 1 a partition accepts. */
#define TQ_MAX_ROWS_PER_PARTITION (1LL << 31)

/*
 * Rows a GET_META consumed for a task but the client has not yet got: they
 * are in flight until the claim is settled, delivered (the client read them:
 * they stay consumed) or not (a failed or abandoned read, a client gone: they
 * become ready for the task again). A row cleared or a consumption reset in
 * the meantime leaves its claim, so settling never touches a row's later life.
 * The claim is held by whoever handed the rows out (a meta).
 */
typedef struct tq_claim {
    tq_list              link;     /* in task->claims */
    struct tq_partition *part;     /* NULL: nothing claimed (settled, or the task is gone) */
    tq_task_t           *task;
    int64_t             *rows;
    uint32_t             num_rows;
} tq_claim_t;

/* A partition charging its row metadata to budget (NULL: unbounded). */
tq_partition_t *tq__partition_create(const char *name, tq_meta_budget_t *budget);
/* Frees every cell reference; pending allocs must be detached first. */
void tq__partition_destroy(tq_partition_t *p);

tq_field_t *tq__partition_field(tq_partition_t *p, const char *name);
/* Add n fields with the names and schemas of specs (their cells unused), all
 * or none. @return TQ_OK; TQ_ERR_NOSPACE past the budget; TQ_ERR_NOMEM. */
int tq__partition_add_fields(tq_partition_t *p, uint32_t n, const tq_field_t *specs);
/* One field: the new field, or NULL when add_fields fails. */
tq_field_t *tq__partition_add_field(tq_partition_t *p, const char *name, tq_field_kind_t kind,
                                    tq_dtype_t dtype, uint32_t ndim, const int64_t *row_shape);

/* Reserve n new rows, lowest free index first, writing them to out.
 * TQ_ERR_NOSPACE when the metadata budget cannot hold them. */
int tq__partition_reserve_new(tq_partition_t *p, uint32_t n, int64_t *out);
/* Reserve the given rows (live ones stay live: an overwrite). TQ_ERR_INVALID
 * for an index out of range or repeated, TQ_ERR_NOSPACE past the metadata
 * budget; nothing is reserved then. */
int tq__partition_reserve(tq_partition_t *p, uint32_t n, const int64_t *indexes);
/* Give back rows reserved but never committed. */
void tq__partition_unreserve(tq_partition_t *p, uint32_t n, const int64_t *indexes);

/* Put cell into field f at row (taking the cell's reference), drop the old
 * one, and mark the row live. */
void tq__partition_set_cell(tq_partition_t *p, tq_field_t *f, int64_t row, const tq_cell_t *cell);

/* Mark a reserved row live with no field (a key that has only a tag). */
void tq__partition_set_live(tq_partition_t *p, int64_t row);

tq_kv_key_t *tq__partition_key(const tq_partition_t *p, const char *key);
/* A key for row with an empty tag, not yet in any partition; NULL when out
 * of memory. Free it with tq__kv_key_free unless bound. */
tq_kv_key_t *tq__kv_key_create(const char *key, int64_t row);
void         tq__kv_key_free(tq_kv_key_t *k);
/* Make room for n more keys, so that binding them cannot fail. */
int          tq__partition_keys_reserve(tq_partition_t *p, size_t n);
/* Bind a created key to its row (which has none), within reserved room. */
void         tq__partition_bind_key(tq_partition_t *p, tq_kv_key_t *k);
/* A copy of tag (NULL: an empty object) with the members of obj (a JSON
 * object) merged in, a later value winning; NULL when out of memory. */
cJSON       *tq__kv_tag_merged(const cJSON *tag, const cJSON *obj);

/* Parse len bytes as a row's custom meta: a JSON object, nothing after it, no
 * NUL, at most TQ_MAX_CUSTOM_META bytes. NULL with *why on bad input or no memory. */
cJSON *tq__custom_parse(const void *text, size_t len, const char **why);
/* The custom meta of obj (taken, freed on error): *cm_p NULL for an empty
 * object. TQ_ERR_INVALID (*why) when its text passes TQ_MAX_CUSTOM_META
 * bytes; TQ_ERR_NOMEM. */
int  tq__custom_make(cJSON *obj, tq_custom_t **cm_p, const char **why);
void tq__custom_free(tq_custom_t *cm);
/* Charge delta bytes (< 0: give back) of custom meta to the budget: false,
 * charging nothing, when it would pass it. */
bool tq__partition_custom_charge(tq_partition_t *p, int64_t delta);
/* Replace row's custom meta by cm (NULL: none), taking it and freeing the old;
 * the caller charged the difference of their costs. */
void tq__partition_set_custom(tq_partition_t *p, int64_t row, tq_custom_t *cm);
static inline const tq_custom_t *tq__partition_custom(const tq_partition_t *p, uint64_t row)
{
    return row < p->num_slots ? p->custom[row] : NULL;
}

/* Remove live rows (and their keys); returns how many were removed.
 * Out-of-range ones are ignored. */
uint32_t tq__partition_clear_rows(tq_partition_t *p, uint32_t n, const int64_t *indexes);

tq_task_t *tq__partition_task(tq_partition_t *p, const char *name, bool create);
/* Forget consumption of one task (NULL: all). TQ_ERR_NOT_FOUND for an unknown task. */
int tq__partition_reset(tq_partition_t *p, const char *task);

tq_kept_t *tq__partition_kept(const tq_partition_t *p, const char *key);
/* Keep a copy of rows under key for takers more callers. NULL when out of memory. */
tq_kept_t *tq__partition_keep(tq_partition_t *p, const char *key, const int64_t *rows,
                              uint32_t n, uint32_t takers);
void tq__partition_unkeep(tq_partition_t *p, tq_kept_t *k);

/* Consume rows (each ready for t) for t under cl, in flight until settled.
 * TQ_ERR_NOMEM leaves nothing consumed. */
int      tq__claim_take(tq_partition_t *p, tq_task_t *t, tq_claim_t *cl, const int64_t *rows,
                        uint32_t n);
/* Settle cl (a claim taken, settled or dropped: then nothing happens).
 * @return how many rows went back to the task (always 0 when delivered). */
uint32_t tq__claim_settle(tq_claim_t *cl, bool delivered);

/* A row is ready for a task when it is live, every field in fields is
 * produced and none lost, and the task has not consumed it. */
bool tq__partition_row_ready(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                             const tq_task_t *task, uint64_t row);
/* Is a cell of fields lost in this (live) row? */
bool tq__partition_row_lost(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                            uint64_t row);
/* Mark the produced cells held by unit as lost. @return how many cells were. */
uint64_t tq__partition_mark_lost(tq_partition_t *p, const struct tq_unit *unit);

/* For status and metrics, each a pass over the rows: live rows whose field f
 * is produced (and not lost), or lost; live rows with a lost cell; of the live
 * rows, those task consumed (in flight included) and those ready for it (every
 * field produced, none lost, not consumed). */
uint64_t tq__field_produced(const tq_partition_t *p, const tq_field_t *f);
uint64_t tq__field_lost(const tq_partition_t *p, const tq_field_t *f);
uint64_t tq__partition_lost_rows(const tq_partition_t *p);
void     tq__task_counts(const tq_partition_t *p, const tq_task_t *t, uint64_t *consumed_p,
                         uint64_t *ready_p);
/* Consumed rows of t not yet delivered. */
static inline uint64_t tq__task_in_flight(const tq_task_t *t)
{
    return tq_u64map_size(t->in_flight);
}

/* The sequential sampler: the lowest `want` ready rows into out; returns how
 * many it found (at most want). Consumes nothing. */
uint32_t tq__partition_sample_sequential(const tq_partition_t *p, tq_field_t *const *fields,
                                         uint32_t nf, const tq_task_t *task, uint32_t want,
                                         int64_t *out);

#endif
