#!/usr/bin/env bash
# Runs the whole nnc test suite (lit + FileCheck) against the build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build
exec python3 /usr/lib/llvm-19/build/utils/lit/lit.py -sv build/tests "$@"
