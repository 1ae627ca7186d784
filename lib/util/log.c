/* log.c: one log line per event on stderr. */
#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static tq_log_level_t log_level = TQ_LOG_WARN;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static const char *const log_names[] = {"error", "warn", "info", "debug"};

static int level_named(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, log_names[i]) == 0)
            return i;
    return -1;
}

static void log_init(void)
{
    const char *env = getenv("TQ_LOG");
    int level = env ? level_named(env) : -1;
    if (level >= 0)
        log_level = (tq_log_level_t)level;
    else if (env != NULL)
        tq__log(TQ_LOG_WARN, "tq", "TQ_LOG=%s is not error, warn, info or debug: using warn", env);
}

int tq__log_set_level(const char *name, char *err, size_t cap)
{
    pthread_once(&log_once, log_init);
    if (name == NULL)
        return 0;
    int level = level_named(name);
    if (level < 0) {
        snprintf(err, cap, "bad log level '%s': want error, warn, info or debug", name);
        return -1;
    }
    log_level = (tq_log_level_t)level;
    return 0;
}

tq_log_level_t tq__log_level(void)
{
    pthread_once(&log_once, log_init);
    return log_level;
}

/* One line: time, level, component, message, and suffix (or NULL). */
static void log_line(tq_log_level_t level, const char *component, const char *suffix,
                     const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, log_names[level], component);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* one write per line, so lines do not interleave */
    fprintf(stderr, "%s%s\n", line, suffix ? suffix : "");
}

void tq__log(tq_log_level_t level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, component, NULL, fmt, ap);
    va_end(ap);
}

void tq__log_limited(tq_log_limit_t *limit, tq_log_level_t level, const char *component,
                     const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t next = atomic_load(&limit->next_ms);
    /* one caller a second wins the exchange; the others only count */
    if (now < next ||
        !atomic_compare_exchange_strong(&limit->next_ms, &next, now + TQ_LOG_LIMIT_MS)) {
        atomic_fetch_add(&limit->suppressed, 1u);
        return;
    }
    unsigned suppressed = atomic_exchange(&limit->suppressed, 0u);
    char suffix[64] = "";
    if (suppressed > 0)
        snprintf(suffix, sizeof(suffix), " (%u similar line%s suppressed)", suppressed,
                 suppressed == 1 ? "" : "s");
    va_list ap;
    va_start(ap, fmt);
    log_line(level, component, suffix, fmt, ap);
    va_end(ap);
}
