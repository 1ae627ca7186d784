#!/usr/bin/env bash
# Install dependencies, build an optimised tqrdma, and run tq-rdma-bench on the
# embedded default (a controller and a storage unit inside the bench process).
# Extra arguments go to tq-rdma-bench, e.g. --rows 64 --field-bytes 1M --iters 50.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/build-release.sh
# one machine: network transports stay on loopback unless told otherwise
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} FI_TCP_IFACE=${FI_TCP_IFACE:-lo}
build-release/tools/tq-rdma-bench "$@"
