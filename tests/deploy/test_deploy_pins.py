"""The image installs exact versions: every direct dependency is pinned, within its range."""

from __future__ import annotations

from importlib.metadata import requires

from deployfiles import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = REPO / "docker" / "constraints.txt"
# The image: CPython 3.11 on linux/amd64 (the Dockerfile's PYTHON_IMAGE).
IMAGE_PLATFORM = {
    "python_version": "3.11",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "extra": "",
}


def pins() -> dict[str, Version]:
    """``name -> version`` of every ``name==version`` line of the constraints file."""
    found = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"not an exact pin: {line}"
            found[canonicalize_name(requirement.name)] = Version(spec.version)
    return found


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    runtime = [Requirement(r) for r in requires("captioner") or []]
    applicable = [r for r in runtime if r.marker is None or r.marker.evaluate(IMAGE_PLATFORM)]
    assert applicable
    for requirement in applicable:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pinned[name]), (
            f"{requirement.name}=={pinned[name]} is outside {requirement.specifier}"
        )


def test_captioner_itself_is_not_pinned() -> None:
    assert "captioner" not in pins()  # the image installs the source it is built from
