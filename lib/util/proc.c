/* proc.c: process identity from /proc, and pidfds to watch same-node peers. */
#include "util/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Start time of a process in clock ticks since boot; 0 if unknown. */
static uint64_t proc_start(uint32_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: count from the last ')' */
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    p++;
    for (int field = 2; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void tq__proc_self(tq_proc_id_t *id_p)
{
    tq_proc_id_t id = {0};
    char text[64];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
    if (fd >= 0)
        close(fd);
    int nib = 0;
    for (ssize_t i = 0; i < n && nib < 32; i++) {
        int v = hex_value(text[i]);
        if (v < 0)
            continue; /* dashes, newline */
        id.boot_id[nib / 2] |= (uint8_t)(nib % 2 == 0 ? v << 4 : v);
        nib++;
    }
    id.pid = (uint32_t)getpid();
    id.start_time = proc_start(id.pid);
    if (nib != 32 || id.start_time == 0)
        id = (tq_proc_id_t){0}; /* any doubt: nobody is watched */
    *id_p = id;
}

int tq__proc_watch(const tq_proc_id_t *self, const tq_proc_id_t *peer)
{
#ifdef SYS_pidfd_open
    static const uint8_t zero[16];
    if (self->start_time == 0 || memcmp(self->boot_id, zero, 16) == 0 ||
        memcmp(peer->boot_id, self->boot_id, 16) != 0 || peer->pid == 0 ||
        peer->pid > INT32_MAX || peer->start_time == 0)
        return -1;
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)peer->pid, 0);
    if (pidfd < 0)
        return -1;
    /* checked after opening: the pidfd then pins this very process */
    if (proc_start(peer->pid) != peer->start_time) {
        close(pidfd);
        return -1;
    }
    return pidfd;
#else
    (void)self, (void)peer;
    return -1;
#endif
}

bool tq__proc_exited(int pidfd)
{
    struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
    return pidfd >= 0 && poll(&pfd, 1, 0) > 0;
}

bool tq__proc_alive(uint32_t pid, uint64_t start_time)
{
    if (pid == 0 || pid > INT32_MAX)
        return true;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return false;
    uint64_t now = proc_start(pid);
    return now == 0 || now == start_time; /* unreadable, or gone just now: doubt */
}

uint64_t tq__proc_pid_ns(void)
{
    char link[64];
    ssize_t n = readlink("/proc/self/ns/pid", link, sizeof(link) - 1);
    if (n <= 0)
        return 0;
    link[n] = '\0';
    const char *open_bracket = strchr(link, '[');
    return open_bracket != NULL ? strtoull(open_bracket + 1, NULL, 10) : 0;
}
