/* test_multihost.c: end to end across hosts: network namespaces joined by a bridge, a
 * controller and a storage unit on one, producers and consumers on two others, over TCP,
 * for every transport built. Needs root and network namespaces; skips without them. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"

#ifndef TQ_MH_CLIENT
#error "TQ_MH_CLIENT must be the path of the mh_client program"
#endif

/*
 * The topology, all of it inside namespaces this test makes and deletes:
 *
 *   tqmh<pid>-h0  198.18.0.1/24 on mh-h0: tq-controller, tq-storage
 *   tqmh<pid>-h1  198.18.0.2/24 on mh-h1: producer (mh_client put)
 *   tqmh<pid>-h2  198.18.0.3/24 on mh-h2: consumer (mh_client get)
 *   tqmh<pid>-sw  bridge mh-br with ports mh-p0..2, the other ends of the hosts' veths
 *
 * Every veth pair is created inside the switch with its peer end placed straight
 * into its host, so the root namespace never holds one; no route or interface of
 * the root namespace is touched. <pid> is the Criterion worker's, so parallel runs
 * do not collide, and a run finds the namespaces a dead run left (its pid gone)
 * and removes them first. Every process inside runs as `ip netns exec NS env -i
 * VAR=... binary`, with the transports pinned to TCP on the host's veth.
 */
#define MH_PREFIX    "tqmh"
#define MH_HOSTS     3
#define MH_NS        (MH_HOSTS + 1)
#define MH_SWITCH    MH_HOSTS /* index of the switch among the namespaces */
#define MH_MAX_PROCS 16

#define MH_CMD_TIMEOUT_MS    10000 /* one ip command, one probe */
#define MH_START_TIMEOUT_MS  15000 /* port file written, storage registered */
#define MH_CLIENT_TIMEOUT_MS 90000 /* put and get, together */
#define MH_GRACE_MS          10000 /* for the other one, once put or get failed */
#define MH_STOP_TIMEOUT_MS   5000
#define MH_POLL_MS           20

/* What the put and get processes move: rows of a float32 tensor of MH_ELEMS, plus a
 * nested and a bytes field, and MH_KEYS keys. */
#define MH_ROWS  "256"
#define MH_BATCH "16"
#define MH_ELEMS "4096"
#define MH_KEYS  "32"
#define MH_TENSOR_BYTES (256ull * 4096ull * 4ull)

#define MH_EXIT_UNAVAILABLE 77 /* mh_client: TQ_TRANSPORT names a transport we lack */

/* Variables handed through to every process inside (sanitizer report settings,
 * the shared secret, logging); everything else of this process's environment is not. */
static const char *const passthrough[] = {"PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                                          "TQ_LOG", "TQ_TOKEN"};

typedef struct {
    pid_t pid;
    char  name[32];
    char  log[160];
} mh_proc_t;

static struct {
    char      ns[MH_NS][48];
    bool      made[MH_NS];
    char      dir[64];        /* logs and the port file */
    char      controller[64]; /* "198.18.0.1:PORT" */
    uint16_t  port;
    mh_proc_t procs[MH_MAX_PROCS];
    unsigned  num_procs;
    int       controller_i, storage_i; /* indexes into procs, -1 when none */
} mh = {.controller_i = -1, .storage_i = -1};

static const char *ip_path(void)
{
    static const char *const candidates[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

static const char *env_path(void)
{
    return access("/usr/bin/env", X_OK) == 0 ? "/usr/bin/env" : "/bin/env";
}

static const char *ns_name(unsigned i) { return mh.ns[i]; }

/* ---- processes ---- */

/*
 * fork + exec argv[0] (an absolute path) with a minimal environment (the
 * variables a process inside gets are on its `env -i` command line), stdout and
 * stderr to out_fd. Only async-signal-safe calls between fork and exec.
 */
static pid_t start(char *const argv[], int out_fd)
{
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        if (pid < 0)
            fprintf(stderr, "multihost: fork: %s\n", strerror(errno));
        return pid;
    }
    /* a second line of defence only: the teardown kills every pid it started */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    execve(argv[0], argv, envp);
    _exit(127);
}

/* Run argv to completion within timeout_ms, its output in out (NUL-terminated,
 * cut to out_size). @return its exit status, 128 + signal, or -1. */
static int run(char *const argv[], int timeout_ms, char *out, size_t out_size)
{
    int fds[2];
    out[0] = '\0';
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = start(argv, fds[1]);
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

/* `ip ARGS...` (NULL-terminated); on failure prints the command and its output.
 * @return its exit status. */
static int ip_cmd(char *out, size_t out_size, ...)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = (char *)ip_path();
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
    int rc = run(argv, MH_CMD_TIMEOUT_MS, out, out_size);
    if (rc != 0) {
        fprintf(stderr, "multihost: exit %d:", rc);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %s", argv[i]);
        fprintf(stderr, "\n%s", out);
    }
    return rc;
}

#define IP(...) ip_cmd(NULL, 0, __VA_ARGS__, (const char *)NULL)

/* A command line `ip netns exec NS env -i VAR=... binary args...` for host h. */
typedef struct {
    char  env[16][256];
    char *argv[64];
    unsigned num_env, argc;
} mh_cmd_t;

static void cmd_env(mh_cmd_t *c, const char *fmt, ...)
{
    if (c->num_env >= 16)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->env[c->num_env], sizeof(c->env[0]), fmt, ap);
    va_end(ap);
    c->argv[c->argc++] = c->env[c->num_env++];
}

static void cmd_arg(mh_cmd_t *c, const char *arg)
{
    if (c->argc < 63)
        c->argv[c->argc++] = (char *)arg;
    c->argv[c->argc] = NULL;
}

/* transport: the client's TQ_TRANSPORT, or NULL for the daemons (which serve all). */
static void cmd_init(mh_cmd_t *c, unsigned h, const char *transport, const char *binary)
{
    memset(c, 0, sizeof(*c));
    c->argv[c->argc++] = (char *)ip_path();
    c->argv[c->argc++] = "netns";
    c->argv[c->argc++] = "exec";
    c->argv[c->argc++] = mh.ns[h];
    c->argv[c->argc++] = (char *)env_path();
    c->argv[c->argc++] = "-i";
    for (size_t i = 0; i < sizeof(passthrough) / sizeof(passthrough[0]); i++) {
        const char *v = getenv(passthrough[i]);
        if (v != NULL)
            cmd_env(c, "%s=%s", passthrough[i], v);
        else if (strcmp(passthrough[i], "PATH") == 0)
            cmd_env(c, "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    }
    /* TCP on this host's veth only: no loopback, shared memory or other devices */
    cmd_env(c, "UCX_TLS=tcp");
    cmd_env(c, "UCX_NET_DEVICES=mh-h%u", h);
    cmd_env(c, "FI_PROVIDER=tcp");
    cmd_env(c, "FI_TCP_IFACE=mh-h%u", h);
    if (transport != NULL)
        cmd_env(c, "TQ_TRANSPORT=%s", transport);
    cmd_arg(c, binary);
}

/* Start c in the background, output to <dir>/<name>.log. @return its index in procs. */
static int spawn_logged(mh_cmd_t *c, const char *name)
{
    cr_assert(lt(u32, mh.num_procs, MH_MAX_PROCS), "test bug: too many processes");
    mh_proc_t *p = &mh.procs[mh.num_procs];
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log, sizeof(p->log), "%s/%s.log", mh.dir, name);
    int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert(ge(int, fd, 0), "open %s: %s", p->log, strerror(errno));
    p->pid = start(c->argv, fd);
    close(fd);
    cr_assert(gt(int, p->pid, 0), "cannot start %s", name);
    return (int)mh.num_procs++;
}

static void dump_log(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[6144];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s ----\n%s%s---- end ----\n", path, buf,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
}

static void dump_logs(void)
{
    for (unsigned i = 0; i < mh.num_procs; i++)
        dump_log(mh.procs[i].log);
}

static void teardown(void);

/* Criterion runs no .fini after a skip: tear down first. */
#define mh_skip(...)                                                                           \
    do {                                                                                       \
        teardown();                                                                            \
        cr_skip_test(__VA_ARGS__);                                                             \
    } while (0)

/* ---- namespaces ---- */

/* Kill whatever runs in namespace name, a few rounds at most. */
static void ns_kill_all(const char *name)
{
    for (int round = 0; round < 5; round++) {
        char out[4096];
        char *argv[] = {(char *)ip_path(), "netns", "pids", (char *)name, NULL};
        if (run(argv, MH_CMD_TIMEOUT_MS, out, sizeof(out)) != 0)
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
        fprintf(stderr, "multihost: killed %u process(es) left in %s\n", killed, name);
        for (unsigned i = 0; i < mh.num_procs; i++) /* reap our own among them */
            if (mh.procs[i].pid > 0 && waitpid(mh.procs[i].pid, NULL, WNOHANG) == mh.procs[i].pid)
                mh.procs[i].pid = 0;
        tq_test_sleep_ms(100);
    }
}

static void ns_delete(const char *name)
{
    ns_kill_all(name);
    IP("netns", "delete", name);
}

/* Is the test process whose pid names a namespace still running? */
static bool owner_alive(long pid)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = fgets(comm, sizeof(comm), f) != NULL;
    fclose(f);
    return ok && strncmp(comm, "test_multihost", 14) == 0;
}

/* Remove namespaces "tqmh<pid>-*" whose test process is gone (a run killed by a timeout). */
static void cleanup_stale(void)
{
    char out[16384];
    char *argv[] = {(char *)ip_path(), "netns", "list", NULL};
    if (run(argv, MH_CMD_TIMEOUT_MS, out, sizeof(out)) != 0)
        return;
    char stale[64][48];
    unsigned n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL && n < 64;
         line = strtok_r(NULL, "\n", &save)) {
        char name[48];
        if (sscanf(line, "%47s", name) != 1 || strncmp(name, MH_PREFIX, strlen(MH_PREFIX)) != 0)
            continue;
        const char *digits = name + strlen(MH_PREFIX);
        char *end;
        long pid = strtol(digits, &end, 10);
        if (!isdigit((unsigned char)digits[0]) || *end != '-' || pid == getpid() ||
            owner_alive(pid))
            continue;
        snprintf(stale[n++], sizeof(stale[0]), "%s", name);
    }
    for (unsigned i = 0; i < n; i++) {
        fprintf(stderr, "multihost: removing stale namespace %s\n", stale[i]);
        ns_delete(stale[i]);
    }
    /* and their log directories, unless kept on purpose */
    DIR *tmp = getenv("TQ_TEST_KEEP_LOGS") == NULL ? opendir("/tmp") : NULL;
    struct dirent *de;
    for (unsigned seen = 0; tmp != NULL && seen < 4096 && (de = readdir(tmp)) != NULL; seen++) {
        static const char prefix[] = "tq-multihost-";
        char *end;
        if (strncmp(de->d_name, prefix, sizeof(prefix) - 1) != 0)
            continue;
        long pid = strtol(de->d_name + sizeof(prefix) - 1, &end, 10);
        if (*end != '-' || pid == getpid() || owner_alive(pid))
            continue;
        char dir[300], path[600];
        snprintf(dir, sizeof(dir), "/tmp/%s", de->d_name);
        DIR *d = opendir(dir);
        struct dirent *f;
        for (unsigned k = 0; d != NULL && k < 64 && (f = readdir(d)) != NULL; k++)
            if (f->d_type == DT_REG) {
                snprintf(path, sizeof(path), "%s/%s", dir, f->d_name);
                unlink(path);
            }
        if (d != NULL)
            closedir(d);
        if (rmdir(dir) == 0)
            fprintf(stderr, "multihost: removed stale %s\n", dir);
    }
    if (tmp != NULL)
        closedir(tmp);
}

/* A counter of a host's veth, read inside its namespace. */
static uint64_t veth_counter(unsigned h, const char *counter)
{
    char path[96], out[128];
    snprintf(path, sizeof(path), "/sys/class/net/mh-h%u/statistics/%s", h, counter);
    mh_cmd_t c;
    cmd_init(&c, h, NULL, "/bin/cat");
    cmd_arg(&c, path);
    int rc = run(c.argv, MH_CMD_TIMEOUT_MS, out, sizeof(out));
    cr_assert(eq(int, rc, 0), "cat %s in %s: %s", path, ns_name(h), out);
    return strtoull(out, NULL, 10);
}

/*
 * Make the namespaces, the switch and the links. Skips the test when this
 * process may not (not root, no ip(8), no network namespaces).
 */
static void topology_up(void)
{
    if (geteuid() != 0)
        mh_skip("multihost: needs root for network namespaces (euid %d)", (int)geteuid());
    if (ip_path() == NULL)
        mh_skip("multihost: no ip(8) (iproute2) on this host");
    cleanup_stale();
    snprintf(mh.dir, sizeof(mh.dir), "/tmp/tq-multihost-%ld-XXXXXX", (long)getpid());
    bool made_dir = mkdtemp(mh.dir) != NULL;
    if (!made_dir)
        mh.dir[0] = '\0';
    cr_assert(made_dir, "mkdtemp: %s", strerror(errno));
    for (unsigned i = 0; i < MH_NS; i++) {
        if (i == MH_SWITCH)
            snprintf(mh.ns[i], sizeof(mh.ns[i]), MH_PREFIX "%ld-sw", (long)getpid());
        else
            snprintf(mh.ns[i], sizeof(mh.ns[i]), MH_PREFIX "%ld-h%u", (long)getpid(), i);
    }
    char out[1024];
    if (ip_cmd(out, sizeof(out), "netns", "add", mh.ns[0], (const char *)NULL) != 0)
        mh_skip("multihost: `ip netns add` failed (no permission or no network "
                     "namespace support): %s", out);
    mh.made[0] = true;
    for (unsigned i = 1; i < MH_NS; i++) {
        cr_assert(eq(int, IP("netns", "add", mh.ns[i]), 0), "ip netns add %s", mh.ns[i]);
        mh.made[i] = true;
    }
    for (unsigned i = 0; i < MH_NS; i++) {
        /* IPv4 only: no router solicitations or link-local addresses on the veths */
        if (access("/usr/sbin/sysctl", X_OK) == 0) {
            mh_cmd_t c;
            cmd_init(&c, i, NULL, "/usr/sbin/sysctl");
            cmd_arg(&c, "-q");
            cmd_arg(&c, "-w");
            cmd_arg(&c, "net.ipv6.conf.all.disable_ipv6=1");
            cmd_arg(&c, "net.ipv6.conf.default.disable_ipv6=1");
            (void)run(c.argv, MH_CMD_TIMEOUT_MS, out, sizeof(out)); /* a kernel without IPv6 */
        }
        cr_assert(eq(int, IP("-n", mh.ns[i], "link", "set", "lo", "up"), 0), "lo up in %s",
                  mh.ns[i]);
    }
    const char *sw = mh.ns[MH_SWITCH];
    cr_assert(eq(int, IP("-n", sw, "link", "add", "mh-br", "type", "bridge"), 0), "bridge");
    for (unsigned h = 0; h < MH_HOSTS; h++) {
        char port[16], veth[16], addr[32];
        snprintf(port, sizeof(port), "mh-p%u", h);
        snprintf(veth, sizeof(veth), "mh-h%u", h);
        snprintf(addr, sizeof(addr), "198.18.0.%u/24", h + 1);
        /* made inside the switch, the peer end put straight into the host */
        cr_assert(eq(int, IP("-n", sw, "link", "add", port, "type", "veth", "peer", "name", veth,
                             "netns", mh.ns[h]), 0), "veth %s-%s", port, veth);
        cr_assert(eq(int, IP("-n", sw, "link", "set", port, "master", "mh-br", "up"), 0),
                  "port %s", port);
        cr_assert(eq(int, IP("-n", mh.ns[h], "addr", "add", addr, "dev", veth), 0), "%s", addr);
        cr_assert(eq(int, IP("-n", mh.ns[h], "link", "set", veth, "up"), 0), "%s up", veth);
    }
    cr_assert(eq(int, IP("-n", sw, "link", "set", "mh-br", "up"), 0), "bridge up");
    /* none of it in the root namespace */
    for (unsigned h = 0; h < MH_HOSTS; h++) {
        char veth[16];
        snprintf(veth, sizeof(veth), "mh-h%u", h);
        cr_assert(eq(u32, if_nametoindex(veth), 0), "%s appeared in the root namespace", veth);
    }
}

/* Start tq-controller on 198.18.0.1:0 and one tq-storage in h0; wait for the port. */
static void daemons_up(void)
{
    char port_file[128];
    snprintf(port_file, sizeof(port_file), "%s/port", mh.dir);
    mh_cmd_t c;
    cmd_init(&c, 0, NULL, TQ_BIN_DIR "/controller/tq-controller");
    cmd_arg(&c, "--listen");
    cmd_arg(&c, "198.18.0.1:0");
    cmd_arg(&c, "--port-file");
    cmd_arg(&c, port_file);
    mh.controller_i = spawn_logged(&c, "controller");

    uint64_t deadline = tq_test_now_ms() + MH_START_TIMEOUT_MS;
    char line[48] = "";
    for (int i = 0; i < MH_START_TIMEOUT_MS / MH_POLL_MS && tq_test_now_ms() < deadline; i++) {
        FILE *f = fopen(port_file, "r");
        if (f != NULL) {
            bool ok = fgets(line, sizeof(line), f) != NULL;
            fclose(f);
            line[strcspn(line, "\r\n")] = '\0';
            if (ok && strchr(line, ':') != NULL)
                break;
            line[0] = '\0';
        }
        pid_t pid = mh.procs[mh.controller_i].pid;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            mh.procs[mh.controller_i].pid = 0;
            break;
        }
        tq_test_sleep_ms(MH_POLL_MS);
    }
    if (line[0] == '\0')
        dump_logs();
    cr_assert(ne(str, line, ""), "no port file %s from tq-controller in %s", port_file,
              ns_name(0));
    /* it listens on h0's veth address, the one it was given */
    cr_assert(eq(int, strncmp(line, "198.18.0.1:", 11), 0), "tq-controller bound %s", line);
    snprintf(mh.controller, sizeof(mh.controller), "%s", line);
    mh.port = (uint16_t)atoi(line + 11);

    cmd_init(&c, 0, NULL, TQ_BIN_DIR "/storage/tq-storage");
    cmd_arg(&c, "--controller");
    cmd_arg(&c, mh.controller);
    cmd_arg(&c, "--pool-size");
    cmd_arg(&c, "128M");
    mh.storage_i = spawn_logged(&c, "storage");
}

/*
 * mh_client probe on host h: a client with this TQ_TRANSPORT (NULL: unset)
 * opens, sees a live unit, reaches the controller from the host's own
 * address, and nothing answers on this host's loopback at the controller's port.
 * Retried while the storage unit is still registering.
 * @return mh_client's exit status; its output in out.
 */
static int probe(unsigned h, const char *transport, char *out, size_t out_size)
{
    char local[32], loopback[32];
    snprintf(local, sizeof(local), "198.18.0.%u", h + 1);
    snprintf(loopback, sizeof(loopback), "127.0.0.1:%u", mh.port);
    mh_cmd_t c;
    cmd_init(&c, h, transport, TQ_MH_CLIENT);
    const char *args[] = {"probe", "--controller", mh.controller, "--expect-local", local,
                          "--unreachable", loopback};
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        cmd_arg(&c, args[i]);
    int rc = -1;
    uint64_t deadline = tq_test_now_ms() + MH_START_TIMEOUT_MS;
    for (int attempt = 0; attempt < 30 && tq_test_now_ms() < deadline; attempt++) {
        rc = run(c.argv, MH_CMD_TIMEOUT_MS, out, out_size);
        if (rc == 0 || rc == MH_EXIT_UNAVAILABLE)
            break;
        tq_test_sleep_ms(250); /* the unit may not have registered yet */
    }
    return rc;
}

/* SIGTERM to a daemon; it must exit 0 within the stop timeout. */
static int stop_daemon(int i)
{
    if (i < 0 || mh.procs[i].pid <= 0)
        return -1;
    kill(mh.procs[i].pid, SIGTERM);
    int rc = tq_test_reap(mh.procs[i].pid, MH_STOP_TIMEOUT_MS);
    mh.procs[i].pid = 0;
    return rc;
}

static bool alive(int i)
{
    if (i < 0 || mh.procs[i].pid <= 0)
        return false;
    if (waitpid(mh.procs[i].pid, NULL, WNOHANG) == 0)
        return true;
    mh.procs[i].pid = 0; /* reaped (or not ours): never signal that pid again */
    return false;
}

/* Whatever the test left, even after a failed assertion: processes, namespaces, files. */
static void teardown(void)
{
    for (unsigned i = 0; i < mh.num_procs; i++)
        if (mh.procs[i].pid > 0) {
            kill(mh.procs[i].pid, SIGKILL);
            tq_test_reap(mh.procs[i].pid, MH_STOP_TIMEOUT_MS);
            mh.procs[i].pid = 0;
        }
    for (unsigned i = 0; i < MH_NS; i++)
        if (mh.made[i]) {
            ns_delete(mh.ns[i]);
            mh.made[i] = false;
        }
    /* nothing of ours may remain */
    char out[16384];
    char *argv[] = {(char *)ip_path(), "netns", "list", NULL};
    if (ip_path() != NULL && run(argv, MH_CMD_TIMEOUT_MS, out, sizeof(out)) == 0)
        for (unsigned i = 0; i < MH_NS; i++)
            if (mh.ns[i][0] != '\0' && strstr(out, mh.ns[i]) != NULL)
                fprintf(stderr, "multihost: namespace %s is still there\n", mh.ns[i]);
    if (mh.dir[0] != '\0') {
        if (getenv("TQ_TEST_KEEP_LOGS") == NULL) {
            for (unsigned i = 0; i < mh.num_procs; i++)
                unlink(mh.procs[i].log);
            char path[96];
            snprintf(path, sizeof(path), "%s/port", mh.dir);
            unlink(path);
            snprintf(path, sizeof(path), "%s/port.tmp", mh.dir);
            unlink(path);
            if (rmdir(mh.dir) != 0)
                fprintf(stderr, "multihost: cannot remove %s: %s\n", mh.dir, strerror(errno));
        } else {
            fprintf(stderr, "multihost: logs kept in %s\n", mh.dir);
        }
    }
    memset(&mh, 0, sizeof(mh));
    mh.controller_i = mh.storage_i = -1;
}

/* After a scenario that passed: both daemons exit cleanly on SIGTERM. */
static void daemons_down(void)
{
    bool ok = alive(mh.controller_i) && alive(mh.storage_i);
    if (!ok)
        dump_logs();
    cr_assert(ok, "a daemon in %s died during the test (logs above)", ns_name(0));
    int storage = stop_daemon(mh.storage_i), controller = stop_daemon(mh.controller_i);
    if (storage != 0 || controller != 0)
        dump_logs();
    cr_assert(eq(int, storage, 0), "tq-storage did not exit cleanly on SIGTERM");
    cr_assert(eq(int, controller, 0), "tq-controller did not exit cleanly on SIGTERM");
}

/* The controller in h0 serves the other hosts through 198.18.0.1 only: each host
 * reaches it from its own address, and not at its own loopback. */
Test(multihost, controller_only_through_its_address, .fini = teardown, .timeout = 150)
{
    topology_up();
    daemons_up();
    for (unsigned h = 1; h < MH_HOSTS; h++) {
        char out[4096];
        int rc = probe(h, NULL, out, sizeof(out));
        if (rc != 0)
            dump_logs();
        cr_assert(eq(int, rc, 0), "probe from %s:\n%s", ns_name(h), out);
        char want[96];
        snprintf(want, sizeof(want), "control connection 198.18.0.%u:", h + 1);
        cr_assert(ne(ptr, strstr(out, want), NULL), "probe from %s: want \"%s\" in:\n%s",
                  ns_name(h), want, out);
        snprintf(want, sizeof(want), "-> %s\n", mh.controller);
        cr_assert(ne(ptr, strstr(out, want), NULL), "probe from %s: want \"%s\" in:\n%s",
                  ns_name(h), want, out);
    }
    daemons_down();
}

/*
 * A producer in h1 and a consumer in h2, started together with the consumer
 * first, so its stream waits on requests parked in the controller while the
 * producer writes over the network; both must exit 0 (every row and key matched).
 */
static void put_get_across_hosts(const char *transport)
{
    topology_up();
    daemons_up();
    char out[4096];
    int rc = probe(1, transport, out, sizeof(out));
    if (rc == MH_EXIT_UNAVAILABLE) {
        out[strcspn(out, "\n")] = '\0';
        mh_skip("multihost: TQ_TRANSPORT=%s is not available here: %s", transport, out);
    }
    if (rc != 0)
        dump_logs();
    cr_assert(eq(int, rc, 0), "probe from %s with TQ_TRANSPORT=%s:\n%s", ns_name(1), transport,
              out);

    uint64_t h1_tx = veth_counter(1, "tx_bytes"), h2_rx = veth_counter(2, "rx_bytes");
    const char *partition = tq_test_unique("mh");
    const char *common[] = {"--controller", mh.controller, "--partition", partition, "--rows",
                            MH_ROWS, "--batch", MH_BATCH, "--elems", MH_ELEMS, "--keys", MH_KEYS,
                            "--timeout-ms", "60000"};
    mh_cmd_t get, put;
    cmd_init(&get, 2, transport, TQ_MH_CLIENT);
    cmd_arg(&get, "get");
    cmd_init(&put, 1, transport, TQ_MH_CLIENT);
    cmd_arg(&put, "put");
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++) {
        cmd_arg(&get, common[i]);
        cmd_arg(&put, common[i]);
    }
    cmd_arg(&put, "--delay-ms");
    cmd_arg(&put, "20");
    char name[32];
    snprintf(name, sizeof(name), "get-%s", transport);
    int gi = spawn_logged(&get, name);
    tq_test_sleep_ms(300); /* the consumer is parked before the first row exists */
    snprintf(name, sizeof(name), "put-%s", transport);
    int pi = spawn_logged(&put, name);

    int status[2] = {-1, -1};
    int idx[2] = {pi, gi};
    uint64_t t0 = tq_test_now_ms(), deadline = t0 + MH_CLIENT_TIMEOUT_MS;
    unsigned done = 0;
    for (int i = 0; i < MH_CLIENT_TIMEOUT_MS / MH_POLL_MS && done < 2; i++) {
        if (tq_test_now_ms() >= deadline)
            break;
        for (int k = 0; k < 2; k++) {
            pid_t pid = mh.procs[idx[k]].pid;
            int st;
            if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
                status[k] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                mh.procs[idx[k]].pid = 0;
                done++;
                /* one failed: the other gets a short grace, not the whole timeout */
                if (status[k] != 0 && deadline > tq_test_now_ms() + MH_GRACE_MS)
                    deadline = tq_test_now_ms() + MH_GRACE_MS;
            }
        }
        if (done < 2)
            tq_test_sleep_ms(MH_POLL_MS);
    }
    uint64_t took = tq_test_now_ms() - t0;
    char what[2][64];
    for (int k = 0; k < 2; k++)
        if (status[k] < 0)
            snprintf(what[k], sizeof(what[k]), "still running at the deadline");
        else
            snprintf(what[k], sizeof(what[k]), "exit %d", status[k]);
    bool ok = status[0] == 0 && status[1] == 0;
    if (!ok)
        dump_logs();
    cr_assert(ok, "TQ_TRANSPORT=%s, after %llu ms: put in %s: %s; get in %s: %s (logs above)",
              transport, (unsigned long long)took, ns_name(1), what[0], ns_name(2), what[1]);

    /* the payload crossed the veths: out of h1, into h2 */
    uint64_t sent = veth_counter(1, "tx_bytes") - h1_tx, got = veth_counter(2, "rx_bytes") - h2_rx;
    cr_assert(ge(u64, sent, MH_TENSOR_BYTES), "bytes out of mh-h1 during the put");
    cr_assert(ge(u64, got, MH_TENSOR_BYTES), "bytes into mh-h2 during the get");
    fprintf(stderr, "multihost: %s: put in %s and get in %s done in %llu ms; %llu bytes out of "
            "mh-h1, %llu into mh-h2\n", transport, ns_name(1), ns_name(2),
            (unsigned long long)took, (unsigned long long)sent, (unsigned long long)got);
    daemons_down();
}

Test(multihost, put_get_ucx, .fini = teardown, .timeout = 150) { put_get_across_hosts("ucx"); }

Test(multihost, put_get_ofi, .fini = teardown, .timeout = 150) { put_get_across_hosts("ofi"); }
