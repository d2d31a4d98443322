"""Procedural shape scenes with exactly true captions: a dataset a small model can master.

A scene holds one or two flat shapes on a low-saturation background. Its caption follows a
fixed grammar over a 21-word vocabulary::

    a {small|large} {colour} {shape} .
    a small {colour} {shape} {relation} a large {colour} {shape} .

With two shapes, the small one is always the one described and the large one the
landmark (figure and ground, as people say "a cup next to a table"), so the word order
follows from the picture and an exact caption is learnable. The relation is the axis the
shapes are separated on, with a gap between them and little offset across, so it is never
a judgement call.

Every image is later stretched to 346x346 and centre-cropped to 299x299 by the model
(SPEC: preprocessing), which cuts about 7% off each side: shapes stay clear of an 8%
margin. Sizes are fractions of the geometric mean side, which is what sets their share of
the stretched square whatever the aspect ratio.

Everything random comes from one :class:`numpy.random.Generator`: scene ``i`` of seed
``s`` is drawn from :func:`scene_rng` ``(s, i)``, so a dataset is reproducible image by
image, byte for byte, and a longer run starts with the images of a shorter one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "RELATIONS",
    "SHAPE_KINDS",
    "SIZES",
    "Background",
    "Scene",
    "Shape",
    "generate_scene",
    "render_scene",
    "sample_scene",
    "scene_rng",
    "write_dataset",
]

# Saturated, well separated hues; backgrounds stay far below this saturation.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 125, 25),
}
SHAPE_KINDS = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
RELATIONS = ("to the left of", "to the right of", "above", "below")

# Shape radius (half the bounding box) as a fraction of sqrt(width * height). The smallest
# large shape is 1.68x the largest small one, so the two sizes never meet.
_RADIUS_FRACTION = {"small": (0.07, 0.095), "large": (0.16, 0.20)}
# Share of each side kept clear: the model's centre crop removes 6.8% per side.
_MARGIN_FRACTION = 0.08
# Gap between two shapes' bounding boxes along their axis, as a fraction of sqrt(w * h).
_MIN_GAP_FRACTION = 0.04
# Across the axis, centres differ by at most this share of their distance along it.
_MAX_CROSS_OFFSET = 0.25
_SIDE_RANGE_PX = (160, 480)
_MAX_ASPECT = 1.6
_TWO_SHAPE_PROBABILITY = 0.6
_COLOUR_JITTER = 10
_MAX_NOISE_SIGMA = 6.0
_JPEG_QUALITY_RANGE = (85, 95)
_PATTERNS = ("plain", "stripes", "checkers", "gradient", "blotches")
# Square half-side and star inner radius, relative to the shape radius.
_SQUARE_HALF_SIDE = 0.8
_STAR_INNER_RADIUS = 0.45
# Shapes are drawn at this multiple of the image resolution, then box-filtered down.
_SUPERSAMPLING = 4

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Shape:
    """One drawn shape.

    Attributes:
        kind: One of :data:`SHAPE_KINDS`.
        colour: Its name in :data:`COLOURS`.
        rgb: The fill actually used (the named colour, slightly jittered).
        size: ``"small"`` or ``"large"``.
        centre_x: Centre column in pixels (the triangle's apex is up, so its centroid is
            a little below this point, which is still well inside it).
        centre_y: Centre row in pixels, downwards.
        radius: Half the side of the square box the shape is drawn in, in pixels.
    """

    kind: str
    colour: str
    rgb: RGB
    size: str
    centre_x: float
    centre_y: float
    radius: float


@dataclass(frozen=True)
class Background:
    """A low-saturation backdrop.

    Attributes:
        pattern: One of ``plain``, ``stripes``, ``checkers``, ``gradient``, ``blotches``.
        tones: The two colours it mixes (``plain`` uses the first).
        scale_px: Stripe period, checker cell or blotch size, in pixels.
        angle: Direction of stripes and gradients, in radians.
    """

    pattern: str
    tones: tuple[RGB, RGB]
    scale_px: int
    angle: float


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw an image and state its caption.

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
        background: The backdrop.
        shapes: One shape, or two: the described (small) one first, the landmark second.
        relation: Where the first shape is relative to the second (one of
            :data:`RELATIONS`), or None for one shape.
        noise_sigma: Standard deviation of the Gaussian pixel noise, in 0..255 units.
        noise_seed: Seed of the noise and of the blotch texture, so drawing is a pure
            function of the scene.
        image_format: ``"JPEG"`` or ``"PNG"``.
        jpeg_quality: JPEG quality (unused for PNG).
    """

    width: int
    height: int
    background: Background
    shapes: tuple[Shape, ...]
    relation: str | None
    noise_sigma: float
    noise_seed: int
    image_format: str
    jpeg_quality: int

    @property
    def caption(self) -> str:
        """The true caption, in the training tokenisation (space before the period)."""
        first = self.shapes[0]
        text = f"a {first.size} {first.colour} {first.kind}"
        if self.relation is not None:
            second = self.shapes[1]
            text += f" {self.relation} a {second.size} {second.colour} {second.kind}"
        return text + " ."

    @property
    def file_suffix(self) -> str:
        """``.jpg`` or ``.png``, as the image should be saved."""
        return ".jpg" if self.image_format == "JPEG" else ".png"


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
    height = int(rng.integers(_SIDE_RANGE_PX[0], _SIDE_RANGE_PX[1] + 1))
    aspect = math.exp(rng.uniform(-math.log(_MAX_ASPECT), math.log(_MAX_ASPECT)))
    width = int(np.clip(round(height * aspect), *_SIDE_RANGE_PX))
    background = _sample_background(rng)
    if rng.random() < _TWO_SHAPE_PROBABILITY:
        shapes, relation = _sample_pair(rng, width, height)
    else:
        size = SIZES[int(rng.integers(len(SIZES)))]
        shapes, relation = (_sample_single(rng, width, height, size),), None
    return Scene(
        width=width,
        height=height,
        background=background,
        shapes=shapes,
        relation=relation,
        noise_sigma=float(rng.uniform(0.0, _MAX_NOISE_SIGMA)),
        noise_seed=int(rng.integers(2**31)),
        image_format="JPEG" if rng.random() < 0.5 else "PNG",
        jpeg_quality=int(rng.integers(_JPEG_QUALITY_RANGE[0], _JPEG_QUALITY_RANGE[1] + 1)),
    )


def _sample_background(rng: np.random.Generator) -> Background:
    """A pattern of two grey or faintly tinted tones, one light and one darker."""
    base = rng.uniform(40, 225)
    tones = []
    for offset in (0.0, rng.uniform(-45, 45)):
        level = np.clip(base + offset, 30, 235)
        # A tint of at most 12 levels per channel keeps saturation far from any shape's.
        tint = rng.uniform(-12, 12, size=3)
        tones.append(tuple(int(v) for v in np.clip(np.rint(level + tint), 0, 255)))
    return Background(
        pattern=_PATTERNS[int(rng.integers(len(_PATTERNS)))],
        tones=(tones[0], tones[1]),
        scale_px=int(rng.integers(8, 41)),
        angle=float(rng.choice([0.0, 0.25, 0.5, 0.75]) * math.pi),
    )


def _sample_style(rng: np.random.Generator) -> tuple[str, str, RGB]:
    """A kind, a colour name and its jittered fill."""
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    jitter = rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    rgb = np.clip(np.array(COLOURS[colour]) + jitter, 0, 255)
    return kind, colour, (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _sample_radius(rng: np.random.Generator, size: str, width: int, height: int) -> float:
    low, high = _RADIUS_FRACTION[size]
    return float(rng.uniform(low, high) * math.sqrt(width * height))


def _sample_single(rng: np.random.Generator, width: int, height: int, size: str) -> Shape:
    """One shape anywhere inside the safe region."""
    kind, colour, rgb = _sample_style(rng)
    radius = _sample_radius(rng, size, width, height)
    centre = []
    for side in (width, height):
        margin = _MARGIN_FRACTION * side
        centre.append(float(rng.uniform(margin + radius, side - margin - radius)))
    return Shape(kind, colour, rgb, size, centre[0], centre[1], radius)


def _sample_pair(
    rng: np.random.Generator, width: int, height: int
) -> tuple[tuple[Shape, Shape], str]:
    """A small shape and a large one, separated along a random axis.

    Along the axis, the free space left after both boxes and the minimum gap is cut at
    two uniform points into the space before, between and after them; across it, the
    small shape's centre stays close to the large one's.
    """
    small_r = _sample_radius(rng, "small", width, height)
    large_r = _sample_radius(rng, "large", width, height)
    horizontal = bool(rng.random() < 0.5)
    along, across = (width, height) if horizontal else (height, width)
    margin = _MARGIN_FRACTION * along
    gap = _MIN_GAP_FRACTION * math.sqrt(width * height)
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
    small = Shape(*_sample_style(rng), "small", *map(float, small_xy), small_r)
    large = Shape(*_sample_style(rng), "large", *map(float, large_xy), large_r)
    return (small, large), relation


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene: background, anti-aliased shapes, then Gaussian noise.

    Args:
        scene: From :func:`sample_scene`. Drawing the same scene twice gives the same
            pixels.

    Returns:
        An RGB image of ``scene.width`` x ``scene.height``.
    """
    rng = np.random.default_rng(scene.noise_seed)
    pixels = _paint_background(scene.background, scene.width, scene.height, rng)
    for shape in scene.shapes:
        _paint_shape(pixels, shape)
    if scene.noise_sigma > 0:
        pixels += scene.noise_sigma * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _paint_background(
    background: Background, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """The backdrop as float32 ``[height, width, 3]`` in [0, 255]."""
    # A row and a column that broadcast to the full grid only where a pattern needs it.
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    along = xs * math.cos(background.angle) + ys * math.sin(background.angle)
    scale = background.scale_px
    if background.pattern == "plain":
        mix = np.zeros((height, width), np.float32)
    elif background.pattern == "stripes":
        mix = np.floor(along / (scale / 2)) % 2
    elif background.pattern == "checkers":
        mix = (np.floor(xs / scale) + np.floor(ys / scale)) % 2
    elif background.pattern == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:  # blotches: a coarse random grid, smoothly upsampled
        grid = rng.random((height // scale + 2, width // scale + 2), dtype=np.float32)
        mix = np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR))
    tone_a, tone_b = (np.array(tone, np.float32) for tone in background.tones)
    return tone_a + np.broadcast_to(mix, (height, width))[..., None] * (tone_b - tone_a)


def _paint_shape(pixels: np.ndarray, shape: Shape) -> None:
    """Blend one shape into ``pixels`` (float32 ``[H, W, 3]``) through a coverage mask."""
    height, width = pixels.shape[:2]
    x0 = max(int(shape.centre_x - shape.radius) - 1, 0)
    y0 = max(int(shape.centre_y - shape.radius) - 1, 0)
    x1 = min(math.ceil(shape.centre_x + shape.radius) + 2, width)
    y1 = min(math.ceil(shape.centre_y + shape.radius) + 2, height)
    ss = _SUPERSAMPLING
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = (shape.centre_x - x0) * ss, (shape.centre_y - y0) * ss, shape.radius * ss
    if shape.kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_outline(shape.kind, cx, cy, r), fill=255)
    coverage = np.asarray(mask.reduce(ss), np.float32)[..., None] / 255.0
    region = pixels[y0:y1, x0:x1]
    region += coverage * (np.array(shape.rgb, np.float32) - region)


def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a square, an apex-up triangle or a five-pointed star."""
    if kind == "square":
        h = _SQUARE_HALF_SIDE * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    points = []
    for k in range(10):
        angle = -math.pi / 2 + k * math.pi / 5
        reach = r if k % 2 == 0 else _STAR_INNER_RADIUS * r
        points.append((cx + reach * math.cos(angle), cy + reach * math.sin(angle)))
    return points


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
