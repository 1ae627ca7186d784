/* ctrl_conn.h: a blocking request/reply connection to the controller. */
#ifndef TQ_CTRL_CONN_H
#define TQ_CTRL_CONN_H

#include <stdint.h>

#include "wire.h"

/*
 * Used by one thread at a time. A call that times out or breaks leaves the
 * connection unusable (a late reply could be taken for the next one): the
 * caller closes it. Error details go to err (may be NULL), NUL-terminated.
 */
typedef struct {
    int      fd;
    uint64_t id;        /* the controller's name for this connection */
    uint64_t epoch;     /* the controller's epoch (tq_msg_hello_reply_t) */
    uint64_t next_id;
    tq_wbuf  out;
    uint8_t *in;        /* the last reply's body */
    size_t   in_cap;
    bool     broken;
    int      live_ms;   /* silence a call bears before pinging, doubled: 0 never pings */
    uint64_t heard_ms;  /* the controller last sent a byte (or a call began) */
    bool     pinged;    /* a ping is out since then */
} tq_ctrl_conn;

#define TQ_ERRMSG_MAX 512

/* Tune a control-plane TCP socket, either end: no Nagle delay, and keepalive
 * probes that find a peer gone without a word (a dead host) in about 10 s. */
void tq__ctrl_socket_tune(int fd);

/*
 * Connect to "host:port" (or "tcp://host:port"), say HELLO with token and role.
 * timeout_ms also bounds how long the controller may stay silent during a
 * call: after timeout_ms / 2 without a byte from it the call sends a PING
 * (answered at once, even while a request is parked), and after timeout_ms
 * more without a byte the call fails with TQ_ERR_CONNECTION. So a call that
 * may wait for ever (GET_META with timeout -1) ends within 1.5 x timeout_ms
 * of a controller freezing (SIGSTOP, a wedged loop): TCP keepalive cannot
 * tell, as the frozen process's kernel still answers for it.
 * session: TQ_WIRE_SESSION_LEN bytes naming the client this connection
 * belongs to (every connection of one client sends the same), or NULL.
 */
int  tq__ctrl_connect(tq_ctrl_conn *cc, const char *target, const char *token, uint8_t role,
                      const uint8_t *session, int timeout_ms, char *err);
void tq__ctrl_close(tq_ctrl_conn *cc);

/* Start a request of `type`; the caller encodes the body into cc->out. */
size_t tq__ctrl_begin(tq_ctrl_conn *cc, uint16_t type);
/* Send the request begun at offset and wait for its reply, at most timeout_ms
 * (-1: no limit). On TQ_OK, *reply_p reads the answer's body (valid until the
 * next call). Otherwise the status the controller (or the connection) gave. */
int  tq__ctrl_call(tq_ctrl_conn *cc, size_t offset, int timeout_ms, tq_rbuf *reply_p, char *err);
/* Send a one-way message (no reply). */
int  tq__ctrl_send(tq_ctrl_conn *cc, size_t offset, char *err);
/* Send the whole frames in cc->out without waiting. TQ_OK when all went;
 * TQ_ERR_TIMEOUT when the socket took none of it (the connection stays
 * usable); otherwise the connection is broken (a frame went in part). */
int  tq__ctrl_send_nowait(tq_ctrl_conn *cc, char *err);

#endif
