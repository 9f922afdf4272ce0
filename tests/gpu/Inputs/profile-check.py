"""profile-check.py STDERR: checks a trainer's --gpu-profile report against
the --gpu-trace lines of the same run: each traced kernel is in the report
with as many launches, and no other; the header's sums are the rows'; the
rows go from the longest total time down. Prints one line when all holds,
else says what does not and exits 1."""
import re
import sys
from collections import Counter

HEADER = re.compile(r"gpu profile: ([0-9.]+) ms in ([0-9]+) launches of ([0-9]+) kernels, "
                    r"each launch timed by .+")
ROW = re.compile(r"gpu profile: +([0-9.]+)% +([0-9.]+) +([0-9]+) +([0-9.]+)  (\S+)")
TRACE = re.compile(r"gpu: (\S+) ")

traced = Counter()
header = None
rows = []
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if m := TRACE.match(line):
        traced[m.group(1)] += 1
    elif m := HEADER.fullmatch(line):
        header = float(m.group(1)), int(m.group(2)), int(m.group(3))
    elif m := ROW.fullmatch(line):
        rows.append((float(m.group(1)), float(m.group(2)), int(m.group(3)),
                     float(m.group(4)), m.group(5)))

problems = []
if header is None:
    problems.append("no report header")
profiled = Counter({name: launches for _, _, launches, _, name in rows})
if profiled != traced:
    problems.append(f"launches by kernel differ: traced {dict(traced)}, "
                    f"profiled {dict(profiled)}")
if header:
    total_ms, launches, kernels = header
    if launches != sum(profiled.values()) or kernels != len(rows):
        problems.append(f"header says {launches} launches of {kernels} kernels; "
                        f"the rows, {sum(profiled.values())} of {len(rows)}")
    if abs(total_ms - sum(r[1] for r in rows)) > 0.001 * (len(rows) + 1):
        problems.append(f"header's {total_ms} ms is not the rows' sum")
if rows and abs(sum(r[0] for r in rows) - 100) > 0.05 * len(rows):
    problems.append("the shares do not sum to 100%")
if [r[1] for r in rows] != sorted((r[1] for r in rows), reverse=True):
    problems.append("rows not in order of total time")
for share, total, launches, mean, name in rows:
    if abs(mean * launches / 1000 - total) > 0.001 + 0.01 * total:
        problems.append(f"{name}: mean {mean} us times {launches} launches is not {total} ms")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"profile: {len(rows)} kernels, {sum(profiled.values())} launches, as traced")
