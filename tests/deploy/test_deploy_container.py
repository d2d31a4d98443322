"""The image's command, run as the image would run it, without Docker.

The image's filesystem is laid out under a temporary directory: the venv built by the
Dockerfile's own build-stage commands (in a fresh virtual environment, from a copy of the
build context that `.dockerignore` lets through), the entry point, and the model as each
MODEL_SOURCE provides it:

- ``baked``: the ``fetch`` stage's own commands install the model from a private mirror
  (``file://`` URLs and their digests, passed as the build arguments), as root, and the
  ``COPY --from=fetch`` is done with the same modes: a root-owned directory the server
  can only read. The server gets the image's environment and nothing else.
- ``volume``: the model directory's parent is owned by the image's uid, as the image
  creates it; the server downloads the model at first start, from the same mirror given as
  ``CAPTIONER_*`` settings (what a compose user of a private mirror sets).

The server starts from the image's ENTRYPOINT and CMD, with the image's environment, as the
image's uid (the tests run as root in CI), must turn ready, caption an image, and drain on
SIGTERM. A missing dependency, a file left out of the wheel or the context, a model the
server's uid cannot read, or an entry point that does not hand over fails here.

What differs from a container, and why: paths sit under the temporary directory, the port
is a free one, and the host is loopback only, as for every test server here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deployfiles import REPO, Dockerfile, DockerIgnore, plain_commands
from PIL import Image as PILImage

from captioner.assets import CHECKPOINT_PREFIX, PINNED_ASSET_SHA512, VOCAB_FILENAME
from captioner.config import Settings
from captioner.testing import write_random_checkpoint
from support.api_helpers import free_port

pytestmark = pytest.mark.slow

# The image's base (python:*-slim) puts these on PATH before the Dockerfile adds its venv.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_DEADLINE_S = 300.0


class ImageFs:
    """The paths the Dockerfile creates, laid out under ``root`` on this machine."""

    def __init__(self, root: Path, image_paths: list[str]) -> None:
        self.root = root
        longest_first = sorted(image_paths, key=len, reverse=True)
        alternatives = "|".join(re.escape(p) for p in longest_first)
        # A whole path, or one followed by "/": never "/model" inside ".../captioner/model".
        self._pattern = re.compile(rf"(?<![\w.-])({alternatives})(?![\w.-])")

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def map(self, text: str) -> str:
        """``text`` with every image path replaced by where it lies here."""
        return self._pattern.sub(lambda m: str(self.path(m.group(1))), text)


@dataclass
class Built:
    """The image's filesystem with the venv and the entry point in place."""

    dockerfile: Dockerfile
    fs: ImageFs
    context: Path
    build_env: dict[str, str]
    mirror: dict[str, str]
    """Build arguments naming the private mirror: DOWNLOAD_URLS, VOCAB_URL, digests."""
    vocabulary: set[str]


@dataclass
class Server:
    """A running server started from the image's command line."""

    source: str
    process: subprocess.Popen[bytes]
    url: str
    venv: Path
    log: Path
    model_dir: Path
    vocabulary: set[str]
    drain_timeout_s: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


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


def run_stage(built: Built, stage: str, build_args: dict[str, str] | None = None) -> None:
    """Run a build stage's RUN commands as the builder would, in the image's filesystem.

    ``ENV`` accumulates, ``ARG`` defaults are overridden by ``build_args``, and ``${ARG}``
    references are expanded; ``python`` is an interpreter the image's uid can run. COPY
    from the context needs nothing: the context copy stands in for the working directory.
    """
    args = dict(build_args or {})
    for keyword, rest in built.dockerfile.stage(stage).instructions:
        if keyword == "ENV":
            built.build_env.update(item.split("=", 1) for item in shlex.split(rest))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            args.setdefault(name, default.strip('"'))
        elif keyword == "RUN":

            def expand(word: str) -> str:
                return built.fs.map(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], word))

            for assignments, argv in plain_commands(rest):
                argv = [expand(word) for word in argv]
                if argv[0] == "python":
                    argv[0] = runnable_python()
                env = {**os.environ, **built.build_env}
                env.update({key: expand(value) for key, value in assignments.items()})
                result = subprocess.run(
                    argv, cwd=built.context, env=env, capture_output=True, text=True
                )
                assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}{result.stderr}"


def write_mirror(directory: Path) -> tuple[dict[str, str], set[str]]:
    """A private mirror: ``assets.tar.gz`` with the pinned member names, and a vocabulary.

    The checkpoint is small and random; the ``.meta`` graph, which nothing reads, is a
    placeholder. Returns the build arguments that point at it (URLs and digests) and the
    vocabulary's words.
    """
    files = write_random_checkpoint(directory / "files", prefix_name=CHECKPOINT_PREFIX)
    (files.checkpoint / f"{CHECKPOINT_PREFIX}.meta").write_bytes(b"not read by captioner")
    members = {f"{files.checkpoint.name}/{p.name}": p for p in sorted(files.checkpoint.iterdir())}
    assert set(members) == set(PINNED_ASSET_SHA512)
    tarball = directory / "assets.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, path in members.items():
            archive.add(path, arcname=name)
    vocab = directory / VOCAB_FILENAME
    shutil.copyfile(files.vocab, vocab)
    digests = {name: hashlib.sha512(p.read_bytes()).hexdigest() for name, p in members.items()}
    build_args = {
        "DOWNLOAD_URLS": tarball.as_uri(),
        "VOCAB_URL": vocab.as_uri(),
        "ASSET_SHA512": json.dumps(digests),
        "VOCAB_SHA256": hashlib.sha256(vocab.read_bytes()).hexdigest(),
    }
    words = {line.split(" ")[0] for line in vocab.read_text().splitlines()}
    return build_args, words


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


def multipart_image(content: bytes) -> tuple[bytes, str]:
    boundary = "captioner-deploy-test"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image"; filename="picture.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg_bytes() -> bytes:
    image = PILImage.effect_noise((320, 240), 50).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def snapshot(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """``relative path -> (size, mtime_ns, mode, uid)`` of everything under ``root``."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.stat()
        found[str(path.relative_to(root))] = (
            info.st_size,
            info.st_mtime_ns,
            info.st_mode,
            info.st_uid,
        )
    return found


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """The venv and entry point of the image, and a private mirror of the model."""
    dockerfile = Dockerfile.read()
    image = dockerfile.image(base_env={"PATH": BASE_IMAGE_PATH})
    baked = dockerfile.image({"MODEL_SOURCE": "baked"})
    (fetch_run,) = [r for k, r in dockerfile.stage("fetch").instructions if k == "RUN"]
    fetch_dest = next(argv for _, argv in plain_commands(fetch_run) if "download" in argv)[-1]
    image_paths = [
        str(Path(image.env["PATH"].split(":")[0]).parent),  # the venv
        image.entrypoint[0],
        *image.volumes,
        baked.env["CAPTIONER_MODEL_DIR"],
        fetch_dest,
    ]
    workdir = Path(tempfile.mkdtemp(prefix="captioner-deploy-"))
    workdir.chmod(0o755)  # the server's uid must reach the venv and the model
    try:
        fs = ImageFs(workdir / "image", image_paths)
        context = workdir / "context"
        for relative in DockerIgnore.read().context_files():
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, context / relative)
        mirror, vocabulary = write_mirror(workdir / "mirror")
        result = Built(dockerfile, fs, context, {}, mirror, vocabulary)
        run_stage(result, "build")

        # What the runtime stage's RUN and COPY do (its user creation is not run here).
        (sources,) = [s for s, d in dockerfile.context_copies() if d == image.entrypoint[0]]
        entrypoint = fs.path(image.entrypoint[0])
        entrypoint.parent.mkdir(parents=True)
        shutil.copyfile(context / sources[0], entrypoint)
        entrypoint.chmod(0o755)
        for volume in image.volumes:
            fs.path(volume).mkdir(parents=True)
            if os.geteuid() == 0:
                os.chown(fs.path(volume), *image_uid_gid())
        yield result
    finally:
        for path in [workdir, *workdir.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(workdir)


@pytest.fixture(scope="module", params=["baked", "volume"])
def server(request: pytest.FixtureRequest, built: Built) -> Iterator[Server]:
    """The image's command line for one MODEL_SOURCE, as the image's non-root uid."""
    source = request.param
    image = built.dockerfile.image({"MODEL_SOURCE": source}, {"PATH": BASE_IMAGE_PATH})
    env = {key: built.fs.map(value) for key, value in image.env.items()}
    port = free_port()
    env.update(
        HOME="/nonexistent",  # the image user's home: absent, nothing can be written there
        CAPTIONER_HOST="127.0.0.1",
        CAPTIONER_PORT=str(port),
    )
    if source == "baked":
        run_stage(built, "fetch", built.mirror)
        for keyword, rest in built.dockerfile.stage("model-baked").instructions:
            if keyword == "COPY":
                origin, target = rest.removeprefix("--from=fetch ").split()
                shutil.copytree(built.fs.path(origin), built.fs.path(target))
    else:
        env.update({f"CAPTIONER_{key}": value for key, value in built.mirror.items()})

    log = built.fs.root.parent / f"server-{source}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(built.fs.path(image.entrypoint[0])), *image.cmd],
            cwd="/",
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_image_user(),
        )
    try:
        yield Server(
            source=source,
            process=process,
            url=f"http://127.0.0.1:{port}",
            venv=Path(env["PATH"].split(":")[0]).parent,
            log=log,
            model_dir=Path(env["CAPTIONER_MODEL_DIR"]),
            vocabulary=built.vocabulary,
            drain_timeout_s=Settings.model_fields["drain_timeout_s"].default,
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_ready(server: Server) -> None:
    """Wait until readiness says 200; fail with the server's log if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < READY_DEADLINE_S:
        assert server.process.poll() is None, f"the server exited:\n{server.output()}"
        try:
            status, _ = fetch(server.url + "/v2/health/ready")
        except (urllib.error.URLError, ConnectionError):
            status = 0
        if status == 200:
            return
        time.sleep(0.5)
    pytest.fail(f"not ready after {READY_DEADLINE_S} s:\n{server.output()}")


def test_image_command_serves_captions_as_non_root(server: Server) -> None:
    before = snapshot(server.model_dir) if server.source == "baked" else None
    wait_ready(server)

    # The process is the venv's `captioner` with the image's CMD, not a shell around it.
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [c.decode() for c in cmdline[1:]] == [str(server.venv / "bin" / "captioner"), "serve"]
    status_lines = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
    uids = {int(u) for u in next(ln for ln in status_lines if ln.startswith("Uid:")).split()[1:]}
    assert 0 not in uids
    if os.geteuid() == 0:
        assert uids == {image_uid_gid()[0]}

    assert fetch(server.url + "/v2/health/live") == (200, {"live": True})
    data, content_type = multipart_image(jpeg_bytes())
    status, body = fetch(server.url + "/model/predict", data, {"Content-Type": content_type})
    assert status == 200, body
    assert body["status"] == "ok"
    predictions = body["predictions"]
    assert 1 <= len(predictions) <= 3
    assert [p["index"] for p in predictions] == [str(i) for i in range(len(predictions))]
    for prediction in predictions:
        words = prediction["caption"].split()
        assert words and set(words) <= server.vocabulary | {"<UNK>"}, prediction
        assert 0.0 < prediction["probability"] <= 1.0

    if server.source == "baked":
        # Root's, read-only for the server, and untouched by it.
        assert snapshot(server.model_dir) == before
        if os.geteuid() == 0:
            assert all(uid == 0 and not mode & 0o022 for _, _, mode, uid in before.values())
    else:
        # Downloaded at first start, by the server's uid, into the volume.
        owner = server.model_dir.stat().st_uid
        assert owner == (image_uid_gid()[0] if os.geteuid() == 0 else os.geteuid())
        assert (server.model_dir / "checkpoint" / f"{CHECKPOINT_PREFIX}.index").is_file()


def test_sigterm_drains_and_stops_the_server(server: Server) -> None:
    wait_ready(server)
    server.process.send_signal(signal.SIGTERM)
    returncode = server.process.wait(timeout=server.drain_timeout_s + 30)
    assert returncode == 0, server.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=2)
