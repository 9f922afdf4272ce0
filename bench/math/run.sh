#!/usr/bin/env bash
# Checks nnc's single-precision exp, log, tanh and sigmoid against
# double-precision libm (largest error in units in the last place, special
# values) and times them against libm's float functions, one thread; then
# checks the optimizer step quotient_step bit for bit against its formula and
# times it with normal and with subnormal numerators.
# usage: bench/math/run.sh [path/to/nnc]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nnc="${1:-$here/../../build/bin/nnc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for op in exp log tanh sigmoid; do
  "$nnc" --math-kernel "$op" --emit=obj -o "$work/$op.o"
  c++ -O2 -march=native "$here/math_bench.cpp" "$work/$op.o" -o "$work/$op"
  "$work/$op" "$op" check
  "$work/$op" "$op" time
done

"$nnc" --math-kernel quotient_step --emit=obj -o "$work/step.o"
c++ -O3 -march=native -ffp-contract=off "$here/step_bench.cpp" "$work/step.o" -o "$work/step"
"$work/step" check
"$work/step" time
