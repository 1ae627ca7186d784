/* test_bench.c: tq-rdma-bench end to end: every mode moves and checks real bytes, its output holds. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define BENCH TQ_TOOLS_DIR "/tq-rdma-bench"

/* What one run of the bench printed, its JSON lines parsed. */
typedef struct {
    int     status; /* exit status, or -1 when it did not exit normally */
    char   *err;    /* its stderr */
    cJSON  *lines[256];
    size_t  num_lines;
} run_t;

static void run_free(run_t *r)
{
    for (size_t i = 0; i < r->num_lines; i++)
        cJSON_Delete(r->lines[i]);
    free(r->err);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("");
    char *buf = calloc(1, 1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

/* Run the bench with args (a shell word list) under a 240 s timeout. */
static void run_bench(const char *args, run_t *r)
{
    memset(r, 0, sizeof(*r));
    char err_path[] = "/tmp/tq-bench-err-XXXXXX";
    int fd = mkstemp(err_path);
    cr_assert(fd >= 0);
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "timeout -s KILL 240 %s %s 2>%s", BENCH, args, err_path);
    FILE *out = popen(cmd, "r");
    cr_assert(out != NULL);
    char line[8192];
    while (fgets(line, sizeof(line), out) != NULL) {
        cJSON *j = cJSON_Parse(line);
        if (j != NULL && r->num_lines < 256)
            r->lines[r->num_lines++] = j;
        else
            cJSON_Delete(j);
    }
    int st = pclose(out);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r->err = slurp(err_path);
    unlink(err_path);
}

static double num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    cr_assert(cJSON_IsNumber(v), "no number \"%s\" in a result line", key);
    return v->valuedouble;
}

/* The result line of op at field_bytes, or NULL. */
static const cJSON *find(const run_t *r, const char *op, double field_bytes)
{
    for (size_t i = 0; i < r->num_lines; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(r->lines[i], "op");
        if (cJSON_IsString(o) && strcmp(o->valuestring, op) == 0 &&
            (field_bytes < 0 || num(r->lines[i], "field_bytes") == field_bytes))
            return r->lines[i];
    }
    return NULL;
}

/* Every result line carries the fields scripts rely on, with sane values. */
static void check_line(const cJSON *j, unsigned clients, unsigned iters)
{
    cr_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "op")));
    cr_expect_eq(num(j, "clients"), clients);
    cr_expect_eq(num(j, "iters"), iters);
    cr_expect_geq(num(j, "rows"), 1);
    cr_expect_geq(num(j, "fields"), 1);
    cr_expect_gt(num(j, "seconds"), 0);
    cr_expect_geq(num(j, "bytes_per_s"), 0);
    cr_expect_gt(num(j, "p50_us"), 0);
    cr_expect_leq(num(j, "p50_us"), num(j, "p99_us"));
    cr_expect_lt(0, num(j, "min_us"));
    cr_expect_leq(num(j, "min_us"), num(j, "p50_us"));
    num(j, "field_bytes");
}

static void expect_moved(const run_t *r, const char *op, double field_bytes)
{
    const cJSON *j = find(r, op, field_bytes);
    cr_assert(j != NULL, "no %s at %.0f bytes; stderr:\n%s", op, field_bytes, r->err);
    cr_expect_gt(num(j, "bytes_per_s"), 0, "%s moved nothing", op);
}

Test(bench, every_mode_on_the_embedded_default, .timeout = 240)
{
    run_t r;
    run_bench("--json --mode put,get,kv,kv-nb,latency,meta,pipeline,wakeup "
              "--field-bytes 4K,64K --rows 4 --iters 5 --inflight 2", &r);
    cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
    for (size_t i = 0; i < r.num_lines; i++)
        check_line(r.lines[i], 1, 5);
    const char *payload[] = {"put", "get", "kv_put", "kv_get", "kv_get_seq", "kv_get_nb",
                             "put+commit", "get_meta+get", "pipeline"};
    for (size_t i = 0; i < sizeof(payload) / sizeof(payload[0]); i++) {
        expect_moved(&r, payload[i], 4096);
        expect_moved(&r, payload[i], 65536);
    }
    const char *control[] = {"alloc_commit", "get_meta", "get_meta+commit", "put_to_wake",
                             "producer_put"};
    for (size_t i = 0; i < sizeof(control) / sizeof(control[0]); i++)
        cr_expect(find(&r, control[i], 0) != NULL, "no %s line", control[i]);
    const cJSON *lat = find(&r, "put+commit", 4096);
    cr_expect(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(lat, "target_met")));
    run_free(&r);
}

Test(bench, clients_as_processes_and_threads_against_a_cluster, .timeout = 240)
{
    tq_test_cluster cl;
    cr_assert_eq(tq_test_cluster_start(&cl, 2, "256M"), 0);
    const char *kinds[] = {"", "--threads"};
    for (size_t k = 0; k < 2; k++) {
        char args[512];
        snprintf(args, sizeof(args), "--controller %s --json --clients 3 %s --mode put,get "
                 "--rows 4 --field-bytes 64K --iters 5", cl.address, kinds[k]);
        run_t r;
        run_bench(args, &r);
        cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
        cr_assert_eq(r.num_lines, 2);
        for (size_t i = 0; i < r.num_lines; i++)
            check_line(r.lines[i], 3, 5);
        expect_moved(&r, "put", 65536);
        expect_moved(&r, "get", 65536);
        run_free(&r);
    }
    cr_expect_eq(tq_test_cluster_stop(&cl), 0);
}

Test(bench, complex_profile_total_and_plot, .timeout = 240)
{
    char svg[] = "/tmp/tq-bench-plot-XXXXXX";
    int fd = mkstemp(svg);
    cr_assert(fd >= 0);
    close(fd);
    char args[512];
    snprintf(args, sizeof(args), "--json --profile complex --fields 3 --rows 8 --mode put,get "
             "--field-bytes 4K,16K --iters 3 --plot %s", svg);
    run_t r;
    run_bench(args, &r);
    cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
    const cJSON *put = find(&r, "put", 4096);
    cr_assert(put != NULL);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(put, "profile")->valuestring, "complex");
    /* complex rows are half to all of field_bytes: fewer bytes than rows x fields x size */
    double per_iter = num(put, "bytes_per_s") * num(put, "seconds") / 3;
    cr_expect_lt(per_iter, 8.0 * 3 * 4096);
    cr_expect_gt(per_iter, 8.0 * 3 * 4096 / 2);
    const cJSON *total = find(&r, "put+get", 16384);
    cr_assert(total != NULL, "no put+get total");
    cr_expect_eq(num(total, "transferqueue_simplestorage_gbps"), 1.83);
    cr_expect_gt(num(total, "gbps"), 0);
    run_free(&r);
    char *text = slurp(svg);
    cr_expect(strstr(text, "<svg") != NULL && strstr(text, "</svg>") != NULL);
    cr_expect(strstr(text, "polyline") != NULL, "no line drawn");
    free(text);
    unlink(svg);
}

Test(bench, size_presets, .timeout = 120)
{
    run_t r;
    run_bench("--json --size debug --mode put --iters 2", &r);
    cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
    const cJSON *put = find(&r, "put", -1);
    cr_assert(put != NULL);
    cr_expect_eq(num(put, "rows"), 32);
    cr_expect_eq(num(put, "fields"), 2);
    cr_expect_eq(num(put, "field_bytes"), 128 * 4);
    run_free(&r);
}

Test(bench, compare_with_ucx_perftest, .timeout = 240)
{
    if (system("command -v ucx_perftest >/dev/null 2>&1") != 0)
        cr_skip_test("ucx_perftest is not installed (Debian's ucx-utils)");
    run_t r;
    run_bench("--json --compare-ucx --mode put,get --rows 4 --field-bytes 64K --iters 5", &r);
    cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
    for (size_t i = 0; i < r.num_lines; i++) {
        cr_expect_gt(num(r.lines[i], "ucx_perftest_bytes_per_s"), 0);
        double ratio = num(r.lines[i], "ratio");
        cr_expect_gt(ratio, 0);
        cr_expect_lt(ratio - num(r.lines[i], "bytes_per_s") /
                                 num(r.lines[i], "ucx_perftest_bytes_per_s"), 0.001);
    }
    cr_expect_eq(r.num_lines, 2);
    run_free(&r);
}

Test(bench, bad_arguments_are_refused, .timeout = 60)
{
    const char *bad[] = {"--mode nope", "--field-bytes 12Q", "--rows 0", "--iters -3",
                         "--profile odd", "--size huge", "--dtype f16", "--worker 3,4",
                         "--field-bytes 6 --mode latency", "stray"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_t r;
        run_bench(bad[i], &r);
        cr_expect_eq(r.status, 2, "'%s' gave exit %d", bad[i], r.status);
        cr_expect(strstr(r.err, "tq-rdma-bench") != NULL, "'%s' said nothing", bad[i]);
        cr_expect_eq(r.num_lines, 0);
        run_free(&r);
    }
}
