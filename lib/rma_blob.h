/* rma_blob.h: what every transport's address and region blobs share: magic, version, checksum, a region's bounds. */
#ifndef TQ_RMA_BLOB_H
#define TQ_RMA_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Every blob (little endian) starts with its transport's magic u32 and a
 * version byte, and carries a u32 checksum (FNV-1a) of all its bytes but the
 * checksum's own, at an offset of its layout's choosing: a garbled blob is
 * refused before the transport's library parses it. A region blob goes on
 * with a flags byte, two zero bytes, the region's base u64 and length u64
 * (TQ_RMA_REGION_HEAD bytes in all); its key follows, as the transport has it.
 */
#define TQ_RMA_REGION_HEAD 24u

/* Magic and version at b[0, 5). */
void tq__rma_blob_head_put(uint8_t *b, uint32_t magic, uint8_t version);
/* The checksum of b[0, len) at b + sum_at: last, once every other byte is in. */
void tq__rma_blob_seal(uint8_t *b, size_t len, size_t sum_at);
/* Does b[0, len) start with magic and version, and carry a right checksum at
 * sum_at (inside it)? */
bool tq__rma_blob_check(const uint8_t *b, size_t len, uint32_t magic, uint8_t version, size_t sum_at);

/* A region blob's head at b[0, TQ_RMA_REGION_HEAD). */
void tq__rma_blob_region_put(uint8_t *b, uint32_t magic, uint8_t version, uint8_t flags,
                             uint64_t base, uint64_t len);
/* Does b[0, len) hold a region blob's head with magic and version, no flags
 * but those in flags_ok, zero padding and a nonempty range that does not
 * wrap, and a right checksum at sum_at? The range into *base_p, *len_p. */
bool tq__rma_blob_region_get(const uint8_t *b, size_t len, uint32_t magic, uint8_t version,
                             uint8_t flags_ok, size_t sum_at, uint64_t *base_p, uint64_t *len_p);

#endif
