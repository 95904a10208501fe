"""The page's routes in-process: /, the static files, and the example images (shipped held-out files, or
the model's own samples labelled as such), with the API key guarding the examples."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import serve, settings_for
from tests.client.server import H, W, build_repo

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def web_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_repo(tmp_path_factory.mktemp("web-models"))
    examples = root / "gray" / "examples"
    examples.mkdir()
    for i, level in enumerate((10, 200)):
        Image.fromarray(np.full((H, W), level, dtype=np.uint8)).save(examples / f"held{i}.png")
    (examples / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def test_page_and_static_files(web_repo: Path) -> None:
    async with serve(settings_for(web_repo)) as api:
        c = api.client
        r = await c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in r.text
        for name, kind in (
            ("app.js", "text/javascript"),
            ("style.css", "text/css"),
            ("index.html", "text/html"),
        ):
            r = await c.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
            assert r.headers["cache-control"] == "no-cache"
        for bad in ("nope.js", "..%2Fapp.py", "%2Fetc%2Fpasswd", "app.py", ".hidden.js"):
            r = await c.get(f"/static/{bad}")
            assert r.status_code == 404, bad
            assert r.headers["content-type"] == "application/problem+json"
        spec = (await c.get("/openapi.json")).json()["paths"]
        assert "/models/{name}/examples" in spec and "/" not in spec and "/static/{name}" not in spec


async def test_examples_held_out_or_model_samples(web_repo: Path) -> None:
    async with serve(settings_for(web_repo)) as api:
        c = api.client
        held = (await c.get("/models/gray/examples")).json()
        assert held["source"] == "held-out"
        assert [e["name"] for e in held["examples"]] == ["held0", "held1"]
        r = await c.get(held["examples"][1]["url"])
        assert r.headers["content-type"] == "image/png" and r.headers["x-example-source"] == "held-out"
        assert r.content == (web_repo / "gray" / "examples" / "held1.png").read_bytes()

        drawn = (await c.get("/models/tiny/examples")).json()
        assert drawn["source"] == "model sample" and len(drawn["examples"]) == 4
        images = []
        for e in drawn["examples"]:
            r = await c.get(e["url"])
            assert r.headers["x-example-source"] == "model sample"
            images.append(np.asarray(Image.open(io.BytesIO(r.content))))
        # exactly the model's samples for the fixed seed, drawn once and kept
        same = (await c.get("/models/tiny/examples/0")).content
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(same))), images[0])
        want = (await c.post("/sample", json={"model": "tiny", "n": 4, "seed": 20150212})).json()["images"]
        assert np.array_equal(np.stack(images) // 255, np.array(want))
        r = await c.get("/models/tiny/examples/4")
        assert r.status_code == 404 and "4 examples" in r.json()["detail"]
        assert (await c.get("/models/nope/examples")).status_code == 404
        assert (await c.get("/models/tiny/examples/-1")).status_code == 422


async def test_examples_need_the_api_key_but_the_page_does_not(web_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(web_repo / "gray", repo / "gray")
    async with serve(settings_for(repo, api_key="s3cret", default_model="gray")) as api:
        c = api.client
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/static/app.js")).status_code == 200
        assert (await c.get("/models/gray/examples")).status_code == 401
        assert (await c.get("/models/gray/examples/0")).status_code == 401
        ok = await c.get("/models/gray/examples", headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
