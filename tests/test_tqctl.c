/* test_tqctl.c: tqctl against a real controller and storage units. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "helpers.h"
#include "tq/tq.h"

#define TQCTL TQ_TOOLS_DIR "/tqctl"

/* Run tqctl with args; its stdout in out (cap bytes). @return its exit status. */
static int tqctl(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "timeout -s KILL 60 %s %s 2>/dev/null", TQCTL, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(tqctl, status_keys_clear_and_seal, .timeout = 120)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 2, "32M"), 0));
    tq_client *c;
    cr_assert(eq(int, tq_open(cl.address, &c), TQ_OK));
    cr_assert(eq(int, tq_kv_put(c, "train", "sample-7", NULL, "{\"reward\":1.5}"), TQ_OK));

    static char out[1 << 16];
    char args[256];
    snprintf(args, sizeof(args), "--controller %s --json status", cl.address);
    cr_assert(eq(int, tqctl(args, out, sizeof(out)), 0));
    cJSON *doc = cJSON_Parse(out);
    cr_assert(doc != NULL, "not JSON: %s", out);
    cJSON *units = cJSON_GetObjectItemCaseSensitive(doc, "units");
    cr_expect(eq(int, cJSON_GetArraySize(units), 2));
    cJSON *u;
    cJSON_ArrayForEach(u, units) {
        cr_expect(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(u, "alive")));
        cr_expect(eq(dbl, cJSON_GetObjectItemCaseSensitive(u, "capacity")->valuedouble,
                     32.0 * 1024 * 1024));
    }
    cJSON_Delete(doc);

    snprintf(args, sizeof(args), "--controller %s --json kv-list", cl.address);
    cr_assert(eq(int, tqctl(args, out, sizeof(out)), 0));
    doc = cJSON_Parse(out);
    cJSON *tag = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "train"),
                                         "sample-7"), "reward");
    cr_expect(cJSON_IsNumber(tag) && tag->valuedouble == 1.5, "kv-list: %s", out);
    cJSON_Delete(doc);

    snprintf(args, sizeof(args), "--controller %s seal train", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 0));
    cr_expect(eq(int, tq_kv_put(c, "train", "late", NULL, "{}"), TQ_ERR_INVALID),
              "a sealed partition took a new key");
    snprintf(args, sizeof(args), "--controller %s clear train", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 0));
    snprintf(args, sizeof(args), "--controller %s kv-list", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 0));
    cr_expect(eq(str, out, ""), "keys left after clear: %s", out);

    /* refused, unreachable, and bad command lines */
    snprintf(args, sizeof(args), "--controller %s clear nope", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 1));
    cr_expect(eq(int, tqctl("--controller 127.0.0.1:1 status", out, sizeof(out)), 1));
    cr_expect(eq(int, tqctl("--controller 127.0.0.1:1 frobnicate", out, sizeof(out)), 2));
    cr_expect(eq(int, tqctl("--controller 127.0.0.1:1 seal", out, sizeof(out)), 2));
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
