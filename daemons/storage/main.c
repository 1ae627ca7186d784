/* main.c: the tq-storage daemon. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "storage/storage.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/config.h"
#include "util/log.h"

static tq_storage *the_unit;

static void on_signal(int sig)
{
    (void)sig;
    tq__storage_stop(the_unit);
}

enum {
    OPT_CONTROLLER, OPT_POOL_SIZE, OPT_TRANSPORT, OPT_DATA_ADDR, OPT_TOKEN_FILE, OPT_TOKEN,
    OPT_LOG, OPT_COUNT
};

static tq_config_opt_t opts[OPT_COUNT] = {
    [OPT_CONTROLLER] = {"controller", "TQ_CONTROLLER", "controller", "HOST:PORT",
                        "the controller to register with (required)", NULL},
    [OPT_POOL_SIZE] = {"pool-size", "TQ_POOL_SIZE", "pool_size", "SIZE",
                       "bytes of pinned pool, K/M/G suffixes", "1G"},
    [OPT_TRANSPORT] = {"transport", "TQ_TRANSPORT", "transport", "NAME|all",
                       "serve the pool with this transport, or all that work here", "all"},
    [OPT_DATA_ADDR] = {"data-addr", "TQ_DATA_ADDR", "data_addr", "ADDR|IFACE|any",
                       "where the data plane listens (default: the address the controller "
                       "is reached from)", NULL},
    [OPT_TOKEN_FILE] = {"token-file", "TQ_TOKEN_FILE", "token_file", "PATH",
                        "the shared secret: the first line of PATH", NULL},
    [OPT_TOKEN] = {NULL, "TQ_TOKEN", "token", "SECRET", "the shared secret itself", NULL},
    [OPT_LOG] = {"log", "TQ_LOG", "log", "LEVEL", "error, warn, info or debug", "warn"},
};

int main(int argc, char **argv)
{
    int status = tq__config_parse("tq-storage",
                                  "Registers a pinned memory pool that clients read and write\n"
                                  "with one-sided RMA, and reports to the controller.",
                                  opts, OPT_COUNT, argc, argv);
    if (status != TQ_CONFIG_RUN) /* --help, --version or an error */
        goto out;
    char err[1024], *token = NULL;
    uint64_t pool_size = 0;
    status = 2;
    if (opts[OPT_CONTROLLER].value == NULL) {
        fprintf(stderr, "tq-storage: --controller HOST:PORT (or $TQ_CONTROLLER) is required\n");
        goto out;
    }
    if (tq__config_size(&opts[OPT_POOL_SIZE], 4096, &pool_size, err, sizeof(err)) != 0 ||
        tq__log_set_level(opts[OPT_LOG].value, err, sizeof(err)) != 0 ||
        tq__token_resolve(&opts[OPT_TOKEN_FILE], &opts[OPT_TOKEN], &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "tq-storage: %s\n", err);
        goto out;
    }
    tq_storage_config_t cfg = {.controller = opts[OPT_CONTROLLER].value, .token = token,
                               .pool_size = pool_size, .transport = opts[OPT_TRANSPORT].value,
                               .data_addr = opts[OPT_DATA_ADDR].value};
    /* The unit is known to the controller as soon as create returns: hold
     * SIGTERM until the handler can stop it, so a stop then is still clean.
     * Threads started by create inherit the mask, so signals come here. */
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
    signal(SIGPIPE, SIG_IGN);
    int rc = tq__storage_create(&cfg, &the_unit);
    free(token);
    if (rc != TQ_OK) {
        fprintf(stderr, "tq-storage: cannot start: %s\n", tq_status_string(rc));
        status = rc == TQ_ERR_INVALID ? 2 : 1;
        goto out;
    }
    printf("unit %u\n", tq__storage_unit_id(the_unit));
    fflush(stdout);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL); /* a SIGTERM held since start lands now */
    rc = tq__storage_run(the_unit);
    tq__storage_destroy(the_unit);
    status = rc == TQ_OK ? 0 : 1;
out:
    tq__config_free(opts, OPT_COUNT);
    return status;
}
