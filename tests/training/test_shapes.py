"""The shapes generator: captions true of the pixels, a fixed grammar, variety, determinism.

Geometry (kind, size, place) is measured on each shape drawn alone, filled, white on black
and anti-aliased, so outlines, edges, blur and noise cannot hide it; what those add is
checked on the scenes as drawn and as written to disk.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.training.dataset import read_jsonl
from captioner.training.shapes import (
    COLOURS,
    PATTERNS,
    SIZE_EXTENTS,
    Background,
    Scene,
    Shape,
    generate_scene,
    render_scene,
    sample_scene,
    scene_rng,
    write_dataset,
)
from captioner.training.tokenizer import count_words, tokenize

REPO = Path(__file__).resolve().parents[2]

# The grammar promised by the issue, written out independently of the generator.
_COLOUR = "(red|green|blue|yellow|purple|orange)"
_KIND = "(circle|square|triangle|star)"
_ONE_SHAPE = re.compile(rf"^a (small|large) {_COLOUR} {_KIND} \.$")
_TWO_SHAPES = re.compile(
    rf"^a small {_COLOUR} {_KIND} (to the left of|to the right of|above|below) "
    rf"a large {_COLOUR} {_KIND} \.$"
)

SCENES = [sample_scene(scene_rng(11, index)) for index in range(160)]
SHAPES = [(scene, shape) for scene in SCENES for shape in scene.shapes]
_HORIZONTAL = ("to the left of", "to the right of")
_BLACK = Background("plain", ((0, 0, 0), (0, 0, 0)), 8, 0.0)
_WHITE = (255, 255, 255)


def _alone(scene: Scene, shape: Shape, **changes: object) -> np.ndarray:
    """The shape drawn alone on black, no blur or noise: float ``[H, W]`` in [0, 1]."""
    bare = dataclasses.replace(
        scene, background=_BLACK, shapes=(shape,), blur_px=0.0, noise_sigma=0.0
    )
    image = render_scene(dataclasses.replace(bare, **changes))
    return np.asarray(image, np.float32).max(axis=2) / 255.0


@functools.cache
def _solid(scene: Scene, index: int) -> np.ndarray:
    """Where shape ``index`` is: drawn filled in white, no edge, anti-aliased, > half."""
    shape = dataclasses.replace(scene.shapes[index], rgb=_WHITE, filled=True, edge=None)
    return _alone(scene, shape, antialias=True) > 0.5


def _painted(scene: Scene, shape: Shape) -> np.ndarray:
    """How much of each pixel shows the shape's own colour (not an edge), as drawn."""
    white = dataclasses.replace(shape, rgb=_WHITE, edge=shape.edge and (0, 0, 0))
    return _alone(scene, white)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (left, top, right, bottom) of a mask, in image pixels."""
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


def _kind_from_pixels(mask: np.ndarray) -> str:
    """Name a filled shape from its pixels, whatever its rotation.

    Around the centroid, the farthest pixel in each 4-degree sector traces the outline's
    distance: nearly constant for a circle; otherwise the sectors beyond the middle of
    its range form one run per corner: 3 for a triangle, 4 for a square, 5 for a star.
    """
    ys, xs = np.nonzero(mask)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    sector = ((np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * 90).astype(int) % 90
    reach = np.zeros(90)
    np.maximum.at(reach, sector, np.hypot(dx, dy))
    if reach.min() > 0.85 * reach.max():
        return "circle"
    high = reach > (reach.min() + reach.max()) / 2
    runs = int(np.sum(high & ~np.roll(high, 1)))
    return {3: "triangle", 4: "square", 5: "star"}.get(runs, f"{runs} corners")


def _hue_degrees(rgb: np.ndarray) -> tuple[float, float]:
    """Hue in degrees and chroma (largest minus smallest channel) of an RGB triple."""
    hue, _, _ = colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255))
    return hue * 360, float(np.max(rgb) - np.min(rgb))


def _hue_name(hue: float) -> str:
    """The colour whose hue range is nearest (0 inside it), round the circle."""

    def distance(name: str) -> float:
        low, high = COLOURS[name].hue
        centre, half = (low + high) / 2, (high - low) / 2
        return max(abs((hue - centre + 180) % 360 - 180) - half, 0.0)

    return min(COLOURS, key=distance)


def test_captions_follow_the_grammar_and_tokenise_to_themselves() -> None:
    for scene in SCENES:
        grammar = _ONE_SHAPE if len(scene.shapes) == 1 else _TWO_SHAPES
        assert grammar.match(scene.caption), scene.caption
        assert tokenize(scene.caption) == scene.caption.split()
    words = set(count_words(scene.caption for scene in SCENES))
    assert words == {
        *("<S>", "</S>", "a", "small", "large", "."),
        *("red", "green", "blue", "yellow", "purple", "orange"),
        *("circle", "square", "triangle", "star"),
        *("to", "the", "left", "right", "of", "above", "below"),
    }


def test_every_word_of_the_grammar_occurs() -> None:
    captions = " ".join(scene.caption for scene in SCENES)
    for word in [*COLOURS, "circle", "square", "triangle", "star", "small", "large"]:
        assert f" {word} " in captions
    for relation in ("to the left of", "to the right of", "above", "below"):
        assert f" {relation} " in captions
    assert {len(scene.shapes) for scene in SCENES} == {1, 2}


def test_the_named_shape_kind_is_what_was_drawn() -> None:
    for scene in SCENES:
        for shape in scene.shapes:
            # Drawn 100 pixels across: a 10-pixel circle has too few pixels on its rim
            # to tell from a square by its outline's distance.
            large = dataclasses.replace(
                shape, rgb=_WHITE, filled=True, edge=None, centre_x=60, centre_y=60, radius=50
            )
            frame = dataclasses.replace(scene, width=120, height=120)
            kind = _kind_from_pixels(_alone(frame, large, antialias=True) > 0.5)
            assert kind == shape.kind, (scene.caption, shape)


def test_the_kind_reader_knows_a_turned_square_from_a_circle() -> None:
    # The check above is only as good as this reader: it must not pass by naming anything.
    frame = dataclasses.replace(SCENES[0], width=200, height=200)
    base = Shape("square", "red", _WHITE, "large", 100.0, 100.0, 60.0)
    # Turned, at the ends of the sampled proportions, and with the usual one (None).
    proportions = {"triangle": (0.75, None, 1.0), "star": (0.38, None, 0.55)}
    for kind in ("circle", "square", "triangle", "star"):
        for degrees in (-20, 0, 13):
            for proportion in proportions.get(kind, (None,)):
                shape = dataclasses.replace(
                    base, kind=kind, rotation=math.radians(degrees), proportion=proportion
                )
                assert _kind_from_pixels(_alone(frame, shape, antialias=True) > 0.5) == kind


def test_size_words_match_the_drawn_extent_over_their_whole_range() -> None:
    extents: dict[str, list[float]] = {"small": [], "large": []}
    for scene in SCENES:
        for index, shape in enumerate(scene.shapes):
            left, top, right, bottom = _bbox(_solid(scene, index))
            drawn = max(right - left + 1, bottom - top + 1) / 2
            # The drawn half-extent is the sampled one, to a pixel of rasterisation.
            assert abs(drawn - shape.radius) <= 1.0, (scene.caption, shape)
            extent = drawn / scene.mean_side
            low, high = SIZE_EXTENTS[shape.size]
            slack = 1.0 / scene.mean_side
            assert low - slack <= extent <= high + slack, (scene.caption, shape, extent)
            extents[shape.size].append(extent)
        if len(scene.shapes) == 2:
            assert [shape.size for shape in scene.shapes] == ["small", "large"]
    # Far apart, and each word used across its whole range.
    assert max(extents["small"]) < 0.11 < 0.13 < min(extents["large"])
    assert min(extents["small"]) < 0.05 and max(extents["small"]) > 0.095
    assert min(extents["large"]) < 0.15 and max(extents["large"]) > 0.26


def test_relations_hold_between_the_drawn_shapes() -> None:
    for scene in (s for s in SCENES if s.relation is not None):
        first, second = (_bbox(_solid(scene, index)) for index in (0, 1))
        left_1, top_1, right_1, bottom_1 = first
        left_2, top_2, right_2, bottom_2 = second
        # Separated along the relation's axis with a visible gap...
        if scene.relation == "to the left of":
            assert right_1 + 3 < left_2
        elif scene.relation == "to the right of":
            assert right_2 + 3 < left_1
        elif scene.relation == "above":
            assert bottom_1 + 3 < top_2
        else:
            assert bottom_2 + 3 < top_1
        # ...and mostly aligned across it, also once stretched to a square by the model.
        small, large = scene.shapes
        dx = abs(small.centre_x - large.centre_x)
        dy = abs(small.centre_y - large.centre_y)
        along, across = (dx, dy) if scene.relation in _HORIZONTAL else (dy, dx)
        assert across <= 0.5 * along
        ndx, ndy = dx / scene.width, dy / scene.height
        n_along, n_across = (ndx, ndy) if scene.relation in _HORIZONTAL else (ndy, ndx)
        assert n_across <= 0.5 * n_along


def test_shapes_stay_inside_the_models_centre_crop() -> None:
    # Stretched to 346x346 and cropped to 299, the model sees the middle 86.4% of each side.
    for scene in SCENES:
        for index in range(len(scene.shapes)):
            left, top, right, bottom = _bbox(_solid(scene, index))
            assert left >= math.floor(0.08 * scene.width)
            assert right <= math.ceil(0.92 * scene.width)
            assert top >= math.floor(0.08 * scene.height)
            assert bottom <= math.ceil(0.92 * scene.height)


def test_colours_stay_in_their_names_ranges_and_backgrounds_stay_grey() -> None:
    for _, shape in SHAPES:
        hue, chroma = _hue_degrees(np.array(shape.rgb))
        _, saturation, value = colorsys.rgb_to_hsv(*(np.array(shape.rgb) / 255))
        limits = COLOURS[shape.colour]
        low, high = limits.hue
        assert (hue - low) % 360 <= high - low + 0.5, shape
        assert limits.saturation[0] - 0.01 <= saturation <= limits.saturation[1] + 0.01
        assert limits.value[0] - 0.01 <= value <= limits.value[1] + 0.01
        assert chroma >= 70, shape
        if shape.edge is not None and len(set(shape.edge)) > 1:
            # An edge is a grey, or a darker shade of the fill (same hue).
            edge_hue, _ = _hue_degrees(np.array(shape.edge))
            assert _hue_name(edge_hue) == shape.colour
            assert max(shape.edge) < max(shape.rgb)
    for scene in SCENES:
        for tone in scene.background.tones:
            assert max(tone) - min(tone) <= 25
    # Every name's hue range is clear of the next one's, round the circle.
    spans = sorted(colour.hue for colour in COLOURS.values())
    for (_, end), (start, _) in itertools.pairwise([*spans, (spans[0][0] + 360, 0)]):
        assert start - end >= 6


def _scene_with(**changes: object) -> Scene:
    """The first sampled scene with a shape having ``changes`` (e.g. ``filled=False``)."""
    return next(
        scene
        for scene, shape in SHAPES
        if all(getattr(shape, key) == value for key, value in changes.items())
    )


def test_unfilled_shapes_are_an_outline_inside_the_filled_one() -> None:
    hollow = [(scene, shape) for scene, shape in SHAPES if not shape.filled]
    assert len(hollow) > 10
    for scene, shape in hollow:
        ring = _painted(scene, shape) > 0.5
        solid = _painted(scene, dataclasses.replace(shape, filled=True)) > 0.5
        assert np.sum(ring & ~solid) <= 0.02 * ring.sum()
        assert ring.sum() < 0.9 * solid.sum()
        # It reaches the shape's bounding box on every side.
        assert all(abs(a - b) <= 1 for a, b in zip(_bbox(ring), _bbox(solid), strict=True))
        if shape.kind == "circle":  # and a circle's middle is left empty
            assert not ring[round(shape.centre_y), round(shape.centre_x)]


def test_anti_aliasing_is_on_or_off_per_scene() -> None:
    scene = _scene_with(filled=True, edge=None)
    shape = next(s for s in scene.shapes if s.filled and s.edge is None)
    white = dataclasses.replace(shape, rgb=_WHITE)
    sharp = _alone(scene, white, antialias=False)
    smooth = _alone(scene, white, antialias=True)
    assert set(np.unique(sharp)) == {0.0, 1.0}
    assert np.sum((smooth > 0) & (smooth < 1)) > 10
    assert {scene.antialias for scene in SCENES} == {True, False}


def test_scenes_vary_in_everything_that_does_not_change_the_caption() -> None:
    aspects = [scene.width / scene.height for scene in SCENES]
    assert min(aspects) < 0.6 and max(aspects) > 1.6
    assert all(1 / 2.01 <= aspect <= 2.01 for aspect in aspects)
    sides = [side for scene in SCENES for side in (scene.width, scene.height)]
    assert min(sides) < 200 and max(sides) > 600
    assert {scene.background.pattern for scene in SCENES} == set(PATTERNS)
    levels = [sum(tone) / 3 for scene in SCENES for tone in scene.background.tones]
    assert min(levels) < 10 and max(levels) > 245
    assert 0.25 < np.mean([scene.blur_px > 0 for scene in SCENES]) < 0.55
    assert 0.35 < np.mean([scene.noise_sigma > 0 for scene in SCENES]) < 0.65
    qualities = [s.jpeg_quality for s in SCENES if s.image_format == "JPEG"]
    assert min(qualities) < 40 and max(qualities) > 85
    turns = {
        kind: [math.degrees(s.rotation) for _, s in SHAPES if s.kind == kind]
        for kind in ("circle", "square", "triangle", "star")
    }
    assert turns["circle"] == [0.0] * len(turns["circle"])
    for kind, limit in (("square", 15), ("triangle", 10), ("star", 20)):
        assert max(map(abs, turns[kind])) <= limit
        assert min(turns[kind]) < -limit / 2 and max(turns[kind]) > limit / 2
    styles = [(s.filled, s.edge is not None) for _, s in SHAPES]
    assert {(True, False), (True, True), (False, False)} == set(styles)


def test_written_files_show_the_named_colours_at_the_shapes(tmp_path: Path) -> None:
    count = 60
    write_dataset(tmp_path, count, seed=11)
    lines = (tmp_path / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == count
    suffixes = set()
    for index, line in enumerate(lines):
        record = json.loads(line)
        scene = SCENES[index]
        assert record == {
            "image": f"images/{index:06d}{scene.file_suffix}",
            "caption": scene.caption,
        }
        suffixes.add(scene.file_suffix)
        with Image.open(tmp_path / record["image"]) as image:
            assert image.format == scene.image_format
            assert image.size == (scene.width, scene.height)
            pixels = np.asarray(image.convert("RGB"), np.float32)
        for shape in scene.shapes:
            # Median over the pixels fully in the shape's own colour, as decoded (JPEG
            # blur, noise and all): its hue is the named colour's.
            colour = np.median(pixels[_painted(scene, shape) > 0.99], axis=0)
            hue, chroma = _hue_degrees(colour)
            assert _hue_name(hue) == shape.colour, (scene, shape, colour)
            assert chroma > 40, (scene, shape, colour)
    assert suffixes == {".jpg", ".png"}


def test_same_seed_same_bytes_and_longer_runs_extend_shorter_ones(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", 8, seed=5).parent
    again = write_dataset(tmp_path / "b", 8, seed=5).parent
    longer = write_dataset(tmp_path / "c", 10, seed=5).parent
    other = write_dataset(tmp_path / "d", 8, seed=6).parent
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 9
    for relative in files:
        assert (first / relative).read_bytes() == (again / relative).read_bytes()
    for relative in files:
        if relative.parent.name == "images":
            assert (first / relative).read_bytes() == (longer / relative).read_bytes()
    assert (first / "captions.jsonl").read_bytes() != (other / "captions.jsonl").read_bytes()


def test_a_scene_is_a_pure_function_of_its_seed_and_index() -> None:
    assert sample_scene(scene_rng(11, 7)) == SCENES[7]
    assert sample_scene(scene_rng(12, 7)) != SCENES[7]
    noisy = next(s for s in SCENES if s.noise_sigma > 0 and s.background.pattern == "speckle")
    assert np.array_equal(np.asarray(render_scene(noisy)), np.asarray(render_scene(noisy)))


def test_generate_scene_draws_the_sampled_scene() -> None:
    image, caption = generate_scene(scene_rng(11, 3))
    assert caption == SCENES[3].caption
    assert np.array_equal(np.asarray(image), np.asarray(render_scene(SCENES[3])))


def test_the_written_dataset_reads_back_without_problems(tmp_path: Path) -> None:
    captions = write_dataset(tmp_path, 6, seed=2)
    examples = read_jsonl(captions, on_error="fail")
    assert len(examples) == 6 and not examples.skipped
    assert all(example.image_path.is_file() for example in examples)


@pytest.mark.parametrize(("count", "seed"), [(0, 1), (3, -1)])
def test_write_dataset_refuses_bad_arguments(tmp_path: Path, count: int, seed: int) -> None:
    with pytest.raises(ValueError):
        write_dataset(tmp_path, count, seed)


def test_script_writes_a_dataset_and_rejects_bad_flags(tmp_path: Path) -> None:
    script = str(REPO / "scripts" / "make_shapes_dataset.py")
    out = tmp_path / "shapes"
    done = subprocess.run(
        [sys.executable, script, "--out", str(out), "--count", "3", "--seed", "4"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len((out / "captions.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    bad = subprocess.run(
        [sys.executable, script, "--out", str(out), "--count", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "--count" in bad.stderr and "Traceback" not in bad.stderr
