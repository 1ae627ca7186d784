/* proc.h: who a process is on this node, so a transport can see a same-node peer die. */
#ifndef TQ_UTIL_PROC_H
#define TQ_UTIL_PROC_H

#include <stdbool.h>
#include <stdint.h>

/* A process, told apart from a later one with the same pid by its start time,
 * and from one on another node (or before a reboot) by the boot id. */
typedef struct {
    uint8_t  boot_id[16];
    uint32_t pid;
    uint64_t start_time; /* clock ticks since boot; 0: unknown */
} tq_proc_id_t;

/* This process; all zero when /proc cannot tell. */
void tq__proc_self(tq_proc_id_t *id_p);
/* A pidfd on peer when it is a live process on the node self runs on (self
 * included), else -1: a peer elsewhere, gone, or unknowable. */
int  tq__proc_watch(const tq_proc_id_t *self, const tq_proc_id_t *peer);
/* True once the process behind pidfd has exited (does not wait). */
bool tq__proc_exited(int pidfd);
/* False only when no process pid with this start time runs in our pid
 * namespace now (gone, or the pid is another's); true when in doubt. */
bool tq__proc_alive(uint32_t pid, uint64_t start_time);
/* The inode of this process's pid namespace (pids mean something only
 * within it); 0 if unknown. */
uint64_t tq__proc_pid_ns(void);

#endif
