/* internal.h: the controller's state, and the calls its modules share. */
#ifndef TQ_CONTROLLER_INTERNAL_H
#define TQ_CONTROLLER_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "controller/controller.h"
#include "controller/partition.h"
#include "pool.h"
#include "util/hashmap.h"
#include "util/list.h"
#include "util/u64map.h"
#include "wire.h"

/*
 * controller.c runs the event loop, the connections, the storage units and the
 * partition administration; put.c the two-phase put (ALLOC, COMMIT, ABORT);
 * fetch.c GET_META with its samplers, parked requests, and the metas (pins and
 * claims) of client sessions; kv.c the key-value requests. Everything runs on
 * the loop's one thread.
 */
#define MAX_UNIT_CAPACITY (1ULL << 48)

typedef struct {
    char    *name;
    void    *address, *region;
    uint32_t address_len, region_len;
} unit_transport_t;

/* A storage unit. Kept after death, so extents in its pool stay valid to unref. */
typedef struct tq_unit {
    tq_list          link;
    uint32_t         id, incarnation;
    uint64_t         capacity;
    tq_pool         *pool;
    bool             alive;
    struct conn     *conn;
    uint64_t         last_heartbeat_ms;
    uint8_t          num_transports;
    unit_transport_t transports[TQ_WIRE_MAX_TRANSPORTS];
} tq_unit;

/* Counters for /metrics (metrics.c). */
#define TQ_METRICS_BUCKETS  19 /* latency bounds, 10 us to 10 s; one more slot past them */
#define TQ_METRICS_STATUSES 16 /* -status of every tq_status_t */
typedef struct {
    uint64_t answered[TQ_MSG_TYPE_MAX][TQ_METRICS_STATUSES];
    uint64_t latency[TQ_MSG_TYPE_MAX][TQ_METRICS_BUCKETS + 1];
    double   latency_sum[TQ_MSG_TYPE_MAX];
    uint64_t bytes_allocated, bytes_committed;
} tq_metrics_t;

/*
 * A client as the controller knows it: the connections whose HELLO named one
 * session (or a single connection that named none). Metas are the session's:
 * only its own connections release them or cancel its waits, through any of
 * them, and when its last connection closes (the client died, or closed), the
 * rows of every meta it still holds go back to their task.
 */
typedef struct tq_session {
    char     key[2 * TQ_WIRE_SESSION_LEN + 1]; /* the secret in hex (ctl->sessions' key), or "" */
    unsigned conns;
    tq_list  metas;                            /* meta_t.session_link */
} tq_session_t;

typedef struct conn {
    tq_list        link;
    tq_list        flush_link;   /* in ctl->to_flush while it has output */
    tq_controller *ctl;
    int            fd;
    uint8_t       *in;
    size_t         in_len, in_cap;
    tq_wbuf        out;
    bool           greeted;      /* HELLO accepted */
    bool           closing;      /* close once output is flushed */
    bool           epollout;
    uint64_t       sent;         /* bytes sent over the connection's life */
    uint64_t       id;
    bool           no_park;      /* cancelled: answer GET_META now, never wait */
    uint8_t        role;
    tq_unit       *unit;
    tq_list        allocs;       /* alloc_t.conn_link */
    tq_session_t  *session;      /* from HELLO on: the client it belongs to */
    uint64_t       hello_due_ms; /* closed if not greeted by then (a scrape: if not done) */
    uint64_t       close_due_ms; /* closing: closed by then even with output unsent; 0: unset */
    bool           http;         /* a metrics scrape (metrics.c), not the wire protocol */
    bool           peer_gone;    /* the peer closed its end: it awaits no answer */
} conn_t;

/* A field's share of a pending put: its extent and the cells it will become. */
typedef struct {
    char           *name;
    tq_field_kind_t kind;
    tq_dtype_t      dtype;
    uint32_t        ndim;
    int64_t         row_shape[TQ_MAX_NDIM];
    char            format[TQ_MAX_FORMAT + 1]; /* "" for none */
    tq_extent      *ext;
    tq_cell_t      *cells;
} alloc_field_t;

typedef struct {
    tq_list         conn_link, part_link;
    uint64_t        id;
    tq_partition_t *part;        /* NULL once the partition was cleared */
    uint32_t        rows;
    int64_t        *indexes;     /* rows reserved for this put */
    char          **keys;        /* keyed put: rows keys, else NULL */
    cJSON         **tags;        /* keyed put: a tag object or NULL per key */
    uint16_t        num_fields;
    alloc_field_t  *fields;
    uint64_t        lease_end_ms; /* aborted then if not committed */
    uint64_t        commit_by_ms; /* a COMMIT later than this is refused: the client gave up */
} alloc_t;

/* Rows handed out by GET_META or KV_GET, to a session: their extents stay
 * pinned until RELEASE or the lease's end, and the rows a GET_META consumed
 * are in flight (its claim) until RELEASE (delivered) or RELEASE_UNREAD, or
 * the session's end (not delivered: they go back to their task). */
typedef struct {
    tq_list       session_link;
    tq_list       lease_link;     /* in ctl->leases while pinned: lease order */
    tq_session_t *session;
    conn_t       *conn;           /* its answer goes out there; NULL once that closed */
    uint64_t      id;
    uint32_t      num_pins;
    tq_extent   **pins;
    tq_claim_t    claim;          /* nothing claimed for KV_GET, or a kept batch's replicas */
    uint64_t      reply_end;      /* its answer is sent once conn->sent reaches this */
    uint64_t      lease_end_ms;   /* unpinned then if not released */
} meta_t;

/* A request that waits, its body kept to be tried again: a GET_META for rows,
 * or an ALLOC for room in the pools. */
typedef struct {
    tq_list   link;
    conn_t   *conn;
    uint16_t  type;              /* TQ_MSG_GET_META or TQ_MSG_ALLOC */
    uint64_t  request_id;
    uint8_t  *body;
    uint32_t  body_len;
    uint64_t  deadline_ms;       /* UINT64_MAX: none */
    uint64_t  received_ns;       /* when it arrived: its latency runs from then */
    char     *partition;         /* GET_META: whose commits may satisfy it */
} parked_t;

struct tq_controller {
    int      epfd, listen_fd, stop_fd, metrics_fd;
    int      spare_fd;           /* /dev/null, given up to shed a connection when out of fds */
    uint64_t accept_paused_until_ms; /* out of fds with no spare: listeners off until then */
    char     address[80], metrics_address[80];
    char    *token;
    int      heartbeat_timeout_ms;
    uint32_t lease_ms;
    unsigned max_connections, num_connections, max_partitions, num_partitions;
    uint64_t epoch;              /* random, per start: ids mean something only within it */
    unsigned metrics_timeout_ms;
    size_t   metrics_last_len;   /* of the last /metrics body: what the next will cost */
    uint64_t next_id;
    uint32_t next_unit_id;
    uint64_t last_partition_seq; /* partitions in creation order, for listing cursors */
    uint64_t free_seen;          /* pool bytes free when parked allocs were last tried */
    tq_meta_budget_t meta_budget; /* all partitions' per-row arrays */
    tq_list  conns, to_flush, units, partitions, parked;
    tq_list  leases;             /* meta_t.lease_link of pinned metas, oldest first */
    tq_u64map  *metas;           /* id -> meta_t */
    tq_u64map  *greeted;         /* id -> conn_t, the connections past HELLO (CANCEL names them) */
    tq_hashmap *sessions;        /* key -> tq_session_t, of sessions that have a secret */
    tq_metrics_t metrics;
    uint64_t request_start_ns;   /* arrival of the request being answered */
};

/* ---- controller.c ---- */

/* "alloc", "get_meta", ...: for logs and metrics. */
const char *tq__msg_name(uint16_t type);

/* Queue an error reply (flushed before the loop sleeps). */
void tq__reply_error(conn_t *c, const tq_wire_header_t *h, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Begin a success reply; the caller writes the body and calls tq__reply_end,
 * which answers with an error instead when the reply could not be built
 * (over the frame limit, out of memory). @return true when it goes as built. */
size_t tq__reply_begin(conn_t *c, const tq_wire_header_t *h);
bool   tq__reply_end(conn_t *c, size_t offset);
void   tq__reply_ok(conn_t *c, const tq_wire_header_t *h);
/* Hand c's queued replies to the kernel now, not before the loop sleeps: once
 * a change is visible its answer must not wait behind other work. */
void   tq__reply_send_now(conn_t *c);

bool     tq__units_alive(const tq_controller *ctl);
/* Could a live unit ever hold size bytes (once enough is freed)? */
bool     tq__unit_could_fit(const tq_controller *ctl, uint64_t size);
/* The live unit with the largest free range that fits `size`, or NULL. */
tq_unit *tq__unit_pick(tq_controller *ctl, uint64_t size);

tq_partition_t *tq__find_partition(tq_controller *ctl, const char *name);
/* A new partition, within the limit on how many there may be. @return NULL
 * with *status_p TQ_ERR_INVALID (the limit) or TQ_ERR_NOMEM, and *why_p. */
tq_partition_t *tq__partition_add(tq_controller *ctl, const char *name, int *status_p,
                                  const char **why_p);
void            tq__partition_remove(tq_controller *ctl, tq_partition_t *p);
tq_partition_t *tq__find_partition_str(tq_controller *ctl, tq_str_t name);
/* The partition of a request about count live rows (indexes), or NULL once a
 * NOT_FOUND naming the partition or the first row that is not live was answered. */
tq_partition_t *tq__live_rows_partition(conn_t *c, const tq_wire_header_t *h, tq_str_t partition,
                                        tq_array_t indexes, uint32_t count);
/* Copy a decoded name into a NUL-terminated buffer of TQ_WIRE_NAME_MAX + 1. */
const char *tq__name_cstr(tq_str_t s, char *buf);

/* ---- put.c ---- */

void tq__handle_alloc(conn_t *c, const tq_wire_header_t *h, const uint8_t *body);
/* Pools gained room: try the parked ALLOCs again, oldest first. */
void tq__retry_parked_allocs(tq_controller *ctl);
void tq__handle_commit(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
/* Answer with a meta of n rows and every field they all have, pinned, consuming nothing. */
void tq__reply_rows_meta(conn_t *c, const tq_wire_header_t *h, tq_partition_t *p,
                         const int64_t *rows, uint32_t n);
void tq__handle_abort(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
/* Give up a pending put: rows it reserved become free again. */
void tq__alloc_abort(alloc_t *a);

/* ---- fetch.c ---- */

void tq__handle_get_meta(conn_t *c, const tq_wire_header_t *h, const uint8_t *body);
void tq__handle_get_meta_rows(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_release(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_release_unread(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_cancel(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
/* A commit, a seal or rows given back may satisfy parked requests. */
void tq__wake_parked(tq_controller *ctl, const char *partition);
/* A greeted connection joins its session (secret NULL: one of its own).
 * @return TQ_OK, or TQ_ERR_NOMEM. */
int  tq__session_join(conn_t *c, const uint8_t *secret);
/* A connection closes: metas whose answer it never sent go back; the last
 * connection of a session ends it, and every meta it holds goes back. */
void tq__session_leave(conn_t *c);
/* Unit u died: its cells are lost (parked requests may see an end now). */
void tq__unit_lost(tq_controller *ctl, const struct tq_unit *u);
/* A meta of c's session for up to max_pins pins, registered under a new id.
 * NULL when out of memory. */
meta_t *tq__meta_new(conn_t *c, size_t max_pins);
/* Write a GET_META-shaped answer for rows of p (their fields, keys and custom
 * meta) and pin their cells under meta.
 * @return TQ_OK, or an error: an error reply went instead (too large, out
 * of memory) and the caller disposes of meta. */
int     tq__reply_meta(conn_t *c, const tq_wire_header_t *h, const tq_partition_t *p,
                       tq_field_t *const *fields, uint16_t nf, const int64_t *rows, uint32_t n,
                       meta_t *meta);
/* Keep request h (its body) to try again until timeout_ms passes (< 0: never);
 * partition (owned by the parked request) is what a GET_META waits on.
 * @return TQ_OK, or TQ_ERR_NOMEM (partition freed). */
int     tq__park(conn_t *c, const tq_wire_header_t *h, const uint8_t *body, int64_t timeout_ms,
                 char *partition);
/* Settle m's claim (rows not delivered go back to their task, waking
 * requests that wait for them), unpin and free it. */
void    tq__meta_free(tq_controller *ctl, meta_t *m, bool delivered);
/* Unpin metas whose lease ran out (their claims wait for the client's word);
 * returns the earlier of next and the next lease's end. */
uint64_t tq__leases_expire(tq_controller *ctl, uint64_t now, uint64_t next);
void    tq__parked_free(parked_t *pk);

/* Answering a parked request: its latency runs from its arrival. */
static inline void tq__parked_resume(parked_t *pk) { pk->conn->ctl->request_start_ns = pk->received_ns; }

/* ---- metrics.c ---- */

/* Count an answer to a request of type, timed from ctl->request_start_ns. */
void tq__metrics_answered(tq_controller *ctl, uint16_t type, int status);
/* Serve the HTTP request in c's input: /metrics, or an error; then close. */
void tq__metrics_http(conn_t *c);

/* ---- kv.c ---- */

void tq__handle_kv_get(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_kv_list(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_kv_clear(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_set_custom_meta(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_kv_indexes(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);
void tq__handle_kv_keys(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r);

#endif
