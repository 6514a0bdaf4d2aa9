#!/usr/bin/env bash
# Fuzzes the two parsers of untrusted files for a bounded time: the RecordIO
# reader (tests/data/fuzz_recordio.c, 2/3 of the time) and the verification
# .bin pickle reader (tests/eval/fuzz_pickle.c, 1/3). Builds the libFuzzer
# targets with clang, ASan and UBSan in their own build directory; seeds the
# first with the valid and mutated files the data_fuzz_replay unit test
# generates, the second with the pickles tests/eval/pickle_cases.py writes
# (CPython's own, good and malformed). Exits non-zero on a finding (crash,
# sanitizer report, leak, per-input timeout, out-of-memory); the input that
# triggered it is kept under $BUILD/fuzz-artifacts/.
#
#   tests/data/run_fuzz.sh [SECONDS]        (default 90, in total)
#   FUZZ_BUILD_DIR=... (default: <repo>/build-fuzz)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-90}
secs_rec=$(( secs * 2 / 3 )); secs_pkl=$(( secs - secs_rec ))
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DARCFACE_FUZZ=ON -DARCFACE_SANITIZE=ON >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 2; }
cmake --build "$build" -j2 --target fuzz_data_recordio test_data fuzz_pickle

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/pickles" "$build/fuzz-artifacts"
AF_FUZZ_CORPUS="$work/corpus" ASAN_OPTIONS=detect_leaks=0 \
  "$build/tests/data/test_data" fuzz_replay >/dev/null
/usr/bin/python3 "$root/tests/eval/pickle_cases.py" "$work/pickles" >/dev/null
mkdir -p "$work/pickle_corpus"
cp "$work/pickles"/*.pkl "$work/pickle_corpus/"

# fuzz TARGET SECONDS CORPUS: runs one target, fails on a finding.
fuzz() {
  echo "run_fuzz.sh: $1: $(ls "$3" | wc -l) seed inputs, fuzzing for ${2}s"
  set +e
  "$1" -max_total_time="$2" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/" "$3" 2>"$work/fuzz.log"
  local rc=$?
  set -e
  tail -n 25 "$work/fuzz.log"
  if [ "$rc" -ne 0 ]; then
    echo "run_fuzz.sh: FINDING in $1 (exit $rc); reproducer(s) in $build/fuzz-artifacts/:" >&2
    ls -l "$build/fuzz-artifacts/" >&2
    exit 1
  fi
}
fuzz "$build/tests/data/fuzz_data_recordio" "$secs_rec" "$work/corpus"
fuzz "$build/tests/eval/fuzz_pickle" "$secs_pkl" "$work/pickle_corpus"
echo "run_fuzz.sh: no finding in ${secs}s"
