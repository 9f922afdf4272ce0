"""Damages a checkpoint and a weights file in many random ways (cut short,
a bit flipped, bytes overwritten, bytes appended) and checks that the trainer
refuses every damaged file with a message and exit status 2: never a crash,
never a silent load.

usage: mutate-files.py TRAINER CHECKPOINT WEIGHTS PREDICT-INPUT DIR COUNT"""
import os
import random
import subprocess
import sys

trainer, checkpoint, weights, predict_input, folder, count = sys.argv[1:]
rng = random.Random(6)


def mutations(data):
    for _ in range(int(count)):
        kind = rng.choice(["cut", "flip", "overwrite", "append"])
        b = bytearray(data)
        if kind == "cut":
            b = b[:rng.randrange(len(b))]
        elif kind == "flip":
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            i = rng.randrange(len(b))
            n = rng.randrange(1, 9)
            b[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
            b = b[:len(data)]
            if b == bytearray(data):
                b[i] ^= 0xff
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        yield kind, bytes(b)


def check(args, path, original):
    global tested
    failures = 0
    for kind, damaged in mutations(open(original, "rb").read()):
        tested += 1
        with open(path, "wb") as f:
            f.write(damaged)
        run = subprocess.run(args, capture_output=True, text=True)
        if run.returncode != 2 or "error: " not in run.stderr:
            print("%s of %s: status %d, stderr %r" % (
                kind, original, run.returncode, run.stderr))
            failures += 1
    return failures


tested = 0
os.makedirs(folder, exist_ok=True)
ck = os.path.join(folder, "damaged.ck")
w = os.path.join(folder, "damaged.w")
failures = check([trainer, "--resume", ck, "--epochs", "0", "--quiet",
                  "--save", os.path.join(folder, "out.w")], ck, checkpoint)
failures += check([trainer, "predict", "--weights", w, "--input",
                   predict_input], w, weights)
print("%d damaged files, %d accepted" % (tested, failures))
sys.exit(1 if failures else 0)
