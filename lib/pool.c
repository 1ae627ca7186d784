/* pool.c: a TLSF allocator of offsets in a remote pool, with its bookkeeping on the heap. */
#include "pool.h"

#include <stdbool.h>
#include <stdlib.h>

#include "tq/tq.h"
#include "util/common.h"

/*
 * Sizes are mapped in units of the pool's alignment, so the smallest block (one
 * unit) gets its own class whatever the alignment. Units below SL_COUNT each
 * have an exact class (first level 0); above, first level f covers
 * [2^(f+SL_LOG2-1), 2^(f+SL_LOG2)) units in SL_COUNT equal slices.
 */
#define SL_LOG2  5
#define SL_COUNT (1u << SL_LOG2)
#define FL_COUNT (64 - SL_LOG2 + 1)

struct tq_pool_block {
    uint64_t offset;
    uint64_t size;
    bool     free;
    struct tq_pool_block *prev_phys, *next_phys; /* neighbours in offset order */
    struct tq_pool_block *prev_free, *next_free; /* class list, when free */
};

struct tq_pool {
    uint64_t capacity;
    uint64_t align;
    unsigned shift; /* log2(align) */
    uint64_t used;
    tq_pool_block *first; /* the block at offset 0 */
    uint64_t fl_bitmap;   /* bit f: some list of first level f is non-empty */
    uint32_t sl_bitmap[FL_COUNT];
    tq_pool_block *heads[FL_COUNT][SL_COUNT];
};

static unsigned fls64(uint64_t x) { return 63u - (unsigned)__builtin_clzll(x); }

static void mapping(uint64_t units, unsigned *fl, unsigned *sl)
{
    if (units < SL_COUNT) {
        *fl = 0;
        *sl = (unsigned)units;
    } else {
        unsigned f = fls64(units);
        *fl = f - SL_LOG2 + 1;
        *sl = (unsigned)(units >> (f - SL_LOG2)) - SL_COUNT;
    }
}

static void block_class(const tq_pool *pool, const tq_pool_block *b, unsigned *fl, unsigned *sl)
{
    mapping(b->size >> pool->shift, fl, sl);
}

static void insert_free(tq_pool *pool, tq_pool_block *b)
{
    unsigned fl, sl;
    block_class(pool, b, &fl, &sl);
    tq_pool_block *head = pool->heads[fl][sl];
    b->free = true;
    b->prev_free = NULL;
    b->next_free = head;
    if (head != NULL)
        head->prev_free = b;
    pool->heads[fl][sl] = b;
    pool->sl_bitmap[fl] |= 1u << sl;
    pool->fl_bitmap |= 1ull << fl;
}

static void remove_free(tq_pool *pool, tq_pool_block *b)
{
    unsigned fl, sl;
    block_class(pool, b, &fl, &sl);
    if (b->prev_free != NULL)
        b->prev_free->next_free = b->next_free;
    else
        pool->heads[fl][sl] = b->next_free;
    if (b->next_free != NULL)
        b->next_free->prev_free = b->prev_free;
    if (pool->heads[fl][sl] == NULL) {
        pool->sl_bitmap[fl] &= ~(1u << sl);
        if (pool->sl_bitmap[fl] == 0)
            pool->fl_bitmap &= ~(1ull << fl);
    }
    b->prev_free = b->next_free = NULL;
    b->free = false;
}

/*
 * Look in the first class whose every block fits (the request rounded up to
 * the next slice boundary), so no list is ever walked.
 */
static tq_pool_block *find_fit(const tq_pool *pool, uint64_t units)
{
    unsigned fl, sl;
    if (units >= SL_COUNT)
        units += (1ull << (fls64(units) - SL_LOG2)) - 1;
    mapping(units, &fl, &sl);
    if (fl >= FL_COUNT)
        return NULL;
    uint32_t slmap = pool->sl_bitmap[fl] & (~0u << sl);
    if (slmap == 0) {
        uint64_t flmap = fl + 1 < 64 ? pool->fl_bitmap & (~0ull << (fl + 1)) : 0;
        if (flmap == 0)
            return NULL;
        fl = (unsigned)__builtin_ctzll(flmap);
        slmap = pool->sl_bitmap[fl];
    }
    sl = (unsigned)__builtin_ctz(slmap);
    return pool->heads[fl][sl];
}

int tq_pool_create(uint64_t capacity, uint64_t align, tq_pool **pool_p)
{
    if (pool_p == NULL || align < 8 || (align & (align - 1)) != 0)
        return TQ_ERR_INVALID;
    capacity &= ~(align - 1);
    if (capacity < align)
        return TQ_ERR_INVALID;

    tq_pool *pool = calloc(1, sizeof(*pool));
    tq_pool_block *b = calloc(1, sizeof(*b));
    if (pool == NULL || b == NULL) {
        free(pool);
        free(b);
        return TQ_ERR_NOMEM;
    }
    pool->capacity = capacity;
    pool->align = align;
    pool->shift = (unsigned)__builtin_ctzll(align);
    b->offset = 0;
    b->size = capacity;
    pool->first = b;
    insert_free(pool, b);
    *pool_p = pool;
    return TQ_OK;
}

void tq_pool_destroy(tq_pool *pool)
{
    if (pool == NULL)
        return;
    tq_pool_block *b = pool->first;
    while (b != NULL) {
        tq_pool_block *next = b->next_phys;
        free(b);
        b = next;
    }
    free(pool);
}

int tq_pool_alloc(tq_pool *pool, uint64_t size, tq_pool_block **block_p)
{
    if (pool == NULL || block_p == NULL || size == 0)
        return TQ_ERR_INVALID;
    if (size > pool->capacity)
        return TQ_ERR_NOSPACE; /* also keeps the rounding below from overflowing */
    size = TQ_ALIGN_UP(size, pool->align);

    tq_pool_block *b = find_fit(pool, size >> pool->shift);
    if (b == NULL) {
        /* Rounding up can skip a block of exactly the right class (say, the
         * whole pool); its list head is one more O(1) chance. */
        unsigned fl, sl;
        mapping(size >> pool->shift, &fl, &sl);
        b = pool->heads[fl][sl];
        if (b == NULL || b->size < size)
            return TQ_ERR_NOSPACE;
    }
    tq_assert(b->free && b->size >= size);

    tq_pool_block *rest = NULL;
    if (b->size > size) {
        /* Allocate before touching the lists, so NOMEM leaves the pool as it was. */
        rest = calloc(1, sizeof(*rest));
        if (rest == NULL)
            return TQ_ERR_NOMEM;
    }
    remove_free(pool, b);
    if (rest != NULL) {
        rest->offset = b->offset + size;
        rest->size = b->size - size;
        rest->prev_phys = b;
        rest->next_phys = b->next_phys;
        if (b->next_phys != NULL)
            b->next_phys->prev_phys = rest;
        b->next_phys = rest;
        b->size = size;
        insert_free(pool, rest);
    }
    pool->used += b->size;
    *block_p = b;
    return TQ_OK;
}

/* Fold b's physical successor into b; both are off the free lists. */
static void absorb_next(tq_pool_block *b)
{
    tq_pool_block *n = b->next_phys;
    b->size += n->size;
    b->next_phys = n->next_phys;
    if (n->next_phys != NULL)
        n->next_phys->prev_phys = b;
    free(n);
}

void tq_pool_free(tq_pool *pool, tq_pool_block *block)
{
    if (block == NULL)
        return;
    tq_assert(pool != NULL && !block->free);
    tq_assert(pool->used >= block->size);
    pool->used -= block->size;

    tq_pool_block *prev = block->prev_phys, *next = block->next_phys;
    if (next != NULL && next->free) {
        remove_free(pool, next);
        absorb_next(block);
    }
    if (prev != NULL && prev->free) {
        remove_free(pool, prev);
        absorb_next(prev);
        block = prev;
    }
    insert_free(pool, block);
}

uint64_t tq_pool_block_offset(const tq_pool_block *block) { return block->offset; }
uint64_t tq_pool_block_size(const tq_pool_block *block) { return block->size; }
uint64_t tq_pool_capacity(const tq_pool *pool) { return pool->capacity; }
uint64_t tq_pool_used(const tq_pool *pool) { return pool->used; }

uint64_t tq_pool_largest_free(const tq_pool *pool)
{
    if (pool->fl_bitmap == 0)
        return 0;
    unsigned fl = fls64(pool->fl_bitmap);
    unsigned sl = 31u - (unsigned)__builtin_clz(pool->sl_bitmap[fl]);
    /* Blocks of one class differ in size (except at level 0), so scan its list. */
    uint64_t best = 0;
    for (const tq_pool_block *b = pool->heads[fl][sl]; b != NULL; b = b->next_free)
        best = TQ_MAX(best, b->size);
    return best;
}

static bool in_list(const tq_pool *pool, const tq_pool_block *want, unsigned fl, unsigned sl,
                    uint64_t limit)
{
    for (const tq_pool_block *b = pool->heads[fl][sl]; b != NULL && limit-- > 0; b = b->next_free)
        if (b == want)
            return true;
    return false;
}

int tq_pool_check(const tq_pool *pool)
{
    if (pool == NULL || pool->first == NULL)
        return -1;
    /* No block is smaller than align, which bounds every walk against cycles. */
    uint64_t max_blocks = pool->capacity >> pool->shift;
    uint64_t end = 0, used = 0, nfree = 0, nblocks = 0;
    const tq_pool_block *prev = NULL;
    for (const tq_pool_block *b = pool->first; b != NULL; prev = b, b = b->next_phys) {
        if (++nblocks > max_blocks)
            return -1;
        if (b->prev_phys != prev || b->offset != end || b->size == 0 ||
            (b->size & (pool->align - 1)) != 0 || b->size > pool->capacity - end)
            return -1;
        if (b->free) {
            if (prev != NULL && prev->free)
                return -1;
            nfree++;
        } else {
            used += b->size;
        }
        end += b->size;
    }
    if (end != pool->capacity || used != pool->used)
        return -1;

    uint64_t listed = 0;
    for (unsigned fl = 0; fl < FL_COUNT; fl++) {
        if (((pool->fl_bitmap >> fl) & 1) != (pool->sl_bitmap[fl] != 0))
            return -1;
        for (unsigned sl = 0; sl < SL_COUNT; sl++) {
            const tq_pool_block *head = pool->heads[fl][sl];
            if (((pool->sl_bitmap[fl] >> sl) & 1) != (head != NULL))
                return -1;
            const tq_pool_block *pf = NULL;
            for (const tq_pool_block *b = head; b != NULL; pf = b, b = b->next_free) {
                unsigned bfl, bsl;
                if (++listed > nfree || !b->free || b->prev_free != pf || b->size == 0)
                    return -1;
                block_class(pool, b, &bfl, &bsl);
                if (bfl != fl || bsl != sl)
                    return -1;
            }
        }
    }
    for (unsigned fl = FL_COUNT; fl < 64; fl++)
        if ((pool->fl_bitmap >> fl) & 1)
            return -1;
    if (listed != nfree)
        return -1;
    /* Equal counts and every physical free block listed: the two sets are the same. */
    for (const tq_pool_block *b = pool->first; b != NULL; b = b->next_phys) {
        unsigned fl, sl;
        if (!b->free)
            continue;
        block_class(pool, b, &fl, &sl);
        if (!in_list(pool, b, fl, sl, nfree))
            return -1;
    }
    return 0;
}
