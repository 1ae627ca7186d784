/* rma.h: what every transport's post does alike: check the iovs, merge them into runs. */
#ifndef TQ_RMA_H
#define TQ_RMA_H

#include <stddef.h>
#include <stdint.h>

#include "tq/transport.h"

/* TQ_ERR_INVALID when an iov has a NULL or wrapping local range or reaches
 * outside a region of region_len bytes; empty iovs pass. Checked before
 * anything is posted, so a bad iov means nothing moved. */
int tq__rma_check(const tq_rma_iov_t *iov, size_t n, uint64_t region_len);

/* One transfer of a run: len bytes between local and remote offset off. */
typedef int (*tq__rma_issue_fn)(void *ctx, char *local, uint64_t off, size_t len);

/* Call issue once per run of iovs contiguous both locally and remotely
 * (empty iovs skipped), stopping at the first error it returns. */
int tq__rma_runs(const tq_rma_iov_t *iov, size_t n, tq__rma_issue_fn issue, void *ctx);

#endif
