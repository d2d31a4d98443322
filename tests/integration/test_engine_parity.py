"""The engine against the slow NumPy reference, and batched against single calls.

Random weights give nonsense captions, so these tests assert exact agreement between code
paths: the TensorFlow graph (folded batch norm, in-graph beam search, float32) against the
float64 NumPy maths with the original Python beam search, within 1e-4 relative.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.assets import ModelFiles
from captioner.checkpoint import load_checkpoint
from captioner.engine import Captioner
from captioner.testing import write_random_checkpoint
from support.captions import captions_of
from support.reference import NumpyModel, as_pairs, reference_captions


def _images(count: int, seed: int = 7) -> list[bytes]:
    """Distinct PNGs: coloured blocks on noise, varied sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h, w = 120 + 17 * i, 160 + 9 * i
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[: h // 2, : w // (i + 2)] = rng.integers(0, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def _assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [text for text, _ in got] == [text for text, _ in want]
    np.testing.assert_allclose([lp for _, lp in got], [lp for _, lp in want], rtol=1e-4)


@pytest.fixture(scope="module")
def ending_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A tiny model that likes the end word, so beams complete at different steps."""
    return write_random_checkpoint(
        tmp_path_factory.mktemp("ending"), seed=3, end_bias=3.0, lstm_naming=2
    )


@pytest.mark.parametrize("model_name", ["tiny_model", "ending_model"])
@pytest.mark.parametrize(("beam_size", "max_length"), [(3, 20), (1, 20), (4, 6), (2, 3)])
def test_engine_matches_numpy_reference(
    request: pytest.FixtureRequest, model_name: str, beam_size: int, max_length: int
) -> None:
    files: ModelFiles = request.getfixturevalue(model_name)
    captioner = Captioner.load(files.checkpoint, files.vocab)
    images = _images(3)
    pixels = np.stack([captioner.preprocess(image) for image in images])
    reference = NumpyModel(files.checkpoint)
    features = reference.encode(pixels)
    # The encoder alone: the folded-BN TF graph against unfolded float64 NumPy.
    np.testing.assert_allclose(captioner.encode(pixels), features, rtol=1e-4, atol=1e-5)

    got = captions_of(captioner, images, beam_size=beam_size, max_length=max_length)
    want = reference_captions(reference, features, captioner.vocabulary, beam_size, max_length)
    for g, w in zip(got, want, strict=True):
        assert 1 <= len(g) <= beam_size
        _assert_same(as_pairs(g), w)


def test_complete_captions_end_and_partials_fill_the_length(ending_model: ModelFiles) -> None:
    captioner = Captioner.load(ending_model.checkpoint, ending_model.vocab)
    (captions,) = captions_of(captioner, _images(1), beam_size=3, max_length=20)
    # With a strong end word every result is complete: shorter than the 18-word partials.
    assert all(len(c.text.split()) < 18 for c in captions)
    assert [c.logprob for c in captions] == sorted((c.logprob for c in captions), reverse=True)
    for c in captions:
        assert c.probability == pytest.approx(np.exp(c.logprob))


@pytest.mark.parametrize("model_name", ["tiny_model", "ending_model", "full_model"])
def test_batched_equals_single(request: pytest.FixtureRequest, model_name: str) -> None:
    files: ModelFiles = request.getfixturevalue(model_name)
    captioner = Captioner.load(files.checkpoint, files.vocab)
    images = _images(5, seed=11)
    batched = captions_of(captioner, images)
    single = [captions_of(captioner, [image])[0] for image in images]
    for b, s in zip(batched, single, strict=True):
        assert [c.text for c in b] == [c.text for c in s]
        np.testing.assert_allclose(
            [c.logprob for c in b], [c.logprob for c in s], rtol=1e-6, atol=0
        )
    # Different images give different results (the batch did not mix them up).
    assert len({tuple(c.logprob for c in r) for r in batched}) == len(images)


def test_the_two_stages_make_the_whole(tiny_model: ModelFiles) -> None:
    captioner = Captioner.load(tiny_model.checkpoint, tiny_model.vocab)
    pixels = np.stack([captioner.preprocess(image) for image in _images(3, seed=2)])
    whole = captioner.caption_arrays(pixels, beam_size=2, max_length=9)
    assert captioner.search(captioner.encode(pixels), beam_size=2, max_length=9) == whole


def test_full_size_checkpoint_layout_and_decoder_parity(full_model: ModelFiles) -> None:
    started = time.perf_counter()
    captioner = Captioner.load(full_model.checkpoint, full_model.vocab)
    load_s = time.perf_counter() - started
    assert load_s < 30, f"loading the full-size checkpoint took {load_s:.1f} s"

    weights = load_checkpoint(full_model.checkpoint)
    assert len(weights.convs) == 94
    assert (weights.feature_size, weights.embedding_size, weights.lstm_units) == (2048, 512, 512)
    assert weights.vocab_rows == 12000 and len(captioner.vocabulary) == 11520
    assert not captioner.info.is_pretrained_im2txt  # random values, step 1234

    # Decoder and beam search on the real widths against NumPy, from the TF features.
    images = _images(2, seed=5)
    pixels = np.stack([captioner.preprocess(image) for image in images])
    features = captioner.encode(pixels)
    assert features.shape == (2, 2048)
    reference = NumpyModel(full_model.checkpoint)
    want = reference_captions(reference, features.astype(np.float64), captioner.vocabulary, 3, 20)
    for g, w in zip(captioner.caption_arrays(pixels), want, strict=True):
        _assert_same(as_pairs(g), w)


def test_pretrained_checkpoint_is_recognised(tmp_path: Path) -> None:
    files = write_random_checkpoint(
        tmp_path, depth_multiplier=0.1, prefix_name="model2.ckpt-2000000"
    )
    captioner = Captioner.load(files.checkpoint, files.vocab)
    assert captioner.info.name == tmp_path.name
    assert not captioner.info.is_pretrained_im2txt  # small widths are not the original


def test_thread_settings_reach_tensorflow(tiny_model: ModelFiles) -> None:
    # Process-wide and only before TF's first op: checked in a fresh interpreter.
    import subprocess
    import sys

    code = (
        "import tensorflow as tf; from captioner.engine import Captioner; "
        f"Captioner.load({str(tiny_model.checkpoint)!r}, {str(tiny_model.vocab)!r}, "
        "intra_op_threads=1, inter_op_threads=2); "
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["1", "2"]
