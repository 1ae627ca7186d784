/* main.c: the tq-controller daemon. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/controller.h"
#include "tq/tq.h"
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
            "  --listen HOST:PORT  address to serve (default 127.0.0.1:7781; port 0 picks one)\n"
            "  --port-file PATH    write the bound HOST:PORT there\n"
            "  --config FILE       JSON object with keys listen, port_file, token, sampler_plugin\n"
            "  --sampler-plugin PATH.so  load custom samplers (tq/sampler.h); repeatable\n"
            "environment: TQ_TOKEN (shared secret), TQ_SAMPLER_PLUGIN (':'-separated .so paths),\n"
            "             TQ_LOG (error|warn|info|debug)\n");
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *port_file = NULL, *token = NULL, *config = NULL;
    char *f_listen = NULL, *f_port_file = NULL, *f_token = NULL, *f_plugin = NULL; /* --config */
    char plugins[8192] = ""; /* every --sampler-plugin, ':'-separated */
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'}, {"port-file", required_argument, NULL, 'p'},
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {"sampler-plugin", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int opt, rc = TQ_OK;
    while ((opt = getopt_long(argc, argv, "l:p:c:s:hV", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': listen = optarg; break;
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
                                  {"token", &f_token}, {"sampler_plugin", &f_plugin}};
        if (tq__config_load(config, keys, 4, err, sizeof(err)) != 0) {
            fprintf(stderr, "tq-controller: %s\n", err);
            rc = TQ_ERR_INVALID;
            goto out;
        }
        listen = listen ? listen : f_listen;
        port_file = port_file ? port_file : f_port_file;
        token = f_token;
    }
    if (getenv("TQ_TOKEN") != NULL)
        token = getenv("TQ_TOKEN");

    const char *plugin_list = plugins[0] ? plugins : f_plugin ? f_plugin : getenv("TQ_SAMPLER_PLUGIN");
    tq_controller_config_t cfg = {.listen = listen ? listen : "127.0.0.1:7781", .token = token,
                                  .sampler_plugins = plugin_list};
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
    return rc == TQ_OK ? 0 : rc == TQ_ERR_INVALID ? 2 : 1;
}
