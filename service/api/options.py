"""Options of upload requests, read from the query string and from multipart form fields alike.

Each upload route declares its options once, as a pydantic model; the same model validates what
came (query values and form fields are text: ``"4"`` -> 4, ``"true"`` -> True), and documents the
query parameters and the multipart form in the OpenAPI document. Nothing a client sends is dropped
silently: an unknown option, one given twice, or one given in both places with different values is a
422 naming it, and a JSON route refuses query parameters (its options go in the body).

Parsing here replaces FastAPI's per-parameter dependency solving on the hot routes (measured in
``bench/http.py``): one ``model_validate`` per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import invalid
from .schemas import MAX_PNG_SCALE, MAX_SEED, TEMPERATURE_DOC, Format, Temperature

__all__ = [
    "CompleteUploadOptions",
    "LogProbUploadOptions",
    "form_properties",
    "no_query",
    "parse_options",
    "query_items",
    "query_parameters",
    "upload_route_openapi",
]

M = TypeVar("M", bound=BaseModel)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model name (the default model when omitted).")
    format: Format = Field("json", description="json, or png (see the route).")
    threshold: int | None = Field(
        None,
        ge=0,
        le=255,
        description="Binary models: gray level counted as 1 (default MADE_BINARIZE_THRESHOLD).",
    )
    invert: bool = Field(False, description="Invert gray levels first (dark ink on white).")
    resize: bool = Field(
        False,
        description="Fit images of another size to the model's (Lanczos, reduced by whole factors first).",
    )
    scale: int = Field(
        1, ge=1, le=MAX_PNG_SCALE, description="format=png only: each pixel drawn as a scale x scale block."
    )


class LogProbUploadOptions(_Options):
    """``POST /log-prob`` with image files."""

    per_dim: bool = Field(False, description="Also return per-pixel log-probabilities.")


class CompleteUploadOptions(_Options):
    """``POST /complete`` with one image file."""

    n: int = Field(1, ge=1, description="Number of completions (at most MADE_MAX_SAMPLES_PER_REQUEST).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed (the server picks one).")
    temperature: Temperature = Field(1.0, description=TEMPERATURE_DOC)
    known_rows: int | None = Field(None, ge=0, description="Rows kept from the input (default: top half).")


def _merge(query: Iterable[tuple[str, str]], form: Iterable[tuple[str, str]]) -> dict[str, str]:
    """One value per option; the same option twice, or differing between query and form, is a 422."""
    values: dict[str, str] = {}
    where: dict[str, str] = {}
    for place, items in (("query", query), ("form", form)):
        for key, value in items:
            if key not in values:
                values[key], where[key] = value, place
                continue
            if where[key] == place:
                raise invalid(f"{place}.{key}", "given more than once; send each option once", value)
            if values[key] != value:
                raise invalid(
                    f"{place}.{key}",
                    f"conflicts with query.{key}={values[key]!r}; send it in one place",
                    value,
                )
    return values


def parse_options(
    schema: type[M], query: Iterable[tuple[str, str]], form: Iterable[tuple[str, str]] = ()
) -> M:
    """Validate the options sent as query parameters and multipart form fields against ``schema``."""
    query, form = list(query), list(form)
    values = _merge(query, form)
    if not values:
        return schema()
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        in_form = {k for k, _ in form}
        errors = []
        for err in e.errors(include_url=False):
            loc = err.get("loc", ())
            key = str(loc[0]) if loc else ""
            place = "form" if key in in_form else "query"
            if err.get("type") == "extra_forbidden":
                known = ", ".join(schema.model_fields)
                err = {**err, "msg": f"unknown option; this route takes {known}"}
            errors.append({**err, "loc": (place, *loc)})
        raise RequestValidationError(errors) from None


def query_items(request: Request) -> list[tuple[str, str]]:
    """The query's ``(name, value)`` pairs; none parsed when there is no query (the usual JSON request:
    Starlette's parser costs about 4 us even for an empty one)."""
    return request.query_params.multi_items() if request.scope.get("query_string") else []


def no_query(query: Iterable[tuple[str, str]], route: str) -> None:
    """JSON routes take their options in the body: a query parameter would be ignored, so it is a 422."""
    for key, value in query:
        raise invalid(f"query.{key}", f"{route} takes its options in the JSON body, not the query", value)


def _properties(schema: type[BaseModel]) -> dict[str, Any]:
    props = schema.model_json_schema()["properties"]
    for p in props.values():
        p.pop("title", None)
    return props


def query_parameters(schema: type[BaseModel], note: str) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` (in the query) for every option of ``schema``."""
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"{note}{prop.get('description', '')}",
            "schema": {k: v for k, v in prop.items() if k != "description"},
        }
        for name, prop in _properties(schema).items()
    ]


def form_properties(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI multipart form properties for every option of ``schema``."""
    return _properties(schema)


def upload_route_openapi(
    body: type[BaseModel], options: type[BaseModel], files: dict[str, Any], api_key: dict[str, Any]
) -> dict[str, Any]:
    """``openapi_extra`` of a route taking a JSON ``body`` or a multipart upload: ``files`` (the file
    field's name and schema) plus ``options`` as form fields, the same options as query parameters,
    and the ``api_key`` header."""
    upload = {
        "type": "object",
        "required": list(files),
        "properties": {**files, **form_properties(options)},
        "additionalProperties": False,
    }
    return {
        "parameters": [api_key, *query_parameters(options, "Uploads only (or as a form field): ")],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": body.model_json_schema()},
                "multipart/form-data": {"schema": upload},
            },
        },
    }
