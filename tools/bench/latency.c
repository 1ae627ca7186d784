/* latency.c: tq-rdma-bench's modes of small calls and hand-offs: latency, meta, pipeline, wakeup. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "util/common.h"

static const char *const FIELD_X[] = {"x"};

/* rows rows of one tensor field "x" of row_bytes bytes each (0: an ALLOC and a
 * COMMIT with no one-sided write between them); *data_p is NULL or owned by the caller. */
static int make_x_batch(tq_client *c, uint32_t rows, uint64_t row_bytes, tq_batch **b_p,
                        uint8_t **data_p)
{
    int64_t shape[1] = {(int64_t)(row_bytes / 4)};
    uint8_t *data = row_bytes ? malloc(rows * row_bytes) : NULL;
    if (row_bytes && data == NULL)
        return bench_out_of_memory();
    for (uint64_t i = 0; i < rows * row_bytes; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    int rc = tq_batch_create(rows, b_p);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(*b_p, "x", TQ_DTYPE_F32, 1, shape, data);
    if (rc != TQ_OK) {
        free(data);
        return bench_fail(c, "cannot build the batch", rc);
    }
    *data_p = data;
    return 0;
}

/* Field "x" of got must be rows x row_bytes bytes equal to data. */
static int check_x(const tq_batch *got, const uint8_t *data, uint64_t bytes, const char *what)
{
    tq_field_info_t info;
    if (tq_batch_field(got, "x", &info) == TQ_OK && info.bytes == bytes &&
        (bytes == 0 || memcmp(info.data, data, bytes) == 0))
        return 0;
    fprintf(stderr, "tq-rdma-bench: %s: data read back differs from data written\n", what);
    return 1;
}

/*
 * latency: one small sample at a time, as a rollout worker hands one over:
 * put (ALLOC, write, COMMIT), then get_meta + get_data of it, then an untimed clear.
 */
int bench_latency(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    tq_batch *b = NULL;
    uint8_t *data = NULL;
    int64_t *indexes = malloc(job->rows * sizeof(int64_t));
    int err = indexes ? make_x_batch(c, job->rows, job->field_bytes, &b, &data)
                      : bench_out_of_memory();
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"put+commit", "get_meta+get", NULL},
                                  job->iters, num_p);
    if (err == 0) {
        tq_clear_partition(c, part);
        err = bench_ready(job);
    }
    tq_fetch_args_t args = {.partition = part, .task = "bench", .fields = FIELD_X,
                            .num_fields = 1, .batch_size = job->rows, .timeout_ms = 0};
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        int rc = tq_put(c, part, b, NULL, indexes);
        uint64_t t1 = tq__now_ns();
        if (rc != TQ_OK) {
            err = bench_fail(c, "put", rc);
            break;
        }
        tq_meta *m = NULL;
        tq_batch *got = NULL;
        if ((rc = tq_get_meta(c, &args, &m)) == TQ_OK)
            rc = tq_get_data(c, m, &got);
        uint64_t t2 = tq__now_ns();
        tq_meta_free(m);
        if (rc != TQ_OK) {
            err = bench_fail(c, "get_meta + get_data", rc);
            break;
        }
        err = check_x(got, data, job->rows * job->field_bytes, "latency");
        tq_batch_destroy(got);
        if (it >= job->warmup) {
            s[0].call_ns[s[0].calls++] = t1 - t0;
            s[1].call_ns[s[1].calls++] = t2 - t1;
        }
        if (err == 0 && (rc = tq_clear(c, part, job->rows, indexes)) < 0)
            err = bench_fail(c, "clear", rc);
        bench_progress(job, it + 1, total);
    }
    for (unsigned i = 0; i < *num_p; i++) {
        s[i].bytes = (uint64_t)job->rows * job->field_bytes * job->iters;
        s[i].rows = (uint64_t)job->rows * job->iters;
    }
    tq_clear_partition(c, part);
    tq_batch_destroy(b);
    free(data);
    free(indexes);
    return err;
}

/*
 * meta: the controller's rate of get_meta + commit, with no payload in the way,
 * which bounds how fast small-sample pipelines can hand rows between stages.
 */
int bench_meta(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    tq_batch *b = NULL;
    uint8_t *none = NULL;
    int64_t *indexes = malloc(job->rows * sizeof(int64_t));
    int err = indexes ? make_x_batch(c, job->rows, 0, &b, &none) : bench_out_of_memory();
    static const char *const ops[] = {"alloc_commit", "get_meta", "get_meta+commit", NULL};
    if (err == 0)
        err = bench_samples_alloc(s, ops, job->iters, num_p);
    if (err == 0) {
        tq_clear_partition(c, part); /* none left by a failed run; absent is fine */
        err = bench_ready(job);
    }
    tq_fetch_args_t args = {.partition = part, .task = "bench", .fields = FIELD_X,
                            .num_fields = 1, .batch_size = job->rows, .timeout_ms = 0};
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        int rc = tq_put(c, part, b, NULL, indexes);
        if (rc != TQ_OK) {
            err = bench_fail(c, "put (alloc + commit)", rc);
            break;
        }
        uint64_t t1 = tq__now_ns();
        tq_meta *m;
        if ((rc = tq_get_meta(c, &args, &m)) != TQ_OK) {
            err = bench_fail(c, "get_meta", rc);
            break;
        }
        uint64_t t2 = tq__now_ns();
        uint32_t got = tq_meta_rows(m);
        tq_meta_free(m); /* its release is sent without waiting: not part of the rate */
        if (got != job->rows) {
            fprintf(stderr, "tq-rdma-bench: get_meta gave %u rows, %u were committed\n", got,
                    job->rows);
            err = 1;
        }
        /* clearing keeps the partition at one batch of rows, so every iteration is alike */
        if (err == 0 && (rc = tq_clear(c, part, job->rows, indexes)) < 0)
            err = bench_fail(c, "clear", rc);
        if (it >= job->warmup) {
            s[0].call_ns[s[0].calls++] = t1 - t0;
            s[1].call_ns[s[1].calls++] = t2 - t1;
            s[2].call_ns[s[2].calls++] = t2 - t0;
        }
        bench_progress(job, it + 1, total);
    }
    for (unsigned i = 0; i < *num_p; i++)
        s[i].rows = (uint64_t)job->rows * job->iters;
    tq_batch_destroy(b);
    free(indexes);
    return err;
}

/* ---- pipeline ---- */

typedef struct {
    const bench_job_t *job;
    const char        *partition;
    tq_batch          *batch;
    int                err;
} producer_t;

#define PRODUCER_FULL_MS 10000 /* the longest the producer waits for room */

/* The producer stage: its own client puts --iters batches, then seals the partition. */
static void *produce(void *arg)
{
    producer_t *p = arg;
    tq_client *c;
    int rc = tq_open(p->job->address, &c);
    if (rc != TQ_OK) {
        p->err = bench_fail(NULL, "pipeline producer: cannot open", rc);
        return NULL;
    }
    for (unsigned it = 0; it < p->job->iters && p->err == 0; it++) {
        /* a full pool waits for the consumer's clears, as a real producer would */
        uint64_t give_up = tq__now_ms() + PRODUCER_FULL_MS;
        while ((rc = tq_put(c, p->partition, p->batch, NULL, NULL)) == TQ_ERR_NOSPACE &&
               tq__now_ms() < give_up)
            nanosleep(&(struct timespec){0, 200000}, NULL);
        if (rc != TQ_OK)
            p->err = bench_fail(c, "pipeline producer: put", rc);
    }
    /* sealed even after a failure, so the consumer's stream ends instead of waiting */
    if ((rc = tq_partition_seal(c, p->partition)) != TQ_OK && p->err == 0)
        p->err = bench_fail(c, "pipeline producer: seal", rc);
    tq_close(c);
    return NULL;
}

/*
 * pipeline: a producer stage puts --iters batches while this client consumes
 * them through a stream that reads --inflight batches ahead; the rate is the
 * consumer's, from the first put to the end of the stream.
 */
int bench_pipeline(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    uint8_t *data = NULL;
    producer_t p = {.job = job, .partition = part};
    int err = make_x_batch(c, job->rows, job->field_bytes, &p.batch, &data);
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"pipeline", NULL}, job->iters, num_p);
    if (err != 0)
        goto out;
    tq_clear_partition(c, part);
    tq_fetch_args_t args = {.partition = part, .task = "bench", .fields = FIELD_X,
                            .num_fields = 1, .batch_size = job->rows, .timeout_ms = 30000,
                            .prefetch = job->inflight};
    tq_stream *st;
    int rc = tq_stream_open(c, &args, &st);
    if (rc != TQ_OK) {
        err = bench_fail(c, "stream_open", rc);
        goto out;
    }
    pthread_t producer;
    if ((err = bench_ready(job)) != 0 || pthread_create(&producer, NULL, produce, &p) != 0) {
        err = err ? err : bench_out_of_memory();
        tq_stream_close(st);
        goto out;
    }
    uint64_t start = tq__now_ns(), last = start;
    for (;;) {
        tq_batch *got;
        tq_meta *m;
        rc = tq_stream_next(st, &got, &m);
        uint64_t now = tq__now_ns();
        if (rc == TQ_ERR_END)
            break;
        if (rc != TQ_OK) {
            err = bench_fail(c, "stream_next", rc);
            break;
        }
        if (s[0].calls == 0) /* checking every batch would time memcmp, not the pipeline */
            err = check_x(got, data, job->rows * job->field_bytes, "pipeline");
        tq_batch_destroy(got);
        /* consumed rows are cleared, so the producer never runs out of room */
        if (err == 0 && (rc = tq_clear(c, part, tq_meta_rows(m), tq_meta_indexes(m))) < 0)
            err = bench_fail(c, "clear", rc);
        tq_meta_free(m);
        if (s[0].calls < job->iters)
            s[0].call_ns[s[0].calls++] = now - last;
        last = now;
        bench_progress(job, s[0].calls, job->iters);
        if (err != 0)
            break;
    }
    tq_stream_close(st);
    pthread_join(producer, NULL);
    if (err == 0 && p.err != 0)
        err = p.err;
    if (err == 0 && s[0].calls != job->iters) {
        fprintf(stderr, "tq-rdma-bench: pipeline: %u batches put, %u consumed\n", job->iters,
                s[0].calls);
        err = 1;
    }
    s[0].wall_ns = last - start;
    s[0].bytes = (uint64_t)s[0].calls * job->rows * job->field_bytes;
    s[0].rows = (uint64_t)s[0].calls * job->rows;
out:
    tq_clear_partition(c, part);
    tq_batch_destroy(p.batch);
    free(data);
    return err;
}

/* ---- wakeup ---- */

#define WAKE_MAX_NS (60ULL * 1000000000ULL) /* bound on the whole wakeup run */

/* What the producer tells the bench after each put; times are CLOCK_MONOTONIC. */
typedef struct {
    uint64_t t0, t1;
    int64_t  index; /* -1 in the first answer, which only says "ready" */
} wake_rec_t;

/* A read from the producer that did not give a whole record, in words. */
static int producer_silent(const char *what, int r)
{
    fprintf(stderr, "tq-rdma-bench: wakeup: waiting for %s: %s\n", what,
            r == 1 ? "the producer exited (see its message above)"
                   : errno == ETIMEDOUT ? "no answer from the producer in time" : strerror(errno));
    return 1;
}

/*
 * wakeup: how soon a consumer parked in tq_get_meta learns of a commit made by
 * another process, the hand-off between pipeline stages. Each iteration: "go"
 * to the producer, get_meta of 1 row (it parks), the producer's put wakes it.
 * Both processes read CLOCK_MONOTONIC, which is one clock on one machine.
 */
int bench_wakeup(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    unsigned total = job->warmup + job->iters;
    int64_t *indexes = malloc(total * sizeof(int64_t));
    size_t num_indexes = 0;
    int go_fd = -1, res_fd = -1, err = 1, rc, r;
    pid_t pid = -1;
    wake_rec_t rec;
    if (indexes == NULL) {
        bench_out_of_memory();
        goto out;
    }
    if (bench_samples_alloc(s, (const char *const[]){"put_to_wake", "producer_put", NULL},
                            job->iters, num_p) != 0)
        goto out;
    /* a row left by a failed run would answer get_meta without parking */
    tq_clear_partition(c, part);
    signal(SIGPIPE, SIG_IGN); /* a dead producer is an error to report, not a reason to die */
    const char *args[] = {"--controller", job->address, "--partition", part, NULL};
    if (bench_spawn("--wakeup-producer", args, &go_fd, &res_fd, &pid) != 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: cannot start the producer: %s\n",
                strerror(errno));
        goto out;
    }
    if ((r = bench_read_full(res_fd, &rec, sizeof(rec), BENCH_START_TIMEOUT_MS)) != 0) {
        producer_silent("the producer to start", r);
        goto out;
    }
    if (bench_ready(job) != 0)
        goto out;

    tq_fetch_args_t fa = {.partition = part, .task = "bench", .fields = FIELD_X,
                          .num_fields = 1, .batch_size = 1, .timeout_ms = 5000};
    uint64_t start = tq__now_ns();
    for (unsigned it = 0; it < total; it++) {
        if (tq__now_ns() - start > WAKE_MAX_NS) {
            fprintf(stderr, "tq-rdma-bench: wakeup: stopped at the %llu s limit after %u "
                    "iterations\n", WAKE_MAX_NS / 1000000000ULL, s[0].calls);
            break;
        }
        if (bench_write_full(go_fd, "g", 1) != 0) {
            fprintf(stderr, "tq-rdma-bench: wakeup: cannot signal the producer: %s\n",
                    strerror(errno));
            goto out;
        }
        tq_meta *m;
        rc = tq_get_meta(c, &fa, &m);
        uint64_t t_wake = tq__now_ns();
        if (rc != TQ_OK) {
            bench_fail(c, "get_meta (waiting for the producer's commit)", rc);
            goto out;
        }
        int64_t index = tq_meta_rows(m) == 1 ? tq_meta_indexes(m)[0] : -1;
        tq_meta_free(m);
        if (index >= 0)
            indexes[num_indexes++] = index;
        if ((r = bench_read_full(res_fd, &rec, sizeof(rec), BENCH_PIPE_TIMEOUT_MS)) != 0) {
            producer_silent("the producer's times", r);
            goto out;
        }
        /* the row we got must be the one just committed, after its put began */
        if (index != rec.index || t_wake < rec.t0) {
            fprintf(stderr, "tq-rdma-bench: wakeup: woken by row %lld, but the producer "
                    "committed row %lld\n", (long long)index, (long long)rec.index);
            goto out;
        }
        if (it >= job->warmup) {
            s[0].call_ns[s[0].calls++] = t_wake - rec.t0;
            s[1].call_ns[s[1].calls++] = rec.t1 - rec.t0;
        }
        bench_progress(job, it + 1, total);
    }
    close(go_fd); /* end of file: the producer's cue to exit */
    go_fd = -1;
    int status = bench_reap(pid, false);
    pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: the producer failed (wait status %d)\n",
                status);
        goto out;
    }
    if (s[0].calls == 0) {
        fprintf(stderr, "tq-rdma-bench: wakeup: no iteration was measured\n");
        goto out;
    }
    s[0].rows = s[1].rows = s[0].calls;
    err = 0;
out:
    if (go_fd >= 0)
        close(go_fd);
    if (pid > 0)
        bench_reap(pid, true);
    if (res_fd >= 0)
        close(res_fd);
    if (num_indexes > 0 && (rc = tq_clear(c, part, num_indexes, indexes)) < 0 && err == 0)
        err = bench_fail(c, "clear", rc);
    free(indexes);
    return err;
}

/*
 * The other process of wakeup. On each "go" it sleeps 2 ms, so the bench's
 * get_meta is surely parked by then, puts one 0-byte row and answers with the
 * times around the put. It exits when the bench closes the pipe, or when the
 * bench is silent for BENCH_PIPE_TIMEOUT_MS.
 */
int bench_wakeup_producer(tq_client *c, const char *partition, int go_fd, int res_fd)
{
    tq_batch *b;
    uint8_t *none;
    if (make_x_batch(c, 1, 0, &b, &none) != 0)
        return 1;
    int err = 0;
    wake_rec_t rec = {.index = -1};
    if (bench_write_full(res_fd, &rec, sizeof(rec)) != 0) /* ready */
        err = 1;
    while (err == 0) {
        char go;
        int r = bench_read_full(go_fd, &go, 1, BENCH_PIPE_TIMEOUT_MS);
        if (r == 1)
            break;
        if (r != 0) {
            fprintf(stderr, "tq-rdma-bench: producer: waiting for the bench: %s\n",
                    errno == ETIMEDOUT ? "no word in time" : strerror(errno));
            err = 1;
            break;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
        rec.t0 = tq__now_ns();
        int rc = tq_put(c, partition, b, NULL, &rec.index);
        rec.t1 = tq__now_ns();
        if (rc != TQ_OK)
            err = bench_fail(c, "producer: put", rc);
        else if (bench_write_full(res_fd, &rec, sizeof(rec)) != 0) {
            fprintf(stderr, "tq-rdma-bench: producer: cannot answer the bench: %s\n",
                    strerror(errno));
            err = 1;
        }
    }
    tq_batch_destroy(b);
    return err;
}
