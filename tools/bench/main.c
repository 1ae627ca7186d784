/* main.c: tq-rdma-bench: options, the run's jobs, and what is compared and drawn. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "util/common.h"

#define MAX_SIZES 32
#define MAX_RESULTS 512

typedef struct {
    const char     *controller; /* NULL: $TQ_CONTROLLER, else embedded */
    bool            modes[MODE_COUNT];
    uint64_t        sizes[MAX_SIZES];
    unsigned        num_sizes;
    bench_job_t     base;       /* rows, fields, iters... as given; 0: the mode's default */
    bool            profile_given, threads, json, compare_ucx;
    const char     *plot;
    /* hidden roles: a worker client, or the wakeup mode's producer */
    const char     *worker_fds, *producer_fds, *producer_partition;
} options_t;

/* TransferQueue's put_benchmark shapes: rows x sequence x fields of float32. */
static const struct {
    const char *name;
    uint32_t    rows, seq, fields;
} SIZES[] = {
    {"debug", 32, 128, 2}, {"tiny", 64, 1024, 4}, {"small", 512, 12800, 4},
    {"medium", 1024, 65536, 4},
};

/* TransferQueue's published throughput of its 1024 x 9 x 8192 float32 data
 * (288 MiB): SimpleStorage and Mooncake backends, Gbps, simple and complex. */
static const double TQ_PUBLISHED_GBPS[2][2] = {{2.56, 7.24}, {1.83, 4.59}};

static void usage(FILE *out)
{
    fprintf(out,
        "usage: tq-rdma-bench [--mode LIST] [--field-bytes LIST] [--rows N] [--fields N]\n"
        "                     [--iters N] [--warmup N] [--inflight N] [--clients N [--threads]]\n"
        "                     [--profile simple|complex] [--size debug|tiny|small|medium]\n"
        "                     [--dtype u8|f32] [--transport ucx|ofi|auto]\n"
        "                     [--controller HOST:PORT] [--json] [--plot FILE.svg] [--compare-ucx]\n"
        "Modes (a comma-separated list; default put,get):\n"
        "  put       tq_put of N rows (ALLOC, one-sided writes, COMMIT), cleared untimed\n"
        "  get       tq_get_meta + tq_get_data of N rows put once, consumption reset untimed\n"
        "  kv        tq_kv_batch_put of N keys, then tq_kv_batch_get of them\n"
        "  kv-nb     --inflight (default 8) tq_kv_batch_get_nb at once against as many\n"
        "            tq_kv_batch_get one after another\n"
        "  latency   one small sample (default 1 row of 4K): put+commit, get_meta+get\n"
        "  meta      control plane only: put of N (default 256) rows of 0 bytes, get_meta\n"
        "  pipeline  a producer thread puts --iters batches; this client consumes them\n"
        "            through a stream reading --inflight batches ahead\n"
        "  wakeup    from a commit in another process to the wake-up of a parked get_meta\n"
        "--field-bytes takes a list (64K,1M,16M): every payload mode runs at each size.\n"
        "Defaults: 64 rows of 1M, 20 iterations; latency, meta and wakeup 1000 iterations.\n"
        "--profile: simple is --dtype tensors; complex is a third float32 tensors, a third\n"
        "nested float32 rows and a third bytes rows, of half to all of --field-bytes.\n"
        "--size sets rows, fields and field bytes to TransferQueue's put_benchmark shapes.\n"
        "--clients N runs N worker processes (threads of one client with --threads), each\n"
        "with its own rows, started together; GB/s is their total.\n"
        "--compare-ucx runs ucx_perftest (ucx-utils) at each size beside put and get.\n"
        "Without --controller (and $TQ_CONTROLLER) it runs on the embedded default.\n");
}

static int parse_uint(const char *opt, const char *text, unsigned *v_p)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v > 100000000ul || text[0] == '-') {
        fprintf(stderr, "tq-rdma-bench: bad %s '%s'\n", opt, text);
        return -1;
    }
    *v_p = (unsigned)v;
    return 0;
}

static int parse_modes(const char *text, bool *modes)
{
    char *copy = strdup(text), *save = NULL;
    if (copy == NULL)
        return -1;
    int rc = 0;
    memset(modes, 0, MODE_COUNT * sizeof(bool));
    for (char *m = strtok_r(copy, ",", &save); m != NULL; m = strtok_r(NULL, ",", &save)) {
        bench_mode_t k = 0;
        while (k < MODE_COUNT && strcmp(m, bench_mode_name(k)) != 0)
            k++;
        if (k == MODE_COUNT) {
            fprintf(stderr, "tq-rdma-bench: bad --mode '%s' (put, get, kv, kv-nb, latency, "
                    "meta, pipeline, wakeup)\n", m);
            rc = -1;
            break;
        }
        modes[k] = true;
    }
    free(copy);
    return rc;
}

static int parse_sizes(const char *text, options_t *o)
{
    char *copy = strdup(text), *save = NULL;
    if (copy == NULL)
        return -1;
    o->num_sizes = 0;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t != NULL && rc == 0;
         t = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (o->num_sizes == MAX_SIZES || tq__parse_size(t, &v) != 0 || v == 0) {
            fprintf(stderr, "tq-rdma-bench: bad --field-bytes '%s' (at most %d sizes > 0)\n",
                    t, MAX_SIZES);
            rc = -1;
        } else {
            o->sizes[o->num_sizes++] = v;
        }
    }
    free(copy);
    return rc == 0 && o->num_sizes > 0 ? 0 : -1;
}

/* Options whose 0 would mean "the mode's default": a given value must be positive. */
static int parse_positive(const char *opt, const char *text, unsigned *v_p)
{
    if (parse_uint(opt, text, v_p) != 0)
        return -1;
    if (*v_p == 0) {
        fprintf(stderr, "tq-rdma-bench: %s must be positive\n", opt);
        return -1;
    }
    return 0;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    enum { O_FIELDS = 256, O_CLIENTS, O_THREADS, O_PROFILE, O_SIZE, O_PLOT, O_COMPARE,
           O_WORKER, O_PRODUCER, O_CLIENT_ID, O_PARTITION };
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"rows", required_argument, NULL, 'r'},
        {"field-bytes", required_argument, NULL, 'b'}, {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'},      {"json", no_argument, NULL, 'j'},
        {"mode", required_argument, NULL, 'm'},        {"inflight", required_argument, NULL, 'n'},
        {"dtype", required_argument, NULL, 'd'},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},           {"transport", required_argument, NULL, 't'},
        {"fields", required_argument, NULL, O_FIELDS},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"threads", no_argument, NULL, O_THREADS},
        {"profile", required_argument, NULL, O_PROFILE},
        {"size", required_argument, NULL, O_SIZE},
        {"plot", required_argument, NULL, O_PLOT},
        {"compare-ucx", no_argument, NULL, O_COMPARE},
        {"worker", required_argument, NULL, O_WORKER},
        {"wakeup-producer", required_argument, NULL, O_PRODUCER},
        {"client-id", required_argument, NULL, O_CLIENT_ID},
        {"partition", required_argument, NULL, O_PARTITION},
        {NULL, 0, NULL, 0},
    };
    bench_job_t *b = &o->base;
    const char *size_preset = NULL;
    bool size_given = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:r:b:i:w:jm:n:d:t:hV", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'c': o->controller = optarg; break;
        case 't': setenv("TQ_TRANSPORT", optarg, 1); break; /* read by tq_open */
        case 'r': bad = parse_positive("--rows", optarg, &b->rows); break;
        case O_FIELDS: bad = parse_positive("--fields", optarg, &b->fields); break;
        case 'i': bad = parse_positive("--iters", optarg, &b->iters); break;
        case 'w': bad = parse_uint("--warmup", optarg, &b->warmup); break;
        case 'n': bad = parse_positive("--inflight", optarg, &b->inflight); break;
        case O_CLIENTS: bad = parse_positive("--clients", optarg, &b->clients); break;
        case O_CLIENT_ID: bad = parse_uint("--client-id", optarg, &b->client_id); break;
        case 'b': bad = parse_sizes(optarg, o), size_given = true; break;
        case 'm': bad = parse_modes(optarg, o->modes); break;
        case 'j': o->json = true; break;
        case O_THREADS: o->threads = true; break;
        case O_PLOT: o->plot = optarg; break;
        case O_COMPARE: o->compare_ucx = true; break;
        case O_WORKER: o->worker_fds = optarg; break;
        case O_PRODUCER: o->producer_fds = optarg; break;
        case O_PARTITION: o->producer_partition = optarg; break;
        case O_SIZE: size_preset = optarg; break;
        case O_PROFILE:
            o->profile_given = true;
            if (strcmp(optarg, "simple") == 0)
                b->profile = PROFILE_SIMPLE;
            else if (strcmp(optarg, "complex") == 0)
                b->profile = PROFILE_COMPLEX;
            else
                bad = fprintf(stderr, "tq-rdma-bench: bad --profile '%s' (simple, complex)\n",
                              optarg);
            break;
        case 'd':
            if (strcmp(optarg, "u8") == 0)
                b->dtype = TQ_DTYPE_U8;
            else if (strcmp(optarg, "f32") == 0)
                b->dtype = TQ_DTYPE_F32;
            else
                bad = fprintf(stderr, "tq-rdma-bench: bad --dtype '%s' (u8, f32)\n", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("tq-rdma-bench %s\n", TQ_VERSION_STRING); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "tq-rdma-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (size_preset != NULL) { /* explicit --rows, --fields, --field-bytes win */
        size_t k = 0;
        while (k < ARRAY_SIZE(SIZES) && strcmp(SIZES[k].name, size_preset) != 0)
            k++;
        if (k == ARRAY_SIZE(SIZES)) {
            fprintf(stderr, "tq-rdma-bench: bad --size '%s' (debug, tiny, small, medium)\n",
                    size_preset);
            return -1;
        }
        if (b->rows == 0)
            b->rows = SIZES[k].rows;
        if (b->fields == 0)
            b->fields = SIZES[k].fields;
        if (!size_given) {
            o->sizes[0] = (uint64_t)SIZES[k].seq * 4;
            o->num_sizes = 1;
        }
    }
    bool any = false;
    for (int m = 0; m < MODE_COUNT; m++)
        any |= o->modes[m];
    if (!any)
        o->modes[MODE_PUT] = o->modes[MODE_GET] = true;
    return 0;
}

static bool has_payload(bench_mode_t m) { return m != MODE_META && m != MODE_WAKEUP; }

/* The job of mode m at field size `size`: what was given, else the mode's defaults. */
static bench_job_t make_job(const options_t *o, bench_mode_t m, uint64_t size)
{
    bench_job_t j = o->base;
    bool small_calls = m == MODE_LATENCY || m == MODE_META || m == MODE_WAKEUP;
    j.mode = m;
    if (j.rows == 0)
        j.rows = m == MODE_META ? 256 : small_calls ? 1 : 64;
    if (m == MODE_WAKEUP)
        j.rows = 1;
    if (j.fields == 0 || !has_payload(m) || m == MODE_LATENCY || m == MODE_PIPELINE)
        j.fields = 1; /* the small-call and pipeline modes move one field "x" */
    j.field_bytes = !has_payload(m) ? 0 : size ? size : m == MODE_LATENCY ? 4096 : 1 << 20;
    if (j.iters == 0)
        j.iters = small_calls ? 1000 : 20;
    if (j.warmup == (unsigned)-1)
        j.warmup = small_calls ? 50 : 2;
    if (j.inflight == 0)
        j.inflight = m == MODE_PIPELINE ? 2 : 8;
    if (j.clients == 0)
        j.clients = 1;
    return j;
}

static int check_job(const bench_job_t *j)
{
    size_t unit = j->profile == PROFILE_COMPLEX || j->mode == MODE_LATENCY ||
                          j->mode == MODE_PIPELINE ? 4 : tq_dtype_size(j->dtype);
    if (j->field_bytes % unit != 0) {
        fprintf(stderr, "tq-rdma-bench: %s: --field-bytes must be a multiple of %zu\n",
                bench_mode_name(j->mode), unit);
        return -1;
    }
    return 0;
}

/*
 * The embedded pool defaults to 256 MiB, too small for big batches, kv-nb's key
 * sets or an overwrite (the new extent is written before the old one is freed).
 * Size it to twice the largest job's data unless the user chose; a remote
 * controller ignores it.
 */
static void size_embedded_pool(const options_t *o)
{
    uint64_t want = 0;
    for (int m = 0; m < MODE_COUNT; m++)
        for (unsigned s = 0; o->modes[m] && s < TQ_MAX(o->num_sizes, 1u); s++) {
            bench_job_t j = make_job(o, (bench_mode_t)m, o->sizes[s]);
            uint64_t sets = m == MODE_KV_NB ? j.inflight : m == MODE_PIPELINE ? 4 : 1;
            want = TQ_MAX(want, 2 * sets * j.clients * j.rows * bench_row_bytes(&j));
        }
    want += 64ULL << 20;
    if (want <= (256ULL << 20))
        return;
    char size[32];
    snprintf(size, sizeof(size), "%lluM", (unsigned long long)(want >> 20) + 1);
    setenv("TQ_POOL_SIZE", size, 0);
}

/* The goal a result is held to, if any. */
static void apply_target(bench_mode_t m, bench_result_t *r)
{
    if (m == MODE_LATENCY) {
        r->target = "p50 <= 50 us";
        r->target_met = r->p50_us <= 50;
    } else if (m == MODE_META && strcmp(r->op, "get_meta+commit") == 0) {
        r->target = ">= 200000 rows/s";
        r->target_met = r->rows_per_s >= 200000;
    } else if (m == MODE_WAKEUP && strcmp(r->op, "put_to_wake") == 0) {
        r->target = "p50 <= 200 us";
        r->target_met = r->p50_us <= 200;
    } else if (r->ucx_bytes_per_s > 0) {
        bool large = r->field_bytes >= (1u << 20);
        r->target = large ? ">= 0.9x ucx_perftest" : ">= 0.7x ucx_perftest";
        r->target_met = r->bytes_per_s >= (large ? 0.9 : 0.7) * r->ucx_bytes_per_s;
    }
}

/* ucx_perftest's figure for op at size, run once per pair. */
static double ucx_figure(const char *op, uint64_t size)
{
    static struct { char op[24]; uint64_t size; double bps; } seen[2 * MAX_SIZES];
    static unsigned num_seen;
    for (unsigned i = 0; i < num_seen; i++)
        if (seen[i].size == size && strcmp(seen[i].op, op) == 0)
            return seen[i].bps;
    double bps = 0;
    char err[256];
    if (bench_ucx_perftest(op, size, &bps, err, sizeof(err)) != 0) {
        fprintf(stderr, "tq-rdma-bench: --compare-ucx: %s\n", err);
        bps = -1; /* not tried again */
    }
    if (num_seen < ARRAY_SIZE(seen)) {
        snprintf(seen[num_seen].op, sizeof(seen[0].op), "%s", op);
        seen[num_seen].size = size;
        seen[num_seen++].bps = bps;
    }
    return bps;
}

/* put and get of one size with --profile: their total beside TransferQueue's. */
static void add_total(const options_t *o, const bench_result_t *put, const bench_result_t *get,
                      bench_result_t *r)
{
    *r = *put;
    snprintf(r->op, sizeof(r->op), "put+get");
    r->seconds = put->seconds + get->seconds;
    double bytes = put->bytes_per_s * put->seconds + get->bytes_per_s * get->seconds;
    r->bytes_per_s = r->seconds > 0 ? bytes / r->seconds : 0;
    r->rows_per_s = r->seconds > 0 ? (put->rows_per_s * put->seconds +
                                      get->rows_per_s * get->seconds) / r->seconds : 0;
    r->min_us = r->p50_us = r->p99_us = r->mean_us = 0;
    r->ucx_bytes_per_s = 0;
    r->target = NULL;
    const double *tq = TQ_PUBLISHED_GBPS[o->base.profile];
    snprintf(r->extra, sizeof(r->extra),
             ",\"transferqueue_simplestorage_gbps\":%.2f,\"transferqueue_mooncake_gbps\":%.2f",
             tq[0], tq[1]);
    if (!o->json)
        printf("%-16s total %.2f Gbps; TransferQueue publishes %.2f (SimpleStorage) and %.2f "
               "(Mooncake) for 1024 x 9 x 8192 float32, %s\n", "put+get",
               r->bytes_per_s * 8 / 1e9, tq[0], tq[1],
               o->base.profile == PROFILE_COMPLEX ? "complex" : "simple");
}

static int run_all(tq_client *c, const options_t *o)
{
    static bench_result_t results[MAX_RESULTS];
    unsigned num_results = 0;
    int err = 0;
    bench_print_header(o->json);
    for (int m = 0; m < MODE_COUNT && err == 0; m++) {
        if (!o->modes[m])
            continue;
        unsigned sizes = has_payload((bench_mode_t)m) ? o->num_sizes : 1;
        for (unsigned s = 0; s < TQ_MAX(sizes, 1u) && err == 0; s++) {
            bench_job_t job = make_job(o, (bench_mode_t)m, o->sizes[s]);
            job.address = tq_controller_address(c);
            job.progress = !o->json && isatty(STDOUT_FILENO);
            if (num_results + BENCH_MAX_SAMPLES + 1 > MAX_RESULTS) {
                fprintf(stderr, "tq-rdma-bench: too many results\n");
                return 1;
            }
            bench_result_t *r = &results[num_results];
            unsigned n = 0;
            if ((err = bench_run_job(c, &job, o->threads, r, &n)) != 0)
                break;
            for (unsigned i = 0; i < n; i++) {
                bool compared = m == MODE_PUT || m == MODE_GET;
                if (o->compare_ucx && compared) {
                    double bps = ucx_figure(r[i].op, job.field_bytes);
                    r[i].ucx_bytes_per_s = bps > 0 ? bps : 0;
                }
                apply_target((bench_mode_t)m, &r[i]);
                bench_print(&r[i], o->json);
            }
            num_results += n;
            /* with a profile, get follows put at each size: their total */
            if (m == MODE_GET && o->profile_given && o->modes[MODE_PUT]) {
                for (unsigned i = 0; i < num_results; i++)
                    if (strcmp(results[i].op, "put") == 0 &&
                        results[i].field_bytes == job.field_bytes) {
                        add_total(o, &results[i], r, &results[num_results]);
                        if (o->json)
                            bench_print(&results[num_results], true);
                        num_results++;
                        break;
                    }
            }
        }
    }
    if (err == 0 && o->plot != NULL && bench_plot_svg(o->plot, results, num_results) != 0) {
        fprintf(stderr, "tq-rdma-bench: cannot write %s: %s\n", o->plot, strerror(errno));
        err = 1;
    }
    return err;
}

/* A hidden role's "R,W" pipe descriptors. */
static int parse_fds(const char *text, int fds[2])
{
    if (text == NULL || sscanf(text, "%d,%d", &fds[0], &fds[1]) != 2 || fds[0] < 0 ||
        fds[1] < 0) {
        fprintf(stderr, "tq-rdma-bench: bad descriptors '%s'\n", text ? text : "");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options_t o = {.base = {.dtype = TQ_DTYPE_F32, .warmup = (unsigned)-1}};
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    int fds[2];
    bool helper = o.worker_fds != NULL || o.producer_fds != NULL;
    if (helper && (o.controller == NULL ||
                   parse_fds(o.worker_fds ? o.worker_fds : o.producer_fds, fds) != 0)) {
        fprintf(stderr, "tq-rdma-bench: --worker and --wakeup-producer are started by the "
                        "bench itself\n");
        return 2;
    }
    for (int m = 0; m < MODE_COUNT; m++)
        for (unsigned s = 0; o.modes[m] && s < TQ_MAX(o.num_sizes, 1u); s++) {
            bench_job_t j = make_job(&o, (bench_mode_t)m, o.sizes[s]);
            if (check_job(&j) != 0)
                return 2;
        }
    if (o.producer_fds != NULL && o.producer_partition == NULL) {
        fprintf(stderr, "tq-rdma-bench: --wakeup-producer needs --partition\n");
        return 2;
    }
    if (!helper)
        size_embedded_pool(&o);

    tq_client *c;
    int rc = tq_open(o.controller, &c);
    if (rc != TQ_OK)
        return bench_fail(NULL, "cannot open", rc);
    int err;
    if (o.producer_fds != NULL) {
        err = bench_wakeup_producer(c, o.producer_partition, fds[0], fds[1]);
    } else if (o.worker_fds != NULL) {
        bench_mode_t m = 0;
        while (m < MODE_COUNT && !o.modes[m])
            m++;
        bench_job_t job = make_job(&o, m, o.sizes[0]);
        job.address = tq_controller_address(c);
        err = bench_worker(c, &job, fds[0], fds[1]);
    } else {
        err = run_all(c, &o);
    }
    tq_close(c);
    return err;
}
