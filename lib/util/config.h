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

/* The shared secret in a file: its first line, without trailing blanks. A
 * file others may read is warned about. @return 0 and a malloc'd token, or
 * -1 and a message in err (unreadable, empty, too long). */
int tq__token_file_read(const char *path, char **token_p, char *err, size_t cap);

/*
 * A daemon's token, first found of: --token-file (flag_file), $TQ_TOKEN, the
 * config's token_file, the config's token. @return 0 and a malloc'd token or
 * NULL for none, or -1 and a message in err.
 */
int tq__token_resolve(const char *flag_file, const char *config_file, const char *config_token,
                      char **token_p, char *err, size_t cap);

#endif
