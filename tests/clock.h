/* clock.h: milliseconds for tests and their worker programs, which link no test helpers. */
#ifndef TQ_TEST_CLOCK_H
#define TQ_TEST_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t tq_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sleeps the whole time, signals or not. */
static inline void tq_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif
