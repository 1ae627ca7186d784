/* embedded.c: a controller and one storage unit inside the client's process. */
#include "embedded.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/controller.h"
#include "ctrl_conn.h"
#include "storage/storage.h"
#include "tq/tq.h"
#include "util/common.h"

struct tq__embedded {
    tq_controller *controller;
    tq_storage    *storage;
    pthread_t      controller_thread, storage_thread;
    bool           storage_running;
};

static void *controller_main(void *arg)
{
    tq__controller_run(arg);
    return NULL;
}

static void *storage_main(void *arg)
{
    tq__storage_run(arg);
    return NULL;
}

int tq__embedded_start(const char *token, uint64_t pool, char *address, size_t cap,
                       char *err, tq__embedded **e_p)
{
    tq__embedded *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return TQ_ERR_NOMEM;
    tq_controller_config_t ccfg = {.listen = "127.0.0.1:0", .token = token,
                                   .sampler_plugins = getenv("TQ_SAMPLER_PLUGIN")};
    int rc = tq__controller_create(&ccfg, &e->controller);
    if (rc != TQ_OK) {
        snprintf(err, TQ_ERRMSG_MAX, "cannot start the embedded controller");
        free(e);
        return rc;
    }
    if (pthread_create(&e->controller_thread, NULL, controller_main, e->controller) != 0) {
        tq__controller_destroy(e->controller);
        free(e);
        return TQ_ERR_NOMEM;
    }
    snprintf(address, cap, "%s", tq__controller_address(e->controller));
    /* Its data plane on loopback, like the controller, unless told otherwise
     * (verbs needs an RDMA device's address). */
    tq_storage_config_t scfg = {.controller = address, .token = token, .pool_size = pool,
                                .data_addr = getenv("TQ_DATA_ADDR")};
    rc = tq__storage_create(&scfg, &e->storage);
    if (rc == TQ_OK && pthread_create(&e->storage_thread, NULL, storage_main, e->storage) != 0)
        rc = TQ_ERR_NOMEM;
    if (rc != TQ_OK) {
        snprintf(err, TQ_ERRMSG_MAX, "cannot start the embedded storage unit: %s",
                 tq_status_string(rc));
        tq__storage_destroy(e->storage);
        e->storage = NULL;
        tq__embedded_stop(e);
        return rc;
    }
    e->storage_running = true;
    *e_p = e;
    return TQ_OK;
}

void tq__embedded_stop(tq__embedded *e)
{
    if (e == NULL)
        return;
    if (e->storage_running) {
        tq__storage_stop(e->storage);
        pthread_join(e->storage_thread, NULL);
    }
    tq__storage_destroy(e->storage);
    tq__controller_stop(e->controller);
    pthread_join(e->controller_thread, NULL);
    tq__controller_destroy(e->controller);
    free(e);
}
