"""Read the shipping files as data: the Dockerfile's stages, the compose model, the manifests.

No Docker engine and no cluster exist where the tests run, so the tests check what the
files say, read the way the tools read them: a Dockerfile's final stage with what it
inherits from earlier stages, the compose model as ``docker-compose config`` resolves it,
and every Kubernetes object in ``k8s/``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
K8S_DIR = REPO / "k8s"
ENTRYPOINT_SCRIPT = REPO / "docker" / "entrypoint.sh"


def tool(name: str) -> str:
    """The path of a command-line tool of the ``test`` extra.

    CI runs ``.venv/bin/python -m pytest`` without activating the venv, so the venv's
    ``bin/`` may not be on PATH: look beside the interpreter first.

    Raises:
        AssertionError: the tool is not installed (``pip install '.[test]'`` installs it).
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    from shutil import which

    found = which(name)
    assert found, f"{name} is missing: pip install '.[test]' installs it"
    return found


# --- Dockerfile --------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` block: its base, its name, and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Image:
    """What a built image would carry, from its stage and every stage it is built on."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    user: str | None
    expose: list[str]
    volumes: list[str]
    healthcheck: list[str]
    healthcheck_options: dict[str, str]


@dataclass
class Dockerfile:
    """The global build arguments (with defaults) and the stages of a Dockerfile."""

    args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        """Parse ``path``: continuation lines joined, comments and parser directives dropped."""
        logical: list[str] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("#") or (not line and not pending):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        assert not pending, "the Dockerfile ends inside a continuation line"
        args: dict[str, str] = {}
        stages: list[Stage] = []
        for line in logical:
            keyword, _, rest = line.partition(" ")
            keyword, rest = keyword.upper(), rest.strip()
            if keyword == "FROM":
                words = rest.split()
                name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
                stages.append(Stage(base=words[0], name=name))
            elif not stages:
                assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
                key, _, default = rest.partition("=")
                args[key] = default
            else:
                stages[-1].instructions.append((keyword, rest))
        return cls(args=args, stages=stages)

    def context_copies(self) -> list[tuple[list[str], str]]:
        """``(sources, destination)`` of every ``COPY`` that reads the build context."""
        copies = []
        for stage in self.stages:
            for keyword, rest in stage.instructions:
                words = shlex.split(rest)
                if keyword == "COPY" and not any(w.startswith("--from=") for w in words):
                    paths = [w for w in words if not w.startswith("--")]
                    copies.append((paths[:-1], paths[-1]))
        return copies

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        matches = [s for s in self.stages if s.name == name]
        assert len(matches) == 1, f"no single stage named {name!r}"
        return matches[0]

    def image(
        self, build_args: dict[str, str] | None = None, base_env: dict[str, str] | None = None
    ) -> Image:
        """The final image for ``build_args`` (the defaults otherwise).

        Args:
            build_args: ``--build-arg`` values.
            base_env: the environment the external base image is taken to set, for
                expanding references such as ``$PATH``.
        """
        args = {**self.args, **(build_args or {})}
        chain: list[Stage] = [self.stages[-1]]
        while True:
            base = _expand(chain[-1].base, args)
            parents = [s for s in self.stages if s.name == base]
            if not parents:
                break
            chain.append(parents[0])
        image = Image(
            env=dict(base_env or {}),
            entrypoint=[],
            cmd=[],
            user=None,
            expose=[],
            volumes=[],
            healthcheck=[],
            healthcheck_options={},
        )
        for stage in reversed(chain):
            for keyword, rest in stage.instructions:
                _apply(image, keyword, rest)
        return image


def plain_commands(run: str) -> list[tuple[dict[str, str], list[str]]]:
    """A ``RUN`` line as ``(assignments, argv)`` pairs, one per command of an ``&&`` chain.

    The build stages are kept to this shape (plain commands, optional leading ``VAR=value``)
    so that tests can run them without a shell.

    Raises:
        AssertionError: the line uses other shell syntax (pipes, ``;``, ``||``, redirects).
    """
    words = shlex.split(run)
    assert not {"|", "||", ";", ">", "<", "&"} & set(words), f"not a plain && chain: {run}"
    commands = []
    while words:
        end = words.index("&&") if "&&" in words else len(words)
        segment, words = words[:end], words[end + 1 :]
        assignments = {}
        while segment and re.fullmatch(r"[A-Za-z_]\w*=.*", segment[0]):
            key, _, value = segment.pop(0).partition("=")
            assignments[key] = value
        assert segment, f"an empty command in: {run}"
        commands.append((assignments, segment))
    return commands


def _expand(text: str, values: dict[str, str]) -> str:
    """Substitute ``$NAME`` and ``${NAME}`` as the builder does (unknown names: empty)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def _exec_form(rest: str, keyword: str) -> list[str]:
    """A JSON-array argument; shell form is refused (the server must get signals itself)."""
    value = json.loads(rest)
    assert isinstance(value, list), f"{keyword} is not in exec (JSON array) form: {rest}"
    return [str(v) for v in value]


def _apply(image: Image, keyword: str, rest: str) -> None:
    """Record the effect of one instruction on what the image carries."""
    if keyword == "ENV":
        for item in shlex.split(rest):
            key, sep, value = item.partition("=")
            assert sep, f"ENV without '=' is ambiguous: {item}"
            image.env[key] = _expand(value, image.env)
    elif keyword == "ENTRYPOINT":
        image.entrypoint = _exec_form(rest, keyword)
        image.cmd = []  # a new ENTRYPOINT resets an inherited CMD
    elif keyword == "CMD":
        image.cmd = _exec_form(rest, keyword)
    elif keyword == "USER":
        image.user = rest
    elif keyword == "EXPOSE":
        image.expose += rest.split()
    elif keyword == "VOLUME":
        image.volumes += json.loads(rest) if rest.startswith("[") else rest.split()
    elif keyword == "HEALTHCHECK":
        words = rest.split(" CMD ", 1)
        image.healthcheck_options = dict(
            w.lstrip("-").split("=", 1) for w in words[0].split() if w.startswith("--")
        )
        image.healthcheck = _exec_form(words[1].strip(), keyword)


# --- compose -----------------------------------------------------------------------------


def compose_model(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as ``docker-compose config`` resolves it (defaults interpolated).

    Args:
        env: the variables the user sets; none by default, so the file's own defaults show.
    """
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- Kubernetes ----------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    """``k8s/kustomization.yaml``."""
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def manifest_files() -> list[Path]:
    """The manifests Kustomize applies, in its order."""
    return [K8S_DIR / name for name in kustomization()["resources"]]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object of the manifests, by kind (each kind appears once)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in objects, f"two {document['kind']} objects"
            objects[document["kind"]] = document
    return objects


# --- build context -------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A ``.dockerignore`` pattern as a regex over slash-separated context paths.

    ``**`` spans directories, ``*`` and ``?`` stay within one path element, as in Docker.
    """
    pattern = os.path.normpath(pattern).lstrip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@dataclass
class DockerIgnore:
    """The rules of ``.dockerignore``: the last matching pattern decides, ``!`` re-includes."""

    rules: list[tuple[bool, re.Pattern[str], str]]

    @classmethod
    def read(cls, path: Path = REPO / ".dockerignore") -> DockerIgnore:
        """Parse ``path`` (comments and blank lines skipped)."""
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                negated = line.startswith("!")
                text = line[1:].strip() if negated else line
                rules.append((negated, _ignore_regex(text), text))
        return cls(rules)

    def excludes(self, relative: str) -> bool:
        """Whether the context path ``relative`` (or a directory above it) is left out."""
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negated, regex, _ in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negated
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether some ``!`` pattern could re-include a path under an excluded directory."""
        return any(negated and text.startswith(directory + "/") for negated, _, text in self.rules)

    def context_files(self, root: Path = REPO) -> list[str]:
        """The files the builder would send, as paths relative to ``root``."""
        files = []
        for current, dirs, names in os.walk(root):
            base = os.path.relpath(current, root)
            base = "" if base == "." else base + "/"
            dirs[:] = [
                d for d in dirs if not self.excludes(base + d) or self.may_include_below(base + d)
            ]
            files += [base + n for n in names if not self.excludes(base + n)]
        return sorted(files)
