/* test_stress.c: 64 worker processes against one cluster for a bounded time: puts, gets,
 * clears and key-value traffic, every row checked, pools running full; afterwards the
 * pools are as empty as before, the controller's memory is bounded and every daemon
 * exits cleanly. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"

#ifndef TQ_STRESS_WORKER
#error "TQ_STRESS_WORKER must be the path of the stress_worker program"
#endif

extern char **environ;

/*
 * Two storage units of STRESS_POOL each, and STRESS_WORKERS workers (stress_worker.c:
 * what they do and check is described there), each on a partition of its own, each
 * keeping up to a random STRESS_HOLD_MIN_KIB..STRESS_HOLD_MAX_KIB of rows it has read
 * before clearing them: together they want more than the pools hold, so the pools
 * fill, puts are held back (parked, or answered TQ_ERR_NOSPACE), and the workers
 * clear to make room and hold less for a while.
 *
 * TQ_STRESS_SECONDS sets how long the workers run (default STRESS_DEFAULT_SECONDS,
 * less under sanitizers, at most STRESS_MAX_SECONDS to stay inside the timeouts);
 * TQ_STRESS_SEED the seed every worker's seed derives from (printed: a run with it
 * puts the same rows and makes the same choices, up to what timing decides).
 */
#define STRESS_WORKERS          64
#define STRESS_UNITS            2
#define STRESS_POOL             "64M"
#define STRESS_HOLD_MIN_KIB     512
#define STRESS_HOLD_MAX_KIB     4096
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRESS_SANITIZED 1
#endif
#endif
#ifdef STRESS_SANITIZED
#define STRESS_DEFAULT_SECONDS  20 /* each operation costs several times more */
/* ASan keeps freed memory in quarantine (256 MiB by default) before reusing it */
#define STRESS_RSS_GROWTH_KB    ((64 + 256) * 1024)
#else
#define STRESS_DEFAULT_SECONDS  60
#define STRESS_RSS_GROWTH_KB    (64 * 1024)
#endif
#define STRESS_MAX_SECONDS      200
#define STRESS_GRACE_MS         30000 /* past the duration, for a worker to finish and exit */
#define STRESS_SETTLE_MS        5000  /* for the pools to drain: releases trail the clears */
#define STRESS_POLL_MS          50
#define STRESS_SAMPLE_MS        500   /* controller RSS and pool use, during the run */
#define STRESS_MAX_DUMPS        8     /* failed workers whose stderr is shown */
#define STRESS_PRESSURE_MIN_SECONDS 10 /* runs this long must have filled the pools */

/* A worker's line of counts; summed as an array of its uint64_t. */
typedef struct {
    uint64_t puts, rows_put, rows_verified, gets, clears, rows_cleared;
    uint64_t kv_puts, kv_gets, kv_verified, kv_clears, kv_lists, nospace, put_waits;
    uint64_t mismatches, errors;
} counts_t;
_Static_assert(sizeof(counts_t) == 15 * sizeof(uint64_t), "counts_t is 15 uint64_t");

/* Time in one library call, over the calls of a worker or of all of them (us). */
#define STRESS_MAX_OPS 16
typedef struct {
    char     name[16];
    uint64_t calls, total_us, max_us;
} call_time_t;

typedef struct {
    pid_t       pid;
    int         status;   /* exit status, 128 + signal, -1 while running */
    bool        late;     /* killed: not done within the duration plus the grace */
    bool        reported; /* its line of counts was read */
    uint64_t    exit_ms;  /* since the start, when it exited by itself */
    counts_t    n;
    call_time_t calls[STRESS_MAX_OPS];
    unsigned    num_calls;
} worker_t;

static struct {
    tq_test_cluster cl;
    tq_client      *c;
    worker_t        workers[STRESS_WORKERS];
    char            dir[64]; /* the workers' output */
} s;

/* ---- the workers ---- */

static void worker_path(unsigned i, const char *ext, char *buf, size_t size)
{
    snprintf(buf, size, "%s/w%02u.%s", s.dir, i, ext);
}

/* posix_spawn the worker i, output to its files, inheriting no descriptor. */
static pid_t worker_spawn(unsigned i, uint64_t seed, int seconds, unsigned hold_kib)
{
    char out[128], err[128], partition[64], s_seed[32], s_secs[16], s_hold[16], s_parent[16];
    worker_path(i, "out", out, sizeof(out));
    worker_path(i, "err", err, sizeof(err));
    snprintf(partition, sizeof(partition), "stress_%ld_w%02u", (long)getpid(), i);
    snprintf(s_seed, sizeof(s_seed), "0x%016" PRIx64, seed);
    snprintf(s_secs, sizeof(s_secs), "%d", seconds);
    snprintf(s_hold, sizeof(s_hold), "%u", hold_kib);
    snprintf(s_parent, sizeof(s_parent), "%ld", (long)getpid());
    char *argv[] = {TQ_STRESS_WORKER, s.cl.address, partition, s_seed, s_secs, s_hold,
                    s_parent, NULL};

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    /* undo what a test runner may have blocked or ignored */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, TQ_STRESS_WORKER, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        fprintf(stderr, "stress: posix_spawn %s: %s\n", TQ_STRESS_WORKER, strerror(rc));
        return -1;
    }
    return pid;
}

/* Parse "name=calls,total_us,max_us ..." into w->calls. */
static void parse_calls(worker_t *w, char *line)
{
    char *save = NULL;
    for (char *tok = strtok_r(line, " \n", &save); tok != NULL && w->num_calls < STRESS_MAX_OPS;
         tok = strtok_r(NULL, " \n", &save)) {
        call_time_t *t = &w->calls[w->num_calls];
        if (sscanf(tok, "%15[a-z_]=%" SCNu64 ",%" SCNu64 ",%" SCNu64, t->name, &t->calls,
                   &t->total_us, &t->max_us) == 4)
            w->num_calls++;
    }
}

/* Read the worker's line of counts (and of call times). @return true when there was one. */
static bool worker_counts(unsigned i, counts_t *n)
{
    char path[128], line[1024];
    worker_path(i, "out", path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool found = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "stress_worker_calls:", 20) == 0) {
            parse_calls(&s.workers[i], line + 20);
            continue;
        }
        found = found || sscanf(line,
                       "stress_worker: puts=%" SCNu64 " rows_put=%" SCNu64
                       " rows_verified=%" SCNu64 " gets=%" SCNu64 " clears=%" SCNu64
                       " rows_cleared=%" SCNu64 " kv_puts=%" SCNu64 " kv_gets=%" SCNu64
                       " kv_verified=%" SCNu64 " kv_clears=%" SCNu64 " kv_lists=%" SCNu64
                       " nospace=%" SCNu64 " put_waits=%" SCNu64 " mismatches=%" SCNu64
                       " errors=%" SCNu64,
                       &n->puts, &n->rows_put, &n->rows_verified, &n->gets, &n->clears,
                       &n->rows_cleared, &n->kv_puts, &n->kv_gets, &n->kv_verified,
                       &n->kv_clears, &n->kv_lists, &n->nospace, &n->put_waits,
                       &n->mismatches, &n->errors) == 15;
    }
    fclose(f);
    return found;
}

/* Show the start of a failed worker's stderr. */
static void worker_dump(unsigned i)
{
    char path[128], buf[2048];
    worker_path(i, "err", path, sizeof(path));
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    fprintf(stderr, "---- worker %u (status %d%s) stderr ----\n%s%s---- end ----\n", i,
            s.workers[i].status, s.workers[i].late ? ", killed late" : "", buf,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
}

/* SIGKILL and reap every worker still running. */
static void workers_kill(void)
{
    for (unsigned i = 0; i < STRESS_WORKERS; i++) {
        worker_t *w = &s.workers[i];
        if (w->pid <= 0 || w->status >= 0)
            continue;
        kill(w->pid, SIGKILL);
        w->status = tq_test_reap(w->pid, TQ_TEST_STOP_TIMEOUT_MS);
        w->late = true;
    }
}

static void remove_dir(void)
{
    if (s.dir[0] == '\0')
        return;
    DIR *d = opendir(s.dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof(path), "%s/%s", s.dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(s.dir);
    s.dir[0] = '\0';
}

/* ---- what the cluster reports ---- */

/* Bytes used and held over every unit, and how many units are alive.
 * capacity_p may be NULL. @return 0, or -1. */
static int pool_used(uint64_t *used_p, uint64_t *capacity_p, unsigned *alive_p)
{
    tq_unit_info_t *units = NULL;
    int n = tq_units(s.c, &units);
    if (n < 0) {
        fprintf(stderr, "stress: tq_units: %s (%s)\n", tq_status_string(n), tq_last_error(s.c));
        return -1;
    }
    uint64_t used = 0, capacity = 0;
    unsigned alive = 0;
    for (int i = 0; i < n; i++) {
        used += units[i].used;
        capacity += units[i].capacity;
        alive += units[i].alive != 0;
    }
    free(units);
    *used_p = used;
    if (capacity_p != NULL)
        *capacity_p = capacity;
    *alive_p = alive;
    return 0;
}

static int stress_seconds(void)
{
    const char *v = getenv("TQ_STRESS_SECONDS");
    return v != NULL && v[0] != '\0' ? atoi(v) : STRESS_DEFAULT_SECONDS;
}

static uint64_t stress_seed(void)
{
    const char *v = getenv("TQ_STRESS_SEED");
    if (v != NULL && v[0] != '\0')
        return strtoull(v, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Whatever a failed run left behind (Criterion ignores asserts here). */
static void stress_teardown(void)
{
    workers_kill();
    tq_close(s.c);
    s.c = NULL;
    tq_test_cluster_stop(&s.cl);
    if (getenv("TQ_TEST_KEEP_LOGS") == NULL)
        remove_dir();
    else if (s.dir[0] != '\0')
        fprintf(stderr, "stress: worker output kept in %s\n", s.dir);
}

Test(stress, workers_64, .fini = stress_teardown, .timeout = STRESS_MAX_SECONDS + 90)
{
    int seconds = stress_seconds();
    cr_assert(seconds >= 1 && seconds <= STRESS_MAX_SECONDS,
              "TQ_STRESS_SECONDS=%d: want 1 to %d (the test and ctest timeouts allow no more)",
              seconds, STRESS_MAX_SECONDS);
    uint64_t seed = stress_seed();
    fprintf(stderr, "stress: %d workers for %d s, TQ_STRESS_SEED=0x%016" PRIx64 "\n",
            STRESS_WORKERS, seconds, seed);

    cr_assert(eq(int, tq_test_cluster_start(&s.cl, STRESS_UNITS, STRESS_POOL), 0),
              "cannot start tq-controller and %d tq-storage (see stderr)", STRESS_UNITS);
    int rc = tq_open(s.cl.address, &s.c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s (%s)", s.cl.address, tq_status_string(rc),
              tq_last_error(NULL));
    uint64_t used_start = 0, capacity = 0;
    unsigned alive = 0;
    cr_assert(eq(int, pool_used(&used_start, &capacity, &alive), 0));
    cr_assert(eq(u32, alive, STRESS_UNITS), "live units before the run");
    long rss_start = tq_test_proc_rss_kb(s.cl.controller), rss_peak = rss_start;
    cr_assert(rss_start > 0, "no VmRSS for the controller, pid %ld", (long)s.cl.controller);

    snprintf(s.dir, sizeof(s.dir), "/tmp/tq-stress-XXXXXX");
    cr_assert(ne(ptr, mkdtemp(s.dir), NULL), "mkdtemp: %s", strerror(errno));
    uint64_t t0 = tq_test_now_ms();
    for (unsigned i = 0; i < STRESS_WORKERS; i++) {
        uint64_t wseed = mix(seed ^ (uint64_t)i * 0x632be59bd9b4e019ull);
        unsigned hold = STRESS_HOLD_MIN_KIB +
                        (unsigned)(mix(wseed) % (STRESS_HOLD_MAX_KIB - STRESS_HOLD_MIN_KIB + 1));
        s.workers[i] = (worker_t){.pid = worker_spawn(i, wseed, seconds, hold), .status = -1};
        cr_assert(s.workers[i].pid > 0, "cannot start worker %u", i);
    }

    /* wait for every worker, each within the duration plus the grace; meanwhile watch
     * the controller's memory and how full the pools are */
    uint64_t deadline = t0 + (uint64_t)seconds * 1000u + STRESS_GRACE_MS, next_sample = 0;
    uint64_t used_peak = 0;
    unsigned samples = 0, samples_full = 0;
    unsigned running = STRESS_WORKERS;
    while (running > 0 && tq_test_now_ms() < deadline) {
        for (unsigned i = 0; i < STRESS_WORKERS; i++) {
            worker_t *w = &s.workers[i];
            int status;
            if (w->status >= 0 || waitpid(w->pid, &status, WNOHANG) != w->pid)
                continue;
            w->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            w->exit_ms = tq_test_now_ms() - t0;
            running--;
        }
        if (tq_test_now_ms() >= next_sample) {
            long kb = tq_test_proc_rss_kb(s.cl.controller);
            rss_peak = kb > rss_peak ? kb : rss_peak;
            uint64_t used;
            unsigned up;
            if (running > 0 && pool_used(&used, NULL, &up) == 0) {
                used_peak = used > used_peak ? used : used_peak;
                samples++;
                samples_full += used * 10 >= capacity * 9;
            }
            next_sample = tq_test_now_ms() + STRESS_SAMPLE_MS;
        }
        tq_test_sleep_ms(STRESS_POLL_MS);
    }
    workers_kill();

    counts_t sum = {0};
    unsigned late = 0, failed = 0, silent = 0, idle = 0, dumped = 0;
    uint64_t last_exit_ms = 0;
    for (unsigned i = 0; i < STRESS_WORKERS; i++) {
        worker_t *w = &s.workers[i];
        w->reported = worker_counts(i, &w->n);
        late += w->late;
        failed += w->status != 0;
        silent += !w->reported;
        idle += w->reported && w->n.rows_verified == 0;
        last_exit_ms = w->exit_ms > last_exit_ms ? w->exit_ms : last_exit_ms;
        const uint64_t *from = (const uint64_t *)&w->n;
        uint64_t *to = (uint64_t *)&sum;
        for (size_t k = 0; k < sizeof(counts_t) / sizeof(uint64_t); k++)
            to[k] += from[k];
        if ((w->status != 0 || !w->reported || w->n.mismatches || w->n.errors) &&
            dumped++ < STRESS_MAX_DUMPS)
            worker_dump(i);
    }

    /* clears are answered at once, but pins are released after the reply: let them land */
    uint64_t used_end = UINT64_MAX;
    unsigned alive_end = 0;
    uint64_t settle_deadline = tq_test_now_ms() + STRESS_SETTLE_MS;
    for (;;) {
        if (pool_used(&used_end, NULL, &alive_end) != 0)
            used_end = UINT64_MAX;
        if (used_end == used_start || tq_test_now_ms() >= settle_deadline)
            break;
        tq_test_sleep_ms(STRESS_POLL_MS);
    }
    long rss_end = tq_test_proc_rss_kb(s.cl.controller);
    rss_peak = rss_end > rss_peak ? rss_end : rss_peak;

    /* the totals, on one line to quote */
    uint64_t kv_ops = sum.kv_puts + sum.kv_gets + sum.kv_clears + sum.kv_lists;
    fprintf(stderr, "stress: %d workers, %d s (the last exited after %.1f s): ", STRESS_WORKERS,
            seconds, (double)last_exit_ms / 1000.0);
    fprintf(stderr, "%" PRIu64 " puts (%" PRIu64 " rows), %" PRIu64 " gets, %" PRIu64
            " rows verified, %" PRIu64 " clears (%" PRIu64 " rows), ", sum.puts, sum.rows_put,
            sum.gets, sum.rows_verified, sum.clears, sum.rows_cleared);
    fprintf(stderr, "%" PRIu64 " kv ops (%" PRIu64 " puts, %" PRIu64 " gets, %" PRIu64
            " clears, %" PRIu64 " lists; %" PRIu64 " values verified), ", kv_ops, sum.kv_puts,
            sum.kv_gets, sum.kv_clears, sum.kv_lists, sum.kv_verified);
    fprintf(stderr, "%" PRIu64 " nospace retries, %" PRIu64 " puts held back by full pools; %"
            PRIu64 " mismatches, %" PRIu64 " errors; ", sum.nospace, sum.put_waits,
            sum.mismatches, sum.errors);
    fprintf(stderr, "pool used %" PRIu64 " -> %" PRIu64 " bytes; controller RSS %ld -> %ld kB "
            "(peak %ld kB)\n", used_start, used_end, rss_start, rss_end, rss_peak);
    fprintf(stderr, "stress: pools: %.1f of %.1f MiB used at the peak, at least 90%% full in %u "
            "of %u samples\n", (double)used_peak / 1048576.0, (double)capacity / 1048576.0,
            samples_full, samples);

    /* where the workers' time went, call by call */
    call_time_t calls[STRESS_MAX_OPS];
    unsigned num_calls = 0;
    for (unsigned i = 0; i < STRESS_WORKERS; i++)
        for (unsigned k = 0; k < s.workers[i].num_calls; k++) {
            const call_time_t *t = &s.workers[i].calls[k];
            unsigned j = 0;
            while (j < num_calls && strcmp(calls[j].name, t->name) != 0)
                j++;
            if (j == num_calls) {
                if (num_calls == STRESS_MAX_OPS)
                    continue;
                calls[num_calls++] = (call_time_t){.calls = 0};
                memcpy(calls[j].name, t->name, sizeof(calls[j].name));
            }
            calls[j].calls += t->calls;
            calls[j].total_us += t->total_us;
            calls[j].max_us = t->max_us > calls[j].max_us ? t->max_us : calls[j].max_us;
        }
    fprintf(stderr, "stress: library calls (count, mean ms, max ms):");
    for (unsigned j = 0; j < num_calls; j++)
        fprintf(stderr, "%s %s %" PRIu64 " %.1f %.1f", j ? ";" : "", calls[j].name,
                calls[j].calls,
                calls[j].calls ? (double)calls[j].total_us / 1000.0 / (double)calls[j].calls : 0.0,
                (double)calls[j].max_us / 1000.0);
    fprintf(stderr, "\n");

    cr_expect(eq(u32, late, 0), "workers still running %d s after the end: killed",
              STRESS_GRACE_MS / 1000);
    cr_expect(eq(u32, failed, 0), "workers that did not exit with status 0");
    cr_expect(eq(u32, silent, 0), "workers that printed no line of counts");
    cr_expect(eq(u64, sum.mismatches, 0), "rows or values read back wrong (see stderr)");
    cr_expect(eq(u64, sum.errors, 0), "unexpected errors (see stderr)");
    cr_expect(eq(u32, idle, 0), "workers that verified no row at all");
    cr_expect(lt(u64, 0, kv_ops), "no key-value operation at all");
    cr_expect(eq(u64, sum.rows_cleared, sum.rows_put), "rows cleared, of the rows put");
    cr_expect(seconds < STRESS_PRESSURE_MIN_SECONDS || samples_full > 0 ||
                  sum.nospace + sum.put_waits > 0,
              "in %d s the pools never ran full: the run did not test what it is for", seconds);
    cr_expect(eq(u64, used_end, used_start),
              "pool bytes used after every worker cleared all it held, %d ms later",
              STRESS_SETTLE_MS);
    cr_expect(eq(u32, alive_end, STRESS_UNITS), "live units after the run");
    cr_expect(rss_end > 0 && rss_end < rss_start + STRESS_RSS_GROWTH_KB,
              "controller RSS %ld kB after the run, %ld kB before: want less than %d kB more",
              rss_end, rss_start, STRESS_RSS_GROWTH_KB);
    cr_expect(tq_test_cluster_controller_alive(&s.cl), "the controller died");

    tq_close(s.c);
    s.c = NULL;
    cr_assert(eq(int, tq_test_cluster_stop(&s.cl), 0),
              "a daemon did not exit cleanly on SIGTERM (see stderr)");
}
