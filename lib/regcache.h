/* regcache.h: a cache of registrations of callers' buffers, for transports whose registrations pin pages. */
#ifndef TQ_REGCACHE_H
#define TQ_REGCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Buffers are registered on first use and the registration kept, keyed by
 * the page-aligned range, least recently used evicted. A kept registration
 * pins the pages it was made for: memory unmapped and mapped anew at the
 * same address would silently move the old pages. So the owner keeps one
 * only while it hears of every unmap (or its device follows the mapping by
 * itself) and passes each to tq__regcache_unmapped, which marks the
 * overlapping entries; the owner's thread deregisters them at the next reap.
 *
 * A user (an endpoint) whose operations in flight use an entry holds it,
 * once per epoch (one release to the next), so it is neither evicted nor
 * reaped until tq__regcache_release.
 *
 * Thread-safety: tq__regcache_unmapped may run in any thread, inside
 * munmap; everything else is the owner's thread. Registering and
 * deregistering never run under the lock the hook takes.
 */
typedef struct tq__regcache tq__regcache;

/* Register [addr, addr+len) for local access: a handle, or NULL (the cache
 * then does without). Deregister what reg returned. */
typedef void *(*tq__regcache_reg_fn)(void *ctx, void *addr, size_t len);
typedef void (*tq__regcache_dereg_fn)(void *ctx, void *handle);

/* The entries one user holds in its current epoch. */
typedef struct {
    unsigned *held;
    size_t    nheld, cap;
    uint64_t  epoch;
} tq__regcache_holds_t;

/* NULL when out of memory. */
tq__regcache *tq__regcache_create(tq__regcache_reg_fn reg, tq__regcache_dereg_fn dereg, void *ctx);
/* Deregisters every entry left. The unmap hook must be gone, and no
 * operation may use an entry any more. NULL is a no-op. */
void tq__regcache_destroy(tq__regcache *c);

/* [addr, addr+len) is being unmapped: mark the entries overlapping it. No
 * allocation, no call into the transport: safe inside munmap of any thread. */
void tq__regcache_unmapped(tq__regcache *c, const void *addr, size_t len);

/* TQ_OK and in *handle_p a registration covering [buf, buf+len), made if
 * need be. holds: NULL, or the caller's, which then holds the entry.
 * may_evict: whether an entry nobody holds may be deregistered to make room
 * (false while operations that hold nothing may use one).
 * TQ_ERR_NOT_FOUND: no entry to spare, the registration failed, or the
 * range was unmapped meanwhile: do without the cache. TQ_ERR_NOMEM. */
int tq__regcache_get(tq__regcache *c, tq__regcache_holds_t *holds, const void *buf, size_t len,
                     bool may_evict, void **handle_p);

/* Deregister the entries unmapped (all_idle: and every valid one) that
 * nobody holds. Returns how many. */
unsigned tq__regcache_reap(tq__regcache *c, bool all_idle);

/* A user's holds, empty, in a new epoch. */
void tq__regcache_holds_init(tq__regcache *c, tq__regcache_holds_t *holds);
/* Give back what holds held (its operations completed); a new epoch. */
void tq__regcache_release(tq__regcache *c, tq__regcache_holds_t *holds);
/* Free holds' memory, once released. */
void tq__regcache_holds_fini(tq__regcache_holds_t *holds);

#endif
