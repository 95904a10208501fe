"""The Dockerfile: pinned bases, non-root, health check, no secrets, serving-only final stage, torch pin."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement

from service.config import Settings

from .conftest import REPO
from .dockerfile import (
    Stage,
    copy_sources,
    dockerignore_excludes,
    parse_dockerfile,
    rule_violations,
)


def test_dockerfile_follows_the_rules(stages: list[Stage]) -> None:
    assert rule_violations(stages) == []


GOOD = """
ARG BASE=python:3.12.4-slim
FROM ${BASE} AS build
RUN true
FROM ${BASE}
USER 1000
HEALTHCHECK CMD ["true"]
CMD ["python", "-m", "app"]
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("ARG BASE=python:3.12.4-slim", "ARG BASE=python:latest"), "not pinned"),
        (("ARG BASE=python:3.12.4-slim", "ARG BASE=python"), "not pinned"),
        (("ARG BASE=python:3.12.4-slim", "ARG BASE=registry:5000/python"), "not pinned"),
        (("USER 1000", "USER root"), "runs as root"),
        (("USER 1000", "USER 0:0"), "runs as root"),
        (("USER 1000\n", ""), "no USER"),
        (('HEALTHCHECK CMD ["true"]', "HEALTHCHECK NONE"), "no HEALTHCHECK"),
        (('HEALTHCHECK CMD ["true"]\n', ""), "no HEALTHCHECK"),
        (("RUN true", "ENV MADE_API_KEY=abc123"), "secret"),
        (("RUN true", "ENV HF_TOKEN hf_abc"), "secret"),
        (("RUN true", "ARG DB_PASSWORD=hunter2"), "secret"),
        (('CMD ["python", "-m", "app"]', "CMD python -m app"), "shell form"),
    ],
)
def test_rules_catch_a_bad_dockerfile(change: tuple[str, str], expected: str) -> None:
    assert rule_violations(parse_dockerfile(GOOD)) == []
    bad = GOOD.replace(*change)
    assert bad != GOOD
    problems = rule_violations(parse_dockerfile(bad))
    assert any(expected in p for p in problems), problems


def test_base_image_is_a_cuda_runtime_with_a_torch_pyproject_allows(stages: list[Stage]) -> None:
    base = stages[-1].image
    m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn(\d+)-runtime", base)
    assert m, f"{base}: expected a pinned pytorch/pytorch:<torch>-cuda<x.y>-cudnn<n>-runtime tag"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert torch_req.specifier.contains(m.group(1)), f"torch {m.group(1)} in {base} is outside {torch_req}"
    assert stages[0].image == base, "builder and runtime should share the base (one pull, same Python)"


def test_final_stage_installs_the_wheel_and_keeps_the_base_torch(stages: list[Stage]) -> None:
    final = stages[-1]
    assert len(stages) >= 2, "multi-stage: the wheel is built in a builder stage"
    (build,) = [i.args for i in stages[0].all("RUN") if "pip wheel" in i.args]
    assert re.search(r'"setuptools==[\d.]+"', build) and "--no-build-isolation" in build, (
        "pinned build backend"
    )
    builders = {s.alias for s in stages[:-1]}
    froms = [i.flags_and_rest()[0].get("from") for i in final.all("COPY")]
    assert any(f in builders for f in froms), "the final stage copies the wheel from the builder"
    installs = [i.args for i in final.all("RUN") if "pip install" in i.args]
    assert any(".whl" in a for a in installs), "the final stage installs the wheel"
    for a in installs:
        assert "--no-deps" in a or ("--constraint" in a and "torch.__version__" in a), (
            f"{a}: pip must be constrained to the base image's torch, or it may replace the CUDA build"
        )
    # Only what serving needs: no sources, tests or dev files copied from the context into the final stage.
    for src, _ in copy_sources(final):
        assert src.rstrip("/") in {"models", "docker/healthcheck.py"}, f"final stage copies {src}"


def test_runtime_settings_come_from_the_environment(stages: list[Stage]) -> None:
    final = stages[-1]
    env = final.env()
    assert env["MADE_HOST"] == "0.0.0.0"
    fields = set(Settings.model_fields)
    made = {k for k in env if k.startswith("MADE_")}
    assert made <= {f"MADE_{f.upper()}" for f in fields}, f"unknown settings: {made}"
    assert int(env["MADE_PORT"]) in {
        int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.args.split()
    }
    # The committed models are baked in where MADE_MODEL_DIR points (a volume there replaces them).
    dests = {dst.rstrip("/"): src.rstrip("/") for src, dst in copy_sources(final)}
    assert dests.get(env["MADE_MODEL_DIR"].rstrip("/")) == "models"


def test_healthcheck_runs_the_shipped_probe(stages: list[Stage]) -> None:
    final = stages[-1]
    check = final.all("HEALTHCHECK")[-1].exec_form()
    assert check is not None and check[0] == "python"
    dests = {dst: src for src, dst in copy_sources(final)}
    assert dests.get(check[1]) == "docker/healthcheck.py"
    flags, _ = final.all("HEALTHCHECK")[-1].flags_and_rest()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)


def test_dockerignore_keeps_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    ignore = (REPO / ".dockerignore").read_text()
    for stage in stages:
        for src, _ in copy_sources(stage):
            path = REPO / src
            assert path.exists(), f"COPY {src}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if "__pycache__" not in p.parts]
            for f in [path, *files]:
                rel = f.relative_to(REPO).as_posix()
                assert not dockerignore_excludes(ignore, rel), (
                    f"{rel} is copied but .dockerignore leaves it out"
                )
    for rel in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/deploy/conftest.py",
        "runs/x",
        "service/__pycache__/a.pyc",
    ]:
        assert dockerignore_excludes(ignore, rel), f"{rel} should not be sent to the Docker daemon"


def test_dockerignore_matcher() -> None:
    rules = "*\n!service/\n**/__pycache__\n!keep.md\n"
    assert dockerignore_excludes(rules, "other.txt")
    assert not dockerignore_excludes(rules, "service/api/app.py")
    assert dockerignore_excludes(rules, "service/api/__pycache__/app.cpython-311.pyc")
    assert not dockerignore_excludes(rules, "keep.md")
