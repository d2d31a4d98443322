"""The package's boundaries, checked from the source: a newcomer can rely on them.

- ``captioner.api`` (HTTP) never imports TensorFlow or the training code; the engine side
  never imports a web framework or click.
- Only ``captioner.config`` reads the environment; ``captioner.tf_runtime`` only sets
  TensorFlow's own log variable before TensorFlow reads it.
- Importing the CLI or the app does not load TensorFlow (fast ``--help``, light API tests).
- ``captioner.client`` (the client of servers) uses only the light records and errors of
  the package: no TensorFlow, no NumPy, no server code.
- No two modules import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import captioner

PACKAGE = Path(captioner.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
WEB = ("fastapi", "starlette", "uvicorn", "multipart", "click")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_import_boundaries(path: Path) -> None:
    name = _module_name(path)
    imports = _imports(path)
    if name.startswith("captioner.api"):
        assert "tensorflow" not in {_top(i) for i in imports}, "api/ must not import tensorflow"
        assert not any(i.startswith("captioner.training") for i in imports)
    elif name != "captioner.cli":
        web = {_top(i) for i in imports} & set(WEB)
        assert not web, f"{name} is below the HTTP/CLI layer but imports {web}"


CLIENT_MAY_IMPORT = ("captioner.client", "captioner.results", "captioner.errors")


@pytest.mark.parametrize(
    "path", [p for p in MODULES if _module_name(p).startswith("captioner.client")], ids=_module_name
)
def test_the_client_stands_on_the_light_modules_only(path: Path) -> None:
    imports = _imports(path)
    ours = {i for i in imports if _top(i) == "captioner"}
    assert all(i.startswith(CLIENT_MAY_IMPORT) for i in ours), ours
    assert not {_top(i) for i in imports} & {"tensorflow", "numpy", "PIL", *WEB}


# The one write allowed outside config: TensorFlow's own variable, before TensorFlow reads it.
TF_LOG_VARIABLE = 'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL"'


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_only_config_reads_the_environment(path: Path) -> None:
    if _module_name(path) == "captioner.config":
        return
    source = path.read_text()
    if _module_name(path) == "captioner.tf_runtime":
        assert source.count(TF_LOG_VARIABLE) == 1
        source = source.replace(TF_LOG_VARIABLE, "")
    assert "os.environ" not in source and "getenv(" not in source


@pytest.mark.parametrize(
    "module",
    [
        "captioner.cli",
        "captioner.api.app",
        "captioner",
        "captioner.client",
        "captioner.collection",
        "captioner.outputs",
    ],
)
def test_light_imports_do_not_load_tensorflow(module: str) -> None:
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_public_api_is_sorted_and_complete() -> None:
    assert captioner.__all__ == sorted(captioner.__all__)
    # Complete: every error the library can raise, and every name loaded on first use.
    errors = {
        name
        for name, value in vars(captioner.errors).items()
        if isinstance(value, type) and issubclass(value, captioner.errors.CaptionerError)
    }
    assert errors <= set(captioner.__all__), errors - set(captioner.__all__)
    assert set(captioner._LAZY) <= set(captioner.__all__)
    for name in captioner.__all__:
        assert getattr(captioner, name) is not None


def test_no_two_modules_import_each_other() -> None:
    """A pair of modules that import each other (even for type checking only) is one
    module in two files: records both need belong in a third (``training/scene.py``)."""
    imports = {_module_name(path).removesuffix(".__init__"): _imports(path) for path in MODULES}
    pairs = sorted(
        (name, other)
        for name, used in imports.items()
        for other in used
        if other in imports and name < other and name in imports[other]
    )
    assert pairs == []
