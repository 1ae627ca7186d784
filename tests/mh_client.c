/* mh_client.c: the client test_multihost runs on its hosts (namespaces), one role a process. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tq/tq.h"

/*
 * Roles:
 *   probe  open a client; check the controller address it reports, the live
 *          storage units, and the local address a TCP connection to the
 *          controller leaves from (--expect-local); every --unreachable address
 *          must refuse a client.
 *   put    tq_put --rows rows in batches of --batch (--delay-ms apart) of three
 *          fields: "t" F32 tensor of --elems per row, "n" nested I64 of 2
 *          dimensions, "b" bytes (empty values and zero bytes among them); then
 *          tq_kv_batch_put of --keys keys with tags into "<partition>.kv";
 *          then tq_partition_seal.
 *   get    tq_stream over the partition, checking every row against the
 *          pattern recomputed from its index, every row exactly once, then
 *          TQ_ERR_END; then tq_kv_batch_get of the keys (in reverse order) and
 *          tq_kv_list of their tags.
 * Exit status: 0 when everything matched; 1 on a mismatch or error (each one
 * printed); 2 for bad usage; 77 when TQ_TRANSPORT names a transport this build
 * or this host does not have (the test skips it).
 */

#define MH_EXIT_OK          0
#define MH_EXIT_FAIL        1
#define MH_EXIT_USAGE       2
#define MH_EXIT_UNAVAILABLE 77

#define MH_MAX_UNREACHABLE 4
#define MH_MAX_REPORTS     20 /* mismatches printed in full; the rest are counted */
#define MH_NESTED_NDIM     2

typedef struct {
    const char *role;
    const char *controller;
    const char *partition;
    const char *expect_local;
    const char *unreachable[MH_MAX_UNREACHABLE];
    unsigned    num_unreachable;
    uint32_t    rows, batch, elems, keys;
    int         delay_ms, timeout_ms;
} mh_opts_t;

static unsigned mismatches;

static void mismatch(const char *fmt, ...)
{
    if (mismatches++ >= MH_MAX_REPORTS)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mh_client: mismatch: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int fail(tq_client *c, const char *what, int rc)
{
    fprintf(stderr, "mh_client: %s: %s (%s)\n", what, tq_status_string(rc), tq_last_error(c));
    return MH_EXIT_FAIL;
}

/* ---- the patterns, recomputed from a row index or key number ---- */

static float t_value(uint64_t row, uint32_t j)
{
    uint32_t h = (uint32_t)(row * 2654435761u) ^ (j * 40503u + 0x9e37u);
    return (float)(int32_t)(h % 2000003u) / 7.0f - (float)j;
}

static void t_row(uint64_t row, uint32_t elems, float *out)
{
    for (uint32_t j = 0; j < elems; j++)
        out[j] = t_value(row, j);
}

/* Row i of "n" has shape [1 + i % 3, 1 + (i / 3) % 4]. */
static void n_shape(uint64_t row, int64_t shape[MH_NESTED_NDIM])
{
    shape[0] = 1 + (int64_t)(row % 3);
    shape[1] = 1 + (int64_t)((row / 3) % 4);
}

static size_t n_elems(uint64_t row)
{
    int64_t s[MH_NESTED_NDIM];
    n_shape(row, s);
    return (size_t)(s[0] * s[1]);
}

static void n_row(uint64_t row, int64_t *out)
{
    size_t n = n_elems(row);
    for (size_t k = 0; k < n; k++)
        out[k] = (int64_t)row * 1000000 - (int64_t)k * 7 - 1;
}

/* Bytes values: every fifth one empty; the others hold zero bytes here and there. */
static size_t bytes_len(uint64_t i, uint64_t salt)
{
    return (i + salt) % 5 == 0 ? 0 : 1 + (size_t)((i * 37 + salt) % 300);
}

static void bytes_fill(uint64_t i, uint64_t salt, uint8_t *out)
{
    size_t len = bytes_len(i, salt);
    for (size_t k = 0; k < len; k++)
        out[k] = (i + k + salt) % 7 == 0 ? 0 : (uint8_t)(i * 31 + k * 17 + salt + 1);
}

#define KV_SALT 3 /* the kv values differ from the rows' "b" */

static int64_t kv_id(uint32_t k) { return (int64_t)k * 7 + 3; }

static void kv_key(uint32_t k, char *out, size_t size) { snprintf(out, size, "key-%04u", k); }

static void kv_tag(uint32_t k, char *out, size_t size)
{
    snprintf(out, size, "{\"i\":%u,\"from\":\"put\",\"odd\":%s}", k, k % 2 ? "true" : "false");
}

/* ---- probe ---- */

/* Connect a TCP socket to host:port within timeout_ms. @return the fd, or -1. */
static int tcp_connect(const char *hostport, int timeout_ms)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (errno != EINPROGRESS || poll(&p, 1, timeout_ms) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int role_probe(const mh_opts_t *o)
{
    tq_client *c = NULL;
    int rc = tq_open(o->controller, &c);
    const char *transport = getenv("TQ_TRANSPORT");
    if (rc != TQ_OK) {
        const char *detail = tq_last_error(NULL);
        fprintf(stderr, "mh_client: tq_open(%s) with TQ_TRANSPORT=%s: %s (%s)\n", o->controller,
                transport ? transport : "(unset)", tq_status_string(rc), detail);
        if (rc == TQ_ERR_UNSUPPORTED ||
            (rc == TQ_ERR_INVALID && strstr(detail, "unknown TQ_TRANSPORT") != NULL))
            return MH_EXIT_UNAVAILABLE;
        return MH_EXIT_FAIL;
    }
    const char *addr = tq_controller_address(c);
    if (addr == NULL || strcmp(addr, o->controller) != 0)
        mismatch("the client reports controller %s, want %s", addr ? addr : "(null)",
                 o->controller);
    tq_unit_info_t *units = NULL;
    int n = tq_units(c, &units);
    int alive = 0;
    for (int i = 0; i < n; i++)
        alive += units[i].alive != 0;
    free(units);
    if (n < 0)
        rc = fail(c, "tq_units", n);
    else if (alive < 1)
        mismatch("%d storage units, %d alive: want at least 1 alive", n, alive);
    tq_close(c);

    /* Which address does this host use to reach the controller? */
    int fd = tcp_connect(o->controller, 5000);
    if (fd < 0) {
        mismatch("a TCP connection to %s failed: %s", o->controller, strerror(errno));
    } else {
        struct sockaddr_in local, peer;
        socklen_t ll = sizeof(local), pl = sizeof(peer);
        char l[INET_ADDRSTRLEN] = "?", p[INET_ADDRSTRLEN] = "?";
        if (getsockname(fd, (struct sockaddr *)&local, &ll) == 0)
            inet_ntop(AF_INET, &local.sin_addr, l, sizeof(l));
        if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
            inet_ntop(AF_INET, &peer.sin_addr, p, sizeof(p));
        printf("probe: control connection %s:%u -> %s:%u\n", l, ntohs(local.sin_port), p,
               ntohs(peer.sin_port));
        if (o->expect_local != NULL && strcmp(l, o->expect_local) != 0)
            mismatch("the connection to %s leaves from %s, want %s", o->controller, l,
                     o->expect_local);
        close(fd);
    }
    for (unsigned i = 0; i < o->num_unreachable; i++) {
        tq_client *u = NULL;
        int urc = tq_open(o->unreachable[i], &u);
        printf("probe: tq_open(%s): %s\n", o->unreachable[i], tq_status_string(urc));
        if (urc == TQ_OK)
            mismatch("the controller is reachable at %s too", o->unreachable[i]);
        else if (urc != TQ_ERR_CONNECTION && urc != TQ_ERR_TIMEOUT)
            mismatch("tq_open(%s): %s, want %s", o->unreachable[i], tq_status_string(urc),
                     tq_status_string(TQ_ERR_CONNECTION));
        tq_close(u);
    }
    if (rc != TQ_OK || mismatches > 0)
        return MH_EXIT_FAIL;
    printf("probe: ok (controller %s, %d live unit%s, TQ_TRANSPORT=%s)\n", o->controller, alive,
           alive == 1 ? "" : "s", transport ? transport : "(unset)");
    return MH_EXIT_OK;
}

/* ---- put ---- */

/* One batch of rows [first, first + n) of the three fields, and its buffers. */
typedef struct {
    tq_batch    *b;
    float       *t;
    int64_t     *shapes;
    int64_t    **n_rows;
    uint8_t    **b_rows;
    size_t      *b_lens;
} row_batch_t;

static void row_batch_free(row_batch_t *rb, uint32_t n)
{
    tq_batch_destroy(rb->b);
    for (uint32_t i = 0; i < n; i++) {
        if (rb->n_rows)
            free(rb->n_rows[i]);
        if (rb->b_rows)
            free(rb->b_rows[i]);
    }
    free(rb->t), free(rb->shapes), free(rb->n_rows), free(rb->b_rows), free(rb->b_lens);
    memset(rb, 0, sizeof(*rb));
}

static int row_batch_make(row_batch_t *rb, uint64_t first, uint32_t n, uint32_t elems)
{
    memset(rb, 0, sizeof(*rb));
    rb->t = malloc((size_t)n * elems * sizeof(float));
    rb->shapes = malloc((size_t)n * MH_NESTED_NDIM * sizeof(int64_t));
    rb->n_rows = calloc(n, sizeof(int64_t *));
    rb->b_rows = calloc(n, sizeof(uint8_t *));
    rb->b_lens = calloc(n, sizeof(size_t));
    if (!rb->t || !rb->shapes || !rb->n_rows || !rb->b_rows || !rb->b_lens)
        return TQ_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t row = first + i;
        t_row(row, elems, rb->t + (size_t)i * elems);
        n_shape(row, rb->shapes + (size_t)i * MH_NESTED_NDIM);
        if ((rb->n_rows[i] = malloc(n_elems(row) * sizeof(int64_t))) == NULL)
            return TQ_ERR_NOMEM;
        n_row(row, rb->n_rows[i]);
        rb->b_lens[i] = bytes_len(row, 0);
        if ((rb->b_rows[i] = malloc(rb->b_lens[i] + 1)) == NULL)
            return TQ_ERR_NOMEM;
        bytes_fill(row, 0, rb->b_rows[i]);
    }
    int64_t t_shape[1] = {elems};
    int rc = tq_batch_create(n, &rb->b);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(rb->b, "t", TQ_DTYPE_F32, 1, t_shape, rb->t);
    if (rc == TQ_OK)
        rc = tq_batch_add_nested(rb->b, "n", TQ_DTYPE_I64, MH_NESTED_NDIM, rb->shapes,
                                 (const void *const *)rb->n_rows);
    if (rc == TQ_OK)
        rc = tq_batch_add_bytes(rb->b, "b", (const void *const *)rb->b_rows, rb->b_lens);
    return rc;
}

static int put_keys(tq_client *c, const mh_opts_t *o, const char *kv_part)
{
    uint32_t k = o->keys;
    char (*keys)[32] = calloc(k, sizeof(*keys));
    char (*tags)[96] = calloc(k, sizeof(*tags));
    const char **key_p = calloc(k, sizeof(char *)), **tag_p = calloc(k, sizeof(char *));
    uint8_t **vals = calloc(k, sizeof(uint8_t *));
    size_t *lens = calloc(k, sizeof(size_t));
    int64_t *ids = calloc(k, sizeof(int64_t));
    tq_batch *b = NULL;
    int rc = keys && tags && key_p && tag_p && vals && lens && ids ? TQ_OK : TQ_ERR_NOMEM;
    for (uint32_t i = 0; rc == TQ_OK && i < k; i++) {
        kv_key(i, keys[i], sizeof(keys[i]));
        kv_tag(i, tags[i], sizeof(tags[i]));
        key_p[i] = keys[i];
        tag_p[i] = tags[i];
        lens[i] = bytes_len(i, KV_SALT);
        ids[i] = kv_id(i);
        if ((vals[i] = malloc(lens[i] + 1)) == NULL)
            rc = TQ_ERR_NOMEM;
        else
            bytes_fill(i, KV_SALT, vals[i]);
    }
    if (rc == TQ_OK)
        rc = tq_batch_create(k, &b);
    if (rc == TQ_OK)
        rc = tq_batch_add_bytes(b, "v", (const void *const *)vals, lens);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(b, "id", TQ_DTYPE_I64, 0, NULL, ids);
    if (rc == TQ_OK)
        rc = tq_kv_batch_put(c, kv_part, k, key_p, b, tag_p);
    if (rc != TQ_OK)
        fail(c, "tq_kv_batch_put", rc);
    tq_batch_destroy(b);
    for (uint32_t i = 0; vals && i < k; i++)
        free(vals[i]);
    free(keys), free(tags), free(key_p), free(tag_p), free(vals), free(lens), free(ids);
    return rc;
}

static int role_put(tq_client *c, const mh_opts_t *o, const char *kv_part)
{
    int64_t *out = calloc(o->batch, sizeof(int64_t));
    if (out == NULL)
        return fail(c, "put", TQ_ERR_NOMEM);
    int rc = TQ_OK;
    uint64_t t0 = tq_test_now_ms();
    for (uint32_t first = 0; rc == TQ_OK && first < o->rows; first += o->batch) {
        uint32_t n = o->rows - first < o->batch ? o->rows - first : o->batch;
        row_batch_t rb;
        rc = row_batch_make(&rb, first, n, o->elems);
        if (rc == TQ_OK)
            rc = tq_put(c, o->partition, rb.b, NULL, out);
        if (rc != TQ_OK)
            fail(c, "tq_put", rc);
        for (uint32_t i = 0; rc == TQ_OK && i < n; i++)
            if (out[i] != (int64_t)(first + i)) {
                mismatch("row %u of the put of rows %u..%u went to index %lld", i, first,
                         first + n - 1, (long long)out[i]);
                rc = TQ_ERR_INVALID;
            }
        row_batch_free(&rb, n);
        if (rc == TQ_OK && o->delay_ms > 0 && first + n < o->rows)
            tq_test_sleep_ms(o->delay_ms); /* let the consumer park between commits */
    }
    free(out);
    if (rc == TQ_OK)
        printf("put: %u rows in batches of %u in %llu ms\n", o->rows, o->batch,
               (unsigned long long)(tq_test_now_ms() - t0));
    if (rc == TQ_OK && o->keys > 0 && (rc = put_keys(c, o, kv_part)) == TQ_OK)
        printf("put: %u keys with tags into %s\n", o->keys, kv_part);
    if (rc == TQ_OK && (rc = tq_partition_seal(c, o->partition)) != TQ_OK)
        fail(c, "tq_partition_seal", rc);
    if (rc == TQ_OK)
        printf("put: sealed %s\n", o->partition);
    return rc == TQ_OK ? MH_EXIT_OK : MH_EXIT_FAIL;
}

/* ---- get ---- */

static void check_cell(const char *what, uint64_t row, const void *got, size_t got_len,
                       const void *want, size_t want_len)
{
    if (got == NULL) {
        mismatch("%s of row %llu: absent", what, (unsigned long long)row);
        return;
    }
    if (got_len != want_len) {
        mismatch("%s of row %llu: %zu bytes, want %zu", what, (unsigned long long)row, got_len,
                 want_len);
        return;
    }
    const uint8_t *g = got, *w = want;
    for (size_t i = 0; i < want_len; i++)
        if (g[i] != w[i]) {
            mismatch("%s of row %llu: byte %zu is 0x%02x, want 0x%02x", what,
                     (unsigned long long)row, i, g[i], w[i]);
            return;
        }
}

/* Check every row of one streamed batch against the pattern. */
static void check_rows(const tq_batch *b, const tq_meta *m, const mh_opts_t *o, uint8_t *seen,
                       float *t_want, int64_t *n_want, uint8_t *b_want, uint32_t *count)
{
    uint32_t rows = tq_batch_rows(b);
    if (rows != tq_meta_rows(m) || rows == 0 || rows > o->batch)
        mismatch("a batch of %u rows with a meta of %u, batch size %u", rows, tq_meta_rows(m),
                 o->batch);
    tq_field_info_t ti, ni, bi;
    if (tq_batch_field(b, "t", &ti) != TQ_OK || tq_batch_field(b, "n", &ni) != TQ_OK ||
        tq_batch_field(b, "b", &bi) != TQ_OK) {
        mismatch("a batch without one of the fields t, n, b (%u fields)", tq_batch_num_fields(b));
        return;
    }
    if (ti.kind != TQ_FIELD_TENSOR || ti.dtype != TQ_DTYPE_F32 || ti.ndim != 1 ||
        ti.row_shape[0] != (int64_t)o->elems)
        mismatch("field t: kind %d dtype %d ndim %u shape[0] %lld, want a F32 tensor of [%u]",
                 ti.kind, ti.dtype, ti.ndim, (long long)ti.row_shape[0], o->elems);
    if (ni.dtype != TQ_DTYPE_I64 || ni.ndim != MH_NESTED_NDIM)
        mismatch("field n: dtype %d ndim %u, want I64 of %d dimensions", ni.dtype, ni.ndim,
                 MH_NESTED_NDIM);
    if (bi.kind != TQ_FIELD_BYTES)
        mismatch("field b: kind %d, want bytes", bi.kind);
    const int64_t *idx = tq_meta_indexes(m);
    for (uint32_t r = 0; r < rows && r < tq_meta_rows(m); r++) {
        int64_t row = idx[r];
        if (row < 0 || row >= (int64_t)o->rows) {
            mismatch("index %lld is outside 0..%u", (long long)row, o->rows - 1);
            continue;
        }
        if (seen[row]++)
            mismatch("row %lld streamed %u times", (long long)row, seen[row]);
        (*count)++;
        size_t len = 0;
        const int64_t *shape = NULL;
        const void *p = tq_batch_row(b, "t", r, &len, NULL);
        t_row((uint64_t)row, o->elems, t_want);
        check_cell("t", (uint64_t)row, p, len, t_want, (size_t)o->elems * sizeof(float));

        p = tq_batch_row(b, "n", r, &len, &shape);
        int64_t want_shape[MH_NESTED_NDIM];
        n_shape((uint64_t)row, want_shape);
        if (ni.kind == TQ_FIELD_TENSOR)
            shape = ni.row_shape;
        if (p != NULL && (shape == NULL || shape[0] != want_shape[0] || shape[1] != want_shape[1]))
            mismatch("n of row %lld: shape [%lld, %lld], want [%lld, %lld]", (long long)row,
                     shape ? (long long)shape[0] : -1LL, shape ? (long long)shape[1] : -1LL,
                     (long long)want_shape[0], (long long)want_shape[1]);
        n_row((uint64_t)row, n_want);
        check_cell("n", (uint64_t)row, p, len, n_want, n_elems((uint64_t)row) * sizeof(int64_t));

        p = tq_batch_row(b, "b", r, &len, NULL);
        bytes_fill((uint64_t)row, 0, b_want);
        check_cell("b", (uint64_t)row, p, len, b_want, bytes_len((uint64_t)row, 0));
    }
}

static int get_stream(tq_client *c, const mh_opts_t *o)
{
    static const char *const fields[] = {"t", "n", "b"};
    tq_fetch_args_t a = {.partition = o->partition, .task = "mh-get", .fields = fields,
                         .num_fields = 3, .batch_size = o->batch, .timeout_ms = o->timeout_ms,
                         .prefetch = 2};
    uint8_t *seen = calloc(o->rows ? o->rows : 1, 1);
    float *t_want = malloc((size_t)o->elems * sizeof(float) + 1);
    int64_t *n_want = malloc(12 * sizeof(int64_t));
    uint8_t *b_want = malloc(512);
    tq_stream *s = NULL;
    int rc = seen && t_want && n_want && b_want ? TQ_OK : TQ_ERR_NOMEM;
    if (rc == TQ_OK && (rc = tq_stream_open(c, &a, &s)) != TQ_OK)
        fail(c, "tq_stream_open", rc);
    uint32_t count = 0, batches = 0;
    /* a bounded loop: every row once, one smaller last batch, and the end */
    uint32_t max_batches = o->rows / o->batch + 2;
    uint64_t t0 = tq_test_now_ms();
    while (rc == TQ_OK) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        if (rc != TQ_OK) {
            fail(c, "tq_stream_next", rc);
            fprintf(stderr, "mh_client: after %u batches, %u of %u rows\n", batches, count,
                    o->rows);
            break;
        }
        check_rows(b, m, o, seen, t_want, n_want, b_want, &count);
        tq_batch_destroy(b);
        tq_meta_free(m);
        if (++batches > max_batches) {
            mismatch("more than %u batches of %u for %u rows", max_batches, o->batch, o->rows);
            rc = TQ_ERR_INVALID;
        }
    }
    tq_stream_close(s);
    if (rc == TQ_ERR_END) {
        rc = TQ_OK;
        if (count != o->rows)
            mismatch("the stream ended after %u rows, want %u", count, o->rows);
        for (uint32_t i = 0; i < o->rows; i++)
            if (!seen[i]) {
                mismatch("row %u never streamed", i);
                break;
            }
        printf("get: streamed %u rows in %u batches in %llu ms, then the end\n", count, batches,
               (unsigned long long)(tq_test_now_ms() - t0));
    }
    free(seen), free(t_want), free(n_want), free(b_want);
    return rc;
}

static bool same_json(const char *got, const char *want)
{
    cJSON *g = got ? cJSON_Parse(got) : NULL, *w = cJSON_Parse(want);
    bool same = g != NULL && w != NULL && cJSON_Compare(g, w, 1);
    cJSON_Delete(g);
    cJSON_Delete(w);
    return same;
}

static int get_keys(tq_client *c, const mh_opts_t *o, const char *kv_part)
{
    uint32_t k = o->keys;
    char (*keys)[32] = calloc(k, sizeof(*keys));
    const char **key_p = calloc(k, sizeof(char *));
    uint8_t *want = malloc(512);
    if (keys == NULL || key_p == NULL || want == NULL) {
        free(keys), free(key_p), free(want);
        fail(c, "get", TQ_ERR_NOMEM);
        return TQ_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < k; i++) { /* ask in reverse: rows come in the order asked */
        kv_key(k - 1 - i, keys[i], sizeof(keys[i]));
        key_p[i] = keys[i];
    }
    tq_batch *b = NULL;
    int rc = tq_kv_batch_get(c, kv_part, k, key_p, 0, NULL, &b);
    if (rc != TQ_OK)
        fail(c, "tq_kv_batch_get", rc);
    tq_field_info_t vi, ii;
    if (rc == TQ_OK && (tq_batch_rows(b) != k || tq_batch_field(b, "v", &vi) != TQ_OK ||
                        tq_batch_field(b, "id", &ii) != TQ_OK || tq_batch_num_fields(b) != 2)) {
        mismatch("kv_batch_get of %u keys: %u rows, %u fields, want fields v and id", k,
                 tq_batch_rows(b), tq_batch_num_fields(b));
        rc = TQ_ERR_INVALID;
    }
    for (uint32_t r = 0; rc == TQ_OK && r < k; r++) {
        uint32_t key = k - 1 - r;
        size_t len = 0;
        const void *p = tq_batch_row(b, "v", r, &len, NULL);
        bytes_fill(key, KV_SALT, want);
        check_cell("kv v", key, p, len, want, bytes_len(key, KV_SALT));
        int64_t id = kv_id(key);
        p = tq_batch_row(b, "id", r, &len, NULL);
        check_cell("kv id", key, p, len, &id, sizeof(id));
    }
    tq_batch_destroy(b);
    if (rc == TQ_OK)
        printf("get: %u keys read back in reverse order\n", k);

    tq_kv_entries *e = NULL;
    if (rc == TQ_OK && (rc = tq_kv_list(c, kv_part, &e)) != TQ_OK)
        fail(c, "tq_kv_list", rc);
    if (rc == TQ_OK) {
        if (tq_kv_entries_size(e) != k)
            mismatch("kv_list of %s: %zu keys, want %u", kv_part, tq_kv_entries_size(e), k);
        for (uint32_t i = 0; i < k && i < tq_kv_entries_size(e); i++) {
            char key[32], tag[96];
            kv_key(i, key, sizeof(key));
            kv_tag(i, tag, sizeof(tag));
            const char *gk = tq_kv_entries_key(e, i), *gt = tq_kv_entries_tag(e, i);
            if (gk == NULL || strcmp(gk, key) != 0)
                mismatch("kv_list entry %u: key %s, want %s", i, gk ? gk : "(null)", key);
            else if (!same_json(gt, tag))
                mismatch("kv_list entry %u (%s): tag %s, want %s", i, key, gt ? gt : "(null)", tag);
        }
        printf("get: %zu keys listed with their tags\n", tq_kv_entries_size(e));
        tq_kv_entries_free(e);
    }
    free(keys), free(key_p), free(want);
    return rc;
}

static int role_get(tq_client *c, const mh_opts_t *o, const char *kv_part)
{
    int rc = get_stream(c, o);
    if (rc == TQ_OK && o->keys > 0)
        rc = get_keys(c, o, kv_part);
    return rc == TQ_OK && mismatches == 0 ? MH_EXIT_OK : MH_EXIT_FAIL;
}

/* ---- main ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mh_client probe|put|get --controller HOST:PORT [--partition P] [--rows N]\n"
            "                 [--batch N] [--elems N] [--keys N] [--delay-ms MS]\n"
            "                 [--timeout-ms MS] [--expect-local IP]\n"
            "                 [--unreachable HOST:PORT]...\n");
}

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

int main(int argc, char **argv)
{
    mh_opts_t o = {.partition = "mh", .rows = 256, .batch = 16, .elems = 4096, .keys = 32,
                   .delay_ms = 10, .timeout_ms = 30000};
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"partition", required_argument, NULL, 'p'},
        {"rows", required_argument, NULL, 'r'},       {"batch", required_argument, NULL, 'b'},
        {"elems", required_argument, NULL, 'e'},      {"keys", required_argument, NULL, 'k'},
        {"delay-ms", required_argument, NULL, 'd'},   {"timeout-ms", required_argument, NULL, 't'},
        {"expect-local", required_argument, NULL, 'l'},
        {"unreachable", required_argument, NULL, 'u'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || argv[1][0] == '-') {
        usage(stderr);
        return MH_EXIT_USAGE;
    }
    o.role = argv[1];
    optind = 2;
    int opt;
    uint32_t v = 0;
    bool ok = true;
    while (ok && (opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': o.controller = optarg; break;
        case 'p': o.partition = optarg; break;
        case 'r': ok = parse_u32(optarg, 1, 1u << 20, &o.rows); break;
        case 'b': ok = parse_u32(optarg, 1, 4096, &o.batch); break;
        case 'e': ok = parse_u32(optarg, 1, 1u << 22, &o.elems); break;
        case 'k': ok = parse_u32(optarg, 0, 1u << 16, &o.keys); break;
        case 'd': ok = parse_u32(optarg, 0, 10000, &v), o.delay_ms = (int)v; break;
        case 't': ok = parse_u32(optarg, 1, 600000, &v), o.timeout_ms = (int)v; break;
        case 'l': o.expect_local = optarg; break;
        case 'u':
            ok = o.num_unreachable < MH_MAX_UNREACHABLE;
            if (ok)
                o.unreachable[o.num_unreachable++] = optarg;
            break;
        case 'h': usage(stdout); return MH_EXIT_OK;
        default: ok = false; break;
        }
    }
    if (!ok || optind < argc || o.controller == NULL) {
        fprintf(stderr, "mh_client: bad arguments%s\n", o.controller ? "" : " (no --controller)");
        usage(stderr);
        return MH_EXIT_USAGE;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(o.role, "probe") == 0)
        return role_probe(&o);
    if (strcmp(o.role, "put") != 0 && strcmp(o.role, "get") != 0) {
        fprintf(stderr, "mh_client: unknown role %s\n", o.role);
        usage(stderr);
        return MH_EXIT_USAGE;
    }
    char kv_part[256];
    snprintf(kv_part, sizeof(kv_part), "%s.kv", o.partition);
    tq_client *c = NULL;
    int rc = tq_open(o.controller, &c);
    if (rc != TQ_OK) {
        fprintf(stderr, "mh_client: tq_open(%s): %s (%s)\n", o.controller, tq_status_string(rc),
                tq_last_error(NULL));
        return MH_EXIT_FAIL;
    }
    int status = strcmp(o.role, "put") == 0 ? role_put(c, &o, kv_part) : role_get(c, &o, kv_part);
    tq_close(c);
    if (mismatches > MH_MAX_REPORTS)
        fprintf(stderr, "mh_client: %u mismatches, %d shown\n", mismatches, MH_MAX_REPORTS);
    if (mismatches > 0)
        status = MH_EXIT_FAIL;
    printf("%s: %s\n", o.role, status == MH_EXIT_OK ? "ok" : "FAILED");
    return status;
}
