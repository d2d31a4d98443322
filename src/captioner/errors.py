"""The exception tree of captioner: what can go wrong, said in domain terms.

::

    CaptionerError
    ├── InvalidImageError       the client's bytes: undecodable, unsupported, too large
    ├── InvalidRequestError     a parameter out of range (beam size, max length, ...)
    ├── OverloadedError         the request queue is full
    ├── DeadlineExceededError   a queued request waited past its deadline
    ├── ModelNotReadyError      the model is still loading, or the server is draining
    ├── CheckpointError         missing file, missing tensor, wrong shape, unknown layout
    ├── VocabularyError         missing, empty or malformed word_counts.txt
    ├── AssetError              downloading or installing the pretrained assets
    │   ├── ChecksumMismatchError   a file's digest is not the pinned one
    │   ├── UnsafeArchiveError      a tarball member would escape or is a link/device
    │   ├── DownloadError           no source provided an asset (each source's failure)
    │   └── OfflineError            the assets are missing and the network is off
    ├── DatasetError            a training or evaluation data file is unusable
    ├── ConfigurationError      a setting has a value it cannot take
    ├── MetadataToolError       exiftool, which writes alt text into images, is missing or broke
    └── StartupError            the server cannot start listening (port taken, ...)

Errors carry data (paths, expected and actual values), never HTTP status codes:
``captioner.api.errors`` maps them to responses, ``captioner.cli`` to exit codes.
Bugs stay built-in exceptions (``ValueError``, ``TypeError``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AssetError",
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
    "StartupError",
    "UnsafeArchiveError",
    "VocabularyError",
]


class CaptionerError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidImageError(CaptionerError):
    """Raised when bytes are not an image we can caption (empty, corrupt, unsupported, huge).

    ``too_large`` tells a pixel-count or byte-size refusal apart from a decoding failure.
    """

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class InvalidRequestError(CaptionerError):
    """Raised when a request parameter is outside its allowed range."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OverloadedError(CaptionerError):
    """Raised when the request queue is full; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(CaptionerError):
    """Raised when a queued request waited longer than its deadline and was dropped unrun."""


class ModelNotReadyError(CaptionerError):
    """Raised when a caption is asked for before the model is loaded or while draining."""


class CheckpointError(CaptionerError):
    """Raised when a checkpoint is missing, truncated, or does not have the im2txt layout."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


class VocabularyError(CaptionerError):
    """Raised when ``word_counts.txt`` is missing, empty or malformed."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


class AssetError(CaptionerError):
    """Raised when the pretrained assets cannot be fetched, verified or installed.

    ``source`` is the URL or file the failure came from, when the message does not say.
    """

    source: str | None = None

    def __str__(self) -> str:
        message = super().__str__()
        if self.source and not message.startswith(self.source):
            return f"{self.source}: {message}"
        return message


class ChecksumMismatchError(AssetError):
    """Raised when a downloaded or extracted file's digest differs from the pinned one."""

    def __init__(self, name: str, *, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(f"{name}: {algorithm} mismatch: expected {expected}, got {actual}")
        self.name = name
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(AssetError):
    """Raised when a tarball member is absolute, climbs out with ``..``, or is a link/device."""


class DownloadError(AssetError):
    """Raised when the sources could not provide every asset.

    ``failures`` holds each source's own error (its message starts with the URL);
    ``ways_out`` says how to get going without this download.
    """

    def __init__(self, failures: list[AssetError], *, ways_out: str) -> None:
        lines = "\n".join(f"  {failure}" for failure in failures)
        message = f"could not get the pretrained model; every source was tried:\n{lines}"
        super().__init__(f"{message}\n{ways_out}" if ways_out else message)
        self.failures = failures
        self.ways_out = ways_out


class OfflineError(AssetError):
    """Raised when the model is missing and downloading is disabled (offline mode)."""


class DatasetError(CaptionerError):
    """Raised when a training/evaluation data file cannot be used; names the file and line."""

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigurationError(CaptionerError):
    """Raised when a setting (an option or a ``CAPTIONER_*`` variable) has an unusable value."""


class MetadataToolError(CaptionerError):
    """Raised when exiftool cannot be started or stops answering: every image would fail alike.

    One image's own trouble (corrupt, unsupported) is not raised: it is that image's outcome.
    """


class StartupError(CaptionerError):
    """Raised when the server cannot start listening: the port is taken, the host is unknown."""
