/* test_consume.c: consumption under faults: metas are their client's, streams end only at
 * the end, and rows reach a consumer exactly once or are reported lost. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"
#include "transport_registry.h"
#include "util/common.h"
#include "wire.h"

static const char *const FIELD_V[] = {"v"};

/* Criterion 2.4's lt(T, b, a) tests a >= b in C (it is !lt): comparisons with
 * a strict bound are written out here. */

/* ---- small tools ---- */

static tq_client *open_client(const char *address)
{
    tq_client *c;
    int rc = tq_open(address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", address, tq_last_error(NULL));
    return c;
}

/* Put rows [first, first + n) of field "v" (I64 tq_test_row_value(i)), one
 * put a row, so that the storage units take turns. */
static void put_rows(tq_client *c, const char *part, int64_t first, int64_t n)
{
    for (int64_t i = first; i < first + n; i++) {
        int64_t v = tq_test_row_value(i);
        tq_batch *b;
        cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
        cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, &v), TQ_OK));
        int rc = tq_put(c, part, b, &i, NULL);
        cr_assert(eq(int, rc, TQ_OK), "put row %lld: %s", (long long)i, tq_last_error(c));
        tq_batch_destroy(b);
    }
}

static int64_t row_v(const tq_batch *b, uint32_t row)
{
    size_t n = 0;
    const int64_t *p = tq_batch_row(b, "v", row, &n, NULL);
    cr_assert(ne(ptr, (void *)p, NULL));
    cr_assert(eq(sz, n, sizeof(int64_t)));
    return *p;
}

/* Live units as the controller sees them. */
static unsigned units_alive(tq_client *c, uint64_t *used_p)
{
    tq_unit_info_t *u = NULL;
    int n = tq_units(c, &u);
    cr_assert(ge(int, n, 0), "tq_units: %s", tq_last_error(c));
    unsigned alive = 0;
    uint64_t used = 0;
    for (int i = 0; i < n; i++)
        if (u[i].alive)
            alive++, used += u[i].used;
    free(u);
    if (used_p != NULL)
        *used_p = used;
    return alive;
}

static void wait_alive(tq_client *c, unsigned want)
{
    uint64_t t0 = tq_test_now_ms();
    while (units_alive(c, NULL) != want && tq_test_now_ms() - t0 < 10000)
        tq_test_sleep_ms(5);
    cr_assert(eq(u32, units_alive(c, NULL), want), "units alive");
}

/* One number of tq_partitions' JSON: partition's top-level `key`, or, with
 * task, that task's `key`. */
static double partition_number(tq_client *c, const char *part, const char *task, const char *key)
{
    char *text = NULL;
    int rc = tq_partitions(c, part, &text);
    cr_assert(eq(int, rc, TQ_OK), "tq_partitions(%s): %s", part, tq_last_error(c));
    cJSON *doc = cJSON_Parse(text);
    const cJSON *o = cJSON_GetArrayItem(doc, 0);
    if (task != NULL)
        o = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "tasks"), task);
    const cJSON *v = cJSON_GetObjectItem(o, key);
    cr_assert(cJSON_IsNumber(v), "no number %s%s%s in %s", task ? task : "", task ? "." : "", key,
              text);
    double d = v->valuedouble;
    cJSON_Delete(doc);
    free(text);
    return d;
}

/* Rows of part whose field v the controller reports lost (production status 2). */
static int lost_rows(tq_client *c, const char *part, int rows, uint8_t *lost)
{
    uint8_t *st = NULL;
    int n = tq_production_status(c, part, 1, FIELD_V, &st);
    cr_assert(eq(int, n, rows), "production_status: %s", tq_last_error(c));
    int count = 0;
    for (int i = 0; i < n; i++) {
        cr_assert(le(u8, st[i], 2), "row %d: production status %u", i, st[i]);
        lost[i] = st[i] == 2;
        count += lost[i];
    }
    free(st);
    return count;
}

/* ---- 5: metas are their client's ---- */

/* A raw authenticated connection (its own client) tries every id: it may not
 * release or give back another client's metas, nor cancel its waits. */
Test(consume, strangers_cannot_release_or_cancel, .timeout = 90)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    tq_client *a = open_client(cl.address);
    const char *part = "p";
    put_rows(a, part, 0, 8);
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = 4, .timeout_ms = 0};
    tq_meta *held;
    cr_assert(eq(int, tq_get_meta(a, &fa, &held), TQ_OK), "%s", tq_last_error(a));
    /* a's stream waits in the controller for rows of a partition that has none */
    tq_fetch_args_t sa_args = {.partition = "later", .task = "t", .fields = FIELD_V,
                               .num_fields = 1, .batch_size = 1, .timeout_ms = 20000};
    tq_stream *sa;
    cr_assert(eq(int, tq_stream_open(a, &sa_args, &sa), TQ_OK));
    tq_test_sleep_ms(300); /* parked by now */

    int fd = tq_test_connect(tq_test_cluster_port(&cl), 5000);
    cr_assert(ge(int, fd, 0));
    size_t len;
    uint8_t *f = tq_test_hello_frame(1, &len);
    cr_assert(eq(int, tq_test_write_all(fd, f, len), 0));
    free(f);
    tq_test_answer_t ans;
    cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
    cr_assert(eq(int, ans.status, TQ_OK), "hello: %s", ans.message);
    cr_assert(eq(u32, ans.body_len, 20)); /* status, connection id, epoch */
    uint64_t own = tq_get_le64(ans.body + 4);
    tq_test_answer_free(&ans);
    /* every id below its own is a meta or a connection of someone */
    unsigned ok_unread = 0, ok_cancel = 0, refused = 0;
    for (uint64_t id = 1; id <= own + 16; id++) {
        uint8_t body[8];
        tq_put_le64(body, id);
        uint16_t types[3] = {TQ_MSG_RELEASE, TQ_MSG_RELEASE_UNREAD, TQ_MSG_CANCEL};
        for (int k = 0; k < 3; k++) {
            f = tq_test_frame(types[k], 0, 100 * id + (uint64_t)k, body, 8, &len);
            cr_assert(eq(int, tq_test_write_all(fd, f, len), 0));
            free(f);
            if (types[k] == TQ_MSG_RELEASE)
                continue; /* one-way */
            cr_assert(eq(int, tq_test_read_answer(fd, 5000, &ans), 0));
            cr_assert(ans.replied, "the controller closed the stranger's connection");
            if (ans.status == TQ_OK && types[k] == TQ_MSG_RELEASE_UNREAD)
                ok_unread++;
            else if (ans.status == TQ_OK && id != own)
                ok_cancel++;
            else if (ans.status == TQ_ERR_NOT_FOUND)
                refused++;
            tq_test_answer_free(&ans);
        }
    }
    close(fd);
    fprintf(stderr, "consume: a stranger tried ids 1..%llu: %u give-backs and %u cancels "
            "accepted, %u refused\n", (unsigned long long)own + 16, ok_unread, ok_cancel, refused);
    cr_expect(eq(u32, ok_unread, 0), "a stranger gave back another client's meta");
    cr_expect(eq(u32, ok_cancel, 0), "a stranger cancelled another client's wait");

    /* a still holds its rows: consumed, pinned (a clear frees nothing yet), readable */
    uint8_t *cons = NULL;
    int n = tq_consumption_status(a, part, "t", &cons);
    cr_assert(eq(int, n, 8));
    int consumed = 0;
    for (int i = 0; i < n; i++)
        consumed += cons[i] != 0;
    free(cons);
    cr_expect(eq(int, consumed, 4), "rows consumed by a after the stranger: %d", consumed);
    tq_batch *b = NULL;
    int rc = tq_get_data(a, held, &b);
    cr_assert(eq(int, rc, TQ_OK), "a's read: %s", tq_last_error(a));
    for (uint32_t i = 0; i < 4; i++)
        cr_expect(eq(i64, row_v(b, i), tq_test_row_value(tq_meta_indexes(held)[i])));
    tq_batch_destroy(b);
    cr_assert(eq(int, tq_clear_partition(a, part), TQ_OK));
    uint64_t used_after = 0;
    units_alive(a, &used_after);
    cr_expect(used_after > 0, "a's pins went: the cleared rows freed every byte");
    /* a's stream still waits: a row that comes is its */
    uint64_t t0 = tq_test_now_ms();
    put_rows(a, "later", 0, 1);
    tq_meta *m = NULL;
    rc = tq_stream_next(sa, &b, &m);
    cr_expect(eq(int, rc, TQ_OK), "a's stream after the stranger: %s (%s)", tq_status_string(rc),
              tq_last_error(a));
    if (rc == TQ_OK) {
        cr_expect(eq(i64, row_v(b, 0), tq_test_row_value(0)));
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    fprintf(stderr, "consume: a's stream got the row %llu ms after its put\n",
            (unsigned long long)(tq_test_now_ms() - t0));
    /* a's own connections still may: free (RELEASE) and close (CANCEL), at once */
    tq_meta_free(held);
    t0 = tq_test_now_ms();
    tq_stream_close(sa);
    cr_expect(lt(u64, tq_test_now_ms() - t0, 2000), "closing a's stream took %llu ms",
              (unsigned long long)(tq_test_now_ms() - t0));
    cr_assert(eq(int, tq_clear_partition(a, "later"), TQ_OK));
    t0 = tq_test_now_ms();
    while (units_alive(a, &used_after) && used_after != 0 && tq_test_now_ms() - t0 < 5000)
        tq_test_sleep_ms(10);
    cr_expect(eq(u64, used_after, 0), "a released its meta, yet %llu bytes stay pinned",
              (unsigned long long)used_after);
    tq_close(a);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- 6 and 7: a unit killed under two streams ---- */

Test(consume, unit_killed_mid_stream, .timeout = 120)
{
    enum { ROWS = 64, BATCH = 8 };
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "32M"), 0));
    tq_client *c[2] = {open_client(cl.address), open_client(cl.address)};
    const char *part = "data";
    put_rows(c[0], part, 0, ROWS);
    cr_assert(eq(int, tq_partition_seal(c[0], part), TQ_OK));
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = BATCH, .timeout_ms = 10000, .prefetch = 2};
    tq_stream *s[2];
    for (int i = 0; i < 2; i++)
        cr_assert(eq(int, tq_stream_open(c[i], &fa, &s[i]), TQ_OK));
    uint8_t seen[ROWS] = {0};
    unsigned got = 0, after = 0, errors = 0;
    for (int k = 0; k < 2; k++) { /* 16 rows taken before the kill */
        tq_batch *b;
        tq_meta *m;
        cr_assert(eq(int, tq_stream_next(s[0], &b, &m), TQ_OK), "%s", tq_last_error(c[0]));
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            seen[ix]++, got++;
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    cr_assert(eq(int, tq_test_cluster_kill_unit(&cl, 0), 0));
    wait_alive(c[0], 1);

    /* both streams, in turn, to their end: every row once, errors said as they are */
    bool ended[2] = {false, false};
    int last_error = TQ_OK;
    uint64_t t0 = tq_test_now_ms();
    for (int round = 0; !(ended[0] && ended[1]) && round < 200; round++) {
        cr_assert(lt(u64, tq_test_now_ms() - t0, 60000), "the streams did not end in 60 s");
        int i = round % 2;
        if (ended[i])
            continue;
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s[i], &b, &m);
        if (rc == TQ_ERR_END) {
            ended[i] = true;
            continue;
        }
        if (rc != TQ_OK) {
            errors++;
            last_error = rc;
            cr_assert(le(u32, errors, 20), "stream %d: errors without end, the last %s (%s)", i,
                      tq_status_string(rc), tq_last_error(c[i]));
            continue;
        }
        for (uint32_t r = 0; r < tq_meta_rows(m); r++) {
            int64_t ix = tq_meta_indexes(m)[r];
            cr_assert(eq(i64, row_v(b, r), tq_test_row_value(ix)), "row %lld", (long long)ix);
            seen[ix]++, got++, after++;
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    uint8_t lost[ROWS];
    int n_lost = lost_rows(c[0], part, ROWS, lost);
    int lost_unseen = 0;
    for (int i = 0; i < ROWS; i++)
        lost_unseen += lost[i] && !seen[i];
    fprintf(stderr, "consume: a unit killed after 16 of %d rows: the streams then took %u, with "
            "%u errors (last %s); %d rows lost (%d never read), %u rows read in all\n", ROWS, after,
            errors, tq_status_string(last_error), n_lost, lost_unseen, got);
    cr_assert(ended[0] && ended[1], "the streams did not end");
    for (int i = 0; i < ROWS; i++) {
        cr_expect(le(u8, seen[i], 1), "row %d read %u times", i, seen[i]);
        if (!lost[i]) /* a lost row was read only if its bytes came before the kill */
            cr_expect(eq(u8, seen[i], 1), "surviving row %d was never read", i);
    }
    cr_expect(n_lost > 0, "no row was on the killed unit");
    cr_expect(lt(int, n_lost, ROWS), "every row was on the killed unit");
    cr_expect(eq(u32, got + (unsigned)lost_unseen, ROWS), "read + lost unread");
    /* the loss is reported, and lost rows are offered to nobody */
    cr_expect(eq(dbl, partition_number(c[0], part, NULL, "lost"), n_lost));
    tq_fetch_args_t fresh = fa;
    fresh.task = "fresh";
    fresh.batch_size = ROWS;
    fresh.timeout_ms = 0;
    tq_meta *m = NULL;
    cr_assert(eq(int, tq_get_meta(c[1], &fresh, &m), TQ_OK), "%s", tq_last_error(c[1]));
    cr_expect(eq(u32, tq_meta_rows(m), (uint32_t)(ROWS - n_lost)), "a fresh task was offered");
    for (uint32_t i = 0; i < tq_meta_rows(m); i++)
        cr_expect(eq(u8, lost[tq_meta_indexes(m)[i]], 0), "lost row %lld offered",
                  (long long)tq_meta_indexes(m)[i]);
    tq_meta_free(m);
    cr_expect(eq(int, tq_get_meta(c[1], &fresh, &m), TQ_ERR_END));
    for (int i = 0; i < 2; i++) {
        tq_stream_close(s[i]);
        tq_close(c[i]);
    }
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- 6: a stream goes on after a unit is lost under it ---- */

/* A unit stops (SIGSTOP) under a stream: the read of its rows waits until the
 * client's timeout, by which time the controller has declared it dead, so the
 * stream says TQ_ERR_LOST, gives the batch back, and goes on with the rest.
 * UCX over TCP is the transport whose reads wait for a stopped peer. */
Test(consume, stream_goes_on_after_lost, .timeout = 120)
{
    enum { ROWS = 64, BATCH = 8 };
    if (tq__transport_find("ucx") == NULL)
        cr_skip_test("built without UCX, whose tcp transport is what waits for a stopped unit");
    setenv("TQ_TRANSPORT", "ucx", 1);
    setenv("UCX_TLS", "tcp,self", 1);
    setenv("TQ_TIMEOUT_MS", "4000", 1); /* past the controller's 2 s without heartbeat */
    const char *cargs[] = {"--heartbeat-timeout-ms", "2000", NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 2, "32M", cargs, NULL), 0));
    tq_client *c = open_client(cl.address);
    const char *part = "data";
    put_rows(c, part, 0, ROWS);
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK));
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = BATCH, .timeout_ms = 10000, .prefetch = 1};
    tq_stream *s;
    cr_assert(eq(int, tq_stream_open(c, &fa, &s), TQ_OK));
    uint8_t seen[ROWS] = {0};
    unsigned got = 0, errors = 0, after_error = 0;
    int first_error = TQ_OK;
    uint64_t t0 = tq_test_now_ms();
    for (int k = 0;; k++) {
        cr_assert(lt(u64, tq_test_now_ms() - t0, 60000), "the stream did not end in 60 s");
        if (k == 2)
            cr_assert(eq(int, kill(cl.units[0], SIGSTOP), 0)); /* after 16 rows */
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        if (rc != TQ_OK) {
            fprintf(stderr, "consume: stream_next after %u rows: %s (%s)\n", got,
                    tq_status_string(rc), tq_last_error(c));
            first_error = errors++ ? first_error : rc;
            cr_assert(lt(u32, errors, 10), "errors without end");
            continue;
        }
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            cr_assert(eq(i64, row_v(b, i), tq_test_row_value(ix)), "row %lld", (long long)ix);
            seen[ix]++, got++;
            after_error += errors > 0;
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    kill(cl.units[0], SIGKILL);
    tq_test_reap(cl.units[0], 5000);
    cl.units[0] = 0;
    uint8_t lost[ROWS];
    int n_lost = lost_rows(c, part, ROWS, lost);
    fprintf(stderr, "consume: a unit stopped after 16 of %d rows: %u errors (the first %s), %u "
            "rows after it, %u in all; %d rows lost\n", ROWS, errors,
            tq_status_string(first_error), after_error, got, n_lost);
    cr_expect(eq(int, first_error, TQ_ERR_LOST), "the stream's first error");
    cr_expect(after_error > 0, "no row came after the error");
    cr_expect(n_lost > 0, "no row was on the stopped unit");
    for (int i = 0; i < ROWS; i++) {
        cr_expect(le(u8, seen[i], 1), "row %d read %u times", i, seen[i]);
        if (!lost[i])
            cr_expect(eq(u8, seen[i], 1), "surviving row %d was never read", i);
    }
    tq_stream_close(s);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
    unsetenv("TQ_TRANSPORT");
    unsetenv("UCX_TLS");
    unsetenv("TQ_TIMEOUT_MS");
}

/* ---- 6: a stream goes on after the controller is back ---- */

Test(consume, stream_goes_on_after_controller_restart, .timeout = 120)
{
    setenv("TQ_TIMEOUT_MS", "2000", 1);
    enum { ROWS = 32, BATCH = 8 };
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    char address[128];
    snprintf(address, sizeof(address), "%s", cl.address);
    tq_client *c = open_client(address);
    const char *part = "data";
    put_rows(c, part, 0, ROWS / 2);
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = BATCH, .timeout_ms = 3000, .prefetch = 1};
    tq_stream *s;
    cr_assert(eq(int, tq_stream_open(c, &fa, &s), TQ_OK));
    uint8_t seen[ROWS] = {0};
    for (int k = 0; k < 2; k++) {
        tq_batch *b;
        tq_meta *m;
        cr_assert(eq(int, tq_stream_next(s, &b, &m), TQ_OK), "%s", tq_last_error(c));
        for (uint32_t i = 0; i < tq_meta_rows(m); i++)
            seen[tq_meta_indexes(m)[i]]++;
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    tq_test_sleep_ms(200); /* the next fetch waits in the controller */
    cr_assert(eq(int, kill(cl.controller, SIGKILL), 0));
    tq_test_reap(cl.controller, 5000);
    cl.controller = 0;
    for (unsigned i = 0; i < cl.num_units; i++) { /* units end with their controller */
        tq_test_reap(cl.units[i], 10000);
        cl.units[i] = 0;
    }
    tq_test_cluster_stop(&cl);

    /* while it is gone: errors, each in time, and never the end */
    for (int k = 0; k < 3; k++) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        uint64_t t0 = tq_test_now_ms();
        int rc = tq_stream_next(s, &b, &m);
        uint64_t took = tq_test_now_ms() - t0;
        fprintf(stderr, "consume: stream_next %d with the controller dead: %s in %llu ms (%s)\n",
                k, tq_status_string(rc), (unsigned long long)took, tq_last_error(c));
        cr_assert(ne(int, rc, TQ_ERR_END), "call %d: the end, with the controller gone", k);
        cr_assert(ne(int, rc, TQ_OK), "call %d: rows with the controller gone", k);
        cr_expect(lt(u64, took, 8000), "call %d took %llu ms", k, (unsigned long long)took);
    }

    /* a new controller on the same address, with the rest of the rows: the stream goes
     * on. Its first unit is small, so every row is on the second (the client may still
     * hold an endpoint of an old unit 1) */
    const char *listen[] = {"--listen", address, NULL};
    tq_test_cluster cl2;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl2, 1, "1M", listen, NULL), 0));
    cr_assert(eq(int, tq_test_cluster_add_unit(&cl2, "32M", NULL), 0));
    cr_assert(eq(int, tq_test_wait_units(cl2.address, 2, 10000), 0));
    tq_client *w = open_client(address);
    put_rows(w, part, ROWS / 2, ROWS / 2);
    cr_assert(eq(int, tq_partition_seal(w, part), TQ_OK));
    unsigned errors = 0, got = 0;
    uint64_t t0 = tq_test_now_ms();
    for (;;) {
        cr_assert(lt(u64, tq_test_now_ms() - t0, 30000), "the stream did not end in 30 s");
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        if (rc != TQ_OK) {
            cr_assert(lt(u32, ++errors, 10), "errors after the restart, the last %s (%s)",
                      tq_status_string(rc), tq_last_error(c));
            continue;
        }
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            cr_assert(eq(i64, row_v(b, i), tq_test_row_value(ix)), "row %lld", (long long)ix);
            seen[ix]++, got++;
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    fprintf(stderr, "consume: after the restart the stream took %u rows (%u errors), then "
            "ended\n", got, errors);
    for (int i = 0; i < ROWS; i++)
        cr_expect(eq(u8, seen[i], 1), "row %d read %u times", i, seen[i]);
    tq_stream_close(s);
    tq_close(w);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl2), 0));
    unsetenv("TQ_TIMEOUT_MS");
}

/* ---- 7: a failed read gives its rows back; lost rows are reported ---- */

Test(consume, failed_read_gives_rows_back, .timeout = 120)
{
    enum { ROWS = 8 };
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "32M"), 0));
    tq_client *c = open_client(cl.address);
    const char *part = "data";
    put_rows(c, part, 0, ROWS);
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK));
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = ROWS, .timeout_ms = 0};
    tq_meta *m = NULL;
    cr_assert(eq(int, tq_get_meta(c, &fa, &m), TQ_OK));
    cr_assert(eq(u32, tq_meta_rows(m), ROWS));
    cr_assert(eq(int, tq_test_cluster_kill_unit(&cl, 0), 0));
    wait_alive(c, 1);
    tq_batch *b = NULL;
    int rc = tq_get_data(c, m, &b);
    cr_assert(eq(int, rc, TQ_ERR_LOST), "a read of a dead unit's rows: %s", tq_status_string(rc));
    tq_meta_free(m); /* nothing delivered: every row goes back */

    /* the surviving rows, and only they, come again: the final batch, then the end */
    rc = tq_get_meta(c, &fa, &m);
    cr_assert(eq(int, rc, TQ_OK), "after the failed read: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    uint8_t lost[ROWS];
    int n_lost = lost_rows(c, part, ROWS, lost);
    cr_assert(n_lost > 0, "no row reported lost");
    cr_assert(lt(int, n_lost, ROWS));
    fprintf(stderr, "consume: a batch of %d rows, %d of them on a unit killed before the read: "
            "%u offered again\n", ROWS, n_lost, tq_meta_rows(m));
    cr_expect(eq(u32, tq_meta_rows(m), (uint32_t)(ROWS - n_lost)), "rows offered again");
    cr_assert(eq(int, tq_get_data(c, m, &b), TQ_OK), "%s", tq_last_error(c));
    for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        cr_expect(eq(u8, lost[ix], 0), "lost row %lld offered", (long long)ix);
        cr_expect(eq(i64, row_v(b, i), tq_test_row_value(ix)));
    }
    tq_batch_destroy(b);
    cr_expect(eq(dbl, partition_number(c, part, "t", "in_flight"), tq_meta_rows(m)));
    tq_meta_free(m);
    cr_expect(eq(int, tq_get_meta(c, &fa, &m), TQ_ERR_END));
    /* reported: status, partitions (JSON and tqctl) */
    cr_expect(eq(dbl, partition_number(c, part, NULL, "lost"), n_lost));
    cr_expect(eq(dbl, partition_number(c, part, "t", "consumed"), ROWS - n_lost));
    uint64_t t0 = tq_test_now_ms(); /* RELEASE is one-way */
    while (partition_number(c, part, "t", "in_flight") != 0 && tq_test_now_ms() - t0 < 5000)
        tq_test_sleep_ms(10);
    cr_expect(eq(dbl, partition_number(c, part, "t", "in_flight"), 0));
    char cmd[512], out[4096], want[64];
    snprintf(cmd, sizeof(cmd), "%s/tqctl --controller %s partitions %s", TQ_TOOLS_DIR,
             cl.address, part);
    cr_assert(eq(int, tq_test_run(cmd, out, sizeof(out)), 0), "%s", cmd);
    snprintf(want, sizeof(want), "lost %d", n_lost);
    cr_expect(strstr(out, want) != NULL, "tqctl partitions says:\n%s", out);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- 7: a consumer killed after its stream read ahead ---- */

Test(consume, killed_consumer_rows_go_to_another, .timeout = 120)
{
    enum { ROWS = 40, BATCH = 4, PREFETCH = 4 };
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    tq_client *c = open_client(cl.address);
    const char *part = "data";
    put_rows(c, part, 0, ROWS);
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK));

    char file[128], s_batch[8], s_prefetch[8];
    snprintf(file, sizeof(file), "%s/taken", cl.dir);
    snprintf(s_batch, sizeof(s_batch), "%d", BATCH);
    snprintf(s_prefetch, sizeof(s_prefetch), "%d", PREFETCH);
    const char *args[] = {cl.address, part, "t", "v", s_batch, s_prefetch, "1", file, NULL};
    pid_t pid = tq_test_spawn_job("stream_hold", args);
    cr_assert(pid > 0, "cannot spawn the consumer");
    uint64_t t0 = tq_test_now_ms();
    while (access(file, F_OK) != 0 && tq_test_now_ms() - t0 < 20000)
        tq_test_sleep_ms(10);
    cr_assert(eq(int, access(file, F_OK), 0), "the consumer took nothing");
    uint8_t taken[ROWS] = {0};
    FILE *f = fopen(file, "r");
    cr_assert(ne(ptr, f, NULL));
    long long ix;
    int n_taken = 0;
    while (fscanf(f, "%lld", &ix) == 1) {
        cr_assert(ix >= 0 && ix < ROWS);
        taken[ix] = 1;
        n_taken++;
    }
    fclose(f);
    cr_assert(eq(int, n_taken, BATCH));
    /* its stream reads PREFETCH batches ahead */
    int consumed = 0;
    t0 = tq_test_now_ms();
    while ((consumed = (int)partition_number(c, part, "t", "consumed")) < (PREFETCH + 1) * BATCH &&
           tq_test_now_ms() - t0 < 10000)
        tq_test_sleep_ms(10);
    cr_assert(eq(int, consumed, (PREFETCH + 1) * BATCH), "the consumer read ahead %d rows",
              consumed - BATCH);
    kill(pid, SIGKILL);
    tq_test_reap(pid, 5000);

    /* another consumer of the task gets every row the killed one did not return */
    tq_fetch_args_t fa = {.partition = part, .task = "t", .fields = FIELD_V, .num_fields = 1,
                          .batch_size = BATCH, .timeout_ms = 5000, .prefetch = 2};
    tq_stream *s;
    cr_assert(eq(int, tq_stream_open(c, &fa, &s), TQ_OK));
    uint8_t seen[ROWS] = {0};
    int got = 0;
    for (int k = 0; k <= ROWS; k++) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        cr_assert(eq(int, rc, TQ_OK), "after %d rows: %s (%s)", got, tq_status_string(rc),
                  tq_last_error(c));
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t r = tq_meta_indexes(m)[i];
            cr_assert(eq(i64, row_v(b, i), tq_test_row_value(r)));
            seen[r]++, got++;
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    fprintf(stderr, "consume: a consumer killed holding %d rows read ahead: the next one got %d "
            "rows (want %d)\n", PREFETCH * BATCH, got, ROWS - BATCH);
    for (int i = 0; i < ROWS; i++)
        cr_expect(eq(u8, seen[i], !taken[i]), "row %d: read %u times, taken by the killed "
                  "consumer: %d", i, seen[i], taken[i]);
    tq_stream_close(s);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
