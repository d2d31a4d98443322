"""Settings: the one place that reads the environment (``CAPTIONER_*``, MAX's ``CORS_ENABLE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_cache_dir
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from captioner.assets import (
    DEMO_MODEL_DIR,
    PINNED_ASSET_SHA512,
    PINNED_VOCAB_SHA256,
    TARBALL_URLS,
    VOCAB_URL,
    ModelFiles,
    model_files_in,
)

__all__ = ["Settings", "default_model_dir"]


def default_model_dir() -> Path:
    """The per-user cache directory the pretrained model is downloaded into."""
    return Path(user_cache_dir("captioner", appauthor=False)) / "im2txt"


def _split_list(value: object) -> object:
    """Accept a comma-separated string for list settings (``a,b``) as well as a JSON list."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of captioner. Each field is also the env var ``CAPTIONER_<FIELD>``.

    Built explicitly (``Settings()``) by the CLI or ``create_app``, never at import time,
    so tests and embedders can pass their own.
    """

    model_config = SettingsConfigDict(
        env_prefix="CAPTIONER_", env_ignore_empty=True, extra="ignore", populate_by_name=True
    )

    # --- which model -------------------------------------------------------------------
    model: Literal["im2txt", "demo"] = Field(
        "im2txt", description="'im2txt': the pretrained model in model_dir; 'demo': bundled."
    )
    model_dir: Path = Field(default_factory=default_model_dir)
    checkpoint: Path | None = Field(None, description="Checkpoint prefix or directory.")
    vocab: Path | None = Field(None, description="word_counts.txt; default: next to the model.")

    # --- getting the pretrained assets -------------------------------------------------
    offline: bool = Field(False, description="Never download; fail fast if the model is missing.")
    download_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(TARBALL_URLS),
        description="Tarball sources, tried in order (comma-separated or a JSON list).",
    )
    vocab_url: str = VOCAB_URL
    asset_sha512: dict[str, str] = Field(
        default_factory=lambda: dict(PINNED_ASSET_SHA512),
        description="Tarball member -> sha512 (JSON object); override for a private mirror.",
    )
    vocab_sha256: str = PINNED_VOCAB_SHA256
    download_timeout_s: float = Field(30.0, gt=0, description="Stall timeout per read.")
    download_retries: int = Field(4, ge=0)
    download_backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each try.")

    # --- serving ------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=1, le=65535)
    max_batch_size: int = Field(8, ge=1, le=256)
    max_batch_wait_ms: float = Field(5.0, ge=0)
    max_batch_gather_ms: float = Field(
        50.0, ge=0, description="Longest wait for uploads being decoded and answered clients."
    )
    max_queue_size: int = Field(64, ge=1)
    preprocess_threads: int = Field(2, ge=1, description="Threads decoding uploads.")
    request_timeout_s: float = Field(30.0, gt=0)
    drain_timeout_s: float = Field(20.0, ge=0)
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest request body in bytes; a larger one gets 413."
    )
    max_pending_upload_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Memory budget for uploads: most request-body bytes held at once, over all "
        "requests being received or waiting for their captions (a body without Content-Length "
        "counts as max_upload_bytes). A request that does not fit gets 503 + Retry-After "
        "before its body is read. At least max_upload_bytes.",
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Most pixels one image may declare; more gets 413."
    )
    max_decoding_pixels: int | None = Field(
        None,
        ge=1,
        description="Memory budget for decoding: most pixels of full-size images decoded at "
        "once, over all preprocessing threads (about 3 bytes each); an image waits for room. "
        "At least max_image_pixels, which is the default.",
    )
    max_files_per_batch_request: int = Field(32, ge=1)
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers, counted from "
        "the connection's start or the previous answer; then 408 and the connection is closed "
        "(captioner serve, or uvicorn --http captioner.api.protocol:GuardedH11Protocol).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a client has to send a request's whole body once its headers are "
        "in; then 408 (or, if no answer can be sent any more, the connection is closed).",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Most open client connections; one more gets 503 and is closed at once "
        "(captioner serve, or uvicorn --http captioner.api.protocol:GuardedH11Protocol).",
    )
    default_beam_size: int = Field(3, ge=1)
    max_beam_size: int = Field(10, ge=1)
    default_max_length: int = Field(20, ge=1)
    max_max_length: int = Field(50, ge=1)
    cors_enable: bool = Field(
        False, validation_alias=AliasChoices("CORS_ENABLE", "CAPTIONER_CORS_ENABLE", "cors_enable")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    intra_op_threads: int | None = Field(None, ge=1, description="TF intra-op threads.")
    inter_op_threads: int | None = Field(None, ge=1, description="TF inter-op threads.")

    _split = field_validator("download_urls", "cors_origins", mode="before")(
        classmethod(lambda cls, value: _split_list(value))
    )
    _expand = field_validator("model_dir", "checkpoint", "vocab", mode="after")(
        classmethod(lambda cls, value: value.expanduser() if value is not None else None)
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Refuse combinations that would make some valid request impossible to serve."""
        rules = (
            ("default_beam_size", "max_beam_size"),
            ("default_max_length", "max_max_length"),
            ("max_upload_bytes", "max_pending_upload_bytes"),  # else a full upload never fits
            ("max_files_per_batch_request", "max_queue_size"),  # a batch is admitted whole
            ("max_image_pixels", "max_decoding_pixels"),  # else the largest image never decodes
        )
        for low, high in rules:
            low_value, high_value = getattr(self, low), getattr(self, high)
            if high_value is not None and low_value > high_value:
                raise ValueError(f"{low} ({low_value}) must not exceed {high} ({high_value})")
        return self

    @property
    def decoding_pixels(self) -> int:
        """``max_decoding_pixels``, or ``max_image_pixels`` when unset."""
        return self.max_decoding_pixels or self.max_image_pixels

    def model_files(self) -> ModelFiles:
        """The checkpoint and vocabulary to load, from ``model``, ``checkpoint`` and ``vocab``.

        An explicit ``checkpoint`` wins; its vocabulary defaults to ``word_counts.txt`` beside
        it (in the directory, or in the parent of a ``checkpoint/`` directory).
        """
        if self.checkpoint is not None:
            base = self.checkpoint if self.checkpoint.is_dir() else self.checkpoint.parent
            vocab = self.vocab
            if vocab is None:
                candidates = [base / "word_counts.txt", base.parent / "word_counts.txt"]
                vocab = next((c for c in candidates if c.exists()), candidates[0])
            return ModelFiles(checkpoint=self.checkpoint, vocab=vocab)
        files = model_files_in(DEMO_MODEL_DIR if self.model == "demo" else self.model_dir)
        if self.vocab is not None:
            return ModelFiles(checkpoint=files.checkpoint, vocab=self.vocab)
        return files
