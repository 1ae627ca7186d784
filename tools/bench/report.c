/* report.c: tq-rdma-bench's results: merging clients' samples, the table, JSON lines, progress. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "util/common.h"

static const char *const MODE_NAMES[MODE_COUNT] = {
    [MODE_PUT] = "put", [MODE_GET] = "get", [MODE_KV] = "kv", [MODE_KV_NB] = "kv-nb",
    [MODE_LATENCY] = "latency", [MODE_META] = "meta", [MODE_PIPELINE] = "pipeline",
    [MODE_WAKEUP] = "wakeup",
};

const char *bench_mode_name(bench_mode_t m) { return m < MODE_COUNT ? MODE_NAMES[m] : "?"; }

int bench_fail(tq_client *c, const char *what, int rc)
{
    const char *detail = tq_last_error(c);
    fprintf(stderr, "tq-rdma-bench: %s: %s%s%s%s\n", what, tq_status_string(rc),
            *detail ? " (" : "", detail, *detail ? ")" : "");
    return 1;
}

int bench_out_of_memory(void)
{
    fprintf(stderr, "tq-rdma-bench: out of memory\n");
    return 1;
}

void bench_partition(const bench_job_t *job, char *out, size_t cap)
{
    snprintf(out, cap, "bench-%s-%u", bench_mode_name(job->mode), job->client_id);
}

int bench_samples_alloc(bench_sample_t *s, const char *const *ops, unsigned calls,
                        unsigned *num_p)
{
    unsigned n = 0;
    for (; ops[n] != NULL && n < BENCH_MAX_SAMPLES; n++) {
        memset(&s[n], 0, sizeof(s[n]));
        snprintf(s[n].op, sizeof(s[n].op), "%s", ops[n]);
        if ((s[n].call_ns = calloc(calls ? calls : 1, sizeof(uint64_t))) == NULL)
            return bench_out_of_memory();
    }
    *num_p = n;
    return 0;
}

void bench_sample_free(bench_sample_t *s)
{
    free(s->call_ns);
    s->call_ns = NULL;
    s->calls = 0;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile_us(const uint64_t *v, size_t n, unsigned pct)
{
    return n ? (double)v[(pct * n + 99) / 100 - 1] / 1e3 : 0;
}

void bench_merge(const bench_job_t *job, const bench_sample_t *const *per_client, unsigned n,
                 bench_result_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->op, sizeof(r->op), "%s", per_client[0]->op);
    r->profile = job->profile == PROFILE_COMPLEX ? "complex" : NULL;
    r->field_bytes = job->field_bytes;
    r->rows = job->rows;
    r->fields = job->fields;
    r->clients = n;
    r->iters = job->iters;

    size_t calls = 0;
    uint64_t bytes = 0, rows = 0, all_ns = 0, longest_ns = 0;
    for (unsigned k = 0; k < n; k++) {
        uint64_t busy = 0;
        for (unsigned i = 0; i < per_client[k]->calls; i++)
            busy += per_client[k]->call_ns[i];
        all_ns += busy;
        if (per_client[k]->wall_ns > 0)
            busy = per_client[k]->wall_ns;
        longest_ns = TQ_MAX(longest_ns, busy);
        calls += per_client[k]->calls;
        bytes += per_client[k]->bytes;
        rows += per_client[k]->rows;
    }
    /* clients start together, so the busiest one's time is the run's time */
    r->seconds = (double)longest_ns / 1e9;
    if (r->seconds > 0) {
        r->bytes_per_s = (double)bytes / r->seconds;
        r->rows_per_s = (double)rows / r->seconds;
    }
    uint64_t *all = malloc((calls ? calls : 1) * sizeof(uint64_t));
    if (all == NULL || calls == 0) {
        free(all);
        return;
    }
    size_t at = 0;
    for (unsigned k = 0; k < n; k++) {
        memcpy(all + at, per_client[k]->call_ns, per_client[k]->calls * sizeof(uint64_t));
        at += per_client[k]->calls;
    }
    qsort(all, calls, sizeof(uint64_t), tq__cmp_u64);
    r->min_us = (double)all[0] / 1e3;
    r->p50_us = percentile_us(all, calls, 50);
    r->p99_us = percentile_us(all, calls, 99);
    r->mean_us = (double)all_ns / 1e3 / (double)calls;
    free(all);
}

/* The bar overwrites itself on the terminal, and is erased when done. */
void bench_progress(const bench_job_t *job, unsigned done, unsigned total)
{
    enum { WIDTH = 30 };
    if (!job->progress || total == 0)
        return;
    unsigned filled = (unsigned)((uint64_t)done * WIDTH / total);
    char bar[WIDTH + 1];
    memset(bar, '#', filled);
    memset(bar + filled, '.', WIDTH - filled);
    bar[WIDTH] = '\0';
    if (done < total)
        printf("\r  %-10s [%s] %u/%u", bench_mode_name(job->mode), bar, done, total);
    else
        printf("\r%*s\r", WIDTH + 30, "");
    fflush(stdout);
}

void bench_print_header(bool json)
{
    if (json)
        return;
    printf("%-16s %9s %6s %6s %7s %6s %9s %10s %9s %9s %9s\n", "op", "field", "rows", "fields",
           "clients", "iters", "seconds", "GB/s", "rows/s", "p50 us", "p99 us");
}

/* 1536 -> "1.5K": sizes as people write them. */
static void human_size(uint64_t v, char *out, size_t cap)
{
    static const char units[] = "BKMGT";
    unsigned u = 0;
    double d = (double)v;
    while (d >= 1024 && u + 1 < sizeof(units) - 1)
        d /= 1024, u++;
    if (u == 0)
        snprintf(out, cap, "%lluB", (unsigned long long)v);
    else
        snprintf(out, cap, d == (double)(uint64_t)d ? "%.0f%c" : "%.1f%c", d, units[u]);
}

void bench_print(const bench_result_t *r, bool json)
{
    double ratio = r->ucx_bytes_per_s > 0 ? r->bytes_per_s / r->ucx_bytes_per_s : 0;
    if (json) {
        printf("{\"op\":\"%s\",\"profile\":\"%s\",\"field_bytes\":%llu,\"rows\":%u,\"fields\":%u,"
               "\"clients\":%u,\"iters\":%u,\"seconds\":%.6f,\"bytes_per_s\":%.0f,"
               "\"gbps\":%.3f,\"rows_per_s\":%.0f,\"min_us\":%.2f,\"p50_us\":%.2f,"
               "\"p99_us\":%.2f,\"mean_us\":%.2f",
               r->op, r->profile ? r->profile : "simple", (unsigned long long)r->field_bytes,
               r->rows, r->fields, r->clients, r->iters, r->seconds, r->bytes_per_s,
               r->bytes_per_s * 8 / 1e9, r->rows_per_s, r->min_us, r->p50_us, r->p99_us,
               r->mean_us);
        if (r->ucx_bytes_per_s > 0)
            printf(",\"ucx_perftest_bytes_per_s\":%.0f,\"ratio\":%.3f", r->ucx_bytes_per_s, ratio);
        if (r->target != NULL)
            printf(",\"target\":\"%s\",\"target_met\":%s", r->target,
                   r->target_met ? "true" : "false");
        printf("%s}\n", r->extra);
        fflush(stdout);
        return;
    }
    char size[16];
    human_size(r->field_bytes, size, sizeof(size));
    printf("%-16s %9s %6u %6u %7u %6u %9.4f %10.2f %9.0f %9.1f %9.1f", r->op, size, r->rows,
           r->fields, r->clients, r->iters, r->seconds, r->bytes_per_s / 1e9, r->rows_per_s,
           r->p50_us, r->p99_us);
    if (r->ucx_bytes_per_s > 0)
        printf("  ucx_perftest %.2f GB/s, ratio %.2f", r->ucx_bytes_per_s / 1e9, ratio);
    if (r->target != NULL)
        printf("  [target %s: %s]", r->target, r->target_met ? "met" : "MISSED");
    printf("\n");
    fflush(stdout);
}
