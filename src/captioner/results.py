"""What captioning one image gives: its ranked captions, or why it failed, under its name.

Every way of captioning a collection yields these (in process, through a server with the
client, on a Ray cluster), and every output format is written from them, so a record means
the same wherever it came from. Light on purpose: no NumPy, no TensorFlow, so the client
and the output writers import it without loading the model's libraries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Caption", "ImageResult"]


@dataclass(frozen=True)
class Caption:
    """One ranked caption.

    Attributes:
        text: the words between ``<S>`` and ``</S>`` joined by spaces ("a dog on a couch .").
        logprob: natural log of the joint probability of every word after ``<S>``.
    """

    text: str
    logprob: float

    @property
    def probability(self) -> float:
        """``exp(logprob)``; underflows to 0.0 for very unlikely captions, logprob does not."""
        return math.exp(self.logprob)

    @property
    def sentence(self) -> str:
        """The caption as a sentence, for alt text: "a dog on a couch ." becomes
        "A dog on a couch." (im2txt's words are lower case, with the stop as a word)."""
        text = self.text.replace(" .", ".").replace(" ,", ",").strip()
        return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: captions (best first) or the reason it has none.

    Attributes:
        source: the image's name as the caller gave it (a path as listed, or a key).
        captions: the ranked captions; empty when ``error`` is set.
        error: what went wrong with this image alone ("not an image ...", "No such file").
    """

    source: str
    captions: tuple[Caption, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was captioned."""
        return self.error is None

    @property
    def best(self) -> Caption | None:
        """The top caption, if any."""
        return self.captions[0] if self.captions else None

    def to_record(self) -> dict[str, Any]:
        """The output record: the same keys for every image, so each format has one schema.

        ``{"path", "status": "ok" | "error", "captions": [{"caption", "probability",
        "logprob"}, ...], "error": str | None}``
        """
        return {
            "path": self.source,
            "status": "ok" if self.ok else "error",
            "captions": [
                {"caption": c.text, "probability": c.probability, "logprob": c.logprob}
                for c in self.captions
            ],
            "error": self.error,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ImageResult:
        """The inverse of :meth:`to_record` (the probability is derived from the logprob)."""
        captions = tuple(
            Caption(text=str(c["caption"]), logprob=float(c["logprob"]))
            for c in record.get("captions") or ()
        )
        error = record.get("error")
        return cls(source=str(record["path"]), captions=captions, error=error)
