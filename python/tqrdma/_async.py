"""asyncio over the library's non-blocking requests: no thread per call.

A request (tq_*_nb) runs on the library's own few workers; its file descriptor
becomes readable when it completes, and the event loop watches that.

A request borrows its arguments' memory (names, batches, tensors) until it
completes, whatever happens to the coroutine that awaits it: one whose waiter
is cancelled or dropped becomes an orphan, held (with what it borrows) by a
strong reference until it is seen complete, never left to the garbage
collector, which frees a cycle's members in any order.
"""
import asyncio
import select
from ctypes import byref, c_void_p

from ._capi import lib
from ._errors import error

_orphans = set()


class Request:
    """A tq_request, with what it borrows (buffers, the batch) kept alive until it completes."""

    def __init__(self, client, handle, keep):
        self.client, self.handle, self.keep = client, handle, keep

    def done(self):
        """Whether it has completed (its fd is readable), without waiting."""
        fd = lib.tq_request_fd(self.handle)
        return fd < 0 or bool(select.select([fd], [], [], 0)[0])

    def status(self):
        """The request's own status, once complete (its fd was readable)."""
        return lib.tq_request_wait(self.handle, -1)

    def error(self):
        """The detail of the request's failure: tq_request_wait made it this thread's last."""
        return lib.tq_last_error(self.client.handle).decode(errors="replace")

    def free(self):
        """Free it (waiting for it to complete first), then what it borrowed."""
        handle, self.handle = self.handle, None
        if handle:
            lib.tq_request_free(handle)
        self.keep = None


def reap(client=None, wait=False):
    """Free the orphans that completed (wait: all of them, or client's), e.g. before
    the client closes."""
    for request in list(_orphans):
        if (client is None or request.client is client) and (wait or request.done()):
            _orphans.discard(request)
            request.free()


async def wait(request):
    """Wait for request without blocking the loop; return its status."""
    reap()
    loop = asyncio.get_running_loop()
    fd = lib.tq_request_fd(request.handle)
    done = loop.create_future()

    def readable():
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    except BaseException:  # cancelled, or the coroutine dropped: it still runs
        loop.remove_reader(fd)
        _orphans.add(request)
        raise
    return request.status()


async def wait_ok(request, what):
    """wait, then the request itself (complete, its results to take), or the exception
    its failure stands for (the request freed)."""
    status = await wait(request)
    if status < 0:
        detail = request.error()
        request.free()
        raise error(status, what, detail)
    return request


def submit(client, call, *args, keep=()):
    """Start call(client, *args, &req): (its rc, its Request); an argument error is the rc."""
    handle = c_void_p()
    rc = call(client.handle, *args, byref(handle))
    return rc, Request(client, handle, keep) if rc >= 0 else None
