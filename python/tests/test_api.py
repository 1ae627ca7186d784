"""TransferQueue's API as its users rely on it: the key-value tier, the low-level client,
and the async twins, against the embedded default and real daemons (numpy values: the
value kinds themselves are test_values.py's)."""
import asyncio
import pickle
import time

import numpy as np
import pytest

from tqrdma import BatchMeta, KVBatchMeta, TransferQueueClient


def same(want, got):
    assert isinstance(got, np.ndarray), type(got)
    assert want.dtype == got.dtype and want.shape == got.shape
    assert np.array_equal(want, got)


def ids(rows, width=3, start=0):
    return np.arange(start, start + rows * width, dtype=np.int64).reshape(rows, width)


# ---- the key-value tier ----

def test_kv_put_returns_cumulative_fields_and_merged_tags(tq_api, partition):
    first = tq_api.kv_put("k", partition, fields={"input_ids": np.arange(3)}, tag={"step": 1})
    assert isinstance(first, KVBatchMeta)
    assert (first.keys, first.partition_id, first.fields) == (["k"], partition, ["input_ids"])
    assert first.tags == [{"step": 1}]
    second = tq_api.kv_put("k", partition, fields={"mask": np.ones(3, np.int8)},
                           tag={"status": "running"})
    assert sorted(second.fields) == ["input_ids", "mask"]
    assert second.tags == [{"step": 1, "status": "running"}]
    tag_only = tq_api.kv_put("k", partition, tag={"step": 2})
    assert sorted(tag_only.fields) == ["input_ids", "mask"]
    assert tag_only.tags == [{"step": 2, "status": "running"}]


def test_kv_put_dict_adds_the_key_dimension(tq_api, partition):
    tq_api.kv_put("k", partition, fields={"data": np.array([1, 2, 3, 4])})
    got = tq_api.kv_batch_get("k", partition)
    same(np.array([[1, 2, 3, 4]]), got["data"])


def test_kv_put_needs_fields_or_tag(tq_api, partition):
    with pytest.raises(ValueError, match="fields or tags"):
        tq_api.kv_put("k", partition)
    with pytest.raises(ValueError, match="dict or a TensorDict"):
        tq_api.kv_put("k", partition, fields=[np.arange(3)])


def test_kv_batch_put_and_get(tq_api, partition):
    keys = ["a", "b", "c"]
    meta = tq_api.kv_batch_put(keys, partition, fields={"ids": ids(3)},
                               tags=[{"i": i} for i in range(3)])
    assert meta.size == 3 and meta.keys == keys and meta.fields == ["ids"]
    assert meta.tags == [{"i": 0}, {"i": 1}, {"i": 2}]
    same(ids(3)[[2, 0]], tq_api.kv_batch_get(["c", "a"], partition)["ids"])
    same(ids(3)[[1]], tq_api.kv_batch_get("b", partition, select_fields="ids")["ids"])


def test_kv_batch_put_checks_lengths(tq_api, partition):
    with pytest.raises(ValueError, match="3 rows for 2 keys"):
        tq_api.kv_batch_put(["a", "b"], partition, fields={"ids": ids(3)})
    with pytest.raises(ValueError, match="1 tags for 2 keys"):
        tq_api.kv_batch_put(["a", "b"], partition, fields={"ids": ids(2)}, tags=[{}])
    with pytest.raises(TypeError):
        tq_api.kv_batch_put("a", partition, fields={"ids": ids(1)})
    assert tq_api.kv_list(partition) == {}  # nothing was written


def test_partial_update_keeps_other_fields(tq_api, partition):
    tq_api.kv_batch_put(["a", "b"], partition, fields={"ids": ids(2)})
    tq_api.kv_batch_put(["b"], partition, fields={"response": ids(1, 5)})
    got = tq_api.kv_batch_get(["a", "b"], partition)
    assert sorted(got) == ["ids"]  # the fields every key has
    both = tq_api.kv_batch_get("b", partition)
    assert sorted(both) == ["ids", "response"]
    same(ids(2)[[1]], both["ids"])
    with pytest.raises(ValueError):  # "a" has no response
        tq_api.kv_batch_get(["a", "b"], partition, select_fields=["response"])


def test_unknown_keys_and_fields_are_value_errors(tq_api, partition):
    tq_api.kv_put("k", partition, fields={"ids": np.arange(3)})
    with pytest.raises(ValueError, match="nope"):
        tq_api.kv_batch_get(["k", "nope"], partition)
    with pytest.raises(ValueError):
        tq_api.kv_batch_get("k", partition, select_fields=["missing"])
    with pytest.raises(ValueError):
        tq_api.kv_batch_get("k", partition + ".unknown")


def test_kv_batch_get_by_meta(tq_api, partition):
    meta = tq_api.kv_batch_put(["a", "b"], partition,
                               fields={"ids": ids(2), "mask": np.ones((2, 3), np.int8)})
    got = tq_api.kv_batch_get_by_meta(meta)
    assert sorted(got) == ["ids", "mask"]
    got = tq_api.kv_batch_get_by_meta(meta, select_fields="mask")
    assert sorted(got) == ["mask"]
    with pytest.raises(ValueError, match="select_fields.*not found"):
        tq_api.kv_batch_get_by_meta(meta, select_fields=["nope"])
    with pytest.raises(ValueError, match="partition_id"):
        tq_api.kv_batch_get_by_meta(KVBatchMeta(keys=["a"], tags=[{}]))


def test_kv_list_and_clear(tq_api, partition):
    other = partition + ".other"
    tq_api.kv_batch_put(["a", "b", "c"], partition, fields={"ids": ids(3)},
                        tags=[{"id": i} for i in range(3)])
    tq_api.kv_put("z", other, tag={"id": 9})
    listed = tq_api.kv_list(partition)
    assert list(listed) == [partition]
    assert list(listed[partition]) == ["a", "b", "c"]  # insertion order
    assert [t["id"] for t in listed[partition].values()] == [0, 1, 2]
    every = tq_api.kv_list()
    assert every[partition] == listed[partition] and every[other] == {"z": {"id": 9}}
    assert tq_api.kv_list(partition + ".unknown") == {}
    assert tq_api.kv_clear(["a", "nope"], partition) is None
    assert list(tq_api.kv_list(partition)[partition]) == ["b", "c"]
    tq_api.kv_clear("b", partition)
    with pytest.raises(ValueError):
        tq_api.kv_batch_get("b", partition)
    same(ids(3)[[2]], tq_api.kv_batch_get("c", partition)["ids"])


def test_async_kv_twins(tq_api, partition):
    async def main():
        meta = await tq_api.async_kv_batch_put(["a", "b"], partition, fields={"ids": ids(2)},
                                               tags=[{"i": 0}, {"i": 1}])
        assert meta.fields == ["ids"]
        one = await tq_api.async_kv_put("c", partition, fields={"ids": np.arange(3)},
                                        tag={"i": 2})
        assert one.tags == [{"i": 2}]
        # many requests in flight at once, on one loop
        gets = await asyncio.gather(*[tq_api.async_kv_batch_get(k, partition)
                                      for k in ("a", "b", "c")])
        same(ids(2)[[1]], gets[1]["ids"])
        same(np.arange(3)[None], gets[2]["ids"])
        by_meta = await tq_api.async_kv_batch_get_by_meta(meta)
        same(ids(2), by_meta["ids"])
        assert list((await tq_api.async_kv_list(partition))[partition]) == ["a", "b", "c"]
        await tq_api.async_kv_clear(["a"], partition)
        with pytest.raises(ValueError):
            await tq_api.async_kv_batch_get("a", partition)
    asyncio.run(main())


def test_async_cancelled_request_finishes_safely(tq_api, partition):
    """A cancelled await leaves its request running with its buffers kept: no crash,
    and the put lands whole or not at all."""
    big = np.random.default_rng(0).standard_normal((16, 65536)).astype(np.float32)

    async def main():
        task = asyncio.ensure_future(tq_api.async_kv_batch_put(
            [f"k{i}" for i in range(16)], partition, fields={"x": big}))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    for _ in range(100):  # the request may still be running: up to 5 s for it
        listed = tq_api.kv_list(partition).get(partition, {})
        if len(listed) == 16:
            break
        time.sleep(0.05)
    assert len(listed) in (0, 16)  # atomic
    if listed:
        same(big, tq_api.kv_batch_get([f"k{i}" for i in range(16)], partition)["x"])


# ---- the low-level client ----

def test_put_get_meta_get_data_consumes_once(tq_api, partition):
    client = tq_api.get_client()
    assert isinstance(client, TransferQueueClient)
    written = client.put({"ids": ids(4), "mask": np.ones((4, 3), np.int8)},
                         partition_id=partition)
    assert isinstance(written, BatchMeta) and written.size == 4
    assert written.field_names == ["ids", "mask"] and written.is_ready
    meta = client.get_meta(["ids"], 4, partition, task_name="train")
    assert sorted(meta.global_indexes) == sorted(written.global_indexes)
    assert meta.is_ready and meta.field_names == ["ids"]
    data = client.get_data(meta)
    same(ids(4)[[written.global_indexes.index(i) for i in meta.global_indexes]], data["ids"])
    with pytest.raises(TimeoutError):  # every row consumed by "train"
        client.get_meta(["ids"], 1, partition, task_name="train", timeout_ms=0)
    other = client.get_meta(["ids", "mask"], 4, partition, task_name="eval", timeout_ms=0)
    assert other.size == 4
    assert client.check_consumption_status("train", partition)
    assert not client.check_consumption_status("never", partition)
    assert client.check_production_status(["ids", "mask"], partition)


def test_insert_then_put_fills_rows(tq_api, partition):
    client = tq_api.get_client()
    slots = client.get_meta([], 3, partition, mode="insert")
    assert slots.size == 3 and not slots.is_ready
    assert not client.check_production_status(["ids"], partition)
    filled = client.put({"ids": ids(3)}, metadata=slots)
    assert filled.global_indexes == slots.global_indexes and filled.is_ready
    meta = client.get_meta(["ids"], 3, partition, task_name="t", timeout_ms=0)
    same(ids(3)[[slots.global_indexes.index(i) for i in meta.global_indexes]],
         client.get_data(meta)["ids"])


def test_force_fetch_consumes_nothing(tq_api, partition):
    client = tq_api.get_client()
    client.put({"ids": ids(2)}, partition_id=partition)
    forced = client.get_meta(["ids"], 2, partition, mode="force_fetch", task_name="t")
    assert forced.size == 2
    client.get_data(forced)
    assert client.get_meta(["ids"], 2, partition, task_name="t", timeout_ms=0).size == 2


def test_polling_mode_returns_an_empty_meta(tq_api, partition):
    client = TransferQueueClient(tq_api.get_client().address, polling_mode=True)
    try:
        meta = client.get_meta(["ids"], 1, partition, task_name="t")
        assert meta.size == 0 and isinstance(meta, BatchMeta)
    finally:
        client.close()


def test_get_meta_bad_arguments(tq_api, partition):
    client = tq_api.get_client()
    with pytest.raises(ValueError, match="mode"):
        client.get_meta(["ids"], 1, partition, mode="steal")
    with pytest.raises(ValueError, match="batch_size"):
        client.get_meta(["ids"], 0, partition, task_name="t")
    with pytest.raises(ValueError, match="NUL"):
        client.get_meta(["i\0ds"], 1, partition, task_name="t")
    with pytest.raises(TypeError):
        client.get_meta(["ids"], 1, 7, task_name="t")


def test_custom_meta_round_trips_through_the_controller(tq_api, partition):
    client = tq_api.get_client()
    written = client.put({"ids": ids(2)}, partition_id=partition)
    written.update_custom_meta([{"score": 0.5}, {"score": 1.5}])
    client.set_custom_meta(written)
    meta = client.get_meta(["ids"], 2, partition, task_name="t", timeout_ms=0)
    by_index = dict(zip(written.global_indexes, [0.5, 1.5]))
    assert [m["score"] for m in meta.custom_meta] == [by_index[i] for i in meta.global_indexes]


def test_kv_retrieve_meta_and_keys(tq_api, partition):
    client = tq_api.get_client()
    tq_api.kv_batch_put(["a", "b"], partition, fields={"ids": ids(2)}, tags=[{"t": 1}, {"t": 2}])
    meta = client.kv_retrieve_meta(["b", "a"], partition)
    assert meta.size == 2 and meta.custom_meta == [{"t": 2}, {"t": 1}]
    assert client.kv_retrieve_keys(meta.global_indexes, partition) == ["b", "a"]
    assert client.kv_retrieve_meta(["nope"], partition).size == 0
    created = client.kv_retrieve_meta(["new"], partition, create=True)
    assert created.size == 1 and not created.is_ready
    assert "new" in tq_api.kv_list(partition)[partition]


def test_clear_samples_partition_and_reset(tq_api, partition):
    client = tq_api.get_client()
    written = client.put({"ids": ids(4)}, partition_id=partition)
    assert partition in client.get_partition_list()
    client.get_meta(["ids"], 4, partition, task_name="t", timeout_ms=0)
    assert client.reset_consumption(partition, "t") is True
    again = client.get_meta(["ids"], 4, partition, task_name="t", timeout_ms=0)
    assert again.size == 4
    client.clear_samples(written[:2])
    index, status = client.get_production_status(["ids"], partition)
    assert [int(i) for i, s in zip(index, status) if s == 1] == sorted(written.global_indexes[2:])
    client.clear_partition(partition)
    assert partition not in client.get_partition_list()


def test_get_data_of_a_pickled_or_selected_meta(tq_api, partition):
    """A BatchMeta that crossed a process boundary, or was cut, still reads its rows."""
    client = tq_api.get_client()
    client.put({"ids": ids(4), "mask": np.ones((4, 3), np.int8)}, partition_id=partition)
    meta = client.get_meta(["ids", "mask"], 4, partition, task_name="t", timeout_ms=0)
    whole = client.get_data(meta)
    travelled = pickle.loads(pickle.dumps(meta))
    assert travelled._handle is None
    same(whole["ids"], client.get_data(travelled)["ids"])
    part = meta.select_samples([3, 1]).select_fields(["mask"])
    got = client.get_data(part)
    assert sorted(got) == ["mask"]
    same(whole["mask"][[3, 1]], got["mask"])
    two = BatchMeta.concat(meta.chunk(2))
    same(whole["ids"], client.get_data(two)["ids"])


def test_async_client_twins(tq_api, partition):
    client = tq_api.get_client()

    async def main():
        written = await client.async_put({"ids": ids(3)}, partition_id=partition)
        meta = await client.async_get_meta(["ids"], 3, partition, task_name="t")
        data = await client.async_get_data(meta)
        same(ids(3)[[written.global_indexes.index(i) for i in meta.global_indexes]],
             data["ids"])
        assert await client.async_check_consumption_status("t", partition)
        assert partition in await client.async_get_partition_list()
        await client.async_clear_partition(partition)
    asyncio.run(main())


def test_metas_and_data_outlive_close():
    """A BatchMeta and the tensors read through it may outlive tq.close() (the process's
    exit included): the library's meta is let go before its client, and the data keep
    their memory. Before, the meta's finalizer ran after the client was freed: a crash,
    which UCX's error handler turned into a hang."""
    import subprocess
    import sys
    script = (
        "import numpy as np, tqrdma as tq\n"
        "tq.init()\n"
        "c = tq.get_client()\n"
        "c.put({'x': np.arange(12).reshape(4, 3)}, partition_id='p')\n"
        "meta = c.get_meta(['x'], 4, 'p', task_name='t', timeout_ms=0)\n"
        "data = c.get_data(meta)\n"
        "tq.close()\n"
        "assert data['x'].sum() == 66, data\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_a_dtype_conflict_names_both_dtypes(tq_api, partition):
    tq_api.kv_put("a", partition, fields={"x": np.arange(3)})
    with pytest.raises(ValueError, match="field x: dtype f32 conflicts with the field's i64"):
        tq_api.kv_put("b", partition, fields={"x": np.arange(3, dtype=np.float32)})
    assert list(tq_api.kv_list(partition)[partition]) == ["a"]  # nothing written
