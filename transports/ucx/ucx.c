/* ucx.c: the tq_transport ops over UCX's UCP one-sided RMA (put/get). */
#define TQ_LOG_COMPONENT "ucx"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ucm/api/ucm.h>
#include <ucp/api/ucp.h>

#include "tq/transport.h"
#include "util/common.h"
#include "util/list.h"
#include "util/log.h"
#include "util/netif.h"
#include "util/proc.h"
#include "regcache.h"
#include "rma.h"
#include "rma_blob.h"

/* Local buffers at least this long get a cached registration; smaller ones are
 * cheaper to let UCX copy. */
#define TQ_UCX_CACHE_MIN_LEN   (64u * 1024u)
/* Bounds on waits the caller did not ask for (close, draining a failed ep). */
#define TQ_UCX_CLOSE_MS        3000
#define TQ_UCX_DRAIN_MS        2000
/* Longest single sleep on the event fd, so a missed wakeup costs little. */
#define TQ_UCX_WAIT_SLICE_MS   100
/* Wakeups in a row with nothing to progress before napping instead, and the nap. */
#define TQ_UCX_FRUITLESS_MAX   8
#define TQ_UCX_NAP_MS          2

/* Blob layouts (little endian). Address: magic, version, flags, 2 zero bytes,
 * payload length u32, checksum u32, boot id [16], pid u32, zero u32, process
 * start time u64, then the UCX worker address. Region: magic, version, 3 zero
 * bytes, base u64, length u64, rkey length u32, checksum u32, rkey. The
 * checksum covers everything but itself, so a garbled blob is refused before
 * UCX parses it. */
#define TQ_UCX_ADDR_MAGIC      0x41555154u /* "TQUA" */
#define TQ_UCX_REGION_MAGIC    0x52555154u /* "TQUR" */
#define TQ_UCX_BLOB_VERSION    1u
#define TQ_UCX_ADDR_HDR        48u
#define TQ_UCX_ADDR_F_SHM      0x01u /* address flags: has shared memory transports */
#define TQ_UCX_REGION_HDR      32u
#define TQ_UCX_BLOB_MAX        (1u << 20) /* far above any real address or rkey */

/* How ucp_mem_map allocates a pool: SysV shared memory first, which peers on
 * this node map, removed (IPC_RMID) as soon as it is made, so it goes with
 * its last mapper however the unit ends; never UCX's POSIX segments, whose
 * /dev/shm file is linked while UCX writes the whole pool into it (a unit
 * killed meanwhile leaves it behind). Failing those, private memory. */
#define TQ_UCX_ALLOC_PRIO      "md:sysv,huge,thp,mmap,heap"
#define TQ_UCX_SHM_DIR         "/dev/shm"
#define TQ_UCX_NET_DEVICES_MAX 1024

struct tq_transport {
    ucp_context_h ctx;
    ucp_worker_h  worker;
    int           efd;
    tq_proc_id_t  self;        /* this process, as a peer on the same node knows it */
    bool          has_shm;     /* the context has a transport mapping peers' memory */
    bool          posix_pool;  /* $UCX_ALLOC_PRIO lets a pool be a /dev/shm file */
    tq_list       eps, mems, zombies;
    uint64_t      inflight; /* requests not yet completed, over all eps */
    bool          woke;      /* the last wait saw the event fd ready */
    uint32_t      fruitless; /* wakeups in a row that found nothing to progress */
    /* Registrations of callers' buffers, kept while we hear of every unmap
     * (cache_on). Nothing holds an entry: evicting or reaping one waits
     * until nothing at all is in flight. */
    tq__regcache *cache;
    bool          cache_on;
};

struct tq_transport_ep {
    tq_list       link;
    tq_transport *tr;
    ucp_ep_h      ep;
    tq_list       regions;
    size_t        outstanding;
    bool          failed;       /* peer died or a flush timed out: close it */
    int           first_error;  /* first operation error since the last flush */
    /* Same-node peer over shared memory: UCX has no peer failure detection
     * there, so we watch the peer process instead. -1 otherwise. */
    int           pidfd;
};

struct tq_transport_mem {
    tq_list   link;
    ucp_mem_h memh;
    void     *addr;
    size_t    len;
};

struct tq_transport_region {
    tq_list          link;
    tq_transport_ep *ep;   /* NULL once the ep was closed */
    ucp_rkey_h       rkey;
    bool             released; /* by the caller, while requests still used it */
    uint64_t         base, len;
};

/* ---- small helpers ----------------------------------------------------- */

static int tq_ucx_status(ucs_status_t st)
{
    if (UCS_IS_LINK_ERROR(st) || UCS_IS_ENDPOINT_ERROR(st))
        return TQ_ERR_CONNECTION;
    switch (st) {
    case UCS_OK:
        return TQ_OK;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
        return TQ_ERR_NOMEM;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_BUFFER_TOO_SMALL:
    case UCS_ERR_OUT_OF_RANGE:
        return TQ_ERR_INVALID;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
    case UCS_ERR_NO_DEVICE:
        return TQ_ERR_UNSUPPORTED;
    case UCS_ERR_TIMED_OUT:
        return TQ_ERR_TIMEOUT;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CANCELED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_SOME_CONNECTS_FAILED:
        return TQ_ERR_CONNECTION;
    case UCS_ERR_NO_ELEM:
        return TQ_ERR_NOT_FOUND;
    case UCS_ERR_ALREADY_EXISTS:
        return TQ_ERR_EXISTS;
    default:
        return TQ_ERR_IO;
    }
}

static bool tq_ucx_is_conn_error(int rc)
{
    return rc == TQ_ERR_CONNECTION || rc == TQ_ERR_TIMEOUT;
}


/* ---- same-node peers ------------------------------------------------------ */

/*
 * UCX 1.13 selects shared memory transports only for endpoints without peer
 * error handling, and over tcp a dead peer must be detected (else requests
 * hang). So: a peer that is provably a live process on this node gets an
 * endpoint without UCX error handling, kept only if all its lanes are shared
 * memory (operations are then local copies that cannot hang), and we detect
 * the peer's death ourselves through a pidfd. Everything else uses
 * UCP_ERR_HANDLING_MODE_PEER.
 */

/* A pidfd for the peer if it is a live process on this node that shares
 * memory with us, else -1. */
static int tq_ucx_local_peer(tq_transport *tr, const uint8_t *hdr)
{
    if (!tr->has_shm || !(hdr[5] & TQ_UCX_ADDR_F_SHM))
        return -1;
    tq_proc_id_t peer;
    memcpy(peer.boot_id, hdr + 16, 16);
    peer.pid = tq_get_le32(hdr + 32);
    peer.start_time = tq_get_le64(hdr + 40);
    return tq__proc_watch(&tr->self, &peer);
}

/* Is name[0..len) a transport that moves data through shared memory? The
 * first four map the peer's memory; cma and self are local copies too. */
static bool tq_ucx_is_shm_tl(const char *name, size_t len, bool mapping_only)
{
    static const char *const shm[] = {"sysv", "posix", "xpmem", "knem", "cma", "self"};
    size_t n = mapping_only ? 4 : sizeof(shm) / sizeof(shm[0]);
    for (size_t i = 0; i < n; i++)
        if (strlen(shm[i]) == len && strncmp(name, shm[i], len) == 0)
            return true;
    return false;
}

/* UCX 1.13 has no query for an endpoint's or a context's transports, so read
 * what ucp_{ep,context}_print_info print. The result is NULL on failure. */
static char *tq_ucx_info_text(ucp_context_h ctx, ucp_ep_h uep)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (f == NULL)
        return NULL;
    if (uep != NULL)
        ucp_ep_print_info(uep, f);
    else
        ucp_context_print_info(ctx, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Transport names in the info text: after `key` and then `sep` on the same
 * line, up to '/'. Calls back per name; false from the callback or a line it
 * cannot parse stops with false. Counts lines in *n. */
static bool tq_ucx_each_tl(const char *text, const char *key, const char *sep,
                           bool (*fn)(const char *name, size_t len, void *arg), void *arg,
                           int *n)
{
    *n = 0;
    for (const char *line = strstr(text, key); line != NULL; line = strstr(line + 1, key)) {
        const char *eol = strchr(line, '\n');
        const char *p = strstr(line, sep);
        const char *slash = p != NULL ? strchr(p, '/') : NULL;
        if (slash == NULL || (eol != NULL && slash > eol))
            return false;
        p += strlen(sep);
        while (*p == ' ')
            p++;
        if (!fn(p, (size_t)(slash - p), arg))
            return false;
        (*n)++;
    }
    return true;
}

static bool tq_ucx_lane_is_shm(const char *name, size_t len, void *arg)
{
    (void)arg;
    /* "lane[0]:  3:sysv/memory.0": skip the resource index. */
    const char *colon = memchr(name, ':', len);
    if (colon == NULL)
        return false;
    return tq_ucx_is_shm_tl(colon + 1, len - (size_t)(colon + 1 - name), false);
}

static bool tq_ucx_note_shm(const char *name, size_t len, void *arg)
{
    if (tq_ucx_is_shm_tl(name, len, true))
        *(bool *)arg = true;
    return true;
}

/* True when every lane of uep is a shared memory transport; any doubt: false. */
static bool tq_ucx_lanes_all_shm(ucp_ep_h uep)
{
    char *text = tq_ucx_info_text(NULL, uep);
    int lanes = 0;
    bool ok = text != NULL && tq_ucx_each_tl(text, "lane[", "]:", tq_ucx_lane_is_shm, NULL, &lanes);
    free(text);
    return ok && lanes > 0;
}

/* Can this context map a peer's memory (sysv, posix, ...)? */
static bool tq_ucx_ctx_has_shm(ucp_context_h ctx)
{
    char *text = tq_ucx_info_text(ctx, NULL);
    bool shm = false;
    int n = 0;
    if (text != NULL && !tq_ucx_each_tl(text, "resource", "--", tq_ucx_note_shm, &shm, &n))
        shm = false;
    free(text);
    return shm;
}

/* Has the peer process of a same-node endpoint exited? */
static bool tq_ucx_peer_exited(tq_transport_ep *ep)
{
    if (!tq__proc_exited(ep->pidfd))
        return false;
    if (!ep->failed)
        tq_warn("peer process exited");
    ep->failed = true;
    return true;
}

/* ---- progress and waiting ---------------------------------------------- */

/* ucp_worker_progress, noting wakeups that found nothing to do. */
static unsigned tq_ucx_worker_progress(tq_transport *tr)
{
    unsigned n = ucp_worker_progress(tr->worker);
    if (n > 0)
        tr->fruitless = 0;
    else if (tr->woke && tr->fruitless < UINT32_MAX)
        tr->fruitless++;
    tr->woke = false;
    return n;
}

/* Sleep on the worker's event fd for at most timeout_ms (-1: no limit).
 * Returns false without sleeping when events are already pending. */
static bool tq_ucx_wait(tq_transport *tr, int timeout_ms)
{
    ucs_status_t st = ucp_worker_arm(tr->worker);
    if (st == UCS_ERR_BUSY)
        return false;
    struct pollfd pfd = {.fd = tr->efd, .events = POLLIN};
    /* UCX can leave its fd ready with nothing to progress (seen over tcp: a
     * socket polled for writing while a peer's connection is half set up).
     * After a few such wakeups nap instead of polling, so an idle target does
     * not spin; look again after each nap. */
    if (st != UCS_OK || tr->fruitless >= TQ_UCX_FRUITLESS_MAX) {
        (void)poll(NULL, 0, timeout_ms < 0 ? TQ_UCX_NAP_MS : TQ_MIN(timeout_ms, TQ_UCX_NAP_MS));
        if (st == UCS_OK && poll(&pfd, 1, 0) == 0)
            tr->fruitless = 0;
        tr->woke = st == UCS_OK;
        return true;
    }
    tr->woke = poll(&pfd, 1, timeout_ms) > 0; /* EINTR is just an early wakeup */
    return true;
}

static void tq_ucx_cache_reap(tq_transport *tr);

static int tq_ucx_progress(tq_transport *tr, int timeout_ms)
{
    if (tr == NULL)
        return TQ_ERR_INVALID;
    if (tq_ucx_worker_progress(tr) == 0 && timeout_ms != 0) {
        uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
        for (;;) {
            uint64_t now = tq__now_ms();
            int left = timeout_ms < 0 ? -1 : now >= deadline ? 0 : (int)(deadline - now);
            bool slept = tq_ucx_wait(tr, left);
            /* Busy means queued events: progress them and re-arm. */
            if (tq_ucx_worker_progress(tr) != 0 || slept || left == 0)
                break;
        }
    }
    if (tr->inflight == 0)
        tq_ucx_cache_reap(tr);
    return TQ_OK;
}

/* ---- registration cache ------------------------------------------------ */

/* Runs inside munmap/mremap/shmdt/... of any thread: no allocation, no UCX
 * calls; the transport's own thread deregisters what it marks later. */
static void tq_ucx_vm_unmapped(ucm_event_type_t type, ucm_event_t *ev, void *arg)
{
    if (type == UCM_EVENT_VM_UNMAPPED)
        tq__regcache_unmapped(arg, ev->vm_unmapped.address, ev->vm_unmapped.size);
}

static void *tq_ucx_cache_reg(void *arg, void *addr, size_t len)
{
    tq_transport *tr = arg;
    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        .address = addr,
        .length = len,
    };
    ucp_mem_h memh = NULL;
    ucs_status_t st = ucp_mem_map(tr->ctx, &mp, &memh);
    if (st != UCS_OK) {
        tq_debug("registration cache: ucp_mem_map failed: %s", ucs_status_string(st));
        return NULL;
    }
    tq_debug("registration cache: registered %#lx..%#lx", (unsigned long)(uintptr_t)addr,
             (unsigned long)((uintptr_t)addr + len));
    return memh;
}

static void tq_ucx_cache_dereg(void *arg, void *memh)
{
    tq_transport *tr = arg;
    ucp_mem_unmap(tr->ctx, memh);
}

/* Deregister invalidated entries. Only when nothing is in flight, since an
 * in-flight operation may still use a memh. */
static void tq_ucx_cache_reap(tq_transport *tr)
{
    if (!tr->cache_on)
        return;
    unsigned n = tq__regcache_reap(tr->cache, false);
    if (n > 0)
        tq_debug("registration cache: dropped %u unmapped entries", n);
}

/* The memh to pass with a local buffer: the transport's own registration
 * when the buffer lies in one, else the cache for large buffers. */
static ucp_mem_h tq_ucx_local_memh(tq_transport *tr, const void *buf, size_t len)
{
    uintptr_t b = (uintptr_t)buf;
    for (tq_list *it = tr->mems.next; it != &tr->mems; it = it->next) {
        tq_transport_mem *m = tq_list_entry(it, tq_transport_mem, link);
        uintptr_t mb = (uintptr_t)m->addr;
        if (b >= mb && len <= m->len && b - mb <= m->len - len)
            return m->memh;
    }
    if (!tr->cache_on || len < TQ_UCX_CACHE_MIN_LEN)
        return NULL;
    /* Else UCX copies or registers internally: always correct, just slower.
     * Evicting means deregistering, only safe with nothing in flight. */
    void *memh = NULL;
    (void)tq__regcache_get(tr->cache, NULL, buf, len, tr->inflight == 0, &memh);
    return memh;
}

/* ---- init / fini -------------------------------------------------------- */

/* Append "name" to a comma-separated list. */
static void tq_ucx_list_add(char *list, size_t cap, const char *name)
{
    size_t n = strlen(list);
    snprintf(list + n, cap - n, "%s%s", n > 0 ? "," : "", name);
}

/* Is name in the comma-separated list? */
static bool tq_ucx_list_has(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p != '\0';) {
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == '\0'))
            return true;
        const char *comma = strchr(p, ',');
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

/* First line of a sysfs file, or "". */
static void tq_ucx_sysfs_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    if (fgets(out, (int)cap, f) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static void tq_ucx_add_port(char *list, size_t cap, const char *dev, const char *port)
{
    char name[128];
    snprintf(name, sizeof(name), "%.64s:%.32s", dev, port);
    if (!tq_ucx_list_has(list, name))
        tq_ucx_list_add(list, cap, name);
}

/* The RDMA ports behind interface iface, as UCX names them ("mlx5_0:1"):
 * the device of a RoCE or IPoIB netdev, and (soft-)RoCE ports with a GID
 * on iface. */
static void tq_ucx_rdma_ports(const char *iface, char *list, size_t cap)
{
    char path[1024], text[64];
    snprintf(path, sizeof(path), "/sys/class/net/%s/dev_port", iface);
    tq_ucx_sysfs_line(path, text, sizeof(text));
    char port[24];
    snprintf(port, sizeof(port), "%ld", strtol(text, NULL, 10) + 1);
    snprintf(path, sizeof(path), "/sys/class/net/%s/device/infiniband", iface);
    DIR *d = opendir(path);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            tq_ucx_add_port(list, cap, e->d_name, port);
    if (d != NULL)
        closedir(d);
    DIR *devs = opendir("/sys/class/infiniband");
    for (struct dirent *dev; devs != NULL && (dev = readdir(devs)) != NULL;) {
        if (dev->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/infiniband/%.64s/ports", dev->d_name);
        DIR *ports = opendir(path);
        for (struct dirent *pe; ports != NULL && (pe = readdir(ports)) != NULL;) {
            for (int gid = 0; pe->d_name[0] != '.' && gid < 16; gid++) {
                snprintf(path, sizeof(path),
                         "/sys/class/infiniband/%.64s/ports/%.32s/gid_attrs/ndevs/%d",
                         dev->d_name, pe->d_name, gid);
                tq_ucx_sysfs_line(path, text, sizeof(text));
                if (strcmp(text, iface) == 0)
                    tq_ucx_add_port(list, cap, dev->d_name, pe->d_name);
            }
        }
        if (ports != NULL)
            closedir(ports);
    }
    if (devs != NULL)
        closedir(devs);
}

/*
 * UCX's network devices for a bind interface: the interface (UCX's tcp
 * listens on its address) and the RDMA ports behind it. Of a list the user
 * gave in $UCX_NET_DEVICES only those stay.
 */
static void tq_ucx_net_devices(const char *iface, char *out, size_t cap)
{
    char mine[TQ_UCX_NET_DEVICES_MAX] = "";
    tq_ucx_list_add(mine, sizeof(mine), iface);
    tq_ucx_rdma_ports(iface, mine, sizeof(mine));
    const char *user = getenv("UCX_NET_DEVICES");
    out[0] = '\0';
    if (user == NULL || user[0] == '\0' || strcmp(user, "all") == 0) {
        snprintf(out, cap, "%s", mine);
        return;
    }
    char copy[TQ_UCX_NET_DEVICES_MAX];
    snprintf(copy, sizeof(copy), "%s", user);
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save))
        if (tq_ucx_list_has(mine, t) && !tq_ucx_list_has(out, t))
            tq_ucx_list_add(out, cap, t);
}

/* Settings of this context that the defaults or the user's do not give. */
static int tq_ucx_configure(tq_transport *tr, ucp_config_t *config,
                            const tq_transport_params_t *params)
{
    const char *prio = getenv("UCX_ALLOC_PRIO");
    if (prio == NULL) {
        ucs_status_t st = ucp_config_modify(config, "ALLOC_PRIO", TQ_UCX_ALLOC_PRIO);
        if (st != UCS_OK)
            tq_warn("cannot set UCX_ALLOC_PRIO=%s: %s", TQ_UCX_ALLOC_PRIO, ucs_status_string(st));
        prio = st == UCS_OK ? TQ_UCX_ALLOC_PRIO : "md:posix";
    }
    tr->posix_pool = strstr(prio, "posix") != NULL || strstr(prio, "md:*") != NULL;
    if (params == NULL || params->bind_iface == NULL)
        return TQ_OK;
    char devices[TQ_UCX_NET_DEVICES_MAX];
    tq_ucx_net_devices(params->bind_iface, devices, sizeof(devices));
    if (devices[0] == '\0') {
        tq_warn("UCX_NET_DEVICES=%s names nothing on interface %s: no network devices",
                getenv("UCX_NET_DEVICES"), params->bind_iface);
        /* An empty list would mean UCX's default, all of them: name one
         * that does not exist instead, leaving shared memory only. */
        snprintf(devices, sizeof(devices), "none");
    }
    ucs_status_t st = ucp_config_modify(config, "NET_DEVICES", devices);
    if (st != UCS_OK) {
        tq_error("cannot set UCX_NET_DEVICES=%s: %s", devices, ucs_status_string(st));
        return tq_ucx_status(st);
    }
    tq_debug("network devices %s", devices);
    return TQ_OK;
}

static bool tq_ucx_note_tcp(const char *name, size_t len, void *arg)
{
    if (len == 3 && strncmp(name, "tcp", 3) == 0)
        *(bool *)arg = true;
    return true;
}

/* UCX's tcp transport checks no remote key: whoever reaches its port and
 * speaks UCX can read and write any address of this process. Say so where
 * it listens beyond this host. */
static void tq_ucx_warn_tcp(tq_transport *tr, const tq_transport_params_t *params)
{
    if (params == NULL || params->bind_addr == NULL || tq__netif_is_loopback(params->bind_addr))
        return;
    char *text = tq_ucx_info_text(tr->ctx, NULL);
    bool tcp = false;
    int n = 0;
    if (text != NULL)
        (void)tq_ucx_each_tl(text, "resource", "--", tq_ucx_note_tcp, &tcp, &n);
    free(text);
    if (tcp)
        tq_warn("UCX over tcp on %s: UCX's tcp transport checks no remote key, so any host "
                "that reaches this interface can read and write this process's memory; keep "
                "the network closed to strangers, or serve ofi only", params->bind_iface);
}


static void tq_ucx_ep_close(tq_transport *tr, tq_transport_ep *ep);
static void tq_ucx_ep_free(tq_transport_ep *ep);
static void tq_ucx_mem_deregister(tq_transport *tr, tq_transport_mem *mem);

static int tq_ucx_init(const tq_transport_params_t *params, tq_transport **tr_p)
{
    ucp_config_t *config = NULL;
    ucs_status_t st;
    int rc;

    if (tr_p == NULL)
        return TQ_ERR_INVALID;
    tq_transport *tr = calloc(1, sizeof(*tr));
    if (tr == NULL)
        return TQ_ERR_NOMEM;
    tq_list_init(&tr->eps);
    tq_list_init(&tr->mems);
    tq_list_init(&tr->zombies);
    tq__proc_self(&tr->self);
    tr->cache = tq__regcache_create(tq_ucx_cache_reg, tq_ucx_cache_dereg, tr);
    if (tr->cache == NULL) {
        rc = TQ_ERR_NOMEM;
        goto err_free;
    }

    st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) {
        tq_error("ucp_config_read: %s", ucs_status_string(st));
        rc = tq_ucx_status(st);
        goto err_cache;
    }
    if ((rc = tq_ucx_configure(tr, config, params)) != TQ_OK) {
        ucp_config_release(config);
        goto err_cache;
    }
    ucp_params_t up = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP,
        .name = "tqrdma",
    };
    st = ucp_init(&up, config, &tr->ctx);
    ucp_config_release(config);
    if (st != UCS_OK) {
        tq_warn("ucp_init: %s", ucs_status_string(st));
        rc = st == UCS_ERR_NO_DEVICE || st == UCS_ERR_UNSUPPORTED || st == UCS_ERR_NO_ELEM
                 ? TQ_ERR_UNSUPPORTED : tq_ucx_status(st);
        goto err_cache;
    }

    /* Callers serialise, possibly from different threads. */
    ucp_worker_params_t wp = {
        .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        .thread_mode = UCS_THREAD_MODE_SERIALIZED,
    };
    st = ucp_worker_create(tr->ctx, &wp, &tr->worker);
    if (st != UCS_OK) {
        tq_warn("ucp_worker_create: %s", ucs_status_string(st));
        rc = st == UCS_ERR_NO_DEVICE ? TQ_ERR_UNSUPPORTED : tq_ucx_status(st);
        goto err_ctx;
    }
    tr->has_shm = tq_ucx_ctx_has_shm(tr->ctx);
    tq_ucx_warn_tcp(tr, params);
    st = ucp_worker_get_efd(tr->worker, &tr->efd);
    if (st != UCS_OK) {
        tq_warn("ucp_worker_get_efd: %s", ucs_status_string(st));
        rc = tq_ucx_status(st);
        goto err_worker;
    }

    /* Cached registrations are only safe if we hear of every unmap. */
    st = ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED, 1000, tq_ucx_vm_unmapped, tr->cache);
    if (st == UCS_OK)
        tr->cache_on = true;
    else
        tq_info("memory events unavailable (%s): no registration cache",
                ucs_status_string(st));

    *tr_p = tr;
    return TQ_OK;

err_worker:
    ucp_worker_destroy(tr->worker);
err_ctx:
    ucp_cleanup(tr->ctx);
err_cache:
    tq__regcache_destroy(tr->cache);
err_free:
    free(tr);
    return rc;
}

static void tq_ucx_fini(tq_transport *tr)
{
    if (tr == NULL)
        return;
    /* Unset first: afterwards the hook never runs on tr again. */
    if (tr->cache_on)
        ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, tq_ucx_vm_unmapped, tr->cache);
    while (!tq_list_empty(&tr->eps)) {
        tq_warn("fini: closing an endpoint left open");
        tq_ucx_ep_close(tr, tq_list_entry(tr->eps.next, tq_transport_ep, link));
    }
    while (!tq_list_empty(&tr->mems)) {
        tq_warn("fini: deregistering memory left registered");
        tq_ucx_mem_deregister(tr, tq_list_entry(tr->mems.next, tq_transport_mem, link));
    }
    tq__regcache_destroy(tr->cache);
    ucp_worker_destroy(tr->worker);
    ucp_cleanup(tr->ctx);
    /* Endpoints whose requests never completed: the worker is gone, so
     * nothing can call back into them now. */
    while (!tq_list_empty(&tr->zombies)) {
        tq_list *it = tr->zombies.next;
        tq_list_remove(it);
        tq_ucx_ep_free(tq_list_entry(it, tq_transport_ep, link));
    }
    free(tr);
}

/* ---- address ------------------------------------------------------------ */

static int tq_ucx_address(tq_transport *tr, void **blob_p, size_t *len_p)
{
    ucp_address_t *addr = NULL;
    size_t alen = 0;
    int rc;

    if (tr == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    ucs_status_t st = ucp_worker_get_address(tr->worker, &addr, &alen);
    if (st != UCS_OK) {
        tq_error("ucp_worker_get_address: %s", ucs_status_string(st));
        return tq_ucx_status(st);
    }
    if (alen == 0 || alen > TQ_UCX_BLOB_MAX) {
        rc = TQ_ERR_IO;
        goto err_addr;
    }
    uint8_t *blob = malloc(TQ_UCX_ADDR_HDR + alen);
    if (blob == NULL) {
        rc = TQ_ERR_NOMEM;
        goto err_addr;
    }
    tq__rma_blob_head_put(blob, TQ_UCX_ADDR_MAGIC, TQ_UCX_BLOB_VERSION);
    blob[5] = tr->has_shm ? TQ_UCX_ADDR_F_SHM : 0;
    blob[6] = blob[7] = 0;
    tq_put_le32(blob + 8, (uint32_t)alen);
    memcpy(blob + 16, tr->self.boot_id, 16);
    tq_put_le32(blob + 32, tr->self.pid);
    tq_put_le32(blob + 36, 0);
    tq_put_le64(blob + 40, tr->self.start_time);
    memcpy(blob + TQ_UCX_ADDR_HDR, addr, alen);
    tq__rma_blob_seal(blob, TQ_UCX_ADDR_HDR + alen, 12);
    ucp_worker_release_address(tr->worker, addr);
    *blob_p = blob;
    *len_p = TQ_UCX_ADDR_HDR + alen;
    return TQ_OK;

err_addr:
    ucp_worker_release_address(tr->worker, addr);
    return rc;
}

/* ---- memory ------------------------------------------------------------- */

static int tq_ucx_map(tq_transport *tr, void *addr, size_t len, bool allocate,
                      tq_transport_mem **mem_p)
{
    int rc;
    tq_transport_mem *mem = calloc(1, sizeof(*mem));
    if (mem == NULL)
        return TQ_ERR_NOMEM;
    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS,
        .address = allocate ? NULL : addr,
        .length = len,
        .flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0,
    };
    ucs_status_t st = ucp_mem_map(tr->ctx, &mp, &mem->memh);
    if (st != UCS_OK) {
        tq_error("ucp_mem_map(%zu bytes%s): %s", len, allocate ? ", allocate" : "",
                 ucs_status_string(st));
        rc = tq_ucx_status(st);
        goto err_free;
    }
    mem->addr = addr;
    mem->len = len;
    if (allocate) {
        ucp_mem_attr_t attr = {.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS |
                                             UCP_MEM_ATTR_FIELD_LENGTH};
        st = ucp_mem_query(mem->memh, &attr);
        if (st != UCS_OK || attr.address == NULL || attr.length < len) {
            tq_error("ucp_mem_query: %s", ucs_status_string(st));
            rc = st != UCS_OK ? tq_ucx_status(st) : TQ_ERR_IO;
            goto err_unmap;
        }
        mem->addr = attr.address;
    }
    tq_list_insert_tail(&tr->mems, &mem->link);
    *mem_p = mem;
    return TQ_OK;

err_unmap:
    ucp_mem_unmap(tr->ctx, mem->memh);
err_free:
    free(mem);
    return rc;
}

static int tq_ucx_mem_alloc(tq_transport *tr, size_t len, void **addr_p, tq_transport_mem **mem_p)
{
    if (tr == NULL || len == 0 || addr_p == NULL || mem_p == NULL)
        return TQ_ERR_INVALID;
    /* A POSIX segment that does not fit fills /dev/shm before UCX gives up. */
    struct statvfs vfs;
    if (tr->posix_pool && statvfs(TQ_UCX_SHM_DIR, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < len) {
        tq_info("%s has %llu bytes free, less than the %zu asked for: not allocating there",
                TQ_UCX_SHM_DIR, (unsigned long long)vfs.f_bavail * vfs.f_frsize, len);
        return TQ_ERR_UNSUPPORTED;
    }
    tq_transport_mem *mem = NULL;
    int rc = tq_ucx_map(tr, NULL, len, true, &mem);
    if (rc != TQ_OK)
        return rc;
    tq_debug("allocated %zu bytes at %p", len, mem->addr);
    *addr_p = mem->addr;
    *mem_p = mem;
    return TQ_OK;
}

static int tq_ucx_mem_register(tq_transport *tr, void *addr, size_t len, tq_transport_mem **mem_p)
{
    if (tr == NULL || addr == NULL || len == 0 || mem_p == NULL ||
        (uintptr_t)addr + len < (uintptr_t)addr)
        return TQ_ERR_INVALID;
    return tq_ucx_map(tr, addr, len, false, mem_p);
}

static int tq_ucx_mem_pack(tq_transport *tr, tq_transport_mem *mem, void **blob_p, size_t *len_p)
{
    void *rkey = NULL;
    size_t rlen = 0;
    int rc;

    if (tr == NULL || mem == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    ucs_status_t st = ucp_rkey_pack(tr->ctx, mem->memh, &rkey, &rlen);
    if (st != UCS_OK) {
        tq_error("ucp_rkey_pack: %s", ucs_status_string(st));
        return tq_ucx_status(st);
    }
    if (rlen == 0 || rlen > TQ_UCX_BLOB_MAX) {
        rc = TQ_ERR_IO;
        goto err_rkey;
    }
    uint8_t *blob = malloc(TQ_UCX_REGION_HDR + rlen);
    if (blob == NULL) {
        rc = TQ_ERR_NOMEM;
        goto err_rkey;
    }
    tq__rma_blob_region_put(blob, TQ_UCX_REGION_MAGIC, TQ_UCX_BLOB_VERSION, 0,
                            (uint64_t)(uintptr_t)mem->addr, (uint64_t)mem->len);
    tq_put_le32(blob + 24, (uint32_t)rlen);
    memcpy(blob + TQ_UCX_REGION_HDR, rkey, rlen);
    tq__rma_blob_seal(blob, TQ_UCX_REGION_HDR + rlen, 28);
    ucp_rkey_buffer_release(rkey);
    *blob_p = blob;
    *len_p = TQ_UCX_REGION_HDR + rlen;
    return TQ_OK;

err_rkey:
    ucp_rkey_buffer_release(rkey);
    return rc;
}

static void tq_ucx_mem_deregister(tq_transport *tr, tq_transport_mem *mem)
{
    if (tr == NULL || mem == NULL)
        return;
    tq_list_remove(&mem->link);
    ucs_status_t st = ucp_mem_unmap(tr->ctx, mem->memh); /* frees what mem_alloc allocated */
    if (st != UCS_OK)
        tq_warn("ucp_mem_unmap: %s", ucs_status_string(st));
    free(mem);
}

/* ---- endpoints ------------------------------------------------------------ */

static void tq_ucx_ep_error(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    tq_transport_ep *ep = arg;
    (void)uep;
    tq_warn("peer failed: %s", ucs_status_string(status));
    ep->failed = true;
}

/* Completion of a put, get or flush request. */
static void tq_ucx_op_done(void *request, ucs_status_t status, void *user_data)
{
    tq_transport_ep *ep = user_data;
    if (status != UCS_OK) {
        int rc = tq_ucx_status(status);
        if (ep->first_error == TQ_OK)
            ep->first_error = rc;
        if (tq_ucx_is_conn_error(rc))
            ep->failed = true;
    }
    ep->outstanding--;
    ep->tr->inflight--;
    ucp_request_free(request);
}

/* Close a UCP endpoint, progressing for a bounded time. Returns whether the
 * close completed. */
static bool tq_ucx_close_uep(tq_transport *tr, ucp_ep_h uep, bool force)
{
    ucp_request_param_t prm = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
        .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0,
    };
    void *req = ucp_ep_close_nbx(uep, &prm);
    if (UCS_PTR_IS_ERR(req))
        tq_debug("ucp_ep_close_nbx: %s", ucs_status_string(UCS_PTR_STATUS(req)));
    if (!UCS_PTR_IS_PTR(req))
        return true;
    bool closed = true;
    uint64_t deadline = tq__now_ms() + TQ_UCX_CLOSE_MS;
    while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        if (tq__now_ms() >= deadline) {
            tq_warn("ep_close: not confirmed within %d ms", TQ_UCX_CLOSE_MS);
            closed = false;
            break;
        }
        if (tq_ucx_worker_progress(tr) == 0)
            (void)tq_ucx_wait(tr, 10);
    }
    ucp_request_free(req); /* released by UCX on completion if still running */
    return closed;
}

static void tq_ucx_ep_free(tq_transport_ep *ep)
{
    if (ep->pidfd >= 0)
        close(ep->pidfd);
    free(ep);
}

static int tq_ucx_ep_connect(tq_transport *tr, const void *addr, size_t len, tq_transport_ep **ep_p)
{
    const uint8_t *b = addr;
    int rc;

    if (tr == NULL || addr == NULL || ep_p == NULL || len <= TQ_UCX_ADDR_HDR ||
        len > TQ_UCX_ADDR_HDR + TQ_UCX_BLOB_MAX)
        return TQ_ERR_INVALID;
    if (!tq__rma_blob_check(b, len, TQ_UCX_ADDR_MAGIC, TQ_UCX_BLOB_VERSION, 12) ||
        (b[5] & ~TQ_UCX_ADDR_F_SHM) != 0 || b[6] != 0 || b[7] != 0 ||
        tq_get_le32(b + 36) != 0 ||
        tq_get_le32(b + 8) != len - TQ_UCX_ADDR_HDR)
        return TQ_ERR_INVALID;

    tq_transport_ep *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return TQ_ERR_NOMEM;
    ep->tr = tr;
    ep->pidfd = -1;
    tq_list_init(&ep->regions);

    /* A live process on this node: try shared memory, watching the process. */
    ucp_ep_params_t ep_params = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .address = (const ucp_address_t *)(b + TQ_UCX_ADDR_HDR),
        .err_mode = UCP_ERR_HANDLING_MODE_NONE,
    };
    ucs_status_t st = UCS_ERR_UNREACHABLE;
    int pidfd = tq_ucx_local_peer(tr, b);
    if (pidfd >= 0) {
        st = ucp_ep_create(tr->worker, &ep_params, &ep->ep);
        if (st == UCS_OK && !tq_ucx_lanes_all_shm(ep->ep)) {
            tq_info("same-node peer not reachable by shared memory alone: "
                    "using peer error handling");
            (void)tq_ucx_close_uep(tr, ep->ep, false);
            st = UCS_ERR_UNREACHABLE;
        }
        if (st == UCS_OK)
            ep->pidfd = pidfd;
        else
            close(pidfd);
    }
    if (st != UCS_OK) {
        /* Peer error handling, so a dead peer fails requests instead of hanging them. */
        ep_params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        ep_params.err_handler = (ucp_err_handler_t){.cb = tq_ucx_ep_error, .arg = ep};
        st = ucp_ep_create(tr->worker, &ep_params, &ep->ep);
    }
    if (st != UCS_OK) {
        tq_warn("ucp_ep_create: %s", ucs_status_string(st));
        rc = tq_ucx_status(st);
        if (rc == TQ_ERR_IO || rc == TQ_ERR_UNSUPPORTED)
            rc = TQ_ERR_CONNECTION;
        goto err_free;
    }
    tq_debug("connected %s", ep->pidfd >= 0 ? "by shared memory" : "with peer error handling");
    tq_list_insert_tail(&tr->eps, &ep->link);
    *ep_p = ep;
    return TQ_OK;

err_free:
    free(ep);
    return rc;
}

/* Progress until ep has nothing outstanding or the deadline passes; a failed
 * ep gets a bounded grace for UCX to complete its requests with errors.
 * Returns TQ_OK or TQ_ERR_TIMEOUT. */
static int tq_ucx_drain(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    uint64_t start = tq__now_ms();
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms;
    uint64_t fail_deadline = 0;

    while (ep->outstanding > 0) {
        unsigned n = tq_ucx_worker_progress(tr);
        if (ep->outstanding == 0)
            break;
        if (n == 0)
            (void)tq_ucx_peer_exited(ep);
        /* Without UCX error handling nothing will complete them: stop now. */
        if (ep->failed && ep->pidfd >= 0)
            return TQ_OK;
        uint64_t now = tq__now_ms();
        if (ep->failed) {
            if (fail_deadline == 0)
                fail_deadline = now + TQ_UCX_DRAIN_MS;
            if (now >= fail_deadline)
                return TQ_OK; /* the caller reports the failure */
        }
        if (now >= deadline)
            return TQ_ERR_TIMEOUT;
        if (n == 0) {
            uint64_t until = TQ_MIN(deadline, fail_deadline ? fail_deadline : UINT64_MAX);
            (void)tq_ucx_wait(tr, (int)TQ_MIN(until - now, (uint64_t)TQ_UCX_WAIT_SLICE_MS));
        }
    }
    return TQ_OK;
}

/* Destroy the rkeys of regions still unpacked on ep: UCX wants them gone
 * before their ep. The region structs stay for region_release. */
static void tq_ucx_orphan_regions(tq_transport_ep *ep, bool destroy)
{
    while (!tq_list_empty(&ep->regions)) {
        tq_list *it = ep->regions.next;
        tq_transport_region *r = tq_list_entry(it, tq_transport_region, link);
        tq_list_remove(it);
        if (destroy && r->rkey != NULL)
            ucp_rkey_destroy(r->rkey);
        r->rkey = NULL;
        r->ep = NULL;
        if (r->released)
            free(r);
    }
}

static void tq_ucx_ep_close(tq_transport *tr, tq_transport_ep *ep)
{
    if (tr == NULL || ep == NULL)
        return;
    (void)tq_ucx_peer_exited(ep);
    /* Rkeys must outlive the operations that use them. */
    if (!ep->failed && ep->outstanding > 0 &&
        tq_ucx_drain(tr, ep, TQ_UCX_CLOSE_MS) != TQ_OK)
        ep->failed = true;
    if (!ep->failed)
        tq_ucx_orphan_regions(ep, true);

    /* A failed ep cannot be closed gracefully: its peer will not answer.
     * UCX allows forcing only with peer error handling (not shared memory). */
    bool closed = tq_ucx_close_uep(tr, ep->ep, ep->failed && ep->pidfd < 0);
    tq_list_remove(&ep->link);
    tq_ucx_orphan_regions(ep, ep->outstanding == 0);
    if (closed && ep->outstanding == 0) {
        tq_ucx_ep_free(ep);
    } else {
        /* UCX may still call back into ep (requests, error handler): keep it
         * (and the rkeys its requests use) until fini destroys the worker. */
        tq_warn("ep_close: %zu requests still pending", ep->outstanding);
        tq_list_insert_tail(&tr->zombies, &ep->link);
    }
}

/* ---- regions -------------------------------------------------------------- */

static int tq_ucx_region_unpack(tq_transport *tr, tq_transport_ep *ep, const void *blob,
                                size_t len, tq_transport_region **region_p)
{
    const uint8_t *b = blob;
    uint64_t base, rlen;

    if (tr == NULL || ep == NULL || blob == NULL || region_p == NULL ||
        len <= TQ_UCX_REGION_HDR || len > TQ_UCX_REGION_HDR + TQ_UCX_BLOB_MAX ||
        !tq__rma_blob_region_get(b, len, TQ_UCX_REGION_MAGIC, TQ_UCX_BLOB_VERSION, 0, 28, &base,
                                 &rlen) ||
        tq_get_le32(b + 24) != len - TQ_UCX_REGION_HDR)
        return TQ_ERR_INVALID;
    if (ep->failed)
        return TQ_ERR_CONNECTION;

    tq_transport_region *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return TQ_ERR_NOMEM;
    ucs_status_t st = ucp_ep_rkey_unpack(ep->ep, b + TQ_UCX_REGION_HDR, &r->rkey);
    if (st != UCS_OK) {
        tq_warn("ucp_ep_rkey_unpack: %s", ucs_status_string(st));
        free(r);
        return st == UCS_ERR_NO_MEMORY ? TQ_ERR_NOMEM : TQ_ERR_INVALID;
    }
    r->ep = ep;
    r->base = base;
    r->len = rlen;
    tq_list_insert_tail(&ep->regions, &r->link);
    *region_p = r;
    return TQ_OK;
}

static void tq_ucx_region_release(tq_transport *tr, tq_transport_region *region)
{
    if (tr == NULL || region == NULL)
        return;
    if (region->ep != NULL) {
        /* Operations in flight still use the rkey. */
        tq_transport_ep *ep = region->ep;
        if (ep->outstanding > 0 && tq_ucx_drain(tr, ep, TQ_UCX_CLOSE_MS) != TQ_OK)
            ep->failed = true;
        if (ep->outstanding > 0) {
            tq_warn("region_release: requests still pending, keeping the rkey until close");
            region->released = true; /* ep_close frees it */
            return;
        }
        tq_list_remove(&region->link);
        ucp_rkey_destroy(region->rkey);
    }
    free(region);
}

/* ---- data movement ---------------------------------------------------------- */

/* One run contiguous on both sides: one operation. */
static int tq_ucx_issue(tq__rma_post_t *p, char *local, uint64_t off, size_t len)
{
    tq_transport *tr = p->tr;
    tq_transport_ep *ep = p->ep;
    tq_transport_region *region = p->region;
    tq_rma_dir_t dir = p->dir;
    ucp_request_param_t prm = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
        .cb.send = tq_ucx_op_done,
        .user_data = ep,
    };
    ucp_mem_h memh = tq_ucx_local_memh(tr, local, len);
    if (memh != NULL) {
        prm.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        prm.memh = memh;
    }
    uint64_t raddr = region->base + off;
    void *req = dir == TQ_RMA_PUT
                    ? ucp_put_nbx(ep->ep, local, len, raddr, region->rkey, &prm)
                    : ucp_get_nbx(ep->ep, local, len, raddr, region->rkey, &prm);
    if (req == NULL)
        return TQ_OK; /* completed in place */
    if (UCS_PTR_IS_ERR(req)) {
        ucs_status_t st = UCS_PTR_STATUS(req);
        int rc = tq_ucx_status(st);
        tq_warn("ucp_%s_nbx(%zu bytes): %s", dir == TQ_RMA_PUT ? "put" : "get", len,
                ucs_status_string(st));
        if (tq_ucx_is_conn_error(rc)) {
            ep->failed = true;
            rc = TQ_ERR_CONNECTION;
        }
        if (ep->first_error == TQ_OK)
            ep->first_error = rc;
        return rc;
    }
    ep->outstanding++;
    tr->inflight++;
    return TQ_OK;
}

static int tq_ucx_post(tq_transport *tr, tq_transport_ep *ep, tq_transport_region *region,
                       tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n)
{
    /* Validate everything first, so a bad iov means nothing was posted. */
    if (tr == NULL || ep == NULL || region == NULL || region->ep != ep || region->rkey == NULL ||
        tq__rma_check(dir, iov, n, region->len) != TQ_OK)
        return TQ_ERR_INVALID;
    if (ep->failed || tq_ucx_peer_exited(ep))
        return TQ_ERR_CONNECTION;
    if (tr->inflight == 0)
        tq_ucx_cache_reap(tr);

    /* Coalesce runs contiguous on both sides into one operation. */
    tq__rma_post_t p = {tr, ep, region, dir};
    return tq__rma_runs(&p, iov, n, tq_ucx_issue);
}

static int tq_ucx_flush(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    if (tr == NULL || ep == NULL)
        return TQ_ERR_INVALID;
    if (!tq_ucx_peer_exited(ep) && !ep->failed) {
        ucp_request_param_t prm = {
            .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
            .cb.send = tq_ucx_op_done,
            .user_data = ep,
        };
        void *req = ucp_ep_flush_nbx(ep->ep, &prm);
        if (UCS_PTR_IS_PTR(req)) {
            ep->outstanding++;
            tr->inflight++;
        } else if (UCS_PTR_IS_ERR(req)) {
            int rc = tq_ucx_status(UCS_PTR_STATUS(req));
            if (ep->first_error == TQ_OK)
                ep->first_error = rc;
            if (tq_ucx_is_conn_error(rc))
                ep->failed = true;
        }
    }
    int rc = tq_ucx_drain(tr, ep, timeout_ms);
    if (rc == TQ_ERR_TIMEOUT) {
        ep->failed = true;
        return TQ_ERR_TIMEOUT;
    }
    if (tr->inflight == 0)
        tq_ucx_cache_reap(tr);
    if (ep->failed)
        return TQ_ERR_CONNECTION;
    rc = ep->first_error;
    ep->first_error = TQ_OK;
    return rc;
}

const tq_transport_ops tq_ucx_ops = {
    .name = "ucx",
    .init = tq_ucx_init,
    .fini = tq_ucx_fini,
    .address = tq_ucx_address,
    .mem_alloc = tq_ucx_mem_alloc,
    .mem_register = tq_ucx_mem_register,
    .mem_pack = tq_ucx_mem_pack,
    .mem_deregister = tq_ucx_mem_deregister,
    .ep_connect = tq_ucx_ep_connect,
    .ep_close = tq_ucx_ep_close,
    .region_unpack = tq_ucx_region_unpack,
    .region_release = tq_ucx_region_release,
    .post = tq_ucx_post,
    .flush = tq_ucx_flush,
    .progress = tq_ucx_progress,
};
