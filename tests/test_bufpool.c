/* test_bufpool.c: receive buffers of every size class come back the way they were taken. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <string.h>

#include "bufpool.h"

/* Sizes on both sides of where heap buffers end and mapped ones begin (64 KiB),
 * and of the 64-byte rounding that once put a heap buffer on the mapped side. */
static const size_t SIZES[] = {0, 1, 63, 64, 65, 65472, 65473, 65500, 65535, 65536, 65537,
                               (2u << 20) - 1, (2u << 20) + 1};

Test(bufpool, every_size_class_round_trips)
{
    /* run under AddressSanitizer, a buffer freed the wrong way or never is a report */
    for (int cache = 0; cache < 2; cache++) {
        tq__bufpool *bp = tq__bufpool_create(cache ? (64u << 20) : 0);
        cr_assert(bp != NULL);
        for (int round = 0; round < 3; round++)
            for (size_t i = 0; i < sizeof(SIZES) / sizeof(SIZES[0]); i++) {
                size_t cap = 0;
                uint8_t *p = tq__bufpool_get(bp, SIZES[i], &cap);
                cr_assert(p != NULL, "size %zu", SIZES[i]);
                cr_expect(ge(sz, cap, SIZES[i] ? SIZES[i] : 1), "size %zu", SIZES[i]);
                cr_expect(eq(u64, (uintptr_t)p % 64, 0), "size %zu is not 64-byte aligned",
                          SIZES[i]);
                memset(p, 0xab, cap); /* all of the capacity is ours */
                tq__bufpool_put(bp, p, cap);
            }
        tq__bufpool_unref(bp);
    }
}

Test(bufpool, buffers_outlive_the_owner)
{
    tq__bufpool *bp = tq__bufpool_create(1u << 20);
    size_t small_cap, big_cap;
    void *small = tq__bufpool_get(bp, 65500, &small_cap);
    void *big = tq__bufpool_get(bp, 1u << 20, &big_cap);
    cr_assert(small != NULL && big != NULL);
    tq__bufpool_unref(bp); /* batches may outlive their client */
    memset(small, 1, small_cap);
    memset(big, 2, big_cap);
    tq__bufpool_put(bp, small, small_cap);
    tq__bufpool_put(bp, big, big_cap); /* the last reference: the pool goes with it */
}
