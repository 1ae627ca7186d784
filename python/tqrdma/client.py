"""TransferQueueClient: TransferQueue's low-level client over one libtqrdma client.

Every method has an ``async_`` twin. The twins of the calls that move data or
wait (put, get_meta, get_data and the key-value calls) run as the library's
non-blocking requests, awaited on their file descriptors; the other twins are
short control calls, run on the loop's default executor.
"""
import asyncio
import functools
import json
import weakref
from ctypes import POINTER, byref, c_char_p, c_int64, c_uint8, c_void_p

import numpy as np

from . import _async, _capi, _values
from ._capi import lib
from ._errors import ERR_INVALID, ERR_TIMEOUT, InvalidArgumentError, error
from ._meta import CMeta, batch_meta
from .metadata import READY_FOR_CONSUME, BatchMeta

# get_meta's modes, as TransferQueue names them
_MODES = {"fetch": _capi.FETCH_READY, "force_fetch": _capi.FETCH_FORCE,
          "insert": _capi.FETCH_INSERT}
# a get_meta that waits forever waits in slices of this
_WAIT_SLICE_MS = 500
# TransferQueue's sampler classes, by the names the controller knows them
_SAMPLERS = {"SequentialSampler": "sequential", "GRPOGroupNSampler": "grpo",
             "RankAwareSampler": "rank_aware", "SeqlenBalancedSampler": "seqlen_balanced"}


def _name(value, what):
    """A str argument as the C string the library takes."""
    if not isinstance(value, str):
        raise TypeError(f"{what}: str expected, got {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: {value!r} has a NUL character inside")
    return value.encode()


def _names(values, what, allow_str=True):
    """A list of str (one str is a list of one where allow_str), checked, as C strings."""
    if isinstance(values, str):
        if not allow_str:
            raise TypeError(f"{what}: a list of str, not one str")
        values = [values]
    values = list(values)
    for i, v in enumerate(values):
        _name(v, f"{what}[{i}]")
    return values


def _subset(cmeta, metadata):
    """metadata's fields when they are fewer than the library's meta has, else None."""
    fields = metadata.field_names
    return None if sorted(cmeta.field_names()) == fields else fields


def _sampler(name):
    """A sampler as the controller names it: ours, or TransferQueue's class or its name."""
    if name is None:
        return None
    if isinstance(name, type) or not isinstance(name, str):
        name = name.__name__ if isinstance(name, type) else type(name).__name__
    return _SAMPLERS.get(name, name)


def _twin(sync):
    """The async_ twin of a short control call: the same call on the default executor."""
    @functools.wraps(sync)
    async def twin(self, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(sync, self, *args, **kwargs))
    twin.__name__ = twin.__qualname__ = "async_" + sync.__name__
    return twin


class TransferQueueClient:
    """A connection to one controller (or the embedded default), as TransferQueue's client.

    polling_mode: get_meta answers at once, with an empty BatchMeta when too few
    rows are ready, instead of waiting up to timeout_ms (TransferQueue's
    controller.polling_mode). sampler: the default sampler of get_meta.
    """

    def __init__(self, target=None, polling_mode=False, sampler=None):
        handle = c_void_p()
        rc = lib.tq_open(None if target is None else _name(str(target), "target"), byref(handle))
        if rc < 0:
            raise error(rc, "init", lib.tq_last_error(None).decode(errors="replace"))
        self._c = handle
        self._metas = weakref.WeakSet()  # freed before the client: they need it
        self.polling_mode = bool(polling_mode)
        self.sampler = _sampler(sampler)

    @property
    def handle(self):
        if self._c is None:
            raise RuntimeError("this TransferQueueClient is closed")
        return self._c

    @property
    def address(self):
        """The controller's "host:port" (the embedded one's too: other processes join it)."""
        return lib.tq_controller_address(self.handle).decode()

    def close(self):
        if getattr(self, "_c", None) is None:
            return
        _async.reap(self, wait=True)  # requests whose waiters went away still borrow memory
        for meta in list(self._metas):
            meta.free()
        handle, self._c = self._c, None
        lib.tq_close(handle)

    def __del__(self):
        self.close()

    def _check(self, rc, what):
        if rc < 0:
            raise error(rc, what, lib.tq_last_error(self._c).decode(errors="replace"))
        return rc

    # ---- get_meta ----
    def _fetch_args(self, data_fields, batch_size, partition_id, mode, task_name,
                    sampling_config, timeout_ms):
        if mode not in _MODES:
            raise InvalidArgumentError(ERR_INVALID, f"get_meta: mode {mode!r} is not one of "
                                                    f"{sorted(_MODES)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(ERR_INVALID, f"get_meta: batch_size must be a positive int, "
                                                    f"not {batch_size!r}")
        # insert makes rows with no field yet: its data_fields are the put's business
        fields = [] if mode == "insert" else _names(data_fields or [], "data_fields")
        config = dict(sampling_config or {})
        sampler = _sampler(config.pop("sampler", None)) or self.sampler
        keep = [_name(partition_id, "partition_id"), _capi.strings(fields)]
        args = _capi.FetchArgs(partition=keep[0], fields=keep[1] if fields else None,
                               num_fields=len(fields), batch_size=batch_size, mode=_MODES[mode])
        if task_name is not None:
            keep.append(_name(task_name, "task_name"))
            args.task = keep[-1]
        if sampler is not None:
            keep.append(_name(sampler, "sampler"))
            args.sampler = keep[-1]
        if config:
            keep.append(json.dumps(config).encode())
            args.sampler_args = keep[-1]
        if timeout_ms is None:
            timeout_ms = 0 if self.polling_mode else -1
        args.timeout_ms = timeout_ms
        return args, keep

    def _meta_or_empty(self, rc, handle, mode, what, detail=None):
        """The BatchMeta of a get_meta's outcome: polling mode answers a shortfall empty."""
        if rc == ERR_TIMEOUT and self.polling_mode:
            return BatchMeta.empty()
        if rc < 0:
            raise error(rc, what, detail if detail is not None else
                        lib.tq_last_error(self._c).decode(errors="replace"))
        return batch_meta(CMeta(self, handle), ready=mode == "fetch")

    def get_meta(self, data_fields, batch_size, partition_id, mode="fetch", task_name=None,
                 sampling_config=None, timeout_ms=None):
        """A BatchMeta of batch_size rows of partition_id.

        mode "fetch": rows whose data_fields are all produced and that task_name has not
        consumed; they become consumed (in flight until the BatchMeta is dropped, back to
        the task if its read fails). Waits for enough rows up to timeout_ms (None: the
        client's polling_mode decides: answer now, or wait). "force_fetch": rows in any
        state, consuming nothing. "insert": batch_size new rows, to fill with put.
        Raises TimedOutError when too few rows came in time, and TQError with status
        ERR_END once the partition is sealed and the task has had every row.
        """
        args, keep = self._fetch_args(data_fields, batch_size, partition_id, mode, task_name,
                                      sampling_config, timeout_ms)
        forever = args.timeout_ms < 0
        if forever:  # in slices: a C call cannot be interrupted (Ctrl-C) while it waits
            args.timeout_ms = _WAIT_SLICE_MS
        handle = c_void_p()
        while True:
            rc = lib.tq_get_meta(self.handle, byref(args), byref(handle))
            if not (forever and rc == ERR_TIMEOUT):  # a timeout consumed nothing: ask again
                return self._meta_or_empty(rc, handle, mode, "get_meta")

    async def async_get_meta(self, data_fields, batch_size, partition_id, mode="fetch",
                             task_name=None, sampling_config=None, timeout_ms=None):
        args, keep = self._fetch_args(data_fields, batch_size, partition_id, mode, task_name,
                                      sampling_config, timeout_ms)
        forever = args.timeout_ms < 0  # a request's wait is bounded: ask again, as get_meta
        while True:
            rc, request = _async.submit(self, lib.tq_get_meta_nb, byref(args),
                                        keep=[args, keep])
            self._check(rc, "get_meta")
            status = await _async.wait(request)
            if status >= 0:
                handle = lib.tq_request_take_meta(request.handle)
                request.free()
                return batch_meta(CMeta(self, handle), ready=mode == "fetch")
            detail = request.error()
            request.free()
            if status != ERR_TIMEOUT or not forever:
                return self._meta_or_empty(status, None, mode, "get_meta", detail)

    # ---- put ----
    def _put_plan(self, data, metadata, partition_id):
        rows = _values.rows_of(data, "put")
        if metadata is None:
            if partition_id is None:
                raise ValueError("put: give metadata (from get_meta) or a partition_id")
            return _name(partition_id, "partition_id"), None, rows
        if metadata.size != rows:
            raise ValueError(f"put: data has {rows} rows, metadata {metadata.size} samples")
        partitions = set(metadata.partition_ids)
        if len(partitions) > 1:
            raise ValueError(f"put: metadata spans partitions {sorted(partitions)}: put each "
                             "of metadata.chunk_by_partition() on its own")
        pid = metadata.partition_ids[0] if partitions else partition_id
        return _name(pid, "partition_id"), (c_int64 * rows)(*metadata.global_indexes), rows

    def _put_result(self, data, metadata, partition, indexes_out, rows):
        if metadata is None:
            metadata = BatchMeta(list(indexes_out), [partition.decode()] * rows)
        else:
            metadata = metadata.copy()
        return metadata.add_fields(data)

    def put(self, data, metadata=None, partition_id=None):
        """Write data (a TensorDict or dict of columns) to the rows of metadata, or to new rows
        of partition_id; returns the BatchMeta of the rows written, with data's fields."""
        partition, indexes, rows = self._put_plan(data, metadata, partition_id)
        out = (c_int64 * rows)()
        with _values.encode(data, rows, "put") as batch:
            self._check(lib.tq_put(self.handle, partition, batch.handle, indexes, out), "put")
        return self._put_result(data, metadata, partition, out, rows)

    async def async_put(self, data, metadata=None, partition_id=None):
        partition, indexes, rows = self._put_plan(data, metadata, partition_id)
        out = (c_int64 * rows)()
        batch = _values.encode(data, rows, "put")
        try:
            rc, request = _async.submit(self, lib.tq_put_nb, partition, batch.handle, indexes,
                                        out, keep=[batch, indexes, out])
            self._check(rc, "put")
        except BaseException:
            batch.close()
            raise
        await _async.wait_ok(request, "put")
        return self._put_result(data, metadata, partition, out, rows)

    # ---- get_data ----
    def _readable(self, metadata, what):
        """The tq_meta to read metadata's rows with: its own, or the controller's answer."""
        if not isinstance(metadata, BatchMeta):
            raise TypeError(f"{what}: a BatchMeta, not {type(metadata).__name__}")
        if metadata._handle is not None and metadata._handle.covers(metadata):
            return metadata._handle
        partitions = set(metadata.partition_ids)
        if len(partitions) != 1:
            raise ValueError(f"{what}: metadata spans partitions {sorted(partitions)}: read each "
                             "of metadata.chunk_by_partition() on its own")
        fields = metadata.field_names
        handle = c_void_p()
        self._check(lib.tq_get_meta_rows(
            self.handle, _name(metadata.partition_ids[0], "partition_id"), metadata.size,
            (c_int64 * metadata.size)(*metadata.global_indexes), len(fields),
            _capi.strings(fields), byref(handle)), what)
        return CMeta(self, handle)

    def get_data(self, metadata):
        """The data of metadata's rows and fields, as a TensorDict (a dict without tensordict).
        The values are views of the memory the bytes were read into (no copy after)."""
        if metadata.size == 0:
            return _values.empty()
        cmeta = self._readable(metadata, "get_data")
        return _values.decode(self.handle, cmeta.handle, _subset(cmeta, metadata),
                              mode=None if _subset(cmeta, metadata) is None else "into")

    async def async_get_data(self, metadata):
        if metadata.size == 0:
            return _values.empty()
        cmeta = self._readable(metadata, "get_data")
        fields = _subset(cmeta, metadata)
        if fields is None:  # the whole meta: into the library's pooled buffers
            rc, request = _async.submit(self, lib.tq_get_data_nb, cmeta.handle, keep=[cmeta])
            self._check(rc, "get_data")
            await _async.wait_ok(request, "get_data")
            batch = lib.tq_request_take_batch(request.handle)
            request.free()
            return _values.from_batch(batch, take=True)
        dst = _values.Into(cmeta.handle, fields)
        rc, request = _async.submit(self, lib.tq_get_data_into_nb, cmeta.handle, dst.handle,
                                    keep=[cmeta, dst])
        if rc < 0:
            dst.close()
        self._check(rc, "get_data")
        await _async.wait_ok(request, "get_data")
        request.free()
        return dst.finish()

    # ---- clearing and consumption ----
    def clear_partition(self, partition_id):
        """Remove a partition with all its rows."""
        self._check(lib.tq_clear_partition(self.handle, _name(partition_id, "partition_id")),
                    "clear_partition")

    def clear_samples(self, metadata):
        """Remove metadata's rows (their indexes become free)."""
        for chunk in metadata.chunk_by_partition():
            self._check(lib.tq_clear(self.handle, _name(chunk.partition_ids[0], "partition_id"),
                                     chunk.size, (c_int64 * chunk.size)(*chunk.global_indexes)),
                        "clear_samples")

    def reset_consumption(self, partition_id, task_name=None):
        """Forget what task_name (None: every task) consumed; True once done."""
        self._check(lib.tq_reset_consumption(
            self.handle, _name(partition_id, "partition_id"),
            None if task_name is None else _name(task_name, "task_name")), "reset_consumption")
        return True

    # ---- status ----
    def _status(self, call, what, *args):
        out = POINTER(c_uint8)()
        n = self._check(call(self.handle, *args, byref(out)), what)
        try:
            status = np.ctypeslib.as_array(out, (n,)).astype(np.int8) if n else \
                np.zeros(0, np.int8)
        finally:
            _capi.libc_free(out)
        return status

    def get_production_status(self, data_fields, partition_id):
        """(global indexes, status): 1 where every one of data_fields is produced."""
        fields = _names(data_fields, "data_fields")
        status = self._status(lib.tq_production_status, "get_production_status",
                              _name(partition_id, "partition_id"), len(fields),
                              _capi.strings(fields))
        return _values.index_and_status(status)

    def get_consumption_status(self, task_name, partition_id):
        """(global indexes, status): 1 where task_name has consumed the row."""
        status = self._status(lib.tq_consumption_status, "get_consumption_status",
                              _name(partition_id, "partition_id"), _name(task_name, "task_name"))
        return _values.index_and_status(status)

    def check_production_status(self, data_fields, partition_id):
        """Whether every row of the partition has every one of data_fields produced."""
        _, status = self.get_production_status(data_fields, partition_id)
        return len(status) > 0 and bool((status == READY_FOR_CONSUME).all())

    def check_consumption_status(self, task_name, partition_id):
        """Whether task_name has consumed every row of the partition."""
        _, status = self.get_consumption_status(task_name, partition_id)
        return len(status) > 0 and bool((status == 1).all())

    def get_partition_list(self):
        """The partitions the controller has, in creation order."""
        text = c_char_p()
        self._check(lib.tq_partitions(self.handle, None, byref(text)), "get_partition_list")
        try:
            return [p["partition"] for p in json.loads(text.value)]
        finally:
            _capi.libc_free(text)

    # ---- custom meta and keys ----
    def set_custom_meta(self, metadata):
        """Store metadata's custom_meta (one dict per row) in the controller."""
        for chunk in metadata.chunk_by_partition():
            texts = [json.dumps(m) for m in chunk.custom_meta]
            self._check(lib.tq_set_custom_meta(
                self.handle, _name(chunk.partition_ids[0], "partition_id"), chunk.size,
                (c_int64 * chunk.size)(*chunk.global_indexes), _capi.strings(texts)),
                "set_custom_meta")

    def kv_retrieve_meta(self, keys, partition_id, create=False):
        """The BatchMeta of keys' rows, in their order (create: new keys get rows first);
        keys that have none are left out, so unknown keys give an empty BatchMeta."""
        keys = _names(keys, "keys")
        if not keys:
            return BatchMeta.empty()
        partition = _name(partition_id, "partition_id")
        indexes = (c_int64 * len(keys))()
        self._check(lib.tq_kv_indexes(self.handle, partition, len(keys), _capi.strings(keys),
                                      int(bool(create)), indexes), "kv_retrieve_meta")
        found = [i for i in indexes if i >= 0]
        if not found:
            return BatchMeta.empty()
        handle = c_void_p()
        self._check(lib.tq_get_meta_rows(self.handle, partition, len(found),
                                         (c_int64 * len(found))(*found), 0, None, byref(handle)),
                    "kv_retrieve_meta")
        return batch_meta(CMeta(self, handle), ready=False)

    def kv_retrieve_keys(self, global_indexes, partition_id):
        """The keys of rows (None for a row without a key)."""
        indexes = [int(i) for i in global_indexes]
        keys = POINTER(c_char_p)()
        self._check(lib.tq_kv_keys(self.handle, _name(partition_id, "partition_id"),
                                   len(indexes), (c_int64 * len(indexes))(*indexes), byref(keys)),
                    "kv_retrieve_keys")
        try:
            return [None if keys[i] is None else keys[i].decode() for i in range(len(indexes))]
        finally:
            lib.tq_kv_keys_free(keys)

    def kv_list(self, partition_id=None):
        """{partition: {key: tag}}; an unknown partition gives {}."""
        return _kv_entries_dict(self, partition_id)

    async def async_kv_list(self, partition_id=None):
        partition = None if partition_id is None else _name(partition_id, "partition_id")
        rc, request = _async.submit(self, lib.tq_kv_list_nb, partition, keep=[partition])
        self._check(rc, "kv_list")
        await _async.wait_ok(request, "kv_list")
        entries = lib.tq_request_take_entries(request.handle)
        request.free()
        out = {}
        try:
            _add_entries(out, entries)
        finally:
            lib.tq_kv_entries_free(entries)
        return out


def _add_entries(out, entries):
    for i in range(lib.tq_kv_entries_size(entries)):
        partition = lib.tq_kv_entries_partition(entries, i).decode()
        key = lib.tq_kv_entries_key(entries, i).decode()
        out.setdefault(partition, {})[key] = json.loads(lib.tq_kv_entries_tag(entries, i))


def _kv_entries_dict(client, partition_id):
    """kv_list page by page: one answer of the controller is bounded, a listing is not."""
    partition = None if partition_id is None else _name(partition_id, "partition_id")
    out, cursor = {}, None
    while True:
        entries = c_void_p()
        client._check(lib.tq_kv_list_page(client.handle, partition, cursor, 0, byref(entries)),
                      "kv_list")
        try:
            _add_entries(out, entries)
            cursor = lib.tq_kv_entries_cursor(entries)  # bytes, copied: valid after the free
        finally:
            lib.tq_kv_entries_free(entries)
        if cursor is None:
            return out


for _sync in (TransferQueueClient.clear_partition, TransferQueueClient.clear_samples,
              TransferQueueClient.reset_consumption, TransferQueueClient.get_production_status,
              TransferQueueClient.get_consumption_status,
              TransferQueueClient.check_production_status,
              TransferQueueClient.check_consumption_status, TransferQueueClient.get_partition_list,
              TransferQueueClient.set_custom_meta, TransferQueueClient.kv_retrieve_meta,
              TransferQueueClient.kv_retrieve_keys):
    setattr(TransferQueueClient, "async_" + _sync.__name__, _twin(_sync))
del _sync
