"""The published OpenAPI document, made to say what the service really answers, and the docs pages that
show it without internet.

FastAPI documents request validation errors as ``application/json`` ``HTTPValidationError``; this service
answers every error as RFC 9457 ``application/problem+json``. Every 422 is rewritten to the problem
schema, and every route guarded by the API key (it takes an ``X-API-Key`` header) documents its 401, so
clients and the schema-driven fuzz tests see the real contract. The limits the app was built with
(``MADE_MAX_SAMPLES_PER_REQUEST``, ``MADE_MAX_INPUTS_PER_REQUEST``, ``MADE_MAX_IMAGES_PER_REQUEST``) are
written into the schema as ``maximum`` and ``maxItems``.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts from the app itself: the files ship in the
``fastapi-offline`` package (part of ``made-service[server]``), not from a public CDN.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from .errors import PROBLEM_JSON
from .schemas import Problem

__all__ = [
    "DOCS_ASSETS",
    "DOCS_CSP",
    "docs_assets_dir",
    "fix_error_responses",
    "install_docs",
    "install_openapi_fixups",
    "operation_id",
    "set_limits",
]

_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
DOCS_ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's scripts, style sheet and icon
# The docs pages may load from this origin only (their inline set-up, data: and blob: URLs included): the
# browser refuses anything else before it leaves the machine, such as the logo ReDoc draws from its CDN.
DOCS_CSP = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; base-uri 'self'; form-action 'self'"

_PROBLEM_EXAMPLE = {
    "type": "about:blank",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "body.n: at most 64 samples per request",
    "instance": "/sample",
    "errors": [{"field": "body.n", "message": "at most 64 samples per request", "input": 1000}],
}


def operation_id(route: APIRoute) -> str:
    """A stable operation id for a route without its own: its function's name in camelCase
    (``list_models`` -> ``listModels``), instead of FastAPI's ``list_models_models_get``."""
    head, *rest = route.name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}}}


def fix_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` in place: 422s as problems (with an example), 401 on key-guarded routes,
    unused FastAPI error components dropped."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            r422 = responses.get("422")
            if r422 is not None and PROBLEM_JSON not in r422.get("content", {}):
                responses["422"] = _problem("Invalid field: the body names it, the limit and what came.")
            if "422" in responses:
                responses["422"]["content"][PROBLEM_JSON].setdefault("example", _PROBLEM_EXAMPLE)
            headers = {p.get("name", "").lower() for p in op.get("parameters", []) if p.get("in") == "header"}
            if "x-api-key" in headers and "401" not in responses:
                responses["401"] = _problem("Missing or wrong X-API-Key.")
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths", {}))
    for name in _FASTAPI_ERROR_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            components.pop(name, None)
    return schema


def _option_schemas(op: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every schema of option ``name`` in an operation: the request bodies' properties, the query."""
    found = []
    for media in op.get("requestBody", {}).get("content", {}).values():
        prop = media.get("schema", {}).get("properties", {}).get(name)
        if prop is not None:
            found.append(prop)
    found += [p["schema"] for p in op.get("parameters", []) if p.get("name") == name and "schema" in p]
    return found


def _bounded_branches(prop: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The branches of ``prop`` (itself, or its ``anyOf`` choices) that take the bound ``key``: arrays
    for ``maxItems``, numbers for ``maximum``."""
    kinds = ("array",) if key == "maxItems" else ("integer", "number")
    options = prop.get("anyOf", [prop])
    return [s for s in options if s.get("type") in kinds]


def set_limits(schema: dict[str, Any], limits: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """Write ``{path: {option: {"maximum" | "maxItems": value}}}`` into every place the POST ``path``
    takes that option (JSON body, multipart form, query string)."""
    for path, options in limits.items():
        op = schema.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        for name, bounds in options.items():
            for prop in _option_schemas(op, name):
                for key, value in bounds.items():
                    for branch in _bounded_branches(prop, key):
                        branch[key] = value
    return schema


def _limits(app: FastAPI) -> dict[str, dict[str, dict[str, int]]]:
    settings = app.state.settings
    rows = app.state.registry.max_rows()  # MADE_MAX_SAMPLES_PER_REQUEST, capped by what an engine holds
    return {
        "/sample": {"n": {"maximum": rows}},
        "/complete": {"n": {"maximum": rows}},
        "/log-prob": {
            "inputs": {"maxItems": settings.max_inputs_per_request},
            "files": {"maxItems": settings.max_images_per_request},
        },
    }


def install_openapi_fixups(app: FastAPI) -> None:
    """Generate the app's OpenAPI document once, with :func:`fix_error_responses` applied and the
    configured limits written in as schema bounds."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # a copy: FastAPI shares the routes' openapi_extra dicts between apps built in one process
            schema = copy.deepcopy(generate())
            app.openapi_schema = set_limits(fix_error_responses(schema), _limits(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def docs_assets_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's files, as shipped by the ``fastapi-offline`` package."""
    import fastapi_offline  # the [server] extra; imported here so the app module loads without it

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc``, every file they load served by the app under
    :data:`DOCS_ASSETS` (build the app with ``docs_url=None, redoc_url=None``)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets_dir()), name="docs-assets")
    title = app.title

    def assets(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + DOCS_ASSETS

    def openapi_url(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + (app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = assets(request)
        page = get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}/swagger-ui.css",
            swagger_favicon_url=f"{base}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from a public validator
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = assets(request)
        page = get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{title} - ReDoc",
            redoc_js_url=f"{base}/redoc.standalone.js",
            redoc_favicon_url=f"{base}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page
