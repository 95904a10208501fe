"""The demo page: ``/`` and its static files (plain HTML and JavaScript, no build step), and example
images per model for it to offer.

Examples are the PNG files in ``<model folder>/examples/`` when the model ships some (held-out data);
otherwise a few of the model's own samples (fixed seed), labelled as such so nobody mistakes them
for data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from .. import codecs
from ..deps import RegistryDep, require_api_key
from ..errors import ProblemError
from ..registry import ModelEntry
from ..schemas import PNG_SCHEMA, problem_responses

router = APIRouter()

STATIC = Path(__file__).resolve().parents[1] / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*\.(html|js|css|svg|png)$")
_MEDIA = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
}
MAX_EXAMPLES = 12
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


def _files(entry: ModelEntry) -> list[Path]:
    folder = entry.folder / "examples"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.png") if p.is_file())[:MAX_EXAMPLES]


async def _examples(entry: ModelEntry) -> tuple[str, list[tuple[str, bytes | Path]]]:
    """``(source, [(name, png bytes or file)])``, computed once per model and kept on its entry."""
    cached: Any = entry.extras.get("web_examples")
    if cached is not None:
        return cached
    files = _files(entry)
    if files:
        out: tuple[str, list[tuple[str, bytes | Path]]] = ("held-out", [(p.stem, p) for p in files])
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
    if isinstance(data, Path):
        return FileResponse(data, media_type="image/png", headers=headers)
    return Response(data, media_type="image/png", headers=headers)
