/* put.c: the two-phase put: ALLOC reserves rows and extents, COMMIT makes them visible. */
#define TQ_LOG_COMPONENT "controller"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/internal.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/hashmap.h"
#include "util/log.h"

#define METADATA_SPENT    "the controller's row metadata budget (--max-metadata) is spent"
#define MAX_CELLS_PER_PUT (1u << 22) /* rows x fields: bounds one request's work and memory */

static void alloc_free(alloc_t *a)
{
    tq_list_remove(&a->conn_link);
    tq_list_remove(&a->part_link);
    for (uint16_t i = 0; i < a->num_fields; i++) {
        tq__extent_unref(a->fields[i].ext);
        free(a->fields[i].name);
        free(a->fields[i].cells);
    }
    for (uint32_t i = 0; a->keys != NULL && i < a->rows; i++) {
        free(a->keys[i]);
        cJSON_Delete(a->tags[i]);
    }
    free(a->keys);
    free(a->tags);
    free(a->fields);
    free(a->indexes);
    free(a);
}

/* Give up a pending put: rows it reserved become free again. */
void tq__alloc_abort(alloc_t *a)
{
    if (a->part != NULL)
        tq__partition_unreserve(a->part, a->rows, a->indexes);
    alloc_free(a);
}

static alloc_t *alloc_find(conn_t *c, uint64_t id)
{
    tq_list *pos;
    for (pos = c->allocs.next; pos != &c->allocs; pos = pos->next) {
        alloc_t *a = tq_list_entry(pos, alloc_t, conn_link);
        if (a->id == id)
            return a;
    }
    return NULL;
}

/* Bytes of one element, the product of dims, or fail on a negative or overflowing shape. */
static bool shape_bytes(tq_dtype_t dtype, uint32_t ndim, const int64_t *dims, uint64_t *bytes_p)
{
    uint64_t n = tq_dtype_size(dtype);
    for (uint32_t d = 0; d < ndim; d++) {
        if (dims[d] < 0 || (dims[d] > 0 && n > UINT64_MAX / (uint64_t)dims[d]))
            return false;
        n *= (uint64_t)dims[d];
    }
    *bytes_p = n;
    return true;
}

/* Turn one decoded field of an ALLOC into cells with offsets in a column of
 * *total_p bytes. Returns a message on bad input. */
static const char *alloc_field_prepare(alloc_field_t *af, const tq_wire_field_t *w, uint32_t rows,
                                       uint64_t *total_p)
{
    af->kind = w->kind;
    af->dtype = w->dtype;
    af->ndim = w->ndim;
    memcpy(af->format, w->format.ptr, w->format.len); /* checked: at most TQ_MAX_FORMAT */
    af->format[w->format.len] = '\0';
    af->cells = calloc(rows, sizeof(tq_cell_t));
    if (af->cells == NULL)
        return "out of memory";
    uint64_t total = 0, row_bytes = 0;
    if (w->kind == TQ_FIELD_TENSOR) {
        for (uint32_t d = 0; d < w->ndim; d++)
            af->row_shape[d] = tq_array_i64(w->dims, d);
        if (!shape_bytes(af->dtype, af->ndim, af->row_shape, &row_bytes))
            return "bad tensor shape";
    }
    for (uint32_t i = 0; i < rows; i++) {
        tq_cell_t *cell = &af->cells[i];
        if (w->kind == TQ_FIELD_TENSOR) {
            memcpy(cell->shape, af->row_shape, sizeof(cell->shape));
            cell->length = row_bytes;
        } else if (w->kind == TQ_FIELD_NESTED) {
            for (uint32_t d = 0; d < w->ndim; d++)
                cell->shape[d] = tq_array_i64(w->dims, i * w->ndim + d);
            if (!shape_bytes(af->dtype, af->ndim, cell->shape, &cell->length))
                return "bad nested shape";
        } else {
            cell->length = tq_array_u64(w->dims, i);
        }
        cell->offset = total; /* relative until the extent is placed */
        if (cell->length > MAX_UNIT_CAPACITY || total + cell->length > MAX_UNIT_CAPACITY)
            return "field too large";
        total += cell->length;
    }
    *total_p = total;
    return NULL;
}

/* A field that exists keeps its dtype, number of dimensions and format
 * label (a put that gives none keeps it), and bytes stay bytes; only the
 * shape of a row may change (tensor becomes nested). A conflict is described
 * in buf (naming the field), which is returned; NULL when none. */
#define CONFLICT_MAX 400
static const char *schema_conflict(const tq_field_t *f, const alloc_field_t *af, char *buf)
{
    if (f == NULL)
        return NULL;
    if (f->dtype != af->dtype)
        snprintf(buf, CONFLICT_MAX, "field %s: dtype %s conflicts with the field's %s", f->name,
                 tq__dtype_name(af->dtype), tq__dtype_name(f->dtype));
    else if ((f->kind == TQ_FIELD_BYTES) != (af->kind == TQ_FIELD_BYTES))
        snprintf(buf, CONFLICT_MAX, "field %s: kind conflicts with the field's", f->name);
    else if (f->ndim != af->ndim)
        snprintf(buf, CONFLICT_MAX, "field %s: number of dimensions %u conflicts with the "
                 "field's %u", f->name, af->ndim, f->ndim);
    else if (af->format[0] != '\0' && f->format[0] != '\0' && strcmp(af->format, f->format) != 0)
        snprintf(buf, CONFLICT_MAX, "field %s: format \"%s\" conflicts with the field's \"%s\"",
                 f->name, af->format, f->format);
    else
        return NULL;
    return buf;
}

static int  alloc_commit(tq_controller *ctl, alloc_t *a, const char **why, char *conflict,
                          int64_t *rows_out);

/* Read the keys and tags of a keyed ALLOC into a. Returns a message on bad input. */
static const char *alloc_read_keys(alloc_t *a, tq_rbuf *r, int *status_p, char *buf)
{
    a->keys = calloc(a->rows, sizeof(char *));
    a->tags = calloc(a->rows, sizeof(cJSON *));
    tq_hashmap *seen = tq_hashmap_create();
    const char *why = NULL;
    *status_p = TQ_ERR_NOMEM;
    if (a->keys == NULL || a->tags == NULL || seen == NULL) {
        why = "out of memory";
        goto out;
    }
    for (uint32_t i = 0; i < a->rows && why == NULL; i++) {
        tq_str_t key;
        tq_blob_t tag;
        if (tq_wire_decode_key(r, &key, &tag) != TQ_OK) {
            *status_p = TQ_ERR_PROTOCOL, why = "malformed key";
        } else if ((a->keys[i] = tq_str_dup(key)) == NULL) {
            why = "out of memory";
        } else if (tq_hashmap_get(seen, a->keys[i]) != NULL) {
            *status_p = TQ_ERR_INVALID, why = "a key is given twice";
        } else if (tq_hashmap_put(seen, a->keys[i], a->keys[i]) != 0) {
            why = "out of memory";
        } else if (tag.len > 0 && (a->tags[i] = tq__custom_parse(tag.ptr, tag.len, &why)) == NULL) {
            *status_p = strcmp(why, "out of memory") == 0 ? TQ_ERR_NOMEM : TQ_ERR_INVALID;
            snprintf(buf, CONFLICT_MAX, "the tag of key %s: %s", a->keys[i], why);
            why = buf;
        }
    }
out:
    tq_hashmap_destroy(seen);
    return why;
}

/* A sealed partition takes no new row: only overwrites of live rows and
 * updates of existing keys. */
static const char *sealed_refuses(const tq_partition_t *p, const tq_msg_alloc_t *m, const alloc_t *a)
{
    for (uint32_t i = 0; i < m->rows; i++) {
        if (m->row_mode == TQ_ROWS_NEW)
            return "the partition is sealed: no new rows";
        if (m->row_mode == TQ_ROWS_KEYS && tq__partition_key(p, a->keys[i]) == NULL)
            return "the partition is sealed: no new keys";
        int64_t r = tq_array_i64(m->indexes, i);
        if (m->row_mode == TQ_ROWS_INDEXES &&
            (r < 0 || (uint64_t)r >= p->num_slots || p->state[r] != TQ_ROW_LIVE))
            return "the partition is sealed: only live rows may be written";
    }
    return NULL;
}

/* How an ALLOC ended: answered, or short of room with leave to wait for it. */
typedef enum { ALLOC_ANSWERED, ALLOC_WAIT } alloc_outcome_t;

/*
 * Reserve rows and extents for the ALLOC in body and answer it, or, when the
 * pools are short of room that frees could make and may_wait, answer nothing
 * and return ALLOC_WAIT with the time it may wait in *wait_ms_p.
 */
static alloc_outcome_t try_alloc(conn_t *c, const tq_wire_header_t *h, const uint8_t *body,
                                 bool may_wait, uint32_t *wait_ms_p)
{
    tq_controller *ctl = c->ctl;
    tq_rbuf rb = tq_rbuf_make(body, h->body_len), *r = &rb;
    tq_msg_alloc_t m;
    if (tq_wire_decode_alloc(r, &m) != TQ_OK) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed alloc");
        return ALLOC_ANSWERED;
    }
    *wait_ms_p = m.wait_ms;
    bool wait = false;
    if (m.commit_ms == 0) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "an alloc needs a commit time (commit_ms > 0)");
        return ALLOC_ANSWERED;
    }
    if ((uint64_t)m.rows * (m.num_fields ? m.num_fields : 1) > MAX_CELLS_PER_PUT) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "a put may hold at most %u cells (rows x fields)",
                        MAX_CELLS_PER_PUT);
        return ALLOC_ANSWERED;
    }

    alloc_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return ALLOC_ANSWERED;
    }
    tq_list_init(&a->conn_link);
    tq_list_init(&a->part_link);
    a->rows = m.rows;
    a->indexes = malloc((size_t)m.rows * sizeof(int64_t));
    a->fields = calloc(m.num_fields ? m.num_fields : 1, sizeof(alloc_field_t));
    int status = TQ_ERR_NOMEM;
    const char *why = "out of memory";
    tq_partition_t *p = NULL;
    bool created = false, reserved = false;
    if (a->indexes == NULL || a->fields == NULL)
        goto err;
    a->num_fields = m.num_fields;
    char conflict[CONFLICT_MAX];
    if (m.row_mode == TQ_ROWS_KEYS && (why = alloc_read_keys(a, r, &status, conflict)) != NULL)
        goto err;

    char pname[TQ_WIRE_NAME_MAX + 1];
    memcpy(pname, m.partition.ptr, m.partition.len);
    pname[m.partition.len] = '\0';
    p = tq__find_partition(ctl, pname);

    uint64_t totals[TQ_WIRE_MAX_FIELDS];
    for (uint16_t i = 0; i < m.num_fields; i++) {
        tq_wire_field_t w;
        if (tq_wire_decode_field(r, m.rows, &w) != TQ_OK) {
            status = TQ_ERR_PROTOCOL, why = "malformed field";
            goto err;
        }
        alloc_field_t *af = &a->fields[i];
        af->name = tq_str_dup(w.name);
        if (af->name == NULL) {
            status = TQ_ERR_NOMEM, why = "out of memory";
            goto err;
        }
        for (uint16_t j = 0; j < i; j++)
            if (strcmp(a->fields[j].name, af->name) == 0) {
                status = TQ_ERR_INVALID, why = "a field is named twice";
                goto err;
            }
        why = alloc_field_prepare(af, &w, m.rows, &totals[i]);
        if (why != NULL) {
            status = af->cells ? TQ_ERR_INVALID : TQ_ERR_NOMEM;
            goto err;
        }
        why = p ? schema_conflict(tq__partition_field(p, af->name), af, conflict) : NULL;
        if (why != NULL) {
            status = TQ_ERR_INVALID;
            goto err;
        }
    }
    if (!tq_rbuf_done(r)) {
        status = TQ_ERR_PROTOCOL, why = "trailing bytes in alloc";
        goto err;
    }

    if (p != NULL && p->sealed && (why = sealed_refuses(p, &m, a)) != NULL) {
        status = TQ_ERR_INVALID;
        goto err;
    }
    if (p == NULL) {
        if ((p = tq__partition_add(ctl, pname, &status, &why)) == NULL)
            goto err;
        created = true;
    }
    if (m.row_mode == TQ_ROWS_INDEXES) {
        memcpy(a->indexes, m.indexes.ptr, (size_t)m.rows * 8);
        status = tq__partition_reserve(p, m.rows, a->indexes);
        why = status == TQ_ERR_NOSPACE ? METADATA_SPENT
                                       : "an index is negative, too large or repeated";
    } else {
        /* keyed rows get fresh rows too: commit binds each key to its row then,
         * so a key cleared or created meanwhile cannot take someone else's row */
        status = tq__partition_reserve_new(p, m.rows, a->indexes);
        why = status == TQ_ERR_NOSPACE ? METADATA_SPENT : "too many rows";
    }
    if (status != TQ_OK)
        goto err;
    reserved = true;

    for (uint16_t i = 0; i < m.num_fields; i++) {
        if (totals[i] == 0)
            continue;
        alloc_field_t *af = &a->fields[i];
        tq_unit *u = tq__unit_pick(ctl, totals[i]);
        tq_pool_block *block;
        if (u == NULL || tq_pool_alloc(u->pool, totals[i], &block) != TQ_OK) {
            status = TQ_ERR_NOSPACE;
            why = tq__units_alive(ctl) ? "no storage unit has room for a field" : "no live storage unit";
            /* room may come as others clear, unless no unit could ever hold it */
            wait = may_wait && m.wait_ms > 0 && tq__unit_could_fit(ctl, totals[i]);
            goto err;
        }
        af->ext = calloc(1, sizeof(tq_extent));
        if (af->ext == NULL) {
            tq_pool_free(u->pool, block);
            status = TQ_ERR_NOMEM, why = "out of memory";
            goto err;
        }
        *af->ext = (tq_extent){u, u->pool, block, tq_pool_block_offset(block), totals[i], 1};
        for (uint32_t k = 0; k < m.rows; k++)
            af->cells[k].offset += af->ext->offset;
    }

    /* the client gives up commit_ms after sending, so no earlier than
     * commit_ms after the ALLOC arrived (a parked one: when it first arrived) */
    uint64_t now = tq__now_ms();
    a->commit_by_ms = ctl->request_start_ns / 1000000u + m.commit_ms;
    if (now >= a->commit_by_ms) {
        status = TQ_ERR_TIMEOUT, why = "the put's time ran out before room was found";
        goto err;
    }
    for (uint16_t i = 0; i < a->num_fields; i++)
        ctl->metrics.bytes_allocated += a->fields[i].ext ? a->fields[i].ext->length : 0;
    a->id = ++ctl->next_id;
    a->part = p;
    a->lease_end_ms = now + ctl->lease_ms;
    tq_list_insert_tail(&c->allocs, &a->conn_link);
    tq_list_insert_tail(&p->allocs, &a->part_link);

    /* even a put of tags alone commits in a second step: one answer that
     * made it visible could be lost to a client that gave up */
    size_t off = tq__reply_begin(c, h);
    tq_wire_encode_alloc_reply(&c->out, &(tq_msg_alloc_reply_t){
        a->id, ctl->lease_ms, (uint32_t)(a->commit_by_ms - now), a->rows,
        tq_array_of(a->indexes, a->rows), a->num_fields});
    for (uint16_t i = 0; i < a->num_fields; i++) {
        tq_extent *e = a->fields[i].ext;
        tq_wire_extent_t x = {TQ_WIRE_NO_UNIT, 0, 0};
        if (e != NULL)
            x = (tq_wire_extent_t){e->unit->id, e->offset, e->length};
        tq_wire_encode_extent(&c->out, &x);
    }
    tq__reply_end(c, off);
    return ALLOC_ANSWERED;

err:
    if (reserved)
        tq__partition_unreserve(p, a->rows, a->indexes);
    if (created && p->live_rows == 0 && tq_list_empty(&p->allocs))
        tq__partition_remove(ctl, p);
    alloc_free(a);
    if (wait)
        return ALLOC_WAIT;
    tq__reply_error(c, h, status, "%s", why);
    return ALLOC_ANSWERED;
}

/* Back-pressure: a put that finds the pools full waits, parked, for room. */
void tq__handle_alloc(conn_t *c, const tq_wire_header_t *h, const uint8_t *body)
{
    uint32_t wait_ms = 0;
    if (try_alloc(c, h, body, true, &wait_ms) == ALLOC_ANSWERED)
        return;
    if (tq__park(c, h, body, wait_ms, NULL) != TQ_OK)
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
}

void tq__retry_parked_allocs(tq_controller *ctl)
{
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->type != TQ_MSG_ALLOC)
            continue;
        tq_wire_header_t h = {.type = TQ_MSG_ALLOC, .request_id = pk->request_id,
                              .body_len = pk->body_len};
        tq__parked_resume(pk);
        uint32_t wait_ms;
        if (try_alloc(pk->conn, &h, pk->body, true, &wait_ms) == ALLOC_ANSWERED)
            tq__parked_free(pk);
    }
}

/* What a keyed commit will change, made before anything changes: per key, a
 * new key object (NULL: the key exists) and, for a key given a tag, the row's
 * custom meta with the tag merged in (NULL also when that is empty). */
typedef struct {
    tq_kv_key_t **fresh;
    tq_custom_t **tags;
    int64_t       charged; /* what the merged tags add to the metadata budget */
} keys_plan_t;

static void keys_plan_free(const alloc_t *a, keys_plan_t *kp)
{
    for (uint32_t i = 0; i < a->rows; i++) {
        if (kp->fresh != NULL)
            tq__kv_key_free(kp->fresh[i]);
        if (kp->tags != NULL)
            tq__custom_free(kp->tags[i]);
    }
    free(kp->fresh);
    free(kp->tags);
}

/* Plan the keys and tags of a, charging the tags' growth to the budget.
 * TQ_ERR_INVALID (a merged tag too long, said in buf, *why), TQ_ERR_NOSPACE,
 * TQ_ERR_NOMEM: then nothing stays charged. */
static int keys_plan(tq_partition_t *p, const alloc_t *a, keys_plan_t *kp, char *buf,
                     const char **why)
{
    kp->fresh = calloc(a->rows, sizeof(*kp->fresh));
    kp->tags = calloc(a->rows, sizeof(*kp->tags));
    *why = "out of memory";
    if (kp->fresh == NULL || kp->tags == NULL)
        return TQ_ERR_NOMEM;
    size_t fresh = 0;
    int64_t delta = 0;
    for (uint32_t i = 0; i < a->rows; i++) {
        tq_kv_key_t *k = tq__partition_key(p, a->keys[i]);
        if (k == NULL && (k = kp->fresh[i] = tq__kv_key_create(a->keys[i], a->indexes[i])) == NULL)
            return TQ_ERR_NOMEM;
        fresh += kp->fresh[i] != NULL;
        if (a->tags[i] == NULL)
            continue;
        const tq_custom_t *old = tq__partition_custom(p, (uint64_t)k->row);
        cJSON *merged = tq__kv_tag_merged(old ? old->obj : NULL, a->tags[i]);
        const char *bad = NULL;
        int rc = merged ? tq__custom_make(merged, &kp->tags[i], &bad) : TQ_ERR_NOMEM;
        if (rc == TQ_ERR_INVALID) {
            snprintf(buf, CONFLICT_MAX, "the tag of key %s merged into the one it has: %s",
                     a->keys[i], bad);
            *why = buf;
        }
        if (rc != TQ_OK)
            return rc;
        delta += tq__custom_cost(kp->tags[i]) - tq__custom_cost(old);
    }
    if (!tq__partition_custom_charge(p, delta)) {
        *why = METADATA_SPENT;
        return TQ_ERR_NOSPACE;
    }
    kp->charged = delta;
    if (tq__partition_keys_reserve(p, fresh) != TQ_OK) {
        tq__partition_custom_charge(p, -delta);
        kp->charged = 0;
        return TQ_ERR_NOMEM;
    }
    return TQ_OK;
}

/* Bind the put's keys to rows, as planned: a key that exists keeps its row
 * (and the row reserved for it goes back); a new one takes its reserved row.
 * Cannot fail. */
static void keys_apply(tq_partition_t *p, alloc_t *a, keys_plan_t *kp)
{
    for (uint32_t i = 0; i < a->rows; i++) {
        tq_kv_key_t *k = kp->fresh[i];
        if (k != NULL) {
            tq__partition_bind_key(p, k);
            kp->fresh[i] = NULL;
        } else {
            k = tq__partition_key(p, a->keys[i]);
            tq__partition_unreserve(p, 1, &a->indexes[i]);
            a->indexes[i] = k->row;
        }
        tq__partition_set_live(p, k->row);
        if (a->tags[i] != NULL) {
            tq__partition_set_custom(p, k->row, kp->tags[i]);
            kp->tags[i] = NULL;
        }
    }
}

/*
 * Make a pending put visible, all of it or nothing: fields, cells, keys and
 * tags; then free it. Everything that can fail (budgets, memory) is done
 * before the first change. On error the put is aborted and *why says what
 * went wrong. rows_out, when not NULL, gets the rows written (a key that
 * existed keeps its row: known only now).
 */
static int alloc_commit(tq_controller *ctl, alloc_t *a, const char **why, char *conflict,
                        int64_t *rows_out)
{
    tq_partition_t *p = a->part;
    if (p == NULL) {
        alloc_free(a);
        *why = "the partition was cleared during the put";
        return TQ_ERR_NOT_FOUND;
    }
    tq_field_t specs[TQ_WIRE_MAX_FIELDS];
    uint32_t num_new = 0;
    for (uint16_t i = 0; i < a->num_fields; i++) {
        alloc_field_t *af = &a->fields[i];
        if (af->ext != NULL && !af->ext->unit->alive) {
            tq__alloc_abort(a);
            *why = "a storage unit died during the put";
            return TQ_ERR_LOST;
        }
        /* a concurrent put may have created the field since the ALLOC */
        tq_field_t *f = tq__partition_field(p, af->name);
        if ((*why = schema_conflict(f, af, conflict)) != NULL) {
            tq__alloc_abort(a);
            return TQ_ERR_INVALID;
        }
        if (f == NULL) {
            specs[num_new] = (tq_field_t){.name = af->name, .kind = af->kind, .dtype = af->dtype,
                                          .ndim = af->ndim};
            memcpy(specs[num_new].format, af->format, sizeof(af->format));
            memcpy(specs[num_new++].row_shape, af->row_shape, sizeof(af->row_shape));
        }
    }
    keys_plan_t kp = {NULL, NULL, 0};
    int rc = a->keys != NULL ? keys_plan(p, a, &kp, conflict, why) : TQ_OK;
    if (rc == TQ_OK && (rc = tq__partition_add_fields(p, num_new, specs)) != TQ_OK) {
        /* the last step that can fail */
        tq__partition_custom_charge(p, -kp.charged);
        *why = rc == TQ_ERR_NOSPACE ? METADATA_SPENT : "out of memory";
    }
    if (rc != TQ_OK) {
        keys_plan_free(a, &kp);
        tq__alloc_abort(a);
        return rc;
    }

    if (a->keys != NULL)
        keys_apply(p, a, &kp);
    keys_plan_free(a, &kp);
    for (uint16_t i = 0; i < a->num_fields; i++) {
        alloc_field_t *af = &a->fields[i];
        tq_field_t *f = tq__partition_field(p, af->name);
        if (f->kind == TQ_FIELD_TENSOR &&
            (af->kind != TQ_FIELD_TENSOR ||
             memcmp(af->row_shape, f->row_shape, f->ndim * sizeof(int64_t)) != 0))
            f->kind = TQ_FIELD_NESTED; /* rows of another shape make a tensor ragged */
        if (f->format[0] == '\0') /* the first label given is the field's */
            memcpy(f->format, af->format, sizeof(f->format));
        ctl->metrics.bytes_committed += af->ext ? af->ext->length : 0;
        for (uint32_t k = 0; k < a->rows; k++) {
            tq_cell_t cell = af->cells[k];
            cell.ext = af->ext;
            if (cell.ext != NULL)
                tq__extent_ref(cell.ext);
            tq__partition_set_cell(p, f, a->indexes[k], &cell);
        }
    }
    if (rows_out != NULL)
        memcpy(rows_out, a->indexes, (size_t)a->rows * sizeof(int64_t));
    char *name = strdup(p->name);
    alloc_free(a);
    if (name != NULL)
        tq__wake_parked(ctl, name);
    free(name);
    return TQ_OK;
}

/* COMMIT, or COMMIT_META: the same, answered with the meta of the rows written
 * (every field they all have now, their custom meta and keys), so a keyed put
 * says what it left without a second round trip. */
void tq__handle_commit(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r)) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed commit");
        return;
    }
    alloc_t *a = alloc_find(c, m.id);
    if (a == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no pending allocation %llu",
                        (unsigned long long)m.id);
        return;
    }
    /* the client has given up by now, and been told the put failed */
    if (tq__now_ms() > a->commit_by_ms) {
        tq__alloc_abort(a);
        tq__reply_error(c, h, TQ_ERR_TIMEOUT, "the commit came after its deadline");
        return;
    }
    /* alloc_commit frees the allocation: keep what the meta answer names */
    tq_partition_t *p = a->part;
    uint32_t rows = a->rows;
    int64_t *indexes = NULL;
    if (h->type == TQ_MSG_COMMIT_META &&
        (indexes = malloc((size_t)rows * sizeof(int64_t) + 1)) == NULL) {
        tq__alloc_abort(a);
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return;
    }
    const char *why = NULL;
    char conflict[CONFLICT_MAX];
    int rc = alloc_commit(c->ctl, a, &why, conflict, indexes);
    if (rc != TQ_OK)
        tq__reply_error(c, h, rc, "%s", why);
    else if (indexes != NULL)
        tq__reply_rows_meta(c, h, p, indexes, rows);
    else
        tq__reply_ok(c, h);
    free(indexes);
    if (rc == TQ_OK)
        tq__reply_send_now(c); /* visible now: the answer must not wait for the loop */
}

void tq__handle_abort(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed abort");
    alloc_t *a = alloc_find(c, m.id);
    if (a == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no pending allocation %llu",
                           (unsigned long long)m.id);
    tq__alloc_abort(a);
    tq__reply_ok(c, h);
}
