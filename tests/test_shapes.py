"""The shapes generator: captions that are true of the pixels, a fixed grammar, determinism."""

from __future__ import annotations

import dataclasses
import functools
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
    Scene,
    Shape,
    generate_scene,
    render_scene,
    sample_scene,
    scene_rng,
    write_dataset,
)
from captioner.training.tokenizer import count_words, tokenize

REPO = Path(__file__).resolve().parents[1]

# The grammar promised by the issue, written out independently of the generator.
_COLOUR = "(red|green|blue|yellow|purple|orange)"
_KIND = "(circle|square|triangle|star)"
_ONE_SHAPE = re.compile(rf"^a (small|large) {_COLOUR} {_KIND} \.$")
_TWO_SHAPES = re.compile(
    rf"^a small {_COLOUR} {_KIND} (to the left of|to the right of|above|below) "
    rf"a large {_COLOUR} {_KIND} \.$"
)

SCENES = [sample_scene(scene_rng(11, index)) for index in range(120)]
_HORIZONTAL = ("to the left of", "to the right of")


@functools.cache
def _coverage(scene: Scene) -> np.ndarray:
    """How much each pixel changed when the shapes were drawn: uint8 ``[H, W]``.

    The same scene without shapes shares the background and the noise draws, so the
    difference is the shapes alone, found without knowing their colours.
    """
    full = np.asarray(render_scene(scene), np.int16)
    bare = np.asarray(render_scene(dataclasses.replace(scene, shapes=())), np.int16)
    return np.abs(full - bare).max(axis=2).astype(np.uint8)


def _shape_mask(coverage: np.ndarray, shape: Shape) -> tuple[np.ndarray, int, int]:
    """The pixels this shape covers by at least half, as a mask over a window round it.

    Returns:
        The bool mask and the window's top-left column and row.
    """
    x0 = max(int(shape.centre_x - shape.radius) - 2, 0)
    y0 = max(int(shape.centre_y - shape.radius) - 2, 0)
    x1 = int(shape.centre_x + shape.radius) + 3
    y1 = int(shape.centre_y + shape.radius) + 3
    window = coverage[y0:y1, x0:x1]
    return window > 0.5 * window.max(), x0, y0


def _bbox(mask: np.ndarray, x0: int, y0: int) -> tuple[int, int, int, int]:
    """Inclusive (left, top, right, bottom) of a mask, in image pixels."""
    ys, xs = np.nonzero(mask)
    return x0 + xs.min(), y0 + ys.min(), x0 + xs.max(), y0 + ys.max()


def _kind_from_pixels(mask: np.ndarray) -> str:
    """Name a shape from how much of its bounding box it fills.

    A square fills all of it, a circle pi/4, a triangle half, a five-pointed star less.
    """
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    if fill > 0.9:
        return "square"
    if fill > 0.65:
        return "circle"
    if fill > 0.47:
        return "triangle"
    return "star"


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
        coverage = _coverage(scene)
        for shape in scene.shapes:
            mask, _, _ = _shape_mask(coverage, shape)
            assert _kind_from_pixels(mask) == shape.kind, scene.caption


def test_relations_hold_between_the_drawn_pixels() -> None:
    for scene in (s for s in SCENES if s.relation is not None):
        coverage = _coverage(scene)
        first, second = (_bbox(*_shape_mask(coverage, shape)) for shape in scene.shapes)
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


def test_sizes_are_far_apart_and_two_shape_scenes_describe_the_small_one() -> None:
    extents = {"small": [], "large": []}
    for scene in SCENES:
        coverage = _coverage(scene)
        mean_side = math.sqrt(scene.width * scene.height)
        for shape in scene.shapes:
            left, top, right, bottom = _bbox(*_shape_mask(coverage, shape))
            extents[shape.size].append(max(right - left + 1, bottom - top + 1) / mean_side)
        if len(scene.shapes) == 2:
            assert [shape.size for shape in scene.shapes] == ["small", "large"]
    assert max(extents["small"]) < 0.225 < min(extents["large"])


def test_shapes_stay_inside_the_models_centre_crop() -> None:
    # Stretched to 346x346 and cropped to 299, the model sees the middle 86.4% of each side.
    for scene in SCENES:
        ys, xs = np.nonzero(_coverage(scene) > 0)
        assert xs.min() >= math.floor(0.08 * scene.width)
        assert xs.max() <= math.ceil(0.92 * scene.width)
        assert ys.min() >= math.floor(0.08 * scene.height)
        assert ys.max() <= math.ceil(0.92 * scene.height)


def test_backgrounds_are_far_less_saturated_than_any_shape_colour() -> None:
    for scene in SCENES:
        for tone in scene.background.tones:
            assert max(tone) - min(tone) <= 30
    assert min(max(rgb) - min(rgb) for rgb in COLOURS.values()) >= 120


def _nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - rgb) ** 2)))


def test_written_files_show_the_named_colours_at_the_shapes(tmp_path: Path) -> None:
    count = 40
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
        coverage = _coverage(scene)
        for shape in scene.shapes:
            mask, x0, y0 = _shape_mask(coverage, shape)
            window = pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
            # Median over the shape's pixels, as decoded (JPEG blur, noise and all).
            assert _nearest_colour(np.median(window[mask], axis=0)) == shape.colour
    assert suffixes == {".jpg", ".png"}


def test_images_vary_in_size_and_aspect_ratio() -> None:
    aspects = [scene.width / scene.height for scene in SCENES]
    assert min(aspects) < 0.8 and max(aspects) > 1.25
    assert all(1 / 1.61 <= aspect <= 1.61 for aspect in aspects)
    sides = [side for scene in SCENES for side in (scene.width, scene.height)]
    assert min(sides) >= 160 and max(sides) <= 480
    assert max(sides) - min(sides) > 200
    assert len({scene.background.pattern for scene in SCENES}) == 5


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
