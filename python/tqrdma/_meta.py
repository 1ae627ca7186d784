"""The library's tq_meta, owned by Python, and the BatchMeta made from it."""
import json
from ctypes import c_void_p

import numpy as np

from . import _values
from ._capi import lib
from .metadata import READY_FOR_CONSUME, BatchMeta


class CMeta:
    """A tq_meta: pins its rows' data until it is freed, when garbage collected or when its
    client closes (a meta must not outlive its client: tq_meta_free needs it)."""

    __slots__ = ("handle", "rows", "indexes", "partition", "__weakref__")

    def __init__(self, client, handle):
        self.handle = handle if isinstance(handle, c_void_p) else c_void_p(handle)
        client._metas.add(self)
        self.rows = lib.tq_meta_rows(self.handle)
        ptr = lib.tq_meta_indexes(self.handle)
        self.indexes = [ptr[i] for i in range(self.rows)]
        self.partition = lib.tq_meta_partition(self.handle).decode()

    def field_names(self):
        return [lib.tq_meta_field_name(self.handle, i).decode()
                for i in range(lib.tq_meta_num_fields(self.handle))]

    def custom_meta(self):
        return [json.loads(lib.tq_meta_custom(self.handle, r)) for r in range(self.rows)]

    def keys(self):
        keys = []
        for r in range(self.rows):
            key = lib.tq_meta_key(self.handle, r)
            keys.append(None if key is None else key.decode())
        return keys

    def covers(self, meta):
        """Whether this handle can read meta's rows: the same rows, in the same order."""
        return (self.handle is not None and meta.global_indexes == self.indexes
                and all(p == self.partition for p in meta.partition_ids))

    def free(self):
        handle, self.handle = getattr(self, "handle", None), None
        if handle:
            lib.tq_meta_free(handle)

    __del__ = free


def batch_meta(cmeta, ready=True):
    """A BatchMeta of a tq_meta's rows, its schema and custom meta, holding the handle.
    ready: every cell is there (a "fetch"); else each row's status says."""
    names = [n.encode() for n in cmeta.field_names()]
    if ready:
        status = np.full(cmeta.rows, READY_FOR_CONSUME, dtype=np.int8)
    else:
        status = np.array([bool(names) and all(lib.tq_meta_has_cell(cmeta.handle, n, r) == 1
                                                for n in names) for r in range(cmeta.rows)],
                          dtype=np.int8)
    return BatchMeta(cmeta.indexes, [cmeta.partition] * cmeta.rows,
                     _values.meta_schema(cmeta.handle), status, custom_meta=cmeta.custom_meta(),
                     _handle=cmeta)
