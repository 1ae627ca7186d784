/* wire.c: encoders and bounds-checked decoders of the control protocol. */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

#include "tq/tq.h"

_Static_assert(TQ_MAX_FORMAT == TQ_WIRE_FORMAT_MAX, "one limit on format labels");

/* ---- output cursor ---- */

void tq_wbuf_init(tq_wbuf *w) { memset(w, 0, sizeof(*w)); }

void tq_wbuf_free(tq_wbuf *w)
{
    free(w->data);
    tq_wbuf_init(w);
}

void tq_wbuf_reset(tq_wbuf *w)
{
    w->len = 0;
    w->failed = false;
}

void tq_wbuf_consume(tq_wbuf *w, size_t n)
{
    if (n >= w->len) {
        w->len = 0;
        return;
    }
    memmove(w->data, w->data + n, w->len - n);
    w->len -= n;
}

static uint8_t *wbuf_reserve(tq_wbuf *w, size_t n)
{
    if (w->failed)
        return NULL;
    if (n > SIZE_MAX / 2 - w->len) {
        w->failed = true;
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *data = realloc(w->data, cap);
        if (data == NULL) {
            w->failed = true;
            return NULL;
        }
        w->data = data;
        w->cap = cap;
    }
    uint8_t *p = w->data + w->len;
    w->len += n;
    return p;
}

static void put_le(tq_wbuf *w, uint64_t v, int n)
{
    uint8_t *p = wbuf_reserve(w, (size_t)n);
    if (p == NULL)
        return;
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

void tq_wire_put_u8(tq_wbuf *w, uint8_t v) { put_le(w, v, 1); }
void tq_wire_put_u16(tq_wbuf *w, uint16_t v) { put_le(w, v, 2); }
void tq_wire_put_u32(tq_wbuf *w, uint32_t v) { put_le(w, v, 4); }
void tq_wire_put_u64(tq_wbuf *w, uint64_t v) { put_le(w, v, 8); }

void tq_wire_put_bytes(tq_wbuf *w, const void *p, size_t n)
{
    uint8_t *dst = wbuf_reserve(w, n);
    if (dst != NULL && n > 0)
        memcpy(dst, p, n);
}

void tq_wire_put_str(tq_wbuf *w, const char *s, size_t len)
{
    if (len > UINT16_MAX)
        len = UINT16_MAX;
    tq_wire_put_u16(w, (uint16_t)len);
    tq_wire_put_bytes(w, s, len);
}

void tq_wire_put_cstr(tq_wbuf *w, const char *s)
{
    tq_wire_put_str(w, s ? s : "", s ? strlen(s) : 0);
}

void tq_wire_put_blob(tq_wbuf *w, const void *p, uint32_t len)
{
    tq_wire_put_u32(w, len);
    tq_wire_put_bytes(w, p, len);
}

void tq_wire_put_array(tq_wbuf *w, const uint64_t *v, size_t count)
{
    uint8_t *p = wbuf_reserve(w, count * 8);
    if (p == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        uint64_t x = v[i];
        for (int b = 0; b < 8; b++, x >>= 8)
            *p++ = (uint8_t)x;
    }
}

/* ---- input cursor ---- */

/* The one place that checks a length against what is left. */
static const uint8_t *rbuf_take(tq_rbuf *r, uint64_t n)
{
    if (r->failed || n > (uint64_t)(r->end - r->p)) {
        r->failed = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

static uint64_t get_le(tq_rbuf *r, int n)
{
    const uint8_t *p = rbuf_take(r, (uint64_t)n);
    uint64_t v = 0;
    if (p != NULL)
        for (int i = n - 1; i >= 0; i--)
            v = (v << 8) | p[i];
    return v;
}

uint8_t tq_wire_get_u8(tq_rbuf *r) { return (uint8_t)get_le(r, 1); }
uint16_t tq_wire_get_u16(tq_rbuf *r) { return (uint16_t)get_le(r, 2); }
uint32_t tq_wire_get_u32(tq_rbuf *r) { return (uint32_t)get_le(r, 4); }
uint64_t tq_wire_get_u64(tq_rbuf *r) { return get_le(r, 8); }

tq_str_t tq_wire_get_str(tq_rbuf *r)
{
    uint16_t len = tq_wire_get_u16(r);
    const uint8_t *p = rbuf_take(r, len);
    return p ? (tq_str_t){(const char *)p, len} : (tq_str_t){"", 0};
}

tq_blob_t tq_wire_get_blob(tq_rbuf *r)
{
    uint32_t len = tq_wire_get_u32(r);
    const uint8_t *p = rbuf_take(r, len);
    return p ? (tq_blob_t){p, len} : (tq_blob_t){NULL, 0};
}

tq_array_t tq_wire_get_array(tq_rbuf *r, uint64_t count)
{
    if (count > UINT32_MAX) {
        r->failed = true;
        return (tq_array_t){NULL, 0};
    }
    const uint8_t *p = rbuf_take(r, count * 8);
    return p ? (tq_array_t){p, (uint32_t)count} : (tq_array_t){NULL, 0};
}

bool tq_str_eq(tq_str_t s, const char *c)
{
    size_t n = strlen(c);
    return n == s.len && memcmp(s.ptr, c, n) == 0;
}

char *tq_str_dup(tq_str_t s)
{
    char *c = malloc((size_t)s.len + 1);
    if (c != NULL) {
        memcpy(c, s.ptr, s.len);
        c[s.len] = '\0';
    }
    return c;
}

bool tq_str_is_name(tq_str_t s)
{
    return s.len > 0 && s.len <= TQ_WIRE_NAME_MAX && memchr(s.ptr, '\0', s.len) == NULL;
}

bool tq_str_is_format(tq_str_t s)
{
    if (s.len > TQ_WIRE_FORMAT_MAX)
        return false;
    for (uint16_t i = 0; i < s.len; i++) {
        char ch = s.ptr[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
              ch == '-'))
            return false;
    }
    return true;
}

/* A list of n strings, each a name on decoding. */
static void put_strs(tq_wbuf *w, const tq_str_t *s, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++)
        tq_wire_put_str(w, s[i].ptr, s[i].len);
}

static bool get_names(tq_rbuf *r, tq_str_t *s, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++)
        if (tq_wire_decode_name(r, &s[i]) != TQ_OK)
            return false;
    return true;
}

/* ---- frames ---- */

size_t tq_wire_begin(tq_wbuf *w, uint16_t type, uint8_t flags, uint64_t request_id)
{
    size_t offset = w->len;
    tq_wire_put_u32(w, TQ_WIRE_MAGIC);
    tq_wire_put_u8(w, TQ_WIRE_VERSION);
    tq_wire_put_u8(w, flags);
    tq_wire_put_u16(w, type);
    tq_wire_put_u64(w, request_id);
    tq_wire_put_u32(w, 0); /* body length, patched by tq_wire_end */
    tq_wire_put_u32(w, 0);
    return offset;
}

void tq_wire_end(tq_wbuf *w, size_t offset)
{
    if (w->failed)
        return;
    size_t body = w->len - offset - TQ_WIRE_HEADER_SIZE;
    if (body > TQ_WIRE_MAX_BODY) { /* the peer would reject it: fail here, clearly */
        w->failed = true;
        return;
    }
    uint8_t *p = w->data + offset + 16;
    for (int i = 0; i < 4; i++, body >>= 8)
        p[i] = (uint8_t)body;
}

size_t tq_wire_begin_reply(tq_wbuf *w, uint16_t type, uint64_t request_id, int status,
                           const char *message)
{
    size_t offset = tq_wire_begin(w, type, TQ_WIRE_FLAG_REPLY, request_id);
    tq_wire_put_u32(w, (uint32_t)status);
    if (status != TQ_OK) {
        tq_wire_put_cstr(w, message ? message : tq_status_string(status));
        tq_wire_end(w, offset);
    }
    return offset;
}

int tq_wire_parse_header(const uint8_t *p, tq_wire_header_t *h_p)
{
    tq_rbuf r = tq_rbuf_make(p, TQ_WIRE_HEADER_SIZE);
    tq_wire_header_t h;
    h.magic = tq_wire_get_u32(&r);
    h.version = tq_wire_get_u8(&r);
    h.flags = tq_wire_get_u8(&r);
    h.type = tq_wire_get_u16(&r);
    h.request_id = tq_wire_get_u64(&r);
    h.body_len = tq_wire_get_u32(&r);
    uint32_t reserved = tq_wire_get_u32(&r);
    if (h.magic != TQ_WIRE_MAGIC || h.version != TQ_WIRE_VERSION || reserved != 0 ||
        h.type == 0 || h.type >= TQ_MSG_TYPE_MAX || (h.flags & ~TQ_WIRE_FLAG_REPLY) != 0 ||
        h.body_len > TQ_WIRE_MAX_BODY)
        return TQ_ERR_PROTOCOL;
    *h_p = h;
    return TQ_OK;
}

/* ---- messages ---- */

static int decoded(const tq_rbuf *r) { return r->failed ? TQ_ERR_PROTOCOL : TQ_OK; }

void tq_wire_encode_hello(tq_wbuf *w, const tq_msg_hello_t *m)
{
    tq_wire_put_u8(w, m->role);
    tq_wire_put_str(w, m->token.ptr, m->token.len);
    if (m->session != NULL)
        tq_wire_put_bytes(w, m->session, TQ_WIRE_SESSION_LEN);
}

int tq_wire_decode_hello(tq_rbuf *r, tq_msg_hello_t *m)
{
    m->role = tq_wire_get_u8(r);
    m->token = tq_wire_get_str(r);
    m->session = NULL;
    if (m->role != TQ_ROLE_CLIENT && m->role != TQ_ROLE_STORAGE)
        return TQ_ERR_PROTOCOL;
    if (!r->failed && r->end - r->p == TQ_WIRE_SESSION_LEN) /* else nothing, or malformed */
        m->session = rbuf_take(r, TQ_WIRE_SESSION_LEN);
    return decoded(r);
}

void tq_wire_encode_hello_reply(tq_wbuf *w, const tq_msg_hello_reply_t *m)
{
    tq_wire_put_u64(w, m->conn_id);
    tq_wire_put_u64(w, m->epoch);
}

int tq_wire_decode_hello_reply(tq_rbuf *r, tq_msg_hello_reply_t *m)
{
    m->conn_id = tq_wire_get_u64(r);
    m->epoch = tq_wire_get_u64(r);
    return decoded(r);
}

static void encode_transports(tq_wbuf *w, uint8_t n, const tq_wire_transport_t *t)
{
    tq_wire_put_u8(w, n);
    for (uint8_t i = 0; i < n; i++) {
        tq_wire_put_str(w, t[i].name.ptr, t[i].name.len);
        tq_wire_put_blob(w, t[i].address.ptr, t[i].address.len);
        tq_wire_put_blob(w, t[i].region.ptr, t[i].region.len);
    }
}

static int decode_transports(tq_rbuf *r, uint8_t *n_p, tq_wire_transport_t *t)
{
    uint8_t n = tq_wire_get_u8(r);
    if (n > TQ_WIRE_MAX_TRANSPORTS)
        return TQ_ERR_PROTOCOL;
    for (uint8_t i = 0; i < n; i++) {
        t[i].name = tq_wire_get_str(r);
        t[i].address = tq_wire_get_blob(r);
        t[i].region = tq_wire_get_blob(r);
        if (!r->failed && !tq_str_is_name(t[i].name))
            return TQ_ERR_PROTOCOL;
    }
    *n_p = n;
    return decoded(r);
}

void tq_wire_encode_register(tq_wbuf *w, const tq_msg_register_t *m)
{
    tq_wire_put_u64(w, m->capacity);
    encode_transports(w, m->num_transports, m->transports);
}

int tq_wire_decode_register(tq_rbuf *r, tq_msg_register_t *m)
{
    m->capacity = tq_wire_get_u64(r);
    return decode_transports(r, &m->num_transports, m->transports);
}

void tq_wire_encode_register_reply(tq_wbuf *w, const tq_msg_register_reply_t *m)
{
    tq_wire_put_u32(w, m->unit_id);
    tq_wire_put_u32(w, m->incarnation);
}

int tq_wire_decode_register_reply(tq_rbuf *r, tq_msg_register_reply_t *m)
{
    m->unit_id = tq_wire_get_u32(r);
    m->incarnation = tq_wire_get_u32(r);
    return decoded(r);
}

void tq_wire_encode_unit(tq_wbuf *w, const tq_wire_unit_t *m)
{
    tq_wire_put_u32(w, m->id);
    tq_wire_put_u32(w, m->incarnation);
    tq_wire_put_u8(w, m->alive);
    tq_wire_put_u64(w, m->capacity);
    tq_wire_put_u64(w, m->used);
    encode_transports(w, m->num_transports, m->transports);
}

int tq_wire_decode_unit(tq_rbuf *r, tq_wire_unit_t *m)
{
    m->id = tq_wire_get_u32(r);
    m->incarnation = tq_wire_get_u32(r);
    m->alive = tq_wire_get_u8(r);
    m->capacity = tq_wire_get_u64(r);
    m->used = tq_wire_get_u64(r);
    return decode_transports(r, &m->num_transports, m->transports);
}

void tq_wire_encode_alloc(tq_wbuf *w, const tq_msg_alloc_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->rows);
    tq_wire_put_u8(w, m->row_mode);
    if (m->row_mode == TQ_ROWS_INDEXES)
        tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->rows * 8);
    tq_wire_put_u16(w, m->num_fields);
    tq_wire_put_u32(w, m->wait_ms);
    tq_wire_put_u32(w, m->commit_ms);
}

int tq_wire_decode_alloc(tq_rbuf *r, tq_msg_alloc_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->rows = tq_wire_get_u32(r);
    m->row_mode = tq_wire_get_u8(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->rows == 0 ||
        m->rows > TQ_WIRE_MAX_ROWS || m->row_mode > TQ_ROWS_KEYS)
        return TQ_ERR_PROTOCOL;
    m->indexes = m->row_mode == TQ_ROWS_INDEXES ? tq_wire_get_array(r, m->rows)
                                                : (tq_array_t){NULL, 0};
    m->num_fields = tq_wire_get_u16(r);
    m->wait_ms = tq_wire_get_u32(r);
    m->commit_ms = tq_wire_get_u32(r);
    if ((m->num_fields == 0 && m->row_mode != TQ_ROWS_KEYS) || m->num_fields > TQ_WIRE_MAX_FIELDS)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

/* Bytes fields have the bytes dtype and no dimensions; nothing else does. */
static bool field_schema_ok(tq_str_t name, uint8_t kind, uint8_t dtype, uint8_t ndim)
{
    return tq_str_is_name(name) && kind <= TQ_FIELD_BYTES &&
           tq_dtype_size((tq_dtype_t)dtype) != 0 && ndim <= TQ_MAX_NDIM &&
           (kind == TQ_FIELD_BYTES) == (dtype == TQ_DTYPE_BYTES) &&
           (kind != TQ_FIELD_BYTES || ndim == 0);
}

/* How many 8-byte entries follow a field of this kind. */
static uint64_t field_dims_count(uint8_t kind, uint8_t ndim, uint32_t rows)
{
    switch (kind) {
    case TQ_FIELD_TENSOR: return ndim;
    case TQ_FIELD_NESTED: return (uint64_t)rows * ndim;
    default:              return rows;
    }
}

void tq_wire_encode_field(tq_wbuf *w, const tq_wire_field_t *m)
{
    tq_wire_put_str(w, m->name.ptr, m->name.len);
    tq_wire_put_u8(w, m->kind);
    tq_wire_put_u8(w, m->dtype);
    tq_wire_put_u8(w, m->ndim);
    tq_wire_put_str(w, m->format.ptr, m->format.len);
    tq_wire_put_bytes(w, m->dims.ptr, (size_t)m->dims.count * 8);
}

int tq_wire_decode_field(tq_rbuf *r, uint32_t rows, tq_wire_field_t *m)
{
    m->name = tq_wire_get_str(r);
    m->kind = tq_wire_get_u8(r);
    m->dtype = tq_wire_get_u8(r);
    m->ndim = tq_wire_get_u8(r);
    m->format = tq_wire_get_str(r);
    if (r->failed || !field_schema_ok(m->name, m->kind, m->dtype, m->ndim) ||
        !tq_str_is_format(m->format))
        return TQ_ERR_PROTOCOL;
    m->dims = tq_wire_get_array(r, field_dims_count(m->kind, m->ndim, rows));
    return decoded(r);
}

void tq_wire_encode_extent(tq_wbuf *w, const tq_wire_extent_t *m)
{
    tq_wire_put_u32(w, m->unit);
    tq_wire_put_u64(w, m->offset);
    tq_wire_put_u64(w, m->length);
}

int tq_wire_decode_extent(tq_rbuf *r, tq_wire_extent_t *m)
{
    m->unit = tq_wire_get_u32(r);
    m->offset = tq_wire_get_u64(r);
    m->length = tq_wire_get_u64(r);
    if (m->offset + m->length < m->offset)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_alloc_reply(tq_wbuf *w, const tq_msg_alloc_reply_t *m)
{
    tq_wire_put_u64(w, m->alloc_id);
    tq_wire_put_u32(w, m->lease_ms);
    tq_wire_put_u32(w, m->commit_ms);
    tq_wire_put_u32(w, m->rows);
    tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->rows * 8);
    tq_wire_put_u16(w, m->num_fields);
}

int tq_wire_decode_alloc_reply(tq_rbuf *r, tq_msg_alloc_reply_t *m)
{
    m->alloc_id = tq_wire_get_u64(r);
    m->lease_ms = tq_wire_get_u32(r);
    m->commit_ms = tq_wire_get_u32(r);
    m->rows = tq_wire_get_u32(r);
    if (m->rows > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    m->indexes = tq_wire_get_array(r, m->rows);
    m->num_fields = tq_wire_get_u16(r);
    if (m->num_fields > TQ_WIRE_MAX_FIELDS)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_id(tq_wbuf *w, const tq_msg_id_t *m) { tq_wire_put_u64(w, m->id); }

int tq_wire_decode_id(tq_rbuf *r, tq_msg_id_t *m)
{
    m->id = tq_wire_get_u64(r);
    return decoded(r);
}

void tq_wire_encode_get_meta(tq_wbuf *w, const tq_msg_get_meta_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_str(w, m->task.ptr, m->task.len);
    tq_wire_put_u16(w, m->num_fields);
    put_strs(w, m->fields, m->num_fields);
    tq_wire_put_u32(w, m->batch_size);
    tq_wire_put_str(w, m->sampler.ptr, m->sampler.len);
    tq_wire_put_blob(w, m->sampler_args.ptr, m->sampler_args.len);
    tq_wire_put_u32(w, (uint32_t)m->timeout_ms);
    tq_wire_put_u8(w, m->mode);
}

int tq_wire_decode_get_meta(tq_rbuf *r, tq_msg_get_meta_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->task = tq_wire_get_str(r);
    m->num_fields = tq_wire_get_u16(r);
    if (r->failed || !tq_str_is_name(m->partition) ||
        (m->task.len > 0 && !tq_str_is_name(m->task)) || m->num_fields > TQ_WIRE_MAX_FIELDS ||
        !get_names(r, m->fields, m->num_fields))
        return TQ_ERR_PROTOCOL;
    m->batch_size = tq_wire_get_u32(r);
    m->sampler = tq_wire_get_str(r);
    m->sampler_args = tq_wire_get_blob(r);
    m->timeout_ms = (int32_t)tq_wire_get_u32(r);
    m->mode = tq_wire_get_u8(r);
    if (m->batch_size == 0 || m->batch_size > TQ_WIRE_MAX_ROWS || m->timeout_ms < -1 ||
        (m->sampler.len > 0 && !tq_str_is_name(m->sampler)) || m->mode > TQ_FETCH_INSERT ||
        (m->mode == TQ_FETCH_READY && m->task.len == 0) ||
        ((m->num_fields == 0) != (m->mode == TQ_FETCH_INSERT)))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_get_meta_reply(tq_wbuf *w, const tq_msg_get_meta_reply_t *m)
{
    tq_wire_put_u64(w, m->meta_id);
    tq_wire_put_u32(w, m->lease_ms);
    tq_wire_put_u32(w, m->rows);
    tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->rows * 8);
    tq_wire_put_u16(w, m->num_fields);
}

int tq_wire_decode_get_meta_reply(tq_rbuf *r, tq_msg_get_meta_reply_t *m)
{
    m->meta_id = tq_wire_get_u64(r);
    m->lease_ms = tq_wire_get_u32(r);
    m->rows = tq_wire_get_u32(r);
    if (m->rows > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    m->indexes = tq_wire_get_array(r, m->rows);
    m->num_fields = tq_wire_get_u16(r);
    if (m->num_fields > TQ_WIRE_MAX_FIELDS)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_meta_field(tq_wbuf *w, const tq_wire_meta_field_t *m)
{
    tq_wire_put_str(w, m->name.ptr, m->name.len);
    tq_wire_put_u8(w, m->kind);
    tq_wire_put_u8(w, m->dtype);
    tq_wire_put_u8(w, m->ndim);
    tq_wire_put_str(w, m->format.ptr, m->format.len);
    tq_wire_put_bytes(w, m->row_shape.ptr, (size_t)m->row_shape.count * 8);
    tq_wire_put_bytes(w, m->shapes.ptr, (size_t)m->shapes.count * 8);
    tq_wire_put_bytes(w, m->row_bytes.ptr, (size_t)m->row_bytes.count * 8);
    tq_wire_put_u8(w, m->present.ptr != NULL);
    if (m->present.ptr != NULL)
        tq_wire_put_bytes(w, m->present.ptr, m->present.len);
    tq_wire_put_u32(w, m->num_runs);
}

int tq_wire_decode_meta_field(tq_rbuf *r, uint32_t rows, tq_wire_meta_field_t *m)
{
    m->name = tq_wire_get_str(r);
    m->kind = tq_wire_get_u8(r);
    m->dtype = tq_wire_get_u8(r);
    m->ndim = tq_wire_get_u8(r);
    m->format = tq_wire_get_str(r);
    if (r->failed || !field_schema_ok(m->name, m->kind, m->dtype, m->ndim) ||
        !tq_str_is_format(m->format))
        return TQ_ERR_PROTOCOL;
    bool tensor = m->kind == TQ_FIELD_TENSOR, nested = m->kind == TQ_FIELD_NESTED;
    m->row_shape = tq_wire_get_array(r, tensor ? m->ndim : 0);
    m->shapes = tq_wire_get_array(r, nested ? (uint64_t)rows * m->ndim : 0);
    m->row_bytes = tq_wire_get_array(r, rows);
    uint8_t some_absent = tq_wire_get_u8(r);
    m->present = (tq_blob_t){NULL, 0};
    if (some_absent > 1)
        return TQ_ERR_PROTOCOL;
    if (some_absent) {
        const uint8_t *p = rbuf_take(r, rows);
        for (uint32_t i = 0; p != NULL && i < rows; i++)
            if (p[i] > 1)
                return TQ_ERR_PROTOCOL;
        m->present = (tq_blob_t){p ? p : (const uint8_t *)"", p ? rows : 0};
    }
    m->num_runs = tq_wire_get_u32(r);
    /* each run is 20 bytes on the wire: a count beyond what is left is a lie */
    if (!r->failed && m->num_runs > (uint64_t)(r->end - r->p) / 20)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_meta_rows(tq_wbuf *w, const tq_msg_meta_rows_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->count);
    tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->count * 8);
    tq_wire_put_u16(w, m->num_fields);
    put_strs(w, m->fields, m->num_fields);
}

int tq_wire_decode_meta_rows(tq_rbuf *r, tq_msg_meta_rows_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->count = tq_wire_get_u32(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->count == 0 ||
        m->count > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    m->indexes = tq_wire_get_array(r, m->count);
    m->num_fields = tq_wire_get_u16(r);
    if (r->failed || m->num_fields > TQ_WIRE_MAX_FIELDS || !get_names(r, m->fields, m->num_fields))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_set_custom(tq_wbuf *w, const tq_msg_set_custom_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->count);
    tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->count * 8);
}

int tq_wire_decode_set_custom(tq_rbuf *r, tq_msg_set_custom_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->count = tq_wire_get_u32(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->count == 0 ||
        m->count > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    m->indexes = tq_wire_get_array(r, m->count);
    return decoded(r);
}

void tq_wire_encode_custom(tq_wbuf *w, const void *text, uint32_t len)
{
    tq_wire_put_blob(w, text, len);
}

int tq_wire_decode_custom(tq_rbuf *r, tq_blob_t *custom)
{
    *custom = tq_wire_get_blob(r);
    if (!r->failed && (custom->len > TQ_MAX_CUSTOM_META ||
                       memchr(custom->ptr, '\0', custom->len) != NULL))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_rows_info(tq_wbuf *w, uint8_t what) { tq_wire_put_u8(w, what); }

int tq_wire_decode_rows_info(tq_rbuf *r, uint8_t *what)
{
    *what = tq_wire_get_u8(r);
    if (*what & ~(TQ_WIRE_ROWS_KEYS | TQ_WIRE_ROWS_CUSTOM))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_row_key(tq_wbuf *w, tq_str_t key) { tq_wire_put_str(w, key.ptr, key.len); }

int tq_wire_decode_row_key(tq_rbuf *r, tq_str_t *key)
{
    *key = tq_wire_get_str(r);
    if (!r->failed && key->len > 0 && !tq_str_is_name(*key))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_clear(tq_wbuf *w, const tq_msg_clear_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->count);
    tq_wire_put_bytes(w, m->indexes.ptr, (size_t)m->count * 8);
}

int tq_wire_decode_clear(tq_rbuf *r, tq_msg_clear_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->count = tq_wire_get_u32(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->count > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    m->indexes = tq_wire_get_array(r, m->count);
    return decoded(r);
}

void tq_wire_encode_partition(tq_wbuf *w, const tq_msg_partition_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_str(w, m->task.ptr, m->task.len);
}

int tq_wire_decode_partition(tq_rbuf *r, tq_msg_partition_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->task = tq_wire_get_str(r);
    if (r->failed || !tq_str_is_name(m->partition) ||
        (m->task.len > 0 && !tq_str_is_name(m->task)))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_name(tq_wbuf *w, const char *name) { tq_wire_put_cstr(w, name); }

int tq_wire_decode_name(tq_rbuf *r, tq_str_t *name)
{
    *name = tq_wire_get_str(r);
    return !r->failed && tq_str_is_name(*name) ? TQ_OK : TQ_ERR_PROTOCOL;
}

void tq_wire_encode_key(tq_wbuf *w, const char *key, const char *tag_json)
{
    tq_wire_put_cstr(w, key);
    tq_wire_put_blob(w, tag_json, tag_json ? (uint32_t)strlen(tag_json) : 0);
}

int tq_wire_decode_key(tq_rbuf *r, tq_str_t *key, tq_blob_t *tag)
{
    if (tq_wire_decode_name(r, key) != TQ_OK)
        return TQ_ERR_PROTOCOL;
    *tag = tq_wire_get_blob(r);
    return decoded(r);
}

void tq_wire_encode_kv_get(tq_wbuf *w, const tq_msg_kv_get_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->count);
    tq_wire_put_u16(w, m->num_fields);
    put_strs(w, m->fields, m->num_fields);
}

int tq_wire_decode_kv_get(tq_rbuf *r, tq_msg_kv_get_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->count = tq_wire_get_u32(r);
    m->num_fields = tq_wire_get_u16(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->count == 0 ||
        m->count > TQ_WIRE_MAX_ROWS || m->num_fields > TQ_WIRE_MAX_FIELDS ||
        !get_names(r, m->fields, m->num_fields))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_kv_indexes(tq_wbuf *w, const tq_msg_kv_indexes_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u8(w, m->create);
    tq_wire_put_u32(w, m->count);
}

int tq_wire_decode_kv_indexes(tq_rbuf *r, tq_msg_kv_indexes_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->create = tq_wire_get_u8(r);
    m->count = tq_wire_get_u32(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->create > 1 || m->count == 0 ||
        m->count > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_kv_keys(tq_wbuf *w, const tq_msg_kv_keys_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_u32(w, m->count);
}

int tq_wire_decode_kv_keys(tq_rbuf *r, tq_msg_kv_keys_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->count = tq_wire_get_u32(r);
    if (r->failed || !tq_str_is_name(m->partition) || m->count > TQ_WIRE_MAX_ROWS)
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_partition_filter(tq_wbuf *w, const char *partition) { tq_wire_put_cstr(w, partition); }

int tq_wire_decode_partition_filter(tq_rbuf *r, tq_str_t *partition)
{
    *partition = tq_wire_get_str(r);
    if (!r->failed && partition->len > 0 && !tq_str_is_name(*partition))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_kv_entry(tq_wbuf *w, const tq_wire_kv_entry_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_str(w, m->key.ptr, m->key.len);
    tq_wire_put_blob(w, m->tag.ptr, m->tag.len);
}

int tq_wire_decode_kv_entry(tq_rbuf *r, tq_wire_kv_entry_t *m)
{
    if (tq_wire_decode_name(r, &m->partition) != TQ_OK || tq_wire_decode_name(r, &m->key) != TQ_OK)
        return TQ_ERR_PROTOCOL;
    m->tag = tq_wire_get_blob(r);
    return decoded(r);
}

void tq_wire_encode_cursor(tq_wbuf *w, tq_str_t cursor)
{
    tq_wire_put_str(w, cursor.ptr, cursor.len);
}

int tq_wire_decode_cursor(tq_rbuf *r, tq_str_t *cursor)
{
    *cursor = tq_wire_get_str(r);
    if (!r->failed && (cursor->len > TQ_WIRE_CURSOR_MAX ||
                       memchr(cursor->ptr, '\0', cursor->len) != NULL))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}

void tq_wire_encode_kv_list(tq_wbuf *w, const tq_msg_kv_list_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_encode_cursor(w, m->cursor);
    tq_wire_put_u32(w, m->limit);
}

int tq_wire_decode_kv_list(tq_rbuf *r, tq_msg_kv_list_t *m)
{
    if (tq_wire_decode_partition_filter(r, &m->partition) != TQ_OK ||
        tq_wire_decode_cursor(r, &m->cursor) != TQ_OK)
        return TQ_ERR_PROTOCOL;
    m->limit = tq_wire_get_u32(r);
    return decoded(r);
}

void tq_wire_encode_status(tq_wbuf *w, const tq_msg_status_t *m)
{
    tq_wire_put_str(w, m->partition.ptr, m->partition.len);
    tq_wire_put_str(w, m->task.ptr, m->task.len);
    tq_wire_put_u16(w, m->num_fields);
    put_strs(w, m->fields, m->num_fields);
}

int tq_wire_decode_status(tq_rbuf *r, tq_msg_status_t *m)
{
    m->partition = tq_wire_get_str(r);
    m->task = tq_wire_get_str(r);
    m->num_fields = tq_wire_get_u16(r);
    if (r->failed || !tq_str_is_name(m->partition) ||
        (m->task.len > 0 && !tq_str_is_name(m->task)) || m->num_fields > TQ_WIRE_MAX_FIELDS ||
        !get_names(r, m->fields, m->num_fields))
        return TQ_ERR_PROTOCOL;
    return decoded(r);
}
