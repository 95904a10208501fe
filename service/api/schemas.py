"""Request and response bodies (pydantic), with OpenAPI examples that work against the default model.

``inputs`` are typed loosely here (nested lists of numbers) and checked against the chosen model in
:mod:`service.api.inputs`, where the expected size and value range are known.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from service.made.distributions import MAX_TEMPERATURE, MIN_TEMPERATURE

__all__ = [
    "COMPLETE_EXAMPLE",
    "LOG_PROB_EXAMPLE",
    "MAX_PNG_SCALE",
    "PNG_SCHEMA",
    "SAMPLE_EXAMPLE",
    "TEMPERATURE_DOC",
    "CompleteRequest",
    "HealthLive",
    "HealthReady",
    "LogProbRequest",
    "LogProbResponse",
    "ModelCard",
    "ModelFacts",
    "ModelList",
    "ModelReady",
    "Problem",
    "SampleRequest",
    "SampleResponse",
    "Temperature",
    "json_or_png",
    "problem_responses",
]

Format = Literal["json", "png"]
MAX_SEED = 2**63 - 1
MAX_PNG_SCALE = 16  # a 64-image faces grid at this scale is 8480 x 8480 pixels: the largest PNG answer


def example_digit() -> list[list[int]]:
    """A 28 x 28 binary image of a '7' (for the docs' examples; the default model is MNIST)."""
    img = [[0] * 28 for _ in range(28)]
    for c in range(7, 21):
        img[6][c] = img[7][c] = 1
    for r in range(8, 23):
        c = 20 - (r - 8) * 8 // 14
        img[r][c] = img[r][c - 1] = 1
    return img


_DIGIT = example_digit()

_MODEL = Field(None, description="Model name (see GET /models); the server's default model when omitted.")
_SEED = Field(None, description="Random seed; the server picks one and returns it when omitted.")
_SCALE_DOC = (
    "PNG answers only (format=png): each image pixel is drawn as a scale x scale block (nearest neighbour)."
)
_INPUTS_DOC = (
    "Images as H x W nested lists (rows of pixel values) or flat D-vectors in raster order, in the model's "
    "value range: 0/1 for binary models, integers 0..255 for 8-bit models."
)


# What the service accepts as one input, for the schema: a flat vector of numbers or rows of numbers
# (validation then checks the size and levels against the chosen model, which the schema cannot know).
_INPUT_ITEMS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
    },
}


def _whole(value: Any) -> Any:
    """A float with no fractional part is the integer JSON Schema says it is (``346.0`` is 346);
    anything else goes on to the strict check (``true``, ``"2"`` and ``1.5`` stay errors)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeInt = Annotated[int, BeforeValidator(_whole)]
# The bounds sit on the integer (before the validator), so the schema states them as minimum/maximum.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_whole)]


def _temperature_gap(value: float) -> float:
    """0 is greedy; positive temperatures start at MIN_TEMPERATURE (see service.made.distributions)."""
    if 0 < value < MIN_TEMPERATURE:
        raise ValueError(f"must be 0 (the most probable values) or at least {MIN_TEMPERATURE:g}")
    return value


TEMPERATURE_DOC = (
    f"Sampling temperature, 0 or {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}: below 1 sharper, above 1 more "
    "varied. Bernoulli logits and mixture logits are divided by it and logistic scales multiplied by it; 0 "
    "takes the most probable value at each step (the same images whatever the seed). log_prob stays the "
    "model's own."
)
#: Finite (no NaN or infinity; a JSON integer is accepted), 0 or within [MIN_TEMPERATURE, MAX_TEMPERATURE].
Temperature = Annotated[
    float, Field(ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False), AfterValidator(_temperature_gap)
]


class _Strict(BaseModel):
    """Request bodies: unknown fields are errors, and types are exact (``"n": true`` or ``"n": "2"`` is
    a 422, not 1 or 2)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class LogProbRequest(_Strict):
    """Exact log-likelihood of one or more inputs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "mnist", "inputs": [_DIGIT], "per_dim": False}]},
    )

    model: str | None = _MODEL
    inputs: list[list[Any]] = Field(
        ..., min_length=1, description=_INPUTS_DOC, json_schema_extra=_INPUT_ITEMS
    )
    per_dim: bool = Field(False, description="Also return log p(x_d | x_<d) for every pixel, raster order.")
    format: Format = Field("json", description="`png`: a heat map of per-pixel surprise (one input only).")
    scale: WholeInt = Field(1, ge=1, le=MAX_PNG_SCALE, description=_SCALE_DOC)
    resize: bool = Field(False, description="Fit images of another size to the model's (bilinear).")


class LogProbResponse(BaseModel):
    """Log-likelihoods in nats; ``bits_per_dim = -log_prob / (D ln 2)``."""

    model: str
    log_prob: list[float] = Field(description="log p(x) in nats, one per input.")
    bits_per_dim: list[float] = Field(description="-log2 p(x) / D, one per input.")
    log_prob_per_dim: list[list[float]] | None = Field(
        None, description="log p(x_d | x_<d) per input and pixel (raster order); they sum to log_prob."
    )


class SampleRequest(_Strict):
    """Draw ``n`` fresh samples."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"model": "mnist", "n": 4, "seed": 42, "format": "json"}]},
    )

    model: str | None = _MODEL
    n: WholeInt = Field(1, ge=1, description="Number of samples (at most MADE_MAX_SAMPLES_PER_REQUEST).")
    seed: Seed | None = _SEED
    temperature: Temperature = Field(1.0, description=TEMPERATURE_DOC)
    format: Format = Field("json", description="`png`: one image with the n samples in a grid.")
    scale: WholeInt = Field(1, ge=1, le=MAX_PNG_SCALE, description=_SCALE_DOC)


class CompleteRequest(_Strict):
    """Complete one partially known image: its top ``known_rows`` rows are kept, the rest is drawn."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "mnist", "inputs": [_DIGIT], "n": 4, "seed": 7, "known_rows": 14, "format": "json"}
            ]
        },
    )

    model: str | None = _MODEL
    inputs: list[list[Any]] = Field(
        ...,
        min_length=1,
        max_length=1,
        description="Exactly one image. " + _INPUTS_DOC,
        json_schema_extra=_INPUT_ITEMS,
    )
    n: WholeInt = Field(1, ge=1, description="Number of completions (at most MADE_MAX_SAMPLES_PER_REQUEST).")
    seed: Seed | None = _SEED
    temperature: Temperature = Field(1.0, description=TEMPERATURE_DOC)
    known_rows: WholeInt | None = Field(
        None,
        description="Rows kept from the input (default: the top half; at most H - 1).",
        json_schema_extra={"minimum": 1},  # checked against the model's H, with a message naming both ends
    )
    format: Format = Field("json", description="`png`: the input beside its n completions.")
    scale: WholeInt = Field(1, ge=1, le=MAX_PNG_SCALE, description=_SCALE_DOC)
    resize: bool = Field(False, description="Fit an image of another size to the model's (bilinear).")


class SampleResponse(BaseModel):
    """Samples (or completions) as images, with the seed that reproduces them."""

    model: str
    seed: int = Field(description="Send it back to get the same result.")
    images: list[list[list[int]]] | list[list[int]] = Field(
        description="n images as H x W nested lists (flat D-vectors for models without an image shape)."
    )
    log_prob: list[float] = Field(description="Exact log p(x) (nats) of each full image under the model.")
    known_rows: int | None = Field(None, description="Completions: rows copied from the input.")
    temperature: float = Field(
        1.0, description="The temperature the images were drawn at; with `seed` it reproduces them."
    )


class ModelFacts(BaseModel):
    """What is served under a name: architecture, shape, value range, device, ordering, metrics."""

    name: str
    description: str | None = None
    shape: list[int] | None = Field(description="[H, W], or null for flat vector models.")
    data_dim: int
    value_range: list[int] = Field(description="[lo, hi] of the integer pixel values the model takes.")
    binary: bool
    device: str
    ready: bool
    architecture: dict[str, Any] = Field(description="The MADEConfig the model was built from.")
    ordering: dict[str, Any]
    completion: dict[str, Any] = Field(description="Whether /complete works and its default known_rows.")
    metrics: Any = Field(None, description="Evaluation figures from the card.")


class ModelCard(ModelFacts):
    """One model in full: its facts, the data it was trained on and the card as stored."""

    data: Any = Field(None, description="Data set and split the model was trained on.")
    card: dict[str, Any] = Field(description="The full model card as stored.")


class ModelList(BaseModel):
    default_model: str
    models: list[ModelCard]
    failed: dict[str, str] = Field(default_factory=dict, description="Folders skipped at start-up and why.")


class HealthLive(BaseModel):
    live: bool


class HealthReady(BaseModel):
    ready: bool
    models: dict[str, bool] = Field(default_factory=dict)


class ModelReady(BaseModel):
    name: str
    ready: bool


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="One entry per invalid field.")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the listed error statuses."""
    text = {
        400: "Malformed multipart body.",
        401: "Missing or wrong X-API-Key.",
        404: "Unknown model.",
        413: "Body larger than MADE_MAX_BODY_BYTES.",
        415: "Unsupported Content-Type or image format.",
        422: "Invalid field or JSON structure: the body names it, the limit and what came.",
        503: "Engine full or stopped (Retry-After says when to retry).",
        504: "The request missed its deadline.",
    }
    return {
        c: {
            "description": text.get(c, "Error"),
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        }
        for c in codes
    }


#: An image answer in OpenAPI terms: the PNG file itself.
PNG_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}

_HEADER_DOC = {
    "X-Seed": ({"type": "integer"}, "PNG answers: the seed that reproduces the images."),
    "X-Model": ({"type": "string"}, "PNG answers: the model that answered."),
    "X-Known-Rows": ({"type": "integer"}, "PNG completions: rows copied from the input."),
    "X-Temperature": ({"type": "number"}, "PNG answers: the temperature the images were drawn at."),
    "X-Log-Prob": ({"type": "number"}, "Heat map: log p(x) in nats."),
    "X-Bits-Per-Dim": ({"type": "number"}, "Heat map: -log2 p(x) / D."),
    "X-Heatmap-Max-Nats": ({"type": "number"}, "Heat map: the surprise (nats) of the brightest colour."),
}

_EXAMPLE_LOG_PROB = -97.31  # nats, of the example digit (illustrative)
SAMPLE_EXAMPLE = {
    "model": "mnist",
    "seed": 42,
    "images": [_DIGIT],
    "log_prob": [_EXAMPLE_LOG_PROB],
    "known_rows": None,
    "temperature": 1.0,
}
COMPLETE_EXAMPLE = {**SAMPLE_EXAMPLE, "seed": 7, "known_rows": 14}
LOG_PROB_EXAMPLE = {
    "model": "mnist",
    "log_prob": [_EXAMPLE_LOG_PROB],
    "bits_per_dim": [round(-_EXAMPLE_LOG_PROB / (784 * 0.6931471805599453), 6)],
    "log_prob_per_dim": None,
}


def json_or_png(description: str, example: dict[str, Any], *headers: str) -> dict[int | str, Any]:
    """OpenAPI ``responses`` entry for a 200 that is JSON (with ``example``) or, with ``format=png``, a
    PNG file with the named headers."""
    return {
        200: {
            "description": description,
            "content": {"application/json": {"example": example}, "image/png": {"schema": PNG_SCHEMA}},
            "headers": {
                name: {"description": _HEADER_DOC[name][1], "schema": _HEADER_DOC[name][0]}
                for name in headers
            },
        }
    }
