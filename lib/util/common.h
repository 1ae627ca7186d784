/* common.h: small helpers every module shares. */
#ifndef TQ_UTIL_COMMON_H
#define TQ_UTIL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define TQ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TQ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TQ_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))
#define tq_likely(x)   __builtin_expect(!!(x), 1)
#define tq_unlikely(x) __builtin_expect(!!(x), 0)

/* Internal symbols shared across modules but not exported. */
#define TQ_INTERNAL __attribute__((visibility("hidden")))

/* tq_fatal always aborts; tq_assert compiles out with NDEBUG. */
#define tq_fatal(...)                                                          \
    do {                                                                       \
        fprintf(stderr, "tqrdma fatal %s:%d: ", __FILE__, __LINE__);           \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        abort();                                                               \
    } while (0)

#ifdef NDEBUG
#define tq_assert(cond) ((void)0)
#else
#define tq_assert(cond)                                                        \
    do {                                                                       \
        if (tq_unlikely(!(cond)))                                              \
            tq_fatal("assertion failed: %s", #cond);                           \
    } while (0)
#endif

/* Monotonic clock in nanoseconds and milliseconds. */
uint64_t tq__now_ns(void);
static inline uint64_t tq__now_ms(void) { return tq__now_ns() / 1000000u; }

/* n bytes from the kernel's random source; -1 (errno set) if it has none. */
int tq__random_bytes(void *buf, size_t n);

/*
 * How long a thread that expects an answer soon polls before it sleeps, in ns:
 * $TQ_SPIN_US microseconds, default 50, 0 never polls. Waking from sleep costs
 * 20-30 us a side on virtual machines, more than a control round trip.
 */
uint64_t tq__spin_ns(void);
/* Override $TQ_SPIN_US (a daemon's --spin-us). */
void tq__spin_set_us(unsigned us);

/* Little-endian integers in byte buffers (blobs that cross the network). */
static inline void tq_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void tq_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t tq_get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t tq_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* FNV-1a: any single changed byte changes the sum. Start from TQ_FNV32_SEED. */
#define TQ_FNV32_SEED 2166136261u
static inline uint32_t tq_fnv1a32(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* qsort/bsearch order of int64_t. */
static inline int tq__cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static inline int tq__cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Parse "123", "64K", "256M", "2G" into bytes; -1 on a malformed size. */
int tq__parse_size(const char *text, uint64_t *bytes_p);

/* Split "host:port" (or "tcp://host:port"); host is copied into host (size cap). */
int tq__parse_hostport(const char *text, char *host, size_t cap, uint16_t *port_p);

#endif
