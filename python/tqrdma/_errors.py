"""libtqrdma's status codes as Python exceptions."""
from ._capi import lib

# tq_status_t, as include/tq/tq.h numbers them (part of the ABI)
OK = 0
(ERR_INVALID, ERR_NOT_FOUND, ERR_EXISTS, ERR_TIMEOUT, ERR_NOSPACE, ERR_LOST, ERR_CONNECTION,
 ERR_PROTOCOL, ERR_AUTH, ERR_NOMEM, ERR_UNSUPPORTED, ERR_END, ERR_IO) = range(-1, -14, -1)


class TQError(RuntimeError):
    """A libtqrdma call failed; ``status`` is its tq_status_t (a negative int, ``ERR_*``).
    A RuntimeError, as TransferQueue raises for a failed call."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class InvalidArgumentError(TQError, ValueError):
    """A bad argument (``ERR_INVALID``); nothing was written."""


class NotFoundError(TQError, ValueError, LookupError):
    """An unknown partition, key or field (``ERR_NOT_FOUND``); the message names it.
    A ValueError, as TransferQueue raises for keys it does not have."""


class TimedOutError(TQError, TimeoutError):
    """``ERR_TIMEOUT``: too few rows were ready, or a peer did not answer in time."""


class ConnectionFailedError(TQError, ConnectionError):
    """``ERR_CONNECTION``: the controller or a storage unit cannot be reached."""


_CLASSES = {ERR_INVALID: InvalidArgumentError, ERR_NOT_FOUND: NotFoundError,
            ERR_TIMEOUT: TimedOutError, ERR_CONNECTION: ConnectionFailedError}


def error(status, what, detail=""):
    """The exception for a failed call: its class from the status, its text from the library."""
    message = f"{what}: {lib.tq_status_string(status).decode()}"
    if detail:
        message += f": {detail}"
    return _CLASSES.get(status, TQError)(status, message)
