/* list.h: an intrusive circular doubly linked list. */
#ifndef TQ_UTIL_LIST_H
#define TQ_UTIL_LIST_H

#include <stdbool.h>
#include "util/common.h"

typedef struct tq_list {
    struct tq_list *prev, *next;
} tq_list;

static inline void tq_list_init(tq_list *head) { head->prev = head->next = head; }
static inline bool tq_list_empty(const tq_list *head) { return head->next == head; }

static inline void tq_list_insert_tail(tq_list *head, tq_list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void tq_list_remove(tq_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

#define tq_list_entry(node, type, member) container_of(node, type, member)

/* Safe against removal of the current node. */
#define tq_list_for_each_safe(pos, tmp, head)                                  \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);           \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
