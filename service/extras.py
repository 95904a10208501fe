"""Which optional parts of the package are installed: ``pip install made-service`` is the client and the
``made`` command against a URL; ``[server]`` adds serving, ``[train]`` training and evaluation.

A command that needs a missing extra says which one to install instead of failing on an import.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "missing_modules", "require"]

# The modules each extra brings that the code imports (import names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": (
        "torch",
        "numba",
        "safetensors",
        "pydantic_settings",
        "fastapi",
        "uvicorn",
        "orjson",
        "multipart",
        "prometheus_client",
    ),
    "train": ("torch", "safetensors"),
}


class MissingExtraError(RuntimeError):
    """A command needs an optional part of the package that is not installed."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when ``what`` cannot run here."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(
            f"{what} needs the {extra!r} extra ({', '.join(missing)} not installed): "
            f"pip install 'made-service[{extra}]'"
        )
