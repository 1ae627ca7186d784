/* memlimit.h: how much memory a storage unit may take for its pool, by the kernel's account. */
#ifndef TQ_STORAGE_MEMLIMIT_H
#define TQ_STORAGE_MEMLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TQ_MEMLIMIT_NONE UINT64_MAX /* no such limit, or it could not be read */
#define TQ_MEMLIMIT_DIR_MAX 512     /* a cgroup directory's path */

typedef struct {
    uint64_t mem_available;   /* MemAvailable of /proc/meminfo */
    /* The memory cgroup (v2 memory.max, v1 memory.limit_in_bytes) of this
     * process or of an ancestor with the least room left: limit - usage. */
    uint64_t cgroup_left, cgroup_limit, cgroup_usage;
    char     cgroup_file[TQ_MEMLIMIT_DIR_MAX + 32]; /* its limit file */
    uint64_t memlock;          /* RLIMIT_MEMLOCK (soft); NONE when unlimited or CAP_IPC_LOCK */
} tq_memlimit_t;

void tq__memlimit_read(tq_memlimit_t *m);

/* May a pool of size bytes be allocated (and locked, if must_lock)? 0, or
 * -1 with a message naming the pool, the limit it passes and where that
 * limit comes from. */
int  tq__memlimit_check(const tq_memlimit_t *m, uint64_t size, bool must_lock, char *err,
                        size_t cap);

/* Can a pool of size bytes be locked in memory (mlock, RDMA pinning)? */
static inline bool tq__memlimit_lockable(const tq_memlimit_t *m, uint64_t size)
{
    return m->memlock == TQ_MEMLIMIT_NONE || size <= m->memlock;
}

#endif
