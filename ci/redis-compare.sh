#!/usr/bin/env bash
# Compare tq-rdma-bench's key-value modes with redis-benchmark on this machine.
# Starts a private redis-server on 127.0.0.1 (no persistence) and stops it on
# exit; tq-rdma-bench runs on the embedded default. Prints every command it ran,
# then a table with the ratio tqrdma / Redis and the targets of the kv issue.
# Exits non-zero when a run fails, not when a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT=120 # seconds, for every benchmark run

# ---- dependencies and build (as ci/bench.sh) ----
ci/install-deps.sh redis-server redis-tools
ci/build-release.sh
BENCH=build-release/tools/tq-rdma-bench
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} FI_TCP_IFACE=${FI_TCP_IFACE:-lo} # loopback only

# ---- a private redis-server on a free loopback port ----
work=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # run the EXIT trap on a signal too

# A port the kernel just handed out (redis has no --port 0); without python3,
# one derived from our pid. Either may be taken by the time redis binds it, so retry.
pick_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
    2>/dev/null || echo $((20000 + ($$ + $1 * 7919) % 10000))
}

port=""
for attempt in 1 2 3 4 5; do
  try=$(pick_port "$attempt")
  redis-server --bind 127.0.0.1 --port "$try" --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
  redis_pid=$!
  for _ in $(seq 50); do # up to 5 s to answer
    if [ "$(redis-cli -h 127.0.0.1 -p "$try" ping 2>/dev/null)" = PONG ]; then
      port=$try
      break 2
    fi
    kill -0 "$redis_pid" 2>/dev/null || break # it died: the port was taken
    sleep 0.1
  done
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done
if [ -z "$port" ]; then
  echo "redis-compare: cannot start redis-server on 127.0.0.1" >&2
  cat "$work/redis.log" >&2 2>/dev/null || true
  exit 1
fi
echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port (pid $redis_pid)"

# ---- runners: each prints its command, is bounded in time, and keeps its output ----
run() { # run NAME CMD...: output in $work/NAME
  local name=$1
  shift
  echo "\$ $*"
  if ! timeout "$TIMEOUT" "$@" >"$work/$name" 2>"$work/$name.err"; then
    echo "redis-compare: failed (or over ${TIMEOUT}s): $*" >&2
    cat "$work/$name" "$work/$name.err" >&2
    exit 1
  fi
}

redis_bench() { # redis_bench NAME ARGS...
  local name=$1
  shift
  run "$name" redis-benchmark -h 127.0.0.1 -p "$port" --csv "$@"
}

tq_bench() { # tq_bench NAME ARGS...: the embedded default, never a remote controller
  local name=$1
  shift
  run "$name" env -u TQ_CONTROLLER "$BENCH" --json --dtype u8 "$@"
}

# Requests per second of TEST ("SET", "GET") from redis-benchmark --csv output.
rps() { awk -F'"' -v t="$2" '$2 == t { print $4 }' "$work/$1"; }
# A number field of the JSON line of op OP in tq-rdma-bench output.
tqf() { sed -n "s/.*\"op\":\"$2\".*\"$3\":\([0-9.]*\).*/\1/p" "$work/$1"; }

# ---- the runs ----
# redis-benchmark without -r uses one key; set,get writes it first, so every GET
# returns a full value (a GET of a missing key would answer nil, far cheaper).
MIB=1048576
redis_bench r1m_p1 -t set,get -d $MIB -n 2000 -c 1 -P 1
redis_bench r1m_p8 -t set,get -d $MIB -n 2000 -c 1 -P 8
echo "\$ redis-cli -p $port strlen key:__rand_int__   # $(redis-cli -h 127.0.0.1 -p "$port" strlen key:__rand_int__) bytes"
tq_bench t1m --mode kv --rows 64 --field-bytes 1M --iters 50
redis_bench r4k -t set,get -d 4096 -n 200000 -c 1 -P 64
echo "\$ redis-cli -p $port strlen key:__rand_int__   # $(redis-cli -h 127.0.0.1 -p "$port" strlen key:__rand_int__) bytes"
tq_bench t4k --mode kv --rows 64 --field-bytes 4K --iters 2000
tq_bench tnb --mode kv-nb --inflight 8 --rows 64 --field-bytes 1M --iters 20

# ---- the table ----
echo
row_fmt="%-26s %11s %9s   %-26s %11s %9s %8s\n"
# shellcheck disable=SC2059
printf "$row_fmt" "redis-benchmark" "req/s" "GB/s" "tq-rdma-bench" "keys/s" "GB/s" "ratio"
printf '%.0s-' $(seq 108)
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }'; }
gbs() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1e9 }'; }
row() { # row REDIS_LABEL RPS VALUE_BYTES TQ_LABEL TQ_FILE TQ_OP
  local rbytes tbytes
  rbytes=$(awk -v r="$2" -v d="$3" 'BEGIN { printf "%.0f", r * d }')
  tbytes=$(tqf "$5" "$6" bytes_per_s)
  # shellcheck disable=SC2059
  printf "$row_fmt" "$1" "$(printf '%.0f' "$2")" "$(gbs "$rbytes")" "$4" \
    "$(printf '%.0f' "$(tqf "$5" "$6" rows_per_s)")" "$(gbs "$tbytes")" "$(ratio "$tbytes" "$rbytes")"
}
row "SET 1MiB -c1 -P1" "$(rps r1m_p1 SET)" $MIB "kv_put 64 x 1MiB" t1m kv_put
row "SET 1MiB -c1 -P8" "$(rps r1m_p8 SET)" $MIB "kv_put 64 x 1MiB" t1m kv_put
row "GET 1MiB -c1 -P1" "$(rps r1m_p1 GET)" $MIB "kv_get 64 x 1MiB" t1m kv_get
row "GET 1MiB -c1 -P8" "$(rps r1m_p8 GET)" $MIB "kv_get 64 x 1MiB" t1m kv_get
row "SET 4KiB -c1 -P64" "$(rps r4k SET)" 4096 "kv_put 64 x 4KiB" t4k kv_put
row "GET 4KiB -c1 -P64" "$(rps r4k GET)" 4096 "kv_get 64 x 4KiB" t4k kv_get
seq_b=$(tqf tnb kv_get_seq bytes_per_s)
nb_b=$(tqf tnb kv_get_nb bytes_per_s)
# shellcheck disable=SC2059
printf "$row_fmt" "kv_get_seq 8 x (64 x 1MiB)" "$(printf '%.0f' "$(tqf tnb kv_get_seq rows_per_s)")" \
  "$(gbs "$seq_b")" "kv_get_nb 8 in flight" "$(printf '%.0f' "$(tqf tnb kv_get_nb rows_per_s)")" \
  "$(gbs "$nb_b")" "$(ratio "$nb_b" "$seq_b")"

# ---- the targets, against the better Redis figure of -P1 and -P8 ----
echo
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }
verdict() { # verdict TEXT MEASURED_RATIO_NUMBER NEEDED (strictly above when NEEDED starts with >)
  local need=${3#>}
  local ok
  if [ "$need" != "$3" ]; then
    ok=$(awk -v r="$2" -v n="$need" 'BEGIN { print (r > n ? "met" : "MISSED") }')
  else
    ok=$(awk -v r="$2" -v n="$need" 'BEGIN { print (r >= n ? "met" : "MISSED") }')
  fi
  printf "%-58s %7.2fx  (need %s%sx)  %s\n" "$1" "$2" "$([ "$need" != "$3" ] && echo '>' || echo '>=')" "$need" "$ok"
}
r_set=$(best "$(rps r1m_p1 SET)" "$(rps r1m_p8 SET)")
r_get=$(best "$(rps r1m_p1 GET)" "$(rps r1m_p8 GET)")
verdict "kv_batch_put 64 x 1MiB vs best Redis SET 1MiB" \
  "$(awk -v t="$(tqf t1m kv_put bytes_per_s)" -v r="$r_set" 'BEGIN { print t / (r * 1048576) }')" 3
verdict "kv_batch_get 64 x 1MiB vs best Redis GET 1MiB" \
  "$(awk -v t="$(tqf t1m kv_get bytes_per_s)" -v r="$r_get" 'BEGIN { print t / (r * 1048576) }')" 3
verdict "kv_batch_get 64 x 4KiB vs Redis GET 4KiB -P64" \
  "$(awk -v t="$(tqf t4k kv_get bytes_per_s)" -v r="$(rps r4k GET)" 'BEGIN { print t / (r * 4096) }')" 1.5
verdict "8 kv_batch_get_nb in flight vs 8 sequential kv_batch_get" \
  "$(awk -v a="$nb_b" -v b="$seq_b" 'BEGIN { print (b > 0 ? a / b : 0) }')" ">1"
