"""Start-up settings: a bad one ends ``python -m service serve`` with one clear line and a non-zero exit
(no traceback); the CPU kernel's thread count is a setting whose default is the container's CPU share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cpu import available_cpus, cgroup_cpu_limit

from .conftest import REPO


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MADE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", *args],
        cwd=REPO,
        env={**clean, "MADE_MODEL_DIR": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MADE_PORT": "abc"}, "MADE_PORT='abc'"),
        ({"MADE_PORT": "70000"}, "MADE_PORT='70000'"),
        ({"MADE_DEVICE": "gpu"}, "MADE_DEVICE='gpu'"),
        ({"MADE_KERNEL_THREADS": "0"}, "MADE_KERNEL_THREADS='0'"),
        ({"MADE_CORS_ORIGINS": "not json"}, "cors_origins"),
        ({"MADE_WORKERS": "two", "MADE_LOG_JSON": "maybe"}, "MADE_WORKERS='two'"),
    ],
)
def test_a_bad_setting_is_one_line_and_a_non_zero_exit(env: dict[str, str], named: str) -> None:
    r = serve(env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_cuda_without_a_gpu_is_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = serve({"MADE_DEVICE": "cuda"})
    assert r.returncode == 2
    assert r.stderr.strip() == "error: MADE_DEVICE=cuda but no CUDA device is available (use auto or cpu)"


def test_cgroup_quota(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(v2) == 2.5
    assert available_cpus(v2) == min(len(os.sched_getaffinity(0)), 3)
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(v2) == 1  # half a CPU still gets one thread
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 1.0 and available_cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_kernel_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.engine.runner_numba import _default_threads

    monkeypatch.delenv("MADE_KERNEL_THREADS", raising=False)
    assert _default_threads() == available_cpus()
    monkeypatch.setenv("MADE_KERNEL_THREADS", "3")
    assert _default_threads() == 3
