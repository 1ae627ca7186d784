/* netif.c: this host's interfaces and addresses, for binding a data plane to one of them. */
#include "util/netif.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <string.h>

bool tq__netif_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

bool tq__netif_same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

static socklen_t ip_len(int family)
{
    return family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in)
                             : (socklen_t)sizeof(struct sockaddr_in6);
}

/* Fill out from an interface address (the port cleared). */
static void take(tq_netif_addr_t *out, const char *iface, const struct sockaddr *sa)
{
    memset(out, 0, sizeof(*out));
    out->addr_len = ip_len(sa->sa_family);
    memcpy(&out->addr, sa, out->addr_len);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&out->addr;
        in->sin_port = 0;
        inet_ntop(AF_INET, &in->sin_addr, out->text, sizeof(out->text));
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->addr;
        in6->sin6_port = 0;
        in6->sin6_flowinfo = 0;
        inet_ntop(AF_INET6, &in6->sin6_addr, out->text, sizeof(out->text));
    }
    snprintf(out->iface, sizeof(out->iface), "%s", iface);
}

static bool is_ip(const struct ifaddrs *a)
{
    return a->ifa_addr != NULL &&
           (a->ifa_addr->sa_family == AF_INET || a->ifa_addr->sa_family == AF_INET6);
}

/* The interface that has address sa; a 127/8 address not assigned as such
 * is the loopback interface's (the kernel routes the whole block there). */
static int by_address(struct ifaddrs *ifs, const struct sockaddr *sa, const char *spec,
                      tq_netif_addr_t *out, char *err, size_t cap)
{
    const struct ifaddrs *loop = NULL;
    for (const struct ifaddrs *a = ifs; a != NULL; a = a->ifa_next) {
        if (!is_ip(a))
            continue;
        if (tq__netif_same_ip(a->ifa_addr, sa)) {
            take(out, a->ifa_name, sa);
            return 0;
        }
        if (loop == NULL && (a->ifa_flags & IFF_LOOPBACK) && a->ifa_addr->sa_family == AF_INET)
            loop = a;
    }
    if (loop != NULL && sa->sa_family == AF_INET && tq__netif_is_loopback(sa)) {
        take(out, loop->ifa_name, sa);
        return 0;
    }
    snprintf(err, cap, "%s is not an address of any interface of this host", spec);
    return -1;
}

static int by_name(struct ifaddrs *ifs, const char *name, tq_netif_addr_t *out, char *err,
                   size_t cap)
{
    for (int pass = 0; pass < 2; pass++) { /* IPv4 first */
        int family = pass == 0 ? AF_INET : AF_INET6;
        for (const struct ifaddrs *a = ifs; a != NULL; a = a->ifa_next) {
            if (!is_ip(a) || a->ifa_addr->sa_family != family || strcmp(a->ifa_name, name) != 0)
                continue;
            if (family == AF_INET6 &&
                IN6_IS_ADDR_LINKLOCAL(&((const struct sockaddr_in6 *)a->ifa_addr)->sin6_addr))
                continue; /* needs a scope that peers cannot be given */
            take(out, a->ifa_name, a->ifa_addr);
            return 0;
        }
    }
    snprintf(err, cap, "interface %s has no usable IP address", name);
    return -1;
}

int tq__netif_resolve(const char *spec, tq_netif_addr_t *out, char *err, size_t cap)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    bool numeric = true;
    if (spec == NULL || spec[0] == '\0') {
        snprintf(err, cap, "no address or interface given");
        return -1;
    }
    if (inet_pton(AF_INET, spec, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, spec, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else if (if_nametoindex(spec) != 0)
        numeric = false;
    else {
        snprintf(err, cap, "'%s' is neither an IP address nor an interface of this host", spec);
        return -1;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        snprintf(err, cap, "getifaddrs: %s", strerror(errno));
        return -1;
    }
    int rc = numeric ? by_address(ifs, (struct sockaddr *)&ss, spec, out, err, cap)
                     : by_name(ifs, spec, out, err, cap);
    freeifaddrs(ifs);
    return rc;
}

int tq__netif_of_socket(int fd, tq_netif_addr_t *out, char *err, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char text[INET6_ADDRSTRLEN] = "";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(err, cap, "getsockname: %s", strerror(errno));
        return -1;
    }
    if (ss.ss_family == AF_INET6 &&
        IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&ss)->sin6_addr)) {
        /* an IPv4 peer reached through a dual-stack socket: the IPv4 address */
        struct sockaddr_in in = {.sin_family = AF_INET};
        memcpy(&in.sin_addr, ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr + 12, 4);
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, &in, sizeof(in));
    }
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
        snprintf(err, cap, "the socket is not an IP socket (family %d)", (int)ss.ss_family);
        return -1;
    }
    const void *ip = ss.ss_family == AF_INET
                         ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                         : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    inet_ntop(ss.ss_family, ip, text, sizeof(text));
    return tq__netif_resolve(text, out, err, cap);
}
