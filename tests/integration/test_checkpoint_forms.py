"""Every way of naming a checkpoint loads the same model, in every command that takes one.

The forms: the checkpoint directory, its ``checkpoint`` state file, the prefix, and each of
the prefix's own files (``.index``, ``.data-00000-of-00001``, ``.meta``). Anything else is one
``Error:`` line naming the option and the accepted forms.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from captioner.assets import DEMO_MODEL_DIR
from captioner.cli import cli
from captioner.config import Settings
from captioner.loading import load_engine
from support.captions import captions_of

# The bundled checkpoint's prefix (its step changes when the demo model is retrained).
PREFIX = next((DEMO_MODEL_DIR / "checkpoint").glob("*.index")).stem
FORMS = [
    "",
    "checkpoint",
    PREFIX,
    f"{PREFIX}.index",
    f"{PREFIX}.data-00000-of-00001",
    f"{PREFIX}.meta",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo model directory, with the TF1 graph file a real prefix often has."""
    copy = tmp_path_factory.mktemp("forms") / "shapes"
    shutil.copytree(DEMO_MODEL_DIR, copy)
    assert (copy / "checkpoint" / f"{PREFIX}.index").is_file(), "the demo prefix changed"
    (copy / "checkpoint" / f"{PREFIX}.meta").write_bytes(b"a TF1 graph, never read")
    return copy


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = Image.new("RGB", (300, 220), (240, 240, 235))
    ImageDraw.Draw(image).ellipse((90, 50, 210, 170), fill=(30, 60, 210))
    path = tmp_path_factory.mktemp("scene") / "blue.png"
    image.save(path)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def checkpoint(model_dir: Path, form: str) -> str:
    return str(model_dir / "checkpoint" / form)


def test_caption_loads_every_form_alike(model_dir: Path, scene: Path) -> None:
    code, reference, err = run("caption", "--model", "demo", "--json", str(scene))
    assert code == 0, err
    assert json.loads(reference)["predictions"][0]["caption"]
    for form in FORMS:
        code, out, err = run(
            "caption", "--checkpoint", checkpoint(model_dir, form), "--json", str(scene)
        )
        assert (code, err) == (0, ""), form
        assert out == reference, form


def test_evaluate_loads_every_form_alike(model_dir: Path, scene: Path, tmp_path: Path) -> None:
    data = tmp_path / "captions.jsonl"
    data.write_text(json.dumps({"image": str(scene), "caption": "a large blue circle ."}) + "\n")
    outputs = set()
    for form in FORMS:
        args = ["evaluate", "--data", str(data), "--json", "--quiet"]
        code, out, err = run(*args, "--checkpoint", checkpoint(model_dir, form))
        assert code == 0, (form, err)
        outputs.add(out)
    assert len(outputs) == 1
    assert json.loads(outputs.pop())["count"] == 1


@pytest.mark.parametrize("form", FORMS)
def test_serve_takes_every_form(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, form: str
) -> None:
    started: dict[str, Any] = {}
    monkeypatch.setattr("captioner.api.server.open_listener", lambda host, port: None)
    monkeypatch.setattr("captioner.tf_runtime.import_tensorflow", lambda level: None)
    monkeypatch.setattr(
        "captioner.api.server.serve", lambda settings, listener: started.update(settings=settings)
    )
    code, _, err = run("serve", "--checkpoint", checkpoint(model_dir, form))
    assert code == 0, err
    settings: Settings = started["settings"]
    assert settings.checkpoint == model_dir / "checkpoint" / PREFIX
    assert settings.model_files().vocab == model_dir / "word_counts.txt"


@pytest.mark.parametrize("form", FORMS)
def test_train_init_from_takes_every_form(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, scene: Path, tmp_path: Path, form: str
) -> None:
    data = tmp_path / "captions.jsonl"
    data.write_text(json.dumps({"image": str(scene), "caption": "a large blue circle ."}) + "\n")
    configs: list[Any] = []

    def fake_training(config: Any, out: Path, **_: Any) -> None:
        configs.append(config)
        raise SystemExit(0)

    monkeypatch.setattr("captioner.training.trainer.train", fake_training)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run")]
    code, _, err = run(*args, "--init-from", checkpoint(model_dir, form))
    assert code == 0, err
    assert configs[0].init_from == model_dir / "checkpoint" / PREFIX
    assert configs[0].init_vocab == model_dir / "word_counts.txt"


def test_the_environment_takes_every_form_too(model_dir: Path, scene: Path) -> None:
    reference = captions_of(load_engine(Settings(model="demo")), [scene.read_bytes()])
    for form in (f"{PREFIX}.index", PREFIX):
        settings = Settings(checkpoint=model_dir / "checkpoint" / form)
        assert captions_of(load_engine(settings), [scene.read_bytes()]) == reference


@pytest.mark.parametrize(
    "command",
    [
        ("caption", "--checkpoint", "{bad}", "{scene}"),
        ("evaluate", "--data", "{scene}", "--checkpoint", "{bad}"),
        ("serve", "--checkpoint", "{bad}"),
        ("train", "--data", "{scene}", "--out", "{out}", "--init-from", "{bad}"),
    ],
    ids=lambda command: command[0],
)
def test_anything_else_is_one_error_line(
    model_dir: Path, scene: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    bad = model_dir / "checkpoint" / "notes.txt"
    bad.write_text("not a checkpoint")
    names = {"bad": bad, "scene": scene, "out": tmp_path / "run"}
    code, _, err = run(*(part.format(**names) for part in command))
    option = "--init-from" if command[0] == "train" else "--checkpoint"
    assert code == 1
    assert err.splitlines() == [
        f"Error: {option}: {bad}: not a checkpoint file; give a directory with a 'checkpoint' "
        "state file, a prefix such as model.ckpt-4000, or one of the prefix's .index, "
        ".data-*-of-* or .meta files"
    ]
    missing = tmp_path / "nowhere" / "model.ckpt-9"
    code, _, err = run(*(p.format(**{**names, "bad": missing}) for p in command))
    assert code == 1 and err.splitlines() == [
        f"Error: {option}: {missing}: no such checkpoint; give a directory with a 'checkpoint' "
        "state file, a prefix such as model.ckpt-4000, or one of the prefix's .index, "
        ".data-*-of-* or .meta files"
    ]
