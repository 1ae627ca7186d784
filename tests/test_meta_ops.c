/* test_meta_ops.c: the schema and row metadata calls end to end: field format labels,
 * fetch modes (ready, force, insert), metas of given rows, per-row custom meta, and
 * key <-> index mapping; each scenario against a real cluster and the embedded default. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"
#include "wire.h"

#define META_TEST(name) TQ_TEST_BOTH(meta_ops, name, 60)

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define S(x)    ((char *)(x)) /* Criterion's str tag wants char * */

/* ---- helpers ---- */

static tq_batch *batch_new(uint32_t rows)
{
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    return b;
}

/* rows rows of an I64 scalar field whose value is base + row. The values live in
 * a static ring, valid while the batch is used. */
static tq_batch *i64_batch(const char *field, uint32_t rows, int64_t base)
{
    static int64_t ring[4][64];
    static unsigned next;
    cr_assert(lt(u32, rows, 65));
    int64_t *v = ring[next++ % 4];
    for (uint32_t i = 0; i < rows; i++)
        v[i] = base + i;
    tq_batch *b = batch_new(rows);
    cr_assert(eq(int, tq_batch_add_tensor(b, field, TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    return b;
}

/* rows rows of a bytes field "text" ("row<i>"), labelled format (NULL: none). */
static tq_batch *text_batch(uint32_t rows, const char *format)
{
    static char buf[64][16];
    static const void *values[64];
    static size_t lengths[64];
    cr_assert(lt(u32, rows, 65));
    for (uint32_t i = 0; i < rows; i++) {
        lengths[i] = (size_t)snprintf(buf[i], sizeof(buf[i]), "row%u", i);
        values[i] = buf[i];
    }
    tq_batch *b = batch_new(rows);
    cr_assert(eq(int, tq_batch_add_bytes(b, "text", values, lengths), TQ_OK));
    if (format != NULL)
        cr_assert(eq(int, tq_batch_set_format(b, "text", format), TQ_OK), "%s",
                  tq_last_error(NULL));
    return b;
}

static void put_ok(tq_client *c, const char *part, const tq_batch *b, const int64_t *indexes,
                   int64_t *out)
{
    int rc = tq_put(c, part, b, indexes, out);
    cr_assert(eq(int, rc, TQ_OK), "put(%s): %s (%s)", part, tq_status_string(rc),
              tq_last_error(c));
}

static tq_meta *get_meta_ok(tq_client *c, const char *part, const char *task, size_t nf,
                            const char *const *fields, uint32_t batch, int mode)
{
    tq_fetch_args_t a = {0};
    a.partition = part;
    a.task = task;
    a.fields = fields;
    a.num_fields = nf;
    a.batch_size = batch;
    a.mode = mode;
    tq_meta *m = NULL;
    int rc = tq_get_meta(c, &a, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta(%s, mode %d): %s (%s)", part, mode,
              tq_status_string(rc), tq_last_error(c));
    return m;
}

/* The error on c is set and names every one of the NULL-terminated strings. */
static void error_names(tq_client *c, const char *what, ...)
{
    const char *err = tq_last_error(c);
    va_list ap;
    va_start(ap, what);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *))
        cr_assert(ne(ptr, strstr(err, s), NULL), "%s: the error \"%s\" does not name %s", what,
                  err, s);
    va_end(ap);
}

static uint64_t rows_of(tq_client *c, const char *part)
{
    uint8_t *produced = NULL;
    const char *fields[] = {"text"};
    int n = tq_production_status(c, part, 1, fields, &produced);
    cr_assert(lt(int, -1, n), "production_status: %s", tq_status_string(n));
    uint64_t count = 0;
    for (int i = 0; i < n; i++)
        count += produced[i] == 1;
    free(produced);
    return count;
}

/* ---- 1. format labels ---- */

Test(meta_ops, batch_format_arguments)
{
    tq_batch *b = text_batch(2, NULL);
    cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("")), "no label: \"\"");
    cr_expect(eq(ptr, (void *)tq_batch_field_format(b, "nope"), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_field_format(NULL, "text"), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_field_format(b, NULL), NULL));

    cr_assert(eq(int, tq_batch_set_format(b, "text", "utf8"), TQ_OK));
    cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("utf8")));
    cr_assert(eq(int, tq_batch_set_format(b, "text", "a.b-c_0123456"), TQ_OK), "15 bytes");
    cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("a.b-c_0123456")));

    static const char *const bad[] = {"UTF8", "a b", "a/b", "0123456789abcdef", "\xc3\xa9"};
    for (size_t i = 0; i < N_OF(bad); i++) {
        cr_expect(eq(int, tq_batch_set_format(b, "text", bad[i]), TQ_ERR_INVALID), "%s", bad[i]);
        cr_expect(ne(ptr, strstr(tq_last_error(NULL), "text"), NULL), "%s", tq_last_error(NULL));
        cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("a.b-c_0123456")),
                  "a refused label changes nothing");
    }
    cr_expect(eq(int, tq_batch_set_format(NULL, "text", "utf8"), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_batch_set_format(b, NULL, "utf8"), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_batch_set_format(b, "nope", "utf8"), TQ_ERR_NOT_FOUND));
    cr_expect(ne(ptr, strstr(tq_last_error(NULL), "nope"), NULL));

    cr_assert(eq(int, tq_batch_set_format(b, "text", ""), TQ_OK));
    cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("")), "\"\" removes it");
    cr_assert(eq(int, tq_batch_set_format(b, "text", "utf8"), TQ_OK));
    cr_assert(eq(int, tq_batch_set_format(b, "text", NULL), TQ_OK));
    cr_expect(eq(str, S(tq_batch_field_format(b, "text")), S("")), "NULL removes it");
    tq_batch_destroy(b);
    cr_expect(eq(ptr, (void *)tq_meta_field_format(NULL, "text"), NULL));
}

/* A label travels to the schema and comes back in metas and in the batches of gets. */
META_TEST(format_round_trip)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("fmt");
    tq_batch *b = text_batch(3, "utf8");
    int64_t v[3] = {1, 2, 3};
    cr_assert(eq(int, tq_batch_add_tensor(b, "n", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    put_ok(c, part, b, NULL, NULL);
    tq_batch_destroy(b);

    const char *fields[] = {"text", "n"};
    tq_meta *m = get_meta_ok(c, part, "t", 2, fields, 3, TQ_FETCH_READY);
    cr_expect(eq(str, S(tq_meta_field_format(m, "text")), S("utf8")));
    cr_expect(eq(str, S(tq_meta_field_format(m, "n")), S("")));
    cr_expect(eq(ptr, (void *)tq_meta_field_format(m, "other"), NULL));
    cr_expect(eq(ptr, (void *)tq_meta_field_format(m, NULL), NULL));
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(str, S(tq_batch_field_format(got, "text")), S("utf8")));
    cr_expect(eq(str, S(tq_batch_field_format(got, "n")), S("")));
    size_t len = 0;
    const void *p = tq_batch_row(got, "text", 2, &len, NULL);
    cr_assert(eq(sz, len, 4));
    cr_expect(eq(int, memcmp(p, "row2", 4), 0));
    tq_batch_destroy(got);
    tq_meta_free(m);

    /* keys too: a kv get's batch carries the labels */
    const char *kpart = tq_test_unique("fmtkv");
    tq_batch *kb = text_batch(1, "pickle");
    cr_assert(eq(int, tq_kv_put(c, kpart, "k", kb, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(kb);
    const char *keys[] = {"k"};
    cr_assert(eq(int, tq_kv_batch_get(c, kpart, 1, keys, 0, NULL, &got), TQ_OK));
    cr_expect(eq(str, S(tq_batch_field_format(got, "text")), S("pickle")));
    tq_batch_destroy(got);
}

/* Another label for a labelled field is refused like a dtype conflict, and nothing is
 * written; no label keeps the field's; the first label given to an unlabelled field sticks. */
META_TEST(format_conflict)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("fmtc");
    tq_batch *b = text_batch(2, "utf8");
    put_ok(c, part, b, NULL, NULL);
    tq_batch_destroy(b);

    b = text_batch(3, "pickle");
    int64_t idx[3] = {0, 5, 6};
    for (int with_idx = 0; with_idx < 2; with_idx++) {
        int rc = tq_put(c, part, b, with_idx ? idx : NULL, NULL);
        cr_assert(eq(int, rc, TQ_ERR_INVALID), "%s", tq_status_string(rc));
        error_names(c, "format conflict", "text", "utf8", "pickle", NULL);
    }
    tq_batch_destroy(b);
    cr_expect(eq(u64, rows_of(c, part), 2), "a refused put wrote nothing");

    b = text_batch(1, NULL);
    put_ok(c, part, b, NULL, NULL); /* no label: fine, the field keeps its own */
    tq_batch_destroy(b);
    const char *fields[] = {"text"};
    tq_meta *m = get_meta_ok(c, part, "t", 1, fields, 3, TQ_FETCH_READY);
    cr_expect(eq(str, S(tq_meta_field_format(m, "text")), S("utf8")));
    tq_meta_free(m);

    /* keyed puts are held to the same schema */
    const char *kpart = tq_test_unique("fmtck");
    b = text_batch(1, NULL);
    cr_assert(eq(int, tq_kv_put(c, kpart, "a", b, NULL), TQ_OK));
    tq_batch_destroy(b);
    b = text_batch(1, "list");
    cr_assert(eq(int, tq_kv_put(c, kpart, "b", b, NULL), TQ_OK), "first label: %s",
              tq_last_error(c));
    tq_batch_destroy(b);
    b = text_batch(1, "json");
    cr_assert(eq(int, tq_kv_put(c, kpart, "a", b, "{\"x\":1}"), TQ_ERR_INVALID));
    error_names(c, "kv format conflict", "text", "list", "json", NULL);
    tq_batch_destroy(b);
    const char *keys[] = {"a", "b"};
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_kv_batch_get(c, kpart, 2, keys, 0, NULL, &got), TQ_OK));
    cr_expect(eq(str, S(tq_batch_field_format(got, "text")), S("list")));
    tq_batch_destroy(got);
    tq_kv_entries *ents = NULL;
    cr_assert(eq(int, tq_kv_list(c, kpart, &ents), TQ_OK));
    cr_assert(eq(sz, tq_kv_entries_size(ents), 2));
    cr_expect(eq(str, S(tq_kv_entries_tag(ents, 0)), S("{}")), "the refused put's tag");
    tq_kv_entries_free(ents);
}

/* ---- 2. fetch modes ---- */

static tq_fetch_args_t args_of(const char *part, const char *task, size_t nf,
                               const char *const *fields, uint32_t batch, int mode)
{
    tq_fetch_args_t a = {0};
    a.partition = part;
    a.task = task;
    a.fields = fields;
    a.num_fields = nf;
    a.batch_size = batch;
    a.mode = mode;
    return a;
}

static void expect_consumed(tq_client *c, const char *part, const char *task, const char *want)
{
    uint8_t *consumed = NULL;
    int n = tq_consumption_status(c, part, task, &consumed);
    cr_assert(lt(int, -1, n), "consumption_status: %s", tq_status_string(n));
    char got[64] = "";
    for (int i = 0; i < n && i < 63; i++)
        got[i] = consumed[i] ? '1' : '0';
    free(consumed);
    cr_expect(eq(str, got, S(want)), "task %s consumed", task);
}

/* Rows 0-4 have "a", rows 0-2 also "b"; task t has consumed rows 0 and 1 (their meta
 * still held: in flight). FORCE takes the lowest live rows whatever their state. */
META_TEST(force_fetch)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("force");
    tq_batch *a = i64_batch("a", 5, 100), *b = i64_batch("b", 3, 200);
    int64_t idx[3] = {0, 1, 2};
    put_ok(c, part, a, NULL, NULL);
    put_ok(c, part, b, idx, NULL);
    tq_batch_destroy(a);
    tq_batch_destroy(b);
    const char *fa[] = {"a"}, *fab[] = {"a", "b"};
    tq_meta *held = get_meta_ok(c, part, "t", 1, fa, 2, TQ_FETCH_READY);

    tq_meta *m = get_meta_ok(c, part, NULL, 2, fab, 10, TQ_FETCH_FORCE);
    cr_assert(eq(u32, tq_meta_rows(m), 5), "every live row, fewer than batch_size");
    for (uint32_t i = 0; i < 5; i++) {
        cr_expect(eq(i64, tq_meta_indexes(m)[i], i), "lowest first");
        cr_expect(eq(int, tq_meta_has_cell(m, "a", i), 1), "row %u has a", i);
        cr_expect(eq(int, tq_meta_has_cell(m, "b", i), i < 3), "row %u has b: %d", i, i < 3);
    }
    cr_expect(eq(int, tq_meta_has_cell(m, "c", 0), TQ_ERR_NOT_FOUND));
    cr_expect(eq(int, tq_meta_has_cell(m, "a", 5), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_meta_has_cell(NULL, "a", 0), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_meta_has_cell(m, NULL, 0), TQ_ERR_INVALID));
    tq_batch *got = (tq_batch *)(uintptr_t)0x5e5e;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_ERR_NOT_FOUND), "absent cells are not read");
    cr_expect(eq(ptr, got, (tq_batch *)(uintptr_t)0x5e5e));
    error_names(c, "absent cell", "row 3", "b", NULL);
    /* nor into the caller's memory: nothing of it is written */
    int64_t into_b[5];
    memset(into_b, 0x5a, sizeof(into_b));
    tq_batch *dst = NULL;
    cr_assert(eq(int, tq_batch_create(5, &dst), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(dst, "b", TQ_DTYPE_I64, 0, NULL, into_b), TQ_OK));
    cr_assert(eq(int, tq_get_data_into(c, m, dst), TQ_ERR_NOT_FOUND), "absent cells read into");
    error_names(c, "absent cell into", "row 3", "b", NULL);
    for (int i = 0; i < 5; i++)
        cr_expect(eq(u64, (uint64_t)into_b[i], 0x5a5a5a5a5a5a5a5aull), "row %d written", i);
    tq_batch_destroy(dst);
    tq_meta_free(m);
    expect_consumed(c, part, "t", "11000");

    /* fields every row has: readable; batch_size bounds it; consumption untouched */
    m = get_meta_ok(c, part, "t", 1, fa, 3, TQ_FETCH_FORCE);
    cr_assert(eq(u32, tq_meta_rows(m), 3));
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    for (uint32_t i = 0; i < 3; i++) {
        const int64_t *v = tq_batch_row(got, "a", i, NULL, NULL);
        cr_expect(eq(i64, *v, 100 + (int64_t)i));
    }
    tq_batch_destroy(got);
    tq_meta_free(m);
    expect_consumed(c, part, "t", "11000");
    tq_meta_free(held);

    /* READY still sees what FORCE read: nothing was consumed by it */
    m = get_meta_ok(c, part, "t", 1, fa, 3, TQ_FETCH_READY);
    cr_expect(eq(i64, tq_meta_indexes(m)[0], 2));
    tq_meta_free(m);
    expect_consumed(c, part, "t", "11111");
    uint8_t *consumed = NULL;
    cr_expect(eq(int, tq_consumption_status(c, part, "other", &consumed), 5));
    for (int i = 0; i < 5; i++)
        cr_expect(eq(u8, consumed[i], 0), "FORCE made no task consume");
    free(consumed);

    /* never waits, even asked to wait forever; an empty partition gives no rows */
    const char *epart = tq_test_unique("force_empty");
    cr_assert(eq(int, tq_partition_seal(c, epart), TQ_OK));
    tq_fetch_args_t fargs = args_of(epart, NULL, 1, fa, 4, TQ_FETCH_FORCE);
    fargs.timeout_ms = -1;
    tq_meta *em = NULL;
    int rc = tq_get_meta(c, &fargs, &em);
    cr_assert(eq(int, rc, TQ_ERR_NOT_FOUND), "no field a in an empty partition: %s",
              tq_status_string(rc));
}

META_TEST(force_fetch_refusals)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("forcebad");
    tq_batch *a = i64_batch("a", 2, 0);
    put_ok(c, part, a, NULL, NULL);
    tq_batch_destroy(a);
    const char *fa[] = {"a"}, *fz[] = {"a", "zz"};
    tq_meta *m = (tq_meta *)(uintptr_t)0x5e5e;

    tq_fetch_args_t args = args_of("nope_partition", NULL, 1, fa, 1, TQ_FETCH_FORCE);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown partition", "nope_partition", NULL);
    args = args_of(part, NULL, 2, fz, 1, TQ_FETCH_FORCE);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown field", "zz", NULL);
    args = args_of(part, NULL, 1, fa, 1, TQ_FETCH_FORCE);
    args.sampler = "sequential";
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    args.sampler = NULL;
    args.sampler_args = "{}";
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    args = args_of(part, NULL, 0, NULL, 1, TQ_FETCH_FORCE);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID), "FORCE names fields");
    args = args_of(part, "", 1, fa, 1, TQ_FETCH_FORCE);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID), "a task given is a name");
    const int bad_modes[] = {-1, 3, 1000};
    for (size_t i = 0; i < N_OF(bad_modes); i++) {
        args = args_of(part, "t", 1, fa, 1, bad_modes[i]);
        cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID), "mode %d", bad_modes[i]);
        error_names(c, "bad mode", "mode", NULL);
    }
    args = args_of(part, NULL, 1, fa, 1, TQ_FETCH_READY);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID), "READY needs a task");
    cr_expect(eq(ptr, m, (tq_meta *)(uintptr_t)0x5e5e), "refusals write no meta");

    /* streams fetch ready rows only */
    tq_stream *st = (tq_stream *)(uintptr_t)0x5e5e;
    for (int mode = TQ_FETCH_FORCE; mode <= TQ_FETCH_INSERT; mode++) {
        args = args_of(part, "t", mode == TQ_FETCH_FORCE, mode == TQ_FETCH_FORCE ? fa : NULL, 1,
                       mode);
        cr_expect(eq(int, tq_stream_open(c, &args, &st), TQ_ERR_INVALID), "stream mode %d", mode);
    }
    cr_expect(eq(ptr, st, (tq_stream *)(uintptr_t)0x5e5e));
}

/* INSERT makes new rows with nothing produced; tq_put of their indexes fills them. */
META_TEST(insert_rows)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("insert");
    tq_meta *m = get_meta_ok(c, part, NULL, 0, NULL, 4, TQ_FETCH_INSERT);
    cr_assert(eq(u32, tq_meta_rows(m), 4));
    int64_t idx[4];
    for (uint32_t i = 0; i < 4; i++) {
        idx[i] = tq_meta_indexes(m)[i];
        cr_expect(eq(i64, idx[i], i));
    }
    cr_expect(eq(ptr, (void *)tq_meta_field_format(m, "a"), NULL), "no fields");
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "nothing to read: %s", tq_last_error(c));
    cr_expect(eq(u32, tq_batch_rows(got), 4));
    cr_expect(eq(u32, tq_batch_num_fields(got), 0));
    tq_batch_destroy(got);
    tq_meta_free(m);

    /* not ready for anyone until produced, but live: FORCE sees them */
    const char *fa[] = {"a"};
    tq_fetch_args_t args = args_of(part, "t", 1, fa, 1, TQ_FETCH_READY);
    tq_meta *none = NULL;
    cr_expect(eq(int, tq_get_meta(c, &args, &none), TQ_ERR_TIMEOUT));
    char *json = NULL;
    cr_assert(eq(int, tq_partitions(c, part, &json), TQ_OK));
    cr_expect(ne(ptr, strstr(json, "\"rows\":4"), NULL), "%s", json);
    free(json);

    /* a second INSERT continues; a cleared index is reused first */
    m = get_meta_ok(c, part, "ignored", 0, NULL, 2, TQ_FETCH_INSERT);
    cr_expect(eq(i64, tq_meta_indexes(m)[0], 4));
    cr_expect(eq(i64, tq_meta_indexes(m)[1], 5));
    tq_meta_free(m);
    int64_t five = 5;
    cr_assert(eq(int, tq_clear(c, part, 1, &five), 1));
    m = get_meta_ok(c, part, NULL, 0, NULL, 1, TQ_FETCH_INSERT);
    cr_expect(eq(i64, tq_meta_indexes(m)[0], 5));
    tq_meta_free(m);

    /* fill the first four, even once sealed (they are live rows) */
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK));
    tq_batch *b = i64_batch("a", 4, 40);
    put_ok(c, part, b, idx, NULL);
    tq_batch_destroy(b);
    m = get_meta_ok(c, part, "t", 1, fa, 4, TQ_FETCH_READY);
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    for (uint32_t i = 0; i < 4; i++) {
        cr_expect(eq(i64, tq_meta_indexes(m)[i], idx[i]));
        cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "a", i, NULL, NULL), 40 + i));
    }
    tq_batch_destroy(got);
    tq_meta_free(m);

    /* sealed: no new rows, and nothing made */
    args = args_of(part, NULL, 0, NULL, 3, TQ_FETCH_INSERT);
    m = (tq_meta *)(uintptr_t)0x5e5e;
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    error_names(c, "insert on sealed", "sealed", NULL);
    cr_expect(eq(ptr, m, (tq_meta *)(uintptr_t)0x5e5e));
    cr_assert(eq(int, tq_partitions(c, part, &json), TQ_OK));
    cr_expect(ne(ptr, strstr(json, "\"rows\":6"), NULL), "%s", json);
    free(json);

    /* INSERT names no fields, takes no sampler */
    args = args_of(tq_test_unique("insbad"), NULL, 1, fa, 1, TQ_FETCH_INSERT);
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    args = args_of(tq_test_unique("insbad"), NULL, 0, NULL, 1, TQ_FETCH_INSERT);
    args.sampler = "grpo";
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    args.sampler = NULL;
    args.batch_size = 0;
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    args.batch_size = TQ_WIRE_MAX_ROWS + 1;
    cr_expect(eq(int, tq_get_meta(c, &args, &m), TQ_ERR_INVALID));
    cr_expect(eq(ptr, m, (tq_meta *)(uintptr_t)0x5e5e));
}

/* ---- 3. metas of given rows ---- */

META_TEST(meta_rows)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("rows");
    tq_batch *a = i64_batch("a", 4, 10), *b = i64_batch("b", 2, 20);
    int64_t bidx[2] = {1, 3};
    put_ok(c, part, a, NULL, NULL);
    put_ok(c, part, b, bidx, NULL);
    tq_batch_destroy(a);
    tq_batch_destroy(b);
    const char *fa[] = {"a"};
    tq_meta *taken = get_meta_ok(c, part, "t", 1, fa, 4, TQ_FETCH_READY); /* all in flight */

    /* named fields, any order, repeats; absent cells marked; nothing consumed */
    int64_t idx[4] = {3, 0, 3, 1};
    const char *fab[] = {"b", "a"};
    tq_meta *m = NULL;
    int rc = tq_get_meta_rows(c, part, 4, idx, 2, fab, &m);
    cr_assert(eq(int, rc, TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(u32, tq_meta_rows(m), 4));
    for (uint32_t i = 0; i < 4; i++) {
        cr_expect(eq(i64, tq_meta_indexes(m)[i], idx[i]));
        cr_expect(eq(int, tq_meta_has_cell(m, "a", i), 1));
        cr_expect(eq(int, tq_meta_has_cell(m, "b", i), idx[i] == 1 || idx[i] == 3), "row %u", i);
    }
    tq_batch *got = NULL;
    cr_expect(eq(int, tq_get_data(c, m, &got), TQ_ERR_NOT_FOUND), "row 0 lacks b");
    error_names(c, "absent cell", "row 0", "b", NULL);
    tq_meta_free(m);

    /* no field named: those every row has */
    int64_t both[2] = {3, 1};
    cr_assert(eq(int, tq_get_meta_rows(c, part, 2, both, 0, NULL, &m), TQ_OK));
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(u32, tq_batch_num_fields(got), 2));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "a", 0, NULL, NULL), 13));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "b", 0, NULL, NULL), 21));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "b", 1, NULL, NULL), 20));
    tq_batch_destroy(got);
    tq_meta_free(m);
    cr_assert(eq(int, tq_get_meta_rows(c, part, 2, idx, 0, NULL, &m), TQ_OK));
    cr_expect(eq(int, tq_meta_has_cell(m, "a", 0), 1), "3 and 0 share a only");
    cr_expect(eq(int, tq_meta_has_cell(m, "b", 0), TQ_ERR_NOT_FOUND));
    tq_meta_free(m);
    expect_consumed(c, part, "t", "1111");
    tq_meta_free(taken);

    /* a row still pinned by a meta of rows is safe from a clear */
    int64_t zero = 0;
    cr_assert(eq(int, tq_get_meta_rows(c, part, 1, &zero, 1, fa, &m), TQ_OK));
    cr_assert(eq(int, tq_clear(c, part, 1, &zero), 1));
    b = i64_batch("a", 1, 99);
    put_ok(c, part, b, NULL, NULL); /* reuses index 0 */
    tq_batch_destroy(b);
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "a", 0, NULL, NULL), 10),
              "the pinned bytes, not the overwrite");
    tq_batch_destroy(got);
    tq_meta_free(m);

    /* unknown and cleared rows, unknown partition or field, bad arguments */
    m = (tq_meta *)(uintptr_t)0x5e5e;
    int64_t seven[2] = {1, 7};
    cr_expect(eq(int, tq_get_meta_rows(c, part, 2, seven, 0, NULL, &m), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown row", "7", NULL);
    int64_t two = 2;
    cr_assert(eq(int, tq_clear(c, part, 1, &two), 1));
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &two, 0, NULL, &m), TQ_ERR_NOT_FOUND));
    error_names(c, "cleared row", "row 2", NULL);
    cr_expect(eq(int, tq_get_meta_rows(c, "no_such_partition", 1, &zero, 0, NULL, &m),
                 TQ_ERR_NOT_FOUND));
    error_names(c, "unknown partition", "no_such_partition", NULL);
    const char *fz[] = {"zz"}, *faa[] = {"a", "a"};
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &zero, 1, fz, &m), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown field", "zz", NULL);
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &zero, 2, faa, &m), TQ_ERR_INVALID));
    int64_t neg = -1;
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &neg, 0, NULL, &m), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(c, part, 0, &zero, 0, NULL, &m), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, NULL, 0, NULL, &m), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &zero, 0, NULL, NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(c, NULL, 1, &zero, 0, NULL, &m), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(NULL, part, 1, &zero, 0, NULL, &m), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_get_meta_rows(c, part, 1, &zero, TQ_WIRE_MAX_FIELDS + 1, fa, &m),
                 TQ_ERR_INVALID));
    cr_expect(eq(ptr, m, (tq_meta *)(uintptr_t)0x5e5e), "no meta written on error");
}

/* ---- 4. custom meta ---- */

static void set_custom_ok(tq_client *c, const char *part, size_t n, const int64_t *idx,
                          const char *const *json)
{
    int rc = tq_set_custom_meta(c, part, n, idx, json);
    cr_assert(eq(int, rc, TQ_OK), "set_custom_meta(%s): %s (%s)", part, tq_status_string(rc),
              tq_last_error(c));
}

/* The custom meta of rows as a meta of them says, "|"-separated. */
static void expect_custom(tq_client *c, const char *part, size_t n, const int64_t *idx,
                          const char *want)
{
    tq_meta *m = NULL;
    int rc = tq_get_meta_rows(c, part, n, idx, 0, NULL, &m);
    cr_assert(eq(int, rc, TQ_OK), "%s", tq_last_error(c));
    char got[1024] = "";
    for (uint32_t i = 0; i < n; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? "|" : "",
                 tq_meta_custom(m, i));
    cr_expect(eq(ptr, (void *)tq_meta_custom(m, (uint32_t)n), NULL), "row out of range");
    tq_meta_free(m);
    cr_expect(eq(str, got, S(want)), "custom meta of %s", part);
}

META_TEST(custom_meta)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("custom");
    tq_batch *a = i64_batch("a", 3, 0);
    put_ok(c, part, a, NULL, NULL);
    tq_batch_destroy(a);
    int64_t idx[3] = {0, 1, 2}, r02[2] = {0, 2};
    const char *j02[] = {"{\"score\": 0.5}", " {\"a\": [1, 2], \"s\": \"x\"} "};
    set_custom_ok(c, part, 2, r02, j02);
    expect_custom(c, part, 3, idx, "{\"score\":0.5}|{}|{\"a\":[1,2],\"s\":\"x\"}");

    /* every meta carries it: READY and FORCE too; no key on these rows */
    const char *fa[] = {"a"};
    tq_meta *m = get_meta_ok(c, part, "t", 1, fa, 3, TQ_FETCH_READY);
    cr_expect(eq(str, S(tq_meta_custom(m, 0)), S("{\"score\":0.5}")));
    cr_expect(eq(str, S(tq_meta_custom(m, 1)), S("{}")));
    cr_expect(eq(ptr, (void *)tq_meta_key(m, 0), NULL));
    tq_meta_free(m);
    m = get_meta_ok(c, part, NULL, 1, fa, 3, TQ_FETCH_FORCE);
    cr_expect(eq(str, S(tq_meta_custom(m, 2)), S("{\"a\":[1,2],\"s\":\"x\"}")));
    tq_meta_free(m);

    /* set replaces (as TransferQueue's set_custom_meta); NULL and {} remove */
    const char *j0[] = {"{\"b\": true}"};
    set_custom_ok(c, part, 1, idx, j0);
    const char *jnull[] = {NULL, "{}"};
    set_custom_ok(c, part, 2, &idx[1], jnull);
    expect_custom(c, part, 3, idx, "{\"b\":true}|{}|{}");

    /* all or nothing: one bad row changes none */
    static const char *const bad[] = {"nope", "[1]", "{} x", "{\"a\":1}{}", "", "\"s\"",
                                      "{\"a\":", "null"};
    for (size_t i = 0; i < N_OF(bad); i++) {
        const char *jj[] = {"{\"c\": 1}", bad[i]};
        cr_expect(eq(int, tq_set_custom_meta(c, part, 2, r02, jj), TQ_ERR_INVALID), "%s", bad[i]);
        error_names(c, "bad JSON", "row 2", NULL);
    }
    expect_custom(c, part, 3, idx, "{\"b\":true}|{}|{}");

    /* the size bound: TQ_MAX_CUSTOM_META bytes of text, not one more */
    char *big = malloc(TQ_MAX_CUSTOM_META + 2);
    memset(big, 'x', TQ_MAX_CUSTOM_META + 1);
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + TQ_MAX_CUSTOM_META - 2, "\"}", 3); /* exactly TQ_MAX_CUSTOM_META bytes */
    const char *jb[] = {big};
    set_custom_ok(c, part, 1, &idx[1], jb);
    m = NULL;
    cr_assert(eq(int, tq_get_meta_rows(c, part, 1, &idx[1], 0, NULL, &m), TQ_OK));
    cr_expect(eq(sz, strlen(tq_meta_custom(m, 0)), TQ_MAX_CUSTOM_META));
    tq_meta_free(m);
    memcpy(big + TQ_MAX_CUSTOM_META - 2, "x\"}", 4);
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, &idx[1], jb), TQ_ERR_INVALID));
    error_names(c, "too long", "65537", NULL);
    free(big);

    /* deep nesting is refused, not recursed into without bound */
    size_t depth = 20000;
    char *deep = malloc(2 * depth + 16);
    strcpy(deep, "{\"d\":");
    memset(deep + 5, '[', depth);
    memset(deep + 5 + depth, ']', depth);
    strcpy(deep + 5 + 2 * depth, "}");
    const char *jd[] = {deep};
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, idx, jd), TQ_ERR_INVALID));
    free(deep);

    /* rows: unknown, cleared, repeated, negative; partition; NULL */
    int64_t nine = 9, neg = -1, twice[2] = {0, 0};
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, &nine, j0), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown row", "9", NULL);
    const char *j2[] = {"{}", "{}"};
    cr_expect(eq(int, tq_set_custom_meta(c, part, 2, twice, j2), TQ_ERR_INVALID));
    error_names(c, "repeated row", "twice", NULL);
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, &neg, j0), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_set_custom_meta(c, "no_such_partition", 1, idx, j0), TQ_ERR_NOT_FOUND));
    cr_expect(eq(int, tq_set_custom_meta(c, part, 0, idx, j0), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, NULL, j0), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, idx, NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_set_custom_meta(c, NULL, 1, idx, j0), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_set_custom_meta(NULL, part, 1, idx, j0), TQ_ERR_INVALID));
    expect_custom(c, part, 1, idx, "{\"b\":true}");

    /* a clear removes it with the row: the index reused starts with none */
    cr_assert(eq(int, tq_clear(c, part, 1, idx), 1));
    cr_expect(eq(int, tq_set_custom_meta(c, part, 1, idx, j0), TQ_ERR_NOT_FOUND), "cleared row");
    a = i64_batch("a", 1, 0);
    put_ok(c, part, a, NULL, NULL);
    tq_batch_destroy(a);
    expect_custom(c, part, 1, idx, "{}");
    cr_expect(eq(ptr, (void *)tq_meta_custom(NULL, 0), NULL));
    cr_expect(eq(ptr, (void *)tq_meta_key(NULL, 0), NULL));
}

/* A keyed row's KV tag is its custom meta: one store. Tags merge key by key,
 * set_custom_meta replaces. */
META_TEST(custom_meta_is_the_kv_tag)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("tagmeta");
    tq_batch *a = i64_batch("a", 1, 5);
    cr_assert(eq(int, tq_kv_put(c, part, "k", a, "{\"x\": 1}"), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(a);
    int64_t row = 0;
    expect_custom(c, part, 1, &row, "{\"x\":1}");
    const char *j[] = {"{\"y\": 2}"};
    set_custom_ok(c, part, 1, &row, j);
    tq_kv_entries *ents = NULL;
    cr_assert(eq(int, tq_kv_list(c, part, &ents), TQ_OK));
    cr_assert(eq(sz, tq_kv_entries_size(ents), 1));
    cr_expect(eq(str, S(tq_kv_entries_tag(ents, 0)), S("{\"y\":2}")), "replaced");
    tq_kv_entries_free(ents);
    cr_assert(eq(int, tq_kv_put(c, part, "k", NULL, "{\"z\": 3, \"y\": 4}"), TQ_OK));
    tq_meta *m = NULL;
    cr_assert(eq(int, tq_get_meta_rows(c, part, 1, &row, 0, NULL, &m), TQ_OK));
    cr_expect(eq(str, S(tq_meta_custom(m, 0)), S("{\"y\":4,\"z\":3}")), "merged");
    cr_expect(eq(str, S(tq_meta_key(m, 0)), S("k")));
    tq_meta_free(m);
    /* kv get's batch is read from a meta that had it too: a KV_GET answer carries it */
    const char *keys[] = {"k"};
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_kv_batch_get(c, part, 1, keys, 0, NULL, &got), TQ_OK));
    tq_batch_destroy(got);

    /* tags are held to the same bound; a merged tag past it is refused, nothing written */
    char *big = malloc(TQ_MAX_CUSTOM_META + 16);
    memset(big, 'x', TQ_MAX_CUSTOM_META + 8);
    memcpy(big, "{\"w\":\"", 6);
    strcpy(big + TQ_MAX_CUSTOM_META - 2, "\"}");
    cr_expect(eq(int, tq_kv_put(c, part, "k", NULL, big), TQ_ERR_INVALID), "merged past the bound");
    error_names(c, "merged tag", "k", NULL);
    strcpy(big + TQ_MAX_CUSTOM_META - 1, "\"}");
    cr_expect(eq(int, tq_kv_put(c, part, "k2", NULL, big), TQ_ERR_INVALID), "a tag past the bound");
    free(big);
    cr_assert(eq(int, tq_get_meta_rows(c, part, 1, &row, 0, NULL, &m), TQ_OK));
    cr_expect(eq(str, S(tq_meta_custom(m, 0)), S("{\"y\":4,\"z\":3}")), "unchanged");
    tq_meta_free(m);
    cr_assert(eq(int, tq_kv_list(c, part, &ents), TQ_OK));
    cr_expect(eq(sz, tq_kv_entries_size(ents), 1), "no key k2");
    tq_kv_entries_free(ents);

    /* seqlen_balanced reads total_lengths from any row's custom meta, keyed or not */
    const char *sp = tq_test_unique("seqcm");
    a = i64_batch("a", 4, 0);
    put_ok(c, sp, a, NULL, NULL);
    tq_batch_destroy(a);
    int64_t idx[4] = {0, 1, 2, 3};
    const char *lens[] = {"{\"total_lengths\": 10}", "{\"total_lengths\": 1}",
                          "{\"total_lengths\": 7}", "{\"total_lengths\": 3}"};
    set_custom_ok(c, sp, 4, idx, lens);
    const char *fa[] = {"a"};
    tq_fetch_args_t args = args_of(sp, "t", 1, fa, 2, TQ_FETCH_READY);
    args.sampler = "seqlen_balanced";
    args.sampler_args = "{\"n_samples_per_prompt\": 1, \"dp_size\": 2, \"dp_rank\": 0, "
                        "\"batch_index\": 0}";
    m = NULL;
    int rc = tq_get_meta(c, &args, &m);
    cr_assert(eq(int, rc, TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(u32, tq_meta_rows(m), 2));
    tq_meta_free(m);
}

/* The controller refuses hostile custom meta in raw frames clearly and stays up. */
Test(meta_ops, custom_meta_hostile_frames, .timeout = 60)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "16M"), 0));
    tq_client *c = NULL;
    cr_assert(eq(int, tq_open(cl.address, &c), TQ_OK));
    tq_batch *a = i64_batch("a", 2, 0);
    put_ok(c, "p", a, NULL, NULL);
    tq_batch_destroy(a);

    int fd = tq_test_connect(tq_test_cluster_port(&cl), 5000);
    cr_assert(lt(int, -1, fd));
    size_t n;
    uint8_t *f = tq_test_hello_frame(1, &n);
    cr_assert(eq(int, tq_test_write_all(fd, f, n), 0));
    free(f);
    tq_test_answer_t ans;
    cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
    tq_test_answer_free(&ans);

    size_t deep_n = 60000;
    char *deep = malloc(deep_n + 8);
    strcpy(deep, "{\"d\":");
    memset(deep + 5, '[', deep_n - 6);
    deep[deep_n - 1] = '}';
    static const int64_t row0 = 0;
    const struct {
        const char *text;
        size_t      len;
        int         status;
    } cases[] = {
        {"{\"a\":1}\0{", 9, TQ_ERR_PROTOCOL},  /* a NUL inside */
        {"[1,2]", 5, TQ_ERR_INVALID},
        {"{\"a\":1} tail", 12, TQ_ERR_INVALID},
        {deep, deep_n, TQ_ERR_INVALID},          /* nested past cJSON's limit */
        {"{\"ok\":1}", 8, TQ_OK},
    };
    for (size_t i = 0; i < N_OF(cases); i++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        tq_wire_encode_set_custom(&w, &(tq_msg_set_custom_t){{"p", 1}, 1, tq_array_of(&row0, 1)});
        tq_wire_put_blob(&w, cases[i].text, (uint32_t)cases[i].len);
        f = tq_test_frame(TQ_MSG_SET_CUSTOM_META, 0, 10 + i, w.data, (uint32_t)w.len, &n);
        cr_assert(eq(int, tq_test_write_all(fd, f, n), 0));
        free(f);
        tq_wbuf_free(&w);
        cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
        cr_expect(eq(int, ans.closed, 0));
        cr_expect(eq(i32, ans.status, cases[i].status), "case %zu: %s", i, ans.message);
        tq_test_answer_free(&ans);
    }
    /* a count with too few blobs, then trailing bytes */
    for (int k = 0; k < 2; k++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        static const int64_t rows2[2] = {0, 1};
        tq_wire_encode_set_custom(&w, &(tq_msg_set_custom_t){{"p", 1}, 2, tq_array_of(rows2, 2)});
        tq_wire_put_blob(&w, "{}", 2);
        if (k == 1) {
            tq_wire_put_blob(&w, "{}", 2);
            tq_wire_put_u8(&w, 7);
        }
        f = tq_test_frame(TQ_MSG_SET_CUSTOM_META, 0, 20 + k, w.data, (uint32_t)w.len, &n);
        cr_assert(eq(int, tq_test_write_all(fd, f, n), 0));
        free(f);
        tq_wbuf_free(&w);
        cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
        cr_expect(eq(i32, ans.status, TQ_ERR_PROTOCOL), "%s", ans.message);
        tq_test_answer_free(&ans);
    }
    free(deep);
    close(fd);
    expect_custom(c, "p", 1, &row0, "{\"ok\":1}");
    cr_expect(tq_test_cluster_controller_alive(&cl));
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* Custom meta is charged to the controller's metadata budget. */
Test(meta_ops, custom_meta_budget, .timeout = 60)
{
    const char *args[] = {"--max-metadata", "1M", NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "16M", args, NULL), 0));
    tq_client *c = NULL;
    cr_assert(eq(int, tq_open(cl.address, &c), TQ_OK));
    tq_batch *a = i64_batch("a", 40, 0);
    put_ok(c, "p", a, NULL, NULL);
    tq_batch_destroy(a);
    char *big = malloc(TQ_MAX_CUSTOM_META);
    memset(big, 'x', TQ_MAX_CUSTOM_META - 1);
    memcpy(big, "{\"k\":\"", 6);
    strcpy(big + TQ_MAX_CUSTOM_META - 3, "\"}");
    int64_t idx[40];
    const char *json[40];
    for (int i = 0; i < 40; i++)
        idx[i] = i, json[i] = big;
    /* 40 x ~128 KiB charged: past 1 MiB, so refused whole */
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 40, idx, json), TQ_ERR_NOSPACE), "%s",
              tq_last_error(c));
    expect_custom(c, "p", 1, &idx[4], "{}");
    /* four fit (~512 KiB), eight do not; given back when removed, or cleared */
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, idx, json), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, &idx[4], json), TQ_ERR_NOSPACE));
    const char *none[4] = {NULL, NULL, NULL, NULL};
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, idx, none), TQ_OK));
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, &idx[4], json), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, &idx[8], json), TQ_ERR_NOSPACE));
    cr_assert(eq(int, tq_clear(c, "p", 4, &idx[4]), 4));
    cr_expect(eq(int, tq_set_custom_meta(c, "p", 4, &idx[8], json), TQ_OK), "%s", tq_last_error(c));
    free(big);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- 5. keys <-> row indexes ---- */

META_TEST(kv_indexes_and_keys)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kvidx");
    const char *ab[] = {"a", "b", "a"};
    int64_t idx[3] = {7, 7, 7};
    cr_assert(eq(int, tq_kv_indexes(c, part, 3, ab, 0, idx), TQ_OK), "%s", tq_last_error(c));
    for (int i = 0; i < 3; i++)
        cr_expect(eq(i64, idx[i], -1), "no key yet");
    char *json = NULL;
    cr_expect(eq(int, tq_partitions(c, part, &json), TQ_ERR_NOT_FOUND), "nothing was created");

    cr_assert(eq(int, tq_kv_indexes(c, part, 3, ab, 1, idx), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(i64, idx[0], 0));
    cr_expect(eq(i64, idx[1], 1));
    cr_expect(eq(i64, idx[2], 0), "a key named twice gets one row");
    cr_assert(eq(int, tq_partitions(c, part, &json), TQ_OK));
    cr_expect(ne(ptr, strstr(json, "\"rows\":2"), NULL), "%s", json);
    free(json);
    tq_kv_entries *ents = NULL;
    cr_assert(eq(int, tq_kv_list(c, part, &ents), TQ_OK));
    cr_assert(eq(sz, tq_kv_entries_size(ents), 2));
    cr_expect(eq(str, S(tq_kv_entries_key(ents, 0)), S("a")));
    cr_expect(eq(str, S(tq_kv_entries_tag(ents, 1)), S("{}")));
    tq_kv_entries_free(ents);
    const char *abc[] = {"b", "c", "a"};
    cr_assert(eq(int, tq_kv_indexes(c, part, 3, abc, 0, idx), TQ_OK));
    cr_expect(eq(i64, idx[0], 1));
    cr_expect(eq(i64, idx[1], -1));
    cr_expect(eq(i64, idx[2], 0));

    /* fill the keys' rows by index; kv calls see them */
    int64_t rows01[2] = {0, 1};
    tq_batch *b = i64_batch("v", 2, 30);
    put_ok(c, part, b, rows01, NULL);
    tq_batch_destroy(b);
    const char *ba[] = {"b", "a"};
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_kv_batch_get(c, part, 2, ba, 0, NULL, &got), TQ_OK), "%s",
              tq_last_error(c));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "v", 0, NULL, NULL), 31));
    cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "v", 1, NULL, NULL), 30));
    tq_batch_destroy(got);
    b = i64_batch("v", 1, 9);
    cr_assert(eq(int, tq_kv_put(c, part, "a", b, "{\"t\": 1}"), TQ_OK));
    tq_batch_destroy(b);
    cr_assert(eq(int, tq_kv_indexes(c, part, 1, ab, 1, idx), TQ_OK));
    cr_expect(eq(i64, idx[0], 0), "the key keeps its row");

    /* an unkeyed row, then rows -> keys */
    b = i64_batch("v", 1, 50);
    int64_t plain;
    put_ok(c, part, b, NULL, &plain);
    tq_batch_destroy(b);
    cr_expect(eq(i64, plain, 2));
    int64_t ask[4] = {1, 2, 0, 1};
    char **keys = NULL;
    cr_assert(eq(int, tq_kv_keys(c, part, 4, ask, &keys), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(str, keys[0], S("b")));
    cr_expect(eq(ptr, keys[1], NULL), "a row without a key");
    cr_expect(eq(str, keys[2], S("a")));
    cr_expect(eq(str, keys[3], S("b")));
    tq_kv_keys_free(keys);
    tq_kv_keys_free(NULL);

    /* metas say the keys of their rows */
    tq_meta *m = NULL;
    cr_assert(eq(int, tq_get_meta_rows(c, part, 4, ask, 0, NULL, &m), TQ_OK));
    cr_expect(eq(str, S(tq_meta_key(m, 0)), S("b")));
    cr_expect(eq(ptr, (void *)tq_meta_key(m, 1), NULL));
    cr_expect(eq(str, S(tq_meta_key(m, 2)), S("a")));
    cr_expect(eq(str, S(tq_meta_custom(m, 2)), S("{\"t\":1}")));
    cr_expect(eq(ptr, (void *)tq_meta_key(m, 4), NULL), "out of range");
    tq_meta_free(m);
    const char *fv[] = {"v"};
    m = get_meta_ok(c, part, "t", 1, fv, 3, TQ_FETCH_READY);
    cr_expect(eq(str, S(tq_meta_key(m, 0)), S("a")));
    cr_expect(eq(str, S(tq_meta_key(m, 1)), S("b")));
    cr_expect(eq(ptr, (void *)tq_meta_key(m, 2), NULL));
    tq_meta_free(m);

    /* refusals */
    keys = (char **)(uintptr_t)0x5e5e;
    int64_t nine = 9, neg = -1;
    cr_expect(eq(int, tq_kv_keys(c, part, 1, &nine, &keys), TQ_ERR_NOT_FOUND));
    error_names(c, "unknown row", "9", NULL);
    cr_expect(eq(int, tq_kv_keys(c, "no_such_partition", 1, ask, &keys), TQ_ERR_NOT_FOUND));
    cr_expect(eq(int, tq_kv_keys(c, part, 1, &neg, &keys), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_keys(c, part, 0, ask, &keys), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_keys(c, part, 1, NULL, &keys), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_keys(c, part, 1, ask, NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_keys(NULL, part, 1, ask, &keys), TQ_ERR_INVALID));
    cr_expect(eq(ptr, keys, (char **)(uintptr_t)0x5e5e));
    const char *badkeys[] = {"ok", ""};
    cr_expect(eq(int, tq_kv_indexes(c, part, 2, badkeys, 1, idx), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_indexes(c, part, 1, ab, 1, NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_indexes(c, part, 0, ab, 1, idx), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_kv_indexes(c, NULL, 1, ab, 1, idx), TQ_ERR_INVALID));

    /* cleared keys have no row; sealed partitions take no new key, find old ones */
    cr_assert(eq(int, tq_kv_clear(c, part, 1, ab), 1));
    cr_assert(eq(int, tq_kv_indexes(c, part, 1, ab, 0, idx), TQ_OK));
    cr_expect(eq(i64, idx[0], -1));
    cr_expect(eq(int, tq_kv_keys(c, part, 1, rows01, &keys), TQ_ERR_NOT_FOUND), "row 0 cleared");
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK));
    const char *bz[] = {"b", "z"};
    cr_expect(eq(int, tq_kv_indexes(c, part, 2, bz, 1, idx), TQ_ERR_INVALID));
    error_names(c, "sealed", "sealed", NULL);
    cr_assert(eq(int, tq_kv_indexes(c, part, 2, bz, 0, idx), TQ_OK));
    cr_expect(eq(i64, idx[0], 1));
    cr_expect(eq(i64, idx[1], -1), "z was not made");
    cr_assert(eq(int, tq_kv_indexes(c, part, 1, bz, 1, idx), TQ_OK), "create, nothing new");
    cr_expect(eq(i64, idx[0], 1));
}

/* Keys made by tq_kv_indexes and puts of the same keys agree on their rows,
 * whichever comes first. */
META_TEST(kv_indexes_with_puts)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kvidx2");
    tq_batch *b = i64_batch("v", 2, 1);
    const char *k12[] = {"k1", "k2"};
    cr_assert(eq(int, tq_kv_batch_put(c, part, 2, k12, b, NULL), TQ_OK));
    tq_batch_destroy(b);
    const char *ks[] = {"k2", "k3", "k1", "k4"};
    int64_t idx[4];
    cr_assert(eq(int, tq_kv_indexes(c, part, 4, ks, 1, idx), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(i64, idx[0], 1));
    cr_expect(eq(i64, idx[1], 2));
    cr_expect(eq(i64, idx[2], 0));
    cr_expect(eq(i64, idx[3], 3));
    b = i64_batch("v", 2, 10);
    const char *k34[] = {"k4", "k3"};
    const char *tags[] = {"{\"n\": 4}", NULL};
    cr_assert(eq(int, tq_kv_batch_put(c, part, 2, k34, b, tags), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);
    tq_meta *m = NULL;
    cr_assert(eq(int, tq_get_meta_rows(c, part, 4, idx, 1, (const char *[]){"v"}, &m), TQ_OK));
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    const int64_t want[4] = {2, 11, 1, 10};
    for (uint32_t i = 0; i < 4; i++) {
        cr_expect(eq(i64, *(const int64_t *)tq_batch_row(got, "v", i, NULL, NULL), want[i]));
        cr_expect(eq(str, S(tq_meta_key(m, i)), S(ks[i])));
    }
    cr_expect(eq(str, S(tq_meta_custom(m, 3)), S("{\"n\":4}")));
    tq_batch_destroy(got);
    tq_meta_free(m);
    char *json = NULL;
    cr_assert(eq(int, tq_partitions(c, part, &json), TQ_OK));
    cr_expect(ne(ptr, strstr(json, "\"rows\":4"), NULL), "no stray rows: %s", json);
    free(json);
}
