#!/usr/bin/env python3
"""tqrdma's Python package against the C library, in one run, on the same data.

Throughput: kv_batch_put, then kv_batch_get, of --rows keys with --fields float32 fields
of --elems elements a row (TransferQueue's "small" data by default: 1024 x 9 x 8192, 288
MiB a call), as numpy arrays and as torch tensors (when torch imports), each call timed;
then tq-rdma-bench --mode kv on the same shape (tq_kv_batch_put + tq_kv_batch_get, timed
the same way: the same keys overwritten each iteration, every field read back), and
the ratio Python / C. TransferQueue's published figure for that data is printed beside.
Overhead: a 1-row kv_put (and kv_batch_get of that key) from Python against the same
C calls (tq-rdma-bench --mode kv --rows 1), min and median microseconds a call.

Runs on the embedded default (a controller and a storage unit inside each process: the
Python one, then tq-rdma-bench's, one after the other), or on --controller HOST:PORT.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_PYTHON = os.path.dirname(HERE)  # python/: the package in this source tree
REPO = os.path.dirname(SOURCE_PYTHON)
TQ_PUBLISHED_GBPS = 2.56  # TransferQueue, SimpleStorage backend, "small" data, put+get
PARTITION = "pybench"


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python3 python/bench/bench.py --build build   (the package of this "
               "source tree with build/'s libtqrdma and tq-rdma-bench). GB/s is 1e9 bytes a "
               "second, Gbps 1e9 bits; put+get is both calls' bytes over both calls' time, as "
               "TransferQueue's perftest counts its total.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1024, help="keys a call (default 1024)")
    p.add_argument("--fields", type=int, default=9, help="fields a key (default 9)")
    p.add_argument("--elems", type=int, default=8192,
                   help="float32 elements of a field of one row (default 8192: 32 KiB)")
    p.add_argument("--iters", type=int, default=10, help="timed calls of each (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--calls", type=int, default=2000,
                   help="1-row calls for the overhead figures (default 2000; 0: skip)")
    p.add_argument("--call-elems", type=int, default=1024,
                   help="float32 elements of the 1-row calls' one field (default 1024: 4 KiB)")
    p.add_argument("--controller", metavar="HOST:PORT",
                   help="a running tq-controller (default: $TQ_CONTROLLER, else embedded)")
    p.add_argument("--build", metavar="DIR",
                   help="a cmake build directory: its lib/libtqrdma.so.0 for the package "
                        "(imported from this source tree) and its tools/tq-rdma-bench")
    p.add_argument("--c-bench", metavar="PATH",
                   help="tq-rdma-bench (default: --build's, else $TQ_RDMA_BENCH, else "
                        "build-release/ or build/ of this tree, else PATH)")
    p.add_argument("--no-c", action="store_true", help="Python figures only")
    p.add_argument("--frameworks", default="numpy,torch",
                   help="comma-separated: numpy, torch (default both; torch when it imports)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, no table")
    a = p.parse_args()
    for name in ("rows", "fields", "elems", "iters", "call_elems"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if a.warmup < 0 or a.calls < 0:
        p.error("--warmup and --calls cannot be negative")
    a.frameworks = [f for f in a.frameworks.split(",") if f]
    bad = set(a.frameworks) - {"numpy", "torch"}
    if bad:
        p.error(f"--frameworks: unknown {', '.join(sorted(bad))} (numpy, torch)")
    return a


def setup_environment(a):
    """Library, package and C bench as asked, before tqrdma is imported."""
    if a.build:
        build = os.path.abspath(a.build)
        lib = os.path.join(build, "lib", "libtqrdma.so.0")
        if not os.path.exists(lib):
            sys.exit(f"bench: no {lib}: build it (cmake --build {a.build})")
        os.environ.setdefault("TQRDMA_LIBRARY", lib)
        sys.path.insert(0, SOURCE_PYTHON)
        a.c_bench = a.c_bench or os.path.join(build, "tools", "tq-rdma-bench")
    # one machine: network transports on loopback, as ci/bench.sh has it
    os.environ.setdefault("UCX_NET_DEVICES", "lo")
    os.environ.setdefault("FI_TCP_IFACE", "lo")
    if a.controller is None and not os.environ.get("TQ_CONTROLLER"):
        # the embedded pool, sized as tq-rdma-bench sizes its own: an overwrite writes the
        # new extents before it frees the old ones
        data = a.rows * a.fields * a.elems * 4
        os.environ.setdefault("TQ_POOL_SIZE", f"{((2 * data + (64 << 20)) >> 20) + 1}M")


def find_c_bench(a):
    if a.no_c:
        return None
    candidates = [a.c_bench, os.environ.get("TQ_RDMA_BENCH"),
                  os.path.join(REPO, "build-release", "tools", "tq-rdma-bench"),
                  os.path.join(REPO, "build", "tools", "tq-rdma-bench"),
                  shutil.which("tq-rdma-bench")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    if a.c_bench:
        sys.exit(f"bench: {a.c_bench} is not an executable")
    print("bench: no tq-rdma-bench found (--c-bench, --build): C figures skipped",
          file=sys.stderr)
    return None


def stats(ns, nbytes):
    """Per-call times (ns) of calls that each moved nbytes."""
    total = sum(ns)
    return {"calls": len(ns), "seconds": total / 1e9,
            "bytes_per_s": nbytes * len(ns) / (total / 1e9) if total else 0.0,
            "min_us": min(ns) / 1e3, "p50_us": statistics.median(ns) / 1e3,
            "mean_us": total / len(ns) / 1e3}


def make_fields(a, framework):
    import numpy as np
    rng = np.random.default_rng(7)
    arrays = {f"f{i}": rng.standard_normal((a.rows, a.elems), dtype=np.float32)
              for i in range(a.fields)}
    if framework == "numpy":
        return arrays
    import torch
    return {name: torch.from_numpy(v) for name, v in arrays.items()}


def to_numpy(v):
    return v.numpy() if type(v).__module__.startswith("torch") else v


def throughput(tq, a, framework):
    """kv_batch_put then kv_batch_get of the same keys, each call timed, as tq-rdma-bench's
    kv mode does it. Returns (put stats, get stats, note)."""
    fields = make_fields(a, framework)
    keys = [f"k{i}" for i in range(a.rows)]
    names = list(fields)
    nbytes = a.rows * a.fields * a.elems * 4
    note = ""
    try:
        tq.kv_batch_put(keys, PARTITION, fields=fields)
    except (TypeError, tq.TQError) as e:
        if framework != "torch":
            raise
        # this tqrdma takes numpy only: hand it the tensors' own memory, no copy
        note = f"tensors passed as numpy views (this tqrdma: {type(e).__name__})"
        fields = {n: t.numpy() for n, t in fields.items()}
    put_ns, get_ns = [], []
    for it in range(a.warmup + a.iters):
        t0 = time.perf_counter_ns()
        tq.kv_batch_put(keys, PARTITION, fields=fields)
        t1 = time.perf_counter_ns()
        got = tq.kv_batch_get(keys, PARTITION, select_fields=names)
        t2 = time.perf_counter_ns()
        if it == 0:  # untimed check, as tq-rdma-bench checks its first read
            import numpy as np
            for n in names:
                want, have = to_numpy(fields[n]), to_numpy(got[n])
                if not np.array_equal(np.asarray(want), np.asarray(have)):
                    sys.exit(f"bench: field {n} read back differs")
            if framework == "torch" and not note and type(got[names[0]]).__module__ != "torch":
                note = "read back as numpy arrays"
        del got
        if it >= a.warmup:
            put_ns.append(t1 - t0)
            get_ns.append(t2 - t1)
    tq.kv_clear(keys, PARTITION)
    return stats(put_ns, nbytes), stats(get_ns, nbytes), note


def overhead(tq, a):
    """One key, one field of --call-elems float32: kv_put, then kv_batch_get, --calls times."""
    import numpy as np
    row = np.arange(a.call_elems, dtype=np.float32)
    put_ns, get_ns = [], []
    warm = max(a.warmup, 50)
    for it in range(warm + a.calls):
        t0 = time.perf_counter_ns()
        tq.kv_put("one", PARTITION, fields={"x": row})
        t1 = time.perf_counter_ns()
        tq.kv_batch_get(["one"], PARTITION, select_fields=["x"])
        t2 = time.perf_counter_ns()
        if it >= warm:
            put_ns.append(t1 - t0)
            get_ns.append(t2 - t1)
    tq.kv_clear(["one"], PARTITION)
    return stats(put_ns, a.call_elems * 4), stats(get_ns, a.call_elems * 4)


def run_c(c_bench, a, rows, fields, elems, iters, warmup):
    """tq-rdma-bench --mode kv: {op: its JSON line} for kv_put and kv_get."""
    cmd = [c_bench, "--mode", "kv", "--dtype", "f32", "--rows", str(rows), "--fields",
           str(fields), "--field-bytes", str(elems * 4), "--iters", str(iters),
           "--warmup", str(warmup), "--json"]
    if a.controller:
        cmd += ["--controller", a.controller]
    env = dict(os.environ)
    env.pop("TQ_POOL_SIZE", None)  # it sizes its own embedded pool
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    return {l["op"]: l for l in lines}, " ".join(cmd)


def gbps(bps):
    return bps * 8 / 1e9


def main():
    a = parse_args()
    setup_environment(a)
    c_bench = find_c_bench(a)
    import tqrdma as tq
    from tqrdma import _capi

    frameworks = []
    for f in a.frameworks:
        if f == "torch" and os.environ.get("TQRDMA_NO_TORCH") != "1":
            try:
                import torch  # noqa: F401
            except ImportError:
                print("bench: torch does not import: numpy only", file=sys.stderr)
                continue
        elif f == "torch":
            continue
        frameworks.append(f)

    target = a.controller or os.environ.get("TQ_CONTROLLER") or "embedded"
    mib = a.rows * a.fields * a.elems * 4 / 2**20
    results = []  # (op, who, stats-like dict, note)
    tq.init(a.controller)
    try:
        for f in frameworks:
            put, get, note = throughput(tq, a, f)
            results += [("kv_batch_put", f"python/{f}", put, note),
                        ("kv_batch_get", f"python/{f}", get, note)]
        calls = overhead(tq, a) if a.calls else None
    finally:
        tq.close()  # its embedded cluster is gone before tq-rdma-bench starts its own

    c_cmds = []
    c_calls = None
    if c_bench:
        c, cmd = run_c(c_bench, a, a.rows, a.fields, a.elems, a.iters, a.warmup)
        c_cmds.append(cmd)
        results += [("kv_batch_put", "C", c["kv_put"], ""), ("kv_batch_get", "C", c["kv_get"], "")]
        if a.calls:
            c_calls, cmd = run_c(c_bench, a, 1, 1, a.call_elems, a.calls, max(a.warmup, 50))
            c_cmds.append(cmd)

    def find(op, who):
        return next((r[2] for r in results if r[0] == op and r[1] == who), None)

    def total(who):
        put, get = find("kv_batch_put", who), find("kv_batch_get", who)
        s = put["seconds"] + get["seconds"]
        return (put["bytes_per_s"] * put["seconds"] + get["bytes_per_s"] * get["seconds"]) / s

    whos = [f"python/{f}" for f in frameworks] + (["C"] if c_bench else [])
    totals = {w: total(w) for w in whos}

    if a.json:
        common = {"rows": a.rows, "fields": a.fields, "elems": a.elems, "dtype": "float32",
                  "iters": a.iters, "target": target, "library": _capi.path}
        for op, who, s, note in results:
            c = find(op, "C")
            print(json.dumps(dict(common, op=op, who=who, bytes_per_s=s["bytes_per_s"],
                                  gbps=gbps(s["bytes_per_s"]), p50_us=s["p50_us"],
                                  min_us=s["min_us"],
                                  ratio_to_c=s["bytes_per_s"] / c["bytes_per_s"] if c else None,
                                  note=note)))
        for w, bps in totals.items():
            print(json.dumps(dict(common, op="put+get", who=w, bytes_per_s=bps, gbps=gbps(bps),
                                  ratio_to_c=bps / totals["C"] if "C" in totals else None,
                                  transferqueue_simplestorage_gbps=TQ_PUBLISHED_GBPS)))
        if calls:
            for op, py, cop in (("kv_put", calls[0], "kv_put"), ("kv_batch_get", calls[1], "kv_get")):
                cs = c_calls[cop] if c_calls else None
                print(json.dumps({"op": f"1-row {op}", "elems": a.call_elems, "calls": a.calls,
                                  "python_min_us": py["min_us"], "python_p50_us": py["p50_us"],
                                  "c_min_us": cs["min_us"] if cs else None,
                                  "c_p50_us": cs["p50_us"] if cs else None}))
        return

    print(f"tqrdma bench: {a.rows} keys x {a.fields} fields x {a.elems} float32 = {mib:.1f} MiB "
          f"a call, {a.iters} timed calls ({a.warmup} warm-up), on {target}")
    print(f"  package {os.path.dirname(tq.__file__)}, library {_capi.path}")
    for cmd in c_cmds:
        print(f"  C: {cmd}")
    print("\nGB/s and Gbps: all timed calls' bytes over their time (as tq-rdma-bench counts); "
          "vs C: that ratio,\nand at p50: one call's bytes over the median call's time, the "
          "same ratio without outliers")
    print(f"{'op':<14} {'who':<14} {'GB/s':>8} {'Gbps':>8} {'p50 ms':>9} {'min ms':>9} "
          f"{'vs C':>6} {'at p50':>7}")
    for op, who, s, note in results:
        c = find(op, "C")
        ratio = f"{s['bytes_per_s'] / c['bytes_per_s']:.2f}" if c else "-"
        ratio50 = f"{c['p50_us'] / s['p50_us']:.2f}" if c else "-"
        print(f"{op:<14} {who:<14} {s['bytes_per_s'] / 1e9:8.2f} {gbps(s['bytes_per_s']):8.2f} "
              f"{s['p50_us'] / 1e3:9.2f} {s['min_us'] / 1e3:9.2f} {ratio:>6} {ratio50:>7}"
              + (f"  ({note})" if note and who.startswith("python") and op == "kv_batch_put"
                 else ""))
    for w, bps in totals.items():
        ratio = f"{bps / totals['C']:.2f}" if "C" in totals else "-"
        print(f"{'put+get':<14} {w:<14} {bps / 1e9:8.2f} {gbps(bps):8.2f} {'':>9} {'':>9} "
              f"{ratio:>6}")
    print(f"{'put+get':<14} {'TransferQueue':<14} {TQ_PUBLISHED_GBPS / 8:8.2f} "
          f"{TQ_PUBLISHED_GBPS:8.2f}   published: SimpleStorage backend, 1024 x 9 x 8192 "
          "float32, two nodes")
    if calls:
        print(f"\n1-row calls ({a.calls} of each, one field of {a.call_elems} float32): "
              "microseconds a call")
        print(f"{'op':<14} {'py min':>8} {'py p50':>8} {'C min':>8} {'C p50':>8} "
              f"{'overhead p50':>13}")
        for op, py, cop in (("kv_put", calls[0], "kv_put"), ("kv_batch_get", calls[1], "kv_get")):
            cs = c_calls[cop] if c_calls else None
            line = f"{op:<14} {py['min_us']:8.1f} {py['p50_us']:8.1f}"
            if cs:
                line += (f" {cs['min_us']:8.1f} {cs['p50_us']:8.1f} "
                         f"{py['p50_us'] - cs['p50_us']:+10.1f} us")
            print(line)
        print("  (Python's kv_put builds its one-row batch each call; the C bench reuses one)")


if __name__ == "__main__":
    main()
