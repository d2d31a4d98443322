"""The image's entry point: TensorFlow threads follow the CPU limit, and `captioner` replaces it.

A stand-in `captioner` on PATH reports what it was given. The CPU limit is staged in a
private mount namespace (``unshare``), where a tmpfs over ``/sys/fs/cgroup`` holds the files
a container runtime would write, for cgroup v2 and v1 alike.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from deployfiles import ENTRYPOINT_SCRIPT

REPORTER = """#!/bin/sh
echo "pid=$$"
echo "threads=${TF_NUM_INTRAOP_THREADS-unset}"
for arg in "$@"; do echo "arg=$arg"; done
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A directory holding a `captioner` that prints its pid, thread setting and arguments."""
    (tmp_path / "captioner").write_text(REPORTER)
    (tmp_path / "captioner").chmod(0o755)
    return tmp_path


def report(stdout: str) -> tuple[int, str, list[str]]:
    lines = stdout.splitlines()
    pid = int(lines[0].removeprefix("pid="))
    threads = lines[1].removeprefix("threads=")
    return pid, threads, [line.removeprefix("arg=") for line in lines[2:]]


def env_with(fake_bin: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{fake_bin}:/usr/bin:/bin", **extra}


def test_captioner_replaces_the_shell_with_the_arguments_intact(fake_bin: Path) -> None:
    args = ["serve", "--log-level", "debug", "two words", "*"]
    process = subprocess.Popen(
        [str(ENTRYPOINT_SCRIPT), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env_with(fake_bin, TF_NUM_INTRAOP_THREADS="3"),
    )
    stdout, _ = process.communicate(timeout=30)
    pid, threads, received = report(stdout)
    # Same pid: exec, so the server is the process that gets the container's SIGTERM.
    assert pid == process.pid
    assert received == args
    assert threads == "3"  # an explicit setting wins over the CPU limit


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000"}, "2"),
        ({"cpu.max": "200000 100000"}, "2"),
        ({"cpu.max": "50000 100000"}, "1"),
        ({"cpu.max": "max 100000"}, "unset"),
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, "4"),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "unset"),
        ({}, "unset"),
    ],
    ids=["v2-1.5cpu", "v2-2cpu", "v2-0.5cpu", "v2-unlimited", "v1-4cpu", "v1-unlimited", "none"],
)
def test_threads_follow_the_cpu_limit(fake_bin: Path, files: dict[str, str], expected: str) -> None:
    staging = ["mount -t tmpfs tmpfs /sys/fs/cgroup"]
    for name, content in files.items():
        staging.append(f"mkdir -p /sys/fs/cgroup/{os.path.dirname(name) or '.'}")
        staging.append(f"printf '%s\\n' {shlex.quote(content)} > /sys/fs/cgroup/{name}")
    script = " && ".join([*staging, 'exec "$0" "$@"'])
    result = subprocess.run(
        [
            "unshare",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            str(ENTRYPOINT_SCRIPT),
            "serve",
        ],
        capture_output=True,
        text=True,
        env=env_with(fake_bin),
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _, threads, received = report(result.stdout)
    assert threads == expected
    assert received == ["serve"]
