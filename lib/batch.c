/* batch.c: columnar batches of rows that borrow or own their memory. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "bufpool.h"
#include "client.h"
#include "util/common.h"
#include "wire.h"

bool tq__valid_name(const char *name)
{
    return name != NULL && name[0] != '\0' && strlen(name) <= TQ_WIRE_NAME_MAX;
}

TQ_EXPORT int tq_batch_create(uint32_t rows, tq_batch **batch_p)
{
    if (rows == 0 || rows > TQ_WIRE_MAX_ROWS || batch_p == NULL)
        return TQ_ERR_INVALID;
    tq_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return TQ_ERR_NOMEM;
    b->rows = rows;
    *batch_p = b;
    return TQ_OK;
}

void tq__batch_field_free(tq__batch_field_t *f)
{
    free(f->name);
    free(f->rows);
    free(f->row_bytes);
    free(f->shapes);
    if (f->owned_pool != NULL)
        tq__bufpool_put(f->owned_pool, f->owned, f->owned_cap);
    else
        free(f->owned);
}

TQ_EXPORT void tq_batch_destroy(tq_batch *b)
{
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < b->num_fields; i++)
        tq__batch_field_free(&b->fields[i]);
    free(b->fields);
    free(b);
}

static tq__batch_field_t *find(const tq_batch *b, const char *name)
{
    for (uint32_t i = 0; i < b->num_fields; i++)
        if (strcmp(b->fields[i].name, name) == 0)
            return &b->fields[i];
    return NULL;
}

int tq__batch_adopt_field(tq_batch *b, tq__batch_field_t *f)
{
    int rc = TQ_ERR_NOMEM;
    if (find(b, f->name) != NULL) {
        rc = TQ_ERR_EXISTS;
        goto err;
    }
    if (b->num_fields == TQ_WIRE_MAX_FIELDS) {
        rc = TQ_ERR_INVALID;
        goto err;
    }
    if (b->num_fields == b->cap_fields) {
        uint32_t cap = b->cap_fields ? b->cap_fields * 2 : 4;
        tq__batch_field_t *fields = realloc(b->fields, cap * sizeof(*fields));
        if (fields == NULL)
            goto err;
        b->fields = fields;
        b->cap_fields = cap;
    }
    b->fields[b->num_fields++] = *f;
    return TQ_OK;
err:
    tq__batch_field_free(f);
    return rc;
}

/* Bytes of a row of that shape; false on a negative dim or overflow. */
static bool shape_bytes(tq_dtype_t dtype, uint32_t ndim, const int64_t *dims, size_t *bytes_p)
{
    size_t n = tq_dtype_size(dtype);
    for (uint32_t d = 0; d < ndim; d++) {
        if (dims[d] < 0 || (dims[d] > 0 && n > SIZE_MAX / (uint64_t)dims[d]))
            return false;
        n *= (size_t)dims[d];
    }
    *bytes_p = n;
    return true;
}

/* Start a field: name copied, per-row arrays allocated. */
static int field_begin(const tq_batch *b, const char *name, tq_field_kind_t kind,
                       tq_dtype_t dtype, uint32_t ndim, tq__batch_field_t *f)
{
    memset(f, 0, sizeof(*f));
    /* a batch has no client: the detail goes to tq_last_error(NULL) */
    if (tq__check_name(NULL, name, "field name") != TQ_OK)
        return TQ_ERR_INVALID;
    if (ndim > TQ_MAX_NDIM || tq_dtype_size(dtype) == 0 ||
        (kind == TQ_FIELD_BYTES) != (dtype == TQ_DTYPE_BYTES))
        return tq__set_error(NULL, TQ_ERR_INVALID, "field %s: bad dtype %d or %u dimensions",
                             name, (int)dtype, ndim);
    if (find(b, name) != NULL)
        return tq__set_error(NULL, TQ_ERR_EXISTS, "field %s is in the batch already", name);
    f->kind = kind;
    f->dtype = dtype;
    f->ndim = ndim;
    f->name = strdup(name);
    f->rows = calloc(b->rows, sizeof(*f->rows));
    f->row_bytes = calloc(b->rows, sizeof(*f->row_bytes));
    f->shapes = calloc((size_t)b->rows * (ndim ? ndim : 1), sizeof(*f->shapes));
    if (f->name == NULL || f->rows == NULL || f->row_bytes == NULL || f->shapes == NULL) {
        tq__batch_field_free(f);
        return TQ_ERR_NOMEM;
    }
    return TQ_OK;
}

static int field_fail(tq__batch_field_t *f)
{
    tq__set_error(NULL, TQ_ERR_INVALID, "field %s: a negative or overflowing dimension, or "
                  "NULL data", f->name);
    tq__batch_field_free(f);
    return TQ_ERR_INVALID;
}

/* An argument error before the field is begun. */
static int args_fail(void)
{
    return tq__set_error(NULL, TQ_ERR_INVALID, "the batch, a shape or the data is NULL, or the "
                         "dtype does not fit the kind");
}

TQ_EXPORT int tq_batch_add_tensor(tq_batch *b, const char *field, tq_dtype_t dtype, uint32_t ndim,
                                  const int64_t *row_shape, const void *data)
{
    if (b == NULL || (ndim > 0 && row_shape == NULL) || dtype == TQ_DTYPE_BYTES)
        return args_fail();
    tq__batch_field_t f;
    int rc = field_begin(b, field, TQ_FIELD_TENSOR, dtype, ndim, &f);
    if (rc != TQ_OK)
        return rc;
    size_t row_bytes;
    if (!shape_bytes(dtype, ndim, row_shape, &row_bytes) ||
        (row_bytes > 0 && b->rows > SIZE_MAX / row_bytes) || (row_bytes > 0 && data == NULL))
        return field_fail(&f);
    if (ndim > 0)
        memcpy(f.row_shape, row_shape, ndim * sizeof(int64_t));
    f.data = data;
    f.bytes = row_bytes * b->rows;
    for (uint32_t i = 0; i < b->rows; i++) {
        f.rows[i] = (const char *)data + (size_t)i * row_bytes;
        f.row_bytes[i] = row_bytes;
        if (ndim > 0)
            memcpy(&f.shapes[(size_t)i * ndim], row_shape, ndim * sizeof(int64_t));
    }
    return tq__batch_adopt_field(b, &f);
}

TQ_EXPORT int tq_batch_add_nested(tq_batch *b, const char *field, tq_dtype_t dtype, uint32_t ndim,
                                  const int64_t *shapes, const void *const *row_data)
{
    if (b == NULL || (ndim > 0 && shapes == NULL) || row_data == NULL || dtype == TQ_DTYPE_BYTES)
        return args_fail();
    tq__batch_field_t f;
    int rc = field_begin(b, field, TQ_FIELD_NESTED, dtype, ndim, &f);
    if (rc != TQ_OK)
        return rc;
    for (uint32_t i = 0; i < b->rows; i++) {
        const int64_t *shape = &shapes[(size_t)i * ndim];
        if (!shape_bytes(dtype, ndim, shape, &f.row_bytes[i]) ||
            (f.row_bytes[i] > 0 && row_data[i] == NULL) || f.bytes + f.row_bytes[i] < f.bytes)
            return field_fail(&f);
        f.rows[i] = row_data[i];
        f.bytes += f.row_bytes[i];
        if (ndim > 0)
            memcpy(&f.shapes[(size_t)i * ndim], shape, ndim * sizeof(int64_t));
    }
    return tq__batch_adopt_field(b, &f);
}

TQ_EXPORT int tq_batch_add_bytes(tq_batch *b, const char *field, const void *const *values,
                                 const size_t *lengths)
{
    if (b == NULL || values == NULL || lengths == NULL)
        return args_fail();
    tq__batch_field_t f;
    int rc = field_begin(b, field, TQ_FIELD_BYTES, TQ_DTYPE_BYTES, 0, &f);
    if (rc != TQ_OK)
        return rc;
    for (uint32_t i = 0; i < b->rows; i++) {
        if ((lengths[i] > 0 && values[i] == NULL) || f.bytes + lengths[i] < f.bytes)
            return field_fail(&f);
        f.rows[i] = values[i];
        f.row_bytes[i] = lengths[i];
        f.bytes += lengths[i];
    }
    return tq__batch_adopt_field(b, &f);
}

TQ_EXPORT int tq_batch_set_format(tq_batch *b, const char *field, const char *format)
{
    if (b == NULL || field == NULL)
        return tq__set_error(NULL, TQ_ERR_INVALID, "the batch or the field name is NULL");
    tq__batch_field_t *f = find(b, field);
    if (f == NULL)
        return tq__set_error(NULL, TQ_ERR_NOT_FOUND, "the batch has no field %s", field);
    size_t len = format ? strlen(format) : 0;
    if (len > TQ_MAX_FORMAT || !tq_str_is_format((tq_str_t){format, (uint16_t)len}))
        return tq__set_error(NULL, TQ_ERR_INVALID, "field %s: format label \"%.*s\" is not 1 to "
                             "%d bytes of [a-z0-9_.-]", field, len > 64 ? 64 : (int)len, format,
                             TQ_MAX_FORMAT);
    memcpy(f->format, len ? format : "", len + 1);
    return TQ_OK;
}

TQ_EXPORT const char *tq_batch_field_format(const tq_batch *b, const char *field)
{
    const tq__batch_field_t *f = b != NULL && field != NULL ? find(b, field) : NULL;
    return f != NULL ? f->format : NULL;
}

TQ_EXPORT uint32_t tq_batch_rows(const tq_batch *b) { return b ? b->rows : 0; }
TQ_EXPORT uint32_t tq_batch_num_fields(const tq_batch *b) { return b ? b->num_fields : 0; }

TQ_EXPORT const char *tq_batch_field_name(const tq_batch *b, uint32_t i)
{
    return b != NULL && i < b->num_fields ? b->fields[i].name : NULL;
}

TQ_EXPORT int tq_batch_field(const tq_batch *b, const char *field, tq_field_info_t *info_p)
{
    if (b == NULL || field == NULL || info_p == NULL)
        return TQ_ERR_INVALID;
    const tq__batch_field_t *f = find(b, field);
    if (f == NULL)
        return TQ_ERR_NOT_FOUND;
    tq_field_info_t info = {.kind = f->kind, .dtype = f->dtype, .ndim = f->ndim,
                            .data = f->kind == TQ_FIELD_TENSOR ? f->data : NULL,
                            .bytes = f->bytes};
    memcpy(info.row_shape, f->row_shape, sizeof(info.row_shape));
    *info_p = info;
    return TQ_OK;
}

TQ_EXPORT const void *tq_batch_row(const tq_batch *b, const char *field, uint32_t row,
                                   size_t *bytes_p, const int64_t **shape_p)
{
    if (b == NULL || field == NULL || row >= b->rows)
        return NULL;
    const tq__batch_field_t *f = find(b, field);
    if (f == NULL)
        return NULL;
    if (bytes_p != NULL)
        *bytes_p = f->row_bytes[row];
    if (shape_p != NULL)
        *shape_p = &f->shapes[(size_t)row * f->ndim];
    /* an empty value still gets a valid pointer, so NULL always means absent */
    return f->rows[row] != NULL ? f->rows[row] : (const void *)"";
}
