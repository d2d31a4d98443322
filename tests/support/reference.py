"""A slow, plain-NumPy reference of im2txt inference, written independently of the engine.

It reads tensors straight from the checkpoint with TensorFlow's reader, computes in float64,
and runs the original Python beam search (a heap-based top-N, as ``caption_generator.py``).
Only the Inception *wiring* (``captioner.encoder.inception_v3``) is shared: its layer
table is checked separately against the original tensor layout, and the encoder's features
against Keras's own InceptionV3 (``tests/integration/test_encoder_oracle.py``); every
operation it calls here (convolution, unfolded batch norm, pools, LSTM, softmax, beam
search) is NumPy code.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from captioner.checkpoint import LSTM_NAMINGS, resolve_checkpoint_prefix
from captioner.encoder import inception_v3


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kh: int, kw: int, stride: int, padding: str) -> np.ndarray:
    if padding == "VALID":
        return x
    top, bottom = _same_padding(x.shape[1], kh, stride)
    left, right = _same_padding(x.shape[2], kw, stride)
    return np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])


def _windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """[B, H, W, C] -> [B, OH, OW, C, kh, kw] strided windows."""
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return view[:, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: str) -> np.ndarray:
    kh, kw = w.shape[:2]
    win = _windows(_pad(x, kh, kw, stride, padding), kh, kw, stride)
    return np.einsum("bhwcij,ijco->bhwo", win, w, optimize=True)


def resize_bilinear_tf1(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 legacy bilinear (align_corners=False, no half-pixel centres), float32 like TF."""
    in_h, in_w = image.shape[:2]
    scale_y = np.float32(in_h / out_h)
    scale_x = np.float32(in_w / out_w)
    ys = np.arange(out_h, dtype=np.float32) * scale_y
    xs = np.arange(out_w, dtype=np.float32) * scale_x
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    dy = (ys - y0).astype(np.float32)[:, None, None]
    dx = (xs - x0).astype(np.float32)[None, :, None]
    tl, tr = image[y0][:, x0], image[y0][:, x1]
    bl, br = image[y1][:, x0], image[y1][:, x1]
    top = tl + (tr - tl) * dx
    bottom = bl + (br - bl) * dx
    return top + (bottom - top) * dy


class NumpyOps:
    """Inception operations in float64 NumPy, batch norm applied unfolded."""

    def __init__(self, reader: tf.train.CheckpointReader) -> None:
        self._reader = reader

    def _get(self, name: str) -> np.ndarray:
        return self._reader.get_tensor(f"InceptionV3/{name}").astype(np.float64)

    def conv(self, x, name, kernel, depth, stride, padding):
        y = conv2d(x, self._get(f"{name}/weights"), stride, padding)
        mean = self._get(f"{name}/BatchNorm/moving_mean")
        var = self._get(f"{name}/BatchNorm/moving_variance")
        beta = self._get(f"{name}/BatchNorm/beta")
        return np.maximum((y - mean) / np.sqrt(var + 0.001) + beta, 0.0)

    def max_pool(self, x, size, stride, padding):
        assert padding == "VALID"
        return _windows(x, size, size, stride).max(axis=(4, 5))

    def avg_pool(self, x, size, stride, padding):
        total = _windows(_pad(x, size, size, stride, padding), size, size, stride).sum(axis=(4, 5))
        ones = np.ones((1, *x.shape[1:3], 1))
        count = _windows(_pad(ones, size, size, stride, padding), size, size, stride).sum(
            axis=(4, 5)
        )
        return total / count

    def concat(self, xs):
        return np.concatenate(xs, axis=3)

    def global_pool(self, x):
        return x.mean(axis=(1, 2))


class NumpyModel:
    """The whole model in NumPy float64, read from a checkpoint by tensor name."""

    def __init__(self, checkpoint) -> None:
        self.reader = tf.train.load_checkpoint(str(resolve_checkpoint_prefix(checkpoint)))
        names = self.reader.get_variable_to_shape_map()
        kernel, bias = next(n for n in LSTM_NAMINGS if n[0] in names)
        get = lambda n: self.reader.get_tensor(n).astype(np.float64)  # noqa: E731
        self.image_embedding = get("image_embedding/weights")
        self.seq_embedding = get("seq_embedding/map")
        self.kernel, self.bias = get(kernel), get(bias)
        self.logits_w, self.logits_b = get("logits/weights"), get("logits/biases")
        self.units = self.logits_w.shape[0]

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return inception_v3(pixels.astype(np.float64), NumpyOps(self.reader))

    def _cell(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, h = state[:, : self.units], state[:, self.units :]
        z = np.concatenate([x, h], axis=1) @ self.kernel + self.bias
        i, j, f, o = np.split(z, 4, axis=1)
        sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
        new_c = c * sig(f + 1.0) + sig(i) * np.tanh(j)
        new_h = np.tanh(new_c) * sig(o)
        return new_h, np.concatenate([new_c, new_h], axis=1)

    def initial_state(self, features: np.ndarray) -> np.ndarray:
        zero = np.zeros((features.shape[0], 2 * self.units))
        return self._cell(features @ self.image_embedding, zero)[1]

    def step(self, words: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, new_states = self._cell(self.seq_embedding[words], states)
        logits = h @ self.logits_w + self.logits_b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), new_states


# --- the original beam search, in plain Python ------------------------------------------


@dataclass(order=False)
class _Beam:
    sentence: list[int]
    state: np.ndarray = field(repr=False)
    logprob: float

    def __lt__(self, other: _Beam) -> bool:
        return self.logprob < other.logprob

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Beam) and self.logprob == other.logprob


class _TopN:
    """Keeps the n largest pushed items; a newcomer equal to the smallest is dropped."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._data: list[_Beam] = []

    def push(self, item: _Beam) -> None:
        if len(self._data) < self._n:
            heapq.heappush(self._data, item)
        else:
            heapq.heappushpop(self._data, item)

    def extract(self, sort: bool = False) -> list[_Beam]:
        data, self._data = self._data, []
        if sort:
            data.sort(reverse=True)
        return data

    def size(self) -> int:
        return len(self._data)


def original_beam_search(
    step,
    initial_state: np.ndarray,
    *,
    start_id: int,
    end_id: int,
    beam_size: int,
    max_length: int,
) -> list[tuple[list[int], float]]:
    """im2txt's CaptionGenerator.beam_search for one image: (sentence, logprob) best first."""
    partial = _TopN(beam_size)
    partial.push(_Beam([start_id], initial_state, 0.0))
    complete = _TopN(beam_size)
    for _ in range(max_length - 1):
        beams = partial.extract()
        partial = _TopN(beam_size)
        probs, states = step(
            np.array([b.sentence[-1] for b in beams]), np.stack([b.state for b in beams])
        )
        for i, beam in enumerate(beams):
            ranked = sorted(enumerate(probs[i]), key=lambda wp: -wp[1])[:beam_size]
            for word, p in ranked:
                if p < 1e-12:
                    continue
                new = _Beam([*beam.sentence, word], states[i], beam.logprob + math.log(p))
                (complete if word == end_id else partial).push(new)
        if partial.size() == 0:
            break
    result = complete if complete.size() else partial
    return [(b.sentence, b.logprob) for b in result.extract(sort=True)]


def reference_captions(
    model: NumpyModel,
    features: np.ndarray,
    vocabulary,
    beam_size: int,
    max_length: int,
    *,
    float32_probabilities: bool = True,
) -> list[list[tuple[str, float]]]:
    """Caption each image's features with the original beam search; text as the engine."""
    results = []
    for state in model.initial_state(features):

        def step(words: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            probs, new_states = model.step(words, states)
            # The original saw float32 softmax outputs.
            return (probs.astype(np.float32) if float32_probabilities else probs), new_states

        beams = original_beam_search(
            step,
            state,
            start_id=vocabulary.start_id,
            end_id=vocabulary.end_id,
            beam_size=beam_size,
            max_length=max_length,
        )
        results.append(
            [(" ".join(vocabulary.id_to_word(w) for w in s[1:-1]), lp) for s, lp in beams]
        )
    return results


def as_pairs(captions: Sequence) -> list[tuple[str, float]]:
    return [(c.text, c.logprob) for c in captions]
