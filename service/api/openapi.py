"""The published OpenAPI document, made to say what the service really answers.

FastAPI documents request validation errors as ``application/json`` ``HTTPValidationError``; this service
answers every error as RFC 9457 ``application/problem+json``. Every 422 is rewritten to the problem
schema, and every route guarded by the API key (it takes an ``X-API-Key`` header) documents its 401, so
clients and the schema-driven fuzz tests see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .errors import PROBLEM_JSON
from .schemas import Problem

__all__ = ["install_openapi_fixups"]

_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}}}


def fix_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` in place: 422s as problems, 401 on key-guarded routes, unused FastAPI error
    components dropped."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            r422 = responses.get("422")
            if r422 is not None and PROBLEM_JSON not in r422.get("content", {}):
                responses["422"] = _problem("Invalid field: the body names it, the limit and what came.")
            headers = {p.get("name", "").lower() for p in op.get("parameters", []) if p.get("in") == "header"}
            if "x-api-key" in headers and "401" not in responses:
                responses["401"] = _problem("Missing or wrong X-API-Key.")
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths", {}))
    for name in _FASTAPI_ERROR_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            components.pop(name, None)
    return schema


def install_openapi_fixups(app: FastAPI) -> None:
    """Generate the app's OpenAPI document once, with :func:`fix_error_responses` applied."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = fix_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
