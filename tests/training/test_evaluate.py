"""Evaluation: exact match after the training tokenisation, sacrebleu's BLEU-4, samples."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from click.testing import CliRunner
from PIL import Image

from captioner.cli import cli
from captioner.engine import Caption
from captioner.errors import DatasetError, InvalidImageError
from captioner.training.dataset import Example
from captioner.training.evaluate import evaluate


class _ScriptedCaptioner:
    """Answers with a fixed caption per image, keyed by the image's first pixel value.

    Stands in for the engine, so that the scores can be checked against hand counts.
    """

    def __init__(self, answers: dict[int, str]) -> None:
        self._answers = answers

    def preprocess(self, image: bytes) -> np.ndarray:
        if not image.startswith(b"\x89PNG"):
            raise InvalidImageError("the data is not a supported image")
        value = np.asarray(Image.open(io.BytesIO(image)))[0, 0, 0]
        return np.full([299, 299, 3], value, np.float32)

    def caption_arrays(
        self, pixels: np.ndarray, beam_size: int, max_length: int
    ) -> list[list[Caption]]:
        return [[Caption(self._answers[int(p[0, 0, 0])], -1.0)] for p in pixels]

    def check_parameters(self, beam_size: int, max_length: int) -> None:
        """Any parameters do: the answers are fixed."""


def _image(directory: Path, value: int) -> Path:
    path = directory / f"{value}.png"
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path)
    return path


def _examples(directory: Path, references: dict[int, list[str]]) -> list[Example]:
    return [
        Example(_image(directory, value), caption, f"data.jsonl:{value}")
        for value, captions in references.items()
        for caption in captions
    ]


def test_exact_match_compares_tokens_against_every_reference(tmp_path: Path) -> None:
    examples = _examples(
        tmp_path,
        {
            1: ["A red circle.", "a circle that is red ."],  # equal after tokenisation
            2: ["a blue star ."],
            3: ["a small green square to the left of a large red star ."],
            4: ["a large purple triangle ."],
        },
    )
    answers = {
        1: "a red circle .",
        2: "a blue star",  # no period: not exact
        3: "a small green square to the left of a large red star .",
        4: "a large yellow triangle .",
    }
    result = evaluate(_ScriptedCaptioner(answers), examples, sample_count=2)  # type: ignore[arg-type]
    assert result.count == 4
    assert result.exact_match == pytest.approx(0.5)
    assert [s.exact for s in result.samples] == [True, False]
    assert result.samples[0].references == ["A red circle.", "a circle that is red ."]
    assert result.samples[0].caption == "a red circle ."


def test_bleu4_is_sacrebleus_corpus_bleu_on_the_tokens(tmp_path: Path) -> None:
    references = {
        1: ["a red circle above a large blue square .", "a red circle on a blue square ."],
        2: ["a small green star to the right of a large red circle ."],
        3: ["a large yellow triangle ."],
    }
    answers = {
        1: "a red circle above a blue square .",
        2: "a small green star to the left of a large red circle .",
        3: "a large yellow triangle .",
    }
    result = evaluate(
        _ScriptedCaptioner(answers),  # type: ignore[arg-type]
        _examples(tmp_path, references),
    )
    hypotheses = [answers[k] for k in (1, 2, 3)]
    streams = [
        [references[1][0], references[2][0], references[3][0]],
        [references[1][1], None, None],
    ]
    expected = sacrebleu.corpus_bleu(hypotheses, streams, tokenize="none", force=True)
    assert result.bleu4 == pytest.approx(expected.score / 100)
    assert 0.5 < result.bleu4 < 1.0


def test_perfect_and_hopeless_captions_score_one_and_zero(tmp_path: Path) -> None:
    references = {1: ["a red circle ."], 2: ["a large blue star ."]}
    perfect = _ScriptedCaptioner({1: "a red circle .", 2: "a large blue star ."})
    hopeless = _ScriptedCaptioner({1: "green green", 2: "yellow"})
    examples = _examples(tmp_path, references)
    assert evaluate(perfect, examples).bleu4 == pytest.approx(1.0)  # type: ignore[arg-type]
    assert evaluate(hopeless, examples).bleu4 == 0.0  # type: ignore[arg-type]


def test_undecodable_images_are_skipped_or_fatal(tmp_path: Path) -> None:
    examples = _examples(tmp_path, {1: ["a red circle ."]})
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    examples.append(Example(broken, "a blue star .", "data.jsonl:9"))
    captioner = _ScriptedCaptioner({1: "a red circle ."})
    reports: list[str] = []
    result = evaluate(captioner, examples, report=reports.append)  # type: ignore[arg-type]
    assert (result.count, result.skipped, result.exact_match) == (1, 1, 1.0)
    assert "broken.png" in reports[0] and "data.jsonl:9" in reports[0]
    with pytest.raises(DatasetError, match=r"data\.jsonl:9"):
        evaluate(captioner, examples, on_error="fail")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="nothing to evaluate"):
        evaluate(captioner, [])  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_evaluate_json(shapes_data: Path) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", "--data", str(shapes_data), "--model", "demo", "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["count"] == 24
    assert 0.0 <= scores["exact_match"] <= 1.0 and 0.0 <= scores["bleu4"] <= 1.0
    assert len(scores["samples"]) == 5
    assert {"image", "caption", "references", "exact"} <= scores["samples"][0].keys()


@pytest.mark.slow
def test_cli_evaluate_text_and_missing_model(shapes_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(
        cli, ["evaluate", "--data", str(shapes_data), "--model", "demo", "-q", "--samples", "1"]
    )
    assert text.exit_code == 0, text.output
    assert "exact match:" in text.stdout and "BLEU-4:" in text.stdout
    assert text.stdout.count("model:") == 1
    missing = runner.invoke(
        cli,
        ["evaluate", "--data", str(shapes_data)],
        env={"CAPTIONER_MODEL_DIR": str(tmp_path / "nothing"), "CAPTIONER_OFFLINE": "1"},
    )
    assert missing.exit_code == 1
    assert "needs the pretrained model" in missing.output
    assert "--model demo" in missing.output
    assert "Traceback" not in missing.output


def test_without_sacrebleu_evaluate_says_which_extra_to_install(
    shapes_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics.bleu", None)  # as if not installed
    loaded: list[object] = []
    monkeypatch.setattr("captioner.cli._load_model", lambda **options: loaded.append(options))
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(shapes_data), "--model", "demo"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: evaluating needs sacrebleu (BLEU-4), in the train extra: "
        "pip install 'captioner[train]'\n"
    )
    assert loaded == []  # said before any model is loaded or downloaded
