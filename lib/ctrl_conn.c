/* ctrl_conn.c: a blocking request/reply connection to the controller. */
#define TQ_LOG_COMPONENT "conn"
#include "ctrl_conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"

static int fail(char *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, int status, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, TQ_ERRMSG_MAX, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* Milliseconds left before deadline (UINT64_MAX: none), as a poll timeout. */
static int ms_left(uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return -1;
    uint64_t now = tq__now_ms();
    return now >= deadline ? 0 : (int)TQ_MIN(deadline - now, (uint64_t)INT32_MAX);
}

static uint64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
}

/* Wait until fd is ready for `events` or the deadline passes. An answer is
 * polled for during the spin budget first: it usually comes sooner than a
 * sleeping thread would wake. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    uint64_t spin_end = tq__now_ns() + tq__spin_ns();
    while (events == POLLIN && tq__now_ns() < spin_end) {
        if (poll(&pfd, 1, 0) > 0)
            return TQ_OK;
        sched_yield(); /* the answering thread may be waiting for this core */
    }
    for (;;) {
        int n = poll(&pfd, 1, ms_left(deadline));
        if (n > 0)
            return TQ_OK;
        if (n == 0)
            return TQ_ERR_TIMEOUT;
        if (errno != EINTR)
            return TQ_ERR_IO;
    }
}

static int connect_tcp(const char *target, uint64_t deadline, int *fd_p, char *err)
{
    char host[256];
    uint16_t port;
    if (tq__parse_hostport(target, host, sizeof(host), &port) != 0)
        return fail(err, TQ_ERR_INVALID, "bad controller address '%s' (want HOST:PORT)", target);
    /* "[::1]:port" names an IPv6 host */
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(h, portstr, &hints, &res);
    if (rc != 0)
        return fail(err, TQ_ERR_CONNECTION, "cannot resolve '%s': %s", h, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return fail(err, TQ_ERR_CONNECTION, "socket: %s", strerror(errno));
    }
    rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return fail(err, TQ_ERR_CONNECTION, "cannot connect to controller %s: %s", target,
                    strerror(e));
    }
    if (rc != 0) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (wait_fd(fd, POLLOUT, deadline) != TQ_OK) {
            close(fd);
            return fail(err, TQ_ERR_TIMEOUT, "timed out connecting to controller %s", target);
        }
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr != 0) {
            close(fd);
            return fail(err, TQ_ERR_CONNECTION, "cannot connect to controller %s: %s", target,
                        strerror(soerr));
        }
    }
    tq__ctrl_socket_tune(fd);
    *fd_p = fd;
    return TQ_OK;
}

void tq__ctrl_socket_tune(int fd)
{
    int one = 1, idle = 5, interval = 1, count = 5;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

int tq__ctrl_connect(tq_ctrl_conn *cc, const char *target, const char *token, uint8_t role,
                     const uint8_t *session, int timeout_ms, char *err)
{
    memset(cc, 0, sizeof(*cc));
    cc->fd = -1;
    tq_wbuf_init(&cc->out);
    int rc = connect_tcp(target, deadline_after(timeout_ms), &cc->fd, err);
    if (rc != TQ_OK)
        return rc;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_HELLO);
    tq_msg_hello_t hello = {role, {token ? token : "", (uint16_t)(token ? strlen(token) : 0)},
                            session};
    tq_wire_encode_hello(&cc->out, &hello);
    tq_rbuf reply;
    tq_msg_hello_reply_t hr;
    rc = tq__ctrl_call(cc, off, timeout_ms, &reply, err);
    if (rc == TQ_OK && (tq_wire_decode_hello_reply(&reply, &hr) != TQ_OK || !tq_rbuf_done(&reply)))
        rc = fail(err, TQ_ERR_PROTOCOL, "malformed hello reply");
    if (rc != TQ_OK) {
        tq__ctrl_close(cc);
        return rc;
    }
    cc->id = hr.conn_id;
    cc->epoch = hr.epoch;
    cc->live_ms = TQ_MAX(timeout_ms, 0);
    return TQ_OK;
}

void tq__ctrl_close(tq_ctrl_conn *cc)
{
    if (cc->fd >= 0)
        close(cc->fd);
    cc->fd = -1;
    tq_wbuf_free(&cc->out);
    free(cc->in);
    cc->in = NULL;
    cc->in_cap = 0;
}

size_t tq__ctrl_begin(tq_ctrl_conn *cc, uint16_t type)
{
    tq_wbuf_reset(&cc->out);
    return tq_wire_begin(&cc->out, type, 0, ++cc->next_id);
}

static int send_buf(tq_ctrl_conn *cc, const uint8_t *data, size_t len, uint64_t deadline,
                    char *err)
{
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(cc->fd, data + sent, len - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(cc->fd, POLLOUT, deadline) != TQ_OK)
                return fail(err, TQ_ERR_TIMEOUT, "timed out sending to the controller");
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            return fail(err, TQ_ERR_CONNECTION, "lost the controller: %s", strerror(errno));
        }
    }
    return TQ_OK;
}

static int send_all(tq_ctrl_conn *cc, uint64_t deadline, char *err)
{
    return send_buf(cc, cc->out.data, cc->out.len, deadline, err);
}

/* A PING on a silent connection: its answer (or any byte) shows the
 * controller's loop alive. A reply to it is skipped like any other stray one. */
static int send_ping(tq_ctrl_conn *cc, char *err)
{
    tq_wbuf w;
    tq_wbuf_init(&w);
    tq_wire_end(&w, tq_wire_begin(&w, TQ_MSG_PING, 0, ++cc->next_id));
    int rc = w.failed ? fail(err, TQ_ERR_NOMEM, "out of memory for a ping")
                      : send_buf(cc, w.data, w.len, tq__now_ms() + (uint64_t)cc->live_ms, err);
    tq_wbuf_free(&w);
    cc->pinged = true;
    return rc;
}

/* Wait for a byte from the controller until deadline, pinging it when it
 * stays silent (see tq__ctrl_connect). */
static int wait_input(tq_ctrl_conn *cc, uint64_t deadline, char *err)
{
    for (;;) {
        uint64_t check = UINT64_MAX;
        if (cc->live_ms > 0)
            check = cc->heard_ms + (uint64_t)cc->live_ms / 2 +
                    (cc->pinged ? (uint64_t)cc->live_ms : 0);
        int rc = wait_fd(cc->fd, POLLIN, TQ_MIN(deadline, check));
        if (rc == TQ_OK)
            return TQ_OK;
        if (rc != TQ_ERR_TIMEOUT)
            return fail(err, TQ_ERR_CONNECTION, "lost the controller: %s", strerror(errno));
        if (deadline <= check)
            return fail(err, TQ_ERR_TIMEOUT, "timed out waiting for the controller");
        if (cc->pinged)
            return fail(err, TQ_ERR_CONNECTION, "the controller stopped answering: no reply to "
                        "a liveness ping in %d ms", cc->live_ms);
        if ((rc = send_ping(cc, err)) != TQ_OK)
            return rc;
    }
}

static int recv_exact(tq_ctrl_conn *cc, void *buf, size_t len, uint64_t deadline, char *err)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(cc->fd, (char *)buf + got, len - got, 0);
        if (n > 0) {
            got += (size_t)n;
            cc->heard_ms = tq__now_ms();
            cc->pinged = false;
        } else if (n == 0) {
            return fail(err, TQ_ERR_CONNECTION, "the controller closed the connection");
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_input(cc, deadline, err);
            if (rc != TQ_OK)
                return rc;
        } else if (errno != EINTR) {
            return fail(err, TQ_ERR_CONNECTION, "lost the controller: %s", strerror(errno));
        }
    }
    return TQ_OK;
}

static int finish_frame(tq_ctrl_conn *cc, size_t offset, char *err)
{
    tq_wire_end(&cc->out, offset);
    if (cc->out.failed)
        return fail(err, TQ_ERR_INVALID, "request too large for one frame (limit %u bytes)",
                    TQ_WIRE_MAX_BODY);
    if (cc->broken || cc->fd < 0)
        return fail(err, TQ_ERR_CONNECTION, "connection to the controller is broken");
    return TQ_OK;
}

int tq__ctrl_send(tq_ctrl_conn *cc, size_t offset, char *err)
{
    int rc = finish_frame(cc, offset, err);
    if (rc == TQ_OK)
        rc = send_all(cc, deadline_after(5000), err);
    if (rc != TQ_OK && rc != TQ_ERR_INVALID)
        cc->broken = true;
    return rc;
}

int tq__ctrl_send_nowait(tq_ctrl_conn *cc, char *err)
{
    if (cc->out.failed)
        return fail(err, TQ_ERR_NOMEM, "out of memory for a message");
    if (cc->broken || cc->fd < 0)
        return fail(err, TQ_ERR_CONNECTION, "connection to the controller is broken");
    size_t sent = 0;
    while (sent < cc->out.len) {
        ssize_t n = send(cc->fd, cc->out.data + sent, cc->out.len - sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && sent == 0)
            return fail(err, TQ_ERR_TIMEOUT, "the controller reads nothing for now");
        cc->broken = true; /* part of a frame went: the stream cannot go on */
        return fail(err, TQ_ERR_CONNECTION, "lost the controller: %s",
                    n < 0 ? strerror(errno) : "a short send");
    }
    return TQ_OK;
}

int tq__ctrl_call(tq_ctrl_conn *cc, size_t offset, int timeout_ms, tq_rbuf *reply_p, char *err)
{
    int rc = finish_frame(cc, offset, err);
    if (rc != TQ_OK)
        return rc;
    uint64_t id = cc->next_id;
    uint16_t type = (uint16_t)(cc->out.data[offset + 6] | cc->out.data[offset + 7] << 8);
    uint64_t deadline = deadline_after(timeout_ms);
    rc = send_all(cc, deadline, err);
    cc->heard_ms = tq__now_ms(); /* silence counts from the request */
    cc->pinged = false;
    while (rc == TQ_OK) {
        uint8_t hdr[TQ_WIRE_HEADER_SIZE];
        tq_wire_header_t h;
        rc = recv_exact(cc, hdr, sizeof(hdr), deadline, err);
        if (rc != TQ_OK)
            break;
        if (tq_wire_parse_header(hdr, &h) != TQ_OK || !(h.flags & TQ_WIRE_FLAG_REPLY)) {
            rc = fail(err, TQ_ERR_PROTOCOL, "bad frame from the controller");
            break;
        }
        if (h.body_len > cc->in_cap) {
            uint8_t *in = realloc(cc->in, h.body_len);
            if (in == NULL) {
                rc = fail(err, TQ_ERR_NOMEM, "out of memory for a %u-byte reply", h.body_len);
                break;
            }
            cc->in = in;
            cc->in_cap = h.body_len;
        }
        rc = recv_exact(cc, cc->in, h.body_len, deadline, err);
        if (rc != TQ_OK)
            break;
        if (h.request_id != id || h.type != type)
            continue; /* a reply to an earlier one-way message's error: skip it */
        tq_rbuf r = tq_rbuf_make(cc->in, h.body_len);
        int status = (int32_t)tq_wire_get_u32(&r);
        if (r.failed || status > 0 || status < TQ_ERR_IO) {
            rc = fail(err, TQ_ERR_PROTOCOL, "bad reply status from the controller");
            break;
        }
        if (status != TQ_OK) {
            tq_str_t msg = tq_wire_get_str(&r);
            return fail(err, status, "%.*s", msg.len, msg.ptr);
        }
        *reply_p = r;
        return TQ_OK;
    }
    cc->broken = true;
    return rc;
}
