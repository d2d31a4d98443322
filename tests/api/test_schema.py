"""The OpenAPI document tells the truth: schemathesis, every check, against a live server.

Schemathesis reads ``/openapi.json`` and sends schema-valid and schema-violating requests
to every operation (its coverage and fuzzing phases), checking each answer: no 5xx, no
schema-valid request refused, no schema-violating one accepted, every status code,
content type, header and body as documented, 405 with ``Allow`` for undocumented methods.
The uploads it means to be valid are real images (``schemathesis_images``), so every
check applies; three fixed seeds (one lucky seed cannot hide a disagreement) and a bounded
number of examples keep it reproducible and quick. A second run, of the coverage phase,
draws every upload from the schema alone, so that the breaches it draws for the uploads
(an empty file, a form value, too many files) reach the server as drawn; random bytes are
a valid file there but never an image, so it leaves out only the check that valid
requests are accepted. The server is the real app on 127.0.0.1 over the fake engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from support.api_helpers import make_settings, serving_on_loopback
from support.fake_engine import FakeEngine

HERE = Path(__file__).parent
SEEDS = (20261, 1, 2)


def schemathesis_command() -> str:
    """The ``st`` command of the ``test`` extra (beside the interpreter, as CI runs it)."""
    beside = Path(sys.executable).parent / "st"
    found = str(beside) if beside.is_file() else shutil.which("st")
    assert found, "schemathesis is missing: pip install '.[test]' installs it"
    return found


def run_schemathesis(tmp_path: Path, fake: FakeEngine, hooks: str, *options: str) -> str:
    """Run ``st run`` with ``hooks`` and ``options`` against the app, assert that it failed
    no check, and return its report."""
    app = create_app(make_settings(tmp_path, max_files_per_batch_request=4), engine=fake)
    env = {**os.environ, "PYTHONPATH": str(HERE), "SCHEMATHESIS_HOOKS": hooks}
    with serving_on_loopback(app) as port:
        url = f"http://127.0.0.1:{port}/openapi.json"
        document = httpx.get(url).json()
        command = [
            schemathesis_command(), "run", url, "--mode", "all", "--workers", "1",
            "--request-timeout", "10", *options,
        ]  # fmt: skip
        # cwd: its caches and reports stay out of the repository.
        run = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Every operation was exercised (the count would drop if the document lost routes).
    operations = sum(len(methods) for methods in document["paths"].values())
    assert f"Operations:       {operations} selected / {operations} total" in run.stdout
    return run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_every_operation_passes_every_schemathesis_check(
    tmp_path: Path, fake: FakeEngine, seed: int
) -> None:
    report = run_schemathesis(
        tmp_path, fake, "schemathesis_images",
        "--checks", "all", "--phases", "examples,coverage,fuzzing",
        "--max-examples", "40", "--seed", str(seed),
    )  # fmt: skip
    assert "No issues found" in report
    assert fake.calls, "no schema-valid upload reached the engine"


@pytest.mark.slow
def test_every_breach_of_the_upload_schema_is_refused(tmp_path: Path, fake: FakeEngine) -> None:
    # Its one warning is expected: most uploads (random bytes) are refused as not images.
    run_schemathesis(
        tmp_path, fake, "schemathesis_hooks",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--phases", "coverage", "--seed", str(SEEDS[0]),
    )  # fmt: skip
