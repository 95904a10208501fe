"""POST /sample: fresh samples from a model, as JSON images or a PNG grid."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..bodies import JSON, media_type, read_json, run_cancellable
from ..deps import API_KEY_PARAMETER, check_api_key
from ..errors import invalid
from ..options import no_query, query_items
from ..render import check_scale, new_seed, sample_response
from ..schemas import SAMPLE_EXAMPLE, SampleRequest, SampleResponse, json_or_png, problem_responses

router = APIRouter(tags=["inference"])


@router.post(
    "/sample",
    operation_id="sample",
    summary="Draw samples",
    description=(
        "Draws `n` images. The same model, `n`, `seed` and `temperature` always give the same images; without "
        "a seed the server picks one and returns it (`seed` in JSON, header X-Seed for PNG). `temperature` "
        "(default 1) below 1 gives sharper images, above 1 more varied ones; 0 takes the most probable value "
        "of each pixel (the same images whatever the seed). `log_prob` is the model's own either way."
    ),
    response_model=SampleResponse,
    responses={
        **json_or_png(
            "Samples as JSON, or a PNG grid (format=png).",
            SAMPLE_EXAMPLE,
            "X-Seed",
            "X-Model",
            "X-Temperature",
        ),
        **problem_responses(401, 404, 413, 415, 422, 503, 504),
    },
    openapi_extra={
        "parameters": [API_KEY_PARAMETER],
        "requestBody": {"required": True, "content": {JSON: {"schema": SampleRequest.model_json_schema()}}},
    },
)
async def sample(request: Request) -> Response:
    check_api_key(request)
    media_type(request, (JSON,))
    no_query(query_items(request), "/sample")
    body = await read_json(request, SampleRequest)
    registry = request.app.state.registry
    entry = registry.get(body.model)
    if body.n > registry.max_rows():
        raise invalid("body.n", f"at most {registry.max_rows()} samples per request", body.n)
    check_scale(body.scale, body.format, "body.scale")
    seed = new_seed() if body.seed is None else body.seed
    out = await run_cancellable(request, entry.engine.sample(body.n, seed, temperature=body.temperature))
    return await sample_response(
        entry, out.x, out.log_prob, out.seed, body.format, scale=body.scale, temperature=body.temperature
    )
