"""The Captioner: one loaded im2txt model, captioning batches of images in two graph calls.

A batch goes through two ``tf.function`` graphs, each traced once for any batch size: the
Inception encoder (pixels -> image features), then the decoder and the whole beam search
(features -> captions), one graph per (beam size, maximum length). Results are identical
whether an image is captioned alone or inside a batch. The encoder graph is shared by
every (beam size, maximum length) and is the one the benchmarks time as "bare encoder".

Weights are read, folded and rounded once at load and held once, as variables the graphs
read in place. The precision (:mod:`captioner.precision`) is settled at load too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from captioner.assets import DEMO_MODEL_DIR
from captioner.beam_search import MIN_MAX_LENGTH, beam_search
from captioner.checkpoint import Im2txtWeights, load_checkpoint
from captioner.decoder import Decoder
from captioner.encoder import ConvWeights, FoldedConvOps
from captioner.errors import InvalidRequestError, VocabularyError
from captioner.memory import release_free_memory
from captioner.precision import (
    Calibration,
    CalibrationMemory,
    Precision,
    PrecisionChoice,
    choose_precision,
    measure_encoders,
    tf_dtype_name,
)
from captioner.preprocessing import IMAGE_SIZE, PixelBudget, preprocess_image
from captioner.results import Caption
from captioner.tf_runtime import configure_threads
from captioner.vocabulary import Vocabulary

if TYPE_CHECKING:
    from tensorflow import Tensor


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "Calibrate", "Caption", "Captioner", "ModelInfo"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# (precision -> a call encoding one fixed batch, batch size) -> both timed; tests inject one.
Calibrate = Callable[[Mapping[Precision, Callable[[], object]], int], Calibration]
_PRETRAINED_STEP = 2_000_000
_PRETRAINED_SHAPES = (2048, 512, 512, 12000)  # feature, embedding, LSTM units, vocab rows


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded and how it runs, for metadata endpoints, readiness and logs."""

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
    precision: Precision = "fp32"


class Captioner:
    """A loaded im2txt model. Build with :meth:`load` (or, from settings,
    :func:`captioner.loading.load_engine`).

    ``preprocess`` is safe from any thread; ``caption_arrays`` is meant for one worker
    thread at a time (the server's batcher, or a collection's caller, owns that thread).
    To caption image bytes or files, with each bad image failing alone, use
    :mod:`captioner.pipeline`.

    Attributes:
        precision: what the model computes in, ``"fp32"`` or ``"bf16"``.
        calibration: the encoder timed in both precisions at load (``None`` for fp32).
        weight_bytes: bytes of weights held (each held once).
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
        precision: PrecisionChoice = "fp32",
        calibration_batch_size: int = 8,
        calibrate: Calibrate | None = None,
        calibration_memory: CalibrationMemory | None = None,
    ) -> None:
        """Hold the weights and settle the precision.

        Args:
            weights: the checkpoint's tensors. The encoder takes each conv over in turn
                and ``weights.convs`` is left empty, so the stored and the folded copies
                of the encoder (87 MB each at full size) are never all held at once.
            precision: ``fp32``, ``bf16``, or ``auto`` (bf16 where it is clearly faster).
                ``bf16`` and ``auto`` time the encoder in both precisions first (see
                :mod:`captioner.precision`), which also warms up the one kept.
            calibration_batch_size: images per timed encoder call: the serving batch size.
            calibrate: times the encoders; default :func:`measure_encoders`.
            calibration_memory: where a calibration is recalled from (instead of timing)
                and remembered in; default: timed at every load.
        """
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
        self._pixel_spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
        self.precision, self.calibration, self._encoder_ops, self._encoder = self._settle_precision(
            weights, precision, calibration_batch_size, calibrate, calibration_memory
        )
        self._decoder = Decoder(weights)
        self._searches: dict[tuple[int, int], Any] = {}
        self.weight_bytes = self._encoder_ops.weight_bytes + self._decoder.weight_bytes
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
            precision=self.precision,
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
        precision: PrecisionChoice = "fp32",
        calibration_batch_size: int = 8,
        calibration_memory: CalibrationMemory | None = None,
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
            precision, calibration_batch_size, calibration_memory: see :meth:`__init__`.

        Raises:
            CheckpointError, VocabularyError: naming the file and the problem.
        """
        configure_threads(intra_op_threads, inter_op_threads)
        weights = load_checkpoint(checkpoint)
        vocabulary = Vocabulary.from_file(vocab)
        if not name:
            name = "im2txt" if _is_pretrained(weights) else _model_name(checkpoint)
        captioner = cls(
            weights,
            vocabulary,
            name=name,
            checkpoint=str(checkpoint),
            max_image_pixels=max_image_pixels,
            max_decoding_pixels=max_decoding_pixels,
            precision=precision,
            calibration_batch_size=calibration_batch_size,
            calibration_memory=calibration_memory,
        )
        del weights  # the stored arrays: the graphs' variables hold everything now
        release_free_memory()
        return captioner

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
            max_length: longest caption in tokens, counting ``<S>`` and ``</S>`` (at most
                ``max_length - 2`` words of text), ``MIN_MAX_LENGTH`` or more.

        Returns:
            For each image, up to ``beam_size`` captions, best first.
        """
        self.check_parameters(beam_size, max_length)
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"pixels must be [B, 299, 299, 3], got {list(pixels.shape)}")
        if pixels.shape[0] == 0:
            return []
        return self.search(self._encoder(pixels), beam_size, max_length)

    def search(
        self, features: np.ndarray | Any, beam_size: int = 3, max_length: int = 20
    ) -> list[list[Caption]]:
        """The second stage alone: the beam search from image features (see :meth:`encode`).

        Args:
            features: float32 ``[B, F]``, a NumPy array or a TensorFlow tensor.
            beam_size, max_length: as in :meth:`caption_arrays`.
        """
        self.check_parameters(beam_size, max_length)
        words, lengths, logprobs = self._search(beam_size, max_length)(features)
        return self._to_captions(words.numpy(), lengths.numpy(), logprobs.numpy())

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """The first stage alone, the serving graph itself (the "bare encoder"): float32
        ``[B, 299, 299, 3]`` -> float32 ``[B, F]`` features."""
        features: np.ndarray = self._encoder(np.asarray(pixels, dtype=np.float32)).numpy()
        return features

    def warmup(self, batch_sizes: Iterable[int], beam_size: int = 3, max_length: int = 20) -> None:
        """Trace the graphs and run each batch size once, so first requests are not slow.

        A small JPEG is decoded first.

        Largest first: TensorFlow keeps the memory of its largest batch for reuse, and
        smaller batches then fit in it; ascending sizes would grow it step by step, with
        gaps between the steps that no later batch fills (about 50 MB more at batch 8).
        """
        self.preprocess(_small_jpeg())  # TensorFlow's JPEG decoder: its first call sets up
        for size in sorted(set(batch_sizes), reverse=True):
            self.caption_arrays(
                np.zeros([size, IMAGE_SIZE, IMAGE_SIZE, 3], np.float32), beam_size, max_length
            )

    # --- internals ------------------------------------------------------------------------

    def _encoder_graph(self, ops: FoldedConvOps) -> Any:
        """The encoder as one graph for any batch size (no autograph: no Python control
        flow on tensors to convert, and tracing skips reading every function's source)."""
        return self._tf.function(ops.encode, input_signature=[self._pixel_spec], autograph=False)

    def _settle_precision(
        self,
        weights: Im2txtWeights,
        requested: PrecisionChoice,
        batch_size: int,
        calibrate: Calibrate | None,
        memory: CalibrationMemory | None,
    ) -> tuple[Precision, Calibration | None, FoldedConvOps, Any]:
        """The precision to run, its calibration, and the encoder's ops and graph.

        For bf16 and auto, both encoders are built and timed first, unless ``memory``
        holds a calibration for this machine and model; only the kept one's weights stay
        (the other is dropped with this frame).
        """
        if requested == "fp32":
            return ("fp32", None, *self._one_encoder(weights, "fp32"))
        key = ""
        if memory is not None:
            values = sum(conv.weights.size for conv in weights.convs.values())
            threads = self._tf.config.threading.get_intra_op_parallelism_threads() or None
            key = memory.key(batch_size, values, threads)
            if (remembered := memory.recall(key)) is not None:
                chosen = self._choose(requested, remembered, f"remembered in {memory.path}")
                return (chosen, remembered, *self._one_encoder(weights, chosen))
        bf16 = FoldedConvOps(weights.convs.items(), tf_dtype_name("bf16"))
        both: dict[Precision, FoldedConvOps] = {
            "fp32": FoldedConvOps(_drain(weights.convs), tf_dtype_name("fp32")),
            "bf16": bf16,
        }
        graphs = {p: self._encoder_graph(o) for p, o in both.items()}
        batch = np.zeros([batch_size, IMAGE_SIZE, IMAGE_SIZE, 3], np.float32)

        def run(graph: Any) -> Callable[[], object]:
            return lambda: graph(batch).numpy()

        runs = {p: run(graph) for p, graph in graphs.items()}
        measure = calibrate or (lambda encoders, size: measure_encoders(encoders, batch_size=size))
        calibration = measure(runs, batch_size)
        if memory is not None:
            memory.remember(key, calibration)
        chosen = self._choose(requested, calibration, "timed now")
        return chosen, calibration, both[chosen], graphs[chosen]

    def _one_encoder(
        self, weights: Im2txtWeights, precision: Precision
    ) -> tuple[FoldedConvOps, Any]:
        """The encoder in one precision, its weights taken over from ``weights``."""
        ops = FoldedConvOps(_drain(weights.convs), tf_dtype_name(precision))
        return ops, self._encoder_graph(ops)

    @staticmethod
    def _choose(requested: PrecisionChoice, calibration: Calibration, origin: str) -> Precision:
        """The precision to run by ``calibration``, said in the log (a poor choice warned)."""
        chosen, warning = choose_precision(requested, calibration)
        if warning:
            logger.warning(warning)
        logger.info(
            "precision %s (asked for %s; %s, %s)", chosen, requested, calibration.describe(), origin
        )
        return chosen

    def check_parameters(self, beam_size: int, max_length: int) -> None:
        """Refuse search parameters no call could use.

        Raises:
            InvalidRequestError: naming the parameter and its range.
        """
        if not 1 <= beam_size <= self.info.vocab_rows:
            raise InvalidRequestError(
                f"beam_size must be between 1 and {self.info.vocab_rows} (the model's word "
                f"rows), got {beam_size}",
                field="beam_size",
            )
        if max_length < MIN_MAX_LENGTH:
            raise InvalidRequestError(
                f"max_length must be at least {MIN_MAX_LENGTH} (<S>, a word, </S>), got "
                f"{max_length}",
                field="max_length",
            )

    def _search(self, beam_size: int, max_length: int) -> Any:
        """One traced beam-search graph per (beam size, max length), any batch size."""
        key = (beam_size, max_length)
        if key not in self._searches:
            tf = self._tf
            decoder = self._decoder
            vocabulary = self.vocabulary

            def run(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
                result = beam_search(
                    decoder.initial_state(features),
                    decoder.step,
                    start_id=vocabulary.start_id,
                    end_id=vocabulary.end_id,
                    beam_size=beam_size,
                    max_length=max_length,
                )
                return result.words, result.lengths, result.logprobs

            spec = tf.TensorSpec([None, self.info.image_feature_size], tf.float32)
            self._searches[key] = tf.function(run, input_signature=[spec], autograph=False)
        return self._searches[key]

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


def _small_jpeg() -> bytes:
    """An 8x8 grey JPEG: enough to run preprocessing once."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _drain(convs: dict[str, ConvWeights]) -> Iterator[tuple[str, ConvWeights]]:
    """Hand the convs over one at a time, in order, each dropped from ``convs`` as it goes."""
    while convs:
        name = next(iter(convs))
        yield name, convs.pop(name)


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
