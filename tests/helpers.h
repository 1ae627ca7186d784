/* helpers.h: shared test helpers: real daemon clusters, helper processes, clocks, raw sockets. */
#ifndef TQ_TESTS_HELPERS_H
#define TQ_TESTS_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "clock.h"
#include "tq/tq.h"

#define TQ_TEST_MAX_UNITS 8

/* Bounds on every wait the helpers do. */
#define TQ_TEST_START_TIMEOUT_MS 10000 /* port file, units registered */
#define TQ_TEST_STOP_TIMEOUT_MS  5000  /* SIGTERM to exit, then SIGKILL */

/*
 * One tq-controller and its tq-storage units, each a child process that dies
 * with the test (PR_SET_PDEATHSIG). Daemon output goes to log files in a
 * private temporary directory, shown on stderr when a start fails or when
 * TQ_TEST_KEEP_LOGS is set (the directory is then kept).
 */
typedef struct {
    pid_t    controller;
    pid_t    units[TQ_TEST_MAX_UNITS];
    unsigned num_units;
    char     address[128]; /* "127.0.0.1:PORT" of the controller */
    char     dir[64];      /* port file and logs */
} tq_test_cluster;

/*
 * Start a controller on 127.0.0.1:0 and num_units storage units of pool_size
 * ("64M") each; return once a client sees num_units live units.
 * @return 0, or -1 after printing why (everything started is stopped again).
 */
int  tq_test_cluster_start(tq_test_cluster *cl, unsigned num_units, const char *pool_size);
/* The same, with more arguments for the controller and for every unit
 * (NULL-terminated lists, or NULL). */
int  tq_test_cluster_start_with(tq_test_cluster *cl, unsigned num_units, const char *pool_size,
                                const char *const *controller_args, const char *const *unit_args);
/* The same, the controller run with RLIMIT_NOFILE set to *controller_nofile
 * (NULL: inherited). */
int  tq_test_cluster_start_limited(tq_test_cluster *cl, unsigned num_units, const char *pool_size,
                                   const char *const *controller_args,
                                   const char *const *unit_args,
                                   const struct rlimit *controller_nofile);
/* Start one more unit; it is unit cl->num_units - 1. @return 0, or -1 after
 * printing why. It is not waited for: see tq_test_wait_units. */
int  tq_test_cluster_add_unit(tq_test_cluster *cl, const char *pool_size,
                              const char *const *unit_args);
/* SIGTERM every daemon (units first), reap each within a bounded time, SIGKILL
 * the stubborn ones, remove the directory. Safe on a zeroed or stopped cluster.
 * @return how many daemons did not exit with status 0 (each named on stderr). */
int  tq_test_cluster_stop(tq_test_cluster *cl);
/* kill -9 unit i and reap it. @return 0, or -1 if there is no such unit. */
int  tq_test_cluster_kill_unit(tq_test_cluster *cl, unsigned i);
/* True while the controller process has not exited. */
bool tq_test_cluster_controller_alive(tq_test_cluster *cl);
/* The controller's port. */
uint16_t tq_test_cluster_port(const tq_test_cluster *cl);

/* Run a shell command (bounded to 60 s); what it writes to stdout into out (cap
 * bytes, truncated). @return its exit status, or -1 when it did not exit. */
int tq_test_run(const char *cmd, char *out, size_t cap);

/* A small RL step in partition: int32 field "prompt" on rows 0-7, "response"
 * on rows 0-4 (52 bytes in all), then task "train" takes 3 ready rows. */
void tq_test_put_rollout(tq_client *c, const char *partition);

/* partitions partitions "ppp...p_<i>" of one row, each with fields I64 fields
 * "fff...f_<k>": names of ~200 bytes, for answers (metrics, partitions) that
 * are large for few puts. Bounded to 120 s. */
#define TQ_TEST_MAX_FIELDS 64
void tq_test_make_partitions(tq_client *c, unsigned partitions, unsigned fields);

/*
 * One scenario, two setups (as UCX's UCT_INSTANTIATE_TEST_CASE): a client of a
 * real cluster (a controller and two storage units) or of the embedded
 * default. TQ_TEST_BOTH(suite, name, secs) { ...body using e->c... } defines
 * suite_cluster::name and suite_embedded::name; after a cluster scenario that
 * passed, every daemon must exit cleanly on SIGTERM. Use in a Criterion file.
 */
typedef struct {
    tq_client  *c;
    const char *address; /* the controller, for other processes; NULL when embedded */
} tq_test_env_t;

extern tq_test_env_t   tq_test_env;
extern tq_test_cluster tq_test_env_cluster;
void tq_test_env_setup_cluster(void);
void tq_test_env_setup_embedded(void);
/* After a scenario that passed: close the client, stop the daemons, assert clean exits. */
void tq_test_env_finish(void);
/* Whatever a failed scenario left behind (Criterion ignores asserts in .fini). */
void tq_test_env_teardown(void);

#define TQ_TEST_BOTH(suite, name, secs)                                                  \
    static void scenario_##name(const tq_test_env_t *e);                                 \
    Test(suite##_cluster, name, .init = tq_test_env_setup_cluster,                       \
         .fini = tq_test_env_teardown, .timeout = secs)                                  \
    {                                                                                    \
        scenario_##name(&tq_test_env);                                                   \
        tq_test_env_finish();                                                            \
    }                                                                                    \
    Test(suite##_embedded, name, .init = tq_test_env_setup_embedded,                     \
         .fini = tq_test_env_teardown, .timeout = secs)                                  \
    {                                                                                    \
        scenario_##name(&tq_test_env);                                                   \
    }                                                                                    \
    static void scenario_##name(const tq_test_env_t *e)

/* Wait until a client of `address` sees exactly n live units.
 * @return 0, or -1 on timeout (with the last count on stderr). */
int tq_test_wait_units(const char *address, unsigned n, int timeout_ms);

/*
 * Helper processes: this test binary re-executed (so the child is a fresh
 * process, not a fork of one with threads and transport state), running one
 * of the helper mains below before Criterion's main ever starts.
 *
 * "put_range": open a client to `address`, sleep delay_ms, then tq_put rows
 * [first, first + count) of `partition` at those explicit indexes, with one
 * I64 scalar field `field` whose value is tq_test_row_value(index). Exits 0
 * on success, else the negated status.
 */
pid_t tq_test_spawn_put_range(const char *address, const char *partition, const char *field,
                              int64_t first, uint32_t count, int delay_ms);
/*
 * This test binary run again as a helper process doing one job (see
 * helper_dispatch in helpers.c), with args after the job's name:
 *   put_loop ADDRESS PARTITION ROW_BYTES ROWS: tq_put of ROWS rows of ROW_BYTES
 *     bytes each, again and again, for at most 60 s;
 *   alloc_hold ADDRESS PARTITION BYTES READY_FILE: an ALLOC of BYTES with no
 *     COMMIT, READY_FILE created once it is answered, then held for 60 s;
 *   stream_hold ADDRESS PARTITION TASK FIELD BATCH PREFETCH TAKE FILE: a stream
 *     of FIELD for TASK; TAKE batches taken (read, their metas freed), their
 *     indexes written to FILE (one a line, the file appears whole), then the
 *     stream and what it fetched ahead held for 60 s: a consumer to kill.
 * @return its pid (it dies with the test), or -1.
 */
pid_t tq_test_spawn_job(const char *job, const char *const *args);
static inline int64_t tq_test_row_value(int64_t index) { return index * 7 + 3; }

/* Under AddressSanitizer freed memory waits in a quarantine, so a process's
 * VmRSS says nothing of what it still holds: tests check it only without. */
#if defined(__SANITIZE_ADDRESS__)
#define TQ_TEST_RSS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TQ_TEST_RSS_MEANINGFUL 0
#endif
#endif
#ifndef TQ_TEST_RSS_MEANINGFUL
#define TQ_TEST_RSS_MEANINGFUL 1
#endif

/* CPU time (user + system) of a process so far, from /proc; 0 when unknown. */
uint64_t tq_test_proc_cpu_ms(pid_t pid);
/* CPU time of this process (all its threads) so far. */
uint64_t tq_test_self_cpu_ms(void);
/* The VmRSS of a process in kB, or -1. */
long     tq_test_proc_rss_kb(pid_t pid);

/* Reap child pid within timeout_ms (SIGKILL after that). @return its exit status
 * (0..255), 128 + signal when killed, or -1 if it could not be reaped. */
int tq_test_reap(pid_t pid, int timeout_ms);

/* ---- assertions ---- */

/* Criterion 2.4's C gt(T, a, b) is !lt(a, b): it holds when a == b. The suites
 * write lt(T, b, a) instead, and ci/test.sh refuses a gt( in tests/. */

/* Index of the first byte where a and b differ over n bytes, or -1. */
int64_t tq_test_first_diff(const void *a, const void *b, size_t n);

/* Bit-exact comparison of (got, got_len) with (want, want_len) that prints the
 * lengths, or the first differing offset and both bytes there. Needs
 * <criterion/criterion.h> and <criterion/new/assert.h> before this header. */
#define tq_assert_bytes_eq(got, got_len, want, want_len, what)                                \
    do {                                                                                      \
        const uint8_t *g_ = (const uint8_t *)(got), *w_ = (const uint8_t *)(want);            \
        size_t gl_ = (got_len), wl_ = (want_len);                                             \
        cr_assert(eq(sz, gl_, wl_), "%s: length", (what));                                    \
        cr_assert(wl_ == 0 || g_ != NULL, "%s: no data", (what));                             \
        int64_t d_ = wl_ ? tq_test_first_diff(g_, w_, wl_) : -1;                              \
        cr_assert(eq(i64, d_, -1), "%s: first difference at byte %lld: got 0x%02x, want 0x%02x", \
                  (what), (long long)d_, d_ >= 0 ? g_[d_] : 0, d_ >= 0 ? w_[d_] : 0);         \
    } while (0)

/* A name unique in this test run: "<prefix>_<pid>_<counter>", in a static
 * ring of buffers (valid for the next 16 calls). */
const char *tq_test_unique(const char *prefix);

/* ---- raw control connections, for protocol abuse ---- */

/* Connect to 127.0.0.1:port with TCP_NODELAY. @return the fd, or -1. */
int tq_test_connect(uint16_t port, int timeout_ms);
/* Write all of buf (MSG_NOSIGNAL). @return 0, or -1 (e.g. the peer closed). */
int tq_test_write_all(int fd, const void *buf, size_t len);
/* Read whatever comes until the peer closes (or resets) or the deadline; the
 * first head_cap - 1 bytes into head, NUL-terminated. @return the bytes read. */
size_t  tq_test_drain(int fd, uint64_t deadline_ms, char *head, size_t head_cap);
/* Read exactly len bytes before the deadline. @return len, 0 when the peer
 * closed (or reset) first, -1 on timeout or error. */
ssize_t tq_test_read_exact(int fd, void *buf, size_t len, uint64_t deadline_ms);

/* What came back for a bad frame. */
typedef struct {
    bool     closed;     /* the peer closed the connection */
    bool     replied;    /* a frame came back */
    uint16_t type;       /* of that frame */
    uint8_t  flags;
    uint64_t request_id;
    int32_t  status;     /* its status */
    char     message[256];
    uint8_t *body;       /* malloc'd body (status included), for the caller to free */
    uint32_t body_len;
} tq_test_answer_t;

/* Wait up to timeout_ms for a reply frame or a close.
 * @return 0 with *a filled, -1 on timeout or on a malformed reply. */
int  tq_test_read_answer(int fd, int timeout_ms, tq_test_answer_t *a);
void tq_test_answer_free(tq_test_answer_t *a);

/* Build a whole frame (header + body) into a malloc'd buffer. */
uint8_t *tq_test_frame(uint16_t type, uint8_t flags, uint64_t request_id, const void *body,
                       uint32_t body_len, size_t *len_p);
/* A HELLO frame of a client with the $TQ_TOKEN (or no) token. */
uint8_t *tq_test_hello_frame(uint64_t request_id, size_t *len_p);

/* ---- commands, and hosts made of network namespaces ---- */

/* fork + exec argv[0] (an absolute path) with envp (NULL: only a PATH), stdout
 * and stderr to out_fd, stdin from /dev/null; it dies with the test. */
pid_t tq_test_start(char *const argv[], char *const envp[], int out_fd);
/* Run argv (as tq_test_start) to completion within timeout_ms, its output in
 * out (NUL-terminated, cut to out_size). @return its exit status, 128 +
 * signal, or -1. */
int   tq_test_run_argv(char *const argv[], int timeout_ms, char *out, size_t out_size);

#define TQ_TEST_NET_MAX_HOSTS 3
#define TQ_TEST_NET_CMD_MS    10000      /* one ip command, one probe */
#define TQ_TEST_NET_IFNAME    "mh-h%u"   /* a host's veth, inside its namespace */

/*
 * Hosts for multi-host tests, all inside namespaces the test makes and
 * deletes: tq<tag><pid>-h<i> with 198.18.0.<i+1>/24 on its veth mh-h<i>, and
 * tq<tag><pid>-sw, a bridge mh-br with ports mh-p<i>, the other ends of the
 * hosts' veths. Every veth pair is made inside the switch with its peer end
 * put straight into its host, so the root namespace never holds one; no
 * route or interface of the root namespace is touched. <pid> is the test
 * process's, so parallel runs do not collide, and a run removes what a dead
 * run of the same test binary left (namespaces, log directories) first.
 */
typedef struct {
    unsigned num_hosts;
    char     ns[TQ_TEST_NET_MAX_HOSTS + 1][48]; /* the hosts, then the switch */
    bool     made[TQ_TEST_NET_MAX_HOSTS + 1];
    char     dir[80];                           /* logs: /tmp/tq-<tag>-<pid>-XXXXXX */
} tq_test_net;

/* Make them. @return 0; -1 with the reason in why when this process may not
 * (not root, no ip(8), no network namespaces): the caller skips, nothing is
 * left. A later failure is a Criterion assertion. */
int  tq_test_net_up(tq_test_net *n, const char *tag, unsigned num_hosts, char *why, size_t cap);
/* Kill what runs inside, delete the namespaces, remove the log directory
 * (kept with TQ_TEST_KEEP_LOGS). Safe on a zeroed or half-made one. */
void tq_test_net_down(tq_test_net *n);
/* "198.18.0.<h+1>" (in a static ring of buffers). */
const char *tq_test_net_ip(unsigned h);
/* `ip ARGS...` (NULL-terminated) within TQ_TEST_NET_CMD_MS; on failure
 * prints the command and its output. @return its exit status. */
int  tq_test_ip(char *out, size_t out_size, ...);
const char *tq_test_ip_path(void);

/* A command line `ip netns exec NS env -i VAR=... binary args...` for host
 * h: PATH, the sanitizers' settings and TQ_LOG are handed through, TQ_TOKEN
 * only with_token; add variables with tq_test_cmd_env, then the binary and
 * its arguments with tq_test_cmd_arg. */
typedef struct {
    char     env[16][256];
    char    *argv[64];
    unsigned num_env, argc;
} tq_test_cmd_t;
void tq_test_cmd_init(tq_test_cmd_t *c, const tq_test_net *n, unsigned h, bool with_token);
void tq_test_cmd_env(tq_test_cmd_t *c, const char *fmt, ...);
void tq_test_cmd_arg(tq_test_cmd_t *c, const char *arg);

/* A process started in the background with its output in <dir>/<name>.log. */
typedef struct {
    pid_t pid; /* 0 once reaped */
    int   status;
    char  name[32];
    char  log[160];
} tq_test_proc_t;
/* Start argv (as tq_test_start). Asserts it started. */
void tq_test_proc_spawn(tq_test_proc_t *p, const char *dir, char *const argv[], const char *name);
/* The end of its log, on stderr. */
void tq_test_proc_dump(const tq_test_proc_t *p);
/* Still running? (Reaps it if not.) */
bool tq_test_proc_alive(tq_test_proc_t *p);
/* Send sig (0: none), reap within timeout_ms (SIGKILL after). @return as tq_test_reap. */
int  tq_test_proc_wait(tq_test_proc_t *p, int sig, int timeout_ms);
/* Does the file at path hold text, within timeout_ms? */
bool tq_test_file_has(const char *path, const char *text, int timeout_ms);

#endif
