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
static __attribute__((unused)) tq_batch *i64_batch(const char *field, uint32_t rows, int64_t base)
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
                            const char *const *fields, uint32_t batch)
{
    tq_fetch_args_t a = {0};
    a.partition = part;
    a.task = task;
    a.fields = fields;
    a.num_fields = nf;
    a.batch_size = batch;
    tq_meta *m = NULL;
    int rc = tq_get_meta(c, &a, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta(%s): %s (%s)", part, tq_status_string(rc),
              tq_last_error(c));
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
    tq_meta *m = get_meta_ok(c, part, "t", 2, fields, 3);
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
    tq_meta *m = get_meta_ok(c, part, "t", 1, fields, 3);
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
