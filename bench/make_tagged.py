#!/usr/bin/python3
"""Writes the synthetic part-of-speech corpus that specs/tagger_bench.nn trains on.

2 000 sentences of exactly 32 tokens `word/TAG`, one sentence per line, tokens
separated by spaces: the format of runtime/src/Corpus.h's readTaggedCorpus.
The words are `w0` ... `w4999`; word i always has tag TAGS[i % 12] (the 12 tags
of the universal tag set), and every token is a word drawn uniformly, so all
5 000 words occur (each about 13 times) and the vocabulary the trainer builds
is 5 000 words plus padding and unknown: index[32, 5002]. The corpus is for
timing, not for learning anything interesting; a fixed seed makes it the same
file on every machine.

usage: make_tagged.py [PATH]   (default: bench/data/tagged-bench.txt)
"""

import pathlib
import random
import sys

SENTENCES = 2000
LENGTH = 32
WORDS = 5000
TAGS = ["ADJ", "ADP", "ADV", "CONJ", "DET", "NOUN", "NUM", "PRON", "PRT",
        "PUNCT", "VERB", "X"]
SEED = 2024

DEFAULT_PATH = pathlib.Path(__file__).resolve().parent / "data" / "tagged-bench.txt"


def sentence(rng: random.Random) -> str:
    words = (rng.randrange(WORDS) for _ in range(LENGTH))
    return " ".join(f"w{i}/{TAGS[i % len(TAGS)]}" for i in words)


def write_corpus(path: pathlib.Path) -> None:
    rng = random.Random(SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (sentence(rng) for _ in range(SENTENCES))
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    write_corpus(path)
    print(f"wrote {SENTENCES} sentences of {LENGTH} tokens to {path}")


if __name__ == "__main__":
    main()
