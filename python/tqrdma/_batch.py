"""numpy arrays to and from tq_batch: a put borrows the arrays' buffers, a get copies out once."""
import ctypes
from ctypes import byref, c_int64, c_size_t, c_void_p

import numpy as np

from . import _capi
from ._capi import lib
from ._errors import (ERR_INVALID, ERR_PROTOCOL, ERR_UNSUPPORTED, InvalidArgumentError, TQError,
                      error)

_TO_TQ = {
    np.dtype(np.bool_): _capi.DTYPE_BOOL, np.dtype(np.uint8): _capi.DTYPE_U8,
    np.dtype(np.int8): _capi.DTYPE_I8, np.dtype(np.int16): _capi.DTYPE_I16,
    np.dtype(np.int32): _capi.DTYPE_I32, np.dtype(np.int64): _capi.DTYPE_I64,
    np.dtype(np.float16): _capi.DTYPE_F16, np.dtype(np.float32): _capi.DTYPE_F32,
    np.dtype(np.float64): _capi.DTYPE_F64,
}
# numpy has no bfloat16: such fields read back as their raw bits
_FROM_TQ = {code: dtype for dtype, code in _TO_TQ.items()}
_FROM_TQ[_capi.DTYPE_BF16] = np.dtype(np.uint16)
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _c_array(value, field):
    """value as a C-contiguous, native-endian array and its tq_dtype_t; copies only if it must."""
    a = np.asarray(_not_str(value, field))
    native = a.dtype.newbyteorder("=")
    code = _TO_TQ.get(native)
    if code is None:
        names = ", ".join(str(d) for d in _TO_TQ)
        raise TypeError(f"field {field!r}: dtype {a.dtype} is not supported ({names})")
    if a.dtype != native or not a.flags.c_contiguous:
        a = np.array(a, dtype=native, order="C")
    return a, code


def _not_str(value, field):
    if isinstance(value, str):
        raise TypeError(f"field {field!r}: a str is not data; encode it to bytes")
    return value


def _invalid(field, text):
    return InvalidArgumentError(ERR_INVALID, f"field {field!r}: {text}")


class Batch:
    """A tq_batch over the caller's buffers, which it keeps referenced until it is destroyed."""

    def __init__(self, rows):
        self.handle = c_void_p()
        self._keep = []
        rc = lib.tq_batch_create(rows, byref(self.handle))
        if rc < 0:
            raise error(rc, "tq_batch_create")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        lib.tq_batch_destroy(self.handle)
        self.handle = None

    def add(self, name, value):
        """Add one field: an array (one row per key), or a list of arrays or of bytes."""
        if not isinstance(name, str):
            raise TypeError(f"field names are str, not {type(name).__name__}")
        if "\0" in name:  # the library takes C strings: the name would end at the NUL
            raise InvalidArgumentError(ERR_INVALID,
                                       f"fields: name {name!r} has a NUL character inside")
        rows = lib.tq_batch_rows(self.handle)
        if not isinstance(value, (list, tuple)):
            rc = self._add_tensor(name, value, rows)
        elif len(value) != rows:
            raise _invalid(name, f"{len(value)} rows for {rows} keys (one row per key)")
        elif all(isinstance(v, _BYTES_LIKE) for v in value):
            rc = self._add_bytes(name, value)
        else:
            rc = self._add_nested(name, value)
        if rc < 0:  # a batch has no client: its detail is tq_last_error(NULL)'s
            raise error(rc, f"field {name!r}", lib.tq_last_error(None).decode(errors="replace"))

    def _add_tensor(self, name, value, rows):
        a, code = _c_array(value, name)
        if a.ndim == 0 or a.shape[0] != rows:
            first = a.shape[0] if a.ndim else "none"
            raise _invalid(name, f"first dimension {first} for {rows} keys (one row per key)")
        if a.ndim - 1 > _capi.MAX_NDIM:
            raise _invalid(name, f"rows of {a.ndim - 1} dimensions (at most {_capi.MAX_NDIM})")
        self._keep.append(a)
        shape = (c_int64 * (a.ndim - 1))(*a.shape[1:])
        return lib.tq_batch_add_tensor(self.handle, name.encode(), code, a.ndim - 1, shape,
                                       a.ctypes.data)

    def _add_nested(self, name, value):
        arrays, codes = zip(*(_c_array(v, name) for v in value))
        ndim = arrays[0].ndim
        for i, a in enumerate(arrays):
            if codes[i] != codes[0] or a.ndim != ndim:
                raise _invalid(name, f"row {i} is {a.dtype} of {a.ndim} dimensions, row 0 "
                                     f"{arrays[0].dtype} of {ndim}: rows share dtype and ndim")
        if ndim > _capi.MAX_NDIM:
            raise _invalid(name, f"rows of {ndim} dimensions (at most {_capi.MAX_NDIM})")
        self._keep.append(arrays)
        shapes = (c_int64 * (len(arrays) * ndim))(*[d for a in arrays for d in a.shape])
        data = (c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        return lib.tq_batch_add_nested(self.handle, name.encode(), codes[0], ndim, shapes, data)

    def _add_bytes(self, name, value):
        views = [np.frombuffer(v, dtype=np.uint8) for v in value]  # views, not copies
        self._keep.append(views)
        data = (c_void_p * len(views))(*[v.ctypes.data for v in views])
        lengths = (c_size_t * len(views))(*[v.nbytes for v in views])
        return lib.tq_batch_add_bytes(self.handle, name.encode(), data, lengths)


def one_row(name, value):
    """One key's value (an array without the key dimension, or bytes) as a field of one row:
    a view, so kv_put copies no more than kv_batch_put."""
    if isinstance(value, _BYTES_LIKE):
        return [value]
    a = np.asarray(_not_str(value, name))
    return a.reshape((1,) + a.shape)


def to_dict(handle):
    """A batch returned by a get as {field: array (tensor), list of arrays (nested) or of bytes}."""
    rows = lib.tq_batch_rows(handle)
    names = [lib.tq_batch_field_name(handle, i) for i in range(lib.tq_batch_num_fields(handle))]
    return {name.decode(): _column(handle, name, rows) for name in names}


def _column(handle, name, rows):
    info = _capi.FieldInfo()
    rc = lib.tq_batch_field(handle, name, byref(info))
    if rc < 0:
        raise error(rc, f"field {name.decode()!r}")
    if info.kind == _capi.FIELD_BYTES:
        return [ctypes.string_at(data, size) for data, size, _ in _rows(handle, name, rows, 0)]
    dtype = _FROM_TQ.get(info.dtype)
    if dtype is None:
        raise TQError(ERR_UNSUPPORTED, f"field {name.decode()!r}: unknown dtype {info.dtype}")
    if info.kind == _capi.FIELD_TENSOR:
        shape = (rows,) + tuple(info.row_shape[:info.ndim])
        return _copy(np.empty(shape, dtype), info.data, info.bytes, name)
    return [_copy(np.empty(shape, dtype), data, size, name)
            for data, size, shape in _rows(handle, name, rows, info.ndim)]


def _rows(handle, name, rows, ndim):
    """(data, size, shape) of each row of a field."""
    size, shape = c_size_t(), ctypes.POINTER(c_int64)()
    for r in range(rows):
        data = lib.tq_batch_row(handle, name, r, byref(size), byref(shape))
        yield data, size.value, tuple(shape[d] for d in range(ndim))


def _copy(a, data, size, name):
    """Fill a from the library's buffer, after checking that the sizes agree."""
    if a.nbytes != size:
        raise TQError(ERR_PROTOCOL, f"field {name.decode()!r}: {size} bytes for shape {a.shape}")
    if size:
        ctypes.memmove(a.ctypes.data, data, size)
    return a
