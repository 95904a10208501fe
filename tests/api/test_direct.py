"""Direct dispatch of the inference routes (service.api.direct): the plain routes in front serve every
inference request, through the user middleware alone (not the framework's outer layers or the router),
FastAPI's APIRoutes only document them, and a route that needs FastAPI is refused."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Router

from service.api.direct import DirectRoute, direct_routes
from service.api.routes import complete, logprob, sample

from .conftest import Api, assert_problem

pytestmark = pytest.mark.anyio

INFERENCE = {"/sample": sample.sample, "/log-prob": logprob.log_prob, "/complete": complete.complete}


def test_the_inference_routes_come_first_and_match_their_api_routes(api: Api) -> None:
    routes = api.app.router.routes
    front = routes[: len(INFERENCE)]
    assert all(isinstance(r, DirectRoute) for r in front)
    assert {r.path: r.endpoint for r in front} == INFERENCE
    assert all(r.methods == {"POST"} for r in front)


async def test_requests_reach_the_endpoint_through_the_direct_route(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = APIRoute.handle

    async def refuse(route: APIRoute, *args: object) -> None:
        assert route.path not in INFERENCE, f"FastAPI's APIRoute handled {route.path}"
        await handle(route, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(APIRoute, "handle", refuse)
    r = await api.client.post("/sample", json={"n": 1, "seed": 3})
    assert r.status_code == 200 and r.json()["seed"] == 3
    r = await api.client.post("/log-prob", json={"inputs": [[0] * 20]})
    assert r.status_code == 200
    # errors keep their problem+json form, status and metrics label
    assert_problem(await api.client.post("/sample", json={"n": 0}), 422, "body.n")
    assert_problem(await api.client.get("/complete"), 405, "GET", "POST")
    metrics = (await api.client.get("/metrics")).text
    assert 'route="/sample",status="422"' in metrics and 'route="/complete",status="405"' in metrics


async def test_inference_requests_skip_the_outer_layers_and_the_router_others_do_not(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    outer, route = ServerErrorMiddleware.__call__, Router.__call__

    async def outer_spy(self: ServerErrorMiddleware, scope: dict, *args: object) -> None:
        seen.append("outer " + scope["path"])
        await outer(self, scope, *args)  # type: ignore[arg-type]

    async def router_spy(self: Router, scope: dict, *args: object) -> None:
        seen.append("router " + scope["path"])
        await route(self, scope, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ServerErrorMiddleware, "__call__", outer_spy)
    monkeypatch.setattr(Router, "__call__", router_spy)
    r = await api.client.post("/sample", json={"n": 1, "seed": 3}, headers={"X-Request-ID": "lane-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "lane-1"
    assert_problem(await api.client.post("/log-prob", json={"inputs": [[7] * 20]}), 422, "body.inputs")
    assert seen == []  # neither the outer layers nor the router saw them
    assert_problem(await api.client.get("/sample"), 405, "GET", "POST")  # another method: the usual stack
    assert_problem(await api.client.post("/sample/", json={"n": 1}), 404)  # another path: likewise
    assert seen == ["outer /sample", "router /sample", "outer /sample/", "router /sample/"]


async def test_an_unhandled_error_in_an_inference_route_is_a_500_problem(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("/internal/path/secret")

    monkeypatch.setattr(sample, "check_api_key", broken)
    r = await api.client.post("/sample", json={"n": 1})
    assert_problem(r, 500, "internal error")
    assert "secret" not in r.text and r.headers["x-request-id"]
    metrics = (await api.client.get("/metrics")).text
    assert 'route="/sample",status="500"' in metrics


def test_the_documentation_still_lists_every_inference_route(api: Api) -> None:
    paths = api.app.openapi()["paths"]
    for path in INFERENCE:
        assert "post" in paths[path]


def key() -> str:
    return "k"


def test_a_route_that_needs_fastapi_is_refused() -> None:
    async def with_param(request: Request, n: int) -> Response:
        return Response()

    async def with_dependency(request: Request, k: Annotated[str, Depends(key)]) -> Response:
        return Response()

    async def returns_a_dict(request: Request) -> dict[str, int]:
        return {}

    async def fine(request: Request) -> Response:
        return Response()

    for endpoint in (with_param, with_dependency, returns_a_dict):
        router = APIRouter()
        router.add_api_route("/x", endpoint, methods=["POST"])
        with pytest.raises(ValueError, match="'/x'"):
            direct_routes(router)
    router = APIRouter(dependencies=[Depends(key)])
    router.add_api_route("/guarded", fine, methods=["POST"])
    with pytest.raises(ValueError, match="'/guarded'"):
        direct_routes(router)
    router = APIRouter()
    router.add_api_route("/fine", fine, methods=["POST"])
    (route,) = direct_routes(router)
    assert route.path == "/fine" and route.endpoint is fine and route.methods == {"POST"}
