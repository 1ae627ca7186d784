/* transport.h: the contract between tqrdma and a one-sided RMA transport. */
#ifndef TQ_TRANSPORT_H
#define TQ_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tq/tq.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A transport moves bytes between local memory and a peer's registered region
 * without the peer's code running per operation. tqrdma passes blobs made by one
 * side (address, region) to the other through the controller, which never looks
 * inside them.
 *
 * Threading: one tq_transport and everything made from it is used by one thread
 * at a time; callers serialise.
 *
 * Memory: blobs returned through void ** are malloc'd; the caller frees them.
 * Every handle is released by the matching close/release/deregister call, and
 * fini() after all of them.
 */
typedef struct tq_transport        tq_transport;        /* one instance: context, worker */
typedef struct tq_transport_ep     tq_transport_ep;     /* a connection to a peer */
typedef struct tq_transport_mem    tq_transport_mem;    /* local memory registered for remote access */
typedef struct tq_transport_region tq_transport_region; /* a peer's region, unpacked */

typedef enum { TQ_RMA_PUT, TQ_RMA_GET } tq_rma_dir_t;

/*
 * How an instance starts. A zeroed struct (or NULL) leaves every choice to the
 * transport. A storage unit passes the address its data plane is bound to:
 * every endpoint that peers connect to listens on that address only, through
 * that interface (and the RDMA port behind it); a provider or device that
 * cannot is not used.
 */
typedef struct {
    const struct sockaddr *bind_addr;  /* an IP address of this host, port 0; NULL: any */
    socklen_t              bind_addr_len;
    const char            *bind_iface; /* the interface that has bind_addr */
} tq_transport_params_t;

/* One transfer: `length` bytes between `local` and byte `remote_offset` of a region. */
typedef struct {
    void    *local;
    uint64_t remote_offset;
    size_t   length;
} tq_rma_iov_t;

typedef struct tq_transport_ops {
    const char *name;

    /* Create an instance (params may be NULL). TQ_ERR_UNSUPPORTED when no
     * usable device or provider (none on the bind address, if one is given). */
    int  (*init)(const tq_transport_params_t *params, tq_transport **tr_p);
    void (*fini)(tq_transport *tr);

    /* This instance's address, for a peer's ep_connect. */
    int  (*address)(tq_transport *tr, void **blob_p, size_t *len_p);

    /* Allocate len bytes of the memory that peers reach best and register it
     * (UCX: shared memory that peers on the same node map and copy into
     * directly). TQ_ERR_UNSUPPORTED: the caller allocates and calls
     * mem_register. mem_deregister frees what mem_alloc allocated. */
    int  (*mem_alloc)(tq_transport *tr, size_t len, void **addr_p, tq_transport_mem **mem_p);

    /* Register [addr, addr+len) for remote read and write; pack its region blob. */
    int  (*mem_register)(tq_transport *tr, void *addr, size_t len, tq_transport_mem **mem_p);
    int  (*mem_pack)(tq_transport *tr, tq_transport_mem *mem, void **blob_p, size_t *len_p);
    void (*mem_deregister)(tq_transport *tr, tq_transport_mem *mem);

    /* Connect to a peer's address blob. A peer that fails later turns the
     * endpoint's operations into TQ_ERR_CONNECTION, never a hang. */
    int  (*ep_connect)(tq_transport *tr, const void *addr, size_t len, tq_transport_ep **ep_p);
    void (*ep_close)(tq_transport *tr, tq_transport_ep *ep);

    /* Unpack a peer's region blob for use on ep. */
    int  (*region_unpack)(tq_transport *tr, tq_transport_ep *ep, const void *blob, size_t len,
                          tq_transport_region **region_p);
    void (*region_release)(tq_transport *tr, tq_transport_region *region);

    /* Start n transfers in one direction. Local memory needs no registration by
     * the caller: the transport registers (and caches) it or stages it. The local
     * buffers stay borrowed until flush returns. Offsets and lengths outside the
     * region are TQ_ERR_INVALID, checked before anything is posted. */
    int  (*post)(tq_transport *tr, tq_transport_ep *ep, tq_transport_region *region,
                 tq_rma_dir_t dir, const tq_rma_iov_t *iov, size_t n);

    /* Wait until every transfer posted on ep has completed remotely, for at most
     * timeout_ms (-1: no limit). TQ_ERR_TIMEOUT or TQ_ERR_CONNECTION leave the
     * endpoint failed: close it. */
    int  (*flush)(tq_transport *tr, tq_transport_ep *ep, int timeout_ms);

    /* Make progress; when there is nothing to do, wait for an event at most
     * timeout_ms (0: do not wait). Passive targets call this in a loop for
     * transports that emulate RMA in software. */
    int  (*progress)(tq_transport *tr, int timeout_ms);
} tq_transport_ops;

#ifdef __cplusplus
}
#endif
#endif /* TQ_TRANSPORT_H */
