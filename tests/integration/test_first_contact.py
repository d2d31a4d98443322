"""What a new user meets first, as real processes: no network, a busy port, a quiet start.

"No network" is simulated inside the child process: a ``sitecustomize`` module makes every
host name but the loopback ones fail to resolve, as on a machine without internet.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioner.assets import TARBALL_URLS, VOCAB_URL
from support.api_helpers import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "download_checkpoint.py"
TF_NOTICES = ("oneDNN", "absl::InitializeLog", "cpu_feature_guard")

OFFLINE_SITECUSTOMIZE = """
import socket

_resolve = socket.getaddrinfo
_LOOPBACK = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


def _offline(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOOPBACK:
        return _resolve(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


socket.getaddrinfo = _offline
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPTIONER_", "TF_CPP"))}
    env.update(extra)
    return env


def captioner(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "captioner", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def demo_image(tmp_path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (245, 245, 240))
    ImageDraw.Draw(image).ellipse((100, 60, 220, 180), fill=(220, 30, 30))
    path = tmp_path / "red-circle.png"
    image.save(path)
    return path


def test_offline_first_start_fails_fast_naming_every_source_and_the_ways_out(
    tmp_path: Path,
) -> None:
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    cache = tmp_path / "home" / ".cache"
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(offline), os.environ.get("PYTHONPATH", "")]),
        CAPTIONER_MODEL_DIR=str(cache / "captioner" / "im2txt"),
    )
    started = time.monotonic()
    done = captioner("serve", "--host", "127.0.0.1", "--port", str(free_port()), env=env)
    elapsed_s = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    assert elapsed_s < 60
    last_line = done.stderr.splitlines()[-1]
    assert last_line == "Error: the model could not be loaded (the reason is above)"
    error = done.stderr[done.stderr.index("cannot load the model: ") :]
    for url in (VOCAB_URL, *TARBALL_URLS):  # every source of every asset, each once in all
        host = url.split("/")[2]
        assert done.stderr.count(f"{url}: cannot resolve host {host!r}") == 1, done.stderr
    assert "connection lost" not in done.stderr
    assert "retry" not in done.stderr  # a name that does not resolve is not retried
    assert "captioner serve --model demo --host 127.0.0.1 --port" in error  # the same command
    assert "--from-file assets.tar.gz --vocab-file word_counts.txt" in error
    assert "CAPTIONER_DOWNLOAD_URLS=" in error
    assert "Traceback" not in done.stderr
    assert not cache.exists(), sorted(str(p) for p in cache.rglob("*"))


def test_a_busy_port_is_reported_at_once_before_any_model_work() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = captioner(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--model", "demo", env=clean_env()
        )
        elapsed_s = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; another process "
        "uses it: choose another port with --port (CAPTIONER_PORT)"
    ]
    assert elapsed_s < 15  # no TensorFlow import, no model load
    assert "model" not in done.stdout


def test_caption_is_quiet_by_default_and_shows_tensorflow_with_debug(demo_image: Path) -> None:
    quiet = captioner("caption", "--model", "demo", str(demo_image), env=clean_env())
    assert quiet.returncode == 0, quiet.stderr
    assert "red circle" in quiet.stdout
    assert quiet.stderr == ""
    loud = captioner(
        "caption", "--model", "demo", "--log-level", "debug", str(demo_image), env=clean_env()
    )
    assert loud.returncode == 0, loud.stderr
    assert any(notice in loud.stderr for notice in TF_NOTICES), loud.stderr


def test_serve_starts_quietly_and_says_where_it_listens() -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "captioner", "serve", "--model", "demo",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while not any("model ready" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
    finally:
        process.terminate()
        process.wait(30)
    log = "".join(lines)
    assert not [notice for notice in TF_NOTICES if notice in log], log
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "model demo loaded from" in log


def test_settings_errors_are_one_line_in_every_command(demo_image: Path) -> None:
    env = clean_env(CAPTIONER_MAX_BATCH_SIZE="0")
    for args in (
        ("caption", "--model", "demo", str(demo_image)),
        ("serve", "--model", "demo", "--port", str(free_port())),
        ("download", "--dest", "/nonexistent/never-created"),
    ):
        done = captioner(*args, env=env)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "Error: invalid setting: max_batch_size (CAPTIONER_MAX_BATCH_SIZE) = '0': "
            "Input should be greater than or equal to 1"
        ], args
    crossed = captioner(
        "caption", "--model", "demo", str(demo_image),
        env=clean_env(CAPTIONER_DEFAULT_BEAM_SIZE="5", CAPTIONER_MAX_BEAM_SIZE="3"),
    )  # fmt: skip
    assert crossed.returncode == 1
    assert crossed.stderr.strip() == (
        "Error: invalid setting: default_beam_size (5) must not exceed max_beam_size (3)"
    )


def test_the_download_script_runs_from_a_checkout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: download_checkpoint.py [OPTIONS]" in done.stdout
    assert "--from-file" in done.stdout


def test_the_download_script_without_its_dependencies_says_what_to_install(
    tmp_path: Path,
) -> None:
    # -S: no site-packages at all, like a system Python that never saw the project.
    python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        [python, "-S", str(SCRIPT), "--help"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install" in lines[0] and str(REPO) in lines[0]
