/* pool.h: an O(1) two-level segregated-fit allocator of offsets in a remote pool. */
#ifndef TQ_POOL_H
#define TQ_POOL_H

#include <stdint.h>

/*
 * The pool's bytes live elsewhere (a storage unit's registered memory, or a
 * client's staging area); this allocator only hands out [offset, offset+size)
 * ranges of [0, capacity). Its bookkeeping lives on the heap, never in the pool.
 * Every range is aligned to the pool's alignment, lies inside the pool and
 * overlaps no other live range. Not thread-safe.
 */
typedef struct tq_pool tq_pool;
typedef struct tq_pool_block tq_pool_block; /* one allocated range */

/* align: a power of two >= 8. capacity is rounded down to it. */
int  tq_pool_create(uint64_t capacity, uint64_t align, tq_pool **pool_p);
/* Frees the bookkeeping; live blocks become invalid. */
void tq_pool_destroy(tq_pool *pool);

/* TQ_ERR_INVALID for size 0, TQ_ERR_NOSPACE when no free range fits, TQ_ERR_NOMEM. */
int  tq_pool_alloc(tq_pool *pool, uint64_t size, tq_pool_block **block_p);
/* Returns the range; merges it with free neighbours. */
void tq_pool_free(tq_pool *pool, tq_pool_block *block);

uint64_t tq_pool_block_offset(const tq_pool_block *block);
uint64_t tq_pool_block_size(const tq_pool_block *block); /* >= requested, aligned */

uint64_t tq_pool_capacity(const tq_pool *pool);
uint64_t tq_pool_used(const tq_pool *pool);   /* bytes in live blocks */
uint64_t tq_pool_largest_free(const tq_pool *pool);

/* Check every internal invariant (tests); 0 when consistent. */
int tq_pool_check(const tq_pool *pool);

#endif
