"""Settings: the one place that reads the environment (``CAPTIONER_*``, MAX's ``CORS_ENABLE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_cache_dir
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from captioner.assets import (
    DEMO_MODEL_DIR,
    PINNED_ASSET_SHA512,
    PINNED_VOCAB_SHA256,
    TARBALL_URLS,
    VOCAB_FILENAME,
    VOCAB_URL,
    ModelFiles,
    model_files_in,
)
from captioner.beam_search import MIN_MAX_LENGTH
from captioner.errors import ConfigurationError

__all__ = [
    "Settings",
    "default_calibration_file",
    "default_model_dir",
    "load_settings",
    "setting_default_text",
    "setting_variables",
]


def default_model_dir() -> Path:
    """The per-user cache directory the pretrained model is downloaded into."""
    return Path(user_cache_dir("captioner", appauthor=False)) / "im2txt"


def default_calibration_file() -> Path:
    """Where the bf16/fp32 timings of ``precision`` bf16 and auto are remembered."""
    return Path(user_cache_dir("captioner", appauthor=False)) / "calibrations.json"


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
        "im2txt",
        description="`im2txt`: the pretrained model in `model_dir`, downloaded if missing; "
        "`demo`: the small model bundled in the package (coloured shapes only, no network).",
    )
    model_dir: Path = Field(
        default_factory=default_model_dir,
        description="Where the pretrained model is installed and loaded from.",
        json_schema_extra={"default_text": "the user cache directory, then `im2txt`"},
    )
    checkpoint: Path | None = Field(
        None,
        description="Load this checkpoint instead of `model`: a directory with a `checkpoint` "
        "state file, a prefix (`model.ckpt-4000`), or one of the prefix's files.",
        json_schema_extra={"default_text": "none: the model `model` names"},
    )
    vocab: Path | None = Field(
        None,
        description="The `word_counts.txt` of `checkpoint`.",
        json_schema_extra={"default_text": "the one next to the checkpoint"},
    )

    # --- getting the pretrained assets -------------------------------------------------
    offline: bool = Field(
        False, description="Never download: fail at once if the pretrained model is missing."
    )
    download_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(TARBALL_URLS),
        description="Tarball sources, tried in order (comma-separated or a JSON list).",
        json_schema_extra={"default_text": "the two built-in sources"},
    )
    vocab_url: str = Field(
        VOCAB_URL,
        description="Where `word_counts.txt` comes from.",
        json_schema_extra={"default_text": "the built-in URL"},
    )
    asset_sha512: dict[str, str] = Field(
        default_factory=lambda: dict(PINNED_ASSET_SHA512),
        description="Tarball member -> sha512 (a JSON object), for a mirror serving other files.",
        json_schema_extra={"default_text": "the pinned digests"},
    )
    vocab_sha256: str = Field(
        PINNED_VOCAB_SHA256,
        description="sha256 of `word_counts.txt`.",
        json_schema_extra={"default_text": "the pinned digest"},
    )
    download_timeout_s: float = Field(
        30.0, gt=0, description="Seconds without data before a transfer counts as stalled."
    )
    download_retries: int = Field(
        4, ge=0, description="Retries per source after the first try (dropped or stalled only)."
    )
    download_backoff_s: float = Field(
        1.0, ge=0, description="First retry delay in seconds; it doubles with each retry."
    )
    download_deadline_s: float = Field(
        30.0,
        gt=0,
        description="Seconds for the sources to start sending the model, shared equally among "
        "them (the vocabulary's and each tarball's): a source silent past its share is given "
        "up, so sources that never answer cost this much in all. A file that has started "
        "arriving is not cut off; `download_timeout_s` still catches stalls.",
    )

    # --- serving ------------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1",
        description="Interface to listen on: this machine only; `0.0.0.0` serves every "
        "interface (the image, Compose and the manifests set it).",
    )
    port: int = Field(5000, ge=1, le=65535, description="Port to listen on (MAX's).")
    max_batch_size: int = Field(
        8, ge=1, le=256, description="Most requests in one engine call; 1 turns batching off."
    )
    max_batch_wait_ms: float = Field(
        5.0, ge=0, description="Longest a request waits for others to share its engine call."
    )
    max_batch_gather_ms: float = Field(
        50.0,
        ge=0,
        description="Longest a request waits for company known to be coming: uploads being "
        "decoded, clients the last engine call answered.",
    )
    max_queue_size: int = Field(
        64,
        ge=1,
        description="Most requests admitted and not yet running; more get 503 + `Retry-After`.",
    )
    preprocess_threads: int = Field(2, ge=1, description="Threads decoding uploads.")
    request_timeout_s: float = Field(
        30.0, gt=0, description="A request still queued this long after admission gets 504."
    )
    drain_timeout_s: float = Field(
        20.0, ge=0, description="Longest a shutdown waits for admitted requests to finish."
    )
    shutdown_timeout_s: int = Field(
        5,
        ge=1,
        description="After the drain, the longest the server waits for requests still open "
        "(an upload still arriving, an answer being sent) before it cuts them off and "
        "exits. A stop takes at most `drain_timeout_s` plus this (plus any preStop pause): "
        "grace periods must be longer.",
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest image upload in bytes: the whole body of a `POST /model/predict`, "
        "and each image of a batch request (413 beyond).",
    )
    max_batch_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Largest body of a batch request (`POST /model/predict/batch`) in bytes, "
        "all its images together (413 beyond). Unless set, at least `max_upload_bytes`.",
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images declaring more pixels get 413, before decoding."
    )
    max_files_per_batch_request: int = Field(
        32,
        ge=1,
        description="Most files in one batch request (admitted together, so unless set, "
        "at most `max_queue_size`).",
    )
    max_pending_upload_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Memory budget for uploads: most request-body bytes held at once, over all "
        "requests being received or waiting for their captions (a body without "
        "`Content-Length` counts as its route's limit). A request that does not fit gets "
        "503 + `Retry-After` before its body is read. Unless set, at least "
        "`max_batch_upload_bytes`.",
    )
    max_decoding_pixels: int | None = Field(
        None,
        ge=1,
        description="Memory budget for decoding: most pixels of full-size images decoded at "
        "once, over all decoding threads (3 to 4 bytes each for a photo); an image waits for "
        "room.",
        json_schema_extra={"default_text": "the value of `max_image_pixels`"},
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers (from the "
        "connection's start, or a later request's first byte); then 408 and the connection "
        "is closed. Under plain uvicorn only with "
        "`--http captioner.api.protocol:GuardedH11Protocol`.",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a client has to send a request's whole body once its headers "
        "are in; then 408 and the connection is closed.",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Most bytes of a request's line and headers buffered before their end; "
        "more get 400 and the connection is closed (a block that arrives in one network "
        "read, at most 256 KiB, is judged whole). Under plain uvicorn only with "
        "`--http captioner.api.protocol:GuardedH11Protocol`.",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Most open client connections; one more gets 503 and is closed at once. "
        "Under plain uvicorn only with `--http captioner.api.protocol:GuardedH11Protocol`.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="Require `Authorization: Bearer <key>` with one of the keys in this file "
        "(one a line; blank lines and `#` comments skipped) on every route but the health "
        "probes, the web page's and documentation's files; 401 without. No TLS: put a "
        "proxy in front for that.",
        json_schema_extra={"default_text": "none: no key needed"},
    )
    public_metrics: bool = Field(
        False, description="With `api_keys_file`, serve `/metrics` without a key too."
    )
    default_beam_size: int = Field(
        3, ge=1, description="`beam_size` when a request gives none (the original's 3)."
    )
    max_beam_size: int = Field(10, ge=1, description="Largest `beam_size` a request may ask.")
    default_max_length: int = Field(
        20,
        ge=MIN_MAX_LENGTH,
        description="`max_length` when a request gives none (the original's 20).",
    )
    max_max_length: int = Field(
        50,
        ge=MIN_MAX_LENGTH,
        description="Largest `max_length` a request may ask (`max_length`: the longest caption "
        "in tokens, counting `<S>` and `</S>`).",
    )
    cors_enable: bool = Field(
        False,
        validation_alias=AliasChoices("CORS_ENABLE", "CAPTIONER_CORS_ENABLE", "cors_enable"),
        description="CORS headers for any origin (MAX's `CORS_ENABLE` variable).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allow only these origins (comma-separated)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="`debug` also shows TensorFlow's own start-up messages."
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="Arithmetic of the model: `fp32` (the original's exact captions and "
        "probabilities), `bf16` (bfloat16: up to twice as fast on CPUs with native bfloat16; "
        "probabilities differ slightly) or `auto` (bf16 where timing the encoder at load "
        "finds it clearly faster).",
    )
    calibration_file: Path = Field(
        default_factory=default_calibration_file,
        description="`bf16` and `auto` time the encoder in both precisions at load; the "
        "result is remembered here per CPU model, cores, TensorFlow version, batch size and "
        "encoder, and the next start on the same kind of machine skips the timing (delete the "
        "file to time again).",
        json_schema_extra={"default_text": "`calibrations.json` in the user cache directory"},
    )
    intra_op_threads: int | None = Field(
        None, ge=1, description="TensorFlow's intra-op thread pool; default: TF's choice."
    )
    inter_op_threads: int | None = Field(
        None, ge=1, description="TensorFlow's inter-op thread pool; default: TF's choice."
    )

    _split = field_validator("download_urls", "cors_origins", mode="before")(
        classmethod(lambda cls, value: _split_list(value))
    )
    _expand = field_validator(
        "model_dir", "checkpoint", "vocab", "api_keys_file", "calibration_file", mode="after"
    )(classmethod(lambda cls, value: value.expanduser() if value is not None else None))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Make sure every request the settings allow can be served.

        A setting left at its default follows the one it depends on (a smaller queue lowers
        the files a batch request may hold, a larger upload limit raises the upload budget);
        two values given that contradict each other are refused.
        """
        given = self.model_fields_set
        if "max_files_per_batch_request" not in given:  # a batch is admitted whole
            self.max_files_per_batch_request = min(
                self.max_files_per_batch_request, self.max_queue_size
            )
        if "max_batch_upload_bytes" not in given:  # room for one image, within the budget
            ceiling = self.max_batch_upload_bytes
            if "max_pending_upload_bytes" in given:
                ceiling = min(ceiling, self.max_pending_upload_bytes)
            self.max_batch_upload_bytes = max(ceiling, self.max_upload_bytes)
        if "max_pending_upload_bytes" not in given:  # else a full upload would never fit
            self.max_pending_upload_bytes = max(
                self.max_pending_upload_bytes, self.max_batch_upload_bytes
            )
        for low, high in (
            ("default_beam_size", "max_beam_size"),  # a default a request may ask for
            ("default_max_length", "max_max_length"),
            ("max_upload_bytes", "max_pending_upload_bytes"),
            ("max_upload_bytes", "max_batch_upload_bytes"),
            ("max_batch_upload_bytes", "max_pending_upload_bytes"),
            ("max_files_per_batch_request", "max_queue_size"),
            ("max_image_pixels", "max_decoding_pixels"),  # else the largest never decodes
        ):
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
                candidates = [base / VOCAB_FILENAME, base.parent / VOCAB_FILENAME]
                vocab = next((c for c in candidates if c.exists()), candidates[0])
            return ModelFiles(checkpoint=self.checkpoint, vocab=vocab)
        files = model_files_in(DEMO_MODEL_DIR if self.model == "demo" else self.model_dir)
        if self.vocab is not None:
            return ModelFiles(checkpoint=files.checkpoint, vocab=self.vocab)
        return files


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment and ``overrides`` (``None`` values skipped).

    Raises:
        ConfigurationError: a value a setting cannot take, in one line naming the setting,
            its environment variable, the value and the rule it breaks.
    """
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across several settings
            problems.append(message)
            continue
        name = str(error["loc"][0])
        if name in Settings.model_fields:
            name = f"{name} ({setting_variables(name)[0]})"
        problems.append(f"{name} = {error['input']!r}: {message}")
    return "invalid setting: " + "; ".join(problems)


def setting_default_text(name: str) -> str:
    """A setting's default as the docs and ``--help`` show it (machine paths and digests named)."""
    field = Settings.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def setting_variables(name: str) -> list[str]:
    """The environment variables a setting is read from: ``CAPTIONER_<NAME>`` or its aliases."""
    alias = Settings.model_fields[name].validation_alias
    choices = [c for c in getattr(alias, "choices", []) if isinstance(c, str) and c.isupper()]
    return choices or [f"CAPTIONER_{name.upper()}"]
