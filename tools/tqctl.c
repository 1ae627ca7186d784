/* tqctl.c: administer a tqrdma controller: units, partitions, keys, clearing and sealing. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tq/tq.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tqctl [--controller HOST:PORT] [--json] COMMAND [ARG]\n"
            "commands:\n"
            "  status               storage units: id, incarnation, alive, pool size and use,\n"
            "                       transports\n"
            "  partitions [PARTITION]  rows, rows lost, fields produced, rows consumed, ready\n"
            "                       and in flight per task\n"
            "  kv-list [PARTITION]  keys and their tags (of every partition without one)\n"
            "  clear PARTITION      drop a partition: its rows, keys and consumption\n"
            "  seal PARTITION       no more rows will come: consumers end once done\n"
            "--controller defaults to $TQ_CONTROLLER; $TQ_TOKEN is the shared secret.\n"
            "--json prints one JSON document instead of a table. Exit status: 0, 1 when\n"
            "the controller refused or could not be reached, 2 for a bad command line.\n");
}

static int fail(tq_client *c, const char *what, int rc)
{
    const char *detail = tq_last_error(c);
    fprintf(stderr, "tqctl: %s: %s%s%s%s\n", what, tq_status_string(rc), *detail ? " (" : "",
            detail, *detail ? ")" : "");
    return 1;
}

/* Print a cJSON document (and free it). */
static int print_json(cJSON *doc)
{
    char *text = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    if (text == NULL) {
        fprintf(stderr, "tqctl: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

static int cmd_status(tq_client *c, const char *cmd, const char *arg, bool json)
{
    (void)cmd, (void)arg;
    tq_unit_info_t *u = NULL;
    int n = tq_units(c, &u);
    if (n < 0)
        return fail(c, "status", n);
    if (json) {
        cJSON *doc = cJSON_CreateObject(), *units = cJSON_AddArrayToObject(doc, "units");
        cJSON_AddStringToObject(doc, "controller", tq_controller_address(c));
        for (int i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", u[i].id);
            cJSON_AddNumberToObject(o, "incarnation", u[i].incarnation);
            cJSON_AddBoolToObject(o, "alive", u[i].alive);
            cJSON_AddNumberToObject(o, "capacity", (double)u[i].capacity);
            cJSON_AddNumberToObject(o, "used", (double)u[i].used);
            cJSON *transports = cJSON_AddArrayToObject(o, "transports");
            for (char *save = NULL, *t = strtok_r(u[i].transports, ",", &save); t != NULL;
                 t = strtok_r(NULL, ",", &save))
                cJSON_AddItemToArray(transports, cJSON_CreateString(t));
            cJSON_AddItemToArray(units, o);
        }
        free(u);
        return print_json(doc);
    }
    printf("controller %s: %d storage unit%s\n", tq_controller_address(c), n, n == 1 ? "" : "s");
    printf("%6s %11s %6s %14s %14s %6s  %s\n", "unit", "incarnation", "alive", "capacity",
           "used", "use", "transports");
    for (int i = 0; i < n; i++)
        printf("%6u %11u %6s %14llu %14llu %5.1f%%  %s\n", u[i].id, u[i].incarnation,
               u[i].alive ? "yes" : "no", (unsigned long long)u[i].capacity,
               (unsigned long long)u[i].used,
               u[i].capacity ? 100.0 * (double)u[i].used / (double)u[i].capacity : 0.0,
               u[i].transports);
    free(u);
    return 0;
}

static int cmd_partitions(tq_client *c, const char *cmd, const char *partition, bool json)
{
    char *text = NULL;
    int rc = tq_partitions(c, partition, &text);
    if (rc != TQ_OK)
        return fail(c, cmd, rc);
    cJSON *doc = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(doc)) {
        cJSON_Delete(doc);
        fprintf(stderr, "tqctl: %s: the controller's answer is not a JSON array\n", cmd);
        return 1;
    }
    if (json)
        return print_json(doc);
    printf("%-32s %12s %6s\n", "partition", "rows", "sealed");
    const cJSON *p, *item;
    cJSON_ArrayForEach(p, doc) {
        printf("%-32s %12.0f %6s\n", cJSON_GetStringValue(cJSON_GetObjectItem(p, "partition")),
               cJSON_GetNumberValue(cJSON_GetObjectItem(p, "rows")),
               cJSON_IsTrue(cJSON_GetObjectItem(p, "sealed")) ? "yes" : "no");
        double lost = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "lost"));
        if (lost > 0) /* NaN (an older controller) is not */
            printf("  lost %.0f rows: a storage unit that held them died\n", lost);
        cJSON_ArrayForEach(item, cJSON_GetObjectItem(p, "fields"))
            printf("  field %-24s produced %.0f\n", item->string, cJSON_GetNumberValue(item));
        cJSON_ArrayForEach(item, cJSON_GetObjectItem(p, "tasks"))
            printf("  task  %-24s consumed %.0f, ready %.0f, in flight %.0f\n", item->string,
                   cJSON_GetNumberValue(cJSON_GetObjectItem(item, "consumed")),
                   cJSON_GetNumberValue(cJSON_GetObjectItem(item, "ready")),
                   cJSON_GetNumberValue(cJSON_GetObjectItem(item, "in_flight")));
    }
    cJSON_Delete(doc);
    return 0;
}

static int cmd_kv_list(tq_client *c, const char *cmd, const char *partition, bool json)
{
    (void)cmd;
    tq_kv_entries *e = NULL;
    int rc = tq_kv_list(c, partition, &e);
    if (rc != TQ_OK)
        return fail(c, "kv-list", rc);
    size_t n = tq_kv_entries_size(e);
    if (json) { /* {partition: {key: tag}}, as TransferQueue's kv_list */
        cJSON *doc = cJSON_CreateObject();
        for (size_t i = 0; i < n && doc != NULL; i++) {
            const char *p = tq_kv_entries_partition(e, i);
            cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, p);
            if (keys == NULL)
                keys = cJSON_AddObjectToObject(doc, p);
            cJSON *tag = cJSON_Parse(tq_kv_entries_tag(e, i));
            cJSON_AddItemToObject(keys, tq_kv_entries_key(e, i),
                                  tag ? tag : cJSON_CreateObject());
        }
        tq_kv_entries_free(e);
        return print_json(doc);
    }
    for (size_t i = 0; i < n; i++)
        printf("%s\t%s\t%s\n", tq_kv_entries_partition(e, i), tq_kv_entries_key(e, i),
               tq_kv_entries_tag(e, i));
    tq_kv_entries_free(e);
    return 0;
}

/* clear and seal: one partition, an answer of ok. */
static int cmd_partition(tq_client *c, const char *cmd, const char *partition, bool json)
{
    int rc = strcmp(cmd, "clear") == 0 ? tq_clear_partition(c, partition)
                                       : tq_partition_seal(c, partition);
    if (rc != TQ_OK)
        return fail(c, cmd, rc);
    if (json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, cmd, partition);
        cJSON_AddBoolToObject(doc, "ok", 1);
        return print_json(doc);
    }
    printf("%s %s: ok\n", cmd, partition);
    return 0;
}

typedef struct {
    const char *name;
    enum { PARTITION_NONE, PARTITION_OPTIONAL, PARTITION_REQUIRED } partition;
    int (*run)(tq_client *c, const char *cmd, const char *partition, bool json);
} command_t;

static const command_t commands[] = {
    {"status", PARTITION_NONE, cmd_status},
    {"partitions", PARTITION_OPTIONAL, cmd_partitions},
    {"kv-list", PARTITION_OPTIONAL, cmd_kv_list},
    {"clear", PARTITION_REQUIRED, cmd_partition},
    {"seal", PARTITION_REQUIRED, cmd_partition},
};

int main(int argc, char **argv)
{
    const char *controller = NULL;
    bool json = false;
    static const struct option opts[] = {
        {"controller", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},             {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+c:jhV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': controller = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("tqctl %s\n", TQ_VERSION_STRING); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    const char *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
    const command_t *command = NULL;
    for (size_t i = 0; cmd != NULL && i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i].name) == 0)
            command = &commands[i];
    int given = argc - optind - 1;
    if (command == NULL || given > (command->partition == PARTITION_NONE ? 0 : 1) ||
        (command->partition == PARTITION_REQUIRED && given == 0)) {
        if (cmd != NULL && command == NULL)
            fprintf(stderr, "tqctl: unknown command '%s'\n", cmd);
        else if (cmd != NULL)
            fprintf(stderr, "tqctl: %s: wrong arguments\n", cmd);
        usage(stderr);
        return 2;
    }
    if (controller == NULL && (controller = getenv("TQ_CONTROLLER")) == NULL) {
        /* an embedded controller would be a new, empty one: nothing to administer */
        fprintf(stderr, "tqctl: no controller: give --controller HOST:PORT or TQ_CONTROLLER\n");
        return 2;
    }
    tq_client *c;
    int rc = tq_open(controller, &c);
    if (rc != TQ_OK)
        return fail(NULL, "cannot reach the controller", rc);
    int err = command->run(c, cmd, arg, json);
    tq_close(c);
    return err;
}
