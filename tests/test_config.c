/* test_config.c: settings from flags, environment and config files, for the
 * daemons and the client: the precedence, and bad values refused at start-up. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tq/tq.h"

#define CONTROLLER TQ_BIN_DIR "/controller/tq-controller"
#define STORAGE    TQ_BIN_DIR "/storage/tq-storage"

/* A temporary config file holding json; the path is static until the next call. */
static const char *config_file(const char *json)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/tq-config-XXXXXX.json");
    int fd = mkstemps(path, 5);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(int, (int)write(fd, json, strlen(json)), (int)strlen(json)));
    close(fd);
    return path;
}

/* How many partitions, made one after another, the cluster accepts (of up to 5). */
static int partitions_accepted(const tq_test_cluster *cl)
{
    tq_client *c;
    cr_assert(eq(int, tq_open(cl->address, &c), TQ_OK));
    int n = 0;
    char name[16];
    for (; n < 5; n++) {
        snprintf(name, sizeof(name), "p%d", n);
        if (tq_kv_put(c, name, "k", NULL, "{}") != TQ_OK)
            break;
    }
    tq_close(c);
    return n;
}

Test(config, flag_beats_environment_beats_file, .timeout = 120)
{
    char conf_arg[96];
    snprintf(conf_arg, sizeof(conf_arg), "%s", config_file("{\"max_partitions\": 1}"));
    const char *file_only[] = {"--config", conf_arg, NULL};
    const char *with_flag[] = {"--config", conf_arg, "--max-partitions", "3", NULL};
    tq_test_cluster cl;

    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "16M", file_only, NULL), 0));
    cr_expect(eq(int, partitions_accepted(&cl), 1), "the config file's max_partitions");
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));

    setenv("TQ_MAX_PARTITIONS", "2", 1); /* the daemons inherit the test's environment */
    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "16M", file_only, NULL), 0));
    cr_expect(eq(int, partitions_accepted(&cl), 2), "$TQ_MAX_PARTITIONS over the file");
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));

    cr_assert(eq(int, tq_test_cluster_start_with(&cl, 1, "16M", with_flag, NULL), 0));
    cr_expect(eq(int, partitions_accepted(&cl), 3), "--max-partitions over both");
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
    unsetenv("TQ_MAX_PARTITIONS");
    unlink(conf_arg);
}

/* Run `env ... program args`; its exit status, and its stderr in err. */
static int run(const char *env, const char *program, const char *args, char *err, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "env %s %s %s 2>&1 >/dev/null", env, program, args);
    return tq_test_run(cmd, err, cap);
}

Test(config, bad_values_are_refused_naming_their_origin, .timeout = 120)
{
    char bad_number[96], unknown_key[96], not_scalar[96], args[256], err[4096];
    snprintf(bad_number, sizeof(bad_number), "%s", config_file("{\"max_connections\": \"x\"}"));
    snprintf(unknown_key, sizeof(unknown_key), "%s", config_file("{\"lease\": 10}"));
    snprintf(not_scalar, sizeof(not_scalar), "%s", config_file("{\"listen\": [1]}"));
    struct {
        const char *env, *program, *args, *says;
    } cases[] = {
        {"", CONTROLLER, "--lease-ms 0", "'0' for --lease-ms"},
        {"TQ_MAX_METADATA=12", CONTROLLER, "", "'12' for $TQ_MAX_METADATA"},
        {"", CONTROLLER, "--config @bad_number", "'x' for max_connections in"},
        {"", CONTROLLER, "--config @unknown_key", "unknown key \"lease\""},
        {"", CONTROLLER, "--config @not_scalar", "\"listen\" must be a string or a number"},
        {"", CONTROLLER, "--config /nonexistent.json", "cannot open config /nonexistent.json"},
        {"", CONTROLLER, "--log loud", "bad log level 'loud'"},
        {"TQ_TOKEN=a TQ_TOKEN_FILE=/etc/hostname", CONTROLLER, "", "keep one"},
        {"", CONTROLLER, "--bogus", "unrecognized option"},
        {"", CONTROLLER, "stray", "unexpected argument 'stray'"},
        {"TQ_SPIN_US=-3", CONTROLLER, "", "$TQ_SPIN_US"},
        {"TQ_HEARTBEAT_TIMEOUT_MS=500", CONTROLLER, "", "from 2000 to"},
        {"", STORAGE, "", "--controller HOST:PORT (or $TQ_CONTROLLER) is required"},
        {"", STORAGE, "--controller 127.0.0.1:1 --pool-size 12Q", "'12Q' for --pool-size"},
        {"TQ_POOL_SIZE=lots", STORAGE, "--controller 127.0.0.1:1", "$TQ_POOL_SIZE"},
        {"", STORAGE, "--config @unknown_key --controller 127.0.0.1:1", "unknown key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *a = cases[i].args;
        char *at = strchr(a, '@');
        if (at != NULL) { /* @name: one of the files above */
            const char *file = strstr(at, "bad_number") ? bad_number
                             : strstr(at, "unknown_key") ? unknown_key : not_scalar;
            snprintf(args, sizeof(args), "%.*s%s%s", (int)(at - a), a, file,
                     strchr(at, ' ') ? strchr(at, ' ') : "");
            a = args;
        }
        int status = run(cases[i].env, cases[i].program, a, err, sizeof(err));
        cr_expect(eq(int, status, 2), "%s %s %s: exit %d (%s)", cases[i].env, cases[i].program, a,
                  status, err);
        cr_expect(strstr(err, cases[i].says) != NULL, "%s %s: want \"%s\" in: %s", cases[i].env, a,
                  cases[i].says, err);
    }
    unlink(bad_number), unlink(unknown_key), unlink(not_scalar);
}

Test(config, help_names_every_flag_variable_and_key, .timeout = 60)
{
    char out[8192];
    cr_expect(eq(int, tq_test_run(CONTROLLER " --help", out, sizeof(out)), 0));
    static const char *const expect[] = {
        "--listen HOST:PORT", "$TQ_LISTEN", "config \"listen\"", "--metrics HOST:PORT",
        "$TQ_METRICS", "$TQ_TOKEN,", "--lease-ms N", "default 60000", "--max-metadata SIZE",
        "$TQ_SAMPLER_PLUGIN", "--log LEVEL", "--config FILE",
        "A flag wins over its environment variable, which wins over the config file.",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
        cr_expect(strstr(out, expect[i]) != NULL, "--help lacks \"%s\"", expect[i]);
    cr_expect(eq(int, tq_test_run(STORAGE " --version", out, sizeof(out)), 0));
    cr_expect(eq(str, out, "tq-storage " TQ_VERSION_STRING "\n"));
}

Test(config, client_target_beats_environment_beats_file, .timeout = 120)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "16M"), 0));
    char json[256], path[96];
    snprintf(json, sizeof(json), "{\"controller\": \"%s\", \"timeout_ms\": 2500, \"lanes\": 2}",
             cl.address);
    snprintf(path, sizeof(path), "%s", config_file(json));
    tq_client *c;

    /* the file, named by the target or by $TQ_CONTROLLER */
    cr_expect(eq(int, tq_open(path, &c), TQ_OK), "%s", tq_last_error(NULL));
    tq_close(c);
    setenv("TQ_CONTROLLER", path, 1);
    cr_expect(eq(int, tq_open(NULL, &c), TQ_OK), "%s", tq_last_error(NULL));
    tq_close(c);

    /* the environment wins over the file; the target over the environment */
    setenv("TQ_CONTROLLER", "127.0.0.1:1", 1);
    cr_expect(eq(int, tq_open(path, &c), TQ_ERR_CONNECTION), "$TQ_CONTROLLER lost to the file");
    cr_expect(eq(int, tq_open(cl.address, &c), TQ_OK), "the target lost to $TQ_CONTROLLER");
    tq_close(c);
    unsetenv("TQ_CONTROLLER");

    /* bad values: refused by tq_open, named */
    setenv("TQ_TIMEOUT_MS", "soon", 1);
    cr_expect(eq(int, tq_open(cl.address, &c), TQ_ERR_INVALID));
    cr_expect(strstr(tq_last_error(NULL), "$TQ_TIMEOUT_MS") != NULL, "%s", tq_last_error(NULL));
    unsetenv("TQ_TIMEOUT_MS");
    unlink(path);
    snprintf(path, sizeof(path), "%s", config_file("{\"lanes\": 0}"));
    cr_expect(eq(int, tq_open(path, &c), TQ_ERR_INVALID));
    cr_expect(strstr(tq_last_error(NULL), "lanes in") != NULL, "%s", tq_last_error(NULL));
    unlink(path);
    snprintf(path, sizeof(path), "%s", config_file("{\"controler\": \"x:1\"}"));
    cr_expect(eq(int, tq_open(path, &c), TQ_ERR_INVALID));
    cr_expect(strstr(tq_last_error(NULL), "unknown key \"controler\"") != NULL, "%s",
              tq_last_error(NULL));
    unlink(path);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
