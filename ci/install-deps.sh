#!/usr/bin/env bash
# Install the Debian packages tqrdma builds, tests and benchmarks with, and any
# extra ones named as arguments. Idempotent and quiet: does nothing when
# everything is there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang
  libibverbs-dev librdmacm-dev libucx-dev ucx-utils libfabric-dev
  libcjson-dev libcriterion-dev iproute2 python3 python3-numpy
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
