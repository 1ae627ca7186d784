/* common.c: clock, spin budget and argument parsing helpers. */
#include "util/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

uint64_t tq__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tq__random_bytes(void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = getrandom((char *)buf + got, n - got, 0);
        if (r < 0 && errno != EINTR)
            return -1;
        got += r > 0 ? (size_t)r : 0;
    }
    return 0;
}

#define TQ_SPIN_US_DEFAULT 50
#define TQ_SPIN_US_MAX     100000

static _Atomic int64_t spin_ns = -1; /* -1: read $TQ_SPIN_US on first use */

void tq__spin_set_us(unsigned us)
{
    spin_ns = (int64_t)TQ_MIN(us, (unsigned)TQ_SPIN_US_MAX) * 1000;
}

uint64_t tq__spin_ns(void)
{
    int64_t ns = spin_ns;
    if (ns < 0) {
        const char *env = getenv("TQ_SPIN_US");
        char *end = NULL;
        unsigned long us = env ? strtoul(env, &end, 10) : TQ_SPIN_US_DEFAULT;
        if (env != NULL && (end == env || *end != '\0'))
            us = TQ_SPIN_US_DEFAULT;
        ns = (int64_t)TQ_MIN(us, (unsigned long)TQ_SPIN_US_MAX) * 1000;
        spin_ns = ns;
    }
    return (uint64_t)ns;
}

int tq__parse_size(const char *text, uint64_t *bytes_p)
{
    if (text == NULL || !isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'B') /* accept "64MiB", "64MB" */
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *bytes_p = (uint64_t)v << shift;
    return 0;
}

int tq__parse_hostport(const char *text, char *host, size_t cap, uint16_t *port_p)
{
    if (text == NULL)
        return -1;
    if (strncmp(text, "tcp://", 6) == 0)
        text += 6;
    else if (strstr(text, "://") != NULL)
        return -1; /* a scheme we do not speak */
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= cap)
        return -1;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port > 65535)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    *port_p = (uint16_t)port;
    return 0;
}
