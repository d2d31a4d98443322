"""captioner: a fast, faithful, MAX-compatible server for the Show and Tell (im2txt) model.

The public API is small: :class:`Captioner` (load a checkpoint, caption image bytes),
:class:`Caption` (one ranked caption), :class:`Settings`, and the error tree in
:mod:`captioner.errors`. TensorFlow is imported only when a :class:`Captioner` is
first touched, so ``captioner --help`` and the HTTP layer stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from captioner.errors import (
    AssetError,
    CaptionerError,
    CheckpointError,
    ChecksumMismatchError,
    ConfigurationError,
    DatasetError,
    DeadlineExceededError,
    DownloadError,
    InvalidImageError,
    InvalidRequestError,
    MetadataToolError,
    ModelNotReadyError,
    OfflineError,
    OverloadedError,
    StartupError,
    UnsafeArchiveError,
    VocabularyError,
)

if TYPE_CHECKING:
    from captioner.config import Settings
    from captioner.engine import Captioner
    from captioner.results import Caption

__all__ = [
    "AssetError",
    "Caption",
    "Captioner",
    "CaptionerError",
    "CheckpointError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "DatasetError",
    "DeadlineExceededError",
    "DownloadError",
    "InvalidImageError",
    "InvalidRequestError",
    "MetadataToolError",
    "ModelNotReadyError",
    "OfflineError",
    "OverloadedError",
    "Settings",
    "StartupError",
    "UnsafeArchiveError",
    "VocabularyError",
]

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

_LAZY = {
    "Caption": "captioner.results",
    "Captioner": "captioner.engine",
    "Settings": "captioner.config",
}


def __getattr__(name: str) -> Any:
    """Import heavy members (TensorFlow behind them) on first use only."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
