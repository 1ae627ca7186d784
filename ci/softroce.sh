#!/usr/bin/env bash
# Run the verbs transport for real on a soft-RoCE (rdma_rxe) device: the
# transport conformance suite restricted to verbs (twice: as configured, and
# with one QP, small requests and no registration cache), then the
# end-to-end scenarios with TQ_TRANSPORT=verbs.
#
#   ci/softroce.sh [BUILD_DIR] [--netdev IFACE] [--rxe NAME]
#
# BUILD_DIR: a build with tests (default: build, as ci/test.sh makes it).
# --netdev IFACE: put the rxe device on this interface (it needs an IPv4
#   address, which the tests then use: TQ_VERBS_ADDR). Default: a veth pair
#   made here (tqrxe0 198.18.0.1/24, tqrxe1 198.18.0.2/24), removed at the end.
# --rxe NAME: the rxe device to create (default rxe0), deleted at the end.
#
# Needs root (ip, rdma from iproute2, modprobe). On a kernel without rdma_rxe
# it says why and exits 0: there is nothing to test there, and the suite
# itself skips verbs with the reason. Every wait is bounded.
# TQRDMA_SOFTROCE_TESTS: more test binaries to run with TQ_TRANSPORT=verbs
# after e2e (e.g. "kv stream faults"); TQRDMA_SOFTROCE_TIMEOUT: seconds per
# test binary (default 900).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="" netdev="" rxe=rxe0
while [ $# -gt 0 ]; do
  case $1 in
    --netdev) netdev=${2:?--netdev needs an interface}; shift 2 ;;
    --rxe) rxe=${2:?--rxe needs a name}; shift 2 ;;
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "softroce: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
build=$(realpath "${build:-$root/build}")
per_test=${TQRDMA_SOFTROCE_TIMEOUT:-900}
say() { echo "softroce: $*"; }

# --- does this kernel have soft-RoCE? --------------------------------------
if [ ! -d /sys/module/rdma_rxe ]; then
  why=$(timeout 60 modprobe rdma_rxe 2>&1) || true
  if [ ! -d /sys/module/rdma_rxe ]; then
    if [ -d /sys/class/infiniband ]; then sub="it has an RDMA subsystem"
    else sub="it has no RDMA subsystem at all (/sys/class/infiniband absent)"; fi
    say "kernel $(uname -r) has no rdma_rxe (modprobe rdma_rxe: ${why:-no module}) and $sub:"
    say "no soft-RoCE device can be made here, so there is nothing to test; skipping (exit 0)."
    say "test_transport skips its verbs flavour with the same reason."
    exit 0
  fi
fi

# From here on the kernel can do it: anything missing is a failure.
[ "$(id -u)" -eq 0 ] || { say "rdma_rxe is available but creating devices needs root" >&2; exit 1; }
for tool in ip rdma timeout; do
  command -v $tool >/dev/null || { say "$tool not found (iproute2, coreutils)" >&2; exit 1; }
done
for t in transport e2e ${TQRDMA_SOFTROCE_TESTS:-}; do
  [ -x "$build/tests/test_$t" ] || { say "no $build/tests/test_$t: build with tests first" >&2; exit 1; }
done
timeout 60 modprobe -a rdma_ucm ib_uverbs 2>/dev/null || true # rdma_cm's and verbs' device files
[ -e /dev/infiniband/rdma_cm ] || { say "no /dev/infiniband/rdma_cm (modprobe rdma_ucm failed)" >&2; exit 1; }

made_veth="" made_rxe=""
cleanup() {
  set +e
  [ -n "$made_rxe" ] && timeout 30 rdma link delete "$rxe" && say "deleted $rxe"
  [ -n "$made_veth" ] && ip link del tqrxe0 && say "deleted the veth pair"
}
trap cleanup EXIT

# --- the interface and the rxe device on it ---------------------------------
if [ -z "$netdev" ]; then
  timeout 60 modprobe veth 2>/dev/null || true
  ip link del tqrxe0 2>/dev/null || true # left over by a killed run
  ip link add tqrxe0 type veth peer name tqrxe1
  made_veth=1
  ip addr add 198.18.0.1/24 dev tqrxe0
  ip addr add 198.18.0.2/24 dev tqrxe1
  ip link set tqrxe0 up
  ip link set tqrxe1 up
  netdev=tqrxe0
else
  ip link show "$netdev" >/dev/null || { say "no interface $netdev" >&2; exit 1; }
fi
ip4=$(ip -4 -o addr show dev "$netdev" | awk '{split($4, a, "/"); print a[1]; exit}')
if [ -e "/sys/class/infiniband/$rxe" ]; then
  say "an RDMA device named $rxe exists already; pick another with --rxe" >&2
  exit 1
fi
[ -n "$ip4" ] || { say "$netdev has no IPv4 address for rdma_cm" >&2; exit 1; }
# With an interface of the caller's, make sure the tests use this device.
[ -n "$made_veth" ] || export TQ_VERBS_ADDR=$ip4
timeout 30 rdma link add "$rxe" type rxe netdev "$netdev"
made_rxe=1

# Usable once its port is active and its GID table holds the IPv4 address
# (rdma_cm finds the device of an IP through it).
gid=$(printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${ip4//./ })
deadline=$((SECONDS + 20))
port=/sys/class/infiniband/$rxe/ports/1
until grep -q ACTIVE "$port/state" 2>/dev/null && grep -qx "$gid" "$port"/gids/* 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { say "$rxe not active with GIDs after 20 s" >&2; rdma link show >&2; exit 1; }
  sleep 0.2
done
say "kernel $(uname -r): $rxe on $netdev ($ip4)"
rdma link show "$rxe/1" || true
ulimit -l unlimited 2>/dev/null || true # registrations pin memory

# --- the suites ---------------------------------------------------------------
failed=()
# Run one Criterion binary; it must pass and, the device being there, skip nothing.
run() { # name, args...
  local name=$1 log; shift
  log=$(mktemp)
  say "== $name"
  local rc=0
  (cd "$build/tests" && timeout -k 10 "$per_test" "$@" --jobs 1 --verbose) 2>&1 | tee "$log" || rc=$?
  if [ $rc -ne 0 ]; then
    [ $rc -eq 124 ] && say "$name timed out after ${per_test}s"
    say "$name failed (status $rc)"
    failed+=("$name")
  elif grep '^\[SKIP\]' "$log" | grep -vq 'Test is disabled'; then
    say "$name skipped tests although $rxe exists:"
    grep '^\[SKIP\]' "$log" | grep -v 'Test is disabled' | head -5
    failed+=("$name (skips)")
  elif ! grep -Eq 'Tested: [1-9]' "$log"; then
    say "$name ran no test"
    failed+=("$name (nothing ran)")
  fi
  rm -f "$log"
}

run "conformance (verbs)" ./test_transport --filter 'transport_verbs/*'
# Again on the paths other devices and builds take: one QP per peer, small
# requests (many per run), every registration made for one flush.
TQ_VERBS_QPS=1 TQ_VERBS_MAX_XFER=64K TQ_VERBS_CACHE=0 \
  run "conformance (verbs: 1 QP, 64 KiB requests, no registration cache)" \
  ./test_transport --filter 'transport_verbs/*'
# Units (and the embedded one) listen on their controller's address, loopback
# here, where rdma_cm cannot: give them the device's.
for t in e2e ${TQRDMA_SOFTROCE_TESTS:-}; do
  TQ_TRANSPORT=verbs TQ_DATA_ADDR=$ip4 run "$t over verbs" "./test_$t"
done

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all verbs suites passed on $rxe"
