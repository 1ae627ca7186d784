/* test_into.c: a meta's schema, reads straight into the caller's memory (tq_get_data_into),
 * tq_kv_get_meta, and the non-blocking twins with their file descriptors; against a real
 * cluster (tq-controller + 2 tq-storage) and the embedded default, the reads also over each
 * transport by name. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "helpers.h"
#include "transport_registry.h"
#include "tq/tq.h"

#define INTO_TEST(name) TQ_TEST_BOTH(into, name, 60)

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define S(x)    ((char *)(x)) /* Criterion's str tag wants char * */

/* Bound on every wait for a request or its fd. */
#define REQ_TIMEOUT_MS 20000
/* What caller memory holds before a read: a read that must not happen leaves it. */
#define UNREAD 0xAB

static tq_meta *const    META_SENTINEL    = (tq_meta *)(uintptr_t)0x5e5e;
static tq_request *const REQUEST_SENTINEL = (tq_request *)(uintptr_t)0x5e60;

/* ---- helpers ---- */

static tq_batch *batch_new(uint32_t rows)
{
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    return b;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    cr_assert(ne(ptr, p, NULL));
    return p;
}

static uint8_t byte_at(uint32_t seed, size_t i) { return (uint8_t)(seed * 131u + i * 7u + (i >> 8)); }

static void fill(void *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)p)[i] = byte_at(seed, i);
}

/* A partition of ROWS rows with three fields of every kind, and what they hold:
 *   "t": a tensor of f32 [TD0, TD1] per row (tensor_row_bytes each),
 *   "n": nested i16 of 2 dimensions, row i of shape [1 + i % 3, 2 + i % 5],
 *   "b": bytes, row i of i * 37 % 300 bytes (row 0 empty). */
#define ROWS 12
#define TD0  4
#define TD1  5
typedef struct {
    const char *part;
    int64_t     index[ROWS];
    uint8_t    *t;                 /* the column */
    int64_t     n_shape[ROWS * 2];
    uint8_t    *n[ROWS];
    size_t      n_len[ROWS];
    uint8_t    *b[ROWS];
    size_t      b_len[ROWS];
} rows_t;

static const size_t tensor_row_bytes = TD0 * TD1 * 4;

/* Make the rows' data. */
static void rows_make(rows_t *r, const char *part)
{
    memset(r, 0, sizeof(*r));
    r->part = part;
    r->t = xmalloc(ROWS * tensor_row_bytes);
    fill(r->t, ROWS * tensor_row_bytes, 1);
    for (uint32_t i = 0; i < ROWS; i++) {
        r->n_shape[2 * i] = 1 + i % 3;
        r->n_shape[2 * i + 1] = 2 + i % 5;
        r->n_len[i] = (size_t)(r->n_shape[2 * i] * r->n_shape[2 * i + 1]) * 2;
        r->n[i] = xmalloc(r->n_len[i]);
        fill(r->n[i], r->n_len[i], 100 + i);
        r->b_len[i] = i * 37 % 300;
        r->b[i] = xmalloc(r->b_len[i]);
        fill(r->b[i], r->b_len[i], 200 + i);
    }
}

/* A batch of the rows (borrowing r's memory). */
static tq_batch *rows_batch(rows_t *r)
{
    tq_batch *b = batch_new(ROWS);
    static const int64_t tshape[2] = {TD0, TD1};
    cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_F32, 2, tshape, r->t), TQ_OK));
    cr_assert(eq(int, tq_batch_add_nested(b, "n", TQ_DTYPE_I16, 2, r->n_shape,
                                          (const void *const *)r->n), TQ_OK));
    cr_assert(eq(int, tq_batch_add_bytes(b, "b", (const void *const *)r->b, r->b_len), TQ_OK));
    return b;
}

/* Make the rows and put them to new rows of part. */
static void rows_put(tq_client *c, rows_t *r, const char *part)
{
    rows_make(r, part);
    tq_batch *b = rows_batch(r);
    int rc = tq_put(c, part, b, NULL, r->index);
    cr_assert(eq(int, rc, TQ_OK), "put: %s (%s)", tq_status_string(rc), tq_last_error(c));
    tq_batch_destroy(b);
}

static void rows_free(rows_t *r)
{
    free(r->t);
    for (uint32_t i = 0; i < ROWS; i++) {
        free(r->n[i]);
        free(r->b[i]);
    }
}

/* Which put row index ix is. */
static uint32_t rows_at(const rows_t *r, int64_t ix)
{
    for (uint32_t i = 0; i < ROWS; i++)
        if (r->index[i] == ix)
            return i;
    cr_assert(false, "index %lld was not put", (long long)ix);
    return 0;
}

static const char *const ALL_FIELDS[] = {"t", "n", "b"};

static tq_meta *fetch_ok(tq_client *c, const char *part, const char *task,
                         const char *const *fields, size_t nf, uint32_t n)
{
    tq_fetch_args_t a = {.partition = part, .task = task, .fields = fields, .num_fields = nf,
                         .batch_size = n};
    tq_meta *m = NULL;
    int rc = tq_get_meta(c, &a, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta(%s, %s): %s (%s)", part, task, tq_status_string(rc),
              tq_last_error(c));
    cr_assert(eq(u32, tq_meta_rows(m), n));
    return m;
}

/* Caller memory shaped after a meta, for dst batches: each field's cells in
 * one block, at an odd offset (unaligned on purpose), filled with UNREAD. */
typedef struct {
    uint32_t rows;
    uint8_t *block[3];   /* t, n, b */
    uint8_t *cell[3][ROWS];
    size_t   len[3][ROWS];
    int64_t  shape[ROWS * 2];
} dst_mem_t;

static void dst_mem_make(dst_mem_t *d, const tq_meta *m)
{
    memset(d, 0, sizeof(*d));
    d->rows = tq_meta_rows(m);
    cr_assert(le(u32, d->rows, ROWS));
    for (int f = 0; f < 3; f++) {
        tq_field_info_t info;
        cr_assert(eq(int, tq_meta_field(m, ALL_FIELDS[f], &info), TQ_OK));
        d->block[f] = xmalloc(info.bytes + 3);
        memset(d->block[f], UNREAD, info.bytes + 3);
        size_t at = 3;
        for (uint32_t i = 0; i < d->rows; i++) {
            const int64_t *shape = NULL;
            cr_assert(eq(int, tq_meta_row(m, ALL_FIELDS[f], i, &d->len[f][i], &shape), TQ_OK));
            if (f == 1)
                memcpy(&d->shape[2 * i], shape, 2 * sizeof(int64_t));
            d->cell[f][i] = d->block[f] + at;
            at += d->len[f][i];
        }
        cr_assert(eq(sz, at - 3, info.bytes), "field %s: the cells add up to its bytes",
                  ALL_FIELDS[f]);
    }
}

static void dst_mem_free(dst_mem_t *d)
{
    for (int f = 0; f < 3; f++)
        free(d->block[f]);
}

/* A dst batch over d with the fields named by mask (bit 0: t, 1: n, 2: b). */
static tq_batch *dst_batch(dst_mem_t *d, unsigned mask)
{
    tq_batch *b = batch_new(d->rows);
    static const int64_t tshape[2] = {TD0, TD1};
    if (mask & 1)
        cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_F32, 2, tshape, d->cell[0][0]),
                     TQ_OK));
    if (mask & 2)
        cr_assert(eq(int, tq_batch_add_nested(b, "n", TQ_DTYPE_I16, 2, d->shape,
                                              (const void *const *)d->cell[1]), TQ_OK));
    if (mask & 4)
        cr_assert(eq(int, tq_batch_add_bytes(b, "b", (const void *const *)d->cell[2], d->len[2]),
                     TQ_OK));
    return b;
}

/* The fields in mask hold m's rows as r put them; the others are unread. */
static void dst_check(const dst_mem_t *d, const tq_meta *m, const rows_t *r, unsigned mask)
{
    for (uint32_t i = 0; i < d->rows; i++) {
        uint32_t k = rows_at(r, tq_meta_indexes(m)[i]);
        const void *want[3] = {r->t + k * tensor_row_bytes, r->n[k], r->b[k]};
        const size_t want_len[3] = {tensor_row_bytes, r->n_len[k], r->b_len[k]};
        for (int f = 0; f < 3; f++) {
            char what[64];
            snprintf(what, sizeof(what), "field %s row %u", ALL_FIELDS[f], i);
            if (mask & (1u << f)) {
                tq_assert_bytes_eq(d->cell[f][i], d->len[f][i], want[f], want_len[f], what);
            } else {
                for (size_t j = 0; j < d->len[f][i]; j++)
                    cr_assert(eq(u8, d->cell[f][i][j], UNREAD), "%s byte %zu was written", what,
                              j);
            }
        }
    }
}

/* Nothing of d was written: every byte (and the odd lead) is still UNREAD. */
static void dst_untouched(const dst_mem_t *d, const char *what)
{
    for (int f = 0; f < 3; f++) {
        size_t n = 3;
        for (uint32_t i = 0; i < d->rows; i++)
            n += d->len[f][i];
        for (size_t j = 0; j < n; j++)
            cr_assert(eq(u8, d->block[f][j], UNREAD), "%s: field %s byte %zu was written", what,
                      ALL_FIELDS[f], j);
    }
}

/* The batch's data pointers are the caller's memory, as given. */
static void dst_pointers(const tq_batch *b, const dst_mem_t *d, unsigned mask)
{
    for (int f = 0; f < 3; f++) {
        if (!(mask & (1u << f)))
            continue;
        tq_field_info_t info;
        cr_assert(eq(int, tq_batch_field(b, ALL_FIELDS[f], &info), TQ_OK));
        if (f == 0)
            cr_assert(eq(ptr, (void *)info.data, d->cell[0][0]), "tensor column moved");
        for (uint32_t i = 0; i < d->rows; i++) {
            const void *p = tq_batch_row(b, ALL_FIELDS[f], i, NULL, NULL);
            if (d->len[f][i] > 0)
                cr_assert(eq(ptr, (void *)p, d->cell[f][i]), "field %s row %u moved",
                          ALL_FIELDS[f], i);
        }
    }
}

/* An expected TQ_ERR_INVALID whose detail names every one of the words. */
static void assert_invalid_says(tq_client *c, int rc, const char *what, const char *w1,
                                const char *w2)
{
    cr_assert(eq(int, rc, TQ_ERR_INVALID), "%s: %s", what, tq_status_string(rc));
    const char *err = tq_last_error(c);
    cr_assert(ne(ptr, strstr(err, w1), NULL), "%s: '%s' does not say '%s'", what, err, w1);
    if (w2 != NULL)
        cr_assert(ne(ptr, strstr(err, w2), NULL), "%s: '%s' does not say '%s'", what, err, w2);
}

/* ---- a meta's schema ---- */

INTO_TEST(meta_schema)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("schema");
    rows_put(c, &r, part);
    static const char *const fields[] = {"b", "t", "n"};
    tq_meta *m = fetch_ok(c, part, "train", fields, 3, ROWS);

    cr_assert(eq(str, S(tq_meta_partition(m)), S(part)));
    cr_assert(eq(u32, tq_meta_num_fields(m), 3));
    for (uint32_t k = 0; k < 3; k++) { /* the fields asked for, in that order */
        cr_assert(ne(ptr, (void *)tq_meta_field_name(m, k), NULL), "field %u", k);
        cr_assert(eq(str, S(tq_meta_field_name(m, k)), S(fields[k])), "field %u", k);
    }
    cr_assert(eq(ptr, (void *)tq_meta_field_name(m, 3), NULL));

    tq_field_info_t info;
    memset(&info, 0x5a, sizeof(info));
    cr_assert(eq(int, tq_meta_field(m, "t", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_TENSOR));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_F32));
    cr_assert(eq(u32, info.ndim, 2));
    cr_assert(eq(i64, info.row_shape[0], TD0));
    cr_assert(eq(i64, info.row_shape[1], TD1));
    cr_assert(eq(ptr, (void *)info.data, NULL), "a meta has no data");
    cr_assert(eq(sz, info.bytes, ROWS * tensor_row_bytes));

    size_t n_bytes = 0, b_bytes = 0;
    for (uint32_t i = 0; i < ROWS; i++) {
        uint32_t k = rows_at(&r, tq_meta_indexes(m)[i]);
        size_t bytes = 0;
        const int64_t *shape = NULL;
        cr_assert(eq(int, tq_meta_row(m, "t", i, &bytes, &shape), TQ_OK));
        cr_assert(eq(sz, bytes, tensor_row_bytes));
        cr_assert(eq(i64, shape[0], TD0));
        cr_assert(eq(i64, shape[1], TD1));
        cr_assert(eq(int, tq_meta_row(m, "n", i, &bytes, &shape), TQ_OK));
        cr_assert(eq(sz, bytes, r.n_len[k]), "nested row %u", i);
        cr_assert(eq(i64, shape[0], r.n_shape[2 * k]), "nested row %u", i);
        cr_assert(eq(i64, shape[1], r.n_shape[2 * k + 1]), "nested row %u", i);
        n_bytes += bytes;
        cr_assert(eq(int, tq_meta_row(m, "b", i, &bytes, NULL), TQ_OK));
        cr_assert(eq(sz, bytes, r.b_len[k]), "bytes row %u", i);
        b_bytes += bytes;
        cr_assert(eq(int, tq_meta_row(m, "b", i, NULL, NULL), TQ_OK));
    }
    cr_assert(eq(int, tq_meta_field(m, "n", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_NESTED));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_I16));
    cr_assert(eq(u32, info.ndim, 2));
    cr_assert(eq(sz, info.bytes, n_bytes));
    cr_assert(eq(int, tq_meta_field(m, "b", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_BYTES));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_BYTES));
    cr_assert(eq(u32, info.ndim, 0));
    cr_assert(eq(sz, info.bytes, b_bytes));

    /* what the batch read says is what the meta said */
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    for (uint32_t k = 0; k < 3; k++) {
        tq_field_info_t bi, mi;
        cr_assert(eq(int, tq_batch_field(got, fields[k], &bi), TQ_OK));
        cr_assert(eq(int, tq_meta_field(m, fields[k], &mi), TQ_OK));
        cr_assert(eq(int, bi.kind, mi.kind));
        cr_assert(eq(int, bi.dtype, mi.dtype));
        cr_assert(eq(u32, bi.ndim, mi.ndim));
        cr_assert(eq(sz, bi.bytes, mi.bytes));
        cr_assert(eq(int, memcmp(bi.row_shape, mi.row_shape, sizeof(bi.row_shape)), 0));
    }
    tq_batch_destroy(got);

    /* bad arguments */
    cr_assert(eq(int, tq_meta_field(m, "nope", &info), TQ_ERR_NOT_FOUND));
    cr_assert(ne(ptr, strstr(tq_last_error(c), "nope"), NULL), "%s", tq_last_error(c));
    cr_assert(eq(int, tq_meta_row(m, "nope", 0, NULL, NULL), TQ_ERR_NOT_FOUND));
    cr_assert(eq(int, tq_meta_row(m, "t", ROWS, NULL, NULL), TQ_ERR_INVALID));
    cr_assert(ne(ptr, strstr(tq_last_error(c), "row"), NULL), "%s", tq_last_error(c));
    cr_assert(eq(int, tq_meta_field(m, NULL, &info), TQ_ERR_INVALID));
    cr_assert(eq(int, tq_meta_field(m, "t", NULL), TQ_ERR_INVALID));
    cr_assert(eq(int, tq_meta_field(NULL, "t", &info), TQ_ERR_INVALID));
    cr_assert(eq(int, tq_meta_row(NULL, "t", 0, NULL, NULL), TQ_ERR_INVALID));
    cr_assert(eq(int, tq_meta_row(m, NULL, 0, NULL, NULL), TQ_ERR_INVALID));
    cr_assert(eq(u32, tq_meta_num_fields(NULL), 0));
    cr_assert(eq(ptr, (void *)tq_meta_field_name(NULL, 0), NULL));
    cr_assert(eq(ptr, (void *)tq_meta_partition(NULL), NULL));
    tq_meta_free(m);
    rows_free(&r);
}

/* ---- reading into the caller's memory ---- */

INTO_TEST(into_every_kind)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("into");
    rows_put(c, &r, part);
    tq_meta *m = fetch_ok(c, part, "train", ALL_FIELDS, 3, ROWS);
    dst_mem_t d;
    dst_mem_make(&d, m);
    tq_batch *dst = dst_batch(&d, 7);
    int rc = tq_get_data_into(c, m, dst);
    cr_assert(eq(int, rc, TQ_OK), "get_data_into: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    dst_check(&d, m, &r, 7);
    dst_pointers(dst, &d, 7);
    cr_assert(eq(u32, tq_batch_num_fields(dst), 3), "the read added no field");
    /* the leads before each block are untouched: nothing was written out of bounds */
    for (int f = 0; f < 3; f++)
        for (int j = 0; j < 3; j++)
            cr_assert(eq(u8, d.block[f][j], UNREAD), "field %s: byte before the cells",
                      ALL_FIELDS[f]);

    /* the same rows again, by tq_get_data: the same bytes */
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    for (int f = 0; f < 3; f++)
        for (uint32_t i = 0; i < ROWS; i++) {
            size_t len = 0;
            const void *p = tq_batch_row(got, ALL_FIELDS[f], i, &len, NULL);
            tq_assert_bytes_eq(p, len, d.cell[f][i], d.len[f][i], ALL_FIELDS[f]);
        }
    tq_batch_destroy(got);
    tq_batch_destroy(dst); /* borrowed memory: the caller's to free */
    dst_mem_free(&d);
    tq_meta_free(m);

    /* the read delivered: the rows stay consumed */
    tq_fetch_args_t a = {.partition = part, .task = "train", .fields = ALL_FIELDS,
                         .num_fields = 3, .batch_size = 1};
    tq_meta *again = META_SENTINEL;
    cr_assert(eq(int, tq_get_meta(c, &a, &again), TQ_ERR_TIMEOUT));
    rows_free(&r);
}

INTO_TEST(into_a_subset_of_fields)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("subset");
    rows_put(c, &r, part);
    tq_meta *m = fetch_ok(c, part, "train", ALL_FIELDS, 3, 5);
    for (unsigned mask = 1; mask < 7; mask++) {
        dst_mem_t d;
        dst_mem_make(&d, m);
        tq_batch *dst = dst_batch(&d, mask);
        int rc = tq_get_data_into(c, m, dst);
        cr_assert(eq(int, rc, TQ_OK), "mask %u: %s (%s)", mask, tq_status_string(rc),
                  tq_last_error(c));
        dst_check(&d, m, &r, mask); /* only dst's fields read */
        dst_pointers(dst, &d, mask);
        tq_batch_destroy(dst);
        dst_mem_free(&d);
    }
    tq_meta_free(m);
    rows_free(&r);
}

/* A dst that differs from the meta in one thing: each is TQ_ERR_INVALID, names
 * the field and what differs, and nothing is read (also not the fields that fit). */
INTO_TEST(into_mismatch_reads_nothing)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("mismatch");
    rows_put(c, &r, part);
    tq_meta *m = fetch_ok(c, part, "train", ALL_FIELDS, 3, 4);
    dst_mem_t d;
    dst_mem_make(&d, m);
    static const int64_t tshape[2] = {TD0, TD1}, tshape_wrong[2] = {TD1, TD0};
    static const int64_t tshape3[3] = {TD0, TD1, 1};
    int64_t scratch[64];

    /* each case: the n and b fields fit; the tensor t differs */
    struct {
        const char *what, *w1, *w2;
        tq_dtype_t  dtype;
        uint32_t    ndim;
        const int64_t *shape;
    } cases[] = {
        {"dtype", "t", "dtype i32 in dst, f32 in the meta", TQ_DTYPE_I32, 2, tshape},
        {"new dtype", "t", "dtype u32", TQ_DTYPE_U32, 2, tshape},
        {"shape", "t", "row shape [5, 4] in dst, [4, 5] in the meta", TQ_DTYPE_F32, 2, tshape_wrong},
        {"dimensions", "t", "3 dimensions in dst, 2", TQ_DTYPE_F32, 3, tshape3},
    };
    for (size_t k = 0; k < N_OF(cases); k++) {
        tq_batch *dst = dst_batch(&d, 6);
        cr_assert(eq(int, tq_batch_add_tensor(dst, "t", cases[k].dtype, cases[k].ndim,
                                              cases[k].shape, d.cell[0][0]), TQ_OK));
        assert_invalid_says(c, tq_get_data_into(c, m, dst), cases[k].what, "field t",
                            cases[k].w2);
        tq_batch_destroy(dst);
        dst_untouched(&d, cases[k].what);
    }

    /* kind: t given as nested, with the right shapes and sizes */
    tq_batch *dst = dst_batch(&d, 6);
    for (uint32_t i = 0; i < d.rows; i++)
        memcpy(&scratch[2 * i], tshape, sizeof(tshape));
    cr_assert(eq(int, tq_batch_add_nested(dst, "t", TQ_DTYPE_F32, 2, scratch,
                                          (const void *const *)d.cell[0]), TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, dst), "kind", "field t",
                        "nested field in dst, tensor in the meta");
    tq_batch_destroy(dst);
    dst_untouched(&d, "kind");

    /* nested: one row's shape differs (same size) */
    dst = dst_batch(&d, 5);
    memcpy(scratch, d.shape, d.rows * 2 * sizeof(int64_t));
    int64_t t0 = scratch[2], t1 = scratch[3];
    scratch[2] = t1, scratch[3] = t0;
    if (t0 == t1) /* a square cell: change the element count */
        scratch[2] = t0 + 1;
    cr_assert(eq(int, tq_batch_add_nested(dst, "n", TQ_DTYPE_I16, 2, scratch,
                                          (const void *const *)d.cell[1]), TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, dst), "nested shape", "field n, row 1",
                        "in dst");
    tq_batch_destroy(dst);
    dst_untouched(&d, "nested shape");

    /* bytes: one row a byte longer */
    dst = dst_batch(&d, 3);
    size_t lens[ROWS];
    memcpy(lens, d.len[2], sizeof(lens));
    lens[2] += 1;
    uint8_t *big = xmalloc(lens[2]);
    const void *cells[ROWS];
    memcpy(cells, d.cell[2], sizeof(cells));
    cells[2] = big;
    cr_assert(eq(int, tq_batch_add_bytes(dst, "b", cells, lens), TQ_OK));
    char want[64];
    snprintf(want, sizeof(want), "%zu bytes in dst, %zu in the meta", lens[2], d.len[2][2]);
    assert_invalid_says(c, tq_get_data_into(c, m, dst), "size", "field b, row 2", want);
    tq_batch_destroy(dst);
    free(big);
    dst_untouched(&d, "size");

    /* a field the meta lacks, next to ones it has */
    dst = dst_batch(&d, 7);
    int64_t extra[ROWS];
    cr_assert(eq(int, tq_batch_add_tensor(dst, "extra", TQ_DTYPE_I64, 0, NULL, extra), TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, dst), "unknown field", "field extra",
                        "not in the meta");
    tq_batch_destroy(dst);
    dst_untouched(&d, "unknown field");

    /* rows: a batch of one more row */
    tq_batch *more = batch_new(d.rows + 1);
    uint8_t *col = xmalloc((d.rows + 1) * tensor_row_bytes);
    cr_assert(eq(int, tq_batch_add_tensor(more, "t", TQ_DTYPE_F32, 2, tshape, col), TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, more), "rows", "5 rows", "4");
    tq_batch_destroy(more);
    free(col);

    /* no field, NULL dst, NULL or a stranger's meta */
    tq_batch *none = batch_new(d.rows);
    assert_invalid_says(c, tq_get_data_into(c, m, none), "no field", "no field", NULL);
    tq_batch_destroy(none);
    assert_invalid_says(c, tq_get_data_into(c, m, NULL), "NULL dst", "dst is NULL", NULL);
    dst = dst_batch(&d, 7);
    assert_invalid_says(c, tq_get_data_into(c, NULL, dst), "NULL meta", "meta", NULL);
    cr_assert(eq(int, tq_get_data_into(NULL, m, dst), TQ_ERR_INVALID));
    tq_client *other = NULL;
    cr_assert(eq(int, tq_open(tq_controller_address(c), &other), TQ_OK));
    assert_invalid_says(other, tq_get_data_into(other, m, dst), "another client's meta",
                        "another client", NULL);
    tq_close(other);
    dst_untouched(&d, "NULL arguments");

    /* and after all that, the meta still reads */
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_OK), "%s", tq_last_error(c));
    dst_check(&d, m, &r, 7);
    tq_batch_destroy(dst);
    dst_mem_free(&d);
    tq_meta_free(m);
    rows_free(&r);
}

/* The new dtypes into caller memory, and told apart from each other. */
INTO_TEST(into_new_dtypes)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("dtypes");
    static const struct {
        const char *name;
        tq_dtype_t  dtype;
        size_t      size;
    } d[] = {{"u16", TQ_DTYPE_U16, 2}, {"u32", TQ_DTYPE_U32, 4},  {"u64", TQ_DTYPE_U64, 8},
             {"c32", TQ_DTYPE_C32, 4}, {"c64", TQ_DTYPE_C64, 8}, {"c128", TQ_DTYPE_C128, 16}};
    enum { R = 3, E = 7 };
    static const int64_t shape[1] = {E};
    tq_batch *b = batch_new(R);
    uint8_t *src[N_OF(d)], *dstmem[N_OF(d)];
    const char *names[N_OF(d)];
    for (size_t k = 0; k < N_OF(d); k++) {
        cr_assert(eq(sz, tq_dtype_size(d[k].dtype), d[k].size), "%s", d[k].name);
        src[k] = xmalloc(R * E * d[k].size);
        fill(src[k], R * E * d[k].size, 300 + (uint32_t)k);
        cr_assert(eq(int, tq_batch_add_tensor(b, d[k].name, d[k].dtype, 1, shape, src[k]), TQ_OK));
        names[k] = d[k].name;
    }
    int64_t idx[R];
    cr_assert(eq(int, tq_put(c, part, b, NULL, idx), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);
    tq_meta *m = fetch_ok(c, part, "t", names, N_OF(d), R);
    tq_batch *dst = batch_new(R);
    for (size_t k = 0; k < N_OF(d); k++) {
        tq_field_info_t info;
        cr_assert(eq(int, tq_meta_field(m, d[k].name, &info), TQ_OK));
        cr_assert(eq(int, info.dtype, d[k].dtype), "%s", d[k].name);
        dstmem[k] = xmalloc(R * E * d[k].size);
        cr_assert(eq(int, tq_batch_add_tensor(dst, d[k].name, d[k].dtype, 1, shape, dstmem[k]),
                     TQ_OK));
    }
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_OK), "%s", tq_last_error(c));
    for (size_t k = 0; k < N_OF(d); k++)
        for (uint32_t i = 0; i < R; i++) {
            int64_t ix = tq_meta_indexes(m)[i], at = ix == idx[0] ? 0 : ix == idx[1] ? 1 : 2;
            size_t rb = E * d[k].size;
            tq_assert_bytes_eq(dstmem[k] + i * rb, rb, src[k] + (size_t)at * rb, rb, d[k].name);
        }
    tq_batch_destroy(dst);
    /* same size, another dtype: refused by name (u64 for c64, c32 for u32) */
    static const int64_t shape2[1] = {E};
    tq_batch *wrong = batch_new(R);
    cr_assert(eq(int, tq_batch_add_tensor(wrong, "c64", TQ_DTYPE_U64, 1, shape2, dstmem[4]),
                 TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, wrong), "u64 for c64", "field c64",
                        "dtype u64 in dst, c64 in the meta");
    tq_batch_destroy(wrong);
    wrong = batch_new(R);
    cr_assert(eq(int, tq_batch_add_tensor(wrong, "u32", TQ_DTYPE_C32, 1, shape2, dstmem[1]),
                 TQ_OK));
    assert_invalid_says(c, tq_get_data_into(c, m, wrong), "c32 for u32", "field u32",
                        "dtype c32 in dst, u32 in the meta");
    tq_batch_destroy(wrong);
    for (size_t k = 0; k < N_OF(d); k++) {
        free(src[k]);
        free(dstmem[k]);
    }
    tq_meta_free(m);
}

/* ---- tq_kv_get_meta ---- */

INTO_TEST(kv_get_meta_then_into)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kvmeta");
    static const char *const keys[] = {"k0", "k1", "k2"};
    int64_t v[3] = {10, 11, 12};
    float w[3][2] = {{1, 2}, {3, 4}, {5, 6}};
    static const int64_t two[1] = {2};
    tq_batch *b = batch_new(3);
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "w", TQ_DTYPE_F32, 1, two, w), TQ_OK));
    cr_assert(eq(int, tq_kv_batch_put(c, part, 3, keys, b, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);

    static const char *const rev[] = {"k2", "k0"};
    tq_meta *m = META_SENTINEL;
    int rc = tq_kv_get_meta(c, part, 2, rev, 0, NULL, &m);
    cr_assert(eq(int, rc, TQ_OK), "kv_get_meta: %s (%s)", tq_status_string(rc), tq_last_error(c));
    cr_assert(eq(u32, tq_meta_rows(m), 2));
    cr_assert(eq(u32, tq_meta_num_fields(m), 2), "fields NULL: every field the keys have");
    cr_assert(eq(str, S(tq_meta_partition(m)), S(part)));
    int64_t got_v[2] = {-1, -1};
    float got_w[2][2] = {{0}};
    tq_batch *dst = batch_new(2);
    cr_assert(eq(int, tq_batch_add_tensor(dst, "w", TQ_DTYPE_F32, 1, two, got_w), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(dst, "v", TQ_DTYPE_I64, 0, NULL, got_v), TQ_OK));
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(i64, got_v[0], 12));
    cr_assert(eq(i64, got_v[1], 10));
    cr_assert(eq(flt, got_w[0][1], 6.0f));
    cr_assert(eq(flt, got_w[1][0], 1.0f));
    tq_batch_destroy(dst);
    /* consuming nothing: the keys read again, also while the meta lives */
    tq_batch *again = NULL;
    cr_assert(eq(int, tq_kv_batch_get(c, part, 2, rev, 0, NULL, &again), TQ_OK));
    tq_batch_destroy(again);
    tq_meta_free(m);

    /* one field only, and errors as tq_kv_batch_get */
    static const char *const only_v[] = {"v"};
    cr_assert(eq(int, tq_kv_get_meta(c, part, 1, keys, 1, only_v, &m), TQ_OK));
    cr_assert(eq(u32, tq_meta_num_fields(m), 1));
    cr_assert(eq(str, S(tq_meta_field_name(m, 0)), S("v")));
    tq_meta_free(m);
    static const char *const ghost[] = {"k0", "ghost"};
    m = META_SENTINEL;
    cr_assert(eq(int, tq_kv_get_meta(c, part, 2, ghost, 0, NULL, &m), TQ_ERR_NOT_FOUND));
    cr_assert(ne(ptr, strstr(tq_last_error(c), "ghost"), NULL), "%s", tq_last_error(c));
    cr_assert(eq(ptr, m, META_SENTINEL), "a failed kv_get_meta wrote meta_p");
    assert_invalid_says(c, tq_kv_get_meta(c, part, 1, keys, 0, NULL, NULL), "NULL meta_p",
                        "meta_p", NULL);
    assert_invalid_says(c, tq_kv_get_meta(c, part, 0, keys, 0, NULL, &m), "no keys", "keys",
                        NULL);
    cr_assert(eq(ptr, m, META_SENTINEL));
}

/* ---- non-blocking twins ---- */

/* The request's fd is readable within REQ_TIMEOUT_MS; then the request is complete. */
static void fd_becomes_readable(tq_request *r, const char *what)
{
    int fd = tq_request_fd(r);
    cr_assert(le(int, 0, fd), "%s: tq_request_fd: %d", what, fd);
    cr_assert(eq(int, tq_request_fd(r), fd), "%s: a second tq_request_fd gave another fd", what);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, REQ_TIMEOUT_MS);
    cr_assert(eq(int, n, 1), "%s: the fd did not become readable", what);
    cr_assert(ne(int, p.revents & POLLIN, 0), "%s", what);
    /* it stays readable */
    p.revents = 0;
    cr_assert(eq(int, poll(&p, 1, 0), 1), "%s: the fd went unreadable", what);
}

static int wait_ok(tq_client *c, tq_request *r, const char *what)
{
    int rc = tq_request_wait(r, REQ_TIMEOUT_MS);
    cr_assert(eq(int, rc, TQ_OK), "%s: %s (%s)", what, tq_status_string(rc), tq_last_error(c));
    return rc;
}

/* The eventfds this process has open. */
static unsigned open_eventfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert(ne(ptr, d, NULL));
    unsigned n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[300], target[128];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strstr(target, "eventfd") != NULL;
        }
    }
    closedir(d);
    return n;
}

INTO_TEST(nonblocking_twins)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("nb");

    /* put_nb: indexes_out written at completion; the fd made before it completes */
    static const int64_t tshape[2] = {TD0, TD1};
    rows_make(&r, part);
    tq_batch *b = rows_batch(&r);
    tq_request *req = REQUEST_SENTINEL;
    for (uint32_t i = 0; i < ROWS; i++)
        r.index[i] = -1;
    cr_assert(eq(int, tq_put_nb(c, part, b, NULL, r.index, &req), TQ_OK), "%s", tq_last_error(c));
    cr_assert(ne(ptr, req, REQUEST_SENTINEL));
    fd_becomes_readable(req, "put_nb");
    wait_ok(c, req, "put_nb");
    for (uint32_t i = 0; i < ROWS; i++)
        cr_assert(le(i64, 0, r.index[i]), "put_nb: indexes_out[%u] not written", i);
    cr_assert(eq(i64, tq_request_result(req), 0), "put_nb has no count");
    tq_request_free(req);
    tq_batch_destroy(b);

    /* get_meta_nb, take_meta (once) */
    tq_fetch_args_t a = {.partition = part, .task = "train", .fields = ALL_FIELDS,
                         .num_fields = 3, .batch_size = ROWS, .timeout_ms = 1000};
    cr_assert(eq(int, tq_get_meta_nb(c, &a, &req), TQ_OK), "%s", tq_last_error(c));
    fd_becomes_readable(req, "get_meta_nb");
    wait_ok(c, req, "get_meta_nb");
    tq_meta *m = tq_request_take_meta(req);
    cr_assert(ne(ptr, m, NULL), "get_meta_nb: nothing to take");
    cr_assert(eq(ptr, tq_request_take_meta(req), NULL), "taken twice");
    cr_assert(eq(ptr, tq_request_take_batch(req), NULL));
    cr_assert(eq(ptr, tq_request_take_entries(req), NULL));
    tq_request_free(req);
    cr_assert(eq(u32, tq_meta_rows(m), ROWS));
    cr_assert(eq(str, S(tq_meta_partition(m)), S(part)));

    /* get_data_into_nb: caller memory, checked at the call */
    dst_mem_t d;
    dst_mem_make(&d, m);
    tq_batch *dst = dst_batch(&d, 5);
    cr_assert(eq(int, tq_get_data_into_nb(c, m, dst, &req), TQ_OK), "%s", tq_last_error(c));
    fd_becomes_readable(req, "get_data_into_nb");
    wait_ok(c, req, "get_data_into_nb");
    cr_assert(eq(ptr, tq_request_take_batch(req), NULL), "into makes no batch");
    tq_request_free(req);
    dst_check(&d, m, &r, 5);
    dst_pointers(dst, &d, 5);
    tq_batch_destroy(dst);
    /* a dst that does not fit is refused by the call itself, nothing made or read */
    dst_mem_t d2;
    dst_mem_make(&d2, m);
    dst = batch_new(d2.rows);
    cr_assert(eq(int, tq_batch_add_tensor(dst, "t", TQ_DTYPE_I32, 2, tshape, d2.cell[0][0]),
                 TQ_OK));
    req = REQUEST_SENTINEL;
    assert_invalid_says(c, tq_get_data_into_nb(c, m, dst, &req), "into_nb dtype", "field t",
                        "dtype");
    cr_assert(eq(ptr, req, REQUEST_SENTINEL), "a refused call wrote req_p");
    tq_batch_destroy(dst);
    dst_untouched(&d2, "into_nb refused");
    dst_mem_free(&d2);

    /* get_data_nb: a batch to take; the fd asked for after completion */
    cr_assert(eq(int, tq_get_data_nb(c, m, &req), TQ_OK), "%s", tq_last_error(c));
    wait_ok(c, req, "get_data_nb");
    fd_becomes_readable(req, "get_data_nb (fd after completion)");
    tq_batch *got = tq_request_take_batch(req);
    cr_assert(ne(ptr, got, NULL));
    tq_request_free(req);
    for (uint32_t i = 0; i < ROWS; i++) {
        size_t len;
        const void *p = tq_batch_row(got, "t", i, &len, NULL);
        tq_assert_bytes_eq(p, len, d.cell[0][i], d.len[0][i], "get_data_nb t");
        p = tq_batch_row(got, "b", i, &len, NULL);
        tq_assert_bytes_eq(p, len, d.cell[2][i], d.len[2][i], "get_data_nb b");
    }
    tq_batch_destroy(got);
    dst_mem_free(&d);
    tq_meta_free(m);

    /* kv: put, get_meta_nb, list_nb, clear_nb (its count) */
    const char *kpart = tq_test_unique("nb_kv");
    static const char *const keys[] = {"a", "b", "c"};
    int64_t v[3] = {1, 2, 3};
    b = batch_new(3);
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    cr_assert(eq(int, tq_kv_batch_put(c, kpart, 3, keys, b, NULL), TQ_OK));
    tq_batch_destroy(b);
    cr_assert(eq(int, tq_kv_get_meta_nb(c, kpart, 3, keys, 0, NULL, &req), TQ_OK));
    fd_becomes_readable(req, "kv_get_meta_nb");
    wait_ok(c, req, "kv_get_meta_nb");
    m = tq_request_take_meta(req);
    tq_request_free(req);
    cr_assert(ne(ptr, m, NULL));
    int64_t got_v[3] = {0};
    dst = batch_new(3);
    cr_assert(eq(int, tq_batch_add_tensor(dst, "v", TQ_DTYPE_I64, 0, NULL, got_v), TQ_OK));
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(i64, got_v[0], 1));
    cr_assert(eq(i64, got_v[2], 3));
    tq_batch_destroy(dst);
    tq_meta_free(m);

    cr_assert(eq(int, tq_kv_list_nb(c, kpart, &req), TQ_OK));
    fd_becomes_readable(req, "kv_list_nb");
    wait_ok(c, req, "kv_list_nb");
    tq_kv_entries *ents = tq_request_take_entries(req);
    cr_assert(ne(ptr, ents, NULL));
    cr_assert(eq(ptr, tq_request_take_entries(req), NULL));
    tq_request_free(req);
    cr_assert(eq(sz, tq_kv_entries_size(ents), 3));
    cr_assert(eq(str, S(tq_kv_entries_key(ents, 1)), S("b")));
    tq_kv_entries_free(ents);
    /* NULL: every partition */
    cr_assert(eq(int, tq_kv_list_nb(c, NULL, &req), TQ_OK));
    wait_ok(c, req, "kv_list_nb(NULL)");
    ents = tq_request_take_entries(req);
    cr_assert(le(sz, 3, tq_kv_entries_size(ents)));
    tq_kv_entries_free(ents);
    tq_request_free(req);

    static const char *const clear[] = {"a", "c", "nope"};
    cr_assert(eq(int, tq_kv_clear_nb(c, kpart, 3, clear, &req), TQ_OK));
    fd_becomes_readable(req, "kv_clear_nb");
    wait_ok(c, req, "kv_clear_nb");
    cr_assert(eq(i64, tq_request_result(req), 2), "kv_clear_nb removed 2 of 3 keys");
    tq_request_free(req);

    /* argument errors come from the call, no request made */
    req = REQUEST_SENTINEL;
    assert_invalid_says(c, tq_get_meta_nb(c, NULL, &req), "get_meta_nb(NULL)", "args", NULL);
    tq_fetch_args_t bad = a;
    bad.batch_size = 0;
    assert_invalid_says(c, tq_get_meta_nb(c, &bad, &req), "get_meta_nb(batch 0)", "batch_size",
                        NULL);
    assert_invalid_says(c, tq_get_meta_nb(c, &a, NULL), "get_meta_nb(NULL req_p)", "req_p",
                        NULL);
    assert_invalid_says(c, tq_put_nb(c, part, NULL, NULL, NULL, &req), "put_nb(NULL)", "batch",
                        NULL);
    assert_invalid_says(c, tq_get_data_nb(c, NULL, &req), "get_data_nb(NULL)", "meta", NULL);
    assert_invalid_says(c, tq_kv_clear_nb(c, kpart, 0, clear, &req), "kv_clear_nb(0)", "keys",
                        NULL);
    assert_invalid_says(c, tq_kv_list_nb(c, "", &req), "kv_list_nb('')", "partition", NULL);
    assert_invalid_says(c, tq_kv_get_meta_nb(c, kpart, 1, keys, 0, NULL, NULL),
                        "kv_get_meta_nb(NULL req_p)", "req_p", NULL);
    cr_assert(eq(ptr, req, REQUEST_SENTINEL), "a refused call wrote req_p");
    cr_assert(eq(int, tq_request_fd(NULL), TQ_ERR_INVALID));
    cr_assert(eq(i64, tq_request_result(NULL), 0));
    cr_assert(eq(ptr, tq_request_take_meta(NULL), NULL));
    cr_assert(eq(ptr, tq_request_take_entries(NULL), NULL));

    /* a later error from the request: an unknown key */
    static const char *const ghost[] = {"ghost"};
    cr_assert(eq(int, tq_kv_get_meta_nb(c, kpart, 1, ghost, 0, NULL, &req), TQ_OK));
    fd_becomes_readable(req, "kv_get_meta_nb(ghost)");
    cr_assert(eq(int, tq_request_wait(req, REQ_TIMEOUT_MS), TQ_ERR_NOT_FOUND));
    cr_assert(ne(ptr, strstr(tq_last_error(c), "ghost"), NULL), "%s", tq_last_error(c));
    cr_assert(eq(ptr, tq_request_take_meta(req), NULL));
    tq_request_free(req);

    /* no fd outlives its request */
    tq_request *many[32];
    for (int i = 0; i < 32; i++) { /* every connection the requests will want, made now */
        cr_assert(eq(int, tq_kv_list_nb(c, kpart, &many[i]), TQ_OK));
    }
    for (int i = 0; i < 32; i++)
        tq_request_free(many[i]);
    unsigned before = open_eventfds();
    for (int i = 0; i < 32; i++) {
        cr_assert(eq(int, tq_kv_list_nb(c, kpart, &many[i]), TQ_OK));
        if (i % 2 == 0)
            cr_assert(le(int, 0, tq_request_fd(many[i])));
    }
    for (int i = 0; i < 32; i++) {
        if (i % 2 == 1)
            cr_assert(le(int, 0, tq_request_fd(many[i])));
        tq_request_free(many[i]); /* untaken entries go with it */
    }
    cr_assert(eq(u32, open_eventfds(), before), "eventfds left after 32 requests freed");
    rows_free(&r);
}

/* A meta never taken from its request is freed with it, and its rows go back. */
INTO_TEST(untaken_meta_gives_rows_back)
{
    tq_client *c = e->c;
    rows_t r;
    const char *part = tq_test_unique("untaken");
    rows_put(c, &r, part);
    tq_fetch_args_t a = {.partition = part, .task = "train", .fields = ALL_FIELDS,
                         .num_fields = 3, .batch_size = ROWS};
    tq_request *req;
    cr_assert(eq(int, tq_get_meta_nb(c, &a, &req), TQ_OK));
    wait_ok(c, req, "get_meta_nb");
    tq_request_free(req);
    tq_meta *m = fetch_ok(c, part, "train", ALL_FIELDS, 3, ROWS); /* the same rows, again */
    tq_meta_free(m);
    rows_free(&r);
}

/* get_meta_nb waits as long as it asked, beyond the client's timeout; with -1,
 * the client's timeout bounds it: the controller answers TQ_ERR_TIMEOUT before. */
Test(into_deadlines, get_meta_nb_waits, .timeout = 60)
{
    setenv("TQ_TIMEOUT_MS", "2000", 1);
    tq_client *c = NULL;
    unsetenv("TQ_CONTROLLER");
    cr_assert(eq(int, tq_open("embedded", &c), TQ_OK));
    const char *part = tq_test_unique("nbwait");
    static const char *const fields[] = {"v"};
    tq_fetch_args_t a = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                         .batch_size = 1, .timeout_ms = -1};
    tq_request *req;
    uint64_t t0 = tq_test_now_ms();
    cr_assert(eq(int, tq_get_meta_nb(c, &a, &req), TQ_OK));
    fd_becomes_readable(req, "get_meta_nb(-1)");
    uint64_t took = tq_test_now_ms() - t0;
    int rc = tq_request_wait(req, 0);
    cr_assert(eq(int, rc, TQ_ERR_TIMEOUT), "get_meta_nb(-1) with no rows: %s (%s)",
              tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, strstr(tq_last_error(c), "too few ready rows"), NULL),
              "the controller, not the client, ends the wait: %s", tq_last_error(c));
    cr_assert(le(u64, took, 2500), "get_meta_nb(-1) took %llu ms, past the 2 s timeout",
              (unsigned long long)took);
    cr_assert(le(u64, 1000, took), "get_meta_nb(-1) gave up after %llu ms",
              (unsigned long long)took);
    tq_request_free(req);
    /* the controller, not the client, gave up: the connection is still good, and
     * nothing was consumed */
    a.timeout_ms = 4000;
    t0 = tq_test_now_ms();
    cr_assert(eq(int, tq_get_meta_nb(c, &a, &req), TQ_OK));
    usleep(2500 * 1000); /* past the client's timeout */
    int64_t v = 42;
    tq_batch *b = batch_new(1);
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, &v), TQ_OK));
    cr_assert(eq(int, tq_put(c, part, b, NULL, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);
    wait_ok(c, req, "get_meta_nb(4000) answered after 2.5 s");
    took = tq_test_now_ms() - t0;
    tq_meta *m = tq_request_take_meta(req);
    cr_assert(ne(ptr, m, NULL));
    cr_assert(lt(u64, took, 4000), "took %llu ms", (unsigned long long)took);
    tq_meta_free(m);
    tq_request_free(req);
    tq_close(c);
    unsetenv("TQ_TIMEOUT_MS");
}

/* ---- every transport by name ---- */

static void setup_transport(const char *name, const char *provider)
{
    if (tq__transport_find(name) == NULL)
        cr_skip_test("built without transport %s", name);
    setenv("TQ_TRANSPORT", name, 1);
    if (provider != NULL)
        setenv("FI_PROVIDER", provider, 1);
    cr_assert(eq(int, tq_test_cluster_start(&tq_test_env_cluster, 2, "64M"), 0),
              "cannot start tq-controller and 2 tq-storage (see stderr)");
    tq_client *c = NULL;
    int rc = tq_open(tq_test_env_cluster.address, &c);
    if (rc == TQ_ERR_UNSUPPORTED) {
        tq_test_cluster_stop(&tq_test_env_cluster);
        cr_skip_test("transport %s%s%s unusable here: %s", name, provider ? " over " : "",
                     provider ? provider : "", tq_last_error(NULL));
    }
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s) over %s: %s (%s)", tq_test_env_cluster.address,
              name, tq_status_string(rc), tq_last_error(NULL));
    cr_assert(eq(str, S(c->ops->name), S(name)), "the client took another transport");
    tq_test_env = (tq_test_env_t){c, tq_test_env_cluster.address};
}

static void setup_ucx(void) { setup_transport("ucx", NULL); }
static void setup_ofi_tcp(void) { setup_transport("ofi", "tcp"); }
static void setup_ofi_shm(void) { setup_transport("ofi", "shm"); }

static void teardown_transport(void)
{
    tq_test_env_teardown();
    unsetenv("TQ_TRANSPORT");
    unsetenv("FI_PROVIDER");
}

/* Large and small cells (registration caches and staging on the way), every
 * kind, into caller memory; a put from caller memory read back alike. */
static void transport_scenario(void)
{
    tq_client *c = tq_test_env.c;
    rows_t r;
    const char *part = tq_test_unique("tr");
    rows_put(c, &r, part);
    tq_meta *m = fetch_ok(c, part, "train", ALL_FIELDS, 3, ROWS);
    dst_mem_t d;
    dst_mem_make(&d, m);
    tq_batch *dst = dst_batch(&d, 7);
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_OK), "%s", tq_last_error(c));
    dst_check(&d, m, &r, 7);
    dst_pointers(dst, &d, 7);
    tq_batch_destroy(dst);
    dst_mem_free(&d);
    tq_meta_free(m);
    rows_free(&r);

    /* 4 rows of 1 MiB and 4 of 100 bytes, into one caller block each */
    enum { BIG = 1 << 20, SMALL = 100, NR = 4 };
    uint8_t *big = xmalloc((size_t)NR * BIG), *small = xmalloc(NR * SMALL);
    fill(big, (size_t)NR * BIG, 7);
    fill(small, NR * SMALL, 8);
    static const int64_t big_shape[1] = {BIG}, small_shape[1] = {SMALL};
    tq_batch *b = batch_new(NR);
    cr_assert(eq(int, tq_batch_add_tensor(b, "big", TQ_DTYPE_U8, 1, big_shape, big), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "small", TQ_DTYPE_U8, 1, small_shape, small),
                 TQ_OK));
    const char *part2 = tq_test_unique("tr_big");
    int64_t idx[NR];
    cr_assert(eq(int, tq_put(c, part2, b, NULL, idx), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);
    static const char *const f2[] = {"big", "small"};
    m = fetch_ok(c, part2, "t", f2, 2, NR);
    for (int round = 0; round < 2; round++) { /* the second time through cached registrations */
        uint8_t *gb = xmalloc((size_t)NR * BIG), *gs = xmalloc(NR * SMALL);
        memset(gb, UNREAD, (size_t)NR * BIG);
        tq_batch *into = batch_new(NR);
        cr_assert(eq(int, tq_batch_add_tensor(into, "big", TQ_DTYPE_U8, 1, big_shape, gb), TQ_OK));
        cr_assert(eq(int, tq_batch_add_tensor(into, "small", TQ_DTYPE_U8, 1, small_shape, gs),
                     TQ_OK));
        cr_assert(eq(int, tq_get_data_into(c, m, into), TQ_OK), "%s", tq_last_error(c));
        for (uint32_t i = 0; i < NR; i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            uint32_t at = 0;
            while (idx[at] != ix)
                at++;
            tq_assert_bytes_eq(gb + (size_t)i * BIG, BIG, big + (size_t)at * BIG, BIG, "big");
            tq_assert_bytes_eq(gs + i * SMALL, SMALL, small + at * SMALL, SMALL, "small");
        }
        tq_batch_destroy(into);
        free(gb);
        free(gs);
    }
    tq_meta_free(m);
    free(big);
    free(small);
}

Test(into_ucx, every_kind, .init = setup_ucx, .fini = teardown_transport, .timeout = 120)
{
    transport_scenario();
    tq_test_env_finish();
}

Test(into_ofi_tcp, every_kind, .init = setup_ofi_tcp, .fini = teardown_transport, .timeout = 120)
{
    transport_scenario();
    tq_test_env_finish();
}

Test(into_ofi_shm, every_kind, .init = setup_ofi_shm, .fini = teardown_transport, .timeout = 120)
{
    transport_scenario();
    tq_test_env_finish();
}
