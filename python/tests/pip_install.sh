#!/usr/bin/env bash
# pip_install.sh SOURCE_DIR SCRATCH_DIR: `pip install --no-build-isolation SOURCE_DIR`
# as README.md gives it, into a fresh venv of Debian's python3 (--system-site-packages:
# numpy, torch from Debian), with no package index at all (PIP_NO_INDEX: a download
# attempt fails the test). setup.py configures and builds libtqrdma with cmake (the
# library only) and ships it in the package; the installed package must load that
# library, not one from the environment, and round-trip through the embedded default.
# Then: `pip uninstall` leaves nothing behind, and a plain venv (no numpy) is refused
# with a message that names numpy. SCRATCH_DIR (in the build tree) keeps the source
# tree clean; TQ_PIP_CMAKE_BUILD_DIR, when set, is a cmake build to reuse.
set -euo pipefail
src=$(realpath "$1") scratch=$2
py=/usr/bin/python3
if ! "$py" -c 'import setuptools, wheel, numpy, venv, ensurepip, pip' 2>/dev/null; then
  echo "python_install: skipped: $py lacks numpy, venv, pip, setuptools or wheel (apt-get install python3-numpy python3-venv python3-pip python3-setuptools python3-wheel)"
  exit 77 # ctest: skipped
fi
rm -rf "$scratch"
mkdir -p "$scratch"
# hermetic: no pip configuration of this machine's, no index, no find-links
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL TQRDMA_LIBRARY TQRDMA_BUILD_LIBRARY \
  TQRDMA_CMAKE_ARGS PYTHONPATH LD_LIBRARY_PATH TQ_CONTROLLER TQ_TOKEN
export TQRDMA_BUILD_BASE=$scratch/build-pip
[ -z "${TQ_PIP_CMAKE_BUILD_DIR:-}" ] || export TQRDMA_CMAKE_BUILD_DIR=$TQ_PIP_CMAKE_BUILD_DIR
cd "$scratch" # nothing of the source tree on sys.path

venv=$scratch/venv
# --without-pip: Debian's pip, from the system site (ensurepip would take seconds)
"$py" -m venv --system-site-packages --without-pip "$venv"
target=$src
"$py" -c 'import torch' 2>/dev/null && target="${src}[torch]" # the extra, met by Debian's torch
echo "== pip install --no-build-isolation $target"
start=$SECONDS
"$venv/bin/python" -m pip install -q --no-build-isolation "$target"
echo "installed in $((SECONDS - start)) s"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
[ -f "$site/tqrdma/libtqrdma.so.0" ] || { echo "no libtqrdma.so.0 in $site/tqrdma"; exit 1; }

echo "== import tqrdma and round-trip through the embedded default"
start=$SECONDS
TQ_POOL_SIZE=32M PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" - "$site" <<'PY'
import os, sys
import numpy as np
import tqrdma as tq
from tqrdma import _capi
pkg = os.path.join(os.path.realpath(sys.argv[1]), "tqrdma")
assert os.path.realpath(tq.__file__).startswith(pkg + os.sep), tq.__file__
assert os.path.realpath(_capi.path) == os.path.join(pkg, "libtqrdma.so.0"), _capi.path
tq.init()
x = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
tq.kv_batch_put(["a", "b", "c"], "p", fields={"x": x, "raw": [b"1", b"", b"333"]})
tq.kv_put("d", "p", fields={"x": np.ones(5, np.float32), "raw": b"d"})
got = tq.kv_batch_get(["d", "a", "c"], "p")
assert got["x"].tobytes() == np.vstack([np.ones(5, np.float32), x[0], x[2]]).tobytes(), got
assert got["raw"] == [b"d", b"1", b"333"], got
tq.kv_clear(["a", "b", "c", "d"], "p")
assert tq.kv_list("p") == {}, tq.kv_list("p")
tq.close()
print("round trip through", _capi.path)
PY

echo "($((SECONDS - start)) s)"
echo "== pip uninstall"
"$venv/bin/python" -m pip uninstall -q -y tqrdma
if [ -e "$site/tqrdma" ]; then
  echo "left behind:"; find "$site/tqrdma"; exit 1
fi

echo "== a venv without numpy is refused, naming numpy, before anything is built"
start=$SECONDS
bare=$scratch/bare
"$py" -m venv "$bare" # as users make one: ensurepip puts pip and setuptools in
out=$("$bare/bin/python" -m pip install --no-build-isolation "$src" 2>&1) && {
  echo "pip install into a venv without numpy succeeded:"; echo "$out"; exit 1; }
grep -q "tqrdma needs numpy" <<<"$out" || { echo "no word of numpy:"; echo "$out"; exit 1; }
! grep -q "tqrdma setup: cmake" <<<"$out" || { echo "it built before refusing"; exit 1; }
grep "tqrdma setup" <<<"$out" | tail -n 1 | cut -c1-160
echo "($((SECONDS - start)) s)"
rm -rf "$scratch"
echo "python_install: passed"
