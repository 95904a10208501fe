"""POST /complete: keep the top rows of one image and draw the rest, n times."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import inputs
from ..bodies import JSON, MULTIPART, media_type, read_json, read_uploads, run_cancellable
from ..deps import RegistryDep, SettingsDep
from ..errors import invalid
from ..render import new_seed, sample_response
from ..schemas import MAX_SEED, CompleteRequest, Format, SampleResponse, problem_responses

router = APIRouter(tags=["inference"])

_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "One image (PNG, JPEG, BMP, GIF, WebP); options go in the query string.",
        }
    },
}


@router.post(
    "/complete",
    summary="Complete the bottom of an image",
    description=(
        "Keeps the top `known_rows` rows (default: half) of one image exactly and draws the rest `n` times "
        "from the model's conditional. JSON body (`inputs`: one image) or a multipart upload (field `file`, "
        "options in the query string). A model whose ordering does not start with those rows rejects "
        "`known_rows` (422). An image of the wrong size is rejected unless `resize=true`."
    ),
    response_model=SampleResponse,
    responses={
        200: {"content": {"image/png": {}}},
        **problem_responses(400, 401, 404, 413, 415, 422, 503, 504),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": CompleteRequest.model_json_schema()},
                MULTIPART: {"schema": _UPLOAD_SCHEMA},
            },
        }
    },
)
async def complete(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    model: Annotated[
        str | None, Query(description="Uploads: model name (default model when omitted).")
    ] = None,
    n: Annotated[int, Query(ge=1, description="Uploads: number of completions.")] = 1,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED, description="Uploads: random seed.")] = None,
    known_rows: Annotated[int | None, Query(description="Uploads: rows kept (default: top half).")] = None,
    format: Annotated[Format, Query(description="Uploads: json or png (input beside completions).")] = "json",
    threshold: Annotated[
        int | None, Query(ge=0, le=255, description="Uploads to binary models: gray level counted as 1.")
    ] = None,
    invert: Annotated[
        bool, Query(description="Uploads: invert gray levels first (dark ink on white).")
    ] = False,
    resize: Annotated[
        bool, Query(description="Uploads: fit an image of another size to the model's.")
    ] = False,
) -> Response | SampleResponse:
    kind = media_type(request, (JSON, MULTIPART))
    if kind == JSON:
        body = await read_json(request, CompleteRequest)
        entry = registry.get(body.model)
        n, seed, known_rows, format, where = body.n, body.seed, body.known_rows, body.format, "body."
    else:
        entry = registry.get(model)
        where = "query."
    # Cheap checks first, before any image is decoded.
    if n > registry.max_rows():
        raise invalid(f"{where}n", f"at most {registry.max_rows()} completions per request", n)
    rows, n_known = inputs.known_rows_to_n_known(entry, known_rows, f"{where}known_rows")
    if kind == JSON:
        x = await run_in_threadpool(inputs.from_json, body.inputs, entry, "body.inputs", body.resize)
    else:
        files = await read_uploads(request, "file", 1)
        x = await inputs.decode_uploads(
            files, entry, settings, threshold=threshold, invert=invert, resize=resize
        )
    seed = new_seed() if seed is None else seed
    known = x[0]
    out = await run_cancellable(request, entry.engine.complete(known, n_known, n, seed))
    return sample_response(entry, out.x, out.log_prob, out.seed, format, known=known, known_rows=rows)
