/* bench.c: tq-rdma-bench, throughput of put/get and of the key-value interface. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tq/tq.h"
#include "util/common.h"

typedef enum {
    MODE_PUTGET, MODE_KV, MODE_KV_NB, MODE_META, MODE_WAKEUP,
    MODE_PRODUCER /* the other process of MODE_WAKEUP */
} bench_mode_t;

typedef struct {
    const char  *controller; /* NULL: $TQ_CONTROLLER, else embedded */
    bench_mode_t mode;
    tq_dtype_t   dtype;
    uint32_t     rows;
    uint64_t     field_bytes;
    unsigned     iters, warmup, inflight;
    bool         json;
    int          pipe_fds[2]; /* wakeup-producer: where "go" comes from, where times go */
} bench_opts_t;

/* One set of keys and the values written to them: one tensor field "x" per key. */
typedef struct {
    char   **keys;
    uint8_t *data; /* rows x field_bytes, row i is the value of keys[i] */
    tq_batch *batch;
} keyset_t;

static const char *const FIELDS[] = {"x"};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tq-rdma-bench [--mode putget|kv|kv-nb|meta|wakeup] [--controller HOST:PORT]\n"
            "                     [--rows N] [--field-bytes SIZE] [--dtype u8|f32] [--iters N]\n"
            "                     [--warmup N] [--inflight N] [--transport ucx|ofi|auto] [--json]\n"
            "Modes (each moves N rows or keys of one tensor field of SIZE bytes, --iters times):\n"
            "  putget  tq_put of N rows, then tq_get_meta + tq_get_data, then tq_clear (default)\n"
            "  kv      tq_kv_batch_put of N keys, then tq_kv_batch_get of the same keys\n"
            "  kv-nb   --inflight (default 8) tq_kv_batch_get_nb of N keys each in flight at once,\n"
            "          against the same gets made one after another with tq_kv_batch_get\n"
            "  meta    control path only: tq_put of N (default 256) rows of a 0-byte field\n"
            "          (ALLOC + COMMIT), tq_get_meta of them, tq_clear; rows/s, p50/p99 per call\n"
            "  wakeup  time from a commit in another process to the wake-up of a parked\n"
            "          tq_get_meta, 1 row per iteration; p50/p99/mean\n"
            "meta and wakeup run 1000 iterations unless --iters is given.\n"
            "Without --controller (and $TQ_CONTROLLER) it runs on the embedded default.\n"
            "--transport sets TQ_TRANSPORT for the bench (and its helper processes).\n");
}

static int fail(tq_client *c, const char *what, int rc)
{
    const char *detail = tq_last_error(c);
    fprintf(stderr, "tq-rdma-bench: %s: %s%s%s%s\n", what, tq_status_string(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

static int out_of_memory(void)
{
    fprintf(stderr, "tq-rdma-bench: out of memory\n");
    return 1;
}

static const char *dtype_name(tq_dtype_t d) { return d == TQ_DTYPE_U8 ? "u8" : "f32"; }

/*
 * One result line. keys > 0 adds a keys-per-second rate (kv modes); extra is
 * appended verbatim inside the JSON object (it starts with a comma) or unused.
 */
static void report(const bench_opts_t *o, const char *op, double seconds, uint64_t bytes,
                   uint64_t keys, const char *extra)
{
    double rate = seconds > 0 ? (double)bytes / seconds : 0;
    double ops = seconds > 0 ? (double)keys / seconds : 0;
    if (o->json) {
        printf("{\"op\":\"%s\",\"dtype\":\"%s\",\"field_bytes\":%llu,\"rows\":%u,\"fields\":1,"
               "\"clients\":1,\"iters\":%u,\"seconds\":%.6f,\"bytes_per_s\":%.0f",
               op, dtype_name(o->dtype), (unsigned long long)o->field_bytes, o->rows, o->iters,
               seconds, rate);
        if (keys > 0)
            printf(",\"ops_per_s\":%.0f", ops);
        printf("%s}\n", extra ? extra : "");
        return;
    }
    printf("%-10s %10llu B x %5u rows x %4u iters: %8.3f s  %8.2f GB/s", op,
           (unsigned long long)o->field_bytes, o->rows, o->iters, seconds, rate / 1e9);
    if (keys > 0)
        printf("  %10.0f keys/s", ops);
    printf("\n");
}

/* Bytes that differ per position and per seed, so a value read from the wrong key shows. */
static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + (i >> 12) + seed * 17u);
}

/* A batch of o->rows rows of one tensor field "x" over data. */
static int make_batch(tq_client *c, const bench_opts_t *o, const void *data, tq_batch **b_p)
{
    int64_t shape[1] = {(int64_t)(o->field_bytes / tq_dtype_size(o->dtype))};
    int rc = tq_batch_create(o->rows, b_p);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(*b_p, "x", o->dtype, 1, shape, data);
    return rc == TQ_OK ? 0 : fail(c, "cannot build the batch", rc);
}

/* Field "x" of got must equal want, byte for byte. */
static int check(const bench_opts_t *o, const tq_batch *got, const void *want)
{
    size_t total = (size_t)o->rows * o->field_bytes;
    tq_field_info_t info;
    if (tq_batch_field(got, "x", &info) != TQ_OK || info.bytes != total ||
        tq_batch_rows(got) != o->rows || memcmp(info.data, want, total) != 0) {
        fprintf(stderr, "tq-rdma-bench: data read back differs from data written\n");
        return 1;
    }
    return 0;
}

static void keyset_free(keyset_t *ks, uint32_t rows)
{
    for (uint32_t i = 0; ks->keys != NULL && i < rows; i++)
        free(ks->keys[i]);
    free(ks->keys);
    free(ks->data);
    tq_batch_destroy(ks->batch);
    memset(ks, 0, sizeof(*ks));
}

/* Keys "k<set>-<row>" with their values; every set has its own keys and bytes. */
static int keyset_init(tq_client *c, const bench_opts_t *o, unsigned set, keyset_t *ks)
{
    size_t total = (size_t)o->rows * o->field_bytes;
    memset(ks, 0, sizeof(*ks));
    ks->keys = calloc(o->rows, sizeof(char *));
    ks->data = malloc(total);
    if (ks->keys == NULL || ks->data == NULL)
        return out_of_memory();
    for (uint32_t i = 0; i < o->rows; i++) {
        char name[32];
        snprintf(name, sizeof(name), "k%u-%u", set, i);
        if ((ks->keys[i] = strdup(name)) == NULL)
            return out_of_memory();
    }
    fill(ks->data, total, set);
    return make_batch(c, o, ks->data, &ks->batch);
}

static int kv_put(tq_client *c, const bench_opts_t *o, const keyset_t *ks)
{
    int rc = tq_kv_batch_put(c, "bench-kv", o->rows, (const char *const *)ks->keys, ks->batch,
                             NULL);
    return rc == TQ_OK ? 0 : fail(c, "kv_batch_put", rc);
}

static int kv_get(tq_client *c, const bench_opts_t *o, const keyset_t *ks, tq_batch **got_p)
{
    int rc = tq_kv_batch_get(c, "bench-kv", o->rows, (const char *const *)ks->keys, 1, FIELDS,
                             got_p);
    return rc == TQ_OK ? 0 : fail(c, "kv_batch_get", rc);
}

static int kv_clear(tq_client *c, const bench_opts_t *o, const keyset_t *ks)
{
    int rc = tq_kv_clear(c, "bench-kv", o->rows, (const char *const *)ks->keys);
    return rc >= 0 ? 0 : fail(c, "kv_clear", rc);
}

/* putget: rows appended by tq_put, read back by the consumer path, then cleared. */
static int run_putget(tq_client *c, const bench_opts_t *o)
{
    size_t total = (size_t)o->rows * o->field_bytes;
    uint8_t *data = malloc(total);
    int64_t *indexes = malloc(o->rows * sizeof(int64_t));
    tq_batch *b = NULL;
    if (data == NULL || indexes == NULL)
        return out_of_memory();
    fill(data, total, 0);
    if (make_batch(c, o, data, &b) != 0)
        return 1;

    tq_fetch_args_t args = {.partition = "bench", .task = "bench", .fields = FIELDS,
                            .num_fields = 1, .batch_size = o->rows, .timeout_ms = 0};
    uint64_t put_ns = 0, get_ns = 0;
    int rc;
    for (unsigned it = 0; it < o->warmup + o->iters; it++) {
        bool timed = it >= o->warmup;
        uint64_t t0 = tq__now_ns();
        if ((rc = tq_put(c, "bench", b, NULL, indexes)) != TQ_OK)
            return fail(c, "put", rc);
        uint64_t t1 = tq__now_ns();
        tq_meta *m;
        tq_batch *got;
        if ((rc = tq_get_meta(c, &args, &m)) != TQ_OK)
            return fail(c, "get_meta", rc);
        if ((rc = tq_get_data(c, m, &got)) != TQ_OK)
            return fail(c, "get_data", rc);
        uint64_t t2 = tq__now_ns();
        if (it == 0 && check(o, got, data) != 0)
            return 1;
        tq_batch_destroy(got);
        tq_meta_free(m);
        /* cleared rows free their extents, so every iteration starts from the same pool */
        if ((rc = tq_clear(c, "bench", o->rows, indexes)) < 0)
            return fail(c, "clear", rc);
        if (timed) {
            put_ns += t1 - t0;
            get_ns += t2 - t1;
        }
    }
    report(o, "put", (double)put_ns / 1e9, (uint64_t)total * o->iters, 0, NULL);
    report(o, "get", (double)get_ns / 1e9, (uint64_t)total * o->iters, 0, NULL);
    tq_batch_destroy(b);
    free(data);
    free(indexes);
    return 0;
}

/* kv: the same keys overwritten and read back every iteration, i.e. steady state. */
static int run_kv(tq_client *c, const bench_opts_t *o)
{
    size_t total = (size_t)o->rows * o->field_bytes;
    keyset_t ks;
    if (keyset_init(c, o, 0, &ks) != 0)
        return 1;
    uint64_t put_ns = 0, get_ns = 0;
    for (unsigned it = 0; it < o->warmup + o->iters; it++) {
        uint64_t t0 = tq__now_ns();
        if (kv_put(c, o, &ks) != 0)
            return 1;
        uint64_t t1 = tq__now_ns();
        tq_batch *got;
        if (kv_get(c, o, &ks, &got) != 0)
            return 1;
        uint64_t t2 = tq__now_ns();
        if (it == 0 && check(o, got, ks.data) != 0)
            return 1;
        tq_batch_destroy(got);
        if (it >= o->warmup) {
            put_ns += t1 - t0;
            get_ns += t2 - t1;
        }
    }
    uint64_t keys = (uint64_t)o->rows * o->iters;
    report(o, "kv_put", (double)put_ns / 1e9, (uint64_t)total * o->iters, keys, NULL);
    report(o, "kv_get", (double)get_ns / 1e9, (uint64_t)total * o->iters, keys, NULL);
    if (kv_clear(c, o, &ks) != 0)
        return 1;
    keyset_free(&ks, o->rows);
    return 0;
}

/* Issue one non-blocking get per key set, then wait for them all; check on the first round. */
static int kv_get_inflight(tq_client *c, const bench_opts_t *o, const keyset_t *sets,
                           tq_request **reqs, bool verify)
{
    unsigned n = o->inflight, issued = 0;
    int rc = TQ_OK, err = 0;
    for (; issued < n; issued++) {
        rc = tq_kv_batch_get_nb(c, "bench-kv", o->rows, (const char *const *)sets[issued].keys,
                                1, FIELDS, &reqs[issued]);
        if (rc != TQ_OK) {
            err = fail(c, "kv_batch_get_nb", rc);
            break;
        }
    }
    /* wait for every request issued, even after an error: they borrow our key arrays */
    for (unsigned s = 0; s < issued; s++) {
        rc = tq_request_wait(reqs[s], -1);
        if (rc != TQ_OK && err == 0)
            err = fail(c, "kv_batch_get_nb (wait)", rc);
        tq_batch *got = tq_request_take_batch(reqs[s]);
        if (err == 0 && verify && check(o, got, sets[s].data) != 0)
            err = 1;
        tq_batch_destroy(got);
        tq_request_free(reqs[s]);
    }
    return err;
}

/*
 * kv-nb: --inflight gets at once against the same gets one after another. Each
 * get has its own keys (all written before timing), so neither side is helped
 * by reading one extent twice.
 */
static int run_kv_nb(tq_client *c, const bench_opts_t *o)
{
    unsigned n = o->inflight;
    keyset_t *sets = calloc(n, sizeof(*sets));
    tq_request **reqs = calloc(n, sizeof(*reqs));
    if (sets == NULL || reqs == NULL)
        return out_of_memory();
    for (unsigned s = 0; s < n; s++)
        if (keyset_init(c, o, s, &sets[s]) != 0 || kv_put(c, o, &sets[s]) != 0)
            return 1;

    uint64_t seq_ns = 0, nb_ns = 0;
    for (unsigned it = 0; it < o->warmup + o->iters; it++) {
        uint64_t t0 = tq__now_ns();
        for (unsigned s = 0; s < n; s++) {
            tq_batch *got;
            if (kv_get(c, o, &sets[s], &got) != 0)
                return 1;
            if (it == 0 && check(o, got, sets[s].data) != 0)
                return 1;
            tq_batch_destroy(got);
        }
        uint64_t t1 = tq__now_ns();
        if (kv_get_inflight(c, o, sets, reqs, it == 0) != 0)
            return 1;
        uint64_t t2 = tq__now_ns();
        if (it >= o->warmup) {
            seq_ns += t1 - t0;
            nb_ns += t2 - t1;
        }
    }
    /* both sides move the same bytes, so the speed-up is the ratio of the times */
    uint64_t bytes = (uint64_t)n * o->rows * o->field_bytes * o->iters;
    uint64_t keys = (uint64_t)n * o->rows * o->iters;
    double speedup = nb_ns > 0 ? (double)seq_ns / (double)nb_ns : 0;
    char extra[96];
    snprintf(extra, sizeof(extra), ",\"inflight\":%u", n);
    report(o, "kv_get_seq", (double)seq_ns / 1e9, bytes, keys, extra);
    snprintf(extra, sizeof(extra), ",\"inflight\":%u,\"speedup\":%.3f", n, speedup);
    report(o, "kv_get_nb", (double)nb_ns / 1e9, bytes, keys, extra);
    if (!o->json)
        printf("speed-up of %u in flight over %u sequential: %.2fx\n", n, n, speedup);
    for (unsigned s = 0; s < n; s++) {
        if (kv_clear(c, o, &sets[s]) != 0)
            return 1;
        keyset_free(&sets[s], o->rows);
    }
    free(sets);
    free(reqs);
    return 0;
}

/* ---- latency modes: meta and wakeup ---- */

/* Where the 0-byte rows of the latency modes go; each mode's own, so rows
 * left by another mode or an earlier run cannot be picked. */
#define META_PARTITION "bench-meta"
#define WAKE_PARTITION "bench-wakeup"
#define META_TARGET_ROWS_PER_S 200000.0
#define WAKE_TARGET_P50_US     200.0
#define PIPE_TIMEOUT_MS  5000  /* no read from the producer waits longer */
#define START_TIMEOUT_MS 20000 /* exec, UCX start-up and connecting take longer */
#define WAKE_MAX_NS      (60ULL * 1000000000ULL) /* bound on the whole wakeup run */

/* Per-call times, summed and ranked. */
typedef struct {
    double seconds; /* total time inside the calls */
    double mean_us, p50_us, p99_us;
} lat_stats_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts ns (n > 0) in place; percentiles are nearest-rank. */
static lat_stats_t lat_stats(uint64_t *ns, unsigned n)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += ns[i];
    qsort(ns, n, sizeof(*ns), cmp_u64);
    return (lat_stats_t){.seconds = (double)sum / 1e9,
                         .mean_us = (double)sum / 1e3 / n,
                         .p50_us = (double)ns[(50ULL * n + 99) / 100 - 1] / 1e3,
                         .p99_us = (double)ns[(99ULL * n + 99) / 100 - 1] / 1e3};
}

/*
 * One result line of a latency mode: calls of `rows` rows each. seconds is the
 * time inside the calls, so ops_per_s is one over the mean. target is NULL or
 * the goal in words, met whether it was reached.
 */
static void report_lat(const bench_opts_t *o, const char *op, uint32_t rows, unsigned iters,
                       const lat_stats_t *s, const char *target, bool met)
{
    double ops = s->seconds > 0 ? iters / s->seconds : 0;
    if (o->json) {
        printf("{\"op\":\"%s\",\"rows\":%u,\"iters\":%u,\"seconds\":%.6f,\"rows_per_s\":%.0f,"
               "\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f",
               op, rows, iters, s->seconds, ops * rows, ops, s->p50_us, s->p99_us, s->mean_us);
        if (target != NULL)
            printf(",\"target\":\"%s\",\"target_met\":%s", target, met ? "true" : "false");
        printf("}\n");
        return;
    }
    printf("%-16s %4u rows x %5u iters: %7.3f s %9.0f rows/s  p50 %7.1f us  p99 %7.1f us"
           "  mean %7.1f us", op, rows, iters, s->seconds, ops * rows, s->p50_us, s->p99_us,
           s->mean_us);
    if (target != NULL)
        printf("  [target %s: %s]", target, met ? "met" : "MISSED");
    printf("\n");
}

/* A batch of `rows` rows of one tensor field "x" of 0 bytes a row: its put is
 * an ALLOC and a COMMIT with no one-sided write between them. */
static int make_empty_batch(tq_client *c, uint32_t rows, tq_batch **b_p)
{
    static const int64_t shape[1] = {0};
    int rc = tq_batch_create(rows, b_p);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(*b_p, "x", TQ_DTYPE_F32, 1, shape, NULL);
    return rc == TQ_OK ? 0 : fail(c, "cannot build the batch", rc);
}

/*
 * meta: the controller's rate of get_meta + commit, with no payload in the way,
 * which bounds how fast small-sample pipelines can hand rows between stages.
 */
static int run_meta(tq_client *c, const bench_opts_t *o)
{
    unsigned n = o->iters;
    int64_t *indexes = malloc(o->rows * sizeof(int64_t));
    uint64_t *put_ns = malloc(n * sizeof(uint64_t)), *get_ns = malloc(n * sizeof(uint64_t));
    uint64_t *both_ns = malloc(n * sizeof(uint64_t));
    tq_batch *b = NULL;
    if (indexes == NULL || put_ns == NULL || get_ns == NULL || both_ns == NULL)
        return out_of_memory();
    if (make_empty_batch(c, o->rows, &b) != 0)
        return 1;
    tq_clear_partition(c, META_PARTITION); /* none left by a failed run; absent is fine */

    tq_fetch_args_t args = {.partition = META_PARTITION, .task = "bench", .fields = FIELDS,
                            .num_fields = 1, .batch_size = o->rows, .timeout_ms = 0};
    int rc;
    for (unsigned it = 0; it < o->warmup + n; it++) {
        uint64_t t0 = tq__now_ns();
        if ((rc = tq_put(c, META_PARTITION, b, NULL, indexes)) != TQ_OK)
            return fail(c, "put (alloc + commit)", rc);
        uint64_t t1 = tq__now_ns();
        tq_meta *m;
        if ((rc = tq_get_meta(c, &args, &m)) != TQ_OK)
            return fail(c, "get_meta", rc);
        uint64_t t2 = tq__now_ns();
        uint32_t got = tq_meta_rows(m);
        tq_meta_free(m); /* its release is sent without waiting: not part of the rate */
        if (got != o->rows) {
            fprintf(stderr, "tq-rdma-bench: get_meta gave %u rows, %u were committed\n", got,
                    o->rows);
            return 1;
        }
        /* clearing keeps the partition at one batch of rows, so every iteration is alike */
        if ((rc = tq_clear(c, META_PARTITION, o->rows, indexes)) < 0)
            return fail(c, "clear", rc);
        if (it >= o->warmup) {
            put_ns[it - o->warmup] = t1 - t0;
            get_ns[it - o->warmup] = t2 - t1;
            both_ns[it - o->warmup] = t2 - t0;
        }
    }
    lat_stats_t put = lat_stats(put_ns, n), get = lat_stats(get_ns, n);
    lat_stats_t both = lat_stats(both_ns, n);
    double rate = both.seconds > 0 ? (double)o->rows * n / both.seconds : 0;
    char target[64];
    snprintf(target, sizeof(target), ">= %.0f rows/s", META_TARGET_ROWS_PER_S);
    report_lat(o, "alloc_commit", o->rows, n, &put, NULL, false);
    report_lat(o, "get_meta", o->rows, n, &get, NULL, false);
    report_lat(o, "get_meta+commit", o->rows, n, &both, target, rate >= META_TARGET_ROWS_PER_S);
    tq_batch_destroy(b);
    free(indexes);
    free(put_ns);
    free(get_ns);
    free(both_ns);
    return 0;
}

/* The producer's answer to one "go": when its put began and ended, and the row. */
typedef struct {
    uint64_t t0, t1;
    int64_t  index; /* -1 in the first answer, which only says "ready" */
} wake_rec_t;

/* Read exactly n bytes within timeout_ms. @return 0; 1 at end of file; -1 with
 * errno on a timeout (ETIMEDOUT) or an error. */
static int read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = tq__now_ms() + (uint64_t)timeout_ms;
    size_t got = 0;
    while (got < n) {
        uint64_t now = tq__now_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r == 0)
            continue; /* the deadline check above reports it */
        ssize_t k = r < 0 ? -1 : read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return 1;
        got += (size_t)k;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

/* A read from the producer that did not give a whole record, in words. */
static int producer_silent(const char *what, int r)
{
    fprintf(stderr, "tq-rdma-bench: wakeup: waiting for %s: %s\n", what,
            r == 1 ? "the producer exited (see its message above)"
                   : errno == ETIMEDOUT ? "no answer from the producer in time" : strerror(errno));
    return 1;
}

/*
 * Start the producer as a fresh run of this binary. Not a fork: forking a
 * process whose UCX and controller threads are running is unsafe. Only the
 * producer's ends of the pipes cross the exec.
 */
static int producer_start(const char *address, int *go_fd, int *res_fd, pid_t *pid_p)
{
    int go[2], res[2];
    if (pipe(go) != 0)
        return -1;
    if (pipe(res) != 0) {
        close(go[0]), close(go[1]);
        return -1;
    }
    fcntl(go[1], F_SETFD, FD_CLOEXEC);
    fcntl(res[0], F_SETFD, FD_CLOEXEC);
    char fds[32];
    snprintf(fds, sizeof(fds), "%d,%d", go[0], res[1]);
    char *argv[] = {"tq-rdma-bench", "--mode", "wakeup-producer", "--controller",
                    (char *)address, "--pipe-fds", fds, NULL};
    extern char **environ;
    int rc = posix_spawn(pid_p, "/proc/self/exe", NULL, NULL, argv, environ);
    close(go[0]);
    close(res[1]);
    if (rc != 0) {
        close(go[1]), close(res[0]);
        errno = rc;
        return -1;
    }
    *go_fd = go[1];
    *res_fd = res[0];
    return 0;
}

/* Reap the producer: it exits when its "go" pipe closes; SIGKILL when kill_now
 * or when it has not exited within PIPE_TIMEOUT_MS. @return its wait status. */
static int producer_stop(pid_t pid, bool kill_now)
{
    int status = -1;
    uint64_t deadline = tq__now_ms() + PIPE_TIMEOUT_MS;
    if (kill_now)
        kill(pid, SIGKILL);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return status;
        if (tq__now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        usleep(1000);
    }
}

/*
 * wakeup: how soon a consumer parked in tq_get_meta learns of a commit made by
 * another process, the hand-off between pipeline stages. Each iteration: "go"
 * to the producer, get_meta of 1 row (it parks), the producer's put wakes it.
 * Both processes read CLOCK_MONOTONIC, which is one clock on one machine.
 */
static int run_wakeup(tq_client *c, const bench_opts_t *o)
{
    unsigned total = o->warmup + o->iters, done = 0;
    uint64_t *wake_ns = malloc(o->iters * sizeof(uint64_t));
    uint64_t *put_ns = malloc(o->iters * sizeof(uint64_t));
    int64_t *indexes = malloc(total * sizeof(int64_t));
    size_t num_indexes = 0;
    int go_fd = -1, res_fd = -1, err = 1, rc, r;
    pid_t pid = -1;
    wake_rec_t rec;
    if (wake_ns == NULL || put_ns == NULL || indexes == NULL)
        return out_of_memory();
    /* a row left by a failed run would answer get_meta without parking */
    tq_clear_partition(c, WAKE_PARTITION);
    signal(SIGPIPE, SIG_IGN); /* a dead producer is an error to report, not a reason to die */
    if (producer_start(tq_controller_address(c), &go_fd, &res_fd, &pid) != 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: cannot start the producer: %s\n",
                strerror(errno));
        goto out;
    }
    if ((r = read_full(res_fd, &rec, sizeof(rec), START_TIMEOUT_MS)) != 0) {
        producer_silent("the producer to start", r);
        goto out;
    }

    tq_fetch_args_t args = {.partition = WAKE_PARTITION, .task = "bench", .fields = FIELDS,
                            .num_fields = 1, .batch_size = 1, .timeout_ms = 5000};
    uint64_t start = tq__now_ns();
    for (unsigned it = 0; it < total; it++) {
        if (tq__now_ns() - start > WAKE_MAX_NS) {
            fprintf(stderr, "tq-rdma-bench: wakeup: stopped at the %llu s limit after %u "
                    "iterations\n", WAKE_MAX_NS / 1000000000ULL, done);
            break;
        }
        if (write_full(go_fd, "g", 1) != 0) {
            fprintf(stderr, "tq-rdma-bench: wakeup: cannot signal the producer: %s\n",
                    strerror(errno));
            goto out;
        }
        tq_meta *m;
        rc = tq_get_meta(c, &args, &m);
        uint64_t t_wake = tq__now_ns();
        if (rc != TQ_OK) {
            fail(c, "get_meta (waiting for the producer's commit)", rc);
            goto out;
        }
        int64_t index = tq_meta_rows(m) == 1 ? tq_meta_indexes(m)[0] : -1;
        tq_meta_free(m);
        if (index >= 0)
            indexes[num_indexes++] = index;
        if ((r = read_full(res_fd, &rec, sizeof(rec), PIPE_TIMEOUT_MS)) != 0) {
            producer_silent("the producer's times", r);
            goto out;
        }
        /* the row we got must be the one just committed, after its put began */
        if (index != rec.index || t_wake < rec.t0) {
            fprintf(stderr, "tq-rdma-bench: wakeup: woken by row %lld, but the producer "
                    "committed row %lld\n", (long long)index, (long long)rec.index);
            goto out;
        }
        if (it >= o->warmup) {
            wake_ns[done] = t_wake - rec.t0;
            put_ns[done] = rec.t1 - rec.t0;
            done++;
        }
    }
    close(go_fd); /* end of file: the producer's cue to exit */
    go_fd = -1;
    int status = producer_stop(pid, false);
    pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: the producer failed (wait status %d)\n",
                status);
        goto out;
    }
    if (done == 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: no iteration was measured\n");
        goto out;
    }
    lat_stats_t wake = lat_stats(wake_ns, done), put = lat_stats(put_ns, done);
    char target[64];
    snprintf(target, sizeof(target), "p50 <= %.0f us", WAKE_TARGET_P50_US);
    if (!o->json)
        printf("put_to_wake: from the start of the producer's put to the return of the parked\n"
               "get_meta, an upper bound (it includes the ALLOC round trip before the commit)\n");
    report_lat(o, "put_to_wake", 1, done, &wake, target, wake.p50_us <= WAKE_TARGET_P50_US);
    report_lat(o, "producer_put", 1, done, &put, NULL, false);
    err = 0;
out:
    if (go_fd >= 0)
        close(go_fd);
    if (pid > 0)
        producer_stop(pid, true);
    if (res_fd >= 0)
        close(res_fd);
    if (num_indexes > 0 && (rc = tq_clear(c, WAKE_PARTITION, num_indexes, indexes)) < 0 &&
        err == 0)
        err = fail(c, "clear", rc);
    free(wake_ns);
    free(put_ns);
    free(indexes);
    return err;
}

/*
 * wakeup-producer (hidden): the other process of --mode wakeup. On each "go"
 * it sleeps 2 ms, so the bench's get_meta is surely parked by then, puts one
 * 0-byte row and answers with the times around the put. It exits when the
 * bench closes the pipe, or when the bench is silent for PIPE_TIMEOUT_MS.
 */
static int run_wakeup_producer(tq_client *c, const bench_opts_t *o)
{
    int go_fd = o->pipe_fds[0], res_fd = o->pipe_fds[1];
    tq_batch *b;
    if (make_empty_batch(c, 1, &b) != 0)
        return 1;
    wake_rec_t rec = {.index = -1};
    if (write_full(res_fd, &rec, sizeof(rec)) != 0) /* ready */
        return 1;
    for (;;) {
        char go;
        int r = read_full(go_fd, &go, 1, PIPE_TIMEOUT_MS);
        if (r == 1)
            break;
        if (r != 0) {
            fprintf(stderr, "tq-rdma-bench: producer: waiting for the bench: %s\n",
                    errno == ETIMEDOUT ? "no word in time" : strerror(errno));
            return 1;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
        rec.t0 = tq__now_ns();
        int rc = tq_put(c, WAKE_PARTITION, b, NULL, &rec.index);
        rec.t1 = tq__now_ns();
        if (rc != TQ_OK)
            return fail(c, "producer: put", rc);
        if (write_full(res_fd, &rec, sizeof(rec)) != 0) {
            fprintf(stderr, "tq-rdma-bench: producer: cannot answer the bench: %s\n",
                    strerror(errno));
            return 1;
        }
    }
    tq_batch_destroy(b);
    return 0;
}

/*
 * The embedded pool defaults to 256 MiB, too small for kv-nb's key sets or for
 * an overwrite (the new extent is written before the old one is freed). Size it
 * to twice the data set unless the user chose; a remote controller ignores it.
 */
static void size_embedded_pool(const bench_opts_t *o)
{
    if (o->mode == MODE_META || o->mode == MODE_WAKEUP)
        return; /* their rows are 0 bytes */
    unsigned sets = o->mode == MODE_KV_NB ? o->inflight : 1;
    uint64_t want = 2 * (uint64_t)sets * o->rows * o->field_bytes + (64ULL << 20);
    if (want < (256ULL << 20))
        return;
    char size[32];
    snprintf(size, sizeof(size), "%lluM", (unsigned long long)(want >> 20) + 1);
    setenv("TQ_POOL_SIZE", size, 0);
}

static int parse_mode(const char *s, bench_mode_t *m)
{
    if (strcmp(s, "putget") == 0)
        *m = MODE_PUTGET;
    else if (strcmp(s, "kv") == 0)
        *m = MODE_KV;
    else if (strcmp(s, "kv-nb") == 0)
        *m = MODE_KV_NB;
    else if (strcmp(s, "meta") == 0)
        *m = MODE_META;
    else if (strcmp(s, "wakeup") == 0)
        *m = MODE_WAKEUP;
    else if (strcmp(s, "wakeup-producer") == 0) /* hidden: started by --mode wakeup */
        *m = MODE_PRODUCER;
    else
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o = {.mode = MODE_PUTGET, .dtype = TQ_DTYPE_F32, .rows = 64,
                      .field_bytes = 1 << 20, .iters = 20, .warmup = 2, .inflight = 8,
                      .pipe_fds = {-1, -1}};
    bool rows_given = false, iters_given = false;
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"rows", required_argument, NULL, 'r'},
        {"field-bytes", required_argument, NULL, 'b'}, {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},      {"json", no_argument, NULL, 'j'},
        {"mode", required_argument, NULL, 'm'},        {"inflight", required_argument, NULL, 'n'},
        {"dtype", required_argument, NULL, 'd'},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},           {"pipe-fds", required_argument, NULL, 'p'},
        {"transport", required_argument, NULL, 't'},   {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:r:b:i:w:jm:n:d:p:t:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': o.controller = optarg; break;
        case 't': setenv("TQ_TRANSPORT", optarg, 1); break; /* the client reads it at open */
        case 'r': o.rows = (uint32_t)strtoul(optarg, NULL, 10), rows_given = true; break;
        case 'b':
            if (tq__parse_size(optarg, &o.field_bytes) != 0) {
                fprintf(stderr, "tq-rdma-bench: bad --field-bytes '%s'\n", optarg);
                return 2;
            }
            break;
        case 'i': o.iters = (unsigned)strtoul(optarg, NULL, 10), iters_given = true; break;
        case 'w': o.warmup = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'j': o.json = true; break;
        case 'm':
            if (parse_mode(optarg, &o.mode) != 0) {
                fprintf(stderr, "tq-rdma-bench: bad --mode '%s' (putget, kv, kv-nb, meta, "
                        "wakeup)\n", optarg);
                return 2;
            }
            break;
        case 'p':
            if (sscanf(optarg, "%d,%d", &o.pipe_fds[0], &o.pipe_fds[1]) != 2) {
                fprintf(stderr, "tq-rdma-bench: bad --pipe-fds '%s'\n", optarg);
                return 2;
            }
            break;
        case 'n': o.inflight = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd':
            if (strcmp(optarg, "u8") == 0)
                o.dtype = TQ_DTYPE_U8;
            else if (strcmp(optarg, "f32") == 0)
                o.dtype = TQ_DTYPE_F32;
            else {
                fprintf(stderr, "tq-rdma-bench: bad --dtype '%s' (u8, f32)\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("tq-rdma-bench %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tq-rdma-bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    /* the latency modes time small calls: many of them, of their own size */
    if (o.mode == MODE_META && !rows_given)
        o.rows = 256;
    if ((o.mode == MODE_META || o.mode == MODE_WAKEUP) && !iters_given)
        o.iters = 1000;
    if (o.mode == MODE_PRODUCER && (o.controller == NULL || o.pipe_fds[0] < 0)) {
        fprintf(stderr, "tq-rdma-bench: wakeup-producer is started by --mode wakeup\n");
        return 2;
    }
    if (o.rows == 0 || o.iters == 0 || o.inflight == 0 || o.field_bytes == 0) {
        fprintf(stderr, "tq-rdma-bench: --rows, --iters, --inflight and --field-bytes must be "
                        "positive\n");
        return 2;
    }
    if (o.field_bytes % tq_dtype_size(o.dtype) != 0) {
        fprintf(stderr, "tq-rdma-bench: --field-bytes must be a multiple of %zu for %s\n",
                tq_dtype_size(o.dtype), dtype_name(o.dtype));
        return 2;
    }
    size_embedded_pool(&o);

    tq_client *c;
    int rc = tq_open(o.controller, &c);
    if (rc != TQ_OK)
        return fail(NULL, "cannot open", rc);
    int err;
    switch (o.mode) {
    case MODE_KV: err = run_kv(c, &o); break;
    case MODE_KV_NB: err = run_kv_nb(c, &o); break;
    case MODE_META: err = run_meta(c, &o); break;
    case MODE_WAKEUP: err = run_wakeup(c, &o); break;
    case MODE_PRODUCER: err = run_wakeup_producer(c, &o); break;
    default: err = run_putget(c, &o); break;
    }
    tq_close(c);
    return err;
}
