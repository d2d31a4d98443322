"""What a shape scene is: its shapes, its backdrop, how it is drawn, and its true caption.

Plain records, apart from both the code that samples scenes (:mod:`captioner.training.shapes`)
and the code that draws them (:mod:`captioner.training.shape_drawing`), so that each of those
imports this and neither imports the other's records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RGB", "Background", "Scene", "Shape"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Shape:
    """One drawn shape.

    Attributes:
        kind: One of :data:`captioner.training.shapes.SHAPE_KINDS`.
        colour: Its name in :data:`captioner.training.shapes.COLOURS`.
        rgb: Its colour: the fill, or the outline of a shape that is not filled.
        size: ``"small"`` or ``"large"``.
        centre_x: Column of its bounding box's centre, in pixels.
        centre_y: Row of its bounding box's centre, in pixels, downwards.
        radius: Its extent: half the longer side of its bounding box, in pixels.
        rotation: Clockwise turn in radians (0 for circles; an unturned triangle or
            star points up).
        proportion: A triangle's height over its base, a star's inner radius over its
            outer one; unused for circles and squares. None: the usual one (0.9 for a
            triangle, 0.45 for a star), for shapes placed by hand.
        filled: Whether the inside is painted; if not, only an outline in ``rgb`` is.
        edge: The colour of an outline round a filled shape, or None for none.
        line_px: Width of the outline (``edge``, or the outline of an unfilled shape).
    """

    kind: str
    colour: str
    rgb: RGB
    size: str
    centre_x: float
    centre_y: float
    radius: float
    rotation: float = 0.0
    proportion: float | None = None
    filled: bool = True
    edge: RGB | None = None
    line_px: float = 0.0


@dataclass(frozen=True)
class Background:
    """A low-saturation backdrop.

    Attributes:
        pattern: One of :data:`captioner.training.shapes.PATTERNS`; ``speckle`` mixes the
            tones pixel by pixel.
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
            :data:`captioner.training.shapes.RELATIONS`), or None for one shape.
        antialias: Whether shape edges are anti-aliased (else every pixel is in or out).
        blur_px: Gaussian blur radius applied to the drawn image, 0 for none.
        noise_sigma: Standard deviation of the Gaussian pixel noise, in 0..255 units.
        noise_seed: Seed of the noise and of the random textures, so drawing is a pure
            function of the scene.
        image_format: ``"JPEG"`` or ``"PNG"``.
        jpeg_quality: JPEG quality (unused for PNG).
    """

    width: int
    height: int
    background: Background
    shapes: tuple[Shape, ...]
    relation: str | None
    antialias: bool
    blur_px: float
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
    def mean_side(self) -> float:
        """``sqrt(width * height)``, the unit of shape extents."""
        return math.sqrt(self.width * self.height)

    @property
    def file_suffix(self) -> str:
        """``.jpg`` or ``.png``, as the image should be saved."""
        return ".jpg" if self.image_format == "JPEG" else ".png"
