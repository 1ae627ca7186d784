/* test_kv.c: the key-value interface end to end (SCENARIOS.md 1-9), its atomicity on bad
 * input, one client shared by threads, and non-blocking requests; each scenario is run
 * against a real cluster (tq-controller + 2 tq-storage) and the embedded default. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tq/tq.h"
#include "wire.h"

/* Each scenario runs on a real cluster and on the embedded default. */
#define KV_TEST(name) TQ_TEST_BOTH(kv, name, 60)

/* ---- helpers ---- */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define S(x)    ((char *)(x)) /* Criterion's str tag wants char * */

/* Bound on every wait for a non-blocking request. */
#define REQ_TIMEOUT_MS 20000

static tq_batch *const      BATCH_SENTINEL   = (tq_batch *)(uintptr_t)0x5e5e;
static tq_kv_entries *const ENTRIES_SENTINEL = (tq_kv_entries *)(uintptr_t)0x5e5f;
static tq_request *const    REQUEST_SENTINEL = (tq_request *)(uintptr_t)0x5e60;

static tq_batch *batch_new(uint32_t rows)
{
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    return b;
}

static void add_tensor(tq_batch *b, const char *field, tq_dtype_t dtype, uint32_t ndim,
                       const int64_t *shape, const void *data)
{
    int rc = tq_batch_add_tensor(b, field, dtype, ndim, shape, data);
    cr_assert(eq(int, rc, TQ_OK), "tq_batch_add_tensor(%s): %s", field, tq_status_string(rc));
}

static void add_bytes(tq_batch *b, const char *field, const void *const *values,
                      const size_t *lengths)
{
    int rc = tq_batch_add_bytes(b, field, values, lengths);
    cr_assert(eq(int, rc, TQ_OK), "tq_batch_add_bytes(%s): %s", field, tq_status_string(rc));
}

/* A 1-row batch of one I64 scalar field. The value is copied into the batch's
 * own storage, so it stays valid for the batch's life. */
typedef struct {
    tq_batch *b;
    int64_t   v;
} i64_row_t;

static tq_batch *i64_row(i64_row_t *r, const char *field, int64_t v)
{
    r->v = v;
    r->b = batch_new(1);
    add_tensor(r->b, field, TQ_DTYPE_I64, 0, NULL, &r->v);
    return r->b;
}

static void kv_put_ok(tq_client *c, const char *part, const char *key, const tq_batch *fields,
                      const char *tag)
{
    int rc = tq_kv_put(c, part, key, fields, tag);
    cr_assert(eq(int, rc, TQ_OK), "kv_put(%s, %s, tag %s): %s (%s)", part, key,
              tag ? tag : "NULL", tq_status_string(rc), tq_last_error(c));
}

static void kv_batch_put_ok(tq_client *c, const char *part, size_t n, const char *const *keys,
                            const tq_batch *fields, const char *const *tags)
{
    int rc = tq_kv_batch_put(c, part, n, keys, fields, tags);
    cr_assert(eq(int, rc, TQ_OK), "kv_batch_put(%s, %zu keys from %s): %s (%s)", part, n,
              keys[0], tq_status_string(rc), tq_last_error(c));
}

static tq_batch *kv_get_ok(tq_client *c, const char *part, size_t n, const char *const *keys,
                           size_t nf, const char *const *fields)
{
    tq_batch *b = NULL;
    int rc = tq_kv_batch_get(c, part, n, keys, nf, fields, &b);
    cr_assert(eq(int, rc, TQ_OK), "kv_batch_get(%s, %zu keys from %s, %s): %s (%s)", part, n,
              keys[0], fields ? fields[0] : "all fields", tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, b, NULL), "kv_batch_get(%s) gave no batch", part);
    cr_assert(eq(u32, tq_batch_rows(b), (uint32_t)n), "kv_batch_get(%s): rows", part);
    return b;
}

/* A get that must fail with TQ_ERR_NOT_FOUND, tq_last_error naming `name` (NULL:
 * any detail), and batch_p untouched. */
static void kv_get_missing(tq_client *c, const char *part, size_t n, const char *const *keys,
                           size_t nf, const char *const *fields, const char *name,
                           const char *what)
{
    tq_batch *b = BATCH_SENTINEL;
    int rc = tq_kv_batch_get(c, part, n, keys, nf, fields, &b);
    cr_assert(eq(int, rc, TQ_ERR_NOT_FOUND), "%s: kv_batch_get: %s (%s)", what,
              tq_status_string(rc), tq_last_error(c));
    cr_assert(eq(ptr, b, BATCH_SENTINEL), "%s: a failed get wrote batch_p", what);
    const char *err = tq_last_error(c);
    cr_assert(ne(ptr, (void *)err, NULL), "%s: tq_last_error is NULL", what);
    cr_assert(lt(sz, 0, strlen(err)), "%s: no tq_last_error after a failure", what);
    if (name != NULL)
        cr_assert(ne(ptr, strstr(err, name), NULL), "%s: tq_last_error \"%s\" does not name %s",
                  what, err, name);
}

/* A call that must be refused as invalid; on a client, with a detail. */
#define assert_invalid(c, call, what)                                                      \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        cr_assert(eq(int, rc_, TQ_ERR_INVALID), "%s: %s (%s)", (what), tq_status_string(rc_), \
                  (c) ? tq_last_error(c) : "");                                            \
        if ((c) != NULL)                                                                   \
            cr_assert(lt(sz, 0, strlen(tq_last_error(c))), "%s: no tq_last_error", (what)); \
    } while (0)

/* One cell: a tensor or bytes row of b must be exactly (want, len). */
static void assert_cell(const tq_batch *b, const char *field, uint32_t row, const void *want,
                        size_t len, const char *what)
{
    size_t got_len = 0;
    const void *p = tq_batch_row(b, field, row, &got_len, NULL);
    cr_assert(ne(ptr, (void *)p, NULL), "%s: field %s row %u absent", what, field, row);
    tq_assert_bytes_eq(p, got_len, want, len, what);
}

static void assert_i64_cell(const tq_batch *b, const char *field, uint32_t row, int64_t want,
                            const char *what)
{
    assert_cell(b, field, row, &want, sizeof(want), what);
}

/* The batch has exactly the named fields (in any order). */
static void assert_fields(const tq_batch *b, size_t n, const char *const *names, const char *what)
{
    cr_assert(eq(u32, tq_batch_num_fields(b), (uint32_t)n), "%s: number of fields", what);
    tq_field_info_t info;
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(int, tq_batch_field(b, names[i], &info), TQ_OK), "%s: field %s absent", what,
                  names[i]);
}

static void assert_tensor_info(const tq_batch *b, const char *field, tq_dtype_t dtype,
                               uint32_t ndim, const int64_t *shape, const char *what)
{
    tq_field_info_t info;
    cr_assert(eq(int, tq_batch_field(b, field, &info), TQ_OK), "%s: field %s absent", what, field);
    cr_assert(eq(int, info.kind, TQ_FIELD_TENSOR), "%s: kind of %s", what, field);
    cr_assert(eq(int, info.dtype, dtype), "%s: dtype of %s", what, field);
    cr_assert(eq(u32, info.ndim, ndim), "%s: ndim of %s", what, field);
    for (uint32_t d = 0; d < ndim; d++)
        cr_assert(eq(i64, info.row_shape[d], shape[d]), "%s: dimension %u of %s", what, d, field);
}

/* Tags are compared as JSON values: key order and spacing do not matter. */
static void assert_tag(const char *got, const char *want, const char *what)
{
    cr_assert(ne(ptr, (void *)got, NULL), "%s: no tag", what);
    cJSON *g = cJSON_Parse(got), *w = cJSON_Parse(want);
    cr_assert(ne(ptr, w, NULL), "test bug: %s is not JSON", want);
    int same = g != NULL && cJSON_IsObject(g) && cJSON_Compare(g, w, 1);
    cJSON_Delete(g);
    cJSON_Delete(w);
    cr_assert(eq(int, same, 1), "%s: tag %s, want %s", what, got, want);
}

typedef struct {
    const char *part;
    const char *key;
    const char *tag; /* JSON */
} kv_entry_t;

static tq_kv_entries *list_ok(tq_client *c, const char *part)
{
    tq_kv_entries *l = NULL;
    int rc = tq_kv_list(c, part, &l);
    cr_assert(eq(int, rc, TQ_OK), "kv_list(%s): %s (%s)", part ? part : "NULL",
              tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, l, NULL), "kv_list(%s) gave no list", part ? part : "NULL");
    return l;
}

/* A listing as text, for messages: "part/key tag, ...". */
static const char *describe(const tq_kv_entries *l)
{
    static char buf[4096];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < tq_kv_entries_size(l) && off < sizeof(buf) - 1; i++) {
        const char *p = tq_kv_entries_partition(l, i), *k = tq_kv_entries_key(l, i),
                   *t = tq_kv_entries_tag(l, i);
        int w = snprintf(buf + off, sizeof(buf) - off, "%s%s/%s %s", i ? ", " : "",
                         p ? p : "(null)", k ? k : "(null)", t ? t : "(null)");
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return buf;
}

static bool in_parts(const char *p, const kv_entry_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p != NULL && strcmp(p, want[i].part) == 0)
            return true;
    return false;
}

/* The entries of l whose partition appears in want are exactly want, in order;
 * with only_those, l holds no other entry. */
static void assert_entries(const tq_kv_entries *l, const kv_entry_t *want, size_t n,
                           bool only_those, const char *what)
{
    size_t j = 0;
    for (size_t i = 0; i < tq_kv_entries_size(l); i++) {
        const char *p = tq_kv_entries_partition(l, i);
        if (!in_parts(p, want, n)) {
            cr_assert(eq(int, only_those, 0), "%s: unexpected entry %zu in [%s]", what, i,
                      describe(l));
            continue;
        }
        cr_assert(lt(sz, j, n), "%s: more entries than the %zu expected: [%s]", what, n,
                  describe(l));
        const char *k = tq_kv_entries_key(l, i);
        cr_assert(ne(ptr, (void *)k, NULL), "%s: entry %zu has no key", what, i);
        cr_assert(eq(str, S(p), S(want[j].part)), "%s: entry %zu in [%s]", what, i, describe(l));
        cr_assert(eq(str, S(k), S(want[j].key)), "%s: entry %zu in [%s]", what, i, describe(l));
        assert_tag(tq_kv_entries_tag(l, i), want[j].tag, what);
        j++;
    }
    cr_assert(eq(sz, j, n), "%s: entries [%s]", what, describe(l));
}

/* kv_list(part) is exactly want. */
static void assert_list(tq_client *c, const char *part, const kv_entry_t *want, size_t n,
                        const char *what)
{
    tq_kv_entries *l = list_ok(c, part);
    cr_assert(eq(sz, tq_kv_entries_size(l), n), "%s: kv_list(%s) = [%s]", what, part,
              describe(l));
    assert_entries(l, want, n, true, what);
    tq_kv_entries_free(l);
}

/* ---- 1: one key, one tensor field ---- */

KV_TEST(s01_put_get_one_tensor)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s01");
    static const float want[2][3] = {{1.5f, -2.25f, 3.0f}, {1e-30f, -0.0f, 65504.0f}};
    static const int64_t shape[2] = {2, 3};
    float data[2][3];
    memcpy(data, want, sizeof(data));
    tq_batch *b = batch_new(1);
    add_tensor(b, "x", TQ_DTYPE_F32, 2, shape, data);
    kv_put_ok(c, part, "k1", b, NULL);
    /* the stored value is a copy: scribbling on the caller's memory changes nothing */
    tq_batch_destroy(b);
    memset(data, 0xa5, sizeof(data));

    static const char *const keys[] = {"k1"};
    static const char *const fx[] = {"x"};
    for (int all = 0; all < 2; all++) {
        const char *what = all ? "s01 (fields NULL)" : "s01 (field x)";
        tq_batch *got = kv_get_ok(c, part, 1, keys, all ? 0 : 1, all ? NULL : fx);
        assert_fields(got, 1, fx, what);
        cr_assert(eq(str, S(tq_batch_field_name(got, 0)), "x"), "%s", what);
        assert_tensor_info(got, "x", TQ_DTYPE_F32, 2, shape, what);
        tq_field_info_t info;
        cr_assert(eq(int, tq_batch_field(got, "x", &info), TQ_OK));
        tq_assert_bytes_eq(info.data, info.bytes, want, sizeof(want), what);
        const int64_t *row_shape = NULL;
        size_t len = 0;
        const void *p = tq_batch_row(got, "x", 0, &len, &row_shape);
        cr_assert(ne(ptr, (void *)p, NULL), "%s: row 0", what);
        cr_assert(ne(ptr, (void *)row_shape, NULL), "%s: no row shape", what);
        cr_assert(eq(i64, row_shape[0], 2), "%s", what);
        cr_assert(eq(i64, row_shape[1], 3), "%s", what);
        tq_assert_bytes_eq(p, len, want, sizeof(want), what);
        cr_assert(eq(ptr, (void *)tq_batch_row(got, "x", 1, NULL, NULL), NULL), "%s: row 1", what);
        tq_batch_destroy(got);
    }
}

/* ---- 2: a tag beside the fields ---- */

KV_TEST(s02_put_with_tag_lists_it)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s02");
    static const char *tag =
        "{\"score\": 0.5, \"label\": \"good\", \"ids\": [1, 2, 3], \"meta\": {\"ok\": true}}";
    i64_row_t r;
    kv_put_ok(c, part, "sample", i64_row(&r, "reward", 17), tag);
    tq_batch_destroy(r.b);
    kv_entry_t want[] = {{part, "sample", tag}};
    assert_list(c, part, want, N_OF(want), "s02");

    /* a key put without a tag lists {} */
    kv_put_ok(c, part, "untagged", i64_row(&r, "reward", 18), NULL);
    tq_batch_destroy(r.b);
    kv_entry_t want2[] = {{part, "sample", tag}, {part, "untagged", "{}"}};
    assert_list(c, part, want2, N_OF(want2), "s02 untagged");

    static const char *const keys[] = {"sample", "untagged"};
    tq_batch *got = kv_get_ok(c, part, 2, keys, 0, NULL);
    assert_i64_cell(got, "reward", 0, 17, "s02 sample");
    assert_i64_cell(got, "reward", 1, 18, "s02 untagged");
    tq_batch_destroy(got);
}

/* ---- 3: tag-only puts merge ---- */

KV_TEST(s03_tag_only_put_merges)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s03");
    i64_row_t r;
    kv_put_ok(c, part, "k", i64_row(&r, "v", 99), "{\"a\":1}");
    tq_batch_destroy(r.b);
    kv_put_ok(c, part, "k", NULL, "{\"b\":2}");
    kv_entry_t w1[] = {{part, "k", "{\"a\":1,\"b\":2}"}};
    assert_list(c, part, w1, N_OF(w1), "s03 after {b:2}");

    /* a later value for a key wins; the others stay */
    kv_put_ok(c, part, "k", NULL, "{\"a\":\"one\",\"c\":[3]}");
    kv_entry_t w2[] = {{part, "k", "{\"a\":\"one\",\"b\":2,\"c\":[3]}"}};
    assert_list(c, part, w2, N_OF(w2), "s03 after {a:one,c:[3]}");
    /* an empty object changes nothing */
    kv_put_ok(c, part, "k", NULL, "{}");
    assert_list(c, part, w2, N_OF(w2), "s03 after {}");

    /* the data stays readable, unchanged */
    static const char *const keys[] = {"k"};
    tq_batch *got = kv_get_ok(c, part, 1, keys, 0, NULL);
    static const char *const fv[] = {"v"};
    assert_fields(got, 1, fv, "s03");
    assert_i64_cell(got, "v", 0, 99, "s03 v");
    tq_batch_destroy(got);

    /* a tag-only put of a new key creates it, with no fields yet */
    kv_put_ok(c, part, "tag_only", NULL, "{\"z\":0}");
    kv_entry_t w3[] = {{part, "k", "{\"a\":\"one\",\"b\":2,\"c\":[3]}"},
                       {part, "tag_only", "{\"z\":0}"}};
    assert_list(c, part, w3, N_OF(w3), "s03 tag-only key");
    static const char *const kt[] = {"tag_only"};
    kv_get_missing(c, part, 1, kt, 0, NULL, NULL, "s03: a key without fields has none to give");
    kv_get_missing(c, part, 1, kt, 1, fv, "v", "s03: field v of a key without fields");
}

/* ---- 4: a second put adds a field ---- */

KV_TEST(s04_second_put_adds_field)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s04");
    static const int64_t shape[1] = {4};
    const int16_t a[4] = {1, -2, 3, -4};
    tq_batch *b = batch_new(1);
    add_tensor(b, "a", TQ_DTYPE_I16, 1, shape, a);
    kv_put_ok(c, part, "k", b, NULL);
    tq_batch_destroy(b);

    const void *bv[1] = {"hello\0world"};
    const size_t bl[1] = {11};
    b = batch_new(1);
    add_bytes(b, "b", bv, bl);
    kv_put_ok(c, part, "k", b, NULL);
    tq_batch_destroy(b);

    static const char *const keys[] = {"k"};
    static const char *const fab[] = {"a", "b"};
    tq_batch *got = kv_get_ok(c, part, 1, keys, 0, NULL);
    assert_fields(got, 2, fab, "s04 fields NULL");
    assert_tensor_info(got, "a", TQ_DTYPE_I16, 1, shape, "s04");
    assert_cell(got, "a", 0, a, sizeof(a), "s04 a");
    tq_field_info_t info;
    cr_assert(eq(int, tq_batch_field(got, "b", &info), TQ_OK));
    cr_assert(eq(int, info.kind, TQ_FIELD_BYTES), "s04: kind of b");
    assert_cell(got, "b", 0, "hello\0world", 11, "s04 b");
    tq_batch_destroy(got);

    /* a third put overwrites a only; b keeps its value */
    const int16_t a2[4] = {10, 20, 30, 40};
    b = batch_new(1);
    add_tensor(b, "a", TQ_DTYPE_I16, 1, shape, a2);
    kv_put_ok(c, part, "k", b, "{\"v\":2}");
    tq_batch_destroy(b);
    got = kv_get_ok(c, part, 1, keys, 2, fab);
    assert_fields(got, 2, fab, "s04 after overwrite");
    assert_cell(got, "a", 0, a2, sizeof(a2), "s04 a overwritten");
    assert_cell(got, "b", 0, "hello\0world", 11, "s04 b kept");
    tq_batch_destroy(got);
    kv_entry_t w[] = {{part, "k", "{\"v\":2}"}};
    assert_list(c, part, w, N_OF(w), "s04");
}

/* ---- 5: a batch of keys, read in another order ---- */

static int32_t s05_x(int key, int j) { return key * 1000 + j * 7 - 3; }

KV_TEST(s05_batch_put_get_order)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s05");
    static const char *const keys[4] = {"k0", "k1", "k2", "k3"};
    static const char *const tags[4] = {"{\"i\":0}", "{\"i\":1,\"odd\":true}", "{\"i\":2}",
                                        "{\"i\":3,\"odd\":true}"};
    static const int64_t shape[1] = {3};
    int32_t x[4][3];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            x[i][j] = s05_x(i, j);
    static const char *const names[4] = {"zero", "", "two\0!", "three"};
    static const size_t name_len[4] = {4, 0, 5, 5};
    const void *nv[4] = {names[0], names[1], names[2], names[3]};
    tq_batch *b = batch_new(4);
    add_tensor(b, "x", TQ_DTYPE_I32, 1, shape, x);
    add_bytes(b, "name", nv, name_len);
    kv_batch_put_ok(c, part, 4, keys, b, tags);
    tq_batch_destroy(b);

    kv_entry_t w[4];
    for (int i = 0; i < 4; i++)
        w[i] = (kv_entry_t){part, keys[i], tags[i]};
    assert_list(c, part, w, 4, "s05");

    static const int order[4] = {2, 0, 3, 1};
    const char *req[4];
    for (int i = 0; i < 4; i++)
        req[i] = keys[order[i]];
    static const char *const fboth[] = {"name", "x"};
    for (int all = 0; all < 2; all++) {
        tq_batch *got = kv_get_ok(c, part, 4, req, all ? 0 : 2, all ? NULL : fboth);
        assert_fields(got, 2, fboth, "s05");
        assert_tensor_info(got, "x", TQ_DTYPE_I32, 1, shape, "s05");
        for (uint32_t r = 0; r < 4; r++) {
            char what[64];
            snprintf(what, sizeof(what), "s05 row %u (key %s)", r, req[r]);
            int k = order[r];
            assert_cell(got, "x", r, x[k], sizeof(x[k]), what);
            assert_cell(got, "name", r, names[k], name_len[k], what);
        }
        tq_batch_destroy(got);
    }
    /* a subset, one key alone */
    static const char *const k3[] = {"k3"};
    tq_batch *got = kv_get_ok(c, part, 1, k3, 0, NULL);
    assert_cell(got, "x", 0, x[3], sizeof(x[3]), "s05 k3 alone");
    tq_batch_destroy(got);
}

/* ---- 6: a partial update of one key of a batch ---- */

KV_TEST(s06_partial_update)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s06");
    static const char *const keys[2] = {"p0", "p1"};
    int64_t x[2] = {100, 101};
    tq_batch *b = batch_new(2);
    add_tensor(b, "x", TQ_DTYPE_I64, 0, NULL, x);
    kv_batch_put_ok(c, part, 2, keys, b, NULL);
    tq_batch_destroy(b);

    const double extra = 2.718281828;
    b = batch_new(1);
    add_tensor(b, "extra_of_p1", TQ_DTYPE_F64, 0, NULL, &extra);
    kv_put_ok(c, part, "p1", b, NULL);
    tq_batch_destroy(b);

    /* p1 alone has the new field, and still its old one */
    static const char *const k1[] = {"p1"};
    static const char *const fe[] = {"extra_of_p1"};
    static const char *const fxe[] = {"x", "extra_of_p1"};
    tq_batch *got = kv_get_ok(c, part, 1, k1, 1, fe);
    assert_fields(got, 1, fe, "s06 p1 extra");
    assert_cell(got, "extra_of_p1", 0, &extra, sizeof(extra), "s06 p1 extra");
    tq_batch_destroy(got);
    got = kv_get_ok(c, part, 1, k1, 0, NULL);
    assert_fields(got, 2, fxe, "s06 p1 all");
    assert_i64_cell(got, "x", 0, 101, "s06 p1 x");
    tq_batch_destroy(got);

    /* both keys, fields NULL: only what they share */
    static const char *const fx[] = {"x"};
    for (int flip = 0; flip < 2; flip++) {
        const char *both[2] = {keys[flip], keys[1 - flip]};
        got = kv_get_ok(c, part, 2, both, 0, NULL);
        assert_fields(got, 1, fx, "s06 both keys, fields NULL");
        tq_field_info_t info;
        cr_assert(eq(int, tq_batch_field(got, "extra_of_p1", &info), TQ_ERR_NOT_FOUND),
                  "s06: a field of p1 alone came back for both keys");
        assert_i64_cell(got, "x", 0, x[flip], "s06 both x row 0");
        assert_i64_cell(got, "x", 1, x[1 - flip], "s06 both x row 1");
        tq_batch_destroy(got);
        /* naming the new field for both: p0 lacks it */
        kv_get_missing(c, part, 2, both, 1, fe, "extra_of_p1", "s06: both keys, the new field");
        kv_get_missing(c, part, 2, both, 2, fxe, "extra_of_p1", "s06: both keys, x and the new field");
    }
    /* p0 did not change */
    static const char *const k0[] = {"p0"};
    got = kv_get_ok(c, part, 1, k0, 0, NULL);
    assert_fields(got, 1, fx, "s06 p0");
    assert_i64_cell(got, "x", 0, 100, "s06 p0 x");
    tq_batch_destroy(got);
}

/* ---- 7: listing ---- */

KV_TEST(s07_list_order_and_partitions)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s07");
    i64_row_t r;
    /* insertion order is not name order */
    static const char *const singles[] = {"zeta", "alpha", "mid"};
    for (size_t i = 0; i < N_OF(singles); i++) {
        kv_put_ok(c, part, singles[i], i64_row(&r, "v", (int64_t)i), NULL);
        tq_batch_destroy(r.b);
    }
    static const char *const pair[] = {"omega", "beta"};
    int64_t pv[2] = {3, 4};
    tq_batch *b = batch_new(2);
    add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, pv);
    kv_batch_put_ok(c, part, 2, pair, b, NULL);
    tq_batch_destroy(b);
    kv_entry_t w1[] = {{part, "zeta", "{}"},  {part, "alpha", "{}"}, {part, "mid", "{}"},
                       {part, "omega", "{}"}, {part, "beta", "{}"}};
    assert_list(c, part, w1, N_OF(w1), "s07 insertion order");

    /* updates of early keys, alone or in a batch with a new key, keep their place */
    kv_put_ok(c, part, "zeta", i64_row(&r, "v", 50), "{\"u\":1}");
    tq_batch_destroy(r.b);
    static const char *const upd[] = {"new1", "alpha"};
    static const char *const upd_tags[] = {NULL, "{\"u\":2}"};
    int64_t uv[2] = {60, 61};
    b = batch_new(2);
    add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, uv);
    kv_batch_put_ok(c, part, 2, upd, b, upd_tags);
    tq_batch_destroy(b);
    kv_entry_t w2[] = {{part, "zeta", "{\"u\":1}"}, {part, "alpha", "{\"u\":2}"},
                       {part, "mid", "{}"},         {part, "omega", "{}"},
                       {part, "beta", "{}"},        {part, "new1", "{}"}};
    assert_list(c, part, w2, N_OF(w2), "s07 after updates");

    /* the same key name in two partitions: two independent keys */
    const char *pa = tq_test_unique("kv_s07a"), *pb = tq_test_unique("kv_s07b");
    kv_put_ok(c, pa, "same", i64_row(&r, "v", 1), "{\"p\":\"a\"}");
    tq_batch_destroy(r.b);
    kv_put_ok(c, pb, "same", i64_row(&r, "v", 2), "{\"p\":\"b\"}");
    tq_batch_destroy(r.b);
    kv_put_ok(c, pa, "only_a", i64_row(&r, "v", 3), NULL);
    tq_batch_destroy(r.b);
    kv_entry_t wab[] = {{pa, "same", "{\"p\":\"a\"}"}, {pa, "only_a", "{}"},
                        {pb, "same", "{\"p\":\"b\"}"}};
    /* all partitions, in creation order: this test's three, among any others */
    tq_kv_entries *l = list_ok(c, NULL);
    kv_entry_t wall[N_OF(w2) + N_OF(wab)];
    memcpy(wall, w2, sizeof(w2));
    memcpy(wall + N_OF(w2), wab, sizeof(wab));
    assert_entries(l, wall, N_OF(wall), false, "s07 kv_list(NULL)");
    tq_kv_entries_free(l);
    kv_entry_t wa[] = {{pa, "same", "{\"p\":\"a\"}"}, {pa, "only_a", "{}"}};
    kv_entry_t wb[] = {{pb, "same", "{\"p\":\"b\"}"}};
    assert_list(c, pa, wa, N_OF(wa), "s07 partition a");
    assert_list(c, pb, wb, N_OF(wb), "s07 partition b");
    static const char *const ks[] = {"same"};
    tq_batch *got = kv_get_ok(c, pa, 1, ks, 0, NULL);
    assert_i64_cell(got, "v", 0, 1, "s07 a/same");
    tq_batch_destroy(got);
    got = kv_get_ok(c, pb, 1, ks, 0, NULL);
    assert_i64_cell(got, "v", 0, 2, "s07 b/same");
    tq_batch_destroy(got);
    /* clearing one leaves the other */
    cr_assert(eq(int, tq_kv_clear(c, pa, 1, ks), 1), "kv_clear: %s", tq_last_error(c));
    got = kv_get_ok(c, pb, 1, ks, 0, NULL);
    assert_i64_cell(got, "v", 0, 2, "s07 b/same after clearing a/same");
    tq_batch_destroy(got);
    assert_list(c, pb, wb, N_OF(wb), "s07 partition b after clearing a/same");

    /* an unknown partition: an empty list, not an error */
    tq_kv_entries *none = ENTRIES_SENTINEL;
    int rc = tq_kv_list(c, tq_test_unique("kv_s07_nowhere"), &none);
    cr_assert(eq(int, rc, TQ_OK), "kv_list of an unknown partition: %s (%s)",
              tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, none, ENTRIES_SENTINEL), "kv_list wrote no list");
    cr_assert(ne(ptr, none, NULL), "kv_list wrote no list");
    cr_assert(eq(sz, tq_kv_entries_size(none), 0), "unknown partition: [%s]", describe(none));
    tq_kv_entries_free(none);
    tq_kv_entries_free(NULL);
}

/* ---- 8: clearing keys ---- */

static void put_four(tq_client *c, const char *part, const char *const *keys, int64_t base)
{
    int64_t v[4] = {base, base + 1, base + 2, base + 3};
    static const char *const tags[4] = {"{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"};
    tq_batch *b = batch_new(4);
    add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v);
    kv_batch_put_ok(c, part, 4, keys, b, tags);
    tq_batch_destroy(b);
}

KV_TEST(s08_clear)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s08");
    static const char *const keys[4] = {"c0", "c1", "c2", "c3"};
    put_four(c, part, keys, 10);

    /* one key */
    static const char *const k1[] = {"c1"};
    int n = tq_kv_clear(c, part, 1, k1);
    cr_assert(eq(int, n, 1), "kv_clear(c1): %s (%s)", tq_status_string(n), tq_last_error(c));
    kv_entry_t w1[] = {{part, "c0", "{\"n\":0}"}, {part, "c2", "{\"n\":2}"},
                       {part, "c3", "{\"n\":3}"}};
    assert_list(c, part, w1, N_OF(w1), "s08 after clearing c1");
    kv_get_missing(c, part, 1, k1, 0, NULL, "c1", "s08: a cleared key");
    static const char *const rest[] = {"c3", "c0", "c2"};
    tq_batch *got = kv_get_ok(c, part, 3, rest, 0, NULL);
    assert_i64_cell(got, "v", 0, 13, "s08 c3");
    assert_i64_cell(got, "v", 1, 10, "s08 c0");
    assert_i64_cell(got, "v", 2, 12, "s08 c2");
    tq_batch_destroy(got);
    /* clearing it again removes nothing */
    n = tq_kv_clear(c, part, 1, k1);
    cr_assert(eq(int, n, 0), "kv_clear(c1) again: %s", tq_last_error(c));

    /* two of four, and one unknown key */
    const char *q = tq_test_unique("kv_s08q");
    static const char *const qk[4] = {"q0", "q1", "q2", "q3"};
    put_four(c, q, qk, 20);
    static const char *const two[] = {"q3", "no_such_key", "q0"};
    n = tq_kv_clear(c, q, N_OF(two), two);
    cr_assert(eq(int, n, 2), "kv_clear(q3, no_such_key, q0): %s (%s)", tq_status_string(n),
              tq_last_error(c));
    kv_entry_t w2[] = {{q, "q1", "{\"n\":1}"}, {q, "q2", "{\"n\":2}"}};
    assert_list(c, q, w2, N_OF(w2), "s08 after clearing 2 of 4");
    static const char *const q12[] = {"q2", "q1"};
    got = kv_get_ok(c, q, 2, q12, 0, NULL);
    assert_i64_cell(got, "v", 0, 22, "s08 q2");
    assert_i64_cell(got, "v", 1, 21, "s08 q1");
    tq_batch_destroy(got);
    static const char *const q0[] = {"q0"}, *const q3[] = {"q3"};
    kv_get_missing(c, q, 1, q0, 0, NULL, "q0", "s08: cleared q0");
    kv_get_missing(c, q, 1, q3, 0, NULL, "q3", "s08: cleared q3");

    /* the partition stays: a new put works and lists after the rest */
    i64_row_t r;
    kv_put_ok(c, q, "q4", i64_row(&r, "v", 24), "{\"n\":4}");
    tq_batch_destroy(r.b);
    kv_entry_t w3[] = {{q, "q1", "{\"n\":1}"}, {q, "q2", "{\"n\":2}"}, {q, "q4", "{\"n\":4}"}};
    assert_list(c, q, w3, N_OF(w3), "s08 a put after the clear");
    static const char *const q4[] = {"q4"};
    got = kv_get_ok(c, q, 1, q4, 0, NULL);
    assert_i64_cell(got, "v", 0, 24, "s08 q4");
    tq_batch_destroy(got);
    /* the first partition was not touched by any of it */
    assert_list(c, part, w1, N_OF(w1), "s08 the other partition");
}

/* ---- 9: missing keys, fields and partitions ---- */

KV_TEST(s09_missing_is_not_found)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_s09");
    int64_t x[2] = {1, 2};
    const float y = 0.25f;
    static const char *const keys[2] = {"has_y", "no_y"};
    tq_batch *b = batch_new(2);
    add_tensor(b, "x", TQ_DTYPE_I64, 0, NULL, x);
    kv_batch_put_ok(c, part, 2, keys, b, NULL);
    tq_batch_destroy(b);
    b = batch_new(1);
    add_tensor(b, "yfield", TQ_DTYPE_F32, 0, NULL, &y);
    kv_put_ok(c, part, "has_y", b, NULL);
    tq_batch_destroy(b);

    static const char *const fx[] = {"x"}, *const fy[] = {"yfield"}, *const fxy[] = {"x", "yfield"};
    static const char *const ghost[] = {"has_y", "ghost_key"};
    kv_get_missing(c, part, 2, ghost, 0, NULL, "ghost_key", "s09: an unknown key");
    kv_get_missing(c, part, 2, ghost, 1, fx, "ghost_key", "s09: an unknown key, field x");
    static const char *const only_ghost[] = {"ghost_key"};
    kv_get_missing(c, part, 1, only_ghost, 0, NULL, "ghost_key", "s09: only an unknown key");
    static const char *const k_no_y[] = {"no_y"};
    kv_get_missing(c, part, 1, k_no_y, 1, fy, "yfield", "s09: a field the key lacks");
    kv_get_missing(c, part, 2, keys, 2, fxy, "yfield", "s09: a field one key lacks");
    static const char *const fghost[] = {"x", "ghost_field"};
    kv_get_missing(c, part, 2, keys, 2, fghost, "ghost_field", "s09: a field no key has");
    const char *nowhere = tq_test_unique("kv_s09_nowhere");
    kv_get_missing(c, nowhere, 1, k_no_y, 0, NULL, nowhere, "s09: an unknown partition");
    kv_get_missing(c, nowhere, 1, k_no_y, 1, fx, nowhere, "s09: an unknown partition, field x");
    /* no field shared by all keys: an empty intersection */
    const char *disjoint = tq_test_unique("kv_s09d");
    i64_row_t r;
    kv_put_ok(c, disjoint, "d0", i64_row(&r, "f0", 0), NULL);
    tq_batch_destroy(r.b);
    kv_put_ok(c, disjoint, "d1", i64_row(&r, "f1", 1), NULL);
    tq_batch_destroy(r.b);
    static const char *const dk[] = {"d0", "d1"};
    kv_get_missing(c, disjoint, 2, dk, 0, NULL, NULL, "s09: an empty intersection");

    /* none of it disturbed what is there */
    tq_batch *got = kv_get_ok(c, part, 2, keys, 1, fx);
    assert_i64_cell(got, "x", 0, 1, "s09 has_y x");
    assert_i64_cell(got, "x", 1, 2, "s09 no_y x");
    tq_batch_destroy(got);
    static const char *const ky[] = {"has_y"};
    got = kv_get_ok(c, part, 1, ky, 1, fy);
    assert_cell(got, "yfield", 0, &y, sizeof(y), "s09 has_y yfield");
    tq_batch_destroy(got);
}

/* ---- bad input: refused, and nothing written ---- */

KV_TEST(bad_input_writes_nothing)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_bad");
    i64_row_t base;
    kv_put_ok(c, part, "base", i64_row(&base, "x", 42), "{\"t\":0}");
    tq_batch_destroy(base.b);

    /* valid batches of 1, 2 and 3 rows of x (I64), used in every refused call */
    i64_row_t one;
    i64_row(&one, "x", 7);
    int64_t x2[2] = {8, 9}, x3[3] = {10, 11, 12};
    tq_batch *two = batch_new(2), *three = batch_new(3);
    add_tensor(two, "x", TQ_DTYPE_I64, 0, NULL, x2);
    add_tensor(three, "x", TQ_DTYPE_I64, 0, NULL, x3);
    static const char *const k1[] = {"n1"}, *const k2[] = {"n1", "n2"},
                             *const k3[] = {"n1", "base", "n2"};
    static const char *const good3[] = {"{\"g\":1}", "{\"g\":2}", "{\"g\":3}"};

    /* NULL handles */
    assert_invalid(NULL, tq_kv_put(NULL, part, "n1", one.b, NULL), "kv_put(NULL client)");
    assert_invalid(c, tq_kv_put(c, NULL, "n1", one.b, NULL), "kv_put(NULL partition)");
    assert_invalid(c, tq_kv_put(c, part, NULL, one.b, "{\"z\":1}"), "kv_put(NULL key)");
    assert_invalid(NULL, tq_kv_batch_put(NULL, part, 1, k1, one.b, NULL),
                   "kv_batch_put(NULL client)");
    assert_invalid(c, tq_kv_batch_put(c, NULL, 1, k1, one.b, NULL), "kv_batch_put(NULL partition)");
    assert_invalid(c, tq_kv_batch_put(c, part, 1, NULL, one.b, NULL), "kv_batch_put(NULL keys)");
    static const char *const k_null[] = {"n1", NULL};
    assert_invalid(c, tq_kv_batch_put(c, part, 2, k_null, two, NULL),
                   "kv_batch_put(a NULL key among keys)");

    /* nothing to write */
    assert_invalid(c, tq_kv_put(c, part, "n1", NULL, NULL), "kv_put(no fields, no tag), new key");
    assert_invalid(c, tq_kv_put(c, part, "base", NULL, NULL),
                   "kv_put(no fields, no tag), existing key");
    assert_invalid(c, tq_kv_batch_put(c, part, 2, k2, NULL, NULL),
                   "kv_batch_put(no fields, no tags)");

    /* tags that are not JSON objects: alone, with fields, on new and existing keys,
     * and one bad tag among good ones in a batch */
    static const char *const bad_tags[] = {"[1,2]", "3", "\"s\"", "{\"a\":", "", "null",
                                           "true", "{\"a\":1} trailing"};
    for (size_t i = 0; i < N_OF(bad_tags); i++) {
        const char *t = bad_tags[i];
        char what[128];
        snprintf(what, sizeof(what), "kv_put(new key, tag '%s' only)", t);
        assert_invalid(c, tq_kv_put(c, part, "n1", NULL, t), what);
        snprintf(what, sizeof(what), "kv_put(new key, fields, tag '%s')", t);
        assert_invalid(c, tq_kv_put(c, part, "n1", one.b, t), what);
        snprintf(what, sizeof(what), "kv_put(existing key, fields, tag '%s')", t);
        assert_invalid(c, tq_kv_put(c, part, "base", one.b, t), what);
        const char *tags[3] = {good3[0], t, good3[2]};
        snprintf(what, sizeof(what), "kv_batch_put(fields, tags with '%s' in the middle)", t);
        assert_invalid(c, tq_kv_batch_put(c, part, 3, k3, three, tags), what);
        snprintf(what, sizeof(what), "kv_batch_put(tags only, '%s' in the middle)", t);
        assert_invalid(c, tq_kv_batch_put(c, part, 3, k3, NULL, tags), what);
        const char *tags_last[3] = {good3[0], good3[1], t};
        snprintf(what, sizeof(what), "kv_batch_put(tags only, '%s' last)", t);
        assert_invalid(c, tq_kv_batch_put(c, part, 3, k3, NULL, tags_last), what);
    }

    /* row counts */
    assert_invalid(c, tq_kv_put(c, part, "n1", two, NULL), "kv_put(a batch of 2 rows)");
    assert_invalid(c, tq_kv_put(c, part, "base", two, "{\"z\":1}"),
                   "kv_put(existing key, a batch of 2 rows, a tag)");
    assert_invalid(c, tq_kv_batch_put(c, part, 3, k3, two, good3), "kv_batch_put(3 keys, 2 rows)");
    assert_invalid(c, tq_kv_batch_put(c, part, 2, k2, three, good3), "kv_batch_put(2 keys, 3 rows)");
    assert_invalid(c, tq_kv_batch_put(c, part, 1, k1, two, NULL), "kv_batch_put(1 key, 2 rows)");
    assert_invalid(c, tq_kv_batch_put(c, part, 0, k3, one.b, NULL), "kv_batch_put(n = 0, fields)");
    assert_invalid(c, tq_kv_batch_put(c, part, 0, k3, NULL, good3), "kv_batch_put(n = 0, tags)");

    /* a repeated key */
    static const char *const rep[] = {"n1", "n2", "n1"};
    assert_invalid(c, tq_kv_batch_put(c, part, 3, rep, three, good3),
                   "kv_batch_put(a repeated new key)");
    static const char *const rep_base[] = {"base", "n1", "base"};
    assert_invalid(c, tq_kv_batch_put(c, part, 3, rep_base, NULL, good3),
                   "kv_batch_put(a repeated existing key, tags only)");

    /* a dtype conflict on x (I64 in this partition) beside a new field that is fine */
    {
        int32_t x32[3] = {1, 2, 3};
        float fy[3] = {0.5f, 1.5f, 2.5f};
        tq_batch *b = batch_new(3);
        add_tensor(b, "fresh_y", TQ_DTYPE_F32, 0, NULL, fy);
        add_tensor(b, "x", TQ_DTYPE_I32, 0, NULL, x32);
        assert_invalid(c, tq_kv_batch_put(c, part, 3, k3, b, good3),
                       "kv_batch_put(x as I32 over I64, with a new field)");
        tq_batch_destroy(b);
        b = batch_new(1);
        add_tensor(b, "x", TQ_DTYPE_I32, 0, NULL, x32);
        assert_invalid(c, tq_kv_put(c, part, "n1", b, "{\"z\":1}"), "kv_put(new key, x as I32)");
        assert_invalid(c, tq_kv_put(c, part, "base", b, "{\"z\":1}"),
                       "kv_put(existing key, x as I32)");
        tq_batch_destroy(b);
        /* another number of dimensions, and bytes over a tensor, conflict too */
        int64_t vec[2] = {1, 2};
        b = batch_new(1);
        add_tensor(b, "x", TQ_DTYPE_I64, 1, (const int64_t[]){2}, vec);
        assert_invalid(c, tq_kv_put(c, part, "n1", b, NULL), "kv_put(x as a vector over scalars)");
        tq_batch_destroy(b);
        const void *bv[1] = {"zz"};
        const size_t bl[1] = {2};
        b = batch_new(1);
        add_bytes(b, "x", bv, bl);
        assert_invalid(c, tq_kv_put(c, part, "n1", b, NULL), "kv_put(x as bytes over I64)");
        tq_batch_destroy(b);
    }

    /* gets, lists and clears with bad arguments */
    static const char *const kbase[] = {"base"};
    tq_batch *got = BATCH_SENTINEL;
    assert_invalid(c, tq_kv_batch_get(c, part, 1, kbase, 0, NULL, NULL), "kv_batch_get(NULL batch_p)");
    assert_invalid(NULL, tq_kv_batch_get(NULL, part, 1, kbase, 0, NULL, &got),
                   "kv_batch_get(NULL client)");
    assert_invalid(c, tq_kv_batch_get(c, NULL, 1, kbase, 0, NULL, &got),
                   "kv_batch_get(NULL partition)");
    assert_invalid(c, tq_kv_batch_get(c, part, 1, NULL, 0, NULL, &got), "kv_batch_get(NULL keys)");
    assert_invalid(c, tq_kv_batch_get(c, part, 0, kbase, 0, NULL, &got), "kv_batch_get(n = 0)");
    cr_assert(eq(ptr, got, BATCH_SENTINEL), "a refused kv_batch_get wrote batch_p");
    tq_kv_entries *l = ENTRIES_SENTINEL;
    assert_invalid(NULL, tq_kv_list(NULL, part, &l), "kv_list(NULL client)");
    assert_invalid(c, tq_kv_list(c, part, NULL), "kv_list(NULL entries_p)");
    cr_assert(eq(ptr, l, ENTRIES_SENTINEL), "a refused kv_list wrote entries_p");
    assert_invalid(NULL, tq_kv_clear(NULL, part, 1, kbase), "kv_clear(NULL client)");
    assert_invalid(c, tq_kv_clear(c, NULL, 1, kbase), "kv_clear(NULL partition)");
    assert_invalid(c, tq_kv_clear(c, part, 1, NULL), "kv_clear(NULL keys)");

    /* nothing was written: base as it was, no n1, n2, fresh_y, z, g */
    kv_entry_t w[] = {{part, "base", "{\"t\":0}"}};
    assert_list(c, part, w, N_OF(w), "after every refused call");
    got = kv_get_ok(c, part, 1, kbase, 0, NULL);
    static const char *const fx[] = {"x"};
    assert_fields(got, 1, fx, "base after every refused call");
    assert_tensor_info(got, "x", TQ_DTYPE_I64, 0, NULL, "base after every refused call");
    assert_i64_cell(got, "x", 0, 42, "base x after every refused call");
    tq_batch_destroy(got);
    kv_get_missing(c, part, 1, k1, 0, NULL, "n1", "n1 after every refused call");
    static const char *const kn2[] = {"n2"};
    kv_get_missing(c, part, 1, kn2, 0, NULL, "n2", "n2 after every refused call");
    static const char *const fy[] = {"fresh_y"};
    kv_get_missing(c, part, 1, kbase, 1, fy, "fresh_y", "fresh_y after every refused call");

    /* and the same keys and batch go through once the arguments are right */
    kv_batch_put_ok(c, part, 3, k3, three, good3);
    kv_entry_t w2[] = {{part, "base", "{\"t\":0,\"g\":2}"}, {part, "n1", "{\"g\":1}"},
                       {part, "n2", "{\"g\":3}"}};
    assert_list(c, part, w2, N_OF(w2), "after the good put");
    got = kv_get_ok(c, part, 3, k3, 0, NULL);
    for (uint32_t i = 0; i < 3; i++)
        assert_i64_cell(got, "x", i, x3[i], "after the good put");
    tq_batch_destroy(got);
    tq_batch_destroy(one.b);
    tq_batch_destroy(two);
    tq_batch_destroy(three);
}

/* ---- one client shared by threads ---- */

#define THR_N     4
#define THR_ITERS 30
#define THR_KEYS  4
#define THR_LEN   16

typedef struct {
    tq_client  *c;
    const char *part;
    int         id;
    int         failed_rc; /* first failure, or 0 */
    char        what[256];
} thr_arg_t;

/* Each thread owns its keys of a partition shared with another thread: put them,
 * read them back in reverse order, see them listed, clear them, see them gone. */
static void *thr_main(void *arg)
{
    thr_arg_t *a = arg;
    char names[THR_KEYS][32], tagbuf[THR_KEYS][64];
    const char *keys[THR_KEYS], *rev[THR_KEYS], *tags[THR_KEYS];
    for (int j = 0; j < THR_KEYS; j++) {
        snprintf(names[j], sizeof(names[j]), "t%d_k%d", a->id, j);
        keys[j] = names[j];
        rev[THR_KEYS - 1 - j] = names[j];
        tags[j] = tagbuf[j];
    }
    static const int64_t shape[1] = {THR_LEN};
    for (int it = 0; it < THR_ITERS && a->failed_rc == 0; it++) {
        int64_t v[THR_KEYS][THR_LEN];
        for (int j = 0; j < THR_KEYS; j++) {
            for (int l = 0; l < THR_LEN; l++)
                v[j][l] = (int64_t)a->id << 40 | (int64_t)it << 20 | (int64_t)j << 8 | l;
            snprintf(tagbuf[j], sizeof(tagbuf[j]), "{\"thread\":%d,\"it\":%d}", a->id, it);
        }
        const char *step = "batch";
        tq_batch *b = NULL, *got = NULL;
        tq_kv_entries *l = NULL;
        int rc = tq_batch_create(THR_KEYS, &b);
        if (rc == TQ_OK)
            rc = tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, v);
        if (rc == TQ_OK) {
            step = "kv_batch_put";
            rc = tq_kv_batch_put(a->c, a->part, THR_KEYS, keys, b, tags);
        }
        if (rc == TQ_OK) {
            step = "kv_batch_get";
            rc = tq_kv_batch_get(a->c, a->part, THR_KEYS, rev, 0, NULL, &got);
        }
        if (rc == TQ_OK && tq_batch_rows(got) != THR_KEYS) {
            rc = TQ_ERR_IO;
            snprintf(a->what, sizeof(a->what), "thread %d iteration %d: %u rows", a->id, it,
                     tq_batch_rows(got));
        }
        for (int r = 0; rc == TQ_OK && r < THR_KEYS; r++) {
            size_t len = 0;
            const void *p = tq_batch_row(got, "v", (uint32_t)r, &len, NULL);
            if (p == NULL || len != sizeof(v[0]) ||
                memcmp(p, v[THR_KEYS - 1 - r], sizeof(v[0])) != 0) {
                rc = TQ_ERR_IO;
                snprintf(a->what, sizeof(a->what),
                         "thread %d iteration %d: row %d (%s) read other bytes (%zu long)", a->id,
                         it, r, rev[r], p ? len : 0);
            }
        }
        if (rc == TQ_OK) {
            step = "kv_list";
            rc = tq_kv_list(a->c, a->part, &l);
        }
        for (int j = 0; rc == TQ_OK && j < THR_KEYS; j++) {
            int seen = 0;
            for (size_t i = 0; i < tq_kv_entries_size(l); i++) {
                const char *k = tq_kv_entries_key(l, i), *t = tq_kv_entries_tag(l, i);
                if (k == NULL || strcmp(k, keys[j]) != 0)
                    continue;
                seen++;
                cJSON *tag = t ? cJSON_Parse(t) : NULL;
                const cJSON *tit = cJSON_GetObjectItemCaseSensitive(tag, "it");
                if (!cJSON_IsNumber(tit) || tit->valueint != it) {
                    rc = TQ_ERR_IO;
                    snprintf(a->what, sizeof(a->what), "thread %d iteration %d: %s has tag %s",
                             a->id, it, keys[j], t ? t : "NULL");
                }
                cJSON_Delete(tag);
            }
            if (rc == TQ_OK && seen != 1) {
                rc = TQ_ERR_IO;
                snprintf(a->what, sizeof(a->what), "thread %d iteration %d: %s listed %d times",
                         a->id, it, keys[j], seen);
            }
        }
        if (rc == TQ_OK) {
            step = "kv_clear";
            int n = tq_kv_clear(a->c, a->part, THR_KEYS, keys);
            if (n != THR_KEYS) {
                rc = n < 0 ? n : TQ_ERR_IO;
                if (n >= 0)
                    snprintf(a->what, sizeof(a->what), "thread %d iteration %d: cleared %d of %d",
                             a->id, it, n, THR_KEYS);
            }
        }
        if (rc == TQ_OK) {
            tq_batch *none = BATCH_SENTINEL;
            int r2 = tq_kv_batch_get(a->c, a->part, 1, keys, 0, NULL, &none);
            if (r2 != TQ_ERR_NOT_FOUND || none != BATCH_SENTINEL) {
                rc = TQ_ERR_IO;
                snprintf(a->what, sizeof(a->what),
                         "thread %d iteration %d: a get after the clear gave %s", a->id, it,
                         tq_status_string(r2));
                if (r2 == TQ_OK)
                    tq_batch_destroy(none);
            }
        }
        if (rc != TQ_OK && a->what[0] == '\0')
            snprintf(a->what, sizeof(a->what), "thread %d iteration %d: %s: %s (%s)", a->id, it,
                     step, tq_status_string(rc), tq_last_error(a->c));
        a->failed_rc = rc;
        tq_kv_entries_free(l);
        tq_batch_destroy(got);
        tq_batch_destroy(b);
    }
    return NULL;
}

KV_TEST(threads_share_one_client)
{
    const char *parts[2] = {tq_test_unique("kv_thr_a"), tq_test_unique("kv_thr_b")};
    char part_copy[2][128];
    for (int i = 0; i < 2; i++)
        snprintf(part_copy[i], sizeof(part_copy[i]), "%s", parts[i]);
    thr_arg_t args[THR_N];
    pthread_t threads[THR_N];
    memset(args, 0, sizeof(args));
    for (int i = 0; i < THR_N; i++) {
        args[i].c = e->c;
        args[i].part = part_copy[i % 2];
        args[i].id = i;
        cr_assert(eq(int, pthread_create(&threads[i], NULL, thr_main, &args[i]), 0));
    }
    for (int i = 0; i < THR_N; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < THR_N; i++)
        cr_expect(eq(int, args[i].failed_rc, 0), "%s", args[i].what);
    for (int i = 0; i < THR_N; i++)
        cr_assert(eq(int, args[i].failed_rc, 0), "see above");
    /* every key was cleared; the partitions stay and are empty */
    for (int i = 0; i < 2; i++)
        assert_list(e->c, part_copy[i], NULL, 0, "after the threads");
}

/* ---- non-blocking requests ---- */

#define NB_REQS 16
#define NB_KEYS 4
#define NB_LEN  8

static int64_t nb_value(int req, int key, int l) { return req * 10000 + key * 100 + l; }

/* The request is complete with status want: wait, test and a zero wait all say so. */
static void assert_done(tq_request *r, int want, const char *what)
{
    int rc = tq_request_wait(r, REQ_TIMEOUT_MS);
    cr_assert(eq(int, rc, want), "%s: tq_request_wait: %s", what, tq_status_string(rc));
    rc = tq_request_test(r);
    cr_assert(eq(int, rc, want), "%s: tq_request_test after completion: %s", what,
              tq_status_string(rc));
    rc = tq_request_wait(r, 0);
    cr_assert(eq(int, rc, want), "%s: tq_request_wait(0) after completion: %s", what,
              tq_status_string(rc));
}

static void assert_in_flight_or_done(tq_request *r, const char *what)
{
    int rc = tq_request_test(r);
    cr_assert(rc == TQ_OK || rc == TQ_ERR_TIMEOUT, "%s: tq_request_test in flight: %s (%d)", what,
              tq_status_string(rc), rc);
}

KV_TEST(nonblocking_requests)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("kv_nb");
    static int64_t vals[NB_REQS][NB_KEYS][NB_LEN];
    static char names[NB_REQS][NB_KEYS][24], tagtext[NB_REQS][NB_KEYS][32];
    const char *keys[NB_REQS][NB_KEYS], *rev[NB_REQS][NB_KEYS], *tags[NB_REQS][NB_KEYS];
    static const int64_t shape[1] = {NB_LEN};
    tq_batch *puts[NB_REQS];
    tq_request *req[NB_REQS];

    /* 16 puts in flight at once */
    for (int i = 0; i < NB_REQS; i++) {
        for (int k = 0; k < NB_KEYS; k++) {
            for (int l = 0; l < NB_LEN; l++)
                vals[i][k][l] = nb_value(i, k, l);
            snprintf(names[i][k], sizeof(names[i][k]), "nb%d_%d", i, k);
            snprintf(tagtext[i][k], sizeof(tagtext[i][k]), "{\"req\":%d,\"key\":%d}", i, k);
            keys[i][k] = names[i][k];
            rev[i][NB_KEYS - 1 - k] = names[i][k];
            tags[i][k] = tagtext[i][k];
        }
        puts[i] = batch_new(NB_KEYS);
        add_tensor(puts[i], "v", TQ_DTYPE_I64, 1, shape, vals[i]);
        req[i] = REQUEST_SENTINEL;
        int rc = tq_kv_batch_put_nb(c, part, NB_KEYS, keys[i], puts[i], tags[i], &req[i]);
        cr_assert(eq(int, rc, TQ_OK), "kv_batch_put_nb %d: %s (%s)", i, tq_status_string(rc),
                  tq_last_error(c));
        cr_assert(ne(ptr, req[i], REQUEST_SENTINEL), "kv_batch_put_nb %d wrote no request", i);
        cr_assert(ne(ptr, req[i], NULL), "kv_batch_put_nb %d wrote no request", i);
        assert_in_flight_or_done(req[i], "put");
    }
    for (int i = 0; i < NB_REQS; i++) {
        char what[32];
        snprintf(what, sizeof(what), "put %d", i);
        assert_done(req[i], TQ_OK, what);
        cr_assert(eq(ptr, tq_request_take_batch(req[i]), NULL), "%s: a put gave a batch", what);
        tq_request_free(req[i]);
        tq_batch_destroy(puts[i]); /* borrowed until completion only */
    }
    /* every key there once, with its tag (requests may land in any order) */
    tq_kv_entries *l = list_ok(c, part);
    cr_assert(eq(sz, tq_kv_entries_size(l), (size_t)NB_REQS * NB_KEYS), "[%s]", describe(l));
    for (int i = 0; i < NB_REQS; i++)
        for (int k = 0; k < NB_KEYS; k++) {
            int seen = 0;
            for (size_t j = 0; j < tq_kv_entries_size(l); j++) {
                const char *key = tq_kv_entries_key(l, j);
                if (key == NULL || strcmp(key, names[i][k]) != 0)
                    continue;
                seen++;
                assert_tag(tq_kv_entries_tag(l, j), tagtext[i][k], names[i][k]);
            }
            cr_assert(eq(int, seen, 1), "%s listed %d times", names[i][k], seen);
        }
    tq_kv_entries_free(l);

    /* 16 gets in flight at once, each in reverse key order */
    for (int i = 0; i < NB_REQS; i++) {
        req[i] = REQUEST_SENTINEL;
        int rc = tq_kv_batch_get_nb(c, part, NB_KEYS, rev[i], 0, NULL, &req[i]);
        cr_assert(eq(int, rc, TQ_OK), "kv_batch_get_nb %d: %s (%s)", i, tq_status_string(rc),
                  tq_last_error(c));
        cr_assert(ne(ptr, req[i], REQUEST_SENTINEL), "kv_batch_get_nb %d wrote no request", i);
        cr_assert(ne(ptr, req[i], NULL), "kv_batch_get_nb %d wrote no request", i);
        assert_in_flight_or_done(req[i], "get");
    }
    for (int i = 0; i < NB_REQS; i++) {
        char what[48];
        snprintf(what, sizeof(what), "get %d", i);
        assert_done(req[i], TQ_OK, what);
        tq_batch *got = tq_request_take_batch(req[i]);
        cr_assert(ne(ptr, got, NULL), "%s: no batch", what);
        cr_assert(eq(ptr, tq_request_take_batch(req[i]), NULL), "%s: the batch was given twice",
                  what);
        tq_request_free(req[i]);
        cr_assert(eq(u32, tq_batch_rows(got), NB_KEYS), "%s", what);
        for (uint32_t r = 0; r < NB_KEYS; r++) {
            snprintf(what, sizeof(what), "get %d row %u (%s)", i, r, rev[i][r]);
            assert_cell(got, "v", r, vals[i][NB_KEYS - 1 - r], sizeof(vals[i][0]), what);
        }
        tq_batch_destroy(got); /* the caller owns it, after the request is gone too */
    }

    /* a get of an unknown key completes with TQ_ERR_NOT_FOUND */
    static const char *const ghost[] = {"nb0_0", "nb_ghost"};
    tq_request *r = REQUEST_SENTINEL;
    int rc = tq_kv_batch_get_nb(c, part, 2, ghost, 0, NULL, &r);
    cr_assert(eq(int, rc, TQ_OK), "kv_batch_get_nb(unknown key): the call itself: %s",
              tq_status_string(rc));
    cr_assert(ne(ptr, r, REQUEST_SENTINEL));
    cr_assert(ne(ptr, r, NULL));
    assert_done(r, TQ_ERR_NOT_FOUND, "get of an unknown key");
    cr_assert(eq(ptr, tq_request_take_batch(r), NULL), "a failed get gave a batch");
    tq_request_free(r);

    /* freed without a wait: the free waits, and the writes are there after it */
    i64_row_t one;
    r = REQUEST_SENTINEL;
    rc = tq_kv_put_nb(c, part, "freed_early", i64_row(&one, "v2", 77), "{\"early\":1}", &r);
    cr_assert(eq(int, rc, TQ_OK), "kv_put_nb: %s (%s)", tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, r, REQUEST_SENTINEL));
    tq_request_free(r);
    tq_batch_destroy(one.b);
    int64_t two_v[2] = {5, 6};
    tq_batch *two = batch_new(2);
    add_tensor(two, "v2", TQ_DTYPE_I64, 0, NULL, two_v);
    static const char *const two_keys[] = {"freed_b0", "freed_b1"};
    r = REQUEST_SENTINEL;
    rc = tq_kv_batch_put_nb(c, part, 2, two_keys, two, NULL, &r);
    cr_assert(eq(int, rc, TQ_OK), "kv_batch_put_nb: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    tq_request_free(r);
    tq_batch_destroy(two);
    static const char *const early[] = {"freed_b1", "freed_early", "freed_b0"};
    tq_batch *got = kv_get_ok(c, part, 3, early, 0, NULL);
    assert_i64_cell(got, "v2", 0, 6, "freed_b1");
    assert_i64_cell(got, "v2", 1, 77, "freed_early");
    assert_i64_cell(got, "v2", 2, 5, "freed_b0");
    tq_batch_destroy(got);
    /* a get freed without a wait too: its batch goes with it */
    r = NULL;
    cr_assert(eq(int, tq_kv_batch_get_nb(c, part, 3, early, 0, NULL, &r), TQ_OK));
    tq_request_free(r);

    /* argument errors come from the call itself, and make no request */
    r = REQUEST_SENTINEL;
    one.b = NULL;
    i64_row(&one, "v2", 1);
    static const char *const k_one[] = {"nb_bad"};
    assert_invalid(c, tq_kv_batch_put_nb(c, part, 0, k_one, one.b, NULL, &r),
                   "kv_batch_put_nb(n = 0)");
    assert_invalid(c, tq_kv_put_nb(c, part, "nb_bad", NULL, NULL, &r),
                   "kv_put_nb(no fields, no tag)");
    assert_invalid(c, tq_kv_put_nb(c, part, "nb_bad", one.b, "[1]", &r), "kv_put_nb(tag [1])");
    assert_invalid(c, tq_kv_batch_get_nb(c, part, 0, k_one, 0, NULL, &r), "kv_batch_get_nb(n = 0)");
    assert_invalid(c, tq_kv_batch_get_nb(c, NULL, 1, k_one, 0, NULL, &r),
                   "kv_batch_get_nb(NULL partition)");
    cr_assert(eq(ptr, r, REQUEST_SENTINEL), "a refused call wrote req_p");
    assert_invalid(c, tq_kv_put_nb(c, part, "nb_bad", one.b, NULL, NULL),
                   "kv_put_nb(NULL req_p)");
    assert_invalid(c, tq_kv_batch_get_nb(c, part, 1, k_one, 0, NULL, NULL),
                   "kv_batch_get_nb(NULL req_p)");
    tq_batch_destroy(one.b);
    kv_get_missing(c, part, 1, k_one, 0, NULL, "nb_bad", "nb_bad after the refused calls");
    tq_request_free(NULL);
}

/* ---- listings longer than one answer ---- */

/* Key i of a long listing: its number, then padding to len bytes. */
static void long_key(char *out, size_t len, uint32_t i)
{
    int w = snprintf(out, len + 1, "%010u", i);
    memset(out + w, 'k', len - (size_t)w);
    out[len] = '\0';
}

/* Put keys [0, n) of key_len bytes to part, tags only, in batches. */
static void put_long_keys(tq_client *c, const char *part, uint32_t n, size_t key_len)
{
    enum { BATCH = 8192 };
    char *text = malloc((size_t)BATCH * (key_len + 1));
    const char **keys = malloc(BATCH * sizeof(char *));
    const char **tags = calloc(BATCH, sizeof(char *)); /* all NULL: empty tags */
    cr_assert(text != NULL && keys != NULL && tags != NULL);
    for (uint32_t first = 0; first < n; first += BATCH) {
        uint32_t m = n - first < BATCH ? n - first : BATCH;
        for (uint32_t i = 0; i < m; i++) {
            keys[i] = text + (size_t)i * (key_len + 1);
            long_key((char *)keys[i], key_len, first + i);
        }
        int rc = tq_kv_batch_put(c, part, m, keys, NULL, tags);
        cr_assert(eq(int, rc, TQ_OK), "kv_batch_put of keys %u..%u: %s (%s)", first,
                  first + m - 1, tq_status_string(rc), tq_last_error(c));
    }
    free(text);
    free(keys);
    free(tags);
}

/* Entries [0, size) of l are keys [first, first + size) of part, with empty tags. */
static void assert_long_keys(const tq_kv_entries *l, const char *part, uint32_t first,
                             size_t key_len, const char *what)
{
    char want[TQ_WIRE_NAME_MAX + 1];
    for (size_t i = 0; i < tq_kv_entries_size(l); i++) {
        long_key(want, key_len, first + (uint32_t)i);
        const char *p = tq_kv_entries_partition(l, i), *k = tq_kv_entries_key(l, i),
                   *t = tq_kv_entries_tag(l, i);
        if (p == NULL || k == NULL || t == NULL || strcmp(p, part) != 0 ||
            strcmp(k, want) != 0 || strcmp(t, "{}") != 0)
            cr_assert(false, "%s: entry %zu is %s/%.16s... %s, want %s/%.16s... {}", what, i,
                      p ? p : "(null)", k ? k : "(null)", t ? t : "(null)", part, want);
    }
}

/*
 * 327,680 keys of 250 bytes: their listing takes 88 MB on the wire, past the
 * 64 MiB frame limit (the old code's controller closed the connection).
 * tq_kv_list pages through it whole and in order; a page by itself is
 * bounded; a paged walk with a limit gives the same list. TQ_TEST_KV_LIST_KEYS
 * sets the count (the sanitizer build's CI runs it smaller).
 */
Test(kv_list, past_the_frame_limit, .timeout = 300)
{
    const size_t key_len = 250;
    const char *env = getenv("TQ_TEST_KV_LIST_KEYS");
    uint32_t n = env ? (uint32_t)strtoul(env, NULL, 10) : 327680;
    cr_assert(lt(u32, 0, n));
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "16M"), 0));
    tq_client *c;
    cr_assert(eq(int, tq_open(cl.address, &c), TQ_OK), "%s", tq_last_error(NULL));
    const char *part = "long";
    uint64_t t0 = tq_test_now_ms();
    put_long_keys(c, part, n, key_len);
    uint64_t put_ms = tq_test_now_ms() - t0;
    /* the whole list as one answer: count, entries (name, key, "{}"), cursor */
    uint64_t wire = 4 + (uint64_t)n * (2 + strlen(part) + 2 + key_len + 4 + 2) + 2;

    t0 = tq_test_now_ms();
    tq_kv_entries *l = NULL;
    int rc = tq_kv_list(c, part, &l);
    uint64_t list_ms = tq_test_now_ms() - t0;
    cr_assert(eq(int, rc, TQ_OK), "kv_list of %u keys (%llu bytes): %s (%s)", n,
              (unsigned long long)wire, tq_status_string(rc), tq_last_error(c));
    cr_assert(eq(sz, tq_kv_entries_size(l), n), "kv_list listed %zu of %u keys",
              tq_kv_entries_size(l), n);
    cr_assert(eq(ptr, (void *)tq_kv_entries_cursor(l), NULL), "a whole listing has no cursor");
    assert_long_keys(l, part, 0, key_len, "kv_list");
    tq_kv_entries_free(l);
    /* every partition: the same keys */
    cr_assert(eq(int, tq_kv_list(c, NULL, &l), TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(sz, tq_kv_entries_size(l), n));
    assert_long_keys(l, part, 0, key_len, "kv_list(NULL)");
    tq_kv_entries_free(l);

    /* one page with no limit: what one answer carries, and a cursor when more follow */
    cr_assert(eq(int, tq_kv_list_page(c, part, NULL, 0, &l), TQ_OK), "%s", tq_last_error(c));
    size_t first_page = tq_kv_entries_size(l);
    cr_assert(lt(sz, 0, first_page));
    cr_assert(le(u64, (uint64_t)first_page * (key_len + 12), TQ_WIRE_MAX_BODY),
              "a page of %zu entries", first_page);
    if (wire > TQ_WIRE_MAX_BODY)
        cr_assert(ne(ptr, (void *)tq_kv_entries_cursor(l), NULL), "a first page of %zu of %u "
                  "keys had no cursor", first_page, n);
    assert_long_keys(l, part, 0, key_len, "first page");
    tq_kv_entries_free(l);

    /* a walk of pages of at most 50,000: the same list, page after page */
    t0 = tq_test_now_ms();
    char *cursor = NULL;
    uint32_t seen = 0, pages = 0;
    do {
        rc = tq_kv_list_page(c, part, cursor, 50000, &l);
        cr_assert(eq(int, rc, TQ_OK), "page %u: %s (%s)", pages, tq_status_string(rc),
                  tq_last_error(c));
        cr_assert(le(sz, tq_kv_entries_size(l), 50000));
        assert_long_keys(l, part, seen, key_len, "a page of 50,000");
        seen += (uint32_t)tq_kv_entries_size(l);
        free(cursor);
        cursor = tq_kv_entries_cursor(l) ? strdup(tq_kv_entries_cursor(l)) : NULL;
        tq_kv_entries_free(l);
        pages++;
    } while (cursor != NULL && pages <= n);
    cr_assert(eq(u32, seen, n), "the pages listed %u of %u keys", seen, n);
    fprintf(stderr, "kv_list: %u keys of %zu bytes (%.1f MB as one answer) put in %llu ms, "
            "listed in %llu ms; a first page holds %zu; %u pages of <= 50,000 in %llu ms\n", n,
            key_len, wire / 1e6, (unsigned long long)put_ms, (unsigned long long)list_ms,
            first_page, pages, (unsigned long long)(tq_test_now_ms() - t0));
    tq_close(c);
    cr_assert(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* Number of key "k<i>" in a listing entry, or -1. */
static int key_number(const char *k)
{
    return k != NULL && k[0] == 'k' ? atoi(k + 1) : -1;
}

/*
 * Pages of 7 over two partitions while keys come and go between pages: the
 * key a cursor names is cleared, keys not listed yet are cleared, new keys
 * are put. Every key there from start to end is listed exactly once, all in
 * order (partitions in creation order, keys in insertion order), no key twice,
 * none that was cleared before its page; the last page has no cursor.
 */
KV_TEST(list_pages_stay_consistent)
{
    tq_client *c = e->c;
    enum { A_KEYS = 40, B_KEYS = 25, LIMIT = 7 };
    const char *pa = tq_test_unique("kv_pages_a"), *pb = tq_test_unique("kv_pages_b");
    char name[32];
    const char *tag = "{\"n\":1}";
    for (int i = 0; i < A_KEYS + B_KEYS; i++) {
        snprintf(name, sizeof(name), "k%d", i);
        const char *k = name;
        cr_assert(eq(int, tq_kv_batch_put(c, i < A_KEYS ? pa : pb, 1, &k, NULL, &tag), TQ_OK),
                  "%s", tq_last_error(c));
    }
    bool listed[A_KEYS + B_KEYS + 64] = {false}, cleared[A_KEYS + B_KEYS + 64] = {false};
    int last = -1, added = 0, pages = 0;
    char *cursor = NULL;
    do {
        tq_kv_entries *l = NULL;
        int rc = tq_kv_list_page(c, NULL, cursor, LIMIT, &l);
        cr_assert(eq(int, rc, TQ_OK), "page %d: %s (%s)", pages, tq_status_string(rc),
                  tq_last_error(c));
        cr_assert(le(sz, tq_kv_entries_size(l), LIMIT), "page %d: %zu entries", pages,
                  tq_kv_entries_size(l));
        int last_key = -1;
        const char *last_part = NULL;
        for (size_t i = 0; i < tq_kv_entries_size(l); i++) {
            const char *p = tq_kv_entries_partition(l, i);
            if (strcmp(p, pa) != 0 && strcmp(p, pb) != 0)
                continue; /* another test's */
            int k = key_number(tq_kv_entries_key(l, i));
            cr_assert(k >= 0 && k < A_KEYS + B_KEYS + 64, "page %d: key %s", pages,
                      tq_kv_entries_key(l, i));
            cr_assert(not(listed[k]), "page %d: key k%d listed twice", pages, k);
            cr_assert(not(cleared[k]), "page %d: key k%d listed after it was cleared", pages, k);
            /* keys are numbered in listing order: a, then b, then the new ones at b's end */
            cr_assert(lt(int, last, k), "page %d: k%d after k%d", pages, k, last);
            listed[k] = true;
            last = k;
            last_key = k;
            last_part = strcmp(p, pa) == 0 ? pa : pb; /* l is freed below */
        }
        free(cursor);
        cursor = tq_kv_entries_cursor(l) ? strdup(tq_kv_entries_cursor(l)) : NULL;
        tq_kv_entries_free(l);
        pages++;
        if (cursor == NULL)
            break;
        /* between pages: clear the key the cursor names, and one not listed yet ... */
        if (last_key >= 0) {
            snprintf(name, sizeof(name), "k%d", last_key);
            const char *k = name;
            cr_assert(eq(int, tq_kv_clear(c, last_part, 1, &k), 1), "%s", tq_last_error(c));
        }
        int ahead = last + 3;
        if (ahead < A_KEYS + B_KEYS && !cleared[ahead]) {
            snprintf(name, sizeof(name), "k%d", ahead);
            const char *k = name;
            cr_assert(eq(int, tq_kv_clear(c, ahead < A_KEYS ? pa : pb, 1, &k), 1), "%s",
                      tq_last_error(c));
            cleared[ahead] = true;
        }
        /* ... and put a new key at the end of the last partition */
        if (added < 64) {
            snprintf(name, sizeof(name), "k%d", A_KEYS + B_KEYS + added++);
            const char *k = name;
            cr_assert(eq(int, tq_kv_batch_put(c, pb, 1, &k, NULL, &tag), TQ_OK), "%s",
                      tq_last_error(c));
        }
    } while (pages < 200);
    cr_assert(eq(ptr, cursor, NULL), "the listing did not end in %d pages", pages);
    for (int k = 0; k < A_KEYS + B_KEYS; k++)
        cr_assert(listed[k] || cleared[k], "key k%d, there all along, was never listed", k);
    /* new keys at the end of the last partition are listed once each: the
     * walk catches up with them */
    for (int k = A_KEYS + B_KEYS; k < A_KEYS + B_KEYS + added; k++)
        cr_assert(listed[k], "new key k%d, put at the end before the last page, not listed", k);

    /* a cursor no page gave is refused, naming it */
    tq_kv_entries *l = ENTRIES_SENTINEL;
    cr_assert(eq(int, tq_kv_list_page(c, pa, "not a cursor", 0, &l), TQ_ERR_INVALID));
    cr_assert(eq(ptr, l, ENTRIES_SENTINEL), "a refused page wrote entries_p");
    cr_assert(strstr(tq_last_error(c), "cursor") != NULL, "error: %s", tq_last_error(c));
}

/* ---- tq_kv_batch_put_meta: the put's answer is the meta of its keys ---- */

/* What TransferQueue's kv_put returns, from the one round trip: every field
 * the keys have now (cumulative over puts), their merged tags, their keys; and
 * the meta reads back what was put. */
KV_TEST(put_meta_is_cumulative)
{
    tq_client *c = e->c;
    const char *part = "put_meta";
    const char *key = "k";
    i64_row_t a, b;
    tq_meta *m = NULL;
    const char *tag1 = "{\"step\":1}", *tag2 = "{\"status\":\"run\"}";
    cr_assert(eq(int, tq_kv_batch_put_meta(c, part, 1, &key, i64_row(&a, "ids", 11), &tag1, &m),
                 TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(u32, tq_meta_rows(m), 1));
    cr_assert(eq(u32, tq_meta_num_fields(m), 1));
    cr_assert(eq(str, (char *)tq_meta_field_name(m, 0), "ids"));
    cr_assert(eq(str, (char *)tq_meta_key(m, 0), "k"));
    assert_tag(tq_meta_custom(m, 0), tag1, "first put");
    tq_meta_free(m);
    tq_batch_destroy(a.b);

    cr_assert(eq(int, tq_kv_batch_put_meta(c, part, 1, &key, i64_row(&b, "mask", 22), &tag2, &m),
                 TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(u32, tq_meta_num_fields(m), 2), "the fields of both puts");
    assert_tag(tq_meta_custom(m, 0), "{\"step\":1,\"status\":\"run\"}", "merged");
    tq_batch *got = NULL;
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    assert_i64_cell(got, "ids", 0, 11, "ids");
    assert_i64_cell(got, "mask", 0, 22, "mask");
    tq_batch_destroy(got);
    tq_meta_free(m);
    tq_batch_destroy(b.b);

    /* a tag-only put of a new key: a meta of no field */
    const char *fresh = "tag-only", *tag3 = "{\"t\":3}";
    cr_assert(eq(int, tq_kv_batch_put_meta(c, part, 1, &fresh, NULL, &tag3, &m), TQ_OK), "%s",
              tq_last_error(c));
    cr_assert(eq(u32, tq_meta_num_fields(m), 0));
    assert_tag(tq_meta_custom(m, 0), tag3, "tag-only");
    tq_meta_free(m);

    /* its non-blocking twin answers the same, through tq_request_take_meta */
    tq_request *r = NULL;
    cr_assert(eq(int, tq_kv_batch_put_meta_nb(c, part, 1, &key, NULL, &tag3, &r), TQ_OK));
    cr_assert(eq(int, tq_request_wait(r, -1), TQ_OK), "%s", tq_last_error(c));
    m = tq_request_take_meta(r);
    cr_assert(ne(ptr, m, NULL));
    cr_assert(eq(u32, tq_meta_num_fields(m), 2));
    assert_tag(tq_meta_custom(m, 0), "{\"step\":1,\"status\":\"run\",\"t\":3}", "nb");
    tq_meta_free(m);
    tq_request_free(r);

    /* bad input: nothing is written */
    m = (tq_meta *)(uintptr_t)0x5e61;
    cr_assert(eq(int, tq_kv_batch_put_meta(c, part, 1, &key, NULL, &tag3, NULL), TQ_ERR_INVALID));
    const char *none = "never";
    cr_assert(eq(int, tq_kv_batch_put_meta(c, part, 1, &none, NULL, NULL, &m), TQ_ERR_INVALID));
    cr_assert(eq(ptr, m, (tq_meta *)(uintptr_t)0x5e61), "a refused put wrote meta_p");
    int64_t ix = 0;
    cr_assert(eq(int, tq_kv_indexes(c, part, 1, &none, 0, &ix), TQ_OK));
    cr_assert(eq(i64, ix, -1), "the refused key exists");
}
