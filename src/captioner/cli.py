"""The ``captioner`` command line: parse flags, build Settings, call the library.

Library errors (:class:`captioner.errors.CaptionerError`) become one-line messages and a
non-zero exit status here, at the edge; nothing below this module knows about click.
Heavy modules (TensorFlow, the server) are imported inside each command so that
``captioner --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from captioner.errors import CaptionerError
from captioner.training.config import TrainingConfig

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


_MODEL_OPTIONS = (
    click.option(
        "--model",
        type=click.Choice(["im2txt", "demo"]),
        default=None,
        help="'demo': the bundled demo model. [default: im2txt]",
    ),
    click.option(
        "--checkpoint",
        type=click.Path(exists=True, path_type=Path),
        help="Checkpoint prefix or directory (a training run's checkpoint/ too). "
        "[default: the model directory's]",
    ),
    click.option(
        "--vocab",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="word_counts.txt. [default: next to the checkpoint]",
    ),
    click.option("--beam-size", type=click.IntRange(1, 100), default=3, show_default=True),
    click.option("--max-length", type=click.IntRange(1, 100), default=20, show_default=True),
)


def _model_options(func: F) -> F:
    """Which model to load and how to decode: the same flags for caption and evaluate."""
    for option in reversed(_MODEL_OPTIONS):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="captioner")
def cli() -> None:
    """Caption images with the Show and Tell (im2txt) model, serve it, train it."""


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_options
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

    captioner = _load_captioner(checkpoint=checkpoint, vocab=vocab, model=model)
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


def _load_captioner(checkpoint: Path | None, vocab: Path | None, model: str | None) -> Any:
    """The Captioner that --checkpoint/--vocab/--model (or the environment) name."""
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
    return Captioner.load(files.checkpoint, files.vocab, max_image_pixels=settings.max_image_pixels)


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
@click.option("--max-batch-gather-ms", type=click.FloatRange(0), help="[default: 50]")
@click.option("--max-queue-size", type=click.IntRange(1), help="[default: 64]")
@click.option("--request-timeout-s", type=click.FloatRange(0, min_open=True), help="[default: 30]")
@click.option("--drain-timeout-s", type=click.FloatRange(0), help="[default: 20]")
@click.option("--max-upload-bytes", type=click.IntRange(1), help="[default: 10485760]")
@click.option(
    "--max-pending-upload-bytes",
    type=click.IntRange(1),
    help="Most request-body bytes held at once; more: 503. [default: 134217728]",
)
@click.option(
    "--max-decoding-pixels",
    type=click.IntRange(1),
    help="Most image pixels decoded at once. [default: the image pixel limit, 40000000]",
)
@click.option(
    "--header-timeout-s",
    type=click.FloatRange(0, min_open=True),
    help="Time for a request's headers; then 408. [default: 10]",
)
@click.option(
    "--body-timeout-s",
    type=click.FloatRange(0, min_open=True),
    help="Time for a request's body; then 408. [default: 60]",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    help="Most open connections; more: 503. [default: 1024]",
)
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


# --- training and evaluation ---------------------------------------------------------

_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}


def _train_option(name: str, type_: Any, help_text: str) -> Callable[[F], F]:
    """A ``captioner train`` option whose default is :class:`TrainingConfig`'s."""
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        type=type_,
        default=_TRAIN_DEFAULTS[name],
        show_default=True,
        help=help_text,
    )


@cli.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Captions: a JSON Lines file, or a COCO annotations .json (with --images).",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The COCO image folder.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory: the model (checkpoint/, word_counts.txt) and the training state.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--init-from",
    help="Fine-tune this model instead of a new one: 'im2txt', 'demo', a model directory, "
    "or a checkpoint (prefix or directory). Its vocabulary is kept.",
)
@click.option(
    "--init-vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The --init-from model's word_counts.txt. [default: next to its checkpoint]",
)
@_train_option("embedding_size", click.IntRange(1), "Word and image embedding size.")
@_train_option("lstm_units", click.IntRange(1), "LSTM units.")
@_train_option(
    "depth_multiplier",
    click.FloatRange(0, min_open=True),
    "Inception width: every channel count times this...",
)
@_train_option("min_depth", click.IntRange(1), "...but never below this.")
@_train_option(
    "decoder_steps",
    click.IntRange(0),
    "Phase 1 steps: the decoder only, on features of the frozen encoder, computed once.",
)
@_train_option(
    "full_steps", click.IntRange(0), "Phase 2 steps: the whole model, Inception included."
)
@_train_option("batch_size", click.IntRange(1), "Captions per step.")
@_train_option(
    "learning_rate", click.FloatRange(0, min_open=True), "Peak Adam learning rate, phase 1."
)
@_train_option(
    "full_learning_rate", click.FloatRange(0, min_open=True), "Peak Adam learning rate, phase 2."
)
@_train_option("warmup_steps", click.IntRange(0), "Linear warm-up, then cosine decay to 0.")
@_train_option("clip_norm", click.FloatRange(0, min_open=True), "Gradient global-norm clip.")
@_train_option(
    "aux_weight",
    click.FloatRange(0),
    "Phase 2: weight of an auxiliary word loss with a short path to the encoder (not saved; "
    "helps an encoder learn from scratch). 0: im2txt's loss alone.",
)
@click.option(
    "--held-out",
    "held_out_fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=_TRAIN_DEFAULTS["held_out_fraction"],
    show_default=True,
    help="Share of images held out to measure the loss on.",
)
@_train_option("min_word_count", click.IntRange(1), "Rarer words become <UNK>.")
@_train_option("on_error", click.Choice(["skip", "fail"]), "Bad data: report and skip, or stop.")
@_train_option("checkpoint_every", click.IntRange(1), "Save (and measure held-out loss) every N.")
@_train_option("seed", click.IntRange(0), "Seeds the split, the initial weights, the batches.")
@_train_option("image_cache_mb", click.IntRange(0), "Keep preprocessed images in memory up to.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, only errors.")
@click.pass_context
@_reports_errors
def train(ctx: click.Context, out: Path, resume: bool, quiet: bool, **options: Any) -> None:
    """Train a caption model on your own captions; the engine and server load --out.

    The data is a JSON Lines file of {"image": "<path relative to the file>",
    "caption": "..."} (several lines per image allowed), or COCO captions (--data
    annotations.json --images folder). Phase 1 trains the decoder with the encoder
    frozen; phase 2 (--full-steps) the whole model.
    """
    from tqdm import tqdm

    from captioner.training.trainer import CONFIG_FILENAME
    from captioner.training.trainer import train as run_training

    if resume:
        given = [
            "--" + name.replace("_", "-")
            for name in options
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(
                f"--resume continues with the run's own options ({out / CONFIG_FILENAME}); "
                f"drop {', '.join(given)}"
            )
        config_path = out / CONFIG_FILENAME
        if not config_path.is_file():
            raise click.UsageError(f"nothing to resume: {config_path} does not exist")
        config = TrainingConfig.from_json(config_path.read_text())
    else:
        if options["data"] is None:
            raise click.UsageError("--data is required (unless --resume)")
        if (out / CONFIG_FILENAME).exists() or (out / "checkpoint").exists():
            raise click.UsageError(
                f"{out} already holds a training run: add --resume to continue it, "
                "or choose another --out"
            )
        options["init_from"], options["init_vocab"] = _init_model(
            options["init_from"], options["init_vocab"]
        )
        try:
            config = TrainingConfig(**options)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc

    with _library_warnings_on_stderr():
        try:
            result = run_training(
                config,
                out,
                resume=resume,
                progress=not quiet,
                report=lambda message: tqdm.write(message, file=sys.stderr),
            )
        except FloatingPointError as exc:  # a diverging run: the message says what to do
            raise click.ClickException(str(exc)) from exc
    held_out = "n/a" if result.held_out_loss is None else f"{result.held_out_loss:.4f}"
    click.echo(
        f"trained to step {result.global_step} in {result.wall_s:.0f} s: loss "
        f"{result.train_loss:.4f}, held-out loss {held_out}",
        err=True,
    )
    click.echo(f"captioner serve --checkpoint {result.checkpoint.parent}")


@contextmanager
def _library_warnings_on_stderr() -> Iterator[None]:
    """Show the package's logged warnings (skipped data items) on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("captioner")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _init_model(init_from: str | None, init_vocab: Path | None) -> tuple[Path | None, Path | None]:
    """Resolve --init-from (a model name, model directory or checkpoint) and its vocabulary."""
    from captioner.assets import model_files_in
    from captioner.config import Settings

    if init_from is None:
        if init_vocab is not None:
            raise click.UsageError("--init-vocab goes with --init-from")
        return None, None
    path = Path(init_from)
    if init_from in ("im2txt", "demo") and not path.exists():
        files = Settings(model=init_from, vocab=init_vocab).model_files()
    elif (path / "checkpoint").is_dir():
        files = model_files_in(path)
    elif path.exists():
        files = Settings(checkpoint=path, vocab=init_vocab).model_files()
    else:
        raise click.UsageError(f"--init-from: {init_from} does not exist")
    return files.checkpoint, init_vocab or files.vocab


@cli.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Held-out captions: JSON Lines, or COCO annotations .json (with --images).",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The COCO image folder.",
)
@_model_options
@click.option("--samples", type=click.IntRange(0), default=5, show_default=True)
@click.option(
    "--on-error",
    type=click.Choice(["skip", "fail"]),
    default="skip",
    show_default=True,
    help="Bad data: report and skip, or stop.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_reports_errors
def evaluate(
    data: Path,
    images: Path | None,
    model: str | None,
    checkpoint: Path | None,
    vocab: Path | None,
    beam_size: int,
    max_length: int,
    samples: int,
    on_error: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Score a model on held-out captions: exact-match rate, BLEU-4, sample captions.

    A caption is an exact match when its words equal those of one of the image's
    references, after the training tokenisation.
    """
    from captioner.training.dataset import read_dataset
    from captioner.training.evaluate import evaluate as run_evaluation

    with _library_warnings_on_stderr():
        examples = read_dataset(data, images, on_error)  # type: ignore[arg-type]
    captioner = _load_captioner(checkpoint=checkpoint, vocab=vocab, model=model)
    result = run_evaluation(
        captioner,
        examples.examples,
        beam_size=beam_size,
        max_length=max_length,
        sample_count=samples,
        on_error=on_error,  # type: ignore[arg-type]
        progress=not quiet and not as_json,
        report=lambda message: click.echo(message, err=True),
    )
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    exact = round(result.exact_match * result.count)
    click.echo(f"images:      {result.count}")
    click.echo(f"exact match: {result.exact_match:.1%} ({exact}/{result.count})")
    click.echo(f"BLEU-4:      {result.bleu4:.4f}")
    for sample in result.samples:
        mark = "=" if sample.exact else "x"
        click.echo(f"{mark} {sample.image}\n    model: {sample.caption}")
        for reference in sample.references:
            click.echo(f"    ref:   {reference}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="captioner")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
