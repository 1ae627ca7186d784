/* client.h: the inside of a tq_client, shared by client.c, kv.c and request.c. */
#ifndef TQ_CLIENT_H
#define TQ_CLIENT_H

#include <pthread.h>
#include <stdbool.h>

#include "batch.h"
#include "bufpool.h"
#include "ctrl_conn.h"
#include "embedded.h"
#include "tq/transport.h"
#include "tq/tq.h"
#include "wire.h"

#define TQ_MAX_IDLE_CONNS 16
#define TQ_MAX_LANES      8

/* A storage unit as one lane sees it: endpoint and region are made on first
 * use and kept (the endpoint and unpacked-region caches). */
typedef struct {
    uint32_t             id;
    bool                 alive;
    void                *address, *region_blob;
    uint32_t             address_len, region_len;
    tq_transport_ep     *ep;
    tq_transport_region *region;
    bool                 used; /* posted to since the last flush */
} tq__unit_t;

/* A lane: one transport instance with its own endpoints. An operation holds a
 * lane while it moves bytes, so operations on different lanes (threads,
 * non-blocking requests) move bytes at the same time. */
typedef struct {
    tq_transport *tr;
    tq__unit_t   *units;
    uint32_t      num_units;
    uint64_t      epoch;  /* the controller epoch the unit table came from */
} tq__lane_t;

typedef struct tq__workers tq__workers;

/* A RELEASE waiting for a connection: the meta and the controller epoch it is of. */
typedef struct {
    uint64_t id, epoch;
} tq__release_t;

struct tq_client {
    char                   *target;
    char                   *token;
    int                     timeout_ms;
    tq__embedded           *embedded;
    const tq_transport_ops *ops;
    tq__bufpool            *recv;     /* columns that gets read into */

    pthread_mutex_t         lock;     /* idle conns, lanes, workers */
    pthread_cond_t          lane_freed;
    tq_ctrl_conn           *idle[TQ_MAX_IDLE_CONNS];
    unsigned                num_idle;
    tq__lane_t             *lanes[TQ_MAX_LANES]; /* every lane built, for freeing */
    unsigned                num_lanes, building, max_lanes;
    tq__lane_t             *free_lanes[TQ_MAX_LANES];
    unsigned                num_free_lanes;
    tq__workers            *workers;  /* run non-blocking requests; made on first use */
    /* random, sent in every connection's HELLO: the controller lets only this
     * client's connections release its metas or cancel its waits */
    uint8_t                 session[TQ_WIRE_SESSION_LEN];
    tq__release_t          *releases; /* metas freed while no connection was idle */
    unsigned                num_releases, cap_releases;
};

/* A GET_META or KV_GET answer: rows, schema and where each column lives. */
typedef struct {
    char             *name;
    tq_field_kind_t   kind;
    tq_dtype_t        dtype;
    uint32_t          ndim;
    int64_t           row_shape[TQ_MAX_NDIM];
    char              format[TQ_MAX_FORMAT + 1]; /* its label in the schema, "" for none */
    int64_t          *shapes;    /* rows x ndim */
    uint64_t         *row_bytes;
    uint64_t          bytes;
    tq_wire_extent_t *runs;
    uint32_t          num_runs;
    uint8_t          *present;   /* rows bytes, 0 where the cell is absent; NULL: none is */
} tq__meta_field_t;

/* Does row i of f have its cell (a FORCE fetch or a meta of rows may lack some)? */
static inline bool tq__meta_cell_present(const tq__meta_field_t *f, uint32_t i)
{
    return f->present == NULL || f->present[i] != 0;
}
/* TQ_OK when every row of f has its cell; else TQ_ERR_NOT_FOUND naming the first
 * row that lacks it: nothing of such a meta field can be read. */
int tq__meta_field_complete(const tq_client *c, const tq_meta *m, const tq__meta_field_t *f);

struct tq_meta {
    tq_client        *client;
    char             *partition;        /* the rows' */
    uint64_t          id;
    uint64_t          epoch;            /* of the controller that answered it */
    uint64_t          trusted_until_ms; /* its rows stay pinned at least until then */
    uint32_t          rows;
    int64_t          *indexes;
    uint16_t          num_fields;
    tq__meta_field_t *fields;
    /* the last read failed: freeing gives the rows back to their task, which
     * has not got them (consumption is final only once the bytes are here) */
    bool              read_failed;
    char            **keys;   /* per row: its key or NULL; NULL when no row has one */
    char            **custom; /* per row: its custom meta or NULL ("{}"); NULL when none has */
};

/* How a put names its rows (tq_wire_rows_t) and, for keys, their tags. */
typedef struct {
    uint8_t            mode;
    const int64_t     *indexes;
    const char *const *keys;
    const char *const *tags;
} tq__rows_t;

/* Record this thread's last error on c (c may be NULL) and return status. */
int tq__set_error(const tq_client *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* TQ_OK for a name of 1 to TQ_WIRE_NAME_MAX bytes (a C string has no NUL
 * inside); else TQ_ERR_INVALID, the error on c naming the argument (what,
 * printf-style: "partition", "key 3") and what is wrong with it. */
int tq__check_name(const tq_client *c, const char *name, const char *what, ...)
    __attribute__((format(printf, 3, 4)));

/* TQ_OK for 1 to TQ_WIRE_MAX_ROWS row indexes, none negative; else
 * TQ_ERR_INVALID, the error on c naming the first bad one. */
int tq__check_indexes(const tq_client *c, size_t n, const int64_t *indexes);

/* A control connection for one call (idle or new), and giving it back (it
 * first sends the RELEASEs waiting in the client, without waiting). */
int  tq__conn_acquire(tq_client *c, tq_ctrl_conn **cc_p);
void tq__conn_release(tq_client *c, tq_ctrl_conn *cc);

/* This thread's calls end by deadline_ms (0: none), whatever their own
 * timeouts: a non-blocking request's timeout counts from its submission. */
void tq__deadline_set(uint64_t deadline_ms);
/* timeout_ms (-1: none) cut to what is left before this thread's deadline. */
int  tq__timeout_left(int timeout_ms);
/* One request/reply on a connection; on error the detail goes to tq_last_error. */
int  tq__call(tq_client *c, tq_ctrl_conn *cc, size_t offset, int timeout_ms, tq_rbuf *reply_p);

/* One control call with a prepared body whose answer is empty (answer_p
 * NULL) or one u32. */
int  tq__simple_call(tq_client *c, uint16_t type, const tq_wbuf *body, uint32_t *answer_p);

/* Put `rows` rows: the fields of b (NULL: none, keyed puts only) to the rows
 * named by spec, in one ALLOC and one COMMIT. With meta_p, the COMMIT's answer
 * is the meta of the rows written (tq_kv_batch_put_meta). Arguments are
 * checked by the caller. */
int tq__put(tq_client *c, const char *partition, uint32_t rows, const tq_batch *b,
            const tq__rows_t *spec, int64_t *indexes_out, tq_meta **meta_p);

/* Turn a GET_META/KV_GET reply about rows of partition into a meta; read its
 * columns into a batch; unpin and free it: its rows stay consumed by their
 * task, or (unread) go back to it, answered before this returns. */
int  tq__meta_parse(tq_client *c, const tq_ctrl_conn *cc, const char *partition, tq_rbuf *r,
                    tq_meta **meta_p);
int  tq__meta_read(tq_client *c, const tq_meta *m, tq_batch **batch_p);
void tq__meta_release(tq_meta *m, bool unread);

/* The one read path: the rows of m, for the fields of dst, by one-sided RMA
 * straight into dst's memory (tq__meta_read allocates a batch, then reads into
 * it). tq__meta_check_into first: TQ_OK when dst fits m (tq_get_data_into's
 * rules), else TQ_ERR_INVALID naming the field and what differs. */
int  tq__meta_check_into(tq_client *c, const tq_meta *m, const tq_batch *dst);
int  tq__meta_read_into(tq_client *c, const tq_meta *m, tq_batch *dst);
/* The field of m of that name, or NULL. */
const tq__meta_field_t *tq__meta_find(const tq_meta *m, const char *name);
/* Check tq_get_data's arguments (the meta is c's and has rows). */
int  tq__check_get_data(tq_client *c, const tq_meta *m);
/* tq_get_data(_into) once checked: the read, and whether it delivered noted in m. */
int  tq__get_data(tq_client *c, const tq_meta *m, tq_batch **batch_p);
int  tq__get_data_into(tq_client *c, const tq_meta *m, tq_batch *dst);

/* GET_META on a given connection (a stream's own); args checked by the caller. */
int tq__get_meta_on(tq_client *c, tq_ctrl_conn *cc, const tq_fetch_args_t *args, tq_meta **meta_p);
/* Check fetch arguments as tq_get_meta does. */
int tq__check_fetch(tq_client *c, const tq_fetch_args_t *args);
/* tq_get_meta once checked, on a connection of its own. */
int tq__get_meta(tq_client *c, const tq_fetch_args_t *args, tq_meta **meta_p);
/* Check tq_put's arguments. */
int tq__check_put(tq_client *c, const char *partition, const tq_batch *b, const int64_t *indexes);

/* Stop and free the threads of non-blocking requests (request.c). */
void tq__workers_stop(tq__workers *w);

#endif
