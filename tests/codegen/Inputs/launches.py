"""Prints the launches of a GPU schedule in a trainer's host LLVM IR (nnc
--target=cuda --emit=llvm -O0): one line per launch, the kernel's name and
whether it runs on many blocks ("wide") or on one ("block"), then "(if cut)" for a
launch made only when the call's rows cut a product's depth into runs."""
import re
import sys

ir_text, schedule = open(sys.argv[1]).read(), sys.argv[2]
strings = dict(re.findall(r'^(@\d+) = .*c"([^"]*)\\00"', ir_text, re.M))
table = re.search(r"^@nnc_gpu_kernels = constant \[\d+ x ptr\] \[(.*)\]$", ir_text, re.M)
names = [strings.get(entry.split()[-1], "") for entry in table.group(1).split(", ")]
body = re.search(r"^define void @%s\(ptr %%0\) .*?^}" % re.escape(schedule), ir_text,
                 re.M | re.S)
label = ""
for line in body.group(0).splitlines():
    block = re.match(r"^([\w.]+):", line)
    if block:
        label = block.group(1)
    launch = re.search(r"call void @nnc_gpu_launch\(ptr %0, i32 (\d+), i32 (\d)\)", line)
    if launch:
        index, wide = launch.groups()
        # A launch in a block named runs* is made only when the call's rows
        # cut a product's depth into runs.
        words = [names[int(index)], "wide" if wide == "1" else "block"]
        print(" ".join(words + ["(if cut)"] * label.startswith("runs")))
