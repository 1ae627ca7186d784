/* hashmap.c: an open-addressing map from C strings to pointers (linear probing). */
#include "util/hashmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *key;   /* NULL: empty; TOMBSTONE: removed */
    void       *value;
    uint64_t    hash;
} slot_t;

struct tq_hashmap {
    slot_t *slots;
    size_t  cap;       /* a power of two */
    size_t  size, used; /* live entries; live + tombstones */
};

static const char TOMBSTONE[1];

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

tq_hashmap *tq_hashmap_create(void)
{
    tq_hashmap *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->cap = 16;
    m->slots = calloc(m->cap, sizeof(slot_t));
    if (m->slots == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

void tq_hashmap_destroy(tq_hashmap *m)
{
    if (m != NULL)
        free(m->slots);
    free(m);
}

/* The slot holding key, or NULL. */
static slot_t *find(const tq_hashmap *m, const char *key, uint64_t h)
{
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        slot_t *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

void *tq_hashmap_get(const tq_hashmap *m, const char *key)
{
    slot_t *s = find(m, key, hash_str(key));
    return s ? s->value : NULL;
}

static int rehash(tq_hashmap *m, size_t cap)
{
    slot_t *slots = calloc(cap, sizeof(slot_t));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        slot_t *s = &m->slots[i];
        if (s->key == NULL || s->key == TOMBSTONE)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->size;
    return 0;
}

int tq_hashmap_put(tq_hashmap *m, const char *key, void *value)
{
    uint64_t h = hash_str(key);
    slot_t *s = find(m, key, h);
    if (s != NULL) { /* the new key lives in the new value: the old may go */
        s->key = key;
        s->value = value;
        return 0;
    }
    /* keep at most 3/4 of the slots used, tombstones included */
    if ((m->used + 1) * 4 > m->cap * 3 &&
        rehash(m, (m->size + 1) * 2 > m->cap / 2 ? m->cap * 2 : m->cap) != 0)
        return -1;
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key != NULL && m->slots[i].key != TOMBSTONE)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == NULL)
        m->used++;
    m->slots[i] = (slot_t){key, value, h};
    m->size++;
    return 0;
}

int tq_hashmap_reserve(tq_hashmap *m, size_t n)
{
    if ((m->used + n) * 4 <= m->cap * 3)
        return 0;
    size_t cap = m->cap; /* a rehash drops tombstones: only live entries count */
    while ((m->size + n) * 4 > cap * 3)
        cap *= 2;
    return rehash(m, cap);
}

void *tq_hashmap_remove(tq_hashmap *m, const char *key)
{
    slot_t *s = find(m, key, hash_str(key));
    if (s == NULL)
        return NULL;
    void *value = s->value;
    *s = (slot_t){TOMBSTONE, NULL, 0};
    m->size--;
    return value;
}

size_t tq_hashmap_size(const tq_hashmap *m) { return m->size; }
