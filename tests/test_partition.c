/* test_partition.c: the controller's model of one partition: row reservation, cells and
 * their reference-counted extents, clearing, tasks and consumption, claims of rows in
 * flight, lost cells, readiness and the sequential sampler, fields across growth,
 * destruction. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#include "controller/partition.h"
#include "pool.h"
#include "tq/tq.h"
#include "util/common.h"

#define MiB (UINT64_C(1) << 20)
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---------------------------------------------------------------------------- */

/* Under ASan, fail the test (not just print a report at exit) when the heap holds anything
 * unreachable; the partition, its fields, tasks and extents must all be gone by now. */
static void expect_no_leaks(void)
{
#ifdef HAVE_LSAN
    cr_assert(eq(int, __lsan_do_recoverable_leak_check(), 0), "LeakSanitizer found leaks");
#endif
}

static tq_partition_t *make_partition(const char *name)
{
    tq_partition_t *p = tq__partition_create(name, NULL);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(eq(str, p->name, (char *)name));
    cr_assert(eq(u64, p->num_slots, 0));
    cr_assert(eq(u64, p->live_rows, 0));
    cr_assert(eq(u32, p->num_fields, 0));
    return p;
}

static tq_pool *make_pool(uint64_t capacity)
{
    tq_pool *pool = NULL;
    cr_assert(eq(int, tq_pool_create(capacity, 64, &pool), TQ_OK));
    cr_assert(ne(ptr, pool, NULL));
    return pool;
}

static tq_field_t *add_tensor(tq_partition_t *p, const char *name)
{
    const int64_t shape[1] = {4};
    tq_field_t *f = tq__partition_add_field(p, name, TQ_FIELD_TENSOR, TQ_DTYPE_F32, 1, shape);
    cr_assert(ne(ptr, f, NULL), "add_field %s", name);
    return f;
}

/* A fresh extent of `size` bytes in pool, holding one reference (the put's). */
static tq_extent *ext_new(tq_pool *pool, uint64_t size)
{
    tq_extent *e = calloc(1, sizeof(*e));
    cr_assert(ne(ptr, e, NULL));
    e->unit = NULL;
    e->pool = pool;
    cr_assert(eq(int, tq_pool_alloc(pool, size, &e->block), TQ_OK), "alloc %llu",
              (unsigned long long)size);
    e->offset = tq_pool_block_offset(e->block);
    e->length = size;
    e->refs = 1;
    return e;
}

/* Put a cell [off, off+len) of e (NULL: an empty cell) at row of f; the cell takes its own
 * reference, as the controller's commit does. */
static void put_cell(tq_partition_t *p, tq_field_t *f, int64_t row, tq_extent *e, uint64_t off,
                     uint64_t len)
{
    tq_cell_t c;
    memset(&c, 0, sizeof(c));
    c.ext = e;
    c.offset = (e != NULL ? e->offset : 0) + off;
    c.length = len;
    c.shape[0] = (int64_t)len / 4;
    c.produced = false; /* set_cell must set it */
    if (e != NULL)
        tq__extent_ref(e);
    tq__partition_set_cell(p, f, row, &c);
}

/* The hint is only a lower bound: no free slot lies below it, and it never passes the top. */
static void check_hint(const tq_partition_t *p)
{
    cr_assert(le(u64, p->free_hint, p->num_slots));
    for (uint64_t r = 0; r < p->free_hint; r++)
        cr_assert(ne(u8, p->state[r], (uint8_t)TQ_ROW_FREE), "free row %llu below the hint %llu",
                  (unsigned long long)r, (unsigned long long)p->free_hint);
}

static void reserve_new_ok(tq_partition_t *p, uint32_t n, int64_t *out)
{
    cr_assert(eq(int, tq__partition_reserve_new(p, n, out), TQ_OK), "reserve_new %u", n);
    check_hint(p);
}

static void expect_state(const tq_partition_t *p, uint64_t row, tq_row_state_t st)
{
    cr_assert(lt(u64, row, p->num_slots), "row %llu", (unsigned long long)row);
    cr_assert(eq(u8, p->state[row], (uint8_t)st), "state of row %llu", (unsigned long long)row);
}

static bool cell_is_zero(const tq_cell_t *c)
{
    static const tq_cell_t zero;
    return memcmp(c, &zero, sizeof(zero)) == 0;
}

/* ---- reserve_new / unreserve -------------------------------------------------------------- */

Test(partition, reserve_new_fresh_and_unreserve)
{
    tq_partition_t *p = make_partition("p0");
    int64_t out[10];

    cr_assert(eq(int, tq__partition_reserve_new(p, 0, out), TQ_OK));
    cr_assert(eq(u64, p->num_slots, 0));

    reserve_new_ok(p, 10, out);
    for (int i = 0; i < 10; i++) {
        cr_assert(eq(i64, out[i], i));
        expect_state(p, (uint64_t)i, TQ_ROW_RESERVED);
    }
    cr_assert(eq(u64, p->num_slots, 10));
    cr_assert(ge(u64, p->cap_slots, 10));
    cr_assert(eq(u64, p->live_rows, 0));
    check_hint(p);

    tq__partition_unreserve(p, 10, out);
    for (int i = 0; i < 10; i++)
        expect_state(p, (uint64_t)i, TQ_ROW_FREE);
    cr_assert(eq(u64, p->free_hint, 0));
    cr_assert(eq(u64, p->num_slots, 10));

    /* The same rows come back, no new slot is used. */
    int64_t again[10];
    reserve_new_ok(p, 10, again);
    for (int i = 0; i < 10; i++)
        cr_assert(eq(i64, again[i], i));
    cr_assert(eq(u64, p->num_slots, 10));

    /* Unreserve a few out of order: the lowest come back first, then new slots. */
    const int64_t back[] = {7, 2, 5};
    tq__partition_unreserve(p, 3, back);
    check_hint(p);
    int64_t two[2];
    reserve_new_ok(p, 2, two);
    cr_assert(eq(i64, two[0], 2));
    cr_assert(eq(i64, two[1], 5));
    reserve_new_ok(p, 2, two);
    cr_assert(eq(i64, two[0], 7));
    cr_assert(eq(i64, two[1], 10));
    cr_assert(eq(u64, p->num_slots, 11));
    for (uint64_t r = 0; r < 11; r++)
        expect_state(p, r, TQ_ROW_RESERVED);

    tq__partition_destroy(p);
    expect_no_leaks();
}

Test(partition, unreserve_ignores_live_free_and_out_of_range)
{
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    int64_t out[4];
    reserve_new_ok(p, 4, out);
    put_cell(p, f, 1, NULL, 0, 0);
    const int64_t first[] = {3};
    tq__partition_unreserve(p, 1, first);
    expect_state(p, 3, TQ_ROW_FREE);
    check_hint(p);

    const int64_t junk[] = {-1, INT64_MIN, INT64_MAX, 4, 100, 1, 3};
    tq__partition_unreserve(p, ARRAY_LEN(junk), junk);
    expect_state(p, 0, TQ_ROW_RESERVED);
    expect_state(p, 1, TQ_ROW_LIVE); /* live rows stay live */
    expect_state(p, 2, TQ_ROW_RESERVED);
    expect_state(p, 3, TQ_ROW_FREE);
    cr_assert(eq(u64, p->num_slots, 4));
    cr_assert(eq(u64, p->live_rows, 1));
    check_hint(p);
    tq__partition_unreserve(p, 0, junk);

    int64_t one;
    reserve_new_ok(p, 1, &one);
    cr_assert(eq(i64, one, 3));
    tq__partition_destroy(p);
    expect_no_leaks();
}

/* 32..47 live, 0..31 cleared: reserving 64 gives 0..31, then 48..79. */
Test(partition, reserve_new_lowest_free_first)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");

    int64_t rows[48];
    reserve_new_ok(p, 48, rows);
    tq_extent *e = ext_new(pool, 48 * 16);
    for (int i = 0; i < 48; i++) {
        cr_assert(eq(i64, rows[i], i));
        put_cell(p, f, rows[i], e, (uint64_t)i * 16, 16);
    }
    tq__extent_unref(e); /* the put is done */
    cr_assert(eq(u32, e->refs, 48));
    cr_assert(eq(u64, p->live_rows, 48));

    cr_assert(eq(u32, tq__partition_clear_rows(p, 32, rows), 32));
    cr_assert(eq(u32, e->refs, 16));
    cr_assert(eq(u64, p->live_rows, 16));
    cr_assert(eq(u64, p->free_hint, 0));
    for (uint64_t r = 0; r < 48; r++)
        expect_state(p, r, r < 32 ? TQ_ROW_FREE : TQ_ROW_LIVE);

    int64_t out[64];
    reserve_new_ok(p, 64, out);
    for (int i = 0; i < 32; i++)
        cr_assert(eq(i64, out[i], i), "out[%d]", i);
    for (int i = 32; i < 64; i++)
        cr_assert(eq(i64, out[i], 48 + (i - 32)), "out[%d]", i);
    cr_assert(eq(u64, p->num_slots, 80));
    cr_assert(eq(u64, p->live_rows, 16));
    for (uint64_t r = 0; r < 80; r++)
        expect_state(p, r, r >= 32 && r < 48 ? TQ_ROW_LIVE : TQ_ROW_RESERVED);

    /* Nothing free below the top now: the next one is new. */
    int64_t one;
    reserve_new_ok(p, 1, &one);
    cr_assert(eq(i64, one, 80));

    cr_assert(lt(u64, 0, tq_pool_used(pool)));
    tq__partition_destroy(p);
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    cr_assert(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* A free row found in the middle of the scan, with more rows wanted than are free below. */
Test(partition, reserve_new_mixes_holes_and_new_rows)
{
    tq_partition_t *p = make_partition("p");
    int64_t rows[200];
    reserve_new_ok(p, 200, rows);
    const int64_t holes[] = {199, 3, 150, 64, 65};
    tq__partition_unreserve(p, ARRAY_LEN(holes), holes);
    int64_t out[8];
    reserve_new_ok(p, 8, out);
    const int64_t want[] = {3, 64, 65, 150, 199, 200, 201, 202};
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        cr_assert(eq(i64, out[i], want[i]), "out[%zu]", i);
    cr_assert(eq(u64, p->num_slots, 203));
    for (uint64_t r = 0; r < p->num_slots; r++)
        expect_state(p, r, TQ_ROW_RESERVED);
    tq__partition_destroy(p);
    expect_no_leaks();
}

/* ---- reserve with explicit indexes ---------------------------------------------------------- */

typedef struct {
    uint64_t num_slots, free_hint, live_rows, cap;
    uint8_t  state[64];
} snap_t;

static void snap_take(const tq_partition_t *p, snap_t *s)
{
    cr_assert(le(u64, p->cap_slots, sizeof(s->state)));
    s->num_slots = p->num_slots;
    s->free_hint = p->free_hint;
    s->live_rows = p->live_rows;
    s->cap = p->cap_slots;
    memcpy(s->state, p->state, s->cap);
}

static void snap_check(const tq_partition_t *p, const snap_t *s, const char *what)
{
    cr_assert(eq(u64, p->num_slots, s->num_slots), "%s", what);
    cr_assert(eq(u64, p->free_hint, s->free_hint), "%s", what);
    cr_assert(eq(u64, p->live_rows, s->live_rows), "%s", what);
    check_hint(p);
    cr_assert(ge(u64, p->cap_slots, s->cap), "%s", what);
    for (uint64_t r = 0; r < p->cap_slots; r++) {
        uint8_t want = r < s->cap ? s->state[r] : 0;
        cr_assert(eq(u8, p->state[r], want), "%s: state of row %llu", what,
                  (unsigned long long)r);
    }
}

Test(partition, reserve_explicit_invalid_changes_nothing)
{
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    int64_t rows[6];
    reserve_new_ok(p, 6, rows);
    put_cell(p, f, 1, NULL, 0, 0);
    put_cell(p, f, 3, NULL, 0, 0);
    const int64_t five[] = {5};
    tq__partition_unreserve(p, 1, five);

    snap_t s;
    snap_take(p, &s);
    cr_assert(eq(u64, s.num_slots, 6));
    check_hint(p);

    static const struct {
        const char *what;
        uint32_t    n;
        int64_t     idx[4];
    } cases[] = {
        {"negative", 1, {-1}},
        {"negative after a good one", 2, {2, -1}},
        {"INT64_MIN", 2, {INT64_MIN, 0}},
        {"the limit", 1, {TQ_MAX_ROWS_PER_PARTITION}},
        {"past the limit", 3, {0, 4, TQ_MAX_ROWS_PER_PARTITION + 1}},
        {"INT64_MAX", 1, {INT64_MAX}},
        {"repeat of a reserved row", 3, {0, 2, 0}},
        {"repeat of a live row", 2, {1, 1}},
        {"repeat of a live row after others", 4, {3, 5, 1, 3}},
        {"repeat of a free row at the end", 4, {0, 5, 2, 5}},
        {"repeat of a new row", 3, {6, 40, 6}},
        {"repeat past the top", 3, {4, 50, 50}},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        cr_assert(eq(int, tq__partition_reserve(p, cases[i].n, cases[i].idx), TQ_ERR_INVALID),
                  "%s", cases[i].what);
        snap_check(p, &s, cases[i].what);
    }

    /* The same rows, unrepeated, reserve fine: no mark bit was left behind. */
    const int64_t good[] = {5, 1, 3, 0, 6, 40, 50};
    cr_assert(eq(int, tq__partition_reserve(p, ARRAY_LEN(good), good), TQ_OK));
    cr_assert(eq(u64, p->num_slots, 51));
    cr_assert(eq(u64, p->live_rows, 2));
    for (uint64_t r = 0; r < 51; r++) {
        tq_row_state_t st = TQ_ROW_FREE;
        if (r == 1 || r == 3)
            st = TQ_ROW_LIVE; /* an overwrite keeps it live */
        else if (r <= 6 || r == 40 || r == 50)
            st = TQ_ROW_RESERVED;
        expect_state(p, r, st);
    }
    /* n == 0 is a no-op. */
    cr_assert(eq(int, tq__partition_reserve(p, 0, good), TQ_OK));
    cr_assert(eq(u64, p->num_slots, 51));

    int64_t out[3];
    reserve_new_ok(p, 3, out);
    cr_assert(eq(i64, out[0], 7));
    cr_assert(eq(i64, out[1], 8));
    cr_assert(eq(i64, out[2], 9));
    tq__partition_destroy(p);
    expect_no_leaks();
}

Test(partition, reserve_explicit_invalid_on_fresh_partition)
{
    tq_partition_t *p = make_partition("p");
    const int64_t rep[] = {1000, 7, 1000};
    cr_assert(eq(int, tq__partition_reserve(p, 3, rep), TQ_ERR_INVALID));
    cr_assert(eq(u64, p->num_slots, 0));
    cr_assert(eq(u64, p->live_rows, 0));
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(eq(u8, p->state[r], 0), "state of row %llu", (unsigned long long)r);
    int64_t out[2];
    reserve_new_ok(p, 2, out);
    cr_assert(eq(i64, out[0], 0));
    cr_assert(eq(i64, out[1], 1));
    cr_assert(eq(u64, p->num_slots, 2));
    tq__partition_destroy(p);
    expect_no_leaks();
}

Test(partition, reserve_explicit_sparse_grows_and_fills_gaps)
{
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    tq_task_t *t = tq__partition_task(p, "t", true);
    cr_assert(ne(ptr, t, NULL));

    const int64_t far[] = {1000};
    cr_assert(eq(int, tq__partition_reserve(p, 1, far), TQ_OK));
    cr_assert(eq(u64, p->num_slots, 1001));
    cr_assert(ge(u64, p->cap_slots, 1001));
    for (uint64_t r = 0; r < 1001; r++)
        expect_state(p, r, r == 1000 ? TQ_ROW_RESERVED : TQ_ROW_FREE);
    /* every per-row array grew: touch the last slot of each */
    put_cell(p, f, 1000, NULL, 0, 8);
    cr_assert(eq(u8, t->consumed[1000], 0));
    t->consumed[1000] = 1;
    expect_state(p, 1000, TQ_ROW_LIVE);
    cr_assert(eq(u64, p->live_rows, 1));

    int64_t out[5];
    reserve_new_ok(p, 5, out);
    for (int i = 0; i < 5; i++)
        cr_assert(eq(i64, out[i], i));

    const int64_t mid[] = {500, 2000, 7};
    cr_assert(eq(int, tq__partition_reserve(p, 3, mid), TQ_OK));
    cr_assert(eq(u64, p->num_slots, 2001));
    reserve_new_ok(p, 5, out);
    const int64_t want[] = {5, 6, 8, 9, 10};
    for (int i = 0; i < 5; i++)
        cr_assert(eq(i64, out[i], want[i]), "out[%d]", i);

    /* The gap fills all the way up before any new slot is used. */
    int64_t *big = calloc(2000, sizeof(*big));
    cr_assert(ne(ptr, big, NULL));
    uint32_t free_rows = 0;
    for (uint64_t r = 0; r < p->num_slots; r++)
        free_rows += p->state[r] == TQ_ROW_FREE;
    cr_assert(eq(u32, free_rows, 2001 - 1 - 5 - 3 - 5));
    reserve_new_ok(p, free_rows + 2, big);
    for (uint32_t i = 1; i < free_rows; i++)
        cr_assert(lt(i64, big[i - 1], big[i]));
    cr_assert(eq(i64, big[0], 11));
    cr_assert(eq(i64, big[free_rows - 1], 1999));
    cr_assert(eq(i64, big[free_rows], 2001));
    cr_assert(eq(i64, big[free_rows + 1], 2002));
    for (uint64_t r = 0; r < p->num_slots; r++)
        expect_state(p, r, r == 1000 ? TQ_ROW_LIVE : TQ_ROW_RESERVED);
    cr_assert(eq(u8, t->consumed[1000], 1));
    free(big);
    tq__partition_destroy(p);
    expect_no_leaks();
}

/* ---- cells and extents ---------------------------------------------------------------------- */

Test(partition, set_cell_marks_live_and_refcounts_extents)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    tq_field_t *g = add_tensor(p, "y");

    int64_t rows[4];
    reserve_new_ok(p, 4, rows);
    tq_extent *a = ext_new(pool, 4 * 64);
    cr_assert(eq(u64, tq_pool_used(pool), 256));
    for (int i = 0; i < 4; i++)
        put_cell(p, f, rows[i], a, (uint64_t)i * 64, 64);
    cr_assert(eq(u32, a->refs, 5));
    cr_assert(eq(u64, p->live_rows, 4));
    for (int i = 0; i < 4; i++) {
        const tq_cell_t *c = &f->cells[i];
        expect_state(p, (uint64_t)i, TQ_ROW_LIVE);
        cr_assert(eq(ptr, c->ext, a));
        cr_assert(eq(u64, c->offset, a->offset + (uint64_t)i * 64));
        cr_assert(eq(u64, c->length, 64));
        cr_assert(eq(i64, c->shape[0], 16));
        cr_assert(c->produced);
        cr_assert(not(g->cells[i].produced));
        cr_assert(eq(ptr, g->cells[i].ext, NULL));
    }
    tq__extent_unref(a); /* the put is done */
    cr_assert(eq(u32, a->refs, 4));

    /* A reader pins a. */
    tq__extent_ref(a);
    cr_assert(eq(u32, a->refs, 5));

    /* Overwrite row 0 with b: a loses one reference, the row stays counted once. */
    tq_extent *b = ext_new(pool, 64);
    put_cell(p, f, 0, b, 0, 64);
    tq__extent_unref(b);
    cr_assert(eq(u32, b->refs, 1));
    cr_assert(eq(u32, a->refs, 4));
    cr_assert(eq(u64, p->live_rows, 4));
    cr_assert(eq(ptr, f->cells[0].ext, b));
    cr_assert(eq(u64, tq_pool_used(pool), 320));

    /* Overwrite with the same extent: the new cell's reference replaces the old one. */
    put_cell(p, f, 0, b, 0, 32);
    cr_assert(eq(u32, b->refs, 1));
    cr_assert(eq(u64, f->cells[0].length, 32));

    /* Clearing the other rows leaves a held only by the pin. */
    cr_assert(eq(u32, tq__partition_clear_rows(p, 3, &rows[1]), 3));
    cr_assert(eq(u32, a->refs, 1));
    cr_assert(eq(u64, tq_pool_used(pool), 320));
    for (int i = 1; i < 4; i++)
        cr_assert(cell_is_zero(&f->cells[i]), "row %d", i);
    tq__extent_unref(a); /* the last reference: a's range goes back */
    cr_assert(eq(u64, tq_pool_used(pool), 64));

    /* An empty cell (no extent) is produced too, and replacing b with it frees b. */
    put_cell(p, g, 0, NULL, 0, 0);
    cr_assert(g->cells[0].produced);
    put_cell(p, f, 0, NULL, 0, 0);
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    cr_assert(eq(ptr, f->cells[0].ext, NULL));
    cr_assert(f->cells[0].produced);
    cr_assert(eq(u64, p->live_rows, 1));

    tq__extent_unref(NULL);
    tq__partition_destroy(p);
    cr_assert(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* One extent shared by two fields and many rows: its range goes only with the last cell. */
Test(partition, extent_freed_with_last_reference)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    tq_field_t *g = add_tensor(p, "y");
    int64_t rows[10];
    reserve_new_ok(p, 10, rows);
    tq_extent *e = ext_new(pool, 20 * 64);
    for (int i = 0; i < 10; i++) {
        put_cell(p, f, i, e, (uint64_t)i * 64, 64);
        put_cell(p, g, i, e, (uint64_t)(10 + i) * 64, 64);
    }
    tq__extent_unref(e);
    cr_assert(eq(u32, e->refs, 20));
    uint64_t used = tq_pool_used(pool);
    cr_assert(eq(u64, used, 20 * 64));

    for (int i = 0; i < 9; i++) {
        cr_assert(eq(u32, tq__partition_clear_rows(p, 1, &rows[i]), 1));
        cr_assert(eq(u32, e->refs, (uint32_t)(18 - 2 * i)));
        cr_assert(eq(u64, tq_pool_used(pool), used), "after clearing row %d", i);
    }
    /* Overwrite one field of the last row: one reference left. */
    put_cell(p, f, 9, NULL, 0, 0);
    cr_assert(eq(u32, e->refs, 1));
    cr_assert(eq(u64, tq_pool_used(pool), used));
    cr_assert(eq(u32, tq__partition_clear_rows(p, 1, &rows[9]), 1));
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    cr_assert(eq(u64, p->live_rows, 0));
    tq__partition_destroy(p);
    cr_assert(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* ---- clear_rows ----------------------------------------------------------------------------- */

Test(partition, clear_rows_counts_and_ignores)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = make_partition("p");
    tq_field_t *f = add_tensor(p, "x");
    tq_task_t *t = tq__partition_task(p, "t", true);
    tq_task_t *u = tq__partition_task(p, "u", true);
    cr_assert(ne(ptr, t, NULL));
    cr_assert(ne(ptr, u, NULL));

    int64_t rows[8];
    reserve_new_ok(p, 8, rows);
    tq_extent *e = ext_new(pool, 6 * 64);
    for (int i = 0; i < 6; i++)
        put_cell(p, f, i, e, (uint64_t)i * 64, 64);
    tq__extent_unref(e);
    const int64_t seven[] = {7};
    tq__partition_unreserve(p, 1, seven); /* 6 reserved, 7 free */
    for (int i = 0; i < 8; i++)
        t->consumed[i] = 1;
    u->consumed[0] = u->consumed[1] = 1;

    cr_assert(eq(u32, tq__partition_clear_rows(p, 0, rows), 0));

    const int64_t del[] = {-1, 100, 8, INT64_MIN, INT64_MAX, 6, 7, 0, 0, 2};
    cr_assert(eq(u32, tq__partition_clear_rows(p, ARRAY_LEN(del), del), 2));
    cr_assert(eq(u64, p->live_rows, 4));
    cr_assert(eq(u32, e->refs, 4));
    cr_assert(eq(u64, tq_pool_used(pool), 6 * 64));
    expect_state(p, 0, TQ_ROW_FREE);
    expect_state(p, 1, TQ_ROW_LIVE);
    expect_state(p, 2, TQ_ROW_FREE);
    expect_state(p, 6, TQ_ROW_RESERVED);
    expect_state(p, 7, TQ_ROW_FREE);
    cr_assert(eq(u64, p->num_slots, 8));
    cr_assert(eq(u64, p->free_hint, 0));
    cr_assert(cell_is_zero(&f->cells[0]));
    cr_assert(cell_is_zero(&f->cells[2]));
    cr_assert(f->cells[1].produced);
    /* consumption of the removed rows is forgotten, for every task */
    cr_assert(eq(u8, t->consumed[0], 0));
    cr_assert(eq(u8, t->consumed[2], 0));
    cr_assert(eq(u8, u->consumed[0], 0));
    cr_assert(eq(u8, t->consumed[1], 1));
    cr_assert(eq(u8, u->consumed[1], 1));
    cr_assert(eq(u8, t->consumed[3], 1));

    /* Clearing them again removes nothing. */
    cr_assert(eq(u32, tq__partition_clear_rows(p, ARRAY_LEN(del), del), 0));
    cr_assert(eq(u64, p->live_rows, 4));

    /* The freed rows are reused lowest first. */
    int64_t out[3];
    reserve_new_ok(p, 3, out);
    cr_assert(eq(i64, out[0], 0));
    cr_assert(eq(i64, out[1], 2));
    cr_assert(eq(i64, out[2], 7));

    /* Everything live. */
    const int64_t all[] = {0, 1, 2, 3, 4, 5, 6, 7};
    cr_assert(eq(u32, tq__partition_clear_rows(p, 8, all), 4));
    cr_assert(eq(u64, p->live_rows, 0));
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    tq__partition_destroy(p);
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* ---- tasks and consumption -------------------------------------------------------------- */

Test(partition, tasks_create_find_and_reset)
{
    tq_partition_t *p = make_partition("p");
    cr_assert(eq(ptr, tq__partition_task(p, "t", false), NULL));
    cr_assert(eq(int, tq__partition_reset(p, NULL), TQ_OK)); /* no task at all */
    cr_assert(eq(int, tq__partition_reset(p, "t"), TQ_ERR_NOT_FOUND));

    /* A task made before any row exists grows with the partition. */
    tq_task_t *t = tq__partition_task(p, "t", true);
    cr_assert(ne(ptr, t, NULL));
    cr_assert(eq(str, t->name, "t"));
    cr_assert(eq(ptr, tq__partition_task(p, "t", false), t));
    cr_assert(eq(ptr, tq__partition_task(p, "t", true), t));

    int64_t rows[100];
    reserve_new_ok(p, 100, rows);
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(eq(u8, t->consumed[r], 0), "row %llu", (unsigned long long)r);
    t->consumed[5] = 1;
    t->consumed[99] = 1;

    /* A task made after growth has every slot, unconsumed. */
    tq_task_t *u = tq__partition_task(p, "u", true);
    cr_assert(ne(ptr, u, NULL));
    cr_assert(ne(ptr, u, t));
    cr_assert(eq(ptr, tq__partition_task(p, "t", false), t));
    cr_assert(eq(ptr, tq__partition_task(p, "u", false), u));
    cr_assert(eq(ptr, tq__partition_task(p, "v", false), NULL));
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(eq(u8, u->consumed[r], 0), "row %llu", (unsigned long long)r);
    u->consumed[5] = 1;
    u->consumed[7] = 1;

    /* Consumption survives growth. */
    const int64_t far[] = {5000};
    cr_assert(eq(int, tq__partition_reserve(p, 1, far), TQ_OK));
    cr_assert(eq(u8, t->consumed[5], 1));
    cr_assert(eq(u8, t->consumed[99], 1));
    cr_assert(eq(u8, u->consumed[7], 1));
    for (uint64_t r = 100; r < p->cap_slots; r++) {
        cr_assert(eq(u8, t->consumed[r], 0), "row %llu", (unsigned long long)r);
        cr_assert(eq(u8, u->consumed[r], 0), "row %llu", (unsigned long long)r);
    }
    t->consumed[5000] = 1;

    /* Reset of one task. */
    cr_assert(eq(int, tq__partition_reset(p, "t"), TQ_OK));
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(eq(u8, t->consumed[r], 0), "row %llu", (unsigned long long)r);
    cr_assert(eq(u8, u->consumed[5], 1));
    cr_assert(eq(u8, u->consumed[7], 1));

    cr_assert(eq(int, tq__partition_reset(p, "nope"), TQ_ERR_NOT_FOUND));
    cr_assert(eq(u8, u->consumed[5], 1));

    /* Reset of all. */
    t->consumed[1] = 1;
    cr_assert(eq(int, tq__partition_reset(p, NULL), TQ_OK));
    for (uint64_t r = 0; r < p->cap_slots; r++) {
        cr_assert(eq(u8, t->consumed[r], 0), "row %llu", (unsigned long long)r);
        cr_assert(eq(u8, u->consumed[r], 0), "row %llu", (unsigned long long)r);
    }
    tq__partition_destroy(p);
    expect_no_leaks();
}

/* ---- claims: rows consumed and in flight until settled -------------------------------------- */

static void claim_init(tq_claim_t *cl)
{
    memset(cl, 0, sizeof(*cl));
    tq_list_init(&cl->link);
}

static void take_ok(tq_partition_t *p, tq_task_t *t, tq_claim_t *cl, const int64_t *rows,
                    uint32_t n)
{
    claim_init(cl);
    cr_assert(eq(int, tq__claim_take(p, t, cl, rows, n), TQ_OK));
    cr_assert(eq(ptr, cl->part, p));
}

Test(partition, claims_settle_and_survive_clears)
{
    tq_partition_t *p = make_partition("p");
    tq_pool *pool = make_pool(MiB);
    tq_field_t *f = add_tensor(p, "x");
    int64_t rows[8];
    reserve_new_ok(p, 8, rows);
    tq_extent *e = ext_new(pool, 8 * 16);
    for (int64_t r = 0; r < 8; r++)
        put_cell(p, f, r, e, (uint64_t)r * 16, 16);
    tq__extent_unref(e); /* the put's reference: the cells hold theirs */
    tq_task_t *t = tq__partition_task(p, "t", true);
    tq_field_t *fs[1] = {f};

    tq_claim_t a, b, c, d;
    const int64_t ra[] = {0, 1, 2}, rb[] = {3, 4, 4}, rc[] = {5, 6, 7};
    take_ok(p, t, &a, ra, 3);
    take_ok(p, t, &b, rb, 3); /* a row named twice is claimed once */
    take_ok(p, t, &c, rc, 3);
    cr_assert(eq(u64, tq__task_in_flight(t), 8));
    for (uint64_t r = 0; r < 8; r++) {
        cr_assert(eq(u8, t->consumed[r], 1), "row %llu", (unsigned long long)r);
        cr_assert(not(tq__partition_row_ready(p, fs, 1, t, r)), "row %llu", (unsigned long long)r);
    }
    /* delivered: they stay consumed; a second settle changes nothing */
    cr_assert(eq(u32, tq__claim_settle(&a, true), 0));
    cr_assert(eq(ptr, a.part, NULL));
    cr_assert(eq(u32, tq__claim_settle(&a, false), 0));
    cr_assert(eq(u64, tq__task_in_flight(t), 5));
    cr_assert(eq(u8, t->consumed[0], 1));
    /* not delivered: back to the task, once */
    cr_assert(eq(u32, tq__claim_settle(&b, false), 2));
    cr_assert(tq__partition_row_ready(p, fs, 1, t, 3));
    cr_assert(tq__partition_row_ready(p, fs, 1, t, 4));
    /* row 5 cleared and put again is a new row, claimed by another: c's settle leaves it */
    const int64_t five[] = {5};
    cr_assert(eq(u32, tq__partition_clear_rows(p, 1, five), 1));
    cr_assert(eq(u64, tq__task_in_flight(t), 2));
    cr_assert(eq(int, tq__partition_reserve(p, 1, five), TQ_OK));
    tq_extent *e2 = ext_new(pool, 16);
    put_cell(p, f, 5, e2, 0, 16);
    tq__extent_unref(e2);
    cr_assert(tq__partition_row_ready(p, fs, 1, t, 5));
    take_ok(p, t, &d, five, 1);
    cr_assert(eq(u32, tq__claim_settle(&c, false), 2), "rows 6 and 7 only");
    cr_assert(eq(u8, t->consumed[5], 1), "row 5 is d's");
    cr_assert(eq(u64, tq__task_in_flight(t), 1));
    /* a reset forgets every claim: settling one afterwards changes nothing */
    cr_assert(eq(int, tq__partition_reset(p, "t"), TQ_OK));
    cr_assert(eq(u64, tq__task_in_flight(t), 0));
    take_ok(p, t, &a, five, 1); /* row 5 again, by a */
    cr_assert(eq(u32, tq__claim_settle(&d, false), 0));
    cr_assert(eq(u8, t->consumed[5], 1), "row 5 is a's now");
    /* the partition goes with claims still taken: they hold nothing after */
    take_ok(p, t, &b, rb, 2);
    tq__partition_destroy(p);
    cr_assert(eq(ptr, a.part, NULL));
    cr_assert(eq(ptr, b.part, NULL));
    cr_assert(eq(u32, tq__claim_settle(&a, false), 0));
    cr_assert(eq(u32, tq__claim_settle(&b, false), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* Cells of a unit that died: never ready, counted apart, gone with a rewrite or a clear. */
Test(partition, lost_cells_are_never_ready)
{
    static char unit_a, unit_b; /* two units, known only by address here */
    struct tq_unit *ua = (struct tq_unit *)(void *)&unit_a;
    struct tq_unit *ub = (struct tq_unit *)(void *)&unit_b;
    tq_partition_t *p = make_partition("p");
    tq_pool *pool = make_pool(MiB);
    tq_field_t *f = add_tensor(p, "x");
    tq_field_t *fs[1] = {f};
    int64_t rows[8];
    reserve_new_ok(p, 8, rows);
    tq_extent *ea = ext_new(pool, 64), *eb = ext_new(pool, 64);
    ea->unit = ua;
    eb->unit = ub;
    for (int64_t r = 0; r < 8; r++)
        put_cell(p, f, r, r < 4 ? ea : eb, (uint64_t)(r % 4) * 16, 16);
    tq__extent_unref(ea);
    tq__extent_unref(eb);
    tq_task_t *t = tq__partition_task(p, "t", true);
    cr_assert(eq(u64, tq__partition_mark_lost(p, ua), 4));
    cr_assert(eq(u64, tq__partition_mark_lost(p, ua), 0), "marked twice");
    for (uint64_t r = 0; r < 8; r++) {
        cr_assert(eq(int, tq__partition_row_ready(p, fs, 1, t, r), r >= 4), "row %llu",
                  (unsigned long long)r);
        cr_assert(eq(int, tq__partition_row_lost(p, fs, 1, r), r < 4), "row %llu",
                  (unsigned long long)r);
    }
    cr_assert(eq(u64, tq__field_produced(p, f), 4));
    cr_assert(eq(u64, tq__field_lost(p, f), 4));
    cr_assert(eq(u64, tq__partition_lost_rows(p), 4));
    uint64_t consumed, ready;
    tq__task_counts(p, t, &consumed, &ready);
    cr_assert(eq(u64, ready, 4));
    int64_t got[8];
    cr_assert(eq(u32, tq__partition_sample_sequential(p, fs, 1, t, 8, got), 4));
    cr_assert(eq(i64, got[0], 4), "the sampler offered a lost row");
    /* row 0 rewritten on the live unit is ready again; row 1 cleared is simply gone */
    tq_extent *e0 = ext_new(pool, 16);
    e0->unit = ub;
    put_cell(p, f, 0, e0, 0, 16);
    tq__extent_unref(e0);
    const int64_t one[] = {1};
    cr_assert(eq(u32, tq__partition_clear_rows(p, 1, one), 1));
    cr_assert(tq__partition_row_ready(p, fs, 1, t, 0));
    cr_assert(eq(u64, tq__partition_lost_rows(p), 2));
    cr_assert(eq(u64, tq__field_lost(p, f), 2));
    tq__partition_destroy(p);
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* ---- readiness and the sequential sampler --------------------------------------------------- */

static void expect_sample(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                          const tq_task_t *task, uint32_t want, const int64_t *expect,
                          uint32_t n_expect)
{
    int64_t out[64];
    cr_assert(le(u32, want, ARRAY_LEN(out)));
    for (size_t i = 0; i < ARRAY_LEN(out); i++)
        out[i] = -7;
    uint32_t got = tq__partition_sample_sequential(p, fields, nf, task, want, out);
    uint32_t n = n_expect < want ? n_expect : want;
    cr_assert(eq(u32, got, n), "want %u", want);
    for (uint32_t i = 0; i < n; i++)
        cr_assert(eq(i64, out[i], expect[i]), "want %u: out[%u]", want, i);
    for (uint32_t i = n; i < ARRAY_LEN(out); i++)
        cr_assert(eq(i64, out[i], -7), "want %u: out[%u] written", want, i);
}

/* The readiness of every row against what the caller computes, and the sampler for several wants. */
static void expect_ready(const tq_partition_t *p, tq_field_t *const *fields, uint32_t nf,
                         const tq_task_t *task, const int64_t *expect, uint32_t n_expect)
{
    uint32_t k = 0;
    for (uint64_t r = 0; r < p->num_slots + 3; r++) {
        bool want = k < n_expect && (uint64_t)expect[k] == r;
        if (want)
            k++;
        cr_assert(eq(int, tq__partition_row_ready(p, fields, nf, task, r), want), "row %llu",
                  (unsigned long long)r);
    }
    cr_assert(eq(u32, k, n_expect));
    cr_assert(not(tq__partition_row_ready(p, fields, nf, task, UINT64_MAX)));
    cr_assert(not(tq__partition_row_ready(p, fields, nf, task, (uint64_t)1 << 40)));
    const uint32_t wants[] = {0, 1, 2, 3, n_expect, n_expect + 1, 64};
    for (size_t i = 0; i < ARRAY_LEN(wants); i++)
        expect_sample(p, fields, nf, task, wants[i], expect, n_expect);
}

Test(partition, row_ready_and_sample_sequential)
{
    tq_partition_t *p = make_partition("p");
    tq_field_t *a = add_tensor(p, "a");
    tq_field_t *b = add_tensor(p, "b");
    tq_task_t *t = tq__partition_task(p, "t", true);
    tq_task_t *u = tq__partition_task(p, "u", true);

    /* An empty partition has nothing ready. */
    tq_field_t *ab[] = {a, b}, *only_a[] = {a}, *only_b[] = {b};
    expect_ready(p, ab, 2, t, NULL, 0);
    expect_ready(p, NULL, 0, NULL, NULL, 0);

    int64_t rows[12];
    reserve_new_ok(p, 12, rows);
    for (int r = 0; r < 8; r++)
        put_cell(p, a, r, NULL, 0, 4); /* 0..7 have a */
    for (int r = 0; r < 6; r++)
        put_cell(p, b, r, NULL, 0, 4); /* 0..5 have b; 6, 7 only a */
    /* 8 stays reserved, 9 is given back, 10 and 11 complete then 11 cleared */
    const int64_t nine[] = {9};
    tq__partition_unreserve(p, 1, nine);
    for (int r = 10; r < 12; r++) {
        put_cell(p, a, r, NULL, 0, 4);
        put_cell(p, b, r, NULL, 0, 4);
    }
    cr_assert(eq(u32, tq__partition_clear_rows(p, 1, &rows[11]), 1));
    t->consumed[1] = t->consumed[4] = 1;
    u->consumed[0] = 1;

    {
        const int64_t e[] = {0, 2, 3, 5, 10};
        expect_ready(p, ab, 2, t, e, ARRAY_LEN(e));
        expect_ready(p, only_b, 1, t, e, ARRAY_LEN(e));
    }
    {
        const int64_t e[] = {0, 2, 3, 5, 6, 7, 10};
        expect_ready(p, only_a, 1, t, e, ARRAY_LEN(e));
        expect_ready(p, NULL, 0, t, e, ARRAY_LEN(e)); /* no field: every live unconsumed row */
    }
    {
        const int64_t e[] = {0, 1, 2, 3, 4, 5, 10};
        expect_ready(p, ab, 2, NULL, e, ARRAY_LEN(e)); /* no task: consumption ignored */
    }
    {
        const int64_t e[] = {1, 2, 3, 4, 5, 10};
        expect_ready(p, ab, 2, u, e, ARRAY_LEN(e));
    }

    /* Consuming what the sampler returned moves it on; the sampler itself consumes nothing. */
    int64_t out[3];
    cr_assert(eq(u32, tq__partition_sample_sequential(p, ab, 2, t, 3, out), 3));
    cr_assert(eq(u32, tq__partition_sample_sequential(p, ab, 2, t, 3, out), 3));
    cr_assert(eq(i64, out[0], 0));
    for (int i = 0; i < 3; i++)
        t->consumed[out[i]] = 1;
    {
        const int64_t e[] = {5, 10};
        expect_ready(p, ab, 2, t, e, ARRAY_LEN(e));
    }

    /* A pending overwrite (reserve of a live row) leaves the row live and ready. */
    const int64_t ten[] = {10};
    cr_assert(eq(int, tq__partition_reserve(p, 1, ten), TQ_OK));
    cr_assert(tq__partition_row_ready(p, ab, 2, t, 10));

    /* A cleared row is no longer ready; re-put, it is ready again and unconsumed. */
    const int64_t zero[] = {0};
    cr_assert(eq(u32, tq__partition_clear_rows(p, 1, zero), 1));
    cr_assert(not(tq__partition_row_ready(p, ab, 2, NULL, 0)));
    int64_t r0;
    reserve_new_ok(p, 1, &r0);
    cr_assert(eq(i64, r0, 0));
    put_cell(p, a, 0, NULL, 0, 4);
    cr_assert(not(tq__partition_row_ready(p, ab, 2, t, 0))); /* b not produced yet */
    cr_assert(tq__partition_row_ready(p, only_a, 1, t, 0));
    put_cell(p, b, 0, NULL, 0, 4);
    {
        const int64_t e[] = {0, 5, 10};
        expect_ready(p, ab, 2, t, e, ARRAY_LEN(e));
    }
    {
        const int64_t e[] = {0, 1, 2, 3, 4, 5, 10};
        expect_ready(p, ab, 2, u, e, ARRAY_LEN(e)); /* u's consumption of 0 went with the clear */
    }

    cr_assert(eq(int, tq__partition_reset(p, "t"), TQ_OK));
    {
        const int64_t e[] = {0, 1, 2, 3, 4, 5, 10};
        expect_ready(p, ab, 2, t, e, ARRAY_LEN(e));
    }
    tq__partition_destroy(p);
    expect_no_leaks();
}

/* ---- fields across growth ------------------------------------------------------------------- */

Test(partition, add_field_and_growth)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = make_partition("p");
    cr_assert(eq(ptr, tq__partition_field(p, "a"), NULL));

    /* a: added before any row. */
    const int64_t shape_a[2] = {2, 3};
    tq_field_t *a = tq__partition_add_field(p, "a", TQ_FIELD_TENSOR, TQ_DTYPE_I64, 2, shape_a);
    cr_assert(ne(ptr, a, NULL));
    cr_assert(eq(str, a->name, "a"));
    cr_assert(eq(int, a->kind, TQ_FIELD_TENSOR));
    cr_assert(eq(int, a->dtype, TQ_DTYPE_I64));
    cr_assert(eq(u32, a->ndim, 2));
    cr_assert(eq(i64, a->row_shape[0], 2));
    cr_assert(eq(i64, a->row_shape[1], 3));
    cr_assert(eq(ptr, tq__partition_field(p, "a"), a));

    /* A real extent on row 0 before growth must survive the moves of the cell arrays. */
    int64_t first;
    reserve_new_ok(p, 1, &first);
    tq_extent *e = ext_new(pool, 128);
    put_cell(p, a, 0, e, 0, 128);
    tq__extent_unref(e);

    /* Grow to 10,000 rows in steps, through many reallocations. */
    int64_t *rows = calloc(10000, sizeof(*rows));
    cr_assert(ne(ptr, rows, NULL));
    rows[0] = first;
    for (uint32_t got = 1; got < 10000;) {
        uint32_t step = got < 200 ? 1 : 977;
        if (step > 10000 - got)
            step = 10000 - got;
        reserve_new_ok(p, step, &rows[got]);
        for (uint32_t i = 0; i < step; i++)
            cr_assert(eq(i64, rows[got + i], got + i));
        got += step;
    }
    cr_assert(eq(u64, p->num_slots, 10000));
    cr_assert(ge(u64, p->cap_slots, 10000));

    /* b: added after growth, every slot zero. */
    tq_field_t *b = tq__partition_add_field(p, "b", TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, NULL);
    cr_assert(ne(ptr, b, NULL));
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(cell_is_zero(&b->cells[r]), "b row %llu", (unsigned long long)r);
    /* enough more fields to move the field array itself: look them up again after */
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        cr_assert(ne(ptr, tq__partition_add_field(p, name, TQ_FIELD_NESTED, TQ_DTYPE_F32, 3, NULL),
                     NULL));
    }
    cr_assert(eq(u32, p->num_fields, 12));
    a = tq__partition_field(p, "a");
    b = tq__partition_field(p, "b");
    cr_assert(ne(ptr, a, NULL));
    cr_assert(ne(ptr, b, NULL));
    cr_assert(eq(str, b->name, "b"));
    cr_assert(eq(int, b->kind, TQ_FIELD_BYTES));
    cr_assert(eq(i64, a->row_shape[1], 3));
    cr_assert(eq(ptr, a->cells[0].ext, e));
    cr_assert(eq(u32, e->refs, 1));
    for (uint64_t r = 1; r < p->cap_slots; r++)
        cr_assert(cell_is_zero(&a->cells[r]), "a row %llu", (unsigned long long)r);

    for (int64_t r = 0; r < 10000; r++) {
        if (r % 3 == 0 && r != 0)
            put_cell(p, a, r, NULL, 0, (uint64_t)r);
        if (r % 5 == 0)
            put_cell(p, b, r, NULL, 0, (uint64_t)r + 1);
    }
    tq_field_t *n9 = tq__partition_field(p, "n9");
    cr_assert(ne(ptr, n9, NULL));
    put_cell(p, n9, 9999, NULL, 0, 4);

    /* Grow again with a sparse reserve: new slots of every field are zero, old ones kept. */
    uint64_t old_cap = p->cap_slots;
    const int64_t far[] = {25000};
    cr_assert(eq(int, tq__partition_reserve(p, 1, far), TQ_OK));
    cr_assert(lt(u64, old_cap, p->cap_slots));
    for (uint32_t k = 0; k < p->num_fields; k++)
        for (uint64_t r = 10000; r < p->cap_slots; r++)
            cr_assert(cell_is_zero(&p->fields[k].cells[r]), "field %s row %llu",
                      p->fields[k].name, (unsigned long long)r);
    cr_assert(eq(ptr, a->cells[0].ext, e));
    for (int64_t r = 1; r < 10000; r++) {
        cr_assert(eq(int, a->cells[r].produced, r % 3 == 0), "a row %lld", (long long)r);
        if (r % 3 == 0)
            cr_assert(eq(u64, a->cells[r].length, (uint64_t)r));
        cr_assert(eq(int, b->cells[r].produced, r % 5 == 0), "b row %lld", (long long)r);
    }
    cr_assert(n9->cells[9999].produced);

    /* c: added after the second growth, used at the far row. */
    tq_field_t *c = tq__partition_add_field(p, "c", TQ_FIELD_TENSOR, TQ_DTYPE_U8, 0, NULL);
    cr_assert(ne(ptr, c, NULL));
    a = tq__partition_field(p, "a");
    b = tq__partition_field(p, "b");
    for (uint64_t r = 0; r < p->cap_slots; r++)
        cr_assert(cell_is_zero(&c->cells[r]), "c row %llu", (unsigned long long)r);
    put_cell(p, a, 25000, NULL, 0, 1);
    put_cell(p, b, 25000, NULL, 0, 1);
    put_cell(p, c, 25000, NULL, 0, 1);
    cr_assert(eq(u64, p->live_rows, 10000 / 3 + 1 + 10000 / 5 - (10000 / 15 + 1) + 1));

    /* Rows with both a and b: multiples of 15 below 10000 (0 included), and 25000. */
    tq_field_t *ab[] = {a, b};
    tq_task_t *t = tq__partition_task(p, "t", true);
    int64_t *out = calloc(1000, sizeof(*out));
    cr_assert(ne(ptr, out, NULL));
    uint32_t got = tq__partition_sample_sequential(p, ab, 2, t, 1000, out);
    cr_assert(eq(u32, got, 9990 / 15 + 1 + 1));
    for (uint32_t i = 0; i + 1 < got; i++)
        cr_assert(eq(i64, out[i], (int64_t)i * 15));
    cr_assert(eq(i64, out[got - 1], 25000));
    tq_field_t *abc[] = {a, b, c};
    cr_assert(eq(u32, tq__partition_sample_sequential(p, abc, 3, t, 1000, out), 1));
    cr_assert(eq(i64, out[0], 25000));

    free(out);
    free(rows);
    tq__partition_destroy(p);
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}

/* ---- destroy -------------------------------------------------------------------------------- */

static tq_partition_t *build_full(tq_pool *pool, tq_extent **pinned)
{
    tq_partition_t *p = make_partition("full");
    tq_field_t *f = add_tensor(p, "x");
    tq_field_t *g = add_tensor(p, "y");
    (void)tq__partition_add_field(p, "z", TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, NULL);
    tq_task_t *t = tq__partition_task(p, "t", true);
    cr_assert(ne(ptr, t, NULL));
    cr_assert(ne(ptr, tq__partition_task(p, "u", true), NULL));

    int64_t rows[100];
    reserve_new_ok(p, 100, rows);
    tq_extent *ex[3];
    for (int k = 0; k < 3; k++)
        ex[k] = ext_new(pool, 100 * 64);
    for (int r = 0; r < 100; r++) {
        put_cell(p, f, r, ex[r % 3], (uint64_t)r * 64, 64);
        if (r % 2 == 0)
            put_cell(p, g, r, ex[(r + 1) % 3], (uint64_t)r * 64, 64);
        t->consumed[r] = (uint8_t)(r & 1);
    }
    /* overwrite some, clear some, leave a reserved row and a sparse row */
    for (int r = 0; r < 10; r++)
        put_cell(p, f, r, ex[2], (uint64_t)r * 64, 32);
    cr_assert(eq(u32, tq__partition_clear_rows(p, 5, &rows[50]), 5));
    int64_t extra[2];
    reserve_new_ok(p, 2, extra);
    const int64_t far[] = {3000};
    cr_assert(eq(int, tq__partition_reserve(p, 1, far), TQ_OK));
    put_cell(p, g, 3000, ex[0], 0, 64);
    if (pinned != NULL) {
        tq__extent_ref(ex[1]);
        *pinned = ex[1];
    }
    for (int k = 0; k < 3; k++)
        tq__extent_unref(ex[k]); /* the puts are done */
    cr_assert(eq(u64, tq_pool_used(pool), 3 * 100 * 64));
    return p;
}

Test(partition, destroy_frees_everything)
{
    tq_pool *pool = make_pool(MiB);
    tq_partition_t *p = build_full(pool, NULL);
    cr_assert(eq(u64, p->live_rows, 96));
    tq__partition_destroy(p);
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    cr_assert(eq(int, tq_pool_check(pool), 0));
    tq__partition_destroy(NULL);

    /* An empty partition, and one with fields and tasks but no row. */
    tq__partition_destroy(make_partition("empty"));
    p = make_partition("bare");
    add_tensor(p, "x");
    cr_assert(ne(ptr, tq__partition_task(p, "t", true), NULL));
    tq__partition_destroy(p);
    tq_pool_destroy(pool);
    expect_no_leaks();
}

Test(partition, destroy_leaves_pinned_extent)
{
    tq_pool *pool = make_pool(MiB);
    tq_extent *pin = NULL;
    tq_partition_t *p = build_full(pool, &pin);
    cr_assert(ne(ptr, pin, NULL));
    tq__partition_destroy(p);
    cr_assert(eq(u32, pin->refs, 1));
    cr_assert(eq(u64, tq_pool_used(pool), 100 * 64));
    tq__extent_unref(pin);
    cr_assert(eq(u64, tq_pool_used(pool), 0));
    cr_assert(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
    expect_no_leaks();
}
