"""SECURITY.md's claims about the code, checked from the source and the live document.

- No module unpickles, evaluates code, starts a process or extracts an archive blindly.
- Request handling has no network client: only ``captioner.download`` fetches, and the
  server reaches it only to load the model at start-up.
- No input of the HTTP API is a string the server could act on (a URL, a path).
- The limits table lists the settings' real defaults.

Each source check is first shown to catch a planted violation, so a check that matches
nothing cannot pass by accident.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import captioner
from captioner.api.app import create_app
from captioner.config import Settings

PACKAGE = Path(captioner.__file__).parent
REPO = PACKAGE.parents[1]
MODULES = sorted(PACKAGE.rglob("*.py"))

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_CALLS = {"eval", "exec", "os.system", "os.popen", "os.execv", "os.execvp", "os.spawnv"}
PROCESS_MODULES = {"subprocess", "pty", "multiprocessing"}
NETWORK_MODULES = {
    "socket", "ssl", "http.client", "urllib.request", "httpx", "requests", "aiohttp",
    "urllib3", "ftplib", "smtplib",
}  # fmt: skip
# The one module that fetches: the model at start-up (captioner download, or the server's
# loader before it answers captions).
FETCHER = "captioner.download"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(source: str) -> list[str]:
    """What in ``source`` deserialises pickles, runs code or a process, or extracts blindly."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        found += [n for n in names if n.split(".")[0] in UNSAFE_MODULES | PROCESS_MODULES]
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in UNSAFE_CALLS:
                found.append(name)
            if name.endswith((".extractall", ".extract")):
                found.append(name)  # archives are extracted member by member, checked
            if name.endswith("load") and "allow_pickle" in keywords:
                found.append(f"{name}(allow_pickle=...)")
            shell = keywords.get("shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                found.append(f"{name}(shell=True)")
    return found


def network_imports(source: str) -> tuple[set[str], set[str]]:
    """``(network modules imported anywhere, FETCHER imports at module level)``."""
    tree = ast.parse(source)
    nested = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    network, fetcher_at_top = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        network |= {n for n in names if n in NETWORK_MODULES}
        if (
            any(n == FETCHER or n.startswith(FETCHER + ".") for n in names)
            and id(node) not in nested
        ):
            fetcher_at_top.add(FETCHER)
    return network, fetcher_at_top


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_the_checks_catch_what_they_look_for() -> None:
    planted = (
        "import pickle\nimport subprocess\nfrom marshal import loads\n"
        "eval('1')\nos.system('ls')\nsubprocess.run('ls', shell=True)\n"
        "np.load('x', allow_pickle=True)\narchive.extractall('/')\n"
    )
    assert set(unsafe_uses(planted)) == {
        "pickle", "subprocess", "marshal", "eval", "os.system", "subprocess.run(shell=True)",
        "np.load(allow_pickle=...)", "archive.extractall",
    }  # fmt: skip
    network, top = network_imports(
        "import socket\nfrom urllib.request import urlopen\nfrom captioner.download import x\n"
        "def load():\n    import httpx\n"
    )
    assert network == {"socket", "urllib.request", "httpx"} and top == {FETCHER}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_pickle_no_eval_no_process_no_blind_extraction(path: Path) -> None:
    assert unsafe_uses(path.read_text()) == []


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_the_model_download_uses_the_network(path: Path) -> None:
    network, fetcher_at_top = network_imports(path.read_text())
    if _name(path) == FETCHER:
        assert network, "the check must see the downloader's own network imports"
        return
    assert network == set(), f"{_name(path)} imports a network client"
    if _name(path).startswith("captioner.api"):
        # The server reaches the downloader only inside the function that loads the model.
        assert fetcher_at_top == set()


def test_the_api_takes_no_string_a_server_could_act_on() -> None:
    """Every input in /openapi.json is an integer query parameter or a binary image part."""
    document = create_app(Settings()).openapi()
    schemas = document["components"]["schemas"]
    operations = [op for methods in document["paths"].values() for op in methods.values()]
    bodies = 0
    for operation in operations:
        for parameter in operation.get("parameters", []):
            assert (parameter["in"], parameter["schema"]["type"]) == ("query", "integer")
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
            bodies += 1
            assert media_type == "multipart/form-data"
            schema = content["schema"]
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema
            assert set(schema["properties"]) == {"image"}
            image = schema["properties"]["image"]
            part = image.get("items", image)
            assert (part["type"], part["contentMediaType"]) == (
                "string",
                "application/octet-stream",
            )
    assert bodies == 2  # predict and batch


def test_security_md_lists_the_settings_real_defaults() -> None:
    text = (REPO / "SECURITY.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, flags=re.MULTILINE)
    assert len(rows) >= 12
    defaults = Settings()
    for name, stated in rows:
        assert name in Settings.model_fields, f"SECURITY.md names no setting {name}"
        value = getattr(defaults, name)
        if value is None:  # a default that follows another setting
            (other,) = re.findall(r"`(\w+)`", stated)
            assert name == "max_decoding_pixels" and defaults.decoding_pixels == getattr(
                defaults, other
            )
        else:
            assert float(stated.split()[0]) == value, f"{name}: SECURITY.md says {stated}"
