/* controller.c: one epoll loop: connections, storage units, partition administration. */
#define TQ_LOG_COMPONENT "controller"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "controller/internal.h"
#include "controller/sampler.h"
#include "ctrl_conn.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"

#define POOL_ALIGN          64            /* cache-line aligned columns */
#define READ_CHUNK          (64u << 10)
#define MAX_OUTPUT          (256u << 20)  /* a peer that reads nothing is dropped */
#define HELLO_TIMEOUT_MS    10000         /* a connection must authenticate by then */
#define CONN_EVENTS         (EPOLLIN | EPOLLRDHUP) /* RDHUP: see conn_t.peer_gone */
#define CLOSE_TIMEOUT_MS    10000         /* a closing connection's last answer: read by then */
#define ACCEPT_PAUSE_MS     100           /* out of descriptors with no spare: stop accepting */
#define FD_RESERVE          32            /* descriptors besides connections: stdio, listeners,
                                             epoll, eventfd, the spare, logs, plugins */
#define MAX_HELLO_BODY      4096          /* frames before hello: no large buffers for strangers */

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
    [TQ_MSG_UNIT_LEAVE] = "unit_leave", [TQ_MSG_PARTITIONS] = "partitions",
    [TQ_MSG_PING] = "ping", [TQ_MSG_GET_META_ROWS] = "get_meta_rows",
    [TQ_MSG_SET_CUSTOM_META] = "set_custom_meta", [TQ_MSG_KV_INDEXES] = "kv_indexes",
    [TQ_MSG_KV_KEYS] = "kv_keys", [TQ_MSG_COMMIT_META] = "commit_meta",
};

const char *tq__msg_name(uint16_t type)
{
    return type < TQ_MSG_TYPE_MAX && msg_names[type] ? msg_names[type] : "unknown";
}

/* ---- replies ---- */

static void conn_want_flush(conn_t *c)
{
    if (c->flush_link.next == &c->flush_link)
        tq_list_insert_tail(&c->ctl->to_flush, &c->flush_link);
}


void tq__reply_error(conn_t *c, const tq_wire_header_t *h, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    tq_debug("%s from fd %d: %s: %s", tq__msg_name(h->type), c->fd, tq_status_string(status),
             msg);
    tq__metrics_answered(c->ctl, h->type, status);
    tq_wire_begin_reply(&c->out, h->type, h->request_id, status, msg);
    conn_want_flush(c);
}

/* Begin a success reply; the caller writes the body and calls reply_end. */
size_t tq__reply_begin(conn_t *c, const tq_wire_header_t *h)
{
    return tq_wire_begin_reply(&c->out, h->type, h->request_id, TQ_OK, NULL);
}

/*
 * A reply that could not be built (over the frame limit, or out of memory) is
 * taken back and answered with an error: the peer learns why, and the
 * connection and the replies before it go on. Only when even the header was
 * not written does the connection close (conn_flush).
 */
bool tq__reply_end(conn_t *c, size_t offset)
{
    tq_wire_end(&c->out, offset);
    tq_wbuf *w = &c->out;
    if (w->len < offset + TQ_WIRE_HEADER_SIZE)
        return false;
    tq_rbuf hr = tq_rbuf_make(w->data + offset + 6, 10);
    tq_wire_header_t h = {.type = tq_wire_get_u16(&hr)};
    h.request_id = tq_wire_get_u64(&hr);
    if (!w->failed) {
        tq__metrics_answered(c->ctl, h.type, TQ_OK);
        conn_want_flush(c);
        return true;
    }
    size_t body = w->len - offset - TQ_WIRE_HEADER_SIZE;
    w->len = offset;
    w->failed = false;
    if (body > TQ_WIRE_MAX_BODY)
        tq__reply_error(c, &h, TQ_ERR_INVALID, "the answer would pass the %u-byte frame limit: "
                        "ask for less at a time", TQ_WIRE_MAX_BODY);
    else
        tq__reply_error(c, &h, TQ_ERR_NOMEM, "out of memory building the answer");
    return false;
}

void tq__reply_ok(conn_t *c, const tq_wire_header_t *h) { tq__reply_end(c, tq__reply_begin(c, h)); }

/* ---- units ---- */

/* A unit is gone: a fault (warned) unless it said it was leaving. */
static void unit_mark_dead(tq_controller *ctl, tq_unit *u, const char *why, bool left)
{
    if (!u->alive)
        return;
    u->alive = false;
    if (u->conn != NULL)
        u->conn->unit = NULL;
    u->conn = NULL;
    if (left)
        tq_info("storage unit %u (incarnation %u) left: %s", u->id, u->incarnation, why);
    else
        tq_warn("storage unit %u (incarnation %u) is dead: %s", u->id, u->incarnation, why);
    tq__unit_lost(ctl, u);
}

bool tq__unit_could_fit(const tq_controller *ctl, uint64_t size)
{
    const tq_list *pos;
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
        const tq_unit *u = tq_list_entry(pos, tq_unit, link);
        if (u->alive && tq_pool_capacity(u->pool) >= size)
            return true;
    }
    return false;
}

/* Bytes free in the pools of live units. */
static uint64_t units_free(const tq_controller *ctl)
{
    uint64_t bytes = 0;
    const tq_list *pos;
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
        const tq_unit *u = tq_list_entry(pos, tq_unit, link);
        if (u->alive)
            bytes += tq_pool_capacity(u->pool) - tq_pool_used(u->pool);
    }
    return bytes;
}

bool tq__units_alive(const tq_controller *ctl)
{
    const tq_list *pos;
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next)
        if (tq_list_entry(pos, tq_unit, link)->alive)
            return true;
    return false;
}

/* The live unit with the largest free range that fits `size`, or NULL. */
tq_unit *tq__unit_pick(tq_controller *ctl, uint64_t size)
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

tq_partition_t *tq__find_partition(tq_controller *ctl, const char *name)
{
    tq_list *pos;
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

tq_partition_t *tq__partition_add(tq_controller *ctl, const char *name, int *status_p,
                                  const char **why_p)
{
    if (ctl->num_partitions >= ctl->max_partitions) {
        *status_p = TQ_ERR_INVALID, *why_p = "too many partitions: clear one first";
        return NULL;
    }
    tq_partition_t *p = tq__partition_create(name, &ctl->meta_budget);
    if (p == NULL) {
        *status_p = TQ_ERR_NOMEM, *why_p = "out of memory";
        return NULL;
    }
    p->seq = ++ctl->last_partition_seq;
    tq_list_insert_tail(&ctl->partitions, &p->link);
    ctl->num_partitions++;
    return p;
}

void tq__partition_remove(tq_controller *ctl, tq_partition_t *p)
{
    tq_list_remove(&p->link);
    tq__partition_destroy(p);
    ctl->num_partitions--;
}

tq_partition_t *tq__find_partition_str(tq_controller *ctl, tq_str_t name)
{
    char buf[TQ_WIRE_NAME_MAX + 1];
    memcpy(buf, name.ptr, name.len);
    buf[name.len] = '\0';
    return tq__find_partition(ctl, buf);
}

/* Copy a decoded name into a NUL-terminated buffer of TQ_WIRE_NAME_MAX + 1. */
const char *tq__name_cstr(tq_str_t s, char *buf)
{
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    return buf;
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
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed hello");
        c->closing = true;
        return;
    }
    if (c->ctl->token != NULL && !token_equal(c->ctl->token, m.token)) {
        tq_warn("rejected connection fd %d: wrong token", c->fd);
        tq__reply_error(c, h, TQ_ERR_AUTH, "wrong or missing token");
        c->closing = true;
        return;
    }
    if (tq__session_join(c, m.session) != TQ_OK) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        c->closing = true;
        return;
    }
    c->greeted = true;
    c->role = m.role;
    size_t off = tq__reply_begin(c, h);
    tq_wire_encode_hello_reply(&c->out, &(tq_msg_hello_reply_t){c->id, c->ctl->epoch});
    tq__reply_end(c, off);
}

static void handle_register(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_controller *ctl = c->ctl;
    tq_msg_register_t m;
    if (tq_wire_decode_register(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed register");
    if (c->role != TQ_ROLE_STORAGE || c->unit != NULL)
        return tq__reply_error(c, h, TQ_ERR_INVALID, "only a storage connection registers, once");
    if (m.capacity < POOL_ALIGN || m.capacity > MAX_UNIT_CAPACITY || m.num_transports == 0)
        return tq__reply_error(c, h, TQ_ERR_INVALID, "bad capacity %llu or no transport",
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
    size_t off = tq__reply_begin(c, h);
    tq_wire_encode_register_reply(&c->out, &(tq_msg_register_reply_t){u->id, u->incarnation});
    tq__reply_end(c, off);
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
    tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory registering a unit");
}

static void handle_units(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    if (!tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed units request");
    uint32_t n = 0;
    tq_list *pos;
    for (pos = c->ctl->units.next; pos != &c->ctl->units; pos = pos->next)
        n++;
    size_t off = tq__reply_begin(c, h);
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
    tq__reply_end(c, off);
}

static void handle_clear(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_clear_t m;
    if (tq_wire_decode_clear(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed clear");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    uint32_t removed = 0;
    if (p != NULL) {
        int64_t *idx = malloc((size_t)m.count * 8 + 1);
        if (idx == NULL)
            return tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        memcpy(idx, m.indexes.ptr, (size_t)m.count * 8);
        removed = tq__partition_clear_rows(p, m.count, idx);
        free(idx);
    }
    size_t off = tq__reply_begin(c, h);
    tq_wire_put_u32(&c->out, removed);
    tq__reply_end(c, off);
}

static void handle_clear_partition(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed clear_partition");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    if (p == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %.*s", m.partition.len,
                           m.partition.ptr);
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &p->allocs) { /* their commits will fail cleanly */
        alloc_t *a = tq_list_entry(pos, alloc_t, part_link);
        tq_list_remove(&a->part_link);
        a->part = NULL;
    }
    tq__partition_remove(c->ctl, p);
    tq__reply_ok(c, h);
}

static void handle_reset(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed reset_consumption");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    if (p == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %.*s", m.partition.len,
                           m.partition.ptr);
    char task[TQ_WIRE_NAME_MAX + 1];
    memcpy(task, m.task.ptr, m.task.len);
    task[m.task.len] = '\0';
    if (tq__partition_reset(p, m.task.len ? task : NULL) != TQ_OK)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no task %s in partition %s", task, p->name);
    tq__reply_ok(c, h);
    tq__wake_parked(c->ctl, p->name);
}

/* ---- seal and status ---- */

static void handle_seal(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_partition_t m;
    if (tq_wire_decode_partition(r, &m) != TQ_OK || !tq_rbuf_done(r) || m.task.len > 0)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed seal");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    if (p == NULL) { /* sealing before any row came: consumers end at once */
        char name[TQ_WIRE_NAME_MAX + 1];
        int status;
        const char *why;
        if ((p = tq__partition_add(c->ctl, tq__name_cstr(m.partition, name), &status, &why)) == NULL)
            return tq__reply_error(c, h, status, "%s", why);
    }
    p->sealed = true;
    tq__reply_ok(c, h);
    tq__wake_parked(c->ctl, p->name);
}

static void handle_status(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_status_t m;
    bool production = h->type == TQ_MSG_PRODUCTION_STATUS;
    if (tq_wire_decode_status(r, &m) != TQ_OK || !tq_rbuf_done(r) ||
        (production ? m.num_fields == 0 : m.task.len == 0))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed status request");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    uint64_t n = p ? p->num_slots : 0;
    uint8_t *bytes = calloc(n + 1, 1);
    if (bytes == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    char name[TQ_WIRE_NAME_MAX + 1];
    if (p != NULL && production) {
        tq_field_t *fields[TQ_WIRE_MAX_FIELDS];
        bool all = true;
        for (uint16_t i = 0; i < m.num_fields; i++)
            all &= (fields[i] = tq__partition_field(p, tq__name_cstr(m.fields[i], name))) != NULL;
        for (uint64_t row = 0; all && row < n; row++) /* 1 ready, 2 lost with a unit */
            bytes[row] = tq__partition_row_ready(p, fields, m.num_fields, NULL, row) ? 1
                         : tq__partition_row_lost(p, fields, m.num_fields, row) ? 2 : 0;
    } else if (p != NULL) {
        tq_task_t *t = tq__partition_task(p, tq__name_cstr(m.task, name), false);
        for (uint64_t row = 0; t != NULL && row < n; row++)
            bytes[row] = t->consumed[row];
    }
    size_t off = tq__reply_begin(c, h);
    tq_wire_put_blob(&c->out, bytes, (uint32_t)n);
    tq__reply_end(c, off);
    free(bytes);
}

static cJSON *partition_json(const tq_partition_t *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "partition", p->name);
    cJSON_AddBoolToObject(o, "sealed", p->sealed);
    cJSON_AddNumberToObject(o, "rows", (double)p->live_rows);
    cJSON_AddNumberToObject(o, "lost", (double)tq__partition_lost_rows(p));
    cJSON *fields = cJSON_AddObjectToObject(o, "fields");
    for (uint32_t i = 0; i < p->num_fields; i++)
        cJSON_AddNumberToObject(fields, p->fields[i].name,
                                (double)tq__field_produced(p, &p->fields[i]));
    cJSON *tasks = cJSON_AddObjectToObject(o, "tasks");
    const tq_list *pos;
    for (pos = p->tasks.next; pos != &p->tasks; pos = pos->next) {
        const tq_task_t *t = tq_list_entry(pos, tq_task_t, link);
        uint64_t consumed, ready;
        tq__task_counts(p, t, &consumed, &ready);
        cJSON *to = cJSON_AddObjectToObject(tasks, t->name);
        cJSON_AddNumberToObject(to, "consumed", (double)consumed);
        cJSON_AddNumberToObject(to, "ready", (double)ready);
        cJSON_AddNumberToObject(to, "in_flight", (double)tq__task_in_flight(t));
    }
    return o;
}

static void handle_partitions(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_str_t want;
    if (tq_wire_decode_partition_filter(r, &want) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed partitions request");
    cJSON *doc = cJSON_CreateArray();
    tq_list *pos;
    for (pos = c->ctl->partitions.next; doc != NULL && pos != &c->ctl->partitions;
         pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (want.len == 0 || tq_str_eq(want, p->name))
            cJSON_AddItemToArray(doc, partition_json(p));
    }
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (text == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    if (want.len > 0 && strcmp(text, "[]") == 0)
        tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %.*s", want.len, want.ptr);
    else {
        size_t off = tq__reply_begin(c, h);
        tq_wire_put_blob(&c->out, text, (uint32_t)strlen(text));
        tq__reply_end(c, off);
    }
    free(text);
}

/* Messages that only notify or give back: still handled once the peer is gone. */
static bool gives_only(uint16_t type)
{
    return type == TQ_MSG_HEARTBEAT || type == TQ_MSG_UNIT_LEAVE || type == TQ_MSG_RELEASE ||
           type == TQ_MSG_RELEASE_UNREAD || type == TQ_MSG_ABORT;
}

static void dispatch(conn_t *c, const tq_wire_header_t *h, const uint8_t *body)
{
    tq_rbuf r = tq_rbuf_make(body, h->body_len);
    c->ctl->request_start_ns = tq__now_ns();
    /* a peer that closed its end gave up on every answer it was owed (a
     * client past its timeout): what it asked for must change nothing */
    if (c->peer_gone && !gives_only(h->type))
        return;
    if (h->flags & TQ_WIRE_FLAG_REPLY) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "a reply sent to the controller");
        return;
    }
    if (!c->greeted && h->type != TQ_MSG_HELLO) {
        tq__reply_error(c, h, TQ_ERR_AUTH, "the first message must be hello");
        c->closing = true;
        return;
    }
    bool storage = c->role == TQ_ROLE_STORAGE;
    switch (h->type) {
    case TQ_MSG_HELLO:
        if (c->greeted)
            return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "hello sent twice");
        return handle_hello(c, h, &r);
    case TQ_MSG_REGISTER_UNIT: return handle_register(c, h, &r);
    case TQ_MSG_HEARTBEAT:
        if (storage && c->unit != NULL)
            c->unit->last_heartbeat_ms = tq__now_ms();
        return;
    case TQ_MSG_UNIT_LEAVE:
        if (storage && c->unit != NULL)
            unit_mark_dead(c->ctl, c->unit, "it shut down", true);
        return;
    case TQ_MSG_UNITS:         return handle_units(c, h, &r);
    case TQ_MSG_ALLOC:         return tq__handle_alloc(c, h, body);
    case TQ_MSG_COMMIT:        return tq__handle_commit(c, h, &r);
    case TQ_MSG_COMMIT_META:   return tq__handle_commit(c, h, &r);
    case TQ_MSG_ABORT:         return tq__handle_abort(c, h, &r);
    case TQ_MSG_GET_META:      return tq__handle_get_meta(c, h, body);
    case TQ_MSG_RELEASE:       return tq__handle_release(c, h, &r);
    case TQ_MSG_CLEAR:         return handle_clear(c, h, &r);
    case TQ_MSG_CLEAR_PARTITION:   return handle_clear_partition(c, h, &r);
    case TQ_MSG_RESET_CONSUMPTION: return handle_reset(c, h, &r);
    case TQ_MSG_KV_GET:        return tq__handle_kv_get(c, h, &r);
    case TQ_MSG_KV_LIST:       return tq__handle_kv_list(c, h, &r);
    case TQ_MSG_KV_CLEAR:      return tq__handle_kv_clear(c, h, &r);
    case TQ_MSG_SEAL:          return handle_seal(c, h, &r);
    case TQ_MSG_RELEASE_UNREAD: return tq__handle_release_unread(c, h, &r);
    case TQ_MSG_CANCEL:        return tq__handle_cancel(c, h, &r);
    case TQ_MSG_PRODUCTION_STATUS:
    case TQ_MSG_CONSUMPTION_STATUS: return handle_status(c, h, &r);
    case TQ_MSG_PARTITIONS:    return handle_partitions(c, h, &r);
    case TQ_MSG_GET_META_ROWS: return tq__handle_get_meta_rows(c, h, &r);
    case TQ_MSG_SET_CUSTOM_META: return tq__handle_set_custom_meta(c, h, &r);
    case TQ_MSG_KV_INDEXES:    return tq__handle_kv_indexes(c, h, &r);
    case TQ_MSG_KV_KEYS:       return tq__handle_kv_keys(c, h, &r);
    case TQ_MSG_PING: /* a client waiting on a parked request checks we are alive */
        tq__reply_ok(c, h);
        break;
    default:
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "unknown message type %u", h->type);
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
            tq__parked_free(pk);
    }
    tq_list_for_each_safe(pos, tmp, &c->allocs)
        tq__alloc_abort(tq_list_entry(pos, alloc_t, conn_link));
    tq__session_leave(c); /* its metas stay with the client, or go back with its end */
    if (c->unit != NULL)
        unit_mark_dead(ctl, c->unit, "its connection closed", false);
    tq_debug("connection fd %d closed", c->fd);
    epoll_ctl(ctl->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    tq_list_remove(&c->link);
    ctl->num_connections--;
    tq_list_remove(&c->flush_link);
    tq_wbuf_free(&c->out);
    free(c->in);
    free(c);
}

/* Handle every whole frame in the input buffer. */
static void conn_process(conn_t *c)
{
    if (c->http)
        return tq__metrics_http(c);
    size_t pos = 0;
    while (!c->closing && c->in_len - pos >= TQ_WIRE_HEADER_SIZE) {
        tq_wire_header_t h;
        if (tq_wire_parse_header(c->in + pos, &h) != TQ_OK) {
            /* no way to find the next frame: drop the connection */
            tq_warn("bad frame header from fd %d, closing", c->fd);
            c->closing = true;
            break;
        }
        if (!c->greeted && h.body_len > MAX_HELLO_BODY) {
            tq__reply_error(c, &h, TQ_ERR_AUTH, "the first message must be a hello");
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
        struct epoll_event ev = {.events = CONN_EVENTS | (pending ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(c->ctl->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->epollout = pending;
    }
    return !(c->closing && !pending);
}

void tq__reply_send_now(conn_t *c)
{
    if (!conn_flush(c))
        c->closing = true; /* closed by the loop, which owns the connection */
}

/* Listeners on (the loop waits for connections) or off (out of descriptors). */
static void listeners_want(tq_controller *ctl, bool on)
{
    int *fds[] = {&ctl->listen_fd, &ctl->metrics_fd};
    for (unsigned i = 0; i < ARRAY_SIZE(fds); i++) {
        struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = fds[i]};
        if (*fds[i] >= 0)
            epoll_ctl(ctl->epfd, EPOLL_CTL_MOD, *fds[i], &ev);
    }
}

/*
 * accept failed for want of a descriptor (EMFILE, ENFILE; Linux says so even
 * with no connection queued). A queued connection keeps the listener readable,
 * so the loop would spin on it: give up the spare descriptor, take the
 * connection and close it at once, then keep the spare again. Without a spare,
 * stop listening for a moment instead.
 * @return true when a connection was shed (there may be more queued).
 */
static bool shed_connection(tq_controller *ctl, int listen_fd, int err)
{
    int fd = -1;
    if (ctl->spare_fd >= 0) {
        close(ctl->spare_fd);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        bool none = fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (fd >= 0)
            close(fd);
        ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (none)
            return false;
    }
    errno = err;
    if (fd >= 0) {
        tq_warn_limited("accept: %m: a new connection closed at once (%u open)",
                        ctl->num_connections);
        return true;
    }
    tq_warn_limited("accept: %m: not accepting for %d ms (%u connections open)",
                    ACCEPT_PAUSE_MS, ctl->num_connections);
    ctl->accept_paused_until_ms = tq__now_ms() + ACCEPT_PAUSE_MS;
    listeners_want(ctl, false);
    return false;
}

/* Accept every pending connection on listen_fd: the wire protocol, or HTTP scrapes. */
static void accept_all(tq_controller *ctl, int listen_fd, bool http)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM) {
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                    tq_warn_limited("accept: %m");
                return;
            }
            if (!shed_connection(ctl, listen_fd, errno))
                return;
            continue;
        }
        if (ctl->num_connections >= ctl->max_connections) {
            tq_warn_limited("%u connections: the limit; one more closed", ctl->num_connections);
            close(fd);
            continue;
        }
        tq__ctrl_socket_tune(fd);
        conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->ctl = ctl;
        c->fd = fd;
        c->http = http;
        c->id = ++ctl->next_id;
        /* a scrape has this long to send its request and read the answer */
        c->hello_due_ms = tq__now_ms() + (http ? ctl->metrics_timeout_ms : HELLO_TIMEOUT_MS);
        tq_wbuf_init(&c->out);
        tq_list_init(&c->flush_link);
        tq_list_init(&c->allocs);
        struct epoll_event ev = {.events = CONN_EVENTS, .data.ptr = c};
        if (epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            tq_warn_limited("epoll_ctl: %m");
            close(fd);
            free(c);
            continue;
        }
        tq_list_insert_tail(&ctl->conns, &c->link);
        ctl->num_connections++;
        tq_debug("connection fd %d accepted", fd);
    }
}

/*
 * A stuck client must not hold memory forever: an allocation not committed
 * and rows not released within the lease are let go (the rows' extents; who
 * consumed them waits for the client's word, fetch.c). The client knows the
 * lease too, and never writes or trusts a read past it (lib/client.c).
 */
static uint64_t expire_leases(tq_controller *ctl, uint64_t now, uint64_t next)
{
    tq_list *cpos, *ctmp, *pos, *tmp;
    tq_list_for_each_safe(cpos, ctmp, &ctl->conns) {
        conn_t *c = tq_list_entry(cpos, conn_t, link);
        tq_list_for_each_safe(pos, tmp, &c->allocs) {
            alloc_t *a = tq_list_entry(pos, alloc_t, conn_link);
            if (a->lease_end_ms <= now) {
                tq_warn("allocation %llu of connection %llu not committed within its %u ms "
                        "lease: aborted", (unsigned long long)a->id,
                        (unsigned long long)c->id, ctl->lease_ms);
                tq__alloc_abort(a);
            } else {
                next = TQ_MIN(next, a->lease_end_ms);
            }
        }
        if (c->http) {
            /* answered or not, read or not: a scrape's memory goes at its deadline */
            if (c->hello_due_ms <= now) {
                tq_warn_limited("metrics connection %llu not done within %u ms: closed "
                                "(%zu bytes unsent)", (unsigned long long)c->id,
                                ctl->metrics_timeout_ms, c->out.len);
                conn_close(c);
                continue;
            }
            next = TQ_MIN(next, c->hello_due_ms);
        } else if (c->closing) {
            /* a peer that never reads its last answer does not keep it here */
            if (c->close_due_ms == 0)
                c->close_due_ms = now + CLOSE_TIMEOUT_MS;
            if (c->close_due_ms <= now) {
                tq_warn_limited("connection %llu did not read its last %zu bytes within %d ms: "
                                "closed", (unsigned long long)c->id, c->out.len,
                                CLOSE_TIMEOUT_MS);
                conn_close(c);
                continue;
            }
            next = TQ_MIN(next, c->close_due_ms);
        } else if (!c->greeted) {
            if (c->hello_due_ms <= now) {
                tq_warn_limited("connection %llu sent no hello in time: closed",
                                (unsigned long long)c->id);
                c->closing = true;
                conn_want_flush(c);
            } else {
                next = TQ_MIN(next, c->hello_due_ms);
            }
        }
    }
    return tq__leases_expire(ctl, now, next);
}

/* Expire parked requests, leases and silent units; returns ms until the next deadline. */
static int run_timers(tq_controller *ctl)
{
    uint64_t now = tq__now_ms(), next = now + 1000;
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->deadline_ms <= now) {
            tq_wire_header_t h = {.type = pk->type, .request_id = pk->request_id};
            tq__parked_resume(pk);
            if (pk->type == TQ_MSG_ALLOC)
                tq__reply_error(pk->conn, &h, TQ_ERR_NOSPACE,
                                "no storage unit had room before the timeout");
            else
                tq__reply_error(pk->conn, &h, TQ_ERR_TIMEOUT,
                                "too few ready rows before the timeout");
            tq__parked_free(pk);
        } else if (pk->deadline_ms < next) {
            next = pk->deadline_ms;
        }
    }
    next = expire_leases(ctl, now, next);
    if (ctl->accept_paused_until_ms != 0) {
        if (ctl->accept_paused_until_ms <= now) {
            if (ctl->spare_fd < 0)
                ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            ctl->accept_paused_until_ms = 0;
            listeners_want(ctl, true);
        } else {
            next = TQ_MIN(next, ctl->accept_paused_until_ms);
        }
    }
    for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
        tq_unit *u = tq_list_entry(pos, tq_unit, link);
        if (!u->alive)
            continue;
        uint64_t due = u->last_heartbeat_ms + (uint64_t)ctl->heartbeat_timeout_ms;
        if (due <= now && u->conn != NULL) {
            /* if this loop was the one stalled (stopped, swapped out), the unit's
             * heartbeats are waiting in its socket: read them before judging it */
            conn_t *c = u->conn;
            if (!conn_read(c))
                conn_close(c); /* the unit is dead now, for its closed connection */
            due = u->last_heartbeat_ms + (uint64_t)ctl->heartbeat_timeout_ms;
        }
        if (!u->alive)
            continue;
        if (due <= now) {
            conn_t *c = u->conn;
            unit_mark_dead(ctl, u, "no heartbeat", false);
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

/*
 * The daemon's descriptors are its connections and a few more (FD_RESERVE):
 * raise the soft RLIMIT_NOFILE to that, as far as the hard limit allows. Below
 * it, serve fewer connections than asked, and say so once, rather than fail
 * accepts at random.
 */
static void fit_fd_limit(tq_controller *ctl)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        tq_warn("getrlimit(RLIMIT_NOFILE): %m");
        return;
    }
    rlim_t need = (rlim_t)ctl->max_connections + FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
        struct rlimit raised = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            tq_info("open files limit raised from %llu to %llu for %u connections",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)want,
                    ctl->max_connections);
            rl.rlim_cur = want;
        } else {
            tq_warn("setrlimit(RLIMIT_NOFILE, %llu): %m", (unsigned long long)want);
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    unsigned fit = rl.rlim_cur > FD_RESERVE + 1 ? (unsigned)(rl.rlim_cur - FD_RESERVE) : 1;
    tq_warn("the open files limit (RLIMIT_NOFILE) is %llu, hard limit %llu: serving at most %u "
            "connections, not the %u of max-connections (raise it: ulimit -n, or LimitNOFILE= "
            "in the systemd unit)", (unsigned long long)rl.rlim_cur,
            (unsigned long long)rl.rlim_max, fit, ctl->max_connections);
    ctl->max_connections = fit;
}

int tq__controller_create(const tq_controller_config_t *cfg, tq_controller **ctl_p)
{
    tq_controller *ctl = calloc(1, sizeof(*ctl));
    if (ctl == NULL)
        return TQ_ERR_NOMEM;
    ctl->epfd = ctl->listen_fd = ctl->stop_fd = ctl->metrics_fd = ctl->spare_fd = -1;
    tq_list_init(&ctl->conns);
    tq_list_init(&ctl->to_flush);
    tq_list_init(&ctl->units);
    tq_list_init(&ctl->partitions);
    tq_list_init(&ctl->parked);
    tq_list_init(&ctl->leases);
    ctl->heartbeat_timeout_ms = cfg->heartbeat_timeout_ms > 0 ? cfg->heartbeat_timeout_ms : 3000;
    ctl->lease_ms = cfg->lease_ms ? cfg->lease_ms : 60000;
    ctl->max_connections = cfg->max_connections ? cfg->max_connections : 4096;
    ctl->metrics_timeout_ms = cfg->metrics_timeout_ms ? cfg->metrics_timeout_ms : 10000;
    ctl->max_partitions = cfg->max_partitions ? cfg->max_partitions : 65536;
    ctl->meta_budget.max = cfg->max_metadata ? cfg->max_metadata : 4ULL << 30;
    int rc = TQ_ERR_IO;
    if (tq__random_bytes(&ctl->epoch, sizeof(ctl->epoch)) != 0) {
        tq_error("no random epoch: %m");
        goto err;
    }
    rc = TQ_ERR_NOMEM;
    if (cfg->token != NULL && cfg->token[0] != '\0' && (ctl->token = strdup(cfg->token)) == NULL)
        goto err;
    if ((ctl->metas = tq_u64map_create()) == NULL || (ctl->greeted = tq_u64map_create()) == NULL ||
        (ctl->sessions = tq_hashmap_create()) == NULL)
        goto err;
    if ((rc = load_plugins(cfg->sampler_plugins)) != TQ_OK)
        goto err;
    if (cfg->fit_fd_limit)
        fit_fd_limit(ctl);
    /* kept to shed a connection when out of descriptors (see shed_connection) */
    if ((ctl->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        tq_warn("open /dev/null: %m: no spare descriptor (out of them, accepting pauses)");
    rc = listen_on(cfg->listen ? cfg->listen : "127.0.0.1:0", &ctl->listen_fd, ctl->address,
                   sizeof(ctl->address));
    if (rc == TQ_OK && cfg->metrics != NULL)
        rc = listen_on(cfg->metrics, &ctl->metrics_fd, ctl->metrics_address,
                       sizeof(ctl->metrics_address));
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
    struct epoll_event mev = {.events = EPOLLIN, .data.ptr = &ctl->metrics_fd};
    if (epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, ctl->listen_fd, &ev) != 0 ||
        epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, ctl->stop_fd, &sev) != 0 ||
        (ctl->metrics_fd >= 0 &&
         epoll_ctl(ctl->epfd, EPOLL_CTL_ADD, ctl->metrics_fd, &mev) != 0)) {
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

const char *tq__controller_metrics_address(const tq_controller *ctl)
{
    return ctl->metrics_fd >= 0 ? ctl->metrics_address : NULL;
}

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
    if (ctl->metrics_fd >= 0)
        tq_info("metrics at http://%s/metrics", ctl->metrics_address);
    uint64_t spin_until = 0; /* poll without sleeping until then: see tq__spin_ns */
    for (;;) {
        int timeout = run_timers(ctl);
        /* room freed since parked puts were last tried: try them again */
        if (units_free(ctl) > ctl->free_seen)
            tq__retry_parked_allocs(ctl);
        ctl->free_seen = units_free(ctl);
        if (tq__now_ns() < spin_until) {
            timeout = 0;
            sched_yield(); /* a client on this core may be about to send */
        }
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
        if (n > 0)
            spin_until = tq__now_ns() + tq__spin_ns();
        for (int i = 0; i < n; i++) {
            void *ptr = events[i].data.ptr;
            if (ptr == NULL) /* its connection was closed earlier in this batch */
                continue;
            if (ptr == &ctl->stop_fd)
                return TQ_OK;
            if (ptr == &ctl->listen_fd || ptr == &ctl->metrics_fd) {
                accept_all(ctl, *(int *)ptr, ptr == &ctl->metrics_fd);
                continue;
            }
            conn_t *c = ptr;
            bool alive = true;
            if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->peer_gone = true; /* before reading what it left behind */
            if (events[i].events & EPOLLOUT)
                alive = conn_flush(c);
            if (alive && (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
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
    if (ctl->metrics_fd >= 0)
        close(ctl->metrics_fd);
    if (ctl->spare_fd >= 0)
        close(ctl->spare_fd);
    if (ctl->epfd >= 0)
        close(ctl->epfd);
    tq_u64map_destroy(ctl->metas);
    tq_u64map_destroy(ctl->greeted);
    tq_hashmap_destroy(ctl->sessions);
    free(ctl->token);
    free(ctl);
}
