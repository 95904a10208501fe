"""The faces figure as served: ``POST /log-prob`` of the committed model's held-out examples (test-split
faces, shipped as PNG) gives, per image, the log-likelihood that ``make eval`` computes from the data,
so the card's bits/dim is what the service answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from service.made import load_model
from service.training.data import load_faces
from tests.api.conftest import serve, settings_for

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT / "models" / "faces"
DATA = ROOT.parent / "shared" / "data" / "olivetti_faces.npz"


@pytest.mark.skipif(not (FACES / "examples").is_dir(), reason="models/faces ships no examples")
async def test_served_log_prob_of_held_out_faces_is_the_models_own(tmp_path: Path) -> None:
    card = json.loads((FACES / "card.json").read_text())
    files = card["examples"]["files"]
    blobs = [(FACES / "examples" / name).read_bytes() for name in files]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)), dtype=np.float64).reshape(-1) for b in blobs])
    if DATA.is_file():  # the examples are the test split's images, as the data file holds them
        test = load_faces(DATA).test[card["examples"]["rows"]].numpy()
        assert np.array_equal(pixels, test)
    model, _ = load_model(FACES, verify=False)  # the Jacobian check at D=4096 is tests/made's job
    with torch.no_grad():
        own = model.log_prob(torch.as_tensor(pixels, dtype=torch.float32)).double().numpy()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "faces").symlink_to(FACES, target_is_directory=True)
    settings = settings_for(repo, default_model="faces", verify_on_load=False, max_images_per_request=8)
    async with serve(settings) as api:
        r = await api.client.post(
            "/log-prob",
            params={"model": "faces"},
            files=[("files", (n, b, "image/png")) for n, b in zip(files, blobs, strict=True)],
        )
    assert r.status_code == 200, r.text
    served = np.array(r.json()["log_prob"])
    np.testing.assert_allclose(served, own, rtol=1e-5)
    bits = -served / (pixels.shape[1] * np.log(2))
    assert bits.mean() == pytest.approx(-own.mean() / (pixels.shape[1] * np.log(2)), rel=1e-5)
