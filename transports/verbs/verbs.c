/* verbs.c: the tq_transport ops over rdma-core: RC queue pairs set up with rdma_cm, RDMA WRITE/READ. */
#define TQ_LOG_COMPONENT "verbs"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#ifdef TQ_VERBS_HAVE_UCM
#include <ucm/api/ucm.h>
#endif

#include "tq/transport.h"
#include "util/common.h"
#include "util/list.h"
#include "util/log.h"
#include "regcache.h"
#include "rma.h"
#include "rma_blob.h"

/*
 * Addressing: a storage unit listens with rdma_cm on its data address (the
 * bind address it is started with), which must be an IP address of an RDMA
 * device (the device's own netdev: rxe0's veth, a RoCE NIC's port, an IPoIB
 * interface), else verbs is not served. An instance without one (a client,
 * a test) takes $TQ_VERBS_ADDR ("IP" or "IP:PORT", "[IPv6]:PORT") if set,
 * else the first address of an up, non-loopback interface that rdma_cm can
 * bind to a device. The port is an ephemeral one unless TQ_VERBS_ADDR names
 * one. A client opens the device of the same rule and checks that the peer
 * is reached through it. The address blob carries IP, port and a random
 * secret the client must present when it connects, so only holders of the
 * blob (clients the controller authenticated) get a queue pair.
 */
#define TQ_VERBS_QPS_DEFAULT   2   /* RC QPs per peer ($TQ_VERBS_QPS, 1..8) */
#define TQ_VERBS_QPS_MAX       8
#define TQ_VERBS_SQ_DEPTH      256u /* send queue of each QP */
/* Work requests go to the device in batches of this many per ibv_post_send;
 * the last of each batch, and so the last of every post, asks for a
 * completion. Unsignalled ones are known complete when a later one is. */
#define TQ_VERBS_BATCH         32u
#define TQ_VERBS_MAX_SGE       8u
#define TQ_VERBS_INLINE        256 /* asked for; the QP says what it got */
/* One work request moves at most this much: large runs are striped over
 * the QPs ($TQ_VERBS_MAX_XFER lowers it, to exercise splitting). */
#define TQ_VERBS_MAX_XFER      (1u << 20)
/* Runs shorter than this are copied through a registered staging buffer of
 * the endpoint instead of registering the caller's memory. */
#define TQ_VERBS_STAGE_MAX     (8u << 10)
#define TQ_VERBS_STAGE_LEN     (1u << 20)
#define TQ_VERBS_RD_ATOM       16u /* RDMA READs in flight per QP, at most */
#define TQ_VERBS_MAX_PASSIVE   65536u /* connections a target accepts (and the device) */
/* 4.096 us * 2^16: 0.27 s per try, 7 retries: a silent peer fails in ~2 s. */
#define TQ_VERBS_ACK_TIMEOUT   16
/* Bounds on waits the caller did not ask for. */
#define TQ_VERBS_RESOLVE_MS    2000
#define TQ_VERBS_CONNECT_MS    5000
#define TQ_VERBS_CLOSE_MS      3000
#define TQ_VERBS_DRAIN_MS      500  /* a failed ep's grace for its flushed completions */
#define TQ_VERBS_STALL_MS      10000 /* no room to post, nothing completing */
#define TQ_VERBS_SLICE_MS      100

/* Blob layouts (little endian). Address: magic, version, flags (0), family
 * (4 or 6), zero u8, port u16, zero u16, IP [16], secret u64, checksum u32.
 * Region: magic, version, 3 zero bytes, base u64, length u64, rkey u32,
 * checksum u32. The checksum covers everything but itself. */
#define TQ_VERBS_ADDR_MAGIC    0x41565154u /* "TQVA" */
#define TQ_VERBS_REGION_MAGIC  0x52565154u /* "TQVR" */
#define TQ_VERBS_BLOB_VERSION  1u
#define TQ_VERBS_ADDR_LEN      40u
#define TQ_VERBS_REGION_LEN    32u

/* What a cm id's context points at; the first member of both. */
enum { TQ_VERBS_ID_ACTIVE = 1, TQ_VERBS_ID_PASSIVE };
enum { TQ_VERBS_QP_CONNECTING, TQ_VERBS_QP_UP, TQ_VERBS_QP_DOWN };
enum { TQ_VERBS_PEND_NONE, TQ_VERBS_PEND_STAGED, TQ_VERBS_PEND_REG };

/* One RC queue pair of an endpoint and the batch of work requests being built for it. */
typedef struct {
    int                 kind; /* TQ_VERBS_ID_ACTIVE */
    tq_transport_ep    *ep;
    struct rdma_cm_id  *id;
    unsigned            index;
    int                 state;
    uint32_t            max_inline;
    uint64_t            posted, completed; /* work requests, counted from 1 */
    unsigned            nwr;
    struct ibv_send_wr  wr[TQ_VERBS_BATCH];
    struct ibv_sge      sge[TQ_VERBS_BATCH][TQ_VERBS_MAX_SGE];
} tq_verbs_qp;

/* A connection a target accepted. */
typedef struct {
    int                kind; /* TQ_VERBS_ID_PASSIVE */
    tq_list            link;
    struct rdma_cm_id *id;
} tq_verbs_conn;

/* The work request being gathered: runs remote-contiguous, in the staging
 * buffer (one SGE) or in registered memory (one SGE per run). */
typedef struct {
    int            kind;
    uint64_t       roff;
    size_t         len;
    unsigned       nsge;
    struct ibv_sge sge[TQ_VERBS_MAX_SGE];
} tq_verbs_pend;

/* A staged get: copied to dst once its read completed. */
typedef struct {
    void  *dst;
    size_t off, len;
} tq_verbs_out;

struct tq_transport {
    struct rdma_event_channel *cm_ch;   /* non-blocking */
    struct rdma_cm_id         *anchor;  /* bound to our address: holds the device */
    struct rdma_cm_id         *listener;
    struct ibv_context        *ctx;
    struct ibv_pd             *pd;
    struct ibv_comp_channel   *comp_ch; /* non-blocking, shared by every ep's CQ */
    struct ibv_cq             *passive_cq;
    struct sockaddr_storage    addr;
    uint16_t                   listen_port; /* host order; 0: ephemeral */
    char                       addr_text[INET6_ADDRSTRLEN + 8];
    uint8_t                    secret[8];
    unsigned                   nqp, sq_depth, batch, max_sge, max_sge_rd, rd_atom, resp_res;
    int                        max_cqe;
    size_t                     max_xfer;
    bool                       odp;
    tq_list                    eps, mems, passive;
    unsigned                   npassive, max_passive;

    /* Registrations of callers' buffers, kept while usable (see the
     * registration cache below); the epochs of eps' holds come from it too. */
    tq__regcache              *cache;
    bool                       cache_on, hooked, hook_failed;
};

struct tq_transport_ep {
    tq_list        link;
    tq_transport  *tr;
    struct ibv_cq *cq;
    unsigned       nqp, next_qp;
    tq_verbs_qp   *qps[TQ_VERBS_QPS_MAX];
    uint8_t        secret[8];
    uint32_t       max_inline;
    tq_list        regions;
    bool           failed;     /* completion error, disconnect or timeout: close it */
    bool           qps_killed; /* moved to the error state, so the rest flush */
    int            first_error;
    tq_verbs_pend  pend;
    /* Staging buffer, allocated on first use, reused after each flush. */
    uint8_t       *stage;
    struct ibv_mr *stage_mr;
    bool           stage_failed;
    size_t         stage_used;
    tq_verbs_out  *outs;
    size_t         nouts, cap_outs;
    /* Registrations the operations in flight use: cache entries held, and
     * registrations made for them alone. Released when they complete. */
    tq__regcache_holds_t holds;
    struct ibv_mr **temps;
    size_t         ntemps, cap_temps;
};

struct tq_transport_mem {
    tq_list        link;
    struct ibv_mr *mr;
    void          *addr;
    size_t         len;
};

struct tq_transport_region {
    tq_list          link;
    tq_transport_ep *ep; /* NULL once the ep was closed */
    uint64_t         base, len;
    uint32_t         rkey;
};

/* ---- small helpers ----------------------------------------------------- */

static void tq_verbs_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        tq_warn("fcntl(O_NONBLOCK): %m");
}

static unsigned tq_verbs_env_uint(const char *name, unsigned dflt, unsigned lo, unsigned hi)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        return dflt;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*end != '\0' || x < lo || x > hi) {
        tq_warn("%s=%s: not a number from %u to %u, using %u", name, v, lo, hi, dflt);
        return dflt;
    }
    return (unsigned)x;
}

static bool tq_verbs_env_off(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && (strcmp(v, "0") == 0 || strcmp(v, "no") == 0 || strcmp(v, "n") == 0);
}

static const char *tq_verbs_ntop(const struct sockaddr *sa, char *buf, size_t cap)
{
    const void *a = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                             : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (inet_ntop(sa->sa_family, a, buf, (socklen_t)cap) == NULL)
        snprintf(buf, cap, "?");
    return buf;
}

static void tq_verbs_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* "IP", "IP:PORT", "IPv6" or "[IPv6]:PORT" into ss and *port_p. */
static bool tq_verbs_parse_addr(const char *text, struct sockaddr_storage *ss, uint16_t *port_p)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t hl;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return false;
        hl = (size_t)(close - text - 1);
        text++;
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = strchr(text, ':');
        bool one_colon = colon != NULL && strchr(colon + 1, ':') == NULL;
        hl = one_colon ? (size_t)(colon - text) : strlen(text);
        port = one_colon ? colon + 1 : NULL;
    }
    if (hl == 0 || hl >= sizeof(host))
        return false;
    memcpy(host, text, hl);
    host[hl] = '\0';
    unsigned long p = 0;
    if (port != NULL) {
        char *end;
        p = strtoul(port, &end, 10);
        if (port[0] == '\0' || *end != '\0' || p > 65535)
            return false;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        return false;
    *port_p = (uint16_t)p;
    return true;
}

/* ---- endpoints failing ---------------------------------------------------- */

/* Mark ep failed (once, with why); its QPs go to the error state so every
 * operation still queued completes (flushed) soon. */
static void tq_verbs_ep_fail(tq_transport_ep *ep, int rc, const char *why)
{
    if (!ep->failed)
        tq_warn("connection failed: %s", why);
    ep->failed = true;
    if (ep->first_error == TQ_OK)
        ep->first_error = rc;
    if (ep->qps_killed)
        return;
    ep->qps_killed = true;
    for (unsigned i = 0; i < ep->nqp; i++) {
        tq_verbs_qp *qp = ep->qps[i];
        if (qp == NULL || qp->id == NULL || qp->id->qp == NULL)
            continue;
        struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
        int ret = ibv_modify_qp(qp->id->qp, &a, IBV_QP_STATE);
        if (ret != 0)
            tq_debug("ibv_modify_qp(ERR): %s", strerror(ret));
    }
}

static bool tq_verbs_busy(const tq_transport_ep *ep)
{
    for (unsigned i = 0; i < ep->nqp; i++)
        if (ep->qps[i] != NULL && ep->qps[i]->posted != ep->qps[i]->completed)
            return true;
    return false;
}

/* ---- connection manager events ------------------------------------------ */

/* What we keep of an event: it is acked before it is handled, since
 * handling may destroy its id (which waits for the ack). */
typedef struct {
    enum rdma_cm_event_type type;
    struct rdma_cm_id      *id;
    int                     status;
    uint8_t                 reads; /* RDMA READs in flight the connecting peer asks for */
    uint8_t                 secret[8];
    bool                    has_secret;
} tq_verbs_event_t;

static void tq_verbs_conn_destroy(tq_transport *tr, tq_verbs_conn *c, bool disconnect)
{
    if (disconnect)
        (void)rdma_disconnect(c->id);
    if (c->id->qp != NULL)
        rdma_destroy_qp(c->id);
    rdma_destroy_id(c->id);
    tq_list_remove(&c->link);
    tr->npassive--;
    free(c);
}

/* Constant time, like the token check: the secret is all that guards a QP. */
static bool tq_verbs_secret_eq(const uint8_t *a, const uint8_t *b)
{
    uint8_t d = 0;
    for (int i = 0; i < 8; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

/* A peer asks for a queue pair to our memory. */
static void tq_verbs_accept(tq_transport *tr, const tq_verbs_event_t *e)
{
    struct rdma_cm_id *id = e->id;
    const char *why = NULL;
    tq_verbs_conn *c = NULL;

    if (!e->has_secret || !tq_verbs_secret_eq(e->secret, tr->secret))
        why = "without this unit's secret";
    else if (tr->npassive >= tr->max_passive)
        why = "over the connection limit";
    else if (id->verbs != tr->ctx)
        why = "on another device";
    else if ((c = calloc(1, sizeof(*c))) == NULL)
        why = "out of memory";
    if (why != NULL)
        goto err_reject;
    c->kind = TQ_VERBS_ID_PASSIVE;
    c->id = id;
    /* One-sided operations never use a target's queues: keep them tiny. */
    struct ibv_qp_init_attr qa = {
        .send_cq = tr->passive_cq,
        .recv_cq = tr->passive_cq,
        .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
    };
    if (rdma_create_qp(id, tr->pd, &qa) != 0) {
        tq_warn("rdma_create_qp for a peer: %m");
        why = "no queue pair";
        goto err_reject;
    }
    struct rdma_conn_param p = {
        .responder_resources = (uint8_t)TQ_MIN((unsigned)e->reads, tr->resp_res),
        .initiator_depth = 0,
        .rnr_retry_count = 7,
    };
    if (rdma_accept(id, &p) != 0) {
        tq_warn("rdma_accept: %m");
        rdma_destroy_qp(id);
        why = "accept failed";
        goto err_reject;
    }
    id->context = c;
    tq_list_insert_tail(&tr->passive, &c->link);
    tr->npassive++;
    tq_debug("accepted a connection (%u open)", tr->npassive);
    return;

err_reject:
    tq_warn("refused a connection %s", why);
    free(c);
    (void)rdma_reject(id, NULL, 0);
    rdma_destroy_id(id);
}

static void tq_verbs_passive_event(tq_transport *tr, tq_verbs_conn *c, const tq_verbs_event_t *e)
{
    switch (e->type) {
    case RDMA_CM_EVENT_ESTABLISHED:
        tq_debug("peer connected");
        break;
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        /* The peer left (or died: its kernel closes its ids): free the QP now. */
        tq_debug("peer gone (%s), %u connections left", rdma_event_str(e->type), tr->npassive - 1);
        tq_verbs_conn_destroy(tr, c, false);
        break;
    default:
        break;
    }
}

static int tq_verbs_qp_create(tq_transport *tr, tq_verbs_qp *qp);

static void tq_verbs_active_event(tq_transport *tr, tq_verbs_qp *qp, const tq_verbs_event_t *e)
{
    tq_transport_ep *ep = qp->ep;
    char why[128];
    switch (e->type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: {
        if (qp->id->verbs != tr->ctx) {
            tq_warn("the peer is reached through device %s, this instance opened %s: set "
                    "TQ_VERBS_ADDR to an address on the device that reaches it",
                    ibv_get_device_name(qp->id->verbs->device), ibv_get_device_name(tr->ctx->device));
            qp->state = TQ_VERBS_QP_DOWN;
            break;
        }
        uint8_t t = TQ_VERBS_ACK_TIMEOUT;
        if (rdma_set_option(qp->id, RDMA_OPTION_IB, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)) != 0)
            tq_debug("rdma_set_option(ACK_TIMEOUT): %m");
        if (rdma_resolve_route(qp->id, TQ_VERBS_RESOLVE_MS) != 0) {
            tq_warn("rdma_resolve_route: %m");
            qp->state = TQ_VERBS_QP_DOWN;
        }
        break;
    }
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
        if (tq_verbs_qp_create(tr, qp) != TQ_OK) {
            qp->state = TQ_VERBS_QP_DOWN;
            break;
        }
        struct rdma_conn_param p = {
            .private_data = ep->secret,
            .private_data_len = sizeof(ep->secret),
            .initiator_depth = (uint8_t)tr->rd_atom,
            .responder_resources = 0,
            .retry_count = 7,
            .rnr_retry_count = 7,
        };
        if (rdma_connect(qp->id, &p) != 0) {
            tq_warn("rdma_connect: %m");
            qp->state = TQ_VERBS_QP_DOWN;
        }
        break;
    case RDMA_CM_EVENT_ESTABLISHED:
        qp->state = TQ_VERBS_QP_UP;
        break;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        snprintf(why, sizeof(why), "%s (status %d)", rdma_event_str(e->type), e->status);
        if (qp->state == TQ_VERBS_QP_UP)
            tq_verbs_ep_fail(ep, TQ_ERR_CONNECTION, why);
        else
            tq_debug("connecting: %s", why);
        qp->state = TQ_VERBS_QP_DOWN;
        break;
    default:
        break;
    }
}

/* Handle every connection event that is waiting. Returns how many. */
static unsigned tq_verbs_cm_drain(tq_transport *tr)
{
    struct rdma_cm_event *ev;
    unsigned n = 0;
    while (rdma_get_cm_event(tr->cm_ch, &ev) == 0) {
        tq_verbs_event_t e = {.type = ev->event, .id = ev->id, .status = ev->status};
        if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
            /* Reported from our side: the peer's initiator depth is what we must serve. */
            e.reads = ev->param.conn.responder_resources;
            e.has_secret = ev->param.conn.private_data != NULL &&
                           ev->param.conn.private_data_len >= sizeof(e.secret);
            if (e.has_secret)
                memcpy(e.secret, ev->param.conn.private_data, sizeof(e.secret));
        }
        rdma_ack_cm_event(ev);
        n++;
        if (e.type == RDMA_CM_EVENT_CONNECT_REQUEST) {
            tq_verbs_accept(tr, &e);
            continue;
        }
        int *kind = e.id->context;
        if (kind == NULL) { /* the anchor or the listener */
            if (e.type == RDMA_CM_EVENT_DEVICE_REMOVAL)
                tq_error("the RDMA device %s went away", ibv_get_device_name(tr->ctx->device));
        } else if (*kind == TQ_VERBS_ID_ACTIVE) {
            tq_verbs_active_event(tr, (tq_verbs_qp *)kind, &e);
        } else {
            tq_verbs_passive_event(tr, (tq_verbs_conn *)kind, &e);
        }
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        tq_debug("rdma_get_cm_event: %m");
    return n;
}

/* ---- completions and waiting ------------------------------------------- */

/* Read ep's completions. A signalled work request's completion completes
 * every earlier one of its QP. Returns how many were read. */
static int tq_verbs_poll_cq(tq_transport_ep *ep)
{
    struct ibv_wc wc[32];
    int total = 0;
    for (;;) {
        int n = ibv_poll_cq(ep->cq, 32, wc);
        if (n < 0) {
            tq_verbs_ep_fail(ep, TQ_ERR_CONNECTION, "ibv_poll_cq failed");
            break;
        }
        for (int i = 0; i < n; i++) {
            unsigned qi = (unsigned)(wc[i].wr_id & 0xff);
            uint64_t seq = wc[i].wr_id >> 8;
            if (qi < ep->nqp && ep->qps[qi] != NULL && seq > ep->qps[qi]->completed &&
                seq <= ep->qps[qi]->posted)
                ep->qps[qi]->completed = seq;
            if (wc[i].status != IBV_WC_SUCCESS) {
                char why[96];
                snprintf(why, sizeof(why), "%s", ibv_wc_status_str(wc[i].status));
                tq_verbs_ep_fail(ep, TQ_ERR_CONNECTION, why);
            }
        }
        total += n;
        if (n < 32)
            break;
    }
    return total;
}

/* Take the completion channel's events (our CQs are re-armed by whoever waits). */
static void tq_verbs_comp_drain(tq_transport *tr)
{
    struct ibv_cq *cq;
    void *ctx;
    while (ibv_get_cq_event(tr->comp_ch, &cq, &ctx) == 0)
        ibv_ack_cq_events(cq, 1);
}

/* Sleep until ep's CQ has a completion, a connection event comes, or
 * timeout_ms passes; then handle the connection events. */
static void tq_verbs_wait(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    if (ep != NULL) {
        if (ibv_req_notify_cq(ep->cq, 0) != 0)
            timeout_ms = TQ_MIN(timeout_ms, 1); /* cannot arm: nap */
        else if (tq_verbs_poll_cq(ep) > 0)
            return; /* it came before the arming, so without an event */
    }
    struct pollfd pfd[2] = {{.fd = tr->comp_ch->fd, .events = POLLIN},
                            {.fd = tr->cm_ch->fd, .events = POLLIN}};
    (void)poll(pfd, 2, timeout_ms); /* EINTR is just an early wakeup */
    tq_verbs_comp_drain(tr);
    tq_verbs_cm_drain(tr);
}

/* Wait until nothing of ep is in flight, or the deadline; a failed ep gets
 * a bounded grace for its flushed completions. TQ_OK or TQ_ERR_TIMEOUT. */
static int tq_verbs_drain(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
    uint64_t fail_deadline = 0;
    uint64_t spin_until = tq__now_ns() + tq__spin_ns();

    while (tq_verbs_busy(ep)) {
        int n = tq_verbs_poll_cq(ep);
        if (!tq_verbs_busy(ep))
            break;
        if (n > 0)
            spin_until = tq__now_ns() + tq__spin_ns();
        uint64_t now = tq__now_ms();
        if (ep->failed) {
            if (fail_deadline == 0)
                fail_deadline = now + TQ_VERBS_DRAIN_MS;
            if (now >= fail_deadline || now >= deadline)
                return TQ_OK; /* the caller reports the failure */
        }
        if (now >= deadline)
            return TQ_ERR_TIMEOUT;
        if (n == 0 && tq__now_ns() >= spin_until) {
            uint64_t until = TQ_MIN(deadline, fail_deadline ? fail_deadline : UINT64_MAX);
            tq_verbs_wait(tr, ep, (int)TQ_MIN(until - now, (uint64_t)TQ_VERBS_SLICE_MS));
        }
    }
    return TQ_OK;
}

/* ---- registration cache ------------------------------------------------ */

/*
 * Local buffers go through the registration cache (regcache.h). A kept
 * registration is only right while we hear of every unmap, through UCX's
 * memory hooks (libucm), or when the device pages on demand (ODP), which
 * follows the mapping itself. Without either (or with TQ_VERBS_CACHE=0), a
 * registration lives until the flush of the operations that use it.
 * TQ_VERBS_ODP=0 ignores on-demand paging.
 */

#ifdef TQ_VERBS_HAVE_UCM
/* Runs inside munmap/mremap/madvise/... of any thread: no allocation, no
 * verbs calls; the owner deregisters what it marks. */
static void tq_verbs_vm_unmapped(ucm_event_type_t type, ucm_event_t *ev, void *arg)
{
    if (type == UCM_EVENT_VM_UNMAPPED)
        tq__regcache_unmapped(arg, ev->vm_unmapped.address, ev->vm_unmapped.size);
}
#endif

/* May registrations be kept? Hooks the unmap events on first use. */
static bool tq_verbs_cache_usable(tq_transport *tr)
{
    if (!tr->cache_on)
        return false;
    if (tr->odp || tr->hooked)
        return true;
#ifdef TQ_VERBS_HAVE_UCM
    if (!tr->hook_failed) {
        ucs_status_t st = ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED, 1000, tq_verbs_vm_unmapped,
                                                tr->cache);
        if (st == UCS_OK)
            return tr->hooked = true;
        tq_info("memory events unavailable (%s): registrations last until the flush",
                ucs_status_string(st));
        tr->hook_failed = true;
    }
#endif
    return false;
}

/* ibv_reg_mr; when pinned memory runs short, drop idle cached entries and try again. */
static struct ibv_mr *tq_verbs_reg(tq_transport *tr, void *addr, size_t len, int access)
{
    struct ibv_mr *mr = ibv_reg_mr(tr->pd, addr, len, access);
    if (mr == NULL && (errno == ENOMEM || errno == EAGAIN) && tq__regcache_reap(tr->cache, true) > 0)
        mr = ibv_reg_mr(tr->pd, addr, len, access);
    return mr;
}

static void *tq_verbs_cache_reg(void *arg, void *addr, size_t len)
{
    tq_transport *tr = arg;
    int access = IBV_ACCESS_LOCAL_WRITE | (tr->odp ? IBV_ACCESS_ON_DEMAND : 0);
    struct ibv_mr *mr = tq_verbs_reg(tr, addr, len, access);
    if (mr == NULL) { /* read-only memory, say: the caller tries alone */
        int err = errno;
        tq_debug("registration cache: ibv_reg_mr(%zu bytes): %s", len, strerror(err));
    }
    return mr;
}

static void tq_verbs_cache_dereg(void *arg, void *mr)
{
    (void)arg;
    ibv_dereg_mr(mr);
}

static int tq_verbs_reg_status(int err)
{
    return err == ENOMEM || err == EAGAIN ? TQ_ERR_NOMEM
           : err == EFAULT || err == EINVAL || err == EACCES ? TQ_ERR_INVALID : TQ_ERR_IO;
}

static bool tq_verbs_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = TQ_MAX(*cap * 2, (size_t)16);
    n = TQ_MAX(n, need);
    void *p = realloc(*arr, n * elem);
    if (p == NULL)
        return false;
    *arr = p;
    *cap = n;
    return true;
}

/* Give back what ep's finished operations held. */
static void tq_verbs_release_regs(tq_transport *tr, tq_transport_ep *ep)
{
    tq__regcache_release(tr->cache, &ep->holds);
    for (size_t i = 0; i < ep->ntemps; i++)
        ibv_dereg_mr(ep->temps[i]);
    ep->ntemps = 0;
    tq__regcache_reap(tr->cache, false);
}

/* The lkey for [buf, buf+len): our own registrations, then the cache, else
 * a registration for this flush only (read-only memory can still be put). */
static int tq_verbs_lkey(tq_transport *tr, tq_transport_ep *ep, void *buf, size_t len,
                         tq_rma_dir_t dir, uint32_t *lkey_p)
{
    uintptr_t b = (uintptr_t)buf;
    for (tq_list *it = tr->mems.next; it != &tr->mems; it = it->next) {
        tq_transport_mem *m = tq_list_entry(it, tq_transport_mem, link);
        uintptr_t mb = (uintptr_t)m->addr;
        if (b >= mb && len <= m->len && b - mb <= m->len - len) {
            *lkey_p = m->mr->lkey;
            return TQ_OK;
        }
    }
    if (tq_verbs_cache_usable(tr)) {
        /* TQ_ERR_NOT_FOUND: no entry to spare; register for this flush only. */
        void *mr;
        int rc = tq__regcache_get(tr->cache, &ep->holds, buf, len, true, &mr);
        if (rc == TQ_OK)
            *lkey_p = ((struct ibv_mr *)mr)->lkey;
        if (rc != TQ_ERR_NOT_FOUND)
            return rc;
    }
    if (!tq_verbs_grow((void **)&ep->temps, &ep->cap_temps, ep->ntemps + 1, sizeof(*ep->temps)))
        return TQ_ERR_NOMEM;
    struct ibv_mr *mr = tq_verbs_reg(tr, buf, len, IBV_ACCESS_LOCAL_WRITE);
    if (mr == NULL && dir == TQ_RMA_PUT && (errno == EFAULT || errno == EACCES || errno == EPERM))
        mr = tq_verbs_reg(tr, buf, len, 0);
    if (mr == NULL) {
        int err = errno;
        tq_warn("ibv_reg_mr(%zu bytes of the caller's): %s%s", len, strerror(err),
                err == ENOMEM ? " (locked memory limit? see ulimit -l)" : "");
        return tq_verbs_reg_status(err);
    }
    ep->temps[ep->ntemps++] = mr;
    *lkey_p = mr->lkey;
    return TQ_OK;
}

/* ---- posting ------------------------------------------------------------ */

/* Wait until qp's send queue has room for need more work requests. */
static int tq_verbs_qp_room(tq_transport *tr, tq_transport_ep *ep, tq_verbs_qp *qp, unsigned need)
{
    uint64_t stall = 0;
    while (!ep->failed && tr->sq_depth - (qp->posted - qp->completed) < need) {
        if (tq_verbs_poll_cq(ep) > 0) {
            stall = 0;
            continue;
        }
        uint64_t now = tq__now_ms();
        if (stall == 0)
            stall = now;
        if (now - stall >= TQ_VERBS_STALL_MS) {
            tq_verbs_ep_fail(ep, TQ_ERR_TIMEOUT, "no completion for " "10 s with the send queue full");
            return TQ_ERR_TIMEOUT;
        }
        tq_verbs_wait(tr, ep, TQ_VERBS_SLICE_MS);
    }
    return ep->failed ? TQ_ERR_CONNECTION : TQ_OK;
}

/* Hand qp's batch to the device, its last work request signalled. */
static int tq_verbs_qp_post(tq_transport *tr, tq_transport_ep *ep, tq_verbs_qp *qp)
{
    unsigned n = qp->nwr;
    if (n == 0)
        return TQ_OK;
    qp->nwr = 0;
    int rc = tq_verbs_qp_room(tr, ep, qp, n);
    if (rc != TQ_OK)
        return rc;
    for (unsigned i = 0; i < n; i++) {
        qp->wr[i].wr_id = ((qp->posted + i + 1) << 8) | qp->index;
        qp->wr[i].next = i + 1 < n ? &qp->wr[i + 1] : NULL;
    }
    qp->wr[n - 1].send_flags |= IBV_SEND_SIGNALED;
    struct ibv_send_wr *bad = NULL;
    int ret = ibv_post_send(qp->id->qp, qp->wr, &bad);
    if (ret != 0) {
        /* Those before bad went; the error state flushes them all. */
        qp->posted += bad != NULL ? (uint64_t)(bad - qp->wr) : 0;
        char why[96];
        snprintf(why, sizeof(why), "ibv_post_send: %s", strerror(ret));
        tq_verbs_ep_fail(ep, TQ_ERR_CONNECTION, why);
        return TQ_ERR_CONNECTION;
    }
    qp->posted += n;
    return TQ_OK;
}

/* Turn the gathered work request into one of a QP's batch (round robin, so
 * large runs stripe over the QPs). */
static int tq_verbs_emit(tq__rma_post_t *c)
{
    tq_transport_ep *ep = c->ep;
    tq_verbs_pend *p = &ep->pend;
    if (p->kind == TQ_VERBS_PEND_NONE)
        return TQ_OK;
    tq_verbs_qp *qp = ep->qps[ep->next_qp];
    ep->next_qp = (ep->next_qp + 1) % ep->nqp;
    if (qp->nwr == c->tr->batch) {
        int rc = tq_verbs_qp_post(c->tr, ep, qp);
        if (rc != TQ_OK) {
            p->kind = TQ_VERBS_PEND_NONE;
            return rc;
        }
    }
    unsigned i = qp->nwr++;
    memcpy(qp->sge[i], p->sge, p->nsge * sizeof(p->sge[0]));
    qp->wr[i] = (struct ibv_send_wr){
        .sg_list = qp->sge[i],
        .num_sge = (int)p->nsge,
        .opcode = c->dir == TQ_RMA_PUT ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ,
        /* Small writes travel inside the work request: no DMA read of ours. */
        .send_flags = c->dir == TQ_RMA_PUT && p->len <= ep->max_inline ? IBV_SEND_INLINE : 0,
        .wr.rdma = {.remote_addr = c->region->base + p->roff, .rkey = c->region->rkey},
    };
    p->kind = TQ_VERBS_PEND_NONE;
    return TQ_OK;
}

/* Everything gathered and batched goes to the device. */
static int tq_verbs_post_all(tq__rma_post_t *c)
{
    int rc = tq_verbs_emit(c);
    for (unsigned i = 0; i < c->ep->nqp; i++) {
        int r = tq_verbs_qp_post(c->tr, c->ep, c->ep->qps[i]);
        if (rc == TQ_OK)
            rc = r;
    }
    return rc;
}

/* The end of a quiet ep's transfers: staged reads copied out, staging and
 * registrations free again. */
static void tq_verbs_epoch_end(tq_transport *tr, tq_transport_ep *ep)
{
    if (!ep->failed)
        for (size_t i = 0; i < ep->nouts; i++)
            memcpy(ep->outs[i].dst, ep->stage + ep->outs[i].off, ep->outs[i].len);
    ep->nouts = 0;
    ep->stage_used = 0;
    tq_verbs_release_regs(tr, ep);
}

/* Post what is pending and wait for all of ep's operations. */
static int tq_verbs_quiesce(tq__rma_post_t *c, int timeout_ms)
{
    int rc = c->region != NULL ? tq_verbs_post_all(c) : TQ_OK;
    if (tq_verbs_drain(c->tr, c->ep, timeout_ms) == TQ_ERR_TIMEOUT) {
        tq_verbs_ep_fail(c->ep, TQ_ERR_TIMEOUT, "operations not complete in time");
        return TQ_ERR_TIMEOUT;
    }
    if (!tq_verbs_busy(c->ep))
        tq_verbs_epoch_end(c->tr, c->ep);
    if (c->ep->failed)
        return c->ep->first_error != TQ_OK ? c->ep->first_error : TQ_ERR_CONNECTION;
    return rc;
}

static bool tq_verbs_stage_ready(tq_transport *tr, tq_transport_ep *ep)
{
    if (ep->stage_mr != NULL || ep->stage_failed)
        return ep->stage_mr != NULL;
    ep->stage_failed = true;
    void *p = mmap(NULL, TQ_VERBS_STAGE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return false;
    ep->stage_mr = tq_verbs_reg(tr, p, TQ_VERBS_STAGE_LEN, IBV_ACCESS_LOCAL_WRITE);
    if (ep->stage_mr == NULL) {
        tq_info("no staging buffer (ibv_reg_mr: %m): registering small buffers instead");
        munmap(p, TQ_VERBS_STAGE_LEN);
        return false;
    }
    ep->stage = p;
    ep->stage_failed = false;
    return true;
}

/* A short run through the staging buffer: copied in now for a put, out at
 * the flush for a get; remote-contiguous runs share one work request. */
static int tq_verbs_stage_run(tq__rma_post_t *c, char *local, uint64_t off, size_t len)
{
    tq_transport_ep *ep = c->ep;
    tq_verbs_pend *p = &ep->pend;
    int rc;
    if (ep->stage_used + len > TQ_VERBS_STAGE_LEN &&
        (rc = tq_verbs_quiesce(c, TQ_VERBS_STALL_MS)) != TQ_OK)
        return rc;
    if (c->dir == TQ_RMA_GET &&
        !tq_verbs_grow((void **)&ep->outs, &ep->cap_outs, ep->nouts + 1, sizeof(*ep->outs)))
        return TQ_ERR_NOMEM;
    if ((p->kind != TQ_VERBS_PEND_STAGED || p->roff + p->len != off ||
         p->len + len > c->tr->max_xfer) && (rc = tq_verbs_emit(c)) != TQ_OK)
        return rc;
    if (p->kind == TQ_VERBS_PEND_NONE)
        *p = (tq_verbs_pend){.kind = TQ_VERBS_PEND_STAGED, .roff = off, .nsge = 1,
                             .sge[0] = {.addr = (uintptr_t)(ep->stage + ep->stage_used),
                                        .lkey = ep->stage_mr->lkey}};
    if (c->dir == TQ_RMA_PUT)
        memcpy(ep->stage + ep->stage_used, local, len);
    else
        ep->outs[ep->nouts++] = (tq_verbs_out){local, ep->stage_used, len};
    ep->stage_used += len;
    p->len += len;
    p->sge[0].length += (uint32_t)len;
    return TQ_OK;
}

/* One run contiguous on both sides: staged if short, else from the
 * caller's memory, gathered with remote-contiguous neighbours into one
 * work request of several SGEs and split at max_xfer. */
static int tq_verbs_issue(tq__rma_post_t *c, char *local, uint64_t off, size_t len)
{
    tq_transport *tr = c->tr;
    tq_transport_ep *ep = c->ep;
    tq_verbs_pend *p = &ep->pend;
    unsigned max_sge = c->dir == TQ_RMA_GET ? tr->max_sge_rd : tr->max_sge;
    int rc;

    if (len < TQ_VERBS_STAGE_MAX && tq_verbs_stage_ready(tr, ep))
        return tq_verbs_stage_run(c, local, off, len);
    /* One registration for the whole run, however it is split. */
    uint32_t lkey;
    if ((rc = tq_verbs_lkey(tr, ep, local, len, c->dir, &lkey)) != TQ_OK)
        return rc;
    while (len > 0) {
        size_t n = TQ_MIN(len, tr->max_xfer);
        if ((p->kind != TQ_VERBS_PEND_REG || p->roff + p->len != off || p->nsge >= max_sge ||
             p->len + n > tr->max_xfer) && (rc = tq_verbs_emit(c)) != TQ_OK)
            return rc;
        if (p->kind == TQ_VERBS_PEND_NONE)
            *p = (tq_verbs_pend){.kind = TQ_VERBS_PEND_REG, .roff = off};
        p->sge[p->nsge++] = (struct ibv_sge){.addr = (uintptr_t)local, .length = (uint32_t)n,
                                             .lkey = lkey};
        p->len += n;
        local += n;
        off += n;
        len -= n;
    }
    return TQ_OK;
}

static int tq_verbs_post(tq_transport *tr, tq_transport_ep *ep, tq_transport_region *region,
                         tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n)
{
    /* Validate everything first, so a bad iov means nothing was posted. */
    if (tr == NULL || ep == NULL || region == NULL || region->ep != ep ||
        tq__rma_check(dir, iov, n, region->len) != TQ_OK)
        return TQ_ERR_INVALID;
    if (ep->failed)
        return TQ_ERR_CONNECTION;

    tq__rma_post_t c = {tr, ep, region, dir};
    int rc = tq__rma_runs(&c, iov, n, tq_verbs_issue);
    int prc = tq_verbs_post_all(&c);
    if (rc == TQ_OK)
        rc = prc;
    if (rc != TQ_OK && ep->first_error == TQ_OK)
        ep->first_error = rc;
    return ep->failed && rc != TQ_ERR_TIMEOUT ? TQ_ERR_CONNECTION : rc;
}

static int tq_verbs_flush(tq_transport *tr, tq_transport_ep *ep, int timeout_ms)
{
    if (tr == NULL || ep == NULL)
        return TQ_ERR_INVALID;
    /* A disconnect may be all that tells of a dead peer (operations that
     * complete before we ever sleep would not read it): look once. */
    tq_verbs_cm_drain(tr);
    tq__rma_post_t c = {tr, ep, NULL, TQ_RMA_PUT}; /* post already sent everything */
    int rc = tq_verbs_quiesce(&c, timeout_ms);
    if (rc == TQ_ERR_TIMEOUT) {
        tq_warn("flush: operations not complete after %d ms", timeout_ms);
        return TQ_ERR_TIMEOUT;
    }
    if (ep->failed)
        return TQ_ERR_CONNECTION;
    rc = ep->first_error;
    ep->first_error = TQ_OK;
    return rc;
}

static int tq_verbs_progress(tq_transport *tr, int timeout_ms)
{
    if (tr == NULL)
        return TQ_ERR_INVALID;
    unsigned n = tq_verbs_cm_drain(tr);
    for (tq_list *it = tr->eps.next; it != &tr->eps; it = it->next)
        n += (unsigned)tq_verbs_poll_cq(tq_list_entry(it, tq_transport_ep, link));
    if (n > 0 || timeout_ms == 0)
        return TQ_OK;
    /* A target only hears of connections: one-sided operations need nothing of it. */
    struct pollfd pfd[2] = {{.fd = tr->comp_ch->fd, .events = POLLIN},
                            {.fd = tr->cm_ch->fd, .events = POLLIN}};
    (void)poll(pfd, 2, timeout_ms < 0 ? -1 : timeout_ms);
    tq_verbs_comp_drain(tr);
    tq_verbs_cm_drain(tr);
    return TQ_OK;
}

/* ---- endpoints ------------------------------------------------------------ */

/* The QP of an active id whose route is known. */
static int tq_verbs_qp_create(tq_transport *tr, tq_verbs_qp *qp)
{
    struct ibv_qp_init_attr qa = {
        .send_cq = qp->ep->cq,
        .recv_cq = qp->ep->cq,
        .qp_type = IBV_QPT_RC,
        .sq_sig_all = 0,
        .cap = {.max_send_wr = tr->sq_depth, .max_recv_wr = 1, .max_send_sge = tr->max_sge,
                .max_recv_sge = 1, .max_inline_data = TQ_VERBS_INLINE},
    };
    if (rdma_create_qp(qp->id, tr->pd, &qa) != 0) {
        qa.cap.max_inline_data = 0; /* the device may have no inline data at all */
        if (rdma_create_qp(qp->id, tr->pd, &qa) != 0) {
            tq_warn("rdma_create_qp: %m");
            return TQ_ERR_NOMEM;
        }
    }
    qp->max_inline = qa.cap.max_inline_data; /* what the device granted */
    return TQ_OK;
}

/* Destroy ep's QPs (no DMA of theirs after this), then what they used. */
static void tq_verbs_ep_destroy(tq_transport *tr, tq_transport_ep *ep)
{
    for (unsigned i = 0; i < ep->nqp; i++) {
        tq_verbs_qp *qp = ep->qps[i];
        if (qp == NULL)
            continue;
        if (qp->id != NULL) {
            if (qp->state == TQ_VERBS_QP_UP)
                (void)rdma_disconnect(qp->id); /* the target frees its side now */
            if (qp->id->qp != NULL)
                rdma_destroy_qp(qp->id);
            rdma_destroy_id(qp->id);
        }
        free(qp);
    }
    if (ep->cq != NULL && ibv_destroy_cq(ep->cq) != 0)
        tq_warn("ibv_destroy_cq: %m");
    ep->failed = true; /* no copy-outs */
    tq_verbs_epoch_end(tr, ep);
    if (ep->stage_mr != NULL)
        ibv_dereg_mr(ep->stage_mr);
    if (ep->stage != NULL)
        munmap(ep->stage, TQ_VERBS_STAGE_LEN);
    while (!tq_list_empty(&ep->regions)) {
        tq_list *it = ep->regions.next;
        tq_list_remove(it);
        tq_list_entry(it, tq_transport_region, link)->ep = NULL;
    }
    free(ep->outs);
    tq__regcache_holds_fini(&ep->holds);
    free(ep->temps);
    free(ep);
}

static bool tq_verbs_parse_blob(const uint8_t *b, size_t len, struct sockaddr_storage *ss,
                                uint8_t *secret)
{
    if (len != TQ_VERBS_ADDR_LEN ||
        !tq__rma_blob_check(b, len, TQ_VERBS_ADDR_MAGIC, TQ_VERBS_BLOB_VERSION, 36) ||
        b[5] != 0 || (b[6] != 4 && b[6] != 6) || b[7] != 0 || b[10] != 0 || b[11] != 0)
        return false;
    uint16_t port = (uint16_t)(b[8] | b[9] << 8);
    if (port == 0)
        return false;
    memset(ss, 0, sizeof(*ss));
    if (b[6] == 4) {
        for (int i = 16; i < 28; i++)
            if (b[i] != 0)
                return false;
        struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
        v4->sin_family = AF_INET;
        memcpy(&v4->sin_addr, b + 12, 4);
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
        v6->sin6_family = AF_INET6;
        memcpy(&v6->sin6_addr, b + 12, 16);
    }
    tq_verbs_set_port(ss, port);
    memcpy(secret, b + 28, 8);
    return true;
}

static int tq_verbs_ep_connect(tq_transport *tr, const void *addr, size_t len,
                               tq_transport_ep **ep_p)
{
    struct sockaddr_storage dst;
    uint8_t secret[8];
    char text[INET6_ADDRSTRLEN];

    if (tr == NULL || addr == NULL || ep_p == NULL || !tq_verbs_parse_blob(addr, len, &dst, secret))
        return TQ_ERR_INVALID;
    tq_verbs_ntop((struct sockaddr *)&dst, text, sizeof(text));
    uint16_t port = ntohs(dst.ss_family == AF_INET ? ((struct sockaddr_in *)&dst)->sin_port
                                                   : ((struct sockaddr_in6 *)&dst)->sin6_port);
    tq_transport_ep *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return TQ_ERR_NOMEM;
    ep->tr = tr;
    tq__regcache_holds_init(tr->cache, &ep->holds);
    tq_list_init(&ep->regions);
    memcpy(ep->secret, secret, sizeof(secret));
    ep->max_inline = UINT32_MAX;
    /* Room for a completion of every work request: a QP in error completes
     * all of them, signalled or not. */
    int cqe = (int)TQ_MIN((uint64_t)tr->nqp * tr->sq_depth + 1, (uint64_t)tr->max_cqe);
    ep->cq = ibv_create_cq(tr->ctx, cqe, ep, tr->comp_ch, 0);
    if (ep->cq == NULL) {
        tq_warn("ibv_create_cq(%d): %m", cqe);
        free(ep);
        return TQ_ERR_NOMEM;
    }
    /* All QPs connect at once; the events say how each does. */
    int rc = TQ_OK;
    for (unsigned i = 0; i < tr->nqp && rc == TQ_OK; i++) {
        tq_verbs_qp *qp = calloc(1, sizeof(*qp));
        if (qp == NULL) {
            rc = TQ_ERR_NOMEM;
            break;
        }
        qp->kind = TQ_VERBS_ID_ACTIVE;
        qp->ep = ep;
        qp->index = i;
        ep->qps[i] = qp;
        ep->nqp = i + 1;
        if (rdma_create_id(tr->cm_ch, &qp->id, qp, RDMA_PS_TCP) != 0) {
            tq_warn("rdma_create_id: %m");
            qp->id = NULL;
            rc = TQ_ERR_NOMEM;
        } else if (rdma_resolve_addr(qp->id, NULL, (struct sockaddr *)&dst, TQ_VERBS_RESOLVE_MS) != 0) {
            tq_warn("rdma_resolve_addr(%s): %m", text);
            rc = TQ_ERR_CONNECTION;
        }
    }
    uint64_t deadline = tq__now_ms() + TQ_VERBS_CONNECT_MS;
    while (rc == TQ_OK) {
        unsigned up = 0, down = 0;
        for (unsigned i = 0; i < ep->nqp; i++) {
            up += ep->qps[i]->state == TQ_VERBS_QP_UP;
            down += ep->qps[i]->state == TQ_VERBS_QP_DOWN;
        }
        if (down > 0 || ep->failed)
            rc = TQ_ERR_CONNECTION;
        else if (up == ep->nqp)
            break;
        else if (tq__now_ms() >= deadline) {
            tq_warn("connecting to %s port %u: no answer in %d ms", text, port,
                    TQ_VERBS_CONNECT_MS);
            rc = TQ_ERR_CONNECTION;
        } else {
            struct pollfd pfd = {.fd = tr->cm_ch->fd, .events = POLLIN};
            (void)poll(&pfd, 1, (int)TQ_MIN(deadline - tq__now_ms(), (uint64_t)TQ_VERBS_SLICE_MS));
            tq_verbs_cm_drain(tr);
        }
    }
    if (rc != TQ_OK) {
        tq_warn("cannot connect to %s port %u over RDMA", text, port);
        tq_verbs_ep_destroy(tr, ep);
        return rc;
    }
    for (unsigned i = 0; i < ep->nqp; i++)
        ep->max_inline = TQ_MIN(ep->max_inline, ep->qps[i]->max_inline);
    tq_list_insert_tail(&tr->eps, &ep->link);
    tq_debug("connected to %s with %u QPs, %u bytes inline", text, ep->nqp, ep->max_inline);
    *ep_p = ep;
    return TQ_OK;
}

static void tq_verbs_ep_close(tq_transport *tr, tq_transport_ep *ep)
{
    if (tr == NULL || ep == NULL)
        return;
    if (!ep->failed && tq_verbs_busy(ep)) {
        tq__rma_post_t c = {tr, ep, NULL, TQ_RMA_PUT};
        (void)tq_verbs_quiesce(&c, TQ_VERBS_CLOSE_MS);
    }
    tq_list_remove(&ep->link);
    tq_verbs_ep_destroy(tr, ep);
}

/* ---- regions -------------------------------------------------------------- */

static int tq_verbs_region_unpack(tq_transport *tr, tq_transport_ep *ep, const void *blob,
                                  size_t len, tq_transport_region **region_p)
{
    const uint8_t *b = blob;
    uint64_t base, rlen;
    if (tr == NULL || ep == NULL || blob == NULL || region_p == NULL || len != TQ_VERBS_REGION_LEN ||
        !tq__rma_blob_region_get(b, len, TQ_VERBS_REGION_MAGIC, TQ_VERBS_BLOB_VERSION, 0, 28, &base,
                                 &rlen))
        return TQ_ERR_INVALID;
    if (ep->failed)
        return TQ_ERR_CONNECTION;
    tq_transport_region *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return TQ_ERR_NOMEM;
    r->ep = ep;
    r->base = base;
    r->len = rlen;
    r->rkey = tq_get_le32(b + 24);
    tq_list_insert_tail(&ep->regions, &r->link);
    *region_p = r;
    return TQ_OK;
}

static void tq_verbs_region_release(tq_transport *tr, tq_transport_region *region)
{
    if (tr == NULL || region == NULL)
        return;
    /* A key and numbers: work requests in flight do not need the struct. */
    if (region->ep != NULL)
        tq_list_remove(&region->link);
    free(region);
}

/* ---- memory --------------------------------------------------------------- */

static int tq_verbs_mem_alloc(tq_transport *tr, size_t len, void **addr_p, tq_transport_mem **mem_p)
{
    if (tr == NULL || len == 0 || addr_p == NULL || mem_p == NULL)
        return TQ_ERR_INVALID;
    return TQ_ERR_UNSUPPORTED; /* any memory will do: the caller allocates */
}

static int tq_verbs_mem_register(tq_transport *tr, void *addr, size_t len, tq_transport_mem **mem_p)
{
    if (tr == NULL || addr == NULL || len == 0 || mem_p == NULL ||
        (uintptr_t)addr + len < (uintptr_t)addr)
        return TQ_ERR_INVALID;
    tq_transport_mem *mem = calloc(1, sizeof(*mem));
    if (mem == NULL)
        return TQ_ERR_NOMEM;
    mem->mr = tq_verbs_reg(tr, addr, len,
                           IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
    if (mem->mr == NULL) {
        int err = errno;
        tq_error("ibv_reg_mr(%zu bytes, remote read and write): %s%s", len, strerror(err),
                 err == ENOMEM ? " (locked memory limit? see ulimit -l)" : "");
        free(mem);
        return tq_verbs_reg_status(err);
    }
    mem->addr = addr;
    mem->len = len;
    tq_list_insert_tail(&tr->mems, &mem->link);
    *mem_p = mem;
    return TQ_OK;
}

static int tq_verbs_mem_pack(tq_transport *tr, tq_transport_mem *mem, void **blob_p, size_t *len_p)
{
    if (tr == NULL || mem == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    uint8_t *b = calloc(1, TQ_VERBS_REGION_LEN);
    if (b == NULL)
        return TQ_ERR_NOMEM;
    tq__rma_blob_region_put(b, TQ_VERBS_REGION_MAGIC, TQ_VERBS_BLOB_VERSION, 0,
                            (uint64_t)(uintptr_t)mem->addr, (uint64_t)mem->len);
    tq_put_le32(b + 24, mem->mr->rkey);
    tq__rma_blob_seal(b, TQ_VERBS_REGION_LEN, 28);
    *blob_p = b;
    *len_p = TQ_VERBS_REGION_LEN;
    return TQ_OK;
}

static void tq_verbs_mem_deregister(tq_transport *tr, tq_transport_mem *mem)
{
    if (tr == NULL || mem == NULL)
        return;
    tq_list_remove(&mem->link);
    int ret = ibv_dereg_mr(mem->mr);
    if (ret != 0)
        tq_warn("ibv_dereg_mr: %s", strerror(ret));
    free(mem);
}

/* ---- address: the listener ---------------------------------------------- */

/* Start listening (once: only targets ask for their address). */
static int tq_verbs_listen(tq_transport *tr)
{
    struct sockaddr_storage ss = tr->addr;
    tq_verbs_set_port(&ss, tr->listen_port);
    tr->passive_cq = ibv_create_cq(tr->ctx, 16, NULL, NULL, 0);
    if (tr->passive_cq == NULL) {
        tq_error("ibv_create_cq: %m");
        return TQ_ERR_NOMEM;
    }
    if (rdma_create_id(tr->cm_ch, &tr->listener, NULL, RDMA_PS_TCP) != 0) {
        tq_error("rdma_create_id: %m");
        tr->listener = NULL;
        goto err_cq;
    }
    if (rdma_bind_addr(tr->listener, (struct sockaddr *)&ss) != 0) {
        tq_error("rdma_bind_addr(%s port %u): %m", tr->addr_text, tr->listen_port);
        goto err_id;
    }
    if (rdma_listen(tr->listener, 128) != 0) {
        tq_error("rdma_listen: %m");
        goto err_id;
    }
    tr->listen_port = ntohs(rdma_get_src_port(tr->listener));
    tq_info("listening on %s port %u (%s)", tr->addr_text, tr->listen_port,
            ibv_get_device_name(tr->ctx->device));
    return TQ_OK;

err_id:
    rdma_destroy_id(tr->listener);
    tr->listener = NULL;
err_cq:
    ibv_destroy_cq(tr->passive_cq);
    tr->passive_cq = NULL;
    return TQ_ERR_IO;
}

static int tq_verbs_address(tq_transport *tr, void **blob_p, size_t *len_p)
{
    if (tr == NULL || blob_p == NULL || len_p == NULL)
        return TQ_ERR_INVALID;
    if (tr->listener == NULL) {
        int rc = tq_verbs_listen(tr);
        if (rc != TQ_OK)
            return rc;
    }
    uint8_t *b = calloc(1, TQ_VERBS_ADDR_LEN);
    if (b == NULL)
        return TQ_ERR_NOMEM;
    tq__rma_blob_head_put(b, TQ_VERBS_ADDR_MAGIC, TQ_VERBS_BLOB_VERSION);
    b[6] = tr->addr.ss_family == AF_INET ? 4 : 6;
    b[8] = (uint8_t)tr->listen_port;
    b[9] = (uint8_t)(tr->listen_port >> 8);
    if (tr->addr.ss_family == AF_INET)
        memcpy(b + 12, &((struct sockaddr_in *)&tr->addr)->sin_addr, 4);
    else
        memcpy(b + 12, &((struct sockaddr_in6 *)&tr->addr)->sin6_addr, 16);
    memcpy(b + 28, tr->secret, sizeof(tr->secret));
    tq__rma_blob_seal(b, TQ_VERBS_ADDR_LEN, 36);
    *blob_p = b;
    *len_p = TQ_VERBS_ADDR_LEN;
    return TQ_OK;
}

/* ---- init / fini -------------------------------------------------------- */

/* Can rdma_cm bind sa to an RDMA device? The anchor, bound, if asked. */
static bool tq_verbs_probe(tq_transport *tr, const struct sockaddr *sa, struct rdma_cm_id **keep)
{
    struct rdma_cm_id *id = NULL;
    if (rdma_create_id(tr->cm_ch, &id, NULL, RDMA_PS_TCP) != 0)
        return false;
    if (rdma_bind_addr(id, (struct sockaddr *)sa) == 0 && id->verbs != NULL) {
        if (keep != NULL)
            *keep = id;
        else
            rdma_destroy_id(id);
        return true;
    }
    rdma_destroy_id(id);
    return false;
}

/* Our address (see the top of this file) and the anchor bound to it. */
static int tq_verbs_pick_addr(tq_transport *tr, const tq_transport_params_t *params)
{
    if (params != NULL && params->bind_addr != NULL) {
        if (params->bind_addr_len > sizeof(tr->addr) ||
            (params->bind_addr->sa_family != AF_INET && params->bind_addr->sa_family != AF_INET6))
            return TQ_ERR_INVALID;
        memset(&tr->addr, 0, sizeof(tr->addr));
        memcpy(&tr->addr, params->bind_addr, params->bind_addr_len);
        tq_verbs_set_port(&tr->addr, 0);
        tr->listen_port = 0;
        if (!tq_verbs_probe(tr, (struct sockaddr *)&tr->addr, &tr->anchor)) {
            char text[INET6_ADDRSTRLEN + 8];
            tq_verbs_ntop((struct sockaddr *)&tr->addr, text, sizeof(text));
            tq_info("no RDMA device has the data address %s (%s): rdma_bind_addr: %m", text,
                    params->bind_iface != NULL ? params->bind_iface : "?");
            return TQ_ERR_UNSUPPORTED;
        }
        if (getenv("TQ_VERBS_ADDR") != NULL)
            tq_info("TQ_VERBS_ADDR is not used: the data address is given");
        return TQ_OK;
    }
    const char *env = getenv("TQ_VERBS_ADDR");
    if (env != NULL && env[0] != '\0') {
        if (!tq_verbs_parse_addr(env, &tr->addr, &tr->listen_port)) {
            tq_warn("TQ_VERBS_ADDR=%s: not IP, IP:PORT or [IPv6]:PORT", env);
            return TQ_ERR_UNSUPPORTED;
        }
        if (!tq_verbs_probe(tr, (struct sockaddr *)&tr->addr, &tr->anchor)) {
            tq_warn("TQ_VERBS_ADDR=%s: no RDMA device has this address (rdma_bind_addr: %m)", env);
            return TQ_ERR_UNSUPPORTED;
        }
        return TQ_OK;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        tq_warn("getifaddrs: %m");
        return TQ_ERR_UNSUPPORTED;
    }
    bool found = false;
    for (int pass = 0; pass < 2 && !found; pass++) { /* IPv4 first */
        int fam = pass == 0 ? AF_INET : AF_INET6;
        for (struct ifaddrs *a = ifs; a != NULL && !found; a = a->ifa_next) {
            if (a->ifa_addr == NULL || a->ifa_addr->sa_family != fam ||
                !(a->ifa_flags & IFF_UP) || (a->ifa_flags & IFF_LOOPBACK))
                continue;
            if (fam == AF_INET6 &&
                IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr))
                continue; /* would need a scope the blob does not carry */
            memset(&tr->addr, 0, sizeof(tr->addr));
            memcpy(&tr->addr, a->ifa_addr,
                   fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
            found = tq_verbs_probe(tr, (struct sockaddr *)&tr->addr, &tr->anchor);
        }
    }
    freeifaddrs(ifs);
    if (!found) {
        tq_info("RDMA devices exist but no interface address is on one: set TQ_VERBS_ADDR");
        return TQ_ERR_UNSUPPORTED;
    }
    return TQ_OK;
}

/* A device limit (an int) within ours. */
static unsigned tq_verbs_clamp(int dev, unsigned lo, unsigned hi)
{
    return dev <= (int)lo ? lo : (unsigned)dev >= hi ? hi : (unsigned)dev;
}

/* Limits from the device, within ours. */
static void tq_verbs_limits(tq_transport *tr, const struct ibv_device_attr_ex *dx,
                            const struct ibv_port_attr *pa)
{
    const struct ibv_device_attr *d = &dx->orig_attr;
    tr->nqp = tq_verbs_env_uint("TQ_VERBS_QPS", TQ_VERBS_QPS_DEFAULT, 1, TQ_VERBS_QPS_MAX);
    tr->sq_depth = tq_verbs_clamp(d->max_qp_wr, 2, TQ_VERBS_SQ_DEPTH);
    tr->batch = TQ_MIN(TQ_VERBS_BATCH, tr->sq_depth / 2);
    tr->max_sge = tq_verbs_clamp(d->max_sge, 1, TQ_VERBS_MAX_SGE);
    /* RDMA READ may scatter into fewer (iWARP: one). */
    tr->max_sge_rd = tq_verbs_clamp(d->max_sge_rd, 1, tr->max_sge);
    tr->rd_atom = tq_verbs_clamp(d->max_qp_init_rd_atom, 1, TQ_VERBS_RD_ATOM);
    tr->resp_res = tq_verbs_clamp(d->max_qp_rd_atom, 1, TQ_VERBS_RD_ATOM);
    tr->max_cqe = d->max_cqe;
    tr->max_passive = tq_verbs_clamp(d->max_qp, 1, TQ_VERBS_MAX_PASSIVE);
    uint64_t cap = TQ_VERBS_MAX_XFER, env_cap;
    const char *cap_text = getenv("TQ_VERBS_MAX_XFER");
    if (cap_text != NULL && tq__parse_size(cap_text, &env_cap) == 0 && env_cap > 0)
        cap = TQ_MIN(cap, env_cap);
    tr->max_xfer = (size_t)TQ_MAX(TQ_MIN(cap, (uint64_t)pa->max_msg_sz), 1);
    /* Pages on demand: a kept registration then follows the mapping. */
    uint32_t need = IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ;
    tr->odp = (dx->odp_caps.general_caps & IBV_ODP_SUPPORT) &&
              (dx->odp_caps.per_transport_caps.rc_odp_caps & need) == need &&
              !tq_verbs_env_off("TQ_VERBS_ODP");
}

static void tq_verbs_fini(tq_transport *tr);

static int tq_verbs_init(const tq_transport_params_t *params, tq_transport **tr_p)
{
    if (tr_p == NULL)
        return TQ_ERR_INVALID;
    /* The common case on machines without RDMA: say nothing, cost nothing. */
    int ndev = 0;
    struct ibv_device **devs = ibv_get_device_list(&ndev);
    if (devs != NULL)
        ibv_free_device_list(devs);
    if (ndev <= 0) {
        tq_debug("no RDMA device (ibv_get_device_list found none)");
        return TQ_ERR_UNSUPPORTED;
    }
    tq_transport *tr = calloc(1, sizeof(*tr));
    if (tr == NULL)
        return TQ_ERR_NOMEM;
    tq_list_init(&tr->eps);
    tq_list_init(&tr->mems);
    tq_list_init(&tr->passive);
    tr->cache = tq__regcache_create(tq_verbs_cache_reg, tq_verbs_cache_dereg, tr);
    if (tr->cache == NULL) {
        free(tr);
        return TQ_ERR_NOMEM;
    }
    int rc = TQ_ERR_UNSUPPORTED;
    tr->cm_ch = rdma_create_event_channel();
    if (tr->cm_ch == NULL) {
        tq_info("rdma_create_event_channel: %m (is rdma_ucm loaded?)");
        goto err;
    }
    tq_verbs_nonblock(tr->cm_ch->fd);
    if ((rc = tq_verbs_pick_addr(tr, params)) != TQ_OK)
        goto err;
    tr->ctx = tr->anchor->verbs;
    tq_verbs_ntop((struct sockaddr *)&tr->addr, tr->addr_text, sizeof(tr->addr_text));

    struct ibv_device_attr_ex dx;
    struct ibv_port_attr pa;
    memset(&dx, 0, sizeof(dx));
    int ret = ibv_query_device_ex(tr->ctx, NULL, &dx);
    if (ret != 0)
        ret = ibv_query_device(tr->ctx, &dx.orig_attr);
    if (ret == 0)
        ret = ibv_query_port(tr->ctx, tr->anchor->port_num, &pa);
    if (ret != 0) {
        tq_warn("querying %s: %s", ibv_get_device_name(tr->ctx->device), strerror(ret));
        rc = TQ_ERR_IO;
        goto err;
    }
    tq_verbs_limits(tr, &dx, &pa);
    rc = TQ_ERR_NOMEM;
    if ((tr->pd = ibv_alloc_pd(tr->ctx)) == NULL) {
        tq_warn("ibv_alloc_pd: %m");
        goto err;
    }
    if ((tr->comp_ch = ibv_create_comp_channel(tr->ctx)) == NULL) {
        tq_warn("ibv_create_comp_channel: %m");
        goto err;
    }
    tq_verbs_nonblock(tr->comp_ch->fd);
    if (getrandom(tr->secret, sizeof(tr->secret), 0) != (ssize_t)sizeof(tr->secret)) {
        tq_warn("getrandom: %m");
        rc = TQ_ERR_IO;
        goto err;
    }
    /* TQ_VERBS_CACHE=0: registrations last until the flush, always. */
#ifdef TQ_VERBS_HAVE_UCM
    tr->cache_on = !tq_verbs_env_off("TQ_VERBS_CACHE");
#else
    tr->cache_on = tr->odp && !tq_verbs_env_off("TQ_VERBS_CACHE");
#endif
    tq_info("device %s port %u, address %s, %u QPs per peer, send queue %u, batch %u, "
            "%u SGEs (%u for reads), %zu bytes per request, %s",
            ibv_get_device_name(tr->ctx->device), tr->anchor->port_num, tr->addr_text, tr->nqp,
            tr->sq_depth, tr->batch, tr->max_sge, tr->max_sge_rd, tr->max_xfer,
            !tr->cache_on ? "registrations per flush"
            : tr->odp     ? "registration cache (on-demand paging)"
                          : "registration cache (memory hooks)");
    *tr_p = tr;
    return TQ_OK;

err:
    tq_verbs_fini(tr);
    return rc;
}

/* Also undoes a partial init. */
static void tq_verbs_fini(tq_transport *tr)
{
    if (tr == NULL)
        return;
#ifdef TQ_VERBS_HAVE_UCM
    /* Unset first: afterwards the hook never runs on tr again. */
    if (tr->hooked)
        ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, tq_verbs_vm_unmapped, tr->cache);
#endif
    while (!tq_list_empty(&tr->eps)) {
        tq_warn("fini: closing an endpoint left open");
        tq_verbs_ep_close(tr, tq_list_entry(tr->eps.next, tq_transport_ep, link));
    }
    while (!tq_list_empty(&tr->mems)) {
        tq_warn("fini: deregistering memory left registered");
        tq_verbs_mem_deregister(tr, tq_list_entry(tr->mems.next, tq_transport_mem, link));
    }
    /* Peers hear of it at once (a disconnect), not after their retries. */
    while (!tq_list_empty(&tr->passive))
        tq_verbs_conn_destroy(tr, tq_list_entry(tr->passive.next, tq_verbs_conn, link), true);
    if (tr->listener != NULL)
        rdma_destroy_id(tr->listener);
    tq__regcache_destroy(tr->cache);
    if (tr->passive_cq != NULL)
        ibv_destroy_cq(tr->passive_cq);
    if (tr->comp_ch != NULL)
        ibv_destroy_comp_channel(tr->comp_ch);
    if (tr->pd != NULL && ibv_dealloc_pd(tr->pd) != 0)
        tq_warn("ibv_dealloc_pd: %m");
    if (tr->anchor != NULL)
        rdma_destroy_id(tr->anchor);
    if (tr->cm_ch != NULL)
        rdma_destroy_event_channel(tr->cm_ch);
    free(tr);
}

const tq_transport_ops tq_verbs_ops = {
    .name = "verbs",
    .init = tq_verbs_init,
    .fini = tq_verbs_fini,
    .address = tq_verbs_address,
    .mem_alloc = tq_verbs_mem_alloc,
    .mem_register = tq_verbs_mem_register,
    .mem_pack = tq_verbs_mem_pack,
    .mem_deregister = tq_verbs_mem_deregister,
    .ep_connect = tq_verbs_ep_connect,
    .ep_close = tq_verbs_ep_close,
    .region_unpack = tq_verbs_region_unpack,
    .region_release = tq_verbs_region_release,
    .post = tq_verbs_post,
    .flush = tq_verbs_flush,
    .progress = tq_verbs_progress,
};
