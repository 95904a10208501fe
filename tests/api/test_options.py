"""Upload options from the query string or multipart form fields alike (issue 17, item 1): form fields are
honoured, and nothing a client sends is dropped silently: an unknown option, one given twice, one given
in both places with different values, a query parameter on a JSON route, or a file under another field
name is a 422 problem naming it."""

from __future__ import annotations

import numpy as np
import pytest

from service.api.options import CompleteUploadOptions, LogProbUploadOptions, parse_options

from .conftest import Api, H, W, assert_problem, png_bytes

pytestmark = pytest.mark.anyio


def face(h: int = 2 * H, w: int = 2 * W) -> bytes:
    """A gray image of another size than the models' (as the issue's face.png is for MNIST)."""
    return png_bytes(np.arange(h * w, dtype=np.int64).reshape(h, w) * 7 % 256)


def upload(field: str = "file") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, ("face.png", face(), "image/png"))]


def fields(problem: dict) -> list[str]:
    return [e["field"] for e in problem["errors"]]


# --- the options are honoured wherever they come from ---------------------------------------------


async def test_form_fields_are_honoured(api: Api) -> None:
    """``curl '/complete?resize=true' -F model=faces -F n=4 -F file=@face.png``: the form's model and n
    are used (they were once dropped: the default model, one completion)."""
    r = await api.client.post(
        "/complete", params={"resize": "true"}, data={"model": "gray", "n": "4"}, files=upload()
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "gray" and len(body["images"]) == 4
    assert np.array(body["images"]).shape == (4, H, W)


async def test_form_and_query_give_the_same_answer(api: Api) -> None:
    options = {"model": "gray", "n": "3", "seed": "5", "resize": "true", "known_rows": "1"}
    by_query = await api.client.post("/complete", params=options, files=upload())
    by_form = await api.client.post("/complete", data=options, files=upload())
    split = await api.client.post(
        "/complete",
        params={"model": "gray", "resize": "true"},
        data={"n": "3", "seed": "5", "known_rows": "1"},
        files=upload(),
    )
    assert by_query.status_code == by_form.status_code == split.status_code == 200, by_form.text
    assert by_query.json() == by_form.json() == split.json()
    assert by_form.json()["known_rows"] == 1 and by_form.json()["seed"] == 5


async def test_log_prob_form_fields(api: Api) -> None:
    files = [("files", ("a.png", face(), "image/png")), ("files", ("b.png", face(), "image/png"))]
    r = await api.client.post(
        "/log-prob", data={"model": "gray", "resize": "true", "per_dim": "true"}, files=files
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "gray" and len(body["log_prob"]) == 2
    assert np.array(body["log_prob_per_dim"]).shape == (2, H * W)
    same = await api.client.post(
        "/log-prob", params={"model": "gray", "resize": "true", "per_dim": "true"}, files=files
    )
    assert same.json() == body


async def test_same_value_in_both_places_is_accepted(api: Api) -> None:
    r = await api.client.post(
        "/complete",
        params={"model": "gray", "resize": "true"},
        data={"model": "gray", "n": "2"},
        files=upload(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "gray" and len(r.json()["images"]) == 2


# --- nothing is dropped silently ------------------------------------------------------------------


async def test_conflicting_query_and_form_value(api: Api) -> None:
    r = await api.client.post(
        "/complete", params={"model": "tiny", "resize": "true"}, data={"model": "gray"}, files=upload()
    )
    body = assert_problem(r, 422, "form.model", "query.model='tiny'", "one place")
    assert fields(body) == ["form.model"] and body["errors"][0]["input"] == "gray"


async def test_unknown_form_field(api: Api) -> None:
    r = await api.client.post("/complete", data={"resize": "true", "samples": "4"}, files=upload())
    body = assert_problem(r, 422, "form.samples")
    assert fields(body) == ["form.samples"]
    assert "unknown option" in body["errors"][0]["message"] and "known_rows" in body["errors"][0]["message"]


async def test_unknown_query_parameter_on_an_upload(api: Api) -> None:
    r = await api.client.post("/log-prob", params={"modle": "gray"}, files=upload("files"))
    body = assert_problem(r, 422, "query.modle")
    assert "unknown option" in body["errors"][0]["message"]


@pytest.mark.parametrize("where", ["query", "form"])
async def test_repeated_option(api: Api, where: str) -> None:
    pairs = [("n", "2"), ("n", "3")]
    if where == "query":
        r = await api.client.post("/complete", params=[("resize", "true"), *pairs], files=upload())
    else:
        r = await api.client.post(
            "/complete", params={"resize": "true"}, data={"n": ["2", "3"]}, files=upload()
        )
    body = assert_problem(r, 422, f"{where}.n", "more than once")
    assert fields(body) == [f"{where}.n"]


async def test_invalid_form_value_names_the_form_field(api: Api) -> None:
    r = await api.client.post("/complete", data={"resize": "true", "n": "many"}, files=upload())
    body = assert_problem(r, 422)
    assert fields(body) == ["form.n"]
    r = await api.client.post("/complete", data={"resize": "true", "n": "17"}, files=upload())
    assert_problem(r, 422, "form.n", "at most 16")
    r = await api.client.post("/complete", params={"resize": "true", "n": "17"}, files=upload())
    assert_problem(r, 422, "query.n", "at most 16")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sample", {"n": 1}),
        ("/complete", {"inputs": [np.zeros((H, W), dtype=int).tolist()]}),
        ("/log-prob", {"inputs": [np.zeros((H, W), dtype=int).tolist()]}),
    ],
)
async def test_query_parameter_on_a_json_route(api: Api, path: str, body: dict) -> None:
    """``POST /sample?model=faces&n=4`` with body ``{}`` once returned one image of the default model."""
    r = await api.client.post(path, params={"model": "gray", "n": "4"}, json=body)
    problem = assert_problem(r, 422, "query.model", "JSON body")
    assert problem["errors"][0]["input"] == "gray"


async def test_sample_with_query_and_empty_body(api: Api) -> None:
    r = await api.client.post("/sample?model=gray&n=4", json={})
    assert_problem(r, 422, "query.model", "/sample takes its options in the JSON body")


@pytest.mark.parametrize(("path", "field"), [("/complete", "file"), ("/log-prob", "files")])
async def test_unexpected_file_field(api: Api, path: str, field: str) -> None:
    files = [*upload(field), ("mask", ("m.png", face(), "image/png"))]
    r = await api.client.post(path, params={"resize": "true"}, files=files)
    body = assert_problem(r, 422, "form.mask", "unexpected file field", repr(field))
    assert fields(body) == ["form.mask"]


# --- the parser itself ----------------------------------------------------------------------------


def test_parse_options_reads_text_values() -> None:
    opts = parse_options(
        CompleteUploadOptions, [("n", "4"), ("resize", "true")], [("model", "faces"), ("seed", "9")]
    )
    assert (opts.model, opts.n, opts.resize, opts.seed) == ("faces", 4, True, 9)
    assert parse_options(LogProbUploadOptions, []) == LogProbUploadOptions()
