"""Fetch, verify and install the pretrained assets, never leaving a half-installed model.

The model directory ``<parent>/<name>`` only ever appears through the rename of a complete,
verified directory. Work in progress lives beside it, on the same filesystem, so that the
rename is atomic::

    <parent>/.<name>.lock        held while installing: one installer per model directory
    <parent>/.<name>.download/   partial downloads, kept after a failure to resume with Range
    <parent>/.<name>.new-*/      the directory being filled; deleted on any failure
    <parent>/.<name>.old-*/      the replaced model, deleted right after the switch

Whatever stops the process (crash, Ctrl-C, full disk), ``<parent>/<name>`` holds the old
model or the new one, or, for the instant between two renames of a replacement, nothing;
never a mix. The next installer removes the leftovers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shlex
import shutil
import sys
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from filelock import FileLock, Timeout

from captioner.assets import CHECKPOINT_DIRNAME, VOCAB_FILENAME, ModelFiles, model_files_in
from captioner.checkpoint import resolve_checkpoint_prefix
from captioner.config import Settings
from captioner.errors import (
    AssetError,
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    OfflineError,
    UnsafeArchiveError,
)
from captioner.transfer import CHUNK_BYTES, ProgressMode, fetch, write_chunks

__all__ = ["ensure_model", "install_model"]

logger = logging.getLogger(__name__)

TARBALL_NAME = "assets.tar.gz"
_MODEL_COMMANDS = ("caption", "serve", "evaluate")  # the commands that take --model


# --- public entry points -----------------------------------------------------------------


def ensure_model(
    settings: Settings, *, download: bool = True, progress: ProgressMode = "auto"
) -> ModelFiles:
    """Make sure the model the settings name is on disk, downloading it if allowed.

    It blocks for the whole download; the server calls it from a worker thread.

    Args:
        settings: ``checkpoint``/``vocab`` (files the user already has), ``model``
            (``demo`` is bundled), ``model_dir``, ``offline`` and the download settings.
        download: fetch a missing pretrained model (unless ``settings.offline``).
        progress: how a download reports progress.

    Returns:
        The checkpoint and vocabulary to load (``settings.model_files()``), checked present.

    Raises:
        OfflineError: the pretrained model is missing and ``settings.offline`` is set.
        AssetError: the pretrained model is missing and ``download`` is False, an explicit
            checkpoint or vocabulary does not exist, or no source provided a verified model;
            the message says how to get one.
    """
    if settings.checkpoint is None and settings.model == "im2txt":
        missing = _missing_files(settings.model_dir, settings)
        if missing and settings.offline:
            raise OfflineError(_offline_message(settings.model_dir, missing))
        if missing and not download:
            raise AssetError(
                f"no pretrained model in {settings.model_dir} (missing: {', '.join(missing)})."
                f"\n{_ways_out(settings.model_dir)}"
            )
        if missing:
            install_model(settings, progress=progress)
    files = settings.model_files()
    problems = []
    try:
        resolve_checkpoint_prefix(files.checkpoint)
    except CheckpointError as exc:
        problems.append(f"checkpoint {exc}")
    if not files.vocab.is_file():
        problems.append(f"vocabulary {files.vocab} (give it with --vocab)")
    if problems:
        raise AssetError("model files not found: " + "; ".join(problems))
    return files


def install_model(
    settings: Settings,
    *,
    force: bool = False,
    from_file: Path | None = None,
    vocab_file: Path | None = None,
    progress: ProgressMode = "auto",
) -> ModelFiles:
    """Install the pretrained assets into ``settings.model_dir``, atomically.

    The tarball comes from ``from_file`` or from the first of ``settings.download_urls``
    that serves one whose members match ``settings.asset_sha512``; the vocabulary from
    ``vocab_file`` or ``settings.vocab_url`` (unless the tarball itself carries a pinned
    ``word_counts.txt``). Only the pinned members are kept.

    Args:
        settings: destination (``model_dir``), sources, pinned digests, timeouts, retries.
        force: replace a model that is already complete.
        from_file: a copy of ``assets.tar.gz`` to install instead of downloading it.
        vocab_file: a copy of ``word_counts.txt`` to install instead of downloading it.
        progress: how downloads report progress.

    Returns:
        The installed checkpoint directory and vocabulary.

    Raises:
        OfflineError: something must be downloaded and ``settings.offline`` is set.
        ChecksumMismatchError: the only source served a file with another digest.
        UnsafeArchiveError: the only source served a tarball with a link, a device or a
            member outside the destination.
        AssetError: any other failure (HTTP errors, retries exhausted, no space left, a
            destination that holds something other than a model); several sources that
            all failed are reported together.
    """
    dest = settings.model_dir.expanduser().absolute()
    needs_network = from_file is None or (
        VOCAB_FILENAME not in settings.asset_sha512 and vocab_file is None
    )
    if settings.offline and needs_network and (force or _missing_files(dest, settings)):
        raise OfflineError(_offline_message(dest, _missing_files(dest, settings)))
    created = _missing_ancestors(dest.parent)
    downloads = dest.parent / f".{dest.name}.download"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _install_lock(dest):
            try:
                _remove_leftovers(dest)
                if not force and not _missing_files(dest, settings):
                    logger.info("%s already holds the model; use --force to replace it", dest)
                    return model_files_in(dest)
                _check_replaceable(dest)
                # Not mkdtemp: its 0700 would make the installed model private to the
                # installer (an image built as root, served as another uid). mkdir honours
                # the umask; the lock makes the name unique.
                staging = dest.parent / f".{dest.name}.new-{os.getpid()}"
                staging.mkdir()
                try:
                    _fill(staging, settings, downloads, from_file, vocab_file, progress)
                    _switch_into_place(staging, dest)
                finally:
                    _remove(staging)
                _remove(downloads)
            finally:
                _remove_if_nothing_kept(downloads)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise AssetError(
            f"cannot install the model in {dest}: {exc.strerror or exc}{where}"
        ) from exc
    finally:
        for directory in created:  # deepest first: the ones this call made, if still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
    logger.info("installed the model in %s", dest)
    return model_files_in(dest)


def _fill(
    staging: Path,
    settings: Settings,
    downloads: Path,
    from_file: Path | None,
    vocab_file: Path | None,
    progress: ProgressMode,
) -> None:
    """Put every verified file into ``staging``, or raise with what every source said.

    Each asset is tried from each of its sources even when another asset already failed, so
    one error names every problem, and whatever did arrive stays in ``downloads`` for the
    next run to resume. Every source has an equal share of ``download_deadline_s`` to start
    sending its file, so sources that never answer cost that deadline in all, not a
    timeout (and its retries) each.
    """
    failures: list[AssetError] = []
    vocab_from_network = VOCAB_FILENAME not in settings.asset_sha512 and vocab_file is None
    sources = int(vocab_from_network) + (len(settings.download_urls) if from_file is None else 0)
    answer_within_s = settings.download_deadline_s / max(sources, 1)
    vocab = None
    if VOCAB_FILENAME not in settings.asset_sha512:
        try:
            vocab = _obtain_vocab(settings, vocab_file, downloads, progress, answer_within_s)
        except AssetError as exc:
            failures.append(exc)  # told once, in the error below
            logger.debug("%s", exc)
    try:
        if from_file is not None:
            _extract_verified(from_file, staging, settings.asset_sha512, label=from_file)
        else:
            _download_tarball(settings, downloads, staging, progress, answer_within_s)
    except DownloadError as exc:
        failures.extend(exc.failures)
    except AssetError as exc:
        failures.append(exc)
    if len(failures) == 1 and isinstance(failures[0], (ChecksumMismatchError, UnsafeArchiveError)):
        raise failures[0]  # the one source answered, with the wrong bytes: say exactly that
    if failures:
        raise DownloadError(failures, ways_out=_ways_out(settings.model_dir))
    if vocab is not None:
        shutil.copyfile(vocab, staging / VOCAB_FILENAME)
        _fsync(staging / VOCAB_FILENAME)


# --- what is there -----------------------------------------------------------------------


def _missing_files(model_dir: Path, settings: Settings) -> list[str]:
    """The pinned files (tarball members and vocabulary) that ``model_dir`` lacks."""
    required = [*settings.asset_sha512, VOCAB_FILENAME]
    return [name for name in dict.fromkeys(required) if not (model_dir / name).is_file()]


def _offline_message(dest: Path, missing: list[str]) -> str:
    """Say what is missing and how to get going without this process downloading."""
    detail = f" (missing: {', '.join(missing)})" if missing else ""
    return (
        f"{dest} needs the pretrained model{detail}, but offline mode is on "
        f"(CAPTIONER_OFFLINE), so nothing is downloaded.\n{_ways_out(dest)}"
    )


def _ways_out(dest: Path) -> str:
    """The ways to a working model when this process cannot download one, by name."""
    where = shlex.quote(str(dest))
    return (
        "Ways out:\n"
        "  - the bundled demo model needs no network (it knows coloured shapes only): "
        f"{_demo_hint()}\n"
        "  - download where the network allows: "
        f"`captioner download --dest {where}`\n"
        "  - install copies of the files you already have: "
        f"`captioner download --dest {where} --from-file assets.tar.gz "
        "--vocab-file word_counts.txt`\n"
        "  - use a mirror (digests are still checked): "
        "CAPTIONER_DOWNLOAD_URLS=https://mirror.example/assets.tar.gz "
        "CAPTIONER_VOCAB_URL=https://mirror.example/word_counts.txt\n"
        "  - use a checkpoint you have: --checkpoint DIR_OR_PREFIX --vocab word_counts.txt"
    )


def _demo_hint() -> str:
    """How to run the command that failed with the demo model: that very command line when
    it is the ``captioner`` program, else the setting."""
    program, *args = sys.argv or [""]
    command = args[0] if args else ""
    if Path(program).name not in ("captioner", "__main__.py") or command not in _MODEL_COMMANDS:
        return (
            "`--model demo` on `captioner caption`, `serve` or `evaluate`; "
            'CAPTIONER_MODEL=demo, or `Settings(model="demo")` from Python'
        )
    kept: list[str] = []
    skip = False
    for arg in args[1:]:
        if skip or arg.startswith("--model="):
            skip = False
            continue
        skip = arg == "--model"
        if not skip:
            kept.append(arg)
    return f"`{shlex.join(['captioner', command, '--model', 'demo', *kept])}`"


def _missing_ancestors(directory: Path) -> list[Path]:
    """``directory`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_if_nothing_kept(downloads: Path) -> None:
    """Delete the download directory unless it holds bytes worth resuming from."""
    if not downloads.is_dir():
        return
    for part in downloads.iterdir():
        if part.is_file() and part.stat().st_size == 0:
            part.unlink()
    with contextlib.suppress(OSError):
        downloads.rmdir()  # fails, and keeps it, when a partial download is inside


def _check_replaceable(dest: Path) -> None:
    """Refuse destinations a rename cannot replace or whose contents are not ours to delete."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise AssetError(f"{dest} exists and is not a directory")
    if os.path.ismount(dest):
        raise AssetError(
            f"{dest} is a mount point, which cannot be replaced atomically; "
            f"use a directory inside it, such as {dest / 'im2txt'}"
        )
    foreign = sorted(
        p.name for p in dest.iterdir() if p.name not in {CHECKPOINT_DIRNAME, VOCAB_FILENAME}
    )
    if foreign:
        raise AssetError(
            f"refusing to replace {dest}: it holds {', '.join(foreign[:5])}, which is not part "
            "of a model; choose a new or empty directory"
        )


# --- installing --------------------------------------------------------------------------


@contextmanager
def _install_lock(dest: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``dest``, so two processes never install at once.

    The lock is an OS lock on the file (released when the process dies), so a crashed
    installer never blocks the next one; a waiting process logs why it waits. The file is
    deleted before the lock is released, so nothing stays behind: a process that was
    waiting on the deleted file notices (filelock checks the link count after locking) and
    locks the path afresh.
    """
    lock_path = dest.parent / f".{dest.name}.lock"
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another process is installing into %s; waiting for %s", dest, lock_path)
        lock.acquire()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.release()


def _remove_leftovers(dest: Path) -> None:
    """Delete staging and replaced directories a crashed installer left (lock held)."""
    prefixes = (f".{dest.name}.new-", f".{dest.name}.old-")
    for path in dest.parent.iterdir():
        if path.name.startswith(prefixes):
            _remove(path)


def _switch_into_place(staging: Path, dest: Path) -> None:
    """Rename the complete ``staging`` to ``dest``, moving an old model aside first."""
    for directory in (staging / CHECKPOINT_DIRNAME, staging):
        if directory.is_dir():
            _fsync(directory)
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
        os.rename(dest, old)
        try:
            os.rename(staging, dest)
        except OSError:
            os.rename(old, dest)
            raise
        _remove(old)
    else:
        os.rename(staging, dest)
    _fsync(dest.parent)


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _fsync(path: Path) -> None:
    """Flush a file or directory entry to disk, so a power cut cannot undo a rename's content."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- sources -----------------------------------------------------------------------------


def _fetch(
    url: str,
    part: Path,
    *,
    name: str,
    settings: Settings,
    progress: ProgressMode,
    answer_within_s: float,
) -> None:
    """:func:`captioner.transfer.fetch` with the settings' timeout and retry policy."""
    fetch(
        url,
        part,
        name=name,
        timeout_s=settings.download_timeout_s,
        retries=settings.download_retries,
        backoff_s=settings.download_backoff_s,
        answer_within_s=answer_within_s,
        progress=progress,
    )


def _obtain_vocab(
    settings: Settings,
    vocab_file: Path | None,
    downloads: Path,
    progress: ProgressMode,
    answer_within_s: float,
) -> Path:
    """Return a verified ``word_counts.txt``: the user's copy or a download."""
    if vocab_file is not None:
        _verify(vocab_file, VOCAB_FILENAME, "sha256", settings.vocab_sha256)
        return vocab_file
    part = _partial_path(downloads, settings.vocab_url)
    _fetch(
        settings.vocab_url,
        part,
        name=VOCAB_FILENAME,
        settings=settings,
        progress=progress,
        answer_within_s=answer_within_s,
    )
    try:
        _verify(part, VOCAB_FILENAME, "sha256", settings.vocab_sha256)
    except ChecksumMismatchError:
        part.unlink()  # wrong bytes: a later resume must not build on them
        raise
    return part


def _download_tarball(
    settings: Settings,
    downloads: Path,
    staging: Path,
    progress: ProgressMode,
    answer_within_s: float,
) -> None:
    """Fill ``staging`` from the first source whose tarball passes every check.

    Each source has ``answer_within_s`` to start sending the tarball.

    Raises:
        DownloadError: every source failed; each one's failure is in ``failures``.
    """
    if not settings.download_urls:
        raise AssetError("no tarball sources: set CAPTIONER_DOWNLOAD_URLS or pass --url")
    failures: list[AssetError] = []
    for url in settings.download_urls:
        part = _partial_path(downloads, url)
        try:
            _fetch(
                url,
                part,
                name=TARBALL_NAME,
                settings=settings,
                progress=progress,
                answer_within_s=answer_within_s,
            )
        except AssetError as exc:
            failures.append(exc)
            logger.debug("%s", exc)
            continue
        try:
            _extract_verified(part, staging, settings.asset_sha512, label=url)
        except AssetError as exc:
            part.unlink()  # wrong bytes: a later resume must not build on them
            _remove(staging)
            staging.mkdir()
            failures.append(exc)
            exc.source = url
            logger.debug("%s", exc)
            continue
        # Each failed source is told once: here when a later one served the model, else in
        # the error that lists them all.
        for failure in failures:
            logger.warning("%s (a later source served the model: %s)", failure, url)
        return
    raise DownloadError(failures, ways_out="")


def _partial_path(downloads: Path, url: str) -> Path:
    """Where the download of ``url`` accumulates; one file per URL, so resumes never mix."""
    return downloads / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.part"


# --- fetching ----------------------------------------------------------------------------


# --- verifying and unpacking -------------------------------------------------------------


def _verify(path: Path, name: str, algorithm: str, expected: str) -> None:
    """Raise ChecksumMismatchError unless ``path`` has the pinned digest."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise ChecksumMismatchError(
            name, algorithm=algorithm, expected=expected, actual=digest.hexdigest()
        )


def _extract_verified(
    tarball: Path, into: Path, expected: Mapping[str, str], *, label: str | Path
) -> None:
    """Unpack the pinned members of ``tarball`` into ``into``, checking each one's sha512.

    Any link, device, absolute path or ``..`` member rejects the whole archive, even one
    that would not be kept: a source serving such a tarball is not serving the model.

    Raises:
        UnsafeArchiveError: a member is unsafe or appears twice.
        ChecksumMismatchError: a kept member's sha512 is not the pinned one.
        AssetError: the file is not a readable tar.gz, or lacks a pinned member.
    """
    found: set[str] = set()
    try:
        with tarfile.open(tarball, "r:*") as archive:
            for member in archive:
                name = _checked_member_name(member)
                if not member.isfile() or name not in expected:
                    continue
                if name in found:
                    raise UnsafeArchiveError(f"{name}: appears twice in the archive")
                found.add(name)
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha512()
                write_chunks(_member_chunks(archive, member), target, on_chunk=digest.update)
                if digest.hexdigest() != expected[name].lower():
                    raise ChecksumMismatchError(
                        name, algorithm="sha512", expected=expected[name], actual=digest.hexdigest()
                    )
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise AssetError(f"{label}: not a readable .tar.gz ({exc})") from exc
    missing = sorted(set(expected) - found)
    if missing:
        raise AssetError(f"{label}: the tarball lacks {', '.join(missing)}")


def _checked_member_name(member: tarfile.TarInfo) -> str:
    """The member's path relative to the destination, or UnsafeArchiveError."""
    name = member.name
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{name}: links are not allowed (-> {member.linkname})")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{name}: only regular files and directories are allowed")
    path = PurePosixPath(name)
    if path.is_absolute() or name[1:2] == ":":
        raise UnsafeArchiveError(f"{name}: absolute paths are not allowed")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"{name}: '..' would escape the destination")
    return "/".join(part for part in path.parts if part != ".")


def _member_chunks(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    """A member's bytes; corrupt or truncated data becomes AssetError, never ``OSError``."""
    source: IO[bytes] | None = archive.extractfile(member)
    if source is None:  # pragma: no cover - regular files always have data
        return
    while True:
        try:
            chunk = source.read(CHUNK_BYTES)
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            raise AssetError(f"{member.name}: the archive is truncated or corrupt ({exc})") from exc
        if not chunk:
            return
        yield chunk
