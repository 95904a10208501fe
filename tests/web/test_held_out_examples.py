"""Held-out examples as served: only PNGs of the model's size (at most 8) are offered, names and indices
cannot reach outside the model's folder, and a committed model serves its shipped test images, which
/complete takes as they are."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import serve, settings_for
from tests.client.server import H, W, build_repo

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "models" / "mnist-fast"


@pytest.fixture(scope="module")
def messy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gray`` ships 10 good PNGs among a wrong-size PNG, a JPEG named .png and a truncated PNG."""
    root = build_repo(tmp_path_factory.mktemp("examples-models"))
    folder = root / "gray" / "examples"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((H, W), 20 * i, dtype=np.uint8)).save(folder / f"good{i}.png")
    Image.fromarray(np.zeros((H + 1, W), dtype=np.uint8)).save(folder / "a-too-tall.png")
    Image.fromarray(np.zeros((H, W), dtype=np.uint8)).save(folder / "b-jpeg.png", format="JPEG")
    (folder / "c-truncated.png").write_bytes((folder / "good0.png").read_bytes()[:30])
    (root / "gray" / "secret.png").write_bytes((folder / "good1.png").read_bytes())
    return root


async def test_only_pngs_of_the_models_size_at_most_8(messy_repo: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="service.api")
    async with serve(settings_for(messy_repo)) as api:
        listing = (await api.client.get("/models/gray/examples")).json()
    assert listing["source"] == "held-out"
    assert [e["name"] for e in listing["examples"]] == [f"good{i}" for i in range(8)]
    skipped = " ".join(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert all(name in skipped for name in ("a-too-tall", "b-jpeg", "c-truncated"))


@pytest.mark.parametrize(
    "path",
    [
        "/models/gray/examples/..%2Fsecret.png",
        "/models/gray/examples/..%2F..%2Fgray%2Fcard.json",
        "/models/gray/examples/good0",
        "/models/gray/examples/8",
        "/models/..%2Fgray/examples",
        "/models/gray%2F..%2Fgray/examples/0",
        "/models/%2E%2E/examples/0",
    ],
)
async def test_no_path_reaches_outside_the_listing(messy_repo: Path, path: str) -> None:
    async with serve(settings_for(messy_repo)) as api:
        r = await api.client.get(path)
    assert r.status_code in (404, 422), r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert b"PNG" not in r.content and "config" not in r.text


@pytest.mark.skipif(not (COMMITTED / "examples").is_dir(), reason="models/mnist-fast ships no examples")
async def test_a_committed_model_serves_its_held_out_test_images(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "mnist-fast").symlink_to(COMMITTED, target_is_directory=True)
    card = json.loads((COMMITTED / "card.json").read_text())
    settings = settings_for(repo, default_model="mnist-fast", verify_on_load=False)
    async with serve(settings) as api:
        c = api.client
        listing = (await c.get("/models/mnist-fast/examples")).json()
        assert listing["source"] == "held-out"
        assert [f"{e['name']}.png" for e in listing["examples"]] == card["examples"]["files"]
        first = await c.get(listing["examples"][0]["url"])
        assert first.content == (COMMITTED / "examples" / card["examples"]["files"][0]).read_bytes()
        done = await c.post(
            "/complete", params={"n": 2, "seed": 1}, files={"file": ("x.png", first.content, "image/png")}
        )
    assert done.status_code == 200, done.text
    top = np.asarray(Image.open(io.BytesIO(first.content)))[:14] // 255
    for image in done.json()["images"]:  # the top half is the held-out digit's, as shipped
        assert np.array_equal(np.array(image)[:14], top)
