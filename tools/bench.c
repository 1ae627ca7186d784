/* bench.c: tq-rdma-bench, put and get throughput of one tensor field. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq/tq.h"
#include "util/common.h"

typedef struct {
    const char *controller; /* NULL: $TQ_CONTROLLER, else embedded */
    uint32_t    rows;
    uint64_t    field_bytes;
    unsigned    iters, warmup;
    bool        json;
} bench_opts_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tq-rdma-bench [--controller HOST:PORT] [--rows N] [--field-bytes SIZE]\n"
            "                     [--iters N] [--warmup N] [--json]\n"
            "Puts N rows of one tensor field (SIZE bytes per row) then reads them back,\n"
            "--iters times, and prints put and get throughput. Without --controller (and\n"
            "$TQ_CONTROLLER) it runs on the embedded default.\n");
}

static int fail(tq_client *c, const char *what, int rc)
{
    fprintf(stderr, "tq-rdma-bench: %s: %s (%s)\n", what, tq_status_string(rc), tq_last_error(c));
    return 1;
}

static void report(const bench_opts_t *o, const char *op, double seconds, uint64_t bytes)
{
    double rate = seconds > 0 ? (double)bytes / seconds : 0;
    if (o->json)
        printf("{\"op\":\"%s\",\"field_bytes\":%llu,\"rows\":%u,\"fields\":1,\"clients\":1,"
               "\"iters\":%u,\"seconds\":%.6f,\"bytes_per_s\":%.0f}\n",
               op, (unsigned long long)o->field_bytes, o->rows, o->iters, seconds, rate);
    else
        printf("%-4s %10llu B x %5u rows x %4u iters: %8.3f s  %8.2f GB/s\n", op,
               (unsigned long long)o->field_bytes, o->rows, o->iters, seconds, rate / 1e9);
}

static int run(const bench_opts_t *o)
{
    tq_client *c;
    int rc = tq_open(o->controller, &c);
    if (rc != TQ_OK)
        return fail(NULL, "cannot open", rc);
    uint64_t elems = o->field_bytes / 4;
    size_t total = (size_t)o->rows * elems * 4;
    float *data = malloc(total ? total : 1);
    int64_t *indexes = malloc(o->rows * sizeof(int64_t));
    tq_batch *b = NULL;
    if (data == NULL || indexes == NULL) {
        fprintf(stderr, "tq-rdma-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < total / 4; i++)
        data[i] = (float)i;
    int64_t shape[1] = {(int64_t)elems};
    if ((rc = tq_batch_create(o->rows, &b)) != TQ_OK ||
        (rc = tq_batch_add_tensor(b, "x", TQ_DTYPE_F32, 1, shape, data)) != TQ_OK)
        return fail(c, "cannot build the batch", rc);

    const char *fields[] = {"x"};
    tq_fetch_args_t args = {.partition = "bench", .task = "bench", .fields = fields,
                            .num_fields = 1, .batch_size = o->rows, .timeout_ms = 0};
    uint64_t put_ns = 0, get_ns = 0;
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
        tq_field_info_t info;
        if (it == 0 && (tq_batch_field(got, "x", &info) != TQ_OK || info.bytes != total ||
                        memcmp(info.data, data, total) != 0)) {
            fprintf(stderr, "tq-rdma-bench: data read back differs from data written\n");
            return 1;
        }
        tq_batch_destroy(got);
        tq_meta_free(m);
        if ((rc = tq_clear(c, "bench", o->rows, indexes)) < 0)
            return fail(c, "clear", rc);
        if (timed) {
            put_ns += t1 - t0;
            get_ns += t2 - t1;
        }
    }
    report(o, "put", (double)put_ns / 1e9, (uint64_t)total * o->iters);
    report(o, "get", (double)get_ns / 1e9, (uint64_t)total * o->iters);
    tq_batch_destroy(b);
    free(data);
    free(indexes);
    tq_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o = {.rows = 64, .field_bytes = 1 << 20, .iters = 20, .warmup = 2};
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"rows", required_argument, NULL, 'r'},
        {"field-bytes", required_argument, NULL, 'b'}, {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},      {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},              {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:r:b:i:w:jhV", opts, NULL)) != -1) {
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
        case 'h': usage(stdout); return 0;
        case 'V': printf("tq-rdma-bench %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (o.rows == 0 || o.iters == 0 || o.field_bytes < 4) {
        fprintf(stderr, "tq-rdma-bench: --rows, --iters and --field-bytes (>= 4) must be positive\n");
        return 2;
    }
    return run(&o);
}
