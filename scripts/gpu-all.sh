#!/usr/bin/env bash
# Every GPU run of nnc, in one call, on a machine with an NVIDIA GPU:
#
#   tests          scripts/gpu-tests.sh: every spec trained on the GPU beside
#                  its CPU code, and the gradient checks on the GPU;
#   models         bench/gpu.py --sweep none: each model's rows per second
#                  against PyTorch's on the same GPU, and each trainer's
#                  kernels timed (--gpu-profile, into OUT/profile/MODEL.txt);
#   sweep          bench/gpu.py --models none: the batch-size sweep of the
#                  64-wide MLP;
#   models-graphs, sweep-graphs
#                  the same two with --trainer-flags=--cuda-graphs.
#
# The trainers go to the folder WORK (WORK/tests, WORK/bench), and to OUT
# (WORK/results unless --out) each step's output (STEP.log), the
# benchmark's tables (STEP.md) and the tests' logs (tests/), as soon as
# each is written. A summary of every step comes last.
# A failed step does not stop the steps after it; the exit status is then 1.
#
# A GPU machine without nnc's build dependencies runs trainers built
# elsewhere: --build-only here builds the trainers of the steps and packs
# them, with the data sets that scripts/fetch-data.sh fetched, into one
# archive, WORK/trainers.tar.xz (about 17 MB); carry it to a checkout of the
# same commit, where --prebuilt unpacks it and runs the steps.
#
# usage: scripts/gpu-all.sh [options]
#   --steps LIST     comma-separated steps (default: all five, in the order above)
#   --work DIR       the trainers, the archive and the results (default build-gpu,
#                    which git ignores)
#   --out DIR        the results instead (default WORK/results)
#   --build-only     build the trainers and pack the archive, then stop
#   --prebuilt       unpack the archive (when it is there) and run what it holds
#   --python PY      the Python with PyTorch for the benchmark (default python3)
# The environment's GPU_TESTS_FLAGS and GPU_BENCH_FLAGS (words) are added to
# scripts/gpu-tests.sh's and bench/gpu.py's options, e.g. GPU_BENCH_FLAGS='--reps 2'.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ALL_STEPS=tests,models,sweep,models-graphs,sweep-graphs
STEPS=$ALL_STEPS
WORK=build-gpu
OUT=
PHASE=all
PYTHON=python3
# The fetched data sets, relative to the root; the archive holds those there are.
DATA_SETS=(specs/data/mnist specs/data/pattern)

usage() {
  sed -n '/^# usage:/,/^# scripts\/gpu-tests.sh/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in
    --steps) STEPS=${2:-}; shift 2 || usage ;;
    --steps=*) STEPS=${1#*=}; shift ;;
    --work) WORK=${2:-}; shift 2 || usage ;;
    --work=*) WORK=${1#*=}; shift ;;
    --out) OUT=${2:-}; shift 2 || usage ;;
    --out=*) OUT=${1#*=}; shift ;;
    --python) PYTHON=${2:-}; shift 2 || usage ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --build-only) PHASE=build; shift ;;
    --prebuilt) PHASE=run; shift ;;
    -h|--help) usage ;;
    *) echo "gpu-all.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
IFS=, read -r -a STEP_LIST <<<"$STEPS"
[ ${#STEP_LIST[@]} -gt 0 ] || { echo "gpu-all.sh: --steps: none given" >&2; exit 2; }
for Step in "${STEP_LIST[@]}"; do
  case ,$ALL_STEPS, in
    *,"$Step",*) ;;
    *) echo "gpu-all.sh: --steps: '$Step' is none of $ALL_STEPS" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) || exit 1
OUT=$(realpath -m "${OUT:-$WORK/results}") || exit 1
cd "$ROOT" || exit 1
TESTS_DIR=$WORK/tests
BENCH_DIR=$WORK/bench
ARCHIVE=$WORK/trainers.tar.xz

# Whether a step of $1's kind (tests, models, sweep) is asked for.
wants() {
  local S
  for S in "${STEP_LIST[@]}"; do case $S in "$1"|"$1"-graphs) return 0 ;; esac; done
  return 1
}

read -r -a TESTS_FLAGS <<<"${GPU_TESTS_FLAGS:-}"
read -r -a BENCH_FLAGS <<<"${GPU_BENCH_FLAGS:-}"

# --- Building and packing ----------------------------------------------------
if [ "$PHASE" = build ]; then
  Trainers=()
  if wants tests; then
    scripts/gpu-tests.sh --build-only --dir "$TESTS_DIR" "${TESTS_FLAGS[@]}" || exit 1
    Trainers+=(tests)
  fi
  if wants models || wants sweep; then
    Only=()
    wants models || Only=(--models none)
    wants sweep || Only=(--sweep none)
    rm -rf "$BENCH_DIR"
    "$PYTHON" bench/gpu.py --build-only --trainers "$BENCH_DIR" "${Only[@]}" "${BENCH_FLAGS[@]}" ||
      exit 1
    Trainers+=(bench)
  fi
  Data=()
  for Set in "${DATA_SETS[@]}"; do [ -d "$Set" ] && Data+=("$Set"); done
  echo "== packing ${Trainers[*]} ${Data[*]} into $ARCHIVE"
  # The trainers' folders relative to WORK, the data relative to the root.
  if ! { tar -cf - -C "$WORK" "${Trainers[@]}" -C "$ROOT" "${Data[@]}" |
           xz -T0 -6 >"$ARCHIVE.tmp" && mv "$ARCHIVE.tmp" "$ARCHIVE"; }; then
    rm -f "$ARCHIVE.tmp"
    echo "gpu-all.sh: packing failed" >&2
    exit 1
  fi
  echo "gpu-all.sh: $(du -h "$ARCHIVE" | cut -f1) in $ARCHIVE; carry it to a checkout of this" \
    "commit and run there: scripts/gpu-all.sh --prebuilt --steps $STEPS"
  exit 0
fi

if [ "$PHASE" = run ] && [ -f "$ARCHIVE" ]; then
  echo "== unpacking $ARCHIVE"
  Unpacked=$WORK/unpacked
  # Python's tarfile where the machine has no xz.
  unpack() {
    if command -v xz >/dev/null 2>&1; then
      xz -dc "$ARCHIVE" | tar -xf - -C "$Unpacked"
    else
      "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$ARCHIVE" "$Unpacked"
    fi
  }
  if ! { rm -rf "$Unpacked" && mkdir -p "$Unpacked" && unpack; }; then
    echo "gpu-all.sh: cannot unpack $ARCHIVE" >&2
    exit 1
  fi
  for Folder in tests bench; do
    [ -d "$Unpacked/$Folder" ] && rm -rf "${WORK:?}/$Folder" && mv "$Unpacked/$Folder" "$WORK/"
  done
  # A data set this checkout has already is the same (scripts/fetch-data.sh checks them).
  for Set in "${DATA_SETS[@]}"; do
    [ -d "$Unpacked/$Set" ] && [ ! -d "$Set" ] && mv "$Unpacked/$Set" "$Set"
  done
  rm -rf "$Unpacked"
fi
PREBUILT=()
[ "$PHASE" = run ] && PREBUILT=(--prebuilt)

# --- The steps ---------------------------------------------------------------
mkdir -p "$OUT" || exit 1
FAILED=()
SUMMARY=()
for Step in "${STEP_LIST[@]}"; do
  echo "== $Step ($(date -u +%H:%M:%S))"
  Log=$OUT/$Step.log
  Start=$SECONDS
  if [ "$Step" = tests ]; then
    scripts/gpu-tests.sh "${PREBUILT[@]}" --dir "$TESTS_DIR" "${TESTS_FLAGS[@]}" >"$Log" 2>&1
    Status=$?
    rm -rf "$OUT/tests" && mkdir -p "$OUT/tests" && cp "$TESTS_DIR"/*.log "$OUT/tests/" 2>/dev/null
  else
    Args=("${PREBUILT[@]}" --trainers "$BENCH_DIR" --markdown "$OUT/$Step.md")
    case $Step in models*) Args+=(--sweep none) ;; sweep*) Args+=(--models none) ;; esac
    [ "$Step" = models ] && Args+=(--profile "$OUT/profile")
    case $Step in *-graphs) Args+=(--trainer-flags=--cuda-graphs) ;; esac
    "$PYTHON" bench/gpu.py "${Args[@]}" "${BENCH_FLAGS[@]}" >"$Log" 2>&1
    Status=$?
  fi
  if [ "$Status" = 0 ]; then
    SUMMARY+=("$Step: ok ($((SECONDS - Start)) s)")
  else
    SUMMARY+=("$Step: FAILED, exit $Status ($((SECONDS - Start)) s; see $Log)")
    FAILED+=("$Step")
    tail -15 "$Log" | sed 's/^/   /'
  fi
done

# --- Summary -----------------------------------------------------------------
for Step in "${STEP_LIST[@]}"; do
  echo
  if [ "$Step" = tests ]; then
    sed -n '/^Summary /,$p' "$OUT/tests.log"
  elif [ -f "$OUT/$Step.md" ]; then
    echo "$Step:"
    cat "$OUT/$Step.md"
  fi
done
echo
printf '%s\n' "${SUMMARY[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu-all.sh: failed: ${FAILED[*]} (logs in $OUT)"
  exit 1
fi
echo "gpu-all.sh: all steps done (logs and tables in $OUT)"
