"""GB/s of the value layer's puts and gets against the embedded default, on TransferQueue's
"small" data: 1024 rows x 9 fields x 8192 float32 (302 MB a batch). Not a test:

    TQRDMA_LIBRARY=build/lib/libtqrdma.so.0 PYTHONPATH=python \\
        python3 python/tests/bench_values.py [--rows 1024] [--fields 9] [--cols 8192] [-n 5]

Each figure is the median of n runs, each on memory let go before the next (so the
library's receive pool is warm, as in a loop that drops each batch before the next get).
The memcpy lines are the bounds: copying the batch into fresh np.empty memory (page
faults on every page) and into memory already touched."""
import argparse
import os
import statistics
import time
from ctypes import byref, c_void_p

import numpy as np

os.environ.pop("TQ_CONTROLLER", None)
os.environ.setdefault("TQ_POOL_SIZE", "768M")

from tqrdma import _capi, _values  # noqa: E402
from tqrdma._capi import lib  # noqa: E402


def check(client, rc, what):
    if rc < 0:
        raise RuntimeError(f"{what}: {lib.tq_last_error(client).decode()}")


def timed(n, run):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--fields", type=int, default=9)
    ap.add_argument("--cols", type=int, default=8192)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--torch", action="store_true", help="torch tensors instead of numpy")
    args = ap.parse_args()
    rows, n = args.rows, args.n
    rng = np.random.default_rng(0)
    fields = {f"f{i}": rng.standard_normal((rows, args.cols), dtype=np.float32)
              for i in range(args.fields)}
    if args.torch:
        import torch
        fields = {k: torch.from_numpy(v) for k, v in fields.items()}
    total = sum(v.nbytes if isinstance(v, np.ndarray) else v.numel() * 4
                for v in fields.values())
    keys = [f"k{i}" for i in range(rows)]
    keys_c = _capi.strings(keys)
    client = c_void_p()
    check(None, lib.tq_open(b"embedded", byref(client)), "open")
    partition = b"bench"
    report = []

    def gbps(name, seconds):
        report.append((name, total / seconds / 1e9, seconds * 1e3))

    def put():
        with _values.encode(fields, rows, "keys") as batch:
            check(client, lib.tq_kv_batch_put(client, partition, rows, keys_c, batch.handle,
                                              None), "put")
    put()  # the first put creates the fields
    gbps("put (encode + tq_kv_batch_put)", timed(n, put))

    def kv_get(take):
        handle = c_void_p()
        check(client, lib.tq_kv_batch_get(client, partition, rows, keys_c, 0, None,
                                          byref(handle)), "get")
        if take:
            return _values.from_batch(handle, take=True)
        try:
            return _values.from_batch(handle)
        finally:
            lib.tq_batch_destroy(handle)
    gbps("get kv_batch_get, copied out (the package today)", timed(n, lambda: kv_get(False)))
    gbps("get kv_batch_get, taken (wrap)", timed(n, lambda: kv_get(True)))

    if _capi.has("tq_kv_get_meta"):
        def meta_get(mode):
            meta = c_void_p()
            check(client, lib.tq_kv_get_meta(client, partition, rows, keys_c, 0, None,
                                              byref(meta)), "get_meta")
            try:
                return _values.decode(client, meta, mode=mode)
            finally:
                lib.tq_meta_free(meta)
        gbps("get meta + decode mode='wrap' (tq_get_data)", timed(n, lambda: meta_get("wrap")))
        if _capi.has("tq_get_data_into"):
            gbps("get meta + decode mode='into' (tq_get_data_into, fresh memory)",
                 timed(n, lambda: meta_get("into")))

    src = [v if isinstance(v, np.ndarray) else v.numpy() for v in fields.values()]

    def copy_fresh():
        out = [np.empty_like(s) for s in src]
        for o, s in zip(out, src):
            np.copyto(o, s)
        return out
    warm = [np.empty_like(s) for s in src]
    for w in warm:
        w.fill(0)

    def copy_warm():
        for o, s in zip(warm, src):
            np.copyto(o, s)
    gbps("memcpy into fresh np.empty memory", timed(n, copy_fresh))
    gbps("memcpy into touched memory", timed(n, copy_warm))
    lib.tq_close(client)

    print(f"{rows} rows x {args.fields} fields x {args.cols} float32 = {total / 1e6:.0f} MB, "
          f"median of {n}, {'torch' if args.torch else 'numpy'}")
    for name, rate, ms in report:
        print(f"  {rate:6.2f} GB/s  {ms:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
