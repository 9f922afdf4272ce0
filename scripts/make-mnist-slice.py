#!/usr/bin/env python3
"""Writes specs/data/mnist-slice/ from the full MNIST files.

The slice is what the tests train on: the first 1000 training images and
labels and the first 500 test images and labels, as gzip-compressed IDX files
with MNIST's four names. The full files are read from specs/data/mnist/ (put
there by scripts/fetch-data.sh), raw or gzip-compressed. The output is the same
bytes on every run: gzip level 9, no file name, time 0.

usage: scripts/make-mnist-slice.py [--full DIR] [--out DIR]
"""

import argparse
import gzip
import io
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (file prefix, items kept)
PARTS = [("train", 1000), ("t10k", 500)]


def read_idx(folder, name):
    """The bytes of folder/name, or of folder/name.gz decompressed."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        path += ".gz"
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def head(data, magic, keep):
    """The IDX file `data` cut to its first `keep` items."""
    found, count = struct.unpack(">II", data[:8])
    if found != magic:
        sys.exit(f"make-mnist-slice: magic 0x{found:08x}, expected 0x{magic:08x}")
    if count < keep:
        sys.exit(f"make-mnist-slice: only {count} items, {keep} wanted")
    ndims = magic & 0xFF
    header_size = 4 + 4 * ndims
    item_size = 1
    for d in struct.unpack(f">{ndims - 1}I", data[8:header_size]):
        item_size *= d
    header = struct.pack(">II", magic, keep) + data[8:header_size]
    return header + data[header_size:header_size + keep * item_size]


def write_gzip(path, data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf,
                       mtime=0) as f:
        f.write(data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default=os.path.join(ROOT, "specs/data/mnist"))
    parser.add_argument("--out", default=os.path.join(ROOT, "specs/data/mnist-slice"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for prefix, keep in PARTS:
        for kind, magic in (("images-idx3-ubyte", 0x803), ("labels-idx1-ubyte", 0x801)):
            name = f"{prefix}-{kind}"
            data = head(read_idx(args.full, name), magic, keep)
            write_gzip(os.path.join(args.out, name + ".gz"), data)
            print(f"make-mnist-slice: {name}.gz: {keep} items")


if __name__ == "__main__":
    main()
