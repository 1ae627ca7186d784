/* batch.h: the inside of a tq_batch, shared by batch.c and client.c. */
#ifndef TQ_BATCH_H
#define TQ_BATCH_H

#include <stdbool.h>

#include "tq/tq.h"

/* Every kind keeps per-row pointers, sizes and shapes, so the put and get
 * paths treat all kinds alike. */
typedef struct {
    char           *name;
    tq_field_kind_t kind;
    tq_dtype_t      dtype;
    uint32_t        ndim;
    int64_t         row_shape[TQ_MAX_NDIM]; /* tensor */
    char            format[TQ_MAX_FORMAT + 1]; /* its format label, "" for none */
    const void     *data;                   /* tensor: the column */
    const void    **rows;                   /* row i's bytes */
    size_t         *row_bytes;
    int64_t        *shapes;                 /* rows x ndim */
    size_t          bytes;                  /* total */
    void           *owned;                  /* memory this batch frees, or NULL */
    size_t          owned_cap;
    struct tq__bufpool *owned_pool;         /* owned goes back there, else free() */
} tq__batch_field_t;

struct tq_batch {
    uint32_t           rows;
    uint32_t           num_fields, cap_fields;
    tq__batch_field_t *fields;
};


/* Check a field name: 1..255 bytes. */
bool tq__valid_name(const char *name);

/* Free what a field owns. */
void tq__batch_field_free(tq__batch_field_t *f);

/* Append a field whose arrays (rows, row_bytes, shapes, owned) the batch now
 * owns. On error they are freed. */
int tq__batch_adopt_field(tq_batch *b, tq__batch_field_t *f);

#endif
