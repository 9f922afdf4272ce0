#!/usr/bin/env python3
"""Writes the seed corpus of one fuzz target (tests/fuzz) into a folder.

The seeds come from the repository: the specs and the test specs for the
spec fuzzer, the data of specs/data and of the tests' Inputs folders for the
readers. Large files are cut into pieces of a few records, since libFuzzer
mutates small inputs faster; the IDX seeds are a few images of
specs/data/mnist-slice, in the layout of IdxFuzzer.cpp.

usage: seeds.py TARGET OUTPUT_DIR
"""

import gzip
import hashlib
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "specs" / "data"

# IdxFuzzer.cpp: a byte of `.gz` name bits, then four files between these.
IDX_SEPARATOR = b"--nnc-fuzz-next-file--"


def chunks(data, lines_per_chunk):
    """Pieces of `data` of `lines_per_chunk` lines each."""
    lines = data.splitlines(keepends=True)
    for i in range(0, len(lines), lines_per_chunk):
        yield b"".join(lines[i:i + lines_per_chunk])


def spec_seeds():
    for path in sorted(ROOT.glob("specs/*.nn")) + sorted(ROOT.glob("tests/**/*.nn")):
        yield path.read_bytes()


def csv_seeds():
    for path in [DATA / "iris.csv", DATA / "simple.csv"] + sorted(
            ROOT.glob("tests/**/Inputs/*.csv")):
        yield path.read_bytes()


def tagged_seeds():
    yield (DATA / "toy-tagged.txt").read_bytes()
    yield from (p.read_bytes() for p in sorted(ROOT.glob("tests/**/Inputs/*.txt")))
    # Only the first pieces: a few dozen sentences cover the format.
    yield from list(chunks((DATA / "oanc-slice.txt").read_bytes(), 4))[:16]


def polarity_seeds():
    yield from (p.read_bytes() for p in sorted(ROOT.glob("tests/**/Inputs/polarity.csv")))
    # Every record of the slice spans two lines (its text ends in a line feed).
    yield from list(chunks((DATA / "polarity-slice.csv").read_bytes(), 8))[:16]


def idx_file(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_seeds():
    slice_dir = DATA / "mnist-slice"

    def read(name):
        return gzip.decompress((slice_dir / (name + ".gz")).read_bytes())

    files = []
    for prefix, count in (("train", 2), ("t10k", 1)):
        images = read(prefix + "-images-idx3-ubyte")
        labels = read(prefix + "-labels-idx1-ubyte")
        rows, cols = struct.unpack(">II", images[8:16])
        files.append(idx_file(0x803, (count, rows, cols), images[16:16 + count * rows * cols]))
        files.append(idx_file(0x801, (count,), labels[8:8 + count]))
    # All raw, all gzip-compressed under .gz names, and gzip under raw names.
    yield bytes([0]) + IDX_SEPARATOR.join(files)
    yield bytes([0xF]) + IDX_SEPARATOR.join(gzip.compress(f, mtime=0) for f in files)
    yield bytes([0]) + IDX_SEPARATOR.join(gzip.compress(f, mtime=0) for f in files)


SEEDS = {
    "spec": spec_seeds,
    "csv": csv_seeds,
    "idx": idx_seeds,
    "tagged": tagged_seeds,
    "polarity": polarity_seeds,
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SEEDS:
        sys.exit("usage: seeds.py {%s} OUTPUT_DIR" % "|".join(SEEDS))
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS[sys.argv[1]]():
        # Named by content, as libFuzzer names what it adds.
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
