"""Direct dispatch of the inference routes (service.api.direct): the plain routes in front serve every
inference request, FastAPI's APIRoutes only document them, and a route that needs FastAPI is refused."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

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
