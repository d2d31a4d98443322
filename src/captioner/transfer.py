"""A resumable HTTP download into a file: ranges, retries, stalls, progress.

One job: get the bytes of a URL into a local file, whatever the network does, and say
plainly what went wrong when it cannot. It knows nothing of models or settings: the caller
passes the URL, the file, and the timeout and retry policy. ``http://``, ``https://`` and
``file://`` URLs work.

- A file that already holds the first bytes is resumed with an HTTP ``Range`` request.
- A source that cannot be reached at all (its host name does not resolve, the network or
  host is unreachable, the connection is refused or times out) fails at once: with no
  network, retrying only delays the answer.
- Once the source has answered, a transfer that drops or stalls, and 5xx/408/425/429
  answers, are retried with exponential backoff.
- The caller may give a source a limited time to start sending the file
  (``answer_within_s``): a source that accepts connections and never answers (a
  black-holed proxy, a captive portal) then costs that much, not every retry's timeout. A
  file that has started arriving is never cut off by it; only stalls end it.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

from tqdm import tqdm

from captioner.errors import AssetError

__all__ = ["ProgressMode", "fetch", "write_chunks"]

logger = logging.getLogger(__name__)

ProgressMode = Literal["auto", "bar", "log", "off"]
"""``bar``: a tqdm bar; ``log``: a log line every few seconds; ``auto``: bar on a terminal."""

CHUNK_BYTES = 256 * 1024
_LOG_EVERY_S = 5.0
# Besides 5xx, the statuses that mean "try again later" rather than "not here".
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_SCHEMES = ("http", "https", "file")
_SHORTEST_WAIT_S = 0.01


class _TransientError(Exception):
    """A failure worth retrying from the same source: dropped connection, stall, 5xx."""


class _UnreachableError(_TransientError):
    """The source could not be reached; worth a retry only once it has answered before."""


def fetch(
    url: str,
    part: Path,
    *,
    name: str,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    answer_within_s: float | None = None,
    progress: ProgressMode = "auto",
) -> None:
    """Download ``url`` into ``part``, resuming what is there; retry transient failures.

    Args:
        url: the source.
        part: the local file; its bytes, if any, are taken as the start of the download.
        name: what the progress reports call the file.
        timeout_s: seconds without data (or without an answer) before giving up a try.
        retries: tries after the first, for transfers that drop or stall, and 5xx answers.
        backoff_s: the first retry delay; it doubles with each retry.
        answer_within_s: seconds, from this call, for the source to start sending the file;
            tries and retry delays that would run past it are not made. ``None``: no limit.
            Once the file has started arriving, only ``timeout_s`` applies.
        progress: how progress is reported.

    Raises:
        AssetError: a permanent failure (unreachable, 4xx, bad URL), retries exhausted, or
            no file within ``answer_within_s``; the message starts with the URL.
        OSError: ``part`` cannot be written (the partial file is removed).
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise AssetError(f"{url}: unsupported URL scheme {scheme!r} (use {', '.join(_SCHEMES)})")
    part.parent.mkdir(parents=True, exist_ok=True)
    give_up_at = None if answer_within_s is None else time.monotonic() + answer_within_s
    attempts = retries + 1
    reached = False  # once the source has answered, failing to connect is worth a retry too
    sending = False  # once the file is arriving, the answer limit no longer applies
    for attempt in range(1, attempts + 1):
        wait_s = timeout_s
        if give_up_at is not None and not sending:
            # A retry starts only with time left; the floor covers a sleep that overslept.
            wait_s = max(min(timeout_s, give_up_at - time.monotonic()), _SHORTEST_WAIT_S)
        try:
            response, offset = _open(url, part, timeout_s=wait_s)
            if response is None:
                return
            sending = True
            with response:
                _set_read_timeout(response, timeout_s)
                _receive(response, part, offset, name=name, timeout_s=timeout_s, progress=progress)
            return
        except _TransientError as exc:
            unreachable = isinstance(exc, _UnreachableError)
            if unreachable and not reached:
                raise AssetError(f"{url}: {exc}") from exc
            reached = reached or not unreachable
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            if attempt == attempts:
                raise AssetError(f"{url}: {exc} (gave up after {tries})") from exc
            delay_s = backoff_s * 2 ** (attempt - 1)
            if give_up_at is not None and not sending and time.monotonic() + delay_s >= give_up_at:
                raise AssetError(
                    f"{url}: {exc} (gave up after {tries}, its {answer_within_s:.3g} s "
                    "to start sending spent)"
                ) from exc
            logger.warning(
                "%s: %s; retry %d of %d in %.1f s", url, exc, attempt, attempts - 1, delay_s
            )
            time.sleep(delay_s)


def _open(url: str, part: Path, *, timeout_s: float) -> tuple[http.client.HTTPResponse | None, int]:
    """Ask for the bytes after those already in ``part``; the answer and where it resumes.

    ``timeout_s`` bounds connecting and waiting for the answer. ``(None, offset)``: the
    partial file is already whole (the last run stopped after it).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            if _content_range(exc.headers.get("Content-Range"))[1] == offset:
                return None, offset
            part.unlink()
            raise _TransientError("the server cannot resume this file; starting over") from exc
        reason = f"HTTP {exc.code} {exc.reason}"
        if exc.code >= 500 or exc.code in _RETRYABLE_STATUS:
            raise _TransientError(reason) from exc
        raise AssetError(f"{url}: {reason}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):
            raise _connect_error(exc.reason, url, timeout_s) from exc
        raise AssetError(f"{url}: {exc.reason}") from exc
    except TimeoutError as exc:  # connected, but no status line
        raise _TransientError(f"no answer within {timeout_s:.3g} s") from exc
    except (OSError, http.client.HTTPException) as exc:  # while reading the status line
        raise _TransientError(_describe(exc, timeout_s)) from exc
    return response, offset


def _set_read_timeout(response: http.client.HTTPResponse, timeout_s: float) -> None:
    """Give the body's reads ``timeout_s``, whatever the wait for the answer was limited to.

    urllib keeps the connection's socket only inside the response's file object; a
    ``file://`` answer has none, and needs none.
    """
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(timeout_s)


def _connect_error(exc: OSError, url: str, timeout_s: float) -> _TransientError:
    """Name a failure to reach a source the way a user would, and say if it is worth a retry."""
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(exc, socket.gaierror):
        return _UnreachableError(
            f"cannot resolve host {host!r} ({exc.strerror or exc}): no network, or no DNS"
        )
    if isinstance(exc, TimeoutError):
        return _UnreachableError(f"cannot connect to {host!r}: no answer within {timeout_s:.3g} s")
    if isinstance(exc, ConnectionRefusedError):
        return _UnreachableError(f"cannot connect to {host!r}: connection refused")
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return _UnreachableError(f"cannot connect to {host!r}: {exc.strerror or exc}")
    return _TransientError(_describe(exc, timeout_s))


def _receive(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    *,
    name: str,
    timeout_s: float,
    progress: ProgressMode,
) -> None:
    """Write the body to ``part``: appended after a matching 206, from scratch otherwise."""
    status = getattr(response, "status", None) or 200  # file:// responses have no status
    if offset and not (
        status == 206 and _content_range(response.headers.get("Content-Range"))[0] == offset
    ):
        logger.info("%s: the server did not resume at byte %d; starting over", name, offset)
        offset = 0
    length_header = response.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    total = None if length is None else offset + length
    received = 0
    bar = _open_progress(progress, name, total, offset)

    def count(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        bar.update(len(chunk))

    try:
        chunks = _response_chunks(response, timeout_s)
        write_chunks(chunks, part, mode="ab" if offset else "wb", on_chunk=count)
    except OSError:
        part.unlink(missing_ok=True)  # a full disk: give the space back
        raise
    finally:
        bar.close()
    if length is not None and received < length:
        raise _TransientError(f"connection closed after {offset + received} of {total} bytes")


def _response_chunks(response: http.client.HTTPResponse, timeout_s: float) -> Iterator[bytes]:
    """The body in chunks; network failures become ``_TransientError``, never ``OSError``."""
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransientError(_describe(exc, timeout_s)) from exc
        if not chunk:
            return
        yield chunk


def _describe(exc: BaseException, timeout_s: float) -> str:
    """Name a network failure the way a user would: a stall or a lost connection."""
    if isinstance(exc, TimeoutError):
        return f"stalled: no data for {timeout_s:g} s"
    return f"connection lost: {exc or type(exc).__name__}"


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200)."""
    if not header or not header.startswith("bytes "):
        return None, None
    span, _, total = header[len("bytes ") :].partition("/")
    start = span.partition("-")[0]
    return (
        int(start) if start.isdigit() else None,
        int(total) if total.isdigit() else None,
    )


def write_chunks(
    chunks: Iterator[bytes], target: Path, *, mode: str = "wb", on_chunk: Callable[[bytes], None]
) -> None:
    """Write and fsync ``target``; any ``OSError`` escaping is the local disk's."""
    with target.open(mode) as out:
        for chunk in chunks:
            out.write(chunk)
            on_chunk(chunk)
        out.flush()
        os.fsync(out.fileno())


# --- progress ----------------------------------------------------------------------------


class _Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


def _open_progress(mode: ProgressMode, name: str, total: int | None, initial: int) -> _Progress:
    """A bar on a terminal, log lines in logs and pipes (a redrawn bar there is noise)."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    if mode == "bar":
        return tqdm(
            total=total,
            initial=initial,
            desc=name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            dynamic_ncols=True,
        )
    if mode == "log":
        return _LogProgress(name, total, initial)
    return _NoProgress()


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _LogProgress:
    """Progress as one log line at the start, one every few seconds and one at the end."""

    def __init__(self, name: str, total: int | None, initial: int) -> None:
        self._name = name
        self._total = total
        self._done = self._initial = initial
        self._started_s = self._logged_s = time.monotonic()
        size = _size(total) if total is not None else "an unknown size"
        resume = f", resuming after {_size(initial)}" if initial else ""
        logger.info("%s: downloading %s%s", name, size, resume)

    def update(self, n: int) -> None:
        self._done += n
        now_s = time.monotonic()
        if now_s - self._logged_s >= _LOG_EVERY_S:
            self._logged_s = now_s
            logger.info("%s: %s", self._name, self._status(now_s))

    def close(self) -> None:
        logger.info("%s: %s", self._name, self._status(time.monotonic()))

    def _status(self, now_s: float) -> str:
        rate = (self._done - self._initial) / max(now_s - self._started_s, 1e-6)
        if self._total:
            percent = 100 * self._done / self._total
            return f"{_size(self._done)} of {_size(self._total)} ({percent:.0f}%), {_size(rate)}/s"
        return f"{_size(self._done)}, {_size(rate)}/s"


def _size(n_bytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB"):
        if n_bytes < 1024:
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{n_bytes:.0f} B"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GiB"
