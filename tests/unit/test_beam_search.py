"""The in-graph beam search against the oracle of im2txt's own caption_generator_test.

A fake model (vocabulary of 12, start 0, end 1) whose next-word probabilities depend only on
the previous word; expected sentences and probabilities are those of im2txt's own
caption-generator test.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from captioner.beam_search import beam_search
from support.reference import original_beam_search

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


# Captions that never run out: 4 and 5 repeat themselves forever, so a partial caption is
# always left and only the shortcut can end the search before max_length.
ENDLESS = {
    0: {2: 0.6, 3: 0.4},
    2: {1: 0.9, 4: 0.1},
    3: {1: 0.8, 4: 0.2},
    4: {4: 0.5, 1: 0.3, 5: 0.2},
    5: {5: 0.9, 1: 0.1},
}


def _table(next_word: dict[int, dict[int, float]] = NEXT_WORD) -> np.ndarray:
    table = np.zeros((12, 12), np.float32)
    for prev, nexts in next_word.items():
        for word, p in nexts.items():
            table[prev, word] = p
    return table


def _search(
    beam_size: int,
    max_length: int,
    batch: int = 1,
    next_word: dict[int, dict[int, float]] = NEXT_WORD,
) -> tuple[list[list[tuple[list[int], float]]], int]:
    """Each image's (sentence, probability) pairs best first, and the steps that ran."""
    table = tf.constant(_table(next_word))

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
    return out, int(result.steps)


def _run(beam_size: int, max_length: int, batch: int = 1) -> list[list[tuple[list[int], float]]]:
    return _search(beam_size, max_length, batch)[0]


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


@pytest.mark.parametrize(("beam_size", "max_length"), [(3, 20), (2, 20), (1, 20), (3, 4)])
def test_stops_once_no_partial_caption_can_win_with_the_originals_answer(
    beam_size: int, max_length: int
) -> None:
    table = _table(ENDLESS)

    def step(words: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return table[words].astype(np.float64), states

    # The original runs every step here: a partial caption is always left.
    want = original_beam_search(
        step, np.zeros(2), start_id=0, end_id=1, beam_size=beam_size, max_length=max_length
    )
    got, steps = _search(beam_size, max_length, batch=2, next_word=ENDLESS)
    assert got[0] == got[1]
    assert [s for s, _ in got[0]] == [s for s, _ in want]
    np.testing.assert_allclose([p for _, p in got[0]], [np.exp(lp) for _, lp in want], rtol=1e-6)
    # Beam 3: the complete set is full after step 3 and no partial caption beats its worst
    # one after step 4; smaller beams fill it sooner.
    assert steps <= min(4, max_length - 1)


def test_runs_to_the_length_while_nothing_completes() -> None:
    (got,), steps = _search(3, 20, next_word={0: {2: 1.0}, 2: {2: 1.0}})
    assert steps == 19
    assert got == [([0] + [2] * 19, 1.0)]
