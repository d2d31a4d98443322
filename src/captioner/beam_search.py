"""im2txt's beam search, batched over images, as TensorFlow ops (runs inside ``tf.function``).

The semantics are the original ``caption_generator.py``'s (docs/faithfulness.md, "The beam
search"):

- at most ``max_length - 1`` steps, stopping early when no partial caption is left;
- per partial caption, its ``beam_size`` most probable next words (ties: lower id first),
  skipping words with probability below 1e-12;
- log-probabilities accumulate in float64, no length normalisation;
- candidates ending in the end word join the complete set, others the partial set; each
  set keeps its ``beam_size`` best, and a newcomer that only ties the worst kept one is
  dropped (complete captions of every step compete in one set);
- the result is the complete set if it holds anything, else the partial set, never a mix.

Both sets are fixed-size ``[B, K]`` slots; an empty slot has log-probability ``-inf``.

One shortcut the original does not take, with the same result: an image is finished once
its complete set is full and no partial caption scores above the worst complete one. A
word's log-probability is at most 0, so every later candidate scores at most its partial
parent, and a newcomer that does not beat the worst kept caption is dropped: the complete
set can no longer change. The loop ends when every image of the batch is finished; a
trained model's captions end well before ``max_length``, so this saves the late steps,
each of which multiplies every caption by the whole LSTM kernel and word matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

# The shortest max_length that can hold a word: <S>, one word, </S>. Below it every caption
# is empty, so the engine, the server and the command line refuse it rather than answer "".
MIN_MAX_LENGTH = 3

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["MIN_WORD_PROBABILITY", "BeamResult", "StepFn", "beam_search"]

MIN_WORD_PROBABILITY = 1e-12

# (words int32 [N], state float32 [N, S]) -> (probabilities float32 [N, V], new state [N, S])
StepFn = Callable[["tf.Tensor", "tf.Tensor"], tuple["tf.Tensor", "tf.Tensor"]]


@dataclass(frozen=True)
class BeamResult:
    """Best-first captions per image.

    Attributes:
        words: int32 ``[B, K, L]``, each caption from the start word on.
        lengths: int32 ``[B, K]``, how many of ``words`` are used.
        logprobs: float64 ``[B, K]``; ``-inf`` marks an empty slot (fewer than K captions).
        steps: int32 scalar, how many decoder steps ran (at most ``max_length - 1``).
    """

    words: tf.Tensor
    lengths: tf.Tensor
    logprobs: tf.Tensor
    steps: tf.Tensor


def beam_search(
    initial_state: tf.Tensor,
    step: StepFn,
    *,
    start_id: int,
    end_id: int,
    beam_size: int,
    max_length: int,
) -> BeamResult:
    """Run the original im2txt beam search for every image of a batch at once.

    Args:
        initial_state: float32 ``[B, S]``, the decoder state after the image.
        step: the decoder's step function.
        start_id, end_id: the vocabulary's ``<S>`` and ``</S>`` ids.
        beam_size: K, captions kept per set (and next words tried per partial caption).
        max_length: L, the longest caption in tokens, counting ``<S>`` and ``</S>``: at
            most L - 2 words of text (a partial caption loses its last word, as in the
            original).

    Returns:
        The complete captions of each image, or its partial ones if none completed.
    """
    import tensorflow as tf

    if beam_size < 1 or max_length < 1:
        raise ValueError("beam_size and max_length must be at least 1")
    k, length = beam_size, max_length
    batch = tf.shape(initial_state)[0]
    state_size = initial_state.shape[-1]
    neg_inf = tf.constant(-float("inf"), tf.float64)

    # The partial set starts as one caption [<S>] of log-probability 0 in slot 0.
    partial_words = tf.pad(tf.fill([batch, k, 1], start_id), [[0, 0], [0, 0], [0, length - 1]])
    partial_logprobs = tf.concat(
        [tf.zeros([batch, 1], tf.float64), tf.fill([batch, k - 1], neg_inf)], axis=1
    )
    partial_states = tf.tile(initial_state[:, tf.newaxis, :], [1, k, 1])
    complete_words = tf.zeros([batch, k, length], tf.int32)
    complete_lengths = tf.zeros([batch, k], tf.int32)
    complete_logprobs = tf.fill([batch, k], neg_inf)
    # Candidate c = parent * K + rank: the original's order (parent, then rank).
    parents = tf.repeat(tf.range(k), k)

    def keep_going(
        i: tf.Tensor, _: tf.Tensor, p_logprobs: tf.Tensor, *rest: tf.Tensor
    ) -> tf.Tensor:
        # An image is finished when no partial caption can still enter its complete set
        # (the module docstring says why); with an empty slot in the complete set, only
        # when no partial caption is left. The loop variables end with c_logprobs.
        c_logprobs = rest[-1]
        can_improve = tf.reduce_max(p_logprobs, axis=1) > tf.reduce_min(c_logprobs, axis=1)
        return tf.logical_and(i < length - 1, tf.reduce_any(can_improve))

    def one_step(
        i: tf.Tensor,
        p_words: tf.Tensor,
        p_logprobs: tf.Tensor,
        p_states: tf.Tensor,
        c_words: tf.Tensor,
        c_lengths: tf.Tensor,
        c_logprobs: tf.Tensor,
    ) -> tuple[tf.Tensor, ...]:
        last_words = tf.reshape(tf.gather(p_words, i, axis=2), [-1])
        probs, new_states = step(last_words, tf.reshape(p_states, [-1, state_size]))
        top_probs, top_words = tf.math.top_k(probs, k=k)  # ties: lower id first
        top_probs = tf.reshape(top_probs, [batch, k * k])
        top_words = tf.reshape(top_words, [batch, k * k])
        parent_logprobs = tf.gather(p_logprobs, parents, axis=1)
        valid = tf.logical_and(parent_logprobs > neg_inf, top_probs >= MIN_WORD_PROBABILITY)
        # As the original: log of the float32 probability, summed in float64.
        cand_logprobs = tf.where(
            valid, parent_logprobs + tf.math.log(tf.cast(top_probs, tf.float64)), neg_inf
        )
        is_end = tf.equal(top_words, end_id)
        cand_words = tf.gather(p_words, parents, axis=1)
        position = tf.one_hot(i + 1, length, dtype=tf.int32)
        cand_words = cand_words * (1 - position) + top_words[:, :, tf.newaxis] * position

        # Partial set: the K best non-ending candidates, sorted best first.
        best_logprobs, best = tf.math.top_k(tf.where(is_end, neg_inf, cand_logprobs), k=k)
        p_words = tf.gather(cand_words, best, batch_dims=1)
        best_parents = tf.gather(parents, best)
        p_states = tf.gather(
            tf.reshape(new_states, [batch, k, state_size]), best_parents, batch_dims=1
        )

        # Complete set: kept captions come first, so a newcomer that only ties loses.
        pool_logprobs = tf.concat([c_logprobs, tf.where(is_end, cand_logprobs, neg_inf)], axis=1)
        pool_words = tf.concat([c_words, cand_words], axis=1)
        pool_lengths = tf.concat([c_lengths, tf.fill([batch, k * k], i + 2)], axis=1)
        c_logprobs, kept = tf.math.top_k(pool_logprobs, k=k)
        c_words = tf.gather(pool_words, kept, batch_dims=1)
        c_lengths = tf.gather(pool_lengths, kept, batch_dims=1)
        return i + 1, p_words, best_logprobs, p_states, c_words, c_lengths, c_logprobs

    steps, p_words, p_logprobs, _, c_words, c_lengths, c_logprobs = tf.while_loop(
        keep_going,
        one_step,
        (
            tf.constant(0),
            partial_words,
            partial_logprobs,
            partial_states,
            complete_words,
            complete_lengths,
            complete_logprobs,
        ),
    )
    has_complete = tf.reduce_any(c_logprobs > neg_inf, axis=1)
    partial_lengths = tf.fill([batch, k], steps + 1)
    pick = has_complete[:, tf.newaxis]
    return BeamResult(
        words=tf.where(pick[:, :, tf.newaxis], c_words, p_words),
        lengths=tf.where(pick, c_lengths, partial_lengths),
        logprobs=tf.where(pick, c_logprobs, p_logprobs),
        steps=steps,
    )
