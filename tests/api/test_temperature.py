"""``temperature`` on ``/sample`` and ``/complete`` (issue 15, item 4): JSON bodies, query parameters and
form fields alike; 0 gives the same images whatever the seed, the same seed and temperature the same
images; a negative, non-numeric, NaN, infinite or out-of-range temperature is a 422 problem naming the
field; ``log_prob`` stays the model's own."""

from __future__ import annotations

import numpy as np
import pytest

from service.made import MAX_TEMPERATURE

from .conftest import Api, H, W, assert_problem, png_bytes
from .test_openapi import body, query, spec_of

pytestmark = pytest.mark.anyio

GRAY = (np.arange(H * W).reshape(H, W) * 13 % 256).tolist()


def fields(problem: dict) -> list[str]:
    return [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize("model", ["tiny", "gray"])
async def test_sample_temperature(api: Api, model: str) -> None:
    async def sample(seed: int, t: float | None) -> dict:
        body = {"model": model, "n": 3, "seed": seed} | ({} if t is None else {"temperature": t})
        r = await api.client.post("/sample", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    greedy = [await sample(seed, 0) for seed in (1, 2)]
    assert greedy[0]["images"] == greedy[1]["images"]  # whatever the seed
    assert greedy[0]["images"][0] == greedy[0]["images"][1] == greedy[0]["images"][2]
    assert (await sample(5, 1.0))["images"] == (await sample(5, None))["images"]  # 1 is the default
    warm = await sample(5, 0.5)
    assert warm == await sample(5, 0.5)
    assert warm["images"] != (await sample(5, 1))["images"]
    # the answer carries what reproduces it: the seed and the temperature
    assert (warm["seed"], warm["temperature"]) == (5, 0.5)
    assert greedy[0]["temperature"] == 0.0 and (await sample(5, None))["temperature"] == 1.0
    # log_prob is the model's own log-likelihood of the images, whatever the temperature
    r = await api.client.post("/log-prob", json={"model": model, "inputs": warm["images"]})
    np.testing.assert_allclose(r.json()["log_prob"], warm["log_prob"], rtol=0, atol=1e-3)


async def test_complete_temperature_json_query_and_form(api: Api) -> None:
    body = {"model": "gray", "inputs": [GRAY], "n": 2, "seed": 3, "known_rows": 2}
    r0 = await api.client.post("/complete", json={**body, "temperature": 0})
    r0b = await api.client.post("/complete", json={**body, "seed": 4, "temperature": 0})
    assert r0.status_code == 200, r0.text
    assert r0.json()["images"] == r0b.json()["images"]
    half = (await api.client.post("/complete", json={**body, "temperature": 0.5})).json()
    png = [("file", ("g.png", png_bytes(np.array(GRAY)), "image/png"))]
    opts = {"model": "gray", "n": "2", "seed": "3", "known_rows": "2", "temperature": "0.5"}
    by_query = await api.client.post("/complete", params=opts, files=png)
    by_form = await api.client.post("/complete", data=opts, files=png)
    assert by_query.status_code == by_form.status_code == 200, (by_query.text, by_form.text)
    assert by_query.json()["images"] == by_form.json()["images"] == half["images"]
    assert half["images"] != r0.json()["images"]
    assert half["temperature"] == by_form.json()["temperature"] == 0.5 and r0.json()["temperature"] == 0.0
    as_png = await api.client.post("/complete", params={**opts, "format": "png"}, files=png)
    assert as_png.headers["X-Temperature"] == "0.5" and as_png.headers["X-Seed"] == "3"
    grid = await api.client.post("/sample", json={"model": "gray", "n": 2, "format": "png", "temperature": 0})
    assert grid.headers["X-Temperature"] == "0.0"


BAD_JSON = [-0.5, "0.5", True, None, 1e-9, 101, [1]]


@pytest.mark.parametrize("path", ["/sample", "/complete"])
@pytest.mark.parametrize("bad", BAD_JSON)
async def test_bad_temperature_in_json(api: Api, path: str, bad: object) -> None:
    body: dict = {"model": "gray", "temperature": bad}
    if path == "/complete":
        body["inputs"] = [GRAY]
    problem = assert_problem(await api.client.post(path, json=body), 422, "body.temperature")
    assert fields(problem) == ["body.temperature"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_temperature_in_json(api: Api, literal: str) -> None:
    raw = '{"model": "gray", "n": 1, "temperature": ' + literal + "}"
    r = await api.client.post("/sample", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 422, "temperature")


@pytest.mark.parametrize("where", ["query", "form"])
@pytest.mark.parametrize("bad", ["-1", "abc", "nan", "inf", "-inf", "", "1e-9", "1000"])
async def test_bad_temperature_on_an_upload(api: Api, where: str, bad: str) -> None:
    png = [("file", ("g.png", png_bytes(np.array(GRAY)), "image/png"))]
    opts = {"model": "gray", "temperature": bad}
    kw = {"params": opts} if where == "query" else {"data": opts}
    problem = assert_problem(await api.client.post("/complete", files=png, **kw), 422, f"{where}.temperature")
    assert fields(problem) == [f"{where}.temperature"]


async def test_the_limits_are_named(api: Api) -> None:
    r = await api.client.post("/sample", json={"model": "gray", "temperature": -1})
    assert_problem(r, 422, "body.temperature", "greater than or equal to 0")
    r = await api.client.post("/sample", json={"model": "gray", "temperature": 1e-7})
    assert_problem(r, 422, "body.temperature", "0", "1e-06")
    r = await api.client.post("/sample", json={"model": "gray", "temperature": 1000})
    assert_problem(r, 422, "body.temperature", "less than or equal to 100")


async def test_openapi_states_the_temperature(api: Api) -> None:
    """In the JSON bodies of both routes, and as a query parameter and a form field of the upload."""
    spec = await spec_of(api)
    schemas = [
        body(spec, "/sample")["temperature"],
        body(spec, "/complete")["temperature"],
        body(spec, "/complete", "multipart/form-data")["temperature"],
        query(spec, "/complete", "temperature"),
    ]
    for schema in schemas:
        assert schema["type"] == "number" and schema["default"] == 1.0
        assert schema["minimum"] == 0 and schema["maximum"] == MAX_TEMPERATURE
    assert "most probable" in body(spec, "/sample")["temperature"]["description"]
    assert "temperature" in spec["paths"]["/sample"]["post"]["description"]
