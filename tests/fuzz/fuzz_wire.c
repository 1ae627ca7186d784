/* fuzz_wire.c: libFuzzer target: the frame header parser and every message decoder on arbitrary bytes. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/tq.h"
#include "wire.h"
#include "../wire_touch.h"

/*
 * The input is a byte stream cut into frames as the controller's connection
 * reader cuts it: a header, then its body once all of it is there; a bad
 * header or a short body ends the stream. Each body is decoded as the
 * controller decodes a request or as the client decodes a reply, with these
 * oracles besides the sanitizers:
 *  - every body sits alone in a heap block of exactly its size, and every
 *    byte of every string, blob and array a decoder hands out is read, so a
 *    pointer past the body is an ASan report;
 *  - what a decoder accepts obeys the limits wire.h promises (names, counts);
 *  - encoding what was decoded gives back the very bytes it was decoded from.
 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_wire: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ---- reading what decoders hand out ---- */


/* A name as wire.h defines it, or "" where the message allows an empty one. */
static void want_name(const char *what, tq_str_t s, bool may_be_empty)
{
    touch_str(s);
    if (!(may_be_empty && s.len == 0) && !tq_str_is_name(s))
        fail("%s: a decoder accepted a bad name (%u bytes)", what, s.len);
}

static void want(const char *what, bool ok)
{
    if (!ok)
        fail("%s: a decoder accepted a value out of its limits", what);
}

/* A format label: at most TQ_WIRE_FORMAT_MAX bytes of [a-z0-9_.-]. */
static void want_format(const char *what, tq_str_t s)
{
    touch_str(s);
    bool ok = s.len <= TQ_WIRE_FORMAT_MAX;
    for (uint16_t i = 0; ok && i < s.len; i++)
        ok = (s.ptr[i] >= 'a' && s.ptr[i] <= 'z') || (s.ptr[i] >= '0' && s.ptr[i] <= '9') ||
             s.ptr[i] == '_' || s.ptr[i] == '.' || s.ptr[i] == '-';
    want(what, ok);
}

/* The bytes the last decode consumed, [from, r->p), equal what w re-encoded. */
static void want_same(const char *what, const uint8_t *from, const tq_rbuf *r, tq_wbuf *w)
{
    size_t n = (size_t)(r->p - from);
    if (w->failed)
        fail("%s: re-encoding failed", what);
    if (w->len != n || (n > 0 && memcmp(w->data, from, n) != 0))
        fail("%s: decoded %zu bytes but re-encoded %zu different ones", what, n, w->len);
    tq_wbuf_reset(w);
}

/* A NUL-terminated copy of a decoded name, for the encoders that take C strings. */
static char *cstr(tq_str_t s)
{
    char *c = tq_str_dup(s);
    if (c == NULL)
        fail("out of memory");
    return c;
}

/* ---- pieces shared by several messages ---- */

static bool name(tq_rbuf *r, tq_wbuf *w, const char *what)
{
    const uint8_t *from = r->p;
    tq_str_t s;
    if (tq_wire_decode_name(r, &s) != TQ_OK)
        return false;
    want_name(what, s, false);
    char *c = cstr(s);
    tq_wire_encode_name(w, c);
    free(c);
    want_same(what, from, r, w);
    return true;
}

static bool extent(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_wire_extent_t m;
    if (tq_wire_decode_extent(r, &m) != TQ_OK)
        return false;
    want("extent", m.offset + m.length >= m.offset);
    tq_wire_encode_extent(w, &m);
    want_same("extent", from, r, w);
    return true;
}

static void transports(const char *what, uint8_t n, const tq_wire_transport_t *t)
{
    want(what, n <= TQ_WIRE_MAX_TRANSPORTS);
    for (uint8_t i = 0; i < n; i++) {
        want_name(what, t[i].name, false);
        touch_blob(t[i].address);
        touch_blob(t[i].region);
    }
}

static bool unit(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_wire_unit_t m;
    if (tq_wire_decode_unit(r, &m) != TQ_OK)
        return false;
    transports("unit", m.num_transports, m.transports);
    tq_wire_encode_unit(w, &m);
    want_same("unit", from, r, w);
    return true;
}

/* A row's custom meta: at most TQ_MAX_CUSTOM_META bytes, no NUL. */
static bool custom(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_blob_t text;
    if (tq_wire_decode_custom(r, &text) != TQ_OK)
        return false;
    touch_blob(text);
    want("custom meta", text.len <= TQ_MAX_CUSTOM_META &&
                            (text.len == 0 || memchr(text.ptr, '\0', text.len) == NULL));
    tq_wire_encode_custom(w, text.ptr, text.len);
    want_same("custom meta", from, r, w);
    return true;
}

/* A GET_META-shaped answer (GET_META, KV_GET, GET_META_ROWS): fixed part, then
 * per field its description and runs, then the rows' keys and custom meta. */
static void meta_reply(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_msg_get_meta_reply_t m;
    if (tq_wire_decode_get_meta_reply(r, &m) != TQ_OK)
        return;
    want("get_meta reply", m.rows <= TQ_WIRE_MAX_ROWS && m.num_fields <= TQ_WIRE_MAX_FIELDS &&
                               m.indexes.count == m.rows);
    touch_array(m.indexes);
    tq_wire_encode_get_meta_reply(w, &m);
    want_same("get_meta reply", from, r, w);
    for (uint16_t i = 0; i < m.num_fields; i++) {
        tq_wire_meta_field_t f;
        from = r->p;
        if (tq_wire_decode_meta_field(r, m.rows, &f) != TQ_OK)
            return;
        want_name("meta field", f.name, false);
        want("meta field", f.kind <= TQ_FIELD_BYTES &&
                               tq_dtype_size((tq_dtype_t)f.dtype) != 0 && f.ndim <= TQ_MAX_NDIM && f.row_bytes.count == m.rows &&
                               f.row_shape.count == (f.kind == TQ_FIELD_TENSOR ? f.ndim : 0u) &&
                               f.shapes.count == (f.kind == TQ_FIELD_NESTED
                                                      ? (uint64_t)m.rows * f.ndim : 0u) &&
                               (uint64_t)f.num_runs * 20 <= (uint64_t)(r->end - r->p));
        want_format("meta field format", f.format);
        touch_blob(f.present);
        want("meta field present", f.present.ptr == NULL ? f.present.len == 0
                                                         : f.present.len == m.rows);
        for (uint32_t k = 0; f.present.ptr != NULL && k < f.present.len; k++)
            want("meta field present", f.present.ptr[k] <= 1);
        touch_array(f.row_shape);
        touch_array(f.shapes);
        touch_array(f.row_bytes);
        tq_wire_encode_meta_field(w, &f);
        want_same("meta field", from, r, w);
        for (uint32_t k = 0; k < f.num_runs; k++)
            if (!extent(r, w))
                return;
    }
    uint8_t what;
    from = r->p;
    if (tq_wire_decode_rows_info(r, &what) != TQ_OK)
        return;
    want("rows info", (what & ~(TQ_WIRE_ROWS_KEYS | TQ_WIRE_ROWS_CUSTOM)) == 0);
    tq_wire_encode_rows_info(w, what);
    want_same("rows info", from, r, w);
    for (uint32_t i = 0; (what & TQ_WIRE_ROWS_KEYS) && i < m.rows; i++) {
        tq_str_t key;
        from = r->p;
        if (tq_wire_decode_row_key(r, &key) != TQ_OK)
            return;
        want_name("row key", key, true);
        tq_wire_encode_row_key(w, key);
        want_same("row key", from, r, w);
    }
    for (uint32_t i = 0; (what & TQ_WIRE_ROWS_CUSTOM) && i < m.rows; i++)
        if (!custom(r, w))
            return;
}

/* ---- requests, as the controller reads them ---- */

static void alloc_request(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_msg_alloc_t m;
    if (tq_wire_decode_alloc(r, &m) != TQ_OK)
        return;
    want_name("alloc", m.partition, false);
    want("alloc", m.rows >= 1 && m.rows <= TQ_WIRE_MAX_ROWS && m.row_mode <= TQ_ROWS_KEYS &&
                      m.num_fields <= TQ_WIRE_MAX_FIELDS &&
                      (m.num_fields > 0 || m.row_mode == TQ_ROWS_KEYS) &&
                      m.indexes.count == (m.row_mode == TQ_ROWS_INDEXES ? m.rows : 0u));
    touch_array(m.indexes);
    tq_wire_encode_alloc(w, &m);
    want_same("alloc", from, r, w);
    for (uint32_t i = 0; m.row_mode == TQ_ROWS_KEYS && i < m.rows; i++) {
        tq_str_t key;
        tq_blob_t tag;
        from = r->p;
        if (tq_wire_decode_key(r, &key, &tag) != TQ_OK)
            return;
        want_name("key", key, false);
        touch_blob(tag);
        /* the encoder takes the tag as a C string: compare only those it can write */
        if (memchr(tag.ptr, '\0', tag.len) == NULL) {
            char *k = cstr(key), *t = NULL;
            if (tag.len > 0 && (t = malloc((size_t)tag.len + 1)) == NULL)
                fail("out of memory");
            if (t != NULL) {
                memcpy(t, tag.ptr, tag.len);
                t[tag.len] = '\0';
            }
            tq_wire_encode_key(w, k, t);
            want_same("key", from, r, w);
            free(k);
            free(t);
        }
    }
    for (uint16_t i = 0; i < m.num_fields; i++) {
        tq_wire_field_t f;
        from = r->p;
        if (tq_wire_decode_field(r, m.rows, &f) != TQ_OK)
            return;
        want_name("field", f.name, false);
        uint64_t dims = f.kind == TQ_FIELD_TENSOR   ? f.ndim
                        : f.kind == TQ_FIELD_NESTED ? (uint64_t)m.rows * f.ndim
                                                    : m.rows;
        want("field", f.kind <= TQ_FIELD_BYTES && tq_dtype_size((tq_dtype_t)f.dtype) != 0 &&
                          f.ndim <= TQ_MAX_NDIM && f.dims.count == dims &&
                          (f.kind == TQ_FIELD_BYTES) == (f.dtype == TQ_DTYPE_BYTES));
        want_format("field format", f.format);
        touch_array(f.dims);
        tq_wire_encode_field(w, &f);
        want_same("field", from, r, w);
    }
}

static void get_meta_request(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_msg_get_meta_t m;
    if (tq_wire_decode_get_meta(r, &m) != TQ_OK)
        return;
    want_name("get_meta partition", m.partition, false);
    want_name("get_meta task", m.task, m.mode != TQ_FETCH_READY);
    want("get_meta", m.num_fields <= TQ_WIRE_MAX_FIELDS &&
                         (m.num_fields == 0) == (m.mode == TQ_FETCH_INSERT) &&
                         m.mode <= TQ_FETCH_INSERT &&
                         m.batch_size >= 1 && m.batch_size <= TQ_WIRE_MAX_ROWS &&
                         m.timeout_ms >= -1);
    for (uint16_t i = 0; i < m.num_fields; i++)
        want_name("get_meta field", m.fields[i], false);
    want_name("get_meta sampler", m.sampler, true);
    touch_blob(m.sampler_args);
    tq_wire_encode_get_meta(w, &m);
    want_same("get_meta", from, r, w);
}

static void kv_get_request(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_msg_kv_get_t m;
    if (tq_wire_decode_kv_get(r, &m) != TQ_OK)
        return;
    want_name("kv_get partition", m.partition, false);
    want("kv_get", m.count >= 1 && m.count <= TQ_WIRE_MAX_ROWS &&
                       m.num_fields <= TQ_WIRE_MAX_FIELDS);
    for (uint16_t i = 0; i < m.num_fields; i++)
        want_name("kv_get field", m.fields[i], false);
    tq_wire_encode_kv_get(w, &m);
    want_same("kv_get", from, r, w);
    for (uint32_t i = 0; i < m.count; i++)
        if (!name(r, w, "kv_get key"))
            return;
}

static void kv_clear_request(tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    tq_msg_kv_keys_t m;
    if (tq_wire_decode_kv_keys(r, &m) != TQ_OK)
        return;
    want_name("kv_clear partition", m.partition, false);
    want("kv_clear", m.count <= TQ_WIRE_MAX_ROWS);
    tq_wire_encode_kv_keys(w, &m);
    want_same("kv_clear", from, r, w);
    for (uint32_t i = 0; i < m.count; i++)
        if (!name(r, w, "kv_clear key"))
            return;
}

static void request(uint16_t type, tq_rbuf *r, tq_wbuf *w)
{
    const uint8_t *from = r->p;
    switch (type) {
    case TQ_MSG_HELLO: {
        tq_msg_hello_t m;
        if (tq_wire_decode_hello(r, &m) != TQ_OK)
            break;
        want("hello", m.role == TQ_ROLE_CLIENT || m.role == TQ_ROLE_STORAGE);
        touch_str(m.token);
        if (m.session != NULL) /* the rest of the body, exactly */
            touch_str((tq_str_t){(const char *)m.session, TQ_WIRE_SESSION_LEN});
        tq_wire_encode_hello(w, &m);
        want_same("hello", from, r, w);
        break;
    }
    case TQ_MSG_REGISTER_UNIT: {
        tq_msg_register_t m;
        if (tq_wire_decode_register(r, &m) != TQ_OK)
            break;
        transports("register", m.num_transports, m.transports);
        tq_wire_encode_register(w, &m);
        want_same("register", from, r, w);
        break;
    }
    case TQ_MSG_ALLOC: alloc_request(r, w); break;
    case TQ_MSG_COMMIT:
    case TQ_MSG_COMMIT_META:
    case TQ_MSG_ABORT:
    case TQ_MSG_RELEASE:
    case TQ_MSG_RELEASE_UNREAD:
    case TQ_MSG_CANCEL: {
        tq_msg_id_t m;
        if (tq_wire_decode_id(r, &m) != TQ_OK)
            break;
        tq_wire_encode_id(w, &m);
        want_same("id", from, r, w);
        break;
    }
    case TQ_MSG_GET_META: get_meta_request(r, w); break;
    case TQ_MSG_GET_META_ROWS: {
        tq_msg_meta_rows_t m;
        if (tq_wire_decode_meta_rows(r, &m) != TQ_OK)
            break;
        want_name("meta_rows", m.partition, false);
        want("meta_rows", m.count >= 1 && m.count <= TQ_WIRE_MAX_ROWS &&
                              m.indexes.count == m.count && m.num_fields <= TQ_WIRE_MAX_FIELDS);
        touch_array(m.indexes);
        for (uint16_t i = 0; i < m.num_fields; i++)
            want_name("meta_rows field", m.fields[i], false);
        tq_wire_encode_meta_rows(w, &m);
        want_same("meta_rows", from, r, w);
        break;
    }
    case TQ_MSG_SET_CUSTOM_META: {
        tq_msg_set_custom_t m;
        if (tq_wire_decode_set_custom(r, &m) != TQ_OK)
            break;
        want_name("set_custom", m.partition, false);
        want("set_custom", m.count >= 1 && m.count <= TQ_WIRE_MAX_ROWS &&
                               m.indexes.count == m.count);
        touch_array(m.indexes);
        tq_wire_encode_set_custom(w, &m);
        want_same("set_custom", from, r, w);
        for (uint32_t i = 0; i < m.count; i++)
            if (!custom(r, w))
                break;
        break;
    }
    case TQ_MSG_KV_INDEXES: {
        tq_msg_kv_indexes_t m;
        if (tq_wire_decode_kv_indexes(r, &m) != TQ_OK)
            break;
        want_name("kv_indexes", m.partition, false);
        want("kv_indexes", m.create <= 1 && m.count >= 1 && m.count <= TQ_WIRE_MAX_ROWS);
        tq_wire_encode_kv_indexes(w, &m);
        want_same("kv_indexes", from, r, w);
        for (uint32_t i = 0; i < m.count; i++)
            if (!name(r, w, "kv_indexes key"))
                break;
        break;
    }
    case TQ_MSG_KV_KEYS:
    case TQ_MSG_CLEAR: {
        tq_msg_clear_t m;
        if (tq_wire_decode_clear(r, &m) != TQ_OK)
            break;
        want_name("clear", m.partition, false);
        want("clear", m.count <= TQ_WIRE_MAX_ROWS && m.indexes.count == m.count);
        touch_array(m.indexes);
        tq_wire_encode_clear(w, &m);
        want_same("clear", from, r, w);
        break;
    }
    case TQ_MSG_CLEAR_PARTITION:
    case TQ_MSG_RESET_CONSUMPTION:
    case TQ_MSG_SEAL: {
        tq_msg_partition_t m;
        if (tq_wire_decode_partition(r, &m) != TQ_OK)
            break;
        want_name("partition", m.partition, false);
        want_name("partition task", m.task, true);
        tq_wire_encode_partition(w, &m);
        want_same("partition", from, r, w);
        break;
    }
    case TQ_MSG_KV_GET: kv_get_request(r, w); break;
    case TQ_MSG_KV_LIST: {
        tq_msg_kv_list_t m;
        if (tq_wire_decode_kv_list(r, &m) != TQ_OK)
            break;
        want_name("kv_list", m.partition, true);
        touch_str(m.cursor);
        want("kv_list cursor", m.cursor.len <= TQ_WIRE_CURSOR_MAX &&
                                   memchr(m.cursor.ptr, '\0', m.cursor.len) == NULL);
        tq_wire_encode_kv_list(w, &m);
        want_same("kv_list", from, r, w);
        break;
    }
    case TQ_MSG_KV_CLEAR: kv_clear_request(r, w); break;
    case TQ_MSG_PRODUCTION_STATUS:
    case TQ_MSG_CONSUMPTION_STATUS: {
        tq_msg_status_t m;
        if (tq_wire_decode_status(r, &m) != TQ_OK)
            break;
        want_name("status partition", m.partition, false);
        want_name("status task", m.task, true);
        want("status", m.num_fields <= TQ_WIRE_MAX_FIELDS);
        for (uint16_t i = 0; i < m.num_fields; i++)
            want_name("status field", m.fields[i], false);
        tq_wire_encode_status(w, &m);
        want_same("status", from, r, w);
        break;
    }
    default: /* HEARTBEAT, UNITS, UNIT_LEAVE: no body to decode */
        break;
    }
}

/* ---- replies, as the client reads them ---- */

static void reply(uint16_t type, tq_rbuf *r, tq_wbuf *w)
{
    int32_t status = (int32_t)tq_wire_get_u32(r);
    if (r->failed)
        return;
    if (status != TQ_OK) {
        touch_str(tq_wire_get_str(r));
        return;
    }
    const uint8_t *from = r->p;
    switch (type) {
    case TQ_MSG_HELLO: {
        tq_msg_hello_reply_t m;
        if (tq_wire_decode_hello_reply(r, &m) == TQ_OK) {
            tq_wire_encode_hello_reply(w, &m);
            want_same("hello reply", from, r, w);
        }
        break;
    }
    case TQ_MSG_REGISTER_UNIT: {
        tq_msg_register_reply_t m;
        if (tq_wire_decode_register_reply(r, &m) == TQ_OK) {
            tq_wire_encode_register_reply(w, &m);
            want_same("register reply", from, r, w);
        }
        break;
    }
    case TQ_MSG_UNITS: {
        uint32_t n = tq_wire_get_u32(r);
        for (uint32_t i = 0; !r->failed && i < n; i++)
            if (!unit(r, w))
                break;
        break;
    }
    case TQ_MSG_ALLOC: {
        tq_msg_alloc_reply_t m;
        if (tq_wire_decode_alloc_reply(r, &m) != TQ_OK)
            break;
        want("alloc reply", m.rows <= TQ_WIRE_MAX_ROWS && m.num_fields <= TQ_WIRE_MAX_FIELDS &&
                                m.indexes.count == m.rows);
        touch_array(m.indexes);
        tq_wire_encode_alloc_reply(w, &m);
        want_same("alloc reply", from, r, w);
        for (uint16_t i = 0; i < m.num_fields; i++)
            if (!extent(r, w))
                break;
        break;
    }
    case TQ_MSG_GET_META:
    case TQ_MSG_GET_META_ROWS:
    case TQ_MSG_COMMIT_META:
    case TQ_MSG_KV_GET: meta_reply(r, w); break;
    case TQ_MSG_KV_INDEXES: { /* one i64 per key: as many as are there */
        uint64_t n = (uint64_t)(r->end - r->p) / 8;
        touch_array(tq_wire_get_array(r, n));
        break;
    }
    case TQ_MSG_KV_KEYS:
        while (!r->failed && r->p < r->end) {
            tq_str_t key;
            from = r->p;
            if (tq_wire_decode_row_key(r, &key) != TQ_OK)
                break;
            want_name("kv_keys key", key, true);
            tq_wire_encode_row_key(w, key);
            want_same("kv_keys key", from, r, w);
        }
        break;
    case TQ_MSG_CLEAR:
    case TQ_MSG_KV_CLEAR: wire_touch_sink += tq_wire_get_u32(r); break;
    case TQ_MSG_KV_LIST: {
        uint32_t n = tq_wire_get_u32(r);
        for (uint32_t i = 0; !r->failed && i < n; i++) {
            tq_wire_kv_entry_t e;
            from = r->p;
            if (tq_wire_decode_kv_entry(r, &e) != TQ_OK)
                break;
            want_name("kv entry partition", e.partition, false);
            want_name("kv entry key", e.key, false);
            touch_blob(e.tag);
            tq_wire_encode_kv_entry(w, &e);
            want_same("kv entry", from, r, w);
        }
        tq_str_t cursor;
        from = r->p;
        if (r->failed || tq_wire_decode_cursor(r, &cursor) != TQ_OK)
            break;
        touch_str(cursor);
        want("kv_list reply cursor", cursor.len <= TQ_WIRE_CURSOR_MAX &&
                                         memchr(cursor.ptr, '\0', cursor.len) == NULL);
        tq_wire_encode_cursor(w, cursor);
        want_same("kv_list reply cursor", from, r, w);
        break;
    }
    case TQ_MSG_PRODUCTION_STATUS:
    case TQ_MSG_CONSUMPTION_STATUS: touch_blob(tq_wire_get_blob(r)); break;
    default: /* an empty success */
        break;
    }
}

/* ---- frames ---- */

/* A copy in a heap block of exactly n bytes (n == 0: the end of a 1-byte block,
 * so that even one byte read is an overflow). *base_p is what to free. */
static uint8_t *exact_copy(const uint8_t *src, size_t n, uint8_t **base_p)
{
    uint8_t *base = malloc(n ? n : 1);
    if (base == NULL)
        fail("out of memory");
    if (n > 0)
        memcpy(base, src, n);
    *base_p = base;
    return n ? base : base + 1;
}

/* Parse one header; when it is good, check that beginning a frame with what
 * was parsed gives the same bytes. */
static bool header(const uint8_t *p, tq_wire_header_t *h, tq_wbuf *w)
{
    uint8_t *base;
    uint8_t *hp = exact_copy(p, TQ_WIRE_HEADER_SIZE, &base);
    int rc = tq_wire_parse_header(hp, h);
    free(base);
    if (rc == TQ_ERR_PROTOCOL)
        return false;
    if (rc != TQ_OK)
        fail("parse_header returned %d", rc);
    want("header", h->magic == TQ_WIRE_MAGIC && h->version == TQ_WIRE_VERSION && h->type >= 1 &&
                       h->type < TQ_MSG_TYPE_MAX && (h->flags & ~TQ_WIRE_FLAG_REPLY) == 0 &&
                       h->body_len <= TQ_WIRE_MAX_BODY);
    tq_wire_begin(w, h->type, h->flags, h->request_id);
    if (w->failed || w->len != TQ_WIRE_HEADER_SIZE)
        fail("header: re-encoding failed");
    /* tq_wire_begin leaves the body length 0: compare around it, then it */
    uint32_t len = (uint32_t)p[16] | (uint32_t)p[17] << 8 | (uint32_t)p[18] << 16 |
                   (uint32_t)p[19] << 24;
    if (memcmp(w->data, p, 16) != 0 || memcmp(w->data + 20, p + 20, 4) != 0 || len != h->body_len)
        fail("header: parsed fields re-encode differently");
    tq_wbuf_reset(w);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    size_t pos = 0;
    while (size - pos >= TQ_WIRE_HEADER_SIZE) {
        tq_wire_header_t h;
        if (!header(data + pos, &h, &w))
            break; /* the controller drops such a connection */
        pos += TQ_WIRE_HEADER_SIZE;
        if (size - pos < h.body_len)
            break; /* the rest of the body never came */
        uint8_t *base;
        uint8_t *body = exact_copy(data + pos, h.body_len, &base);
        tq_rbuf r = tq_rbuf_make(body, h.body_len);
        if (h.flags & TQ_WIRE_FLAG_REPLY)
            reply(h.type, &r, &w);
        else
            request(h.type, &r, &w);
        if (r.p < body || r.p > r.end)
            fail("a decoder moved the cursor outside the body");
        wire_touch_sink += tq_rbuf_done(&r);
        free(base);
        pos += h.body_len;
    }
    tq_wbuf_free(&w);
    return 0;
}
