/* u64map.c: an open-addressing map from 64-bit integers to pointers (linear
 * probing, backward-shift deletion: no tombstones to pile up under churn). */
#include "util/u64map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t key;
    void    *value; /* NULL: empty */
} slot_t;

struct tq_u64map {
    slot_t *slots;
    size_t  cap;  /* a power of two */
    size_t  size;
};

/* splitmix64's finalizer: sequential ids spread over the whole table */
static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

tq_u64map *tq_u64map_create(void)
{
    tq_u64map *m = calloc(1, sizeof(*m));
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

void tq_u64map_destroy(tq_u64map *m)
{
    if (m != NULL)
        free(m->slots);
    free(m);
}

static size_t find(const tq_u64map *m, uint64_t key, bool *found)
{
    size_t i = hash_u64(key) & (m->cap - 1);
    while (m->slots[i].value != NULL && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    *found = m->slots[i].value != NULL;
    return i;
}

void *tq_u64map_get(const tq_u64map *m, uint64_t key)
{
    bool found;
    size_t i = find(m, key, &found);
    return found ? m->slots[i].value : NULL;
}

static int grow(tq_u64map *m)
{
    size_t cap = m->cap * 2;
    slot_t *slots = calloc(cap, sizeof(slot_t));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].value == NULL)
            continue;
        size_t j = hash_u64(m->slots[i].key) & (cap - 1);
        while (slots[j].value != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int tq_u64map_put(tq_u64map *m, uint64_t key, void *value)
{
    bool found;
    size_t i = find(m, key, &found);
    if (found) {
        m->slots[i].value = value;
        return 0;
    }
    if ((m->size + 1) * 4 > m->cap * 3) { /* at most 3/4 full */
        if (grow(m) != 0)
            return -1;
        i = find(m, key, &found);
    }
    m->slots[i] = (slot_t){key, value};
    m->size++;
    return 0;
}

void *tq_u64map_remove(tq_u64map *m, uint64_t key)
{
    bool found;
    size_t i = find(m, key, &found);
    if (!found)
        return NULL;
    void *value = m->slots[i].value;
    /* shift later entries of the probe run back over the hole, so every
     * remaining key is still reachable from its home slot without tombstones */
    size_t hole = i;
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].value != NULL; j = (j + 1) & (m->cap - 1)) {
        size_t home = hash_u64(m->slots[j].key) & (m->cap - 1);
        /* j may move to hole when its home is not in (hole, j], cyclically */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = (slot_t){0, NULL};
    m->size--;
    return value;
}

void tq_u64map_clear(tq_u64map *m)
{
    memset(m->slots, 0, m->cap * sizeof(slot_t));
    m->size = 0;
}

size_t tq_u64map_size(const tq_u64map *m) { return m->size; }
