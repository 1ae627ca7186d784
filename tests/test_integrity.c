/* test_integrity.c: what a client was told holds: controller restarts, frozen commits, atomic commits. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller/partition.h"
#include "helpers.h"
#include "tq/tq.h"
#include "util/common.h"

static tq_client *open_client(const char *address)
{
    tq_client *c;
    int rc = tq_open(address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", address, tq_last_error(NULL));
    return c;
}

/* Rows of ROW_BYTES bytes of field "x": byte j of row i is a function of (seed, i, j). */
#define ROW_BYTES (64u << 10)

static uint8_t pattern(uint32_t seed, int64_t row, size_t j)
{
    return (uint8_t)(seed * 131u + (uint32_t)row * 17u + (uint32_t)j * 7u + 1u);
}

static uint8_t *rows_make(uint32_t seed, const int64_t *rows, uint32_t n)
{
    uint8_t *d = malloc((size_t)n * ROW_BYTES);
    cr_assert(ne(ptr, d, NULL));
    for (uint32_t i = 0; i < n; i++)
        for (size_t j = 0; j < ROW_BYTES; j++)
            d[(size_t)i * ROW_BYTES + j] = pattern(seed, rows[i], j);
    return d;
}

static int put_rows(tq_client *c, const char *part, uint32_t seed, const int64_t *rows, uint32_t n)
{
    uint8_t *d = rows_make(seed, rows, n);
    int64_t shape[1] = {ROW_BYTES};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(n, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "x", TQ_DTYPE_U8, 1, shape, d), TQ_OK));
    int rc = tq_put(c, part, b, rows, NULL);
    tq_batch_destroy(b);
    free(d);
    return rc;
}

/* Read every ready row of part as task and check it holds seed's bytes. @return rows read. */
static uint32_t expect_rows(tq_client *c, const char *part, const char *task, uint32_t seed,
                            uint32_t want)
{
    static const char *const fields[] = {"x"};
    tq_fetch_args_t fa = {.partition = part, .task = task, .fields = fields, .num_fields = 1,
                          .batch_size = want, .timeout_ms = 0};
    tq_meta *m = NULL;
    int rc = tq_get_meta(c, &fa, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta: %s", tq_last_error(c));
    tq_batch *b = NULL;
    rc = tq_get_data(c, m, &b);
    cr_assert(eq(int, rc, TQ_OK), "get_data: %s", tq_last_error(c));
    uint32_t n = tq_meta_rows(m);
    uint8_t *want_bytes = rows_make(seed, tq_meta_indexes(m), n);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = 0;
        const void *got = tq_batch_row(b, "x", i, &len, NULL);
        char what[64];
        snprintf(what, sizeof(what), "row %lld", (long long)tq_meta_indexes(m)[i]);
        tq_assert_bytes_eq(got, len, want_bytes + (size_t)i * ROW_BYTES, ROW_BYTES, what);
    }
    free(want_bytes);
    tq_batch_destroy(b);
    tq_meta_free(m);
    return n;
}

/* ---- a controller restarted on the same port: no cached unit outlives it ---- */

/* Kill the controller of cl, freezing (SIGSTOP) or killing its one unit
 * first, and start a new controller on the same port with a new unit. */
static void restart_controller(tq_test_cluster *cl, tq_test_cluster *next, bool freeze_old_unit)
{
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", tq_test_cluster_port(cl));
    if (freeze_old_unit) {
        cr_assert(eq(int, kill(cl->units[0], SIGSTOP), 0));
    } else {
        cr_assert(eq(int, tq_test_cluster_kill_unit(cl, 0), 0));
    }
    cr_assert(eq(int, kill(cl->controller, SIGKILL), 0));
    tq_test_reap(cl->controller, 5000);
    cl->controller = 0;
    const char *args[] = {"--listen", listen, NULL};
    cr_assert(eq(int, tq_test_cluster_start_with(next, 1, "64M", args, NULL), 0),
              "no new controller on %s", listen);
}

static void restarted_controller(bool freeze_old_unit)
{
    tq_test_cluster cl, next;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "64M"), 0));
    tq_client *c = open_client(cl.address);
    int64_t rows[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    cr_assert(eq(int, put_rows(c, "p", 1, rows, 8), TQ_OK), "%s", tq_last_error(c));
    cr_assert(eq(u32, expect_rows(c, "p", "before", 1, 8), 8));

    restart_controller(&cl, &next, freeze_old_unit);
    /* the old client's connections died with the controller: a call may fail
     * once on each; then every put must land in the new unit */
    int failed = 0, ok = 0;
    for (int i = 0; i < 20 && ok < 10; i++) {
        int64_t row = ok;
        int rc = put_rows(c, "p", 2, &row, 1);
        if (rc == TQ_OK)
            ok++;
        else
            failed++, fprintf(stderr, "integrity: put after restart: %s\n", tq_last_error(c));
    }
    fprintf(stderr, "integrity: controller restarted (old unit %s): %d puts ok, %d failed\n",
            freeze_old_unit ? "frozen" : "killed", ok, failed);
    cr_expect(le(int, failed, 2), "puts kept failing after the restart");
    cr_assert(eq(int, ok, 10));
    tq_client *fresh = open_client(next.address);
    cr_expect(eq(u32, expect_rows(fresh, "p", "after", 2, 10), 10));
    tq_close(fresh);
    tq_close(c);
    if (freeze_old_unit) { /* thawed, it finds its controller gone and exits */
        kill(cl.units[0], SIGCONT);
        tq_test_reap(cl.units[0], 10000);
        cl.units[0] = 0;
    }
    tq_test_cluster_stop(&cl);
    cr_expect(eq(int, tq_test_cluster_stop(&next), 0));
}

Test(integrity, controller_restart_frozen_old_unit, .timeout = 120)
{
    restarted_controller(true);
}

Test(integrity, controller_restart_dead_old_unit, .timeout = 120)
{
    restarted_controller(false);
}

/* ---- a put that failed never becomes visible, wherever the controller froze ---- */

#define BIG_BYTES (32u << 20)

typedef struct {
    tq_client  *c;
    const char *key;
    const void *data;
    int         rc;
    uint64_t    ms;
} big_put_t;

static void *big_put(void *arg)
{
    big_put_t *p = arg;
    int64_t shape[1] = {BIG_BYTES};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "x", TQ_DTYPE_U8, 1, shape, p->data), TQ_OK));
    uint64_t t0 = tq_test_now_ms();
    p->rc = tq_kv_put(p->c, "big", p->key, b, "{\"t\":1}");
    p->ms = tq_test_now_ms() - t0;
    tq_batch_destroy(b);
    return NULL;
}

/* Does key exist in partition "big", and with the right bytes? */
static bool key_visible(tq_client *c, const char *key, const uint8_t *data)
{
    tq_kv_entries *e = NULL;
    cr_assert(eq(int, tq_kv_list(c, "big", &e), TQ_OK), "%s", tq_last_error(c));
    bool listed = false;
    for (size_t i = 0; i < tq_kv_entries_size(e); i++)
        listed |= strcmp(tq_kv_entries_key(e, i), key) == 0;
    tq_kv_entries_free(e);
    tq_batch *b = NULL;
    const char *keys[] = {key};
    int rc = tq_kv_batch_get(c, "big", 1, keys, 0, NULL, &b);
    cr_assert(eq(int, rc == TQ_OK, listed), "key %s: listed %d, get %s", key, listed,
              tq_status_string(rc));
    if (rc == TQ_OK) {
        size_t len = 0;
        const void *got = tq_batch_row(b, "x", 0, &len, NULL);
        tq_assert_bytes_eq(got, len, data, BIG_BYTES, key);
        tq_batch_destroy(b);
    }
    return listed;
}

Test(integrity, frozen_controller_never_commits_a_failed_put, .timeout = 240)
{
    setenv("TQ_TIMEOUT_MS", "1000", 1);
    setenv("UCX_TLS", "tcp,self", 1); /* slow enough to freeze the controller mid-put */
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "256M"), 0));
    tq_client *c = open_client(cl.address);
    uint8_t *data = malloc(BIG_BYTES);
    cr_assert(ne(ptr, data, NULL));
    for (size_t i = 0; i < BIG_BYTES; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    /* how long one put takes here, unfrozen */
    big_put_t warm = {c, "warm", data, 0, 0};
    big_put(&warm);
    cr_assert(eq(int, warm.rc, TQ_OK), "%s", tq_last_error(c));
    fprintf(stderr, "integrity: a 32 MiB kv_put takes %llu ms\n", (unsigned long long)warm.ms);

    static const int delays_us[] = {0, 500, 1000, 2000, 3000, 5000, 8000, 12000, 20000, 40000,
                                    70000};
    int failed = 0, succeeded = 0, wrong = 0;
    for (size_t i = 0; i < ARRAY_SIZE(delays_us); i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%zu", i);
        big_put_t p = {c, key, data, 0, 0};
        pthread_t th;
        cr_assert(eq(int, pthread_create(&th, NULL, big_put, &p), 0));
        usleep((useconds_t)delays_us[i]);
        kill(cl.controller, SIGSTOP);
        tq_test_sleep_ms(1400); /* past the put's 1000 ms timeout and its 250 ms margin */
        kill(cl.controller, SIGCONT);
        pthread_join(th, NULL);
        tq_test_sleep_ms(100); /* whatever it had queued is handled by now */
        bool visible = key_visible(c, key, data);
        if (p.rc == TQ_OK)
            succeeded++;
        else
            failed++;
        if ((p.rc == TQ_OK) != visible) {
            wrong++;
            fprintf(stderr, "integrity: frozen %d us into a put: it returned %s, yet the key "
                    "is %s\n", delays_us[i], tq_status_string(p.rc),
                    visible ? "visible" : "not visible");
        }
    }
    fprintf(stderr, "integrity: %zu freezes: %d puts failed, %d succeeded, %d told a lie\n",
            ARRAY_SIZE(delays_us), failed, succeeded, wrong);
    cr_expect(eq(int, wrong, 0));
    cr_expect(ge(int, failed, 1), "no freeze caught a put in flight");
    free(data);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
    unsetenv("UCX_TLS");
    unsetenv("TQ_TIMEOUT_MS");
}

/* ---- a commit past the metadata budget changes nothing ---- */

/* Does partition p (tq_partitions JSON) have field f? */
static bool has_field(tq_client *c, const char *part, const char *field)
{
    char *json = NULL;
    cr_assert(eq(int, tq_partitions(c, part, &json), TQ_OK), "%s", tq_last_error(c));
    char want[64];
    snprintf(want, sizeof(want), "\"%s\":", field);
    bool has = strstr(json, want) != NULL;
    free(json);
    return has;
}

Test(integrity, commit_over_the_metadata_budget_is_atomic, .timeout = 60)
{
    /* 3000 rows make room for 4096 row slots: the 1 MiB budget holds them
     * with two fields, not with three */
    enum { ROWS = 3000, SLOTS = 4096 };
    cr_assert(lt(u64, SLOTS * (1 + sizeof(tq_kv_key_t *) + sizeof(tq_custom_t *) + 2 * sizeof(tq_cell_t)),
                 1u << 20));
    cr_assert(lt(u64, 1u << 20,
                 SLOTS * (1 + sizeof(tq_kv_key_t *) + sizeof(tq_custom_t *) + 3 * sizeof(tq_cell_t))));
    const char *args[] = {"--max-metadata", "1M", NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "64M", args, NULL), 0));
    tq_client *c = open_client(cl.address);
    int32_t *col = calloc(ROWS, sizeof(int32_t));
    tq_batch *many;
    cr_assert(eq(int, tq_batch_create(ROWS, &many), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(many, "a", TQ_DTYPE_I32, 0, NULL, col), TQ_OK));
    cr_assert(eq(int, tq_put(c, "p", many, NULL, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(many);
    free(col);
    int32_t v = 7;
    tq_batch *one;
    cr_assert(eq(int, tq_batch_create(1, &one), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(one, "a", TQ_DTYPE_I32, 0, NULL, &v), TQ_OK));
    cr_assert(eq(int, tq_kv_put(c, "p", "k1", one, "{\"n\":1}"), TQ_OK), "%s", tq_last_error(c));

    /* a new key with a tag and two new fields: the second is past the budget */
    tq_batch *three;
    cr_assert(eq(int, tq_batch_create(1, &three), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(three, "a", TQ_DTYPE_I32, 0, NULL, &v), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(three, "b", TQ_DTYPE_I32, 0, NULL, &v), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(three, "c", TQ_DTYPE_I32, 0, NULL, &v), TQ_OK));
    int rc = tq_kv_put(c, "p", "k2", three, "{\"n\":2}");
    cr_assert(eq(int, rc, TQ_ERR_NOSPACE), "kv_put past the budget: %s (%s)",
              tq_status_string(rc), tq_last_error(c));
    /* and the same through the low-level put, onto new rows */
    rc = tq_put(c, "p", three, NULL, NULL);
    cr_assert(eq(int, rc, TQ_ERR_NOSPACE), "put past the budget: %s", tq_status_string(rc));

    /* nothing of either is left: no key, no tag, no field, no row */
    tq_kv_entries *e = NULL;
    cr_assert(eq(int, tq_kv_list(c, "p", &e), TQ_OK));
    cr_expect(eq(sz, tq_kv_entries_size(e), 1), "keys listed after failed puts");
    for (size_t i = 0; i < tq_kv_entries_size(e); i++)
        cr_expect(eq(str, (char *)tq_kv_entries_key(e, i), "k1"));
    tq_kv_entries_free(e);
    cr_expect(not(has_field(c, "p", "b")), "field b appeared though its put failed");
    cr_expect(not(has_field(c, "p", "c")), "field c appeared though its put failed");
    char *json = NULL;
    cr_assert(eq(int, tq_partitions(c, "p", &json), TQ_OK));
    cr_expect(ne(ptr, strstr(json, "\"rows\":3001"), NULL), "rows after failed puts: %s", json);
    free(json);
    /* the store still takes what fits */
    cr_expect(eq(int, tq_kv_put(c, "p", "k3", one, NULL), TQ_OK), "%s", tq_last_error(c));
    const char *keys[] = {"k1", "k3"};
    tq_batch *got = NULL;
    cr_expect(eq(int, tq_kv_batch_get(c, "p", 2, keys, 0, NULL, &got), TQ_OK), "%s",
              tq_last_error(c));
    tq_batch_destroy(got);
    tq_batch_destroy(one);
    tq_batch_destroy(three);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
