/* wire_touch.h: read every byte a wire decoder hands out, so AddressSanitizer
 * catches a pointer past the body (shared by test_wire.c and fuzz/fuzz_wire.c). */
#ifndef TQ_TEST_WIRE_TOUCH_H
#define TQ_TEST_WIRE_TOUCH_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

static volatile uint64_t wire_touch_sink;

static inline void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    wire_touch_sink += s;
}
static inline void touch_str(tq_str_t s) { touch(s.ptr, s.len); }
static inline void touch_blob(tq_blob_t b) { touch(b.ptr, b.len); }
static inline void touch_array(tq_array_t a)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < a.count; i++)
        s += tq_array_u64(a, i);
    wire_touch_sink += s;
}

#endif
