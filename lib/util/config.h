/* config.h: JSON config files of known string or number keys. */
#ifndef TQ_UTIL_CONFIG_H
#define TQ_UTIL_CONFIG_H

#include <stddef.h>

/* One known key; after loading, value is a malloc'd string (numbers are
 * printed as integers), or left untouched when the file does not set it. */
typedef struct {
    const char *key;
    char      **value;
} tq_config_key_t;

/* Load a JSON object from path. An unknown key, a value that is neither a
 * string nor a number, or a malformed file is an error: -1 and a message in
 * err (cap bytes). */
int tq__config_load(const char *path, const tq_config_key_t *keys, size_t n, char *err, size_t cap);

#endif
