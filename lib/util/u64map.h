/* u64map.h: an open-addressing map from 64-bit integers to pointers. */
#ifndef TQ_UTIL_U64MAP_H
#define TQ_UTIL_U64MAP_H

#include <stddef.h>
#include <stdint.h>

/* Ids to the objects they name (metas, connections, rows in flight). Values
 * are never NULL: NULL is what get answers for an absent key. Not thread-safe. */
typedef struct tq_u64map tq_u64map;

tq_u64map *tq_u64map_create(void);
void       tq_u64map_destroy(tq_u64map *m);
void      *tq_u64map_get(const tq_u64map *m, uint64_t key);
/* Insert or replace (value not NULL). -1 when out of memory (the map is unchanged). */
int        tq_u64map_put(tq_u64map *m, uint64_t key, void *value);
/* Remove; returns the value that was there, or NULL. */
void      *tq_u64map_remove(tq_u64map *m, uint64_t key);
/* Remove every entry (the map keeps its memory). */
void       tq_u64map_clear(tq_u64map *m);
size_t     tq_u64map_size(const tq_u64map *m);

#endif
