/* meta.c: what a meta says of its rows (its schema), and whether a caller's batch fits it. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "client.h"

const tq__meta_field_t *tq__meta_find(const tq_meta *m, const char *name)
{
    for (uint16_t k = 0; k < m->num_fields; k++)
        if (strcmp(m->fields[k].name, name) == 0)
            return &m->fields[k];
    return NULL;
}

TQ_EXPORT uint32_t tq_meta_num_fields(const tq_meta *m) { return m ? m->num_fields : 0; }

TQ_EXPORT const char *tq_meta_field_name(const tq_meta *m, uint32_t i)
{
    return m != NULL && i < m->num_fields ? m->fields[i].name : NULL;
}

TQ_EXPORT const char *tq_meta_partition(const tq_meta *m) { return m ? m->partition : NULL; }

/* The field of m named field; TQ_ERR_INVALID or TQ_ERR_NOT_FOUND, the detail on m's client. */
static int meta_field(const tq_meta *m, const char *field, const tq__meta_field_t **f_p)
{
    if (m == NULL)
        return TQ_ERR_INVALID;
    if (field == NULL)
        return tq__set_error(m->client, TQ_ERR_INVALID, "field is NULL");
    if ((*f_p = tq__meta_find(m, field)) == NULL)
        return tq__set_error(m->client, TQ_ERR_NOT_FOUND, "the meta has no field %s", field);
    return TQ_OK;
}

TQ_EXPORT int tq_meta_field(const tq_meta *m, const char *field, tq_field_info_t *info_p)
{
    const tq__meta_field_t *f = NULL;
    int rc = meta_field(m, field, &f);
    if (rc != TQ_OK)
        return rc;
    if (info_p == NULL)
        return tq__set_error(m->client, TQ_ERR_INVALID, "info_p is NULL");
    tq_field_info_t info = {.kind = f->kind, .dtype = f->dtype, .ndim = f->ndim, .data = NULL,
                            .bytes = (size_t)f->bytes};
    memcpy(info.row_shape, f->row_shape, sizeof(info.row_shape));
    *info_p = info;
    return TQ_OK;
}

TQ_EXPORT int tq_meta_row(const tq_meta *m, const char *field, uint32_t row, size_t *bytes_p,
                          const int64_t **shape_p)
{
    const tq__meta_field_t *f = NULL;
    int rc = meta_field(m, field, &f);
    if (rc != TQ_OK)
        return rc;
    if (row >= m->rows)
        return tq__set_error(m->client, TQ_ERR_INVALID, "row %u: the meta has %u rows", row,
                             m->rows);
    if (bytes_p != NULL)
        *bytes_p = (size_t)f->row_bytes[row];
    if (shape_p != NULL)
        *shape_p = &f->shapes[(size_t)row * f->ndim];
    return TQ_OK;
}

/* ---- reading into a caller's batch ---- */

static const char *kind_name(tq_field_kind_t kind)
{
    switch (kind) {
    case TQ_FIELD_TENSOR: return "tensor";
    case TQ_FIELD_NESTED: return "nested";
    case TQ_FIELD_BYTES: return "bytes";
    }
    return "unknown";
}

/* "[2, 3]" into buf. */
static const char *shape_text(char *buf, size_t cap, uint32_t ndim, const int64_t *dims)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%" PRId64, d ? ", " : "", dims[d]);
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

/* dst's field f against the meta's field mf: TQ_OK, or TQ_ERR_INVALID naming what differs. */
static int check_field(tq_client *c, const tq_meta *m, const tq__batch_field_t *f,
                       const tq__meta_field_t *mf)
{
    char a[TQ_MAX_NDIM * 22 + 4], b[TQ_MAX_NDIM * 22 + 4];
    if (f->kind != mf->kind)
        return tq__set_error(c, TQ_ERR_INVALID, "field %s: a %s field in dst, %s in the meta",
                             f->name, kind_name(f->kind), kind_name(mf->kind));
    if (f->dtype != mf->dtype)
        return tq__set_error(c, TQ_ERR_INVALID, "field %s: dtype %s in dst, %s in the meta",
                             f->name, tq__dtype_name(f->dtype), tq__dtype_name(mf->dtype));
    if (f->ndim != mf->ndim)
        return tq__set_error(c, TQ_ERR_INVALID, "field %s: %u dimensions in dst, %u in the meta",
                             f->name, f->ndim, mf->ndim);
    if (f->kind == TQ_FIELD_TENSOR &&
        memcmp(f->row_shape, mf->row_shape, f->ndim * sizeof(int64_t)) != 0)
        return tq__set_error(c, TQ_ERR_INVALID, "field %s: row shape %s in dst, %s in the meta",
                             f->name, shape_text(a, sizeof(a), f->ndim, f->row_shape),
                             shape_text(b, sizeof(b), mf->ndim, mf->row_shape));
    for (uint32_t i = 0; i < m->rows; i++) {
        const int64_t *fs = &f->shapes[(size_t)i * f->ndim];
        const int64_t *ms = &mf->shapes[(size_t)i * mf->ndim];
        if (f->kind == TQ_FIELD_NESTED && memcmp(fs, ms, f->ndim * sizeof(int64_t)) != 0)
            return tq__set_error(c, TQ_ERR_INVALID, "field %s, row %u: shape %s in dst, %s in "
                                 "the meta", f->name, i, shape_text(a, sizeof(a), f->ndim, fs),
                                 shape_text(b, sizeof(b), mf->ndim, ms));
        if (f->row_bytes[i] != mf->row_bytes[i])
            return tq__set_error(c, TQ_ERR_INVALID, "field %s, row %u: %zu bytes in dst, %" PRIu64
                                 " in the meta", f->name, i, f->row_bytes[i], mf->row_bytes[i]);
        if (f->row_bytes[i] > 0 && f->rows[i] == NULL)
            return tq__set_error(c, TQ_ERR_INVALID, "field %s, row %u: no memory in dst",
                                 f->name, i);
    }
    return TQ_OK;
}

int tq__meta_check_into(tq_client *c, const tq_meta *m, const tq_batch *dst)
{
    if (dst == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "dst is NULL");
    if (dst->rows != m->rows)
        return tq__set_error(c, TQ_ERR_INVALID, "dst has %u rows, the meta %u", dst->rows,
                             m->rows);
    if (dst->num_fields == 0)
        return tq__set_error(c, TQ_ERR_INVALID, "dst has no field: nothing to read");
    for (uint32_t k = 0; k < dst->num_fields; k++) {
        const tq__batch_field_t *f = &dst->fields[k];
        const tq__meta_field_t *mf = tq__meta_find(m, f->name);
        if (mf == NULL)
            return tq__set_error(c, TQ_ERR_INVALID, "field %s of dst is not in the meta",
                                 f->name);
        int rc = tq__meta_field_complete(c, m, mf); /* a FORCE meta may lack cells */
        if (rc == TQ_OK)
            rc = check_field(c, m, f, mf);
        if (rc != TQ_OK)
            return rc;
    }
    return TQ_OK;
}
