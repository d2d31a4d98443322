"""The ``captioner`` command line: parse flags, build Settings, call the library.

Library errors (:class:`captioner.errors.CaptionerError`) become one-line messages and a
non-zero exit status here, at the edge; nothing below this module knows about click.
Heavy modules (TensorFlow, the server) are imported inside each command so that
``captioner --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from captioner.errors import CaptionerError

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a CaptionerError into ``Error: <message>`` and exit status 1, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CaptionerError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="captioner")
def cli() -> None:
    """Caption images with the Show and Tell (im2txt) model, serve it, train it."""


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="Checkpoint prefix or directory. [default: the model directory's]",
)
@click.option(
    "--vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="word_counts.txt. [default: next to the checkpoint]",
)
@click.option(
    "--model",
    type=click.Choice(["im2txt", "demo"]),
    default=None,
    help="'demo': the bundled demo model. [default: im2txt]",
)
@click.option("--beam-size", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--max-length", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Images per engine call.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image per line.")
@_reports_errors
def caption(
    images: tuple[Path, ...],
    checkpoint: Path | None,
    vocab: Path | None,
    model: str | None,
    beam_size: int,
    max_length: int,
    batch_size: int,
    as_json: bool,
) -> None:
    """Caption IMAGE files (JPEG, PNG, GIF, BMP, WebP, TIFF).

    A file that cannot be read or decoded is reported for itself; the others are still
    captioned, and the exit status is 1 at the end.
    """
    import numpy as np

    from captioner.config import Settings
    from captioner.engine import Captioner

    overrides: dict[str, Any] = {"checkpoint": checkpoint, "vocab": vocab}
    if model is not None:
        overrides["model"] = model
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    files = settings.model_files()
    if not files.checkpoint.exists():
        raise click.ClickException(
            f"no model found at {files.checkpoint.parent}. Get the pretrained model with "
            "'captioner download' (or point at one with --checkpoint/--vocab, or use "
            "--model demo for the bundled demo model)."
        )
    captioner = Captioner.load(
        files.checkpoint, files.vocab, max_image_pixels=settings.max_image_pixels
    )

    failed = False
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        outcomes: list[Any] = []  # per image, in order: pixels or an error message
        for path in chunk:
            try:
                outcomes.append(captioner.preprocess(path.read_bytes()))
            except OSError as exc:
                outcomes.append(exc.strerror or str(exc))
            except CaptionerError as exc:
                outcomes.append(str(exc))
        good = [o for o in outcomes if not isinstance(o, str)]
        results = iter(
            captioner.caption_arrays(np.stack(good), beam_size, max_length) if good else []
        )
        for path, outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, str):
                failed = True
                _print_error(str(path), outcome, as_json)
            else:
                _print_captions(str(path), next(results), as_json)
    if failed:
        sys.exit(1)


def _print_captions(image: str, captions: list[Any], as_json: bool) -> None:
    """One image's captions: a JSON line, or a readable ranked list."""
    if as_json:
        predictions = [
            {
                "index": str(rank),
                "caption": c.text,
                "probability": c.probability,
                "logprob": c.logprob,
            }
            for rank, c in enumerate(captions)
        ]
        click.echo(json.dumps({"image": image, "predictions": predictions}))
        return
    click.echo(image)
    for rank, c in enumerate(captions, start=1):
        click.echo(f"  {rank}. p={c.probability:.6g}  logprob={c.logprob:.4f}  {c.text}")


def _print_error(image: str, message: str, as_json: bool) -> None:
    """A per-image failure: on stdout as JSON (one line per image), else on stderr."""
    if as_json:
        click.echo(json.dumps({"image": image, "error": message}))
    else:
        click.echo(f"{image}: error: {message}", err=True)


@cli.command()
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to install into. [default: CAPTIONER_MODEL_DIR or the user cache]",
)
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="A tarball source; repeat for mirrors, tried in order. [default: the built-in ones]",
)
@click.option("--force", is_flag=True, help="Replace a model that is already installed.")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Install this copy of assets.tar.gz instead of downloading it.",
)
@click.option(
    "--vocab-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Install this copy of word_counts.txt instead of downloading it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output, only errors.")
@_reports_errors
def download(
    dest: Path | None,
    urls: tuple[str, ...],
    force: bool,
    from_file: Path | None,
    vocab_file: Path | None,
    quiet: bool,
) -> None:
    """Download, verify and install the pretrained im2txt model.

    Every file is checked against its pinned digest, and the model directory is switched
    in only when complete, so an interrupted run leaves the old state; rerun to resume.
    """
    import logging

    from captioner.config import Settings
    from captioner.download import install_model

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    overrides: dict[str, Any] = {}
    if dest is not None:
        overrides["model_dir"] = dest
    if urls:
        overrides["download_urls"] = list(urls)
    files = install_model(
        Settings(**overrides),
        force=force,
        from_file=from_file,
        vocab_file=vocab_file,
        progress="off" if quiet else "auto",
    )
    click.echo(files.checkpoint.parent)


@cli.command()
@click.option("--host", help="Interface to listen on. [default: 0.0.0.0]")
@click.option("--port", type=click.IntRange(1, 65535), help="[default: 5000]")
@click.option(
    "--model",
    type=click.Choice(["im2txt", "demo"]),
    help="'im2txt': the pretrained model (downloaded if missing); 'demo': bundled.",
)
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="Serve this checkpoint (prefix or directory) instead.",
)
@click.option(
    "--vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="word_counts.txt. [default: next to the checkpoint]",
)
@click.option("--offline", is_flag=True, default=None, help="Never download the model.")
@click.option("--max-batch-size", type=click.IntRange(1, 256), help="[default: 8]")
@click.option("--max-batch-wait-ms", type=click.FloatRange(0), help="[default: 5]")
@click.option("--max-queue-size", type=click.IntRange(1), help="[default: 64]")
@click.option("--request-timeout-s", type=click.FloatRange(0, min_open=True), help="[default: 30]")
@click.option("--drain-timeout-s", type=click.FloatRange(0), help="[default: 20]")
@click.option("--max-upload-bytes", type=click.IntRange(1), help="[default: 10485760]")
@click.option("--cors-enable", is_flag=True, default=None, help="Allow every origin (MAX's).")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow this origin; repeat.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@_reports_errors
def serve(**options: Any) -> None:
    """Serve the MAX-compatible caption API (uvicorn).

    Every option is also an environment variable, CAPTIONER_<OPTION> (CORS_ENABLE for
    --cors-enable); options win. SIGTERM drains: admitted requests finish first.
    """
    from pydantic import ValidationError

    from captioner.api.server import serve as run_server
    from captioner.config import Settings

    overrides = {name: value for name, value in options.items() if value not in (None, ())}
    if "cors_origins" in overrides:
        overrides["cors_origins"] = list(overrides["cors_origins"])
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise click.ClickException(f"invalid setting: {exc}") from exc
    run_server(settings)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="captioner")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
