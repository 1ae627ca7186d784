/*
 * config.h: a program's settings, each from the first of: its command-line
 * flag, its environment variable, its key in a JSON config file, its default.
 * One table per program names every setting once; --help is printed from it.
 */
#ifndef TQ_UTIL_CONFIG_H
#define TQ_UTIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a setting's value came from, weakest first. */
typedef enum { TQ_FROM_DEFAULT, TQ_FROM_CONFIG, TQ_FROM_ENV, TQ_FROM_FLAG } tq_config_from_t;

typedef struct {
    const char *flag;   /* long option without "--"; NULL: none (a secret never goes in argv) */
    const char *env;    /* environment variable */
    const char *key;    /* key in the config file */
    const char *arg;    /* the value's name in --help; NULL: a switch taking no value */
    const char *help;   /* one line */
    const char *dflt;   /* default value, or NULL for none */
    bool        repeat; /* the flag may be given again: values join with ':' */

    /* set by tq__config_parse / tq__config_resolve */
    char            *value; /* malloc'd, or NULL when unset with no default */
    tq_config_from_t from;
    const char      *file;  /* the config file, when from it */
} tq_config_opt_t;

/*
 * Parse argv (getopt_long over the table, plus --config FILE, --help and
 * --version), then fill what flags left unset from the environment, the
 * config file and the defaults. Prints --help, --version or the error itself.
 * @return TQ_CONFIG_RUN, or the status to exit with: 0 after --help or
 * --version, 2 on a bad flag, an unknown config key or an unreadable file.
 */
#define TQ_CONFIG_RUN (-1)
int tq__config_parse(const char *program, const char *about, tq_config_opt_t *opts, size_t n,
                     int argc, char **argv);

/* Fill unset options from the environment, then the JSON object in config_file
 * (NULL: none), then defaults. An unknown key, a value that is neither a string
 * nor a number, or a malformed file is an error: -1 and a message in err. */
int tq__config_resolve(tq_config_opt_t *opts, size_t n, const char *config_file, char *err,
                       size_t cap);

void tq__config_free(tq_config_opt_t *opts, size_t n);

/* "--lease-ms", "$TQ_LEASE_MS", "lease_ms in FILE" or "the default": for messages. */
const char *tq__config_origin(const tq_config_opt_t *o, char *buf, size_t cap);

/* The value as an integer in [min, max] or a size (K/M/G suffixes) of at least
 * min. Unset leaves *v alone. @return 0, or -1 and a message naming the origin. */
int tq__config_uint(const tq_config_opt_t *o, unsigned long min, unsigned long max,
                    unsigned long *v, char *err, size_t cap);
int tq__config_size(const tq_config_opt_t *o, uint64_t min, uint64_t *v, char *err, size_t cap);

/* The shared secret in a file: its first line, without trailing blanks. A
 * file others may read is warned about. @return 0 and a malloc'd token, or
 * -1 and a message in err (unreadable, empty, too long). */
int tq__token_file_read(const char *path, char **token_p, char *err, size_t cap);

/*
 * The token from whichever of token_file and token came from the stronger
 * place (a file read, a token copied); both from the same place is an error.
 * @return 0 and a malloc'd token or NULL for none, or -1 and a message.
 */
int tq__token_resolve(const tq_config_opt_t *token_file, const tq_config_opt_t *token,
                      char **token_p, char *err, size_t cap);

#endif
