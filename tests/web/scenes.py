"""Shape pictures the bundled demo model captions exactly, drawn with the training code.

Each scene is placed by hand (not sampled), so its true caption is known and the demo
model, which learnt exactly this grammar, gives it as its best caption.
"""

from __future__ import annotations

import io

from captioner.training.shapes import Background, Scene, Shape, render_scene

__all__ = ["SCENES", "scene_png"]

_SIDE = 320
# One fill per colour name, inside the generator's range for that name.
_FILLS = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 125, 25),
}
_BACKGROUND = Background(
    pattern="plain", tones=((228, 226, 220), (228, 226, 220)), scale_px=40, angle=0.0
)


def _shape(kind: str, colour: str, size: str, x: float, y: float) -> Shape:
    radius = (0.085 if size == "small" else 0.18) * _SIDE
    return Shape(kind, colour, _FILLS[colour], size, x * _SIDE, y * _SIDE, radius)


# name -> (shapes, relation): the described (small) shape first, as the grammar has it.
SCENES: dict[str, tuple[tuple[Shape, ...], str | None]] = {
    "red-circle-left-of-blue-square.png": (
        (_shape("circle", "red", "small", 0.22, 0.5), _shape("square", "blue", "large", 0.64, 0.5)),
        "to the left of",
    ),
    "large-green-triangle.png": ((_shape("triangle", "green", "large", 0.5, 0.5),), None),
    "yellow-star-above-purple-circle.png": (
        (
            _shape("star", "yellow", "small", 0.5, 0.2),
            _shape("circle", "purple", "large", 0.5, 0.64),
        ),
        "above",
    ),
}


def scene_png(name: str) -> bytes:
    """The PNG bytes of one of :data:`SCENES`."""
    shapes, relation = SCENES[name]
    scene = Scene(
        width=_SIDE,
        height=_SIDE,
        background=_BACKGROUND,
        shapes=shapes,
        relation=relation,
        antialias=True,
        blur_px=0.0,
        noise_sigma=0.0,
        noise_seed=0,
        image_format="PNG",
        jpeg_quality=90,
    )
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="PNG")
    return buffer.getvalue()
