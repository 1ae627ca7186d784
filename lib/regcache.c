/* regcache.c: a cache of registrations of callers' buffers, for transports whose registrations pin pages. */
#include "regcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "tq/tq.h"
#include "util/common.h"

#define SLOTS 64

enum { SLOT_FREE, SLOT_PENDING, SLOT_VALID, SLOT_INVALID };

/* One cached registration of a page-aligned range [start, end). */
typedef struct {
    uintptr_t start, end;
    void     *handle;
    uint64_t  last_use;
    unsigned  refs;   /* users whose operations in flight use it */
    int       state;
    uint64_t  holder; /* the epoch that took the last reference */
} slot_t;

struct tq__regcache {
    /* Taken by the unmap hook from any thread, so nothing that may
     * allocate or unmap runs under it. */
    pthread_spinlock_t    lock;
    size_t                page;
    uint64_t              clock;
    uint64_t              epochs; /* numbers every user's epochs, so none repeats */
    tq__regcache_reg_fn   reg;
    tq__regcache_dereg_fn dereg;
    void                 *ctx;
    slot_t                slots[SLOTS];
};

tq__regcache *tq__regcache_create(tq__regcache_reg_fn reg, tq__regcache_dereg_fn dereg, void *ctx)
{
    tq__regcache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (pthread_spin_init(&c->lock, PTHREAD_PROCESS_PRIVATE) != 0) {
        free(c);
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    c->page = page > 0 ? (size_t)page : 4096u;
    c->reg = reg;
    c->dereg = dereg;
    c->ctx = ctx;
    return c;
}

void tq__regcache_destroy(tq__regcache *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < SLOTS; i++)
        if (c->slots[i].handle != NULL)
            c->dereg(c->ctx, c->slots[i].handle);
    pthread_spin_destroy(&c->lock);
    free(c);
}

void tq__regcache_unmapped(tq__regcache *c, const void *addr, size_t len)
{
    uintptr_t s = (uintptr_t)addr;
    uintptr_t e = s + len;
    if (e < s)
        e = UINTPTR_MAX;
    pthread_spin_lock(&c->lock);
    for (int i = 0; i < SLOTS; i++) {
        slot_t *sl = &c->slots[i];
        if ((sl->state == SLOT_VALID || sl->state == SLOT_PENDING) && sl->start < e && s < sl->end)
            sl->state = SLOT_INVALID;
    }
    pthread_spin_unlock(&c->lock);
}

/* Note that holds' user uses slot i (under the lock; room made before). */
static void hold(tq__regcache_holds_t *holds, slot_t *sl, unsigned i)
{
    if (holds == NULL || sl->holder == holds->epoch)
        return; /* held already */
    sl->refs++;
    sl->holder = holds->epoch;
    holds->held[holds->nheld++] = i;
}

/* Room in holds for one more entry. */
static bool holds_grow(tq__regcache_holds_t *holds)
{
    if (holds->nheld < holds->cap)
        return true;
    size_t n = TQ_MAX(holds->cap * 2, (size_t)16);
    unsigned *p = realloc(holds->held, n * sizeof(*p));
    if (p == NULL)
        return false;
    holds->held = p;
    holds->cap = n;
    return true;
}

int tq__regcache_get(tq__regcache *c, tq__regcache_holds_t *holds, const void *buf, size_t len,
                     bool may_evict, void **handle_p)
{
    uintptr_t s = (uintptr_t)buf & ~(uintptr_t)(c->page - 1);
    uintptr_t e = (uintptr_t)TQ_ALIGN_UP((uintptr_t)buf + len, c->page);
    void *victim = NULL;
    int slot = -1;

    if (holds != NULL && !holds_grow(holds))
        return TQ_ERR_NOMEM;
    pthread_spin_lock(&c->lock);
    for (int i = 0; i < SLOTS; i++) {
        slot_t *sl = &c->slots[i];
        if (sl->state == SLOT_VALID && sl->start <= s && e <= sl->end) {
            sl->last_use = ++c->clock;
            hold(holds, sl, (unsigned)i);
            *handle_p = sl->handle;
            pthread_spin_unlock(&c->lock);
            return TQ_OK;
        }
    }
    for (int i = 0; i < SLOTS && slot < 0; i++)
        if (c->slots[i].state == SLOT_FREE)
            slot = i;
    if (slot < 0 && may_evict) /* the least recently used one nobody holds */
        for (int i = 0; i < SLOTS; i++)
            if (c->slots[i].state == SLOT_VALID && c->slots[i].refs == 0 &&
                (slot < 0 || c->slots[i].last_use < c->slots[slot].last_use))
                slot = i;
    if (slot >= 0) {
        victim = c->slots[slot].handle;
        c->slots[slot] = (slot_t){.start = s, .end = e, .state = SLOT_PENDING};
    }
    pthread_spin_unlock(&c->lock);
    if (slot < 0)
        return TQ_ERR_NOT_FOUND;
    if (victim != NULL)
        c->dereg(c->ctx, victim);

    void *fresh = c->reg(c->ctx, (void *)s, e - s);
    int rc = TQ_ERR_NOT_FOUND;
    pthread_spin_lock(&c->lock);
    slot_t *sl = &c->slots[slot];
    if (fresh == NULL) {
        sl->state = SLOT_FREE;
    } else if (sl->state == SLOT_PENDING) {
        sl->state = SLOT_VALID;
        sl->handle = fresh;
        sl->last_use = ++c->clock;
        hold(holds, sl, (unsigned)slot);
        *handle_p = fresh;
        rc = TQ_OK;
    } else {
        sl->handle = fresh; /* unmapped while we registered it: reaped later */
    }
    pthread_spin_unlock(&c->lock);
    return rc;
}

unsigned tq__regcache_reap(tq__regcache *c, bool all_idle)
{
    void *dead[SLOTS];
    unsigned n = 0;
    pthread_spin_lock(&c->lock);
    for (int i = 0; i < SLOTS; i++) {
        slot_t *sl = &c->slots[i];
        if (sl->refs == 0 &&
            (sl->state == SLOT_INVALID || (all_idle && sl->state == SLOT_VALID))) {
            if (sl->handle != NULL)
                dead[n++] = sl->handle;
            sl->handle = NULL;
            sl->state = SLOT_FREE;
        }
    }
    pthread_spin_unlock(&c->lock);
    for (unsigned i = 0; i < n; i++)
        c->dereg(c->ctx, dead[i]);
    return n;
}

void tq__regcache_holds_init(tq__regcache *c, tq__regcache_holds_t *holds)
{
    *holds = (tq__regcache_holds_t){.epoch = ++c->epochs};
}

void tq__regcache_release(tq__regcache *c, tq__regcache_holds_t *holds)
{
    if (holds->nheld > 0) {
        pthread_spin_lock(&c->lock);
        for (size_t i = 0; i < holds->nheld; i++)
            c->slots[holds->held[i]].refs--;
        pthread_spin_unlock(&c->lock);
        holds->nheld = 0;
    }
    holds->epoch = ++c->epochs;
}

void tq__regcache_holds_fini(tq__regcache_holds_t *holds)
{
    free(holds->held);
    holds->held = NULL;
    holds->nheld = holds->cap = 0;
}
