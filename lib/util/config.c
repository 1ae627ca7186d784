/* config.c: JSON config files of known string or number keys, read with cJSON. */
#include "util/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (1 << 20)

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
