"""The demo page: ``/`` and its static files (plain HTML and JavaScript, no build step), and example
images per model for it to offer.

Examples are the PNG files in ``<model folder>/examples/`` when the model ships some: held-out test
images written by ``python -m service.training export`` (or ``... examples MODEL_DIR``), at most
:data:`MAX_EXAMPLES`. They are read and checked once per model (a file that is not a PNG of the model's
size is skipped with a warning, so the page never offers an image the model refuses) and then served from
memory. A model without such files (a missing folder is an empty list) offers a few of its own samples
(fixed seed) instead, labelled as such so nobody mistakes them for data.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from .. import codecs
from ..deps import RegistryDep, require_api_key
from ..errors import ProblemError
from ..registry import ModelEntry
from ..schemas import PNG_SCHEMA, problem_responses

router = APIRouter()
log = logging.getLogger("service.api")

STATIC = Path(__file__).resolve().parents[1] / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.(html|js|css|svg|png)$")
_MEDIA = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}
MAX_EXAMPLES = 8  # what the data's terms allow a model folder to ship (a handful, never the data set)
SAMPLE_EXAMPLES = 4
SAMPLE_SEED = 20150212  # fixed, so the fallback examples are the same on every replica and restart
_NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a redeploy must not leave a stale page


class Example(BaseModel):
    name: str
    url: str


class ExampleList(BaseModel):
    """Images the page offers for completion and scoring."""

    model: str
    source: str = Field(
        description="`held-out`: files from the model's examples/ folder; `model sample`: "
        "drawn from the model itself (no held-out files shipped)."
    )
    examples: list[Example]


def _static(name: str) -> FileResponse:
    path = STATIC / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        raise ProblemError(404, f"no static file {name!r}")
    return FileResponse(path, media_type=_MEDIA[name.rsplit(".", 1)[1]], headers=_NO_CACHE)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return _static("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    return _static(name)


def held_out_examples(folder: Path, shape: tuple[int, int]) -> list[tuple[str, bytes]]:
    """``[(name, png bytes)]`` of ``folder/examples/*.png`` by file name, at most :data:`MAX_EXAMPLES`,
    keeping only PNGs of ``shape`` (H, W); none when there is no such folder."""
    out: list[tuple[str, bytes]] = []
    for path in sorted((folder / "examples").glob("*.png")):
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                fmt, size = img.format, (img.height, img.width)
                img.load()  # a truncated file fails here, not on the page
        except (OSError, UnidentifiedImageError) as e:
            log.warning("example %s skipped: not a readable image (%s)", path, e)
            continue
        if fmt != "PNG" or size != tuple(shape):
            log.warning("example %s skipped: a %s image of %s, the model's are %s", path, fmt, size, shape)
            continue
        out.append((path.stem, data))
        if len(out) == MAX_EXAMPLES:
            break
    return out


async def _examples(entry: ModelEntry) -> tuple[str, list[tuple[str, bytes]]]:
    """``(source, [(name, png bytes)])``, computed once per model and kept on its entry."""
    cached: Any = entry.extras.get("web_examples")
    if cached is not None:
        return cached
    files = await asyncio.to_thread(held_out_examples, entry.folder, entry.grid_shape)
    if files:
        out: tuple[str, list[tuple[str, bytes]]] = ("held-out", files)
    else:
        drawn = await entry.engine.sample(SAMPLE_EXAMPLES, SAMPLE_SEED)
        lo, hi = entry.value_range
        h, w = entry.grid_shape
        gray = np.clip(np.rint((drawn.x - lo) * (255.0 / max(hi - lo, 1))), 0, 255).astype(np.uint8)
        out = (
            "model sample",
            [(f"sample {i + 1}", codecs.encode_png(g.reshape(h, w))) for i, g in enumerate(gray)],
        )
    entry.extras["web_examples"] = out
    return out


_Name = Annotated[str, PathParam(examples=["mnist"], description="Model name.")]


@router.get(
    "/models/{name}/examples",
    operation_id="listExamples",
    summary="Example images for the demo page",
    response_model=ExampleList,
    dependencies=[Depends(require_api_key)],
    responses=problem_responses(401, 404),
    tags=["models"],
)
async def list_examples(name: _Name, registry: RegistryDep) -> ExampleList:
    entry = registry.get(name)
    source, items = await _examples(entry)
    return ExampleList(
        model=entry.name,
        source=source,
        examples=[
            Example(name=n, url=f"/models/{entry.name}/examples/{i}") for i, (n, _) in enumerate(items)
        ],
    )


@router.get(
    "/models/{name}/examples/{index}",
    operation_id="getExample",
    summary="One example image (PNG)",
    response_class=Response,
    dependencies=[Depends(require_api_key)],
    responses={
        200: {
            "description": "The image (PNG).",
            "content": {"image/png": {"schema": PNG_SCHEMA}},
            "headers": {
                "X-Example-Source": {
                    "description": "`held-out` or `model sample`.",
                    "schema": {"type": "string"},
                },
                "X-Example-Name": {"description": "The example's name.", "schema": {"type": "string"}},
            },
        },
        **problem_responses(401, 404),
    },
    tags=["models"],
)
async def get_example(
    name: _Name,
    index: Annotated[int, PathParam(ge=0, description="Position in the list.")],
    registry: RegistryDep,
) -> Response:
    entry = registry.get(name)
    source, items = await _examples(entry)
    if index >= len(items):
        raise ProblemError(404, f"model {entry.name!r} has {len(items)} examples; no index {index}")
    label, data = items[index]
    headers = {"X-Example-Source": source, "X-Example-Name": label.encode("ascii", "replace").decode()}
    return Response(data, media_type="image/png", headers=headers)
