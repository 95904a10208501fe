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


def stage_args(stage: Stage) -> dict[str, str]:
    """The stage's ``ARG`` defaults (quotes removed)."""
    out = {}
    for ins in stage.all("ARG"):
        name, _, value = ins.args.partition("=")
        out[name.strip()] = value.strip().strip('"')
    return out


def makefile_torch() -> str:
    """The torch version the tests run: the Makefile's ``TORCH_PIN``."""
    m = re.search(r"^TORCH_PIN \?= torch==([\d.]+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile: TORCH_PIN ?= torch==X.Y.Z"
    return m.group(1)


def test_images_run_the_torch_the_tests_run(stages: list[Stage], cpu_stages: list[Stage]) -> None:
    """Both images: a pinned slim Python base, torch pinned to the Makefile's TORCH_PIN (which pyproject's
    [server] extra allows); the GPU image takes PyPI's (CUDA) build, the CPU image PyTorch's CPU index."""
    version = makefile_torch()
    server = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "server"
    ]
    torch_req = next(Requirement(d) for d in server if Requirement(d).name == "torch")
    assert torch_req.specifier.contains(version), f"torch {version} is outside [server]'s {torch_req}"
    for st, index in ((stages, ""), (cpu_stages, "--index-url https://download.pytorch.org/whl/cpu")):
        base = st[-1].image
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-\w+", base), f"{base}: a pinned slim Python base"
        assert st[0].image == base, "builder and runtime share the base (one pull, same Python)"
        args = stage_args(st[-1])
        assert args["TORCH_VERSION"] == version, f"image torch {args['TORCH_VERSION']}, tests {version}"
        assert args["TORCH_INDEX"] == index
        assert any('"torch==${TORCH_VERSION}"' in i.args for i in st[-1].all("RUN"))
    assert stages[-1].image == cpu_stages[-1].image


def test_cpu_image_is_the_gpu_image_with_the_cpu_torch(stages: list[Stage], cpu_stages: list[Stage]) -> None:
    """Same steps in the same order; only the torch index and the default device differ."""

    def steps(st: list[Stage]) -> list[list[tuple[str, str]]]:
        return [
            [
                (i.keyword, i.args)
                for i in s.instructions
                if not (i.keyword == "ARG" and i.args.startswith("TORCH_INDEX"))
            ]
            for s in st
        ]

    gpu, cpu = steps(stages), steps(cpu_stages)
    assert [len(s) for s in gpu] == [len(s) for s in cpu]
    for a, b in zip(gpu, cpu, strict=True):
        diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert all(x[0] == "ENV" and "MADE_DEVICE" in x[1] for x, _ in diff), diff
    assert stages[-1].env()["MADE_DEVICE"] == "auto" and cpu_stages[-1].env()["MADE_DEVICE"] == "cpu"


@pytest.mark.parametrize("which", ["gpu", "cpu"])
def test_final_stage_installs_the_wheel_and_keeps_its_torch(
    which: str, stages: list[Stage], cpu_stages: list[Stage]
) -> None:
    stages = stages if which == "gpu" else cpu_stages
    assert rule_violations(stages) == []
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
    assert '"torch==${TORCH_VERSION}"' in installs[0], "torch is installed first, pinned"
    for a in installs[1:]:
        assert "--no-deps" in a or ("--constraint" in a and "torch.__version__" in a), (
            f"{a}: pip must be constrained to the installed torch, or it may replace that build"
        )
    # Only what serving needs: no sources, tests or dev files copied from the context into the final stage.
    for src, _ in copy_sources(final):
        assert src.rstrip("/") in {"models", "docker/healthcheck.py"}, f"final stage copies {src}"


@pytest.mark.parametrize("which", ["gpu", "cpu"])
def test_runtime_settings_come_from_the_environment(
    which: str, stages: list[Stage], cpu_stages: list[Stage]
) -> None:
    final = (stages if which == "gpu" else cpu_stages)[-1]
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


def test_dockerignore_keeps_what_the_dockerfile_copies(stages: list[Stage], cpu_stages: list[Stage]) -> None:
    ignore = (REPO / ".dockerignore").read_text()
    for stage in [*stages, *cpu_stages]:
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
