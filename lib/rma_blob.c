/* rma_blob.c: what every transport's address and region blobs share: magic, version, checksum, a region's bounds. */
#include "rma_blob.h"

#include "util/common.h"

static uint32_t blob_sum(const uint8_t *b, size_t len, size_t sum_at)
{
    uint32_t sum = tq_fnv1a32(TQ_FNV32_SEED, b, sum_at);
    return tq_fnv1a32(sum, b + sum_at + 4, len - sum_at - 4);
}

void tq__rma_blob_head_put(uint8_t *b, uint32_t magic, uint8_t version)
{
    tq_put_le32(b, magic);
    b[4] = version;
}

void tq__rma_blob_seal(uint8_t *b, size_t len, size_t sum_at)
{
    tq_put_le32(b + sum_at, blob_sum(b, len, sum_at));
}

bool tq__rma_blob_check(const uint8_t *b, size_t len, uint32_t magic, uint8_t version, size_t sum_at)
{
    return len >= 5 && sum_at <= len && len - sum_at >= 4 && tq_get_le32(b) == magic &&
           b[4] == version && tq_get_le32(b + sum_at) == blob_sum(b, len, sum_at);
}

void tq__rma_blob_region_put(uint8_t *b, uint32_t magic, uint8_t version, uint8_t flags,
                             uint64_t base, uint64_t len)
{
    tq__rma_blob_head_put(b, magic, version);
    b[5] = flags;
    b[6] = b[7] = 0;
    tq_put_le64(b + 8, base);
    tq_put_le64(b + 16, len);
}

bool tq__rma_blob_region_get(const uint8_t *b, size_t len, uint32_t magic, uint8_t version,
                             uint8_t flags_ok, size_t sum_at, uint64_t *base_p, uint64_t *len_p)
{
    if (len < TQ_RMA_REGION_HEAD || !tq__rma_blob_check(b, len, magic, version, sum_at) ||
        (b[5] & ~flags_ok) != 0 || b[6] != 0 || b[7] != 0)
        return false;
    uint64_t base = tq_get_le64(b + 8);
    uint64_t rlen = tq_get_le64(b + 16);
    if (rlen == 0 || base + rlen < base)
        return false;
    *base_p = base;
    *len_p = rlen;
    return true;
}
