"""The caption decoder: image embedding, one TF BasicLSTMCell step, word softmax.

The maths is docs/faithfulness.md's "The decoder". The LSTM state travels as
``concat([c, h])`` (``[N, 2H]``), as im2txt fed it between inference steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captioner.checkpoint import Im2txtWeights

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["FORGET_BIAS", "Decoder", "basic_lstm_cell"]

# BasicLSTMCell adds this to the forget gate at run time; it is not in the stored bias.
FORGET_BIAS = 1.0


def basic_lstm_cell(
    x: tf.Tensor, state: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """One TF BasicLSTMCell step (gate order i, j, f, o; forget bias added at run time).

    Shared by inference and training, so both compute exactly the same cell.

    Args:
        x: float32 ``[N, E]`` input.
        state: float32 ``[N, 2H]``, ``concat([c, h])``.
        kernel: float32 ``[E + H, 4H]``; bias: float32 ``[4H]``.

    Returns:
        ``h'`` ``[N, H]`` and the new state ``concat([c', h'])`` ``[N, 2H]``.
    """
    import tensorflow as tf

    c, h = tf.split(state, 2, axis=1)
    z = tf.nn.bias_add(tf.matmul(tf.concat([x, h], axis=1), kernel), bias)
    i, j, f, o = tf.split(z, 4, axis=1)
    new_c = c * tf.sigmoid(f + FORGET_BIAS) + tf.sigmoid(i) * tf.tanh(j)
    new_h = tf.tanh(new_c) * tf.sigmoid(o)
    return new_h, tf.concat([new_c, new_h], axis=1)


class Decoder:
    """The LSTM half of Show and Tell, as TensorFlow ops over weights held once.

    It computes in float32 in both of the engine's precisions: in bfloat16 its matrix
    products at beam-search sizes (3 to 24 rows) ran no faster here, and the rounded word
    scores changed several times more captions than a bfloat16 encoder does.
    """

    def __init__(self, weights: Im2txtWeights) -> None:
        import tensorflow as tf

        self._tf = tf
        self.lstm_units = weights.lstm_units
        self.vocab_rows = weights.vocab_rows
        # Variables, not constants: a constant captured by a graph keeps a second copy.
        self._variables = [
            tf.Variable(array, trainable=False)
            for array in (
                weights.image_embedding,
                weights.seq_embedding,
                weights.lstm_kernel,
                weights.lstm_bias,
                weights.logits_weights,
                weights.logits_biases,
            )
        ]
        (
            self._image_embedding,
            self._seq_embedding,
            self._kernel,
            self._bias,
            self._logits_weights,
            self._logits_biases,
        ) = self._variables

    @property
    def weight_bytes(self) -> int:
        """Bytes held by the decoder's weights."""
        return sum(v.shape.num_elements() * v.dtype.size for v in self._variables)

    def initial_state(self, features: tf.Tensor) -> tf.Tensor:
        """Feed the image once from a zero state.

        Args:
            features: float32 ``[B, F]`` image features.

        Returns:
            float32 ``[B, 2H]``, the state ``concat([c, h])`` before the start word.
        """
        tf = self._tf
        embedded = tf.matmul(features, self._image_embedding)
        zero = tf.zeros([tf.shape(features)[0], 2 * self.lstm_units], tf.float32)
        return basic_lstm_cell(embedded, zero, self._kernel, self._bias)[1]

    def step(self, words: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Feed one word per sequence.

        Args:
            words: int32 ``[N]`` word ids.
            state: float32 ``[N, 2H]``.

        Returns:
            float32 ``[N, V]`` softmax over every vocabulary row, and the new ``[N, 2H]`` state.
        """
        tf = self._tf
        x = tf.gather(self._seq_embedding, words)
        h, new_state = basic_lstm_cell(x, state, self._kernel, self._bias)
        logits = tf.nn.bias_add(tf.matmul(h, self._logits_weights), self._logits_biases)
        return tf.nn.softmax(logits), new_state
