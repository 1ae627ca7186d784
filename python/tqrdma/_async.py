"""asyncio over the library's non-blocking requests: no thread per call.

A request (tq_*_nb) runs on the library's own few workers; its file descriptor
becomes readable when it completes, and the event loop watches that.
"""
import asyncio
from ctypes import byref, c_void_p

from ._capi import lib


class Request:
    """A tq_request, with what it borrows (buffers, the batch) kept alive until it completes."""

    def __init__(self, client, handle, keep):
        self.client, self.handle, self.keep = client, handle, keep

    def status(self):
        """The request's own status, once complete (its fd was readable)."""
        return lib.tq_request_wait(self.handle, -1)

    def error(self):
        """The detail of the request's failure: tq_request_wait made it this thread's last."""
        return lib.tq_last_error(self.client.handle).decode(errors="replace")

    def free(self):
        handle, self.handle, self.keep = self.handle, None, None
        if handle:
            lib.tq_request_free(handle)

    def __del__(self):
        self.free()


async def wait(request):
    """Wait for request without blocking the loop; return its status. A cancelled wait
    leaves the request to finish in the background, its buffers still kept."""
    loop = asyncio.get_running_loop()
    fd = lib.tq_request_fd(request.handle)
    done = loop.create_future()

    def readable():
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        # the library still writes into the kept buffers: free only once complete
        done.add_done_callback(lambda _: request.free())
        raise
    return request.status()


def submit(client, call, *args, keep=()):
    """Start call(client, *args, &req): (its rc, its Request); an argument error is the rc."""
    handle = c_void_p()
    rc = call(client.handle, *args, byref(handle))
    return rc, Request(client, handle, keep) if rc >= 0 else None
