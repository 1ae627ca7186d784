"""BatchMeta and KVBatchMeta on their own: TransferQueue's operations, no library call."""
import pickle

import numpy as np
import pytest

from tqrdma import BatchMeta, KVBatchMeta


def meta(n=5, partition="p"):
    schema = {"ids": {"dtype": np.dtype(np.int64), "shape": (3,), "is_nested": False,
                      "is_non_tensor": False},
              "resp": {"dtype": np.dtype(np.float32), "shape": None, "is_nested": True,
                       "is_non_tensor": False, "per_sample_shapes": [(i + 1,) for i in range(n)]}}
    return BatchMeta(list(range(10, 10 + n)), [partition] * n, schema, [1] * n,
                     extra_info={"step": 3}, custom_meta=[{"i": i} for i in range(n)])


def test_shape_and_views():
    m = meta()
    assert m.size == len(m) == 5 and m.field_names == ["ids", "resp"] and m.is_ready
    assert m.get_shapes("resp") == [(1,), (2,), (3,), (4,), (5,)]
    assert m.get_shapes("ids") == [(3,)] * 5 and m.get_dtypes("ids") == [np.dtype(np.int64)] * 5
    s = m.samples[2]
    assert (s.global_index, s.partition_id, s.custom_meta["i"]) == (12, "p", 2)
    assert s.fields["resp"]["shape"] == (3,)
    with pytest.raises(TypeError):
        s.custom_meta["i"] = 9
    with pytest.raises(KeyError):
        m.get_shapes("nope")


def test_select_chunk_concat_reorder():
    m = meta()
    part = m.select_samples([4, 0])
    assert part.global_indexes == [14, 10] and part.custom_meta == [{"i": 4}, {"i": 0}]
    assert part.field_schema["resp"]["per_sample_shapes"] == [(5,), (1,)]
    assert m.select_fields(["ids"]).field_names == ["ids"]
    chunks = m.chunk(2)
    assert [c.size for c in chunks] == [3, 2]
    whole = BatchMeta.concat(chunks)
    assert whole.global_indexes == m.global_indexes
    assert whole.field_schema["resp"]["per_sample_shapes"] == m.field_schema["resp"]["per_sample_shapes"]
    assert m[1:3].global_indexes == [11, 12] and m[-1].global_indexes == [14]
    r = m.copy()
    r.reorder([4, 3, 2, 1, 0])
    assert r.global_indexes == [14, 13, 12, 11, 10] and r.custom_meta[0] == {"i": 4}
    with pytest.raises(ValueError):
        r.reorder([0, 0, 1, 2, 3])
    with pytest.raises(ValueError):
        m.select_samples([5])
    with pytest.raises(ValueError, match="fields"):
        BatchMeta.concat([m, m.select_fields(["ids"])])
    assert BatchMeta.concat([]).size == 0


def test_union_and_custom_meta():
    m = meta(2)
    other = BatchMeta(m.global_indexes, m.partition_ids,
                      {"reward": {"dtype": np.dtype(np.float32), "shape": (), "is_nested": False,
                                  "is_non_tensor": False}}, [1, 0], custom_meta=[{"r": 1}, {}])
    u = m.union(other)
    assert u.field_names == ["ids", "resp", "reward"]
    assert list(u.production_status) == [1, 0] and not u.is_ready
    assert u.custom_meta == [{"i": 0, "r": 1}, {"i": 1}]
    with pytest.raises(ValueError, match="same samples"):
        m.union(meta(2, "q"))
    m.update_custom_meta([{"x": 1}, {"x": 2}])
    assert m.get_all_custom_meta() == [{"i": 0, "x": 1}, {"i": 1, "x": 2}]
    with pytest.raises(ValueError):
        m.update_custom_meta([{}])


def test_pickles_without_the_handle():
    m = meta()
    m._handle = object()  # stands for the process-local library meta
    copy = pickle.loads(pickle.dumps(m))
    assert copy._handle is None and copy.global_indexes == m.global_indexes
    copy.production_status[0] = 0  # writable after unpickling
    assert copy.extra_info == {"step": 3}


def test_kv_batch_meta():
    kv = KVBatchMeta(keys=["a", "b", "c"], tags=[{}, {"t": 1}, {}], partition_id="p",
                     fields=["x"])
    assert kv.size == 3 and kv.select_keys(["c", "a"]).keys == ["c", "a"]
    with pytest.raises(RuntimeError):
        kv.select_keys(["zz"])
    with pytest.raises(ValueError):
        KVBatchMeta(keys=["a", "a"], tags=[{}, {}])
    with pytest.raises(ValueError):
        KVBatchMeta(keys=["a"], tags=[])
    assert [c.keys for c in kv.chunk(2)] == [["a", "b"], ["c"]]
    assert KVBatchMeta.concat(kv.chunk(2)).keys == ["a", "b", "c"]
    with pytest.raises(ValueError, match="partitions"):
        KVBatchMeta.concat([kv, KVBatchMeta(["z"], [{}], "q", ["x"])])
    kv.reorder([2, 1, 0])
    assert kv.keys == ["c", "b", "a"] and kv.tags[1] == {"t": 1}
