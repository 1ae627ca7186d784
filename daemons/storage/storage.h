/* storage.h: the tq-storage core, run by the daemon or inside a client (embedded). */
#ifndef TQ_STORAGE_H
#define TQ_STORAGE_H

#include <stdint.h>

typedef struct tq_storage tq_storage;

typedef struct {
    const char *controller;   /* "host:port" */
    const char *token;        /* NULL: none */
    uint64_t    pool_size;    /* bytes */
    const char *transport;    /* "all" (NULL) or one transport's name */
    /* Where the data plane listens: an IP address or interface of this host,
     * "any" (every interface), or NULL: the address the controller is reached by. */
    const char *data_addr;
} tq_storage_config_t;

/* Check the pool fits the memory this process may use (TQ_ERR_INVALID if
 * not), connect to the controller, allocate and pin the pool, register it
 * with the transports bound to the data address, and register the unit
 * with the controller. Returns once the controller has accepted it. */
int  tq__storage_create(const tq_storage_config_t *cfg, tq_storage **s_p);
/* Heartbeat and progress until tq__storage_stop or the controller goes away
 * (then TQ_ERR_CONNECTION). */
int  tq__storage_run(tq_storage *s);
/* Safe from any thread and from a signal handler. */
void tq__storage_stop(tq_storage *s);
void tq__storage_destroy(tq_storage *s);
uint32_t tq__storage_unit_id(const tq_storage *s);

#endif
