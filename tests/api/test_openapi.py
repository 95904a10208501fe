"""The OpenAPI document (issue 17, item 6) and the docs pages' files (item 3): stable operation ids, the
multipart and PNG schemas, response examples, the configured limits as schema bounds, and /docs and
/redoc loading every file from the app itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.schemas import LogProbResponse, Problem, SampleResponse

from .conftest import Api, serve, settings_for

pytestmark = pytest.mark.anyio

OPERATION_IDS = {
    ("post", "/sample"): "sample",
    ("post", "/complete"): "complete",
    ("post", "/log-prob"): "logProb",
    ("get", "/models"): "listModels",
    ("get", "/models/{name}"): "getModel",
    ("get", "/models/{name}/examples"): "listExamples",
    ("get", "/models/{name}/examples/{index}"): "getExample",
    ("get", "/metrics"): "metrics",
    ("get", "/v2/health/live"): "healthLive",
    ("get", "/v2/health/ready"): "healthReady",
    ("get", "/v2/models/{name}/ready"): "modelReady",
}
PNG = {"type": "string", "format": "binary"}


async def spec_of(api: Api) -> dict[str, Any]:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def post(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return spec["paths"][path]["post"]


def body(spec: dict[str, Any], path: str, media: str = "application/json") -> dict[str, Any]:
    return post(spec, path)["requestBody"]["content"][media]["schema"]["properties"]


def query(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    return next(p["schema"] for p in post(spec, path)["parameters"] if p["name"] == name)


async def test_operation_ids_are_stable_and_unique(api: Api) -> None:
    spec = await spec_of(api)
    got = {(m, p): op["operationId"] for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert got == OPERATION_IDS
    assert len(set(got.values())) == len(got)


async def test_multipart_bodies(api: Api) -> None:
    spec = await spec_of(api)
    for path, field in (("/log-prob", "files"), ("/complete", "file")):
        schema = post(spec, path)["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert schema["required"] == [field] and schema["additionalProperties"] is False
        props = schema["properties"]
        assert (props[field]["items"] if field == "files" else props[field]).items() >= PNG.items()
        for option in ("model", "format", "threshold", "invert", "resize", "scale"):
            assert option in props, (path, option)
            query(spec, path, option)  # and as a query parameter
    assert "per_dim" in body(spec, "/log-prob", "multipart/form-data")
    assert {"n", "seed", "known_rows"} <= set(body(spec, "/complete", "multipart/form-data"))


async def test_png_answers_and_examples(api: Api) -> None:
    spec = await spec_of(api)
    models = {"/sample": SampleResponse, "/complete": SampleResponse, "/log-prob": LogProbResponse}
    for path, model in models.items():
        ok = post(spec, path)["responses"]["200"]
        assert ok["content"]["image/png"]["schema"] == PNG
        example = ok["content"]["application/json"]["example"]
        model.model_validate(example)  # the example is a valid answer
        assert ok["headers"], path
        problem = post(spec, path)["responses"]["422"]["content"]["application/problem+json"]
        Problem.model_validate(problem["example"])
    assert "X-Seed" in post(spec, "/sample")["responses"]["200"]["headers"]
    assert "X-Heatmap-Max-Nats" in post(spec, "/log-prob")["responses"]["200"]["headers"]
    example = spec["paths"]["/models/{name}/examples/{index}"]["get"]["responses"]["200"]
    assert example["content"]["image/png"]["schema"] == PNG


async def test_limits_are_schema_bounds(api: Api) -> None:
    """The test app's limits: 16 samples, 8 JSON inputs, 3 files per request (tests/api/conftest.py)."""
    spec = await spec_of(api)
    assert body(spec, "/sample")["n"]["maximum"] == 16
    assert body(spec, "/complete")["n"]["maximum"] == 16
    assert body(spec, "/complete", "multipart/form-data")["n"]["maximum"] == 16
    assert query(spec, "/complete", "n")["maximum"] == 16
    assert body(spec, "/log-prob")["inputs"]["maxItems"] == 8
    assert body(spec, "/log-prob", "multipart/form-data")["files"]["maxItems"] == 3
    assert body(spec, "/complete")["inputs"]["maxItems"] == 1
    for path in ("/sample", "/complete", "/log-prob"):
        assert body(spec, path)["scale"]["maximum"] == 16 and body(spec, path)["scale"]["minimum"] == 1
    for path in ("/complete", "/log-prob"):
        assert body(spec, path, "multipart/form-data")["scale"]["maximum"] == 16
        assert query(spec, path, "scale")["maximum"] == 16
        assert query(spec, path, "threshold")["anyOf"][0]["maximum"] == 255


async def test_limits_follow_the_settings_of_each_app(api: Api, model_repo: Path) -> None:
    small = settings_for(
        model_repo, max_samples_per_request=5, max_inputs_per_request=2, max_images_per_request=2
    )
    async with serve(small) as other:
        spec = await spec_of(other)
        assert body(spec, "/sample")["n"]["maximum"] == 5
        assert query(spec, "/complete", "n")["maximum"] == 5
        assert body(spec, "/log-prob")["inputs"]["maxItems"] == 2
        assert body(spec, "/log-prob", "multipart/form-data")["files"]["maxItems"] == 2
        r = await other.client.post("/sample", json={"n": 6})
        assert r.status_code == 422 and "at most 5" in r.json()["detail"]
    capped = settings_for(model_repo, max_samples_per_request=64, max_active_rows=8, max_queued_rows=2)
    async with serve(capped) as other:
        assert body(await spec_of(other), "/sample")["n"]["maximum"] == 10  # what an engine can hold
    # another app's schema is its own: the module's app still states its own limits
    assert body(await spec_of(api), "/sample")["n"]["maximum"] == 16


async def test_docs_pages_load_their_files_from_the_app(api: Api) -> None:
    for page, files in (
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]),
        ("/redoc", ["redoc.standalone.js", "favicon.png"]),
    ):
        r = await api.client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"].startswith(
            "default-src 'self' "
        )  # nothing from elsewhere
        assert not re.search(r"(https?:)?//[a-z]", r.text, re.I), "a page that loads from another host"
        assert "/openapi.json" in r.text
        for name in files:
            assert f'"/docs/assets/{name}"' in r.text, (page, name)
            asset = await api.client.get(f"/docs/assets/{name}")
            assert asset.status_code == 200 and len(asset.content) > 1000, name
    kinds = {"swagger-ui-bundle.js": "javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
    for name, kind in kinds.items():
        assert kind in (await api.client.get(f"/docs/assets/{name}")).headers["content-type"]
    assert (await api.client.get("/docs/assets/nope.js")).status_code == 404
    spec = await spec_of(api)
    assert not any(p.startswith("/docs") or p == "/redoc" for p in spec["paths"])


async def test_docs_honour_the_root_path(model_repo: Path) -> None:
    """Behind a proxy that strips a prefix (uvicorn --root-path), the pages name files under it."""
    async with serve(settings_for(model_repo)) as a:
        transport = httpx.ASGITransport(app=a.app, root_path="/made")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            swagger, redoc = (await c.get("/docs")).text, (await c.get("/redoc")).text
    assert '"/made/docs/assets/swagger-ui-bundle.js"' in swagger and "'/made/openapi.json'" in swagger
    assert '"/made/docs/assets/redoc.standalone.js"' in redoc and '"/made/openapi.json"' in redoc
