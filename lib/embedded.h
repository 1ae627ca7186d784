/* embedded.h: a controller and one storage unit inside the client's process. */
#ifndef TQ_EMBEDDED_H
#define TQ_EMBEDDED_H

#include <stddef.h>

typedef struct tq__embedded tq__embedded;

#include <stdint.h>

/* Start both on loopback, each in its own thread, with a pool of pool_size
 * bytes. address receives the controller's "host:port". */
int  tq__embedded_start(const char *token, uint64_t pool_size, char *address, size_t cap,
                        char *err, tq__embedded **e_p);
void tq__embedded_stop(tq__embedded *e);

#endif
