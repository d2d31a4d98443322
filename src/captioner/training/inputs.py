"""Training inputs: captions as padded word ids, and images preprocessed once.

Images go through :func:`captioner.preprocessing.preprocess_image`, the engine's own
preprocessing, so a trained model sees in training exactly the pixels it will see when
serving. Decoding is the expensive part of a step, so every image is preprocessed once
before training starts (which is also when an undecodable image is found) and kept as
float16 while the whole set fits the cache budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioner.errors import DatasetError, InvalidImageError
from captioner.preprocessing import IMAGE_SIZE, preprocess_image
from captioner.training.dataset import Example, OnError, group_by_image
from captioner.training.tokenizer import caption_words
from captioner.vocabulary import Vocabulary

__all__ = ["CaptionBatch", "EncodedCaptions", "ImageStore", "encode_captions"]

# Padded caption lengths are rounded up to a multiple of this, so that the training step
# is traced for a few lengths only.
_LENGTH_BUCKET = 8
_PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE * 3


@dataclass(frozen=True)
class CaptionBatch:
    """One batch for the training step.

    Attributes:
        image_index: int32 ``[B]``, each caption's image in the :class:`ImageStore`.
        words: int32 ``[B, T]``, ``<S>`` ... ``</S>`` ids, padded with 0; ``T`` is a
            multiple of 8.
        mask: float32 ``[B, T]``, 1 on words, 0 on padding.
    """

    image_index: np.ndarray
    words: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class EncodedCaptions:
    """Every caption of a split as word ids.

    Attributes:
        image_index: int32 ``[N]``, the image of each caption.
        words: int32 ``[N, L]``, ids padded with 0 to the longest caption.
        lengths: int32 ``[N]``, words in each caption, ``<S>`` and ``</S>`` included.
    """

    image_index: np.ndarray
    words: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def batch(self, indices: np.ndarray) -> CaptionBatch:
        """The captions at ``indices``, padded to this batch's longest, bucketed."""
        lengths = self.lengths[indices]
        padded = -(-int(lengths.max()) // _LENGTH_BUCKET) * _LENGTH_BUCKET
        words = np.zeros([len(indices), padded], np.int32)
        width = min(padded, self.words.shape[1])
        words[:, :width] = self.words[indices, :width]
        mask = (np.arange(padded)[np.newaxis, :] < lengths[:, np.newaxis]).astype(np.float32)
        return CaptionBatch(self.image_index[indices], words, mask)


def encode_captions(
    examples: Sequence[Example], image_ids: dict[Path, int], vocabulary: Vocabulary
) -> EncodedCaptions:
    """Tokenise captions the im2txt way and map words to ids (unknown words -> ``<UNK>``).

    Args:
        examples: The captions of one split.
        image_ids: Image path -> its index in the :class:`ImageStore`.
        vocabulary: The model's vocabulary.
    """
    encoded = [[vocabulary.word_to_id(w) for w in caption_words(ex.caption)] for ex in examples]
    lengths = np.array([len(ids) for ids in encoded], np.int32)
    words = np.zeros([len(encoded), int(lengths.max(initial=2))], np.int32)
    for row, ids in enumerate(encoded):
        words[row, : len(ids)] = ids
    image_index = np.array([image_ids[ex.image_path] for ex in examples], np.int32)
    return EncodedCaptions(image_index, words, lengths)


class ImageStore:
    """The training images, preprocessed; float16 in memory while they fit the budget."""

    def __init__(self, paths: Sequence[Path], cache: np.ndarray | None, max_pixels: int):
        self.paths = list(paths)
        self._cache = cache
        self._max_pixels = max_pixels

    @classmethod
    def prepare(
        cls,
        examples: Sequence[Example],
        *,
        on_error: OnError,
        cache_bytes: int,
        max_pixels: int,
        progress: bool,
        report: Callable[[str], None],
    ) -> ImageStore:
        """Preprocess every image once, dropping (or failing on) those that cannot be used.

        Args:
            examples: Examples of every split; each image is preprocessed once.
            on_error: ``"fail"`` raises on the first undecodable image, ``"skip"`` reports
                it and drops its captions.
            cache_bytes: Keep the float16 pixels in memory if they fit in this many
                bytes; otherwise images are preprocessed again each time they are used.
            max_pixels: The engine's pixel limit; larger images count as unusable.
            progress: Show a progress bar.
            report: Where skip messages go.

        Returns:
            The store of the usable images (their captions are the usable examples).

        Raises:
            DatasetError: An undecodable image with ``on_error="fail"``, or no usable one.
        """
        groups = group_by_image(examples)
        keep = len(groups) * _PIXELS_PER_IMAGE * 2 <= cache_bytes
        cache = np.empty([len(groups), IMAGE_SIZE, IMAGE_SIZE, 3], np.float16) if keep else None
        paths: list[Path] = []
        bar = tqdm(groups.items(), desc="preparing images", unit="image", disable=not progress)
        for path, captions in bar:
            try:
                pixels = _preprocess_file(path, max_pixels)
            except DatasetError as exc:
                where = f"{captions[0].source}, {len(captions)} caption(s)"
                error = DatasetError(f"{exc} (used at {where})")
                if on_error == "fail":
                    raise error from exc
                report(f"skipped {error}")
                continue
            if cache is not None:
                cache[len(paths)] = pixels
            paths.append(path)
        if not paths:
            raise DatasetError("no usable image: every image failed to decode")
        if cache is not None:
            cache = cache[: len(paths)]
        return cls(paths, cache, max_pixels)

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, indices: np.ndarray) -> np.ndarray:
        """float32 ``[B, 299, 299, 3]`` in [-1, 1] for the images at ``indices``."""
        if self._cache is not None:
            return np.asarray(self._cache[indices], dtype=np.float32)
        return np.stack([_preprocess_file(self.paths[i], self._max_pixels) for i in indices])


def _preprocess_file(path: Path, max_pixels: int) -> np.ndarray:
    """Read and preprocess one image file, any failure as a DatasetError naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read image: {exc.strerror or exc}", path=path) from exc
    try:
        return preprocess_image(data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise DatasetError(str(exc), path=path) from exc
