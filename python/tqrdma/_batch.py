"""A tq_batch over memory that Python owns: the batch borrows the buffers, this object keeps
them referenced until the batch is destroyed. What the values are is _values.py's concern."""
from ctypes import byref, c_int64, c_size_t, c_void_p

from . import _capi
from ._capi import lib
from ._errors import ERR_INVALID, InvalidArgumentError, error


class Batch:
    """A tq_batch of `rows` rows (``handle``), destroyed on close() or when the with-block ends."""

    def __init__(self, rows):
        self.handle = c_void_p()
        self.rows = rows
        self._keep = []
        if not 1 <= rows <= _capi.MAX_ROWS:
            raise InvalidArgumentError(ERR_INVALID,
                                       f"{rows} rows: a batch has 1 to {_capi.MAX_ROWS}")
        rc = lib.tq_batch_create(rows, byref(self.handle))
        if rc < 0:
            raise error(rc, "tq_batch_create")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Destroy the batch (idempotent); the buffers it borrowed are let go."""
        if self.handle:
            lib.tq_batch_destroy(self.handle)
        self.handle = None
        self._keep = []

    def __del__(self):
        if lib is not None:  # not at interpreter shutdown
            self.close()

    def add_tensor(self, name, dtype, row_shape, ptr, keep):
        """A tensor field: rows x row_shape elements of dtype at ptr, kept alive by keep."""
        shape = (c_int64 * max(len(row_shape), 1))(*row_shape)
        self._keep.append(keep)
        self._check(lib.tq_batch_add_tensor(self.handle, name.encode(), dtype, len(row_shape),
                                            shape, ptr), name)

    def add_nested(self, name, dtype, ndim, shapes, ptrs, keep):
        """A nested field: row i has shape shapes[i] (ndim dimensions) and its data at ptrs[i]."""
        flat = (c_int64 * max(len(ptrs) * ndim, 1))(*[d for s in shapes for d in s])
        data = (c_void_p * len(ptrs))(*ptrs)
        self._keep.append(keep)
        self._check(lib.tq_batch_add_nested(self.handle, name.encode(), dtype, ndim, flat, data),
                    name)

    def add_bytes(self, name, ptrs, lengths, keep):
        """A bytes field: row i is lengths[i] bytes at ptrs[i]."""
        data = (c_void_p * len(ptrs))(*ptrs)
        sizes = (c_size_t * len(lengths))(*lengths)
        self._keep.append(keep)
        self._check(lib.tq_batch_add_bytes(self.handle, name.encode(), data, sizes), name)

    def set_format(self, name, label):
        """Label how the field was encoded (tq_batch_set_format); a library without format
        labels ignores it, and its readers see the field as C wrote it."""
        if _capi.has("tq_batch_set_format"):
            self._check(lib.tq_batch_set_format(self.handle, name.encode(), label.encode()),
                        name)

    def _check(self, rc, name):
        if rc < 0:  # a batch has no client: its detail is tq_last_error(NULL)'s
            raise error(rc, f"field {name!r}", lib.tq_last_error(None).decode(errors="replace"))

    # what the package's kv functions call (kept while they move to _values.encode)
    def add(self, name, value):
        """Add one column: see _values.encode."""
        from . import _values
        _values.add_column(self, name, value, "keys")


def one_row(name, value):
    from . import _values
    return _values.one_row(name, value)


def to_dict(handle):
    """A batch a get returned, as {field: value}; the batch stays the caller's to destroy."""
    from . import _values
    return _values.from_batch(handle)
