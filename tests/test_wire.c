/* test_wire.c: the control-protocol codec: round trips of every message inside real
 * frames, truncation and garbling (run under AddressSanitizer: every decoded body
 * sits in its own exactly-sized heap block), hostile inputs, headers, tq_wbuf. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tq/tq.h"
#include "wire.h"
#include "wire_touch.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define STR(lit)   ((tq_str_t){(lit), (uint16_t)(sizeof(lit) - 1)})
#define ARR(a)     tq_array_of((a), (uint32_t)N_ELEMS(a))
#define NO_ARR     ((tq_array_t){NULL, 0})
#define MiB        ((size_t)1 << 20)

/* ---- helpers ---- */


/* A copy of n bytes in a heap block of exactly n bytes; for n == 0 the pointer is
 * the end of a 1-byte block, so even a 1-byte read is an overflow. */
typedef struct {
    uint8_t *base;
    uint8_t *p;
    size_t   n;
} exact_t;

static exact_t exact_copy(const void *src, size_t n)
{
    exact_t e;
    e.base = malloc(n ? n : 1);
    cr_assert(ne(ptr, e.base, NULL));
    if (n > 0)
        memcpy(e.base, src, n);
    e.p = n ? e.base : e.base + 1;
    e.n = n;
    return e;
}
static void exact_free(exact_t *e) { free(e->base); }

static void expect_done(const tq_rbuf *r, const char *what)
{
    cr_expect(eq(int, r->failed, 0), "%s: cursor failed", what);
    cr_expect(eq(sz, (size_t)(r->end - r->p), 0), "%s: bytes left over", what);
}

static void expect_str(tq_str_t got, tq_str_t want, const char *what)
{
    cr_expect(eq(u16, got.len, want.len), "%s: length", what);
    if (got.len == want.len && want.len > 0) {
        struct cr_mem g = {got.ptr, got.len}, x = {want.ptr, want.len};
        cr_expect(eq(mem, g, x), "%s: bytes", what);
    }
}

static void expect_blob(tq_blob_t got, tq_blob_t want, const char *what)
{
    cr_expect(eq(u32, got.len, want.len), "%s: length", what);
    if (got.len == want.len && want.len > 0) {
        struct cr_mem g = {got.ptr, got.len}, x = {want.ptr, want.len};
        cr_expect(eq(mem, g, x), "%s: bytes", what);
    }
}

static void expect_array(tq_array_t got, tq_array_t want, const char *what)
{
    cr_expect(eq(u32, got.count, want.count), "%s: count", what);
    if (got.count != want.count)
        return;
    for (uint32_t i = 0; i < want.count; i++) {
        cr_expect(eq(u64, tq_array_u64(got, i), tq_array_u64(want, i)), "%s[%u]", what, i);
        cr_expect(eq(i64, tq_array_i64(got, i), tq_array_i64(want, i)), "%s[%u]", what, i);
    }
}

static void expect_extent(tq_wire_extent_t got, tq_wire_extent_t want, const char *what)
{
    cr_expect(eq(u32, got.unit, want.unit), "%s: unit", what);
    cr_expect(eq(u64, got.offset, want.offset), "%s: offset", what);
    cr_expect(eq(u64, got.length, want.length), "%s: length", what);
}

static void expect_transport(const tq_wire_transport_t *got, const tq_wire_transport_t *want)
{
    expect_str(got->name, want->name, "transport name");
    expect_blob(got->address, want->address, "transport address");
    expect_blob(got->region, want->region, "transport region");
}

/* ---- fixtures ---- */

static const uint8_t rdma_address[] = {
    0x00, 0x01, 0xfe, 0xff, 0x00, 0x80, 0x7f, 'g',  'i',  'd',  0x00, 0x00, 0xfe, 0x80,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x1a, 0x4b, 0xff, 0xfe, 0x12, 0x34, 0x56,
    0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0x00,
};
static uint8_t rdma_region[300]; /* > 255 bytes: the blob length is really u32 */
static const uint8_t tcp_address[] = "10.1.2.3:7000";
static const uint8_t tcp_region[] = {0xde, 0xad, 0x00, 0xbe, 0xef};

static void fill_region(void)
{
    for (size_t i = 0; i < sizeof(rdma_region); i++)
        rdma_region[i] = (uint8_t)(i * 37u + 11u);
}

static tq_msg_hello_t fx_hello(void)
{
    return (tq_msg_hello_t){.role = TQ_ROLE_STORAGE, .token = STR("s3cr3t\x01\xfftoken")};
}

static tq_msg_register_t fx_register(void)
{
    fill_region();
    tq_msg_register_t m;
    memset(&m, 0, sizeof(m));
    m.capacity = (UINT64_C(1) << 40) + 12345;
    m.num_transports = 2;
    m.transports[0] = (tq_wire_transport_t){
        STR("rdma"), {rdma_address, sizeof(rdma_address)}, {rdma_region, sizeof(rdma_region)}};
    m.transports[1] = (tq_wire_transport_t){
        STR("tcp"), {tcp_address, sizeof(tcp_address) - 1}, {tcp_region, sizeof(tcp_region)}};
    return m;
}

static const tq_msg_register_reply_t fx_register_reply = {.unit_id = 7, .incarnation = 0xDEADBEEFu};

static void fx_units(tq_wire_unit_t u[2])
{
    tq_msg_register_t reg = fx_register();
    memset(u, 0, 2 * sizeof(*u));
    u[0].id = 1;
    u[0].incarnation = 3;
    u[0].alive = 1;
    u[0].capacity = reg.capacity;
    u[0].used = 4096;
    u[0].num_transports = 2;
    u[0].transports[0] = reg.transports[0];
    u[0].transports[1] = reg.transports[1];
    u[1].id = 0xFFFFFFFEu;
    u[1].incarnation = 0;
    u[1].alive = 0;
    u[1].capacity = UINT64_MAX;
    u[1].used = UINT64_MAX - 1;
    u[1].num_transports = 0;
}

static const uint64_t idx4[] = {0, 1, UINT64_C(1) << 40, UINT64_MAX - 1};
static const uint64_t obs_shape[] = {84, 84};
static const uint64_t tok_shapes[] = {3, 2, 0, 7, 17, 1, 5, 5}; /* 4 rows x ndim 2 */
static const uint64_t text_lengths[] = {5, 0, 100, UINT64_C(1) << 33};

/* with_indexes: 4 rows with indexes; else 3 rows without. */
static tq_msg_alloc_t fx_alloc(bool with_indexes, tq_wire_field_t f[4])
{
    uint32_t rows = with_indexes ? 4 : 3;
    f[0] = (tq_wire_field_t){STR("obs"), TQ_FIELD_TENSOR, TQ_DTYPE_F32, 2, ARR(obs_shape),
                             STR("")};
    f[1] = (tq_wire_field_t){STR("reward"), TQ_FIELD_TENSOR, TQ_DTYPE_F64, 0, NO_ARR,
                             STR("py.float")};
    f[2] = (tq_wire_field_t){STR("tokens"), TQ_FIELD_NESTED, TQ_DTYPE_I64, 2,
                             tq_array_of(tok_shapes, rows * 2), STR("list")};
    f[3] = (tq_wire_field_t){STR("text"), TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0,
                             tq_array_of(text_lengths, rows), STR("utf-8_012345678")};
    return (tq_msg_alloc_t){
        .partition = with_indexes ? STR("train") : STR("eval/with spaces"),
        .rows = rows,
        .row_mode = with_indexes ? TQ_ROWS_INDEXES : TQ_ROWS_NEW,
        .indexes = with_indexes ? ARR(idx4) : NO_ARR,
        .num_fields = 4,
        .wait_ms = with_indexes ? 5000 : 0,
        .commit_ms = with_indexes ? 0xFFFFFFFFu : 1,
    };
}

static const tq_wire_extent_t fx_extents[] = {
    {2, UINT64_C(1) << 36, 4096},
    {TQ_WIRE_NO_UNIT, 0, 0},
    {0, UINT64_MAX - 10, 10}, /* ends exactly at 2^64 - 1: no overflow */
};

static const tq_msg_alloc_reply_t fx_alloc_reply = {
    .alloc_id = 0x0123456789ABCDEFull, .lease_ms = 60000, .commit_ms = 4321, .rows = 4, .indexes = {(const uint8_t *)idx4, 4}, .num_fields = 3};

static const tq_msg_id_t fx_id = {.id = 0xFEDCBA9876543210ull};

static tq_msg_get_meta_t fx_get_meta(void)
{
    static const char args[] = "{\"seed\":42,\"bin\":\"\x00\x01\"}";
    tq_msg_get_meta_t m;
    memset(&m, 0, sizeof(m));
    m.partition = STR("train");
    m.task = STR("learner-0");
    m.num_fields = 3;
    m.fields[0] = STR("obs");
    m.fields[1] = STR("tokens");
    m.fields[2] = STR("text");
    m.batch_size = 32;
    m.sampler = STR("sequential");
    m.sampler_args = (tq_blob_t){(const uint8_t *)args, sizeof(args) - 1};
    m.timeout_ms = -1;
    return m;
}

static const uint64_t meta_idx[] = {5, 6, UINT64_C(1) << 50};
static const uint64_t obs_row_bytes[] = {28224, 28224, 28224};
static const uint64_t tok_meta_shapes[] = {3, 0, 17};
static const uint64_t tok_row_bytes[] = {24, 0, 136};
static const uint64_t text_row_bytes[] = {5, 0, 100};
static const uint8_t tok_present[] = {1, 0, 1}; /* row 1 never produced tokens */

static const tq_msg_get_meta_reply_t fx_meta_reply = {
    .meta_id = 0xA5A5A5A55A5A5A5Aull, .lease_ms = 0xFFFFFFFFu, .rows = 3, .indexes = {(const uint8_t *)meta_idx, 3}, .num_fields = 3};

typedef struct {
    tq_wire_meta_field_t f;
    tq_wire_extent_t     runs[3];
} meta_fx_t;

static void fx_meta_fields(meta_fx_t m[3])
{
    memset(m, 0, 3 * sizeof(*m));
    m[0].f = (tq_wire_meta_field_t){STR("obs"), TQ_FIELD_TENSOR, TQ_DTYPE_F32, 2,
                                    ARR(obs_shape), NO_ARR, ARR(obs_row_bytes), 2, STR(""),
                                    {NULL, 0}};
    m[0].runs[0] = (tq_wire_extent_t){0, 0, 28224 * 2};
    m[0].runs[1] = (tq_wire_extent_t){1, 4096, 28224};
    m[1].f = (tq_wire_meta_field_t){STR("tokens"), TQ_FIELD_NESTED, TQ_DTYPE_I64, 1,
                                    NO_ARR, ARR(tok_meta_shapes), ARR(tok_row_bytes), 1,
                                    STR("list"), {tok_present, 3}};
    m[1].runs[0] = (tq_wire_extent_t){2, UINT64_C(1) << 20, 160};
    m[2].f = (tq_wire_meta_field_t){STR("text"), TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0,
                                    NO_ARR, NO_ARR, ARR(text_row_bytes), 3, STR("utf8"),
                                    {NULL, 0}};
    m[2].runs[0] = (tq_wire_extent_t){0, 100, 5};
    m[2].runs[1] = (tq_wire_extent_t){TQ_WIRE_NO_UNIT, 0, 0};
    m[2].runs[2] = (tq_wire_extent_t){1, 200, 100};
}

static const uint64_t clear_idx[] = {1, 2, 3};
static const tq_msg_clear_t fx_clear = {
    .partition = {"train", 5}, .count = 3, .indexes = {(const uint8_t *)clear_idx, 3}};

static const tq_msg_partition_t fx_part_task = {{"train", 5}, {"learner-0", 9}};
static const tq_msg_partition_t fx_part_all = {{"train", 5}, {"", 0}};

/* ---- body writers (the message part of a frame body) ---- */

static void put_hello(tq_wbuf *w)
{
    tq_msg_hello_t m = fx_hello();
    tq_wire_encode_hello(w, &m);
}
static void put_register(tq_wbuf *w)
{
    tq_msg_register_t m = fx_register();
    tq_wire_encode_register(w, &m);
}
static void put_register_reply(tq_wbuf *w) { tq_wire_encode_register_reply(w, &fx_register_reply); }
static void put_units(tq_wbuf *w)
{
    tq_wire_unit_t u[2];
    fx_units(u);
    tq_wire_put_u32(w, 2);
    tq_wire_encode_unit(w, &u[0]);
    tq_wire_encode_unit(w, &u[1]);
}
static void put_alloc_common(tq_wbuf *w, bool with_indexes)
{
    tq_wire_field_t f[4];
    tq_msg_alloc_t a = fx_alloc(with_indexes, f);
    tq_wire_encode_alloc(w, &a);
    for (int i = 0; i < 4; i++)
        tq_wire_encode_field(w, &f[i]);
}
static void put_alloc_idx(tq_wbuf *w) { put_alloc_common(w, true); }
static void put_alloc_noidx(tq_wbuf *w) { put_alloc_common(w, false); }
static void put_extent(tq_wbuf *w) { tq_wire_encode_extent(w, &fx_extents[0]); }
static void put_alloc_reply(tq_wbuf *w)
{
    tq_wire_encode_alloc_reply(w, &fx_alloc_reply);
    for (size_t i = 0; i < N_ELEMS(fx_extents); i++)
        tq_wire_encode_extent(w, &fx_extents[i]);
}
static void put_id(tq_wbuf *w) { tq_wire_encode_id(w, &fx_id); }
static void put_get_meta(tq_wbuf *w)
{
    tq_msg_get_meta_t m = fx_get_meta();
    tq_wire_encode_get_meta(w, &m);
}
static void put_meta_reply(tq_wbuf *w)
{
    meta_fx_t m[3];
    fx_meta_fields(m);
    tq_wire_encode_get_meta_reply(w, &fx_meta_reply);
    for (int i = 0; i < 3; i++) {
        tq_wire_encode_meta_field(w, &m[i].f);
        for (uint32_t k = 0; k < m[i].f.num_runs; k++)
            tq_wire_encode_extent(w, &m[i].runs[k]);
    }
}
static void put_clear(tq_wbuf *w) { tq_wire_encode_clear(w, &fx_clear); }
static void put_part_task(tq_wbuf *w) { tq_wire_encode_partition(w, &fx_part_task); }
static void put_part_all(tq_wbuf *w) { tq_wire_encode_partition(w, &fx_part_all); }

/* ---- whole-body decoders: decode, touch everything handed out, return the status ---- */

static void touch_transports(const tq_wire_transport_t *t)
{
    for (int i = 0; i < TQ_WIRE_MAX_TRANSPORTS; i++) {
        touch_str(t[i].name);
        touch_blob(t[i].address);
        touch_blob(t[i].region);
    }
}

static int dec_hello(tq_rbuf *r)
{
    tq_msg_hello_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_hello(r, &m);
    touch_str(m.token);
    return rc;
}
static int dec_register(tq_rbuf *r)
{
    tq_msg_register_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_register(r, &m);
    touch_transports(m.transports);
    return rc;
}
static int dec_register_reply(tq_rbuf *r)
{
    tq_msg_register_reply_t m;
    return tq_wire_decode_register_reply(r, &m);
}
static int dec_unit(tq_rbuf *r)
{
    tq_wire_unit_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_unit(r, &m);
    touch_transports(m.transports);
    return rc;
}
static int dec_units(tq_rbuf *r)
{
    uint32_t count = tq_wire_get_u32(r);
    if (r->failed)
        return TQ_ERR_PROTOCOL;
    for (uint32_t i = 0; i < count; i++) {
        int rc = dec_unit(r);
        if (rc != TQ_OK)
            return rc;
    }
    return r->failed ? TQ_ERR_PROTOCOL : TQ_OK;
}
static uint32_t g_rows; /* the row count dec_field / dec_meta_field pass on */
static int dec_field(tq_rbuf *r)
{
    tq_wire_field_t f;
    memset(&f, 0, sizeof(f));
    int rc = tq_wire_decode_field(r, g_rows, &f);
    touch_str(f.name);
    touch_str(f.format);
    touch_array(f.dims);
    return rc;
}
static int dec_alloc(tq_rbuf *r)
{
    tq_msg_alloc_t a;
    memset(&a, 0, sizeof(a));
    int rc = tq_wire_decode_alloc(r, &a);
    touch_str(a.partition);
    touch_array(a.indexes);
    return rc;
}
static int dec_alloc_all(tq_rbuf *r)
{
    tq_msg_alloc_t a;
    memset(&a, 0, sizeof(a));
    int rc = tq_wire_decode_alloc(r, &a);
    touch_str(a.partition);
    touch_array(a.indexes);
    if (rc != TQ_OK)
        return rc;
    g_rows = a.rows;
    for (uint16_t i = 0; i < a.num_fields; i++)
        if ((rc = dec_field(r)) != TQ_OK)
            return rc;
    return r->failed ? TQ_ERR_PROTOCOL : TQ_OK;
}
static int dec_extent(tq_rbuf *r)
{
    tq_wire_extent_t e;
    return tq_wire_decode_extent(r, &e);
}
static int dec_alloc_reply(tq_rbuf *r)
{
    tq_msg_alloc_reply_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_alloc_reply(r, &m);
    touch_array(m.indexes);
    return rc;
}
static int dec_alloc_reply_all(tq_rbuf *r)
{
    tq_msg_alloc_reply_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_alloc_reply(r, &m);
    touch_array(m.indexes);
    if (rc != TQ_OK)
        return rc;
    for (uint16_t i = 0; i < m.num_fields; i++)
        if ((rc = dec_extent(r)) != TQ_OK)
            return rc;
    return r->failed ? TQ_ERR_PROTOCOL : TQ_OK;
}
static int dec_id(tq_rbuf *r)
{
    tq_msg_id_t m;
    return tq_wire_decode_id(r, &m);
}
static int dec_get_meta(tq_rbuf *r)
{
    tq_msg_get_meta_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_get_meta(r, &m);
    touch_str(m.partition);
    touch_str(m.task);
    for (int i = 0; i < TQ_WIRE_MAX_FIELDS; i++)
        touch_str(m.fields[i]);
    touch_str(m.sampler);
    touch_blob(m.sampler_args);
    return rc;
}
static int dec_meta_field(tq_rbuf *r)
{
    tq_wire_meta_field_t f;
    memset(&f, 0, sizeof(f));
    int rc = tq_wire_decode_meta_field(r, g_rows, &f);
    touch_str(f.name);
    touch_str(f.format);
    touch_blob(f.present);
    touch_array(f.row_shape);
    touch_array(f.shapes);
    touch_array(f.row_bytes);
    return rc;
}
static int dec_meta_reply(tq_rbuf *r)
{
    tq_msg_get_meta_reply_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_get_meta_reply(r, &m);
    touch_array(m.indexes);
    return rc;
}
static int dec_meta_reply_all(tq_rbuf *r)
{
    tq_msg_get_meta_reply_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_get_meta_reply(r, &m);
    touch_array(m.indexes);
    if (rc != TQ_OK)
        return rc;
    for (uint16_t i = 0; i < m.num_fields; i++) {
        tq_wire_meta_field_t f;
        memset(&f, 0, sizeof(f));
        rc = tq_wire_decode_meta_field(r, m.rows, &f);
        touch_str(f.name);
        touch_array(f.row_shape);
        touch_array(f.shapes);
        touch_array(f.row_bytes);
        if (rc != TQ_OK)
            return rc;
        for (uint32_t k = 0; k < f.num_runs; k++)
            if ((rc = dec_extent(r)) != TQ_OK)
                return rc;
    }
    return r->failed ? TQ_ERR_PROTOCOL : TQ_OK;
}
static int dec_clear(tq_rbuf *r)
{
    tq_msg_clear_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_clear(r, &m);
    touch_str(m.partition);
    touch_array(m.indexes);
    return rc;
}
static int dec_partition(tq_rbuf *r)
{
    tq_msg_partition_t m;
    memset(&m, 0, sizeof(m));
    int rc = tq_wire_decode_partition(r, &m);
    touch_str(m.partition);
    touch_str(m.task);
    return rc;
}

typedef int (*decode_fn)(tq_rbuf *r);

/* Decode len bytes from an exactly-sized copy; *done_p (if given) gets tq_rbuf_done. */
static int decode_exact(const void *p, size_t len, decode_fn fn, bool *done_p)
{
    exact_t e = exact_copy(p, len);
    tq_rbuf r = tq_rbuf_make(e.p, e.n);
    int rc = fn(&r);
    if (done_p != NULL)
        *done_p = tq_rbuf_done(&r);
    cr_expect(r.p >= e.p && r.p <= e.p + e.n, "cursor left the body");
    exact_free(&e);
    return rc;
}
static int decode_wbuf(const tq_wbuf *w, decode_fn fn)
{
    cr_assert(eq(int, w->failed, 0));
    return decode_exact(w->data, w->len, fn, NULL);
}

/* ---- the message table ---- */

typedef struct {
    const char *name;
    uint16_t    type;
    uint8_t     flags;
    void (*put)(tq_wbuf *w);
    decode_fn   decode;
    bool        split; /* several decoder calls: a prefix may decode a leading part */
} wire_case_t;

static const wire_case_t cases[] = {
    {"hello", TQ_MSG_HELLO, 0, put_hello, dec_hello, false},
    {"register", TQ_MSG_REGISTER_UNIT, 0, put_register, dec_register, false},
    {"register_reply", TQ_MSG_REGISTER_UNIT, TQ_WIRE_FLAG_REPLY, put_register_reply, dec_register_reply, false},
    {"units", TQ_MSG_UNITS, TQ_WIRE_FLAG_REPLY, put_units, dec_units, true},
    {"alloc+fields", TQ_MSG_ALLOC, 0, put_alloc_idx, dec_alloc_all, true},
    {"alloc(no indexes)+fields", TQ_MSG_ALLOC, 0, put_alloc_noidx, dec_alloc_all, true},
    {"extent", TQ_MSG_ALLOC, TQ_WIRE_FLAG_REPLY, put_extent, dec_extent, false},
    {"alloc_reply+extents", TQ_MSG_ALLOC, TQ_WIRE_FLAG_REPLY, put_alloc_reply, dec_alloc_reply_all, true},
    {"id", TQ_MSG_COMMIT, 0, put_id, dec_id, false},
    {"get_meta", TQ_MSG_GET_META, 0, put_get_meta, dec_get_meta, false},
    {"get_meta_reply+fields", TQ_MSG_GET_META, TQ_WIRE_FLAG_REPLY, put_meta_reply, dec_meta_reply_all, true},
    {"clear", TQ_MSG_CLEAR, 0, put_clear, dec_clear, false},
    {"partition(task)", TQ_MSG_CLEAR_PARTITION, 0, put_part_task, dec_partition, false},
    {"partition(all tasks)", TQ_MSG_RESET_CONSUMPTION, 0, put_part_all, dec_partition, false},
};

/* Build c's frame and return a malloc'd copy of its body. */
static uint8_t *build_body(const wire_case_t *c, size_t *len_p)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    size_t off = tq_wire_begin(&w, c->type, c->flags, 42);
    c->put(&w);
    tq_wire_end(&w, off);
    cr_assert(eq(int, w.failed, 0), "%s", c->name);
    tq_wire_header_t h;
    cr_assert(eq(int, tq_wire_parse_header(w.data + off, &h), TQ_OK), "%s", c->name);
    cr_assert(eq(sz, w.len, off + TQ_WIRE_HEADER_SIZE + h.body_len), "%s", c->name);
    cr_assert(lt(u32, 0, h.body_len), "%s", c->name);
    uint8_t *body = malloc(h.body_len);
    cr_assert(ne(ptr, body, NULL));
    memcpy(body, w.data + off + TQ_WIRE_HEADER_SIZE, h.body_len);
    *len_p = h.body_len;
    tq_wbuf_free(&w);
    return body;
}

/* ---- round trips ---- */

/* A frame built after an unrelated one (so it starts at a nonzero offset),
 * ended, parsed, with a cursor over its body. */
typedef struct {
    tq_wbuf          w;
    tq_wire_header_t h;
    tq_rbuf          r;
} rt_t;

static void rt_build(rt_t *t, uint16_t type, uint64_t id, bool reply, void (*put)(tq_wbuf *w))
{
    tq_wbuf_init(&t->w);
    size_t first = tq_wire_begin(&t->w, TQ_MSG_ABORT, 0, 1);
    tq_wire_encode_id(&t->w, &fx_id);
    tq_wire_end(&t->w, first);
    cr_assert(eq(sz, first, 0));

    size_t off = reply ? tq_wire_begin_reply(&t->w, type, id, TQ_OK, "ignored")
                       : tq_wire_begin(&t->w, type, 0, id);
    cr_assert(eq(sz, off, TQ_WIRE_HEADER_SIZE + 8));
    put(&t->w);
    tq_wire_end(&t->w, off);
    cr_assert(eq(int, t->w.failed, 0));

    /* the first frame is intact */
    tq_wire_header_t h0;
    cr_assert(eq(int, tq_wire_parse_header(t->w.data, &h0), TQ_OK));
    cr_expect(eq(u16, h0.type, TQ_MSG_ABORT));
    cr_expect(eq(u32, h0.body_len, 8));
    tq_rbuf r0 = tq_rbuf_make(t->w.data + TQ_WIRE_HEADER_SIZE, h0.body_len);
    tq_msg_id_t id0;
    cr_expect(eq(int, tq_wire_decode_id(&r0, &id0), TQ_OK));
    cr_expect(eq(u64, id0.id, fx_id.id));
    expect_done(&r0, "first frame");

    cr_assert(eq(int, tq_wire_parse_header(t->w.data + off, &t->h), TQ_OK));
    cr_expect(eq(u32, t->h.magic, TQ_WIRE_MAGIC));
    cr_expect(eq(u8, t->h.version, TQ_WIRE_VERSION));
    cr_expect(eq(u8, t->h.flags, reply ? TQ_WIRE_FLAG_REPLY : 0));
    cr_expect(eq(u16, t->h.type, type));
    cr_expect(eq(u64, t->h.request_id, id));
    cr_assert(eq(sz, t->w.len, off + TQ_WIRE_HEADER_SIZE + t->h.body_len));
    t->r = tq_rbuf_make(t->w.data + off + TQ_WIRE_HEADER_SIZE, t->h.body_len);
    if (reply) /* TQ_OK: the status, then the body */
        cr_expect(eq(i32, (int32_t)tq_wire_get_u32(&t->r), TQ_OK));
}

Test(wire, roundtrip_hello)
{
    rt_t t;
    rt_build(&t, TQ_MSG_HELLO, 0x1122334455667788ull, false, put_hello);
    tq_msg_hello_t want = fx_hello(), got;
    cr_assert(eq(int, tq_wire_decode_hello(&t.r, &got), TQ_OK));
    cr_expect(eq(u8, got.role, want.role));
    expect_str(got.token, want.token, "token");
    expect_done(&t.r, "hello");
    tq_wbuf_free(&t.w);

    /* the client role, and an empty token */
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_msg_hello_t c = {.role = TQ_ROLE_CLIENT, .token = {"", 0}};
    tq_wire_encode_hello(&w, &c);
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    cr_assert(eq(int, tq_wire_decode_hello(&r, &got), TQ_OK));
    cr_expect(eq(u8, got.role, TQ_ROLE_CLIENT));
    cr_expect(eq(u16, got.token.len, 0));
    cr_expect(eq(ptr, (void *)got.session, NULL), "a hello without a session decoded one");
    expect_done(&r, "client hello");
    tq_wbuf_free(&w);
}

Test(wire, roundtrip_hello_reply)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_msg_hello_reply_t want = {0x0102030405060708ull, 0xF0E0D0C0B0A09080ull}, got;
    tq_wire_encode_hello_reply(&w, &want);
    cr_assert(eq(sz, w.len, 16));
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    cr_assert(eq(int, tq_wire_decode_hello_reply(&r, &got), TQ_OK));
    cr_expect(eq(u64, got.conn_id, want.conn_id));
    cr_expect(eq(u64, got.epoch, want.epoch));
    expect_done(&r, "hello reply");
    r = tq_rbuf_make(w.data, w.len - 1); /* short by a byte */
    cr_expect(eq(int, tq_wire_decode_hello_reply(&r, &got), TQ_ERR_PROTOCOL));
    tq_wbuf_free(&w);
}

/* A client's hello names its session: 16 bytes after the token, or none. */
Test(wire, hello_session)
{
    uint8_t session[TQ_WIRE_SESSION_LEN];
    for (size_t i = 0; i < sizeof(session); i++)
        session[i] = (uint8_t)(0xf0 ^ i);
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_msg_hello_t c = {.role = TQ_ROLE_CLIENT, .token = STR("tok"), .session = session};
    tq_wire_encode_hello(&w, &c);
    cr_assert(eq(sz, w.len, 1 + 2 + 3 + TQ_WIRE_SESSION_LEN));
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    tq_msg_hello_t got;
    cr_assert(eq(int, tq_wire_decode_hello(&r, &got), TQ_OK));
    expect_str(got.token, c.token, "token");
    cr_assert(ne(ptr, (void *)got.session, NULL));
    struct cr_mem g = {got.session, TQ_WIRE_SESSION_LEN}, x = {session, sizeof(session)};
    cr_expect(eq(mem, g, x), "session bytes");
    expect_done(&r, "hello with a session");
    /* anything but 0 or 16 bytes after the token is not a whole hello */
    uint8_t body[6 + TQ_WIRE_SESSION_LEN + 4] = {0};
    memcpy(body, w.data, w.len);
    for (size_t n = 7; n <= sizeof(body); n++) {
        if (n == w.len)
            continue;
        tq_rbuf rr = tq_rbuf_make(body, n);
        int rc = tq_wire_decode_hello(&rr, &got);
        cr_expect(rc != TQ_OK || !tq_rbuf_done(&rr), "a hello of %zu session bytes was whole",
                  n - 6);
        cr_expect(rc != TQ_OK || got.session == NULL, "%zu session bytes taken as one", n - 6);
    }
    tq_wbuf_free(&w);
}

Test(wire, roundtrip_register)
{
    rt_t t;
    rt_build(&t, TQ_MSG_REGISTER_UNIT, 2, false, put_register);
    tq_msg_register_t want = fx_register(), got;
    memset(&got, 0, sizeof(got));
    cr_assert(eq(int, tq_wire_decode_register(&t.r, &got), TQ_OK));
    cr_expect(eq(u64, got.capacity, want.capacity));
    cr_assert(eq(u8, got.num_transports, 2));
    for (int i = 0; i < 2; i++)
        expect_transport(&got.transports[i], &want.transports[i]);
    expect_done(&t.r, "register");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_register_reply)
{
    rt_t t;
    rt_build(&t, TQ_MSG_REGISTER_UNIT, 3, true, put_register_reply);
    tq_msg_register_reply_t got;
    cr_assert(eq(int, tq_wire_decode_register_reply(&t.r, &got), TQ_OK));
    cr_expect(eq(u32, got.unit_id, fx_register_reply.unit_id));
    cr_expect(eq(u32, got.incarnation, fx_register_reply.incarnation));
    expect_done(&t.r, "register_reply");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_units)
{
    rt_t t;
    rt_build(&t, TQ_MSG_UNITS, 4, true, put_units);
    tq_wire_unit_t want[2];
    fx_units(want);
    cr_assert(eq(u32, tq_wire_get_u32(&t.r), 2));
    for (int i = 0; i < 2; i++) {
        tq_wire_unit_t got;
        memset(&got, 0, sizeof(got));
        cr_assert(eq(int, tq_wire_decode_unit(&t.r, &got), TQ_OK), "unit %d", i);
        cr_expect(eq(u32, got.id, want[i].id));
        cr_expect(eq(u32, got.incarnation, want[i].incarnation));
        cr_expect(eq(u8, got.alive, want[i].alive));
        cr_expect(eq(u64, got.capacity, want[i].capacity));
        cr_expect(eq(u64, got.used, want[i].used));
        cr_assert(eq(u8, got.num_transports, want[i].num_transports));
        for (int k = 0; k < got.num_transports; k++)
            expect_transport(&got.transports[k], &want[i].transports[k]);
    }
    expect_done(&t.r, "units");
    tq_wbuf_free(&t.w);
}

static void check_alloc_roundtrip(bool with_indexes)
{
    rt_t t;
    rt_build(&t, TQ_MSG_ALLOC, 5, false, with_indexes ? put_alloc_idx : put_alloc_noidx);
    tq_wire_field_t wf[4];
    tq_msg_alloc_t want = fx_alloc(with_indexes, wf), got;
    cr_assert(eq(int, tq_wire_decode_alloc(&t.r, &got), TQ_OK));
    expect_str(got.partition, want.partition, "partition");
    cr_expect(eq(u32, got.rows, want.rows));
    cr_expect(eq(u8, got.row_mode, want.row_mode));
    if (with_indexes) {
        expect_array(got.indexes, want.indexes, "indexes");
        cr_expect(eq(i64, tq_array_i64(got.indexes, 3), -2));
    } else {
        cr_expect(eq(u32, got.indexes.count, 0));
    }
    cr_assert(eq(u16, got.num_fields, 4));
    cr_expect(eq(u32, got.wait_ms, want.wait_ms));
    cr_expect(eq(u32, got.commit_ms, want.commit_ms));
    for (int i = 0; i < 4; i++) {
        tq_wire_field_t f;
        cr_assert(eq(int, tq_wire_decode_field(&t.r, got.rows, &f), TQ_OK), "field %d", i);
        expect_str(f.name, wf[i].name, "field name");
        cr_expect(eq(u8, f.kind, wf[i].kind), "field %d", i);
        cr_expect(eq(u8, f.dtype, wf[i].dtype), "field %d", i);
        cr_expect(eq(u8, f.ndim, wf[i].ndim), "field %d", i);
        expect_str(f.format, wf[i].format, "field format");
        expect_array(f.dims, wf[i].dims, "field dims");
    }
    expect_done(&t.r, "alloc");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_alloc_with_indexes) { check_alloc_roundtrip(true); }
Test(wire, roundtrip_alloc_without_indexes) { check_alloc_roundtrip(false); }

Test(wire, roundtrip_extent)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    size_t off = tq_wire_begin(&w, TQ_MSG_ALLOC, TQ_WIRE_FLAG_REPLY, 6);
    for (size_t i = 0; i < N_ELEMS(fx_extents); i++)
        tq_wire_encode_extent(&w, &fx_extents[i]);
    tq_wire_end(&w, off);
    tq_wire_header_t h;
    cr_assert(eq(int, tq_wire_parse_header(w.data, &h), TQ_OK));
    cr_expect(eq(u32, h.body_len, 20 * N_ELEMS(fx_extents)));
    tq_rbuf r = tq_rbuf_make(w.data + TQ_WIRE_HEADER_SIZE, h.body_len);
    for (size_t i = 0; i < N_ELEMS(fx_extents); i++) {
        tq_wire_extent_t e;
        cr_assert(eq(int, tq_wire_decode_extent(&r, &e), TQ_OK), "extent %zu", i);
        expect_extent(e, fx_extents[i], "extent");
    }
    expect_done(&r, "extents");
    tq_wbuf_free(&w);
}

Test(wire, roundtrip_alloc_reply)
{
    rt_t t;
    rt_build(&t, TQ_MSG_ALLOC, 7, true, put_alloc_reply);
    tq_msg_alloc_reply_t got;
    cr_assert(eq(int, tq_wire_decode_alloc_reply(&t.r, &got), TQ_OK));
    cr_expect(eq(u64, got.alloc_id, fx_alloc_reply.alloc_id));
    cr_expect(eq(u32, got.lease_ms, fx_alloc_reply.lease_ms));
    cr_expect(eq(u32, got.commit_ms, fx_alloc_reply.commit_ms));
    cr_expect(eq(u32, got.rows, fx_alloc_reply.rows));
    expect_array(got.indexes, fx_alloc_reply.indexes, "indexes");
    cr_assert(eq(u16, got.num_fields, 3));
    for (int i = 0; i < 3; i++) {
        tq_wire_extent_t e;
        cr_assert(eq(int, tq_wire_decode_extent(&t.r, &e), TQ_OK));
        expect_extent(e, fx_extents[i], "alloc extent");
    }
    expect_done(&t.r, "alloc_reply");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_id)
{
    rt_t t;
    rt_build(&t, TQ_MSG_RELEASE, UINT64_MAX, false, put_id);
    tq_msg_id_t got;
    cr_assert(eq(int, tq_wire_decode_id(&t.r, &got), TQ_OK));
    cr_expect(eq(u64, got.id, fx_id.id));
    expect_done(&t.r, "id");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_get_meta)
{
    rt_t t;
    rt_build(&t, TQ_MSG_GET_META, 8, false, put_get_meta);
    tq_msg_get_meta_t want = fx_get_meta(), got;
    cr_assert(eq(int, tq_wire_decode_get_meta(&t.r, &got), TQ_OK));
    expect_str(got.partition, want.partition, "partition");
    expect_str(got.task, want.task, "task");
    cr_assert(eq(u16, got.num_fields, want.num_fields));
    for (int i = 0; i < want.num_fields; i++)
        expect_str(got.fields[i], want.fields[i], "field");
    cr_expect(eq(u32, got.batch_size, want.batch_size));
    expect_str(got.sampler, want.sampler, "sampler");
    expect_blob(got.sampler_args, want.sampler_args, "sampler_args");
    cr_expect(eq(i32, got.timeout_ms, -1));
    expect_done(&t.r, "get_meta");
    tq_wbuf_free(&t.w);

    /* no sampler, no args, timeout 0 */
    tq_wbuf w;
    tq_wbuf_init(&w);
    want.sampler = (tq_str_t){"", 0};
    want.sampler_args = (tq_blob_t){NULL, 0};
    want.timeout_ms = 0;
    tq_wire_encode_get_meta(&w, &want);
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    cr_assert(eq(int, tq_wire_decode_get_meta(&r, &got), TQ_OK));
    cr_expect(eq(u16, got.sampler.len, 0));
    cr_expect(eq(u32, got.sampler_args.len, 0));
    cr_expect(eq(i32, got.timeout_ms, 0));
    expect_done(&r, "get_meta defaults");
    tq_wbuf_free(&w);
}

Test(wire, roundtrip_get_meta_reply)
{
    rt_t t;
    rt_build(&t, TQ_MSG_GET_META, 9, true, put_meta_reply);
    meta_fx_t want[3];
    fx_meta_fields(want);
    tq_msg_get_meta_reply_t got;
    cr_assert(eq(int, tq_wire_decode_get_meta_reply(&t.r, &got), TQ_OK));
    cr_expect(eq(u64, got.meta_id, fx_meta_reply.meta_id));
    cr_expect(eq(u32, got.lease_ms, fx_meta_reply.lease_ms));
    cr_expect(eq(u32, got.rows, fx_meta_reply.rows));
    expect_array(got.indexes, fx_meta_reply.indexes, "indexes");
    cr_assert(eq(u16, got.num_fields, 3));
    for (int i = 0; i < 3; i++) {
        tq_wire_meta_field_t f;
        cr_assert(eq(int, tq_wire_decode_meta_field(&t.r, got.rows, &f), TQ_OK), "meta field %d", i);
        expect_str(f.name, want[i].f.name, "meta name");
        cr_expect(eq(u8, f.kind, want[i].f.kind), "meta field %d", i);
        cr_expect(eq(u8, f.dtype, want[i].f.dtype), "meta field %d", i);
        cr_expect(eq(u8, f.ndim, want[i].f.ndim), "meta field %d", i);
        expect_str(f.format, want[i].f.format, "meta format");
        expect_blob(f.present, want[i].f.present, "present");
        cr_expect(eq(int, f.present.ptr == NULL, want[i].f.present.ptr == NULL), "present %d", i);
        expect_array(f.row_shape, want[i].f.row_shape, "row_shape");
        expect_array(f.shapes, want[i].f.shapes, "shapes");
        expect_array(f.row_bytes, want[i].f.row_bytes, "row_bytes");
        cr_assert(eq(u32, f.num_runs, want[i].f.num_runs), "meta field %d", i);
        for (uint32_t k = 0; k < f.num_runs; k++) {
            tq_wire_extent_t e;
            cr_assert(eq(int, tq_wire_decode_extent(&t.r, &e), TQ_OK));
            expect_extent(e, want[i].runs[k], "run");
        }
    }
    expect_done(&t.r, "get_meta_reply");
    tq_wbuf_free(&t.w);
}

Test(wire, roundtrip_clear)
{
    rt_t t;
    rt_build(&t, TQ_MSG_CLEAR, 10, false, put_clear);
    tq_msg_clear_t got;
    cr_assert(eq(int, tq_wire_decode_clear(&t.r, &got), TQ_OK));
    expect_str(got.partition, fx_clear.partition, "partition");
    cr_expect(eq(u32, got.count, 3));
    expect_array(got.indexes, fx_clear.indexes, "indexes");
    expect_done(&t.r, "clear");
    tq_wbuf_free(&t.w);

    /* count 0: an empty clear is well formed */
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_msg_clear_t none = {.partition = {"p", 1}, .count = 0, .indexes = {NULL, 0}};
    tq_wire_encode_clear(&w, &none);
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    cr_assert(eq(int, tq_wire_decode_clear(&r, &got), TQ_OK));
    cr_expect(eq(u32, got.count, 0));
    cr_expect(eq(u32, got.indexes.count, 0));
    expect_done(&r, "empty clear");
    tq_wbuf_free(&w);
}

Test(wire, roundtrip_partition)
{
    const tq_msg_partition_t *want[] = {&fx_part_task, &fx_part_all};
    void (*put[])(tq_wbuf *) = {put_part_task, put_part_all};
    for (int i = 0; i < 2; i++) {
        rt_t t;
        rt_build(&t, i ? TQ_MSG_RESET_CONSUMPTION : TQ_MSG_CLEAR_PARTITION, 11, false, put[i]);
        tq_msg_partition_t got;
        cr_assert(eq(int, tq_wire_decode_partition(&t.r, &got), TQ_OK), "case %d", i);
        expect_str(got.partition, want[i]->partition, "partition");
        expect_str(got.task, want[i]->task, "task");
        expect_done(&t.r, "partition");
        tq_wbuf_free(&t.w);
    }
}

Test(wire, roundtrip_kv_list)
{
    const tq_msg_kv_list_t cases[] = {
        {{"train", 5}, {"", 0}, 0},                /* the first page, no limit */
        {{"", 0}, {"1f:a0:key", 9}, 7},            /* every partition, from a cursor */
        {{"p", 1}, {"", 0}, UINT32_MAX},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        tq_wire_encode_kv_list(&w, &cases[i]);
        tq_rbuf r = tq_rbuf_make(w.data, w.len);
        tq_msg_kv_list_t got;
        cr_assert(eq(int, tq_wire_decode_kv_list(&r, &got), TQ_OK), "case %zu", i);
        expect_str(got.partition, cases[i].partition, "partition");
        expect_str(got.cursor, cases[i].cursor, "cursor");
        cr_expect(eq(u32, got.limit, cases[i].limit), "case %zu", i);
        expect_done(&r, "kv_list");
        tq_wbuf_free(&w);
    }
}

Test(wire, hostile_kv_list)
{
    char cursor[TQ_WIRE_CURSOR_MAX + 1], name[256];
    memset(cursor, 'c', sizeof(cursor));
    memset(name, 'n', sizeof(name));
    const struct {
        tq_msg_kv_list_t m;
        int              rc;
        const char      *what;
    } cases[] = {
        {{{"", 0}, {cursor, TQ_WIRE_CURSOR_MAX}, 1}, TQ_OK, "the longest cursor"},
        {{{"", 0}, {cursor, TQ_WIRE_CURSOR_MAX + 1}, 1}, TQ_ERR_PROTOCOL, "a cursor too long"},
        {{{"", 0}, {"a\0b", 3}, 1}, TQ_ERR_PROTOCOL, "a NUL in the cursor"},
        {{{"p\0q", 3}, {"", 0}, 1}, TQ_ERR_PROTOCOL, "a NUL in the partition"},
        {{{name, 256}, {"", 0}, 1}, TQ_ERR_PROTOCOL, "a partition of 256 bytes"},
        {{{name, 255}, {"", 0}, 1}, TQ_OK, "a partition of 255 bytes"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        tq_wire_encode_kv_list(&w, &cases[i].m);
        tq_rbuf r = tq_rbuf_make(w.data, w.len);
        tq_msg_kv_list_t got;
        cr_expect(eq(int, tq_wire_decode_kv_list(&r, &got), cases[i].rc), "%s", cases[i].what);
        /* every cut short of the whole is refused */
        for (size_t cut = 0; cases[i].rc == TQ_OK && cut < w.len; cut++) {
            r = tq_rbuf_make(w.data, cut);
            cr_expect(eq(int, tq_wire_decode_kv_list(&r, &got), TQ_ERR_PROTOCOL), "%s cut at %zu",
                      cases[i].what, cut);
        }
        tq_wbuf_free(&w);
    }
    /* a reply's cursor: the same limits */
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_encode_cursor(&w, (tq_str_t){cursor, TQ_WIRE_CURSOR_MAX + 1});
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    tq_str_t got;
    cr_expect(eq(int, tq_wire_decode_cursor(&r, &got), TQ_ERR_PROTOCOL), "a reply cursor too long");
    tq_wbuf_reset(&w);
    tq_wire_encode_cursor(&w, (tq_str_t){"", 0});
    r = tq_rbuf_make(w.data, w.len);
    cr_expect(eq(int, tq_wire_decode_cursor(&r, &got), TQ_OK), "the last page's empty cursor");
    cr_expect(eq(u16, got.len, 0));
    expect_done(&r, "empty cursor");
    tq_wbuf_free(&w);
}

static void check_error_reply(int status, const char *message, const char *expected_text)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_put_u8(&w, 0xAA); /* an unsent leftover: the reply starts at offset 1 */
    size_t off = tq_wire_begin_reply(&w, TQ_MSG_ALLOC, 99, status, message);
    cr_assert(eq(sz, off, 1));
    cr_assert(eq(int, w.failed, 0));
    /* already ended: no tq_wire_end */
    tq_wire_header_t h;
    cr_assert(eq(int, tq_wire_parse_header(w.data + off, &h), TQ_OK));
    cr_expect(eq(u8, h.flags, TQ_WIRE_FLAG_REPLY));
    cr_expect(eq(u16, h.type, TQ_MSG_ALLOC));
    cr_expect(eq(u64, h.request_id, 99));
    cr_assert(eq(sz, w.len, off + TQ_WIRE_HEADER_SIZE + h.body_len));
    tq_rbuf r = tq_rbuf_make(w.data + off + TQ_WIRE_HEADER_SIZE, h.body_len);
    cr_expect(eq(i32, (int32_t)tq_wire_get_u32(&r), status));
    tq_str_t msg = tq_wire_get_str(&r);
    char *text = tq_str_dup(msg);
    cr_assert(ne(ptr, text, NULL));
    cr_expect(eq(str, text, (char *)expected_text));
    free(text);
    expect_done(&r, "error reply");
    tq_wbuf_free(&w);
}

Test(wire, reply_error_status_and_message)
{
    check_error_reply(TQ_ERR_NOSPACE, "pool full: 12 bytes short", "pool full: 12 bytes short");
    check_error_reply(TQ_ERR_AUTH, NULL, tq_status_string(TQ_ERR_AUTH));
    check_error_reply(TQ_ERR_PROTOCOL, "", "");
}

Test(wire, reply_ok_then_body)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    size_t off = tq_wire_begin_reply(&w, TQ_MSG_CLEAR, 12, TQ_OK, NULL);
    cr_assert(eq(sz, w.len, off + TQ_WIRE_HEADER_SIZE + 4)); /* just the status so far */
    tq_wire_put_u32(&w, 17); /* CLEAR reply: u32 removed */
    tq_wire_end(&w, off);
    tq_wire_header_t h;
    cr_assert(eq(int, tq_wire_parse_header(w.data + off, &h), TQ_OK));
    cr_expect(eq(u8, h.flags, TQ_WIRE_FLAG_REPLY));
    cr_expect(eq(u16, h.type, TQ_MSG_CLEAR));
    cr_expect(eq(u64, h.request_id, 12));
    cr_assert(eq(u32, h.body_len, 8));
    tq_rbuf r = tq_rbuf_make(w.data + off + TQ_WIRE_HEADER_SIZE, h.body_len);
    cr_expect(eq(i32, (int32_t)tq_wire_get_u32(&r), TQ_OK));
    cr_expect(eq(u32, tq_wire_get_u32(&r), 17));
    expect_done(&r, "ok reply");
    tq_wbuf_free(&w);
}

/* ---- truncation ---- */

Test(wire, truncation)
{
    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        size_t len;
        uint8_t *body = build_body(&cases[c], &len);
        bool done = false;
        cr_assert(eq(int, decode_exact(body, len, cases[c].decode, &done), TQ_OK), "%s: whole body", cases[c].name);
        cr_assert(eq(int, done, 1), "%s: whole body not consumed", cases[c].name);
        for (size_t n = 0; n < len; n++) {
            int rc = decode_exact(body, n, cases[c].decode, &done);
            if (cases[c].split) {
                cr_assert(rc == TQ_ERR_PROTOCOL || (rc == TQ_OK && !done),
                          "%s: prefix %zu of %zu: rc %d, done %d", cases[c].name, n, len, rc, done);
            } else {
                cr_assert(eq(int, rc, TQ_ERR_PROTOCOL), "%s: prefix %zu of %zu", cases[c].name, n, len);
                cr_assert(eq(int, done, 0), "%s: prefix %zu of %zu", cases[c].name, n, len);
            }
        }
        free(body);
    }
}

/* Each message alone (not just the composite bodies): every prefix of its own
 * encoding fails with TQ_ERR_PROTOCOL and a failed cursor. */
Test(wire, truncation_single_decoders)
{
    struct {
        const char *name;
        decode_fn   fn;
        uint32_t    rows;
        void (*put)(tq_wbuf *w);
    } parts[] = {
        {"alloc", dec_alloc, 0, NULL},
        {"alloc_reply", dec_alloc_reply, 0, NULL},
        {"get_meta_reply", dec_meta_reply, 0, NULL},
        {"unit", dec_unit, 0, NULL},
        {"field", dec_field, 4, NULL},
        {"meta_field", dec_meta_field, 3, NULL},
    };
    for (size_t i = 0; i < N_ELEMS(parts); i++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        tq_wire_field_t f[4];
        tq_msg_alloc_t a = fx_alloc(true, f);
        tq_wire_unit_t u[2];
        meta_fx_t m[3];
        switch (i) {
        case 0: tq_wire_encode_alloc(&w, &a); break;
        case 1: tq_wire_encode_alloc_reply(&w, &fx_alloc_reply); break;
        case 2: tq_wire_encode_get_meta_reply(&w, &fx_meta_reply); break;
        case 3: fx_units(u); tq_wire_encode_unit(&w, &u[0]); break;
        case 4: tq_wire_encode_field(&w, &f[2]); break; /* nested: rows*ndim dims */
        default: /* no runs: a meta field claiming runs needs them to follow */
            fx_meta_fields(m);
            m[1].f.num_runs = 0;
            tq_wire_encode_meta_field(&w, &m[1].f);
            break;
        }
        cr_assert(eq(int, w.failed, 0));
        g_rows = parts[i].rows;
        bool done = false;
        cr_assert(eq(int, decode_exact(w.data, w.len, parts[i].fn, &done), TQ_OK), "%s", parts[i].name);
        cr_assert(eq(int, done, 1), "%s", parts[i].name);
        for (size_t n = 0; n < w.len; n++) {
            cr_assert(eq(int, decode_exact(w.data, n, parts[i].fn, &done), TQ_ERR_PROTOCOL),
                      "%s: prefix %zu of %zu", parts[i].name, n, w.len);
            cr_assert(eq(int, done, 0), "%s: prefix %zu", parts[i].name, n);
        }
        tq_wbuf_free(&w);
    }
}

/* ---- garbling ---- */

static uint64_t rng_state;
static uint64_t rng(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

Test(wire, garbling)
{
    enum { ITERS = 400 };
    rng_state = 0x9E3779B97F4A7C15ull;
    unsigned accepted = 0, rejected = 0;
    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        size_t len;
        uint8_t *body = build_body(&cases[c], &len);
        for (int it = 0; it < ITERS; it++) {
            exact_t e = exact_copy(body, len);
            /* sometimes cut the tail too */
            if (it % 8 == 7)
                e.n = (size_t)(rng() % (len + 1));
            int flips = e.n ? 1 + (int)(rng() % 4) : 0;
            for (int k = 0; k < flips; k++) {
                size_t pos = (size_t)(rng() % e.n);
                switch (rng() % 4) {
                case 0: e.p[pos] ^= (uint8_t)(1u << (rng() % 8)); break;
                case 1: e.p[pos] = 0x00; break;
                case 2: e.p[pos] = 0xFF; break;
                default: e.p[pos] = (uint8_t)rng(); break;
                }
            }
            /* a shortened copy still lives in a len-byte block: recopy it exactly */
            exact_t x = exact_copy(e.p, e.n);
            exact_free(&e);
            tq_rbuf r = tq_rbuf_make(x.p, x.n);
            int rc = cases[c].decode(&r);
            cr_assert(rc == TQ_OK || rc == TQ_ERR_PROTOCOL, "%s: iteration %d: rc %d", cases[c].name, it, rc);
            cr_assert(r.p >= x.p && r.p <= x.p + x.n, "%s: iteration %d: cursor left the body",
                      cases[c].name, it);
            if (rc == TQ_OK) {
                cr_assert(eq(int, r.failed, 0), "%s: iteration %d", cases[c].name, it);
                accepted++;
            } else {
                rejected++;
            }
            exact_free(&x);
        }
        free(body);
    }
    cr_expect(lt(uint, 0, accepted));
    cr_expect(lt(uint, 0, rejected));
    cr_log_info("garbling: %u accepted, %u rejected", accepted, rejected);
}

/* ---- hostile inputs ---- */

static void put_name_n(tq_wbuf *w, char c, size_t n)
{
    char buf[512];
    cr_assert(le(sz, n, sizeof(buf)));
    memset(buf, c, n);
    tq_wire_put_str(w, buf, n);
}

/* An ALLOC fixed part. */
static void put_alloc_raw(tq_wbuf *w, const char *part, size_t plen, uint32_t rows, uint8_t has_idx,
                          uint32_t idx_entries, uint16_t num_fields)
{
    tq_wire_put_str(w, part, plen);
    tq_wire_put_u32(w, rows);
    tq_wire_put_u8(w, has_idx);
    for (uint32_t i = 0; i < idx_entries; i++)
        tq_wire_put_u64(w, i);
    tq_wire_put_u16(w, num_fields);
    tq_wire_put_u32(w, 1000); /* wait_ms */
    tq_wire_put_u32(w, 5000); /* commit_ms */
}

/* A field with n dims entries. */
static void put_field_raw(tq_wbuf *w, const char *name, size_t nlen, uint8_t kind, uint8_t dtype,
                          uint8_t ndim, uint32_t n)
{
    tq_wire_put_str(w, name, nlen);
    tq_wire_put_u8(w, kind);
    tq_wire_put_u8(w, dtype);
    tq_wire_put_u8(w, ndim);
    tq_wire_put_str(w, "", 0); /* no format label */
    for (uint32_t i = 0; i < n; i++)
        tq_wire_put_u64(w, i + 1);
}

/* A meta field with the given entry counts. */
static void put_meta_raw(tq_wbuf *w, const char *name, size_t nlen, uint8_t kind, uint8_t dtype,
                         uint8_t ndim, uint32_t entries, uint32_t num_runs)
{
    put_field_raw(w, name, nlen, kind, dtype, ndim, entries);
    tq_wire_put_u8(w, 0); /* every cell exists */
    tq_wire_put_u32(w, num_runs);
}

static void put_get_meta_raw(tq_wbuf *w, tq_str_t part, tq_str_t task, uint16_t num_fields,
                             tq_str_t field, uint32_t batch, int32_t timeout)
{
    tq_wire_put_str(w, part.ptr, part.len);
    tq_wire_put_str(w, task.ptr, task.len);
    tq_wire_put_u16(w, num_fields);
    for (uint32_t i = 0; i < num_fields; i++)
        tq_wire_put_str(w, field.ptr, field.len);
    tq_wire_put_u32(w, batch);
    tq_wire_put_cstr(w, "sequential");
    tq_wire_put_blob(w, "{}", 2);
    tq_wire_put_u32(w, (uint32_t)timeout);
    tq_wire_put_u8(w, TQ_FETCH_READY);
}

#define EXPECT_RC(w, fn, want, ...)                                                          \
    do {                                                                                     \
        cr_expect(eq(int, decode_wbuf((w), (fn)), (want)), __VA_ARGS__);                     \
        tq_wbuf_reset(w);                                                                    \
    } while (0)

Test(wire, hostile_lengths)
{
    tq_wbuf w;
    tq_wbuf_init(&w);

    /* a string longer than the body */
    tq_wire_put_u8(&w, TQ_ROLE_CLIENT);
    tq_wire_put_u16(&w, 100);
    tq_wire_put_bytes(&w, "abc", 3);
    EXPECT_RC(&w, dec_hello, TQ_ERR_PROTOCOL, "string of 100 in 3 bytes");
    tq_wire_put_u8(&w, TQ_ROLE_CLIENT);
    tq_wire_put_u16(&w, 0xFFFF);
    EXPECT_RC(&w, dec_hello, TQ_ERR_PROTOCOL, "string of 65535 in 0 bytes");
    tq_wire_put_u16(&w, 4);
    tq_wire_put_bytes(&w, "abc", 3);
    {
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_str_t s = tq_wire_get_str(&r);
        cr_expect(eq(u16, s.len, 0));
        cr_expect(eq(int, r.failed, 1));
        cr_expect(eq(u8, tq_wire_get_u8(&r), 0), "a failed cursor reads zeros");
        cr_expect(eq(int, r.failed, 1), "and stays failed");
        cr_expect(eq(int, tq_rbuf_done(&r), 0));
        exact_free(&e);
        tq_wbuf_reset(&w);
    }

    /* a blob longer than the body, raw and inside a transport */
    tq_wire_put_u32(&w, 0xFFFFFFFFu);
    tq_wire_put_bytes(&w, "xyz", 3);
    {
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_blob_t b = tq_wire_get_blob(&r);
        cr_expect(eq(u32, b.len, 0));
        cr_expect(eq(ptr, (void *)b.ptr, NULL));
        cr_expect(eq(int, r.failed, 1));
        exact_free(&e);
        tq_wbuf_reset(&w);
    }
    tq_wire_put_u64(&w, 1000);
    tq_wire_put_u8(&w, 1);
    tq_wire_put_cstr(&w, "rdma");
    tq_wire_put_u32(&w, 0xFFFFFFFFu);
    tq_wire_put_bytes(&w, "xyz", 3);
    EXPECT_RC(&w, dec_register, TQ_ERR_PROTOCOL, "address blob of 4 GiB");

    /* array counts of 0xFFFFFFFF and beyond */
    for (int i = 0; i < 8; i++)
        tq_wire_put_u64(&w, (uint64_t)i);
    {
        const uint64_t counts[] = {0xFFFFFFFFu, (uint64_t)UINT32_MAX + 1, UINT64_MAX,
                                   UINT64_MAX / 8 + 1, 9};
        for (size_t i = 0; i < N_ELEMS(counts); i++) {
            exact_t e = exact_copy(w.data, w.len);
            tq_rbuf r = tq_rbuf_make(e.p, e.n);
            tq_array_t a = tq_wire_get_array(&r, counts[i]);
            cr_expect(eq(u32, a.count, 0), "count %llu", (unsigned long long)counts[i]);
            cr_expect(eq(ptr, (void *)a.ptr, NULL), "count %llu", (unsigned long long)counts[i]);
            cr_expect(eq(int, r.failed, 1), "count %llu", (unsigned long long)counts[i]);
            exact_free(&e);
        }
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_array_t a = tq_wire_get_array(&r, 8);
        cr_expect(eq(u32, a.count, 8));
        cr_expect(eq(u64, tq_array_u64(a, 7), 7));
        expect_done(&r, "array of 8");
        exact_free(&e);
        tq_wbuf_reset(&w);
    }
    tq_wire_put_cstr(&w, "train");
    tq_wire_put_u32(&w, 0xFFFFFFFFu);
    tq_wire_put_u64(&w, 1);
    EXPECT_RC(&w, dec_clear, TQ_ERR_PROTOCOL, "clear count 0xFFFFFFFF");
    tq_wire_put_cstr(&w, "train");
    tq_wire_put_u32(&w, TQ_WIRE_MAX_ROWS);
    tq_wire_put_u64(&w, 1);
    EXPECT_RC(&w, dec_clear, TQ_ERR_PROTOCOL, "clear count beyond the body");
    tq_wire_put_cstr(&w, "train");
    tq_wire_put_u32(&w, TQ_WIRE_MAX_ROWS + 1);
    EXPECT_RC(&w, dec_clear, TQ_ERR_PROTOCOL, "clear count over TQ_WIRE_MAX_ROWS");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 0xFFFFFFFFu);
    tq_wire_put_u16(&w, 0);
    EXPECT_RC(&w, dec_alloc_reply, TQ_ERR_PROTOCOL, "alloc_reply rows 0xFFFFFFFF");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 2);
    tq_wire_put_u32(&w, 1000); /* commit_ms */
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u16(&w, 0);
    EXPECT_RC(&w, dec_alloc_reply, TQ_ERR_PROTOCOL, "alloc_reply indexes short");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 0xFFFFFFFFu);
    tq_wire_put_u16(&w, 0);
    EXPECT_RC(&w, dec_meta_reply, TQ_ERR_PROTOCOL, "get_meta_reply rows 0xFFFFFFFF");
    put_alloc_raw(&w, "p", 1, 0xFFFFFFFFu, 1, 2, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "alloc rows 0xFFFFFFFF");

    /* a nested field whose rows*ndim dims are not there */
    g_rows = TQ_WIRE_MAX_ROWS;
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_F32, 8, 3);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "nested dims of 8M entries");
    put_field_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 3);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "lengths of 1M entries");
    g_rows = 0xFFFFFFFFu; /* a caller passing an unchecked row count still cannot over-read */
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_F32, 8, 3);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "nested dims of (2^32-1)*8 entries");
    put_meta_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_F32, 8, 3, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta shapes of (2^32-1)*8 entries");

    tq_wbuf_free(&w);
}

Test(wire, hostile_alloc_rows_and_fields)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    put_alloc_raw(&w, "p", 1, 0, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "rows 0");
    put_alloc_raw(&w, "p", 1, TQ_WIRE_MAX_ROWS + 1, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "rows over TQ_WIRE_MAX_ROWS");
    put_alloc_raw(&w, "p", 1, TQ_WIRE_MAX_ROWS, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_OK, "rows TQ_WIRE_MAX_ROWS");
    put_alloc_raw(&w, "p", 1, TQ_WIRE_MAX_ROWS, 1, 3, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "rows TQ_WIRE_MAX_ROWS, 3 indexes");
    put_alloc_raw(&w, "p", 1, 3, 1, 3, 1);
    EXPECT_RC(&w, dec_alloc, TQ_OK, "3 rows with indexes");
    put_alloc_raw(&w, "p", 1, 3, 3, 3, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "row mode 3");
    put_alloc_raw(&w, "p", 1, 3, 0, 0, 0);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "num_fields 0");
    put_alloc_raw(&w, "p", 1, 3, 0, 0, TQ_WIRE_MAX_FIELDS + 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "num_fields over TQ_WIRE_MAX_FIELDS");
    put_alloc_raw(&w, "p", 1, 3, 0, 0, 0xFFFF);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "num_fields 0xFFFF");
    put_alloc_raw(&w, "p", 1, 3, 0, 0, TQ_WIRE_MAX_FIELDS);
    EXPECT_RC(&w, dec_alloc, TQ_OK, "num_fields TQ_WIRE_MAX_FIELDS");

    /* the replies allow empty answers but not more than the limits */
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 60000); /* lease_ms */
    tq_wire_put_u32(&w, 1000);  /* commit_ms */
    tq_wire_put_u32(&w, 0);
    tq_wire_put_u16(&w, 0);
    EXPECT_RC(&w, dec_alloc_reply, TQ_OK, "alloc_reply of nothing");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 60000); /* lease_ms */
    tq_wire_put_u32(&w, 1000);  /* commit_ms */
    tq_wire_put_u32(&w, 0);
    tq_wire_put_u16(&w, TQ_WIRE_MAX_FIELDS + 1);
    EXPECT_RC(&w, dec_alloc_reply, TQ_ERR_PROTOCOL, "alloc_reply num_fields over the limit");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 60000); /* lease_ms */
    tq_wire_put_u32(&w, 1000);  /* commit_ms */
    tq_wire_put_u32(&w, TQ_WIRE_MAX_ROWS + 1);
    tq_wire_put_u16(&w, 1);
    EXPECT_RC(&w, dec_alloc_reply, TQ_ERR_PROTOCOL, "alloc_reply rows over the limit");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 60000); /* lease_ms */
    tq_wire_put_u32(&w, 0);
    tq_wire_put_u16(&w, TQ_WIRE_MAX_FIELDS + 1);
    EXPECT_RC(&w, dec_meta_reply, TQ_ERR_PROTOCOL, "get_meta_reply num_fields over the limit");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u32(&w, 60000); /* lease_ms */
    tq_wire_put_u32(&w, 0);
    tq_wire_put_u16(&w, 0);
    EXPECT_RC(&w, dec_meta_reply, TQ_OK, "get_meta_reply of nothing");

    /* transports */
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, TQ_WIRE_MAX_TRANSPORTS + 1);
    EXPECT_RC(&w, dec_register, TQ_ERR_PROTOCOL, "9 transports");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, TQ_WIRE_MAX_TRANSPORTS);
    for (int i = 0; i < TQ_WIRE_MAX_TRANSPORTS; i++) {
        tq_wire_put_cstr(&w, "t");
        tq_wire_put_blob(&w, "a", 1);
        tq_wire_put_blob(&w, NULL, 0);
    }
    EXPECT_RC(&w, dec_register, TQ_OK, "8 transports");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, 1);
    tq_wire_put_cstr(&w, "");
    tq_wire_put_blob(&w, "a", 1);
    tq_wire_put_blob(&w, "b", 1);
    EXPECT_RC(&w, dec_register, TQ_ERR_PROTOCOL, "empty transport name");
    tq_wire_put_u32(&w, 1);
    tq_wire_put_u32(&w, 1);
    tq_wire_put_u8(&w, 1);
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, 200);
    EXPECT_RC(&w, dec_unit, TQ_ERR_PROTOCOL, "unit with 200 transports");

    /* hello roles */
    const uint8_t roles[] = {0, 3, 0xFF};
    for (size_t i = 0; i < N_ELEMS(roles); i++) {
        tq_wire_put_u8(&w, roles[i]);
        tq_wire_put_cstr(&w, "tok");
        EXPECT_RC(&w, dec_hello, TQ_ERR_PROTOCOL, "role %u", roles[i]);
    }
    tq_wbuf_free(&w);
}

Test(wire, hostile_names)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    static const char nul_name[] = "tr\0in";
    const size_t nul_len = sizeof(nul_name) - 1;
    char long_name[256];
    memset(long_name, 'n', sizeof(long_name));

    /* alloc partition */
    put_alloc_raw(&w, nul_name, nul_len, 1, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "alloc partition with NUL");
    put_alloc_raw(&w, long_name, 256, 1, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "alloc partition of 256 bytes");
    put_alloc_raw(&w, long_name, 255, 1, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_OK, "alloc partition of 255 bytes");
    put_alloc_raw(&w, "", 0, 1, 0, 0, 1);
    EXPECT_RC(&w, dec_alloc, TQ_ERR_PROTOCOL, "empty alloc partition");

    /* field names */
    g_rows = 2;
    put_field_raw(&w, nul_name, nul_len, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "field name with NUL");
    put_field_raw(&w, long_name, 256, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "field name of 256 bytes");
    put_field_raw(&w, long_name, 255, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_OK, "field name of 255 bytes");
    put_meta_raw(&w, nul_name, nul_len, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta field name with NUL");
    put_meta_raw(&w, long_name, 256, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta field name of 256 bytes");
    put_meta_raw(&w, long_name, 255, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_OK, "meta field name of 255 bytes");

    /* get_meta partition, task, fields */
    const tq_str_t ok = STR("ok"), nul = {nul_name, (uint16_t)nul_len}, empty = {"", 0};
    const tq_str_t n256 = {long_name, 256}, n255 = {long_name, 255};
    put_get_meta_raw(&w, nul, ok, 1, ok, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta partition with NUL");
    put_get_meta_raw(&w, ok, nul, 1, ok, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta task with NUL");
    put_get_meta_raw(&w, ok, empty, 1, ok, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta empty task");
    put_get_meta_raw(&w, ok, ok, 1, nul, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta field with NUL");
    put_get_meta_raw(&w, ok, ok, 1, n256, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta field of 256 bytes");
    put_get_meta_raw(&w, n256, ok, 1, ok, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "get_meta partition of 256 bytes");
    put_get_meta_raw(&w, n255, n255, 1, n255, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_OK, "get_meta names of 255 bytes");

    /* partition message, transport name, clear */
    tq_wire_put_str(&w, nul_name, nul_len);
    tq_wire_put_cstr(&w, "");
    EXPECT_RC(&w, dec_partition, TQ_ERR_PROTOCOL, "partition with NUL");
    tq_wire_put_cstr(&w, "p");
    tq_wire_put_str(&w, nul_name, nul_len);
    EXPECT_RC(&w, dec_partition, TQ_ERR_PROTOCOL, "partition task with NUL");
    tq_wire_put_cstr(&w, "p");
    tq_wire_put_str(&w, long_name, 256);
    EXPECT_RC(&w, dec_partition, TQ_ERR_PROTOCOL, "partition task of 256 bytes");
    tq_wire_put_cstr(&w, "");
    tq_wire_put_cstr(&w, "t");
    EXPECT_RC(&w, dec_partition, TQ_ERR_PROTOCOL, "empty partition");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, 1);
    tq_wire_put_str(&w, nul_name, nul_len);
    tq_wire_put_blob(&w, "a", 1);
    tq_wire_put_blob(&w, "b", 1);
    EXPECT_RC(&w, dec_register, TQ_ERR_PROTOCOL, "transport name with NUL");
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u8(&w, 1);
    tq_wire_put_str(&w, long_name, 256);
    tq_wire_put_blob(&w, "a", 1);
    tq_wire_put_blob(&w, "b", 1);
    EXPECT_RC(&w, dec_register, TQ_ERR_PROTOCOL, "transport name of 256 bytes");
    tq_wire_put_str(&w, nul_name, nul_len);
    tq_wire_put_u32(&w, 0);
    EXPECT_RC(&w, dec_clear, TQ_ERR_PROTOCOL, "clear partition with NUL");
    tq_wire_put_str(&w, long_name, 256);
    tq_wire_put_u32(&w, 0);
    EXPECT_RC(&w, dec_clear, TQ_ERR_PROTOCOL, "clear partition of 256 bytes");

    put_name_n(&w, 'x', 255);
    {
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_str_t s = tq_wire_get_str(&r);
        cr_expect(eq(int, tq_str_is_name(s), 1));
        exact_free(&e);
    }
    tq_wbuf_free(&w);
}

Test(wire, hostile_field_kinds)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    g_rows = 2;
    put_field_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_F32, 0, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "bytes kind, f32 dtype");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_BYTES, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "tensor kind, bytes dtype");
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_BYTES, 1, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "nested kind, bytes dtype");
    put_field_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 1, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "bytes kind with ndim 1");
    put_field_raw(&w, "f", 1, TQ_FIELD_BYTES + 1, TQ_DTYPE_F32, 0, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "kind 3");
    put_field_raw(&w, "f", 1, 0xFF, TQ_DTYPE_F32, 0, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "kind 255");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_C128 + 1, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "dtype 17");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, 0xFF, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "dtype 255");
    /* the dtypes appended after bytes are tensor dtypes like the others */
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_U16, 1, 1);
    EXPECT_RC(&w, dec_field, TQ_OK, "tensor u16");
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_C128, 1, 2);
    EXPECT_RC(&w, dec_field, TQ_OK, "nested c128");
    put_field_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_U64, 0, 2);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "bytes kind, u64 dtype");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, TQ_MAX_NDIM + 1, TQ_MAX_NDIM + 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "tensor ndim 9");
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_F32, TQ_MAX_NDIM + 1, 2 * (TQ_MAX_NDIM + 1));
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "nested ndim 9");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, TQ_MAX_NDIM, TQ_MAX_NDIM);
    EXPECT_RC(&w, dec_field, TQ_OK, "tensor ndim 8");
    put_field_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_BOOL, TQ_MAX_NDIM, 2 * TQ_MAX_NDIM);
    EXPECT_RC(&w, dec_field, TQ_OK, "nested ndim 8");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 2, 1);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "tensor ndim 2 with 1 dim");
    put_field_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 2, 3);
    {
        /* 3 dims where 2 belong: the field decodes, the body has a stray 8 bytes */
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_wire_field_t f;
        cr_expect(eq(int, tq_wire_decode_field(&r, 2, &f), TQ_OK));
        cr_expect(eq(u32, f.dims.count, 2));
        cr_expect(eq(int, tq_rbuf_done(&r), 0));
        exact_free(&e);
        tq_wbuf_reset(&w);
    }

    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES + 1, TQ_DTYPE_F32, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta kind 3");
    put_meta_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_C128 + 1, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta dtype 17");
    put_meta_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_C64, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_OK, "meta c64");
    put_meta_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, TQ_MAX_NDIM + 1, TQ_MAX_NDIM + 1 + 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta tensor ndim 9");
    put_meta_raw(&w, "f", 1, TQ_FIELD_NESTED, TQ_DTYPE_F32, TQ_MAX_NDIM + 1, 2 * (TQ_MAX_NDIM + 1) + 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta nested ndim 9");
    put_meta_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_F32, TQ_MAX_NDIM, TQ_MAX_NDIM + 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_OK, "meta tensor ndim 8");
    tq_wbuf_free(&w);
}

/* A format label is 0..15 bytes of [a-z0-9_.-], in ALLOC fields and meta fields alike. */
Test(wire, hostile_format_labels)
{
    static const struct { const char *label; size_t len; int rc; } cases[] = {
        {"", 0, TQ_OK}, {"utf8", 4, TQ_OK}, {"a.b-c_9", 7, TQ_OK},
        {"0123456789abcde", 15, TQ_OK},                   /* 15: the most */
        {"0123456789abcdef", 16, TQ_ERR_PROTOCOL},        /* 16: too long */
        {"UTF8", 4, TQ_ERR_PROTOCOL}, {"a b", 3, TQ_ERR_PROTOCOL}, {"a/b", 3, TQ_ERR_PROTOCOL},
        {"a\0b", 3, TQ_ERR_PROTOCOL}, {"\xc3\xa9", 2, TQ_ERR_PROTOCOL},
    };
    tq_wbuf w;
    tq_wbuf_init(&w);
    g_rows = 2;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        for (int meta = 0; meta < 2; meta++) {
            tq_wire_put_cstr(&w, "f");
            tq_wire_put_u8(&w, TQ_FIELD_TENSOR);
            tq_wire_put_u8(&w, TQ_DTYPE_F32);
            tq_wire_put_u8(&w, 1);
            tq_wire_put_str(&w, cases[i].label, cases[i].len);
            tq_wire_put_u64(&w, 4); /* row_shape */
            if (meta) {
                tq_wire_put_u64(&w, 16), tq_wire_put_u64(&w, 16); /* row_bytes */
                tq_wire_put_u8(&w, 0);                            /* every cell exists */
                tq_wire_put_u32(&w, 0);                           /* no runs */
            }
            EXPECT_RC(&w, meta ? dec_meta_field : dec_field, cases[i].rc, "%s label %zu",
                      meta ? "meta" : "alloc", i);
        }
    /* a length past what is left */
    tq_wire_put_cstr(&w, "f");
    tq_wire_put_u8(&w, TQ_FIELD_BYTES);
    tq_wire_put_u8(&w, TQ_DTYPE_BYTES);
    tq_wire_put_u8(&w, 0);
    tq_wire_put_u16(&w, 10);
    tq_wire_put_bytes(&w, "utf8", 4);
    EXPECT_RC(&w, dec_field, TQ_ERR_PROTOCOL, "label longer than the body");
    tq_wbuf_free(&w);
    cr_expect(eq(int, tq_str_is_format((tq_str_t){"", 0}), 1));
    cr_expect(eq(int, tq_str_is_format((tq_str_t){"-A", 2}), 0));
}

/* A meta field must agree on kind and dtype, as an ALLOC field must. */
Test(wire, hostile_meta_field_kind_dtype_disagree)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    g_rows = 2;
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_F32, 0, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta bytes kind, f32 dtype");
    put_meta_raw(&w, "f", 1, TQ_FIELD_TENSOR, TQ_DTYPE_BYTES, 1, 1 + 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta tensor kind, bytes dtype");
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 3, 2, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "meta bytes kind, ndim 3");
    tq_wbuf_free(&w);
}

Test(wire, hostile_meta_runs)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    g_rows = 2;
    /* bytes field: 2 row_bytes entries, then num_runs, then the runs */
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 2);
    for (int i = 0; i < 39; i++)
        tq_wire_put_u8(&w, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "2 runs in 39 bytes");
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 2);
    for (int i = 0; i < 40; i++)
        tq_wire_put_u8(&w, 0);
    {
        exact_t e = exact_copy(w.data, w.len);
        tq_rbuf r = tq_rbuf_make(e.p, e.n);
        tq_wire_meta_field_t f;
        cr_expect(eq(int, tq_wire_decode_meta_field(&r, 2, &f), TQ_OK), "2 runs in 40 bytes");
        cr_expect(eq(u32, f.num_runs, 2));
        cr_expect(eq(sz, (size_t)(r.end - r.p), 40));
        exact_free(&e);
        tq_wbuf_reset(&w);
    }
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 0xFFFFFFFFu);
    for (int i = 0; i < 100; i++)
        tq_wire_put_u8(&w, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "0xFFFFFFFF runs");
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2, 1);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "1 run in 0 bytes");
    put_meta_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 1, 0);
    EXPECT_RC(&w, dec_meta_field, TQ_ERR_PROTOCOL, "1 row_bytes entry for 2 rows");
    tq_wbuf_free(&w);
}

Test(wire, hostile_get_meta_numbers)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    const tq_str_t p = STR("p"), t = STR("t"), f = STR("f");
    const int32_t bad_timeouts[] = {-2, -1000, INT32_MIN};
    for (size_t i = 0; i < N_ELEMS(bad_timeouts); i++) {
        put_get_meta_raw(&w, p, t, 1, f, 1, bad_timeouts[i]);
        EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "timeout %d", bad_timeouts[i]);
    }
    const int32_t good_timeouts[] = {-1, 0, 1, INT32_MAX};
    for (size_t i = 0; i < N_ELEMS(good_timeouts); i++) {
        put_get_meta_raw(&w, p, t, 1, f, 1, good_timeouts[i]);
        EXPECT_RC(&w, dec_get_meta, TQ_OK, "timeout %d", good_timeouts[i]);
    }
    put_get_meta_raw(&w, p, t, 1, f, 0, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "batch_size 0");
    put_get_meta_raw(&w, p, t, 1, f, TQ_WIRE_MAX_ROWS + 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "batch_size over TQ_WIRE_MAX_ROWS");
    put_get_meta_raw(&w, p, t, 1, f, TQ_WIRE_MAX_ROWS, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_OK, "batch_size TQ_WIRE_MAX_ROWS");
    put_get_meta_raw(&w, p, t, 0, f, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "num_fields 0");
    put_get_meta_raw(&w, p, t, TQ_WIRE_MAX_FIELDS + 1, f, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "num_fields over TQ_WIRE_MAX_FIELDS");
    put_get_meta_raw(&w, p, t, TQ_WIRE_MAX_FIELDS, f, 1, 0);
    EXPECT_RC(&w, dec_get_meta, TQ_OK, "num_fields TQ_WIRE_MAX_FIELDS");
    /* num_fields says 3, only 1 is there */
    tq_wire_put_cstr(&w, "p");
    tq_wire_put_cstr(&w, "t");
    tq_wire_put_u16(&w, 3);
    tq_wire_put_cstr(&w, "f");
    EXPECT_RC(&w, dec_get_meta, TQ_ERR_PROTOCOL, "3 fields claimed, 1 present");
    tq_wbuf_free(&w);
}

/* The fetch mode ends a GET_META: only READY needs a task, only INSERT names no field. */
Test(wire, hostile_get_meta_modes)
{
    static const struct {
        const char *task;
        uint16_t    num_fields;
        int         mode; /* < 0: the byte is missing */
        int         rc;
    } cases[] = {
        {"t", 1, TQ_FETCH_READY, TQ_OK},       {"", 1, TQ_FETCH_READY, TQ_ERR_PROTOCOL},
        {"t", 0, TQ_FETCH_READY, TQ_ERR_PROTOCOL}, {"", 1, TQ_FETCH_FORCE, TQ_OK},
        {"t", 2, TQ_FETCH_FORCE, TQ_OK},       {"", 0, TQ_FETCH_FORCE, TQ_ERR_PROTOCOL},
        {"", 0, TQ_FETCH_INSERT, TQ_OK},       {"t", 0, TQ_FETCH_INSERT, TQ_OK},
        {"", 1, TQ_FETCH_INSERT, TQ_ERR_PROTOCOL}, {"t", 1, 3, TQ_ERR_PROTOCOL},
        {"t", 1, 0xFF, TQ_ERR_PROTOCOL},       {"t", 1, -1, TQ_ERR_PROTOCOL},
    };
    tq_wbuf w;
    tq_wbuf_init(&w);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tq_wire_put_cstr(&w, "p");
        tq_wire_put_cstr(&w, cases[i].task);
        tq_wire_put_u16(&w, cases[i].num_fields);
        for (uint16_t k = 0; k < cases[i].num_fields; k++)
            tq_wire_put_cstr(&w, k ? "g" : "f");
        tq_wire_put_u32(&w, 4);
        tq_wire_put_cstr(&w, "");
        tq_wire_put_blob(&w, NULL, 0);
        tq_wire_put_u32(&w, 0);
        if (cases[i].mode >= 0)
            tq_wire_put_u8(&w, (uint8_t)cases[i].mode);
        EXPECT_RC(&w, dec_get_meta, cases[i].rc, "case %zu", i);
    }
    tq_wbuf_free(&w);
}

/* Which cells a meta field has: a flag, then one byte (0 or 1) per row. */
Test(wire, hostile_meta_present)
{
    static const struct {
        int         flag;
        const char *bytes;
        size_t      n;
        int         rc;
    } cases[] = {
        {0, "", 0, TQ_OK},           {1, "\x01\x00", 2, TQ_OK}, {1, "\x00\x00", 2, TQ_OK},
        {1, "\x01\x02", 2, TQ_ERR_PROTOCOL}, {1, "\xff\x01", 2, TQ_ERR_PROTOCOL},
        {1, "\x01", 1, TQ_ERR_PROTOCOL},      {2, "", 0, TQ_ERR_PROTOCOL},
        {0xFF, "\x01\x01", 2, TQ_ERR_PROTOCOL},
    };
    tq_wbuf w;
    tq_wbuf_init(&w);
    g_rows = 2;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        put_field_raw(&w, "f", 1, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, 2); /* 2 row_bytes */
        tq_wire_put_u8(&w, (uint8_t)cases[i].flag);
        tq_wire_put_bytes(&w, cases[i].bytes, cases[i].n);
        tq_wire_put_u32(&w, 0);
        EXPECT_RC(&w, dec_meta_field, cases[i].rc, "case %zu", i);
    }
    tq_wbuf_free(&w);
}

Test(wire, hostile_extent_overflow)
{
    const struct {
        uint64_t offset, length;
        int      rc;
    } cases_[] = {
        {UINT64_MAX, 1, TQ_ERR_PROTOCOL},
        {UINT64_C(1) << 63, UINT64_C(1) << 63, TQ_ERR_PROTOCOL},
        {1, UINT64_MAX, TQ_ERR_PROTOCOL},
        {UINT64_MAX, UINT64_MAX, TQ_ERR_PROTOCOL},
        {UINT64_MAX - 9, 10, TQ_ERR_PROTOCOL}, /* ends at 2^64: wraps to 0 */
        {UINT64_MAX - 10, 10, TQ_OK},          /* ends at 2^64 - 1 */
        {UINT64_MAX, 0, TQ_OK},
        {0, UINT64_MAX, TQ_OK},
    };
    tq_wbuf w;
    tq_wbuf_init(&w);
    for (size_t i = 0; i < N_ELEMS(cases_); i++) {
        tq_wire_put_u32(&w, 1);
        tq_wire_put_u64(&w, cases_[i].offset);
        tq_wire_put_u64(&w, cases_[i].length);
        EXPECT_RC(&w, dec_extent, cases_[i].rc, "offset %llu + length %llu",
                  (unsigned long long)cases_[i].offset, (unsigned long long)cases_[i].length);
    }
    tq_wbuf_free(&w);
}

/* ---- headers ---- */

static void good_header(uint8_t out[TQ_WIRE_HEADER_SIZE], uint16_t type, uint8_t flags, uint64_t id,
                        uint32_t body)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_begin(&w, type, flags, id);
    cr_assert(eq(sz, w.len, TQ_WIRE_HEADER_SIZE));
    memcpy(out, w.data, TQ_WIRE_HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        out[16 + i] = (uint8_t)(body >> (8 * i));
    tq_wbuf_free(&w);
}

static int parse_exact(const uint8_t hdr[TQ_WIRE_HEADER_SIZE], tq_wire_header_t *h)
{
    exact_t e = exact_copy(hdr, TQ_WIRE_HEADER_SIZE);
    int rc = tq_wire_parse_header(e.p, h);
    exact_free(&e);
    return rc;
}

Test(wire, header_good)
{
    uint8_t hdr[TQ_WIRE_HEADER_SIZE];
    tq_wire_header_t h;
    good_header(hdr, TQ_MSG_GET_META, TQ_WIRE_FLAG_REPLY, 0x0102030405060708ull, 1234);
    /* the layout is fixed: check the bytes too */
    const uint8_t want[TQ_WIRE_HEADER_SIZE] = {
        'T', 'Q', 'R', 'D', TQ_WIRE_VERSION, TQ_WIRE_FLAG_REPLY, TQ_MSG_GET_META, 0,
        8, 7, 6, 5, 4, 3, 2, 1, 0xD2, 0x04, 0, 0, 0, 0, 0, 0};
    struct cr_mem got_m = {hdr, sizeof(hdr)}, want_m = {want, sizeof(want)};
    cr_expect(eq(mem, got_m, want_m));
    cr_assert(eq(int, parse_exact(hdr, &h), TQ_OK));
    cr_expect(eq(u32, h.magic, TQ_WIRE_MAGIC));
    cr_expect(eq(u8, h.version, TQ_WIRE_VERSION));
    cr_expect(eq(u8, h.flags, TQ_WIRE_FLAG_REPLY));
    cr_expect(eq(u16, h.type, TQ_MSG_GET_META));
    cr_expect(eq(u64, h.request_id, 0x0102030405060708ull));
    cr_expect(eq(u32, h.body_len, 1234));

    for (uint16_t type = 1; type < TQ_MSG_TYPE_MAX; type++) {
        good_header(hdr, type, 0, type, 0);
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_OK), "type %u", type);
        cr_expect(eq(u16, h.type, type));
        cr_expect(eq(u8, h.flags, 0));
        cr_expect(eq(u32, h.body_len, 0));
    }
    good_header(hdr, TQ_MSG_HELLO, 0, UINT64_MAX, TQ_WIRE_MAX_BODY);
    cr_expect(eq(int, parse_exact(hdr, &h), TQ_OK), "body of exactly TQ_WIRE_MAX_BODY");
    cr_expect(eq(u32, h.body_len, TQ_WIRE_MAX_BODY));
    cr_expect(eq(u64, h.request_id, UINT64_MAX));
}

Test(wire, header_rejects)
{
    uint8_t hdr[TQ_WIRE_HEADER_SIZE];
    tq_wire_header_t h;

    for (int b = 0; b < 4; b++) {
        good_header(hdr, TQ_MSG_HELLO, 0, 1, 0);
        hdr[b] ^= 0x20;
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "magic byte %d", b);
    }
    const uint8_t versions[] = {0, TQ_WIRE_VERSION + 1, 0xFF};
    for (size_t i = 0; i < N_ELEMS(versions); i++) {
        good_header(hdr, TQ_MSG_HELLO, 0, 1, 0);
        hdr[4] = versions[i];
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "version %u", versions[i]);
    }
    const uint16_t types[] = {0, TQ_MSG_TYPE_MAX, TQ_MSG_TYPE_MAX + 1, 0x100, 0xFFFF};
    for (size_t i = 0; i < N_ELEMS(types); i++) {
        good_header(hdr, types[i], 0, 1, 0);
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "type %u", types[i]);
    }
    for (int bit = 1; bit < 8; bit++) {
        good_header(hdr, TQ_MSG_HELLO, (uint8_t)(1u << bit), 1, 0);
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "flag bit %d", bit);
        good_header(hdr, TQ_MSG_HELLO, (uint8_t)(TQ_WIRE_FLAG_REPLY | (1u << bit)), 1, 0);
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "reply + flag bit %d", bit);
    }
    for (int b = 20; b < 24; b++) {
        good_header(hdr, TQ_MSG_HELLO, 0, 1, 0);
        hdr[b] = 0x01;
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "reserved byte %d", b);
    }
    const uint32_t bodies[] = {TQ_WIRE_MAX_BODY + 1, TQ_WIRE_MAX_BODY * 2, UINT32_MAX};
    for (size_t i = 0; i < N_ELEMS(bodies); i++) {
        good_header(hdr, TQ_MSG_HELLO, 0, 1, bodies[i]);
        cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "body %u", bodies[i]);
    }
    /* all zeros */
    memset(hdr, 0, sizeof(hdr));
    cr_expect(eq(int, parse_exact(hdr, &h), TQ_ERR_PROTOCOL), "zero header");
}

/* ---- tq_wbuf ---- */

Test(wire, wbuf_put_and_consume)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    cr_expect(eq(ptr, w.data, NULL));
    cr_expect(eq(sz, w.len, 0));
    cr_expect(eq(sz, w.cap, 0));
    cr_expect(eq(int, w.failed, 0));

    tq_wire_put_u8(&w, 0x01);
    tq_wire_put_u16(&w, 0x0302);
    tq_wire_put_u32(&w, 0x07060504u);
    tq_wire_put_u64(&w, 0x0F0E0D0C0B0A0908ull);
    uint64_t arr[] = {0x1716151413121110ull};
    tq_wire_put_array(&w, arr, 1);
    tq_wire_put_bytes(&w, "\x18\x19", 2);
    tq_wire_put_bytes(&w, NULL, 0);
    cr_assert(eq(sz, w.len, 25)); /* bytes 0x01 .. 0x19, little-endian throughout */
    for (size_t i = 0; i < w.len; i++)
        cr_expect(eq(u8, w.data[i], (uint8_t)(i + 1)), "byte %zu", i);

    size_t cap = w.cap;
    tq_wbuf_consume(&w, 0);
    cr_expect(eq(sz, w.len, 25));
    tq_wbuf_consume(&w, 5);
    cr_assert(eq(sz, w.len, 20));
    for (size_t i = 0; i < w.len; i++)
        cr_expect(eq(u8, w.data[i], (uint8_t)(i + 6)), "byte %zu after consume", i);
    tq_wbuf_consume(&w, w.len);
    cr_expect(eq(sz, w.len, 0));
    tq_wire_put_u32(&w, 0xAABBCCDDu);
    tq_wbuf_consume(&w, 1000);
    cr_expect(eq(sz, w.len, 0), "consuming more than there is empties it");
    cr_expect(eq(sz, w.cap, cap), "consume keeps the allocation");

    /* a frame consumed from the front of a two-frame buffer */
    size_t a = tq_wire_begin(&w, TQ_MSG_COMMIT, 0, 1);
    tq_wire_encode_id(&w, &fx_id);
    tq_wire_end(&w, a);
    size_t b = tq_wire_begin(&w, TQ_MSG_ABORT, 0, 2);
    tq_wire_encode_id(&w, &fx_id);
    tq_wire_end(&w, b);
    tq_wbuf_consume(&w, b);
    tq_wire_header_t h;
    cr_assert(eq(sz, w.len, TQ_WIRE_HEADER_SIZE + 8));
    cr_assert(eq(int, tq_wire_parse_header(w.data, &h), TQ_OK));
    cr_expect(eq(u16, h.type, TQ_MSG_ABORT));
    cr_expect(eq(u64, h.request_id, 2));

    /* strings: NULL cstr is "", long strings are capped at UINT16_MAX */
    tq_wbuf_reset(&w);
    cr_expect(eq(sz, w.len, 0));
    cr_expect(eq(sz, w.cap, cap), "reset keeps the allocation");
    tq_wire_put_cstr(&w, NULL);
    cr_expect(eq(sz, w.len, 2));
    cr_expect(eq(u16, (uint16_t)(w.data[0] | w.data[1] << 8), 0));
    tq_wbuf_reset(&w);
    char *big = malloc(70000);
    cr_assert(ne(ptr, big, NULL));
    memset(big, 'z', 70000);
    tq_wire_put_str(&w, big, 70000);
    cr_expect(eq(sz, w.len, 2 + UINT16_MAX));
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    tq_str_t s = tq_wire_get_str(&r);
    cr_expect(eq(u16, s.len, UINT16_MAX));
    expect_done(&r, "capped string");
    free(big);

    /* the string helpers */
    cr_expect(eq(int, tq_str_eq(STR("abc"), "abc"), 1));
    cr_expect(eq(int, tq_str_eq(STR("abc"), "abcd"), 0));
    cr_expect(eq(int, tq_str_eq(STR("ab\0c"), "ab"), 0));
    char *d = tq_str_dup(STR("xyz"));
    cr_expect(eq(str, d, "xyz"));
    free(d);
    cr_expect(eq(int, tq_str_is_name(STR("")), 0));
    cr_expect(eq(int, tq_str_is_name(STR("a")), 1));
    cr_expect(eq(int, tq_str_is_name(STR("a\0")), 0));
    tq_wbuf_free(&w);
    cr_expect(eq(ptr, w.data, NULL));
    cr_expect(eq(sz, w.len, 0));
}

Test(wire, wbuf_body_over_limit_fails)
{
    const size_t chunk = MiB;
    uint8_t *src = calloc(1, chunk);
    cr_assert(ne(ptr, src, NULL));
    tq_wbuf w;
    tq_wbuf_init(&w);

    /* exactly TQ_WIRE_MAX_BODY: fine */
    size_t off = tq_wire_begin(&w, TQ_MSG_ALLOC, 0, 1);
    for (size_t n = 0; n < TQ_WIRE_MAX_BODY / chunk; n++)
        tq_wire_put_bytes(&w, src, chunk);
    tq_wire_end(&w, off);
    cr_assert(eq(int, w.failed, 0));
    tq_wire_header_t h;
    cr_assert(eq(int, tq_wire_parse_header(w.data + off, &h), TQ_OK));
    cr_expect(eq(u32, h.body_len, TQ_WIRE_MAX_BODY));

    /* one byte more: tq_wire_end marks the buffer failed */
    tq_wbuf_reset(&w);
    off = tq_wire_begin(&w, TQ_MSG_ALLOC, 0, 2);
    for (size_t n = 0; n < TQ_WIRE_MAX_BODY / chunk; n++)
        tq_wire_put_bytes(&w, src, chunk);
    tq_wire_put_bytes(&w, src, 1);
    cr_assert(eq(int, w.failed, 0));
    cr_assert(eq(sz, w.len, (size_t)TQ_WIRE_HEADER_SIZE + TQ_WIRE_MAX_BODY + 1));
    tq_wire_end(&w, off);
    cr_expect(eq(int, w.failed, 1));
    /* failure sticks: puts are ignored, ends are no-ops */
    size_t len = w.len;
    tq_wire_put_u64(&w, 1);
    tq_wire_put_bytes(&w, src, 16);
    cr_expect(eq(sz, w.len, len));
    tq_wire_end(&w, off);
    cr_expect(eq(int, w.failed, 1));

    /* reset recovers */
    tq_wbuf_reset(&w);
    cr_expect(eq(int, w.failed, 0));
    cr_expect(eq(sz, w.len, 0));
    off = tq_wire_begin(&w, TQ_MSG_COMMIT, 0, 3);
    tq_wire_encode_id(&w, &fx_id);
    tq_wire_end(&w, off);
    cr_assert(eq(int, w.failed, 0));
    cr_assert(eq(int, tq_wire_parse_header(w.data, &h), TQ_OK));
    cr_expect(eq(u32, h.body_len, 8));
    cr_expect(eq(u64, h.request_id, 3));

    tq_wbuf_free(&w);
    free(src);
}

/* GET_META_ROWS: partition, rows, indexes, then field names (maybe none). */
Test(wire, meta_rows_roundtrip_and_hostile)
{
    static const uint64_t rows3[] = {7, 0, UINT64_C(1) << 40};
    tq_msg_meta_rows_t m = {.partition = STR("p"), .count = 3, .indexes = ARR(rows3),
                            .num_fields = 2};
    m.fields[0] = STR("a");
    m.fields[1] = STR("bb");
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_encode_meta_rows(&w, &m);
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    tq_msg_meta_rows_t got;
    cr_assert(eq(int, tq_wire_decode_meta_rows(&r, &got), TQ_OK));
    expect_str(got.partition, m.partition, "partition");
    cr_expect(eq(u32, got.count, 3));
    expect_array(got.indexes, m.indexes, "indexes");
    cr_assert(eq(u16, got.num_fields, 2));
    expect_str(got.fields[1], m.fields[1], "field");
    expect_done(&r, "meta_rows");
    for (size_t n = 0; n < w.len; n++) { /* every prefix is short */
        tq_rbuf pr = tq_rbuf_make(w.data, n);
        cr_expect(eq(int, tq_wire_decode_meta_rows(&pr, &got), TQ_ERR_PROTOCOL), "prefix %zu", n);
    }
    tq_wbuf_reset(&w);

    const uint32_t counts[] = {0, TQ_WIRE_MAX_ROWS + 1, UINT32_MAX};
    for (size_t i = 0; i < N_ELEMS(counts); i++) {
        tq_wire_put_cstr(&w, "p");
        tq_wire_put_u32(&w, counts[i]);
        tq_wire_put_u64(&w, 1);
        tq_wire_put_u16(&w, 0);
        r = tq_rbuf_make(w.data, w.len);
        cr_expect(eq(int, tq_wire_decode_meta_rows(&r, &got), TQ_ERR_PROTOCOL), "count %u",
                  counts[i]);
        tq_wbuf_reset(&w);
    }
    tq_wire_put_cstr(&w, "p");
    tq_wire_put_u32(&w, 1);
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u16(&w, TQ_WIRE_MAX_FIELDS + 1);
    r = tq_rbuf_make(w.data, w.len);
    cr_expect(eq(int, tq_wire_decode_meta_rows(&r, &got), TQ_ERR_PROTOCOL), "too many fields");
    tq_wbuf_reset(&w);
    tq_wire_put_cstr(&w, "p");
    tq_wire_put_u32(&w, 1);
    tq_wire_put_u64(&w, 1);
    tq_wire_put_u16(&w, 1);
    tq_wire_put_cstr(&w, "");
    r = tq_rbuf_make(w.data, w.len);
    cr_expect(eq(int, tq_wire_decode_meta_rows(&r, &got), TQ_ERR_PROTOCOL), "an empty field name");
    tq_wbuf_free(&w);
}

/* SET_CUSTOM_META, KV_INDEXES, and what follows a meta's fields: keys and custom meta. */
Test(wire, rows_info_custom_kv_indexes)
{
    static const uint64_t rows2[] = {3, 1};
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_encode_set_custom(&w, &(tq_msg_set_custom_t){STR("p"), 2, ARR(rows2)});
    tq_wire_encode_custom(&w, "{\"a\":1}", 7);
    tq_wire_encode_custom(&w, NULL, 0);
    tq_rbuf r = tq_rbuf_make(w.data, w.len);
    tq_msg_set_custom_t sc;
    tq_blob_t text;
    cr_assert(eq(int, tq_wire_decode_set_custom(&r, &sc), TQ_OK));
    cr_expect(eq(u32, sc.count, 2));
    expect_array(sc.indexes, ARR(rows2), "indexes");
    cr_assert(eq(int, tq_wire_decode_custom(&r, &text), TQ_OK));
    expect_blob(text, (tq_blob_t){(const uint8_t *)"{\"a\":1}", 7}, "custom");
    cr_assert(eq(int, tq_wire_decode_custom(&r, &text), TQ_OK));
    cr_expect(eq(u32, text.len, 0));
    expect_done(&r, "set_custom");
    tq_wbuf_reset(&w);

    tq_wire_encode_set_custom(&w, &(tq_msg_set_custom_t){STR("p"), 0, NO_ARR});
    r = tq_rbuf_make(w.data, w.len);
    cr_expect(eq(int, tq_wire_decode_set_custom(&r, &sc), TQ_ERR_PROTOCOL), "count 0");
    tq_wbuf_reset(&w);
    tq_wire_put_blob(&w, "{\"a\":\0}", 7);
    r = tq_rbuf_make(w.data, w.len);
    cr_expect(eq(int, tq_wire_decode_custom(&r, &text), TQ_ERR_PROTOCOL), "a NUL inside");
    tq_wbuf_reset(&w);
    char *big = calloc(1, TQ_MAX_CUSTOM_META + 1);
    memset(big, ' ', TQ_MAX_CUSTOM_META + 1);
    for (int extra = 0; extra < 2; extra++) {
        tq_wire_put_blob(&w, big, TQ_MAX_CUSTOM_META + (uint32_t)extra);
        r = tq_rbuf_make(w.data, w.len);
        cr_expect(eq(int, tq_wire_decode_custom(&r, &text), extra ? TQ_ERR_PROTOCOL : TQ_OK),
                  "%d bytes", TQ_MAX_CUSTOM_META + extra);
        tq_wbuf_reset(&w);
    }
    free(big);

    for (unsigned what = 0; what < 256; what++) {
        tq_wire_encode_rows_info(&w, (uint8_t)what);
        r = tq_rbuf_make(w.data, w.len);
        uint8_t got;
        cr_expect(eq(int, tq_wire_decode_rows_info(&r, &got), what < 4 ? TQ_OK : TQ_ERR_PROTOCOL),
                  "rows info %u", what);
        tq_wbuf_reset(&w);
    }
    const struct { tq_str_t key; int rc; } keys[] = {
        {STR(""), TQ_OK}, {STR("k"), TQ_OK}, {{"a\0b", 3}, TQ_ERR_PROTOCOL},
    };
    for (size_t i = 0; i < N_ELEMS(keys); i++) {
        tq_wire_encode_row_key(&w, keys[i].key);
        r = tq_rbuf_make(w.data, w.len);
        tq_str_t got;
        cr_expect(eq(int, tq_wire_decode_row_key(&r, &got), keys[i].rc), "row key %zu", i);
        tq_wbuf_reset(&w);
    }

    tq_wire_encode_kv_indexes(&w, &(tq_msg_kv_indexes_t){STR("p"), 1, 3});
    r = tq_rbuf_make(w.data, w.len);
    tq_msg_kv_indexes_t ki;
    cr_assert(eq(int, tq_wire_decode_kv_indexes(&r, &ki), TQ_OK));
    cr_expect(eq(u8, ki.create, 1));
    cr_expect(eq(u32, ki.count, 3));
    expect_done(&r, "kv_indexes");
    tq_wbuf_reset(&w);
    const struct { uint8_t create; uint32_t count; } bad[] = {
        {2, 1}, {0xFF, 1}, {0, 0}, {1, TQ_WIRE_MAX_ROWS + 1},
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        tq_wire_encode_kv_indexes(&w, &(tq_msg_kv_indexes_t){STR("p"), bad[i].create, bad[i].count});
        r = tq_rbuf_make(w.data, w.len);
        cr_expect(eq(int, tq_wire_decode_kv_indexes(&r, &ki), TQ_ERR_PROTOCOL), "kv_indexes %zu", i);
        tq_wbuf_reset(&w);
    }
    tq_wbuf_free(&w);
}
