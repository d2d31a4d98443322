"""The OpenAPI document tells the truth: schemathesis, every check, against a live server.

Schemathesis reads ``/openapi.json`` and sends schema-valid and schema-violating requests
to every operation (its coverage and fuzzing phases), checking each answer: no 5xx, no
schema-valid request refused, no schema-violating one accepted, every status code,
content type, header and body as documented, 405 with ``Allow`` for undocumented methods.
A fixed seed and a bounded number of examples keep it reproducible and quick; the server
is the real app on 127.0.0.1 over the fake engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from captioner.api.app import create_app
from support.api_helpers import make_settings, serving_on_loopback
from support.fake_engine import FakeEngine

HERE = Path(__file__).parent


def schemathesis_command() -> str:
    """The ``st`` command of the ``test`` extra (beside the interpreter, as CI runs it)."""
    beside = Path(sys.executable).parent / "st"
    found = str(beside) if beside.is_file() else shutil.which("st")
    assert found, "schemathesis is missing: pip install '.[test]' installs it"
    return found


def test_every_operation_passes_every_schemathesis_check(tmp_path: Path, fake: FakeEngine) -> None:
    app = create_app(make_settings(tmp_path, max_files_per_batch_request=4), engine=fake)
    env = {**os.environ, "PYTHONPATH": str(HERE), "SCHEMATHESIS_HOOKS": "schemathesis_hooks"}
    with serving_on_loopback(app) as port:
        url = f"http://127.0.0.1:{port}/openapi.json"
        document = httpx.get(url).json()
        command = [
            schemathesis_command(), "run", url,
            "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing",
            "--max-examples", "40", "--seed", "20261", "--workers", "1",
            "--request-timeout", "10",
        ]  # fmt: skip
        # cwd: its caches and reports stay out of the repository.
        run = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    # Every operation was exercised (the count would drop if the document lost routes).
    operations = sum(len(methods) for methods in document["paths"].values())
    assert f"Operations:       {operations} selected / {operations} total" in run.stdout
    assert fake.calls, "no schema-valid upload reached the engine"
