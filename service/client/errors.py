"""Client errors: an HTTP error answer becomes :class:`ApiError`, carrying the RFC 9457 problem."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ApiError", "MadeClientError"]


class MadeClientError(Exception):
    """Base class of the errors the client raises itself (network errors stay ``httpx`` errors)."""


class ApiError(MadeClientError):
    """The service answered with an error status; ``problem`` is its ``application/problem+json`` body
    (or a stand-in built from the status line when the body is not one)."""

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers | None = None) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers or httpx.Headers()
        super().__init__(f"{status} {self.title}: {self.detail}")

    @property
    def title(self) -> str:
        return str(self.problem.get("title", "Error"))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def type(self) -> str:
        return str(self.problem.get("type", "about:blank"))

    @property
    def errors(self) -> list[dict[str, Any]]:
        """One entry per invalid field: ``{"field", "message", "input"?}``."""
        return list(self.problem.get("errors") or [])

    @property
    def fields(self) -> list[str]:
        return [str(e.get("field")) for e in self.errors]

    @classmethod
    def from_response(cls, r: httpx.Response) -> ApiError:
        problem: dict[str, Any] | None = None
        try:
            body = r.json()
            if isinstance(body, dict):
                problem = body
        except ValueError:
            pass
        if problem is None:
            problem = {"title": r.reason_phrase or "Error", "status": r.status_code, "detail": r.text[:500]}
        return cls(r.status_code, problem, r.headers)
