#!/usr/bin/env python3
"""What does writing alt text cost per image, and what does exiftool's batch mode save?

Makes ``--images`` small JPEGs (640x480, seeded noise) in a temporary folder, then times,
per image:

- ``spawn``: one ``exiftool`` process per image writing the four fields into a copy (what a
  shell loop would do: Perl and exiftool's modules start each time);
- ``stay_open``: the same command sent to one ``exiftool -stay_open True`` process;
- ``embed``: :meth:`captioner.alt_text.AltTextWriter.embed`, the whole path the CLI takes
  (read the existing fields, copy, write, flush to disk, rename) through one process.

Each way runs ``--rounds`` times in turn; the median per-image time of each is printed.

Usage: python scripts/bench_alt_text.py [--images 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.alt_text import FIELDS, AltTextWriter, tag_arguments
from captioner.exiftool import Exiftool
from loadkit import cpu_name, write_figures

CAPTION = "a dog sitting on a couch next to a remote control ."
COMMON = ["-charset", "iptc=UTF8"]


def _images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image-{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _per_image_ms(images: list[Path], out: Path, write: Callable[[Path, Path], None]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    started = time.perf_counter()
    for image in images:
        write(image, out / image.name)
    return (time.perf_counter() - started) / len(images) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    arguments = tag_arguments(FIELDS, CAPTION)

    def spawn(image: Path, copy: Path) -> None:
        command = ["exiftool", *COMMON, *arguments, "-o", str(copy), str(image)]
        subprocess.run(command, check=True, capture_output=True)

    with (
        tempfile.TemporaryDirectory() as tmp,
        Exiftool(common_args=COMMON) as exiftool,
        AltTextWriter() as writer,
    ):
        images = _images(Path(tmp), args.images)
        out = Path(tmp) / "out"

        def stay_open(image: Path, copy: Path) -> None:
            reply = exiftool.run([*arguments, "-o", str(copy), str(image)])
            assert reply.status == 0, reply.stderr

        def embed(image: Path, copy: Path) -> None:
            assert writer.embed(image, CAPTION, copy).status == "written"

        ways = {"spawn": spawn, "stay_open": stay_open, "embed": embed}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, write in ways.items():
                times[name].append(_per_image_ms(images, out, write))
    print(f"{args.images} JPEGs 640x480, {args.rounds} rounds, {cpu_name()}")
    for name, values in times.items():
        print(f"{name:>10}: {statistics.median(values):7.1f} ms per image")
    spawn_ms = statistics.median(times["spawn"])
    print(f"stay_open saves {spawn_ms / statistics.median(times['stay_open']):.0f}x on the write")
    write_figures(
        "default",
        {
            "images": args.images,
            "rounds": args.rounds,
            **{f"{name}_ms": round(statistics.median(v), 1) for name, v in times.items()},
        },
    )


if __name__ == "__main__":
    main()
