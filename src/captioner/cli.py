"""The ``captioner`` command line: parse flags, build Settings, call the library.

Library errors (:class:`captioner.errors.CaptionerError`) become one-line messages and a
non-zero exit status here, at the edge; nothing below this module knows about click.
Heavy modules (TensorFlow, the server) are imported inside each command so that
``captioner --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from captioner.beam_search import MIN_MAX_LENGTH
from captioner.errors import CaptionerError
from captioner.pipeline import COLLECTION_BATCH_SIZE
from captioner.training.config import TrainingConfig

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from captioner.collection import Summary
    from captioner.config import Settings
    from captioner.engine import Captioner
    from captioner.outputs import OnExisting, Recorded, ResultWriter
    from captioner.pipeline import ImageSource
    from captioner.results import ImageResult

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"])
PRECISIONS = click.Choice(["fp32", "bf16", "auto"])


def _reports_errors(func: F) -> F:
    """Turn a CaptionerError into ``Error: <message>`` and exit status 1, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CaptionerError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class CheckpointPath(click.ParamType[Path]):
    """A checkpoint named any accepted way; converted to its checked prefix.

    Accepted: a directory with a ``checkpoint`` state file, a prefix such as
    ``model.ckpt-4000``, or one of the prefix's ``.index``, ``.data-*`` or ``.meta`` files.
    Anything else is one ``Error:`` line naming the option, the path and the accepted forms.
    """

    name = "checkpoint"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        from captioner.checkpoint import resolve_checkpoint_prefix

        try:
            return resolve_checkpoint_prefix(value)
        except CaptionerError as exc:
            option = param.opts[0] if param is not None and param.opts else "checkpoint"
            raise click.ClickException(f"{option}: {exc}") from exc


class SettingOption(click.Option):
    """An option that sets a :class:`Settings` field: its help and default come from the field.

    The default stays ``None`` (an unset option leaves the environment's value in place);
    ``--help`` shows the field's own default, read when the help is shown.
    """

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from captioner.config import Settings, setting_default_text

        name = self.name or ""
        if not self.help and name in Settings.model_fields:
            self.help = Settings.model_fields[name].description
        record = super().get_help_record(ctx)
        if record is None or name not in Settings.model_fields:
            return record
        return record[0], f"{record[1]}  [default: {setting_default_text(name)}]"


def _setting_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A ``SettingOption`` (see there)."""
    return click.option(*decls, cls=SettingOption, default=None, **kwargs)


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment and the given options (unset ones skipped)."""
    from captioner.config import load_settings

    return load_settings(**overrides)


_MODEL_OPTIONS = (
    _setting_option(
        "--model",
        type=click.Choice(["im2txt", "demo"]),
        help="'demo': the bundled demo model (coloured shapes only, no network).",
    ),
    _setting_option("--checkpoint", type=CheckpointPath()),
    _setting_option("--vocab", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
    click.option(
        "--beam-size",
        type=click.IntRange(1, 100),
        default=3,
        show_default=True,
        help="Captions kept at each step, and the most captions returned (at most the "
        "model's word rows).",
    ),
    click.option(
        "--max-length",
        type=click.IntRange(MIN_MAX_LENGTH, 100),
        default=20,
        show_default=True,
        help="Longest caption in tokens, counting the start and end tokens <S> and </S>: "
        "at most max-length - 2 words.",
    ),
    _setting_option("--precision", type=PRECISIONS),
    _setting_option("--log-level", type=LOG_LEVELS),
)


def _options(*groups: tuple[Callable[[F], F], ...]) -> Callable[[F], F]:
    """Apply groups of options in order (as if written one above the other)."""

    def apply(func: F) -> F:
        for option in reversed([o for group in groups for o in group]):
            func = option(func)
        return func

    return apply


# Which model to load and how to decode: the same flags for caption and evaluate.
_model_options = _options(_MODEL_OPTIONS)


def _model_settings(**options: Any) -> Settings:
    """The settings the model options (and the environment) give, the package's log shown
    at their level."""
    settings = _settings(**options)
    _show_package_logs(settings.log_level)
    return settings


def _load_model(**options: Any) -> Captioner:
    """The model the options (and the environment) name, downloaded first if missing."""
    from captioner.loading import load_engine

    return load_engine(_model_settings(**options))


def _show_package_logs(level: str) -> None:
    """Send the package's log records (downloads, skipped data) to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("captioner")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="captioner")
def cli() -> None:
    """Caption images with the Show and Tell (im2txt) model, serve it, train it."""


_METADATA_OPTIONS = (
    click.option(
        "--write-metadata",
        type=click.Choice(["sidecar", "embed"]),
        help="Also write each top caption as alt text: an XMP sidecar beside each image (or "
        "under --metadata-dir), or into copies of the images under --metadata-dir. "
        "Needs exiftool.",
    ),
    click.option(
        "--metadata-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where --write-metadata puts its files, at the images' relative paths.",
    ),
    click.option(
        "--in-place", is_flag=True, help="--write-metadata embed: write into the original images."
    ),
    click.option(
        "--overwrite-captions",
        is_flag=True,
        help="--write-metadata: replace a description an image already has (kept by default).",
    ),
)
_SERVER_OPTIONS = (
    click.option(
        "--server",
        "servers",
        multiple=True,
        metavar="URL",
        help="Send the images to this running captioner server instead of loading the model "
        "here (repeat for several, used in turn).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 1024),
        default=16,
        show_default=True,
        help="--server: requests in flight, over all servers (16: two batches of a server's "
        "default size, one running while the next waits).",
    ),
    click.option(
        "--api-key",
        envvar="CAPTIONER_API_KEY",
        help="--server: the servers' API key (better: the CAPTIONER_API_KEY variable, which "
        "no other user can read in the process list).",
    ),
)
_RAY_OPTIONS = (
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        metavar="[ADDRESS]",
        help="Caption on a Ray cluster (the ray extra): SOURCE a directory or s3:// prefix, "
        "--output a directory. Alone: a local Ray instance; or a cluster's address ('auto').",
    ),
    click.option(
        "--actors", type=click.IntRange(1), help="--ray: model actors. [default: CPUs less one]"
    ),
    click.option(
        "--cpus-per-actor",
        type=click.IntRange(1),
        default=1,
        show_default=True,
        help="--ray: CPUs each actor reserves (and its TensorFlow threads).",
    ),
    click.option(
        "--format",
        "output_format",
        type=click.Choice(["parquet", "jsonl"]),
        default="parquet",
        show_default=True,
        help="--ray: the files written in the --output directory.",
    ),
    click.option(
        "--s3-endpoint",
        metavar="URL",
        help="--ray: an S3-compatible store's address for s3:// paths (credentials from the "
        "usual AWS_* variables).",
    ),
)


@cli.command()
@click.argument("images", nargs=-1)
@click.option(
    "--from-list",
    "from_list",
    metavar="FILE",
    help="Also caption the paths in FILE, one a line ('-': standard input).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write the results to this file as they come: .jsonl, .csv or .parquet "
    "(--ray: a directory). [default: print them]",
)
@click.option(
    "--resume", is_flag=True, help="Finish the run that --output records: skip its images."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --output.")
@_model_options
@click.option(
    "--batch-size",
    "-b",
    type=click.IntRange(1, 256),
    default=COLLECTION_BATCH_SIZE,
    show_default=True,
    help="Images per engine call (and per write); fewer take less memory.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Without --output: one JSON object per image per line."
)
@_options(_METADATA_OPTIONS, _SERVER_OPTIONS, _RAY_OPTIONS)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@click.pass_context
@_reports_errors
def caption(ctx: click.Context, /, **options: Any) -> None:
    """Caption IMAGES: files, directories (walked, images found by content) and quoted
    patterns such as 'photos/**/*.jpg'.

    The model runs here, or on running servers (--server URL), or on a Ray cluster
    (--ray). A file that cannot be read or decoded gets an error of its own; the others
    are still captioned. With --output, each batch is written and made durable as it is
    captioned, so a run that is killed loses nothing: rerun it with --resume. Ctrl-C stops
    after the batch in flight. Exit status: 0 when every image was captioned, 1 when some
    failed, 2 for a usage error.
    """
    run = _CaptionRun(ctx, options)
    summary = run.on_ray() if options["ray_address"] else run.here_or_on_servers()
    _finish(summary, options["output"], options["quiet"])


# The options that choose and load the model, as Settings names them.
_MODEL_SETTINGS = ("model", "checkpoint", "vocab", "precision", "log_level")


class _CaptionRun:
    """``captioner caption``'s options, checked, and the ways to run them."""

    def __init__(self, ctx: click.Context, options: dict[str, Any]) -> None:
        self.o = options
        if not options["images"] and options["from_list"] is None:
            raise click.UsageError("name images, directories or patterns, or give --from-list FILE")
        if options["resume"] and options["overwrite"]:
            raise click.UsageError("--resume and --overwrite exclude each other")
        if (options["resume"] or options["overwrite"]) and options["output"] is None:
            raise click.UsageError("--resume and --overwrite go with --output")
        _check_metadata_options(
            options["write_metadata"],
            options["metadata_dir"],
            options["in_place"],
            options["overwrite_captions"],
        )
        self._check_mode(ctx)

    def _check_mode(self, ctx: click.Context) -> None:
        """Each way of running takes its own options, and only one way at a time."""
        o = self.o

        def given(name: str) -> bool:
            return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

        server_only = [n for n in ("concurrency", "api_key") if given(n)]
        ray_only = [n for n in ("actors", "cpus_per_actor", "output_format", "s3_endpoint")
                    if given(n)]  # fmt: skip
        model = [n for n in ("model", "checkpoint", "vocab", "precision") if o[n] is not None]
        if o["servers"] and o["ray_address"]:
            raise click.UsageError("--server and --ray exclude each other")
        if not o["servers"] and server_only:
            raise click.UsageError(f"{_flags(server_only)} go(es) with --server")
        if not o["ray_address"] and ray_only:
            raise click.UsageError(f"{_flags(ray_only)} go(es) with --ray")
        if o["servers"] and model:
            raise click.UsageError(f"{_flags(model)}: the servers choose their model")
        if o["ray_address"]:
            extra = [n for n in ("from_list", "write_metadata") if o[n]]
            if extra or len(o["images"]) != 1 or o["output"] is None:
                raise click.UsageError(
                    "--ray takes one SOURCE (a directory or prefix) and --output DIR"
                    + (f"; not {_flags(extra)}" if extra else "")
                )

    def here_or_on_servers(self) -> Summary:
        """In this process, or through the client: the same listing, output and progress."""
        from captioner.alt_text import AltTextWriter
        from captioner.collection import (
            Progress,
            Summary,
            alt_text_step,
            in_chunks,
            run_collection,
            skip_recorded,
        )

        o = self.o
        writer, recorded = self._open_output()
        summary = Summary()
        output = o["output"]
        show = (
            not o["quiet"]
            and sys.stderr.isatty()
            and (output is not None or not sys.stdout.isatty())
        )
        with _stop_on_interrupt() as interrupted, contextlib.ExitStack() as stack:
            sources = skip_recorded(self._listing(), recorded, summary)
            if o["servers"]:
                from captioner.client import Client

                client = stack.enter_context(Client(list(o["servers"]), api_key=o["api_key"]))
                named = ((s.name, s.data) if s.data is not None else s.name for s in sources)
                results = client.caption_many(
                    named,
                    concurrency=o["concurrency"],
                    beam_size=o["beam_size"],
                    max_length=o["max_length"],
                    ordered=True,  # the same order as in process, whatever the servers do
                    # A server that stays unreachable through the retries stops the run
                    # (--resume goes on): an error row would mark its images done.
                    max_consecutive_failures=1,
                )
                batches: Iterable[Sequence[ImageResult]] = in_chunks(results, o["batch_size"])
            else:
                from captioner.pipeline import caption_batches

                engine = _load_model(**{n: o[n] for n in _MODEL_SETTINGS})
                batches = caption_batches(
                    engine,
                    sources,
                    beam_size=o["beam_size"],
                    max_length=o["max_length"],
                    batch_size=o["batch_size"],
                )
            progress = Progress(enabled=show, count=self._counter(recorded))
            before_record = None
            if o["write_metadata"] is not None:
                before_record = alt_text_step(
                    stack.enter_context(AltTextWriter()),
                    o["write_metadata"],
                    metadata_dir=o["metadata_dir"],
                    in_place=o["in_place"],
                    overwrite=o["overwrite_captions"],
                    report=progress.write,
                )
            try:
                run_collection(
                    batches,
                    writer,
                    summary,
                    progress=progress,
                    before_record=before_record,
                    should_stop=interrupted.is_set,
                )
            except CaptionerError:
                if output is not None:
                    click.echo(
                        f"{summary.line()}\nstopped: the run can go on later with the same "
                        f"command and --resume ({output} keeps what was written)",
                        err=True,
                    )
                raise
        return summary

    def on_ray(self) -> Summary:
        """The whole job on a Ray cluster: Ray's own progress, the same summary."""
        try:
            from captioner.distributed import JobOptions, run_job
        except ImportError as exc:
            raise click.ClickException(
                f"--ray needs the ray extra: pip install 'captioner[ray]' ({exc})"
            ) from exc
        from captioner.outputs import ExistingOutputError

        o = self.o
        address = None if o["ray_address"] == "local" else o["ray_address"]
        settings = _model_settings(**{n: o[n] for n in _MODEL_SETTINGS})
        job = JobOptions(
            address=address,
            actors=o["actors"],
            cpus_per_actor=o["cpus_per_actor"],
            batch_size=o["batch_size"],
            output_format=o["output_format"],
            s3_endpoint=o["s3_endpoint"],
            resume=o["resume"],
            beam_size=o["beam_size"],
            max_length=o["max_length"],
        )
        try:
            return run_job(o["images"][0], str(o["output"]), settings, job)
        except ExistingOutputError as exc:
            raise click.UsageError(str(exc)) from exc

    def _listing(self) -> Iterator[ImageSource]:
        """The sources, lazily; called again to count them."""
        from captioner.sources import iter_sources, read_list

        from_list = self.o["from_list"]
        lines = read_list(from_list) if from_list is not None else iter(())
        return iter_sources(itertools.chain(self.o["images"], lines))

    def _counter(self, recorded: Recorded) -> Callable[[], int] | None:
        """Counts the images still to do, for the progress bar (not for standard input,
        which cannot be read twice)."""
        if self.o["from_list"] == "-":
            return None
        return lambda: len({s.name for s in self._listing()} - recorded.sources.keys())

    def _open_output(self) -> tuple[ResultWriter, Recorded]:
        from captioner.outputs import ExistingOutputError, Recorded, StdoutWriter, open_output

        o = self.o
        if o["output"] is None:
            return StdoutWriter(o["as_json"]), Recorded()
        on_existing: OnExisting = (
            "resume" if o["resume"] else "overwrite" if o["overwrite"] else "refuse"
        )
        try:
            return open_output(o["output"], on_existing)
        except ExistingOutputError as exc:
            raise click.UsageError(str(exc)) from exc


def _flags(names: list[str]) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _check_metadata_options(
    mode: str | None, metadata_dir: Path | None, in_place: bool, overwrite_captions: bool
) -> None:
    """--write-metadata's companions make sense only with it, and embed needs a place."""
    if mode is None:
        given = [
            name
            for name, value in (
                ("--metadata-dir", metadata_dir),
                ("--in-place", in_place),
                ("--overwrite-captions", overwrite_captions),
            )
            if value
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} go(es) with --write-metadata")
        return
    if mode == "embed" and (metadata_dir is None) == (not in_place):
        raise click.UsageError(
            "--write-metadata embed writes copies under --metadata-dir DIR, or the originals "
            "with --in-place: give exactly one"
        )
    if mode == "sidecar" and in_place:
        raise click.UsageError("--in-place goes with --write-metadata embed")


def _finish(summary: Summary, output: Path | None, quiet: bool) -> None:
    """The summary line, the way to resume after an interrupt, and the exit status.

    Printing to standard output with no terminal to read a summary, the command stays as
    quiet as it always was: only the results."""
    if not quiet and (output is not None or sys.stderr.isatty()):
        click.echo(summary.line(), err=True)
    if summary.interrupted:
        if output is not None:
            click.echo(
                f"interrupted: to finish, run the same command with --resume ({output} "
                "keeps what was written)",
                err=True,
            )
        sys.exit(130)
    if not summary.all_captioned or summary.extra["alt text failed"]:
        sys.exit(1)


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (the run stops after the batch in flight, written);
    a second one interrupts at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_interrupt(signum: int, frame: object) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        click.echo("\nstopping after the batch in flight (Ctrl-C again to stop at once)", err=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


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
    from captioner.download import install_model

    _show_package_logs("warning" if quiet else "info")
    settings = _settings(model_dir=dest, download_urls=list(urls) or None)
    files = install_model(
        settings,
        force=force,
        from_file=from_file,
        vocab_file=vocab_file,
        progress="off" if quiet else "auto",
    )
    click.echo(files.checkpoint.parent)


@cli.command()
@_setting_option("--host")
@_setting_option("--port", type=click.IntRange(1, 65535))
@_setting_option("--model", type=click.Choice(["im2txt", "demo"]))
@_setting_option("--model-dir", type=click.Path(file_okay=False, path_type=Path))
@_setting_option("--checkpoint", type=CheckpointPath())
@_setting_option("--vocab", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_setting_option("--offline", is_flag=True)
@_setting_option("--max-batch-size", type=click.IntRange(1, 256))
@_setting_option("--max-batch-wait-ms", type=click.FloatRange(0))
@_setting_option("--max-batch-gather-ms", type=click.FloatRange(0))
@_setting_option("--max-queue-size", type=click.IntRange(1))
@_setting_option("--request-timeout-s", type=click.FloatRange(0, min_open=True))
@_setting_option("--drain-timeout-s", type=click.FloatRange(0))
@_setting_option("--shutdown-timeout-s", type=click.IntRange(1))
@_setting_option("--max-upload-bytes", type=click.IntRange(1))
@_setting_option("--max-batch-upload-bytes", type=click.IntRange(1))
@_setting_option("--max-pending-upload-bytes", type=click.IntRange(1))
@_setting_option("--max-decoding-pixels", type=click.IntRange(1))
@_setting_option("--header-timeout-s", type=click.FloatRange(0, min_open=True))
@_setting_option("--body-timeout-s", type=click.FloatRange(0, min_open=True))
@_setting_option("--max-connections", type=click.IntRange(1))
@_setting_option("--max-header-bytes", type=click.IntRange(1024))
@_setting_option(
    "--api-key-file",
    "api_keys_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@_setting_option("--public-metrics", is_flag=True)
@_setting_option("--cors-enable", is_flag=True)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow only this origin (repeat for several).  [default: none]",
)
@_setting_option("--precision", type=PRECISIONS)
@_setting_option("--log-level", type=LOG_LEVELS)
@_reports_errors
def serve(**options: Any) -> None:
    """Serve the MAX-compatible caption API and the web page (uvicorn).

    Every option is also an environment variable, CAPTIONER_<OPTION> (CORS_ENABLE for
    --cors-enable, CAPTIONER_API_KEYS_FILE for --api-key-file); options win. It listens on
    this machine only unless --host 0.0.0.0. The port is taken first (a busy port is
    reported at once), then the model is fetched if missing and loaded while the server
    already answers health probes. SIGTERM drains: admitted requests finish first.
    """
    from captioner.api.server import open_listener
    from captioner.api.server import serve as run_server
    from captioner.tf_runtime import import_tensorflow

    options["cors_origins"] = list(options["cors_origins"]) or None
    settings = _settings(**options)
    listener = open_listener(settings.host, settings.port)
    import_tensorflow(settings.log_level)  # here, on the main thread: quietly
    run_server(settings, listener)


# --- training and evaluation ---------------------------------------------------------

_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainingConfig)}
# Phase 1 alone never changes the encoder: without a trained one to start from, the decoder
# would learn captions from the features of random weights.
_RANDOM_ENCODER_WARNING = (
    "warning: without --init-from the encoder keeps its random initial weights unless "
    "--full-steps trains it; add --init-from im2txt (or demo, a checkpoint) or --full-steps N"
)


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
@_train_option(
    "checkpoint_every", click.IntRange(1), "Save (and measure the held-out loss) every N steps."
)
@_train_option("seed", click.IntRange(0), "Seeds the split, the initial weights, the batches.")
@_train_option(
    "image_cache_mb", click.IntRange(0), "Keep preprocessed images in memory, up to this many MiB."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, only errors.")
@_setting_option("--log-level", type=LOG_LEVELS)
@click.pass_context
@_reports_errors
def train(
    ctx: click.Context,
    /,
    out: Path,
    resume: bool,
    quiet: bool,
    log_level: str | None,
    **options: Any,
) -> None:
    """Train a caption model on your own captions; the engine and server load --out.

    The data is a JSON Lines file of {"image": "<path relative to the file>",
    "caption": "..."} (several lines per image allowed), or COCO captions (--data
    annotations.json --images folder). Phase 1 trains the decoder with the encoder
    frozen; phase 2 (--full-steps) the whole model.
    """
    from tqdm import tqdm

    from captioner.tf_runtime import import_tensorflow
    from captioner.training.run_dir import RunDirectory
    from captioner.training.trainer import train as run_training

    run = RunDirectory(out)
    if resume:
        given = [
            "--" + name.replace("_", "-")
            for name in options
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(
                f"--resume continues with the run's own options ({run.config_path}); "
                f"drop {', '.join(given)}"
            )
        config = run.read_config()
    else:
        if options["data"] is None:
            raise click.UsageError("--data is required (unless --resume)")
        if run.holds_run():
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
        if config.init_from is None and config.full_steps == 0:
            click.echo(_RANDOM_ENCODER_WARNING, err=True)

    level = _settings(log_level=log_level).log_level
    _show_package_logs(level)
    import_tensorflow(level)
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


def _init_model(init_from: str | None, init_vocab: Path | None) -> tuple[Path | None, Path | None]:
    """Resolve --init-from (a model name, model directory or checkpoint) and its vocabulary."""
    from captioner.assets import CHECKPOINT_DIRNAME, model_files_in
    from captioner.checkpoint import resolve_checkpoint_prefix

    if init_from is None:
        if init_vocab is not None:
            raise click.UsageError("--init-vocab goes with --init-from")
        return None, None
    path = Path(init_from)
    if init_from in ("im2txt", "demo") and not path.exists():
        files = _settings(model=init_from, vocab=init_vocab).model_files()
    elif (path / CHECKPOINT_DIRNAME).is_dir():
        files = model_files_in(path)
    else:
        try:
            prefix = resolve_checkpoint_prefix(path)
        except CaptionerError as exc:
            raise click.ClickException(f"--init-from: {exc}") from exc
        files = _settings(checkpoint=prefix, vocab=init_vocab).model_files()
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
@click.option(
    "--samples",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Sample captions to print beside their references.",
)
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
    beam_size: int,
    max_length: int,
    samples: int,
    on_error: str,
    as_json: bool,
    quiet: bool,
    **model: Any,
) -> None:
    """Score a model on held-out captions: exact-match rate, BLEU-4, sample captions.

    A caption is an exact match when its words equal those of one of the image's
    references, after the training tokenisation.
    """
    from captioner.training.dataset import read_dataset
    from captioner.training.evaluate import bleu_scorer
    from captioner.training.evaluate import evaluate as run_evaluation

    bleu_scorer()  # sacrebleu is an extra: say so before loading (or downloading) a model
    engine = _load_model(**model)
    examples = read_dataset(data, images, on_error)  # type: ignore[arg-type]
    result = run_evaluation(
        engine,
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
    main()
