/* storage.c: a passive storage unit: one pinned pool, registered for remote read and write. */
#define TQ_LOG_COMPONENT "storage"
#include "storage/storage.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctrl_conn.h"
#include "storage/memlimit.h"
#include "transport_registry.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"
#include "util/netif.h"

#define HEARTBEAT_MS 1000
#define PROGRESS_WAIT_MS 100

/* One transport serving the pool, with the thread that progresses it: UCX
 * over TCP emulates RMA in software, so the target's worker must turn. */
typedef struct {
    struct tq_storage      *owner;
    const tq_transport_ops *ops;
    tq_transport           *tr;
    tq_transport_mem       *mem;
    void                   *address, *region;
    size_t                  address_len, region_len;
    pthread_t               thread;
    bool                    started;
} served_t;

struct tq_storage {
    void        *pool;
    uint64_t     pool_size;
    bool         pool_from_transport; /* freed by mem_deregister */
    bool         lockable;            /* the limits let us lock the pool */
    /* Where every transport's endpoints listen; bind_any: wherever each likes. */
    tq_netif_addr_t data;
    bool         bind_any;
    served_t     served[TQ_WIRE_MAX_TRANSPORTS];
    unsigned     num_served;
    tq_ctrl_conn conn;
    uint32_t     unit_id;
    int          stop_fd;
    atomic_bool  stopping;
};

static void *progress_thread(void *arg)
{
    served_t *sv = arg;
    while (!atomic_load(&sv->owner->stopping))
        sv->ops->progress(sv->tr, PROGRESS_WAIT_MS);
    return NULL;
}

/* Our own pool memory: huge pages when the system has them, locked if allowed. */
static void *pool_map(uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    if (p != MAP_FAILED)
        return p;
    tq_info("no huge pages for the pool (%m): using normal pages");
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, size, MADV_HUGEPAGE);
    return p;
}

static int serve(tq_storage *s, const tq_transport_ops *ops)
{
    served_t *sv = &s->served[s->num_served];
    memset(sv, 0, sizeof(*sv));
    sv->owner = s;
    sv->ops = ops;
    tq_transport_params_t params = {0};
    if (!s->bind_any)
        params = (tq_transport_params_t){(const struct sockaddr *)&s->data.addr,
                                         s->data.addr_len, s->data.iface};
    int rc = ops->init(&params, &sv->tr);
    if (rc != TQ_OK) {
        /* a transport whose hardware is not here is no fault: say so quietly */
        tq_log_at(rc == TQ_ERR_UNSUPPORTED ? TQ_LOG_INFO : TQ_LOG_WARN,
                  "transport %s unavailable: %s", ops->name, tq_status_string(rc));
        return rc;
    }
    if (s->pool == NULL) { /* the first transport picks the memory peers reach best */
        void *addr;
        rc = ops->mem_alloc(sv->tr, s->pool_size, &addr, &sv->mem);
        if (rc == TQ_OK) {
            s->pool = addr;
            s->pool_from_transport = true;
            tq_info("pool: %llu bytes allocated by %s, mappable by peers on this node",
                    (unsigned long long)s->pool_size, ops->name);
        } else if ((s->pool = pool_map(s->pool_size)) == NULL) {
            tq_error("cannot allocate a %llu-byte pool: %m", (unsigned long long)s->pool_size);
            rc = TQ_ERR_NOMEM;
            goto err;
        }
        /* Only within the limits, so locking never fails half way. */
        if (!s->lockable)
            tq_info("pool not locked in memory (RLIMIT_MEMLOCK is too low): it may be paged out");
        else if (mlock(s->pool, s->pool_size) != 0)
            tq_info("pool not locked in memory (%m): it may be paged out");
    }
    if (sv->mem == NULL && (rc = ops->mem_register(sv->tr, s->pool, s->pool_size, &sv->mem)) != TQ_OK)
        goto err;
    rc = ops->address(sv->tr, &sv->address, &sv->address_len);
    if (rc == TQ_OK)
        rc = ops->mem_pack(sv->tr, sv->mem, &sv->region, &sv->region_len);
    if (rc != TQ_OK)
        goto err;
    s->num_served++;
    return TQ_OK;
err:
    free(sv->address);
    free(sv->region);
    if (sv->mem != NULL)
        ops->mem_deregister(sv->tr, sv->mem);
    ops->fini(sv->tr);
    return rc;
}

static int register_unit(tq_storage *s)
{
    char err[TQ_ERRMSG_MAX] = "";
    tq_msg_register_t m = {.capacity = s->pool_size, .num_transports = (uint8_t)s->num_served};
    for (unsigned i = 0; i < s->num_served; i++) {
        served_t *sv = &s->served[i];
        m.transports[i] = (tq_wire_transport_t){
            {sv->ops->name, (uint16_t)strlen(sv->ops->name)},
            {sv->address, (uint32_t)sv->address_len},
            {sv->region, (uint32_t)sv->region_len},
        };
    }
    size_t off = tq__ctrl_begin(&s->conn, TQ_MSG_REGISTER_UNIT);
    tq_wire_encode_register(&s->conn.out, &m);
    tq_rbuf r;
    tq_msg_register_reply_t reply;
    int rc = tq__ctrl_call(&s->conn, off, 5000, &r, err);
    if (rc == TQ_OK)
        rc = tq_wire_decode_register_reply(&r, &reply);
    if (rc != TQ_OK) {
        tq_error("the controller refused the unit: %s", err[0] ? err : tq_status_string(rc));
        return rc;
    }
    s->unit_id = reply.unit_id;
    tq_info("registered as unit %u (incarnation %u), pool %llu bytes", reply.unit_id,
            reply.incarnation, (unsigned long long)s->pool_size);
    return TQ_OK;
}

/* Refuse a pool the kernel cannot give (MemAvailable, the memory cgroup) or
 * lock (RLIMIT_MEMLOCK, for verbs, which pins it): asking anyway would have
 * the OOM killer take this or other processes once the pool is touched. */
static int pool_fits(tq_storage *s, const tq_storage_config_t *cfg)
{
    tq_memlimit_t m;
    char err[512];
    tq__memlimit_read(&m);
    bool must_lock = cfg->transport != NULL && strcmp(cfg->transport, "verbs") == 0;
    if (tq__memlimit_check(&m, s->pool_size, must_lock, err, sizeof(err)) != 0) {
        tq_error("%s", err);
        return TQ_ERR_INVALID;
    }
    s->lockable = tq__memlimit_lockable(&m, s->pool_size);
    return TQ_OK;
}

/* The data plane's address: the one given, else the one this host reaches
 * the controller by (a unit of a loopback controller stays on loopback). */
static int data_address(tq_storage *s, const tq_storage_config_t *cfg, bool from_socket)
{
    char err[512];
    const char *spec = cfg->data_addr;
    if (!from_socket && spec != NULL && strcmp(spec, "any") == 0) {
        s->bind_any = true;
        tq_warn("data plane on every interface (data address 'any')");
        return TQ_OK;
    }
    if (from_socket ? tq__netif_of_socket(s->conn.fd, &s->data, err, sizeof(err))
                    : tq__netif_resolve(spec, &s->data, err, sizeof(err))) {
        tq_error("data address: %s", err);
        return from_socket ? TQ_ERR_IO : TQ_ERR_INVALID;
    }
    tq_info("data plane on %s (%s)", s->data.text, s->data.iface);
    return TQ_OK;
}

int tq__storage_create(const tq_storage_config_t *cfg, tq_storage **s_p)
{
    if (cfg->controller == NULL || cfg->pool_size < 4096)
        return TQ_ERR_INVALID;
    tq_storage *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return TQ_ERR_NOMEM;
    s->conn.fd = -1;
    s->pool_size = TQ_ALIGN_UP(cfg->pool_size, 4096);
    s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = s->stop_fd < 0 ? TQ_ERR_IO : TQ_OK;
    if (rc == TQ_OK)
        rc = pool_fits(s, cfg);
    if (rc == TQ_OK && cfg->data_addr != NULL)
        rc = data_address(s, cfg, false);
    /* Connected (and authenticated) before anything listens: the default
     * data address is this connection's own. */
    if (rc == TQ_OK) {
        char err[TQ_ERRMSG_MAX] = "";
        rc = tq__ctrl_connect(&s->conn, cfg->controller, cfg->token, TQ_ROLE_STORAGE, 5000, err);
        if (rc != TQ_OK)
            tq_error("cannot reach the controller %s: %s", cfg->controller, err);
    }
    if (rc == TQ_OK && cfg->data_addr == NULL)
        rc = data_address(s, cfg, true);
    bool all = cfg->transport == NULL || strcmp(cfg->transport, "all") == 0;
    for (size_t i = 0; rc == TQ_OK && tq__transports[i] != NULL; i++)
        if (all || strcmp(cfg->transport, tq__transports[i]->name) == 0)
            serve(s, tq__transports[i]);
    if (rc == TQ_OK && s->num_served == 0) {
        tq_error("no usable transport (asked for '%s')", all ? "all" : cfg->transport);
        rc = TQ_ERR_UNSUPPORTED;
    }
    for (unsigned i = 0; rc == TQ_OK && i < s->num_served; i++) {
        if (pthread_create(&s->served[i].thread, NULL, progress_thread, &s->served[i]) != 0)
            rc = TQ_ERR_NOMEM;
        else
            s->served[i].started = true;
    }
    if (rc == TQ_OK)
        rc = register_unit(s);
    if (rc != TQ_OK) {
        tq__storage_destroy(s);
        return rc;
    }
    *s_p = s;
    return TQ_OK;
}

uint32_t tq__storage_unit_id(const tq_storage *s) { return s->unit_id; }

void tq__storage_stop(tq_storage *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->stop_fd, &one, sizeof(one));
    (void)n;
}

int tq__storage_run(tq_storage *s)
{
    uint64_t next_beat = 0;
    for (;;) {
        uint64_t now = tq__now_ms();
        if (now >= next_beat) {
            char err[TQ_ERRMSG_MAX] = "";
            if (tq__ctrl_send(&s->conn, tq__ctrl_begin(&s->conn, TQ_MSG_HEARTBEAT), err) != TQ_OK) {
                tq_error("lost the controller: %s", err);
                return TQ_ERR_CONNECTION;
            }
            next_beat = now + HEARTBEAT_MS;
        }
        struct pollfd pfd[2] = {{.fd = s->stop_fd, .events = POLLIN},
                                {.fd = s->conn.fd, .events = POLLIN}};
        int n = poll(pfd, 2, (int)(next_beat - now));
        if (n < 0 && errno != EINTR) {
            tq_error("poll: %m");
            return TQ_ERR_IO;
        }
        if (n > 0 && pfd[0].revents) {
            /* told to stop: say so, so the controller knows it is no fault */
            char err[TQ_ERRMSG_MAX] = "";
            tq__ctrl_send(&s->conn, tq__ctrl_begin(&s->conn, TQ_MSG_UNIT_LEAVE), err);
            return TQ_OK;
        }
        if (n > 0 && pfd[1].revents) {
            /* the controller sends nothing unasked: this is a close or an error */
            char buf[256];
            ssize_t got = recv(s->conn.fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) {
                tq_error("the controller closed the connection");
                return TQ_ERR_CONNECTION;
            }
        }
    }
}

void tq__storage_destroy(tq_storage *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stopping, true);
    tq__ctrl_close(&s->conn);
    for (unsigned i = 0; i < s->num_served; i++)
        if (s->served[i].started)
            pthread_join(s->served[i].thread, NULL);
    /* deregister in reverse: the first transport may own the pool memory */
    for (unsigned i = s->num_served; i-- > 0;) {
        served_t *sv = &s->served[i];
        free(sv->address);
        free(sv->region);
        sv->ops->mem_deregister(sv->tr, sv->mem);
        sv->ops->fini(sv->tr);
    }
    if (s->pool != NULL && !s->pool_from_transport)
        munmap(s->pool, s->pool_size);
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    free(s);
}
