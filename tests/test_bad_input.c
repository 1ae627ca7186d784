/* test_bad_input.c: NULL and out-of-range arguments to every public call, and
 * malformed frames on a raw socket to a real tq-controller. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"
#include "wire.h"

static tq_test_cluster cluster;
static tq_client      *client;

static void setup(void)
{
    cr_assert(eq(int, tq_test_cluster_start(&cluster, 1, "64M"), 0),
              "cannot start tq-controller and tq-storage (see stderr)");
    int rc = tq_open(cluster.address, &client);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", cluster.address, tq_status_string(rc));
}

/* After a test that passed: the daemons must exit cleanly on SIGTERM. */
static void finish_cluster(void)
{
    tq_close(client);
    client = NULL;
    cr_assert(eq(int, tq_test_cluster_stop(&cluster), 0),
              "a daemon did not exit cleanly on SIGTERM (see stderr)");
}

/* Whatever a failed test left behind (Criterion ignores asserts here). */
static void teardown(void)
{
    tq_close(client);
    client = NULL;
    tq_test_cluster_stop(&cluster);
}

/* A test against a cluster of one controller and one storage unit. */
#define CLUSTER_TEST(suite, name)                                                        \
    static void suite##_##name##_body(void);                                             \
    Test(suite, name, .init = setup, .fini = teardown, .timeout = 60)                   \
    {                                                                                    \
        suite##_##name##_body();                                                         \
        finish_cluster();                                                                \
    }                                                                                    \
    static void suite##_##name##_body(void)

#define SENTINEL(type) ((type *)(uintptr_t)0x5e5e)

/* A call on c that must fail with `want` and leave a message. */
#define expect_fail(c, call, want)                                                               \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        cr_expect(eq(int, rc_, (want)), "%s", #call);                                            \
        if ((c) != NULL && rc_ < 0)                                                              \
            cr_expect(eq(int, tq_last_error(c)[0] != '\0', 1), "no tq_last_error after %s",      \
                      #call);                                                                    \
    } while (0)

/* A normal client still works against the controller: open, put, get_meta, get_data. */
static void assert_controller_serves(void)
{
    cr_assert(tq_test_cluster_controller_alive(&cluster), "the controller died");
    tq_client *c = NULL;
    int rc = tq_open(cluster.address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open after abuse: %s", tq_status_string(rc));
    const char *part = tq_test_unique("after");
    int64_t v[3] = {11, 22, 33}, out[3] = {-1, -1, -1};
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(3, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    rc = tq_put(c, part, b, NULL, out);
    cr_assert(eq(int, rc, TQ_OK), "tq_put after abuse: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    tq_batch_destroy(b);
    static const char *const fields[] = {"v"};
    tq_fetch_args_t a = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                         .batch_size = 3, .timeout_ms = 2000};
    tq_meta *m = NULL;
    rc = tq_get_meta(c, &a, &m);
    cr_assert(eq(int, rc, TQ_OK), "tq_get_meta after abuse: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    tq_batch *got = NULL;
    rc = tq_get_data(c, m, &got);
    cr_assert(eq(int, rc, TQ_OK), "tq_get_data after abuse: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    for (uint32_t i = 0; i < 3; i++) {
        int64_t ix = tq_meta_indexes(m)[i], val;
        size_t bytes = 0;
        const void *p = tq_batch_row(got, "v", i, &bytes, NULL);
        cr_assert(ne(ptr, (void *)p, NULL));
        cr_assert(eq(sz, bytes, 8));
        memcpy(&val, p, 8);
        cr_assert(ge(i64, ix, 0));
        cr_assert(lt(i64, ix, 3));
        cr_assert(eq(i64, val, v[ix]));
    }
    tq_batch_destroy(got);
    tq_meta_free(m);
    tq_close(c);
}

/* ---- arguments ---- */

Test(bad_args, status_strings, .timeout = 60)
{
    for (int s = 0; s >= TQ_ERR_IO; s--) {
        const char *t = tq_status_string(s);
        cr_assert(ne(ptr, (void *)t, NULL));
        cr_assert(ne(str, (char *)t, ""), "status %d", s);
    }
    cr_assert(ne(ptr, (void *)tq_status_string(12345), NULL));
    cr_assert(ne(ptr, (void *)tq_status_string(-12345), NULL));
    cr_assert(eq(str, (char *)tq_last_error(NULL), ""));
}

Test(bad_args, open_garbage_targets, .timeout = 60)
{
    tq_client *c = SENTINEL(tq_client);
    static const char *const garbage[] = {
        "garbage", "127.0.0.1", "127.0.0.1:", ":7781", "127.0.0.1:0", "127.0.0.1:65536",
        "127.0.0.1:99999999999", "127.0.0.1:-1", "127.0.0.1:abc", "127.0.0.1:80x", "tcp://",
        "tcp://:1", "udp://127.0.0.1:1", "/nonexistent/dir/client.json",
    };
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        int rc = tq_open(garbage[i], &c);
        cr_expect(eq(int, rc, TQ_ERR_INVALID), "tq_open(\"%s\")", garbage[i]);
        cr_expect(eq(ptr, c, SENTINEL(tq_client)), "tq_open(\"%s\") wrote client_p", garbage[i]);
    }
    /* a very long target */
    size_t n = 100000;
    char *longt = malloc(n + 1);
    memset(longt, 'a', n);
    longt[n] = '\0';
    cr_expect(eq(int, tq_open(longt, &c), TQ_ERR_INVALID), "a 100000-byte target");
    memcpy(longt + n - 5, ":1234", 5);
    cr_expect(lt(int, tq_open(longt, &c), 0), "a 100000-byte host");
    cr_expect(eq(ptr, c, SENTINEL(tq_client)));
    free(longt);
    /* a config file that is not a JSON object */
    char path[] = "/tmp/tq-bad-XXXXXX.json";
    int fd = mkstemps(path, 5);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(int, (int)write(fd, "[1,2", 4), 4));
    close(fd);
    cr_expect(eq(int, tq_open(path, &c), TQ_ERR_INVALID), "a malformed config file");
    cr_expect(eq(ptr, c, SENTINEL(tq_client)));
    unlink(path);
    /* nothing listens there */
    int rc = tq_open("127.0.0.1:1", &c);
    cr_expect(eq(int, rc, TQ_ERR_CONNECTION), "tq_open of a closed port");
    cr_expect(eq(ptr, c, SENTINEL(tq_client)));
    cr_expect(eq(int, tq_open("embedded", NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_open("127.0.0.1:1", NULL), TQ_ERR_INVALID));
    /* NULL is ignored */
    tq_close(NULL);
}

Test(bad_args, batch, .timeout = 60)
{
    tq_batch *b = SENTINEL(tq_batch);
    cr_expect(eq(int, tq_batch_create(0, &b), TQ_ERR_INVALID));
    cr_expect(eq(ptr, b, SENTINEL(tq_batch)));
    cr_expect(eq(int, tq_batch_create(1, NULL), TQ_ERR_INVALID));
    tq_batch_destroy(NULL);

    cr_assert(eq(int, tq_batch_create(2, &b), TQ_OK));
    int32_t data[16] = {0};
    int64_t shape[TQ_MAX_NDIM + 1] = {2, 1, 1, 1, 1, 1, 1, 1, 1};
    int64_t neg[1] = {-1};
    char name256[257];
    memset(name256, 'n', 256);
    name256[256] = '\0';
    expect_fail(NULL, tq_batch_add_tensor(NULL, "f", TQ_DTYPE_I32, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, NULL, TQ_DTYPE_I32, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "", TQ_DTYPE_I32, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, name256, TQ_DTYPE_I32, 1, shape, data),
                TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", (tq_dtype_t)99, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", (tq_dtype_t)-1, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_BYTES, 1, shape, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, TQ_MAX_NDIM + 1, shape, data),
                TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, 1, NULL, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, 1, neg, data), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, 1, shape, NULL), TQ_ERR_INVALID);
    int64_t huge[2] = {INT64_MAX / 2, 4};
    expect_fail(NULL, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, 2, huge, data), TQ_ERR_INVALID);
    cr_expect(eq(u32, tq_batch_num_fields(b), 0), "a refused field was added");

    char name255[256];
    memset(name255, 'n', 255);
    name255[255] = '\0';
    cr_expect(eq(int, tq_batch_add_tensor(b, name255, TQ_DTYPE_I32, 1, shape, data), TQ_OK),
              "a 255-byte name is valid");
    expect_fail(NULL, tq_batch_add_tensor(b, name255, TQ_DTYPE_I32, 1, shape, data),
                TQ_ERR_EXISTS);

    const void *rows[2] = {data, data};
    int64_t nshapes[2] = {1, 2}, nneg[2] = {1, -2};
    expect_fail(NULL, tq_batch_add_nested(NULL, "n", TQ_DTYPE_I32, 1, nshapes, rows),
                TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_nested(b, NULL, TQ_DTYPE_I32, 1, nshapes, rows), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_nested(b, "n", TQ_DTYPE_I32, 1, NULL, rows), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_nested(b, "n", TQ_DTYPE_I32, 1, nshapes, NULL), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_nested(b, "n", TQ_DTYPE_I32, 1, nneg, rows), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_nested(b, "n", TQ_DTYPE_BYTES, 1, nshapes, rows),
                TQ_ERR_INVALID);
    const void *null_rows[2] = {data, NULL};
    expect_fail(NULL, tq_batch_add_nested(b, "n", TQ_DTYPE_I32, 1, nshapes, null_rows),
                TQ_ERR_INVALID);

    const void *vals[2] = {"ab", NULL};
    size_t lens[2] = {2, 3};
    expect_fail(NULL, tq_batch_add_bytes(NULL, "s", vals, lens), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_bytes(b, NULL, vals, lens), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_bytes(b, "s", NULL, lens), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_bytes(b, "s", vals, NULL), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_add_bytes(b, "s", vals, lens), TQ_ERR_INVALID); /* NULL, 3 bytes */
    cr_expect(eq(u32, tq_batch_num_fields(b), 1), "a refused field was added");

    tq_field_info_t info;
    memset(&info, 0xab, sizeof(info));
    tq_field_info_t before = info;
    expect_fail(NULL, tq_batch_field(b, "absent", &info), TQ_ERR_NOT_FOUND);
    expect_fail(NULL, tq_batch_field(NULL, name255, &info), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_field(b, NULL, &info), TQ_ERR_INVALID);
    expect_fail(NULL, tq_batch_field(b, name255, NULL), TQ_ERR_INVALID);
    cr_expect(eq(int, memcmp(&info, &before, sizeof(info)), 0), "a failed call wrote info_p");

    size_t bytes = 99;
    const int64_t *sh = SENTINEL(const int64_t);
    cr_expect(eq(ptr, (void *)tq_batch_row(b, "absent", 0, &bytes, &sh), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_row(b, name255, 2, &bytes, &sh), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_row(b, name255, UINT32_MAX, &bytes, &sh), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_row(NULL, name255, 0, &bytes, &sh), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_row(b, NULL, 0, &bytes, &sh), NULL));
    cr_expect(eq(sz, bytes, 99), "tq_batch_row wrote bytes_p for an absent cell");
    cr_expect(eq(ptr, (void *)sh, (void *)SENTINEL(const int64_t)));
    cr_expect(eq(ptr, (void *)tq_batch_field_name(b, 1), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_field_name(b, UINT32_MAX), NULL));
    cr_expect(eq(ptr, (void *)tq_batch_field_name(NULL, 0), NULL));
    cr_expect(eq(u32, tq_batch_rows(NULL), 0));
    cr_expect(eq(u32, tq_batch_num_fields(NULL), 0));
    tq_batch_destroy(b);
}

CLUSTER_TEST(bad_args, put)
{
    tq_client *c = client;
    const char *part = tq_test_unique("put");
    int64_t v[3] = {1, 2, 3};
    tq_batch *b = NULL, *empty = NULL;
    cr_assert(eq(int, tq_batch_create(3, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    cr_assert(eq(int, tq_batch_create(3, &empty), TQ_OK));
    char name256[257];
    memset(name256, 'p', 256);
    name256[256] = '\0';
    int64_t out[3] = {-7, -7, -7};
    static const int64_t neg[3] = {0, -1, 2}, rep[3] = {4, 5, 4}, min[3] = {0, 1, INT64_MIN};
    static const int64_t big[3] = {0, 1, INT64_MAX}, big31[3] = {0, 1, (int64_t)1 << 31};

    expect_fail(NULL, tq_put(NULL, part, b, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, NULL, b, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, "", b, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, name256, b, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, NULL, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, empty, NULL, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, b, neg, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, b, min, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, b, rep, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, b, big, out), TQ_ERR_INVALID);
    expect_fail(c, tq_put(c, part, b, big31, out), TQ_ERR_INVALID);
    for (int i = 0; i < 3; i++)
        cr_expect(eq(i64, out[i], -7), "a failed put wrote indexes_out[%d]", i);

    /* nothing was written: the partition has no row, and the first rows are 0..2 */
    static const char *const fields[] = {"v"};
    tq_fetch_args_t a = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                         .batch_size = 1, .timeout_ms = 0};
    tq_meta *m = SENTINEL(tq_meta);
    expect_fail(c, tq_get_meta(c, &a, &m), TQ_ERR_TIMEOUT);
    cr_expect(eq(ptr, m, SENTINEL(tq_meta)));
    cr_assert(eq(int, tq_put(c, part, b, NULL, out), TQ_OK), "%s", tq_last_error(c));
    for (int i = 0; i < 3; i++)
        cr_expect(eq(i64, out[i], i), "failed puts reserved indexes");

    /* the longest valid partition name */
    char name255[256];
    memset(name255, 'p', 255);
    name255[255] = '\0';
    cr_expect(eq(int, tq_put(c, name255, b, NULL, NULL), TQ_OK), "a 255-byte partition: %s",
              tq_last_error(c));
    tq_batch_destroy(b);
    tq_batch_destroy(empty);
}

CLUSTER_TEST(bad_args, get_meta)
{
    tq_client *c = client;
    const char *part = tq_test_unique("get");
    int64_t v[2] = {1, 2};
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(2, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    cr_assert(eq(int, tq_put(c, part, b, NULL, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);

    static const char *const fields[] = {"v"};
    static const char *const null_field[] = {"v", NULL};
    static const char *const empty_field[] = {""};
    static const char *const twice[] = {"v", "v"};
    char name256[257];
    memset(name256, 'x', 256);
    name256[256] = '\0';
    const char *const long_field[] = {name256};
    const tq_fetch_args_t good = {.partition = part, .task = "t", .fields = fields,
                                  .num_fields = 1, .batch_size = 1, .timeout_ms = 0};
    tq_fetch_args_t bad[] = {good, good, good, good, good, good, good, good, good,
                             good, good, good, good, good, good, good, good};
    size_t k = 0;
    bad[k++].partition = NULL;
    bad[k++].partition = "";
    bad[k++].partition = name256;
    bad[k++].task = NULL;
    bad[k++].task = "";
    bad[k++].task = name256;
    bad[k++].fields = NULL;
    bad[k++].num_fields = 0;
    bad[k].fields = null_field, bad[k++].num_fields = 2;
    bad[k++].fields = empty_field;
    bad[k++].fields = long_field;
    bad[k].fields = twice, bad[k++].num_fields = 2;
    bad[k++].num_fields = 100000;
    bad[k++].batch_size = 0;
    bad[k++].sampler = "no_such_sampler";
    bad[k++].sampler = name256;
    bad[k++].timeout_ms = -2;
    cr_assert(eq(sz, k, sizeof(bad) / sizeof(bad[0])));
    for (size_t i = 0; i < k; i++) {
        tq_meta *m = SENTINEL(tq_meta);
        int rc = tq_get_meta(c, &bad[i], &m);
        cr_expect(eq(int, rc, TQ_ERR_INVALID), "bad fetch args #%zu", i);
        cr_expect(eq(ptr, m, SENTINEL(tq_meta)), "bad fetch args #%zu wrote meta_p", i);
        cr_expect(eq(int, tq_last_error(c)[0] != '\0', 1), "no tq_last_error for #%zu", i);
    }
    tq_meta *m = SENTINEL(tq_meta);
    expect_fail(NULL, tq_get_meta(NULL, &good, &m), TQ_ERR_INVALID);
    expect_fail(c, tq_get_meta(c, NULL, &m), TQ_ERR_INVALID);
    expect_fail(c, tq_get_meta(c, &good, NULL), TQ_ERR_INVALID);
    cr_expect(eq(ptr, m, SENTINEL(tq_meta)));

    /* none of that consumed anything */
    tq_fetch_args_t all = good;
    all.batch_size = 2;
    cr_assert(eq(int, tq_get_meta(c, &all, &m), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(u32, tq_meta_rows(m), 2));

    /* get_data */
    tq_batch *got = SENTINEL(tq_batch);
    expect_fail(NULL, tq_get_data(NULL, m, &got), TQ_ERR_INVALID);
    expect_fail(c, tq_get_data(c, NULL, &got), TQ_ERR_INVALID);
    expect_fail(c, tq_get_data(c, m, NULL), TQ_ERR_INVALID);
    tq_client *other = NULL;
    cr_assert(eq(int, tq_open(cluster.address, &other), TQ_OK));
    expect_fail(other, tq_get_data(other, m, &got), TQ_ERR_INVALID);
    tq_close(other);
    cr_expect(eq(ptr, got, SENTINEL(tq_batch)));
    tq_meta_free(m);

    cr_expect(eq(u32, tq_meta_rows(NULL), 0));
    cr_expect(eq(ptr, (void *)tq_meta_indexes(NULL), NULL));
    tq_meta_free(NULL);
}

CLUSTER_TEST(bad_args, admin_calls)
{
    tq_client *c = client;
    const char *part = tq_test_unique("admin");
    char name256[257];
    memset(name256, 'a', 256);
    name256[256] = '\0';
    int64_t idx[2] = {0, 1};
    expect_fail(NULL, tq_clear(NULL, part, 2, idx), TQ_ERR_INVALID);
    expect_fail(c, tq_clear(c, NULL, 2, idx), TQ_ERR_INVALID);
    expect_fail(c, tq_clear(c, "", 2, idx), TQ_ERR_INVALID);
    expect_fail(c, tq_clear(c, name256, 2, idx), TQ_ERR_INVALID);
    expect_fail(c, tq_clear(c, part, 2, NULL), TQ_ERR_INVALID);
    expect_fail(c, tq_clear(c, part, SIZE_MAX, idx), TQ_ERR_INVALID);

    expect_fail(NULL, tq_clear_partition(NULL, part), TQ_ERR_INVALID);
    expect_fail(c, tq_clear_partition(c, NULL), TQ_ERR_INVALID);
    expect_fail(c, tq_clear_partition(c, ""), TQ_ERR_INVALID);
    expect_fail(c, tq_clear_partition(c, name256), TQ_ERR_INVALID);
    expect_fail(c, tq_clear_partition(c, part), TQ_ERR_NOT_FOUND);

    expect_fail(NULL, tq_reset_consumption(NULL, part, "t"), TQ_ERR_INVALID);
    expect_fail(c, tq_reset_consumption(c, NULL, "t"), TQ_ERR_INVALID);
    expect_fail(c, tq_reset_consumption(c, "", "t"), TQ_ERR_INVALID);
    expect_fail(c, tq_reset_consumption(c, part, ""), TQ_ERR_INVALID);
    expect_fail(c, tq_reset_consumption(c, part, name256), TQ_ERR_INVALID);

    tq_unit_info_t *units = SENTINEL(tq_unit_info_t);
    expect_fail(NULL, tq_units(NULL, &units), TQ_ERR_INVALID);
    expect_fail(c, tq_units(c, NULL), TQ_ERR_INVALID);
    cr_expect(eq(ptr, units, SENTINEL(tq_unit_info_t)));
    cr_expect(eq(str, (char *)tq_last_error(NULL), ""));

    /* the client is still fine */
    int n = tq_units(c, &units);
    cr_assert(eq(int, n, 1), "%s", tq_last_error(c));
    cr_expect(eq(int, units[0].alive, 1));
    free(units);
    assert_controller_serves();
}

/* A call on c refused as TQ_ERR_INVALID, tq_last_error naming the argument (`arg`). */
#define expect_named(c, call, arg)                                                               \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        cr_expect(eq(int, rc_, TQ_ERR_INVALID), "%s", #call);                                    \
        cr_expect(strstr(tq_last_error(c), (arg)) != NULL, "%s: \"%s\" does not name %s", #call, \
                  tq_last_error(c), (arg));                                                      \
    } while (0)

/* Every call that takes a name refuses an empty or a 256-byte one, and says
 * which argument it was and what is wrong. (A C string cannot hold a NUL
 * inside: the bindings refuse those, see python/tests.) */
CLUSTER_TEST(bad_args, names_are_named)
{
    tq_client *c = client;
    const char *part = tq_test_unique("names");
    char long_name[257];
    memset(long_name, 'n', 256);
    long_name[256] = '\0';
    int64_t v[1] = {1}, idx[1] = {0};
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    const char *bads[] = {"", long_name};
    const char *whys[] = {"empty", "256 bytes"};
    for (int i = 0; i < 2; i++) {
        const char *bad = bads[i];
        const char *key_list[] = {"ok", bad}, *field_list[] = {"v", bad}, *one[] = {bad};
        tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = field_list,
                              .num_fields = 1, .batch_size = 1};
        tq_meta *m = NULL;
        tq_batch *got = NULL;
        tq_kv_entries *l = NULL;
        tq_request *r = NULL;
        uint8_t *bytes = NULL;
        char *json = NULL;
        expect_named(NULL, tq_batch_add_tensor(b, bad, TQ_DTYPE_I64, 0, NULL, v), "field name");
        expect_named(NULL, tq_batch_add_tensor(b, bad, TQ_DTYPE_I64, 0, NULL, v), whys[i]);
        expect_named(c, tq_put(c, bad, b, NULL, NULL), "partition");
        expect_named(c, tq_put(c, bad, b, NULL, NULL), whys[i]);
        fa.partition = bad;
        expect_named(c, tq_get_meta(c, &fa, &m), "partition");
        fa.partition = part, fa.task = bad;
        expect_named(c, tq_get_meta(c, &fa, &m), "task");
        fa.task = "t", fa.num_fields = 2;
        expect_named(c, tq_get_meta(c, &fa, &m), "field 1");
        fa.num_fields = 1, fa.partition = bad;
        tq_stream *st = NULL;
        expect_named(c, tq_stream_open(c, &fa, &st), "partition");
        expect_named(c, tq_clear(c, bad, 1, idx), "partition");
        expect_named(c, tq_clear_partition(c, bad), "partition");
        expect_named(c, tq_reset_consumption(c, bad, NULL), "partition");
        expect_named(c, tq_reset_consumption(c, part, bad), "task");
        expect_named(c, tq_partition_seal(c, bad), "partition");
        expect_named(c, tq_partitions(c, bad, &json), "partition");
        expect_named(c, tq_production_status(c, bad, 1, field_list, &bytes), "partition");
        expect_named(c, tq_production_status(c, part, 2, field_list, &bytes), "field 1");
        expect_named(c, tq_consumption_status(c, bad, "t", &bytes), "partition");
        expect_named(c, tq_consumption_status(c, part, bad, &bytes), "task");
        expect_named(c, tq_kv_put(c, bad, "k", b, NULL), "partition");
        expect_named(c, tq_kv_put(c, part, bad, b, NULL), "key");
        expect_named(c, tq_kv_put(c, part, bad, b, NULL), whys[i]);
        expect_named(c, tq_kv_batch_put(c, part, 1, one, b, NULL), "key");
        expect_named(c, tq_kv_batch_get(c, part, 2, key_list, 0, NULL, &got), "key 1");
        expect_named(c, tq_kv_batch_get(c, part, 1, key_list, 2, field_list, &got), "field 1");
        expect_named(c, tq_kv_list(c, bad, &l), "partition");
        expect_named(c, tq_kv_list_page(c, bad, NULL, 0, &l), "partition");
        expect_named(c, tq_kv_clear(c, part, 2, key_list), "key 1");
        expect_named(c, tq_kv_put_nb(c, part, bad, b, NULL, &r), "key");
        expect_named(c, tq_kv_batch_get_nb(c, bad, 1, key_list, 0, NULL, &r), "partition");
        cr_expect(eq(ptr, m, NULL));
        cr_expect(eq(ptr, got, NULL));
        cr_expect(eq(ptr, l, NULL));
        cr_expect(eq(ptr, r, NULL));
        cr_expect(eq(ptr, st, NULL));
    }
    const tq_fetch_args_t sampled = {.partition = part, .task = "t", .fields = (const char *[]){"v"},
                                     .num_fields = 1, .batch_size = 1, .sampler = long_name};
    tq_meta *m = NULL;
    expect_named(c, tq_get_meta(c, &sampled, &m), "sampler");
    /* NULL where a name is required */
    expect_named(c, tq_put(c, NULL, b, NULL, NULL), "partition is NULL");
    expect_named(c, tq_kv_put(c, part, NULL, b, NULL), "key is NULL");
    tq_batch_destroy(b);
    /* nothing of that was written */
    tq_kv_entries *l = NULL;
    cr_assert(eq(int, tq_kv_list(c, NULL, &l), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(sz, tq_kv_entries_size(l), 0), "a refused call wrote a key");
    tq_kv_entries_free(l);
    assert_controller_serves();
}

/* ---- answers that cannot be built ---- */

/*
 * A GET_META of 2^20 rows of an empty nested field of 8 dimensions: its answer
 * (index, size and 8 dimensions a row: 84 MB) passes the 64 MiB frame limit.
 * The controller answers with an error saying so, not a closed connection
 * (the old code closed it: "the controller closed the connection"), and the
 * rows are not consumed.
 */
CLUSTER_TEST(bad_frames, answer_past_the_frame_limit)
{
    tq_client *c = client;
    const char *part = tq_test_unique("huge_answer");
    const uint32_t rows = TQ_WIRE_MAX_ROWS, per_put = rows / 2, ndim = 8;
    int64_t *shapes = malloc((size_t)per_put * ndim * sizeof(int64_t));
    const void **data = calloc(per_put, sizeof(void *)); /* empty rows: no data */
    cr_assert(shapes != NULL && data != NULL);
    for (size_t i = 0; i < (size_t)per_put * ndim; i++)
        shapes[i] = i % ndim == 0 ? 0 : 1;
    for (uint32_t first = 0; first < rows; first += per_put) {
        tq_batch *b = NULL;
        cr_assert(eq(int, tq_batch_create(per_put, &b), TQ_OK));
        cr_assert(eq(int, tq_batch_add_nested(b, "n", TQ_DTYPE_F32, ndim, shapes, data), TQ_OK),
                  "%s", tq_last_error(NULL));
        cr_assert(eq(int, tq_put(c, part, b, NULL, NULL), TQ_OK), "put of %u rows: %s", per_put,
                  tq_last_error(c));
        tq_batch_destroy(b);
    }
    free(shapes);
    free(data);
    static const char *const fields[] = {"n"};
    tq_fetch_args_t all = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                           .batch_size = rows, .timeout_ms = 0};
    tq_meta *m = NULL;
    int rc = tq_get_meta(c, &all, &m);
    fprintf(stderr, "bad_frames: get_meta of %u rows, an 84 MB answer: %s (%s)\n", rows,
            tq_status_string(rc), tq_last_error(c));
    cr_expect(eq(int, rc, TQ_ERR_INVALID), "get_meta of %u rows: %s (%s)", rows,
              tq_status_string(rc), tq_last_error(c));
    cr_expect(strstr(tq_last_error(c), "frame limit") != NULL, "error: %s", tq_last_error(c));
    if (rc == TQ_OK)
        tq_meta_free(m);
    /* nothing consumed: a smaller fetch gets the first rows */
    tq_fetch_args_t few = all;
    few.batch_size = 4;
    cr_assert(eq(int, tq_get_meta(c, &few, &m), TQ_OK), "%s", tq_last_error(c));
    cr_expect(eq(u32, tq_meta_rows(m), 4));
    cr_expect(eq(i64, tq_meta_indexes(m)[0], 0));
    tq_meta_free(m);
    cr_assert(eq(int, tq_clear_partition(c, part), TQ_OK), "%s", tq_last_error(c));
    assert_controller_serves();
}

/* ---- malformed frames on a raw socket ---- */

#define ANSWER_MS 5000

static int raw_connect(void)
{
    int fd = tq_test_connect(tq_test_cluster_port(&cluster), 5000);
    cr_assert(ge(int, fd, 0), "cannot connect to %s", cluster.address);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    cr_assert(eq(int, tq_test_write_all(fd, p, n), 0), "the controller closed before the frame");
}

/* The connection gets an error reply (a reply with status < 0) or is closed,
 * within ANSWER_MS. Returns true when it was closed. */
static bool expect_error_or_close(int fd, const char *what)
{
    tq_test_answer_t a;
    cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0),
              "%s: neither an error reply nor a close within %d ms", what, ANSWER_MS);
    if (a.closed)
        return true;
    cr_expect(eq(u8, a.flags & TQ_WIRE_FLAG_REPLY, TQ_WIRE_FLAG_REPLY), "%s: not a reply", what);
    cr_expect(lt(i32, a.status, 0), "%s: status %d", what, a.status);
    cr_expect(ne(str, a.message, ""), "%s: an error reply without a message", what);
    tq_test_answer_free(&a);
    return false;
}

/* Send a frame and expect a good reply: returns it (caller frees). */
static tq_test_answer_t call_ok(int fd, uint16_t type, uint64_t id, const void *body, uint32_t len)
{
    size_t n;
    uint8_t *f = tq_test_frame(type, 0, id, body, len, &n);
    raw_send(fd, f, n);
    free(f);
    tq_test_answer_t a;
    cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0));
    cr_assert(eq(int, a.closed, 0), "the controller closed a good connection");
    cr_assert(eq(u8, a.flags, TQ_WIRE_FLAG_REPLY));
    cr_assert(eq(u16, a.type, type));
    cr_assert(eq(u64, a.request_id, id));
    cr_assert(eq(i32, a.status, TQ_OK), "message: %s", a.message);
    return a;
}

static void raw_hello(int fd)
{
    size_t n;
    uint8_t *f = tq_test_hello_frame(1, &n);
    raw_send(fd, f, n);
    free(f);
    tq_test_answer_t a;
    cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0));
    cr_assert(eq(int, a.closed, 0), "closed after hello");
    cr_assert(eq(i32, a.status, TQ_OK), "hello: %s", a.message);
    tq_test_answer_free(&a);
}

CLUSTER_TEST(bad_frames, garbage_bytes)
{
    int fd = raw_connect();
    static const char junk[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\x01\x02\x03\xff\xfe";
    raw_send(fd, junk, sizeof(junk));
    expect_error_or_close(fd, "garbage bytes");
    close(fd);
    /* random bytes after a good hello */
    fd = raw_connect();
    raw_hello(fd);
    uint8_t rnd[4096];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof(rnd); i++)
        rnd[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
    tq_test_write_all(fd, rnd, sizeof(rnd)); /* may fail half-way: the controller may close */
    expect_error_or_close(fd, "random bytes after hello");
    close(fd);
    assert_controller_serves();
}

CLUSTER_TEST(bad_frames, bad_header_fields)
{
    struct {
        const char *what;
        uint32_t    offset; /* of the header byte(s) to spoil */
        uint32_t    value;
        int         width;
    } spoil[] = {
        {"bad magic", 0, 0xdeadbeef, 4},
        {"bad version", 4, 99, 1},
        {"unknown flags", 5, 0x80, 1},
        {"type 0", 6, 0, 2},
        {"type past the last", 6, TQ_MSG_TYPE_MAX, 2},
        {"type 0xffff", 6, 0xffff, 2},
        {"body over the limit", 16, TQ_WIRE_MAX_BODY + 1, 4},
        {"body length 0xffffffff", 16, 0xffffffffu, 4},
        {"reserved word set", 20, 1, 4},
    };
    for (int greeted = 0; greeted < 2; greeted++)
        for (size_t i = 0; i < sizeof(spoil) / sizeof(spoil[0]); i++) {
            int fd = raw_connect();
            if (greeted)
                raw_hello(fd);
            size_t n;
            uint8_t *f = tq_test_frame(TQ_MSG_UNITS, 0, 7, NULL, 0, &n);
            for (int b = 0; b < spoil[i].width; b++)
                f[spoil[i].offset + b] = (uint8_t)(spoil[i].value >> (8 * b));
            raw_send(fd, f, n);
            free(f);
            char what[96];
            snprintf(what, sizeof(what), "%s%s", spoil[i].what, greeted ? " after hello" : "");
            expect_error_or_close(fd, what);
            close(fd);
        }
    assert_controller_serves();
}

CLUSTER_TEST(bad_frames, request_before_hello)
{
    static const uint16_t types[] = {TQ_MSG_UNITS, TQ_MSG_ALLOC, TQ_MSG_GET_META,
                                     TQ_MSG_CLEAR_PARTITION, TQ_MSG_REGISTER_UNIT, TQ_MSG_COMMIT};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int fd = raw_connect();
        uint8_t body[16] = {0};
        size_t n;
        uint8_t *f = tq_test_frame(types[i], 0, 3, body, sizeof(body), &n);
        raw_send(fd, f, n);
        free(f);
        char what[64];
        snprintf(what, sizeof(what), "message type %u before hello", types[i]);
        expect_error_or_close(fd, what);
        close(fd);
    }
    /* a reply flag from a client */
    int fd = raw_connect();
    raw_hello(fd);
    size_t n;
    uint8_t *f = tq_test_frame(TQ_MSG_UNITS, TQ_WIRE_FLAG_REPLY, 9, NULL, 0, &n);
    raw_send(fd, f, n);
    free(f);
    expect_error_or_close(fd, "a reply sent to the controller");
    close(fd);
    /* a second hello */
    fd = raw_connect();
    raw_hello(fd);
    f = tq_test_hello_frame(2, &n);
    raw_send(fd, f, n);
    free(f);
    expect_error_or_close(fd, "hello twice");
    close(fd);
    assert_controller_serves();
}

/* An ALLOC body: 4 rows of part at explicit indexes 0..3, one I32 scalar field "f". */
static void alloc_body(tq_wbuf *w, const char *part)
{
    static const int64_t idx[4] = {0, 1, 2, 3};
    tq_msg_alloc_t m = {.partition = {part, (uint16_t)strlen(part)}, .rows = 4, .row_mode = TQ_ROWS_INDEXES,
                        .indexes = tq_array_of(idx, 4), .num_fields = 1, .commit_ms = 5000};
    tq_wire_encode_alloc(w, &m);
    tq_wire_field_t fld = {.name = {"f", 1}, .kind = TQ_FIELD_TENSOR, .dtype = TQ_DTYPE_I32,
                           .ndim = 0, .dims = tq_array_of(NULL, 0)};
    tq_wire_encode_field(w, &fld);
}

CLUSTER_TEST(bad_frames, truncated_bodies)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    alloc_body(&w, tq_test_unique("cut"));
    cr_assert(eq(int, w.failed, 0));
    /* the whole body is good on its own: the controller answers it */
    {
        int fd = raw_connect();
        raw_hello(fd);
        tq_test_answer_t a = call_ok(fd, TQ_MSG_ALLOC, 5, w.data, (uint32_t)w.len);
        tq_test_answer_free(&a);
        close(fd); /* never committed: reclaimed with the connection */
    }
    /* every shorter prefix, and one byte too many, are refused */
    for (size_t cut = 0; cut <= w.len + 1; cut++) {
        if (cut == w.len)
            continue;
        int fd = raw_connect();
        raw_hello(fd);
        uint8_t body[512];
        cr_assert(lt(sz, cut, sizeof(body)));
        memset(body, 0, sizeof(body));
        memcpy(body, w.data, cut < w.len ? cut : w.len);
        size_t n;
        uint8_t *f = tq_test_frame(TQ_MSG_ALLOC, 0, 6, body, (uint32_t)cut, &n);
        raw_send(fd, f, n);
        free(f);
        char what[64];
        snprintf(what, sizeof(what), "alloc with a %zu-byte body of %zu", cut, w.len);
        expect_error_or_close(fd, what);
        close(fd);
    }
    tq_wbuf_free(&w);

    /* truncated bodies of the other requests */
    static const uint16_t types[] = {TQ_MSG_HELLO, TQ_MSG_COMMIT, TQ_MSG_ABORT, TQ_MSG_GET_META,
                                     TQ_MSG_CLEAR, TQ_MSG_CLEAR_PARTITION,
                                     TQ_MSG_RESET_CONSUMPTION, TQ_MSG_REGISTER_UNIT};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int fd = raw_connect();
        if (types[i] != TQ_MSG_HELLO)
            raw_hello(fd);
        uint8_t body[3] = {0xff, 0xff, 0x01}; /* a string length that runs past the end */
        size_t n;
        uint8_t *f = tq_test_frame(types[i], 0, 8, body, sizeof(body), &n);
        raw_send(fd, f, n);
        free(f);
        char what[64];
        snprintf(what, sizeof(what), "message type %u with a truncated body", types[i]);
        expect_error_or_close(fd, what);
        close(fd);
    }
    assert_controller_serves();
}

CLUSTER_TEST(bad_frames, out_of_range_alloc)
{
    /* well-formed frames whose numbers are out of range: rows, shapes, sizes */
    struct {
        const char *what;
        uint32_t    rows;
        uint8_t     kind, dtype, ndim;
        int64_t     dim;
    } cases[] = {
        {"no rows", 0, TQ_FIELD_TENSOR, TQ_DTYPE_I32, 1, 1},
        {"too many rows", TQ_WIRE_MAX_ROWS + 1, TQ_FIELD_TENSOR, TQ_DTYPE_I32, 1, 1},
        {"negative dim", 1, TQ_FIELD_TENSOR, TQ_DTYPE_I32, 1, -5},
        {"overflowing dim", 1, TQ_FIELD_TENSOR, TQ_DTYPE_I64, 1, INT64_MAX},
        {"a field larger than any pool", 1, TQ_FIELD_TENSOR, TQ_DTYPE_U8, 1, (int64_t)1 << 40},
        {"unknown dtype", 1, TQ_FIELD_TENSOR, 77, 1, 1},
        {"unknown kind", 1, 9, TQ_DTYPE_I32, 1, 1},
        {"ndim over the limit", 1, TQ_FIELD_TENSOR, TQ_DTYPE_I32, TQ_MAX_NDIM + 1, 1},
        {"a bytes field with a tensor dtype", 1, TQ_FIELD_BYTES, TQ_DTYPE_I32, 0, 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tq_wbuf w;
        tq_wbuf_init(&w);
        const char *part = tq_test_unique("oor");
        tq_msg_alloc_t m = {.partition = {part, (uint16_t)strlen(part)}, .rows = cases[i].rows, .row_mode = TQ_ROWS_NEW,
                            .num_fields = 1, .commit_ms = 5000};
        tq_wire_encode_alloc(&w, &m);
        tq_wire_put_str(&w, "f", 1);
        tq_wire_put_u8(&w, cases[i].kind);
        tq_wire_put_u8(&w, cases[i].dtype);
        tq_wire_put_u8(&w, cases[i].ndim);
        /* as many dims as a decoder could want, capped */
        uint64_t count = cases[i].kind == TQ_FIELD_BYTES ? cases[i].rows : cases[i].ndim;
        if (count > 64)
            count = 64;
        for (uint64_t d = 0; d < count; d++)
            tq_wire_put_u64(&w, (uint64_t)cases[i].dim);
        cr_assert(eq(int, w.failed, 0));
        int fd = raw_connect();
        raw_hello(fd);
        size_t n;
        uint8_t *f = tq_test_frame(TQ_MSG_ALLOC, 0, 10, w.data, (uint32_t)w.len, &n);
        raw_send(fd, f, n);
        free(f);
        expect_error_or_close(fd, cases[i].what);
        close(fd);
        tq_wbuf_free(&w);
    }
    /* commit, abort and release of ids that were never given */
    int fd = raw_connect();
    raw_hello(fd);
    for (uint16_t t = TQ_MSG_COMMIT; t <= TQ_MSG_ABORT; t++) {
        uint8_t id[8] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x08};
        size_t n;
        uint8_t *f = tq_test_frame(t, 0, 11, id, sizeof(id), &n);
        raw_send(fd, f, n);
        free(f);
        if (expect_error_or_close(fd, "commit or abort of an unknown id"))
            break;
    }
    close(fd);
    assert_controller_serves();
}

CLUSTER_TEST(bad_frames, one_byte_writes)
{
    /* a frame split into 1-byte writes is still one frame: good requests get good replies */
    int fd = raw_connect();
    size_t n;
    uint8_t *f = tq_test_hello_frame(1, &n);
    for (size_t i = 0; i < n; i++) {
        raw_send(fd, f + i, 1);
        tq_test_sleep_ms(1);
    }
    free(f);
    tq_test_answer_t a;
    cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0));
    cr_assert(eq(int, a.closed, 0), "a hello sent a byte at a time was refused");
    cr_assert(eq(i32, a.status, TQ_OK), "%s", a.message);
    tq_test_answer_free(&a);
    f = tq_test_frame(TQ_MSG_UNITS, 0, 2, NULL, 0, &n);
    for (size_t i = 0; i < n; i++) {
        raw_send(fd, f + i, 1);
        tq_test_sleep_ms(1);
    }
    free(f);
    cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0));
    cr_assert(eq(int, a.closed, 0));
    cr_assert(eq(i32, a.status, TQ_OK), "%s", a.message);
    cr_assert(eq(u64, a.request_id, 2));
    cr_assert(ge(u32, a.body_len, 8));
    uint32_t count = (uint32_t)a.body[4] | (uint32_t)a.body[5] << 8 | (uint32_t)a.body[6] << 16 |
                     (uint32_t)a.body[7] << 24;
    cr_assert(eq(u32, count, 1), "units seen over the split frame");
    tq_test_answer_free(&a);

    /* a bad frame split the same way is still refused */
    static const uint8_t cut_alloc[4] = {0x05, 0x00, 'a', 'b'}; /* a 5-byte name, 2 given */
    f = tq_test_frame(TQ_MSG_ALLOC, 0, 3, cut_alloc, sizeof(cut_alloc), &n);
    for (size_t i = 0; i < n; i++) {
        if (tq_test_write_all(fd, f + i, 1) != 0)
            break;
        tq_test_sleep_ms(1);
    }
    free(f);
    expect_error_or_close(fd, "a truncated alloc a byte at a time");
    close(fd);

    /* two good frames in one write */
    fd = raw_connect();
    size_t n1, n2;
    uint8_t *f1 = tq_test_hello_frame(1, &n1), *f2 = tq_test_frame(TQ_MSG_UNITS, 0, 2, NULL, 0, &n2);
    uint8_t *both = malloc(n1 + n2);
    memcpy(both, f1, n1);
    memcpy(both + n1, f2, n2);
    raw_send(fd, both, n1 + n2);
    free(f1), free(f2), free(both);
    for (uint64_t id = 1; id <= 2; id++) {
        cr_assert(eq(int, tq_test_read_answer(fd, ANSWER_MS, &a), 0));
        cr_assert(eq(int, a.closed, 0));
        cr_assert(eq(u64, a.request_id, id));
        cr_assert(eq(i32, a.status, TQ_OK), "%s", a.message);
        tq_test_answer_free(&a);
    }
    close(fd);
    assert_controller_serves();
}

CLUSTER_TEST(bad_frames, disconnect_mid_frame)
{
    size_t n;
    uint8_t *hello = tq_test_hello_frame(1, &n);
    /* half a header */
    int fd = raw_connect();
    raw_send(fd, hello, 10);
    close(fd);
    /* a header and half its body */
    fd = raw_connect();
    raw_send(fd, hello, n - 1);
    close(fd);
    /* a header that announces a large body, then a little of it */
    fd = raw_connect();
    raw_hello(fd);
    uint8_t hdr[TQ_WIRE_HEADER_SIZE + 100];
    memset(hdr, 0, sizeof(hdr));
    size_t hn;
    uint8_t *f = tq_test_frame(TQ_MSG_ALLOC, 0, 2, NULL, 0, &hn);
    memcpy(hdr, f, TQ_WIRE_HEADER_SIZE);
    free(f);
    uint32_t big = TQ_WIRE_MAX_BODY; /* the limit itself is allowed */
    for (int b = 0; b < 4; b++)
        hdr[16 + b] = (uint8_t)(big >> (8 * b));
    raw_send(fd, hdr, sizeof(hdr));
    close(fd);
    /* an allocation made, never committed, then a disconnect mid-way through the next frame */
    fd = raw_connect();
    raw_hello(fd);
    tq_wbuf w;
    tq_wbuf_init(&w);
    const char *part = tq_test_unique("abandoned");
    alloc_body(&w, part);
    tq_test_answer_t a = call_ok(fd, TQ_MSG_ALLOC, 3, w.data, (uint32_t)w.len);
    tq_test_answer_free(&a);
    f = tq_test_frame(TQ_MSG_ALLOC, 0, 4, w.data, (uint32_t)w.len, &hn);
    raw_send(fd, f, hn / 2);
    free(f);
    tq_wbuf_free(&w);
    close(fd);
    /* many of them at once */
    for (int i = 0; i < 50; i++) {
        fd = raw_connect();
        raw_send(fd, hello, (size_t)(i % (int)n));
        close(fd);
    }
    free(hello);
    /* the abandoned allocation of rows 0..3 of part was reclaimed: they can be put again */
    tq_client *c = client;
    int32_t v[4] = {1, 2, 3, 4};
    static const int64_t idx[4] = {0, 1, 2, 3};
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(4, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "f", TQ_DTYPE_I32, 0, NULL, v), TQ_OK));
    int rc = TQ_ERR_TIMEOUT;
    uint64_t deadline = tq_test_now_ms() + 5000;
    while ((rc = tq_put(c, part, b, idx, NULL)) != TQ_OK && tq_test_now_ms() < deadline)
        tq_test_sleep_ms(50); /* the controller sees the close asynchronously */
    cr_assert(eq(int, rc, TQ_OK), "rows of an abandoned allocation stay reserved: %s",
              tq_last_error(c));
    tq_batch_destroy(b);
    assert_controller_serves();
}
