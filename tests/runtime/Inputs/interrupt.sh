#!/bin/bash
# Stops a training run with a signal and checks that it saved a checkpoint,
# said so and exited with 128 + the signal's number, and that the run resumed
# from that checkpoint ends with the weights of the run never stopped.
#
# usage: interrupt.sh TRAINER DIR SIGNAL EPOCHS
set -u
trainer=$1 dir=$2 signal=$3 epochs=$4
rm -rf "$dir" && mkdir -p "$dir" || exit 1
common=(--epochs "$epochs" --batch 1 --quiet --threads 1)

"$trainer" "${common[@]}" --save "$dir/never-stopped.w" > /dev/null || exit 1

# Checkpoints only at the end, so that the one found was made by the signal.
"$trainer" "${common[@]}" --checkpoint "$dir/ck" --checkpoint-every 1000000000 \
  --save "$dir/stopped.w" > /dev/null 2> "$dir/err" &
pid=$!
sleep 0.2
kill -"$signal" $pid
wait $pid
status=$?
cat "$dir/err"
echo "status $status"
[ -e "$dir/stopped.w" ] && echo "a stopped run saved its weights"
"$trainer" "${common[@]}" --resume "$dir/ck" --save "$dir/resumed.w" \
  > /dev/null || exit 1
cmp "$dir/never-stopped.w" "$dir/resumed.w" && echo "resumed: same weights"
