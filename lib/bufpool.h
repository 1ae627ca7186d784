/* bufpool.h: recycled, page-backed buffers for the columns a get reads into. */
#ifndef TQ_BUFPOOL_H
#define TQ_BUFPOOL_H

#include <stddef.h>

/*
 * Reading into fresh memory costs a page fault per page (measured: over half
 * the time of a 64 MiB get), and on RDMA hardware a memory registration too.
 * Buffers handed back are kept (up to a bound) and handed out again, so their
 * pages stay mapped and their registrations stay cached.
 *
 * Reference counted: the owner holds one reference and every buffer out holds
 * one, so batches may outlive the client that made them. Thread-safe.
 */
typedef struct tq__bufpool tq__bufpool;

tq__bufpool *tq__bufpool_create(size_t max_cached_bytes);
/* Drop the owner's reference. */
void  tq__bufpool_unref(tq__bufpool *bp);
/* A buffer of at least size bytes (its capacity in *cap_p), 64-byte aligned; NULL when out of memory. */
void *tq__bufpool_get(tq__bufpool *bp, size_t size, size_t *cap_p);
/* Give a buffer back. */
void  tq__bufpool_put(tq__bufpool *bp, void *buf, size_t cap);

#endif
