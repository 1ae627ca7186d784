/* transport_registry.c: one explicit list of the transports built in. */
#include "transport_registry.h"

#include <string.h>

#ifdef TQ_HAVE_UCX
extern const tq_transport_ops tq_ucx_ops;
#endif
#ifdef TQ_HAVE_OFI
extern const tq_transport_ops tq_ofi_ops;
#endif
#ifdef TQ_HAVE_VERBS
extern const tq_transport_ops tq_verbs_ops;
#endif

const tq_transport_ops *const tq__transports[] = {
#ifdef TQ_HAVE_UCX
    &tq_ucx_ops,
#endif
#ifdef TQ_HAVE_OFI
    &tq_ofi_ops,
#endif
#ifdef TQ_HAVE_VERBS
    &tq_verbs_ops, /* last: "auto" prefers the others where units serve them too */
#endif
    NULL,
};

const tq_transport_ops *tq__transport_find(const char *name)
{
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0)
        return tq__transports[0];
    for (size_t i = 0; tq__transports[i] != NULL; i++)
        if (strcmp(tq__transports[i]->name, name) == 0)
            return tq__transports[i];
    return NULL;
}
