/* wire.h: the binary control protocol between clients, storage units and the controller. */
#ifndef TQ_WIRE_H
#define TQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tq/tq.h"

/*
 * Frame: a 24-byte header then a body, every integer little-endian.
 *   u32 magic | u8 version | u8 flags | u16 type | u64 request id | u32 body length | u32 zero
 * A reply carries the request's type and id with TQ_WIRE_FLAG_REPLY; its body
 * starts with an i32 status, then a message string on error or the type's
 * answer on success. Strings are u16 length + bytes, blobs u32 length + bytes,
 * arrays a count given elsewhere + fixed-size elements.
 *
 * Decoding never trusts the peer: a reader cursor checks every length against
 * what is left before it reads, and once anything is short it stays failed.
 * Decoded strings, blobs and arrays point into the frame, so they live as long
 * as the frame's buffer.
 */
#define TQ_WIRE_MAGIC        0x44525154u /* "TQRD" */
#define TQ_WIRE_VERSION      5 /* 3: format labels; 4: fetch modes, absent cells; 5: rows'
                                   keys and custom meta in metas, key <-> index */
#define TQ_WIRE_HEADER_SIZE  24
#define TQ_WIRE_MAX_BODY     (64u << 20)
#define TQ_WIRE_FLAG_REPLY   0x01
#define TQ_WIRE_NAME_MAX     255   /* partitions, fields, tasks, transports */
#define TQ_WIRE_MAX_TRANSPORTS 8
#define TQ_WIRE_MAX_FIELDS   256   /* fields per request */
#define TQ_WIRE_MAX_ROWS     (1u << 20) /* rows per request */
#define TQ_WIRE_FORMAT_MAX   15    /* a field's format label: 0..15 bytes of [a-z0-9_.-] */

typedef enum {
    TQ_MSG_HELLO = 1,         /* first message of every connection */
    TQ_MSG_REGISTER_UNIT,     /* storage unit: capacity and transport blobs */
    TQ_MSG_HEARTBEAT,         /* storage unit, no reply */
    TQ_MSG_UNITS,             /* list storage units and their blobs */
    TQ_MSG_ALLOC,             /* put phase 1 */
    TQ_MSG_COMMIT,            /* put phase 3 */
    TQ_MSG_ABORT,             /* give up an allocation */
    TQ_MSG_GET_META,          /* pick, consume and pin ready rows */
    TQ_MSG_RELEASE,           /* unpin a meta, no reply */
    TQ_MSG_CLEAR,
    TQ_MSG_CLEAR_PARTITION,
    TQ_MSG_RESET_CONSUMPTION,
    TQ_MSG_KV_GET,            /* pin the rows of keys (no consumption) */
    TQ_MSG_KV_LIST,           /* keys and tags */
    TQ_MSG_KV_CLEAR,          /* remove keys */
    TQ_MSG_SEAL,              /* no more rows will come to a partition */
    TQ_MSG_RELEASE_UNREAD,    /* unpin a meta and give its rows back to its task */
    TQ_MSG_PRODUCTION_STATUS, /* per row: every named field produced */
    TQ_MSG_CONSUMPTION_STATUS,/* per row: consumed by a task */
    TQ_MSG_CANCEL,            /* a connection (by id) stops waiting for rows */
    TQ_MSG_UNIT_LEAVE,        /* storage unit: shutting down in order, no reply */
    TQ_MSG_PARTITIONS,        /* rows, fields and tasks of partitions */
    TQ_MSG_PING,              /* empty; answered at once, even while a request is parked */
    TQ_MSG_GET_META_ROWS,     /* pin given rows (no consumption) */
    TQ_MSG_SET_CUSTOM_META,   /* replace the custom meta of rows */
    TQ_MSG_KV_INDEXES,        /* keys -> row indexes, maybe making rows for new keys */
    TQ_MSG_KV_KEYS,           /* row indexes -> keys */
    TQ_MSG_COMMIT_META,       /* COMMIT, answered with the meta of the rows written */
    TQ_MSG_TYPE_MAX
} tq_msg_type_t;

typedef enum { TQ_ROLE_CLIENT = 1, TQ_ROLE_STORAGE = 2 } tq_wire_role_t;

typedef struct {
    uint32_t magic;
    uint8_t  version;
    uint8_t  flags;
    uint16_t type;
    uint64_t request_id;
    uint32_t body_len;
} tq_wire_header_t;

typedef struct { const char *ptr; uint16_t len; } tq_str_t;
typedef struct { const uint8_t *ptr; uint32_t len; } tq_blob_t;
typedef struct { const uint8_t *ptr; uint32_t count; } tq_array_t; /* of 8-byte integers */

/* Arrays travel as their memory image, so hosts must be little-endian (every
 * RDMA host we target is); scalar fields are encoded byte by byte. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "tqrdma needs a little-endian host");
static inline tq_array_t tq_array_of(const void *v, uint32_t count)
{
    return (tq_array_t){(const uint8_t *)v, count};
}

/* ---- cursors ---- */

/* A growing output buffer; a failed allocation makes it failed, and stays so. */
typedef struct {
    uint8_t *data;
    size_t   len, cap;
    bool     failed;
} tq_wbuf;

typedef struct {
    const uint8_t *p, *end;
    bool failed;
} tq_rbuf;

void tq_wbuf_init(tq_wbuf *w);
void tq_wbuf_free(tq_wbuf *w);
void tq_wbuf_reset(tq_wbuf *w);
/* Drop the first n bytes (sent). */
void tq_wbuf_consume(tq_wbuf *w, size_t n);
void tq_wire_put_u8(tq_wbuf *w, uint8_t v);
void tq_wire_put_u16(tq_wbuf *w, uint16_t v);
void tq_wire_put_u32(tq_wbuf *w, uint32_t v);
void tq_wire_put_u64(tq_wbuf *w, uint64_t v);
void tq_wire_put_bytes(tq_wbuf *w, const void *p, size_t n);
void tq_wire_put_str(tq_wbuf *w, const char *s, size_t len); /* len capped by the caller */
void tq_wire_put_cstr(tq_wbuf *w, const char *s);            /* NULL puts "" */
void tq_wire_put_blob(tq_wbuf *w, const void *p, uint32_t len);

static inline tq_rbuf tq_rbuf_make(const void *p, size_t n)
{
    return (tq_rbuf){(const uint8_t *)p, (const uint8_t *)p + n, false};
}
uint8_t    tq_wire_get_u8(tq_rbuf *r);
uint16_t   tq_wire_get_u16(tq_rbuf *r);
uint32_t   tq_wire_get_u32(tq_rbuf *r);
uint64_t   tq_wire_get_u64(tq_rbuf *r);
tq_str_t   tq_wire_get_str(tq_rbuf *r);
tq_blob_t  tq_wire_get_blob(tq_rbuf *r);
tq_array_t tq_wire_get_array(tq_rbuf *r, uint64_t count); /* count x 8 bytes */
/* True when the whole body was read and nothing was short. */
static inline bool tq_rbuf_done(const tq_rbuf *r) { return !r->failed && r->p == r->end; }

static inline uint64_t tq_array_u64(tq_array_t a, uint32_t i)
{
    const uint8_t *p = a.ptr + (size_t)i * 8;
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = (v << 8) | p[b];
    return v;
}
static inline int64_t tq_array_i64(tq_array_t a, uint32_t i) { return (int64_t)tq_array_u64(a, i); }
void tq_wire_put_array(tq_wbuf *w, const uint64_t *v, size_t count);

/* True when s equals the C string c. */
bool tq_str_eq(tq_str_t s, const char *c);
/* A malloc'd NUL-terminated copy, or NULL. */
char *tq_str_dup(tq_str_t s);
/* A name: 1..TQ_WIRE_NAME_MAX bytes with no NUL inside. */
bool tq_str_is_name(tq_str_t s);
/* A format label: 0..TQ_WIRE_FORMAT_MAX bytes of [a-z0-9_.-] ("" is none). */
bool tq_str_is_format(tq_str_t s);

/* ---- frames ---- */

/* Start a frame; returns its offset in w, for tq_wire_end. */
size_t tq_wire_begin(tq_wbuf *w, uint16_t type, uint8_t flags, uint64_t request_id);
/* Patch the body length of the frame begun at offset. */
void   tq_wire_end(tq_wbuf *w, size_t offset);
/* Start a reply; status != TQ_OK also writes message and ends it. */
size_t tq_wire_begin_reply(tq_wbuf *w, uint16_t type, uint64_t request_id, int status,
                           const char *message);

/* Parse a header from at least TQ_WIRE_HEADER_SIZE bytes: TQ_OK, or
 * TQ_ERR_PROTOCOL for a bad magic, version, type or a body over the limit. */
int tq_wire_parse_header(const uint8_t *p, tq_wire_header_t *h_p);

/* ---- messages ---- */

/* A client's session: TQ_WIRE_SESSION_LEN random bytes it sends on every one
 * of its connections, so the controller knows them for one owner (metas and
 * waits belong to the client, not to the connection they came by). */
#define TQ_WIRE_SESSION_LEN 16

typedef struct {
    uint8_t        role;
    tq_str_t       token;
    const uint8_t *session; /* TQ_WIRE_SESSION_LEN bytes, or NULL: the connection is its own */
} tq_msg_hello_t;
/* HELLO: role, token, then the session's bytes or nothing. Its answer: the
 * connection's id, which CANCEL names, and the controller's epoch, drawn at
 * random when it starts. Unit ids and every other id the controller hands out
 * mean something only within one epoch: a client that meets a new epoch drops
 * whatever it cached under the old one. */
typedef struct {
    uint64_t conn_id;
    uint64_t epoch;
} tq_msg_hello_reply_t;

typedef struct {
    tq_str_t  name;
    tq_blob_t address;
    tq_blob_t region;
} tq_wire_transport_t;

typedef struct {
    uint64_t            capacity;
    uint8_t             num_transports;
    tq_wire_transport_t transports[TQ_WIRE_MAX_TRANSPORTS];
} tq_msg_register_t;

typedef struct {
    uint32_t unit_id;
    uint32_t incarnation;
} tq_msg_register_reply_t;

/* UNITS reply: u32 count, then count units. */
typedef struct {
    uint32_t            id, incarnation;
    uint8_t             alive;
    uint64_t            capacity, used;
    uint8_t             num_transports;
    tq_wire_transport_t transports[TQ_WIRE_MAX_TRANSPORTS];
} tq_wire_unit_t;

/* One field of an ALLOC request. The shape section depends on the kind:
 * tensor: row_shape[ndim]; nested: shapes[rows*ndim]; bytes: lengths[rows].
 * format is the label a binding gave the field's encoding ("" for none),
 * between ndim and the shape section. */
typedef struct {
    tq_str_t   name;
    uint8_t    kind, dtype, ndim;
    tq_array_t dims;   /* row_shape, shapes or lengths as above */
    tq_str_t   format; /* on the wire before dims */
} tq_wire_field_t;

/* How an ALLOC names its rows. */
typedef enum {
    TQ_ROWS_NEW = 0,     /* new rows, lowest free indexes first */
    TQ_ROWS_INDEXES = 1, /* the given indexes */
    TQ_ROWS_KEYS = 2,    /* keys: rows * (key string, tag blob) follow */
} tq_wire_rows_t;

/* ALLOC request: the fixed part, then (TQ_ROWS_KEYS) rows keys with their
 * tags (tq_wire_decode_key), then num_fields tq_wire_field_t. Only a keyed
 * ALLOC may have no field (it writes tags only, and commits at once). */
typedef struct {
    tq_str_t   partition;
    uint32_t   rows;
    uint8_t    row_mode;
    tq_array_t indexes; /* rows entries for TQ_ROWS_INDEXES */
    uint16_t   num_fields;
    uint32_t   wait_ms;   /* pools full: wait this long for room before TQ_ERR_NOSPACE */
    uint32_t   commit_ms; /* the caller gives up this long after sending: no COMMIT
                             is accepted later than this after the ALLOC arrived */
} tq_msg_alloc_t;

/* Where one run of a column lives: length bytes at offset of unit's pool. */
typedef struct {
    uint32_t unit;
    uint64_t offset;
    uint64_t length;
} tq_wire_extent_t;
#define TQ_WIRE_NO_UNIT   UINT32_MAX       /* an empty extent */
#define TQ_WIRE_LOST_UNIT (UINT32_MAX - 1) /* bytes on a unit that died: unreadable */

/* ALLOC reply: the fixed part, then num_fields tq_wire_extent_t, one per field. */
typedef struct {
    uint64_t   alloc_id;
    uint32_t   lease_ms;  /* the allocation is dropped this long after the reply */
    uint32_t   commit_ms; /* a COMMIT arriving later than this after the reply is refused */
    uint32_t   rows;
    tq_array_t indexes;
    uint16_t   num_fields;
} tq_msg_alloc_reply_t;

/* COMMIT, ABORT, RELEASE: one id. */
typedef struct {
    uint64_t id;
} tq_msg_id_t;

/* GET_META request: fields are num_fields strings that follow; mode (a
 * TQ_FETCH_* value) ends it. Only a READY fetch names a task ("" otherwise
 * allowed); only an INSERT names no field. */
typedef struct {
    tq_str_t  partition, task;
    uint16_t  num_fields;
    tq_str_t  fields[TQ_WIRE_MAX_FIELDS];
    uint32_t  batch_size;
    tq_str_t  sampler;
    tq_blob_t sampler_args;
    int32_t   timeout_ms;
    uint8_t   mode;
} tq_msg_get_meta_t;

/* GET_META reply: the fixed part, then num_fields of: tq_wire_meta_field_t
 * followed by its num_runs tq_wire_extent_t. A meta field's cells may be
 * absent on some rows (a FORCE fetch, a meta of given rows): then a u8 1 and
 * one byte per row follow row_bytes (1: the cell exists, 0: it was never
 * produced, and has no bytes); else a u8 0.
 * After the fields, a u8 of TQ_WIRE_ROWS_* bits says what else follows, per
 * row, in this order: the row's key (a string, "" for none), then its custom
 * meta (a blob of JSON object text, "" for none). */
#define TQ_WIRE_ROWS_KEYS   0x01
#define TQ_WIRE_ROWS_CUSTOM 0x02
typedef struct {
    uint64_t   meta_id;
    uint32_t   lease_ms; /* the rows are unpinned this long after the reply */
    uint32_t   rows;
    tq_array_t indexes;
    uint16_t   num_fields;
} tq_msg_get_meta_reply_t;

typedef struct {
    tq_str_t   name;
    uint8_t    kind, dtype, ndim;
    tq_array_t row_shape;  /* tensor: ndim entries */
    tq_array_t shapes;     /* nested: rows*ndim entries */
    tq_array_t row_bytes;  /* rows entries */
    uint32_t   num_runs;
    tq_str_t   format;     /* the field's format label, "" for none; on the wire after ndim */
    tq_blob_t  present;    /* rows bytes of 0 or 1; NULL (len 0): every cell exists */
} tq_wire_meta_field_t;

/* GET_META_ROWS request: rows of a partition by index, then num_fields names
 * (0: every field all the rows have). Reply: as GET_META. */
typedef struct {
    tq_str_t   partition;
    uint32_t   count;
    tq_array_t indexes;
    uint16_t   num_fields;
    tq_str_t   fields[TQ_WIRE_MAX_FIELDS];
} tq_msg_meta_rows_t;

/* SET_CUSTOM_META request: partition, count, count indexes, then count
 * custom metas (tq_wire_decode_custom; "" removes one). Reply: empty. */
typedef struct {
    tq_str_t   partition;
    uint32_t   count;
    tq_array_t indexes;
} tq_msg_set_custom_t;

/* CLEAR request; reply: u32 removed. */
typedef struct {
    tq_str_t   partition;
    uint32_t   count;
    tq_array_t indexes;
} tq_msg_clear_t;

/* CLEAR_PARTITION and RESET_CONSUMPTION (task "" meaning every task). */
typedef struct {
    tq_str_t partition;
    tq_str_t task;
} tq_msg_partition_t;

/* KV_GET request: the fixed part, then count keys (tq_wire_decode_name).
 * num_fields 0 asks for every field the keys share. Reply: as GET_META. */
typedef struct {
    tq_str_t partition;
    uint32_t count;
    uint16_t num_fields;
    tq_str_t fields[TQ_WIRE_MAX_FIELDS];
} tq_msg_kv_get_t;

/* KV_CLEAR request: partition, u32 count, then count keys. Reply: u32 removed.
 * KV_LIST request: tq_msg_kv_list_t. Reply: u32 count, count
 * tq_wire_kv_entry_t, then the cursor of the next page (a string, "" when
 * the listing is complete).
 * PARTITIONS request: a partition filter. Reply: a blob of JSON, an array of
 * {"partition", "sealed", "rows", "lost", "fields": {name: produced},
 *  "tasks": {name: {"consumed", "ready", "in_flight"}}}. */
typedef struct {
    tq_str_t partition;
    uint32_t count;
} tq_msg_kv_keys_t;

/* KV_INDEXES request: partition, u8 create (0 or 1), u32 count (>= 1), then
 * count keys (tq_wire_decode_name). Reply: count i64 row indexes, -1 for a
 * key that has none. KV_KEYS request: as CLEAR (count >= 1). Reply: count
 * keys (tq_wire_decode_row_key: "" for a row without one). */
typedef struct {
    tq_str_t partition;
    uint8_t  create;
    uint32_t count;
} tq_msg_kv_indexes_t;

typedef struct {
    tq_str_t  partition, key;
    tq_blob_t tag; /* JSON object text */
} tq_wire_kv_entry_t;

/* One page of a key listing. A cursor is text the controller made (no NUL),
 * opaque to clients. */
#define TQ_WIRE_CURSOR_MAX 512
typedef struct {
    tq_str_t partition; /* "" for every partition */
    tq_str_t cursor;    /* "" from the first key, else the cursor a page gave */
    uint32_t limit;     /* most entries in the page; 0: as many as fit */
} tq_msg_kv_list_t;

/* PRODUCTION_STATUS (fields) and CONSUMPTION_STATUS (task). Reply: a blob of
 * one byte per row index. */
typedef struct {
    tq_str_t partition;
    tq_str_t task;       /* "" for production */
    uint16_t num_fields; /* 0 for consumption */
    tq_str_t fields[TQ_WIRE_MAX_FIELDS];
} tq_msg_status_t;

/* Encoders append to w (inside a frame begun by the caller); decoders read from
 * r and return TQ_OK or TQ_ERR_PROTOCOL, checking every length and name. */
void tq_wire_encode_hello(tq_wbuf *w, const tq_msg_hello_t *m);
int  tq_wire_decode_hello(tq_rbuf *r, tq_msg_hello_t *m);
void tq_wire_encode_hello_reply(tq_wbuf *w, const tq_msg_hello_reply_t *m);
int  tq_wire_decode_hello_reply(tq_rbuf *r, tq_msg_hello_reply_t *m);
void tq_wire_encode_register(tq_wbuf *w, const tq_msg_register_t *m);
int  tq_wire_decode_register(tq_rbuf *r, tq_msg_register_t *m);
void tq_wire_encode_register_reply(tq_wbuf *w, const tq_msg_register_reply_t *m);
int  tq_wire_decode_register_reply(tq_rbuf *r, tq_msg_register_reply_t *m);
void tq_wire_encode_unit(tq_wbuf *w, const tq_wire_unit_t *m);
int  tq_wire_decode_unit(tq_rbuf *r, tq_wire_unit_t *m);
void tq_wire_encode_alloc(tq_wbuf *w, const tq_msg_alloc_t *m);
int  tq_wire_decode_alloc(tq_rbuf *r, tq_msg_alloc_t *m);
void tq_wire_encode_field(tq_wbuf *w, const tq_wire_field_t *m);
int  tq_wire_decode_field(tq_rbuf *r, uint32_t rows, tq_wire_field_t *m);
void tq_wire_encode_extent(tq_wbuf *w, const tq_wire_extent_t *m);
int  tq_wire_decode_extent(tq_rbuf *r, tq_wire_extent_t *m);
void tq_wire_encode_alloc_reply(tq_wbuf *w, const tq_msg_alloc_reply_t *m);
int  tq_wire_decode_alloc_reply(tq_rbuf *r, tq_msg_alloc_reply_t *m);
void tq_wire_encode_id(tq_wbuf *w, const tq_msg_id_t *m);
int  tq_wire_decode_id(tq_rbuf *r, tq_msg_id_t *m);
void tq_wire_encode_get_meta(tq_wbuf *w, const tq_msg_get_meta_t *m);
int  tq_wire_decode_get_meta(tq_rbuf *r, tq_msg_get_meta_t *m);
void tq_wire_encode_get_meta_reply(tq_wbuf *w, const tq_msg_get_meta_reply_t *m);
int  tq_wire_decode_get_meta_reply(tq_rbuf *r, tq_msg_get_meta_reply_t *m);
void tq_wire_encode_meta_field(tq_wbuf *w, const tq_wire_meta_field_t *m);
int  tq_wire_decode_meta_field(tq_rbuf *r, uint32_t rows, tq_wire_meta_field_t *m);
void tq_wire_encode_meta_rows(tq_wbuf *w, const tq_msg_meta_rows_t *m);
int  tq_wire_decode_meta_rows(tq_rbuf *r, tq_msg_meta_rows_t *m);
void tq_wire_encode_set_custom(tq_wbuf *w, const tq_msg_set_custom_t *m);
int  tq_wire_decode_set_custom(tq_rbuf *r, tq_msg_set_custom_t *m);
/* A row's custom meta: a blob of at most TQ_MAX_CUSTOM_META bytes with no NUL
 * ("" for none); its JSON is the reader's to check. */
void tq_wire_encode_custom(tq_wbuf *w, const void *text, uint32_t len);
int  tq_wire_decode_custom(tq_rbuf *r, tq_blob_t *custom);
/* What follows a meta's fields (TQ_WIRE_ROWS_* bits); and a row's key there
 * (a name, or "" for none). */
void tq_wire_encode_rows_info(tq_wbuf *w, uint8_t what);
int  tq_wire_decode_rows_info(tq_rbuf *r, uint8_t *what);
void tq_wire_encode_row_key(tq_wbuf *w, tq_str_t key);
int  tq_wire_decode_row_key(tq_rbuf *r, tq_str_t *key);
void tq_wire_encode_clear(tq_wbuf *w, const tq_msg_clear_t *m);
int  tq_wire_decode_clear(tq_rbuf *r, tq_msg_clear_t *m);
void tq_wire_encode_partition(tq_wbuf *w, const tq_msg_partition_t *m);
int  tq_wire_decode_partition(tq_rbuf *r, tq_msg_partition_t *m);
/* A name (partition, field, key): 1..TQ_WIRE_NAME_MAX bytes, no NUL. */
void tq_wire_encode_name(tq_wbuf *w, const char *name);
int  tq_wire_decode_name(tq_rbuf *r, tq_str_t *name);
/* A key of a keyed ALLOC and its tag (empty: none). */
void tq_wire_encode_key(tq_wbuf *w, const char *key, const char *tag_json);
int  tq_wire_decode_key(tq_rbuf *r, tq_str_t *key, tq_blob_t *tag);
void tq_wire_encode_kv_get(tq_wbuf *w, const tq_msg_kv_get_t *m);
int  tq_wire_decode_kv_get(tq_rbuf *r, tq_msg_kv_get_t *m);
void tq_wire_encode_kv_indexes(tq_wbuf *w, const tq_msg_kv_indexes_t *m);
int  tq_wire_decode_kv_indexes(tq_rbuf *r, tq_msg_kv_indexes_t *m);
void tq_wire_encode_kv_keys(tq_wbuf *w, const tq_msg_kv_keys_t *m);
int  tq_wire_decode_kv_keys(tq_rbuf *r, tq_msg_kv_keys_t *m);
/* A partition's name, or "" for every partition. */
void tq_wire_encode_partition_filter(tq_wbuf *w, const char *partition /* NULL: all */);
int  tq_wire_decode_partition_filter(tq_rbuf *r, tq_str_t *partition);
void tq_wire_encode_status(tq_wbuf *w, const tq_msg_status_t *m);
int  tq_wire_decode_status(tq_rbuf *r, tq_msg_status_t *m);
void tq_wire_encode_kv_entry(tq_wbuf *w, const tq_wire_kv_entry_t *m);
int  tq_wire_decode_kv_entry(tq_rbuf *r, tq_wire_kv_entry_t *m);
void tq_wire_encode_kv_list(tq_wbuf *w, const tq_msg_kv_list_t *m);
int  tq_wire_decode_kv_list(tq_rbuf *r, tq_msg_kv_list_t *m);
/* A cursor: up to TQ_WIRE_CURSOR_MAX bytes, no NUL; "" allowed. */
void tq_wire_encode_cursor(tq_wbuf *w, tq_str_t cursor);
int  tq_wire_decode_cursor(tq_rbuf *r, tq_str_t *cursor);

/* "f32", "bytes", ...; "unknown" for a value no dtype has (status.c). */
const char *tq__dtype_name(tq_dtype_t dtype);

#endif
