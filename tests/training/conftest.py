"""Fixtures for the training tests: small scene datasets written by the shapes generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioner.training.shapes import write_dataset


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``captions.jsonl`` of 24 generated scenes (one caption each) and their images."""
    return write_dataset(tmp_path_factory.mktemp("shapes"), count=24, seed=3)
