/* metrics.c: the controller's counters, and the Prometheus text format over HTTP. */
#define TQ_LOG_COMPONENT "metrics"
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "controller/internal.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"

#define MAX_REQUEST_HEAD   8192        /* an HTTP request head longer than this is refused */
#define MAX_SCRAPE_OUTPUT  (64u << 20) /* answers of all scrapes not yet read; past it: 503 */

/* Upper bounds of the latency buckets, in seconds: 10 us to 10 s. */
static const double bucket_le[TQ_METRICS_BUCKETS] = {
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
    10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
};

/* "ok", "invalid", "not_found", ...: the status codes' names in lower case. */
static char status_names[TQ_METRICS_STATUSES][24];

static void status_names_init(void)
{
    static const char *const upper[TQ_METRICS_STATUSES] = {
#define STATUS_NAME(name, value, text) [-(value)] = #name,
        TQ_STATUS_MAP(STATUS_NAME)
#undef STATUS_NAME
    };
    for (int s = 0; s < TQ_METRICS_STATUSES; s++) {
        const char *name = upper[s] == NULL ? "other" : s == 0 ? "ok" : upper[s] + strlen("TQ_ERR_");
        size_t k = 0;
        for (; name[k] != '\0' && k < sizeof(status_names[s]) - 1; k++)
            status_names[s][k] = (char)tolower((unsigned char)name[k]);
        status_names[s][k] = '\0';
    }
}

void tq__metrics_answered(tq_controller *ctl, uint16_t type, int status)
{
    tq_metrics_t *m = &ctl->metrics;
    if (type >= TQ_MSG_TYPE_MAX || status > 0 || -status >= TQ_METRICS_STATUSES)
        return;
    m->answered[type][-status]++;
    double seconds = (double)(tq__now_ns() - ctl->request_start_ns) / 1e9;
    unsigned b = 0;
    while (b < TQ_METRICS_BUCKETS && seconds > bucket_le[b])
        b++;
    m->latency[type][b]++; /* b == TQ_METRICS_BUCKETS: past the last bound */
    m->latency_sum[type] += seconds;
}

/* ---- the text format ---- */

static void emit(tq_wbuf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(tq_wbuf *w, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        tq_wire_put_bytes(w, line, TQ_MIN((size_t)n, sizeof(line) - 1));
}

/* A label value with backslash, quote and newline escaped, as the format asks. */
static const char *label(const char *s, char *buf)
{
    size_t n = 0;
    for (; *s != '\0' && n + 2 <= 2 * TQ_WIRE_NAME_MAX; s++) { /* names are shorter */
        if (*s == '\\' || *s == '"' || *s == '\n')
            buf[n++] = '\\';
        buf[n++] = *s == '\n' ? 'n' : *s;
    }
    buf[n] = '\0';
    return buf;
}

static void family(tq_wbuf *w, const char *name, const char *type, const char *help)
{
    emit(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_requests(const tq_controller *ctl, tq_wbuf *w)
{
    const tq_metrics_t *m = &ctl->metrics;
    family(w, "tq_requests_total", "counter", "Requests answered, by message type and status.");
    for (uint16_t t = 1; t < TQ_MSG_TYPE_MAX; t++)
        for (int s = 0; s < TQ_METRICS_STATUSES; s++)
            if (m->answered[t][s] > 0)
                emit(w, "tq_requests_total{type=\"%s\",status=\"%s\"} %llu\n", tq__msg_name(t),
                     status_names[s], (unsigned long long)m->answered[t][s]);
    family(w, "tq_request_duration_seconds", "histogram",
           "From a request's arrival to its answer, time parked included.");
    for (uint16_t t = 1; t < TQ_MSG_TYPE_MAX; t++) {
        uint64_t count = 0;
        for (unsigned b = 0; b <= TQ_METRICS_BUCKETS; b++)
            count += m->latency[t][b];
        if (count == 0)
            continue;
        uint64_t cumulative = 0;
        for (unsigned b = 0; b < TQ_METRICS_BUCKETS; b++) {
            cumulative += m->latency[t][b];
            emit(w, "tq_request_duration_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n",
                 tq__msg_name(t), bucket_le[b], (unsigned long long)cumulative);
        }
        emit(w, "tq_request_duration_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n",
             tq__msg_name(t), (unsigned long long)count);
        emit(w, "tq_request_duration_seconds_sum{type=\"%s\"} %.9f\n", tq__msg_name(t),
             m->latency_sum[t]);
        emit(w, "tq_request_duration_seconds_count{type=\"%s\"} %llu\n", tq__msg_name(t),
             (unsigned long long)count);
    }
    family(w, "tq_bytes_allocated_total", "counter", "Bytes of pool handed out to puts.");
    emit(w, "tq_bytes_allocated_total %llu\n", (unsigned long long)m->bytes_allocated);
    family(w, "tq_bytes_committed_total", "counter", "Bytes of puts committed.");
    emit(w, "tq_bytes_committed_total %llu\n", (unsigned long long)m->bytes_committed);
}

static void render_units(const tq_controller *ctl, tq_wbuf *w)
{
    static const char *const names[] = {"tq_unit_alive", "tq_unit_pool_bytes",
                                        "tq_unit_pool_used_bytes"};
    static const char *const helps[] = {"1 while the storage unit is alive.",
                                        "Bytes in the storage unit's pool.",
                                        "Bytes of the pool allocated, committed or not."};
    for (unsigned k = 0; k < ARRAY_SIZE(names); k++) {
        family(w, names[k], "gauge", helps[k]);
        const tq_list *pos;
        for (pos = ctl->units.next; pos != &ctl->units; pos = pos->next) {
            const tq_unit *u = tq_list_entry(pos, tq_unit, link);
            uint64_t v = k == 0 ? u->alive : k == 1 ? u->capacity : tq_pool_used(u->pool);
            emit(w, "%s{unit=\"%u\",incarnation=\"%u\"} %llu\n", names[k], u->id, u->incarnation,
                 (unsigned long long)v);
        }
    }
}

/* One pass over each partition's rows per field and per task (see tq__task_counts). */
static void render_partitions(const tq_controller *ctl, tq_wbuf *w)
{
    char p_label[2 * TQ_WIRE_NAME_MAX + 1], x_label[2 * TQ_WIRE_NAME_MAX + 1];
    const tq_list *pos, *tpos;
    family(w, "tq_partitions", "gauge", "Partitions held.");
    emit(w, "tq_partitions %u\n", ctl->num_partitions);
    family(w, "tq_partition_rows", "gauge", "Live rows of a partition.");
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        const tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        emit(w, "tq_partition_rows{partition=\"%s\"} %llu\n", label(p->name, p_label),
             (unsigned long long)p->live_rows);
    }
    family(w, "tq_field_rows_produced", "gauge", "Live rows whose field is produced.");
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        const tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        label(p->name, p_label);
        for (uint32_t i = 0; i < p->num_fields; i++)
            emit(w, "tq_field_rows_produced{partition=\"%s\",field=\"%s\"} %llu\n", p_label,
                 label(p->fields[i].name, x_label),
                 (unsigned long long)tq__field_produced(p, &p->fields[i]));
    }
    tq_wbuf consumed;
    tq_wbuf_init(&consumed);
    family(w, "tq_task_rows_ready", "gauge",
           "Live rows with every field produced that the task has not consumed.");
    family(&consumed, "tq_task_rows_consumed", "gauge", "Live rows the task has consumed.");
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        const tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        label(p->name, p_label);
        for (tpos = p->tasks.next; tpos != &p->tasks; tpos = tpos->next) {
            const tq_task_t *t = tq_list_entry(tpos, tq_task_t, link);
            uint64_t n_consumed, n_ready;
            tq__task_counts(p, t, &n_consumed, &n_ready);
            label(t->name, x_label);
            emit(w, "tq_task_rows_ready{partition=\"%s\",task=\"%s\"} %llu\n", p_label, x_label,
                 (unsigned long long)n_ready);
            emit(&consumed, "tq_task_rows_consumed{partition=\"%s\",task=\"%s\"} %llu\n",
                 p_label, x_label, (unsigned long long)n_consumed);
        }
    }
    tq_wire_put_bytes(w, consumed.data, consumed.len);
    w->failed |= consumed.failed;
    tq_wbuf_free(&consumed);
}

static void render(const tq_controller *ctl, tq_wbuf *w)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, status_names_init);
    render_requests(ctl, w);
    render_units(ctl, w);
    render_partitions(ctl, w);
    unsigned parked_meta = 0, parked_alloc = 0;
    const tq_list *pos;
    for (pos = ctl->parked.next; pos != &ctl->parked; pos = pos->next) {
        const parked_t *pk = tq_list_entry(pos, parked_t, link);
        parked_meta += pk->type == TQ_MSG_GET_META;
        parked_alloc += pk->type == TQ_MSG_ALLOC;
    }
    family(w, "tq_parked_requests", "gauge",
           "Requests waiting: get_meta for ready rows, alloc for room in the pools.");
    emit(w, "tq_parked_requests{type=\"get_meta\"} %u\n", parked_meta);
    emit(w, "tq_parked_requests{type=\"alloc\"} %u\n", parked_alloc);
    family(w, "tq_connections", "gauge", "Open connections, metrics scrapes included.");
    emit(w, "tq_connections %u\n", ctl->num_connections);
    family(w, "tq_metadata_bytes", "gauge", "Row metadata held, against --max-metadata.");
    emit(w, "tq_metadata_bytes %llu\n", (unsigned long long)ctl->meta_budget.used);
    family(w, "tq_metadata_limit_bytes", "gauge", "The --max-metadata limit.");
    emit(w, "tq_metadata_limit_bytes %llu\n", (unsigned long long)ctl->meta_budget.max);
}

/* ---- HTTP: one GET per connection, then close ---- */

/* The body becomes the connection's output with the head moved in front of
 * it, so a large scrape is never held twice. */
static void respond(conn_t *c, const char *status, const char *type, tq_wbuf *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, type, body->len);
    size_t len = body->len, head_len = TQ_MIN((size_t)n, sizeof(head) - 1);
    tq_wire_put_bytes(body, head, head_len); /* room for it */
    if (!body->failed) {
        memmove(body->data + head_len, body->data, len);
        memcpy(body->data, head, head_len);
    }
    tq_wbuf_free(&c->out); /* empty: this is the connection's one answer */
    c->out = *body;
    tq_wbuf_init(body);
    c->closing = true;
}

/* Bytes held for the answers of scrapes not yet read. */
static size_t scrape_output_held(const tq_controller *ctl)
{
    size_t bytes = 0;
    const tq_list *pos;
    for (pos = ctl->conns.next; pos != &ctl->conns; pos = pos->next) {
        const conn_t *c = tq_list_entry(pos, conn_t, link);
        if (c->http)
            bytes += c->out.cap;
    }
    return bytes;
}

void tq__metrics_http(conn_t *c)
{
    if (c->closing) { /* answered: what it pipelined after its GET is dropped */
        c->in_len = 0;
        return;
    }
    const char *head = (const char *)c->in;
    bool complete = memmem(head, c->in_len, "\r\n\r\n", 4) != NULL ||
                    memmem(head, c->in_len, "\n\n", 2) != NULL;
    if (!complete && c->in_len < MAX_REQUEST_HEAD)
        return; /* wait for the rest (the metrics timeout bounds how long) */
    tq_wbuf body;
    tq_wbuf_init(&body);
    const char *plain = "text/plain; charset=utf-8";
    tq_controller *ctl = c->ctl;
    /* one scrape is always served; more at once only while their answers fit */
    size_t held = scrape_output_held(ctl);
    bool busy = held > 0 && held + ctl->metrics_last_len > MAX_SCRAPE_OUTPUT;
    if (!complete) {
        emit(&body, "request head over %d bytes\n", MAX_REQUEST_HEAD);
        respond(c, "431 Request Header Fields Too Large", plain, &body);
    } else if (c->in_len < 4 || memcmp(head, "GET ", 4) != 0) {
        emit(&body, "only GET /metrics is served\n");
        respond(c, "405 Method Not Allowed", plain, &body);
    } else if (strncmp(head + 4, "/metrics ", 9) != 0 && strncmp(head + 4, "/metrics?", 9) != 0) {
        emit(&body, "not found: try /metrics\n");
        respond(c, "404 Not Found", plain, &body);
    } else {
        if (!busy) {
            render(ctl, &body);
            ctl->metrics_last_len = body.len;
            busy = !body.failed && held > 0 && held + body.len > MAX_SCRAPE_OUTPUT;
        }
        if (busy) {
            tq_warn_limited("metrics: %zu bytes of answers not yet read: a scrape refused", held);
            tq_wbuf_free(&body);
            emit(&body, "too many scrapes in flight: try again later\n");
            respond(c, "503 Service Unavailable", plain, &body);
        } else if (body.failed) {
            tq_wbuf_free(&body);
            emit(&body, "out of memory\n");
            respond(c, "500 Internal Server Error", plain, &body);
        } else {
            respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body);
        }
    }
    tq_wbuf_free(&body);
    c->in_len = 0;
}
