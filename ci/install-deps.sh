#!/usr/bin/env bash
# Install the Debian packages tqrdma builds, tests and benchmarks with, and any
# extra ones named as arguments. Idempotent and quiet: does nothing when
# everything is there.
#   ci/install-deps.sh [--no-torch] [PACKAGE ...]
# --no-torch: all but python3-torch, the one that takes long (~180 packages, ~580 MiB
# installed: 74 s of dpkg on a 2-core CI machine), so that a caller can install it
# beside other work (ci/test.sh does, during the optimised build).
set -euo pipefail

torch=(python3-torch)
if [ "${1:-}" = --no-torch ]; then
  torch=()
  shift
fi
packages=(
  build-essential cmake pkg-config clang
  libibverbs-dev librdmacm-dev libucx-dev ucx-utils libfabric-dev
  libcjson-dev libcriterion-dev iproute2
  # the Python package: its tests (pytest, with and without torch) and pip install into
  # a venv with only Debian's setuptools and wheel (ctest python_install)
  python3 python3-numpy python3-pytest python3-venv python3-pip python3-setuptools
  python3-wheel "${torch[@]}"
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
