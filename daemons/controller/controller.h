/* controller.h: the tq-controller core, run by the daemon or inside a client (embedded). */
#ifndef TQ_CONTROLLER_H
#define TQ_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tq_controller tq_controller;

typedef struct {
    const char *listen;               /* "host:port"; port 0 picks a free one */
    const char *token;                /* NULL or "": no authentication */
    const char *metrics;              /* "host:port" to serve /metrics on, or NULL */
    int         heartbeat_timeout_ms; /* a unit silent this long is dead; 0: 3000 */
    const char *sampler_plugins;      /* ':'-separated shared objects, or NULL */
    /* Leases and limits; 0 takes the default in parentheses. */
    unsigned    lease_ms;             /* pins and uncommitted allocations (60000) */
    unsigned    max_connections;      /* more are closed at once (4096) */
    unsigned    metrics_timeout_ms;   /* a scrape is closed this long after it connected (10000) */
    unsigned    max_partitions;       /* a put that would create more fails (65536) */
    unsigned long long max_metadata;  /* bytes of row metadata of all partitions (4 GiB) */
    /* The process is the controller's own (the daemon, not a client embedding
     * it): raise RLIMIT_NOFILE towards what max_connections needs, and serve
     * fewer connections, with a warning, where the hard limit is lower. */
    bool        fit_fd_limit;
} tq_controller_config_t;

/* Bind and listen. TQ_ERR_INVALID for a bad address, TQ_ERR_IO when binding fails. */
int  tq__controller_create(const tq_controller_config_t *cfg, tq_controller **ctl_p);
/* The bound "host:port", and that of /metrics (NULL when not served). */
const char *tq__controller_address(const tq_controller *ctl);
const char *tq__controller_metrics_address(const tq_controller *ctl);
/* Serve until tq__controller_stop; returns TQ_OK or the error that ended it. */
int  tq__controller_run(tq_controller *ctl);
/* Ask run() to return; safe from any thread and from a signal handler. */
void tq__controller_stop(tq_controller *ctl);
/* After run() returned: close every connection and free everything. */
void tq__controller_destroy(tq_controller *ctl);

#endif
