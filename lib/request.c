/* request.c: non-blocking calls, run by a few client threads. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "kv.h"
#include "util/common.h"
#include "util/list.h"

#define NUM_WORKERS 4

/*
 * A request's arguments are checked when it is made; it then waits in the
 * client's queue until a worker runs the blocking call. Each worker takes its
 * own lane for the transfer, so requests in flight move bytes at once. The
 * client's timeout counts from submission: the call runs under the deadline
 * set then, and one whose deadline passed in the queue fails unrun. A
 * get_meta's deadline is later by the wait it asked for (none for -1): the
 * controller answers TQ_ERR_TIMEOUT by then, nothing consumed.
 */
struct tq_request {
    tq_list            link;
    tq_client         *client;
    int              (*job)(tq_request *r); /* the blocking call a worker runs */
    char              *partition;  /* copied, or NULL */
    size_t             n, num_fields;
    const char *const *keys;   /* borrowed, or &one_key */
    const char *const *tags;   /* borrowed, or &one_tag */
    const char *const *fields; /* borrowed */
    const tq_batch    *batch_in;
    const char        *one_key, *one_tag;
    const int64_t     *indexes;     /* put: borrowed */
    int64_t           *indexes_out; /* put: written when it completes */
    tq_fetch_args_t    args;        /* get_meta: a copy, its strings borrowed */
    const tq_meta     *meta_in;     /* get_data: borrowed */
    tq_batch          *dst;         /* get_data_into: borrowed */
    tq_batch          *batch_out;   /* what a call made, until taken */
    tq_meta           *meta_out;
    tq_kv_entries     *entries_out;
    int64_t            result;      /* a count (kv_clear) */
    uint64_t           wait_ms;     /* past the client's timeout (get_meta) */
    uint64_t           deadline_ms; /* submission + the client's timeout + wait_ms */
    pthread_mutex_t    lock;
    pthread_cond_t     done_cond;
    bool               done;
    int                status;
    int                fd;          /* an eventfd once asked for, else -1 */
    char               error[TQ_ERRMSG_MAX];
};

struct tq__workers {
    pthread_t       threads[NUM_WORKERS];
    unsigned        num_threads;
    pthread_mutex_t lock;
    pthread_cond_t  queued;
    tq_list         queue;
    bool            stopping;
};

/* Make r's fd readable (it stays so: nobody reads it here). */
static void signal_fd(const tq_request *r)
{
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(r->fd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
}

static void complete(tq_request *r, int status)
{
    pthread_mutex_lock(&r->lock);
    r->status = status;
    if (status != TQ_OK)
        strncpy(r->error, tq_last_error(r->client), sizeof(r->error) - 1);
    r->done = true;
    if (r->fd >= 0)
        signal_fd(r);
    pthread_cond_broadcast(&r->done_cond);
    pthread_mutex_unlock(&r->lock);
}

static void run(tq_request *r)
{
    if (tq__now_ms() >= r->deadline_ms) {
        complete(r, tq__set_error(r->client, TQ_ERR_TIMEOUT, "timed out after %d ms in the "
                                  "queue of non-blocking requests", r->client->timeout_ms));
        return;
    }
    tq__deadline_set(r->deadline_ms);
    int rc = r->job(r);
    tq__deadline_set(0);
    complete(r, rc);
}

static int job_kv_put(tq_request *r)
{
    return tq__kv_run_put(r->client, r->partition, r->n, r->keys, r->batch_in, r->tags, NULL);
}

static int job_kv_put_meta(tq_request *r)
{
    return tq__kv_run_put(r->client, r->partition, r->n, r->keys, r->batch_in, r->tags,
                          &r->meta_out);
}

static int job_kv_get(tq_request *r)
{
    return tq__kv_run_get(r->client, r->partition, r->n, r->keys, r->num_fields, r->fields,
                          &r->batch_out);
}

static int job_kv_get_meta(tq_request *r)
{
    return tq__kv_run_get_meta(r->client, r->partition, r->n, r->keys, r->num_fields, r->fields,
                               &r->meta_out);
}

static int job_kv_list(tq_request *r)
{
    return tq__kv_run_list(r->client, r->partition, &r->entries_out);
}

static int job_kv_clear(tq_request *r)
{
    int rc = tq__kv_run_clear(r->client, r->partition, r->n, r->keys);
    if (rc < 0)
        return rc;
    r->result = rc;
    return TQ_OK;
}

static int job_get_meta(tq_request *r)
{
    return tq__get_meta(r->client, &r->args, &r->meta_out);
}

static int job_get_data(tq_request *r)
{
    return tq__get_data(r->client, r->meta_in, &r->batch_out);
}

static int job_get_data_into(tq_request *r)
{
    return tq__get_data_into(r->client, r->meta_in, r->dst);
}

static int job_put(tq_request *r)
{
    const tq_batch *b = r->batch_in;
    tq__rows_t spec = {r->indexes ? TQ_ROWS_INDEXES : TQ_ROWS_NEW, r->indexes, NULL, NULL};
    return tq__put(r->client, r->partition, b->rows, b, &spec, r->indexes_out, NULL);
}

static void *worker_main(void *arg)
{
    tq__workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (tq_list_empty(&w->queue) && !w->stopping)
            pthread_cond_wait(&w->queued, &w->lock);
        if (tq_list_empty(&w->queue))
            break;
        tq_list *node = w->queue.next;
        tq_list_remove(node);
        pthread_mutex_unlock(&w->lock);
        run(tq_list_entry(node, tq_request, link));
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

void tq__workers_stop(tq__workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true; /* workers drain the queue, then leave */
    pthread_cond_broadcast(&w->queued);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->num_threads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->queued);
    free(w);
}

/* The client's workers, started on first use. */
static tq__workers *workers_get(tq_client *c)
{
    pthread_mutex_lock(&c->lock);
    tq__workers *w = c->workers;
    if (w == NULL && (w = calloc(1, sizeof(*w))) != NULL) {
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->queued, NULL);
        tq_list_init(&w->queue);
        for (unsigned i = 0; i < NUM_WORKERS; i++)
            if (pthread_create(&w->threads[w->num_threads], NULL, worker_main, w) == 0)
                w->num_threads++;
        if (w->num_threads == 0) {
            pthread_mutex_destroy(&w->lock);
            pthread_cond_destroy(&w->queued);
            free(w);
            w = NULL;
        }
        c->workers = w;
    }
    pthread_mutex_unlock(&c->lock);
    return w;
}

static int submit(tq_client *c, tq_request *r, tq_request **req_p)
{
    tq__workers *w = workers_get(c);
    if (w == NULL) {
        free(r->partition);
        free(r);
        return tq__set_error(c, TQ_ERR_NOMEM, "cannot start a request");
    }
    r->client = c;
    r->deadline_ms = tq__now_ms() + (uint64_t)c->timeout_ms + r->wait_ms;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->done_cond, NULL);
    pthread_mutex_lock(&w->lock);
    tq_list_insert_tail(&w->queue, &r->link);
    pthread_cond_signal(&w->queued);
    pthread_mutex_unlock(&w->lock);
    *req_p = r;
    return TQ_OK;
}

/* partition may be NULL (kv_list of every partition, reads). */
static tq_request *request_new(int (*job)(tq_request *), const char *partition, size_t n)
{
    tq_request *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->job = job;
    r->n = n;
    r->fd = -1;
    if (partition != NULL && (r->partition = strdup(partition)) == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

/* After a call's own checks: req_p, then a request for job (NULL: no memory). */
static int request_make(tq_client *c, int (*job)(tq_request *), const char *partition, size_t n,
                        tq_request **req_p, tq_request **r_p)
{
    if (req_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "req_p is NULL");
    if ((*r_p = request_new(job, partition, n)) == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    return TQ_OK;
}

static int kv_put_submit(tq_client *c, int (*job)(tq_request *), const char *partition,
                         size_t n, const char *const *keys, const tq_batch *fields,
                         const char *const *tags_json, tq_request **req_p)
{
    int rc = tq__kv_check_put(c, partition, n, keys, fields, tags_json);
    if (rc != TQ_OK)
        return rc;
    if (req_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "req_p is NULL");
    tq_request *r = request_new(job, partition, n);
    if (r == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    r->keys = keys;
    r->tags = tags_json;
    r->batch_in = fields;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_kv_batch_put_nb(tq_client *c, const char *partition, size_t n,
                                 const char *const *keys, const tq_batch *fields,
                                 const char *const *tags_json, tq_request **req_p)
{
    return kv_put_submit(c, job_kv_put, partition, n, keys, fields, tags_json, req_p);
}

TQ_EXPORT int tq_kv_batch_put_meta_nb(tq_client *c, const char *partition, size_t n,
                                      const char *const *keys, const tq_batch *fields,
                                      const char *const *tags_json, tq_request **req_p)
{
    return kv_put_submit(c, job_kv_put_meta, partition, n, keys, fields, tags_json, req_p);
}

TQ_EXPORT int tq_kv_put_nb(tq_client *c, const char *partition, const char *key,
                           const tq_batch *fields, const char *tag_json, tq_request **req_p)
{
    int rc = tq__kv_check_put(c, partition, 1, &key, fields, tag_json ? &tag_json : NULL);
    if (rc != TQ_OK)
        return rc;
    if (req_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "req_p is NULL");
    tq_request *r = request_new(job_kv_put, partition, 1);
    if (r == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    r->one_key = key;
    r->one_tag = tag_json;
    r->keys = &r->one_key;
    r->tags = tag_json ? &r->one_tag : NULL;
    r->batch_in = fields;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_kv_batch_get_nb(tq_client *c, const char *partition, size_t n,
                                 const char *const *keys, size_t num_fields,
                                 const char *const *fields, tq_request **req_p)
{
    int rc = tq__kv_check_get(c, partition, n, keys, num_fields, fields);
    if (rc != TQ_OK)
        return rc;
    if (req_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "req_p is NULL");
    tq_request *r = request_new(job_kv_get, partition, n);
    if (r == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    r->keys = keys;
    r->num_fields = num_fields;
    r->fields = fields;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_kv_get_meta_nb(tq_client *c, const char *partition, size_t n,
                                const char *const *keys, size_t num_fields,
                                const char *const *fields, tq_request **req_p)
{
    tq_request *r = NULL;
    int rc = tq__kv_check_get(c, partition, n, keys, num_fields, fields);
    if (rc != TQ_OK || (rc = request_make(c, job_kv_get_meta, partition, n, req_p, &r)) != TQ_OK)
        return rc;
    r->keys = keys;
    r->num_fields = num_fields;
    r->fields = fields;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_kv_list_nb(tq_client *c, const char *partition, tq_request **req_p)
{
    tq_kv_entries *unused;
    tq_request *r = NULL;
    int rc = tq__kv_check_list(c, partition, &unused);
    if (rc != TQ_OK || (rc = request_make(c, job_kv_list, partition, 0, req_p, &r)) != TQ_OK)
        return rc;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_kv_clear_nb(tq_client *c, const char *partition, size_t n,
                             const char *const *keys, tq_request **req_p)
{
    tq_request *r = NULL;
    int rc = tq__kv_check_clear(c, partition, n, keys);
    if (rc != TQ_OK || (rc = request_make(c, job_kv_clear, partition, n, req_p, &r)) != TQ_OK)
        return rc;
    r->keys = keys;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_get_meta_nb(tq_client *c, const tq_fetch_args_t *args, tq_request **req_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    tq_request *r = NULL;
    int rc = tq__check_fetch(c, args);
    if (rc != TQ_OK ||
        (rc = request_make(c, job_get_meta, args->partition, 0, req_p, &r)) != TQ_OK)
        return rc;
    r->args = *args;
    r->args.partition = r->partition;
    r->wait_ms = args->timeout_ms > 0 ? (uint64_t)args->timeout_ms : 0;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_get_data_nb(tq_client *c, const tq_meta *m, tq_request **req_p)
{
    tq_request *r = NULL;
    int rc = tq__check_get_data(c, m);
    if (rc != TQ_OK || (rc = request_make(c, job_get_data, NULL, 0, req_p, &r)) != TQ_OK)
        return rc;
    r->meta_in = m;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_get_data_into_nb(tq_client *c, const tq_meta *m, tq_batch *dst,
                                  tq_request **req_p)
{
    tq_request *r = NULL;
    int rc = tq__check_get_data(c, m);
    if (rc == TQ_OK)
        rc = tq__meta_check_into(c, m, dst);
    if (rc != TQ_OK || (rc = request_make(c, job_get_data_into, NULL, 0, req_p, &r)) != TQ_OK)
        return rc;
    r->meta_in = m;
    r->dst = dst;
    return submit(c, r, req_p);
}

TQ_EXPORT int tq_put_nb(tq_client *c, const char *partition, const tq_batch *b,
                        const int64_t *indexes, int64_t *indexes_out, tq_request **req_p)
{
    tq_request *r = NULL;
    int rc = tq__check_put(c, partition, b, indexes);
    if (rc != TQ_OK || (rc = request_make(c, job_put, partition, 0, req_p, &r)) != TQ_OK)
        return rc;
    r->batch_in = b;
    r->indexes = indexes;
    r->indexes_out = indexes_out;
    return submit(c, r, req_p);
}

/* The outcome of a finished request, its error detail passed to this thread. */
static int outcome(tq_request *r)
{
    if (r->status != TQ_OK)
        tq__set_error(r->client, r->status, "%s", r->error);
    return r->status;
}

TQ_EXPORT int tq_request_wait(tq_request *r, int timeout_ms)
{
    if (r == NULL)
        return TQ_ERR_INVALID;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L)
            deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->lock);
    while (!r->done && timeout_ms != 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&r->done_cond, &r->lock);
        else if (pthread_cond_timedwait(&r->done_cond, &r->lock, &deadline) == ETIMEDOUT)
            break;
    }
    bool done = r->done;
    pthread_mutex_unlock(&r->lock);
    return done ? outcome(r) : TQ_ERR_TIMEOUT;
}

TQ_EXPORT int tq_request_test(tq_request *r) { return tq_request_wait(r, 0); }

TQ_EXPORT tq_batch *tq_request_take_batch(tq_request *r)
{
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&r->lock);
    tq_batch *b = r->done ? r->batch_out : NULL;
    if (b != NULL)
        r->batch_out = NULL;
    pthread_mutex_unlock(&r->lock);
    return b;
}

TQ_EXPORT tq_meta *tq_request_take_meta(tq_request *r)
{
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&r->lock);
    tq_meta *m = r->done ? r->meta_out : NULL;
    if (m != NULL)
        r->meta_out = NULL;
    pthread_mutex_unlock(&r->lock);
    return m;
}

TQ_EXPORT tq_kv_entries *tq_request_take_entries(tq_request *r)
{
    if (r == NULL)
        return NULL;
    pthread_mutex_lock(&r->lock);
    tq_kv_entries *e = r->done ? r->entries_out : NULL;
    if (e != NULL)
        r->entries_out = NULL;
    pthread_mutex_unlock(&r->lock);
    return e;
}

TQ_EXPORT int64_t tq_request_result(tq_request *r)
{
    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->lock);
    int64_t n = r->done && r->status == TQ_OK ? r->result : 0;
    pthread_mutex_unlock(&r->lock);
    return n;
}

TQ_EXPORT int tq_request_fd(tq_request *r)
{
    if (r == NULL)
        return TQ_ERR_INVALID;
    pthread_mutex_lock(&r->lock);
    int rc = TQ_OK;
    if (r->fd < 0) {
        r->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->fd < 0)
            rc = tq__set_error(r->client, TQ_ERR_IO, "no eventfd for the request: %s",
                               strerror(errno));
        else if (r->done)
            signal_fd(r);
    }
    int fd = r->fd;
    pthread_mutex_unlock(&r->lock);
    return rc != TQ_OK ? rc : fd;
}

TQ_EXPORT void tq_request_free(tq_request *r)
{
    if (r == NULL)
        return;
    tq_request_wait(r, -1); /* its buffers are borrowed until it completes */
    tq_batch_destroy(r->batch_out);
    tq_kv_entries_free(r->entries_out);
    if (r->meta_out != NULL) /* never taken, so never read: its rows go back */
        tq__meta_release(r->meta_out, true);
    if (r->fd >= 0)
        close(r->fd);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->done_cond);
    free(r->partition);
    free(r);
}
