/* hashmap.h: an open-addressing map from C strings to pointers. */
#ifndef TQ_UTIL_HASHMAP_H
#define TQ_UTIL_HASHMAP_H

#include <stddef.h>

/* The map does not own its keys: a key must live as long as its entry (keep
 * it inside the value). Not thread-safe. */
typedef struct tq_hashmap tq_hashmap;

tq_hashmap *tq_hashmap_create(void);
void        tq_hashmap_destroy(tq_hashmap *m);
void       *tq_hashmap_get(const tq_hashmap *m, const char *key);
/* Insert or replace. -1 when out of memory (the map is unchanged). */
int         tq_hashmap_put(tq_hashmap *m, const char *key, void *value);
/* Make room so that the next n puts of new keys cannot fail. 0, or -1. */
int         tq_hashmap_reserve(tq_hashmap *m, size_t n);
/* Remove; returns the value that was there, or NULL. */
void       *tq_hashmap_remove(tq_hashmap *m, const char *key);
size_t      tq_hashmap_size(const tq_hashmap *m);

#endif
