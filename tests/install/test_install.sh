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
