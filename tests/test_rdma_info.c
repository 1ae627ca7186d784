/* test_rdma_info.c: tq-rdma-info run as users run it, its report and its JSON. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "transport_registry.h"
#include "tq/tq.h"

#define RDMA_INFO TQ_TOOLS_DIR "/tq-rdma-info"

static char out[1 << 18];

/* Run tq-rdma-info with args; its stdout in out. @return its exit status. */
static int rdma_info(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "timeout -s KILL 60 %s %s 2>/dev/null", RDMA_INFO, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The names in /sys/class/infiniband, as "a b " into names; how many (0 when
 * the directory does not exist). */
static int sysfs_devices(char *names, size_t cap)
{
    names[0] = '\0';
    DIR *d = opendir("/sys/class/infiniband");
    if (d == NULL)
        return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') {
            snprintf(names + strlen(names), cap - strlen(names), "%s ", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

/* The entry of arr whose field key is value, or NULL. */
static cJSON *find(const cJSON *arr, const char *key, const char *value)
{
    cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, key);
        if (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0)
            return it;
    }
    return NULL;
}

static bool built_with(const cJSON *doc, const char *what)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(doc, "built_with"), what));
}

Test(rdma_info, text_report, .timeout = 120)
{
    cr_assert(eq(int, rdma_info(""), 0));
    cr_expect(strstr(out, "Transports built in:") != NULL, "%s", out);
    for (size_t i = 0; tq__transports[i] != NULL; i++) {
        char line[64];
        snprintf(line, sizeof(line), "\n  %-8s ", tq__transports[i]->name);
        cr_expect(strstr(out, line) != NULL, "transport %s missing: %s", tq__transports[i]->name,
                  out);
    }
    char names[4096];
    if (sysfs_devices(names, sizeof(names)) == 0) {
        cr_expect(strstr(out, "No RDMA device found: this machine has no InfiniBand/RoCE "
                              "adapter or soft-RoCE (rxe) device.") != NULL, "%s", out);
    } else {
        for (char *save, *n = strtok_r(names, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
            char head[128];
            snprintf(head, sizeof(head), "\n  %s: ", n);
            cr_expect(strstr(out, head) != NULL, "device %s missing: %s", n, out);
        }
        cr_expect(strstr(out, "No RDMA device found") == NULL, "%s", out);
    }
    cr_expect(strstr(out, "\nUCX") != NULL && strstr(out, "\nlibfabric") != NULL, "%s", out);
}

Test(rdma_info, json, .timeout = 120)
{
    cr_assert(eq(int, rdma_info("--json"), 0));
    cJSON *doc = cJSON_Parse(out);
    cr_assert(doc != NULL, "not JSON: %s", out);
    const char *arrays[] = {"transports", "devices", "ucx", "libfabric"};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++)
        cr_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, arrays[i])),
                  "no array %s: %s", arrays[i], out);

    /* every transport built in, in the registry's order, each tried */
    cJSON *transports = cJSON_GetObjectItemCaseSensitive(doc, "transports");
    size_t n = 0;
    for (; tq__transports[n] != NULL; n++) {
        cJSON *t = cJSON_GetArrayItem(transports, (int)n);
        cr_assert(t != NULL, "transport %s missing", tq__transports[n]->name);
        cr_expect(eq(str, cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring,
                     (char *)tq__transports[n]->name));
        cr_expect(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(t, "usable")));
    }
    cr_expect(eq(int, cJSON_GetArraySize(transports), (int)n));
    /* shared memory and TCP are always there, so UCX always starts */
    cJSON *ucx_tr = find(transports, "name", "ucx");
    if (ucx_tr != NULL)
        cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ucx_tr, "usable")), "%s", out);

    /* devices: as many as sysfs lists, else the note */
    char names[4096];
    int ndev = sysfs_devices(names, sizeof(names));
    cJSON *devices = cJSON_GetObjectItemCaseSensitive(doc, "devices");
    cJSON *note = cJSON_GetObjectItemCaseSensitive(doc, "note");
    if (!built_with(doc, "verbs")) {
        cr_expect(eq(int, cJSON_GetArraySize(devices), 0));
        cr_expect(cJSON_IsString(note) && strstr(note->valuestring, "rdma-core"), "%s", out);
    } else if (ndev == 0) {
        cr_expect(eq(int, cJSON_GetArraySize(devices), 0));
        cr_expect(cJSON_IsString(note) && strstr(note->valuestring, "No RDMA device found"),
                  "%s", out);
    } else {
        cr_expect(eq(int, cJSON_GetArraySize(devices), ndev), "%s", out);
        cr_expect(note == NULL, "%s", out);
        cJSON *d;
        cJSON_ArrayForEach(d, devices)
            cr_expect(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "ports")) > 0,
                      "a device without ports: %s", out);
    }

    /* UCX: TCP over loopback and a shared memory transport at least */
    cJSON *ucx = cJSON_GetObjectItemCaseSensitive(doc, "ucx");
    if (built_with(doc, "ucx")) {
        cr_expect(lt(int, 0, cJSON_GetArraySize(ucx)), "%s", out);
        cr_expect(find(ucx, "transport", "tcp") != NULL, "no UCX tcp: %s", out);
        cr_expect(find(ucx, "transport", "posix") != NULL || find(ucx, "transport", "sysv"),
                  "no UCX shared memory: %s", out);
        cJSON *self = find(ucx, "transport", "self");
        cr_expect(self != NULL, "no UCX self: %s", out);
        if (self != NULL)
            cr_expect(eq(str, cJSON_GetObjectItemCaseSensitive(self, "type")->valuestring,
                         "loopback"));
    } else {
        cr_expect(eq(int, cJSON_GetArraySize(ucx), 0));
    }

    /* libfabric: its tcp and shm providers are always built */
    cJSON *ofi = cJSON_GetObjectItemCaseSensitive(doc, "libfabric");
    if (built_with(doc, "libfabric") && getenv("FI_PROVIDER") == NULL) {
        cJSON *tcp = find(ofi, "provider", "tcp");
        cr_expect(tcp != NULL, "no libfabric tcp: %s", out);
        cr_expect(find(ofi, "provider", "shm") != NULL, "no libfabric shm: %s", out);
        cJSON *shm = find(ofi, "provider", "shm");
        cr_expect(shm == NULL || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(shm, "rdm_rma")),
                  "%s", out);
    }
    cJSON_Delete(doc);
}

Test(rdma_info, usage_and_version)
{
    cr_expect(eq(int, rdma_info("--version"), 0));
    cr_expect(eq(str, out, "tq-rdma-info " TQ_VERSION_STRING "\n"));
    cr_expect(eq(int, rdma_info("--help"), 0));
    cr_expect(strstr(out, "--json") != NULL, "%s", out);
    cr_expect(eq(int, rdma_info("--frobnicate"), 2));
    cr_expect(eq(str, out, ""), "a bad command line printed a report: %s", out);
    cr_expect(eq(int, rdma_info("devices"), 2));
}
