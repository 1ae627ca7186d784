/* client.c: libtqrdma's client: control connections, lanes, and the low-level API. */
#define TQ_LOG_COMPONENT "client"
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport_registry.h"
#include "util/common.h"
#include "util/config.h"
#include "util/log.h"

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_LANES      4
#define RECV_CACHE_BYTES   (1ULL << 30) /* receive buffers kept for reuse */
#define LEASE_MARGIN_MS    5000         /* see lease_trusted_until */
#define MAX_RELEASES       65536        /* RELEASEs kept for a connection; then dropped */
#define COMMIT_MARGIN_MIN_MS 50         /* see commit_margin_ms */
#define COMMIT_MARGIN_MAX_MS 1000

/* ---- errors ---- */

static __thread struct {
    const tq_client *client;
    char             msg[TQ_ERRMSG_MAX];
} last_error;

int tq__set_error(const tq_client *c, int status, const char *fmt, ...)
{
    last_error.client = c;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error.msg, sizeof(last_error.msg), fmt, ap);
    va_end(ap);
    tq_debug("%s: %s", tq_status_string(status), last_error.msg);
    return status;
}

int tq__check_name(const tq_client *c, const char *name, const char *what, ...)
{
    if (tq__valid_name(name))
        return TQ_OK;
    char arg[64];
    va_list ap;
    va_start(ap, what);
    vsnprintf(arg, sizeof(arg), what, ap);
    va_end(ap);
    if (name == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "%s is NULL", arg);
    if (name[0] == '\0')
        return tq__set_error(c, TQ_ERR_INVALID, "%s is empty: a name has 1 to %d bytes", arg,
                             TQ_WIRE_NAME_MAX);
    return tq__set_error(c, TQ_ERR_INVALID, "%s is %zu bytes: a name has 1 to %d", arg,
                         strlen(name), TQ_WIRE_NAME_MAX);
}

/* Record the detail a control call left in err. */
static int call_error(const tq_client *c, int status, const char *err)
{
    return tq__set_error(c, status, "%s", err[0] ? err : tq_status_string(status));
}

TQ_EXPORT const char *tq_last_error(const tq_client *c)
{
    return last_error.client == c ? last_error.msg : "";
}

/* ---- deadlines ---- */

static __thread uint64_t call_deadline_ms;

void tq__deadline_set(uint64_t deadline_ms) { call_deadline_ms = deadline_ms; }

int tq__timeout_left(int timeout_ms)
{
    if (call_deadline_ms == 0)
        return timeout_ms;
    uint64_t now = tq__now_ms();
    uint64_t left = now >= call_deadline_ms ? 0 : call_deadline_ms - now;
    if (timeout_ms >= 0 && (uint64_t)timeout_ms <= left)
        return timeout_ms;
    return (int)TQ_MIN(left, (uint64_t)INT32_MAX);
}

/* ---- control connections ---- */

int tq__conn_acquire(tq_client *c, tq_ctrl_conn **cc_p)
{
    pthread_mutex_lock(&c->lock);
    tq_ctrl_conn *cc = c->num_idle ? c->idle[--c->num_idle] : NULL;
    pthread_mutex_unlock(&c->lock);
    if (cc != NULL) {
        *cc_p = cc;
        return TQ_OK;
    }
    cc = malloc(sizeof(*cc));
    if (cc == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    char err[TQ_ERRMSG_MAX] = "";
    int rc = tq__ctrl_connect(cc, c->target, c->token, TQ_ROLE_CLIENT, c->session,
                              tq__timeout_left(c->timeout_ms), err);
    if (rc != TQ_OK) {
        free(cc);
        return call_error(c, rc == TQ_ERR_TIMEOUT ? TQ_ERR_CONNECTION : rc, err);
    }
    cc->live_ms = c->timeout_ms; /* the connection outlives this call's deadline */
    *cc_p = cc;
    return TQ_OK;
}

/* Send the RELEASEs waiting in the client on cc, without waiting: ones the
 * socket will not take now are dropped (the controller is not reading; it
 * unpins at the lease's end, or when this connection closes). */
static void send_releases(tq_client *c, tq_ctrl_conn *cc)
{
    pthread_mutex_lock(&c->lock);
    tq__release_t *rel = c->releases;
    unsigned n = c->num_releases, sent = 0;
    c->releases = NULL;
    c->num_releases = c->cap_releases = 0;
    pthread_mutex_unlock(&c->lock);
    tq_wbuf_reset(&cc->out);
    for (unsigned i = 0; i < n; i++) {
        if (rel[i].epoch != cc->epoch)
            continue; /* a controller of another epoch never pinned it */
        size_t off = tq_wire_begin(&cc->out, TQ_MSG_RELEASE, 0, ++cc->next_id);
        tq_wire_encode_id(&cc->out, &(tq_msg_id_t){rel[i].id});
        tq_wire_end(&cc->out, off);
        sent++;
    }
    free(rel);
    char err[TQ_ERRMSG_MAX];
    if (sent > 0 && tq__ctrl_send_nowait(cc, err) != TQ_OK)
        tq_debug("%u releases dropped: %s", sent, err);
}

void tq__conn_release(tq_client *c, tq_ctrl_conn *cc)
{
    if (!cc->broken)
        send_releases(c, cc);
    if (!cc->broken) {
        pthread_mutex_lock(&c->lock);
        bool kept = c->num_idle < TQ_MAX_IDLE_CONNS;
        if (kept)
            c->idle[c->num_idle++] = cc;
        pthread_mutex_unlock(&c->lock);
        if (kept)
            return;
    }
    tq__ctrl_close(cc);
    free(cc);
}

int tq__call(tq_client *c, tq_ctrl_conn *cc, size_t offset, int timeout_ms, tq_rbuf *reply_p)
{
    int left = tq__timeout_left(timeout_ms);
    if (left == 0 && timeout_ms != 0) /* nothing sent: the connection stays good */
        return tq__set_error(c, TQ_ERR_TIMEOUT, "the call's deadline passed before it was sent");
    char err[TQ_ERRMSG_MAX] = "";
    int rc = tq__ctrl_call(cc, offset, left, reply_p, err);
    return rc == TQ_OK ? TQ_OK : call_error(c, rc, err);
}

/* ---- storage units, per lane ---- */

static void unit_drop_ep(tq_client *c, tq__lane_t *l, tq__unit_t *u)
{
    if (u->region != NULL)
        c->ops->region_release(l->tr, u->region);
    if (u->ep != NULL)
        c->ops->ep_close(l->tr, u->ep);
    u->region = NULL;
    u->ep = NULL;
}

static void unit_free(tq_client *c, tq__lane_t *l, tq__unit_t *u)
{
    unit_drop_ep(c, l, u);
    free(u->address);
    free(u->region_blob);
}

static tq__unit_t *unit_find(tq__lane_t *l, uint32_t id)
{
    for (uint32_t i = 0; i < l->num_units; i++)
        if (l->units[i].id == id)
            return &l->units[i];
    return NULL;
}

/* Ask the controller for its units and hand each to `each`, decoded (its
 * blobs point into the reply, valid during the call). */
static int units_call(tq_client *c, int (*each)(tq_client *c, void *ctx, uint32_t i, uint32_t n,
                                                const tq_wire_unit_t *w), void *ctx,
                      uint64_t *epoch_p)
{
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    if (epoch_p != NULL)
        *epoch_p = cc->epoch;
    tq_rbuf r;
    if ((rc = tq__call(c, cc, tq__ctrl_begin(cc, TQ_MSG_UNITS), c->timeout_ms, &r)) == TQ_OK) {
        uint32_t n = tq_wire_get_u32(&r);
        if (r.failed || n > (uint32_t)(r.end - r.p))
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed units reply");
        if (rc == TQ_OK && n == 0)
            rc = each(c, ctx, 0, 0, NULL); /* say how many, even none */
        for (uint32_t i = 0; rc == TQ_OK && i < n; i++) {
            tq_wire_unit_t w;
            if (tq_wire_decode_unit(&r, &w) != TQ_OK)
                rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed units reply");
            else
                rc = each(c, ctx, i, n, &w);
        }
    }
    tq__conn_release(c, cc);
    return rc;
}

/* A lane's new unit table, built one unit at a time. */
typedef struct {
    tq__lane_t *lane;
    tq__unit_t *units;
    uint32_t    num_units;
    uint64_t    epoch;
} refresh_t;

static int refresh_unit(tq_client *c, void *ctx, uint32_t i, uint32_t n, const tq_wire_unit_t *w)
{
    refresh_t *rf = ctx;
    if (i == 0 && (rf->units = calloc(n ? n : 1, sizeof(tq__unit_t))) == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    if (w == NULL)
        return TQ_OK;
    tq__unit_t *u = &rf->units[rf->num_units++];
    u->id = w->id;
    u->alive = w->alive;
    for (uint8_t t = 0; t < w->num_transports; t++) {
        const tq_wire_transport_t *wt = &w->transports[t];
        if (!tq_str_eq(wt->name, c->ops->name))
            continue;
        u->address = malloc(wt->address.len + 1u);
        u->region_blob = malloc(wt->region.len + 1u);
        if (u->address == NULL || u->region_blob == NULL)
            return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
        memcpy(u->address, wt->address.ptr, wt->address.len);
        memcpy(u->region_blob, wt->region.ptr, wt->region.len);
        u->address_len = wt->address.len;
        u->region_len = wt->region.len;
    }
    /* unit ids name one unit only within a controller epoch */
    tq__unit_t *old = rf->lane->epoch == rf->epoch ? unit_find(rf->lane, w->id) : NULL;
    if (old != NULL && u->alive) { /* the same incarnation: keep its endpoint */
        u->ep = old->ep;
        u->region = old->region;
        old->ep = NULL;
        old->region = NULL;
    }
    return TQ_OK;
}

/* Ask the controller for its units; keep the endpoints of units the lane
 * already knows, unless the controller is a new one (another epoch). */
static int units_refresh(tq_client *c, tq__lane_t *l)
{
    refresh_t rf = {l, NULL, 0, 0};
    int rc = units_call(c, refresh_unit, &rf, &rf.epoch);
    if (rc != TQ_OK) {
        for (uint32_t i = 0; i < rf.num_units; i++)
            unit_free(c, l, &rf.units[i]);
        free(rf.units);
        return rc;
    }
    for (uint32_t i = 0; i < l->num_units; i++)
        unit_free(c, l, &l->units[i]);
    free(l->units);
    l->units = rf.units;
    l->num_units = rf.num_units;
    l->epoch = rf.epoch;
    return TQ_OK;
}

/* The unit's endpoint and region, connecting on first use. */
static int unit_connect(tq_client *c, tq__lane_t *l, uint32_t id, tq__unit_t **u_p)
{
    tq__unit_t *u = unit_find(l, id);
    if (u == NULL)
        return tq__set_error(c, TQ_ERR_PROTOCOL, "the controller named an unknown unit %u", id);
    if (!u->alive)
        return tq__set_error(c, TQ_ERR_LOST, "storage unit %u is dead", id);
    if (u->address == NULL)
        return tq__set_error(c, TQ_ERR_UNSUPPORTED, "storage unit %u does not serve transport %s",
                             id, c->ops->name);
    if (u->ep == NULL) {
        int rc = c->ops->ep_connect(l->tr, u->address, u->address_len, &u->ep);
        if (rc == TQ_OK)
            rc = c->ops->region_unpack(l->tr, u->ep, u->region_blob, u->region_len, &u->region);
        if (rc != TQ_OK) {
            unit_drop_ep(c, l, u);
            return tq__set_error(c, rc, "cannot reach storage unit %u over %s: %s", id,
                                 c->ops->name, tq_status_string(rc));
        }
    }
    *u_p = u;
    return TQ_OK;
}

/* Make sure the lane knows every unit the extents name, as the controller of
 * `epoch` named them: asking once if not (a unit registered after the lane's
 * last look, or a lane whose table came from another controller). */
static int units_cover(tq_client *c, tq__lane_t *l, uint64_t epoch, const tq_wire_extent_t *x,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i].length > 0 && x[i].unit == TQ_WIRE_LOST_UNIT)
            return tq__set_error(c, TQ_ERR_LOST, "the storage unit that held these rows died");
    bool known = l->epoch == epoch;
    for (size_t i = 0; known && i < n; i++)
        known = x[i].length == 0 || unit_find(l, x[i].unit) != NULL;
    if (known)
        return TQ_OK;
    int rc = units_refresh(c, l);
    if (rc == TQ_OK && l->epoch != epoch)
        rc = tq__set_error(c, TQ_ERR_CONNECTION, "the controller restarted: the rows it named "
                                                 "are gone with it");
    return rc;
}

/* A transfer with a unit failed: if the controller now knows it dead, its
 * bytes are lost (rc becomes TQ_ERR_LOST); else rc stands. */
static int lost_or(tq_client *c, tq__lane_t *l, const tq_wire_extent_t *x, size_t n, int rc)
{
    if (rc != TQ_ERR_CONNECTION && rc != TQ_ERR_IO && rc != TQ_ERR_TIMEOUT)
        return rc;
    if (units_refresh(c, l) != TQ_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const tq__unit_t *u = x[i].length > 0 ? unit_find(l, x[i].unit) : NULL;
        if (u != NULL && !u->alive)
            return tq__set_error(c, TQ_ERR_LOST, "storage unit %u died during the transfer",
                                 u->id);
    }
    return rc;
}

/* Wait for every unit posted to, at most timeout_ms each; an endpoint that
 * failed is dropped, so the next use reconnects. */
static int units_flush(tq_client *c, tq__lane_t *l, int timeout_ms)
{
    int first = TQ_OK;
    for (uint32_t i = 0; i < l->num_units; i++) {
        tq__unit_t *u = &l->units[i];
        if (!u->used)
            continue;
        u->used = false;
        int rc = c->ops->flush(l->tr, u->ep, tq__timeout_left(timeout_ms));
        if (rc != TQ_OK) {
            unit_drop_ep(c, l, u);
            if (first == TQ_OK)
                first = tq__set_error(c, rc, "transfer with storage unit %u failed: %s", u->id,
                                      tq_status_string(rc));
        }
    }
    return first;
}

/* Post transfers of one column between local rows and its runs of remote
 * extents: the column's bytes, in row order, are the runs' bytes in order. */
static int post_column(tq_client *c, tq__lane_t *l, tq_rma_dir_t dir, const tq_wire_extent_t *runs,
                       uint32_t num_runs, void *const *rows, const uint64_t *row_bytes,
                       uint32_t num_rows)
{
    uint32_t row = 0;
    uint64_t in_row = 0;
    size_t cap = (size_t)num_rows + num_runs, n = 0;
    tq_rma_iov_t *iov = malloc((cap ? cap : 1) * sizeof(*iov));
    if (iov == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    int rc = TQ_OK;
    for (uint32_t k = 0; k < num_runs && rc == TQ_OK; k++) {
        tq__unit_t *u = NULL;
        rc = unit_connect(c, l, runs[k].unit, &u);
        uint64_t done = 0;
        n = 0;
        while (rc == TQ_OK && done < runs[k].length) {
            while (row < num_rows && in_row == row_bytes[row])
                row++, in_row = 0;
            if (row == num_rows) {
                rc = tq__set_error(c, TQ_ERR_PROTOCOL, "extents longer than the rows");
                break;
            }
            uint64_t len = TQ_MIN(row_bytes[row] - in_row, runs[k].length - done);
            char *local = (char *)rows[row] + in_row;
            tq_rma_iov_t *last = n > 0 ? &iov[n - 1] : NULL;
            /* rows next to each other on both sides (a tensor's column) move as one */
            if (last != NULL && (char *)last->local + last->length == local &&
                last->remote_offset + last->length == runs[k].offset + done)
                last->length += len;
            else
                iov[n++] = (tq_rma_iov_t){local, runs[k].offset + done, len};
            in_row += len;
            done += len;
        }
        if (rc == TQ_OK && n > 0) {
            rc = c->ops->post(l->tr, u->ep, u->region, dir, iov, n);
            u->used = true;
            if (rc != TQ_OK)
                tq__set_error(c, rc, "cannot post to storage unit %u: %s", u->id,
                              tq_status_string(rc));
        }
    }
    free(iov);
    return rc;
}

/* ---- lanes ---- */

static void lane_free(tq_client *c, tq__lane_t *l)
{
    for (uint32_t i = 0; i < l->num_units; i++)
        unit_free(c, l, &l->units[i]);
    free(l->units);
    c->ops->fini(l->tr);
    free(l);
}

static int lane_new(tq_client *c, tq__lane_t **l_p)
{
    tq__lane_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    int rc = c->ops->init(NULL, &l->tr);
    if (rc != TQ_OK) {
        free(l);
        return tq__set_error(c, rc, "transport %s unavailable: %s", c->ops->name,
                             tq_status_string(rc));
    }
    if ((rc = units_refresh(c, l)) != TQ_OK) {
        lane_free(c, l);
        return rc;
    }
    *l_p = l;
    return TQ_OK;
}

/* A lane for one transfer: a free one, a new one while under the limit, or
 * the next one given back. */
static int lane_acquire(tq_client *c, tq__lane_t **l_p)
{
    pthread_mutex_lock(&c->lock);
    while (c->num_free_lanes == 0 && c->num_lanes + c->building >= c->max_lanes)
        pthread_cond_wait(&c->lane_freed, &c->lock);
    if (c->num_free_lanes > 0) {
        *l_p = c->free_lanes[--c->num_free_lanes];
        pthread_mutex_unlock(&c->lock);
        return TQ_OK;
    }
    c->building++; /* build it unlocked: a transport takes a while to start */
    pthread_mutex_unlock(&c->lock);
    tq__lane_t *l = NULL;
    int rc = lane_new(c, &l);
    pthread_mutex_lock(&c->lock);
    c->building--;
    if (rc == TQ_OK)
        c->lanes[c->num_lanes++] = l;
    else
        pthread_cond_signal(&c->lane_freed); /* a waiter may build one instead */
    pthread_mutex_unlock(&c->lock);
    if (rc == TQ_OK)
        *l_p = l;
    return rc;
}

static void lane_release(tq_client *c, tq__lane_t *l)
{
    pthread_mutex_lock(&c->lock);
    c->free_lanes[c->num_free_lanes++] = l;
    pthread_cond_signal(&c->lane_freed);
    pthread_mutex_unlock(&c->lock);
}

/* ---- open and close ---- */

/* A client's settings: tq_open's target wins, then the environment, then the
 * config file (a target or $TQ_CONTROLLER ending in .json). */
enum { CO_CONTROLLER, CO_TOKEN_FILE, CO_TOKEN, CO_TIMEOUT_MS, CO_LANES, CO_TRANSPORT,
       CO_POOL_SIZE, CO_COUNT };

static const tq_config_opt_t client_options[CO_COUNT] = {
    [CO_CONTROLLER] = {NULL, "TQ_CONTROLLER", "controller", NULL, "", NULL},
    [CO_TOKEN_FILE] = {NULL, "TQ_TOKEN_FILE", "token_file", NULL, "", NULL},
    [CO_TOKEN] = {NULL, "TQ_TOKEN", "token", NULL, "", NULL},
    [CO_TIMEOUT_MS] = {NULL, "TQ_TIMEOUT_MS", "timeout_ms", NULL, "", NULL},
    [CO_LANES] = {NULL, "TQ_LANES", "lanes", NULL, "", NULL},
    [CO_TRANSPORT] = {NULL, "TQ_TRANSPORT", "transport", NULL, "", "auto"},
    [CO_POOL_SIZE] = {NULL, "TQ_POOL_SIZE", "pool_size", NULL, "", "256M"},
};

static bool is_config_path(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    return len > 5 && strcmp(s + len - 5, ".json") == 0;
}

/* Resolve and check every setting; values go to c, the controller's target to opts. */
static int client_settings(tq_client *c, const char *target, tq_config_opt_t *opts,
                           uint64_t *pool_size)
{
    const char *config = NULL;
    if (is_config_path(target)) {
        config = target;
    } else if (target != NULL) {
        if ((opts[CO_CONTROLLER].value = strdup(target)) == NULL)
            return TQ_ERR_NOMEM;
        opts[CO_CONTROLLER].from = TQ_FROM_FLAG;
    } else if (is_config_path(getenv("TQ_CONTROLLER"))) {
        config = getenv("TQ_CONTROLLER");
        opts[CO_CONTROLLER].env = NULL; /* it named the file, not the controller */
    }
    char err[TQ_ERRMSG_MAX];
    unsigned long timeout = DEFAULT_TIMEOUT_MS, lanes = DEFAULT_LANES;
    if (tq__config_resolve(opts, CO_COUNT, config, err, sizeof(err)) != 0 ||
        tq__config_uint(&opts[CO_TIMEOUT_MS], 1, INT32_MAX, &timeout, err, sizeof(err)) != 0 ||
        tq__config_uint(&opts[CO_LANES], 1, TQ_MAX_LANES, &lanes, err, sizeof(err)) != 0 ||
        tq__config_size(&opts[CO_POOL_SIZE], 1u << 20, pool_size, err, sizeof(err)) != 0 ||
        tq__token_resolve(&opts[CO_TOKEN_FILE], &opts[CO_TOKEN], &c->token, err, sizeof(err)) != 0)
        return tq__set_error(c, TQ_ERR_INVALID, "%s", err);
    c->timeout_ms = (int)timeout;
    c->max_lanes = (unsigned)lanes;
    return TQ_OK;
}

static int shared_transports(tq_client *c, void *ctx, uint32_t i, uint32_t n,
                             const tq_wire_unit_t *w)
{
    unsigned *mask = ctx;
    (void)c, (void)i, (void)n;
    if (w == NULL || !w->alive)
        return TQ_OK;
    unsigned served = 0;
    for (unsigned k = 0; tq__transports[k] != NULL; k++)
        for (uint8_t t = 0; t < w->num_transports; t++)
            if (tq_str_eq(w->transports[t].name, tq__transports[k]->name))
                served |= 1u << k;
    *mask &= served;
    return TQ_OK;
}

/* TQ_TRANSPORT names one transport; unset or "auto" takes the best one (the
 * first built) that every live storage unit serves. */
static int pick_transport(tq_client *c, const char *want)
{
    if (want != NULL && want[0] != '\0' && strcmp(want, "auto") != 0) {
        if ((c->ops = tq__transport_find(want)) == NULL)
            return tq__set_error(c, TQ_ERR_INVALID, "unknown TQ_TRANSPORT '%s'", want);
        return TQ_OK;
    }
    unsigned mask = ~0u;
    int rc = units_call(c, shared_transports, &mask, NULL);
    if (rc != TQ_OK)
        return rc;
    for (unsigned k = 0; tq__transports[k] != NULL; k++)
        if (mask & (1u << k)) {
            c->ops = tq__transports[k];
            tq_debug("transport %s", c->ops->name);
            return TQ_OK;
        }
    char built[128] = "";
    for (unsigned k = 0; tq__transports[k] != NULL; k++)
        snprintf(built + strlen(built), sizeof(built) - strlen(built), "%s%s", k ? ", " : "",
                 tq__transports[k]->name);
    return tq__set_error(c, TQ_ERR_UNSUPPORTED, "the storage units share no transport this "
                         "client has (%s)", built);
}

static void client_free(tq_client *c)
{
    tq__workers_stop(c->workers);
    for (unsigned i = 0; i < c->num_idle; i++) {
        tq__ctrl_close(c->idle[i]);
        free(c->idle[i]);
    }
    for (unsigned i = 0; i < c->num_lanes; i++)
        lane_free(c, c->lanes[i]);
    free(c->releases); /* the connections closed: the controller unpins their metas */
    tq__bufpool_unref(c->recv);
    tq__embedded_stop(c->embedded);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->lane_freed);
    free(c->target);
    free(c->token);
    free(c);
}

TQ_EXPORT int tq_open(const char *target, tq_client **client_p)
{
    if (client_p == NULL)
        return tq__set_error(NULL, TQ_ERR_INVALID, "client_p is NULL");
    tq_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return TQ_ERR_NOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->lane_freed, NULL);
    tq_config_opt_t opts[CO_COUNT];
    memcpy(opts, client_options, sizeof(opts));
    uint64_t pool_size = 0;
    int rc = TQ_ERR_NOMEM;
    if ((c->recv = tq__bufpool_create(RECV_CACHE_BYTES)) == NULL)
        goto err;
    if ((rc = client_settings(c, target, opts, &pool_size)) != TQ_OK)
        goto err;
    target = opts[CO_CONTROLLER].value;
    char err[TQ_ERRMSG_MAX] = "", address[128];
    if (target == NULL || target[0] == '\0' || strcmp(target, "embedded") == 0) {
        rc = tq__embedded_start(c->token, pool_size, address, sizeof(address), err,
                                &c->embedded);
        if (rc != TQ_OK) {
            call_error(c, rc, err);
            goto err;
        }
        target = address;
    } else {
        char host[256];
        uint16_t port;
        if (tq__parse_hostport(target, host, sizeof(host), &port) != 0 || port == 0) {
            rc = tq__set_error(c, TQ_ERR_INVALID, "bad target '%s': want HOST:PORT, "
                               "tcp://HOST:PORT, a .json config, or \"embedded\"", target);
            goto err;
        }
    }
    rc = TQ_ERR_NOMEM;
    if ((c->target = strdup(target)) == NULL)
        goto err;
    if (tq__random_bytes(c->session, sizeof(c->session)) != 0) {
        rc = tq__set_error(c, TQ_ERR_IO, "no random bytes for the client's session: %s",
                           strerror(errno));
        goto err;
    }
    if ((rc = pick_transport(c, opts[CO_TRANSPORT].value)) != TQ_OK)
        goto err;
    /* one lane now: the controller and a transport are reachable, or we fail here */
    tq__lane_t *lane;
    if ((rc = lane_acquire(c, &lane)) != TQ_OK)
        goto err;
    lane_release(c, lane);
    tq__config_free(opts, CO_COUNT);
    *client_p = c;
    return TQ_OK;
err:
    tq__config_free(opts, CO_COUNT);
    /* keep the detail readable after the client is gone: tie it to no client */
    last_error.client = NULL;
    client_free(c);
    return rc;
}

TQ_EXPORT const char *tq_controller_address(const tq_client *c) { return c ? c->target : NULL; }

TQ_EXPORT void tq_close(tq_client *c)
{
    if (c != NULL)
        client_free(c);
}

/* ---- put ---- */

/*
 * The controller lets go of pins and allocations lease_ms after its reply. We
 * count from when the reply arrived, which is later, so keep a margin for the
 * reply's time in flight and the controller's timer: past the returned time,
 * the extents may have been reused and nothing read or written is trusted.
 */
static uint64_t lease_trusted_until(uint32_t lease_ms)
{
    return tq__now_ms() + lease_ms - TQ_MIN(lease_ms / 4, LEASE_MARGIN_MS);
}

static void put_abort(tq_client *c, tq_ctrl_conn *cc, uint64_t alloc_id)
{
    char err[TQ_ERRMSG_MAX];
    tq_rbuf r;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_ABORT);
    tq_wire_encode_id(&cc->out, &(tq_msg_id_t){alloc_id});
    /* failing, the connection closes, and that aborts it: no need to wait long */
    tq__ctrl_call(cc, off, TQ_MIN(c->timeout_ms, COMMIT_MARGIN_MAX_MS), &r, err);
}

static void encode_field(tq_wbuf *w, uint32_t rows, const tq__batch_field_t *f)
{
    tq_wire_field_t wf = {.name = {f->name, (uint16_t)strlen(f->name)},
                          .kind = (uint8_t)f->kind, .dtype = (uint8_t)f->dtype,
                          .ndim = (uint8_t)f->ndim,
                          .format = {f->format, (uint16_t)strlen(f->format)}};
    switch (f->kind) {
    case TQ_FIELD_TENSOR: wf.dims = tq_array_of(f->row_shape, f->ndim); break;
    case TQ_FIELD_NESTED: wf.dims = tq_array_of(f->shapes, rows * f->ndim); break;
    case TQ_FIELD_BYTES:  wf.dims = tq_array_of(f->row_bytes, rows); break;
    }
    tq_wire_encode_field(w, &wf);
}

/* Write every column of b into its extent, over one lane. */
static int put_columns(tq_client *c, uint64_t epoch, const tq_batch *b,
                       const tq_wire_extent_t *ext, int timeout_ms)
{
    tq__lane_t *l = NULL;
    int rc = lane_acquire(c, &l);
    if (rc != TQ_OK)
        return rc;
    rc = units_cover(c, l, epoch, ext, b->num_fields);
    for (uint32_t i = 0; rc == TQ_OK && i < b->num_fields; i++)
        if (ext[i].length > 0)
            rc = post_column(c, l, TQ_RMA_PUT, &ext[i], 1, (void *const *)b->fields[i].rows,
                             (const uint64_t *)b->fields[i].row_bytes, b->rows);
    int frc = units_flush(c, l, timeout_ms); /* also after a failed post: nothing may stay in flight */
    lane_release(c, l);
    return rc != TQ_OK ? rc : frc;
}

/* How long past the controller's commit deadline a COMMIT's answer is awaited:
 * the controller decides by that deadline, so an answer can only be late by
 * its time on the wire. */
static int commit_margin_ms(int timeout_ms)
{
    return TQ_MAX(COMMIT_MARGIN_MIN_MS, TQ_MIN(timeout_ms / 4, COMMIT_MARGIN_MAX_MS));
}

/* Milliseconds left until deadline, at least 1 (a call of 0 ms would not wait). */
static int ms_left(uint64_t deadline)
{
    uint64_t now = tq__now_ms();
    return now < deadline ? (int)TQ_MIN(deadline - now, (uint64_t)INT32_MAX) : 1;
}

/*
 * A put that returns an error must never become visible, however the
 * controller is delayed. The ALLOC tells the controller how long we wait
 * (commit_ms); it refuses a COMMIT that arrives later than that after the
 * ALLOC, and says how long it will still take one. We send COMMIT only within
 * that time and wait for the answer a margin longer: no answer by then means
 * the controller refused it, or never saw it.
 */
int tq__put(tq_client *c, const char *partition, uint32_t rows, const tq_batch *b,
            const tq__rows_t *spec, int64_t *indexes_out, tq_meta **meta_p)
{
    /* a non-blocking request's deadline counts from its submission */
    uint64_t deadline = tq__now_ms() + (uint64_t)tq__timeout_left(c->timeout_ms);
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    uint16_t num_fields = b ? (uint16_t)b->num_fields : 0;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_ALLOC);
    int left = ms_left(deadline);
    /* pools full: the controller holds the put until room frees, within our timeout */
    uint32_t wait_ms = (uint32_t)(left - TQ_MIN(left / 4, 1000));
    tq_msg_alloc_t m = {.partition = {partition, (uint16_t)strlen(partition)},
                        .rows = rows, .row_mode = spec->mode,
                        .indexes = tq_array_of(spec->indexes, rows), .num_fields = num_fields,
                        .wait_ms = wait_ms, .commit_ms = (uint32_t)left};
    tq_wire_encode_alloc(&cc->out, &m);
    for (uint32_t i = 0; spec->mode == TQ_ROWS_KEYS && i < rows; i++)
        tq_wire_encode_key(&cc->out, spec->keys[i], spec->tags ? spec->tags[i] : NULL);
    for (uint32_t i = 0; i < num_fields; i++)
        encode_field(&cc->out, rows, &b->fields[i]);
    tq_rbuf r;
    tq_msg_alloc_reply_t a;
    tq_wire_extent_t ext[TQ_WIRE_MAX_FIELDS];
    if ((rc = tq__call(c, cc, off, left, &r)) != TQ_OK)
        goto out;
    rc = tq_wire_decode_alloc_reply(&r, &a);
    uint64_t now = tq__now_ms(), trusted_until = lease_trusted_until(a.lease_ms);
    uint64_t commit_by = now + a.commit_ms; /* the controller's deadline is no later */
    for (uint16_t i = 0; rc == TQ_OK && i < a.num_fields; i++)
        rc = tq_wire_decode_extent(&r, &ext[i]);
    if (rc != TQ_OK || !tq_rbuf_done(&r) || a.rows != rows || a.num_fields != num_fields) {
        rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed alloc reply");
        cc->broken = true;
        goto out;
    }
    for (uint16_t i = 0; i < num_fields; i++)
        if (ext[i].length != b->fields[i].bytes) {
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "the controller sized field %s wrongly",
                               b->fields[i].name);
            goto abort;
        }
    int margin = commit_margin_ms(c->timeout_ms);
    /* the writes must end while the extents are ours */
    if (commit_by + (uint64_t)margin >= trusted_until) {
        rc = tq__set_error(c, TQ_ERR_TIMEOUT, "the allocation's %u ms lease is too short to "
                                              "write within the %d ms timeout", a.lease_ms,
                           c->timeout_ms);
        goto abort;
    }
    if (num_fields > 0 && (rc = put_columns(c, cc->epoch, b, ext, ms_left(commit_by))) != TQ_OK)
        goto abort;
    if (tq__now_ms() >= commit_by) {
        rc = tq__set_error(c, TQ_ERR_TIMEOUT, "the put did not finish within its %d ms timeout",
                           c->timeout_ms);
        goto abort;
    }
    off = tq__ctrl_begin(cc, meta_p != NULL ? TQ_MSG_COMMIT_META : TQ_MSG_COMMIT);
    tq_wire_encode_id(&cc->out, &(tq_msg_id_t){a.alloc_id});
    tq_rbuf cr;
    /* the answer is awaited its full margin, past a request's deadline if need
     * be: cut short, no answer would not mean that the controller refused */
    char err[TQ_ERRMSG_MAX] = "";
    if ((rc = tq__ctrl_call(cc, off, ms_left(commit_by) + margin, &cr, err)) != TQ_OK) {
        call_error(c, rc, err);
        goto out;
    }
    if (indexes_out != NULL)
        for (uint32_t i = 0; i < a.rows; i++)
            indexes_out[i] = tq_array_i64(a.indexes, i);
    if (meta_p != NULL) /* committed: an error now is of the answer, not of the put */
        rc = tq__meta_parse(c, cc, partition, &cr, meta_p);
    goto out;
abort:
    put_abort(c, cc, a.alloc_id);
out:
    tq__conn_release(c, cc);
    return rc;
}

int tq__check_indexes(const tq_client *c, size_t n, const int64_t *indexes)
{
    if (indexes == NULL || n == 0 || n > TQ_WIRE_MAX_ROWS)
        return tq__set_error(c, TQ_ERR_INVALID, "indexes: 1 to %u are required", TQ_WIRE_MAX_ROWS);
    for (size_t i = 0; i < n; i++)
        if (indexes[i] < 0)
            return tq__set_error(c, TQ_ERR_INVALID, "index %lld is negative",
                                 (long long)indexes[i]);
    return TQ_OK;
}

int tq__check_put(tq_client *c, const char *partition, const tq_batch *b, const int64_t *indexes)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_name(c, partition, "partition");
    if (rc != TQ_OK)
        return rc;
    if (b == NULL || b->num_fields == 0)
        return tq__set_error(c, TQ_ERR_INVALID, "the batch is NULL or has no field");
    return indexes != NULL ? tq__check_indexes(c, b->rows, indexes) : TQ_OK;
}

TQ_EXPORT int tq_put(tq_client *c, const char *partition, const tq_batch *b,
                     const int64_t *indexes, int64_t *indexes_out)
{
    int rc = tq__check_put(c, partition, b, indexes);
    if (rc != TQ_OK)
        return rc;
    tq__rows_t spec = {indexes ? TQ_ROWS_INDEXES : TQ_ROWS_NEW, indexes, NULL, NULL};
    return tq__put(c, partition, b->rows, b, &spec, indexes_out, NULL);
}

/* ---- get ---- */

static void meta_destroy(tq_meta *m)
{
    for (uint16_t i = 0; m->fields != NULL && i < m->num_fields; i++) {
        free(m->fields[i].name);
        free(m->fields[i].shapes);
        free(m->fields[i].row_bytes);
        free(m->fields[i].runs);
        free(m->fields[i].present);
    }
    free(m->fields);
    for (uint32_t i = 0; i < m->rows; i++) {
        if (m->keys != NULL)
            free(m->keys[i]);
        if (m->custom != NULL)
            free(m->custom[i]);
    }
    free(m->keys);
    free(m->custom);
    free(m->indexes);
    free(m->partition);
    free(m);
}

/* The rows' keys and custom meta that follow a meta's fields. */
static int meta_parse_rows_info(tq_rbuf *r, tq_meta *m)
{
    uint8_t what;
    if (tq_wire_decode_rows_info(r, &what) != TQ_OK)
        return TQ_ERR_PROTOCOL;
    if (((what & TQ_WIRE_ROWS_KEYS) && (m->keys = calloc(m->rows + 1, sizeof(char *))) == NULL) ||
        ((what & TQ_WIRE_ROWS_CUSTOM) && (m->custom = calloc(m->rows + 1, sizeof(char *))) == NULL))
        return TQ_ERR_NOMEM;
    for (uint32_t i = 0; m->keys != NULL && i < m->rows; i++) {
        tq_str_t key;
        if (tq_wire_decode_row_key(r, &key) != TQ_OK)
            return TQ_ERR_PROTOCOL;
        if (key.len > 0 && (m->keys[i] = tq_str_dup(key)) == NULL)
            return TQ_ERR_NOMEM;
    }
    for (uint32_t i = 0; m->custom != NULL && i < m->rows; i++) {
        tq_blob_t text;
        if (tq_wire_decode_custom(r, &text) != TQ_OK)
            return TQ_ERR_PROTOCOL;
        if (text.len == 0)
            continue;
        if ((m->custom[i] = malloc((size_t)text.len + 1)) == NULL)
            return TQ_ERR_NOMEM;
        memcpy(m->custom[i], text.ptr, text.len);
        m->custom[i][text.len] = '\0';
    }
    return TQ_OK;
}

/* Copy a GET_META reply into a tq_meta, checking that it adds up. */
int tq__meta_parse(tq_client *c, const tq_ctrl_conn *cc, const char *partition, tq_rbuf *r,
                   tq_meta **meta_p)
{
    tq_msg_get_meta_reply_t h;
    if (tq_wire_decode_get_meta_reply(r, &h) != TQ_OK)
        return tq__set_error(c, TQ_ERR_PROTOCOL, "malformed get_meta reply");
    tq_meta *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    m->client = c;
    m->id = h.meta_id;
    m->epoch = cc->epoch;
    m->trusted_until_ms = lease_trusted_until(h.lease_ms);
    m->rows = h.rows;
    m->num_fields = h.num_fields;
    m->indexes = malloc((size_t)h.rows * 8 + 1);
    m->fields = calloc(h.num_fields ? h.num_fields : 1, sizeof(*m->fields));
    m->partition = strdup(partition);
    if (m->indexes == NULL || m->fields == NULL || m->partition == NULL)
        goto err_nomem;
    for (uint32_t i = 0; i < h.rows; i++)
        m->indexes[i] = tq_array_i64(h.indexes, i);
    for (uint16_t k = 0; k < h.num_fields; k++) {
        tq_wire_meta_field_t w;
        tq__meta_field_t *f = &m->fields[k];
        if (tq_wire_decode_meta_field(r, h.rows, &w) != TQ_OK)
            goto err_protocol;
        f->name = tq_str_dup(w.name);
        f->kind = w.kind;
        f->dtype = w.dtype;
        f->ndim = w.ndim;
        memcpy(f->format, w.format.ptr, w.format.len); /* checked: at most TQ_MAX_FORMAT */
        f->format[w.format.len] = '\0';
        f->shapes = calloc((size_t)h.rows * (w.ndim ? w.ndim : 1) + 1, sizeof(int64_t));
        f->row_bytes = malloc((size_t)h.rows * 8 + 1);
        f->runs = malloc((size_t)w.num_runs * sizeof(*f->runs) + 1);
        if (f->name == NULL || f->shapes == NULL || f->row_bytes == NULL || f->runs == NULL)
            goto err_nomem;
        for (uint32_t d = 0; f->kind == TQ_FIELD_TENSOR && d < f->ndim; d++)
            f->row_shape[d] = tq_array_i64(w.row_shape, d);
        for (uint32_t i = 0; i < h.rows; i++) {
            f->row_bytes[i] = tq_array_u64(w.row_bytes, i);
            for (uint32_t d = 0; d < f->ndim; d++)
                f->shapes[(size_t)i * f->ndim + d] = f->kind == TQ_FIELD_NESTED
                    ? tq_array_i64(w.shapes, i * f->ndim + d) : f->row_shape[d];
            if (f->bytes + f->row_bytes[i] < f->bytes)
                goto err_protocol;
            f->bytes += f->row_bytes[i];
        }
        if (w.present.ptr != NULL) {
            if ((f->present = malloc((size_t)h.rows + 1)) == NULL)
                goto err_nomem;
            memcpy(f->present, w.present.ptr, h.rows);
            for (uint32_t i = 0; i < h.rows; i++)
                if (!f->present[i] && f->row_bytes[i] != 0)
                    goto err_protocol; /* an absent cell has no bytes */
        }
        uint64_t in_runs = 0;
        f->num_runs = w.num_runs;
        for (uint32_t i = 0; i < w.num_runs; i++) {
            if (tq_wire_decode_extent(r, &f->runs[i]) != TQ_OK)
                goto err_protocol;
            in_runs += f->runs[i].length;
        }
        if (in_runs != f->bytes)
            goto err_protocol;
    }
    int rc = meta_parse_rows_info(r, m);
    if (rc == TQ_ERR_NOMEM)
        goto err_nomem;
    if (rc != TQ_OK || !tq_rbuf_done(r))
        goto err_protocol;
    *meta_p = m;
    return TQ_OK;
err_protocol:
    meta_destroy(m);
    return tq__set_error(c, TQ_ERR_PROTOCOL, "malformed get_meta reply");
err_nomem:
    meta_destroy(m);
    return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
}

int tq__check_fetch(tq_client *c, const tq_fetch_args_t *args)
{
    if (args == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "args is NULL");
    int mode = args->mode;
    if (mode != TQ_FETCH_READY && mode != TQ_FETCH_FORCE && mode != TQ_FETCH_INSERT)
        return tq__set_error(c, TQ_ERR_INVALID, "mode %d: want TQ_FETCH_READY (0), "
                             "TQ_FETCH_FORCE (1) or TQ_FETCH_INSERT (2)", mode);
    int rc = tq__check_name(c, args->partition, "partition");
    if (rc == TQ_OK && (mode == TQ_FETCH_READY || args->task != NULL))
        rc = tq__check_name(c, args->task, "task");
    if (rc != TQ_OK)
        return rc;
    if (mode != TQ_FETCH_READY && (args->sampler != NULL || args->sampler_args != NULL))
        return tq__set_error(c, TQ_ERR_INVALID, "%s picks no ready rows: it takes no sampler "
                             "nor sampler_args", mode == TQ_FETCH_FORCE ? "TQ_FETCH_FORCE"
                                                                        : "TQ_FETCH_INSERT");
    if (mode == TQ_FETCH_INSERT) {
        if (args->fields != NULL || args->num_fields != 0)
            return tq__set_error(c, TQ_ERR_INVALID, "TQ_FETCH_INSERT makes rows with no field: "
                                 "name none (fields NULL, num_fields 0)");
    } else if (args->fields == NULL || args->num_fields == 0 ||
               args->num_fields > TQ_WIRE_MAX_FIELDS) {
        return tq__set_error(c, TQ_ERR_INVALID, "fields: 1 to %d names are required",
                             TQ_WIRE_MAX_FIELDS);
    }
    for (size_t i = 0; i < args->num_fields; i++)
        if ((rc = tq__check_name(c, args->fields[i], "field %zu", i)) != TQ_OK)
            return rc;
    if (args->batch_size == 0 || args->batch_size > TQ_WIRE_MAX_ROWS)
        return tq__set_error(c, TQ_ERR_INVALID, "batch_size must be 1 to %u", TQ_WIRE_MAX_ROWS);
    if (args->timeout_ms < -1)
        return tq__set_error(c, TQ_ERR_INVALID, "timeout_ms must be -1, 0 or positive");
    if (args->sampler != NULL && strlen(args->sampler) > TQ_WIRE_NAME_MAX)
        return tq__set_error(c, TQ_ERR_INVALID, "sampler is %zu bytes: a name has at most %d",
                             strlen(args->sampler), TQ_WIRE_NAME_MAX);
    if (args->sampler_args != NULL && strlen(args->sampler_args) > TQ_WIRE_MAX_BODY / 2)
        return tq__set_error(c, TQ_ERR_INVALID, "sampler_args too long");
    return TQ_OK;
}

/*
 * How long the controller may hold a GET_META: as asked, but under a deadline
 * (a non-blocking request's) it answers TQ_ERR_TIMEOUT itself a margin before
 * it: a call we gave up on could otherwise still take rows, in flight to a
 * meta nobody has.
 */
static int controller_wait_ms(const tq_client *c, int timeout_ms)
{
    int left = tq__timeout_left(-1);
    if (left < 0)
        return timeout_ms; /* no deadline */
    int cut = left - TQ_MIN(left / 4, TQ_MIN(c->timeout_ms / 4, 1000));
    return timeout_ms >= 0 && timeout_ms <= cut ? timeout_ms : cut;
}

int tq__get_meta_on(tq_client *c, tq_ctrl_conn *cc, const tq_fetch_args_t *args, tq_meta **meta_p)
{
    size_t args_len = args->sampler_args ? strlen(args->sampler_args) : 0;
    const char *task = args->mode == TQ_FETCH_READY ? args->task : ""; /* only READY's counts */
    tq_msg_get_meta_t m = {
        .partition = {args->partition, (uint16_t)strlen(args->partition)},
        .task = {task, (uint16_t)strlen(task)},
        .num_fields = (uint16_t)args->num_fields,
        .batch_size = args->batch_size,
        .sampler = {args->sampler ? args->sampler : "",
                    (uint16_t)(args->sampler ? strlen(args->sampler) : 0)},
        .sampler_args = {(const uint8_t *)args->sampler_args, (uint32_t)args_len},
        .timeout_ms = args->mode == TQ_FETCH_READY ? controller_wait_ms(c, args->timeout_ms) : 0,
        .mode = (uint8_t)args->mode,
    };
    for (size_t i = 0; i < args->num_fields; i++)
        m.fields[i] = (tq_str_t){args->fields[i], (uint16_t)strlen(args->fields[i])};
    size_t off = tq__ctrl_begin(cc, TQ_MSG_GET_META);
    tq_wire_encode_get_meta(&cc->out, &m);
    /* the controller answers by its own deadline; ours only guards against its death
     * (FORCE and INSERT never wait there) */
    int wait = args->mode != TQ_FETCH_READY ? c->timeout_ms
               : args->timeout_ms < 0       ? -1
                                            : args->timeout_ms + c->timeout_ms;
    tq_rbuf r;
    int rc = tq__call(c, cc, off, wait, &r);
    return rc == TQ_OK ? tq__meta_parse(c, cc, args->partition, &r, meta_p) : rc;
}

TQ_EXPORT int tq_get_meta(tq_client *c, const tq_fetch_args_t *args, tq_meta **meta_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_fetch(c, args);
    if (rc != TQ_OK)
        return rc;
    if (meta_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "meta_p is NULL");
    return tq__get_meta(c, args, meta_p);
}

int tq__get_meta(tq_client *c, const tq_fetch_args_t *args, tq_meta **meta_p)
{
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    rc = tq__get_meta_on(c, cc, args, meta_p);
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT int tq_get_meta_rows(tq_client *c, const char *partition, size_t n,
                               const int64_t *indexes, size_t num_fields,
                               const char *const *fields, tq_meta **meta_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_name(c, partition, "partition");
    if (rc != TQ_OK)
        return rc;
    if ((rc = tq__check_indexes(c, n, indexes)) != TQ_OK)
        return rc;
    if (fields == NULL)
        num_fields = 0;
    if (num_fields > TQ_WIRE_MAX_FIELDS)
        return tq__set_error(c, TQ_ERR_INVALID, "fields: NULL, or 1 to %d names",
                             TQ_WIRE_MAX_FIELDS);
    tq_msg_meta_rows_t m = {.partition = {partition, (uint16_t)strlen(partition)},
                            .count = (uint32_t)n, .indexes = tq_array_of(indexes, (uint32_t)n),
                            .num_fields = (uint16_t)num_fields};
    for (size_t i = 0; i < num_fields; i++) {
        if ((rc = tq__check_name(c, fields[i], "field %zu", i)) != TQ_OK)
            return rc;
        m.fields[i] = (tq_str_t){fields[i], (uint16_t)strlen(fields[i])};
    }
    if (meta_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "meta_p is NULL");
    tq_ctrl_conn *cc;
    if ((rc = tq__conn_acquire(c, &cc)) != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_GET_META_ROWS);
    tq_wire_encode_meta_rows(&cc->out, &m);
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) == TQ_OK)
        rc = tq__meta_parse(c, cc, partition, &r, meta_p);
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT uint32_t tq_meta_rows(const tq_meta *m) { return m ? m->rows : 0; }
TQ_EXPORT const int64_t *tq_meta_indexes(const tq_meta *m) { return m ? m->indexes : NULL; }

TQ_EXPORT int tq_meta_has_cell(const tq_meta *m, const char *field, uint32_t row)
{
    if (m == NULL || field == NULL || row >= m->rows)
        return TQ_ERR_INVALID;
    for (uint16_t i = 0; i < m->num_fields; i++)
        if (strcmp(m->fields[i].name, field) == 0)
            return tq__meta_cell_present(&m->fields[i], row) ? 1 : 0;
    return TQ_ERR_NOT_FOUND;
}

TQ_EXPORT const char *tq_meta_field_format(const tq_meta *m, const char *field)
{
    for (uint16_t i = 0; m != NULL && field != NULL && i < m->num_fields; i++)
        if (strcmp(m->fields[i].name, field) == 0)
            return m->fields[i].format;
    return NULL;
}

/*
 * A plain RELEASE is one-way and must never hold its caller up (a frozen
 * controller cost each free a whole timeout): it is queued in the client and
 * goes out, without waiting, on an idle connection now or on the next
 * connection given back. Where it cannot go, the controller unpins at the
 * lease's end, or when the connection the meta came by closes.
 */
static void release_later(tq_client *c, uint64_t id, uint64_t epoch)
{
    pthread_mutex_lock(&c->lock);
    if (c->num_releases == c->cap_releases && c->cap_releases < MAX_RELEASES) {
        unsigned cap = c->cap_releases ? c->cap_releases * 2 : 16;
        tq__release_t *grown = realloc(c->releases, cap * sizeof(*grown));
        if (grown != NULL) {
            c->releases = grown;
            c->cap_releases = cap;
        }
    }
    if (c->num_releases < c->cap_releases)
        c->releases[c->num_releases++] = (tq__release_t){id, epoch};
    tq_ctrl_conn *cc = c->num_idle ? c->idle[--c->num_idle] : NULL;
    pthread_mutex_unlock(&c->lock);
    if (cc != NULL)
        tq__conn_release(c, cc); /* sends what waits, this one included */
}

void tq__meta_release(tq_meta *m, bool unread)
{
    tq_ctrl_conn *cc = NULL;
    if (!unread) {
        release_later(m->client, m->id, m->epoch);
    } else if (tq__conn_acquire(m->client, &cc) == TQ_OK && cc->epoch != m->epoch) {
        /* a controller of another epoch never pinned these rows: nothing to give back */
        tq__conn_release(m->client, cc);
    } else if (cc != NULL) {
        char err[TQ_ERRMSG_MAX];
        tq_rbuf r;
        size_t off = tq__ctrl_begin(cc, TQ_MSG_RELEASE_UNREAD);
        tq_wire_encode_id(&cc->out, &(tq_msg_id_t){m->id});
        /* unread rows must be back before the caller goes on; if that fails,
         * closing the client gives them back */
        tq__ctrl_call(cc, off, m->client->timeout_ms, &r, err);
        tq__conn_release(m->client, cc);
    }
    meta_destroy(m);
}

TQ_EXPORT void tq_meta_free(tq_meta *m)
{
    if (m != NULL) /* a read that failed delivered nothing: the rows go back */
        tq__meta_release(m, m->read_failed);
}

/* A batch field over a new column for meta field f, from the receive pool
 * (the field owns it). On error the caller frees bf. */
static int field_from_meta(tq_client *c, const tq_meta *m, const tq__meta_field_t *f,
                           tq__batch_field_t *bf)
{
    memset(bf, 0, sizeof(*bf));
    bf->name = strdup(f->name);
    bf->rows = calloc(m->rows, sizeof(*bf->rows));
    bf->row_bytes = calloc(m->rows, sizeof(*bf->row_bytes));
    bf->shapes = calloc((size_t)m->rows * (f->ndim ? f->ndim : 1), sizeof(int64_t));
    if ((bf->owned = tq__bufpool_get(c->recv, f->bytes, &bf->owned_cap)) != NULL)
        bf->owned_pool = c->recv;
    if (bf->name == NULL || bf->rows == NULL || bf->row_bytes == NULL || bf->shapes == NULL ||
        bf->owned == NULL)
        return TQ_ERR_NOMEM;
    bf->kind = f->kind;
    bf->dtype = f->dtype;
    bf->ndim = f->ndim;
    memcpy(bf->row_shape, f->row_shape, sizeof(bf->row_shape));
    memcpy(bf->format, f->format, sizeof(bf->format));
    memcpy(bf->shapes, f->shapes, (size_t)m->rows * f->ndim * sizeof(int64_t));
    bf->data = bf->owned;
    bf->bytes = f->bytes;
    size_t at = 0;
    for (uint32_t i = 0; i < m->rows; i++) {
        bf->rows[i] = (char *)bf->owned + at;
        bf->row_bytes[i] = f->row_bytes[i];
        at += f->row_bytes[i];
    }
    return TQ_OK;
}

int tq__meta_field_complete(const tq_client *c, const tq_meta *m, const tq__meta_field_t *f)
{
    for (uint32_t i = 0; i < m->rows; i++)
        if (!tq__meta_cell_present(f, i))
            return tq__set_error(c, TQ_ERR_NOT_FOUND, "row %lld has no field %s (never "
                                 "produced): its cell cannot be read",
                                 (long long)m->indexes[i], f->name);
    return TQ_OK;
}

int tq__meta_read(tq_client *c, const tq_meta *m, tq_batch **batch_p)
{
    for (uint16_t k = 0; k < m->num_fields; k++) { /* a FORCE meta may lack cells */
        int rc = tq__meta_field_complete(c, m, &m->fields[k]);
        if (rc != TQ_OK)
            return rc;
    }
    tq_batch *b;
    int rc = tq_batch_create(m->rows, &b);
    if (rc != TQ_OK)
        return tq__set_error(c, rc, "cannot create a batch");
    for (uint16_t k = 0; rc == TQ_OK && k < m->num_fields; k++) {
        const tq__meta_field_t *f = &m->fields[k];
        tq__batch_field_t bf;
        if ((rc = field_from_meta(c, m, f, &bf)) != TQ_OK) {
            tq__batch_field_free(&bf);
            tq__set_error(c, rc, "out of memory for %llu bytes of field %s",
                          (unsigned long long)f->bytes, f->name);
        } else if ((rc = tq__batch_adopt_field(b, &bf)) != TQ_OK) { /* frees bf on failure */
            tq__set_error(c, rc, "cannot build the batch");
        }
    }
    if (rc == TQ_OK)
        rc = tq__meta_read_into(c, m, b);
    if (rc != TQ_OK) {
        tq_batch_destroy(b); /* its columns go back to the pool */
        return rc;
    }
    *batch_p = b;
    return TQ_OK;
}

/*
 * dst's row pointers are the RMA's local buffers: no copy on this side. Every
 * transport takes unregistered memory (tq_transport_ops.post): UCX and verbs
 * register it through their registration caches (UCX below 64 KiB lets UCX
 * copy or register itself); verbs stages runs under 8 KiB through a
 * registered buffer of the endpoint, copied out at the flush; libfabric
 * registers per operation where its provider needs local registration (no
 * cache: libfabric does not tell us of unmaps), else uses the memory as is.
 */
int tq__meta_read_into(tq_client *c, const tq_meta *m, tq_batch *dst)
{
    const tq__meta_field_t **mf = malloc(dst->num_fields * sizeof(*mf) + 1);
    if (mf == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    for (uint32_t k = 0; k < dst->num_fields; k++)
        mf[k] = tq__meta_find(m, dst->fields[k].name); /* checked: never NULL */

    tq__lane_t *l = NULL;
    int rc = lane_acquire(c, &l);
    if (rc != TQ_OK) {
        free(mf);
        return rc;
    }
    for (uint32_t k = 0; rc == TQ_OK && k < dst->num_fields; k++)
        rc = units_cover(c, l, m->epoch, mf[k]->runs, mf[k]->num_runs);
    for (uint32_t k = 0; rc == TQ_OK && k < dst->num_fields; k++)
        rc = post_column(c, l, TQ_RMA_GET, mf[k]->runs, mf[k]->num_runs,
                         (void *const *)dst->fields[k].rows, mf[k]->row_bytes, m->rows);
    int frc = units_flush(c, l, c->timeout_ms);
    rc = rc != TQ_OK ? rc : frc;
    for (uint32_t k = 0; rc != TQ_OK && rc != TQ_ERR_LOST && k < dst->num_fields; k++)
        rc = lost_or(c, l, mf[k]->runs, mf[k]->num_runs, rc);
    lane_release(c, l);
    free(mf);
    if (rc == TQ_OK && tq__now_ms() >= m->trusted_until_ms)
        rc = tq__set_error(c, TQ_ERR_TIMEOUT, "the meta's lease ran out before its data was "
                                              "read: the rows may have been cleared meanwhile");
    return rc;
}

int tq__check_get_data(tq_client *c, const tq_meta *m)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (m == NULL || m->client != c)
        return tq__set_error(c, TQ_ERR_INVALID, "meta is NULL or of another client");
    if (m->rows == 0)
        return tq__set_error(c, TQ_ERR_INVALID, "the meta has no rows");
    return TQ_OK;
}

/* the one thing a read changes in the meta: whether its rows were delivered */
int tq__get_data(tq_client *c, const tq_meta *m, tq_batch **batch_p)
{
    int rc = tq__meta_read(c, m, batch_p);
    ((tq_meta *)m)->read_failed = rc != TQ_OK;
    return rc;
}

int tq__get_data_into(tq_client *c, const tq_meta *m, tq_batch *dst)
{
    int rc = tq__meta_read_into(c, m, dst);
    ((tq_meta *)m)->read_failed = rc != TQ_OK;
    return rc;
}

TQ_EXPORT int tq_get_data(tq_client *c, const tq_meta *m, tq_batch **batch_p)
{
    int rc = tq__check_get_data(c, m);
    if (rc == TQ_OK && batch_p == NULL)
        rc = tq__set_error(c, TQ_ERR_INVALID, "batch_p is NULL");
    return rc != TQ_OK ? rc : tq__get_data(c, m, batch_p);
}

TQ_EXPORT int tq_get_data_into(tq_client *c, const tq_meta *m, tq_batch *dst)
{
    int rc = tq__check_get_data(c, m);
    if (rc == TQ_OK)
        rc = tq__meta_check_into(c, m, dst);
    return rc != TQ_OK ? rc : tq__get_data_into(c, m, dst);
}

/* ---- administration ---- */

int tq__simple_call(tq_client *c, uint16_t type, const tq_wbuf *body, uint32_t *answer_p)
{
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, type);
    tq_wire_put_bytes(&cc->out, body->data, body->len);
    char err[TQ_ERRMSG_MAX] = "";
    tq_rbuf r;
    rc = tq__ctrl_call(cc, off, c->timeout_ms, &r, err);
    if (rc != TQ_OK) {
        call_error(c, rc, err);
    } else if (answer_p != NULL) {
        *answer_p = tq_wire_get_u32(&r);
        if (!tq_rbuf_done(&r))
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed reply");
    }
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT int tq_clear(tq_client *c, const char *partition, size_t n, const int64_t *indexes)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_name(c, partition, "partition");
    if (rc != TQ_OK)
        return rc;
    if ((n > 0 && indexes == NULL) || n > TQ_WIRE_MAX_ROWS)
        return tq__set_error(c, TQ_ERR_INVALID, "indexes are NULL, or more than %u",
                             TQ_WIRE_MAX_ROWS);
    tq_wbuf body;
    tq_wbuf_init(&body);
    tq_wire_encode_clear(&body, &(tq_msg_clear_t){{partition, (uint16_t)strlen(partition)},
                                                  (uint32_t)n, tq_array_of(indexes, (uint32_t)n)});
    uint32_t removed = 0;
    rc = body.failed ? tq__set_error(c, TQ_ERR_NOMEM, "out of memory")
                     : tq__simple_call(c, TQ_MSG_CLEAR, &body, &removed);
    tq_wbuf_free(&body);
    return rc == TQ_OK ? (int)removed : rc;
}

static int partition_call(tq_client *c, uint16_t type, const char *partition, const char *task)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_name(c, partition, "partition");
    if (rc == TQ_OK && task != NULL)
        rc = tq__check_name(c, task, "task");
    if (rc != TQ_OK)
        return rc;
    tq_wbuf body;
    tq_wbuf_init(&body);
    tq_wire_encode_partition(&body, &(tq_msg_partition_t){
        {partition, (uint16_t)strlen(partition)},
        {task ? task : "", (uint16_t)(task ? strlen(task) : 0)}});
    rc = body.failed ? tq__set_error(c, TQ_ERR_NOMEM, "out of memory")
                     : tq__simple_call(c, type, &body, NULL);
    tq_wbuf_free(&body);
    return rc;
}

TQ_EXPORT int tq_clear_partition(tq_client *c, const char *partition)
{
    return partition_call(c, TQ_MSG_CLEAR_PARTITION, partition, NULL);
}

TQ_EXPORT int tq_reset_consumption(tq_client *c, const char *partition, const char *task)
{
    return partition_call(c, TQ_MSG_RESET_CONSUMPTION, partition, task);
}

typedef struct {
    tq_unit_info_t *units;
    uint32_t        n;
} infos_t;

static int info_unit(tq_client *c, void *ctx, uint32_t i, uint32_t n, const tq_wire_unit_t *w)
{
    infos_t *infos = ctx;
    if (i == 0 && (infos->units = calloc(n ? n : 1, sizeof(tq_unit_info_t))) == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    if (w == NULL)
        return TQ_OK;
    tq_unit_info_t *u = &infos->units[infos->n++];
    *u = (tq_unit_info_t){w->id, w->incarnation, w->capacity, w->used, w->alive, ""};
    size_t len = 0;
    for (uint8_t t = 0; t < w->num_transports; t++) {
        int k = snprintf(u->transports + len, sizeof(u->transports) - len, "%s%.*s",
                         t ? "," : "", (int)w->transports[t].name.len, w->transports[t].name.ptr);
        len = TQ_MIN(len + (size_t)TQ_MAX(k, 0), sizeof(u->transports) - 1);
    }
    return TQ_OK;
}

TQ_EXPORT int tq_units(tq_client *c, tq_unit_info_t **units_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (units_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "units_p is NULL");
    infos_t infos = {NULL, 0};
    int rc = units_call(c, info_unit, &infos, NULL);
    if (rc != TQ_OK) {
        free(infos.units);
        return rc;
    }
    *units_p = infos.units;
    return (int)infos.n;
}

TQ_EXPORT int tq_partitions(tq_client *c, const char *partition, char **json_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (partition != NULL && tq__check_name(c, partition, "partition") != TQ_OK)
        return TQ_ERR_INVALID;
    if (json_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "json_p is NULL");
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_PARTITIONS);
    tq_wire_encode_partition_filter(&cc->out, partition);
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) == TQ_OK) {
        tq_blob_t b = tq_wire_get_blob(&r);
        char *text = tq_rbuf_done(&r) ? malloc((size_t)b.len + 1) : NULL;
        if (!tq_rbuf_done(&r))
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed partitions reply");
        else if (text == NULL)
            rc = tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
        else {
            memcpy(text, b.ptr, b.len);
            text[b.len] = '\0';
            *json_p = text;
        }
    }
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT int tq_partition_seal(tq_client *c, const char *partition)
{
    return partition_call(c, TQ_MSG_SEAL, partition, NULL);
}

/* One status request: a blob of a byte per row index comes back. */
static int status_call(tq_client *c, const tq_msg_status_t *m, uint8_t **bytes_p)
{
    tq_ctrl_conn *cc;
    int rc = tq__conn_acquire(c, &cc);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, m->num_fields ? TQ_MSG_PRODUCTION_STATUS
                                                  : TQ_MSG_CONSUMPTION_STATUS);
    tq_wire_encode_status(&cc->out, m);
    tq_rbuf r;
    if ((rc = tq__call(c, cc, off, c->timeout_ms, &r)) == TQ_OK) {
        tq_blob_t b = tq_wire_get_blob(&r);
        uint8_t *bytes = malloc((size_t)b.len + 1);
        if (!tq_rbuf_done(&r) || b.len > INT32_MAX)
            rc = tq__set_error(c, TQ_ERR_PROTOCOL, "malformed status reply");
        else if (bytes == NULL)
            rc = tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
        if (rc == TQ_OK) {
            memcpy(bytes, b.ptr, b.len);
            *bytes_p = bytes;
            rc = (int)b.len;
        } else {
            free(bytes);
        }
    }
    tq__conn_release(c, cc);
    return rc;
}

TQ_EXPORT int tq_production_status(tq_client *c, const char *partition, size_t num_fields,
                                   const char *const *fields, uint8_t **produced_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (tq__check_name(c, partition, "partition") != TQ_OK)
        return TQ_ERR_INVALID;
    if (fields == NULL || num_fields == 0 || num_fields > TQ_WIRE_MAX_FIELDS || produced_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "need 1 to %d fields and produced_p",
                             TQ_WIRE_MAX_FIELDS);
    tq_msg_status_t m = {.partition = {partition, (uint16_t)strlen(partition)},
                         .num_fields = (uint16_t)num_fields};
    for (size_t i = 0; i < num_fields; i++) {
        if (tq__check_name(c, fields[i], "field %zu", i) != TQ_OK)
            return TQ_ERR_INVALID;
        m.fields[i] = (tq_str_t){fields[i], (uint16_t)strlen(fields[i])};
    }
    return status_call(c, &m, produced_p);
}

TQ_EXPORT int tq_consumption_status(tq_client *c, const char *partition, const char *task,
                                    uint8_t **consumed_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    if (tq__check_name(c, partition, "partition") != TQ_OK ||
        tq__check_name(c, task, "task") != TQ_OK)
        return TQ_ERR_INVALID;
    if (consumed_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "consumed_p is NULL");
    tq_msg_status_t m = {.partition = {partition, (uint16_t)strlen(partition)},
                         .task = {task, (uint16_t)strlen(task)}};
    return status_call(c, &m, consumed_p);
}
