#!/usr/bin/env bash
# The GPU checks of nnc, in one call, on a machine with an NVIDIA GPU:
#
#   1. builds nnc and the runtime in build/ (configuring it first when it is
#      not configured yet);
#   2. compiles every spec of specs/ with --target=cuda and trains it twice,
#      with --device cuda and with --device cpu (the same executable: its CPU
#      code), printing the final metric of each side by side, with the rows
#      per second of the training steps; then likewise the small models
#      with --gpu-fuse rows (NAME-rows);
#   3. compiles the gradient-check specs of tests/gradcheck (as their tests
#      do: --dtype=f64, with --target=cuda) and runs their --gradcheck with
#      --device cuda, and with --device cpu beside it;
#
# then prints a summary table. Exits 1 when anything failed: a compilation,
# a run's exit status, a gradient check, or a GPU metric far from the CPU's
# (the two sum in different orders, so they are compared with a tolerance:
# accuracy within 5 points or 2 of the items counted, mse or loss within 25%).
#
# Specs read the full data sets when scripts/fetch-data.sh has fetched them,
# and the slices in specs/data otherwise. mnist_cnn trains 2 epochs (the
# README's numbers), not its 10, unless --full.
#
# nnc needs LLVM, which a GPU machine may not have: then build the trainers
# where nnc runs, with --build-only, carry the folder (and the fetched data,
# specs/data/mnist and specs/data/pattern) to the GPU machine, and run them
# there with --prebuilt. Trainers read their data from this checkout,
# wherever it is.
#
# usage: scripts/gpu-tests.sh [options] [NAME...]
#   NAME...          only these specs and gradient checks (file names without .nn)
#   --target T       what to compile for: cuda (default), cuda-sim, or cpu (no
#                    --target: a dry run of the script on a machine without GPU)
#   --device D       the device of the GPU column: cuda (default), auto or cpu
#   --epochs N       train every spec N epochs (a quick run)
#   --full           every spec with its own schedule
#   --no-cpu         skip the CPU column (and the comparison)
#   --no-gradcheck   skip the gradient checks
#   --timeout S      seconds allowed to each trainer run (default 900)
#   --build DIR      the build folder (default build/)
#   --no-build       use the nnc already built there: no configuring, no ninja
#   --dir DIR        where the executables and every run's output are kept
#                    (default BUILD/gpu-tests)
#   --build-only     compile the trainers (for any x86-64-v3 machine) into DIR
#                    and stop
#   --prebuilt       run the trainers already in DIR; build nothing
#
# The executables and every run's output are kept in DIR.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=cuda
DEVICE=cuda
EPOCHS=
FULL=0
CPU=1
GRADCHECK=1
TIMEOUT=900
BUILD=$ROOT/build
DIR=
PHASE=all
BUILD_NNC=1
NAMES=()

usage() {
  sed -n '/^# usage:/,/^# The executables/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in
    --target) TARGET=${2:-}; shift 2 || usage ;;
    --target=*) TARGET=${1#*=}; shift ;;
    --device) DEVICE=${2:-}; shift 2 || usage ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --epochs) EPOCHS=${2:-}; shift 2 || usage ;;
    --epochs=*) EPOCHS=${1#*=}; shift ;;
    --full) FULL=1; shift ;;
    --no-cpu) CPU=0; shift ;;
    --no-gradcheck) GRADCHECK=0; shift ;;
    --timeout) TIMEOUT=${2:-}; shift 2 || usage ;;
    --timeout=*) TIMEOUT=${1#*=}; shift ;;
    --build) BUILD=${2:-}; shift 2 || usage ;;
    --build=*) BUILD=${1#*=}; shift ;;
    --dir) DIR=${2:-}; shift 2 || usage ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --no-build) BUILD_NNC=0; shift ;;
    --build-only) PHASE=build; shift ;;
    --prebuilt) PHASE=run; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu-tests.sh: unknown option '$1'" >&2; usage ;;
    *) NAMES+=("$1"); shift ;;
  esac
done
case $TARGET in cuda|cuda-sim|cpu) ;; *) echo "gpu-tests.sh: --target: cuda, cuda-sim or cpu" >&2; exit 2 ;; esac
case $DEVICE in cuda|auto|cpu) ;; *) echo "gpu-tests.sh: --device: cuda, auto or cpu" >&2; exit 2 ;; esac
case $EPOCHS in ''|*[!0-9]*) [ -z "$EPOCHS" ] || { echo "gpu-tests.sh: --epochs: a count" >&2; exit 2; } ;; esac
case $TIMEOUT in ''|*[!0-9]*) echo "gpu-tests.sh: --timeout: seconds" >&2; exit 2 ;; esac

TARGET_FLAGS=()
[ "$TARGET" = cpu ] || TARGET_FLAGS=("--target=$TARGET")
# Trainers built for another machine: any x86-64 with AVX2.
[ "$PHASE" = build ] && TARGET_FLAGS+=("--cpu=x86-64-v3")
OUT=${DIR:-$BUILD/gpu-tests}
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
NNC=$BUILD/bin/nnc
FAILURES=0

say() { printf '%s\n' "$*"; }
fail() { FAILURES=$((FAILURES + 1)); }

selected() {
  [ ${#NAMES[@]} -eq 0 ] && return 0
  local N
  for N in "${NAMES[@]}"; do [ "$N" = "$1" ] && return 0; done
  return 1
}

# The small models over blocks of rows (--gpu-fuse rows), NAME|SPEC|FLAGS,
# trained as NAME-rows; their own batches take it only above
# --gpu-graph-limit (the autoencoder's, by default): iris's 120 rows, one
# block; the autoencoder's 1000, 15 blocks; linreg's 100 000, 512 blocks of
# 3 chunks of 65 rows; and the bench's 64-wide MLP in batches of 16 384, 256
# blocks of 64 rows.
ROWS_ENTRIES=("iris|specs/iris.nn|" "autoencoder|specs/autoencoder.nn|" "linreg|specs/linreg.nn|"
              "mlp64|bench/specs/mlp64.nn|--batch 16384 --epochs 2")

# Every NAME given must be a spec, a NAME-rows entry or a gradient check.
for N in "${NAMES[@]}"; do
  Known=0
  if [ -f "$ROOT/specs/$N.nn" ] || [ -f "$ROOT/tests/gradcheck/$N.nn" ]; then Known=1; fi
  for Entry in "${ROWS_ENTRIES[@]}"; do [ "${Entry%%|*}-rows" = "$N" ] && Known=1; done
  if [ "$Known" = 0 ]; then
    say "gpu-tests.sh: '$N' is none of the specs of specs/, the NAME-rows entries and" \
      "the gradient checks of tests/gradcheck"
    exit 2
  fi
done

# --- 1. Build -------------------------------------------------------------
if [ "$PHASE" = run ]; then
  [ -d "$OUT" ] || { say "gpu-tests.sh: --prebuilt: no folder $OUT (make it with --build-only)"; exit 2; }
elif [ "$BUILD_NNC" = 0 ]; then
  [ -x "$NNC" ] || { say "gpu-tests.sh: --no-build: no $NNC"; exit 2; }
else
  if [ ! -f "$BUILD/build.ninja" ]; then
    say "== configuring $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null ||
      { say "gpu-tests.sh: cmake failed"; exit 1; }
  fi
  say "== building nnc and the runtime in $BUILD"
  ninja -C "$BUILD" nnc nnc_runtime >"$BUILD/gpu-tests-build.log" 2>&1 ||
    { tail -30 "$BUILD/gpu-tests-build.log"; say "gpu-tests.sh: the build failed"; exit 1; }
fi
if [ "$PHASE" != run ]; then
  rm -rf "$OUT" && mkdir -p "$OUT" || exit 1
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L 2>&1 | sed 's/^/   /'
fi

# --- Helpers --------------------------------------------------------------

# The final metric of a training log: its last "SPLIT accuracy|mse V" line,
# else the last epoch's loss. Prints "KIND VALUE COUNTED" (COUNTED: the
# items an accuracy counts, 0 otherwise), or nothing.
final_metric() {
  awk '
    /^(train|test) accuracy [0-9.]+ \(/ {
      split($4, F, "/"); sub(/\)/, "", F[2]); M = $1 " accuracy " $3 " " F[2] }
    /^(train|test) mse [0-9.e+-]+ \(/ { M = $1 " mse " $3 " 0" }
    /^epoch [0-9]+\/[0-9]+  loss / { L = "loss " $4 " 0" }
    END { if (M != "") print M; else if (L != "") print "final " L }' "$1"
}

# Compiles spec $1 into $2 with the flags that follow (unless --prebuilt),
# and records its data file's path relative to this checkout (DEST.data),
# so that it finds its data wherever the checkout is when it runs.
compile_trainer() {
  local Spec=$1 Exe=$2
  shift 2
  if [ "$PHASE" != run ]; then
    "$NNC" "$Spec" "$@" "${TARGET_FLAGS[@]}" -o "$Exe" >"$Exe.compile.log" 2>&1 || return 1
    "$Exe" --help | sed -n "s|^  --data [A-Z]* *.*(default $ROOT/\(.*\))\$|\1|p" >"$Exe.data"
  fi
  [ -x "$Exe" ]
}

# The --data option that points a trainer at its data in this checkout.
data_args() {
  [ -s "$1.data" ] && printf '%s\n' --data "$ROOT/$(cat "$1.data")"
}

# "SPLIT KIND V" of final_metric's output, for the table.
metric_text() { awk '{ print $1 " " $2 " " $3 }' <<<"$1"; }

# Whether two final metrics (final_metric's output) agree within the
# tolerance that the header describes.
metrics_close() {
  awk -v A="$1" -v B="$2" 'BEGIN {
    split(A, X, " "); split(B, Y, " ")
    if (X[1] != Y[1] || X[2] != Y[2]) exit 1
    D = X[3] - Y[3]; if (D < 0) D = -D
    if (X[2] == "accuracy") {
      Slack = X[4] > 0 ? 2 / X[4] : 0
      exit !(D <= (Slack > 0.05 ? Slack : 0.05) + 1e-12)
    }
    Scale = Y[3] < 0 ? -Y[3] : Y[3]
    exit !(D <= 0.25 * (Scale > 1e-3 ? Scale : 1e-3))
  }'
}

# The rows per second of a log's --speed line.
speed_of() { awk '/^speed: / { print $2 }' "$1"; }

# Runs a trainer with a time limit; its output goes to the log $1.
run_logged() {
  local Log=$1
  shift
  timeout "$TIMEOUT" "$@" >"$Log" 2>&1
}

seconds_since() { awk -v S="$1" -v E="$(date +%s.%N)" 'BEGIN { printf "%.2f", E - S }'; }

# Arguments a spec needs here: the slices of the data sets that have not
# been fetched, and shorter schedules for the slowest specs.
spec_args() {
  local Name=$1
  case $Name in
    mnist_mlp|mnist_cnn)
      [ -e "$ROOT/specs/data/mnist/train-images-idx3-ubyte.gz" ] ||
        printf '%s\n' --data "$ROOT/specs/data/mnist-slice" ;;
    tagger_oanc)
      [ -e "$ROOT/specs/data/pattern/tagged-en-oanc.txt" ] ||
        printf '%s\n' --data "$ROOT/specs/data/oanc-slice.txt" ;;
    text_classifier|text_classifier_lstm)
      [ -e "$ROOT/specs/data/pattern/polarity-en-pang-lee2.csv" ] ||
        printf '%s\n' --data "$ROOT/specs/data/polarity-slice.csv" ;;
  esac
  if [ -n "$EPOCHS" ]; then
    printf '%s\n' --epochs "$EPOCHS"
  elif [ "$FULL" = 0 ] && [ "$Name" = mnist_cnn ]; then
    printf '%s\n' --epochs 2
  fi
}

# --- 2. The specs -----------------------------------------------------------
# Trains spec $2 as NAME $1, compiled with the flags in $3 (words) and run
# with those in $4 too, on both sides; adds its row to the table.
train_spec() {
  local Name=$1 Spec=$2 CompileFlags=$3 RunFlags=$4
  say "== $Name"
  Exe=$OUT/$Name
  # shellcheck disable=SC2086 # flags are words
  if ! compile_trainer "$Spec" "$Exe" $CompileFlags; then
    sed 's/^/   /' "$Exe.compile.log" 2>/dev/null | tail -20
    SPEC_ROWS+=("$Name|-|-|-|-|-|FAIL: compile (see $Exe.compile.log)")
    fail
    return
  fi
  [ "$PHASE" = build ] && return
  mapfile -t Args < <(data_args "$Exe"; spec_args "${Name%-rows}")
  # shellcheck disable=SC2206
  Args+=($RunFlags)

  Start=$(date +%s.%N)
  run_logged "$OUT/$Name.gpu.log" "$Exe" --device "$DEVICE" --speed \
    --save "$OUT/$Name.gpu.weights" "${Args[@]}"
  GpuStatus=$?
  GpuSeconds=$(seconds_since "$Start")
  GpuMetric=$(final_metric "$OUT/$Name.gpu.log")
  GpuSpeed=$(speed_of "$OUT/$Name.gpu.log")
  say "   gpu: exit $GpuStatus, ${GpuSeconds}s, $(metric_text "$GpuMetric")"

  CpuStatus=0 CpuSeconds=- CpuMetric='' CpuSpeed=''
  if [ "$CPU" = 1 ]; then
    Start=$(date +%s.%N)
    run_logged "$OUT/$Name.cpu.log" "$Exe" --device cpu --speed \
      --save "$OUT/$Name.cpu.weights" "${Args[@]}"
    CpuStatus=$?
    CpuSeconds=$(seconds_since "$Start")
    CpuMetric=$(final_metric "$OUT/$Name.cpu.log")
    CpuSpeed=$(speed_of "$OUT/$Name.cpu.log")
    say "   cpu: exit $CpuStatus, ${CpuSeconds}s, $(metric_text "$CpuMetric")"
  fi

  Result=ok
  if [ "$GpuStatus" != 0 ]; then
    Result="FAIL: gpu exit $GpuStatus (see $OUT/$Name.gpu.log)"
    tail -5 "$OUT/$Name.gpu.log" | sed 's/^/   /'
  elif [ "$CpuStatus" != 0 ]; then
    Result="FAIL: cpu exit $CpuStatus (see $OUT/$Name.cpu.log)"
  elif [ -z "$GpuMetric" ]; then
    Result="FAIL: no metric in $OUT/$Name.gpu.log"
  elif [ "$CPU" = 1 ] && ! metrics_close "$GpuMetric" "$CpuMetric"; then
    Result="FAIL: the gpu's metric is far from the cpu's"
  fi
  [ "$Result" = ok ] || fail
  Ratio=-
  if [ -n "$GpuSpeed" ] && [ -n "$CpuSpeed" ]; then
    Ratio=$(awk -v G="$GpuSpeed" -v C="$CpuSpeed" 'BEGIN { printf "%.3gx", G / C }')
  fi
  SPEC_ROWS+=("$Name|$(metric_text "$CpuMetric")|$(metric_text "$GpuMetric")|$CpuSeconds|$GpuSeconds|$Ratio|$Result")
}

SPEC_ROWS=()
for Spec in "$ROOT"/specs/*.nn; do
  Name=$(basename "$Spec" .nn)
  selected "$Name" || continue
  train_spec "$Name" "$Spec" "" ""
done
for Entry in "${ROWS_ENTRIES[@]}"; do
  IFS='|' read -r Name Spec RunFlags <<<"$Entry"
  selected "$Name-rows" || continue
  train_spec "$Name-rows" "$ROOT/$Spec" "--gpu-fuse=rows" "$RunFlags"
done

# --- 3. The gradient checks -------------------------------------------------
CHECK_ROWS=()
if [ "$GRADCHECK" = 1 ]; then
  for Spec in "$ROOT"/tests/gradcheck/*.nn; do
    Name=$(basename "$Spec" .nn)
    selected "$Name" || continue
    # The test's own lines: `RUN: nnc %s FLAGS -o %t`, then
    # `RUN: [not] %t --gradcheck ARGS | FileCheck %s`.
    Flags=$(sed -n 's/^# RUN: nnc %s \(.*\)-o %t$/\1/p' "$Spec" | head -1)
    Line=$(grep -m1 '^# RUN: \(not \)\{0,1\}%t --gradcheck' "$Spec")
    [ -n "$Line" ] || continue
    Expect=pass
    case $Line in "# RUN: not "*) Expect=fail ;; esac
    CheckArgs=$(sed 's/^# RUN: \(not \)\{0,1\}%t //; s/ *|.*$//; s/ *2>&1//' <<<"$Line")
    say "== gradcheck $Name ($Flags$CheckArgs, expected to $Expect)"
    Exe=$OUT/gradcheck-$Name
    # shellcheck disable=SC2086 # the flags are words of the test's RUN line
    if ! compile_trainer "$Spec" "$Exe" $Flags; then
      sed 's/^/   /' "$Exe.compile.log" 2>/dev/null | tail -20
      CHECK_ROWS+=("$Name|-|-|FAIL: compile (see $Exe.compile.log)")
      fail
      continue
    fi
    [ "$PHASE" = build ] && continue
    mapfile -t DataArgs < <(data_args "$Exe")
    Verdicts=()
    Errors=()
    for Side in gpu cpu; do
      [ "$Side" = cpu ] && [ "$CPU" = 0 ] && { Errors+=(-); continue; }
      D=$DEVICE
      [ "$Side" = cpu ] && D=cpu
      # shellcheck disable=SC2086
      (cd "$(dirname "$Spec")" && run_logged "$OUT/gradcheck-$Name.$Side.log" "$Exe" $CheckArgs "${DataArgs[@]}" --device "$D")
      Status=$?
      Worst=$(sed -n 's/^gradcheck: [0-9]* elements, worst relative error \([^ ]*\).*/\1/p' "$OUT/gradcheck-$Name.$Side.log")
      Errors+=("${Worst:--}")
      if [ "$Expect" = pass ]; then
        [ "$Status" = 0 ] && grep -q '^gradcheck: PASS' "$OUT/gradcheck-$Name.$Side.log" &&
          Verdicts+=(ok) || Verdicts+=("FAIL: $Side exit $Status (see $OUT/gradcheck-$Name.$Side.log)")
      else
        [ "$Status" = 1 ] && grep -q '^gradcheck: FAIL' "$OUT/gradcheck-$Name.$Side.log" &&
          Verdicts+=(ok) || Verdicts+=("FAIL: $Side did not fail as expected (exit $Status)")
      fi
    done
    Result=ok
    for V in "${Verdicts[@]}"; do [ "$V" = ok ] || { Result=$V; break; }; done
    [ "$Result" = ok ] || fail
    say "   gpu worst error ${Errors[0]}, cpu ${Errors[1]}: $Result"
    CHECK_ROWS+=("$Name|${Errors[1]}|${Errors[0]}|$Result")
  done
fi

# --- Summary ----------------------------------------------------------------
if [ "$PHASE" = build ]; then
  [ "$FAILURES" -gt 0 ] && { say "gpu-tests: $FAILURES trainers did not compile"; exit 1; }
  say "gpu-tests: trainers built in $OUT; run them with --prebuilt --dir $OUT"
  exit 0
fi
say ""
say "Summary (--target=$TARGET, gpu column: --device $DEVICE; logs in $OUT)"
if [ ${#SPEC_ROWS[@]} -gt 0 ]; then
  say ""
  printf '%-22s %-24s %-24s %8s %8s %7s  %s\n' spec cpu gpu "cpu s" "gpu s" speed result
  for Row in "${SPEC_ROWS[@]}"; do
    IFS='|' read -r N C G Cs Gs R Res <<<"$Row"
    printf '%-22s %-24s %-24s %8s %8s %7s  %s\n' "$N" "${C:--}" "${G:--}" "$Cs" "$Gs" "$R" "$Res"
  done
fi
if [ ${#CHECK_ROWS[@]} -gt 0 ]; then
  say ""
  printf '%-32s %-14s %-14s %s\n' gradcheck "cpu worst" "gpu worst" result
  for Row in "${CHECK_ROWS[@]}"; do
    IFS='|' read -r N C G Res <<<"$Row"
    printf '%-32s %-14s %-14s %s\n' "$N" "$C" "$G" "$Res"
  done
fi
say ""
if [ "$FAILURES" -gt 0 ]; then
  say "gpu-tests: $FAILURES FAILED"
  exit 1
fi
say "gpu-tests: all passed"
