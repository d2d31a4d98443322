"""JSONL and COCO caption readers, bad-data reports, and the split by image."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from captioner.errors import DatasetError
from captioner.training.dataset import (
    Example,
    group_by_image,
    read_coco,
    read_dataset,
    read_jsonl,
    split_by_image,
)


def _image(path: Path, colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), colour).save(path)
    return path


def _lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder with good images, a file that only pretends to be a JPEG, a truncated PNG."""
    folder = tmp_path / "data"
    _image(folder / "images" / "a.png")
    _image(folder / "images" / "b.jpg", "blue")
    (folder / "images" / "broken.jpg").write_bytes(b"this is not a JPEG file")
    whole = _image(folder / "images" / "whole.png").read_bytes()
    (folder / "images" / "cut.png").write_bytes(whole[: len(whole) // 2])
    return folder


# --- JSON Lines ------------------------------------------------------------------------


def test_read_jsonl_resolves_images_next_to_the_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lines(
        data_dir / "captions.jsonl",
        '{"image": "images/a.png", "caption": "  A red box. "}',
        "",
        '{"image": "images/b.jpg", "caption": "a blue box", "extra": 1}',
        '{"image": "images/a.png", "caption": "another caption"}',
    )
    monkeypatch.chdir(tmp_path)  # a cwd that is not the data folder
    examples = read_jsonl(Path("data") / "captions.jsonl", on_error="fail")
    assert examples.skipped == []
    assert list(examples) == [
        Example(data_dir / "images" / "a.png", "A red box.", "data/captions.jsonl:1"),
        Example(data_dir / "images" / "b.jpg", "a blue box", "data/captions.jsonl:3"),
        Example(data_dir / "images" / "a.png", "another caption", "data/captions.jsonl:4"),
    ]
    assert len(examples) == 3


BAD_LINES = [
    ('{"image": "images/missing.jpg", "caption": "a cat"}', "image not found: images/missing.jpg"),
    ('{"image": "images/broken.jpg", "caption": "a cat"}', "unreadable image images/broken.jpg"),
    ('{"image": "images/cut.png", "caption": "a cat"}', "unreadable image images/cut.png"),
    ('{"image": "images/a.png", "caption": "   "}', "empty caption"),
    ('{"image": "images/a.png", "caption": ""}', "empty caption"),
    ('{"image": "images/a.png", "caption": 7}', "caption must be a string"),
    ('{"image": "images/a.png"', "bad JSON"),
    ('["images/a.png", "a cat"]', "expected a JSON object"),
    ('{"caption": "a cat"}', 'missing or empty "image"'),
    ('{"image": "images", "caption": "a folder"}', "image not found: images"),
]


@pytest.mark.parametrize(("bad_line", "problem"), BAD_LINES)
def test_bad_lines_are_reported_with_file_and_line_then_skipped(
    data_dir: Path, bad_line: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _lines(
        data_dir / "captions.jsonl",
        '{"image": "images/a.png", "caption": "a red box"}',
        bad_line,
        '{"image": "images/b.jpg", "caption": "a blue box"}',
    )
    with caplog.at_level(logging.WARNING, logger="captioner.training.dataset"):
        examples = read_jsonl(path)
    assert [example.caption for example in examples] == ["a red box", "a blue box"]
    [error] = examples.skipped
    assert (error.path, error.line) == (path, 2)
    assert str(error).startswith(f"{path}:2: {problem}")
    assert f"{path}:2: {problem}" in caplog.text


@pytest.mark.parametrize(("bad_line", "problem"), BAD_LINES)
def test_bad_lines_are_fatal_when_asked(data_dir: Path, bad_line: str, problem: str) -> None:
    path = _lines(
        data_dir / "captions.jsonl",
        '{"image": "images/a.png", "caption": "a red box"}',
        '{"image": "images/b.jpg", "caption": "a blue box"}',
        bad_line,
    )
    with pytest.raises(DatasetError) as caught:
        read_jsonl(path, on_error="fail")
    assert caught.value.line == 3
    assert problem in str(caught.value)


def test_invalid_utf8_line_is_reported(data_dir: Path) -> None:
    path = data_dir / "captions.jsonl"
    path.write_bytes(
        b'{"image": "images/a.png", "caption": "ok"}\n'
        b'{"image": "images/a.png", "caption": "caf\xe9"}\n'
    )
    examples = read_jsonl(path)
    assert len(examples) == 1
    assert str(examples.skipped[0]) == f"{path}:2: not valid UTF-8"


def test_an_image_on_many_lines_is_opened_once_but_each_line_reported(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(Path(fp).name)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    path = _lines(
        data_dir / "captions.jsonl",
        *[
            f'{{"image": "images/{name}", "caption": "c{i}"}}'
            for i in range(3)
            for name in ("a.png", "broken.jpg")
        ],
    )
    examples = read_jsonl(path)
    assert sorted(opened) == ["a.png", "broken.jpg"]
    assert len(examples) == 3
    assert [error.line for error in examples.skipped] == [2, 4, 6]


def test_a_file_with_no_usable_line_is_an_error(data_dir: Path) -> None:
    path = _lines(data_dir / "captions.jsonl", '{"image": "images/broken.jpg", "caption": "x"}')
    with pytest.raises(DatasetError, match=r"no usable examples \(1 skipped\)"):
        read_jsonl(path)
    empty = _lines(data_dir / "empty.jsonl", "")
    with pytest.raises(DatasetError, match="no usable examples"):
        read_jsonl(empty)


def test_a_missing_data_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read") as caught:
        read_jsonl(tmp_path / "nope.jsonl")
    assert caught.value.path == tmp_path / "nope.jsonl"


def test_on_error_must_be_skip_or_fail(data_dir: Path) -> None:
    path = _lines(data_dir / "captions.jsonl", '{"image": "images/a.png", "caption": "x"}')
    with pytest.raises(ValueError, match="on_error"):
        read_jsonl(path, on_error="ignore")  # type: ignore[arg-type]


# --- COCO ------------------------------------------------------------------------------


def _coco(path: Path, images: list[object], annotations: list[object]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations}), "utf-8")
    return path


def test_read_coco_pairs_captions_with_their_image_files(data_dir: Path) -> None:
    path = _coco(
        data_dir / "captions_train.json",
        [
            {"id": 1, "file_name": "a.png", "width": 12},
            {"id": 2, "file_name": "b.jpg"},
            {"id": 3, "file_name": "unused.jpg"},  # no caption: ignored, not even opened
        ],
        [
            {"id": 10, "image_id": 2, "caption": "A blue box. "},
            {"id": 11, "image_id": 1, "caption": "a red box"},
            {"id": 12, "image_id": 2, "caption": "blue"},
        ],
    )
    examples = read_coco(path, data_dir / "images", on_error="fail")
    images = data_dir / "images"
    assert list(examples) == [
        Example(images / "b.jpg", "A blue box.", f"{path}:annotations[0]"),
        Example(images / "a.png", "a red box", f"{path}:annotations[1]"),
        Example(images / "b.jpg", "blue", f"{path}:annotations[2]"),
    ]
    assert examples.skipped == []


def test_bad_coco_entries_are_reported_and_skipped(data_dir: Path) -> None:
    path = _coco(
        data_dir / "captions.json",
        [
            {"id": 1, "file_name": "a.png"},
            {"id": 2, "file_name": "broken.jpg"},
            {"id": 3, "file_name": "gone.jpg"},
            {"id": 1, "file_name": "b.jpg"},
            {"file_name": "b.jpg"},
            {"id": 4, "file_name": ""},
        ],
        [
            {"image_id": 1, "caption": "a red box"},
            {"image_id": 2, "caption": "first caption of a broken image"},
            {"image_id": 2, "caption": "second caption of a broken image"},
            {"image_id": 3, "caption": "a missing image"},
            {"image_id": 99, "caption": "nobody's"},
            {"image_id": 1, "caption": " "},
            {"image_id": [1], "caption": "an unhashable id"},
            "not an object",
        ],
    )
    examples = read_coco(path, data_dir / "images")
    assert [example.caption for example in examples] == ["a red box"]
    reports = [str(error) for error in examples.skipped]
    # Pillow's own words for the broken file sit in the middle of its report.
    unreadable = reports.pop(3)
    assert unreadable.startswith(f"{path}: images[1]: unreadable image broken.jpg: ")
    assert unreadable.endswith("; its captions are unused")
    assert reports == [
        f"{path}: images[3]: duplicate image id 1",
        f'{path}: images[4]: expected an object with an integer or string "id"',
        f'{path}: images[5]: missing or empty "file_name"',
        f"{path}: images[2]: image not found: gone.jpg; its captions are unused",
        f"{path}: annotations[4]: caption for unknown image id 99",
        f"{path}: annotations[5]: empty caption",
        f"{path}: annotations[6]: caption for unknown image id [1]",
        f"{path}: annotations[7]: expected an object",
    ]


def test_bad_coco_entry_is_fatal_when_asked(data_dir: Path) -> None:
    path = _coco(
        data_dir / "captions.json",
        [{"id": 1, "file_name": "a.png"}],
        [{"image_id": 1, "caption": "ok"}, {"image_id": 1, "caption": ""}],
    )
    with pytest.raises(DatasetError, match=r"annotations\[1\]: empty caption"):
        read_coco(path, data_dir / "images", on_error="fail")


def test_coco_json_syntax_error_names_the_line(data_dir: Path) -> None:
    path = data_dir / "captions.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}', encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        read_coco(path, data_dir / "images")
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: bad JSON")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "expected a JSON object"),
        ('{"images": []}', 'no "annotations" list'),
        ('{"annotations": [], "images": {}}', 'no "images" list'),
    ],
)
def test_a_file_that_is_not_coco_captions_is_fatal(
    data_dir: Path, content: str, problem: str
) -> None:
    path = data_dir / "captions.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=problem):
        read_coco(path, data_dir / "images")


# --- read_dataset ----------------------------------------------------------------------


def test_read_dataset_picks_the_reader_from_the_suffix(data_dir: Path) -> None:
    jsonl = _lines(data_dir / "c.jsonl", '{"image": "images/a.png", "caption": "from jsonl"}')
    coco = _coco(
        data_dir / "c.json", [{"id": 1, "file_name": "a.png"}], [{"image_id": 1, "caption": "coco"}]
    )
    assert [e.caption for e in read_dataset(jsonl)] == ["from jsonl"]
    assert [e.caption for e in read_dataset(coco, data_dir / "images")] == ["coco"]
    with pytest.raises(DatasetError, match="image folder"):
        read_dataset(coco)
    with pytest.raises(DatasetError, match="relative to itself"):
        read_dataset(jsonl, data_dir / "images")
    with pytest.raises(DatasetError, match="unknown data format"):
        read_dataset(data_dir / "captions.csv")


# --- grouping and splitting ------------------------------------------------------------


def _examples(image_count: int, captions_each: int = 3) -> list[Example]:
    return [
        Example(Path(f"/img/{i:03d}.jpg"), f"caption {j} of {i}", f"f:{i * captions_each + j}")
        for j in range(captions_each)
        for i in range(image_count)
    ]


def test_group_by_image_keeps_first_seen_order() -> None:
    groups = group_by_image(_examples(3, 2))
    assert list(groups) == [Path("/img/000.jpg"), Path("/img/001.jpg"), Path("/img/002.jpg")]
    assert [e.caption for e in groups[Path("/img/001.jpg")]] == ["caption 0 of 1", "caption 1 of 1"]


def test_split_never_shares_an_image_and_holds_out_the_asked_share() -> None:
    examples = _examples(50)
    train, held_out = split_by_image(examples, 0.2, seed=1)
    train_images = {e.image_path for e in train}
    held_images = {e.image_path for e in held_out}
    assert not train_images & held_images
    assert len(held_images) == 10 and len(train_images) == 40
    assert len(train) + len(held_out) == len(examples)
    # Every caption of a held-out image is held out with it; input order is kept.
    assert len(held_out) == 30
    assert train == [e for e in examples if e.image_path in train_images]


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    examples = _examples(40)
    first = split_by_image(examples, 0.25, seed=7)
    assert split_by_image(examples, 0.25, seed=7) == first
    shuffled = list(reversed(examples))
    _, held_out = split_by_image(shuffled, 0.25, seed=7)
    assert {e.image_path for e in held_out} == {e.image_path for e in first[1]}
    _, other = split_by_image(examples, 0.25, seed=8)
    assert {e.image_path for e in other} != {e.image_path for e in first[1]}


def test_split_edge_cases() -> None:
    examples = _examples(5)
    train, held_out = split_by_image(examples, 0.0, seed=0)
    assert (train, held_out) == (examples, [])
    # A tiny share still holds out one image, and a large one leaves one for training.
    assert len({e.image_path for e in split_by_image(examples, 0.01, seed=0)[1]}) == 1
    assert len({e.image_path for e in split_by_image(examples, 0.99, seed=0)[0]}) == 1
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="held_out_fraction"):
            split_by_image(examples, bad, seed=0)
