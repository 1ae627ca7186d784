"""pytest fixtures: the package against the embedded default and against real tq-controller
and tq-storage processes (TQ_CONTROLLER_BIN, TQ_STORAGE_BIN; ctest passes them).

The suite runs twice: as is, and with TQRDMA_NO_TORCH=1, where the package acts as if
torch were not installed and the tests that need torch skip (ctest python and
python_notorch). The library comes from TQRDMA_LIBRARY."""
import ctypes
import itertools
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

os.environ.pop("TQ_CONTROLLER", None)
os.environ.setdefault("TQ_POOL_SIZE", "64M")

import tqrdma as tq  # noqa: E402  (after the environment it reads)

NO_TORCH = os.environ.get("TQRDMA_NO_TORCH", "") not in ("", "0")
START_TIMEOUT = 10.0
_counter = itertools.count()


@pytest.fixture
def torch():
    """torch, or a skip where it is absent or TQRDMA_NO_TORCH is set."""
    if NO_TORCH:
        pytest.skip("TQRDMA_NO_TORCH is set")
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def client():
    """A raw tq_client of an embedded controller and storage unit, for the whole session."""
    from tqrdma import _capi
    handle = ctypes.c_void_p()
    assert _capi.lib.tq_open(b"embedded", ctypes.byref(handle)) == 0, \
        _capi.lib.tq_last_error(None)
    yield handle
    _capi.lib.tq_close(handle)


@pytest.fixture
def partition(request):
    """A partition of its own for each test."""
    name = request.node.name.replace("[", ".").replace("]", "")[:200]
    return f"{name}.{next(_counter)}"


class Cluster:
    """A tq-controller and tq-storage units on loopback, stopped with SIGTERM."""

    def __init__(self, units=1, pool="64M"):
        self.controller_bin = os.environ.get("TQ_CONTROLLER_BIN")
        self.storage_bin = os.environ.get("TQ_STORAGE_BIN")
        if not self.controller_bin or not self.storage_bin:
            pytest.skip("TQ_CONTROLLER_BIN and TQ_STORAGE_BIN are not set")
        self.dir = tempfile.mkdtemp(prefix="tq-py-")
        self.procs = []
        try:
            port_file = os.path.join(self.dir, "port")
            self.procs.append(subprocess.Popen(
                [self.controller_bin, "--listen", "127.0.0.1:0", "--port-file", port_file],
                stdout=subprocess.DEVNULL))
            self.address = self._wait_port_file(port_file)
            for _ in range(units):
                self.add_unit(pool)
        except BaseException:
            self.stop()
            raise

    def add_unit(self, pool):
        unit = subprocess.Popen([self.storage_bin, "--controller", self.address,
                                 "--pool-size", pool], stdout=subprocess.PIPE)
        self.procs.append(unit)
        ready, _, _ = select.select([unit.stdout], [], [], START_TIMEOUT)  # "unit N" once known
        line = unit.stdout.readline() if ready else b""
        if not line.startswith(b"unit"):
            raise RuntimeError(f"tq-storage did not register with {self.address}: {line!r}")
        return unit

    def _wait_port_file(self, path):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(path) as f:
                    line = f.readline().strip()
                if ":" in line:
                    return line
            except FileNotFoundError:
                pass
            if self.procs[0].poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"tq-controller wrote no address to {path}")

    def stop(self):
        """SIGTERM, units first; a bounded wait, then SIGKILL. The exit codes."""
        codes = []
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                codes.append(p.wait(timeout=10))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
            if p.stdout:
                p.stdout.close()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
        return codes


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes), f"daemons exited with {codes} on SIGTERM"


@pytest.fixture(scope="module", params=["embedded", "daemons"])
def tq_api(request):
    """The tqrdma module, initialized against the embedded default or real daemons."""
    os.environ.pop("TQ_CONTROLLER", None)
    os.environ.setdefault("TQ_POOL_SIZE", "64M")
    tq.close()
    if request.param == "embedded":
        tq.init()
    else:
        tq.init(request.getfixturevalue("cluster").address)
    yield tq
    tq.close()
