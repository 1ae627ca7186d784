"""Find and load libtqrdma, and declare the C functions the package calls."""
import ctypes
import ctypes.util
import os

from ctypes import POINTER, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_void_p

MAX_NDIM = 8
FIELD_TENSOR, FIELD_NESTED, FIELD_BYTES = range(3)
(DTYPE_BOOL, DTYPE_U8, DTYPE_I8, DTYPE_I16, DTYPE_I32, DTYPE_I64, DTYPE_F16,
 DTYPE_BF16, DTYPE_F32, DTYPE_F64, DTYPE_BYTES) = range(11)


class FieldInfo(ctypes.Structure):
    """tq_field_info_t."""
    _fields_ = [("kind", c_int), ("dtype", c_int), ("ndim", c_uint32),
                ("row_shape", c_int64 * MAX_NDIM), ("data", c_void_p), ("bytes", c_size_t)]


def _candidates():
    """Where the library may be, best first: the environment, the one shipped inside the
    package (pip), the install's record, the linker."""
    env = os.environ.get("TQRDMA_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    shipped = os.path.join(here, "libtqrdma.so.0")  # built into the package by setup.py
    if os.path.exists(shipped):
        yield shipped
    try:
        # cmake --install writes LIBDIR relative to this package; setup.py, built against
        # an installed library, writes its absolute directory and file (LIBRARY)
        from . import _libdir
        yield getattr(_libdir, "LIBRARY", None) or os.path.normpath(
            os.path.join(here, _libdir.LIBDIR, "libtqrdma.so.0"))
    except ImportError:
        pass
    found = ctypes.util.find_library("tqrdma")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(str(e))
    raise ImportError("tqrdma: cannot load libtqrdma (set TQRDMA_LIBRARY to its path); tried: "
                      + ("; ".join(tried) or "nothing found"))


lib, path = _load()

_client_p, _batch_p, _entries_p = c_void_p, c_void_p, c_void_p
_strings = POINTER(c_char_p)
_PROTOTYPES = {
    "tq_status_string": (c_char_p, [c_int]),
    "tq_last_error": (c_char_p, [_client_p]),
    "tq_open": (c_int, [c_char_p, POINTER(_client_p)]),
    "tq_close": (None, [_client_p]),
    "tq_batch_create": (c_int, [c_uint32, POINTER(_batch_p)]),
    "tq_batch_destroy": (None, [_batch_p]),
    "tq_batch_add_tensor": (c_int, [_batch_p, c_char_p, c_int, c_uint32, POINTER(c_int64),
                                    c_void_p]),
    "tq_batch_add_nested": (c_int, [_batch_p, c_char_p, c_int, c_uint32, POINTER(c_int64),
                                    POINTER(c_void_p)]),
    "tq_batch_add_bytes": (c_int, [_batch_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t)]),
    "tq_batch_rows": (c_uint32, [_batch_p]),
    "tq_batch_num_fields": (c_uint32, [_batch_p]),
    "tq_batch_field_name": (c_char_p, [_batch_p, c_uint32]),
    "tq_batch_field": (c_int, [_batch_p, c_char_p, POINTER(FieldInfo)]),
    "tq_batch_row": (c_void_p, [_batch_p, c_char_p, c_uint32, POINTER(c_size_t),
                                POINTER(POINTER(c_int64))]),
    "tq_kv_batch_put": (c_int, [_client_p, c_char_p, c_size_t, _strings, _batch_p, _strings]),
    "tq_kv_batch_get": (c_int, [_client_p, c_char_p, c_size_t, _strings, c_size_t, _strings,
                                POINTER(_batch_p)]),
    "tq_kv_list": (c_int, [_client_p, c_char_p, POINTER(_entries_p)]),
    "tq_kv_list_page": (c_int, [_client_p, c_char_p, c_char_p, c_size_t, POINTER(_entries_p)]),
    "tq_kv_entries_cursor": (c_char_p, [_entries_p]),
    "tq_kv_entries_size": (c_size_t, [_entries_p]),
    "tq_kv_entries_partition": (c_char_p, [_entries_p, c_size_t]),
    "tq_kv_entries_key": (c_char_p, [_entries_p, c_size_t]),
    "tq_kv_entries_tag": (c_char_p, [_entries_p, c_size_t]),
    "tq_kv_entries_free": (None, [_entries_p]),
    "tq_kv_clear": (c_int, [_client_p, c_char_p, c_size_t, _strings]),
}
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype, _fn.argtypes = _restype, _argtypes


def strings(values):
    """A C array of NUL-terminated UTF-8 strings (None stays NULL)."""
    return (c_char_p * len(values))(*[None if v is None else v.encode() for v in values])
