#!/usr/bin/env bash
# Runs the whole nnc test suite (lit + FileCheck) against the build in build/,
# and runs each fuzz target for a few seconds (tests/fuzz, built in build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build
# The fuzz targets (tests/fuzz) are built with clang-19 in build-fuzz/;
# without clang-19, lit skips their tests and says so.
if command -v clang++-19 >/dev/null; then
  ./scripts/fuzz.sh --build
fi
exec python3 /usr/lib/llvm-19/build/utils/lit/lit.py -sv build/tests "$@"
