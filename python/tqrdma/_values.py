"""The value layer: Python columns to and from tq_batch, with their types kept.

    batch = encode(fields, rows, "keys")   # a Batch over the columns' own buffers
    lib.tq_kv_batch_put(client, partition, n, keys, batch.handle, tags); batch.close()
    meta = ...                             # tq_kv_get_meta, tq_get_meta
    values = decode(client, meta)          # {field: value}, or a TensorDict

A column (one value per row) is, and comes back as:

  torch.Tensor            dense: dim 0 the rows. Comes back a tensor of that dtype and shape
  numpy.ndarray           dense, as torch; comes back an array
  torch nested tensor     row i is t.unbind()[i]; comes back a nested tensor (jagged where
                          torch has that layout and the rows allow it, else strided)
  list of tensors         nested: rows share dtype and number of dimensions, not shape;
  list of arrays          comes back a list of tensors (or arrays), even if the shapes agree
  list of bytes           comes back a list of bytes
  list of str             UTF-8; comes back a list of str
  list of other objects,  pickled row by row (pickle.HIGHEST_PROTOCOL); come back as the
  NonTensorStack/Data     objects. Unpickling runs code chosen by whoever wrote the field:
                          decode(..., unpickle=False) returns their bytes instead

dtypes: bool, uint8, int8, int16, int32, int64, float16, bfloat16 (torch), float32, float64,
complex32 (torch's chalf), complex64, complex128, and uint16, uint32, uint64 (numpy; torch
from 2.3). numpy has no bfloat16 nor complex32: such a field read as numpy holds their bits
(uint16, uint32; `a.view(np.float16)` splits a complex32 into its real and imaginary parts).

How a field was written is stored with it, as its format label (tq_batch_set_format):
"torch" (a tensor or nested tensor: the field's kind tells which), "torch.list" (a list of
tensors), "utf8", "pickle", and none for numpy arrays, lists of them and bytes, as for a
field C wrote. The library keeps a field's first label; a put without one is always taken,
one with another is refused (so a field is tensors or a list of tensors, text or objects,
not both). A reader in any process gets what the writer wrote: torch where the label says
torch and torch imports, numpy otherwise; to="torch" or to="numpy" chooses. Where
tensordict imports (and to is not "numpy") the result is a TensorDict of torch tensors,
lists in NonTensorStack; tensordict=False gives a dict.

Zero copy. A put hands the library each tensor's or array's own buffer, with three
exceptions, each a copy: a non-contiguous (or byte-swapped) value is copied C-contiguous
(TransferQueue's users send slices, so this is allowed rather than refused), a tensor on
a device other than the CPU is copied to the CPU with .cpu() (as TransferQueue does; it
comes back a CPU tensor), and a lazily conjugated or negated tensor is resolved. A get
either wraps the library's own receive buffers (mode="wrap", the default: tq_get_data),
which are pooled and stay mapped, the returned values keeping that batch alive until the
last of them is gone; or reads straight into new arrays (mode="into": np.empty, torch
tensors over it by from_numpy, then tq_get_data_into). Nested torch tensors are the
exception: torch 1.13 builds one only by copying rows into new memory.

Every error names the field (and the row) and what is wrong; nothing is written after one:
encode raises before any call writes.
"""
import os
import pickle
import sys
import weakref
from ctypes import POINTER, byref, c_int64, c_size_t, c_void_p, string_at

import numpy as np

from . import _capi
from ._batch import Batch
from ._capi import lib
from ._errors import (ERR_INVALID, ERR_PROTOCOL, ERR_UNSUPPORTED, InvalidArgumentError,
                      TQError, error)

__all__ = ["encode", "one_row", "add_column", "decode", "Into", "from_batch", "FORMATS"]

TORCH, TORCH_LIST, UTF8, PICKLE, NONE = "torch", "torch.list", "utf8", "pickle", ""
FORMATS = (TORCH, TORCH_LIST, UTF8, PICKLE)

MODES = ("wrap", "into")
DEFAULT_MODE = "wrap"  # warm pooled memory: see the measurements in decode's docstring

_BYTES_LIKE = (bytes, bytearray, memoryview)

# ---- optional modules -----------------------------------------------------------------
# TQRDMA_NO_TORCH=1: act as if torch (and so tensordict) were not installed; the tests
# run both ways. Neither is imported before a value needs it: a torch tensor can only come
# from a caller that imported torch, and a get imports it when a field's label says torch.
_NO_TORCH = os.environ.get("TQRDMA_NO_TORCH", "") not in ("", "0")
_absent = set()


def _module(name, load):
    if _NO_TORCH:
        return None
    mod = sys.modules.get(name)
    if mod is None and load and name not in _absent:
        try:
            mod = __import__(name)
        except ImportError:
            _absent.add(name)
    return mod


def _torch(load=False):
    return _module("torch", load)


def _tensordict(load=False):
    return _module("tensordict", load)


# ---- dtypes ---------------------------------------------------------------------------
# numpy dtypes by (kind, itemsize): np.dtype("l") and np.dtype("q") are equal but hash apart
_NP_TO_TQ = {
    ("b", 1): _capi.DTYPE_BOOL, ("u", 1): _capi.DTYPE_U8, ("i", 1): _capi.DTYPE_I8,
    ("i", 2): _capi.DTYPE_I16, ("i", 4): _capi.DTYPE_I32, ("i", 8): _capi.DTYPE_I64,
    ("f", 2): _capi.DTYPE_F16, ("f", 4): _capi.DTYPE_F32, ("f", 8): _capi.DTYPE_F64,
    ("u", 2): _capi.DTYPE_U16, ("u", 4): _capi.DTYPE_U32, ("u", 8): _capi.DTYPE_U64,
    ("c", 8): _capi.DTYPE_C64, ("c", 16): _capi.DTYPE_C128,
}
_TQ_TO_NP = {code: np.dtype(f"{kind}{size}" if kind != "b" else "?")
             for (kind, size), code in _NP_TO_TQ.items()}
_TQ_TO_NP[_capi.DTYPE_BF16] = np.dtype(np.uint16)  # numpy has no bfloat16: its bits
_TQ_TO_NP[_capi.DTYPE_C32] = np.dtype(np.uint32)   # nor complex32
_DTYPE_NAMES = {
    _capi.DTYPE_BOOL: "bool", _capi.DTYPE_U8: "uint8", _capi.DTYPE_I8: "int8",
    _capi.DTYPE_I16: "int16", _capi.DTYPE_I32: "int32", _capi.DTYPE_I64: "int64",
    _capi.DTYPE_F16: "float16", _capi.DTYPE_BF16: "bfloat16", _capi.DTYPE_F32: "float32",
    _capi.DTYPE_F64: "float64", _capi.DTYPE_U16: "uint16", _capi.DTYPE_U32: "uint32",
    _capi.DTYPE_U64: "uint64", _capi.DTYPE_C32: "complex32", _capi.DTYPE_C64: "complex64",
    _capi.DTYPE_C128: "complex128",
}
_torch_maps = None


def _torch_dtypes():
    """({torch dtype: code}, {code: torch dtype}) for the dtypes this torch has."""
    global _torch_maps
    if _torch_maps is None:
        torch = _torch(load=True)
        to_tq = {}
        for code, name in _DTYPE_NAMES.items():
            dtype = getattr(torch, name, None)  # uint16/32/64: torch 2.3 and later
            if isinstance(dtype, torch.dtype):
                to_tq[dtype] = code
        _torch_maps = to_tq, {code: dtype for dtype, code in to_tq.items()}
    return _torch_maps


def _code(code, where, dtype):
    if not _capi.has_dtype(code):
        raise TypeError(f"{where}: dtype {dtype} needs a newer libtqrdma "
                        f"(this one has no {_DTYPE_NAMES[code]})")
    return code


def _supported():
    return ", ".join(_DTYPE_NAMES[c] for c in sorted(_DTYPE_NAMES) if _capi.has_dtype(c))


def _np_code(a, where):
    code = _NP_TO_TQ.get((a.dtype.kind, a.dtype.itemsize))
    if code is None or a.dtype.fields is not None:
        hint = " (a list of str is stored as text, a list of objects pickled)" \
            if a.dtype.kind in "OUS" else ""
        raise TypeError(f"{where}: dtype {a.dtype} is not supported{hint}; "
                        f"supported: {_supported()}")
    return _code(code, where, a.dtype)


def _torch_code(t, where):
    code = _torch_dtypes()[0].get(t.dtype)
    if code is None:
        raise TypeError(f"{where}: dtype {t.dtype} is not supported; "
                        f"supported: {_supported()}")
    return _code(code, where, t.dtype)


def _dtype_name(code, name):
    if code not in _DTYPE_NAMES:
        raise TQError(ERR_UNSUPPORTED, f"field {name!r}: unknown dtype {code} (a newer "
                                       "writer?); read it with a newer tqrdma")
    return _DTYPE_NAMES[code]


def _np_dtype(code, name):
    _dtype_name(code, name)
    return _TQ_TO_NP[code]


def _torch_dtype(code, name):
    dtype = _torch_dtypes()[1].get(code)
    if dtype is None:
        raise TypeError(f"field {name!r}: {_dtype_name(code, name)} has no torch dtype in "
                        f"torch {_torch().__version__}; read it with to='numpy'")
    return dtype


# ---- writing --------------------------------------------------------------------------
def encode(fields, rows, what="rows"):
    """A Batch of `rows` rows over the columns of fields (a dict, or a TensorDict whose
    batch_size[0] is rows); what names the rows in messages ("keys" for a kv put). Close it
    (or use it in a with-block) once the put returned. Raises TypeError (a value of a type
    or dtype that cannot be stored) or InvalidArgumentError (a bad shape, name or row
    count), naming the field; nothing is left behind on error."""
    td = _tensordict()
    if td is not None and isinstance(fields, td.TensorDictBase):
        if tuple(fields.batch_size[:1]) != (rows,):
            raise InvalidArgumentError(ERR_INVALID, f"fields: a TensorDict of batch_size "
                                       f"{list(fields.batch_size)} for {rows} {what}")
        fields = dict(fields.items())
    elif not isinstance(fields, dict):
        raise TypeError(f"fields: a dict or TensorDict of columns, not {type(fields).__name__}")
    if not fields or len(fields) > _capi.MAX_FIELDS:
        raise InvalidArgumentError(ERR_INVALID, f"fields: {len(fields)} of them; a batch has "
                                                f"1 to {_capi.MAX_FIELDS}")
    batch = Batch(rows)
    try:
        for name, value in fields.items():
            add_column(batch, name, value, what)
    except BaseException:
        batch.close()
        raise
    return batch


def add_column(batch, name, value, what="rows"):
    """Add one column to batch (see encode)."""
    _check_name(name)
    rows = batch.rows
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_nested:
            return _add_torch_nested(batch, name, value, rows, what)
        return _add_dense(batch, name, *_torch_cell(value, name), rows, what, TORCH)
    if _is_non_tensor(value):
        value = value.tolist()  # tensordict's NonTensorData/NonTensorStack: their objects
    elif _tensordict() is not None and isinstance(value, _tensordict().TensorDictBase):
        raise TypeError(f"field {name!r}: a TensorDict inside a TensorDict; put "
                        "td.flatten_keys('.')")
    elif isinstance(value, (str, *_BYTES_LIKE)):
        raise TypeError(f"field {name!r}: a {type(value).__name__} is one value; a column is "
                        f"a list of one per row")
    if not isinstance(value, (list, tuple)):
        return _add_dense(batch, name, *_np_cell(value, name), rows, what, NONE)
    if len(value) != rows:
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: {len(value)} rows for "
                                                f"{rows} {what} (one row each)")
    kind = _list_kind(value, name, torch)
    if kind == "bytes":
        return _add_bytes(batch, name, value, NONE)
    if kind == "str":
        return _add_bytes(batch, name, [_utf8(s, name, i) for i, s in enumerate(value)], UTF8)
    if kind == "object":
        return _add_bytes(batch, name, [_pickle(o, name, i) for i, o in enumerate(value)],
                          PICKLE)
    if kind == "tensor":
        cells = [_torch_cell(t, name, i) for i, t in enumerate(value)]
        return _add_nested(batch, name, cells, TORCH_LIST)
    return _add_nested(batch, name, [_np_cell(a, name, i) for i, a in enumerate(value)], NONE)


def one_row(name, value):
    """One key's value as a column of one row (kv_put): a tensor or array gains a first
    dimension (a view); bytes, a str or any other object is that row; a number is a 0-d
    array's row."""
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_nested:
            raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: a nested tensor holds "
                                       "many rows; put it with kv_batch_put")
        return value.unsqueeze(0)
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUSV":
        return value.reshape((1,) + value.shape)
    if isinstance(value, (bool, int, float, complex, np.generic)) and not isinstance(
            value, (np.str_, np.bytes_, np.void)):
        return np.asarray(value).reshape(1)
    return [value]


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"fields: names are str, not {type(name).__name__}")
    if "\0" in name:  # the library takes C strings: the name would end at the NUL
        raise InvalidArgumentError(ERR_INVALID, f"fields: name {name!r} has a NUL character "
                                                "inside")


def _is_non_tensor(value):
    td = _tensordict()
    return td is not None and type(value).__name__ in ("NonTensorData", "NonTensorStack") \
        and hasattr(value, "tolist")


def _list_kind(value, name, torch):
    """What a list column's rows are: bytes, str, tensor, array or object. Tensors and arrays
    are rows of a nested field and cannot be mixed with anything else."""
    def kind(v):
        if isinstance(v, _BYTES_LIKE):
            return "bytes"
        if isinstance(v, str):
            return "str"
        if torch is not None and isinstance(v, torch.Tensor):
            return "tensor"
        if isinstance(v, np.ndarray):
            return "array" if v.dtype.kind not in "OUSV" else "object"
        return "object"
    kinds = [kind(v) for v in value]
    first = kinds[0]
    for i, k in enumerate(kinds):
        if k != first and ({k, first} & {"tensor", "array"}):
            raise TypeError(f"field {name!r}: row {i} is {_what(value[i])}, row 0 "
                            f"{_what(value[0])}: a list of tensors or arrays has only those")
    return first if len(set(kinds)) == 1 else "object"


def _what(v):
    return f"a {type(v).__module__}.{type(v).__name__}"


def _row_name(name, row):
    return f"field {name!r}" if row is None else f"field {name!r} row {row}"


def _np_cell(value, name, row=None):
    """value as a C-contiguous, native-endian array and its dtype code; copies only if it must."""
    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001: any failure to read the value is the caller's
        raise TypeError(f"{_row_name(name, row)}: not an array ({e})") from None
    if a.dtype.kind == "O" and not isinstance(value, np.ndarray):
        raise TypeError(f"{_row_name(name, row)}: {_what(value)} is not an array of numbers")
    code = _np_code(a, _row_name(name, row))
    if not a.dtype.isnative or not a.flags.c_contiguous:
        a = _copied(lambda: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")), a.nbytes,
                    name, row)
    return a, code, a.ctypes.data, a.shape


def _torch_cell(t, name, row=None):
    """t as a contiguous CPU tensor with nothing lazy left, and its dtype code."""
    torch = _torch()
    if t.layout != torch.strided:
        raise TypeError(f"{_row_name(name, row)}: a {t.layout} tensor is not supported; "
                        "send t.to_dense()")
    code = _torch_code(t, _row_name(name, row))
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu":  # a copy, as TransferQueue makes; reads give CPU tensors
        t = _copied(t.cpu, nbytes, name, row)
    if t.is_conj():
        t = _copied(t.resolve_conj, nbytes, name, row)
    if t.is_neg():
        t = _copied(t.resolve_neg, nbytes, name, row)
    if not t.is_contiguous():
        t = _copied(lambda: _contiguous(t), nbytes, name, row)
    return t, code, t.data_ptr(), tuple(t.shape)


def _contiguous(t):
    """t.contiguous(), the copy made by numpy where it can: Debian's torch 1.13 copied a
    strided 64 MB tensor in 190 ms here, numpy in 15 ms."""
    torch = _torch()
    bits = {torch.bfloat16: torch.int16, getattr(torch, "complex32", None): torch.int32}
    as_bits = bits.get(t.dtype)
    try:
        src = (t.detach().view(as_bits) if as_bits else t.detach()).numpy()
    except (TypeError, RuntimeError):  # a dtype numpy lacks
        return t.contiguous()
    out = torch.from_numpy(np.ascontiguousarray(src))
    return out.view(t.dtype) if as_bits else out


def _copied(copy, nbytes, name, row):
    try:
        return copy()
    except (MemoryError, RuntimeError, ValueError) as e:
        raise InvalidArgumentError(ERR_INVALID, f"{_row_name(name, row)}: cannot copy its "
                                   f"{nbytes} bytes to contiguous CPU memory: {e}") from None


def _add_dense(batch, name, keep, code, ptr, shape, rows, what, label):
    if not shape or shape[0] != rows:
        first = shape[0] if shape else "none"
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: first dimension {first} for "
                                                f"{rows} {what} (one row each)")
    if len(shape) - 1 > _capi.MAX_NDIM:
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: rows of {len(shape) - 1} "
                                                f"dimensions (at most {_capi.MAX_NDIM})")
    batch.add_tensor(name, code, shape[1:], ptr, keep)
    if label:
        batch.set_format(name, label)


def _add_nested(batch, name, cells, label):
    keeps, codes, ptrs, shapes = zip(*cells)
    ndim = len(shapes[0])
    for i, (code, shape) in enumerate(zip(codes, shapes)):
        if code != codes[0] or len(shape) != ndim:
            raise InvalidArgumentError(
                ERR_INVALID, f"field {name!r}: row {i} is {_DTYPE_NAMES[code]} of {len(shape)} "
                f"dimensions, row 0 {_DTYPE_NAMES[codes[0]]} of {ndim}: rows share dtype and "
                "number of dimensions")
    if ndim > _capi.MAX_NDIM:
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: rows of {ndim} dimensions "
                                                f"(at most {_capi.MAX_NDIM})")
    batch.add_nested(name, codes[0], ndim, shapes, ptrs, keeps)
    if label:
        batch.set_format(name, label)


def _add_torch_nested(batch, name, t, rows, what):
    parts = t.unbind()  # views into the nested tensor's buffer: no copy
    if len(parts) != rows:
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r}: a nested tensor of "
                                   f"{len(parts)} rows for {rows} {what} (one row each)")
    # the label of a dense tensor: kv_put's rows and kv_batch_put's nested tensors mix
    _add_nested(batch, name, [_torch_cell(p, name, i) for i, p in enumerate(parts)], TORCH)
    batch._keep.append(t)


def _add_bytes(batch, name, values, label):
    views = []
    for i, v in enumerate(values):
        try:
            views.append(np.frombuffer(v, dtype=np.uint8))  # a view, not a copy
        except (ValueError, TypeError):  # a non-contiguous memoryview: its bytes
            views.append(np.frombuffer(bytes(v), dtype=np.uint8))
    batch.add_bytes(name, [v.ctypes.data for v in views], [v.nbytes for v in views], views)
    if label:
        batch.set_format(name, label)


def _utf8(s, name, row):
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgumentError(ERR_INVALID, f"field {name!r} row {row}: not UTF-8 "
                                                f"encodable: {e}") from None


def _pickle(obj, name, row):
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001: pickle raises many kinds
        raise TypeError(f"field {name!r} row {row}: {_what(obj)} cannot be pickled: "
                        f"{e}") from None


# ---- reading --------------------------------------------------------------------------
class _Field:
    """What a meta or a batch says of one field."""
    __slots__ = ("name", "kind", "dtype", "row_shape", "bytes", "cells", "label")

    def __init__(self, name, info, label):
        self.name, self.kind, self.dtype = name, info.kind, info.dtype
        self.row_shape = tuple(info.row_shape[:info.ndim])
        self.bytes, self.label, self.cells = info.bytes, label, None


def _cells(get_row, name, rows, ndim):
    """[(bytes, shape)] of each row, from tq_meta_row or tq_batch_row."""
    size, shape = c_size_t(), POINTER(c_int64)()
    out = []
    for r in range(rows):
        get_row(name, r, byref(size), byref(shape))
        out.append((size.value, tuple(shape[d] for d in range(ndim))))
    return out


def _meta_fields(meta, fields):
    rows = lib.tq_meta_rows(meta)
    if fields is None:
        fields = [lib.tq_meta_field_name(meta, i).decode()
                  for i in range(lib.tq_meta_num_fields(meta))]
    out = []
    for name in fields:
        _check_name(name)
        info = _capi.FieldInfo()
        rc = lib.tq_meta_field(meta, name.encode(), byref(info))
        if rc < 0:
            raise error(rc, f"field {name!r}", "the meta has no such field")
        label = lib.tq_meta_field_format(meta, name.encode()) \
            if _capi.has("tq_meta_field_format") else b""
        f = _Field(name, info, (label or b"").decode())
        if f.kind != _capi.FIELD_TENSOR:

            def get_row(n, r, size_p, shape_p):
                rc = lib.tq_meta_row(meta, n, r, size_p, shape_p)
                if rc < 0:
                    raise error(rc, f"field {name!r} row {r}")
            f.cells = _cells(get_row, name.encode(), rows, info.ndim)
        out.append(f)
    return rows, out


def _family(f, to, td_mode):
    """"torch" or "numpy": what a numeric field comes back as."""
    if f.kind == _capi.FIELD_BYTES:
        return None
    if to is None:
        to = "torch" if td_mode or (f.label.startswith("torch") and _torch(load=True)) \
            else "numpy"
    return to


def _resolve(to, tensordict):
    if to not in (None, "torch", "numpy"):
        raise ValueError(f"to: None, 'torch' or 'numpy', not {to!r}")
    if to == "torch" and _torch(load=True) is None:
        raise ImportError("to='torch': torch is not installed"
                          + (" (TQRDMA_NO_TORCH is set)" if _NO_TORCH else ""))
    if tensordict is None:
        tensordict = to != "numpy" and _tensordict(load=True) is not None
    elif tensordict and _tensordict(load=True) is None:
        raise ImportError("tensordict=True: tensordict is not installed")
    if tensordict and to == "numpy":
        raise ValueError("a TensorDict holds torch tensors: not with to='numpy'")
    return to, bool(tensordict)


def decode(client, meta, fields=None, *, to=None, tensordict=None, mode=None, unpickle=True):
    """Read the rows of meta (from tq_get_meta, tq_kv_get_meta) as {field: value}, a
    TensorDict where tensordict imports (see the module's docstring).

    fields: the names to read (None: every field of the meta). to: None (what the writer
    wrote), "torch" or "numpy". tensordict: None (a TensorDict if tensordict imports and to
    is not "numpy"), True or False. unpickle=False returns a pickled field's bytes.

    mode "wrap" (the default): tq_get_data reads into the library's receive buffers, which
    are pooled, stay mapped (and registered, on RDMA hardware), and the values are views
    of them. mode "into": tq_get_data_into reads into new memory, the values' own, and
    pays a page fault for each of its pages. Measured with tests/bench_values.py, embedded,
    1024 rows x 9 fields x 8192 float32 (302 MB), on a loaded 2-core VM, medians of 5 in
    each of 6 runs: wrap 8-17 GB/s (memcpy into touched memory: 9-16), into 0.8-3.7 GB/s
    (memcpy into fresh np.empty memory: 1.5-2.6); the copy kv_batch_get made: 0.9-2.5.
    """
    mode = DEFAULT_MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode: one of {MODES}, not {mode!r}")
    to, td_mode = _resolve(to, tensordict)
    if mode == "wrap":
        if fields is not None:
            raise ValueError("mode='wrap' reads the meta's fields: select them in the meta, "
                             "or use mode='into'")
        handle = c_void_p()
        _check_client(client, lib.tq_get_data(client, meta, byref(handle)), "get_data")
        return _from_handle(handle, take=True, to=to, td_mode=td_mode, unpickle=unpickle)
    with Into(meta, fields, to=to, tensordict=tensordict, unpickle=unpickle) as dst:
        _check_client(client, lib.tq_get_data_into(client, meta, dst.handle), "get_data_into")
        return dst.finish()


class Into:
    """decode(mode="into") in two steps, for the non-blocking read: new memory for the rows
    of meta, as a batch to read into (``handle``), and finish() -> the values once read.

        with Into(meta) as dst:
            tq_get_data_into_nb(client, meta, dst.handle, &request); ... wait ...
            values = dst.finish()

    Arguments as decode's. close() (or the with-block's end) frees the batch, not the
    memory: that is the values'. Keep it open until the read is complete."""

    def __init__(self, meta, fields=None, *, to=None, tensordict=None, unpickle=True):
        if not _capi.has("tq_get_data_into"):
            raise TQError(ERR_UNSUPPORTED, "mode='into' needs a libtqrdma with "
                                           "tq_get_data_into")
        to, self._td_mode = _resolve(to, tensordict)
        self._unpickle = unpickle
        self.rows, specs = _meta_fields(meta, fields)
        self._batch = Batch(self.rows)
        try:
            self._build = [(f, _alloc(self._batch, f, self.rows, _family(f, to, self._td_mode)))
                           for f in specs]
        except BaseException:
            self._batch.close()
            raise
        self.handle = self._batch.handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._batch.close()
        self.handle = None

    def finish(self):
        """The values read (call once the read succeeded); closes the batch."""
        out = {f.name: finish(self._unpickle) for f, finish in self._build}
        self.close()
        return _container(out, self.rows, self._td_mode)


def from_batch(handle, *, take=False, to=None, tensordict=None, unpickle=True):
    """A batch that a get returned (tq_kv_batch_get, tq_get_data, tq_request_take_batch) as
    {field: value}, or a TensorDict (as decode). take=False copies the values out and the
    batch stays the caller's; take=True wraps its memory (no copy) and takes it: it is
    destroyed when the last value over it is gone (at once if none is)."""
    to, td_mode = _resolve(to, tensordict)
    return _from_handle(handle, take=take, to=to, td_mode=td_mode, unpickle=unpickle)


def _check_client(client, rc, what):
    if rc < 0:
        raise error(rc, what, lib.tq_last_error(client).decode(errors="replace"))


def _container(out, rows, td_mode):
    if not td_mode:
        return out
    td = _tensordict(load=True)
    torch = _torch()
    return td.TensorDict({k: v if isinstance(v, torch.Tensor) else td.NonTensorStack(*v)
                          for k, v in out.items()}, batch_size=[rows])


# -- into: new memory that the library reads into
def _alloc(dst, f, rows, family):
    """Add f to dst over new memory; returns finish(unpickle) -> the field's value."""
    name = f.name
    if f.kind == _capi.FIELD_BYTES:
        buf = np.empty(f.bytes, np.uint8)
        offsets = _offsets(f.cells)
        dst.add_bytes(name, [buf.ctypes.data + o for o in offsets], [n for n, _ in f.cells],
                      buf)
        view = memoryview(buf)
        return lambda unpickle: _blobs(f, [view[o:o + n] for o, (n, _) in
                                           zip(offsets, f.cells)], unpickle)
    if f.kind == _capi.FIELD_TENSOR:
        column, ptr = _empty(family, f, (rows,) + f.row_shape)
        dst.add_tensor(name, f.dtype, f.row_shape, ptr, column)
        return lambda unpickle: column
    size = lib.tq_dtype_size(f.dtype)  # numpy's bits of bfloat16/complex32 are as wide
    flat, ptr = _empty(family, f, (f.bytes // size,))
    parts, ptrs, at = [], [], 0
    for n, shape in f.cells:
        parts.append(flat[at // size:(at + n) // size].reshape(shape))
        ptrs.append(ptr + at)
        at += n
    dst.add_nested(name, f.dtype, len(f.row_shape), [s for _, s in f.cells], ptrs, flat)
    return lambda unpickle: _nested(f, family, parts)


def _empty(family, f, shape):
    """New memory for a value of f's dtype and shape, and its address. numpy allocates it for
    torch too: numpy asks for transparent huge pages (madvise) where torch 1.13 does not, and
    first touching torch.empty's 302 MB took 1.3 to 3 s here, numpy's 0.1 to 0.3 s."""
    raw = np.empty(lib.tq_dtype_size(f.dtype) * int(np.prod(shape, dtype=np.int64)), np.uint8)
    return _typed(raw, family, f, shape, copy=False), raw.ctypes.data


def _offsets(cells):
    out, at = [], 0
    for n, _ in cells:
        out.append(at)
        at += n
    return out


# -- wrap: the library's memory, kept alive by the values over it
class _Owner:
    """A batch a get returned, destroyed when the last array over its memory is gone."""

    def __init__(self, handle):
        self.handle = handle
        weakref.finalize(self, lib.tq_batch_destroy, handle)


class _Memory:
    """size bytes at ptr as numpy sees them (__array_interface__); holds what keeps them valid."""

    def __init__(self, owner, ptr, size):
        self.owner = owner
        self.__array_interface__ = {"version": 3, "shape": (size,), "typestr": "|u1",
                                    "data": (ptr, False)}


def _bytes_at(owner, ptr, size):
    if not size:
        return np.empty(0, np.uint8)
    return np.asarray(_Memory(owner, ptr, size))


def _typed(raw, family, f, shape, copy):
    """raw (uint8 over the library's memory) as a value of f's dtype and shape; copy: in new
    memory (numpy copies: torch 1.13's clone ran at 0.15 GB/s here, numpy's at memcpy speed)."""
    if copy and raw.nbytes:
        raw = raw.copy()
    if family == "torch":
        torch = _torch()
        dtype = _torch_dtype(f.dtype, f.name)
        if not raw.nbytes:
            return torch.empty(shape, dtype=dtype)
        return torch.from_numpy(raw).view(dtype).view(shape)
    if not raw.nbytes:
        return np.empty(shape, _np_dtype(f.dtype, f.name))
    return raw.view(_np_dtype(f.dtype, f.name)).reshape(shape)


def _from_handle(handle, take, to, td_mode, unpickle):
    owner = _Owner(handle) if take else None
    rows = lib.tq_batch_rows(handle)
    out = {}
    for i in range(lib.tq_batch_num_fields(handle)):
        bname = lib.tq_batch_field_name(handle, i)
        name = bname.decode()
        info = _capi.FieldInfo()
        rc = lib.tq_batch_field(handle, bname, byref(info))
        if rc < 0:
            raise error(rc, f"field {name!r}")
        if _capi.has("tq_batch_field_format"):
            label = (lib.tq_batch_field_format(handle, bname) or b"").decode()
        else:
            label = ""
        f = _Field(name, info, label)
        family = _family(f, to, td_mode)
        copy = not take
        if f.kind == _capi.FIELD_TENSOR:
            raw = _bytes_at(owner, info.data, info.bytes)
            want = (rows,) + f.row_shape
            _expect(f, raw.nbytes, want)
            out[name] = _typed(raw, family, f, want, copy)
            continue
        parts = []
        size, shape = c_size_t(), POINTER(c_int64)()
        for r in range(rows):
            ptr = lib.tq_batch_row(handle, bname, r, byref(size), byref(shape))
            if f.kind == _capi.FIELD_BYTES:
                parts.append(string_at(ptr, size.value))
                continue
            raw = _bytes_at(owner, ptr, size.value)
            cell = tuple(shape[d] for d in range(info.ndim))
            _expect(f, size.value, cell, r)
            parts.append(_typed(raw, family, f, cell, copy))
        out[name] = _blobs(f, parts, unpickle) if f.kind == _capi.FIELD_BYTES \
            else _nested(f, family, parts)
    return _container(out, rows, td_mode)


def _expect(f, nbytes, shape, row=None):
    want = lib.tq_dtype_size(f.dtype) * int(np.prod(shape, dtype=np.int64))
    if nbytes != want:
        raise TQError(ERR_PROTOCOL, f"{_row_name(f.name, row)}: {nbytes} bytes for shape "
                                    f"{shape} of {_DTYPE_NAMES.get(f.dtype, f.dtype)}")


# -- the values
def _blobs(f, views, unpickle):
    if f.label == UTF8:
        return [_unlabel(f, r, lambda: bytes(v).decode("utf-8")) for r, v in enumerate(views)]
    if f.label == PICKLE and unpickle:
        return [_unlabel(f, r, lambda: pickle.loads(v)) for r, v in enumerate(views)]
    return [bytes(v) for v in views]


def _unlabel(f, row, load):
    try:
        return load()
    except Exception as e:  # noqa: BLE001: a row that is not what its label says
        raise TQError(ERR_PROTOCOL, f"field {f.name!r} row {row}: not {f.label} ({e}); was it "
                      "written as bytes before the field had its label? "
                      + ("unpickle=False reads the bytes" if f.label == PICKLE else "")) from None


def _nested(f, family, parts):
    """The rows of a nested field: a nested tensor where torch wrote one, else a list."""
    if family != "torch" or f.label != TORCH:
        return parts
    torch = _torch()
    if not parts[0].dim():
        return torch.stack(parts)  # rows of scalars: a nested tensor cannot hold them
    jagged = getattr(torch, "jagged", None)  # torch 2: jagged first, as TransferQueue reads
    if jagged is not None:
        try:
            return torch.nested.as_nested_tensor(parts, layout=jagged)
        except (RuntimeError, TypeError, ValueError):
            pass  # rows that differ beyond their first dimension: strided, as below
    # torch 1.13 builds a nested tensor only by copying the rows into a buffer of its own
    # (as_nested_tensor copies once; nested_tensor clones each row first, 30x slower here)
    return torch.nested.as_nested_tensor(parts)


# ---- what a BatchMeta records of its fields (TransferQueue's field_schema) ------------
def is_tensordict(value):
    td = _tensordict()
    return td is not None and isinstance(value, td.TensorDictBase)


def rows_of(fields, what):
    """How many rows a dict or TensorDict of columns has (every column must agree)."""
    if is_tensordict(fields):
        return int(fields.batch_size[0])
    if not isinstance(fields, dict):
        raise TypeError(f"{what}: fields is a dict or TensorDict of columns, not "
                        f"{type(fields).__name__}")
    if not fields:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: fields: at least one is required")
    counts = {name: _column_rows(name, value) for name, value in fields.items()}
    first = next(iter(counts.values()))
    for name, n in counts.items():
        if n != first:
            raise InvalidArgumentError(ERR_INVALID, f"{what}: field {name!r} has {n} rows, "
                                       f"{next(iter(counts))!r} {first}")
    return first


def _column_rows(name, value):
    if isinstance(value, (str, *_BYTES_LIKE)):
        raise TypeError(f"field {name!r}: a {type(value).__name__} is one value; a column is "
                        f"a list of one per row")
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return value.size(0) if value.dim() else 0
    if _is_non_tensor(value):
        return len(value.tolist())
    if isinstance(value, (list, tuple)):
        return len(value)
    shape = np.shape(value)
    return shape[0] if shape else 0


def plain_columns(fields):
    """The columns as a plain dict (TransferQueue's data_parser takes one)."""
    return dict(fields.items()) if is_tensordict(fields) else fields


def field_schema(data, rows, what):
    """{field: {"dtype", "shape", "is_nested", "is_non_tensor"[, "per_sample_shapes"]}} of
    columns as a writer gives them."""
    if rows_of(data, what) != rows:
        raise ValueError(f"{what}: {rows_of(data, what)} rows for {rows} samples")
    torch = _torch()
    out = {}
    for name, value in plain_columns(data).items():
        if _is_non_tensor(value):
            value = value.tolist()
        if torch is not None and isinstance(value, torch.Tensor):
            if value.is_nested:
                shapes = [tuple(t.shape) for t in value.unbind()]
                out[name] = _schema(value.dtype, None, True, False, shapes)
            else:
                out[name] = _schema(value.dtype, tuple(value.shape[1:]), False, False)
        elif isinstance(value, (list, tuple)):
            numeric = [v for v in value if hasattr(v, "dtype") and hasattr(v, "shape")]
            if numeric and len(numeric) == len(value):
                out[name] = _schema(numeric[0].dtype, None, True, False,
                                    [tuple(v.shape) for v in value])
            else:
                out[name] = _schema(None, None, False, True)
        else:
            a = np.asarray(value)
            out[name] = _schema(a.dtype, tuple(a.shape[1:]), False, False)
    return out


def _schema(dtype, shape, nested, non_tensor, per_sample_shapes=None):
    s = {"dtype": dtype, "shape": shape, "is_nested": nested, "is_non_tensor": non_tensor}
    if per_sample_shapes is not None:
        s["per_sample_shapes"] = per_sample_shapes
    return s


def meta_schema(meta, to=None):
    """field_schema of a tq_meta's fields, dtypes as the reader will get them (torch or
    numpy, as decode chooses with to)."""
    to, td_mode = _resolve(to, None)
    rows, fields = _meta_fields(meta, None)
    out = {}
    for f in fields:
        if f.kind == _capi.FIELD_BYTES:
            out[f.name] = _schema(None, None, False, True)
            continue
        dtype = _torch_dtype(f.dtype, f.name) if _family(f, to, td_mode) == "torch" \
            else _np_dtype(f.dtype, f.name)
        if f.kind == _capi.FIELD_TENSOR:
            out[f.name] = _schema(dtype, f.row_shape, False, False)
        else:
            out[f.name] = _schema(dtype, None, True, False, [shape for _, shape in f.cells])
    return out


def index_and_status(status):
    """TransferQueue's (global indexes, status) pair of a status array: tensors where
    torch imports, else arrays."""
    index = np.arange(len(status), dtype=np.int64)
    torch = _torch(load=True)
    if torch is None:
        return index, status
    return torch.from_numpy(index), torch.from_numpy(status)


def empty():
    """What a get of no rows returns."""
    td = _tensordict(load=True)
    if td is not None:
        return td.TensorDict({}, batch_size=[0])
    return {}
