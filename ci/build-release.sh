#!/usr/bin/env bash
# Install dependencies and build an optimised tqrdma (no tests) in build-release/.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DTQ_BUILD_TESTS=OFF -DTQ_WITH_UCX=ON -DTQ_WITH_OFI=ON >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
