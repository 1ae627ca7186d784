/* log.h: level-checked log lines with time, level and component. */
#ifndef TQ_UTIL_LOG_H
#define TQ_UTIL_LOG_H

typedef enum { TQ_LOG_ERROR, TQ_LOG_WARN, TQ_LOG_INFO, TQ_LOG_DEBUG } tq_log_level_t;

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The level comes from $TQ_LOG on first use (default warn). */
tq_log_level_t tq__log_level(void);
/* Set the level by name before threads start (NULL: keep it). -1 and a
 * message in err for an unknown name. */
int tq__log_set_level(const char *name, char *err, size_t cap);
void tq__log(tq_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A line that can repeat as fast as an event loop spins (accept failing, a
 * flood of refused peers) is limited per call site: at most one a second gets
 * out, and the next one that does says how many were suppressed meanwhile.
 * Zero-initialised; safe from any thread.
 */
typedef struct {
    _Atomic uint64_t next_ms;    /* CLOCK_MONOTONIC: the next line may go out then */
    _Atomic unsigned suppressed; /* lines dropped since the last one out */
} tq_log_limit_t;

#define TQ_LOG_LIMIT_MS 1000

void tq__log_limited(tq_log_limit_t *limit, tq_log_level_t level, const char *component,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#ifndef TQ_LOG_COMPONENT
#define TQ_LOG_COMPONENT "tq"
#endif

#define tq_log_at(level, ...)                                                  \
    do {                                                                       \
        if ((level) <= tq__log_level())                                        \
            tq__log((level), TQ_LOG_COMPONENT, __VA_ARGS__);                   \
    } while (0)
#define tq_error(...) tq_log_at(TQ_LOG_ERROR, __VA_ARGS__)
#define tq_warn(...)  tq_log_at(TQ_LOG_WARN, __VA_ARGS__)
#define tq_info(...)  tq_log_at(TQ_LOG_INFO, __VA_ARGS__)
#define tq_debug(...) tq_log_at(TQ_LOG_DEBUG, __VA_ARGS__)

/* The same, limited to a line a second from this call site (see tq_log_limit_t). */
#define tq_log_limited_at(level, ...)                                          \
    do {                                                                       \
        static tq_log_limit_t tq_log_limit_;                                   \
        if ((level) <= tq__log_level())                                        \
            tq__log_limited(&tq_log_limit_, (level), TQ_LOG_COMPONENT,         \
                            __VA_ARGS__);                                      \
    } while (0)
#define tq_warn_limited(...) tq_log_limited_at(TQ_LOG_WARN, __VA_ARGS__)

#endif
