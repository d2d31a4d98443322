"""Shape pictures drawn the way a new user would, sharing nothing with the training generator.

The demo model learned from :mod:`captioner.training.shapes`. This module checks that it
learned shapes and colours rather than that generator's way of drawing them, so it imports
nothing from it and draws differently on purpose: colours are CSS colour names (Pillow's
``ImageColor`` table) and chart palettes' entries that people would give each name, shapes
are drawn straight onto the picture with ``ImageDraw`` (``ellipse``, ``rectangle``,
``regular_polygon``, a hand-made pentagram; filled, filled with a dark or white outline,
outline only, or drawn four times larger and scaled down), upright, on white, near-white,
grey, dark or gradient backgrounds of common picture sizes, saved as PNG or JPEG.

A picture holds one shape of any size from 7% to 28% of the frame's shorter side, or
(``pairs=True``) a small and a large shape side by side along the frame's longer side.
Only colours and kinds are scored: the size words follow the generator's convention (a
share of the frame), which is not a user's judgement, and one-shape pictures do not leave
it clear-cut. A caption counts as right when it describes as many shapes as were drawn and
names each one's colour and kind, the small one first.

Run as a script to measure a model on more pictures than the tests use::

    python tests/independent_scenes.py --count 1000 [--pairs] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import io
import math
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageColor, ImageDraw, ImageOps

from support.captions import captions_of

if TYPE_CHECKING:
    from captioner.engine import Captioner

# Colours people give these names: CSS/X11 names, and the matplotlib "tab10" and
# Okabe-Ito palettes' entries of that name.
PALETTE: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "firebrick", "#d62728", "#e41a1c"),
    "green": ("green", "forestgreen", "limegreen", "seagreen", "#2ca02c", "#4daf4a"),
    "blue": ("blue", "royalblue", "mediumblue", "dodgerblue", "#1f77b4", "#0072b2"),
    "yellow": ("yellow", "gold", "#ffd700", "#f0e442", "#ffe119"),
    "purple": ("purple", "darkviolet", "rebeccapurple", "blueviolet", "#9467bd", "#7b3294"),
    "orange": ("orange", "darkorange", "#ff7f0e", "#e69f00", "#f58231"),
}
KINDS = ("circle", "square", "triangle", "star")
_LIGHT = ("white", "whitesmoke", "ivory", "linen", "aliceblue", "gainsboro", "lightgray", "#eeeeee")
_DARK = ("black", "#1e1e1e", "#2b2b2b", "dimgray", "#3c3c46", "#4a4a4a")
_FRAMES = (
    (256, 256), (224, 224), (400, 400), (320, 240), (240, 320), (400, 300), (300, 400),
    (480, 270), (270, 480), (500, 375), (640, 480), (300, 200),
)  # fmt: skip
_CAPTION = re.compile(
    r"^a (small|large) (\w+) (\w+)"
    r"(?: (to the left of|to the right of|above|below) a (small|large) (\w+) (\w+))? \.$"
)


@dataclass(frozen=True)
class Picture:
    """One drawn scene and what it shows.

    Attributes:
        data: The encoded file (PNG or JPEG bytes).
        shapes: ``(colour, kind)`` of each shape: one, or two with the small one first.
        relation: Where the small shape is relative to the large one, in the caption's
            words, or None for one shape.
        style: How it was drawn, for the report: ``flat``, ``outlined``, ``hollow`` or
            ``smooth``.
    """

    data: bytes
    shapes: tuple[tuple[str, str], ...]
    relation: str | None
    style: str


def draw_pictures(count: int, seed: int, *, pairs: bool = False) -> list[Picture]:
    """``count`` pictures of one shape (or of two); the same seed gives the same bytes."""
    rng = random.Random(seed)
    return [_draw_one(rng, pairs) for _ in range(count)]


def _draw_one(rng: random.Random, pairs: bool) -> Picture:
    width, height = rng.choice(_FRAMES)
    picture = _backdrop(rng, width, height)
    places, relation = (
        _pair_places(rng, width, height) if pairs else ([_place(rng, width, height)], None)
    )
    style = rng.choices(("flat", "outlined", "hollow", "smooth"), (5, 2, 2, 2))[0]
    edge, line = rng.choice(("black", "white", "#404040")), rng.randint(2, 4)
    scale = 4 if style == "smooth" else 1
    if style == "smooth":  # drawn four times larger, then scaled down with a Lanczos filter
        picture = picture.resize((width * scale, height * scale))
    draw = ImageDraw.Draw(picture)
    shapes = []
    for cx, cy, half in places:
        colour, kind = rng.choice(list(PALETTE)), rng.choice(KINDS)
        fill = ImageColor.getrgb(rng.choice(PALETTE[colour]))
        where = (cx * scale, cy * scale, half * scale)
        if style == "outlined":
            _shape(draw, kind, *where, fill=fill, outline=edge, width=line)
        elif style == "hollow":
            _shape(
                draw, kind, *where, outline=fill, width=max(3, round(half / rng.uniform(3.5, 6)))
            )
        else:
            _shape(draw, kind, *where, fill=fill)
        shapes.append((colour, kind))
    if style == "smooth":
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=rng.choice((75, 90)))
    return Picture(buffer.getvalue(), tuple(shapes), relation, style)


def _place(rng: random.Random, width: int, height: int) -> tuple[float, float, float]:
    """Centre and half extent of one shape: 7% to 28% of the shorter side, in the middle 80%."""
    half = rng.uniform(0.07, 0.28) * min(width, height)
    cx = rng.uniform(0.1 * width + half, 0.9 * width - half)
    cy = rng.uniform(0.1 * height + half, 0.9 * height - half)
    return cx, cy, half


def _pair_places(
    rng: random.Random, width: int, height: int
) -> tuple[list[tuple[float, float, float]], str]:
    """A small shape and a large one in a row along the frame's longer side, centres level.

    The small one's half extent is 6.5% to 10% of the shorter side, the large one's 20% to
    26%, with a gap of 8% between them; all of it inside the middle 80% of the frame.
    """
    short = min(width, height)
    small, large, gap = (
        rng.uniform(0.065, 0.10) * short,
        rng.uniform(0.2, 0.26) * short,
        0.08 * short,
    )
    horizontal = width > height or (width == height and rng.random() < 0.5)
    along, across = (width, height) if horizontal else (height, width)
    start = rng.uniform(0.1 * along, 0.9 * along - (2 * small + gap + 2 * large))
    small_first = rng.random() < 0.5
    if small_first:
        small_at, large_at = start + small, start + 2 * small + gap + large
    else:
        large_at, small_at = start + large, start + 2 * large + gap + small
    level = rng.uniform(0.1 * across + large, 0.9 * across - large)
    if horizontal:
        relation = "to the left of" if small_first else "to the right of"
        return [(small_at, level, small), (large_at, level, large)], relation
    relation = "above" if small_first else "below"
    return [(level, small_at, small), (level, large_at, large)], relation


def _backdrop(rng: random.Random, width: int, height: int) -> Image.Image:
    """Plain light (half), plain dark, or a top-to-bottom or sideways grey gradient."""
    choice = rng.random()
    if choice < 0.5:
        return Image.new("RGB", (width, height), rng.choice(_LIGHT))
    if choice < 0.7:
        return Image.new("RGB", (width, height), rng.choice(_DARK))
    ramp = Image.linear_gradient("L").resize((width, height))
    if rng.random() < 0.5:
        ramp = ramp.transpose(Image.Transpose.ROTATE_90).resize((width, height))
    ends = rng.choice((("white", "darkgray"), ("#202020", "#909090"), ("lightgray", "dimgray")))
    return ImageOps.colorize(ramp, black=ends[0], white=ends[1])


def _shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, half: float, **paint: Any
) -> None:
    """One shape whose bounding box is ``2 * half`` wide, centred on (cx, cy)."""
    if kind == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), **paint)
    elif kind == "square":
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), **paint)
    elif kind == "triangle":
        # Pillow's equilateral triangle, apex up, lowered to centre its bounding box.
        radius = half / math.cos(math.pi / 6)
        draw.regular_polygon((cx, cy + radius / 4, radius), 3, **paint)
    else:
        # A pentagram outline: ten points, inner radius 0.382 of the outer.
        points = []
        for k in range(10):
            reach = half if k % 2 == 0 else 0.382 * half
            angle = math.radians(90 + 36 * k)
            points.append((cx + reach * math.cos(angle), cy - reach * math.sin(angle)))
        if "fill" in paint:
            draw.polygon(points, **paint)
        else:  # Pillow's wide polygon outline garbles concave corners: a closed line.
            draw.line([*points, points[0]], fill=paint["outline"], width=paint["width"])


def score(captions: list[str], pictures: list[Picture]) -> dict[str, float]:
    """Shares of pictures whose caption names every colour right, every kind, and both.

    A caption must describe as many shapes as were drawn, in the grammar's order (the small
    one first). For pictures of two shapes, ``relation`` is the share with the right one.
    """
    right: Counter[str] = Counter()
    for caption, picture in zip(captions, pictures, strict=True):
        match = _CAPTION.match(caption)
        named = [] if match is None else [(match[2], match[3])]
        if match is not None and match[4]:
            named.append((match[6], match[7]))
        fits = len(named) == len(picture.shapes)
        colours = fits and all(n[0] == d[0] for n, d in zip(named, picture.shapes, strict=False))
        kinds = fits and all(n[1] == d[1] for n, d in zip(named, picture.shapes, strict=False))
        right["colour"] += colours
        right["shape"] += kinds
        right["both"] += colours and kinds
        right["relation"] += match is not None and match[4] == picture.relation
    rates = {name: right[name] / len(pictures) for name in ("colour", "shape", "both")}
    if any(picture.relation for picture in pictures):
        rates["relation"] = right["relation"] / len(pictures)
    return rates


def caption_all(captioner: Captioner, pictures: list[Picture], batch: int = 25) -> list[str]:
    """The best caption of each picture."""
    captions = []
    for start in range(0, len(pictures), batch):
        chunk = [picture.data for picture in pictures[start : start + batch]]
        captions += [ranked[0].text for ranked in captions_of(captioner, chunk)]
    return captions


def main(argv: list[str] | None = None) -> int:
    """Print a model's colour, shape and colour+shape rates on fresh pictures."""
    from captioner.assets import DEMO_MODEL_DIR, model_files_in
    from captioner.engine import Captioner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="pictures to draw")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the pictures")
    parser.add_argument("--pairs", action="store_true", help="two shapes per picture")
    parser.add_argument(
        "--model-dir", type=Path, default=DEMO_MODEL_DIR, help="model (default: the demo)"
    )
    args = parser.parse_args(argv)
    files = model_files_in(args.model_dir)
    captioner = Captioner.load(files.checkpoint, files.vocab)
    pictures = draw_pictures(args.count, args.seed, pairs=args.pairs)
    captions = caption_all(captioner, pictures)
    rates = score(captions, pictures)
    kind = "two-shape" if args.pairs else "one-shape"
    print(f"{args.count} {kind} pictures, seed {args.seed}, model {args.model_dir}")
    print(" ".join(f"{name} {rate:.1%}" for name, rate in rates.items()))
    for style in ("flat", "outlined", "hollow", "smooth"):
        chosen = [i for i, p in enumerate(pictures) if p.style == style]
        rate = score([captions[i] for i in chosen], [pictures[i] for i in chosen])["both"]
        print(f"  {style}: {rate:.1%} of {len(chosen)}")
    misses = Counter(
        (p.shapes, c)
        for c, p in zip(captions, pictures, strict=True)
        if score([c], [p])["both"] < 1
    )
    for (shapes, caption), n in misses.most_common(15):
        print(f"  {n:3d} x {shapes}: {caption!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
