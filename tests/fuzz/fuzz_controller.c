/* fuzz_controller.c: libFuzzer target: a real in-process controller fed arbitrary frames over TCP. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../clock.h"
#include "controller/controller.h"
#include "tq/tq.h"
#include "wire.h"

/*
 * One controller serves every input from its own thread, as tq-controller
 * would; each input is one TCP connection to it. No storage unit runs: a put
 * of more than zero bytes gets TQ_ERR_NOSPACE, unless the input itself says
 * HELLO as a storage unit and registers one (the controller never calls it).
 * The input's first byte picks the variant (the FLAG_ bits below), the rest is
 * either the raw bytes to send or, with FLAG_FRAMES, chunks that each become
 * one well-formed frame, so the fuzzer reaches the handlers behind the header
 * checks:
 *
 *   chunk: u8 t | u8 len (u16 little-endian with CHUNK_LONG) | len body bytes
 *   t & CHUNK_TYPE: the type, 1 + (t & 31) % (TQ_MSG_TYPE_MAX - 1)
 *   t & CHUNK_REPLY: sent with the reply flag; t & CHUNK_RAW: the body bytes
 *   go out as they are, with no header; both: an "id chunk", whose frame's
 *   body is the last id the controller answered (HELLO, ALLOC, GET_META,
 *   KV_GET, GET_META_ROWS), then the chunk's bytes, sent once the answers so far are in
 *
 * Every reply must be a well-formed reply frame, and the controller must keep
 * answering a fresh HELLO (checked every CHECK_EVERY inputs). Its state (units,
 * partitions) outlives an input, so it is restarted every TQ_FUZZ_RESTART
 * inputs (default 1000, 0 never) to bound that state; 1 makes every input
 * start from an empty controller, for reproducing a crash that needed state.
 */

#define FLAG_HELLO    0x01 /* greet first, as a client ... */
#define FLAG_STORAGE  0x02 /* ... or as a storage unit */
#define FLAG_FRAMES   0x04 /* the rest is chunks, not raw bytes */
#define FLAG_SPLIT    0x08 /* send in small pieces */
#define FLAG_SENTINEL 0x10 /* wait for the replies before closing */
#define FLAG_RESET    0x20 /* close with a reset instead of an orderly shutdown */

#define CHUNK_TYPE  0x1f
#define CHUNK_LONG  0x20
#define CHUNK_REPLY 0x40
#define CHUNK_RAW   0x80

#define SENTINEL_ID  UINT64_MAX
#define IDLE_MS      20   /* no data this long: the controller has said all it will */
#define INPUT_MS     2000 /* one input's exchange, at most */
#define PING_MS      5000 /* a HELLO's answer */
#define CHECK_EVERY  256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tq_controller     *ctl;
static pthread_t          ctl_thread;
static atomic_bool        ctl_running;
static struct sockaddr_in ctl_addr;
static unsigned long      restart_every = 1000;
static unsigned long      inputs;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_controller: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ---- the controller ---- */

static void *ctl_main(void *arg)
{
    int rc = tq__controller_run(arg);
    if (rc != TQ_OK)
        fprintf(stderr, "fuzz_controller: tq__controller_run: %s\n", tq_status_string(rc));
    atomic_store(&ctl_running, false);
    return NULL;
}

static void ctl_start(void)
{
    /* a bounded metadata budget, as a deployment has: within libFuzzer's RSS limit */
    tq_controller_config_t cfg = {.listen = "127.0.0.1:0", .max_metadata = 256ULL << 20};
    int rc = tq__controller_create(&cfg, &ctl);
    if (rc != TQ_OK)
        fail("tq__controller_create: %s", tq_status_string(rc));
    const char *address = tq__controller_address(ctl);
    const char *colon = strrchr(address, ':');
    if (colon == NULL)
        fail("unexpected controller address %s", address);
    ctl_addr = (struct sockaddr_in){.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)atoi(colon + 1)),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    atomic_store(&ctl_running, true);
    if (pthread_create(&ctl_thread, NULL, ctl_main, ctl) != 0)
        fail("pthread_create failed");
}

static void ctl_stop(void)
{
    tq__controller_stop(ctl);
    pthread_join(ctl_thread, NULL);
    tq__controller_destroy(ctl);
    ctl = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    setenv("TQ_LOG", "error", 0); /* every bad frame is a warning: too many to print */
    const char *every = getenv("TQ_FUZZ_RESTART");
    if (every != NULL)
        restart_every = strtoul(every, NULL, 10);
    ctl_start();
    return 0;
}

/* ---- frames ---- */

static void put_frame(tq_wbuf *w, uint16_t type, uint8_t flags, uint64_t id, const void *body,
                      size_t len)
{
    size_t off = tq_wire_begin(w, type, flags, id);
    tq_wire_put_bytes(w, body, len);
    tq_wire_end(w, off);
}

static void put_hello(tq_wbuf *w, uint8_t role, uint64_t id)
{
    size_t off = tq_wire_begin(w, TQ_MSG_HELLO, 0, id);
    tq_wire_encode_hello(w, &(tq_msg_hello_t){.role = role, .token = {"", 0}});
    tq_wire_end(w, off);
}

/* True when p holds whole frames with good headers only: the controller will
 * then have read all of it and wait for more. */
static bool whole_frames(const uint8_t *p, size_t n)
{
    size_t pos = 0;
    while (n - pos >= TQ_WIRE_HEADER_SIZE) {
        tq_wire_header_t h;
        if (tq_wire_parse_header(p + pos, &h) != TQ_OK)
            return false;
        pos += TQ_WIRE_HEADER_SIZE;
        if (n - pos < h.body_len)
            return false;
        pos += h.body_len;
    }
    return pos == n;
}

/* ---- what comes back ---- */

/* Frames read back, keeping of each body only its status and the id that
 * follows: each header must be a reply's, each status one of tq_status_t. */
typedef struct {
    uint8_t          hdr[TQ_WIRE_HEADER_SIZE];
    size_t           hdr_len;
    tq_wire_header_t h;
    uint8_t          head[12];      /* status, then the id of HELLO, ALLOC, GET_META, KV_GET */
    size_t           head_len;
    uint64_t         skip;          /* body bytes still to come after head */
    uint64_t         last_sentinel; /* the id of the last sentinel answered */
    uint64_t         last_id;       /* the last connection, alloc or meta id answered */
    bool             eof;           /* closed or reset by the controller */
} reader_t;

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* A whole reply's head is in. */
static void reader_reply(reader_t *rd)
{
    const tq_wire_header_t *h = &rd->h;
    int32_t status = (int32_t)get_le(rd->head, 4);
    if (status > TQ_OK || status < TQ_ERR_IO)
        fail("the controller answered type %u with status %d", h->type, status);
    if (h->request_id >= SENTINEL_ID - 256 && h->type == TQ_MSG_UNITS)
        rd->last_sentinel = h->request_id;
    bool has_id = h->type == TQ_MSG_HELLO || h->type == TQ_MSG_ALLOC ||
                  h->type == TQ_MSG_GET_META || h->type == TQ_MSG_KV_GET ||
                  h->type == TQ_MSG_GET_META_ROWS || h->type == TQ_MSG_COMMIT_META;
    if (status == TQ_OK && has_id && rd->head_len == 12)
        rd->last_id = get_le(rd->head + 4, 8);
}

static void reader_feed(reader_t *rd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (rd->hdr_len < TQ_WIRE_HEADER_SIZE) {
            size_t k = TQ_WIRE_HEADER_SIZE - rd->hdr_len;
            k = k < n ? k : n;
            memcpy(rd->hdr + rd->hdr_len, p, k);
            rd->hdr_len += k, p += k, n -= k;
            if (rd->hdr_len < TQ_WIRE_HEADER_SIZE)
                break;
            if (tq_wire_parse_header(rd->hdr, &rd->h) != TQ_OK ||
                rd->h.flags != TQ_WIRE_FLAG_REPLY || rd->h.body_len < 4)
                fail("the controller sent a malformed reply frame");
            rd->head_len = 0;
            rd->skip = rd->h.body_len < sizeof(rd->head) ? 0 : rd->h.body_len - sizeof(rd->head);
        }
        size_t want = rd->h.body_len < sizeof(rd->head) ? rd->h.body_len : sizeof(rd->head);
        if (rd->head_len < want) {
            size_t k = want - rd->head_len;
            k = k < n ? k : n;
            memcpy(rd->head + rd->head_len, p, k);
            rd->head_len += k, p += k, n -= k;
            if (rd->head_len < want)
                break;
        }
        size_t k = rd->skip < n ? (size_t)rd->skip : n;
        rd->skip -= k, p += k, n -= k;
        if (rd->skip == 0) {
            reader_reply(rd);
            rd->hdr_len = 0;
        }
    }
}

/* Read what is there without blocking. */
static void reader_drain(reader_t *rd, int fd)
{
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            reader_feed(rd, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            rd->eof = true;
        return;
    }
}

/* Read until the controller closes, or answers the sentinel `until`, or the
 * deadline passes; with no sentinel (0), also once it says nothing for IDLE_MS.
 * A sentinel is always answered or the connection closed, so waiting for one
 * is not cut short by a controller thread that was merely scheduled late. */
static void reader_wait(reader_t *rd, int fd, uint64_t until, uint64_t deadline)
{
    uint64_t now;
    while (!rd->eof && !(until != 0 && rd->last_sentinel == until) && (now = tq_test_now_ms()) < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, until != 0 ? (int)(deadline - now) : IDLE_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        reader_drain(rd, fd);
    }
}

/* ---- connections ---- */

/* A connection to the controller. Every input leaves a socket in TIME_WAIT:
 * should the ephemeral ports run out, wait for some to be reused. */
static int ctl_connect(void)
{
    for (int tries = 0;; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            fail("socket: %s", strerror(errno));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int rc;
        while ((rc = connect(fd, (const struct sockaddr *)&ctl_addr, sizeof(ctl_addr))) != 0 &&
               errno == EINTR)
            continue;
        if (rc == 0) {
            if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
                fail("fcntl: %s", strerror(errno));
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != EADDRNOTAVAIL || tries >= 500)
            fail("cannot connect to the controller: %s", strerror(err));
        usleep(10000);
    }
}

/* Close with a reset: no TIME_WAIT left behind, and the controller reads ECONNRESET. */
static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* A fresh connection says HELLO and gets its id back: the controller is alive
 * and has handled every event before this one. */
static bool ping(void)
{
    if (!atomic_load(&ctl_running))
        return false;
    int fd = ctl_connect();
    tq_wbuf w;
    tq_wbuf_init(&w);
    put_hello(&w, TQ_ROLE_CLIENT, 7);
    bool ok = !w.failed && send(fd, w.data, w.len, MSG_NOSIGNAL) == (ssize_t)w.len;
    tq_wbuf_free(&w);
    /* header, then status and connection id */
    uint8_t reply[TQ_WIRE_HEADER_SIZE + 12];
    size_t got = 0;
    uint64_t deadline = tq_test_now_ms() + PING_MS;
    while (ok && got < sizeof(reply) && tq_test_now_ms() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv(fd, reply + got, sizeof(reply) - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            ok = false;
    }
    close_reset(fd);
    tq_wire_header_t h;
    if (!ok || got < sizeof(reply) || tq_wire_parse_header(reply, &h) != TQ_OK)
        return false;
    return h.type == TQ_MSG_HELLO && h.flags == TQ_WIRE_FLAG_REPLY && h.request_id == 7 &&
           h.body_len == 20 && get_le(reply + TQ_WIRE_HEADER_SIZE, 4) == TQ_OK;
}

/* One input's connection. */
typedef struct {
    int      fd;
    uint8_t  flags;
    reader_t rd;
    uint64_t deadline;
    size_t   piece;
    bool     writable;
    uint64_t sentinels;
} session_t;

static void session_open(session_t *s, uint8_t flags)
{
    *s = (session_t){.fd = ctl_connect(), .flags = flags, .writable = true,
                     .deadline = tq_test_now_ms() + INPUT_MS};
}

/* Send out while reading replies; stop early if the controller closes. */
static void session_send(session_t *s, const uint8_t *out, size_t len)
{
    static const size_t pieces[] = {1, 3, 7, 2, 24, 5, 13, 64};
    size_t sent = 0;
    while (sent < len && s->writable && !s->rd.eof && tq_test_now_ms() < s->deadline) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN | POLLOUT};
        int n = poll(&pfd, 1, IDLE_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail("poll: %s", strerror(errno));
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            reader_drain(&s->rd, s->fd);
        if (!(pfd.revents & POLLOUT))
            continue;
        size_t k = len - sent;
        if ((s->flags & FLAG_SPLIT) && k > pieces[s->piece % 8])
            k = pieces[s->piece++ % 8];
        ssize_t w = send(s->fd, out + sent, k, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            if (s->flags & FLAG_SPLIT)
                sched_yield(); /* let the controller read the piece alone */
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            s->writable = false; /* it closed on us: EPIPE, ECONNRESET */
        }
    }
    if (sent < len)
        s->writable = false;
}

/* Send out and a sentinel after it, and wait until the sentinel is answered:
 * then every reply to what came before is in. */
static void session_sync(session_t *s, tq_wbuf *out)
{
    uint64_t id = SENTINEL_ID - 255 + (s->sentinels++ % 256);
    put_frame(out, TQ_MSG_UNITS, 0, id, NULL, 0);
    if (out->failed)
        fail("out of memory building the frames");
    session_send(s, out->data, out->len);
    tq_wbuf_reset(out);
    if (s->writable)
        reader_wait(&s->rd, s->fd, id, s->deadline);
}

static void session_close(session_t *s)
{
    if (s->flags & FLAG_RESET) {
        close_reset(s->fd);
        if (!ping()) /* also waits until the controller has seen the reset */
            fail("no answer to HELLO within %d ms after a reset connection: the controller "
                 "died or its loop is blocked", PING_MS);
        return;
    }
    shutdown(s->fd, SHUT_WR);
    reader_wait(&s->rd, s->fd, 0, s->deadline);
    close(s->fd);
}

/* ---- inputs ---- */

/* Chunks (see the top of the file) to frames, sent as they are made. A chunk
 * with both CHUNK_RAW and CHUNK_REPLY waits for the answers so far, and its
 * body starts with the last connection, alloc or meta id answered: how a
 * COMMIT, RELEASE or CANCEL names what it acts on. */
static bool send_chunks(session_t *s, tq_wbuf *out, const uint8_t *data, size_t size)
{
    bool framed = whole_frames(out->data, out->len);
    size_t pos = 0;
    for (uint64_t id = 1; pos < size && s->writable; id++) {
        uint8_t t = data[pos++];
        size_t len = pos < size ? data[pos++] : 0;
        if ((t & CHUNK_LONG) && pos < size)
            len |= (size_t)data[pos++] << 8;
        if (len > size - pos)
            len = size - pos;
        uint16_t type = (uint16_t)(1 + (t & CHUNK_TYPE) % (TQ_MSG_TYPE_MAX - 1));
        if ((t & (CHUNK_RAW | CHUNK_REPLY)) == (CHUNK_RAW | CHUNK_REPLY)) {
            if (framed)
                session_sync(s, out);
            size_t off = tq_wire_begin(out, type, 0, id);
            tq_wire_put_u64(out, s->rd.last_id);
            tq_wire_put_bytes(out, data + pos, len);
            tq_wire_end(out, off);
        } else if (t & CHUNK_RAW) {
            if (len > 0)
                tq_wire_put_bytes(out, data + pos, len);
            framed = framed && whole_frames(data + pos, len);
        } else {
            put_frame(out, type, (t & CHUNK_REPLY) ? TQ_WIRE_FLAG_REPLY : 0, id, data + pos, len);
        }
        pos += len;
    }
    return framed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (ctl == NULL)
        ctl_start();
    uint8_t flags = data[0];
    data++, size--;

    session_t s;
    session_open(&s, flags);
    tq_wbuf out;
    tq_wbuf_init(&out);
    if (flags & FLAG_HELLO)
        put_hello(&out, (flags & FLAG_STORAGE) ? TQ_ROLE_STORAGE : TQ_ROLE_CLIENT, 0);
    bool framed = true;
    if (flags & FLAG_FRAMES)
        framed = send_chunks(&s, &out, data, size);
    else if (size > 0)
        tq_wire_put_bytes(&out, data, size);
    if (out.failed)
        fail("out of memory building the frames");
    /* whole frames: the controller read them all, so its answers can be awaited */
    if ((flags & FLAG_SENTINEL) && framed && whole_frames(out.data, out.len))
        session_sync(&s, &out);
    else
        session_send(&s, out.data, out.len);
    session_close(&s);
    tq_wbuf_free(&out);

    inputs++;
    if (!atomic_load(&ctl_running))
        fail("the controller's loop returned");
    if (inputs % CHECK_EVERY == 0 && !ping())
        fail("no answer to HELLO within %d ms: the controller died or its loop is blocked",
             PING_MS);
    if (restart_every > 0 && inputs % restart_every == 0)
        ctl_stop(); /* started again by the next input */
    return 0;
}
