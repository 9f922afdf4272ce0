#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in build-fuzz/ (clang-19, only
# what they need: the front end, sema, the IR and the runtime's readers), and
# runs each of them for SECONDS (default 60) on a corpus that starts from the
# repository's specs and data (tests/fuzz/seeds.py) and grows in
# build-fuzz/corpus/NAME across runs. Findings are written to
# build-fuzz/findings/. `scripts/fuzz.sh --build` only builds (test.sh uses
# it); `scripts/fuzz.sh 600 csv idx` runs two targets for ten minutes each.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(spec csv idx files tagged polarity)

if ! command -v clang++-19 >/dev/null; then
  echo "fuzz: clang++-19 not found (install clang-19; scripts/setup.sh does)" >&2
  exit 1
fi
if [ ! -f build-fuzz/build.ninja ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-19 -DCMAKE_CXX_COMPILER=clang++-19 \
    -DNNC_FUZZ=ON >/dev/null
fi
cmake --build build-fuzz --target fuzzers
[ "${1:-}" = "--build" ] && exit 0

seconds=${1:-60}
shift || true
(($#)) && targets=("$@")
mkdir -p build-fuzz/findings
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t
  if [ ! -d "$corpus" ]; then
    mkdir -p "$corpus"
    if [ "$t" = files ]; then # seeds written by the target itself
      build-fuzz/bin/nnc-fuzz-files --write-seeds "$corpus"
    else
      python3 tests/fuzz/seeds.py "$t" "$corpus"
    fi
  fi
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
  echo "fuzz: $t for ${seconds}s"
  build-fuzz/bin/nnc-fuzz-"$t" "$corpus" "${dict[@]}" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/findings/"$t"- -print_final_stats=1
done
