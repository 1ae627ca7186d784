/* main.c: the tq-controller daemon. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "controller/controller.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/config.h"
#include "util/log.h"

static tq_controller *the_controller;

static void on_signal(int sig)
{
    (void)sig;
    tq__controller_stop(the_controller);
}

enum {
    OPT_LISTEN, OPT_PORT_FILE, OPT_METRICS, OPT_METRICS_TIMEOUT_MS, OPT_TOKEN_FILE, OPT_TOKEN,
    OPT_LEASE_MS, OPT_HEARTBEAT_MS, OPT_MAX_CONNECTIONS, OPT_MAX_PARTITIONS, OPT_MAX_METADATA,
    OPT_SAMPLER_PLUGIN, OPT_SPIN_US, OPT_LOG, OPT_COUNT
};

static tq_config_opt_t opts[OPT_COUNT] = {
    [OPT_LISTEN] = {"listen", "TQ_LISTEN", "listen", "HOST:PORT",
                    "address to serve; port 0 picks one", "127.0.0.1:7781"},
    [OPT_PORT_FILE] = {"port-file", "TQ_PORT_FILE", "port_file", "PATH",
                       "write the bound HOST:PORT there", NULL},
    [OPT_METRICS] = {"metrics", "TQ_METRICS", "metrics", "HOST:PORT",
                     "serve Prometheus metrics at http://HOST:PORT/metrics", NULL},
    [OPT_METRICS_TIMEOUT_MS] = {"metrics-timeout-ms", "TQ_METRICS_TIMEOUT_MS",
                                "metrics_timeout_ms", "N",
                                "a scrape not done N ms after it connected is closed", "10000"},
    [OPT_TOKEN_FILE] = {"token-file", "TQ_TOKEN_FILE", "token_file", "PATH",
                        "the shared secret: the first line of PATH", NULL},
    [OPT_TOKEN] = {NULL, "TQ_TOKEN", "token", "SECRET", "the shared secret itself", NULL},
    [OPT_LEASE_MS] = {"lease-ms", "TQ_LEASE_MS", "lease_ms", "N",
                      "pins and uncommitted allocations are let go after N ms", "60000"},
    [OPT_HEARTBEAT_MS] = {"heartbeat-timeout-ms", "TQ_HEARTBEAT_TIMEOUT_MS",
                          "heartbeat_timeout_ms", "N",
                          "a storage unit silent this long is dead (they beat each second)",
                          "3000"},
    [OPT_MAX_CONNECTIONS] = {"max-connections", "TQ_MAX_CONNECTIONS", "max_connections", "N",
                             "more connections are closed at once; RLIMIT_NOFILE is raised "
                             "to fit, up to the hard limit", "4096"},
    [OPT_MAX_PARTITIONS] = {"max-partitions", "TQ_MAX_PARTITIONS", "max_partitions", "N",
                            "puts that would create more partitions fail", "65536"},
    [OPT_MAX_METADATA] = {"max-metadata", "TQ_MAX_METADATA", "max_metadata", "SIZE",
                          "row metadata of all partitions, ~100 bytes a row and field",
                          "4G"},
    [OPT_SAMPLER_PLUGIN] = {"sampler-plugin", "TQ_SAMPLER_PLUGIN", "sampler_plugin", "PATH.so",
                            "load custom samplers (tq/sampler.h); ':'-separated list", NULL,
                            .repeat = true},
    [OPT_SPIN_US] = {"spin-us", "TQ_SPIN_US", "spin_us", "N",
                     "poll this long for the next request before sleeping", "50"},
    [OPT_LOG] = {"log", "TQ_LOG", "log", "LEVEL", "error, warn, info or debug", "warn"},
};

/* Every value checked before anything starts: a bad one is an error naming its origin. */
static int settings(tq_controller_config_t *cfg, char **token, char *err, size_t cap)
{
    unsigned long lease = 0, heartbeat = 0, conns = 0, parts = 0, spin = 0, scrape = 0;
    uint64_t metadata = 0;
    if (tq__config_uint(&opts[OPT_LEASE_MS], 100, 86400000, &lease, err, cap) != 0 ||
        tq__config_uint(&opts[OPT_HEARTBEAT_MS], 2000, 3600000, &heartbeat, err, cap) != 0 ||
        tq__config_uint(&opts[OPT_MAX_CONNECTIONS], 1, 1000000, &conns, err, cap) != 0 ||
        tq__config_uint(&opts[OPT_METRICS_TIMEOUT_MS], 100, 3600000, &scrape, err, cap) != 0 ||
        tq__config_uint(&opts[OPT_MAX_PARTITIONS], 1, 100000000, &parts, err, cap) != 0 ||
        tq__config_size(&opts[OPT_MAX_METADATA], 1u << 20, &metadata, err, cap) != 0 ||
        tq__config_uint(&opts[OPT_SPIN_US], 0, 100000, &spin, err, cap) != 0 ||
        tq__log_set_level(opts[OPT_LOG].value, err, cap) != 0 ||
        tq__token_resolve(&opts[OPT_TOKEN_FILE], &opts[OPT_TOKEN], token, err, cap) != 0)
        return -1;
    tq__spin_set_us((unsigned)spin);
    *cfg = (tq_controller_config_t){.listen = opts[OPT_LISTEN].value, .token = *token,
                                    .metrics = opts[OPT_METRICS].value,
                                    .heartbeat_timeout_ms = (int)heartbeat,
                                    .sampler_plugins = opts[OPT_SAMPLER_PLUGIN].value,
                                    .lease_ms = (unsigned)lease,
                                    .max_connections = (unsigned)conns,
                                    .metrics_timeout_ms = (unsigned)scrape,
                                    .max_partitions = (unsigned)parts,
                                    .max_metadata = metadata,
                                    .fit_fd_limit = true};
    return 0;
}

static int write_port_file(const char *path, const char *address)
{
    /* write then rename, so a reader never sees half an address */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    int failed = fprintf(f, "%s\n", address) < 0;
    failed |= fclose(f) != 0;
    return failed || rename(tmp, path) != 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    int status = tq__config_parse("tq-controller",
                                  "Tracks which field of which sample is produced and consumed,\n"
                                  "and hands out where each lives in the storage units.",
                                  opts, OPT_COUNT, argc, argv);
    if (status != TQ_CONFIG_RUN) /* --help, --version or an error */
        goto out;
    /* a large buffer (a scrape's answer, a big reply) goes back to the system
     * when freed: glibc would otherwise raise this threshold after the first
     * one and keep the next ones in the heap, held after their connections */
#ifdef M_MMAP_THRESHOLD
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
    char err[1024], *token = NULL;
    tq_controller_config_t cfg;
    if (settings(&cfg, &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "tq-controller: %s\n", err);
        status = 2;
        goto out;
    }
    int rc = tq__controller_create(&cfg, &the_controller);
    free(token);
    if (rc != TQ_OK) {
        fprintf(stderr, "tq-controller: cannot start: %s\n", tq_status_string(rc));
        status = rc == TQ_ERR_INVALID ? 2 : 1;
        goto out;
    }
    /* before anyone learns the address, so a SIGTERM always exits cleanly */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    const char *address = tq__controller_address(the_controller);
    if (opts[OPT_PORT_FILE].value != NULL &&
        write_port_file(opts[OPT_PORT_FILE].value, address) != 0) {
        fprintf(stderr, "tq-controller: cannot write port file %s\n", opts[OPT_PORT_FILE].value);
        tq__controller_destroy(the_controller);
        status = 1;
        goto out;
    }
    printf("%s\n", address);
    if (tq__controller_metrics_address(the_controller) != NULL)
        printf("metrics http://%s/metrics\n", tq__controller_metrics_address(the_controller));
    fflush(stdout);
    rc = tq__controller_run(the_controller);
    tq__controller_destroy(the_controller);
    status = rc == TQ_OK ? 0 : 1;
out:
    tq__config_free(opts, OPT_COUNT);
    return status;
}
