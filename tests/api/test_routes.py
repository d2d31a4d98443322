"""Every route through real HTTP (httpx against the app) on the fake engine: MAX's bodies,
the fixes to MAX's defects, parameter validation, the batch route, docs, CORS."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from PIL import Image
from starlette.staticfiles import StaticFiles

import captioner
from captioner.api.app import create_app
from captioner.api.static import page_bundle
from support.api_helpers import make_settings, serving
from support.fake_engine import FakeEngine, fake_info, jpeg_bytes, png_bytes

pytestmark = pytest.mark.anyio

MAX_MISSING_IMAGE_BODY = {
    "errors": {"image": "An image file Missing required parameter in an uploaded file"},
    "message": "Input payload validation failed",
    "status": "error",
}


# --- POST /model/predict ------------------------------------------------------------------


async def test_predict_returns_max_body_with_string_index_and_logprob(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/model/predict", files={"image": ("red.png", png_bytes("red"), "image/png")}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert [p["index"] for p in body["predictions"]] == ["0", "1", "2"]
    assert body["predictions"][0] == {
        "index": "0",
        "caption": "a red square",
        "probability": pytest.approx(0.36787944117144233),  # exp(-1)
        "logprob": -1.0,
    }
    assert set(body) == {"status", "predictions"}


@pytest.mark.parametrize("declared", ["application/octet-stream", "image/jpg", "text/plain", None])
async def test_declared_content_type_is_not_trusted(
    client: httpx.AsyncClient, declared: str | None
) -> None:
    data = jpeg_bytes("blue")
    part = ("photo.jpg", data, declared) if declared else ("photo", data)
    response = await client.post("/model/predict", files={"image": part})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["caption"] == "a blue square"


async def test_rgba_png_is_captioned(client: httpx.AsyncClient) -> None:
    data = png_bytes("green", mode="RGBA")
    response = await client.post("/model/predict", files={"image": ("g.png", data, "image/png")})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["caption"] == "a green square"


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},  # no body at all
        {"json": {"image": "aGVsbG8="}},  # a JSON body
        {"files": {"picture": ("a.png", png_bytes("red"), "image/png")}},  # wrong field name
        {"data": {"image": "not a file"}},  # image sent as a text field
    ],
    ids=["no-body", "json-body", "other-field", "text-field"],
)
async def test_missing_image_gives_max_validation_body(
    client: httpx.AsyncClient, request_kwargs: dict[str, object]
) -> None:
    response = await client.post("/model/predict", **request_kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json() == MAX_MISSING_IMAGE_BODY


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"this is not an image", "the data is not a supported image (JPEG, PNG, GIF, BMP"),
        (jpeg_bytes("red")[:40], "the JPEG image is corrupt or truncated"),
    ],
    ids=["garbage", "truncated"],
)
async def test_undecodable_upload_is_400_naming_the_problem(
    client: httpx.AsyncClient, data: bytes, problem: str
) -> None:
    response = await client.post("/model/predict", files={"image": ("x.jpg", data, "image/jpeg")})
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error"
    assert problem in body["message"]


async def test_pixel_bomb_is_413(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    buffer = io.BytesIO()
    Image.new("1", (4000, 2000)).save(buffer, format="PNG")  # 8 Mpx in a few kB
    response = await client.post(
        "/model/predict", files={"image": ("big.png", buffer.getvalue(), "image/png")}
    )
    assert response.status_code == 413
    assert response.json()["message"] == (
        "the PNG image is 4000x2000 = 8,000,000 pixels, more than the limit of 4,000,000"
    )
    assert fake.calls == []


async def test_query_parameters_reach_the_engine(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    response = await client.post(
        "/model/predict",
        params={"beam_size": 5, "max_length": 3},
        files={"image": ("a.png", png_bytes("cyan"), "image/png")},
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 5
    assert all(len(p["caption"].split()) <= 3 for p in predictions)
    assert fake.calls[-1][1:] == (5, 3)


async def test_defaults_come_from_settings(client: httpx.AsyncClient, fake: FakeEngine) -> None:
    await client.post("/model/predict", files={"image": ("a.png", png_bytes("red"), "image/png")})
    assert fake.calls[-1][1:] == (3, 20)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"beam_size": 0}, "beam_size"),
        ({"beam_size": 11}, "beam_size"),  # max_beam_size is 10
        ({"beam_size": "three"}, "beam_size"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 2}, "max_length"),  # <S> and </S>: no room for a word
        ({"max_length": 51}, "max_length"),  # max_max_length is 50
        ({"max_length": 2.5}, "max_length"),
    ],
)
async def test_out_of_range_parameters_are_400_in_max_shape(
    client: httpx.AsyncClient, fake: FakeEngine, params: dict[str, object], field: str
) -> None:
    response = await client.post(
        "/model/predict",
        params=params,
        files={"image": ("a.png", png_bytes("red"), "image/png")},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Input payload validation failed"
    assert body["status"] == "error"
    assert list(body["errors"]) == [field]
    assert fake.calls == []


async def test_a_max_length_too_short_for_a_word_names_the_minimum(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    response = await client.post(
        "/model/predict",
        params={"max_length": 2},
        files={"image": ("a.png", png_bytes("red"), "image/png")},
    )
    assert response.json()["errors"] == {"max_length": "max_length must be between 3 and 50, got 2"}
    limits = (await client.get("/limits")).json()
    document = (await client.get("/openapi.json")).json()
    parameters = document["paths"]["/model/predict"]["post"]["parameters"]
    (schema,) = [p["schema"] for p in parameters if p["name"] == "max_length"]
    assert limits["min_max_length"] == schema["minimum"] == 3
    assert fake.calls == []


async def test_upload_over_declared_limit_is_413(tmp_path: Path, fake: FakeEngine) -> None:
    app = create_app(make_settings(tmp_path, max_upload_bytes=1000), engine=fake)
    async with serving(app) as client:
        big = png_bytes("red", size=(400, 400)) + b"\0" * 2000
        response = await client.post(
            "/model/predict", files={"image": ("big.png", big, "image/png")}
        )
        assert response.status_code == 413
        assert response.json() == {
            "status": "error",
            "message": "the upload is larger than the limit of 1,000 bytes for one image: "
            "send a smaller image, or raise the server's max_upload_bytes "
            "(CAPTIONER_MAX_UPLOAD_BYTES)",
        }
        assert fake.preprocessed == 0


async def test_a_batch_request_holds_several_images_each_up_to_the_image_limit(
    tmp_path: Path, fake: FakeEngine
) -> None:
    """Three images of 0.8 of the one-image limit fit in a batch request; an image over the
    limit gets its own 413 there, the others are still captioned."""
    settings = make_settings(tmp_path, max_upload_bytes=10_000, max_batch_upload_bytes=50_000)
    app = create_app(settings, engine=fake)
    near_limit = png_bytes("red") + b"\0" * 8_000
    too_big = png_bytes("blue") + b"\0" * 12_000
    files = [("image", (f"{i}.png", near_limit, "image/png")) for i in range(3)]
    async with serving(app) as client:
        three = await client.post("/model/predict/batch", files=files)
        mixed = await client.post(
            "/model/predict/batch",
            files=[files[0], ("image", ("big.png", too_big, "image/png"))],
        )
    assert three.status_code == 200
    assert [r["status"] for r in three.json()["results"]] == ["ok", "ok", "ok"]
    assert mixed.status_code == 200
    ok, refused = mixed.json()["results"]
    assert ok["status"] == "ok"
    assert refused == {
        "index": "1",
        "filename": "big.png",
        "status": "error",
        "code": 413,
        "message": "the image is larger than the limit of 10,000 bytes (9.77 KiB) for one "
        "image: send a smaller image, or raise the server's max_upload_bytes "
        "(CAPTIONER_MAX_UPLOAD_BYTES)",
    }
    assert fake.preprocessed == 4  # the image over its limit never reached the engine


async def test_a_batch_request_over_its_total_says_to_send_fewer_images(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=10_000, max_batch_upload_bytes=20_000)
    app = create_app(settings, engine=fake)
    image = png_bytes("red") + b"\0" * 8_000
    files = [("image", (f"{i}.png", image, "image/png")) for i in range(3)]
    async with serving(app) as client:
        response = await client.post("/model/predict/batch", files=files)
    assert response.status_code == 413
    assert response.json()["message"] == (
        "the batch request is larger than the limit of 20,000 bytes (19.5 KiB) for all its "
        "images together: send fewer images per request, or raise the server's "
        "max_batch_upload_bytes (CAPTIONER_MAX_BATCH_UPLOAD_BYTES)"
    )
    assert fake.preprocessed == 0


async def test_streamed_upload_is_cut_off_at_the_limit(tmp_path: Path, fake: FakeEngine) -> None:
    """Without Content-Length, the body is read only up to the limit, then 413."""
    app = create_app(make_settings(tmp_path, max_upload_bytes=10_000), engine=fake)
    sent = 0

    async def chunks():  # type: ignore[no-untyped-def]
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(1000):  # 1 MB in all, offered 1 kB at a time
            sent += 1024
            yield b"\0" * 1024

    async with serving(app) as client:
        response = await client.post(
            "/model/predict",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 413
    assert sent < 100_000  # the server stopped pulling long before the end
    assert fake.preprocessed == 0


async def test_upload_budget_refuses_before_reading_and_frees_after(
    tmp_path: Path, fake: FakeEngine
) -> None:
    """Bodies in flight hold their declared size; one more that does not fit gets 503."""
    settings = make_settings(tmp_path, max_upload_bytes=100_000, max_pending_upload_bytes=150_000)
    app = create_app(settings, engine=fake)
    held = png_bytes("red") + b"\0" * 80_000  # ~80 kB: trailing bytes after PNG's end
    async with serving(app) as client:
        fake.gate = threading.Event()
        first = asyncio.create_task(
            client.post("/model/predict", files={"image": ("a.png", held, "image/png")})
        )
        await asyncio.to_thread(fake.entered.wait, 5)  # inside the engine, its upload held
        registry = app.state.metrics.registry
        assert registry.get_sample_value("captioner_upload_bytes_held") > 80_000
        refused = await client.post("/model/predict", files={"image": ("b.png", held, "image/png")})
        small = await client.post(  # what still fits is served meanwhile
            "/model/predict/batch", files={"image": ("c.png", png_bytes("blue"), "image/png")}
        )
        fake.gate.set()
        assert (await first).status_code == 200
        after = await client.post("/model/predict", files={"image": ("d.png", held, "image/png")})
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "memory budget" in refused.json()["message"]
    assert small.status_code == 200
    assert after.status_code == 200  # the budget came back
    assert registry.get_sample_value("captioner_upload_bytes_held") == 0
    assert 'captioner_rejections_total{reason="upload_budget"} 1.0' in metrics
    assert fake.preprocessed == 3  # the refused body was never decoded


async def test_uploads_are_held_in_memory_never_on_disk(
    tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 MB upload (multipart parsers usually spool past 1 MB) creates no temporary file."""
    created: list[str] = []

    def no_temporary_file(*args: object, **kwargs: object) -> None:
        created.append("TemporaryFile")
        raise AssertionError("an upload went to a temporary file")

    # SpooledTemporaryFile rolls over to tempfile.TemporaryFile; mkstemp backs the others.
    monkeypatch.setattr(tempfile, "TemporaryFile", no_temporary_file)
    monkeypatch.setattr(tempfile, "mkstemp", no_temporary_file)
    big = png_bytes("red") + b"\0" * 3_000_000  # Pillow ignores bytes after the PNG's end
    app = create_app(make_settings(tmp_path), engine=fake)
    async with serving(app) as client:
        response = await client.post(
            "/model/predict", files={"image": ("big.png", big, "image/png")}
        )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["caption"] == "a red square"
    assert created == []


async def test_an_image_part_without_a_file_name_is_read_by_its_content_type(
    client: httpx.AsyncClient,
) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png_bytes("green") + b"\r\n--b--\r\n"
    )
    response = await client.post(
        "/model/predict",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["caption"] == "a green square"


async def test_a_malformed_multipart_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/model/predict",
        content=b"--b\r\nthis is no header line\r\n\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Input payload validation failed"


# --- POST /model/predict/batch --------------------------------------------------------------


async def test_batch_route_answers_each_file_in_order(
    client: httpx.AsyncClient, fake: FakeEngine
) -> None:
    files = [
        ("image", ("red.png", png_bytes("red"), "image/png")),
        ("image", ("broken.jpg", b"\xff\xd8\xff garbage", "image/jpeg")),
        ("image", ("blue.jpg", jpeg_bytes("blue"), "application/octet-stream")),
        ("image", ("yellow.png", png_bytes("yellow"), "image/png")),
    ]
    response = await client.post("/model/predict/batch", files=files, params={"beam_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    results = body["results"]
    assert [r["index"] for r in results] == ["0", "1", "2", "3"]
    assert [r["filename"] for r in results] == ["red.png", "broken.jpg", "blue.jpg", "yellow.png"]
    assert [r["status"] for r in results] == ["ok", "error", "ok", "ok"]
    assert [r["predictions"][0]["caption"] for r in results if r["status"] == "ok"] == [
        "a red square",
        "a blue square",
        "a yellow square",
    ]
    assert all(len(r["predictions"]) == 2 for r in results if r["status"] == "ok")
    assert results[1]["code"] == 400
    assert results[1]["message"].startswith("the JPEG image is corrupt or truncated")
    assert "predictions" not in results[1]
    # The three good files shared one engine call; the bad one never reached it.
    assert fake.batch_sizes == [3]


async def test_batch_route_refuses_too_many_files(tmp_path: Path, fake: FakeEngine) -> None:
    app = create_app(make_settings(tmp_path, max_files_per_batch_request=2), engine=fake)
    async with serving(app) as client:
        files = [("image", (f"{i}.png", png_bytes("red"), "image/png")) for i in range(3)]
        response = await client.post("/model/predict/batch", files=files)
    assert response.status_code == 400
    assert "at most 2 images per request" in response.json()["errors"]["image"]
    assert fake.calls == []


@pytest.mark.parametrize(
    ("odd_part", "problem"),
    [
        (("image", (None, b"a form value")), "1 of them were plain form fields"),
        (("image", ("empty.png", b"", "image/png")), "image file 2 ('empty.png') is empty"),
    ],
    ids=["form-field", "empty-file"],
)
async def test_batch_route_refuses_a_part_the_document_does_not_allow(
    client: httpx.AsyncClient,
    fake: FakeEngine,
    odd_part: tuple[str, tuple[object, ...]],
    problem: str,
) -> None:
    """The document promises files of at least one byte: anything else is the client's
    mistake about the request (400), not one more unreadable image in a 200."""
    files = [("image", ("red.png", png_bytes("red"), "image/png")), odd_part]
    response = await client.post("/model/predict/batch", files=files)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert problem in response.json()["errors"]["image"]
    assert fake.calls == []


@pytest.mark.parametrize("path", ["/model/predict", "/model/predict/batch"])
async def test_an_empty_file_is_400_naming_it(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, files={"image": ("empty.jpg", b"", "image/jpeg")})
    assert response.status_code == 400
    assert response.json()["errors"]["image"] == "image file 1 ('empty.jpg') is empty: 0 bytes"


def test_the_document_says_an_image_file_holds_at_least_one_byte(tmp_path: Path) -> None:
    document = create_app(make_settings(tmp_path), engine=FakeEngine()).openapi()
    for path in ("/model/predict", "/model/predict/batch"):
        form = document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        image = form["schema"]["properties"]["image"]
        assert image.get("items", image)["minLength"] == 1


async def test_batch_route_without_files_is_max_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/model/predict/batch")
    assert response.status_code == 400
    assert response.json() == MAX_MISSING_IMAGE_BODY


# --- GET /model/metadata --------------------------------------------------------------------


async def test_metadata_of_the_original_checkpoint_is_max_verbatim(tmp_path: Path) -> None:
    fake = FakeEngine(info=fake_info(name="im2txt", is_pretrained_im2txt=True))
    async with serving(create_app(make_settings(tmp_path), engine=fake)) as client:
        response = await client.get("/model/metadata")
    assert response.status_code == 200
    assert response.json() == {
        "id": "max-image-caption-generator",
        "name": "MAX Image Caption Generator",
        "description": "im2txt TensorFlow model trained on MSCOCO",
        "type": "Image-to-Text Translation",
        "source": "https://developer.ibm.com/exchanges/models/all/max-image-caption-generator/",
        "license": "Apache 2.0",
    }


async def test_metadata_of_another_checkpoint_describes_it(client: httpx.AsyncClient) -> None:
    body = (await client.get("/model/metadata")).json()
    assert set(body) == {"id", "name", "description", "type", "source", "license"}
    assert body["id"] == "captioner-fake"
    assert "MAX" not in body["name"]
    for fact in ("step 1234", "32-d embeddings", "24-unit LSTM", "60-word", "Not the pretrained"):
        assert fact in body["description"]


# --- documents ------------------------------------------------------------------------------


async def test_swagger_json_has_what_max_tests_check_and_is_valid_swagger_2(
    client: httpx.AsyncClient,
) -> None:
    """MAX's test suite checks this document's status, exact content type, ``swagger`` key
    and title (its metadata and caption checks are other tests); the rest is ours."""
    response = await client.get("/swagger.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"  # exactly, no charset
    document = response.json()
    assert "swagger" in document
    assert document["info"]["title"] == "MAX Image Caption Generator"
    assert document["info"]["version"] == version("captioner") == captioner.__version__
    validate(document)  # a valid Swagger 2.0 document
    assert set(document["paths"]) == {"/model/predict", "/model/predict/batch", "/model/metadata"}
    predict = document["paths"]["/model/predict"]["post"]
    assert {(p["name"], p["in"], p["type"]) for p in predict["parameters"]} == {
        ("image", "formData", "file"),
        ("beam_size", "query", "integer"),
        ("max_length", "query", "integer"),
    }
    schema = document["definitions"]["Prediction"]["properties"]
    assert schema["index"]["type"] == "string"


async def test_openapi_and_docs_page(client: httpx.AsyncClient) -> None:
    openapi = (await client.get("/openapi.json")).json()
    assert openapi["openapi"].startswith("3.")
    assert {"/model/predict", "/model/predict/batch", "/v2/health/ready"} <= set(openapi["paths"])
    responses = openapi["paths"]["/model/predict"]["post"]["responses"]
    assert "400" in responses and "422" not in responses  # validation errors are 400 here
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()


async def test_openapi_states_the_servers_real_bounds_and_answers(
    tmp_path: Path, fake: FakeEngine
) -> None:
    settings = make_settings(
        tmp_path,
        default_beam_size=2,
        max_beam_size=7,
        max_max_length=30,
        max_files_per_batch_request=5,
        max_upload_bytes=123_456,
        max_batch_upload_bytes=654_321,
        max_image_pixels=999_999,
    )
    async with serving(create_app(settings, engine=fake)) as client:
        openapi = (await client.get("/openapi.json")).json()
        swagger = (await client.get("/swagger.json")).json()
    paths = openapi["paths"]
    for route in ("/model/predict", "/model/predict/batch"):
        operation = paths[route]["post"]
        schemas = {p["name"]: p["schema"] for p in operation["parameters"]}
        assert schemas["beam_size"] == {"type": "integer", "minimum": 1, "maximum": 7, "default": 2}
        assert schemas["max_length"] == {
            "type": "integer",
            "minimum": 3,
            "maximum": 30,
            "default": 20,
        }
        form = operation["requestBody"]["content"]["multipart/form-data"]
        image = form["schema"]["properties"]["image"]
        assert "at most 123,456 bytes" in image["description"]
        assert "at most 999,999 pixels" in image["description"]
        assert "image/jpeg" in form["encoding"]["image"]["contentType"]
        responses = operation["responses"]
        assert {"200", "400", "408", "413", "500", "503", "504"} <= set(responses)
        assert "Retry-After" in responses["503"]["headers"]
    batch_image = paths["/model/predict/batch"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]["image"]
    assert (batch_image["minItems"], batch_image["maxItems"]) == (1, 5)
    assert "whole request body at most 654,321 bytes" in batch_image["description"]
    ready = paths["/v2/health/ready"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotReady")
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    for operations in paths.values():
        for operation in operations.values():
            assert "500" in operation["responses"] and "422" not in operation["responses"]
            for response in operation["responses"].values():
                assert response["headers"]["X-Request-ID"]["schema"] == {"type": "string"}
    # The Swagger 2.0 document is derived from it: same bounds, still valid.
    validate(swagger)
    parameters = {p["name"]: p for p in swagger["paths"]["/model/predict"]["post"]["parameters"]}
    assert (parameters["beam_size"]["minimum"], parameters["beam_size"]["maximum"]) == (1, 7)
    retry = swagger["paths"]["/model/predict"]["post"]["responses"]["503"]["headers"]
    assert retry["Retry-After"]["type"] == "integer"
    assert retry["X-Request-ID"]["type"] == "string"


async def test_metrics_label_every_served_route_and_only_those(
    tmp_path: Path, fake: FakeEngine
) -> None:
    app = create_app(make_settings(tmp_path), engine=fake)
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / "app.js").write_text("// js")
    app.mount("/extra", StaticFiles(directory=mounted))  # a mounted app is a route too
    page = f"/static/{page_bundle().digest}/favicon.svg"
    async with serving(app) as client:
        for path in ("/", "/docs", "/openapi.json", "/limits", page, "/extra/app.js"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.post("/openapi.json")).status_code == 405
        for unknown in ("/nope", "/also/nope", "/extra-not"):
            assert (await client.get(unknown)).status_code == 404
        text = (await client.get("/metrics")).text
    for route in ("/", "/docs", "/openapi.json", "/limits", "/static/{digest}/{name}"):
        assert f'method="GET",route="{route}",status="200"}} 1.0' in text, route
    assert 'method="GET",route="/extra/{path}",status="200"} 1.0' in text
    assert 'method="POST",route="/openapi.json",status="405"} 1.0' in text
    assert 'method="GET",route="unmatched",status="404"} 3.0' in text
    assert "nope" not in text


async def test_an_upload_refused_before_routing_is_counted_under_its_route(
    tmp_path: Path, fake: FakeEngine
) -> None:
    app = create_app(make_settings(tmp_path, max_upload_bytes=1000), engine=fake)
    async with serving(app) as client:
        big = {"image": ("big.png", png_bytes("red") + b"\0" * 2000, "image/png")}
        assert (await client.post("/model/predict", files=big)).status_code == 413
        text = (await client.get("/metrics")).text
    assert 'method="POST",route="/model/predict",status="413"} 1.0' in text
    assert 'route="unmatched"' not in text


# --- health and metrics ----------------------------------------------------------------------


async def test_liveness_and_readiness_when_ready(client: httpx.AsyncClient) -> None:
    live = await client.get("/v2/health/live")
    ready = await client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "precision": "fp32"})


async def test_the_precision_in_use_is_reported_on_ready_metrics_and_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeEngine(info=fake_info(precision="bf16"))
    with caplog.at_level(logging.INFO, logger="captioner.api.service"):
        async with serving(create_app(make_settings(tmp_path), engine=fake)) as client:
            ready = await client.get("/v2/health/ready")
            metrics = (await client.get("/metrics")).text
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "precision": "bf16"})
    series = [line for line in metrics.splitlines() if line.startswith("captioner_model_info{")]
    assert series == ['captioner_model_info{name="fake",precision="bf16"} 1.0']
    (loaded,) = [r.getMessage() for r in caplog.records if "loaded from" in r.getMessage()]
    assert loaded.startswith("model fake loaded from /models/fake/checkpoint, precision bf16, in ")


async def test_metrics_count_requests_rejections_and_batches(client: httpx.AsyncClient) -> None:
    await client.post("/model/predict", files={"image": ("a.png", png_bytes("red"), "image/png")})
    await client.post("/model/predict", files={"image": ("b.png", b"junk", "image/png")})
    await client.get("/no/such/route")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'captioner_requests_total{method="POST",route="/model/predict",status="200"} 1.0' in text
    assert 'captioner_requests_total{method="POST",route="/model/predict",status="400"} 1.0' in text
    assert 'captioner_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'captioner_rejections_total{reason="invalid_image"} 1.0' in text
    assert 'captioner_rejections_total{reason="queue_full"} 0.0' in text
    assert "captioner_batch_size_count 1.0" in text
    assert "captioner_queue_wait_seconds_count 1.0" in text
    assert "captioner_inference_seconds_count 1.0" in text
    assert "captioner_queue_depth 0.0" in text
    assert "captioner_model_ready 1.0" in text


# --- errors of the HTTP layer ----------------------------------------------------------------


async def test_wrong_method_is_max_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/model/predict")
    assert response.status_code == 405
    assert response.json() == {
        "status": "error",
        "message": "The method is not allowed for the requested URL.",
    }
    assert response.headers["allow"] == "POST"


async def test_unknown_path_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/model/nothing")
    assert response.status_code == 404
    assert response.json()["status"] == "error" and response.json()["message"]


async def test_engine_failure_is_a_generic_500(tmp_path: Path) -> None:
    fake = FakeEngine(fail_with=RuntimeError("secret internal detail"))
    async with serving(create_app(make_settings(tmp_path), engine=fake)) as client:
        response = await client.post(
            "/model/predict", files={"image": ("a.png", png_bytes("red"), "image/png")}
        )
        assert response.status_code == 500
        assert response.json() == {"status": "error", "message": "Internal Server Error"}
        # The server is still healthy afterwards.
        assert (await client.get("/v2/health/ready")).status_code == 200


# --- CORS -----------------------------------------------------------------------------------


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/model/metadata", headers={"Origin": "http://example.org"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_enable_env_var_echoes_any_origin(
    tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORS_ENABLE", "true")  # MAX's variable name
    async with serving(create_app(make_settings(tmp_path), engine=fake)) as client:
        response = await client.get("/model/metadata", headers={"Origin": "http://example.org"})
        preflight = await client.options(
            "/model/predict",
            headers={"Origin": "http://a.test", "Access-Control-Request-Method": "POST"},
        )
    assert response.headers["access-control-allow-origin"] == "http://example.org"
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://a.test"


async def test_cors_origins_allow_only_those_listed(tmp_path: Path, fake: FakeEngine) -> None:
    settings = make_settings(tmp_path, cors_origins="http://good.test")
    async with serving(create_app(settings, engine=fake)) as client:
        good = await client.get("/model/metadata", headers={"Origin": "http://good.test"})
        bad = await client.get("/model/metadata", headers={"Origin": "http://bad.test"})
    assert good.headers["access-control-allow-origin"] == "http://good.test"
    assert "access-control-allow-origin" not in bad.headers


# --- access log -----------------------------------------------------------------------------


async def test_one_structured_access_line_per_request(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="captioner.access"):
        await client.post(
            "/model/predict", files={"image": ("a.png", png_bytes("red"), "image/png")}
        )
        await client.get("/model/predict")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "captioner.access"]
    assert len(lines) == 2
    ok, refused = lines
    assert ok["route"] == "/model/predict" and ok["status"] == 200 and ok["batch_size"] == 1
    assert ok["method"] == "POST" and ok["latency_ms"] >= 0
    assert refused["status"] == 405 and refused["reason"] == "method_not_allowed"
    assert "batch_size" not in refused


# --- request ids ----------------------------------------------------------------------------


async def test_every_answer_carries_a_request_id_which_the_access_line_has(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeEngine(fail_with=RuntimeError("boom"))
    settings = make_settings(tmp_path, max_upload_bytes=1000)
    image = {"image": ("a.png", png_bytes("red"), "image/png")}
    with caplog.at_level(logging.INFO, logger="captioner.access"):
        async with serving(create_app(settings, engine=fake)) as client:
            answers = [
                await client.get("/model/metadata"),  # 200
                await client.get("/model/nothing"),  # 404 from the router
                await client.post("/model/predict", content=b"x" * 2000),  # 413 from the guard
                await client.post("/model/predict", files=image),  # 500: the engine raises
            ]
    assert [a.status_code for a in answers] == [200, 404, 413, 500]
    assert answers[3].json() == {"status": "error", "message": "Internal Server Error"}
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == 4
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "captioner.access"]
    assert [line["request_id"] for line in lines] == ids
    assert lines[3]["status"] == 500 and lines[3]["reason"] == "internal_error"


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("trace-1:abc/DEF+42=_.@", True), ("a" * 128, True), ("a" * 129, False),
     ("has space", False), ('quo"te', False), ("", False)],
)  # fmt: skip
async def test_a_well_formed_incoming_request_id_is_echoed(
    client: httpx.AsyncClient, sent: str, echoed: bool
) -> None:
    response = await client.get("/v2/health/live", headers={"X-Request-ID": sent})
    answered = response.headers["x-request-id"]
    assert (answered == sent) is echoed
    if not echoed:
        assert len(answered) == 32


async def test_factory_without_arguments_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uvicorn --factory captioner.api.app:create_app`` configures through CAPTIONER_*."""
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("CAPTIONER_OFFLINE", "true")  # the empty model dir is never downloaded
    monkeypatch.setenv("CAPTIONER_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("CAPTIONER_MAX_UPLOAD_BYTES", "1234")
    app = create_app()
    assert app.state.settings.max_batch_size == 3
    async with serving(app) as client:
        response = await client.post("/model/predict", content=b"x" * 2000)
    assert response.status_code == 413
    assert "1,234 bytes" in response.json()["message"]
