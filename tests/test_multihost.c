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
 * The topology (tq_test_net_up, helpers.c), all of it inside namespaces this
 * test makes and deletes:
 *
 *   tqmh<pid>-h0  198.18.0.1/24 on mh-h0: tq-controller, tq-storage
 *   tqmh<pid>-h1  198.18.0.2/24 on mh-h1: producer (mh_client put)
 *   tqmh<pid>-h2  198.18.0.3/24 on mh-h2: consumer (mh_client get)
 *   tqmh<pid>-sw  bridge mh-br with ports mh-p0..2, the other ends of the hosts' veths
 *
 * Every process inside runs as `ip netns exec NS env -i VAR=... binary`, with
 * the transports pinned to TCP on the host's veth.
 */
#define MH_HOSTS     3
#define MH_MAX_PROCS 16

#define MH_CMD_TIMEOUT_MS    TQ_TEST_NET_CMD_MS /* one ip command, one probe */
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

static struct {
    tq_test_net net;
    char        controller[64]; /* "198.18.0.1:PORT" */
    uint16_t    port;
    tq_test_proc_t procs[MH_MAX_PROCS];
    unsigned    num_procs;
    int         controller_i, storage_i; /* indexes into procs, -1 when none */
} mh = {.controller_i = -1, .storage_i = -1};

static const char *ns_name(unsigned i) { return mh.net.ns[i]; }

/* ---- processes ---- */

/* transport: the client's TQ_TRANSPORT, or NULL for the daemons (which serve all). */
static void cmd_init(tq_test_cmd_t *c, unsigned h, const char *transport, const char *binary)
{
    tq_test_cmd_init(c, &mh.net, h, true);
    /* TCP on this host's veth only: no loopback, shared memory or other devices */
    tq_test_cmd_env(c, "UCX_TLS=tcp");
    tq_test_cmd_env(c, "UCX_NET_DEVICES=" TQ_TEST_NET_IFNAME, h);
    tq_test_cmd_env(c, "FI_PROVIDER=tcp");
    tq_test_cmd_env(c, "FI_TCP_IFACE=" TQ_TEST_NET_IFNAME, h);
    if (transport != NULL)
        tq_test_cmd_env(c, "TQ_TRANSPORT=%s", transport);
    tq_test_cmd_arg(c, binary);
}

#define run tq_test_run_argv
#define cmd_arg tq_test_cmd_arg

/* Start c in the background, output to <dir>/<name>.log. @return its index in procs. */
static int spawn_logged(tq_test_cmd_t *c, const char *name)
{
    cr_assert(lt(u32, mh.num_procs, MH_MAX_PROCS), "test bug: too many processes");
    tq_test_proc_spawn(&mh.procs[mh.num_procs], mh.net.dir, c->argv, name);
    return (int)mh.num_procs++;
}

static void dump_logs(void)
{
    for (unsigned i = 0; i < mh.num_procs; i++)
        tq_test_proc_dump(&mh.procs[i]);
}

static void teardown(void);

/* Criterion runs no .fini after a skip: tear down first. */
#define mh_skip(...)                                                                           \
    do {                                                                                       \
        teardown();                                                                            \
        cr_skip_test(__VA_ARGS__);                                                             \
    } while (0)

/* ---- namespaces ---- */

/* A counter of a host's veth, read inside its namespace. */
static uint64_t veth_counter(unsigned h, const char *counter)
{
    char path[96], out[128];
    snprintf(path, sizeof(path), "/sys/class/net/" TQ_TEST_NET_IFNAME "/statistics/%s", h, counter);
    tq_test_cmd_t c;
    cmd_init(&c, h, NULL, "/bin/cat");
    cmd_arg(&c, path);
    int rc = run(c.argv, MH_CMD_TIMEOUT_MS, out, sizeof(out));
    cr_assert(eq(int, rc, 0), "cat %s in %s: %s", path, ns_name(h), out);
    return strtoull(out, NULL, 10);
}

/* Make the namespaces, the switch and the links. Skips the test when this
 * process may not (not root, no ip(8), no network namespaces). */
static void topology_up(void)
{
    char why[1200];
    if (tq_test_net_up(&mh.net, "mh", MH_HOSTS, why, sizeof(why)) != 0)
        mh_skip("multihost: %s", why);
}

/* Start tq-controller on 198.18.0.1:0 and one tq-storage in h0; wait for the port. */
static void daemons_up(void)
{
    char port_file[128];
    snprintf(port_file, sizeof(port_file), "%s/port", mh.net.dir);
    tq_test_cmd_t c;
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
    tq_test_cmd_t c;
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
    return i < 0 ? -1 : tq_test_proc_wait(&mh.procs[i], SIGTERM, MH_STOP_TIMEOUT_MS);
}

static bool alive(int i)
{
    return i >= 0 && tq_test_proc_alive(&mh.procs[i]);
}

/* Whatever the test left, even after a failed assertion: processes, namespaces, files. */
static void teardown(void)
{
    for (unsigned i = 0; i < mh.num_procs; i++)
        (void)tq_test_proc_wait(&mh.procs[i], SIGKILL, MH_STOP_TIMEOUT_MS);
    tq_test_net_down(&mh.net);
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
    tq_test_cmd_t get, put;
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
