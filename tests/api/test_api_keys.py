"""Optional API keys: ``Authorization: Bearer`` on every route but the probes and the
page's and documentation's own files; off by default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from captioner.api.app import create_app
from captioner.api.auth import load_api_keys
from captioner.errors import ConfigurationError
from support.api_helpers import make_settings, serving
from support.fake_engine import FakeEngine, png_bytes

pytestmark = pytest.mark.anyio

OLD_KEY = "old-key-7f3a9c1e2b"
NEW_KEY = "new-key-0d4e8b6a51"
PROTECTED = ["/model/metadata", "/limits", "/metrics"]
OPEN = ["/v2/health/live", "/v2/health/ready", "/", "/docs", "/openapi.json", "/swagger.json"]


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# rotated in March\n{OLD_KEY}\n\n  {NEW_KEY}  \n")
    return path


@pytest.fixture
async def locked(tmp_path: Path, fake: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, api_keys_file=key_file(tmp_path))
    async with serving(create_app(settings, engine=fake)) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def predict(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    files = {"image": ("a.png", png_bytes("red"), "image/png")}
    return await client.post("/model/predict", files=files, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(OLD_KEY[:-1]), {"Authorization": f"Basic {OLD_KEY}"}],
    ids=["none", "wrong", "prefix", "other-scheme"],
)
async def test_without_a_right_key_every_data_route_is_401(
    locked: httpx.AsyncClient, fake: FakeEngine, headers: dict[str, str]
) -> None:
    answers = [await locked.get(path, headers=headers) for path in PROTECTED]
    answers.append(await predict(locked, headers))
    answers.append(await locked.get("/no/such/route", headers=headers))  # a new route too
    for answer in answers:
        assert answer.status_code == 401, answer.request.url
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json() == {"status": "error", "message": answer.json()["message"]}
        assert "Authorization: Bearer" in answer.json()["message"]
    assert fake.preprocessed == 0  # refused before the body was read


@pytest.mark.parametrize("key", [OLD_KEY, NEW_KEY])
async def test_either_key_opens_every_route(locked: httpx.AsyncClient, key: str) -> None:
    for path in PROTECTED:
        assert (await locked.get(path, headers=bearer(key))).status_code == 200, path
    answer = await predict(locked, bearer(key))
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["caption"] == "a red square"


async def test_probes_page_and_documents_need_no_key(locked: httpx.AsyncClient) -> None:
    for path in OPEN:
        assert (await locked.get(path)).status_code == 200, path


async def test_public_metrics_opens_metrics_only(tmp_path: Path, fake: FakeEngine) -> None:
    settings = make_settings(tmp_path, api_keys_file=key_file(tmp_path), public_metrics=True)
    async with serving(create_app(settings, engine=fake)) as client:
        assert (await client.get("/limits")).status_code == 401
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
    assert 'captioner_rejections_total{reason="unauthorized"} 1.0' in metrics.text


async def test_the_key_is_never_logged(
    locked: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await locked.get("/limits", headers=bearer(OLD_KEY))
        await locked.get("/limits", headers=bearer(OLD_KEY + "x"))
        await predict(locked, bearer(NEW_KEY))
    assert caplog.records  # the access log wrote its lines
    assert OLD_KEY not in caplog.text and NEW_KEY not in caplog.text


async def test_openapi_documents_the_scheme_only_with_keys(
    locked: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    document = (await locked.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    paths = document["paths"]
    assert paths["/model/predict"]["post"]["security"] == [{"apiKey": []}]
    assert "401" in paths["/model/predict"]["post"]["responses"]
    assert "security" not in paths["/v2/health/ready"]["get"]
    plain = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in plain["components"]
    assert "401" not in plain["paths"]["/model/predict"]["post"]["responses"]


async def test_keys_are_off_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.get("/limits")).status_code == 200


def test_a_key_file_without_keys_or_unreadable_stops_the_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ConfigurationError, match="lists no key"):
        load_api_keys(empty)
    with pytest.raises(ConfigurationError, match="cannot read"):
        create_app(make_settings(tmp_path, api_keys_file=tmp_path / "absent"))
    assert load_api_keys(key_file(tmp_path)) == (OLD_KEY.encode(), NEW_KEY.encode())
