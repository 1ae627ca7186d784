/* main.c: the tq-controller daemon. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/controller.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/config.h"

static tq_controller *the_controller;

static void on_signal(int sig)
{
    (void)sig;
    tq__controller_stop(the_controller);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tq-controller [--listen HOST:PORT] [--port-file PATH] [--config FILE]\n"
            "                     [--token-file PATH] [--lease-ms N] [--max-connections N]\n"
            "                     [--max-partitions N] [--max-metadata SIZE]\n"
            "                     [--sampler-plugin PATH.so]\n"
            "  --listen HOST:PORT  address to serve (default 127.0.0.1:7781; port 0 picks one)\n"
            "  --port-file PATH    write the bound HOST:PORT there\n"
            "  --config FILE       JSON object with keys listen, port_file, token, token_file,\n"
            "                      sampler_plugin, lease_ms, max_connections, max_partitions,\n"
            "                      max_metadata\n"
            "  --token-file PATH   the shared secret, first line of PATH (wins over TQ_TOKEN)\n"
            "  --lease-ms N        pins and uncommitted allocations are let go after N ms\n"
            "                      (default 60000)\n"
            "  --max-connections N more connections are closed at once (default 4096)\n"
            "  --max-partitions N  puts that would create more fail (default 65536)\n"
            "  --max-metadata SIZE row metadata of all partitions, about 100 bytes a row and\n"
            "                      field; past it puts fail with NOSPACE (default 4G)\n"
            "  --sampler-plugin PATH.so  load custom samplers (tq/sampler.h); repeatable\n"
            "environment: TQ_TOKEN (shared secret), TQ_SAMPLER_PLUGIN (':'-separated .so paths),\n"
            "             TQ_LOG (error|warn|info|debug)\n");
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *port_file = NULL, *config = NULL, *token_file = NULL;
    const char *limits[3] = {NULL, NULL, NULL}; /* lease_ms, max_connections, max_partitions */
    const char *max_metadata = NULL;
    char *f_max_metadata = NULL;
    char *f_listen = NULL, *f_port_file = NULL, *f_token = NULL, *f_plugin = NULL; /* --config */
    char *f_token_file = NULL, *f_limits[3] = {NULL, NULL, NULL}, *token = NULL;
    char plugins[8192] = ""; /* every --sampler-plugin, ':'-separated */
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"port-file", required_argument, NULL, 'p'},
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {"sampler-plugin", required_argument, NULL, 's'},
        {"token-file", required_argument, NULL, 't'}, {"lease-ms", required_argument, NULL, 'L'},
        {"max-connections", required_argument, NULL, 'C'},
        {"max-partitions", required_argument, NULL, 'P'},
        {"max-metadata", required_argument, NULL, 'M'},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = TQ_OK;
    while ((opt = getopt_long(argc, argv, "l:p:c:s:t:L:C:P:M:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': listen = optarg; break;
        case 't': token_file = optarg; break;
        case 'L': limits[0] = optarg; break;
        case 'C': limits[1] = optarg; break;
        case 'P': limits[2] = optarg; break;
        case 'M': max_metadata = optarg; break;
        case 'p': port_file = optarg; break;
        case 'c': config = optarg; break;
        case 's':
            if (strlen(plugins) + strlen(optarg) + 2 > sizeof(plugins)) {
                fprintf(stderr, "tq-controller: too many --sampler-plugin paths\n");
                return 2;
            }
            if (plugins[0] != '\0')
                strcat(plugins, ":");
            strcat(plugins, optarg);
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("tq-controller %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tq-controller: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (config != NULL) {
        /* flags win over the file: load the file into what flags left unset */
        char err[512];
        tq_config_key_t keys[] = {{"listen", &f_listen}, {"port_file", &f_port_file},
                                  {"token", &f_token}, {"sampler_plugin", &f_plugin},
                                  {"token_file", &f_token_file}, {"lease_ms", &f_limits[0]},
                                  {"max_connections", &f_limits[1]},
                                  {"max_partitions", &f_limits[2]},
                                  {"max_metadata", &f_max_metadata}};
        if (tq__config_load(config, keys, ARRAY_SIZE(keys), err, sizeof(err)) != 0) {
            fprintf(stderr, "tq-controller: %s\n", err);
            rc = TQ_ERR_INVALID;
            goto out;
        }
        listen = listen ? listen : f_listen;
        port_file = port_file ? port_file : f_port_file;
        for (size_t i = 0; i < ARRAY_SIZE(limits); i++)
            limits[i] = limits[i] ? limits[i] : f_limits[i];
        max_metadata = max_metadata ? max_metadata : f_max_metadata;
    }
    char err[512];
    if (tq__token_resolve(token_file, f_token_file, f_token, &token, err, sizeof(err)) != 0) {
        fprintf(stderr, "tq-controller: %s\n", err);
        rc = TQ_ERR_INVALID;
        goto out;
    }
    static const char *const limit_names[] = {"--lease-ms", "--max-connections",
                                              "--max-partitions"};
    unsigned limit_values[3] = {0, 0, 0};
    for (size_t i = 0; i < ARRAY_SIZE(limits); i++) {
        char *end = NULL;
        unsigned long v = limits[i] ? strtoul(limits[i], &end, 10) : 0;
        if (limits[i] != NULL && (end == limits[i] || *end != '\0' || v == 0 || v > 1000000000ul ||
                                  limits[i][0] == '-')) {
            fprintf(stderr, "tq-controller: bad %s '%s' (a positive integer)\n", limit_names[i],
                    limits[i]);
            rc = TQ_ERR_INVALID;
            goto out;
        }
        limit_values[i] = (unsigned)v;
    }
    uint64_t metadata_bytes = 0;
    if (max_metadata != NULL && (tq__parse_size(max_metadata, &metadata_bytes) != 0 ||
                                 metadata_bytes < (1u << 20))) {
        fprintf(stderr, "tq-controller: bad --max-metadata '%s' (a size of 1M or more)\n",
                max_metadata);
        rc = TQ_ERR_INVALID;
        goto out;
    }

    const char *plugin_list = plugins[0] ? plugins : f_plugin ? f_plugin : getenv("TQ_SAMPLER_PLUGIN");
    tq_controller_config_t cfg = {.listen = listen ? listen : "127.0.0.1:7781", .token = token,
                                  .sampler_plugins = plugin_list, .lease_ms = limit_values[0],
                                  .max_connections = limit_values[1],
                                  .max_partitions = limit_values[2],
                                  .max_metadata = metadata_bytes};
    rc = tq__controller_create(&cfg, &the_controller);
    if (rc != TQ_OK) {
        fprintf(stderr, "tq-controller: cannot start: %s\n", tq_status_string(rc));
        goto out;
    }
    /* before anyone learns the address, so a SIGTERM always exits cleanly */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    const char *address = tq__controller_address(the_controller);
    if (port_file != NULL) {
        /* write then rename, so a reader never sees half an address */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%s\n", address) < 0 || fclose(f) != 0 ||
            rename(tmp, port_file) != 0) {
            fprintf(stderr, "tq-controller: cannot write port file %s\n", port_file);
            tq__controller_destroy(the_controller);
            rc = TQ_ERR_IO;
            goto out;
        }
    }
    printf("%s\n", address);
    fflush(stdout);

    rc = tq__controller_run(the_controller);
    tq__controller_destroy(the_controller);
out:
    free(f_listen);
    free(f_port_file);
    free(f_token);
    free(f_plugin);
    free(f_token_file);
    free(f_max_metadata);
    free(token);
    for (size_t i = 0; i < ARRAY_SIZE(f_limits); i++)
        free(f_limits[i]);
    return rc == TQ_OK ? 0 : rc == TQ_ERR_INVALID ? 2 : 1;
}
