/* fetch.c: GET_META, samplers, parked requests, and the metas handed out to client sessions. */
#define TQ_LOG_COMPONENT "controller"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/internal.h"
#include "controller/sampler.h"
#include "tq/tq.h"
#include "util/common.h"
#include "util/log.h"

/* ---- sessions and metas ---- */

int tq__session_join(conn_t *c, const uint8_t *secret)
{
    tq_controller *ctl = c->ctl;
    char key[2 * TQ_WIRE_SESSION_LEN + 1] = "";
    for (size_t i = 0; secret != NULL && i < TQ_WIRE_SESSION_LEN; i++)
        snprintf(key + 2 * i, 3, "%02x", secret[i]);
    tq_session_t *s = key[0] ? tq_hashmap_get(ctl->sessions, key) : NULL;
    bool fresh = s == NULL;
    if (fresh) {
        if ((s = calloc(1, sizeof(*s))) == NULL)
            return TQ_ERR_NOMEM;
        memcpy(s->key, key, sizeof(key));
        tq_list_init(&s->metas);
        if (key[0] && tq_hashmap_put(ctl->sessions, s->key, s) != 0) {
            free(s);
            return TQ_ERR_NOMEM;
        }
    }
    if (tq_u64map_put(ctl->greeted, c->id, c) != 0) {
        if (fresh && key[0])
            tq_hashmap_remove(ctl->sessions, s->key);
        if (fresh)
            free(s);
        return TQ_ERR_NOMEM;
    }
    s->conns++;
    c->session = s;
    return TQ_OK;
}

void tq__session_leave(conn_t *c)
{
    tq_session_t *s = c->session;
    if (s == NULL)
        return;
    tq_controller *ctl = c->ctl;
    tq_u64map_remove(ctl->greeted, c->id);
    c->session = NULL;
    bool last = --s->conns == 0;
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &s->metas) {
        meta_t *m = tq_list_entry(pos, meta_t, session_link);
        if (last || (m->conn == c && m->reply_end > c->sent))
            tq__meta_free(ctl, m, false); /* the client is gone, or never got the answer */
        else if (m->conn == c)
            m->conn = NULL; /* answered: the client releases it by another connection */
    }
    if (!last)
        return;
    if (s->key[0])
        tq_hashmap_remove(ctl->sessions, s->key);
    free(s);
}

meta_t *tq__meta_new(conn_t *c, size_t max_pins)
{
    meta_t *m = calloc(1, sizeof(*m));
    if (m == NULL || (m->pins = malloc(max_pins * sizeof(tq_extent *) + 1)) == NULL) {
        free(m);
        return NULL;
    }
    m->id = ++c->ctl->next_id;
    if (tq_u64map_put(c->ctl->metas, m->id, m) != 0) {
        free(m->pins);
        free(m);
        return NULL;
    }
    m->session = c->session;
    m->conn = c;
    tq_list_insert_tail(&c->session->metas, &m->session_link);
    tq_list_init(&m->lease_link);
    tq_list_init(&m->claim.link);
    return m;
}

static void meta_unpin(meta_t *m)
{
    for (uint32_t i = 0; i < m->num_pins; i++)
        tq__extent_unref(m->pins[i]);
    m->num_pins = 0;
    tq_list_remove(&m->lease_link);
}

void tq__meta_free(tq_controller *ctl, meta_t *m, bool delivered)
{
    tq_partition_t *p = m->claim.part;
    uint32_t back = tq__claim_settle(&m->claim, delivered);
    meta_unpin(m);
    tq_list_remove(&m->session_link);
    tq_u64map_remove(ctl->metas, m->id);
    free(m->pins);
    free(m);
    if (back > 0) /* rows ready again: a waiting request may take them */
        tq__wake_parked(ctl, p->name);
}

uint64_t tq__leases_expire(tq_controller *ctl, uint64_t now, uint64_t next)
{
    /* every lease is as long, so the list is in the order they end */
    while (!tq_list_empty(&ctl->leases)) {
        meta_t *m = tq_list_entry(ctl->leases.next, meta_t, lease_link);
        if (m->lease_end_ms > now)
            return TQ_MIN(next, m->lease_end_ms);
        tq_warn("meta %llu not released within its %u ms lease: unpinned",
                (unsigned long long)m->id, ctl->lease_ms);
        /* the client will not trust a read now; whether it got the rows before
         * is for it to say (RELEASE or RELEASE_UNREAD), or its end */
        if (m->claim.part != NULL)
            meta_unpin(m);
        else
            tq__meta_free(ctl, m, true);
    }
    return next;
}

void tq__unit_lost(tq_controller *ctl, const struct tq_unit *u)
{
    tq_list *pos;
    for (pos = ctl->partitions.next; pos != &ctl->partitions; pos = pos->next) {
        tq_partition_t *p = tq_list_entry(pos, tq_partition_t, link);
        uint64_t n = tq__partition_mark_lost(p, u);
        if (n == 0)
            continue;
        tq_info("partition %s: %llu cells lost with storage unit %u", p->name,
                (unsigned long long)n, u->id);
        /* lost rows are waited for no more: a sealed partition may be at its end */
        tq__wake_parked(ctl, p->name);
    }
}

void tq__parked_free(parked_t *pk)
{
    tq_list_remove(&pk->link);
    free(pk->body);
    free(pk->partition);
    free(pk);
}

/* Write the GET_META answer for rows of p and pin their cells. */
int tq__reply_meta(conn_t *c, const tq_wire_header_t *h, const tq_partition_t *p,
                   tq_field_t *const *fields, uint16_t nf, const int64_t *rows, uint32_t n,
                   meta_t *meta)
{
    uint64_t *row_bytes = malloc((size_t)n * 8 + 1);
    int64_t *shapes = malloc((size_t)n * TQ_MAX_NDIM * 8 + 1);
    tq_wire_extent_t *runs = malloc((size_t)n * sizeof(*runs) + 1);
    uint8_t *present = malloc((size_t)n + 1);
    int rc = TQ_ERR_NOMEM;
    if (row_bytes == NULL || shapes == NULL || runs == NULL || present == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t off = tq__reply_begin(c, h);
    meta->lease_end_ms = tq__now_ms() + c->ctl->lease_ms;
    tq_wire_encode_get_meta_reply(&c->out, &(tq_msg_get_meta_reply_t){
        meta->id, c->ctl->lease_ms, n, tq_array_of(rows, n), nf});
    uint32_t pin = 0;
    for (uint16_t k = 0; k < nf; k++) {
        const tq_field_t *f = fields[k];
        uint32_t num_runs = 0;
        bool absent = false; /* a cell never produced: said so, with no bytes */
        for (uint32_t i = 0; i < n; i++) {
            const tq_cell_t *cell = &f->cells[rows[i]];
            present[i] = cell->produced;
            absent |= !cell->produced;
            row_bytes[i] = cell->length;
            memcpy(&shapes[(size_t)i * f->ndim], cell->shape, f->ndim * sizeof(int64_t));
            if (cell->ext != NULL) {
                tq__extent_ref(cell->ext);
                meta->pins[pin++] = cell->ext;
            }
            if (cell->length == 0)
                continue;
            /* a dead unit's cells are named lost: the client fails fast, reads nothing */
            uint32_t unit = cell->ext->unit->alive && !cell->lost ? cell->ext->unit->id
                                                                  : TQ_WIRE_LOST_UNIT;
            tq_wire_extent_t *last = num_runs ? &runs[num_runs - 1] : NULL;
            if (last != NULL && last->unit == unit && last->offset + last->length == cell->offset)
                last->length += cell->length; /* adjacent cells: one read */
            else
                runs[num_runs++] = (tq_wire_extent_t){unit, cell->offset, cell->length};
        }
        bool tensor = f->kind == TQ_FIELD_TENSOR, nested = f->kind == TQ_FIELD_NESTED;
        tq_wire_meta_field_t w = {
            .name = {f->name, (uint16_t)strlen(f->name)},
            .kind = (uint8_t)f->kind, .dtype = (uint8_t)f->dtype, .ndim = (uint8_t)f->ndim,
            .row_shape = tq_array_of(f->row_shape, tensor ? f->ndim : 0),
            .shapes = tq_array_of(shapes, nested ? n * f->ndim : 0),
            .row_bytes = tq_array_of(row_bytes, n),
            .num_runs = num_runs,
            .format = {f->format, (uint16_t)strlen(f->format)},
            .present = {absent ? present : NULL, absent ? n : 0},
        };
        tq_wire_encode_meta_field(&c->out, &w);
        for (uint32_t i = 0; i < num_runs; i++)
            tq_wire_encode_extent(&c->out, &runs[i]);
    }
    meta->num_pins = pin;
    uint8_t what = 0; /* the rows' keys and custom meta, when any has one */
    for (uint32_t i = 0; i < n; i++) {
        what |= p->row_keys[rows[i]] != NULL ? TQ_WIRE_ROWS_KEYS : 0;
        what |= p->custom[rows[i]] != NULL ? TQ_WIRE_ROWS_CUSTOM : 0;
    }
    tq_wire_encode_rows_info(&c->out, what);
    for (uint32_t i = 0; (what & TQ_WIRE_ROWS_KEYS) && i < n; i++) {
        const tq_kv_key_t *k = p->row_keys[rows[i]];
        tq_wire_encode_row_key(&c->out, k ? (tq_str_t){k->key, (uint16_t)strlen(k->key)}
                                          : (tq_str_t){"", 0});
    }
    for (uint32_t i = 0; (what & TQ_WIRE_ROWS_CUSTOM) && i < n; i++) {
        const tq_custom_t *cm = p->custom[rows[i]];
        tq_wire_encode_custom(&c->out, cm ? cm->text : NULL, cm ? cm->len : 0);
    }
    if (tq__reply_end(c, off)) {
        meta->reply_end = c->sent + c->out.len;
        tq_list_insert_tail(&c->ctl->leases, &meta->lease_link);
        rc = TQ_OK;
    } else {
        rc = TQ_ERR_INVALID; /* too large, or out of memory: an error went instead */
    }
out:
    free(row_bytes);
    free(shapes);
    free(runs);
    free(present);
    return rc;
}

typedef enum { META_DONE, META_WAIT } meta_outcome_t;

/* What one GET_META asks, decoded once and resolved against the partition. */
typedef struct {
    tq_msg_get_meta_t   m;
    char                sampler[TQ_WIRE_NAME_MAX + 1];
    char                task[TQ_WIRE_NAME_MAX + 1];
    char               *args;       /* NUL-terminated sampler_args, "{}" when none */
    tq_partition_t     *p;          /* NULL: not there yet */
    tq_field_t         *fields[TQ_WIRE_MAX_FIELDS];
    bool                have_fields;
    tq_task_t          *t;          /* NULL: has consumed nothing yet */
    int64_t            *ready;      /* ready rows, ascending */
    size_t              num_ready;
    bool                final;      /* sealed and nothing more can become ready */
} fetch_t;

/* Ready rows of the fetch, and whether nothing more can become ready. */
static int fetch_scan(fetch_t *f)
{
    tq_partition_t *p = f->p;
    f->num_ready = 0;
    f->final = false;
    if (p == NULL)
        return TQ_OK;
    f->ready = malloc((p->num_slots ? p->num_slots : 1) * sizeof(int64_t));
    if (f->ready == NULL)
        return TQ_ERR_NOMEM;
    uint64_t unconsumed = 0;
    bool reserved = false;
    for (uint64_t r = 0; r < p->num_slots; r++) {
        reserved |= p->state[r] == TQ_ROW_RESERVED;
        if (p->state[r] != TQ_ROW_LIVE || (f->t != NULL && f->t->consumed[r]))
            continue;
        /* a lost row never becomes ready (until rewritten): nobody waits for it */
        if (f->have_fields && tq__partition_row_lost(p, f->fields, f->m.num_fields, r))
            continue;
        unconsumed++;
        if (f->have_fields &&
            tq__partition_row_ready(p, f->fields, f->m.num_fields, f->t, r))
            f->ready[f->num_ready++] = (int64_t)r;
    }
    /* sealed, no new row pending, and every row the task has not taken is ready
     * (rows in flight count as taken: given back, they are offered again) */
    f->final = p->sealed && !reserved && unconsumed == f->num_ready;
    return TQ_OK;
}

/* Answer with rows of the fetch, pinned under a new meta that claims the
 * rows the sampler consumed (in flight until the client settles them). */
static meta_outcome_t serve(conn_t *c, const tq_wire_header_t *h, fetch_t *f,
                            const int64_t *rows, uint32_t n, const int64_t *consumed,
                            size_t num_consumed)
{
    meta_t *meta = tq__meta_new(c, (size_t)n * f->m.num_fields);
    if (meta == NULL ||
        (num_consumed > 0 &&
         tq__claim_take(f->p, f->t, &meta->claim, consumed, (uint32_t)num_consumed) != TQ_OK)) {
        if (meta != NULL)
            tq__meta_free(c->ctl, meta, true);
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    if (tq__reply_meta(c, h, f->p, f->fields, f->m.num_fields, rows, n, meta) != TQ_OK) {
        /* not answered: the rows are the task's again, for the next request (waking
         * parked ones from here could re-enter the one being tried) */
        tq__claim_settle(&meta->claim, false);
        tq__meta_free(c->ctl, meta, true);
    }
    return META_DONE;
}

static meta_outcome_t reply_end_of_stream(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    tq__reply_error(c, h, TQ_ERR_END, "partition %s is sealed and task %s has consumed every row",
                f->p->name, f->task);
    return META_DONE;
}

/* A kept batch still usable by this fetch: every row still live and taken by
 * the task (not given back by the caller that sampled it), with every field
 * this caller names produced and not lost (another caller may name others). */
static bool kept_valid(const fetch_t *f, const tq_kept_t *k)
{
    const tq_partition_t *p = f->p;
    for (uint32_t i = 0; i < k->num_rows; i++) {
        int64_t r = k->rows[i];
        if ((uint64_t)r >= p->num_slots || p->state[r] != TQ_ROW_LIVE || !f->t->consumed[r])
            return false;
        for (uint16_t j = 0; j < f->m.num_fields; j++)
            if (f->fields[j] == NULL || !f->fields[j]->cells[r].produced ||
                f->fields[j]->cells[r].lost)
                return false;
    }
    return true;
}

/* Serve a kept batch to one more taker, forgetting it after the last. Its
 * rows are the claim of the caller that sampled them. */
static meta_outcome_t serve_kept(conn_t *c, const tq_wire_header_t *h, fetch_t *f, tq_kept_t *k)
{
    meta_outcome_t out = serve(c, h, f, k->rows, k->num_rows, NULL, 0);
    if (--k->takers_left == 0)
        tq__partition_unkeep(f->p, k);
    return out;
}

/* Read sampler arguments: -1 when one is missing (and required) or out of range. */
static int arg_in(const char *args, const char *name, long long lo, long long hi, long long dflt,
                  bool required, long long *v_p)
{
    long long v = dflt;
    int rc = tq__sampler_arg(args, name, &v);
    if (rc < 0 || (rc == 1 && required) || v < lo || v > hi)
        return -1;
    *v_p = v;
    return 0;
}

/* rank_aware: the first caller of (task, dp_rank, batch_index) samples; the
 * result is kept for the other dp_replicas - 1 callers of that key. */
static meta_outcome_t sample_rank_aware(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    long long rank, index, replicas;
    if (arg_in(f->args, "dp_rank", 0, INT32_MAX, 0, true, &rank) != 0 ||
        arg_in(f->args, "batch_index", 0, INT64_MAX / 2, 0, true, &index) != 0 ||
        arg_in(f->args, "dp_replicas", 1, 1 << 20, 1, false, &replicas) != 0) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "rank_aware needs integer dp_rank >= 0, "
                    "batch_index >= 0 and optional dp_replicas >= 1");
        return META_DONE;
    }
    if (f->p == NULL)
        return META_WAIT;
    char key[TQ_WIRE_NAME_MAX + 64];
    snprintf(key, sizeof(key), "rank_aware\x1f%s\x1f%lld\x1f%lld", f->task, rank, index);
    tq_kept_t *k = tq__partition_kept(f->p, key);
    if (k != NULL && kept_valid(f, k))
        return serve_kept(c, h, f, k);
    if (k != NULL)
        tq__partition_unkeep(f->p, k); /* its rows were cleared: sample afresh */
    if (f->num_ready < f->m.batch_size && !f->final)
        return META_WAIT;
    if (f->num_ready == 0)
        return reply_end_of_stream(c, h, f);
    uint32_t n = (uint32_t)TQ_MIN(f->num_ready, (size_t)f->m.batch_size);
    if (replicas > 1 && tq__partition_keep(f->p, key, f->ready, n, (uint32_t)replicas - 1) == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    return serve(c, h, f, f->ready, n, f->ready, n);
}

/* Split groups over `parts` ranks, each rank the same number of groups, with
 * balanced sums: Karmarkar-Karp's largest differencing. Groups sorted by
 * weight go out in rounds of `parts`, one per rank; two partial solutions
 * merge by pairing the heaviest rank of one with the lightest of the other,
 * largest spread first. rank_of[g] receives each group's rank. */
typedef struct {
    double  sum[64];
    int     bucket[64]; /* bucket id per rank slot, heaviest first */
} kk_solution_t;

static int cmp_weight_desc(const void *a, const void *b, void *w)
{
    double wa = ((const double *)w)[*(const int *)a], wb = ((const double *)w)[*(const int *)b];
    return wa < wb ? 1 : wa > wb ? -1 : *(const int *)a - *(const int *)b;
}

static void kk_sort(kk_solution_t *s, int parts)
{
    for (int i = 1; i < parts; i++) /* insertion sort: parts is small */
        for (int j = i; j > 0 && s->sum[j] > s->sum[j - 1]; j--) {
            double ts = s->sum[j]; s->sum[j] = s->sum[j - 1]; s->sum[j - 1] = ts;
            int tb = s->bucket[j]; s->bucket[j] = s->bucket[j - 1]; s->bucket[j - 1] = tb;
        }
}

static int kk_partition(const double *weight, int groups, int parts, int *rank_of)
{
    int rounds = (groups + parts - 1) / parts, nb = rounds * parts;
    int *order = malloc((size_t)groups * sizeof(int) + 1);
    int *next = malloc((size_t)nb * sizeof(int)), *tail = malloc((size_t)nb * sizeof(int));
    int *member = malloc((size_t)nb * sizeof(int)); /* bucket -> its first group, -1: empty */
    kk_solution_t *sol = malloc((size_t)rounds * sizeof(*sol));
    int rc = -1;
    if (order == NULL || next == NULL || tail == NULL || member == NULL || sol == NULL)
        goto out;
    for (int g = 0; g < groups; g++)
        order[g] = g;
    qsort_r(order, (size_t)groups, sizeof(int), cmp_weight_desc, (void *)weight);
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < parts; i++) {
            int b = r * parts + i, pos = r * parts + i;
            member[b] = pos < groups ? order[pos] : -1;
            next[b] = -1;
            tail[b] = b;
            sol[r].sum[i] = pos < groups ? weight[order[pos]] : 0;
            sol[r].bucket[i] = b;
        }
    /* buckets chain by index: next[] links bucket ids, member[] names a group */
    for (int live = rounds; live > 1; live--) {
        int a = 0, b = 1; /* the two largest spreads */
        for (int i = 0; i < live; i++) {
            double si = sol[i].sum[0] - sol[i].sum[parts - 1];
            if (i != a && si > sol[a].sum[0] - sol[a].sum[parts - 1]) {
                b = a, a = i;
            } else if (i != a && (b == a || si > sol[b].sum[0] - sol[b].sum[parts - 1])) {
                b = i;
            }
        }
        if (a == b)
            b = a == 0 ? 1 : 0;
        for (int i = 0; i < parts; i++) {
            int x = sol[a].bucket[i], y = sol[b].bucket[parts - 1 - i];
            sol[a].sum[i] += sol[b].sum[parts - 1 - i];
            next[tail[x]] = y; /* append y's chain to x's */
            tail[x] = tail[y];
        }
        kk_sort(&sol[a], parts);
        sol[b] = sol[live - 1];
    }
    for (int i = 0; i < parts; i++)
        for (int x = sol[0].bucket[i]; x != -1; x = next[x])
            if (member[x] >= 0)
                rank_of[member[x]] = i;
    rc = 0;
out:
    free(order), free(next), free(tail), free(member), free(sol);
    return rc;
}

/* seqlen_balanced: the first caller of (task, batch_index) takes dp_size
 * batches of whole groups and splits them over the ranks by total length;
 * every rank's part is kept for its dp_replicas callers. */
static meta_outcome_t sample_seqlen(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    long long n, size, rank, index, replicas;
    if (arg_in(f->args, "n_samples_per_prompt", 1, 1 << 20, 1, true, &n) != 0 ||
        arg_in(f->args, "dp_size", 1, 64, 1, true, &size) != 0 ||
        arg_in(f->args, "dp_rank", 0, size - 1, 0, true, &rank) != 0 ||
        arg_in(f->args, "batch_index", 0, INT64_MAX / 2, 0, true, &index) != 0 ||
        arg_in(f->args, "dp_replicas", 1, 1 << 20, 1, false, &replicas) != 0 ||
        f->m.batch_size % n != 0) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "seqlen_balanced needs integer n_samples_per_prompt "
                    "dividing batch_size, dp_size 1..64, dp_rank < dp_size, batch_index, "
                    "optional dp_replicas");
        return META_DONE;
    }
    if (f->p == NULL)
        return META_WAIT;
    char key[TQ_WIRE_NAME_MAX + 96];
    snprintf(key, sizeof(key), "seqlen\x1f%s\x1f%lld\x1f%lld", f->task, index, rank);
    tq_kept_t *k = tq__partition_kept(f->p, key);
    if (k != NULL && kept_valid(f, k))
        return serve_kept(c, h, f, k);

    size_t want = (size_t)(f->m.batch_size / n) * (size_t)size;
    int64_t *rows = malloc(want * (size_t)n * sizeof(int64_t) + 1);
    double *weight = malloc(want * sizeof(double) + 1);
    int *rank_of = malloc(want * sizeof(int) + 1);
    int64_t *part = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    int64_t *own = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    meta_outcome_t out = META_DONE;
    if (rows == NULL || weight == NULL || rank_of == NULL || part == NULL || own == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t groups = tq__sampler_groups(f->ready, f->num_ready, n, want, rows);
    if (groups < want && !f->final) {
        out = META_WAIT;
        goto done;
    }
    if (groups == 0) {
        out = reply_end_of_stream(c, h, f);
        goto done;
    }
    for (size_t g = 0; g < groups; g++) {
        weight[g] = 0;
        for (long long i = 0; i < n; i++) {
            int64_t r = rows[g * (size_t)n + (size_t)i];
            const tq_custom_t *cm = tq__partition_custom(f->p, (uint64_t)r);
            const cJSON *len = cm ? cJSON_GetObjectItemCaseSensitive(cm->obj, "total_lengths") : NULL;
            if (!cJSON_IsNumber(len)) {
                tq__reply_error(c, h, TQ_ERR_INVALID, "row %lld has no numeric total_lengths in its "
                                "custom meta (its tag)", (long long)r);
                goto done;
            }
            weight[g] += len->valuedouble;
        }
    }
    if (kk_partition(weight, (int)groups, (int)size, rank_of) != 0) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* keep every rank's part (ours for its other replicas), then serve ours */
    uint32_t mine = 0;
    for (long long r = 0; r < size; r++) {
        uint32_t np = 0;
        for (size_t g = 0; g < groups; g++)
            if (rank_of[g] == r)
                for (long long i = 0; i < n; i++)
                    part[np++] = rows[g * (size_t)n + (size_t)i];
        uint32_t takers = (uint32_t)replicas - (r == rank);
        snprintf(key, sizeof(key), "seqlen\x1f%s\x1f%lld\x1f%lld", f->task, index, r);
        if (takers > 0 && tq__partition_keep(f->p, key, part, np, takers) == NULL) {
            tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (r == rank) {
            memcpy(own, part, np * sizeof(int64_t));
            mine = np;
        }
    }
    out = serve(c, h, f, own, mine, rows, groups * (size_t)n);
done:
    free(rows), free(weight), free(rank_of), free(part), free(own);
    return out;
}

/* A sampler of the ABI: its rows must come from the ready ones. */
static meta_outcome_t sample_plain(conn_t *c, const tq_wire_header_t *h, fetch_t *f,
                                   const tq_sampler_t *s)
{
    int64_t *sampled = malloc((size_t)f->m.batch_size * sizeof(int64_t) + 1);
    int64_t *consumed = malloc((f->num_ready + 1) * sizeof(int64_t));
    meta_outcome_t out = META_DONE;
    if (sampled == NULL || consumed == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    tq_sampler_input_t in = {f->p ? f->p->name : "", f->task, f->ready, f->num_ready,
                             f->m.batch_size, f->args, f->final};
    tq_sampler_output_t o = {sampled, 0, consumed, 0};
    int rc = s->sample(&in, &o);
    if (rc == TQ_ERR_INVALID) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "sampler %s refused its arguments %s", s->name, f->args);
        goto done;
    }
    if (rc == TQ_ERR_TIMEOUT || f->p == NULL || (rc == TQ_OK && o.num_sampled == 0 && !f->final)) {
        out = META_WAIT;
        goto done;
    }
    bool bad = rc != TQ_OK || o.num_sampled > f->m.batch_size || o.num_consumed > f->num_ready;
    for (size_t i = 0; !bad && i < o.num_sampled; i++)
        bad = bsearch(&sampled[i], f->ready, f->num_ready, sizeof(int64_t), tq__cmp_i64) == NULL;
    for (size_t i = 0; !bad && i < o.num_consumed; i++)
        bad = bsearch(&consumed[i], f->ready, f->num_ready, sizeof(int64_t), tq__cmp_i64) == NULL;
    if (bad) {
        tq_error("sampler %s returned %d or rows that are not ready", s->name, rc);
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "sampler %s misbehaved", s->name);
        goto done;
    }
    if (o.num_sampled == 0) {
        out = reply_end_of_stream(c, h, f);
        goto done;
    }
    out = serve(c, h, f, sampled, (uint32_t)o.num_sampled, consumed, o.num_consumed);
done:
    free(sampled);
    free(consumed);
    return out;
}

/* FORCE: the lowest batch_size live rows, whatever their readiness and
 * consumption, with every requested field (absent where a row lacks it),
 * pinned under a meta that claims nothing. Never waits. */
static meta_outcome_t serve_force(conn_t *c, const tq_wire_header_t *h, fetch_t *f)
{
    char name[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = tq__find_partition_str(c->ctl, f->m.partition);
    if (p == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "no partition %s",
                        tq__name_cstr(f->m.partition, name));
        return META_DONE;
    }
    for (uint16_t i = 0; i < f->m.num_fields; i++)
        if ((f->fields[i] = tq__partition_field(p, tq__name_cstr(f->m.fields[i], name))) == NULL) {
            tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "partition %s has no field %s", p->name, name);
            return META_DONE;
        }
    uint32_t want = (uint32_t)TQ_MIN((uint64_t)f->m.batch_size, p->live_rows), n = 0;
    int64_t *rows = malloc((size_t)want * sizeof(int64_t) + 1);
    meta_t *meta = rows ? tq__meta_new(c, (size_t)want * f->m.num_fields) : NULL;
    if (meta == NULL) {
        free(rows);
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    for (uint64_t r = 0; r < p->num_slots && n < want; r++)
        if (p->state[r] == TQ_ROW_LIVE)
            rows[n++] = (int64_t)r;
    if (tq__reply_meta(c, h, p, f->fields, f->m.num_fields, rows, n, meta) != TQ_OK)
        tq__meta_free(c->ctl, meta, true);
    free(rows);
    return META_DONE;
}

/* INSERT: batch_size new live rows with no field produced (the partition made
 * if new), answered as a meta of them with no fields. */
static meta_outcome_t serve_insert(conn_t *c, const tq_wire_header_t *h, const fetch_t *f)
{
    tq_controller *ctl = c->ctl;
    char name[TQ_WIRE_NAME_MAX + 1];
    tq__name_cstr(f->m.partition, name);
    tq_partition_t *p = tq__find_partition(ctl, name);
    if (p != NULL && p->sealed) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "partition %s is sealed: no new rows", name);
        return META_DONE;
    }
    int status = TQ_ERR_NOMEM;
    const char *why = "out of memory";
    bool created = p == NULL;
    if (p == NULL && (p = tq__partition_add(ctl, name, &status, &why)) == NULL) {
        tq__reply_error(c, h, status, "%s", why);
        return META_DONE;
    }
    uint32_t n = f->m.batch_size;
    int64_t *rows = malloc((size_t)n * sizeof(int64_t));
    meta_t *meta = rows ? tq__meta_new(c, 1) : NULL;
    if (meta != NULL && (status = tq__partition_reserve_new(p, n, rows)) != TQ_OK)
        why = status == TQ_ERR_NOSPACE ? "the controller's row metadata budget "
                                         "(--max-metadata) is spent"
                                       : "the partition would pass its most rows";
    if (meta == NULL || status != TQ_OK) {
        if (meta != NULL)
            tq__meta_free(ctl, meta, true);
        if (created && p->live_rows == 0 && tq_list_empty(&p->allocs))
            tq__partition_remove(ctl, p);
        free(rows);
        tq__reply_error(c, h, status, "%s", why);
        return META_DONE;
    }
    for (uint32_t i = 0; i < n; i++)
        tq__partition_set_live(p, rows[i]);
    if (tq__reply_meta(c, h, p, NULL, 0, rows, n, meta) != TQ_OK) { /* not answered: undo */
        tq__meta_free(ctl, meta, true);
        tq__partition_clear_rows(p, n, rows);
    }
    free(rows);
    return META_DONE;
}

/* Try to answer a GET_META now. META_WAIT: too few rows, nothing was written. */
static meta_outcome_t try_get_meta(conn_t *c, const tq_wire_header_t *h, const uint8_t *body,
                                   uint32_t len, int32_t *timeout_p, char **partition_p)
{
    fetch_t f = {0};
    tq_rbuf r = tq_rbuf_make(body, len);
    if (tq_wire_decode_get_meta(&r, &f.m) != TQ_OK || !tq_rbuf_done(&r)) {
        tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed get_meta");
        return META_DONE;
    }
    tq_msg_get_meta_t *m = &f.m;
    for (uint16_t i = 0; i < m->num_fields; i++)
        for (uint16_t j = 0; j < i; j++)
            if (m->fields[i].len == m->fields[j].len &&
                memcmp(m->fields[i].ptr, m->fields[j].ptr, m->fields[i].len) == 0) {
                tq__reply_error(c, h, TQ_ERR_INVALID, "field %.*s requested twice",
                            m->fields[i].len, m->fields[i].ptr);
                return META_DONE;
            }
    if (m->mode != TQ_FETCH_READY) {
        if (m->sampler.len > 0 || m->sampler_args.len > 0) {
            tq__reply_error(c, h, TQ_ERR_INVALID, "a %s fetch takes no sampler nor sampler_args",
                            m->mode == TQ_FETCH_FORCE ? "force" : "insert");
            return META_DONE;
        }
        return m->mode == TQ_FETCH_FORCE ? serve_force(c, h, &f) : serve_insert(c, h, &f);
    }
    tq__name_cstr(m->sampler, f.sampler);
    tq__name_cstr(m->task, f.task);
    const tq_sampler_t *plain = NULL;
    bool rank_aware = strcmp(f.sampler, "rank_aware") == 0;
    bool seqlen = strcmp(f.sampler, "seqlen_balanced") == 0;
    if (!rank_aware && !seqlen && (plain = tq__sampler_find(f.sampler)) == NULL) {
        tq__reply_error(c, h, TQ_ERR_INVALID, "unknown sampler %s", f.sampler);
        return META_DONE;
    }
    f.args = malloc((size_t)m->sampler_args.len + 3);
    if (f.args == NULL) {
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
        return META_DONE;
    }
    memcpy(f.args, m->sampler_args.len ? (const char *)m->sampler_args.ptr : "{}",
           m->sampler_args.len ? m->sampler_args.len : 2);
    f.args[m->sampler_args.len ? m->sampler_args.len : 2] = '\0';
    if (timeout_p != NULL)
        *timeout_p = m->timeout_ms;
    if (partition_p != NULL)
        *partition_p = tq_str_dup(m->partition);

    f.p = tq__find_partition_str(c->ctl, m->partition);
    meta_outcome_t out = META_WAIT;
    if (f.p != NULL) {
        char name[TQ_WIRE_NAME_MAX + 1];
        f.have_fields = true;
        for (uint16_t i = 0; i < m->num_fields; i++)
            f.have_fields &= (f.fields[i] = tq__partition_field(f.p, tq__name_cstr(m->fields[i], name))) != NULL;
        errno = 0;
        f.t = tq__partition_task(f.p, f.task, true);
        if (f.t == NULL && errno == ENOSPC) {
            tq__reply_error(c, h, TQ_ERR_NOSPACE, "no room for task %s: the controller's row "
                            "metadata budget (--max-metadata) is spent", f.task);
            out = META_DONE;
            goto done;
        }
        if (f.t == NULL || fetch_scan(&f) != TQ_OK) {
            tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
            out = META_DONE;
            goto done;
        }
    }
    if (rank_aware)
        out = sample_rank_aware(c, h, &f);
    else if (seqlen)
        out = sample_seqlen(c, h, &f);
    else
        out = sample_plain(c, h, &f, plain);
done:
    free(f.ready);
    free(f.args);
    return out;
}

void tq__handle_get_meta(conn_t *c, const tq_wire_header_t *h, const uint8_t *body)
{
    int32_t timeout = 0;
    char *partition = NULL;
    if (try_get_meta(c, h, body, h->body_len, &timeout, &partition) == META_DONE) {
        free(partition);
        return;
    }
    if (c->no_park)
        timeout = 0;
    if (timeout == 0 || partition == NULL) {
        free(partition);
        return tq__reply_error(c, h, TQ_ERR_TIMEOUT, "too few ready rows");
    }
    if (tq__park(c, h, body, timeout, partition) != TQ_OK)
        tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
}

/* GET_META_ROWS: the meta of given live rows, whatever their readiness and
 * consumption, pinned; named fields may be absent on some rows (said so), no
 * field named: every field all of them have. Consumes nothing. */
void tq__handle_get_meta_rows(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_meta_rows_t m;
    if (tq_wire_decode_meta_rows(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed get_meta_rows");
    char name[TQ_WIRE_NAME_MAX + 1];
    tq_partition_t *p = tq__live_rows_partition(c, h, m.partition, m.indexes, m.count);
    if (p == NULL)
        return;
    tq_field_t *fields[TQ_WIRE_MAX_FIELDS];
    uint32_t nf = 0;
    for (uint16_t i = 0; i < m.num_fields; i++) {
        for (uint16_t j = 0; j < i; j++)
            if (m.fields[i].len == m.fields[j].len &&
                memcmp(m.fields[i].ptr, m.fields[j].ptr, m.fields[i].len) == 0)
                return tq__reply_error(c, h, TQ_ERR_INVALID, "field %s requested twice",
                                       tq__name_cstr(m.fields[i], name));
        if ((fields[nf++] = tq__partition_field(p, tq__name_cstr(m.fields[i], name))) == NULL)
            return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "partition %s has no field %s",
                                   p->name, name);
    }
    for (uint32_t k = 0; m.num_fields == 0 && k < p->num_fields; k++) {
        bool shared = true;
        for (uint32_t i = 0; i < m.count && shared; i++)
            shared = p->fields[k].cells[tq_array_i64(m.indexes, i)].produced;
        if (shared && nf == TQ_WIRE_MAX_FIELDS)
            return tq__reply_error(c, h, TQ_ERR_INVALID, "the rows share over %u fields: name "
                                   "at most that many", TQ_WIRE_MAX_FIELDS);
        if (shared)
            fields[nf++] = &p->fields[k];
    }
    int64_t *rows = malloc((size_t)m.count * sizeof(int64_t));
    meta_t *meta = rows ? tq__meta_new(c, (size_t)m.count * nf) : NULL;
    if (meta == NULL) {
        free(rows);
        return tq__reply_error(c, h, TQ_ERR_NOMEM, "out of memory");
    }
    memcpy(rows, m.indexes.ptr, (size_t)m.count * sizeof(int64_t));
    if (tq__reply_meta(c, h, p, fields, (uint16_t)nf, rows, m.count, meta) != TQ_OK)
        tq__meta_free(c->ctl, meta, true);
    free(rows);
}

int tq__park(conn_t *c, const tq_wire_header_t *h, const uint8_t *body, int64_t timeout_ms,
             char *partition)
{
    parked_t *pk = calloc(1, sizeof(*pk));
    if (pk == NULL || (pk->body = malloc(h->body_len ? h->body_len : 1)) == NULL) {
        free(pk);
        free(partition);
        return TQ_ERR_NOMEM;
    }
    memcpy(pk->body, body, h->body_len);
    pk->body_len = h->body_len;
    pk->conn = c;
    pk->type = h->type;
    pk->request_id = h->request_id;
    pk->partition = partition;
    pk->deadline_ms = timeout_ms < 0 ? UINT64_MAX : tq__now_ms() + (uint64_t)timeout_ms;
    pk->received_ns = c->ctl->request_start_ns;
    tq_list_insert_tail(&c->ctl->parked, &pk->link);
    return TQ_OK;
}

/* A commit to `partition` may satisfy parked requests: try them in arrival order. */
void tq__wake_parked(tq_controller *ctl, const char *partition)
{
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->type != TQ_MSG_GET_META || strcmp(pk->partition, partition) != 0)
            continue;
        tq_wire_header_t h = {.type = TQ_MSG_GET_META, .request_id = pk->request_id,
                              .body_len = pk->body_len};
        tq__parked_resume(pk);
        if (try_get_meta(pk->conn, &h, pk->body, pk->body_len, NULL, NULL) == META_DONE)
            tq__parked_free(pk);
    }
}


/* The meta `id` if c's session holds it: another client's metas are not
 * there for it, whatever ids it tries. */
static meta_t *own_meta(conn_t *c, uint64_t id)
{
    meta_t *m = tq_u64map_get(c->ctl->metas, id);
    return m != NULL && m->session == c->session ? m : NULL;
}

/* RELEASE: the client is done with a meta; it has the rows, unless it frees
 * a meta it never read (it chose not to: they stay consumed). */
void tq__handle_release(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed release");
    meta_t *meta = own_meta(c, m.id);
    if (meta != NULL)
        tq__meta_free(c->ctl, meta, true);
    /* no reply: RELEASE is one-way */
}

/* RELEASE_UNREAD: the client has not got the rows (fetched ahead and never
 * returned, or its read failed): they go back to their task. */
void tq__handle_release_unread(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed release_unread");
    meta_t *meta = own_meta(c, m.id);
    if (meta == NULL)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "this client holds no meta %llu",
                               (unsigned long long)m.id);
    tq__meta_free(c->ctl, meta, false);
    tq__reply_ok(c, h); /* answered, so the rows are back before the caller goes on */
}

/* CANCEL: a consumer closing a stream ends the wait of its fetch connection,
 * whichever thread of it is blocked there, and that connection waits no more.
 * Only a connection of the same client may. */
void tq__handle_cancel(conn_t *c, const tq_wire_header_t *h, tq_rbuf *r)
{
    tq_msg_id_t m;
    if (tq_wire_decode_id(r, &m) != TQ_OK || !tq_rbuf_done(r))
        return tq__reply_error(c, h, TQ_ERR_PROTOCOL, "malformed cancel");
    conn_t *target = tq_u64map_get(c->ctl->greeted, m.id);
    if (target == NULL || target->session != c->session)
        return tq__reply_error(c, h, TQ_ERR_NOT_FOUND, "this client has no connection %llu",
                               (unsigned long long)m.id);
    target->no_park = true;
    tq_list *pos, *tmp;
    tq_list_for_each_safe(pos, tmp, &c->ctl->parked) {
        parked_t *pk = tq_list_entry(pos, parked_t, link);
        if (pk->type == TQ_MSG_GET_META && pk->conn == target) {
            tq_wire_header_t ph = {.type = TQ_MSG_GET_META, .request_id = pk->request_id};
            tq__parked_resume(pk);
            tq__reply_error(pk->conn, &ph, TQ_ERR_TIMEOUT, "cancelled");
            tq__parked_free(pk);
        }
    }
    tq__reply_ok(c, h);
}
