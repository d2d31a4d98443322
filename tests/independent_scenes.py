"""Shape pictures drawn the way a new user would, sharing nothing with the training generator.

The demo model learned from :mod:`captioner.training.shapes`. This module checks that it
learned shapes and colours rather than that generator's way of drawing them, so it imports
nothing from it and draws differently on purpose: colours are CSS colour names (Pillow's
``ImageColor`` table) and chart palettes that people would give each name, shapes are drawn
straight onto the picture with ``ImageDraw`` (``ellipse``, ``rectangle``,
``regular_polygon`` and a hand-made star), mostly without anti-aliasing, on white, grey,
near-white, dark or gradient backgrounds of common picture sizes, saved as PNG or JPEG.

Each scene holds ONE shape, and only its colour and kind are scored: the size words follow
the generator's own convention (a share of the frame) and are not a user's judgement, so
they are left out. A caption counts as right when it is a one-shape caption of the demo
grammar naming the drawn colour and kind.

Run as a script to measure a model on more scenes than the test uses::

    python tests/independent_scenes.py --count 1000 [--model-dir DIR]
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

from PIL import Image, ImageColor, ImageDraw, ImageOps

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
_ONE_SHAPE = re.compile(r"^a (?:small|large) (\w+) (\w+) \.$")


@dataclass(frozen=True)
class Picture:
    """One drawn scene and what it shows.

    Attributes:
        data: The encoded file (PNG or JPEG bytes).
        colour: The colour name of the shape.
        kind: One of :data:`KINDS`.
        style: How it was drawn, for the report: ``flat``, ``outlined``, ``hollow`` or
            ``smooth``.
    """

    data: bytes
    colour: str
    kind: str
    style: str


def draw_pictures(count: int, seed: int) -> list[Picture]:
    """``count`` one-shape pictures; the same seed gives the same bytes."""
    rng = random.Random(seed)
    return [_draw_one(rng) for _ in range(count)]


def _draw_one(rng: random.Random) -> Picture:
    width, height = rng.choice(_FRAMES)
    picture = _backdrop(rng, width, height)
    colour = rng.choice(list(PALETTE))
    kind = rng.choice(KINDS)
    fill = ImageColor.getrgb(rng.choice(PALETTE[colour]))
    # Half the shape's extent: 7% to 28% of the shorter side, anywhere in the middle 80%.
    half = rng.uniform(0.07, 0.28) * min(width, height)
    cx = rng.uniform(0.1 * width + half, 0.9 * width - half)
    cy = rng.uniform(0.1 * height + half, 0.9 * height - half)
    style = rng.choices(("flat", "outlined", "hollow", "smooth"), (5, 2, 2, 2))[0]
    if style == "smooth":
        # Drawn four times larger, then scaled down with a Lanczos filter.
        big = picture.resize((width * 4, height * 4))
        _shape(ImageDraw.Draw(big), kind, cx * 4, cy * 4, half * 4, fill=fill)
        picture = big.resize((width, height), Image.Resampling.LANCZOS)
    elif style == "outlined":
        edge = rng.choice(("black", "white", "#404040"))
        line = rng.randint(2, 4)
        _shape(ImageDraw.Draw(picture), kind, cx, cy, half, fill=fill, outline=edge, width=line)
    elif style == "hollow":
        line = max(3, round(half / rng.uniform(3.5, 6)))
        _shape(ImageDraw.Draw(picture), kind, cx, cy, half, outline=fill, width=line)
    else:
        _shape(ImageDraw.Draw(picture), kind, cx, cy, half, fill=fill)
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=rng.choice((75, 90)))
    return Picture(buffer.getvalue(), colour, kind, style)


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
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, half: float, **paint
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
    """Shares of pictures whose caption names the right colour, kind, and both."""
    right = Counter()
    for caption, picture in zip(captions, pictures, strict=True):
        match = _ONE_SHAPE.match(caption)
        colour_ok = match is not None and match[1] == picture.colour
        kind_ok = match is not None and match[2] == picture.kind
        right["colour"] += colour_ok
        right["shape"] += kind_ok
        right["both"] += colour_ok and kind_ok
    return {name: right[name] / len(pictures) for name in ("colour", "shape", "both")}


def caption_all(captioner: object, pictures: list[Picture], batch: int = 25) -> list[str]:
    """The best caption of each picture, from a :class:`captioner.engine.Captioner`."""
    captions = []
    for start in range(0, len(pictures), batch):
        chunk = [picture.data for picture in pictures[start : start + batch]]
        captions += [ranked[0].text for ranked in captioner.caption(chunk)]
    return captions


def main(argv: list[str] | None = None) -> int:
    """Print a model's colour, shape and colour+shape rates on fresh pictures."""
    from captioner.assets import DEMO_MODEL_DIR, model_files_in
    from captioner.engine import Captioner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="pictures to draw")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the pictures")
    parser.add_argument(
        "--model-dir", type=Path, default=DEMO_MODEL_DIR, help="model (default: the demo)"
    )
    args = parser.parse_args(argv)
    files = model_files_in(args.model_dir)
    captioner = Captioner.load(files.checkpoint, files.vocab)
    pictures = draw_pictures(args.count, args.seed)
    captions = caption_all(captioner, pictures)
    rates = score(captions, pictures)
    print(f"{args.count} pictures, seed {args.seed}, model {args.model_dir}")
    print(" ".join(f"{name} {rate:.1%}" for name, rate in rates.items()))
    for style in ("flat", "outlined", "hollow", "smooth"):
        chosen = [i for i, p in enumerate(pictures) if p.style == style]
        rate = score([captions[i] for i in chosen], [pictures[i] for i in chosen])["both"]
        print(f"  {style}: {rate:.1%} of {len(chosen)}")
    misses = Counter(
        (p.colour, p.kind, c)
        for c, p in zip(captions, pictures, strict=True)
        if score([c], [p])["both"] < 1
    )
    for (colour, kind, caption), n in misses.most_common(15):
        print(f"  {n:3d} x {colour} {kind}: {caption!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
