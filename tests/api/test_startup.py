"""Start-up: bad model folders fail it (or are skipped), an empty repository is not ready."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from service.api import create_app
from service.memory import thaw

from .conftest import assert_problem, serve, settings_for

pytestmark = pytest.mark.anyio


def repo_with_tiny(model_repo: Path, root: Path) -> Path:
    shutil.copytree(model_repo / "tiny", root / "tiny")
    return root


async def test_corrupt_model_fails_start_up_unless_skipped(model_repo: Path, tmp_path: Path) -> None:
    repo = repo_with_tiny(model_repo, tmp_path)
    shutil.copytree(model_repo / "tiny", repo / "broken")
    weights = repo / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    app = create_app(settings_for(repo))
    with pytest.raises(RuntimeError, match="broken"):
        async with app.router.lifespan_context(app):
            pass
    async with serve(settings_for(repo, skip_bad_models=True)) as a:
        assert (await a.client.get("/v2/health/ready")).status_code == 200
        listing = (await a.client.get("/models")).json()
        assert [m["name"] for m in listing["models"]] == ["tiny"]
        assert "checksum" in listing["failed"]["broken"]


async def test_empty_repository_is_not_ready(tmp_path: Path) -> None:
    async with serve(settings_for(tmp_path)) as a:
        assert (await a.client.get("/v2/health/live")).status_code == 200
        body = assert_problem(await a.client.get("/v2/health/ready"), 503, "no model")
        assert body["ready"] is False
        assert_problem(await a.client.post("/sample", json={}), 404, "'tiny'", "none")
    app = create_app(settings_for(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="does not exist"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize("on", [True, False])
async def test_the_app_freezes_once_its_models_are_warm_when_set(model_repo: Path, on: bool) -> None:
    thaw()
    async with serve(settings_for(model_repo, gc_freeze=on)) as api:
        assert (gc.get_freeze_count() > 0) is on
        assert (await api.client.post("/sample", json={"n": 1})).status_code == 200
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("on", [True, False])
async def test_fastapis_opentelemetry_instrumentation_is_a_setting(model_repo: Path, on: bool) -> None:
    app = create_app(settings_for(model_repo, otel_telemetry=on))
    config = app._telemetry  # what FastAPI checks before each request
    assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
    assert not app._native_telemetry.enabled()  # no provider configured here either way
