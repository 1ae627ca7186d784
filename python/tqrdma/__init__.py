"""tqrdma: TransferQueue's data API over libtqrdma, an RDMA-native store of training samples.

A worker written for TransferQueue switches by its import:

    import tqrdma as tq                         # was: import transfer_queue as tq
    tq.init()                                   # $TQ_CONTROLLER, else embedded
    meta = tq.kv_batch_put(keys=["a", "b"], partition_id="train",
                           fields={"ids": torch.arange(6).reshape(2, 3)},
                           tags=[{"score": 1}, {"score": 2}])
    tq.kv_batch_get(["b"], "train")             # {"ids": tensor([[3, 4, 5]])}
    tq.kv_list("train")                         # {"train": {"a": {"score": 1}, "b": {...}}}
    client = tq.get_client()                    # TransferQueue's low-level client
    batch = client.get_meta(["ids"], 2, "train", task_name="trainer")
    client.get_data(batch)
    tq.close()

Values keep their kind: torch tensors (every dtype) and numpy arrays, nested rows
(torch.nested tensors or lists of tensors/arrays), lists of str, bytes, and any
other Python object (pickled). Puts hand the tensors' own memory to the library;
gets read straight into the memory of the tensors they return.
"""
from ._errors import (ERR_AUTH, ERR_CONNECTION, ERR_END, ERR_EXISTS, ERR_INVALID, ERR_IO,
                      ERR_LOST, ERR_NOMEM, ERR_NOSPACE, ERR_NOT_FOUND, ERR_PROTOCOL,
                      ERR_TIMEOUT, ERR_UNSUPPORTED, OK, ConnectionFailedError,
                      InvalidArgumentError, NotFoundError, TimedOutError, TQError)
from .client import TransferQueueClient
from .interface import (async_kv_batch_get, async_kv_batch_get_by_meta, async_kv_batch_put,
                        async_kv_clear, async_kv_list, async_kv_put, close, get_client,
                        get_metrics_endpoint, init, kv_batch_get, kv_batch_get_by_meta,
                        kv_batch_put, kv_clear, kv_list, kv_put)
from .metadata import BatchMeta, KVBatchMeta

__version__ = "0.1.0"
__all__ = [
    # the key-value interface
    "init", "close", "get_metrics_endpoint", "kv_put", "kv_batch_put", "kv_batch_get",
    "kv_batch_get_by_meta", "kv_list", "kv_clear", "async_kv_put", "async_kv_batch_put",
    "async_kv_batch_get", "async_kv_batch_get_by_meta", "async_kv_list", "async_kv_clear",
    "KVBatchMeta",
    # the low-level interface
    "get_client", "BatchMeta", "TransferQueueClient",
    # errors: RuntimeError, ValueError, TimeoutError, ConnectionError where they fit
    "TQError", "InvalidArgumentError", "NotFoundError", "TimedOutError", "ConnectionFailedError",
    "OK", "ERR_INVALID", "ERR_NOT_FOUND", "ERR_EXISTS", "ERR_TIMEOUT", "ERR_NOSPACE", "ERR_LOST",
    "ERR_CONNECTION", "ERR_PROTOCOL", "ERR_AUTH", "ERR_NOMEM", "ERR_UNSUPPORTED", "ERR_END",
    "ERR_IO",
]
