"""``captioner caption``: readable and JSON output, per-image errors, missing model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from captioner.assets import ModelFiles
from captioner.cli import cli
from captioner.engine import Captioner
from captioner.errors import InvalidRequestError
from support.captions import captions_of


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, fmt in enumerate(["PNG", "JPEG", "BMP"]):
        pixels = np.full((80 + i * 20, 100, 3), (40 * i, 200 - 50 * i, 90), np.uint8)
        path = tmp_path / f"img{i}.{fmt.lower()}"
        Image.fromarray(pixels).save(path, fmt)
        paths.append(path)
    return paths


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_lines_match_the_engine(tiny_model: ModelFiles, images: list[Path]) -> None:
    code, out, _ = _run(
        "caption",
        "--checkpoint",
        str(tiny_model.checkpoint),
        "--vocab",
        str(tiny_model.vocab),
        "--json",
        "--beam-size",
        "2",
        "--max-length",
        "7",
        *map(str, images),
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    engine = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    expected = captions_of(engine, [p.read_bytes() for p in images], beam_size=2, max_length=7)
    for line, captions in zip(lines, expected, strict=True):
        predictions = line["predictions"]
        assert [p["index"] for p in predictions] == [str(i) for i in range(len(captions))]
        assert [p["caption"] for p in predictions] == [c.text for c in captions]
        np.testing.assert_allclose(
            [p["logprob"] for p in predictions], [c.logprob for c in captions], rtol=1e-6
        )
        np.testing.assert_allclose(
            [p["probability"] for p in predictions], [c.probability for c in captions], rtol=1e-6
        )


def test_precision_comes_from_the_flag_or_the_environment(
    tiny_model: ModelFiles, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    command = ["caption", "--checkpoint", str(tiny_model.checkpoint), "--json"]
    bf16 = Captioner.load(tiny_model.checkpoint, tiny_model.vocab, precision="bf16")
    expected = [
        [(c.text, c.logprob) for c in captions]
        for captions in captions_of(bf16, [p.read_bytes() for p in images])
    ]

    def captions(out: str) -> list[list[tuple[str, float]]]:
        lines = [json.loads(line) for line in out.splitlines()]
        return [[(p["caption"], p["logprob"]) for p in line["predictions"]] for line in lines]

    code, flag_out, _ = _run(*command, "--precision", "bf16", *map(str, images))
    assert code == 0 and captions(flag_out) == expected
    monkeypatch.setenv("CAPTIONER_PRECISION", "bf16")
    code, env_out, _ = _run(*command, *map(str, images))
    assert code == 0 and captions(env_out) == expected
    code, fp32_out, _ = _run(*command, "--precision", "fp32", *map(str, images))
    assert code == 0 and captions(fp32_out) != expected  # the flag wins over the environment
    code, _, err = _run(*command, "--precision", "fp16", str(images[0]))
    assert code == 2 and "'fp16' is not one of 'fp32', 'bf16', 'auto'" in err


def test_readable_output_and_vocab_found_next_to_the_model(
    tiny_model: ModelFiles, images: list[Path]
) -> None:
    code, out, _ = _run("caption", "--checkpoint", str(tiny_model.checkpoint), str(images[0]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(images[0])
    assert lines[1].startswith("  1. p=") and "logprob=" in lines[1]
    assert 2 <= len(lines) <= 4


def test_a_bad_image_is_reported_and_the_others_still_captioned(
    tiny_model: ModelFiles, images: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not really a jpeg")
    missing = tmp_path / "missing.png"
    code, out, _ = _run(
        "caption",
        "--checkpoint",
        str(tiny_model.checkpoint),
        "--json",
        "--batch-size",
        "2",
        str(images[0]),
        str(bad),
        str(missing),
        str(images[1]),
    )
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [
        str(images[0]),
        str(bad),
        str(missing),
        str(images[1]),
    ]
    assert "not a supported image" in lines[1]["error"]
    assert "No such file" in lines[2]["error"]
    assert lines[0]["predictions"] and lines[3]["predictions"]

    code, out, err = _run("caption", "--checkpoint", str(tiny_model.checkpoint), str(bad))
    assert code == 1 and out == ""
    assert f"{bad}: error: the data is not a supported image" in err


def test_no_model_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: list[Path]
) -> None:
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CAPTIONER_OFFLINE", "1")
    code, _, err = _run("caption", str(images[0]))
    assert code == 1
    assert "captioner download" in err and "--checkpoint" in err
    assert "Traceback" not in err


def test_broken_checkpoint_is_one_clear_line(tmp_path: Path, images: list[Path]) -> None:
    (tmp_path / "checkpoint").mkdir()
    code, _, err = _run("caption", "--checkpoint", str(tmp_path / "checkpoint"), str(images[0]))
    assert code == 1
    assert err.startswith("Error: ") and "no 'checkpoint' state file" in err


def test_jpeg_captions_are_byte_identical_whatever_the_name(
    tiny_model: ModelFiles, images: list[Path], tmp_path: Path
) -> None:
    renamed = tmp_path / "photo.png"  # a JPEG under a PNG name
    renamed.write_bytes(images[1].read_bytes())
    _, out1, _ = _run(
        "caption", "--checkpoint", str(tiny_model.checkpoint), "--json", str(images[1])
    )
    _, out2, _ = _run("caption", "--checkpoint", str(tiny_model.checkpoint), "--json", str(renamed))
    assert json.loads(out1)["predictions"] == json.loads(out2)["predictions"]


def test_png_bytes_in_memory_roundtrip(tiny_model: ModelFiles) -> None:
    # The engine's caption() takes bytes as the server will hand them over.
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buffer, "PNG")
    engine = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    (captions,) = captions_of(engine, [buffer.getvalue()])
    assert 1 <= len(captions) <= 3


def test_a_missing_model_is_downloaded_first_as_the_server_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images: list[Path]
) -> None:
    import hashlib

    from captioner.testing import write_random_checkpoint
    from support.http_fixtures import AssetServer, Route, tar_gz

    release = write_random_checkpoint(tmp_path / "release", prefix_name="model2.ckpt-2000000")
    members = {
        f"checkpoint/{path.name}": path.read_bytes()
        for path in release.checkpoint.iterdir()
        if path.is_file()
    }
    vocab = release.vocab.read_bytes()
    server = AssetServer()
    server.routes["/assets.tar.gz"] = Route(tar_gz(members))
    server.routes["/word_counts.txt"] = Route(vocab)
    try:
        model_dir = tmp_path / "cache" / "im2txt"
        digests = {name: hashlib.sha512(data).hexdigest() for name, data in members.items()}
        for key, value in {
            "MODEL_DIR": str(model_dir),
            "DOWNLOAD_URLS": server.url("/assets.tar.gz"),
            "VOCAB_URL": server.url("/word_counts.txt"),
            "ASSET_SHA512": json.dumps(digests),
            "VOCAB_SHA256": hashlib.sha256(vocab).hexdigest(),
        }.items():
            monkeypatch.setenv(f"CAPTIONER_{key}", value)
        code, out, err = _run("caption", "--json", str(images[0]))
    finally:
        server.stop()
    assert code == 0, err
    assert json.loads(out)["predictions"]
    assert server.paths_requested() == ["/word_counts.txt", "/assets.tar.gz"]
    assert sorted(p.name for p in (model_dir / "checkpoint").iterdir()) == sorted(
        name.split("/")[1] for name in members
    )
    expected = captions_of(
        Captioner.load(release.checkpoint, release.vocab), [images[0].read_bytes()]
    )
    assert json.loads(out)["predictions"][0]["caption"] == expected[0][0].text


def test_the_engine_refuses_a_max_length_with_no_room_for_a_word(tiny_model: ModelFiles) -> None:
    engine = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    with pytest.raises(InvalidRequestError) as caught:
        engine.caption_arrays(np.zeros([1, 299, 299, 3], np.float32), 3, 2)
    assert str(caught.value) == "max_length must be at least 3 (<S>, a word, </S>), got 2"
    assert caught.value.field == "max_length"
