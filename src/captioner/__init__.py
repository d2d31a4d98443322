"""captioner: a fast, faithful, MAX-compatible server for the Show and Tell (im2txt) model.

The public API is small: :func:`load_engine` (the model that :class:`Settings` name) or
:class:`Captioner` (a checkpoint and vocabulary you name), :func:`caption_batch` and
:func:`caption_stream` (images in, one :class:`ImageResult` each, a bad image failing
alone), :class:`Caption` (one ranked caption), and the error tree in
:mod:`captioner.errors`. TensorFlow is imported only when a model is first loaded, so
``captioner --help``, the HTTP layer and the client stay light.
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
    from captioner.loading import load_engine
    from captioner.pipeline import caption_batch, caption_stream
    from captioner.results import Caption, ImageResult

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
    "ImageResult",
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
    "caption_batch",
    "caption_stream",
    "load_engine",
]

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

_LAZY = {
    "Caption": "captioner.results",
    "Captioner": "captioner.engine",
    "ImageResult": "captioner.results",
    "Settings": "captioner.config",
    "caption_batch": "captioner.pipeline",
    "caption_stream": "captioner.pipeline",
    "load_engine": "captioner.loading",
}


def __getattr__(name: str) -> Any:
    """Import heavy members (TensorFlow behind them) on first use only."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
