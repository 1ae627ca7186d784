/* consumer.c: a program built against an installed tqrdma, as a user builds one. */
#include <stdio.h>
#include <string.h>

#include <tq/tq.h>

int main(void)
{
    tq_client *c;
    int rc = tq_open("embedded", &c);
    if (rc != TQ_OK) {
        fprintf(stderr, "consumer: tq_open: %s (%s)\n", tq_status_string(rc), tq_last_error(NULL));
        return 1;
    }
    float row[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    tq_batch *b, *got = NULL;
    const char *key = "k", *fields[] = {"x"};
    rc = tq_batch_create(1, &b);
    if (rc == TQ_OK)
        rc = tq_batch_add_tensor(b, "x", TQ_DTYPE_F32, 1, shape, row);
    if (rc == TQ_OK)
        rc = tq_kv_put(c, "p", key, b, NULL);
    if (rc == TQ_OK)
        rc = tq_kv_batch_get(c, "p", 1, &key, 1, fields, &got);
    size_t n = 0;
    const void *back = rc == TQ_OK ? tq_batch_row(got, "x", 0, &n, NULL) : NULL;
    int same = back != NULL && n == sizeof(row) && memcmp(back, row, n) == 0;
    if (!same)
        fprintf(stderr, "consumer: %s (%s)\n", tq_status_string(rc), tq_last_error(c));
    tq_batch_destroy(got);
    tq_batch_destroy(b);
    tq_close(c);
    printf("consumer: tqrdma %s %s\n", TQ_VERSION_STRING, same ? "ok" : "FAILED");
    return same ? 0 : 1;
}
