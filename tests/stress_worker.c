/* stress_worker.c: one of test_stress's workers: puts, gets, clears and key-value traffic
 * on a partition of its own for a set time, every row read back checked byte for byte. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tq/tq.h"

/*
 * usage: stress_worker ADDRESS PARTITION SEED SECONDS HOLD_KIB PARENT_PID
 *
 * Rows go to PARTITION: a bytes field "payload" of 16 B to 64 KiB and an I64 tensor
 * field "hdr" of shape [3] = {counter, length, checksum}. A row is a pure function of
 * (SEED, counter): its length, and its bytes, whose first 8 are the FNV-1a 64 of the
 * rest and the next 8 the counter mixed with the seed. What the worker holds is only
 * which counter sits at which row index, so a row read back is checked twice: against
 * its own checksum (corruption) and against the row regenerated from the counter the
 * worker put at that index (a row of another index, worker or generation).
 *
 * Each round: put a batch of 1 to 16 new rows; read (tq_get_meta for task "verify",
 * then tq_get_data) some or all of the rows not yet read; clear some of them, or keep
 * them; rows kept past the worker's hold target are cleared oldest first. Now and then
 * the key-value side: tq_kv_batch_put / tq_kv_batch_get / tq_kv_clear / tq_kv_list of
 * up to 32 keys in PARTITION_kv, values and tags checked the same way.
 *
 * The hold target is how a polite producer meets back-pressure: it grows by
 * HOLD_STEP with each put answered at once, up to HOLD_KIB, and halves when a put
 * was held back by full pools (answered TQ_ERR_NOSPACE, or after PUT_WAITED_MS,
 * parked by the controller until room freed). The workers' caps add up to more than
 * the pools hold, so the pools fill, the workers back off, and the pools fill again.
 * A worker that never let go would park its next put while holding what the others
 * wait for, and every put would wait out its whole parking time. TQ_ERR_NOSPACE is
 * expected: the worker clears what it holds (or sleeps, if it holds nothing) and
 * tries again. Any other error ends the rounds.
 *
 * At the end the worker clears every row and key it holds (each clear must remove
 * exactly what it names) and prints one line on stdout:
 *   stress_worker: puts=N rows_put=N rows_verified=N gets=N clears=N rows_cleared=N
 *     kv_puts=N kv_gets=N kv_verified=N kv_clears=N kv_lists=N nospace=N put_waits=N
 *     mismatches=N errors=N
 * and one of the time spent in each library call (calls, total and longest, in us):
 *   stress_worker_calls: open=N,US,US put=N,US,US ...
 * Exit status: 0 when there was no mismatch and no error, 1 otherwise, 2 for bad usage.
 */

#define ROW_MIN       16u
#define ROW_MAX       (64u << 10)
#define BATCH_MAX     16u
#define GET_MAX       16u   /* rows per tq_get_meta: bounds the columns read */
#define HOLD_ROWS_MAX 4096u /* rows held at once, read or not */
#define MAX_INDEX     (1u << 20)
#define KV_KEYS       32u
#define KV_BATCH_MAX  8u
#define KV_VALUE_MAX  (16u << 10)
#define MAX_REPORTS   20u   /* failures printed in full; the rest are counted */
#define NOSPACE_SLEEP_MAX_MS 20
#define HOLD_MIN      (64u << 10)
#define HOLD_STEP     (4u << 10)
#define PUT_WAITED_MS 250 /* a put this slow was parked for room (or the cluster is slow) */
#define CLEANUP_CHUNK 1024u

#define FIELD_PAYLOAD "payload"
#define FIELD_HDR     "hdr"
#define FIELD_VALUE   "v"
#define TASK          "verify"
#define KV_DOMAIN     0x6b76u /* "kv": key-value rows come from another stream */

/* ---- state ---- */

enum { ROW_NONE, ROW_UNREAD, ROW_READ };

typedef struct {
    uint64_t puts, rows_put, rows_verified, gets, clears, rows_cleared;
    uint64_t kv_puts, kv_gets, kv_verified, kv_clears, kv_lists, nospace, put_waits;
    uint64_t mismatches, errors;
} stats_t;

/* A row read and kept, in the order it was read, to clear the oldest first. */
typedef struct {
    int64_t  index;
    uint64_t counter;
} kept_t;

static struct {
    tq_client  *c;
    const char *partition;
    char        kv_partition[300];
    uint64_t    seed, rng, counter;
    uint64_t    hold_cap, hold;   /* bytes of read rows to keep: the cap, the target now */
    /* per row index: what the worker put there */
    uint8_t    *state;
    uint64_t   *counter_at;
    uint32_t    cap_index;
    uint32_t    num_unread, num_read;
    uint64_t    read_bytes; /* of rows read and still held */
    kept_t     *kept;       /* ring of rows read and held, oldest first (may be stale) */
    uint32_t    kept_head, kept_len, kept_cap;
    /* keys "k00".."k31": the version each holds, 0 when absent */
    uint64_t    kv_version[KV_KEYS];
    /* buffers, allocated once */
    uint8_t    *put_buf;    /* BATCH_MAX rows of ROW_MAX */
    uint8_t    *want;       /* one row regenerated */
    stats_t     st;
} w;

/* ---- output ---- */

static void report(const char *kind, const char *fmt, ...)
{
    if (w.st.mismatches + w.st.errors > MAX_REPORTS)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "stress_worker %s: %s: ", w.partition, kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

#define MISMATCH(...) (w.st.mismatches++, report("mismatch", __VA_ARGS__))
#define ERROR(...)    (w.st.errors++, report("error", __VA_ARGS__))

static void fail_call(const char *what, int rc)
{
    ERROR("%s: %s (%s)", what, tq_status_string(rc), tq_last_error(w.c));
}

/* ---- time and randomness ---- */

/* Time spent in each library call, to tell a slow cluster from a stuck one. */
typedef enum { OP_OPEN, OP_PUT, OP_GET_META, OP_GET_DATA, OP_META_FREE, OP_CLEAR, OP_KV_PUT,
               OP_KV_GET, OP_KV_CLEAR, OP_KV_LIST, OP_COUNT } op_t;
static const char *const op_names[OP_COUNT] = {"open", "put", "get_meta", "get_data",
                                               "meta_free", "clear", "kv_put", "kv_get",
                                               "kv_clear", "kv_list"};
static struct {
    uint64_t calls, total_us, max_us;
} op_time[OP_COUNT];

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* TIMED(op, call): the call's value, its time counted against op. */
#define TIMED(op, call)                                                        \
    ({                                                                         \
        uint64_t t0_ = now_us();                                               \
        __typeof__(call) r_ = (call);                                          \
        op_record((op), now_us() - t0_);                                       \
        r_;                                                                    \
    })
#define TIMED_VOID(op, call)                                                   \
    do {                                                                       \
        uint64_t t0_ = now_us();                                               \
        call;                                                                  \
        op_record((op), now_us() - t0_);                                       \
    } while (0)

static void op_record(op_t op, uint64_t us)
{
    op_time[op].calls++;
    op_time[op].total_us += us;
    if (us > op_time[op].max_us)
        op_time[op].max_us = us;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A uniform number in [lo, hi]. */
static uint32_t rnd(uint32_t lo, uint32_t hi)
{
    return lo + (uint32_t)(splitmix64(&w.rng) % ((uint64_t)hi - lo + 1));
}

static bool chance(unsigned one_in) { return rnd(1, one_in) == 1; }

/* ---- rows as functions of (seed, counter) ---- */

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Lengths: a quarter small (up to 1 KiB), the rest anywhere up to max. */
static uint32_t content_len(uint64_t seed, uint64_t counter, uint32_t max)
{
    uint64_t x = seed ^ (counter * 0xd1b54a32d192ed03ull) ^ 0x1e4;
    uint64_t r = splitmix64(&x);
    uint32_t hi = (r & 3) == 0 ? 1024u : max;
    return ROW_MIN + (uint32_t)((r >> 2) % (hi - ROW_MIN + 1));
}

/* Write the content of (seed, counter), len bytes, at p. @return its checksum. */
static uint64_t content_fill(uint64_t seed, uint64_t counter, uint8_t *p, uint32_t len)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull ^ counter;
    put_le64(p + 8, counter ^ seed);
    uint32_t i = 16;
    for (; i + 8 <= len; i += 8)
        put_le64(p + i, splitmix64(&x));
    if (i < len) {
        uint8_t last[8];
        put_le64(last, splitmix64(&x));
        memcpy(p + i, last, len - i);
    }
    uint64_t sum = fnv1a64(p + 8, len - 8);
    put_le64(p, sum);
    return sum;
}

/*
 * Check one value read back (got, got_len) byte for byte against the one of
 * (seed, counter), regenerated into w.want (left there for the caller); on a
 * difference, its own checksum tells corrupted bytes from a whole other value.
 * `what` names it. @return true when it matches (a mismatch is counted and
 * reported).
 */
static bool content_check(uint64_t seed, uint64_t counter, uint32_t max, const uint8_t *got,
                          size_t got_len, const char *what)
{
    uint32_t len = content_len(seed, counter, max);
    content_fill(seed, counter, w.want, len);
    if (got == NULL || got_len != len) {
        MISMATCH("%s (counter %" PRIu64 "): %zu bytes, want %u%s", what, counter, got_len, len,
                 got == NULL ? " (no data)" : "");
        return false;
    }
    if (memcmp(got, w.want, len) == 0)
        return true;
    bool self_ok = fnv1a64(got + 8, len - 8) == get_le64(got);
    size_t at = 0;
    while (got[at] == w.want[at])
        at++;
    MISMATCH("%s (counter %" PRIu64 ", %u bytes): first difference at byte %zu: got 0x%02x, "
             "want 0x%02x; its own checksum %s (got counter tag 0x%016" PRIx64 ", want 0x%016"
             PRIx64 ")", what, counter, len, at, got[at], w.want[at],
             self_ok ? "holds: a whole other row" : "fails: corrupted bytes",
             get_le64(got + 8), get_le64(w.want + 8));
    return false;
}

/* ---- rows held ---- */

static int held_grow(int64_t index)
{
    if (index < 0 || index >= (int64_t)MAX_INDEX) {
        MISMATCH("put returned index %" PRId64 ", outside [0, %u)", index, MAX_INDEX);
        return -1;
    }
    if ((uint64_t)index < w.cap_index)
        return 0;
    uint32_t cap = w.cap_index ? w.cap_index : 256;
    while (cap <= (uint64_t)index)
        cap *= 2;
    uint8_t *state = realloc(w.state, cap);
    if (state != NULL)
        w.state = state;
    uint64_t *counter_at = realloc(w.counter_at, cap * sizeof(uint64_t));
    if (counter_at != NULL)
        w.counter_at = counter_at;
    if (state == NULL || counter_at == NULL) {
        ERROR("out of memory for %u row indexes", cap);
        return -1;
    }
    memset(w.state + w.cap_index, ROW_NONE, cap - w.cap_index);
    memset(w.counter_at + w.cap_index, 0, (cap - w.cap_index) * sizeof(uint64_t));
    w.cap_index = cap;
    return 0;
}

static uint32_t row_len(uint64_t counter) { return content_len(w.seed, counter, ROW_MAX); }

static bool kept_live(kept_t k)
{
    return w.state[k.index] == ROW_READ && w.counter_at[k.index] == k.counter;
}

/* Remember a row read and kept. Entries of rows cleared since stay in the ring
 * until they come up; when it is full, drop them all (there are at most
 * HOLD_ROWS_MAX live ones in twice as many places). */
static void kept_push(int64_t index, uint64_t counter)
{
    if (w.kept_len == w.kept_cap) {
        uint32_t live = 0;
        for (uint32_t i = 0; i < w.kept_len; i++) {
            kept_t k = w.kept[(w.kept_head + i) % w.kept_cap];
            if (kept_live(k))
                w.kept[(w.kept_head + live++) % w.kept_cap] = k;
        }
        w.kept_len = live;
    }
    w.kept[(w.kept_head + w.kept_len++) % w.kept_cap] = (kept_t){index, counter};
}

static void forget(int64_t index)
{
    if (w.state[index] == ROW_UNREAD) {
        w.num_unread--;
    } else if (w.state[index] == ROW_READ) {
        w.num_read--;
        w.read_bytes -= row_len(w.counter_at[index]);
    }
    w.state[index] = ROW_NONE;
}

/* tq_clear of n indexes the worker holds: it must remove exactly those. */
static int clear_rows(const int64_t *idx, uint32_t n)
{
    if (n == 0)
        return 0;
    int rc = TIMED(OP_CLEAR, tq_clear(w.c, w.partition, n, idx));
    if (rc < 0) {
        fail_call("tq_clear", rc);
        return -1;
    }
    w.st.clears++;
    w.st.rows_cleared += (uint64_t)rc;
    if ((uint32_t)rc != n)
        MISMATCH("tq_clear of %u live rows removed %d", n, rc);
    for (uint32_t i = 0; i < n; i++)
        forget(idx[i]);
    return (uint32_t)rc == n ? 0 : -1;
}

/* Clear rows already read, oldest first, until at most keep_bytes of them remain. */
static int clear_oldest(uint64_t keep_bytes)
{
    int64_t idx[GET_MAX * 4];
    while (w.kept_len > 0 && w.read_bytes > keep_bytes) {
        uint32_t n = 0;
        uint64_t bytes = w.read_bytes;
        while (w.kept_len > 0 && bytes > keep_bytes && n < GET_MAX * 4) {
            kept_t k = w.kept[w.kept_head];
            w.kept_head = (w.kept_head + 1) % w.kept_cap;
            w.kept_len--;
            if (!kept_live(k))
                continue; /* cleared since, maybe reused */
            idx[n++] = k.index;
            bytes -= row_len(k.counter);
        }
        if (clear_rows(idx, n) != 0)
            return -1;
    }
    return 0;
}

/* ---- put ---- */

/* Put a batch of 1..BATCH_MAX new rows. @return 0, 1 for no space, -1 on error. */
static int put_batch(void)
{
    uint32_t n = rnd(1, BATCH_MAX);
    const void *values[BATCH_MAX];
    size_t lengths[BATCH_MAX];
    int64_t hdr[BATCH_MAX][3], out[BATCH_MAX];
    uint64_t first = w.counter + 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t counter = first + i;
        uint8_t *p = w.put_buf + (size_t)i * ROW_MAX;
        lengths[i] = row_len(counter);
        values[i] = p;
        uint64_t sum = content_fill(w.seed, counter, p, (uint32_t)lengths[i]);
        hdr[i][0] = (int64_t)counter;
        hdr[i][1] = (int64_t)lengths[i];
        hdr[i][2] = (int64_t)sum;
    }
    tq_batch *b = NULL;
    static const int64_t hdr_shape[1] = {3};
    int rc = tq_batch_create(n, &b);
    if (rc == TQ_OK)
        rc = tq_batch_add_bytes(b, FIELD_PAYLOAD, values, lengths);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(b, FIELD_HDR, TQ_DTYPE_I64, 1, hdr_shape, hdr);
    if (rc != TQ_OK) {
        tq_batch_destroy(b);
        fail_call("building a batch", rc);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        out[i] = -1;
    uint64_t t0 = tq_test_now_ms();
    rc = TIMED(OP_PUT, tq_put(w.c, w.partition, b, NULL, out));
    bool waited = tq_test_now_ms() - t0 >= PUT_WAITED_MS;
    tq_batch_destroy(b);
    if (rc == TQ_ERR_NOSPACE || (rc == TQ_OK && waited)) { /* back off */
        w.hold = w.hold / 2 > HOLD_MIN ? w.hold / 2 : HOLD_MIN;
    } else if (rc == TQ_OK) {
        w.hold = w.hold + HOLD_STEP < w.hold_cap ? w.hold + HOLD_STEP : w.hold_cap;
    }
    if (rc == TQ_ERR_NOSPACE) {
        w.st.nospace++;
        return 1;
    }
    w.st.put_waits += rc == TQ_OK && waited;
    if (rc != TQ_OK) {
        fail_call("tq_put", rc);
        return -1;
    }
    w.counter += n;
    w.st.puts++;
    w.st.rows_put += n;
    for (uint32_t i = 0; i < n; i++) {
        if (held_grow(out[i]) != 0)
            return -1;
        if (w.state[out[i]] != ROW_NONE) {
            MISMATCH("put returned index %" PRId64 ", which holds a live row of ours", out[i]);
            return -1;
        }
        w.state[out[i]] = ROW_UNREAD;
        w.counter_at[out[i]] = first + i;
        w.num_unread++;
    }
    return 0;
}

/* ---- get ---- */

/* Check one row of a get: index ours and unread, payload and hdr as put. */
static void check_row(const tq_batch *b, uint32_t i, int64_t index, bool with_hdr)
{
    uint64_t counter = w.counter_at[index];
    char what[64];
    snprintf(what, sizeof(what), "row %" PRId64, index);
    size_t bytes = 0;
    const uint8_t *p = tq_batch_row(b, FIELD_PAYLOAD, i, &bytes, NULL);
    bool ok = content_check(w.seed, counter, ROW_MAX, p, bytes, what);
    if (with_hdr) {
        const int64_t *h = tq_batch_row(b, FIELD_HDR, i, &bytes, NULL);
        uint32_t len = row_len(counter);
        if (h == NULL || bytes != 3 * sizeof(int64_t)) {
            MISMATCH("%s: hdr of %zu bytes%s, want 24", what, bytes, h ? "" : " (absent)");
            ok = false;
        } else {
            int64_t v[3];
            memcpy(v, h, sizeof(v));
            uint64_t sum = get_le64(w.want); /* content_check regenerated the row there */
            if (v[0] != (int64_t)counter || v[1] != (int64_t)len || v[2] != (int64_t)sum) {
                MISMATCH("%s: hdr {%" PRId64 ", %" PRId64 ", 0x%" PRIx64 "}, want {%" PRIu64
                         ", %u, 0x%" PRIx64 "}", what, v[0], v[1], (uint64_t)v[2], counter, len,
                         sum);
                ok = false;
            }
        }
    }
    w.st.rows_verified += ok;
}

/* Read k of the unread rows for TASK and check them; then clear all, some or none
 * of them. @return 0, or -1 on an error. */
static int get_rows(uint32_t k)
{
    static const char *const both[] = {FIELD_PAYLOAD, FIELD_HDR};
    static const char *const swapped[] = {FIELD_HDR, FIELD_PAYLOAD};
    static const char *const payload_only[] = {FIELD_PAYLOAD};
    unsigned pick = rnd(0, 3);
    const char *const *fields = pick == 0 ? payload_only : pick == 1 ? swapped : both;
    tq_fetch_args_t a = {.partition = w.partition, .task = TASK, .fields = fields,
                         .num_fields = pick == 0 ? 1 : 2, .batch_size = k, .timeout_ms = 0};
    tq_meta *m = NULL;
    int rc = TIMED(OP_GET_META, tq_get_meta(w.c, &a, &m));
    if (rc != TQ_OK) {
        fail_call("tq_get_meta of rows ready", rc);
        return -1;
    }
    w.st.gets++;
    const int64_t *idx = tq_meta_indexes(m);
    uint32_t n = tq_meta_rows(m);
    int result = 0;
    if (n != k || idx == NULL) {
        MISMATCH("tq_get_meta of %u rows gave %u", k, n);
        result = -1;
    }
    /* each row once, and each an unread row of ours: it is read from now on */
    int64_t copy[GET_MAX];
    for (uint32_t i = 0; result == 0 && i < n; i++) {
        if (idx[i] < 0 || (uint64_t)idx[i] >= w.cap_index || w.state[idx[i]] != ROW_UNREAD) {
            MISMATCH("tq_get_meta gave row %" PRId64 ", not an unread row of ours%s", idx[i],
                     idx[i] >= 0 && (uint64_t)idx[i] < w.cap_index &&
                     w.state[idx[i]] == ROW_READ ? " (read already, or twice in one meta)" : "");
            result = -1;
            break;
        }
        copy[i] = idx[i];
        w.state[idx[i]] = ROW_READ;
        w.num_unread--;
        w.num_read++;
        w.read_bytes += row_len(w.counter_at[idx[i]]);
        kept_push(idx[i], w.counter_at[idx[i]]);
    }
    tq_batch *b = NULL;
    if (result == 0 && (rc = TIMED(OP_GET_DATA, tq_get_data(w.c, m, &b))) != TQ_OK) {
        fail_call("tq_get_data", rc);
        result = -1;
    }
    if (result == 0 && tq_batch_rows(b) != n) {
        MISMATCH("tq_get_data gave %u rows for %u", tq_batch_rows(b), n);
        result = -1;
    }
    for (uint32_t i = 0; result == 0 && i < n; i++)
        check_row(b, i, idx[i], pick != 0);
    tq_batch_destroy(b);
    TIMED_VOID(OP_META_FREE, tq_meta_free(m));
    if (result != 0)
        return result;

    /* a quarter cleared at once, a quarter partly, the rest kept for now */
    unsigned policy = rnd(0, 3);
    if (policy == 0)
        return clear_rows(copy, n);
    if (policy == 1) {
        uint32_t some = 0;
        for (uint32_t i = 0; i < n; i++)
            if (chance(2))
                copy[some++] = copy[i];
        return clear_rows(copy, some);
    }
    return 0;
}

/* Reading more than is ready must time out at once and consume nothing. */
static int get_too_many(void)
{
    static const char *const fields[] = {FIELD_PAYLOAD, FIELD_HDR};
    tq_fetch_args_t a = {.partition = w.partition, .task = TASK, .fields = fields,
                         .num_fields = 2, .batch_size = w.num_unread + 1, .timeout_ms = 0};
    tq_meta *m = NULL;
    int rc = TIMED(OP_GET_META, tq_get_meta(w.c, &a, &m));
    if (rc == TQ_ERR_TIMEOUT && m == NULL)
        return 0;
    if (rc == TQ_OK) {
        MISMATCH("tq_get_meta of %u rows with %u ready gave %u", w.num_unread + 1, w.num_unread,
                 tq_meta_rows(m));
        tq_meta_free(m);
        return -1;
    }
    fail_call("tq_get_meta of more rows than ready", rc);
    return -1;
}

/* Make room after TQ_ERR_NOSPACE: clear what was read down to half of it or the
 * hold target, or read and clear what was not, or wait a little when holding
 * nothing. @return 0, or -1. */
static int make_room(void)
{
    if (w.num_read > 0)
        return clear_oldest(w.read_bytes / 2 < w.hold ? w.read_bytes / 2 : w.hold);
    if (w.num_unread > 0) {
        if (get_rows(w.num_unread < GET_MAX ? w.num_unread : GET_MAX) != 0)
            return -1;
        return clear_oldest(0);
    }
    tq_test_sleep_ms((int)rnd(1, NOSPACE_SLEEP_MAX_MS));
    return 0;
}

/* ---- key-value ---- */

static void key_name(unsigned k, char *buf) { snprintf(buf, 8, "k%02u", k); }

static uint32_t kv_len(uint64_t version)
{
    return content_len(w.seed ^ KV_DOMAIN, version, KV_VALUE_MAX);
}

/* Up to `max` distinct random keys (present ones only, if so asked) into ks. */
static uint32_t pick_keys(unsigned *ks, uint32_t max, bool present_only)
{
    unsigned order[KV_KEYS], n = 0;
    for (unsigned k = 0; k < KV_KEYS; k++)
        if (!present_only || w.kv_version[k] != 0)
            order[n++] = k;
    for (unsigned i = 0; i + 1 < n; i++) { /* shuffle */
        unsigned j = rnd(i, n - 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint32_t want = n == 0 ? 0 : rnd(1, max < n ? max : n);
    memcpy(ks, order, want * sizeof(unsigned));
    return want;
}

static int kv_put(void)
{
    unsigned ks[KV_BATCH_MAX];
    char names[KV_BATCH_MAX][8], tags[KV_BATCH_MAX][48];
    const char *keys[KV_BATCH_MAX], *tag_ptrs[KV_BATCH_MAX];
    const void *values[KV_BATCH_MAX];
    size_t lengths[KV_BATCH_MAX];
    uint32_t n = pick_keys(ks, KV_BATCH_MAX, false);
    uint64_t first = w.counter + 1;
    for (uint32_t i = 0; i < n; i++) {
        key_name(ks[i], names[i]);
        keys[i] = names[i];
        snprintf(tags[i], sizeof(tags[i]), "{\"ver\":%" PRIu64 "}", first + i);
        tag_ptrs[i] = tags[i];
        uint8_t *p = w.put_buf + (size_t)i * ROW_MAX;
        lengths[i] = kv_len(first + i);
        content_fill(w.seed ^ KV_DOMAIN, first + i, p, (uint32_t)lengths[i]);
        values[i] = p;
    }
    tq_batch *b = NULL;
    int rc = tq_batch_create(n, &b);
    if (rc == TQ_OK)
        rc = tq_batch_add_bytes(b, FIELD_VALUE, values, lengths);
    if (rc == TQ_OK)
        rc = TIMED(OP_KV_PUT, tq_kv_batch_put(w.c, w.kv_partition, n, keys, b, tag_ptrs));
    tq_batch_destroy(b);
    if (rc == TQ_ERR_NOSPACE) { /* atomic: nothing was written */
        w.st.nospace++;
        return 0;
    }
    if (rc != TQ_OK) {
        fail_call("tq_kv_batch_put", rc);
        return -1;
    }
    w.counter += n;
    w.st.kv_puts++;
    for (uint32_t i = 0; i < n; i++)
        w.kv_version[ks[i]] = first + i;
    return 0;
}

static int kv_get(void)
{
    unsigned ks[KV_BATCH_MAX];
    char names[KV_BATCH_MAX][8];
    const char *keys[KV_BATCH_MAX];
    static const char *const fields[] = {FIELD_VALUE};
    uint32_t n = pick_keys(ks, KV_BATCH_MAX, true);
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        key_name(ks[i], names[i]);
        keys[i] = names[i];
    }
    tq_batch *b = NULL;
    bool named = chance(2); /* or every field the keys have: just "v" */
    int rc = TIMED(OP_KV_GET, tq_kv_batch_get(w.c, w.kv_partition, n, keys, named ? 1 : 0,
                                              named ? fields : NULL, &b));
    if (rc != TQ_OK) {
        fail_call("tq_kv_batch_get", rc);
        return -1;
    }
    w.st.kv_gets++;
    if (tq_batch_rows(b) != n) {
        MISMATCH("tq_kv_batch_get of %u keys gave %u rows", n, tq_batch_rows(b));
        tq_batch_destroy(b);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t bytes = 0;
        const uint8_t *p = tq_batch_row(b, FIELD_VALUE, i, &bytes, NULL);
        char what[32];
        snprintf(what, sizeof(what), "key %s", keys[i]);
        w.st.kv_verified += content_check(w.seed ^ KV_DOMAIN, w.kv_version[ks[i]], KV_VALUE_MAX,
                                          p, bytes, what);
    }
    tq_batch_destroy(b);
    return 0;
}

/* Clear 1..4 keys, present or not: exactly the present ones go. */
static int kv_clear(void)
{
    unsigned ks[4];
    char names[4][8];
    const char *keys[4];
    uint32_t n = pick_keys(ks, 4, false), present = 0;
    for (uint32_t i = 0; i < n; i++) {
        key_name(ks[i], names[i]);
        keys[i] = names[i];
        present += w.kv_version[ks[i]] != 0;
    }
    int rc = TIMED(OP_KV_CLEAR, tq_kv_clear(w.c, w.kv_partition, n, keys));
    if (rc < 0) {
        fail_call("tq_kv_clear", rc);
        return -1;
    }
    w.st.kv_clears++;
    for (uint32_t i = 0; i < n; i++)
        w.kv_version[ks[i]] = 0;
    if ((uint32_t)rc != present) {
        MISMATCH("tq_kv_clear of %u keys, %u of them present, removed %d", n, present, rc);
        return -1;
    }
    return 0;
}

/* The listing names exactly the present keys, each with its last tag. */
static int kv_list(void)
{
    tq_kv_entries *e = NULL;
    int rc = TIMED(OP_KV_LIST, tq_kv_list(w.c, w.kv_partition, &e));
    if (rc != TQ_OK) {
        fail_call("tq_kv_list", rc);
        return -1;
    }
    w.st.kv_lists++;
    bool seen[KV_KEYS] = {false};
    unsigned present = 0;
    for (unsigned k = 0; k < KV_KEYS; k++)
        present += w.kv_version[k] != 0;
    int result = 0;
    size_t n = tq_kv_entries_size(e);
    for (size_t i = 0; i < n && result == 0; i++) {
        const char *key = tq_kv_entries_key(e, i), *tag = tq_kv_entries_tag(e, i);
        unsigned k = KV_KEYS;
        if (key != NULL && key[0] == 'k' && strlen(key) == 3)
            k = (unsigned)atoi(key + 1);
        if (k >= KV_KEYS || w.kv_version[k] == 0 || seen[k]) {
            MISMATCH("tq_kv_list names key %s, not a present key of ours (or twice)",
                     key ? key : "(null)");
            result = -1;
            break;
        }
        seen[k] = true;
        cJSON *j = tag ? cJSON_Parse(tag) : NULL;
        cJSON *ver = cJSON_GetObjectItemCaseSensitive(j, "ver");
        if (!cJSON_IsNumber(ver) || (uint64_t)ver->valuedouble != w.kv_version[k]) {
            MISMATCH("key %s: tag %s, want {\"ver\":%" PRIu64 "}", key, tag ? tag : "(null)",
                     w.kv_version[k]);
            result = -1;
        }
        cJSON_Delete(j);
    }
    if (result == 0 && n != present) {
        MISMATCH("tq_kv_list lists %zu keys, want %u", n, present);
        result = -1;
    }
    tq_kv_entries_free(e);
    return result;
}

static int kv_step(void)
{
    switch (rnd(0, 9)) {
    case 0: case 1: case 2: case 3: return kv_put();
    case 4: case 5: case 6:         return kv_get();
    case 7: case 8:                 return kv_clear();
    default:                        return kv_list();
    }
}

/* ---- the rounds ---- */

static void run(uint64_t deadline)
{
    while (tq_test_now_ms() < deadline) {
        /* put, making room as long as the pools are full */
        int rc;
        while ((rc = put_batch()) == 1 && tq_test_now_ms() < deadline)
            if (make_room() != 0)
                return;
        if (rc < 0)
            return;
        if (w.num_unread > 0 && !chance(4)) {
            uint32_t k = chance(2) ? w.num_unread : rnd(1, w.num_unread);
            if (get_rows(k < GET_MAX ? k : GET_MAX) != 0)
                return;
        }
        if (w.read_bytes > w.hold && clear_oldest(w.hold / 2) != 0)
            return;
        if (w.num_read + w.num_unread + BATCH_MAX > HOLD_ROWS_MAX && clear_oldest(0) != 0)
            return;
        /* too many rows not read yet: read and clear them */
        while (w.num_unread + BATCH_MAX > HOLD_ROWS_MAX / 2)
            if (get_rows(GET_MAX) != 0 || clear_oldest(0) != 0)
                return;
        if (chance(3) && kv_step() != 0)
            return;
        if (chance(50) && get_too_many() != 0)
            return;
    }
}

/* Clear every row and key still held. */
static void cleanup(void)
{
    int64_t idx[CLEANUP_CHUNK];
    uint32_t n = 0;
    for (uint32_t i = 0; i < w.cap_index; i++) {
        if (w.state[i] == ROW_NONE)
            continue;
        idx[n++] = i;
        if (n == CLEANUP_CHUNK) {
            if (clear_rows(idx, n) != 0)
                return;
            n = 0;
        }
    }
    if (clear_rows(idx, n) != 0)
        return;
    char names[KV_KEYS][8];
    const char *keys[KV_KEYS];
    uint32_t present = 0;
    for (unsigned k = 0; k < KV_KEYS; k++)
        if (w.kv_version[k] != 0) {
            key_name(k, names[present]);
            keys[present] = names[present];
            present++;
        }
    if (present == 0)
        return;
    int rc = TIMED(OP_KV_CLEAR, tq_kv_clear(w.c, w.kv_partition, present, keys));
    if (rc < 0) {
        fail_call("tq_kv_clear at the end", rc);
        return;
    }
    w.st.kv_clears++;
    if ((uint32_t)rc != present)
        MISMATCH("tq_kv_clear of the %u keys left removed %d", present, rc);
    memset(w.kv_version, 0, sizeof(w.kv_version));
}

static int usage(void)
{
    fprintf(stderr, "usage: stress_worker ADDRESS PARTITION SEED SECONDS HOLD_KIB PARENT_PID\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 7)
        return usage();
    /* die with the test, and not at all if it is gone already */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != (pid_t)atol(argv[6]))
        return 2;
    const char *address = argv[1];
    w.partition = argv[2];
    w.seed = strtoull(argv[3], NULL, 0);
    int seconds = atoi(argv[4]);
    w.hold_cap = w.hold = strtoull(argv[5], NULL, 0) << 10;
    if (seconds <= 0 || w.hold_cap < HOLD_MIN || strlen(w.partition) > 200)
        return usage();
    snprintf(w.kv_partition, sizeof(w.kv_partition), "%s_kv", w.partition);
    w.rng = w.seed ^ 0x5eed;
    w.kept_cap = HOLD_ROWS_MAX * 2;
    w.kept = calloc(w.kept_cap, sizeof(kept_t));
    w.put_buf = malloc((size_t)BATCH_MAX * ROW_MAX);
    w.want = malloc(ROW_MAX);
    if (w.kept == NULL || w.put_buf == NULL || w.want == NULL) {
        fprintf(stderr, "stress_worker %s: out of memory\n", w.partition);
        return 1;
    }
    uint64_t deadline = tq_test_now_ms() + (uint64_t)seconds * 1000u;

    int rc = TIMED(OP_OPEN, tq_open(address, &w.c));
    if (rc != TQ_OK) {
        ERROR("tq_open(%s): %s (%s)", address, tq_status_string(rc), tq_last_error(NULL));
    } else {
        run(deadline);
        cleanup();
        tq_close(w.c);
    }
    const stats_t *s = &w.st;
    printf("stress_worker: puts=%" PRIu64 " rows_put=%" PRIu64 " rows_verified=%" PRIu64
           " gets=%" PRIu64 " clears=%" PRIu64 " rows_cleared=%" PRIu64 " kv_puts=%" PRIu64
           " kv_gets=%" PRIu64 " kv_verified=%" PRIu64 " kv_clears=%" PRIu64 " kv_lists=%" PRIu64
           " nospace=%" PRIu64 " put_waits=%" PRIu64 " mismatches=%" PRIu64 " errors=%" PRIu64
           "\n",
           s->puts, s->rows_put, s->rows_verified, s->gets, s->clears, s->rows_cleared,
           s->kv_puts, s->kv_gets, s->kv_verified, s->kv_clears, s->kv_lists, s->nospace,
           s->put_waits, s->mismatches, s->errors);
    printf("stress_worker_calls:");
    for (int i = 0; i < OP_COUNT; i++)
        printf(" %s=%" PRIu64 ",%" PRIu64 ",%" PRIu64, op_names[i], op_time[i].calls,
               op_time[i].total_us, op_time[i].max_us);
    printf("\n");
    fflush(stdout);
    free(w.kept);
    free(w.put_buf);
    free(w.want);
    free(w.state);
    free(w.counter_at);
    return s->mismatches == 0 && s->errors == 0 ? 0 : 1;
}
