"""tqrdma: TransferQueue's key-value interface over libtqrdma, with numpy arrays.

    import numpy as np, tqrdma as tq
    tq.init()                                   # $TQ_CONTROLLER, else embedded
    tq.kv_batch_put(["a", "b"], "train", fields={"ids": np.arange(6).reshape(2, 3)},
                    tags=[{"score": 1}, None])
    tq.kv_batch_get(["b"], "train")             # {"ids": array([[3, 4, 5]])}
    tq.kv_list("train")                         # {"train": {"a": {"score": 1}, "b": {}}}
    tq.kv_clear(["a", "b"], "train")
    tq.close()

A field is a numpy array whose first dimension is the keys (a tensor: every
row the same shape), a list of arrays (nested: each row its own shape) or a
list of bytes. Puts hand the arrays' own buffers to the library: an array that
is C-contiguous and native-endian is never copied. Gets return fresh arrays.
dtypes: bool, uint8, int8, int16, int32, int64, float16, float32, float64;
a bfloat16 field (written from C) reads back as uint16 holding its bits.
"""
import atexit
import json
from contextlib import nullcontext
from ctypes import byref, c_void_p

from . import _capi
from ._batch import Batch, one_row, to_dict
from ._capi import lib
from ._errors import (ERR_AUTH, ERR_CONNECTION, ERR_END, ERR_EXISTS, ERR_INVALID, ERR_IO,
                      ERR_LOST, ERR_NOMEM, ERR_NOSPACE, ERR_NOT_FOUND, ERR_PROTOCOL,
                      ERR_TIMEOUT, ERR_UNSUPPORTED, OK, InvalidArgumentError, NotFoundError,
                      TQError, error)

__version__ = "0.1.0"
__all__ = ["init", "close", "kv_put", "kv_batch_put", "kv_batch_get", "kv_list", "kv_clear",
           "TQError", "InvalidArgumentError", "NotFoundError", "OK", "ERR_INVALID",
           "ERR_NOT_FOUND", "ERR_EXISTS", "ERR_TIMEOUT", "ERR_NOSPACE", "ERR_LOST",
           "ERR_CONNECTION", "ERR_PROTOCOL", "ERR_AUTH", "ERR_NOMEM", "ERR_UNSUPPORTED",
           "ERR_END", "ERR_IO"]

_client = None  # the process's tq_client, as TransferQueue keeps one per process


def init(target=None):
    """Connect: target is "host:port", a client config ".json", "embedded", or None
    ($TQ_CONTROLLER if set, else a controller and storage unit inside this process)."""
    global _client
    if _client is not None:
        raise RuntimeError("tqrdma is already initialized; call close() first")
    client = c_void_p()
    rc = lib.tq_open(None if target is None else str(target).encode(), byref(client))
    if rc < 0:
        raise error(rc, "init", lib.tq_last_error(None).decode(errors="replace"))
    _client = client


def close():
    """Disconnect (and stop the embedded controller, if this process runs it). Idempotent."""
    global _client
    client, _client = _client, None
    if client is not None:
        lib.tq_close(client)


atexit.register(close)


def kv_put(key, partition_id, fields=None, tag=None):
    """Write one key: fields maps names to its values (an array, without a key dimension,
    or bytes); tag, a dict, is merged into its tag. Fields not given keep their values."""
    if isinstance(key, str):
        _no_nul(key, "key")
    rows = None if fields is None else {name: one_row(name, v) for name, v in fields.items()}
    kv_batch_put([key], partition_id, rows, None if tag is None else [tag])


def kv_batch_put(keys, partition_id, fields=None, tags=None):
    """Write len(keys) keys in one round trip: row i of each field and tags[i] (a dict or
    None) go to keys[i]. Atomic: on error nothing is written."""
    keys = _keys(keys, allow_str=False)
    tags_c = None
    if tags is not None:
        if len(tags) != len(keys):
            raise InvalidArgumentError(ERR_INVALID, f"{len(tags)} tags for {len(keys)} keys")
        tags_c = _capi.strings([None if t is None else _tag_json(t) for t in tags])
    with Batch(len(keys)) if fields else nullcontext() as batch:
        for name, value in (fields or {}).items():
            batch.add(name, value)
        _check(lib.tq_kv_batch_put(_open(), _partition(partition_id), len(keys),
                                   _capi.strings(keys), batch and batch.handle, tags_c),
               "kv_batch_put")


def kv_batch_get(keys, partition_id, select_fields=None):
    """Read keys (a list, or one key) as {field: column}, rows in the order of keys.
    select_fields (a list, or one name): None reads every field all the keys have."""
    keys = _keys(keys)
    names = None if select_fields is None else _keys(select_fields, what="select_fields")
    handle = c_void_p()
    _check(lib.tq_kv_batch_get(_open(), _partition(partition_id), len(keys), _capi.strings(keys),
                               0 if names is None else len(names),
                               None if names is None else _capi.strings(names), byref(handle)),
           "kv_batch_get")
    try:
        return to_dict(handle)
    finally:
        lib.tq_batch_destroy(handle)


def kv_list(partition_id=None):
    """{partition: {key: tag}} with keys in insertion order; one partition, or every one.
    Read page by page (one answer of the controller is bounded, a listing is not)."""
    client = _open()
    partition_c = None if partition_id is None else _partition(partition_id)
    out = {} if partition_id is None else {partition_id: {}}
    cursor = None
    while True:
        entries = c_void_p()
        _check(lib.tq_kv_list_page(client, partition_c, cursor, 0, byref(entries)), "kv_list")
        try:
            for i in range(lib.tq_kv_entries_size(entries)):
                partition = lib.tq_kv_entries_partition(entries, i).decode()
                key = lib.tq_kv_entries_key(entries, i).decode()
                out.setdefault(partition, {})[key] = json.loads(lib.tq_kv_entries_tag(entries, i))
            cursor = lib.tq_kv_entries_cursor(entries)  # bytes, copied: valid after the free
        finally:
            lib.tq_kv_entries_free(entries)
        if cursor is None:
            return out


def kv_clear(keys, partition_id):
    """Remove keys (a list, or one key) with their fields and tags; absent keys are
    ignored. Returns how many were removed."""
    keys = _keys(keys)
    return _check(lib.tq_kv_clear(_open(), _partition(partition_id), len(keys),
                                  _capi.strings(keys)), "kv_clear")


def _open():
    if _client is None:
        raise RuntimeError("tqrdma is not initialized; call tqrdma.init() first")
    return _client


def _check(rc, what):
    """rc, or the exception it stands for, with the library's detail of this thread's failure."""
    if rc < 0:
        raise error(rc, what, lib.tq_last_error(_client).decode(errors="replace"))
    return rc


def _partition(partition_id):
    if not isinstance(partition_id, str):
        raise TypeError(f"partition_id: str expected, got {type(partition_id).__name__}")
    _no_nul(partition_id, "partition_id")
    return partition_id.encode()


def _no_nul(name, what):
    """The library takes C strings: a NUL would end the name there, silently."""
    if "\0" in name:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: {name!r} has a NUL character inside")


def _keys(keys, allow_str=True, what="keys"):
    """A list of str; one str is one name where that reads naturally (a get, a clear)."""
    if isinstance(keys, str):
        if not allow_str:
            raise TypeError(f"{what}: a list of str, not one str")
        _no_nul(keys, what)
        return [keys]
    keys = list(keys)
    if not keys:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: at least one is required")
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise TypeError(f"{what}: str expected, got {type(k).__name__}")
        _no_nul(k, f"{what}[{i}]")
    return keys


def _tag_json(tag):
    if not isinstance(tag, dict):
        raise TypeError(f"a tag is a dict, not {type(tag).__name__}")
    return json.dumps(tag)

