"""The floor: the least a FastAPI app can do per request on this machine, kept beside the service so
``bench/http.py`` measures both in one run.

Each route validates the same body the service validates (the service's own pydantic request models,
or reads the same multipart upload) and answers with bytes computed once at start-up, encoded by
orjson: an async handler, no middleware, no dependencies, no engine. Served by uvicorn with uvloop
and httptools, like the service::

    python -m bench.floor --port 8100
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import ValidationError

from service.api.schemas import CompleteRequest, LogProbRequest, SampleRequest

__all__ = ["create_floor_app"]


def _canned() -> dict[str, bytes]:
    """Precomputed answers shaped like the service's (a 28 x 28 image, a 64 x 64 face, PNGs)."""
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 2, (1, 28, 28))
    face = rng.integers(0, 256, (1, 64, 64))
    sample = {
        "model": "floor",
        "seed": 1,
        "images": digit.tolist(),
        "log_prob": [-90.5],
        "known_rows": None,
        "temperature": 1.0,
    }
    logprob = {"model": "floor", "log_prob": [-90.5], "bits_per_dim": [0.166], "log_prob_per_dim": None}
    complete = {**sample, "images": face.tolist(), "known_rows": 32}
    buf = io.BytesIO()  # encoded once: the floor does not pay for PNG encoding per request
    Image.fromarray(face[0].astype(np.uint8), mode="L").save(buf, format="PNG")
    png = buf.getvalue()
    return {
        "sample": orjson.dumps(sample),
        "logprob": orjson.dumps(logprob),
        "complete": orjson.dumps(complete),
        "png": png,
    }


def create_floor_app() -> FastAPI:
    """The minimal app: same routes and body validation as the service, canned responses."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    canned = _canned()
    jtype = "application/json"

    @app.exception_handler(ValidationError)
    async def invalid(request: Request, exc: Exception) -> Response:
        return Response(b'{"detail": "invalid body"}', status_code=422, media_type=jtype)

    @app.post("/sample")
    async def sample(request: Request) -> Response:
        body = SampleRequest.model_validate_json(await request.body())
        key = "png" if body.format == "png" else "sample"
        return Response(canned[key], media_type="image/png" if key == "png" else jtype)

    @app.post("/log-prob")
    async def log_prob(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/"):
            async with request.form() as form:
                for f in form.getlist("files"):
                    await f.read()  # type: ignore[union-attr]
        else:
            LogProbRequest.model_validate_json(await request.body())
        return Response(canned["logprob"], media_type=jtype)

    @app.post("/complete")
    async def complete(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/"):
            async with request.form() as form:
                await form["file"].read()  # type: ignore[union-attr]
            return Response(canned["png"], media_type="image/png")
        body = CompleteRequest.model_validate_json(await request.body())
        key = "png" if body.format == "png" else "complete"
        return Response(canned[key], media_type="image/png" if key == "png" else jtype)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        create_floor_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
