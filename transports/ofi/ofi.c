/* ofi.c: the tq_transport ops over libfabric one-sided RMA (fi_write/fi_read), RDM endpoints. */
#define TQ_LOG_COMPONENT "ofi"

#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tq/transport.h"
#include "util/common.h"
#include "util/list.h"
#include "util/log.h"
#include "util/netif.h"
#include "util/proc.h"
#include "rma.h"
#include "rma_blob.h"

/* After util/common.h: fabric.h defines container_of only if it is not yet. */
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#define TQ_OFI_API FI_VERSION(1, 12)
/* Registration modes we can follow; providers clear the ones they do not need. */
#define TQ_OFI_MR_MODES \
    (FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT)
/* One operation moves at most this much even if the provider allows more:
 * several ops pipeline as well as one, and some providers keep lengths in ints. */
#define TQ_OFI_MAX_XFER       (1ull << 30)
#define TQ_OFI_CQ_BATCH       64
#define TQ_OFI_CQ_SIZE        8192
#define TQ_OFI_OPS_PER_SLAB   256
/* Bounds on waits the caller did not ask for (close), a failed ep's grace for
 * the provider to complete its operations with errors, how long post waits
 * for room in a full queue with nothing completing. */
#define TQ_OFI_CLOSE_MS       3000
#define TQ_OFI_DRAIN_MS       500
#define TQ_OFI_STALL_MS       10000
/* How long a failed op waits to learn whether the peer process exited. */
#define TQ_OFI_EXIT_GRACE_MS  200
/* Longest sleep on the CQ's wait fd, so a missed wakeup costs little. With
 * manual data progress the fd misses work a peer hands us through shared
 * memory (shm only raises a flag in it), and without a wait fd nothing wakes
 * us: then look at the CQ again after a step, short while operations are
 * expected (ours in flight, or a target that saw remote access lately) and
 * longer when idle, so an idle target costs about 1% of a core. */
#define TQ_OFI_SLICE_MS       100
#define TQ_OFI_IDLE_STEP_US   1000u
#define TQ_OFI_BUSY_STEP_US   50u
#define TQ_OFI_ACTIVE_NS      20000000u
/* Poll the CQ this long after the last completion before sleeping in flush:
 * a transfer in flight usually completes sooner than a sleep takes. */
#define TQ_OFI_SPIN_NS        50000u
/* Wakeups in a row that found the wait object busy before napping instead. */
#define TQ_OFI_BUSY_MAX       16

/* Blob layouts (little endian). Address: magic, version, flags (0), provider
 * name length u8, zero u8, addr_format u32, endpoint name length u32,
 * checksum u32, pid u32, process start time u64, boot id [16], then the
 * provider name and the endpoint name (fi_getname). Region: magic, version,
 * flags (virtual addresses), 2 zero bytes, base u64, length u64, key u64,
 * checksum u32, zero u32. The checksum covers everything but itself, so a
 * garbled blob is refused before libfabric sees it. */
#define TQ_OFI_ADDR_MAGIC     0x414f5154u /* "TQOA" */
#define TQ_OFI_REGION_MAGIC   0x524f5154u /* "TQOR" */
#define TQ_OFI_BLOB_VERSION   1u
#define TQ_OFI_ADDR_HDR       48u
#define TQ_OFI_NAME_MAX       4096u
#define TQ_OFI_REGION_LEN     40u
#define TQ_OFI_REGION_F_VIRT  0x01u

/* The shm provider names each endpoint's region, a file in /dev/shm that
 * peers open by that name, so it must stay linked while the endpoint lives;
 * libfabric unlinks it on fi_close and on fatal signals, never on SIGKILL.
 * Ours are named "tq-ofi.<pid>.<start time>.<n>", so that any instance
 * starting or closing on this node removes those of processes gone. */
#define TQ_OFI_SHM_DIR        "/dev/shm"
#define TQ_OFI_SHM_PREFIX     "tq-ofi."
#define TQ_OFI_SHM_SCAN_MAX   65536

/* One operation handed to the provider; its context comes back in the CQ. */
typedef struct tq_ofi_op {
    struct fi_context2  ctx;  /* first: the provider's scratch (FI_CONTEXT modes) */
    tq_transport_ep    *ep;   /* NULL while on the free list */
    struct fid_mr      *mr;   /* registration of the local buffer made for this op */
    struct tq_ofi_op   *next_free;
} tq_ofi_op;

typedef struct tq_ofi_slab {
    struct tq_ofi_slab *next;
    tq_ofi_op           ops[TQ_OFI_OPS_PER_SLAB];
} tq_ofi_slab;

struct tq_transport {
    struct fi_info    *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av     *av;
    struct fid_cq     *cq;
    struct fid_ep     *ep;
    struct fid_cntr   *cntr;       /* remote accesses to our memory, if countable */
    uint64_t           cntr_seen, active_until;
    int                cq_fd;      /* the CQ's wait fd; -1: none, sleep-poll */
    uint64_t           mr_mode;
    bool               mr_local;   /* local buffers need a descriptor */
    bool               manual;     /* FI_PROGRESS_MANUAL data progress */
    bool               loopback;   /* our source address is a loopback address */
    bool               cq_broken;  /* fi_cq_read failed hard; logged once */
    uint64_t           write_flags;
    size_t             max_xfer;
    uint64_t           key_mask;
    uint8_t           *name;       /* fi_getname of ep */
    size_t             name_len;
    tq_proc_id_t       self;       /* this process, as a peer on the same node knows it */
    tq_list            eps, mems, zombies;
    tq_ofi_slab       *slabs;
    tq_ofi_op         *free_ops;
    uint32_t           busy;       /* wait attempts in a row that found events pending */
};

struct tq_transport_ep {
    tq_list       link;
    fi_addr_t     addr;
    tq_list       regions;
    size_t        outstanding;
    bool          failed;       /* error completion, dead peer or flush timeout: close it */
    bool          closed;       /* by the caller, while operations were in flight */
    int           first_error;  /* first operation error since the last flush */
    /* Peer process on this node, watched so its death fails operations at
     * once (shm has no other failure detection). -1 otherwise. */
    int           pidfd;
};

struct tq_transport_mem {
    tq_list        link;
    struct fid_mr *mr;
    void          *desc;
    void          *addr;
    size_t         len;
    uint64_t       key;
};

struct tq_transport_region {
    tq_list          link;
    tq_transport_ep *ep; /* NULL once the ep was closed */
    uint64_t         base, len, key;
    bool             virt;
};

/* ---- loading libfabric -------------------------------------------------- */

/* libfabric is opened on first use rather than linked: loading it runs the
 * constructors of the libraries its providers need (Debian's PSM one sleeps
 * some 0.2 s), which every process linking tqrdma would pay, ofi or not.
 * Never closed: providers may leave threads and exit handlers behind. Only
 * these entry points are real symbols; the rest of the API is inline calls
 * through the objects they return. */
#define TQ_OFI_LIBRARY "libfabric.so.1"

static struct {
    __typeof__(&fi_getinfo)  getinfo;
    __typeof__(&fi_freeinfo) freeinfo;
    __typeof__(&fi_dupinfo)  dupinfo;
    __typeof__(&fi_fabric)   fabric;
    __typeof__(&fi_strerror) strerror;
    __typeof__(&fi_tostr)    tostr;
    bool                     loaded;
} tq_ofi_lib;
static pthread_once_t tq_ofi_lib_once = PTHREAD_ONCE_INIT;

#define TQ_OFI_SYM(h, field, name) \
    ((tq_ofi_lib.field = (__typeof__(tq_ofi_lib.field))dlsym((h), (name))) != NULL)

static void tq_ofi_lib_load(void)
{
    void *h = dlopen(TQ_OFI_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        tq_warn("cannot load %s: %s", TQ_OFI_LIBRARY, dlerror());
        return;
    }
    if (!TQ_OFI_SYM(h, getinfo, "fi_getinfo") || !TQ_OFI_SYM(h, freeinfo, "fi_freeinfo") ||
        !TQ_OFI_SYM(h, dupinfo, "fi_dupinfo") || !TQ_OFI_SYM(h, fabric, "fi_fabric") ||
        !TQ_OFI_SYM(h, strerror, "fi_strerror") || !TQ_OFI_SYM(h, tostr, "fi_tostr")) {
        tq_warn("%s: %s", TQ_OFI_LIBRARY, dlerror());
        return;
    }
    tq_ofi_lib.loaded = true;
}

/* Only called once libfabric is loaded. */
static const char *tq_ofi_strerror(int err)
{
    return tq_ofi_lib.strerror(err);
}

/* ---- small helpers ----------------------------------------------------- */

/* A libfabric return code (negative FI_E*) as a tq status. */
static int tq_ofi_status(ssize_t ret)
{
    switch (-ret) {
    case 0:
        return TQ_OK;
    case FI_ENOMEM:
        return TQ_ERR_NOMEM;
    case FI_EINVAL:
    case FI_EMSGSIZE:
    case FI_ETOOSMALL:
    case FI_ENOKEY:
    case FI_EKEYREJECTED:
        return TQ_ERR_INVALID;
    case FI_ENOSYS:
    case FI_EOPNOTSUPP:
    case FI_ENODATA:
    case FI_EBADFLAGS:
    case FI_ENODEV:
        return TQ_ERR_UNSUPPORTED;
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_ESHUTDOWN:
    case FI_ETIMEDOUT:
    case FI_EHOSTUNREACH:
    case FI_EHOSTDOWN:
    case FI_ENETUNREACH:
    case FI_ENETDOWN:
    case FI_EADDRNOTAVAIL:
    case FI_ECANCELED:
    case EPIPE:
        return TQ_ERR_CONNECTION;
    default:
        return TQ_ERR_IO;
    }
}

/* An error completion's code: the peer is gone, or the operation failed. */
static int tq_ofi_comp_status(int err)
{
    return tq_ofi_status(-(ssize_t)err) == TQ_ERR_CONNECTION ? TQ_ERR_CONNECTION : TQ_ERR_IO;
}

/* Peer-supplied text, fit for a log line. */
static void tq_ofi_printable(char *out, size_t cap, const uint8_t *in, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++)
        out[n++] = in[i] >= 0x20 && in[i] < 0x7f ? (char)in[i] : '?';
    out[n] = '\0';
}

static bool tq_ofi_env_true(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "y") == 0 || strcmp(v, "yes") == 0);
}

/* ---- same-node peers ------------------------------------------------------ */

/* A pidfd for the peer if it is a live process on this node, else -1. */
static int tq_ofi_local_peer(tq_transport *tr, const uint8_t *hdr)
{
    tq_proc_id_t peer;
    peer.pid = tq_get_le32(hdr + 20);
    peer.start_time = tq_get_le64(hdr + 24);
    memcpy(peer.boot_id, hdr + 32, 16);
    return tq__proc_watch(&tr->self, &peer);
}

/* Has the peer process of ep exited? Marks ep failed if so. */
static bool tq_ofi_peer_exited(tq_transport_ep *ep)
{
    if (!tq__proc_exited(ep->pidfd))
        return false;
    if (!ep->failed)
        tq_warn("peer process exited");
    ep->failed = true;
    return true;
}

/* ---- operation contexts ---------------------------------------------------- */

static tq_ofi_op *tq_ofi_op_get(tq_transport *tr, tq_transport_ep *ep)
{
    if (tr->free_ops == NULL) {
        tq_ofi_slab *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        s->next = tr->slabs;
        tr->slabs = s;
        for (size_t i = TQ_OFI_OPS_PER_SLAB; i-- > 0;) {
            s->ops[i].next_free = tr->free_ops;
            tr->free_ops = &s->ops[i];
        }
    }
    tq_ofi_op *op = tr->free_ops;
    tr->free_ops = op->next_free;
    op->next_free = NULL;
    op->ep = ep;
    op->mr = NULL;
    return op;
}

static void tq_ofi_op_put(tq_transport *tr, tq_ofi_op *op)
{
    if (op->mr != NULL)
        fi_close(&op->mr->fid);
    op->mr = NULL;
    op->ep = NULL;
    op->next_free = tr->free_ops;
    tr->free_ops = op;
}

/* ---- progress and waiting ---------------------------------------------- */

static void tq_ofi_ep_free(tq_transport *tr, tq_transport_ep *ep);

/* An operation finished: with rc TQ_OK or as an error completion. */
static void tq_ofi_op_done(tq_transport *tr, tq_ofi_op *op, int rc)
{
    tq_transport_ep *ep = op->ep;
    if (rc != TQ_OK) {
        if (ep->first_error == TQ_OK)
            ep->first_error = rc;
        ep->failed = true;
    }
    ep->outstanding--;
    tq_ofi_op_put(tr, op);
    /* A closed ep waited for its last operation. */
    if (ep->outstanding == 0 && ep->closed)
        tq_ofi_ep_free(tr, ep);
}

/* Read every completion the CQ has (which also progresses the provider).
 * Returns how many operations finished. */
static size_t tq_ofi_drain(tq_transport *tr)
{
    struct fi_cq_entry ent[TQ_OFI_CQ_BATCH];
    size_t done = 0;

    for (;;) {
        ssize_t n = fi_cq_read(tr->cq, ent, TQ_OFI_CQ_BATCH);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++)
                tq_ofi_op_done(tr, ent[i].op_context, TQ_OK);
            done += (size_t)n;
            if (n == TQ_OFI_CQ_BATCH)
                continue;
            break;
        }
        if (n != -FI_EAVAIL) {
            if (n != -FI_EAGAIN && !tr->cq_broken) {
                tq_error("fi_cq_read: %s", tq_ofi_strerror((int)-n));
                tr->cq_broken = true;
            }
            break;
        }
        struct fi_cq_err_entry err;
        memset(&err, 0, sizeof(err));
        ssize_t r = fi_cq_readerr(tr->cq, &err, 0);
        if (r < 0) {
            if (r != -FI_EAGAIN)
                tq_error("fi_cq_readerr: %s", tq_ofi_strerror((int)-r));
            break;
        }
        int rc = tq_ofi_comp_status(err.err);
        tq_ofi_op *op = err.op_context;
        if (op == NULL || op->ep == NULL) {
            tq_warn("error completion without an operation: %s", tq_ofi_strerror(err.err));
            continue;
        }
        if (!op->ep->failed)
            tq_warn("operation failed: %s (%s)", tq_ofi_strerror(err.err),
                    fi_cq_strerror(tr->cq, err.prov_errno, err.err_data, NULL, 0));
        tq_ofi_op_done(tr, op, rc);
        done++;
    }
    return done;
}

/* Sleep until the CQ's wait object (or ep's peer process) has news, for at
 * most timeout_ms; step_us bounds the sleep when the fd cannot be trusted.
 * Returns false when it timed out without news. */
static bool tq_ofi_wait(tq_transport *tr, tq_transport_ep *ep, int timeout_ms, uint64_t step_us)
{
    struct pollfd pfd[2];
    nfds_t n = 0;

    if (timeout_ms <= 0)
        return false;
    uint64_t us = tr->manual || tr->cq_fd < 0 ? step_us : TQ_OFI_SLICE_MS * 1000u;
    us = TQ_MIN(us, (uint64_t)timeout_ms * 1000u);
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000u),
                          .tv_nsec = (long)(us % 1000000u) * 1000};
    if (tr->cq_fd >= 0) {
        struct fid *f = &tr->cq->fid;
        int ret = fi_trywait(tr->fabric, &f, 1);
        if (ret == -FI_EAGAIN) {
            /* Events pending: the caller reads the CQ. Should the provider
             * keep saying so with nothing to read, nap now and then rather
             * than spin. */
            if (++tr->busy < TQ_OFI_BUSY_MAX)
                return true;
            tr->busy = 0;
            (void)ppoll(NULL, 0, &ts, NULL);
            return true;
        }
        /* Success, or no trywait (auto progress providers): the fd tells. */
        pfd[n++] = (struct pollfd){.fd = tr->cq_fd, .events = POLLIN};
    }
    tr->busy = 0;
    if (ep != NULL && ep->pidfd >= 0)
        pfd[n++] = (struct pollfd){.fd = ep->pidfd, .events = POLLIN};
    return ppoll(pfd, n, &ts, NULL) > 0; /* EINTR is just an early wakeup */
}

/* Did peers access our memory since we last looked? Only known with a
 * remote access counter; true then for a while after the last access. */
static bool tq_ofi_target_active(tq_transport *tr)
{
    if (tr->cntr == NULL)
        return false;
    uint64_t now = tq__now_ns();
    uint64_t c = fi_cntr_read(tr->cntr);
    if (c != tr->cntr_seen) {
        tr->cntr_seen = c;
        tr->active_until = now + TQ_OFI_ACTIVE_NS;
    }
    return now < tr->active_until;
}

static int tq_ofi_progress(tq_transport *tr, int timeout_ms)
{
    if (tr == NULL)
        return TQ_ERR_INVALID;
    if (tq_ofi_drain(tr) > 0 || timeout_ms == 0)
        return TQ_OK;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = tq__now_ms();
        if (now >= deadline)
            break;
        int left = (int)TQ_MIN(deadline - now, (uint64_t)INT32_MAX);
        bool active = tq_ofi_target_active(tr);
        bool news = tq_ofi_wait(tr, NULL, left, active ? TQ_OFI_BUSY_STEP_US : TQ_OFI_IDLE_STEP_US);
        /* Reading the CQ is also what progresses a passive target. */
        if (tq_ofi_drain(tr) > 0 || news)
            break;
    }
    return TQ_OK;
}

/* Progress until ep has nothing outstanding or the deadline passes; a failed
 * ep gets a bounded grace for the provider to complete its operations with
 * errors. Returns TQ_OK or TQ_ERR_TIMEOUT. */
static int tq_ofi_drain_ep(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
    uint64_t fail_deadline = 0;
    uint64_t spin_until = tq__now_ns() + TQ_OFI_SPIN_NS;

    while (ep->outstanding > 0) {
        size_t n = tq_ofi_drain(tr);
        if (ep->outstanding == 0)
            break;
        if (n > 0)
            spin_until = tq__now_ns() + TQ_OFI_SPIN_NS;
        else
            (void)tq_ofi_peer_exited(ep);
        uint64_t now = tq__now_ms();
        if (ep->failed) {
            if (fail_deadline == 0)
                fail_deadline = now + TQ_OFI_DRAIN_MS;
            if (now >= fail_deadline || now >= deadline)
                return TQ_OK; /* the caller reports the failure */
        }
        if (now >= deadline)
            return TQ_ERR_TIMEOUT;
        if (n == 0 && tq__now_ns() >= spin_until) {
            uint64_t until = TQ_MIN(deadline, fail_deadline ? fail_deadline : UINT64_MAX);
            (void)tq_ofi_wait(tr, ep, (int)TQ_MIN(until - now, (uint64_t)TQ_OFI_SLICE_MS),
                              TQ_OFI_BUSY_STEP_US);
        }
    }
    return TQ_OK;
}

/* ---- memory registration -------------------------------------------------- */

/* A key for a registration when the provider lets us choose. It is all a
 * peer needs (with an offset) to reach the memory, and the peer may be
 * anyone who reaches our port: random, never 1, 2, 3... A key already taken
 * in this domain is refused (-FI_ENOKEY) and the caller draws again. */
static int tq_ofi_random_key(tq_transport *tr, uint64_t *key_p)
{
    uint64_t key = 0;
    for (int tries = 0; key == 0 && tries < 4; tries++) {
        if (getrandom(&key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
            tq_error("getrandom: %m");
            return TQ_ERR_IO;
        }
        key &= tr->key_mask;
    }
    if (key == 0)
        return TQ_ERR_IO;
    *key_p = key;
    return TQ_OK;
}

/* Register [addr, addr+len) with access, following the provider's modes. */
static int tq_ofi_mr_reg(tq_transport *tr, const void *addr, size_t len, uint64_t access,
                         struct fid_mr **mr_p)
{
    struct fid_mr *mr = NULL;
    int ret = -FI_ENOKEY;

    /* A drawn key may be taken already (or short keys collide): draw again. */
    for (int tries = 0; ret == -FI_ENOKEY && tries < 16; tries++) {
        uint64_t key = 0;
        if (!(tr->mr_mode & FI_MR_PROV_KEY)) {
            int rc = tq_ofi_random_key(tr, &key);
            if (rc != TQ_OK)
                return rc;
        }
        ret = fi_mr_reg(tr->domain, addr, len, access, 0, key, 0, &mr, NULL);
    }
    if (ret != 0) {
        tq_error("fi_mr_reg(%zu bytes): %s", len, tq_ofi_strerror(-ret));
        return tq_ofi_status(ret);
    }
    if (tr->mr_mode & FI_MR_ENDPOINT) {
        ret = fi_mr_bind(mr, &tr->ep->fid, 0);
        if (ret == 0)
            ret = fi_mr_enable(mr);
        if (ret != 0) {
            tq_error("binding a registration to the endpoint: %s", tq_ofi_strerror(-ret));
            goto err_close;
        }
    }
    *mr_p = mr;
    return TQ_OK;

err_close:
    fi_close(&mr->fid);
    return tq_ofi_status(ret);
}

/* The descriptor of a registration of ours covering [buf, buf+len), or NULL. */
static void *tq_ofi_mem_desc(tq_transport *tr, const void *buf, size_t len)
{
    uintptr_t b = (uintptr_t)buf;
    for (tq_list *it = tr->mems.next; it != &tr->mems; it = it->next) {
        tq_transport_mem *m = tq_list_entry(it, tq_transport_mem, link);
        uintptr_t mb = (uintptr_t)m->addr;
        if (b >= mb && len <= m->len && b - mb <= m->len - len)
            return m->desc;
    }
    return NULL;
}

static int tq_ofi_mem_alloc(tq_transport *tr, size_t len, void **addr_p, tq_transport_mem **mem_p)
{
    if (tr == NULL || len == 0 || addr_p == NULL || mem_p == NULL)
        return TQ_ERR_INVALID;
    /* libfabric has no memory of its own to offer: the caller allocates. */
    return TQ_ERR_UNSUPPORTED;
}

static int tq_ofi_mem_register(tq_transport *tr, void *addr, size_t len, tq_transport_mem **mem_p)
{
    int rc;

    if (tr == NULL || addr == NULL || len == 0 || mem_p == NULL ||
        (uintptr_t)addr + len < (uintptr_t)addr)
        return TQ_ERR_INVALID;
    tq_transport_mem *mem = calloc(1, sizeof(*mem));
    if (mem == NULL)
        return TQ_ERR_NOMEM;
    rc = tq_ofi_mr_reg(tr, addr, len, FI_REMOTE_READ | FI_REMOTE_WRITE | FI_READ | FI_WRITE,
                       &mem->mr);
    if (rc != TQ_OK)
        goto err_free;
    mem->key = fi_mr_key(mem->mr);
    if (mem->key == FI_KEY_NOTAVAIL) {
        tq_error("the provider has no plain key for a registration");
        rc = TQ_ERR_UNSUPPORTED;
        goto err_close;
    }
    mem->desc = fi_mr_desc(mem->mr);
    mem->addr = addr;
    mem->len = len;
    tq_list_insert_tail(&tr->mems, &mem->link);
    *mem_p = mem;
    return TQ_OK;

err_close:
    fi_close(&mem->mr->fid);
err_free:
    free(mem);
    return rc;
}

static int tq_ofi_mem_pack(tq_transport *tr, tq_transport_mem *mem, void **blob_p, size_t *len_p)
{
    if (tr == NULL || mem == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    uint8_t *blob = malloc(TQ_OFI_REGION_LEN);
    if (blob == NULL)
        return TQ_ERR_NOMEM;
    tq__rma_blob_region_put(blob, TQ_OFI_REGION_MAGIC, TQ_OFI_BLOB_VERSION,
                            (tr->mr_mode & FI_MR_VIRT_ADDR) ? TQ_OFI_REGION_F_VIRT : 0,
                            (uint64_t)(uintptr_t)mem->addr, (uint64_t)mem->len);
    tq_put_le64(blob + 24, mem->key);
    tq_put_le32(blob + 36, 0);
    tq__rma_blob_seal(blob, TQ_OFI_REGION_LEN, 32);
    *blob_p = blob;
    *len_p = TQ_OFI_REGION_LEN;
    return TQ_OK;
}

static void tq_ofi_mem_deregister(tq_transport *tr, tq_transport_mem *mem)
{
    if (tr == NULL || mem == NULL)
        return;
    tq_list_remove(&mem->link);
    int ret = fi_close(&mem->mr->fid);
    if (ret != 0)
        tq_warn("closing a registration: %s", tq_ofi_strerror(-ret));
    free(mem);
}

/* ---- choosing a provider ------------------------------------------------ */

/* The interface network providers must stay on: TQ_OFI_IFACE, else the one
 * libfabric's tcp or sockets provider was told to use. NULL: any. */
static const char *tq_ofi_iface(void)
{
    static const char *const vars[] = {"TQ_OFI_IFACE", "FI_TCP_IFACE", "FI_SOCKETS_IFACE"};
    for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && v[0] != '\0')
            return v;
    }
    return NULL;
}

static bool tq_ofi_is_ip_format(uint32_t fmt)
{
    return fmt == FI_SOCKADDR || fmt == FI_SOCKADDR_IN || fmt == FI_SOCKADDR_IN6;
}

/* An IPv4 or IPv6 socket address in [sa, sa+len), else NULL. */
static const struct sockaddr *tq_ofi_ip(const void *sa, size_t len)
{
    const struct sockaddr *s = sa;
    if (sa == NULL || len < sizeof(sa_family_t))
        return NULL;
    if (s->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        return s;
    if (s->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        return s;
    return NULL;
}

static bool tq_ofi_is_shm(const struct fi_info *i)
{
    return i->fabric_attr != NULL && i->fabric_attr->prov_name != NULL &&
           strcmp(i->fabric_attr->prov_name, "shm") == 0;
}

/* Where the endpoint may be: the interface of $TQ_OFI_IFACE and the like,
 * and the address it must listen on (a storage unit's data address). */
typedef struct {
    const char            *iface; /* NULL: any */
    const struct sockaddr *bind;  /* NULL: any */
} tq_ofi_place_t;

/* May we use entry i, given where we must stay? Entries that are not IP
 * based (shm) may be used on any interface. Bound to an address, only
 * entries whose source is that address (they listen there) and shm (same
 * node only) may: another fabric's address is somewhere we were not told
 * to listen. */
static bool tq_ofi_on_iface(const struct fi_info *i, const tq_ofi_place_t *pl, struct ifaddrs *ifs)
{
    const char *iface = pl->iface;
    if (pl->bind != NULL) {
        if (tq_ofi_is_shm(i))
            return true;
        const struct sockaddr *src = tq_ofi_is_ip_format(i->addr_format)
                                         ? tq_ofi_ip(i->src_addr, i->src_addrlen) : NULL;
        return src != NULL && tq__netif_same_ip(src, pl->bind);
    }
    if (iface == NULL || !tq_ofi_is_ip_format(i->addr_format))
        return true;
    const struct sockaddr *src = tq_ofi_ip(i->src_addr, i->src_addrlen);
    if (src == NULL)
        return i->domain_attr != NULL && i->domain_attr->name != NULL &&
               strcmp(i->domain_attr->name, iface) == 0;
    for (struct ifaddrs *a = ifs; a != NULL; a = a->ifa_next)
        if (a->ifa_addr != NULL && strcmp(a->ifa_name, iface) == 0 &&
            (a->ifa_addr->sa_family == AF_INET || a->ifa_addr->sa_family == AF_INET6) &&
            tq__netif_same_ip(a->ifa_addr, src))
            return true;
    return false;
}

static struct fi_info *tq_ofi_hints(void)
{
    struct fi_info *h = tq_ofi_lib.dupinfo(NULL);
    if (h == NULL)
        return NULL;
    h->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
    h->mode = FI_CONTEXT | FI_CONTEXT2; /* every op carries a struct fi_context2 */
    h->ep_attr->type = FI_EP_RDM;
    h->domain_attr->mr_mode = TQ_OFI_MR_MODES;
    h->domain_attr->threading = FI_THREAD_DOMAIN; /* callers serialise */
    return h;
}

/* Entry `skip` (0: the first) of those fi_getinfo offers for hints where we
 * must stay, copied into *info_p. Returns 0 or a negative FI_E* code
 * (-FI_ENODATA past the last). */
static int tq_ofi_getinfo(struct fi_info *hints, const tq_ofi_place_t *pl, unsigned skip,
                          struct fi_info **info_p)
{
    struct fi_info *list = NULL;
    int ret = tq_ofi_lib.getinfo(TQ_OFI_API, NULL, NULL, 0, hints, &list);
    if (ret != 0)
        return ret;
    struct ifaddrs *ifs = NULL;
    if (pl->iface != NULL && pl->bind == NULL && getifaddrs(&ifs) != 0) {
        tq_warn("getifaddrs: %m");
        ifs = NULL;
    }
    struct fi_info *pick = NULL;
    for (struct fi_info *i = list; i != NULL && pick == NULL; i = i->next)
        if (tq_ofi_on_iface(i, pl, ifs) && skip-- == 0)
            pick = i;
    if (ifs != NULL)
        freeifaddrs(ifs);
    ret = -FI_ENODATA;
    if (pick != NULL && (*info_p = tq_ofi_lib.dupinfo(pick)) != NULL)
        ret = 0;
    else if (pick != NULL)
        ret = -FI_ENOMEM;
    tq_ofi_lib.freeinfo(list);
    return ret;
}

/* Ask for base's provider and domain again, with more: op_flags as default
 * operation flags (which the provider must support) and extra caps. */
static int tq_ofi_refine(const struct fi_info *base, const tq_ofi_place_t *pl, uint64_t op_flags,
                         uint64_t caps, struct fi_info **info_p)
{
    struct fi_info *hints = tq_ofi_hints();
    if (hints == NULL)
        return -FI_ENOMEM;
    int ret = -FI_ENOMEM;
    hints->caps |= caps;
    hints->tx_attr->op_flags = op_flags;
    hints->fabric_attr->prov_name = strdup(base->fabric_attr->prov_name);
    hints->domain_attr->name = strdup(base->domain_attr->name);
    if (hints->fabric_attr->prov_name != NULL && hints->domain_attr->name != NULL)
        ret = tq_ofi_getinfo(hints, pl, 0, info_p);
    tq_ofi_lib.freeinfo(hints); /* frees the names too */
    return ret;
}

/* The fi_info entry to open (a copy): libfabric's choice number `skip`,
 * honouring FI_PROVIDER (libfabric does) and the interface, then refined.
 * *delivery_p: writes complete only once their data landed at the target. */
static int tq_ofi_choose(const tq_ofi_place_t *pl, unsigned skip, struct fi_info **info_p,
                         bool *delivery_p)
{
    char where[INET6_ADDRSTRLEN + 16] = "";
    struct fi_info *info = NULL, *better = NULL;

    struct fi_info *hints = tq_ofi_hints();
    if (hints == NULL)
        return TQ_ERR_NOMEM;
    int ret = tq_ofi_getinfo(hints, pl, skip, &info);
    tq_ofi_lib.freeinfo(hints);
    if (ret != 0 && skip > 0) /* tried every candidate */
        return TQ_ERR_UNSUPPORTED;
    if (ret != 0) {
        const char *prov = getenv("FI_PROVIDER");
        if (pl->bind != NULL) {
            const struct sockaddr *b = pl->bind;
            const void *ip = b->sa_family == AF_INET
                                 ? (const void *)&((const struct sockaddr_in *)b)->sin_addr
                                 : (const void *)&((const struct sockaddr_in6 *)b)->sin6_addr;
            snprintf(where, sizeof(where), " on address ");
            inet_ntop(b->sa_family, ip, where + strlen(where), INET6_ADDRSTRLEN);
        } else if (pl->iface != NULL) {
            snprintf(where, sizeof(where), " on interface %s", pl->iface);
        }
        tq_warn("no libfabric provider with RDM endpoints and RMA%s%s%s: %s",
                prov ? " among FI_PROVIDER=" : "", prov ? prov : "", where, tq_ofi_strerror(-ret));
        return ret == -FI_ENODATA || ret == -FI_ENOSYS ? TQ_ERR_UNSUPPORTED : tq_ofi_status(ret);
    }

    /* Remote completion of writes is what flush promises. And a passive
     * target of a provider needing manual progress cannot see peers'
     * accesses on its CQ: a remote access counter lets it poll briskly only
     * while they happen. */
    bool delivery = true;
    bool count = info->domain_attr->data_progress == FI_PROGRESS_MANUAL &&
                 !(info->caps & FI_RMA_EVENT);
    if (!(count && tq_ofi_refine(info, pl, FI_DELIVERY_COMPLETE, FI_RMA_EVENT, &better) == 0) &&
        tq_ofi_refine(info, pl, FI_DELIVERY_COMPLETE, 0, &better) != 0) {
        /* Hardware RMA completes at the target anyway; software may not. */
        tq_warn("provider %s cannot complete writes at the target (FI_DELIVERY_COMPLETE): "
                "flush waits for their transmit completion only", info->fabric_attr->prov_name);
        delivery = false;
    }
    if (better != NULL) {
        tq_ofi_lib.freeinfo(info);
        info = better;
    }
    *info_p = info;
    *delivery_p = delivery;
    return TQ_OK;
}

/* ---- shm region files ------------------------------------------------------ */

/* Name the shm endpoint of info (see TQ_OFI_SHM_PREFIX); false leaves
 * libfabric's own name (this process cannot tell who it is). */
static bool tq_ofi_shm_name(const tq_transport *tr, struct fi_info *info)
{
    static atomic_uint seq;
    uint64_t ns = tq__proc_pid_ns();
    if (ns == 0 || tr->self.start_time == 0)
        return false;
    char name[128];
    snprintf(name, sizeof(name), TQ_OFI_SHM_PREFIX "%llu.%u.%llu.%u", (unsigned long long)ns,
             tr->self.pid, (unsigned long long)tr->self.start_time, atomic_fetch_add(&seq, 1));
    char *copy = strdup(name);
    if (copy == NULL)
        return false;
    free(info->src_addr); /* fi_freeinfo frees it with free() too */
    info->src_addr = copy;
    info->src_addrlen = strlen(copy) + 1;
    return true;
}

/* Remove the region files our shm endpoints left when their process died
 * without closing them (SIGKILL, the OOM killer): those of processes of our
 * pid namespace that are gone. Bounded by the directory's length. */
static void tq_ofi_shm_reclaim(void)
{
    uint64_t ns = tq__proc_pid_ns();
    DIR *d = ns != 0 ? opendir(TQ_OFI_SHM_DIR) : NULL;
    if (d == NULL)
        return;
    size_t plen = strlen(TQ_OFI_SHM_PREFIX);
    struct dirent *e;
    for (unsigned seen = 0; seen < TQ_OFI_SHM_SCAN_MAX && (e = readdir(d)) != NULL; seen++) {
        unsigned long long file_ns, start;
        unsigned pid, n;
        char tail;
        if (strncmp(e->d_name, TQ_OFI_SHM_PREFIX, plen) != 0 ||
            sscanf(e->d_name + plen, "%llu.%u.%llu.%u%c", &file_ns, &pid, &start, &n, &tail) != 4 ||
            file_ns != ns || tq__proc_alive(pid, start))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            tq_info("removed %s/%s, left by process %u which is gone", TQ_OFI_SHM_DIR, e->d_name,
                    pid);
        else if (errno != ENOENT) /* another instance was quicker */
            tq_debug("cannot remove %s/%s: %m", TQ_OFI_SHM_DIR, e->d_name);
    }
    closedir(d);
}

/* ---- init / fini -------------------------------------------------------- */

static void tq_ofi_ep_close(tq_transport *tr, tq_transport_ep *ep);

/* Open the CQ with a wait fd, or without a wait object if the provider has none. */
static int tq_ofi_cq_open(tq_transport *tr)
{
    /* Room for the completions of a full transmit queue and then some:
     * providers without an overflow list stall when it fills. */
    struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_CONTEXT, .wait_obj = FI_WAIT_FD,
                            .size = TQ_MAX(tr->info->tx_attr->size, (size_t)TQ_OFI_CQ_SIZE)};
    int ret = fi_cq_open(tr->domain, &ca, &tr->cq, NULL);
    if (ret == 0) {
        ret = fi_control(&tr->cq->fid, FI_GETWAIT, &tr->cq_fd);
        if (ret == 0 && tr->cq_fd >= 0)
            return 0;
        fi_close(&tr->cq->fid);
        tr->cq = NULL;
    }
    tq_info("no wait fd on the completion queue (%s): polling in small steps",
            tq_ofi_strerror(-ret));
    tr->cq_fd = -1;
    ca.wait_obj = FI_WAIT_NONE;
    return fi_cq_open(tr->domain, &ca, &tr->cq, NULL);
}

/* A counter of peers' accesses to our memory, or none (only slower then). */
static void tq_ofi_cntr_open(tq_transport *tr)
{
    struct fi_cntr_attr ca = {.events = FI_CNTR_EVENTS_COMP, .wait_obj = FI_WAIT_NONE};
    int ret = fi_cntr_open(tr->domain, &ca, &tr->cntr, NULL);
    if (ret == 0 &&
        (ret = fi_ep_bind(tr->ep, &tr->cntr->fid, FI_REMOTE_WRITE | FI_REMOTE_READ)) != 0)
        fi_close(&tr->cntr->fid);
    if (ret != 0) {
        tq_info("no remote access counter (%s)", tq_ofi_strerror(-ret));
        tr->cntr = NULL;
    }
}

/* Open fabric, domain, queues and endpoint of tr->info and name the endpoint.
 * Returns 0, or a negative FI_E* code with *what naming the step that failed
 * (everything opened is closed again). */
static int tq_ofi_open(tq_transport *tr, bool delivery, const char **what)
{
    struct fi_info *info = tr->info;
    int ret;
    tr->mr_mode = info->domain_attr->mr_mode;
    /* TQ_OFI_MR_LOCAL=1 registers local buffers even when the provider does
     * not need it: the path hardware providers take, testable anywhere. */
    tr->mr_local = (tr->mr_mode & FI_MR_LOCAL) || tq_ofi_env_true("TQ_OFI_MR_LOCAL");
    tr->manual = info->domain_attr->data_progress == FI_PROGRESS_MANUAL;
    tr->write_flags = FI_COMPLETION | (delivery ? FI_DELIVERY_COMPLETE : 0);
    tr->max_xfer = (size_t)TQ_MIN((uint64_t)info->ep_attr->max_msg_size, TQ_OFI_MAX_XFER);
    /* TQ_OFI_MAX_XFER lowers the limit, to exercise splitting. */
    uint64_t cap;
    const char *cap_text = getenv("TQ_OFI_MAX_XFER");
    if (cap_text != NULL && tq__parse_size(cap_text, &cap) == 0 && cap > 0)
        tr->max_xfer = (size_t)TQ_MIN((uint64_t)tr->max_xfer, cap);
    if (tr->max_xfer == 0)
        tr->max_xfer = 1;
    size_t ks = info->domain_attr->mr_key_size;
    tr->key_mask = ks == 0 || ks >= 8 ? UINT64_MAX : (1ull << (8 * ks)) - 1;
    const struct sockaddr *src = tq_ofi_is_ip_format(info->addr_format)
                                     ? tq_ofi_ip(info->src_addr, info->src_addrlen) : NULL;
    tr->loopback = src != NULL && tq__netif_is_loopback(src);

    *what = "fi_fabric";
    if ((ret = tq_ofi_lib.fabric(info->fabric_attr, &tr->fabric, NULL)) != 0)
        return ret;
    *what = "fi_domain";
    if ((ret = fi_domain(tr->fabric, info, &tr->domain, NULL)) != 0)
        goto err_fabric;
    *what = "fi_cq_open";
    if ((ret = tq_ofi_cq_open(tr)) != 0)
        goto err_domain;
    struct fi_av_attr aa = {.type = info->domain_attr->av_type != FI_AV_UNSPEC
                                        ? info->domain_attr->av_type : FI_AV_TABLE};
    *what = "fi_av_open";
    if ((ret = fi_av_open(tr->domain, &aa, &tr->av, NULL)) != 0)
        goto err_cq;
    *what = "fi_endpoint";
    if ((ret = fi_endpoint(tr->domain, info, &tr->ep, NULL)) != 0)
        goto err_av;
    *what = "binding the endpoint";
    if ((ret = fi_ep_bind(tr->ep, &tr->av->fid, 0)) != 0 ||
        (ret = fi_ep_bind(tr->ep, &tr->cq->fid, FI_TRANSMIT | FI_RECV)) != 0)
        goto err_ep;
    if (tr->manual && (info->caps & FI_RMA_EVENT))
        tq_ofi_cntr_open(tr);
    *what = "fi_enable";
    if ((ret = fi_enable(tr->ep)) != 0)
        goto err_ep;

    uint8_t name[256];
    size_t nlen = sizeof(name);
    *what = "fi_getname";
    ret = fi_getname(&tr->ep->fid, name, &nlen);
    if (ret == -FI_ETOOSMALL && nlen <= TQ_OFI_NAME_MAX && (tr->name = malloc(nlen)) != NULL)
        ret = fi_getname(&tr->ep->fid, tr->name, &nlen);
    else if (ret == 0 && (tr->name = malloc(nlen)) != NULL)
        memcpy(tr->name, name, nlen);
    if (ret == 0 && tr->name == NULL)
        ret = -FI_ENOMEM;
    if (ret == 0 && (nlen == 0 || nlen > TQ_OFI_NAME_MAX))
        ret = -FI_EINVAL;
    if (ret != 0)
        goto err_name;
    tr->name_len = nlen;
    return 0;

err_name:
    free(tr->name);
    tr->name = NULL;
err_ep:
    fi_close(&tr->ep->fid);
    if (tr->cntr != NULL)
        fi_close(&tr->cntr->fid);
    tr->cntr = NULL;
err_av:
    fi_close(&tr->av->fid);
err_cq:
    fi_close(&tr->cq->fid);
    tr->cq_fd = -1;
err_domain:
    fi_close(&tr->domain->fid);
err_fabric:
    fi_close(&tr->fabric->fid);
    return ret;
}

/* Candidates are tried in libfabric's order until one opens: a provider
 * listed may still fail here (verbs;ofi_rxm on a soft-RoCE device refuses
 * fi_enable), and the next one (tcp;ofi_rxm) then serves. */
#define TQ_OFI_CANDIDATES 8

static int tq_ofi_init(const tq_transport_params_t *params, tq_transport **tr_p)
{
    if (tr_p == NULL)
        return TQ_ERR_INVALID;
    tq_ofi_place_t place = {tq_ofi_iface(), params != NULL ? params->bind_addr : NULL};
    if (pthread_once(&tq_ofi_lib_once, tq_ofi_lib_load) != 0 || !tq_ofi_lib.loaded)
        return TQ_ERR_UNSUPPORTED;
    tq_transport *tr = calloc(1, sizeof(*tr));
    if (tr == NULL)
        return TQ_ERR_NOMEM;
    tq_list_init(&tr->eps);
    tq_list_init(&tr->mems);
    tq_list_init(&tr->zombies);
    tr->cq_fd = -1;
    tq__proc_self(&tr->self);

    int rc = TQ_ERR_UNSUPPORTED;
    char failure[512] = "";
    for (unsigned skip = 0; skip < TQ_OFI_CANDIDATES; skip++) {
        bool delivery = false;
        const char *what = NULL;
        int chosen = tq_ofi_choose(&place, skip, &tr->info, &delivery);
        if (chosen != TQ_OK) {
            rc = skip == 0 ? chosen : rc; /* past the last: the last failure stands */
            break;
        }
        if (tq_ofi_is_shm(tr->info)) {
            tq_ofi_shm_reclaim();
            if (!tq_ofi_shm_name(tr, tr->info))
                tq_info("shm endpoint named by libfabric: a SIGKILL leaves its file in %s",
                        TQ_OFI_SHM_DIR);
        }
        int ret = tq_ofi_open(tr, delivery, &what);
        struct fi_info *info = tr->info;
        if (ret == 0) {
            tq_info("provider %s, domain %s, mr_mode [%s], %s data progress, %s%s, %s completion",
                    info->fabric_attr->prov_name, info->domain_attr->name,
                    tq_ofi_lib.tostr(&tr->mr_mode, FI_TYPE_MR_MODE),
                    tr->manual ? "manual" : "auto",
                    tr->cq_fd >= 0 ? "wait fd" : "no wait object",
                    tr->cntr != NULL ? ", remote access counter" : "",
                    delivery ? "delivery" : "transmit");
            *tr_p = tr;
            return TQ_OK;
        }
        snprintf(failure, sizeof(failure), "%s (%s): %s", what, info->fabric_attr->prov_name,
                 tq_ofi_strerror(-ret));
        tq_info("%s; trying the next provider", failure);
        rc = ret == -FI_ENODEV || ret == -FI_ENODATA || ret == -FI_ENOSYS ? TQ_ERR_UNSUPPORTED
                                                                          : tq_ofi_status(ret);
        tq_ofi_lib.freeinfo(tr->info);
        tr->info = NULL;
    }
    if (failure[0] != '\0')
        tq_warn("%s", failure);
    free(tr);
    return rc;
}

static void tq_ofi_fini(tq_transport *tr)
{
    if (tr == NULL)
        return;
    bool shm = tq_ofi_is_shm(tr->info);
    while (!tq_list_empty(&tr->eps)) {
        tq_warn("fini: closing an endpoint left open");
        tq_ofi_ep_close(tr, tq_list_entry(tr->eps.next, tq_transport_ep, link));
    }
    while (!tq_list_empty(&tr->mems)) {
        tq_warn("fini: deregistering memory left registered");
        tq_ofi_mem_deregister(tr, tq_list_entry(tr->mems.next, tq_transport_mem, link));
    }
    /* Operations that never completed (their peer died) still hold
     * registrations, which must go before the domain. */
    for (tq_ofi_slab *s = tr->slabs; s != NULL; s = s->next)
        for (size_t i = 0; i < TQ_OFI_OPS_PER_SLAB; i++)
            if (s->ops[i].mr != NULL) {
                fi_close(&s->ops[i].mr->fid);
                s->ops[i].mr = NULL;
            }
    fi_close(&tr->ep->fid);
    /* Nothing calls back into closed endpoints now. */
    while (!tq_list_empty(&tr->zombies)) {
        tq_list *it = tr->zombies.next;
        tq_list_remove(it);
        tq_transport_ep *ep = tq_list_entry(it, tq_transport_ep, link);
        if (ep->pidfd >= 0)
            close(ep->pidfd);
        free(ep);
    }
    if (tr->cntr != NULL)
        fi_close(&tr->cntr->fid);
    fi_close(&tr->av->fid);
    fi_close(&tr->cq->fid);
    fi_close(&tr->domain->fid);
    fi_close(&tr->fabric->fid);
    while (tr->slabs != NULL) {
        tq_ofi_slab *s = tr->slabs;
        tr->slabs = s->next;
        free(s);
    }
    tq_ofi_lib.freeinfo(tr->info);
    free(tr->name);
    free(tr);
    if (shm) /* peers that died since we started, here too */
        tq_ofi_shm_reclaim();
}

/* ---- address ------------------------------------------------------------ */

static int tq_ofi_address(tq_transport *tr, void **blob_p, size_t *len_p)
{
    if (tr == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    const char *prov = tr->info->fabric_attr->prov_name;
    size_t plen = strlen(prov);
    if (plen == 0 || plen > UINT8_MAX)
        return TQ_ERR_UNSUPPORTED;
    size_t len = TQ_OFI_ADDR_HDR + plen + tr->name_len;
    uint8_t *blob = malloc(len);
    if (blob == NULL)
        return TQ_ERR_NOMEM;
    tq__rma_blob_head_put(blob, TQ_OFI_ADDR_MAGIC, TQ_OFI_BLOB_VERSION);
    blob[5] = 0;
    blob[6] = (uint8_t)plen;
    blob[7] = 0;
    tq_put_le32(blob + 8, tr->info->addr_format);
    tq_put_le32(blob + 12, (uint32_t)tr->name_len);
    tq_put_le32(blob + 20, tr->self.pid);
    tq_put_le64(blob + 24, tr->self.start_time);
    memcpy(blob + 32, tr->self.boot_id, 16);
    memcpy(blob + TQ_OFI_ADDR_HDR, prov, plen);
    memcpy(blob + TQ_OFI_ADDR_HDR + plen, tr->name, tr->name_len);
    tq__rma_blob_seal(blob, len, 16);
    *blob_p = blob;
    *len_p = len;
    return TQ_OK;
}

/* ---- endpoints ------------------------------------------------------------ */

/* Is the peer's endpoint name one our provider can take? Names of socket
 * address formats must match ours in length and family, so the provider
 * never reads past them; a loopback instance only reaches loopback peers. */
static int tq_ofi_check_name(tq_transport *tr, const uint8_t *name, size_t len)
{
    uint32_t fmt = tr->info->addr_format;
    if (fmt == FI_ADDR_STR)
        return memchr(name, '\0', len) == name + len - 1 ? TQ_OK : TQ_ERR_INVALID;
    if (!tq_ofi_is_ip_format(fmt))
        return len == tr->name_len ? TQ_OK : TQ_ERR_INVALID;
    /* Copied: the blob gives no alignment for a struct sockaddr. */
    struct sockaddr_storage ss;
    if (len != tr->name_len || len > sizeof(ss))
        return TQ_ERR_INVALID;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, name, len);
    const struct sockaddr *peer = tq_ofi_ip(&ss, len);
    const struct sockaddr *self = tq_ofi_ip(tr->name, tr->name_len);
    if (peer == NULL || self == NULL || peer->sa_family != self->sa_family)
        return TQ_ERR_INVALID;
    if (tr->loopback && !tq__netif_is_loopback(peer)) {
        tq_warn("peer address is not a loopback address; this instance is on loopback only");
        return TQ_ERR_UNSUPPORTED;
    }
    return TQ_OK;
}

static int tq_ofi_ep_connect(tq_transport *tr, const void *addr, size_t len, tq_transport_ep **ep_p)
{
    const uint8_t *b = addr;
    int rc;

    if (tr == NULL || addr == NULL || ep_p == NULL || len <= TQ_OFI_ADDR_HDR ||
        len > TQ_OFI_ADDR_HDR + UINT8_MAX + TQ_OFI_NAME_MAX)
        return TQ_ERR_INVALID;
    size_t plen = b[6];
    size_t nlen = tq_get_le32(b + 12);
    if (!tq__rma_blob_check(b, len, TQ_OFI_ADDR_MAGIC, TQ_OFI_BLOB_VERSION, 16) || b[5] != 0 ||
        b[7] != 0 || plen == 0 || nlen == 0 || nlen > TQ_OFI_NAME_MAX ||
        len != TQ_OFI_ADDR_HDR + plen + nlen)
        return TQ_ERR_INVALID;

    /* Intact, but perhaps from a peer on another provider. */
    const char *prov = tr->info->fabric_attr->prov_name;
    const uint8_t *pname = b + TQ_OFI_ADDR_HDR;
    if (plen != strlen(prov) || memcmp(pname, prov, plen) != 0) {
        char peer[64];
        tq_ofi_printable(peer, sizeof(peer), pname, plen);
        tq_warn("peer uses provider %s, this instance %s: set FI_PROVIDER alike on both", peer,
                prov);
        return TQ_ERR_UNSUPPORTED;
    }
    if (tq_get_le32(b + 8) != tr->info->addr_format) {
        tq_warn("peer address format %u, ours %u", tq_get_le32(b + 8), tr->info->addr_format);
        return TQ_ERR_UNSUPPORTED;
    }
    const uint8_t *name = pname + plen;
    if ((rc = tq_ofi_check_name(tr, name, nlen)) != TQ_OK)
        return rc;

    tq_transport_ep *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return TQ_ERR_NOMEM;
    tq_list_init(&ep->regions);
    int ret = fi_av_insert(tr->av, name, 1, &ep->addr, 0, NULL);
    if (ret != 1) {
        tq_warn("fi_av_insert: %s", ret < 0 ? tq_ofi_strerror(-ret) : "address refused");
        rc = ret < 0 ? tq_ofi_status(ret) : TQ_ERR_INVALID;
        if (rc == TQ_ERR_IO || rc == TQ_ERR_UNSUPPORTED)
            rc = TQ_ERR_CONNECTION;
        goto err_free;
    }
    ep->pidfd = tq_ofi_local_peer(tr, b);
    tq_list_insert_tail(&tr->eps, &ep->link);
    tq_debug("connected%s", ep->pidfd >= 0 ? ", watching the peer process" : "");
    *ep_p = ep;
    return TQ_OK;

err_free:
    free(ep);
    return rc;
}

/* Free a closed ep once nothing of it is in flight. */
static void tq_ofi_ep_free(tq_transport *tr, tq_transport_ep *ep)
{
    tq_list_remove(&ep->link); /* from the zombies, if there */
    int ret = fi_av_remove(tr->av, &ep->addr, 1, 0);
    if (ret != 0)
        tq_debug("fi_av_remove: %s", tq_ofi_strerror(-ret));
    if (ep->pidfd >= 0)
        close(ep->pidfd);
    free(ep);
}

static void tq_ofi_ep_close(tq_transport *tr, tq_transport_ep *ep)
{
    if (tr == NULL || ep == NULL)
        return;
    (void)tq_ofi_peer_exited(ep);
    if (!ep->failed && ep->outstanding > 0 &&
        tq_ofi_drain_ep(tr, ep, TQ_OFI_CLOSE_MS) != TQ_OK)
        ep->failed = true;
    while (!tq_list_empty(&ep->regions)) {
        tq_list *it = ep->regions.next;
        tq_list_remove(it);
        tq_list_entry(it, tq_transport_region, link)->ep = NULL;
    }
    tq_list_remove(&ep->link);
    ep->closed = true;
    if (ep->outstanding == 0) {
        tq_ofi_ep_free(tr, ep);
    } else {
        /* The provider still owns operations that point at ep: keep it (and
         * its address) until they complete or fini closes the endpoint. */
        tq_warn("ep_close: %zu operations still pending", ep->outstanding);
        tq_list_insert_tail(&tr->zombies, &ep->link);
    }
}

/* ---- regions -------------------------------------------------------------- */

static int tq_ofi_region_unpack(tq_transport *tr, tq_transport_ep *ep, const void *blob,
                                size_t len, tq_transport_region **region_p)
{
    const uint8_t *b = blob;
    uint64_t base, rlen;

    if (tr == NULL || ep == NULL || blob == NULL || region_p == NULL || len != TQ_OFI_REGION_LEN ||
        !tq__rma_blob_region_get(b, len, TQ_OFI_REGION_MAGIC, TQ_OFI_BLOB_VERSION,
                                 TQ_OFI_REGION_F_VIRT, 32, &base, &rlen) ||
        tq_get_le32(b + 36) != 0)
        return TQ_ERR_INVALID;
    if (ep->failed)
        return TQ_ERR_CONNECTION;

    tq_transport_region *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return TQ_ERR_NOMEM;
    r->ep = ep;
    r->base = base;
    r->len = rlen;
    r->key = tq_get_le64(b + 24);
    r->virt = (b[5] & TQ_OFI_REGION_F_VIRT) != 0;
    tq_list_insert_tail(&ep->regions, &r->link);
    *region_p = r;
    return TQ_OK;
}

static void tq_ofi_region_release(tq_transport *tr, tq_transport_region *region)
{
    if (tr == NULL || region == NULL)
        return;
    /* Only a key and numbers: operations in flight do not need the struct. */
    if (region->ep != NULL)
        tq_list_remove(&region->link);
    free(region);
}

/* ---- data movement ---------------------------------------------------------- */

/* Post one operation, waiting for room while the provider's queue is full. */
static int tq_ofi_issue(const tq__rma_post_t *p, void *local, uint64_t off, size_t len)
{
    tq_transport *tr = p->tr;
    tq_transport_ep *ep = p->ep;
    tq_transport_region *region = p->region;
    tq_rma_dir_t dir = p->dir;
    int rc;
    tq_ofi_op *op = tq_ofi_op_get(tr, ep);
    if (op == NULL)
        return TQ_ERR_NOMEM;
    void *desc = NULL;
    if (tr->mr_local && (desc = tq_ofi_mem_desc(tr, local, len)) == NULL) {
        /* Registered for this operation and released at its completion: a
         * cache would need to hear of every munmap, which libfabric does not
         * tell us, and a stale registration corrupts silently on hardware. */
        rc = tq_ofi_mr_reg(tr, local, len, FI_READ | FI_WRITE, &op->mr);
        if (rc != TQ_OK)
            goto err_op;
        desc = fi_mr_desc(op->mr);
    }
    struct iovec iov = {.iov_base = local, .iov_len = len};
    struct fi_rma_iov rma = {.addr = (region->virt ? region->base : 0) + off, .len = len,
                             .key = region->key};
    struct fi_msg_rma msg = {
        .msg_iov = &iov,
        .desc = &desc,
        .iov_count = 1,
        .addr = ep->addr,
        .rma_iov = &rma,
        .rma_iov_count = 1,
        .context = &op->ctx,
    };
    uint64_t stall_start = 0;
    for (;;) {
        ssize_t ret = dir == TQ_RMA_PUT ? fi_writemsg(tr->ep, &msg, tr->write_flags)
                                        : fi_readmsg(tr->ep, &msg, FI_COMPLETION);
        if (ret == 0)
            break;
        if (ret != -FI_EAGAIN) {
            tq_warn("fi_%smsg(%zu bytes): %s", dir == TQ_RMA_PUT ? "write" : "read", len,
                    tq_ofi_strerror((int)-ret));
            /* sockets: no connection to the address (the peer is gone). */
            rc = ret == -FI_ENOENT ? TQ_ERR_CONNECTION : tq_ofi_status(ret);
            if (rc == TQ_ERR_CONNECTION)
                ep->failed = true;
            goto err_op;
        }
        /* Queue full: completions make room (and reading them progresses).
         * Never call into the provider for a dead peer again: libfabric
         * 1.17's shm spins forever on the lock of a peer killed holding it. */
        size_t done = tq_ofi_drain(tr);
        if (ep->failed || tq_ofi_peer_exited(ep)) {
            rc = ep->first_error != TQ_OK ? ep->first_error : TQ_ERR_CONNECTION;
            goto err_op;
        }
        if (done > 0) {
            stall_start = 0;
            continue;
        }
        uint64_t now = tq__now_ms();
        if (stall_start == 0)
            stall_start = now;
        if (now - stall_start >= TQ_OFI_STALL_MS) {
            tq_warn("no room to post for %d ms: giving up on the peer", TQ_OFI_STALL_MS);
            ep->failed = true;
            rc = TQ_ERR_TIMEOUT;
            goto err_op;
        }
        (void)tq_ofi_wait(tr, ep, TQ_OFI_SLICE_MS, TQ_OFI_BUSY_STEP_US);
    }
    ep->outstanding++;
    return TQ_OK;

err_op:
    tq_ofi_op_put(tr, op);
    if (ep->first_error == TQ_OK)
        ep->first_error = rc;
    return rc;
}

/* A run contiguous on both sides, split at the provider's largest transfer. */
static int tq_ofi_issue_run(tq__rma_post_t *p, char *local, uint64_t off, size_t len)
{
    while (len > 0) {
        size_t n = TQ_MIN(len, p->tr->max_xfer);
        int rc = tq_ofi_issue(p, local, off, n);
        if (rc != TQ_OK)
            return rc;
        local += n;
        off += n;
        len -= n;
    }
    return TQ_OK;
}

static int tq_ofi_post(tq_transport *tr, tq_transport_ep *ep, tq_transport_region *region,
                       tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n)
{
    /* Validate everything first, so a bad iov means nothing was posted. */
    if (tr == NULL || ep == NULL || region == NULL || region->ep != ep ||
        tq__rma_check(dir, iov, n, region->len) != TQ_OK)
        return TQ_ERR_INVALID;
    if (ep->failed || tq_ofi_peer_exited(ep))
        return TQ_ERR_CONNECTION;

    /* Coalesce runs contiguous on both sides into one operation. */
    tq__rma_post_t p = {tr, ep, region, dir};
    return tq__rma_runs(&p, iov, n, tq_ofi_issue_run);
}

static int tq_ofi_flush(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    if (tr == NULL || ep == NULL)
        return TQ_ERR_INVALID;
    if (tq_ofi_drain_ep(tr, ep, timeout_ms) == TQ_ERR_TIMEOUT) {
        tq_warn("flush: %zu operations not complete after %d ms", ep->outstanding, timeout_ms);
        ep->failed = true;
        return TQ_ERR_TIMEOUT;
    }
    int rc = ep->first_error;
    ep->first_error = TQ_OK;
    /* Some providers report a lost connection as a mere FI_EIO (sockets): a
     * peer process on this node that exits a moment later tells which it
     * was (its sockets close before it is gone). */
    if (rc == TQ_ERR_IO && ep->pidfd >= 0) {
        struct pollfd pfd = {.fd = ep->pidfd, .events = POLLIN};
        (void)poll(&pfd, 1, TQ_OFI_EXIT_GRACE_MS);
        if (tq_ofi_peer_exited(ep))
            rc = TQ_ERR_CONNECTION;
    }
    if (rc == TQ_OK && ep->failed)
        rc = TQ_ERR_CONNECTION;
    return rc;
}

const tq_transport_ops tq_ofi_ops = {
    .name = "ofi",
    .init = tq_ofi_init,
    .fini = tq_ofi_fini,
    .address = tq_ofi_address,
    .mem_alloc = tq_ofi_mem_alloc,
    .mem_register = tq_ofi_mem_register,
    .mem_pack = tq_ofi_mem_pack,
    .mem_deregister = tq_ofi_mem_deregister,
    .ep_connect = tq_ofi_ep_connect,
    .ep_close = tq_ofi_ep_close,
    .region_unpack = tq_ofi_region_unpack,
    .region_release = tq_ofi_region_release,
    .post = tq_ofi_post,
    .flush = tq_ofi_flush,
    .progress = tq_ofi_progress,
};
