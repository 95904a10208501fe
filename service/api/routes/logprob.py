"""POST /log-prob: exact log-likelihood of JSON inputs or uploaded images, optionally per pixel."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import codecs, inputs
from ..bodies import JSON, MULTIPART, media_type, read_json, read_uploads, run_cancellable
from ..deps import RegistryDep, SettingsDep
from ..errors import invalid
from ..schemas import Format, LogProbRequest, LogProbResponse, problem_responses

router = APIRouter(tags=["inference"])

_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more images (PNG, JPEG, BMP, GIF, WebP); options go in the query string.",
        }
    },
}

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": LogProbRequest.model_json_schema()},
            MULTIPART: {"schema": _UPLOAD_SCHEMA},
        },
    }
}


@router.post(
    "/log-prob",
    summary="Exact log-likelihood of images",
    description=(
        "JSON body (`inputs`: images as nested lists or flat vectors) or a multipart upload of image files "
        "(field `files`; converted to gray and, for binary models, set to 1 where gray >= `threshold`). "
        "Query parameters apply to uploads only. `format=png` with one input returns a heat map of per-pixel "
        "surprise -log p(x_d | x_<d) (black = 0 nats, brightest = the value in header X-Heatmap-Max-Nats)."
    ),
    response_model=LogProbResponse,
    responses={
        200: {"content": {"image/png": {}}},
        **problem_responses(400, 401, 404, 413, 415, 422, 503, 504),
    },
    openapi_extra=_BODY,
)
async def log_prob(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    model: Annotated[
        str | None, Query(description="Uploads: model name (default model when omitted).")
    ] = None,
    per_dim: Annotated[bool, Query(description="Uploads: also return per-pixel log-probabilities.")] = False,
    format: Annotated[Format, Query(description="Uploads: json or png (heat map, one image).")] = "json",
    threshold: Annotated[
        int | None,
        Query(
            ge=0,
            le=255,
            description="Uploads to binary models: gray level counted as 1 "
            "(default MADE_BINARIZE_THRESHOLD).",
        ),
    ] = None,
    invert: Annotated[
        bool, Query(description="Uploads: invert gray levels first (dark ink on white).")
    ] = False,
    resize: Annotated[bool, Query(description="Uploads: fit images of another size to the model's.")] = False,
) -> Response | LogProbResponse:
    kind = media_type(request, (JSON, MULTIPART))
    if kind == JSON:
        body = await read_json(request, LogProbRequest)
        entry = registry.get(body.model)
        if len(body.inputs) > settings.max_inputs_per_request:
            raise invalid(
                "body.inputs",
                f"at most {settings.max_inputs_per_request} inputs per request, got {len(body.inputs)}",
            )
        x = await run_in_threadpool(inputs.from_json, body.inputs, entry, "body.inputs", body.resize)
        per_dim, format = body.per_dim, body.format
    else:
        entry = registry.get(model)
        files = await read_uploads(request, "files", settings.max_images_per_request)
        x = await inputs.decode_uploads(
            files, entry, settings, threshold=threshold, invert=invert, resize=resize
        )
    if format == "png" and x.shape[0] != 1:
        raise invalid("format", f"png (a heat map) needs exactly one input, got {x.shape[0]}")
    want_per_dim = per_dim or format == "png"
    if want_per_dim and not entry.per_dim_available:
        raise invalid(
            "per_dim", f"model {entry.name!r} has masks with different orderings: no per-pixel values"
        )
    out = await run_cancellable(request, entry.engine.log_prob(x, per_dim=want_per_dim))
    lp = np.asarray(out.log_prob, dtype=np.float64)
    bpd = -lp / (entry.data_dim * math.log(2.0))
    if format == "png":
        assert out.per_dim is not None
        png, top = codecs.encode_heatmap(out.per_dim[0].reshape(entry.grid_shape))
        headers = {
            "X-Model": entry.name,
            "X-Log-Prob": f"{lp[0]:.6f}",
            "X-Bits-Per-Dim": f"{bpd[0]:.6f}",
            "X-Heatmap-Max-Nats": f"{top:.6f}",
        }
        return Response(png, media_type="image/png", headers=headers)
    return LogProbResponse(
        model=entry.name,
        log_prob=lp.tolist(),
        bits_per_dim=bpd.tolist(),
        log_prob_per_dim=out.per_dim.tolist() if per_dim and out.per_dim is not None else None,
    )
