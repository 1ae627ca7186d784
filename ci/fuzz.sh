#!/usr/bin/env bash
# Build the libFuzzer targets of tests/fuzz with clang (address and undefined
# sanitizers) in build-fuzz/, and run each for FUZZ_SECONDS (default 30) on a
# scratch copy of its seed corpus, so tests/fuzz/corpus is never modified.
# Prints how many inputs each ran. Exits non-zero when a target finds a crash,
# a leak, a timeout or an out-of-memory; the input is kept in
# build-fuzz/artifacts/<target>/ and can be replayed with
#   build-fuzz/tests/fuzz/fuzz_<target> <file>
# Network traffic stays on 127.0.0.1 (fuzz_controller's in-process controller).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install-deps.sh libclang-rt-14-dev # libFuzzer's runtime, not pulled in by clang itself

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
targets=(wire controller)

# TQ_SANITIZER stays empty: tests/fuzz adds -fsanitize=fuzzer-no-link,address,undefined
# to the code under test itself. No transport nor Criterion is needed there.
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DTQ_FUZZ=ON -DTQ_SANITIZER= \
  -DTQ_BUILD_TESTS=OFF -DTQ_WITH_UCX=OFF -DTQ_WITH_OFI=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
for t in "${targets[@]}"; do
  corpus=$work/corpus-$t artifacts=build-fuzz/artifacts/$t log=$work/$t.log
  rm -rf "$artifacts" "$artifacts-corpus"
  mkdir -p "$corpus" "$artifacts"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/
  echo "== fuzz_$t for ${FUZZ_SECONDS}s"
  rc=0
  # the outer timeout only guards against a harness that hangs outside an input
  timeout --kill-after=10 $((FUZZ_SECONDS + 300)) \
    build-fuzz/tests/fuzz/fuzz_"$t" "$corpus" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)
  echo "fuzz_$t: ${execs:-?} executions, ${cov:-no coverage line}, corpus $(ls "$corpus" | wc -l) inputs"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz_$t FAILED (exit $rc):"
    # the report: from the sanitizer's or libFuzzer's first ERROR line on
    sed -n '/ERROR: \|runtime error\|^fuzz_'"$t"': /,$p' "$log" | grep -v '^"' | head -n 120
    for a in "$artifacts"/*; do
      [ -e "$a" ] || continue
      # a controller input may have needed state left by earlier inputs: say if it does
      if timeout 60 build-fuzz/tests/fuzz/fuzz_"$t" "$a" >"$work/replay.log" 2>&1; then
        echo "$a: does not fail on its own; it needed state left by earlier inputs," \
          "kept in $artifacts-corpus/"
        rm -rf "$artifacts-corpus"
        cp -r "$corpus" "$artifacts-corpus"
      else
        echo "$a: fails on its own: build-fuzz/tests/fuzz/fuzz_$t $a"
      fi
    done
    failed=1
  fi
done
exit "$failed"
