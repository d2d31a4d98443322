"""``captioner caption --server``: a collection captioned by running servers, as real processes.

The servers are real ``captioner serve --model demo`` processes with a queue of one, so
that the CLI's eight requests in flight meet 503s; the CLI must retry them and write the
same records the model gives in process, every image once, without loading TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from captioner.config import Settings
from captioner.engine import Captioner
from captioner.loading import load_engine
from captioner.pipeline import caption_stream
from captioner.sources import iter_sources
from support.api_helpers import demo_server, free_port
from web.scenes import SCENES, scene_png

pytestmark = pytest.mark.slow

CAPTIONER = [sys.executable, "-m", "captioner"]


def _caption(*args: str, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTIONER_")}
    return subprocess.run(
        [sys.executable, *python, "-m", "captioner", "caption", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 scenes and one broken PNG, in a folder."""
    folder = tmp_path_factory.mktemp("served") / "photos"
    folder.mkdir()
    names = list(SCENES)
    for i in range(30):
        (folder / f"{i:02d}.png").write_bytes(scene_png(names[i % len(names)]))
    (folder / "15-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A demo server that queues one image and batches one: concurrency meets 503s."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with demo_server(log, "--max-queue-size", "1", "--max-batch-size", "1") as url:
        yield url, log


@pytest.fixture(scope="module")
def in_process(photos: Path) -> list[dict[str, object]]:
    """The records the model gives in this process, in the listing's order."""
    engine: Captioner = load_engine(Settings(model="demo"))
    return [r.to_record() for r in caption_stream(engine, iter_sources([str(photos)]))]


def _records(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _agree(served: list[dict[str, object]], local: list[dict[str, object]]) -> None:
    """Same paths in the same order, same captions; probabilities to float tolerance (the
    server's JSON and the in-process floats take different roads)."""
    assert [r["path"] for r in served] == [r["path"] for r in local]
    for got, want in zip(served, local, strict=True):
        assert (got["status"], got["error"] is None) == (want["status"], want["error"] is None)
        got_captions = got["captions"]
        want_captions = want["captions"]
        assert isinstance(got_captions, list) and isinstance(want_captions, list)
        assert [c["caption"] for c in got_captions] == [c["caption"] for c in want_captions]
        assert [c["logprob"] for c in got_captions] == pytest.approx(
            [c["logprob"] for c in want_captions], abs=1e-5
        )


def test_overloaded_server_retried_to_the_same_records_without_tensorflow(
    server: tuple[str, Path],
    photos: Path,
    in_process: list[dict[str, object]],
    tmp_path: Path,
) -> None:
    url, log = server
    out = tmp_path / "out.jsonl"
    run = _caption(
        str(photos), "--server", url, "-o", str(out), "--concurrency", "8",
        python=("-X", "importtime"),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # the broken PNG, and only it
    assert "captioned 30, failed 1" in run.stderr
    _agree(_records(out), in_process)
    (broken,) = [r for r in _records(out) if r["status"] == "error"]
    assert str(broken["path"]).endswith("15-broken.png")
    assert "not a supported image" in str(broken["error"]) or "corrupt" in str(broken["error"])
    assert '"status": 503' in log.read_text(), "the server was never overloaded: no retries"
    imported = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert imported, "no -X importtime output"
    assert not [line for line in imported if "tensorflow" in line], "TensorFlow was imported"


def test_an_unreachable_server_stops_the_run_and_resume_finishes_it(
    server: tuple[str, Path],
    photos: Path,
    in_process: list[dict[str, object]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    nobody = f"http://127.0.0.1:{free_port()}"
    stopped = _caption(str(photos), "--server", nobody, "-o", str(out))
    assert stopped.returncode == 1
    assert "--resume" in stopped.stderr and "no connection" in stopped.stderr
    # No error rows for images the server never saw: they would be skipped on resume.
    assert not out.exists() or _records(out) == []

    finished = _caption(str(photos), "--server", server[0], "-o", str(out), "--resume")
    assert finished.returncode == 1, finished.stderr
    _agree(_records(out), in_process)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://127.0.0.1:9", "--precision", "bf16"], "servers choose their model"),
        (["--concurrency", "3"], "--concurrency go(es) with --server"),
        (["--actors", "2"], "--actors go(es) with --ray"),
        (["--server", "http://127.0.0.1:9", "--ray"], "exclude each other"),
        (["--ray", "--output", "dest", "second-source"], "one SOURCE"),
        (["--ray"], "--output DIR"),
    ],
)
def test_each_way_of_running_takes_its_own_options(
    photos: Path, args: list[str], message: str
) -> None:
    run = _caption(str(photos), *args)
    assert run.returncode == 2
    assert message in run.stderr
