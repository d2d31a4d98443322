"""Exact versions: the image's (every direct dependency pinned, within its range) and CI's
lowest run's (every direct dependency at the lower bound ``pyproject.toml`` states)."""

from __future__ import annotations

from importlib.metadata import requires
from pathlib import Path

from deployfiles import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = REPO / "docker" / "constraints.txt"
LOWEST = REPO / ".ci" / "constraints-lowest.txt"
# The image: CPython 3.11 on linux/amd64 (the Dockerfile's PYTHON_IMAGE).
IMAGE_PLATFORM = {
    "python_version": "3.11",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "extra": "",
}


def pins(path: Path = CONSTRAINTS) -> dict[str, Version]:
    """``name -> version`` of every ``name==version`` line of a constraints file."""
    found = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"not an exact pin: {line}"
            found[canonicalize_name(requirement.name)] = Version(spec.version)
    return found


def image_requirements() -> list[Requirement]:
    """The runtime dependencies (as installed) that apply on the image's platform."""
    runtime = [Requirement(r) for r in requires("captioner") or []]
    applicable = [r for r in runtime if r.marker is None or r.marker.evaluate(IMAGE_PLATFORM)]
    assert applicable
    return applicable


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in image_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pinned[name]), (
            f"{requirement.name}=={pinned[name]} is outside {requirement.specifier}"
        )


def test_captioner_itself_is_not_pinned() -> None:
    assert "captioner" not in pins()  # the image installs the source it is built from


def test_the_lowest_run_pins_every_lower_bound_of_pyproject() -> None:
    """CI's second run (``.ci/run``) installs these: what pyproject promises works must be
    what it tests, so a raised need (an import a lower version lacks) shows there."""
    pinned = pins(LOWEST)
    for requirement in image_requirements():
        name = canonicalize_name(requirement.name)
        (lower,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert pinned.get(name) == Version(lower), f"{LOWEST.name}: {name} is not =={lower}"
