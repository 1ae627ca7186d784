"""The tqrdma package against the embedded default and against real tq-controller and
tq-storage processes (TQ_CONTROLLER_BIN, TQ_STORAGE_BIN; ctest passes them)."""
import ctypes
import os
import socket
import unittest
from ctypes import byref
from unittest import mock

import numpy as np

import tqrdma as tq
from conftest import Cluster
from tqrdma import _capi


def assert_same(test, want, got):
    """Equal dtype, shape and bytes: a round trip is exact, not approximately equal."""
    test.assertEqual(want.dtype, got.dtype)
    test.assertEqual(want.shape, got.shape)
    test.assertEqual(np.ascontiguousarray(want).tobytes(), got.tobytes())


class KVTests:
    """Run once per way of reaching a controller (the subclasses connect in setUpClass)."""

    def setUp(self):
        self.p = f"{type(self).__name__}.{self._testMethodName}"  # a partition per test

    def test_round_trip_dtypes_and_shapes(self):
        rng = np.random.default_rng(1)
        keys = [f"k{i}" for i in range(5)]
        fields = {
            "bool": rng.integers(0, 2, (5, 3)).astype(np.bool_),
            "u8": rng.integers(0, 255, (5, 7), dtype=np.uint8),
            "i8": rng.integers(-128, 127, (5, 2, 2), dtype=np.int8),
            "i16": rng.integers(-9999, 9999, (5, 1), dtype=np.int16),
            "i32": rng.integers(-2**31, 2**31 - 1, (5, 4), dtype=np.int32),
            "i64": rng.integers(-2**62, 2**62, (5, 2, 3, 1), dtype=np.int64),
            "f16": rng.standard_normal((5, 6)).astype(np.float16),
            "f32": rng.standard_normal((5, 128)).astype(np.float32),
            "f64": rng.standard_normal(5),  # one scalar per key
            "empty": np.zeros((5, 0), np.float32),
        }
        tq.kv_batch_put(keys, self.p, fields=fields)
        got = tq.kv_batch_get(keys, self.p)
        self.assertEqual(sorted(fields), sorted(got))
        for name, want in fields.items():
            with self.subTest(field=name):
                assert_same(self, want, got[name])
        # rows come back in the order asked, repeated keys included
        got = tq.kv_batch_get(["k3", "k0", "k3"], self.p, select_fields=["i64"])
        assert_same(self, fields["i64"][[3, 0, 3]], got["i64"])

    def test_kv_put_one_key(self):
        tq.kv_put("a", self.p, fields={"ids": np.arange(4, dtype=np.int32),
                                       "score": np.float32(0.5), "text": b"hello"})
        got = tq.kv_batch_get("a", self.p)
        assert_same(self, np.arange(4, dtype=np.int32)[None], got["ids"])
        assert_same(self, np.array([0.5], np.float32), got["score"])
        self.assertEqual([b"hello"], got["text"])

    def test_nested_and_bytes_fields(self):
        rng = np.random.default_rng(2)
        keys = ["a", "b", "c", "d"]
        ragged = [rng.standard_normal(n).astype(np.float32) for n in (3, 0, 1, 17)]
        ragged2d = [rng.integers(0, 100, (n, 2), dtype=np.int64) for n in (1, 4, 2, 3)]
        blobs = [b"x", b"", bytes(range(256)) * 9, bytearray(b"json: {}")]
        tq.kv_batch_put(keys, self.p, fields={"ragged": ragged, "ragged2d": ragged2d,
                                              "blobs": blobs})
        got = tq.kv_batch_get(keys, self.p)
        for name, want in (("ragged", ragged), ("ragged2d", ragged2d)):
            self.assertIsInstance(got[name], list)
            self.assertEqual(len(keys), len(got[name]))
            for w, g in zip(want, got[name]):
                assert_same(self, w, g)
        self.assertEqual([bytes(b) for b in blobs], got["blobs"])
        self.assertTrue(all(type(b) is bytes for b in got["blobs"]))

    def test_tensor_becomes_nested_when_a_row_changes_shape(self):
        tq.kv_batch_put(["a", "b"], self.p, fields={"x": np.ones((2, 3), np.int16)})
        tq.kv_put("c", self.p, fields={"x": np.arange(5, dtype=np.int16)})
        got = tq.kv_batch_get(["a", "b", "c"], self.p)["x"]
        self.assertIsInstance(got, list)
        self.assertEqual([(3,), (3,), (5,)], [g.shape for g in got])
        assert_same(self, np.arange(5, dtype=np.int16), got[2])

    def test_bfloat16_reads_back_as_its_bits(self):
        # numpy has no bfloat16, so write one through the C API as a C program would
        bits = np.array([[0x3F80, 0xC000], [0x7F80, 0x0001]], np.uint16)  # 1, -2, inf, tiny
        batch = ctypes.c_void_p()
        self.assertEqual(0, _capi.lib.tq_batch_create(2, byref(batch)))
        try:
            shape = (ctypes.c_int64 * 1)(2)
            self.assertEqual(0, _capi.lib.tq_batch_add_tensor(
                batch, b"bf", _capi.DTYPE_BF16, 1, shape, bits.ctypes.data))
            self.assertEqual(0, _capi.lib.tq_kv_batch_put(
                tq.get_client().handle, self.p.encode(), 2, _capi.strings(["a", "b"]), batch, None))
        finally:
            _capi.lib.tq_batch_destroy(batch)
        assert_same(self, bits, tq.kv_batch_get(["a", "b"], self.p)["bf"])

    def test_tags_and_kv_list(self):
        tq.kv_batch_put(["a", "b", "c"], self.p, fields={"x": np.zeros((3, 2))},
                        tags=[{"score": 0.9, "status": "done"}, None, {"n": [1, 2]}])
        tq.kv_put("a", self.p, tag={"status": "used"})  # a tag alone, merged key by key
        tq.kv_put("d", self.p, tag={"new": True})        # a key with a tag and no field
        want = {"a": {"score": 0.9, "status": "used"}, "b": {}, "c": {"n": [1, 2]},
                "d": {"new": True}}
        listed = tq.kv_list(self.p)
        self.assertEqual({self.p: want}, listed)
        self.assertEqual(["a", "b", "c", "d"], list(listed[self.p]))  # insertion order
        self.assertEqual(want, tq.kv_list()[self.p])
        self.assertEqual({}, tq.kv_list("no-such-partition"))  # as TransferQueue

    def test_select_fields(self):
        tq.kv_batch_put(["a", "b"], self.p, fields={"x": np.ones((2, 2)), "y": [b"1", b"2"],
                                                    "z": np.arange(2)})
        self.assertEqual(["x", "z"], sorted(tq.kv_batch_get(["a", "b"], self.p, ["z", "x"])))
        self.assertEqual(["y"], list(tq.kv_batch_get(["b"], self.p, select_fields="y")))
        with self.assertRaises(tq.NotFoundError) as cm:
            tq.kv_batch_get(["a"], self.p, select_fields=["x", "nope"])
        self.assertIn("nope", str(cm.exception))

    def test_clear_then_get_fails(self):
        tq.kv_batch_put(["a", "b", "c"], self.p, fields={"x": np.arange(3)})
        self.assertIsNone(tq.kv_clear(["a", "c", "never-there"], self.p))  # as TransferQueue
        with self.assertRaises(tq.NotFoundError) as cm:
            tq.kv_batch_get(["a"], self.p)
        self.assertEqual(tq.ERR_NOT_FOUND, cm.exception.status)
        self.assertIsInstance(cm.exception, LookupError)
        self.assertIn("a", str(cm.exception))
        assert_same(self, np.arange(3)[1:2], tq.kv_batch_get("b", self.p)["x"])
        self.assertEqual({self.p: {"b": {}}}, tq.kv_list(self.p))
        tq.kv_clear("a", self.p)  # absent: ignored
        self.assertEqual({self.p: {"b": {}}}, tq.kv_list(self.p))

    def test_bad_arguments(self):
        x3 = np.zeros((3, 2), np.float32)
        with self.assertRaisesRegex(tq.InvalidArgumentError, "'x' has 3 rows for 2 keys"):
            tq.kv_batch_put(["a", "b"], self.p, fields={"x": x3})
        with self.assertRaisesRegex(ValueError, "'y'.*3 rows for 2 keys"):
            tq.kv_batch_put(["a", "b"], self.p, fields={"y": [b"1", b"2", b"3"]})
        with self.assertRaises(tq.InvalidArgumentError) as cm:  # the library's own check
            tq.kv_batch_put(["a", "a", "b"], self.p, fields={"x": x3})
        self.assertEqual(tq.ERR_INVALID, cm.exception.status)
        self.assertIn("twice", str(cm.exception))
        with self.assertRaises(tq.InvalidArgumentError):
            tq.kv_batch_put(["a"], self.p)  # neither fields nor tags
        with self.assertRaisesRegex(tq.InvalidArgumentError, "dimensions"):
            tq.kv_batch_put(["a", "b"], self.p, fields={"n": [np.zeros(2), np.zeros((2, 2))]})
        with self.assertRaisesRegex(TypeError, "'x'.*datetime64"):  # uint32 is stored now
            tq.kv_batch_put(["a"], self.p, fields={"x": np.zeros((1, 2), "datetime64[s]")})
        with self.assertRaisesRegex(TypeError, "'s'.*one value"):  # a column is a list of str
            tq.kv_batch_put(["a"], self.p, fields={"s": "text"})
        with self.assertRaises(TypeError):
            tq.kv_put("a", self.p, tag="not a dict")
        with self.assertRaises(TypeError):
            tq.kv_batch_put("ab", self.p, fields={"x": np.zeros(2)})
        with self.assertRaisesRegex(tq.InvalidArgumentError, "at least one"):
            tq.kv_batch_get(["a"], self.p, select_fields=[])
        # nothing above was written
        with self.assertRaises(tq.NotFoundError):
            tq.kv_batch_get(["a"], self.p)
        self.assertEqual({}, tq.kv_list(self.p))
        # unknown partition, unknown key: the message names what is missing
        tq.kv_put("a", self.p, fields={"x": np.zeros(2)})
        with self.assertRaisesRegex(tq.NotFoundError, "no-such-partition"):
            tq.kv_batch_get(["a"], "no-such-partition")
        with self.assertRaisesRegex(tq.NotFoundError, "k404"):
            tq.kv_batch_get(["a", "k404"], self.p)

    def test_nul_inside_a_name_is_refused(self):
        """The library takes C strings: "k\\0x" would be written as key "k". Refused before
        any call, naming the argument; nothing is written."""
        x, x2 = np.zeros((1, 2)), np.zeros((2, 2))
        cases = [
            ("keys[1]", lambda: tq.kv_batch_put(["a", "k\0x"], self.p, fields={"x": x2})),
            ("key", lambda: tq.kv_put("k\0x", self.p, fields={"x": x[0]})),
            ("partition_id", lambda: tq.kv_put("a", self.p + "\0x", fields={"x": x[0]})),
            ("name 'x\\x00y'", lambda: tq.kv_batch_put(["a"], self.p, fields={"x\0y": x})),
            ("name", lambda: tq.kv_put("a", self.p, fields={"\0": x[0]})),
            ("keys", lambda: tq.kv_batch_get("k\0x", self.p)),
            ("select_fields", lambda: tq.kv_batch_get(["a"], self.p, select_fields="x\0")),
            ("select_fields[1]", lambda: tq.kv_batch_get(["a"], self.p, ["x", "\0"])),
            ("partition_id", lambda: tq.kv_list(self.p + "\0")),
            ("keys[0]", lambda: tq.kv_clear(["k\0x"], self.p)),
            ("partition_id", lambda: tq.kv_clear(["a"], "\0")),
        ]
        for what, call in cases:
            with self.subTest(argument=what):
                with self.assertRaises(ValueError) as cm:
                    call()
                self.assertIsInstance(cm.exception, tq.InvalidArgumentError)
                self.assertEqual(tq.ERR_INVALID, cm.exception.status)
                self.assertIn(what, str(cm.exception))
                self.assertIn("NUL", str(cm.exception))
        self.assertEqual({}, tq.kv_list(self.p))
        self.assertNotIn(self.p + "\0x", tq.kv_list())

    def test_empty_and_long_names_name_the_argument(self):
        """The library's own checks: 1 to 255 bytes, the message says which argument."""
        x = np.zeros((1, 2))
        long = "n" * 256
        cases = [
            ("key", lambda: tq.kv_put("", self.p, fields={"x": x[0]})),
            ("key 1", lambda: tq.kv_batch_put(["a", long], self.p, fields={"x": np.zeros((2, 2))})),
            ("partition", lambda: tq.kv_put("a", long, fields={"x": x[0]})),
            ("partition", lambda: tq.kv_list("")),
            ("field name", lambda: tq.kv_put("a", self.p, fields={long: x[0]})),
            ("field 0", lambda: tq.kv_batch_get(["a"], self.p, select_fields=[""])),
        ]
        for what, call in cases:
            with self.subTest(argument=what):
                with self.assertRaises(tq.InvalidArgumentError) as cm:
                    call()
                self.assertIn(what, str(cm.exception))
        self.assertEqual({}, tq.kv_list(self.p))
        tq.kv_put("n" * 255, self.p, fields={"f" * 255: x[0]})  # the longest names are fine
        self.assertEqual(["n" * 255], list(tq.kv_list(self.p)[self.p]))

    def test_kv_list_reads_every_page(self):
        """40,000 keys of 250 characters: more than one page (8 MiB) of listing."""
        keys = [f"{i:010d}" + "k" * 240 for i in range(40000)]
        for first in range(0, len(keys), 10000):
            tq.kv_batch_put(keys[first:first + 10000], self.p, tags=[{}] * 10000)
        entries = ctypes.c_void_p()
        self.assertEqual(0, _capi.lib.tq_kv_list_page(tq.get_client().handle, self.p.encode(), None, 0,
                                                      byref(entries)))
        try:
            page = _capi.lib.tq_kv_entries_size(entries)
            self.assertIsNotNone(_capi.lib.tq_kv_entries_cursor(entries), "one page held all")
        finally:
            _capi.lib.tq_kv_entries_free(entries)
        self.assertLess(page, len(keys))
        self.assertEqual(keys, list(tq.kv_list(self.p)[self.p]))

    def test_non_contiguous_inputs(self):
        base = np.arange(4 * 6 * 2, dtype=np.float64).reshape(4, 6, 2)
        strided = base[:, ::2, 0]                 # not contiguous
        fortran = np.asfortranarray(base[:, :, 1])
        swapped = base[:, 0, :].astype(">i4")     # big-endian
        nested = [base[0, :1, 0], base[1, ::3, 1], base[2, :3, 0], base[3, :, 1]]  # [1] strided
        keys = ["a", "b", "c", "d"]
        tq.kv_batch_put(keys, self.p, fields={"s": strided, "f": fortran, "e": swapped,
                                              "n": nested})
        got = tq.kv_batch_get(keys, self.p)
        assert_same(self, np.ascontiguousarray(strided), got["s"])
        assert_same(self, np.ascontiguousarray(fortran), got["f"])
        assert_same(self, swapped.astype("=i4"), got["e"])
        for w, g in zip(nested, got["n"]):
            assert_same(self, np.ascontiguousarray(w), g)

    def test_contiguous_put_hands_its_own_buffer_to_c(self):
        # a spy in front of tq_kv_batch_put: the batch it receives points into our arrays
        tensor = np.arange(3 * 1000, dtype=np.float32).reshape(3, 1000)
        rows = [np.arange(n, dtype=np.int64) for n in (5, 1, 9)]
        blobs = [b"first", b"second", b"third"]
        strided = np.arange(6, dtype=np.int32)[::2]
        seen = {}
        real_put = _capi.lib.tq_kv_batch_put_meta

        def spy(client, partition, n, keys, batch, tags, meta_p):
            info = _capi.FieldInfo()
            self.assertEqual(0, _capi.lib.tq_batch_field(batch, b"tensor", byref(info)))
            seen["tensor"] = info.data
            seen["rows"] = [_capi.lib.tq_batch_row(batch, b"rows", i, None, None) for i in range(3)]
            seen["blobs"] = [_capi.lib.tq_batch_row(batch, b"blobs", i, None, None)
                             for i in range(3)]
            self.assertEqual(0, _capi.lib.tq_batch_field(batch, b"strided", byref(info)))
            seen["strided"] = info.data
            return real_put(client, partition, n, keys, batch, tags, meta_p)

        with mock.patch.object(_capi.lib, "tq_kv_batch_put_meta", spy):
            tq.kv_batch_put(["a", "b", "c"], self.p, fields={
                "tensor": tensor, "rows": rows, "blobs": blobs, "strided": strided})
        self.assertEqual(tensor.ctypes.data, seen["tensor"])
        self.assertEqual([r.ctypes.data for r in rows], seen["rows"])
        self.assertEqual([np.frombuffer(b, np.uint8).ctypes.data for b in blobs], seen["blobs"])
        self.assertNotEqual(strided.ctypes.data, seen["strided"])  # the spy can tell a copy
        got = tq.kv_batch_get(["a", "b", "c"], self.p)
        assert_same(self, tensor, got["tensor"])
        assert_same(self, strided, got["strided"])


class EmbeddedTest(KVTests, unittest.TestCase):
    """init() with no target and no TQ_CONTROLLER: a controller and unit in this process."""

    @classmethod
    def setUpClass(cls):
        os.environ.pop("TQ_CONTROLLER", None)
        os.environ.setdefault("TQ_POOL_SIZE", "64M")
        tq.init()

    @classmethod
    def tearDownClass(cls):
        tq.close()


class DaemonTest(KVTests, unittest.TestCase):
    """Real tq-controller and tq-storage processes on loopback, stopped with SIGTERM."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster()
        try:
            tq.init(cls.cluster.address)
        except BaseException:
            cls.cluster.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        tq.close()
        codes = cls.cluster.stop()
        if codes != [0, 0]:
            raise AssertionError(f"daemons exited with {codes} on SIGTERM, want [0, 0]")


class LifecycleTest(unittest.TestCase):
    def test_calls_before_init_and_double_init(self):
        with self.assertRaisesRegex(RuntimeError, "init"):
            tq.kv_list()
        os.environ.pop("TQ_CONTROLLER", None)
        tq.init("embedded")
        try:
            client = tq.get_client()
            tq.init()  # as TransferQueue's: the process stays on its connection
            self.assertIs(client, tq.get_client())
            self.assertIsInstance(tq.kv_list(), dict)
        finally:
            tq.close()
        tq.close()  # idempotent
        with self.assertRaises(RuntimeError):
            tq.kv_batch_get(["a"], "p")

    def test_unreachable_controller(self):
        with socket.socket() as s:  # a loopback port that nobody listens on once released
            s.bind(("127.0.0.1", 0))
            address = "127.0.0.1:%d" % s.getsockname()[1]
        with self.assertRaises(tq.TQError) as cm:
            tq.init(address)
        self.assertEqual(tq.ERR_CONNECTION, cm.exception.status)
        with self.assertRaises(RuntimeError):  # still not initialized
            tq.kv_list()


if __name__ == "__main__":
    unittest.main()
