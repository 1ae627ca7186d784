/* bench.h: the parts of tq-rdma-bench: workloads, clients, results and their output. */
#ifndef TQ_BENCH_H
#define TQ_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tq/tq.h"

typedef enum {
    MODE_PUT, MODE_GET, MODE_KV, MODE_KV_NB, MODE_LATENCY, MODE_META, MODE_PIPELINE,
    MODE_WAKEUP,
    MODE_COUNT
} bench_mode_t;

/* TransferQueue's benchmark data: simple is float32 tensors; complex is a third
 * tensors, a third nested with varying lengths, a third bytes. */
typedef enum { PROFILE_SIMPLE, PROFILE_COMPLEX } bench_profile_t;

typedef struct bench_client bench_client_t; /* how a client meets the others */

/* What one client runs: the options of one job of the run. */
typedef struct {
    bench_mode_t    mode;
    bench_profile_t profile;
    tq_dtype_t      dtype; /* of simple tensors */
    uint32_t        rows, fields;
    uint64_t        field_bytes;
    unsigned        iters, warmup, inflight, clients;
    unsigned        client_id;  /* partitions and keys are per client */
    const char     *address;    /* the controller's, for helper processes */
    bench_client_t *peer;       /* NULL: a lone client */
    bool            progress;   /* draw a progress bar (a lone or first client on a tty) */
} bench_job_t;

/*
 * One operation's per-call times from one client's timed iterations. call_ns
 * is malloc'd and owned by the sample. bytes and rows count what the timed
 * calls moved.
 */
typedef struct {
    char      op[24];
    uint64_t  bytes, rows;
    uint64_t *call_ns;
    unsigned  calls;
    uint64_t  wall_ns; /* the run's time when calls overlap (pipeline); 0: their sum */
} bench_sample_t;

#define BENCH_MAX_SAMPLES 4

/* A mode: run job on c and fill up to BENCH_MAX_SAMPLES samples. @return 0, or
 * 1 after a message on stderr. */
typedef int (*bench_mode_fn)(tq_client *c, const bench_job_t *job, bench_sample_t *s,
                             unsigned *num_p);

/* One line of output: an operation, over every client of a job. */
typedef struct {
    char        op[24];
    const char *profile;     /* NULL: plain tensors of --dtype */
    uint64_t    field_bytes;
    uint32_t    rows, fields;
    unsigned    clients, iters;
    double      seconds;     /* the longest time a client spent inside timed calls */
    double      bytes_per_s; /* all clients' bytes over seconds */
    double      rows_per_s;
    double      min_us, p50_us, p99_us, mean_us; /* per call, over every client's calls */
    double      ucx_bytes_per_s;         /* ucx_perftest at field_bytes; 0: not run */
    const char *target;                  /* the goal in words, or NULL */
    bool        target_met;
    char        extra[96];               /* more JSON members, each after a comma */
} bench_result_t;

/* ---- workloads (workload.c, latency.c) ---- */
int bench_put(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_get(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_kv(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_kv_nb(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_latency(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_meta(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_pipeline(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
int bench_wakeup(tq_client *c, const bench_job_t *job, bench_sample_t *s, unsigned *num_p);
/* The other process of MODE_WAKEUP, started by bench_wakeup. */
int bench_wakeup_producer(tq_client *c, const char *partition, int go_fd, int res_fd);

/* Payload bytes of one row of every field of job's batch. */
uint64_t bench_row_bytes(const bench_job_t *job);

/* ---- clients and helper processes (clients.c) ---- */
/* Start this binary again as "tq-rdma-bench ROLE R,W ARGS...": R and W are the
 * child's ends of two pipes; ours are *to_p (we write) and *from_p (we read). */
int bench_spawn(const char *role, const char *const *args, int *to_p, int *from_p,
                pid_t *pid_p);
/* Reap a child: it exits when its pipe closes; SIGKILL when kill_now or when it
 * has not exited in BENCH_PIPE_TIMEOUT_MS. @return its wait status. */
int bench_reap(pid_t pid, bool kill_now);
/* Read exactly n bytes within timeout_ms. @return 0; 1 at end of file; -1 with
 * errno on a timeout (ETIMEDOUT) or an error. */
int bench_read_full(int fd, void *buf, size_t n, int timeout_ms);
int bench_write_full(int fd, const void *buf, size_t n);
#define BENCH_PIPE_TIMEOUT_MS  5000  /* a helper process answers within this */
#define BENCH_START_TIMEOUT_MS 30000 /* exec, transport start-up and set-up take longer */

/* Every client has done its set-up: wait for the others, then time. */
int bench_ready(const bench_job_t *job);
/* Run job on job->clients clients, each with its own partition (worker
 * processes of this binary, or threads sharing c when threads) and merge their
 * samples into up to BENCH_MAX_SAMPLES results. */
int bench_run_job(tq_client *c, const bench_job_t *job, bool threads, bench_result_t *results,
                  unsigned *num_p);
/* A worker process's side of bench_run_job: run job, send the samples on res_fd. */
int bench_worker(tq_client *c, bench_job_t *job, int go_fd, int res_fd);

/* This client's partition of job's mode, so clients and modes never meet. */
void bench_partition(const bench_job_t *job, char *out, size_t cap);

/* ---- results (report.c) ---- */
/* Samples s[0..] for the NULL-terminated ops, room for `calls` times each;
 * *num_p is set once all are made. @return 0, or 1 after a message. */
int  bench_samples_alloc(bench_sample_t *s, const char *const *ops, unsigned calls,
                         unsigned *num_p);
void bench_sample_free(bench_sample_t *s);
/* Merge samples of one op from every client into r (sorts their call_ns). */
void bench_merge(const bench_job_t *job, const bench_sample_t *const *per_client, unsigned n,
                 bench_result_t *r);
void bench_progress(const bench_job_t *job, unsigned done, unsigned total);
void bench_print_header(bool json);
void bench_print(const bench_result_t *r, bool json);
int  bench_fail(tq_client *c, const char *what, int rc);
int  bench_out_of_memory(void);
const char *bench_mode_name(bench_mode_t m);

/* ---- the SVG plot (plot.c) ---- */
/* Throughput against field size, a line per op (and per op's ucx_perftest
 * figure when it was run). @return 0, or -1 with errno set. */
int bench_plot_svg(const char *path, const bench_result_t *r, size_t n);

/* ---- ucx_perftest (perftest.c) ---- */
/* Run ucx_perftest's ucp_put_bw ("put") or ucp_get ("get") at `size` bytes
 * between two processes on loopback, with this process's UCX environment.
 * @return 0 and the bandwidth in *bytes_per_s_p, or -1 with a reason in err. */
int bench_ucx_perftest(const char *op, uint64_t size, double *bytes_per_s_p, char *err,
                       size_t errlen);

#endif
