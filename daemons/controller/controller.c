/* controller.c: one epoll loop that tracks units, allocations, production and consumption. */
#define TQ_LOG_COMPONENT "controller"
#include "controller/controller.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "controller/partition.h"
#include "controller/sampler.h"
#include "pool.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/hashmap.h"
#include "util/list.h"
#include "util/log.h"
#include "wire.h"

#define POOL_ALIGN          64            /* cache-line aligned columns */
#define READ_CHUNK          (64u << 10)
#define MAX_OUTPUT          (256u << 20)  /* a peer that reads nothing is dropped */
#define MAX_UNIT_CAPACITY   (1ULL << 48)

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
    tq_list        metas;        /* meta_t.conn_link */
} conn_t;

/* A field's share of a pending put: its extent and the cells it will become. */
typedef struct {
    char           *name;
    tq_field_kind_t kind;
    tq_dtype_t      dtype;
    uint32_t        ndim;
    int64_t         row_shape[TQ_MAX_NDIM];
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
} alloc_t;

/* Rows handed out by GET_META: their extents stay pinned until RELEASE. A
 * consumer that never read them (RELEASE_UNREAD) gives the rows back to task. */
typedef struct {
    tq_list     conn_link;
    uint64_t    id;
    uint32_t    num_pins;
    tq_extent **pins;
    char       *partition, *task; /* NULL for KV_GET */
    int64_t    *rows;
    uint32_t    num_rows;
    uint64_t    reply_end;        /* its answer is sent once conn->sent reaches this */
} meta_t;

/* A GET_META that waits for rows: its body is kept to be tried again. */
typedef struct {
    tq_list   link;
    conn_t   *conn;
    uint64_t  request_id;
    uint8_t  *body;
    uint32_t  body_len;
    uint64_t  deadline_ms;       /* UINT64_MAX: none */
    char     *partition;
} parked_t;

struct tq_controller {
    int      epfd, listen_fd, stop_fd;
    char     address[80];
    char    *token;
    int      heartbeat_timeout_ms;
    uint64_t next_id;
    uint32_t next_unit_id;
    tq_list  conns, to_flush, units, partitions, parked;
};

static const char *const msg_names[TQ_MSG_TYPE_MAX] = {
    [TQ_MSG_HELLO] = "hello", [TQ_MSG_REGISTER_UNIT] = "register",
    [TQ_MSG_HEARTBEAT] = "heartbeat", [TQ_MSG_UNITS] = "units", [TQ_MSG_ALLOC] = "alloc",
    [TQ_MSG_COMMIT] = "commit", [TQ_MSG_ABORT] = "abort", [TQ_MSG_GET_META] = "get_meta",
    [TQ_MSG_RELEASE] = "release", [TQ_MSG_CLEAR] = "clear",
    [TQ_MSG_CLEAR_PARTITION] = "clear_partition", [TQ_MSG_RESET_CONSUMPTION] = "reset_consumption",
    [TQ_MSG_KV_GET] = "kv_get", [TQ_MSG_KV_LIST] = "kv_list", [TQ_MSG_KV_CLEAR] = "kv_clear",
    [TQ_MSG_SEAL] = "seal", [TQ_MSG_RELEASE_UNREAD] = "release_unread",
    [TQ_MSG_PRODUCTION_STATUS] = "production_status",
    [TQ_MSG_CONSUMPTION_STATUS] = "consumption_status", [TQ_MSG_CANCEL] = "cancel",
};

/* ---- replies ---- */

static void conn_want_flush(conn_t *c)
{
    if (c->flush_link.next == &c->flush_link)
        tq_list_insert_tail(&c->ctl->to_flush, &c->flush_link);
}

static void reply_error(conn_t *c, const tq_wire_header_t *h, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_error(conn_t *c, const tq_wire_header_t *h, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tq_debug("%s from fd %d: %s: %s", msg_names[h->type], c->fd, tq_status_string(status), msg);
    tq_wire_begin_reply(&c->out, h->type, h->request_id, status, msg);
    conn_want_flush(c);
}

/* Begin a success reply; the caller writes the body and calls reply_end. */
static size_t reply_begin(conn_t *c, const tq_wire_header_t *h)
{
    return tq_wire_begin_reply(&c->out, h->type, h->request_id, TQ_OK, NULL);
}

static void reply_end(conn_t *c, size_t offset)
{
    tq_wire_end(&c->out, offset);
    conn_want_flush(c);
}

static void reply_ok(conn_t *c, const tq_wire_header_t *h) { reply_end(c, reply_begin(c, h)); }

/* ---- units ---- */

static void unit_mark_dead(tq_unit *u, const char *why)
{
    if (!u->alive)
        return;
    u->alive = false;
    if (u->conn != NULL)
        u->conn->unit = NULL;
    u->conn = NULL;
    tq_warn("storage unit %u (incarnation %u) is dead: %s", u->id, u->incarnation, why);
}

static bool units_alive(const tq_controller *ctl)
{
    const tq_list *pos;
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next)
        if (tq_list_entry(pos, tq_unit, link)->alive)
            return true;
    return false;
}

/* The live unit with the largest free range that fits `size`, or NULL. */
static tq_unit *unit_pick(tq_controller *ctl, uint64_t size)
{
    tq_unit *best = NULL;
    uint64_t best_free = 0;
    tq_list *pos;
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
        tq_unit *u = tq_list_entry(pos, tq_unit, link);
        if (!u->alive)
            continue;
        uint64_t largest = tq_pool_largest_free(u->pool);
        if (largest >= size && largest > best_free) {
            best = u;
            best_free = largest;
        }
    }
    return best;
}

/* ---- partitions ---- */

static tq_partition_t *partition_find(tq_controller *ctl, const char *name)
{
    tq_list *pos;
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

static tq_partition_t *partition_find_str(tq_controller *ctl, tq_str_t name)
{
    char buf[TQ_WIRE_NAME_MAX + 1];
    memcpy(buf, name.ptr, name.len);
    buf[name.len] = '\0';
    return partition_find(ctl, buf);
}

/* Copy a decoded name into a NUL-terminated buffer of TQ_WIRE_NAME_MAX + 1. */
static const char *name_cstr(tq_str_t s, char *buf)
{
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    return buf;
}

/* ---- allocations ---- */

static void alloc_free(alloc_t *a)
{
    tq_list_remove(&a->conn_link);
    tq_list_remove(&a->part_link);
    for (uint16_t i = 0; i < a->num_fields; i++) {
        tq__extent_unref(a->fields[i].ext);
        free(a->fields[i].name);
        free(a->fields[i].cells);
    }
    for (uint32_t i = 0; a->keys != NULL && i < a->rows; i++) {
        free(a->keys[i]);
        cJSON_Delete(a->tags[i]);
    }
    free(a->keys);
    free(a->tags);
    free(a->fields);
    free(a->indexes);
    free(a);
}

/* Give up a pending put: rows it reserved become free again. */
static void alloc_abort(alloc_t *a)
{
    if (a->part != NULL)
        tq__partition_unreserve(a->part, a->rows, a->indexes);
    alloc_free(a);
}

static alloc_t *alloc_find(conn_t *c, uint64_t id)
{
    tq_list *pos;
    for (pos = c->allocs.next; pos != &c->allocs; pos = pos->next) {
        alloc_t *a = tq_list_entry(pos, alloc_t, conn_link);
        if (a->id == id)
            return a;
    }
    return NULL;
}

static void meta_free(meta_t *m);
static void wake_parked(tq_controller *ctl, const char *partition);

/* Unpin the rows of a meta nobody read and make them ready for its task again. */
static void meta_give_back(tq_controller *ctl, meta_t *m)
{
    tq_partition_t *p = m->partition ? partition_find(ctl, m->partition) : NULL;
    tq_task_t *t = p ? tq__partition_task(p, m->task, false) : NULL;
    for (uint32_t i = 0; t != NULL && i < m->num_rows; i++)
        if ((uint64_t)m->rows[i] < p->num_slots)
            t->consumed[m->rows[i]] = 0;
    meta_free(m);
    if (t != NULL)
        wake_parked(ctl, p->name);
}

static void meta_free(meta_t *m)
{
    tq_list_remove(&m->conn_link);
    for (uint32_t i = 0; i < m->num_pins; i++)
        tq__extent_unref(m->pins[i]);
    free(m->pins);
    free(m->partition);
    free(m->task);
    free(m->rows);
    free(m);
}

static void parked_free(parked_t *pk)
{
    tq_list_remove(&pk->link);
    free(pk->body);
    free(pk->partition);
    free(pk);
}

/* ---- handlers ---- */

static bool token_equal(const char *expected, tq_str_t given)
{
    /* constant time in the token's content; the length is not a secret */
    size_t n = strlen(expected);
    unsigned char diff = (unsigned char)(n != given.len);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)(i < given.len ? given.ptr[i] : 0);
    return diff == 0;
}

static void handle_hello(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_hello_t m;
    if (tq_wire_decode_hello(r, &m) != TQ_OK || !tq_rbuf_done(r)) {
        reply_error(c, h, TQ_ERR_PROTOCOL, "malformed hello");
        c->closing = true;
        return;
    }
    if (c->ctl->token != NULL && !token_equal(c->ctl->token, m.token)) {
        tq_warn("rejected connection fd %d: wrong token", c->fd);
        reply_error(c, h, TQ_ERR_AUTH, "wrong or missing token");
        c->closing = true;
        return;
    }
    c->greeted = true;
    c->role = m.role;
    size_t off = reply_begin(c, h);
    tq_wire_encode_id(&c->out, &(tq_msg_id_t){c->id});
    reply_end(c, off);
}

static void handle_register(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_controller *ctl = c->ctl;
    tq_msg_register_t m;
    if (tq_wire_decode_register(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed register");
    if (c->role != TQ_ROLE_STORAGE || c->unit != NULL)
        return reply_error(c, h, TQ_ERR_INVALID, "only a storage connection registers, once");
    if (m.capacity < POOL_ALIGN || m.capacity > MAX_UNIT_CAPACITY || m.num_transports == 0)
        return reply_error(c, h, TQ_ERR_INVALID, "bad capacity %llu or no transport",
                           (unsigned long long)m.capacity);
    tq_unit *u = calloc(1, sizeof(*u));
    if (u == NULL || tq_pool_create(m.capacity, POOL_ALIGN, &u->pool) != TQ_OK)
        goto err_nomem;
    for (uint8_t i = 0; i < m.num_transports; i++) {
        unit_transport_t *t = &u->transports[i];
        tq_wire_transport_t *w = &m.transports[i];
        t->name = tq_str_dup(w->name);
        t->address = malloc(w->address.len + 1u);
        t->region = malloc(w->region.len + 1u);
        u->num_transports = i + 1;
        if (t->name == NULL || t->address == NULL || t->region == NULL)
            goto err_nomem;
        memcpy(t->address, w->address.ptr, w->address.len);
        memcpy(t->region, w->region.ptr, w->region.len);
        t->address_len = w->address.len;
        t->region_len = w->region.len;
    }
    u->id = ++ctl->next_unit_id;
    u->incarnation = u->id; /* every registration is a new incarnation */
    u->capacity = tq_pool_capacity(u->pool);
    u->alive = true;
    u->conn = c;
    u->last_heartbeat_ms = tq__now_ms();
    c->unit = u;
    tq_list_insert_tail(&ctl->units, &u->link);
    tq_info("storage unit %u registered: %llu bytes, %u transport(s)", u->id,
            (unsigned long long)u->capacity, u->num_transports);
    size_t off = reply_begin(c, h);
    tq_wire_encode_register_reply(&c->out, &(tq_msg_register_reply_t){u->id, u->incarnation});
    reply_end(c, off);
    return;

err_nomem:
    if (u != NULL) {
        for (uint8_t i = 0; i < u->num_transports; i++) {
            free(u->transports[i].name);
            free(u->transports[i].address);
            free(u->transports[i].region);
        }
        tq_pool_destroy(u->pool);
        free(u);
    }
    reply_error(c, h, TQ_ERR_NOMEM, "out of memory registering a unit");
}

static void handle_units(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    if (!tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed units request");
    uint32_t n = 0;
    tq_list *pos;
    for (pos = c->ctl->units.next; pos != &c->ctl->units; pos = pos->next)
        n++;
    size_t off = reply_begin(c, h);
    tq_wire_put_u32(&c->out, n);
    for (pos = c->ctl->units.next; pos != &c->ctl->units; pos = pos->next) {
        tq_unit *u = tq_list_entry(pos, tq_unit, link);
        tq_wire_unit_t w = {
            .id = u->id, .incarnation = u->incarnation, .alive = u->alive,
            .capacity = u->capacity, .used = tq_pool_used(u->pool),
            .num_transports = u->num_transports,
        };
        for (uint8_t i = 0; i < u->num_transports; i++) {
            unit_transport_t *t = &u->transports[i];
            w.transports[i] = (tq_wire_transport_t){
                {t->name, (uint16_t)strlen(t->name)},
                {t->address, t->address_len},
                {t->region, t->region_len},
            };
        }
        tq_wire_encode_unit(&c->out, &w);
    }
    reply_end(c, off);
}

/* Bytes of one element, the product of dims, or fail on a negative or overflowing shape. */
static bool shape_bytes(tq_dtype_t dtype, uint32_t ndim, const int64_t *dims, uint64_t *bytes_p)
{
    uint64_t n = tq_dtype_size(dtype);
    for (uint32_t d = 0; d < ndim; d++) {
        if (dims[d] < 0 || (dims[d] > 0 && n > UINT64_MAX / (uint64_t)dims[d]))
            return false;
        n *= (uint64_t)dims[d];
    }
    *bytes_p = n;
    return true;
}

/* Turn one decoded field of an ALLOC into cells with offsets in a column of
 * *total_p bytes. Returns a message on bad input. */
static const char *alloc_field_prepare(alloc_field_t *af, const tq_wire_field_t *w, uint32_t rows,
                                       uint64_t *total_p)
{
    af->kind = w->kind;
    af->dtype = w->dtype;
    af->ndim = w->ndim;
    af->cells = calloc(rows, sizeof(tq_cell_t));
    if (af->cells == NULL)
        return "out of memory";
    uint64_t total = 0, row_bytes = 0;
    if (w->kind == TQ_FIELD_TENSOR) {
        for (uint32_t d = 0; d < w->ndim; d++)
            af->row_shape[d] = tq_array_i64(w->dims, d);
        if (!shape_bytes(af->dtype, af->ndim, af->row_shape, &row_bytes))
            return "bad tensor shape";
    }
    for (uint32_t i = 0; i < rows; i++) {
        tq_cell_t *cell = &af->cells[i];
        if (w->kind == TQ_FIELD_TENSOR) {
            memcpy(cell->shape, af->row_shape, sizeof(cell->shape));
            cell->length = row_bytes;
        } else if (w->kind == TQ_FIELD_NESTED) {
            for (uint32_t d = 0; d < w->ndim; d++)
                cell->shape[d] = tq_array_i64(w->dims, i * w->ndim + d);
            if (!shape_bytes(af->dtype, af->ndim, cell->shape, &cell->length))
                return "bad nested shape";
        } else {
            cell->length = tq_array_u64(w->dims, i);
        }
        cell->offset = total; /* relative until the extent is placed */
        if (cell->length > MAX_UNIT_CAPACITY || total + cell->length > MAX_UNIT_CAPACITY)
            return "field too large";
        total += cell->length;
    }
    *total_p = total;
    return NULL;
}

/* A field that exists keeps its dtype and number of dimensions, and bytes
 * stay bytes; only the shape of a row may change (tensor becomes nested). */
static const char *schema_conflict(const tq_field_t *f, const alloc_field_t *af)
{
    if (f == NULL)
        return NULL;
    if (f->dtype != af->dtype)
        return "dtype conflicts with the field's";
    if ((f->kind == TQ_FIELD_BYTES) != (af->kind == TQ_FIELD_BYTES))
        return "kind conflicts with the field's";
    if (f->ndim != af->ndim)
        return "number of dimensions conflicts with the field's";
    return NULL;
}

static void wake_parked(tq_controller *ctl, const char *partition);
static int  alloc_commit(tq_controller *ctl, alloc_t *a, const char **why);

/* Read the keys and tags of a keyed ALLOC into a. Returns a message on bad input. */
static const char *alloc_read_keys(alloc_t *a, tq_rbuf *r, int *status_p)
{
    a->keys = calloc(a->rows, sizeof(char *));
    a->tags = calloc(a->rows, sizeof(cJSON *));
    tq_hashmap *seen = tq_hashmap_create();
    const char *why = NULL;
    *status_p = TQ_ERR_NOMEM;
    if (a->keys == NULL || a->tags == NULL || seen == NULL) {
        why = "out of memory";
        goto out;
    }
    for (uint32_t i = 0; i < a->rows && why == NULL; i++) {
        tq_str_t key;
        tq_blob_t tag;
        if (tq_wire_decode_key(r, &key, &tag) != TQ_OK) {
            *status_p = TQ_ERR_PROTOCOL, why = "malformed key";
        } else if ((a->keys[i] = tq_str_dup(key)) == NULL) {
            why = "out of memory";
        } else if (tq_hashmap_get(seen, a->keys[i]) != NULL) {
            *status_p = TQ_ERR_INVALID, why = "a key is given twice";
        } else if (tq_hashmap_put(seen, a->keys[i], a->keys[i]) != 0) {
            why = "out of memory";
        } else if (tag.len > 0) {
            /* cJSON rejects trailing bytes only in NUL-terminated text */
            char *text = malloc((size_t)tag.len + 1);
            if (text == NULL) {
                why = "out of memory";
                break;
            }
            memcpy(text, tag.ptr, tag.len);
            text[tag.len] = '\0';
            a->tags[i] = cJSON_ParseWithOpts(text, NULL, 1);
            free(text);
            if (!cJSON_IsObject(a->tags[i]))
                *status_p = TQ_ERR_INVALID, why = "a tag is not a JSON object";
        }
    }
out:
    tq_hashmap_destroy(seen);
    return why;
}

/* A sealed partition takes no new row: only overwrites of live rows and
 * updates of existing keys. */
static const char *sealed_refuses(const tq_partition_t *p, const tq_msg_alloc_t *m, const alloc_t *a)
{
    for (uint32_t i = 0; i < m->rows; i++) {
        if (m->row_mode == TQ_ROWS_NEW)
            return "the partition is sealed: no new rows";
        if (m->row_mode == TQ_ROWS_KEYS && tq__partition_key(p, a->keys[i]) == NULL)
            return "the partition is sealed: no new keys";
        int64_t r = tq_array_i64(m->indexes, i);
        if (m->row_mode == TQ_ROWS_INDEXES &&
            (r < 0 || (uint64_t)r >= p->num_slots || p->state[r] != TQ_ROW_LIVE))
            return "the partition is sealed: only live rows may be written";
    }
    return NULL;
}

static void handle_alloc(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_controller *ctl = c->ctl;
    tq_msg_alloc_t m;
    if (tq_wire_decode_alloc(r, &m) != TQ_OK)
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed alloc");

    alloc_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    tq_list_init(&a->conn_link);
    tq_list_init(&a->part_link);
    a->rows = m.rows;
    a->indexes = malloc((size_t)m.rows * sizeof(int64_t));
    a->fields = calloc(m.num_fields ? m.num_fields : 1, sizeof(alloc_field_t));
    int status = TQ_ERR_NOMEM;
    const char *why = "out of memory";
    tq_partition_t *p = NULL;
    bool created = false, reserved = false;
    if (a->indexes == NULL || a->fields == NULL)
        goto err;
    a->num_fields = m.num_fields;
    if (m.row_mode == TQ_ROWS_KEYS && (why = alloc_read_keys(a, r, &status)) != NULL)
        goto err;

    char pname[TQ_WIRE_NAME_MAX + 1];
    memcpy(pname, m.partition.ptr, m.partition.len);
    pname[m.partition.len] = '\0';
    p = partition_find(ctl, pname);

    uint64_t totals[TQ_WIRE_MAX_FIELDS];
    for (uint16_t i = 0; i < m.num_fields; i++) {
        tq_wire_field_t w;
        if (tq_wire_decode_field(r, m.rows, &w) != TQ_OK) {
            status = TQ_ERR_PROTOCOL, why = "malformed field";
            goto err;
        }
        alloc_field_t *af = &a->fields[i];
        af->name = tq_str_dup(w.name);
        if (af->name == NULL) {
            status = TQ_ERR_NOMEM, why = "out of memory";
            goto err;
        }
        for (uint16_t j = 0; j < i; j++)
            if (strcmp(a->fields[j].name, af->name) == 0) {
                status = TQ_ERR_INVALID, why = "a field is named twice";
                goto err;
            }
        why = alloc_field_prepare(af, &w, m.rows, &totals[i]);
        if (why != NULL) {
            status = af->cells ? TQ_ERR_INVALID : TQ_ERR_NOMEM;
            goto err;
        }
        why = p ? schema_conflict(tq__partition_field(p, af->name), af) : NULL;
        if (why != NULL) {
            status = TQ_ERR_INVALID;
            goto err;
        }
    }
    if (!tq_rbuf_done(r)) {
        status = TQ_ERR_PROTOCOL, why = "trailing bytes in alloc";
        goto err;
    }

    if (p != NULL && p->sealed && (why = sealed_refuses(p, &m, a)) != NULL) {
        status = TQ_ERR_INVALID;
        goto err;
    }
    if (p == NULL) {
        status = TQ_ERR_NOMEM, why = "out of memory";
        if ((p = tq__partition_create(pname)) == NULL)
            goto err;
        tq_list_insert_tail(&ctl->partitions, &p->link);
        created = true;
    }
    if (m.row_mode == TQ_ROWS_INDEXES) {
        memcpy(a->indexes, m.indexes.ptr, (size_t)m.rows * 8);
        status = tq__partition_reserve(p, m.rows, a->indexes);
        why = "an index is negative, too large or repeated";
    } else {
        /* keyed rows get fresh rows too: commit binds each key to its row then,
         * so a key cleared or created meanwhile cannot take someone else's row */
        status = tq__partition_reserve_new(p, m.rows, a->indexes);
        why = "too many rows";
    }
    if (status != TQ_OK)
        goto err;
    reserved = true;

    for (uint16_t i = 0; i < m.num_fields; i++) {
        if (totals[i] == 0)
            continue;
        alloc_field_t *af = &a->fields[i];
        tq_unit *u = unit_pick(ctl, totals[i]);
        tq_pool_block *block;
        if (u == NULL || tq_pool_alloc(u->pool, totals[i], &block) != TQ_OK) {
            status = TQ_ERR_NOSPACE;
            why = units_alive(ctl) ? "no storage unit has room for a field" : "no live storage unit";
            goto err;
        }
        af->ext = calloc(1, sizeof(tq_extent));
        if (af->ext == NULL) {
            tq_pool_free(u->pool, block);
            status = TQ_ERR_NOMEM, why = "out of memory";
            goto err;
        }
        *af->ext = (tq_extent){u, u->pool, block, tq_pool_block_offset(block), totals[i], 1};
        for (uint32_t k = 0; k < m.rows; k++)
            af->cells[k].offset += af->ext->offset;
    }

    a->id = ++ctl->next_id;
    a->part = p;
    tq_list_insert_tail(&c->allocs, &a->conn_link);
    tq_list_insert_tail(&p->allocs, &a->part_link);

    if (a->num_fields == 0) { /* tags only: nothing to write, so commit now */
        status = alloc_commit(ctl, a, &why);
        if (status != TQ_OK)
            return reply_error(c, h, status, "%s", why);
        size_t off = reply_begin(c, h);
        tq_wire_encode_alloc_reply(&c->out, &(tq_msg_alloc_reply_t){0, 0, {NULL, 0}, 0});
        return reply_end(c, off);
    }
    size_t off = reply_begin(c, h);
    tq_wire_encode_alloc_reply(&c->out, &(tq_msg_alloc_reply_t){
        a->id, a->rows, tq_array_of(a->indexes, a->rows), a->num_fields});
    for (uint16_t i = 0; i < a->num_fields; i++) {
        tq_extent *e = a->fields[i].ext;
        tq_wire_extent_t x = {TQ_WIRE_NO_UNIT, 0, 0};
        if (e != NULL)
            x = (tq_wire_extent_t){e->unit->id, e->offset, e->length};
        tq_wire_encode_extent(&c->out, &x);
    }
    reply_end(c, off);
    return;

err:
    if (reserved)
        tq__partition_unreserve(p, a->rows, a->indexes);
    if (created && p->live_rows == 0 && tq_list_empty(&p->allocs)) {
        tq_list_remove(&p->link);
        tq__partition_destroy(p);
    }
    alloc_free(a);
    reply_error(c, h, status, "%s", why);
}

/* Bind the put's keys to rows: a key that exists keeps its row (and the row
 * reserved for it goes back); a new one takes its reserved row. */
static int commit_keys(tq_partition_t *p, alloc_t *a)
{
    for (uint32_t i = 0; i < a->rows; i++) {
        tq_kv_key_t *k = tq__partition_key(p, a->keys[i]);
        if (k != NULL) {
            tq__partition_unreserve(p, 1, &a->indexes[i]);
            a->indexes[i] = k->row;
        } else if ((k = tq__partition_bind_key(p, a->keys[i], a->indexes[i])) == NULL) {
            return TQ_ERR_NOMEM;
        }
        tq__partition_set_live(p, k->row);
        if (a->tags[i] != NULL && tq__kv_tag_merge(k, a->tags[i]) != 0)
            return TQ_ERR_NOMEM;
    }
    return TQ_OK;
}

/* Make a pending put visible: fields, cells, keys and tags, then free it.
 * On error the put is aborted and *why says what went wrong. */
static int alloc_commit(tq_controller *ctl, alloc_t *a, const char **why)
{
    tq_partition_t *p = a->part;
    if (p == NULL) {
        alloc_free(a);
        *why = "the partition was cleared during the put";
        return TQ_ERR_NOT_FOUND;
    }
    for (uint16_t i = 0; i < a->num_fields; i++) {
        alloc_field_t *af = &a->fields[i];
        if (af->ext != NULL && !af->ext->unit->alive) {
            alloc_abort(a);
            *why = "a storage unit died during the put";
            return TQ_ERR_LOST;
        }
        /* a concurrent put may have created the field since the ALLOC */
        if ((*why = schema_conflict(tq__partition_field(p, af->name), af)) != NULL) {
            alloc_abort(a);
            return TQ_ERR_INVALID;
        }
    }
    if (a->keys != NULL && commit_keys(p, a) != TQ_OK) {
        alloc_abort(a);
        *why = "out of memory";
        return TQ_ERR_NOMEM;
    }
    for (uint16_t i = 0; i < a->num_fields; i++) {
        alloc_field_t *af = &a->fields[i];
        tq_field_t *f = tq__partition_field(p, af->name);
        if (f == NULL) {
            f = tq__partition_add_field(p, af->name, af->kind, af->dtype, af->ndim, af->row_shape);
            if (f == NULL) {
                alloc_abort(a);
                *why = "out of memory";
                return TQ_ERR_NOMEM;
            }
        } else if (f->kind == TQ_FIELD_TENSOR &&
                   (af->kind != TQ_FIELD_TENSOR ||
                    memcmp(af->row_shape, f->row_shape, f->ndim * sizeof(int64_t)) != 0)) {
            f->kind = TQ_FIELD_NESTED; /* rows of another shape make a tensor ragged */
        }
        for (uint32_t k = 0; k < a->rows; k++) {
            tq_cell_t cell = af->cells[k];
            cell.ext = af->ext;
            if (cell.ext != NULL)
                tq__extent_ref(cell.ext);
            tq__partition_set_cell(p, f, a->indexes[k], &cell);
        }
    }
    char *name = strdup(p->name);
    alloc_free(a);
    if (name != NULL)
        wake_parked(ctl, name);
    free(name);
    return TQ_OK;
}

static void handle_commit(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed commit");
    alloc_t *a = alloc_find(c, m.id);
    if (a == NULL)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no pending allocation %llu",
                           (unsigned long long)m.id);
    const char *why = NULL;
    int rc = alloc_commit(c->ctl, a, &why);
    if (rc != TQ_OK)
        return reply_error(c, h, rc, "%s", why);
    reply_ok(c, h);
}

static void handle_abort(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed abort");
    alloc_t *a = alloc_find(c, m.id);
    if (a == NULL)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no pending allocation %llu",
                           (unsigned long long)m.id);
    alloc_abort(a);
    reply_ok(c, h);
}

/* Write the GET_META answer for rows of p and pin their cells. */
static void reply_meta(conn_t *c, const tq_wire_header_t *h, tq_partition_t *p,
                       tq_field_t *const *fields, uint16_t nf, const int64_t *rows, uint32_t n,
                       meta_t *meta)
{
    uint64_t *row_bytes = malloc((size_t)n * 8);
    int64_t *shapes = malloc((size_t)n * TQ_MAX_NDIM * 8);
    tq_wire_extent_t *runs = malloc((size_t)n * sizeof(*runs));
    if (row_bytes == NULL || shapes == NULL || runs == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t off = reply_begin(c, h);
    tq_wire_encode_get_meta_reply(&c->out, &(tq_msg_get_meta_reply_t){
        meta->id, n, tq_array_of(rows, n), nf});
    uint32_t pin = 0;
    for (uint16_t k = 0; k < nf; k++) {
        const tq_field_t *f = fields[k];
        uint32_t num_runs = 0;
        for (uint32_t i = 0; i < n; i++) {
            const tq_cell_t *cell = &f->cells[rows[i]];
            row_bytes[i] = cell->length;
            memcpy(&shapes[(size_t)i * f->ndim], cell->shape, f->ndim * sizeof(int64_t));
            if (cell->ext != NULL) {
                tq__extent_ref(cell->ext);
                meta->pins[pin++] = cell->ext;
            }
            if (cell->length == 0)
                continue;
            tq_wire_extent_t *last = num_runs ? &runs[num_runs - 1] : NULL;
            if (last != NULL && last->unit == cell->ext->unit->id &&
                last->offset + last->length == cell->offset)
                last->length += cell->length; /* adjacent cells: one read */
            else
                runs[num_runs++] = (tq_wire_extent_t){cell->ext->unit->id, cell->offset,
                                                      cell->length};
        }
        bool tensor = f->kind == TQ_FIELD_TENSOR, nested = f->kind == TQ_FIELD_NESTED;
        tq_wire_meta_field_t w = {
            .name = {f->name, (uint16_t)strlen(f->name)},
            .kind = (uint8_t)f->kind, .dtype = (uint8_t)f->dtype, .ndim = (uint8_t)f->ndim,
            .row_shape = tq_array_of(f->row_shape, tensor ? f->ndim : 0),
            .shapes = tq_array_of(shapes, nested ? n * f->ndim : 0),
            .row_bytes = tq_array_of(row_bytes, n),
            .num_runs = num_runs,
        };
        tq_wire_encode_meta_field(&c->out, &w);
        for (uint32_t i = 0; i < num_runs; i++)
            tq_wire_encode_extent(&c->out, &runs[i]);
    }
    meta->num_pins = pin;
    reply_end(c, off);
out:
    free(row_bytes);
    free(shapes);
    free(runs);
    (void)p;
}

typedef enum { META_DONE, META_WAIT } meta_outcome_t;

/* What one GET_META asks, decoded once and resolved against the partition. */
typedef struct {
    tq_msg_get_meta_t   m;
    char                sampler[TQ_WIRE_NAME_MAX + 1];
    char                task[TQ_WIRE_NAME_MAX + 1];
    char               *args;       /* NUL-terminated sampler_args, "{}" when none */
    tq_partition_t     *p;          /* NULL: not there yet */
    tq_field_t         *fields[TQ_WIRE_MAX_FIELDS];
    bool                have_fields;
    tq_task_t          *t;          /* NULL: has consumed nothing yet */
    int64_t            *ready;      /* ready rows, ascending */
    size_t              num_ready;
    bool                final;      /* sealed and nothing more can become ready */
} fetch_t;

/* Ready rows of the fetch, and whether nothing more can become ready. */
static int fetch_scan(fetch_t *f)
{
    tq_partition_t *p = f->p;
    f->num_ready = 0;
    f->final = false;
    if (p == NULL)
        return TQ_OK;
    f->ready = malloc((p->num_slots ? p->num_slots : 1) * sizeof(int64_t));
    if (f->ready == NULL)
        return TQ_ERR_NOMEM;
    uint64_t unconsumed = 0;
    bool reserved = false;
    for (uint64_t r = 0; r < p->num_slots; r++) {
        reserved |= p->state[r] == TQ_ROW_RESERVED;
        if (p->state[r] != TQ_ROW_LIVE || (f->t != NULL && f->t->consumed[r]))
            continue;
        unconsumed++;
        if (f->have_fields &&
            tq__partition_row_ready(p, f->fields, f->m.num_fields, f->t, r))
            f->ready[f->num_ready++] = (int64_t)r;
    }
    /* sealed, no new row pending, and every row the task has not seen is ready */
    f->final = p->sealed && !reserved && unconsumed == f->num_ready;
    return TQ_OK;
}

static void consume(fetch_t *f, const int64_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        f->t->consumed[rows[i]] = 1;
}

/* Answer with rows of the fetch, pinned under a new meta. */
static meta_outcome_t serve(conn_t *c, const tq_wire_header_t *h, fetch_t *f,
                            const int64_t *rows, uint32_t n)
{
    meta_t *meta = calloc(1, sizeof(*meta));
    if (meta == NULL || (meta->pins = malloc((size_t)n * f->m.num_fields * sizeof(tq_extent *) + 1)) == NULL ||
        (meta->rows = malloc((size_t)n * sizeof(int64_t) + 1)) == NULL ||
        (meta->partition = strdup(f->p->name)) == NULL || (meta->task = strdup(f->task)) == NULL) {
        if (meta != NULL) {
            free(meta->pins), free(meta->rows), free(meta->partition), free(meta->task);
        }
        free(meta);
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    memcpy(meta->rows, rows, (size_t)n * sizeof(int64_t));
    meta->num_rows = n;
    meta->id = ++c->ctl->next_id;
    tq_list_init(&meta->conn_link);
    tq_list_insert_tail(&c->metas, &meta->conn_link);
    reply_meta(c, h, f->p, f->fields, f->m.num_fields, rows, n, meta);
    meta->reply_end = c->sent + c->out.len;
    return META_DONE;
}

static meta_outcome_t reply_end_of_stream(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    reply_error(c, h, TQ_ERR_END, "partition %s is sealed and task %s has consumed every row",
                f->p->name, f->task);
    return META_DONE;
}

/* A kept batch still usable: every row still live. */
static bool kept_valid(const tq_partition_t *p, const tq_kept_t *k)
{
    for (uint32_t i = 0; i < k->num_rows; i++)
        if ((uint64_t)k->rows[i] >= p->num_slots || p->state[k->rows[i]] != TQ_ROW_LIVE)
            return false;
    return true;
}

/* Serve a kept batch to one more taker, forgetting it after the last. */
static meta_outcome_t serve_kept(conn_t *c, const tq_wire_header_t *h, fetch_t *f, tq_kept_t *k)
{
    meta_outcome_t out = serve(c, h, f, k->rows, k->num_rows);
    if (--k->takers_left == 0)
        tq__partition_unkeep(f->p, k);
    return out;
}

/* Read sampler arguments: -1 when one is missing (and required) or out of range. */
static int arg_in(const char *args, const char *name, long long lo, long long hi, long long dflt,
                  bool required, long long *v_p)
{
    long long v = dflt;
    int rc = tq__sampler_arg(args, name, &v);
    if (rc < 0 || (rc == 1 && required) || v < lo || v > hi)
        return -1;
    *v_p = v;
    return 0;
}

/* rank_aware: the first caller of (task, dp_rank, batch_index) samples; the
 * result is kept for the other dp_replicas - 1 callers of that key. */
static meta_outcome_t sample_rank_aware(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    long long rank, index, replicas;
    if (arg_in(f->args, "dp_rank", 0, INT32_MAX, 0, true, &rank) != 0 ||
        arg_in(f->args, "batch_index", 0, INT64_MAX / 2, 0, true, &index) != 0 ||
        arg_in(f->args, "dp_replicas", 1, 1 << 20, 1, false, &replicas) != 0) {
        reply_error(c, h, TQ_ERR_INVALID, "rank_aware needs integer dp_rank >= 0, "
                    "batch_index >= 0 and optional dp_replicas >= 1");
        return META_DONE;
    }
    if (f->p == NULL)
        return META_WAIT;
    char key[TQ_WIRE_NAME_MAX + 64];
    snprintf(key, sizeof(key), "rank_aware\x1f%s\x1f%lld\x1f%lld", f->task, rank, index);
    tq_kept_t *k = tq__partition_kept(f->p, key);
    if (k != NULL && kept_valid(f->p, k))
        return serve_kept(c, h, f, k);
    if (k != NULL)
        tq__partition_unkeep(f->p, k); /* its rows were cleared: sample afresh */
    if (f->num_ready < f->m.batch_size && !f->final)
        return META_WAIT;
    if (f->num_ready == 0)
        return reply_end_of_stream(c, h, f);
    uint32_t n = (uint32_t)TQ_MIN(f->num_ready, (size_t)f->m.batch_size);
    if (replicas > 1 && tq__partition_keep(f->p, key, f->ready, n, (uint32_t)replicas - 1) == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    consume(f, f->ready, n);
    return serve(c, h, f, f->ready, n);
}

/* Split groups over `parts` ranks, each rank the same number of groups, with
 * balanced sums: Karmarkar-Karp's largest differencing. Groups sorted by
 * weight go out in rounds of `parts`, one per rank; two partial solutions
 * merge by pairing the heaviest rank of one with the lightest of the other,
 * largest spread first. rank_of[g] receives each group's rank. */
typedef struct {
    double  sum[64];
    int     bucket[64]; /* bucket id per rank slot, heaviest first */
} kk_solution_t;

static int cmp_weight_desc(const void *a, const void *b, void *w)
{
    double wa = ((const double *)w)[*(const int *)a], wb = ((const double *)w)[*(const int *)b];
    return wa < wb ? 1 : wa > wb ? -1 : *(const int *)a - *(const int *)b;
}

static void kk_sort(kk_solution_t *s, int parts)
{
    for (int i = 1; i < parts; i++) /* insertion sort: parts is small */
        for (int j = i; j > 0 && s->sum[j] > s->sum[j - 1]; j--) {
            double ts = s->sum[j]; s->sum[j] = s->sum[j - 1]; s->sum[j - 1] = ts;
            int tb = s->bucket[j]; s->bucket[j] = s->bucket[j - 1]; s->bucket[j - 1] = tb;
        }
}

static int kk_partition(const double *weight, int groups, int parts, int *rank_of)
{
    int rounds = (groups + parts - 1) / parts, nb = rounds * parts;
    int *order = malloc((size_t)groups * sizeof(int) + 1);
    int *next = malloc((size_t)nb * sizeof(int)), *tail = malloc((size_t)nb * sizeof(int));
    int *member = malloc((size_t)nb * sizeof(int)); /* bucket -> its first group, -1: empty */
    kk_solution_t *sol = malloc((size_t)rounds * sizeof(*sol));
    int rc = -1;
    if (order == NULL || next == NULL || tail == NULL || member == NULL || sol == NULL)
        goto out;
    for (int g = 0; g < groups; g++)
        order[g] = g;
    qsort_r(order, (size_t)groups, sizeof(int), cmp_weight_desc, (void *)weight);
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < parts; i++) {
            int b = r * parts + i, pos = r * parts + i;
            member[b] = pos < groups ? order[pos] : -1;
            next[b] = -1;
            tail[b] = b;
            sol[r].sum[i] = pos < groups ? weight[order[pos]] : 0;
            sol[r].bucket[i] = b;
        }
    /* buckets chain by index: next[] links bucket ids, member[] names a group */
    for (int live = rounds; live > 1; live--) {
        int a = 0, b = 1; /* the two largest spreads */
        for (int i = 0; i < live; i++) {
            double si = sol[i].sum[0] - sol[i].sum[parts - 1];
            if (i != a && si > sol[a].sum[0] - sol[a].sum[parts - 1]) {
                b = a, a = i;
            } else if (i != a && (b == a || si > sol[b].sum[0] - sol[b].sum[parts - 1])) {
                b = i;
            }
        }
        if (a == b)
            b = a == 0 ? 1 : 0;
        for (int i = 0; i < parts; i++) {
            int x = sol[a].bucket[i], y = sol[b].bucket[parts - 1 - i];
            sol[a].sum[i] += sol[b].sum[parts - 1 - i];
            next[tail[x]] = y; /* append y's chain to x's */
            tail[x] = tail[y];
        }
        kk_sort(&sol[a], parts);
        sol[b] = sol[live - 1];
    }
    for (int i = 0; i < parts; i++)
        for (int x = sol[0].bucket[i]; x != -1; x = next[x])
            if (member[x] >= 0)
                rank_of[member[x]] = i;
    rc = 0;
out:
    free(order), free(next), free(tail), free(member), free(sol);
    return rc;
}

/* seqlen_balanced: the first caller of (task, batch_index) takes dp_size
 * batches of whole groups and splits them over the ranks by total length;
 * every rank's part is kept for its dp_replicas callers. */
static meta_outcome_t sample_seqlen(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    long long n, size, rank, index, replicas;
    if (arg_in(f->args, "n_samples_per_prompt", 1, 1 << 20, 1, true, &n) != 0 ||
        arg_in(f->args, "dp_size", 1, 64, 1, true, &size) != 0 ||
        arg_in(f->args, "dp_rank", 0, size - 1, 0, true, &rank) != 0 ||
        arg_in(f->args, "batch_index", 0, INT64_MAX / 2, 0, true, &index) != 0 ||
        arg_in(f->args, "dp_replicas", 1, 1 << 20, 1, false, &replicas) != 0 ||
        f->m.batch_size % n != 0) {
        reply_error(c, h, TQ_ERR_INVALID, "seqlen_balanced needs integer n_samples_per_prompt "
                    "dividing batch_size, dp_size 1..64, dp_rank < dp_size, batch_index, "
                    "optional dp_replicas");
        return META_DONE;
    }
    if (f->p == NULL)
        return META_WAIT;
    char key[TQ_WIRE_NAME_MAX + 96];
    snprintf(key, sizeof(key), "seqlen\x1f%s\x1f%lld\x1f%lld", f->task, index, rank);
    tq_kept_t *k = tq__partition_kept(f->p, key);
    if (k != NULL && kept_valid(f->p, k))
        return serve_kept(c, h, f, k);

    size_t want = (size_t)(f->m.batch_size / n) * (size_t)size;
    int64_t *rows = malloc(want * (size_t)n * sizeof(int64_t) + 1);
    double *weight = malloc(want * sizeof(double) + 1);
    int *rank_of = malloc(want * sizeof(int) + 1);
    int64_t *part = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    int64_t *own = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    meta_outcome_t out = META_DONE;
    if (rows == NULL || weight == NULL || rank_of == NULL || part == NULL || own == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t groups = tq__sampler_groups(f->ready, f->num_ready, n, want, rows);
    if (groups < want && !f->final) {
        out = META_WAIT;
        goto done;
    }
    if (groups == 0) {
        out = reply_end_of_stream(c, h, f);
        goto done;
    }
    for (size_t g = 0; g < groups; g++) {
        weight[g] = 0;
        for (long long i = 0; i < n; i++) {
            int64_t r = rows[g * (size_t)n + (size_t)i];
            const tq_kv_key_t *kk = f->p->row_keys[r];
            const cJSON *len = kk ? cJSON_GetObjectItemCaseSensitive(kk->tag, "total_lengths") : NULL;
            if (!cJSON_IsNumber(len)) {
                reply_error(c, h, TQ_ERR_INVALID, "row %lld has no numeric total_lengths tag",
                            (long long)r);
                goto done;
            }
            weight[g] += len->valuedouble;
        }
    }
    if (kk_partition(weight, (int)groups, (int)size, rank_of) != 0) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* keep every rank's part (ours for its other replicas), then serve ours */
    uint32_t mine = 0;
    for (long long r = 0; r < size; r++) {
        uint32_t np = 0;
        for (size_t g = 0; g < groups; g++)
            if (rank_of[g] == r)
                for (long long i = 0; i < n; i++)
                    part[np++] = rows[g * (size_t)n + (size_t)i];
        uint32_t takers = (uint32_t)replicas - (r == rank);
        snprintf(key, sizeof(key), "seqlen\x1f%s\x1f%lld\x1f%lld", f->task, index, r);
        if (takers > 0 && tq__partition_keep(f->p, key, part, np, takers) == NULL) {
            reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (r == rank) {
            memcpy(own, part, np * sizeof(int64_t));
            mine = np;
        }
    }
    consume(f, rows, groups * (size_t)n);
    out = serve(c, h, f, own, mine);
done:
    free(rows), free(weight), free(rank_of), free(part), free(own);
    return out;
}

/* A sampler of the ABI: its rows must come from the ready ones. */
static meta_outcome_t sample_plain(conn_t *c, const tq_wire_header_t *h, fetch_t *f,
                                   const tq_sampler_t *s)
{
    int64_t *sampled = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    int64_t *consumed = malloc((f->num_ready + 1) * sizeof(int64_t));
    meta_outcome_t out = META_DONE;
    if (sampled == NULL || consumed == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    tq_sampler_input_t in = {f->p ? f->p->name : "", f->task, f->ready, f->num_ready,
                             f->m.batch_size, f->args, f->final};
    tq_sampler_output_t o = {sampled, 0, consumed, 0};
    int rc = s->sample(&in, &o);
    if (rc == TQ_ERR_INVALID) {
        reply_error(c, h, TQ_ERR_INVALID, "sampler %s refused its arguments %s", s->name, f->args);
        goto done;
    }
    if (rc == TQ_ERR_TIMEOUT || f->p == NULL || (rc == TQ_OK && o.num_sampled == 0 && !f->final)) {
        out = META_WAIT;
        goto done;
    }
    bool bad = rc != TQ_OK || o.num_sampled > f->m.batch_size || o.num_consumed > f->num_ready;
    for (size_t i = 0; !bad && i < o.num_sampled; i++)
        bad = bsearch(&sampled[i], f->ready, f->num_ready, sizeof(int64_t), tq__cmp_i64) == NULL;
    for (size_t i = 0; !bad && i < o.num_consumed; i++)
        bad = bsearch(&consumed[i], f->ready, f->num_ready, sizeof(int64_t), tq__cmp_i64) == NULL;
    if (bad) {
        tq_error("sampler %s returned %d or rows that are not ready", s->name, rc);
        reply_error(c, h, TQ_ERR_PROTOCOL, "sampler %s misbehaved", s->name);
        goto done;
    }
    if (o.num_sampled == 0) {
        out = reply_end_of_stream(c, h, f);
        goto done;
    }
    consume(f, consumed, o.num_consumed);
    out = serve(c, h, f, sampled, (uint32_t)o.num_sampled);
done:
    free(sampled);
    free(consumed);
    return out;
}

/* Try to answer a GET_META now. META_WAIT: too few rows, nothing was written. */
static meta_outcome_t try_get_meta(conn_t *c, const tq_wire_header_t *h, const uint8_t *body,
                                   uint32_t len, int32_t *timeout_p, char **partition_p)
{
    fetch_t f = {0};
    tq_rbuf r = tq_rbuf_make(body, len);
    if (tq_wire_decode_get_meta(&r, &f.m) != TQ_OK || !tq_rbuf_done(&r)) {
        reply_error(c, h, TQ_ERR_PROTOCOL, "malformed get_meta");
        return META_DONE;
    }
    tq_msg_get_meta_t *m = &f.m;
    for (uint16_t i = 0; i < m->num_fields; i++)
        for (uint16_t j = 0; j < i; j++)
            if (m->fields[i].len == m->fields[j].len &&
                memcmp(m->fields[i].ptr, m->fields[j].ptr, m->fields[i].len) == 0) {
                reply_error(c, h, TQ_ERR_INVALID, "field %.*s requested twice",
                            m->fields[i].len, m->fields[i].ptr);
                return META_DONE;
            }
    name_cstr(m->sampler, f.sampler);
    name_cstr(m->task, f.task);
    const tq_sampler_t *plain = NULL;
    bool rank_aware = strcmp(f.sampler, "rank_aware") == 0;
    bool seqlen = strcmp(f.sampler, "seqlen_balanced") == 0;
    if (!rank_aware && !seqlen && (plain = tq__sampler_find(f.sampler)) == NULL) {
        reply_error(c, h, TQ_ERR_INVALID, "unknown sampler %s", f.sampler);
        return META_DONE;
    }
    f.args = malloc((size_t)m->sampler_args.len + 3);
    if (f.args == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    memcpy(f.args, m->sampler_args.len ? (const char *)m->sampler_args.ptr : "{}",
           m->sampler_args.len ? m->sampler_args.len : 2);
    f.args[m->sampler_args.len ? m->sampler_args.len : 2] = '\0';
    if (timeout_p != NULL)
        *timeout_p = m->timeout_ms;
    if (partition_p != NULL)
        *partition_p = tq_str_dup(m->partition);

    f.p = partition_find_str(c->ctl, m->partition);
    meta_outcome_t out = META_WAIT;
    if (f.p != NULL) {
        char name[TQ_WIRE_NAME_MAX + 1];
        f.have_fields = true;
        for (uint16_t i = 0; i < m->num_fields; i++)
            f.have_fields &= (f.fields[i] = tq__partition_field(f.p, name_cstr(m->fields[i], name))) != NULL;
        f.t = tq__partition_task(f.p, f.task, true);
        if (f.t == NULL || fetch_scan(&f) != TQ_OK) {
            reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
            out = META_DONE;
            goto done;
        }
    }
    if (rank_aware)
        out = sample_rank_aware(c, h, &f);
    else if (seqlen)
        out = sample_seqlen(c, h, &f);
    else
        out = sample_plain(c, h, &f, plain);
done:
    free(f.ready);
    free(f.args);
    return out;
}

static void handle_get_meta(conn_t *c, const tq_wire_header_t *h, const uint8_t *body)
{
    int32_t timeout = 0;
    char *partition = NULL;
    if (try_get_meta(c, h, body, h->body_len, &timeout, &partition) == META_DONE) {
        free(partition);
        return;
    }
    parked_t *pk = NULL;
    if (c->no_park)
        timeout = 0;
    if (timeout == 0 || partition == NULL || (pk = calloc(1, sizeof(*pk))) == NULL ||
        (pk->body = malloc(h->body_len ? h->body_len : 1)) == NULL) {
        free(pk);
        free(partition);
        if (timeout == 0)
            return reply_error(c, h, TQ_ERR_TIMEOUT, "too few ready rows");
        return reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    }
    memcpy(pk->body, body, h->body_len);
    pk->body_len = h->body_len;
    pk->conn = c;
    pk->request_id = h->request_id;
    pk->partition = partition;
    pk->deadline_ms = timeout < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout;
    tq_list_insert_tail(&c->ctl->parked, &pk->link);
}

/* A commit to `partition` may satisfy parked requests: try them in arrival order. */
static void wake_parked(tq_controller *ctl, const char *partition)
{
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (strcmp(pk->partition, partition) != 0)
            continue;
        tq_wire_header_t h = {.type = TQ_MSG_GET_META, .request_id = pk->request_id,
                              .body_len = pk->body_len};
        if (try_get_meta(pk->conn, &h, pk->body, pk->body_len, NULL, NULL) == META_DONE)
            parked_free(pk);
    }
}

static meta_t *meta_find(tq_controller *ctl, uint64_t id);

static void handle_release(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed release");
    meta_t *meta = meta_find(c->ctl, m.id);
    if (meta != NULL)
        meta_free(meta);
    /* no reply: RELEASE is one-way */
}

static void handle_clear(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_clear_t m;
    if (tq_wire_decode_clear(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed clear");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    uint32_t removed = 0;
    if (p != NULL) {
        int64_t *idx = malloc((size_t)m.count * 8 + 1);
        if (idx == NULL)
            return reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        memcpy(idx, m.indexes.ptr, (size_t)m.count * 8);
        removed = tq__partition_clear_rows(p, m.count, idx);
        free(idx);
    }
    size_t off = reply_begin(c, h);
    tq_wire_put_u32(&c->out, removed);
    reply_end(c, off);
}

static void handle_clear_partition(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed clear_partition");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    if (p == NULL)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %.*s", m.partition.len,
                           m.partition.ptr);
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &p->allocs) { /* their commits will fail cleanly */
        alloc_t *a = tq_list_entry(pos, alloc_t, part_link);
        tq_list_remove(&a->part_link);
        a->part = NULL;
    }
    tq_list_remove(&p->link);
    tq__partition_destroy(p);
    reply_ok(c, h);
}

static void handle_reset(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed reset_consumption");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    if (p == NULL)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %.*s", m.partition.len,
                           m.partition.ptr);
    char task[TQ_WIRE_NAME_MAX + 1];
    memcpy(task, m.task.ptr, m.task.len);
    task[m.task.len] = '\0';
    if (tq__partition_reset(p, m.task.len ? task : NULL) != TQ_OK)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no task %s in partition %s", task, p->name);
    reply_ok(c, h);
    wake_parked(c->ctl, p->name);
}

/* ---- key-value ---- */

/* KV_GET: pin the rows of the keys, in their order, and answer as GET_META. */
static void handle_kv_get(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_kv_get_t m;
    if (tq_wire_decode_kv_get(r, &m) != TQ_OK)
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_get");
    char name[TQ_WIRE_NAME_MAX + 1], key[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    if (p == NULL)
        return reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %s", name_cstr(m.partition, name));
    for (uint16_t i = 0; i < m.num_fields; i++)
        for (uint16_t j = 0; j < i; j++)
            if (m.fields[i].len == m.fields[j].len &&
                memcmp(m.fields[i].ptr, m.fields[j].ptr, m.fields[i].len) == 0)
                return reply_error(c, h, TQ_ERR_INVALID, "field %s requested twice",
                                   name_cstr(m.fields[i], name));
    int64_t *rows = malloc((size_t)m.count * sizeof(int64_t));
    tq_field_t **fields = malloc(TQ_MAX(p->num_fields, (uint32_t)m.num_fields) * sizeof(*fields) + 1);
    meta_t *meta = calloc(1, sizeof(*meta));
    if (rows == NULL || fields == NULL || meta == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        if (tq_wire_decode_name(r, &k) != TQ_OK) {
            reply_error(c, h, TQ_ERR_PROTOCOL, "malformed key");
            goto out;
        }
        tq_kv_key_t *entry = tq__partition_key(p, name_cstr(k, key));
        if (entry == NULL) {
            reply_error(c, h, TQ_ERR_NOT_FOUND, "no key %s in partition %s", key, p->name);
            goto out;
        }
        rows[i] = entry->row;
    }
    if (!tq_rbuf_done(r)) {
        reply_error(c, h, TQ_ERR_PROTOCOL, "trailing bytes in kv_get");
        goto out;
    }
    uint32_t nf = 0;
    if (m.num_fields > 0) {
        for (uint16_t i = 0; i < m.num_fields; i++) {
            tq_field_t *f = tq__partition_field(p, name_cstr(m.fields[i], name));
            for (uint32_t k = 0; k < m.count; k++)
                if (f == NULL || !f->cells[rows[k]].produced) {
                    reply_error(c, h, TQ_ERR_NOT_FOUND, "key %s has no field %s",
                                p->row_keys[rows[k]]->key, name);
                    goto out;
                }
            fields[nf++] = f;
        }
    } else { /* every field all the keys have */
        for (uint32_t i = 0; i < p->num_fields; i++) {
            bool shared = true;
            for (uint32_t k = 0; k < m.count && shared; k++)
                shared = p->fields[i].cells[rows[k]].produced;
            if (shared)
                fields[nf++] = &p->fields[i];
        }
        if (nf == 0) {
            reply_error(c, h, TQ_ERR_NOT_FOUND, "the keys share no field");
            goto out;
        }
        if (nf > TQ_WIRE_MAX_FIELDS) {
            reply_error(c, h, TQ_ERR_INVALID, "the keys share %u fields: name at most %u", nf,
                        TQ_WIRE_MAX_FIELDS);
            goto out;
        }
    }
    if ((meta->pins = malloc((size_t)m.count * nf * sizeof(tq_extent *) + 1)) == NULL) {
        reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    meta->id = ++c->ctl->next_id;
    tq_list_init(&meta->conn_link);
    tq_list_insert_tail(&c->metas, &meta->conn_link);
    reply_meta(c, h, p, fields, (uint16_t)nf, rows, m.count, meta);
    meta = NULL;
out:
    if (meta != NULL)
        free(meta->pins);
    free(meta);
    free(fields);
    free(rows);
}

static void encode_partition_keys(tq_wbuf *w, const tq_partition_t *p)
{
    tq_list *pos;
    for (pos = p->key_order.next; pos != &p->key_order; pos = pos->next) {
        const tq_kv_key_t *k = tq_list_entry(pos, tq_kv_key_t, link);
        char *tag = cJSON_PrintUnformatted(k->tag);
        if (tag == NULL) {
            w->failed = true; /* out of memory: the reply fails whole */
            return;
        }
        tq_wire_kv_entry_t e = {{p->name, (uint16_t)strlen(p->name)},
                                {k->key, (uint16_t)strlen(k->key)},
                                {(const uint8_t *)tag, (uint32_t)strlen(tag)}};
        tq_wire_encode_kv_entry(w, &e);
        free(tag);
    }
}

static void handle_kv_list(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_str_t want;
    if (tq_wire_decode_kv_list(r, &want) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_list");
    uint32_t n = 0;
    tq_list *pos;
    for (pos = c->ctl->partitions.next; pos != &c->ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (want.len == 0 || tq_str_eq(want, p->name))
            n += (uint32_t)tq_hashmap_size(p->keys);
    }
    size_t off = reply_begin(c, h);
    tq_wire_put_u32(&c->out, n);
    for (pos = c->ctl->partitions.next; pos != &c->ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (want.len == 0 || tq_str_eq(want, p->name))
            encode_partition_keys(&c->out, p);
    }
    reply_end(c, off);
}

static void handle_kv_clear(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_kv_keys_t m;
    if (tq_wire_decode_kv_keys(r, &m) != TQ_OK)
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_clear");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    /* decode every key before removing any: a malformed request removes nothing */
    tq_rbuf keys = *r;
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        if (tq_wire_decode_name(r, &k) != TQ_OK)
            return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed key");
    }
    if (!tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "trailing bytes in kv_clear");
    uint32_t removed = 0;
    char key[TQ_WIRE_NAME_MAX + 1];
    for (uint32_t i = 0; p != NULL && i < m.count; i++) {
        tq_str_t k;
        tq_wire_decode_name(&keys, &k);
        tq_kv_key_t *entry = tq__partition_key(p, name_cstr(k, key));
        if (entry != NULL)
            removed += tq__partition_clear_rows(p, 1, &entry->row);
    }
    size_t off = reply_begin(c, h);
    tq_wire_put_u32(&c->out, removed);
    reply_end(c, off);
}

/* ---- seal, unread rows, status ---- */

static void handle_seal(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r) || m.task.len > 0)
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed seal");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    if (p == NULL) { /* sealing before any row came: consumers end at once */
        char name[TQ_WIRE_NAME_MAX + 1];
        if ((p = tq__partition_create(name_cstr(m.partition, name))) == NULL)
            return reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        tq_list_insert_tail(&c->ctl->partitions, &p->link);
    }
    p->sealed = true;
    reply_ok(c, h);
    wake_parked(c->ctl, p->name);
}

static meta_t *meta_find(tq_controller *ctl, uint64_t id)
{
    /* metas may be released through any connection of the client */
    tq_list *cpos, *pos;
    for (cpos = ctl->conns.next; cpos != &ctl->conns; cpos = cpos->next) {
        conn_t *owner = tq_list_entry(cpos, conn_t, link);
        for (pos = owner->metas.next; pos != &owner->metas; pos = pos->next) {
            meta_t *meta = tq_list_entry(pos, meta_t, conn_link);
            if (meta->id == id)
                return meta;
        }
    }
    return NULL;
}

/* RELEASE_UNREAD: a consumer fetched rows ahead and will not read them. */
static void handle_release_unread(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed release_unread");
    meta_t *meta = meta_find(c->ctl, m.id);
    if (meta != NULL)
        meta_give_back(c->ctl, meta);
    reply_ok(c, h); /* answered, so the rows are back before the caller goes on */
}

/* CANCEL: a consumer closing a stream ends the wait of its fetch connection,
 * whichever thread of it is blocked there, and that connection waits no more. */
static void handle_cancel(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed cancel");
    tq_list *pos, *tmp;
    for (pos = c->ctl->conns.next; pos != &c->ctl->conns; pos = pos->next) {
        conn_t *target = tq_list_entry(pos, conn_t, link);
        if (target->id == m.id)
            target->no_park = true;
    }
    tq_list_for_each_safe(pos, tmp, &c->ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->conn->id == m.id) {
            tq_wire_header_t ph = {.type = TQ_MSG_GET_META, .request_id = pk->request_id};
            reply_error(pk->conn, &ph, TQ_ERR_TIMEOUT, "cancelled");
            parked_free(pk);
        }
    }
    reply_ok(c, h);
}

static void handle_status(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_status_t m;
    bool production = h->type == TQ_MSG_PRODUCTION_STATUS;
    if (tq_wire_decode_status(r, &m) != TQ_OK || !tq_rbuf_done(r) ||
        (production ? m.num_fields == 0 : m.task.len == 0))
        return reply_error(c, h, TQ_ERR_PROTOCOL, "malformed status request");
    tq_partition_t *p = partition_find_str(c->ctl, m.partition);
    uint64_t n = p ? p->num_slots : 0;
    uint8_t *bytes = calloc(n + 1, 1);
    if (bytes == NULL)
        return reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    char name[TQ_WIRE_NAME_MAX + 1];
    if (p != NULL && production) {
        tq_field_t *fields[TQ_WIRE_MAX_FIELDS];
        bool all = true;
        for (uint16_t i = 0; i < m.num_fields; i++)
            all &= (fields[i] = tq__partition_field(p, name_cstr(m.fields[i], name))) != NULL;
        for (uint64_t row = 0; all && row < n; row++)
            bytes[row] = tq__partition_row_ready(p, fields, m.num_fields, NULL, row);
    } else if (p != NULL) {
        tq_task_t *t = tq__partition_task(p, name_cstr(m.task, name), false);
        for (uint64_t row = 0; t != NULL && row < n; row++)
            bytes[row] = t->consumed[row];
    }
    size_t off = reply_begin(c, h);
    tq_wire_put_blob(&c->out, bytes, (uint32_t)n);
    reply_end(c, off);
    free(bytes);
}

static void dispatch(conn_t *c, const tq_wire_header_t *h, const uint8_t *body)
{
    tq_rbuf r = tq_rbuf_make(body, h->body_len);
    if (h->flags & TQ_WIRE_FLAG_REPLY) {
        reply_error(c, h, TQ_ERR_PROTOCOL, "a reply sent to the controller");
        return;
    }
    if (!c->greeted && h->type != TQ_MSG_HELLO) {
        reply_error(c, h, TQ_ERR_AUTH, "the first message must be hello");
        c->closing = true;
        return;
    }
    bool storage = c->role == TQ_ROLE_STORAGE;
    switch (h->type) {
    case TQ_MSG_HELLO:
        if (c->greeted)
            return reply_error(c, h, TQ_ERR_PROTOCOL, "hello sent twice");
        return handle_hello(c, h, &r);
    case TQ_MSG_REGISTER_UNIT: return handle_register(c, h, &r);
    case TQ_MSG_HEARTBEAT:
        if (storage && c->unit != NULL)
            c->unit->last_heartbeat_ms = tq__now_ms();
        return;
    case TQ_MSG_UNITS:         return handle_units(c, h, &r);
    case TQ_MSG_ALLOC:         return handle_alloc(c, h, &r);
    case TQ_MSG_COMMIT:        return handle_commit(c, h, &r);
    case TQ_MSG_ABORT:         return handle_abort(c, h, &r);
    case TQ_MSG_GET_META:      return handle_get_meta(c, h, body);
    case TQ_MSG_RELEASE:       return handle_release(c, h, &r);
    case TQ_MSG_CLEAR:         return handle_clear(c, h, &r);
    case TQ_MSG_CLEAR_PARTITION:   return handle_clear_partition(c, h, &r);
    case TQ_MSG_RESET_CONSUMPTION: return handle_reset(c, h, &r);
    case TQ_MSG_KV_GET:        return handle_kv_get(c, h, &r);
    case TQ_MSG_KV_LIST:       return handle_kv_list(c, h, &r);
    case TQ_MSG_KV_CLEAR:      return handle_kv_clear(c, h, &r);
    case TQ_MSG_SEAL:          return handle_seal(c, h, &r);
    case TQ_MSG_RELEASE_UNREAD: return handle_release_unread(c, h, &r);
    case TQ_MSG_CANCEL:        return handle_cancel(c, h, &r);
    case TQ_MSG_PRODUCTION_STATUS:
    case TQ_MSG_CONSUMPTION_STATUS: return handle_status(c, h, &r);
    default:
        return reply_error(c, h, TQ_ERR_PROTOCOL, "unknown message type %u", h->type);
    }
}

/* ---- connections ---- */

static void conn_close(conn_t *c)
{
    tq_controller *ctl = c->ctl;
    tq_list *pos, *tmp;
    /* its parked requests go first: rows given back below must not wake them */
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->conn == c)
            parked_free(pk);
    }
    tq_list_for_each_safe(pos, tmp, &c->allocs)
        alloc_abort(tq_list_entry(pos, alloc_t, conn_link));
    tq_list_for_each_safe(pos, tmp, &c->metas) {
        meta_t *m = tq_list_entry(pos, meta_t, conn_link);
        if (m->reply_end > c->sent) /* its answer never left: nobody has these rows */
            meta_give_back(ctl, m);
        else
            meta_free(m);
    }
    if (c->unit != NULL)
        unit_mark_dead(c->unit, "its connection closed");
    tq_debug("connection fd %d closed", c->fd);
    epoll_ctl(ctl->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    tq_list_remove(&c->link);
    tq_list_remove(&c->flush_link);
    tq_wbuf_free(&c->out);
    free(c->in);
    free(c);
}

/* Handle every whole frame in the input buffer. */
static void conn_process(conn_t *c)
{
    size_t pos = 0;
    while (!c->closing && c->in_len - pos >= TQ_WIRE_HEADER_SIZE) {
        tq_wire_header_t h;
        if (tq_wire_parse_header(c->in + pos, &h) != TQ_OK) {
            /* no way to find the next frame: drop the connection */
            tq_warn("bad frame header from fd %d, closing", c->fd);
            c->closing = true;
            break;
        }
        if (c->in_len - pos - TQ_WIRE_HEADER_SIZE < h.body_len)
            break;
        dispatch(c, &h, c->in + pos + TQ_WIRE_HEADER_SIZE);
        pos += TQ_WIRE_HEADER_SIZE + h.body_len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

/* Returns false when the connection is gone. */
static bool conn_read(conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < READ_CHUNK) {
            size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK * 2;
            if (cap > TQ_WIRE_HEADER_SIZE + TQ_WIRE_MAX_BODY + READ_CHUNK * 2)
                cap = TQ_WIRE_HEADER_SIZE + TQ_WIRE_MAX_BODY + READ_CHUNK * 2;
            if (cap - c->in_len < READ_CHUNK) {
                tq_warn("fd %d overran its input buffer", c->fd);
                return false;
            }
            uint8_t *in = realloc(c->in, cap);
            if (in == NULL)
                return false;
            c->in = in;
            c->in_cap = cap;
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
            conn_process(c);
            if (c->closing)
                return true;
            continue;
        }
        if (n == 0)
            return false;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

/* Returns false when the connection is gone. */
static bool conn_flush(conn_t *c)
{
    if (c->out.failed) {
        tq_error("fd %d: a reply could not be built (out of memory or over the frame limit)",
                 c->fd);
        return false;
    }
    size_t sent = 0;
    while (sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + sent, c->out.len - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return false;
    }
    tq_wbuf_consume(&c->out, sent);
    c->sent += sent;
    if (c->out.len > MAX_OUTPUT)
        return false;
    bool pending = c->out.len > 0;
    if (pending != c->epollout) {
        struct epoll_event ev = {.events = EPOLLIN | (pending ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(c->ctl->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->epollout = pending;
    }
    return !(c->closing && !pending);
}

static void accept_all(tq_controller *ctl)
{
    for (;;) {
        int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                tq_warn("accept: %m");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->ctl = ctl;
        c->fd = fd;
        c->id = ++ctl->next_id;
        tq_wbuf_init(&c->out);
        tq_list_init(&c->flush_link);
        tq_list_init(&c->allocs);
        tq_list_init(&c->metas);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            tq_warn("epoll_ctl: %m");
            close(fd);
            free(c);
            continue;
        }
        tq_list_insert_tail(&ctl->conns, &c->link);
        tq_debug("connection fd %d accepted", fd);
    }
}

/* Expire parked requests and silent units; returns ms until the next deadline. */
static int run_timers(tq_controller *ctl)
{
    uint64_t now = tq__now_ms(), next = now + 1000;
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->deadline_ms <= now) {
            tq_wire_header_t h = {.type = TQ_MSG_GET_META, .request_id = pk->request_id};
            reply_error(pk->conn, &h, TQ_ERR_TIMEOUT, "too few ready rows before the timeout");
            parked_free(pk);
        } else if (pk->deadline_ms < next) {
            next = pk->deadline_ms;
        }
    }
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
        tq_unit *u = tq_list_entry(pos, tq_unit, link);
        if (!u->alive)
            continue;
        uint64_t due = u->last_heartbeat_ms + (uint64_t)ctl->heartbeat_timeout_ms;
        if (due <= now) {
            conn_t *c = u->conn;
            unit_mark_dead(u, "no heartbeat");
            if (c != NULL)
                c->closing = true, conn_want_flush(c);
        } else if (due < next) {
            next = due;
        }
    }
    return (int)(next - now);
}

/* ---- lifecycle ---- */

static int listen_on(const char *spec, int *fd_p, char *address, size_t cap)
{
    char host[256];
    uint16_t port;
    if (tq__parse_hostport(spec, host, sizeof(host), &port) != 0) {
        tq_error("bad listen address '%s' (want HOST:PORT)", spec);
        return TQ_ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        tq_error("cannot resolve '%s': %s", host, gai_strerror(rc));
        return TQ_ERR_INVALID;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 512) != 0) {
        tq_error("cannot listen on %s: %m", spec);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return TQ_ERR_IO;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t bound;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        bound = ntohs(s6->sin6_port);
        snprintf(address, cap, "[%s]:%u", ip, bound);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        bound = ntohs(s4->sin_port);
        snprintf(address, cap, "%s:%u", ip, bound);
    }
    *fd_p = fd;
    return TQ_OK;
}

static int load_plugins(const char *list)
{
    char path[4096], err[512];
    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0 && len < sizeof(path)) {
            memcpy(path, p, len);
            path[len] = '\0';
            if (tq__sampler_load_plugin(path, err, sizeof(err)) != 0) {
                tq_error("%s", err);
                return TQ_ERR_INVALID;
            }
            tq_info("sampler plugin %s loaded", path);
        }
        p = end ? end + 1 : NULL;
    }
    return TQ_OK;
}

int tq__controller_create(const tq_controller_config_t *cfg, tq_controller **ctl_p)
{
    tq_controller *ctl = calloc(1, sizeof(*ctl));
    if (ctl == NULL)
        return TQ_ERR_NOMEM;
    ctl->epfd = ctl->listen_fd = ctl->stop_fd = -1;
    tq_list_init(&ctl->conns);
    tq_list_init(&ctl->to_flush);
    tq_list_init(&ctl->units);
    tq_list_init(&ctl->partitions);
    tq_list_init(&ctl->parked);
    ctl->heartbeat_timeout_ms = cfg->heartbeat_timeout_ms > 0 ? cfg->heartbeat_timeout_ms : 3000;
    int rc = TQ_ERR_NOMEM;
    if (cfg->token != NULL && cfg->token[0] != '\0' && (ctl->token = strdup(cfg->token)) == NULL)
        goto err;
    if ((rc = load_plugins(cfg->sampler_plugins)) != TQ_OK)
        goto err;
    rc = listen_on(cfg->listen ? cfg->listen : "127.0.0.1:0", &ctl->listen_fd, ctl->address,
                   sizeof(ctl->address));
    if (rc != TQ_OK)
        goto err;
    rc = TQ_ERR_IO;
    ctl->epfd = epoll_create1(EPOLL_CLOEXEC);
    ctl->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctl->epfd < 0 || ctl->stop_fd < 0) {
        tq_error("epoll/eventfd: %m");
        goto err;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ctl->listen_fd};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &ctl->stop_fd};
    if (epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, ctl->listen_fd, &ev) != 0 ||
        epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, ctl->stop_fd, &sev) != 0) {
        tq_error("epoll_ctl: %m");
        goto err;
    }
    *ctl_p = ctl;
    return TQ_OK;
err:
    tq__controller_destroy(ctl);
    return rc;
}

const char *tq__controller_address(const tq_controller *ctl) { return ctl->address; }

void tq__controller_stop(tq_controller *ctl)
{
    uint64_t one = 1;
    ssize_t n = write(ctl->stop_fd, &one, sizeof(one)); /* async-signal-safe */
    (void)n;
}

int tq__controller_run(tq_controller *ctl)
{
    struct epoll_event events[64];
    tq_info("listening on %s", ctl->address);
    for (;;) {
        int timeout = run_timers(ctl);
        /* before sleeping: flush every reply written since the last wake-up */
        tq_list *pos, *tmp;
        tq_list_for_each_safe(pos, tmp, &ctl->to_flush) {
            conn_t *c = tq_list_entry(pos, conn_t, flush_link);
            tq_list_remove(&c->flush_link);
            if (!conn_flush(c))
                conn_close(c);
        }
        int n = epoll_wait(ctl->epfd, events, (int)ARRAY_SIZE(events), timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            tq_error("epoll_wait: %m");
            return TQ_ERR_IO;
        }
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == NULL) /* its connection was closed earlier in this batch */
                continue;
            if (ptr == &ctl->stop_fd)
                return TQ_OK;
            if (ptr == &ctl->listen_fd) {
                accept_all(ctl);
                continue;
            }
            conn_t *c = ptr;
            bool alive = true;
            if (events[i].events & EPOLLOUT)
                alive = conn_flush(c);
            if (alive && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                alive = conn_read(c);
            if (!alive) {
                conn_close(c);
                /* later events may name it: drop them */
                for (int j = i + 1; j < n; j++)
                    if (events[j].data.ptr == c)
                        events[j].data.ptr = NULL;
            } else if (c->closing) {
                conn_want_flush(c);
            }
        }
    }
}

void tq__controller_destroy(tq_controller *ctl)
{
    if (ctl == NULL)
        return;
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->conns)
        conn_close(tq_list_entry(pos, conn_t, link));
    tq_list_for_each_safe(pos, tmp, &ctl->partitions) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        tq_list_remove(&p->link);
        tq__partition_destroy(p);
    }
    tq_list_for_each_safe(pos, tmp, &ctl->units) {
        tq_unit *u = tq_list_entry(pos, tq_unit, link);
        for (uint8_t i = 0; i < u->num_transports; i++) {
            free(u->transports[i].name);
            free(u->transports[i].address);
            free(u->transports[i].region);
        }
        tq_pool_destroy(u->pool);
        free(u);
    }
    if (ctl->listen_fd >= 0)
        close(ctl->listen_fd);
    if (ctl->stop_fd >= 0)
        close(ctl->stop_fd);
    if (ctl->epfd >= 0)
        close(ctl->epfd);
    free(ctl->token);
    free(ctl);
}
