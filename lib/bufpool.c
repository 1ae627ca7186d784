/* bufpool.c: recycled, page-backed buffers for the columns a get reads into. */
#include "bufpool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "util/common.h"

#define MAP_MIN       (64u << 10)  /* smaller buffers come from malloc */
#define HUGE_PAGE     (2u << 20)
#define MAX_KEPT      64

typedef struct {
    void  *buf;
    size_t cap;
} kept_t;

struct tq__bufpool {
    pthread_mutex_t lock;
    unsigned        refs;
    size_t          max_cached, cached;
    kept_t          kept[MAX_KEPT];
    unsigned        num_kept;
};

tq__bufpool *tq__bufpool_create(size_t max_cached_bytes)
{
    tq__bufpool *bp = calloc(1, sizeof(*bp));
    if (bp == NULL)
        return NULL;
    pthread_mutex_init(&bp->lock, NULL);
    bp->refs = 1;
    bp->max_cached = max_cached_bytes;
    return bp;
}

static void release(void *buf, size_t cap)
{
    if (cap < MAP_MIN)
        free(buf);
    else
        munmap(buf, cap);
}

/* Drop one reference with the lock held; frees the pool (and unlocks) at zero. */
static void unref_locked(tq__bufpool *bp)
{
    bool last = --bp->refs == 0;
    pthread_mutex_unlock(&bp->lock);
    if (!last)
        return;
    for (unsigned i = 0; i < bp->num_kept; i++)
        release(bp->kept[i].buf, bp->kept[i].cap);
    pthread_mutex_destroy(&bp->lock);
    free(bp);
}

void tq__bufpool_unref(tq__bufpool *bp)
{
    if (bp == NULL)
        return;
    pthread_mutex_lock(&bp->lock);
    /* the owner is gone: keep nothing more for it */
    bp->max_cached = 0;
    unref_locked(bp);
}

void *tq__bufpool_get(tq__bufpool *bp, size_t size, size_t *cap_p)
{
    size = size ? size : 1;
    /* the capacity, not the size, says where a buffer came from (see release) */
    if (TQ_ALIGN_UP(size, 64) < MAP_MIN) {
        void *buf = aligned_alloc(64, TQ_ALIGN_UP(size, 64));
        if (buf == NULL)
            return NULL;
        *cap_p = TQ_ALIGN_UP(size, 64);
        pthread_mutex_lock(&bp->lock);
        bp->refs++;
        pthread_mutex_unlock(&bp->lock);
        return buf;
    }
    size_t cap = TQ_ALIGN_UP(size, size >= HUGE_PAGE ? HUGE_PAGE : 4096);
    pthread_mutex_lock(&bp->lock);
    /* best fit among kept buffers, wasting at most half */
    int best = -1;
    for (unsigned i = 0; i < bp->num_kept; i++) {
        size_t c = bp->kept[i].cap;
        if (c >= cap && c / 2 <= cap && (best < 0 || c < bp->kept[best].cap))
            best = (int)i;
    }
    bp->refs++;
    if (best >= 0) {
        kept_t k = bp->kept[best];
        bp->kept[best] = bp->kept[--bp->num_kept];
        bp->cached -= k.cap;
        pthread_mutex_unlock(&bp->lock);
        *cap_p = k.cap;
        return k.buf;
    }
    pthread_mutex_unlock(&bp->lock);
    void *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        pthread_mutex_lock(&bp->lock);
        unref_locked(bp);
        return NULL;
    }
    if (cap >= HUGE_PAGE)
        madvise(buf, cap, MADV_HUGEPAGE); /* fewer faults, fewer TLB misses */
    *cap_p = cap;
    return buf;
}

void tq__bufpool_put(tq__bufpool *bp, void *buf, size_t cap)
{
    pthread_mutex_lock(&bp->lock);
    if (cap >= MAP_MIN && bp->cached + cap <= bp->max_cached && bp->num_kept < MAX_KEPT) {
        bp->kept[bp->num_kept++] = (kept_t){buf, cap};
        bp->cached += cap;
        buf = NULL;
    }
    unref_locked(bp);
    if (buf != NULL)
        release(buf, cap);
}
