"""The client against a real ``captioner serve --model demo`` process on 127.0.0.1.

The captions must be the engine's own for the same pictures, the server's refusals must
arrive as typed errors with its message and request id, and a server whose queue holds
one request must still caption every image of a crowded run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from captioner.client import BadImageError, Client, ImageResult, InvalidParameterError
from captioner.config import Settings
from captioner.engine import Captioner
from captioner.loading import load_engine
from client.calls import open_client
from client.conftest import Server
from support.api_helpers import demo_server
from support.captions import captions_of
from web.scenes import SCENES, scene_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> Captioner:
    """The demo model in this process: what the server's captions must equal."""
    return load_engine(Settings(model="demo"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for name in SCENES:
        path = folder / name
        path.write_bytes(scene_png(name))
        paths.append(path)
    return paths


def access_lines(server: Server) -> list[dict[str, object]]:
    return [
        json.loads(line.split("captioner.access ", 1)[1])
        for line in server.log.read_text().splitlines()
        if "captioner.access " in line
    ]


def assert_engines_captions(
    result: ImageResult, image: bytes, engine: Captioner, beam_size: int = 3
) -> None:
    assert result.ok, result.error
    (expected,) = captions_of(engine, [image], beam_size=beam_size)  # the server's max_length
    assert [c.text for c in result.captions] == [c.text for c in expected]
    np.testing.assert_allclose(
        [c.logprob for c in result.captions], [c.logprob for c in expected], rtol=1e-4
    )


def test_captions_are_the_engines_with_the_model_and_request_id(
    kind: str, demo: Server, engine: Captioner, scenes: list[Path]
) -> None:
    with open_client(kind, demo.url) as client:
        results = [client.caption(path) for path in scenes]
        assert client.ready() is True
        metadata = client.metadata()
    for path, result in zip(scenes, results, strict=True):
        assert_engines_captions(result.to_image_result(str(path)), path.read_bytes(), engine)
        assert result.server == demo.url
        assert result.model == metadata and metadata.id == "captioner-demo"
    # Each request id is the one the server logged for that request.
    logged = {line["request_id"] for line in access_lines(demo) if line["status"] == 200}
    assert {result.request_id for result in results} <= logged


def test_a_bad_image_is_bad_image_error_with_the_servers_message_and_request_id(
    kind: str, demo: Server
) -> None:
    with open_client(kind, demo.url) as client, pytest.raises(BadImageError) as caught:
        client.caption(b"this is not an image")
    error = caught.value
    assert error.status == 400 and error.attempts == 1
    assert re.fullmatch(r"[0-9a-f]{32}", error.request_id or "")
    (line,) = [line for line in access_lines(demo) if line["request_id"] == error.request_id]
    assert line["status"] == 400 and line["reason"] == "invalid_image"
    assert "not a supported image" in error.message


def test_a_parameter_out_of_bounds_ends_a_run(kind: str, demo: Server, scenes: list[Path]) -> None:
    with open_client(kind, demo.url) as client, pytest.raises(InvalidParameterError) as caught:
        client.caption_many(scenes, beam_size=11)
    assert caught.value.errors == {"beam_size": "beam_size must be between 1 and 10, got 11"}


def test_caption_many_gives_every_source_its_own_result(
    kind: str, demo: Server, engine: Captioner, scenes: list[Path], tmp_path: Path
) -> None:
    corrupt = scene_png(next(iter(SCENES)))[:300]  # a truncated PNG
    items: list[object] = [
        *scenes,
        str(tmp_path / "missing.png"),
        str(tmp_path),  # a directory
        ("corrupt.png", corrupt),
        *[(f"named-{p.name}", p.read_bytes()) for p in scenes],
    ]
    with open_client(kind, demo.url) as client:
        ordered = client.caption_many(items, concurrency=3, ordered=True, beam_size=2)
        completed = client.caption_many(items, concurrency=3, beam_size=2)
        with pytest.raises(BadImageError) as corrupt_error:
            client.caption(corrupt)
    names = [str(item) if not isinstance(item, tuple) else item[0] for item in items]
    assert [r.source for r in ordered] == names
    assert sorted(r.source for r in completed) == sorted(names)
    assert {r.source: r for r in completed} == {r.source: r for r in ordered}
    by_source = {r.source: r for r in ordered}
    assert by_source[str(tmp_path / "missing.png")].error == "No such file or directory"
    assert by_source[str(tmp_path)].error == "Is a directory"
    assert by_source["corrupt.png"].error == corrupt_error.value.message  # the server's words
    for path in scenes:
        for source in (str(path), f"named-{path.name}"):
            assert_engines_captions(by_source[source], path.read_bytes(), engine, beam_size=2)


def test_a_tiny_queue_refuses_many_requests_yet_every_image_is_captioned(
    tmp_path: Path, scenes: list[Path], engine: Captioner
) -> None:
    log = tmp_path / "serve.log"
    with demo_server(log, "--max-queue-size", "1", "--max-batch-size", "1") as url:
        server = Server(url, log)
        items = [(f"{i}-{path.name}", path.read_bytes()) for i in range(12) for path in scenes]
        with Client(url) as client:
            results = list(client.caption_many(items, concurrency=12))
        refused = Counter(line["reason"] for line in access_lines(server) if line["status"] == 503)
    assert len(results) == len(items) and [r.error for r in results if not r.ok] == []
    assert refused["queue_full"] > 0  # the server did shed load, and the retries absorbed it
    pictures = {path.name: path.read_bytes() for path in scenes}
    for result in results:
        assert_engines_captions(result, pictures[result.source.split("-", 1)[1]], engine)
