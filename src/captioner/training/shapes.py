"""Procedural shape scenes with exactly true captions: a dataset a small model can master.

A scene holds one or two shapes on a low-saturation background. Its caption follows a
fixed grammar over a 21-word vocabulary::

    a {small|large} {colour} {shape} .
    a small {colour} {shape} {relation} a large {colour} {shape} .

With two shapes, the small one is always the one described and the large one the
landmark (figure and ground, as people say "a cup next to a table"), so the word order
follows from the picture and an exact caption is learnable. The relation is the axis the
shapes are separated on, with a gap between them and little offset across, so it is never
a judgement call.

Everything that does not change the caption varies, so that a model learns shapes and
colours rather than one way of drawing them: the frame's size and aspect ratio (1:2 to
2:1), the background (plain, gradient, stripes, checkers, blotches or speckle, of any tone
from black to white), each colour within its name's range (:data:`COLOURS`), filled or
outlined-only shapes, outlines of another tone round filled ones, small rotations of
squares, triangles and stars, a star's depth and a triangle's height, drawing with or
without anti-aliasing, blur, pixel noise, and PNG or JPEG of any quality from 30 to 95.

Sizes: a shape's extent is half the longer side of its bounding box, as a fraction of the
frame's geometric mean side ``sqrt(width * height)``, which sets its share of the picture
once the model stretches it to a square. "small" spans 0.045 to 0.10 and "large" 0.14 to
0.30 (less where the frame is too narrow), so the two sizes never meet. The model stretches
every image to 346x346 and centre-crops 299x299 (docs/faithfulness.md, "Preprocessing"),
which cuts about 7% off each side: shapes stay clear of an 8% margin.

Everything random comes from one :class:`numpy.random.Generator`: scene ``i`` of seed
``s`` is drawn from :func:`scene_rng` ``(s, i)``, so a dataset is reproducible image by
image, byte for byte, and a longer run starts with the images of a shorter one. A scene is
a :class:`~captioner.training.scene.Scene` (its own module, which the drawing code reads
too); drawing it is :mod:`captioner.training.shape_drawing`'s job (:func:`render_scene`).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.preprocessing import RESIZE_SIZE
from captioner.training.scene import RGB, Background, Scene, Shape
from captioner.training.shape_drawing import render_scene

__all__ = [
    "COLOURS",
    "PATTERNS",
    "RELATIONS",
    "SHAPE_KINDS",
    "SIZES",
    "SIZE_EXTENTS",
    "Background",
    "ColourRange",
    "Scene",
    "Shape",
    "generate_scene",
    "render_scene",
    "sample_scene",
    "scene_rng",
    "write_dataset",
]


@dataclass(frozen=True)
class ColourRange:
    """The fills one colour name covers, in HSV.

    Attributes:
        hue: Lowest and highest hue in degrees; red's starts below 0 (it wraps round).
        saturation: Lowest and highest saturation, 0..1.
        value: Lowest and highest value (brightness), 0..1.
    """

    hue: tuple[float, float]
    saturation: tuple[float, float]
    value: tuple[float, float]


# Each name's hues are at least 6 degrees from its neighbours'; together with
# _MIN_CHROMA this keeps every fill far more saturated than any background.
COLOURS: dict[str, ColourRange] = {
    "red": ColourRange(hue=(-14, 6), saturation=(0.7, 1.0), value=(0.6, 1.0)),
    "green": ColourRange(hue=(95, 155), saturation=(0.55, 1.0), value=(0.45, 0.95)),
    "blue": ColourRange(hue=(200, 245), saturation=(0.6, 1.0), value=(0.5, 1.0)),
    "yellow": ColourRange(hue=(48, 62), saturation=(0.7, 1.0), value=(0.85, 1.0)),
    "purple": ColourRange(hue=(262, 305), saturation=(0.45, 1.0), value=(0.45, 0.9)),
    "orange": ColourRange(hue=(22, 42), saturation=(0.75, 1.0), value=(0.85, 1.0)),
}
SHAPE_KINDS = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
RELATIONS = ("to the left of", "to the right of", "above", "below")
PATTERNS = ("plain", "gradient", "stripes", "checkers", "blotches", "speckle")
# A shape's extent (half its bounding box's longer side) over sqrt(width * height).
SIZE_EXTENTS = {"small": (0.045, 0.10), "large": (0.14, 0.30)}

# A fill's chroma (largest minus smallest channel) is at least this; a background's at
# most 2 * _MAX_TINT.
_MIN_CHROMA = 70
_MAX_TINT = 12
# Share of each side kept clear: the model's centre crop removes 6.8% per side.
_MARGIN_FRACTION = 0.08
# Gap between two shapes' bounding boxes along their axis, as a fraction of sqrt(w * h).
_MIN_GAP_FRACTION = 0.04
# Across the axis, centres differ by at most this share of their distance along it.
_MAX_CROSS_OFFSET = 0.25
_MEAN_SIDE_RANGE_PX = (180, 600)
_MAX_ASPECT = 2.0
_TWO_SHAPE_PROBABILITY = 0.6
# Largest rotation either way, in degrees, and the range of each kind's proportion.
_MAX_ROTATION_DEG = {"circle": 0.0, "square": 15.0, "triangle": 10.0, "star": 20.0}
_PROPORTION_RANGE = {
    "circle": (1.0, 1.0),
    "square": (1.0, 1.0),
    "triangle": (0.75, 1.0),  # height over base
    "star": (0.38, 0.55),  # inner radius over outer
}
# Shares of outlined-only shapes and of filled shapes with an edge of another tone.
_HOLLOW_PROBABILITY = 0.2
_EDGED_PROBABILITY = 0.2
# An outline-only shape's line: 12% to 30% of its extent (stars: at most 15%, so their
# points stay open), and never under 0.9% of sqrt(w * h), about 3 pixels once resized.
_HOLLOW_LINE_RANGE = (0.12, 0.30)
_HOLLOW_STAR_MAX_LINE = 0.15
_MIN_LINE_FRACTION = 0.009
_EDGE_LINE_RANGE = (0.03, 0.12)
_ANTIALIAS_PROBABILITY = 0.5
_BLUR_PROBABILITY = 0.4
# Blur sigma in pixels of the model's view (the frame resized to RESIZE_SIZE square),
# converted to the frame's scale.
_BLUR_RANGE = (0.3, 1.5)
_NOISE_PROBABILITY = 0.5
_NOISE_SIGMA_RANGE = (1.0, 12.0)
_JPEG_PROBABILITY = 0.5
_JPEG_QUALITY_RANGE = (30, 95)
_MAX_TONE_STEP = 60


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator scene ``index`` of a dataset with ``seed`` is drawn from."""
    return np.random.default_rng([seed, index])


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene's layout, colours, background and encoding; nothing is rendered yet.

    Args:
        rng: The source of every random choice.

    Returns:
        The scene; :func:`render_scene` draws it, :attr:`Scene.caption` describes it.
    """
    mean_side = rng.uniform(*_MEAN_SIDE_RANGE_PX)
    aspect = math.exp(rng.uniform(-math.log(_MAX_ASPECT), math.log(_MAX_ASPECT)))
    width = round(mean_side * math.sqrt(aspect))
    height = round(mean_side / math.sqrt(aspect))
    background = _sample_background(rng)
    shapes: tuple[Shape, ...]
    relation: str | None
    if rng.random() < _TWO_SHAPE_PROBABILITY:
        shapes, relation = _sample_pair(rng, width, height)
    else:
        size = SIZES[int(rng.integers(len(SIZES)))]
        shapes, relation = (_sample_single(rng, width, height, size),), None
    # Amounts are drawn whether used or not, so every scene takes as many draws.
    blurred = rng.random() < _BLUR_PROBABILITY
    blur_px = rng.uniform(*_BLUR_RANGE) * math.sqrt(width * height) / RESIZE_SIZE
    noisy = rng.random() < _NOISE_PROBABILITY
    noise_sigma = rng.uniform(*_NOISE_SIGMA_RANGE)
    return Scene(
        width=width,
        height=height,
        background=background,
        shapes=shapes,
        relation=relation,
        antialias=bool(rng.random() < _ANTIALIAS_PROBABILITY),
        blur_px=float(blur_px) if blurred else 0.0,
        noise_sigma=float(noise_sigma) if noisy else 0.0,
        noise_seed=int(rng.integers(2**31)),
        image_format="JPEG" if rng.random() < _JPEG_PROBABILITY else "PNG",
        jpeg_quality=int(rng.integers(_JPEG_QUALITY_RANGE[0], _JPEG_QUALITY_RANGE[1] + 1)),
    )


def _sample_background(rng: np.random.Generator) -> Background:
    """Two grey or faintly tinted tones of any brightness, up to 60 levels apart.

    The base level is drawn a little beyond 0..255 and clipped, so pure black and pure
    white backdrops are common rather than vanishingly rare.
    """
    base = rng.uniform(-20, 275)
    tinted = rng.random() < 0.5
    tones = []
    for offset in (0.0, rng.uniform(-_MAX_TONE_STEP, _MAX_TONE_STEP)):
        tint = rng.uniform(-_MAX_TINT, _MAX_TINT, size=3) if tinted else np.zeros(3)
        rgb = np.clip(np.rint(np.clip(base + offset, 0, 255) + tint), 0, 255)
        tones.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return Background(
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        tones=(tones[0], tones[1]),
        scale_px=int(rng.integers(6, 41)),
        angle=float(rng.uniform(0.0, 2 * math.pi)),
    )


def _sample_colour(rng: np.random.Generator, name: str) -> RGB:
    """A fill within the name's range, redrawn until its chroma is at least _MIN_CHROMA."""
    limits = COLOURS[name]
    while True:
        hue = rng.uniform(*limits.hue) % 360 / 360
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*limits.saturation), rng.uniform(*limits.value))
        channels = [round(255 * c) for c in rgb]
        if max(channels) - min(channels) >= _MIN_CHROMA:
            return channels[0], channels[1], channels[2]


def _sample_shape(
    rng: np.random.Generator, size: str, radius: float, centre: tuple[float, float], mean: float
) -> Shape:
    """Kind, colour and way of drawing of a shape whose place and extent are known."""
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    rgb = _sample_colour(rng, colour)
    turn = math.radians(_MAX_ROTATION_DEG[kind])
    rotation = float(rng.uniform(-turn, turn))
    proportion = float(rng.uniform(*_PROPORTION_RANGE[kind]))
    style = rng.random()
    filled, edge, line_px = True, None, 0.0
    if style < _HOLLOW_PROBABILITY:
        high = _HOLLOW_STAR_MAX_LINE if kind == "star" else _HOLLOW_LINE_RANGE[1]
        line = rng.uniform(_HOLLOW_LINE_RANGE[0], high) * radius
        filled, line_px = False, max(line, _MIN_LINE_FRACTION * mean)
    elif style < _HOLLOW_PROBABILITY + _EDGED_PROBABILITY:
        if rng.random() < 0.5:  # a grey from black to white
            level = int(rng.integers(256))
            edge = (level, level, level)
        else:  # a darker shade of the fill
            shade = rng.uniform(0.3, 0.7)
            edge = (round(rgb[0] * shade), round(rgb[1] * shade), round(rgb[2] * shade))
        line_px = max(rng.uniform(*_EDGE_LINE_RANGE) * radius, 1.0)
    return Shape(
        kind,
        colour,
        rgb,
        size,
        centre[0],
        centre[1],
        radius,
        rotation,
        proportion,
        filled,
        edge,
        float(line_px),
    )


def _sample_extent(rng: np.random.Generator, size: str, mean: float, room: float) -> float:
    """An extent in pixels of the size's range, capped at ``room`` (never below the range)."""
    low, high = SIZE_EXTENTS[size]
    return float(rng.uniform(low * mean, max(low * mean, min(high * mean, room))))


def _sample_single(rng: np.random.Generator, width: int, height: int, size: str) -> Shape:
    """One shape anywhere inside the safe region."""
    mean = math.sqrt(width * height)
    room = (0.5 - _MARGIN_FRACTION) * min(width, height)
    radius = _sample_extent(rng, size, mean, room)
    centre = []
    for side in (width, height):
        margin = _MARGIN_FRACTION * side
        centre.append(float(rng.uniform(margin + radius, side - margin - radius)))
    return _sample_shape(rng, size, radius, (centre[0], centre[1]), mean)


def _sample_pair(
    rng: np.random.Generator, width: int, height: int
) -> tuple[tuple[Shape, Shape], str]:
    """A small shape and a large one, separated along a random axis.

    The large shape's extent is capped so that both fit along the axis (on the shorter
    axis of a narrow frame the cap can be below the large range; then the longer axis is
    used). Along the axis, the free space left after both boxes and the minimum gap is cut
    at two uniform points into the space before, between and after them; across it, the
    small shape's centre stays close to the large one's.
    """
    mean = math.sqrt(width * height)
    gap = _MIN_GAP_FRACTION * mean
    small_r = _sample_extent(rng, "small", mean, math.inf)
    horizontal = bool(rng.random() < 0.5)
    room = {}
    for axis, (along, across) in ((True, (width, height)), (False, (height, width))):
        along_room = ((1 - 2 * _MARGIN_FRACTION) * along - gap) / 2 - small_r
        room[axis] = min(along_room, (0.5 - _MARGIN_FRACTION) * across)
    if room[horizontal] < SIZE_EXTENTS["large"][0] * mean:
        horizontal = not horizontal
    large_r = _sample_extent(rng, "large", mean, room[horizontal])
    along, across = (width, height) if horizontal else (height, width)
    margin = _MARGIN_FRACTION * along
    slack = (along - 2 * margin) - (2 * small_r + 2 * large_r + gap)
    before, after = np.sort(rng.uniform(0.0, slack, size=2))
    small_first = bool(rng.random() < 0.5)
    first_r, second_r = (small_r, large_r) if small_first else (large_r, small_r)
    first_c = margin + before + first_r
    second_c = first_c + first_r + gap + (after - before) + second_r
    small_along, large_along = (first_c, second_c) if small_first else (second_c, first_c)

    across_margin = _MARGIN_FRACTION * across
    large_across = rng.uniform(across_margin + large_r, across - across_margin - large_r)
    reach = _MAX_CROSS_OFFSET * abs(large_along - small_along)
    low = max(large_across - reach, across_margin + small_r)
    high = min(large_across + reach, across - across_margin - small_r)
    small_across = rng.uniform(low, high)

    if horizontal:
        relation = "to the left of" if small_first else "to the right of"
        small_xy, large_xy = (small_along, small_across), (large_along, large_across)
    else:
        relation = "above" if small_first else "below"
        small_xy, large_xy = (small_across, small_along), (large_across, large_along)
    small = _sample_shape(rng, "small", small_r, (float(small_xy[0]), float(small_xy[1])), mean)
    large = _sample_shape(rng, "large", large_r, (float(large_xy[0]), float(large_xy[1])), mean)
    return (small, large), relation


def generate_scene(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Draw one random scene and its caption.

    Args:
        rng: The source of every random choice.

    Returns:
        The RGB image and its true caption.
    """
    scene = sample_scene(rng)
    return render_scene(scene), scene.caption


def write_dataset(out_dir: Path | str, count: int, seed: int) -> Path:
    """Write ``count`` scenes as ``images/NNNNNN.{jpg,png}`` plus ``captions.jsonl``.

    ``captions.jsonl`` is written last, through a temporary file, so an interrupted run
    never leaves a caption file that names missing images.

    Args:
        out_dir: Folder to fill (created if needed; same-named files are overwritten).
        count: Number of images, at least 1.
        seed: Non-negative seed; the same seed gives byte-identical files.

    Returns:
        The path of ``captions.jsonl``, in the format of
        :func:`captioner.training.dataset.read_jsonl`.

    Raises:
        ValueError: If ``count`` < 1 or ``seed`` < 0.
        OSError: If the folder or a file cannot be written.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        scene = sample_scene(scene_rng(seed, index))
        relative = f"images/{index:06d}{scene.file_suffix}"
        # Noisy images barely compress: zlib's fastest level is 3x quicker for ~15% more bytes.
        options = (
            {"quality": scene.jpeg_quality}
            if scene.image_format == "JPEG"
            else {"compress_level": 1}
        )
        render_scene(scene).save(out_dir / relative, format=scene.image_format, **options)
        lines.append(json.dumps({"image": relative, "caption": scene.caption}) + "\n")
    captions_path = out_dir / "captions.jsonl"
    partial_path = out_dir / "captions.jsonl.partial"
    partial_path.write_text("".join(lines), encoding="utf-8")
    os.replace(partial_path, captions_path)
    return captions_path
