/* test_deadlines.c: against a frozen controller, meta frees, queued requests and parked fetches end in bounded time. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "helpers.h"
#include "tq/tq.h"

/*
 * The controller is frozen with SIGSTOP: its sockets still accept and
 * acknowledge (the kernel does that), but nothing answers. The client's
 * timeout is 1 s (TQ_TIMEOUT_MS) in every test here.
 */
#define TIMEOUT_MS 1000
#define ROW_WORDS  64

static tq_test_cluster cluster;
static bool frozen;

static void freeze(void)
{
    cr_assert(eq(int, kill(cluster.controller, SIGSTOP), 0));
    frozen = true;
}

static void thaw(void)
{
    if (frozen && cluster.controller > 0)
        kill(cluster.controller, SIGCONT);
    frozen = false;
}

static void setup(void)
{
    setenv("TQ_TIMEOUT_MS", "1000", 1);
    cr_assert(eq(int, tq_test_cluster_start(&cluster, 1, "32M"), 0));
}

/* A failed test may leave the controller frozen: it must be thawed to stop cleanly. */
static void teardown(void)
{
    thaw();
    tq_test_cluster_stop(&cluster);
}

static tq_client *open_client(void)
{
    tq_client *c;
    int rc = tq_open(cluster.address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", cluster.address, tq_last_error(NULL));
    return c;
}

static const char *const FIELD_V[] = {"v"};

/* Put one row of field "v" at index i of partition. */
static void put_row(tq_client *c, const char *partition, int64_t i)
{
    int64_t data[ROW_WORDS], shape[1] = {ROW_WORDS};
    for (int k = 0; k < ROW_WORDS; k++)
        data[k] = tq_test_row_value(i) ^ k;
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    int rc = tq_put(c, partition, b, &i, NULL);
    cr_assert(eq(int, rc, TQ_OK), "put row %lld: %s", (long long)i, tq_last_error(c));
    tq_batch_destroy(b);
}

static tq_fetch_args_t fetch_args(const char *partition, int timeout_ms)
{
    return (tq_fetch_args_t){.partition = partition, .task = "t", .fields = FIELD_V,
                             .num_fields = 1, .batch_size = 1, .timeout_ms = timeout_ms};
}

/* Bytes allocated in the live units' pools. */
static uint64_t pool_used(tq_client *c)
{
    tq_unit_info_t *u = NULL;
    int n = tq_units(c, &u);
    cr_assert(n >= 0, "tq_units: %s (%s)", tq_status_string(n), tq_last_error(c));
    uint64_t used = 0;
    for (int i = 0; i < n; i++)
        used += u[i].alive ? u[i].used : 0;
    free(u);
    return used;
}

/* ---- meta frees ---- */

/* Freeing metas of a frozen controller returns at once, even with no idle
 * connection to send the RELEASEs on (the old code connected anew for each
 * and waited a whole timeout for the HELLO). */
Test(deadlines, meta_free_never_blocks, .init = setup, .fini = teardown, .timeout = 60)
{
    enum { METAS = 6 };
    tq_client *c = open_client();
    tq_meta *m[METAS];
    for (int i = 0; i < METAS; i++)
        put_row(c, "data", i);
    for (int i = 0; i < METAS; i++) {
        tq_fetch_args_t fa = fetch_args("data", 0);
        cr_assert(eq(int, tq_get_meta(c, &fa, &m[i]), TQ_OK), "%s", tq_last_error(c));
    }
    freeze();
    /* a call that times out drops its connection: none is idle for the frees */
    uint64_t t0 = tq_test_now_ms();
    cr_expect(tq_partition_seal(c, "other") < 0, "a call succeeded with the controller frozen");
    uint64_t seal_ms = tq_test_now_ms() - t0;
    t0 = tq_test_now_ms();
    for (int i = 0; i < METAS; i++)
        tq_meta_free(m[i]);
    uint64_t took = tq_test_now_ms() - t0;
    fprintf(stderr, "deadlines: controller frozen: a call timed out in %llu ms, then %d meta "
            "frees took %llu ms together\n", (unsigned long long)seal_ms, METAS,
            (unsigned long long)took);
    cr_expect(lt(u64, took, 1000), "%d meta frees took %llu ms with the controller frozen",
              METAS, (unsigned long long)took);
    thaw();
    /* thawed, the client works again */
    put_row(c, "data", METAS);
    tq_close(c);
}

typedef struct {
    tq_client      *c;
    const char     *partition;
    int             timeout_ms;
    int             rc;
    tq_meta        *meta;
    uint64_t        done_ms;
    pthread_mutex_t lock;
    bool            done;
} fetcher_t;

static void *fetcher_main(void *arg)
{
    fetcher_t *f = arg;
    tq_fetch_args_t fa = fetch_args(f->partition, f->timeout_ms);
    int rc = tq_get_meta(f->c, &fa, &f->meta);
    pthread_mutex_lock(&f->lock);
    f->rc = rc;
    f->done_ms = tq_test_now_ms();
    f->done = true;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static bool fetcher_done(fetcher_t *f)
{
    pthread_mutex_lock(&f->lock);
    bool done = f->done;
    pthread_mutex_unlock(&f->lock);
    return done;
}

/* Wait up to timeout_ms for the fetcher to return. */
static bool fetcher_wait(fetcher_t *f, int timeout_ms)
{
    uint64_t t0 = tq_test_now_ms();
    while (!fetcher_done(f) && tq_test_now_ms() - t0 < (uint64_t)timeout_ms)
        tq_test_sleep_ms(5);
    return fetcher_done(f);
}

/* RELEASEs that found no idle connection wait in the client and go out with
 * the next connection given back: the pins go, not only at the lease's end. */
Test(deadlines, queued_releases_are_delivered, .init = setup, .fini = teardown, .timeout = 60)
{
    enum { METAS = 6 };
    tq_client *c = open_client();
    tq_meta *m[METAS];
    for (int i = 0; i < METAS; i++)
        put_row(c, "data", i);
    for (int i = 0; i < METAS; i++) {
        tq_fetch_args_t fa = fetch_args("data", 0);
        cr_assert(eq(int, tq_get_meta(c, &fa, &m[i]), TQ_OK), "%s", tq_last_error(c));
    }
    /* a parked fetch takes the idle connection, the one the metas came by, and
     * keeps it open: their pins go only by RELEASE (or the 60 s lease) */
    put_row(c, "wait", 0);
    tq_fetch_args_t first = fetch_args("wait", 0);
    tq_meta *w;
    cr_assert(eq(int, tq_get_meta(c, &first, &w), TQ_OK), "%s", tq_last_error(c));
    tq_meta_free(w);
    fetcher_t f = {.c = c, .partition = "wait", .timeout_ms = -1};
    pthread_mutex_init(&f.lock, NULL);
    pthread_t t;
    cr_assert(eq(int, pthread_create(&t, NULL, fetcher_main, &f), 0));
    tq_test_sleep_ms(300);
    cr_assert(not(fetcher_done(&f)), "get_meta(-1) returned with no row ready: %d", f.rc);
    for (int i = 0; i < METAS; i++)
        tq_meta_free(m[i]);
    cr_assert(eq(int, tq_clear_partition(c, "data"), TQ_OK), "%s", tq_last_error(c));
    uint64_t t0 = tq_test_now_ms(), used = 0;
    while ((used = pool_used(c)) > ROW_WORDS * 8 && tq_test_now_ms() - t0 < 5000)
        tq_test_sleep_ms(20);
    fprintf(stderr, "deadlines: released pins freed %llu ms after the clear (%llu bytes "
            "still used)\n", (unsigned long long)(tq_test_now_ms() - t0),
            (unsigned long long)used);
    /* what is left is the row of "wait" */
    cr_expect(eq(u64, used, ROW_WORDS * 8), "the released rows' extents stayed pinned");
    put_row(c, "wait", 1);
    cr_assert(fetcher_wait(&f, 5000), "the parked fetch did not get the new row");
    pthread_join(t, NULL);
    cr_expect(eq(int, f.rc, TQ_OK), "parked get_meta: %s", tq_status_string(f.rc));
    tq_meta_free(f.meta);
    pthread_mutex_destroy(&f.lock);
    tq_close(c);
}

/* ---- non-blocking requests ---- */

/* 32 requests queue behind the client's few worker threads; each still fails
 * within its timeout counted from when it was made, not from when a worker
 * took it (the old code: the last one after 8 s). */
Test(deadlines, queued_requests_time_out_from_submission, .init = setup, .fini = teardown,
     .timeout = 90)
{
    enum { REQUESTS = 32 };
    const uint64_t bound_ms = TIMEOUT_MS + 1500; /* the timeout and a margin for a busy host */
    tq_client *c = open_client();
    int64_t shape[1] = {ROW_WORDS}, data[ROW_WORDS] = {0};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    cr_assert(eq(int, tq_kv_put(c, "kv", "k", b, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);
    freeze();
    const char *key = "k";
    tq_request *r[REQUESTS];
    uint64_t made[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        made[i] = tq_test_now_ms();
        cr_assert(eq(int, tq_kv_batch_get_nb(c, "kv", 1, &key, 0, NULL, &r[i]), TQ_OK), "%s",
                  tq_last_error(c));
    }
    uint64_t worst = 0;
    int failed = 0;
    for (int i = 0; i < REQUESTS; i++) {
        int rc = tq_request_wait(r[i], -1);
        uint64_t took = tq_test_now_ms() - made[i];
        worst = took > worst ? took : worst;
        failed += rc < 0;
        cr_expect(rc < 0, "request %d succeeded with the controller frozen", i);
        cr_expect(le(u64, took, bound_ms), "request %d ended %llu ms after it was made (%s)", i,
                  (unsigned long long)took, tq_last_error(c));
    }
    fprintf(stderr, "deadlines: controller frozen: %d of %d queued kv_batch_get_nb failed, the "
            "last %llu ms after it was made (timeout %d ms)\n", failed, REQUESTS,
            (unsigned long long)worst, TIMEOUT_MS);
    for (int i = 0; i < REQUESTS; i++)
        tq_request_free(r[i]);
    thaw();
    tq_batch *got = NULL;
    cr_expect(eq(int, tq_kv_batch_get(c, "kv", 1, &key, 0, NULL, &got), TQ_OK), "after SIGCONT: %s",
              tq_last_error(c));
    tq_batch_destroy(got);
    tq_close(c);
}

/* ---- parked fetches ---- */

/* A get_meta that waits for ever, parked in a controller that freezes, fails
 * within 1.5 timeouts: the client pings a silent controller on the parked
 * connection, and one that answers no ping within a timeout is given up. */
Test(deadlines, parked_get_meta_ends_when_controller_freezes, .init = setup, .fini = teardown,
     .timeout = 60)
{
    const uint64_t bound_ms = TIMEOUT_MS * 3 / 2 + 1500; /* the promise, and a margin */
    tq_client *c = open_client();
    put_row(c, "wait", 0);
    tq_fetch_args_t first = fetch_args("wait", 0);
    tq_meta *m;
    cr_assert(eq(int, tq_get_meta(c, &first, &m), TQ_OK), "%s", tq_last_error(c));
    tq_meta_free(m);
    fetcher_t f = {.c = c, .partition = "wait", .timeout_ms = -1};
    pthread_mutex_init(&f.lock, NULL);
    pthread_t t;
    cr_assert(eq(int, pthread_create(&t, NULL, fetcher_main, &f), 0));
    tq_test_sleep_ms(700); /* parked, and past a ping or so */
    cr_assert(not(fetcher_done(&f)), "get_meta(-1) returned with no row ready: %d", f.rc);
    freeze();
    uint64_t frozen_at = tq_test_now_ms();
    bool ended = fetcher_wait(&f, 8000);
    uint64_t took = (ended ? f.done_ms : tq_test_now_ms()) - frozen_at;
    fprintf(stderr, "deadlines: controller frozen under a parked get_meta(-1): %s after %llu ms "
            "(%s)\n", ended ? "it failed" : "still waiting", (unsigned long long)took,
            ended ? tq_status_string(f.rc) : "-");
    if (!ended) { /* thaw and give it its row, so the thread ends */
        thaw();
        put_row(c, "wait", 1);
        fetcher_wait(&f, 5000);
    }
    cr_expect(ended, "get_meta(-1) never returned with the controller frozen");
    cr_expect(le(u64, took, bound_ms), "it returned %llu ms after the freeze",
              (unsigned long long)took);
    cr_expect(eq(int, f.rc, ended ? TQ_ERR_CONNECTION : TQ_OK), "status %s",
              tq_status_string(f.rc));
    pthread_join(t, NULL);
    if (f.rc == TQ_OK)
        tq_meta_free(f.meta);
    pthread_mutex_destroy(&f.lock);
    thaw();
    /* thawed, it serves again, rows untouched by the fetch that gave up */
    put_row(c, "wait", 2);
    tq_fetch_args_t again = fetch_args("wait", 2000);
    cr_expect(eq(int, tq_get_meta(c, &again, &m), TQ_OK), "after SIGCONT: %s", tq_last_error(c));
    if (m != NULL)
        tq_meta_free(m);
    tq_close(c);
}

/* A healthy controller keeps a get_meta(-1) parked across many pings, and
 * serves it when its row comes. */
Test(deadlines, parked_get_meta_outlives_pings, .init = setup, .fini = teardown, .timeout = 60)
{
    tq_client *c = open_client();
    fetcher_t f = {.c = c, .partition = "later", .timeout_ms = -1};
    pthread_mutex_init(&f.lock, NULL);
    pthread_t t;
    cr_assert(eq(int, pthread_create(&t, NULL, fetcher_main, &f), 0));
    tq_test_sleep_ms(TIMEOUT_MS * 4); /* several ping rounds */
    cr_expect(not(fetcher_done(&f)), "a parked get_meta(-1) returned %s with no row ready",
              tq_status_string(f.rc));
    put_row(c, "later", 7);
    cr_assert(fetcher_wait(&f, 5000), "the parked fetch did not get its row");
    pthread_join(t, NULL);
    cr_expect(eq(int, f.rc, TQ_OK), "%s", tq_status_string(f.rc));
    if (f.rc == TQ_OK) {
        cr_expect(eq(u32, tq_meta_rows(f.meta), 1));
        cr_expect(eq(i64, tq_meta_indexes(f.meta)[0], 7));
        tq_meta_free(f.meta);
    }
    pthread_mutex_destroy(&f.lock);
    tq_close(c);
}
