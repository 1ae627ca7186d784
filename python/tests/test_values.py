"""The value layer (tqrdma._values) against the embedded default: every value type round
trips with its type, zero copy both ways, and bad input fails naming the field, with
nothing written. pytest; run also with TQRDMA_NO_TORCH=1 (see conftest.py)."""
import ctypes
import gc
import os
import pickle
import subprocess
import sys
import types
import weakref
from ctypes import byref, c_void_p
from unittest import mock

try:
    import pytest
except ImportError:  # unittest discover (ctest `python`) imports this file too
    import unittest
    raise unittest.SkipTest("pytest is not installed") from None

import numpy as np

import tqrdma as tq
from tqrdma import _capi, _errors, _values
from tqrdma._capi import lib

HERE = os.path.dirname(os.path.abspath(__file__))
NO_TORCH = os.environ.get("TQRDMA_NO_TORCH", "") not in ("", "0")
READS = ["copy", "take", "wrap", "into"]
NEEDS = {"wrap": "tq_kv_get_meta", "into": "tq_get_data_into"}
LABELS = _capi.has("tq_batch_set_format")
needs_labels = pytest.mark.skipif(not LABELS, reason="libtqrdma without format labels")


def _check(client, rc, what):
    if rc < 0:
        raise _errors.error(rc, what, lib.tq_last_error(client).decode(errors="replace"))
    return rc


def put(client, partition, keys, fields):
    with _values.encode(fields, len(keys), "keys") as batch:
        _check(client, lib.tq_kv_batch_put(client, partition.encode(), len(keys),
                                           _capi.strings(keys), batch.handle, None), "put")


def get(client, partition, keys, how="copy", **options):
    """Read keys back one of four ways: a kv_batch_get's batch copied out or taken (zero
    copy), or a meta read by decode's modes."""
    if how in ("copy", "take"):
        handle = c_void_p()
        _check(client, lib.tq_kv_batch_get(client, partition.encode(), len(keys),
                                           _capi.strings(keys), 0, None, byref(handle)), "get")
        if how == "take":
            return _values.from_batch(handle, take=True, **options)
        try:
            return _values.from_batch(handle, **options)
        finally:
            lib.tq_batch_destroy(handle)
    meta = c_void_p()
    _check(client, lib.tq_kv_get_meta(client, partition.encode(), len(keys),
                                      _capi.strings(keys), 0, None, byref(meta)), "get_meta")
    try:
        return _values.decode(client, meta, mode=how, **options)
    finally:
        lib.tq_meta_free(meta)


@pytest.fixture(params=READS)
def how(request):
    need = NEEDS.get(request.param)
    if need and not _capi.has(need):
        pytest.skip(f"libtqrdma without {need}")
    if request.param == "into" and not _capi.has("tq_kv_get_meta"):
        pytest.skip("libtqrdma without tq_kv_get_meta")
    return request.param


def keys_of(n):
    return [f"k{i}" for i in range(n)]


def same_array(want, got):
    assert isinstance(got, np.ndarray), type(got)
    assert want.dtype == got.dtype and want.shape == got.shape
    assert np.ascontiguousarray(want).tobytes() == got.tobytes()


def raw(t):
    """A tensor's bytes, for any dtype (bit-exact: NaN payloads included)."""
    import torch
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def same_tensor(want, got):
    import torch
    assert isinstance(got, torch.Tensor) and not got.is_nested, type(got)
    assert want.dtype == got.dtype and tuple(want.shape) == tuple(got.shape)
    assert raw(want) == raw(got)


def random_bytes(rng, n):
    return rng.integers(0, 256, n, dtype=np.uint8)


def np_dtypes():
    out = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32,
           np.float64]
    if _capi.has_dtype(_capi.DTYPE_U16):
        out += [np.uint16, np.uint32, np.uint64, np.complex64, np.complex128]
    return [np.dtype(d) for d in out]


def np_random(rng, dtype, shape):
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    n = int(np.prod(shape)) * dtype.itemsize
    return random_bytes(rng, n).view(dtype).reshape(shape)  # every bit pattern, NaNs too


def torch_dtypes(torch):
    names = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
             "float32", "float64"]
    if _capi.has_dtype(_capi.DTYPE_U16):
        names += ["complex32", "complex64", "complex128", "uint16", "uint32", "uint64"]
    return [getattr(torch, n) for n in names if isinstance(getattr(torch, n, None), torch.dtype)]


def torch_random(torch, rng, dtype, shape):
    if dtype == torch.bool:
        return torch.from_numpy(rng.integers(0, 2, shape).astype(np.bool_))
    size = torch.empty((), dtype=dtype).element_size()
    n = int(np.prod(shape)) * size
    return torch.from_numpy(random_bytes(rng, n)).view(dtype).reshape(shape)


# ---- numpy ----------------------------------------------------------------------------
def test_numpy_dtypes_round_trip(client, partition, how):
    rng = np.random.default_rng(1)
    keys = keys_of(3)
    fields = {f"{d}": np_random(rng, d, (3, 2, 5)) for d in np_dtypes()}
    fields.update({f"{name}_strided": a[:, :, ::2] for name, a in list(fields.items())})
    fields["scalar"] = rng.standard_normal(3)          # one number a row
    fields["empty"] = np.zeros((3, 0, 4), np.int32)    # rows of no elements
    put(client, partition, keys, fields)
    got = get(client, partition, keys, how)
    assert sorted(got) == sorted(fields)
    for name, want in fields.items():
        same_array(want, got[name])
    got = get(client, partition, ["k2", "k0", "k2"], how)  # order asked, repeats included
    same_array(fields["int64"][[2, 0, 2]], got["int64"])


def test_numpy_lists_stay_lists_even_of_one_shape(client, partition, how):
    rng = np.random.default_rng(2)
    keys = keys_of(4)
    ragged = [rng.standard_normal((n, 2)).astype(np.float32) for n in (3, 0, 1, 5)]
    even = [np.arange(3, dtype=np.int16) + i for i in range(4)]  # one shape: still a list
    put(client, partition, keys, {"ragged": ragged, "even": even})
    got = get(client, partition, keys, how)
    for name, want in (("ragged", ragged), ("even", even)):
        assert isinstance(got[name], list) and len(got[name]) == 4
        for w, g in zip(want, got[name]):
            same_array(w, g)


def test_numpy_bfloat16_and_complex32_read_as_their_bits(client, partition, how, torch):
    keys = keys_of(2)
    bf = torch.tensor([[1.0, -2.0], [float("inf"), 3.5]], dtype=torch.bfloat16)
    fields = {"bf": bf}
    if _capi.has_dtype(_capi.DTYPE_C32):
        fields["ch"] = torch.tensor([[1 + 2j], [-0.5j]], dtype=torch.complex64).to(torch.chalf)
    put(client, partition, keys, fields)
    got = get(client, partition, keys, how, to="numpy")
    same_array(bf.view(torch.int16).numpy().view(np.uint16), got["bf"])
    if "ch" in fields:
        assert got["ch"].dtype == np.uint32 and got["ch"].tobytes() == raw(fields["ch"])
        re_im = got["ch"].view(np.float16)
        assert re_im.tolist() == [[1.0, 2.0], [0.0, -0.5]]


def test_numpy_non_contiguous_and_byte_swapped_are_copied(client, partition):
    base = np.arange(4 * 6 * 2, dtype=np.float64).reshape(4, 6, 2)
    fields = {"strided": base[:, ::2, 0], "fortran": np.asfortranarray(base[:, :, 1]),
              "swapped": base[:, 0, :].astype(">i4"),
              "rows": [base[0, :1, 0], base[1, ::3, 1], base[2, :3, 0], base[3, :, 1]]}
    batch = _values.encode(fields, 4)
    try:
        info = _capi.FieldInfo()
        assert lib.tq_batch_field(batch.handle, b"strided", byref(info)) == 0
        assert info.data != fields["strided"].ctypes.data  # a copy
    finally:
        batch.close()
    keys = keys_of(4)
    put(client, partition, keys, fields)
    got = get(client, partition, keys)
    same_array(np.ascontiguousarray(fields["strided"]), got["strided"])
    same_array(np.ascontiguousarray(fields["fortran"]), got["fortran"])
    same_array(fields["swapped"].astype("=i4"), got["swapped"])
    for w, g in zip(fields["rows"], got["rows"]):
        same_array(np.ascontiguousarray(w), g)


# ---- bytes, text, objects -------------------------------------------------------------
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_bytes_text_and_objects(client, partition, how):
    keys = keys_of(3)
    fields = {
        "blobs": [b"x", b"", bytearray(b"\0\1\2") * 100],
        "text": ["h\u00e9llo", "", "nul\0inside \U0001F600"],
        "objects": [{"score": 0.5, "tags": ["a"]}, None, Point(1, 2)],
        "numbers": [1, 2.5, 3 + 1j],                    # Python numbers are objects
        "mixed": ["text", b"bytes", 7],                 # not all one kind: objects
        "np_strings": [np.array(["a", "bc"]), np.array(["d"]), np.array([], dtype="<U1")],
    }
    put(client, partition, keys, fields)
    got = get(client, partition, keys, how)
    assert got["blobs"] == [bytes(b) for b in fields["blobs"]]
    assert all(type(b) is bytes for b in got["blobs"])
    if not LABELS:
        return
    assert got["text"] == fields["text"]
    assert got["objects"] == fields["objects"]
    assert got["numbers"] == fields["numbers"]
    assert got["mixed"] == fields["mixed"]
    for w, g in zip(fields["np_strings"], got["np_strings"]):
        same_array(w, g)
    # unpickle=False: the pickles themselves
    got = get(client, partition, keys, how, unpickle=False)
    assert [pickle.loads(b) for b in got["objects"]] == fields["objects"]


@needs_labels
def test_label_conflicts_name_the_field(client, partition):
    keys = keys_of(2)
    put(client, partition, keys, {"t": ["a", "b"]})
    with pytest.raises(tq.InvalidArgumentError, match="'?t'?.*(utf8|pickle)"):
        put(client, partition, keys, {"t": ["a", 1]})        # text, then objects
    assert get(client, partition, keys)["t"] == ["a", "b"]  # nothing written
    put(client, partition, keys, {"t": [b"\xff", b"ok"]})  # no label: taken, and wrong
    with pytest.raises(tq.TQError, match="'t' row 0: not utf8"):
        get(client, partition, keys)


# ---- torch ----------------------------------------------------------------------------
def test_torch_dtypes_round_trip(client, partition, how, torch):
    rng = np.random.default_rng(3)
    keys = keys_of(3)
    fields = {str(d).replace("torch.", ""): torch_random(torch, rng, d, (3, 4, 2))
              for d in torch_dtypes(torch)}
    fields.update({f"{name}_strided": t[:, ::2] for name, t in list(fields.items())})
    fields["vector"] = torch.arange(3, dtype=torch.int64)   # one number a row
    fields["empty"] = torch.zeros(3, 0)
    put(client, partition, keys, fields)
    got = get(client, partition, keys, how, **({} if LABELS else {"to": "torch"}))
    assert sorted(got) == sorted(fields)
    for name, want in fields.items():
        same_tensor(want, got[name])


@needs_labels
def test_torch_and_numpy_readers_get_what_was_written(client, partition, how, torch):
    keys = keys_of(2)
    put(client, partition, keys, {"t": torch.ones(2, 3), "a": np.ones((2, 3), np.float32)})
    got = get(client, partition, keys, how)
    assert isinstance(got["t"], torch.Tensor) and isinstance(got["a"], np.ndarray)
    got = get(client, partition, keys, how, to="numpy")
    assert isinstance(got["t"], np.ndarray) and got["t"].dtype == np.float32
    got = get(client, partition, keys, how, to="torch")
    assert isinstance(got["a"], torch.Tensor) and got["a"].dtype == torch.float32
    # a numpy write of a torch field is taken (no label), and it stays a torch field
    put(client, partition, keys, {"t": np.zeros((2, 3), np.float32)})
    same_tensor(torch.zeros(2, 3), get(client, partition, keys, how)["t"])


def test_torch_nested_tensor_comes_back_nested(client, partition, how, torch):
    keys = keys_of(3)
    nested = torch.nested.nested_tensor([torch.arange(3.), torch.arange(1.), torch.arange(2.)])
    grid = torch.nested.nested_tensor([torch.ones(2, 2), torch.zeros(1, 3), torch.ones(0, 1)])
    even = torch.nested.nested_tensor([torch.ones(2), torch.zeros(2), torch.ones(2)])
    put(client, partition, keys, {"nested": nested, "grid": grid, "even": even})
    got = get(client, partition, keys, how, **({} if LABELS else {"to": "torch"}))
    for name, want in (("nested", nested), ("grid", grid), ("even", even)):
        if not LABELS:
            assert isinstance(got[name], list)
            parts = got[name]
        else:
            assert got[name].is_nested, name   # nested, even when the rows share a shape
            parts = got[name].unbind()
        assert len(parts) == 3
        for w, g in zip(want.unbind(), parts):
            same_tensor(w, g)


def test_torch_rows_of_other_shapes_make_a_field_nested(client, partition, how, torch):
    """TransferQueue: tensors put key by key in several shapes come back a nested tensor."""
    rows = [torch.randn(n) for n in (1, 2, 3)]
    for i, r in enumerate(rows):
        put(client, partition, [f"k{i}"], {"data": _values.one_row("data", r)})
    got = get(client, partition, keys_of(3), how, **({} if LABELS else {"to": "torch"}))
    parts = got["data"].unbind() if LABELS else got["data"]
    for w, g in zip(rows, parts):
        same_tensor(w, g)


def test_list_of_tensors_stays_a_list(client, partition, how, torch):
    keys = keys_of(3)
    rows = [torch.arange(4, dtype=torch.int32).reshape(2, 2), torch.zeros(0, 2, dtype=torch.int32),
            torch.ones(3, 2, dtype=torch.int32)]
    put(client, partition, keys, {"rows": rows})
    got = get(client, partition, keys, how, **({} if LABELS else {"to": "torch"}))
    assert isinstance(got["rows"], list)
    for w, g in zip(rows, got["rows"]):
        same_tensor(w, g)


def test_torch_values_that_are_copied_on_put(client, partition, torch):
    base = torch.arange(24.).reshape(4, 6)
    fields = {
        "slice": base[:, ::2],                                   # non-contiguous
        "transposed": base.t()[:4],                              # non-contiguous
        "conj": torch.arange(4.).to(torch.complex64).mul(1j).conj().reshape(4, 1)
        if _capi.has_dtype(_capi.DTYPE_C64) else torch.arange(4.).reshape(4, 1),
        "neg": torch.arange(4.).to(torch.complex128)._neg_view().reshape(4, 1)
        if _capi.has_dtype(_capi.DTYPE_C128) else torch.ones(4, 1),
        "grad": torch.ones(4, 2, requires_grad=True) * 2,       # not a copy: read as is
        "rows": [base[0, ::2], base[1, 1:3], base[2, ::3], base[3]],
    }
    keys = keys_of(4)
    batch = _values.encode(fields, 4)
    try:
        info = _capi.FieldInfo()
        assert lib.tq_batch_field(batch.handle, b"slice", byref(info)) == 0
        assert info.data != fields["slice"].data_ptr()
        assert lib.tq_batch_field(batch.handle, b"grad", byref(info)) == 0
        assert info.data == fields["grad"].data_ptr()
    finally:
        batch.close()
    put(client, partition, keys, fields)
    got = get(client, partition, keys, to="torch")
    for name in ("slice", "transposed", "conj", "neg", "grad"):
        want = fields[name].detach().resolve_conj().resolve_neg().contiguous()
        same_tensor(want, got[name])
    for w, g in zip(fields["rows"], got["rows"]):
        same_tensor(w.contiguous(), g)


# ---- zero copy ------------------------------------------------------------------------
def test_put_hands_the_library_the_values_own_memory(client, partition):
    tensor = np.arange(3 * 1000, dtype=np.float32).reshape(3, 1000)
    rows = [np.arange(n, dtype=np.int64) for n in (5, 1, 9)]
    blobs = [b"first", b"second", b"third"]
    fields = {"tensor": tensor, "rows": rows, "blobs": blobs}
    seen = {}
    real = lib.tq_kv_batch_put

    def spy(c, p, n, keys, batch, tags):
        info = _capi.FieldInfo()
        assert lib.tq_batch_field(batch, b"tensor", byref(info)) == 0
        seen["tensor"] = info.data
        seen["rows"] = [lib.tq_batch_row(batch, b"rows", i, None, None) for i in range(3)]
        seen["blobs"] = [lib.tq_batch_row(batch, b"blobs", i, None, None) for i in range(3)]
        return real(c, p, n, keys, batch, tags)

    with mock.patch.object(lib, "tq_kv_batch_put", spy):
        put(client, partition, keys_of(3), fields)
    assert seen["tensor"] == tensor.ctypes.data
    assert seen["rows"] == [r.ctypes.data for r in rows]
    assert seen["blobs"] == [np.frombuffer(b, np.uint8).ctypes.data for b in blobs]


def test_put_hands_the_library_the_tensors_own_memory(client, partition, torch):
    dense = torch.arange(3 * 1000, dtype=torch.float32).reshape(3, 1000)
    nested = torch.nested.nested_tensor([torch.arange(n, dtype=torch.int64) for n in (5, 1, 9)])
    listed = [torch.arange(n, dtype=torch.int16) for n in (2, 0, 3)]
    batch = _values.encode({"dense": dense, "nested": nested, "listed": listed}, 3)
    try:
        info = _capi.FieldInfo()
        assert lib.tq_batch_field(batch.handle, b"dense", byref(info)) == 0
        assert info.data == dense.data_ptr()
        assert [lib.tq_batch_row(batch.handle, b"nested", i, None, None) for i in range(3)] \
            == [r.data_ptr() for r in nested.unbind()]
        assert [lib.tq_batch_row(batch.handle, b"listed", i, None, None) for i in (0, 2)] \
            == [listed[0].data_ptr(), listed[2].data_ptr()]
    finally:
        batch.close()


def _spied_read(how, client, partition, keys, **options):
    """get() with the C read spied on: the pointers of each field's rows the library read into."""
    seen = {}

    def record(batch):
        for i in range(lib.tq_batch_num_fields(batch)):
            name = lib.tq_batch_field_name(batch, i)
            seen[name.decode()] = [lib.tq_batch_row(batch, name, r, None, None)
                                   for r in range(len(keys))]

    if how == "into":
        real = lib.tq_get_data_into

        def spy(c, meta, dst):
            record(dst)
            return real(c, meta, dst)
        target = "tq_get_data_into"
    elif how == "wrap":
        real = lib.tq_get_data

        def spy(c, meta, batch_p):
            rc = real(c, meta, batch_p)
            record(batch_p._obj)
            return rc
        target = "tq_get_data"
    else:
        real = lib.tq_kv_batch_get

        def spy(c, p, n, k, nf, f, batch_p):
            rc = real(c, p, n, k, nf, f, batch_p)
            record(batch_p._obj)
            return rc
        target = "tq_kv_batch_get"
    with mock.patch.object(lib, target, spy):
        return get(client, partition, keys, how, **options), seen


def ptr(v):
    return v.ctypes.data if isinstance(v, np.ndarray) else v.data_ptr()


@pytest.mark.parametrize("how", ["take", "wrap", "into"])
def test_get_returns_values_over_the_memory_read_into(client, partition, how):
    if how != "take" and not (_capi.has("tq_kv_get_meta") and _capi.has(NEEDS[how])):
        pytest.skip("libtqrdma without the meta reads")
    keys = keys_of(3)
    put(client, partition, keys, {"dense": np.arange(30.).reshape(3, 10),
                                  "rows": [np.arange(n, dtype=np.int32) for n in (4, 0, 2)]})
    got, seen = _spied_read(how, client, partition, keys)
    assert ptr(got["dense"]) == seen["dense"][0]
    assert [ptr(r) for r in got["rows"] if r.size] == [seen["rows"][0], seen["rows"][2]]


def test_get_returns_tensors_over_the_memory_read_into(client, partition, how, torch):
    if how == "copy":
        pytest.skip("copy copies")
    keys = keys_of(3)
    put(client, partition, keys, {"dense": torch.arange(30.).reshape(3, 10),
                                  "rows": [torch.arange(n, dtype=torch.int32) for n in (4, 1, 2)]})
    got, seen = _spied_read(how, client, partition, keys, to="torch")
    assert got["dense"].data_ptr() == seen["dense"][0]
    assert [r.data_ptr() for r in got["rows"]] == seen["rows"]


def test_wrapped_batch_lives_as_long_as_its_values(client, partition):
    keys = keys_of(2)
    put(client, partition, keys, {"x": np.arange(8.).reshape(2, 4), "b": [b"1", b"2"]})
    handle = c_void_p()
    _check(client, lib.tq_kv_batch_get(client, partition.encode(), 2, _capi.strings(keys), 0,
                                       None, byref(handle)), "get")
    got = _values.from_batch(handle, take=True)
    x = got.pop("x")[1:]                 # a view of a view still holds the batch
    owner = x.base
    while not isinstance(owner, _values._Memory):
        owner = owner.base
    alive = weakref.ref(owner.owner)
    del got, owner
    gc.collect()
    assert alive() is not None
    assert x.tolist() == [[4., 5., 6., 7.]]
    del x
    gc.collect()
    assert alive() is None               # the batch was destroyed with its last value


def test_wrapped_tensors_keep_their_batch(client, partition, how, torch, monkeypatch):
    if how in ("copy", "into"):
        pytest.skip("values of their own")
    owners = []

    class Owner(_values._Owner):
        def __init__(self, handle):
            super().__init__(handle)
            owners.append(weakref.ref(self))
    monkeypatch.setattr(_values, "_Owner", Owner)
    keys = keys_of(2)
    put(client, partition, keys, {"x": torch.arange(8.).reshape(2, 4),
                                  "n": [torch.ones(1), torch.ones(3)]})
    got = get(client, partition, keys, how, to="torch")
    x, n = got["x"][1:], got["n"][1]
    del got
    gc.collect()
    assert len(owners) == 1 and owners[0]() is not None
    assert x.tolist() == [[4., 5., 6., 7.]] and n.tolist() == [1., 1., 1.]
    del x
    gc.collect()
    assert owners[0]() is not None      # n still needs it
    del n
    gc.collect()
    assert owners[0]() is None


# ---- TensorDict (tensordict is not a dependency: a stand-in with its shape) -------------
@pytest.fixture
def fake_tensordict(monkeypatch, torch):
    mod = types.ModuleType("tensordict")

    class TensorDictBase:
        pass

    class TensorDict(TensorDictBase):
        def __init__(self, source, batch_size):
            self._d, self.batch_size = dict(source), torch.Size(batch_size)

        def items(self):
            return self._d.items()

        def __getitem__(self, key):
            return self._d[key]

    class NonTensorStack:
        def __init__(self, *items):
            self.items = list(items)

        def tolist(self):
            return list(self.items)

    mod.TensorDictBase, mod.TensorDict, mod.NonTensorStack = TensorDictBase, TensorDict, \
        NonTensorStack
    mod.NonTensorData = type("NonTensorData", (NonTensorStack,), {})
    monkeypatch.setitem(sys.modules, "tensordict", mod)
    return mod


def test_tensordict_in_and_out(client, partition, how, torch, fake_tensordict):
    td = fake_tensordict
    keys = keys_of(2)
    fields = td.TensorDict({"ids": torch.tensor([[1, 2], [3, 4]]),
                            "arr": np.ones((2, 2), np.float32),
                            "text": td.NonTensorStack("a", "b"),
                            "obj": td.NonTensorStack({"k": 1}, [2])}, batch_size=[2])
    put(client, partition, keys, fields)
    got = get(client, partition, keys, how)
    assert isinstance(got, td.TensorDict) and tuple(got.batch_size) == (2,)
    same_tensor(fields["ids"], got["ids"])
    same_tensor(torch.ones(2, 2), got["arr"])        # a TensorDict holds tensors
    if LABELS:
        assert got["text"].tolist() == ["a", "b"]
        assert got["obj"].tolist() == [{"k": 1}, [2]]
    assert isinstance(get(client, partition, keys, how, tensordict=False), dict)
    inner = td.TensorDict({"x": torch.ones(2)}, batch_size=[2])
    with pytest.raises(TypeError, match="'inner'.*flatten_keys"):
        _values.encode(td.TensorDict({"inner": inner}, batch_size=[2]), 2)
    with pytest.raises(tq.InvalidArgumentError, match="batch_size"):
        _values.encode(fields, 3)


# ---- one key ---------------------------------------------------------------------------
def test_one_row():
    a = np.arange(3)
    assert _values.one_row("a", a).shape == (1, 3) and _values.one_row("a", a).base is a
    assert _values.one_row("f", np.float32(0.5)).dtype == np.float32
    assert _values.one_row("n", 2.5).shape == (1,)
    assert _values.one_row("s", "text") == ["text"]
    assert _values.one_row("b", b"raw") == [b"raw"]
    assert _values.one_row("o", {"k": 1}) == [{"k": 1}]
    assert _values.one_row("l", [1, 2]) == [[1, 2]]        # one object: this key's list


def test_one_row_of_tensors(torch):
    t = torch.arange(3)
    assert tuple(_values.one_row("t", t).shape) == (1, 3)
    assert _values.one_row("t", t).data_ptr() == t.data_ptr()
    with pytest.raises(tq.InvalidArgumentError, match="'n'.*kv_batch_put"):
        _values.one_row("n", torch.nested.nested_tensor([torch.ones(1), torch.ones(2)]))


# ---- bad input -------------------------------------------------------------------------
BAD = [
    ("first dimension 3 for 2", lambda: {"f": np.zeros((3, 2))}),
    ("first dimension none", lambda: {"f": np.float64(1.0)}),
    ("3 rows for 2", lambda: {"f": [b"1", b"2", b"3"]}),
    ("one value", lambda: {"f": "text"}),
    ("one value", lambda: {"f": b"bytes"}),
    ("not an array of numbers", lambda: {"f": {"a": 1}}),
    ("not an array of numbers", lambda: {"f": None}),
    ("dtype <U1 is not supported .*list of str", lambda: {"f": np.array(["a", "b"])}),
    ("dtype object is not supported", lambda: {"f": np.array([None, 1])}),
    ("dtype datetime64", lambda: {"f": np.zeros(2, "datetime64[s]")}),
    ("row 1 is int64 of 1 dimensions, row 0 float32 of 1",
     lambda: {"f": [np.zeros(2, np.float32), np.zeros(2, np.int64)]}),
    ("row 1 .* 2 dimensions", lambda: {"f": [np.zeros(2), np.zeros((2, 2))]}),
    ("row 1 is a builtins.int, row 0 a numpy.ndarray", lambda: {"f": [np.zeros(2), 5]}),
    ("rows of 9 dimensions", lambda: {"f": np.zeros((2,) + (1,) * 9)}),
    ("rows of 9 dimensions", lambda: {"f": [np.zeros((1,) * 9)] * 2}),
    ("cannot copy its 1125899906842624 bytes",  # 2 x 2**46 float64 of a broadcast view
     lambda: {"f": np.broadcast_to(np.zeros(1), (2, 2 ** 47))[:, ::2]}),
    ("row 1: not UTF-8", lambda: {"f": ["ok", "\ud800"]}),
    ("row 0: .*cannot be pickled", lambda: {"f": [lambda: 0, 1]}),
    ("NUL character", lambda: {"f\0x": np.zeros(2)}),
]


@pytest.mark.parametrize("match,fields", BAD, ids=[m for m, _ in BAD])
def test_bad_input_names_the_field_and_writes_nothing(client, partition, match, fields):
    fields = fields()
    name = next(iter(fields))
    with pytest.raises((TypeError, ValueError)) as info:
        put(client, partition, ["a", "b"], fields)
    assert repr(name) in str(info.value) or "NUL" in str(info.value)
    import re
    assert re.search(match, str(info.value)), str(info.value)
    listed = c_void_p()
    assert lib.tq_kv_list(client, partition.encode(), byref(listed)) == 0
    try:
        assert lib.tq_kv_entries_size(listed) == 0        # nothing written
    finally:
        lib.tq_kv_entries_free(listed)


def test_bad_torch_input(client, partition, torch):
    cases = [
        ("sparse", torch.eye(2).to_sparse()),
        ("first dimension 3 for 2", torch.zeros(3, 1)),
        ("first dimension none", torch.tensor(1.0)),
        ("nested tensor of 3 rows for 2",
         torch.nested.nested_tensor([torch.ones(1), torch.ones(2), torch.ones(1)])),
        ("row 1 is int64 of 1 dimensions, row 0 float32 of 1",
         [torch.ones(2), torch.ones(2, dtype=torch.int64)]),
        ("row 1 is a numpy.ndarray, row 0 a torch.Tensor", [torch.ones(2), np.ones(2)]),
        ("dtype torch.quint8 is not supported",
         torch.quantize_per_tensor(torch.ones(2, 1), 1.0, 0, torch.quint8)),
        ("cannot copy its .* bytes to contiguous CPU memory",   # meta: no data to copy
         torch.empty(2, 3, device="meta")),
        ("cannot copy its 1125899906842624 bytes",
         torch.zeros(1, dtype=torch.float64).expand(2, 2 ** 47)[:, ::2]),
    ]
    for match, value in cases:
        with pytest.raises((TypeError, ValueError), match=r"'f'.*" + match):
            put(client, partition, ["a", "b"], {"f": value})


def test_batch_limits():
    with pytest.raises(tq.InvalidArgumentError, match="1048577 rows: a batch has 1 to 1048576"):
        _values.encode({"f": np.zeros(1 << 20 | 1, np.uint8)}, 1 << 20 | 1)
    with pytest.raises(tq.InvalidArgumentError, match="257 of them; a batch has 1 to 256"):
        _values.encode({f"f{i}": np.zeros(1) for i in range(257)}, 1)
    with pytest.raises(tq.InvalidArgumentError, match="0 of them"):
        _values.encode({}, 1)
    with pytest.raises(TypeError, match="a dict or TensorDict"):
        _values.encode([np.zeros(1)], 1)
    with pytest.raises(TypeError, match="names are str"):
        _values.encode({1: np.zeros(1)}, 1)
    _values.encode({f"f{i}": np.zeros(1) for i in range(256)}, 1).close()


def test_dtype_and_kind_conflicts_against_the_field(client, partition):
    keys = keys_of(2)
    put(client, partition, keys, {"f": np.zeros((2, 3), np.float32)})
    with pytest.raises(tq.InvalidArgumentError, match="'?f'?.*dtype"):
        put(client, partition, keys, {"f": np.zeros((2, 3), np.float64)})
    with pytest.raises(tq.InvalidArgumentError, match="field f: (dtype|kind)"):
        put(client, partition, keys, {"f": [b"a", b"b"]})
    with pytest.raises(tq.InvalidArgumentError, match="'?f'?.*dimensions"):
        put(client, partition, keys, {"f": np.zeros((2, 3, 1), np.float32)})
    same_array(np.zeros((2, 3), np.float32), get(client, partition, keys)["f"])


def test_bad_read_options(client, partition):
    keys = keys_of(1)
    put(client, partition, keys, {"f": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="to:"):
        get(client, partition, keys, to="jax")
    if NO_TORCH:
        with pytest.raises(ImportError, match="TQRDMA_NO_TORCH"):
            get(client, partition, keys, to="torch")
    if _values._tensordict(load=True) is None:
        with pytest.raises(ImportError, match="tensordict is not installed"):
            get(client, partition, keys, tensordict=True)
    if _capi.has("tq_kv_get_meta"):
        with pytest.raises(ValueError, match="mode: one of"):
            get(client, partition, keys, "copy-please")


def test_decode_selects_fields(client, partition):
    if not _capi.has("tq_get_data_into"):
        pytest.skip("libtqrdma without tq_get_data_into")
    keys = keys_of(2)
    put(client, partition, keys, {"a": np.ones((2, 2)), "b": [b"x", b"y"], "c": ["s", "t"]})
    meta = c_void_p()
    _check(client, lib.tq_kv_get_meta(client, partition.encode(), 2, _capi.strings(keys), 0,
                                      None, byref(meta)), "get_meta")
    try:
        got = _values.decode(client, meta, ["c", "a"], mode="into")
        assert list(got) == ["c", "a"] and got["c"] == ["s", "t"]
        same_array(np.ones((2, 2)), got["a"])
        with pytest.raises(tq.NotFoundError, match="field 'nope'"):
            _values.decode(client, meta, ["a", "nope"], mode="into")
        with pytest.raises(ValueError, match="mode='wrap' reads the meta's fields"):
            _values.decode(client, meta, ["a"], mode="wrap")
        assert sorted(_values.decode(client, meta)) == ["a", "b", "c"]  # the default: wrap
    finally:
        lib.tq_meta_free(meta)


def test_into_and_wrap_for_the_non_blocking_reads(client, partition):
    """Into's two steps around tq_get_data_into_nb, from_batch(take=True) after tq_get_data_nb."""
    if not _capi.has("tq_get_data_into_nb"):
        pytest.skip("libtqrdma without the non-blocking reads")
    proto = {"tq_get_data_into_nb": [c_void_p, c_void_p, c_void_p, ctypes.POINTER(c_void_p)],
             "tq_get_data_nb": [c_void_p, c_void_p, ctypes.POINTER(c_void_p)],
             "tq_request_wait": [c_void_p, ctypes.c_int], "tq_request_free": [c_void_p],
             "tq_request_take_batch": [c_void_p]}
    fns = {}
    for name, args in proto.items():  # declared here: the package's async layer is elsewhere
        fn = getattr(ctypes.CDLL(_capi.path), name)
        fn.argtypes, fn.restype = args, c_void_p if name.endswith("batch") else ctypes.c_int
        fns[name] = fn
    keys = keys_of(2)
    put(client, partition, keys, {"a": np.arange(4.).reshape(2, 2), "s": ["x", "y"]})
    meta = c_void_p()
    _check(client, lib.tq_kv_get_meta(client, partition.encode(), 2, _capi.strings(keys), 0,
                                      None, byref(meta)), "get_meta")
    try:
        with _values.Into(meta) as dst:
            req = c_void_p()
            _check(client, fns["tq_get_data_into_nb"](client, meta, dst.handle, byref(req)), "nb")
            try:
                assert fns["tq_request_wait"](req, 10000) == 0
            finally:
                fns["tq_request_free"](req)
            got = dst.finish()
        same_array(np.arange(4.).reshape(2, 2), got["a"])
        assert got["s"] == ["x", "y"]
        req = c_void_p()
        _check(client, fns["tq_get_data_nb"](client, meta, byref(req)), "nb")
        try:
            assert fns["tq_request_wait"](req, 10000) == 0
            got = _values.from_batch(c_void_p(fns["tq_request_take_batch"](req)), take=True)
        finally:
            fns["tq_request_free"](req)
        same_array(np.arange(4.).reshape(2, 2), got["a"])
    finally:
        lib.tq_meta_free(meta)


# ---- another process --------------------------------------------------------------------
READER = r"""
import ctypes, sys
from ctypes import byref, c_void_p
from tqrdma import _capi, _values
lib = _capi.lib
client = c_void_p()
assert lib.tq_open(sys.argv[1].encode(), byref(client)) == 0
keys = ["k0", "k1"]
handle = c_void_p()
assert lib.tq_kv_batch_get(client, sys.argv[2].encode(), 2, _capi.strings(keys), 0, None,
                           byref(handle)) == 0
imported = "torch" in sys.modules
got = _values.from_batch(handle, take=True, tensordict=False)
for name in sorted(got):
    v = got[name]
    kind = type(v).__module__.split(".")[0] + "." + type(v).__name__
    if isinstance(v, list):
        kind += "[" + type(v[0]).__module__.split(".")[0] + "." + type(v[0]).__name__ + "]"
    print(f"{name}={kind}:{getattr(v, 'dtype', '')}")
print(f"imported={imported}")
lib.tq_close(client)
"""


@needs_labels
def test_a_reader_in_another_process_gets_what_was_written(client, partition, torch):
    keys = keys_of(2)
    put(client, partition, keys, {
        "t": torch.ones(2, 2, dtype=torch.bfloat16), "a": np.ones((2, 2), np.int16),
        "n": torch.nested.nested_tensor([torch.ones(1), torch.ones(2)]),
        "l": [torch.ones(1), torch.ones(2)], "s": ["x", "y"]})
    address = lib.tq_controller_address(client).decode()

    def read(no_torch):
        env = dict(os.environ, TQRDMA_NO_TORCH="1" if no_torch else "0",
                   PYTHONPATH=os.path.dirname(HERE))
        out = subprocess.run([sys.executable, "-c", READER, address, partition], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return dict(line.split("=", 1) for line in out.stdout.splitlines())

    assert read(no_torch=False) == {
        "a": "numpy.ndarray:int16", "l": "builtins.list[torch.Tensor]:",
        "n": "torch.Tensor:torch.float32", "s": "builtins.list[builtins.str]:",
        "t": "torch.Tensor:torch.bfloat16",
        "imported": "False"}                    # the package imports no torch itself
    assert read(no_torch=True) == {
        "a": "numpy.ndarray:int16", "l": "builtins.list[numpy.ndarray]:",
        "n": "builtins.list[numpy.ndarray]:", "s": "builtins.list[builtins.str]:",
        "t": "numpy.ndarray:uint16",            # bfloat16's bits
        "imported": "False"}
