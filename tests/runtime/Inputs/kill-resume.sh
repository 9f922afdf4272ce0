#!/bin/bash
# Kills a training run with SIGKILL at 20 random moments and checks each time
# that the checkpoint left behind loads and resumes; the run pieced together
# from the 21 runs must end with the weights of the run never stopped, byte
# for byte.
#
# usage: kill-resume.sh TRAINER DIR EPOCHS [SEED]
#   TRAINER trains with --batch 1, so that an epoch is many short steps and
#   a kill lands anywhere: within a step, between steps, or while a
#   checkpoint is being written. SEED seeds the kill moments (bash $RANDOM).
set -u
trainer=$1 dir=$2 epochs=$3
RANDOM=${4:-1}
rm -rf "$dir" && mkdir -p "$dir" || exit 1
common=(--epochs "$epochs" --batch 1 --quiet --threads 1)

"$trainer" "${common[@]}" --save "$dir/never-stopped.w" > /dev/null || exit 1

for round in $(seq 1 20); do
  resume=()
  [ -e "$dir/ck" ] && resume=(--resume "$dir/ck")
  "$trainer" "${common[@]}" "${resume[@]}" --checkpoint "$dir/ck" \
    --save "$dir/run.w" > /dev/null 2> "$dir/err" &
  pid=$!
  # 5 to 100 ms: from before the first checkpoint to many epochs in.
  sleep "0.$(printf '%03d' $((5 + RANDOM % 96)))"
  kill -KILL $pid 2> /dev/null
  wait $pid 2> /dev/null
  status=$?
  # 137: killed; 0: it finished first.
  if [ $status -ne 137 ] && [ $status -ne 0 ]; then
    echo "round $round: the trainer exited with status $status:" >&2
    cat "$dir/err" >&2
    exit 1
  fi
  # Whatever checkpoint is there must load.
  if [ -e "$dir/ck" ] && ! "$trainer" --resume "$dir/ck" --epochs 0 --quiet \
       --save "$dir/check.w" > /dev/null 2> "$dir/err"; then
    echo "round $round: the checkpoint left by SIGKILL does not load:" >&2
    cat "$dir/err" >&2
    exit 1
  fi
done

[ -e "$dir/ck" ] || { echo "no checkpoint after 20 rounds" >&2; exit 1; }
"$trainer" "${common[@]}" --resume "$dir/ck" --save "$dir/resumed.w" \
  > /dev/null || exit 1
if ! cmp "$dir/never-stopped.w" "$dir/resumed.w"; then
  echo "the resumed run's weights differ from the run never stopped" >&2
  exit 1
fi
echo "20 kills, every checkpoint loaded, weights identical"
