"""Write a synthetic shapes captioning dataset: images plus captions.jsonl, for training.

Usage: python scripts/make_shapes_dataset.py --out DIR --count N --seed S
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from captioner.training.shapes import write_dataset


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, write the dataset, print where it went and how long it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--count", type=positive_int, required=True, help="number of images")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        captions = write_dataset(args.out, args.count, args.seed)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    print(f"wrote {args.count} images and {captions} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
