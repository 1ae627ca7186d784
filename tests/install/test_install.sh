#!/usr/bin/env bash
# test_install.sh BUILD_DIR SOURCE_DIR: cmake --install into a scratch prefix,
# then build and run a consumer with pkg-config and with find_package(tqrdma),
# and ask every installed program for --help and --version.
set -euo pipefail
build=$1 src=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(dirname "$(find "$prefix" -name 'libtqrdma.so' | head -n 1)")
export LD_LIBRARY_PATH=$libdir PKG_CONFIG_PATH=$libdir/pkgconfig

echo "== pkg-config: $(pkg-config --modversion tqrdma)"
cc -o "$prefix/consumer-pc" "$src/tests/install/consumer.c" $(pkg-config --cflags --libs tqrdma)
"$prefix/consumer-pc"

echo "== find_package(tqrdma)"
cmake -S "$src/tests/install" -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
"$prefix/consumer-build/consumer"
"$prefix/consumer-build/consumer_static"

echo "== programs"
for p in "$prefix"/bin/*; do
  "$p" --help | grep -q -i usage || { echo "$(basename "$p") --help: no usage"; exit 1; }
  "$p" --version | grep -q "0\.1" || { echo "$(basename "$p") --version: no version"; exit 1; }
  echo "$(basename "$p"): --help, --version"
done
for unit in tq-controller tq-storage; do
  [ -f "$prefix/share/tqrdma/systemd/$unit.service" ] || { echo "no $unit.service installed"; exit 1; }
done
for page in "$prefix"/share/man/man1/*.1; do
  [ -e "$page" ] || { echo "no man pages installed"; exit 1; }
  grep -q '^\.TH' "$page" || { echo "$page: not a man page"; exit 1; }
  echo "$(basename "$page"): installed"
done

# The Python package, as Debian's python3 (which has python3-numpy) imports it: the
# library found through the install's own record, not LD_LIBRARY_PATH, even moved.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
pkg=lib/python3/dist-packages
if [ ! -d "$prefix/$pkg/tqrdma" ]; then
  echo "== python: not installed (TQ_WITH_PYTHON=OFF)"
elif ! "$py" -c 'import numpy' 2>/dev/null; then
  echo "== python: skipped, $py has no numpy (apt-get install python3-numpy)"
else
  moved=$prefix/moved
  mkdir "$moved" && cp -a "$prefix/lib" "$moved/"
  for root in "$prefix" "$moved"; do
    echo "== python: import tqrdma from $root/$pkg"
    env -u LD_LIBRARY_PATH -u TQRDMA_LIBRARY -u TQ_CONTROLLER PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH="$root/$pkg" TQ_POOL_SIZE=32M "$py" - "$root" <<'PY'
import os, sys
import numpy as np
import tqrdma as tq
from tqrdma import _capi
root = os.path.realpath(sys.argv[1])
assert os.path.realpath(_capi.path).startswith(root + os.sep), (_capi.path, root)
tq.init()
ids = np.arange(12, dtype=np.int64).reshape(3, 4)
tq.kv_batch_put(["a", "b", "c"], "p", fields={"ids": ids, "text": [b"x", b"", b"z"]},
                tags=[{"n": 1}, None, None])
got = tq.kv_batch_get(["c", "a"], "p")
assert got["ids"].tobytes() == ids[[2, 0]].tobytes() and got["text"] == [b"z", b"x"], got
assert tq.kv_list("p") == {"p": {"a": {"n": 1}, "b": {}, "c": {}}}
tq.kv_clear(["a", "b", "c"], "p")
assert tq.kv_list("p") == {}, tq.kv_list("p")
tq.close()
print("round trip through", _capi.path)
PY
  done
fi
