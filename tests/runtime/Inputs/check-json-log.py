"""Checks a trainer's --log-json file: every line one JSON object with the
documented keys and finite numbers (or null), epochs in order. Prints a
summary of the records whose epoch is 1, a multiple of 10, or the last
epoch of a run, for FileCheck."""
import json
import math
import sys

records = []
for number, line in enumerate(open(sys.argv[1]), 1):
    record = json.loads(line)
    assert set(record) == {"model", "epoch", "epochs", "step", "seconds",
                           "losses", "metrics"}, (number, record)
    for value in list(record["losses"].values()) + list(record["metrics"].values()):
        assert value is None or math.isfinite(value), (number, value)
    records.append(record)
epochs = [r["epoch"] for r in records]
assert epochs == list(range(1, len(records) + 1)), epochs
print("%d records, epochs %d to %d" % (len(records), epochs[0], epochs[-1]))
for r in records:
    if r["epoch"] == 1 or r["epoch"] % 10 == 0 or r["epoch"] == r["epochs"]:
        print("epoch %d: step %d, losses %s, metrics %s" % (
            r["epoch"], r["step"], " ".join(sorted(r["losses"])),
            " ".join(sorted(r["metrics"])) or "-"))
