"""Show and Tell as trainable TensorFlow variables, named as the im2txt checkpoint names them.

Training reuses the inference code's wiring (:func:`captioner.encoder.inception_v3`) and
LSTM step (:func:`captioner.decoder.basic_lstm_cell`), so a trained model computes in the
engine exactly what it computed here. Only the conv operations differ: each conv is
followed by slim's batch norm without scale, normalising by the batch statistics while
the encoder trains and by the moving averages otherwise, and the moving averages are what
the engine folds into its convs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from captioner.checkpoint import LSTM_NAMINGS, Im2txtWeights, im2txt_tensor_shapes
from captioner.decoder import basic_lstm_cell
from captioner.encoder import BATCH_NORM_EPSILON, SCOPE, FoldedConvOps, inception_v3

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["BATCH_NORM_DECAY", "AuxiliaryWordPredictor", "ModelSize", "ShowAndTell"]

# Weight of the old value in each moving-average update (slim's im2txt used 0.9997 over
# millions of steps; a short run needs averages that follow the weights more closely).
BATCH_NORM_DECAY = 0.99
# im2txt's initializer_scale: every decoder weight starts uniform in [-0.08, 0.08].
_DECODER_INIT_SCALE = 0.08
_KERNEL, _BIAS = LSTM_NAMINGS[0]
_STATISTICS = ("/BatchNorm/moving_mean", "/BatchNorm/moving_variance")


@dataclass(frozen=True)
class ModelSize:
    """The widths of a model trained from scratch.

    Attributes:
        vocab_rows: Word rows of the embedding and softmax (the vocabulary with ``<UNK>``).
        embedding_size: Size of word and image embeddings (512 in the original).
        lstm_units: LSTM state size H (512 in the original).
        depth_multiplier: Inception channel multiplier (1.0 in the original).
        min_depth: The floor of every scaled Inception channel count (slim's 16).
    """

    vocab_rows: int
    embedding_size: int = 512
    lstm_units: int = 512
    depth_multiplier: float = 1.0
    min_depth: int = 16


class ShowAndTell:
    """Every im2txt tensor as a ``tf.Variable`` keyed by its checkpoint name.

    Build with :meth:`initialize` (from scratch) or :meth:`from_weights` (fine-tuning or
    resuming); :meth:`tensors` gives back what :func:`~captioner.checkpoint.save_checkpoint`
    writes.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], global_step: int = 0) -> None:
        """Wrap float32 arrays keyed by checkpoint name (without ``global_step``)."""
        import tensorflow as tf

        self._tf = tf
        self.global_step = global_step
        self.variables: dict[str, tf.Variable] = {
            name: tf.Variable(np.asarray(value, np.float32), name=name.replace("/", "__"))
            for name, value in tensors.items()
        }
        statistics = [n for n in self.variables if n.endswith(_STATISTICS)]
        encoder = [n for n in self.variables if n.startswith(f"{SCOPE}/")]
        #: Conv kernels and BN betas: trained only in the second phase.
        self.encoder_weights = [self.variables[n] for n in encoder if n not in statistics]
        #: Embeddings, LSTM and logits: trained in both phases.
        self.decoder_weights = [self.variables[n] for n in self.variables if n not in encoder]
        self.feature_size = int(self.variables["image_embedding/weights"].shape[0])
        self.vocab_rows = int(self.variables["logits/biases"].shape[0])
        self.lstm_units = int(self.variables["logits/weights"].shape[0])

    @classmethod
    def initialize(cls, size: ModelSize, seed: int) -> ShowAndTell:
        """A fresh model: He-normal convs, zero BN, decoder uniform in +-0.08 (as im2txt).

        Values come from NumPy's generator seeded with ``seed``, so a seed gives the same
        model on any machine.
        """
        rng = np.random.default_rng(seed)
        shapes = im2txt_tensor_shapes(
            depth_multiplier=size.depth_multiplier,
            vocab_rows=size.vocab_rows,
            embedding_size=size.embedding_size,
            lstm_units=size.lstm_units,
            min_depth=size.min_depth,
        )
        tensors: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            if name == "global_step":
                continue
            if name.endswith("/weights") and name.startswith(f"{SCOPE}/"):
                fan_in = shape[0] * shape[1] * shape[2]
                value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif name.endswith("/moving_variance"):
                value = np.ones(shape)
            elif name.startswith(f"{SCOPE}/"):  # beta, moving_mean
                value = np.zeros(shape)
            else:
                value = rng.uniform(-_DECODER_INIT_SCALE, _DECODER_INIT_SCALE, shape)
            tensors[name] = value.astype(np.float32)
        return cls(tensors)

    @classmethod
    def from_weights(cls, weights: Im2txtWeights) -> ShowAndTell:
        """A model holding a loaded checkpoint's values (any of its LSTM namings)."""
        tensors: dict[str, np.ndarray] = {}
        for name, conv in weights.convs.items():
            scoped = f"{SCOPE}/{name}"
            tensors[f"{scoped}/weights"] = conv.weights
            tensors[f"{scoped}/BatchNorm/beta"] = conv.beta
            tensors[f"{scoped}/BatchNorm/moving_mean"] = conv.moving_mean
            tensors[f"{scoped}/BatchNorm/moving_variance"] = conv.moving_variance
        tensors.update(
            {
                "image_embedding/weights": weights.image_embedding,
                "seq_embedding/map": weights.seq_embedding,
                _KERNEL: weights.lstm_kernel,
                _BIAS: weights.lstm_bias,
                "logits/weights": weights.logits_weights,
                "logits/biases": weights.logits_biases,
            }
        )
        return cls(tensors, global_step=weights.global_step)

    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor by checkpoint name, plus int32 ``global_step``, ready to save."""
        tensors = {name: variable.numpy() for name, variable in self.variables.items()}
        tensors["global_step"] = np.array(self.global_step, np.int32)
        return tensors

    def encode(
        self, pixels: tf.Tensor, training: bool, statistics_weight: float | tf.Tensor | None = None
    ) -> tf.Tensor:
        """Image features.

        Args:
            pixels: float32 ``[B, 299, 299, 3]`` in [-1, 1].
            training: normalise by batch statistics and move the averages toward them
                (the encoder is being trained), else use the moving averages (inference).
            statistics_weight: in training, the weight of this batch's statistics in the
                new moving averages; default ``1 - BATCH_NORM_DECAY``. ``1 / k`` at the
                k-th of a series of batches makes the averages their exact mean.

        Returns:
            float32 ``[B, F]``.
        """
        if statistics_weight is None:
            statistics_weight = 1.0 - BATCH_NORM_DECAY
        ops = _BatchNormConvOps(
            self.variables, training=training, statistics_weight=statistics_weight
        )
        return inception_v3(pixels, ops)

    def caption_loss(
        self, features: tf.Tensor, words: tf.Tensor, mask: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher-forced cross-entropy of each next word, summed over unmasked words.

        As in im2txt: the image embedding is fed once from a zero state, then word ``t``
        is fed to predict word ``t + 1``.

        Args:
            features: float32 ``[B, F]`` image features.
            words: int32 ``[B, T]`` caption ids from ``<S>`` to ``</S>``, padded.
            mask: float32 ``[B, T]``, 1 where ``words`` holds a word, 0 on padding.

        Returns:
            float32 scalars: the summed loss and the number of predicted words.
        """
        tf = self._tf
        v = self.variables
        kernel, bias = v[_KERNEL], v[_BIAS]
        zero = tf.zeros([tf.shape(features)[0], 2 * self.lstm_units], tf.float32)
        state = basic_lstm_cell(
            tf.matmul(features, v["image_embedding/weights"]), zero, kernel, bias
        )[1]
        inputs = tf.gather(v["seq_embedding/map"], words[:, :-1])
        outputs = []
        for t in range(int(words.shape[1]) - 1):
            h, state = basic_lstm_cell(inputs[:, t], state, kernel, bias)
            outputs.append(h)
        hidden = tf.stack(outputs, axis=1)  # [B, T-1, H]
        logits = tf.einsum("bth,hv->btv", hidden, v["logits/weights"]) + v["logits/biases"]
        return _next_word_loss(logits, words, mask)


class _BatchNormConvOps(FoldedConvOps):
    """Inception ops for training: conv, slim's scale-free batch norm, ReLU.

    Pools, concatenation and the final pool are inherited from the inference ops, so both
    compute them identically.
    """

    def __init__(
        self,
        variables: Mapping[str, tf.Variable],
        *,
        training: bool,
        statistics_weight: float | tf.Tensor,
    ) -> None:
        super().__init__(())
        self._variables = variables
        self._training = training
        self._weight = statistics_weight

    def conv(
        self,
        x: tf.Tensor,
        name: str,
        kernel: tuple[int, int],
        depth: int,
        stride: int,
        padding: str,
    ) -> tf.Tensor:
        tf = self._tf
        scoped = f"{SCOPE}/{name}"
        y = tf.nn.conv2d(x, self._variables[f"{scoped}/weights"], strides=stride, padding=padding)
        beta = self._variables[f"{scoped}/BatchNorm/beta"]
        mean = self._variables[f"{scoped}/BatchNorm/moving_mean"]
        variance = self._variables[f"{scoped}/BatchNorm/moving_variance"]
        scale = tf.ones_like(beta)  # slim's Inception trains no gamma
        if self._training:
            y, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
                y, scale, beta, epsilon=BATCH_NORM_EPSILON, is_training=True
            )
            mean.assign_sub(self._weight * (mean - batch_mean))
            variance.assign_sub(self._weight * (variance - batch_variance))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                y, scale, beta, mean, variance, epsilon=BATCH_NORM_EPSILON, is_training=False
            )
        return tf.nn.relu(y)


class AuxiliaryWordPredictor:
    """A shallow word predictor trained beside the LSTM and never saved (not in im2txt).

    It predicts each caption word from the image features, the previous word and the
    word's position: ``softmax(relu(f A + P[w_t-1] + Q[t]) B + b)``. Its gradient reaches
    the encoder through one hidden layer, where the LSTM's must cross the cell once per
    word from the single image step. A freshly initialised encoder learns to see from
    this short path while the LSTM learns to use what it sees; a trained one gains little.
    """

    # Positions past this share the last position's vector.
    MAX_POSITIONS = 64

    def __init__(self, feature_size: int, vocab_rows: int, hidden: int, seed: int) -> None:
        """Create its variables, seeded (zero output layer: it starts uninformed)."""
        import tensorflow as tf

        self._tf = tf
        rng = np.random.default_rng([seed, 1])
        shapes = {
            "features": (feature_size, hidden, 1.0 / np.sqrt(feature_size)),
            "previous_word": (vocab_rows, hidden, 0.1),
            "position": (self.MAX_POSITIONS, hidden, 0.1),
        }
        self.variables = [
            tf.Variable(rng.normal(0.0, scale, [rows, cols]).astype(np.float32))
            for rows, cols, scale in shapes.values()
        ]
        self.variables += [
            tf.Variable(np.zeros([hidden, vocab_rows], np.float32)),
            tf.Variable(np.zeros([vocab_rows], np.float32)),
        ]

    def caption_loss(
        self, features: tf.Tensor, words: tf.Tensor, mask: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Cross-entropy of each next word, as :meth:`ShowAndTell.caption_loss` returns it.

        Args:
            features: float32 ``[B, F]``; words: int32 ``[B, T]``; mask: float32 ``[B, T]``.

        Returns:
            float32 scalars: the summed loss and the number of predicted words.
        """
        tf = self._tf
        from_features, previous, position, output, output_bias = self.variables
        steps = tf.shape(words)[1] - 1
        positions = tf.minimum(tf.range(steps), self.MAX_POSITIONS - 1)
        hidden = tf.nn.relu(
            tf.matmul(features, from_features)[:, tf.newaxis, :]
            + tf.gather(previous, words[:, :-1])
            + tf.gather(position, positions)[tf.newaxis]
        )
        logits = tf.einsum("bth,hv->btv", hidden, output) + output_bias
        return _next_word_loss(logits, words, mask)


def _next_word_loss(
    logits: tf.Tensor, words: tf.Tensor, mask: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Summed cross-entropy of ``logits[:, t]`` (float32 ``[B, T-1, V]``) against word t+1.

    Returns:
        float32 scalars: the loss summed over unmasked targets, and their number.
    """
    import tensorflow as tf

    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=words[:, 1:], logits=logits)
    target_mask = mask[:, 1:]
    return tf.reduce_sum(losses * target_mask), tf.reduce_sum(target_mask)
