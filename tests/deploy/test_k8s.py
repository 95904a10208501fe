"""The Kubernetes manifest: Deployment + Service, probes on the health endpoints, a GPU limit, non-root."""

from __future__ import annotations

from typing import Any

import yaml

from service.config import Settings

from .conftest import REPO
from .dockerfile import Stage

DOCS = list(yaml.safe_load_all((REPO / "docker/k8s/made.yaml").read_text()))
BY_KIND = {d["kind"]: d for d in DOCS}


def container() -> dict[str, Any]:
    (c,) = BY_KIND["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_kinds() -> None:
    assert sorted(BY_KIND) == ["Deployment", "Service"] and len(DOCS) == 2
    assert BY_KIND["Deployment"]["apiVersion"] == "apps/v1" and BY_KIND["Service"]["apiVersion"] == "v1"


def test_probes_hit_the_health_endpoints(stages: list[Stage]) -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(ports.values()) == {int(stages[-1].env()["MADE_PORT"])}
    for probe, path in [("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")]:
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in ports or get["port"] in ports.values()
    assert c["startupProbe"]["httpGet"]["path"].startswith("/v2/health/")


def test_gpu_limit_and_resources() -> None:
    res = container()["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) >= 1
    assert "memory" in res["limits"] and "cpu" in res["requests"]


def test_runs_as_the_image_user(stages: list[Stage]) -> None:
    pod = BY_KIND["Deployment"]["spec"]["template"]["spec"]
    uid = int(stages[-1].all("USER")[-1].args.split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False
    # The service drains for MADE_SHUTDOWN_GRACE_S before exiting; Kubernetes must wait longer.
    assert pod["terminationGracePeriodSeconds"] > Settings.model_fields["shutdown_grace_s"].default


def test_env_names_are_settings() -> None:
    names = {e["name"] for e in container()["env"]}
    assert names <= {f"MADE_{f.upper()}" for f in Settings.model_fields}


def test_service_selects_the_pods() -> None:
    dep, svc = BY_KIND["Deployment"], BY_KIND["Service"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for p in container()["ports"]}
    assert all(p["targetPort"] in names for p in svc["spec"]["ports"])
