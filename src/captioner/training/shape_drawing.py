"""Pixels of a shape scene: the backdrop, each shape through a coverage mask, blur, noise.

A shape is drawn as a coverage mask of its outline, supersampled four times and averaged
down when the scene is anti-aliased, drawn at the image's own resolution (every pixel in
or out) when it is not. An outline (the line of an unfilled shape, or the edge round a
filled one) is the shape's mask minus the mask of the same shape inset by the line width,
so it lies inside the shape and never changes its bounding box.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from captioner.training.scene import Background, Scene, Shape

__all__ = ["render_scene", "shape_outline"]

# Anti-aliased shapes are drawn at this multiple of the image resolution, then averaged.
_SUPERSAMPLING = 4
# The proportion of a triangle or star that does not set one (see Shape.proportion).
_USUAL_PROPORTION = {"triangle": 0.9, "star": 0.45}

Point = tuple[float, float]


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene: background, shapes, then blur and Gaussian noise.

    Args:
        scene: From :func:`captioner.training.shapes.sample_scene`. Drawing the same
            scene twice gives the same pixels.

    Returns:
        An RGB image of ``scene.width`` x ``scene.height``.
    """
    rng = np.random.default_rng(scene.noise_seed)
    pixels = _paint_background(scene.background, scene.width, scene.height, rng)
    for shape in scene.shapes:
        _paint_shape(pixels, shape, scene.antialias)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if scene.blur_px > 0:
        image = image.filter(ImageFilter.GaussianBlur(scene.blur_px))
    if scene.noise_sigma > 0:
        noisy = np.asarray(image, np.float32)
        noisy = noisy + scene.noise_sigma * rng.standard_normal(noisy.shape, dtype=np.float32)
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return image


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
    elif background.pattern == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif background.pattern == "stripes":
        mix = np.floor(along / (scale / 2)) % 2
    elif background.pattern == "checkers":
        mix = (np.floor(xs / scale) + np.floor(ys / scale)) % 2
    elif background.pattern == "blotches":  # a coarse random grid, smoothly upsampled
        grid = rng.random((height // scale + 2, width // scale + 2), dtype=np.float32)
        mix = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))
    else:  # speckle: every pixel its own mix
        mix = rng.random((height, width), dtype=np.float32)
    tone_a, tone_b = (np.array(tone, np.float32) for tone in background.tones)
    return tone_a + np.broadcast_to(mix, (height, width))[..., None] * (tone_b - tone_a)


def shape_outline(shape: Shape) -> list[Point] | None:
    """The polygon of a square, triangle or star in image pixels; None for a circle.

    The unit outline (a triangle ``proportion`` times as high as its base, a star whose
    inner radius is ``proportion`` of its outer) is turned by ``rotation``, then scaled
    and moved so that its bounding box is centred on the shape's centre with its longer
    side ``2 * radius``.
    """
    if shape.kind == "circle":
        return None
    proportion = shape.proportion
    if proportion is None:
        proportion = _USUAL_PROPORTION.get(shape.kind, 1.0)
    if shape.kind == "square":
        unit = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    elif shape.kind == "triangle":
        unit = [(0.0, -proportion), (1.0, proportion), (-1.0, proportion)]
    else:
        unit = []
        for k in range(10):
            angle = -math.pi / 2 + k * math.pi / 5
            reach = 1.0 if k % 2 == 0 else proportion
            unit.append((reach * math.cos(angle), reach * math.sin(angle)))
    cos, sin = math.cos(shape.rotation), math.sin(shape.rotation)
    turned = np.array([(x * cos - y * sin, x * sin + y * cos) for x, y in unit])
    low, high = turned.min(axis=0), turned.max(axis=0)
    scale = 2 * shape.radius / float(np.max(high - low))
    placed = (turned - (low + high) / 2) * scale + (shape.centre_x, shape.centre_y)
    return [(float(x), float(y)) for x, y in placed]


def _inset(points: list[Point], distance: float) -> list[Point]:
    """The polygon whose edges are ``distance`` inside the given one's (mitred corners)."""
    corners = np.array(points, np.float64)
    ahead = np.roll(corners, -1, axis=0)
    # Shoelace: positive for a clockwise outline on screen (rows grow downwards).
    orientation = np.sign(np.sum(corners[:, 0] * ahead[:, 1] - ahead[:, 0] * corners[:, 1]))
    direction = ahead - corners
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    inward = orientation * np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    starts = corners + distance * inward  # edge i, moved in, runs from starts[i]
    inset = []
    for i in range(len(points)):
        # Where the moved edges i - 1 and i meet.
        a, u = starts[i - 1], direction[i - 1]
        b, v = starts[i], direction[i]
        cross = u[0] * v[1] - u[1] * v[0]
        t = ((b[0] - a[0]) * v[1] - (b[1] - a[1]) * v[0]) / cross
        inset.append((float(a[0] + t * u[0]), float(a[1] + t * u[1])))
    return inset


def _coverage(
    shape: Shape, inset_px: float, window: tuple[int, int, int, int], antialias: bool
) -> np.ndarray:
    """How much of each window pixel the shape (inset by ``inset_px``) covers: float32 [0, 1].

    Args:
        shape: The shape.
        inset_px: How far inside its outline to draw, 0 for the outline itself.
        window: ``(x0, y0, x1, y1)``, the image pixels to cover, end exclusive.
        antialias: Supersample and average, or draw whole pixels.
    """
    x0, y0, x1, y1 = window
    ss = _SUPERSAMPLING if antialias else 1
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(mask)
    outline = shape_outline(shape)
    if outline is None:
        r = (shape.radius - inset_px) * ss
        cx, cy = (shape.centre_x - x0) * ss, (shape.centre_y - y0) * ss
        if r > 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        if inset_px > 0:
            outline = _inset(outline, inset_px)
        draw.polygon([((x - x0) * ss, (y - y0) * ss) for x, y in outline], fill=255)
    if ss > 1:
        mask = mask.reduce(ss)
    return np.asarray(mask, np.float32) / 255.0


def _paint_shape(pixels: np.ndarray, shape: Shape, antialias: bool) -> None:
    """Blend one shape into ``pixels`` (float32 ``[H, W, 3]``) through coverage masks."""
    height, width = pixels.shape[:2]
    window = (
        max(int(shape.centre_x - shape.radius) - 1, 0),
        max(int(shape.centre_y - shape.radius) - 1, 0),
        min(math.ceil(shape.centre_x + shape.radius) + 2, width),
        min(math.ceil(shape.centre_y + shape.radius) + 2, height),
    )
    x0, y0, x1, y1 = window
    region = pixels[y0:y1, x0:x1]
    whole = _coverage(shape, 0.0, window, antialias)[..., None]
    if shape.filled:
        region += whole * (np.array(shape.rgb, np.float32) - region)
    line_colour = shape.edge if shape.filled else shape.rgb
    if line_colour is not None:
        inner = _coverage(shape, shape.line_px, window, antialias)[..., None]
        ring = np.clip(whole - inner, 0.0, 1.0)
        region += ring * (np.array(line_colour, np.float32) - region)
