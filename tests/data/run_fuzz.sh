#!/usr/bin/env bash
# Fuzzes the RecordIO reader for a bounded time: builds the libFuzzer target
# tests/data/fuzz_recordio.c with clang, ASan and UBSan in its own build
# directory, seeds it with the valid and mutated files that the
# data_fuzz_replay unit test generates, and runs it. Exits non-zero on a
# finding (crash, sanitizer report, leak, per-input timeout, out-of-memory);
# the input that triggered it is kept under $BUILD/fuzz-artifacts/.
#
#   tests/data/run_fuzz.sh [SECONDS]        (default 60)
#   FUZZ_BUILD_DIR=... (default: <repo>/build-fuzz)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DARCFACE_FUZZ=ON -DARCFACE_SANITIZE=ON >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 2; }
cmake --build "$build" -j2 --target fuzz_data_recordio test_data

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$build/fuzz-artifacts"
AF_FUZZ_CORPUS="$work/corpus" ASAN_OPTIONS=detect_leaks=0 \
  "$build/tests/data/test_data" fuzz_replay >/dev/null
echo "run_fuzz.sh: $(ls "$work/corpus" | wc -l) seed inputs, fuzzing for ${secs}s"

set +e
"$build/tests/data/fuzz_data_recordio" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/" "$work/corpus" \
  2>"$work/fuzz.log"
rc=$?
set -e
tail -n 25 "$work/fuzz.log"
if [ "$rc" -ne 0 ]; then
  echo "run_fuzz.sh: FINDING (exit $rc); reproducer(s) in $build/fuzz-artifacts/:" >&2
  ls -l "$build/fuzz-artifacts/" >&2
  exit 1
fi
echo "run_fuzz.sh: no finding in ${secs}s"
