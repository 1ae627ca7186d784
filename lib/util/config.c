/* config.c: settings from flags, environment and JSON config files (read with cJSON). */
#include "util/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"

#define CONFIG_MAX_BYTES (1 << 20)
#define TOKEN_MAX_BYTES  4096

static char *read_file(const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, cap, "cannot open config %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(CONFIG_MAX_BYTES + 1);
    size_t n = text ? fread(text, 1, CONFIG_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (text == NULL || n > CONFIG_MAX_BYTES) {
        snprintf(err, cap, "config %s is larger than %d bytes", path, CONFIG_MAX_BYTES);
        free(text);
        return NULL;
    }
    text[n] = '\0';
    return text;
}

static tq_config_opt_t *find_key(tq_config_opt_t *opts, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (opts[i].key != NULL && strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

static int set_value(tq_config_opt_t *o, const char *v, tq_config_from_t from, char *err,
                     size_t cap)
{
    char *copy = strdup(v);
    if (copy == NULL) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    free(o->value);
    o->value = copy;
    o->from = from;
    return 0;
}

/* Config values go only where neither a flag nor the environment set one. */
static int load_file(tq_config_opt_t *opts, size_t n, const char *path, char *err, size_t cap)
{
    char *text = read_file(path, err, cap);
    if (text == NULL)
        return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        snprintf(err, cap, "config %s is not a JSON object", path);
        goto out;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        tq_config_opt_t *o = find_key(opts, n, item->string);
        if (o == NULL) {
            snprintf(err, cap, "config %s: unknown key \"%s\"", path, item->string);
            goto out;
        }
        char buf[32];
        const char *v = NULL;
        if (cJSON_IsString(item)) {
            v = item->valuestring;
        } else if (cJSON_IsNumber(item)) {
            snprintf(buf, sizeof(buf), "%.0f", item->valuedouble);
            v = buf;
        } else {
            snprintf(err, cap, "config %s: \"%s\" must be a string or a number", path,
                     item->string);
            goto out;
        }
        if (o->from > TQ_FROM_CONFIG)
            continue;
        if (set_value(o, v, TQ_FROM_CONFIG, err, cap) != 0)
            goto out;
        o->file = path;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int tq__config_resolve(tq_config_opt_t *opts, size_t n, const char *config_file, char *err,
                       size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        const char *env = opts[i].env ? getenv(opts[i].env) : NULL;
        if (opts[i].from < TQ_FROM_ENV && env != NULL &&
            set_value(&opts[i], env, TQ_FROM_ENV, err, cap) != 0)
            return -1;
    }
    if (config_file != NULL && load_file(opts, n, config_file, err, cap) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (opts[i].value == NULL && opts[i].dflt != NULL &&
            set_value(&opts[i], opts[i].dflt, TQ_FROM_DEFAULT, err, cap) != 0)
            return -1;
    return 0;
}

void tq__config_free(tq_config_opt_t *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(opts[i].value);
        opts[i].value = NULL;
    }
}

const char *tq__config_origin(const tq_config_opt_t *o, char *buf, size_t cap)
{
    switch (o->from) {
    case TQ_FROM_FLAG: snprintf(buf, cap, "--%s", o->flag); break;
    case TQ_FROM_ENV: snprintf(buf, cap, "$%s", o->env); break;
    case TQ_FROM_CONFIG: snprintf(buf, cap, "%s in %s", o->key, o->file); break;
    default: snprintf(buf, cap, "the default"); break;
    }
    return buf;
}

int tq__config_uint(const tq_config_opt_t *o, unsigned long min, unsigned long max,
                    unsigned long *v, char *err, size_t cap)
{
    if (o->value == NULL)
        return 0;
    char *end = NULL, origin[300];
    errno = 0;
    unsigned long x = strtoul(o->value, &end, 10);
    if (o->value[0] < '0' || o->value[0] > '9' || *end != '\0' || errno != 0 || x < min ||
        x > max) {
        snprintf(err, cap, "bad value '%s' for %s: want an integer from %lu to %lu", o->value,
                 tq__config_origin(o, origin, sizeof(origin)), min, max);
        return -1;
    }
    *v = x;
    return 0;
}

int tq__config_size(const tq_config_opt_t *o, uint64_t min, uint64_t *v, char *err, size_t cap)
{
    if (o->value == NULL)
        return 0;
    uint64_t x;
    char origin[300];
    if (tq__parse_size(o->value, &x) != 0 || x < min) {
        snprintf(err, cap, "bad value '%s' for %s: want a size of at least %" PRIu64
                 " bytes, K/M/G suffixes allowed (e.g. 512M)", o->value,
                 tq__config_origin(o, origin, sizeof(origin)), min);
        return -1;
    }
    *v = x;
    return 0;
}

static void usage(FILE *out, const char *program, const char *about, const tq_config_opt_t *opts,
                  size_t n)
{
    fprintf(out, "usage: %s [OPTION]...\n%s\n\n", program, about);
    for (size_t i = 0; i < n; i++) {
        const tq_config_opt_t *o = &opts[i];
        char name[64];
        if (o->flag != NULL)
            snprintf(name, sizeof(name), "--%s%s%s", o->flag, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(name, sizeof(name), "(no flag)");
        fprintf(out, "  %-26s %s%s\n", name, o->help, o->repeat ? "; repeatable" : "");
        fprintf(out, "  %-26s $%s, config \"%s\"%s%s\n", "", o->env, o->key,
                o->dflt ? ", default " : "", o->dflt ? o->dflt : "");
    }
    fprintf(out,
            "  %-26s a JSON object of the config keys above\n"
            "  %-26s print this, or the version, and exit\n\n"
            "A flag wins over its environment variable, which wins over the config file.\n",
            "--config FILE", "--help, --version");
}

int tq__config_parse(const char *program, const char *about, tq_config_opt_t *opts, size_t n,
                     int argc, char **argv)
{
    enum { OPT_CONFIG = 1, OPT_HELP, OPT_VERSION, OPT_TABLE = 256 };
    struct option *longopts = calloc(n + 4, sizeof(*longopts));
    if (longopts == NULL) {
        fprintf(stderr, "%s: out of memory\n", program);
        return 2;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (opts[i].flag != NULL)
            longopts[k++] = (struct option){opts[i].flag,
                                            opts[i].arg ? required_argument : no_argument, NULL,
                                            OPT_TABLE + (int)i};
    longopts[k++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[k++] = (struct option){"help", no_argument, NULL, OPT_HELP};
    longopts[k++] = (struct option){"version", no_argument, NULL, OPT_VERSION};

    const char *config_file = NULL;
    char err[768];
    int opt, status = -1;
    optind = 1;
    while (status < 0 && (opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (opt == OPT_CONFIG) {
            config_file = optarg;
        } else if (opt == OPT_HELP) {
            usage(stdout, program, about, opts, n);
            status = 0;
        } else if (opt == OPT_VERSION) {
            printf("%s %s\n", program, TQ_VERSION_STRING);
            status = 0;
        } else if (opt >= OPT_TABLE) {
            tq_config_opt_t *o = &opts[opt - OPT_TABLE];
            const char *v = optarg ? optarg : "1";
            if (o->repeat && o->value != NULL) {
                char *joined = NULL;
                if (asprintf(&joined, "%s:%s", o->value, v) < 0) {
                    status = 2;
                    break;
                }
                free(o->value);
                o->value = joined;
            } else if (set_value(o, v, TQ_FROM_FLAG, err, sizeof(err)) != 0) {
                status = 2;
            }
            o->from = TQ_FROM_FLAG;
        } else {
            fprintf(stderr, "Try '%s --help'.\n", program);
            status = 2;
        }
    }
    free(longopts);
    if (status >= 0)
        return status;
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", program, argv[optind]);
        return 2;
    }
    if (tq__config_resolve(opts, n, config_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        return 2;
    }
    return TQ_CONFIG_RUN;
}
int tq__token_file_read(const char *path, char **token_p, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, cap, "cannot open token file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
        tq_warn("token file %s can be read by others (mode %03o)", path,
                (unsigned)(st.st_mode & 0777));
    char buf[TOKEN_MAX_BYTES + 2];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0'; /* the first line */
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        buf[--len] = '\0';
    if (n > TOKEN_MAX_BYTES || len == 0) {
        snprintf(err, cap, "token file %s: %s", path,
                 len == 0 ? "no token in its first line" : "longer than 4096 bytes");
        return -1;
    }
    if ((*token_p = strdup(buf)) == NULL) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    return 0;
}

int tq__token_resolve(const tq_config_opt_t *token_file, const tq_config_opt_t *token,
                      char **token_p, char *err, size_t cap)
{
    *token_p = NULL;
    bool file_set = token_file->value != NULL, token_set = token->value != NULL;
    if (file_set && token_set && token_file->from == token->from) {
        char a[300], b[300];
        snprintf(err, cap, "%s and %s both set the token: keep one",
                 tq__config_origin(token_file, a, sizeof(a)), tq__config_origin(token, b, sizeof(b)));
        return -1;
    }
    if (file_set && (!token_set || token_file->from > token->from))
        return tq__token_file_read(token_file->value, token_p, err, cap);
    if (token_set && (*token_p = strdup(token->value)) == NULL) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    return 0;
}
