"""``captioner caption`` over a collection, as real processes: formats, kills, resume.

The bundled demo model captions the shape pictures; every run is a real ``captioner``
process, and a killed run is killed for real (SIGKILL), at a random point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from captioner.config import Settings
from captioner.loading import load_engine
from captioner.pipeline import caption_batch
from web.scenes import SCENES, scene_png

pytestmark = pytest.mark.slow

CAPTIONER = [sys.executable, "-m", "captioner"]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAPTIONER, "caption", "--model", "demo", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def _jpeg(png: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nested folders of scenes, one with a wrong suffix, a non-image named .jpg, a text
    file, a hidden folder, and a corrupt JPEG."""
    root = tmp_path_factory.mktemp("collection") / "photos"
    names = list(SCENES)
    for folder in ("2019/summer", "2020", ".thumbnails"):
        (root / folder).mkdir(parents=True)
    (root / "2019" / "summer" / names[0]).write_bytes(scene_png(names[0]))
    (root / "2019" / "b-scene.txt").write_bytes(scene_png(names[1]))  # a PNG named .txt
    (root / "2020" / "c-scene.jpg").write_bytes(_jpeg(scene_png(names[2])))
    (root / "2020" / "d-corrupt.jpg").write_bytes(_jpeg(scene_png(names[0]))[:700])
    (root / "a-notes.jpg").write_text("a text file with an image's name")
    (root / "README.md").write_text("not an image")
    (root / ".thumbnails" / "t.png").write_bytes(scene_png(names[0]))
    return root


def _expected_order(root: Path) -> list[str]:
    return [
        str(root / "2019" / "b-scene.txt"),
        str(root / "2019" / "summer" / next(iter(SCENES))),
        str(root / "2020" / "c-scene.jpg"),
        str(root / "2020" / "d-corrupt.jpg"),
    ]


@pytest.fixture(scope="module")
def expected(tree: Path) -> dict[str, str]:
    """The top caption of every good image, from the engine in this process."""
    engine = load_engine(Settings(model="demo"))
    good = [p for p in _expected_order(tree) if "corrupt" not in p]
    return {r.source: r.captions[0].text for r in caption_batch(engine, good)}


def test_every_format_has_one_record_per_image_in_order(
    tree: Path, expected: dict[str, str], tmp_path: Path
) -> None:
    runs = [
        _run(str(tree), "-o", str(tmp_path / f"out{s}")) for s in (".jsonl", ".csv", ".parquet")
    ]
    jsonl = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8", newline="")))
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    order = _expected_order(tree)
    for records, key in ((jsonl, "path"), (rows, "path"), (table, "path")):
        assert [r[key] for r in records] == order
    for run in runs:
        assert run.returncode == 1, run.stderr  # the corrupt JPEG failed
        assert "captioned 3, failed 1" in run.stderr
    for record in table:
        assert record == next(r for r in jsonl if r["path"] == record["path"])
        if record["status"] == "ok":
            assert record["captions"][0]["caption"] == expected[record["path"]]
        else:
            assert record["path"].endswith("d-corrupt.jpg")
            assert "corrupt or truncated" in record["error"]
    for row in rows:
        assert row["caption"] == expected.get(row["path"], "")
        assert bool(row["error"]) == ("corrupt" in row["path"])


def test_usage_errors_exit_2_and_name_the_way_out(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    refused = _run(str(tree), "--output", str(out))
    assert refused.returncode == 2
    assert "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert _run().returncode == 2
    assert _run(str(tree), "--resume").returncode == 2  # --resume needs --output


def test_all_captioned_exits_0_and_a_list_comes_from_stdin(
    tree: Path, expected: dict[str, str], tmp_path: Path
) -> None:
    good = "\n".join(expected) + "\n"
    run = _run("--from-list", "-", "--output", str(tmp_path / "out.jsonl"), stdin=good)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["path"]: r["captions"][0]["caption"] for r in records} == expected


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 scenes (hard links of three pictures) and two broken files."""
    root = tmp_path_factory.mktemp("many")
    originals = []
    for i, name in enumerate(SCENES):
        original = root / f"original-{i}.png"
        original.write_bytes(scene_png(name))
        originals.append(original)
    folder = root / "images"
    folder.mkdir()
    for i in range(60):
        os.link(originals[i % len(originals)], folder / f"{i:03d}.png")
    (folder / "030-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "045-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken too")
    return folder


def _paths_in(out: Path) -> list[str]:
    if out.suffix == ".jsonl":
        return [json.loads(line)["path"] for line in out.read_text().splitlines()]
    if out.suffix == ".csv":
        return [row["path"] for row in csv.DictReader(out.open(encoding="utf-8", newline=""))]
    return [row["path"] for row in pq.read_table(out).to_pylist()]


def _records_written(out: Path) -> int:
    for candidate in (out, out.with_name(out.name + ".journal.jsonl")):
        if candidate.exists():
            return candidate.read_bytes().count(b"\n")
    return 0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_killed_and_resumed_again_and_again_every_image_once(
    many: Path, tmp_path: Path, suffix: str
) -> None:
    clean = tmp_path / f"clean{suffix}"
    assert _run(str(many), "--output", str(clean), "--batch-size", "2").returncode == 1
    out = tmp_path / f"out{suffix}"
    rng = random.Random(f"kill{suffix}")
    kills = 0
    args = [
        *CAPTIONER,
        "caption",
        "--model",
        "demo",
        str(many),
        "-o",
        str(out),
        "--batch-size",
        "2",
    ]
    for attempt in range(4):
        resume = ["--resume"] if attempt else []
        process = subprocess.Popen([*args, *resume], stderr=subprocess.DEVNULL)
        before = _records_written(out)
        deadline = time.monotonic() + 120
        target = before + rng.randint(1, 12)
        while _records_written(out) < target and process.poll() is None:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(30)
    assert kills >= 2
    final = _run(str(many), "--output", str(out), "--resume", "--batch-size", "2")
    assert final.returncode == 1  # the two broken files failed, earlier or now
    assert _paths_in(out) == _paths_in(clean)  # every image once, in the listing's order
    if suffix != ".csv":
        assert _read_all(out) == _read_all(clean)


def _read_all(out: Path) -> list[dict[str, object]]:
    if out.suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    return pq.read_table(out).to_pylist()


def test_ctrl_c_finishes_the_batch_and_says_how_to_resume(many: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [*CAPTIONER, "caption", "--model", "demo", str(many), "-o", str(out), "--batch-size", "4"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _records_written(out) < 4:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "--resume" in err
    text = out.read_text()
    assert text.endswith("\n")  # the batch in flight was written whole
    written = text.count("\n")
    assert written % 4 == 0 and 4 <= written < 62
    resumed = _run(str(many), "--output", str(out), "--resume", "--batch-size", "4")
    assert f"skipped {written} already recorded" in resumed.stderr
    assert len(_paths_in(out)) == 62 == len(set(_paths_in(out)))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_stays_flat_on_a_long_stream(tmp_path: Path) -> None:
    """RSS after 5,000 images within 50 MiB of RSS after 500 (the listing is not held,
    at most a few batches of pixels exist at once)."""
    picture = tmp_path / "picture.png"
    picture.write_bytes(scene_png(next(iter(SCENES))))
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5000):
        os.link(picture, folder / f"{i:05d}.png")
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [*CAPTIONER, "caption", "--model", "demo", str(folder), "-o", str(out), "-b", "16"],
        stderr=subprocess.DEVNULL,
    )
    rss: dict[int, float] = {}
    deadline = time.monotonic() + 600
    try:
        for mark in (500, 4990):
            while _records_written(out) < mark:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            rss[mark] = _rss_mib(process.pid)
    finally:
        process.kill()
        process.wait(30)
    assert rss[4990] - rss[500] < 50, rss
