#!/usr/bin/env bash
# gradcheck-sim.sh FUSE DIR SPEC...: builds each spec in DIR for the
# simulated GPU, in f64, with --gpu-fuse FUSE, and checks its gradients over
# the rows that the spec's first `--gradcheck-rows N` says (its own test's),
# else the trainer's default. Prints "NAME: " and the check's last line;
# stops at the first spec that fails.
set -euo pipefail
fuse=$1 dir=$2
shift 2
mkdir -p "$dir"
for spec in "$@"; do
  name=$(basename "$spec" .nn)
  rows=$(grep -o -m1 -e '--gradcheck-rows [0-9]*' "$spec" | cut -d' ' -f2 || true)
  nnc "$spec" --dtype=f64 --target=cuda-sim --gpu-fuse="$fuse" -o "$dir/$name"
  result=$("$dir/$name" --gradcheck ${rows:+--gradcheck-rows "$rows"} | tail -n 1)
  echo "$name: $result"
done
