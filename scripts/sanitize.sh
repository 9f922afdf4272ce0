#!/usr/bin/env bash
# Builds nnc and the runtime with AddressSanitizer and UndefinedBehaviorSanitizer
# in build-asan/ (the system compiler, as scripts/setup.sh builds build/), and
# runs the whole lit suite against that build. Trainers that nnc links there
# get the same sanitizers (NNC_TRAINER_LINK_FLAGS); the code that nnc
# generates is not instrumented, the runtime around it is. Not part of CI
# (docs/testing.md). Extra arguments go to lit, e.g.
# `scripts/sanitize.sh --filter runtime`.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizers="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="$sanitizers -fno-omit-frame-pointer -g1" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitizers" \
  -DNNC_TRAINER_LINK_FLAGS="$sanitizers" >/dev/null
cmake --build build-asan

# Reports go to files in build-asan/reports/ rather than to stderr, and any
# report fails the run: a test that expects a program to fail (`not ...`)
# would not notice one that failed for a sanitizer's sake. UBSan stops the
# program at its first report.
reports=$PWD/build-asan/reports
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
status=0
python3 /usr/lib/llvm-19/build/utils/lit/lit.py -sv build-asan/tests "$@" || status=$?
if compgen -G "$reports/*" >/dev/null; then
  echo "sanitize: sanitizer reports in $reports:" >&2
  head -n 40 "$reports"/* >&2
  exit 1
fi
exit "$status"
