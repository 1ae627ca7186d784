/* kv.c: the key-value requests: KV_GET pins the rows of keys, KV_LIST, KV_CLEAR,
 * KV_INDEXES and KV_KEYS (key <-> row index); and SET_CUSTOM_META, the per-row
 * store that KV tags are part of. */
#define TQ_LOG_COMPONENT "controller"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/internal.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/hashmap.h"

/* The fields every one of n rows has, in schema order; fields has room for all. */
static uint32_t shared_fields(tq_partition_t *p, const int64_t *rows, uint32_t n,
                              tq_field_t **fields)
{
    uint32_t nf = 0;
    for (uint32_t i = 0; i < p->num_fields; i++) {
        bool shared = true;
        for (uint32_t k = 0; k < n && shared; k++)
            shared = p->fields[i].cells[rows[k]].produced;
        if (shared)
            fields[nf++] = &p->fields[i];
    }
    return nf;
}

/* Answer with a meta of the rows that pins their cells of fields, consuming nothing. */
static void reply_pinned(conn_t *c, const tq_wire_header_t *h, tq_partition_t *p,
                         tq_field_t *const *fields, uint32_t nf, const int64_t *rows, uint32_t n)
{
    if (nf > TQ_WIRE_MAX_FIELDS) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "the rows share %u fields: name at most %u", nf,
                        TQ_WIRE_MAX_FIELDS);
        return;
    }
    meta_t *meta = tq__meta_new(c, (size_t)n * nf);
    if (meta == NULL)
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    else if (tq__reply_meta(c, h, p, fields, (uint16_t)nf, rows, n, meta) != TQ_OK)
        tq__meta_free(c->ctl, meta, true);
}

void tq__reply_rows_meta(conn_t *c, const tq_wire_header_t *h, tq_partition_t *p,
                         const int64_t *rows, uint32_t n)
{
    tq_field_t **fields = malloc(p->num_fields * sizeof(*fields) + 1);
    if (fields == NULL)
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    else
        reply_pinned(c, h, p, fields, shared_fields(p, rows, n, fields), rows, n);
    free(fields);
}

/* KV_GET: pin the rows of the keys, in their order, and answer as GET_META. */
void tq__handle_kv_get(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_kv_get_t m;
    if (tq_wire_decode_kv_get(r, &m) != TQ_OK)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_get");
    char name[TQ_WIRE_NAME_MAX + 1], key[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    if (p == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %s", tq__name_cstr(m.partition, name));
    for (uint16_t i = 0; i < m.num_fields; i++)
        for (uint16_t j = 0; j < i; j++)
            if (m.fields[i].len == m.fields[j].len &&
                memcmp(m.fields[i].ptr, m.fields[j].ptr, m.fields[i].len) == 0)
                return tq__reply_error(c, h, TQ_ERR_INVALID, "field %s requested twice",
                                   tq__name_cstr(m.fields[i], name));
    int64_t *rows = malloc((size_t)m.count * sizeof(int64_t));
    tq_field_t **fields = malloc(TQ_MAX(p->num_fields, (uint32_t)m.num_fields) * sizeof(*fields) + 1);
    if (rows == NULL || fields == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        if (tq_wire_decode_name(r, &k) != TQ_OK) {
            tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed key");
            goto out;
        }
        tq_kv_key_t *entry = tq__partition_key(p, tq__name_cstr(k, key));
        if (entry == NULL) {
            tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no key %s in partition %s", key, p->name);
            goto out;
        }
        rows[i] = entry->row;
    }
    if (!tq_rbuf_done(r)) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "trailing bytes in kv_get");
        goto out;
    }
    uint32_t nf = 0;
    if (m.num_fields > 0) {
        for (uint16_t i = 0; i < m.num_fields; i++) {
            tq_field_t *f = tq__partition_field(p, tq__name_cstr(m.fields[i], name));
            for (uint32_t k = 0; k < m.count; k++)
                if (f == NULL || !f->cells[rows[k]].produced) {
                    tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "key %s has no field %s",
                                p->row_keys[rows[k]]->key, name);
                    goto out;
                }
            fields[nf++] = f;
        }
    } else if ((nf = shared_fields(p, rows, m.count, fields)) == 0) {
        tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "the keys share no field");
        goto out;
    }
    reply_pinned(c, h, p, fields, nf, rows, m.count);
out:
    free(fields);
    free(rows);
}

/*
 * KV_LIST answers one page: keys in insertion order, partitions in creation
 * order, at most the limit and at most PAGE_BYTES of entries (one entry
 * always, up to the frame limit), so the loop stays responsive and no answer
 * passes the frame limit. The cursor names the last key listed by its
 * partition's place, its own place and its name: "seq:seq:key", in hex. A
 * page resumes after that key in O(1) while it exists; else after the place
 * it had, so keys added or removed during a listing never make another key
 * appear twice or be skipped.
 */
#define PAGE_BYTES (8u << 20)

typedef struct {
    uint64_t part_seq, key_seq;
    char     key[TQ_WIRE_NAME_MAX + 1];
} list_cursor_t;

/* "" is the start; else "seq:seq:key" as list_page writes it. */
static bool cursor_parse(tq_str_t s, list_cursor_t *cur)
{
    memset(cur, 0, sizeof(*cur));
    if (s.len == 0)
        return true;
    char text[TQ_WIRE_CURSOR_MAX + 1], *end;
    memcpy(text, s.ptr, s.len);
    text[s.len] = '\0';
    errno = 0;
    cur->part_seq = strtoull(text, &end, 16);
    if (end == text || *end != ':' || errno != 0)
        return false;
    const char *k = end + 1;
    cur->key_seq = strtoull(k, &end, 16);
    if (end == k || *end != ':' || errno != 0 || cur->part_seq == 0 || cur->key_seq == 0)
        return false;
    size_t len = strlen(end + 1);
    if (len == 0 || len > TQ_WIRE_NAME_MAX)
        return false;
    memcpy(cur->key, end + 1, len + 1);
    return true;
}

/* Where in p's keys the page after cur starts (&p->key_order: none left). */
static tq_list *resume_in(tq_partition_t *p, const list_cursor_t *cur)
{
    if (p->seq != cur->part_seq)
        return p->key_order.next; /* a partition after the cursor's: from its first key */
    tq_kv_key_t *k = tq__partition_key(p, cur->key);
    if (k != NULL && k->seq == cur->key_seq)
        return k->link.next;
    /* the cursor's key went: the first one bound after it (key_order is in seq order) */
    tq_list *pos;
    for (pos = p->key_order.next; pos != &p->key_order; pos = pos->next)
        if (tq_list_entry(pos, tq_kv_key_t, link)->seq > cur->key_seq)
            break;
    return pos;
}

void tq__handle_kv_list(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_kv_list_t m;
    list_cursor_t cur;
    if (tq_wire_decode_kv_list(r, &m) != TQ_OK || !tq_rbuf_done(r)) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_list");
        return;
    }
    if (!cursor_parse(m.cursor, &cur)) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "kv_list: the cursor is not one a page gave");
        return;
    }
    uint32_t limit = m.limit ? m.limit : UINT32_MAX, n = 0;
    tq_wbuf *w = &c->out;
    size_t off = tq__reply_begin(c, h), count_at = w->len;
    tq_wire_put_u32(w, 0); /* the count, patched below */
    size_t entries_at = w->len;
    const tq_partition_t *last_p = NULL;
    const tq_kv_key_t *last_k = NULL;
    bool more = false;
    tq_list *ppos;
    for (ppos = c->ctl->partitions.next; ppos != &c->ctl->partitions && !more && !w->failed;
         ppos = ppos->next) {
        tq_partition_t *p = tq_list_entry(ppos, tq_partition_t, link);
        if ((m.partition.len > 0 && !tq_str_eq(m.partition, p->name)) || p->seq < cur.part_seq)
            continue;
        for (tq_list *pos = resume_in(p, &cur); pos != &p->key_order; pos = pos->next) {
            const tq_kv_key_t *k = tq_list_entry(pos, tq_kv_key_t, link);
            const tq_custom_t *cm = tq__partition_custom(p, (uint64_t)k->row); /* its tag */
            const char *tag = cm ? cm->text : "{}";
            size_t plen = strlen(p->name), klen = strlen(k->key), tlen = cm ? cm->len : 2;
            if (n == limit || (n > 0 && w->len - entries_at + 8 + plen + klen + tlen > PAGE_BYTES)) {
                more = true;
                break;
            }
            tq_wire_kv_entry_t e = {{p->name, (uint16_t)plen}, {k->key, (uint16_t)klen},
                                    {(const uint8_t *)tag, (uint32_t)tlen}};
            tq_wire_encode_kv_entry(w, &e);
            n++, last_p = p, last_k = k;
        }
    }
    if (!w->failed)
        for (int i = 0; i < 4; i++)
            w->data[count_at + i] = (uint8_t)(n >> (8 * i));
    char next[TQ_WIRE_CURSOR_MAX + 1] = "";
    if (more)
        snprintf(next, sizeof(next), "%" PRIx64 ":%" PRIx64 ":%s", last_p->seq, last_k->seq,
                 last_k->key);
    tq_wire_encode_cursor(w, (tq_str_t){next, (uint16_t)strlen(next)});
    tq__reply_end(c, off);
}

void tq__handle_kv_clear(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_kv_keys_t m;
    if (tq_wire_decode_kv_keys(r, &m) != TQ_OK)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_clear");
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    /* decode every key before removing any: a malformed request removes nothing */
    tq_rbuf keys = *r;
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        if (tq_wire_decode_name(r, &k) != TQ_OK)
            return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed key");
    }
    if (!tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "trailing bytes in kv_clear");
    uint32_t removed = 0;
    char key[TQ_WIRE_NAME_MAX + 1];
    for (uint32_t i = 0; p != NULL && i < m.count; i++) {
        tq_str_t k;
        tq_wire_decode_name(&keys, &k);
        tq_kv_key_t *entry = tq__partition_key(p, tq__name_cstr(k, key));
        if (entry != NULL)
            removed += tq__partition_clear_rows(p, 1, &entry->row);
    }
    size_t off = tq__reply_begin(c, h);
    tq_wire_put_u32(&c->out, removed);
    tq__reply_end(c, off);
}

/* SET_CUSTOM_META: replace the custom meta of live rows, all or nothing (a
 * KV tag merges into it instead: see put.c). */
void tq__handle_set_custom_meta(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_set_custom_t m;
    if (tq_wire_decode_set_custom(r, &m) != TQ_OK)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed set_custom_meta");
    char name[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = tq__find_partition_str(c->ctl, m.partition);
    if (p == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %s",
                               tq__name_cstr(m.partition, name));
    tq_custom_t **made = calloc(m.count, sizeof(*made));
    if (made == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    /* rows named are marked (a high bit of their state) to find repeats */
    uint32_t marked = 0;
    int64_t delta = 0;
    int status = TQ_OK;
    char why[256] = "";
    for (; marked < m.count; marked++) {
        int64_t row = tq_array_i64(m.indexes, marked);
        if (row < 0 || (uint64_t)row >= p->num_slots) {
            status = TQ_ERR_NOT_FOUND;
            snprintf(why, sizeof(why), "partition %s has no row %lld", p->name, (long long)row);
            break;
        }
        if (p->state[row] & 0x80) {
            status = TQ_ERR_INVALID;
            snprintf(why, sizeof(why), "row %lld is named twice", (long long)row);
            break;
        }
        if (p->state[row] != TQ_ROW_LIVE) {
            status = TQ_ERR_NOT_FOUND;
            snprintf(why, sizeof(why), "partition %s has no row %lld", p->name, (long long)row);
            break;
        }
        p->state[row] |= 0x80;
    }
    for (uint32_t i = 0; status == TQ_OK && i < m.count; i++) {
        int64_t row = tq_array_i64(m.indexes, i);
        tq_blob_t text;
        const char *bad = NULL;
        cJSON *obj = NULL;
        if (tq_wire_decode_custom(r, &text) != TQ_OK) {
            status = TQ_ERR_PROTOCOL;
            snprintf(why, sizeof(why), "malformed custom meta of row %lld", (long long)row);
        } else if (text.len > 0 && (obj = tq__custom_parse(text.ptr, text.len, &bad)) == NULL) {
            status = strcmp(bad, "out of memory") == 0 ? TQ_ERR_NOMEM : TQ_ERR_INVALID;
        } else if (obj != NULL) {
            status = tq__custom_make(obj, &made[i], &bad);
        }
        if (bad != NULL)
            snprintf(why, sizeof(why), "the custom meta of row %lld: %s", (long long)row, bad);
        delta += tq__custom_cost(made[i]) - tq__custom_cost(p->custom[row]);
    }
    for (uint32_t i = 0; i < marked; i++)
        p->state[tq_array_i64(m.indexes, i)] &= 0x7f;
    if (status == TQ_OK && !tq_rbuf_done(r)) {
        status = TQ_ERR_PROTOCOL;
        snprintf(why, sizeof(why), "trailing bytes in set_custom_meta");
    }
    if (status == TQ_OK && !tq__partition_custom_charge(p, delta)) {
        status = TQ_ERR_NOSPACE;
        snprintf(why, sizeof(why), "the controller's row metadata budget (--max-metadata) is "
                 "spent");
    }
    for (uint32_t i = 0; status == TQ_OK && i < m.count; i++) {
        tq__partition_set_custom(p, tq_array_i64(m.indexes, i), made[i]);
        made[i] = NULL;
    }
    for (uint32_t i = 0; i < m.count; i++)
        tq__custom_free(made[i]);
    free(made);
    if (status != TQ_OK)
        return tq__reply_error(c, h, status, "%s", why);
    tq__reply_ok(c, h);
}

/* KV_INDEXES: the rows of keys, -1 for a key with none; with create, new keys
 * get new live rows (no field, no tag) first, all of them or none. */
void tq__handle_kv_indexes(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_controller *ctl = c->ctl;
    tq_msg_kv_indexes_t m;
    if (tq_wire_decode_kv_indexes(r, &m) != TQ_OK)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_indexes");
    tq_rbuf keys = *r; /* every key decoded before anything changes */
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        if (tq_wire_decode_name(r, &k) != TQ_OK)
            return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed key");
    }
    if (!tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "trailing bytes in kv_indexes");
    char name[TQ_WIRE_NAME_MAX + 1], key[TQ_WIRE_NAME_MAX + 1];
    tq__name_cstr(m.partition, name);
    tq_partition_t *p = tq__find_partition(ctl, name);
    int64_t *rows = malloc((size_t)m.count * sizeof(int64_t));
    tq_kv_key_t **fresh = calloc(m.count, sizeof(*fresh)); /* new keys, in request order */
    int64_t *fresh_rows = malloc((size_t)m.count * sizeof(int64_t));
    tq_hashmap *seen = m.create ? tq_hashmap_create() : NULL; /* new key -> its slot + 1 */
    uint32_t num_fresh = 0;
    bool created = false, reserved = false;
    int status = TQ_ERR_NOMEM;
    const char *why = "out of memory";
    if (rows == NULL || fresh == NULL || fresh_rows == NULL || (m.create && seen == NULL))
        goto err;
    if (p == NULL && m.create) {
        if ((p = tq__partition_add(ctl, name, &status, &why)) == NULL)
            goto err;
        created = true;
    }
    for (uint32_t i = 0; i < m.count; i++) {
        tq_str_t k;
        tq_wire_decode_name(&keys, &k);
        tq__name_cstr(k, key);
        tq_kv_key_t *entry = p ? tq__partition_key(p, key) : NULL;
        rows[i] = entry ? entry->row : -1;
        if (entry != NULL || !m.create)
            continue;
        uintptr_t slot = (uintptr_t)tq_hashmap_get(seen, key);
        if (slot != 0) { /* named twice: one new row */
            rows[i] = -(int64_t)slot - 1;
            continue;
        }
        status = TQ_ERR_NOMEM;
        if ((fresh[num_fresh] = tq__kv_key_create(key, -1)) == NULL ||
            tq_hashmap_put(seen, fresh[num_fresh]->key, (void *)(uintptr_t)(num_fresh + 1)) != 0) {
            num_fresh += fresh[num_fresh] != NULL;
            goto err;
        }
        rows[i] = -(int64_t)(++num_fresh) - 1; /* -(slot + 1) - 1: its new row, below */
    }
    if (num_fresh > 0 && p->sealed) {
        status = TQ_ERR_INVALID, why = "the partition is sealed: no new keys";
        goto err;
    }
    if (num_fresh > 0) {
        status = tq__partition_reserve_new(p, num_fresh, fresh_rows);
        why = status == TQ_ERR_NOSPACE ? "the controller's row metadata budget (--max-metadata) "
                                         "is spent" : "the partition would pass its most rows";
        if (status != TQ_OK)
            goto err;
        reserved = true;
        status = TQ_ERR_NOMEM, why = "out of memory";
        if (tq__partition_keys_reserve(p, num_fresh) != TQ_OK)
            goto err;
    }
    for (uint32_t j = 0; j < num_fresh; j++) { /* cannot fail now */
        fresh[j]->row = fresh_rows[j];
        tq__partition_bind_key(p, fresh[j]);
        tq__partition_set_live(p, fresh_rows[j]);
        fresh[j] = NULL;
    }
    for (uint32_t i = 0; i < m.count; i++)
        if (rows[i] < -1)
            rows[i] = fresh_rows[-rows[i] - 2];
    size_t off = tq__reply_begin(c, h);
    tq_wire_put_bytes(&c->out, rows, (size_t)m.count * sizeof(int64_t));
    tq__reply_end(c, off);
    status = TQ_OK;
err:
    if (status != TQ_OK && reserved)
        tq__partition_unreserve(p, num_fresh, fresh_rows);
    if (status != TQ_OK && created && p->live_rows == 0 && tq_list_empty(&p->allocs))
        tq__partition_remove(ctl, p);
    tq_hashmap_destroy(seen); /* before the keys it points to */
    for (uint32_t j = 0; j < num_fresh; j++)
        tq__kv_key_free(fresh[j]);
    free(fresh);
    free(fresh_rows);
    free(rows);
    if (status != TQ_OK)
        tq__reply_error(c, h, status, "%s", why);
}

tq_partition_t *tq__live_rows_partition(conn_t *c, const tq_wire_header_t *h, tq_str_t partition,
                                        tq_array_t indexes, uint32_t count)
{
    char name[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = tq__find_partition_str(c->ctl, partition);
    if (p == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %s", tq__name_cstr(partition, name));
        return NULL;
    }
    for (uint32_t i = 0; i < count; i++) {
        int64_t row = tq_array_i64(indexes, i);
        if (row < 0 || (uint64_t)row >= p->num_slots || p->state[row] != TQ_ROW_LIVE) {
            tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "partition %s has no row %lld", p->name,
                            (long long)row);
            return NULL;
        }
    }
    return p;
}

/* KV_KEYS: the keys of live rows ("" for a row without one). */
void tq__handle_kv_keys(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_clear_t m;
    if (tq_wire_decode_clear(r, &m) != TQ_OK || !tq_rbuf_done(r) || m.count == 0)
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_keys");
    tq_partition_t *p = tq__live_rows_partition(c, h, m.partition, m.indexes, m.count);
    if (p == NULL)
        return;
    size_t off = tq__reply_begin(c, h);
    for (uint32_t i = 0; i < m.count; i++) {
        const tq_kv_key_t *k = p->row_keys[tq_array_i64(m.indexes, i)];
        tq_wire_encode_row_key(&c->out, k ? (tq_str_t){k->key, (uint16_t)strlen(k->key)}
                                          : (tq_str_t){"", 0});
    }
    tq__reply_end(c, off);
}
