/* helpers.c: shared test helpers: real daemon clusters, helper processes, clocks, raw sockets. */
#include "helpers.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctrl_conn.h"
#include "util/common.h"
#include "wire.h"

extern char **environ;

#define HELPER_ENV "TQ_TEST_HELPER"

/* ---- time ---- */

int64_t tq_test_first_diff(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return (int64_t)i;
    return -1;
}

const char *tq_test_unique(const char *prefix)
{
    static char ring[16][128];
    static unsigned next, counter;
    char *s = ring[next++ % 16];
    snprintf(s, sizeof(ring[0]), "%s_%ld_%u", prefix, (long)getpid(), counter++);
    return s;
}

/* ---- processes ---- */

static int fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536)
        return 65536;
    return (int)rl.rlim_cur;
}

/*
 * fork + exec path with argv and envp, stdout and stderr to log (or to out_fd
 * when it is >= 0, else inherited), stdin from /dev/null when out_fd is given,
 * with RLIMIT_NOFILE set to *nofile (or inherited when NULL). Between fork and
 * exec only async-signal-safe calls: the test process has threads. The child
 * gets SIGKILL when the forking thread dies, so a crashed or killed test
 * leaves no daemon behind.
 */
static pid_t spawn_io(const char *path, char *const argv[], char *const envp[], const char *log,
                      int out_fd, const struct rlimit *nofile)
{
    pid_t parent = getpid();
    int max_fd = fd_limit();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "helpers: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid > 0)
        return pid;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126);
    if (out_fd >= 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
    }
    for (int fd = 3; fd < max_fd; fd++)
        close(fd);
    if (nofile != NULL && setrlimit(RLIMIT_NOFILE, nofile) != 0)
        _exit(126);
    if (log != NULL && out_fd < 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    /* undo what a test runner may have blocked or ignored */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    execve(path, argv, envp);
    _exit(127);
}

static pid_t spawn(const char *path, char *const argv[], char *const envp[], const char *log,
                   const struct rlimit *nofile)
{
    return spawn_io(path, argv, envp, log, -1, nofile);
}

int tq_test_reap(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    uint64_t deadline = tq_test_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (tq_test_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
            }
            if (r != pid)
                return -1;
            break;
        }
        tq_test_sleep_ms(5);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

uint64_t tq_test_proc_cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command may contain spaces */
    if (p == NULL)
        return 0;
    unsigned long long utime = 0, stime = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (utime + stime) * 1000u / (unsigned long long)(hz > 0 ? hz : 100);
}

uint64_t tq_test_self_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

long tq_test_proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    while (kb < 0 && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* SIGTERM, reap within the stop timeout, SIGKILL after. @return 0 for a
 * clean exit (status 0), -1 otherwise. */
static int stop_child(pid_t *pid_p, const char *what)
{
    if (*pid_p <= 0)
        return 0;
    kill(*pid_p, SIGTERM);
    uint64_t t0 = tq_test_now_ms();
    int rc = tq_test_reap(*pid_p, TQ_TEST_STOP_TIMEOUT_MS);
    if (rc != 0)
        fprintf(stderr, "helpers: %s (pid %ld) ended with status %d after %llu ms on SIGTERM%s\n",
                what, (long)*pid_p, rc, (unsigned long long)(tq_test_now_ms() - t0),
                rc == 128 + SIGKILL ? " (killed: it did not exit in time)" : "");
    *pid_p = 0;
    return rc == 0 ? 0 : -1;
}

/* Print the end of a log file to stderr. */
static void dump_log(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    if (size > (long)sizeof(buf) - 1)
        fseek(f, size - (long)sizeof(buf) + 1, SEEK_SET);
    else
        fseek(f, 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s ----\n%s%s---- end ----\n", path, buf,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
}

static void cluster_logs(const tq_test_cluster *cl, bool dump, bool remove_them)
{
    if (cl->dir[0] == '\0')
        return;
    char path[256];
    snprintf(path, sizeof(path), "%s/controller.log", cl->dir);
    if (dump)
        dump_log(path);
    if (remove_them)
        unlink(path);
    for (unsigned i = 0; i < TQ_TEST_MAX_UNITS; i++) {
        snprintf(path, sizeof(path), "%s/unit%u.log", cl->dir, i);
        if (dump && access(path, R_OK) == 0)
            dump_log(path);
        if (remove_them)
            unlink(path);
    }
    if (remove_them) {
        snprintf(path, sizeof(path), "%s/port", cl->dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/port.tmp", cl->dir);
        unlink(path);
        rmdir(cl->dir);
    }
}

int tq_test_wait_units(const char *address, unsigned n, int timeout_ms)
{
    uint64_t deadline = tq_test_now_ms() + (uint64_t)timeout_ms;
    tq_client *c = NULL;
    int last = -1, open_rc = TQ_OK;
    while (tq_test_now_ms() < deadline) {
        if (c == NULL && (open_rc = tq_open(address, &c)) != TQ_OK) {
            c = NULL;
            if (open_rc != TQ_ERR_CONNECTION && open_rc != TQ_ERR_TIMEOUT)
                break; /* not something waiting cures */
            tq_test_sleep_ms(20);
            continue;
        }
        tq_unit_info_t *units = NULL;
        int count = tq_units(c, &units);
        if (count >= 0) {
            unsigned alive = 0;
            for (int i = 0; i < count; i++)
                alive += units[i].alive != 0;
            free(units);
            last = (int)alive;
            if (alive == n) {
                tq_close(c);
                return 0;
            }
        }
        tq_test_sleep_ms(20);
    }
    tq_close(c);
    fprintf(stderr, "helpers: %s: %d live units, want %u (last open: %s)\n", address, last, n,
            tq_status_string(open_rc));
    return -1;
}

/* Read the controller's address from its port file, within the start timeout. */
static int wait_port_file(tq_test_cluster *cl, const char *path)
{
    uint64_t deadline = tq_test_now_ms() + TQ_TEST_START_TIMEOUT_MS;
    while (tq_test_now_ms() < deadline) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            char line[128] = "";
            bool ok = fgets(line, sizeof(line), f) != NULL;
            fclose(f);
            line[strcspn(line, "\r\n")] = '\0';
            if (ok && strchr(line, ':') != NULL) {
                snprintf(cl->address, sizeof(cl->address), "%s", line);
                return 0;
            }
        }
        int status;
        if (waitpid(cl->controller, &status, WNOHANG) == cl->controller) {
            fprintf(stderr, "helpers: tq-controller exited (status 0x%x) before writing %s\n",
                    status, path);
            cl->controller = 0;
            return -1;
        }
        tq_test_sleep_ms(10);
    }
    fprintf(stderr, "helpers: no port file %s after %d ms\n", path, TQ_TEST_START_TIMEOUT_MS);
    return -1;
}

/* argv of a daemon: the fixed part, then extra (NULL-terminated, or NULL). */
static char **daemon_argv(const char *const *fixed, size_t n, const char *const *extra)
{
    size_t m = 0;
    while (extra != NULL && extra[m] != NULL)
        m++;
    char **argv = calloc(n + m + 1, sizeof(char *));
    for (size_t i = 0; argv != NULL && i < n + m; i++)
        argv[i] = (char *)(i < n ? fixed[i] : extra[i - n]);
    return argv;
}

int tq_test_cluster_add_unit(tq_test_cluster *cl, const char *pool_size,
                             const char *const *unit_args)
{
    if (cl->num_units == TQ_TEST_MAX_UNITS) {
        fprintf(stderr, "helpers: at most %d units\n", TQ_TEST_MAX_UNITS);
        return -1;
    }
    const char *storage_bin = TQ_BIN_DIR "/storage/tq-storage";
    char log[128];
    snprintf(log, sizeof(log), "%s/unit%u.log", cl->dir, cl->num_units);
    const char *fixed[] = {storage_bin, "--controller", cl->address, "--pool-size", pool_size};
    char **argv = daemon_argv(fixed, ARRAY_SIZE(fixed), unit_args);
    pid_t pid = argv ? spawn(storage_bin, argv, environ, log, NULL) : -1;
    free(argv);
    if (pid < 0)
        return -1;
    cl->units[cl->num_units++] = pid;
    return 0;
}

int tq_test_cluster_start(tq_test_cluster *cl, unsigned num_units, const char *pool_size)
{
    return tq_test_cluster_start_with(cl, num_units, pool_size, NULL, NULL);
}

int tq_test_cluster_start_with(tq_test_cluster *cl, unsigned num_units, const char *pool_size,
                               const char *const *controller_args, const char *const *unit_args)
{
    return tq_test_cluster_start_limited(cl, num_units, pool_size, controller_args, unit_args,
                                         NULL);
}

int tq_test_cluster_start_limited(tq_test_cluster *cl, unsigned num_units, const char *pool_size,
                                  const char *const *controller_args,
                                  const char *const *unit_args,
                                  const struct rlimit *controller_nofile)
{
    memset(cl, 0, sizeof(*cl));
    if (num_units > TQ_TEST_MAX_UNITS) {
        fprintf(stderr, "helpers: at most %d units\n", TQ_TEST_MAX_UNITS);
        return -1;
    }
    snprintf(cl->dir, sizeof(cl->dir), "/tmp/tq-test-XXXXXX");
    if (mkdtemp(cl->dir) == NULL) {
        fprintf(stderr, "helpers: mkdtemp: %s\n", strerror(errno));
        cl->dir[0] = '\0';
        return -1;
    }
    char port_file[128], log[128];
    snprintf(port_file, sizeof(port_file), "%s/port", cl->dir);
    snprintf(log, sizeof(log), "%s/controller.log", cl->dir);
    const char *controller_bin = TQ_BIN_DIR "/controller/tq-controller";
    const char *fixed[] = {controller_bin, "--listen", "127.0.0.1:0", "--port-file", port_file};
    char **cargv = daemon_argv(fixed, ARRAY_SIZE(fixed), controller_args);
    cl->controller = cargv ? spawn(controller_bin, cargv, environ, log, controller_nofile) : -1;
    free(cargv);
    if (cl->controller < 0) {
        cl->controller = 0;
        goto err;
    }
    if (wait_port_file(cl, port_file) != 0)
        goto err;
    for (unsigned i = 0; i < num_units; i++)
        if (tq_test_cluster_add_unit(cl, pool_size, unit_args) != 0)
            goto err;
    if (tq_test_wait_units(cl->address, num_units, TQ_TEST_START_TIMEOUT_MS) != 0)
        goto err;
    return 0;
err:
    fprintf(stderr, "helpers: cannot start a cluster of %u units of %s\n", num_units, pool_size);
    for (unsigned i = 0; i < cl->num_units; i++)
        stop_child(&cl->units[i], "tq-storage");
    stop_child(&cl->controller, "tq-controller");
    cluster_logs(cl, true, getenv("TQ_TEST_KEEP_LOGS") == NULL);
    cl->dir[0] = '\0';
    return -1;
}

int tq_test_cluster_stop(tq_test_cluster *cl)
{
    int unclean = 0;
    for (unsigned i = 0; i < cl->num_units; i++)
        unclean += stop_child(&cl->units[i], "tq-storage") != 0;
    unclean += stop_child(&cl->controller, "tq-controller") != 0;
    bool keep = getenv("TQ_TEST_KEEP_LOGS") != NULL;
    cluster_logs(cl, keep || unclean > 0, !keep);
    cl->dir[0] = '\0';
    cl->num_units = 0;
    return unclean;
}

int tq_test_cluster_kill_unit(tq_test_cluster *cl, unsigned i)
{
    if (i >= cl->num_units || cl->units[i] <= 0)
        return -1;
    kill(cl->units[i], SIGKILL);
    tq_test_reap(cl->units[i], TQ_TEST_STOP_TIMEOUT_MS);
    cl->units[i] = 0;
    return 0;
}

bool tq_test_cluster_controller_alive(tq_test_cluster *cl)
{
    if (cl->controller <= 0)
        return false;
    int status;
    pid_t r = waitpid(cl->controller, &status, WNOHANG);
    if (r == cl->controller) {
        fprintf(stderr, "helpers: tq-controller died (status 0x%x)\n", status);
        cl->controller = 0;
        return false;
    }
    return true;
}

uint16_t tq_test_cluster_port(const tq_test_cluster *cl)
{
    const char *colon = strrchr(cl->address, ':');
    return colon ? (uint16_t)atoi(colon + 1) : 0;
}

/* ---- helper processes ---- */

pid_t tq_test_spawn_job(const char *job, const char *const *args)
{
    const char *fixed[] = {"tq-test-helper", job};
    char **argv = daemon_argv(fixed, 2, args);
    /* environ plus the marker that makes the constructor below take over */
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 2, sizeof(char *));
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    pid_t pid = -1;
    if (argv != NULL && envp != NULL && len > 0) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (strncmp(environ[i], HELPER_ENV "=", sizeof(HELPER_ENV)) != 0)
                envp[k++] = environ[i];
        envp[k++] = HELPER_ENV "=1";
        envp[k] = NULL;
        self[len] = '\0';
        pid = spawn(self, argv, envp, NULL, NULL);
    }
    free(envp);
    free(argv);
    return pid;
}

pid_t tq_test_spawn_put_range(const char *address, const char *partition, const char *field,
                              int64_t first, uint32_t count, int delay_ms)
{
    char s_first[32], s_count[32], s_delay[32];
    snprintf(s_first, sizeof(s_first), "%lld", (long long)first);
    snprintf(s_count, sizeof(s_count), "%u", count);
    snprintf(s_delay, sizeof(s_delay), "%d", delay_ms);
    const char *args[] = {address, partition, field, s_first, s_count, s_delay, NULL};
    return tq_test_spawn_job("put_range", args);
}

static int helper_put_range(int argc, char **argv)
{
    if (argc != 8)
        return 2;
    const char *address = argv[2], *partition = argv[3], *field = argv[4];
    int64_t first = atoll(argv[5]);
    uint32_t count = (uint32_t)atoi(argv[6]);
    int delay_ms = atoi(argv[7]);
    tq_client *c;
    int rc = tq_open(address, &c);
    if (rc != TQ_OK) {
        fprintf(stderr, "helper put_range: tq_open(%s): %s\n", address, tq_status_string(rc));
        return 3;
    }
    int64_t *indexes = calloc(count, sizeof(int64_t)), *values = calloc(count, sizeof(int64_t));
    tq_batch *b = NULL;
    rc = indexes && values ? TQ_OK : TQ_ERR_NOMEM;
    for (uint32_t i = 0; rc == TQ_OK && i < count; i++) {
        indexes[i] = first + i;
        values[i] = tq_test_row_value(first + i);
    }
    if (rc == TQ_OK)
        rc = tq_batch_create(count, &b);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(b, field, TQ_DTYPE_I64, 0, NULL, values);
    tq_test_sleep_ms(delay_ms);
    if (rc == TQ_OK)
        rc = tq_put(c, partition, b, indexes, NULL);
    if (rc != TQ_OK)
        fprintf(stderr, "helper put_range: %s (%s)\n", tq_status_string(rc), tq_last_error(c));
    tq_batch_destroy(b);
    free(indexes);
    free(values);
    tq_close(c);
    return rc == TQ_OK ? 0 : 4;
}

#define JOB_MAX_MS 60000 /* a helper job ends by then whatever happens */

static int helper_put_loop(int argc, char **argv)
{
    if (argc != 6)
        return 2;
    const char *address = argv[2], *partition = argv[3];
    uint64_t row_bytes = strtoull(argv[4], NULL, 10);
    uint32_t rows = (uint32_t)atoi(argv[5]);
    tq_client *c;
    int rc = tq_open(address, &c);
    if (rc != TQ_OK)
        return 3;
    uint8_t *data = calloc(rows, row_bytes);
    tq_batch *b = NULL;
    int64_t shape[1] = {(int64_t)row_bytes};
    rc = data != NULL ? tq_batch_create(rows, &b) : TQ_ERR_NOMEM;
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(b, "x", TQ_DTYPE_U8, 1, shape, data);
    uint64_t end = tq_test_now_ms() + JOB_MAX_MS;
    while (rc == TQ_OK && tq_test_now_ms() < end) /* until killed: that is the test */
        rc = tq_put(c, partition, b, NULL, NULL);
    tq_batch_destroy(b);
    free(data);
    tq_close(c);
    return rc == TQ_OK ? 0 : 4;
}

/* An ALLOC over a raw control connection, never committed. */
static int helper_alloc_hold(int argc, char **argv)
{
    if (argc != 6)
        return 2;
    const char *address = argv[2], *partition = argv[3], *ready = argv[5];
    uint64_t bytes = strtoull(argv[4], NULL, 10);
    tq_ctrl_conn cc;
    char err[TQ_ERRMSG_MAX] = "";
    if (tq__ctrl_connect(&cc, address, getenv("TQ_TOKEN"), TQ_ROLE_CLIENT, NULL, 5000, err) !=
        TQ_OK) {
        fprintf(stderr, "helper alloc_hold: %s\n", err);
        return 3;
    }
    int64_t dims[1] = {(int64_t)bytes};
    tq_wire_field_t f = {.name = {"x", 1}, .kind = TQ_FIELD_TENSOR, .dtype = TQ_DTYPE_U8,
                         .ndim = 1, .dims = tq_array_of(dims, 1)};
    size_t off = tq__ctrl_begin(&cc, TQ_MSG_ALLOC);
    tq_wire_encode_alloc(&cc.out, &(tq_msg_alloc_t){.partition = {partition,
                                                    (uint16_t)strlen(partition)},
                                                    .rows = 1, .row_mode = TQ_ROWS_NEW,
                                                    .num_fields = 1, .commit_ms = 60000});
    tq_wire_encode_field(&cc.out, &f);
    tq_rbuf r;
    if (tq__ctrl_call(&cc, off, 5000, &r, err) != TQ_OK) {
        fprintf(stderr, "helper alloc_hold: %s\n", err);
        return 4;
    }
    int fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    tq_test_sleep_ms(JOB_MAX_MS);
    tq__ctrl_close(&cc);
    return 0;
}

/* A stream consumer to be killed: it takes batches, then holds what it fetched ahead. */
static int helper_stream_hold(int argc, char **argv)
{
    if (argc != 10)
        return 2;
    const char *address = argv[2], *path = argv[9];
    const char *fields[] = {argv[5]};
    tq_fetch_args_t a = {.partition = argv[3], .task = argv[4], .fields = fields,
                         .num_fields = 1, .batch_size = (uint32_t)atoi(argv[6]),
                         .prefetch = (uint32_t)atoi(argv[7]), .timeout_ms = 10000};
    int take = atoi(argv[8]);
    tq_client *c;
    if (tq_open(address, &c) != TQ_OK)
        return 3;
    tq_stream *s = NULL;
    int rc = tq_stream_open(c, &a, &s);
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = rc == TQ_OK ? fopen(tmp, "w") : NULL;
    for (int k = 0; f != NULL && rc == TQ_OK && k < take; k++) {
        tq_batch *b = NULL;
        tq_meta *m = NULL;
        if ((rc = tq_stream_next(s, &b, &m)) != TQ_OK)
            break;
        for (uint32_t i = 0; i < tq_meta_rows(m); i++)
            fprintf(f, "%lld\n", (long long)tq_meta_indexes(m)[i]);
        tq_batch_destroy(b);
        tq_meta_free(m);
    }
    if (f != NULL && (fclose(f) != 0 || (rc == TQ_OK && rename(tmp, path) != 0)))
        rc = TQ_ERR_IO;
    if (rc != TQ_OK) {
        fprintf(stderr, "helper stream_hold: %s (%s)\n", tq_status_string(rc), tq_last_error(c));
        return 4;
    }
    tq_test_sleep_ms(JOB_MAX_MS); /* until killed: that is the test */
    tq_stream_close(s);
    tq_close(c);
    return 0;
}

/* Runs before Criterion's main: a re-executed test binary marked as a helper
 * does its job and exits without ever starting the test runner. */
__attribute__((constructor)) static void helper_dispatch(int argc, char **argv, char **envp)
{
    (void)envp;
    const char *mark = getenv(HELPER_ENV);
    if (mark == NULL || argc < 2)
        return;
    unsetenv(HELPER_ENV);
    int rc = 2;
    if (strcmp(argv[1], "put_range") == 0)
        rc = helper_put_range(argc, argv);
    else if (strcmp(argv[1], "put_loop") == 0)
        rc = helper_put_loop(argc, argv);
    else if (strcmp(argv[1], "alloc_hold") == 0)
        rc = helper_alloc_hold(argc, argv);
    else if (strcmp(argv[1], "stream_hold") == 0)
        rc = helper_stream_hold(argc, argv);
    else
        fprintf(stderr, "helper: unknown job %s\n", argv[1]);
    fflush(NULL);
    _exit(rc);
}

/* ---- raw control connections ---- */

int tq_test_connect(uint16_t port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EINPROGRESS)
            goto err;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, timeout_ms) != 1)
            goto err;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
            goto err;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* blocking writes from here, bounded by a send timeout */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
err:
    close(fd);
    return -1;
}

size_t tq_test_drain(int fd, uint64_t deadline_ms, char *head, size_t head_cap)
{
    static char chunk[1 << 16];
    size_t total = 0;
    if (head_cap > 0)
        head[0] = '\0';
    for (;;) {
        uint64_t now = tq_test_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= deadline_ms || poll(&p, 1, (int)(deadline_ms - now)) != 1)
            break;
        ssize_t n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            break;
        if (total + 1 < head_cap) {
            size_t k = TQ_MIN((size_t)n, head_cap - 1 - total);
            memcpy(head + total, chunk, k);
            head[total + k] = '\0';
        }
        total += (size_t)n;
    }
    return total;
}

int tq_test_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t tq_test_read_exact(int fd, void *buf, size_t len, uint64_t deadline_ms)
{
    size_t got = 0;
    while (got < len) {
        uint64_t now = tq_test_now_ms();
        if (now >= deadline_ms)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(deadline_ms - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return 0;
        if (n < 0)
            return -1;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int tq_test_read_answer(int fd, int timeout_ms, tq_test_answer_t *a)
{
    memset(a, 0, sizeof(*a));
    uint64_t deadline = tq_test_now_ms() + (uint64_t)timeout_ms;
    uint8_t hdr[TQ_WIRE_HEADER_SIZE];
    ssize_t n = tq_test_read_exact(fd, hdr, sizeof(hdr), deadline);
    if (n == 0) {
        a->closed = true;
        return 0;
    }
    if (n < 0) {
        fprintf(stderr, "helpers: neither a reply nor a close within %d ms\n", timeout_ms);
        return -1;
    }
    tq_wire_header_t h;
    if (tq_wire_parse_header(hdr, &h) != TQ_OK) {
        fprintf(stderr, "helpers: the controller sent a malformed header\n");
        return -1;
    }
    a->replied = true;
    a->type = h.type;
    a->flags = h.flags;
    a->request_id = h.request_id;
    a->body_len = h.body_len;
    a->body = malloc(h.body_len ? h.body_len : 1);
    if (a->body == NULL)
        return -1;
    if (h.body_len > 0 && tq_test_read_exact(fd, a->body, h.body_len, deadline) != h.body_len) {
        fprintf(stderr, "helpers: a reply body was cut short\n");
        tq_test_answer_free(a);
        return -1;
    }
    tq_rbuf r = tq_rbuf_make(a->body, h.body_len);
    a->status = (int32_t)tq_wire_get_u32(&r);
    if (r.failed) {
        fprintf(stderr, "helpers: a reply without a status\n");
        tq_test_answer_free(a);
        return -1;
    }
    if (a->status != TQ_OK) {
        tq_str_t msg = tq_wire_get_str(&r);
        if (!r.failed)
            snprintf(a->message, sizeof(a->message), "%.*s", (int)msg.len, msg.ptr);
    }
    return 0;
}

void tq_test_answer_free(tq_test_answer_t *a)
{
    free(a->body);
    a->body = NULL;
}

uint8_t *tq_test_frame(uint16_t type, uint8_t flags, uint64_t request_id, const void *body,
                       uint32_t body_len, size_t *len_p)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    size_t off = tq_wire_begin(&w, type, flags, request_id);
    if (body_len > 0)
        tq_wire_put_bytes(&w, body, body_len);
    tq_wire_end(&w, off);
    if (w.failed) {
        tq_wbuf_free(&w);
        return NULL;
    }
    *len_p = w.len;
    return w.data; /* the wbuf's buffer is plain malloc'd memory */
}

uint8_t *tq_test_hello_frame(uint64_t request_id, size_t *len_p)
{
    const char *token = getenv("TQ_TOKEN");
    tq_wbuf body;
    tq_wbuf_init(&body);
    tq_msg_hello_t m = {.role = TQ_ROLE_CLIENT,
                        .token = {token ? token : "", (uint16_t)(token ? strlen(token) : 0)}};
    tq_wire_encode_hello(&body, &m);
    uint8_t *frame = body.failed ? NULL
                                 : tq_test_frame(TQ_MSG_HELLO, 0, request_id, body.data,
                                                 (uint32_t)body.len, len_p);
    tq_wbuf_free(&body);
    return frame;
}

/* ---- one scenario, two setups ---- */

tq_test_env_t   tq_test_env;
tq_test_cluster tq_test_env_cluster;

void tq_test_env_setup_cluster(void)
{
    cr_assert(eq(int, tq_test_cluster_start(&tq_test_env_cluster, 2, "64M"), 0),
              "cannot start tq-controller and 2 tq-storage (see stderr)");
    tq_client *c = NULL;
    int rc = tq_open(tq_test_env_cluster.address, &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(%s): %s", tq_test_env_cluster.address,
              tq_status_string(rc));
    tq_test_env = (tq_test_env_t){c, tq_test_env_cluster.address};
}

void tq_test_env_setup_embedded(void)
{
    unsetenv("TQ_CONTROLLER");
    tq_client *c = NULL;
    int rc = tq_open("embedded", &c);
    cr_assert(eq(int, rc, TQ_OK), "tq_open(embedded): %s", tq_status_string(rc));
    tq_test_env = (tq_test_env_t){c, NULL};
}

/* After a scenario that passed: the daemons must exit cleanly on SIGTERM. */
void tq_test_env_finish(void)
{
    tq_close(tq_test_env.c);
    tq_test_env.c = NULL;
    cr_assert(eq(int, tq_test_cluster_stop(&tq_test_env_cluster), 0),
              "a daemon did not exit cleanly on SIGTERM (see stderr)");
}

/* Whatever a failed scenario left behind (Criterion ignores asserts here). */
void tq_test_env_teardown(void)
{
    tq_close(tq_test_env.c);
    tq_test_env.c = NULL;
    tq_test_cluster_stop(&tq_test_env_cluster);
}

void tq_test_put_rollout(tq_client *c, const char *partition)
{
    int32_t prompt[8], response[5];
    int64_t one = 1, rows[5] = {0, 1, 2, 3, 4};
    for (int i = 0; i < 8; i++)
        prompt[i] = i;
    for (int i = 0; i < 5; i++)
        response[i] = 100 + i;
    tq_batch *b;
    cr_assert(eq(int, tq_batch_create(8, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "prompt", TQ_DTYPE_I32, 1, &one, prompt), TQ_OK));
    cr_assert(eq(int, tq_put(c, partition, b, NULL, NULL), TQ_OK));
    tq_batch_destroy(b);
    cr_assert(eq(int, tq_batch_create(5, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "response", TQ_DTYPE_I32, 1, &one, response), TQ_OK));
    cr_assert(eq(int, tq_put(c, partition, b, rows, NULL), TQ_OK));
    tq_batch_destroy(b);
    const char *fields[] = {"prompt", "response"};
    tq_fetch_args_t args = {.partition = partition, .task = "train", .fields = fields,
                            .num_fields = 2, .batch_size = 3};
    tq_meta *m;
    cr_assert(eq(int, tq_get_meta(c, &args, &m), TQ_OK));
    tq_meta_free(m);
}

void tq_test_make_partitions(tq_client *c, unsigned partitions, unsigned fields)
{
    char part[256], names[TQ_TEST_MAX_FIELDS][256];
    int64_t one = 1, value = 7;
    cr_assert(le(u32, fields, TQ_TEST_MAX_FIELDS));
    for (unsigned k = 0; k < fields; k++) {
        memset(names[k], 'f', 200);
        snprintf(names[k] + 200, 56, "_%u", k);
    }
    memset(part, 'p', 200);
    uint64_t t0 = tq_test_now_ms();
    for (unsigned i = 0; i < partitions; i++) {
        snprintf(part + 200, 56, "_%u", i);
        tq_batch *b;
        cr_assert(eq(int, tq_batch_create(1, &b), TQ_OK));
        for (unsigned k = 0; k < fields; k++)
            cr_assert(eq(int, tq_batch_add_tensor(b, names[k], TQ_DTYPE_I64, 1, &one, &value),
                         TQ_OK));
        int rc = tq_put(c, part, b, NULL, NULL);
        tq_batch_destroy(b);
        cr_assert(eq(int, rc, TQ_OK), "put %u: %s", i, tq_last_error(c));
        cr_assert(lt(u64, tq_test_now_ms() - t0, 120000), "only %u partitions in 120 s", i);
    }
    fprintf(stderr, "helpers: %u partitions of %u fields in %llu ms\n", partitions, fields,
            (unsigned long long)(tq_test_now_ms() - t0));
}

int tq_test_run(const char *cmd, char *out, size_t cap)
{
    char bounded[2048];
    snprintf(bounded, sizeof(bounded), "timeout -s KILL 60 %s", cmd);
    FILE *p = popen(bounded, "r");
    cr_assert(p != NULL, "popen %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- commands and network namespaces ---- */

pid_t tq_test_start(char *const argv[], char *const envp[], int out_fd)
{
    static char *const minimal[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    return spawn_io(argv[0], argv, envp != NULL ? envp : minimal, NULL, out_fd, NULL);
}

int tq_test_run_argv(char *const argv[], int timeout_ms, char *out, size_t out_size)
{
    int fds[2];
    out[0] = '\0';
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = tq_test_start(argv, NULL, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    size_t got = 0;
    uint64_t deadline = tq_test_now_ms() + (uint64_t)timeout_ms;
    for (;;) { /* ends at EOF or at the deadline */
        uint64_t now = tq_test_now_ms();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        char buf[4096];
        ssize_t n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t room = got + 1 < out_size ? out_size - 1 - got : 0;
        size_t keep = room < (size_t)n ? room : (size_t)n;
        memcpy(out + got, buf, keep);
        got += keep;
    }
    out[got] = '\0';
    close(fds[0]);
    uint64_t now = tq_test_now_ms();
    return tq_test_reap(pid, now < deadline ? (int)(deadline - now) : 0);
}

const char *tq_test_ip_path(void)
{
    static const char *const candidates[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    for (size_t i = 0; i < ARRAY_SIZE(candidates); i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

int tq_test_ip(char *out, size_t out_size, ...)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)tq_test_ip_path();
    va_list ap;
    va_start(ap, out_size);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 31)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    char local[1024];
    if (out == NULL) {
        out = local;
        out_size = sizeof(local);
    }
    int rc = tq_test_run_argv(argv, TQ_TEST_NET_CMD_MS, out, out_size);
    if (rc != 0) {
        fprintf(stderr, "net: exit %d:", rc);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %s", argv[i]);
        fprintf(stderr, "\n%s", out);
    }
    return rc;
}

#define NET_IP(...) tq_test_ip(NULL, 0, __VA_ARGS__, (const char *)NULL)

/* Variables handed through to every process inside (sanitizer report settings,
 * the shared secret, logging); everything else of this process's environment is not. */
static const char *const net_passthrough[] = {"PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                              "LSAN_OPTIONS", "TQ_LOG", "TQ_TOKEN"};

void tq_test_cmd_env(tq_test_cmd_t *c, const char *fmt, ...)
{
    if (c->num_env >= ARRAY_SIZE(c->env) || c->argc >= ARRAY_SIZE(c->argv) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->env[c->num_env], sizeof(c->env[0]), fmt, ap);
    va_end(ap);
    c->argv[c->argc++] = c->env[c->num_env++];
    c->argv[c->argc] = NULL;
}

void tq_test_cmd_arg(tq_test_cmd_t *c, const char *arg)
{
    if (c->argc < ARRAY_SIZE(c->argv) - 1)
        c->argv[c->argc++] = (char *)arg;
    c->argv[c->argc] = NULL;
}

void tq_test_cmd_init(tq_test_cmd_t *c, const tq_test_net *n, unsigned h, bool with_token)
{
    memset(c, 0, sizeof(*c));
    tq_test_cmd_arg(c, tq_test_ip_path());
    tq_test_cmd_arg(c, "netns");
    tq_test_cmd_arg(c, "exec");
    tq_test_cmd_arg(c, n->ns[h]);
    tq_test_cmd_arg(c, access("/usr/bin/env", X_OK) == 0 ? "/usr/bin/env" : "/bin/env");
    tq_test_cmd_arg(c, "-i");
    for (size_t i = 0; i < ARRAY_SIZE(net_passthrough); i++) {
        const char *v = getenv(net_passthrough[i]);
        if (v != NULL && (with_token || strcmp(net_passthrough[i], "TQ_TOKEN") != 0))
            tq_test_cmd_env(c, "%s=%s", net_passthrough[i], v);
        else if (strcmp(net_passthrough[i], "PATH") == 0)
            tq_test_cmd_env(c, "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    }
}

/* Kill whatever runs in namespace name, a few rounds at most. */
static void net_kill_all(const char *name)
{
    for (int round = 0; round < 5; round++) {
        char out[4096];
        char *argv[] = {(char *)tq_test_ip_path(), "netns", "pids", (char *)name, NULL};
        if (tq_test_run_argv(argv, TQ_TEST_NET_CMD_MS, out, sizeof(out)) != 0)
            return;
        unsigned killed = 0;
        char *save = NULL;
        for (char *tok = strtok_r(out, " \n", &save); tok != NULL && killed < 256;
             tok = strtok_r(NULL, " \n", &save)) {
            long pid = strtol(tok, NULL, 10);
            if (pid > 1 && pid != getpid() && kill((pid_t)pid, SIGKILL) == 0)
                killed++;
        }
        if (killed == 0)
            return;
        fprintf(stderr, "net: killed %u process(es) left in %s\n", killed, name);
        tq_test_sleep_ms(100);
    }
}

static void net_delete(const char *name)
{
    net_kill_all(name);
    NET_IP("netns", "delete", name);
}

/* Is the process whose pid names a namespace still a running test of ours? */
static bool net_owner_alive(long pid)
{
    char path[64], comm[64] = "", self[64] = "";
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = fgets(comm, sizeof(comm), f) != NULL;
    fclose(f);
    f = fopen("/proc/self/comm", "r");
    if (f == NULL)
        return true;
    ok = ok && fgets(self, sizeof(self), f) != NULL;
    fclose(f);
    return ok && strcmp(comm, self) == 0;
}

/* Remove a directory of logs: its plain files, then itself. */
static void net_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *f;
    char path[600];
    for (unsigned k = 0; d != NULL && k < 256 && (f = readdir(d)) != NULL; k++)
        if (f->d_type == DT_REG) {
            snprintf(path, sizeof(path), "%s/%s", dir, f->d_name);
            unlink(path);
        }
    if (d != NULL)
        closedir(d);
    if (rmdir(dir) != 0)
        fprintf(stderr, "net: cannot remove %s: %s\n", dir, strerror(errno));
}

/* Remove namespaces "tq<tag><pid>-*" and directories "/tmp/tq-<tag>-<pid>-*"
 * whose test process is gone (a run killed by a timeout). */
static void net_cleanup_stale(const char *tag)
{
    char out[16384], prefix[32];
    snprintf(prefix, sizeof(prefix), "tq%s", tag);
    char *argv[] = {(char *)tq_test_ip_path(), "netns", "list", NULL};
    if (tq_test_run_argv(argv, TQ_TEST_NET_CMD_MS, out, sizeof(out)) != 0)
        return;
    char stale[64][48];
    unsigned n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL && n < 64;
         line = strtok_r(NULL, "\n", &save)) {
        char name[48];
        if (sscanf(line, "%47s", name) != 1 || strncmp(name, prefix, strlen(prefix)) != 0)
            continue;
        const char *digits = name + strlen(prefix);
        char *end;
        long pid = strtol(digits, &end, 10);
        if (!isdigit((unsigned char)digits[0]) || *end != '-' || pid == getpid() ||
            net_owner_alive(pid))
            continue;
        snprintf(stale[n++], sizeof(stale[0]), "%s", name);
    }
    for (unsigned i = 0; i < n; i++) {
        fprintf(stderr, "net: removing stale namespace %s\n", stale[i]);
        net_delete(stale[i]);
    }
    DIR *tmp = getenv("TQ_TEST_KEEP_LOGS") == NULL ? opendir("/tmp") : NULL;
    struct dirent *de;
    snprintf(prefix, sizeof(prefix), "tq-%s-", tag);
    for (unsigned seen = 0; tmp != NULL && seen < 4096 && (de = readdir(tmp)) != NULL; seen++) {
        char *end;
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        long pid = strtol(de->d_name + strlen(prefix), &end, 10);
        if (*end != '-' || pid == getpid() || net_owner_alive(pid))
            continue;
        char dir[300];
        snprintf(dir, sizeof(dir), "/tmp/%s", de->d_name);
        net_remove_dir(dir);
        fprintf(stderr, "net: removed stale %s\n", dir);
    }
    if (tmp != NULL)
        closedir(tmp);
}

int tq_test_net_up(tq_test_net *n, const char *tag, unsigned num_hosts, char *why, size_t cap)
{
    memset(n, 0, sizeof(*n));
    cr_assert(num_hosts >= 1 && num_hosts <= TQ_TEST_NET_MAX_HOSTS, "test bug: %u hosts",
              num_hosts);
    n->num_hosts = num_hosts;
    if (geteuid() != 0) {
        snprintf(why, cap, "needs root for network namespaces (euid %d)", (int)geteuid());
        return -1;
    }
    if (tq_test_ip_path() == NULL) {
        snprintf(why, cap, "no ip(8) (iproute2) on this host");
        return -1;
    }
    net_cleanup_stale(tag);
    snprintf(n->dir, sizeof(n->dir), "/tmp/tq-%s-%ld-XXXXXX", tag, (long)getpid());
    bool made_dir = mkdtemp(n->dir) != NULL;
    if (!made_dir)
        n->dir[0] = '\0';
    cr_assert(made_dir, "mkdtemp: %s", strerror(errno));
    unsigned sw = num_hosts;
    for (unsigned i = 0; i <= sw; i++) {
        if (i == sw)
            snprintf(n->ns[i], sizeof(n->ns[i]), "tq%s%ld-sw", tag, (long)getpid());
        else
            snprintf(n->ns[i], sizeof(n->ns[i]), "tq%s%ld-h%u", tag, (long)getpid(), i);
    }
    char out[1024];
    if (tq_test_ip(out, sizeof(out), "netns", "add", n->ns[0], (const char *)NULL) != 0) {
        snprintf(why, cap, "`ip netns add` failed (no permission or no network namespace "
                 "support): %s", out);
        tq_test_net_down(n);
        return -1;
    }
    n->made[0] = true;
    for (unsigned i = 1; i <= sw; i++) {
        cr_assert(eq(int, NET_IP("netns", "add", n->ns[i]), 0), "ip netns add %s", n->ns[i]);
        n->made[i] = true;
    }
    for (unsigned i = 0; i <= sw; i++) {
        /* IPv4 only: no router solicitations or link-local addresses on the veths */
        if (access("/usr/sbin/sysctl", X_OK) == 0) {
            tq_test_cmd_t c;
            tq_test_cmd_init(&c, n, i, false);
            const char *args[] = {"/usr/sbin/sysctl", "-q", "-w",
                                  "net.ipv6.conf.all.disable_ipv6=1",
                                  "net.ipv6.conf.default.disable_ipv6=1"};
            for (size_t k = 0; k < ARRAY_SIZE(args); k++)
                tq_test_cmd_arg(&c, args[k]);
            (void)tq_test_run_argv(c.argv, TQ_TEST_NET_CMD_MS, out, sizeof(out));
        }
        cr_assert(eq(int, NET_IP("-n", n->ns[i], "link", "set", "lo", "up"), 0), "lo up in %s",
                  n->ns[i]);
    }
    cr_assert(eq(int, NET_IP("-n", n->ns[sw], "link", "add", "mh-br", "type", "bridge"), 0),
              "bridge");
    for (unsigned h = 0; h < num_hosts; h++) {
        char port[16], veth[16], addr[32];
        snprintf(port, sizeof(port), "mh-p%u", h);
        snprintf(veth, sizeof(veth), TQ_TEST_NET_IFNAME, h);
        snprintf(addr, sizeof(addr), "198.18.0.%u/24", h + 1); /* tq_test_net_ip */
        /* made inside the switch, the peer end put straight into the host */
        cr_assert(eq(int, NET_IP("-n", n->ns[sw], "link", "add", port, "type", "veth", "peer",
                                 "name", veth, "netns", n->ns[h]), 0), "veth %s-%s", port, veth);
        cr_assert(eq(int, NET_IP("-n", n->ns[sw], "link", "set", port, "master", "mh-br", "up"),
                     0), "port %s", port);
        cr_assert(eq(int, NET_IP("-n", n->ns[h], "addr", "add", addr, "dev", veth), 0), "%s",
                  addr);
        cr_assert(eq(int, NET_IP("-n", n->ns[h], "link", "set", veth, "up"), 0), "%s up", veth);
    }
    cr_assert(eq(int, NET_IP("-n", n->ns[sw], "link", "set", "mh-br", "up"), 0), "bridge up");
    /* none of it in the root namespace */
    for (unsigned h = 0; h < num_hosts; h++) {
        char veth[16];
        snprintf(veth, sizeof(veth), TQ_TEST_NET_IFNAME, h);
        cr_assert(eq(u32, if_nametoindex(veth), 0), "%s appeared in the root namespace", veth);
    }
    return 0;
}

void tq_test_net_down(tq_test_net *n)
{
    for (unsigned i = 0; i <= n->num_hosts && i <= TQ_TEST_NET_MAX_HOSTS; i++)
        if (n->made[i]) {
            net_delete(n->ns[i]);
            n->made[i] = false;
        }
    /* nothing of ours may remain */
    char out[16384];
    char *argv[] = {(char *)tq_test_ip_path(), "netns", "list", NULL};
    if (tq_test_ip_path() != NULL && tq_test_run_argv(argv, TQ_TEST_NET_CMD_MS, out, sizeof(out)) == 0)
        for (unsigned i = 0; i <= TQ_TEST_NET_MAX_HOSTS; i++)
            if (n->ns[i][0] != '\0' && strstr(out, n->ns[i]) != NULL)
                fprintf(stderr, "net: namespace %s is still there\n", n->ns[i]);
    if (n->dir[0] != '\0') {
        if (getenv("TQ_TEST_KEEP_LOGS") == NULL)
            net_remove_dir(n->dir);
        else
            fprintf(stderr, "net: logs kept in %s\n", n->dir);
    }
    memset(n, 0, sizeof(*n));
}

const char *tq_test_net_ip(unsigned h)
{
    static char ring[TQ_TEST_NET_MAX_HOSTS][16];
    unsigned i = h % TQ_TEST_NET_MAX_HOSTS;
    snprintf(ring[i], sizeof(ring[i]), "198.18.0.%u", h + 1);
    return ring[i];
}

void tq_test_proc_spawn(tq_test_proc_t *p, const char *dir, char *const argv[], const char *name)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, name);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert(ge(int, fd, 0), "open %s: %s", p->log, strerror(errno));
    p->pid = tq_test_start(argv, NULL, fd);
    close(fd);
    cr_assert(lt(int, 0, p->pid), "cannot start %s", name);
}

void tq_test_proc_dump(const tq_test_proc_t *p)
{
    if (p->log[0] != '\0')
        dump_log(p->log);
}

bool tq_test_proc_alive(tq_test_proc_t *p)
{
    if (p->pid <= 0)
        return false;
    if (waitpid(p->pid, &p->status, WNOHANG) == 0)
        return true;
    p->pid = 0; /* reaped (or not ours): never signal that pid again */
    return false;
}

int tq_test_proc_wait(tq_test_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    if (sig != 0)
        kill(p->pid, sig);
    int rc = tq_test_reap(p->pid, timeout_ms);
    p->pid = 0;
    return rc;
}

bool tq_test_file_has(const char *path, const char *text, int timeout_ms)
{
    uint64_t deadline = tq_test_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char buf[16384];
        FILE *f = fopen(path, "r");
        size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f != NULL)
            fclose(f);
        buf[n] = '\0';
        if (strstr(buf, text) != NULL)
            return true;
        if (tq_test_now_ms() >= deadline)
            return false;
        tq_test_sleep_ms(20);
    }
}
