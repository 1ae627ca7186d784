/* test_security.c: strangers on the data plane, and pools that would take the host down, against real daemons. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"

#ifndef TQ_MH_CLIENT
#error "TQ_MH_CLIENT must be the path of the mh_client program"
#endif
#ifndef TQ_TEST_TRANSPORT
#error "TQ_TEST_TRANSPORT must be the path of test_transport"
#endif
#ifndef TQ_STRANGER
#define TQ_STRANGER NULL /* built without libfabric */
#endif

/*
 * Strangers: hosts in network namespaces (tq_test_net_up): h0 (198.18.0.1)
 * runs tq-controller, tq-storage and a victim client (mh_client); h1
 * (198.18.0.2) runs a stranger without the token: mh_client, which asks the
 * controller for addresses, and stranger (tests/stranger.c), a libfabric
 * program that reads and writes the unit's ports with guessed keys.
 *
 * Pools: tq-storage asked for more memory than there is, run in a mount
 * namespace of its own whose /dev/shm is a fresh tmpfs, so what it leaves
 * there is all that is there.
 */
#define SEC_MAX_PROCS   8
#define SEC_START_MS    15000
#define SEC_CLIENT_MS   60000
#define SEC_STRANGER_MS 120000
#define SEC_STOP_MS     5000
#define SEC_ROWS        "16"
#define SEC_ELEMS       "1024" /* 4 KiB of float32 per row */
#define SEC_KEYS        "4"

#define GIB (1ull << 30)
#define MIB (1ull << 20)

static struct {
    tq_test_net    net;
    tq_test_proc_t procs[SEC_MAX_PROCS];
    unsigned       num_procs;
    char           controller[64];
    char           token[40];
    char           cgroup[512]; /* made by a test, removed by teardown */
} sec;

static void teardown(void)
{
    for (unsigned i = 0; i < sec.num_procs; i++)
        (void)tq_test_proc_wait(&sec.procs[i], SIGKILL, SEC_STOP_MS);
    tq_test_net_down(&sec.net);
    if (sec.cgroup[0] != '\0' && rmdir(sec.cgroup) != 0 && errno != ENOENT)
        fprintf(stderr, "security: cannot remove cgroup %s: %s\n", sec.cgroup, strerror(errno));
    memset(&sec, 0, sizeof(sec));
}

/* Criterion runs no .fini after a skip: tear down first. */
#define sec_skip(...)                                                                          \
    do {                                                                                       \
        teardown();                                                                            \
        cr_skip_test(__VA_ARGS__);                                                             \
    } while (0)

static void dump_logs(void)
{
    for (unsigned i = 0; i < sec.num_procs; i++)
        tq_test_proc_dump(&sec.procs[i]);
}

static void hosts_up(unsigned n)
{
    char why[1200];
    if (tq_test_net_up(&sec.net, "sec", n, why, sizeof(why)) != 0)
        sec_skip("security: %s", why);
}

static tq_test_proc_t *spawn(tq_test_cmd_t *c, const char *name)
{
    cr_assert(lt(u32, sec.num_procs, SEC_MAX_PROCS), "test bug: too many processes");
    tq_test_proc_t *p = &sec.procs[sec.num_procs++];
    tq_test_proc_spawn(p, sec.net.dir, c->argv, name);
    return p;
}

/* A shared secret for this test, handed to the daemons and the victim only. */
static void token_up(void)
{
    uint8_t raw[16];
    cr_assert(eq(long, (long)getrandom(raw, sizeof(raw), 0), (long)sizeof(raw)));
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(sec.token + 2 * i, 3, "%02x", raw[i]);
    setenv("TQ_TOKEN", sec.token, 1);
}

/* tq-controller on host h listening on `listen`; sets sec.controller. */
static void controller_up(unsigned h, const char *listen)
{
    char port_file[160];
    snprintf(port_file, sizeof(port_file), "%s/port", sec.net.dir);
    tq_test_cmd_t c;
    tq_test_cmd_init(&c, &sec.net, h, true);
    const char *args[] = {TQ_BIN_DIR "/controller/tq-controller", "--listen", listen,
                          "--port-file", port_file};
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        tq_test_cmd_arg(&c, args[i]);
    tq_test_proc_t *p = spawn(&c, "controller");
    char line[64] = "";
    uint64_t deadline = tq_test_now_ms() + SEC_START_MS;
    while (line[0] == '\0' && tq_test_now_ms() < deadline && tq_test_proc_alive(p)) {
        FILE *f = fopen(port_file, "r");
        if (f != NULL) {
            if (fgets(line, sizeof(line), f) == NULL || strchr(line, ':') == NULL)
                line[0] = '\0';
            fclose(f);
        }
        if (line[0] == '\0')
            tq_test_sleep_ms(20);
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0')
        dump_logs();
    cr_assert(ne(str, line, ""), "no port file from tq-controller in %s", sec.net.ns[h]);
    snprintf(sec.controller, sizeof(sec.controller), "%s", line);
}

/* tq-storage on host h with env (NULL-terminated "VAR=value"s) and extra
 * arguments; returns once it says it registered. */
static tq_test_proc_t *unit_up(unsigned h, const char *const *env, const char *const *extra)
{
    tq_test_cmd_t c;
    tq_test_cmd_init(&c, &sec.net, h, true);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        tq_test_cmd_env(&c, "%s", env[i]);
    const char *args[] = {TQ_BIN_DIR "/storage/tq-storage", "--controller", sec.controller,
                          "--pool-size", "64M"};
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        tq_test_cmd_arg(&c, args[i]);
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        tq_test_cmd_arg(&c, extra[i]);
    tq_test_proc_t *p = spawn(&c, "storage");
    bool up = tq_test_file_has(p->log, "unit ", SEC_START_MS);
    if (!up)
        dump_logs();
    cr_assert(up, "tq-storage in %s did not register within %d ms", sec.net.ns[h], SEC_START_MS);
    return p;
}

/* mh_client ROLE on host h (with the token or not), to completion. Its output in out. */
static int client(unsigned h, bool with_token, const char *const *env, const char *role,
                  const char *partition, char *out, size_t cap)
{
    tq_test_cmd_t c;
    tq_test_cmd_init(&c, &sec.net, h, with_token);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++)
        tq_test_cmd_env(&c, "%s", env[i]);
    tq_test_cmd_arg(&c, TQ_MH_CLIENT);
    const char *args[] = {role, "--controller", sec.controller, "--partition", partition,
                          "--rows", SEC_ROWS, "--batch", SEC_ROWS, "--elems", SEC_ELEMS,
                          "--keys", SEC_KEYS, "--timeout-ms", "20000"};
    size_t n = strcmp(role, "probe") == 0 ? 3 : sizeof(args) / sizeof(args[0]);
    for (size_t i = 0; i < n; i++)
        tq_test_cmd_arg(&c, args[i]);
    return tq_test_run_argv(c.argv, SEC_CLIENT_MS, out, cap);
}

/* ---- sockets of a process ---- */

typedef struct {
    char     proto[8]; /* tcp, tcp6, udp, udp6 */
    char     addr[INET6_ADDRSTRLEN];
    uint16_t port;
    bool     listening; /* tcp LISTEN, or a bound udp socket */
    bool     loopback;
} sock_t;

static bool has_inode(const unsigned long *inodes, unsigned n, unsigned long inode)
{
    for (unsigned i = 0; i < n; i++)
        if (inodes[i] == inode)
            return true;
    return false;
}

/* The IP sockets of pid, from /proc/<pid>/net/{tcp,tcp6,udp,udp6} (its
 * network namespace's tables) matched to the inodes of its descriptors. */
static unsigned sockets_of(pid_t pid, sock_t *out, unsigned cap)
{
    unsigned long inodes[512];
    unsigned ni = 0, n = 0;
    char path[128], link[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert(d != NULL, "opendir %s: %s", path, strerror(errno));
    for (struct dirent *e; ni < 512 && (e = readdir(d)) != NULL;) {
        snprintf(path, sizeof(path), "/proc/%d/fd/%.32s", (int)pid, e->d_name);
        ssize_t len = readlink(path, link, sizeof(link) - 1);
        if (len <= 0)
            continue;
        link[len] = '\0';
        unsigned long inode;
        if (sscanf(link, "socket:[%lu]", &inode) == 1)
            inodes[ni++] = inode;
    }
    closedir(d);
    static const char *const tables[] = {"tcp", "tcp6", "udp", "udp6"};
    for (size_t t = 0; t < 4; t++) {
        snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, tables[t]);
        FILE *f = fopen(path, "r");
        char line[512];
        for (int k = 0; f != NULL && k < 65536 && fgets(line, sizeof(line), f) != NULL; k++) {
            char local[64];
            unsigned port, state;
            unsigned long inode;
            if (sscanf(line, " %*d: %63[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*s %*s %lu", local, &port,
                       &state, &inode) != 4 || !has_inode(inodes, ni, inode) || n >= cap)
                continue;
            sock_t *s = &out[n++];
            snprintf(s->proto, sizeof(s->proto), "%s", tables[t]);
            s->port = (uint16_t)port;
            bool v6 = strlen(local) == 32;
            uint32_t words[4] = {0};
            for (int w = 0; w < (v6 ? 4 : 1); w++) {
                char hex[9];
                memcpy(hex, local + 8 * w, 8);
                hex[8] = '\0';
                words[w] = (uint32_t)strtoul(hex, NULL, 16); /* the kernel prints raw words */
            }
            inet_ntop(v6 ? AF_INET6 : AF_INET, words, s->addr, sizeof(s->addr));
            s->listening = t < 2 ? state == 0x0A : true;
            struct in6_addr a6;
            memcpy(&a6, words, sizeof(a6));
            s->loopback = v6 ? IN6_IS_ADDR_LOOPBACK(&a6) ||
                                   (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127)
                             : (ntohl(words[0]) >> 24) == 127;
        }
        if (f != NULL)
            fclose(f);
    }
    return n;
}

/* ---- strangers ---- */

/*
 * A victim in h0 puts rows and keys; a stranger in h1 without the token
 * (a) asks the controller and is refused before any address (TQ_ERR_AUTH),
 * and (b) reads and writes, with guessed keys and offsets, every port the
 * unit listens on beyond loopback (from its namespace's socket table: what
 * a scan finds); then the victim reads every row and key intact.
 */
Test(security, stranger_without_token, .fini = teardown, .timeout = 280)
{
    static const char *const stranger = TQ_STRANGER;
    if (stranger == NULL)
        cr_skip_test("security: built without libfabric: no stranger program");
    hosts_up(2);
    token_up();
    controller_up(0, "198.18.0.1:0");
    /* libfabric's tcp provider: the ofi endpoint a stranger on the network reaches */
    const char *unit_env[] = {"FI_PROVIDER=tcp", NULL};
    tq_test_proc_t *unit = unit_up(0, unit_env, NULL);
    const char *victim_env[] = {"TQ_TRANSPORT=ofi", "FI_PROVIDER=tcp", NULL};
    const char *partition = tq_test_unique("victim");
    char out[16384];
    int rc = client(0, true, victim_env, "put", partition, out, sizeof(out));
    if (rc != 0)
        dump_logs();
    cr_assert(eq(int, rc, 0), "the victim's put: exit %d:\n%s", rc, out);

    /* (a) no token, or a wrong one: refused, and so no unit address */
    rc = client(1, false, NULL, "probe", partition, out, sizeof(out));
    fprintf(stderr, "security: probe without the token: exit %d: %s", rc, out);
    cr_assert(eq(int, rc, 1), "a client without the token: exit %d:\n%s", rc, out);
    cr_assert(ne(ptr, strstr(out, tq_status_string(TQ_ERR_AUTH)), NULL),
              "a client without the token was not refused for it:\n%s", out);
    const char *wrong_env[] = {"TQ_TOKEN=not-the-token", NULL};
    rc = client(1, false, wrong_env, "probe", partition, out, sizeof(out));
    cr_assert(ne(ptr, strstr(out, tq_status_string(TQ_ERR_AUTH)), NULL),
              "a client with a wrong token: exit %d:\n%s", rc, out);

    /* (b) the unit's ports, as a scan of h0 finds them */
    sock_t socks[64];
    unsigned ns = sockets_of(unit->pid, socks, 64);
    char ports[16][8];
    unsigned np = 0;
    for (unsigned i = 0; i < ns; i++) {
        fprintf(stderr, "security: unit socket %s %s:%u%s\n", socks[i].proto, socks[i].addr,
                socks[i].port, socks[i].listening ? " listening" : "");
        if (socks[i].listening && !socks[i].loopback && strncmp(socks[i].proto, "tcp", 3) == 0 &&
            np < 16)
            snprintf(ports[np++], sizeof(ports[0]), "%u", socks[i].port);
    }
    cr_assert(lt(u32, 0, np), "the unit listens on no port beyond loopback: nothing to attack");
    tq_test_cmd_t c;
    tq_test_cmd_init(&c, &sec.net, 1, false);
    tq_test_cmd_env(&c, "FI_PROVIDER=tcp");
    tq_test_cmd_env(&c, "FI_TCP_IFACE=" TQ_TEST_NET_IFNAME, 1);
    tq_test_cmd_arg(&c, stranger);
    tq_test_cmd_arg(&c, "198.18.0.1");
    for (unsigned i = 0; i < np; i++)
        tq_test_cmd_arg(&c, ports[i]);
    uint64_t t0 = tq_test_now_ms();
    rc = tq_test_run_argv(c.argv, SEC_STRANGER_MS, out, sizeof(out));
    fprintf(stderr, "security: stranger at %u port(s), %llu ms, exit %d:\n%s", np,
            (unsigned long long)(tq_test_now_ms() - t0), rc, out);
    cr_assert(ne(ptr, strstr(out, "with an endpoint"), NULL), "the stranger did not run:\n%s", out);
    int stranger_rc = rc;

    /* the victim's bytes, intact */
    char got[16384];
    rc = client(0, true, victim_env, "get", partition, got, sizeof(got));
    fprintf(stderr, "security: the victim's get after the stranger: exit %d%s%.2000s\n", rc,
            rc != 0 ? ":\n" : "", rc != 0 ? got : "");
    if (rc != 0)
        dump_logs();
    cr_assert(eq(int, stranger_rc, 0), "the stranger read or wrote the unit's memory:\n%s", out);
    cr_assert(eq(int, rc, 0), "the victim's get after the stranger: exit %d:\n%s", rc, got);
    cr_assert(tq_test_proc_alive(unit), "tq-storage died during the test");
    for (unsigned i = sec.num_procs; i-- > 0;)
        cr_assert(eq(int, tq_test_proc_wait(&sec.procs[i], SIGTERM, SEC_STOP_MS), 0),
                  "%s did not exit cleanly on SIGTERM", sec.procs[i].name);
}

/* Every socket of pid that listens (or is bound, for udp) is on loopback. */
static void assert_loopback_only(pid_t pid, const char *what)
{
    sock_t socks[64];
    unsigned n = sockets_of(pid, socks, 64), listening = 0, outside = 0;
    char list[2048] = "";
    for (unsigned i = 0; i < n; i++) {
        if (!socks[i].listening)
            continue;
        listening++;
        outside += !socks[i].loopback;
        size_t len = strlen(list);
        snprintf(list + len, sizeof(list) - len, " %.7s:%.46s:%u", socks[i].proto, socks[i].addr,
                 socks[i].port);
    }
    fprintf(stderr, "security: %s listens on%s\n", what, list);
    cr_assert(lt(u32, 0, listening), "%s listens on nothing: nothing was checked", what);
    cr_assert(eq(u32, outside, 0), "%s listens beyond loopback:%s", what, list);
}

/*
 * A unit that reaches its controller over loopback listens on loopback only,
 * with every transport left to its defaults (no UCX_NET_DEVICES, FI_PROVIDER
 * or FI_TCP_IFACE), though its host has 198.18.0.1 too; and moves a client's
 * rows.
 */
Test(security, loopback_unit_listens_on_loopback_only, .fini = teardown, .timeout = 150)
{
    hosts_up(1);
    token_up();
    controller_up(0, "127.0.0.1:0");
    tq_test_proc_t *unit = unit_up(0, NULL, NULL);
    assert_loopback_only(unit->pid, "a unit of a loopback controller");
    const char *partition = tq_test_unique("loop");
    char out[16384];
    int rc = client(0, true, NULL, "put", partition, out, sizeof(out));
    cr_assert(eq(int, rc, 0), "put through the loopback unit: exit %d:\n%s", rc, out);
    rc = client(0, true, NULL, "get", partition, out, sizeof(out));
    cr_assert(eq(int, rc, 0), "get through the loopback unit: exit %d:\n%s", rc, out);
    assert_loopback_only(unit->pid, "the unit, after serving a client,");
}

/*
 * --data-addr moves the data plane off the controller's address: a unit of a
 * loopback controller told 198.18.0.1 (by flag, then by $TQ_DATA_ADDR) listens
 * there only. An address this host does not have is a bad setting: exit 2.
 */
Test(security, data_addr_setting, .fini = teardown, .timeout = 150)
{
    hosts_up(1);
    token_up();
    controller_up(0, "127.0.0.1:0");
    const char *extra[] = {"--data-addr", "198.18.0.1", NULL};
    tq_test_proc_t *unit = unit_up(0, NULL, extra);
    sock_t socks[64];
    unsigned n = sockets_of(unit->pid, socks, 64), on_it = 0, elsewhere = 0;
    for (unsigned i = 0; i < n; i++)
        if (socks[i].listening && strncmp(socks[i].proto, "tcp", 3) == 0) {
            fprintf(stderr, "security: --data-addr 198.18.0.1: listening on %s:%u\n",
                    socks[i].addr, socks[i].port);
            if (strcmp(socks[i].addr, "198.18.0.1") == 0)
                on_it++;
            else
                elsewhere++;
        }
    cr_assert(lt(u32, 0, on_it), "nothing listens on 198.18.0.1");
    cr_assert(eq(u32, elsewhere, 0), "a data-plane socket listens elsewhere than 198.18.0.1");
    cr_assert(eq(int, tq_test_proc_wait(unit, SIGTERM, SEC_STOP_MS), 0));

    const char *bad[] = {"TQ_DATA_ADDR=203.0.113.9", NULL};
    tq_test_cmd_t c;
    tq_test_cmd_init(&c, &sec.net, 0, true);
    tq_test_cmd_env(&c, "%s", bad[0]);
    tq_test_cmd_arg(&c, TQ_BIN_DIR "/storage/tq-storage");
    tq_test_cmd_arg(&c, "--controller");
    tq_test_cmd_arg(&c, sec.controller);
    char out[4096];
    int rc = tq_test_run_argv(c.argv, SEC_START_MS, out, sizeof(out));
    fprintf(stderr, "security: TQ_DATA_ADDR=203.0.113.9: exit %d: %s", rc, out);
    cr_assert(eq(int, rc, 2), "a data address not of this host: exit %d:\n%s", rc, out);
    cr_assert(ne(ptr, strstr(out, "203.0.113.9 is not an address"), NULL), "message:\n%s", out);
}

/* ---- pools that do not fit ---- */

/* A byte count of /proc/meminfo ("MemAvailable"), in bytes. */
static uint64_t meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    cr_assert(f != NULL);
    char line[256];
    uint64_t v = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':')
            v = strtoull(line + strlen(key) + 1, NULL, 10) * 1024u;
    fclose(f);
    cr_assert(lt(u64, 0, v), "%s not in /proc/meminfo", key);
    return v;
}

/*
 * Run `wrapper tq-storage args` (a command that runs the rest of its command
 * line: to join a cgroup, change user) in a mount namespace whose /dev/shm
 * is a new tmpfs. The controller it is given does not exist: a unit refused
 * never gets as far. @return its exit status; its output in out, then
 * "status N" and "left:" with the names left in /dev/shm.
 */
static int storage_alone(const char *wrapper, const char *args, char *out, size_t cap)
{
    char script[2048];
    snprintf(script, sizeof(script),
             "mount -t tmpfs -o size=256m tq-test-shm /dev/shm || exit 99; "
             "%s " TQ_BIN_DIR "/storage/tq-storage --controller 127.0.0.1:1 %s 2>&1; "
             "echo \"status $?\"; echo \"left:$(ls -A /dev/shm | tr '\\n' ' ')\"",
             wrapper, args);
    char *argv[] = {"/usr/bin/unshare", "-m", "/bin/sh", "-c", script, NULL};
    if (access(argv[0], X_OK) != 0 || geteuid() != 0)
        cr_skip_test("security: needs root and unshare(1) for a private /dev/shm");
    uint64_t t0 = tq_test_now_ms();
    int rc = tq_test_run_argv(argv, 30000, out, cap);
    fprintf(stderr, "security: tq-storage %s (%s): %llu ms:\n%s", args, wrapper,
            (unsigned long long)(tq_test_now_ms() - t0), out);
    cr_assert(ne(int, rc, 99), "cannot mount a tmpfs on /dev/shm:\n%s", out);
    const char *st = strstr(out, "status ");
    cr_assert(st != NULL, "no status from the shell:\n%s", out);
    return atoi(st + 7);
}

static void assert_left_nothing(const char *out)
{
    const char *left = strstr(out, "left:");
    cr_assert(left != NULL);
    cr_assert(eq(int, strspn(left + 5, " \n") == strlen(left + 5), 1),
              "files left in /dev/shm: %s", left + 5);
}

/*
 * A pool 1 GiB over what is free (MemAvailable, and /dev/shm's free space:
 * whichever is more) is refused before anything is allocated: exit 2,
 * naming the pool and MemAvailable, and nothing in /dev/shm. Never run against a tq-storage without the check:
 * it would touch more memory than the host has.
 */
Test(pool_limits, over_mem_available, .timeout = 60)
{
    uint64_t avail = 0;
    for (int i = 0; i < 5; i++) { /* the most seen, so the size stays over it */
        uint64_t a = meminfo("MemAvailable");
        avail = a > avail ? a : avail;
        tq_test_sleep_ms(20);
    }
    struct statvfs vfs;
    cr_assert(eq(int, statvfs("/dev/shm", &vfs), 0), "statvfs /dev/shm: %s", strerror(errno));
    uint64_t shm_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    uint64_t pool = ((avail > shm_free ? avail : shm_free) + GIB) & ~(MIB - 1);
    fprintf(stderr, "security: MemAvailable %llu, /dev/shm free %llu: asking for %llu\n",
            (unsigned long long)avail, (unsigned long long)shm_free, (unsigned long long)pool);
    char args[64], out[8192], want[64];
    snprintf(args, sizeof(args), "--pool-size %llu", (unsigned long long)pool);
    int status = storage_alone("", args, out, sizeof(out));
    cr_assert(eq(int, status, 2), "a pool over MemAvailable: exit %d:\n%s", status, out);
    snprintf(want, sizeof(want), "a pool of %llu bytes", (unsigned long long)pool);
    cr_assert(ne(ptr, strstr(out, want), NULL), "the message names the pool:\n%s", out);
    cr_assert(ne(ptr, strstr(out, "MemAvailable is "), NULL), "the message names the limit:\n%s",
              out);
    assert_left_nothing(out);
}

/* This process's memory cgroup: its directory and limit file, for cgroup
 * v1 (the memory hierarchy) or v2 (the unified one, when it delegates the
 * memory controller to children). false: neither is writable here. */
static bool own_memory_cgroup(char *dir, size_t cap, const char **limit_file_p)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[512], v1[400] = "", v2[400] = "";
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        if (strstr(c1 + 1, "memory") != NULL)
            snprintf(v1, sizeof(v1), "/sys/fs/cgroup/memory%s", c2 + 1);
        else if (strcmp(line, "0") == 0 && c1[1] == '\0')
            snprintf(v2, sizeof(v2), "/sys/fs/cgroup%s", c2 + 1);
    }
    if (f != NULL)
        fclose(f);
    char probe[512];
    snprintf(probe, sizeof(probe), "%s/memory.limit_in_bytes", v1);
    if (v1[0] != '\0' && access(probe, F_OK) == 0 && access(v1, W_OK) == 0) {
        snprintf(dir, cap, "%s", v1);
        *limit_file_p = "memory.limit_in_bytes";
        return true;
    }
    snprintf(probe, sizeof(probe), "%s/cgroup.subtree_control", v2);
    FILE *sc = v2[0] != '\0' ? fopen(probe, "r") : NULL;
    bool delegated = false;
    if (sc != NULL) {
        delegated = fgets(line, sizeof(line), sc) != NULL && strstr(line, "memory") != NULL;
        fclose(sc);
    }
    if (delegated && access(v2, W_OK) == 0) {
        snprintf(dir, cap, "%s", v2);
        *limit_file_p = "memory.max";
        return true;
    }
    return false;
}

/*
 * Inside a memory cgroup of 256 MiB, a pool of 384 MiB is refused at start,
 * exit 2, naming the cgroup's limit; nothing is left in /dev/shm. (A unit
 * without the check is killed by the cgroup's OOM killer instead, or fails
 * later: never a clear refusal.)
 */
Test(pool_limits, over_cgroup_limit, .fini = teardown, .timeout = 60)
{
    char parent[400];
    const char *limit_file = NULL;
    if (geteuid() != 0 || !own_memory_cgroup(parent, sizeof(parent), &limit_file))
        cr_skip_test("security: no memory cgroup this test may make a child of");
    snprintf(sec.cgroup, sizeof(sec.cgroup), "%s/tq-security-%ld", parent, (long)getpid());
    cr_assert(eq(int, mkdir(sec.cgroup, 0755), 0), "mkdir %s: %s", sec.cgroup, strerror(errno));
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", sec.cgroup, limit_file);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL, "%s: %s", path, strerror(errno));
    fprintf(f, "%llu\n", 256ull * MIB);
    cr_assert(eq(int, fclose(f), 0), "writing %s: %s", path, strerror(errno));
    /* a shell that joins the cgroup and becomes tq-storage: only it is inside */
    char wrapper[700], out[8192];
    snprintf(wrapper, sizeof(wrapper), "/bin/sh -c 'echo $$ > %s/cgroup.procs && exec \"$0\" \"$@\"'",
             sec.cgroup);
    int status = storage_alone(wrapper, "--pool-size 384M", out, sizeof(out));
    cr_assert(eq(int, status, 2), "a pool over the cgroup's limit: exit %d:\n%s", status, out);
    cr_assert(ne(ptr, strstr(out, "a pool of 402653184 bytes"), NULL), "message:\n%s", out);
    cr_assert(ne(ptr, strstr(out, path), NULL), "the limit's file, %s:\n%s", path, out);
    cr_assert(ne(ptr, strstr(out, "limit 268435456"), NULL), "the limit:\n%s", out);
    assert_left_nothing(out);
}

/*
 * --transport verbs pins the pool: without CAP_IPC_LOCK and with an 8 MiB
 * RLIMIT_MEMLOCK, a 64 MiB pool is refused at start, exit 2, naming the limit.
 */
Test(pool_limits, over_memlock_for_verbs, .timeout = 60)
{
    if (access("/usr/bin/setpriv", X_OK) != 0 || access("/usr/bin/prlimit", X_OK) != 0)
        cr_skip_test("security: needs setpriv(1) and prlimit(1)");
    char out[8192];
    int status = storage_alone("prlimit --memlock=8388608:8388608 setpriv --reuid=65534 "
                               "--regid=65534 --clear-groups --",
                               "--transport verbs --pool-size 64M", out, sizeof(out));
    cr_assert(eq(int, status, 2), "a pool over RLIMIT_MEMLOCK for verbs: exit %d:\n%s", status,
              out);
    cr_assert(ne(ptr, strstr(out, "RLIMIT_MEMLOCK is 8388608 bytes"), NULL), "message:\n%s", out);
    assert_left_nothing(out);
}

/* ---- shared memory goes with its unit ---- */

/* Names under /dev/shm that pid maps or holds open, linked ones only. */
static unsigned shm_files_of(pid_t pid, char names[][256], unsigned cap)
{
    unsigned n = 0;
    char path[128], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL, "%s: %s", path, strerror(errno));
    while (n < cap && fgets(line, sizeof(line), f) != NULL) {
        char *p = strstr(line, " /dev/shm/");
        if (p == NULL || strstr(line, "(deleted)") != NULL)
            continue;
        p += strlen(" /dev/shm/");
        p[strcspn(p, "\n")] = '\0';
        bool seen = false;
        for (unsigned i = 0; i < n; i++)
            seen = seen || strcmp(names[i], p) == 0;
        if (!seen)
            snprintf(names[n++], 256, "%s", p);
    }
    fclose(f);
    return n;
}

/* SysV segments that pid created, from /proc/sysvipc/shm. */
static unsigned sysv_of(pid_t pid, long *ids, unsigned cap)
{
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    char line[512];
    unsigned n = 0;
    while (f != NULL && n < cap && fgets(line, sizeof(line), f) != NULL) {
        long key, id, perms, size, cpid;
        if (sscanf(line, "%ld %ld %lo %ld %ld", &key, &id, &perms, &size, &cpid) == 5 &&
            cpid == pid)
            ids[n++] = id;
    }
    if (f != NULL)
        fclose(f);
    return n;
}

static bool sysv_exists(long id)
{
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    char line[512];
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        long key, sid;
        found = sscanf(line, "%ld %ld", &key, &sid) == 2 && sid == id;
    }
    if (f != NULL)
        fclose(f);
    return found;
}

/*
 * A unit serving UCX (its pool in SysV memory) and libfabric's shm provider
 * (a region file in /dev/shm) is killed with SIGKILL: its SysV segments go
 * with it at once, and its /dev/shm files are gone once another unit has
 * started on this node.
 */
Test(pool_limits, kill9_leaves_no_shared_memory, .timeout = 90)
{
    setenv("FI_PROVIDER", "shm", 1);
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "64M"), 0));
    pid_t pid = cl.units[0];
    char files[16][256];
    long ids[16];
    unsigned nf = shm_files_of(pid, files, 16), ni = sysv_of(pid, ids, 16);
    for (unsigned i = 0; i < nf; i++)
        fprintf(stderr, "security: unit %d has /dev/shm/%s\n", (int)pid, files[i]);
    for (unsigned i = 0; i < ni; i++)
        fprintf(stderr, "security: unit %d made SysV segment %ld\n", (int)pid, ids[i]);
    cr_assert(lt(u32, 0, nf), "the unit has no file in /dev/shm: FI_PROVIDER=shm not served?");
    cr_assert(lt(u32, 0, ni), "the unit made no SysV segment: is its pool not UCX's?");

    cr_assert(eq(int, tq_test_cluster_kill_unit(&cl, 0), 0));
    for (unsigned i = 0; i < ni; i++)
        cr_assert(not(sysv_exists(ids[i])), "SysV segment %ld outlived its unit", ids[i]);
    cr_assert(eq(int, tq_test_cluster_add_unit(&cl, "64M", NULL), 0));
    uint64_t t0 = tq_test_now_ms();
    unsigned left = nf;
    while (left > 0 && tq_test_now_ms() - t0 < 15000) {
        left = 0;
        for (unsigned i = 0; i < nf; i++) {
            char path[300];
            snprintf(path, sizeof(path), "/dev/shm/%.255s", files[i]);
            left += access(path, F_OK) == 0;
        }
        if (left > 0)
            tq_test_sleep_ms(50);
    }
    fprintf(stderr, "security: %u of the killed unit's %u /dev/shm files left after %llu ms\n",
            left, nf, (unsigned long long)(tq_test_now_ms() - t0));
    for (unsigned i = 0; i < nf; i++) {
        char path[300];
        snprintf(path, sizeof(path), "/dev/shm/%.255s", files[i]);
        cr_assert(ne(int, access(path, F_OK), 0), "%s of the killed unit is still there", path);
    }
    cr_assert(eq(int, tq_test_cluster_stop(&cl), 0), "daemons did not stop cleanly");
}

/*
 * The transport suite's tests that kill peer processes (three of them over
 * libfabric's shm provider), run with a /dev/shm of their own: it is empty
 * afterwards.
 */
Test(pool_limits, transport_suite_leaves_nothing_in_dev_shm, .timeout = 280)
{
    char script[1024];
    snprintf(script, sizeof(script),
             "mount -t tmpfs -o size=1g tq-test-shm /dev/shm || exit 99; "
             "%s --jobs 1 --filter 'transport*/peer_*' >/dev/null 2>&1; "
             "echo \"status $?\"; echo \"left:$(ls -A /dev/shm | tr '\\n' ' ')\"",
             TQ_TEST_TRANSPORT);
    char *argv[] = {"/usr/bin/unshare", "-m", "/bin/sh", "-c", script, NULL};
    if (access(argv[0], X_OK) != 0 || geteuid() != 0)
        cr_skip_test("security: needs root and unshare(1) for a private /dev/shm");
    char out[4096];
    uint64_t t0 = tq_test_now_ms();
    int rc = tq_test_run_argv(argv, 270000, out, sizeof(out));
    fprintf(stderr, "security: transport peer tests in a private /dev/shm, %llu ms: exit %d:\n%s",
            (unsigned long long)(tq_test_now_ms() - t0), rc, out);
    cr_assert(ne(int, rc, 99), "cannot mount a tmpfs on /dev/shm");
    cr_assert(ne(ptr, strstr(out, "status 0"), NULL), "the transport tests failed:\n%s", out);
    assert_left_nothing(out);
}
