"""kernel-text.py PTX NAME [N]: prints the PTX of the kernel whose name matches the regular
expression NAME in full (its .entry line to its closing brace), or of the N-th of those that
do, counting from 0 in the order of the file; fails when there is no such kernel, or without N
when more than one matches."""
import re
import sys

path, pattern = sys.argv[1], re.compile(sys.argv[2])
kernels = re.findall(r"^\.visible \.entry (\w+)\((.*?)^}", open(path).read(), re.M | re.S)
found = [(name, text) for name, text in kernels if pattern.fullmatch(name)]
if len(sys.argv) > 3:
    index = int(sys.argv[3])
    found = found[index:index + 1]
if len(found) != 1:
    sys.exit(f"kernel-text.py: {len(found)} kernels named {sys.argv[2]} in {path}")
print(found[0][0] + "(" + found[0][1] + "}")
