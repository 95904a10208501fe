"""Every compose file renders with ``docker-compose config`` (no engine needed) and says what it should."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from service.config import Settings

from .conftest import REPO
from .dockerfile import Stage

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose not installed (.ci/system-deps.sh installs it)"
)

# Settings the image fixes (bind address, port, baked model path); every other one is passed through.
FIXED_BY_IMAGE = {"host", "port", "model_dir"}


def render(*files: str, **env: str) -> dict[str, Any]:
    """``docker-compose -f ... config`` parsed; MADE_* variables of the caller's shell are not seen."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MADE_", "COMPOSE_", "DOCKER_"))}
    cmd = [str(COMPOSE)]
    for f in files:
        cmd += ["-f", str(REPO / f)]
    out = subprocess.run(
        [*cmd, "config"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"docker-compose config {files} failed:\n{out.stderr}"
    return yaml.safe_load(out.stdout)


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def check_service(service: dict[str, Any], stages: list[Stage]) -> None:
    """What every variant of the service must have: image health check, restart, settings pass-through."""
    final = stages[-1]
    check = final.all("HEALTHCHECK")[-1].exec_form()
    assert service["healthcheck"]["test"] == ["CMD", *check]
    assert service["restart"] in {"always", "unless-stopped", "on-failure"}
    assert service["build"]["context"] == str(REPO)
    env = service["environment"]
    want = {f"MADE_{f.upper()}" for f in Settings.model_fields if f not in FIXED_BY_IMAGE}
    assert want <= set(env), f"settings not passed to the container: {sorted(want - set(env))}"
    fixed = {f"MADE_{f.upper()}" for f in FIXED_BY_IMAGE}
    assert not fixed & set(env), "host, port and model_dir are fixed by the image"
    assert set(env) <= want, f"unknown settings: {sorted(set(env) - want)}"


@pytest.mark.parametrize(
    ("files", "gpu"), [(["docker-compose.yml"], True), (["docker-compose.cpu.yml"], False)]
)
def test_single_service(files: list[str], gpu: bool, stages: list[Stage]) -> None:
    made = render(*files)["services"]["made"]
    check_service(made, stages)
    env = stages[-1].env()
    assert made["environment"]["MADE_DEVICE"] == ("cuda" if gpu else "cpu")
    devices = gpu_devices(made)
    if gpu:
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    else:
        assert devices == []
    assert [(p["published"], p["target"]) for p in made["ports"]] == [(8000, int(env["MADE_PORT"]))]
    assert made["volumes"] == [f"{REPO / 'models'}:{env['MADE_MODEL_DIR']}:ro"]


def test_cpu_file_is_the_gpu_service_without_the_gpu() -> None:
    """The same service, but built from the slim CPU image and without the GPU reservation."""
    gpu, cpu = (
        render("docker-compose.yml")["services"]["made"],
        render("docker-compose.cpu.yml")["services"]["made"],
    )
    assert gpu["build"]["dockerfile"] == "Dockerfile" and gpu["image"] == "made-service:0.1.0"
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile.cpu" and cpu["image"] == "made-service:0.1.0-cpu"
    assert (REPO / cpu["build"]["dockerfile"]).is_file()
    for s in (gpu, cpu):
        s.pop("deploy", None)
        s.pop("image")
        s["build"].pop("dockerfile")
        s["environment"].pop("MADE_DEVICE")
    assert gpu == cpu


def test_kernel_threads_reach_the_container() -> None:
    """Unset, the service sizes its CPU kernel to the container's quota; set, compose passes it on."""
    for files in (["docker-compose.cpu.yml"], ["docker/compose.scale.yml"]):
        made = render(*files, MADE_KERNEL_THREADS="3", MADE_COMPOSE_COMPUTE="cpu")["services"]["made"]
        assert made["environment"]["MADE_KERNEL_THREADS"] == "3"
        assert made["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert render("docker-compose.cpu.yml")["services"]["made"]["environment"]["MADE_KERNEL_THREADS"] is None


def test_compose_knobs() -> None:
    made = render("docker-compose.yml", MADE_COMPOSE_PORT="9100", MADE_COMPOSE_MODELS="/srv/models")[
        "services"
    ]["made"]
    assert made["ports"][0]["published"] == 9100
    assert made["volumes"] == ["/srv/models:/opt/made/models:ro"]
    # A setting from the shell reaches the container; compose-only knobs are not settings.
    made = render("docker-compose.yml", MADE_MAX_QUEUED_ROWS="77")["services"]["made"]
    assert made["environment"]["MADE_MAX_QUEUED_ROWS"] == "77"
    assert not {"compose_port", "compose_models", "compose_compute", "image", "cpu_image"} & set(
        Settings.model_fields
    )


@pytest.mark.parametrize("compute", ["gpu", "cpu"])
def test_scale_out(compute: str, stages: list[Stage]) -> None:
    services = render("docker/compose.scale.yml", MADE_COMPOSE_COMPUTE=compute)["services"]
    made, nginx = services["made"], services["nginx"]
    check_service(made, stages)
    assert bool(gpu_devices(made)) == (compute == "gpu")
    # Replicas are only reachable through nginx: nothing published, no fixed name (so --scale works).
    assert "ports" not in made and "container_name" not in made
    assert made["volumes"] == [f"{REPO / 'models'}:/opt/made/models:ro"]
    assert nginx["depends_on"] == {"made": {"condition": "service_healthy"}}
    assert nginx["image"].startswith("nginx:") and nginx["image"].split(":")[1] not in {"", "latest"}
    assert [p["target"] for p in nginx["ports"]] == [8080]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in nginx["volumes"]}
    assert mounts["/etc/nginx/conf.d/default.conf"] == str(REPO / "docker/nginx/made.conf")
    upstream = REPO / "docker/nginx/upstream.compose.inc"
    assert mounts["/etc/nginx/made-upstream.inc"] == str(upstream)
    servers = [ln.split()[1] for ln in upstream.read_text().splitlines() if ln.startswith("server ")]
    assert servers == [f"made:{stages[-1].env()['MADE_PORT']}"], "nginx must point at the compose service"
    assert "healthcheck" in nginx and nginx["restart"] == made["restart"]
