"""POST /complete: keep the top rows of one image and draw the rest, n times."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import inputs
from ..bodies import JSON, MULTIPART, media_type, read_json, read_uploads, run_cancellable
from ..deps import API_KEY_PARAMETER, check_api_key
from ..errors import invalid
from ..offload import run_cpu
from ..options import CompleteUploadOptions, no_query, parse_options, query_items, upload_route_openapi
from ..render import check_scale, new_seed, sample_response
from ..schemas import COMPLETE_EXAMPLE, CompleteRequest, SampleResponse, json_or_png, problem_responses

router = APIRouter(tags=["inference"])

_OPENAPI = upload_route_openapi(
    CompleteRequest,
    CompleteUploadOptions,
    {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "One image (PNG, JPEG, BMP, GIF, WebP).",
        },
    },
    API_KEY_PARAMETER,
)


@router.post(
    "/complete",
    operation_id="complete",
    summary="Complete the bottom of an image",
    description=(
        "Keeps the top `known_rows` rows (default: half) of one image exactly and draws the rest `n` times "
        "from the model's conditional. JSON body (`inputs`: one image) or a multipart upload (field `file`, "
        "options in the query string or as form fields). A model whose ordering does not start with those "
        "rows rejects `known_rows` (422). An image of the wrong size is rejected unless `resize=true`. "
        "`temperature` (default 1) tempers each drawn pixel's distribution; 0 takes the most probable value "
        "(the same completion whatever the seed). `log_prob` is the model's own either way."
    ),
    response_model=SampleResponse,
    responses={
        **json_or_png(
            "Completions as JSON, or a PNG of the input beside them (format=png).",
            COMPLETE_EXAMPLE,
            "X-Seed",
            "X-Model",
            "X-Known-Rows",
            "X-Temperature",
        ),
        **problem_responses(400, 401, 404, 413, 415, 422, 503, 504),
    },
    openapi_extra=_OPENAPI,
)
async def complete(request: Request) -> Response:
    check_api_key(request)
    settings, registry = request.app.state.settings, request.app.state.registry
    kind = media_type(request, (JSON, MULTIPART))
    query = query_items(request)
    if kind == JSON:
        no_query(query, "/complete with a JSON body")
        body = await read_json(request, CompleteRequest)
        entry = registry.get(body.model)
        n, seed, known_rows, format, scale = body.n, body.seed, body.known_rows, body.format, body.scale
        temperature = body.temperature
        where = scale_at = "body."
    else:
        parse_options(CompleteUploadOptions, query)  # bad query options fail before the upload is read
        files, fields = await read_uploads(request, "file", 1)
        opts = parse_options(CompleteUploadOptions, query, fields)
        entry = registry.get(opts.model)
        n, seed, known_rows, format, scale = opts.n, opts.seed, opts.known_rows, opts.format, opts.scale
        temperature = opts.temperature
        where = "form." if any(k == "n" for k, _ in fields) else "query."
        scale_at = "form." if any(k == "scale" for k, _ in fields) else "query."
    # Cheap checks first, before any image is decoded: limits, then whether the engine would refuse.
    if n > registry.max_rows():
        raise invalid(f"{where}n", f"at most {registry.max_rows()} completions per request", n)
    entry.engine.check_capacity(n)
    check_scale(scale, format, f"{scale_at}scale")
    rows, n_known = inputs.known_rows_to_n_known(entry, known_rows, f"{where}known_rows")
    if kind == JSON:
        x = await run_cpu(
            inputs.from_json,
            body.inputs,
            entry,
            "body.inputs",
            body.resize,
            inputs.may_hold_booleans(raw := await request.body()),  # read already: cached
            size=len(raw),
        )
    else:
        x = await inputs.decode_uploads(
            files, entry, settings, threshold=opts.threshold, invert=opts.invert, resize=opts.resize
        )
    seed = new_seed() if seed is None else seed
    known = x[0]
    out = await run_cancellable(
        request, entry.engine.complete(known, n_known, n, seed, temperature=temperature)
    )
    return await sample_response(
        entry,
        out.x,
        out.log_prob,
        out.seed,
        format,
        known=known,
        known_rows=rows,
        scale=scale,
        temperature=temperature,
    )
