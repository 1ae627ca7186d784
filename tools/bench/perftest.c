/* perftest.c: UCX's own bandwidth at a size, from ucx_perftest on loopback, to compare with. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/common.h"

#define RUN_BYTES (4ull << 30) /* a run moves about this much: long enough to be steady */
#define ITERS_MIN 50
#define ITERS_MAX 20000
#define CALL_MS   58000 /* a call but its final kills and reaps, which fit in the 60 s */
#define FIRST_MS  50
#define ATTEMPTS  5
#define RETRY_MS  200

extern char **environ;

/* What the client printed: the last result line's figure and the last error. */
typedef struct {
    double mib_per_s; /* overall bandwidth; < 0: no result line yet */
    char   error[160];
    char   line[256];
    size_t len;
} client_out_t;

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * Start ucx_perftest from PATH with the caller's environment, stdout and
 * stderr to out_fd (< 0: /dev/null). The children must die with a Ctrl-C to
 * the process group like the caller, whatever it blocks or ignores; SIGPIPE
 * is reset too. @return 0, or an errno.
 */
static int spawn(char *const argv[], int out_fd, pid_t *pid_p)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE), sigaddset(&dflt, SIGINT), sigaddset(&dflt, SIGTERM);
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0)
        return rc;
    rc = posix_spawnattr_init(&attr); /* cannot fail in glibc: destroyed below regardless */
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&attr, &dflt);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = out_fd >= 0 ? posix_spawn_file_actions_adddup2(&fa, out_fd, 1)
                         : posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (rc == 0)
        rc = posix_spawnp(pid_p, argv[0], &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* A child process. pid is -1 once reaped, so that no later kill can reach a
 * recycled pid; status is then its wait status, -1 if lost. */
typedef struct {
    pid_t pid;
    int   status;
} child_t;

/* Reap c if it has exited, or after SIGKILL when kill_it. @return reaped. */
static bool reap(child_t *c, bool kill_it)
{
    pid_t r = 0;
    if (c->pid <= 0)
        return true;
    if (kill_it)
        kill(c->pid, SIGKILL);
    while ((r = waitpid(c->pid, &c->status, kill_it ? 0 : WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == 0)
        return false;
    if (r < 0)
        c->status = -1;
    c->pid = -1;
    return true;
}

static void describe(int status, char *buf, size_t len)
{
    if (status == -1)
        snprintf(buf, len, "exit status unknown");
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

/* A port in 20000..59999 free on 127.0.0.1 now. The server's bind may still
 * lose a race for it: it exits then, which the caller reports. */
static int pick_port(uint16_t *port_p)
{
    uint64_t x = tq__now_ns() ^ ((uint64_t)getpid() << 40);
    for (int tries = 0; tries < 32; tries++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull; /* not rand(): the caller's */
        uint16_t port = (uint16_t)(20000 + (x >> 33) % 40000);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -1;
        int rc = bind(s, (struct sockaddr *)&a, sizeof(a));
        close(s);
        if (rc == 0) {
            *port_p = port;
            return 0;
        }
    }
    errno = EADDRINUSE;
    return -1;
}

static void client_line(client_out_t *o)
{
    double v[8];
    int end = 0;
    o->line[o->len] = '\0';
    o->len = 0;
    if (sscanf(o->line, "%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf%n", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7], &end) == 8 &&
        o->line[end + strspn(o->line + end, " \r")] == '\0') {
        o->mib_per_s = v[5];
        return;
    }
    const char *e = strstr(o->line, "ERROR "); /* UCX's log lines: keep the message */
    if (e != NULL)
        snprintf(o->error, sizeof(o->error), "%s", e + 5 + strspn(e + 5, " "));
}

/* Read the client's output until it closes it. @return 0, or -1 at the
 * deadline or on a read error. */
static int client_read(int fd, uint64_t deadline, client_out_t *o)
{
    char buf[4096];
    for (uint64_t now; (now = tq__now_ms()) < deadline;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)TQ_MIN(deadline - now, 1000));
        if (r < 0 && errno != EINTR)
            return -1;
        ssize_t n = r > 0 ? read(fd, buf, sizeof(buf)) : -1;
        if (n < 0 && (r <= 0 || errno == EINTR))
            continue;
        if (n <= 0) {
            if (n == 0 && o->len > 0)
                client_line(o);
            return n == 0 ? 0 : -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n')
                client_line(o);
            else if (o->len < sizeof(o->line) - 1) /* a longer line is no result line */
                o->line[o->len++] = buf[i];
        }
    }
    return -1;
}

/* Run the client until a run succeeds, while the server lives. A test
 * connection to see if it listens would be taken for its one client.
 * @return 0 and the bandwidth in *mib_p, or -1 after err. */
static int run_client(char *const argv[], child_t *server, unsigned port, uint64_t deadline,
                      double *mib_p, char *err, size_t errlen)
{
    char how[160] = ""; /* how the last attempt ended */
    for (int attempt = 1;; attempt++) {
        client_out_t out = {.mib_per_s = -1};
        int fds[2], rc;
        if (reap(server, false)) {
            char server_how[32];
            describe(server->status, server_how, sizeof(server_how));
            return fail(err, errlen, "ucx_perftest: the server on port %u ended (%s)%s%s", port,
                        server_how, how[0] ? "; the client: " : "", how);
        }
        if (pipe2(fds, O_CLOEXEC) != 0)
            return fail(err, errlen, "ucx_perftest: pipe: %s", strerror(errno));
        child_t client = {.pid = -1};
        rc = spawn(argv, fds[1], &client.pid);
        close(fds[1]);
        if (rc != 0) {
            close(fds[0]);
            return fail(err, errlen, "ucx_perftest: cannot start the client: %s", strerror(rc));
        }
        bool late = client_read(fds[0], deadline, &out) != 0;
        close(fds[0]);
        while (!late && !reap(&client, false))
            if (!(late = tq__now_ms() >= deadline))
                usleep(1000);
        reap(&client, true);
        if (late)
            return fail(err, errlen, "ucx_perftest: no result within %d s", CALL_MS / 1000);
        if (client.status == 0) {
            if (!(out.mib_per_s > 0 && isfinite(out.mib_per_s)))
                return fail(err, errlen, "ucx_perftest: the client printed no result line");
            *mib_p = out.mib_per_s;
            return 0;
        }
        if (out.error[0] != '\0')
            snprintf(how, sizeof(how), "%s", out.error);
        else
            describe(client.status, how, sizeof(how));
        if (attempt == ATTEMPTS || tq__now_ms() + RETRY_MS >= deadline)
            return fail(err, errlen, "ucx_perftest: the client failed %d times, last: %s",
                        attempt, how);
        usleep(RETRY_MS * 1000); /* the server may not listen yet */
    }
}

int bench_ucx_perftest(const char *op, uint64_t size, double *bytes_per_s_p, char *err,
                       size_t errlen)
{
    const char *test = op == NULL              ? NULL
                       : strcmp(op, "put") == 0 ? "ucp_put_bw"
                       : strcmp(op, "get") == 0 ? "ucp_get"
                                                : NULL;
    if (test == NULL)
        return fail(err, errlen, "ucx_perftest: no test for op %s (put or get)", op ? op : "null");
    if (size == 0)
        return fail(err, errlen, "ucx_perftest: size must be positive");
    uint64_t iters = TQ_MAX(TQ_MIN(RUN_BYTES / size, ITERS_MAX), ITERS_MIN);
    uint16_t port;
    if (pick_port(&port) != 0)
        return fail(err, errlen, "ucx_perftest: no free tcp port on 127.0.0.1: %s",
                    strerror(errno));
    char num[4][24];
    snprintf(num[0], sizeof(num[0]), "%llu", (unsigned long long)size);
    snprintf(num[1], sizeof(num[1]), "%llu", (unsigned long long)iters);
    snprintf(num[2], sizeof(num[2]), "%llu", (unsigned long long)TQ_MAX(iters / 10, 5));
    snprintf(num[3], sizeof(num[3]), "%u", port);
    char *server_argv[] = {"ucx_perftest", "-t", (char *)test, "-s", num[0], "-n", num[1],
                           "-w", num[2], "-p", num[3], NULL};
    char *client_argv[] = {"ucx_perftest", "127.0.0.1", "-t", (char *)test, "-s", num[0], "-n",
                           num[1], "-w", num[2], "-p", num[3], "-f", "-v", NULL};

    uint64_t deadline = tq__now_ms() + CALL_MS;
    child_t server = {.pid = -1};
    int rc = spawn(server_argv, -1, &server.pid);
    if (rc == ENOENT)
        return fail(err, errlen, "ucx_perftest not found (install Debian's ucx-utils)");
    if (rc != 0)
        return fail(err, errlen, "ucx_perftest: cannot start it: %s", strerror(rc));
    usleep(FIRST_MS * 1000); /* it listens after ~15 ms; run_client retries if not */
    double mib_per_s;
    rc = run_client(client_argv, &server, port, deadline, &mib_per_s, err, errlen);
    reap(&server, true);
    if (rc == 0)
        *bytes_per_s_p = mib_per_s * 1048576.0; /* UCX's "MB/s" is MiB/s */
    return rc;
}
