/* clients.c: tq-rdma-bench's clients: one, several threads, or worker processes started together. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "util/common.h"

#define BENCH_MAX_CLIENTS 256
#define JOB_TIMEOUT_MS    (20 * 60 * 1000) /* bound on a worker's whole job */
#define RESULT_MAGIC      0x74716272u      /* "tqbr" */

/* Threads of one process meet here; a thread that failed before it was ready
 * "leaves", and the others then give up instead of waiting for it. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t  changed;
    unsigned        total, arrived, left;
} group_t;

struct bench_client {
    group_t *group;  /* threads */
    bool     arrived;
    int      go_fd;  /* worker processes: "g" comes from the parent here... */
    int      res_fd; /* ...and "r" and the samples go to it here */
};

int bench_read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = tq__now_ms() + (uint64_t)timeout_ms;
    size_t got = 0;
    while (got < n) {
        uint64_t now = tq__now_ms();
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r == 0)
            continue; /* the deadline check above reports it */
        ssize_t k = r < 0 ? -1 : read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            return 1;
        got += (size_t)k;
    }
    return 0;
}

int bench_write_full(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        done += (size_t)k;
    }
    return 0;
}

/* Not a fork: forking a process whose transport and controller threads are
 * running is unsafe. Only the child's ends of the pipes cross the exec. */
int bench_spawn(const char *role, const char *const *args, int *to_p, int *from_p, pid_t *pid_p)
{
    int to[2], from[2];
    if (pipe(to) != 0)
        return -1;
    if (pipe(from) != 0) {
        close(to[0]), close(to[1]);
        return -1;
    }
    fcntl(to[1], F_SETFD, FD_CLOEXEC);
    fcntl(from[0], F_SETFD, FD_CLOEXEC);
    char fds[32];
    snprintf(fds, sizeof(fds), "%d,%d", to[0], from[1]);
    const char *argv[40] = {"tq-rdma-bench", role, fds};
    size_t n = 3;
    for (; args[n - 3] != NULL && n + 1 < ARRAY_SIZE(argv); n++)
        argv[n] = args[n - 3];
    argv[n] = NULL;
    extern char **environ;
    int rc = posix_spawn(pid_p, "/proc/self/exe", NULL, NULL, (char *const *)argv, environ);
    close(to[0]);
    close(from[1]);
    if (rc != 0) {
        close(to[1]), close(from[0]);
        errno = rc;
        return -1;
    }
    *to_p = to[1];
    *from_p = from[0];
    return 0;
}

int bench_reap(pid_t pid, bool kill_now)
{
    int status = -1;
    uint64_t deadline = tq__now_ms() + BENCH_PIPE_TIMEOUT_MS;
    if (kill_now)
        kill(pid, SIGKILL);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return status;
        if (tq__now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        usleep(1000);
    }
}

int bench_ready(const bench_job_t *job)
{
    bench_client_t *me = job->peer;
    if (me == NULL)
        return 0;
    if (me->group != NULL) {
        group_t *g = me->group;
        pthread_mutex_lock(&g->lock);
        me->arrived = true;
        g->arrived++;
        pthread_cond_broadcast(&g->changed);
        while (g->arrived + g->left < g->total)
            pthread_cond_wait(&g->changed, &g->lock);
        bool all = g->left == 0;
        pthread_mutex_unlock(&g->lock);
        if (!all)
            fprintf(stderr, "tq-rdma-bench: another client failed; client %u stops\n",
                    job->client_id);
        return all ? 0 : 1;
    }
    char go;
    if (bench_write_full(me->res_fd, "r", 1) != 0 ||
        bench_read_full(me->go_fd, &go, 1, BENCH_START_TIMEOUT_MS) != 0 || go != 'g') {
        fprintf(stderr, "tq-rdma-bench: client %u: no start signal from the bench\n",
                job->client_id);
        return 1;
    }
    return 0;
}

/* Merge sample i of every client into results[i]. */
static int merge_all(const bench_job_t *job, bench_sample_t (*samples)[BENCH_MAX_SAMPLES],
                     const unsigned *num, unsigned clients, bench_result_t *results,
                     unsigned *num_p)
{
    for (unsigned k = 1; k < clients; k++)
        if (num[k] != num[0]) {
            fprintf(stderr, "tq-rdma-bench: clients measured different operations\n");
            return 1;
        }
    for (unsigned i = 0; i < num[0]; i++) {
        const bench_sample_t *per_client[BENCH_MAX_CLIENTS];
        for (unsigned k = 0; k < clients; k++)
            per_client[k] = &samples[k][i];
        bench_merge(job, per_client, clients, &results[i]);
    }
    *num_p = num[0];
    return 0;
}

static bench_mode_fn mode_fn(bench_mode_t m)
{
    static const bench_mode_fn fns[MODE_COUNT] = {
        [MODE_PUT] = bench_put,         [MODE_GET] = bench_get,
        [MODE_KV] = bench_kv,           [MODE_KV_NB] = bench_kv_nb,
        [MODE_LATENCY] = bench_latency, [MODE_META] = bench_meta,
        [MODE_PIPELINE] = bench_pipeline, [MODE_WAKEUP] = bench_wakeup,
    };
    return fns[m];
}

/* ---- threads ---- */

typedef struct {
    tq_client     *c;
    bench_job_t    job;
    bench_client_t me;
    bench_sample_t samples[BENCH_MAX_SAMPLES];
    unsigned       num;
    int            err;
} thread_arg_t;

static void *client_thread(void *arg)
{
    thread_arg_t *t = arg;
    t->err = mode_fn(t->job.mode)(t->c, &t->job, t->samples, &t->num);
    group_t *g = t->me.group;
    pthread_mutex_lock(&g->lock);
    if (!t->me.arrived) { /* failed before it was ready: free the others */
        g->left++;
        pthread_cond_broadcast(&g->changed);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

static int run_threads(tq_client *c, const bench_job_t *job, bench_result_t *results,
                       unsigned *num_p)
{
    unsigned n = job->clients, started = 0;
    thread_arg_t *t = calloc(n, sizeof(*t));
    pthread_t *tids = calloc(n, sizeof(*tids));
    group_t g = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER,
                 .total = n};
    int err = t == NULL || tids == NULL ? bench_out_of_memory() : 0;
    for (; err == 0 && started < n; started++) {
        t[started] = (thread_arg_t){.c = c, .job = *job, .me = {.group = &g, .go_fd = -1,
                                                                 .res_fd = -1}};
        t[started].job.client_id = started;
        t[started].job.peer = &t[started].me;
        t[started].job.progress = job->progress && started == 0;
        if (pthread_create(&tids[started], NULL, client_thread, &t[started]) != 0) {
            err = bench_out_of_memory();
            pthread_mutex_lock(&g.lock);
            g.left += n - started; /* those never started will never arrive */
            pthread_cond_broadcast(&g.changed);
            pthread_mutex_unlock(&g.lock);
            break;
        }
    }
    for (unsigned k = 0; k < started; k++) {
        pthread_join(tids[k], NULL);
        if (t[k].err != 0)
            err = 1;
    }
    if (err == 0) {
        bench_sample_t(*samples)[BENCH_MAX_SAMPLES] = calloc(n, sizeof(*samples));
        unsigned *num = calloc(n, sizeof(*num));
        err = samples == NULL || num == NULL ? bench_out_of_memory() : 0;
        for (unsigned k = 0; err == 0 && k < n; k++) {
            memcpy(samples[k], t[k].samples, sizeof(t[k].samples));
            num[k] = t[k].num;
        }
        if (err == 0)
            err = merge_all(job, samples, num, n, results, num_p);
        free(samples);
        free(num);
    }
    for (unsigned k = 0; t != NULL && k < started; k++)
        for (unsigned i = 0; i < BENCH_MAX_SAMPLES; i++)
            bench_sample_free(&t[k].samples[i]);
    free(t);
    free(tids);
    return err;
}

/* ---- worker processes ---- */

/* The samples, as a worker sends them: a header, then each sample and its times. */
typedef struct {
    uint32_t magic, err, num, pad;
} result_hdr_t;

typedef struct {
    char     op[24];
    uint64_t bytes, rows, wall_ns;
    uint32_t calls, pad;
} result_rec_t;

int bench_worker(tq_client *c, bench_job_t *job, int go_fd, int res_fd)
{
    bench_client_t me = {.go_fd = go_fd, .res_fd = res_fd};
    bench_sample_t s[BENCH_MAX_SAMPLES] = {0};
    unsigned num = 0;
    job->peer = &me;
    job->progress = false;
    int err = mode_fn(job->mode)(c, job, s, &num);
    result_hdr_t h = {.magic = RESULT_MAGIC, .err = (uint32_t)err, .num = err ? 0 : num};
    int werr = bench_write_full(res_fd, &h, sizeof(h));
    for (unsigned i = 0; i < h.num && werr == 0; i++) {
        result_rec_t r = {.bytes = s[i].bytes, .rows = s[i].rows, .wall_ns = s[i].wall_ns,
                          .calls = s[i].calls};
        memcpy(r.op, s[i].op, sizeof(r.op));
        werr = bench_write_full(res_fd, &r, sizeof(r));
        if (werr == 0)
            werr = bench_write_full(res_fd, s[i].call_ns, s[i].calls * sizeof(uint64_t));
    }
    for (unsigned i = 0; i < BENCH_MAX_SAMPLES; i++)
        bench_sample_free(&s[i]);
    return err != 0 || werr != 0;
}

/* Read worker k's samples. @return 0, or 1 after a message. */
static int read_samples(unsigned k, int fd, bench_sample_t *s, unsigned *num_p)
{
    result_hdr_t h;
    int r = bench_read_full(fd, &h, sizeof(h), JOB_TIMEOUT_MS);
    if (r == 0 && h.magic == RESULT_MAGIC && h.err != 0)
        return 1; /* it said why on its stderr */
    if (r != 0 || h.magic != RESULT_MAGIC || h.num > BENCH_MAX_SAMPLES)
        goto bad;
    for (unsigned i = 0; i < h.num; i++) {
        result_rec_t rec;
        if (bench_read_full(fd, &rec, sizeof(rec), BENCH_PIPE_TIMEOUT_MS) != 0 ||
            rec.calls > 100000000u)
            goto bad;
        rec.op[sizeof(rec.op) - 1] = '\0';
        if (bench_samples_alloc(&s[i], (const char *const[]){rec.op, NULL}, rec.calls,
                                &(unsigned){0}) != 0)
            return 1;
        s[i].bytes = rec.bytes, s[i].rows = rec.rows, s[i].wall_ns = rec.wall_ns;
        s[i].calls = rec.calls;
        if (bench_read_full(fd, s[i].call_ns, rec.calls * sizeof(uint64_t),
                            BENCH_PIPE_TIMEOUT_MS) != 0)
            goto bad;
    }
    *num_p = h.num;
    return 0;
bad:
    fprintf(stderr, "tq-rdma-bench: client %u sent no results%s\n", k,
            r == 1 ? " (it exited; see its message above)" : "");
    return 1;
}

/* The arguments a worker needs to run job as client k; text holds their values. */
static void worker_args(const bench_job_t *job, unsigned k, char text[][24], const char **args)
{
    static const char *const flags[] = {"--client-id", "--mode", "--rows", "--fields",
                                        "--field-bytes", "--iters", "--warmup", "--inflight",
                                        "--profile", "--dtype"};
    snprintf(text[0], 24, "%u", k);
    snprintf(text[1], 24, "%s", bench_mode_name(job->mode));
    snprintf(text[2], 24, "%u", job->rows);
    snprintf(text[3], 24, "%u", job->fields);
    snprintf(text[4], 24, "%llu", (unsigned long long)job->field_bytes);
    snprintf(text[5], 24, "%u", job->iters);
    snprintf(text[6], 24, "%u", job->warmup);
    snprintf(text[7], 24, "%u", job->inflight);
    snprintf(text[8], 24, "%s", job->profile == PROFILE_COMPLEX ? "complex" : "simple");
    snprintf(text[9], 24, "%s", job->dtype == TQ_DTYPE_U8 ? "u8" : "f32");
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(flags); i++) {
        args[n++] = flags[i];
        args[n++] = text[i];
    }
    args[n++] = "--controller";
    args[n++] = job->address;
    args[n] = NULL;
}

static int run_processes(const bench_job_t *job, bench_result_t *results, unsigned *num_p)
{
    unsigned n = job->clients, started = 0;
    pid_t *pids = calloc(n, sizeof(pid_t));
    int *to = calloc(n, sizeof(int)), *from = calloc(n, sizeof(int));
    bench_sample_t(*samples)[BENCH_MAX_SAMPLES] = calloc(n, sizeof(*samples));
    unsigned *num = calloc(n, sizeof(unsigned));
    int err = !pids || !to || !from || !samples || !num ? bench_out_of_memory() : 0;
    signal(SIGPIPE, SIG_IGN); /* a dead worker is an error to report, not a reason to die */
    for (; err == 0 && started < n; started++) {
        char text[10][24];
        const char *args[24];
        worker_args(job, started, text, args);
        if (bench_spawn("--worker", args, &to[started], &from[started], &pids[started]) != 0) {
            fprintf(stderr, "tq-rdma-bench: cannot start client %u: %s\n", started,
                    strerror(errno));
            err = 1;
            break;
        }
    }
    for (unsigned k = 0; err == 0 && k < n; k++) {
        char ready;
        if (bench_read_full(from[k], &ready, 1, BENCH_START_TIMEOUT_MS) != 0 || ready != 'r') {
            fprintf(stderr, "tq-rdma-bench: client %u did not get ready\n", k);
            err = 1;
        }
    }
    for (unsigned k = 0; err == 0 && k < n; k++)
        if (bench_write_full(to[k], "g", 1) != 0)
            err = 1;
    for (unsigned k = 0; err == 0 && k < n; k++)
        err = read_samples(k, from[k], samples[k], &num[k]);
    for (unsigned k = 0; k < started; k++) {
        close(to[k]);
        close(from[k]);
        int status = bench_reap(pids[k], err != 0);
        if (err == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
            fprintf(stderr, "tq-rdma-bench: client %u failed (wait status %d)\n", k, status);
            err = 1;
        }
    }
    if (err == 0)
        err = merge_all(job, samples, num, n, results, num_p);
    for (unsigned k = 0; samples != NULL && k < n; k++)
        for (unsigned i = 0; i < BENCH_MAX_SAMPLES; i++)
            bench_sample_free(&samples[k][i]);
    free(samples);
    free(num);
    free(pids);
    free(to);
    free(from);
    return err;
}

int bench_run_job(tq_client *c, const bench_job_t *job, bool threads, bench_result_t *results,
                  unsigned *num_p)
{
    if (job->clients > BENCH_MAX_CLIENTS) {
        fprintf(stderr, "tq-rdma-bench: at most %d clients\n", BENCH_MAX_CLIENTS);
        return 1;
    }
    if (job->clients > 1)
        return threads ? run_threads(c, job, results, num_p) : run_processes(job, results, num_p);
    bench_sample_t s[BENCH_MAX_SAMPLES] = {0};
    unsigned num = 0;
    int err = mode_fn(job->mode)(c, job, s, &num);
    if (err == 0) {
        bench_sample_t(*one)[BENCH_MAX_SAMPLES] = &s;
        err = merge_all(job, one, &num, 1, results, num_p);
    }
    for (unsigned i = 0; i < BENCH_MAX_SAMPLES; i++)
        bench_sample_free(&s[i]);
    return err;
}
