"""Alt text written into copies, in place and into sidecars, read back by readers that are not
the writer: Pillow for EXIF and IPTC-IIM, the XMP packet parsed here with ElementTree; the
pixels decoded before and after compared; originals, skips, errors and kills checked."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, IptcImagePlugin, PngImagePlugin

from captioner.alt_text import (
    EXIF_DESCRIPTION,
    FIELDS,
    FIELDS_BY_FORMAT,
    IPTC_CAPTION,
    XMP_ALT_TEXT,
    XMP_DESCRIPTION,
    XMP_FIELDS,
    AltTextWriter,
    mirrored_path,
    sidecar_path,
)
from captioner.errors import ConfigurationError, MetadataToolError
from captioner.exiftool import INSTALL_HINT

CAPTION = "Ünïcödé “quoted” café 日本語 😀 ."
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
XMP_NAMES = {
    XMP_DESCRIPTION: "{http://purl.org/dc/elements/1.1/}description",
    XMP_ALT_TEXT: "{http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/}AltTextAccessibility",
}
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}


# --- the independent readers ---------------------------------------------------------------


def xmp_default(data: bytes, field: str) -> str | None:
    """A lang-alt property's x-default text, from the XMP packet found in a file's bytes."""
    start, end = data.find(b"<x:xmpmeta"), data.find(b"</x:xmpmeta>")
    if start < 0:
        return None
    root = ET.fromstring(data[start : end + len(b"</x:xmpmeta>")])
    for element in root.iter(XMP_NAMES[field]):
        for item in element.iter(f"{{{RDF}}}li"):
            if item.get(XML_LANG) == "x-default":
                return item.text
    return None


def exif_description(path: Path) -> str | None:
    with Image.open(path) as image:
        value = image.getexif().get(0x010E)
    # EXIF says ASCII and Pillow decodes bytes as Latin-1; the bytes are UTF-8 (MWG).
    return None if value is None else str(value).encode("latin-1").decode("utf-8")


def iptc_caption(path: Path) -> str | None:
    with Image.open(path) as image:
        info = IptcImagePlugin.getiptcinfo(image) or {}
    if (2, 120) not in info:
        return None
    assert info[(1, 90)] == b"\x1b%G", "CodedCharacterSet must say UTF-8"
    caption = info[(2, 120)]
    assert isinstance(caption, bytes)
    return caption.decode("utf-8")


def read_field(path: Path, field: str) -> str | None:
    if field in XMP_NAMES:
        return xmp_default(path.read_bytes(), field)
    return exif_description(path) if field == EXIF_DESCRIPTION else iptc_caption(path)


def pixels(path: Path) -> tuple[str, np.ndarray, list[int] | None]:
    with Image.open(path) as image:
        return image.mode, np.array(image), image.getpalette()


def assert_same_pixels(before: Path, after: Path) -> None:
    mode, array, palette = pixels(before)
    mode_after, array_after, palette_after = pixels(after)
    assert (mode_after, palette_after) == (mode, palette)
    np.testing.assert_array_equal(array_after, array)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- images ---------------------------------------------------------------------------------


def make_image(path: Path, image_format: str, **save: object) -> Path:
    noise = np.random.default_rng(7).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    if image_format == "GIF":
        image = image.convert("P")
    image.save(path, format=image_format, **save)
    return path


def xmp_packet(body: str) -> str:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF + '">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/">' + body + "</rdf:Description>"
        "</rdf:RDF></x:xmpmeta>"
    )


@pytest.fixture
def writer() -> Iterator[AltTextWriter]:
    with AltTextWriter() as alt_text:
        yield alt_text


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.rglob("*") if "captioner-tmp" in p.name or "_exiftool" in p.name
    )


# --- embed into a copy ----------------------------------------------------------------------


@pytest.mark.parametrize("image_format", list(SUFFIXES))
def test_embed_writes_every_field_of_the_format_into_a_copy_and_keeps_the_pixels(
    tmp_path: Path, writer: AltTextWriter, image_format: str
) -> None:
    original = make_image(tmp_path / f"photo{SUFFIXES[image_format]}", image_format)
    before = digest(original)
    copy = tmp_path / "copies" / "nested" / original.name

    outcome = writer.embed(original, CAPTION, copy)

    assert (outcome.status, outcome.destination, outcome.detail) == ("written", copy, None)
    assert outcome.fields == FIELDS_BY_FORMAT[image_format]
    for field in outcome.fields:
        assert read_field(copy, field) == CAPTION, field
    assert_same_pixels(original, copy)
    assert digest(original) == before
    assert leftovers(tmp_path) == []


def test_jpeg_and_tiff_carry_all_four_fields_png_and_webp_no_iptc_iim() -> None:
    # IPTC-IIM has no standard place in PNG (exiftool would write a non-standard chunk) nor
    # in WebP (exiftool drops it); XMP carries the same text there.
    assert FIELDS_BY_FORMAT["JPEG"] == FIELDS_BY_FORMAT["TIFF"] == FIELDS
    assert set(FIELDS) - set(FIELDS_BY_FORMAT["PNG"]) == {IPTC_CAPTION}
    assert set(FIELDS) - set(FIELDS_BY_FORMAT["WEBP"]) == {IPTC_CAPTION}


def test_png_gets_no_non_standard_iptc_chunk(tmp_path: Path, writer: AltTextWriter) -> None:
    original = make_image(tmp_path / "photo.png", "PNG")
    writer.embed(original, CAPTION, tmp_path / "out" / "photo.png")
    with Image.open(tmp_path / "out" / "photo.png") as image:
        assert not [key for key in image.info if "iptc" in str(key).lower()]


def test_a_caption_is_written_on_one_line(tmp_path: Path, writer: AltTextWriter) -> None:
    original = make_image(tmp_path / "photo.jpg", "JPEG")
    copy = tmp_path / "out.jpg"
    outcome = writer.embed(original, "  a dog\non a\tcouch\x00 .\r\n", copy)
    assert outcome.status == "written"
    assert {field: read_field(copy, field) for field in FIELDS} == dict.fromkeys(
        FIELDS, "a dog on a couch ."
    )


def test_an_empty_caption_is_that_images_error(tmp_path: Path, writer: AltTextWriter) -> None:
    original = make_image(tmp_path / "photo.jpg", "JPEG")
    outcome = writer.embed(original, " \n ", tmp_path / "out" / "photo.jpg")
    assert (outcome.status, outcome.detail) == ("error", "the caption is empty: nothing to write")
    assert not (tmp_path / "out").exists()


def test_the_format_comes_from_the_content_not_the_suffix(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    original = make_image(tmp_path / "really-a-png.jpg", "PNG")
    copy = tmp_path / "out" / "really-a-png.jpg"
    outcome = writer.embed(original, CAPTION, copy)
    assert (outcome.status, outcome.fields) == ("written", FIELDS_BY_FORMAT["PNG"])
    assert read_field(copy, XMP_DESCRIPTION) == CAPTION
    assert_same_pixels(original, copy)


def test_the_original_as_destination_is_refused_unless_in_place(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    original = make_image(tmp_path / "photo.jpg", "JPEG")
    before = digest(original)
    linked = tmp_path / "same.jpg"
    os.link(original, linked)
    for destination in (original, tmp_path / "sub" / ".." / "photo.jpg", linked):
        with pytest.raises(ConfigurationError, match="is the image itself"):
            writer.embed(original, CAPTION, destination)
    assert digest(original) == before


# --- in place -------------------------------------------------------------------------------


def test_in_place_rewrites_the_image_keeping_pixels_and_permissions(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    image = make_image(tmp_path / "photo.jpg", "JPEG")
    untouched = make_image(tmp_path / "reference.jpg", "JPEG")
    image.chmod(0o640)

    outcome = writer.embed_in_place(image, CAPTION)

    assert (outcome.status, outcome.destination) == ("written", image)
    assert read_field(image, IPTC_CAPTION) == CAPTION
    assert read_field(image, XMP_ALT_TEXT) == CAPTION
    assert_same_pixels(untouched, image)
    assert image.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg", "reference.jpg"]


def test_in_place_through_a_link_changes_the_linked_file(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    target = make_image(tmp_path / "photo.jpg", "JPEG")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    writer.embed_in_place(link, CAPTION)
    assert link.is_symlink()
    assert read_field(target, EXIF_DESCRIPTION) == CAPTION


# --- images that already have a description ---------------------------------------------------


def described_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF ImageDescription Pillow wrote (not the writer under test)."""
    exif = Image.Exif()
    exif[0x010E] = "a red barn"
    return make_image(path, "JPEG", exif=exif.tobytes())


def described_png(path: Path) -> Path:
    """A PNG whose XMP has a dc:description in French only, no x-default."""
    info = PngImagePlugin.PngInfo()
    body = '<dc:description><rdf:Alt><rdf:li xml:lang="fr">une grange</rdf:li></rdf:Alt>'
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(body + "</dc:description>"))
    return make_image(path, "PNG", pnginfo=info)


@pytest.mark.parametrize(
    ("make", "found", "text"),
    [
        (described_jpeg, (EXIF_DESCRIPTION,), "a red barn"),
        (described_png, (XMP_DESCRIPTION + "-fr",), "une grange"),
    ],
)
def test_an_image_already_described_is_left_alone_unless_overwrite(
    tmp_path: Path,
    writer: AltTextWriter,
    make: Callable[[Path], Path],
    found: tuple[str, ...],
    text: str,
) -> None:
    original = make(tmp_path / "described")
    copy = tmp_path / "out" / "described"

    skipped = writer.embed(original, CAPTION, copy)
    in_place = writer.embed_in_place(original, CAPTION)
    sidecar = writer.write_sidecar(original, CAPTION)

    for outcome in (skipped, in_place, sidecar):
        assert (outcome.status, outcome.fields, outcome.detail) == ("skipped", found, text)
        assert outcome.destination is None
    assert not copy.exists() and not sidecar_path(original).exists()

    overwritten = writer.embed(original, CAPTION, copy, overwrite=True)
    assert overwritten.status == "written"
    for field in overwritten.fields:
        assert read_field(copy, field) == CAPTION
    assert_same_pixels(original, copy)


def test_a_blank_description_is_no_description(tmp_path: Path, writer: AltTextWriter) -> None:
    exif = Image.Exif()
    exif[0x010E] = "    "  # what some cameras write
    original = make_image(tmp_path / "photo.jpg", "JPEG", exif=exif.tobytes())
    outcome = writer.embed(original, CAPTION, tmp_path / "out.jpg")
    assert outcome.status == "written"
    assert read_field(tmp_path / "out.jpg", EXIF_DESCRIPTION) == CAPTION


# --- sidecars --------------------------------------------------------------------------------


def test_a_sidecar_holds_the_xmp_fields_and_the_image_is_only_read(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    image = make_image(tmp_path / "photo.jpg", "JPEG")
    before = digest(image)

    outcome = writer.write_sidecar(image, CAPTION)

    sidecar = tmp_path / "photo.jpg.xmp"
    assert (outcome.status, outcome.destination, outcome.fields) == (
        "written",
        sidecar,
        XMP_FIELDS,
    )
    data = sidecar.read_bytes()
    assert [xmp_default(data, field) for field in XMP_FIELDS] == [CAPTION, CAPTION]
    assert digest(image) == before
    assert leftovers(tmp_path) == []


def test_an_existing_sidecar_keeps_its_other_properties(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    image = make_image(tmp_path / "photo.png", "PNG")
    sidecar = tmp_path / "meta" / "photo.png.xmp"
    sidecar.parent.mkdir()
    sidecar.write_text(xmp_packet("<xmp:Rating>4</xmp:Rating>"))

    outcome = writer.write_sidecar(image, CAPTION, sidecar)

    assert outcome.status == "written"
    root = ET.fromstring(sidecar.read_bytes()[sidecar.read_bytes().find(b"<x:xmpmeta") :])
    ratings = [e.text for e in root.iter("{http://ns.adobe.com/xap/1.0/}Rating")]
    ratings += [
        e.get("{http://ns.adobe.com/xap/1.0/}Rating")
        for e in root.iter(f"{{{RDF}}}Description")
        if e.get("{http://ns.adobe.com/xap/1.0/}Rating")
    ]
    assert ratings == ["4"]
    assert xmp_default(sidecar.read_bytes(), XMP_ALT_TEXT) == CAPTION

    again = writer.write_sidecar(image, "another caption", sidecar)
    assert (again.status, again.detail) == ("skipped", CAPTION)
    overwritten = writer.write_sidecar(image, "another caption", sidecar, overwrite=True)
    assert overwritten.status == "written"
    assert xmp_default(sidecar.read_bytes(), XMP_DESCRIPTION) == "another caption"


def test_a_sidecar_works_for_a_format_that_cannot_embed(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    image = make_image(tmp_path / "scan.bmp", "BMP")
    embedded = writer.embed(image, CAPTION, tmp_path / "out" / "scan.bmp")
    assert embedded.status == "error"
    assert embedded.detail == (
        "BMP files cannot be given embedded alt text (supported: JPEG, PNG, TIFF, WebP, GIF); "
        "a sidecar works for any image"
    )
    outcome = writer.write_sidecar(image, CAPTION)
    assert outcome.status == "written"
    assert xmp_default((tmp_path / "scan.bmp.xmp").read_bytes(), XMP_DESCRIPTION) == CAPTION


# --- paths -----------------------------------------------------------------------------------


def test_paths_mirror_the_tree_under_the_metadata_folder(tmp_path: Path) -> None:
    root = tmp_path / "library"
    image = root / "2024" / "may" / "photo.jpg"
    out = tmp_path / "alt"
    assert sidecar_path(image) == root / "2024" / "may" / "photo.jpg.xmp"
    assert sidecar_path(image, metadata_dir=out, root=root) == out / "2024/may/photo.jpg.xmp"
    assert mirrored_path(image, out, root=root) == out / "2024" / "may" / "photo.jpg"
    outside = tmp_path / "elsewhere" / "x.png"
    assert mirrored_path(outside, out, root=root) == out / outside.relative_to("/")


# --- errors and atomicity -------------------------------------------------------------------


def test_a_corrupt_image_is_an_error_and_leaves_the_destination_as_it_was(
    tmp_path: Path, writer: AltTextWriter
) -> None:
    whole = make_image(tmp_path / "whole.jpg", "JPEG")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(whole.read_bytes()[:600])
    destination = tmp_path / "out" / "corrupt.jpg"
    destination.parent.mkdir()
    destination.write_bytes(b"the previous run's copy")

    outcome = writer.embed(corrupt, CAPTION, destination)

    assert (outcome.status, outcome.detail) == ("error", "Corrupted JPEG image")
    assert destination.read_bytes() == b"the previous run's copy"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.jpg", b"just some text\n", "TXT files cannot be given embedded alt text"),
        ("missing.jpg", None, "File not found"),
    ],
)
def test_what_is_not_an_image_is_that_images_error(
    tmp_path: Path, writer: AltTextWriter, name: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    outcome = writer.embed(path, CAPTION, tmp_path / "out" / name)
    assert outcome.status == "error"
    assert outcome.detail is not None and outcome.detail.startswith(reason)
    assert not (tmp_path / "out").exists()


def test_a_missing_exiftool_fails_before_the_first_image() -> None:
    with pytest.raises(MetadataToolError, match="exiftool-not-installed-here not found; install"):
        AltTextWriter(executable="exiftool-not-installed-here")
    assert "apt-get install libimage-exiftool-perl" in INSTALL_HINT


def whole_files(folder: Path) -> list[Path]:
    """The files under their final names: temporary ones are hidden and renamed when whole."""
    return sorted(p for p in folder.glob("*.jpg") if not p.name.startswith("."))


KILLED_WRITER = """
import sys
from pathlib import Path
from captioner.alt_text import AltTextWriter
source, out = Path(sys.argv[1]), Path(sys.argv[2])
with AltTextWriter() as writer:
    for i in range(400):
        writer.embed(source, "a caption " + str(i), out / f"{i:03d}.jpg")
"""


def test_images_appear_whole_or_not_at_all_even_when_the_writer_is_killed(
    tmp_path: Path,
) -> None:
    # Each file is checked the moment it shows up under its name, while the writer is busy
    # with the next ones; then the writer is killed at a random point and all are checked.
    source = tmp_path / "big.jpg"
    noise = np.random.default_rng(3).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(source, quality=95)
    out = tmp_path / "out"

    def check(path: Path) -> None:
        assert read_field(path, XMP_DESCRIPTION) == f"a caption {int(path.stem)}"
        assert_same_pixels(source, path)

    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(source), str(out)])
    seen: set[Path] = set()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 4 and time.monotonic() < deadline:
            for path in whole_files(out):
                if path not in seen:
                    seen.add(path)
                    check(path)
        time.sleep(random.uniform(0.0, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(seen) >= 4
    for path in whole_files(out):
        check(path)
