/* bench.c: tq-rdma-bench, throughput of put/get and of the key-value interface. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/tq.h"
#include "util/common.h"

typedef enum { MODE_PUTGET, MODE_KV, MODE_KV_NB } bench_mode_t;

typedef struct {
    const char  *controller; /* NULL: $TQ_CONTROLLER, else embedded */
    bench_mode_t mode;
    tq_dtype_t   dtype;
    uint32_t     rows;
    uint64_t     field_bytes;
    unsigned     iters, warmup, inflight;
    bool         json;
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
            "usage: tq-rdma-bench [--mode putget|kv|kv-nb] [--controller HOST:PORT] [--rows N]\n"
            "                     [--field-bytes SIZE] [--dtype u8|f32] [--iters N] [--warmup N]\n"
            "                     [--inflight N] [--json]\n"
            "Modes (each moves N rows or keys of one tensor field of SIZE bytes, --iters times):\n"
            "  putget  tq_put of N rows, then tq_get_meta + tq_get_data, then tq_clear (default)\n"
            "  kv      tq_kv_batch_put of N keys, then tq_kv_batch_get of the same keys\n"
            "  kv-nb   --inflight (default 8) tq_kv_batch_get_nb of N keys each in flight at once,\n"
            "          against the same gets made one after another with tq_kv_batch_get\n"
            "Without --controller (and $TQ_CONTROLLER) it runs on the embedded default.\n");
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

/*
 * The embedded pool defaults to 256 MiB, too small for kv-nb's key sets or for
 * an overwrite (the new extent is written before the old one is freed). Size it
 * to twice the data set unless the user chose; a remote controller ignores it.
 */
static void size_embedded_pool(const bench_opts_t *o)
{
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
    else
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o = {.mode = MODE_PUTGET, .dtype = TQ_DTYPE_F32, .rows = 64,
                      .field_bytes = 1 << 20, .iters = 20, .warmup = 2, .inflight = 8};
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"rows", required_argument, NULL, 'r'},
        {"field-bytes", required_argument, NULL, 'b'}, {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},      {"json", no_argument, NULL, 'j'},
        {"mode", required_argument, NULL, 'm'},        {"inflight", required_argument, NULL, 'n'},
        {"dtype", required_argument, NULL, 'd'},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},           {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:r:b:i:w:jm:n:d:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': o.controller = optarg; break;
        case 'r': o.rows = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'b':
            if (tq__parse_size(optarg, &o.field_bytes) != 0) {
                fprintf(stderr, "tq-rdma-bench: bad --field-bytes '%s'\n", optarg);
                return 2;
            }
            break;
        case 'i': o.iters = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'w': o.warmup = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'j': o.json = true; break;
        case 'm':
            if (parse_mode(optarg, &o.mode) != 0) {
                fprintf(stderr, "tq-rdma-bench: bad --mode '%s' (putget, kv, kv-nb)\n", optarg);
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
    default: err = run_putget(c, &o); break;
    }
    tq_close(c);
    return err;
}
