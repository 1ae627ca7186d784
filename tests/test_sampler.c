/* test_sampler.c: custom sampler plugins loaded by the controller (tq/sampler.h). */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tq/tq.h"

static tq_test_cluster cluster;
static tq_client      *client;

static void setup_cluster(void)
{
    setenv("TQ_SAMPLER_PLUGIN", TQ_SAMPLER_EXAMPLE, 1); /* the daemons inherit it */
    cr_assert(eq(int, tq_test_cluster_start(&cluster, 1, "64M"), 0), "cannot start a cluster");
    cr_assert(eq(int, tq_open(cluster.address, &client), TQ_OK));
}

static void setup_embedded(void)
{
    setenv("TQ_SAMPLER_PLUGIN", TQ_SAMPLER_EXAMPLE, 1);
    unsetenv("TQ_CONTROLLER");
    cr_assert(eq(int, tq_open("embedded", &client), TQ_OK));
}

static void teardown(void)
{
    tq_close(client);
    client = NULL;
    tq_test_cluster_stop(&cluster);
}

static void put_rows(const char *part, uint32_t n)
{
    int64_t *v = calloc(n, sizeof(int64_t));
    tq_batch *b = NULL;
    for (uint32_t i = 0; i < n; i++)
        v[i] = 100 + i;
    cr_assert(eq(int, tq_batch_create(n, &b), TQ_OK));
    cr_assert(eq(int, tq_batch_add_tensor(b, "v", TQ_DTYPE_I64, 0, NULL, v), TQ_OK));
    cr_assert(eq(int, tq_put(client, part, b, NULL, NULL), TQ_OK), "%s", tq_last_error(client));
    tq_batch_destroy(b);
    free(v);
}

/* Rows a sampler returns, in its order, into rows (room for n); returns the status. */
static int sample(const char *part, const char *task, const char *sampler, uint32_t n,
                  int64_t *rows)
{
    const char *fields[] = {"v"};
    tq_fetch_args_t a = {.partition = part, .task = task, .fields = fields, .num_fields = 1,
                         .batch_size = n, .sampler = sampler, .timeout_ms = 0};
    tq_meta *m = NULL;
    int rc = tq_get_meta(client, &a, &m);
    if (rc != TQ_OK)
        return rc;
    cr_assert(eq(u32, tq_meta_rows(m), n));
    memcpy(rows, tq_meta_indexes(m), n * sizeof(int64_t));
    tq_meta_free(m);
    return TQ_OK;
}

static void plugin_samplers(void)
{
    put_rows("plug", 10);
    int64_t rows[3];
    /* reverse: the newest first, consumed */
    cr_assert(eq(int, sample("plug", "t", "reverse", 3, rows), TQ_OK));
    cr_assert(eq(i64, rows[0], 9));
    cr_assert(eq(i64, rows[1], 8));
    cr_assert(eq(i64, rows[2], 7));
    cr_assert(eq(int, sample("plug", "t", "reverse", 3, rows), TQ_OK));
    cr_assert(eq(i64, rows[0], 6));
    /* peek: with replacement, so the same rows twice */
    for (int round = 0; round < 2; round++) {
        cr_assert(eq(int, sample("plug", "u", "peek", 2, rows), TQ_OK));
        cr_assert(eq(i64, rows[0], 0));
        cr_assert(eq(i64, rows[1], 1));
    }
    /* peek consumed nothing: the sequential sampler starts at 0 for that task */
    cr_assert(eq(int, sample("plug", "u", NULL, 2, rows), TQ_OK));
    cr_assert(eq(i64, rows[0], 0));
    /* an unknown name is refused, not waited on */
    cr_assert(eq(int, sample("plug", "t", "no-such-sampler", 1, rows), TQ_ERR_INVALID));
    cr_assert(ne(ptr, (void *)strstr(tq_last_error(client), "no-such-sampler"), NULL));
}

Test(sampler_cluster, plugin_samplers, .init = setup_cluster, .fini = teardown, .timeout = 60)
{
    plugin_samplers();
}

Test(sampler_embedded, plugin_samplers, .init = setup_embedded, .fini = teardown, .timeout = 60)
{
    plugin_samplers();
    /* a second embedded client in the process loads the same plugin again, harmlessly */
    tq_client *second = NULL;
    cr_assert(eq(int, tq_open("embedded", &second), TQ_OK), "%s", tq_last_error(second));
    tq_close(second);
}

/* A plugin that cannot be loaded stops the controller at start, saying why. */
Test(sampler, bad_plugin_is_a_startup_error, .timeout = 30)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "%s/controller/tq-controller --listen 127.0.0.1:0 --sampler-plugin /nonexistent.so "
             "2>&1", TQ_BIN_DIR);
    char text[4096];
    cr_assert(eq(int, tq_test_run(cmd, text, sizeof(text)), 2), "output: %s", text);
    cr_assert(ne(ptr, (void *)strstr(text, "/nonexistent.so"), NULL), "output: %s", text);
}
