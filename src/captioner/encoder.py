"""The Inception V3 image encoder: ``[B, 299, 299, 3]`` pixels -> ``[B, F]`` image features.

The topology (layer names, kernel sizes, strides, paddings, branch order) is written once,
in :func:`inception_v3`, against a small set of operations (:class:`InceptionOps`). Who
supplies the operations decides what the wiring computes:

- :class:`FoldedConvOps` runs inference with TensorFlow, batch norm folded into each conv;
- :func:`inception_v3_layout` traces tensor shapes only, to write or check checkpoints;
- the training code and the tests' NumPy reference bring their own.

Only slim's Inception V3 *base* is used (docs/faithfulness.md, "The Inception V3 encoder"):
the 8x8 average pool over ``Mixed_7c`` gives the image feature; Inception's own logits are
never built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "BATCH_NORM_EPSILON",
    "ConvSpec",
    "ConvWeights",
    "FoldedConvOps",
    "InceptionOps",
    "inception_v3",
    "inception_v3_layout",
]

BATCH_NORM_EPSILON = 0.001
SCOPE = "InceptionV3"

T = TypeVar("T")


class InceptionOps(Protocol, Generic[T]):
    """The operations the Inception wiring needs; ``T`` is whatever a feature map is."""

    def conv(
        self, x: T, name: str, kernel: tuple[int, int], depth: int, stride: int, padding: str
    ) -> T:
        """Conv (no bias) + batch norm + ReLU under ``InceptionV3/<name>``.

        ``depth`` is the slim Inception V3 output depth at multiplier 1.0; implementations
        that read weights take the real depth from the weights instead.
        """
        ...

    def max_pool(self, x: T, size: int, stride: int, padding: str) -> T:
        """Square max pool."""
        ...

    def avg_pool(self, x: T, size: int, stride: int, padding: str) -> T:
        """Square average pool; SAME padding divides by the count of unpadded inputs (TF)."""
        ...

    def concat(self, xs: Sequence[T]) -> T:
        """Concatenate on channels, in the given (branch) order."""
        ...

    def global_pool(self, x: T) -> T:
        """The final 8x8 VALID average pool and flatten: ``[B, 8, 8, C]`` -> ``[B, C]``."""
        ...


def _mixed_35(ops: InceptionOps[T], x: T, block: str, pool_depth: int) -> T:
    """Mixed_5b/5c/5d: 35x35 blocks (1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1)."""
    # Mixed_5c carries two historical name quirks in Branch_1 that the checkpoint keeps.
    b1_names = (
        ("Branch_1/Conv2d_0b_1x1", "Branch_1/Conv_1_0c_5x5")
        if block == "Mixed_5c"
        else ("Branch_1/Conv2d_0a_1x1", "Branch_1/Conv2d_0b_5x5")
    )
    b0 = ops.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", (1, 1), 64, 1, "SAME")
    b1 = ops.conv(x, f"{block}/{b1_names[0]}", (1, 1), 48, 1, "SAME")
    b1 = ops.conv(b1, f"{block}/{b1_names[1]}", (5, 5), 64, 1, "SAME")
    b2 = ops.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", (1, 1), 64, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0b_3x3", (3, 3), 96, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0c_3x3", (3, 3), 96, 1, "SAME")
    b3 = ops.avg_pool(x, 3, 1, "SAME")
    b3 = ops.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", (1, 1), pool_depth, 1, "SAME")
    return ops.concat([b0, b1, b2, b3])


def _mixed_17(ops: InceptionOps[T], x: T, block: str, inner: int) -> T:
    """Mixed_6b..6e: 17x17 blocks with factorised 1x7/7x1 convolutions."""
    b0 = ops.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", (1, 1), 192, 1, "SAME")
    b1 = ops.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", (1, 1), inner, 1, "SAME")
    b1 = ops.conv(b1, f"{block}/Branch_1/Conv2d_0b_1x7", (1, 7), inner, 1, "SAME")
    b1 = ops.conv(b1, f"{block}/Branch_1/Conv2d_0c_7x1", (7, 1), 192, 1, "SAME")
    b2 = ops.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", (1, 1), inner, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0b_7x1", (7, 1), inner, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0c_1x7", (1, 7), inner, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0d_7x1", (7, 1), inner, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0e_1x7", (1, 7), 192, 1, "SAME")
    b3 = ops.avg_pool(x, 3, 1, "SAME")
    b3 = ops.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", (1, 1), 192, 1, "SAME")
    return ops.concat([b0, b1, b2, b3])


def _mixed_8(ops: InceptionOps[T], x: T, block: str) -> T:
    """Mixed_7b/7c: 8x8 blocks whose 1x3 and 3x1 convs run side by side and concatenate."""
    # Name quirk kept by the checkpoint: 7b's second split conv is 0b_3x1, 7c's is 0c_3x1.
    split_b1 = "Conv2d_0b_3x1" if block == "Mixed_7b" else "Conv2d_0c_3x1"
    b0 = ops.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", (1, 1), 320, 1, "SAME")
    b1 = ops.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", (1, 1), 384, 1, "SAME")
    b1 = ops.concat(
        [
            ops.conv(b1, f"{block}/Branch_1/Conv2d_0b_1x3", (1, 3), 384, 1, "SAME"),
            ops.conv(b1, f"{block}/Branch_1/{split_b1}", (3, 1), 384, 1, "SAME"),
        ]
    )
    b2 = ops.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", (1, 1), 448, 1, "SAME")
    b2 = ops.conv(b2, f"{block}/Branch_2/Conv2d_0b_3x3", (3, 3), 384, 1, "SAME")
    b2 = ops.concat(
        [
            ops.conv(b2, f"{block}/Branch_2/Conv2d_0c_1x3", (1, 3), 384, 1, "SAME"),
            ops.conv(b2, f"{block}/Branch_2/Conv2d_0d_3x1", (3, 1), 384, 1, "SAME"),
        ]
    )
    b3 = ops.avg_pool(x, 3, 1, "SAME")
    b3 = ops.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", (1, 1), 192, 1, "SAME")
    return ops.concat([b0, b1, b2, b3])


def inception_v3(images: T, ops: InceptionOps[T]) -> T:
    """Wire slim's Inception V3 base and its final average pool.

    Args:
        images: float32 ``[B, 299, 299, 3]`` in [-1, 1] (or whatever ``ops`` works on).
        ops: the operations that give the wiring its meaning.

    Returns:
        The image features, ``[B, F]`` (F = 2048 for the original checkpoint).
    """
    # Stem: VALID unless stated (slim's arg_scope), SAME only for Conv2d_2b_3x3.
    x = ops.conv(images, "Conv2d_1a_3x3", (3, 3), 32, 2, "VALID")
    x = ops.conv(x, "Conv2d_2a_3x3", (3, 3), 32, 1, "VALID")
    x = ops.conv(x, "Conv2d_2b_3x3", (3, 3), 64, 1, "SAME")
    x = ops.max_pool(x, 3, 2, "VALID")
    x = ops.conv(x, "Conv2d_3b_1x1", (1, 1), 80, 1, "VALID")
    x = ops.conv(x, "Conv2d_4a_3x3", (3, 3), 192, 1, "VALID")
    x = ops.max_pool(x, 3, 2, "VALID")

    x = _mixed_35(ops, x, "Mixed_5b", pool_depth=32)
    x = _mixed_35(ops, x, "Mixed_5c", pool_depth=64)
    x = _mixed_35(ops, x, "Mixed_5d", pool_depth=64)

    # Mixed_6a: reduction to 17x17. Branch_0's conv is named 1x1 but its kernel is 3x3.
    b0 = ops.conv(x, "Mixed_6a/Branch_0/Conv2d_1a_1x1", (3, 3), 384, 2, "VALID")
    b1 = ops.conv(x, "Mixed_6a/Branch_1/Conv2d_0a_1x1", (1, 1), 64, 1, "SAME")
    b1 = ops.conv(b1, "Mixed_6a/Branch_1/Conv2d_0b_3x3", (3, 3), 96, 1, "SAME")
    b1 = ops.conv(b1, "Mixed_6a/Branch_1/Conv2d_1a_1x1", (3, 3), 96, 2, "VALID")
    b2 = ops.max_pool(x, 3, 2, "VALID")
    x = ops.concat([b0, b1, b2])

    x = _mixed_17(ops, x, "Mixed_6b", inner=128)
    x = _mixed_17(ops, x, "Mixed_6c", inner=160)
    x = _mixed_17(ops, x, "Mixed_6d", inner=160)
    x = _mixed_17(ops, x, "Mixed_6e", inner=192)

    # Mixed_7a: reduction to 8x8.
    b0 = ops.conv(x, "Mixed_7a/Branch_0/Conv2d_0a_1x1", (1, 1), 192, 1, "SAME")
    b0 = ops.conv(b0, "Mixed_7a/Branch_0/Conv2d_1a_3x3", (3, 3), 320, 2, "VALID")
    b1 = ops.conv(x, "Mixed_7a/Branch_1/Conv2d_0a_1x1", (1, 1), 192, 1, "SAME")
    b1 = ops.conv(b1, "Mixed_7a/Branch_1/Conv2d_0b_1x7", (1, 7), 192, 1, "SAME")
    b1 = ops.conv(b1, "Mixed_7a/Branch_1/Conv2d_0c_7x1", (7, 1), 192, 1, "SAME")
    b1 = ops.conv(b1, "Mixed_7a/Branch_1/Conv2d_1a_3x3", (3, 3), 192, 2, "VALID")
    b2 = ops.max_pool(x, 3, 2, "VALID")
    x = ops.concat([b0, b1, b2])

    x = _mixed_8(ops, x, "Mixed_7b")
    x = _mixed_8(ops, x, "Mixed_7c")
    return ops.global_pool(x)


# --- shape tracing ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer as the checkpoint stores it: ``weights`` is ``[kh, kw, in, out]``."""

    name: str
    kernel_shape: tuple[int, int, int, int]
    stride: int
    padding: str


@dataclass(frozen=True)
class _Shape:
    height: int
    width: int
    channels: int


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "SAME":
        return -(-size // stride)
    return (size - window) // stride + 1


class _LayoutOps:
    """Traces shapes through the wiring and records every conv's kernel shape."""

    def __init__(self, depth: _DepthFn) -> None:
        self._depth = depth
        self.convs: list[ConvSpec] = []

    def conv(
        self, x: _Shape, name: str, kernel: tuple[int, int], depth: int, stride: int, padding: str
    ) -> _Shape:
        out = self._depth(depth)
        self.convs.append(ConvSpec(name, (kernel[0], kernel[1], x.channels, out), stride, padding))
        return _Shape(
            _out_size(x.height, kernel[0], stride, padding),
            _out_size(x.width, kernel[1], stride, padding),
            out,
        )

    def max_pool(self, x: _Shape, size: int, stride: int, padding: str) -> _Shape:
        return _Shape(
            _out_size(x.height, size, stride, padding),
            _out_size(x.width, size, stride, padding),
            x.channels,
        )

    avg_pool = max_pool

    def concat(self, xs: Sequence[_Shape]) -> _Shape:
        return _Shape(xs[0].height, xs[0].width, sum(x.channels for x in xs))

    def global_pool(self, x: _Shape) -> _Shape:
        if (x.height, x.width) != (8, 8):
            raise ValueError(f"Mixed_7c is {x.height}x{x.width}, the 8x8 pool needs 8x8")
        return _Shape(1, 1, x.channels)


class _DepthFn(Protocol):
    def __call__(self, depth: int) -> int: ...


def inception_v3_layout(
    depth_multiplier: float = 1.0, min_depth: int = 16
) -> tuple[list[ConvSpec], int]:
    """Every conv layer of Inception V3 at a width multiplier, as slim would build it.

    Channel counts scale as slim does: ``max(int(depth * multiplier), min_depth)``, so a
    multiplier below 1 gives a smaller network of exactly the same layout.

    Returns:
        The 94 conv specs in graph order, and the feature size F of the final pool.
    """
    if depth_multiplier <= 0:
        raise ValueError("depth_multiplier must be positive")
    ops = _LayoutOps(lambda depth: max(int(depth * depth_multiplier), min_depth))
    features = inception_v3(_Shape(299, 299, 3), ops)
    return ops.convs, features.channels


# --- TensorFlow inference ---------------------------------------------------------------


@dataclass(frozen=True)
class ConvWeights:
    """One conv layer's stored tensors (float32): HWIO kernel and the BN statistics."""

    weights: np.ndarray  # [kh, kw, in, out]
    beta: np.ndarray  # [out]
    moving_mean: np.ndarray  # [out]
    moving_variance: np.ndarray  # [out]

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Fold inference batch norm into the conv: ``conv(x, w*s) + (beta - mean*s)``.

        ``s = 1 / sqrt(var + 0.001)``; there is no gamma in the checkpoint. Computed in
        float64 and rounded once, so the folded conv stays within float32 noise of the
        unfolded maths.
        """
        scale = 1.0 / np.sqrt(self.moving_variance.astype(np.float64) + BATCH_NORM_EPSILON)
        kernel = (self.weights.astype(np.float64) * scale).astype(np.float32)
        bias = (self.beta.astype(np.float64) - self.moving_mean * scale).astype(np.float32)
        return kernel, bias


class FoldedConvOps:
    """TensorFlow inference ops with each conv's batch norm folded into kernel and bias.

    The folded weights are computed once here and held once, as TensorFlow variables of
    the compute dtype: graphs read them in place, where a constant captured by a graph
    keeps a second copy (the full-size encoder's 87 MB of kernels would take 174).

    Args:
        convs: ``(name, stored weights)`` of each conv, taken one at a time: a caller that
            hands them over as it goes (the engine does) never holds the stored and the
            folded weights of the whole encoder at once.
        dtype: what the convolutions compute in: ``"float32"`` (the original's
            arithmetic) or ``"bfloat16"`` (kernels rounded once here, never per call).
    """

    def __init__(self, convs: Iterable[tuple[str, ConvWeights]], dtype: str = "float32") -> None:
        import tensorflow as tf

        self._tf = tf
        self.dtype = tf.as_dtype(dtype)
        self._params: dict[str, tuple[tf.Variable, tf.Variable]] = {}
        for name, conv in convs:
            kernel, bias = conv.folded()
            self._params[name] = (self._hold(kernel), self._hold(bias))

    def _hold(self, value: np.ndarray) -> tf.Variable:
        tf = self._tf
        return tf.Variable(tf.cast(value, self.dtype), trainable=False)

    @property
    def weight_bytes(self) -> int:
        """Bytes held by the folded kernels and biases."""
        return sum(v.shape.num_elements() * v.dtype.size for p in self._params.values() for v in p)

    def encode(self, pixels: tf.Tensor) -> tf.Tensor:
        """float32 ``[B, 299, 299, 3]`` -> float32 ``[B, F]``, computed in ``dtype``."""
        tf = self._tf
        features = inception_v3(tf.cast(pixels, self.dtype), self)
        return tf.cast(features, tf.float32)

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
        w, b = self._params[name]
        y = tf.nn.conv2d(x, w, strides=stride, padding=padding)
        return tf.nn.relu(tf.nn.bias_add(y, b))

    def max_pool(self, x: tf.Tensor, size: int, stride: int, padding: str) -> tf.Tensor:
        return self._tf.nn.max_pool2d(x, size, stride, padding)

    def avg_pool(self, x: tf.Tensor, size: int, stride: int, padding: str) -> tf.Tensor:
        # TF's SAME average pool divides by the number of unpadded inputs, as slim did.
        return self._tf.nn.avg_pool2d(x, size, stride, padding)

    def concat(self, xs: Sequence[tf.Tensor]) -> tf.Tensor:
        return self._tf.concat(list(xs), axis=3)

    def global_pool(self, x: tf.Tensor) -> tf.Tensor:
        pooled = self._tf.nn.avg_pool2d(x, 8, 1, "VALID")
        return self._tf.reshape(pooled, [-1, pooled.shape[-1]])
