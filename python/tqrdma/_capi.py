"""Find and load libtqrdma, and declare the C functions the package calls."""
import ctypes
import ctypes.util
import os

from ctypes import POINTER, c_char_p, c_int, c_int64, c_size_t, c_uint8, c_uint32, c_void_p

MAX_NDIM = 8
MAX_ROWS = 1 << 20  # rows of one batch (TQ_WIRE_MAX_ROWS)
MAX_FIELDS = 256    # fields of one batch (TQ_WIRE_MAX_FIELDS)
FETCH_READY, FETCH_FORCE, FETCH_INSERT = range(3)  # tq_fetch_args_t.mode
FIELD_TENSOR, FIELD_NESTED, FIELD_BYTES = range(3)
# tq_dtype_t, as include/tq/tq.h numbers them (part of the ABI); U16 and after are newer:
# has_dtype() tells whether the loaded library knows one
(DTYPE_BOOL, DTYPE_U8, DTYPE_I8, DTYPE_I16, DTYPE_I32, DTYPE_I64, DTYPE_F16,
 DTYPE_BF16, DTYPE_F32, DTYPE_F64, DTYPE_BYTES, DTYPE_U16, DTYPE_U32, DTYPE_U64,
 DTYPE_C32, DTYPE_C64, DTYPE_C128) = range(17)


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

_client_p, _batch_p, _entries_p, _meta_p, _request_p = (c_void_p,) * 5
_strings = POINTER(c_char_p)
_PROTOTYPES = {
    "tq_status_string": (c_char_p, [c_int]),
    "tq_last_error": (c_char_p, [_client_p]),
    "tq_open": (c_int, [c_char_p, POINTER(_client_p)]),
    "tq_close": (None, [_client_p]),
    "tq_controller_address": (c_char_p, [_client_p]),
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
    "tq_dtype_size": (c_size_t, [c_int]),
    "tq_put": (c_int, [_client_p, c_char_p, _batch_p, POINTER(c_int64), POINTER(c_int64)]),
    "tq_get_data": (c_int, [_client_p, _meta_p, POINTER(_batch_p)]),
    "tq_meta_rows": (c_uint32, [_meta_p]),
    "tq_meta_indexes": (POINTER(c_int64), [_meta_p]),
    "tq_meta_free": (None, [_meta_p]),
    "tq_batch_set_format": (c_int, [_batch_p, c_char_p, c_char_p]),
    "tq_batch_field_format": (c_char_p, [_batch_p, c_char_p]),
    "tq_meta_num_fields": (c_uint32, [_meta_p]),
    "tq_meta_field_name": (c_char_p, [_meta_p, c_uint32]),
    "tq_meta_field": (c_int, [_meta_p, c_char_p, POINTER(FieldInfo)]),
    "tq_meta_row": (c_int, [_meta_p, c_char_p, c_uint32, POINTER(c_size_t),
                            POINTER(POINTER(c_int64))]),
    "tq_meta_field_format": (c_char_p, [_meta_p, c_char_p]),
    "tq_meta_partition": (c_char_p, [_meta_p]),
    "tq_meta_has_cell": (c_int, [_meta_p, c_char_p, c_uint32]),
    "tq_meta_custom": (c_char_p, [_meta_p, c_uint32]),
    "tq_meta_key": (c_char_p, [_meta_p, c_uint32]),
    "tq_get_meta": (c_int, [_client_p, c_void_p, POINTER(_meta_p)]),
    "tq_get_meta_rows": (c_int, [_client_p, c_char_p, c_size_t, POINTER(c_int64), c_size_t,
                                 _strings, POINTER(_meta_p)]),
    "tq_get_data_into": (c_int, [_client_p, _meta_p, _batch_p]),
    "tq_kv_get_meta": (c_int, [_client_p, c_char_p, c_size_t, _strings, c_size_t, _strings,
                               POINTER(_meta_p)]),
    "tq_kv_batch_put_meta": (c_int, [_client_p, c_char_p, c_size_t, _strings, _batch_p,
                                     _strings, POINTER(_meta_p)]),
    "tq_kv_indexes": (c_int, [_client_p, c_char_p, c_size_t, _strings, c_int,
                              POINTER(c_int64)]),
    "tq_kv_keys": (c_int, [_client_p, c_char_p, c_size_t, POINTER(c_int64),
                           POINTER(POINTER(c_char_p))]),
    "tq_kv_keys_free": (None, [POINTER(c_char_p)]),
    "tq_set_custom_meta": (c_int, [_client_p, c_char_p, c_size_t, POINTER(c_int64), _strings]),
    "tq_clear": (c_int, [_client_p, c_char_p, c_size_t, POINTER(c_int64)]),
    "tq_clear_partition": (c_int, [_client_p, c_char_p]),
    "tq_reset_consumption": (c_int, [_client_p, c_char_p, c_char_p]),
    "tq_production_status": (c_int, [_client_p, c_char_p, c_size_t, _strings,
                                     POINTER(POINTER(c_uint8))]),
    "tq_consumption_status": (c_int, [_client_p, c_char_p, c_char_p,
                                      POINTER(POINTER(c_uint8))]),
    "tq_partitions": (c_int, [_client_p, c_char_p, POINTER(c_char_p)]),
    # non-blocking twins and their requests
    "tq_kv_batch_put_meta_nb": (c_int, [_client_p, c_char_p, c_size_t, _strings, _batch_p,
                                        _strings, POINTER(_request_p)]),
    "tq_kv_batch_get_nb": (c_int, [_client_p, c_char_p, c_size_t, _strings, c_size_t, _strings,
                                   POINTER(_request_p)]),
    "tq_kv_get_meta_nb": (c_int, [_client_p, c_char_p, c_size_t, _strings, c_size_t, _strings,
                                  POINTER(_request_p)]),
    "tq_kv_list_nb": (c_int, [_client_p, c_char_p, POINTER(_request_p)]),
    "tq_kv_clear_nb": (c_int, [_client_p, c_char_p, c_size_t, _strings, POINTER(_request_p)]),
    "tq_get_meta_nb": (c_int, [_client_p, c_void_p, POINTER(_request_p)]),
    "tq_get_data_nb": (c_int, [_client_p, _meta_p, POINTER(_request_p)]),
    "tq_get_data_into_nb": (c_int, [_client_p, _meta_p, _batch_p, POINTER(_request_p)]),
    "tq_put_nb": (c_int, [_client_p, c_char_p, _batch_p, POINTER(c_int64), POINTER(c_int64),
                          POINTER(_request_p)]),
    "tq_request_wait": (c_int, [_request_p, c_int]),
    "tq_request_fd": (c_int, [_request_p]),
    "tq_request_take_batch": (_batch_p, [_request_p]),
    "tq_request_take_meta": (_meta_p, [_request_p]),
    "tq_request_take_entries": (_entries_p, [_request_p]),
    "tq_request_result": (c_int64, [_request_p]),
    "tq_request_free": (None, [_request_p]),
}
_missing = []
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name, None)
    if _fn is None:
        _missing.append(_name)
        continue
    _fn.restype, _fn.argtypes = _restype, _argtypes
if _missing:
    raise ImportError(f"tqrdma: {path} is older than this package: it lacks "
                      f"{', '.join(_missing)} (set TQRDMA_LIBRARY to a matching libtqrdma)")

_libc = ctypes.CDLL(None)
_libc.free.restype, _libc.free.argtypes = None, [c_void_p]


def libc_free(pointer):
    """free() of what the library allocated for the caller (status arrays, JSON text)."""
    _libc.free(ctypes.cast(pointer, c_void_p))


class FetchArgs(ctypes.Structure):
    """tq_fetch_args_t."""
    _fields_ = [("partition", c_char_p), ("task", c_char_p), ("fields", POINTER(c_char_p)),
                ("num_fields", c_size_t), ("batch_size", c_uint32), ("sampler", c_char_p),
                ("sampler_args", c_char_p), ("timeout_ms", c_int), ("prefetch", c_uint32),
                ("mode", c_int)]


def has(name):
    """Whether the loaded library exports the C function name."""
    return hasattr(lib, name)


def has_dtype(code):
    """Whether the loaded library knows tq_dtype_t code (tq_dtype_size is 0 for an unknown one)."""
    return lib.tq_dtype_size(code) != 0


def strings(values):
    """A C array of NUL-terminated UTF-8 strings (None stays NULL)."""
    return (c_char_p * len(values))(*[None if v is None else v.encode() for v in values])
