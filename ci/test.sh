#!/usr/bin/env bash
# Install dependencies, build, and run the whole test suite twice: an optimised
# -Werror build (and its verbs suites on soft-RoCE in a VM), then a debug one
# under AddressSanitizer and UndefinedBehaviorSanitizer; then fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh

# Criterion's C gt() also passes on equality (see tests/helpers.h): never use it.
if grep -nE '(^|[^A-Za-z0-9_])gt\(' tests/*.c; then
  echo "tests use Criterion's gt(), which holds on equality: write lt(T, b, a)" >&2
  exit 1
fi

# The stress test runs 60 s by default; twice that (optimised, then sanitized)
# is more than CI's time allows.
export TQ_STRESS_SECONDS=${TQ_STRESS_SECONDS:-30}

jobs=$(nproc)
run_suite() { # build-dir, build type, extra cmake args...
  local dir=$1 type=$2; shift 2
  # chained: under `||` below, set -e does not stop a failed step
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null &&
    cmake --build "$dir" -j"$jobs" >/dev/null &&
    (cd "$dir" && ctest --output-on-failure --timeout 600)
}

echo "== build (optimised, as benchmarked) and test =="
run_suite build Release
echo "== the verbs transport on soft-RoCE: Debian's kernel with rdma_rxe in a VM =="
# This kernel may have no RDMA subsystem (then ci/softroce.sh alone would only
# say so): boot one that has, and run the verbs suites there on rxe.
ci/softroce-vm.sh --build build
echo "== build and test with address,undefined sanitizers =="
# Daemons and forked test workers report to files: a report from a process
# whose exit status nobody checks must still fail the run.
reports=$(mktemp -d)
status=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$reports/asan \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan \
  run_suite build-asan Debug -DTQ_SANITIZER=address,undefined || status=$? # Debug keeps tq_assert
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
