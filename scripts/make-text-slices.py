#!/usr/bin/env python3
"""Writes specs/data/oanc-slice.txt and specs/data/polarity-slice.csv.

The slices are what the tests train on, cut from the full corpora in
specs/data/pattern/ (put there by scripts/fetch-data.sh):

  oanc-slice.txt      the first 400 lines (sentences) of tagged-en-oanc.txt,
                      unchanged, each ending in a line feed
  polarity-slice.csv  400 records of polarity-en-pang-lee2.csv: the first 200
                      labelled "1" and the first 200 labelled "-1", in file
                      order (the file holds all its "1" records first)

The polarity records are copied byte for byte, and the slice keeps the
original's layout: a UTF-8 byte order mark, no header, records separated by
CRLF (a line feed inside a quoted field stays a bare LF) and no line end after
the last record. The output is the same bytes on every run.

usage: scripts/make-text-slices.py [--full DIR] [--out DIR]
"""

import argparse
import csv
import io
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OANC_LINES = 400
PER_LABEL = 200
LABELS = ["1", "-1"]
BOM = b"\xef\xbb\xbf"


def fail(message):
    sys.exit(f"make-text-slices: {message}")


def csv_records(data):
    """The raw bytes of each CSV record in `data` (BOM removed), split at the
    CRLF or LF that ends a record outside double quotes."""
    records = []
    start = 0
    quoted = False
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x22:  # '"'; a doubled quote toggles twice, which is right.
            quoted = not quoted
        elif c == 0x0A and not quoted:
            end = i - 1 if i > start and data[i - 1] == 0x0D else i
            records.append(data[start:end])
            start = i + 1
        i += 1
    if quoted:
        fail("polarity file: unterminated quoted field")
    if start < len(data):
        records.append(data[start:])
    return [r for r in records if r.strip()]


def label_of(record):
    """The first field of one CSV record."""
    fields = next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))
    if len(fields) != 2:
        fail(f"polarity file: a record with {len(fields)} fields, expected 2")
    return fields[0]


def oanc_slice(full):
    with open(os.path.join(full, "tagged-en-oanc.txt"), "rb") as f:
        lines = f.read().split(b"\n")
    if len(lines) <= OANC_LINES:
        fail(f"tagged-en-oanc.txt: only {len(lines)} lines, {OANC_LINES + 1} or more wanted")
    return b"".join(line + b"\n" for line in lines[:OANC_LINES])


def polarity_slice(full):
    with open(os.path.join(full, "polarity-en-pang-lee2.csv"), "rb") as f:
        data = f.read()
    if not data.startswith(BOM):
        fail("polarity-en-pang-lee2.csv: no UTF-8 byte order mark; not the expected file")
    taken = {label: 0 for label in LABELS}
    kept = []
    for record in csv_records(data[len(BOM):]):
        label = label_of(record)
        if label not in taken:
            fail(f"polarity-en-pang-lee2.csv: unexpected label {label!r}")
        if taken[label] < PER_LABEL:
            taken[label] += 1
            kept.append(record)
    for label, count in taken.items():
        if count < PER_LABEL:
            fail(f"polarity-en-pang-lee2.csv: only {count} records labelled {label}")
    return BOM + b"\r\n".join(kept)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default=os.path.join(ROOT, "specs", "data", "pattern"),
                        help="folder of the full corpora (default: specs/data/pattern)")
    parser.add_argument("--out", default=os.path.join(ROOT, "specs", "data"),
                        help="folder the slices are written to (default: specs/data)")
    args = parser.parse_args()
    try:
        outputs = [("oanc-slice.txt", oanc_slice(args.full)),
                   ("polarity-slice.csv", polarity_slice(args.full))]
    except OSError as e:
        fail(f"{e.filename}: {e.strerror} (run scripts/fetch-data.sh first)")
    os.makedirs(args.out, exist_ok=True)
    for name, data in outputs:
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
        print(f"make-text-slices: {name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
