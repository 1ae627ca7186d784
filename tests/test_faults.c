/* test_faults.c: real processes killed, frozen and refused: scenarios 18-20, leases, back-pressure, tokens, limits. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"
#include "util/common.h"
#include "wire.h"

#define MIB (1u << 20)

/* ---- small tools ---- */

typedef struct {
    unsigned alive;
    uint64_t used; /* bytes in live units' pools */
} pools_t;

static pools_t pools(tq_client *c)
{
    tq_unit_info_t *u = NULL;
    int n = tq_units(c, &u);
    cr_assert(n >= 0, "tq_units: %s (%s)", tq_status_string(n), tq_last_error(c));
    pools_t p = {0, 0};
    for (int i = 0; i < n; i++)
        if (u[i].alive)
            p.alive++, p.used += u[i].used;
    free(u);
    return p;
}

/* Poll until `used` is back to want, within timeout_ms. @return ms it took, or -1. */
static int64_t wait_used(tq_client *c, uint64_t want, int timeout_ms)
{
    uint64_t t0 = tq_test_now_ms();
    while (tq_test_now_ms() - t0 < (uint64_t)timeout_ms) {
        if (pools(c).used == want)
            return (int64_t)(tq_test_now_ms() - t0);
        tq_test_sleep_ms(10);
    }
    return -1;
}

/* Poll until `alive` units are alive, within timeout_ms. @return ms it took, or -1. */
static int64_t wait_alive(tq_client *c, unsigned alive, int timeout_ms)
{
    uint64_t t0 = tq_test_now_ms();
    while (tq_test_now_ms() - t0 < (uint64_t)timeout_ms) {
        if (pools(c).alive == alive)
            return (int64_t)(tq_test_now_ms() - t0);
        tq_test_sleep_ms(5);
    }
    return -1;
}

static bool file_appears(const char *path, int timeout_ms)
{
    uint64_t t0 = tq_test_now_ms();
    while (tq_test_now_ms() - t0 < (uint64_t)timeout_ms) {
        if (access(path, F_OK) == 0)
            return true;
        tq_test_sleep_ms(10);
    }
    return false;
}

static tq_client *open_client(const char *address)
{
    tq_client *c;
    int rc = tq_open(address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", address, tq_last_error(NULL));
    return c;
}

/* Row i of the "v" field: ROW_WORDS int64, all tq_test_row_value(i) ^ word. */
#define ROW_WORDS 512

static void row_fill(int64_t *w, int64_t i)
{
    for (int k = 0; k < ROW_WORDS; k++)
        w[k] = tq_test_row_value(i) ^ k;
}

/* Put one row of "v" at index i (one put each, so units take turns). */
static void put_row(tq_client *c, const char *partition, int64_t i)
{
    int64_t data[ROW_WORDS], shape[1] = {ROW_WORDS};
    row_fill(data, i);
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    int rc = tq_put(c, partition, b, &i, NULL);
    cr_assert(eq(int, rc, TQ_OK), "put row %lld: %s", (long long)i, tq_last_error(c));
    tq_batch_destroy(b);
}

/* A batch of rows x row_bytes bytes of field "x" over data (borrowed). */
static tq_batch *bytes_batch(uint32_t rows, uint64_t row_bytes, const uint8_t *data)
{
    int64_t shape[1] = {(int64_t)row_bytes};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "x", TQ_DTYPE_U8, 1, shape, data), TQ_OK));
    return b;
}

static const char *const FIELD_V[] = {"v"};

/* ---- 18: a storage unit killed during traffic ---- */

Test(faults, unit_killed_during_traffic, .timeout = 120)
{
    enum { ROWS = 64 };
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "64M"), 0));
    tq_client *c = open_client(cl.address);
    const char *part = "data";
    for (int64_t i = 0; i < ROWS; i++)
        put_row(c, part, i);

    /* traffic from another process while the unit dies */
    const char *args[] = {cl.address, "traffic", "65536", "4", NULL};
    pid_t traffic = tq_test_spawn_job("put_loop", args);
    cr_assert(traffic > 0);
    tq_test_sleep_ms(200);

    uint64_t t0 = tq_test_now_ms();
    cr_assert(eq(int, kill(cl.units[0], SIGKILL), 0));
    int64_t detect_ms = wait_alive(c, 1, 10000);
    cr_assert(detect_ms >= 0, "the killed unit was never declared dead");
    fprintf(stderr, "faults: unit killed (-9): declared dead after %lld ms\n",
            (long long)(tq_test_now_ms() - t0));

    /* every row reads right or as lost, one at a time: never wrong bytes */
    unsigned right = 0, lost = 0, offered = 0;
    tq_fetch_args_t fa = {.partition = part, .task = "reader", .fields = FIELD_V,
                          .num_fields = 1, .batch_size = 1, .timeout_ms = 0};
    for (int k = 0; k < ROWS; k++) {
        tq_meta *m;
        int rc = tq_get_meta(c, &fa, &m);
        if (rc == TQ_ERR_TIMEOUT)
            break; /* no more rows offered */
        cr_assert(eq(int, rc, TQ_OK), "get_meta: %s", tq_last_error(c));
        offered++;
        int64_t i = tq_meta_indexes(m)[0];
        tq_batch *got = NULL;
        rc = tq_get_data(c, m, &got);
        if (rc == TQ_ERR_LOST) {
            lost++;
        } else {
            cr_assert(eq(int, rc, TQ_OK), "get_data of row %lld: %s", (long long)i,
                      tq_last_error(c));
            int64_t want[ROW_WORDS];
            row_fill(want, i);
            size_t n = 0;
            const void *p = tq_batch_row(got, "v", 0, &n, NULL);
            tq_assert_bytes_eq(p, n, want, sizeof(want), "a surviving row");
            right++;
        }
        tq_batch_destroy(got);
        tq_meta_free(m);
    }
    lost += ROWS - offered; /* rows no longer offered as ready count as lost too */
    fprintf(stderr, "faults: of %d rows, %u read right and %u lost (%u offered)\n", ROWS, right,
            lost, offered);
    cr_expect(lt(u32, 0, right), "the other unit serves nothing");
    cr_expect(lt(u32, 0, lost), "no row was on the killed unit");
    cr_expect(eq(u32, right + lost, ROWS));

    /* new puts go to the unit alive, and read back */
    for (int64_t i = ROWS; i < ROWS + 16; i++)
        put_row(c, "after", i);
    fa.partition = "after";
    fa.batch_size = 16;
    tq_meta *m;
    tq_batch *got;
    cr_assert(eq(int, tq_get_meta(c, &fa, &m), TQ_OK));
    cr_assert(eq(int, tq_get_data(c, m, &got), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(got);
    tq_meta_free(m);

    /* a restarted unit is a new incarnation */
    tq_unit_info_t *before = NULL;
    int n_before = tq_units(c, &before);
    uint32_t max_inc = 0;
    for (int i = 0; i < n_before; i++)
        max_inc = before[i].incarnation > max_inc ? before[i].incarnation : max_inc;
    free(before);
    cr_assert(eq(int, tq_test_cluster_add_unit(&cl, "64M", NULL), 0));
    cr_assert(wait_alive(c, 2, 20000) >= 0, "the restarted unit never came");
    tq_unit_info_t *after = NULL;
    int n_after = tq_units(c, &after);
    bool fresh = false;
    for (int i = 0; i < n_after; i++)
        fresh |= after[i].alive && after[i].incarnation > max_inc;
    free(after);
    cr_expect(fresh, "the restarted unit took an old incarnation");

    kill(traffic, SIGKILL);
    tq_test_reap(traffic, 5000);
    tq_close(c);
    tq_test_reap(cl.units[0], 5000);
    cl.units[0] = 0; /* reaped: stop skips it */
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

Test(faults, silent_unit_dies_by_heartbeat, .timeout = 60)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "32M"), 0));
    tq_client *c = open_client(cl.address);
    uint64_t t0 = tq_test_now_ms();
    cr_assert(eq(int, kill(cl.units[1], SIGSTOP), 0)); /* alive, connected, silent */
    cr_assert(wait_alive(c, 1, 15000) >= 0, "a silent unit was never declared dead");
    uint64_t took = tq_test_now_ms() - t0;
    fprintf(stderr, "faults: unit frozen (SIGSTOP): declared dead after %llu ms\n",
            (unsigned long long)took);
    cr_expect(ge(u64, took, 2500), "declared dead before the 3 s heartbeat timeout");
    cr_expect(le(u64, took, 5000));
    kill(cl.units[1], SIGKILL);
    tq_test_reap(cl.units[1], 5000);
    cl.units[1] = 0;
    tq_close(c);
    tq_test_cluster_stop(&cl);
}

/* ---- 19: a client killed in the middle of a put ---- */

Test(faults, client_killed_mid_put, .timeout = 120)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "64M"), 0));
    tq_client *c = open_client(cl.address);
    uint64_t base = pools(c).used;

    /* killed between ALLOC and COMMIT, exactly */
    char ready[128];
    snprintf(ready, sizeof(ready), "%s/alloc-ready", cl.dir);
    char bytes[32];
    snprintf(bytes, sizeof(bytes), "%u", 16 * MIB);
    const char *args[] = {cl.address, "held", bytes, ready, NULL};
    pid_t holder = tq_test_spawn_job("alloc_hold", args);
    cr_assert(holder > 0);
    cr_assert(file_appears(ready, 20000), "the allocation was never answered");
    cr_assert(ge(u64, pools(c).used, base + 16 * MIB));
    kill(holder, SIGKILL);
    tq_test_reap(holder, 5000);
    int64_t ms = wait_used(c, base, 5000);
    cr_assert(ms >= 0, "the dead client's allocation was never reclaimed");
    fprintf(stderr, "faults: client killed between alloc and commit: 16 MiB back in %lld ms\n",
            (long long)ms);

    /* killed at whatever point of a put loop: committed rows stay, the rest comes back */
    for (int round = 0; round < 3; round++) {
        const char *loop[] = {cl.address, "loop", "1048576", "8", NULL};
        pid_t p = tq_test_spawn_job("put_loop", loop);
        cr_assert(p > 0);
        tq_test_sleep_ms(300 + 137 * round);
        kill(p, SIGKILL);
        tq_test_reap(p, 5000);
        int rc = tq_clear_partition(c, "loop"); /* its committed rows */
        cr_assert(rc == TQ_OK || rc == TQ_ERR_NOT_FOUND, "%s", tq_last_error(c));
        cr_assert(wait_used(c, base, 5000) >= 0, "round %d: pool use never came back (%llu "
                  "bytes, was %llu)", round, (unsigned long long)pools(c).used,
                  (unsigned long long)base);
    }
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

Test(faults, stuck_client_loses_its_lease, .timeout = 60)
{
    /* a client writes only while its whole timeout fits in the lease: keep it short */
    setenv("TQ_TIMEOUT_MS", "400", 1);
    const char *cargs[] = {"--lease-ms", "1000", NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "32M", cargs, NULL), 0));
    tq_client *c = open_client(cl.address);
    uint64_t base = pools(c).used;

    /* an allocation never committed by a client that stays connected */
    char ready[128];
    snprintf(ready, sizeof(ready), "%s/alloc-ready", cl.dir);
    const char *args[] = {cl.address, "stuck", "8388608", ready, NULL};
    pid_t holder = tq_test_spawn_job("alloc_hold", args);
    cr_assert(holder > 0);
    cr_assert(file_appears(ready, 20000));
    cr_assert(ge(u64, pools(c).used, base + 8 * MIB));
    int64_t ms = wait_used(c, base, 5000);
    cr_assert(ms >= 0, "the allocation outlived its lease");
    fprintf(stderr, "faults: uncommitted allocation let go %lld ms after it was seen\n",
            (long long)ms);

    /* rows pinned by a meta nobody releases: cleared, they still hold their extent... */
    static uint8_t data[MIB];
    memset(data, 0x5a, sizeof(data));
    tq_batch *b = bytes_batch(1, MIB, data);
    cr_assert(eq(int, tq_put(c, "pinned", b, NULL, NULL), TQ_OK));
    tq_batch_destroy(b);
    static const char *const x[] = {"x"};
    tq_fetch_args_t fa = {.partition = "pinned", .task = "t", .fields = x, .num_fields = 1,
                          .batch_size = 1, .timeout_ms = 0};
    tq_meta *m;
    cr_assert(eq(int, tq_get_meta(c, &fa, &m), TQ_OK));
    cr_assert(eq(int, tq_clear_partition(c, "pinned"), TQ_OK));
    cr_assert(ge(u64, pools(c).used, base + MIB), "a pinned extent was freed");
    /* ...until the lease runs out; then the client will not trust a read of them */
    cr_assert(wait_used(c, base, 5000) >= 0, "the pin outlived its lease");
    tq_batch *got = NULL;
    int rc = tq_get_data(c, m, &got);
    cr_expect(eq(int, rc, TQ_ERR_TIMEOUT), "a read past the lease gave %s",
              tq_status_string(rc));
    cr_expect(got == NULL);
    tq_meta_free(m);

    kill(holder, SIGKILL);
    tq_test_reap(holder, 5000);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- 20: the controller killed ---- */

typedef struct {
    tq_client *c;
    int        rc;
    uint64_t   took_ms;
} waiter_t;

static void *wait_forever(void *arg)
{
    waiter_t *w = arg;
    tq_fetch_args_t fa = {.partition = "empty", .task = "t", .fields = FIELD_V,
                          .num_fields = 1, .batch_size = 1, .timeout_ms = -1};
    tq_meta *m = NULL;
    uint64_t t0 = tq_test_now_ms();
    w->rc = tq_get_meta(w->c, &fa, &m);
    w->took_ms = tq_test_now_ms() - t0;
    tq_meta_free(m);
    return NULL;
}

/* Run one call and check it fails (or, for a read of pinned data, is right) in time. */
#define EXPECT_FAILS_IN_TIME(call, limit_ms, worst)                                     \
    do {                                                                                \
        uint64_t t0_ = tq_test_now_ms();                                                \
        int rc_ = (call);                                                               \
        uint64_t took_ = tq_test_now_ms() - t0_;                                        \
        cr_expect(rc_ < 0, "%s succeeded with the controller dead", #call);             \
        cr_expect(le(u64, took_, (limit_ms)), "%s took %llu ms", #call,                \
                  (unsigned long long)took_);                                           \
        (worst) = took_ > (worst) ? took_ : (worst);                                    \
    } while (0)

Test(faults, controller_killed, .timeout = 90)
{
    setenv("TQ_TIMEOUT_MS", "2000", 1);
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "32M"), 0));
    tq_client *c = open_client(cl.address);
    for (int64_t i = 0; i < 4; i++)
        put_row(c, "data", i);
    tq_fetch_args_t fa = {.partition = "data", .task = "t", .fields = FIELD_V,
                          .num_fields = 1, .batch_size = 2, .timeout_ms = 0};
    tq_meta *held;
    cr_assert(eq(int, tq_get_meta(c, &fa, &held), TQ_OK));
    waiter_t w = {.c = c, .rc = 1};
    pthread_t tid;
    cr_assert(eq(int, pthread_create(&tid, NULL, wait_forever, &w), 0));
    tq_test_sleep_ms(200); /* parked by now */

    cr_assert(eq(int, kill(cl.controller, SIGKILL), 0));
    pthread_join(tid, NULL);
    cr_expect(lt(int, w.rc, 0), "a parked get_meta outlived the controller");
    cr_expect(le(u64, w.took_ms, 2500), "the parked get_meta took %llu ms to fail",
              (unsigned long long)w.took_ms);

    uint64_t worst = w.took_ms;
    int64_t shape[1] = {ROW_WORDS}, data[ROW_WORDS] = {0};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    const char *key = "k";
    tq_meta *m = NULL;
    tq_batch *got = NULL;
    tq_unit_info_t *units = NULL;
    tq_stream *st = NULL;
    fa.timeout_ms = 1000;
    EXPECT_FAILS_IN_TIME(tq_put(c, "data", b, NULL, NULL), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_get_meta(c, &fa, &m), 3500, worst);
    EXPECT_FAILS_IN_TIME(tq_kv_put(c, "kv", key, b, NULL), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_kv_batch_get(c, "kv", 1, &key, 0, NULL, &got), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_clear(c, "data", 1, (int64_t[]){0}), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_clear_partition(c, "data"), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_units(c, &units), 2500, worst);
    EXPECT_FAILS_IN_TIME(tq_partition_seal(c, "data"), 2500, worst);
    if (tq_stream_open(c, &fa, &st) == TQ_OK) {
        tq_meta *sm = NULL;
        EXPECT_FAILS_IN_TIME(tq_stream_next(st, &got, &sm), 3500, worst);
        tq_stream_close(st);
    }
    /* the data pinned before stays with the live units: read, or refused, in time */
    uint64_t t0 = tq_test_now_ms();
    int rc = tq_get_data(c, held, &got);
    cr_expect(rc == TQ_OK || rc < 0);
    cr_expect(le(u64, tq_test_now_ms() - t0, 2500));
    if (rc == TQ_OK)
        tq_batch_destroy(got);
    tq_meta_free(held);
    fprintf(stderr, "faults: controller killed (-9): every call failed, the slowest in %llu ms\n",
            (unsigned long long)worst);
    tq_batch_destroy(b);
    t0 = tq_test_now_ms();
    tq_close(c);
    cr_expect(le(u64, tq_test_now_ms() - t0, 5000), "tq_close hung");
    tq_test_reap(cl.controller, 5000);
    cl.controller = 0;
    for (unsigned i = 0; i < cl.num_units; i++) { /* units end when their controller does */
        cr_expect(eq(int, tq_test_reap(cl.units[i], 10000), 1), "unit %u", i);
        cl.units[i] = 0;
    }
    tq_test_cluster_stop(&cl);
}

Test(faults, frozen_controller_times_out, .timeout = 60)
{
    setenv("TQ_TIMEOUT_MS", "1000", 1);
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    tq_client *c = open_client(cl.address);
    put_row(c, "data", 0);
    cr_assert(eq(int, kill(cl.controller, SIGSTOP), 0));
    uint64_t frozen_at = tq_test_now_ms(), worst = 0;
    int64_t shape[1] = {ROW_WORDS}, data[ROW_WORDS] = {0};
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    tq_fetch_args_t fa = {.partition = "data", .task = "t", .fields = FIELD_V,
                          .num_fields = 1, .batch_size = 1, .timeout_ms = 0};
    tq_meta *m = NULL;
    EXPECT_FAILS_IN_TIME(tq_put(c, "data", b, NULL, NULL), 1800, worst);
    EXPECT_FAILS_IN_TIME(tq_get_meta(c, &fa, &m), 1800, worst);
    EXPECT_FAILS_IN_TIME(tq_clear_partition(c, "data"), 1800, worst);
    fprintf(stderr, "faults: controller frozen (SIGSTOP): calls timed out, the slowest in "
            "%llu ms\n", (unsigned long long)worst);
    /* frozen past the units' heartbeat timeout: the stall was the controller's, and
     * the heartbeats that waited in its sockets must keep the units alive */
    uint64_t frozen = tq_test_now_ms() - frozen_at;
    if (frozen < 4000)
        tq_test_sleep_ms((int)(4000 - frozen));
    /* thawed, it serves again: the connections that timed out were dropped, not reused */
    kill(cl.controller, SIGCONT);
    int rc = tq_put(c, "data", b, NULL, NULL);
    cr_expect(eq(int, rc, TQ_OK), "after SIGCONT: %s", tq_last_error(c));
    cr_expect(eq(u32, pools(c).alive, 1), "a unit was declared dead for the controller's stall");
    cr_expect(eq(int, tq_get_meta(c, &fa, &m), TQ_OK), "%s", tq_last_error(c));
    tq_meta_free(m);
    tq_batch_destroy(b);
    tq_close(c);
    tq_test_cluster_stop(&cl);
}

/* ---- back-pressure ---- */

typedef struct {
    tq_client *c;
    tq_batch  *b;
    int        rc;
    uint64_t   took_ms;
    volatile bool done;
} putter_t;

static void *put_in_thread(void *arg)
{
    putter_t *p = arg;
    uint64_t t0 = tq_test_now_ms();
    p->rc = tq_put(p->c, "bp", p->b, NULL, NULL);
    p->took_ms = tq_test_now_ms() - t0;
    p->done = true;
    return NULL;
}

Test(faults, full_pools_push_back, .timeout = 60)
{
    setenv("TQ_TIMEOUT_MS", "3000", 1); /* a put waits up to 2250 ms for room */
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    tq_client *c = open_client(cl.address);
    uint8_t *data = calloc(1, 40 * MIB);
    cr_assert(data != NULL);
    tq_batch *eight = bytes_batch(8, MIB, data), *sixteen = bytes_batch(16, MIB, data);
    int64_t a[8], b[8], cc[8];
    cr_assert(eq(int, tq_put(c, "bp", eight, NULL, a), TQ_OK));
    cr_assert(eq(int, tq_put(c, "bp", eight, NULL, b), TQ_OK));
    cr_assert(eq(int, tq_put(c, "bp", eight, NULL, cc), TQ_OK));
    uint64_t used = pools(c).used;

    /* a put that does not fit waits, and goes through once a clear makes room */
    putter_t p = {.c = c, .b = sixteen};
    pthread_t tid;
    cr_assert(eq(int, pthread_create(&tid, NULL, put_in_thread, &p), 0));
    tq_test_sleep_ms(400);
    cr_expect(eq(int, p.done, false), "a put that cannot fit returned at once (%s)",
              tq_status_string(p.rc));
    cr_assert(eq(int, tq_clear(c, "bp", 8, a), 8));
    cr_assert(eq(int, tq_clear(c, "bp", 8, b), 8));
    pthread_join(tid, NULL);
    cr_expect(eq(int, p.rc, TQ_OK), "the waiting put: %s", tq_status_string(p.rc));
    cr_expect(ge(u64, p.took_ms, 400));
    fprintf(stderr, "faults: a put waited %llu ms for room, then went through\n",
            (unsigned long long)p.took_ms);

    /* nothing frees: NOSPACE after the wait, and nothing of it is visible */
    used = pools(c).used;
    uint64_t t0 = tq_test_now_ms();
    int rc = tq_put(c, "bp", sixteen, NULL, NULL);
    uint64_t took = tq_test_now_ms() - t0;
    cr_expect(eq(int, rc, TQ_ERR_NOSPACE), "%s", tq_status_string(rc));
    cr_expect(ge(u64, took, 2000), "gave up after %llu ms", (unsigned long long)took);
    cr_expect(le(u64, took, 3500), "gave up after %llu ms", (unsigned long long)took);
    cr_expect(eq(u64, pools(c).used, used), "a failed put left bytes allocated");
    static const char *const x[] = {"x"};
    tq_fetch_args_t fa = {.partition = "bp", .task = "t", .fields = x, .num_fields = 1,
                          .batch_size = 25, .timeout_ms = 0};
    tq_meta *m = NULL;
    cr_expect(eq(int, tq_get_meta(c, &fa, &m), TQ_ERR_TIMEOUT), "more than 24 rows are ready");
    fa.batch_size = 24;
    cr_expect(eq(int, tq_get_meta(c, &fa, &m), TQ_OK));
    tq_meta_free(m);

    /* a put no unit could ever hold fails at once */
    tq_batch *forty = bytes_batch(40, MIB, data);
    t0 = tq_test_now_ms();
    cr_expect(eq(int, tq_put(c, "bp", forty, NULL, NULL), TQ_ERR_NOSPACE));
    cr_expect(le(u64, tq_test_now_ms() - t0, 500), "waited for room that cannot come");
    tq_batch_destroy(forty);
    tq_batch_destroy(eight);
    tq_batch_destroy(sixteen);
    free(data);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}

/* ---- tokens ---- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

Test(faults, tokens_keep_strangers_out, .timeout = 90)
{
    char dir[] = "/tmp/tq-token-XXXXXX", good[128], other[128], empty[128];
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(good, sizeof(good), "%s/token", dir);
    snprintf(other, sizeof(other), "%s/other", dir);
    snprintf(empty, sizeof(empty), "%s/empty", dir);
    write_file(good, "s3cret \n", 0600);
    write_file(other, "not-it\n", 0600);
    write_file(empty, "\n", 0600);

    /* the daemons read the file; the test's own clients use TQ_TOKEN */
    setenv("TQ_TOKEN", "s3cret", 1);
    const char *args[] = {"--token-file", good, NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "32M", args, args), 0));
    tq_client *c = open_client(cl.address);
    put_row(c, "data", 0);

    /* a client without the token, or with another, is refused */
    tq_client *bad = NULL;
    unsetenv("TQ_TOKEN");
    cr_expect(eq(int, tq_open(cl.address, &bad), TQ_ERR_AUTH), "%s", tq_last_error(NULL));
    setenv("TQ_TOKEN", "s3cret!", 1);
    cr_expect(eq(int, tq_open(cl.address, &bad), TQ_ERR_AUTH), "%s", tq_last_error(NULL));

    /* raw: a wrong hello is answered AUTH and closed; nothing else comes back */
    int fd = tq_test_connect(tq_test_cluster_port(&cl), 2000);
    cr_assert(fd >= 0);
    size_t len;
    uint8_t *hello = tq_test_hello_frame(1, &len); /* with the wrong $TQ_TOKEN */
    cr_assert(eq(int, tq_test_write_all(fd, hello, len), 0));
    free(hello);
    uint8_t *units = tq_test_frame(TQ_MSG_UNITS, 0, 2, NULL, 0, &len);
    tq_test_write_all(fd, units, len); /* may fail: it may be closed already */
    free(units);
    tq_test_answer_t ans;
    cr_assert(eq(int, tq_test_read_answer(fd, 3000, &ans), 0));
    cr_expect(ans.replied && ans.status == TQ_ERR_AUTH, "a wrong token got status %d",
              ans.status);
    tq_test_answer_free(&ans);
    cr_assert(eq(int, tq_test_read_answer(fd, 3000, &ans), 0));
    cr_expect(ans.closed && !ans.replied, "the units (and their blobs) were sent to a stranger");
    tq_test_answer_free(&ans);
    close(fd);

    /* a request before any hello gets AUTH too */
    fd = tq_test_connect(tq_test_cluster_port(&cl), 2000);
    units = tq_test_frame(TQ_MSG_UNITS, 0, 3, NULL, 0, &len);
    cr_assert(eq(int, tq_test_write_all(fd, units, len), 0));
    free(units);
    cr_assert(eq(int, tq_test_read_answer(fd, 3000, &ans), 0));
    cr_expect(ans.replied && ans.status == TQ_ERR_AUTH);
    tq_test_answer_free(&ans);
    close(fd);

    /* a unit whose token file differs is refused, though $TQ_TOKEN is right: the flag wins */
    setenv("TQ_TOKEN", "s3cret", 1);
    const char *wrong[] = {"--token-file", other, NULL};
    cr_assert(eq(int, tq_test_cluster_add_unit(&cl, "32M", wrong), 0));
    int status = tq_test_reap(cl.units[cl.num_units - 1], 15000);
    cl.units[cl.num_units - 1] = 0;
    cr_expect(status != 0, "a unit with the wrong token registered");
    cr_expect(eq(u32, pools(c).alive, 1));

    /* an empty or missing token file stops a daemon at start */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/controller/tq-controller --listen 127.0.0.1:0 --token-file %s "
             ">/dev/null 2>&1", TQ_BIN_DIR, empty);
    cr_expect(eq(int, WEXITSTATUS(system(cmd)), 2), "an empty token file was accepted");
    snprintf(cmd, sizeof(cmd), "%s/controller/tq-controller --listen 127.0.0.1:0 --token-file "
             "%s/none >/dev/null 2>&1", TQ_BIN_DIR, dir);
    cr_expect(eq(int, WEXITSTATUS(system(cmd)), 2), "a missing token file was accepted");

    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
    unlink(good), unlink(other), unlink(empty), rmdir(dir);
}

/* ---- limits ---- */

Test(faults, limits_answer_and_survive, .timeout = 60)
{
    const char *cargs[] = {"--max-connections", "6", "--max-partitions", "3", NULL};
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "32M", cargs, NULL), 0));
    tq_client *c = open_client(cl.address); /* the unit and this client hold some connections */

    /* partitions: the fourth is refused until one is cleared */
    put_row(c, "p0", 0);
    put_row(c, "p1", 0);
    put_row(c, "p2", 0);
    int64_t shape[1] = {ROW_WORDS}, data[ROW_WORDS] = {0}, zero = 0;
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 1, shape, data), TQ_OK));
    cr_expect(eq(int, tq_put(c, "p3", b, &zero, NULL), TQ_ERR_INVALID));
    cr_expect(strstr(tq_last_error(c), "too many partitions") != NULL, "%s", tq_last_error(c));
    cr_assert(eq(int, tq_clear_partition(c, "p0"), TQ_OK));
    cr_expect(eq(int, tq_put(c, "p3", b, &zero, NULL), TQ_OK), "%s", tq_last_error(c));
    tq_batch_destroy(b);

    /* connections: past the limit, closed at once; the ones inside still work */
    int fds[16], n = 0, refused = -1;
    for (; n < 16; n++) {
        fds[n] = tq_test_connect(tq_test_cluster_port(&cl), 2000);
        cr_assert(fds[n] >= 0);
        tq_test_answer_t ans;
        size_t len;
        uint8_t *hello = tq_test_hello_frame(1, &len);
        tq_test_write_all(fds[n], hello, len);
        free(hello);
        cr_assert(eq(int, tq_test_read_answer(fds[n], 3000, &ans), 0));
        bool closed = ans.closed && !ans.replied;
        tq_test_answer_free(&ans);
        if (closed) {
            refused = n;
            break;
        }
    }
    cr_expect(refused > 0, "16 connections over a limit of 6 were all served");
    put_row(c, "p1", 1); /* this client's connections were there first */
    for (int i = 0; i <= n && i < 16; i++)
        close(fds[i]);

    /* a stranger may not make the controller buffer a large frame */
    int fd = -1;
    for (int tries = 0; tries < 50; tries++) { /* closed connections are counted out async */
        fd = tq_test_connect(tq_test_cluster_port(&cl), 2000);
        uint8_t hdr[24] = {0};
        size_t len;
        uint8_t *frame = tq_test_frame(TQ_MSG_UNITS, 0, 9, NULL, 0, &len);
        memcpy(hdr, frame, sizeof(hdr));
        free(frame);
        tq_put_le32(hdr + 16, 1 << 20); /* a 1 MiB body announced before any hello */
        tq_test_write_all(fd, hdr, sizeof(hdr));
        tq_test_answer_t ans;
        cr_assert(eq(int, tq_test_read_answer(fd, 3000, &ans), 0));
        bool answered = ans.replied;
        int status = ans.status;
        tq_test_answer_free(&ans);
        close(fd);
        if (answered) {
            cr_expect(eq(int, status, TQ_ERR_AUTH));
            break;
        }
        tq_test_sleep_ms(20);
    }
    put_row(c, "p2", 1);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
