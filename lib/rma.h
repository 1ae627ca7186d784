/* rma.h: what every transport's post does alike: check the iovs, merge them into runs. */
#ifndef TQ_RMA_H
#define TQ_RMA_H

#include <stddef.h>
#include <stdint.h>

#include "tq/transport.h"

/* TQ_ERR_INVALID for a direction other than put or get, a NULL iov array of
 * n > 0, or an iov with a NULL or wrapping local range or reaching outside a
 * region of region_len bytes; empty iovs pass. Checked before anything is
 * posted, so a bad iov means nothing moved. */
int tq__rma_check(tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n, uint64_t region_len);

/* A post's fixed arguments, handed to each transfer it issues. */
typedef struct {
    tq_transport        *tr;
    tq_transport_ep     *ep;
    tq_transport_region *region;
    tq_rma_dir_t         dir;
} tq__rma_post_t;

/* One transfer of a run: len bytes between local and remote offset off. */
typedef int (*tq__rma_issue_fn)(tq__rma_post_t *post, char *local, uint64_t off, size_t len);

/* Call issue once per run of iovs contiguous both locally and remotely
 * (empty iovs skipped), stopping at the first error it returns. */
int tq__rma_runs(tq__rma_post_t *post, const tq_rma_iov_t *iov, size_t n, tq__rma_issue_fn issue);

#endif
