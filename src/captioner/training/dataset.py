"""Caption datasets: read JSON Lines or COCO captions into examples, vet them, split them.

Training runs for hours, so bad data is found before it starts: every line is parsed,
every caption checked, every image opened once. Each problem becomes a
:class:`~captioner.errors.DatasetError` naming the file and line (or the COCO entry); the
caller chooses to stop at the first one (``on_error="fail"``) or to log it, skip that
item and get the list back for a summary (``on_error="skip"``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from captioner.errors import DatasetError

__all__ = [
    "Example",
    "ExampleSet",
    "OnError",
    "group_by_image",
    "read_coco",
    "read_dataset",
    "read_jsonl",
    "split_by_image",
]

logger = logging.getLogger(__name__)

OnError = Literal["skip", "fail"]


@dataclass(frozen=True)
class Example:
    """One (image, caption) training pair.

    Attributes:
        image_path: The image file, already resolved against the data file's location.
        caption: The caption as written (not yet tokenised), stripped of outer whitespace.
        source: Where it came from, for messages: ``"captions.jsonl:12"`` or
            ``"captions_train2014.json:annotations[5]"``.
    """

    image_path: Path
    caption: str
    source: str


@dataclass
class ExampleSet:
    """What a reader returns: the usable examples and the problems it skipped.

    Iterating it and ``len()`` go over the examples, so it reads like a list of them.

    Attributes:
        examples: The usable examples, in file order.
        skipped: One error per skipped item (empty when nothing was wrong).
    """

    examples: list[Example] = field(default_factory=list)
    skipped: list[DatasetError] = field(default_factory=list)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __len__(self) -> int:
        return len(self.examples)


class _Vetting:
    """Applies the ``on_error`` policy and remembers which images were already checked."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error = on_error
        self.result = ExampleSet()
        # image path -> why it is unusable, or None when it opened fine. Captions share
        # images (five per image in COCO), and opening each once keeps the check cheap.
        self._image_problems: dict[Path, str | None] = {}

    def report(self, error: DatasetError) -> None:
        """Raise ``error`` (fail) or log it and keep it for the summary (skip)."""
        if self.on_error == "fail":
            raise error
        logger.warning("skipped %s", error)
        self.result.skipped.append(error)

    def image_problem(self, image_path: Path, shown_as: str) -> str | None:
        """Why ``image_path`` cannot be trained on, or None if it is a readable image."""
        if image_path not in self._image_problems:
            self._image_problems[image_path] = _check_image(image_path, shown_as)
        return self._image_problems[image_path]

    def finish(self, data_path: Path) -> ExampleSet:
        """Return the result, refusing one with nothing to train on."""
        if not self.result.examples:
            raise DatasetError(
                f"no usable examples ({len(self.result.skipped)} skipped)", path=data_path
            )
        return self.result


def _check_image(image_path: Path, shown_as: str) -> str | None:
    """Open the image header and run Pillow's cheap integrity check (no full decode)."""
    if not image_path.is_file():
        return f"image not found: {shown_as}"
    try:
        with Image.open(image_path) as image:
            image.verify()
    # Pillow's format plugins signal a corrupt or foreign file with many exception types
    # (OSError, SyntaxError, ValueError, struct.error, DecompressionBombError, ...).
    except Exception as exc:
        return f"unreadable image {shown_as}: {exc}"
    return None


def _caption_problem(caption: Any) -> str | None:
    """Why ``caption`` (a decoded JSON value) is not a usable caption, or None."""
    if not isinstance(caption, str):
        return f"caption must be a string, got {type(caption).__name__}"
    if not caption.strip():
        return "empty caption"
    return None


def read_jsonl(path: Path | str, on_error: OnError = "skip") -> ExampleSet:
    """Read a JSON Lines caption file: one ``{"image": ..., "caption": ...}`` object a line.

    ``image`` is a path relative to the JSONL file's folder (absolute paths are kept as
    they are); an image may appear on several lines, one per caption. Blank lines are
    ignored. Other keys are allowed and ignored.

    Args:
        path: The ``.jsonl`` file.
        on_error: ``"fail"`` raises on the first bad line; ``"skip"`` logs it, leaves it
            out and records it in :attr:`ExampleSet.skipped`.

    Returns:
        The examples in file order, and the skipped problems.

    Raises:
        DatasetError: If the file cannot be read, has no usable line, or (with
            ``on_error="fail"``) on the first bad line: invalid JSON or UTF-8, not an
            object, a missing/empty image or caption, a missing or unreadable image file.
    """
    path = Path(path)
    vetting = _Vetting(on_error)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    base_dir = path.absolute().parent
    for line_number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        problem, example = _parse_jsonl_line(raw, base_dir, f"{path}:{line_number}", vetting)
        if problem is not None:
            vetting.report(DatasetError(problem, path=path, line=line_number))
        elif example is not None:
            vetting.result.examples.append(example)
    return vetting.finish(path)


def _parse_jsonl_line(
    raw: bytes, base_dir: Path, source: str, vetting: _Vetting
) -> tuple[str | None, Example | None]:
    """Turn one JSONL line into an example, or say what is wrong with it."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not valid UTF-8", None
    except json.JSONDecodeError as exc:
        return f"bad JSON: {exc.msg} (column {exc.colno})", None
    if not isinstance(record, dict):
        return 'expected a JSON object like {"image": ..., "caption": ...}', None
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        return 'missing or empty "image" (a path relative to this file)', None
    caption_problem = _caption_problem(record.get("caption"))
    if caption_problem is not None:
        return caption_problem, None
    image_path = base_dir / image
    image_problem = vetting.image_problem(image_path, image)
    if image_problem is not None:
        return image_problem, None
    return None, Example(image_path, record["caption"].strip(), source)


def read_coco(
    annotations_json: Path | str, image_dir: Path | str, on_error: OnError = "skip"
) -> ExampleSet:
    """Read COCO captions: an annotations JSON plus the folder of its images.

    The JSON has ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``,
    ``caption``), as in ``captions_train2014.json``, the file im2txt trained on. Images
    without any caption are ignored, as im2txt only used captioned ones.

    Args:
        annotations_json: The annotations file.
        image_dir: The folder holding each ``file_name``.
        on_error: ``"fail"`` raises on the first bad entry; ``"skip"`` logs it, leaves
            it out (a bad image drops its captions) and records it in
            :attr:`ExampleSet.skipped`.

    Returns:
        The examples in annotation order, and the skipped problems.

    Raises:
        DatasetError: If the file cannot be read or parsed, lacks the ``images`` or
            ``annotations`` lists, has no usable caption, or (with ``on_error="fail"``)
            on the first bad entry: a malformed image or annotation entry, a duplicate
            image id, a caption for an unknown image, an empty caption, a missing or
            unreadable image file.
    """
    path = Path(annotations_json)
    image_dir = Path(image_dir).absolute()
    vetting = _Vetting(on_error)
    data = _load_coco_json(path)
    images = _coco_images(data["images"], path, vetting)
    bad_images: set[Any] = set()
    for index, annotation in enumerate(data["annotations"]):
        problem = _coco_annotation_problem(annotation, images)
        if problem is not None:
            vetting.report(DatasetError(f"annotations[{index}]: {problem}", path=path))
            continue
        image_id = annotation["image_id"]
        image_index, file_name = images[image_id]
        image_problem = vetting.image_problem(image_dir / file_name, file_name)
        if image_problem is not None:
            # Blame the image entry, once, rather than each of its (usually five) captions.
            if image_id not in bad_images:
                bad_images.add(image_id)
                message = f"images[{image_index}]: {image_problem}; its captions are unused"
                vetting.report(DatasetError(message, path=path))
            continue
        source = f"{path}:annotations[{index}]"
        vetting.result.examples.append(
            Example(image_dir / file_name, annotation["caption"].strip(), source)
        )
    return vetting.finish(path)


def _load_coco_json(path: Path) -> dict[str, list[Any]]:
    """Parse the annotations file and check its two top-level lists exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise DatasetError("not valid UTF-8", path=path) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"bad JSON: {exc.msg}", path=path, line=exc.lineno) from exc
    if not isinstance(data, dict):
        raise DatasetError("not a COCO captions file: expected a JSON object", path=path)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'not a COCO captions file: no "{key}" list', path=path)
    return data


def _coco_images(entries: list[Any], path: Path, vetting: _Vetting) -> dict[Any, tuple[int, str]]:
    """Map image id -> (index in ``images``, file name), reporting malformed entries."""
    images: dict[Any, tuple[int, str]] = {}
    for index, entry in enumerate(entries):
        where = f"images[{index}]"
        if not isinstance(entry, dict) or not _is_image_id(entry.get("id")):
            message = f'{where}: expected an object with an integer or string "id"'
            vetting.report(DatasetError(message, path=path))
            continue
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            vetting.report(DatasetError(f'{where}: missing or empty "file_name"', path=path))
        elif entry["id"] in images:
            vetting.report(DatasetError(f"{where}: duplicate image id {entry['id']}", path=path))
        else:
            images[entry["id"]] = (index, file_name)
    return images


def _is_image_id(value: Any) -> bool:
    """COCO ids are integers; strings are accepted too. Anything else cannot be a key."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _coco_annotation_problem(annotation: Any, images: dict[Any, tuple[int, str]]) -> str | None:
    """Why a COCO annotation entry cannot be used, or None."""
    if not isinstance(annotation, dict):
        return "expected an object"
    image_id = annotation.get("image_id")
    if not _is_image_id(image_id) or image_id not in images:
        return f"caption for unknown image id {image_id!r}"
    return _caption_problem(annotation.get("caption"))


def read_dataset(
    data: Path | str, image_dir: Path | str | None = None, on_error: OnError = "skip"
) -> ExampleSet:
    """Read either format, chosen by what was given: the CLI's one entry point.

    Args:
        data: A ``.jsonl`` file, or a COCO annotations ``.json`` file.
        image_dir: The COCO image folder; required for COCO, refused for JSONL (whose
            image paths are relative to the JSONL file itself).
        on_error: As in :func:`read_jsonl`.

    Returns:
        The examples and the skipped problems.

    Raises:
        DatasetError: On an unknown suffix, a missing/superfluous ``image_dir``, or
            whatever the chosen reader raises.
    """
    data = Path(data)
    suffix = data.suffix.lower()
    if suffix == ".jsonl":
        if image_dir is not None:
            raise DatasetError(
                "a JSONL file names its images relative to itself; drop the image folder",
                path=data,
            )
        return read_jsonl(data, on_error)
    if suffix == ".json":
        if image_dir is None:
            raise DatasetError("COCO annotations need the image folder as well", path=data)
        return read_coco(data, image_dir, on_error)
    raise DatasetError(
        "unknown data format: expected captions .jsonl or COCO annotations .json", path=data
    )


def group_by_image(examples: Iterable[Example]) -> dict[Path, list[Example]]:
    """Gather the captions of each image, images in first-seen order.

    Evaluation needs every reference caption of an image at once, and splitting must
    keep an image's captions together.
    """
    groups: dict[Path, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.image_path, []).append(example)
    return groups


def split_by_image(
    examples: Iterable[Example], held_out_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split into training and held-out examples, never putting one image in both.

    The images are sorted by path, then shuffled with ``seed``, so the split depends only
    on the set of images and the seed, not on file order. When ``held_out_fraction`` is
    above zero, at least one image is held out and at least one kept for training
    (given two or more images).

    Args:
        examples: Examples from a reader.
        held_out_fraction: Share of images (not captions) held out, in [0, 1).
        seed: Seed of the shuffle.

    Returns:
        ``(train, held_out)``, each in the input order.

    Raises:
        ValueError: If ``held_out_fraction`` is outside [0, 1).
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1), got {held_out_fraction}")
    examples = list(examples)
    images = sorted(group_by_image(examples), key=str)
    held_out_count = round(held_out_fraction * len(images))
    if held_out_fraction > 0:
        held_out_count = min(max(held_out_count, 1), len(images) - 1)
    order = np.random.default_rng(seed).permutation(len(images))
    held_out_images = {images[i] for i in order[:held_out_count]}
    train = [ex for ex in examples if ex.image_path not in held_out_images]
    held_out = [ex for ex in examples if ex.image_path in held_out_images]
    return train, held_out
