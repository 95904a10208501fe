"""Direct dispatch of the inference routes: each request reaches its endpoint through one Starlette route.

FastAPI serves a route of an included router through layers a ``request -> Response`` endpoint does not
use: the included router matches the path twice (once to pick the router, once to pick the route),
then the route solves its (empty) dependencies and checks the returned value. py-spy found 15% of the
event loop's time on ``POST /log-prob`` in that matching alone; over HTTP, direct dispatch took that
case from 1,233 to 1,534 req/s (``bench/http.py``, back to back; ``docs/serving.md``).

:func:`direct_routes` builds, from the APIRoutes themselves (path, methods and endpoint defined once,
in the route modules), plain routes that go in front of the app's routes. The APIRoutes stay: they
document the API (OpenAPI), and every other middleware, exception handler and limit applies as before.
Only endpoints that take the request alone, have no dependencies and return a ``Response`` qualify;
any other route raises, so a dependency added later cannot be silently skipped.
"""

from __future__ import annotations

import inspect

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, APIRouter
from starlette.routing import Match, Route
from starlette.types import Scope

__all__ = ["DirectRoute", "direct_routes"]


class DirectRoute(Route):
    """A Starlette route that also records itself as the scope's ``route`` (its template labels the
    request's metrics and access line, as FastAPI's routes do)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _takes_request_only(route: APIRoute) -> bool:
    sig = inspect.signature(route.endpoint, eval_str=True)
    params = list(sig.parameters.values())
    returns = sig.return_annotation
    return (
        len(params) == 1
        and params[0].annotation is Request
        and not route.dependencies
        and not route.dependant.dependencies
        and inspect.isclass(returns)
        and issubclass(returns, Response)
    )


def direct_routes(router: APIRouter) -> list[DirectRoute]:
    """One :class:`DirectRoute` per APIRoute of ``router``; ``ValueError`` for a route that needs
    FastAPI's handling (parameters other than the request, dependencies, a non-Response return)."""
    out = []
    for route in router.routes:
        if not isinstance(route, APIRoute) or not _takes_request_only(route):
            raise ValueError(f"route {getattr(route, 'path', route)!r} cannot be dispatched directly")
        out.append(DirectRoute(route.path, route.endpoint, methods=sorted(route.methods), name=route.name))
    return out
