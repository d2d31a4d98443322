"""SECURITY.md's claims about the code, checked from the source and the live document.

- No module unpickles, evaluates code, starts a process or extracts an archive blindly;
  the one exception, exiftool started by ``captioner caption --write-metadata``, is out of
  the server's reach.
- Request handling has no network client: only the model download fetches (``transfer``,
  used by ``download``), and the server reaches it only to load the model at start-up.
  The other network client, ``captioner.client`` (for talking to a server), is imported by
  nothing but the command line.
- No input of the HTTP API is a string the server could act on (a URL, a path).
- The limits table lists the settings' real defaults.

Each source check is first shown to catch a planted violation, so a check that matches
nothing cannot pass by accident.
"""

from __future__ import annotations

import ast
import gc
import re
from pathlib import Path

import pytest

import captioner
from captioner.api.app import create_app
from captioner.config import Settings

PACKAGE = Path(captioner.__file__).parent
REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(PACKAGE.rglob("*.py"))

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_CALLS = {"eval", "exec", "os.system", "os.popen", "os.execv", "os.execvp", "os.spawnv"}
PROCESS_MODULES = {"subprocess", "pty", "multiprocessing"}
# Network clients: modules that open outgoing connections, and the calls that do.
NETWORK_MODULES = {
    "http.client", "urllib.request", "httpx", "requests", "aiohttp", "urllib3", "ftplib",
    "smtplib",
}  # fmt: skip
CONNECT_CALLS = ("create_connection", ".connect", ".connect_ex")
# The one module that talks to the network (the model download), and the one that uses it.
CLIENT = "captioner.transfer"
# The client of captioner servers: its own package, and who may import it.
SERVER_CLIENT = "captioner.client"
SERVER_CLIENT_USERS = {"captioner.cli"}
# The one module that starts a process: exiftool, for the command line's alt text.
PROCESS_STARTER = "captioner.exiftool"
FETCHERS = {CLIENT, "captioner.download"}
# Where the fetchers are imported inside a function, by module and function: only the
# model's loaders. Request handling (routes, service, batcher, engine calls) is not here.
FETCHING_FUNCTIONS = {
    ("captioner.cli", "download"),  # captioner download
    ("captioner.loading", "load_engine"),  # loading the model: CLI, and the server at start
}


def parse(source: str) -> ast.Module:
    """``ast.parse`` with the garbage collector held off: on CPython 3.11.7, a finalizer run
    while the tree is converted (TensorFlow's, in a long test run) can unbalance the
    converter's recursion count and raise "AST constructor recursion depth mismatch"."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if collecting:
            gc.enable()


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(source: str) -> list[str]:
    """What in ``source`` deserialises pickles, runs code or a process, or extracts blindly."""
    found = []
    for node in ast.walk(parse(source)):
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


def network_uses(source: str) -> set[str]:
    """The network clients ``source`` imports, and its outgoing-connection calls."""
    found = set()
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in NETWORK_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in NETWORK_MODULES:
            found.add(node.module)
        elif isinstance(node, ast.Call) and _dotted(node.func).endswith(CONNECT_CALLS):
            found.add(_dotted(node.func))
    return found


def fetcher_imports(source: str) -> tuple[bool, set[str]]:
    """Whether ``source`` imports a fetcher when imported itself, and the functions that do."""
    tree = parse(source)
    at_import, functions = False, set()

    def imports_fetcher(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name in FETCHERS for a in node.names)
        return isinstance(node, ast.ImportFrom) and node.module in FETCHERS

    for statement in tree.body:
        is_type_checking = isinstance(statement, ast.If) and _dotted(statement.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        )
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for function in ast.walk(statement):
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    imports_fetcher(node) for node in ast.walk(function)
                ):
                    functions.add(function.name)
        elif not is_type_checking and any(imports_fetcher(n) for n in ast.walk(statement)):
            at_import = True
    return at_import, functions


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
    client = "import httpx\nfrom urllib.request import urlopen\nsocket.create_connection(a)\n"
    assert network_uses(client) == {"httpx", "urllib.request", "socket.create_connection"}
    assert network_uses("import socket\nsocket.socket().bind(a)\n") == set()  # listening
    fetching = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from captioner.transfer import ProgressMode\n"
        "class A:\n    def load(self):\n        from captioner.download import ensure_model\n"
    )
    assert fetcher_imports(fetching) == (False, {"load"})
    assert fetcher_imports("import captioner.download\n") == (True, set())


@pytest.mark.parametrize("path", [p for p in MODULES if _name(p) != PROCESS_STARTER], ids=_name)
def test_no_pickle_no_eval_no_process_no_blind_extraction(path: Path) -> None:
    assert unsafe_uses(path.read_text()) == []


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_the_model_download_opens_connections(path: Path) -> None:
    uses = network_uses(path.read_text())
    if _name(path) == CLIENT:
        assert uses, "the check must see the download client's own network use"
    elif _name(path) == f"{SERVER_CLIENT}.async_client":
        assert uses == {"httpx"}, "the check must see the server client's network use"
    elif not _name(path).startswith(f"{SERVER_CLIENT}."):
        assert uses == set(), f"{_name(path)} uses the network"


def importers_of(module: str) -> set[str]:
    """The package's modules that import ``module`` or one of its submodules (outside it)."""
    importers = set()
    for path in MODULES:
        name = _name(path)
        for node in ast.walk(parse(path.read_text())):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            if any(m == module or m.startswith(f"{module}.") for m in modules):
                importers.add(name)
    return {n for n in importers if n != module and not n.startswith(f"{module}.")}


def test_only_the_command_line_imports_the_client_of_servers() -> None:
    assert importers_of(SERVER_CLIENT) <= SERVER_CLIENT_USERS


def test_the_one_process_started_is_exiftool_and_the_server_cannot_reach_it() -> None:
    """``captioner caption --write-metadata`` runs exiftool; nothing the server imports does."""
    assert importers_of(PROCESS_STARTER) == {"captioner.alt_text"}
    assert importers_of("captioner.alt_text") <= {"captioner.cli", "captioner.collection"}
    assert not {n for n in importers_of("captioner.collection") if n.startswith("captioner.api")}
    assert unsafe_uses((PACKAGE / "exiftool.py").read_text()) == ["subprocess"]


def test_request_handling_cannot_reach_the_download() -> None:
    """Only the download itself imports the fetchers at import time; elsewhere only the
    model loaders do, inside their functions."""
    at_import, functions = set(), set()
    for path in MODULES:
        imports_now, inside = fetcher_imports(path.read_text())
        if imports_now:
            at_import.add(_name(path))
        functions |= {(_name(path), function) for function in inside}
    assert at_import == {"captioner.download"}  # which wraps the client, transfer
    assert functions == FETCHING_FUNCTIONS


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
