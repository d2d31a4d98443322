"""The in-graph beam search against the oracle of im2txt's own caption_generator_test.

A fake model (vocabulary of 12, start 0, end 1) whose next-word probabilities depend only on
the previous word; expected sentences and probabilities are SPEC.md's.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from captioner.beam_search import beam_search

NEXT_WORD = {
    0: {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4},
    2: {5: 0.1, 6: 0.9},
    3: {1: 0.1, 7: 0.4, 8: 0.5},
    4: {1: 0.3, 9: 0.3, 10: 0.4},
    5: {1: 1.0},
    6: {1: 1.0},
    7: {1: 1.0},
    8: {1: 1.0},
    9: {1: 0.5, 11: 0.5},
    10: {1: 1.0},
    11: {1: 1.0},
}


def _table() -> tf.Tensor:
    table = np.zeros((12, 12), np.float32)
    for prev, nexts in NEXT_WORD.items():
        for word, p in nexts.items():
            table[prev, word] = p
    return tf.constant(table)


def _run(beam_size: int, max_length: int, batch: int = 1) -> list[list[tuple[list[int], float]]]:
    table = _table()

    def step(words: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(table, words), state

    result = beam_search(
        tf.zeros([batch, 2]),
        step,
        start_id=0,
        end_id=1,
        beam_size=beam_size,
        max_length=max_length,
    )
    out = []
    for words, lengths, logprobs in zip(
        result.words.numpy(), result.lengths.numpy(), result.logprobs.numpy(), strict=True
    ):
        out.append(
            [
                (list(map(int, w[:n])), float(np.exp(lp)))
                for w, n, lp in zip(words, lengths, logprobs, strict=True)
                if np.isfinite(lp)
            ]
        )
    return out


@pytest.mark.parametrize(
    ("beam_size", "max_length", "expected"),
    [
        (1, 20, [([0, 4, 10, 1], 0.16)]),
        (2, 20, [([0, 4, 10, 1], 0.16), ([0, 3, 8, 1], 0.15)]),
        (3, 20, [([0, 2, 6, 1], 0.18), ([0, 4, 10, 1], 0.16), ([0, 3, 8, 1], 0.15)]),
        (3, 1, [([0], 1.0)]),
        (3, 2, [([0, 4], 0.4), ([0, 3], 0.3), ([0, 2], 0.2)]),
        (3, 3, [([0, 4, 1], 0.12), ([0, 3, 1], 0.03)]),
    ],
)
def test_oracle(beam_size: int, max_length: int, expected: list[tuple[list[int], float]]) -> None:
    (got,) = _run(beam_size, max_length)
    assert [s for s, _ in got] == [s for s, _ in expected]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in expected], rtol=1e-6)


def test_every_image_of_a_batch_gets_the_same_answer_as_alone() -> None:
    alone = _run(3, 20)[0]
    assert _run(3, 20, batch=4) == [alone] * 4


def test_rejects_empty_beam() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        _run(0, 20)
