#!/usr/bin/env python3
"""How much does bf16 change the captions? fp32 against bf16 on the same images.

1. The bundled demo model on freshly generated shapes scenes (a seed neither training nor
   the tests use): exact match and BLEU-4 in each precision (``captioner evaluate``'s
   scoring), and the share of images whose top caption is the same in both.
2. A full-size checkpoint of the original layout with seeded random values (the one the
   tests write; the real weights are not downloadable here) on shapes scenes too: the
   share of images whose top caption is unchanged, and the distribution of the top
   caption's log-probability difference (bf16 minus fp32).

Both precisions run in this one process, on the same preprocessed pixels.

Usage: python scripts/precision_accuracy.py [--scenes 500] [--seed 4242] [--full-images 96]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from captioner.assets import DEMO_MODEL_DIR, ModelFiles
from captioner.engine import Captioner
from captioner.testing import write_full_size_checkpoint
from captioner.training.dataset import read_dataset
from captioner.training.evaluate import evaluate
from captioner.training.shapes import write_dataset
from loadkit import percentile, write_figures


def top_captions(captioner: Captioner, pixels: np.ndarray) -> list[tuple[str, float]]:
    """The best caption and its log-probability per image, in batches of 8."""
    out = []
    for start in range(0, len(pixels), 8):
        for ranked in captioner.caption_arrays(pixels[start : start + 8]):
            out.append((ranked[0].text, ranked[0].logprob))
    return out


def compare(files: ModelFiles, images: list[Path]) -> tuple[float, np.ndarray]:
    """Share of unchanged top captions, and bf16 - fp32 top log-probabilities."""
    results = {}
    pixels = None
    for precision in ("fp32", "bf16"):
        captioner = Captioner.load(files.checkpoint, files.vocab, precision=precision)
        if pixels is None:
            pixels = np.stack([captioner.preprocess(path.read_bytes()) for path in images])
        results[precision] = top_captions(captioner, pixels)
    same = [a[0] == b[0] for a, b in zip(results["fp32"], results["bf16"], strict=True)]
    deltas = np.array([b[1] - a[1] for a, b in zip(results["fp32"], results["bf16"], strict=True)])
    return float(np.mean(same)), deltas


def spread(same: float, deltas: np.ndarray) -> dict[str, float]:
    """The share of unchanged top captions and the size of ``deltas``, for the figures."""
    magnitude = np.abs(deltas)
    return {
        "top_same_pct": round(100 * same, 1),
        "images": len(deltas),
        "logprob_delta_median": round(float(np.median(magnitude)), 4),
        "logprob_delta_p90": round(percentile(magnitude.tolist(), 0.9), 4),
        "logprob_delta_max": round(float(magnitude.max()), 4),
        "logprob_delta_mean_signed": round(float(deltas.mean()), 4),
    }


def describe(figures: dict[str, float]) -> str:
    return (
        f"top caption the same in both: {figures['top_same_pct']}% of {figures['images']}; "
        f"|bf16 - fp32| of the top caption's logprob: median {figures['logprob_delta_median']}, "
        f"p90 {figures['logprob_delta_p90']}, max {figures['logprob_delta_max']} "
        f"(mean signed {figures['logprob_delta_mean_signed']:+})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=500, help="demo model: scenes")
    parser.add_argument("--seed", type=int, default=4242, help="scene generator seed")
    parser.add_argument("--full-images", type=int, default=96, help="full-size model: images")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory() as tmp:
        captions = write_dataset(Path(tmp) / "scenes", args.scenes, args.seed)
        examples = read_dataset(captions, None, "fail").examples
        images = sorted({example.image_path for example in examples})
        demo = ModelFiles(DEMO_MODEL_DIR / "checkpoint", DEMO_MODEL_DIR / "word_counts.txt")
        print(f"demo model, {len(images)} fresh scenes (seed {args.seed}):")
        figures: dict[str, dict[str, Any]] = {"demo": {}}
        for precision in ("fp32", "bf16"):
            captioner = Captioner.load(demo.checkpoint, demo.vocab, precision=precision)
            scores = evaluate(captioner, examples, sample_count=0)
            print(f"  {precision}: exact match {scores.exact_match:.1%}, BLEU-4 {scores.bleu4:.4f}")
            figures["demo"][precision] = {
                "exact_match_pct": round(100 * scores.exact_match, 1),
                "bleu4": round(scores.bleu4, 4),
            }
        figures["demo"].update(spread(*compare(demo, images)))
        print(f"  {describe(figures['demo'])}")

        full = write_full_size_checkpoint(Path(tmp) / "full")
        figures["full_size_random"] = spread(*compare(full, images[: args.full_images]))
        print(f"full-size random checkpoint, {args.full_images} of those scenes:")
        print(f"  {describe(figures['full_size_random'])}")
    write_figures("default", figures)


if __name__ == "__main__":
    main()
