"""The page, its files, the API docs and ``/limits`` over HTTP (the browser tests are in
``tests/web``): what they answer, how they may be cached, what they may load."""

from __future__ import annotations

import gzip
import re
import threading
from importlib.resources import files
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from captioner.api.schemas import ServerLimits
from support.api_helpers import make_settings, serving
from support.fake_engine import FakeEngine

pytestmark = pytest.mark.anyio

# Where a document's resources are named: src and href attributes, CSS url().
_REFERENCES = re.compile(r"""(?:src|href)="([^"]+)"|url\("?([^")]+)"?\)""")


def references(text: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(text)]


def directives(csp: str) -> dict[str, list[str]]:
    return {
        name: sources
        for name, *sources in (part.split() for part in csp.split(";") if part.strip())
    }


def assert_loads_nothing_from_outside(csp: str) -> None:
    policy = directives(csp)
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for name, sources in policy.items():
        for source in sources:
            # Not a host, not a scheme of the network, not inline code or styles.
            assert source in ("'self'", "'none'", "data:", "blob:"), f"{name} allows {source}"
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]


async def test_the_page_is_at_the_root_and_everything_it_names_is_served_here(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert_loads_nothing_from_outside(page.headers["content-security-policy"])
    names = references(page.text)
    assert names, "the page names no resources"
    assert "docs" in names  # the API docs are linked
    for name in names:
        assert "//" not in name, f"{name} is not on this server"
        response = await client.get("/" + name)
        assert response.status_code == 200, name
    modules = [name for name in names if name.endswith("main.js")]
    assert len(modules) == 1
    base = modules[0].rsplit("/", 1)[0]
    # Modules import their siblings and the stylesheet names its images: all served, same base.
    for name in ("main.js", "app.css"):
        text = (await client.get(f"/{base}/{name}")).text
        siblings = re.findall(r'from "\./([\w.-]+)"', text) + references(text)
        for sibling in siblings:
            assert (await client.get(f"/{base}/{sibling}")).status_code == 200, sibling


async def test_page_files_are_cached_for_good_under_a_digest_of_their_contents(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    script = next(name for name in references(page.text) if name.endswith("main.js"))
    answer = await client.get("/" + script)
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["x-content-type-options"] == "nosniff"
    shipped = files("captioner.api").joinpath("static").joinpath("main.js").read_bytes()
    assert answer.content == shipped

    again = await client.get("/" + script, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    compressed = await client.get("/" + script, headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["content-encoding"] == "gzip"
    assert compressed.content == shipped  # httpx decodes; the bytes are the file's
    assert compressed.headers["vary"] == "Accept-Encoding"

    digest = script.split("/")[1]
    stale = await client.get(f"/static/{'0' * len(digest)}/main.js")
    assert stale.status_code == 404  # another version's URL is not served as this one
    assert stale.json()["message"] == "The requested URL was not found on the server."
    for name in ("index.html", "nothing.js", "..%2Fstatic.py", "%2E%2E%2Fapp.py"):
        assert (await client.get(f"/static/{digest}/{name}")).status_code == 404, name


async def test_gzip_is_a_true_gzip_of_the_file(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    sheet = next(name for name in references(page.text) if name.endswith("app.css"))
    async with client.stream("GET", "/" + sheet, headers={"Accept-Encoding": "gzip"}) as raw:
        body = b"".join([chunk async for chunk in raw.aiter_raw()])
    shipped = files("captioner.api").joinpath("static").joinpath("app.css").read_bytes()
    assert gzip.decompress(body) == shipped and len(body) < len(shipped) / 2


async def test_the_docs_page_uses_swagger_ui_5_from_the_installed_package(
    client: httpx.AsyncClient,
) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert_loads_nothing_from_outside(docs.headers["content-security-policy"])
    names = references(docs.text)
    assert all("//" not in name for name in names), names
    bundle = next(name for name in names if name.endswith("swagger-ui-bundle.js"))
    served = await client.get("/" + bundle)
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    shipped = files("fastapi_offline").joinpath("static").joinpath("swagger-ui-bundle.js")
    assert served.content == shipped.read_bytes()
    # OpenAPI 3.1 (what FastAPI writes) needs Swagger UI 5.
    version = re.search(rb'VERSION:"(\d+)\.\d+\.\d+"', served.content)
    assert version and int(version.group(1)) == 5
    for name in names:
        assert (await client.get("/" + name)).status_code == 200, name
    assert (await client.get("/redoc")).status_code == 404  # dropped: it loaded from a CDN


async def test_limits_are_the_server_settings_and_answer_while_loading(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        max_upload_bytes=123_456,
        max_batch_upload_bytes=654_321,
        max_image_pixels=7_000_000,
        max_files_per_batch_request=5,
        default_beam_size=2,
        max_beam_size=7,
        default_max_length=15,
        max_max_length=40,
        max_batch_size=4,
    )
    fake = FakeEngine(warmup_gate=threading.Event())
    app = create_app(settings, engine=fake)
    async with serving(app, wait_loaded=False) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503  # still loading
        answer = await client.get("/limits")
        assert fake.warmup_gate is not None
        fake.warmup_gate.set()
        openapi = (await client.get("/openapi.json")).json()
        swagger = (await client.get("/swagger.json")).json()
    assert answer.status_code == 200
    assert answer.json() == {
        "max_upload_bytes": 123_456,
        "max_batch_upload_bytes": 654_321,
        "max_image_pixels": 7_000_000,
        "max_files_per_batch_request": 5,
        "default_beam_size": 2,
        "max_beam_size": 7,
        "min_max_length": 3,
        "default_max_length": 15,
        "max_max_length": 40,
        "max_batch_size": 4,
    }
    schema = openapi["paths"]["/limits"]["get"]["responses"]["200"]["content"]
    assert schema["application/json"]["schema"]["$ref"].endswith("/ServerLimits")
    documented = openapi["components"]["schemas"]["ServerLimits"]["properties"]
    assert set(documented) == set(ServerLimits.model_fields)
    assert all(field.get("description") for field in documented.values())
    assert "/limits" not in swagger["paths"]  # MAX's document lists /model/* only
