/* tq.h: the public API of libtqrdma, an RDMA-native store of training samples. */
#ifndef TQ_TQ_H
#define TQ_TQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TQ_BUILDING_LIBRARY)
#define TQ_EXPORT __attribute__((visibility("default")))
#else
#define TQ_EXPORT
#endif

#define TQ_VERSION_MAJOR 0
#define TQ_VERSION_MINOR 1
#define TQ_VERSION_PATCH 0
#define TQ_VERSION_STRING "0.1.0"

/** Most dimensions a field's row may have. */
#define TQ_MAX_NDIM 8
/** Most bytes of a field's format label (tq_batch_set_format). */
#define TQ_MAX_FORMAT 15
/** Most bytes of one row's custom meta (a KV tag) as JSON text. */
#define TQ_MAX_CUSTOM_META 65536

/* Status codes with their strings: one list, so the two never drift apart. */
#define TQ_STATUS_MAP(X)                                                       \
    X(TQ_OK,              0, "success")                                        \
    X(TQ_ERR_INVALID,    -1, "invalid argument")                               \
    X(TQ_ERR_NOT_FOUND,  -2, "not found")                                      \
    X(TQ_ERR_EXISTS,     -3, "already exists")                                 \
    X(TQ_ERR_TIMEOUT,    -4, "timed out")                                      \
    X(TQ_ERR_NOSPACE,    -5, "no space left in the storage pools")             \
    X(TQ_ERR_LOST,       -6, "data lost with a dead storage unit")             \
    X(TQ_ERR_CONNECTION, -7, "connection failed")                              \
    X(TQ_ERR_PROTOCOL,   -8, "protocol error")                                 \
    X(TQ_ERR_AUTH,       -9, "authentication failed")                          \
    X(TQ_ERR_NOMEM,     -10, "out of memory")                                  \
    X(TQ_ERR_UNSUPPORTED, -11, "operation not supported")                      \
    X(TQ_ERR_END,       -12, "end of stream")                                  \
    X(TQ_ERR_IO,        -13, "input/output error")

typedef enum {
#define TQ_STATUS_ENUM(name, value, text) name = value,
    TQ_STATUS_MAP(TQ_STATUS_ENUM)
#undef TQ_STATUS_ENUM
} tq_status_t;

/* Element types. Values are on the wire and in stored schemas: new ones are
 * appended, never renumbered. Complex types are pairs (real, imaginary) of
 * floats: c32 of two f16, c64 of two f32, c128 of two f64. */
typedef enum {
    TQ_DTYPE_BOOL, TQ_DTYPE_U8, TQ_DTYPE_I8, TQ_DTYPE_I16, TQ_DTYPE_I32,
    TQ_DTYPE_I64, TQ_DTYPE_F16, TQ_DTYPE_BF16, TQ_DTYPE_F32, TQ_DTYPE_F64,
    TQ_DTYPE_BYTES,
    TQ_DTYPE_U16, TQ_DTYPE_U32, TQ_DTYPE_U64, TQ_DTYPE_C32, TQ_DTYPE_C64, TQ_DTYPE_C128
} tq_dtype_t;

typedef enum { TQ_FIELD_TENSOR, TQ_FIELD_NESTED, TQ_FIELD_BYTES } tq_field_kind_t;

typedef struct tq_client tq_client;
typedef struct tq_batch tq_batch;
typedef struct tq_meta tq_meta;
typedef struct tq_kv_entries tq_kv_entries;
typedef struct tq_request tq_request;
typedef struct tq_stream tq_stream;

/** What a batch knows of one field. */
typedef struct {
    tq_field_kind_t kind;
    tq_dtype_t      dtype;
    uint32_t        ndim;                   /**< dimensions of one row */
    int64_t         row_shape[TQ_MAX_NDIM]; /**< tensor: the shape of every row */
    const void     *data;                   /**< tensor: the contiguous column; else NULL */
    size_t          bytes;                  /**< total bytes of the column */
} tq_field_info_t;

/** What tq_get_meta picks (tq_fetch_args_t.mode). */
enum {
    TQ_FETCH_READY = 0, /**< batch_size ready rows the task has not consumed, by the
                             sampler; consumes them, waits up to timeout_ms */
    TQ_FETCH_FORCE,     /**< the lowest batch_size live rows, whatever their readiness or
                             consumption: consumes nothing, never waits; a cell a row
                             lacks is absent in the meta (tq_meta_has_cell) */
    TQ_FETCH_INSERT     /**< batch_size new rows (no field produced), to fill later with
                             tq_put(indexes); no fields, refused on a sealed partition */
};

/** Arguments of tq_get_meta. Zero-initialise, then set what you need. */
typedef struct {
    const char         *partition;
    const char         *task;         /**< consumer name: consumption is per task
                                           (READY only; FORCE and INSERT take NULL) */
    const char *const  *fields;       /**< INSERT: none */
    size_t              num_fields;
    uint32_t            batch_size;
    const char         *sampler;      /**< NULL or "sequential", "grpo", "rank_aware",
                                           "seqlen_balanced", or a plugin's name (READY) */
    const char         *sampler_args; /**< JSON object text, or NULL (READY) */
    int                 timeout_ms;   /**< 0: answer now; -1: wait forever (READY) */
    uint32_t            prefetch;     /**< streams: batches read ahead (0: 1) */
    int                 mode;         /**< TQ_FETCH_READY (0), _FORCE or _INSERT; streams: READY */
} tq_fetch_args_t;

/** @return a static string describing @p status. */
TQ_EXPORT const char *tq_status_string(int status);

/**
 * @return the detail of this thread's last failure on @p c ("" if none); with
 * NULL, of the last failed tq_open or refused batch field name. Valid until
 * the thread's next call.
 */
TQ_EXPORT const char *tq_last_error(const tq_client *c);

/** @return the size in bytes of one element of @p dtype (1 for bytes), 0 if unknown. */
TQ_EXPORT size_t tq_dtype_size(tq_dtype_t dtype);

/**
 * Connect to a controller.
 * @param [in]  target   "host:port", "tcp://host:port", a client config path ending
 *                       in ".json", "embedded", or NULL ($TQ_CONTROLLER, else embedded).
 * @param [out] client_p the new client, written only on success.
 * @return TQ_OK; TQ_ERR_INVALID for a bad target; TQ_ERR_CONNECTION when the
 *         controller cannot be reached; TQ_ERR_AUTH for a rejected token.
 */
TQ_EXPORT int  tq_open(const char *target, tq_client **client_p);
/**
 * @return the "host:port" of the controller @p c talks to (for the embedded
 *         default, its loopback address, so other processes can join it).
 */
TQ_EXPORT const char *tq_controller_address(const tq_client *c);
/** Disconnect; releases every pin and uncommitted allocation of @p client. NULL is ignored. */
TQ_EXPORT void tq_close(tq_client *client);

/**
 * Create an empty batch of @p rows rows.
 * @return TQ_OK; TQ_ERR_INVALID when rows is 0 or batch_p is NULL; TQ_ERR_NOMEM.
 */
TQ_EXPORT int  tq_batch_create(uint32_t rows, tq_batch **batch_p);
/** Free a batch (and the memory it owns, for a batch returned by a get). NULL is ignored. */
TQ_EXPORT void tq_batch_destroy(tq_batch *batch);

/**
 * Add a tensor field: every row has shape @p row_shape; @p data is the column,
 * rows x prod(row_shape) elements. The memory is borrowed until the batch is destroyed.
 * @return TQ_OK; TQ_ERR_INVALID for a bad argument; TQ_ERR_EXISTS for a repeated name.
 */
TQ_EXPORT int  tq_batch_add_tensor(tq_batch *b, const char *field, tq_dtype_t dtype,
                                   uint32_t ndim, const int64_t *row_shape, const void *data);
/**
 * Add a nested (ragged) field: row i has shape shapes[i*ndim .. i*ndim+ndim) and
 * its data at row_data[i]. Memory is borrowed.
 * @return TQ_OK; TQ_ERR_INVALID; TQ_ERR_EXISTS.
 */
TQ_EXPORT int  tq_batch_add_nested(tq_batch *b, const char *field, tq_dtype_t dtype,
                                   uint32_t ndim, const int64_t *shapes,
                                   const void *const *row_data);
/**
 * Add a bytes field: row i is lengths[i] bytes at values[i] (may be empty).
 * Memory is borrowed.
 * @return TQ_OK; TQ_ERR_INVALID; TQ_ERR_EXISTS.
 */
TQ_EXPORT int  tq_batch_add_bytes(tq_batch *b, const char *field,
                                  const void *const *values, const size_t *lengths);
TQ_EXPORT uint32_t    tq_batch_rows(const tq_batch *b);
TQ_EXPORT uint32_t    tq_batch_num_fields(const tq_batch *b);
/** @return the name of field @p i, or NULL when out of range. */
TQ_EXPORT const char *tq_batch_field_name(const tq_batch *b, uint32_t i);
/** @return TQ_OK and *info_p; TQ_ERR_NOT_FOUND for an absent field; TQ_ERR_INVALID. */
TQ_EXPORT int  tq_batch_field(const tq_batch *b, const char *field, tq_field_info_t *info_p);
/**
 * @return a pointer to the bytes of one cell and, when the out-parameters are not
 *         NULL, its size and shape (ndim from tq_batch_field); NULL for an absent
 *         field or row.
 */
TQ_EXPORT const void *tq_batch_row(const tq_batch *b, const char *field, uint32_t row,
                                   size_t *bytes_p, const int64_t **shape_p);
/**
 * Label how a binding encoded field @p field of @p b ("utf8", "pickle", "list",
 * ...). A put stores the label in the partition's schema next to the field's
 * kind and dtype; a later put that gives the field another non-empty label is
 * refused as a dtype conflict is (nothing written), one that gives none keeps
 * it. Metas and the batches gets return carry it.
 * @param [in] format 1 to TQ_MAX_FORMAT bytes of [a-z0-9_.-]; NULL or "" removes the label.
 * @return TQ_OK; TQ_ERR_NOT_FOUND for an absent field; TQ_ERR_INVALID for a NULL
 *         batch or field or a bad label (tq_last_error(NULL) says which).
 */
TQ_EXPORT int tq_batch_set_format(tq_batch *b, const char *field, const char *format);
/** @return the format label of @p field ("" when none), or NULL for an absent field. */
TQ_EXPORT const char *tq_batch_field_format(const tq_batch *b, const char *field);

/**
 * Write the fields of @p b to rows of @p partition (created on first use), in two
 * phases: allocate, write by one-sided RMA, commit. Readers see nothing before the
 * commit; an overwrite swaps in fresh extents, so readers never see a torn value.
 * @param [in]  indexes     existing or chosen row indexes (b's row count of them),
 *                          or NULL for new rows (cleared indexes reused lowest first).
 * @param [out] indexes_out the indexes written, or NULL.
 * @return TQ_OK; TQ_ERR_INVALID (bad argument, dtype conflict); TQ_ERR_NOSPACE;
 *         TQ_ERR_CONNECTION, TQ_ERR_TIMEOUT, TQ_ERR_LOST.
 */
TQ_EXPORT int tq_put(tq_client *c, const char *partition, const tq_batch *b,
                     const int64_t *indexes, int64_t *indexes_out);
/**
 * Pick batch_size ready rows (all requested fields produced and none lost, not
 * yet consumed by args->task), mark them consumed by the task and pin their data
 * until tq_meta_free. They are in flight until then: if the client's read fails
 * or the client goes (its last control connection closes), they go back to the
 * task. Only this client may release the meta. Waits up to args->timeout_ms for
 * enough rows.
 *
 * args->mode TQ_FETCH_FORCE instead answers at once with the lowest batch_size
 * live rows (fewer, even none, when the partition has fewer), ready or not,
 * consumed or not, consuming nothing; their data is pinned as above. Its meta
 * has every requested field, with the cells a row lacks absent
 * (tq_meta_has_cell); tq_get_data of a meta with an absent cell fails.
 * TQ_FETCH_INSERT makes batch_size new rows (live, no field produced; the
 * partition is created if new) and answers with a meta of them and no fields:
 * tq_put(tq_meta_indexes(m)) fills them. Neither waits (timeout_ms is not
 * used) nor takes a sampler or sampler_args; a task may be NULL (one given is
 * checked as a name, and counts for nothing).
 * @return TQ_OK; TQ_ERR_TIMEOUT when too few rows were ready (nothing consumed);
 *         TQ_ERR_END once the partition is sealed and the task has taken every
 *         row that is not lost; TQ_ERR_INVALID for missing fields, task or batch
 *         size, a bad mode, an INSERT into a sealed partition; FORCE:
 *         TQ_ERR_NOT_FOUND for an unknown partition or field.
 */
TQ_EXPORT int tq_get_meta(tq_client *c, const tq_fetch_args_t *args, tq_meta **meta_p);
/**
 * The meta of n rows of @p partition by index (in that order, repeats allowed),
 * whatever their readiness and consumption, consuming nothing; their data is
 * pinned until tq_meta_free. Named fields may be absent on some rows
 * (tq_meta_has_cell); fields NULL: every field all the rows have (maybe none).
 * @return TQ_OK and *meta_p; TQ_ERR_NOT_FOUND for an unknown partition, a row
 *         index that is not live (never written, cleared, or a put not yet
 *         committed) or a field the partition lacks (tq_last_error names it);
 *         TQ_ERR_INVALID for a bad argument (n 0, a negative index, NULL).
 */
TQ_EXPORT int tq_get_meta_rows(tq_client *c, const char *partition, size_t n,
                               const int64_t *indexes, size_t num_fields,
                               const char *const *fields, tq_meta **meta_p);
/**
 * Read the rows of @p m by one-sided RMA into a new batch that owns its memory.
 * @return TQ_OK; TQ_ERR_NOT_FOUND when a row lacks one of m's fields (an absent
 *         cell, see tq_meta_has_cell: nothing is read); TQ_ERR_LOST when a unit
 *         holding the data is gone; TQ_ERR_CONNECTION;
 *         TQ_ERR_TIMEOUT (also past the meta's lease). After an error, freeing the
 *         meta gives its rows back to the task (unless a later read succeeds).
 */
TQ_EXPORT int tq_get_data(tq_client *c, const tq_meta *m, tq_batch **batch_p);
/**
 * Read the rows of @p m into @p dst: a batch of tq_meta_rows(m) rows that the
 * caller built over its own (writable) memory with tq_batch_add_tensor/_nested/
 * _bytes, with some or all of m's fields, each of the same kind and dtype and
 * with exactly the cell sizes and shapes the meta gives (tq_meta_field,
 * tq_meta_row). Only dst's fields are read. The bytes go by one-sided RMA
 * straight into the caller's memory, no copy on the way, except that the verbs
 * transport copies runs under 8 KiB out of a registered staging buffer;
 * registrations of the memory are cached where the transport can tell when it
 * is unmapped (UCX, verbs). After the call dst's data pointers are still the
 * caller's. Nothing is read when dst does not fit.
 * @return TQ_OK; TQ_ERR_INVALID for a NULL or unfitting dst (tq_last_error
 *         names the field and what differs: kind, dtype, dimensions, shape,
 *         size, a field the meta lacks, the row count), nothing read; else as
 *         tq_get_data, after which dst's memory holds an unknown part of the
 *         rows and freeing the meta gives its rows back to the task.
 */
TQ_EXPORT int tq_get_data_into(tq_client *c, const tq_meta *m, tq_batch *dst);
TQ_EXPORT uint32_t       tq_meta_rows(const tq_meta *m);
TQ_EXPORT const int64_t *tq_meta_indexes(const tq_meta *m);
/** @return the format label of @p field in the partition's schema ("" when
 *          none), or NULL when @p m has no such field. */
TQ_EXPORT const char    *tq_meta_field_format(const tq_meta *m, const char *field);
/** @return the partition the rows of @p m are in (valid while m is), or NULL for NULL. */
TQ_EXPORT const char    *tq_meta_partition(const tq_meta *m);
/** @return how many fields the rows of @p m carry (its schema; 0 for NULL). */
TQ_EXPORT uint32_t       tq_meta_num_fields(const tq_meta *m);
/** @return the name of field @p i of @p m, or NULL when out of range. */
TQ_EXPORT const char    *tq_meta_field_name(const tq_meta *m, uint32_t i);
/**
 * A field of @p m as a batch would describe it: kind, dtype, ndim, row_shape
 * (tensor), bytes (the column's total); data is NULL (nothing is read yet).
 * @return TQ_OK and *info_p; TQ_ERR_NOT_FOUND for a field m lacks; TQ_ERR_INVALID
 *         for a NULL argument.
 */
TQ_EXPORT int tq_meta_field(const tq_meta *m, const char *field, tq_field_info_t *info_p);
/**
 * One cell of @p m: its size in bytes and its shape (ndim entries, from
 * tq_meta_field; valid while m is), each when its out-parameter is not NULL.
 * @return TQ_OK; TQ_ERR_NOT_FOUND for a field m lacks; TQ_ERR_INVALID for a
 *         NULL meta or field, or a row out of range.
 */
TQ_EXPORT int tq_meta_row(const tq_meta *m, const char *field, uint32_t row, size_t *bytes_p,
                          const int64_t **shape_p);
/**
 * @return the custom meta of row @p row of @p m as JSON object text, compact
 *         ("{}" when none), as it was when m was made; NULL for a row out of
 *         range. A keyed row's custom meta is its KV tag.
 */
TQ_EXPORT const char    *tq_meta_custom(const tq_meta *m, uint32_t row);
/** @return the key of row @p row of @p m (KV interface), or NULL when it has
 *          none or the row is out of range. */
TQ_EXPORT const char    *tq_meta_key(const tq_meta *m, uint32_t row);
/** @return 1 when row @p row of @p m has field @p field, 0 when the cell is absent
 *          (never produced: a FORCE fetch or tq_get_meta_rows); TQ_ERR_NOT_FOUND
 *          when m has no such field; TQ_ERR_INVALID for NULL or a row out of range. */
TQ_EXPORT int            tq_meta_has_cell(const tq_meta *m, const char *field, uint32_t row);
/** Unpin the data of @p m and free it: its rows stay consumed, or go back to the
 * task when the last tq_get_data of it failed. NULL is ignored. */
TQ_EXPORT void tq_meta_free(tq_meta *m);

/**
 * Set the custom meta of n live rows of @p partition: json[i] (a JSON object,
 * at most TQ_MAX_CUSTOM_META bytes; NULL or "{}" removes it) replaces what
 * row indexes[i] had, as TransferQueue's set_custom_meta does. It is the one
 * per-row store: a keyed row's custom meta is its KV tag (a tag given to
 * tq_kv_put merges into it key by key), every meta carries it
 * (tq_meta_custom), and a clear removes it. All or nothing.
 * @return TQ_OK; TQ_ERR_NOT_FOUND for an unknown partition or a row that is not
 *         live; TQ_ERR_INVALID for text that is not one JSON object or is too
 *         long, a negative or repeated index, NULL arguments (tq_last_error
 *         names the row); TQ_ERR_NOSPACE past the controller's metadata budget.
 */
TQ_EXPORT int tq_set_custom_meta(tq_client *c, const char *partition, size_t n,
                                 const int64_t *indexes, const char *const *json);

/** Remove rows; their indexes become free. @return how many rows were removed, or an error. */
TQ_EXPORT int tq_clear(tq_client *c, const char *partition, size_t n, const int64_t *indexes);
/** Remove a partition and all its rows. @return TQ_OK; TQ_ERR_NOT_FOUND. */
TQ_EXPORT int tq_clear_partition(tq_client *c, const char *partition);
/** Forget what @p task (NULL: every task) consumed in @p partition. */
TQ_EXPORT int tq_reset_consumption(tq_client *c, const char *partition, const char *task);

/* ---- key-value interface (Redis-style) ---- */

/**
 * Write one key: its fields (a 1-row batch, or NULL) and a tag (a JSON object
 * merged into the key's tag key by key, or NULL). The key is created if new;
 * fields not in the batch keep their values. Atomic: on error nothing is written.
 * @return TQ_OK; TQ_ERR_INVALID (both NULL, a tag that is not a JSON object, a
 *         batch of other than 1 row, a dtype conflict); TQ_ERR_NOSPACE; ...
 */
TQ_EXPORT int tq_kv_put(tq_client *c, const char *partition, const char *key,
                        const tq_batch *fields, const char *tag_json);
/**
 * Write n keys in one control round trip: row i of fields goes to keys[i],
 * tags_json[i] (may be NULL) merges into its tag. Atomic as tq_kv_put.
 * @return TQ_OK; TQ_ERR_INVALID also for a repeated key or a batch of other than n rows.
 */
TQ_EXPORT int tq_kv_batch_put(tq_client *c, const char *partition, size_t n,
                              const char *const *keys, const tq_batch *fields,
                              const char *const *tags_json);
/**
 * tq_kv_batch_put, answered with the meta of the keys as the put left them:
 * rows in the order of keys, every field all of them have now (maybe none),
 * their merged tags (tq_meta_custom) and keys (tq_meta_key). It pins like
 * tq_kv_get_meta's, so it may be read; free it with tq_meta_free. The same one
 * round trip as tq_kv_batch_put (the COMMIT's answer carries the meta).
 * @return as tq_kv_batch_put; TQ_ERR_INVALID also for a NULL meta_p. An error
 *         after the commit (out of memory for the meta, a malformed answer)
 *         leaves the keys written.
 */
TQ_EXPORT int tq_kv_batch_put_meta(tq_client *c, const char *partition, size_t n,
                                   const char *const *keys, const tq_batch *fields,
                                   const char *const *tags_json, tq_meta **meta_p);
/**
 * Read n keys, rows in the order of keys. fields NULL: every field produced
 * for all the keys (their intersection). Consumes nothing.
 * @return TQ_OK and *batch_p; TQ_ERR_NOT_FOUND for an unknown partition or key,
 *         a named field a key lacks, or an empty intersection (tq_last_error
 *         names what is missing); nothing is written on error.
 */
TQ_EXPORT int tq_kv_batch_get(tq_client *c, const char *partition, size_t n,
                              const char *const *keys, size_t num_fields,
                              const char *const *fields, tq_batch **batch_p);
/**
 * The meta of n keys, rows in the order of keys, fields as tq_kv_batch_get
 * (NULL: every field all the keys have): their data stays pinned, consuming
 * nothing, until tq_meta_free. Read it with tq_get_data or tq_get_data_into.
 * @return TQ_OK and *meta_p; errors as tq_kv_batch_get (TQ_ERR_INVALID also for
 *         a NULL meta_p).
 */
TQ_EXPORT int tq_kv_get_meta(tq_client *c, const char *partition, size_t n,
                             const char *const *keys, size_t num_fields,
                             const char *const *fields, tq_meta **meta_p);
/**
 * List keys in insertion order with their tags, of one partition (NULL: all,
 * partitions in creation order). An unknown partition gives an empty list.
 * The list comes page by page (tq_kv_list_page), however long it is.
 * @return TQ_OK and *entries_p (free with tq_kv_entries_free).
 */
TQ_EXPORT int tq_kv_list(tq_client *c, const char *partition, tq_kv_entries **entries_p);
/**
 * One page of tq_kv_list's list: the entries after @p cursor, in the same
 * order, at most @p limit of them and at most what one answer carries (about
 * 8 MiB). Keys put or cleared between pages never make another key appear
 * twice or go missing; they may or may not appear themselves.
 * @param [in]  cursor    NULL for the first page, else tq_kv_entries_cursor of
 *                        the page before.
 * @param [in]  limit     most entries, 0 for no limit but the answer's size.
 * @param [out] entries_p the page; tq_kv_entries_cursor gives the next one's cursor.
 * @return TQ_OK; TQ_ERR_INVALID for a bad partition name or a cursor no page gave.
 */
TQ_EXPORT int tq_kv_list_page(tq_client *c, const char *partition, const char *cursor,
                              size_t limit, tq_kv_entries **entries_p);
TQ_EXPORT size_t      tq_kv_entries_size(const tq_kv_entries *e);
TQ_EXPORT const char *tq_kv_entries_partition(const tq_kv_entries *e, size_t i);
TQ_EXPORT const char *tq_kv_entries_key(const tq_kv_entries *e, size_t i);
/** @return the tag of entry i as JSON object text ("{}" when none). */
TQ_EXPORT const char *tq_kv_entries_tag(const tq_kv_entries *e, size_t i);
/** @return the cursor of the page after @p e (valid while e is), or NULL when
 *          e ends the list (always NULL for tq_kv_list). */
TQ_EXPORT const char *tq_kv_entries_cursor(const tq_kv_entries *e);
TQ_EXPORT void        tq_kv_entries_free(tq_kv_entries *e);
/** Remove the keys that exist (their rows and tags); the partition stays.
 * @return how many keys were removed, or an error. */
TQ_EXPORT int tq_kv_clear(tq_client *c, const char *partition, size_t n, const char *const *keys);

/**
 * The row index of each of n keys (repeats allowed), -1 for a key that has
 * none. With @p create, keys that have none get new live rows first (no field,
 * no tag; the partition is created if new), all of them or none: a later
 * tq_put(indexes) or tq_set_custom_meta fills them, and tq_kv_batch_put finds
 * the keys there. Without it, nothing changes.
 * @param [out] indexes_out n indexes, written only on success.
 * @return TQ_OK; TQ_ERR_INVALID for a bad argument, or new keys in a sealed
 *         partition; TQ_ERR_NOSPACE past the controller's metadata budget.
 */
TQ_EXPORT int tq_kv_indexes(tq_client *c, const char *partition, size_t n,
                            const char *const *keys, int create, int64_t *indexes_out);
/**
 * The keys of n live rows of @p partition by index.
 * @param [out] keys_p an array of n keys, NULL for a row that has none, in one
 *                     block to free with tq_kv_keys_free; written only on success.
 * @return TQ_OK; TQ_ERR_NOT_FOUND for an unknown partition or a row that is not
 *         live (tq_last_error names it); TQ_ERR_INVALID for a bad argument.
 */
TQ_EXPORT int  tq_kv_keys(tq_client *c, const char *partition, size_t n, const int64_t *indexes,
                          char ***keys_p);
/** Free what tq_kv_keys returned. NULL is ignored. */
TQ_EXPORT void tq_kv_keys_free(char **keys);

/*
 * Non-blocking twins: the same arguments, plus a request that completes later.
 * An argument error is returned by the call itself (and no request is made);
 * any later error is returned by tq_request_wait/test, never by a callback.
 * Buffers stay borrowed until the request completes: names, keys, batches,
 * metas, tq_fetch_args_t's strings, tq_put_nb's indexes and indexes_out (written
 * at completion). A few client threads run them; the client's timeout counts
 * from submission (a request whose time ran out in the queue fails unrun).
 * What a call produces is taken from the request once complete:
 * tq_request_take_batch (tq_kv_batch_get_nb, tq_get_data_nb),
 * tq_request_take_meta (tq_get_meta_nb, tq_kv_get_meta_nb, tq_kv_batch_put_meta_nb),
 * tq_request_take_entries (tq_kv_list_nb), tq_request_result (tq_kv_clear_nb's
 * count).
 */
TQ_EXPORT int tq_kv_put_nb(tq_client *c, const char *partition, const char *key,
                           const tq_batch *fields, const char *tag_json, tq_request **req_p);
TQ_EXPORT int tq_kv_batch_put_nb(tq_client *c, const char *partition, size_t n,
                                 const char *const *keys, const tq_batch *fields,
                                 const char *const *tags_json, tq_request **req_p);
TQ_EXPORT int tq_kv_batch_put_meta_nb(tq_client *c, const char *partition, size_t n,
                                      const char *const *keys, const tq_batch *fields,
                                      const char *const *tags_json, tq_request **req_p);
TQ_EXPORT int tq_kv_batch_get_nb(tq_client *c, const char *partition, size_t n,
                                 const char *const *keys, size_t num_fields,
                                 const char *const *fields, tq_request **req_p);
TQ_EXPORT int tq_kv_get_meta_nb(tq_client *c, const char *partition, size_t n,
                                const char *const *keys, size_t num_fields,
                                const char *const *fields, tq_request **req_p);
TQ_EXPORT int tq_kv_list_nb(tq_client *c, const char *partition, tq_request **req_p);
TQ_EXPORT int tq_kv_clear_nb(tq_client *c, const char *partition, size_t n,
                             const char *const *keys, tq_request **req_p);
/**
 * tq_get_meta, non-blocking. Its deadline is the client's timeout plus
 * args->timeout_ms after submission; with timeout_ms -1 it is the client's
 * timeout alone: a request never waits for ever (it would hold one of the
 * client's few threads, and tq_close). The controller answers TQ_ERR_TIMEOUT,
 * nothing consumed, a little before the deadline (about a second, at most a
 * quarter of what is left); submit again to wait longer.
 */
TQ_EXPORT int tq_get_meta_nb(tq_client *c, const tq_fetch_args_t *args, tq_request **req_p);
/** tq_get_data, non-blocking; m must outlive the request (do not free it meanwhile). */
TQ_EXPORT int tq_get_data_nb(tq_client *c, const tq_meta *m, tq_request **req_p);
/** tq_get_data_into, non-blocking: dst is checked against m by this call. */
TQ_EXPORT int tq_get_data_into_nb(tq_client *c, const tq_meta *m, tq_batch *dst,
                                  tq_request **req_p);
TQ_EXPORT int tq_put_nb(tq_client *c, const char *partition, const tq_batch *b,
                        const int64_t *indexes, int64_t *indexes_out, tq_request **req_p);
/** Wait up to timeout_ms (-1: forever) for r. @return its status, or TQ_ERR_TIMEOUT while in flight. */
TQ_EXPORT int tq_request_wait(tq_request *r, int timeout_ms);
/** @return TQ_OK or the request's error once complete; TQ_ERR_TIMEOUT while in flight. */
TQ_EXPORT int tq_request_test(tq_request *r);
/** The batch a completed get produced (the caller owns it), or NULL. */
TQ_EXPORT tq_batch *tq_request_take_batch(tq_request *r);
/** The meta a completed get_meta produced (the caller frees it with tq_meta_free),
 * or NULL. A meta never taken is freed with the request, its rows given back. */
TQ_EXPORT tq_meta *tq_request_take_meta(tq_request *r);
/** The entries a completed kv_list produced (free with tq_kv_entries_free), or NULL. */
TQ_EXPORT tq_kv_entries *tq_request_take_entries(tq_request *r);
/** @return the count a call completed with (tq_kv_clear_nb: the keys removed);
 *          0 while in flight, after an error, and for calls without one. */
TQ_EXPORT int64_t tq_request_result(tq_request *r);
/**
 * A file descriptor that becomes readable when @p r completes and stays so,
 * for event loops (asyncio's add_reader): poll it, do not read it. Made on the
 * first call (the same one after), owned by r: closed by tq_request_free.
 * @return the fd; TQ_ERR_INVALID for NULL; TQ_ERR_IO when none can be made.
 */
TQ_EXPORT int tq_request_fd(tq_request *r);
/** Wait for r to complete if it has not, then free it, with what was not taken
 * (a meta's rows go back to their task: free such a request before tq_close).
 * NULL is ignored. */
TQ_EXPORT void tq_request_free(tq_request *r);

/* ---- streaming ---- */

/**
 * Open a stream of batches for args->task. Each tq_stream_next returns the
 * next batch as soon as enough rows are ready, while the stream already
 * fetches and reads the following ones (args->prefetch of them). For the
 * rank_aware and seqlen_balanced samplers the stream numbers its batches:
 * sampler_args' batch_index is where it starts (default 0).
 * @return TQ_OK; TQ_ERR_INVALID as tq_get_meta.
 */
TQ_EXPORT int tq_stream_open(tq_client *c, const tq_fetch_args_t *args, tq_stream **stream_p);
/**
 * The next batch and its meta (free both). Waits up to args->timeout_ms.
 * @return TQ_OK; TQ_ERR_END once the partition is sealed and the task has
 *         consumed every row (lost rows are not waited for); TQ_ERR_TIMEOUT;
 *         other errors of tq_get_meta/get_data, each once: the stream goes on
 *         after any of them (a batch whose read failed goes back to the task and
 *         comes again), and only TQ_ERR_END ends it.
 */
TQ_EXPORT int tq_stream_next(tq_stream *s, tq_batch **batch_p, tq_meta **meta_p);
/** Close the stream; rows it fetched ahead but never returned go back to the task
 * (so do they if the process dies). */
TQ_EXPORT void tq_stream_close(tq_stream *s);
/**
 * No more rows will come to the partition (created if new): puts of new rows
 * are refused, and consumers that have seen every row get TQ_ERR_END.
 */
TQ_EXPORT int tq_partition_seal(tq_client *c, const char *partition);

/* ---- status ---- */

/**
 * Which rows have every one of the fields produced.
 * @param [out] produced_p  one byte per row index (1: live and every field
 *                          produced; 2: live, but a field was lost with its
 *                          storage unit: never offered again), to free with free().
 * @return the number of row indexes the partition has used (0 when unknown), or an error.
 */
TQ_EXPORT int tq_production_status(tq_client *c, const char *partition, size_t num_fields,
                                   const char *const *fields, uint8_t **produced_p);
/**
 * Which rows task has consumed.
 * @param [out] consumed_p  one byte per row index (1: consumed, or in flight to
 *                          a consumer), to free with free().
 * @return the number of row indexes, or an error.
 */
TQ_EXPORT int tq_consumption_status(tq_client *c, const char *partition, const char *task,
                                    uint8_t **consumed_p);

/** Use of one storage unit, as the controller sees it. */
typedef struct {
    uint32_t id;
    uint32_t incarnation;
    uint64_t capacity;   /**< bytes in its pool */
    uint64_t used;       /**< bytes allocated, committed or not */
    int      alive;
    char     transports[64]; /**< the transports it serves, comma-separated */
} tq_unit_info_t;

/**
 * List the storage units the controller knows.
 * @param [out] units_p  an array to free with free(), written only on success.
 * @return the number of units, or an error.
 */
TQ_EXPORT int tq_units(tq_client *c, tq_unit_info_t **units_p);

/**
 * Rows, fields and tasks of one partition (NULL: every partition), as a JSON
 * array of {"partition", "sealed", "rows", "fields": {name: rows produced},
 * "tasks": {name: {"consumed", "ready"}}}; ready rows have every field
 * produced and are not consumed by the task.
 * @param [out] json_p  text to free with free(), written only on success.
 * @return TQ_OK, TQ_ERR_NOT_FOUND for an unknown partition, or an error.
 */
TQ_EXPORT int tq_partitions(tq_client *c, const char *partition, char **json_p);

#ifdef __cplusplus
}
#endif
#endif /* TQ_TQ_H */
