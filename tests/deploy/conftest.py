"""Shared paths and parsed files for the deployment checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from .dockerfile import Stage, parse_dockerfile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stages() -> list[Stage]:
    """The project Dockerfile, parsed."""
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def cpu_stages() -> list[Stage]:
    """The CPU image's Dockerfile (slim Python, CPU build of torch), parsed."""
    return parse_dockerfile((REPO / "docker" / "Dockerfile.cpu").read_text())


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
