/* rma.c: what every transport's post does alike: check the iovs, merge them into runs. */
#include "rma.h"

int tq__rma_check(tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n, uint64_t region_len)
{
    if ((dir != TQ_RMA_PUT && dir != TQ_RMA_GET) || (iov == NULL && n > 0))
        return TQ_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].length == 0)
            continue;
        if (iov[i].local == NULL ||
            (uintptr_t)iov[i].local + iov[i].length < (uintptr_t)iov[i].local ||
            iov[i].remote_offset > region_len ||
            (uint64_t)iov[i].length > region_len - iov[i].remote_offset)
            return TQ_ERR_INVALID;
    }
    return TQ_OK;
}

int tq__rma_runs(tq__rma_post_t *post, const tq_rma_iov_t *iov, size_t n, tq__rma_issue_fn issue)
{
    char *run = NULL;
    uint64_t run_off = 0;
    size_t run_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (iov[i].length == 0)
            continue;
        char *p = iov[i].local;
        if (run != NULL && p == run + run_len && iov[i].remote_offset == run_off + run_len &&
            run_len + iov[i].length >= run_len) {
            run_len += iov[i].length;
            continue;
        }
        if (run != NULL) {
            int rc = issue(post, run, run_off, run_len);
            if (rc != TQ_OK)
                return rc;
        }
        run = p;
        run_off = iov[i].remote_offset;
        run_len = iov[i].length;
    }
    return run != NULL ? issue(post, run, run_off, run_len) : TQ_OK;
}
