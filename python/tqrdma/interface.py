"""The process-wide API, as TransferQueue's ``transfer_queue`` module has it: init and
close, get_client, and the key-value calls with their async_ twins."""
import atexit
import copy
import json
import os
import tempfile
from contextlib import nullcontext
from ctypes import byref, c_void_p

from . import _async, _capi, _values
from ._capi import lib
from ._errors import ERR_INVALID, InvalidArgumentError
from .client import TransferQueueClient, _kv_entries_dict, _name, _names
from .metadata import KVBatchMeta

_client = None  # the process's TransferQueueClient, as TransferQueue keeps one
_conf = None

# init(conf)'s own section: the client settings of a client config file
# (tq_open's ".json" target), e.g. {"tqrdma": {"controller": "10.0.0.1:7000"}}
_OWN_SECTION = "tqrdma"


def _plain(conf):
    """conf as plain dicts (an OmegaConf DictConfig included)."""
    to_container = getattr(type(conf), "to_container", None)
    if to_container is None:
        try:
            from omegaconf import OmegaConf
            if OmegaConf.is_config(conf):
                return OmegaConf.to_container(conf, resolve=True)
        except ImportError:
            pass
        return copy.deepcopy(dict(conf))
    return to_container(conf)


def _open(settings, polling_mode, sampler):
    """A client from the client settings: through a private config file when there are any."""
    if not settings:
        return TransferQueueClient(None, polling_mode, sampler)
    if not isinstance(settings, dict):
        raise TypeError(f"init: conf[{_OWN_SECTION!r}] is a dict of client settings, not "
                        f"{type(settings).__name__}")
    fd, path = tempfile.mkstemp(prefix="tqrdma-", suffix=".json")  # 0600: it may hold a token
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(settings, f)
        return TransferQueueClient(path, polling_mode, sampler)
    finally:
        os.unlink(path)


def init(conf=None):
    """Connect this process, and return the configuration used.

    conf: None ($TQ_CONTROLLER if set, else a controller and storage unit inside this
    process, which other processes can join at get_client().address); a target string
    ("host:port", a client config ".json", "embedded"); or TransferQueue's config dict,
    of which controller.polling_mode and controller.sampler apply, plus a "tqrdma"
    section of client settings (controller, token_file, timeout_ms, lanes, transport,
    pool_size). A second init while connected keeps the connection, as TransferQueue's.
    """
    global _client, _conf
    if _client is not None:
        return _conf
    if conf is None or isinstance(conf, str):
        _client, _conf = TransferQueueClient(conf), {_OWN_SECTION: {"controller": conf}}
        return _conf
    plain = _plain(conf)
    controller = plain.get("controller") or {}
    client = _open(plain.get(_OWN_SECTION), bool(controller.get("polling_mode", False)),
                   controller.get("sampler"))
    _client, _conf = client, plain
    return _conf


def close():
    """Disconnect (and stop the embedded controller, if this process runs it). Idempotent."""
    global _client, _conf
    client, _client, _conf = _client, None, None
    if client is not None:
        client.close()


atexit.register(close)


def get_client():
    """The process's TransferQueueClient (init first)."""
    if _client is None:
        raise RuntimeError("tqrdma is not initialized; call tqrdma.init() first")
    return _client


def get_metrics_endpoint():
    """The controller's metrics "host:port" when the config names one ("metrics": {"endpoint"}),
    else None: a controller serves metrics when started with --metrics."""
    return ((_conf or {}).get("metrics") or {}).get("endpoint")


# ---- key-value calls ----

def _one_key(fields):
    """kv_put's fields (one key's values, no key dimension) as columns of one row."""
    if _values.is_tensordict(fields):
        return fields
    if not isinstance(fields, dict):
        raise ValueError(f"kv_put: fields is a dict or a TensorDict, not {type(fields).__name__}")
    return {name: _values.one_row(name, value) for name, value in fields.items()}


def _put_args(keys, partition_id, fields, tags, data_parser, what):
    keys = _names(keys, "keys", allow_str=False)
    if fields is None and tags is None:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: give fields or tags (or both)")
    if not keys:
        raise InvalidArgumentError(ERR_INVALID, f"{what}: keys: at least one is required")
    if tags is not None:
        tags = list(tags)
        if len(tags) != len(keys):
            raise InvalidArgumentError(ERR_INVALID, f"{what}: {len(tags)} tags for "
                                                    f"{len(keys)} keys")
        for i, t in enumerate(tags):
            if t is not None and not isinstance(t, dict):
                raise TypeError(f"{what}: tags[{i}] is a dict, not {type(t).__name__}")
    if fields is not None:
        rows = _values.rows_of(fields, what)
        if rows != len(keys):
            first = next(iter(_values.plain_columns(fields)))
            raise InvalidArgumentError(ERR_INVALID, f"{what}: field {first!r} has {rows} rows "
                                                    f"for {len(keys)} keys")
        if data_parser is not None:
            data_parser(_values.plain_columns(fields))  # changes the values in place
    return keys, _name(partition_id, "partition_id"), tags


def _encode(fields, rows):
    """The batch of a keyed put's fields; a tag-only put has none."""
    return nullcontext() if fields is None else _values.encode(fields, rows, "keys")


def _tags_c(tags):
    return None if tags is None else _capi.strings([None if t is None else json.dumps(t)
                                                      for t in tags])


def _put_meta(handle, keys, partition_id):
    """The KVBatchMeta of a keyed put's answer: every field the keys have now, merged tags
    (the meta is let go at once: a KVBatchMeta names keys, not data)."""
    try:
        fields = [lib.tq_meta_field_name(handle, i).decode()
                  for i in range(lib.tq_meta_num_fields(handle))]
        tags = [json.loads(lib.tq_meta_custom(handle, r)) for r in range(len(keys))]
        return KVBatchMeta._made(list(keys), tags, partition_id, fields)
    finally:
        lib.tq_meta_free(handle)


def kv_batch_put(keys, partition_id, fields=None, tags=None, data_parser=None):
    """Write len(keys) keys in one round trip: row i of each field and tags[i] (a dict,
    merged into the key's tag) go to keys[i]. Atomic: on error nothing is written.
    Returns their KVBatchMeta: tags as merged, fields every field the keys have now."""
    keys, partition, tags = _put_args(keys, partition_id, fields, tags, data_parser,
                                      "kv_batch_put")
    client = get_client()
    handle = c_void_p()
    with _encode(fields, len(keys)) as batch:
        client._check(lib.tq_kv_batch_put_meta(client.handle, partition, len(keys),
                                               _capi.strings(keys), batch and batch.handle,
                                               _tags_c(tags), byref(handle)), "kv_batch_put")
    return _put_meta(handle, keys, partition_id)


def kv_put(key, partition_id, fields=None, tag=None, data_parser=None):
    """Write one key: fields maps names to its values (without a key dimension; or a
    TensorDict of batch size 1); tag, a dict, merges into its tag. Fields not given keep
    their values. Returns its KVBatchMeta."""
    _name(key, "key")
    return kv_batch_put([key], partition_id, None if fields is None else _one_key(fields),
                        None if tag is None else [tag], data_parser)


def _get_fields(select_fields):
    if select_fields is None:
        return None
    names = _names(select_fields, "select_fields")
    if not names:
        raise InvalidArgumentError(ERR_INVALID, "select_fields: at least one is required "
                                                "(None reads every field)")
    return names


def _kv_meta(keys, partition_id, select_fields):
    keys = _names(keys, "keys")
    if not keys:
        raise InvalidArgumentError(ERR_INVALID, "kv_batch_get: keys: at least one is required")
    names = _get_fields(select_fields)
    return keys, _name(partition_id, "partition_id"), names


def kv_batch_get(keys, partition_id, select_fields=None):
    """Read keys (a list, or one key) as a TensorDict (a dict without tensordict) of
    columns, rows in the order of keys. select_fields (a list, or one name): None reads
    every field all the keys have. Unknown keys or fields raise a ValueError. The values
    are views of the memory the bytes were read into (no copy after)."""
    keys, partition, names = _kv_meta(keys, partition_id, select_fields)
    client = get_client()
    handle = c_void_p()
    client._check(lib.tq_kv_batch_get(client.handle, partition, len(keys), _capi.strings(keys),
                                      0 if names is None else len(names),
                                      None if names is None else _capi.strings(names),
                                      byref(handle)), "kv_batch_get")
    return _values.from_batch(handle, take=True)


def _by_meta(meta, select_fields):
    if not isinstance(meta, KVBatchMeta):
        raise TypeError(f"kv_batch_get_by_meta: a KVBatchMeta, not {type(meta).__name__}")
    if meta.partition_id is None:
        raise ValueError("kv_batch_get_by_meta: the KVBatchMeta has no partition_id")
    names = _get_fields(select_fields)
    if names is not None and meta.fields is not None:
        missing = [n for n in names if n not in meta.fields]
        if missing:
            raise ValueError(f"kv_batch_get_by_meta: select_fields {missing} not found in "
                             f"the KVBatchMeta's fields {meta.fields}")
    return names if names is not None else meta.fields


def kv_batch_get_by_meta(meta, select_fields=None):
    """kv_batch_get of a KVBatchMeta's keys (its fields, or select_fields of them)."""
    return kv_batch_get(meta.keys, meta.partition_id, _by_meta(meta, select_fields))


def kv_list(partition_id=None):
    """{partition: {key: tag}} with keys in insertion order, of one partition or every one;
    an unknown partition gives {}."""
    return _kv_entries_dict(get_client(), partition_id)


def kv_clear(keys, partition_id):
    """Remove keys (a list, or one key) with their fields and tags; absent keys are ignored."""
    keys = _names(keys, "keys")
    client = get_client()
    client._check(lib.tq_kv_clear(client.handle, _name(partition_id, "partition_id"), len(keys),
                                  _capi.strings(keys)), "kv_clear")


# ---- their async_ twins: the library's non-blocking requests ----

async def async_kv_batch_put(keys, partition_id, fields=None, tags=None, data_parser=None):
    keys, partition, tags = _put_args(keys, partition_id, fields, tags, data_parser,
                                      "kv_batch_put")
    client = get_client()
    batch = None if fields is None else _values.encode(fields, len(keys), "keys")
    keys_c, tags_c = _capi.strings(keys), _tags_c(tags)
    rc, request = _async.submit(client, lib.tq_kv_batch_put_meta_nb, partition, len(keys), keys_c,
                                batch and batch.handle, tags_c,
                                keep=[batch, partition, keys_c, tags_c])
    if rc < 0:
        if batch:
            batch.close()
        client._check(rc, "kv_batch_put")
    await _async.wait_ok(request, "kv_batch_put")
    handle = lib.tq_request_take_meta(request.handle)
    request.free()
    return _put_meta(handle, keys, partition_id)


async def async_kv_put(key, partition_id, fields=None, tag=None, data_parser=None):
    _name(key, "key")
    return await async_kv_batch_put([key], partition_id,
                                    None if fields is None else _one_key(fields),
                                    None if tag is None else [tag], data_parser)


async def async_kv_batch_get(keys, partition_id, select_fields=None):
    keys, partition, names = _kv_meta(keys, partition_id, select_fields)
    client = get_client()
    keys_c = _capi.strings(keys)
    names_c = None if names is None else _capi.strings(names)
    rc, request = _async.submit(client, lib.tq_kv_batch_get_nb, partition, len(keys), keys_c,
                                0 if names is None else len(names), names_c,
                                keep=[partition, keys_c, names_c])
    client._check(rc, "kv_batch_get")
    await _async.wait_ok(request, "kv_batch_get")
    handle = lib.tq_request_take_batch(request.handle)
    request.free()
    return _values.from_batch(handle, take=True)


async def async_kv_batch_get_by_meta(meta, select_fields=None):
    return await async_kv_batch_get(meta.keys, meta.partition_id, _by_meta(meta, select_fields))


async def async_kv_list(partition_id=None):
    return await get_client().async_kv_list(partition_id)


async def async_kv_clear(keys, partition_id):
    keys = _names(keys, "keys")
    client = get_client()
    partition, keys_c = _name(partition_id, "partition_id"), _capi.strings(keys)
    rc, request = _async.submit(client, lib.tq_kv_clear_nb, partition, len(keys), keys_c,
                                keep=[partition, keys_c])
    client._check(rc, "kv_clear")
    (await _async.wait_ok(request, "kv_clear")).free()
