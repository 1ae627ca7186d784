/* memlimit.c: how much memory a storage unit may take for its pool, by the kernel's account. */
#include "storage/memlimit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "util/common.h"

#define CAP_IPC_LOCK_BIT 14
/* cgroup v1 writes "no limit" as the largest page-aligned signed value. */
#define CGROUP_V1_UNLIMITED (1ull << 62)

/* The value of "key: N kB" in /proc/meminfo, in bytes; NONE if absent. */
static uint64_t meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (f == NULL)
        return TQ_MEMLIMIT_NONE;
    char line[256];
    uint64_t v = TQ_MEMLIMIT_NONE;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10) * 1024u;
            break;
        }
    fclose(f);
    return v;
}

/* One number in a cgroup file; NONE for "max", a missing file or junk. */
static uint64_t read_number(const char *dir, const char *name)
{
    char path[TQ_MEMLIMIT_DIR_MAX + 32], text[64] = "";
    snprintf(path, sizeof(path), "%.*s/%s", TQ_MEMLIMIT_DIR_MAX, dir, name);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return TQ_MEMLIMIT_NONE;
    bool ok = fgets(text, sizeof(text), f) != NULL;
    fclose(f);
    char *end = NULL;
    uint64_t v = ok ? strtoull(text, &end, 10) : 0;
    return ok && end != text ? v : TQ_MEMLIMIT_NONE;
}

/* "key N" of a cgroup's memory.stat; 0 if absent. */
static uint64_t read_stat(const char *dir, const char *key)
{
    char path[TQ_MEMLIMIT_DIR_MAX + 32], line[256];
    snprintf(path, sizeof(path), "%.*s/memory.stat", TQ_MEMLIMIT_DIR_MAX, dir);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The directory of this process's cgroup in the hierarchy mounted with
 * fstype (and super option opt, for v1), and that hierarchy's mount point. */
static bool cgroup_dir(bool v2, char *dir, size_t cap, char *mnt, size_t mcap)
{
    char line[1024], path[512] = "", root[512] = "";
    bool found = false;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1;
        bool match = v2 ? (strcmp(line, "0") == 0 && ctrls[0] == '\0') : false;
        for (char *save = NULL, *t = v2 ? NULL : strtok_r((char *)ctrls, ",", &save); t != NULL;
             t = strtok_r(NULL, ",", &save))
            match = match || strcmp(t, "memory") == 0;
        if (match) {
            snprintf(path, sizeof(path), "%s", c2 + 1);
            found = true;
        }
    }
    fclose(f);
    if (!found || (f = fopen("/proc/self/mountinfo", "re")) == NULL)
        return false;
    found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        /* id parent dev root mountpoint opts... - fstype source superopts */
        char *sep = strstr(line, " - ");
        char froot[512], fmnt[512], fstype[32], source[64], super[256] = "";
        if (sep == NULL || sscanf(line, "%*s %*s %*s %511s %511s", froot, fmnt) != 2 ||
            sscanf(sep + 3, "%31s %63s %255s", fstype, source, super) < 2)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") != 0
               : strcmp(fstype, "cgroup") != 0 || strstr(super, "memory") == NULL)
            continue;
        snprintf(root, sizeof(root), "%s", froot);
        snprintf(mnt, mcap, "%s", fmnt);
        found = true;
    }
    fclose(f);
    if (!found)
        return false;
    /* our path is under the mount's root (a cgroup namespace makes it "/") */
    size_t rlen = strcmp(root, "/") == 0 ? 0 : strlen(root);
    const char *rel = strncmp(path, root, rlen) == 0 ? path + rlen : path;
    snprintf(dir, cap, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel);
    return true;
}

/* The least room left over this process's cgroup and its ancestors, in one
 * hierarchy. Page cache that can be dropped (inactive files) is room. */
static void cgroup_walk(bool v2, tq_memlimit_t *m)
{
    char dir[TQ_MEMLIMIT_DIR_MAX], mnt[TQ_MEMLIMIT_DIR_MAX];
    if (!cgroup_dir(v2, dir, sizeof(dir), mnt, sizeof(mnt)))
        return;
    size_t mlen = strlen(mnt);
    for (int depth = 0; depth < 64; depth++) {
        uint64_t limit = read_number(dir, v2 ? "memory.max" : "memory.limit_in_bytes");
        uint64_t usage = read_number(dir, v2 ? "memory.current" : "memory.usage_in_bytes");
        if (!v2 && limit >= CGROUP_V1_UNLIMITED)
            limit = TQ_MEMLIMIT_NONE;
        if (limit != TQ_MEMLIMIT_NONE) {
            if (usage == TQ_MEMLIMIT_NONE)
                usage = 0;
            uint64_t cache = read_stat(dir, v2 ? "inactive_file" : "total_inactive_file");
            usage -= TQ_MIN(usage, cache);
            uint64_t left = limit > usage ? limit - usage : 0;
            if (left < m->cgroup_left) {
                m->cgroup_left = left;
                m->cgroup_limit = limit;
                m->cgroup_usage = usage;
                snprintf(m->cgroup_file, sizeof(m->cgroup_file), "%.*s/%s", TQ_MEMLIMIT_DIR_MAX, dir,
                         v2 ? "memory.max" : "memory.limit_in_bytes");
            }
        }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= mlen || slash == NULL || (size_t)(slash - dir) < mlen)
            break;
        *slash = '\0';
    }
}

/* Does this process hold CAP_IPC_LOCK (locking then ignores RLIMIT_MEMLOCK)? */
static bool has_ipc_lock(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return false;
    char line[256];
    uint64_t caps = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "CapEff:", 7) == 0) {
            caps = strtoull(line + 7, NULL, 16);
            break;
        }
    fclose(f);
    return (caps >> CAP_IPC_LOCK_BIT) & 1u;
}

void tq__memlimit_read(tq_memlimit_t *m)
{
    memset(m, 0, sizeof(*m));
    m->mem_available = meminfo("MemAvailable");
    m->cgroup_left = TQ_MEMLIMIT_NONE;
    cgroup_walk(false, m);
    cgroup_walk(true, m);
    struct rlimit rl;
    m->memlock = TQ_MEMLIMIT_NONE;
    if (!has_ipc_lock() && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        m->memlock = (uint64_t)rl.rlim_cur;
}

int tq__memlimit_check(const tq_memlimit_t *m, uint64_t size, bool must_lock, char *err,
                       size_t cap)
{
    if (m->mem_available != TQ_MEMLIMIT_NONE && size > m->mem_available) {
        snprintf(err, cap, "a pool of %" PRIu64 " bytes is more than this host has free: "
                 "MemAvailable is %" PRIu64 " bytes (/proc/meminfo): use a smaller --pool-size", size,
                 m->mem_available);
        return -1;
    }
    if (m->cgroup_left != TQ_MEMLIMIT_NONE && size > m->cgroup_left) {
        snprintf(err, cap, "a pool of %" PRIu64 " bytes is more than this unit's memory cgroup "
                 "leaves it: %" PRIu64 " bytes (limit %" PRIu64 " in %s, %" PRIu64 " in use): use a "
                 "smaller --pool-size or raise the limit",
                 size, m->cgroup_left, m->cgroup_limit, m->cgroup_file, m->cgroup_usage);
        return -1;
    }
    if (must_lock && !tq__memlimit_lockable(m, size)) {
        snprintf(err, cap, "a pool of %" PRIu64 " bytes cannot be locked in memory: "
                 "RLIMIT_MEMLOCK is %" PRIu64 " bytes and this process lacks CAP_IPC_LOCK: raise "
                 "it (ulimit -l, LimitMEMLOCK= in the service) or use a smaller --pool-size",
                 size, m->memlock);
        return -1;
    }
    return 0;
}
