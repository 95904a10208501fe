"""POST /log-prob: exact log-likelihood of JSON inputs or uploaded images, optionally per pixel."""

from __future__ import annotations

import math

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import codecs, inputs
from ..bodies import JSON, MULTIPART, media_type, read_json, read_uploads, run_cancellable
from ..deps import API_KEY_PARAMETER, check_api_key
from ..errors import invalid
from ..offload import run_cpu
from ..options import LogProbUploadOptions, no_query, parse_options, query_items, upload_route_openapi
from ..render import check_scale, json_response
from ..schemas import LOG_PROB_EXAMPLE, LogProbRequest, LogProbResponse, json_or_png, problem_responses

router = APIRouter(tags=["inference"])

_OPENAPI = upload_route_openapi(
    LogProbRequest,
    LogProbUploadOptions,
    {
        "files": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "format": "binary"},
            "description": "One or more images (PNG, JPEG, BMP, GIF, WebP).",
        },
    },
    API_KEY_PARAMETER,
)


@router.post(
    "/log-prob",
    operation_id="logProb",
    summary="Exact log-likelihood of images",
    description=(
        "JSON body (`inputs`: images as nested lists or flat vectors) or a multipart upload of image files "
        "(field `files`; converted to gray and, for binary models, set to 1 where gray >= `threshold`). "
        "Upload options go in the query string or as form fields; a JSON body carries its own. "
        "`format=png` with one input returns a heat map of per-pixel surprise -log p(x_d | x_<d) "
        "(black = 0 nats, brightest = the value in header X-Heatmap-Max-Nats)."
    ),
    response_model=LogProbResponse,
    responses={
        **json_or_png(
            "Log-likelihoods as JSON, or a heat map PNG of one input (format=png).",
            LOG_PROB_EXAMPLE,
            "X-Model",
            "X-Log-Prob",
            "X-Bits-Per-Dim",
            "X-Heatmap-Max-Nats",
        ),
        **problem_responses(400, 401, 404, 413, 415, 422, 503, 504),
    },
    openapi_extra=_OPENAPI,
)
async def log_prob(request: Request) -> Response:
    check_api_key(request)
    settings, registry = request.app.state.settings, request.app.state.registry
    kind = media_type(request, (JSON, MULTIPART))
    query = query_items(request)
    if kind == JSON:
        no_query(query, "/log-prob with a JSON body")
        body = await read_json(request, LogProbRequest)
        entry = registry.get(body.model)
        if len(body.inputs) > settings.max_inputs_per_request:
            raise invalid(
                "body.inputs",
                f"at most {settings.max_inputs_per_request} inputs per request, got {len(body.inputs)}",
            )
        check_scale(body.scale, body.format, "body.scale")
        x = await run_cpu(
            inputs.from_json,
            body.inputs,
            entry,
            "body.inputs",
            body.resize,
            inputs.may_hold_booleans(raw := await request.body()),  # read already: cached
            size=len(raw),
        )
        per_dim, format, scale = body.per_dim, body.format, body.scale
    else:
        early = parse_options(LogProbUploadOptions, query)  # bad options fail before the upload is read
        if early.model is not None:  # named in the query: a full engine refuses before the upload is read
            registry.get(early.model).engine.check_capacity(1, "log_prob")
        files, fields = await read_uploads(request, "files", settings.max_images_per_request)
        opts = parse_options(LogProbUploadOptions, query, fields)
        entry = registry.get(opts.model)
        scale_at = "form." if any(k == "scale" for k, _ in fields) else "query."
        check_scale(opts.scale, opts.format, f"{scale_at}scale")
        x = await inputs.decode_uploads(
            files, entry, settings, threshold=opts.threshold, invert=opts.invert, resize=opts.resize
        )
        per_dim, format, scale = opts.per_dim, opts.format, opts.scale
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
        png, top = await run_cpu(codecs.encode_heatmap, out.per_dim[0].reshape(entry.grid_shape), None, scale)
        headers = {
            "X-Model": entry.name,
            "X-Log-Prob": f"{lp[0]:.6f}",
            "X-Bits-Per-Dim": f"{bpd[0]:.6f}",
            "X-Heatmap-Max-Nats": f"{top:.6f}",
        }
        return Response(png, media_type="image/png", headers=headers)
    per = out.per_dim if per_dim and out.per_dim is not None else None
    return json_response(
        {
            "model": entry.name,
            "log_prob": lp,
            "bits_per_dim": bpd,
            "log_prob_per_dim": None if per is None else np.ascontiguousarray(per, dtype=np.float64),
        }
    )
