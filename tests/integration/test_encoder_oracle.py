"""The encoder against an Inception V3 that shares none of our code: Keras's.

The NumPy reference of the parity tests computes every operation itself but follows our own
wiring (``captioner.encoder.inception_v3``), so a wiring mistake that keeps the shapes (two
branches concatenated in the wrong order, a 1x7 conv where a 7x1 belongs) would pass there.
Here the features of the seeded full-size checkpoint are computed again by
``keras.applications.InceptionV3`` (the same architecture, built by Keras's own code), with
the checkpoint's weights put into its layers by the list below: slim's layer names in the
order Keras creates the layers. Both use slim's batch norm (no scale, epsilon 0.001), SAME
average pools that do not count the padding, and an 8x8 average over ``Mixed_7c``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from captioner.assets import ModelFiles
from captioner.checkpoint import resolve_checkpoint_prefix
from captioner.engine import Captioner

pytestmark = pytest.mark.slow


def _block(name: str, layers: str) -> list[str]:
    return [f"{name}/{layer}" for layer in layers.split()]


_MIXED_35 = "Branch_0/Conv2d_0a_1x1 {b1} Branch_2/Conv2d_0a_1x1 Branch_2/Conv2d_0b_3x3 "
_MIXED_35 += "Branch_2/Conv2d_0c_3x3 Branch_3/Conv2d_0b_1x1"
_MIXED_17 = (
    "Branch_0/Conv2d_0a_1x1 Branch_1/Conv2d_0a_1x1 Branch_1/Conv2d_0b_1x7 "
    "Branch_1/Conv2d_0c_7x1 Branch_2/Conv2d_0a_1x1 Branch_2/Conv2d_0b_7x1 "
    "Branch_2/Conv2d_0c_1x7 Branch_2/Conv2d_0d_7x1 Branch_2/Conv2d_0e_1x7 "
    "Branch_3/Conv2d_0b_1x1"
)
_MIXED_8 = (
    "Branch_0/Conv2d_0a_1x1 Branch_1/Conv2d_0a_1x1 Branch_1/Conv2d_0b_1x3 {b1} "
    "Branch_2/Conv2d_0a_1x1 Branch_2/Conv2d_0b_3x3 Branch_2/Conv2d_0c_1x3 "
    "Branch_2/Conv2d_0d_3x1 Branch_3/Conv2d_0b_1x1"
)
# slim's names (as the checkpoint stores them, quirks included) in the order Keras's
# InceptionV3 creates its conv layers: its blocks list their branches in slim's order.
KERAS_ORDER = [
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    *_block("Mixed_5b", _MIXED_35.format(b1="Branch_1/Conv2d_0a_1x1 Branch_1/Conv2d_0b_5x5")),
    *_block("Mixed_5c", _MIXED_35.format(b1="Branch_1/Conv2d_0b_1x1 Branch_1/Conv_1_0c_5x5")),
    *_block("Mixed_5d", _MIXED_35.format(b1="Branch_1/Conv2d_0a_1x1 Branch_1/Conv2d_0b_5x5")),
    *_block(
        "Mixed_6a",
        "Branch_0/Conv2d_1a_1x1 Branch_1/Conv2d_0a_1x1 Branch_1/Conv2d_0b_3x3 "
        "Branch_1/Conv2d_1a_1x1",
    ),
    *(layer for block in ("6b", "6c", "6d", "6e") for layer in _block(f"Mixed_{block}", _MIXED_17)),
    *_block(
        "Mixed_7a",
        "Branch_0/Conv2d_0a_1x1 Branch_0/Conv2d_1a_3x3 Branch_1/Conv2d_0a_1x1 "
        "Branch_1/Conv2d_0b_1x7 Branch_1/Conv2d_0c_7x1 Branch_1/Conv2d_1a_3x3",
    ),
    *_block("Mixed_7b", _MIXED_8.format(b1="Branch_1/Conv2d_0b_3x1")),
    *_block("Mixed_7c", _MIXED_8.format(b1="Branch_1/Conv2d_0c_3x1")),
]


def _creation_order(layer: tf.keras.layers.Layer) -> int:
    """Keras names layers ``conv2d``, ``conv2d_1``, ... as it creates them."""
    suffix = re.search(r"_(\d+)$", layer.name)
    return int(suffix.group(1)) if suffix else 0


def keras_inception_v3(checkpoint_prefix: str) -> tf.keras.Model:
    """Keras's InceptionV3 base with global average pooling, holding the checkpoint's weights."""
    model = tf.keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3)
    )
    convs = sorted(
        (layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)),
        key=_creation_order,
    )
    norms = sorted(
        (layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)),
        key=_creation_order,
    )
    assert len(convs) == len(norms) == len(KERAS_ORDER) == 94
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    for name, conv, norm in zip(KERAS_ORDER, convs, norms, strict=True):
        scope = f"InceptionV3/{name}"
        assert not norm.scale and norm.epsilon == pytest.approx(0.001)
        conv.set_weights([reader.get_tensor(f"{scope}/weights")])  # shapes must agree
        norm.set_weights(
            [
                reader.get_tensor(f"{scope}/BatchNorm/{part}")
                for part in ("beta", "moving_mean", "moving_variance")
            ]
        )
    return model


def test_encoder_features_match_keras_inception_v3(full_model: ModelFiles) -> None:
    captioner = Captioner.load(full_model.checkpoint, full_model.vocab)
    rng = np.random.default_rng(11)
    # Smooth images with structure at several scales, so every branch sees varied input.
    coarse = rng.uniform(-1.0, 1.0, (2, 13, 13, 3)).astype(np.float32)
    pixels = tf.image.resize(coarse, (299, 299)).numpy()
    pixels += rng.normal(0.0, 0.1, pixels.shape).astype(np.float32)
    pixels = np.clip(pixels, -1.0, 1.0)

    ours = captioner.encode(pixels)
    oracle = keras_inception_v3(str(resolve_checkpoint_prefix(full_model.checkpoint)))
    theirs = oracle(pixels, training=False).numpy()

    assert ours.shape == theirs.shape == (2, 2048)
    assert np.abs(theirs).max() > 1e-2  # the features are not all zero (both would agree)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
