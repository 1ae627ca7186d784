#!/usr/bin/env bash
# Put and get of 1 MiB fields per transport, in one run: on loopback (UCX over
# shared memory and over TCP, libfabric over tcp and shm), and over TCP between
# two network namespaces (needs root; skipped otherwise). Builds like
# ci/bench.sh. Traffic goes only to loopback and to the two namespaces it
# makes (198.18.0.1-2), which it deletes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/build-release.sh
bin=build-release
args=(--rows 64 --field-bytes 1M --iters "${ITERS:-20}")
work=$(mktemp -d)
ns=tqtb$$
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for h in h0 h1; do
    ip netns pids "$ns-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns delete "$ns-$h" 2>/dev/null || true
  done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# start_cluster NAME LISTEN [PREFIX...]: a controller and a storage unit, run
# through PREFIX (e.g. "ip netns exec NS env VAR=..."); sets $address.
start_cluster() {
  local name=$1 listen=$2; shift 2
  "$@" "$bin/daemons/controller/tq-controller" --listen "$listen" \
    --port-file "$work/$name.port" >/dev/null 2>"$work/$name.ctl.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/$name.port" ] && break; sleep 0.05; done
  address=$(cat "$work/$name.port")
  "$@" "$bin/daemons/storage/tq-storage" --controller "$address" --pool-size 512M \
    >"$work/$name.sto.out" 2>"$work/$name.sto.log" &
  pids+=($!)
  # it prints "unit N" once the controller has registered it
  for _ in $(seq 200); do grep -q '^unit' "$work/$name.sto.out" && return; sleep 0.05; done
  echo "storage unit of $name did not start:" >&2
  cat "$work/$name.sto.log" >&2
  exit 1
}

# bench LABEL [PREFIX...]: put and get GB/s of the bench run through PREFIX.
bench() {
  local label=$1; shift
  local out
  out=$("$@" "$bin/tools/tq-rdma-bench" --controller "$address" "${args[@]}" --json)
  printf '%-44s %s\n' "$label" "$(echo "$out" | sed -n 's/.*"op":"\([a-z]*\)".*"bytes_per_s":\([0-9.]*\).*/\1 \2/p' |
    awk '{printf "%s %6.2f GB/s   ", $1, $2 / 1e9}')"
}

lo=(env UCX_NET_DEVICES=lo FI_TCP_IFACE=lo)
echo "== loopback, one controller and one storage unit serving ucx and ofi"
start_cluster lo 127.0.0.1:0 "${lo[@]}"
bench "ucx (shared memory)" "${lo[@]}" TQ_TRANSPORT=ucx
bench "ucx, UCX_TLS=tcp" "${lo[@]}" TQ_TRANSPORT=ucx UCX_TLS=tcp
bench "ofi, FI_PROVIDER=tcp" "${lo[@]}" TQ_TRANSPORT=ofi FI_PROVIDER=tcp
echo "== loopback, libfabric shm (the unit's ofi uses shm too)"
start_cluster shm 127.0.0.1:0 "${lo[@]}" FI_PROVIDER=shm
bench "ofi, FI_PROVIDER=shm" "${lo[@]}" TQ_TRANSPORT=ofi FI_PROVIDER=shm

echo "== TCP between two network namespaces (198.18.0.1 serves, 198.18.0.2 runs the bench)"
if [ "$(id -u)" -ne 0 ] || ! ip netns add "$ns-h0" 2>/dev/null; then
  echo "skipped: making network namespaces needs root"
  exit 0
fi
ip netns add "$ns-h1"
ip -n "$ns-h0" link add tqv0 type veth peer name tqv1 netns "$ns-h1"
ip -n "$ns-h0" addr add 198.18.0.1/24 dev tqv0
ip -n "$ns-h1" addr add 198.18.0.2/24 dev tqv1
for h in h0 h1; do ip -n "$ns-$h" link set lo up; done
ip -n "$ns-h0" link set tqv0 up
ip -n "$ns-h1" link set tqv1 up
net0=(ip netns exec "$ns-h0" env UCX_TLS=tcp UCX_NET_DEVICES=tqv0 FI_PROVIDER=tcp FI_TCP_IFACE=tqv0)
net1=(ip netns exec "$ns-h1" env UCX_TLS=tcp UCX_NET_DEVICES=tqv1 FI_PROVIDER=tcp FI_TCP_IFACE=tqv1)
start_cluster net 198.18.0.1:0 "${net0[@]}"
bench "ucx over TCP, between namespaces" "${net1[@]}" TQ_TRANSPORT=ucx
bench "ofi tcp, between namespaces" "${net1[@]}" TQ_TRANSPORT=ofi
