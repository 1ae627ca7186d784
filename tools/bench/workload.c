/* workload.c: tq-rdma-bench's data sets and its throughput modes: put, get, kv and kv-nb. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "util/common.h"

/*
 * A batch of job->rows rows and job->fields fields "f0", "f1", ... with the
 * memory it borrows. Complex rows vary in length between half and all of
 * field_bytes, the way sequence lengths vary in a rollout.
 */
typedef struct {
    tq_batch *batch;
    uint32_t  fields;
    char    **names;
    uint8_t **columns;   /* per field: its rows back to back */
    int64_t **shapes;    /* per nested field: one length per row */
    size_t  **lengths;   /* per bytes field: one length per row */
    void   ***row_ptrs;  /* per nested or bytes field: where each row starts */
    uint64_t  bytes;     /* payload of the whole batch */
} dataset_t;

static tq_field_kind_t field_kind(const bench_job_t *job, uint32_t f)
{
    static const tq_field_kind_t third[3] = {TQ_FIELD_TENSOR, TQ_FIELD_NESTED, TQ_FIELD_BYTES};
    return job->profile == PROFILE_COMPLEX ? third[f % 3] : TQ_FIELD_TENSOR;
}

uint64_t bench_row_bytes(const bench_job_t *job) { return (uint64_t)job->fields * job->field_bytes; }

/* Length in bytes of row r of a varying field f: between half and all of max, a
 * multiple of unit, the same on every run. */
static uint64_t varying_length(uint64_t max, uint64_t unit, uint32_t r, uint32_t f)
{
    uint64_t units = max / unit, half = units / 2;
    uint64_t h = ((uint64_t)r * 2654435761u + f * 40503u) % (units - half + 1);
    return (half + h) * unit;
}

/* Bytes that differ per position, row and seed, so a row read from the wrong place shows. */
static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + (i >> 12) + seed * 17u);
}

static void dataset_free(dataset_t *d)
{
    for (uint32_t f = 0; f < d->fields; f++) {
        if (d->names)
            free(d->names[f]);
        if (d->columns)
            free(d->columns[f]);
        if (d->shapes)
            free(d->shapes[f]);
        if (d->lengths)
            free(d->lengths[f]);
        if (d->row_ptrs)
            free(d->row_ptrs[f]);
    }
    free(d->names);
    free(d->columns);
    free(d->shapes);
    free(d->lengths);
    free(d->row_ptrs);
    tq_batch_destroy(d->batch);
    memset(d, 0, sizeof(*d));
}

/* Lay out field f's rows in one column and add it to the batch. */
static int dataset_add_field(tq_client *c, const bench_job_t *job, dataset_t *d, uint32_t f,
                             unsigned seed)
{
    uint32_t rows = job->rows;
    tq_field_kind_t kind = field_kind(job, f);
    size_t unit = kind == TQ_FIELD_TENSOR && job->profile == PROFILE_SIMPLE
                      ? tq_dtype_size(job->dtype) : kind == TQ_FIELD_BYTES ? 1 : 4;
    uint64_t total = 0;
    if (kind != TQ_FIELD_TENSOR) {
        d->shapes[f] = calloc(rows, sizeof(int64_t));
        d->lengths[f] = calloc(rows, sizeof(size_t));
        d->row_ptrs[f] = calloc(rows, sizeof(void *));
        if (!d->shapes[f] || !d->lengths[f] || !d->row_ptrs[f])
            return bench_out_of_memory();
        for (uint32_t r = 0; r < rows; r++) {
            d->lengths[f][r] = varying_length(job->field_bytes, unit, r, f);
            d->shapes[f][r] = (int64_t)(d->lengths[f][r] / unit);
            total += d->lengths[f][r];
        }
    } else {
        total = (uint64_t)rows * job->field_bytes;
    }
    char name[16];
    snprintf(name, sizeof(name), "f%u", f);
    d->names[f] = strdup(name);
    d->columns[f] = malloc(total ? total : 1);
    if (d->names[f] == NULL || d->columns[f] == NULL)
        return bench_out_of_memory();
    fill(d->columns[f], total, seed * 131u + f);
    d->bytes += total;

    int rc;
    if (kind == TQ_FIELD_TENSOR) {
        tq_dtype_t dtype = job->profile == PROFILE_SIMPLE ? job->dtype : TQ_DTYPE_F32;
        int64_t shape[1] = {(int64_t)(job->field_bytes / tq_dtype_size(dtype))};
        rc = tq_batch_add_tensor(d->batch, name, dtype, 1, shape, d->columns[f]);
    } else {
        uint64_t at = 0;
        for (uint32_t r = 0; r < rows; r++) {
            d->row_ptrs[f][r] = d->columns[f] + at;
            at += d->lengths[f][r];
        }
        rc = kind == TQ_FIELD_NESTED
                 ? tq_batch_add_nested(d->batch, name, TQ_DTYPE_F32, 1, d->shapes[f],
                                       (const void *const *)d->row_ptrs[f])
                 : tq_batch_add_bytes(d->batch, name, (const void *const *)d->row_ptrs[f],
                                      d->lengths[f]);
    }
    return rc == TQ_OK ? 0 : bench_fail(c, "cannot build the batch", rc);
}

/* A data set for job; seed makes its bytes its own. */
static int dataset_init(tq_client *c, const bench_job_t *job, unsigned seed, dataset_t *d)
{
    memset(d, 0, sizeof(*d));
    d->fields = job->fields;
    d->names = calloc(job->fields, sizeof(char *));
    d->columns = calloc(job->fields, sizeof(uint8_t *));
    d->shapes = calloc(job->fields, sizeof(int64_t *));
    d->lengths = calloc(job->fields, sizeof(size_t *));
    d->row_ptrs = calloc(job->fields, sizeof(void **));
    if (!d->names || !d->columns || !d->shapes || !d->lengths || !d->row_ptrs)
        return bench_out_of_memory();
    int rc = tq_batch_create(job->rows, &d->batch);
    if (rc != TQ_OK)
        return bench_fail(c, "cannot build the batch", rc);
    for (uint32_t f = 0; f < job->fields; f++)
        if (dataset_add_field(c, job, d, f, seed) != 0)
            return 1;
    return 0;
}

/* got must hold exactly the rows of want, in order, byte for byte. */
static int check(const dataset_t *want, const tq_batch *got)
{
    uint32_t rows = tq_batch_rows(want->batch);
    bool same = got != NULL && tq_batch_rows(got) == rows;
    for (uint32_t f = 0; same && f < want->fields; f++)
        for (uint32_t r = 0; same && r < rows; r++) {
            size_t n1 = 0, n2 = 0;
            const void *a = tq_batch_row(want->batch, want->names[f], r, &n1, NULL);
            const void *b = tq_batch_row(got, want->names[f], r, &n2, NULL);
            same = b != NULL && n1 == n2 && memcmp(a, b, n1) == 0;
        }
    if (!same)
        fprintf(stderr, "tq-rdma-bench: data read back differs from data written\n");
    return same ? 0 : 1;
}

static tq_fetch_args_t fetch_args(const char *partition, const dataset_t *d, uint32_t rows)
{
    return (tq_fetch_args_t){.partition = partition, .task = "bench",
                             .fields = (const char *const *)d->names, .num_fields = d->fields,
                             .batch_size = rows, .timeout_ms = 0};
}

/* get_meta + get_data of a whole batch, checked against want when check_it. */
static int read_batch(tq_client *c, const tq_fetch_args_t *args, const dataset_t *want,
                      bool check_it)
{
    tq_meta *m;
    tq_batch *got;
    int rc = tq_get_meta(c, args, &m);
    if (rc != TQ_OK)
        return bench_fail(c, "get_meta", rc);
    rc = tq_get_data(c, m, &got);
    tq_meta_free(m);
    if (rc != TQ_OK)
        return bench_fail(c, "get_data", rc);
    int err = check_it ? check(want, got) : 0;
    tq_batch_destroy(got);
    return err;
}

/* put: rows appended by tq_put (ALLOC, writes, COMMIT); cleared untimed after each. */
int bench_put(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    dataset_t d;
    int64_t *indexes = malloc(job->rows * sizeof(int64_t));
    int err = indexes == NULL ? bench_out_of_memory() : dataset_init(c, job, 0, &d);
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"put", NULL}, job->iters, num_p);
    if (err != 0)
        goto out;
    tq_clear_partition(c, part); /* rows a failed run left; absent is fine */
    if ((err = bench_ready(job)) != 0)
        goto out;
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        int rc = tq_put(c, part, d.batch, NULL, indexes);
        uint64_t t1 = tq__now_ns();
        if (rc != TQ_OK) {
            err = bench_fail(c, "put", rc);
            break;
        }
        if (it >= job->warmup)
            s[0].call_ns[s[0].calls++] = t1 - t0;
        /* the last batch stays to be read back; the others free their extents */
        if (it + 1 < total && (rc = tq_clear(c, part, job->rows, indexes)) < 0)
            err = bench_fail(c, "clear", rc);
        bench_progress(job, it + 1, total);
    }
    s[0].bytes = d.bytes * job->iters;
    s[0].rows = (uint64_t)job->rows * job->iters;
    tq_fetch_args_t args = fetch_args(part, &d, job->rows);
    if (err == 0)
        err = read_batch(c, &args, &d, true);
    tq_clear_partition(c, part);
out:
    if (indexes != NULL)
        dataset_free(&d);
    free(indexes);
    return err;
}

/* get: one batch put before timing, then get_meta + get_data of it, with its
 * consumption reset (untimed) so the next iteration reads it again. */
int bench_get(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    dataset_t d;
    int err = dataset_init(c, job, 1, &d), rc;
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"get", NULL}, job->iters, num_p);
    if (err != 0)
        goto out;
    tq_clear_partition(c, part);
    if ((rc = tq_put(c, part, d.batch, NULL, NULL)) != TQ_OK) {
        err = bench_fail(c, "put", rc);
        goto out;
    }
    tq_fetch_args_t args = fetch_args(part, &d, job->rows);
    if ((err = bench_ready(job)) != 0)
        goto out;
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        err = read_batch(c, &args, &d, it == 0);
        uint64_t t1 = tq__now_ns();
        if (it >= job->warmup)
            s[0].call_ns[s[0].calls++] = t1 - t0;
        if (err == 0 && (rc = tq_reset_consumption(c, part, "bench")) != TQ_OK)
            err = bench_fail(c, "reset_consumption", rc);
        bench_progress(job, it + 1, total);
    }
    s[0].bytes = d.bytes * job->iters;
    s[0].rows = (uint64_t)job->rows * job->iters;
    tq_clear_partition(c, part);
out:
    dataset_free(&d);
    return err;
}

/* ---- key-value modes ---- */

/* Keys "k<client>-<set>-<row>" and the data set written to them. */
typedef struct {
    char    **keys;
    dataset_t data;
} keyset_t;

static void keyset_free(keyset_t *ks, uint32_t rows)
{
    for (uint32_t i = 0; ks->keys != NULL && i < rows; i++)
        free(ks->keys[i]);
    free(ks->keys);
    dataset_free(&ks->data);
    ks->keys = NULL;
}

static int keyset_init(tq_client *c, const bench_job_t *job, unsigned set, keyset_t *ks)
{
    memset(ks, 0, sizeof(*ks));
    if ((ks->keys = calloc(job->rows, sizeof(char *))) == NULL)
        return bench_out_of_memory();
    for (uint32_t i = 0; i < job->rows; i++) {
        char name[48];
        snprintf(name, sizeof(name), "k%u-%u-%u", job->client_id, set, i);
        if ((ks->keys[i] = strdup(name)) == NULL)
            return bench_out_of_memory();
    }
    return dataset_init(c, job, set + 2, &ks->data);
}

static int kv_put(tq_client *c, const char *part, const bench_job_t *job, const keyset_t *ks)
{
    int rc = tq_kv_batch_put(c, part, job->rows, (const char *const *)ks->keys, ks->data.batch,
                             NULL);
    return rc == TQ_OK ? 0 : bench_fail(c, "kv_batch_put", rc);
}

static int kv_get(tq_client *c, const char *part, const bench_job_t *job, const keyset_t *ks,
                  bool check_it)
{
    tq_batch *got;
    int rc = tq_kv_batch_get(c, part, job->rows, (const char *const *)ks->keys, ks->data.fields,
                             (const char *const *)ks->data.names, &got);
    if (rc != TQ_OK)
        return bench_fail(c, "kv_batch_get", rc);
    int err = check_it ? check(&ks->data, got) : 0;
    tq_batch_destroy(got);
    return err;
}

/* kv: the same keys overwritten and read back every iteration, i.e. steady state. */
int bench_kv(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    keyset_t ks;
    int err = keyset_init(c, job, 0, &ks);
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"kv_put", "kv_get", NULL},
                                  job->iters, num_p);
    if (err == 0)
        err = bench_ready(job);
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        err = kv_put(c, part, job, &ks);
        uint64_t t1 = tq__now_ns();
        if (err == 0)
            err = kv_get(c, part, job, &ks, it == 0);
        uint64_t t2 = tq__now_ns();
        if (it >= job->warmup) {
            s[0].call_ns[s[0].calls++] = t1 - t0;
            s[1].call_ns[s[1].calls++] = t2 - t1;
        }
        bench_progress(job, it + 1, total);
    }
    for (unsigned i = 0; i < *num_p; i++) {
        s[i].bytes = ks.data.bytes * job->iters;
        s[i].rows = (uint64_t)job->rows * job->iters;
    }
    tq_clear_partition(c, part);
    keyset_free(&ks, job->rows);
    return err;
}

/* Issue one non-blocking get per key set, then wait for them all; check when asked. */
static int kv_get_inflight(tq_client *c, const char *part, const bench_job_t *job,
                           const keyset_t *sets, tq_request **reqs, bool check_it)
{
    unsigned issued = 0;
    int err = 0;
    for (; issued < job->inflight; issued++) {
        int rc = tq_kv_batch_get_nb(c, part, job->rows, (const char *const *)sets[issued].keys,
                                    sets[issued].data.fields,
                                    (const char *const *)sets[issued].data.names, &reqs[issued]);
        if (rc != TQ_OK) {
            err = bench_fail(c, "kv_batch_get_nb", rc);
            break;
        }
    }
    /* wait for every request issued, even after an error: they borrow our key arrays */
    for (unsigned i = 0; i < issued; i++) {
        int rc = tq_request_wait(reqs[i], -1);
        if (rc != TQ_OK && err == 0)
            err = bench_fail(c, "kv_batch_get_nb (wait)", rc);
        tq_batch *got = tq_request_take_batch(reqs[i]);
        if (err == 0 && check_it)
            err = check(&sets[i].data, got);
        tq_batch_destroy(got);
        tq_request_free(reqs[i]);
    }
    return err;
}

/*
 * kv-nb: --inflight gets at once against the same gets one after another. Each
 * get has its own keys (all written before timing), so neither side is helped
 * by reading one extent twice.
 */
int bench_kv_nb(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p)
{
    char part[48];
    bench_partition(job, part, sizeof(part));
    unsigned n = job->inflight, made = 0;
    keyset_t *sets = calloc(n, sizeof(*sets));
    tq_request **reqs = calloc(n, sizeof(*reqs));
    int err = sets == NULL || reqs == NULL ? bench_out_of_memory() : 0;
    for (; err == 0 && made < n; made++)
        if ((err = keyset_init(c, job, made, &sets[made])) == 0)
            err = kv_put(c, part, job, &sets[made]);
    if (err == 0)
        err = bench_samples_alloc(s, (const char *const[]){"kv_get_seq", "kv_get_nb", NULL},
                                  job->iters, num_p);
    if (err == 0)
        err = bench_ready(job);
    unsigned total = job->warmup + job->iters;
    for (unsigned it = 0; it < total && err == 0; it++) {
        uint64_t t0 = tq__now_ns();
        for (unsigned k = 0; k < n && err == 0; k++)
            err = kv_get(c, part, job, &sets[k], it == 0);
        uint64_t t1 = tq__now_ns();
        if (err == 0)
            err = kv_get_inflight(c, part, job, sets, reqs, it == 0);
        uint64_t t2 = tq__now_ns();
        if (it >= job->warmup) {
            s[0].call_ns[s[0].calls++] = t1 - t0;
            s[1].call_ns[s[1].calls++] = t2 - t1;
        }
        bench_progress(job, it + 1, total);
    }
    /* both sides move the same bytes, so the speed-up is the ratio of their times */
    for (unsigned i = 0; i < *num_p; i++) {
        s[i].bytes = (made ? sets[0].data.bytes : 0) * n * job->iters;
        s[i].rows = (uint64_t)n * job->rows * job->iters;
    }
    tq_clear_partition(c, part);
    for (unsigned k = 0; k < made; k++)
        keyset_free(&sets[k], job->rows);
    free(sets);
    free(reqs);
    return err;
}
