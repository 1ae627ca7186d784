/* kv.c: the key-value requests: KV_GET pins the rows of keys, KV_LIST, KV_CLEAR. */
#define TQ_LOG_COMPONENT "controller"
#include <stdlib.h>
#include <string.h>

#include "controller/internal.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/hashmap.h"

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
    } else { /* every field all the keys have */
        for (uint32_t i = 0; i < p->num_fields; i++) {
            bool shared = true;
            for (uint32_t k = 0; k < m.count && shared; k++)
                shared = p->fields[i].cells[rows[k]].produced;
            if (shared)
                fields[nf++] = &p->fields[i];
        }
        if (nf == 0) {
            tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "the keys share no field");
            goto out;
        }
        if (nf > TQ_WIRE_MAX_FIELDS) {
            tq__reply_error(c, h, TQ_ERR_INVALID, "the keys share %u fields: name at most %u", nf,
                        TQ_WIRE_MAX_FIELDS);
            goto out;
        }
    }
    meta_t *meta = tq__meta_new(c, (size_t)m.count * nf); /* pins only: it consumes nothing */
    if (meta == NULL)
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    else if (tq__reply_meta(c, h, fields, (uint16_t)nf, rows, m.count, meta) != TQ_OK)
        tq__meta_free(c->ctl, meta, true);
out:
    free(fields);
    free(rows);
}

static void encode_partition_keys(tq_wbuf *w, const tq_partition_t *p)
{
    tq_list *pos;
    for (pos = p->key_order.next; pos != &p->key_order; pos = pos->next) {
        const tq_kv_key_t *k = tq_list_entry(pos, tq_kv_key_t, link);
        char *tag = cJSON_PrintUnformatted(k->tag);
        if (tag == NULL) {
            w->failed = true; /* out of memory: the reply fails whole */
            return;
        }
        tq_wire_kv_entry_t e = {{p->name, (uint16_t)strlen(p->name)},
                                {k->key, (uint16_t)strlen(k->key)},
                                {(const uint8_t *)tag, (uint32_t)strlen(tag)}};
        tq_wire_encode_kv_entry(w, &e);
        free(tag);
    }
}

void tq__handle_kv_list(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_str_t want;
    if (tq_wire_decode_partition_filter(r, &want) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed kv_list");
    uint32_t n = 0;
    tq_list *pos;
    for (pos = c->ctl->partitions.next; pos != &c->ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (want.len == 0 || tq_str_eq(want, p->name))
            n += (uint32_t)tq_hashmap_size(p->keys);
    }
    size_t off = tq__reply_begin(c, h);
    tq_wire_put_u32(&c->out, n);
    for (pos = c->ctl->partitions.next; pos != &c->ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        if (want.len == 0 || tq_str_eq(want, p->name))
            encode_partition_keys(&c->out, p);
    }
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
