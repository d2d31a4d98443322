"""The training loop: im2txt's two phases, Adam, checkpoints in the original layout, resume.

Phase 1 trains the decoder on a frozen encoder, whose features are computed once; phase 2
trains the whole model. Each phase has its own Adam with a linear warm-up, a cosine decay
to zero and global-norm clipping (im2txt clipped at 5). The loss is im2txt's: the
teacher-forced cross-entropy of every next word, averaged over the unpadded words.

A run directory (:mod:`captioner.training.run_dir`) holds what the engine loads and what
resuming needs. Batches are a pure function of
the seed, the phase and the step, and model values come from a seeded NumPy generator,
so a run is reproducible and a resumed run continues exactly as if never stopped.

Two additions to im2txt's recipe serve a model trained from scratch: batch-norm moving
averages are recomputed exactly before the encoder is used in inference mode (a new
encoder at the start, every saved checkpoint of phase 2), and an optional auxiliary word
loss (``aux_weight``) gives a new encoder a short gradient path. Neither changes what is
saved: the checkpoint holds exactly the original tensors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from captioner.checkpoint import load_checkpoint
from captioner.engine import DEFAULT_MAX_IMAGE_PIXELS
from captioner.errors import CheckpointError, DatasetError
from captioner.training.config import TrainingConfig
from captioner.training.dataset import (
    Example,
    group_by_image,
    read_dataset,
    split_by_image,
)
from captioner.training.inputs import EncodedCaptions, ImageStore, encode_captions
from captioner.training.model import AuxiliaryWordPredictor, ModelSize, ShowAndTell
from captioner.training.run_dir import RunDirectory, TrainerState
from captioner.training.tokenizer import count_words, select_vocabulary, write_word_counts
from captioner.vocabulary import Vocabulary

if TYPE_CHECKING:
    from tensorflow import Tensor

__all__ = ["TrainingResult", "train"]

_ENCODE_BATCH = 32
# Batch-norm statistics are averaged over this many training images (see
# _BatchNormCalibrator), drawn with the run's seed on a stream of their own.
_CALIBRATION_IMAGES = 512
_CALIBRATION_STREAM = 3
_LOSS_SMOOTHING = 0.95  # weight of the past in the progress bar's running loss


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run produced.

    Attributes:
        checkpoint: The prefix of the final checkpoint.
        vocab: Its ``word_counts.txt``.
        global_step: The step saved in the checkpoint.
        train_loss: The running training loss at the end (mean per word, nats).
        held_out_loss: The held-out loss of the final model, or None without a split.
        wall_s: Seconds this call took.
    """

    checkpoint: Path
    vocab: Path
    global_step: int
    train_loss: float
    held_out_loss: float | None
    wall_s: float


@dataclass(frozen=True)
class _Phase:
    number: int
    name: str
    steps: int
    learning_rate: float
    train_encoder: bool


@dataclass
class _Data:
    vocab_path: Path
    vocabulary: Vocabulary
    store: ImageStore
    train: EncodedCaptions
    held_out: EncodedCaptions | None


def train(
    config: TrainingConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    report: Callable[[str], None] = print,
) -> TrainingResult:
    """Train a model and write it to ``out_dir`` for the engine to load.

    Args:
        config: The run's options (with ``resume``, those saved in ``out_dir``).
        out_dir: The run directory; a new run replaces the checkpoint there.
        resume: Continue the run saved in ``out_dir`` from its last checkpoint.
        progress: Show progress bars (loss and ETA).
        report: Where one-line messages go (data summary, checkpoints, unusable images;
            the data readers log the other skipped items).

    Returns:
        Where the final checkpoint is, and its losses.

    Raises:
        DatasetError: Unusable data (with ``on_error="fail"``, the first bad item).
        CheckpointError: ``init_from`` unusable, or nothing to resume in ``out_dir``.
        VocabularyError: ``init_vocab`` unusable or not matching ``init_from``.
    """
    import tensorflow as tf

    started = time.monotonic()
    tf.config.experimental.enable_op_determinism()
    run = RunDirectory(out_dir)
    state = run.load_state() if resume else None
    data = _prepare_data(config, run, resume=resume, progress=progress, report=report)
    if not resume:
        run.start(config)
    model = _build_model(config, run, state, vocab_rows=len(data.vocabulary))
    auxiliary = _build_auxiliary(config, model, state)
    calibrate = _BatchNormCalibrator(model, data, config.seed)
    if state is None and config.init_from is None:
        # A new encoder's averages (0 and 1) normalise nothing: the features phase 1
        # trains on would nearly coincide for all images.
        calibrate()

    phases = [
        _Phase(1, "decoder", config.decoder_steps, config.learning_rate, train_encoder=False),
        _Phase(2, "full model", config.full_steps, config.full_learning_rate, train_encoder=True),
    ]
    phases = [phase for phase in phases if phase.steps > 0]
    losses: tuple[float, float | None] = (math.nan, None)
    for phase in phases:
        start_step = 0
        optimizer_values: list[np.ndarray] | None = None
        if state is not None:
            if phase.number < state.phase:
                continue
            if phase.number == state.phase:
                start_step = state.step
                optimizer_values = state.optimizer
        runner = _PhaseRunner(
            config, phase, model, auxiliary, data, run, calibrate, progress, report
        )
        losses = runner.run(start_step, optimizer_values)
    return TrainingResult(
        checkpoint=run.checkpoint_prefix(model.global_step),
        vocab=data.vocab_path,
        global_step=model.global_step,
        train_loss=losses[0],
        held_out_loss=losses[1],
        wall_s=time.monotonic() - started,
    )


def _build_model(
    config: TrainingConfig, run: RunDirectory, state: TrainerState | None, vocab_rows: int
) -> ShowAndTell:
    """The model to train: the interrupted run's, the ``init_from`` one, or a new one."""
    if state is not None:
        return ShowAndTell.from_weights(load_checkpoint(run.checkpoint_prefix(state.global_step)))
    if config.init_from is not None:
        model = ShowAndTell.from_weights(load_checkpoint(config.init_from))
        if model.vocab_rows < vocab_rows:
            raise CheckpointError(
                f"the checkpoint has {model.vocab_rows} word rows, fewer than the "
                f"{vocab_rows} words of its vocabulary {config.init_vocab}",
                path=config.init_from,
            )
        return model
    size = ModelSize(
        vocab_rows=vocab_rows,
        embedding_size=config.embedding_size,
        lstm_units=config.lstm_units,
        depth_multiplier=config.depth_multiplier,
        min_depth=config.min_depth,
    )
    return ShowAndTell.initialize(size, config.seed)


def _build_auxiliary(
    config: TrainingConfig, model: ShowAndTell, state: TrainerState | None
) -> AuxiliaryWordPredictor | None:
    """The auxiliary word predictor of phase 2, if asked for (restored when resuming)."""
    if config.aux_weight == 0 or config.full_steps == 0:
        return None
    auxiliary = AuxiliaryWordPredictor(
        model.feature_size, model.vocab_rows, model.lstm_units, config.seed
    )
    if state is not None and state.auxiliary:
        for variable, value in zip(auxiliary.variables, state.auxiliary, strict=True):
            variable.assign(value)
    return auxiliary


def _prepare_data(
    config: TrainingConfig,
    run: RunDirectory,
    *,
    resume: bool,
    progress: bool,
    report: Callable[[str], None],
) -> _Data:
    """Read, vet and split the data, write the vocabulary, preprocess the images.

    Raises:
        DatasetError: Unusable data, or (resuming) data that no longer gives the run's
            vocabulary.
    """
    examples = read_dataset(config.data, config.images, config.on_error)
    train_examples, held_out_examples = split_by_image(
        examples, config.held_out_fraction, config.seed
    )
    store = ImageStore.prepare(
        train_examples + held_out_examples,
        on_error=config.on_error,
        cache_bytes=config.image_cache_mb * 2**20,
        max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
        progress=progress,
        report=report,
    )
    usable_images = set(store.paths)
    train_examples = [ex for ex in train_examples if ex.image_path in usable_images]
    held_out_examples = [ex for ex in held_out_examples if ex.image_path in usable_images]
    vocab_path = run.vocab_path
    run.path.mkdir(parents=True, exist_ok=True)
    previous = vocab_path.read_bytes() if resume and vocab_path.is_file() else None
    if config.init_vocab is not None:
        Vocabulary.from_file(config.init_vocab)  # a clear error for an unusable file
        vocab_path.write_bytes(config.init_vocab.read_bytes())
    else:
        counts = count_words(ex.caption for ex in train_examples)
        write_word_counts(vocab_path, select_vocabulary(counts, config.min_word_count))
    if previous is not None and previous != vocab_path.read_bytes():
        vocab_path.write_bytes(previous)
        raise DatasetError(
            "the data changed since this run started: it no longer gives the run's "
            "vocabulary, so the checkpoint cannot continue on it",
            path=config.data,
        )
    vocabulary = Vocabulary.from_file(vocab_path)
    image_ids = {path: index for index, path in enumerate(store.paths)}
    report(
        f"{len(train_examples)} training captions of {_image_count(train_examples)} images, "
        f"{len(held_out_examples)} held-out captions of {_image_count(held_out_examples)} "
        f"images, {len(examples.skipped)} data problems skipped; vocabulary "
        f"{len(vocabulary)} words with <UNK>"
    )
    return _Data(
        vocab_path=vocab_path,
        vocabulary=vocabulary,
        store=store,
        train=encode_captions(train_examples, image_ids, vocabulary),
        held_out=encode_captions(held_out_examples, image_ids, vocabulary)
        if held_out_examples
        else None,
    )


def _image_count(examples: list[Example]) -> int:
    return len(group_by_image(examples))


class _BatchNormCalibrator:
    """Sets every batch-norm moving average to the exact mean of batch statistics.

    Over a fixed, seeded set of training images, with the current weights. The engine
    normalises with the moving averages; exact means make it reproduce the training-mode
    encoder, where exponential averages would still lag behind the latest weights.
    """

    def __init__(self, model: ShowAndTell, data: _Data, seed: int) -> None:
        import tensorflow as tf

        self._tf = tf
        self._store = data.store
        images = np.unique(data.train.image_index)
        rng = np.random.default_rng([seed, _CALIBRATION_STREAM])
        self._images = rng.permutation(images)[:_CALIBRATION_IMAGES]
        self._encode = tf.function(
            lambda pixels, weight: model.encode(pixels, training=True, statistics_weight=weight)
        )

    def __call__(self) -> None:
        tf = self._tf
        for k, start in enumerate(range(0, len(self._images), _ENCODE_BATCH), start=1):
            pixels = self._store.pixels(self._images[start : start + _ENCODE_BATCH])
            self._encode(tf.constant(pixels), tf.constant(1.0 / k))


class _PhaseRunner:
    """Runs one phase: its optimizer, its batches, checkpoints and held-out loss."""

    def __init__(
        self,
        config: TrainingConfig,
        phase: _Phase,
        model: ShowAndTell,
        auxiliary: AuxiliaryWordPredictor | None,
        data: _Data,
        run: RunDirectory,
        calibrate: _BatchNormCalibrator,
        progress: bool,
        report: Callable[[str], None],
    ) -> None:
        import tensorflow as tf

        self._tf = tf
        self.config = config
        self.phase = phase
        self.model = model
        self.data = data
        self.run_dir = run
        self.progress = progress
        self.report = report
        self.calibrate = calibrate
        self._held_out_graph: Any = None
        self.weights = model.decoder_weights
        # The auxiliary predictor only matters while the encoder learns (phase 2).
        self.auxiliary = auxiliary if phase.train_encoder else None
        if phase.train_encoder:
            self.weights = self.weights + model.encoder_weights
        if self.auxiliary is not None:
            self.weights = self.weights + self.auxiliary.variables
        self._features: np.ndarray | None = None

    def run(
        self, start_step: int, optimizer_values: list[np.ndarray] | None
    ) -> tuple[float, float | None]:
        """Train from ``start_step`` to the end of the phase.

        Returns:
            The running training loss and the final held-out loss (None without a split).
        """
        tf = self._tf
        optimizer = self._optimizer()
        optimizer.build(self.weights)
        if optimizer_values is not None:
            for variable, value in zip(optimizer.variables, optimizer_values, strict=True):
                variable.assign(value)
        if not self.phase.train_encoder:
            self._features = self._encode_all()
        step_fn = self._step_function(optimizer)
        bar = tqdm(
            total=self.phase.steps,
            initial=start_step,
            desc=f"phase {self.phase.number} ({self.phase.name})",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        running = math.nan
        held_out: float | None = None
        for step in range(start_step, self.phase.steps):
            batch = self.data.train.batch(self._batch_indices(step))
            loss = float(
                step_fn(
                    self._inputs(batch.image_index),
                    tf.constant(batch.words),
                    tf.constant(batch.mask),
                )
            )
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss} at step {step + 1} of phase "
                    f"{self.phase.number}: lower the learning rate"
                )
            running = (
                loss
                if math.isnan(running)
                else _LOSS_SMOOTHING * running + (1 - _LOSS_SMOOTHING) * loss
            )
            self.model.global_step += 1
            done = step + 1
            if done % self.config.checkpoint_every == 0 or done == self.phase.steps:
                if self.phase.train_encoder:
                    self.calibrate()
                held_out = self.held_out_loss()
                saved = self._save(done, optimizer)
                self.report(
                    f"phase {self.phase.number} step {done}: loss {running:.4f}, held-out "
                    f"loss {_format_loss(held_out)}, saved {saved.name}"
                )
            bar.set_postfix(loss=f"{running:.3f}", held_out=_format_loss(held_out), refresh=False)
            bar.update(1)
        bar.close()
        if start_step == self.phase.steps:
            held_out = self.held_out_loss()
        return running, held_out

    def held_out_loss(self) -> float | None:
        """Mean loss per word on the held-out captions, encoder in inference mode."""
        held_out = self.data.held_out
        if held_out is None:
            return None
        tf = self._tf
        total = count = 0.0
        if self._held_out_graph is None:
            self._held_out_graph = self._held_out_function()
        loss_fn = self._held_out_graph
        order = np.arange(len(held_out))
        for start in range(0, len(order), _ENCODE_BATCH):
            batch = held_out.batch(order[start : start + _ENCODE_BATCH])
            inputs = self._inputs(batch.image_index)
            batch_total, batch_count = loss_fn(
                inputs, tf.constant(batch.words), tf.constant(batch.mask)
            )
            total += float(batch_total)
            count += float(batch_count)
        return total / count

    def _optimizer(self) -> Any:
        """Adam, warm-up then cosine decay to zero, clipped by global norm."""
        tf = self._tf
        warmup = min(self.config.warmup_steps, self.phase.steps - 1)
        schedule = tf.keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else self.phase.learning_rate,
            decay_steps=self.phase.steps - warmup,
            warmup_target=self.phase.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        return tf.keras.optimizers.Adam(schedule, global_clipnorm=self.config.clip_norm)

    def _step_function(self, optimizer: Any) -> Any:
        tf = self._tf
        model = self.model
        auxiliary = self.auxiliary
        aux_weight = self.config.aux_weight
        weights = self.weights
        train_encoder = self.phase.train_encoder

        def step(inputs: Tensor, words: Tensor, mask: Tensor) -> Tensor:
            """One update; returns the caption loss (without the auxiliary one)."""
            with tf.GradientTape() as tape:
                features = model.encode(inputs, training=True) if train_encoder else inputs
                total, count = model.caption_loss(features, words, mask)
                loss = total / count
                objective = loss
                if auxiliary is not None:
                    aux_total, aux_count = auxiliary.caption_loss(features, words, mask)
                    objective = loss + aux_weight * aux_total / aux_count
            gradients = tape.gradient(objective, weights)
            optimizer.apply_gradients(zip(gradients, weights, strict=True))
            return loss

        return tf.function(step)

    def _held_out_function(self) -> Any:
        tf = self._tf
        model = self.model
        encode = self.phase.train_encoder

        def loss(inputs: Tensor, words: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
            features = model.encode(inputs, training=False) if encode else inputs
            return model.caption_loss(features, words, mask)

        return tf.function(loss)

    def _inputs(self, image_index: np.ndarray) -> Any:
        """Cached features (phase 1) or preprocessed pixels (phase 2) of a batch."""
        if self._features is not None:
            return self._tf.constant(self._features[image_index])
        return self._tf.constant(self.data.store.pixels(image_index))

    def _encode_all(self) -> np.ndarray:
        """Features of every image with the frozen encoder, float32 ``[N, F]``: phase 1."""
        tf = self._tf
        store = self.data.store
        encode = tf.function(lambda pixels: self.model.encode(pixels, training=False))
        chunks = []
        starts = range(0, len(store), _ENCODE_BATCH)
        for start in tqdm(starts, desc="encoding images", unit="batch", disable=not self.progress):
            indices = np.arange(start, min(start + _ENCODE_BATCH, len(store)))
            chunks.append(encode(tf.constant(store.pixels(indices))).numpy())
        return np.concatenate(chunks)

    def _batch_indices(self, step: int) -> np.ndarray:
        """The captions of ``step``: epochs are seeded permutations, remainders dropped."""
        count = len(self.data.train)
        size = min(self.config.batch_size, count)
        per_epoch = count // size
        epoch, position = divmod(step, per_epoch)
        rng = np.random.default_rng([self.config.seed, self.phase.number, epoch])
        return rng.permutation(count)[position * size : (position + 1) * size]

    def _save(self, step: int, optimizer: Any) -> Path:
        """Save the checkpoint and the trainer state; returns the checkpoint's prefix."""
        state = TrainerState(
            phase=self.phase.number,
            step=step,
            global_step=self.model.global_step,
            optimizer=[v.numpy() for v in optimizer.variables],
            auxiliary=[v.numpy() for v in self.auxiliary.variables] if self.auxiliary else [],
        )
        return self.run_dir.save(self.model.tensors(), state)


def _format_loss(loss: float | None) -> str:
    return "n/a" if loss is None else f"{loss:.4f}"
