/* main.c: the tq-storage daemon. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/storage.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/config.h"

static tq_storage *the_unit;

static void on_signal(int sig)
{
    (void)sig;
    tq__storage_stop(the_unit);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tq-storage --controller HOST:PORT [--pool-size SIZE] [--transport NAME|all]\n"
            "                  [--config FILE]\n"
            "  --controller HOST:PORT  the controller to register with ($TQ_CONTROLLER)\n"
            "  --pool-size SIZE        bytes of pinned pool, K/M/G suffixes (default 1G)\n"
            "  --transport NAME|all    transports to serve the pool with (default all)\n"
            "  --config FILE           JSON object with keys controller, pool_size, transport,\n"
            "                          token, token_file\n"
            "  --token-file PATH       the shared secret, first line of PATH (wins over TQ_TOKEN)\n"
            "environment: TQ_TOKEN (shared secret), TQ_LOG (error|warn|info|debug)\n");
}

int main(int argc, char **argv)
{
    const char *controller = NULL, *pool = NULL, *transport = NULL, *config = NULL;
    const char *token_file = NULL;
    char *f_controller = NULL, *f_pool = NULL, *f_transport = NULL, *f_token = NULL;
    char *f_token_file = NULL, *token = NULL, err[512];
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"pool-size", required_argument, NULL, 's'},
        {"transport", required_argument, NULL, 't'},  {"config", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},             {"version", no_argument, NULL, 'V'},
        {"token-file", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = TQ_ERR_INVALID;
    while ((opt = getopt_long(argc, argv, "c:s:t:f:k:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'k': token_file = optarg; break;
        case 'c': controller = optarg; break;
        case 's': pool = optarg; break;
        case 't': transport = optarg; break;
        case 'f': config = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("tq-storage %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tq-storage: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (config != NULL) {
        tq_config_key_t keys[] = {{"controller", &f_controller}, {"pool_size", &f_pool},
                                  {"transport", &f_transport}, {"token", &f_token},
                                  {"token_file", &f_token_file}};
        if (tq__config_load(config, keys, 5, err, sizeof(err)) != 0) {
            fprintf(stderr, "tq-storage: %s\n", err);
            rc = TQ_ERR_INVALID;
            goto out;
        }
        controller = controller ? controller : f_controller;
        pool = pool ? pool : f_pool;
        transport = transport ? transport : f_transport;
    }
    if (controller == NULL && getenv("TQ_CONTROLLER") != NULL)
        controller = getenv("TQ_CONTROLLER");
    if (tq__token_resolve(token_file, f_token_file, f_token, &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "tq-storage: %s\n", err);
        goto out;
    }
    uint64_t pool_size = 1ULL << 30;
    if (controller == NULL) {
        fprintf(stderr, "tq-storage: --controller HOST:PORT is required\n");
        usage(stderr);
        goto out;
    }
    if (pool != NULL && tq__parse_size(pool, &pool_size) != 0) {
        fprintf(stderr, "tq-storage: bad --pool-size '%s' (e.g. 512M, 4G)\n", pool);
        goto out;
    }

    tq_storage_config_t cfg = {.controller = controller, .token = token,
                               .pool_size = pool_size, .transport = transport};
    /* The unit is known to the controller as soon as create returns: hold
     * SIGTERM until the handler can stop it, so a stop then is still clean.
     * Threads started by create inherit the mask, so signals come here. */
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
    signal(SIGPIPE, SIG_IGN);
    rc = tq__storage_create(&cfg, &the_unit);
    if (rc != TQ_OK) {
        fprintf(stderr, "tq-storage: cannot start: %s\n", tq_status_string(rc));
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
out:
    free(f_controller);
    free(f_pool);
    free(f_transport);
    free(f_token);
    free(f_token_file);
    free(token);
    return rc == TQ_OK ? 0 : rc == TQ_ERR_INVALID ? 2 : 1;
}
