#!/usr/bin/env bash
# Times nnc's generated GEMM on one thread against the machine's measured
# fp32 peak (a loop of independent FMAs at the same vector width): the
# issue's two shapes, 1024x1024x1024 and 64x784x128 (M=64 rows, K=784 deep,
# N=128 columns: mnist_mlp's first layer), the latter also with B
# transposed as the dense layers' forward pass reads its weights.
# usage: bench/gemm/run.sh [path/to/nnc]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nnc="${1:-$here/../../build/bin/nnc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run() { # N flags M K
  local n=$1 flags=$2 m=$3 k=$4
  "$nnc" --gemm-kernel "$n${flags:+,$flags}" --emit=obj -o "$work/gemm.o"
  c++ -O2 -march=native "$here/gemm_bench.cpp" "$work/gemm.o" -o "$work/gemm"
  "$work/gemm" "$m" "$n" "$k" ${flags//,/ }
}

run 1024 "" 1024 1024
run 128 "" 64 784
run 128 tb 64 784
