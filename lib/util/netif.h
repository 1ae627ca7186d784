/* netif.h: this host's interfaces and addresses, for binding a data plane to one of them. */
#ifndef TQ_UTIL_NETIF_H
#define TQ_UTIL_NETIF_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* An address of this host (port 0), the interface that has it, and its text. */
typedef struct {
    struct sockaddr_storage addr;
    socklen_t               addr_len;
    char                    iface[IF_NAMESIZE];
    char                    text[INET6_ADDRSTRLEN];
} tq_netif_addr_t;

/*
 * spec: a numeric IPv4 or IPv6 address that an interface of this host has
 * (any 127.x.y.z is the loopback interface's), or an interface's name (then
 * its first IPv4 address, else its first IPv6 address that is not link-local).
 * @return 0 with *out filled, or -1 and a message in err naming spec.
 */
int  tq__netif_resolve(const char *spec, tq_netif_addr_t *out, char *err, size_t cap);
/* The local address of connected socket fd, resolved as above. */
int  tq__netif_of_socket(int fd, tq_netif_addr_t *out, char *err, size_t cap);

bool tq__netif_is_loopback(const struct sockaddr *sa);
/* Same family and IP address (ports are not compared). */
bool tq__netif_same_ip(const struct sockaddr *a, const struct sockaddr *b);

#endif
