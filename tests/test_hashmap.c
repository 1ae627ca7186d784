/* test_hashmap.c: the string->pointer and u64->pointer open-addressing maps: basics, growth,
 * a randomized differential test against a reference, tombstone churn. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/hashmap.h"
#include "util/u64map.h"

/* A distinct, non-NULL value for n. */
#define VAL(n) ((void *)(uintptr_t)((uintptr_t)(n) + 1))

static tq_hashmap *make_map(void)
{
    tq_hashmap *m = tq_hashmap_create();
    cr_assert(ne(ptr, m, NULL));
    cr_assert(eq(sz, tq_hashmap_size(m), 0));
    return m;
}

/* n malloc'd keys "<prefix><i>", some padded long; free with free_keys. */
static char **make_keys(size_t n, const char *prefix)
{
    char **keys = calloc(n, sizeof(*keys));
    cr_assert(ne(ptr, keys, NULL));
    for (size_t i = 0; i < n; i++) {
        char buf[96];
        if (i % 7 == 3)
            snprintf(buf, sizeof(buf), "%s%zu/a-much-longer-key-with-a-shared-suffix", prefix, i);
        else
            snprintf(buf, sizeof(buf), "%s%zu", prefix, i);
        keys[i] = strdup(buf);
        cr_assert(ne(ptr, keys[i], NULL));
    }
    return keys;
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64*: deterministic across platforms. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

Test(hashmap, create_destroy)
{
    tq_hashmap *m = make_map();
    cr_expect(eq(ptr, tq_hashmap_get(m, "missing"), NULL));
    cr_expect(eq(ptr, tq_hashmap_remove(m, "missing"), NULL));
    cr_expect(eq(sz, tq_hashmap_size(m), 0));
    tq_hashmap_destroy(m);
    tq_hashmap_destroy(NULL);

    /* Destroying a non-empty map frees only the map (ASan checks leaks);
     * keys and values stay the caller's. */
    m = make_map();
    cr_assert(eq(int, tq_hashmap_put(m, "a", VAL(1)), 0));
    cr_assert(eq(int, tq_hashmap_put(m, "b", VAL(2)), 0));
    tq_hashmap_destroy(m);
}

Test(hashmap, put_get_replace_remove)
{
    tq_hashmap *m = make_map();
    int x = 1, y = 2, z = 3;

    cr_assert(eq(int, tq_hashmap_put(m, "alpha", &x), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), &x));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alph"), NULL));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alphaa"), NULL));
    cr_expect(eq(ptr, tq_hashmap_get(m, "Alpha"), NULL));

    cr_assert(eq(int, tq_hashmap_put(m, "beta", &y), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 2));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), &x));
    cr_expect(eq(ptr, tq_hashmap_get(m, "beta"), &y));

    /* Replace: same size, new value. */
    cr_assert(eq(int, tq_hashmap_put(m, "alpha", &z), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 2));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), &z));
    cr_expect(eq(ptr, tq_hashmap_get(m, "beta"), &y));

    /* Keys compare by content, not by pointer. */
    char buf[16];
    strcpy(buf, "beta");
    cr_expect(eq(ptr, tq_hashmap_get(m, buf), &y));

    /* Remove returns the value that was there. */
    cr_expect(eq(ptr, tq_hashmap_remove(m, "alpha"), &z));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), NULL));
    cr_expect(eq(ptr, tq_hashmap_get(m, "beta"), &y));

    /* Removing again, or removing a key never present, gives NULL and
     * changes nothing. */
    cr_expect(eq(ptr, tq_hashmap_remove(m, "alpha"), NULL));
    cr_expect(eq(ptr, tq_hashmap_remove(m, "gamma"), NULL));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    cr_expect(eq(ptr, tq_hashmap_get(m, "beta"), &y));

    /* Re-insert after remove (into the tombstone or elsewhere). */
    cr_assert(eq(int, tq_hashmap_put(m, "alpha", &x), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 2));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), &x));

    cr_expect(eq(ptr, tq_hashmap_remove(m, buf), &y));
    cr_expect(eq(ptr, tq_hashmap_remove(m, "alpha"), &x));
    cr_expect(eq(sz, tq_hashmap_size(m), 0));
    cr_expect(eq(ptr, tq_hashmap_get(m, "alpha"), NULL));
    cr_expect(eq(ptr, tq_hashmap_get(m, "beta"), NULL));
    tq_hashmap_destroy(m);
}

Test(hashmap, missing_keys)
{
    tq_hashmap *m = make_map();
    /* Fill past the first growth so misses probe a real table. */
    char **keys = make_keys(40, "present-");
    for (size_t i = 0; i < 40; i++)
        cr_assert(eq(int, tq_hashmap_put(m, keys[i], VAL(i)), 0));
    for (size_t i = 0; i < 200; i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "absent-%zu", i);
        cr_expect(eq(ptr, tq_hashmap_get(m, buf), NULL), "%s", buf);
        cr_expect(eq(ptr, tq_hashmap_remove(m, buf), NULL), "%s", buf);
    }
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), NULL));
    cr_expect(eq(ptr, tq_hashmap_remove(m, ""), NULL));
    cr_expect(eq(sz, tq_hashmap_size(m), 40));
    for (size_t i = 0; i < 40; i++)
        cr_expect(eq(ptr, tq_hashmap_get(m, keys[i]), VAL(i)), "%s", keys[i]);
    tq_hashmap_destroy(m);
    free_keys(keys, 40);
}

Test(hashmap, size_accounting)
{
    tq_hashmap *m = make_map();
    char **keys = make_keys(64, "s");
    size_t expect = 0;
    for (size_t i = 0; i < 64; i++) {
        cr_assert(eq(int, tq_hashmap_put(m, keys[i], VAL(i)), 0));
        cr_assert(eq(sz, tq_hashmap_size(m), ++expect));
    }
    /* Replacing does not change the size. */
    for (size_t i = 0; i < 64; i++) {
        cr_assert(eq(int, tq_hashmap_put(m, keys[i], VAL(i + 1000)), 0));
        cr_assert(eq(sz, tq_hashmap_size(m), expect));
    }
    /* A miss does not change it; a hit decrements it. */
    for (size_t i = 0; i < 64; i += 2) {
        cr_assert(eq(ptr, tq_hashmap_remove(m, keys[i]), VAL(i + 1000)));
        cr_assert(eq(sz, tq_hashmap_size(m), --expect));
        cr_assert(eq(ptr, tq_hashmap_remove(m, keys[i]), NULL));
        cr_assert(eq(sz, tq_hashmap_size(m), expect));
    }
    /* A NULL value is stored and counted like any other. */
    cr_assert(eq(int, tq_hashmap_put(m, "null-value", NULL), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), expect + 1));
    cr_expect(eq(ptr, tq_hashmap_get(m, "null-value"), NULL));
    cr_expect(eq(ptr, tq_hashmap_remove(m, "null-value"), NULL));
    cr_expect(eq(sz, tq_hashmap_size(m), expect));
    for (size_t i = 1; i < 64; i += 2) {
        cr_assert(eq(ptr, tq_hashmap_remove(m, keys[i]), VAL(i + 1000)));
        cr_assert(eq(sz, tq_hashmap_size(m), --expect));
    }
    cr_expect(eq(sz, tq_hashmap_size(m), 0));
    tq_hashmap_destroy(m);
    free_keys(keys, 64);
}

Test(hashmap, empty_string_key)
{
    tq_hashmap *m = make_map();
    int x = 1, y = 2;
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), NULL));
    cr_assert(eq(int, tq_hashmap_put(m, "", &x), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), &x));
    cr_expect(eq(ptr, tq_hashmap_get(m, "a"), NULL));
    cr_assert(eq(int, tq_hashmap_put(m, "a", &y), 0));
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), &x));
    cr_expect(eq(ptr, tq_hashmap_get(m, "a"), &y));
    cr_assert(eq(int, tq_hashmap_put(m, "", &y), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 2));
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), &y));
    cr_expect(eq(ptr, tq_hashmap_remove(m, ""), &y));
    cr_expect(eq(ptr, tq_hashmap_get(m, ""), NULL));
    cr_expect(eq(ptr, tq_hashmap_get(m, "a"), &y));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    tq_hashmap_destroy(m);
}

/*
 * The header: "a key must live as long as its entry (keep it inside the
 * value)". So replacing an entry with a value that carries its own copy of the
 * key, then freeing the old value, must leave a working map: the map has to
 * hold the key pointer passed with the current value.
 */
Test(hashmap, replace_adopts_new_key)
{
    tq_hashmap *m = make_map();
    char *old_key = strdup("shared-name");
    char *new_key = strdup("shared-name");
    cr_assert(ne(ptr, old_key, NULL));
    cr_assert(ne(ptr, new_key, NULL));

    cr_assert(eq(int, tq_hashmap_put(m, old_key, VAL(1)), 0));
    cr_assert(eq(int, tq_hashmap_put(m, new_key, VAL(2)), 0));
    cr_expect(eq(sz, tq_hashmap_size(m), 1));
    /* The old value (and the key inside it) is gone; scribble rather than
     * free so that a stale pointer shows as a failed lookup, not a crash. */
    memset(old_key, 'X', strlen(old_key));
    cr_expect(eq(ptr, tq_hashmap_get(m, "shared-name"), VAL(2)),
              "lookup after replace + dropping the old key");
    cr_expect(eq(ptr, tq_hashmap_remove(m, "shared-name"), VAL(2)));
    cr_expect(eq(sz, tq_hashmap_size(m), 0));
    tq_hashmap_destroy(m);
    free(old_key);
    free(new_key);
}

#define MANY 100000

Test(hashmap, many_keys_growth)
{
    char **keys = make_keys(MANY, "key-");
    tq_hashmap *m = make_map();

    for (size_t i = 0; i < MANY; i++) {
        cr_assert(eq(int, tq_hashmap_put(m, keys[i], VAL(i)), 0), "put %s", keys[i]);
        cr_assert(eq(sz, tq_hashmap_size(m), i + 1));
        /* Spot-check earlier keys across each growth. */
        if ((i & (i + 1)) == 0)
            for (size_t j = 0; j <= i; j += 1 + i / 64)
                cr_assert(eq(ptr, tq_hashmap_get(m, keys[j]), VAL(j)), "%s at size %zu", keys[j], i + 1);
    }
    for (size_t i = 0; i < MANY; i++)
        cr_assert(eq(ptr, tq_hashmap_get(m, keys[i]), VAL(i)), "%s", keys[i]);

    /* Remove the even ones: odd ones stay, even ones are gone. */
    for (size_t i = 0; i < MANY; i += 2)
        cr_assert(eq(ptr, tq_hashmap_remove(m, keys[i]), VAL(i)), "%s", keys[i]);
    cr_assert(eq(sz, tq_hashmap_size(m), MANY / 2));
    for (size_t i = 0; i < MANY; i++)
        cr_assert(eq(ptr, tq_hashmap_get(m, keys[i]), i % 2 ? VAL(i) : NULL), "%s", keys[i]);

    /* Put them back with new values. */
    for (size_t i = 0; i < MANY; i += 2)
        cr_assert(eq(int, tq_hashmap_put(m, keys[i], VAL(i + MANY)), 0));
    cr_assert(eq(sz, tq_hashmap_size(m), MANY));
    for (size_t i = 0; i < MANY; i++)
        cr_assert(eq(ptr, tq_hashmap_get(m, keys[i]), i % 2 ? VAL(i) : VAL(i + MANY)), "%s", keys[i]);

    tq_hashmap_destroy(m);
    free_keys(keys, MANY);
}

#define DIFF_KEYS 5000
#define DIFF_OPS  200000

/*
 * Random put/replace/remove/get against a plain array indexed by key number,
 * compared after every op. Phases alternate between put-heavy and
 * remove-heavy so the size swings between ~0 and the key space: that grows
 * the table, fills it with tombstones, reuses them and purges them by rehash.
 */
Test(hashmap, differential_random)
{
    char **keys = make_keys(DIFF_KEYS, "d");
    keys[0][0] = '\0'; /* the empty string is in the key space too */
    void **ref = calloc(DIFF_KEYS, sizeof(*ref));
    cr_assert(ne(ptr, ref, NULL));
    size_t ref_size = 0;
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    tq_hashmap *m = make_map();
    size_t puts = 0, replaces = 0, removes = 0, remove_misses = 0, gets = 0;

    for (size_t op = 0; op < DIFF_OPS; op++) {
        size_t k = (size_t)(rng_next(&rng) % DIFF_KEYS);
        unsigned r = (unsigned)(rng_next(&rng) % 100);
        int put_heavy = (op / 20000) % 2 == 0;
        unsigned put_pct = put_heavy ? 60 : 25, remove_pct = put_heavy ? 20 : 55;
        const char *key = keys[k];

        if (r < put_pct) {
            void *v = VAL(op);
            cr_assert(eq(int, tq_hashmap_put(m, key, v), 0), "op %zu put \"%s\"", op, key);
            if (ref[k] == NULL) {
                ref_size++;
                puts++;
            } else {
                replaces++;
            }
            ref[k] = v;
        } else if (r < put_pct + remove_pct) {
            void *got = tq_hashmap_remove(m, key);
            cr_assert(eq(ptr, got, ref[k]), "op %zu remove \"%s\"", op, key);
            if (ref[k] != NULL) {
                ref_size--;
                removes++;
            } else {
                remove_misses++;
            }
            ref[k] = NULL;
        } else {
            gets++;
        }
        cr_assert(eq(ptr, tq_hashmap_get(m, key), ref[k]), "op %zu get \"%s\"", op, key);
        cr_assert(eq(sz, tq_hashmap_size(m), ref_size), "op %zu", op);

        if (op % 10000 == 9999)
            for (size_t j = 0; j < DIFF_KEYS; j++)
                cr_assert(eq(ptr, tq_hashmap_get(m, keys[j]), ref[j]), "op %zu scan \"%s\"", op, keys[j]);
    }
    /* Every kind of op actually happened. */
    cr_expect(lt(sz, 10000, puts));
    cr_expect(lt(sz, 10000, replaces));
    cr_expect(lt(sz, 10000, removes));
    cr_expect(lt(sz, 10000, remove_misses));
    cr_expect(lt(sz, 10000, gets));

    /* Drain to empty, then refill: a map full of tombstones still works. */
    for (size_t j = 0; j < DIFF_KEYS; j++)
        cr_assert(eq(ptr, tq_hashmap_remove(m, keys[j]), ref[j]), "drain \"%s\"", keys[j]);
    cr_assert(eq(sz, tq_hashmap_size(m), 0));
    for (size_t j = 0; j < DIFF_KEYS; j++)
        cr_assert(eq(ptr, tq_hashmap_get(m, keys[j]), NULL), "drained \"%s\"", keys[j]);
    for (size_t j = 0; j < DIFF_KEYS; j++)
        cr_assert(eq(int, tq_hashmap_put(m, keys[j], VAL(j)), 0));
    cr_assert(eq(sz, tq_hashmap_size(m), DIFF_KEYS));
    for (size_t j = 0; j < DIFF_KEYS; j++)
        cr_assert(eq(ptr, tq_hashmap_get(m, keys[j]), VAL(j)), "refilled \"%s\"", keys[j]);

    tq_hashmap_destroy(m);
    free(ref);
    free_keys(keys, DIFF_KEYS);
}

#define CHURN_LIVE  50
#define CHURN_RING  64      /* > CHURN_LIVE: key n lives in ring[n % CHURN_RING] */
#define CHURN_PAIRS 1000000
#define CHURN_MAX_S 2.5     /* generous for ASan/UBSan; a sane map needs well under 1 s */
/* Keys that first grow the large table (to 64Ki slots with this map): big
 * enough that probing a table full of tombstones is slow, small enough that
 * CHURN_PAIRS new keys fill it with tombstones many times over. */
#define CHURN_FILL  40000

typedef struct {
    char buf[CHURN_RING][32];
} churn_ring;

/* The text of churn key n, in its ring slot (for the map to keep) or in out. */
static const char *churn_key(churn_ring *r, size_t n)
{
    snprintf(r->buf[n % CHURN_RING], sizeof(r->buf[0]), "churn-%zu", n);
    return r->buf[n % CHURN_RING];
}

static const char *churn_key_copy(size_t n, char out[32])
{
    snprintf(out, 32, "churn-%zu", n);
    return out;
}

/*
 * A sliding window of CHURN_LIVE live keys, every key new: each step puts key
 * i+CHURN_LIVE and removes key i, so the table never needs to grow, each
 * remove leaves a tombstone that no later key is sure to reuse, and only
 * tombstone purging keeps probing short. Expects keys 0 .. CHURN_LIVE-1 live
 * with VAL(n) and nothing else. Gives up (and fails) once CHURN_MAX_S have
 * passed, instead of running on for minutes.
 */
static void churn(tq_hashmap *m, churn_ring *ring, const char *what)
{
    size_t bad_put = 0, bad_remove = 0, bad_size = 0, first_bad = SIZE_MAX, done = 0;
    char tmp[32];
    double t0 = now_s(), elapsed = 0;
    for (size_t i = 0; i < CHURN_PAIRS; i++, done++) {
        if (tq_hashmap_put(m, churn_key(ring, i + CHURN_LIVE), VAL(i + CHURN_LIVE)) != 0 && bad_put++ == 0 &&
            first_bad == SIZE_MAX)
            first_bad = i;
        if (tq_hashmap_remove(m, churn_key_copy(i, tmp)) != VAL(i) && bad_remove++ == 0 && first_bad == SIZE_MAX)
            first_bad = i;
        if (tq_hashmap_size(m) != CHURN_LIVE && bad_size++ == 0 && first_bad == SIZE_MAX)
            first_bad = i;
        /* Now and then, check the whole window and a few departed keys. */
        if (i % 65521 == 0) {
            for (size_t n = i + 1; n <= i + CHURN_LIVE; n++)
                cr_assert(eq(ptr, tq_hashmap_get(m, churn_key_copy(n, tmp)), VAL(n)), "%s: step %zu live %s",
                          what, i, tmp);
            for (size_t j = 0; j < 8 && j <= i; j++)
                cr_assert(eq(ptr, tq_hashmap_get(m, churn_key_copy(i - j, tmp)), NULL), "%s: step %zu departed %s",
                          what, i, tmp);
        }
        if (i % 1024 == 1023 && now_s() - t0 > CHURN_MAX_S) {
            done++;
            break;
        }
    }
    elapsed = now_s() - t0;

    cr_expect(eq(sz, done, CHURN_PAIRS), "%s: only %zu of %d put/remove pairs within %.1f s (probing degraded)",
              what, done, CHURN_PAIRS, CHURN_MAX_S);
    cr_expect(lt(dbl, elapsed, CHURN_MAX_S), "%s: %zu put/remove pairs with %d live keys took %.3f s", what, done,
              CHURN_LIVE, elapsed);
    cr_expect(eq(sz, bad_put, 0), "%s: first bad step %zu", what, first_bad);
    cr_expect(eq(sz, bad_remove, 0), "%s: first bad step %zu", what, first_bad);
    cr_expect(eq(sz, bad_size, 0), "%s: first bad step %zu", what, first_bad);
    cr_expect(eq(sz, tq_hashmap_size(m), CHURN_LIVE));
    for (size_t n = done; n < done + CHURN_LIVE; n++)
        cr_expect(eq(ptr, tq_hashmap_get(m, churn_key_copy(n, tmp)), VAL(n)), "%s: final %s", what, tmp);
    cr_log_info("hashmap %s: %zu pairs in %.3f s", what, done, elapsed);
}

static void churn_start(tq_hashmap *m, churn_ring *ring)
{
    for (size_t n = 0; n < CHURN_LIVE; n++)
        cr_assert(eq(int, tq_hashmap_put(m, churn_key(ring, n), VAL(n)), 0));
}

/* Churn in the small table that CHURN_LIVE keys need. */
Test(hashmap, churn_small_table, .timeout = 10)
{
    static churn_ring ring;
    tq_hashmap *m = make_map();
    churn_start(m, &ring);
    churn(m, &ring, "churn in a small table");
    tq_hashmap_destroy(m);
}

/*
 * Churn in a table first grown to hold CHURN_FILL keys and then emptied: a
 * large table, where letting tombstones pile up (purging too late, or never)
 * would make every miss -- and so every put of a new key -- probe a long run.
 */
Test(hashmap, churn_large_table, .timeout = 10)
{
    static churn_ring ring;
    char **fill = make_keys(CHURN_FILL, "fill-");
    tq_hashmap *m = make_map();
    for (size_t i = 0; i < CHURN_FILL; i++)
        cr_assert(eq(int, tq_hashmap_put(m, fill[i], VAL(i)), 0));
    for (size_t i = 0; i < CHURN_FILL; i++)
        cr_assert(eq(ptr, tq_hashmap_remove(m, fill[i]), VAL(i)));
    cr_assert(eq(sz, tq_hashmap_size(m), 0));
    churn_start(m, &ring);
    churn(m, &ring, "churn in a large emptied table");
    tq_hashmap_destroy(m);
    free_keys(fill, CHURN_FILL);
}

/* ---- the u64 -> pointer map (util/u64map.h) ---- */

/* Keys that collide in a small table: multiples of a large power of two share their low
 * bits, so they probe past each other; plus 0 and UINT64_MAX. */
static uint64_t u64_key(size_t i)
{
    if (i == 0)
        return 0;
    if (i == 1)
        return UINT64_MAX;
    return i % 3 == 0 ? (uint64_t)i << 40 : (uint64_t)i * 0x9E3779B97F4A7C15ULL;
}

Test(hashmap, u64_put_get_remove_clear)
{
    tq_u64map *m = tq_u64map_create();
    cr_assert(ne(ptr, m, NULL));
    cr_assert(eq(ptr, tq_u64map_get(m, 0), NULL));
    cr_assert(eq(ptr, tq_u64map_remove(m, 7), NULL));
    enum { N = 5000 };
    for (size_t i = 0; i < N; i++)
        cr_assert(eq(int, tq_u64map_put(m, u64_key(i), VAL(i)), 0));
    cr_assert(eq(sz, tq_u64map_size(m), N));
    for (size_t i = 0; i < N; i++)
        cr_assert(eq(ptr, tq_u64map_get(m, u64_key(i)), VAL(i)), "key %zu", i);
    cr_assert(eq(int, tq_u64map_put(m, u64_key(5), VAL(99999)), 0), "replace");
    cr_assert(eq(sz, tq_u64map_size(m), N));
    cr_assert(eq(ptr, tq_u64map_get(m, u64_key(5)), VAL(99999)));
    /* every other key out: the rest stay reachable across the holes */
    for (size_t i = 0; i < N; i += 2)
        cr_assert(ne(ptr, tq_u64map_remove(m, u64_key(i)), NULL), "remove %zu", i);
    cr_assert(eq(sz, tq_u64map_size(m), N / 2));
    for (size_t i = 0; i < N; i++)
        cr_assert(eq(ptr, tq_u64map_get(m, u64_key(i)), i % 2 ? (i == 5 ? VAL(99999) : VAL(i))
                                                              : NULL), "key %zu", i);
    tq_u64map_clear(m);
    cr_assert(eq(sz, tq_u64map_size(m), 0));
    for (size_t i = 0; i < N; i++)
        cr_assert(eq(ptr, tq_u64map_get(m, u64_key(i)), NULL));
    cr_assert(eq(int, tq_u64map_put(m, 42, VAL(1)), 0), "after clear");
    cr_assert(eq(ptr, tq_u64map_get(m, 42), VAL(1)));
    tq_u64map_destroy(m);
    tq_u64map_destroy(NULL);
}

/* Against a plain array, over a key space of colliding and spread keys: puts, removes
 * (backward shifts over wrapped probe runs) and gets agree at every step. */
Test(hashmap, u64_differential_random, .timeout = 20)
{
    enum { KEYS = 3000, OPS = 300000 };
    void **ref = calloc(KEYS, sizeof(*ref));
    cr_assert(ne(ptr, ref, NULL));
    size_t size = 0;
    uint64_t rng = 0x2545F4914F6CDD1DULL;
    tq_u64map *m = tq_u64map_create();
    cr_assert(ne(ptr, m, NULL));
    for (size_t op = 0; op < OPS; op++) {
        size_t k = (size_t)(rng_next(&rng) % KEYS);
        unsigned r = (unsigned)(rng_next(&rng) % 100);
        unsigned put_pct = (op / 30000) % 2 == 0 ? 60 : 25;
        if (r < put_pct) {
            cr_assert(eq(int, tq_u64map_put(m, u64_key(k), VAL(op)), 0));
            size += ref[k] == NULL;
            ref[k] = VAL(op);
        } else if (r < 85) {
            cr_assert(eq(ptr, tq_u64map_remove(m, u64_key(k)), ref[k]), "op %zu remove %zu", op, k);
            size -= ref[k] != NULL;
            ref[k] = NULL;
        } else {
            cr_assert(eq(ptr, tq_u64map_get(m, u64_key(k)), ref[k]), "op %zu get %zu", op, k);
        }
        cr_assert(eq(sz, tq_u64map_size(m), size));
    }
    for (size_t k = 0; k < KEYS; k++)
        cr_assert(eq(ptr, tq_u64map_get(m, u64_key(k)), ref[k]), "key %zu at the end", k);
    tq_u64map_destroy(m);
    free(ref);
}
