"""Shared fixtures: checkpoints the tests write themselves (never the real weights)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Quiet TensorFlow's C++ start-up chatter in test logs; results are unaffected.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Let tests import the checkpoint writer as a plain module.
sys.path.insert(0, str(Path(__file__).parent))

from captioner.assets import ModelFiles
from checkpoints import write_full_size_checkpoint, write_random_checkpoint


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A small checkpoint of the im2txt layout (width 0.1, E=32, H=24, 60 rows) + vocabulary."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def full_model(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """The full-size 383-tensor layout with seeded random values (about 143 MB on disk)."""
    return write_full_size_checkpoint(tmp_path_factory.mktemp("full_model"))
