"""The image's command, run as the image would run it, without Docker.

The venv is built by the Dockerfile's own build-stage commands from a copy of the build
context that `.dockerignore` lets through, in a fresh virtual environment with no access to
the test environment's packages: a missing dependency, a file left out of the wheel or the
context, or an import of the source tree fails here. The server then starts from the
image's ENTRYPOINT and CMD with the image's environment, as the image's uid (when the
tests run as root, as CI does), with the model in a root-owned read-only directory, and
must turn ready, caption an image, and drain on SIGTERM.

What differs from a container, and why: the venv's path (mapped from the image's), the
port (a free one) and the host (loopback only, as every test server here), and
CAPTIONER_OFFLINE=true so that a model judged missing fails at once instead of reaching
for the network.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deployfiles import REPO, Dockerfile, DockerIgnore
from PIL import Image as PILImage

from captioner.config import Settings
from checkpoints import write_random_checkpoint

pytestmark = pytest.mark.slow

# The image's base (python:*-slim) puts these on PATH before the Dockerfile adds its venv.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_DEADLINE_S = 300.0


@dataclass
class Server:
    """A running server started from the image's command line."""

    process: subprocess.Popen[bytes]
    url: str
    argv: list[str]
    venv: Path
    log: Path
    model_dir: Path
    vocabulary: set[str]
    drain_timeout_s: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def served_model(workdir: Path) -> dict[str, str]:
    """The settings that pick the model the server loads, as ``CAPTIONER_*`` variables.

    A small checkpoint written here (vocabulary beside it), in a root-owned directory made
    read-only. To serve the bundled demo model instead: ``return {"CAPTIONER_MODEL": "demo"}``.
    """
    model_dir = workdir / "model"
    files = write_random_checkpoint(model_dir)
    make_read_only(model_dir)
    return {"CAPTIONER_CHECKPOINT": str(files.checkpoint)}


def make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """``relative path -> (size, mtime_ns, mode)`` of everything under ``root``."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in [root, *root.rglob("*")]
    }


def run_build_stage(dockerfile: Dockerfile, context: Path, venv: Path, image_venv: str) -> None:
    """Run the build stage's RUN commands, with the image's venv path mapped to ``venv``.

    Raises:
        AssertionError: a command fails, or is more than one plain command (the stage is
            kept that simple so that this test can run it as written).
    """
    build = dockerfile.stage("build")
    env = dict(os.environ)
    for keyword, rest in build.instructions:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
        elif keyword == "RUN":
            argv = shlex.split(rest.replace(image_venv, str(venv)))
            assert not {"&&", "||", ";", "|"} & set(argv), f"not one plain command: {rest}"
            if argv[0] == "python":
                argv[0] = runnable_python()
            result = subprocess.run(argv, cwd=context, env=env, capture_output=True, text=True)
            assert result.returncode == 0, f"{rest}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def runnable_python() -> str:
    """An interpreter that the server's uid can also run, to base the fresh venv on.

    The one running the tests may live under a directory only root can enter (a pyenv
    under /root); the system's Python 3 is the fallback.
    """
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable))]
    candidates.append("/usr/bin/python3")
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [candidate, "-c", "import ensurepip, venv"], capture_output=True, **as_image_user()
            )
        except OSError:  # not even executable for that uid
            continue
        if probe.returncode == 0:
            return candidate
    pytest.fail(f"no Python the image's uid can run among {candidates}")


def image_uid_gid() -> tuple[int, int]:
    """The numeric ``USER`` of the image."""
    user = Dockerfile.read().image().user
    assert user is not None
    uid, gid = (int(part) for part in user.split(":"))
    return uid, gid


def as_image_user() -> dict[str, Any]:
    """Popen arguments that drop to the image's uid and gid when the tests run as root."""
    if os.geteuid() != 0:
        return {}
    uid, gid = image_uid_gid()
    return {"user": uid, "group": gid, "extra_groups": []}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of one request."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def multipart_image(
    field: str, filename: str, content: bytes, content_type: str
) -> tuple[bytes, str]:
    boundary = "captioner-deploy-test"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg_bytes() -> bytes:
    image = PILImage.new("RGB", (320, 240))
    for x in range(320):
        for y in range(0, 240, 8):
            image.putpixel((x, y), (x % 256, y, 255 - x % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The image's command line, started in a fresh venv as the image's non-root uid."""
    workdir = Path(tempfile.mkdtemp(prefix="captioner-deploy-"))
    workdir.chmod(0o755)  # the server's uid must reach the venv and the model
    process: subprocess.Popen[bytes] | None = None
    try:
        dockerfile = Dockerfile.read()
        image = dockerfile.image(base_env={"PATH": BASE_IMAGE_PATH})
        image_bin = image.env["PATH"].split(":")[0]
        image_venv = str(Path(image_bin).parent)

        context = workdir / "context"
        for relative in DockerIgnore.read().context_files():
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, context / relative)
        venv = workdir / "venv"
        run_build_stage(dockerfile, context, venv, image_venv)

        # The entry point, at its image path mapped into the context copy it came from.
        (sources,) = [
            src for src, dest in dockerfile.context_copies() if dest == image.entrypoint[0]
        ]
        argv = [str(context / sources[0]), *image.cmd]

        model_env = served_model(workdir)
        port = free_port()
        env = {key: value.replace(image_venv, str(venv)) for key, value in image.env.items()}
        env.update(
            HOME="/nonexistent",  # the image user's home: absent, nothing can be written there
            CAPTIONER_HOST="127.0.0.1",
            CAPTIONER_PORT=str(port),
            CAPTIONER_OFFLINE="true",
            **model_env,
        )
        settings = Settings(
            **{k.removeprefix("CAPTIONER_").lower(): v for k, v in model_env.items()}
        )
        files = settings.model_files()
        vocabulary = {line.split(" ")[0] for line in files.vocab.read_text().splitlines()}

        log = workdir / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                argv,
                cwd="/",
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_image_user(),
            )
        yield Server(
            process=process,
            url=f"http://127.0.0.1:{port}",
            argv=argv,
            venv=venv,
            log=log,
            model_dir=files.vocab.parent,
            vocabulary=vocabulary,
            drain_timeout_s=Settings.model_fields["drain_timeout_s"].default,
        )
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for path in [workdir, *workdir.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(workdir)


def wait_ready(server: Server) -> float:
    """Seconds until readiness says 200; fails with the server's log if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < READY_DEADLINE_S:
        assert server.process.poll() is None, f"the server exited:\n{server.output()}"
        try:
            status, _ = fetch(server.url + "/v2/health/ready")
        except (urllib.error.URLError, ConnectionError):
            status = 0
        if status == 200:
            return time.monotonic() - start
        time.sleep(0.5)
    pytest.fail(f"not ready after {READY_DEADLINE_S} s:\n{server.output()}")


def test_image_command_serves_captions_as_non_root_with_a_read_only_model(server: Server) -> None:
    before = snapshot(server.model_dir)
    wait_ready(server)

    # The process is the venv's `captioner` with the image's CMD, not a shell around it.
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [c.decode() for c in cmdline[1:]] == [str(server.venv / "bin" / "captioner"), "serve"]
    status_lines = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
    uids = next(line for line in status_lines if line.startswith("Uid:")).split()[1:]
    assert all(int(uid) != 0 for uid in uids)
    if os.geteuid() == 0:
        assert {int(uid) for uid in uids} == {image_uid_gid()[0]}

    status, body = fetch(server.url + "/v2/health/live")
    assert (status, body) == (200, {"live": True})

    data, content_type = multipart_image("image", "picture.jpg", jpeg_bytes(), "image/jpeg")
    status, body = fetch(server.url + "/model/predict", data, {"Content-Type": content_type})
    assert status == 200, body
    assert body["status"] == "ok"
    predictions = body["predictions"]
    assert [p["index"] for p in predictions] == [str(i) for i in range(len(predictions))]
    assert 1 <= len(predictions) <= 3
    for prediction in predictions:
        words = prediction["caption"].split()
        assert words and set(words) <= server.vocabulary | {"<UNK>"}, prediction
        assert 0.0 < prediction["probability"] <= 1.0

    assert snapshot(server.model_dir) == before


def test_sigterm_drains_and_stops_the_server(server: Server) -> None:
    wait_ready(server)
    server.process.send_signal(signal.SIGTERM)
    returncode = server.process.wait(timeout=server.drain_timeout_s + 30)
    assert returncode == 0, server.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=2)
