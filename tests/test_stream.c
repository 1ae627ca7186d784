/* test_stream.c: samplers, sealed partitions, status queries and streams end to end
 * (SCENARIOS.md 15-17, with 11 and 12 for status and waiting), each scenario run against a
 * real cluster (tq-controller + 2 tq-storage) and the embedded default; and a
 * multi-process pipeline (two producer stages, 2 dp ranks x 2 replicas of consumers). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"

extern char **environ;

/* What a scenario runs against. */
typedef struct {
    tq_client  *c;
    tq_client  *c2;      /* a second client: its own connection on a cluster, c when embedded */
    const char *address; /* the controller, for other processes; NULL when embedded */
} stream_env_t;

static tq_test_cluster cluster;
static stream_env_t    env;

/* Job processes this test started: killed by the teardown if still running. */
#define MAX_CHILDREN 16
static pid_t children[MAX_CHILDREN];
static char  job_dir[64];

static void setup_cluster(void)
{
    cr_assert(eq(int, tq_test_cluster_start(&cluster, 2, "64M"), 0),
              "cannot start tq-controller and 2 tq-storage (see stderr)");
    tq_client *c = NULL, *c2 = NULL;
    int rc = tq_open(cluster.address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", cluster.address, tq_status_string(rc));
    rc = tq_open(cluster.address, &c2);
    cr_assert(eq(int, rc, TQ_OK), "second tq_open(%s): %s", cluster.address, tq_status_string(rc));
    env = (stream_env_t){c, c2, cluster.address};
}

static void setup_embedded(void)
{
    unsetenv("TQ_CONTROLLER");
    tq_client *c = NULL;
    int rc = tq_open("embedded", &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(embedded): %s", tq_status_string(rc));
    env = (stream_env_t){c, c, NULL};
}

static void close_clients(void)
{
    if (env.c2 != env.c)
        tq_close(env.c2);
    tq_close(env.c);
    env.c = env.c2 = NULL;
}

static void kill_children(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            tq_test_reap(children[i], 2000);
            children[i] = 0;
        }
}

static void remove_job_dir(void)
{
    if (job_dir[0] == '\0')
        return;
    if (getenv("TQ_TEST_KEEP_LOGS") == NULL) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", job_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_stream: cannot remove %s\n", job_dir);
    } else {
        fprintf(stderr, "test_stream: job files kept in %s\n", job_dir);
    }
    job_dir[0] = '\0';
}

/* After a scenario that passed: the daemons must exit cleanly on SIGTERM. */
static void finish_cluster(void)
{
    close_clients();
    cr_assert(eq(int, tq_test_cluster_stop(&cluster), 0),
              "a daemon did not exit cleanly on SIGTERM (see stderr)");
}

/* Whatever a failed scenario left behind (Criterion ignores asserts here). */
static void teardown(void)
{
    kill_children();
    close_clients();
    tq_test_cluster_stop(&cluster);
    remove_job_dir();
}

/* Write a scenario once; run it on both setups. */
#define STREAM_TEST(name, secs)                                                          \
    static void scenario_##name(const stream_env_t *e);                                  \
    Test(stream_cluster, name, .init = setup_cluster, .fini = teardown, .timeout = secs) \
    {                                                                                    \
        scenario_##name(&env);                                                           \
        finish_cluster();                                                                \
    }                                                                                    \
    Test(stream_embedded, name, .init = setup_embedded, .fini = teardown,               \
         .timeout = secs)                                                                \
    {                                                                                    \
        scenario_##name(&env);                                                           \
    }                                                                                    \
    static void scenario_##name(const stream_env_t *e)

/* ---- helpers ---- */

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static tq_meta *const  META_SENTINEL  = (tq_meta *)(uintptr_t)0x5e5e;
static tq_batch *const BATCH_SENTINEL = (tq_batch *)(uintptr_t)0x5e5f;

/* Bound on a stream_next that has rows to return. */
#define NEXT_TIMEOUT_MS 10000

static tq_batch *batch_new(uint32_t rows)
{
    tq_batch *b = NULL;
    cr_assert(eq(int, tq_batch_create(rows, &b), TQ_OK));
    return b;
}

/* Put an I64 scalar field of n rows at indexes (NULL: new rows). */
static int put_i64_rc(tq_client *c, const char *part, const char *field, uint32_t n,
                      const int64_t *indexes, const int64_t *values)
{
    tq_batch *b = batch_new(n);
    cr_assert(eq(int, tq_batch_add_tensor(b, field, TQ_DTYPE_I64, 0, NULL, values), TQ_OK));
    int rc = tq_put(c, part, b, indexes, NULL);
    tq_batch_destroy(b);
    return rc;
}

static void put_i64(tq_client *c, const char *part, const char *field, uint32_t n,
                    const int64_t *indexes, const int64_t *values)
{
    int rc = put_i64_rc(c, part, field, n, indexes, values);
    cr_assert(eq(int, rc, TQ_OK), "tq_put(%s, %s, %u rows from %lld): %s (%s)", part, field, n,
              indexes ? (long long)indexes[0] : -1LL, tq_status_string(rc), tq_last_error(c));
}

/* Put rows at the given indexes, value tq_test_row_value(index). */
static void put_rows(tq_client *c, const char *part, const char *field, uint32_t n,
                     const int64_t *indexes)
{
    int64_t *val = calloc(n, sizeof(int64_t));
    cr_assert(val != NULL);
    for (uint32_t i = 0; i < n; i++)
        val[i] = tq_test_row_value(indexes[i]);
    put_i64(c, part, field, n, indexes, val);
    free(val);
}

/* Put rows [first, first + n) at those indexes, value tq_test_row_value(index). */
static void put_range(tq_client *c, const char *part, const char *field, int64_t first, uint32_t n)
{
    int64_t *idx = calloc(n, sizeof(int64_t));
    cr_assert(idx != NULL);
    for (uint32_t i = 0; i < n; i++)
        idx[i] = first + i;
    put_rows(c, part, field, n, idx);
    free(idx);
}

static int get_meta(tq_client *c, const char *part, const char *task, const char *const *fields,
                    size_t nf, uint32_t n, const char *sampler, const char *sargs, int timeout_ms,
                    tq_meta **meta_p)
{
    tq_fetch_args_t a = {.partition = part, .task = task, .fields = fields, .num_fields = nf,
                         .batch_size = n, .sampler = sampler, .sampler_args = sargs,
                         .timeout_ms = timeout_ms};
    return tq_get_meta(c, &a, meta_p);
}

/* A get that must succeed with `rows` rows (any count when rows is 0). */
static tq_meta *get_ok(tq_client *c, const char *part, const char *task, const char *const *fields,
                       size_t nf, uint32_t n, const char *sampler, const char *sargs,
                       uint32_t rows, int timeout_ms)
{
    tq_meta *m = NULL;
    int rc = get_meta(c, part, task, fields, nf, n, sampler, sargs, timeout_ms, &m);
    cr_assert(eq(int, rc, TQ_OK), "get_meta(%s, task %s, %u rows, %s %s): %s (%s)", part, task, n,
              sampler ? sampler : "default", sargs ? sargs : "", tq_status_string(rc),
              tq_last_error(c));
    cr_assert(ne(ptr, m, NULL));
    if (rows > 0)
        cr_assert(eq(u32, tq_meta_rows(m), rows), "get_meta(%s, task %s, %u rows, %s %s)", part,
                  task, n, sampler ? sampler : "default", sargs ? sargs : "");
    cr_assert(ne(ptr, (void *)tq_meta_indexes(m), NULL));
    return m;
}

/* A get that must fail with `want`, meta_p untouched. */
static void get_fails(tq_client *c, const char *part, const char *task, const char *const *fields,
                      size_t nf, uint32_t n, const char *sampler, const char *sargs,
                      int timeout_ms, int want, const char *what)
{
    tq_meta *m = META_SENTINEL;
    int rc = get_meta(c, part, task, fields, nf, n, sampler, sargs, timeout_ms, &m);
    cr_assert(eq(int, rc, want), "%s: get_meta(%s, task %s, %u rows, %s %s): got %s (%s), want %s",
              what, part, task, n, sampler ? sampler : "default", sargs ? sargs : "",
              tq_status_string(rc), tq_last_error(c), tq_status_string(want));
    cr_assert(eq(ptr, m, META_SENTINEL), "%s: a failed get_meta wrote meta_p", what);
    if (rc == TQ_OK)
        tq_meta_free(m);
}

static tq_batch *data_ok(tq_client *c, const tq_meta *m)
{
    tq_batch *b = NULL;
    int rc = tq_get_data(c, m, &b);
    cr_assert(eq(int, rc, TQ_OK), "get_data: %s (%s)", tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, b, NULL));
    cr_assert(eq(u32, tq_batch_rows(b), tq_meta_rows(m)));
    return b;
}

static int64_t row_i64(const tq_batch *b, const char *field, uint32_t row)
{
    size_t bytes = 0;
    const void *p = tq_batch_row(b, field, row, &bytes, NULL);
    cr_assert(ne(ptr, (void *)p, NULL), "field %s row %u absent", field, row);
    cr_assert(eq(sz, bytes, sizeof(int64_t)), "field %s row %u", field, row);
    int64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Read `field` of every row of m: the value must be tq_test_row_value(index). */
static void assert_row_values(tq_client *c, const tq_meta *m, const char *field)
{
    tq_batch *b = data_ok(c, m);
    const int64_t *idx = tq_meta_indexes(m);
    for (uint32_t i = 0; i < tq_meta_rows(m); i++)
        cr_assert(eq(i64, row_i64(b, field, i), tq_test_row_value(idx[i])), "field %s row %lld",
                  field, (long long)idx[i]);
    tq_batch_destroy(b);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The meta's indexes, sorted, in a malloc'd array. */
static int64_t *sorted_indexes(const tq_meta *m)
{
    uint32_t n = tq_meta_rows(m);
    int64_t *s = malloc((n ? n : 1) * sizeof(int64_t));
    cr_assert(s != NULL);
    memcpy(s, tq_meta_indexes(m), n * sizeof(int64_t));
    qsort(s, n, sizeof(int64_t), cmp_i64);
    return s;
}

/* The meta holds whole groups [g*n, g*n+n), each once. Marks each group in
 * groups_seen (room for max_groups), which must not be marked yet. */
static void assert_whole_groups(const tq_meta *m, uint32_t n, uint8_t *groups_seen,
                                size_t max_groups, const char *what)
{
    uint32_t rows = tq_meta_rows(m);
    cr_assert(eq(u32, rows % n, 0), "%s: %u rows is not whole groups of %u", what, rows, n);
    int64_t *s = sorted_indexes(m);
    for (uint32_t j = 0; j < rows; j += n) {
        int64_t g = s[j] / n;
        cr_assert(eq(i64, s[j] % n, 0), "%s: group starting at index %lld is not aligned", what,
                  (long long)s[j]);
        for (uint32_t k = 0; k < n; k++)
            cr_assert(eq(i64, s[j + k], g * n + k), "%s: group %lld is not whole", what,
                      (long long)g);
        cr_assert(lt(i64, g, (int64_t)max_groups), "%s: group %lld out of range", what,
                  (long long)g);
        cr_assert(eq(u8, groups_seen[g], 0), "%s: group %lld returned twice", what, (long long)g);
        groups_seen[g] = 1;
    }
    free(s);
}

/* Same rows in the same order. */
static void assert_same_rows(const tq_meta *a, const tq_meta *b, const char *what)
{
    cr_assert(eq(u32, tq_meta_rows(a), tq_meta_rows(b)), "%s: row counts differ", what);
    for (uint32_t i = 0; i < tq_meta_rows(a); i++)
        cr_assert(eq(i64, tq_meta_indexes(a)[i], tq_meta_indexes(b)[i]), "%s: row %u differs",
                  what, i);
}

static void assert_disjoint(const tq_meta *a, const tq_meta *b, const char *what)
{
    for (uint32_t i = 0; i < tq_meta_rows(a); i++)
        for (uint32_t j = 0; j < tq_meta_rows(b); j++)
            cr_assert(ne(i64, tq_meta_indexes(a)[i], tq_meta_indexes(b)[j]),
                      "%s: index %lld in both", what, (long long)tq_meta_indexes(a)[i]);
}

/* ---- jobs: run as a process (cluster) or a thread on the shared client (embedded) ---- */

#define JOB_ENV    "TQ_STREAM_JOB"
#define JOB_MAXARG 16

/* Exit codes of a job. */
enum { JOB_OK = 0, JOB_USAGE = 2, JOB_OPEN = 3, JOB_PUT = 4, JOB_SEAL = 5, JOB_STREAM = 6,
       JOB_NEXT = 7, JOB_DATA = 8, JOB_VALUE = 9, JOB_FILE = 10 };

/* writer PART FIELD FIRST TOTAL PER_PUT DELAY_MS GAP_MS SEAL VALUES
 * Put rows [FIRST, FIRST + TOTAL) at those indexes, PER_PUT rows a put, after
 * DELAY_MS and with GAP_MS between puts; then seal the partition when SEAL is 1.
 * VALUES "row": tq_test_row_value(index); "ident": the index itself. */
static int job_writer(tq_client *c, int argc, char **argv)
{
    if (argc != 10)
        return JOB_USAGE;
    const char *part = argv[1], *field = argv[2];
    int64_t first = atoll(argv[3]);
    uint32_t total = (uint32_t)atoi(argv[4]), per_put = (uint32_t)atoi(argv[5]);
    int delay_ms = atoi(argv[6]), gap_ms = atoi(argv[7]), seal = atoi(argv[8]);
    bool ident = strcmp(argv[9], "ident") == 0;
    int64_t *idx = calloc(per_put, sizeof(int64_t)), *val = calloc(per_put, sizeof(int64_t));
    int rc = idx && val ? TQ_OK : TQ_ERR_NOMEM;
    tq_test_sleep_ms(delay_ms);
    for (uint32_t done = 0; rc == TQ_OK && done < total;) {
        uint32_t n = total - done < per_put ? total - done : per_put;
        for (uint32_t i = 0; i < n; i++) {
            idx[i] = first + done + i;
            val[i] = ident ? idx[i] : tq_test_row_value(idx[i]);
        }
        tq_batch *b = NULL;
        rc = tq_batch_create(n, &b);
        if (rc == TQ_OK)
            rc = tq_batch_add_tensor(b, field, TQ_DTYPE_I64, 0, NULL, val);
        if (rc == TQ_OK)
            rc = tq_put(c, part, b, idx, NULL);
        tq_batch_destroy(b);
        done += n;
        if (rc == TQ_OK && done < total && gap_ms > 0)
            tq_test_sleep_ms(gap_ms);
    }
    free(idx);
    free(val);
    if (rc != TQ_OK) {
        fprintf(stderr, "job writer %s: put: %s (%s)\n", part, tq_status_string(rc),
                tq_last_error(c));
        return JOB_PUT;
    }
    if (seal && (rc = tq_partition_seal(c, part)) != TQ_OK) {
        fprintf(stderr, "job writer %s: seal: %s (%s)\n", part, tq_status_string(rc),
                tq_last_error(c));
        return JOB_SEAL;
    }
    return JOB_OK;
}

/* stage_b PART BATCH
 * Stream field "a" with task "stage_b"; for every row write "b" = 2 * a at its index.
 * Ends with JOB_OK when the stream ends by itself (TQ_ERR_END). */
static int job_stage_b(tq_client *c, int argc, char **argv)
{
    if (argc != 3)
        return JOB_USAGE;
    const char *part = argv[1];
    static const char *const fields[] = {"a"};
    tq_fetch_args_t a = {.partition = part, .task = "stage_b", .fields = fields, .num_fields = 1,
                         .batch_size = (uint32_t)atoi(argv[2]), .timeout_ms = 30000,
                         .prefetch = 2};
    tq_stream *s = NULL;
    int rc = tq_stream_open(c, &a, &s);
    if (rc != TQ_OK) {
        fprintf(stderr, "job stage_b: stream_open: %s (%s)\n", tq_status_string(rc),
                tq_last_error(c));
        return JOB_STREAM;
    }
    int ret = JOB_OK;
    for (;;) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        if (rc != TQ_OK) {
            fprintf(stderr, "job stage_b: stream_next: %s (%s)\n", tq_status_string(rc),
                    tq_last_error(c));
            ret = JOB_NEXT;
            break;
        }
        uint32_t n = tq_meta_rows(m);
        const int64_t *idx = tq_meta_indexes(m);
        int64_t *bv = calloc(n ? n : 1, sizeof(int64_t));
        for (uint32_t i = 0; bv != NULL && i < n; i++) {
            size_t bytes = 0;
            const int64_t *p = tq_batch_row(b, "a", i, &bytes, NULL);
            if (p == NULL || bytes != sizeof(int64_t) || *p != idx[i]) {
                fprintf(stderr, "job stage_b: row %lld: a is %lld\n", (long long)idx[i],
                        p ? (long long)*p : -1LL);
                ret = JOB_VALUE;
                break;
            }
            bv[i] = 2 * *p;
        }
        tq_batch *out = NULL;
        if (ret == JOB_OK)
            rc = tq_batch_create(n, &out);
        if (ret == JOB_OK && rc == TQ_OK)
            rc = tq_batch_add_tensor(out, "b", TQ_DTYPE_I64, 0, NULL, bv);
        if (ret == JOB_OK && rc == TQ_OK)
            rc = tq_put(c, part, out, idx, NULL);
        if (ret == JOB_OK && rc != TQ_OK) {
            fprintf(stderr, "job stage_b: put b: %s (%s)\n", tq_status_string(rc),
                    tq_last_error(c));
            ret = JOB_PUT;
        }
        tq_batch_destroy(out);
        free(bv);
        tq_batch_destroy(b);
        tq_meta_free(m);
        if (ret != JOB_OK)
            break;
    }
    tq_stream_close(s);
    return ret;
}

/* consume PART RANK BATCH FILE
 * Stream fields a,b with task "train", sampler rank_aware {"dp_rank": RANK,
 * "dp_replicas": 2}; write "batch index a b" for every row to FILE, then "END"
 * when the stream ended by itself. */
static int job_consume(tq_client *c, int argc, char **argv)
{
    if (argc != 5)
        return JOB_USAGE;
    const char *part = argv[1];
    char sargs[128];
    snprintf(sargs, sizeof(sargs), "{\"dp_rank\": %d, \"dp_replicas\": 2}", atoi(argv[2]));
    static const char *const fields[] = {"a", "b"};
    tq_fetch_args_t a = {.partition = part, .task = "train", .fields = fields, .num_fields = 2,
                         .batch_size = (uint32_t)atoi(argv[3]), .sampler = "rank_aware",
                         .sampler_args = sargs, .timeout_ms = 30000, .prefetch = 2};
    FILE *f = fopen(argv[4], "w");
    if (f == NULL)
        return JOB_FILE;
    tq_stream *s = NULL;
    int rc = tq_stream_open(c, &a, &s);
    if (rc != TQ_OK) {
        fprintf(stderr, "job consume: stream_open: %s (%s)\n", tq_status_string(rc),
                tq_last_error(c));
        fclose(f);
        return JOB_STREAM;
    }
    int ret = JOB_OK;
    for (unsigned k = 0;; k++) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END) {
            fprintf(f, "END\n");
            break;
        }
        if (rc != TQ_OK) {
            fprintf(stderr, "job consume rank %s: stream_next %u: %s (%s)\n", argv[2], k,
                    tq_status_string(rc), tq_last_error(c));
            fprintf(f, "ERROR %d\n", rc);
            ret = JOB_NEXT;
            break;
        }
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            size_t ba = 0, bb = 0;
            const int64_t *pa = tq_batch_row(b, "a", i, &ba, NULL);
            const int64_t *pb = tq_batch_row(b, "b", i, &bb, NULL);
            if (pa == NULL || pb == NULL || ba != 8 || bb != 8) {
                ret = JOB_DATA;
                fprintf(f, "ERROR missing row %u\n", i);
                break;
            }
            fprintf(f, "%u %lld %lld %lld\n", k, (long long)tq_meta_indexes(m)[i],
                    (long long)*pa, (long long)*pb);
        }
        tq_batch_destroy(b);
        tq_meta_free(m);
        if (ret != JOB_OK)
            break;
    }
    tq_stream_close(s);
    if (fclose(f) != 0 && ret == JOB_OK)
        ret = JOB_FILE;
    return ret;
}

static int run_job(tq_client *c, int argc, char **argv)
{
    if (argc < 1)
        return JOB_USAGE;
    if (strcmp(argv[0], "writer") == 0)
        return job_writer(c, argc, argv);
    if (strcmp(argv[0], "stage_b") == 0)
        return job_stage_b(c, argc, argv);
    if (strcmp(argv[0], "consume") == 0)
        return job_consume(c, argc, argv);
    fprintf(stderr, "test_stream: unknown job %s\n", argv[0]);
    return JOB_USAGE;
}

/* A re-executed test binary marked as a job: argv = {name, ADDRESS, JOB, args...}.
 * Runs before Criterion's main and exits. */
__attribute__((constructor)) static void job_dispatch(int argc, char **argv, char **envp)
{
    (void)envp;
    if (getenv(JOB_ENV) == NULL || argc < 3)
        return;
    unsetenv(JOB_ENV);
    tq_client *c = NULL;
    int rc = tq_open(argv[1], &c);
    if (rc != TQ_OK) {
        fprintf(stderr, "job %s: tq_open(%s): %s\n", argv[2], argv[1], tq_status_string(rc));
        fflush(NULL);
        _exit(JOB_OPEN);
    }
    rc = run_job(c, argc - 2, argv + 2);
    tq_close(c);
    fflush(NULL);
    _exit(rc);
}

/* One job, as a process or a thread. */
typedef struct {
    pid_t     pid;    /* > 0: a process */
    pthread_t thread;
    bool      running_thread;
    tq_client *c;
    int       argc;
    char     *argv[JOB_MAXARG];
    char      store[JOB_MAXARG][256];
    int       rc;
    bool      done;
} job_t;

static void *job_thread(void *arg)
{
    job_t *j = arg;
    j->rc = run_job(j->c, j->argc, j->argv);
    return NULL;
}

/* Start a job: a fresh process (this binary re-executed) when e->address is set,
 * else a thread using e->c. The arguments are a NULL-terminated list. */
static void job_start(job_t *j, const stream_env_t *e, const char *name, ...)
{
    memset(j, 0, sizeof(*j));
    va_list ap;
    va_start(ap, name);
    snprintf(j->store[0], sizeof(j->store[0]), "%s", name);
    j->argv[j->argc] = j->store[j->argc];
    j->argc++;
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        cr_assert(lt(int, j->argc, JOB_MAXARG - 1), "too many job arguments");
        snprintf(j->store[j->argc], sizeof(j->store[0]), "%s", s);
        j->argv[j->argc] = j->store[j->argc];
        j->argc++;
    }
    va_end(ap);
    if (e->address == NULL) {
        j->c = e->c;
        cr_assert(eq(int, pthread_create(&j->thread, NULL, job_thread, j), 0));
        j->running_thread = true;
        return;
    }
    /* argv of the process: {"tq-stream-job", address, job args..., NULL} */
    char *pargv[JOB_MAXARG + 3];
    int k = 0;
    pargv[k++] = "tq-stream-job";
    pargv[k++] = (char *)e->address;
    for (int i = 0; i < j->argc; i++)
        pargv[k++] = j->argv[i];
    pargv[k] = NULL;
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 2, sizeof(char *));
    cr_assert(envp != NULL);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], JOB_ENV "=", sizeof(JOB_ENV)) != 0)
            envp[m++] = environ[i];
    envp[m++] = JOB_ENV "=1";
    envp[m] = NULL;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    cr_assert(lt(sz, 0, (size_t)(len > 0 ? len : 0)), "readlink /proc/self/exe");
    self[len] = '\0';
    struct rlimit rl;
    int max_fd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                         rl.rlim_cur <= 65536
                     ? (int)rl.rlim_cur
                     : 65536;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* only async-signal-safe calls until exec: the test has threads */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(126);
        for (int fd = 3; fd < max_fd; fd++)
            close(fd);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execve(self, pargv, envp);
        _exit(127);
    }
    free(envp);
    cr_assert(lt(int, 0, pid), "fork: %s", strerror(errno));
    j->pid = pid;
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] <= 0) {
            children[i] = pid;
            break;
        }
}

static void forget_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* Wait for every job until deadline_ms (monotonic). Processes still running then
 * are killed; threads are left (their calls are bounded) and the test fails.
 * @return how many jobs did not finish in time. */
static int jobs_wait(job_t *jobs, size_t n, uint64_t deadline_ms)
{
    size_t left = n;
    for (size_t i = 0; i < n; i++)
        jobs[i].done = false;
    while (left > 0) {
        for (size_t i = 0; i < n; i++) {
            job_t *j = &jobs[i];
            if (j->done)
                continue;
            if (j->pid > 0) {
                int status;
                pid_t r = waitpid(j->pid, &status, WNOHANG);
                if (r == j->pid) {
                    j->rc = WIFEXITED(status) ? WEXITSTATUS(status)
                                              : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
                    forget_child(j->pid);
                    j->done = true;
                    left--;
                }
            } else if (j->running_thread) {
                if (pthread_tryjoin_np(j->thread, NULL) == 0) {
                    j->running_thread = false;
                    j->done = true;
                    left--;
                }
            } else {
                j->done = true;
                left--;
            }
        }
        if (left == 0)
            break;
        if (tq_test_now_ms() >= deadline_ms) {
            for (size_t i = 0; i < n; i++)
                if (!jobs[i].done && jobs[i].pid > 0) {
                    fprintf(stderr, "test_stream: job %s (pid %ld) still running: killed\n",
                            jobs[i].argv[0], (long)jobs[i].pid);
                    kill(jobs[i].pid, SIGKILL);
                    tq_test_reap(jobs[i].pid, 2000);
                    forget_child(jobs[i].pid);
                    jobs[i].rc = 128 + SIGKILL;
                }
            return (int)left;
        }
        tq_test_sleep_ms(10);
    }
    return 0;
}

/* ---- 15: grpo returns whole groups only ---- */

STREAM_TEST(s15_grpo_whole_groups, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s15");
    static const char *const fields[] = {"v"};
    const char *grpo = "{\"n_samples_per_prompt\": 4}";

    /* groups of 4: 0, 2, 4, 5 complete; 1 without row 5; 3 with rows 12, 13 only.
     * Written out of order, the complete groups last. */
    static const int64_t w1[] = {20, 21, 22, 23, 13, 4, 12};
    static const int64_t w2[] = {6, 7, 9, 8, 11, 10};
    static const int64_t w3[] = {3, 1, 2, 0, 19, 16, 18, 17};
    put_rows(c, part, "v", N_OF(w1), w1);
    /* one complete group (5) is ready: a batch of 8 must wait for a second one */
    get_fails(c, part, "grpo", fields, 1, 8, "grpo", grpo, 0, TQ_ERR_TIMEOUT,
              "only group 5 complete");
    put_rows(c, part, "v", N_OF(w2), w2);
    put_rows(c, part, "v", N_OF(w3), w3);

    /* a batch size that is not whole groups */
    get_fails(c, part, "grpo", fields, 1, 6, "grpo", grpo, 0, TQ_ERR_INVALID, "batch_size 6");
    get_fails(c, part, "grpo", fields, 1, 2, "grpo", grpo, 0, TQ_ERR_INVALID, "batch_size 2");

    uint8_t groups[8] = {0};
    tq_meta *m1 = get_ok(c, part, "grpo", fields, 1, 8, "grpo", grpo, 8, 0);
    assert_whole_groups(m1, 4, groups, N_OF(groups), "first grpo batch");
    assert_row_values(c, m1, "v");
    tq_meta *m2 = get_ok(c, part, "grpo", fields, 1, 8, "grpo", grpo, 8, 0);
    assert_whole_groups(m2, 4, groups, N_OF(groups), "second grpo batch");
    assert_row_values(c, m2, "v");
    tq_meta_free(m1);
    tq_meta_free(m2);
    static const uint8_t want_groups[8] = {1, 0, 1, 0, 1, 1, 0, 0};
    for (int g = 0; g < 6; g++)
        cr_assert(eq(u8, groups[g], want_groups[g]), "group %d returned: %u, want %u", g,
                  groups[g], want_groups[g]);

    /* only incomplete groups (1 and 3) are left: nothing, not even 4 rows */
    get_fails(c, part, "grpo", fields, 1, 4, "grpo", grpo, 0, TQ_ERR_TIMEOUT, "incomplete left");
    get_fails(c, part, "grpo", fields, 1, 8, "grpo", grpo, 0, TQ_ERR_TIMEOUT, "incomplete left");

    /* completing group 1 makes exactly it available */
    static const int64_t w4[] = {5};
    put_rows(c, part, "v", 1, w4);
    tq_meta *m3 = get_ok(c, part, "grpo", fields, 1, 4, "grpo", grpo, 4, 0);
    assert_whole_groups(m3, 4, groups, N_OF(groups), "group 1");
    cr_assert(eq(u8, groups[1], 1), "the completed group 1 was not returned");
    assert_row_values(c, m3, "v");
    tq_meta_free(m3);
    get_fails(c, part, "grpo", fields, 1, 4, "grpo", grpo, 0, TQ_ERR_TIMEOUT, "group 3 incomplete");

    /* a waiting grpo get is woken by the rows that complete a group */
    static const int64_t w5[] = {14, 15};
    put_rows(c, part, "v", N_OF(w5), w5);
    tq_meta *m4 = get_ok(c, part, "grpo", fields, 1, 4, "grpo", grpo, 4, 2000);
    assert_whole_groups(m4, 4, groups, N_OF(groups), "group 3");
    cr_assert(eq(u8, groups[3], 1));
    tq_meta_free(m4);

    /* another task sees every whole group again; a group missing a field of the
     * request is not whole */
    static const int64_t wx[] = {0, 1, 2, 3, 4, 5, 6};
    put_rows(c, part, "x", N_OF(wx), wx);
    static const char *const fx[] = {"v", "x"};
    tq_meta *m5 = get_ok(c, part, "grpo_x", fx, 2, 4, "grpo", grpo, 4, 0);
    uint8_t gx[8] = {0};
    assert_whole_groups(m5, 4, gx, N_OF(gx), "fields v,x");
    cr_assert(eq(u8, gx[0], 1), "fields v,x: only group 0 has both");
    tq_meta_free(m5);
    get_fails(c, part, "grpo_x", fx, 2, 4, "grpo", grpo, 0, TQ_ERR_TIMEOUT,
              "group 1 lacks x on row 7");
}

/* ---- 16: rank_aware ---- */

STREAM_TEST(s16_rank_aware, 60)
{
    tq_client *c = e->c, *c2 = e->c2;
    const char *part = tq_test_unique("s16");
    static const char *const fields[] = {"v"};
    put_range(c, part, "v", 0, 32);

    /* same dp_rank and batch_index from two clients: the same rows, in the same order */
    const char *r0b0 = "{\"dp_rank\": 0, \"batch_index\": 0, \"dp_replicas\": 2}";
    const char *r1b0 = "{\"dp_rank\": 1, \"batch_index\": 0, \"dp_replicas\": 2}";
    tq_meta *a = get_ok(c, part, "train", fields, 1, 4, "rank_aware", r0b0, 4, 0);
    tq_meta *b = get_ok(c2, part, "train", fields, 1, 4, "rank_aware", r0b0, 4, 0);
    assert_same_rows(a, b, "rank 0 batch 0, two clients");
    assert_row_values(c, a, "v");
    assert_row_values(c2, b, "v");
    /* sequential: the lowest ready rows */
    int64_t *s = sorted_indexes(a);
    for (int i = 0; i < 4; i++)
        cr_assert(eq(i64, s[i], i), "rank 0 batch 0 is not the lowest rows");
    free(s);

    /* another dp_rank: disjoint rows, shared by its replicas as well */
    tq_meta *r1 = get_ok(c2, part, "train", fields, 1, 4, "rank_aware", r1b0, 4, 0);
    tq_meta *r1b = get_ok(c, part, "train", fields, 1, 4, "rank_aware", r1b0, 4, 0);
    assert_disjoint(a, r1, "ranks 0 and 1, batch 0");
    assert_same_rows(r1, r1b, "rank 1 batch 0, two clients");
    assert_row_values(c2, r1, "v");

    /* the next batch_index of rank 0: rows neither rank had */
    const char *r0b1 = "{\"dp_rank\": 0, \"batch_index\": 1, \"dp_replicas\": 2}";
    tq_meta *a1 = get_ok(c2, part, "train", fields, 1, 4, "rank_aware", r0b1, 4, 0);
    assert_disjoint(a1, a, "rank 0 batches 0 and 1");
    assert_disjoint(a1, r1, "rank 0 batch 1, rank 1 batch 0");
    tq_meta *a1b = get_ok(c, part, "train", fields, 1, 4, "rank_aware", r0b1, 4, 0);
    assert_same_rows(a1, a1b, "rank 0 batch 1, two clients");

    /* after its dp_replicas (2) takers, the kept result of (rank 0, batch 0) is gone:
     * a third taker samples new rows (or, if none are ready, times out) */
    tq_meta *third = META_SENTINEL;
    int rc = get_meta(c, part, "train", fields, 1, 4, "rank_aware", r0b0, 0, &third);
    cr_assert(rc == TQ_OK || rc == TQ_ERR_TIMEOUT, "third taker: %s (%s)", tq_status_string(rc),
              tq_last_error(c));
    if (rc == TQ_OK) {
        assert_disjoint(third, a, "a third taker of rank 0 batch 0 got the kept rows again");
        assert_disjoint(third, r1, "third taker vs rank 1");
        assert_disjoint(third, a1, "third taker vs rank 0 batch 1");
        tq_meta_free(third);
    }

    /* dp_replicas defaults to 1: a second taker of the same key samples afresh */
    const char *r2b0 = "{\"dp_rank\": 2, \"batch_index\": 0}";
    tq_meta *x = get_ok(c, part, "train", fields, 1, 4, "rank_aware", r2b0, 4, 0);
    tq_meta *y = get_ok(c2, part, "train", fields, 1, 4, "rank_aware", r2b0, 4, 0);
    assert_disjoint(x, y, "dp_replicas 1: two takers of rank 2 batch 0");

    /* another task is independent: its rank 0 batch 0 is the lowest rows again */
    tq_meta *o = get_ok(c, part, "other", fields, 1, 4, "rank_aware", r0b0, 4, 0);
    assert_same_rows(o, a, "task other, rank 0 batch 0");
    tq_meta_free(o);

    tq_meta_free(a);
    tq_meta_free(b);
    tq_meta_free(r1);
    tq_meta_free(r1b);
    tq_meta_free(a1);
    tq_meta_free(a1b);
    tq_meta_free(x);
    tq_meta_free(y);

    /* a kept result waits for a partition being cleared: with rows re-written there,
     * a second taker of a key kept before the clear gets fresh rows (new values) */
    const char *r5b0 = "{\"dp_rank\": 5, \"batch_index\": 0, \"dp_replicas\": 2}";
    tq_meta *k1 = get_ok(c, part, "kept", fields, 1, 4, "rank_aware", r5b0, 4, 0);
    tq_meta_free(k1);
    cr_assert(eq(int, tq_clear_partition(c, part), TQ_OK), "%s", tq_last_error(c));
    int64_t idx[4] = {100, 101, 102, 103};
    put_rows(c, part, "v", 4, idx);
    tq_meta *k2 = get_ok(c2, part, "kept", fields, 1, 4, "rank_aware", r5b0, 4, 0);
    s = sorted_indexes(k2);
    for (int i = 0; i < 4; i++)
        cr_assert(eq(i64, s[i], 100 + i), "after clear_partition, a kept result was returned");
    free(s);
    assert_row_values(c2, k2, "v");
    tq_meta_free(k2);
}

/* ---- 16: rank_aware through streams ---- */

STREAM_TEST(s16_rank_aware_streams, 60)
{
    tq_client *c = e->c, *c2 = e->c2;
    const char *part = tq_test_unique("s16s");
    static const char *const fields[] = {"v"};
    enum { ROWS = 42, BATCH = 4 };
    put_range(c, part, "v", 0, ROWS);
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK), "seal: %s", tq_last_error(c));

    /* rank 0 twice (two clients), rank 1 twice; rank 1 starts at batch_index 3 */
    const char *sargs[4] = {"{\"dp_rank\": 0, \"dp_replicas\": 2}",
                            "{\"dp_rank\": 0, \"dp_replicas\": 2}",
                            "{\"dp_rank\": 1, \"dp_replicas\": 2, \"batch_index\": 3}",
                            "{\"dp_rank\": 1, \"dp_replicas\": 2, \"batch_index\": 3}"};
    tq_stream *s[4];
    int64_t seq[4][ROWS];
    size_t len[4] = {0};
    bool ended[4] = {false};
    for (int i = 0; i < 4; i++) {
        tq_fetch_args_t a = {.partition = part, .task = "train", .fields = fields,
                             .num_fields = 1, .batch_size = BATCH, .sampler = "rank_aware",
                             .sampler_args = sargs[i], .timeout_ms = NEXT_TIMEOUT_MS,
                             .prefetch = (uint32_t)(i % 2 ? 1 : 3)};
        int rc = tq_stream_open(i % 2 ? c2 : c, &a, &s[i]);
        cr_assert(eq(int, rc, TQ_OK), "stream_open %d: %s", i, tq_status_string(rc));
    }
    /* round robin, one batch at a time from each stream */
    for (int round = 0; round < 64; round++) {
        int active = 0;
        for (int i = 0; i < 4; i++) {
            if (ended[i])
                continue;
            tq_batch *b = NULL;
            tq_meta *m = NULL;
            int rc = tq_stream_next(s[i], &b, &m);
            if (rc == TQ_ERR_END) {
                ended[i] = true;
                continue;
            }
            active++;
            cr_assert(eq(int, rc, TQ_OK), "stream %d, round %d: %s (%s)", i, round,
                      tq_status_string(rc), tq_last_error(i % 2 ? c2 : c));
            cr_assert(le(u32, tq_meta_rows(m), BATCH));
            cr_assert(lt(u32, 0, tq_meta_rows(m)));
            for (uint32_t r = 0; r < tq_meta_rows(m); r++) {
                int64_t ix = tq_meta_indexes(m)[r];
                cr_assert(lt(sz, len[i], (size_t)ROWS), "stream %d: too many rows", i);
                cr_assert(eq(i64, row_i64(b, "v", r), tq_test_row_value(ix)), "stream %d row %lld",
                          i, (long long)ix);
                seq[i][len[i]++] = ix;
            }
            tq_batch_destroy(b);
            tq_meta_free(m);
        }
        if (active == 0)
            break;
    }
    for (int i = 0; i < 4; i++) {
        cr_assert(ended[i], "stream %d did not end", i);
        /* the end is sticky */
        tq_batch *b = BATCH_SENTINEL;
        tq_meta *m = META_SENTINEL;
        cr_assert(eq(int, tq_stream_next(s[i], &b, &m), TQ_ERR_END), "stream %d after its end", i);
        cr_assert(eq(ptr, b, BATCH_SENTINEL));
        cr_assert(eq(ptr, m, META_SENTINEL));
        tq_stream_close(s[i]);
    }
    /* replicas saw the same rows in the same order */
    for (int r = 0; r < 2; r++) {
        cr_assert(eq(sz, len[2 * r], len[2 * r + 1]), "rank %d: replicas saw %zu and %zu rows", r,
                  len[2 * r], len[2 * r + 1]);
        for (size_t k = 0; k < len[2 * r]; k++)
            cr_assert(eq(i64, seq[2 * r][k], seq[2 * r + 1][k]), "rank %d: row %zu differs", r, k);
    }
    /* the ranks split the rows: each once */
    uint8_t seen[ROWS] = {0};
    for (int r = 0; r < 2; r++)
        for (size_t k = 0; k < len[2 * r]; k++) {
            int64_t ix = seq[2 * r][k];
            cr_assert(ge(i64, ix, 0));
            cr_assert(lt(i64, ix, ROWS));
            cr_assert(eq(u8, seen[ix], 0), "row %lld went to both ranks (or twice)", (long long)ix);
            seen[ix] = 1;
        }
    for (int i = 0; i < ROWS; i++)
        cr_assert(eq(u8, seen[i], 1), "row %d was never consumed", i);
    cr_assert(lt(sz, 0, len[0]), "rank 0 got nothing");
    cr_assert(lt(sz, 0, len[2]), "rank 1 got nothing");
}

/* ---- 17: streams over sealed partitions ---- */

/* Drain a stream: every row of [0, rows) exactly once with value
 * tq_test_row_value(index), batches of `batch` except a smaller last one,
 * then TQ_ERR_END. @return the number of batches. */
static unsigned drain(tq_stream *s, tq_client *c, int64_t rows, uint32_t batch, const char *what)
{
    uint8_t *seen = calloc((size_t)rows, 1);
    cr_assert(seen != NULL);
    int64_t total = 0;
    unsigned batches = 0;
    bool short_seen = false;
    for (;;) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s, &b, &m);
        if (rc == TQ_ERR_END)
            break;
        cr_assert(eq(int, rc, TQ_OK), "%s: stream_next after %lld rows: %s (%s)", what,
                  (long long)total, tq_status_string(rc), tq_last_error(c));
        cr_assert(ne(ptr, b, NULL));
        cr_assert(ne(ptr, m, NULL));
        uint32_t n = tq_meta_rows(m);
        cr_assert(eq(u32, tq_batch_rows(b), n));
        cr_assert(lt(u32, 0, n), "%s: an empty batch", what);
        cr_assert(le(u32, n, batch), "%s: a batch of %u rows", what, n);
        cr_assert(eq(int, short_seen, 0), "%s: a batch after a short one", what);
        if (n < batch)
            short_seen = true;
        for (uint32_t i = 0; i < n; i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            cr_assert(ge(i64, ix, 0), "%s: index %lld", what, (long long)ix);
            cr_assert(lt(i64, ix, rows), "%s: index %lld", what, (long long)ix);
            cr_assert(eq(u8, seen[ix], 0), "%s: row %lld twice", what, (long long)ix);
            seen[ix] = 1;
            cr_assert(eq(i64, row_i64(b, "v", i), tq_test_row_value(ix)), "%s: row %lld value",
                      what, (long long)ix);
        }
        total += n;
        batches++;
        tq_batch_destroy(b);
        tq_meta_free(m);
        cr_assert(le(u32, batches, (uint32_t)rows + 1), "%s: the stream does not end", what);
    }
    cr_assert(eq(i64, total, rows), "%s: rows seen before the end", what);
    free(seen);
    return batches;
}

static tq_stream *stream_ok(tq_client *c, const tq_fetch_args_t *a)
{
    tq_stream *s = NULL;
    int rc = tq_stream_open(c, a, &s);
    cr_assert(eq(int, rc, TQ_OK), "stream_open(%s, task %s): %s (%s)", a->partition, a->task,
              tq_status_string(rc), tq_last_error(c));
    cr_assert(ne(ptr, s, NULL));
    return s;
}

STREAM_TEST(s17_stream_sealed, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s17");
    static const char *const fields[] = {"v"};
    put_range(c, part, "v", 0, 50);
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK), "seal: %s", tq_last_error(c));

    /* bad arguments */
    tq_stream *bad = (tq_stream *)(uintptr_t)0x5e60;
    tq_fetch_args_t a = {.partition = part, .task = "s", .fields = fields, .num_fields = 1,
                         .batch_size = 0, .timeout_ms = NEXT_TIMEOUT_MS};
    cr_assert(eq(int, tq_stream_open(c, &a, &bad), TQ_ERR_INVALID), "batch_size 0");
    a.batch_size = 8;
    a.task = NULL;
    cr_assert(eq(int, tq_stream_open(c, &a, &bad), TQ_ERR_INVALID), "no task");
    a.task = "s";
    a.num_fields = 0;
    a.fields = NULL;
    cr_assert(eq(int, tq_stream_open(c, &a, &bad), TQ_ERR_INVALID), "no fields");
    cr_assert(eq(ptr, bad, (tq_stream *)(uintptr_t)0x5e60), "a failed stream_open wrote stream_p");
    a.fields = fields;
    a.num_fields = 1;

    /* 50 rows in batches of 8: 6 of 8 and one of 2; prefetch 0 (one), 1 and 4 */
    for (uint32_t pf = 0; pf <= 4; pf += pf ? 3 : 1) {
        char task[32];
        snprintf(task, sizeof(task), "s_pf%u", pf);
        a.task = task;
        a.prefetch = pf;
        tq_stream *s = stream_ok(c, &a);
        unsigned n = drain(s, c, 50, 8, task);
        cr_assert(eq(u32, n, 7), "prefetch %u: batches", pf);
        tq_stream_close(s);
    }

    /* the task of a drained stream gets TQ_ERR_END from get_meta too */
    get_fails(c, part, "s_pf1", fields, 1, 8, NULL, NULL, 0, TQ_ERR_END, "drained task");
    /* a fresh stream of a drained task ends at once */
    a.task = "s_pf1";
    tq_stream *s = stream_ok(c, &a);
    uint64_t t0 = tq_test_now_ms();
    tq_batch *b = BATCH_SENTINEL;
    tq_meta *m = META_SENTINEL;
    cr_assert(eq(int, tq_stream_next(s, &b, &m), TQ_ERR_END), "drained task, new stream");
    cr_assert(lt(u64, tq_test_now_ms() - t0, 2000), "the end took its time");
    cr_assert(eq(ptr, b, BATCH_SENTINEL));
    cr_assert(eq(ptr, m, META_SENTINEL));
    tq_stream_close(s);

    /* a sealed empty partition: a stream ends at once */
    const char *empty = tq_test_unique("s17_empty");
    cr_assert(eq(int, tq_partition_seal(c, empty), TQ_OK), "seal an unknown partition: %s",
              tq_last_error(c));
    a.partition = empty;
    a.task = "s";
    s = stream_ok(c, &a);
    cr_assert(eq(int, tq_stream_next(s, &b, &m), TQ_ERR_END), "sealed empty partition");
    tq_stream_close(s);

    /* grpo through a stream: whole groups, then the end */
    const char *gpart = tq_test_unique("s17_grpo");
    put_range(c, gpart, "v", 0, 24);
    cr_assert(eq(int, tq_partition_seal(c, gpart), TQ_OK));
    tq_fetch_args_t ga = {.partition = gpart, .task = "g", .fields = fields, .num_fields = 1,
                          .batch_size = 8, .sampler = "grpo",
                          .sampler_args = "{\"n_samples_per_prompt\": 4}",
                          .timeout_ms = NEXT_TIMEOUT_MS, .prefetch = 2};
    s = stream_ok(c, &ga);
    uint8_t groups[6] = {0};
    for (int k = 0; k < 3; k++) {
        int rc = tq_stream_next(s, &b, &m);
        cr_assert(eq(int, rc, TQ_OK), "grpo stream batch %d: %s", k, tq_status_string(rc));
        cr_assert(eq(u32, tq_meta_rows(m), 8));
        assert_whole_groups(m, 4, groups, N_OF(groups), "grpo stream");
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    cr_assert(eq(int, tq_stream_next(s, &b, &m), TQ_ERR_END), "grpo stream end");
    tq_stream_close(s);
}

/* Closing a stream gives the rows it fetched ahead, and never returned, back to the task. */
STREAM_TEST(s17_stream_close_returns_prefetched, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s17c");
    static const char *const fields[] = {"v"};
    put_range(c, part, "v", 0, 40);
    tq_fetch_args_t a = {.partition = part, .task = "t", .fields = fields, .num_fields = 1,
                         .batch_size = 4, .timeout_ms = NEXT_TIMEOUT_MS, .prefetch = 4};
    tq_stream *s = stream_ok(c, &a);
    uint8_t seen[40] = {0};
    for (int k = 0; k < 2; k++) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        int rc = tq_stream_next(s, &b, &m);
        cr_assert(eq(int, rc, TQ_OK), "batch %d: %s", k, tq_status_string(rc));
        cr_assert(eq(u32, tq_meta_rows(m), 4));
        for (uint32_t i = 0; i < 4; i++)
            seen[tq_meta_indexes(m)[i]] = 1;
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    tq_test_sleep_ms(100); /* let the read-ahead happen */
    tq_stream_close(s);
    /* the 32 rows not returned are the task's to take again, right after the close */
    uint8_t *cons = NULL;
    int n = tq_consumption_status(c, part, "t", &cons);
    cr_assert(eq(int, n, 40), "consumption_status: %s", tq_status_string(n));
    char list[512] = "";
    int consumed = 0;
    for (int i = 0; i < n; i++)
        if (cons[i]) {
            consumed++;
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, " %d%s", i, seen[i] ? "" : "*");
        }
    free(cons);
    cr_assert(eq(int, consumed, 8), "after closing a stream that returned 8 rows (prefetch 4), the "
              "task has consumed %d rows:%s (* = fetched ahead, never returned)", consumed, list);
    tq_meta *m = get_ok(c, part, "t", fields, 1, 32, NULL, NULL, 32, 0);
    for (uint32_t i = 0; i < 32; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        cr_assert(eq(u8, seen[ix], 0), "row %lld was returned by the stream and again", (long long)ix);
        seen[ix] = 1;
    }
    tq_meta_free(m);
    get_fails(c, part, "t", fields, 1, 1, NULL, NULL, 0, TQ_ERR_TIMEOUT, "all consumed");
}

/* A stream that starts before any row exists waits (parked: it neither spins nor
 * hammers the controller), gets each batch as rows arrive, and ends by itself
 * after the writer seals the partition. */
STREAM_TEST(s17_stream_waits_for_writer, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("s17w");
    static const char *const fields[] = {"v"};
    enum { ROWS = 100, PER_PUT = 10, DELAY_MS = 1500, GAP_MS = 30 };

    tq_fetch_args_t a = {.partition = part, .task = "w", .fields = fields, .num_fields = 1,
                         .batch_size = 8, .timeout_ms = 20000, .prefetch = 2};
    tq_stream *s = stream_ok(c, &a);
    /* the stream is open on a partition that does not exist yet; give it time to ask */
    tq_test_sleep_ms(100);

    static job_t w;
    char s_rows[16], s_per[16], s_delay[16], s_gap[16];
    snprintf(s_rows, sizeof(s_rows), "%d", ROWS);
    snprintf(s_per, sizeof(s_per), "%d", PER_PUT);
    snprintf(s_delay, sizeof(s_delay), "%d", DELAY_MS);
    snprintf(s_gap, sizeof(s_gap), "%d", GAP_MS);
    job_start(&w, e, "writer", part, "v", "0", s_rows, s_per, s_delay, s_gap, "1", "row", NULL);

    uint64_t t0 = tq_test_now_ms(), cpu0 = tq_test_self_cpu_ms();
    uint64_t ctl0 = e->address ? tq_test_proc_cpu_ms(cluster.controller) : 0;
    tq_batch *b = NULL;
    tq_meta *m = NULL;
    int rc = tq_stream_next(s, &b, &m);
    uint64_t waited = tq_test_now_ms() - t0, cpu = tq_test_self_cpu_ms() - cpu0;
    uint64_t ctl = e->address ? tq_test_proc_cpu_ms(cluster.controller) - ctl0 : 0;
    cr_assert(eq(int, rc, TQ_OK), "first batch: %s (%s)", tq_status_string(rc), tq_last_error(c));
    cr_assert(ge(u64, waited, DELAY_MS - 500), "the first batch came after %llu ms, before any put",
              (unsigned long long)waited);
    cr_assert(lt(u64, waited, DELAY_MS + 2000), "the first batch came %llu ms after the stream asked",
              (unsigned long long)waited);
    /* parked, not polling: the whole wait took little CPU here and in the controller */
    fprintf(stderr, "s17_stream_waits_for_writer (%s): waited %llu ms, CPU %llu ms here, %llu ms "
            "in the controller\n", e->address ? "cluster" : "embedded",
            (unsigned long long)waited, (unsigned long long)cpu, (unsigned long long)ctl);
    cr_assert(lt(u64, cpu, waited / 5), "the waiting stream used %llu ms of CPU in %llu ms",
              (unsigned long long)cpu, (unsigned long long)waited);
    cr_assert(lt(u64, ctl, waited / 5), "the controller used %llu ms of CPU in %llu ms of waiting",
              (unsigned long long)ctl, (unsigned long long)waited);

    /* the rest, each row once, then the end once the writer sealed */
    uint8_t seen[ROWS] = {0};
    int64_t total = 0;
    for (;;) {
        if (rc == TQ_ERR_END)
            break;
        cr_assert(eq(int, rc, TQ_OK), "after %lld rows: %s (%s)", (long long)total,
                  tq_status_string(rc), tq_last_error(c));
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            cr_assert(ge(i64, ix, 0));
            cr_assert(lt(i64, ix, ROWS), "index %lld", (long long)ix);
            cr_assert(eq(u8, seen[ix], 0), "row %lld twice", (long long)ix);
            seen[ix] = 1;
            cr_assert(eq(i64, row_i64(b, "v", i), tq_test_row_value(ix)));
        }
        total += tq_meta_rows(m);
        tq_batch_destroy(b);
        tq_meta_free(m);
        b = NULL;
        m = NULL;
        rc = tq_stream_next(s, &b, &m);
    }
    cr_assert(eq(i64, total, ROWS), "rows before the end");
    tq_stream_close(s);
    cr_assert(eq(int, jobs_wait(&w, 1, tq_test_now_ms() + 10000), 0), "the writer did not finish");
    cr_assert(eq(int, w.rc, 0), "the writer failed with %d", w.rc);
}

/* ---- seal ---- */

STREAM_TEST(seal_semantics, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("seal");
    static const char *const fa[] = {"a"};
    static const char *const fab[] = {"a", "b"};
    put_range(c, part, "a", 0, 10);
    put_range(c, part, "b", 0, 8); /* rows 8, 9 lack b for now */
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK), "seal: %s", tq_last_error(c));

    /* no new rows: neither fresh ones nor at a new explicit index, not even mixed
     * with existing ones (and nothing of such a put is written) */
    int64_t v[2] = {1, 2};
    int rc = put_i64_rc(c, part, "a", 2, NULL, v);
    cr_assert(eq(int, rc, TQ_ERR_INVALID), "new rows after seal: %s", tq_status_string(rc));
    int64_t at10[1] = {10};
    rc = put_i64_rc(c, part, "a", 1, at10, v);
    cr_assert(eq(int, rc, TQ_ERR_INVALID), "row 10 after seal: %s", tq_status_string(rc));
    int64_t mixed[2] = {0, 11};
    int64_t mv[2] = {-5, -6};
    rc = put_i64_rc(c, part, "a", 2, mixed, mv);
    cr_assert(eq(int, rc, TQ_ERR_INVALID), "rows 0 and 11 after seal: %s", tq_status_string(rc));
    /* sealing again is harmless */
    cr_assert(eq(int, tq_partition_seal(c, part), TQ_OK), "second seal: %s", tq_last_error(c));

    /* a final partial batch: 10 rows in batches of 4 give 4, 4, 2, then the end */
    uint8_t seen[10] = {0};
    uint32_t sizes[3] = {4, 4, 2};
    for (int k = 0; k < 3; k++) {
        tq_meta *m = get_ok(c, part, "all", fa, 1, 4, NULL, NULL, sizes[k], 0);
        for (uint32_t i = 0; i < tq_meta_rows(m); i++) {
            int64_t ix = tq_meta_indexes(m)[i];
            cr_assert(lt(i64, ix, 10));
            cr_assert(eq(u8, seen[ix], 0), "row %lld twice", (long long)ix);
            seen[ix] = 1;
        }
        assert_row_values(c, m, "a"); /* row 0 kept its value: the mixed put wrote nothing */
        tq_meta_free(m);
    }
    get_fails(c, part, "all", fa, 1, 4, NULL, NULL, 0, TQ_ERR_END, "after every row");
    get_fails(c, part, "all", fa, 1, 4, NULL, NULL, 1000, TQ_ERR_END, "after every row, waiting");

    /* rows that are live but not ready (no b) hold back the final batch and the end */
    tq_meta *m1 = get_ok(c, part, "ab", fab, 2, 4, NULL, NULL, 4, 0);
    tq_meta *m2 = get_ok(c, part, "ab", fab, 2, 4, NULL, NULL, 4, 0);
    get_fails(c, part, "ab", fab, 2, 4, NULL, NULL, 0, TQ_ERR_TIMEOUT, "rows 8, 9 lack b");
    get_fails(c, part, "ab", fab, 2, 1, NULL, NULL, 0, TQ_ERR_TIMEOUT, "rows 8, 9 lack b (1)");
    /* an overwrite of existing rows still works after the seal: b for 8, 9; a for 0, 1 */
    put_range(c, part, "b", 8, 2);
    int64_t first2[2] = {0, 1}, nv[2] = {1000, 1001};
    put_i64(c, part, "a", 2, first2, nv);
    tq_meta *m3 = get_ok(c, part, "ab", fab, 2, 4, NULL, NULL, 2, 0);
    int64_t *s = sorted_indexes(m3);
    cr_assert(eq(i64, s[0], 8));
    cr_assert(eq(i64, s[1], 9));
    free(s);
    assert_row_values(c, m3, "b");
    get_fails(c, part, "ab", fab, 2, 4, NULL, NULL, 0, TQ_ERR_END, "ab after every row");
    tq_meta_free(m1);
    tq_meta_free(m2);
    tq_meta_free(m3);

    /* the overwrite is visible to a new task */
    tq_meta *m = get_ok(c, part, "new", fa, 1, 10, NULL, NULL, 10, 0);
    tq_batch *b = data_ok(c, m);
    for (uint32_t i = 0; i < 10; i++) {
        int64_t ix = tq_meta_indexes(m)[i];
        int64_t want = ix < 2 ? 1000 + ix : tq_test_row_value(ix);
        cr_assert(eq(i64, row_i64(b, "a", i), want), "row %lld after the overwrite", (long long)ix);
    }
    tq_batch_destroy(b);
    tq_meta_free(m);

    /* reset_consumption of a sealed, drained task: everything again */
    cr_assert(eq(int, tq_reset_consumption(c, part, "all"), TQ_OK), "%s", tq_last_error(c));
    m = get_ok(c, part, "all", fa, 1, 10, NULL, NULL, 10, 0);
    tq_meta_free(m);
    get_fails(c, part, "all", fa, 1, 10, NULL, NULL, 0, TQ_ERR_END, "after the reset, drained");

    /* cleared rows are not waited for: clear 2 of the rows a task has not consumed */
    const char *p2 = tq_test_unique("seal_clear");
    put_range(c, p2, "a", 0, 6);
    cr_assert(eq(int, tq_partition_seal(c, p2), TQ_OK));
    tq_meta *x = get_ok(c, p2, "t", fa, 1, 4, NULL, NULL, 4, 0);
    tq_meta_free(x);
    uint8_t *cons = NULL;
    rc = tq_consumption_status(c, p2, "t", &cons);
    cr_assert(eq(int, rc, 6), "consumption_status: %s", tq_status_string(rc));
    int64_t left[2];
    int nl = 0;
    for (int i = 0; i < 6; i++)
        if (!cons[i])
            left[nl++] = i;
    free(cons);
    cr_assert(eq(int, nl, 2));
    cr_assert(eq(int, tq_clear(c, p2, 2, left), 2), "%s", tq_last_error(c));
    get_fails(c, p2, "t", fa, 1, 4, NULL, NULL, 0, TQ_ERR_END, "the unconsumed rows were cleared");
}

/* ---- production and consumption status ---- */

static int status_produced(tq_client *c, const char *part, size_t nf, const char *const *fields,
                           uint8_t **p)
{
    *p = NULL;
    int rc = tq_production_status(c, part, nf, fields, p);
    cr_assert(ge(int, rc, 0), "production_status(%s, %s%s): %s (%s)", part, fields[0],
              nf > 1 ? ",..." : "", tq_status_string(rc), tq_last_error(c));
    cr_assert(rc == 0 || *p != NULL, "production_status gave no array");
    return rc;
}

static int status_consumed(tq_client *c, const char *part, const char *task, uint8_t **p)
{
    *p = NULL;
    int rc = tq_consumption_status(c, part, task, p);
    cr_assert(ge(int, rc, 0), "consumption_status(%s, %s): %s (%s)", part, task,
              tq_status_string(rc), tq_last_error(c));
    cr_assert(rc == 0 || *p != NULL, "consumption_status gave no array");
    return rc;
}

/* The first n bytes of got are want(i); any further row index has 0. */
static void assert_status(const uint8_t *got, int n, int want_n, uint8_t (*want)(int),
                          const char *what)
{
    cr_assert(eq(int, n, want_n), "%s: number of row indexes", what);
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, got[i], want(i)), "%s: row %d", what, i);
}

static uint8_t all1(int i) { (void)i; return 1; }
static uint8_t all0(int i) { (void)i; return 0; }
static uint8_t below5(int i) { return i < 5; }
static uint8_t below5_not3(int i) { return i < 5 && i != 3; }
static uint8_t not3(int i) { return i != 3; }
static uint8_t below4(int i) { return i < 4; }

STREAM_TEST(status_queries, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("status");
    static const char *const fa[] = {"a"};
    static const char *const fb[] = {"b"};
    static const char *const fab[] = {"a", "b"};
    uint8_t *p = NULL;

    /* an unknown partition: nothing */
    int n = tq_production_status(c, part, 1, fa, &p);
    cr_assert(eq(int, n, 0), "production_status of an unknown partition: %s", tq_status_string(n));
    free(p);
    p = NULL;

    put_range(c, part, "a", 0, 10);
    put_range(c, part, "b", 0, 5);

    n = status_produced(c, part, 1, fa, &p);
    assert_status(p, n, 10, all1, "produced a");
    free(p);
    n = status_produced(c, part, 1, fb, &p);
    assert_status(p, n, 10, below5, "produced b");
    free(p);
    n = status_produced(c, part, 2, fab, &p);
    assert_status(p, n, 10, below5, "produced a,b");
    free(p);
    static const char *const fnone[] = {"nosuch"};
    n = status_produced(c, part, 1, fnone, &p);
    cr_assert(le(int, n, 10), "produced of an unknown field");
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 0), "an unknown field produced for row %d", i);
    free(p);

    /* consumption per task */
    n = status_consumed(c, part, "t1", &p);
    cr_assert(le(int, n, 10));
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 0), "t1 consumed row %d before any get", i);
    free(p);
    tq_meta *m = get_ok(c, part, "t1", fa, 1, 4, NULL, NULL, 4, 0);
    tq_meta_free(m);
    n = status_consumed(c, part, "t1", &p);
    assert_status(p, n, 10, below4, "t1 after a get of 4");
    free(p);
    n = status_consumed(c, part, "t2", &p);
    cr_assert(le(int, n, 10));
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 0), "t2 consumed row %d, t1 did", i);
    free(p);
    /* t2 takes the rows with both fields */
    m = get_ok(c, part, "t2", fab, 2, 5, NULL, NULL, 5, 0);
    tq_meta_free(m);
    n = status_consumed(c, part, "t2", &p);
    assert_status(p, n, 10, below5, "t2 after a get of 5 (a,b)");
    free(p);
    m = get_ok(c, part, "t1", fa, 1, 6, NULL, NULL, 6, 0);
    tq_meta_free(m);
    n = status_consumed(c, part, "t1", &p);
    assert_status(p, n, 10, all1, "t1 after a get of 6 more");
    free(p);

    /* reset of one task */
    cr_assert(eq(int, tq_reset_consumption(c, part, "t1"), TQ_OK), "%s", tq_last_error(c));
    n = status_consumed(c, part, "t1", &p);
    cr_assert(le(int, n, 10));
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 0), "t1 after its reset: row %d", i);
    free(p);
    n = status_consumed(c, part, "t2", &p);
    assert_status(p, n, 10, below5, "t2 after t1's reset");
    free(p);
    /* reset of every task */
    cr_assert(eq(int, tq_reset_consumption(c, part, NULL), TQ_OK), "%s", tq_last_error(c));
    n = status_consumed(c, part, "t2", &p);
    cr_assert(le(int, n, 10));
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 0), "t2 after the reset of all: row %d", i);
    free(p);

    /* a cleared row is not produced */
    int64_t three = 3;
    cr_assert(eq(int, tq_clear(c, part, 1, &three), 1), "%s", tq_last_error(c));
    n = status_produced(c, part, 1, fa, &p);
    assert_status(p, n, 10, not3, "produced a after clearing row 3");
    free(p);
    n = status_produced(c, part, 2, fab, &p);
    assert_status(p, n, 10, below5_not3, "produced a,b after clearing row 3");
    free(p);
    /* b completed for the other rows */
    put_range(c, part, "b", 5, 5);
    n = status_produced(c, part, 2, fab, &p);
    assert_status(p, n, 10, not3, "produced a,b after b for 5..9");
    free(p);
    (void)all0;
}

/* ---- seqlen_balanced ---- */

#define SB_N     4  /* samples per prompt */
#define SB_D     4  /* dp ranks */
#define SB_BATCH 8  /* rows per rank: 2 groups */
#define SB_ROWS  (SB_D * SB_BATCH)

/* Length of key k: group g = k / SB_N of each 32 has total 400 (g % 8 + 1) + 42
 * in the first phase and reversed in the second. */
static int64_t sb_length(int64_t k)
{
    int64_t g = (k / SB_N) % 8, r = k % SB_N;
    if (k >= SB_ROWS)
        g = 7 - g;
    return 100 * (g + 1) + 7 * r;
}

/* Put keys [first, first + SB_ROWS) with field v = key number and tag total_lengths. */
static void sb_put(tq_client *c, const char *part, int64_t first)
{
    char *keys[SB_ROWS], *tags[SB_ROWS];
    int64_t vals[SB_ROWS];
    for (int i = 0; i < SB_ROWS; i++) {
        int64_t k = first + i;
        keys[i] = malloc(32);
        tags[i] = malloc(64);
        snprintf(keys[i], 32, "k%lld", (long long)k);
        snprintf(tags[i], 64, "{\"total_lengths\": %lld}", (long long)sb_length(k));
        vals[i] = k;
    }
    tq_batch *b = batch_new(SB_ROWS);
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, vals), TQ_OK));
    int rc = tq_kv_batch_put(c, part, SB_ROWS, (const char *const *)keys, b,
                             (const char *const *)tags);
    cr_assert(eq(int, rc, TQ_OK), "kv_batch_put: %s (%s)", tq_status_string(rc), tq_last_error(c));
    tq_batch_destroy(b);
    for (int i = 0; i < SB_ROWS; i++) {
        free(keys[i]);
        free(tags[i]);
    }
}

/* One batch_index of seqlen_balanced over 4 ranks (ranks 1 and 3 on c2; with
 * replicas 2, every rank asks twice, from both clients). Checks: every rank has
 * SB_BATCH rows of whole groups, ranks disjoint, together whole groups not seen
 * before (marked in groups_seen), and the rank totals balanced against a naive
 * split of the same groups. */
static void sb_round(const stream_env_t *e, const char *part, int batch_index, int replicas,
                     uint8_t *groups_seen, size_t max_groups)
{
    static const char *const fields[] = {"v"};
    tq_meta *rank[SB_D];
    int64_t total[SB_D] = {0};
    uint8_t this_round[64] = {0};
    int64_t group_total[64] = {0};
    for (int r = 0; r < SB_D; r++) {
        char sargs[160];
        snprintf(sargs, sizeof(sargs),
                 "{\"n_samples_per_prompt\": %d, \"dp_size\": %d, \"dp_rank\": %d, "
                 "\"batch_index\": %d, \"dp_replicas\": %d}",
                 SB_N, SB_D, r, batch_index, replicas);
        tq_client *cr = r % 2 ? e->c2 : e->c;
        rank[r] = get_ok(cr, part, "train", fields, 1, SB_BATCH, "seqlen_balanced", sargs,
                         SB_BATCH, 2000);
        char what[64];
        snprintf(what, sizeof(what), "batch_index %d rank %d", batch_index, r);
        assert_whole_groups(rank[r], SB_N, this_round, N_OF(this_round), what);
        if (replicas == 2) {
            tq_meta *again = get_ok(cr == e->c ? e->c2 : e->c, part, "train", fields, 1, SB_BATCH,
                                    "seqlen_balanced", sargs, SB_BATCH, 0);
            assert_same_rows(rank[r], again, what);
            tq_meta_free(again);
        }
        /* lengths by the key each row holds */
        tq_batch *b = data_ok(cr, rank[r]);
        for (uint32_t i = 0; i < SB_BATCH; i++) {
            int64_t ix = tq_meta_indexes(rank[r])[i], k = row_i64(b, "v", i);
            total[r] += sb_length(k);
            group_total[ix / SB_N] += sb_length(k);
        }
        tq_batch_destroy(b);
    }
    /* disjoint ranks (assert_whole_groups marked each group once in this_round),
     * none seen in an earlier round */
    int ngroups = 0;
    int64_t order[64];
    for (size_t g = 0; g < N_OF(this_round); g++)
        if (this_round[g]) {
            cr_assert(lt(sz, g, max_groups));
            cr_assert(eq(u8, groups_seen[g], 0), "group %zu in two batch indexes", g);
            groups_seen[g] = 1;
            order[ngroups++] = (int64_t)g;
        }
    cr_assert(eq(int, ngroups, SB_D * SB_BATCH / SB_N));
    /* naive: the groups in index order, SB_BATCH / SB_N consecutive ones per rank */
    int64_t naive_min = INT64_MAX, naive_max = 0;
    for (int r = 0; r < SB_D; r++) {
        int64_t t = 0;
        for (int j = 0; j < SB_BATCH / SB_N; j++)
            t += group_total[order[r * (SB_BATCH / SB_N) + j]];
        naive_min = t < naive_min ? t : naive_min;
        naive_max = t > naive_max ? t : naive_max;
    }
    int64_t min = INT64_MAX, max = 0;
    for (int r = 0; r < SB_D; r++) {
        min = total[r] < min ? total[r] : min;
        max = total[r] > max ? total[r] : max;
    }
    fprintf(stderr, "seqlen_balanced batch_index %d: rank totals %lld %lld %lld %lld, spread %lld;"
            " naive spread %lld\n", batch_index, (long long)total[0], (long long)total[1],
            (long long)total[2], (long long)total[3], (long long)(max - min),
            (long long)(naive_max - naive_min));
    cr_assert(lt(i64, 2000, naive_max - naive_min), "the test's naive split should be unbalanced");
    cr_assert(le(i64, max - min, (naive_max - naive_min) / 4),
              "batch_index %d: rank totals spread %lld, a naive split %lld", batch_index,
              (long long)(max - min), (long long)(naive_max - naive_min));
    for (int r = 0; r < SB_D; r++)
        tq_meta_free(rank[r]);
}

STREAM_TEST(seqlen_balanced, 60)
{
    tq_client *c = e->c;
    const char *part = tq_test_unique("seqlen");
    static const char *const fields[] = {"v"};
    uint8_t groups[2 * SB_ROWS / SB_N] = {0};

    sb_put(c, part, 0);
    /* batch_size not whole groups */
    get_fails(c, part, "train", fields, 1, 6, "seqlen_balanced",
              "{\"n_samples_per_prompt\": 4, \"dp_size\": 4, \"dp_rank\": 0, \"batch_index\": 9}",
              0, TQ_ERR_INVALID, "batch_size 6");
    /* too few rows for dp_size x batch_size */
    get_fails(c, part, "train", fields, 1, 16, "seqlen_balanced",
              "{\"n_samples_per_prompt\": 4, \"dp_size\": 4, \"dp_rank\": 0, \"batch_index\": 8}",
              0, TQ_ERR_TIMEOUT, "64 rows wanted, 32 there");

    sb_round(e, part, 0, 1, groups, N_OF(groups));
    sb_put(c, part, SB_ROWS);
    sb_round(e, part, 1, 2, groups, N_OF(groups));
    for (size_t g = 0; g < N_OF(groups); g++)
        cr_assert(eq(u8, groups[g], 1), "group %zu never sampled", g);
}

/* ---- the multi-process pipeline ---- */

#define PIPE_ROWS     10000
#define PIPE_PER_PUT  100
#define PIPE_BATCH    64
#define PIPE_BOUND_MS 120000

typedef struct {
    unsigned batch;
    int64_t  index, a, b;
} seen_row_t;

/* Read a consumer's file. @return the rows; *ended set when it ends with "END". */
static seen_row_t *read_rows(const char *path, size_t *n_p, bool *ended)
{
    FILE *f = fopen(path, "r");
    cr_assert(ne(ptr, f, NULL), "no output %s", path);
    size_t cap = 1024, n = 0;
    seen_row_t *rows = malloc(cap * sizeof(*rows));
    char line[256];
    *ended = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "END", 3) == 0) {
            *ended = true;
            continue;
        }
        cr_assert(eq(int, *ended, 0), "%s: a line after END", path);
        seen_row_t r;
        long long i, a, b;
        cr_assert(eq(int, sscanf(line, "%u %lld %lld %lld", &r.batch, &i, &a, &b), 4),
                  "%s: bad line \"%s\"", path, line);
        r.index = i, r.a = a, r.b = b;
        if (n == cap)
            rows = realloc(rows, (cap *= 2) * sizeof(*rows));
        rows[n++] = r;
    }
    fclose(f);
    *n_p = n;
    return rows;
}

static void pipeline(const stream_env_t *e)
{
    const char *part = tq_test_unique("pipe");
    uint64_t deadline = tq_test_now_ms() + PIPE_BOUND_MS;
    snprintf(job_dir, sizeof(job_dir), "/tmp/tq-stream-XXXXXX");
    cr_assert(ne(ptr, mkdtemp(job_dir), NULL), "mkdtemp: %s", strerror(errno));

    char s_rows[16], s_per[16], s_batch[16], path[4][128];
    snprintf(s_rows, sizeof(s_rows), "%d", PIPE_ROWS);
    snprintf(s_per, sizeof(s_per), "%d", PIPE_PER_PUT);
    snprintf(s_batch, sizeof(s_batch), "%d", PIPE_BATCH);
    static job_t jobs[6];
    /* consumers first: they wait for rows that do not exist yet */
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 2; k++) {
            snprintf(path[2 * r + k], sizeof(path[0]), "%s/rank%d_replica%d", job_dir, r, k);
            char s_rank[8];
            snprintf(s_rank, sizeof(s_rank), "%d", r);
            job_start(&jobs[2 * r + k], e, "consume", part, s_rank, s_batch, path[2 * r + k], NULL);
        }
    /* the second stage, then the first one, which seals after its last put */
    job_start(&jobs[4], e, "stage_b", part, "100", NULL);
    job_start(&jobs[5], e, "writer", part, "a", "0", s_rows, s_per, "0", "0", "1", "ident", NULL);

    int late = jobs_wait(jobs, 6, deadline);
    static const char *const names[6] = {"rank 0 replica 0", "rank 0 replica 1",
                                         "rank 1 replica 0", "rank 1 replica 1", "stage b",
                                         "stage a"};
    for (int i = 0; i < 6; i++)
        if (jobs[i].rc != 0)
            fprintf(stderr, "pipeline: %s ended with %d\n", names[i], jobs[i].rc);
    cr_assert(eq(int, late, 0), "%d jobs still running after %d s", late, PIPE_BOUND_MS / 1000);
    for (int i = 5; i >= 0; i--)
        cr_assert(eq(int, jobs[i].rc, 0), "%s failed with %d", names[i], jobs[i].rc);

    /* every row consumed exactly once per dp group: ranks disjoint, together all */
    uint8_t *seen = calloc(PIPE_ROWS, 1);
    size_t total = 0;
    for (int r = 0; r < 2; r++) {
        size_t n0, n1;
        bool end0, end1;
        seen_row_t *s0 = read_rows(path[2 * r], &n0, &end0);
        seen_row_t *s1 = read_rows(path[2 * r + 1], &n1, &end1);
        cr_assert(end0, "rank %d replica 0: the stream did not end by itself", r);
        cr_assert(end1, "rank %d replica 1: the stream did not end by itself", r);
        cr_assert(eq(sz, n0, n1), "rank %d: replicas saw %zu and %zu rows", r, n0, n1);
        for (size_t i = 0; i < n0; i++) {
            cr_assert(eq(u32, s0[i].batch, s1[i].batch), "rank %d row %zu: batch", r, i);
            cr_assert(eq(i64, s0[i].index, s1[i].index), "rank %d row %zu (batch %u): replicas "
                      "differ", r, i, s0[i].batch);
            int64_t ix = s0[i].index;
            cr_assert(ge(i64, ix, 0));
            cr_assert(lt(i64, ix, PIPE_ROWS), "rank %d: index %lld", r, (long long)ix);
            cr_assert(eq(u8, seen[ix], 0), "row %lld consumed twice (rank %d, batch %u)",
                      (long long)ix, r, s0[i].batch);
            seen[ix] = 1;
            for (int k = 0; k < 2; k++) {
                const seen_row_t *x = k ? &s1[i] : &s0[i];
                cr_assert(eq(i64, x->a, ix), "rank %d replica %d row %lld: a", r, k, (long long)ix);
                cr_assert(eq(i64, x->b, 2 * ix), "rank %d replica %d row %lld: b", r, k,
                          (long long)ix);
            }
        }
        fprintf(stderr, "pipeline (%s): rank %d consumed %zu rows in %u batches\n",
                e->address ? "processes" : "threads", r, n0, n0 ? s0[n0 - 1].batch + 1 : 0);
        total += n0;
        free(s0);
        free(s1);
    }
    for (int64_t i = 0; i < PIPE_ROWS; i++)
        cr_assert(eq(u8, seen[i], 1), "row %lld never consumed", (long long)i);
    cr_assert(eq(sz, total, (size_t)PIPE_ROWS));
    free(seen);

    /* the status agrees: every row produced with a and b, consumed by both tasks */
    static const char *const fab[] = {"a", "b"};
    uint8_t *p = NULL;
    int n = status_produced(e->c, part, 2, fab, &p);
    cr_assert(eq(int, n, PIPE_ROWS));
    for (int i = 0; i < n; i++)
        cr_assert(eq(u8, p[i], 1), "row %d: a,b not produced", i);
    free(p);
    static const char *const tasks[] = {"stage_b", "train"};
    for (int t = 0; t < 2; t++) {
        n = status_consumed(e->c, part, tasks[t], &p);
        cr_assert(eq(int, n, PIPE_ROWS));
        for (int i = 0; i < n; i++)
            cr_assert(eq(u8, p[i], 1), "row %d not consumed by %s", i, tasks[t]);
        free(p);
    }
    remove_job_dir();
}

/* Processes: two producer stages, 2 dp ranks x 2 replicas of consumers, on a real cluster. */
Test(stream_cluster, pipeline_processes, .init = setup_cluster, .fini = teardown,
     .timeout = 180)
{
    pipeline(&env);
    finish_cluster();
}

/* The same pipeline as threads sharing the embedded client: five streams (ten
 * fetch slots) of one client, each fetch parked in the controller until its rows
 * are ready. */
Test(stream_embedded, pipeline_threads, .init = setup_embedded, .fini = teardown,
     .timeout = 180)
{
    pipeline(&env);
}
