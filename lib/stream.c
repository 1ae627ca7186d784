/* stream.c: consumers that yield batches as rows become ready, reading ahead. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "util/common.h"

#define MAX_PREFETCH 64
#define BACKOFF_MIN_MS 50   /* after an error, the next fetch waits this, doubling... */
#define BACKOFF_MAX_MS 1000 /* ...up to this: a dead controller is not hammered */

/*
 * A stream has one fetcher thread and its own control connection. The thread
 * fetches batches one after another (GET_META, then the one-sided reads) and
 * queues up to `depth` of them, so the next batch's bytes move while the
 * caller works on the current one. One connection and one thread keep the
 * batches in the order the controller handed them out, the short last one
 * last. Closing cancels a fetch parked in the controller by the connection's
 * id, and gives rows fetched but never returned back to the task.
 *
 * Only the controller's TQ_ERR_END ends a stream. Any other error (a unit
 * lost, the controller unreachable) is queued as it is, once: the fetcher
 * waits until the caller has taken it, and a little longer each time, then
 * goes on (reconnecting if it must), so the rows that remain still come.
 */
typedef struct {
    int       status;
    tq_batch *batch;
    tq_meta  *meta;
    char      why[TQ_ERRMSG_MAX]; /* an error's detail (tq_last_error is per thread) */
} result_t;

struct tq_stream {
    tq_client      *client;
    tq_fetch_args_t args;        /* strings below are the stream's copies */
    char           *partition, *task, *sampler, *base_args;
    char          **fields;
    bool            numbered;    /* rank_aware, seqlen_balanced: batch_index per fetch */
    long long       next_index;
    tq_ctrl_conn    conn;
    bool            connected;

    pthread_t       thread;
    pthread_mutex_t lock;
    pthread_cond_t  changed;
    result_t        queue[MAX_PREFETCH];
    unsigned        depth, head, count;
    unsigned        errors;        /* queued results that are errors (see is_error) */
    bool            fetching;      /* the fetcher is connecting or fetching */
    bool            closing, done; /* done: the thread queued its last result */
};

/* A result the fetcher waits to see taken before it tries again: neither
 * rows, nor the end, nor a wait that timed out (the next fetch just waits again). */
static bool is_error(int status)
{
    return status != TQ_OK && status != TQ_ERR_END && status != TQ_ERR_TIMEOUT;
}

/* Wait on the stream's condition until closing or ms have passed (lock held). */
static void wait_closing(tq_stream *s, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until); /* the condition's clock */
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!s->closing && pthread_cond_timedwait(&s->changed, &s->lock, &until) == 0)
        ;
}

/* sampler_args of the next fetch: numbered batches count from the base. */
static char *next_args(tq_stream *s)
{
    if (!s->numbered)
        return s->base_args ? strdup(s->base_args) : NULL;
    cJSON *args = cJSON_Parse(s->base_args);
    char *text = NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(args, "batch_index");
    if (args != NULL && cJSON_AddNumberToObject(args, "batch_index", (double)s->next_index) != NULL)
        text = cJSON_PrintUnformatted(args);
    cJSON_Delete(args);
    return text;
}

/* Connect the stream's connection if it is not; `connected` changes under the lock. */
static int ensure_connected(tq_stream *s)
{
    if (s->connected)
        return TQ_OK;
    tq_client *c = s->client;
    char err[TQ_ERRMSG_MAX] = "";
    int rc = tq__ctrl_connect(&s->conn, c->target, c->token, TQ_ROLE_CLIENT, c->session,
                              c->timeout_ms, err);
    if (rc != TQ_OK)
        return tq__set_error(c, rc, "%s", err);
    pthread_mutex_lock(&s->lock);
    s->connected = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return TQ_OK;
}

/* One fetch on the stream's (connected) connection. */
static result_t fetch(tq_stream *s)
{
    tq_client *c = s->client;
    result_t res = {TQ_OK, NULL, NULL, ""};
    tq_fetch_args_t a = s->args;
    char *args = next_args(s);
    if (s->numbered && args == NULL) {
        res.status = tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
        return res;
    }
    a.sampler_args = args;
    res.status = tq__get_meta_on(c, &s->conn, &a, &res.meta);
    free(args);
    if (s->conn.broken) { /* timed out on our side: start afresh next time */
        pthread_mutex_lock(&s->lock);
        s->connected = false;
        pthread_mutex_unlock(&s->lock);
        tq__ctrl_close(&s->conn);
    }
    if (res.status != TQ_OK) {
        snprintf(res.why, sizeof(res.why), "%s", tq_last_error(c));
        return res;
    }
    if (s->numbered)
        s->next_index++;
    if ((res.status = tq__meta_read(c, res.meta, &res.batch)) != TQ_OK) {
        snprintf(res.why, sizeof(res.why), "%s", tq_last_error(c));
        tq__meta_release(res.meta, true); /* nobody read them: the task gets them again */
        res.meta = NULL;
    }
    return res;
}

/*
 * The closer and the fetcher agree through the lock: a fetch starts only if
 * the stream is not closing once its connection is up, and the closer, seeing
 * a fetch under way, waits for that connection before cancelling its wait, so
 * a GET_META sent after the CANCEL is answered at once, never parked.
 */
static void *fetcher_main(void *arg)
{
    tq_stream *s = arg;
    unsigned backoff_ms = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->closing && (s->count == s->depth || s->errors > 0))
            pthread_cond_wait(&s->changed, &s->lock);
        if (!s->closing && backoff_ms > 0)
            wait_closing(s, backoff_ms);
        if (s->closing)
            break;
        s->fetching = true;
        pthread_mutex_unlock(&s->lock);
        result_t res = {ensure_connected(s), NULL, NULL, ""};
        if (res.status != TQ_OK)
            snprintf(res.why, sizeof(res.why), "%s", tq_last_error(s->client));
        pthread_mutex_lock(&s->lock);
        if (res.status == TQ_OK && !s->closing) {
            pthread_mutex_unlock(&s->lock);
            res = fetch(s);
            pthread_mutex_lock(&s->lock);
        }
        s->fetching = false;
        pthread_cond_broadcast(&s->changed);
        if (s->closing) { /* whatever came back goes back: nobody will take it */
            if (res.meta != NULL)
                s->queue[(s->head + s->count++) % MAX_PREFETCH] = res;
            break;
        }
        s->queue[(s->head + s->count++) % MAX_PREFETCH] = res;
        if (res.status == TQ_ERR_END) /* the controller says every row is taken */
            break;
        if (is_error(res.status)) {
            s->errors++;
            backoff_ms = TQ_MIN(backoff_ms ? backoff_ms * 2 : BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        } else {
            backoff_ms = 0;
        }
    }
    s->done = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static char *dup_or_null(const char *text, bool *failed)
{
    char *copy = text ? strdup(text) : NULL;
    *failed |= text != NULL && copy == NULL;
    return copy;
}

static void stream_free(tq_stream *s)
{
    for (size_t i = 0; s->fields != NULL && i < s->args.num_fields; i++)
        free(s->fields[i]);
    free(s->fields);
    free(s->partition);
    free(s->task);
    free(s->sampler);
    free(s->base_args);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    free(s);
}

TQ_EXPORT int tq_stream_open(tq_client *c, const tq_fetch_args_t *args, tq_stream **stream_p)
{
    if (c == NULL)
        return TQ_ERR_INVALID;
    int rc = tq__check_fetch(c, args);
    if (rc != TQ_OK)
        return rc;
    if (args->mode != TQ_FETCH_READY)
        return tq__set_error(c, TQ_ERR_INVALID, "a stream fetches ready rows: mode must be "
                             "TQ_FETCH_READY, not %d", args->mode);
    if (stream_p == NULL)
        return tq__set_error(c, TQ_ERR_INVALID, "stream_p is NULL");
    if (args->prefetch > MAX_PREFETCH)
        return tq__set_error(c, TQ_ERR_INVALID, "prefetch is at most %d", MAX_PREFETCH);
    const char *sampler = args->sampler ? args->sampler : "";
    bool numbered = strcmp(sampler, "rank_aware") == 0 || strcmp(sampler, "seqlen_balanced") == 0;
    cJSON *base = args->sampler_args ? cJSON_ParseWithOpts(args->sampler_args, NULL, 1) : NULL;
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(base, "batch_index");
    long long first = cJSON_IsNumber(index) ? (long long)index->valuedouble : 0;
    bool object = args->sampler_args == NULL || cJSON_IsObject(base);
    cJSON_Delete(base);
    if (!object)
        return tq__set_error(c, TQ_ERR_INVALID, "sampler_args is not a JSON object");

    tq_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return tq__set_error(c, TQ_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    s->client = c;
    s->numbered = numbered;
    s->next_index = first;
    s->depth = args->prefetch ? args->prefetch : 1;
    s->conn.fd = -1;
    bool failed = false;
    s->partition = dup_or_null(args->partition, &failed);
    s->task = dup_or_null(args->task, &failed);
    s->sampler = dup_or_null(args->sampler, &failed);
    s->base_args = dup_or_null(numbered && !args->sampler_args ? "{}" : args->sampler_args, &failed);
    s->fields = calloc(args->num_fields, sizeof(char *));
    failed |= s->fields == NULL;
    for (size_t i = 0; !failed && i < args->num_fields; i++)
        s->fields[i] = dup_or_null(args->fields[i], &failed);
    s->args = *args;
    s->args.partition = s->partition;
    s->args.task = s->task;
    s->args.sampler = s->sampler;
    s->args.fields = (const char *const *)s->fields;
    if (failed || pthread_create(&s->thread, NULL, fetcher_main, s) != 0) {
        stream_free(s);
        return tq__set_error(c, TQ_ERR_NOMEM, "cannot start a stream");
    }
    *stream_p = s;
    return TQ_OK;
}

TQ_EXPORT int tq_stream_next(tq_stream *s, tq_batch **batch_p, tq_meta **meta_p)
{
    if (s == NULL)
        return TQ_ERR_INVALID;
    if (batch_p == NULL || meta_p == NULL)
        return tq__set_error(s->client, TQ_ERR_INVALID, "batch_p or meta_p is NULL");
    pthread_mutex_lock(&s->lock);
    while (s->count == 0 && !s->done)
        pthread_cond_wait(&s->changed, &s->lock);
    if (s->count == 0) { /* only a closing stream's fetcher stops without the end */
        pthread_mutex_unlock(&s->lock);
        return tq__set_error(s->client, TQ_ERR_INVALID, "the stream is closing");
    }
    result_t res = s->queue[s->head];
    /* an END stays at the head, so every later call says it again */
    if (res.status != TQ_ERR_END) {
        s->head = (s->head + 1) % MAX_PREFETCH;
        s->count--;
        s->errors -= is_error(res.status);
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    if (res.status != TQ_OK)
        return tq__set_error(s->client, res.status, "%s",
                             res.why[0] ? res.why : tq_status_string(res.status));
    *batch_p = res.batch;
    *meta_p = res.meta;
    return TQ_OK;
}

/* Ask the controller to end the waits of connection `id`. */
static void cancel_wait(tq_client *c, uint64_t id)
{
    tq_ctrl_conn *cc;
    if (tq__conn_acquire(c, &cc) != TQ_OK)
        return;
    char err[TQ_ERRMSG_MAX];
    tq_rbuf r;
    size_t off = tq__ctrl_begin(cc, TQ_MSG_CANCEL);
    tq_wire_encode_id(&cc->out, &(tq_msg_id_t){id});
    tq__ctrl_call(cc, off, c->timeout_ms, &r, err);
    tq__conn_release(c, cc);
}

TQ_EXPORT void tq_stream_close(tq_stream *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->closing = true;
    pthread_cond_broadcast(&s->changed);
    while (s->fetching && !s->connected) /* a connect under way: let it finish */
        pthread_cond_wait(&s->changed, &s->lock);
    bool cancel = s->fetching;
    uint64_t id = s->conn.id;
    pthread_mutex_unlock(&s->lock);
    if (cancel) /* the fetch may be parked in the controller */
        cancel_wait(s->client, id);
    pthread_join(s->thread, NULL);
    for (unsigned i = 0; i < s->count; i++) {
        result_t *res = &s->queue[(s->head + i) % MAX_PREFETCH];
        tq_batch_destroy(res->batch);
        if (res->meta != NULL)
            tq__meta_release(res->meta, true); /* fetched ahead, never returned */
    }
    if (s->connected)
        tq__ctrl_close(&s->conn);
    stream_free(s);
}
