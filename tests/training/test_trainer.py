"""Training: the loss goes down, the checkpoint is the engine's layout, runs are reproducible.

One small run (both phases, a few steps, a tiny model on 24 generated scenes) is shared
by most tests; a second run, interrupted in phase 2 and resumed, must end bit-identical
to it, which checks determinism and ``--resume`` at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from captioner.api.app import create_app
from captioner.checkpoint import load_checkpoint
from captioner.cli import cli
from captioner.config import Settings
from captioner.engine import Captioner
from captioner.errors import CheckpointError, DatasetError
from captioner.preprocessing import preprocess_image
from captioner.training.config import TrainingConfig
from captioner.training.dataset import read_jsonl
from captioner.training.inputs import ImageStore, encode_captions
from captioner.training.model import ModelSize, ShowAndTell
from captioner.training.run_dir import CONFIG_FILENAME, STATE_FILENAME
from captioner.training.trainer import TrainingResult, train
from captioner.vocabulary import Vocabulary
from support.api_helpers import serving
from support.captions import captions_of

pytestmark = pytest.mark.slow


class _Interrupted(Exception):
    """Stands in for Ctrl-C in the middle of a run."""


def _config(data: Path) -> TrainingConfig:
    return TrainingConfig(
        data=data,
        held_out_fraction=0.25,
        min_word_count=1,
        embedding_size=16,
        lstm_units=16,
        depth_multiplier=0.05,
        min_depth=8,
        decoder_steps=39,
        full_steps=6,
        batch_size=8,
        learning_rate=0.05,
        full_learning_rate=1e-3,
        warmup_steps=2,
        aux_weight=1.0,
        checkpoint_every=3,
        seed=7,
    )


@pytest.fixture(scope="module")
def trained(shapes_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    out = tmp_path_factory.mktemp("run")
    return train(_config(shapes_data), out, progress=False, report=lambda _: None)


def _mean_loss(model: ShowAndTell, data: Path, vocab: Path) -> float:
    """Mean loss per word over every caption of ``data``, encoder in inference mode."""
    examples = read_jsonl(data).examples
    vocabulary = Vocabulary.from_file(vocab)
    paths = sorted({ex.image_path for ex in examples})
    captions = encode_captions(examples, {p: i for i, p in enumerate(paths)}, vocabulary)
    batch = captions.batch(np.arange(len(captions)))
    pixels = np.stack([preprocess_image(p.read_bytes(), max_pixels=10**7) for p in paths])
    features = model.encode(pixels[batch.image_index], training=False)
    total, count = model.caption_loss(features, batch.words, batch.mask)
    return float(total) / float(count)


def test_training_lowers_the_loss(trained: TrainingResult, shapes_data: Path) -> None:
    config = _config(shapes_data)
    size = ModelSize(
        vocab_rows=len(Vocabulary.from_file(trained.vocab)),
        embedding_size=config.embedding_size,
        lstm_units=config.lstm_units,
        depth_multiplier=config.depth_multiplier,
        min_depth=config.min_depth,
    )
    # The same seed gives the run's starting point.
    before = _mean_loss(ShowAndTell.initialize(size, config.seed), shapes_data, trained.vocab)
    after = _mean_loss(
        ShowAndTell.from_weights(load_checkpoint(trained.checkpoint)), shapes_data, trained.vocab
    )
    assert before > 2.5  # about ln(vocabulary size): nothing learnt yet
    assert after < before - 1.0
    assert trained.held_out_loss is not None and trained.held_out_loss < before - 0.5
    assert np.isfinite(trained.train_loss)


def test_run_directory_has_the_model_layout(trained: TrainingResult) -> None:
    out = trained.checkpoint.parent.parent
    assert trained.global_step == 45
    assert trained.checkpoint == out / "checkpoint" / "model.ckpt-45"
    state = (out / "checkpoint" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "model.ckpt-45"' in state
    # Older checkpoints are removed once a newer one is complete.
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "checkpoint",
        "model.ckpt-45.data-00000-of-00001",
        "model.ckpt-45.index",
    ]
    weights = load_checkpoint(out / "checkpoint")
    assert weights.global_step == 45
    assert (weights.embedding_size, weights.lstm_units) == (16, 16)
    # 0.05 x 32 channels would be 1: the floor of 8 applies.
    assert weights.convs["Conv2d_1a_3x3"].weights.shape == (3, 3, 3, 8)
    # BN statistics moved away from their initial values in phase 2.
    assert not np.allclose(weights.convs["Conv2d_1a_3x3"].moving_variance, 1.0)
    saved = json.loads((out / CONFIG_FILENAME).read_text())
    assert saved["seed"] == 7 and saved["full_steps"] == 6


def test_engine_loads_and_captions_the_trained_model(
    trained: TrainingResult, shapes_data: Path
) -> None:
    captioner = Captioner.load(trained.checkpoint.parent, trained.vocab)
    vocabulary = Vocabulary.from_file(trained.vocab)
    image = next((shapes_data.parent / "images").iterdir()).read_bytes()
    captions = captions_of(captioner, [image], beam_size=2, max_length=8)[0]
    assert captions
    assert captioner.info.vocab_rows == len(vocabulary)
    assert captioner.info.global_step == 45
    for caption in captions:
        assert all(vocabulary.word_to_id(w) != vocabulary.unk_id for w in caption.text.split())


def test_engine_features_equal_the_training_models_inference_mode(
    trained: TrainingResult, shapes_data: Path
) -> None:
    # The folded-BN engine and the trainer's unfolded BN must compute the same encoder.
    captioner = Captioner.load(trained.checkpoint.parent, trained.vocab)
    model = ShowAndTell.from_weights(load_checkpoint(trained.checkpoint))
    image = next((shapes_data.parent / "images").iterdir()).read_bytes()
    pixels = captioner.preprocess(image)[np.newaxis]
    expected = model.encode(pixels, training=False).numpy()
    np.testing.assert_allclose(captioner.encode(pixels), expected, rtol=1e-4, atol=1e-5)


def test_server_serves_the_trained_model(
    trained: TrainingResult, shapes_data: Path, tmp_path: Path
) -> None:
    settings = Settings(
        checkpoint=trained.checkpoint.parent,
        vocab=trained.vocab,
        offline=True,
        model_dir=tmp_path / "no-model",
    )
    image = next((shapes_data.parent / "images").iterdir()).read_bytes()

    async def ask() -> tuple[httpx.Response, dict[str, str]]:
        async with serving(create_app(settings)) as client:
            response = await client.post("/model/predict", files={"image": ("scene", image)})
            metadata = (await client.get("/model/metadata")).json()
        return response, metadata

    response, metadata = asyncio.run(ask())
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions and predictions[0]["index"] == "0"
    assert "step 45" in metadata["description"]


def test_resumed_run_ends_identical_to_an_uninterrupted_one(
    trained: TrainingResult, shapes_data: Path, tmp_path: Path
) -> None:
    def stop_in_phase_2(message: str) -> None:
        if message.startswith("phase 2 step 3"):
            raise _Interrupted

    out = tmp_path / "run"
    with pytest.raises(_Interrupted):
        train(_config(shapes_data), out, progress=False, report=stop_in_phase_2)
    with np.load(out / STATE_FILENAME) as state:
        # The auxiliary predictor is not in the checkpoint: the state carries it.
        assert "auxiliary_0" in state.files
    assert load_checkpoint(out / "checkpoint").global_step == 42

    resumed = train(_config(shapes_data), out, resume=True, progress=False, report=print)
    assert resumed.global_step == trained.global_step
    expected = ShowAndTell.from_weights(load_checkpoint(trained.checkpoint)).tensors()
    actual = ShowAndTell.from_weights(load_checkpoint(resumed.checkpoint)).tensors()
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert resumed.held_out_loss == pytest.approx(trained.held_out_loss, rel=1e-6)


def test_resume_without_state_is_a_clear_error(shapes_data: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_config(shapes_data), tmp_path, resume=True, progress=False)


def test_config_round_trips_through_json(shapes_data: Path) -> None:
    config = dataclasses.replace(_config(shapes_data), images=shapes_data.parent)
    assert TrainingConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"decoder_steps": 0, "full_steps": 0}, "some steps"),
        ({"learning_rate": 0.0}, "learning rates"),
        ({"init_vocab": Path("w.txt")}, "init_vocab goes with init_from"),
    ],
)
def test_config_refuses_bad_values(shapes_data: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(_config(shapes_data), **change)


# --- bad data ------------------------------------------------------------------------


def test_undecodable_image_is_skipped_or_fatal(shapes_data: Path, tmp_path: Path) -> None:
    # A truncated JPEG passes Pillow's header check; only decoding finds it.
    good = read_jsonl(shapes_data).examples[:3]
    broken_path = tmp_path / "broken.jpg"
    jpeg = next(p for p in (shapes_data.parent / "images").glob("*.jpg"))
    broken_path.write_bytes(jpeg.read_bytes()[:600])
    broken = dataclasses.replace(good[0], image_path=broken_path, source="data.jsonl:4")
    reports: list[str] = []
    options = {"cache_bytes": 10**9, "max_pixels": 10**7, "progress": False}

    store = ImageStore.prepare([*good, broken], on_error="skip", report=reports.append, **options)
    assert store.paths == [ex.image_path for ex in good]
    assert store.pixels(np.array([2, 0])).shape == (2, 299, 299, 3)
    assert len(reports) == 1
    assert "broken.jpg" in reports[0] and "data.jsonl:4" in reports[0]

    with pytest.raises(DatasetError, match=r"broken\.jpg.*data\.jsonl:4"):
        ImageStore.prepare([*good, broken], on_error="fail", report=reports.append, **options)


def test_uncached_store_gives_the_same_pixels(shapes_data: Path) -> None:
    examples = read_jsonl(shapes_data).examples[:2]
    options = {"on_error": "fail", "max_pixels": 10**7, "progress": False, "report": print}
    cached = ImageStore.prepare(examples, cache_bytes=10**9, **options)
    uncached = ImageStore.prepare(examples, cache_bytes=0, **options)
    indices = np.array([1, 0])
    # The cache keeps float16: within half a float16 step of the exact preprocessing.
    np.testing.assert_allclose(
        cached.pixels(indices), uncached.pixels(indices), rtol=0, atol=2**-11
    )


# --- the command line ----------------------------------------------------------------


def _bad_dataset(shapes_data: Path, tmp_path: Path) -> Path:
    """The generated scenes plus one bad line of each kind, in a folder of its own."""
    shutil.copytree(shapes_data.parent / "images", tmp_path / "images")
    lines = shapes_data.read_text().splitlines()
    truncated = next(p.name for p in (tmp_path / "images").glob("*.jpg"))
    (tmp_path / "images" / "cut.jpg").write_bytes(
        (tmp_path / "images" / truncated).read_bytes()[:600]
    )
    bad = [
        '{"image": "images/missing.png", "caption": "a red circle ."}',
        '{"image": "images/000000.png", "caption": "  "}',
        '{"image": "images/000001.png", "caption": ',
        '{"image": "images/cut.jpg", "caption": "a blue star ."}',
    ]
    data = tmp_path / "captions.jsonl"
    data.write_text("\n".join(lines[:2] + bad + lines[2:]) + "\n")
    return data


def test_cli_trains_reports_bad_data_and_the_model_captions(
    shapes_data: Path, tmp_path: Path
) -> None:
    data = _bad_dataset(shapes_data, tmp_path / "data")
    out = tmp_path / "model"
    runner = CliRunner()
    args = ["train", "--data", str(data), "--out", str(out), "--decoder-steps", "3"]
    args += ["--batch-size", "4", "--embedding-size", "8", "--lstm-units", "8"]
    args += ["--depth-multiplier", "0.05", "--min-depth", "8", "--min-word-count", "1", "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"captioner serve --checkpoint {out / 'checkpoint'}" in result.stdout
    for line, problem in [(3, "image not found"), (4, "empty caption"), (5, "bad JSON")]:
        assert f"captions.jsonl:{line}: {problem}" in result.stderr
    assert "cut.jpg" in result.stderr and "captions.jsonl:6" in result.stderr
    assert "Traceback" not in result.output
    # A new model and phase 1 alone: the encoder stays random, and the command says so.
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "--init-from" in warning and "--full-steps" in warning

    image = str(data.parent / json.loads(data.read_text().splitlines()[0])["image"])
    captioned = runner.invoke(cli, ["caption", "--checkpoint", str(out / "checkpoint"), image])
    assert captioned.exit_code == 0, captioned.output
    assert captioned.stdout.startswith(image)

    again = runner.invoke(cli, ["train", "--data", str(data), "--out", str(out)])
    assert again.exit_code == 2 and "already holds a training run" in again.output
    resumed = runner.invoke(cli, ["train", "--out", str(out), "--resume", "--seed", "3"])
    assert resumed.exit_code == 2 and "drop --seed" in resumed.output


def test_cli_bad_data_can_be_fatal(shapes_data: Path, tmp_path: Path) -> None:
    data = _bad_dataset(shapes_data, tmp_path / "data")
    result = CliRunner().invoke(
        cli, ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--on-error", "fail"]
    )
    assert result.exit_code == 1
    assert "captions.jsonl:3: image not found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m" / CONFIG_FILENAME).exists()
    assert not (tmp_path / "m" / "checkpoint").exists()


def test_cli_init_from_keeps_the_vocabulary(
    trained: TrainingResult, shapes_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tuned"
    model_dir = trained.checkpoint.parent.parent
    args = ["train", "--data", str(shapes_data), "--out", str(out), "--init-from"]
    args += [str(model_dir), "--decoder-steps", "2", "--batch-size", "4", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output  # a trained encoder to start from
    assert (out / "word_counts.txt").read_bytes() == trained.vocab.read_bytes()
    tuned = load_checkpoint(out / "checkpoint")
    assert tuned.global_step == trained.global_step + 2
    assert tuned.lstm_units == 16


def test_cli_trains_on_coco_captions(shapes_data: Path, tmp_path: Path) -> None:
    # The generated scenes rewritten as a COCO captions file (two captions per image).
    lines = [json.loads(line) for line in shapes_data.read_text().splitlines()]
    images = [{"id": i, "file_name": Path(x["image"]).name} for i, x in enumerate(lines)]
    annotations = [
        {"id": 2 * i + k, "image_id": i, "caption": caption}
        for i, x in enumerate(lines)
        for k, caption in enumerate([x["caption"], x["caption"].upper().replace(" .", ".")])
    ]
    coco = tmp_path / "captions_train.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    out = tmp_path / "model"
    args = ["train", "--data", str(coco), "--images", str(shapes_data.parent / "images")]
    args += ["--out", str(out), "--decoder-steps", "2", "--batch-size", "4"]
    args += ["--embedding-size", "8", "--lstm-units", "8", "--depth-multiplier", "0.05"]
    args += ["--min-depth", "8", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "46 training captions of 23 images" in result.stderr
    # Upper-case captions with a glued period tokenise to the same words: counts double.
    counts = dict(line.split() for line in (out / "word_counts.txt").read_text().splitlines())
    assert int(counts["<S>"]) == 46 and int(counts["."]) == 46
    assert Captioner.load(out / "checkpoint", out / "word_counts.txt").info.global_step == 2
