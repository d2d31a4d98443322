"""exiftool as one long-lived process, so a collection pays Perl's start-up once, not per image.

exiftool (Phil Harvey's, packaged by Debian as ``libimage-exiftool-perl``) is a separate
program under Perl's licence (Artistic or GPL): captioner runs it as a subprocess and links
none of it, which keeps the package Apache-2.0. Starting it costs a Perl interpreter and its
modules each time; in ``-stay_open True -@ -`` mode one process reads command after command
from its standard input, one argument a line.

Each command is sent followed by ``-echo4 {doneN ${status}}`` and ``-executeN``: once the
command has run, exiftool writes the marker with the command's exit status to stderr and
``{readyN}`` to stdout. Both streams are read up to their markers, so no message from one
command is mistaken for the next one's, and a command that does not finish in time is killed
with its process (the next command starts a fresh one).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from captioner.errors import MetadataToolError

__all__ = ["INSTALL_HINT", "Exiftool", "Reply"]

INSTALL_HINT = "install exiftool: apt-get install libimage-exiftool-perl / brew install exiftool"

_READ_BYTES = 64 * 1024
# exiftool keeps reading after the end of its input in -stay_open mode, so a caller that is
# killed would leave it running for good. ``cat`` copies the commands through and ends with
# its input, whoever closed it; then exiftool is told to stop.
_STOP_AT_END_OF_INPUT = '{ cat; printf "%s\\n" -stay_open False; } | "$@"'
_CLOSE_WAIT_S = 5.0


@dataclass(frozen=True)
class Reply:
    """What one command gave back.

    Attributes:
        status: exiftool's exit status for this command (0 success, 1 an error, 2 an ``-if``
            condition failed).
        stdout: what it printed, without the ``{readyN}`` marker.
        stderr: its errors and warnings, without the status marker.
    """

    status: int
    stdout: str
    stderr: str

    def message(self, *paths: str) -> str:
        """exiftool's errors, then its warnings, on one line, without the ``paths`` it names.

        exiftool ends each message with `` - FILE``; the caller knows its file (and may have
        passed a temporary one), so the reason alone is kept: ``"Corrupted JPEG image"``.
        """
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        lines.sort(key=lambda line: not line.startswith("Error"))
        reasons = []
        for line in lines:
            for path in paths:
                line = line.replace(f" - {path}", "")
            reasons.append(line.removeprefix("Error: ").removeprefix("Warning: "))
        return "; ".join(reasons)


class Exiftool:
    """One exiftool process in batch mode; started on first use, restarted after a failure.

    Use it as a context manager (or call :meth:`close`) so the process ends with the caller.
    Commands are serialised: one thread at a time talks to the process.

    Raises:
        MetadataToolError: from the constructor when ``executable`` is not installed, so a
            collection fails before its first image rather than once per image.
    """

    def __init__(
        self,
        executable: str = "exiftool",
        *,
        common_args: Sequence[str] = (),
        timeout_s: float = 60.0,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise MetadataToolError(f"{executable} not found; {INSTALL_HINT}")
        _check_arguments(common_args)
        self._command = [found, "-stay_open", "True", "-@", "-", "-common_args", *common_args]
        self._timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Exiftool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, args: Sequence[str]) -> Reply:
        """Run one exiftool command (the arguments of one command line, without ``exiftool``).

        Raises:
            ValueError: an argument holds a line break (the protocol is one argument a line).
            MetadataToolError: the process could not start, died, or took over ``timeout_s``;
                it is stopped, and the next call starts a new one.
        """
        _check_arguments(args)
        with self._lock:
            process = self._running()
            self._count += 1
            number = self._count
            lines = [*args, "-echo4", f"{{done{number} ${{status}}}}", f"-execute{number}"]
            payload = b"".join(arg.encode("utf-8", "surrogateescape") + b"\n" for arg in lines)
            try:
                assert process.stdin is not None
                process.stdin.write(payload)
                process.stdin.flush()
                return self._read_reply(process, number)
            except (OSError, MetadataToolError) as exc:
                self._stop(process)
                if isinstance(exc, MetadataToolError):
                    raise
                raise MetadataToolError(f"exiftool stopped answering: {exc}") from exc

    def close(self) -> None:
        """Ask the process to exit (killed if it does not within seconds)."""
        with self._lock:
            if self._process is not None:
                self._stop(self._process, politely=True)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            try:
                # A session of its own: the terminal's Ctrl-C is the caller's to handle (it
                # may finish the images in flight), and a timeout kills the whole group.
                self._process = subprocess.Popen(
                    ["sh", "-c", _STOP_AT_END_OF_INPUT, "sh", *self._command],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise MetadataToolError(f"cannot start exiftool: {exc}; {INSTALL_HINT}") from exc
        return self._process

    def _read_reply(self, process: subprocess.Popen[bytes], number: int) -> Reply:
        assert process.stdout is not None and process.stderr is not None
        ready = re.compile(rb"\{ready%d\}\s*$" % number)
        done = re.compile(rb"\{done%d (\d+)\}\s*$" % number)
        buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
        out, err = buffers[process.stdout.fileno()], buffers[process.stderr.fileno()]
        deadline = time.monotonic() + self._timeout_s
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while not (ready.search(out) and done.search(err)):
                remaining = deadline - time.monotonic()
                events = selector.select(remaining) if remaining > 0 else []
                if not events:
                    raise MetadataToolError(f"exiftool took over {self._timeout_s:g} s on one file")
                for key, _ in events:
                    chunk = os.read(key.fd, _READ_BYTES)
                    if not chunk:
                        tail = err.decode("utf-8", "replace").strip()[-300:]
                        raise MetadataToolError(f"exiftool exited unexpectedly: {tail}")
                    buffers[key.fd] += chunk
        status = done.search(err)
        assert status is not None
        return Reply(
            status=int(status.group(1)),
            stdout=ready.sub(b"", out).decode("utf-8", "replace"),
            stderr=done.sub(b"", err).decode("utf-8", "replace"),
        )

    def _stop(self, process: subprocess.Popen[bytes], *, politely: bool = False) -> None:
        """End the process: by closing its input (the guard then stops exiftool), or a kill."""
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(_CLOSE_WAIT_S if politely else 0)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        self._process = None


def _check_arguments(args: Sequence[str]) -> None:
    for arg in args:
        if "\n" in arg or "\r" in arg:
            raise ValueError(f"an exiftool argument cannot hold a line break: {arg!r}")
