/* test_pool.c: the TLSF offset allocator: arguments, alignment, exhaustion, coalescing, stress. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <stdlib.h>

#include "pool.h"
#include "tq/tq.h"
#include "util/common.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static tq_pool *make_pool(uint64_t capacity, uint64_t align)
{
    tq_pool *pool = NULL;
    cr_assert(eq(int, tq_pool_create(capacity, align, &pool), TQ_OK));
    cr_assert(ne(ptr, pool, NULL));
    cr_assert(eq(int, tq_pool_check(pool), 0));
    return pool;
}

static tq_pool_block *alloc_ok(tq_pool *pool, uint64_t size)
{
    tq_pool_block *b = NULL;
    cr_assert(eq(int, tq_pool_alloc(pool, size, &b), TQ_OK), "alloc of %llu", (unsigned long long)size);
    cr_assert(ne(ptr, b, NULL));
    return b;
}

Test(pool, create_bad_args)
{
    tq_pool *const sentinel = (tq_pool *)(uintptr_t)0x1;
    tq_pool *pool = sentinel;
    static const uint64_t bad_aligns[] = {0, 1, 2, 4, 7, 12, 24, 100, 4097, UINT64_MAX};
    for (size_t i = 0; i < sizeof(bad_aligns) / sizeof(bad_aligns[0]); i++) {
        cr_expect(eq(int, tq_pool_create(MiB, bad_aligns[i], &pool), TQ_ERR_INVALID),
                  "align %llu", (unsigned long long)bad_aligns[i]);
        cr_expect(eq(ptr, pool, sentinel));
    }
    cr_expect(eq(int, tq_pool_create(0, 64, &pool), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_pool_create(63, 64, &pool), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_pool_create(7, 8, &pool), TQ_ERR_INVALID));
    cr_expect(eq(ptr, pool, sentinel));
    cr_expect(eq(int, tq_pool_create(MiB, 64, NULL), TQ_ERR_INVALID));

    /* Capacity rounds down to the alignment. */
    pool = make_pool(1000, 64);
    cr_expect(eq(u64, tq_pool_capacity(pool), 960));
    cr_expect(eq(u64, tq_pool_used(pool), 0));
    cr_expect(eq(u64, tq_pool_largest_free(pool), 960));
    tq_pool_destroy(pool);

    pool = make_pool(8, 8);
    cr_expect(eq(u64, tq_pool_capacity(pool), 8));
    tq_pool_destroy(pool);
    tq_pool_destroy(NULL);
}

Test(pool, alloc_bad_args)
{
    tq_pool *pool = make_pool(MiB, 64);
    tq_pool_block *const sentinel = (tq_pool_block *)(uintptr_t)0x1;
    tq_pool_block *b = sentinel;
    cr_expect(eq(int, tq_pool_alloc(pool, 0, &b), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_pool_alloc(pool, MiB + 1, &b), TQ_ERR_NOSPACE));
    cr_expect(eq(int, tq_pool_alloc(pool, UINT64_MAX, &b), TQ_ERR_NOSPACE));
    cr_expect(eq(int, tq_pool_alloc(pool, UINT64_MAX - 62, &b), TQ_ERR_NOSPACE));
    cr_expect(eq(ptr, b, sentinel));
    cr_expect(eq(int, tq_pool_alloc(pool, 64, NULL), TQ_ERR_INVALID));
    cr_expect(eq(int, tq_pool_alloc(NULL, 64, &b), TQ_ERR_INVALID));
    tq_pool_free(pool, NULL);
    cr_expect(eq(u64, tq_pool_used(pool), 0));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
}

Test(pool, huge_pool_no_overflow)
{
    /* The top first-level classes and the rounding near UINT64_MAX. */
    tq_pool *pool = make_pool(UINT64_MAX, 8);
    uint64_t cap = tq_pool_capacity(pool);
    cr_expect(eq(u64, cap, UINT64_MAX - 7));
    tq_pool_block *b = NULL;
    cr_expect(eq(int, tq_pool_alloc(pool, UINT64_MAX - 3, &b), TQ_ERR_NOSPACE));
    cr_expect(eq(ptr, b, NULL));

    tq_pool_block *half = alloc_ok(pool, UINT64_C(1) << 63);
    tq_pool_block *quarter = alloc_ok(pool, UINT64_C(1) << 62);
    cr_expect(eq(u64, tq_pool_block_offset(half), 0));
    cr_expect(eq(u64, tq_pool_block_offset(quarter), UINT64_C(1) << 63));
    cr_expect(eq(u64, tq_pool_largest_free(pool), cap - (UINT64_C(3) << 62)));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_free(pool, half);
    tq_pool_free(pool, quarter);
    cr_expect(eq(u64, tq_pool_largest_free(pool), cap));

    tq_pool_block *all = alloc_ok(pool, cap);
    cr_expect(eq(u64, tq_pool_block_size(all), cap));
    cr_expect(eq(u64, tq_pool_used(pool), cap));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_free(pool, all);
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
}

Test(pool, alignment)
{
    static const uint64_t aligns[] = {8, 64, 4096, MiB};
    for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++) {
        uint64_t align = aligns[a];
        tq_pool *pool = make_pool(64 * MiB + 3 * align + 5, align);
        uint64_t cap = tq_pool_capacity(pool);
        cr_expect(eq(u64, cap % align, 0));
        tq_pool_block *blocks[64];
        size_t n = 0;
        /* Sizes around the alignment and the class boundaries. */
        for (uint64_t size = 1; n < 64; size = size * 3 + 1) {
            tq_pool_block *b = NULL;
            if (tq_pool_alloc(pool, size, &b) != TQ_OK)
                break;
            uint64_t off = tq_pool_block_offset(b), sz = tq_pool_block_size(b);
            cr_expect(eq(u64, off % align, 0), "align %llu", (unsigned long long)align);
            cr_expect(eq(u64, sz % align, 0));
            cr_expect(ge(u64, sz, size));
            cr_expect(lt(u64, sz - size, align));
            cr_expect(le(u64, off + sz, cap));
            blocks[n++] = b;
        }
        cr_expect(lt(u64, 5, n));
        cr_expect(eq(int, tq_pool_check(pool), 0));
        for (size_t i = 0; i < n; i++)
            tq_pool_free(pool, blocks[i]);
        cr_expect(eq(u64, tq_pool_used(pool), 0));
        cr_expect(eq(u64, tq_pool_largest_free(pool), cap));
        tq_pool_destroy(pool);
    }
}

static void exhaust(uint64_t capacity, uint64_t align)
{
    tq_pool *pool = make_pool(capacity, align);
    uint64_t cap = tq_pool_capacity(pool);
    size_t n = cap / align;
    tq_pool_block **blocks = calloc(n, sizeof(*blocks));
    cr_assert(ne(ptr, blocks, NULL));
    for (size_t i = 0; i < n; i++) {
        blocks[i] = alloc_ok(pool, align);
        cr_expect(eq(u64, tq_pool_block_offset(blocks[i]), i * align));
        cr_expect(eq(u64, tq_pool_block_size(blocks[i]), align));
    }
    tq_pool_block *b = NULL;
    cr_expect(eq(int, tq_pool_alloc(pool, 1, &b), TQ_ERR_NOSPACE));
    cr_expect(eq(ptr, b, NULL));
    cr_expect(eq(u64, tq_pool_used(pool), cap));
    cr_expect(eq(u64, tq_pool_largest_free(pool), 0));
    cr_expect(eq(int, tq_pool_check(pool), 0));

    /* Odd ones first, so each even free merges with both neighbours. */
    for (size_t i = 1; i < n; i += 2)
        tq_pool_free(pool, blocks[i]);
    cr_expect(eq(int, tq_pool_check(pool), 0));
    cr_expect(eq(u64, tq_pool_largest_free(pool), n > 1 ? align : 0));
    for (size_t i = 0; i < n; i += 2)
        tq_pool_free(pool, blocks[i]);
    cr_expect(eq(int, tq_pool_check(pool), 0));
    cr_expect(eq(u64, tq_pool_used(pool), 0));
    cr_expect(eq(u64, tq_pool_largest_free(pool), cap));

    b = alloc_ok(pool, cap);
    cr_expect(eq(u64, tq_pool_block_offset(b), 0));
    cr_expect(eq(u64, tq_pool_block_size(b), cap));
    cr_expect(eq(u64, tq_pool_used(pool), cap));
    tq_pool_block *none = NULL;
    cr_expect(eq(int, tq_pool_alloc(pool, 1, &none), TQ_ERR_NOSPACE));
    tq_pool_free(pool, b);
    cr_expect(eq(int, tq_pool_check(pool), 0));
    free(blocks);
    tq_pool_destroy(pool);
}

Test(pool, exhaust_exactly)
{
    exhaust(64 * KiB, 64);
    exhaust(4 * MiB, 4096);
    /* Capacities off a class boundary: the whole-pool request must still fit. */
    exhaust(99 * 64, 64);
    exhaust(12345 * 8 + 7, 8);
    exhaust(8, 8);
}

Test(pool, split_and_coalesce)
{
    tq_pool *pool = make_pool(1024, 64);
    tq_pool_block *a = alloc_ok(pool, 100); /* 128 */
    tq_pool_block *b = alloc_ok(pool, 200); /* 256 */
    tq_pool_block *c = alloc_ok(pool, 300); /* 320 */
    cr_expect(eq(u64, tq_pool_block_offset(a), 0));
    cr_expect(eq(u64, tq_pool_block_offset(b), 128));
    cr_expect(eq(u64, tq_pool_block_offset(c), 384));
    cr_expect(eq(u64, tq_pool_block_size(a), 128));
    cr_expect(eq(u64, tq_pool_block_size(b), 256));
    cr_expect(eq(u64, tq_pool_block_size(c), 320));
    cr_expect(eq(u64, tq_pool_used(pool), 704));
    cr_expect(eq(u64, tq_pool_largest_free(pool), 320)); /* the split-off tail */
    cr_expect(eq(int, tq_pool_check(pool), 0));

    tq_pool_free(pool, b);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 320));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    /* A merges with B: one 384-byte block, larger than the tail. */
    tq_pool_free(pool, a);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 384));
    cr_expect(eq(u64, tq_pool_used(pool), 320));
    cr_expect(eq(int, tq_pool_check(pool), 0));

    tq_pool_block *ab = alloc_ok(pool, 384);
    cr_expect(eq(u64, tq_pool_block_offset(ab), 0));
    cr_expect(eq(u64, tq_pool_block_size(ab), 384));

    /* C merges with the free tail (next neighbour only). */
    tq_pool_free(pool, c);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 640));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_free(pool, ab);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 1024));
    cr_expect(eq(u64, tq_pool_used(pool), 0));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
}

Test(pool, coalesce_both_sides)
{
    tq_pool *pool = make_pool(4096, 64);
    tq_pool_block *x = alloc_ok(pool, 1024);
    tq_pool_block *y = alloc_ok(pool, 1024);
    tq_pool_block *z = alloc_ok(pool, 1024);
    tq_pool_block *guard = alloc_ok(pool, 1024);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 0));
    tq_pool_free(pool, x);
    tq_pool_free(pool, z);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 1024));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_free(pool, y);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 3072));
    cr_expect(eq(int, tq_pool_check(pool), 0));

    /* The freed range is reused from its start. */
    tq_pool_block *w = alloc_ok(pool, 3000);
    cr_expect(eq(u64, tq_pool_block_offset(w), 0));
    cr_expect(eq(u64, tq_pool_block_size(w), 3008));
    cr_expect(eq(u64, tq_pool_largest_free(pool), 64));
    tq_pool_free(pool, guard);
    tq_pool_free(pool, w);
    cr_expect(eq(u64, tq_pool_largest_free(pool), 4096));
    cr_expect(eq(int, tq_pool_check(pool), 0));
    tq_pool_destroy(pool);
}

/* xorshift64*: a fixed seed makes a failure replayable. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

struct live {
    tq_pool_block *block;
    uint64_t offset, size;
};

static int by_offset(const void *a, const void *b)
{
    const struct live *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static void check_shadow(const tq_pool *pool, struct live *live, size_t n)
{
    uint64_t cap = tq_pool_capacity(pool), used = 0;
    cr_assert(eq(int, tq_pool_check(pool), 0));
    qsort(live, n, sizeof(*live), by_offset);
    for (size_t i = 0; i < n; i++) {
        cr_assert(le(u64, live[i].offset + live[i].size, cap));
        cr_assert(lt(u64, live[i].offset, cap));
        if (i > 0)
            cr_assert(le(u64, live[i - 1].offset + live[i - 1].size, live[i].offset),
                      "live blocks %zu and %zu overlap", i - 1, i);
        used += live[i].size;
    }
    cr_assert(eq(u64, tq_pool_used(pool), used));
}

Test(pool, random_stress)
{
    enum { OPS = 200000, CHECK_EVERY = 1000 };
    const uint64_t align = 64;
    tq_pool *pool = make_pool(256 * MiB, align);
    uint64_t cap = tq_pool_capacity(pool);
    size_t cap_live = cap / align, n = 0;
    struct live *live = calloc(cap_live, sizeof(*live));
    cr_assert(ne(ptr, live, NULL));
    uint64_t seed = UINT64_C(0x9e3779b97f4a7c15);
    size_t allocs = 0, frees = 0, nospace = 0;

    for (int op = 1; op <= OPS; op++) {
        uint64_t r = rng_next(&seed);
        /* Lean towards allocating so the pool runs near full and NOSPACE happens. */
        if (n == 0 || r % 100 < 55) {
            uint64_t size = rng_next(&seed) % MiB + 1;
            tq_pool_block *b = NULL;
            int rc = tq_pool_alloc(pool, size, &b);
            if (rc == TQ_ERR_NOSPACE) {
                cr_assert(eq(ptr, b, NULL));
                /* Good fit, not best fit: a block just short of one class slice
                 * (1/32 of the size) more than the request may be passed over. */
                uint64_t want = TQ_ALIGN_UP(size, align);
                cr_assert(lt(u64, tq_pool_largest_free(pool), want + want / 32 + align));
                nospace++;
            } else {
                cr_assert(eq(int, rc, TQ_OK));
                uint64_t off = tq_pool_block_offset(b), sz = tq_pool_block_size(b);
                cr_assert(eq(u64, off % align, 0));
                cr_assert(ge(u64, sz, size));
                cr_assert(le(u64, off + sz, cap));
                cr_assert(lt(u64, n, cap_live));
                live[n++] = (struct live){b, off, sz};
                allocs++;
            }
        } else {
            size_t i = (size_t)(rng_next(&seed) % n);
            tq_pool_free(pool, live[i].block);
            live[i] = live[--n];
            frees++;
        }
        if (op % CHECK_EVERY == 0)
            check_shadow(pool, live, n);
    }
    cr_expect(lt(sz, 0, nospace), "the pool never filled up");
    cr_expect(lt(sz, 0, frees));
    cr_expect(lt(sz, 0, allocs));

    check_shadow(pool, live, n);
    for (size_t i = 0; i < n; i++)
        tq_pool_free(pool, live[i].block);
    cr_expect(eq(int, tq_pool_check(pool), 0));
    cr_expect(eq(u64, tq_pool_used(pool), 0));
    cr_expect(eq(u64, tq_pool_largest_free(pool), cap));
    free(live);
    tq_pool_destroy(pool);
}
