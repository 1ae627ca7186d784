/* test_transport.c: a conformance suite run against every transport in the registry. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "tq/transport.h"
#include "transport_registry.h"

#define MiB (1024u * 1024u)
#define POOL_LEN (80u * MiB)
#define TEST_TIMEOUT_S 60
#define THREAD_CAP_MS 30000 /* the target's progress thread never outlives this */

/* ---- helpers ------------------------------------------------------------ */

/* The environment this test process runs the transports in (see the bottom),
 * the transports it concerns (NULL: all), and why a peer may not be killed
 * while a post runs (NULL: it may). */
static const char *flavour = "default";
static const char *flavour_only;
static const char *flavour_no_kill_in_post;
/* Transports that came up in this test, and why the last one did not. */
static int transports_up;
static char skip_why[256];

/* Why verbs did not start: what the kernel offers it. *absent_p: there is
 * no RDMA device at all, which is no fault of the transport. */
static const char *verbs_why(bool *absent_p)
{
    DIR *d = opendir("/sys/class/infiniband");
    *absent_p = true;
    if (d == NULL)
        return "no RDMA device (no RDMA subsystem in this kernel; ci/softroce.sh makes a "
               "soft-RoCE one where rdma_rxe exists)";
    bool any = false;
    for (struct dirent *e; !any && (e = readdir(d)) != NULL;)
        any = e->d_name[0] != '.';
    closedir(d);
    *absent_p = !any;
    return any ? "RDMA devices exist, but none has an IP address rdma_cm can use (TQ_VERBS_ADDR)"
               : "no RDMA device (ibv_get_device_list found none)";
}

static void note_unsupported(const tq_transport_ops *ops)
{
    const char *prov = getenv("FI_PROVIDER");
    bool absent = false;
    const char *why = strcmp(ops->name, "verbs") == 0 ? verbs_why(&absent) : NULL;
    snprintf(skip_why, sizeof(skip_why), "transport %s unsupported here (%s%s%s)%s%s", ops->name,
             flavour, prov ? ", FI_PROVIDER=" : "", prov ? prov : "", why ? ": " : "",
             why ? why : "");
    /* A warning fails the run (Criterion 2.4): hardware that is not there is no failure. */
    if (absent && flavour_only != NULL) /* the whole flavour skips: say why at any verbosity */
        fprintf(stderr, "%s: skipped\n", skip_why);
    else if (absent)
        cr_log_info("%s: skipped", skip_why);
    else
        cr_log_warn("%s: skipped", skip_why);
}

static const char *status_name(int rc)
{
    switch (rc) {
#define TQ_STATUS_CASE(name, value, text) case value: return #name;
        TQ_STATUS_MAP(TQ_STATUS_CASE)
#undef TQ_STATUS_CASE
    }
    return "?";
}

/* Both operands, by value and by name. */
#define EXPECT_RC(expr, want)                                                           \
    do {                                                                                \
        int rc_ = (expr);                                                               \
        int want_ = (want);                                                             \
        cr_assert_eq(rc_, want_, "%s: got %d (%s), expected %d (%s)", #expr, rc_,       \
                     status_name(rc_), want_, status_name(want_));                      \
    } while (0)

/* Mixed, so a block landing at a wrong offset never matches. */
static uint8_t pattern_byte(size_t i, unsigned seed)
{
    uint32_t x = (uint32_t)i * 0x9E3779B1u + (uint32_t)((uint64_t)i >> 32) + seed * 0x85EBCA6Bu + 1u;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    return (uint8_t)(x >> 24);
}

static void fill(void *p, size_t len, unsigned seed)
{
    uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        b[i] = pattern_byte(i, seed);
}

/* Index of the first byte where a and b differ, or -1. */
static long first_diff(const void *a, const void *b, size_t len)
{
    if (memcmp(a, b, len) == 0)
        return -1;
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < len; i++)
        if (x[i] != y[i])
            return (long)i;
    return -1;
}

#define EXPECT_SAME(got, want, len, what)                                              \
    do {                                                                               \
        long d_ = first_diff((got), (want), (len));                                    \
        cr_assert_eq(d_, -1L, "%s: %zu bytes differ first at %ld: got 0x%02x, want 0x%02x", \
                     (what), (size_t)(len), d_,                                        \
                     d_ < 0 ? 0 : ((const uint8_t *)(got))[d_],                       \
                     d_ < 0 ? 0 : ((const uint8_t *)(want))[d_]);                     \
    } while (0)

static bool all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != 0)
            return false;
    return true;
}

/* ---- target and initiators -------------------------------------------- */

typedef struct {
    const tq_transport_ops *ops;
    tq_transport *tr;
    uint8_t *pool;
    size_t pool_len;
    tq_transport_mem *mem;
    bool pool_malloced;
    void *addr_blob, *region_blob;
    size_t addr_len, region_len;
    pthread_t thread;
    atomic_bool stop;
    bool running;
} target_t;

typedef struct {
    const tq_transport_ops *ops;
    tq_transport *tr;
    tq_transport_ep *ep;
    tq_transport_region *region;
} initiator_t;

/* Transports emulating RMA in software need the target to progress. */
static void *target_loop(void *arg)
{
    target_t *t = arg;
    uint64_t end = tq_test_now_ms() + THREAD_CAP_MS;
    while (!atomic_load(&t->stop) && tq_test_now_ms() < end)
        t->ops->progress(t->tr, 10);
    return NULL;
}

/* false: the transport has no usable device here; skip it. With
 * use_register the pool is malloc'd and registered even if mem_alloc works. */
static bool target_start_ex(const tq_transport_ops *ops, target_t *t, bool use_register)
{
    memset(t, 0, sizeof(*t));
    t->ops = ops;
    int rc = ops->init(NULL, &t->tr);
    if (rc == TQ_ERR_UNSUPPORTED) {
        note_unsupported(ops);
        return false;
    }
    EXPECT_RC(rc, TQ_OK);
    transports_up++;
    t->pool_len = POOL_LEN;
    void *pool = NULL;
    rc = use_register ? TQ_ERR_UNSUPPORTED : ops->mem_alloc(t->tr, t->pool_len, &pool, &t->mem);
    if (rc == TQ_ERR_UNSUPPORTED) {
        pool = malloc(t->pool_len);
        cr_assert_not_null(pool);
        t->pool_malloced = true;
        rc = ops->mem_register(t->tr, pool, t->pool_len, &t->mem);
    }
    EXPECT_RC(rc, TQ_OK);
    t->pool = pool;
    memset(t->pool, 0, t->pool_len);
    EXPECT_RC(ops->mem_pack(t->tr, t->mem, &t->region_blob, &t->region_len), TQ_OK);
    EXPECT_RC(ops->address(t->tr, &t->addr_blob, &t->addr_len), TQ_OK);
    cr_assert_gt(t->region_len, (size_t)0, "region blob length %zu", t->region_len);
    cr_assert_gt(t->addr_len, (size_t)0, "address blob length %zu", t->addr_len);
    atomic_store(&t->stop, false);
    cr_assert_eq(pthread_create(&t->thread, NULL, target_loop, t), 0);
    t->running = true;
    return true;
}

static bool target_start(const tq_transport_ops *ops, target_t *t)
{
    return target_start_ex(ops, t, false);
}

static void target_stop(target_t *t)
{
    if (t->running) {
        atomic_store(&t->stop, true);
        pthread_join(t->thread, NULL);
        t->running = false;
    }
}

static void target_destroy(target_t *t)
{
    target_stop(t);
    t->ops->mem_deregister(t->tr, t->mem);
    if (t->pool_malloced)
        free(t->pool);
    free(t->addr_blob);
    free(t->region_blob);
    t->ops->fini(t->tr);
}

static void initiator_connect(target_t *t, initiator_t *in)
{
    memset(in, 0, sizeof(*in));
    in->ops = t->ops;
    EXPECT_RC(in->ops->init(NULL, &in->tr), TQ_OK);
    EXPECT_RC(in->ops->ep_connect(in->tr, t->addr_blob, t->addr_len, &in->ep), TQ_OK);
    EXPECT_RC(in->ops->region_unpack(in->tr, in->ep, t->region_blob, t->region_len, &in->region),
              TQ_OK);
}

static void initiator_close(initiator_t *in)
{
    in->ops->region_release(in->tr, in->region);
    in->ops->ep_close(in->tr, in->ep);
    in->ops->fini(in->tr);
}

static int xfer(initiator_t *in, tq_rma_dir_t dir, void *local, uint64_t off, size_t len)
{
    tq_rma_iov_t iov = {.local = local, .remote_offset = off, .length = len};
    int rc = in->ops->post(in->tr, in->ep, in->region, dir, &iov, 1);
    if (rc != TQ_OK)
        return rc;
    return in->ops->flush(in->tr, in->ep, 10000);
}

/* Put a pattern, check it landed in the pool, get it back into a clean buffer. */
static void round_trip(target_t *t, initiator_t *in, uint8_t *src, uint8_t *dst, uint64_t off,
                       size_t len, unsigned seed)
{
    fill(src, len, seed);
    EXPECT_RC(xfer(in, TQ_RMA_PUT, src, off, len), TQ_OK);
    EXPECT_SAME(t->pool + off, src, len, "pool after put");
    memset(dst, 0, len);
    EXPECT_RC(xfer(in, TQ_RMA_GET, dst, off, len), TQ_OK);
    EXPECT_SAME(dst, src, len, "buffer after get");
}

/* ---- the checks ----------------------------------------------------------- */

typedef void check_fn(const tq_transport_ops *ops);

static void check_round_trip(const tq_transport_ops *ops)
{
    static const size_t sizes[] = {1, 2, 4096, MiB, 16 * MiB, 64 * MiB};
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t *src = malloc(64 * MiB), *dst = malloc(64 * MiB);
    cr_assert(src != NULL && dst != NULL);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        round_trip(&t, &in, src, dst, 0, sizes[i], (unsigned)i + 1);
    /* Again at the far end of the pool. */
    round_trip(&t, &in, src, dst, POOL_LEN - 16 * MiB, 16 * MiB, 9);
    free(src);
    free(dst);
    initiator_close(&in);
    target_destroy(&t);
}

/* A pool the target allocated itself and registered (mem_register). */
static void check_registered_pool(const tq_transport_ops *ops)
{
    static const size_t sizes[] = {1, 4099, 65536, MiB + 1, 16 * MiB};
    target_t t;
    initiator_t in;
    if (!target_start_ex(ops, &t, true))
        return;
    initiator_connect(&t, &in);
    uint8_t *src = malloc(16 * MiB + 8), *dst = malloc(16 * MiB + 8);
    cr_assert(src != NULL && dst != NULL);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        round_trip(&t, &in, src + i % 8, dst + 7 - i % 8, 3 * i + 17 * MiB, sizes[i],
                   (unsigned)i + 60);
    free(src);
    free(dst);
    initiator_close(&in);
    target_destroy(&t);
}

static void check_unaligned(const tq_transport_ops *ops)
{
    static const size_t lens[] = {1, 3, 17, 4095, 4097, 65537, 300007};
    static const uint64_t offs[] = {1, 7, 4093, 65539, 3 * MiB + 5};
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t *src = malloc(MiB), *dst = malloc(MiB);
    cr_assert(src != NULL && dst != NULL);
    unsigned seed = 1;
    for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
        for (size_t o = 0; o < sizeof(offs) / sizeof(offs[0]); o++) {
            size_t mis = (l + o) % 8;
            round_trip(&t, &in, src + mis, dst + (7 - mis), offs[o], lens[l], seed++);
        }
    free(src);
    free(dst);
    initiator_close(&in);
    target_destroy(&t);
}

/* 4096 small operations in one post: runs contiguous on both sides (which a
 * transport may coalesce), gaps on the remote side, gaps on the local side. */
static void check_many_small(const tq_transport_ops *ops)
{
    enum { N = 4096 };
    const uint64_t base = 5 * MiB + 3;
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    tq_rma_iov_t *iov = calloc(N, sizeof(*iov));
    uint8_t *src = malloc(N * 64), *dst = calloc(N, 64);
    cr_assert(iov != NULL && src != NULL && dst != NULL);
    fill(src, N * 64, 77);

    uint64_t roff = base;
    size_t loff = 0;
    for (size_t i = 0; i < N; i++) {
        size_t len = 1 + (i * 7) % 23;
        if (i % 2 == 1)
            roff += 1 + i % 5; /* remote gap: not coalescible */
        if (i % 16 == 14)
            loff += 3;         /* local gap with the remote side contiguous */
        if (i % 64 == 63)
            len = 0;           /* skipped */
        iov[i] = (tq_rma_iov_t){.local = src + loff, .remote_offset = roff, .length = len};
        roff += len;
        loff += len;
    }
    cr_assert_lt(loff, (size_t)N * 64);
    uint64_t span = roff - base;

    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, iov, N), TQ_OK);
    EXPECT_RC(ops->flush(in.tr, in.ep, 10000), TQ_OK);

    /* Build the expected pool image: pattern where written, zero in gaps. */
    uint8_t *want = calloc(1, span);
    cr_assert_not_null(want);
    for (size_t i = 0; i < N; i++)
        memcpy(want + (iov[i].remote_offset - base), iov[i].local, iov[i].length);
    EXPECT_SAME(t.pool + base, want, span, "pool after 4096 puts");
    cr_assert(all_zero(t.pool + base - 3, 3), "bytes before the first op were written");
    cr_assert(all_zero(t.pool + roff, 64), "bytes after the last op were written");

    /* Read them back through the same iovs into a clean buffer. */
    for (size_t i = 0; i < N; i++)
        iov[i].local = dst + ((uint8_t *)iov[i].local - src);
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_GET, iov, N), TQ_OK);
    EXPECT_RC(ops->flush(in.tr, in.ep, 10000), TQ_OK);
    for (size_t i = 0; i < N; i++) {
        size_t at = (size_t)((uint8_t *)iov[i].local - dst);
        EXPECT_SAME(iov[i].local, src + at, iov[i].length, "buffer after 4096 gets");
    }
    free(want);
    free(iov);
    free(src);
    free(dst);
    initiator_close(&in);
    target_destroy(&t);
}

static void check_out_of_range(const tq_transport_ops *ops)
{
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t *buf = malloc(8192);
    cr_assert_not_null(buf);
    fill(buf, 8192, 3);
    const uint64_t L = t.pool_len;
    const struct { uint64_t off; size_t len; } bad[] = {
        {L, 1},              /* starts at the end */
        {L - 1, 2},          /* crosses the end */
        {L + 4096, 16},      /* beyond */
        {UINT64_MAX, 2},     /* offset + length overflows */
        {UINT64_MAX - 1, 8},
        {1, SIZE_MAX},       /* huge length */
        {0, L + 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* The length never reaches buf's end: the transport must refuse first. */
        tq_rma_iov_t iov[2] = {
            {.local = buf, .remote_offset = 4096, .length = 4096}, /* valid */
            {.local = buf, .remote_offset = bad[i].off, .length = bad[i].len},
        };
        for (int dir = 0; dir < 2; dir++) {
            int rc = ops->post(in.tr, in.ep, in.region, dir ? TQ_RMA_GET : TQ_RMA_PUT, iov, 2);
            cr_assert_eq(rc, TQ_ERR_INVALID,
                         "case %zu (offset %llu, length %zu, %s): got %d (%s), expected %d", i,
                         (unsigned long long)bad[i].off, bad[i].len, dir ? "get" : "put", rc,
                         status_name(rc), TQ_ERR_INVALID);
        }
    }
    /* A NULL local buffer with a length. */
    tq_rma_iov_t nul = {.local = NULL, .remote_offset = 0, .length = 8};
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, &nul, 1), TQ_ERR_INVALID);
    EXPECT_RC(ops->flush(in.tr, in.ep, 10000), TQ_OK);
    cr_assert(all_zero(t.pool + 4096, 4096), "a refused post wrote to the pool");

    /* Edges that are in range still work, and zero-length iovs anywhere are no-ops. */
    tq_rma_iov_t edge[2] = {
        {.local = buf, .remote_offset = L - 5, .length = 5},
        {.local = buf, .remote_offset = L, .length = 0},
    };
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, edge, 2), TQ_OK);
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, edge, 0), TQ_OK);
    EXPECT_RC(ops->flush(in.tr, in.ep, 10000), TQ_OK);
    EXPECT_SAME(t.pool + L - 5, buf, 5, "pool tail");
    free(buf);
    initiator_close(&in);
    target_destroy(&t);
}

static void check_bad_blobs(const tq_transport_ops *ops)
{
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    size_t n = t.region_len;
    uint8_t *blob = malloc(n + 64);
    cr_assert_not_null(blob);
    tq_transport_region *r = NULL;

    EXPECT_RC(ops->region_unpack(in.tr, in.ep, NULL, n, &r), TQ_ERR_INVALID);
    /* Every truncation, and the blob with extra bytes. */
    for (size_t len = 0; len < n; len++) {
        memcpy(blob, t.region_blob, len);
        int rc = ops->region_unpack(in.tr, in.ep, blob, len, &r);
        cr_assert_eq(rc, TQ_ERR_INVALID, "region blob cut to %zu of %zu bytes: got %d (%s)", len,
                     n, rc, status_name(rc));
    }
    memcpy(blob, t.region_blob, n);
    blob[n] = 0;
    EXPECT_RC(ops->region_unpack(in.tr, in.ep, blob, n + 1, &r), TQ_ERR_INVALID);
    /* Every single flipped byte. */
    for (size_t i = 0; i < n; i++) {
        memcpy(blob, t.region_blob, n);
        blob[i] ^= 0x5A;
        int rc = ops->region_unpack(in.tr, in.ep, blob, n, &r);
        cr_assert_eq(rc, TQ_ERR_INVALID, "region blob with byte %zu of %zu flipped: got %d (%s)",
                     i, n, rc, status_name(rc));
    }
    /* Noise of the right length. */
    srand(12345);
    for (int k = 0; k < 64; k++) {
        for (size_t i = 0; i < n; i++)
            blob[i] = (uint8_t)rand();
        EXPECT_RC(ops->region_unpack(in.tr, in.ep, blob, n, &r), TQ_ERR_INVALID);
    }
    memset(blob, 0xFF, n);
    EXPECT_RC(ops->region_unpack(in.tr, in.ep, blob, n, &r), TQ_ERR_INVALID);
    cr_assert_null(r, "region_p written on failure");
    free(blob);

    /* The address blob is checked the same way. */
    size_t an = t.addr_len;
    uint8_t *ab = malloc(an + 1);
    cr_assert_not_null(ab);
    tq_transport_ep *ep = NULL;
    for (size_t len = 0; len < an; len += (len < 64 ? 1 : 37)) {
        memcpy(ab, t.addr_blob, len);
        int rc = ops->ep_connect(in.tr, ab, len, &ep);
        cr_assert_eq(rc, TQ_ERR_INVALID, "address blob cut to %zu of %zu bytes: got %d (%s)",
                     len, an, rc, status_name(rc));
    }
    for (size_t i = 0; i < an; i += (i < 64 ? 1 : 29)) {
        memcpy(ab, t.addr_blob, an);
        ab[i] ^= 0xA5;
        int rc = ops->ep_connect(in.tr, ab, an, &ep);
        cr_assert_eq(rc, TQ_ERR_INVALID, "address blob with byte %zu of %zu flipped: got %d (%s)",
                     i, an, rc, status_name(rc));
    }
    cr_assert_null(ep, "ep_p written on failure");
    free(ab);

    /* The genuine blob still works after all that. */
    uint8_t src[100], dst[100];
    round_trip(&t, &in, src, dst, 12345, sizeof(src), 4);
    initiator_close(&in);
    target_destroy(&t);
}

typedef struct {
    target_t *t;
    uint64_t base;
    unsigned seed;
    int rounds;
    int failed_round;  /* -1: all good */
    char what[160];
} worker_arg_t;

/* Criterion asserts belong to the main thread: record, do not assert. */
static void *initiator_thread(void *arg)
{
    worker_arg_t *w = arg;
    const tq_transport_ops *ops = w->t->ops;
    initiator_t in = {.ops = ops};
    const size_t len = 256 * 1024 + 13;
    uint8_t *src = malloc(len), *dst = malloc(len);
    uint64_t end = tq_test_now_ms() + 20000;
    int rc;

    w->failed_round = -1;
    if (src == NULL || dst == NULL) {
        w->failed_round = 0;
        snprintf(w->what, sizeof(w->what), "malloc");
        goto out;
    }
    if ((rc = ops->init(NULL, &in.tr)) != TQ_OK ||
        (rc = ops->ep_connect(in.tr, w->t->addr_blob, w->t->addr_len, &in.ep)) != TQ_OK ||
        (rc = ops->region_unpack(in.tr, in.ep, w->t->region_blob, w->t->region_len,
                                 &in.region)) != TQ_OK) {
        w->failed_round = 0;
        snprintf(w->what, sizeof(w->what), "setup: %d (%s)", rc, status_name(rc));
        goto out_tr;
    }
    for (int r = 0; r < w->rounds && tq_test_now_ms() < end; r++) {
        size_t n = 1 + (size_t)r * 9973 % len;
        fill(src, n, w->seed + (unsigned)r);
        if ((rc = xfer(&in, TQ_RMA_PUT, src, w->base, n)) != TQ_OK ||
            (memset(dst, 0, n), rc = xfer(&in, TQ_RMA_GET, dst, w->base, n)) != TQ_OK) {
            w->failed_round = r;
            snprintf(w->what, sizeof(w->what), "transfer of %zu bytes: %d (%s)", n, rc,
                     status_name(rc));
            break;
        }
        long d = first_diff(dst, src, n);
        if (d >= 0 || first_diff(w->t->pool + w->base, src, n) >= 0) {
            w->failed_round = r;
            snprintf(w->what, sizeof(w->what), "%zu bytes differ at %ld", n, d);
            break;
        }
    }
out_tr:
    if (in.region != NULL)
        ops->region_release(in.tr, in.region);
    if (in.ep != NULL)
        ops->ep_close(in.tr, in.ep);
    if (in.tr != NULL)
        ops->fini(in.tr);
out:
    free(src);
    free(dst);
    return NULL;
}

/* Four initiators, each its own instance, at one target at once. */
static void check_several_initiators(const tq_transport_ops *ops)
{
    enum { W = 4 };
    target_t t;
    if (!target_start(ops, &t))
        return;
    worker_arg_t w[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        w[i] = (worker_arg_t){.t = &t, .base = (uint64_t)(1 + 8 * i) * MiB + (uint64_t)i,
                              .seed = 100u * (unsigned)(i + 1), .rounds = 30};
        cr_assert_eq(pthread_create(&th[i], NULL, initiator_thread, &w[i]), 0);
    }
    for (int i = 0; i < W; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < W; i++)
        cr_assert_eq(w[i].failed_round, -1, "initiator %d failed in round %d: %s", i,
                     w[i].failed_round, w[i].what);
    target_destroy(&t);
}

/* Two endpoints of one instance to the same peer: both work, interleaved,
 * and closing one leaves the other working. */
static void check_shared_peer(const tq_transport_ops *ops)
{
    target_t t;
    initiator_t a, b;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &a);
    b = a;
    EXPECT_RC(ops->ep_connect(a.tr, t.addr_blob, t.addr_len, &b.ep), TQ_OK);
    EXPECT_RC(ops->region_unpack(a.tr, b.ep, t.region_blob, t.region_len, &b.region), TQ_OK);
    /* A region unpacked for one ep is not for another. */
    uint8_t x = 1;
    tq_rma_iov_t one = {.local = &x, .remote_offset = 0, .length = 1};
    EXPECT_RC(ops->post(a.tr, b.ep, a.region, TQ_RMA_PUT, &one, 1), TQ_ERR_INVALID);

    const size_t len = 300001;
    uint8_t *src = malloc(2 * len), *dst = calloc(2, len);
    cr_assert(src != NULL && dst != NULL);
    fill(src, 2 * len, 71);
    tq_rma_iov_t pa = {.local = src, .remote_offset = 2 * MiB, .length = len};
    tq_rma_iov_t pb = {.local = src + len, .remote_offset = 3 * MiB + 1, .length = len};
    EXPECT_RC(ops->post(a.tr, a.ep, a.region, TQ_RMA_PUT, &pa, 1), TQ_OK);
    EXPECT_RC(ops->post(b.tr, b.ep, b.region, TQ_RMA_PUT, &pb, 1), TQ_OK);
    EXPECT_RC(ops->flush(b.tr, b.ep, 10000), TQ_OK);
    EXPECT_RC(ops->flush(a.tr, a.ep, 10000), TQ_OK);
    EXPECT_SAME(t.pool + 2 * MiB, src, len, "pool after a put through the first ep");
    EXPECT_SAME(t.pool + 3 * MiB + 1, src + len, len, "pool after a put through the second ep");
    /* Each reads back what the other wrote. */
    EXPECT_RC(xfer(&b, TQ_RMA_GET, dst, 2 * MiB, len), TQ_OK);
    EXPECT_RC(xfer(&a, TQ_RMA_GET, dst + len, 3 * MiB + 1, len), TQ_OK);
    EXPECT_SAME(dst, src, 2 * len, "buffer after gets crossing the eps");

    ops->region_release(a.tr, a.region);
    ops->ep_close(a.tr, a.ep);
    round_trip(&t, &b, src, dst, 4 * MiB + 3, len, 72);
    free(src);
    free(dst);
    initiator_close(&b);
    target_destroy(&t);
}

/* Buffers above the registration threshold posted again (a cache hit), and
 * again after the memory behind them was unmapped and mapped anew. */
static void check_reg_cache(const tq_transport_ops *ops)
{
    const size_t big = 40 * MiB; /* above glibc's largest mmap threshold: mmap'd */
    const size_t len = MiB + 4321;
    const size_t at = 12345;
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t *check = malloc(len);
    cr_assert_not_null(check);

    uint8_t *buf = malloc(big);
    cr_assert_not_null(buf);
    for (unsigned k = 0; k < 2; k++) { /* second time: the cached registration */
        fill(buf + at, len, 10 + k);
        EXPECT_RC(xfer(&in, TQ_RMA_PUT, buf + at, 7 * MiB, len), TQ_OK);
        EXPECT_SAME(t.pool + 7 * MiB, buf + at, len, "pool after put of a large buffer");
        memset(buf + at, 0, len);
        EXPECT_RC(xfer(&in, TQ_RMA_GET, buf + at, 7 * MiB, len), TQ_OK);
        EXPECT_SAME(buf + at, t.pool + 7 * MiB, len, "large buffer after get");
    }
    free(buf);
    buf = malloc(big); /* often the same address */
    cr_assert_not_null(buf);
    fill(buf + at, len, 20);
    EXPECT_RC(xfer(&in, TQ_RMA_PUT, buf + at, 7 * MiB, len), TQ_OK);
    EXPECT_SAME(t.pool + 7 * MiB, buf + at, len, "pool after put from a re-malloc'd buffer");
    fill(t.pool + 7 * MiB, len, 21);
    EXPECT_RC(xfer(&in, TQ_RMA_GET, buf + at, 7 * MiB, len), TQ_OK);
    EXPECT_SAME(buf + at, t.pool + 7 * MiB, len, "re-malloc'd buffer after get");
    free(buf);

    /* The same with mmap directly, asking for the old address back. */
    const size_t mlen = 4 * MiB;
    uint8_t *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    fill(m + at, len, 30);
    EXPECT_RC(xfer(&in, TQ_RMA_PUT, m + at, 11 * MiB, len), TQ_OK);
    EXPECT_SAME(t.pool + 11 * MiB, m + at, len, "pool after put from mmap");
    cr_assert_eq(munmap(m, mlen), 0);
    uint8_t *m2 = mmap(m, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m2, MAP_FAILED);
    for (unsigned k = 0; k < 2; k++) {
        fill(m2 + at, len, 31 + k);
        EXPECT_RC(xfer(&in, TQ_RMA_PUT, m2 + at, 11 * MiB, len), TQ_OK);
        EXPECT_SAME(t.pool + 11 * MiB, m2 + at, len, "pool after put from re-mmap'd memory");
        fill(t.pool + 11 * MiB, len, 40 + k);
        memcpy(check, t.pool + 11 * MiB, len);
        EXPECT_RC(xfer(&in, TQ_RMA_GET, m2 + at, 11 * MiB, len), TQ_OK);
        EXPECT_SAME(m2 + at, check, len, "re-mmap'd memory after get");
    }
    cr_assert_eq(munmap(m2, mlen), 0);

    /* Memory the initiator registered itself is usable as the local side too. */
    uint8_t *reg = malloc(2 * MiB);
    tq_transport_mem *mem = NULL;
    cr_assert_not_null(reg);
    EXPECT_RC(ops->mem_register(in.tr, reg, 2 * MiB, &mem), TQ_OK);
    round_trip(&t, &in, reg + 1, reg + MiB + 3, 13 * MiB, 100000, 50);
    ops->mem_deregister(in.tr, mem);
    free(reg);
    free(check);
    initiator_close(&in);
    target_destroy(&t);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void bandwidth(const char *name, initiator_t *in, tq_rma_dir_t dir, uint8_t *buf,
                      size_t len)
{
    uint64_t start = now_ns(), bytes = 0;
    int iters = 0;
    /* Bounded by time and count. */
    while (iters < 20000 && now_ns() - start < 200000000u) {
        EXPECT_RC(xfer(in, dir, buf, 0, len), TQ_OK);
        bytes += len;
        iters++;
    }
    double s = (double)(now_ns() - start) / 1e9;
    fprintf(stderr, "bandwidth %s %s %5zu KiB x %5d: %7.2f GB/s\n", name,
            dir == TQ_RMA_PUT ? "put" : "get", len / 1024, iters, (double)bytes / s / 1e9);
}

static void check_bandwidth(const tq_transport_ops *ops)
{
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t *buf = malloc(16 * MiB);
    cr_assert_not_null(buf);
    fill(buf, 16 * MiB, 5);
    char name[64];
    snprintf(name, sizeof(name), "%s[%s]", ops->name, flavour);
    bandwidth(name, &in, TQ_RMA_PUT, buf, MiB);
    bandwidth(name, &in, TQ_RMA_GET, buf, MiB);
    bandwidth(name, &in, TQ_RMA_PUT, buf, 16 * MiB);
    bandwidth(name, &in, TQ_RMA_GET, buf, 16 * MiB);
    free(buf);
    initiator_close(&in);
    target_destroy(&t);
}

/* A target that goes away: operations fail, nothing hangs. */
static void check_peer_gone(const tq_transport_ops *ops)
{
    target_t t;
    initiator_t in;
    if (!target_start(ops, &t))
        return;
    initiator_connect(&t, &in);
    uint8_t buf[4096], back[4096];
    round_trip(&t, &in, buf, back, 0, 1000, 6); /* connected for real */
    target_destroy(&t);

    uint64_t start = tq_test_now_ms();
    int rc = TQ_OK;
    /* The loss may show on a post or a flush; allow a few attempts for it to be noticed. */
    for (int i = 0; i < 50 && rc == TQ_OK && tq_test_now_ms() - start < 8000; i++)
        rc = xfer(&in, TQ_RMA_PUT, buf, 0, sizeof(buf));
    cr_assert(rc == TQ_ERR_CONNECTION || rc == TQ_ERR_TIMEOUT,
              "after the peer went away: got %d (%s), expected %d or %d", rc, status_name(rc),
              TQ_ERR_CONNECTION, TQ_ERR_TIMEOUT);
    /* Failed stays failed. */
    tq_rma_iov_t iov = {.local = buf, .remote_offset = 0, .length = 8};
    EXPECT_RC(in.ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, &iov, 1), TQ_ERR_CONNECTION);
    cr_assert_lt(tq_test_now_ms() - start, (uint64_t)10000, "noticing the loss took %llu ms",
                 (unsigned long long)(tq_test_now_ms() - start));
    initiator_close(&in);
}

/* A target in a child process, handing its blobs over a pipe: u32 status,
 * then length-prefixed address and region blobs. It progresses until killed. */
static bool write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k <= 0)
            return false;
        b += k;
        n -= (size_t)k;
    }
    return true;
}

static bool read_all(int fd, void *p, size_t n, uint64_t deadline)
{
    uint8_t *b = p;
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uint64_t now = tq_test_now_ms();
        if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0)
            return false;
        ssize_t k = read(fd, b, n);
        if (k <= 0)
            return false;
        b += k;
        n -= (size_t)k;
    }
    return true;
}

static void child_target(const tq_transport_ops *ops, int fd, bool use_register, size_t pool_len)
{
    tq_transport *tr = NULL;
    tq_transport_mem *mem = NULL;
    void *pool = NULL, *ab = NULL, *rb = NULL;
    size_t al = 0, rl = 0;
    uint32_t status = (uint32_t)ops->init(NULL, &tr);
    if (status == TQ_OK) {
        status = use_register ? (uint32_t)TQ_ERR_UNSUPPORTED
                              : (uint32_t)ops->mem_alloc(tr, pool_len, &pool, &mem);
        if ((int)status == TQ_ERR_UNSUPPORTED && (pool = malloc(pool_len)) != NULL)
            status = (uint32_t)ops->mem_register(tr, pool, pool_len, &mem);
    }
    if (status == TQ_OK)
        status = (uint32_t)ops->mem_pack(tr, mem, &rb, &rl);
    if (status == TQ_OK)
        status = (uint32_t)ops->address(tr, &ab, &al);
    uint64_t a64 = al, r64 = rl;
    if (!write_all(fd, &status, sizeof(status)) || status != TQ_OK ||
        !write_all(fd, &a64, 8) || !write_all(fd, ab, al) || !write_all(fd, &r64, 8) ||
        !write_all(fd, rb, rl))
        _exit(1);
    uint64_t end = tq_test_now_ms() + 20000; /* the parent kills us long before */
    while (tq_test_now_ms() < end)
        ops->progress(tr, 10);
    _exit(0);
}

/* Fork a target process with a pool of pool_len bytes and connect to it.
 * false: the transport is unsupported here (the child is reaped). */
static bool child_connect(const tq_transport_ops *ops, bool use_register, size_t pool_len,
                          pid_t *child_p, initiator_t *in, uint8_t **ab_p, uint8_t **rb_p)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0) {
        close(fds[0]);
        child_target(ops, fds[1], use_register, pool_len);
    }
    close(fds[1]);
    uint64_t deadline = tq_test_now_ms() + 10000;
    uint32_t status = 0;
    uint64_t al = 0, rl = 0;
    cr_assert(read_all(fds[0], &status, sizeof(status), deadline), "no word from the child");
    if ((int)status == TQ_ERR_UNSUPPORTED) {
        waitpid(child, NULL, 0);
        close(fds[0]);
        note_unsupported(ops);
        return false;
    }
    EXPECT_RC((int)status, TQ_OK);
    transports_up++;
    cr_assert(read_all(fds[0], &al, 8, deadline) && al > 0 && al < 65536, "address length %llu",
              (unsigned long long)al);
    uint8_t *ab = malloc(al);
    cr_assert(ab != NULL && read_all(fds[0], ab, al, deadline));
    cr_assert(read_all(fds[0], &rl, 8, deadline) && rl > 0 && rl < 65536, "region length %llu",
              (unsigned long long)rl);
    uint8_t *rb = malloc(rl);
    cr_assert(rb != NULL && read_all(fds[0], rb, rl, deadline));
    close(fds[0]);

    *in = (initiator_t){.ops = ops};
    EXPECT_RC(ops->init(NULL, &in->tr), TQ_OK);
    EXPECT_RC(ops->ep_connect(in->tr, ab, al, &in->ep), TQ_OK);
    EXPECT_RC(ops->region_unpack(in->tr, in->ep, rb, rl, &in->region), TQ_OK);
    *child_p = child;
    *ab_p = ab;
    *rb_p = rb;
    return true;
}

/* A target process that dies: the initiator's operations fail, nothing hangs. */
static void peer_process_dies(const tq_transport_ops *ops, bool use_register)
{
    initiator_t in;
    pid_t child;
    uint8_t *ab, *rb;
    if (!child_connect(ops, use_register, MiB, &child, &in, &ab, &rb))
        return;
    uint8_t src[4096], dst[4096];
    fill(src, sizeof(src), 8);
    EXPECT_RC(xfer(&in, TQ_RMA_PUT, src, 100, sizeof(src)), TQ_OK);
    memset(dst, 0, sizeof(dst));
    EXPECT_RC(xfer(&in, TQ_RMA_GET, dst, 100, sizeof(dst)), TQ_OK);
    EXPECT_SAME(dst, src, sizeof(src), "buffer read back from the child");

    cr_assert_eq(kill(child, SIGKILL), 0);
    cr_assert_eq(waitpid(child, NULL, 0), child);
    uint64_t start = tq_test_now_ms();
    int rc = TQ_OK;
    for (int i = 0; i < 50 && rc == TQ_OK && tq_test_now_ms() - start < 8000; i++)
        rc = xfer(&in, i % 2 ? TQ_RMA_GET : TQ_RMA_PUT, dst, 100, sizeof(dst));
    cr_assert(rc == TQ_ERR_CONNECTION || rc == TQ_ERR_TIMEOUT,
              "after the peer process died: got %d (%s), expected %d or %d", rc,
              status_name(rc), TQ_ERR_CONNECTION, TQ_ERR_TIMEOUT);
    tq_rma_iov_t iov = {.local = dst, .remote_offset = 0, .length = 8};
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_GET, &iov, 1), TQ_ERR_CONNECTION);
    cr_assert_lt(tq_test_now_ms() - start, (uint64_t)10000, "noticing the death took %llu ms",
                 (unsigned long long)(tq_test_now_ms() - start));
    initiator_close(&in);
    free(ab);
    free(rb);
}

static void check_peer_process_dies(const tq_transport_ops *ops)
{
    peer_process_dies(ops, false);
    peer_process_dies(ops, true);
}

typedef struct {
    pid_t pid;
    int after_ms;
    uint64_t killed_at; /* tq_test_now_ms() of the kill */
} killer_t;

static void *killer_thread(void *arg)
{
    killer_t *k = arg;
    (void)poll(NULL, 0, k->after_ms);
    k->killed_at = tq_test_now_ms();
    kill(k->pid, SIGKILL);
    return NULL;
}

/* A target process killed while a batch of seconds' worth of puts is in
 * flight: post or flush fails within the flush timeout, nothing hangs. The
 * kill comes from another thread 100 ms into the post, or, where the
 * provider cannot survive that, between two posts of the batch. */
static void check_peer_dies_mid_batch(const tq_transport_ops *ops)
{
    const size_t chunk = 16 * MiB, pool = 4 * chunk;
    const int flush_ms = 5000;
    initiator_t in;
    pid_t child;
    uint8_t *ab, *rb;
    if (!child_connect(ops, false, pool, &child, &in, &ab, &rb))
        return;
    uint8_t *src = malloc(chunk), *back = malloc(chunk);
    cr_assert(src != NULL && back != NULL);
    fill(src, chunk, 90);
    /* Connected for real, and how fast: size the batch to take ~3 s. */
    uint64_t t0 = now_ns();
    EXPECT_RC(xfer(&in, TQ_RMA_PUT, src, chunk, chunk), TQ_OK);
    double rate = (double)chunk / ((double)(now_ns() - t0 + 1) / 1e9);
    EXPECT_RC(xfer(&in, TQ_RMA_GET, back, chunk, chunk), TQ_OK);
    EXPECT_SAME(back, src, chunk, "buffer read back from the child");
    size_t n = (size_t)(rate * 3.0 / (double)chunk);
    n = n < 64 ? 64 : n > 2048 ? 2048 : n; /* 1 to 32 GiB */
    tq_rma_iov_t *iov = calloc(n, sizeof(*iov));
    cr_assert_not_null(iov);
    for (size_t i = 0; i < n; i++) /* remote offsets jump: nothing coalesces */
        iov[i] = (tq_rma_iov_t){.local = src, .remote_offset = (i % 4) * chunk, .length = chunk};

    killer_t k = {.pid = child, .after_ms = 100};
    pthread_t th;
    int prc;
    uint64_t start = tq_test_now_ms();
    if (flavour_no_kill_in_post == NULL) {
        cr_assert_eq(pthread_create(&th, NULL, killer_thread, &k), 0);
        prc = ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, iov, n);
    } else {
        cr_log_info("%s: killing the peer between posts only: %s", ops->name,
                    flavour_no_kill_in_post);
        EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, iov, n / 2), TQ_OK);
        k.after_ms = 0;
        killer_thread(&k);
        cr_assert_eq(waitpid(child, NULL, 0), child);
        prc = ops->post(in.tr, in.ep, in.region, TQ_RMA_PUT, iov + n / 2, n - n / 2);
    }
    uint64_t flush_start = tq_test_now_ms();
    int frc = ops->flush(in.tr, in.ep, flush_ms);
    uint64_t end = tq_test_now_ms();
    if (flavour_no_kill_in_post == NULL) {
        pthread_join(th, NULL);
        cr_assert_eq(waitpid(child, NULL, 0), child);
    }
    cr_log_info("%s: %zu x 16 MiB puts; killed after %llu ms; post %s, flush %s after %llu ms",
                ops->name, n, (unsigned long long)(k.killed_at - start), status_name(prc),
                status_name(frc), (unsigned long long)(end - flush_start));
    cr_assert(k.killed_at <= end, "the batch of %zu x 16 MiB finished in %llu ms, before the kill",
              n, (unsigned long long)(end - start));
    cr_assert(prc == TQ_OK || prc == TQ_ERR_CONNECTION || prc == TQ_ERR_TIMEOUT,
              "post: got %d (%s)", prc, status_name(prc));
    cr_assert(frc == TQ_ERR_CONNECTION || frc == TQ_ERR_TIMEOUT,
              "flush after the peer died mid-batch: got %d (%s), expected %d or %d", frc,
              status_name(frc), TQ_ERR_CONNECTION, TQ_ERR_TIMEOUT);
    cr_assert_leq(end - flush_start, (uint64_t)flush_ms + 1000, "flush took %llu ms, timeout %d",
                  (unsigned long long)(end - flush_start), flush_ms);
    cr_assert_lt(end - k.killed_at, (uint64_t)flush_ms + 1000,
                 "noticing the death took %llu ms", (unsigned long long)(end - k.killed_at));
    tq_rma_iov_t one = {.local = back, .remote_offset = 0, .length = 8};
    EXPECT_RC(ops->post(in.tr, in.ep, in.region, TQ_RMA_GET, &one, 1), TQ_ERR_CONNECTION);
    /* The transport may hold src until the instance is gone. */
    initiator_close(&in);
    free(iov);
    free(src);
    free(back);
    free(ab);
    free(rb);
}

/* ---- running them --------------------------------------------------------- */

static void for_each_transport(check_fn *check)
{
    size_t n = 0;
    for (size_t i = 0; tq__transports[i] != NULL; i++) {
        if (flavour_only != NULL && strcmp(tq__transports[i]->name, flavour_only) != 0)
            continue;
        cr_log_info("transport %s (%s)", tq__transports[i]->name, flavour);
        check(tq__transports[i]);
        n++;
    }
    if (n == 0 && flavour_only != NULL)
        cr_skip_test("transport %s is not built in", flavour_only);
    if (n == 0)
        cr_log_warn("no transport built in: nothing to check");
    else if (transports_up == 0)
        cr_skip_test("%s", skip_why);
}

/*
 * Flavours: the environment the suite runs in, set before any transport
 * starts (each test is its own process, so it sticks to that test). Network
 * transports may only use the loopback interface here.
 */
static void keep_to_loopback(void)
{
    setenv("UCX_NET_DEVICES", "lo", 1);
    setenv("FI_TCP_IFACE", "lo", 1);
    setenv("FI_SOCKETS_IFACE", "lo", 1);
}

#define SHM_KILL_IN_POST_HANGS "libfabric 1.17's shm takes the peer's spinlock in fi_write, " \
                               "and a peer killed holding it blocks the writer for good"

/* Each transport's own choice of devices (and FI_PROVIDER if set). */
static void flavour_default(void)
{
    keep_to_loopback();
    const char *prov = getenv("FI_PROVIDER");
    if (prov != NULL && strstr(prov, "shm") != NULL)
        flavour_no_kill_in_post = SHM_KILL_IN_POST_HANGS;
}

/* Every transport over TCP sockets. */
static void flavour_tcp(void)
{
    keep_to_loopback();
    flavour = "tcp";
    setenv("UCX_TLS", "tcp", 1);
    setenv("FI_PROVIDER", "tcp", 1);
}

/* libfabric's shared memory provider. */
static void flavour_shm(void)
{
    keep_to_loopback();
    flavour = "shm";
    flavour_only = "ofi";
    flavour_no_kill_in_post = SHM_KILL_IN_POST_HANGS;
    setenv("FI_PROVIDER", "shm", 1);
}

/* libfabric's sockets provider, registering every local buffer and
 * splitting transfers at 1 MiB: the paths hardware providers take. */
static void flavour_sockets(void)
{
    keep_to_loopback();
    flavour = "sockets";
    flavour_only = "ofi";
    setenv("FI_PROVIDER", "sockets", 1);
    setenv("TQ_OFI_MR_LOCAL", "1", 1);
    setenv("TQ_OFI_MAX_XFER", "1M", 1);
}

/* rdma-core verbs on whatever RDMA device there is: soft-RoCE in CI
 * (ci/softroce.sh), skipped with the reason where there is none. */
static void flavour_verbs(void)
{
    flavour = "verbs";
    flavour_only = "verbs";
}

#define FLAVOUR_TEST(suite, setup, check)                                           \
    Test(suite, check, .init = setup, .timeout = TEST_TIMEOUT_S)                    \
    {                                                                               \
        for_each_transport(check_##check);                                          \
    }

#define CONFORMANCE(check)                                                          \
    FLAVOUR_TEST(transport, flavour_default, check)                                 \
    FLAVOUR_TEST(transport_tcp, flavour_tcp, check)                                 \
    FLAVOUR_TEST(transport_shm, flavour_shm, check)                                 \
    FLAVOUR_TEST(transport_sockets, flavour_sockets, check)                         \
    FLAVOUR_TEST(transport_verbs, flavour_verbs, check)

CONFORMANCE(round_trip)
CONFORMANCE(unaligned)
CONFORMANCE(registered_pool)
CONFORMANCE(many_small)
CONFORMANCE(out_of_range)
CONFORMANCE(bad_blobs)
CONFORMANCE(several_initiators)
CONFORMANCE(shared_peer)
CONFORMANCE(reg_cache)
CONFORMANCE(bandwidth)
CONFORMANCE(peer_process_dies)
CONFORMANCE(peer_dies_mid_batch)

/* In one process a peer's shared memory outlives it, so only a network path
 * can see it go away. */
FLAVOUR_TEST(transport_tcp, flavour_tcp, peer_gone)
FLAVOUR_TEST(transport_sockets, flavour_sockets, peer_gone)
FLAVOUR_TEST(transport_verbs, flavour_verbs, peer_gone)
