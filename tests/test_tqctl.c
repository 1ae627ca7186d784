/* test_tqctl.c: tqctl against a real controller and storage units. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tq/tq.h"

#define TQCTL TQ_TOOLS_DIR "/tqctl"

/* Run tqctl with args; its stdout in out (cap bytes). @return its exit status. */
static int tqctl(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s 2>/dev/null", TQCTL, args);
    return tq_test_run(cmd, out, cap);
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

static double number_at(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b != NULL)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

Test(tqctl, partitions, .timeout = 120)
{
    tq_test_cluster cl;
    cr_assert(eq(int, tq_test_cluster_start(&cl, 1, "32M"), 0));
    tq_client *c;
    cr_assert(eq(int, tq_open(cl.address, &c), TQ_OK));
    tq_test_put_rollout(c, "rl");
    cr_assert(eq(int, tq_kv_put(c, "kv", "k", NULL, "{}"), TQ_OK));

    static char out[1 << 16];
    char args[256];
    snprintf(args, sizeof(args), "--controller %s --json partitions", cl.address);
    cr_assert(eq(int, tqctl(args, out, sizeof(out)), 0));
    cJSON *doc = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(doc), "not a JSON array: %s", out);
    cr_expect(eq(int, cJSON_GetArraySize(doc), 2));
    const cJSON *rl = cJSON_GetArrayItem(doc, 0);
    cr_expect(eq(str, cJSON_GetStringValue(cJSON_GetObjectItem(rl, "partition")), "rl"));
    cr_expect(eq(dbl, number_at(rl, "rows", NULL), 8));
    const cJSON *fields = cJSON_GetObjectItem(rl, "fields"), *tasks = cJSON_GetObjectItem(rl, "tasks");
    cr_expect(eq(dbl, number_at(fields, "prompt", NULL), 8));
    cr_expect(eq(dbl, number_at(fields, "response", NULL), 5));
    cr_expect(eq(dbl, number_at(tasks, "train", "consumed"), 3));
    cr_expect(eq(dbl, number_at(tasks, "train", "ready"), 2), "%s", out);
    cJSON_Delete(doc);

    /* one partition, the table, an unknown one */
    snprintf(args, sizeof(args), "--controller %s partitions rl", cl.address);
    cr_assert(eq(int, tqctl(args, out, sizeof(out)), 0));
    cr_expect(strstr(out, "task  train") && strstr(out, "consumed 3, ready 2"), "%s", out);
    cr_expect(strstr(out, "kv") == NULL, "a filtered listing showed another partition: %s", out);
    snprintf(args, sizeof(args), "--controller %s partitions nope", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 1));
    snprintf(args, sizeof(args), "--controller %s partitions a b", cl.address);
    cr_expect(eq(int, tqctl(args, out, sizeof(out)), 2));

    /* status names the transports each unit serves */
    snprintf(args, sizeof(args), "--controller %s --json status", cl.address);
    cr_assert(eq(int, tqctl(args, out, sizeof(out)), 0));
    doc = cJSON_Parse(out);
    const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "units"), 0),
                                         "transports");
    cr_expect(cJSON_IsArray(t) && cJSON_GetArraySize(t) >= 1, "%s", out);
    cr_expect(strstr(out, "\"ucx\"") != NULL, "%s", out);
    cJSON_Delete(doc);
    tq_close(c);
    cr_expect(eq(int, tq_test_cluster_stop(&cl), 0));
}
