"""GET /models (a summary of every served model) and /models/{name} (one model's whole card)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from ..deps import RegistryDep
from ..registry import ModelEntry
from ..schemas import ModelCard, ModelFacts, problem_responses

router = APIRouter(tags=["models"])


class ModelSummary(ModelFacts):
    """What a caller needs to choose and use a model; the whole stored card is at ``card_url``."""

    card_url: str = Field(
        description="GET this for the whole card: data set and split, training settings and history, "
        "versions (GET /models/{name})."
    )


class ModelSummaryList(BaseModel):
    default_model: str
    models: list[ModelSummary]
    failed: dict[str, str] = Field(default_factory=dict, description="Folders skipped at start-up and why.")


def model_card(entry: ModelEntry) -> ModelCard:
    """The card as served: stored fields plus what the server derived (range, device, ordering)."""
    card = entry.card
    can_complete = (
        entry.shape is not None and entry.shared_ordering and entry.known_rows_prefix_ok(entry.shape[0] // 2)
    )
    return ModelCard(
        name=entry.name,
        description=card.get("description"),
        shape=list(entry.shape) if entry.shape else None,
        data_dim=entry.data_dim,
        value_range=list(entry.value_range),
        binary=entry.binary,
        device=entry.device,
        ready=bool(entry.engine.running),
        architecture=card.get("config", {}),
        ordering=entry.ordering_info(),
        completion={
            "supported": bool(can_complete),
            "default_known_rows": entry.shape[0] // 2 if can_complete and entry.shape else None,
        },
        data=card.get("data"),
        metrics=card.get("metrics"),
        card=card,
    )


def model_summary(entry: ModelEntry) -> ModelSummary:
    """The card without the stored card itself (its per-epoch history makes it large)."""
    full = model_card(entry).model_dump(exclude={"card", "data"})
    return ModelSummary(**full, card_url=f"/models/{entry.name}")


@router.get(
    "/models",
    operation_id="listModels",
    summary="List the served models (a summary each; GET /models/{name} has the whole card)",
    response_model=ModelSummaryList,
    responses=problem_responses(401),
)
async def list_models(registry: RegistryDep) -> ModelSummaryList:
    return ModelSummaryList(
        default_model=registry.settings.default_model,
        models=[model_summary(e) for e in registry.entries.values()],
        failed=dict(registry.failed),
    )


@router.get(
    "/models/{name}",
    operation_id="getModel",
    summary="One model's whole card: the summary fields, the data set and split, and the card as stored",
    response_model=ModelCard,
    responses=problem_responses(401, 404),
)
async def get_model(
    name: Annotated[str, Path(examples=["mnist"], description="Model name.")], registry: RegistryDep
) -> ModelCard:
    return model_card(registry.get(name))
