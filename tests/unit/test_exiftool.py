"""The exiftool batch process: one process for many commands, each command's own status and
messages, a clear error when the program is missing, and no process left behind after a
timeout, a close or the caller's death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from captioner.errors import MetadataToolError
from captioner.exiftool import INSTALL_HINT, Exiftool


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "pixel.png"
    Image.new("RGB", (4, 3), (200, 30, 30)).save(path)
    return path


def _gone(group: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_commands_share_one_process_and_keep_their_own_replies(image: Path) -> None:
    with Exiftool() as exiftool:
        first = exiftool.run(["-j", "-PNG:ImageWidth", str(image)])
        assert exiftool._process is not None
        process = exiftool._process.pid
        missing = exiftool.run(["-j", str(image.with_name("absent.png"))])
        again = exiftool.run(["-j", "-PNG:ImageHeight", str(image)])
        assert exiftool._process.pid == process
        assert first.status == 0 and missing.status == 1 and again.status == 0
        assert json.loads(first.stdout)[0]["ImageWidth"] == 4
        assert json.loads(again.stdout)[0]["ImageHeight"] == 3
        assert missing.stdout == "" and "File not found" in missing.stderr
        assert missing.message(str(image.with_name("absent.png"))) == "File not found"


def test_unicode_arguments_and_output_survive(tmp_path: Path, image: Path) -> None:
    named = tmp_path / "café 日本.png"
    named.write_bytes(image.read_bytes())
    with Exiftool() as exiftool:
        written = exiftool.run(["-overwrite_original", "-XMP-dc:Title=Ünï “cöde” 😀", str(named)])
        read = exiftool.run(["-j", "-XMP-dc:Title", str(named)])
    assert written.status == 0
    assert json.loads(read.stdout)[0] == {"SourceFile": str(named), "Title": "Ünï “cöde” 😀"}


def test_a_missing_program_is_one_clear_error() -> None:
    with pytest.raises(MetadataToolError) as raised:
        Exiftool("exiftool-not-installed-here")
    assert str(raised.value) == f"exiftool-not-installed-here not found; {INSTALL_HINT}"


def test_a_line_break_in_an_argument_is_refused(image: Path) -> None:
    with Exiftool() as exiftool, pytest.raises(ValueError, match="line break"):
        exiftool.run(["-XMP-dc:Title=two\nlines", str(image)])


def test_a_command_over_its_time_is_killed_and_the_next_one_gets_a_new_process(
    image: Path,
) -> None:
    with Exiftool(timeout_s=0.5) as exiftool:
        exiftool.run(["-ver"])
        assert exiftool._process is not None
        slow_group = exiftool._process.pid
        with pytest.raises(MetadataToolError, match=r"took over 0\.5 s"):
            exiftool.run(["-if", "sleep(5); 1", "-FileType", str(image)])
        # Killed at once; the group's orphans are then reaped by init, which under load
        # can take a moment (2 s was once too short on a busy CI machine).
        assert _gone(slow_group)
        assert json.loads(exiftool.run(["-j", "-FileType", str(image)]).stdout)[0]["FileType"] == (
            "PNG"
        )


def test_close_ends_the_process() -> None:
    exiftool = Exiftool()
    exiftool.run(["-ver"])
    assert exiftool._process is not None
    group = exiftool._process.pid
    exiftool.close()
    assert _gone(group, within_s=6.0)


def test_exiftool_stops_when_its_caller_is_killed() -> None:
    # exiftool alone would keep reading its closed input for good; the guard stops it.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from captioner.exiftool import Exiftool\n"
            "e = Exiftool()\n"
            "e.run(['-ver'])\n"
            "print(e._process.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        group = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert _gone(group)
    finally:
        if child.poll() is None:
            child.kill()
