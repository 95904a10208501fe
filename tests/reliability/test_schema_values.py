"""Schema and values (issue 16, item 8): the OpenAPI schema and validation agree, booleans are not
pixels, huge integers are named as such, JSON charsets are honoured, slash redirects do not echo the
Host header, and a model card cannot name a file outside its folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.server import make_model
from service.api.charset import declared_charset, json_as_utf8
from service.api.errors import ProblemError
from service.api.inputs import may_hold_booleans
from service.made import CheckpointError, load_model
from tests.api.conftest import Api, D, H, W, assert_problem

pytestmark = pytest.mark.anyio

ZEROS = np.zeros((H, W), dtype=int).tolist()


def raw_image(first: str) -> bytes:
    """A JSON body whose first pixel is ``first`` verbatim."""
    rows = json.dumps(ZEROS).replace("[[0,", f"[[{first},", 1)
    return ('{"inputs": [' + rows + "]}").encode()


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        (raw_image("true"), "body.inputs[0][0][0]", "boolean true"),
        (raw_image("false"), "body.inputs[0][0][0]", "boolean false"),
        (json.dumps({"inputs": [[True] * W] * H}).encode(), "body.inputs[0][0]", "boolean"),
        (json.dumps({"inputs": [[0] * (D - 1) + [False]]}).encode(), f"body.inputs[0][{D - 1}]", "boolean"),
        (raw_image(str(10**30)), "body.inputs[0][0][0]", "31 digits"),
        (raw_image(str(2**63)), "body.inputs[0][0][0]", "64-bit"),
        (raw_image(str(-(2**70))), "body.inputs[0][0][0]", "64-bit"),
        (raw_image("9" * 400), "body.inputs[0][0][0]", "400 digits"),
        (raw_image("9" * 5000), "body", "number out of range"),  # past the JSON parser's own limit
        (raw_image(str(2**62)), "body.inputs[0][0][0]", "0 or 1"),
    ],
)
async def test_booleans_and_huge_integers_are_named(api: Api, body: bytes, field: str, needle: str) -> None:
    r = await api.client.post("/log-prob", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(r, 422, field, needle)
    assert problem["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/sample", {"n": 2.0, "seed": 5.0}, 200),
        ("/sample", {"n": 346.0}, 422),  # the same answer as 346: over the request limit
        ("/sample", {"n": 346}, 422),
        ("/sample", {"n": 1.5}, 422),
        ("/sample", {"n": True}, 422),
        ("/complete", {"inputs": [ZEROS], "known_rows": 2.0}, 200),
        ("/log-prob", {"inputs": [None]}, 422),
        ("/log-prob", {"inputs": [5]}, 422),
    ],
)
async def test_numbers_follow_json_schema(api: Api, path: str, body: dict[str, Any], status: int) -> None:
    r = await api.client.post(path, json=body)
    assert r.status_code == status, r.text
    if status == 422:
        assert_problem(r, 422, "body.")


async def test_schema_states_what_validation_enforces(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]

    def body(path: str) -> dict[str, Any]:
        return paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]

    assert body("/complete")["known_rows"]["minimum"] == 1
    for path in ("/complete", "/log-prob"):
        inputs = body(path)["inputs"]
        assert inputs["minItems"] == 1 and inputs["items"]["type"] == "array"  # items are never null
    sample = body("/sample")
    assert sample["n"]["type"] == "integer" and sample["n"]["minimum"] == 1
    seed = next(s for s in sample["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["minimum"] == 0 and seed["maximum"] == 2**63 - 1  # not pydantic's "ge"/"le"


async def test_upload_schema_needs_a_file(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    body = schema["paths"]["/log-prob"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["files"]["minItems"] == 1


# --- charset ---------------------------------------------------------------------------------------------


def test_charset_is_read_from_the_header() -> None:
    assert declared_charset("application/json") is None
    assert declared_charset("application/json; charset=UTF-8") == "utf-8"
    assert declared_charset('application/json;charset="ISO-8859-1"') == "iso-8859-1"


def test_json_body_is_decoded_with_its_charset() -> None:
    body = '{"model": "café"}'
    assert json_as_utf8(body.encode(), "application/json") == body.encode()
    assert json_as_utf8(body.encode(), "application/json; charset=utf-8") == body.encode()
    assert json_as_utf8(body.encode("latin-1"), "application/json; charset=latin-1") == body.encode()
    assert json_as_utf8(body.encode("utf-16"), "application/json; charset=utf-16") == body.encode()
    for bad in ("x-unknown", "base64", "rot13"):
        with pytest.raises(ProblemError) as e:
            json_as_utf8(b"{}", f"application/json; charset={bad}")
        assert e.value.status == 415 and "header.Content-Type" in e.value.detail
    with pytest.raises(ProblemError) as e:
        json_as_utf8(b'{"a": "\xff\xfe"}', "application/json; charset=ascii")
    assert e.value.status == 400 and "ascii" in e.value.detail


async def test_latin1_body_is_not_read_as_utf8(api: Api) -> None:
    body = '{"model": "caf\u00e9", "n": 1}'.encode("latin-1")
    r = await api.client.post(
        "/sample", content=body, headers={"content-type": "application/json; charset=latin-1"}
    )
    problem = assert_problem(r, 404)  # a model named "café", not a UTF-8 decoding error
    assert problem["errors"][0]["input"] == "caf\u00e9"
    r = await api.client.post(
        "/sample", content=b"{}", headers={"content-type": "application/json; charset=rot13"}
    )
    assert_problem(r, 415, "charset")


# --- slash redirects --------------------------------------------------------------------------------------


async def test_trailing_slash_does_not_redirect_to_the_host_header(api: Api) -> None:
    r = await api.client.get("/models/", headers={"host": "evil.example"}, follow_redirects=False)
    assert "evil.example" not in r.headers.get("location", "")
    assert r.status_code == 404
    assert_problem(r, 404)


# --- model card paths -------------------------------------------------------------------------------------


def card_pointing_at(folder: Path, target: str) -> None:
    card = json.loads((folder / "card.json").read_text())
    card["weights"]["file"] = target
    (folder / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "empty", "not a string", "folder itself"])
def test_card_paths_stay_inside_the_model_folder(tmp_path: Path, kind: str) -> None:
    outside = make_model(tmp_path / "outside", (4, 4), (8,), seed=1)
    folder = make_model(tmp_path / "models" / "m", (4, 4), (8,), seed=1)
    target: Any = {
        "parent": "../../outside/model.safetensors",
        "absolute": str(outside / "model.safetensors"),
        "symlink": "link.safetensors",
        "empty": "",
        "not a string": ["model.safetensors"],
        "folder itself": ".",
    }[kind]
    if kind == "symlink":
        os.symlink(outside / "model.safetensors", folder / "link.safetensors")
    card_pointing_at(folder, target)
    with pytest.raises(CheckpointError, match=r"weights\.file") as e:
        load_model(folder, verify=False)
    assert "card.json" in str(e.value)


def test_card_may_name_a_file_in_a_subfolder(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m", (4, 4), (8,), seed=1)
    (folder / "weights").mkdir()
    (folder / "model.safetensors").rename(folder / "weights" / "w.safetensors")
    card_pointing_at(folder, "weights/w.safetensors")
    model, _ = load_model(folder, verify=False)
    assert model.data_dim == 16


def test_only_bodies_without_the_literals_skip_the_boolean_scan() -> None:
    assert not may_hold_booleans(b'{"inputs": [[0, 1, 1]], "per_dim": 0}')
    assert may_hold_booleans(b'{"inputs": [[0, true, 1]]}')
    assert may_hold_booleans(b'{"inputs": [[false]]}')
    assert may_hold_booleans(b'{"model": "true-ish", "inputs": [[0]]}')  # a false alarm: the scan runs
