/* test_e2e.c: the low-level interface end to end (SCENARIOS.md 10-14), each scenario
 * run against a real cluster (tq-controller + 2 tq-storage) and the embedded default. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"
#include "wire.h"

/* Each scenario runs on a real cluster and on the embedded default. */
#define E2E_TEST(name) TQ_TEST_BOTH(e2e, name, 60)

/* ---- helpers ---- */

static tq_meta *const META_SENTINEL = (tq_meta *)(uintptr_t)0x5e5e;

static tq_batch *batch_new(uint32_t rows)
{
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    return b;
}

static void put_ok(tq_client *c, const char *part, const tq_batch *b, const int64_t *indexes,
                   int64_t *indexes_out)
{
    int rc = tq_put(c, part, b, indexes, indexes_out);
    cr_assert(eq(int, rc, TQ_OK), "tq_put(%s): %s (%s)", part, tq_status_string(rc),
              tq_last_error(c));
}

/* Put an I64 scalar field `field` of n rows with the given values. */
static void put_i64(tq_client *c, const char *part, const char *field, uint32_t n,
                    const int64_t *indexes, const int64_t *values, int64_t *indexes_out)
{
    tq_batch *b = batch_new(n);
    cr_assert(eq(int, tq_batch_add_tensor(b, field, TQ_DTYPE_I64, 0, NULL, values), TQ_OK));
    put_ok(c, part, b, indexes, indexes_out);
    tq_batch_destroy(b);
}

/* Put rows [first, first + n) at those indexes, value tq_test_row_value(index). */
static void put_range(tq_client *c, const char *part, const char *field, int64_t first, uint32_t n)
{
    int64_t *idx = calloc(n, sizeof(int64_t)), *val = calloc(n, sizeof(int64_t));
    cr_assert(idx != NULL && val != NULL);
    for (uint32_t i = 0; i < n; i++) {
        idx[i] = first + i;
        val[i] = tq_test_row_value(first + i);
    }
    put_i64(c, part, field, n, idx, val, NULL);
    free(idx);
    free(val);
}

static int fetch(tq_client *c, const char *part, const char *task, const char *const *fields,
                 size_t nf, uint32_t n, int timeout_ms, tq_meta **meta_p)
{
    tq_fetch_args_t a = {.partition = part, .task = task, .fields = fields, .num_fields = nf,
                         .batch_size = n, .timeout_ms = timeout_ms};
    return tq_get_meta(c, &a, meta_p);
}

static tq_meta *fetch_ok(tq_client *c, const char *part, const char *task,
                         const char *const *fields, size_t nf, uint32_t n, int timeout_ms)
{
    tq_meta *m = NULL;
    int rc = fetch(c, part, task, fields, nf, n, timeout_ms, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta(%s, task %s, %u rows): %s (%s)", part, task, n,
              tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, m, NULL));
    cr_assert(eq(u32, tq_meta_rows(m), n), "get_meta(%s, task %s)", part, task);
    cr_assert(ne(ptr, (void *)tq_meta_indexes(m), NULL));
    return m;
}

/* A get that must find too few rows: TQ_ERR_TIMEOUT, output untouched. */
static void fetch_timeout(tq_client *c, const char *part, const char *task,
                          const char *const *fields, size_t nf, uint32_t n)
{
    tq_meta *m = META_SENTINEL;
    int rc = fetch(c, part, task, fields, nf, n, 0, &m);
    cr_assert(eq(int, rc, TQ_ERR_TIMEOUT), "get_meta(%s, task %s, %u rows, timeout 0)", part, task,
              n);
    cr_assert(eq(ptr, m, META_SENTINEL), "a failed get_meta wrote meta_p");
    cr_assert(eq(int, tq_last_error(c)[0] != '\0', 1), "no tq_last_error after a failure");
}

static tq_batch *data_ok(tq_client *c, const tq_meta *m)
{
    tq_batch *b = NULL;
    int rc = tq_get_data(c, m, &b);
    cr_assert(eq(int, rc, TQ_OK), "get_data: %s (%s)", tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, b, NULL));
    cr_assert(eq(u32, tq_batch_rows(b), tq_meta_rows(m)));
    return b;
}

static int64_t row_i64(const tq_batch *b, const char *field, uint32_t row)
{
    size_t bytes = 0;
    const void *p = tq_batch_row(b, field, row, &bytes, NULL);
    cr_assert(ne(ptr, (void *)p, NULL), "field %s row %u absent", field, row);
    cr_assert(eq(sz, bytes, sizeof(int64_t)), "field %s row %u", field, row);
    int64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* The meta's indexes are exactly [lo, hi), each once, in any order. */
static void assert_index_set(const tq_meta *m, int64_t lo, int64_t hi)
{
    cr_assert(eq(i64, (int64_t)tq_meta_rows(m), hi - lo));
    uint8_t *seen = calloc((size_t)(hi - lo) + 1, 1);
    const int64_t *idx = tq_meta_indexes(m);
    for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
        cr_assert(idx[i] >= lo && idx[i] < hi, "index %lld outside [%lld, %lld)",
                  (long long)idx[i], (long long)lo, (long long)hi);
        cr_assert(eq(u8, seen[idx[i] - lo], 0), "index %lld twice", (long long)idx[i]);
        seen[idx[i] - lo] = 1;
    }
    free(seen);
}

/* Read `field` of every row of m: value must be tq_test_row_value(index). */
static void assert_row_values(tq_client *c, const tq_meta *m, const char *field)
{
    tq_batch *b = data_ok(c, m);
    const int64_t *idx = tq_meta_indexes(m);
    for (uint32_t i = 0; i < tq_meta_rows(m); i++)
        cr_assert(eq(i64, row_i64(b, field, i), tq_test_row_value(idx[i])), "row %lld",
                  (long long)idx[i]);
    tq_batch_destroy(b);
}

/* ---- 10: index allocation ---- */

E2E_TEST(s10_index_allocation)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s10");
    int64_t vals[64], out[64], expect[80];

    for (int i = 0; i < 32; i++)
        vals[i] = 1000 + i;
    for (int i = 0; i < 64; i++)
        out[i] = -1;
    put_i64(c, part, "x", 32, NULL, vals, out);
    for (int i = 0; i < 32; i++) {
        cr_assert(eq(i64, out[i], i), "first put, row %d", i);
        expect[i] = vals[i];
    }

    for (int i = 0; i < 16; i++)
        vals[i] = 2000 + i;
    put_i64(c, part, "x", 16, NULL, vals, out);
    for (int i = 0; i < 16; i++) {
        cr_assert(eq(i64, out[i], 32 + i), "second put, row %d", i);
        expect[32 + i] = vals[i];
    }

    int64_t clear[32];
    for (int i = 0; i < 32; i++)
        clear[i] = i;
    int removed = tq_clear(c, part, 32, clear);
    cr_assert(eq(int, removed, 32), "tq_clear: %s", tq_last_error(c));

    /* with 32..47 live and 0..31 cleared: the holes first, lowest first, then past the end */
    for (int i = 0; i < 64; i++)
        vals[i] = 3000 + i;
    put_i64(c, part, "x", 64, NULL, vals, out);
    for (int i = 0; i < 64; i++) {
        int64_t want = i < 32 ? i : 48 + (i - 32);
        cr_assert(eq(i64, out[i], want), "third put, row %d", i);
        expect[want] = vals[i];
    }

    /* all 80 rows are live with the values last written to them */
    static const char *const fields[] = {"x"};
    tq_meta *m = fetch_ok(c, part, "check", fields, 1, 80, 0);
    assert_index_set(m, 0, 80);
    tq_batch *b = data_ok(c, m);
    for (uint32_t i = 0; i < 80; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        cr_assert(eq(i64, row_i64(b, "x", i), expect[ix]), "row %lld", (long long)ix);
    }
    tq_batch_destroy(b);
    tq_meta_free(m);
    fetch_timeout(c, part, "check", fields, 1, 1);

    /* scattered holes are filled lowest first, then the end grows */
    static const int64_t holes[3] = {70, 5, 41};
    cr_assert(eq(int, tq_clear(c, part, 3, holes), 3), "%s", tq_last_error(c));
    for (int i = 0; i < 5; i++)
        vals[i] = 4000 + i;
    put_i64(c, part, "x", 5, NULL, vals, out);
    static const int64_t want[5] = {5, 41, 70, 80, 81};
    for (int i = 0; i < 5; i++)
        cr_assert(eq(i64, out[i], want[i]), "after scattered clears, row %d", i);
}

/* ---- 11: independent consumption per task ---- */

E2E_TEST(s11_tasks_consume_independently)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s11");
    static const char *const fields[] = {"v"};
    put_range(c, part, "v", 0, 16);

    tq_meta *m = fetch_ok(c, part, "task_a", fields, 1, 16, 0);
    assert_index_set(m, 0, 16);
    assert_row_values(c, m, "v");
    tq_meta_free(m);
    fetch_timeout(c, part, "task_a", fields, 1, 1);

    /* task_b sees every row although task_a consumed them all; half at a time */
    tq_meta *b1 = fetch_ok(c, part, "task_b", fields, 1, 8, 0);
    tq_meta *b2 = fetch_ok(c, part, "task_b", fields, 1, 8, 0);
    uint8_t seen[16] = {0};
    for (uint32_t i = 0; i < 8; i++) {
        seen[tq_meta_indexes(b1)[i]]++;
        seen[tq_meta_indexes(b2)[i]]++;
    }
    for (int i = 0; i < 16; i++)
        cr_assert(eq(u8, seen[i], 1), "task_b got row %d %u times", i, seen[i]);
    assert_row_values(c, b2, "v");
    tq_meta_free(b1);
    tq_meta_free(b2);
    fetch_timeout(c, part, "task_b", fields, 1, 1);

    /* resetting one task gives it everything again, and only it */
    cr_assert(eq(int, tq_reset_consumption(c, part, "task_a"), TQ_OK), "%s", tq_last_error(c));
    fetch_timeout(c, part, "task_b", fields, 1, 1);
    m = fetch_ok(c, part, "task_a", fields, 1, 16, 0);
    assert_index_set(m, 0, 16);
    assert_row_values(c, m, "v");
    tq_meta_free(m);
    fetch_timeout(c, part, "task_a", fields, 1, 1);

    /* resetting every task */
    cr_assert(eq(int, tq_reset_consumption(c, part, NULL), TQ_OK), "%s", tq_last_error(c));
    m = fetch_ok(c, part, "task_a", fields, 1, 16, 0);
    assert_index_set(m, 0, 16);
    tq_meta_free(m);
    m = fetch_ok(c, part, "task_b", fields, 1, 16, 0);
    assert_index_set(m, 0, 16);
    tq_meta_free(m);

    /* new rows are new to both tasks, and only they are */
    put_range(c, part, "v", 16, 4);
    for (int t = 0; t < 2; t++) {
        const char *task = t ? "task_b" : "task_a";
        fetch_timeout(c, part, task, fields, 1, 5);
        m = fetch_ok(c, part, task, fields, 1, 4, 0);
        assert_index_set(m, 16, 20);
        assert_row_values(c, m, "v");
        tq_meta_free(m);
        fetch_timeout(c, part, task, fields, 1, 1);
    }
}

/* ---- 12: waiting for rows ---- */

typedef struct {
    tq_client  *c;
    const char *part;
    int64_t     first;
    uint32_t    count;
    int         delay_ms;
    int         rc;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    int64_t idx[64], val[64];
    tq_batch *b = NULL;
    w->rc = w->count <= 64 ? tq_batch_create(w->count, &b) : TQ_ERR_INVALID;
    for (uint32_t i = 0; i < w->count && i < 64; i++) {
        idx[i] = w->first + i;
        val[i] = tq_test_row_value(w->first + i);
    }
    if (w->rc == TQ_OK)
        w->rc = tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, val);
    tq_test_sleep_ms(w->delay_ms);
    if (w->rc == TQ_OK)
        w->rc = tq_put(w->c, w->part, b, idx, NULL);
    tq_batch_destroy(b);
    return NULL;
}

/* Start a writer of rows [first, first + count) of part in 200 ms: another
 * process when the controller is reachable from one, else a thread. A get of
 * batch rows (all of [0, batch)) must be woken by its commit well before its
 * 5 s timeout. */
static void wait_for_writer(const tq_test_env_t *e, const char *part, int64_t first, uint32_t count,
                            uint32_t batch)
{
    static const char *const fields[] = {"v"};
    const int timeout_ms = 5000;
    pid_t child = -1;
    pthread_t thread;
    writer_t w = {e->c, part, first, count, 200, TQ_ERR_INVALID};
    if (e->address != NULL) {
        /* another process: this test binary re-executed as a fresh client */
        child = tq_test_spawn_put_range(e->address, part, "v", first, count, 200);
        cr_assert(lt(int, 0, child), "cannot spawn the writer process");
    } else {
        /* the embedded controller is reachable only from this process: a thread */
        cr_assert(eq(int, pthread_create(&thread, NULL, writer_main, &w), 0));
    }
    uint64_t t0 = tq_test_now_ms();
    tq_meta *m = NULL;
    int rc = fetch(e->c, part, "waiter", fields, 1, batch, timeout_ms, &m);
    uint64_t elapsed = tq_test_now_ms() - t0;
    if (child > 0) {
        cr_assert(eq(int, tq_test_reap(child, 10000), 0), "the writer process failed");
    } else {
        pthread_join(thread, NULL);
        cr_assert(eq(int, w.rc, TQ_OK), "the writer thread's put failed");
    }
    cr_assert(eq(int, rc, TQ_OK), "waiting get_meta: %s (%s)", tq_status_string(rc),
              tq_last_error(e->c));
    cr_assert(lt(u64, elapsed, (uint64_t)timeout_ms - 1000),
              "the commit woke the reader only after %llu ms", (unsigned long long)elapsed);
    assert_index_set(m, 0, batch);
    assert_row_values(e->c, m, "v");
    tq_meta_free(m);
}

E2E_TEST(s12_wait_for_rows)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s12");
    static const char *const fields[] = {"v"};
    put_range(c, part, "v", 0, 10);

    /* too few rows, no wait: TQ_ERR_TIMEOUT at once, nothing consumed */
    uint64_t t0 = tq_test_now_ms();
    fetch_timeout(c, part, "early", fields, 1, 16);
    cr_assert(lt(u64, tq_test_now_ms() - t0, 2000), "timeout 0 must answer at once");
    tq_meta *m = fetch_ok(c, part, "early", fields, 1, 10, 0);
    assert_index_set(m, 0, 10);
    tq_meta_free(m);

    /* a bounded wait that nobody satisfies ends near its timeout, consuming nothing */
    tq_meta *mp = META_SENTINEL;
    t0 = tq_test_now_ms();
    int rc = fetch(c, part, "bounded", fields, 1, 11, 300, &mp);
    uint64_t elapsed = tq_test_now_ms() - t0;
    cr_assert(eq(int, rc, TQ_ERR_TIMEOUT));
    cr_assert(eq(ptr, mp, META_SENTINEL));
    cr_assert(ge(u64, elapsed, 250), "a 300 ms wait returned after %llu ms",
              (unsigned long long)elapsed);
    cr_assert(lt(u64, elapsed, 3000), "a 300 ms wait returned after %llu ms",
              (unsigned long long)elapsed);
    m = fetch_ok(c, part, "bounded", fields, 1, 10, 0);
    tq_meta_free(m);

    /* a commit from another writer wakes a waiting get well before its timeout */
    wait_for_writer(e, part, 10, 6, 16);

    /* a partition that does not exist yet is waited for like an empty one */
    const char *later = tq_test_unique("s12_later");
    fetch_timeout(c, later, "waiter", fields, 1, 1);
    wait_for_writer(e, later, 0, 4, 4);
}

/* ---- 13: every kind of data round-trips bit-exact ---- */

#define S13_ROWS 5

typedef struct {
    const char *name;
    tq_dtype_t  dtype;
    size_t      size;
} dtype_case_t;

static const dtype_case_t dtype_cases[] = {
    {"t_bool", TQ_DTYPE_BOOL, 1}, {"t_u8", TQ_DTYPE_U8, 1},     {"t_i8", TQ_DTYPE_I8, 1},
    {"t_i16", TQ_DTYPE_I16, 2},   {"t_i32", TQ_DTYPE_I32, 4},   {"t_i64", TQ_DTYPE_I64, 8},
    {"t_f16", TQ_DTYPE_F16, 2},   {"t_bf16", TQ_DTYPE_BF16, 2}, {"t_f32", TQ_DTYPE_F32, 4},
    {"t_f64", TQ_DTYPE_F64, 8},   {"t_u16", TQ_DTYPE_U16, 2},   {"t_u32", TQ_DTYPE_U32, 4},
    {"t_u64", TQ_DTYPE_U64, 8},   {"t_c32", TQ_DTYPE_C32, 4},   {"t_c64", TQ_DTYPE_C64, 8},
    {"t_c128", TQ_DTYPE_C128, 16},
};
#define NUM_DTYPES (sizeof(dtype_cases) / sizeof(dtype_cases[0]))

/* Special bit patterns: NaN (quiet, signalling, negative with payload), +-Inf,
 * -0.0, the smallest subnormal, the largest finite. */
static const uint16_t f16_specials[] = {0x7e00, 0x7c01, 0xfe01, 0x7c00, 0xfc00, 0x8000, 0x0001, 0x7bff};
static const uint16_t bf16_specials[] = {0x7fc0, 0x7f81, 0xffc1, 0x7f80, 0xff80, 0x8000, 0x0001, 0x7f7f};
static const uint32_t f32_specials[] = {0x7fc00000, 0x7f800001, 0xffc12345, 0x7f800000,
                                        0xff800000, 0x80000000, 0x00000001, 0x7f7fffff};
static const uint64_t f64_specials[] = {0x7ff8000000000000, 0x7ff0000000000001,
                                        0xfff8dead0000beef, 0x7ff0000000000000,
                                        0xfff0000000000000, 0x8000000000000000,
                                        0x0000000000000001, 0x7fefffffffffffff};

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* n elements of dtype: pseudo-random bytes, specials first for floats (and
 * for the float parts of complex numbers). */
static void fill(void *data, tq_dtype_t dtype, size_t size, size_t n, uint32_t seed)
{
    uint8_t *p = data;
    for (size_t i = 0; i < n * size; i++)
        p[i] = (uint8_t)lcg(&seed);
    if (dtype == TQ_DTYPE_BOOL)
        for (size_t i = 0; i < n; i++)
            p[i] &= 1;
    const void *sp = NULL;
    size_t ns = 0, part = size; /* bytes of one float */
    switch (dtype) {
    case TQ_DTYPE_F16: sp = f16_specials, ns = sizeof(f16_specials) / 2; break;
    case TQ_DTYPE_BF16: sp = bf16_specials, ns = sizeof(bf16_specials) / 2; break;
    case TQ_DTYPE_F32: sp = f32_specials, ns = sizeof(f32_specials) / 4; break;
    case TQ_DTYPE_F64: sp = f64_specials, ns = sizeof(f64_specials) / 8; break;
    case TQ_DTYPE_C32: sp = f16_specials, ns = sizeof(f16_specials) / 2, part = 2; break;
    case TQ_DTYPE_C64: sp = f32_specials, ns = sizeof(f32_specials) / 4, part = 4; break;
    case TQ_DTYPE_C128: sp = f64_specials, ns = sizeof(f64_specials) / 8, part = 8; break;
    default: break;
    }
    size_t parts = n * (size / part);
    if (sp != NULL)
        memcpy(p, sp, (ns < parts ? ns : parts) * part);
}

E2E_TEST(s13_roundtrip_every_kind)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s13");
    tq_batch *b = batch_new(S13_ROWS);

    /* tensors of shape 2x3, every dtype */
    static const int64_t shape23[2] = {2, 3};
    uint8_t *tensor[NUM_DTYPES];
    for (size_t k = 0; k < NUM_DTYPES; k++) {
        const dtype_case_t *d = &dtype_cases[k];
        cr_assert(eq(sz, tq_dtype_size(d->dtype), d->size), "tq_dtype_size(%s)", d->name);
        tensor[k] = malloc(S13_ROWS * 6 * d->size);
        fill(tensor[k], d->dtype, d->size, S13_ROWS * 6, 17 + (uint32_t)k);
        cr_assert(eq(int, tq_batch_add_tensor(b, d->name, d->dtype, 2, shape23, tensor[k]), TQ_OK),
                  "%s", d->name);
    }
    /* a scalar per row */
    int32_t scalar[S13_ROWS] = {INT32_MIN, -1, 0, 1, INT32_MAX};
    cr_assert(eq(int, tq_batch_add_tensor(b, "scalar", TQ_DTYPE_I32, 0, NULL, scalar), TQ_OK));
    /* nested, 2 and 3 dimensions, a shape per row */
    static const int64_t n2_shapes[S13_ROWS * 2] = {1, 2, 3, 1, 2, 2, 1, 1, 4, 3};
    static const int64_t n3_shapes[S13_ROWS * 3] = {1, 2, 3, 2, 1, 1, 3, 3, 2, 1, 1, 1, 2, 2, 2};
    float *n2[S13_ROWS];
    int16_t *n3[S13_ROWS];
    size_t n2_elems[S13_ROWS], n3_elems[S13_ROWS];
    for (int i = 0; i < S13_ROWS; i++) {
        n2_elems[i] = (size_t)(n2_shapes[2 * i] * n2_shapes[2 * i + 1]);
        n3_elems[i] = (size_t)(n3_shapes[3 * i] * n3_shapes[3 * i + 1] * n3_shapes[3 * i + 2]);
        n2[i] = malloc(n2_elems[i] * sizeof(float));
        n3[i] = malloc(n3_elems[i] * sizeof(int16_t));
        fill(n2[i], TQ_DTYPE_F32, 4, n2_elems[i], 100 + (uint32_t)i);
        fill(n3[i], TQ_DTYPE_I16, 2, n3_elems[i], 200 + (uint32_t)i);
    }
    cr_assert(eq(int, tq_batch_add_nested(b, "n2", TQ_DTYPE_F32, 2, n2_shapes,
                                          (const void *const *)n2), TQ_OK));
    cr_assert(eq(int, tq_batch_add_nested(b, "n3", TQ_DTYPE_I16, 3, n3_shapes,
                                          (const void *const *)n3), TQ_OK));
    /* bytes: empty values, embedded zero bytes, a large value; and all-empty */
    static uint8_t big[3000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i % 7 == 0 ? 0 : i * 31);
    const void *bytes_v[S13_ROWS] = {"", "a\0b", "\0\0\0\0", "hello world", big};
    const size_t bytes_l[S13_ROWS] = {0, 3, 4, 11, sizeof(big)};
    cr_assert(eq(int, tq_batch_add_bytes(b, "b", bytes_v, bytes_l), TQ_OK));
    const void *empty_v[S13_ROWS] = {"", "", NULL, "", ""};
    const size_t empty_l[S13_ROWS] = {0};
    cr_assert(eq(int, tq_batch_add_bytes(b, "b_empty", empty_v, empty_l), TQ_OK));

    int64_t out[S13_ROWS];
    put_ok(c, part, b, NULL, out);
    for (int i = 0; i < S13_ROWS; i++)
        cr_assert(eq(i64, out[i], i));
    tq_batch_destroy(b);

    const char *fields[NUM_DTYPES + 5];
    size_t nf = 0;
    for (size_t k = 0; k < NUM_DTYPES; k++)
        fields[nf++] = dtype_cases[k].name;
    fields[nf++] = "scalar";
    fields[nf++] = "n2";
    fields[nf++] = "n3";
    fields[nf++] = "b";
    fields[nf++] = "b_empty";
    tq_meta *m = fetch_ok(c, part, "reader", fields, nf, S13_ROWS, 0);
    assert_index_set(m, 0, S13_ROWS);
    const int64_t *idx = tq_meta_indexes(m);
    tq_batch *got = data_ok(c, m);
    cr_assert(eq(u32, tq_batch_num_fields(got), (uint32_t)nf));

    tq_field_info_t info;
    for (size_t k = 0; k < NUM_DTYPES; k++) {
        const dtype_case_t *d = &dtype_cases[k];
        size_t row_bytes = 6 * d->size;
        cr_assert(eq(int, tq_batch_field(got, d->name, &info), TQ_OK), "%s", d->name);
        cr_assert(eq(int, info.kind, TQ_FIELD_TENSOR), "%s", d->name);
        cr_assert(eq(int, info.dtype, d->dtype), "%s", d->name);
        cr_assert(eq(u32, info.ndim, 2), "%s", d->name);
        cr_assert(eq(i64, info.row_shape[0], 2), "%s", d->name);
        cr_assert(eq(i64, info.row_shape[1], 3), "%s", d->name);
        /* the column, contiguous, in the meta's row order */
        uint8_t *want = malloc(S13_ROWS * row_bytes);
        for (int i = 0; i < S13_ROWS; i++)
            memcpy(want + i * row_bytes, tensor[k] + idx[i] * row_bytes, row_bytes);
        tq_assert_bytes_eq(info.data, info.bytes, want, S13_ROWS * row_bytes, d->name);
        free(want);
        for (uint32_t i = 0; i < S13_ROWS; i++) {
            size_t bytes = 0;
            const int64_t *shape = NULL;
            const void *p = tq_batch_row(got, d->name, i, &bytes, &shape);
            cr_assert(ne(ptr, (void *)shape, NULL));
            cr_assert(eq(i64, shape[0], 2), "%s row %u", d->name, i);
            cr_assert(eq(i64, shape[1], 3), "%s row %u", d->name, i);
            tq_assert_bytes_eq(p, bytes, tensor[k] + idx[i] * row_bytes, row_bytes, d->name);
        }
    }

    cr_assert(eq(int, tq_batch_field(got, "scalar", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_TENSOR));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_I32));
    cr_assert(eq(u32, info.ndim, 0));
    cr_assert(eq(sz, info.bytes, sizeof(scalar)));
    for (uint32_t i = 0; i < S13_ROWS; i++) {
        size_t bytes = 0;
        const void *p = tq_batch_row(got, "scalar", i, &bytes, NULL);
        tq_assert_bytes_eq(p, bytes, &scalar[idx[i]], sizeof(int32_t), "scalar");
    }

    struct {
        const char *name;
        tq_dtype_t dtype;
        uint32_t ndim;
        const int64_t *shapes;
        void *const *rows;
        const size_t *elems;
        size_t size;
    } nested[] = {{"n2", TQ_DTYPE_F32, 2, n2_shapes, (void *const *)n2, n2_elems, 4},
                  {"n3", TQ_DTYPE_I16, 3, n3_shapes, (void *const *)n3, n3_elems, 2}};
    for (size_t k = 0; k < 2; k++) {
        cr_assert(eq(int, tq_batch_field(got, nested[k].name, &info), TQ_OK));
        cr_assert(eq(int, info.kind, TQ_FIELD_NESTED), "%s", nested[k].name);
        cr_assert(eq(int, info.dtype, nested[k].dtype), "%s", nested[k].name);
        cr_assert(eq(u32, info.ndim, nested[k].ndim), "%s", nested[k].name);
        for (uint32_t i = 0; i < S13_ROWS; i++) {
            int64_t r = idx[i];
            size_t bytes = 0;
            const int64_t *shape = NULL;
            const void *p = tq_batch_row(got, nested[k].name, i, &bytes, &shape);
            cr_assert(ne(ptr, (void *)shape, NULL));
            for (uint32_t d = 0; d < nested[k].ndim; d++)
                cr_assert(eq(i64, shape[d], nested[k].shapes[r * nested[k].ndim + d]),
                          "%s row %lld dim %u", nested[k].name, (long long)r, d);
            tq_assert_bytes_eq(p, bytes, nested[k].rows[r], nested[k].elems[r] * nested[k].size,
                               nested[k].name);
        }
    }

    cr_assert(eq(int, tq_batch_field(got, "b", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_BYTES));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_BYTES));
    cr_assert(eq(int, tq_batch_field(got, "b_empty", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_BYTES));
    cr_assert(eq(sz, info.bytes, 0));
    for (uint32_t i = 0; i < S13_ROWS; i++) {
        int64_t r = idx[i];
        size_t bytes = 12345;
        const void *p = tq_batch_row(got, "b", i, &bytes, NULL);
        cr_assert(ne(ptr, (void *)p, NULL), "an empty value reads as absent");
        tq_assert_bytes_eq(p, bytes, bytes_v[r], bytes_l[r], "b");
        bytes = 12345;
        p = tq_batch_row(got, "b_empty", i, &bytes, NULL);
        cr_assert(ne(ptr, (void *)p, NULL), "an empty value reads as absent");
        cr_assert(eq(sz, bytes, 0));
    }

    /* absent fields and rows */
    size_t bytes = 777;
    cr_assert(eq(ptr, (void *)tq_batch_row(got, "nope", 0, &bytes, NULL), NULL));
    cr_assert(eq(ptr, (void *)tq_batch_row(got, "b", S13_ROWS, &bytes, NULL), NULL));
    cr_assert(eq(sz, bytes, 777), "tq_batch_row wrote bytes_p for an absent cell");
    cr_assert(eq(int, tq_batch_field(got, "nope", &info), TQ_ERR_NOT_FOUND));

    tq_batch_destroy(got);
    tq_meta_free(m);
    for (size_t k = 0; k < NUM_DTYPES; k++)
        free(tensor[k]);
    for (int i = 0; i < S13_ROWS; i++) {
        free(n2[i]);
        free(n3[i]);
    }
}

/* ---- 14: overwrite ---- */

static void old_x(int64_t i, int32_t out[2]) { out[0] = (int32_t)i, out[1] = (int32_t)-i; }
static void new_x(int64_t i, int32_t out[2]) { out[0] = (int32_t)(1000 + i), out[1] = (int32_t)(2000 + i); }

static void put_x_range(tq_client *c, const char *part, int64_t first, uint32_t n, bool fresh)
{
    static const int64_t shape2[1] = {2};
    int64_t idx[64];
    int32_t x[64][2];
    double y[64];
    char z_buf[64][16];
    const void *z[64];
    size_t zl[64];
    for (uint32_t i = 0; i < n; i++) {
        idx[i] = first + i;
        (fresh ? new_x : old_x)(idx[i], x[i]);
        y[i] = (double)idx[i] * 0.5;
        zl[i] = (size_t)snprintf(z_buf[i], sizeof(z_buf[i]), "row%lld", (long long)idx[i]);
        z[i] = z_buf[i];
    }
    tq_batch *b = batch_new(n);
    cr_assert(eq(int, tq_batch_add_tensor(b, "x", TQ_DTYPE_I32, 1, shape2, x), TQ_OK));
    if (fresh) {
        cr_assert(eq(int, tq_batch_add_tensor(b, "y", TQ_DTYPE_F64, 0, NULL, y), TQ_OK));
        cr_assert(eq(int, tq_batch_add_bytes(b, "z", z, zl), TQ_OK));
    }
    put_ok(c, part, b, idx, NULL);
    tq_batch_destroy(b);
}

static void assert_x(const tq_batch *b, uint32_t row, int64_t index, bool fresh)
{
    int32_t want[2];
    (fresh ? new_x : old_x)(index, want);
    size_t bytes = 0;
    const int64_t *shape = NULL;
    const void *p = tq_batch_row(b, "x", row, &bytes, &shape);
    cr_assert(ne(ptr, (void *)shape, NULL));
    cr_assert(eq(i64, shape[0], 2));
    char what[64];
    snprintf(what, sizeof(what), "x of row %lld (%s value)", (long long)index,
             fresh ? "new" : "old");
    tq_assert_bytes_eq(p, bytes, want, sizeof(want), what);
}

E2E_TEST(s14_overwrite)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s14");
    static const char *const fx[] = {"x"};
    static const char *const fxyz[] = {"x", "y", "z"};
    put_x_range(c, part, 0, 20, false);
    put_x_range(c, part, 20, 20, false);

    /* a reader takes rows 10-29 and holds them across the overwrite */
    tq_meta *skip = fetch_ok(c, part, "holder", fx, 1, 10, 0);
    assert_index_set(skip, 0, 10);
    tq_meta_free(skip);
    tq_meta *held = fetch_ok(c, part, "holder", fx, 1, 20, 0);
    assert_index_set(held, 10, 30);

    put_x_range(c, part, 10, 20, true);

    /* a fresh task: new values in 10-29, old ones elsewhere */
    tq_meta *m = fetch_ok(c, part, "reader", fx, 1, 40, 0);
    assert_index_set(m, 0, 40);
    tq_batch *b = data_ok(c, m);
    for (uint32_t i = 0; i < 40; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        assert_x(b, i, ix, ix >= 10 && ix < 30);
    }
    tq_batch_destroy(b);
    tq_meta_free(m);

    /* the two new fields exist for 10-29 only */
    fetch_timeout(c, part, "reader_yz", fxyz, 3, 21);
    m = fetch_ok(c, part, "reader_yz", fxyz, 3, 20, 0);
    assert_index_set(m, 10, 30);
    b = data_ok(c, m);
    tq_field_info_t info;
    cr_assert(eq(int, tq_batch_field(b, "y", &info), TQ_OK));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_F64));
    cr_assert(eq(int, tq_batch_field(b, "z", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_BYTES));
    for (uint32_t i = 0; i < 20; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        assert_x(b, i, ix, true);
        size_t bytes = 0;
        const void *p = tq_batch_row(b, "y", i, &bytes, NULL);
        double want_y = (double)ix * 0.5;
        tq_assert_bytes_eq(p, bytes, &want_y, sizeof(double), "y");
        char want_z[16];
        int zl = snprintf(want_z, sizeof(want_z), "row%lld", (long long)ix);
        p = tq_batch_row(b, "z", i, &bytes, NULL);
        tq_assert_bytes_eq(p, bytes, want_z, (size_t)zl, "z");
    }
    tq_batch_destroy(b);
    tq_meta_free(m);

    /* other puts of the same sizes, to land on any space the overwrite freed too early */
    const char *scribble = tq_test_unique("s14_scribble");
    for (int round = 0; round < 4; round++) {
        put_x_range(c, scribble, 0, 20, true);
        put_x_range(c, scribble, 20, 20, true);
    }

    /* the meta taken before the overwrite still reads the old values */
    b = data_ok(c, held);
    for (uint32_t i = 0; i < 20; i++)
        assert_x(b, i, tq_meta_indexes(held)[i], false);
    tq_batch_destroy(b);
    tq_meta_free(held);
}

/* ---- schema changes ---- */

E2E_TEST(tensor_becomes_nested)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("nested");
    static const char *const ft[] = {"t"};
    float a[4][2], bb[2][3];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            a[i][j] = (float)(i * 10 + j);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            bb[i][j] = (float)(-100 - i * 10 - j);
    a[0][0] = -0.0f;
    a[1][1] = NAN;
    bb[0][2] = -INFINITY;
    static const int64_t s2[1] = {2}, s3[1] = {3};
    static const int64_t idx_a[4] = {0, 1, 2, 3}, idx_b[2] = {4, 5};

    tq_batch *b = batch_new(4);
    cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_F32, 1, s2, a), TQ_OK));
    put_ok(c, part, b, idx_a, NULL);
    tq_batch_destroy(b);
    b = batch_new(2);
    cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_F32, 1, s3, bb), TQ_OK));
    put_ok(c, part, b, idx_b, NULL);
    tq_batch_destroy(b);

    tq_meta *m = fetch_ok(c, part, "reader", ft, 1, 6, 0);
    assert_index_set(m, 0, 6);
    b = data_ok(c, m);
    tq_field_info_t info;
    cr_assert(eq(int, tq_batch_field(b, "t", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_NESTED), "rows of two shapes must make the field nested");
    cr_assert(eq(int, info.dtype, TQ_DTYPE_F32));
    cr_assert(eq(u32, info.ndim, 1));
    for (uint32_t i = 0; i < 6; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        size_t bytes = 0;
        const int64_t *shape = NULL;
        const void *p = tq_batch_row(b, "t", i, &bytes, &shape);
        cr_assert(ne(ptr, (void *)shape, NULL));
        cr_assert(eq(i64, shape[0], ix < 4 ? 2 : 3), "row %lld", (long long)ix);
        if (ix < 4)
            tq_assert_bytes_eq(p, bytes, a[ix], sizeof(a[0]), "old-shape row");
        else
            tq_assert_bytes_eq(p, bytes, bb[ix - 4], sizeof(bb[0]), "new-shape row");
    }
    tq_batch_destroy(b);
    tq_meta_free(m);
}

E2E_TEST(dtype_conflict_changes_nothing)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("conflict");
    static const char *const ft[] = {"t"};
    static const char *const fw[] = {"w"};
    int64_t out[4];
    put_range(c, part, "t", 0, 4); /* t is I64 */

    /* t as I32, with a new field w beside it: refused as a whole */
    int32_t t32[2] = {5, 6}, w[2] = {7, 8};
    static const int64_t idx[2] = {0, 1};
    for (int variant = 0; variant < 2; variant++) {
        tq_batch *b = batch_new(2);
        cr_assert(eq(int, tq_batch_add_tensor(b, "w", TQ_DTYPE_I32, 0, NULL, w), TQ_OK));
        cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_I32, 0, NULL, t32), TQ_OK));
        out[0] = out[1] = -7;
        int rc = tq_put(c, part, b, variant ? NULL : idx, out);
        cr_assert(eq(int, rc, TQ_ERR_INVALID), "dtype conflict (%s rows)",
                  variant ? "new" : "existing");
        cr_assert(eq(int, tq_last_error(c)[0] != '\0', 1), "no tq_last_error");
        cr_assert(eq(i64, out[0], -7), "a failed put wrote indexes_out");
        cr_assert(eq(i64, out[1], -7), "a failed put wrote indexes_out");
        tq_batch_destroy(b);
    }
    /* bytes over a tensor field is a conflict too */
    tq_batch *b = batch_new(1);
    const void *v[1] = {"zz"};
    size_t l[1] = {2};
    cr_assert(eq(int, tq_batch_add_bytes(b, "t", v, l), TQ_OK));
    cr_assert(eq(int, tq_put(c, part, b, idx, NULL), TQ_ERR_INVALID), "bytes over an I64 field");
    tq_batch_destroy(b);
    /* and so is another number of dimensions (t holds scalars) */
    int64_t vec[2] = {1, 2};
    b = batch_new(1);
    cr_assert(eq(int, tq_batch_add_tensor(b, "t", TQ_DTYPE_I64, 1, (int64_t[]){2}, vec), TQ_OK));
    cr_assert(eq(int, tq_put(c, part, b, idx, NULL), TQ_ERR_INVALID), "a vector over a scalar field");
    tq_batch_destroy(b);

    /* nothing changed: same rows, same values, no w, no row reserved */
    fetch_timeout(c, part, "reader", fw, 1, 1);
    tq_meta *m = fetch_ok(c, part, "reader", ft, 1, 4, 0);
    assert_index_set(m, 0, 4);
    assert_row_values(c, m, "t");
    tq_batch *got = data_ok(c, m);
    tq_field_info_t info;
    cr_assert(eq(int, tq_batch_field(got, "t", &info), TQ_OK));
    cr_assert(eq(int, info.dtype, TQ_DTYPE_I64));
    cr_assert(eq(int, info.kind, TQ_FIELD_TENSOR));
    tq_batch_destroy(got);
    tq_meta_free(m);
    fetch_timeout(c, part, "reader", ft, 1, 1);
    int64_t v4 = tq_test_row_value(4);
    put_i64(c, part, "t", 1, NULL, &v4, out);
    cr_assert(eq(i64, out[0], 4), "the refused put of new rows reserved indexes");
}

/* The same promise for clears: a held meta keeps reading what it was given. */
E2E_TEST(clear_while_held)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("held");
    static const char *const fx[] = {"x"};
    put_x_range(c, part, 0, 20, false);
    tq_meta *held = fetch_ok(c, part, "holder", fx, 1, 20, 0);
    assert_index_set(held, 0, 20);

    int64_t idx[10];
    for (int i = 0; i < 10; i++)
        idx[i] = i;
    cr_assert(eq(int, tq_clear(c, part, 10, idx), 10), "%s", tq_last_error(c));
    /* clearing a row twice removes nothing */
    cr_assert(eq(int, tq_clear(c, part, 10, idx), 0), "%s", tq_last_error(c));
    fetch_timeout(c, part, "reader", fx, 1, 11);
    tq_meta *m = fetch_ok(c, part, "reader", fx, 1, 10, 0);
    assert_index_set(m, 10, 20);
    tq_meta_free(m);

    cr_assert(eq(int, tq_clear_partition(c, part), TQ_OK), "%s", tq_last_error(c));
    fetch_timeout(c, part, "reader2", fx, 1, 1);
    const char *scribble = tq_test_unique("held_scribble");
    for (int round = 0; round < 4; round++)
        put_x_range(c, scribble, 0, 20, true);

    tq_batch *b = data_ok(c, held);
    for (uint32_t i = 0; i < 20; i++)
        assert_x(b, i, tq_meta_indexes(held)[i], false);
    tq_batch_destroy(b);
    tq_meta_free(held);

    /* the partition starts over from index 0 */
    int64_t v = 5, out = -1;
    put_i64(c, part, "x2", 1, NULL, &v, &out);
    cr_assert(eq(i64, out, 0));
}

/* ---- the default target ---- */

static int live_units(tq_client *c)
{
    tq_unit_info_t *units = NULL;
    int n = tq_units(c, &units);
    cr_assert(ge(int, n, 0), "tq_units: %s", tq_last_error(c));
    int alive = 0;
    for (int i = 0; i < n; i++)
        alive += units[i].alive != 0;
    free(units);
    return alive;
}

/* NULL means $TQ_CONTROLLER when set, else embedded (one unit in process). */
Test(e2e_open, null_target, .init = tq_test_env_setup_cluster, .fini = tq_test_env_teardown, .timeout = 60)
{
    cr_assert(eq(int, live_units(tq_test_env.c), 2));
    unsetenv("TQ_CONTROLLER");
    tq_client *c = NULL;
    cr_assert(eq(int, tq_open(NULL, &c), TQ_OK), "tq_open(NULL) without TQ_CONTROLLER");
    cr_assert(eq(int, live_units(c), 1), "the embedded default has one storage unit");
    tq_close(c);
    setenv("TQ_CONTROLLER", tq_test_env_cluster.address, 1);
    c = NULL;
    cr_assert(eq(int, tq_open(NULL, &c), TQ_OK), "tq_open(NULL) with TQ_CONTROLLER=%s",
              tq_test_env_cluster.address);
    cr_assert(eq(int, live_units(c), 2), "TQ_CONTROLLER names the cluster");
    /* and the two see the same data */
    const char *part = tq_test_unique("env");
    put_range(tq_test_env.c, part, "v", 0, 3);
    static const char *const fields[] = {"v"};
    tq_meta *m = fetch_ok(c, part, "t", fields, 1, 3, 0);
    assert_row_values(c, m, "v");
    tq_meta_free(m);
    tq_close(c);
    unsetenv("TQ_CONTROLLER");
    tq_test_env_finish();
}

/* ---- one client shared by threads ---- */

#define SHARE_THREADS 4
#define SHARE_ITERS   40
#define SHARE_ROWS    8

typedef struct {
    tq_client *c;
    int        id;
    int        failed_rc;   /* first failure, or 0 */
    char       what[128];
} share_arg_t;

static void *share_worker(void *arg)
{
    share_arg_t *a = arg;
    char part[32];
    snprintf(part, sizeof(part), "share-%d", a->id);
    const char *fields[] = {"v"};
    tq_fetch_args_t args = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                            .batch_size = SHARE_ROWS, .timeout_ms = 0};
    for (int it = 0; it < SHARE_ITERS && a->failed_rc == 0; it++) {
        int64_t values[SHARE_ROWS], idx[SHARE_ROWS];
        for (int i = 0; i < SHARE_ROWS; i++)
            values[i] = (int64_t)a->id << 32 | (int64_t)it << 8 | i;
        tq_batch *b = NULL, *got = NULL;
        tq_meta *m = NULL;
        int rc = tq_batch_create(SHARE_ROWS, &b);
        if (rc == TQ_OK)
            rc = tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, values);
        if (rc == TQ_OK)
            rc = tq_put(a->c, part, b, NULL, idx);
        if (rc == TQ_OK)
            rc = tq_get_meta(a->c, &args, &m);
        if (rc == TQ_OK)
            rc = tq_get_data(a->c, m, &got);
        tq_field_info_t info;
        if (rc == TQ_OK && (tq_batch_field(got, "v", &info) != TQ_OK ||
                            memcmp(info.data, values, sizeof(values)) != 0)) {
            rc = TQ_ERR_IO;
            snprintf(a->what, sizeof(a->what), "thread %d iteration %d read other bytes", a->id, it);
        }
        if (rc == TQ_OK && tq_clear(a->c, part, SHARE_ROWS, idx) != SHARE_ROWS)
            rc = TQ_ERR_IO;
        if (rc != TQ_OK && a->what[0] == '\0')
            snprintf(a->what, sizeof(a->what), "thread %d iteration %d: %s (%s)", a->id, it,
                     tq_status_string(rc), tq_last_error(a->c));
        a->failed_rc = rc;
        tq_batch_destroy(got);
        tq_meta_free(m);
        tq_batch_destroy(b);
    }
    return NULL;
}

static void *share_waiter(void *arg)
{
    share_arg_t *a = arg;
    const char *fields[] = {"v"};
    tq_fetch_args_t args = {.partition = "share-wait", .task = "t", .fields = fields,
                            .num_fields = 1, .batch_size = 1, .timeout_ms = 20000};
    tq_meta *m = NULL;
    a->failed_rc = tq_get_meta(a->c, &args, &m);
    if (a->failed_rc != TQ_OK)
        snprintf(a->what, sizeof(a->what), "waiter: %s (%s)", tq_status_string(a->failed_rc),
                 tq_last_error(a->c));
    tq_meta_free(m);
    return NULL;
}

/* Threads share one client: each one's puts and gets read back its own bytes,
 * and a get_meta blocked on one partition holds up no other thread. */
E2E_TEST(threads_share_one_client)
{
    share_arg_t args[SHARE_THREADS + 1];
    pthread_t threads[SHARE_THREADS + 1];
    memset(args, 0, sizeof(args));
    for (int i = 0; i <= SHARE_THREADS; i++) {
        args[i].c = e->c;
        args[i].id = i;
        void *(*fn)(void *) = i == SHARE_THREADS ? share_waiter : share_worker;
        cr_assert(eq(int, pthread_create(&threads[i], NULL, fn, &args[i]), 0));
    }
    for (int i = 0; i < SHARE_THREADS; i++) {
        pthread_join(threads[i], NULL);
        cr_expect(eq(int, args[i].failed_rc, 0), "%s", args[i].what);
    }
    /* the workers finished while the waiter was parked; now wake it */
    put_range(e->c, "share-wait", "v", 0, 1);
    pthread_join(threads[SHARE_THREADS], NULL);
    cr_assert(eq(int, args[SHARE_THREADS].failed_rc, 0), "%s", args[SHARE_THREADS].what);
}

/* ---- a client's pins die with it ---- */

static uint64_t pool_used(tq_client *c)
{
    tq_unit_info_t *units = NULL;
    int n = tq_units(c, &units);
    cr_assert(ge(int, n, 1), "tq_units: %s", tq_status_string(n));
    uint64_t used = 0;
    for (int i = 0; i < n; i++)
        used += units[i].used;
    free(units);
    return used;
}

/* Rows cleared while another connection holds them stay allocated until that
 * connection closes without releasing them; then every byte returns. */
Test(e2e_cluster, pins_released_when_client_disconnects, .init = tq_test_env_setup_cluster,
     .fini = tq_test_env_teardown, .timeout = 60)
{
    tq_client *c = tq_test_env.c;
    uint64_t before = pool_used(c);
    put_range(c, "pins", "v", 0, 16);

    /* a raw client: HELLO, then GET_META, then it vanishes */
    uint16_t port = (uint16_t)atoi(strrchr(tq_test_env_cluster.address, ':') + 1);
    int fd = tq_test_connect(port, 5000);
    cr_assert(ge(int, fd, 0), "cannot connect to %s", tq_test_env_cluster.address);
    size_t len;
    uint8_t *frame = tq_test_hello_frame(1, &len);
    cr_assert(eq(int, tq_test_write_all(fd, frame, len), 0));
    free(frame);
    tq_test_answer_t ans;
    cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
    cr_assert(eq(i32, ans.status, TQ_OK));
    tq_test_answer_free(&ans);
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_msg_get_meta_t m = {.partition = {"pins", 4}, .task = {"t", 1}, .num_fields = 1,
                           .fields = {{"v", 1}}, .batch_size = 16, .timeout_ms = 0};
    tq_wire_encode_get_meta(&w, &m);
    frame = tq_test_frame(TQ_MSG_GET_META, 0, 2, w.data, (uint32_t)w.len, &len);
    tq_wbuf_free(&w);
    cr_assert(eq(int, tq_test_write_all(fd, frame, len), 0));
    free(frame);
    cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
    cr_assert(eq(i32, ans.status, TQ_OK), "get_meta: %s", ans.message);
    tq_test_answer_free(&ans);

    int64_t rows[16];
    for (int i = 0; i < 16; i++)
        rows[i] = i;
    cr_assert(eq(int, tq_clear(c, "pins", 16, rows), 16));
    cr_assert(lt(u64, before, pool_used(c)), "cleared rows still pinned must stay allocated");
    close(fd);
    uint64_t deadline = tq_test_now_ms() + 5000, used;
    while ((used = pool_used(c)) != before && tq_test_now_ms() < deadline)
        tq_test_sleep_ms(10);
    cr_assert(eq(u64, used, before), "pool use must return to where it was");
    tq_test_env_finish();
}
