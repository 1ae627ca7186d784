/* rma.c: what every transport's post does alike: check the iovs, merge them into runs. */
#include "rma.h"

int tq__rma_check(const tq_rma_iov_t *iov, size_t n, uint64_t region_len)
{
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

int tq__rma_runs(const tq_rma_iov_t *iov, size_t n, tq__rma_issue_fn issue, void *ctx)
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
            int rc = issue(ctx, run, run_off, run_len);
            if (rc != TQ_OK)
                return rc;
        }
        run = p;
        run_off = iov[i].remote_offset;
        run_len = iov[i].length;
    }
    return run != NULL ? issue(ctx, run, run_off, run_len) : TQ_OK;
}
