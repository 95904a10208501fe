"""The image's start path without Docker: the builder's wheel, installed into a fresh venv, run by CMD.

:func:`build_runtime` mirrors the Dockerfile: the builder stage's ``COPY`` sources go into a build
context and become a wheel; the wheel is installed (no deps) into a new virtual environment whose
dependencies come from the project's environment through a ``.pth`` file (the image gets them from
the base image and PyPI). :class:`Replica` starts the final stage's ``CMD`` with its ``ENV`` and
``WORKDIR``, remapped to a temporary root, and probes it with the image's ``HEALTHCHECK``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import REPO
from .dockerfile import Stage, copy_sources


@dataclass
class Runtime:
    """A fresh venv holding the wheel, and the final stage's view of the container."""

    root: Path  # stands for the container's /
    python: Path
    wheel: Path
    cmd: list[str]
    env: dict[str, str]
    workdir: Path
    healthcheck: list[str]


def in_root(root: Path, path: str) -> Path:
    """Container path -> the same path under the temporary root."""
    return root / path.lstrip("/")


def build_runtime(stages: list[Stage], root: Path) -> Runtime:
    """Build the wheel as the builder stage does, and install it as the final stage does."""
    builder, final = stages[0], stages[-1]
    ctx = root / "build-context"
    for src, _ in copy_sources(builder):
        assert (REPO / src).exists(), (
            f"Dockerfile copies {src}, which the repository lacks: docker build would fail"
        )
        target = ctx / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / src).is_dir():
            shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / src, target)
    dist = root / "dist"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ctx),
        ]
    )
    (wheel,) = dist.glob("made_service-*.whl")

    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Plain path lines: the project environment's .pth files (an editable install) are not processed.
    Path(purelib, "made-deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )

    cmd = final.all("CMD")[-1].exec_form()
    check = final.all("HEALTHCHECK")[-1].exec_form()
    assert cmd and check, "CMD and HEALTHCHECK in exec form"
    workdir = in_root(root, final.all("WORKDIR")[-1].args)
    workdir.mkdir(parents=True, exist_ok=True)
    for src, dst in copy_sources(final):  # e.g. the health probe; models are written by the test
        if (REPO / src).is_file():
            in_root(root, dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / src, in_root(root, dst))
    return Runtime(root, python, wheel, cmd, final.env(), workdir, check)


def run(cmd: list[str], **kw: object) -> str:
    """Run a build step; its output is in the assertion message when it fails."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def container_command(rt: Runtime, argv: list[str]) -> list[str]:
    """An exec-form command as the container runs it: ``python`` is the venv's, paths are remapped."""
    assert argv[0] == "python", f"{argv}: the image runs its commands with the base image's python"
    return [str(rt.python), *(str(in_root(rt.root, a)) if a.startswith("/opt/") else a for a in argv[1:])]


@dataclass
class Replica:
    """One service process started as the image starts it (own process group; logs in ``log``)."""

    rt: Runtime
    port: int
    overrides: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MADE_", "PYTHON", "NUMBA_"))}
        # Container paths in ENV (MADE_MODEL_DIR, NUMBA_CACHE_DIR) point into the temporary root.
        image_env = {
            k: str(in_root(self.rt.root, v)) if v.startswith("/") else v for k, v in self.rt.env.items()
        }
        self.env = {
            **base,
            **image_env,
            "OMP_NUM_THREADS": "1",
            "MADE_PORT": str(self.port),
            **self.overrides,
        }
        with self.log.open("wb") as f:
            self.proc = subprocess.Popen(
                container_command(self.rt, self.rt.cmd),
                cwd=self.rt.workdir,
                env=self.env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def healthy(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK command, with this replica's environment."""
        return subprocess.run(
            container_command(self.rt, self.rt.healthcheck),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def wait_ready(self, deadline: float) -> None:
        """Poll the health check until it passes; fail with the log when the process dies or time runs out."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.tail()}")
            if self.healthy().returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"not ready in time:\n{self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (as ``docker stop`` sends), SIGKILL the group if it does not exit; returns the status.

        Signals go to the group only while its leader is unreaped, so the group id is still ours.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""
