"""Score a model on captioned images: exact-match rate, corpus BLEU-4, sample captions.

Both metrics compare word sequences after the training tokenisation
(:func:`captioner.training.tokenizer.tokenize`), so "A red circle." and the model's
"a red circle ." agree. BLEU-4 is sacrebleu's (standard corpus BLEU: clipped n-gram
precisions up to 4, brevity penalty, every reference of an image counted), run on those
tokens with its own tokeniser off, on a 0..1 scale. sacrebleu serves only this module, so it
is an extra (``captioner[train]``), not a dependency of every server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from captioner.engine import Captioner
from captioner.errors import CaptionerError, DatasetError
from captioner.pipeline import COLLECTION_BATCH_SIZE, ImageSource, caption_batches
from captioner.training.dataset import Example, OnError, group_by_image
from captioner.training.tokenizer import tokenize

__all__ = ["Evaluation", "Sample", "bleu_scorer", "evaluate"]


@dataclass(frozen=True)
class Sample:
    """One image's result.

    Attributes:
        image: The image path.
        caption: The model's best caption.
        references: The image's reference captions, as written.
        exact: Whether the caption equals one of the references, token for token.
    """

    image: str
    caption: str
    references: list[str]
    exact: bool


@dataclass(frozen=True)
class Evaluation:
    """Scores over every usable image.

    Attributes:
        count: Images captioned.
        exact_match: Share of images (0..1) whose best caption equals a reference.
        bleu4: Corpus BLEU-4 (0..1) of the best captions against all references.
        samples: The first few images' results, in data order.
        skipped: Images that could not be decoded (``on_error="skip"``).
    """

    count: int
    exact_match: float
    bleu4: float
    samples: list[Sample]
    skipped: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``count``, ``exact_match``, ``bleu4``, ``samples``, ``skipped``."""
        return asdict(self)


def evaluate(
    engine: Captioner,
    examples: Sequence[Example],
    *,
    beam_size: int = 3,
    max_length: int = 20,
    batch_size: int = COLLECTION_BATCH_SIZE,
    sample_count: int = 5,
    on_error: OnError = "skip",
    progress: bool = False,
    report: Callable[[str], None] = print,
) -> Evaluation:
    """Caption every image of ``examples`` and compare with its references.

    Args:
        engine: The model.
        examples: Held-out captions; an image's captions are its references.
        beam_size, max_length: Beam search settings, as in serving.
        batch_size: Images per engine call.
        sample_count: How many per-image results to keep in :attr:`Evaluation.samples`.
        on_error: ``"fail"`` raises on an undecodable image, ``"skip"`` reports it and
            leaves it out of the scores.
        progress: Show a progress bar.
        report: Where skip messages go.

    Returns:
        The scores.

    Raises:
        DatasetError: No examples, no usable image, or an undecodable one with
            ``on_error="fail"``.
        CaptionerError: sacrebleu is not installed (before any image is captioned).
    """
    scorer = bleu_scorer()
    groups = list(group_by_image(examples).items())
    if not groups:
        raise DatasetError("nothing to evaluate: no examples")
    hypotheses: list[list[str]] = []
    references: list[list[list[str]]] = []
    samples: list[Sample] = []
    skipped = 0
    references_of = dict(groups)
    bar = tqdm(total=len(groups), desc="evaluating", unit="image", disable=not progress)
    sources = (ImageSource(name=str(path), path=path) for path, _ in groups)
    for batch in caption_batches(
        engine, sources, beam_size=beam_size, max_length=max_length, batch_size=batch_size
    ):
        for result in batch:
            captions = references_of[Path(result.source)]
            if not result.ok:
                error = DatasetError(
                    f"{result.error} (used at {captions[0].source})", path=result.source
                )
                if on_error == "fail":
                    raise error
                report(f"skipped {error}")
                skipped += 1
                continue
            best = result.best.text if result.best else ""
            hypothesis = tokenize(best)
            refs = [tokenize(ex.caption) for ex in captions]
            hypotheses.append(hypothesis)
            references.append(refs)
            if len(samples) < sample_count:
                written = [ex.caption for ex in captions]
                samples.append(Sample(result.source, best, written, hypothesis in refs))
        bar.update(len(batch))
    bar.close()
    if not hypotheses:
        raise DatasetError(f"nothing to evaluate: all {skipped} images failed to decode")
    exact = sum(h in refs for h, refs in zip(hypotheses, references, strict=True))
    return Evaluation(
        count=len(hypotheses),
        exact_match=exact / len(hypotheses),
        bleu4=_corpus_bleu4(scorer, hypotheses, references),
        samples=samples,
        skipped=skipped,
    )


def bleu_scorer() -> Any:
    """sacrebleu's BLEU-4 for text already tokenised our way (its own tokeniser off; ``force``:
    the text ends in " .").

    Raises:
        CaptionerError: sacrebleu is missing, with the command that installs it.
    """
    try:
        from sacrebleu.metrics.bleu import BLEU
    except ImportError as exc:
        raise CaptionerError(
            "evaluating needs sacrebleu (BLEU-4), in the train extra: "
            "pip install 'captioner[train]'"
        ) from exc
    return BLEU(tokenize="none", force=True)


def _corpus_bleu4(
    scorer: Any, hypotheses: list[list[str]], references: list[list[list[str]]]
) -> float:
    """sacrebleu's corpus BLEU-4 on already tokenised text, 0..1.

    sacrebleu takes one stream per reference position; images with fewer references
    fill the missing positions with None, which it skips.
    """
    streams = max(len(refs) for refs in references)
    reference_streams = [
        [" ".join(refs[k]) if k < len(refs) else None for refs in references]
        for k in range(streams)
    ]
    # A None in a reference stream means "this image has fewer references" (sacrebleu
    # accepts it, though its type hints do not say so).
    score = scorer.corpus_score([" ".join(h) for h in hypotheses], reference_streams)
    # sacrebleu's percentage can exceed 100 by a rounding error (exp of summed logs).
    return min(float(score.score) / 100.0, 1.0)
