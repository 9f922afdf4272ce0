"""Prints the launches of a GPU schedule in a trainer's host LLVM IR (nnc
--target=cuda --emit=llvm -O0): one line per launch, the kernel's name and
whether it runs on as many blocks as keep the device busy ("wide"), on one
("block"), or on as many as the call's rows make ("row-blocks"), then "(if
cut)" for a launch made only when the call's rows cut a sum into runs, "(if
few indices)" or "(if many indices)" for an embedding's gradient's kernels
that the call's count of indices picks."""
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
    launch = re.search(r"call void @nnc_gpu_launch\(ptr %0, i32 (\d+), i32 (\d+|%\w+)\)", line)
    if launch:
        index, blocks = launch.groups()
        # A launch in a block named runs*, few* or many* is made only when
        # the call's rows say so.
        words = [names[int(index)], {"0": "wide", "1": "block"}.get(blocks, "row-blocks")]
        for prefix, condition in [("runs", "(if cut)"), ("few", "(if few indices)"),
                                  ("many", "(if many indices)")]:
            if label.startswith(prefix):
                words.append(condition)
        print(" ".join(words))
