"""What a caption command's arguments name: walked, sniffed, expanded, in a stable order."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from captioner.sources import iter_sources, read_list
from support.fake_engine import jpeg_bytes, png_bytes


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/ with nested folders, wrong suffixes, non-images and hidden entries."""
    root = tmp_path / "photos"
    for folder in ("b", "a/deep", ".hidden", "c"):
        (root / folder).mkdir(parents=True)
    (root / "z.png").write_bytes(png_bytes("red"))
    (root / "b" / "y.jpg").write_bytes(jpeg_bytes("blue"))
    (root / "a" / "deep" / "x.webp.txt").write_bytes(png_bytes("green"))  # a PNG, named .txt
    (root / "a" / "notes.jpg").write_text("not a picture")  # named .jpg, is text
    (root / "a" / "m.gif").write_bytes(b"GIF89a" + b"\0" * 20)  # an image by its bytes
    (root / ".hidden" / "h.png").write_bytes(png_bytes("red"))
    (root / ".dotfile.png").write_bytes(png_bytes("red"))
    (root / "c" / "README").write_text("hello")
    return root


def _names(items: list[str]) -> list[str]:
    return [source.name for source in iter_sources(items)]


def test_a_directory_is_walked_sorted_recursively_by_content(tree: Path) -> None:
    root = str(tree)
    assert _names([root]) == [
        os.path.join(root, "a", "deep", "x.webp.txt"),
        os.path.join(root, "a", "m.gif"),
        os.path.join(root, "b", "y.jpg"),
        os.path.join(root, "z.png"),
    ]


def test_the_walk_is_stable_whatever_the_creation_order(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for name in ("k", "b", "x", "a", "m"):
        (root / f"{name}.png").write_bytes(png_bytes("red"))
    assert _names([str(root)]) == [str(root / f"{n}.png") for n in "abkmx"]


def test_files_named_are_kept_even_if_not_images(tree: Path) -> None:
    notes = str(tree / "a" / "notes.jpg")
    missing = str(tree / "nope.png")
    assert _names([notes, missing]) == [notes, missing]


def test_patterns_are_expanded_sorted_and_filtered(tree: Path) -> None:
    pattern = str(tree / "**" / "*.jpg")
    assert _names([pattern]) == [str(tree / "b" / "y.jpg")]  # notes.jpg is text
    assert _names([str(tree / "*")]) == _names([str(tree)])  # folders walked, README left


def test_relative_names_stay_relative(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    assert _names(["photos/b"]) == [os.path.join("photos", "b", "y.jpg")]


def test_a_list_file_gives_one_path_a_line(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\r\n\n  spaced name.png\nlast.png", encoding="utf-8")
    assert list(read_list(str(listing))) == ["a.jpg", "  spaced name.png", "last.png"]


def test_a_list_from_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("one.jpg\ntwo.jpg\n"))
    assert list(read_list("-")) == ["one.jpg", "two.jpg"]


def test_nothing_is_listed_ahead(tmp_path: Path) -> None:
    """The first source comes before a second directory is even looked at."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "a.png").write_bytes(png_bytes("red"))
    sources = iter_sources([str(first), str(second)])
    assert next(sources).name == str(first / "a.png")
    second.mkdir()  # created after the first image was handed out: still walked
    (second / "b.png").write_bytes(png_bytes("red"))
    assert [s.name for s in sources] == [str(second / "b.png")]
