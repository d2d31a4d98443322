"""The Captioner: one loaded im2txt model, captioning batches of images in one graph call.

Encoder, decoder and beam search run inside a single ``tf.function`` per (beam size,
maximum length), traced for any batch size, so a batch costs one call into TensorFlow and
results are identical whether an image is captioned alone or inside a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from captioner.assets import DEMO_MODEL_DIR
from captioner.beam_search import beam_search
from captioner.checkpoint import Im2txtWeights, load_checkpoint
from captioner.decoder import Decoder
from captioner.encoder import FoldedConvOps, inception_v3
from captioner.errors import InvalidRequestError, VocabularyError
from captioner.preprocessing import IMAGE_SIZE, PixelBudget, preprocess_image
from captioner.tf_runtime import configure_threads, import_tensorflow
from captioner.vocabulary import Vocabulary

if TYPE_CHECKING:
    from captioner.config import Settings
    from captioner.transfer import ProgressMode

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "Caption", "Captioner", "ModelInfo"]

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
_PRETRAINED_STEP = 2_000_000
_PRETRAINED_SHAPES = (2048, 512, 512, 12000)  # feature, embedding, LSTM units, vocab rows


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


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for metadata endpoints and logs."""

    name: str
    checkpoint: str
    is_pretrained_im2txt: bool
    vocab_size: int
    vocab_rows: int
    embedding_size: int
    lstm_units: int
    image_feature_size: int
    global_step: int
    is_bundled_demo: bool = False  # the demo model inside the package (coloured shapes only)


class Captioner:
    """A loaded im2txt model. Build with :meth:`load`.

    ``preprocess`` is safe from any thread; ``caption_arrays``/``caption`` are meant for one
    worker thread at a time (the server's batcher owns that thread).
    """

    def __init__(
        self,
        weights: Im2txtWeights,
        vocabulary: Vocabulary,
        *,
        name: str,
        checkpoint: str,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_decoding_pixels: int | None = None,
    ) -> None:
        import tensorflow as tf

        if len(vocabulary) > weights.vocab_rows:
            raise VocabularyError(
                f"the vocabulary has {len(vocabulary)} words (with <UNK>) but the checkpoint "
                f"has only {weights.vocab_rows} word rows: vocabulary and checkpoint do not match"
            )
        self._tf = tf
        self.vocabulary = vocabulary
        self.max_image_pixels = max_image_pixels
        self._decoding = PixelBudget(max_decoding_pixels) if max_decoding_pixels else None
        self._encoder_ops = FoldedConvOps(weights.convs)
        self._decoder = Decoder(weights)
        self._graphs: dict[tuple[int, int], Any] = {}
        self._encode_graph: Any = None
        self.info = ModelInfo(
            name=name,
            checkpoint=checkpoint,
            is_pretrained_im2txt=_is_pretrained(weights),
            vocab_size=len(vocabulary),
            vocab_rows=weights.vocab_rows,
            embedding_size=weights.embedding_size,
            lstm_units=weights.lstm_units,
            image_feature_size=weights.feature_size,
            global_step=weights.global_step,
            is_bundled_demo=Path(checkpoint).resolve().is_relative_to(DEMO_MODEL_DIR),
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, download: bool = True, progress: ProgressMode = "auto"
    ) -> Captioner:
        """Load the model ``settings`` names: the one way every command and the server do it.

        TensorFlow is imported quietly (unless ``settings.log_level`` is ``debug``) and its
        thread pools sized first; the pretrained model is downloaded if it is missing,
        unless ``settings.offline`` is set or ``download`` is False.

        Args:
            settings: ``model``, ``model_dir``, ``checkpoint``, ``vocab``, ``offline``, the
                download settings, ``max_image_pixels``, ``max_decoding_pixels``, thread and
                log settings.
            download: fetch a missing pretrained model.
            progress: how a download reports progress.

        Raises:
            AssetError: no model, and none could be downloaded; the message lists the ways out.
            CheckpointError, VocabularyError: naming the file and the problem.
        """
        from captioner.download import ensure_model

        import_tensorflow(settings.log_level)
        files = ensure_model(settings, download=download, progress=progress)
        name = "demo" if settings.model == "demo" and settings.checkpoint is None else None
        return cls.load(
            files.checkpoint,
            files.vocab,
            name=name,
            max_image_pixels=settings.max_image_pixels,
            max_decoding_pixels=settings.decoding_pixels,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )

    @classmethod
    def load(
        cls,
        checkpoint: Path | str,
        vocab: Path | str,
        *,
        name: str | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_decoding_pixels: int | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
    ) -> Captioner:
        """Load a checkpoint and its ``word_counts.txt``.

        Args:
            checkpoint: a checkpoint directory, prefix, or one of the prefix's files.
            vocab: the vocabulary file.
            name: a display name; default "im2txt" for the pretrained checkpoint, else the
                model directory's name.
            max_image_pixels: images declaring more pixels are refused before decoding.
            max_decoding_pixels: most pixels decoded at once by concurrent ``preprocess``
                calls (a call waits for room); ``None``: no bound.
            intra_op_threads, inter_op_threads: TensorFlow's thread pools (default: TF's
                choice, or ``TF_NUM_INTRAOP_THREADS``); see
                :func:`captioner.tf_runtime.configure_threads`.

        Raises:
            CheckpointError, VocabularyError: naming the file and the problem.
        """
        configure_threads(intra_op_threads, inter_op_threads)
        weights = load_checkpoint(checkpoint)
        vocabulary = Vocabulary.from_file(vocab)
        if not name:
            name = "im2txt" if _is_pretrained(weights) else _model_name(checkpoint)
        return cls(
            weights,
            vocabulary,
            name=name,
            checkpoint=str(checkpoint),
            max_image_pixels=max_image_pixels,
            max_decoding_pixels=max_decoding_pixels,
        )

    def preprocess(self, image: bytes) -> np.ndarray:
        """Image bytes -> float32 ``[299, 299, 3]`` in [-1, 1].

        Raises:
            InvalidImageError: undecodable, unsupported or too many pixels.
        """
        return preprocess_image(image, max_pixels=self.max_image_pixels, budget=self._decoding)

    def caption_arrays(
        self, pixels: np.ndarray, beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        """Caption a batch of preprocessed images.

        Args:
            pixels: float32 ``[B, 299, 299, 3]`` in [-1, 1].
            beam_size: captions kept per beam set, 1 or more (at most the vocabulary rows).
            max_length: longest caption in words counting ``<S>``, 1 or more.

        Returns:
            For each image, up to ``beam_size`` captions, best first.
        """
        self._check_parameters(beam_size, max_length)
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"pixels must be [B, 299, 299, 3], got {list(pixels.shape)}")
        if pixels.shape[0] == 0:
            return []
        words, lengths, logprobs = self._graph(beam_size, max_length)(pixels)
        return self._to_captions(words.numpy(), lengths.numpy(), logprobs.numpy())

    def caption(
        self, images: Sequence[bytes], beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        """Preprocess and caption image bytes in one batch.

        Raises:
            InvalidImageError: for the first image that cannot be used.
        """
        self._check_parameters(beam_size, max_length)
        if not images:
            return []
        return self.caption_arrays(
            np.stack([self.preprocess(image) for image in images]), beam_size, max_length
        )

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """The bare encoder: float32 ``[B, 299, 299, 3]`` -> float32 ``[B, F]`` features."""
        if self._encode_graph is None:
            tf = self._tf
            self._encode_graph = tf.function(
                lambda x: inception_v3(x, self._encoder_ops),
                input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)],
            )
        return self._encode_graph(np.asarray(pixels, dtype=np.float32)).numpy()

    def warmup(self, batch_sizes: Iterable[int], beam_size: int = 3, max_length: int = 20) -> None:
        """Trace the graph and touch every batch size once, so first requests are not slow."""
        for size in sorted(set(batch_sizes)):
            self.caption_arrays(
                np.zeros([size, IMAGE_SIZE, IMAGE_SIZE, 3], np.float32), beam_size, max_length
            )

    def _check_parameters(self, beam_size: int, max_length: int) -> None:
        if not 1 <= beam_size <= self.info.vocab_rows:
            raise InvalidRequestError(
                f"beam_size must be between 1 and {self.info.vocab_rows}, got {beam_size}",
                field="beam_size",
            )
        if max_length < 1:
            raise InvalidRequestError(
                f"max_length must be at least 1, got {max_length}", field="max_length"
            )

    def _graph(self, beam_size: int, max_length: int) -> Any:
        """One traced graph per (beam size, max length), any batch size."""
        key = (beam_size, max_length)
        if key not in self._graphs:
            tf = self._tf
            decoder = self._decoder
            vocabulary = self.vocabulary

            @tf.function(
                input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)]
            )
            def run(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                features = inception_v3(pixels, self._encoder_ops)
                result = beam_search(
                    decoder.initial_state(features),
                    decoder.step,
                    start_id=vocabulary.start_id,
                    end_id=vocabulary.end_id,
                    beam_size=beam_size,
                    max_length=max_length,
                )
                return result.words, result.lengths, result.logprobs

            self._graphs[key] = run
        return self._graphs[key]

    def _to_captions(
        self, words: np.ndarray, lengths: np.ndarray, logprobs: np.ndarray
    ) -> list[list[Caption]]:
        captions = []
        word = self.vocabulary.id_to_word
        for image_words, image_lengths, image_logprobs in zip(
            words, lengths, logprobs, strict=True
        ):
            ranked = []
            for ids, length, logprob in zip(
                image_words, image_lengths, image_logprobs, strict=True
            ):
                if not np.isfinite(logprob):
                    continue
                # The original drops the first and last word, also of a partial caption.
                text = " ".join(word(int(i)) for i in ids[1 : length - 1])
                ranked.append(Caption(text=text, logprob=float(logprob)))
            captions.append(ranked)
        return captions


def _is_pretrained(weights: Im2txtWeights) -> bool:
    """The original checkpoint: saved at step 2,000,000 with the original widths."""
    shapes = (weights.feature_size, weights.embedding_size, weights.lstm_units, weights.vocab_rows)
    return weights.global_step == _PRETRAINED_STEP and shapes == _PRETRAINED_SHAPES


def _model_name(checkpoint: Path | str) -> str:
    """A readable name for a non-pretrained model: its model directory's name."""
    path = Path(checkpoint).resolve()
    directory = path if path.is_dir() else path.parent
    if directory.name == "checkpoint":
        directory = directory.parent
    return directory.name or "custom"
