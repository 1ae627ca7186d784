/* status.c: status strings, dtype sizes and names. */
#include "tq/tq.h"
#include "wire.h"

const char *tq_status_string(int status)
{
    switch (status) {
#define TQ_STATUS_CASE(name, value, text) case value: return text;
        TQ_STATUS_MAP(TQ_STATUS_CASE)
#undef TQ_STATUS_CASE
    }
    return "unknown status";
}

size_t tq_dtype_size(tq_dtype_t dtype)
{
    static const unsigned char sizes[] = {
        [TQ_DTYPE_BOOL] = 1, [TQ_DTYPE_U8] = 1,  [TQ_DTYPE_I8] = 1,   [TQ_DTYPE_I16] = 2,
        [TQ_DTYPE_I32] = 4,  [TQ_DTYPE_I64] = 8, [TQ_DTYPE_F16] = 2,  [TQ_DTYPE_BF16] = 2,
        [TQ_DTYPE_F32] = 4,  [TQ_DTYPE_F64] = 8, [TQ_DTYPE_BYTES] = 1,
        [TQ_DTYPE_U16] = 2,  [TQ_DTYPE_U32] = 4, [TQ_DTYPE_U64] = 8,  [TQ_DTYPE_C32] = 4,
        [TQ_DTYPE_C64] = 8,  [TQ_DTYPE_C128] = 16,
    };
    return (unsigned)dtype < sizeof(sizes) ? sizes[dtype] : 0;
}

const char *tq__dtype_name(tq_dtype_t dtype)
{
    static const char *const names[] = {
        [TQ_DTYPE_BOOL] = "bool", [TQ_DTYPE_U8] = "u8",     [TQ_DTYPE_I8] = "i8",
        [TQ_DTYPE_I16] = "i16",   [TQ_DTYPE_I32] = "i32",   [TQ_DTYPE_I64] = "i64",
        [TQ_DTYPE_F16] = "f16",   [TQ_DTYPE_BF16] = "bf16", [TQ_DTYPE_F32] = "f32",
        [TQ_DTYPE_F64] = "f64",   [TQ_DTYPE_BYTES] = "bytes", [TQ_DTYPE_U16] = "u16",
        [TQ_DTYPE_U32] = "u32",   [TQ_DTYPE_U64] = "u64",   [TQ_DTYPE_C32] = "c32",
        [TQ_DTYPE_C64] = "c64",   [TQ_DTYPE_C128] = "c128",
    };
    return (unsigned)dtype < sizeof(names) / sizeof(names[0]) && names[dtype] != NULL
               ? names[dtype] : "unknown";
}
