"""The API over the real engine on a small checkpoint the tests write (TensorFlow inside).

The lifespan loads it exactly as in production (``ensure_model`` then ``Captioner.load``).
Random weights give nonsense captions, so these tests check structure, the error cases
the real preprocessing raises, and that batched answers equal single-image answers.
"""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.api.app import create_app
from captioner.assets import ModelFiles
from support.api_helpers import make_settings, serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def noise_jpeg(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def image_part(data: bytes, name: str = "photo.jpg") -> dict[str, tuple[str, bytes, str]]:
    # Declared as octet-stream, as Python requests sends files: the bytes must decide.
    return {"image": (name, data, "application/octet-stream")}


async def test_real_engine_over_http(tmp_path: Path, tiny_model: ModelFiles) -> None:
    settings = make_settings(
        tmp_path,
        checkpoint=tiny_model.checkpoint,
        vocab=tiny_model.vocab,
        max_batch_size=4,
        max_batch_wait_ms=300.0,  # the concurrent requests below all fit in one window
        max_image_pixels=1_000_000,
    )
    app = create_app(settings)
    images = [noise_jpeg(seed) for seed in range(4)]
    async with serving(app) as client:
        assert (await client.get("/v2/health/ready")).status_code == 200

        # One image, alone.
        alone = await client.post("/model/predict", files=image_part(images[0]))
        assert alone.status_code == 200, alone.text
        predictions = alone.json()["predictions"]
        assert 1 <= len(predictions) <= 3
        assert [p["index"] for p in predictions] == [str(i) for i in range(len(predictions))]
        logprobs = [p["logprob"] for p in predictions]
        assert logprobs == sorted(logprobs, reverse=True)
        for p in predictions:
            assert p["probability"] == pytest.approx(math.exp(p["logprob"]))
            assert isinstance(p["caption"], str)

        # Each image alone, then all four at once: the same answers, in a shared batch.
        singles = [
            (await client.post("/model/predict", files=image_part(image))).json()
            for image in images
        ]
        together = await asyncio.gather(
            *(client.post("/model/predict", files=image_part(image)) for image in images)
        )
        for single, response in zip(singles, together, strict=True):
            assert response.status_code == 200
            got = response.json()["predictions"]
            assert [p["caption"] for p in got] == [p["caption"] for p in single["predictions"]]
            for a, b in zip(got, single["predictions"], strict=True):
                assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
        metrics = (await client.get("/metrics")).text
        assert 'captioner_batch_size_bucket{le="1.0"} 5.0' in metrics  # the 5 lone requests
        assert "captioner_batch_size_sum 9.0" in metrics
        assert "captioner_batch_size_count 6.0" in metrics  # ...and one batch of 4

        # The batch route, one bad file among good ones.
        files = [
            ("image", ("a.jpg", images[1], "image/jpeg")),
            ("image", ("b.jpg", b"GIF89a not really", "image/gif")),
            ("image", ("c.jpg", images[2], "image/jpeg")),
        ]
        batch = (await client.post("/model/predict/batch", files=files)).json()["results"]
        assert [r["status"] for r in batch] == ["ok", "error", "ok"]
        assert batch[0]["predictions"] == singles[1]["predictions"]
        assert batch[2]["predictions"] == singles[2]["predictions"]
        assert batch[1]["code"] == 400

        # The real preprocessing's refusals.
        corrupt = await client.post("/model/predict", files=image_part(images[0][:200]))
        assert corrupt.status_code == 400
        assert corrupt.json()["status"] == "error" and corrupt.json()["message"]
        garbage = await client.post("/model/predict", files=image_part(b"%PDF-1.4 nope"))
        assert garbage.status_code == 400
        bomb = io.BytesIO()
        Image.new("L", (2000, 1000)).save(bomb, format="PNG")  # 2 Mpx over a 1 Mpx limit
        too_big = await client.post("/model/predict", files=image_part(bomb.getvalue()))
        assert too_big.status_code == 413

        metadata = (await client.get("/model/metadata")).json()
        assert metadata["id"] == f"captioner-{tiny_model.checkpoint.parent.name}"
        assert "Not the pretrained MAX model" in metadata["description"]
        assert "24-unit LSTM" in metadata["description"]


async def test_the_demo_model_says_what_it_is(tmp_path: Path) -> None:
    from captioner.assets import DEMO_MODEL_DIR
    from captioner.vocabulary import Vocabulary

    async with serving(create_app(make_settings(tmp_path, model="demo"))) as client:
        metadata = (await client.get("/model/metadata")).json()
    words = len(Vocabulary.from_file(DEMO_MODEL_DIR / "word_counts.txt"))
    assert metadata["id"] == "captioner-demo"
    assert metadata["license"] == "Apache-2.0"
    assert "one coloured shape, or a small one beside a large one" in metadata["description"]
    assert f"{words}-word vocabulary with <UNK>" in metadata["description"]
    assert "Not the pretrained MAX model" in metadata["description"]


async def test_settings_choose_the_precision_and_readiness_reports_it(
    tmp_path: Path, tiny_model: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CAPTIONER_PRECISION reaches the engine through Settings, as in production.
    monkeypatch.setenv("CAPTIONER_PRECISION", "bf16")
    settings = make_settings(
        tmp_path, checkpoint=tiny_model.checkpoint, vocab=tiny_model.vocab, max_batch_size=2
    )
    assert settings.precision == "bf16"
    app = create_app(settings)
    async with serving(app) as client:
        ready = await client.get("/v2/health/ready")
        answer = await client.post("/model/predict", files=image_part(noise_jpeg(1)))
        metrics = (await client.get("/metrics")).text
    assert ready.json() == {"ready": True, "precision": "bf16"}
    assert answer.status_code == 200 and answer.json()["predictions"]
    name = tiny_model.checkpoint.parent.name
    assert f'captioner_model_info{{name="{name}",precision="bf16"}} 1.0' in metrics
