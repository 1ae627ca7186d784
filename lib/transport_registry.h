/* transport_registry.h: the transports this build has, found by name. */
#ifndef TQ_TRANSPORT_REGISTRY_H
#define TQ_TRANSPORT_REGISTRY_H

#include "tq/transport.h"

/* NULL-terminated, best first. */
extern const tq_transport_ops *const tq__transports[];

/* name NULL, "" or "auto": the first one built. NULL when unknown. */
const tq_transport_ops *tq__transport_find(const char *name);

#endif
