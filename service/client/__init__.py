"""Typed Python client for the MADE service: ``MadeClient`` (blocking) and ``AsyncMadeClient`` (asyncio).

Images go as JSON when given as arrays / nested lists of model values, and as multipart uploads
when given as files (bytes, a path or an open file). A 503 is retried after its ``Retry-After``
(bounded); any other error status raises :class:`ApiError` with the RFC 9457 problem.
"""

from .aio import AsyncMadeClient
from .calls import FileLike, ImageLike
from .errors import ApiError, MadeClientError
from .sync import DEFAULT_URL, MadeClient
from .types import Examples, Heatmap, LogProb, ModelInfo, ModelList, Png, Readiness, Samples

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncMadeClient",
    "Examples",
    "FileLike",
    "Heatmap",
    "ImageLike",
    "LogProb",
    "MadeClient",
    "MadeClientError",
    "ModelInfo",
    "ModelList",
    "Png",
    "Readiness",
    "Samples",
]
