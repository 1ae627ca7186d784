"""pytest fixtures of the value layer's suite (test_values.py).

Run it twice: as is, and with TQRDMA_NO_TORCH=1, where the package acts as if torch were
not installed and the tests that need torch skip (ctest does both: python_values and
python_values_notorch). The library and daemons come from TQRDMA_LIBRARY and
TQ_CONTROLLER_BIN/TQ_STORAGE_BIN, as for test_tqrdma.py."""
import ctypes
import os

import pytest

os.environ.pop("TQ_CONTROLLER", None)
os.environ.setdefault("TQ_POOL_SIZE", "64M")

NO_TORCH = os.environ.get("TQRDMA_NO_TORCH", "") not in ("", "0")


@pytest.fixture
def torch():
    """torch, or a skip where it is absent or TQRDMA_NO_TORCH is set."""
    if NO_TORCH:
        pytest.skip("TQRDMA_NO_TORCH is set")
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def client():
    """An embedded controller and storage unit in this process, for the whole session."""
    from tqrdma import _capi
    handle = ctypes.c_void_p()
    assert _capi.lib.tq_open(b"embedded", ctypes.byref(handle)) == 0, \
        _capi.lib.tq_last_error(None)
    yield handle
    _capi.lib.tq_close(handle)


@pytest.fixture
def partition(request):
    """A partition of its own for each test."""
    return request.node.name.replace("[", ".").replace("]", "")[:200]
