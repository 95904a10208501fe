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
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectApp", "DirectRoute", "direct_routes"]


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


class _Endpoint:
    """The innermost app of the lane: the route's own ``request -> Response`` app, with the app's
    exception handlers in the scope (what Starlette's ``ExceptionMiddleware`` puts there)."""

    def __init__(self, app: FastAPI) -> None:
        by_type = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
        by_status = {k: by_type.pop(k) for k in list(by_type) if isinstance(k, int)}
        self.handlers = (by_type, by_status)  # the stack is built once every handler is installed
        self.router = app.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["starlette.exception_handlers"] = self.handlers
        scope["router"] = self.router
        await scope["route"].app(scope, receive, send)


class DirectApp(FastAPI):
    """A FastAPI app whose direct routes (:func:`direct_routes`, set in :attr:`direct`) skip the
    framework's outer layers too: a request whose method and path match one goes through the user
    middleware (request id, access log, metrics, body limit, CORS) straight to the endpoint, with
    the same exception handlers; every other request takes the usual stack. The layers skipped
    (``ServerErrorMiddleware``, whose 500 the serving middleware gives as well; FastAPI's exception
    telemetry and app body limit, unused here; ``ExceptionMiddleware``, whose handlers the lane
    applies itself; the exit stack for dependencies, which these routes have none of; the router's
    matching) each cost a coroutine frame and a wrapped ``send`` per request."""

    direct: Sequence[DirectRoute] = ()

    def build_middleware_stack(self) -> ASGIApp:
        standard = super().build_middleware_stack()
        lane: ASGIApp = _Endpoint(self)
        for cls, args, kwargs in reversed(self.user_middleware):
            lane = cls(lane, *args, **kwargs)
        table = {(m, r.path): r for r in self.direct for m in r.methods or ()}
        return _Dispatch(table, lane, standard)


class _Dispatch:
    def __init__(self, table: dict[tuple[str, str], DirectRoute], lane: ASGIApp, standard: ASGIApp) -> None:
        self.table, self.lane, self.standard = table, lane, standard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.table.get((scope["method"], get_route_path(scope)))
            if route is not None:
                scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
                await self.lane(scope, receive, send)
                return
        await self.standard(scope, receive, send)
