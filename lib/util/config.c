/* config.c: JSON config files of known string or number keys, read with cJSON. */
#include "util/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int tq__config_load(const char *path, const tq_config_key_t *keys, size_t n, char *err, size_t cap)
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
        size_t k = 0;
        while (k < n && strcmp(keys[k].key, item->string) != 0)
            k++;
        if (k == n) {
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
        free(*keys[k].value);
        *keys[k].value = strdup(v);
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
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

int tq__token_resolve(const char *flag_file, const char *config_file, const char *config_token,
                      char **token_p, char *err, size_t cap)
{
    const char *env = getenv("TQ_TOKEN");
    *token_p = NULL;
    if (flag_file != NULL)
        return tq__token_file_read(flag_file, token_p, err, cap);
    if (env != NULL || config_file == NULL) {
        const char *t = env ? env : config_token;
        if (t != NULL && (*token_p = strdup(t)) == NULL) {
            snprintf(err, cap, "out of memory");
            return -1;
        }
        return 0;
    }
    return tq__token_file_read(config_file, token_p, err, cap);
}
