#!/usr/bin/env bash
# Install dependencies, build, and run the whole test suite twice: an optimised
# -Werror build (and its verbs suites on soft-RoCE in a VM), then a debug one
# under AddressSanitizer and UndefinedBehaviorSanitizer; then fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
stage_start=$SECONDS
took() { echo "-- $1: $((SECONDS - stage_start)) s"; stage_start=$SECONDS; }
ci/install-deps.sh --no-torch

# Criterion's C gt() also passes on equality (see tests/helpers.h): never use it.
if grep -nE '(^|[^A-Za-z0-9_])gt\(' tests/*.c; then
  echo "tests use Criterion's gt(), which holds on equality: write lt(T, b, a)" >&2
  exit 1
fi

# python3-torch, by far the longest install, goes in while the optimised build compiles
torch_log=$(mktemp)
ci/install-deps.sh >"$torch_log" 2>&1 &
torch_pid=$!

# The stress test runs 60 s by default; twice that (optimised, then sanitized)
# is more than CI's time allows.
export TQ_STRESS_SECONDS=${TQ_STRESS_SECONDS:-30}

jobs=$(nproc)
# Suites run side by side, one a CPU: most of their time they wait on timeouts,
# heartbeats and other processes (about half the wall time of a serial run is idle).
# Those that cannot share the machine say so (RUN_SERIAL in tests/CMakeLists.txt).
ctest_jobs=${TQ_CTEST_JOBS:-$jobs}
build_suite() { # build-dir, build type, extra cmake args...
  local dir=$1 type=$2; shift 2
  # chained: under `||` below, set -e does not stop a failed step
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null &&
    cmake --build "$dir" -j"$jobs" >/dev/null
}
test_suite() { # build-dir
  (cd "$1" && ctest -j"$ctest_jobs" --output-on-failure --timeout 600)
}

echo "== build (optimised, as benchmarked) and test =="
build_suite build Release
took "optimised build"
if ! wait "$torch_pid"; then
  echo "installing python3-torch failed:" >&2
  cat "$torch_log" >&2
  exit 1
fi
rm -f "$torch_log"
took "waiting for python3-torch"
# configured again now that torch imports: python/ registers python_notorch then
build_suite build Release
test_suite build
took "optimised suite"
echo "== the verbs transport on soft-RoCE: Debian's kernel with rdma_rxe in a VM =="
# This kernel may have no RDMA subsystem (then ci/softroce.sh alone would only
# say so): boot one that has, and run the verbs suites there on rxe.
ci/softroce-vm.sh --build build
took "verbs suites in the VM"
echo "== build and test with address,undefined sanitizers =="
# Daemons and forked test workers report to files: a report from a process
# whose exit status nobody checks must still fail the run.
reports=$(mktemp -d)
status=0
sanitized_suite() {
  build_suite build-asan Debug -DTQ_SANITIZER=address,undefined && test_suite build-asan
}
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$reports/asan \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan \
  sanitized_suite || status=$? # Debug keeps tq_assert
took "sanitized build and suite"
# A failed test's report says why it failed: print the reports either way.
if compgen -G "$reports/*" >/dev/null; then
  echo "sanitizer reports:"
  cat "$reports"/*
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
rm -rf "$reports"
echo "no sanitizer reports"
echo "== fuzz the wire decoders and the controller (libFuzzer, ${FUZZ_SECONDS:-20} s each) =="
FUZZ_SECONDS=${FUZZ_SECONDS:-20} ci/fuzz.sh
took "fuzz"
